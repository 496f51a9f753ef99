/*
 * OpenDKIM's KeyTable and SigningTable (opendkim.conf(5)), read unchanged.
 *
 * KeyTable lines: "NAME DOMAIN:SELECTOR:KEY", where DOMAIN "%" is the From
 * domain and KEY is a path (starting with /, ./ or ../, "%" replaced by the
 * From domain) or the key itself. SigningTable lines: "KEY NAME [SIGNER]".
 * A "refile:" SigningTable holds wildcard patterns ("*@example.com")
 * matched against the From address in file order; any other is looked up
 * as OpenDKIM does: user@host, host, user@.parent and .parent for each
 * parent, user@*, *. NAME "%" is the From domain, and "%" in SIGNER too.
 *
 * Keys are read when a message needs them (so a rotated key file is picked
 * up without a reload) and their type (RSA or Ed25519) comes from OpenSSL.
 * They are decoded once and kept (struct dk_key_cache) as long as the file
 * does not change: stat(2) per message, decoding only when it did.
 */
#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <pthread.h>
#include <sys/stat.h>

#include <openssl/bio.h>
#include <openssl/evp.h>
#include <openssl/pem.h>

#include "dkim_tables.h"

#define MAX_LINE 8192
#define MAX_KEY_FILE (64 * 1024)
#define MAX_CACHED_KEYS 1024

struct cached_key {
    char *source;      /* "/path" or "=the key text" */
    struct stat st;    /* a path's, when it was decoded */
    EVP_PKEY *key;
    enum dk_alg alg;
};

struct dk_key_cache {
    pthread_mutex_t lock;
    struct cached_key *keys;
    size_t n;
};

static char *dup_str(const char *s)
{
    size_t n = strlen(s) + 1;
    char *d = malloc(n);
    if (d == NULL)
        abort();   /* out of memory at configuration time */
    memcpy(d, s, n);
    return d;
}

static const char *strip_prefix(const char *spec, int *wildcard)
{
    *wildcard = 0;
    if (strncmp(spec, "refile:", 7) == 0) {
        *wildcard = 1;
        return spec + 7;
    }
    if (strncmp(spec, "file:", 5) == 0)
        return spec + 5;
    return spec;
}

/* Splits a line into at most max white-space separated fields, after
 * removing a # comment; returns how many. */
static int fields(char *line, char **out, int max)
{
    char *hash = strchr(line, '#');
    if (hash)
        *hash = '\0';
    int n = 0;
    char *p = line;
    while (*p && n < max) {
        while (*p && isspace((unsigned char)*p))
            p++;
        if (!*p)
            break;
        out[n++] = p;
        while (*p && !isspace((unsigned char)*p))
            p++;
        if (*p)
            *p++ = '\0';
    }
    while (*p && isspace((unsigned char)*p))
        p++;
    return *p ? max + 1 : n;   /* more fields than allowed */
}

static int load_keytable(struct dk_tables *t, const char *path, char *err, size_t errlen)
{
    FILE *f = fopen(path, "r");
    if (f == NULL) {
        snprintf(err, errlen, "%s: %s", path, strerror(errno));
        return -1;
    }
    char line[MAX_LINE];
    int lineno = 0;
    while (fgets(line, sizeof(line), f)) {
        lineno++;
        char *fv[3];
        int n = fields(line, fv, 2);
        if (n == 0)
            continue;
        char *c1 = n == 2 ? strchr(fv[1], ':') : NULL;
        char *c2 = c1 ? strchr(c1 + 1, ':') : NULL;
        if (n != 2 || c1 == NULL || c2 == NULL || c1 == fv[1] || c2 == c1 + 1 || c2[1] == '\0') {
            snprintf(err, errlen, "%s:%d: expected NAME DOMAIN:SELECTOR:KEY", path, lineno);
            fclose(f);
            return -1;
        }
        *c1 = *c2 = '\0';
        struct dk_key *k = realloc(t->keys, (t->nkeys + 1) * sizeof(*k));
        if (k == NULL)
            abort();
        t->keys = k;
        k = &t->keys[t->nkeys++];
        k->name = dup_str(fv[0]);
        k->domain = dup_str(fv[1]);
        k->selector = dup_str(c1 + 1);
        k->source = dup_str(c2 + 1);
        k->is_path = k->source[0] == '/' || strncmp(k->source, "./", 2) == 0 || strncmp(k->source, "../", 3) == 0;
    }
    fclose(f);
    return 0;
}

static int load_signingtable(struct dk_tables *t, const char *path, char *err, size_t errlen)
{
    FILE *f = fopen(path, "r");
    if (f == NULL) {
        snprintf(err, errlen, "%s: %s", path, strerror(errno));
        return -1;
    }
    char line[MAX_LINE];
    int lineno = 0;
    while (fgets(line, sizeof(line), f)) {
        lineno++;
        char *fv[3];
        int n = fields(line, fv, 3);
        if (n == 0)
            continue;
        if (n < 2 || n > 3) {
            snprintf(err, errlen, "%s:%d: expected PATTERN KEYNAME [SIGNER]", path, lineno);
            fclose(f);
            return -1;
        }
        /* OpenDKIM's flat files separate several values of one key with
         * colons: "keyname:signer" is the same as two fields. */
        char *colon = n == 2 ? strchr(fv[1], ':') : NULL;
        if (colon) {
            *colon = '\0';
            fv[2] = colon + 1;
            n = 3;
        }
        int known = strcmp(fv[1], "%") == 0;
        for (size_t i = 0; !known && i < t->nkeys; i++)
            known = strcmp(t->keys[i].name, fv[1]) == 0;
        if (!known) {
            snprintf(err, errlen, "%s:%d: key name \"%s\" is not in the KeyTable", path, lineno, fv[1]);
            fclose(f);
            return -1;
        }
        struct dk_sign_rule *r = realloc(t->rules, (t->nrules + 1) * sizeof(*r));
        if (r == NULL)
            abort();
        t->rules = r;
        r = &t->rules[t->nrules++];
        r->pattern = dup_str(fv[0]);
        r->keyname = dup_str(fv[1]);
        r->signer = n == 3 ? dup_str(fv[2]) : NULL;
    }
    fclose(f);
    return 0;
}

int dk_tables_load(struct dk_tables *t, const char *keytable, const char *signingtable, char *err, size_t errlen)
{
    memset(t, 0, sizeof(*t));
    int wild;
    if (load_keytable(t, strip_prefix(keytable, &wild), err, errlen) != 0 ||
        load_signingtable(t, strip_prefix(signingtable, &t->wildcard), err, errlen) != 0) {
        dk_tables_free(t);
        return -1;
    }
    if (wild) {
        snprintf(err, errlen, "%s: a KeyTable is a plain file (refile: is for the SigningTable)", keytable);
        dk_tables_free(t);
        return -1;
    }
    return 0;
}

int dk_tables_single(struct dk_tables *t, const char *domain, const char *selector, const char *key_file,
                     char *err, size_t errlen)
{
    memset(t, 0, sizeof(*t));
    if (!*domain || !*selector || !*key_file) {
        snprintf(err, errlen, "a single key needs a domain, a selector and a key file");
        return -1;
    }
    t->keys = calloc(1, sizeof(*t->keys));
    t->rules = calloc(1, sizeof(*t->rules));
    if (t->keys == NULL || t->rules == NULL)
        abort();
    t->nkeys = t->nrules = 1;
    t->keys[0].name = dup_str("default");
    t->keys[0].domain = dup_str(domain);
    t->keys[0].selector = dup_str(selector);
    t->keys[0].source = dup_str(key_file);
    t->keys[0].is_path = 1;
    /* the domain and its subdomains, as a refile pattern would say */
    t->wildcard = 0;
    size_t n = strlen(domain) + 2;
    t->rules[0].pattern = malloc(n);
    if (t->rules[0].pattern == NULL)
        abort();
    snprintf(t->rules[0].pattern, n, ".%s", domain);
    t->rules[0].keyname = dup_str("default");
    return 0;
}

void dk_tables_free(struct dk_tables *t)
{
    for (size_t i = 0; i < t->nkeys; i++) {
        free(t->keys[i].name);
        free(t->keys[i].domain);
        free(t->keys[i].selector);
        free(t->keys[i].source);
    }
    for (size_t i = 0; i < t->nrules; i++) {
        free(t->rules[i].pattern);
        free(t->rules[i].keyname);
        free(t->rules[i].signer);
    }
    free(t->keys);
    free(t->rules);
    memset(t, 0, sizeof(*t));
}

/* Wildcard match, '*' any run of characters, without regard to case. */
static int wild_match(const char *p, const char *s)
{
    const char *star = NULL, *retry = NULL;
    while (*s) {
        if (*p == '*') {
            star = p++;
            retry = s;
        } else if (tolower((unsigned char)*p) == tolower((unsigned char)*s)) {
            p++;
            s++;
        } else if (star) {
            p = star + 1;
            s = ++retry;
        } else {
            return 0;
        }
    }
    while (*p == '*')
        p++;
    return *p == '\0';
}

/* "%" -> the From domain, in a copy of at most size bytes. */
static void expand(char *out, size_t size, const char *in, const char *domain)
{
    size_t o = 0;
    for (; *in && o + 1 < size; in++) {
        if (*in == '%') {
            for (const char *d = domain; *d && o + 1 < size; d++)
                out[o++] = *d;
        } else {
            out[o++] = *in;
        }
    }
    out[o] = '\0';
}

EVP_PKEY *dk_key_decode(const char *pem, size_t len, enum dk_alg *alg, char *err, size_t errlen)
{
    BIO *bio = BIO_new_mem_buf(pem, (int)len);
    EVP_PKEY *pkey = bio ? PEM_read_bio_PrivateKey(bio, NULL, NULL, NULL) : NULL;
    BIO_free(bio);
    if (pkey == NULL) {
        snprintf(err, errlen, "not a PEM private key");
        return NULL;
    }
    int id = EVP_PKEY_get_base_id(pkey);
    int bits = EVP_PKEY_get_bits(pkey);
    if (id == EVP_PKEY_RSA) {
        if (bits < 1024) {
            snprintf(err, errlen, "an RSA key of %d bits is too short (RFC 8301: 1024 at least)", bits);
            EVP_PKEY_free(pkey);
            return NULL;
        }
        *alg = DK_ALG_RSA_SHA256;
        return pkey;
    }
    if (id == EVP_PKEY_ED25519) {
        *alg = DK_ALG_ED25519_SHA256;
        return pkey;
    }
    EVP_PKEY_free(pkey);
    snprintf(err, errlen, "neither an RSA nor an Ed25519 key");
    return NULL;
}

int dk_key_type(const char *pem, size_t len, enum dk_alg *alg, char *err, size_t errlen)
{
    EVP_PKEY *pkey = dk_key_decode(pem, len, alg, err, errlen);
    EVP_PKEY_free(pkey);
    return pkey ? 0 : -1;
}

struct dk_key_cache *dk_key_cache_new(void)
{
    struct dk_key_cache *c = calloc(1, sizeof(*c));
    if (c && pthread_mutex_init(&c->lock, NULL) != 0) {
        free(c);
        return NULL;
    }
    return c;
}

static void cache_clear(struct dk_key_cache *c)
{
    for (size_t i = 0; i < c->n; i++) {
        free(c->keys[i].source);
        EVP_PKEY_free(c->keys[i].key);
    }
    free(c->keys);
    c->keys = NULL;
    c->n = 0;
}

void dk_key_cache_free(struct dk_key_cache *c)
{
    if (c == NULL)
        return;
    cache_clear(c);
    pthread_mutex_destroy(&c->lock);
    free(c);
}

static int same_file(const struct stat *a, const struct stat *b)
{
    return a->st_dev == b->st_dev && a->st_ino == b->st_ino && a->st_size == b->st_size &&
           a->st_mtim.tv_sec == b->st_mtim.tv_sec && a->st_mtim.tv_nsec == b->st_mtim.tv_nsec &&
           a->st_ctim.tv_sec == b->st_ctim.tv_sec && a->st_ctim.tv_nsec == b->st_ctim.tv_nsec;
}

/* The cached key for source (st: a path's, NULL for key text), with a
 * reference for the caller, or NULL. */
static EVP_PKEY *cache_get(struct dk_key_cache *c, const char *source, const struct stat *st, enum dk_alg *alg)
{
    EVP_PKEY *key = NULL;
    pthread_mutex_lock(&c->lock);
    for (size_t i = 0; i < c->n; i++) {
        struct cached_key *k = &c->keys[i];
        if (strcmp(k->source, source) != 0)
            continue;
        if ((st == NULL || same_file(&k->st, st)) && EVP_PKEY_up_ref(k->key) == 1) {
            key = k->key;
            *alg = k->alg;
        }
        break;
    }
    pthread_mutex_unlock(&c->lock);
    return key;
}

/* Keeps key (a new reference) for source, replacing an older entry. */
static void cache_put(struct dk_key_cache *c, const char *source, const struct stat *st, EVP_PKEY *key,
                      enum dk_alg alg)
{
    char *copy = strdup(source);
    if (copy == NULL || EVP_PKEY_up_ref(key) != 1) {
        free(copy);
        return;
    }
    pthread_mutex_lock(&c->lock);
    struct cached_key *slot = NULL;
    for (size_t i = 0; i < c->n && slot == NULL; i++)
        if (strcmp(c->keys[i].source, source) == 0) {
            slot = &c->keys[i];
            free(slot->source);
            EVP_PKEY_free(slot->key);
        }
    if (slot == NULL) {
        if (c->n == MAX_CACHED_KEYS)
            cache_clear(c);   /* "%" paths over very many domains: start again */
        struct cached_key *k = realloc(c->keys, (c->n + 1) * sizeof(*k));
        if (k == NULL) {
            pthread_mutex_unlock(&c->lock);
            free(copy);
            EVP_PKEY_free(key);
            return;
        }
        c->keys = k;
        slot = &c->keys[c->n++];
    }
    memset(slot, 0, sizeof(*slot));
    slot->source = copy;
    if (st)
        slot->st = *st;
    slot->key = key;
    slot->alg = alg;
    pthread_mutex_unlock(&c->lock);
}

static int load_key(const struct dk_key *k, struct dk_key_cache *cache, const char *from_domain,
                    struct dk_choice *c, char *err, size_t errlen)
{
    char text[MAX_LINE], source[MAX_LINE + 1];
    char *pem = NULL;
    size_t len = 0;
    struct stat st;
    if (k->is_path) {
        char path[4096];
        expand(path, sizeof(path), k->source, from_domain);
        snprintf(source, sizeof(source), "%s", path);
        FILE *f = fopen(path, "r");
        if (f == NULL || fstat(fileno(f), &st) != 0) {
            snprintf(err, errlen, "key %s: %s: %s", k->name, path, strerror(errno));
            if (f)
                fclose(f);
            return -1;
        }
        if (cache && (c->key = cache_get(cache, source, &st, &c->alg)) != NULL) {
            fclose(f);
            return 0;
        }
        pem = malloc(MAX_KEY_FILE + 1);
        if (pem == NULL)
            abort();
        len = fread(pem, 1, MAX_KEY_FILE + 1, f);
        fclose(f);
        if (len > MAX_KEY_FILE) {
            snprintf(err, errlen, "key %s: %s: larger than 64 KiB", k->name, path);
            free(pem);
            return -1;
        }
        pem[len] = '\0';
    } else {
        /* the key itself: PEM, or base64 DER that we wrap as PEM */
        expand(text, sizeof(text), k->source, from_domain);
        snprintf(source, sizeof(source), "=%s", text);
        if (cache && (c->key = cache_get(cache, source, NULL, &c->alg)) != NULL)
            return 0;
        size_t n = strlen(text) + 128;
        pem = malloc(n);
        if (pem == NULL)
            abort();
        if (strstr(text, "-----BEGIN"))
            snprintf(pem, n, "%s", text);
        else
            snprintf(pem, n, "-----BEGIN PRIVATE KEY-----\n%s\n-----END PRIVATE KEY-----\n", text);
        len = strlen(pem);
    }
    char why[200];
    c->key = dk_key_decode(pem, len, &c->alg, why, sizeof(why));
    memset(pem, 0, len);   /* private key material */
    free(pem);
    if (c->key == NULL) {
        snprintf(err, errlen, "key %s: %s", k->name, why);
        return -1;
    }
    if (cache)
        cache_put(cache, source, k->is_path ? &st : NULL, c->key, c->alg);
    return 0;
}

static const struct dk_key *key_named(const struct dk_tables *t, const char *name)
{
    for (size_t i = 0; i < t->nkeys; i++)
        if (strcmp(t->keys[i].name, name) == 0)
            return &t->keys[i];
    return NULL;
}

/* The flat-file lookup order of opendkim.conf(5): user@host, host, then
 * for each parent user@.parent and .parent, then user@*, then *. A rule
 * matches when its key equals one of these. For a single-key table the
 * rule ".domain" also matches the domain itself. */
static int flat_match(const char *pattern, const char *user, const char *host)
{
    char key[600];
    snprintf(key, sizeof(key), "%s@%s", user, host);
    if (strcasecmp(pattern, key) == 0 || strcasecmp(pattern, host) == 0)
        return 1;
    if (pattern[0] == '.' && strcasecmp(pattern + 1, host) == 0)
        return 1;   /* our single-key rule */
    for (const char *p = strchr(host, '.'); p; p = strchr(p + 1, '.')) {
        snprintf(key, sizeof(key), "%s@%s", user, p);
        if (strcasecmp(pattern, key) == 0 || strcasecmp(pattern, p) == 0)
            return 1;
    }
    snprintf(key, sizeof(key), "%s@*", user);
    return strcasecmp(pattern, key) == 0 || strcmp(pattern, "*") == 0;
}

/* A domain name made of labels of letters, digits, '-' and '_': the From
 * domain comes from the network and "%" puts it into key paths and d=,
 * so "../x", "a;b" or folded white space must never get that far. */
static int plain_domain(const char *d)
{
    size_t len = strlen(d), label = 0;
    if (len == 0 || len > 253)
        return 0;
    for (const char *p = d; *p; p++) {
        if (*p == '.') {
            if (label == 0)
                return 0;
            label = 0;
        } else if (isalnum((unsigned char)*p) || *p == '-' || *p == '_') {
            if (++label > 63)
                return 0;
        } else {
            return 0;
        }
    }
    return label > 0;
}

int dk_tables_select(const struct dk_tables *t, struct dk_key_cache *cache, const char *from_addr, int multiple,
                     struct dk_choice *out, size_t max, char *err, size_t errlen)
{
    const char *at = strrchr(from_addr, '@');
    if (at == NULL || at[1] == '\0' || !plain_domain(at + 1))
        return 0;
    char user[256], host[256];
    snprintf(user, sizeof(user), "%.*s", (int)(at - from_addr < 255 ? at - from_addr : 255), from_addr);
    snprintf(host, sizeof(host), "%s", at + 1);
    for (char *h = host; *h; h++)
        *h = (char)tolower((unsigned char)*h);
    size_t n = 0;
    for (size_t i = 0; i < t->nrules && n < max; i++) {
        const struct dk_sign_rule *r = &t->rules[i];
        int hit = t->wildcard ? wild_match(r->pattern, from_addr) : flat_match(r->pattern, user, host);
        if (!hit)
            continue;
        const char *name = strcmp(r->keyname, "%") == 0 ? host : r->keyname;
        const struct dk_key *k = key_named(t, name);
        if (k == NULL) {
            snprintf(err, errlen, "SigningTable names key \"%s\", which the KeyTable does not have", name);
            goto fail;
        }
        struct dk_choice *c = &out[n];
        memset(c, 0, sizeof(*c));
        expand(c->domain, sizeof(c->domain), k->domain, host);
        snprintf(c->selector, sizeof(c->selector), "%s", k->selector);
        if (r->signer)
            expand(c->signer, sizeof(c->signer), r->signer, host);
        if (load_key(k, cache, host, c, err, errlen) != 0)
            goto fail;
        n++;
        if (!multiple)
            break;
    }
    return (int)n;
fail:
    for (size_t i = 0; i < n; i++)
        dk_choice_clear(&out[i]);
    return -1;
}

void dk_choice_clear(struct dk_choice *c)
{
    EVP_PKEY_free(c->key);
    c->key = NULL;
}
