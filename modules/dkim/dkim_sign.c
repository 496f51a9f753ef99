/*
 * DKIM signing with OpenSSL over a pre-decoded key (dkim_sign.h).
 *
 * Body canonicalization (RFC 6376 3.4.3, 3.4.4) is a small state machine
 * fed byte by byte, so that chunks may split a CRLF or a run of white
 * space anywhere. Line ends are never written at once: they are counted
 * (pending_crlf) and written when the next line brings content, which is
 * how "ignore empty lines at the end of the body" works without knowing
 * where the body ends. In relaxed mode white space is remembered
 * (pending_wsp) and written as one SP only when content follows on the
 * same line, which drops it at line ends and turns a line of white space
 * into an empty line. The canonical bytes go through a 4 KiB buffer into
 * SHA-256.
 *
 * Headers are selected bottom-up as RFC 6376 5.4.2 says (the nth h= entry
 * of a name takes the nth instance from the bottom); a name listed more
 * often than present adds nothing to the hash, which is what oversigning
 * relies on. The signature covers the selected headers, then our own
 * DKIM-Signature with an empty b=, canonicalized the same way and without
 * its final CRLF. Ed25519 (RFC 8463) signs the SHA-256 of that data with
 * PureEdDSA; RSA signs it PKCS#1 v1.5 with SHA-256.
 *
 * Headers not signed: the trace and transport ones that are added or
 * removed in transit (Return-Path, Received), Comments and Keywords (as
 * OpenDKIM omits them), Bcc and Resent-Bcc, other DKIM-Signature headers,
 * and Authentication-Results, which the module itself may delete (forged
 * ones carrying our authserv-id) after signing.
 */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <openssl/evp.h>
#include <openssl/rsa.h>

#include "dkim_sign.h"

#define OUT_BUFFER 4096
#define FOLD_WIDTH 72
#define MAX_LISTED_NAME 990

struct dksign {
    EVP_PKEY *key;
    enum dk_alg alg;
    char *domain, *selector, *signer;
    int relaxed_header, relaxed_body;
    EVP_MD_CTX *body_hash;
    int failed;
    /* the body state machine */
    int seen_cr;               /* a CR was the last byte: CRLF or a bare CR? */
    int pending_wsp;           /* relaxed: white space seen on this line */
    unsigned long long pending_crlf;
    int have_content;          /* something other than line ends was written */
    unsigned char out[OUT_BUFFER];
    size_t outlen;
};

static const char *const unsigned_headers[] = {
    "return-path", "received", "comments", "keywords", "bcc", "resent-bcc", "dkim-signature",
    "authentication-results", NULL,
};

static char *dup_str(const char *s)
{
    return s ? strdup(s) : NULL;
}

struct dksign *dksign_new(EVP_PKEY *key, enum dk_alg alg, const char *domain, const char *selector,
                          const char *signer, int relaxed_header, int relaxed_body)
{
    struct dksign *s = calloc(1, sizeof(*s));
    if (s == NULL)
        return NULL;
    s->alg = alg;
    s->relaxed_header = relaxed_header;
    s->relaxed_body = relaxed_body;
    s->domain = dup_str(domain);
    s->selector = dup_str(selector);
    s->signer = signer && *signer ? dup_str(signer) : NULL;
    s->body_hash = EVP_MD_CTX_new();
    if (s->domain == NULL || s->selector == NULL || (signer && *signer && s->signer == NULL) ||
        s->body_hash == NULL || EVP_DigestInit_ex(s->body_hash, EVP_sha256(), NULL) != 1 ||
        EVP_PKEY_up_ref(key) != 1) {
        dksign_free(s);
        return NULL;
    }
    s->key = key;
    return s;
}

void dksign_free(struct dksign *s)
{
    if (s == NULL)
        return;
    EVP_PKEY_free(s->key);
    EVP_MD_CTX_free(s->body_hash);
    free(s->domain);
    free(s->selector);
    free(s->signer);
    free(s);
}

/* ------------------------------------------------------------------ */
/* the body                                                             */

static void flush_out(struct dksign *s)
{
    if (s->outlen && EVP_DigestUpdate(s->body_hash, s->out, s->outlen) != 1)
        s->failed = 1;
    s->outlen = 0;
}

static inline void put(struct dksign *s, unsigned char c)
{
    if (s->outlen == OUT_BUFFER)
        flush_out(s);
    s->out[s->outlen++] = c;
}

/* Content is coming on this line: the line ends held back were not the
 * body's last ones. */
static inline void before_content(struct dksign *s)
{
    for (; s->pending_crlf; s->pending_crlf--) {
        put(s, '\r');
        put(s, '\n');
    }
    if (s->pending_wsp) {
        put(s, ' ');
        s->pending_wsp = 0;
    }
    s->have_content = 1;
}

static inline void body_byte(struct dksign *s, unsigned char c)
{
    if (s->seen_cr) {
        s->seen_cr = 0;
        if (c == '\n') {
            s->pending_wsp = 0;
            s->pending_crlf++;
            return;
        }
        before_content(s);   /* a bare CR is content */
        put(s, '\r');
    }
    if (c == '\r') {
        s->seen_cr = 1;
    } else if (c == '\n') {
        s->pending_wsp = 0;   /* a bare LF is a line end too (the queue's CRLF form) */
        s->pending_crlf++;
    } else if (s->relaxed_body && (c == ' ' || c == '\t')) {
        s->pending_wsp = 1;
    } else {
        before_content(s);
        put(s, c);
    }
}

int dksign_body(struct dksign *s, const char *data, size_t len)
{
    for (size_t i = 0; i < len && !s->failed; i++)
        body_byte(s, (unsigned char)data[i]);
    return s->failed ? -1 : 0;
}

/* The end of the body: one CRLF after the last line with content (added
 * when the body did not end with one); an empty body is CRLF in simple
 * and nothing in relaxed (RFC 6376 3.4.3, 3.4.4). White space ending a
 * last line that has no line end is kept as one SP: the CRLF is added
 * after the white space rule ran, as dkimpy and OpenDKIM both read it
 * (an SMTP message always ends with CRLF; a file may not). */
static int body_digest(struct dksign *s, unsigned char digest[EVP_MAX_MD_SIZE], unsigned *dlen)
{
    if (s->seen_cr) {
        s->seen_cr = 0;
        before_content(s);
        put(s, '\r');
    }
    if (s->pending_wsp)
        before_content(s);
    if (s->have_content || !s->relaxed_body) {
        put(s, '\r');
        put(s, '\n');
    }
    flush_out(s);
    return !s->failed && EVP_DigestFinal_ex(s->body_hash, digest, dlen) == 1 ? 0 : -1;
}

/* ------------------------------------------------------------------ */
/* headers                                                              */

size_t dksign_canon_header(const char *h, size_t len, int relaxed, char *out)
{
    size_t o = 0;
    if (!relaxed) {
        memcpy(out, h, len);
        o = len;
    } else {
        const char *colon = memchr(h, ':', len);
        size_t namelen = colon ? (size_t)(colon - h) : len;
        while (namelen && (h[namelen - 1] == ' ' || h[namelen - 1] == '\t'))
            namelen--;
        for (size_t i = 0; i < namelen; i++)
            out[o++] = (char)tolower((unsigned char)h[i]);
        if (colon) {
            out[o++] = ':';
            /* unfold (CR and LF go), runs of white space become one SP,
             * none at the start or the end of the value */
            int wsp = 0, started = 0;
            for (const char *p = colon + 1; p < h + len; p++) {
                unsigned char c = (unsigned char)*p;
                if (c == '\r' || c == '\n')
                    continue;
                if (c == ' ' || c == '\t') {
                    wsp = 1;
                    continue;
                }
                if (wsp && started)
                    out[o++] = ' ';
                wsp = 0;
                started = 1;
                out[o++] = (char)c;
            }
        }
    }
    out[o++] = '\r';
    out[o++] = '\n';
    return o;
}

static size_t name_length(const char *h)
{
    size_t n = strcspn(h, ":");
    while (n && (h[n - 1] == ' ' || h[n - 1] == '\t'))
        n--;
    return n;
}

/* Names h= cannot carry (a ';' or a ':' would end the tag or the name)
 * are left out like the unsigned ones, and so are names too long for a
 * line of their own in the folded h= ("\t " name ':'), which RFC 5322
 * 2.1.1 bounds at 998 octets: a submission client can write such a
 * header, and a DKIM-Signature with a longer line is one that relays may
 * refuse or break. */
static int is_unsigned(const char *h, size_t n)
{
    if (n > MAX_LISTED_NAME)
        return 1;
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)h[i] <= ' ' || (unsigned char)h[i] >= 127 || h[i] == ';')
            return 1;
    for (size_t i = 0; unsigned_headers[i]; i++)
        if (strlen(unsigned_headers[i]) == n && strncasecmp(h, unsigned_headers[i], n) == 0)
            return 1;
    return 0;
}

/* A growing string. */
struct text {
    char *s;
    size_t len, cap;
    int failed;
};

static void text_add(struct text *t, const char *data, size_t len)
{
    if (t->failed)
        return;
    if (t->len + len + 1 > t->cap) {
        size_t cap = t->cap ? t->cap : 512;
        while (cap < t->len + len + 1)
            cap *= 2;
        char *d = realloc(t->s, cap);
        if (d == NULL) {
            t->failed = 1;
            return;
        }
        t->s = d;
        t->cap = cap;
    }
    memcpy(t->s + t->len, data, len);
    t->len += len;
    t->s[t->len] = '\0';
}

static void text_str(struct text *t, const char *s)
{
    text_add(t, s, strlen(s));
}

/* Appends "name" to the h= list being folded, with its ':' before it
 * unless it is the first; col tracks the current line's width. */
static void add_name(struct text *t, size_t *col, const char *name, size_t n, int first)
{
    if (!first) {
        text_add(t, ":", 1);
        (*col)++;
    }
    if (*col + n > FOLD_WIDTH) {
        text_str(t, "\r\n\t ");
        *col = 1;
    }
    text_add(t, name, n);
    *col += n;
}

static char *base64(const unsigned char *data, size_t len)
{
    char *out = malloc(4 * ((len + 2) / 3) + 1);
    if (out)
        EVP_EncodeBlock((unsigned char *)out, data, (int)len);
    return out;
}

static int sign_digest(struct dksign *s, const unsigned char *digest, size_t dlen, unsigned char **sig,
                       size_t *siglen)
{
    int ok = 0;
    *sig = NULL;
    if (s->alg == DK_ALG_ED25519_SHA256) {
        EVP_MD_CTX *ctx = EVP_MD_CTX_new();
        *siglen = 64;
        *sig = malloc(*siglen);
        ok = ctx && *sig && EVP_DigestSignInit(ctx, NULL, NULL, NULL, s->key) == 1 &&
             EVP_DigestSign(ctx, *sig, siglen, digest, dlen) == 1;
        EVP_MD_CTX_free(ctx);
    } else {
        EVP_PKEY_CTX *ctx = EVP_PKEY_CTX_new(s->key, NULL);
        ok = ctx && EVP_PKEY_sign_init(ctx) == 1 && EVP_PKEY_CTX_set_rsa_padding(ctx, RSA_PKCS1_PADDING) == 1 &&
             EVP_PKEY_CTX_set_signature_md(ctx, EVP_sha256()) == 1 &&
             EVP_PKEY_sign(ctx, NULL, siglen, digest, dlen) == 1 && (*sig = malloc(*siglen)) != NULL &&
             EVP_PKEY_sign(ctx, *sig, siglen, digest, dlen) == 1;
        EVP_PKEY_CTX_free(ctx);
    }
    if (!ok) {
        free(*sig);
        *sig = NULL;
    }
    return ok ? 0 : -1;
}

/* Hashes header h canonicalized into the header hash. */
static int hash_header(EVP_MD_CTX *hash, const char *h, size_t len, int relaxed, int with_crlf)
{
    char stack[1024];
    char *buf = 2 * len + 3 <= sizeof(stack) ? stack : malloc(2 * len + 3);
    if (buf == NULL)
        return -1;
    size_t n = dksign_canon_header(h, len, relaxed, buf);
    if (!with_crlf)
        n -= 2;
    int rc = EVP_DigestUpdate(hash, buf, n) == 1 ? 0 : -1;
    if (buf != stack)
        free(buf);
    return rc;
}

char *dksign_finish(struct dksign *s, char *const *headers, size_t nheaders, const char *const *oversign,
                    long long timestamp, char *err, size_t errlen)
{
    unsigned char bh[EVP_MAX_MD_SIZE], hh[EVP_MAX_MD_SIZE];
    unsigned bhlen = 0, hhlen = 0;
    struct text v = { 0 };
    char *bh64 = NULL, *b64 = NULL, *result = NULL;
    unsigned char *sig = NULL;
    size_t siglen = 0;
    unsigned char *used = calloc(nheaders ? nheaders : 1, 1);
    EVP_MD_CTX *hash = EVP_MD_CTX_new();
    if (used == NULL || hash == NULL || EVP_DigestInit_ex(hash, EVP_sha256(), NULL) != 1) {
        snprintf(err, errlen, "out of memory");
        goto out;
    }
    if (body_digest(s, bh, &bhlen) != 0 || (bh64 = base64(bh, bhlen)) == NULL) {
        snprintf(err, errlen, "body hash failed");
        goto out;
    }

    /* the tags, b= empty, folded as the header will stand */
    char line[800];
    snprintf(line, sizeof(line), "v=1; a=%s; c=%s/%s; d=%s; s=%s;\r\n\t",
             s->alg == DK_ALG_ED25519_SHA256 ? "ed25519-sha256" : "rsa-sha256",
             s->relaxed_header ? "relaxed" : "simple", s->relaxed_body ? "relaxed" : "simple", s->domain,
             s->selector);
    text_str(&v, line);
    if (s->signer) {
        text_str(&v, "i=");
        text_str(&v, s->signer);
        text_str(&v, "; ");
    }
    snprintf(line, sizeof(line), "t=%lld; bh=", timestamp);
    text_str(&v, line);
    text_str(&v, bh64);
    text_str(&v, ";\r\n\th=");
    size_t noversign = 0;
    while (oversign && oversign[noversign])
        noversign++;
    const char **hn = calloc(nheaders + noversign + 1, sizeof(*hn));
    size_t *hl = calloc(nheaders + noversign + 1, sizeof(*hl));
    size_t names = 0, col = 3;
    if (hn == NULL || hl == NULL) {
        free(hn);
        free(hl);
        snprintf(err, errlen, "out of memory");
        goto out;
    }
    for (size_t i = 0; i < nheaders; i++) {
        size_t n = name_length(headers[i]);
        if (n == 0 || is_unsigned(headers[i], n))
            continue;
        hn[names] = headers[i];
        hl[names++] = n;
    }
    for (size_t i = 0; i < noversign; i++) {
        hn[names] = oversign[i];
        hl[names++] = strlen(oversign[i]);
    }
    for (size_t k = 0; k < names; k++)
        add_name(&v, &col, hn[k], hl[k], k == 0);
    text_str(&v, ";\r\n\tb=");
    /* the header hash: each h= name takes its lowest unused instance */
    for (size_t k = 0; k < names && !v.failed; k++) {
        for (size_t i = nheaders; i > 0; i--) {
            const char *h = headers[i - 1];
            if (used[i - 1] || name_length(h) != hl[k] || strncasecmp(h, hn[k], hl[k]) != 0)
                continue;
            used[i - 1] = 1;
            if (hash_header(hash, h, strlen(h), s->relaxed_header, 1) != 0)
                v.failed = 1;
            break;
        }
    }
    free(hn);
    free(hl);
    if (v.failed) {
        snprintf(err, errlen, "out of memory");
        goto out;
    }
    /* our own header as the core will write it: "DKIM-Signature: " value */
    struct text self = { 0 };
    text_str(&self, "DKIM-Signature: ");
    text_add(&self, v.s, v.len);
    int rc = self.failed ? -1 : hash_header(hash, self.s, self.len, s->relaxed_header, 0);
    free(self.s);
    if (rc != 0 || EVP_DigestFinal_ex(hash, hh, &hhlen) != 1) {
        snprintf(err, errlen, "header hash failed");
        goto out;
    }
    if (sign_digest(s, hh, hhlen, &sig, &siglen) != 0 || (b64 = base64(sig, siglen)) == NULL) {
        snprintf(err, errlen, "%s signature failed", s->alg == DK_ALG_ED25519_SHA256 ? "Ed25519" : "RSA");
        goto out;
    }
    /* b= folded: white space inside its value is ignored by verifiers */
    size_t blen = strlen(b64);
    for (size_t o = 0, first = FOLD_WIDTH - 4; o < blen;) {
        size_t take = o == 0 ? first : FOLD_WIDTH - 2;
        if (take > blen - o)
            take = blen - o;
        if (o)
            text_str(&v, "\r\n\t ");
        text_add(&v, b64 + o, take);
        o += take;
    }
    if (v.failed) {
        snprintf(err, errlen, "out of memory");
        goto out;
    }
    result = v.s;
    v.s = NULL;
out:
    free(v.s);
    free(bh64);
    free(b64);
    free(sig);
    free(used);
    EVP_MD_CTX_free(hash);
    return result;
}
