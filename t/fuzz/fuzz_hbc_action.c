/*
 * Fuzz target for the header_checks(5) action language (core/mail/hbc.c):
 * what a header_checks, body_checks or smtp_header_checks table returns,
 * split into its command and text, the RFC 3463 code a REJECT may start
 * with, and the REJECT text as the client gets it. A table's result can
 * hold text the client wrote (a regexp's $1), so all of it is untrusted.
 *
 * Input: the table's result, as a C string (a NUL byte ends it, as it ends
 * a table's value).
 *
 * Properties, beyond "no crash, no leak, no hang":
 *  - the command word is the result's first word (no space or tab in it),
 *    the text is the rest without its leading white space, and the command
 *    is a header_checks(5) command exactly when the word is one of them,
 *    case-insensitively;
 *  - a known command written back as its name and the text parses to the
 *    same command and text;
 *  - a code split from the text is a valid x.y.z of class 2, 4 or 5 at its
 *    start, else the default; the rest is a suffix of the text with no
 *    leading white space;
 *  - the REJECT text for the client is at most HBC_REPLY_TEXT_MAX bytes of
 *    printable ASCII, the text's own bytes where those were printable.
 *
 * make check builds it with t/fuzz/replay_main.c and replays
 * t/fuzz/corpus/hbc_action; `make fuzz` runs it with libFuzzer
 * (doc/testing.md).
 */
#include "config.h"

#include <ctype.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <petrel/pool.h>

#include "mail/hbc.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check(int cond, const char *what)
{
    if (!cond) {
        fprintf(stderr, "property violated: %s\n", what);
        abort();
    }
}

static const char *const words[] = { "DUNNO", "OK",   "REJECT",  "WARN",    "INFO",     "HOLD",  "DISCARD", "FILTER",
                                     "PASS",  "PREPEND", "REPLACE", "REDIRECT", "BCC", "STRIP", "IGNORE" };

static int is_command_word(const char *w, size_t len)
{
    for (size_t i = 0; i < sizeof(words) / sizeof(words[0]); i++)
        if (strlen(words[i]) == len && strncasecmp(w, words[i], len) == 0)
            return 1;
    return 0;
}

static int valid_dsn(const char *d)
{
    if ((d[0] != '2' && d[0] != '4' && d[0] != '5') || d[1] != '.')
        return 0;
    const char *p = d + 2;
    size_t n = strspn(p, "0123456789");
    if (n < 1 || n > 3 || p[n] != '.')
        return 0;
    p += n + 1;
    n = strspn(p, "0123456789");
    return n >= 1 && n <= 3 && p[n] == '\0';
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *value = malloc(size + 1);
    memcpy(value, data, size);
    value[size] = '\0';
    petrel_pool *pool = petrel_pool_create(0);

    struct hbc_action a;
    hbc_parse_action(value, &a);
    check(a.word == value, "the command word starts the result");
    check(a.word_len == strcspn(value, " \t"), "the command word ends at the first space or tab");
    check(a.text >= value + a.word_len && a.text <= value + strlen(value), "the text is in the result");
    check(!isspace((unsigned char)*a.text), "the text has no leading white space");
    for (const char *p = value + a.word_len; p < a.text; p++)
        check(isspace((unsigned char)*p), "only white space between the word and the text");
    check((a.command != HBC_UNKNOWN) == is_command_word(a.word, a.word_len),
          "a command exactly when the word is a header_checks(5) command");

    if (a.command != HBC_UNKNOWN) {
        const char *again_value = petrel_pool_printf(pool, "%s %s", hbc_command_name(a.command), a.text);
        struct hbc_action again;
        hbc_parse_action(again_value, &again);
        check(again.command == a.command, "a command written back by name parses to itself");
        check(strcmp(again.text, a.text) == 0 || (*a.text == '\0' && *again.text == '\0'),
              "and keeps its text");
    }

    const char *dsn = NULL, *rest = NULL;
    hbc_dsn_split("5.7.1", a.text, pool, &dsn, &rest);
    check(dsn != NULL && rest != NULL, "a code and a rest");
    check(valid_dsn(dsn), "the code is x.y.z of class 2, 4 or 5");
    check(strcmp(dsn, "5.7.1") == 0 || strncmp(a.text, dsn, strlen(dsn)) == 0,
          "the code is the default or the text's own start");
    size_t tlen = strlen(a.text), rlen = strlen(rest);
    check(rlen <= tlen && strcmp(a.text + tlen - rlen, rest) == 0, "the rest is a suffix of the text");
    check(!isspace((unsigned char)*rest), "the rest has no leading white space");

    const char *reply = hbc_reply_text(pool, rest);
    size_t plen = strlen(reply);
    check(plen <= HBC_REPLY_TEXT_MAX, "the reply text is bounded");
    check(plen == (rlen < HBC_REPLY_TEXT_MAX ? rlen : HBC_REPLY_TEXT_MAX), "the reply text keeps every byte it can");
    for (size_t i = 0; i < plen; i++) {
        unsigned char c = (unsigned char)reply[i];
        check(c >= ' ' && c < 0x7f, "the reply text is printable ASCII (no line break reaches the client)");
        check(c == (unsigned char)rest[i] || c == '?', "printable bytes are kept, others are '?'");
    }

    petrel_pool_destroy(pool);
    free(value);
    return 0;
}
