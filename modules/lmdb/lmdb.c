/*
 * lmdb: lookup tables in Postfix's lmdb format (lmdb:NAME reads NAME.lmdb).
 *
 * The file format is the one Postfix's dict_lmdb and the core's hash:
 * type use, so lmdb:NAME and hash:NAME are the same file and Postfix's
 * postmap reads what `petrelctl map build lmdb:NAME` writes: one unnamed
 * database in a single file, no lock file, keys and values ending in a NUL
 * byte unless built with -n. A lookup tries the key with its NUL, then
 * without, and remembers the form that answered.
 *
 * Built only through the public API, as any third-party table plugin:
 * open/lookup/close for petreld, build_open/build_put/build_close/iterate
 * for `petrelctl map build`, which writes the file beside the compiled one
 * and renames it into place (so the reader here never sees a file change
 * under it; petreld reopens a rebuilt file by itself).
 */
#include <stdlib.h>
#include <string.h>

#include <lmdb.h>

#include <petrel/plugin.h>

#define SUFFIX ".lmdb"
#define BUILD_MAP_SIZE ((size_t)16 * 1024 * 1024)   /* Postfix's lmdb_map_size */
#define BUILD_BATCH 10000                           /* puts per write transaction */

enum nul_form { NUL_UNKNOWN, NUL_WITH, NUL_WITHOUT };

struct table {
    petrel_module *module;
    MDB_env *env;
    MDB_dbi dbi;
    MDB_txn *txn;            /* a read transaction, renewed for each lookup */
    enum nul_form nul;
    size_t max_key;
    const char *path;
};

static void table_close(void *handle)
{
    struct table *t = handle;
    if (t->txn)
        mdb_txn_abort(t->txn);
    if (t->env)
        mdb_env_close(t->env);
    t->txn = NULL;
    t->env = NULL;
}

static void *table_open(petrel_module *m, const char *name, petrel_pool *pool, const char **error)
{
    struct table *t = petrel_pool_zalloc(pool, sizeof(*t));
    t->module = m;
    t->path = petrel_pool_printf(pool, "%s%s", name, SUFFIX);
    int rc = mdb_env_create(&t->env);
    if (rc == 0)
        rc = mdb_env_open(t->env, t->path, MDB_NOSUBDIR | MDB_NOLOCK | MDB_RDONLY, 0);
    if (rc == 0)
        rc = mdb_txn_begin(t->env, NULL, MDB_RDONLY, &t->txn);
    if (rc == 0)
        rc = mdb_dbi_open(t->txn, NULL, 0, &t->dbi);
    if (rc != 0) {
        *error = petrel_pool_printf(pool, "open database %s: %s", t->path, mdb_strerror(rc));
        table_close(t);
        return NULL;
    }
    mdb_txn_reset(t->txn);
    t->max_key = (size_t)mdb_env_get_maxkeysize(t->env);
    return t;
}

static int begin_read(struct table *t)
{
    int rc = mdb_txn_renew(t->txn);
    if (rc == MDB_MAP_RESIZED) {
        /* grown in place by another writer (Postfix's postmap): map it all */
        mdb_env_set_mapsize(t->env, 0);
        rc = mdb_txn_renew(t->txn);
    }
    return rc;
}

static int table_lookup(void *handle, const char *key, const char **value, petrel_pool *scratch)
{
    struct table *t = handle;
    size_t klen = strlen(key);
    if (klen == 0 || klen > t->max_key)
        return 0;   /* LMDB cannot hold such a key: not in the table */
    int rc = begin_read(t);
    if (rc != 0) {
        petrel_module_log(t->module, PETREL_LOG_WARNING, "%s: %s", t->path, mdb_strerror(rc));
        return -1;
    }
    MDB_val k = { 0, (void *)key }, v;
    rc = MDB_NOTFOUND;
    if (t->nul != NUL_WITHOUT && klen < t->max_key) {
        k.mv_size = klen + 1;
        if ((rc = mdb_get(t->txn, t->dbi, &k, &v)) == 0)
            t->nul = NUL_WITH;
    }
    if (rc == MDB_NOTFOUND && t->nul != NUL_WITH) {
        k.mv_size = klen;
        if ((rc = mdb_get(t->txn, t->dbi, &k, &v)) == 0)
            t->nul = NUL_WITHOUT;
    }
    int status = 0;
    if (rc == 0) {
        *value = petrel_pool_strndup(scratch, v.mv_data, strnlen(v.mv_data, v.mv_size));
        status = 1;
    } else if (rc != MDB_NOTFOUND) {
        petrel_module_log(t->module, PETREL_LOG_WARNING, "%s: lookup: %s", t->path, mdb_strerror(rc));
        status = -1;
    }
    mdb_txn_reset(t->txn);
    return status;
}

static int table_iterate(void *handle, int (*fn)(void *arg, const void *key, size_t klen, const void *value,
                                                 size_t vlen),
                         void *arg, const char **error)
{
    struct table *t = handle;
    MDB_cursor *cursor = NULL;
    int rc = begin_read(t);
    if (rc == 0)
        rc = mdb_cursor_open(t->txn, t->dbi, &cursor);
    MDB_val k, v;
    for (MDB_cursor_op op = MDB_FIRST; rc == 0; op = MDB_NEXT)
        if ((rc = mdb_cursor_get(cursor, &k, &v, op)) == 0 && fn(arg, k.mv_data, k.mv_size, v.mv_data, v.mv_size))
            break;
    if (cursor)
        mdb_cursor_close(cursor);
    mdb_txn_reset(t->txn);
    if (rc != 0 && rc != MDB_NOTFOUND) {
        *error = mdb_strerror(rc);
        return -1;
    }
    return 0;
}

/* ------------------------------------------------------------------ */
/* building (petrelctl map build lmdb:NAME)                            */

struct builder {
    MDB_env *env;
    MDB_txn *txn;
    MDB_dbi dbi;
    size_t map_size;
    size_t max_key;
    petrel_pool *pool;
    /* the puts of the open transaction, replayed when the map must grow:
     * a linked list in the builder's pool, dropped at each commit */
    struct put *first, **last;
    size_t count;
    petrel_pool *batch;
};

struct put {
    struct put *next;
    size_t klen, vlen;
    int replace;
    char *bytes;     /* key, then value */
};

static int put_one(struct builder *b, const void *key, size_t klen, const void *value, size_t vlen, int replace)
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

/* MDB_MAP_FULL: the transaction is gone; grow the map, replay its puts.
 * *last: the outcome of the last put (0 added, 1 existed). */
static int grow_and_replay(struct builder *b, int *last, const char **error)
{
    for (;;) {
        if (b->txn)
            mdb_txn_abort(b->txn);
        b->txn = NULL;
        if (b->map_size > ((size_t)1 << 40)) {
            *error = "LMDB map size limit reached";
            return -1;
        }
        b->map_size *= 2;
        int rc = mdb_env_set_mapsize(b->env, b->map_size);
        if (rc == 0)
            rc = mdb_txn_begin(b->env, NULL, 0, &b->txn);
        for (struct put *p = b->first; p && (rc == 0 || rc == 1); p = p->next)
            rc = put_one(b, p->bytes, p->klen, p->bytes + p->klen, p->vlen, p->replace);
        if (rc == 0 || rc == 1) {
            *last = rc;
            return 0;
        }
        if (rc != MDB_MAP_FULL) {
            *error = mdb_strerror(rc);
            return -1;
        }
    }
}

static int commit_batch(struct builder *b, const char **error)
{
    for (;;) {
        int rc = mdb_txn_commit(b->txn);
        b->txn = NULL;   /* committed, or aborted by LMDB */
        if (rc == 0)
            break;
        int last;
        if (rc != MDB_MAP_FULL) {
            *error = mdb_strerror(rc);
            return -1;
        }
        if (grow_and_replay(b, &last, error) != 0)
            return -1;
    }
    petrel_pool_reset(b->batch);
    b->first = NULL;
    b->last = &b->first;
    b->count = 0;
    return 0;
}

static void *build_open(petrel_module *m, const char *path, petrel_pool *pool, const char **error)
{
    struct builder *b = petrel_pool_zalloc(pool, sizeof(*b));
    b->pool = pool;
    b->batch = petrel_pool_create(0);
    b->last = &b->first;
    b->map_size = BUILD_MAP_SIZE;
    /* private until renamed into place: no lock file, one fsync (petrelctl's) */
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
        *error = petrel_pool_printf(pool, "create LMDB database: %s", mdb_strerror(rc));
        if (b->txn)
            mdb_txn_abort(b->txn);
        if (b->env)
            mdb_env_close(b->env);
        petrel_pool_destroy(b->batch);
        return NULL;
    }
    b->max_key = (size_t)mdb_env_get_maxkeysize(b->env);
    return b;
}

static int build_put(void *builder, const void *key, size_t klen, const void *value, size_t vlen, int replace,
                     const char **error)
{
    struct builder *b = builder;
    if (klen == 0 || klen > b->max_key) {
        *error = petrel_pool_printf(b->pool, "key of %zu bytes: LMDB keys are 1 to %zu bytes long", klen,
                                    b->max_key);
        return -1;
    }
    if (b->count == BUILD_BATCH) {
        int rc;
        if (commit_batch(b, error) != 0)
            return -1;
        if ((rc = mdb_txn_begin(b->env, NULL, 0, &b->txn)) != 0) {
            *error = mdb_strerror(rc);
            return -1;
        }
    }
    struct put *p = petrel_pool_zalloc(b->batch, sizeof(*p));
    p->klen = klen;
    p->vlen = vlen;
    p->replace = replace;
    p->bytes = petrel_pool_alloc(b->batch, klen + vlen + 1);
    memcpy(p->bytes, key, klen);
    memcpy(p->bytes + klen, value, vlen);
    *b->last = p;
    b->last = &p->next;
    b->count++;
    int rc = put_one(b, key, klen, value, vlen, replace);
    if (rc == MDB_MAP_FULL && grow_and_replay(b, &rc, error) != 0)
        return -1;
    if (rc != 0 && rc != 1) {
        *error = mdb_strerror(rc);
        return -1;
    }
    return rc;
}

static int build_close(void *builder, int commit, const char **error)
{
    struct builder *b = builder;
    int rc = commit ? commit_batch(b, error) : 0;
    if (b->txn)
        mdb_txn_abort(b->txn);
    mdb_env_close(b->env);
    petrel_pool_destroy(b->batch);
    return rc;
}

static const petrel_table_type table_types[] = {
    {
        PETREL_TABLE_TYPE_INIT,
        .name = "lmdb",
        .open = table_open,
        .lookup = table_lookup,
        .close = table_close,
        .suffix = SUFFIX,
        .build_open = build_open,
        .build_put = build_put,
        .build_close = build_close,
        .iterate = table_iterate,
    },
    { .name = NULL },
};

const petrel_module_desc petrel_module_descriptor = {
    PETREL_MODULE_INIT,
    .name = "lmdb",
    .version = "1.0",
    .description = "lmdb: lookup tables (Postfix's LMDB files, built with petrelctl map build)",
    .table_types = table_types,
};
