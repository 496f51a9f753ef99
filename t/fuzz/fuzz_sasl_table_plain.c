/*
 * Fuzz target for the PLAIN message the sasl module's table back-end
 * splits (modules/sasl/plain.c): the decoded AUTH PLAIN response any client
 * sends on a port with smtpd_sasl_type = table, as its initial response or
 * after the empty 334.
 *
 * Input: the decoded message (an exact-size copy, so ASan sees any read
 * past it).
 *
 * Properties, against an independent reading (counting NULs):
 *  - MALFORMED exactly when the message does not hold two NULs or the
 *    login between them is empty;
 *  - otherwise the three fields put back together with NULs are the
 *    message, byte for byte, each where it is, and none holds a NUL;
 *  - OTHER_AUTHZID exactly when the authzid is neither empty nor the login.
 *
 * make check builds it with t/fuzz/replay_main.c and replays
 * t/fuzz/corpus/sasl_table_plain; `make fuzz` runs it with libFuzzer
 * (doc/testing.md).
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "plain.h"

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
    if (size > 16384)
        return 0;
    unsigned char *msg = calloc(1, size ? size : 1);
    check(msg != NULL, "out of memory in the harness");
    if (size)
        memcpy(msg, data, size);
    size_t nuls = 0, first = 0, second = 0;
    for (size_t k = 0; k < size; k++) {
        if (msg[k] == 0) {
            if (nuls == 0)
                first = k;
            else if (nuls == 1)
                second = k;
            nuls++;
        }
    }
    struct plain_fields f;
    enum plain_verdict v = plain_split(msg, size, &f);
    int malformed = nuls != 2 || second == first + 1;
    check((v == PLAIN_MALFORMED) == malformed, "MALFORMED exactly for not two NULs or an empty login");
    if (!malformed) {
        check(f.authzid_len + 1 + f.login_len + 1 + f.password_len == size, "the fields cover the message");
        check(f.authzid == (const char *)msg && f.login == (const char *)msg + first + 1 &&
              f.password == (const char *)msg + second + 1, "each field where it is");
        check(memchr(f.authzid, 0, f.authzid_len) == NULL && memchr(f.login, 0, f.login_len) == NULL &&
              memchr(f.password, 0, f.password_len) == NULL, "no field holds a NUL");
        int other = first > 0 && (first != second - first - 1 || memcmp(msg, msg + first + 1, first) != 0);
        check((v == PLAIN_OTHER_AUTHZID) == other, "OTHER_AUTHZID exactly for another authzid");
    }
    free(msg);
    return 0;
}
