/*
 * Queue directories: opening the spool, the group commit of directory
 * fsyncs, moves between directories, streaming scans and the start-up
 * recovery scan.
 *
 * Group commit: a new queue file's directory entry is durable only after an
 * fsync of incoming/. One such fsync covers every entry created before it
 * began, so committers queue behind a generation counter and one of them
 * (the leader) issues the fsync for all who arrived while the previous one
 * ran. Under load that turns N directory fsyncs into about one per fsync
 * latency. Everything lives in struct queue; there is no global state.
 */
#include "config.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "lib/log.h"
#include "lib/xalloc.h"
#include "queue/queue.h"
#include "queue/queue_int.h"

static const char *const dir_names[QDIR_COUNT] = {
    [QDIR_INCOMING] = "incoming", [QDIR_ACTIVE] = "active", [QDIR_DEFERRED] = "deferred",
    [QDIR_HOLD] = "hold", [QDIR_CORRUPT] = "corrupt",
};

const char *queue_dir_name(enum queue_dir dir)
{
    return (unsigned)dir < QDIR_COUNT ? dir_names[dir] : "?";
}

int queue_dir_fd(const struct queue *q, enum queue_dir dir)
{
    return (unsigned)dir < QDIR_COUNT ? q->dir_fd[dir] : -1;
}

__attribute__((format(printf, 2, 3)))
static void set_error(char **error, const char *fmt, ...)
{
    if (!error)
        return;
    char text[4600];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(text, sizeof(text), fmt, ap);
    va_end(ap);
    *error = xstrdup(text);
}

struct queue *queue_open(const char *queue_directory, int create, char **error)
{
    if (create && mkdir(queue_directory, 0700) < 0 && errno != EEXIST) {
        set_error(error, "create queue directory %s: %s", queue_directory, strerror(errno));
        return NULL;
    }
    int base = open(queue_directory, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (base < 0) {
        set_error(error, "open queue directory %s: %s", queue_directory, strerror(errno));
        return NULL;
    }
    struct queue *q = xcalloc(1, sizeof(*q));
    q->path = xstrdup(queue_directory);
    for (int i = 0; i < QDIR_COUNT; i++)
        q->dir_fd[i] = -1;
    pthread_mutex_init(&q->sync_lock, NULL);
    pthread_cond_init(&q->sync_cond, NULL);
    for (int i = 0; i < QDIR_COUNT; i++) {
        if (create && mkdirat(base, dir_names[i], 0700) < 0 && errno != EEXIST) {
            set_error(error, "create %s/%s: %s", queue_directory, dir_names[i], strerror(errno));
            goto fail;
        }
        q->dir_fd[i] = openat(base, dir_names[i], O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (q->dir_fd[i] < 0) {
            set_error(error, "open %s/%s: %s", queue_directory, dir_names[i], strerror(errno));
            goto fail;
        }
    }
    if (create && queue_sync_dir(base) < 0) {   /* new subdirectories survive a crash */
        set_error(error, "fsync %s: %s", queue_directory, strerror(errno));
        goto fail;
    }
    close(base);
    return q;
fail:
    close(base);
    queue_close(q);
    return NULL;
}

void queue_close(struct queue *q)
{
    if (!q)
        return;
    for (int i = 0; i < QDIR_COUNT; i++)
        if (q->dir_fd[i] >= 0)
            close(q->dir_fd[i]);
    pthread_mutex_destroy(&q->sync_lock);
    pthread_cond_destroy(&q->sync_cond);
    free(q->path);
    free(q);
}

void queue_get_stats(struct queue *q, struct queue_stats *out)
{
    pthread_mutex_lock(&q->sync_lock);
    *out = q->stats;
    pthread_mutex_unlock(&q->sync_lock);
}

/* ---- durability ---- */

int queue_sync_file(int fd)
{
#ifdef PETREL_TEST_NO_FSYNC
    (void)fd;
    return 0;
#else
    /* fdatasync also flushes the size and block map a new file needs. */
    return fdatasync(fd);
#endif
}

int queue_sync_dir(int fd)
{
#ifdef PETREL_TEST_NO_FSYNC
    (void)fd;
    return 0;
#else
    return fsync(fd);
#endif
}

int queue_group_commit_incoming(struct queue *q)
{
    pthread_mutex_lock(&q->sync_lock);
#ifndef PETREL_TEST_NO_FSYNC
    unsigned long long target = q->sync_started + 1;
    while (q->sync_done < target) {
        if (q->sync_running) {
            pthread_cond_wait(&q->sync_cond, &q->sync_lock);
            continue;
        }
        unsigned long long gen = ++q->sync_started;
        q->sync_running = 1;
        pthread_mutex_unlock(&q->sync_lock);
        int rc = fsync(q->dir_fd[QDIR_INCOMING]);
        int err = errno;
        pthread_mutex_lock(&q->sync_lock);
        q->sync_running = 0;
        q->sync_done = gen;
        q->stats.dir_syncs++;
        if (rc < 0) {
            q->sync_failed_gen = gen;
            q->sync_failed_errno = err;
        }
        pthread_cond_broadcast(&q->sync_cond);
    }
    /* A failure of our generation or any later one fails us too: after a
     * failed fsync the entry's fate is unknown, and a spurious tempfail only
     * makes the client retry. */
    if (q->sync_failed_gen >= target) {
        int err = q->sync_failed_errno;
        pthread_mutex_unlock(&q->sync_lock);
        errno = err;
        return -1;
    }
#endif
    q->stats.commits++;
    pthread_mutex_unlock(&q->sync_lock);
    return 0;
}

/* ---- moves ---- */

static int check_move(const char *id, enum queue_dir from, enum queue_dir to)
{
    if (!id || !queue_id_valid(id) || (unsigned)from >= QDIR_COUNT || (unsigned)to >= QDIR_COUNT) {
        errno = EINVAL;
        return -1;
    }
    return 0;
}

int queue_move(struct queue *q, const char *id, enum queue_dir from, enum queue_dir to)
{
    if (check_move(id, from, to) < 0)
        return -1;
    return renameat(q->dir_fd[from], id, q->dir_fd[to], id);
}

int queue_move_durable(struct queue *q, const char *id, enum queue_dir from, enum queue_dir to)
{
    if (queue_move(q, id, from, to) < 0)
        return -1;
    if (queue_sync_dir(q->dir_fd[to]) < 0)
        return -1;
    return from == to ? 0 : queue_sync_dir(q->dir_fd[from]);
}

int queue_remove(struct queue *q, const char *id, enum queue_dir dir)
{
    if (check_move(id, dir, dir) < 0)
        return -1;
    return unlinkat(q->dir_fd[dir], id, 0);
}

/* ---- scans ---- */

/* Calls fn for every name but "." and ".." in dir, streaming readdir. */
static int scan_names(struct queue *q, enum queue_dir dir,
                      void (*fn)(void *ctx, const char *name), void *ctx)
{
    if ((unsigned)dir >= QDIR_COUNT) {
        errno = EINVAL;
        return -1;
    }
    /* A fresh descriptor: fdopendir takes it over, and its offset must not
     * be shared with the long-lived directory fd. */
    int fd = openat(q->dir_fd[dir], ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    DIR *d = fdopendir(fd);
    if (!d) {
        int err = errno;
        close(fd);
        errno = err;
        return -1;
    }
    struct dirent *de;
    errno = 0;
    while ((de = readdir(d)) != NULL) {
        if (de->d_name[0] == '.' && (de->d_name[1] == '\0'
                                     || (de->d_name[1] == '.' && de->d_name[2] == '\0')))
            continue;
        fn(ctx, de->d_name);
        errno = 0;
    }
    int err = errno;
    closedir(d);
    errno = err;
    return err ? -1 : 0;
}

struct id_filter {
    void (*cb)(void *ctx, const char *id);
    void *ctx;
};

static void call_if_id(void *ctx, const char *name)
{
    struct id_filter *f = ctx;
    if (queue_id_valid(name))
        f->cb(f->ctx, name);
}

int queue_scan(struct queue *q, enum queue_dir dir, void (*cb)(void *ctx, const char *id), void *ctx)
{
    struct id_filter f = { cb, ctx };
    return scan_names(q, dir, call_if_id, &f);
}

/* ---- recovery ---- */

struct recovery {
    struct queue *q;
    enum queue_dir dir;
    void (*found)(void *ctx, enum queue_dir dir, const char *id);
    void *ctx;
    struct queue_recover_stats *stats;
    petrel_pool *pool;   /* reset after every file */
};

static void to_corrupt(struct recovery *rc, const char *id, const char *reason)
{
    msg_warn("%s: moving damaged queue file to corrupt: %s", id, reason);
    if (queue_move(rc->q, id, rc->dir, QDIR_CORRUPT) < 0)
        msg_error("%s: cannot move %s/%s to corrupt/: %s", id, queue_dir_name(rc->dir), id,
                  strerror(errno));
    else
        rc->stats->moved_to_corrupt++;
}

static void recover_one(void *ctx, const char *name)
{
    struct recovery *rc = ctx;
    int dfd = rc->q->dir_fd[rc->dir];
    const char *dname = queue_dir_name(rc->dir);

    if (!queue_id_valid(name)) {
        msg_warn("%s/%s/%s: not a queue file name, ignored", rc->q->path, dname, name);
        rc->stats->ignored++;
        return;
    }
    int fd = openat(dfd, name, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK);
    if (fd < 0) {
        if (errno != ENOENT) {   /* ENOENT: gone since readdir */
            msg_warn("%s/%s/%s: %s, ignored", rc->q->path, dname, name, strerror(errno));
            rc->stats->ignored++;
        }
        return;
    }
    struct stat st;
    if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
        msg_warn("%s/%s/%s: not a regular file, ignored", rc->q->path, dname, name);
        close(fd);
        rc->stats->ignored++;
        return;
    }
    errno = 0;
    struct queue_message msg;
    char *reason = NULL;
    int ret = queue_message_read_fd(fd, name, rc->pool, &msg, &reason);
    int err = errno;
    close(fd);

    if (ret == 0) {
        switch (rc->dir) {
        case QDIR_INCOMING:
            /* Active scan runs later and reports it; no found() here. */
            if (queue_move(rc->q, name, QDIR_INCOMING, QDIR_ACTIVE) < 0)
                msg_error("%s: cannot move incoming file to active/: %s", name, strerror(errno));
            else
                rc->stats->recovered_incoming++;
            break;
        case QDIR_ACTIVE:
        case QDIR_DEFERRED:
            if (rc->dir == QDIR_ACTIVE)
                rc->stats->active++;
            else
                rc->stats->deferred++;
            if (rc->found)
                rc->found(rc->ctx, rc->dir, name);
            break;
        default:
            rc->stats->held++;
            break;
        }
    } else if (err == ENODATA && rc->dir == QDIR_INCOMING) {
        /* Never finished, so never acknowledged: nobody is owed this mail. */
        if (unlinkat(dfd, name, 0) == 0) {
            msg_info("%s: removed incomplete queue file", name);
            rc->stats->removed_incomplete++;
        } else {
            msg_error("%s: cannot remove incomplete queue file: %s", name, strerror(errno));
        }
    } else if (err == ENODATA || err == EBADMSG) {
        to_corrupt(rc, name, reason);
    } else {
        /* An I/O or permission error says nothing about the file: leave it. */
        msg_error("%s: cannot read queue file %s/%s: %s", name, dname, name, reason);
        rc->stats->ignored++;
    }
    petrel_pool_reset(rc->pool);
}

int queue_recover(struct queue *q, void (*found)(void *ctx, enum queue_dir dir, const char *id),
                  void *ctx, struct queue_recover_stats *stats)
{
    struct queue_recover_stats local;
    if (!stats)
        stats = &local;
    memset(stats, 0, sizeof(*stats));
    struct recovery rc = { .q = q, .found = found, .ctx = ctx, .stats = stats,
                           .pool = petrel_pool_create(0) };
    /* incoming/ first, so the files it sends to active/ are reported once. */
    static const enum queue_dir order[] = { QDIR_INCOMING, QDIR_HOLD, QDIR_ACTIVE, QDIR_DEFERRED };
    int ret = 0;
    for (size_t i = 0; i < sizeof(order) / sizeof(order[0]); i++) {
        rc.dir = order[i];
        if (scan_names(q, order[i], recover_one, &rc) < 0) {
            msg_error("cannot scan %s/%s: %s", q->path, queue_dir_name(order[i]), strerror(errno));
            ret = -1;
        }
    }
    petrel_pool_destroy(rc.pool);
    return ret;
}
