/*
 * What a milter answers (see milter_conn.h): the option negotiation, the
 * final reply to each event and what it means at that stage (as Postfix's
 * milter8_event), and at end of message the modifications, handed to the
 * owner in order as they arrive (a replacement body piece by piece).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>

#include "milter_conn_int.h"

static uint32_t version_events(uint32_t version)
{
    return version >= 6 ? MILTER_P_V6 : version >= 4 ? MILTER_P_V4 : version == 3 ? MILTER_P_V3 : MILTER_P_V2;
}

static void negotiated(milter_conn *c, const milter_frame *f)
{
    c->awaiting = 0;
    if (f->cmd != MILTER_CMD_OPTNEG) {
        mc_fail(c, 0, "unexpected reply %s in the initial handshake", milter_reply_name(f->cmd));
        return;
    }
    milter_optneg o;
    char why[256];
    if (milter_parse_optneg(f->data, f->len, &c->scratch, &o, why, sizeof why) < 0) {
        mc_fail(c, 0, "bad option negotiation reply: %s", why);
        return;
    }
    if (o.version > (uint32_t)c->s->version) {
        mc_fail(c, 0, "protocol version %u conflict with MTA protocol version %d", (unsigned)o.version,
             c->s->version);
        return;
    }
    if (o.version < 2) {
        mc_fail(c, 0, "protocol version %u is older than 2", (unsigned)o.version);
        return;
    }
    if ((o.actions & MILTER_ACT_ALL) != o.actions) {
        mc_fail(c, 0, "request mask 0x%x conflict with MTA request mask 0x%x", (unsigned)o.actions,
             (unsigned)MILTER_ACT_ALL);
        return;
    }
    c->version = o.version;
    c->actions = o.actions;
    c->steps = o.steps;
    /* Events outside our version, and outside the milter's when it speaks
     * an older one (Postfix: "based on a suggestion by Kouhei Sutou"). */
    c->np_mask = MILTER_P_NOSEND_MASK & ~c->s->offer;
    if (o.version < (uint32_t)c->s->version)
        c->np_mask |= MILTER_P_NOSEND_MASK & ~version_events(o.version);
    if (o.unknown_stages)
        mc_say(c, MILTER_LOG_WARNING, "ignoring %d macro list(s) for unknown stages", o.unknown_stages);
    for (int i = 0; i < MILTER_SYMLIST_STAGES; i++) {
        if (o.symlist[i] == NULL)
            continue;
        if (c->symlist[i] == NULL && (c->symlist[i] = malloc(sizeof *c->symlist[i])) == NULL) {
            mc_fail(c, 0, "out of memory");
            return;
        }
        if (milter_macro_list_parse(c->symlist[i], o.symlist[i], why, sizeof why) < 0) {
            mc_fail(c, 1, "macro list for stage %d: %s", i, why);
            return;
        }
    }
    c->state = S_READY;
    mc_result_set(c, MILTER_CONTINUE, 0, NULL, NULL);
    mc_complete(c);
}

static int connect_stage(int ev)
{
    return ev == MILTER_CMD_CONNECT || ev == MILTER_CMD_HELO;
}

/* The final reply to the event we waited for. */
static void event_reply(milter_conn *c, milter_verdict v, const milter_smtp_reply *custom)
{
    int ev = c->awaiting;
    c->awaiting = 0;
    if (custom != NULL) {
        mc_result_clear(c);
        c->result.verdict = v;
        c->result.code = custom->code;
        c->result.enhanced = custom->enhanced[0] ? custom->enhanced : NULL;
        c->result.text = custom->first_text;
        c->result.reply = custom->text;
    } else if (v == MILTER_REJECT)
        mc_result_set(c, v, 550, "5.7.1", "Command rejected");
    else if (v == MILTER_TEMPFAIL)
        mc_result_set(c, v, 451, "4.7.1", "Service unavailable - try again later");
    else if (v == MILTER_SHUTDOWN)
        mc_result_set(c, v, 421, "4.7.0", "Server closing connection");
    else
        mc_result_set(c, v, 0, NULL, NULL);

    switch (v) {
    case MILTER_CONTINUE:
        break;
    case MILTER_ACCEPT:
        if (connect_stage(ev)) {
            /* No more events for this connection. */
            c->result.connection = 1;
            c->state = S_ACCEPT_CON;
            mc_quit_and_close(c);
        } else
            c->tx_accepted = 1;
        break;
    case MILTER_DISCARD:
        if (connect_stage(ev)) {
            mc_say(c, MILTER_LOG_WARNING, "DISCARD action is not allowed for connect or helo");
            mc_result_set(c, MILTER_CONTINUE, 0, NULL, NULL);
        } else
            c->tx_accepted = 1;
        break;
    case MILTER_REJECT:
    case MILTER_TEMPFAIL:
    case MILTER_SHUTDOWN:
        if (connect_stage(ev) || v == MILTER_SHUTDOWN) {
            c->result.connection = 1;
            mc_sticky_save(&c->con, &c->result);
            mc_quit_and_close(c);
            c->state = S_REJECT_CON;
            mc_sticky_use(c, &c->con);
        } else if (ev != MILTER_CMD_RCPT && ev != MILTER_CMD_UNKNOWN) {
            /* MAIL, DATA or content: the message is refused. */
            mc_sticky_save(&c->tx, &c->result);
            mc_sticky_use(c, &c->tx);
        }
        break;
    }

    if (ev == MILTER_CMD_BODY && c->then_eom) {
        c->then_eom = 0;
        if (c->result.verdict == MILTER_CONTINUE && c->state == S_SESSION && !c->tx_accepted) {
            mc_send_eom(c);
            return;
        }
        ev = MILTER_CMD_EOM;    /* the message ends with this answer */
    }
    if (ev == MILTER_CMD_EOM) {
        const char *q = c->tx_quarantine[0] ? c->tx_quarantine
                      : c->session_quarantine[0] ? c->session_quarantine : NULL;
        if (c->edit_failed && v != MILTER_DISCARD && v != MILTER_SHUTDOWN && v != MILTER_TEMPFAIL) {
            mc_result_set(c, MILTER_TEMPFAIL, 451, "4.3.0", "Error: message modification failed");
            c->result.edit_failed = 1;
        } else if (c->edit_failed)
            c->result.edit_failed = 1;
        if (q != NULL && c->state == S_SESSION) {
            /* The quarantine strings are about to be cleared: keep a copy. */
            snprintf(c->quarantine_out, sizeof c->quarantine_out, "%s", q);
            c->result.quarantine = c->quarantine_out;
        }
        if (c->state == S_SESSION && v == MILTER_CONTINUE && !c->edit_failed)
            c->reuse_ok = 1;
        mc_end_message(c);
    }
    mc_complete(c);
}

static void quarantine(milter_conn *c, const char *reason)
{
    if (c->in_tx)
        snprintf(c->tx_quarantine, sizeof c->tx_quarantine, "%s", reason);
    else
        snprintf(c->session_quarantine, sizeof c->session_quarantine, "%s", reason);
}

static uint32_t edit_action(int cmd)
{
    switch (cmd) {
    case MILTER_RSP_ADDHEADER:
    case MILTER_RSP_INSHEADER: return MILTER_ACT_ADDHDRS;
    case MILTER_RSP_CHGHEADER: return MILTER_ACT_CHGHDRS;
    case MILTER_RSP_CHGFROM: return MILTER_ACT_CHGFROM;
    case MILTER_RSP_ADDRCPT: return MILTER_ACT_ADDRCPT;
    case MILTER_RSP_ADDRCPT_PAR: return MILTER_ACT_ADDRCPT_PAR;
    case MILTER_RSP_DELRCPT: return MILTER_ACT_DELRCPT;
    case MILTER_RSP_REPLBODY: return MILTER_ACT_CHGBODY;
    case MILTER_RSP_QUARANTINE: return MILTER_ACT_QUARANTINE;
    default: return 0;
    }
}

static void check_action(milter_conn *c, int cmd)
{
    uint32_t need = edit_action(cmd);
    if (need && !(c->actions & need) && !(c->warned_actions & (int)need)) {
        c->warned_actions |= (int)need;
        mc_say(c, MILTER_LOG_WARNING, "%s without having negotiated it (applied, as Postfix does)",
            milter_reply_name(cmd));
    }
}

static void deliver(milter_conn *c, const milter_edit *e)
{
    if (c->edit_failed || c->ops.edit == NULL)
        return;
    if (c->ops.edit(c->arg, e) < 0)
        c->edit_failed = 1;
}

static void end_replacement(milter_conn *c)
{
    unsigned char tail[2];
    size_t n = milter_body_norm_finish(&c->norm, tail);
    milter_edit e;
    memset(&e, 0, sizeof e);
    if (n > 0) {
        e.type = MILTER_EDIT_BODY_CHUNK;
        e.data = tail;
        e.len = n;
        deliver(c, &e);
    }
    e.type = MILTER_EDIT_BODY_END;
    e.data = NULL;
    e.len = 0;
    deliver(c, &e);
    c->body_replacing = 0;
    c->body_done = 1;
}

static void body_piece(milter_conn *c, const milter_frame *f)
{
    if (c->awaiting != MILTER_CMD_EOM) {
        mc_fail(c, 0, "unexpected filter response SMFIR_REPLBODY after event %s", milter_command_name(c->awaiting));
        return;
    }
    if (f->first) {
        check_action(c, MILTER_RSP_REPLBODY);
        if (c->body_done) {
            mc_fail(c, 1, "body replacement requests can't be mixed with other requests");
            return;
        }
        if (!c->body_replacing) {
            milter_body_norm_init(&c->norm);
            c->body_replacing = 1;
        }
    }
    if (c->s->max_body && c->norm.bytes + f->len > c->s->max_body) {
        mc_fail(c, 1, "replacement body larger than %zu bytes", c->s->max_body);
        return;
    }
    if (f->len == 0)
        return;
    if (c->normbuf == NULL && (c->normbuf = malloc(2 * READ_CHUNK + 2)) == NULL) {
        mc_fail(c, 0, "out of memory");
        return;
    }
    int first = c->norm.bytes == 0;
    size_t n = milter_body_normalize(&c->norm, f->data, f->len, c->normbuf);
    if (n == 0)
        return;
    milter_edit e;
    memset(&e, 0, sizeof e);
    e.type = MILTER_EDIT_BODY_CHUNK;
    e.data = c->normbuf;
    e.len = n;
    e.body_first = first;
    deliver(c, &e);
}

static void frame(milter_conn *c, const milter_frame *f)
{
    if (c->awaiting == MILTER_CMD_OPTNEG) {
        negotiated(c, f);
        return;
    }
    if (f->piece) {
        body_piece(c, f);
        return;
    }
    if (c->body_replacing)
        end_replacement(c);

    int cmd = f->cmd;
    char why[512];
    milter_edit e;
    switch (cmd) {
    case MILTER_RSP_PROGRESS:
    case MILTER_RSP_CONTINUE:
    case MILTER_RSP_ACCEPT:
    case MILTER_RSP_REJECT:
    case MILTER_RSP_TEMPFAIL:
    case MILTER_RSP_DISCARD:
    case MILTER_RSP_SHUTDOWN:
    case MILTER_RSP_SKIP:
        if (f->len != 0) {
            mc_fail(c, 0, "reply %s was followed by %zu data bytes", milter_reply_name(cmd), f->len);
            return;
        }
        if (cmd == MILTER_RSP_PROGRESS)
            return;     /* still working: the clock was restarted by the read */
        if (cmd == MILTER_RSP_SKIP) {
            c->skip_cmd = c->awaiting;
            event_reply(c, MILTER_CONTINUE, NULL);
            return;
        }
        event_reply(c, cmd == MILTER_RSP_CONTINUE ? MILTER_CONTINUE : cmd == MILTER_RSP_ACCEPT ? MILTER_ACCEPT
                       : cmd == MILTER_RSP_REJECT ? MILTER_REJECT : cmd == MILTER_RSP_TEMPFAIL ? MILTER_TEMPFAIL
                       : cmd == MILTER_RSP_DISCARD ? MILTER_DISCARD : MILTER_SHUTDOWN, NULL);
        return;

    case MILTER_RSP_REPLYCODE: {
        milter_smtp_reply r;
        if (milter_parse_replycode(f->data, f->len, &c->scratch, &r, why, sizeof why) < 0) {
            char shown[120];
            size_t len = f->len > 0 && f->data[f->len - 1] == 0 ? f->len - 1 : f->len;
            size_t n = len < sizeof shown - 1 ? len : sizeof shown - 1;
            for (size_t i = 0; i < n; i++)
                shown[i] = f->data[i] >= 32 && f->data[i] < 127 ? (char)f->data[i] : '?';
            shown[n] = 0;
            mc_fail(c, 1, "malformed reply: %s: \"%s\"", why, shown);
            return;
        }
        event_reply(c, r.code >= 500 ? MILTER_REJECT : MILTER_TEMPFAIL, &r);
        return;
    }

    case MILTER_RSP_QUARANTINE:
        if (milter_parse_edit(cmd, f->data, f->len, 0, &c->scratch, &e, why, sizeof why) < 0) {
            mc_fail(c, 1, "%s", why);
            return;
        }
        check_action(c, cmd);
        quarantine(c, e.reason);
        deliver(c, &e);
        return;

    case MILTER_RSP_ADDHEADER:
    case MILTER_RSP_INSHEADER:
    case MILTER_RSP_CHGHEADER:
    case MILTER_RSP_CHGFROM:
    case MILTER_RSP_ADDRCPT:
    case MILTER_RSP_ADDRCPT_PAR:
    case MILTER_RSP_DELRCPT:
        if (c->awaiting != MILTER_CMD_EOM)
            break;
        if (milter_parse_edit(cmd, f->data, f->len, (c->steps & MILTER_P_HDR_LEADSPC) != 0, &c->scratch, &e,
                              why, sizeof why) < 0) {
            mc_fail(c, 1, "%s", why);
            return;
        }
        check_action(c, cmd);
        if ((e.type == MILTER_EDIT_ADD_RCPT || e.type == MILTER_EDIT_DELETE_RCPT) && e.address[0] == 0) {
            mc_say(c, MILTER_LOG_WARNING, "ignoring %s with an empty address", milter_reply_name(cmd));
            return;
        }
        deliver(c, &e);
        return;

    default:
        break;
    }
    mc_fail(c, 0, "unexpected filter response %s after event %s", milter_reply_name(cmd),
         milter_command_name(c->awaiting));
}

static void process_input(milter_conn *c, const unsigned char *p, size_t left)
{
    while (c->fd >= 0) {
        milter_frame f;
        int r = milter_reader_next(&c->reader, &p, &left, &f);
        if (r == 0)
            return;
        if (r < 0) {
            mc_fail(c, 0, "%s", c->reader.error);
            return;
        }
        if (!c->awaiting) {
            char why[200];
            snprintf(why, sizeof why, "unexpected %s from the milter while no reply was due",
                     milter_reply_name(f.cmd));
            if (c->report)
                mc_fail_later(c, why);
            else
                mc_fail(c, 0, "%s", why);
            return;
        }
        frame(c, &f);
    }
}

void mc_read_input(milter_conn *c)
{
    unsigned char buf[READ_CHUNK];
    for (int round = 0; round < READ_ROUNDS && c->fd >= 0; round++) {
        ssize_t n = recv(c->fd, buf, sizeof buf, 0);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK)
                return;
            if (c->awaiting)
                mc_fail(c, 0, "can't read %s reply packet: %s", milter_command_name(c->awaiting), strerror(errno));
            else
                mc_fail(c, 0, "read error on an idle connection: %s", strerror(errno));
            return;
        }
        if (n == 0) {
            if (c->awaiting)
                mc_fail(c, 0, "connection closed by the milter while waiting for the reply to %s",
                     milter_command_name(c->awaiting));
            else if (!milter_reader_idle(&c->reader))
                mc_fail(c, 0, "connection closed by the milter in the middle of a packet");
            else if (c->report)
                mc_fail_later(c, "connection closed by the milter");
            else
                mc_fail(c, 0, "connection closed by the milter");
            return;
        }
        if (c->tcp) {
            /* A libmilter filter sends an end-of-message edit (ADDHEADER...)
             * and its verdict as two small writes; under Nagle the second
             * waits for our ACK of the first, which Linux delays up to 40 ms.
             * Quick-ACK mode ends by itself, so it is asked for after every
             * read (bench/RESULTS.md, the milter section). */
            int one = 1;
            (void)setsockopt(c->fd, IPPROTO_TCP, TCP_QUICKACK, &one, sizeof one);
        }
        c->progress_ms = mc_now_ms();
        process_input(c, buf, (size_t)n);
    }
}
