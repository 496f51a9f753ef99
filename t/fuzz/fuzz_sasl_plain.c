/*
 * Fuzz target for the PLAIN message's split, petrel_sasl_plain_split()
 * (core/module/sasl_plain.c): the decoded AUTH PLAIN response any client
 * sends, as its initial response or after the empty 334, on a port with
 * smtpd's built-in PLAIN (smtpd/auth.c) or the sasl module's table
 * back-end (modules/sasl/table.c), which both call it.
 *
 * Input: the decoded message (an exact-size copy, so ASan sees any read
 * past it).
 *
 * Properties, against an independent reading (counting NULs):
 *  - MALFORMED exactly when the message does not hold two NULs or the
 *    login between them is empty, and then the fields are all zero;
 *  - otherwise the three fields put back together with NULs are the
 *    message, byte for byte, each where it is, and none holds a NUL;
 *  - OTHER_AUTHZID exactly when the authzid is neither empty nor the login.
 *
 * make check builds it with t/fuzz/replay_main.c and replays
 * t/fuzz/corpus/sasl_plain; `make fuzz` runs it with libFuzzer (doc/testing.md).
 */
#include "config.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <petrel/sasl.h>

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
    petrel_sasl_plain p;
    memset(&p, 0xa5, sizeof(p));   /* what the split does not set shows */
    petrel_sasl_plain_verdict v = petrel_sasl_plain_split(msg, size, &p);
    int malformed = nuls != 2 || second == first + 1;
    check((v == PETREL_SASL_PLAIN_MALFORMED) == malformed, "MALFORMED exactly for not two NULs or an empty login");
    if (malformed) {
        check(p.authzid == NULL && p.authcid == NULL && p.password == NULL && p.authzid_len == 0 &&
              p.authcid_len == 0 && p.password_len == 0, "a malformed message leaves the fields zero");
    } else {
        check(p.authzid_len + 1 + p.authcid_len + 1 + p.password_len == size, "the fields cover the message");
        check(p.authzid == (const char *)msg && p.authcid == (const char *)msg + first + 1 &&
              p.password == (const char *)msg + second + 1, "each field where it is");
        check(memchr(p.authzid, 0, p.authzid_len) == NULL && memchr(p.authcid, 0, p.authcid_len) == NULL &&
              memchr(p.password, 0, p.password_len) == NULL, "no field holds a NUL");
        int other = first > 0 && (first != second - first - 1 || memcmp(msg, msg + first + 1, first) != 0);
        check((v == PETREL_SASL_PLAIN_OTHER_AUTHZID) == other, "OTHER_AUTHZID exactly for another authzid");
    }
    free(msg);
    return 0;
}
