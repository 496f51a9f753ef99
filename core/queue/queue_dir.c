/*
 * Queue directories: opening the spool, the group commit of directory
 * fsyncs, moves between directories and streaming scans (the start-up
 * recovery scan, which reads the files, is queue_recover.c).
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

unsigned long long queue_sync_generation(struct queue *q)
{
    pthread_mutex_lock(&q->sync_lock);
    unsigned long long gen = q->sync_started;
    pthread_mutex_unlock(&q->sync_lock);
    return gen;
}

int queue_group_commit_incoming(struct queue *q, unsigned long long created_after)
{
    pthread_mutex_lock(&q->sync_lock);
#ifndef PETREL_TEST_NO_FSYNC
    /* Any sync begun after the entry was created covers it: usually one that
     * ran while the message streamed in, so the commit does not wait for a
     * directory fsync of its own after the file's fdatasync. */
    unsigned long long target = created_after + 1;
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
#else
    (void)created_after;
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

int queue_scan_names(struct queue *q, enum queue_dir dir, void (*fn)(void *ctx, const char *name), void *ctx)
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
    return queue_scan_names(q, dir, call_if_id, &f);
}
