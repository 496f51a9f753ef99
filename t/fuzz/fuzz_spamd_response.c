/*
 * Fuzz target for spamd's response parser (modules/spamassassin/spamd_proto.c),
 * fed in pieces as a socket would deliver it. Byte 0 picks the piece size,
 * the body limit and whether the SYMBOLS list is kept. Besides crashes and
 * sanitizer reports it checks the parser's promises: the body handed on never
 * exceeds Content-length or the limit, the kept list is NUL-terminated
 * within its bound, texts are printable, a completed response has a status.
 *
 * make check builds it with t/fuzz/replay_main.c and replays
 * t/fuzz/corpus/spamd_response; `make fuzz` runs it with libFuzzer (doc/testing.md).
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "spamd_proto.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check(int cond)
{
    if (!cond)
        abort();
}

static size_t handed;

static int take(void *arg, const void *p, size_t len)
{
    (void)arg;
    check(p != NULL && len > 0);
    handed += len;
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1 || size > (1u << 18))
        return 0;
    size_t piece = (size_t)(data[0] & 0x1f) + 1;
    size_t body_max = data[0] & 0x20 ? 64 : 0;
    int keep = (data[0] & 0x40) != 0;
    data++;
    size--;
    spamd_response r;
    spamd_response_init(&r, body_max, keep);
    handed = 0;
    int rc = 0;
    for (size_t off = 0; off < size && rc == 0; off += piece) {
        size_t n = size - off < piece ? size - off : piece;
        rc = spamd_response_feed(&r, data + off, n, take, NULL);
    }
    if (rc == 0)
        rc = spamd_response_eof(&r);
    check(rc == 1 || rc == -1);
    check(handed == r.body_bytes);
    if (r.has_length)
        check(r.body_bytes <= r.content_length);
    if (body_max)
        check(r.body_bytes <= body_max);
    check(r.symbols_len <= SPAMD_SYMBOLS_MAX && r.symbols[r.symbols_len] == 0);
    for (const char *t = r.code_text; *t; t++)
        check((unsigned char)*t >= 32 && (unsigned char)*t < 127);
    if (rc == 1)
        check(r.state == SPAMD_P_DONE && r.version[0] != 0);
    else
        check(r.error[0] != 0);
    return 0;
}
