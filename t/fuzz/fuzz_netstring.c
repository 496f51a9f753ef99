/*
 * Fuzz target for the socketmap module's netstring reader
 * (modules/socketmap/netstring.c), the parser of what a socketmap server
 * sends. Byte 0 picks how the input is cut into pieces (the reader is fed
 * from a non-blocking socket); the next two bytes the size limit. Besides
 * crashes and sanitizer reports it checks the reader's promises: a
 * complete netstring is within the limit and NUL-terminated, it never
 * consumes more than it was given, and an error has a reason.
 *
 * make check builds it with t/fuzz/replay_main.c and replays
 * t/fuzz/corpus/netstring; `make fuzz` runs it with libFuzzer.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "netstring.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check(int cond)
{
    if (!cond)
        abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 3 || size > 200000)
        return 0;
    size_t piece = (size_t)data[0] % 17 + 1;
    size_t limit = ((size_t)data[1] << 8 | data[2]) + 1;
    const char *in = (const char *)data + 3;
    size_t len = size - 3;
    struct netstring_reader r;
    netstring_reader_init(&r, limit);
    size_t at = 0;
    while (at < len && r.state != NS_DONE && r.state != NS_ERROR) {
        size_t n = len - at < piece ? len - at : piece;
        size_t used = netstring_feed(&r, in + at, n);
        check(used <= n);
        check(used > 0);
        at += used;
    }
    if (r.state == NS_DONE) {
        check(r.length <= limit);
        check(r.data[r.length] == '\0');
        check(netstring_has_nul(&r) == (memchr(r.data, 0, r.length) != NULL));
        /* What the encoder makes of the payload reads back the same. */
        size_t elen;
        char *again = netstring_encode(r.data, r.length, &elen);
        check(again != NULL);
        struct netstring_reader r2;
        netstring_reader_init(&r2, limit);
        check(netstring_feed(&r2, again, elen) == elen && r2.state == NS_DONE);
        check(r2.length == r.length && memcmp(r2.data, r.data, r.length) == 0);
        netstring_reader_free(&r2);
        free(again);
    }
    if (r.state == NS_ERROR)
        check(r.error != NULL && *r.error);
    netstring_reader_free(&r);
    return 0;
}
