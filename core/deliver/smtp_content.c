/*
 * The SMTP client's message content: streamed from the queue file with
 * pread in SC_CHUNK pieces, dot-stuffed on the way, topped up from the
 * write callback whenever the output falls below its watermark, so a big
 * message never sits in memory; and the 8-bit scan needed when the server
 * lacks 8BITMIME.
 *
 * With smtp_header_checks, smtp_mime_header_checks,
 * smtp_nested_header_checks or smtp_body_checks (lmtp_* for LMTP) the
 * content goes through the MIME parser on its way out, as Postfix's
 * smtp(8) sends it through mime_state, and each header and body line may
 * be changed: the SMTP client knows Postfix's restricted set of actions
 * (WARN, INFO, REPLACE, PREPEND, STRIP, IGNORE, DUNNO/OK); any other is
 * logged as unsupported and the line goes out unchanged, as in Postfix.
 * A failing table defers the delivery. A remote table (pgsql:,
 * socketmap:, ...) never blocks the queue manager: the transfer waits for
 * its answers, a window of lines at a time ("Waiting for a remote table"
 * below); with local tables each line goes out as the parser gives it.
 */
#include "config.h"

#include <errno.h>
#include <string.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>

#include "deliver/smtp_client_int.h"
#include "lib/xalloc.h"
#include "mail/hbc.h"
#include "mail/mime.h"

/* Scans the content for 8-bit bytes (only needed when the server lacks
 * 8BITMIME). The queue file is local; this is the same pread the body
 * transfer does, just ahead of time. -1 on a read error. */
int sc_content_has_8bit(struct sc_job *a)
{
    if (a->eightbit >= 0)
        return a->eightbit;
    const struct queue_message *m = a->job->msg;
    unsigned char chunk[SC_CHUNK];
    unsigned long long off = 0;
    while (off < m->content_length) {
        size_t want = m->content_length - off < sizeof(chunk) ? (size_t)(m->content_length - off) : sizeof(chunk);
        ssize_t n = queue_content_pread(a->job->fd, m, off, chunk, want);
        if (n <= 0)
            return -1;
        for (ssize_t i = 0; i < n; i++)
            if (chunk[i] & 0x80)
                return a->eightbit = 1;
        off += (unsigned long long)n;
    }
    return a->eightbit = 0;
}

/* Adds content to the output: dot-stuffing (a line that starts with '.'
 * gets one more) and smtp_line_length_limit, which breaks a longer line
 * with CRLF SPACE as Postfix's smtp_text_out does (the CR of a line end is
 * not counted: stored content has CR only before LF). */
static void emit(struct sc_job *a, struct evbuffer *out, const char *data, size_t n)
{
    unsigned limit = a->c->set.line_length_limit;
    size_t i = 0;
    while (i < n) {
        if (a->body_bol) {
            if (data[i] == '.')
                evbuffer_add(out, ".", 1);
            a->body_bol = 0;
            a->body_col = 0;
        }
        const char *lf = memchr(data + i, '\n', n - i);
        size_t end = lf ? (size_t)(lf - data) + 1 : n;
        /* the bytes up to end that count: not the CR LF of the line end */
        size_t text_end = end;
        if (lf)
            text_end--;
        if (text_end > i && data[text_end - 1] == '\r')
            text_end--;   /* before the LF, or the last byte of the chunk: its LF follows */
        while (limit && i < text_end && a->body_col + (text_end - i) > limit) {
            size_t take = limit - a->body_col;
            evbuffer_add(out, data + i, take);
            evbuffer_add(out, "\r\n ", 3);
            i += take;
            a->body_col = 1;
            if (!a->broke_line) {
                a->broke_line = 1;
                msg_info("%s: breaking line > %u bytes with <CR><LF>SPACE", a->job->queue_id, limit);
            }
        }
        evbuffer_add(out, data + i, end - i);
        a->body_col += (unsigned)(text_end > i ? text_end - i : 0);
        if (lf)
            a->body_bol = 1;
        i = end;
    }
}

static struct evbuffer *job_out(struct sc_job *a)
{
    return bufferevent_get_output(a->conn->bev);
}

/* A header from the parser ("\n" between its lines), CRLF-ended. */
static void emit_header(struct sc_job *a, const char *text, size_t len)
{
    struct evbuffer *out = job_out(a);
    size_t start = 0;
    for (size_t i = 0; i <= len; i++) {
        if (i == len || text[i] == '\n') {
            emit(a, out, text + start, i - start);
            emit(a, out, "\r\n", 2);
            start = i + 1;
        }
    }
}

enum check_result { CHECK_KEEP, CHECK_DROP, CHECK_REPLACE };

/* The verdict on one line whose lookup answered rc (value: what a table
 * found): Postfix's hbc_action with the SMTP client's restricted set. */
static enum check_result client_act(struct sc_job *a, enum hbc_list list, const char *where, const char *line,
                                    int rc, const char *value, const char **replacement, const char **prepend)
{
    struct hbc_tables *h = a->job->checks;
    if (rc < 0) {
        if (!a->check_failed)
            msg_warn("%s: %s %s checks lookup error", a->job->queue_id, a->c->set.lmtp ? "lmtp" : "smtp", where);
        a->check_failed = 1;
        return CHECK_KEEP;
    }
    if (rc == 0)
        return CHECK_KEEP;
    struct hbc_action act;
    hbc_parse_action(value, &act);
    const char *action = NULL;
    enum check_result result = CHECK_KEEP;
    switch (act.command) {
    case HBC_WARN: action = "warning"; break;
    case HBC_INFO: action = "info"; break;
    case HBC_REPLACE:
        if (*act.text == '\0') {
            msg_warn("REPLACE action without text in %s map", h->param[list]);
            return CHECK_KEEP;
        }
        if (list != HBC_BODY && mime_header_name_len(act.text, strlen(act.text)) == 0) {
            msg_warn("bad REPLACE header text \"%s\" in %s map -- need \"headername: headervalue\"", act.text,
                     h->param[list]);
            return CHECK_KEEP;
        }
        action = "replace";
        *replacement = act.text;
        result = CHECK_REPLACE;
        break;
    case HBC_PREPEND:
        if (*act.text == '\0') {
            msg_warn("PREPEND action without text in %s map", h->param[list]);
            return CHECK_KEEP;
        }
        if (list != HBC_BODY && mime_header_name_len(act.text, strlen(act.text)) == 0) {
            msg_warn("bad PREPEND header text \"%s\" in %s map -- need \"headername: headervalue\"", act.text,
                     h->param[list]);
            return CHECK_KEEP;
        }
        action = "prepend";
        *prepend = act.text;
        break;
    case HBC_STRIP:
        action = "strip";
        result = CHECK_DROP;
        break;
    case HBC_IGNORE:
        return CHECK_DROP;
    case HBC_DUNNO:
        return CHECK_KEEP;
    default:
        msg_warn("unsupported command in %s map: %s", h->param[list], value);
        return CHECK_KEEP;
    }
    if (*act.text)
        msg_info("%s: %s: %s %.200s: %s", a->job->queue_id, action, where, line, act.text);
    else
        msg_info("%s: %s: %s %.200s", a->job->queue_id, action, where, line);
    return result;
}

/* A header with its verdict: out it goes, changed as the verdict says. */
static void header_out(struct sc_job *a, const char *text, size_t len, enum check_result r, const char *replacement,
                       const char *prepend)
{
    if (prepend)
        emit_header(a, prepend, strlen(prepend));
    if (r == CHECK_DROP)
        return;
    if (r == CHECK_REPLACE)
        emit_header(a, replacement, strlen(replacement));
    else
        emit_header(a, text, len);
}

/* A body line (or a line_length_limit piece of one: cont) with its verdict. */
static void body_out(struct sc_job *a, const char *text, size_t len, int cont, enum check_result r,
                     const char *replacement, const char *prepend)
{
    struct evbuffer *out = job_out(a);
    if (prepend) {
        emit(a, out, prepend, strlen(prepend));
        emit(a, out, "\r\n", 2);
    }
    if (r == CHECK_DROP)
        return;
    if (r == CHECK_REPLACE) {
        text = replacement;
        len = strlen(replacement);
    }
    emit(a, out, text, len);
    if (!cont)
        emit(a, out, "\r\n", 2);
}

/* ------------------------------------------------------------------ */
/* Waiting for a remote table                                          */

/* With a remote check table (pgsql:, socketmap:, ...) the parser's lines
 * are not sent as it gives them: each is copied into the job's queue, up
 * to SC_CHECK_WINDOW lines (the parser is fed no further meanwhile). The
 * lookups of the whole window run in the job's lookup wait (mail/hbc.h),
 * all in parallel; a line whose answer is missing leaves the transfer
 * waiting, sending nothing, while the queue manager's other deliveries go
 * on. When every line of the window has its verdict (or one line's table
 * failed: nothing after it matters), the window goes out in order, the
 * memo is forgotten and the next window is parsed. The window bounds both
 * the memo and the copy; it is what makes a long body fast (one round of
 * lookups per window, not per line). */

struct sc_line {
    struct sc_line *next;
    int header;                   /* a header (list), or a body line */
    enum hbc_list list;
    int cont;                     /* a body line continues in the next piece */
    int rc;                       /* its lookup: 1, 0, -1, or -2 not answered yet */
    const char *value;            /* rc 1: what the table found (the window's pool) */
    size_t len;
    char text[];                  /* len bytes, then a NUL (the key ends at the first NUL, as in Postfix) */
};

static void line_queue(struct sc_job *a, int header, enum hbc_list list, const char *text, size_t len, int cont)
{
    struct sc_line *l = xmalloc(sizeof(*l) + len + 1);
    l->next = NULL;
    l->header = header;
    l->list = list;
    l->cont = cont;
    l->rc = -2;
    l->value = NULL;
    l->len = len;
    memcpy(l->text, text, len);
    l->text[len] = '\0';
    *a->lines_tail = l;
    a->lines_tail = &l->next;
    a->nlines++;
}

static void lines_free(struct sc_job *a)
{
    while (a->lines) {
        struct sc_line *l = a->lines;
        a->lines = l->next;
        free(l);
    }
    a->lines_tail = &a->lines;
    a->nlines = 0;
}

static void on_header(void *ctx, const struct mime_header *h)
{
    struct sc_job *a = ctx;
    enum hbc_list list = hbc_header_list(h->cls, h->is_mime);
    if (a->check_wait) {
        line_queue(a, 1, list, h->text, h->len, 0);
        return;
    }
    const char *replacement = NULL, *prepend = NULL, *value = NULL;
    enum check_result r = CHECK_KEEP;
    if (hbc_has(a->job->checks, list)) {
        int rc = hbc_lookup(a->job->checks, list, h->text, a->pool, &value);
        r = client_act(a, list, "header", h->text, rc, value, &replacement, &prepend);
    }
    header_out(a, h->text, h->len, r, replacement, prepend);
}

static void on_body(void *ctx, const char *text, size_t len, int cont, unsigned long long offset,
                    unsigned long long input_start)
{
    struct sc_job *a = ctx;
    (void)offset;
    (void)input_start;
    if (a->check_wait) {
        line_queue(a, 0, HBC_BODY, text, len, cont);
        return;
    }
    const char *replacement = NULL, *prepend = NULL, *value = NULL;
    enum check_result r = CHECK_KEEP;
    if (hbc_has(a->job->checks, HBC_BODY)) {
        buf_reset(&a->check_buf);
        buf_append(&a->check_buf, text, len);
        int rc = hbc_lookup(a->job->checks, HBC_BODY, a->check_buf.data, a->pool, &value);
        r = client_act(a, HBC_BODY, "body", a->check_buf.data, rc, value, &replacement, &prepend);
    }
    body_out(a, text, len, cont, r, replacement, prepend);
}

/* Asks the window's lookups (the first SC_CHECK_WINDOW queued lines: a
 * long line cut into pieces may queue a few more) that have no answer
 * yet. 1 when every line of the window (or every line up to one whose
 * table failed) has its answer, 0 when some wait for a fetch. */
static int window_lookup(struct sc_job *a)
{
    int complete = 1;
    size_t i = 0;
    if (a->window_pool == NULL)
        a->window_pool = petrel_pool_create(4096);
    for (struct sc_line *l = a->lines; l && i < SC_CHECK_WINDOW; l = l->next, i++) {
        if (l->rc == -2) {
            if (!hbc_has(a->job->checks, l->list))
                l->rc = 0;
            else
                l->rc = hbc_wait_lookup(a->check_wait, l->list, l->text, a->window_pool, &l->value);
        }
        if (l->rc == -2)
            complete = 0;
        else if (l->rc == -1)
            break;   /* the delivery is deferred at this line: later ones need no answer */
    }
    return complete;
}

/* Sends the window's lines, in order, with their verdicts. */
static void window_send(struct sc_job *a)
{
    for (size_t i = 0; i < SC_CHECK_WINDOW && a->lines && !a->check_failed; i++) {
        struct sc_line *l = a->lines;
        const char *replacement = NULL, *prepend = NULL;
        enum check_result r = client_act(a, l->list, l->header ? "header" : "body", l->text, l->rc, l->value,
                                         &replacement, &prepend);
        if (!a->check_failed) {
            if (l->header)
                header_out(a, l->text, l->len, r, replacement, prepend);
            else
                body_out(a, l->text, l->len, l->cont, r, replacement, prepend);
        }
        a->lines = l->next;
        a->nlines--;
        free(l);
    }
    if (a->lines == NULL)
        a->lines_tail = &a->lines;
    hbc_wait_reset(a->check_wait);
    petrel_pool_destroy(a->window_pool);
    a->window_pool = NULL;
}

/* The window's answers came (from the loop): the transfer goes on if its
 * connection is still sending this job's content. */
static void checks_fetched(void *arg)
{
    struct sc_job *a = arg;
    a->check_fetching = 0;
    struct sc_conn *conn = a->conn;
    if (conn == NULL || conn->job != a || conn->state != S_BODY || conn->bev == NULL)
        return;
    conn->busy++;
    sc_body_feed(a);
    conn->busy--;
    if (conn->zombie && !conn->busy)
        sc_conn_free_now(conn);
}

/* Feeds the parser from the read-ahead, one input line at a time, until
 * the window is full or the content has been read. -1 on a read error
 * (errno), -2 when the file ends early. */
static int window_fill(struct sc_job *a)
{
    const struct queue_message *m = a->job->msg;
    while (a->nlines < SC_CHECK_WINDOW && !a->parse_ended) {
        if (a->ahead_pos == a->ahead.len) {
            if (a->body_off >= m->content_length) {
                mime_parser_end(a->mime);
                a->parse_ended = 1;
                break;
            }
            size_t want = m->content_length - a->body_off < SC_CHUNK ? (size_t)(m->content_length - a->body_off)
                                                                      : SC_CHUNK;
            buf_reset(&a->ahead);
            buf_reserve(&a->ahead, want);
            ssize_t n = queue_content_pread(a->job->fd, m, a->body_off, a->ahead.data, want);
            if (n <= 0)
                return n < 0 ? -1 : -2;
            a->ahead.len = (size_t)n;
            a->ahead_pos = 0;
            a->body_off += (unsigned long long)n;
        }
        const char *p = a->ahead.data + a->ahead_pos;
        size_t left = a->ahead.len - a->ahead_pos;
        const char *lf = memchr(p, '\n', left);
        size_t take = lf ? (size_t)(lf - p) + 1 : left;
        mime_parser_feed(a->mime, p, take);
        a->ahead_pos += take;
    }
    return 0;
}

/* The transfer with remote check tables: windows of lines, each sent once
 * its lookups have answered. */
static void body_feed_waiting(struct sc_job *a)
{
    struct sc_conn *conn = a->conn;
    struct evbuffer *out = bufferevent_get_output(conn->bev);
    if (a->check_fetching)
        return;   /* checks_fetched goes on */
    while (evbuffer_get_length(out) < SC_OUT_HIGH && !a->check_failed) {
        int rc = a->lines ? 0 : window_fill(a);
        if (rc != 0) {
            sc_pending_set(a, DLV_DEFERRED, "4.3.0", conn->relay, "error reading queue file: %s",
                           rc == -1 ? strerror(errno) : "unexpected end of file");
            sc_conn_close(conn);
            sc_job_next(a);
            return;
        }
        if (a->lines == NULL)
            break;   /* all sent */
        while (!window_lookup(a)) {
            if (hbc_wait_fetch(a->check_wait, checks_fetched, a)) {
                /* The transfer waits, sending nothing more; the reply
                 * timer still bounds it should the table's timeout not. */
                a->check_fetching = 1;
                sc_conn_arm(conn, a->c->set.data_xfer_timeout);
                return;
            }
        }
        window_send(a);
    }
    if (a->check_failed) {
        sc_pending_set(a, DLV_DEFERRED, "4.3.0", conn->relay, "local data error while talking to %s", conn->desc);
        sc_conn_close(conn);
        sc_job_next(a);
        return;
    }
    if (a->parse_ended && a->lines == NULL) {
        if (!a->body_bol)
            evbuffer_add(out, "\r\n", 2);
        evbuffer_add(out, ".\r\n", 3);
        conn->state = S_DOT;
        sc_conn_arm(conn, a->c->set.data_done_timeout);
    } else {
        sc_conn_arm(conn, a->c->set.data_xfer_timeout);
    }
}

void sc_body_reset(struct sc_job *a)
{
    mime_parser_free(a->mime);
    a->mime = NULL;
    a->check_failed = 0;
    hbc_wait_free(a->check_wait);   /* cancels lookups in flight: checks_fetched never runs */
    a->check_wait = NULL;
    a->check_fetching = 0;
    lines_free(a);
    petrel_pool_destroy(a->window_pool);
    a->window_pool = NULL;
    buf_reset(&a->ahead);
    a->ahead_pos = 0;
    a->parse_ended = 0;
}

/* Streams content into the output buffer up to SC_OUT_HIGH. */
void sc_body_feed(struct sc_job *a)
{
    struct sc_conn *conn = a->conn;
    const struct queue_message *m = a->job->msg;
    struct evbuffer *out = bufferevent_get_output(conn->bev);
    if (a->mime == NULL && a->body_off == 0 && a->job->checks && hbc_any(a->job->checks)) {
        static const struct mime_callbacks callbacks = { .header = on_header, .body = on_body };
        static const struct mime_limits defaults = { 0, 0, 0, 0 };
        a->mime = mime_parser_new(a->job->mime_limits ? a->job->mime_limits : &defaults, 0, &callbacks, a);
        if (hbc_any_remote(a->job->checks))
            a->check_wait = hbc_wait_new(a->job->checks, SC_CHECK_WINDOW);
    }
    if (a->check_wait) {
        body_feed_waiting(a);
        return;
    }
    char chunk[SC_CHUNK];
    while (evbuffer_get_length(out) < SC_OUT_HIGH && a->body_off < m->content_length) {
        size_t want = m->content_length - a->body_off < sizeof(chunk) ? (size_t)(m->content_length - a->body_off)
                                                                         : sizeof(chunk);
        ssize_t n = queue_content_pread(a->job->fd, m, a->body_off, chunk, want);
        if (n <= 0) {
            /* closing without "." aborts the transaction at the server */
            sc_pending_set(a, DLV_DEFERRED, "4.3.0", conn->relay, "error reading queue file: %s",
                           n < 0 ? strerror(errno) : "unexpected end of file");
            sc_conn_close(conn);
            sc_job_next(a);
            return;
        }
        a->body_off += (unsigned long long)n;
        if (a->mime) {
            mime_parser_feed(a->mime, chunk, (size_t)n);
            if (a->body_off >= m->content_length)
                mime_parser_end(a->mime);
        } else {
            emit(a, out, chunk, (size_t)n);
        }
        if (a->check_failed) {
            /* Postfix's "local data error": nothing is sent as it was not meant */
            sc_pending_set(a, DLV_DEFERRED, "4.3.0", conn->relay, "local data error while talking to %s",
                           conn->desc);
            sc_conn_close(conn);
            sc_job_next(a);
            return;
        }
    }
    if (a->body_off >= m->content_length) {
        if (!a->body_bol)
            evbuffer_add(out, "\r\n", 2);
        evbuffer_add(out, ".\r\n", 3);
        conn->state = S_DOT;
        sc_conn_arm(conn, a->c->set.data_done_timeout);
    } else {
        sc_conn_arm(conn, a->c->set.data_xfer_timeout);
    }
}
