/*
 * The TLS session cache database (Postfix's smtpd_tls_session_cache_database
 * and smtp_tls_session_cache_database, kept by its tlsmgr): sessions by key
 * (a session ID on the server, the server's name, address and port on the
 * client), each stored as an 8-byte expiry time followed by the session in
 * DER. Every process that opens the same database shares it: a client
 * resumes its session with whichever smtpd worker takes its next
 * connection, and the queue manager resumes its sessions with servers after
 * a restart.
 *
 * Storage is one LMDB file, "PATH.lmdb" for "btree:PATH" or "lmdb:PATH" (the
 * types Postfix admins write; Postfix's "sdbm:" and "hash:" too), with its
 * lock file "PATH.lmdb-lock", opened on first use so that the master's
 * configuration check never creates it as root. It is a cache: writes are
 * not synced, a full map is emptied and refilled, and any error only means
 * a full handshake. LMDB must not open one environment twice in a process,
 * so the process keeps one environment per path (a small registry, the only
 * state here that is not a caller's).
 */
#include "config.h"

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>

#include <lmdb.h>
#include <openssl/ssl.h>

#include "lib/log.h"
#include "lib/xalloc.h"
#include "tls/tls.h"

#define SCACHE_MAP_SIZE (16UL * 1024 * 1024)
#define SCACHE_KEY_MAX 511                   /* LMDB's key limit */

struct scache_env {
    struct scache_env *next;
    char *path;
    MDB_env *env;
    MDB_dbi dbi;
    int refs;
    int broken;                              /* could not be opened: stop trying */
};

/* One environment per path per process (LMDB's rule). */
static struct scache_env *open_envs;

struct tls_scache {
    char *path;
    char *param;
    unsigned timeout;
    struct scache_env *e;                    /* NULL until first used */
};

struct tls_scache *tls_scache_open(const char *spec, const char *param, unsigned timeout, char **error)
{
    const char *colon = strchr(spec, ':');
    if (colon == NULL || colon[1] == '\0') {
        if (asprintf(error, "%s: \"%s\" is not TYPE:PATH (for example btree:/var/lib/petrel/smtpd_scache)", param,
                     spec) < 0)
            *error = NULL;
        return NULL;
    }
    size_t tl = (size_t)(colon - spec);
    static const char *const types[] = { "btree", "lmdb", "hash", "sdbm" };
    int known = 0;
    for (size_t i = 0; i < sizeof(types) / sizeof(types[0]); i++)
        known |= strlen(types[i]) == tl && strncasecmp(spec, types[i], tl) == 0;
    if (!known) {
        if (asprintf(error, "%s: unsupported table type \"%.*s\" (use btree: or lmdb:)", param, (int)tl, spec) < 0)
            *error = NULL;
        return NULL;
    }
    const char *path = colon + 1;
    if (path[0] != '/') {
        if (asprintf(error, "%s: \"%s\" must be an absolute path", param, path) < 0)
            *error = NULL;
        return NULL;
    }
    /* The directory must exist; the file is made by whoever uses it first. */
    char *dir = xstrdup(path);
    char *slash = strrchr(dir, '/');
    if (slash && slash != dir)
        *slash = '\0';
    struct stat st;
    if (stat(dir, &st) != 0 || !S_ISDIR(st.st_mode)) {
        if (asprintf(error, "%s: directory %s: %s", param, dir, errno ? strerror(errno) : "not a directory") < 0)
            *error = NULL;
        free(dir);
        return NULL;
    }
    free(dir);
    struct tls_scache *c = xcalloc(1, sizeof(*c));
    if (asprintf(&c->path, "%s.lmdb", path) < 0)
        msg_fatal("out of memory");
    c->param = xstrdup(param);
    c->timeout = timeout ? timeout : 3600;
    return c;
}

static struct scache_env *env_get(struct tls_scache *c)
{
    if (c->e)
        return c->e->broken ? NULL : c->e;
    for (struct scache_env *e = open_envs; e; e = e->next)
        if (strcmp(e->path, c->path) == 0) {
            e->refs++;
            c->e = e;
            return e->broken ? NULL : e;
        }
    struct scache_env *e = xcalloc(1, sizeof(*e));
    e->path = xstrdup(c->path);
    e->refs = 1;
    e->next = open_envs;
    open_envs = e;
    c->e = e;
    int rc = mdb_env_create(&e->env);
    if (rc == 0)
        rc = mdb_env_set_mapsize(e->env, SCACHE_MAP_SIZE);
    if (rc == 0)
        rc = mdb_env_open(e->env, e->path, MDB_NOSUBDIR | MDB_NOSYNC | MDB_NOMETASYNC, 0600);
    MDB_txn *txn = NULL;
    if (rc == 0)
        rc = mdb_txn_begin(e->env, NULL, 0, &txn);
    if (rc == 0)
        rc = mdb_dbi_open(txn, NULL, 0, &e->dbi);
    if (rc == 0)
        rc = mdb_txn_commit(txn);
    else if (txn)
        mdb_txn_abort(txn);
    if (rc != 0) {
        msg_warn("%s: cannot open %s: %s; TLS sessions are not cached", c->param, e->path, mdb_strerror(rc));
        if (e->env)
            mdb_env_close(e->env);
        e->env = NULL;
        e->broken = 1;
        return NULL;
    }
    return e;
}

void tls_scache_close(struct tls_scache *c)
{
    if (c == NULL)
        return;
    if (c->e && --c->e->refs == 0) {
        struct scache_env **pp = &open_envs;
        while (*pp && *pp != c->e)
            pp = &(*pp)->next;
        if (*pp)
            *pp = c->e->next;
        if (c->e->env)
            mdb_env_close(c->e->env);
        free(c->e->path);
        free(c->e);
    }
    free(c->path);
    free(c->param);
    free(c);
}

SSL_SESSION *tls_scache_get(struct tls_scache *c, const unsigned char *key, size_t key_len)
{
    struct scache_env *e = env_get(c);
    if (e == NULL || key_len == 0 || key_len > SCACHE_KEY_MAX)
        return NULL;
    MDB_txn *txn;
    if (mdb_txn_begin(e->env, NULL, MDB_RDONLY, &txn) != 0)
        return NULL;
    MDB_val k = { key_len, (void *)key }, v;
    SSL_SESSION *sess = NULL;
    int expired = 0;
    if (mdb_get(txn, e->dbi, &k, &v) == 0 && v.mv_size > 8) {
        const unsigned char *p = v.mv_data;
        uint64_t expiry = 0;
        for (int i = 0; i < 8; i++)
            expiry = expiry << 8 | p[i];
        if ((uint64_t)time(NULL) < expiry) {
            const unsigned char *der = p + 8;
            sess = d2i_SSL_SESSION(NULL, &der, (long)(v.mv_size - 8));
        } else {
            expired = 1;
        }
    }
    mdb_txn_abort(txn);
    if (expired)
        tls_scache_remove(c, key, key_len);
    return sess;
}

void tls_scache_put(struct tls_scache *c, const unsigned char *key, size_t key_len, SSL_SESSION *sess)
{
    struct scache_env *e = env_get(c);
    if (e == NULL || key_len == 0 || key_len > SCACHE_KEY_MAX)
        return;
    int len = i2d_SSL_SESSION(sess, NULL);
    if (len <= 0 || len > 64 * 1024)
        return;
    unsigned char *buf = xmalloc((size_t)len + 8);
    uint64_t expiry = (uint64_t)time(NULL) + c->timeout;
    for (int i = 7; i >= 0; i--, expiry >>= 8)
        buf[i] = (unsigned char)(expiry & 0xff);
    unsigned char *der = buf + 8;
    i2d_SSL_SESSION(sess, &der);
    for (int attempt = 0; attempt < 2; attempt++) {
        MDB_txn *txn;
        if (mdb_txn_begin(e->env, NULL, 0, &txn) != 0)
            break;
        MDB_val k = { key_len, (void *)key }, v = { (size_t)len + 8, buf };
        int rc = mdb_put(txn, e->dbi, &k, &v, 0);
        if (rc == MDB_MAP_FULL) {
            /* a cache: start over rather than grow */
            mdb_txn_abort(txn);
            if (mdb_txn_begin(e->env, NULL, 0, &txn) == 0) {
                if (mdb_drop(txn, e->dbi, 0) == 0)
                    mdb_txn_commit(txn);
                else
                    mdb_txn_abort(txn);
            }
            continue;
        }
        if (rc == 0)
            mdb_txn_commit(txn);
        else
            mdb_txn_abort(txn);
        break;
    }
    free(buf);
}

void tls_scache_remove(struct tls_scache *c, const unsigned char *key, size_t key_len)
{
    struct scache_env *e = env_get(c);
    if (e == NULL || key_len == 0 || key_len > SCACHE_KEY_MAX)
        return;
    MDB_txn *txn;
    if (mdb_txn_begin(e->env, NULL, 0, &txn) != 0)
        return;
    MDB_val k = { key_len, (void *)key };
    if (mdb_del(txn, e->dbi, &k, NULL) == 0)
        mdb_txn_commit(txn);
    else
        mdb_txn_abort(txn);
}

/* ---- the server side: OpenSSL's external session cache ---- */

static int scache_index = -1;   /* SSL_CTX ex_data slot of the cache (set once, never changes) */

static int on_new(SSL *ssl, SSL_SESSION *sess)
{
    struct tls_scache *c = SSL_CTX_get_ex_data(SSL_get_SSL_CTX(ssl), scache_index);
    unsigned len = 0;
    const unsigned char *id = SSL_SESSION_get_id(sess, &len);
    if (c && len)
        tls_scache_put(c, id, len, sess);
    return 0;
}

static SSL_SESSION *on_get(SSL *ssl, const unsigned char *id, int len, int *copy)
{
    struct tls_scache *c = SSL_CTX_get_ex_data(SSL_get_SSL_CTX(ssl), scache_index);
    *copy = 0;
    return c && len > 0 ? tls_scache_get(c, id, (size_t)len) : NULL;
}

void tls_scache_serve(SSL_CTX *ctx, struct tls_scache *c)
{
    if (scache_index < 0)
        scache_index = SSL_CTX_get_ex_new_index(0, NULL, NULL, NULL, NULL);
    SSL_CTX_set_ex_data(ctx, scache_index, c);
    SSL_CTX_sess_set_new_cb(ctx, on_new);
    SSL_CTX_sess_set_get_cb(ctx, on_get);
    /* No remove callback: OpenSSL drops a session whose connection ended
     * without a TLS close (most SMTP clients just close after QUIT), which
     * would make the shared cache forget every session; entries expire. */
}
