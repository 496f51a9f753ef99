/*
 * cdb: lookup tables in D. J. Bernstein's constant database format, read
 * and written with tinycdb (cdb:NAME reads NAME.cdb), as Postfix's cdb:
 * type does: keys and values end in a NUL byte unless built with -n, and a
 * lookup tries the key with its NUL, then without.
 *
 * A cdb file cannot change once written, which is exactly how Petrel
 * replaces tables anyway: `petrelctl map build cdb:NAME` has this module
 * fill a temporary file, then fsyncs it and renames it over NAME.cdb, and
 * petreld reopens the new file by itself. The file is memory-mapped:
 * lookups cost no system call.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cdb.h>

#include <petrel/plugin.h>

#define SUFFIX ".cdb"

enum nul_form { NUL_UNKNOWN, NUL_WITH, NUL_WITHOUT };

struct table {
    petrel_module *module;
    struct cdb cdb;
    int open;
    enum nul_form nul;
    const char *path;
};

static void table_close(void *handle)
{
    struct table *t = handle;
    if (t->open) {
        int fd = cdb_fileno(&t->cdb);
        cdb_free(&t->cdb);
        close(fd);
    }
    t->open = 0;
}

static void *table_open(petrel_module *m, const char *name, petrel_pool *pool, const char **error)
{
    struct table *t = petrel_pool_zalloc(pool, sizeof(*t));
    t->module = m;
    t->path = petrel_pool_printf(pool, "%s%s", name, SUFFIX);
    int fd = open(t->path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        *error = petrel_pool_printf(pool, "open database %s: %s", t->path, strerror(errno));
        return NULL;
    }
    if (cdb_init(&t->cdb, fd) != 0) {
        *error = petrel_pool_printf(pool, "open database %s: %s", t->path,
                                    errno == EPROTO ? "not a cdb file (or a damaged one)" : strerror(errno));
        close(fd);
        return NULL;
    }
    t->open = 1;
    return t;
}

static int table_lookup(void *handle, const char *key, const char **value, petrel_pool *scratch)
{
    struct table *t = handle;
    size_t klen = strlen(key);
    int rc = 0;
    if (t->nul != NUL_WITHOUT && (rc = cdb_find(&t->cdb, key, (unsigned)klen + 1)) > 0)
        t->nul = NUL_WITH;
    if (rc == 0 && t->nul != NUL_WITH && (rc = cdb_find(&t->cdb, key, (unsigned)klen)) > 0)
        t->nul = NUL_WITHOUT;
    if (rc < 0) {
        petrel_module_log(t->module, PETREL_LOG_WARNING, "%s: lookup: %s", t->path,
                          errno == EPROTO ? "damaged cdb file" : strerror(errno));
        return -1;
    }
    if (rc == 0)
        return 0;
    unsigned len = cdb_datalen(&t->cdb);
    const char *data = cdb_getdata(&t->cdb);
    if (data == NULL) {
        petrel_module_log(t->module, PETREL_LOG_WARNING, "%s: lookup: damaged cdb file", t->path);
        return -1;
    }
    *value = petrel_pool_strndup(scratch, data, strnlen(data, len));
    return 1;
}

static int table_iterate(void *handle, int (*fn)(void *arg, const void *key, size_t klen, const void *value,
                                                 size_t vlen),
                         void *arg, const char **error)
{
    struct table *t = handle;
    unsigned pos;
    int rc;
    cdb_seqinit(&pos, &t->cdb);
    while ((rc = cdb_seqnext(&pos, &t->cdb)) > 0) {
        const void *k = cdb_getkey(&t->cdb), *v = cdb_getdata(&t->cdb);
        if (k == NULL || v == NULL) {
            rc = -1;
            break;
        }
        if (fn(arg, k, cdb_keylen(&t->cdb), v, cdb_datalen(&t->cdb)))
            return 0;
    }
    if (rc < 0) {
        *error = "damaged cdb file";
        return -1;
    }
    return 0;
}

/* ------------------------------------------------------------------ */
/* building (petrelctl map build cdb:NAME)                             */

struct builder {
    struct cdb_make make;
    int fd;
    petrel_pool *pool;
};

static void *build_open(petrel_module *m, const char *path, petrel_pool *pool, const char **error)
{
    struct builder *b = petrel_pool_zalloc(pool, sizeof(*b));
    b->pool = pool;
    b->fd = open(path, O_RDWR | O_CLOEXEC);
    if (b->fd < 0 || cdb_make_start(&b->make, b->fd) != 0) {
        *error = petrel_pool_printf(pool, "%s: %s", path, strerror(errno));
        if (b->fd >= 0)
            close(b->fd);
        return NULL;
    }
    return b;
}

static int build_put(void *builder, const void *key, size_t klen, const void *value, size_t vlen, int replace,
                     const char **error)
{
    struct builder *b = builder;
    if (klen > 0x7fffffff || vlen > 0x7fffffff) {
        *error = "entry too large for a cdb file";
        return -1;
    }
    int rc = cdb_make_put(&b->make, key, (unsigned)klen, value, (unsigned)vlen,
                          replace ? CDB_PUT_REPLACE : CDB_PUT_INSERT);
    if (rc < 0) {
        *error = petrel_pool_printf(b->pool, "write: %s", strerror(errno));
        return -1;
    }
    return rc > 0 ? 1 : 0;
}

static int build_close(void *builder, int commit, const char **error)
{
    struct builder *b = builder;
    int rc = 0;
    if (commit && cdb_make_finish(&b->make) != 0) {
        *error = petrel_pool_printf(b->pool, "finish the cdb file: %s", strerror(errno));
        rc = -1;
    } else if (!commit) {
        /* cdb_make keeps its index in memory until finish: free it */
        cdb_make_finish(&b->make);
    }
    close(b->fd);
    return rc;
}

static const petrel_table_type table_types[] = {
    {
        PETREL_TABLE_TYPE_INIT,
        .name = "cdb",
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
    .name = "cdb",
    .version = "1.0",
    .description = "cdb: lookup tables (constant databases, tinycdb; built with petrelctl map build)",
    .table_types = table_types,
};
