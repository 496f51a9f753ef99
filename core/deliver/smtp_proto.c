/*
 * The SMTP/LMTP dialogue of the client (Postfix's smtp_proto.c and
 * smtp_chat.c): greeting, EHLO (HELO on 5xx, LHLO for LMTP) and its
 * capabilities, STARTTLS, the MAIL/RCPT/DATA command list (one write with
 * PIPELINING, else one command at a time; replies read in order against the
 * list either way), the end-of-data replies (one per recipient for LMTP).
 * Replies are read by smtp_reply.c (bounded lines, multi-line replies
 * joined, enhanced status codes).
 */
#include "config.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>

#include "deliver/smtp_client_int.h"
#include "lib/buf.h"
#include "mail/smtp_syntax.h"
#include "mail/xforward.h"

/* ------------------------------------------------------------------ */
/* reply codes */

/* The status class a reply code stands for. */
static enum dlv_status reply_status(int code)
{
    return code >= 200 && code < 300 ? DLV_SENT : code >= 500 && code < 600 ? DLV_BOUNCED : DLV_DEFERRED;
}

/* ------------------------------------------------------------------ */
/* the transaction */

static int bad_address(const char *s)
{
    for (const char *p = s; *p; p++)
        if (*p == '\r' || *p == '\n' || (unsigned char)*p < 0x20)
            return 1;
    return 0;
}


/* XFORWARD (smtp_send_xforward_command): what the message's envelope says
 * of its origin, as Postfix's smtp_proto.c forwards it. Mail submitted on
 * this host (a maildrop file, or a notice the queue manager wrote) has no
 * client: only SOURCE=LOCAL goes, and the filter's re-injection names the
 * filter, as with Postfix. A value that is absent or "unknown" is left out
 * (an empty HELO too); IDENT is the queue ID a filter forwarded to us, else
 * this queue ID (Postfix's log_ident). Every value is xtext. */
static int xforward_local(const struct sc_job *a)
{
    const struct queue_envelope *env = &a->job->msg->env;
    return env->origin != NULL || env->client_addr == NULL;
}

static const char *xforward_value(const struct sc_job *a, unsigned attr)
{
    const struct queue_envelope *env = &a->job->msg->env;
    const char *v = NULL;
    int known_only = 1;
    if (attr == XFORWARD_F_SOURCE)
        return xforward_local(a) ? "LOCAL" : "REMOTE";
    if (xforward_local(a))
        return NULL;
    switch (attr) {
    case XFORWARD_F_NAME: v = env->client_name; break;
    case XFORWARD_F_ADDR: v = env->client_addr; break;
    case XFORWARD_F_PORT: v = env->client_port; break;
    case XFORWARD_F_PROTO: v = env->protocol; break;
    case XFORWARD_F_HELO: v = env->helo; known_only = 0; break;
    case XFORWARD_F_IDENT: v = env->log_ident ? env->log_ident : a->job->queue_id; known_only = 0; break;
    default: return NULL;
    }
    if (v == NULL || *v == '\0' || (known_only && strcasecmp(v, "unknown") == 0))
        return NULL;
    return v;
}

static const struct { unsigned attr; const char *name; enum sc_cmd_kind cmd; } xforward_attrs[] = {
    { XFORWARD_F_NAME, "NAME", CMD_XFORWARD_ADDR }, { XFORWARD_F_ADDR, "ADDR", CMD_XFORWARD_ADDR },
    { XFORWARD_F_PORT, "PORT", CMD_XFORWARD_ADDR }, { XFORWARD_F_PROTO, "PROTO", CMD_XFORWARD_PROTO },
    { XFORWARD_F_HELO, "HELO", CMD_XFORWARD_PROTO }, { XFORWARD_F_IDENT, "IDENT", CMD_XFORWARD_PROTO },
    { XFORWARD_F_SOURCE, "SOURCE", CMD_XFORWARD_PROTO },
};

/* Whether the XFORWARD command kind has something the server takes. */
static int xforward_wanted(const struct sc_job *a, enum sc_cmd_kind kind)
{
    if (!a->c->set.send_xforward)
        return 0;
    for (size_t k = 0; k < sizeof(xforward_attrs) / sizeof(xforward_attrs[0]); k++)
        if (xforward_attrs[k].cmd == kind && (a->conn->xforward & xforward_attrs[k].attr)
            && xforward_value(a, xforward_attrs[k].attr))
            return 1;
    return 0;
}

static void append_xforward(struct sc_job *a, struct buf *out, enum sc_cmd_kind kind)
{
    buf_puts(out, "XFORWARD");
    for (size_t k = 0; k < sizeof(xforward_attrs) / sizeof(xforward_attrs[0]); k++) {
        const char *v = xforward_value(a, xforward_attrs[k].attr);
        if (xforward_attrs[k].cmd == kind && (a->conn->xforward & xforward_attrs[k].attr) && v)
            buf_printf(out, " %s=%s", xforward_attrs[k].name, smtp_xtext_encode(v, a->pool));
    }
}

static void append_cmd(struct sc_job *a, struct buf *out, const struct sc_cmd *cmd)
{
    struct sc_conn *conn = a->conn;
    const struct queue_message *m = a->job->msg;
    if (cmd->kind == CMD_XFORWARD_ADDR || cmd->kind == CMD_XFORWARD_PROTO) {
        append_xforward(a, out, cmd->kind);
    } else if (cmd->kind == CMD_MAIL) {
        buf_printf(out, "MAIL FROM:<%s>", a->job->sender ? a->job->sender : "");
        if (conn->caps & SMTP_CAP_SIZE)
            buf_printf(out, " SIZE=%llu", m->content_length);
        if ((m->env.flags & QUEUE_F_8BITMIME) && (conn->caps & SMTP_CAP_8BITMIME))
            buf_puts(out, " BODY=8BITMIME");
        if ((m->env.flags & QUEUE_F_SMTPUTF8) && (conn->caps & SMTP_CAP_SMTPUTF8))
            buf_puts(out, " SMTPUTF8");
        if (conn->caps & SMTP_CAP_DSN) {
            if (m->env.ret == QUEUE_RET_FULL)
                buf_puts(out, " RET=FULL");
            else if (m->env.ret == QUEUE_RET_HDRS)
                buf_puts(out, " RET=HDRS");
            if (m->env.envid && *m->env.envid)
                buf_printf(out, " ENVID=%s", smtp_xtext_encode(m->env.envid, a->pool));
        }
    } else if (cmd->kind == CMD_RCPT) {
        buf_printf(out, "RCPT TO:<%s>", a->job->rcpt_addr[cmd->rcpt]);
        size_t ri = a->job->rcpt_index ? a->job->rcpt_index[cmd->rcpt] : cmd->rcpt;
        if ((conn->caps & SMTP_CAP_DSN) && ri < m->env.rcpt_count) {
            const struct queue_rcpt *r = &m->env.rcpts[ri];
            if (r->notify & QUEUE_NOTIFY_NEVER) {
                buf_puts(out, " NOTIFY=NEVER");
            } else if (r->notify) {
                const char *sep = " NOTIFY=";
                static const struct { unsigned bit; const char *name; } kw[] = {
                    { QUEUE_NOTIFY_SUCCESS, "SUCCESS" }, { QUEUE_NOTIFY_FAILURE, "FAILURE" },
                    { QUEUE_NOTIFY_DELAY, "DELAY" } };
                for (size_t k = 0; k < 3; k++)
                    if (r->notify & kw[k].bit) {
                        buf_printf(out, "%s%s", sep, kw[k].name);
                        sep = ",";
                    }
            }
            if (r->orcpt && *r->orcpt) {
                /* stored as "type;decoded-address": re-encode the address */
                const char *semi = strchr(r->orcpt, ';');
                if (semi && semi > r->orcpt) {
                    char *type = petrel_pool_strndup(a->pool, r->orcpt, (size_t)(semi - r->orcpt));
                    buf_printf(out, " ORCPT=%s;%s", smtp_xtext_encode(type, a->pool),
                               smtp_xtext_encode(semi + 1, a->pool));
                }
            }
        }
    } else {
        buf_puts(out, "DATA");
    }
    buf_puts(out, "\r\n");
}

static unsigned cmd_timeout(const struct sc_job *a, const struct sc_cmd *cmd)
{
    const struct smtp_client_settings *s = &a->c->set;
    switch (cmd->kind) {
    case CMD_XFORWARD_ADDR: case CMD_XFORWARD_PROTO: return s->xforward_timeout;
    case CMD_MAIL: return s->mail_timeout;
    case CMD_RCPT: return s->rcpt_timeout;
    default: return s->data_timeout;
    }
}

/* Sends what may be sent now: everything with PIPELINING, else the next one. */
static void txn_send(struct sc_job *a)
{
    struct sc_conn *conn = a->conn;
    struct buf out = BUF_INIT;
    if (conn->caps & SMTP_CAP_PIPELINING) {
        while (a->nsent < a->ncmds)
            append_cmd(a, &out, &a->cmds[a->nsent++]);
    } else if (a->nsent == a->nreplied && a->nsent < a->ncmds) {
        append_cmd(a, &out, &a->cmds[a->nsent++]);
    }
    if (out.len)
        bufferevent_write(conn->bev, out.data, out.len);   /* one write: the pipelined group */
    buf_free(&out);
    if (a->nreplied < a->ncmds)
        sc_conn_arm(conn, cmd_timeout(a, &a->cmds[a->nreplied]));
}

/* Checks that need the server's capabilities, then MAIL. */
void sc_txn_start(struct sc_job *a)
{
    struct sc_conn *conn = a->conn;
    const struct queue_message *m = a->job->msg;
    if (!conn->counted) {   /* a session that got through EHLO and TLS (smtp_mx_session_limit) */
        conn->counted = 1;
        a->sessions++;
    }
    if (!a->txn_started) {
        a->conn_secs = sc_elapsed(&a->t_start);
        a->txn_started = 1;
    }
    clock_gettime(CLOCK_MONOTONIC, &a->t_txn);
    if ((m->env.flags & QUEUE_F_SMTPUTF8) && !(conn->caps & SMTP_CAP_SMTPUTF8)) {
        sc_pending_set(a, DLV_BOUNCED, "5.6.7", conn->relay, "SMTPUTF8 is required, but was not offered by host %s",
                       conn->desc);
        sc_conn_release(conn);
        sc_job_next(a);
        return;
    }
    if ((conn->caps & SMTP_CAP_SIZE) && conn->size_limit && m->content_length > conn->size_limit) {
        sc_pending_set(a, DLV_BOUNCED, "5.3.4", conn->relay, "message size %llu exceeds size limit %llu of server %s",
                       m->content_length, conn->size_limit, conn->desc);
        sc_conn_release(conn);
        sc_job_next(a);
        return;
    }
    if (!(conn->caps & SMTP_CAP_8BITMIME)) {
        int r = sc_content_has_8bit(a);
        if (r < 0) {
            sc_pending_set(a, DLV_DEFERRED, "4.3.0", conn->relay, "error reading queue file: %s", strerror(errno));
            sc_conn_release(conn);
            sc_job_next(a);
            return;
        }
        if (r) {
            sc_pending_set(a, DLV_BOUNCED, "5.6.3", conn->relay,
                           "Message has 8-bit content but the remote server does not support 8BITMIME");
            sc_conn_release(conn);
            sc_job_next(a);
            return;
        }
    }
    if (bad_address(a->job->sender ? a->job->sender : "")) {
        sc_pending_set(a, DLV_BOUNCED, "5.1.7", conn->relay, "bad sender address syntax");
        sc_conn_release(conn);
        sc_job_next(a);
        return;
    }
    a->ncmds = 0;
    a->nsent = a->nreplied = 0;
    a->naccepted = 0;
    a->mail_ok = 0;
    a->lmtp_next = 0;
    if (xforward_wanted(a, CMD_XFORWARD_ADDR))
        a->cmds[a->ncmds++] = (struct sc_cmd){ CMD_XFORWARD_ADDR, 0 };
    if (xforward_wanted(a, CMD_XFORWARD_PROTO))
        a->cmds[a->ncmds++] = (struct sc_cmd){ CMD_XFORWARD_PROTO, 0 };
    size_t first_rcpt = a->ncmds + 1;
    a->cmds[a->ncmds++] = (struct sc_cmd){ CMD_MAIL, 0 };
    for (size_t i = 0; i < a->job->nrcpt; i++) {
        a->accepted[i] = 0;
        if (a->final[i])
            continue;
        if (bad_address(a->job->rcpt_addr[i]) || strlen(a->job->rcpt_addr[i]) > SC_CMD_MAX) {
            sc_rcpt_set(a, i, DLV_BOUNCED, "5.1.3", conn->relay, "bad recipient address syntax");
            continue;
        }
        a->cmds[a->ncmds++] = (struct sc_cmd){ CMD_RCPT, i };
    }
    if (a->ncmds == first_rcpt) {   /* nothing left to send */
        sc_conn_release(conn);
        sc_job_next(a);
        return;
    }
    a->cmds[a->ncmds++] = (struct sc_cmd){ CMD_DATA, 0 };
    conn->state = S_TXN;
    txn_send(a);
}


static void sent_rcpt(struct sc_job *a, size_t i, const struct smtp_reply *r)
{
    char dsn[16];
    struct sc_conn *conn = a->conn;
    enum dlv_status st = reply_status(r->code);
    smtp_reply_dsn(r, dsn);
    if (st == DLV_SENT)
        sc_rcpt_set(a, i, st, dsn, conn->relay, "%s", r->text);
    else
        sc_rcpt_reply_set(a, i, st, dsn, conn->relay, "host %s said: %s (in reply to end of DATA command)",
                          conn->desc, r->text);
    a->res[i].xfer_secs = sc_elapsed(&a->t_txn);
    a->res[i].conn_secs = a->conn_secs;
}

/* The transaction is over and the dialogue is in a clean state. */
static void txn_done(struct sc_job *a)
{
    struct sc_conn *conn = a->conn;
    sc_conn_release(conn);
    sc_job_next(a);
}

static void on_txn_reply(struct sc_job *a, const struct smtp_reply *r)
{
    struct sc_conn *conn = a->conn;
    char dsn[16];
    const struct sc_cmd *cmd = &a->cmds[a->nreplied++];
    switch (cmd->kind) {
    case CMD_XFORWARD_ADDR:
    case CMD_XFORWARD_PROTO:
        if (conn->reused && r->code == 421) {
            /* the cached connection was being shut down: go fresh */
            sc_session_fail(conn, "4.4.2", "host %s said: %s (in reply to %s)", conn->desc, r->text,
                            cmd->kind == CMD_XFORWARD_ADDR ? "XFORWARD name/address command"
                                                           : "XFORWARD helo/protocol command");
            return;
        }
        /* Postfix's rule: a refused XFORWARD is logged, and the mail goes on */
        if (r->code / 100 != 2)
            msg_warn("host %s said: %s (in reply to %s)", conn->relay, r->text,
                     cmd->kind == CMD_XFORWARD_ADDR ? "XFORWARD name/address command"
                                                    : "XFORWARD helo/protocol command");
        txn_send(a);
        return;
    case CMD_MAIL:
        if (r->code / 100 == 2) {
            a->mail_ok = 1;
        } else {
            if (conn->reused && r->code == 421) {
                /* the cached connection was being shut down: go fresh */
                a->nreplied = 0;
                sc_session_fail(conn, "4.4.2", "host %s said: %s (in reply to MAIL FROM command)", conn->desc, r->text);
                return;
            }
            enum dlv_status st = reply_status(r->code) == DLV_SENT ? DLV_DEFERRED : reply_status(r->code);
            for (size_t i = 0; i < a->job->nrcpt; i++)
                sc_rcpt_reply_set(a, i, st, smtp_reply_dsn(r, dsn), conn->relay,
                                  "host %s said: %s (in reply to MAIL FROM command)", conn->desc, r->text);
        }
        break;
    case CMD_RCPT:
        if (!a->mail_ok)
            break;
        if (r->code / 100 == 2) {
            a->accepted[cmd->rcpt] = 1;
            a->naccepted++;
        } else {
            enum dlv_status st = reply_status(r->code);
            sc_rcpt_reply_set(a, cmd->rcpt, st == DLV_SENT ? DLV_DEFERRED : st, smtp_reply_dsn(r, dsn), conn->relay,
                              "host %s said: %s (in reply to RCPT TO command)", conn->desc, r->text);
        }
        break;
    case CMD_DATA:
        if (r->code == 354) {
            if (!a->mail_ok || a->naccepted == 0) {
                /* a pipelined DATA the server accepted anyway: end it empty */
                conn->state = S_DOT_IGNORE;
                sc_conn_printf(conn, ".\r\n");
                sc_conn_arm(conn, a->c->set.data_done_timeout);
                return;
            }
            conn->state = S_BODY;
            sc_body_reset(a);
            a->body_off = 0;
            a->body_bol = 1;
            sc_body_feed(a);
            return;
        }
        if (a->mail_ok && a->naccepted) {
            for (size_t i = 0; i < a->job->nrcpt; i++)
                if (a->accepted[i]) {
                    enum dlv_status st = reply_status(r->code);
                    sc_rcpt_reply_set(a, i, st == DLV_SENT ? DLV_DEFERRED : st, smtp_reply_dsn(r, dsn), conn->relay,
                                      "host %s said: %s (in reply to DATA command)", conn->desc, r->text);
                }
        }
        txn_done(a);
        return;
    }
    if (!(conn->caps & SMTP_CAP_PIPELINING)) {
        /* stop early when the rest cannot succeed */
        if (!a->mail_ok || (a->nreplied == a->ncmds - 1 && a->naccepted == 0)) {
            txn_done(a);
            return;
        }
    }
    txn_send(a);
}

static void on_dot_reply(struct sc_job *a, const struct smtp_reply *r)
{
    struct sc_conn *conn = a->conn;
    if (!a->c->set.lmtp) {
        for (size_t i = 0; i < a->job->nrcpt; i++)
            if (a->accepted[i])
                sent_rcpt(a, i, r);
        txn_done(a);
        return;
    }
    /* LMTP: one reply per accepted recipient, in RCPT order */
    while (a->lmtp_next < a->job->nrcpt && !a->accepted[a->lmtp_next])
        a->lmtp_next++;
    if (a->lmtp_next < a->job->nrcpt)
        sent_rcpt(a, a->lmtp_next++, r);
    while (a->lmtp_next < a->job->nrcpt && !a->accepted[a->lmtp_next])
        a->lmtp_next++;
    if (a->lmtp_next >= a->job->nrcpt)
        txn_done(a);
    else
        sc_conn_arm(conn, a->c->set.data_done_timeout);
}

/* ------------------------------------------------------------------ */
/* greeting, EHLO, STARTTLS */

static int tls_wanted(const struct sc_conn *conn)
{
    return conn->c->set.tls_level != SMTP_TLS_NONE && conn->c->ssl && !conn->tls && !conn->no_tls;
}

/* Postfix's ESMTP guess for smtp_always_send_ehlo = no: a word ESMTP
 * after the greeting's host name. */
static int greeting_says_esmtp(const struct smtp_reply *r)
{
    char text[sizeof(r->text)];
    snprintf(text, sizeof(text), "%s", r->text);
    char *save = NULL;
    int n = 0;
    strtok_r(text, " \t", &save);   /* the code */
    for (char *w = strtok_r(NULL, " \t", &save); w; w = strtok_r(NULL, " \t", &save), n++)
        if (n > 0 && strcasecmp(w, "ESMTP") == 0)
            return 1;
    return 0;
}

static void send_helo(struct sc_conn *conn)
{
    conn->state = S_HELO;
    conn->caps = 0;
    conn->xforward = 0;
    sc_conn_printf(conn, "HELO %s\r\n", conn->c->set.helo_name);
    sc_conn_arm(conn, conn->c->set.helo_timeout);
}

static int loops_back(struct sc_conn *conn, const struct smtp_reply *r)
{
    struct sc_job *a = conn->job;
    const char *me = conn->c->set.myhostname;
    /* not for LMTP: an LMTP server on this host (Dovecot) rightly greets
     * with our own name */
    if (me == NULL || *me == '\0' || conn->c->set.lmtp || !sc_same_host(r->first_word, me))
        return 0;
    sc_pending_set(a, DLV_BOUNCED, "5.4.6", conn->relay, "mail for %s loops back to myself", a->domain);
    sc_conn_close(conn);
    sc_job_next(a);
    return 1;
}

/* TLS is settled (or the connection comes from the cache): AUTH when we
 * should, then the transaction. */
void sc_conn_ready(struct sc_conn *conn)
{
    if (sc_sasl_start(conn) != 0)
        return;
    sc_txn_start(conn->job);
}

/* Capabilities are known: TLS next, or the transaction. */
static void after_ehlo(struct sc_conn *conn)
{
    struct sc_job *a = conn->job;
    enum smtp_tls_level lvl = conn->c->set.tls_level;
    if ((conn->caps & SMTP_CAP_STARTTLS) && lvl == SMTP_TLS_NONE && conn->c->set.tls_note_starttls_offer)
        msg_info("Host offered STARTTLS: [%s]", conn->addr.host);
    if (tls_wanted(conn) && (conn->caps & SMTP_CAP_STARTTLS)) {
        conn->state = S_STARTTLS;
        sc_conn_printf(conn, "STARTTLS\r\n");
        sc_conn_arm(conn, conn->c->set.starttls_timeout);
        return;
    }
    if (lvl >= SMTP_TLS_ENCRYPT && !conn->tls) {
        sc_pending_set(a, DLV_DEFERRED, "4.7.4", conn->relay, "TLS is required, but was not offered by host %s",
                       conn->desc);
        sc_conn_release(conn);
        sc_job_next(a);
        return;
    }
    sc_conn_ready(conn);
}

static void on_session_reply(struct sc_conn *conn, const struct smtp_reply *r)
{
    struct sc_job *a = conn->job;
    char dsn[16];
    switch (conn->state) {
    case S_GREETING:
        if (r->code / 100 != 2) {
            /* smtp_skip_5xx_greeting (default): even a 5xx greeting only
             * skips this server, as a 4xx would; otherwise it bounces */
            smtp_reply_dsn(r, dsn);
            if (dsn[0] == '5' && !conn->c->set.skip_5xx_greeting) {
                for (size_t i = 0; i < a->job->nrcpt; i++)
                    sc_rcpt_reply_set(a, i, DLV_BOUNCED, dsn, conn->relay, "host %s refused to talk to me: %s",
                                      conn->desc, r->text);
                sc_conn_release(conn);
                sc_job_next(a);
                return;
            }
            if (dsn[0] == '5')
                dsn[0] = '4';
            sc_session_fail(conn, dsn, "host %s refused to talk to me: %s", conn->desc, r->text);
            return;
        }
        if (loops_back(conn, r))
            return;
        if (!conn->c->set.lmtp && (conn->c->set.never_send_ehlo ||
                                   (!conn->c->set.always_send_ehlo && !greeting_says_esmtp(r)))) {
            send_helo(conn);
            return;
        }
        sc_conn_send_ehlo(conn);
        return;
    case S_EHLO:
        if (r->code / 100 == 2) {
            conn->caps = r->caps;
            conn->xforward = r->xforward;
            conn->size_limit = r->size_limit;
            sc_sasl_ehlo(conn, r);
            if (loops_back(conn, r))
                return;
            after_ehlo(conn);
            return;
        }
        if (r->code / 100 == 5 && !conn->c->set.lmtp && !conn->tls) {
            send_helo(conn);
            return;
        }
        /* fallthrough */
    case S_HELO:
        if (r->code / 100 == 2) {
            if (loops_back(conn, r))
                return;
            conn->caps = 0;
    conn->xforward = 0;
            after_ehlo(conn);
            return;
        }
        if (r->code / 100 == 5 && a->addr_next >= a->naddrs && a->host_next >= a->nhosts) {
            /* the last server refuses us outright */
            sc_pending_set(a, DLV_BOUNCED, smtp_reply_dsn(r, dsn), conn->relay, "host %s refused to talk to me: %s",
                           conn->desc, r->text);
            sc_conn_release(conn);
            sc_job_next(a);
            return;
        }
        sc_session_fail(conn, r->code / 100 == 5 ? "4.0.0" : smtp_reply_dsn(r, dsn), "host %s refused to talk to me: %s",
                        conn->desc, r->text);
        return;
    case S_STARTTLS:
        if (r->code == 220) {
            sc_tls_start(conn);
            return;
        }
        if (conn->c->set.tls_level >= SMTP_TLS_ENCRYPT) {
            sc_pending_set(a, DLV_DEFERRED, "4.7.4", conn->relay,
                           "TLS is required, but host %s refused to start TLS: %s", conn->desc, r->text);
            sc_conn_release(conn);
            sc_job_next(a);
            return;
        }
        conn->no_tls = 1;   /* opportunistic: carry on in plaintext */
        sc_conn_ready(conn);
        return;
    default:
        return;
    }
}

void sc_conn_send_ehlo(struct sc_conn *conn)
{
    conn->state = S_EHLO;
    conn->caps = 0;
    conn->xforward = 0;
    conn->size_limit = 0;
    conn->server_mechs = 0;
    conn->server_auth = 0;
    sc_conn_printf(conn, "%s %s\r\n", conn->c->set.lmtp ? "LHLO" : "EHLO", conn->c->set.helo_name);
    sc_conn_arm(conn, conn->c->set.helo_timeout);
}

/* ------------------------------------------------------------------ */
/* reading replies */

static void on_reply(struct sc_conn *conn)
{
    struct sc_job *a = conn->job;
    const struct smtp_reply *r = &conn->reader.reply;
    switch (conn->state) {
    case S_IDLE:
        /* unsolicited data on a parked connection (a 421 before closing) */
        sc_conn_close(conn);
        return;
    case S_QUIT:
        sc_conn_close(conn);
        return;
    case S_RSET:
        if (r->code / 100 != 2) {
            if (a) {
                conn->state = S_RSET;
                sc_session_fail(conn, "4.4.2", "host %s said: %s (in reply to RSET command)", conn->desc, r->text);
            } else {
                conn->state = S_QUIT;
                sc_conn_printf(conn, "QUIT\r\n");
                sc_conn_arm(conn, 5);
            }
            return;
        }
        if (a) {   /* a job took this connection over while the RSET was in flight */
            sc_conn_ready(conn);
            return;
        }
        conn->state = S_IDLE;
        sc_conn_arm(conn, conn->c->set.connection_cache_time);
        return;
    case S_AUTH:
        sc_sasl_reply(conn, r);
        return;
    case S_TXN:
        on_txn_reply(a, r);
        return;
    case S_DOT:
        on_dot_reply(a, r);
        return;
    case S_DOT_IGNORE:
        txn_done(a);
        return;
    case S_BODY: {
        /* a reply while we still send the body: the server gave up on us */
        char dsn[16];
        sc_pending_set(a, reply_status(r->code) == DLV_BOUNCED ? DLV_BOUNCED : DLV_DEFERRED, smtp_reply_dsn(r, dsn),
                       conn->relay, "host %s said: %s (in reply to end of DATA command)", conn->desc, r->text);
        sc_conn_close(conn);
        sc_job_next(a);
        return;
    }
    default:
        on_session_reply(conn, r);
        return;
    }
}

void sc_on_read(struct bufferevent *bev, void *arg)
{
    struct sc_conn *conn = arg;
    struct evbuffer *in = bufferevent_get_input(bev);
    conn->busy++;
    while (!conn->zombie && conn->bev) {
        conn->reader.ehlo = conn->state == S_EHLO;
        conn->reader.sasl = conn->state == S_AUTH;
        int rc = smtp_reply_read(&conn->reader, in);
        if (rc == 0)
            break;   /* wait for the rest */
        if (rc < 0) {
            if (conn->job) {
                sc_session_fail(conn, "4.5.0", "host %s sent a malformed reply while %s", conn->desc,
                                sc_stage_text(conn));
            } else {
                sc_conn_close(conn);
            }
            break;
        }
        evtimer_del(conn->timer);
        on_reply(conn);
        if (conn->bev != bev)
            break;   /* closed, or TLS now sits on top: its own callbacks take over */
    }
    conn->busy--;
    if (conn->zombie && !conn->busy)
        sc_conn_free_now(conn);
}
