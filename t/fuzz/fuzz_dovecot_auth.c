/*
 * Fuzz target for the lines a Dovecot auth server sends the sasl module
 * (modules/sasl/dovecot_proto.c): VERSION, MECH, SPID, CUID, COOKIE, DONE
 * in the handshake, then CONT, OK and FAIL for each request. The server is
 * a configured peer (smtpd_sasl_path), but what it says reaches SMTP
 * replies, EHLO's AUTH keyword and the logs.
 *
 * Input: lines separated by LF, each parsed on its own (an exact-size
 * copy, so ASan sees any read past it).
 *
 * Properties beyond "no crash, no sanitizer report":
 *  - every number taken (VERSION, SPID, CUID, request id) prints back as
 *    the very field it came from: plain decimal, no sign, no space, no
 *    leading zero, no overflow (dovecot_decimal checked alone too);
 *  - a mechanism name is 1-20 of A-Z 0-9 - _;
 *  - a user name, a reason and a challenge hold no control character;
 *  - a line with a NUL byte is refused.
 *
 * make check builds it with t/fuzz/replay_main.c and replays
 * t/fuzz/corpus/dovecot_auth; `make fuzz` runs it with libFuzzer (doc/testing.md).
 */
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dovecot_proto.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check(int cond, const char *what)
{
    if (!cond) {
        fprintf(stderr, "property violated: %s\n", what);
        abort();
    }
}

/* The n-th TAB-separated field of the original line (a malloc'd copy). */
static char *field(const char *line, size_t len, int n)
{
    const char *p = line, *end = line + len;
    for (; n > 0; n--) {
        const char *tab = memchr(p, '\t', (size_t)(end - p));
        check(tab != NULL, "a parsed number has its field");
        p = tab + 1;
    }
    const char *tab = memchr(p, '\t', (size_t)(end - p));
    size_t l = tab ? (size_t)(tab - p) : (size_t)(end - p);
    char *f = malloc(l + 1);
    check(f != NULL, "out of memory in the harness");
    memcpy(f, p, l);
    f[l] = '\0';
    return f;
}

static void same_number(const char *line, size_t len, int n, unsigned long v, const char *what)
{
    char *f = field(line, len, n), printed[32];
    snprintf(printed, sizeof(printed), "%lu", v);
    check(strcmp(f, printed) == 0, what);
    free(f);
}

static int printable(const char *s)
{
    for (; *s; s++)
        if ((unsigned char)*s < 0x20 || *s == 0x7f)
            return 0;
    return 1;
}

static void one_line(const uint8_t *data, size_t len)
{
    char *line = malloc(len + 1), *orig = malloc(len + 1);
    check(line && orig, "out of memory in the harness");
    memcpy(line, data, len);
    memcpy(orig, data, len);
    orig[len] = '\0';
    struct dc_reply r;
    const char *why = NULL;
    if (dovecot_parse_line(line, len, &r, &why) != 0) {
        check(why != NULL && *why, "a refusal says why");
    } else {
        check(memchr(orig, '\0', len) == NULL, "a line with a NUL is refused");
        switch (r.kind) {
        case DC_REPLY_VERSION:
            same_number(orig, len, 1, r.major, "VERSION's major prints back as its field");
            same_number(orig, len, 2, r.minor, "VERSION's minor prints back as its field");
            break;
        case DC_REPLY_SPID:
            check(r.number >= 1 && r.number <= INT_MAX, "a pid is 1..INT_MAX");
            same_number(orig, len, 1, r.number, "SPID's pid prints back as its field");
            break;
        case DC_REPLY_CUID:
            same_number(orig, len, 1, r.number, "CUID prints back as its field");
            break;
        case DC_REPLY_MECH: {
            size_t n = strlen(r.mech);
            check(n >= 1 && n <= 20 && strspn(r.mech, "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_") == n,
                  "a mechanism name is RFC 4422's");
            break;
        }
        case DC_REPLY_CONT:
        case DC_REPLY_OK:
        case DC_REPLY_FAIL:
            same_number(orig, len, 1, r.id, "a request id prints back as its field");
            if (r.data)
                check(printable(r.data), "a challenge holds no control character");
            if (r.user)
                check(printable(r.user), "a user name holds no control character");
            if (r.reason)
                check(printable(r.reason), "a reason holds no control character");
            break;
        default:
            break;
        }
    }
    /* the number reader alone, over the whole line */
    unsigned long v;
    if (memchr(orig, '\0', len) == NULL && dovecot_decimal(orig, UINT_MAX, &v) == 0) {
        char printed[32];
        snprintf(printed, sizeof(printed), "%lu", v);
        check(strcmp(printed, orig) == 0 && v <= UINT_MAX, "dovecot_decimal takes only plain decimals");
    }
    free(line);
    free(orig);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > 65536)
        return 0;
    size_t start = 0;
    for (size_t i = 0; i <= size; i++) {
        if (i == size || data[i] == '\n') {
            one_line(data + start, i - start);
            start = i + 1;
        }
    }
    return 0;
}
