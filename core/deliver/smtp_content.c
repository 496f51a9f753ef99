/*
 * The SMTP client's message content: streamed from the queue file with
 * pread in SC_CHUNK pieces, dot-stuffed on the way, topped up from the
 * write callback whenever the output falls below its watermark, so a big
 * message never sits in memory; and the 8-bit scan needed when the server
 * lacks 8BITMIME.
 */
#include "config.h"

#include <errno.h>
#include <string.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>

#include "deliver/smtp_client_int.h"

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

/* Adds content to the output: dot-stuffing (a line that starts with '.'
 * gets one more) and smtp_line_length_limit, which breaks a longer line
 * with CRLF SPACE as Postfix's smtp_text_out does (the CR of a line end is
 * not counted: stored content has CR only before LF). */
static void add_lines(struct sc_job *a, struct evbuffer *out, const char *data, size_t n)
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

/* Streams content into the output buffer up to SC_OUT_HIGH. */
void sc_body_feed(struct sc_job *a)
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
            sc_pending_set(a, DLV_DEFERRED, "4.3.0", conn->relay, "error reading queue file: %s",
                           n < 0 ? strerror(errno) : "unexpected end of file");
            sc_conn_close(conn);
            sc_job_next(a);
            return;
        }
        a->body_off += (unsigned long long)n;
        add_lines(a, out, chunk, (size_t)n);
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
