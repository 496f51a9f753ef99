/*
 * Unit tests of the dkim module's signer (modules/dkim/dkim_sign.c): the
 * canonical forms of RFC 6376 section 3.4.5's example (headers exactly,
 * the body through the bh= it produces), the body fed in pieces that
 * split CRLF and white space runs, bare LF line ends, empty bodies, and
 * which headers h= lists. That the signatures verify is shown by
 * t/integration/test_dkim.py with dkimpy, opendkim-testmsg and libopendkim.
 */
#include <stdio.h>
#include <string.h>

#include <openssl/evp.h>

#include "../tap.h"
#include "dkim_sign.h"

static EVP_PKEY *key;

static const char *canon_header(const char *h, int relaxed)
{
    static char out[512];
    size_t n = dksign_canon_header(h, strlen(h), relaxed, out);
    out[n] = '\0';
    return out;
}

/* The base64 SHA-256 of text: what bh= must be for that canonical body. */
static const char *b64_sha256(const char *text, size_t len)
{
    static char out[64];
    unsigned char md[32];
    unsigned mdlen = 0;
    EVP_Digest(text, len, md, &mdlen, EVP_sha256(), NULL);
    EVP_EncodeBlock((unsigned char *)out, md, (int)mdlen);
    return out;
}

/* Signs body fed step bytes at a time; returns the signature value. */
static char *sign(const char *body, size_t step, int relaxed_header, int relaxed_body, char *const *headers,
                  size_t nheaders)
{
    static const char *const oversign[] = { "from", NULL };
    struct dksign *s = dksign_new(key, DK_ALG_ED25519_SHA256, "a.test", "sel", NULL, relaxed_header, relaxed_body);
    size_t len = strlen(body);
    for (size_t i = 0; i < len; i += step)
        dksign_body(s, body + i, len - i < step ? len - i : step);
    char err[128];
    char *v = dksign_finish(s, headers, nheaders, oversign, 1700000000, err, sizeof(err));
    dksign_free(s);
    return v;
}

/* The bh= of a signature value. */
static const char *bh_of(const char *v)
{
    static char out[64];
    const char *p = v ? strstr(v, "bh=") : NULL;
    if (p == NULL)
        return "(none)";
    p += 3;
    size_t n = strcspn(p, ";");
    snprintf(out, sizeof(out), "%.*s", (int)n, p);
    return out;
}

static char *headers[] = { "From: a@a.test", "Received: from x", "To:b@b.test", "X;Odd: y", "Subject: s" };

static void body_case(const char *body, int relaxed, const char *canonical, const char *what)
{
    for (size_t step = 1; step <= 3; step += 2) {
        char *v = sign(body, step, 1, relaxed, headers, 1);
        is_str(bh_of(v), b64_sha256(canonical, strlen(canonical)), "%s (fed %zu byte%s at a time)", what, step,
           step == 1 ? "" : "s");
        free(v);
    }
}

int main(void)
{
    key = EVP_PKEY_Q_keygen(NULL, NULL, "ED25519");
    ok(key != NULL, "an Ed25519 key to sign with");

    /* RFC 6376 3.4.5 */
    is_str(canon_header("A: X", 1), "a:X\r\n", "relaxed header: the name lower-cased, the space after the colon gone");
    is_str(canon_header("B : Y\t\r\n\tZ  ", 1), "b:Y Z\r\n",
       "relaxed header: white space around the colon gone, unfolded, runs made one SP, none at the end");
    is_str(canon_header("B : Y\t\r\n\tZ  ", 0), "B : Y\t\r\n\tZ  \r\n", "simple header: the bytes as they are");
    is_str(canon_header("Subject:x", 1), "subject:x\r\n", "relaxed: no space after the colon is the same");
    is_str(canon_header("Subject:\t  x", 1), "subject:x\r\n", "relaxed: a tab after the colon is the same");
    is_str(canon_header("X-Empty:", 1), "x-empty:\r\n", "relaxed: an empty value");
    is_str(canon_header("X-Empty:  \r\n ", 1), "x-empty:\r\n", "relaxed: a value of white space and folding");

    const char *rfc_body = " C \r\nD \t E\r\n\r\n\r\n";
    body_case(rfc_body, 1, " C\r\nD E\r\n", "relaxed body: RFC 6376 3.4.5");
    body_case(rfc_body, 0, " C \r\nD \t E\r\n", "simple body: RFC 6376 3.4.5");
    body_case(" C \nD \t E\n\n\n", 1, " C\r\nD E\r\n", "relaxed body: bare LF line ends are CRLF");
    body_case(" C \nD \t E\n\n\n", 0, " C \r\nD \t E\r\n", "simple body: bare LF line ends are CRLF");
    body_case("", 1, "", "relaxed body: empty is nothing");
    body_case("", 0, "\r\n", "simple body: empty is CRLF");
    body_case("\r\n\r\n", 0, "\r\n", "simple body: only empty lines is CRLF");
    body_case(" \r\n\t\r\n", 1, "", "relaxed body: only white space lines is nothing");
    body_case(" \r\n\t\r\n", 0, " \r\n\t\r\n", "simple body: white space lines are content");
    body_case("a\r\n \r\n\r\nb", 1, "a\r\n\r\n\r\nb\r\n",
              "relaxed body: inner blank lines kept, a missing final CRLF added");
    body_case("a\rb\r\n", 0, "a\rb\r\n", "a bare CR is content");
    body_case("x\r", 0, "x\r\r\n", "a CR at the very end is content");

    char *v = sign("body\r\n", 4, 1, 1, headers, sizeof(headers) / sizeof(headers[0]));
    char flat[2048];
    size_t o = 0;
    for (const char *p = v; p && *p && o + 1 < sizeof(flat); p++)
        if (*p != '\r' && *p != '\n' && *p != '\t' && *p != ' ')
            flat[o++] = *p;
    flat[o] = '\0';
    ok(strstr(flat, ";h=From:To:Subject:from;") != NULL,
         "h= lists the headers present in order, without Received or an unlistable name, then the oversigned");
    ok(strncmp(flat, "v=1;a=ed25519-sha256;c=relaxed/relaxed;d=a.test;s=sel;t=1700000000;bh=", 70) == 0,
         "the tags in order, t= as given");
    free(v);

    /* A header name no line of h= can hold (found by fuzz_dkim_sign): left
     * out, so that no line of the DKIM-Signature passes 998 octets. */
    static char long_header[1100];
    memset(long_header, 'L', 1000);
    memcpy(long_header + 1000, ": v", 4);
    char *with_long[] = { "From: a@a.test", long_header, "Subject: s" };
    v = sign("body\r\n", 4, 1, 1, with_long, 3);
    size_t longest = 0, line = strlen("DKIM-Signature: ");
    for (const char *p = v; p && *p; p++) {
        line = *p == '\n' ? 0 : line + 1;
        if (line > longest)
            longest = line;
    }
    ok(v != NULL && longest <= 998 && strstr(v, "LLLL") == NULL,
       "a header whose name is longer than a line is not listed in h=, no line passes 998 octets (longest %zu)",
       longest);
    free(v);
    EVP_PKEY_free(key);
    return done_testing();
}
