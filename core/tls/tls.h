/*
 * TLS code the SMTP server and the SMTP/LMTP client share (Postfix's
 * src/tls/): Postfix's protocol and cipher grammar turned into an OpenSSL
 * context, certificates from cert/key files or chain files, CA locations,
 * key-exchange groups, fingerprints, the log line of an established
 * session, and the two things that make resumption work across processes:
 * session ticket keys the master makes and shares (tls_ticket.c) and the
 * session cache database (tls_scache.c).
 *
 * Every function that reads a parameter's value takes the parameter's name
 * and fails with *error = "name: problem" (malloc'd), so the caller can
 * point at the main.cf or master.cf line that set it.
 */
#ifndef PETREL_TLS_TLS_H
#define PETREL_TLS_TLS_H

#include <stddef.h>

#include <openssl/ssl.h>

/* Postfix's protocol list ("!SSLv2, !SSLv3", ">=TLSv1.2", "<=TLSv1.2",
 * "TLSv1.2 TLSv1.3") becomes the context's minimum and maximum version and
 * SSL_OP_NO_* for holes. A list that leaves no protocol, or an unknown
 * name, is an error. */
int tls_set_protocols(SSL_CTX *ctx, const char *spec, const char *param, char **error);

/* The OpenSSL cipher lists of the grades (tls_high_cipherlist, ...). */
struct tls_cipher_lists {
    const char *high, *medium, *null;
};
/* The cipher list of grade (high, medium, null; low and export mean medium,
 * as in Postfix 3.6) minus every name of the exclusion lists (either may be
 * NULL), for TLS 1.2 and earlier. */
int tls_set_ciphers(SSL_CTX *ctx, const struct tls_cipher_lists *lists, const char *grade, const char *grade_param,
                    const char *const *exclude, const char *exclude_param, const char *const *exclude2,
                    const char *exclude2_param, char **error);

/* tls_eecdh_auto_curves and tls_ffdhe_auto_groups, in that order; names
 * OpenSSL does not know are left out, as Postfix does. Both empty: OpenSSL's
 * defaults. */
void tls_set_groups(SSL_CTX *ctx, const char *curves, const char *ffdhe);

/* Keys with their certificate chains from PEM files (Postfix's
 * *_tls_chain_files): each private key is followed by its certificate, then
 * that certificate's issuers; several keys (RSA and ECDSA) may follow one
 * another. */
int tls_load_chain_files(SSL_CTX *ctx, const char *const *files, const char *param, char **error);
/* A certificate (with its chain) and its key from the classic pair of
 * parameters; key NULL or "" means the key is in the certificate file. */
int tls_load_cert_key(SSL_CTX *ctx, const char *cert, const char *cert_param, const char *key, const char *key_param,
                      char **error);
/* The trust anchors for peer certificates: a file, a c_rehash directory, or
 * both; neither leaves the context without any unless use_default. */
int tls_load_ca(SSL_CTX *ctx, const char *cafile, const char *cafile_param, const char *capath,
                const char *capath_param, int use_default, char **error);

/* A digest name OpenSSL knows (sha256, sha1, md5, ...): 0, else -1 with *error. */
int tls_check_digest(const char *digest, const char *param, char **error);
/* "AB:CD:..." (upper case) of the certificate's DER, or with pubkey of its
 * SubjectPublicKeyInfo, as Postfix's fingerprints; "" when it cannot be made. */
void tls_fingerprint(X509 *cert, const char *digest, int pubkey, char *out, size_t size);
/* The certificate's subject CN (or issuer CN, or O when it has no CN),
 * printable and bounded as Postfix's tls_peer_CN / tls_issuer_CN. */
void tls_subject_cn(X509 *cert, char *out, size_t size);
void tls_issuer_cn(X509 *cert, char *out, size_t size);

/* Postfix's summary line without its leading trust word and direction:
 * "TLSv1.3 with cipher TLS_AES_256_GCM_SHA384 (256/256 bits)". */
void tls_describe(SSL *ssl, char *out, size_t size);

/* The latest OpenSSL error as text (and the queue cleared). */
void tls_error_text(char *out, size_t size);

/* tls_ticket.c: session ticket keys the master makes before it forks the
 * smtpd workers, in memory they all map. The master rotates them every
 * smtpd_tls_session_cache_timeout and at every reload; a ticket sealed with
 * the previous key is still accepted (and replaced). So a client resumes on
 * whichever worker takes its next connection. */
struct tls_ticket_keys;
struct tls_ticket_keys *tls_ticket_keys_create(unsigned lifetime);   /* master, before forking; NULL on failure */
void tls_ticket_keys_rotate(struct tls_ticket_keys *keys, unsigned lifetime);   /* master */
void tls_ticket_keys_free(struct tls_ticket_keys *keys);                         /* master, at exit */
/* Workers: seal and open tickets with the shared keys (NULL: OpenSSL's own). */
void tls_ticket_keys_use(SSL_CTX *ctx, const struct tls_ticket_keys *keys);

/* tls_scache.c: the session cache database (Postfix's
 * *_tls_session_cache_database, "lmdb:/path" or "btree:/path", both kept in
 * one LMDB file): sessions by key, each with its expiry, shared by every
 * process that opens it. */
struct tls_scache;
struct tls_scache *tls_scache_open(const char *spec, const char *param, unsigned timeout, char **error);
void tls_scache_close(struct tls_scache *c);
/* A session stored under key, or NULL (missing, expired or unreadable). */
SSL_SESSION *tls_scache_get(struct tls_scache *c, const unsigned char *key, size_t key_len);
void tls_scache_put(struct tls_scache *c, const unsigned char *key, size_t key_len, SSL_SESSION *sess);
void tls_scache_remove(struct tls_scache *c, const unsigned char *key, size_t key_len);
/* The server side: external session cache callbacks on ctx. */
void tls_scache_serve(SSL_CTX *ctx, struct tls_scache *c);

#endif
