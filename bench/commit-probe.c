/*
 * commit-probe: how many durable commits per second a file system gives,
 * the way an MTA's queue commits a message, against an append log.
 *
 *   commit-probe new-file DIR THREADS COUNT
 *   commit-probe overwrite DIR THREADS COUNT
 *
 * new-file:  each commit creates a file in DIR, writes 1,300 bytes (a 1 KiB
 *            message with its envelope), fdatasyncs and closes it: what
 *            smtpd's queue commit and Postfix's cleanup do per message.
 * overwrite: each commit overwrites its own 4 KiB block of one file that
 *            was written in full and fsynced first, and fdatasyncs it: the
 *            file's size and block map never change, so the file system has
 *            no metadata to journal, only the data block and a flush.
 * THREADS threads share COUNT commits. Prints the commits per second.
 * bench/commit-probe.sh builds it and runs both on a fresh journaled ext4
 * on a loop device, as the other benchmarks' queues (bench/lib.sh).
 *
 * Build: cc -O2 -pthread -o commit-probe commit-probe.c
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define MESSAGE_BYTES 1300
#define BLOCK_BYTES 4096
#define MAX_THREADS 256

struct probe {
    int overwrite;
    const char *dir;
    int threads;
    int per_thread;
    int log_fd;
    char block[BLOCK_BYTES];
};

struct worker {
    struct probe *probe;
    int index;
};

static void die(const char *what)
{
    fprintf(stderr, "commit-probe: %s: %s\n", what, strerror(errno));
    exit(1);
}

static void commit_new_file(struct probe *p, int thread, int i)
{
    char name[4096];
    snprintf(name, sizeof(name), "%s/q%d_%d", p->dir, thread, i);
    int fd = open(name, O_CREAT | O_EXCL | O_WRONLY | O_CLOEXEC, 0600);
    if (fd < 0)
        die(name);
    if (write(fd, p->block, MESSAGE_BYTES) != MESSAGE_BYTES || fdatasync(fd) != 0)
        die("write/fdatasync");
    close(fd);
}

static void commit_overwrite(struct probe *p, int thread, int i)
{
    off_t offset = ((off_t)thread * p->per_thread + i) * BLOCK_BYTES;
    if (pwrite(p->log_fd, p->block, BLOCK_BYTES, offset) != BLOCK_BYTES || fdatasync(p->log_fd) != 0)
        die("pwrite/fdatasync");
}

static void *run(void *arg)
{
    struct worker *w = arg;
    for (int i = 0; i < w->probe->per_thread; i++) {
        if (w->probe->overwrite)
            commit_overwrite(w->probe, w->index, i);
        else
            commit_new_file(w->probe, w->index, i);
    }
    return NULL;
}

/* The log is written in full and made durable before the clock starts, so
 * the timed overwrites allocate nothing. */
static void prepare_log(struct probe *p)
{
    char name[4096];
    snprintf(name, sizeof(name), "%s/log", p->dir);
    p->log_fd = open(name, O_CREAT | O_TRUNC | O_RDWR | O_CLOEXEC, 0600);
    if (p->log_fd < 0)
        die(name);
    off_t size = (off_t)p->threads * p->per_thread * BLOCK_BYTES;
    static char zeros[1 << 16];
    for (off_t at = 0; at < size; at += sizeof(zeros))
        if (pwrite(p->log_fd, zeros, sizeof(zeros), at) != (ssize_t)sizeof(zeros))
            die("pwrite");
    if (fsync(p->log_fd) != 0)
        die("fsync");
}

int main(int argc, char **argv)
{
    if (argc != 5 || (strcmp(argv[1], "new-file") != 0 && strcmp(argv[1], "overwrite") != 0)) {
        fprintf(stderr, "usage: commit-probe new-file|overwrite DIR THREADS COUNT\n");
        return 2;
    }
    struct probe p = { .overwrite = strcmp(argv[1], "overwrite") == 0, .dir = argv[2], .log_fd = -1 };
    p.threads = atoi(argv[3]);
    int count = atoi(argv[4]);
    if (p.threads < 1 || p.threads > MAX_THREADS || count < p.threads) {
        fprintf(stderr, "commit-probe: THREADS must be 1-%d and COUNT at least THREADS\n", MAX_THREADS);
        return 2;
    }
    p.per_thread = count / p.threads;
    memset(p.block, 'x', sizeof(p.block));
    if (p.overwrite)
        prepare_log(&p);

    pthread_t tid[MAX_THREADS];
    struct worker workers[MAX_THREADS];
    struct timespec start, end;
    clock_gettime(CLOCK_MONOTONIC, &start);
    for (int i = 0; i < p.threads; i++) {
        workers[i] = (struct worker){ &p, i };
        if (pthread_create(&tid[i], NULL, run, &workers[i]) != 0)
            die("pthread_create");
    }
    for (int i = 0; i < p.threads; i++)
        pthread_join(tid[i], NULL);
    clock_gettime(CLOCK_MONOTONIC, &end);
    double seconds = (double)(end.tv_sec - start.tv_sec) + (double)(end.tv_nsec - start.tv_nsec) / 1e9;
    int done = p.threads * p.per_thread;
    printf("%-9s threads %3d: %6d commits in %.3f s, %8.1f commits/s, %.3f ms each\n", argv[1], p.threads, done,
           seconds, done / seconds, seconds * 1000.0 * p.threads / done);
    return 0;
}
