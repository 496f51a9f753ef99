/*
 * OpenDKIM's KeyTable and SigningTable, read unchanged, and the private
 * keys they name (PEM from opendkim-genkey or openssl, RSA or Ed25519).
 * A single key (dkim_domain, dkim_selector, dkim_key_file) is the same
 * thing with one KeyTable line and one SigningTable pattern.
 */
#ifndef PETREL_MODULE_DKIM_TABLES_H
#define PETREL_MODULE_DKIM_TABLES_H

#include <stddef.h>

#include <openssl/evp.h>

enum dk_alg { DK_ALG_RSA_SHA256, DK_ALG_ED25519_SHA256 };

struct dk_key {
    char *name;        /* the KeyTable key name */
    char *domain;      /* d=, or "%" for the From domain */
    char *selector;    /* s= */
    char *source;      /* the key path (may hold "%") or the key itself */
    int is_path;
};

struct dk_sign_rule {
    char *pattern;     /* refile: a wildcard on the From address; file: a key */
    char *keyname;     /* a KeyTable name, or "%" for the From domain */
    char *signer;      /* i=, may hold "%"; NULL for none */
};

struct dk_tables {
    struct dk_key *keys;
    size_t nkeys;
    struct dk_sign_rule *rules;
    size_t nrules;
    int wildcard;      /* SigningTable was a refile: */
};

/* One signature to make: a loaded key and what goes into d=, s= and i=. */
struct dk_choice {
    char domain[256];
    char selector[64];
    char signer[320];  /* "" for none */
    enum dk_alg alg;
    EVP_PKEY *key;     /* a reference: dk_choice_clear drops it */
};

/* Decoded private keys, shared by the messages of one configuration so
 * that a key is decoded once, not once per message (PEM decoding costs
 * OpenSSL 3 about as much as the RSA signature itself). A key file is
 * stat(2)ed for every message and decoded again when its inode, size,
 * mtime or ctime changed, so a rotated key is still picked up without a
 * reload. Thread-safe (a mutex). */
struct dk_key_cache;
struct dk_key_cache *dk_key_cache_new(void);
void dk_key_cache_free(struct dk_key_cache *c);

/* Reads both files ("file:PATH", "refile:PATH" or a bare PATH, as OpenDKIM
 * accepts them). Returns 0, or -1 with "FILE:LINE: problem" in err. */
int dk_tables_load(struct dk_tables *t, const char *keytable, const char *signingtable, char *err, size_t errlen);
/* One key for every From domain that is domain or below it. */
int dk_tables_single(struct dk_tables *t, const char *domain, const char *selector, const char *key_file,
                     char *err, size_t errlen);
void dk_tables_free(struct dk_tables *t);

/* The signatures for a From address (the first match, or every match when
 * multiple is set); keys come from cache (read and decoded there when
 * needed) and their type is found here. Returns how
 * many were filled (at most max), or -1 with err (a key that cannot be
 * read or is neither RSA nor Ed25519). A From domain that is not a plain
 * domain name (letters, digits, '-', '_' and dots) matches nothing. */
int dk_tables_select(const struct dk_tables *t, struct dk_key_cache *cache, const char *from_addr, int multiple,
                     struct dk_choice *out, size_t max, char *err, size_t errlen);
void dk_choice_clear(struct dk_choice *c);

/* Reads a private key file or text: its algorithm, 0 or -1 with err. */
int dk_key_type(const char *pem, size_t len, enum dk_alg *alg, char *err, size_t errlen);
/* The same, keeping the decoded key (the caller frees it), or NULL. */
EVP_PKEY *dk_key_decode(const char *pem, size_t len, enum dk_alg *alg, char *err, size_t errlen);

#endif
