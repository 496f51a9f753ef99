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
     * A committer needs a sync that started after its file's directory
     * entry was created (target = the sync_started read just after the
     * create, + 1): one that ran while the message was written usually
     * does, and then the commit waits for no directory fsync at all;
     * otherwise one leader runs it while the others wait on sync_cond, so
     * N concurrent commits cost one fsync.
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
/* The generation of the last directory sync begun: read it just after
 * creating an entry in incoming/, and pass it to queue_group_commit_incoming. */
unsigned long long queue_sync_generation(struct queue *q);
/* Makes an entry of incoming/ durable: returns once a directory fsync that
 * began after generation created_after has succeeded (starting one if none
 * has), -1 with errno if it failed. */
int queue_group_commit_incoming(struct queue *q, unsigned long long created_after);
/* Calls fn for every name but "." and ".." in dir, streaming readdir. */
int queue_scan_names(struct queue *q, enum queue_dir dir, void (*fn)(void *ctx, const char *name), void *ctx);

#endif
