/*
 * Unit tests for core/smtpd/smtp_data, the DATA-phase reader: every
 * smuggling variant under every bare-LF policy, dot-unstuffing, statistics,
 * size limit, and, for thousands of pseudo-random inputs, that feeding one
 * byte at a time or in random pieces gives exactly what one big buffer gives
 * and what a simple whole-buffer reference model gives.
 */
#include "config.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lib/buf.h"
#include "mail/smtp_data.h"
#include "../tap.h"

struct run {
    struct buf out;
    size_t consumed;
    int done;
    struct smtp_data_reader reader;
};

static int append_emit(void *ctx, const char *data, size_t n)
{
    buf_append(ctx, data, n);
    return 0;
}

static int failing_emit(void *ctx, const char *data, size_t n)
{
    (void)ctx;
    (void)data;
    (void)n;
    return -1;
}

/* Feeds in pieces of `piece` bytes (0 = all at once; SIZE_MAX-1 = random,
 * driven by *seed), stopping at done like a session would. */
static uint64_t xorshift(uint64_t *s)
{
    uint64_t x = *s;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    return *s = x;
}

#define PIECE_RANDOM ((size_t)-2)

static void run_feed(struct run *r, enum data_bare_lf_policy policy, unsigned long long limit,
                     const char *in, size_t len, size_t piece, uint64_t *seed)
{
    struct buf empty = BUF_INIT;
    r->out = empty;
    r->consumed = 0;
    r->done = 0;
    smtp_data_init(&r->reader, policy, limit);
    buf_reserve(&r->out, 1);
    while (r->consumed < len && !r->done) {
        size_t n = len - r->consumed;
        if (piece == PIECE_RANDOM)
            n = 1 + (size_t)(xorshift(seed) % 7);
        else if (piece != 0)
            n = piece;
        if (n > len - r->consumed)
            n = len - r->consumed;
        size_t used = smtp_data_feed(&r->reader, in + r->consumed, n, append_emit, &r->out, &r->done);
        if (!r->done && used != n) {
            printf("# feed consumed %zu of %zu without done\n", used, n);
            break;
        }
        r->consumed += used;
    }
}

static int same_bytes(const struct buf *b, const char *want, size_t want_len)
{
    return b->len == want_len && (want_len == 0 || memcmp(b->data, want, want_len) == 0);
}

/* ---- smuggling variants ------------------------------------------- */

struct variant {
    const char *name;
    const char *seq;
    int ends;               /* 1: the sequence is the real end marker */
    const char *content;    /* expected content for "A" seq "B\r\n.\r\n" */
    int bare_lf;
    int bare_cr;
};

static const struct variant variants[] = {
    { "\\n.\\r\\n", "\n.\r\n", 0, "A\r\n\r\nB\r\n", 1, 0 },
    { "\\r.\\r", "\r.\r", 0, "A . B\r\n", 0, 1 },
    { "\\n.\\n", "\n.\n", 0, "A\r\n\r\nB\r\n", 1, 0 },
    { "\\r\\n.\\n", "\r\n.\n", 0, "A\r\n\r\nB\r\n", 1, 0 },
    { "\\r.\\r\\n", "\r.\r\n", 0, "A .\r\nB\r\n", 0, 1 },
    { "\\r\\n.\\r\\n", "\r\n.\r\n", 1, "A\r\n", 0, 0 },
    { "\\n\\r\\n.\\r\\n", "\n\r\n.\r\n", 1, "A\r\n\r\n", 1, 0 },
    { "\\r\\r\\n.\\r\\n", "\r\r\n.\r\n", 1, "A \r\n", 0, 1 },
    { "\\r\\n.\\r\\r\\n", "\r\n.\r\r\n", 0, "A\r\n \r\nB\r\n", 0, 1 },
    { "\\r\\n..\\r\\n", "\r\n..\r\n", 0, "A\r\n.\r\nB\r\n", 0, 0 },
    { "\\r\\n.\\rX\\n", "\r\n.\rX\n", 0, "A\r\n X\r\nB\r\n", 1, 1 },
};

static void test_variants(void)
{
    static const struct { enum data_bare_lf_policy p; const char *name; } policies[] = {
        { DATA_BARE_LF_NORMALIZE, "normalize" },
        { DATA_BARE_LF_REJECT, "reject" },
        { DATA_BARE_LF_ALLOW, "no" },
    };
    for (size_t p = 0; p < 3; p++) {
        for (size_t v = 0; v < sizeof variants / sizeof variants[0]; v++) {
            const struct variant *tv = &variants[v];
            char in[128];
            const char *next = "MAIL FROM:<evil@example>\r\n";
            int n = snprintf(in, sizeof in, "A%sB\r\n.\r\n%s", tv->seq, next);
            size_t want_consumed = tv->ends ? 1 + strlen(tv->seq) : (size_t)n - strlen(next);
            for (int mode = 0; mode < 2; mode++) {
                struct run r;
                run_feed(&r, policies[p].p, 0, in, (size_t)n, mode ? 1 : 0, NULL);
                const char *how = mode ? "bytewise" : "whole";
                ok(r.done, "%s %s %s: done", policies[p].name, tv->name, how);
                is_int(r.consumed, want_consumed, "%s %s %s: stops at the real end marker",
                       policies[p].name, tv->name, how);
                ok(same_bytes(&r.out, tv->content, strlen(tv->content)), "%s %s %s: content",
                   policies[p].name, tv->name, how);
                is_int(r.reader.saw_bare_lf, tv->bare_lf, "%s %s %s: bare LF flag",
                       policies[p].name, tv->name, how);
                is_int(r.reader.saw_bare_cr, tv->bare_cr, "%s %s %s: bare CR flag",
                       policies[p].name, tv->name, how);
                is_int(smtp_data_bare_lf_violation(&r.reader),
                       policies[p].p == DATA_BARE_LF_REJECT && tv->bare_lf,
                       "%s %s %s: 550 decision", policies[p].name, tv->name, how);
                buf_free(&r.out);
            }
        }
    }
}

/* ---- content rules ------------------------------------------------- */

static void expect(const char *name, const char *in, size_t in_len, const char *want, size_t want_len,
                   size_t want_consumed)
{
    struct run r;
    run_feed(&r, DATA_BARE_LF_NORMALIZE, 0, in, in_len, 0, NULL);
    ok(r.done, "%s: done", name);
    is_int(r.consumed, want_consumed, "%s: consumed", name);
    ok(same_bytes(&r.out, want, want_len), "%s: content", name);
    buf_free(&r.out);
}

#define EXPECT(name, in, want, consumed) expect(name, in, sizeof in - 1, want, sizeof want - 1, consumed)

static void test_content(void)
{
    EXPECT("empty message", ".\r\n", "", 3);
    EXPECT("empty message then command", ".\r\nQUIT\r\n", "", 3);
    EXPECT("dot-unstuffing", "..foo\r\n.\r\n", ".foo\r\n", 10);
    EXPECT("three dots", "...\r\n.\r\n", "..\r\n", 8);
    EXPECT("lone stuffed dot", "..\r\n.\r\n", ".\r\n", 7);
    EXPECT("dot mid-line kept", "a.b\r\n.\r\n", "a.b\r\n", 8);
    EXPECT("dot then text", ".x\r\n.\r\n", "x\r\n", 7);
    EXPECT("empty lines", "\r\n\r\n.\r\n", "\r\n\r\n", 7);
    EXPECT("NUL passes", "a\0b\r\n.\r\n", "a\0b\r\n", 8);
    EXPECT("8-bit passes", "\xff\xfe\r\n.\r\n", "\xff\xfe\r\n", 7);
    EXPECT("first line bare LF then dot", "\n.\r\n.\r\n", "\r\n\r\n", 7);

    struct run r;
    const char msg[] = "A: b\r\nC: d\r\n\r\nbody line\r\n.\r\n";
    run_feed(&r, DATA_BARE_LF_NORMALIZE, 0, msg, sizeof msg - 1, 0, NULL);
    is_int(r.reader.header_bytes, 12, "header bytes");
    is_int(r.reader.lines, 4, "line count");
    is_int(r.reader.longest_line, 9, "longest line");
    is_int(r.reader.total_bytes, 25, "total bytes");
    is_int(r.reader.saw_nul, 0, "no NUL");
    buf_free(&r.out);

    const char nul[] = "a\0b\r\n.\r\n";
    run_feed(&r, DATA_BARE_LF_NORMALIZE, 0, nul, sizeof nul - 1, 1, NULL);
    is_int(r.reader.saw_nul, 1, "NUL flagged");
    buf_free(&r.out);

    /* Nothing is consumed once done. */
    int done = 0;
    struct buf out = BUF_INIT;
    smtp_data_init(&r.reader, DATA_BARE_LF_NORMALIZE, 0);
    is_int(smtp_data_feed(&r.reader, ".\r\nQUIT\r\n", 9, append_emit, &out, &done), 3, "stop after marker");
    is_int(smtp_data_feed(&r.reader, "QUIT\r\n", 6, append_emit, &out, &done), 0, "nothing consumed after done");
    ok(done, "done stays set");
    buf_free(&out);
}

static void test_limits(void)
{
    /* A 1 MB line passes intact, whole and in 4 KB pieces. */
    size_t big = 1024 * 1024;
    char *in = malloc(big + 5);
    for (size_t i = 0; i < big; i++)
        in[i] = (char)('a' + i % 26);
    memcpy(in + big, "\r\n.\r\n", 5);
    for (int mode = 0; mode < 2; mode++) {
        struct run r;
        run_feed(&r, DATA_BARE_LF_NORMALIZE, 0, in, big + 5, mode ? 4096 : 0, NULL);
        ok(r.done && r.consumed == big + 5, "1 MB line: done (%s)", mode ? "4 KB pieces" : "whole");
        ok(same_bytes(&r.out, in, big + 2), "1 MB line byte-identical (%s)", mode ? "4 KB pieces" : "whole");
        is_int(r.reader.longest_line, big, "1 MB line length");
        is_int(r.reader.lines, 1, "1 MB line is one line");
        buf_free(&r.out);
    }

    /* Size limit: emission stops, input is still consumed to the marker. */
    const char msg[] = "0123456789\r\n0123456789\r\n.\r\nNEXT";
    struct run r;
    run_feed(&r, DATA_BARE_LF_NORMALIZE, 20, msg, sizeof msg - 1, 0, NULL);
    ok(r.done, "oversize: still done");
    is_int(r.consumed, sizeof msg - 1 - 4, "oversize: consumed to the marker");
    is_int(r.reader.oversize, 1, "oversize flagged");
    ok(same_bytes(&r.out, msg, 20), "oversize: exactly the first 20 bytes emitted");
    is_int(r.reader.total_bytes, 24, "oversize: total counts everything");
    buf_free(&r.out);
    run_feed(&r, DATA_BARE_LF_NORMALIZE, 24, msg, sizeof msg - 1, 1, NULL);
    is_int(r.reader.oversize, 0, "exactly at the limit is not oversize");
    is_int(r.out.len, 24, "exactly at the limit: all emitted");
    buf_free(&r.out);

    /* A failing sink stops emission but not reading. */
    int done = 0;
    struct smtp_data_reader rd;
    smtp_data_init(&rd, DATA_BARE_LF_NORMALIZE, 0);
    size_t used = smtp_data_feed(&rd, msg, sizeof msg - 1, failing_emit, NULL, &done);
    ok(done && used == sizeof msg - 1 - 4 && rd.emit_failed, "emit failure: read to the marker");
    free(in);
}

/* ---- random inputs ------------------------------------------------- */

/* Whole-buffer reference model, written from the rules rather than from the
 * state machine: split into lines (CRLF or bare LF), end at "." after a real
 * CRLF, unstuff, turn stray CRs into spaces. */
static int reference(const char *in, size_t len, struct buf *out, size_t *consumed, int *bare_lf,
                     int *bare_cr)
{
    size_t pos = 0;
    int after_crlf = 1;
    *bare_lf = *bare_cr = 0;
    for (;;) {
        size_t j = pos, next;
        int crlf;
        for (;;) {
            if (j >= len)
                return 0;
            if (in[j] == '\r' && j + 1 < len && in[j + 1] == '\n') {
                crlf = 1;
                next = j + 2;
                break;
            }
            if (in[j] == '\r' && j + 1 == len)
                return 0;
            if (in[j] == '\n') {
                crlf = 0;
                next = j + 1;
                break;
            }
            j++;
        }
        if (crlf && after_crlf && j - pos == 1 && in[pos] == '.') {
            *consumed = next;
            return 1;
        }
        size_t k = pos;
        if (k < j && in[k] == '.')
            k++;
        for (; k < j; k++) {
            if (in[k] == '\r') {
                *bare_cr = 1;
                buf_putc(out, ' ');
            } else {
                buf_append(out, in + k, 1);
            }
        }
        buf_append(out, "\r\n", 2);
        if (!crlf)
            *bare_lf = 1;
        after_crlf = crlf;
        pos = next;
    }
}

static void test_random(void)
{
    static const char alphabet[] = "\r\n.\r\n.a\0bx\r\n ";
    uint64_t seed = 0x9e3779b97f4a7c15ULL;
    int mismatches = 0, ref_mismatches = 0;
    const int rounds = 5000;
    char in[128];

    for (int round = 0; round < rounds; round++) {
        size_t len = (size_t)(xorshift(&seed) % 60);
        for (size_t i = 0; i < len; i++)
            in[i] = alphabet[xorshift(&seed) % (sizeof alphabet - 1)];
        memcpy(in + len, "\r\n.\r\nQUIT\r\n", 11);
        len += 11;

        /* Every third round with a size limit, to check that the cut is
         * independent of the split too. */
        unsigned long long limit = round % 3 == 0 ? 1 + xorshift(&seed) % 40 : 0;
        enum data_bare_lf_policy policy = (enum data_bare_lf_policy)(round % 3);
        struct run whole, bytewise, pieces;
        run_feed(&whole, policy, limit, in, len, 0, NULL);
        run_feed(&bytewise, policy, limit, in, len, 1, NULL);
        run_feed(&pieces, policy, limit, in, len, PIECE_RANDOM, &seed);
        struct run *others[2] = { &bytewise, &pieces };
        for (int o = 0; o < 2; o++) {
            struct run *x = others[o];
            if (x->done != whole.done || x->consumed != whole.consumed
                || !same_bytes(&x->out, whole.out.data, whole.out.len)
                || x->reader.saw_bare_lf != whole.reader.saw_bare_lf
                || x->reader.saw_bare_cr != whole.reader.saw_bare_cr
                || x->reader.saw_nul != whole.reader.saw_nul
                || x->reader.oversize != whole.reader.oversize
                || x->reader.lines != whole.reader.lines
                || x->reader.longest_line != whole.reader.longest_line
                || x->reader.header_bytes != whole.reader.header_bytes
                || x->reader.total_bytes != whole.reader.total_bytes) {
                if (mismatches++ < 5)
                    printf("# split mismatch in round %d (%s)\n", round, o ? "random pieces" : "bytewise");
            }
        }

        struct buf ref = BUF_INIT;
        size_t ref_consumed = 0;
        int ref_lf, ref_cr;
        buf_reserve(&ref, 1);
        int ref_done = reference(in, len, &ref, &ref_consumed, &ref_lf, &ref_cr);
        size_t ref_emitted = limit && ref.len > limit ? (size_t)limit : ref.len;
        if (ref_done != whole.done || ref_consumed != whole.consumed
            || !same_bytes(&whole.out, ref.data, ref_emitted) || ref_lf != whole.reader.saw_bare_lf
            || ref_cr != whole.reader.saw_bare_cr || whole.reader.total_bytes != ref.len
            || whole.reader.oversize != (limit && ref.len > limit)) {
            if (ref_mismatches++ < 5)
                printf("# reference mismatch in round %d\n", round);
        }
        buf_free(&ref);
        buf_free(&whole.out);
        buf_free(&bytewise.out);
        buf_free(&pieces.out);
    }
    is_int(mismatches, 0, "%d random inputs: bytewise and random pieces equal whole-buffer", rounds);
    is_int(ref_mismatches, 0, "%d random inputs: reader equals the reference model", rounds);
}

int main(void)
{
    test_variants();
    test_content();
    test_limits();
    test_random();
    return done_testing();
}
