/*
 * SMTP DATA-phase reader (see smtp_data.h for the policy decisions).
 *
 * Design: a five-state machine over bytes, so a split anywhere in the input
 * changes nothing. Output is emitted as spans of the input buffer wherever
 * the content is already canonical (text plus real CRLF), and only the
 * rewrites (dropped stuffing dot, bare LF -> CRLF, bare CR -> space, a CR
 * held over from the previous buffer) go out as small static strings. That
 * keeps the callback count per buffer small and long lines unsplit within a
 * buffer. A CR is never emitted before the next byte says whether it is a
 * line ending or a stray.
 */
#include "config.h"

#include <string.h>

#include "mail/smtp_data.h"

enum data_state {
    DATA_LINE_START,        /* at the start of a line */
    DATA_IN_LINE,
    DATA_CR,                /* saw CR inside a line; LF or not? */
    DATA_DOT,               /* saw '.' at the start of a line */
    DATA_DOT_CR,            /* saw ".\r" at the start of a line */
};

void smtp_data_init(struct smtp_data_reader *reader, enum data_bare_lf_policy policy,
                    unsigned long long size_limit)
{
    memset(reader, 0, sizeof *reader);
    reader->policy = policy;
    reader->size_limit = size_limit;
    reader->state = DATA_LINE_START;
    /* The DATA command line itself ended the previous line. */
    reader->line_after_crlf = 1;
    reader->in_headers = 1;
}

int smtp_data_bare_lf_violation(const struct smtp_data_reader *reader)
{
    return reader->policy == DATA_BARE_LF_REJECT && reader->saw_bare_lf;
}

/* Everything the feed loop needs besides the reader, on the stack. */
struct data_sink {
    int (*emit)(void *ctx, const char *data, size_t n);
    void *ctx;
};

static void put(struct smtp_data_reader *r, const struct data_sink *sink, const char *data,
                size_t n)
{
    if (n == 0 || r->oversize || r->emit_failed)
        return;
    /* Cut at exactly the limit, so what was emitted never depends on how
     * the input happened to be split. */
    if (r->size_limit != 0 && n > r->size_limit - r->emitted) {
        n = (size_t)(r->size_limit - r->emitted);
        r->oversize = 1;
        if (n == 0)
            return;
    }
    r->emitted += n;
    if (sink->emit(sink->ctx, data, n) != 0)
        r->emit_failed = 1;
}

/* Accounting for content bytes of the current line. */
static void count_content(struct smtp_data_reader *r, size_t n)
{
    r->line_len += n;
    r->total_bytes += n;
    if (r->in_headers)
        r->header_bytes += n;
}

static void count_line_end(struct smtp_data_reader *r, int real_crlf)
{
    if (r->line_len == 0)
        r->in_headers = 0;
    else if (r->in_headers)
        r->header_bytes += 2;
    r->total_bytes += 2;
    r->lines++;
    if (r->line_len > r->longest_line)
        r->longest_line = r->line_len;
    r->line_len = 0;
    r->line_after_crlf = real_crlf;
    r->state = DATA_LINE_START;
}

size_t smtp_data_feed(struct smtp_data_reader *r, const char *in, size_t len,
                      int (*emit)(void *ctx, const char *data, size_t n), void *ctx, int *done)
{
    const struct data_sink sink = { emit, ctx };
    size_t i = 0;
    size_t span = 0;        /* start of input bytes emitted verbatim, not yet flushed */
    int cr_in_buffer = 0;   /* a pending CR is in[i - 1], inside the span */

    *done = r->done;
    if (r->done)
        return 0;

    while (i < len) {
        unsigned char c = (unsigned char)in[i];
        switch (r->state) {
        case DATA_LINE_START:
            if (c == '.') {
                /* Stuffing dot or end marker: dropped either way. */
                put(r, &sink, in + span, i - span);
                span = ++i;
                r->state = DATA_DOT;
                break;
            }
            r->state = DATA_IN_LINE;
            /* FALLTHROUGH */
        case DATA_IN_LINE: {
            size_t start = i;
            while (i < len && in[i] != '\r' && in[i] != '\n') {
                if (in[i] == 0)
                    r->saw_nul = 1;
                i++;
            }
            count_content(r, i - start);
            if (i == len)
                break;
            if (in[i] == '\r') {
                r->state = DATA_CR;
                cr_in_buffer = 1;
                i++;
            } else {
                /* Bare LF: a line end, stored as CRLF. */
                r->saw_bare_lf = 1;
                put(r, &sink, in + span, i - span);
                put(r, &sink, "\r\n", 2);
                span = ++i;
                count_line_end(r, 0);
            }
            break;
        }
        case DATA_CR:
        case DATA_DOT_CR:
            if (c == '\n') {
                if (r->state == DATA_DOT_CR && r->line_after_crlf) {
                    /* <CR><LF>.<CR><LF>: the ".\r\n" is not content. */
                    put(r, &sink, in + span, i - span - (size_t)cr_in_buffer);
                    r->done = 1;
                    *done = 1;
                    return i + 1;
                }
                if (!cr_in_buffer) {
                    /* The CR came in the previous buffer: emit it now. */
                    put(r, &sink, in + span, i - span);
                    put(r, &sink, "\r", 1);
                    span = i;
                }
                i++;
                cr_in_buffer = 0;
                count_line_end(r, 1);
            } else {
                /* Stray CR: replaced by a space; c is then read as content. */
                r->saw_bare_cr = 1;
                put(r, &sink, in + span, i - span - (size_t)cr_in_buffer);
                put(r, &sink, " ", 1);
                span = i;
                cr_in_buffer = 0;
                count_content(r, 1);
                r->state = DATA_IN_LINE;
            }
            break;
        case DATA_DOT:
            if (c == '\r') {
                r->state = DATA_DOT_CR;
                cr_in_buffer = 1;
                i++;
            } else if (c == '\n') {
                /* "." ended by a bare LF: an empty line, never the end. */
                r->saw_bare_lf = 1;
                put(r, &sink, in + span, i - span);
                put(r, &sink, "\r\n", 2);
                span = ++i;
                count_line_end(r, 0);
            } else {
                /* Unstuffed; c is read as the line's first content byte. */
                r->state = DATA_IN_LINE;
            }
            break;
        }
    }
    /* A CR at the very end is held back until its successor arrives. */
    put(r, &sink, in + span, len - span - (size_t)cr_in_buffer);
    return len;
}
