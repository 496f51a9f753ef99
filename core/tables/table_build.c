/*
 * Writing a compiled table file (see table.h, "Writing a compiled file").
 *
 * The new contents go to a temporary file in the same directory as the
 * compiled file (NAME.lmdb.XXXXXX), which the type fills through its
 * build_open/build_put/build_close callbacks. Commit then makes it durable
 * and atomic, in this order: fchmod/fchown, fsync of the file, rename over
 * NAME + suffix, fsync of the directory. A reader that has the old file
 * open keeps reading it (the inode lives while it is open or mapped), and
 * a reader that opens the path gets either the old file or the complete
 * new one: there is no moment when the path names a half-written file.
 *
 * Permissions follow postmap(1): the result is readable by group and
 * others only when the source file is (postmap -p: 0644 regardless), and
 * when root builds a table whose source belongs to someone else, the
 * result belongs to that owner too (postmap runs as the source's owner).
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "lib/log.h"
#include "lib/xalloc.h"
#include "tables/table.h"
#include "tables/table_impl.h"

struct tbl_build {
    const struct tbl_type *type;
    char *final_path;     /* NAME + suffix */
    char *temp_path;
    int fd;               /* the temporary, kept open for fsync */
    void *builder;
    petrel_pool *pool;
    mode_t mode;
    uid_t uid;
    gid_t gid;
    int chown;
};

const char *tbl_build_path(const struct tbl_build *b)
{
    return b->final_path;
}

static void free_build(struct tbl_build *b)
{
    if (b->fd >= 0)
        close(b->fd);
    petrel_pool_destroy(b->pool);
    free(b->final_path);
    free(b->temp_path);
    free(b);
}

struct tbl_build *tbl_build_begin(const struct tbl_registry *reg, const char *spec,
                                  const struct tbl_build_options *opts, char **error)
{
    *error = NULL;
    const struct tbl_type *type = NULL;
    char *final_path = tbl_compiled_path(reg, spec, &type);
    if (type == NULL) {
        /* tbl_open's message says what is missing (a module, a type). */
        struct tbl *t = tbl_open(reg, spec, 0, error);
        tbl_close(t);
        if (*error == NULL)
            *error = tbl_strprintf("%s: unknown table type", spec);
        return NULL;
    }
    if (final_path == NULL || type->build_open == NULL) {
        *error = tbl_strprintf("%s: %s: tables are not built from a file (only hash:, lmdb:, cdb: are)", spec,
                               type->name);
        free(final_path);
        return NULL;
    }
    struct tbl_build *b = xcalloc(1, sizeof(*b));
    b->type = type;
    b->final_path = final_path;
    b->fd = -1;
    b->pool = petrel_pool_create(0);
    b->mode = 0644;
    if (opts && opts->source) {
        struct stat st;
        if (stat(opts->source, &st) != 0) {
            *error = tbl_strprintf("%s: %s", opts->source, strerror(errno));
            free_build(b);
            return NULL;
        }
        if (!opts->default_mode && S_ISREG(st.st_mode))
            b->mode = (mode_t)(0600 | (st.st_mode & 044));
        if (geteuid() == 0 && st.st_uid != 0) {
            b->chown = 1;
            b->uid = st.st_uid;
            b->gid = st.st_gid;
        } else if (geteuid() == 0) {
            /* Postfix's warning: the directory's owner could swap the files. */
            char *copy = xstrdup(opts->source);
            const char *dir = dirname(copy);
            struct stat dst;
            if (stat(dir, &dst) == 0 && dst.st_uid != 0)
                msg_warn("creating root-owned database file %s in non-root-owned directory %s: files %s, %s and "
                         "directory %s should have the same owner; fix the ownership to avoid a "
                         "privilege-escalation attack", final_path, dir, opts->source, final_path, dir);
            free(copy);
        }
    }
    b->temp_path = tbl_strprintf("%s.XXXXXX", final_path);
    b->fd = mkostemp(b->temp_path, O_CLOEXEC);
    if (b->fd < 0) {
        *error = tbl_strprintf("create a temporary file for %s: %s", final_path, strerror(errno));
        free(b->temp_path);
        b->temp_path = NULL;
        free_build(b);
        return NULL;
    }
    char *why = NULL;
    b->builder = type->build_open(type, b->temp_path, b->pool, &why);
    if (b->builder == NULL) {
        *error = tbl_strprintf("%s: %s", b->temp_path, why ? why : "cannot create the table");
        free(why);
        unlink(b->temp_path);
        free_build(b);
        return NULL;
    }
    return b;
}

int tbl_build_put(struct tbl_build *b, const void *key, size_t klen, const void *value, size_t vlen, int replace,
                  char **error)
{
    char *why = NULL;
    *error = NULL;
    int rc = b->type->build_put(b->builder, key, klen, value, vlen, replace, &why);
    if (rc < 0) {
        *error = tbl_strprintf("%s: %s", b->final_path, why ? why : "write error");
        free(why);
    }
    return rc;
}

void tbl_build_abort(struct tbl_build *b)
{
    char *why = NULL;
    if (b->builder)
        b->type->build_close(b->builder, 0, &why);
    free(why);
    unlink(b->temp_path);
    free_build(b);
}

int tbl_build_commit(struct tbl_build *b, char **error)
{
    char *why = NULL;
    *error = NULL;
    void *builder = b->builder;
    b->builder = NULL;
    if (b->type->build_close(builder, 1, &why) != 0) {
        *error = tbl_strprintf("%s: %s", b->temp_path, why ? why : "cannot finish the table");
        free(why);
        goto fail;
    }
    if (fchmod(b->fd, b->mode) != 0 || (b->chown && fchown(b->fd, b->uid, b->gid) != 0)) {
        *error = tbl_strprintf("%s: set owner and mode: %s", b->temp_path, strerror(errno));
        goto fail;
    }
    if (fsync(b->fd) != 0) {
        *error = tbl_strprintf("fsync %s: %s", b->temp_path, strerror(errno));
        goto fail;
    }
    if (rename(b->temp_path, b->final_path) != 0) {
        *error = tbl_strprintf("rename %s to %s: %s", b->temp_path, b->final_path, strerror(errno));
        goto fail;
    }
    char *copy = xstrdup(b->final_path);
    int dfd = open(dirname(copy), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    free(copy);
    if (dfd < 0 || fsync(dfd) != 0) {
        /* The new file is in place; only its durability across a crash is
         * in doubt. */
        *error = tbl_strprintf("fsync the directory of %s: %s", b->final_path, strerror(errno));
        if (dfd >= 0)
            close(dfd);
        free_build(b);
        return -1;
    }
    close(dfd);
    free_build(b);
    return 0;
fail:
    unlink(b->temp_path);
    free_build(b);
    return -1;
}
