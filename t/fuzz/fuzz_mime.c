/*
 * Fuzz target for the MIME parser (core/mail/mime.c), which reads every
 * message a client sends when header or body checks are configured, and
 * every message the SMTP client sends with smtp_header_checks. The first
 * byte picks small limits (so that the limits themselves are exercised),
 * the options and a piece size; the rest is the message. Invariants:
 * feeding it whole, one byte at a time and in pieces gives the same
 * callbacks and errors; no header is longer than header_limit plus one
 * record, no body record longer than line_limit; every header starts with
 * a header name; the primary headers end exactly once.
 *
 * make check builds it with t/fuzz/replay_main.c and replays
 * t/fuzz/corpus/mime; `make fuzz` runs it with libFuzzer (doc/testing.md).
 */
#include "config.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lib/buf.h"
#include "mail/mime.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* A property that fails aborts with its text (doc/testing.md). */
#define check(cond) check_at((cond), #cond)
static void check_at(int cond, const char *what)
{
    if (!cond) {
        fprintf(stderr, "property violated: %s\n", what);
        abort();
    }
}

struct run {
    struct buf trace;
    struct mime_limits lim;
    int ends;
};

static void on_header(void *ctx, const struct mime_header *h)
{
    struct run *r = ctx;
    check(h->len <= r->lim.header_limit + r->lim.line_limit + 1);
    check(h->name_len > 0 && h->name_len < h->len && h->text[h->name_len] == ':');
    check(mime_header_name_len(h->text, h->len) == h->name_len);
    check(h->text[h->len] == '\0');
    buf_printf(&r->trace, "H%d%d:%zu:", (int)h->cls, h->is_mime, h->len);
    buf_append(&r->trace, h->text, h->len);
}

static void on_end(void *ctx, unsigned long long end_input, unsigned long long body_input, int separator)
{
    struct run *r = ctx;
    check(end_input <= body_input);
    r->ends++;
    buf_printf(&r->trace, "E%llu:%llu:%d", end_input, body_input, separator);
}

static void on_body(void *ctx, const char *text, size_t len, int cont, unsigned long long offset,
                    unsigned long long input_start)
{
    struct run *r = ctx;
    check(len <= r->lim.line_limit);
    buf_printf(&r->trace, "B%d:%llu:%llu:%zu:", cont, offset, input_start, len);
    buf_append(&r->trace, text, len);
}

static void on_error(void *ctx, unsigned err, const char *text, size_t len)
{
    struct run *r = ctx;
    (void)text;
    (void)len;
    buf_printf(&r->trace, "X%u", err);
}

static const struct mime_callbacks callbacks = { on_header, on_end, on_body, on_error };

static unsigned feed(struct run *r, unsigned options, const uint8_t *in, size_t len, size_t piece)
{
    struct mime_parser *p = mime_parser_new(&r->lim, options, &callbacks, r);
    if (piece == 0)
        piece = len ? len : 1;
    for (size_t i = 0; i < len; i += piece)
        mime_parser_feed(p, (const char *)in + i, len - i < piece ? len - i : piece);
    mime_parser_end(p);
    unsigned errs = mime_parser_errors(p);
    mime_parser_free(p);
    check(r->ends == 1);
    return errs;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    uint8_t sel = data[0];
    struct mime_limits lim = {
        .header_limit = (sel & 1) ? 64 : 102400,
        .line_limit = (sel & 2) ? 16 : 2048,
        .nesting_limit = (sel & 4) ? 3 : 100,
        .boundary_limit = (sel & 8) ? 5 : 2048,
    };
    unsigned options = (sel & 16) ? MIME_OPT_DISABLE_MIME
                                  : MIME_OPT_REPORT_NESTING | MIME_OPT_REPORT_8BIT_IN_HEADER |
                                        MIME_OPT_REPORT_8BIT_IN_7BIT_BODY | MIME_OPT_REPORT_ENCODING_DOMAIN |
                                        MIME_OPT_REPORT_TRUNC_HEADER | MIME_OPT_REPORT_NON_EMPTY_EOH;
    size_t piece = 1 + (sel >> 5) * 3;
    struct run whole = { BUF_INIT, lim, 0 }, bytes = { BUF_INIT, lim, 0 }, pieces = { BUF_INIT, lim, 0 };
    unsigned e1 = feed(&whole, options, data + 1, size - 1, 0);
    unsigned e2 = feed(&bytes, options, data + 1, size - 1, 1);
    unsigned e3 = feed(&pieces, options, data + 1, size - 1, piece);
    check(e1 == e2 && e1 == e3);
    check(whole.trace.len == bytes.trace.len && whole.trace.len == pieces.trace.len);
    check(whole.trace.len == 0 || (memcmp(whole.trace.data, bytes.trace.data, whole.trace.len) == 0 &&
                                   memcmp(whole.trace.data, pieces.trace.data, whole.trace.len) == 0));
    buf_free(&whole.trace);
    buf_free(&bytes.trace);
    buf_free(&pieces.trace);
    return 0;
}
