/*
 * Building TLS contexts from Postfix's parameters, for the server and the
 * client alike (see tls.h): the protocol grammar of *_tls_protocols, the
 * cipher grades and exclusions, groups, certificates from cert/key files
 * or chain files, CA locations, fingerprints and names of certificates,
 * the summary of a session.
 *
 * Postfix's rules are followed where they are visible to an admin:
 * protocol names are TLS's own (SSLv2 ... TLSv1.3) and an include list
 * means "only these"; an exclusion may not start with ! + - @; grades low
 * and export mean medium (Postfix 3.6); fingerprints are upper-case hex
 * pairs joined by colons, of the DER certificate or of its
 * SubjectPublicKeyInfo.
 */
#include "config.h"

#include <ctype.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include "lib/buf.h"
#include "lib/xalloc.h"
#include "tls/tls.h"

__attribute__((format(printf, 2, 3)))
static int fail(char **error, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    if (vasprintf(error, fmt, ap) < 0)
        *error = NULL;
    va_end(ap);
    return -1;
}

void tls_error_text(char *out, size_t size)
{
    unsigned long e = ERR_get_error();
    if (e)
        ERR_error_string_n(e, out, size);
    else
        snprintf(out, size, "unknown error");
    ERR_clear_error();
}

/* ------------------------------------------------------------------ */
/* protocols */

static const struct {
    const char *name;
    int version;      /* 0: known to Postfix, never available here */
} protocol_names[] = {
    { "SSLv2", 0 }, { "SSLv3", 0 }, { "TLSv1", TLS1_VERSION }, { "TLSv1.1", TLS1_1_VERSION },
    { "TLSv1.2", TLS1_2_VERSION }, { "TLSv1.3", TLS1_3_VERSION },
};
#define NPROTO (sizeof(protocol_names) / sizeof(protocol_names[0]))

static int protocol_index(const char *name)
{
    for (size_t i = 0; i < NPROTO; i++)
        if (strcasecmp(name, protocol_names[i].name) == 0)
            return (int)i;
    return -1;
}

int tls_set_protocols(SSL_CTX *ctx, const char *spec, const char *param, char **error)
{
    unsigned include = 0, exclude = 0;
    int floor = -1, ceiling = -1;
    char *copy = xstrdup(spec ? spec : "");
    char *save = NULL;
    for (char *tok = strtok_r(copy, ", \t\r\n:", &save); tok; tok = strtok_r(NULL, ", \t\r\n:", &save)) {
        int *limit = NULL;
        const char *name = tok;
        if (strncmp(tok, ">=", 2) == 0) {
            limit = &floor;
            name = tok + 2;
        } else if (strncmp(tok, "<=", 2) == 0) {
            limit = &ceiling;
            name = tok + 2;
        } else if (*tok == '!') {
            name = tok + 1;
        }
        int i = protocol_index(name);
        if (i < 0) {
            fail(error, "%s: unknown TLS protocol \"%s\" (expected SSLv2, SSLv3, TLSv1, TLSv1.1, TLSv1.2, TLSv1.3, "
                 "each maybe after ! >= or <=)", param, tok);
            free(copy);
            return -1;
        }
        if (limit)
            *limit = i;
        else if (*tok == '!')
            exclude |= 1u << i;
        else
            include |= 1u << i;
    }
    free(copy);
    /* The protocols left: known, not excluded, in the include list when
     * there is one, within the floor and the ceiling. */
    unsigned allowed = 0;
    for (size_t i = 0; i < NPROTO; i++) {
        if (protocol_names[i].version == 0 || (exclude & (1u << i)) || (include && !(include & (1u << i))))
            continue;
        if ((floor >= 0 && (int)i < floor) || (ceiling >= 0 && (int)i > ceiling))
            continue;
        allowed |= 1u << i;
    }
    if (allowed == 0)
        return fail(error, "%s: \"%s\" leaves no TLS protocol that can be used", param, spec ? spec : "");
    int lo = -1, hi = -1;
    for (size_t i = 0; i < NPROTO; i++)
        if (allowed & (1u << i)) {
            if (lo < 0)
                lo = (int)i;
            hi = (int)i;
        }
    SSL_CTX_set_min_proto_version(ctx, protocol_names[lo].version);
    SSL_CTX_set_max_proto_version(ctx, protocol_names[hi].version);
    static const long no_option[] = { 0, 0, SSL_OP_NO_TLSv1, SSL_OP_NO_TLSv1_1, SSL_OP_NO_TLSv1_2, SSL_OP_NO_TLSv1_3 };
    for (int i = lo; i <= hi; i++)
        if (!(allowed & (1u << i)))
            SSL_CTX_set_options(ctx, no_option[i]);
    return 0;
}

/* ------------------------------------------------------------------ */
/* ciphers and groups */

static int add_exclusions(struct buf *b, const char *const *list, const char *param, char **error)
{
    for (const char *const *item = list; item && *item; item++) {
        char *copy = xstrdup(*item);
        char *save = NULL;
        for (char *tok = strtok_r(copy, ", \t:", &save); tok; tok = strtok_r(NULL, ", \t:", &save)) {
            if (strchr("!+-@", *tok)) {
                fail(error, "%s: invalid unary '!+-@' in cipher exclusion \"%s\"", param, tok);
                free(copy);
                return -1;
            }
            buf_printf(b, ":!%s", tok);
        }
        free(copy);
    }
    return 0;
}

int tls_set_ciphers(SSL_CTX *ctx, const struct tls_cipher_lists *lists, const char *grade, const char *grade_param,
                    const char *const *exclude, const char *exclude_param, const char *const *exclude2,
                    const char *exclude2_param, char **error)
{
    const char *base = NULL, *base_param = NULL;
    if (grade == NULL || *grade == '\0' || strcasecmp(grade, "medium") == 0 || strcasecmp(grade, "low") == 0 ||
        strcasecmp(grade, "export") == 0) {
        base = lists->medium;
        base_param = "tls_medium_cipherlist";
    } else if (strcasecmp(grade, "high") == 0) {
        base = lists->high;
        base_param = "tls_high_cipherlist";
    } else if (strcasecmp(grade, "null") == 0) {
        base = lists->null;
        base_param = "tls_null_cipherlist";
    } else {
        return fail(error, "%s: invalid cipher grade \"%s\"", grade_param, grade);
    }
    if (base == NULL || *base == '\0')
        return fail(error, "%s: the cipher list of grade %s is empty", base_param, grade ? grade : "medium");
    struct buf b = BUF_INIT;
    buf_puts(&b, base);
    if (add_exclusions(&b, exclude, exclude_param, error) < 0 || add_exclusions(&b, exclude2, exclude2_param, error) < 0) {
        buf_free(&b);
        return -1;
    }
    ERR_clear_error();
    if (SSL_CTX_set_cipher_list(ctx, b.data) != 1) {
        char why[256];
        tls_error_text(why, sizeof(why));
        int rc = fail(error, "%s: no cipher is left of \"%s\": %s", exclude && *exclude ? exclude_param : base_param,
                      b.data, why);
        buf_free(&b);
        return rc;
    }
    buf_free(&b);
    return 0;
}

void tls_set_groups(SSL_CTX *ctx, const char *curves, const char *ffdhe)
{
    /* A scratch context tries each name alone: OpenSSL refuses a whole list
     * for one name it does not know, Postfix leaves such names out. */
    SSL_CTX *probe = SSL_CTX_new(TLS_method());
    struct buf list = BUF_INIT;
    const char *parts[2] = { curves, ffdhe };
    for (int k = 0; k < 2 && probe; k++) {
        char *copy = xstrdup(parts[k] ? parts[k] : "");
        char *save = NULL;
        for (char *tok = strtok_r(copy, ", \t:", &save); tok; tok = strtok_r(NULL, ", \t:", &save)) {
            if (SSL_CTX_set1_groups_list(probe, tok) == 1)
                buf_printf(&list, "%s%s", list.len ? ":" : "", tok);
        }
        free(copy);
    }
    ERR_clear_error();
    if (list.len)
        SSL_CTX_set1_groups_list(ctx, list.data);
    buf_free(&list);
    SSL_CTX_free(probe);
}

/* ------------------------------------------------------------------ */
/* certificates and keys */

struct key_chain {
    EVP_PKEY *key;
    X509 *leaf;
    STACK_OF(X509) *chain;
};

static int install_chain(SSL_CTX *ctx, struct key_chain *kc, const char *param, const char *file, char **error)
{
    int rc = 0;
    if (kc->key == NULL)
        return 0;
    if (kc->leaf == NULL) {
        rc = fail(error, "%s: %s: a private key without the certificate that must follow it", param, file);
    } else if (X509_check_private_key(kc->leaf, kc->key) != 1) {
        ERR_clear_error();
        rc = fail(error, "%s: %s: the private key does not match the certificate after it", param, file);
    } else if (SSL_CTX_use_cert_and_key(ctx, kc->leaf, kc->key, kc->chain, 1) != 1) {
        char why[256];
        tls_error_text(why, sizeof(why));
        rc = fail(error, "%s: %s: cannot use the key and its certificate chain: %s", param, file, why);
    }
    EVP_PKEY_free(kc->key);
    X509_free(kc->leaf);
    sk_X509_pop_free(kc->chain, X509_free);
    memset(kc, 0, sizeof(*kc));
    return rc;
}

int tls_load_chain_files(SSL_CTX *ctx, const char *const *files, const char *param, char **error)
{
    struct key_chain kc;
    memset(&kc, 0, sizeof(kc));
    int nkeys = 0;
    const char *file = "";
    for (const char *const *f = files; f && *f; f++) {
        file = *f;
        BIO *bio = BIO_new_file(file, "r");
        if (bio == NULL) {
            char why[256];
            tls_error_text(why, sizeof(why));
            install_chain(ctx, &kc, param, file, error);
            return fail(error, "%s: cannot open %s: %s", param, file, why);
        }
        for (;;) {
            char *name = NULL, *header = NULL;
            unsigned char *data = NULL;
            long len = 0;
            if (PEM_read_bio(bio, &name, &header, &data, &len) != 1) {
                ERR_clear_error();
                break;
            }
            const unsigned char *p = data;
            int bad = 0;
            if (strcmp(name, "CERTIFICATE") == 0 || strcmp(name, "TRUSTED CERTIFICATE") == 0) {
                X509 *x = strcmp(name, "CERTIFICATE") == 0 ? d2i_X509(NULL, &p, len) : d2i_X509_AUX(NULL, &p, len);
                if (x == NULL) {
                    bad = 1;
                } else if (kc.key == NULL) {
                    X509_free(x);
                    fail(error, "%s: %s: a certificate before any private key (each key comes first, then its "
                         "certificate chain)", param, file);
                    bad = 2;
                } else if (kc.leaf == NULL) {
                    kc.leaf = x;
                } else {
                    if (kc.chain == NULL)
                        kc.chain = sk_X509_new_null();
                    sk_X509_push(kc.chain, x);
                }
            } else if (strstr(name, "PRIVATE KEY") != NULL) {
                if (strstr(name, "ENCRYPTED")) {
                    fail(error, "%s: %s: an encrypted private key (Petrel cannot ask for its passphrase)", param, file);
                    bad = 2;
                } else if (install_chain(ctx, &kc, param, file, error) < 0) {
                    bad = 2;
                } else {
                    kc.key = d2i_AutoPrivateKey(NULL, &p, len);
                    if (kc.key == NULL)
                        bad = 1;
                    else
                        nkeys++;
                }
            }
            OPENSSL_free(name);
            OPENSSL_free(header);
            OPENSSL_free(data);
            if (bad) {
                BIO_free(bio);
                if (bad == 1) {
                    char why[256];
                    tls_error_text(why, sizeof(why));
                    fail(error, "%s: %s: cannot decode a PEM object: %s", param, file, why);
                }
                EVP_PKEY_free(kc.key);
                X509_free(kc.leaf);
                sk_X509_pop_free(kc.chain, X509_free);
                return -1;
            }
        }
        BIO_free(bio);
    }
    if (install_chain(ctx, &kc, param, file, error) < 0)
        return -1;
    if (nkeys == 0)
        return fail(error, "%s: no private key in %s", param, files && *files ? "the files named" : "an empty list");
    return 0;
}

int tls_load_cert_key(SSL_CTX *ctx, const char *cert, const char *cert_param, const char *key, const char *key_param,
                      char **error)
{
    char why[256];
    if (key == NULL || *key == '\0')
        key = cert;
    if (SSL_CTX_use_certificate_chain_file(ctx, cert) != 1) {
        tls_error_text(why, sizeof(why));
        return fail(error, "%s: cannot load the certificate chain %s: %s", cert_param, cert, why);
    }
    if (SSL_CTX_use_PrivateKey_file(ctx, key, SSL_FILETYPE_PEM) != 1) {
        tls_error_text(why, sizeof(why));
        return fail(error, "%s: cannot load the private key %s: %s", key_param, key, why);
    }
    if (SSL_CTX_check_private_key(ctx) != 1) {
        tls_error_text(why, sizeof(why));
        return fail(error, "%s: the key in %s does not match the certificate: %s", key_param, key, why);
    }
    return 0;
}

int tls_load_ca(SSL_CTX *ctx, const char *cafile, const char *cafile_param, const char *capath,
                const char *capath_param, int use_default, char **error)
{
    char why[256];
    int have_file = cafile && *cafile, have_path = capath && *capath;
    if (have_file && SSL_CTX_load_verify_file(ctx, cafile) != 1) {
        tls_error_text(why, sizeof(why));
        return fail(error, "%s: cannot load %s: %s", cafile_param, cafile, why);
    }
    if (have_path && SSL_CTX_load_verify_dir(ctx, capath) != 1) {
        tls_error_text(why, sizeof(why));
        return fail(error, "%s: cannot use %s: %s", capath_param, capath, why);
    }
    if (!have_file && !have_path && use_default && SSL_CTX_set_default_verify_paths(ctx) != 1) {
        tls_error_text(why, sizeof(why));
        return fail(error, "%s: cannot load the system's CA certificates: %s", cafile_param, why);
    }
    return 0;
}

/* ------------------------------------------------------------------ */
/* names and fingerprints */

int tls_check_digest(const char *digest, const char *param, char **error)
{
    if (digest == NULL || EVP_get_digestbyname(digest) == NULL)
        return fail(error, "%s: unknown digest \"%s\"", param, digest ? digest : "");
    return 0;
}

void tls_fingerprint(X509 *cert, const char *digest, int pubkey, char *out, size_t size)
{
    const EVP_MD *md = EVP_get_digestbyname(digest ? digest : "sha256");
    unsigned char *der = NULL;
    unsigned char md_buf[EVP_MAX_MD_SIZE];
    unsigned md_len = 0;
    out[0] = '\0';
    if (md == NULL || cert == NULL || size == 0)
        return;
    int len = pubkey ? i2d_X509_PUBKEY(X509_get_X509_PUBKEY(cert), &der) : i2d_X509(cert, &der);
    if (len <= 0)
        return;
    if (EVP_Digest(der, (size_t)len, md_buf, &md_len, md, NULL) == 1) {
        size_t o = 0;
        for (unsigned i = 0; i < md_len && o + 3 < size; i++)
            o += (size_t)snprintf(out + o, size - o, "%s%02X", i ? ":" : "", md_buf[i]);
    }
    OPENSSL_free(der);
}

static void name_entry(X509_NAME *name, int nid, char *out, size_t size)
{
    out[0] = '\0';
    int pos = name ? X509_NAME_get_index_by_NID(name, nid, -1) : -1;
    if (pos < 0)
        return;
    ASN1_STRING *s = X509_NAME_ENTRY_get_data(X509_NAME_get_entry(name, pos));
    unsigned char *utf8 = NULL;
    int len = ASN1_STRING_to_UTF8(&utf8, s);
    if (len < 0)
        return;
    /* printable, never a control character or a NUL (Postfix refuses those names) */
    size_t o = 0;
    for (int i = 0; i < len && o + 1 < size; i++)
        out[o++] = utf8[i] < 0x20 || utf8[i] == 0x7f ? '?' : (char)utf8[i];
    out[o] = '\0';
    OPENSSL_free(utf8);
}

void tls_subject_cn(X509 *cert, char *out, size_t size)
{
    name_entry(cert ? X509_get_subject_name(cert) : NULL, NID_commonName, out, size);
}

void tls_issuer_cn(X509 *cert, char *out, size_t size)
{
    X509_NAME *issuer = cert ? X509_get_issuer_name(cert) : NULL;
    name_entry(issuer, NID_commonName, out, size);
    if (out[0] == '\0')
        name_entry(issuer, NID_organizationName, out, size);
}

void tls_describe(SSL *ssl, char *out, size_t size)
{
    int alg_bits = 0;
    const SSL_CIPHER *c = SSL_get_current_cipher(ssl);
    int bits = SSL_CIPHER_get_bits(c, &alg_bits);
    snprintf(out, size, "%s with cipher %s (%d/%d bits)", SSL_get_version(ssl), SSL_CIPHER_get_name(c), bits,
             alg_bits);
}
