/*
 * SMTP/LMTP client delivery agent (see smtp_client.h). Postfix's smtp(8) is
 * the model for behaviour and wording; the code is our own.
 *
 * Shape. A job (struct sc_job) walks: route the next hop (MX lookup, then
 * A/AAAA per host, lazily, one host at a time) -> connect to the next
 * address -> greeting -> EHLO (HELO on 5xx) -> STARTTLS and EHLO again ->
 * transaction -> release the connection. A connection (struct sc_conn) is
 * separate from the job because it outlives it: after a clean transaction it
 * is RSET and parked in the client's cache for connection_cache_time, and
 * the next job to the same next hop takes it over (even while the RSET reply
 * is still in flight) instead of paying DNS, TCP, EHLO and TLS again.
 *
 * Recipients. Each recipient has a result that is final once SENT or
 * BOUNCED. DEFERRED ones are kept for the next address, as Postfix keeps
 * soft-failed recipients for the next MX host; when the address list (at
 * most SC_ADDR_LIMIT addresses, SC_SESSION_LIMIT sessions that got a
 * greeting) runs out, the last soft error stands.
 *
 * Commands. MAIL, the RCPTs and DATA form a list; with PIPELINING they go in
 * one write, otherwise one at a time, and either way the replies are read in
 * order against the list, so both paths share one reply handler. Timeouts
 * are one timer per connection, armed for the oldest unanswered command.
 *
 * Content is streamed from the queue file with pread in 64 KiB chunks,
 * dot-stuffed on the way, topped up from the write callback when the output
 * buffer drains below a watermark: a 50 MB message never sits in memory.
 *
 * TLS (smtp_tls_security_level): "may" uses STARTTLS when offered and, as
 * Postfix does, retries the same address in plaintext when the handshake
 * fails; "encrypt" defers (4.7.4 not offered, 4.7.5 handshake failure);
 * "verify" checks the chain against smtp_tls_CAfile and the MX host name,
 * "secure" the next-hop domain and its subdomains (not the DNS-supplied MX
 * name), deferring 4.7.5 on a mismatch. OpenSSL always computes the verify
 * result; we only enforce it at verify/secure.
 *
 * Mail loops (5.4.6): an MX list that names myhostname is cut at that
 * host's preference (nothing left: bounce), and a server whose greeting or
 * EHLO reply names myhostname is us (SMTP only; a local LMTP server shares
 * our name).
 *
 * Everything read from the network is bounded: reply lines are cut at
 * SC_LINE_MAX (the rest of the line is skipped), a reply keeps at most
 * SC_REPLY_MAX bytes of text, and a reply of more than SC_REPLY_LINES lines
 * is a protocol error. No callback into the caller happens before
 * smtp_client_deliver returns: done() runs from a zero-delay timer.
 */
#include "config.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/event.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include <petrel/pool.h>

#include "deliver/smtp_client.h"
#include "lib/buf.h"
#include "lib/dns.h"
#include "lib/log.h"
#include "lib/xalloc.h"
#include "smtpd/smtp_parse.h"

#define SC_LINE_MAX 2048          /* one reply line (RFC 5321 says 512; servers exceed it) */
#define SC_REPLY_MAX 400          /* joined text of a multi-line reply: leaves room in the 512-byte
                                     result for "host X said: ... (in reply to RCPT TO command)" */
#define SC_REPLY_LINES 500        /* more lines than this in one reply: protocol error */
#define SC_MAX_HOSTS 16           /* MX hosts considered */
#define SC_MAX_ADDRS 32           /* addresses collected */
#define SC_ADDR_LIMIT 5           /* Postfix smtp_mx_address_limit */
#define SC_SESSION_LIMIT 2        /* Postfix smtp_mx_session_limit */
#define SC_CHUNK 65536            /* pread size and output low watermark */
#define SC_OUT_HIGH (4 * SC_CHUNK) /* stop reading content above this much pending output */
#define SC_CMD_MAX 8192           /* longest command we build (addresses plus parameters) */

enum sc_state {
    S_CONNECTING,
    S_GREETING,
    S_EHLO,
    S_HELO,
    S_STARTTLS,
    S_TLS_HANDSHAKE,
    S_TXN,          /* awaiting replies to MAIL/RCPT/DATA */
    S_BODY,         /* streaming the content */
    S_DOT,          /* awaiting the end-of-data reply(ies) */
    S_DOT_IGNORE,   /* sent "." after a 354 nobody needed; the reply is ignored */
    S_RSET,         /* RSET before parking (a job may already wait for it) */
    S_IDLE,         /* parked in the cache */
    S_QUIT,
};

enum sc_cmd_kind { CMD_MAIL, CMD_RCPT, CMD_DATA };

struct sc_cmd {
    enum sc_cmd_kind kind;
    size_t rcpt;                  /* job recipient index for CMD_RCPT */
};

struct sc_addr {
    char host[256];               /* name for relay=, TLS SNI and verification */
    char addr[128];               /* IP address text, or the unix socket path */
    int family;                   /* AF_INET, AF_INET6, AF_UNIX */
    unsigned port;
};

#define CAP_PIPELINING 1u
#define CAP_SIZE 2u
#define CAP_8BITMIME 4u
#define CAP_SMTPUTF8 8u
#define CAP_DSN 16u
#define CAP_STARTTLS 32u

struct sc_reply {
    int code;
    char text[SC_REPLY_MAX];      /* "550 5.1.1 first line second line" */
    size_t len;
    char dsn[16];                 /* enhanced code of the first line, or "" */
    char first_word[256];         /* first word after the code (EHLO/greeting host name) */
};

struct sc_job;

struct sc_conn {
    struct smtp_client *c;
    struct sc_conn *prev, *next;  /* every connection of the client */
    struct sc_job *job;           /* current owner, NULL while parked or closing */
    char *key;                    /* cache key: the next hop */
    struct bufferevent *bev;
    struct event *timer;
    enum sc_state state;
    struct sc_addr addr;
    char relay[400];              /* "mx.example.com[192.0.2.1]:25" (cut to 319 in results) */
    char desc[400];               /* "mx.example.com[192.0.2.1]" for texts */
    unsigned caps;
    unsigned long long size_limit;
    int tls;                      /* TLS is up */
    int no_tls;                   /* plaintext retry after a failed opportunistic handshake */
    int reused;                   /* handed over from the cache to the current job */
    int busy;                     /* inside one of our callbacks: free later */
    int zombie;                   /* closed while busy */
    /* reply parser */
    struct sc_reply reply;
    int nlines;
    int skipping;                 /* discarding the rest of an overlong line */
};

struct smtp_client {
    struct event_base *base;
    struct smtp_client_settings set;   /* strings point into the copies below */
    char *helo_name, *myhostname, *cafile;
    SSL_CTX *ssl;
    struct sc_conn *conns;
    struct sc_job *jobs;
    unsigned seed;                     /* rand_r state for shuffling equal MX preferences */
    struct smtp_client_stats stats;
};

struct sc_job {
    struct smtp_client *c;
    struct sc_job *prev, *next;
    petrel_pool *pool;
    const struct dlv_job *job;
    smtp_done_fn *done;
    void *arg;
    struct dlv_result *res;
    unsigned char *final;              /* per recipient: SENT or BOUNCED */
    unsigned char *accepted;           /* per recipient: RCPT accepted in this transaction */
    int any_result;                    /* some recipient has a result text */
    struct event *finish_ev;
    int finishing;
    /* routing */
    char domain[256];                  /* host part of the next hop */
    unsigned port;
    int want_mx, is_unix, literal;
    struct { char name[256]; int pref; } hosts[SC_MAX_HOSTS];
    size_t nhosts, host_next;
    int hosts_from_mx;                 /* hosts came from MX records (soft errors for their lookups) */
    struct sc_addr addrs[SC_MAX_ADDRS];
    size_t naddrs, addr_next;
    size_t tried, sessions;
    int routed;                        /* MX/host list is known */
    int retry_plain;                   /* reconnect to the last address without TLS */
    int reuse_failed;                  /* a cached connection failed: go fresh */
    struct dns_query *q_mx, *q_a, *q_aaaa;
    int wait_mx, wait_a, wait_aaaa;
    enum dns_status st_a, st_aaaa;
    struct sc_addr found[SC_MAX_ADDRS];
    size_t nfound;
    struct sc_conn *conn;
    /* transaction */
    struct sc_cmd *cmds;
    size_t ncmds, nsent, nreplied;
    int mail_ok;
    size_t naccepted;
    size_t lmtp_next;                  /* LMTP: next accepted recipient awaiting its reply */
    unsigned long long body_off;
    int body_bol;
    int eightbit;                      /* -1 unknown, 0, 1 */
    struct timespec t_start, t_txn;
    double conn_secs;
    int txn_started;
};

static void conn_close(struct sc_conn *conn);
static void conn_release(struct sc_conn *conn);
static void job_next(struct sc_job *a);
static void job_finish(struct sc_job *a);
static void txn_start(struct sc_job *a);
static void conn_send_ehlo(struct sc_conn *conn);

/* ------------------------------------------------------------------ */
/* helpers */

static double elapsed(const struct timespec *since)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (double)(now.tv_sec - since->tv_sec) + (double)(now.tv_nsec - since->tv_nsec) / 1e9;
}

static int same_host(const char *a, const char *b)
{
    size_t la = strlen(a), lb = strlen(b);
    if (la && a[la - 1] == '.')
        la--;
    if (lb && b[lb - 1] == '.')
        lb--;
    return la == lb && la > 0 && strncasecmp(a, b, la) == 0;
}

int smtp_tls_level_parse(const char *text, enum smtp_tls_level *out)
{
    static const struct { const char *name; enum smtp_tls_level level; } names[] = {
        { "", SMTP_TLS_NONE }, { "none", SMTP_TLS_NONE }, { "may", SMTP_TLS_MAY },
        { "encrypt", SMTP_TLS_ENCRYPT }, { "verify", SMTP_TLS_VERIFY }, { "secure", SMTP_TLS_SECURE },
    };
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
        if (strcasecmp(text ? text : "", names[i].name) == 0) {
            *out = names[i].level;
            return 0;
        }
    return -1;
}

/* Sets the result of recipient i unless it is already final. */
static void rcpt_set(struct sc_job *a, size_t i, enum dlv_status st, const char *dsn, const char *relay,
                     const char *fmt, ...) PETREL_PRINTF(6, 7);
static void rcpt_set(struct sc_job *a, size_t i, enum dlv_status st, const char *dsn, const char *relay,
                     const char *fmt, ...)
{
    if (a->final[i])
        return;
    char text[sizeof(a->res[i].text)];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(text, sizeof(text), fmt, ap);
    va_end(ap);
    double cs = a->res[i].conn_secs, xs = a->res[i].xfer_secs;
    dlv_result_set(&a->res[i], st, dsn, relay, "%s", text);
    a->res[i].conn_secs = cs;
    a->res[i].xfer_secs = xs;
    if (st != DLV_DEFERRED)
        a->final[i] = 1;
    a->any_result = 1;
}

/* Same text for every recipient not yet final. */
static void pending_set(struct sc_job *a, enum dlv_status st, const char *dsn, const char *relay,
                        const char *fmt, ...) PETREL_PRINTF(5, 6);
static void pending_set(struct sc_job *a, enum dlv_status st, const char *dsn, const char *relay,
                        const char *fmt, ...)
{
    char text[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(text, sizeof(text), fmt, ap);
    va_end(ap);
    for (size_t i = 0; i < a->job->nrcpt; i++)
        rcpt_set(a, i, st, dsn, relay, "%s", text);
}

static size_t pending_count(const struct sc_job *a)
{
    size_t n = 0;
    for (size_t i = 0; i < a->job->nrcpt; i++)
        n += !a->final[i];
    return n;
}

/* The status class a reply code stands for. */
static enum dlv_status reply_status(int code)
{
    return code >= 200 && code < 300 ? DLV_SENT : code >= 500 && code < 600 ? DLV_BOUNCED : DLV_DEFERRED;
}

/* The DSN code of a reply: its enhanced code when the class agrees with the
 * reply code, else X.0.0. */
static const char *reply_dsn(const struct sc_reply *r, char out[16])
{
    int cls = r->code / 100;
    if (cls != 2 && cls != 4 && cls != 5)
        cls = 4;
    if (r->dsn[0] && r->dsn[0] - '0' == cls)
        snprintf(out, 16, "%s", r->dsn);
    else
        snprintf(out, 16, "%d.0.0", cls);
    return out;
}

/* Accepts "D.DDD.DDD" followed by white space or the end; 1 when found. */
static int parse_enhanced(const char *p, char out[16], size_t *used)
{
    size_t i = 0, parts = 0, digits = 0;
    if (p[0] != '2' && p[0] != '4' && p[0] != '5')
        return 0;
    for (;; i++) {
        if (p[i] >= '0' && p[i] <= '9') {
            if (++digits > 3 || (parts == 0 && digits > 1))
                return 0;
        } else if (p[i] == '.' && digits && parts < 2) {
            parts++;
            digits = 0;
        } else {
            break;
        }
    }
    if (parts != 2 || !digits || (p[i] != '\0' && p[i] != ' ' && p[i] != '\t') || i >= 16)
        return 0;
    memcpy(out, p, i);
    out[i] = '\0';
    *used = i;
    return 1;
}

/* ------------------------------------------------------------------ */
/* connection plumbing */

static unsigned stage_timeout(const struct smtp_client *c, unsigned secs)
{
    (void)c;
    return secs ? secs : 300;
}

static void conn_arm(struct sc_conn *conn, unsigned secs)
{
    struct timeval tv = { (time_t)secs, 0 };
    evtimer_add(conn->timer, &tv);
}

static void conn_printf(struct sc_conn *conn, const char *fmt, ...) PETREL_PRINTF(2, 3);
static void conn_printf(struct sc_conn *conn, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    evbuffer_add_vprintf(bufferevent_get_output(conn->bev), fmt, ap);
    va_end(ap);
}

static void conn_free_now(struct sc_conn *conn)
{
    struct smtp_client *c = conn->c;
    if (conn->prev)
        conn->prev->next = conn->next;
    else
        c->conns = conn->next;
    if (conn->next)
        conn->next->prev = conn->prev;
    if (conn->bev)
        bufferevent_free(conn->bev);
    event_free(conn->timer);
    free(conn->key);
    free(conn);
}

/* Closes the connection now (no QUIT); the memory goes when no callback of
 * ours is on the stack. */
static void conn_close(struct sc_conn *conn)
{
    if (conn->job && conn->job->conn == conn)
        conn->job->conn = NULL;
    conn->job = NULL;
    evtimer_del(conn->timer);
    if (conn->bev) {
        bufferevent_disable(conn->bev, EV_READ | EV_WRITE);
        bufferevent_setcb(conn->bev, NULL, NULL, NULL, NULL);
        bufferevent_free(conn->bev);
        conn->bev = NULL;
    }
    if (conn->busy)
        conn->zombie = 1;
    else
        conn_free_now(conn);
}

/* Ends use of a connection: QUIT (and wait briefly for its reply), or
 * RSET and park it when caching is on and the dialogue is in a clean state. */
static void conn_release(struct sc_conn *conn)
{
    struct smtp_client *c = conn->c;
    if (conn->job && conn->job->conn == conn)
        conn->job->conn = NULL;
    conn->job = NULL;
    if (conn->bev == NULL) {
        conn_close(conn);
        return;
    }
    if (c->set.connection_cache_time > 0) {
        conn->state = S_RSET;
        conn_printf(conn, "RSET\r\n");
        conn_arm(conn, stage_timeout(c, c->set.mail_timeout));
    } else {
        conn->state = S_QUIT;
        conn_printf(conn, "QUIT\r\n");
        conn_arm(conn, stage_timeout(c, c->set.quit_timeout));
    }
}

/* ------------------------------------------------------------------ */
/* failures of a session */

static const char *stage_text(const struct sc_conn *conn)
{
    const struct sc_job *a = conn->job;
    switch (conn->state) {
    case S_CONNECTING: return "connecting";
    case S_GREETING: return "receiving the initial server greeting";
    case S_EHLO: return conn->c->set.lmtp ? "performing the LHLO handshake" : "performing the EHLO handshake";
    case S_HELO: return "performing the HELO handshake";
    case S_STARTTLS: return "sending STARTTLS";
    case S_TLS_HANDSHAKE: return "performing the TLS handshake";
    case S_TXN:
        if (a && a->nreplied < a->ncmds) {
            switch (a->cmds[a->nreplied].kind) {
            case CMD_MAIL: return "sending MAIL FROM";
            case CMD_RCPT: return "sending RCPT TO";
            case CMD_DATA: return "sending DATA command";
            }
        }
        return "sending MAIL FROM";
    case S_BODY: return "sending message body";
    case S_DOT: case S_DOT_IGNORE: return "sending end of data -- message may be sent more than once";
    default: return "talking to the server";
    }
}

/* The session on conn failed softly (timeout, lost connection, protocol
 * error, bad greeting). A failure of a connection taken from the cache before
 * anything was committed sends the job to a fresh connection instead. */
static void session_fail(struct sc_conn *conn, const char *dsn, const char *fmt, ...) PETREL_PRINTF(3, 4);
static void session_fail(struct sc_conn *conn, const char *dsn, const char *fmt, ...)
{
    struct sc_job *a = conn->job;
    char text[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(text, sizeof(text), fmt, ap);
    va_end(ap);
    if (a == NULL) {   /* a parked or closing connection: just drop it */
        conn_close(conn);
        return;
    }
    /* nothing of this job was answered yet: nothing can have been delivered */
    if (conn->reused && (conn->state == S_RSET || (conn->state == S_TXN && a->nreplied == 0))) {
        msg_info("%s: cached connection to %s failed (%s); retrying on a new connection", a->job->queue_id,
                 conn->relay, text);
        conn_close(conn);
        a->reuse_failed = 1;
        job_next(a);
        return;
    }
    pending_set(a, DLV_DEFERRED, dsn, conn->relay, "%s", text);
    msg_info("%s: %s", a->job->queue_id, text);
    conn_close(conn);
    job_next(a);
}

static void conn_timeout(evutil_socket_t fd, short what, void *arg)
{
    struct sc_conn *conn = arg;
    (void)fd;
    (void)what;
    if (conn->state == S_IDLE) {
        /* the cache time is over: say goodbye */
        conn->state = S_QUIT;
        conn_printf(conn, "QUIT\r\n");
        /* a parked connection is not worth a long wait for the goodbye */
        conn_arm(conn, conn->c->set.quit_timeout < 5 ? conn->c->set.quit_timeout : 5);
        return;
    }
    if (conn->state == S_QUIT || conn->job == NULL) {
        conn_close(conn);
        return;
    }
    if (conn->state == S_CONNECTING) {
        session_fail(conn, "4.4.1", "connect to %s: Connection timed out", conn->relay);
        return;
    }
    session_fail(conn, "4.4.2", "conversation with %s timed out while %s", conn->desc, stage_text(conn));
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

/* Scans the content for 8-bit bytes (only needed when the server lacks
 * 8BITMIME). The queue file is local; this is the same pread the body
 * transfer does, just ahead of time. -1 on a read error. */
static int content_has_8bit(struct sc_job *a)
{
    if (a->eightbit >= 0)
        return a->eightbit;
    const struct queue_message *m = a->job->msg;
    unsigned char chunk[SC_CHUNK];
    unsigned long long off = 0;
    while (off < m->content_length) {
        size_t want = m->content_length - off < sizeof(chunk) ? (size_t)(m->content_length - off) : sizeof(chunk);
        ssize_t n = pread(a->job->fd, chunk, want, m->content_offset + (off_t)off);
        if (n <= 0)
            return -1;
        for (ssize_t i = 0; i < n; i++)
            if (chunk[i] & 0x80)
                return a->eightbit = 1;
        off += (unsigned long long)n;
    }
    return a->eightbit = 0;
}

static void append_cmd(struct sc_job *a, struct buf *out, const struct sc_cmd *cmd)
{
    struct sc_conn *conn = a->conn;
    const struct queue_message *m = a->job->msg;
    if (cmd->kind == CMD_MAIL) {
        buf_printf(out, "MAIL FROM:<%s>", a->job->sender ? a->job->sender : "");
        if (conn->caps & CAP_SIZE)
            buf_printf(out, " SIZE=%llu", m->content_length);
        if ((m->env.flags & QUEUE_F_8BITMIME) && (conn->caps & CAP_8BITMIME))
            buf_puts(out, " BODY=8BITMIME");
        if ((m->env.flags & QUEUE_F_SMTPUTF8) && (conn->caps & CAP_SMTPUTF8))
            buf_puts(out, " SMTPUTF8");
        if (conn->caps & CAP_DSN) {
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
        if ((conn->caps & CAP_DSN) && ri < m->env.rcpt_count) {
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
    case CMD_MAIL: return stage_timeout(a->c, s->mail_timeout);
    case CMD_RCPT: return stage_timeout(a->c, s->rcpt_timeout);
    default: return stage_timeout(a->c, s->data_timeout);
    }
}

/* Sends what may be sent now: everything with PIPELINING, else the next one. */
static void txn_send(struct sc_job *a)
{
    struct sc_conn *conn = a->conn;
    struct buf out = BUF_INIT;
    if (conn->caps & CAP_PIPELINING) {
        while (a->nsent < a->ncmds)
            append_cmd(a, &out, &a->cmds[a->nsent++]);
    } else if (a->nsent == a->nreplied && a->nsent < a->ncmds) {
        append_cmd(a, &out, &a->cmds[a->nsent++]);
    }
    if (out.len)
        bufferevent_write(conn->bev, out.data, out.len);   /* one write: the pipelined group */
    buf_free(&out);
    if (a->nreplied < a->ncmds)
        conn_arm(conn, cmd_timeout(a, &a->cmds[a->nreplied]));
}

/* Checks that need the server's capabilities, then MAIL. */
static void txn_start(struct sc_job *a)
{
    struct sc_conn *conn = a->conn;
    const struct queue_message *m = a->job->msg;
    if (!a->txn_started) {
        a->conn_secs = elapsed(&a->t_start);
        a->txn_started = 1;
    }
    clock_gettime(CLOCK_MONOTONIC, &a->t_txn);
    if ((m->env.flags & QUEUE_F_SMTPUTF8) && !(conn->caps & CAP_SMTPUTF8)) {
        pending_set(a, DLV_BOUNCED, "5.6.7", conn->relay, "SMTPUTF8 is required, but was not offered by host %s",
                    conn->desc);
        conn_release(conn);
        job_next(a);
        return;
    }
    if ((conn->caps & CAP_SIZE) && conn->size_limit && m->content_length > conn->size_limit) {
        pending_set(a, DLV_BOUNCED, "5.3.4", conn->relay, "message size %llu exceeds size limit %llu of server %s",
                    m->content_length, conn->size_limit, conn->desc);
        conn_release(conn);
        job_next(a);
        return;
    }
    if (!(conn->caps & CAP_8BITMIME)) {
        int r = content_has_8bit(a);
        if (r < 0) {
            pending_set(a, DLV_DEFERRED, "4.3.0", conn->relay, "error reading queue file: %s", strerror(errno));
            conn_release(conn);
            job_next(a);
            return;
        }
        if (r) {
            pending_set(a, DLV_BOUNCED, "5.6.3", conn->relay,
                        "Message has 8-bit content but the remote server does not support 8BITMIME");
            conn_release(conn);
            job_next(a);
            return;
        }
    }
    if (bad_address(a->job->sender ? a->job->sender : "")) {
        pending_set(a, DLV_BOUNCED, "5.1.7", conn->relay, "bad sender address syntax");
        conn_release(conn);
        job_next(a);
        return;
    }
    a->ncmds = 0;
    a->nsent = a->nreplied = 0;
    a->naccepted = 0;
    a->mail_ok = 0;
    a->lmtp_next = 0;
    a->cmds[a->ncmds++] = (struct sc_cmd){ CMD_MAIL, 0 };
    for (size_t i = 0; i < a->job->nrcpt; i++) {
        a->accepted[i] = 0;
        if (a->final[i])
            continue;
        if (bad_address(a->job->rcpt_addr[i]) || strlen(a->job->rcpt_addr[i]) > SC_CMD_MAX) {
            rcpt_set(a, i, DLV_BOUNCED, "5.1.3", conn->relay, "bad recipient address syntax");
            continue;
        }
        a->cmds[a->ncmds++] = (struct sc_cmd){ CMD_RCPT, i };
    }
    if (a->ncmds == 1) {   /* nothing left to send */
        conn_release(conn);
        job_next(a);
        return;
    }
    a->cmds[a->ncmds++] = (struct sc_cmd){ CMD_DATA, 0 };
    conn->state = S_TXN;
    txn_send(a);
}

/* Streams content into the output buffer up to SC_OUT_HIGH. */
static void body_feed(struct sc_job *a)
{
    struct sc_conn *conn = a->conn;
    const struct queue_message *m = a->job->msg;
    struct evbuffer *out = bufferevent_get_output(conn->bev);
    char chunk[SC_CHUNK];
    while (evbuffer_get_length(out) < SC_OUT_HIGH && a->body_off < m->content_length) {
        size_t want = m->content_length - a->body_off < sizeof(chunk) ? (size_t)(m->content_length - a->body_off)
                                                                         : sizeof(chunk);
        ssize_t n = pread(a->job->fd, chunk, want, m->content_offset + (off_t)a->body_off);
        if (n <= 0) {
            /* closing without "." aborts the transaction at the server */
            pending_set(a, DLV_DEFERRED, "4.3.0", conn->relay, "error reading queue file: %s",
                        n < 0 ? strerror(errno) : "unexpected end of file");
            conn_close(conn);
            job_next(a);
            return;
        }
        a->body_off += (unsigned long long)n;
        /* dot-stuffing: a line that starts with '.' gets one more */
        size_t i = 0;
        while (i < (size_t)n) {
            if (a->body_bol && chunk[i] == '.')
                evbuffer_add(out, ".", 1);
            char *lf = memchr(chunk + i, '\n', (size_t)n - i);
            size_t end = lf ? (size_t)(lf - chunk) + 1 : (size_t)n;
            evbuffer_add(out, chunk + i, end - i);
            a->body_bol = lf != NULL;
            i = end;
        }
    }
    if (a->body_off >= m->content_length) {
        if (!a->body_bol)
            evbuffer_add(out, "\r\n", 2);
        evbuffer_add(out, ".\r\n", 3);
        conn->state = S_DOT;
        conn_arm(conn, stage_timeout(a->c, a->c->set.data_done_timeout));
    } else {
        conn_arm(conn, stage_timeout(a->c, a->c->set.data_timeout));
    }
}

static void sent_rcpt(struct sc_job *a, size_t i, const struct sc_reply *r)
{
    char dsn[16];
    struct sc_conn *conn = a->conn;
    enum dlv_status st = reply_status(r->code);
    reply_dsn(r, dsn);
    if (st == DLV_SENT)
        rcpt_set(a, i, st, dsn, conn->relay, "%s", r->text);
    else
        rcpt_set(a, i, st, dsn, conn->relay, "host %s said: %s (in reply to end of DATA command)", conn->desc,
                 r->text);
    a->res[i].xfer_secs = elapsed(&a->t_txn);
    a->res[i].conn_secs = a->conn_secs;
}

/* The transaction is over and the dialogue is in a clean state. */
static void txn_done(struct sc_job *a)
{
    struct sc_conn *conn = a->conn;
    conn_release(conn);
    job_next(a);
}

static void on_txn_reply(struct sc_job *a, const struct sc_reply *r)
{
    struct sc_conn *conn = a->conn;
    char dsn[16];
    const struct sc_cmd *cmd = &a->cmds[a->nreplied++];
    switch (cmd->kind) {
    case CMD_MAIL:
        if (r->code / 100 == 2) {
            a->mail_ok = 1;
        } else {
            if (conn->reused && r->code == 421) {
                /* the cached connection was being shut down: go fresh */
                a->nreplied = 0;
                session_fail(conn, "4.4.2", "host %s said: %s (in reply to MAIL FROM command)", conn->desc, r->text);
                return;
            }
            pending_set(a, reply_status(r->code) == DLV_SENT ? DLV_DEFERRED : reply_status(r->code),
                        reply_dsn(r, dsn), conn->relay, "host %s said: %s (in reply to MAIL FROM command)",
                        conn->desc, r->text);
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
            rcpt_set(a, cmd->rcpt, st == DLV_SENT ? DLV_DEFERRED : st, reply_dsn(r, dsn), conn->relay,
                     "host %s said: %s (in reply to RCPT TO command)", conn->desc, r->text);
        }
        break;
    case CMD_DATA:
        if (r->code == 354) {
            if (!a->mail_ok || a->naccepted == 0) {
                /* a pipelined DATA the server accepted anyway: end it empty */
                conn->state = S_DOT_IGNORE;
                conn_printf(conn, ".\r\n");
                conn_arm(conn, stage_timeout(a->c, a->c->set.data_done_timeout));
                return;
            }
            conn->state = S_BODY;
            a->body_off = 0;
            a->body_bol = 1;
            body_feed(a);
            return;
        }
        if (a->mail_ok && a->naccepted) {
            for (size_t i = 0; i < a->job->nrcpt; i++)
                if (a->accepted[i]) {
                    enum dlv_status st = reply_status(r->code);
                    rcpt_set(a, i, st == DLV_SENT ? DLV_DEFERRED : st, reply_dsn(r, dsn), conn->relay,
                             "host %s said: %s (in reply to DATA command)", conn->desc, r->text);
                }
        }
        txn_done(a);
        return;
    }
    if (!(conn->caps & CAP_PIPELINING)) {
        /* stop early when the rest cannot succeed */
        if (!a->mail_ok || (a->nreplied == a->ncmds - 1 && a->naccepted == 0)) {
            txn_done(a);
            return;
        }
    }
    txn_send(a);
}

static void on_dot_reply(struct sc_job *a, const struct sc_reply *r)
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
        conn_arm(conn, stage_timeout(a->c, a->c->set.data_done_timeout));
}

/* ------------------------------------------------------------------ */
/* greeting, EHLO, STARTTLS */

static int tls_wanted(const struct sc_conn *conn)
{
    return conn->c->set.tls_level != SMTP_TLS_NONE && conn->c->ssl && !conn->tls && !conn->no_tls;
}

static void parse_ehlo_caps(struct sc_conn *conn, const char *line)
{
    /* line: one EHLO keyword line without the "250-" prefix */
    char kw[32];
    size_t n = 0;
    while (line[n] && line[n] != ' ' && line[n] != '=' && n < sizeof(kw) - 1) {
        kw[n] = line[n];
        n++;
    }
    kw[n] = '\0';
    if (strcasecmp(kw, "PIPELINING") == 0)
        conn->caps |= CAP_PIPELINING;
    else if (strcasecmp(kw, "8BITMIME") == 0)
        conn->caps |= CAP_8BITMIME;
    else if (strcasecmp(kw, "SMTPUTF8") == 0)
        conn->caps |= CAP_SMTPUTF8;
    else if (strcasecmp(kw, "DSN") == 0)
        conn->caps |= CAP_DSN;
    else if (strcasecmp(kw, "STARTTLS") == 0)
        conn->caps |= CAP_STARTTLS;
    else if (strcasecmp(kw, "SIZE") == 0) {
        conn->caps |= CAP_SIZE;
        conn->size_limit = strtoull(line + n + (line[n] ? 1 : 0), NULL, 10);
    }
}

static int loops_back(struct sc_conn *conn, const struct sc_reply *r)
{
    struct sc_job *a = conn->job;
    const char *me = conn->c->set.myhostname;
    /* not for LMTP: an LMTP server on this host (Dovecot) rightly greets
     * with our own name */
    if (me == NULL || *me == '\0' || conn->c->set.lmtp || !same_host(r->first_word, me))
        return 0;
    pending_set(a, DLV_BOUNCED, "5.4.6", conn->relay, "mail for %s loops back to myself", a->domain);
    conn_close(conn);
    job_next(a);
    return 1;
}

static void tls_start(struct sc_conn *conn);

/* Capabilities are known: TLS next, or the transaction. */
static void after_ehlo(struct sc_conn *conn)
{
    struct sc_job *a = conn->job;
    enum smtp_tls_level lvl = conn->c->set.tls_level;
    if (tls_wanted(conn) && (conn->caps & CAP_STARTTLS)) {
        conn->state = S_STARTTLS;
        conn_printf(conn, "STARTTLS\r\n");
        conn_arm(conn, stage_timeout(conn->c, conn->c->set.helo_timeout));
        return;
    }
    if (lvl >= SMTP_TLS_ENCRYPT && !conn->tls) {
        pending_set(a, DLV_DEFERRED, "4.7.4", conn->relay, "TLS is required, but was not offered by host %s",
                    conn->desc);
        conn_release(conn);
        job_next(a);
        return;
    }
    txn_start(a);
}

static void on_session_reply(struct sc_conn *conn, const struct sc_reply *r)
{
    struct sc_job *a = conn->job;
    char dsn[16];
    switch (conn->state) {
    case S_GREETING:
        if (r->code / 100 != 2) {
            /* even a 5xx greeting only skips this server (smtp_skip_5xx_greeting) */
            reply_dsn(r, dsn);
            session_fail(conn, dsn[0] == '5' ? "4.0.0" : dsn, "host %s refused to talk to me: %s", conn->desc,
                         r->text);
            return;
        }
        a->sessions++;
        if (loops_back(conn, r))
            return;
        conn_send_ehlo(conn);
        return;
    case S_EHLO:
        if (r->code / 100 == 2) {
            if (loops_back(conn, r))
                return;
            after_ehlo(conn);
            return;
        }
        if (r->code / 100 == 5 && !conn->c->set.lmtp && !conn->tls) {
            conn->state = S_HELO;
            conn->caps = 0;
            conn_printf(conn, "HELO %s\r\n", conn->c->set.helo_name);
            conn_arm(conn, stage_timeout(conn->c, conn->c->set.helo_timeout));
            return;
        }
        /* fallthrough */
    case S_HELO:
        if (r->code / 100 == 2) {
            if (loops_back(conn, r))
                return;
            conn->caps = 0;
            after_ehlo(conn);
            return;
        }
        if (r->code / 100 == 5 && a->addr_next >= a->naddrs && a->host_next >= a->nhosts) {
            /* the last server refuses us outright */
            pending_set(a, DLV_BOUNCED, reply_dsn(r, dsn), conn->relay, "host %s refused to talk to me: %s",
                        conn->desc, r->text);
            conn_release(conn);
            job_next(a);
            return;
        }
        session_fail(conn, r->code / 100 == 5 ? "4.0.0" : reply_dsn(r, dsn), "host %s refused to talk to me: %s",
                     conn->desc, r->text);
        return;
    case S_STARTTLS:
        if (r->code == 220) {
            tls_start(conn);
            return;
        }
        if (conn->c->set.tls_level >= SMTP_TLS_ENCRYPT) {
            pending_set(a, DLV_DEFERRED, "4.7.4", conn->relay,
                        "TLS is required, but host %s refused to start TLS: %s", conn->desc, r->text);
            conn_release(conn);
            job_next(a);
            return;
        }
        conn->no_tls = 1;   /* opportunistic: carry on in plaintext */
        txn_start(a);
        return;
    default:
        return;
    }
}

static void conn_send_ehlo(struct sc_conn *conn)
{
    conn->state = S_EHLO;
    conn->caps = 0;
    conn->size_limit = 0;
    conn_printf(conn, "%s %s\r\n", conn->c->set.lmtp ? "LHLO" : "EHLO", conn->c->set.helo_name);
    conn_arm(conn, stage_timeout(conn->c, conn->c->set.helo_timeout));
}

/* ------------------------------------------------------------------ */
/* reading replies */

static void on_reply(struct sc_conn *conn)
{
    struct sc_job *a = conn->job;
    const struct sc_reply *r = &conn->reply;
    switch (conn->state) {
    case S_IDLE:
        /* unsolicited data on a parked connection (a 421 before closing) */
        conn_close(conn);
        return;
    case S_QUIT:
        conn_close(conn);
        return;
    case S_RSET:
        if (r->code / 100 != 2) {
            if (a) {
                conn->state = S_RSET;
                session_fail(conn, "4.4.2", "host %s said: %s (in reply to RSET command)", conn->desc, r->text);
            } else {
                conn->state = S_QUIT;
                conn_printf(conn, "QUIT\r\n");
                conn_arm(conn, 5);
            }
            return;
        }
        if (a) {   /* a job took this connection over while the RSET was in flight */
            txn_start(a);
            return;
        }
        conn->state = S_IDLE;
        conn_arm(conn, conn->c->set.connection_cache_time);
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
        pending_set(a, reply_status(r->code) == DLV_BOUNCED ? DLV_BOUNCED : DLV_DEFERRED, reply_dsn(r, dsn),
                    conn->relay, "host %s said: %s (in reply to end of DATA command)", conn->desc, r->text);
        conn_close(conn);
        job_next(a);
        return;
    }
    default:
        on_session_reply(conn, r);
        return;
    }
}

/* Adds one reply line; returns 1 when the reply is complete, -1 on a
 * malformed line. */
static int reply_line(struct sc_conn *conn, const char *line, size_t len)
{
    struct sc_reply *r = &conn->reply;
    if (len < 3 || line[0] < '1' || line[0] > '5' || line[1] < '0' || line[1] > '9' || line[2] < '0'
        || line[2] > '9' || (len > 3 && line[3] != ' ' && line[3] != '-'))
        return -1;
    int code = (line[0] - '0') * 100 + (line[1] - '0') * 10 + (line[2] - '0');
    int last = len == 3 || line[3] == ' ';
    const char *text = len > 3 ? line + 4 : "";
    char dsn[16];
    size_t used = 0;
    if (conn->nlines == 0) {
        memset(r, 0, sizeof(*r));
        r->code = code;
        if (parse_enhanced(text, dsn, &used))
            snprintf(r->dsn, sizeof(r->dsn), "%s", dsn);
        size_t w = 0;
        while (text[w] && text[w] != ' ' && w < sizeof(r->first_word) - 1) {
            r->first_word[w] = text[w];
            w++;
        }
        r->first_word[w] = '\0';
        r->len = (size_t)snprintf(r->text, sizeof(r->text), "%d%s%s", code, *text ? " " : "", text);
        if (r->len >= sizeof(r->text))
            r->len = sizeof(r->text) - 1;
    } else {
        if (conn->state == S_EHLO)
            parse_ehlo_caps(conn, text);
        /* a repeated enhanced code on continuation lines is noise */
        if (r->dsn[0] && parse_enhanced(text, dsn, &used) && strcmp(dsn, r->dsn) == 0) {
            text += used;
            while (*text == ' ')
                text++;
        }
        if (conn->state != S_EHLO && *text && r->len + 1 < sizeof(r->text)) {
            int n = snprintf(r->text + r->len, sizeof(r->text) - r->len, " %s", text);
            r->len += (size_t)n;
            if (r->len >= sizeof(r->text))
                r->len = sizeof(r->text) - 1;
        }
    }
    conn->nlines++;
    if (last) {
        conn->nlines = 0;
        return 1;
    }
    if (conn->nlines > SC_REPLY_LINES)
        return -1;
    return 0;
}

static void on_read(struct bufferevent *bev, void *arg)
{
    struct sc_conn *conn = arg;
    struct evbuffer *in = bufferevent_get_input(bev);
    conn->busy++;
    while (!conn->zombie && conn->bev) {
        size_t eol_len = 0;
        struct evbuffer_ptr p = evbuffer_search_eol(in, NULL, &eol_len, EVBUFFER_EOL_CRLF);
        size_t avail = evbuffer_get_length(in);
        char line[SC_LINE_MAX + 1];
        size_t len;
        if (p.pos < 0) {
            if (avail <= SC_LINE_MAX)
                break;   /* wait for the rest of the line */
            /* an overlong line: keep its start, skip the rest */
            if (!conn->skipping) {
                evbuffer_remove(in, line, SC_LINE_MAX);
                len = SC_LINE_MAX;
                conn->skipping = 1;
            } else {
                evbuffer_drain(in, avail);
                continue;
            }
        } else {
            size_t take = (size_t)p.pos;
            if (conn->skipping) {
                evbuffer_drain(in, take + eol_len);
                conn->skipping = 0;
                continue;
            }
            len = take > SC_LINE_MAX ? SC_LINE_MAX : take;
            evbuffer_remove(in, line, len);
            evbuffer_drain(in, take - len + eol_len);
        }
        line[len] = '\0';
        for (size_t i = 0; i < len; i++)   /* a NUL would cut the text short: make it visible */
            if (line[i] == '\0')
                line[i] = '?';
        int rc = reply_line(conn, line, len);
        if (rc < 0) {
            if (conn->job) {
                session_fail(conn, "4.5.0", "host %s sent a malformed reply while %s", conn->desc,
                             stage_text(conn));
            } else {
                conn_close(conn);
            }
            break;
        }
        if (rc == 1) {
            evtimer_del(conn->timer);
            on_reply(conn);
            if (conn->bev != bev)
                break;   /* closed, or TLS now sits on top: its own callbacks take over */
        }
    }
    conn->busy--;
    if (conn->zombie && !conn->busy)
        conn_free_now(conn);
}

static void on_write(struct bufferevent *bev, void *arg)
{
    struct sc_conn *conn = arg;
    (void)bev;
    if (conn->state == S_BODY && conn->job) {
        conn->busy++;
        body_feed(conn->job);
        conn->busy--;
        if (conn->zombie && !conn->busy)
            conn_free_now(conn);
    }
}

static void tls_established(struct sc_conn *conn);

static void on_event(struct bufferevent *bev, short what, void *arg)
{
    struct sc_conn *conn = arg;
    int err = EVUTIL_SOCKET_ERROR();
    (void)bev;
    conn->busy++;
    if (what & BEV_EVENT_CONNECTED) {
        if (conn->state == S_CONNECTING) {
            conn->state = S_GREETING;
            conn_arm(conn, stage_timeout(conn->c, conn->c->set.helo_timeout));
        } else if (conn->state == S_TLS_HANDSHAKE) {
            tls_established(conn);
        }
    } else if (what & (BEV_EVENT_EOF | BEV_EVENT_ERROR)) {
        if (conn->state == S_CONNECTING) {
            session_fail(conn, "4.4.1", "connect to %s: %s", conn->relay, strerror(err ? err : ECONNREFUSED));
        } else if (conn->state == S_TLS_HANDSHAKE) {
            char reason[256] = "handshake failure";
            unsigned long e = bufferevent_get_openssl_error(conn->bev);
            if (e)
                ERR_error_string_n(e, reason, sizeof(reason));
            ERR_clear_error();
            struct sc_job *a = conn->job;
            if (a && conn->c->set.tls_level == SMTP_TLS_MAY) {
                msg_info("%s: TLS handshake with %s failed (%s); retrying in plaintext", a->job->queue_id,
                         conn->relay, reason);
                conn_close(conn);
                a->retry_plain = 1;
                job_next(a);
            } else {
                session_fail(conn, "4.7.5", "Cannot start TLS: handshake failure with %s: %s", conn->desc, reason);
            }
        } else if (conn->state == S_IDLE || conn->state == S_QUIT || (conn->state == S_RSET && !conn->job)) {
            conn_close(conn);
        } else {
            session_fail(conn, "4.4.2", "lost connection with %s while %s", conn->desc, stage_text(conn));
        }
    }
    conn->busy--;
    if (conn->zombie && !conn->busy)
        conn_free_now(conn);
}

/* ------------------------------------------------------------------ */
/* TLS */

static void tls_start(struct sc_conn *conn)
{
    struct smtp_client *c = conn->c;
    struct sc_job *a = conn->job;
    SSL *ssl = SSL_new(c->ssl);
    if (ssl == NULL) {
        session_fail(conn, "4.7.5", "Cannot start TLS: out of memory");
        return;
    }
    int literal = conn->addr.family != AF_UNIX && strcmp(conn->addr.host, conn->addr.addr) == 0;
    if (!literal)
        SSL_set_tlsext_host_name(ssl, conn->addr.host);
    if (c->set.tls_level >= SMTP_TLS_VERIFY) {
        SSL_set_hostflags(ssl, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
        if (literal) {
            X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl), conn->addr.addr);
        } else if (c->set.tls_level == SMTP_TLS_VERIFY) {
            /* Postfix smtp_tls_verify_cert_match = hostname: the MX name */
            SSL_set1_host(ssl, conn->addr.host);
        } else {
            /* smtp_tls_secure_cert_match = nexthop, dot-nexthop: not the
             * (DNS-supplied, hence forgeable) MX name */
            char dotted[260];
            SSL_set1_host(ssl, a->domain);
            snprintf(dotted, sizeof(dotted), ".%s", a->domain);
            SSL_add1_host(ssl, dotted);
        }
    }
    /* Nothing may sit in the input buffer now: it would be plaintext the
     * server sent after 220 (a STARTTLS injection attempt). */
    evbuffer_drain(bufferevent_get_input(conn->bev), evbuffer_get_length(bufferevent_get_input(conn->bev)));
    struct bufferevent *tb = bufferevent_openssl_filter_new(c->base, conn->bev, ssl, BUFFEREVENT_SSL_CONNECTING,
                                                            BEV_OPT_CLOSE_ON_FREE);
    if (tb == NULL) {
        SSL_free(ssl);
        session_fail(conn, "4.7.5", "Cannot start TLS: cannot create the TLS layer");
        return;
    }
    bufferevent_openssl_set_allow_dirty_shutdown(tb, 1);
    bufferevent_setwatermark(tb, EV_WRITE, SC_CHUNK, 0);
    conn->bev = tb;
    conn->state = S_TLS_HANDSHAKE;
    bufferevent_setcb(tb, on_read, on_write, on_event, conn);
    bufferevent_enable(tb, EV_READ | EV_WRITE);
    conn_arm(conn, stage_timeout(c, c->set.helo_timeout));
}

static void tls_established(struct sc_conn *conn)
{
    struct smtp_client *c = conn->c;
    SSL *ssl = bufferevent_openssl_get_ssl(conn->bev);
    conn->tls = 1;
    if (c->set.tls_level >= SMTP_TLS_VERIFY) {
        X509 *peer = SSL_get1_peer_certificate(ssl);
        long v = SSL_get_verify_result(ssl);
        if (peer)
            X509_free(peer);
        if (peer == NULL || v != X509_V_OK) {
            conn->state = S_TLS_HANDSHAKE;
            session_fail(conn, "4.7.5", "Server certificate not verified: %s: %s", conn->desc,
                         peer ? X509_verify_cert_error_string(v) : "no certificate");
            return;
        }
    }
    msg_debug("TLS connection established to %s: %s with cipher %s", conn->relay, SSL_get_version(ssl),
              SSL_get_cipher_name(ssl));
    conn_send_ehlo(conn);
}

/* ------------------------------------------------------------------ */
/* connecting */

static void conn_open(struct sc_job *a, const struct sc_addr *addr, int no_tls)
{
    struct smtp_client *c = a->c;
    struct sc_conn *conn = xcalloc(1, sizeof(*conn));
    conn->c = c;
    conn->addr = *addr;
    conn->no_tls = no_tls;
    conn->key = xstrdup(a->job->nexthop);
    conn->timer = evtimer_new(c->base, conn_timeout, conn);
    conn->next = c->conns;
    if (c->conns)
        c->conns->prev = conn;
    c->conns = conn;
    conn->job = a;
    a->conn = conn;
    conn->state = S_CONNECTING;
    if (addr->family == AF_UNIX) {
        snprintf(conn->desc, sizeof(conn->desc), "%s[%s]", addr->host, addr->addr);
        snprintf(conn->relay, sizeof(conn->relay), "%s[%s]", addr->host, addr->addr);
    } else {
        snprintf(conn->desc, sizeof(conn->desc), "%s[%s]", addr->host, addr->addr);
        snprintf(conn->relay, sizeof(conn->relay), "%s[%s]:%u", addr->host, addr->addr, addr->port);
    }
    a->tried++;
    c->stats.connections++;

    struct sockaddr_storage ss;
    socklen_t sl = 0;
    memset(&ss, 0, sizeof(ss));
    if (addr->family == AF_UNIX) {
        struct sockaddr_un *su = (struct sockaddr_un *)&ss;
        su->sun_family = AF_UNIX;
        size_t pl = strnlen(addr->addr, sizeof(su->sun_path) - 1);   /* checked in parse_nexthop */
        memcpy(su->sun_path, addr->addr, pl);
        sl = sizeof(*su);
    } else if (addr->family == AF_INET) {
        struct sockaddr_in *s4 = (struct sockaddr_in *)&ss;
        s4->sin_family = AF_INET;
        s4->sin_port = htons((unsigned short)addr->port);
        inet_pton(AF_INET, addr->addr, &s4->sin_addr);
        sl = sizeof(*s4);
    } else {
        struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&ss;
        s6->sin6_family = AF_INET6;
        s6->sin6_port = htons((unsigned short)addr->port);
        inet_pton(AF_INET6, addr->addr, &s6->sin6_addr);
        sl = sizeof(*s6);
    }
    int fd = socket(addr->family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    int err = 0;
    if (fd >= 0 && addr->family != AF_UNIX) {
        /* Commands and the body's last segment must not wait for the peer's
         * delayed ACK (Nagle): that cost ~40 ms per message. */
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    }
    if (fd < 0)
        err = errno;
    else if (connect(fd, (struct sockaddr *)&ss, sl) < 0 && errno != EINPROGRESS)
        err = errno;
    if (err) {
        if (fd >= 0)
            close(fd);
        const char *where = addr->family == AF_UNIX ? addr->addr : conn->relay;
        pending_set(a, DLV_DEFERRED, "4.4.1", conn->relay, "connect to %s: %s", where, strerror(err));
        msg_info("%s: connect to %s: %s", a->job->queue_id, where, strerror(err));
        conn_close(conn);
        job_next(a);
        return;
    }
    conn->bev = bufferevent_socket_new(c->base, fd, BEV_OPT_CLOSE_ON_FREE);
    bufferevent_setcb(conn->bev, on_read, on_write, on_event, conn);
    bufferevent_setwatermark(conn->bev, EV_WRITE, SC_CHUNK, 0);
    bufferevent_enable(conn->bev, EV_READ | EV_WRITE);
    conn_arm(conn, stage_timeout(c, c->set.connect_timeout));
    /* NULL address: the socket is already connecting; libevent reports
     * BEV_EVENT_CONNECTED or the error from SO_ERROR */
    bufferevent_socket_connect(conn->bev, NULL, 0);
}

/* A parked (or RSET-pending) connection for this next hop, if any. */
static struct sc_conn *cache_take(struct smtp_client *c, const char *key)
{
    for (struct sc_conn *conn = c->conns; conn; conn = conn->next)
        if (conn->job == NULL && !conn->zombie && conn->bev && (conn->state == S_IDLE || conn->state == S_RSET)
            && strcmp(conn->key, key) == 0)
            return conn;
    return NULL;
}

/* ------------------------------------------------------------------ */
/* routing */

static void add_found(struct sc_job *a, const char *host, const struct dns_answer *ans, int family)
{
    if (ans->status != DNS_OK)
        return;
    for (size_t i = 0; i < ans->count && a->nfound < SC_MAX_ADDRS; i++) {
        struct sc_addr *x = &a->found[a->nfound++];
        memset(x, 0, sizeof(*x));
        snprintf(x->host, sizeof(x->host), "%s", host);
        snprintf(x->addr, sizeof(x->addr), "%s", ans->values[i]);
        x->family = family;
        x->port = a->port;
    }
}

/* Both address lookups of the current host are in. */
static void host_resolved(struct sc_job *a)
{
    const char *name = a->hosts[a->host_next].name;
    a->host_next++;
    if (a->nfound) {
        for (size_t i = 0; i < a->nfound && a->naddrs < SC_MAX_ADDRS; i++)
            a->addrs[a->naddrs++] = a->found[i];
        a->nfound = 0;
        job_next(a);
        return;
    }
    /* no address: the worst of the two answers decides */
    enum dns_status st = a->st_a == DNS_TEMPFAIL || a->st_aaaa == DNS_TEMPFAIL ? DNS_TEMPFAIL
                       : a->st_a == DNS_NXDOMAIN ? DNS_NXDOMAIN : a->st_a;
    int hard = !a->hosts_from_mx && (st == DNS_NXDOMAIN || st == DNS_NODATA || st == DNS_BADNAME);
    if (hard)
        pending_set(a, DLV_BOUNCED, "5.4.4", "none",
                    "Host or domain name not found. Name service error for name=%s type=A: %s", name,
                    dns_status_text(st));
    else
        pending_set(a, DLV_DEFERRED, "4.4.3", "none",
                    "Host or domain name not found. Name service error for name=%s type=A: %s", name,
                    dns_status_text(st));
    job_next(a);
}

static void on_a(const struct dns_answer *ans, void *arg)
{
    struct sc_job *a = arg;
    a->q_a = NULL;
    a->wait_a = 0;
    a->st_a = ans->status;
    add_found(a, a->hosts[a->host_next].name, ans, AF_INET);
    if (!a->wait_aaaa)
        host_resolved(a);
}

static void on_aaaa(const struct dns_answer *ans, void *arg)
{
    struct sc_job *a = arg;
    a->q_aaaa = NULL;
    a->wait_aaaa = 0;
    a->st_aaaa = ans->status;
    add_found(a, a->hosts[a->host_next].name, ans, AF_INET6);
    if (!a->wait_a)
        host_resolved(a);
}

static void resolve_host(struct sc_job *a)
{
    const char *name = a->hosts[a->host_next].name;
    a->nfound = 0;
    a->wait_a = a->wait_aaaa = 1;
    a->st_a = a->st_aaaa = DNS_NODATA;
    /* a synchronous answer (bad name) clears wait_* inside dns_lookup */
    struct dns_query *q = dns_lookup(a->c->set.dns, DNS_A, name, on_a, a);
    if (a->wait_a)
        a->q_a = q;
    if (!a->wait_aaaa)
        return;
    q = dns_lookup(a->c->set.dns, DNS_AAAA, name, on_aaaa, a);
    if (a->wait_aaaa)
        a->q_aaaa = q;
}

static void shuffle_equal(struct sc_job *a)
{
    for (size_t start = 0; start < a->nhosts;) {
        size_t end = start + 1;
        while (end < a->nhosts && a->hosts[end].pref == a->hosts[start].pref)
            end++;
        for (size_t i = end - 1; i > start; i--) {
            size_t j = start + (size_t)rand_r(&a->c->seed) % (i - start + 1);
            if (j != i) {
                __typeof__(a->hosts[0]) t = a->hosts[i];
                a->hosts[i] = a->hosts[j];
                a->hosts[j] = t;
            }
        }
        start = end;
    }
}

static void on_mx(const struct dns_answer *ans, void *arg)
{
    struct sc_job *a = arg;
    a->q_mx = NULL;
    a->wait_mx = 0;
    if (ans->status == DNS_OK) {
        if (ans->count == 1 && (ans->values[0][0] == '\0' || strcmp(ans->values[0], ".") == 0)) {
            pending_set(a, DLV_BOUNCED, "5.1.10", "none", "Domain %s does not accept mail (nullMX)", a->domain);
            job_next(a);
            return;
        }
        for (size_t i = 0; i < ans->count && a->nhosts < SC_MAX_HOSTS; i++) {
            if (ans->values[i][0] == '\0' || strcmp(ans->values[i], ".") == 0)
                continue;
            snprintf(a->hosts[a->nhosts].name, sizeof(a->hosts[0].name), "%s", ans->values[i]);
            a->hosts[a->nhosts++].pref = ans->preferences ? ans->preferences[i] : 0;
        }
        a->hosts_from_mx = 1;
        shuffle_equal(a);
        /* Postfix: an MX host that is us cuts the list at its preference;
         * only better-preference hosts remain. None left: a mail loop. */
        const char *me = a->c->set.myhostname;
        for (size_t i = 0; me && *me && i < a->nhosts; i++)
            if (same_host(a->hosts[i].name, me)) {
                size_t keep = 0;
                while (keep < a->nhosts && a->hosts[keep].pref < a->hosts[i].pref)
                    keep++;
                a->nhosts = keep;
                break;
            }
        if (a->nhosts == 0) {
            pending_set(a, DLV_BOUNCED, "5.4.6", "none", "mail for %s loops back to myself", a->domain);
            job_next(a);
            return;
        }
        job_next(a);
        return;
    }
    if (ans->status == DNS_NODATA) {
        /* no MX: the domain's own address records (RFC 5321 5.1) */
        const char *me = a->c->set.myhostname;
        if (me && *me && same_host(a->domain, me)) {
            pending_set(a, DLV_BOUNCED, "5.4.6", "none", "mail for %s loops back to myself", a->domain);
            job_next(a);
            return;
        }
        snprintf(a->hosts[0].name, sizeof(a->hosts[0].name), "%s", a->domain);
        a->nhosts = 1;
        job_next(a);
        return;
    }
    if (ans->status == DNS_NXDOMAIN || ans->status == DNS_BADNAME)
        pending_set(a, DLV_BOUNCED, "5.4.4", "none",
                    "Host or domain name not found. Name service error for name=%s type=MX: %s", a->domain,
                    dns_status_text(ans->status));
    else
        pending_set(a, DLV_DEFERRED, "4.4.3", "none",
                    "Host or domain name not found. Name service error for name=%s type=MX: %s", a->domain,
                    dns_status_text(ans->status));
    job_next(a);
}

static int parse_port(const char *s, unsigned *out)
{
    if (strcmp(s, "smtp") == 0) {
        *out = 25;
        return 0;
    }
    if (strcmp(s, "lmtp") == 0) {
        *out = 24;
        return 0;
    }
    char *end;
    unsigned long v = strtoul(s, &end, 10);
    if (*s == '\0' || *end || v == 0 || v > 65535)
        return -1;
    *out = (unsigned)v;
    return 0;
}

static int literal_family(const char *s)
{
    struct in6_addr v6;
    struct in_addr v4;
    if (inet_pton(AF_INET, s, &v4) == 1)
        return AF_INET;
    if (inet_pton(AF_INET6, s, &v6) == 1)
        return AF_INET6;
    return 0;
}

/* Parses the next hop into domain/port/flags; -1 when malformed. */
static int parse_nexthop(struct sc_job *a)
{
    struct smtp_client *c = a->c;
    const char *nh = a->job->nexthop ? a->job->nexthop : "";
    a->port = c->set.default_port ? c->set.default_port : c->set.lmtp ? 24 : 25;
    if (c->set.lmtp && strncmp(nh, "unix:", 5) == 0) {
        const char *path = nh + 5;
        if (*path == '\0' || strlen(path) >= sizeof(((struct sockaddr_un *)0)->sun_path))
            return -1;
        a->is_unix = 1;
        snprintf(a->domain, sizeof(a->domain), "%s", path);
        struct sc_addr *x = &a->addrs[a->naddrs++];
        memset(x, 0, sizeof(*x));
        snprintf(x->host, sizeof(x->host), "%s",
                 c->set.myhostname && *c->set.myhostname ? c->set.myhostname : "localhost");
        memcpy(x->addr, path, strlen(path) + 1);   /* shorter than sun_path, checked above */
        x->family = AF_UNIX;
        a->routed = 1;
        return 0;
    }
    if (c->set.lmtp && strncmp(nh, "inet:", 5) == 0)
        nh += 5;
    char host[256];
    const char *port = NULL;
    if (nh[0] == '[') {
        const char *close = strchr(nh, ']');
        if (close == NULL || (size_t)(close - nh - 1) >= sizeof(host) || close == nh + 1)
            return -1;
        memcpy(host, nh + 1, (size_t)(close - nh - 1));
        host[close - nh - 1] = '\0';
        if (close[1] == ':')
            port = close + 2;
        else if (close[1] != '\0')
            return -1;
        if (strncasecmp(host, "ipv6:", 5) == 0)
            memmove(host, host + 5, strlen(host + 5) + 1);
    } else {
        const char *colon = strrchr(nh, ':');
        size_t hl = colon ? (size_t)(colon - nh) : strlen(nh);
        if (hl == 0 || hl >= sizeof(host))
            return -1;
        memcpy(host, nh, hl);
        host[hl] = '\0';
        if (colon)
            port = colon + 1;
        /* Postfix: an unbracketed name is looked up as MX (SMTP only) */
        a->want_mx = !c->set.lmtp;
    }
    if (port && parse_port(port, &a->port) < 0)
        return -1;
    snprintf(a->domain, sizeof(a->domain), "%s", host);
    int fam = literal_family(host);
    if (fam) {
        a->literal = 1;
        a->want_mx = 0;
        struct sc_addr *x = &a->addrs[a->naddrs++];
        memset(x, 0, sizeof(*x));
        snprintf(x->host, sizeof(x->host), "%s", host);
        snprintf(x->addr, sizeof(x->addr), "%.127s", host);   /* an address literal: short */
        x->family = fam;
        x->port = a->port;
        a->routed = 1;
        return 0;
    }
    if (!smtp_valid_hostname(host))
        return -1;
    if (!a->want_mx) {
        snprintf(a->hosts[0].name, sizeof(a->hosts[0].name), "%s", host);
        a->nhosts = 1;
        a->routed = 1;
    }
    return 0;
}

/* The job's driver: called whenever a step ends. Picks the next thing to
 * do: finish, reuse a cached connection, look up, or connect. */
static void job_next(struct sc_job *a)
{
    struct smtp_client *c = a->c;
    if (a->finishing)
        return;
    if (pending_count(a) == 0) {
        job_finish(a);
        return;
    }
    if (a->conn) {   /* still talking: a connection is only ever driven by its replies */
        return;
    }
    if (a->retry_plain && a->addr_next > 0) {
        a->retry_plain = 0;
        conn_open(a, &a->addrs[a->addr_next - 1], 1);
        return;
    }
    if (!a->routed) {
        a->routed = 1;
        a->wait_mx = 1;   /* a synchronous answer (bad name) clears it inside dns_lookup */
        struct dns_query *q = dns_lookup(c->set.dns, DNS_MX, a->domain, on_mx, a);
        if (a->wait_mx)
            a->q_mx = q;
        return;
    }
    if (a->tried >= SC_ADDR_LIMIT || a->sessions >= SC_SESSION_LIMIT) {
        job_finish(a);
        return;
    }
    if (a->addr_next < a->naddrs) {
        conn_open(a, &a->addrs[a->addr_next++], 0);
        return;
    }
    if (a->host_next < a->nhosts) {
        resolve_host(a);
        return;
    }
    job_finish(a);
}

/* ------------------------------------------------------------------ */
/* jobs */

static void job_unlink(struct sc_job *a)
{
    struct smtp_client *c = a->c;
    if (a->prev)
        a->prev->next = a->next;
    else if (c->jobs == a)
        c->jobs = a->next;
    if (a->next)
        a->next->prev = a->prev;
    a->prev = a->next = NULL;
}

static void job_free(struct sc_job *a)
{
    dns_cancel(a->q_mx);
    dns_cancel(a->q_a);
    dns_cancel(a->q_aaaa);
    if (a->conn)
        conn_close(a->conn);
    job_unlink(a);
    event_free(a->finish_ev);
    petrel_pool_destroy(a->pool);
    free(a);
}

static void on_finish(evutil_socket_t fd, short what, void *arg)
{
    struct sc_job *a = arg;
    (void)fd;
    (void)what;
    smtp_done_fn *done = a->done;
    void *darg = a->arg;
    /* Results live in the job's pool: call done, then free. Unlinked first,
     * so a done() that frees the whole client cannot free this job too. */
    job_unlink(a);
    done(darg, a->res);
    job_free(a);
}

static void job_finish(struct sc_job *a)
{
    if (a->finishing)
        return;
    a->finishing = 1;
    for (size_t i = 0; i < a->job->nrcpt; i++) {
        if (!a->final[i] && a->res[i].text[0] == '\0')
            dlv_result_set(&a->res[i], DLV_DEFERRED, "4.4.1", "none", "delivery temporarily suspended: "
                           "no usable address for %s", a->domain);
        if (a->res[i].conn_secs == 0)
            a->res[i].conn_secs = a->txn_started ? a->conn_secs : elapsed(&a->t_start);
    }
    if (a->conn)
        conn_release(a->conn);
    struct timeval zero = { 0, 0 };
    evtimer_add(a->finish_ev, &zero);
}

void smtp_client_deliver(struct smtp_client *c, const struct dlv_job *job, smtp_done_fn *done, void *arg)
{
    struct sc_job *a = xcalloc(1, sizeof(*a));
    a->c = c;
    a->job = job;
    a->done = done;
    a->arg = arg;
    a->pool = petrel_pool_create(4096);
    size_t n = job->nrcpt ? job->nrcpt : 1;
    a->res = petrel_pool_zalloc(a->pool, n * sizeof(*a->res));
    a->final = petrel_pool_zalloc(a->pool, n);
    a->accepted = petrel_pool_zalloc(a->pool, n);
    a->cmds = petrel_pool_zalloc(a->pool, (n + 2) * sizeof(*a->cmds));
    a->eightbit = -1;
    a->finish_ev = evtimer_new(c->base, on_finish, a);
    clock_gettime(CLOCK_MONOTONIC, &a->t_start);
    a->next = c->jobs;
    if (c->jobs)
        c->jobs->prev = a;
    c->jobs = a;

    if (parse_nexthop(a) < 0) {
        pending_set(a, DLV_DEFERRED, "4.3.5", "none", "bad next hop \"%s\"", job->nexthop ? job->nexthop : "");
        job_finish(a);
        return;
    }
    struct sc_conn *conn = cache_take(c, job->nexthop);
    if (conn) {
        c->stats.reused++;
        conn->job = a;
        conn->reused = 1;
        a->conn = conn;
        if (conn->state == S_IDLE) {
            evtimer_del(conn->timer);
            /* txn_start may call back into job_next/job_finish: both defer
             * done() to the loop, so this stays re-entrancy safe */
            txn_start(a);
        }
        /* else: S_RSET in flight; its 250 starts the transaction */
        return;
    }
    job_next(a);
}

/* ------------------------------------------------------------------ */
/* client */

struct smtp_client *smtp_client_create(struct event_base *base, const struct smtp_client_settings *set,
                                       char **error)
{
    struct smtp_client *c = xcalloc(1, sizeof(*c));
    c->base = base;
    c->set = *set;
    c->myhostname = xstrdup(set->myhostname ? set->myhostname : "localhost");
    c->helo_name = xstrdup(set->helo_name && *set->helo_name ? set->helo_name : c->myhostname);
    c->cafile = set->tls_cafile && *set->tls_cafile ? xstrdup(set->tls_cafile) : NULL;
    c->set.myhostname = c->myhostname;
    c->set.helo_name = c->helo_name;
    c->set.tls_cafile = c->cafile;
    if (c->set.connect_timeout == 0) c->set.connect_timeout = 30;
    if (c->set.helo_timeout == 0) c->set.helo_timeout = 300;
    if (c->set.mail_timeout == 0) c->set.mail_timeout = 300;
    if (c->set.rcpt_timeout == 0) c->set.rcpt_timeout = 300;
    if (c->set.data_timeout == 0) c->set.data_timeout = 120;
    if (c->set.data_done_timeout == 0) c->set.data_done_timeout = 600;
    if (c->set.quit_timeout == 0) c->set.quit_timeout = 300;
    c->seed = (unsigned)time(NULL) ^ (unsigned)getpid() ^ (unsigned)(uintptr_t)c;
    if (set->tls_level != SMTP_TLS_NONE) {
        c->ssl = SSL_CTX_new(TLS_client_method());
        if (c->ssl == NULL) {
            *error = xstrdup("SSL_CTX_new failed");
            smtp_client_free(c);
            return NULL;
        }
        SSL_CTX_set_options(c->ssl, SSL_OP_NO_COMPRESSION | SSL_OP_NO_RENEGOTIATION);
        /* The chain is always checked (the result feeds the verify/secure
         * decision), never enforced by OpenSSL: "may" and "encrypt" accept
         * any certificate, as Postfix does. */
        SSL_CTX_set_verify(c->ssl, SSL_VERIFY_NONE, NULL);
        if (set->tls_level >= SMTP_TLS_VERIFY) {
            int ok = c->cafile ? SSL_CTX_load_verify_locations(c->ssl, c->cafile, NULL)
                               : SSL_CTX_set_default_verify_paths(c->ssl);
            if (ok != 1) {
                char reason[256] = "unknown error";
                unsigned long e = ERR_get_error();
                if (e)
                    ERR_error_string_n(e, reason, sizeof(reason));
                ERR_clear_error();
                size_t len = strlen(reason) + (c->cafile ? strlen(c->cafile) : 0) + 64;
                *error = xmalloc(len);
                snprintf(*error, len, "smtp_tls_CAfile %s: %s", c->cafile ? c->cafile : "(default)", reason);
                smtp_client_free(c);
                return NULL;
            }
        }
    }
    return c;
}

void smtp_client_free(struct smtp_client *c)
{
    if (c == NULL)
        return;
    while (c->jobs)
        job_free(c->jobs);
    while (c->conns) {
        struct sc_conn *conn = c->conns;
        conn->busy = 0;
        conn_close(conn);
    }
    if (c->ssl)
        SSL_CTX_free(c->ssl);
    free(c->myhostname);
    free(c->helo_name);
    free(c->cafile);
    free(c);
}

void smtp_client_get_stats(const struct smtp_client *c, struct smtp_client_stats *out)
{
    *out = c->stats;
    out->cached = 0;
    out->open = 0;
    for (const struct sc_conn *conn = c->conns; conn; conn = conn->next) {
        if (conn->zombie)
            continue;
        out->open++;
        if (conn->job == NULL && (conn->state == S_IDLE || conn->state == S_RSET))
            out->cached++;
    }
}
