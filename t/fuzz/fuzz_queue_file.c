/*
 * Fuzz target for the queue file reader (queue_message_read): the bytes
 * become a queue file in a scratch directory and must be either accepted or
 * rejected with a reason, never crash, hang or leak.
 *
 * `make fuzz` builds it with libFuzzer (doc/testing.md). Without
 * PETREL_LIBFUZZER (the `make check` build) this is a replay program: it
 * runs every file named on the command line, or else every file in
 * $top_srcdir/t/fuzz/corpus/queue_file/ and the reproducers
 * t/fuzz/crashes/queue_file-*, plus each file's truncations and single-byte
 * mutations, and prints TAP.
 */
#include "config.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <petrel/pool.h>
#include "queue/queue.h"

/* A fixed, valid queue ID so queue_message_read's name check passes. */
#define FUZZ_ID "0000000000000FZZZ00"

struct fuzz_scratch {
    char dir[4096];
    int dirfd;
    int fd;
    petrel_pool *pool;
};

static struct fuzz_scratch *scratch(void);

/* The scratch file and directory go when the process exits (a libFuzzer
 * run ends with exit(); the replay main removes them itself too). */
static void remove_scratch(void)
{
    struct fuzz_scratch *s = scratch();
    unlinkat(s->dirfd, FUZZ_ID, 0);
    rmdir(s->dir);
}

static struct fuzz_scratch *scratch(void)
{
    /* libFuzzer gives no context argument; one scratch per process is the
     * harness's state, not the code under test's. */
    static struct fuzz_scratch s;
    if (s.pool)
        return &s;
    const char *tmp = getenv("TMPDIR");
    snprintf(s.dir, sizeof(s.dir), "%s/petrel-fuzz-queue-XXXXXX", tmp && *tmp ? tmp : "/tmp");
    if (!mkdtemp(s.dir)) {
        perror("mkdtemp");
        abort();
    }
    s.dirfd = open(s.dir, O_RDONLY | O_DIRECTORY);
    s.fd = openat(s.dirfd, FUZZ_ID, O_RDWR | O_CREAT | O_TRUNC, 0600);
    if (s.dirfd < 0 || s.fd < 0) {
        perror("scratch file");
        abort();
    }
    s.pool = petrel_pool_create(0);
    atexit(remove_scratch);
    return &s;
}

/* Returns 0 when the bytes parse as a queue file, -1 when rejected. */
static int run_one(const uint8_t *data, size_t size)
{
    struct fuzz_scratch *s = scratch();
    if (ftruncate(s->fd, 0) < 0 || (size && pwrite(s->fd, data, size, 0) != (ssize_t)size)) {
        perror("write scratch file");
        abort();
    }
    struct queue_message m;
    char *error = NULL;
    int rc = queue_message_read(s->dirfd, FUZZ_ID, s->pool, &m, &error);
    if (rc == 0) {
        /* Touch what a consumer would, so sanitizers see bad pointers. */
        size_t sum = strlen(m.env.sender);
        for (size_t i = 0; i < m.env.rcpt_count; i++)
            sum += strlen(m.env.rcpts[i].address) + (size_t)m.rcpt_state[i].status;
        if (sum == 0 || (m.segments == NULL && m.content_offset + (off_t)m.content_length > m.file_size))
            abort();
        /* Every range of a content map lies inside the file, and the
         * content reader delivers exactly content_length bytes. */
        unsigned long long total = 0;
        for (size_t i = 0; i < m.segment_count; i++) {
            if (m.segments[i].length == 0
                || m.content_offset + (off_t)m.segments[i].offset + (off_t)m.segments[i].length > m.file_size)
                abort();
            total += m.segments[i].length;
        }
        if (m.segments && total != m.content_length)
            abort();
        char chunk[4096];
        unsigned long long off = 0;
        while (off < m.content_length && off < (1u << 20)) {
            ssize_t n = queue_content_pread(s->fd, &m, off, chunk, sizeof(chunk));
            if (n <= 0)
                abort();
            off += (unsigned long long)n;
        }
    } else if (!error || !*error) {
        abort();   /* every rejection must say why */
    }
    petrel_pool_reset(s->pool);
    return rc;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    run_one(data, size);
    return 0;
}

#ifndef PETREL_LIBFUZZER
static int tests;

static int replay_file(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        printf("not ok %d - cannot open %s: %s\n", ++tests, path, strerror(errno));
        return 1;
    }
    uint8_t *data = malloc(1 << 20);
    size_t size = fread(data, 1, 1 << 20, f);
    fclose(f);
    int rc = run_one(data, size);
    /* Derived inputs: every truncation and every byte with its low bit flipped. */
    int truncations_rejected = 1;
    for (size_t cut = 0; cut < size; cut++)
        if (run_one(data, cut) == 0)
            truncations_rejected = 0;
    size_t mutants_accepted = 0;
    for (size_t i = 0; i < size; i++) {
        data[i] ^= 1;
        if (run_one(data, size) == 0)
            mutants_accepted++;   /* content and status bytes are not checksummed */
        data[i] ^= 1;
    }
    free(data);
    /* A seed named "*incomplete*" must be rejected, one named "seed-*" must
     * parse; any other file (a fuzzer's reproducer) only must not crash. */
    const char *base = strrchr(path, '/') ? strrchr(path, '/') + 1 : path;
    int want = strstr(base, "incomplete") ? -1 : strncmp(base, "seed-", 5) == 0 ? 0 : rc;
    printf("%s %d - %s: %s, %zu truncations %s, %zu of %zu bit flips accepted\n",
           rc == want && truncations_rejected ? "ok" : "not ok", ++tests, path,
           rc == 0 ? "accepted" : "rejected", size,
           truncations_rejected ? "rejected" : "NOT all rejected", mutants_accepted, size);
    return rc == want && truncations_rejected ? 0 : 1;
}

/* Replays the files of dir whose names start with prefix (in name order). */
static int replay_dir(const char *dir, const char *prefix, int must_exist)
{
    struct dirent **names;
    int n = scandir(dir, &names, NULL, alphasort);
    if (n < 0) {
        if (!must_exist)
            return 0;
        printf("not ok %d - cannot open corpus %s: %s\n", ++tests, dir, strerror(errno));
        return 1;
    }
    int failed = 0;
    for (int i = 0; i < n; i++) {
        if (names[i]->d_name[0] != '.' && strncmp(names[i]->d_name, prefix, strlen(prefix)) == 0) {
            char path[8192];
            snprintf(path, sizeof(path), "%s/%s", dir, names[i]->d_name);
            failed += replay_file(path);
        }
        free(names[i]);
    }
    free(names);
    return failed;
}

int main(int argc, char **argv)
{
    int failed = 0;
    if (argc > 1) {
        for (int i = 1; i < argc; i++)
            failed += replay_file(argv[i]);
    } else {
        const char *top = getenv("top_srcdir");
        char dir[4096];
        snprintf(dir, sizeof(dir), "%s/t/fuzz/corpus/queue_file", top && *top ? top : ".");
        failed += replay_dir(dir, "", 1);
        snprintf(dir, sizeof(dir), "%s/t/fuzz/crashes", top && *top ? top : ".");
        failed += replay_dir(dir, "queue_file-", 0);
    }
    struct fuzz_scratch *s = scratch();
    close(s->fd);
    unlinkat(s->dirfd, FUZZ_ID, 0);
    close(s->dirfd);
    rmdir(s->dir);
    petrel_pool_destroy(s->pool);
    if (tests == 0) {
        printf("not ok 1 - no corpus files found\n");
        tests = 1;
        failed = 1;
    }
    printf("1..%d\n", tests);
    return failed ? 1 : 0;
}
#endif
