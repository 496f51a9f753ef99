/*
 * Fuzz target for the SMTP client's SCRAM-SHA-256 messages
 * (core/deliver/smtp_scram.c): the server-first and server-final messages
 * a remote server (any MX we relay through with AUTH) sends us.
 *
 * Input: byte 0 is the user name's length (taken from the input's end,
 * '=' and ',' included); the rest up to the first "\n--\n" is the
 * server-first message, what follows it the server-final message.
 *
 * Properties beyond "no crash, no sanitizer report":
 *  - the client-first message is "n,,n=" + the escaped name + ",r=NONCE";
 *  - a server-first that parses begins with r= carrying our nonce and more,
 *    has no m= first, holds no NUL, is within SCRAM_MESSAGE_MAX, and its
 *    iteration count is 1..SCRAM_ITERATIONS_MAX;
 *  - then the client-final message is "c=biws,r=" + the whole server nonce
 *    + ",p=" + 44 base64 characters (never a cut nonce);
 *  - a server-final is accepted only when it starts with "v=" (a signature
 *    a fuzzer finds would be a SHA-256 break: it never is accepted in
 *    practice, so acceptance is checked against a second computation);
 *  - a server-final e= error comes back printable.
 * PBKDF2 runs only for counts up to 4096 (the parse is fuzzed for all), so
 * an input cannot make one run take seconds.
 *
 * make check builds it with t/fuzz/replay_main.c and replays
 * t/fuzz/corpus/smtp_scram; `make fuzz` runs it with libFuzzer (doc/testing.md).
 */
#include "config.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "deliver/smtp_scram.h"
#include "lib/buf.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define NONCE "fyko+d2lbbFgONRv9qkxdawL"

static void check(int cond, const char *what)
{
    if (!cond) {
        fprintf(stderr, "property violated: %s\n", what);
        abort();
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1 || size > 3 * SCRAM_MESSAGE_MAX)
        return 0;
    size_t ulen = data[0];
    data++;
    size--;
    if (ulen > size)
        ulen = size;
    char *user = malloc(ulen + 1);
    check(user != NULL, "out of memory in the harness");
    size_t u = 0;
    for (size_t k = size - ulen; k < size; k++)
        if (data[k] != '\0')
            user[u++] = (char)data[k];
    user[u] = '\0';
    size -= ulen;
    /* exact-size copies, so ASan sees any read past them */
    const uint8_t *sep = NULL;
    for (size_t k = 0; k + 4 <= size; k++)
        if (memcmp(data + k, "\n--\n", 4) == 0) {
            sep = data + k;
            break;
        }
    size_t flen = sep ? (size_t)(sep - data) : size;
    size_t glen = sep ? size - flen - 4 : 0;
    char *first = malloc(flen ? flen : 1), *final = malloc(glen ? glen : 1);
    check(first && final, "out of memory in the harness");
    memcpy(first, data, flen);
    if (glen)
        memcpy(final, sep + 4, glen);

    struct scram_client s;
    struct buf out = BUF_INIT;
    const char *why = NULL;
    if (scram_client_first(&s, user, NONCE, &out, &why) != 0) {
        check(strlen(user) > SCRAM_MESSAGE_MAX, "only an over-long user name is refused");
        goto done;
    }
    check(strncmp(out.data, "n,,n=", 5) == 0 && out.len >= 5 + strlen(",r=" NONCE) &&
          strcmp(out.data + out.len - strlen(",r=" NONCE), ",r=" NONCE) == 0, "client-first's shape");
    for (size_t k = 5; k < out.len - strlen(",r=" NONCE); k++)
        check(out.data[k] != ',', "a ',' in the name is escaped");
    buf_reset(&out);
    struct scram_server_first sf;
    if (scram_parse_server_first(&s, first, flen, &sf, &why) != 0) {
        check(why != NULL && *why, "a refusal says why");
        goto done;
    }
    check(flen <= SCRAM_MESSAGE_MAX && memchr(first, '\0', flen) == NULL, "bounded, no NUL");
    check(flen > 2 && memcmp(first, "r=" NONCE, strlen("r=" NONCE)) == 0, "r= with our nonce comes first");
    check(sf.nonce == first + 2 && sf.nonce_len > strlen(NONCE), "the server adds to our nonce");
    check(sf.iterations >= 1 && sf.iterations <= SCRAM_ITERATIONS_MAX, "iterations within bounds");
    check(sf.salt_len > 0, "a salt");
    long iterations = sf.iterations;
    size_t nonce_len = sf.nonce_len;
    scram_server_first_free(&sf);
    if (iterations > 4096)
        goto done;
    int rc = scram_client_final(&s, "pencil", first, flen, &out, &why);
    check(rc == 0, "what parses is answered");
    check(out.len == 9 + nonce_len + 3 + 44 && memcmp(out.data, "c=biws,r=", 9) == 0 &&
          memcmp(out.data + 9, first + 2, nonce_len) == 0 && memcmp(out.data + 9 + nonce_len, ",p=", 3) == 0,
          "client-final carries the whole server nonce and a proof");
    char err[300];
    if (scram_server_final(&s, final, glen, &why, err, sizeof(err)) == 0) {
        check(glen > 2 && memcmp(final, "v=", 2) == 0, "only v= is accepted");
    } else if (glen >= 2 && memcmp(final, "e=", 2) == 0) {
        check(why == err, "e= is reported in errbuf");
        for (const char *p = err; *p; p++)
            check(*p >= 0x20 && *p < 0x7f, "e= comes back printable");
    }
done:
    scram_client_free(&s);
    buf_free(&out);
    free(user);
    free(first);
    free(final);
    return 0;
}
