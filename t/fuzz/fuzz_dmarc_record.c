/*
 * Fuzz target for the dmarc module's evaluation (modules/dmarc/dmarc_eval.c
 * over libopendmarc) with the DNS answers a sender chooses: the `_dmarc`
 * TXT records of the From domain and of its organizational domain, which
 * whoever runs the sender's DNS writes. The From domain itself comes out
 * of the module's From parser (dmarc_from.c), as in the module.
 *
 * Input: NUL-separated fields: the From header value, then the TXT
 * records of _dmarc.FROM (lines of one field, '\n'-separated), the TXT
 * records of the organizational domain, the SPF domain and result, a
 * DKIM domain and result; byte 0 picks the DNS status of each answer and
 * the sampling percentage.
 *
 * Properties beyond "no crash, no sanitizer report, no leak":
 *  - the result is one of RFC 7489's (pass, fail, none, temperror,
 *    permerror); a disposition other than none only with fail, and pass
 *    only with an aligned identifier;
 *  - the Authentication-Results text has no control character (the From
 *    domain may hold UTF-8 bytes: dmarc_from.c keeps them, see
 *    doc/fuzzing.md);
 *  - at most two queries are asked, each "_dmarc." + a domain.
 *
 * make check builds it with t/fuzz/replay_main.c and replays
 * t/fuzz/corpus/dmarc_record; `make fuzz` runs it with libFuzzer (doc/testing.md).
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dmarc_eval.h"
#include "dmarc_from.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define MAX_RECORDS 8

static void check(int cond, const char *what)
{
    if (!cond) {
        fprintf(stderr, "property violated: %s\n", what);
        abort();
    }
}

/* The harness's state: libopendmarc is set up once. */
static struct {
    int ready;
} fz;

static size_t split_records(char *text, const char **out)
{
    size_t n = 0;
    for (char *p = text; p && n < MAX_RECORDS;) {
        out[n++] = p;
        char *nl = strchr(p, '\n');
        if (nl)
            *nl++ = '\0';
        p = nl;
    }
    return n;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1 || size > 8192)
        return 0;
    if (!fz.ready) {
        char err[256];
        check(dmarc_library_init(NULL, err, sizeof(err)) == 0, "dmarc_library_init");
        fz.ready = 1;
    }
    unsigned flags = data[0];
    char *copy = malloc(size);
    check(copy != NULL, "out of memory in the harness");
    memcpy(copy, data + 1, size - 1);
    copy[size - 1] = '\0';
    const char *field[7];
    size_t nfield = 0;
    for (char *p = copy; nfield < 7;) {
        field[nfield++] = p;
        char *end = memchr(p, '\0', (size_t)(copy + size - 1 - p));
        if (end == NULL || end >= copy + size - 1)
            break;
        p = end + 1;
    }
    for (size_t i = nfield; i < 7; i++)
        field[i] = "";

    struct dmarc_from from;
    memset(&from, 0, sizeof(from));
    dmarc_from_parse(&from, field[0]);
    const char *domain = from.ndomains > 0 ? from.domains[0] : "";

    struct dmarc_eval *e = dmarc_eval_new("192.0.2.1", domain);
    check(e != NULL, "dmarc_eval_new");
    char *answers[2] = { strdup(field[1]), strdup(field[2]) };
    check(answers[0] && answers[1], "out of memory in the harness");
    const char *q;
    int asked = 0;
    while ((q = dmarc_eval_next_query(e)) != NULL) {
        check(asked < 2, "at most two queries");
        check(strncmp(q, "_dmarc.", 7) == 0 && q[7] != '\0', "a query is _dmarc.DOMAIN");
        const char *records[MAX_RECORDS];
        size_t n = split_records(answers[asked], records);
        unsigned st = (flags >> (2 * asked)) & 3;
        enum dmarc_dns_status status = st == 1 ? DMARC_DNS_NOTFOUND : st == 2 ? DMARC_DNS_TEMPFAIL : DMARC_DNS_OK;
        dmarc_eval_answer(e, status, records, status == DMARC_DNS_OK ? n : 0);
        asked++;
    }
    dmarc_eval_spf(e, field[3], field[4], (flags >> 4) & 1);
    dmarc_eval_dkim(e, field[5], "sel", field[6]);
    struct dmarc_outcome o;
    dmarc_eval_decide(e, (flags >> 5) * 14, &o);
    check(o.result != NULL, "a result");
    check(strcmp(o.result, "pass") == 0 || strcmp(o.result, "fail") == 0 || strcmp(o.result, "none") == 0 ||
          strcmp(o.result, "temperror") == 0 || strcmp(o.result, "permerror") == 0, "an RFC 7489 result");
    check(o.disposition == DMARC_DISP_NONE || strcmp(o.result, "fail") == 0, "a disposition only with fail");
    check(strcmp(o.result, "pass") != 0 || o.dkim_aligned || o.spf_aligned, "pass only when aligned");
    char ar[1024];
    dmarc_eval_auth_results(e, &o, ar, sizeof(ar));
    for (const char *p = ar; *p; p++)
        check((unsigned char)*p >= 0x20 && *p != 0x7f, "the Authentication-Results text has no control character");
    dmarc_eval_free(e);
    free(answers[0]);
    free(answers[1]);
    free(copy);
    return 0;
}
