/*
 * Fuzz target for clamd's reply parser (modules/clamav/clamd_proto.c). Byte 0
 * picks the command the reply answers; the rest is the reply line. Besides
 * crashes and sanitizer reports it checks that a virus name is printable
 * without spaces and bounded, and that the kept text is printable.
 *
 * make check builds it with t/fuzz/replay_main.c and replays
 * t/fuzz/corpus/clamd_reply; `make fuzz` runs it with libFuzzer (doc/testing.md).
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "clamd_proto.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check(int cond)
{
    if (!cond)
        abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1 || size > 4096)
        return 0;
    clamd_command cmd = (clamd_command)(data[0] % 3);
    clamd_reply r;
    char err[256];
    if (clamd_parse_reply(cmd, (const char *)data + 1, size - 1, &r, err, sizeof err) == 0) {
        check(size - 1 <= CLAMD_REPLY_MAX);
        if (r.verdict == CLAMD_FOUND) {
            size_t n = strlen(r.virus);
            check(n > 0 && n <= CLAMD_VIRUS_MAX);
            for (size_t i = 0; i < n; i++)
                check((unsigned char)r.virus[i] > 32 && (unsigned char)r.virus[i] < 127);
        } else
            check(r.virus[0] == 0);
        check(cmd != CLAMD_PING || r.verdict == CLAMD_PONG);
    } else
        check(err[0] != 0);
    for (const char *t = r.text; *t; t++)
        check((unsigned char)*t >= 32 && (unsigned char)*t < 127);
    return 0;
}
