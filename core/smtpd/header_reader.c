/*
 * The header/body splitter (see header_reader.h). Lines are assembled in
 * r->line until their LF; a header section that grows past the limit is
 * given up on as Postfix's cleanup does (the rest, including the line that
 * crossed it, is body), so neither buffer ever holds more than limit bytes
 * plus one piece of input.
 */
#include "config.h"

#include <string.h>

#include "smtpd/header_reader.h"

void header_reader_init(struct header_reader *r, unsigned long long start, size_t limit)
{
    memset(r, 0, sizeof(*r));
    r->start = start;
    r->limit = limit;
}

void header_reader_free(struct header_reader *r)
{
    buf_free(&r->line);
    buf_free(&r->field);
}

static void push_field(struct header_reader *r, const struct header_reader_cb *cb, void *ctx)
{
    struct buf *f = &r->field;
    if (f->len == 0)
        return;
    const char *colon = memchr(f->data, ':', f->len);
    if (colon != NULL)
        cb->header(ctx, f->data, (size_t)(colon - f->data), colon + 1, f->len - (size_t)(colon + 1 - f->data));
    buf_reset(f);
}

static int is_header_start(const char *p, size_t n)
{
    /* field-name: printable ASCII except ':' and space, then ':' */
    size_t i = 0;
    while (i < n && p[i] != ':') {
        unsigned char c = (unsigned char)p[i];
        if (c <= 32 || c >= 127)
            return 0;
        i++;
    }
    return i > 0 && i < n;
}

static void end_of_headers(struct header_reader *r, unsigned long long body_start, int separator,
                           const struct header_reader_cb *cb, void *ctx)
{
    push_field(r, cb, ctx);
    r->in_body = 1;
    cb->end_of_headers(ctx, body_start, separator);
}

void header_reader_feed(struct header_reader *r, const char *data, size_t n, const struct header_reader_cb *cb,
                        void *ctx)
{
    size_t i = 0;
    while (i < n && !r->in_body) {
        const char *lf = memchr(data + i, '\n', n - i);
        size_t take = lf ? (size_t)(lf - (data + i)) + 1 : n - i;
        buf_append(&r->line, data + i, take);
        r->pos += take;
        i += take;
        if (r->line.len > r->limit || r->header_bytes + r->line.len > r->limit) {
            /* Too big for a header section: what remains is body. */
            end_of_headers(r, r->start + r->pos - r->line.len, 0, cb, ctx);
            cb->body(ctx, r->line.data, r->line.len);
            buf_reset(&r->line);
            break;
        }
        if (!lf)
            break;
        const char *line = r->line.data;
        size_t len = r->line.len;   /* includes the line end */
        size_t text = len >= 2 && line[len - 2] == '\r' ? len - 2 : len - 1;
        unsigned long long line_start = r->start + r->pos - len;
        if (text == 0) {
            end_of_headers(r, r->start + r->pos, 1, cb, ctx);
        } else if ((line[0] == ' ' || line[0] == '\t') && r->field.len) {
            buf_append(&r->field, "\r\n", 2);
            buf_append(&r->field, line, text);
            r->header_bytes += len;
        } else if (is_header_start(line, text)) {
            push_field(r, cb, ctx);
            buf_append(&r->field, line, text);
            r->header_bytes += len;
        } else {
            /* Not a header: the body starts here, without a separator line. */
            end_of_headers(r, line_start, 0, cb, ctx);
            cb->body(ctx, line, len);
        }
        buf_reset(&r->line);
    }
    if (i < n) {
        r->pos += n - i;
        cb->body(ctx, data + i, n - i);
    }
}

void header_reader_end(struct header_reader *r, const struct header_reader_cb *cb, void *ctx)
{
    if (r->in_body)
        return;
    if (r->line.len && is_header_start(r->line.data, r->line.len)) {
        /* a last header line without CRLF */
        push_field(r, cb, ctx);
        buf_append(&r->field, r->line.data, r->line.len);
        buf_reset(&r->line);
    }
    end_of_headers(r, r->start + r->pos - r->line.len, 0, cb, ctx);
    if (r->line.len)
        cb->body(ctx, r->line.data, r->line.len);
    buf_reset(&r->line);
}
