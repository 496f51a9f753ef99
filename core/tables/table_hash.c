/*
 * hash:NAME - Postfix's indexed table, stored as an LMDB file NAME.lmdb.
 *
 * Postfix builds hash: tables as Berkeley DB files (NAME.db). Petrel keeps
 * the name admins write in main.cf but stores the table in the format of
 * Postfix's lmdb: type, as Postfix 3.11 itself does when Berkeley DB is
 * gone ("enable-redirect": hash:NAME reads lmdb:NAME). So hash:NAME and
 * lmdb:NAME are the same file, `postmap -q KEY lmdb:NAME` reads what
 * `petrelctl map build hash:NAME` wrote, and Postfix's NAME.db is never
 * read by mistake (tbl_open says so when it is the only file there).
 *
 * The file format is Postfix's dict_lmdb: one unnamed LMDB database in a
 * single file (MDB_NOSUBDIR), no lock file (MDB_NOLOCK), keys and values
 * stored with a terminating NUL byte unless built with -n; readers try the
 * key with its NUL, then without, and remember which form the file uses.
 * Keys are lowercased by the builder unless -f, and by the table layer
 * before every lookup (TBL_FLAG_FOLD_CASE).
 *
 * Readers never see a file change under them: `petrelctl map build`
 * replaces the file by rename (table_build.c), and the open copy stays
 * mapped until the table layer reopens the new one. LMDB keys are limited
 * to 511 bytes: a longer lookup key cannot be in the table and is simply
 * not found; a longer key in a source file fails the build.
 */
#include "config.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <lmdb.h>

#include "lib/log.h"
#include "lib/xalloc.h"
#include "tables/table_impl.h"

#define HASH_SUFFIX ".lmdb"
#define BUILD_MAP_SIZE (16UL * 1024 * 1024)   /* Postfix's lmdb_map_size */
#define BUILD_BATCH 10000                     /* puts per transaction while building */

enum nul_form { NUL_UNKNOWN, NUL_WITH, NUL_WITHOUT };

struct hash_table {
    MDB_env *env;
    MDB_dbi dbi;
    MDB_txn *txn;           /* a read transaction, reset between lookups */
    enum nul_form nul;
    size_t max_key;
    char *path;
};

static void hash_close(void *handle)
{
    struct hash_table *h = handle;
    if (h->txn)
        mdb_txn_abort(h->txn);
    if (h->env)
        mdb_env_close(h->env);
    h->txn = NULL;
    h->env = NULL;
}

static void *hash_open(const char *name, int flags, petrel_pool *pool, char **error)
{
    struct hash_table *h = petrel_pool_zalloc(pool, sizeof(*h));
    h->path = petrel_pool_printf(pool, "%s%s", name, HASH_SUFFIX);
    int rc = mdb_env_create(&h->env);
    if (rc == 0)
        rc = mdb_env_open(h->env, h->path, MDB_NOSUBDIR | MDB_NOLOCK | MDB_RDONLY, 0);
    if (rc == 0)
        rc = mdb_txn_begin(h->env, NULL, MDB_RDONLY, &h->txn);
    if (rc == 0)
        rc = mdb_dbi_open(h->txn, NULL, 0, &h->dbi);
    if (rc != 0) {
        *error = tbl_strprintf("open database %s: %s", h->path, mdb_strerror(rc));
        hash_close(h);
        return NULL;
    }
    mdb_txn_reset(h->txn);
    h->max_key = (size_t)mdb_env_get_maxkeysize(h->env);
    return h;
}

/* Starts the read transaction of one lookup. */
static int begin_read(struct hash_table *h)
{
    int rc = mdb_txn_renew(h->txn);
    if (rc == MDB_MAP_RESIZED) {
        /* Someone grew the file in place (Postfix's postmap): map it all. */
        mdb_env_set_mapsize(h->env, 0);
        rc = mdb_txn_renew(h->txn);
    }
    return rc;
}

static int hash_lookup(void *handle, const char *key, const char **value, petrel_pool *scratch)
{
    struct hash_table *h = handle;
    size_t klen = strlen(key);
    if (klen == 0 || klen > h->max_key)
        return TBL_NOTFOUND;   /* LMDB cannot hold such a key: it is not in the table */
    int rc = begin_read(h);
    if (rc != 0) {
        msg_warn("%s: %s", h->path, mdb_strerror(rc));
        return TBL_ERROR;
    }
    MDB_val k, v;
    rc = MDB_NOTFOUND;
    if (h->nul != NUL_WITHOUT && klen < h->max_key) {
        k.mv_data = (void *)key;
        k.mv_size = klen + 1;
        rc = mdb_get(h->txn, h->dbi, &k, &v);
        if (rc == 0)
            h->nul = NUL_WITH;
    }
    if (rc == MDB_NOTFOUND && h->nul != NUL_WITH) {
        k.mv_data = (void *)key;
        k.mv_size = klen;
        rc = mdb_get(h->txn, h->dbi, &k, &v);
        if (rc == 0)
            h->nul = NUL_WITHOUT;
    }
    int status;
    if (rc == 0) {
        /* The value ends at its NUL (or its size): what Postfix returns. */
        *value = petrel_pool_strndup(scratch, v.mv_data, strnlen(v.mv_data, v.mv_size));
        status = TBL_FOUND;
    } else if (rc == MDB_NOTFOUND) {
        status = TBL_NOTFOUND;
    } else {
        msg_warn("%s: lookup: %s", h->path, mdb_strerror(rc));
        status = TBL_ERROR;
    }
    mdb_txn_reset(h->txn);
    return status;
}

static int hash_iterate(void *handle, int (*fn)(void *arg, const void *key, size_t klen, const void *value,
                                                size_t vlen),
                        void *arg, char **error)
{
    struct hash_table *h = handle;
    int rc = begin_read(h);
    MDB_cursor *cursor = NULL;
    if (rc == 0)
        rc = mdb_cursor_open(h->txn, h->dbi, &cursor);
    MDB_val k, v;
    for (MDB_cursor_op op = MDB_FIRST; rc == 0; op = MDB_NEXT) {
        rc = mdb_cursor_get(cursor, &k, &v, op);
        if (rc == 0 && fn(arg, k.mv_data, k.mv_size, v.mv_data, v.mv_size) != 0)
            break;
    }
    if (cursor)
        mdb_cursor_close(cursor);
    mdb_txn_reset(h->txn);
    if (rc != 0 && rc != MDB_NOTFOUND) {
        *error = tbl_strprintf("read %s: %s", h->path, mdb_strerror(rc));
        return -1;
    }
    return 0;
}

/* ------------------------------------------------------------------ */
/* building                                                            */

struct pending_put {
    size_t klen, vlen;
    int replace;
    /* key bytes, then value bytes */
};

struct hash_builder {
    MDB_env *env;
    MDB_txn *txn;
    MDB_dbi dbi;
    size_t map_size;
    size_t max_key;
    const char *path;
    /* the puts of the open transaction, replayed when the map must grow */
    struct buf batch;
    size_t batch_count;
};

static void *hash_build_open(const struct tbl_type *type, const char *path, petrel_pool *pool, char **error)
{
    struct hash_builder *b = petrel_pool_zalloc(pool, sizeof(*b));
    b->path = petrel_pool_strdup(pool, path);
    b->map_size = BUILD_MAP_SIZE;
    /* The file is private until it is renamed into place: no lock file,
     * and one fsync by the table layer instead of one per transaction. */
    int rc = mdb_env_create(&b->env);
    if (rc == 0)
        rc = mdb_env_set_mapsize(b->env, b->map_size);
    if (rc == 0)
        rc = mdb_env_open(b->env, path, MDB_NOSUBDIR | MDB_NOLOCK | MDB_NOSYNC, 0600);
    if (rc == 0)
        rc = mdb_txn_begin(b->env, NULL, 0, &b->txn);
    if (rc == 0)
        rc = mdb_dbi_open(b->txn, NULL, 0, &b->dbi);
    if (rc != 0) {
        *error = tbl_strprintf("create LMDB database: %s", mdb_strerror(rc));
        if (b->txn)
            mdb_txn_abort(b->txn);
        if (b->env)
            mdb_env_close(b->env);
        return NULL;
    }
    b->max_key = (size_t)mdb_env_get_maxkeysize(b->env);
    return b;
}

static int put_one(struct hash_builder *b, const void *key, size_t klen, const void *value, size_t vlen,
                   int replace)
{
    MDB_val k = { klen, (void *)key }, v = { vlen, (void *)value }, old;
    int existed = 0;
    if (replace) {
        int rc = mdb_get(b->txn, b->dbi, &k, &old);
        if (rc != 0 && rc != MDB_NOTFOUND)
            return rc;
        existed = rc == 0;
    }
    int rc = mdb_put(b->txn, b->dbi, &k, &v, replace ? 0 : MDB_NOOVERWRITE);
    if (rc == 0)
        return existed;
    return rc == MDB_KEYEXIST ? 1 : rc;
}

/* MDB_MAP_FULL: the transaction is lost (LMDB aborted it, or the caller
 * must). Grow the map and replay the puts of the transaction; *last gets
 * the outcome of the last one (0 added, 1 existed). */
static int grow_and_replay(struct hash_builder *b, int *last, char **error)
{
    for (;;) {
        if (b->txn)
            mdb_txn_abort(b->txn);
        b->txn = NULL;
        if (b->map_size > ((size_t)1 << 40)) {
            *error = tbl_strprintf("LMDB map size limit reached (%zu bytes)", b->map_size);
            return -1;
        }
        b->map_size *= 2;
        int rc = mdb_env_set_mapsize(b->env, b->map_size);
        if (rc == 0)
            rc = mdb_txn_begin(b->env, NULL, 0, &b->txn);
        if (rc != 0) {
            *error = tbl_strprintf("LMDB: %s", mdb_strerror(rc));
            return -1;
        }
        size_t off = 0;
        rc = 0;
        for (size_t i = 0; i < b->batch_count && (rc == 0 || rc == 1); i++) {
            struct pending_put p;
            memcpy(&p, b->batch.data + off, sizeof(p));
            const char *bytes = b->batch.data + off + sizeof(p);
            rc = put_one(b, bytes, p.klen, bytes + p.klen, p.vlen, p.replace);
            off += sizeof(p) + p.klen + p.vlen;
        }
        if (rc == 0 || rc == 1) {
            *last = rc;
            return 0;
        }
        if (rc != MDB_MAP_FULL) {
            *error = tbl_strprintf("LMDB: %s", mdb_strerror(rc));
            return -1;
        }
    }
}

/* Commits the open transaction, growing the map when the commit needs it. */
static int commit_batch(struct hash_builder *b, char **error)
{
    for (;;) {
        int rc = mdb_txn_commit(b->txn);
        b->txn = NULL;   /* committed, or aborted by LMDB on failure */
        if (rc == 0)
            break;
        int last;
        if (rc != MDB_MAP_FULL) {
            *error = tbl_strprintf("LMDB commit: %s", mdb_strerror(rc));
            return -1;
        }
        if (grow_and_replay(b, &last, error) != 0)
            return -1;
    }
    buf_reset(&b->batch);
    b->batch_count = 0;
    return 0;
}

static int hash_build_put(void *builder, const void *key, size_t klen, const void *value, size_t vlen, int replace,
                          char **error)
{
    struct hash_builder *b = builder;
    if (klen == 0 || klen > b->max_key) {
        *error = tbl_strprintf("key of %zu bytes: LMDB keys are 1 to %zu bytes long", klen, b->max_key);
        return -1;
    }
    if (b->batch_count == BUILD_BATCH) {
        int rc;
        if (commit_batch(b, error) != 0)
            return -1;
        if ((rc = mdb_txn_begin(b->env, NULL, 0, &b->txn)) != 0) {
            *error = tbl_strprintf("LMDB: %s", mdb_strerror(rc));
            return -1;
        }
    }
    struct pending_put p = { klen, vlen, replace };
    buf_append(&b->batch, &p, sizeof(p));
    buf_append(&b->batch, key, klen);
    buf_append(&b->batch, value, vlen);
    b->batch_count++;
    int rc = put_one(b, key, klen, value, vlen, replace);
    if (rc == MDB_MAP_FULL && grow_and_replay(b, &rc, error) != 0)
        return -1;
    if (rc != 0 && rc != 1) {
        *error = tbl_strprintf("LMDB: %s", mdb_strerror(rc));
        return -1;
    }
    return rc;
}

static int hash_build_close(void *builder, int commit, char **error)
{
    struct hash_builder *b = builder;
    int rc = 0;
    if (commit)
        rc = commit_batch(b, error);
    if (b->txn)
        mdb_txn_abort(b->txn);
    mdb_env_close(b->env);
    buf_free(&b->batch);
    return rc;
}

const struct tbl_type tbl_type_hash = {
    .name = "hash",
    .open = hash_open,
    .lookup = hash_lookup,
    .close = hash_close,
    .suffix = HASH_SUFFIX,
    .build_open = hash_build_open,
    .build_put = hash_build_put,
    .build_close = hash_build_close,
    .iterate = hash_iterate,
};
