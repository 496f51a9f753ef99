/*
 * The SCRAM-SHA-256 client's messages (RFC 5802, RFC 7677): see
 * smtp_scram.h. The server's messages are parsed strictly, in the order
 * RFC 5802 section 7 gives their attributes:
 *
 *   server-first = [m=EXT ","] r=NONCE "," s=SALT "," i=ITERATIONS ["," ext]
 *   server-final = (e=ERROR / v=SIGNATURE) ["," ext]
 *
 * A mandatory extension (m=) that we cannot know makes the exchange fail
 * (RFC 5802 5.1: "the client MUST fail the authentication"). The nonce
 * must begin with ours and add something of the server's; the salt is
 * strict base64; the iteration count is a plain decimal within bounds.
 */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "deliver/smtp_scram.h"
#include "lib/base64.h"
#include "lib/xalloc.h"

int scram_client_first(struct scram_client *s, const char *user, const char *nonce, struct buf *out,
                       const char **why)
{
    memset(s, 0, sizeof(*s));
    if (strlen(user) > SCRAM_MESSAGE_MAX) {
        *why = "the SASL user name is longer than 4096 bytes";
        return -1;
    }
    /* saslname: '=' and ',' escaped (RFC 5802 5.1) */
    struct buf bare = BUF_INIT;
    buf_puts(&bare, "n=");
    for (const char *p = user; *p; p++) {
        if (*p == '=')
            buf_puts(&bare, "=3D");
        else if (*p == ',')
            buf_puts(&bare, "=2C");
        else
            buf_putc(&bare, *p);
    }
    buf_puts(&bare, ",r=");
    buf_puts(&bare, nonce);
    s->first_bare = bare.data;   /* the buffer's string is ours now */
    s->nonce_len = strlen(nonce);
    buf_puts(out, "n,,");
    buf_puts(out, s->first_bare);
    return 0;
}

/* A printable attribute value as RFC 5802 allows for a nonce: %x21-2B /
 * %x2D-7E (no ',', no space, no controls, no 8-bit). */
static int printable_nonce(const char *v, size_t len)
{
    for (size_t k = 0; k < len; k++)
        if (v[k] < 0x21 || v[k] > 0x7e || v[k] == ',')
            return 0;
    return len > 0;
}

/* One attribute "X=value" at *p within end: returns the value's length and
 * moves *p past it (and past the ',' after it, *more set when there was
 * one); -1 when the attribute is not X=. */
static long attribute(const char **p, const char *end, char name, const char **value, int *more)
{
    const char *a = *p;
    if (end - a < 2 || a[0] != name || a[1] != '=')
        return -1;
    const char *v = a + 2;
    const char *comma = memchr(v, ',', (size_t)(end - v));
    const char *vend = comma ? comma : end;
    *value = v;
    *more = comma != NULL;
    *p = comma ? comma + 1 : end;
    return (long)(vend - v);
}

int scram_parse_server_first(const struct scram_client *s, const char *server_first, size_t len,
                             struct scram_server_first *out, const char **why)
{
    memset(out, 0, sizeof(*out));
    if (len > SCRAM_MESSAGE_MAX) {
        *why = "the SCRAM server-first message is longer than 4096 bytes";
        return -1;
    }
    if (memchr(server_first, '\0', len) != NULL) {
        *why = "malformed SCRAM challenge (a NUL byte)";
        return -1;
    }
    const char *p = server_first, *end = server_first + len;
    if (len >= 2 && p[0] == 'm' && p[1] == '=') {
        *why = "the server requires a SCRAM extension (m=) that we do not support";
        return -1;
    }
    const char *r, *salt64, *iv;
    int more = 0;
    long rl = attribute(&p, end, 'r', &r, &more);
    if (rl < 0 || !more || !printable_nonce(r, (size_t)rl)) {
        *why = "malformed SCRAM challenge (no r= nonce first)";
        return -1;
    }
    const char *ours = s->first_bare + strlen(s->first_bare) - s->nonce_len;
    if ((size_t)rl <= s->nonce_len || memcmp(r, ours, s->nonce_len) != 0) {
        *why = "the SCRAM server nonce does not extend ours";
        return -1;
    }
    long sl = attribute(&p, end, 's', &salt64, &more);
    if (sl <= 0) {
        *why = "malformed SCRAM challenge (no s= salt after the nonce)";
        return -1;
    }
    long il = more ? attribute(&p, end, 'i', &iv, &more) : -1;
    if (il <= 0 || il > 9 || iv[0] < '1' || iv[0] > '9') {
        *why = "malformed SCRAM challenge (no i= iteration count after the salt)";
        return -1;
    }
    long iterations = 0;
    for (long k = 0; k < il; k++) {
        if (iv[k] < '0' || iv[k] > '9') {
            *why = "malformed SCRAM challenge (no i= iteration count after the salt)";
            return -1;
        }
        iterations = iterations * 10 + (iv[k] - '0');
    }
    if (iterations > SCRAM_ITERATIONS_MAX) {
        *why = "the SCRAM iteration count is above 1000000";
        return -1;
    }
    if (more && p == end) {
        *why = "malformed SCRAM challenge (an empty extension)";
        return -1;
    }
    /* extensions after i= are optional ones; RFC 5802 says to ignore them */
    char *salt64z = xstrndup(salt64, (size_t)sl);
    unsigned char *salt = xmalloc((size_t)sl + 1);
    long saltlen = base64_decode(salt64z, (char *)salt);
    free(salt64z);
    if (saltlen <= 0) {
        free(salt);
        *why = "malformed SCRAM salt";
        return -1;
    }
    out->nonce = r;
    out->nonce_len = (size_t)rl;
    out->salt = salt;
    out->salt_len = (size_t)saltlen;
    out->iterations = iterations;
    return 0;
}

void scram_server_first_free(struct scram_server_first *sf)
{
    free(sf->salt);
    memset(sf, 0, sizeof(*sf));
}

int scram_client_final(struct scram_client *s, const char *password, const char *server_first, size_t len,
                       struct buf *out, const char **why)
{
    struct scram_server_first sf;
    if (scram_parse_server_first(s, server_first, len, &sf, why) != 0)
        return -1;
    const char *r = sf.nonce;
    size_t rl = sf.nonce_len;
    PKCS5_PBKDF2_HMAC(password, (int)strlen(password), sf.salt, (int)sf.salt_len, (int)sf.iterations, EVP_sha256(),
                      32, s->salted);
    scram_server_first_free(&sf);
    unsigned char client_key[32], stored[32], sig[32], proof[32];
    unsigned hl = 32;
    HMAC(EVP_sha256(), s->salted, 32, (const unsigned char *)"Client Key", 10, client_key, &hl);
    EVP_Digest(client_key, 32, stored, NULL, EVP_sha256(), NULL);
    /* client-final-message-without-proof: "c=biws" is base64 of "n,,"
     * (no channel binding, no authzid), then the whole server nonce */
    struct buf am = BUF_INIT;
    buf_puts(&am, s->first_bare);
    buf_putc(&am, ',');
    buf_append(&am, server_first, len);
    buf_puts(&am, ",c=biws,r=");
    buf_append(&am, r, rl);
    free(s->auth_message);
    s->auth_message = am.data;
    hl = 32;
    HMAC(EVP_sha256(), stored, 32, (const unsigned char *)am.data, am.len, sig, &hl);
    for (int k = 0; k < 32; k++)
        proof[k] = client_key[k] ^ sig[k];
    char p64[base64_encoded_size(32)];
    base64_encode(proof, 32, p64);
    buf_puts(out, "c=biws,r=");
    buf_append(out, r, rl);
    buf_puts(out, ",p=");
    buf_puts(out, p64);
    OPENSSL_cleanse(client_key, sizeof(client_key));
    OPENSSL_cleanse(stored, sizeof(stored));
    OPENSSL_cleanse(proof, sizeof(proof));
    return 0;
}

int scram_server_final(const struct scram_client *s, const char *server_final, size_t len, const char **why,
                       char *errbuf, size_t size)
{
    if (s->auth_message == NULL) {
        *why = "a SCRAM server-final message before the server-first one";
        return -1;
    }
    if (len > SCRAM_MESSAGE_MAX) {
        *why = "the SCRAM server-final message is longer than 4096 bytes";
        return -1;
    }
    const char *p = server_final, *end = server_final + len, *v;
    int more = 0;
    long vl = attribute(&p, end, 'e', &v, &more);
    if (vl >= 0) {
        /* server-error-value: shown, made printable and bounded */
        snprintf(errbuf, size, "the server's SCRAM error: ");
        size_t k = strlen(errbuf);
        for (long j = 0; j < vl && j < 200 && k + 1 < size; j++)
            errbuf[k++] = v[j] >= 0x20 && v[j] < 0x7f ? v[j] : '?';
        errbuf[k] = '\0';
        *why = errbuf;
        return -1;
    }
    vl = attribute(&p, end, 'v', &v, &more);
    if (vl <= 0 || vl > 64 || memchr(v, '\0', (size_t)vl) != NULL) {
        *why = "malformed SCRAM server-final message (no v= signature)";
        return -1;
    }
    char v64[65];
    memcpy(v64, v, (size_t)vl);
    v64[vl] = '\0';
    unsigned char got[65], server_key[32], want[32];
    long gl = base64_decode(v64, (char *)got);
    unsigned hl = 32;
    HMAC(EVP_sha256(), s->salted, 32, (const unsigned char *)"Server Key", 10, server_key, &hl);
    hl = 32;
    HMAC(EVP_sha256(), server_key, 32, (const unsigned char *)s->auth_message, strlen(s->auth_message), want, &hl);
    int ok = gl == 32 && CRYPTO_memcmp(got, want, 32) == 0;
    OPENSSL_cleanse(server_key, sizeof(server_key));
    if (!ok) {
        *why = "the server's SCRAM signature is wrong";
        return -1;
    }
    return 0;
}

void scram_client_free(struct scram_client *s)
{
    free(s->first_bare);
    free(s->auth_message);
    OPENSSL_cleanse(s->salted, sizeof(s->salted));
    memset(s, 0, sizeof(*s));
}
