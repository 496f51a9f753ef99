/*
 * Fuzz target for the dnsbl module's own parsing of what comes from
 * outside (modules/dnsbl/dnsbl_util.c): the DNS names it builds from a
 * client's HELO name or sender domain (dnsbl_domain_query), the reply
 * template expanded with a list's TXT record and the client's names
 * (dnsbl_template_expand, Postfix's $rbl_* and ${name?text} forms), the
 * reply split into code, enhanced code and text (dnsbl_reply_split), and
 * an A record matched against a filter (dnsbl_filter_match).
 *
 * Input: NUL-separated fields: the template (an administrator's text, so
 * it is fuzzed too), the TXT record, the client name, the HELO name, the
 * sender, the recipient, an A record, a filter.
 *
 * Properties beyond "no crash, no sanitizer report, no leak":
 *  - a query name is NULL or at most 253 bytes of lower-case letters,
 *    digits, '-', '_' and dots with no empty label, ending with the zone;
 *  - a template that dnsbl_template_check accepts always expands;
 *  - a printable-ASCII template expands to printable ASCII, whatever the
 *    TXT record and the client's names hold (no CR or LF can reach the
 *    SMTP reply);
 *  - a reply that splits has a code of 4xx or 5xx, an enhanced code
 *    x.y.z of the same class, and non-empty text that is a suffix of it.
 *
 * make check builds it with t/fuzz/replay_main.c and replays
 * t/fuzz/corpus/dnsbl_reply; `make fuzz` runs it with libFuzzer (doc/testing.md).
 */
#include <ctype.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <petrel/plugin.h>

#include "dnsbl.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define ZONE "zen.example.test"

static void check(int cond, const char *what)
{
    if (!cond) {
        fprintf(stderr, "property violated: %s\n", what);
        abort();
    }
}

static void check_query(const char *q)
{
    if (q == NULL)
        return;
    size_t n = strlen(q), zn = strlen(ZONE), label = 0;
    check(n <= 253, "a query name is at most 253 bytes");
    check(n > zn + 1 && strcmp(q + n - zn, ZONE) == 0 && q[n - zn - 1] == '.', "a query name ends with .zone");
    for (const char *p = q; *p; p++) {
        if (*p == '.') {
            check(label > 0, "a query name has no empty label");
            label = 0;
        } else {
            check(islower((unsigned char)*p) || isdigit((unsigned char)*p) || *p == '-' || *p == '_',
                  "a query name has letters, digits, '-' and '_' only, in lower case");
            label++;
        }
    }
    check(label > 0, "a query name does not end with a dot");
}

static int printable(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)s[i] < 0x20 || (unsigned char)s[i] >= 0x7f)
            return 0;
    return 1;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > 16384)
        return 0;
    char *copy = malloc(size + 1);
    check(copy != NULL, "out of memory in the harness");
    memcpy(copy, data, size);
    copy[size] = '\0';
    const char *field[8];
    size_t nfield = 0;
    for (char *p = copy; nfield < 8;) {
        field[nfield++] = p;
        char *end = memchr(p, '\0', (size_t)(copy + size - p));
        if (end == NULL || end == copy + size)
            break;
        p = end + 1;
    }
    for (size_t i = nfield; i < 8; i++)
        field[i] = "";
    const char *template_text = field[0];

    petrel_pool *pool = petrel_pool_create(4096);
    check(pool != NULL, "a pool");

    check_query(dnsbl_domain_query(field[3], ZONE, pool));
    check_query(dnsbl_domain_query(field[4], ZONE, pool));
    check_query(dnsbl_domain_query(field[5], ZONE, pool));

    struct dnsbl_reply_facts facts = {
        .code = 554, .domain = ZONE, .reason = field[1], .what = "Client host", .class_name = "reject",
        .client_address = "192.0.2.1", .client_name = field[2], .reverse_client_name = field[2],
        .helo_name = field[3], .sender = field[4], .recipient = field[5],
    };
    const char *err = dnsbl_template_check(template_text, pool);
    char *reply = dnsbl_template_expand(template_text, &facts, pool);
    if (err == NULL)
        check(reply != NULL, "a template the check accepts expands");
    if (reply && printable(template_text, strlen(template_text)))
        check(printable(reply, strlen(reply)), "a printable template expands to printable ASCII");
    if (reply) {
        int code = 0;
        char enhanced[16];
        const char *text = NULL;
        if (dnsbl_reply_split(reply, &code, enhanced, sizeof(enhanced), &text) == 0) {
            check(code >= 400 && code <= 599, "the reply code is 4xx or 5xx");
            check(enhanced[0] == '0' + code / 100 && enhanced[1] == '.', "the enhanced code has the reply's class");
            int dots = 0, digits = 0;
            for (const char *p = enhanced + 2; *p; p++) {
                if (*p == '.') {
                    check(digits > 0, "the enhanced code has no empty part");
                    dots++;
                    digits = 0;
                } else {
                    check(isdigit((unsigned char)*p) && ++digits <= 3, "the enhanced code is x.y.z");
                }
            }
            check(dots == 1 && digits > 0, "the enhanced code is x.y.z");
            check(text != NULL && *text != '\0', "the reply text is not empty");
            size_t tl = strlen(text), rl = strlen(reply);
            check(strcmp(text, "Service unavailable") == 0 || (tl <= rl && strcmp(reply + rl - tl, text) == 0),
                  "the reply text is the reply's end");
        }
    }

    struct dnsbl_filter filter;
    if (dnsbl_filter_parse(field[7], &filter, pool) == NULL)
        (void)dnsbl_filter_match(&filter, field[6]);
    struct dnsbl_list list;
    (void)dnsbl_list_parse(field[7], 1, &list, pool);

    petrel_pool_destroy(pool);
    free(copy);
    return 0;
}
