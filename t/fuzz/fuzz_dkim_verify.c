/*
 * Fuzz target for the dkim module's message component on the verifying
 * side (modules/dkim/dkim_msg.c), what every message from port 25 goes
 * through when dkim verification is on: its line and header splitting,
 * the From address it picks, the forged Authentication-Results detection
 * (RFC 8601 section 5: headers carrying our authserv-id), libopendkim's
 * parsing of DKIM-Signature headers and the Authentication-Results value
 * built from what it found. Key records come from a callback that answers
 * sel._domainkey.example.test with a real Ed25519 key record, fails
 * temporarily for "tempfail" selectors and says "no record" otherwise.
 *
 * Input: byte 0 holds the size of the pieces the message is fed in; the
 * rest is the message as stored (CRLF or LF line ends).
 *
 * Properties beyond "no crash, no sanitizer report, no leak":
 *  - fed whole and in pieces, the message gives the same From domain,
 *    forged list, results and Authentication-Results value;
 *  - the forged list is exactly the Authentication-Results headers whose
 *    authserv-id is ours as an RFC 8601 reader finds it: after any
 *    comments (which nest and may hold quoted-pairs, RFC 5322 3.2.2), a
 *    token (ended by white space or an RFC 2045 tspecial) or a
 *    quoted-string, compared without case. This file has its
 *    own header splitting and CFWS reader for that;
 *  - the Authentication-Results value is printable ASCII folded with
 *    CRLF + TAB, starts with our authserv-id, and its lines are at most
 *    998 octets;
 *  - the From domain (the dkim.from_domain note, log lines) has no CR,
 *    LF or '@'.
 *
 * make check builds it with t/fuzz/replay_main.c and replays
 * t/fuzz/corpus/dkim_verify; `make fuzz` runs it with libFuzzer (doc/testing.md).
 */
#include <ctype.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <openssl/evp.h>

#include "dkim_msg.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define OURS "mx.example.test"
#define MAX_FORGED 4096

static void check(int cond, const char *what)
{
    if (!cond) {
        fprintf(stderr, "property violated: %s\n", what);
        abort();
    }
}

/* The harness's state: one libopendkim configuration and key record. */
static struct {
    int ready;
    struct dkmsg_conf conf;
    char record[256];
} fz;

static int fetch(void *ctx, const char *qname, char *buf, size_t size)
{
    (void)ctx;
    if (strcasecmp(qname, "sel._domainkey.example.test") == 0) {
        snprintf(buf, size, "%s", fz.record);
        return 0;
    }
    if (strncasecmp(qname, "tempfail.", 9) == 0)
        return -1;
    return 1;
}

static void setup(void)
{
    EVP_PKEY *key = EVP_PKEY_Q_keygen(NULL, NULL, "ED25519");
    unsigned char pub[32];
    size_t publen = sizeof(pub);
    check(key != NULL && EVP_PKEY_get_raw_public_key(key, pub, &publen) == 1, "an Ed25519 key");
    char p64[64];
    EVP_EncodeBlock((unsigned char *)p64, pub, (int)publen);
    snprintf(fz.record, sizeof(fz.record), "v=DKIM1; k=ed25519; p=%s", p64);
    EVP_PKEY_free(key);
    fz.conf.authserv_id = OURS;
    fz.conf.relaxed_header = fz.conf.relaxed_body = 1;
    fz.conf.fetch = fetch;
    char err[256];
    check(dkmsg_conf_init(&fz.conf, err, sizeof(err)) == 0, "dkmsg_conf_init");
    fz.ready = 1;
}

/* What one run found. */
struct outcome {
    int rc;
    char from_domain[256];
    size_t forged[MAX_FORGED];
    size_t nforged;
    char *auth_results;
    char results[16][3][300];
    size_t nresults;
};

static void run(const uint8_t *msg, size_t len, size_t piece, struct outcome *o)
{
    memset(o, 0, sizeof(*o));
    struct dkmsg *m = dkmsg_new(&fz.conf, DKMSG_VERIFY, "fuzz");
    check(m != NULL, "dkmsg_new");
    int rc = 0;
    for (size_t i = 0; i < len && rc == 0; i += piece)
        rc = dkmsg_feed(m, (const char *)msg + i, len - i < piece ? len - i : piece);
    if (rc == 0)
        rc = dkmsg_end(m);
    o->rc = rc;
    if (rc == 0) {
        snprintf(o->from_domain, sizeof(o->from_domain), "%s", dkmsg_from_domain(m));
        o->nforged = dkmsg_forged_count(m);
        check(o->nforged <= MAX_FORGED, "more forged headers than the harness can hold");
        for (size_t i = 0; i < o->nforged; i++)
            o->forged[i] = dkmsg_forged(m, i);
        o->auth_results = dkmsg_auth_results(m) ? strdup(dkmsg_auth_results(m)) : NULL;
        o->nresults = dkmsg_result_count(m);
        check(o->nresults <= 16, "at most 16 results");
        for (size_t i = 0; i < o->nresults; i++) {
            const char *d, *s, *r;
            dkmsg_result(m, i, &d, &s, &r);
            snprintf(o->results[i][0], 300, "%s", d);
            snprintf(o->results[i][1], 300, "%s", s);
            snprintf(o->results[i][2], 300, "%s", r);
        }
    }
    dkmsg_free(m);
}

static int same(const struct outcome *a, const struct outcome *b)
{
    if (a->rc != b->rc)
        return 0;
    if (a->rc != 0)
        return 1;
    if (strcmp(a->from_domain, b->from_domain) != 0 || a->nforged != b->nforged || a->nresults != b->nresults)
        return 0;
    if (memcmp(a->forged, b->forged, a->nforged * sizeof(a->forged[0])) != 0)
        return 0;
    if ((a->auth_results == NULL) != (b->auth_results == NULL) ||
        (a->auth_results && strcmp(a->auth_results, b->auth_results) != 0))
        return 0;
    return memcmp(a->results, b->results, sizeof(a->results[0]) * a->nresults) == 0;
}

/* RFC 5322 CFWS: white space, folding and comments (nested, with
 * quoted-pairs). Returns the position after it. */
static const char *skip_cfws(const char *p, const char *end)
{
    for (;;) {
        while (p < end && (*p == ' ' || *p == '\t' || *p == '\r' || *p == '\n'))
            p++;
        if (p >= end || *p != '(')
            return p;
        int depth = 0;
        while (p < end) {
            if (*p == '\\' && p + 1 < end) {
                p += 2;
                continue;
            }
            if (*p == '(')
                depth++;
            else if (*p == ')' && --depth == 0) {
                p++;
                break;
            }
            p++;
        }
    }
}

/* Whether an Authentication-Results value's authserv-id is OURS, as an
 * RFC 8601 reader sees it. */
static int authserv_is_ours(const char *v, const char *end)
{
    /* the header is a C string from its first NUL on */
    const char *nul = memchr(v, '\0', (size_t)(end - v));
    if (nul)
        end = nul;
    const char *p = skip_cfws(v, end);
    char id[512];
    size_t n = 0;
    if (p < end && *p == '"') {
        for (p++; p < end && *p != '"' && n + 1 < sizeof(id); p++) {
            if (*p == '\\' && p + 1 < end)
                p++;
            id[n++] = *p;
        }
        if (p >= end || *p != '"')
            return 0;   /* an unterminated quoted-string is no authserv-id */
    } else {
        while (p < end && n + 1 < sizeof(id) && *p && !strchr(" \t\r\n()<>@,;:\\\"/[]?=", *p))
            id[n++] = *p++;
    }
    id[n] = '\0';
    return strcasecmp(id, OURS) == 0;
}

/* This file's own reading of the header section, as dkim_msg.c defines
 * it (dkim_msg.c's comment): lines split at LF (a CR before it dropped),
 * a line starting with white space continues the header before it, the
 * first empty line or a line that is not "name:" ends the section. Fills
 * which Authentication-Results headers (1-based among them) are ours. */
static size_t expected_forged(const uint8_t *msg, size_t len, size_t *out, size_t max)
{
    size_t nar = 0, n = 0, i = 0;
    int in_header = 0;
    const char *cur = NULL;   /* the current header's value start, when it is an A-R */
    const char *cur_end = NULL;
    while (i < len) {
        const uint8_t *nl = memchr(msg + i, '\n', len - i);
        size_t end = nl ? (size_t)(nl - msg) : len;
        size_t l = end - i;
        if (l && msg[i + l - 1] == '\r')
            l--;
        const char *line = (const char *)msg + i;
        int continued = l > 0 && (line[0] == ' ' || line[0] == '\t');
        if (continued && !in_header)
            return n;   /* a continuation line with no header before it: body */
        if (continued) {
            if (cur)
                cur_end = line + l;
        } else {
            if (cur && authserv_is_ours(cur, cur_end) && n < max)
                out[n++] = nar;
            cur = NULL;
            in_header = 0;
            if (l == 0)
                return n;
            const char *colon = memchr(line, ':', l);
            if (colon == NULL || colon == line)
                return n;
            for (const char *c = line; c < colon; c++)
                if ((unsigned char)*c <= ' ' || (unsigned char)*c >= 127)
                    return n;
            in_header = 1;
            if ((size_t)(colon - line) == 22 && strncasecmp(line, "Authentication-Results", 22) == 0) {
                nar++;
                cur = colon + 1;
                cur_end = line + l;
            }
        }
        i = nl ? end + 1 : len;
    }
    if (cur && authserv_is_ours(cur, cur_end) && n < max)
        out[n++] = nar;
    return n;
}

static void check_auth_results(const char *v)
{
    check(strncmp(v, OURS ";", strlen(OURS) + 1) == 0, "Authentication-Results starts with our authserv-id");
    size_t col = strlen("Authentication-Results: ");
    for (const char *p = v; *p; p++) {
        if (*p == '\r') {
            check(p[1] == '\n' && p[2] == '\t', "Authentication-Results folds with CRLF TAB only");
            col = 0;
            p++;
            continue;
        }
        check((*p >= 0x20 && *p < 0x7f) || *p == '\t', "Authentication-Results is printable ASCII");
        check(++col <= 998, "an Authentication-Results line is longer than 998 octets");
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1 || size > 65536)
        return 0;
    if (!fz.ready)
        setup();
    size_t piece = (size_t)data[0] + 1;
    const uint8_t *msg = data + 1;
    size_t len = size - 1;

    static struct outcome whole, pieces;
    static size_t expect[MAX_FORGED];
    run(msg, len, len ? len : 1, &whole);
    run(msg, len, piece, &pieces);
    check(same(&whole, &pieces), "fed whole and in pieces, the message gives different results");
    if (whole.rc == 0) {
        size_t n = expected_forged(msg, len, expect, MAX_FORGED);
        if (n != whole.nforged || memcmp(expect, whole.forged, n * sizeof(expect[0])) != 0) {
            fprintf(stderr, "forged: expected");
            for (size_t i = 0; i < n; i++)
                fprintf(stderr, " %zu", expect[i]);
            fprintf(stderr, "; dkim_msg.c found");
            for (size_t i = 0; i < whole.nforged; i++)
                fprintf(stderr, " %zu", whole.forged[i]);
            fprintf(stderr, "\n");
        }
        check(n == whole.nforged && memcmp(expect, whole.forged, n * sizeof(expect[0])) == 0,
              "the forged Authentication-Results are not exactly those whose authserv-id is ours");
        check(whole.auth_results != NULL, "verifying gives an Authentication-Results value");
        check_auth_results(whole.auth_results);
        for (const char *d = whole.from_domain; *d; d++)
            check(*d != '\r' && *d != '\n' && *d != '@', "the From domain (a note, a log line) has no CR, LF or @");
    }
    free(whole.auth_results);
    free(pieces.auth_results);
    return 0;
}
