/*
 * The before-queue content filter (Postfix's smtpd_proxy_filter): smtpd
 * relays each mail transaction to an SMTP filter as it goes and answers
 * the client with the filter's verdict, so mail the filter refuses is
 * never accepted. Nothing is queued here: the filter hands accepted mail
 * to another smtpd listener, whose reply to "." becomes ours.
 *
 * As in Postfix (smtpd_proxy.c, SMTPD_PROXY_README):
 *   - MAIL is answered by us; at the first recipient our own checks accept,
 *     the filter is connected: greeting, EHLO smtpd_proxy_ehlo, XFORWARD
 *     with the client's name, address, port, protocol and HELO when the
 *     filter offers it, then the client's MAIL FROM and RCPT TO commands as
 *     the client sent them;
 *   - every RCPT our checks accept is relayed; DATA too; then our Received
 *     header and the content, dot-stuffed, and ".";
 *   - a filter's 4xx/5xx reply goes to the client as it is (non-printable
 *     bytes as '?'); a reply of the wrong kind (2xx or 3xx where a reject
 *     belongs), garbage, a connection that fails or a filter silent for
 *     smtpd_proxy_timeout gives "451 4.3.0 Error: queue file write error"
 *     and a warning that says what happened; the reply to "." is the
 *     filter's (2xx, 4xx or 5xx) and is logged as proxy-accept or
 *     proxy-reject;
 *   - one connection per transaction, closed with QUIT (RSET, the end of
 *     the message, or the end of the session close it).
 *   - smtpd_proxy_options = speed_adjust: the transaction is answered by us
 *     and kept in an unlinked file in the incoming queue directory until
 *     the client's "."; only then is the filter connected and the saved
 *     commands and content replayed; the first reply that is not what was
 *     expected becomes the reply to "." (so a filter must treat all
 *     recipients of a message alike, as Postfix documents).
 *
 * The content the filter gets is read as it arrives, with back pressure:
 * while more than PROXY_OUTPUT_HIGH bytes wait for the filter, the
 * client's input is not read.
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>

#include "lib/buf.h"
#include "lib/log.h"
#include "lib/xalloc.h"
#include "mail/smtp_syntax.h"
#include "smtpd/content_int.h"
#include "smtpd/smtpd_int.h"

#define PROXY_OUTPUT_HIGH (256 * 1024)
#define PROXY_OUTPUT_LOW (64 * 1024)
#define PROXY_REPLY_LINE_MAX 2048
#define PROXY_REPLY_LINES 100
#define PROXY_ERROR_REPLY "451 4.3.0 Error: queue file write error"

/* XFORWARD attributes the filter may announce (Postfix's names). */
#define XF_NAME 1u
#define XF_ADDR 2u
#define XF_PORT 4u
#define XF_PROTO 8u
#define XF_HELO 16u
#define XF_DOMAIN 32u

enum proxy_step { PS_NONE, PS_CONNECTING, PS_GREETING, PS_EHLO, PS_XFORWARD, PS_COMMAND, PS_CONTENT, PS_DOT };

struct smtpd_proxy {
    struct smtpd_session *s;
    struct bufferevent *bev;
    enum proxy_step step;
    int failed;                       /* a connection or protocol failure: every answer is 451 */
    int speed_adjust;
    unsigned xforward;                /* XF_* the filter offers */
    /* the exchange in progress */
    const char *command;              /* what we sent, for messages */
    char expect;                      /* '2', '3', or 0 for any */
    smtpd_proxy_done_fn *done;
    struct buf reply;                 /* the reply's lines, joined with CRLF */
    int reply_lines;
    /* commands not yet sent: the MAIL FROM until the filter is up, and in
     * speed_adjust mode everything up to "." */
    char **queued;                    /* lines; queued_expect[i] what they want */
    char *queued_expect;
    size_t nqueued, queued_cap, queued_next;
    const char *mail_command;
    /* content */
    int bol;                          /* the next content byte starts a line */
    int spool_fd;                     /* speed_adjust: the content, until "." */
    unsigned long long spool_size, spool_off;
    int content_done;                 /* all content is in the output buffer */
};

/* ------------------------------------------------------------------ */
/* the connection                                                      */

static void proxy_read_cb(struct bufferevent *bev, void *arg);
static void proxy_write_cb(struct bufferevent *bev, void *arg);
static void proxy_event_cb(struct bufferevent *bev, short what, void *arg);
static void send_next(struct smtpd_proxy *p);
static void feed_spool(struct smtpd_proxy *p);

static void proxy_close(struct smtpd_proxy *p)
{
    if (p->bev) {
        if (!p->failed && p->step != PS_CONNECTING) {
            /* QUIT, no answer awaited (Postfix's SMTPD_PROX_WANT_NONE) */
            struct evbuffer *out = bufferevent_get_output(p->bev);
            evbuffer_add(out, "QUIT\r\n", 6);
            int fd = bufferevent_getfd(p->bev);
            if (fd >= 0)
                evbuffer_write(out, fd);
        }
        bufferevent_free(p->bev);
        p->bev = NULL;
    }
    p->step = PS_NONE;
}

static void proxy_free(void *arg)
{
    struct smtpd_proxy *p = arg;
    proxy_close(p);
    if (p->spool_fd >= 0)
        close(p->spool_fd);
    for (size_t i = 0; i < p->nqueued; i++)
        free(p->queued[i]);
    free(p->queued);
    free(p->queued_expect);
    buf_free(&p->reply);
    free(p);
}

/* The exchange ends: done() gets the reply to give the client (NULL: go on). */
static void finish(struct smtpd_proxy *p, int ok, const char *reply)
{
    smtpd_proxy_done_fn *done = p->done;
    p->done = NULL;
    p->command = NULL;
    if (done)
        done(p->s, ok, reply);
}

/* A connection or protocol failure: Postfix's smtpd_proxy_rdwr_error. */
static void fail(struct smtpd_proxy *p, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void fail(struct smtpd_proxy *p, const char *fmt, ...)
{
    char text[600];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(text, sizeof(text), fmt, ap);
    va_end(ap);
    msg_warn("%s", text);
    p->failed = 1;
    proxy_close(p);
    finish(p, 0, PROXY_ERROR_REPLY);
}

static const char *filter_name(const struct smtpd_proxy *p)
{
    return p->s->set->proxy_filter;
}

static void arm_read(struct smtpd_proxy *p)
{
    const struct timeval *t = &p->s->set->proxy_timeout;
    bufferevent_set_timeouts(p->bev, t, t);
    bufferevent_enable(p->bev, EV_READ | EV_WRITE);
}

/* Sends one command line and waits for its reply. */
static void exchange(struct smtpd_proxy *p, enum proxy_step step, const char *line, char expect)
{
    p->step = step;
    p->command = line;
    p->expect = expect;
    buf_reset(&p->reply);
    p->reply_lines = 0;
    if (line) {
        struct evbuffer *out = bufferevent_get_output(p->bev);
        evbuffer_add(out, line, strlen(line));
        evbuffer_add(out, "\r\n", 2);
    }
    arm_read(p);
}

static int connect_filter(struct smtpd_proxy *p)
{
    const struct smtpd_settings *set = p->s->set;
    int fd = socket(set->proxy_addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        fail(p, "connect to proxy filter %s: %s", filter_name(p), strerror(errno));
        return -1;
    }
    p->bev = bufferevent_socket_new(p->s->worker->base, fd, BEV_OPT_CLOSE_ON_FREE);
    bufferevent_setcb(p->bev, proxy_read_cb, proxy_write_cb, proxy_event_cb, p);
    p->step = PS_CONNECTING;
    const struct timeval *t = &set->proxy_timeout;
    bufferevent_set_timeouts(p->bev, t, t);
    if (bufferevent_socket_connect(p->bev, (const struct sockaddr *)&set->proxy_addr, (int)set->proxy_addr_len) != 0) {
        fail(p, "connect to proxy filter %s: %s", filter_name(p), strerror(errno));
        return -1;
    }
    /* The greeting is awaited like a reply (to no command). */
    p->expect = '2';
    p->command = NULL;
    buf_reset(&p->reply);
    p->reply_lines = 0;
    /* Writable first: the greeting is read once the connection is known to
     * be up (proxy_event_cb). A filter that greets at once (amavisd-new) may
     * otherwise be read before libevent reports the connection, and its
     * greeting taken for a reply to nothing. */
    bufferevent_enable(p->bev, EV_WRITE);
    return 0;
}

/* ------------------------------------------------------------------ */
/* replies                                                             */

/* XFORWARD attr=value, xtext-encoded; "[UNAVAILABLE]" for what we lack. */
static void xforward_attr(struct buf *b, const char *name, const char *value, petrel_pool *pool)
{
    buf_printf(b, " %s=%s", name, value && *value ? smtp_xtext_encode(value, pool) : "[UNAVAILABLE]");
}

static void send_xforward(struct smtpd_proxy *p)
{
    struct smtpd_session *s = p->s;
    petrel_pool *pool = smtpd_cmd_pool(s);
    struct buf b = BUF_INIT;
    buf_puts(&b, "XFORWARD");
    if (p->xforward & XF_NAME)
        xforward_attr(&b, "NAME", s->name, pool);
    if (p->xforward & XF_ADDR)
        xforward_attr(&b, "ADDR", s->addr, pool);
    if (p->xforward & XF_PORT)
        xforward_attr(&b, "PORT", s->port, pool);
    if (p->xforward & XF_PROTO)
        xforward_attr(&b, "PROTO", s->protocol, pool);
    if (p->xforward & XF_HELO)
        xforward_attr(&b, "HELO", s->helo, pool);
    if (p->xforward & XF_DOMAIN)
        buf_puts(&b, s->local_submission ? " SOURCE=LOCAL" : " SOURCE=REMOTE");
    const char *line = petrel_pool_strdup(pool, b.data);
    buf_free(&b);
    exchange(p, PS_XFORWARD, line, '2');
}

/* Which XFORWARD attributes an EHLO reply announces. */
static unsigned xforward_features(const char *reply)
{
    unsigned f = 0;
    const char *line = reply;
    while (line && *line) {
        const char *end = strstr(line, "\r\n");
        size_t len = end ? (size_t)(end - line) : strlen(line);
        if (len > 4 && strncasecmp(line + 4, "XFORWARD", 8) == 0 && (len == 12 || line[12] == ' ')) {
            char words[PROXY_REPLY_LINE_MAX + 1];
            snprintf(words, sizeof(words), "%.*s", (int)(len - 12), line + 12);
            for (char *w = strtok(words, " \t"); w; w = strtok(NULL, " \t")) {
                if (strcasecmp(w, "NAME") == 0)
                    f |= XF_NAME;
                else if (strcasecmp(w, "ADDR") == 0)
                    f |= XF_ADDR;
                else if (strcasecmp(w, "PORT") == 0)
                    f |= XF_PORT;
                else if (strcasecmp(w, "PROTO") == 0)
                    f |= XF_PROTO;
                else if (strcasecmp(w, "HELO") == 0)
                    f |= XF_HELO;
                else if (strcasecmp(w, "SOURCE") == 0)
                    f |= XF_DOMAIN;
            }
        }
        line = end ? end + 2 : NULL;
    }
    return f;
}

/* A complete reply is in p->reply: where the exchange goes from here. */
static void reply_complete(struct smtpd_proxy *p)
{
    const char *r = p->reply.data;
    bufferevent_disable(p->bev, EV_READ);
    if (p->expect && r[0] != p->expect) {
        const char *what = p->command ? p->command : "connection request";
        msg_warn("proxy %s rejected \"%s\": \"%s\"", filter_name(p), what, r);
        /* A 2xx or 3xx where another reply belongs is no answer to pass
         * on (Postfix 2.6+); nor is anything while setting up. */
        if (r[0] == '2' || r[0] == '3' || p->step == PS_GREETING || p->step == PS_EHLO ||
            p->step == PS_XFORWARD) {
            p->failed = 1;
            proxy_close(p);
            finish(p, 0, PROXY_ERROR_REPLY);
            return;
        }
        /* MAIL FROM refused: the connection is of no more use. */
        if (p->step == PS_COMMAND && p->queued_next <= 1 && !p->speed_adjust && p->command == p->mail_command) {
            p->failed = 1;
            proxy_close(p);
        }
        finish(p, 0, petrel_pool_strdup(smtpd_cmd_pool(p->s), r));
        return;
    }
    switch (p->step) {
    case PS_GREETING:
        exchange(p, PS_EHLO, petrel_pool_printf(smtpd_cmd_pool(p->s), "EHLO %s", p->s->set->proxy_ehlo), '2');
        return;
    case PS_EHLO:
        p->xforward = xforward_features(r);
        if (p->xforward) {
            send_xforward(p);
            return;
        }
        send_next(p);
        return;
    case PS_XFORWARD:
        send_next(p);
        return;
    case PS_COMMAND:
        if (p->queued_next < p->nqueued) {
            send_next(p);
            return;
        }
        finish(p, 1, NULL);
        return;
    case PS_DOT: {
        const char *reply = petrel_pool_strdup(smtpd_cmd_pool(p->s), r);
        int ok = r[0] == '2';
        if (r[0] != '2' && r[0] != '4' && r[0] != '5') {
            msg_warn("proxy %s: unexpected reply to \".\": \"%s\"", filter_name(p), r);
            reply = PROXY_ERROR_REPLY;
        }
        proxy_close(p);
        finish(p, ok, reply);
        return;
    }
    default:
        fail(p, "proxy %s: unexpected reply \"%s\"", filter_name(p), r);
        return;
    }
}

static void proxy_read_cb(struct bufferevent *bev, void *arg)
{
    struct smtpd_proxy *p = arg;
    struct evbuffer *in = bufferevent_get_input(bev);
    for (;;) {
        size_t len = 0;
        char *line = evbuffer_readln(in, &len, EVBUFFER_EOL_CRLF);
        if (line == NULL) {
            if (evbuffer_get_length(in) > PROXY_REPLY_LINE_MAX) {
                fail(p, "proxy %s: response longer than %d bytes", filter_name(p), PROXY_REPLY_LINE_MAX);
                return;
            }
            return;
        }
        for (size_t i = 0; i < len; i++)
            if ((unsigned char)line[i] < 0x20 || (unsigned char)line[i] >= 0x7f)
                line[i] = '?';   /* Postfix's printable() */
        int good = len >= 3 && line[0] >= '2' && line[0] <= '5' && line[1] >= '0' && line[1] <= '9' &&
                   line[2] >= '0' && line[2] <= '9' && (len == 3 || line[3] == ' ' || line[3] == '-');
        /* Every line of one reply carries the same code. */
        if (!good || (p->reply_lines > 0 && strncmp(p->reply.data, line, 3) != 0) ||
            ++p->reply_lines > PROXY_REPLY_LINES) {
            msg_warn("received garbage from proxy %s: %.100s", filter_name(p), line);
            free(line);
            fail(p, "proxy %s: malformed reply", filter_name(p));
            return;
        }
        if (len > PROXY_REPLY_LINE_MAX)
            len = PROXY_REPLY_LINE_MAX;
        if (p->reply.len)
            buf_append(&p->reply, "\r\n", 2);
        buf_append(&p->reply, line, len);
        int last = len == 3 || line[3] == ' ';
        free(line);
        if (last) {
            reply_complete(p);
            return;
        }
    }
}

static void proxy_write_cb(struct bufferevent *bev, void *arg)
{
    struct smtpd_proxy *p = arg;
    (void)bev;
    if (p->step != PS_CONTENT)
        return;
    if (p->spool_fd >= 0 && p->spool_off < p->spool_size) {
        feed_spool(p);
        return;
    }
    if (p->content_done)
        return;
    /* Below the low watermark again: the client's input may be read. */
    smtpd_continue(p->s);
}

static void proxy_event_cb(struct bufferevent *bev, short what, void *arg)
{
    struct smtpd_proxy *p = arg;
    (void)bev;
    if (what & BEV_EVENT_CONNECTED) {
        p->step = PS_GREETING;
        /* Below this much pending content the client's input is read again. */
        bufferevent_setwatermark(p->bev, EV_WRITE, PROXY_OUTPUT_LOW, 0);
        arm_read(p);
        return;
    }
    if (what & BEV_EVENT_TIMEOUT) {
        if (p->step == PS_CONNECTING)
            fail(p, "connect to proxy filter %s: Connection timed out", filter_name(p));
        else
            fail(p, "timeout talking to proxy %s", filter_name(p));
        return;
    }
    if (p->step == PS_CONNECTING) {
        fail(p, "connect to proxy filter %s: %s", filter_name(p),
             strerror(EVUTIL_SOCKET_ERROR() ? EVUTIL_SOCKET_ERROR() : ECONNREFUSED));
        return;
    }
    fail(p, "lost connection with proxy %s", filter_name(p));
}

/* ------------------------------------------------------------------ */
/* the transaction                                                     */

static void queue_line(struct smtpd_proxy *p, const char *line, char expect)
{
    if (p->nqueued == p->queued_cap) {
        p->queued_cap = p->queued_cap ? p->queued_cap * 2 : 8;
        p->queued = xrealloc(p->queued, p->queued_cap * sizeof(*p->queued));
        p->queued_expect = xrealloc(p->queued_expect, p->queued_cap);
    }
    p->queued[p->nqueued] = xstrdup(line);
    p->queued_expect[p->nqueued] = expect;
    p->nqueued++;
}

/* Sends the next queued command (the filter is up). */
static void send_next(struct smtpd_proxy *p)
{
    if (p->queued_next >= p->nqueued) {
        finish(p, 1, NULL);
        return;
    }
    size_t i = p->queued_next++;
    const char *line = p->queued[i];
    if (strcmp(line, ".") == 0) {
        /* speed_adjust: the content, then "." */
        p->step = PS_CONTENT;
        p->bol = 1;
        p->spool_off = 0;
        feed_spool(p);
        return;
    }
    exchange(p, PS_COMMAND, line, p->queued_expect[i]);
}

static struct smtpd_proxy *proxy_of(struct smtpd_session *s)
{
    struct smtpd_tx *tx = s->tx;
    if (tx->proxy == NULL) {
        struct smtpd_proxy *p = xcalloc(1, sizeof(*p));
        p->s = s;
        p->spool_fd = -1;
        p->speed_adjust = s->set->proxy_speed_adjust;
        petrel_pool_cleanup_add(tx->pool, proxy_free, p);
        tx->proxy = p;
    }
    return tx->proxy;
}

void smtpd_proxy_mail(struct smtpd_session *s, const char *line)
{
    struct smtpd_proxy *p = proxy_of(s);
    queue_line(p, line, '2');
    p->mail_command = p->queued[p->nqueued - 1];
}

static void start(struct smtpd_proxy *p, smtpd_proxy_done_fn *done)
{
    p->done = done;
    if (p->failed) {
        finish(p, 0, PROXY_ERROR_REPLY);
        return;
    }
    if (p->bev == NULL) {
        connect_filter(p);
        return;
    }
    send_next(p);
}

void smtpd_proxy_rcpt(struct smtpd_session *s, const char *line, smtpd_proxy_done_fn *done)
{
    struct smtpd_proxy *p = proxy_of(s);
    queue_line(p, line, '2');
    if (p->speed_adjust) {
        /* Answered by us; replayed at the end of the message. */
        done(s, !p->failed, p->failed ? PROXY_ERROR_REPLY : NULL);
        return;
    }
    start(p, done);
}

void smtpd_proxy_data(struct smtpd_session *s, smtpd_proxy_done_fn *done)
{
    struct smtpd_proxy *p = proxy_of(s);
    queue_line(p, "DATA", '3');
    if (p->speed_adjust) {
        /* The content goes to an unlinked file in incoming/ until ".". */
        int dirfd = queue_dir_fd(s->worker->queue, QDIR_INCOMING);
        p->spool_fd = openat(dirfd, ".", O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
        if (p->spool_fd < 0) {
            msg_warn("proxy speed-adjust log I/O error: %s", strerror(errno));
            p->failed = 1;
            done(s, 0, PROXY_ERROR_REPLY);
            return;
        }
        p->spool_size = 0;
        done(s, 1, NULL);
        return;
    }
    start(p, done);
}

/* Content into the spool (speed_adjust) or to the filter, dot-stuffed. */
static void put_content(struct smtpd_proxy *p, const char *data, size_t n)
{
    if (p->spool_fd >= 0 && p->step != PS_CONTENT) {
        ssize_t w = write(p->spool_fd, data, n);
        if (w != (ssize_t)n) {
            msg_warn("proxy speed-adjust log I/O error: %s", w < 0 ? strerror(errno) : "short write");
            p->failed = 1;
            return;
        }
        p->spool_size += n;
        return;
    }
    struct evbuffer *out = bufferevent_get_output(p->bev);
    size_t i = 0;
    while (i < n) {
        if (p->bol && data[i] == '.')
            evbuffer_add(out, ".", 1);
        const char *lf = memchr(data + i, '\n', n - i);
        size_t end = lf ? (size_t)(lf - data) + 1 : n;
        evbuffer_add(out, data + i, end - i);
        p->bol = lf != NULL;
        i = end;
    }
}

void smtpd_proxy_content(struct smtpd_session *s, const char *data, size_t n)
{
    struct smtpd_proxy *p = s->tx->proxy;
    if (p == NULL || p->failed || n == 0)
        return;
    if (p->spool_fd < 0 && p->step != PS_CONTENT) {
        /* The first content after the filter's 354. */
        p->step = PS_CONTENT;
        p->bol = 1;
    }
    put_content(p, data, n);
}

int smtpd_proxy_congested(const struct smtpd_session *s)
{
    const struct smtpd_proxy *p = s->tx ? s->tx->proxy : NULL;
    if (p == NULL || p->failed || p->bev == NULL || p->step != PS_CONTENT || p->spool_fd >= 0)
        return 0;
    return evbuffer_get_length(bufferevent_get_output(p->bev)) > PROXY_OUTPUT_HIGH;
}

static void send_dot(struct smtpd_proxy *p)
{
    struct evbuffer *out = bufferevent_get_output(p->bev);
    if (!p->bol)
        evbuffer_add(out, "\r\n", 2);
    p->content_done = 1;
    exchange(p, PS_DOT, ".", 0);
}

/* speed_adjust: the spooled content to the filter, topped up as it drains. */
static void feed_spool(struct smtpd_proxy *p)
{
    struct evbuffer *out = bufferevent_get_output(p->bev);
    char chunk[65536];
    while (evbuffer_get_length(out) < PROXY_OUTPUT_HIGH && p->spool_off < p->spool_size) {
        size_t want = p->spool_size - p->spool_off < sizeof(chunk) ? (size_t)(p->spool_size - p->spool_off)
                                                                    : sizeof(chunk);
        ssize_t n = pread(p->spool_fd, chunk, want, (off_t)p->spool_off);
        if (n <= 0) {
            msg_warn("proxy speed-adjust log I/O error: %s", n < 0 ? strerror(errno) : "unexpected end of file");
            p->failed = 1;
            proxy_close(p);
            finish(p, 0, PROXY_ERROR_REPLY);
            return;
        }
        p->spool_off += (unsigned long long)n;
        put_content(p, chunk, (size_t)n);
    }
    if (p->spool_off >= p->spool_size) {
        close(p->spool_fd);
        p->spool_fd = -1;
        send_dot(p);
        return;
    }
    arm_read(p);
}

void smtpd_proxy_dot(struct smtpd_session *s, smtpd_proxy_done_fn *done)
{
    struct smtpd_proxy *p = proxy_of(s);
    p->done = done;
    if (p->failed) {
        finish(p, 0, PROXY_ERROR_REPLY);
        return;
    }
    if (p->speed_adjust) {
        /* Now the filter: connect and replay the whole transaction. */
        queue_line(p, ".", 0);
        connect_filter(p);
        return;
    }
    if (p->bev == NULL) {
        finish(p, 0, PROXY_ERROR_REPLY);
        return;
    }
    send_dot(p);
}
