/*
 * Streaming DKIM signing and verification with libopendkim (dkim_msg.h).
 *
 * The header section is kept (bounded: 1 MiB, as headers go) because the
 * signing keys depend on the From header, which may come last; the body
 * goes to libopendkim chunk by chunk as it arrives and is never kept, so a
 * 20 MiB message costs what its headers cost. Lines are split here: a
 * header is complete when the next line does not start with white space;
 * the first empty line ends the section (a line that is not a header ends
 * it too, and is body).
 *
 * Signing is ours (dkim_sign.c: OpenSSL over keys decoded once and kept
 * in the configuration's key cache), one signer per key chosen from the
 * SigningTable; it hashes the body as it streams and signs at the end,
 * over the header section fed here, byte for byte (the module feeds the
 * message as stored, so simple canonicalization sees what was sent). The
 * usual headers are oversigned (listed once more than present, RFC 6376
 * 8.15) so that nobody can add a second From or Subject.
 *
 * Verification is libopendkim's: one DKIM_LIB per configuration, one
 * verifying handle per message. Keys are fetched through our callback
 * (dkim_set_key_lookup), never through libopendkim's resolver, so the
 * caller decides which DNS answers (dns_resolver).
 */
#include <ctype.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/types.h>
#include <time.h>

#include <opendkim/dkim.h>

#include "dkim_msg.h"
#include "dkim_sign.h"

#define MAX_HEADER_SECTION (1024 * 1024)
#define MAX_SIGNATURES 8
#define MAX_RESULTS 16
/* What ends an unquoted authserv-id: white space and RFC 2045's tspecials. */
#define AUTHSERV_ID_END " \t\r\n()<>@,;:\\\"/[]?="

struct dkmsg_lib {
    DKIM_LIB *lib;
    struct dk_key_cache *keys;
};

/* RFC 6376 5.4.1's list, each oversigned once. */
static const char *const oversign[] = {
    "from", "reply-to", "subject", "date", "to", "cc", "message-id", "in-reply-to", "references",
    "mime-version", "content-type", "content-transfer-encoding", NULL,
};

struct line_buf {
    char *data;
    size_t len, cap;
};

struct verify_result {
    char domain[256];
    char selector[64];
    char result[16];
};

/* What our key lookup answered for a signature: libopendkim 2.11 does not
 * tell a failed lookup (TRYAGAIN) from a bad signature on the signature
 * itself (no flags, error "unknown", dkim_eom says BADSIG). */
struct key_fetch {
    DKIM_SIGINFO *sig;
    int rc;
};

struct dkmsg {
    const struct dkmsg_conf *conf;
    void *fetch_ctx;           /* this message's, else the configuration's */
    int modes;
    char id[64];
    char error[256];
    int failed;
    int in_body;
    int seen_cr;               /* the last byte fed was CR (a CRLF split across chunks) */
    struct line_buf line;      /* the line being read */
    struct line_buf header;    /* the header being assembled (folded lines) */
    char **headers;            /* the header section, each without its final CRLF */
    size_t nheaders, header_bytes;
    char from_domain[256];
    char from_addr[512];
    struct dksign *signers[MAX_SIGNATURES];
    struct dk_choice choices[MAX_SIGNATURES];
    size_t nsigners;
    DKIM *verifier;
    int verify_nosig;
    struct key_fetch fetches[MAX_RESULTS];
    size_t nfetches;
    DKIM_STAT verify_status;   /* dkim_eom's */
    char *signatures[MAX_SIGNATURES];
    size_t nsignatures;
    char *auth_results;
    struct verify_result results[MAX_RESULTS];
    size_t nresults;
    size_t *forged;
    size_t nforged;
};

static void fail(struct dkmsg *m, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void fail(struct dkmsg *m, const char *fmt, ...)
{
    if (m->failed)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(m->error, sizeof(m->error), fmt, ap);
    va_end(ap);
    m->failed = 1;
}

static int buf_add(struct line_buf *b, const char *data, size_t len, size_t limit)
{
    if (b->len + len + 1 > limit)
        return -1;
    if (b->len + len + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->len + len + 1)
            cap *= 2;
        char *d = realloc(b->data, cap);
        if (d == NULL)
            return -1;
        b->data = d;
        b->cap = cap;
    }
    memcpy(b->data + b->len, data, len);
    b->len += len;
    b->data[b->len] = '\0';
    return 0;
}

/* ------------------------------------------------------------------ */
/* the library                                                          */

static DKIM_CBSTAT key_lookup(DKIM *dkim, DKIM_SIGINFO *sig, u_char *buf, size_t buflen)
{
    struct dkmsg *m = dkim_get_user_context(dkim);
    const char *sel = (const char *)dkim_sig_getselector(sig);
    const char *dom = (const char *)dkim_sig_getdomain(sig);
    if (m == NULL || m->conf->fetch == NULL || sel == NULL || dom == NULL)
        return DKIM_CBSTAT_ERROR;
    char qname[DKMSG_KEY_NAME_MAX];
    if ((size_t)snprintf(qname, sizeof(qname), "%s._domainkey.%s", sel, dom) >= sizeof(qname))
        return DKIM_CBSTAT_NOTFOUND;
    int rc = m->conf->fetch(m->fetch_ctx ? m->fetch_ctx : m->conf->fetch_ctx, qname, (char *)buf, buflen);
    if (m->nfetches < MAX_RESULTS) {
        m->fetches[m->nfetches].sig = sig;
        m->fetches[m->nfetches].rc = rc;
        m->nfetches++;
    }
    return rc == 0 ? DKIM_CBSTAT_CONTINUE : rc == 1 ? DKIM_CBSTAT_NOTFOUND : DKIM_CBSTAT_TRYAGAIN;
}

int dkmsg_conf_init(struct dkmsg_conf *c, char *err, size_t errlen)
{
    c->lib = calloc(1, sizeof(*c->lib));
    if (c->lib == NULL || (c->lib->lib = dkim_init(NULL, NULL)) == NULL) {
        snprintf(err, errlen, "libopendkim: dkim_init failed");
        free(c->lib);
        c->lib = NULL;
        return -1;
    }
    if ((c->lib->keys = dk_key_cache_new()) == NULL) {
        snprintf(err, errlen, "out of memory");
        dkmsg_conf_free(c);
        return -1;
    }
    DKIM_LIB *lib = c->lib->lib;
    if (!dkim_libfeature(lib, DKIM_FEATURE_ED25519)) {
        snprintf(err, errlen, "this libopendkim cannot verify Ed25519 signatures (2.11 or later is needed)");
        dkmsg_conf_free(c);
        return -1;
    }
    u_int flags = DKIM_LIBFLAGS_FIXCRLF | DKIM_LIBFLAGS_BADSIGHANDLES;
    if (dkim_options(lib, DKIM_OP_SETOPT, DKIM_OPTS_FLAGS, &flags, sizeof(flags)) != DKIM_STAT_OK ||
        dkim_set_key_lookup(lib, key_lookup) != DKIM_STAT_OK) {
        snprintf(err, errlen, "libopendkim refused our options");
        dkmsg_conf_free(c);
        return -1;
    }
    return 0;
}

void dkmsg_conf_free(struct dkmsg_conf *c)
{
    if (c->lib) {
        if (c->lib->lib)
            dkim_close(c->lib->lib);
        dk_key_cache_free(c->lib->keys);
        free(c->lib);
        c->lib = NULL;
    }
}

/* ------------------------------------------------------------------ */
/* reading the message                                                  */

struct dkmsg *dkmsg_new(const struct dkmsg_conf *c, int modes, const char *id)
{
    struct dkmsg *m = calloc(1, sizeof(*m));
    if (m == NULL)
        return NULL;
    m->conf = c;
    m->modes = modes;
    snprintf(m->id, sizeof(m->id), "%s", id && *id ? id : "message");
    return m;
}

void dkmsg_set_fetch_ctx(struct dkmsg *m, void *ctx)
{
    m->fetch_ctx = ctx;
}

const char *dkmsg_error(const struct dkmsg *m)
{
    return m->error;
}

/* The address in a From value: inside <> if there are any, else the first
 * word with an @; comments and quoted names are skipped roughly, which is
 * enough to choose a key (DMARC will parse it properly). */
static void parse_from(const char *value, char *addr, size_t size)
{
    const char *lt = strrchr(value, '<');
    const char *start, *end;
    if (lt && strchr(lt, '>')) {
        start = lt + 1;
        end = strchr(lt, '>');
    } else {
        const char *at = strchr(value, '@');
        if (at == NULL) {
            addr[0] = '\0';
            return;
        }
        start = at;
        while (start > value && !isspace((unsigned char)start[-1]) && start[-1] != '"' && start[-1] != ')')
            start--;
        end = at;
        while (*end && !isspace((unsigned char)*end) && *end != '(' && *end != ',')
            end++;
    }
    /* Folding white space inside <> goes (a From folded there must not
     * put a CR or LF into the dkim.from_domain note or a log line). */
    size_t n = 0;
    for (const char *p = start; p < end && n + 1 < size; p++)
        if (*p != ' ' && *p != '\t' && *p != '\r' && *p != '\n')
            addr[n++] = *p;
    addr[n] = '\0';
}

static int name_is(const char *header, const char *name)
{
    size_t n = strlen(name);
    return strncasecmp(header, name, n) == 0 && (header[n] == ':' || header[n] == ' ' || header[n] == '\t');
}

/* Whether an Authentication-Results value's authserv-id (RFC 8601 2.2:
 * after CFWS, a token or a quoted-string) is ours. Comments nest and may
 * hold quoted-pairs (RFC 5322 3.2.2), so "(a \) b) ours" and "\"ours\""
 * are ours too: a reader downstream sees our authserv-id there. A token
 * ends at any of RFC 2045's tspecials, so "ours," is ours as well. */
static int carries_our_id(const char *header, const char *ours)
{
    const char *v = strchr(header, ':');
    if (v == NULL || ours == NULL)
        return 0;
    v++;
    for (;;) {
        while (*v == ' ' || *v == '\t' || *v == '\r' || *v == '\n')
            v++;
        if (*v != '(')
            break;
        int depth = 0;
        for (; *v; v++) {
            if (*v == '\\' && v[1]) {
                v++;
                continue;
            }
            if (*v == '(')
                depth++;
            else if (*v == ')' && --depth == 0) {
                v++;
                break;
            }
        }
    }
    size_t n = strlen(ours);
    if (*v == '"') {
        /* a quoted-string: compared unquoted */
        size_t i = 0;
        for (v++; *v && *v != '"'; v++) {
            if (*v == '\\' && v[1])
                v++;
            if (i >= n || tolower((unsigned char)*v) != tolower((unsigned char)ours[i]))
                return 0;
            i++;
        }
        return *v == '"' && i == n;
    }
    return strcspn(v, AUTHSERV_ID_END) == n && strncasecmp(v, ours, n) == 0;
}

static int add_header(struct dkmsg *m)
{
    if (m->header.len == 0)
        return 0;
    char **h = realloc(m->headers, (m->nheaders + 1) * sizeof(*h));
    char *copy = malloc(m->header.len + 1);
    if (h == NULL || copy == NULL) {
        free(copy);
        if (h)
            m->headers = h;
        fail(m, "out of memory");
        return -1;
    }
    memcpy(copy, m->header.data, m->header.len + 1);
    m->headers = h;
    m->headers[m->nheaders++] = copy;
    m->header_bytes += m->header.len;
    m->header.len = 0;
    if (name_is(copy, "From") && m->from_addr[0] == '\0') {
        parse_from(strchr(copy, ':') + 1, m->from_addr, sizeof(m->from_addr));
        const char *at = strrchr(m->from_addr, '@');
        snprintf(m->from_domain, sizeof(m->from_domain), "%s", at ? at + 1 : "");
        for (char *d = m->from_domain; *d; d++)
            *d = (char)tolower((unsigned char)*d);
    }
    return 0;
}

static int feed_body(struct dkmsg *m, const char *data, size_t len)
{
    for (size_t i = 0; i < m->nsigners; i++) {
        if (dksign_body(m->signers[i], data, len) != 0) {
            fail(m, "signing: the body hash failed");
            return -1;
        }
    }
    if (m->verifier && !m->verify_nosig)
        dkim_body(m->verifier, (u_char *)data, len);   /* a bad signature fails at the end */
    return 0;
}

/* The header section is complete: choose the keys, start the handles and
 * give them every header. */
static int end_of_headers(struct dkmsg *m)
{
    if (add_header(m) != 0)
        return -1;
    m->in_body = 1;
    const char *ours = m->conf->authserv_id;
    for (size_t i = 0, nth = 0; i < m->nheaders; i++) {
        if (!name_is(m->headers[i], "Authentication-Results"))
            continue;
        nth++;
        if (carries_our_id(m->headers[i], ours)) {
            size_t *f = realloc(m->forged, (m->nforged + 1) * sizeof(*f));
            if (f == NULL) {
                fail(m, "out of memory");
                return -1;
            }
            m->forged = f;
            m->forged[m->nforged++] = nth;
        }
    }
    DKIM_LIB *lib = m->conf->lib->lib;
    DKIM_STAT st;
    if ((m->modes & DKMSG_SIGN) && m->conf->tables && m->from_addr[0]) {
        char err[256];
        int n = dk_tables_select(m->conf->tables, m->conf->lib->keys, m->from_addr, m->conf->multiple, m->choices,
                                 MAX_SIGNATURES, err, sizeof(err));
        if (n < 0) {
            fail(m, "%s", err);
            return -1;
        }
        for (int i = 0; i < n; i++) {
            struct dk_choice *c = &m->choices[i];
            struct dksign *d = dksign_new(c->key, c->alg, c->domain, c->selector, c->signer,
                                          m->conf->relaxed_header, m->conf->relaxed_body);
            if (d == NULL) {
                fail(m, "signing for %s (selector %s): out of memory", c->domain, c->selector);
                return -1;
            }
            m->signers[m->nsigners++] = d;
        }
    }
    if (m->modes & DKMSG_VERIFY) {
        m->verifier = dkim_verify(lib, (const u_char *)m->id, NULL, &st);
        if (m->verifier == NULL) {
            fail(m, "verifying: %s", dkim_getresultstr(st));
            return -1;
        }
        dkim_set_user_context(m->verifier, m);
    }
    for (size_t h = 0; m->verifier && h < m->nheaders; h++)
        dkim_header(m->verifier, (u_char *)m->headers[h], strlen(m->headers[h]));
    if (m->verifier && dkim_eoh(m->verifier) == DKIM_STAT_NOSIG)
        m->verify_nosig = 1;
    return 0;
}

/* One complete line of the header section (without its line end). */
static int header_line(struct dkmsg *m, const char *line, size_t len)
{
    if (len == 0)
        return end_of_headers(m);
    if (line[0] == ' ' || line[0] == '\t') {
        if (m->header.len == 0)
            goto not_a_header;
        if (buf_add(&m->header, "\r\n", 2, MAX_HEADER_SECTION) != 0 ||
            buf_add(&m->header, line, len, MAX_HEADER_SECTION) != 0)
            goto too_big;
        return 0;
    }
    const char *colon = memchr(line, ':', len);
    if (colon == NULL || colon == line)
        goto not_a_header;
    for (const char *c = line; c < colon; c++)
        if ((unsigned char)*c <= ' ' || (unsigned char)*c >= 127)
            goto not_a_header;
    if (add_header(m) != 0)
        return -1;
    if (m->header_bytes + len > MAX_HEADER_SECTION || buf_add(&m->header, line, len, MAX_HEADER_SECTION) != 0)
        goto too_big;
    return 0;
not_a_header:
    /* the section ends here and this line is the body's first */
    if (end_of_headers(m) != 0)
        return -1;
    return feed_body(m, line, len) == 0 && feed_body(m, "\r\n", 2) == 0 ? 0 : -1;
too_big:
    fail(m, "header section larger than 1 MiB");
    return -1;
}

int dkmsg_feed(struct dkmsg *m, const char *data, size_t len)
{
    if (m->failed)
        return -1;
    if (m->in_body)
        return feed_body(m, data, len);
    size_t i = 0;
    while (i < len && !m->in_body) {
        const char *nl = memchr(data + i, '\n', len - i);
        size_t take = nl ? (size_t)(nl - (data + i)) : len - i;
        if (buf_add(&m->line, data + i, take, MAX_HEADER_SECTION) != 0) {
            fail(m, "header line larger than 1 MiB");
            return -1;
        }
        i += take;
        if (nl == NULL)
            break;
        i++;   /* the LF */
        size_t l = m->line.len;
        if (l && m->line.data[l - 1] == '\r')
            l--;
        m->line.len = 0;
        if (header_line(m, m->line.data, l) != 0)
            return -1;
    }
    if (m->in_body && i < len)
        return feed_body(m, data + i, len - i);
    return 0;
}

/* ------------------------------------------------------------------ */
/* the end                                                              */

static const char *result_of(const struct dkmsg *m, DKIM_SIGINFO *sig, const char **why)
{
    unsigned flags = dkim_sig_getflags(sig);
    int err = dkim_sig_geterror(sig);
    *why = NULL;
    if ((flags & DKIM_SIGFLAG_PASSED) && dkim_sig_getbh(sig) == DKIM_SIGBH_MATCH)
        return "pass";
    /* A key lookup that failed stops dkim_eom before the signature is
     * processed, leaving no error on it: ask what our lookup said. */
    for (size_t i = 0; !(flags & DKIM_SIGFLAG_PROCESSED) && i < m->nfetches; i++) {
        if (m->fetches[i].sig != sig)
            continue;
        if (m->fetches[i].rc < 0) {
            *why = "key query failed";
            return "temperror";
        }
        if (m->fetches[i].rc == 1) {
            *why = "no key";
            return "permerror";
        }
    }
    switch (err) {
    case DKIM_SIGERROR_KEYFAIL:
        *why = "key query failed";
        return "temperror";
    case DKIM_SIGERROR_NOKEY:
        *why = "no key";
        return "permerror";
    case DKIM_SIGERROR_DNSSYNTAX:
    case DKIM_SIGERROR_KEYREVOKED:
    case DKIM_SIGERROR_KEYTYPEMISSING:
    case DKIM_SIGERROR_KEYTYPEUNKNOWN:
    case DKIM_SIGERROR_KEYDECODE:
    case DKIM_SIGERROR_KEYHASHMISMATCH:
    case DKIM_SIGERROR_KEYVERSION:
    case DKIM_SIGERROR_KEYUNKNOWNHASH:
    case DKIM_SIGERROR_KEYTOOSMALL:
        *why = dkim_sig_geterrorstr(err);
        return "permerror";
    case DKIM_SIGERROR_OK:
    case DKIM_SIGERROR_BADSIG:
        *why = dkim_sig_getbh(sig) == DKIM_SIGBH_MISMATCH ? "body hash mismatch" : "signature verification failed";
        return "fail";
    default:
        *why = dkim_sig_geterrorstr(err);
        return "neutral";
    }
}

static int append(char **s, size_t *len, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int append(char **s, size_t *len, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    char *d = realloc(*s, *len + (size_t)n + 1);
    if (d == NULL)
        return -1;
    va_start(ap, fmt);
    vsnprintf(d + *len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    *s = d;
    *len += (size_t)n;
    return 0;
}

/* Header values come from the network: keep a result's properties to
 * what RFC 8601 allows unquoted (domain names, base64 prefixes). */
static void clean(char *dst, size_t size, const char *src)
{
    size_t o = 0;
    for (; src && *src && o + 1 < size; src++)
        if (isalnum((unsigned char)*src) || strchr(".-_+/=@", *src))
            dst[o++] = *src;
    dst[o] = '\0';
}

static int build_auth_results(struct dkmsg *m)
{
    size_t len = 0;
    char *ar = NULL;
    if (append(&ar, &len, "%s", m->conf->authserv_id ? m->conf->authserv_id : "localhost") != 0)
        return -1;
    DKIM_SIGINFO **sigs = NULL;
    int nsigs = 0;
    if (!m->verify_nosig && dkim_getsiglist(m->verifier, &sigs, &nsigs) != DKIM_STAT_OK)
        nsigs = 0;
    if (nsigs == 0 && append(&ar, &len, ";\r\n\tdkim=none") != 0)
        goto oom;
    for (int i = 0; i < nsigs; i++) {
        const char *why;
        const char *res = result_of(m, sigs[i], &why);
        char d[256], s[64], b[16], a[32], note[128] = "";
        clean(d, sizeof(d), (const char *)dkim_sig_getdomain(sigs[i]));
        clean(s, sizeof(s), (const char *)dkim_sig_getselector(sigs[i]));
        clean(a, sizeof(a), (const char *)dkim_sig_getalgorithm(sigs[i]));
        u_char sub[16];
        size_t sublen = sizeof(sub) - 1;
        memset(sub, 0, sizeof(sub));
        if (dkim_get_sigsubstring(m->verifier, sigs[i], (char *)sub, &sublen) == DKIM_STAT_OK)
            sub[sublen < 8 ? sublen : 8] = '\0';
        clean(b, sizeof(b), (const char *)sub);
        unsigned bits = 0;
        if (strcmp(res, "pass") == 0 && dkim_sig_getkeysize(sigs[i], &bits) == DKIM_STAT_OK && bits)
            snprintf(note, sizeof(note), " (%u-bit key)", bits);
        else if (why)
            snprintf(note, sizeof(note), " (%.100s)", why);
        for (char *c = note; *c; c++)
            if (*c != ' ' && *c != '(' && *c != ')' && *c != '-' && !isalnum((unsigned char)*c))
                *c = ' ';
        if (append(&ar, &len, ";\r\n\tdkim=%s%s header.d=%s header.s=%s%s%s%s%s", res, note, d, s,
                   a[0] ? " header.a=" : "", a, b[0] ? " header.b=" : "", b) != 0)
            goto oom;
        if (m->nresults < MAX_RESULTS) {
            snprintf(m->results[m->nresults].domain, sizeof(m->results[0].domain), "%s", d);
            snprintf(m->results[m->nresults].selector, sizeof(m->results[0].selector), "%s", s);
            snprintf(m->results[m->nresults].result, sizeof(m->results[0].result), "%s", res);
            m->nresults++;
        }
    }
    m->auth_results = ar;
    return 0;
oom:
    free(ar);
    return -1;
}

int dkmsg_end(struct dkmsg *m)
{
    if (m->failed)
        return -1;
    if (!m->in_body) {
        /* a message that is all headers (no empty line) */
        if (m->line.len && header_line(m, m->line.data, m->line.len) != 0)
            return -1;
        m->line.len = 0;
        if (!m->in_body && end_of_headers(m) != 0)
            return -1;
    }
    char *const *headers = m->headers;
    size_t nheaders = m->nheaders;
    long long now = (long long)time(NULL);
    for (size_t i = 0; i < m->nsigners; i++) {
        char err[128];
        char *value = dksign_finish(m->signers[i], headers, nheaders, oversign, now, err, sizeof(err));
        if (value == NULL) {
            fail(m, "signing for %s: %s", m->choices[i].domain, err);
            return -1;
        }
        m->signatures[m->nsignatures++] = value;
    }
    if (m->verifier) {
        if (!m->verify_nosig)
            m->verify_status = dkim_eom(m->verifier, NULL);
        if (build_auth_results(m) != 0) {
            fail(m, "out of memory");
            return -1;
        }
    }
    return 0;
}

void dkmsg_free(struct dkmsg *m)
{
    if (m == NULL)
        return;
    for (size_t i = 0; i < m->nsigners; i++)
        dksign_free(m->signers[i]);
    for (size_t i = 0; i < MAX_SIGNATURES; i++)
        dk_choice_clear(&m->choices[i]);
    if (m->verifier)
        dkim_free(m->verifier);
    for (size_t i = 0; i < m->nheaders; i++)
        free(m->headers[i]);
    for (size_t i = 0; i < m->nsignatures; i++)
        free(m->signatures[i]);
    free(m->headers);
    free(m->line.data);
    free(m->header.data);
    free(m->auth_results);
    free(m->forged);
    free(m);
}

size_t dkmsg_signature_count(const struct dkmsg *m) { return m->nsignatures; }
const char *dkmsg_signature(const struct dkmsg *m, size_t i) { return i < m->nsignatures ? m->signatures[i] : NULL; }
const char *dkmsg_auth_results(const struct dkmsg *m) { return m->auth_results; }
const char *dkmsg_from_domain(const struct dkmsg *m) { return m->from_domain; }
size_t dkmsg_result_count(const struct dkmsg *m) { return m->nresults; }
size_t dkmsg_forged_count(const struct dkmsg *m) { return m->nforged; }
size_t dkmsg_forged(const struct dkmsg *m, size_t i) { return i < m->nforged ? m->forged[i] : 0; }

void dkmsg_result(const struct dkmsg *m, size_t i, const char **domain, const char **selector, const char **result)
{
    *domain = i < m->nresults ? m->results[i].domain : NULL;
    *selector = i < m->nresults ? m->results[i].selector : NULL;
    *result = i < m->nresults ? m->results[i].result : NULL;
}

int dkmsg_will_sign(const struct dkmsg *m)
{
    return m->nsigners > 0;
}

int dkmsg_headers_done(const struct dkmsg *m)
{
    return m->in_body;
}

size_t dkmsg_key_names(const struct dkmsg *m, char (*names)[DKMSG_KEY_NAME_MAX], size_t max)
{
    DKIM_SIGINFO **sigs = NULL;
    int nsigs = 0;
    if (m->failed || !m->in_body || m->verifier == NULL || m->verify_nosig ||
        dkim_getsiglist(m->verifier, &sigs, &nsigs) != DKIM_STAT_OK)
        return 0;
    size_t n = 0;
    for (int i = 0; i < nsigs && n < max; i++) {
        const char *sel = (const char *)dkim_sig_getselector(sigs[i]);
        const char *dom = (const char *)dkim_sig_getdomain(sigs[i]);
        if (sel == NULL || dom == NULL || *sel == '\0' || *dom == '\0')
            continue;
        char name[DKMSG_KEY_NAME_MAX];
        if ((size_t)snprintf(name, sizeof(name), "%s._domainkey.%s", sel, dom) >= sizeof(name))
            continue;
        size_t k = 0;
        while (k < n && strcasecmp(names[k], name) != 0)
            k++;
        if (k == n)
            memcpy(names[n++], name, sizeof(name));
    }
    return n;
}
