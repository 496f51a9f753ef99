/*
 * postscreen's temporary allowlist (postscreen_cache_map): for each client
 * address, when each test it passed expires ("t1;t2;t3;t4;t5", Postfix's
 * format). Postfix keeps it in a btree (or lmdb) file that its single
 * postscreen process owns; here every smtpd worker screens, so the cache
 * must be shared by processes, survive reloads (new workers) and restarts.
 *
 * An LMDB file does all three: LMDB is built for several processes reading
 * and writing one file (readers never block; writers take a robust
 * process-shared lock), and the library is already the core's (hash:
 * tables). The shared connection table (anvil.c) was the other candidate;
 * it is fast but lives only as long as the master and has fixed slots,
 * while a cache of clients seen over days wants neither limit.
 *
 * Reads happen on the loop (a read transaction is a few hundred
 * nanoseconds, no lock, no I/O beyond the page cache). Writes go to the
 * worker's thread pool, because a commit fsyncs: Postfix syncs each update
 * too, but on its only process. The cleanup of expired entries
 * (postscreen_cache_cleanup_interval) runs there as well; the time of the
 * last one is kept in the file under Postfix's key
 * _LAST_CACHE_CLEANUP_COMPLETED_, so of all the workers that look, one
 * does it.
 *
 * Values are any of btree:, hash: and lmdb: (Postfix's cache types on a
 * Debian system); the file is PATH.lmdb with its lock file PATH.lmdb-lock.
 * An existing Postfix btree file is not read: the cache starts empty,
 * which costs each returning client one more round of tests.
 */
#include "config.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <lmdb.h>

#include "lib/log.h"
#include "lib/workq.h"
#include "lib/xalloc.h"
#include "smtpd/psc.h"
#include "smtpd/smtpd_int.h"

#define CACHE_SUFFIX ".lmdb"
#define CACHE_MAP_SIZE (256UL * 1024 * 1024)   /* address space, not disk: the file grows with use */
#define CLEANUP_KEY "_LAST_CACHE_CLEANUP_COMPLETED_"
#define VALUE_MAX 256

struct psc_cache {
    MDB_env *env;
    MDB_dbi dbi;
    char *path;
};

int psc_cache_spec(const char *spec, char **path_out, char **error)
{
    const char *p = spec;
    if (strncmp(p, "proxy:", 6) == 0)
        p += 6;   /* Postfix's proxywrite: one writer for several processes; LMDB does that itself */
    const char *colon = strchr(p, ':');
    if (colon == NULL) {
        if (asprintf(error, "\"%s\" is not type:name", spec) < 0)
            *error = NULL;
        return -1;
    }
    size_t tlen = (size_t)(colon - p);
    int known = (tlen == 5 && strncasecmp(p, "btree", 5) == 0) || (tlen == 4 && strncasecmp(p, "hash", 4) == 0) ||
                (tlen == 4 && strncasecmp(p, "lmdb", 4) == 0);
    if (!known) {
        if (asprintf(error, "type \"%.*s\" is not supported for the postscreen cache (use btree:, hash: or lmdb:, "
                     "an LMDB file every smtpd worker shares)", (int)tlen, p) < 0)
            *error = NULL;
        return -1;
    }
    const char *name = colon + 1;
    if (name[0] != '/') {
        if (asprintf(error, "\"%s\": the cache file needs an absolute path", spec) < 0)
            *error = NULL;
        return -1;
    }
    if (path_out && asprintf(path_out, "%s%s", name, CACHE_SUFFIX) < 0)
        msg_fatal("out of memory");
    return 0;
}

struct psc_cache *psc_cache_open(const char *path, char **error)
{
    struct psc_cache *c = xcalloc(1, sizeof(*c));
    c->path = xstrdup(path);
    MDB_txn *txn = NULL;
    int rc = mdb_env_create(&c->env);
    if (rc == 0)
        rc = mdb_env_set_mapsize(c->env, CACHE_MAP_SIZE);
    if (rc == 0)
        rc = mdb_env_open(c->env, path, MDB_NOSUBDIR | MDB_NOTLS, 0600);
    if (rc == 0) {
        int dead = 0;
        mdb_reader_check(c->env, &dead);   /* reader slots of crashed workers */
        rc = mdb_txn_begin(c->env, NULL, 0, &txn);
    }
    if (rc == 0)
        rc = mdb_dbi_open(txn, NULL, 0, &c->dbi);
    if (rc == 0)
        rc = mdb_txn_commit(txn);
    else if (txn)
        mdb_txn_abort(txn);
    if (rc != 0) {
        if (asprintf(error, "open %s: %s", path, mdb_strerror(rc)) < 0)
            *error = NULL;
        psc_cache_close(c);
        return NULL;
    }
    return c;
}

void psc_cache_close(struct psc_cache *c)
{
    if (c == NULL)
        return;
    if (c->env)
        mdb_env_close(c->env);
    free(c->path);
    free(c);
}

const char *psc_cache_path(const struct psc_cache *c)
{
    return c->path;
}

int psc_cache_lookup(struct psc_cache *c, const char *addr, char *out, size_t size)
{
    MDB_txn *txn;
    int rc = mdb_txn_begin(c->env, NULL, MDB_RDONLY, &txn);
    if (rc == MDB_MAP_RESIZED) {
        mdb_env_set_mapsize(c->env, 0);
        rc = mdb_txn_begin(c->env, NULL, MDB_RDONLY, &txn);
    }
    if (rc != 0) {
        msg_warn("postscreen cache %s: %s", c->path, mdb_strerror(rc));
        return -1;
    }
    MDB_val k = { strlen(addr), (void *)addr }, v;
    rc = mdb_get(txn, c->dbi, &k, &v);
    int found = 0;
    if (rc == 0) {
        size_t n = v.mv_size < size - 1 ? v.mv_size : size - 1;
        memcpy(out, v.mv_data, n);
        out[n] = '\0';
        found = 1;
    } else if (rc != MDB_NOTFOUND) {
        msg_warn("postscreen cache %s: lookup %s: %s", c->path, addr, mdb_strerror(rc));
        found = -1;
    }
    mdb_txn_abort(txn);
    return found;
}

/* ------------------------------------------------------------------ */
/* writes, on the worker's threads                                     */

struct update_job {
    struct psc_cache *c;
    char key[64];
    char value[VALUE_MAX];
    int rc;
    void (*done)(void *arg, int cancelled);
    void *arg;
};

static int write_txn(struct psc_cache *c, MDB_txn **txn)
{
    int rc = mdb_txn_begin(c->env, NULL, 0, txn);
    if (rc == MDB_MAP_RESIZED) {
        mdb_env_set_mapsize(c->env, 0);
        rc = mdb_txn_begin(c->env, NULL, 0, txn);
    }
    return rc;
}

static void update_work(void *arg)
{
    struct update_job *j = arg;
    MDB_txn *txn;
    j->rc = write_txn(j->c, &txn);
    if (j->rc != 0)
        return;
    MDB_val k = { strlen(j->key), j->key }, v = { strlen(j->value), j->value };
    j->rc = mdb_put(txn, j->c->dbi, &k, &v, 0);
    if (j->rc == 0)
        j->rc = mdb_txn_commit(txn);
    else
        mdb_txn_abort(txn);
}

static void update_done(void *arg, int cancelled)
{
    struct update_job *j = arg;
    if (j->rc != 0)
        msg_warn("postscreen cache %s: update %s: %s", j->c->path, j->key, mdb_strerror(j->rc));
    if (j->done)
        j->done(j->arg, cancelled);
    free(j);
}

struct workq_job *psc_cache_update(struct smtpd_worker *w, struct psc_cache *c, const char *addr,
                                   const char *value, void (*done)(void *arg, int cancelled), void *arg)
{
    struct update_job *j = xcalloc(1, sizeof(*j));
    j->c = c;
    snprintf(j->key, sizeof(j->key), "%s", addr);
    snprintf(j->value, sizeof(j->value), "%s", value);
    j->done = done;
    j->arg = arg;
    struct workq_job *job = workq_submit(w->workq, update_work, update_done, j);
    if (job == NULL)
        free(j);
    return job;
}

/* ------------------------------------------------------------------ */
/* cleanup                                                             */

struct cleanup_job {
    struct psc_cache *c;
    long long interval;
    time_t now;
    int (*keep)(const char *value, time_t now, void *arg);
    void *arg;
    int ran;
    unsigned long retained, dropped;
    int rc;
};

static void cleanup_work(void *arg)
{
    struct cleanup_job *j = arg;
    MDB_txn *txn;
    j->rc = write_txn(j->c, &txn);
    if (j->rc != 0)
        return;
    MDB_val k = { strlen(CLEANUP_KEY), CLEANUP_KEY }, v;
    int rc = mdb_get(txn, j->c->dbi, &k, &v);
    if (rc == 0) {
        char stamp[32];
        size_t n = v.mv_size < sizeof(stamp) - 1 ? v.mv_size : sizeof(stamp) - 1;
        memcpy(stamp, v.mv_data, n);
        stamp[n] = '\0';
        long long last = strtoll(stamp, NULL, 10);
        if (last > 0 && j->now - last < j->interval) {
            mdb_txn_abort(txn);
            return;   /* another worker did it */
        }
    }
    MDB_cursor *cur;
    j->rc = mdb_cursor_open(txn, j->c->dbi, &cur);
    if (j->rc != 0) {
        mdb_txn_abort(txn);
        return;
    }
    MDB_val ck, cv;
    rc = mdb_cursor_get(cur, &ck, &cv, MDB_FIRST);
    while (rc == 0) {
        int is_stamp = ck.mv_size == strlen(CLEANUP_KEY) && memcmp(ck.mv_data, CLEANUP_KEY, ck.mv_size) == 0;
        if (!is_stamp) {
            char value[VALUE_MAX];
            size_t n = cv.mv_size < sizeof(value) - 1 ? cv.mv_size : sizeof(value) - 1;
            memcpy(value, cv.mv_data, n);
            value[n] = '\0';
            if (j->keep(value, j->now, j->arg)) {
                j->retained++;
            } else {
                rc = mdb_cursor_del(cur, 0);
                if (rc != 0)
                    break;
                j->dropped++;
            }
        }
        rc = mdb_cursor_get(cur, &ck, &cv, MDB_NEXT);
    }
    mdb_cursor_close(cur);
    if (rc != MDB_NOTFOUND) {
        j->rc = rc;
        mdb_txn_abort(txn);
        return;
    }
    char stamp[32];
    snprintf(stamp, sizeof(stamp), "%lld", (long long)j->now);
    v.mv_size = strlen(stamp);
    v.mv_data = stamp;
    j->rc = mdb_put(txn, j->c->dbi, &k, &v, 0);
    if (j->rc == 0)
        j->rc = mdb_txn_commit(txn);
    else
        mdb_txn_abort(txn);
    j->ran = j->rc == 0;
}

static void cleanup_done(void *arg, int cancelled)
{
    struct cleanup_job *j = arg;
    if (j->rc != 0)
        msg_warn("postscreen cache %s: cleanup: %s", j->c->path, mdb_strerror(j->rc));
    else if (j->ran && !cancelled) {
        psc_log("cache %s full cleanup: retained=%lu dropped=%lu entries", j->c->path, j->retained, j->dropped);
    }
    free(j);
}

void psc_cache_cleanup(struct smtpd_worker *w, struct psc_cache *c, long long interval, long long retention,
                       int (*keep)(const char *value, time_t now, void *arg), void *arg)
{
    (void)retention;   /* the keep callback applies it */
    struct cleanup_job *j = xcalloc(1, sizeof(*j));
    j->c = c;
    j->interval = interval;
    j->now = time(NULL);
    j->keep = keep;
    j->arg = arg;
    if (workq_submit(w->workq, cleanup_work, cleanup_done, j) == NULL)
        free(j);
}
