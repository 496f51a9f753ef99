/*
 * Fuzz target for the Received-SPF header's key=value writer
 * (modules/spf/spf_header.c), which puts the HELO name and the envelope
 * sender a client on port 25 chose into a header, in a buffer of fixed
 * size that may be too small for them.
 *
 * Input: byte 0 and 1 give the buffer's size (16..1551) and how much of
 * it is already used; the rest, NUL-separated, are values appended one
 * after the other (as client-ip, envelope-from, helo, receiver, ...).
 *
 * Properties beyond "no crash, no sanitizer report" (the buffer is
 * exactly its size, so ASan sees any write or read past it):
 *  - buf stays NUL-terminated within its size, and what was there before
 *    a pair is unchanged;
 *  - no CR, LF or other control character is ever written;
 *  - a pair that fits whole reads back, unquoted, as the value with its
 *    controls made '?'; a quoted value has its quotes and backslashes
 *    escaped.
 *
 * make check builds it with t/fuzz/replay_main.c and replays
 * t/fuzz/corpus/spf_header; `make fuzz` runs it with libFuzzer (doc/testing.md).
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "spf_header.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check(int cond, const char *what)
{
    if (!cond) {
        fprintf(stderr, "property violated: %s\n", what);
        abort();
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 2 || size > 8192)
        return 0;
    size_t bufsize = 16 + (size_t)data[0] * 6;
    size_t used = data[1] % (bufsize / 2);
    char *buf = malloc(bufsize);
    char *before = malloc(bufsize);
    char *values = malloc(size - 1);
    check(buf && before && values, "out of memory in the harness");
    memset(buf, 'x', bufsize);   /* what a stack buffer may hold past the string */
    memset(buf, 'p', used);
    buf[used] = '\0';
    memcpy(values, data + 2, size - 2);
    values[size - 2] = '\0';
    static const char *const keys[] = { "client-ip", "envelope-from", "helo", "receiver", "identity" };
    size_t k = 0;
    for (const char *v = values; v <= values + size - 2; v += strlen(v) + 1, k++) {
        const char *key = keys[k % 5];
        size_t had = strlen(buf);
        memcpy(before, buf, had + 1);
        spf_header_append_kv(buf, bufsize, key, v);
        check(memchr(buf, '\0', bufsize) != NULL, "buf is NUL-terminated within its size");
        size_t now = strlen(buf);
        check(now >= had && memcmp(buf, before, had) == 0, "what was there is unchanged");
        for (size_t i = had; i < now; i++)
            check((unsigned char)buf[i] >= 0x20 && buf[i] != 0x7f, "no control character is written");
        /* a pair that fits whole: " key=" value ";" */
        const char *pair = buf + had;
        size_t kl = strlen(key);
        if (now > had && pair[now - had - 1] == ';' && strncmp(pair, " ", 1) == 0 &&
            strncmp(pair + 1, key, kl) == 0 && pair[1 + kl] == '=') {
            const char *p = pair + 2 + kl, *end = buf + now - 1;
            char *got = malloc(end - p + 1);
            check(got != NULL, "out of memory in the harness");
            size_t g = 0;
            if (*p == '"' && end > p && end[-1] == '"') {
                for (p++; p < end - 1; p++) {
                    if (*p == '\\' && p + 1 < end - 1)
                        p++;
                    else
                        check(*p != '"' && *p != '\\', "quotes and backslashes in a quoted value are escaped");
                    got[g++] = *p;
                }
            } else {
                for (; p < end; p++)
                    got[g++] = *p;
            }
            size_t vl = strlen(v);
            if (g == vl) {
                for (size_t i = 0; i < vl; i++) {
                    unsigned char c = (unsigned char)v[i];
                    check(got[i] == (char)(c < 0x20 || c == 0x7f ? '?' : c),
                          "a whole pair reads back as the value with controls made '?'");
                }
            }
            free(got);
        }
    }
    free(buf);
    free(before);
    free(values);
    return 0;
}
