/*
 * Fuzz target for the dkim module's own signer (modules/dkim/dkim_sign.c):
 * its body canonicalization state machine, its header canonicalization,
 * its choice of headers for h= and the DKIM-Signature value it folds, all
 * fed with a message a submission client wrote.
 *
 * Input: byte 0 holds the options (bit 0 relaxed header, bit 1 relaxed
 * body, the rest the size of the body's pieces); then the message: header
 * lines (LF or CRLF ends, a line starting with white space continues the
 * header before it, joined with CRLF as dkim_msg.c joins them) up to the
 * first empty line, then the body.
 *
 * Properties beyond "no crash, no sanitizer report, no leak":
 *  - the body fed whole and in pieces gives the same signature (Ed25519
 *    is deterministic);
 *  - bh= is the SHA-256 of the body canonicalized by an independent
 *    whole-buffer implementation of RFC 6376 3.4.3/3.4.4 written here;
 *  - the signature verifies (OpenSSL, the public key) over the header
 *    hash computed here independently: h= read back from the value, each
 *    name taking its bottom-most unused instance (RFC 6376 5.4.2), the
 *    headers canonicalized by this file's own code, then the
 *    DKIM-Signature itself with b= empty. Skipped for a header holding a
 *    bare CR or LF, which no header from the queue holds;
 *  - the value is printable ASCII folded with CRLF + TAB only, and no
 *    line of "DKIM-Signature: value" is longer than 998 octets (RFC 5322
 *    2.1.1);
 *  - dksign_canon_header writes at most 2 * len + 3 bytes (the buffer is
 *    exactly that, so ASan sees any more) and its relaxed form has a
 *    lower-case name, no CR or LF before its final CRLF, and no white
 *    space run.
 *
 * make check builds it with t/fuzz/replay_main.c and replays
 * t/fuzz/corpus/dkim_sign; `make fuzz` runs it with libFuzzer (doc/testing.md).
 */
#include <ctype.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <openssl/evp.h>

#include "dkim_sign.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define MAX_HEADERS 64

static void check(int cond, const char *what)
{
    if (!cond) {
        fprintf(stderr, "property violated: %s\n", what);
        abort();
    }
}

/* The harness's state: one key for the whole run. */
static struct {
    EVP_PKEY *key;
} fz;

/* A growing byte string. */
struct bytes {
    unsigned char *p;
    size_t len, cap;
};

static void add(struct bytes *b, const void *data, size_t len)
{
    if (b->len + len + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->len + len + 1)
            cap *= 2;
        unsigned char *p = realloc(b->p, cap);
        check(p != NULL, "out of memory in the harness");
        b->p = p;
        b->cap = cap;
    }
    if (len)
        memcpy(b->p + b->len, data, len);
    b->len += len;
    b->p[b->len] = '\0';
}

static void add_byte(struct bytes *b, unsigned char c)
{
    add(b, &c, 1);
}

/* RFC 6376 3.4.3 (simple) and 3.4.4 (relaxed) over the whole body, line by
 * line; a bare LF ends a line as CRLF does (the queue's form), a bare CR is
 * content, a last line without its line end gets one. */
static void reference_body(const unsigned char *body, size_t len, int relaxed, struct bytes *out)
{
    struct bytes all = { 0 };
    size_t pending_empty = 0;
    size_t i = 0;
    while (i < len) {
        size_t j = i;
        while (j < len && body[j] != '\n')
            j++;
        size_t end = j;   /* the line's content: [i, end) */
        if (j < len && end > i && body[end - 1] == '\r')
            end--;
        struct bytes line = { 0 };
        add(&line, "", 0);
        if (!relaxed) {
            add(&line, body + i, end - i);
        } else {
            int wsp = 0;
            for (size_t k = i; k < end; k++) {
                if (body[k] == ' ' || body[k] == '\t') {
                    wsp = 1;
                    continue;
                }
                if (wsp)
                    add_byte(&line, ' ');
                wsp = 0;
                add_byte(&line, body[k]);
            }
            /* trailing white space goes, except on a last line without a
             * line end, where it stays as one SP (dkim_sign.c says why) */
            if (wsp && j >= len)
                add_byte(&line, ' ');
        }
        if (line.len == 0) {
            pending_empty++;
        } else {
            for (; pending_empty; pending_empty--)
                add(&all, "\r\n", 2);
            add(&all, line.p, line.len);
            add(&all, "\r\n", 2);
        }
        free(line.p);
        i = j < len ? j + 1 : j;
    }
    if (all.len == 0 && !relaxed)
        add(&all, "\r\n", 2);
    add(&all, "", 0);
    *out = all;
}

/* RFC 6376 3.4.1/3.4.2 for one header (with its CRLF). */
static void reference_header(const char *h, size_t len, int relaxed, struct bytes *out)
{
    if (!relaxed) {
        add(out, h, len);
        add(out, "\r\n", 2);
        return;
    }
    const char *colon = memchr(h, ':', len);
    size_t n = colon ? (size_t)(colon - h) : len;
    while (n && (h[n - 1] == ' ' || h[n - 1] == '\t'))
        n--;
    for (size_t i = 0; i < n; i++)
        add_byte(out, (unsigned char)tolower((unsigned char)h[i]));
    if (colon) {
        add_byte(out, ':');
        struct bytes v = { 0 };
        add(&v, "", 0);
        for (const char *p = colon + 1; p < h + len; p++) {
            if (*p == '\r' && p + 1 < h + len && p[1] == '\n')
                continue;   /* unfolding: the CRLF before continuation white space */
            if (*p == '\n' && p > h && p[-1] == '\r')
                continue;
            add_byte(&v, (unsigned char)*p);
        }
        /* runs of white space to one SP, none at the start or the end */
        size_t a = 0, b = v.len;
        while (a < b && (v.p[a] == ' ' || v.p[a] == '\t'))
            a++;
        while (b > a && (v.p[b - 1] == ' ' || v.p[b - 1] == '\t'))
            b--;
        int wsp = 0;
        for (size_t i = a; i < b; i++) {
            if (v.p[i] == ' ' || v.p[i] == '\t') {
                wsp = 1;
                continue;
            }
            if (wsp)
                add_byte(out, ' ');
            wsp = 0;
            add_byte(out, v.p[i]);
        }
        free(v.p);
    }
    add(out, "\r\n", 2);
}

static size_t name_len(const char *h)
{
    size_t n = strcspn(h, ":");
    while (n && (h[n - 1] == ' ' || h[n - 1] == '\t'))
        n--;
    return n;
}

/* A header holds a CR or LF that is not part of a CRLF. */
static int has_bare_cr_lf(const char *h)
{
    for (const char *p = h; *p; p++) {
        if (*p == '\r' && p[1] != '\n')
            return 1;
        if (*p == '\n' && (p == h || p[-1] != '\r'))
            return 1;
    }
    return 0;
}

/* The value of tag name= in a signature value (white space removed). */
static char *tag_value(const char *value, const char *name)
{
    struct bytes flat = { 0 };
    add(&flat, "", 0);
    for (const char *p = value; *p; p++)
        if (*p != ' ' && *p != '\t' && *p != '\r' && *p != '\n')
            add_byte(&flat, (unsigned char)*p);
    char *result = NULL;
    size_t nl = strlen(name);
    for (char *p = (char *)flat.p; p && *p;) {
        char *end = strchr(p, ';');
        size_t n = end ? (size_t)(end - p) : strlen(p);
        if (n > nl && strncmp(p, name, nl) == 0 && p[nl] == '=') {
            result = strndup(p + nl + 1, n - nl - 1);
            break;
        }
        p = end ? end + 1 : p + n;
    }
    free(flat.p);
    return result;
}

static void check_canon(const char *h, size_t len, int relaxed)
{
    char *out = malloc(2 * len + 3);
    check(out != NULL, "out of memory in the harness");
    size_t n = dksign_canon_header(h, len, relaxed, out);
    check(n >= 2 && n <= 2 * len + 3, "canonical header length out of its bound");
    check(out[n - 2] == '\r' && out[n - 1] == '\n', "canonical header ends with CRLF");
    if (relaxed) {
        const char *colon = memchr(out, ':', n - 2);
        size_t name = colon ? (size_t)(colon - out) : n - 2;
        for (size_t i = 0; i < name; i++)
            check(!isupper((unsigned char)out[i]), "relaxed header name is lower case");
        for (size_t i = 0; i + 2 < n; i++) {
            check(out[i] != '\r' && out[i] != '\n', "relaxed header has no CR or LF before its end");
            if (colon && out + i > colon)
                check(out[i] != '\t' && !(out[i] == ' ' && (out[i + 1] == ' ' || i + 3 == n || out + i == colon + 1)),
                      "relaxed header value has no white space run, none at its start or end");
        }
    }
    free(out);
}

static char *sign(const unsigned char *body, size_t blen, size_t piece, int rh, int rb, char **headers, size_t nh)
{
    static const char *const oversign[] = { "from", "subject", NULL };
    struct dksign *s = dksign_new(fz.key, DK_ALG_ED25519_SHA256, "example.test", "sel", NULL, rh, rb);
    check(s != NULL, "dksign_new");
    for (size_t i = 0; i < blen; i += piece)
        check(dksign_body(s, (const char *)body + i, blen - i < piece ? blen - i : piece) == 0, "dksign_body");
    char err[128];
    char *v = dksign_finish(s, headers, nh, oversign, 1700000000, err, sizeof(err));
    dksign_free(s);
    check(v != NULL, "dksign_finish returned no signature");
    return v;
}

static void check_value(const char *v)
{
    size_t col = strlen("DKIM-Signature: ");
    for (const char *p = v; *p; p++) {
        if (*p == '\r') {
            check(p[1] == '\n' && p[2] == '\t', "the value folds with CRLF TAB only");
            col = 0;
            p++;
            continue;
        }
        check((*p >= 0x20 && *p < 0x7f) || *p == '\t', "the value is printable ASCII");
        col++;
        check(col <= 998, "a DKIM-Signature line is longer than 998 octets");
    }
}

static void check_verifies(const char *v, char **headers, size_t nh, int rh)
{
    for (size_t i = 0; i < nh; i++)
        if (has_bare_cr_lf(headers[i]))
            return;
    char *hlist = tag_value(v, "h");
    char *b = tag_value(v, "b");
    check(hlist != NULL && b != NULL, "the value has h= and b=");
    struct bytes data = { 0 };
    add(&data, "", 0);
    unsigned char used[MAX_HEADERS] = { 0 };
    for (char *name = hlist, *next; name; name = next) {
        next = strchr(name, ':');
        if (next)
            *next++ = '\0';
        for (size_t i = nh; i > 0; i--) {
            const char *h = headers[i - 1];
            size_t n = name_len(h);
            if (used[i - 1] || n != strlen(name) || strncasecmp(h, name, n) != 0)
                continue;
            used[i - 1] = 1;
            reference_header(h, strlen(h), rh, &data);
            break;
        }
    }
    /* the signature header itself, b= empty, without its final CRLF */
    const char *bpos = strstr(v, "\r\n\tb=");
    check(bpos != NULL, "b= is the last tag, on a line of its own");
    struct bytes self = { 0 };
    add(&self, "DKIM-Signature: ", 16);
    add(&self, v, (size_t)(bpos - v) + 5);
    reference_header((const char *)self.p, self.len, rh, &data);
    data.len -= 2;
    unsigned char digest[32];
    unsigned dlen = 0;
    check(EVP_Digest(data.p, data.len, digest, &dlen, EVP_sha256(), NULL) == 1, "sha256");
    unsigned char sig[128];
    int siglen = EVP_DecodeBlock(sig, (const unsigned char *)b, (int)strlen(b));
    check(siglen == 66, "b= is an Ed25519 signature");   /* 64 bytes, base64 padding decoded as 2 more */
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    check(ctx != NULL && EVP_DigestVerifyInit(ctx, NULL, NULL, NULL, fz.key) == 1, "verify init");
    check(EVP_DigestVerify(ctx, sig, 64, digest, dlen) == 1,
          "the signature does not verify over the headers as RFC 6376 5.4.2 selects and canonicalizes them");
    EVP_MD_CTX_free(ctx);
    free(self.p);
    free(data.p);
    free(hlist);
    free(b);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1 || size > 65536)
        return 0;
    if (fz.key == NULL) {
        fz.key = EVP_PKEY_Q_keygen(NULL, NULL, "ED25519");
        check(fz.key != NULL, "an Ed25519 key");
    }
    int rh = data[0] & 1, rb = (data[0] >> 1) & 1;
    size_t piece = (size_t)(data[0] >> 2) + 1;
    const unsigned char *msg = data + 1;
    size_t len = size - 1;

    /* the header section */
    char *headers[MAX_HEADERS];
    size_t nh = 0, i = 0;
    struct bytes cur = { 0 };
    while (i < len) {
        const unsigned char *nl = memchr(msg + i, '\n', len - i);
        size_t end = nl ? (size_t)(nl - msg) : len;
        size_t l = end - i;
        if (l && msg[i + l - 1] == '\r')
            l--;
        size_t next = nl ? end + 1 : len;
        if (l == 0) {
            i = next;
            break;
        }
        /* what dkim_msg.c takes for a header; anything else is body */
        const unsigned char *colon = memchr(msg + i, ':', l);
        int continued = msg[i] == ' ' || msg[i] == '\t';
        int header = !continued && colon != NULL && colon != msg + i;
        for (const unsigned char *c = msg + i; header && c < colon; c++)
            if (*c <= ' ' || *c >= 127)
                header = 0;
        if (continued && cur.len) {
            add(&cur, "\r\n", 2);
            add(&cur, msg + i, l);
        } else if (!header) {
            break;
        } else {
            if (cur.len && nh < MAX_HEADERS)
                headers[nh++] = strndup((const char *)cur.p, cur.len);
            cur.len = 0;
            add(&cur, msg + i, l);
        }
        i = next;
    }
    if (cur.len && nh < MAX_HEADERS)
        headers[nh++] = strndup((const char *)cur.p, cur.len);
    free(cur.p);
    const unsigned char *body = msg + i;
    size_t blen = len - i;

    for (size_t k = 0; k < nh; k++) {
        check_canon(headers[k], strlen(headers[k]), 0);
        check_canon(headers[k], strlen(headers[k]), 1);
    }

    char *whole = sign(body, blen, blen ? blen : 1, rh, rb, headers, nh);
    char *pieces = sign(body, blen, piece, rh, rb, headers, nh);
    check(strcmp(whole, pieces) == 0, "the body fed whole and in pieces signs differently");
    check_value(whole);

    struct bytes canon;
    reference_body(body, blen, rb, &canon);
    unsigned char md[32];
    unsigned mdlen = 0;
    char expect[64];
    check(EVP_Digest(canon.p, canon.len, md, &mdlen, EVP_sha256(), NULL) == 1, "sha256");
    EVP_EncodeBlock((unsigned char *)expect, md, (int)mdlen);
    char *bh = tag_value(whole, "bh");
    check(bh != NULL && strcmp(bh, expect) == 0, "bh= is not the hash of the body canonicalized as RFC 6376 says");
    free(bh);
    free(canon.p);

    check_verifies(whole, headers, nh, rh);

    free(whole);
    free(pieces);
    for (size_t k = 0; k < nh; k++)
        free(headers[k]);
    return 0;
}
