/*
 * Fuzz target for the DATA-phase reader (core/mail/smtp_data.c). The first
 * byte picks the bare-LF policy, a size limit and a piece size; the rest is
 * the raw client stream. Invariants checked: feeding everything at once,
 * one byte at a time and in pieces gives identical output, consumption and
 * statistics; the output never holds a bare CR or bare LF (so nothing
 * smuggled can reach a next hop); what is emitted never passes the limit.
 *
 * make check builds it with t/fuzz/replay_main.c and replays
 * t/fuzz/corpus/smtp_data; `make fuzz` runs it with libFuzzer (doc/testing.md).
 */
#include "config.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "lib/buf.h"
#include "mail/smtp_data.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check(int cond)
{
    if (!cond)
        abort();
}

static int append(void *ctx, const char *p, size_t n)
{
    buf_append(ctx, p, n);
    return 0;
}

struct result {
    struct buf out;
    size_t consumed;
    int done;
    struct smtp_data_reader r;
};

static void feed(struct result *res, enum data_bare_lf_policy policy, unsigned long long limit,
                 const char *in, size_t len, size_t piece)
{
    struct buf empty = BUF_INIT;
    res->out = empty;
    buf_reserve(&res->out, 1);
    res->consumed = 0;
    res->done = 0;
    smtp_data_init(&res->r, policy, limit);
    while (res->consumed < len && !res->done) {
        size_t n = len - res->consumed;
        if (piece && n > piece)
            n = piece;
        size_t used = smtp_data_feed(&res->r, in + res->consumed, n, append, &res->out, &res->done);
        check(used <= n);
        check(res->done || used == n);
        res->consumed += used;
    }
}

static void same(const struct result *a, const struct result *b)
{
    check(a->done == b->done && a->consumed == b->consumed);
    check(a->out.len == b->out.len && memcmp(a->out.data, b->out.data, a->out.len) == 0);
    check(a->r.saw_bare_lf == b->r.saw_bare_lf && a->r.saw_bare_cr == b->r.saw_bare_cr);
    check(a->r.saw_nul == b->r.saw_nul && a->r.oversize == b->r.oversize);
    check(a->r.total_bytes == b->r.total_bytes && a->r.header_bytes == b->r.header_bytes);
    check(a->r.lines == b->r.lines && a->r.longest_line == b->r.longest_line);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size == 0)
        return 0;
    unsigned ctl = data[0];
    enum data_bare_lf_policy policy = (enum data_bare_lf_policy)(ctl % 3);
    unsigned long long limit = (ctl & 0x04) ? (ctl >> 3) * 4 : 0;
    size_t piece = 2 + (ctl >> 5);
    const char *in = (const char *)data + 1;
    size_t len = size - 1;

    struct result whole, bytewise, pieces;
    feed(&whole, policy, limit, in, len, 0);
    feed(&bytewise, policy, limit, in, len, 1);
    feed(&pieces, policy, limit, in, len, piece);
    same(&whole, &bytewise);
    same(&whole, &pieces);

    const struct buf *o = &whole.out;
    for (size_t i = 0; i < o->len; i++) {
        /* The size-limit cut may fall between CR and LF. */
        if (o->data[i] == '\r' && !(whole.r.oversize && i + 1 == o->len))
            check(i + 1 < o->len && o->data[i + 1] == '\n');
        if (o->data[i] == '\n')
            check(i > 0 && o->data[i - 1] == '\r');
    }
    if (whole.done) {
        /* Complete lines only, and the marker was consumed. */
        check(o->len == 0 || whole.r.oversize || (o->len >= 2 && o->data[o->len - 1] == '\n'));
        check(whole.consumed >= 3 && memcmp(in + whole.consumed - 3, ".\r\n", 3) == 0);
        if (!whole.r.oversize)
            check(whole.r.total_bytes == o->len);
    }
    if (limit)
        check(o->len <= limit);
    check(smtp_data_bare_lf_violation(&whole.r) == (policy == DATA_BARE_LF_REJECT && whole.r.saw_bare_lf));

    buf_free(&whole.out);
    buf_free(&bytewise.out);
    buf_free(&pieces.out);
    return 0;
}
