/*
 * Fuzz target for the header section reader (core/smtpd/header_reader.c):
 * the message content a client sends, split into header fields (what
 * modules' header hooks and header address rewriting see) and body.
 *
 * Input: byte 0 picks a piece size and the header size limit; the rest is
 * the content. It is used twice: as it is, and normalised the way smtpd
 * stores DATA (every line end CRLF, a final CRLF added).
 *
 * Properties, beyond "no crash, no leak, no hang":
 *  - fed whole, one byte at a time or in pieces, the reader reports the
 *    same fields, the same end of headers and the same body bytes;
 *  - parse-then-serialise: for CRLF content, the fields written back as
 *    name ":" value CRLF, the separator line and the body are exactly the
 *    content (nothing lost, nothing invented, NUL bytes included);
 *  - every field name is non-empty printable ASCII without ':';
 *  - the end of headers comes exactly once, at the offset where the body
 *    starts, and the header section never exceeds the limit.
 *
 * make check builds it with t/fuzz/replay_main.c and replays
 * t/fuzz/corpus/header; `make fuzz` runs it with libFuzzer (doc/testing.md).
 */
#include "config.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lib/buf.h"
#include "smtpd/header_reader.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define START 1000   /* content offset of the first byte (after a Received header) */

static void check(int cond, const char *what)
{
    if (!cond) {
        fprintf(stderr, "property violated: %s\n", what);
        abort();
    }
}

struct seen {
    struct buf fields;      /* name ":" value CRLF per field */
    struct buf body;
    int eoh;                /* end-of-headers calls */
    unsigned long long body_start;
    int separator;
    size_t limit;
};

static void on_header(void *ctx, const char *name, size_t nl, const char *value, size_t vl)
{
    struct seen *s = ctx;
    check(!s->eoh, "no field after the end of headers");
    check(nl > 0, "a field name is not empty");
    for (size_t i = 0; i < nl; i++)
        check(name[i] > 32 && name[i] < 127 && name[i] != ':', "a field name is printable ASCII without ':'");
    buf_append(&s->fields, name, nl);
    buf_append(&s->fields, ":", 1);
    buf_append(&s->fields, value, vl);
    buf_append(&s->fields, "\r\n", 2);
}

static void on_eoh(void *ctx, unsigned long long body_start, int separator)
{
    struct seen *s = ctx;
    check(s->eoh++ == 0, "the end of headers comes once");
    check(s->body.len == 0, "no body before the end of headers");
    s->body_start = body_start;
    s->separator = separator;
}

static void on_body(void *ctx, const char *d, size_t n)
{
    struct seen *s = ctx;
    check(s->eoh == 1, "body only after the end of headers");
    buf_append(&s->body, d, n);
}

static const struct header_reader_cb cb = { on_header, on_eoh, on_body };

static void run(const char *in, size_t n, size_t piece, size_t limit, struct seen *s)
{
    memset(s, 0, sizeof(*s));
    buf_append(&s->fields, "", 0);
    buf_append(&s->body, "", 0);
    s->limit = limit;
    struct header_reader r;
    header_reader_init(&r, START, limit);
    for (size_t pos = 0; pos < n;) {
        size_t k = piece && n - pos > piece ? piece : n - pos;
        header_reader_feed(&r, in + pos, k, &cb, s);
        pos += k;
    }
    header_reader_end(&r, &cb, s);
    header_reader_free(&r);
    check(s->eoh == 1, "the end of headers comes exactly once");
    check(s->body_start >= START && s->body_start - START + s->body.len == n,
          "the body starts where the header section ends and runs to the end");
    check(s->body_start - START <= limit + 2 || s->separator == 0,
          "a header section ended by an empty line is within the limit");
}

static int same(const struct seen *a, const struct seen *b)
{
    return a->body_start == b->body_start && a->separator == b->separator && a->fields.len == b->fields.len &&
           memcmp(a->fields.data, b->fields.data, a->fields.len) == 0 && a->body.len == b->body.len &&
           memcmp(a->body.data, b->body.data, a->body.len) == 0;
}

static void release(struct seen *s)
{
    buf_free(&s->fields);
    buf_free(&s->body);
}

static void check_all(const char *in, size_t n, size_t piece, size_t limit, int crlf)
{
    struct seen whole, bytes, pieces;
    run(in, n, 0, limit, &whole);
    run(in, n, 1, limit, &bytes);
    run(in, n, piece, limit, &pieces);
    check(same(&whole, &bytes), "byte by byte gives what all at once gives");
    check(same(&whole, &pieces), "pieces give what all at once gives");
    if (crlf) {
        struct buf back = BUF_INIT;
        buf_append(&back, whole.fields.data, whole.fields.len);
        if (whole.separator)
            buf_append(&back, "\r\n", 2);
        check(whole.body_start - START == back.len, "the body starts after exactly the fields and the separator");
        buf_append(&back, whole.body.data, whole.body.len);
        check(back.len == n && memcmp(back.data, in, n) == 0, "fields, separator and body give the content back");
        buf_free(&back);
    }
    release(&whole);
    release(&bytes);
    release(&pieces);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1 || size > 65536)
        return 0;
    size_t piece = 1 + (data[0] & 0x3f);
    size_t limit = (data[0] & 0x40) ? 256 : (data[0] & 0x80) ? 4096 : 102400;
    const char *in = (const char *)data + 1;
    size_t n = size - 1;
    check_all(in, n, piece, limit, 0);

    /* As smtpd stores it: CRLF line ends, and a final CRLF. */
    struct buf norm = BUF_INIT;
    buf_append(&norm, "", 0);
    for (size_t i = 0; i < n; i++) {
        if (in[i] == '\n' && (i == 0 || in[i - 1] != '\r'))
            buf_putc(&norm, '\r');
        if (in[i] == '\r' && i + 1 < n && in[i + 1] != '\n') {
            buf_append(&norm, "\r\n", 2);   /* a bare CR ends a line as well */
            continue;
        }
        buf_putc(&norm, in[i]);
    }
    if (norm.len && (norm.len < 2 || memcmp(norm.data + norm.len - 2, "\r\n", 2) != 0)) {
        if (norm.data[norm.len - 1] == '\r')
            buf_putc(&norm, '\n');
        else
            buf_append(&norm, "\r\n", 2);
    }
    check_all(norm.data, norm.len, piece, limit, 1);
    buf_free(&norm);
    return 0;
}
