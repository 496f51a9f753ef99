/*
 * Private to core/queue: the struct queue layout and the durability and
 * scan helpers of the directory code (queue_dir.c) that the writer
 * (queue_file.c) and the recovery scan (queue_recover.c) use.
 */
#ifndef PETREL_QUEUE_QUEUE_INT_H
#define PETREL_QUEUE_QUEUE_INT_H

#include <pthread.h>

#include "queue/queue.h"

struct queue {
    char *path;
    int dir_fd[QDIR_COUNT];

    /*
     * Group commit of fsync(incoming/). Generations count directory syncs:
     * sync_started is the last one begun, sync_done the last one finished.
     * A committer whose file already exists needs a sync that starts after
     * it arrives (target = sync_started + 1); one leader runs it while the
     * others wait on sync_cond, so N concurrent commits cost one fsync.
     */
    pthread_mutex_t sync_lock;
    pthread_cond_t sync_cond;
    unsigned long long sync_started, sync_done;
    int sync_running;
    unsigned long long sync_failed_gen;   /* last generation whose fsync failed */
    int sync_failed_errno;
    struct queue_stats stats;             /* under sync_lock */
};

/* fdatasync/fsync, or nothing when built with PETREL_TEST_NO_FSYNC. */
int queue_sync_file(int fd);
int queue_sync_dir(int fd);
/* Makes every directory entry created in incoming/ before the call durable. */
int queue_group_commit_incoming(struct queue *q);
/* Calls fn for every name but "." and ".." in dir, streaming readdir. */
int queue_scan_names(struct queue *q, enum queue_dir dir, void (*fn)(void *ctx, const char *name), void *ctx);

#endif
