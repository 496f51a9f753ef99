/*
 * Fuzz target for the base64 codec (core/lib/base64.c) that decodes every
 * SMTP AUTH response a client on port 25 or 587 sends (smtpd's AUTH, RFC
 * 4954) and every challenge a remote server sends our SMTP client
 * (deliver/smtp_sasl.c, SCRAM's salt included).
 *
 * The input is taken twice: as text to decode (up to its first NUL, as
 * the callers pass C strings) and as bytes to encode.
 *
 * Properties beyond "no crash, no sanitizer report":
 *  - decoding writes at most strlen(in) bytes (the buffer is exactly that
 *    size, so ASan sees any more), and what it accepts is strict base64:
 *    a multiple of 4 long, the alphabet only, '=' only as the last one or
 *    two characters; the length decoded is 3 per group minus the padding;
 *  - accepted text encodes back to text of the same length that decodes
 *    to the same bytes;
 *  - any bytes encode into base64_encoded_size() bytes (NUL included) and
 *    decode back to themselves.
 *
 * make check builds it with t/fuzz/replay_main.c and replays
 * t/fuzz/corpus/base64; `make fuzz` runs it with libFuzzer (doc/testing.md).
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lib/base64.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check(int cond, const char *what)
{
    if (!cond) {
        fprintf(stderr, "property violated: %s\n", what);
        abort();
    }
}

static int in_alphabet(char c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '+' || c == '/';
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > 65536)
        return 0;
    char *text = malloc(size + 1);
    check(text != NULL, "out of memory in the harness");
    memcpy(text, data, size);
    text[size] = '\0';
    size_t len = strlen(text);

    char *out = malloc(len ? len : 1);
    check(out != NULL, "out of memory in the harness");
    long n = base64_decode(text, out);
    if (n >= 0) {
        size_t pad = len && text[len - 1] == '=' ? (len > 1 && text[len - 2] == '=' ? 2 : 1) : 0;
        check(len % 4 == 0, "accepted base64 is a multiple of 4 long");
        check((size_t)n == len / 4 * 3 - pad, "the decoded length is 3 per group minus the padding");
        for (size_t i = 0; i < len - pad; i++)
            check(in_alphabet(text[i]), "accepted base64 has only the alphabet before its padding");
        char *again = malloc(base64_encoded_size((size_t)n));
        check(again != NULL, "out of memory in the harness");
        base64_encode((const unsigned char *)out, (size_t)n, again);
        check(strlen(again) == len, "accepted base64 encodes back to the same length");
        char *back = malloc(len ? len : 1);
        check(back != NULL, "out of memory in the harness");
        check(base64_decode(again, back) == n && memcmp(back, out, (size_t)n) == 0,
              "accepted base64 encoded back decodes to the same bytes");
        free(back);
        free(again);
    }
    free(out);

    char *enc = malloc(base64_encoded_size(size));
    check(enc != NULL, "out of memory in the harness");
    base64_encode(data, size, enc);
    check(strlen(enc) + 1 == base64_encoded_size(size), "the encoding fills base64_encoded_size()");
    char *dec = malloc(strlen(enc) ? strlen(enc) : 1);
    check(dec != NULL, "out of memory in the harness");
    check(base64_decode(enc, dec) == (long)size && memcmp(dec, data, size) == 0,
          "bytes encoded decode back to themselves");
    free(dec);
    free(enc);
    free(text);
    return 0;
}
