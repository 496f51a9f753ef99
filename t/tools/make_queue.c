/*
 * make-queue: fills a test spool with valid queue files, fast, for the
 * `petrelctl queue` tests (t/integration/test_queue_cmd.py).
 *
 *   make-queue QUEUE_DIR [-n COUNT] [-d incoming|active|deferred|hold|corrupt]
 *              [-f SENDER] [-r RCPT]... [-s CONTENT_BYTES] [-a AGE_SECONDS]
 *              [-m MTIME_OFFSET_SECONDS] [-x INDEX:STATUS[:DSN]]...
 *              [-D "ADDRESS<TAB>DSN<TAB>REASON"]...
 *
 * Prints the new queue IDs, one per line.
 *
 * Design: one template message is written with the real writer
 * (queue_writer_create/commit, so the format is exactly the daemon's) and
 * marked with queue_mark_rcpt_dsn; then its bytes are copied under fresh
 * queue IDs without fsync. The file format holds no queue ID, so a copy is
 * a valid, distinct message; skipping fsync is what makes a 20,000-message
 * queue take a second instead of minutes, and durability is not what these
 * tests are about. -D writes the queue manager's defer file
 * ($QUEUE_DIR/defer/ID, one "address TAB dsn TAB reason" line per deferred
 * recipient) for each message; -m sets the file's mtime (the queue
 * manager's next retry time for deferred/) relative to now.
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <petrel/pool.h>

#include "queue/queue.h"

#define MAX_RCPTS 64
#define MAX_LINES 64
#define MAX_MARKS 64

static int die(const char *what)
{
    fprintf(stderr, "make-queue: %s: %s\n", what, strerror(errno));
    return 1;
}

static int write_all(int fd, const void *p, size_t len)
{
    const char *c = p;
    while (len > 0) {
        ssize_t n = write(fd, c, len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return -1;
        c += n;
        len -= (size_t)n;
    }
    return 0;
}

static int parse_status(const char *s)
{
    if (strcmp(s, "pending") == 0)
        return QUEUE_RCPT_PENDING;
    if (strcmp(s, "deferred") == 0)
        return QUEUE_RCPT_DEFERRED;
    if (strcmp(s, "delivered") == 0)
        return QUEUE_RCPT_DELIVERED;
    if (strcmp(s, "bounced") == 0)
        return QUEUE_RCPT_BOUNCED;
    return -1;
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: make-queue QUEUE_DIR [options] (see the source)\n");
        return 2;
    }
    const char *qdir = argv[1];
    long count = 1, size = 300, age = 0, mtime_off = 0;
    int has_mtime = 0;
    const char *dirname = "deferred", *sender = "sender@example.org";
    struct queue_rcpt rcpts[MAX_RCPTS];
    size_t nrcpts = 0;
    const char *lines[MAX_LINES];
    size_t nlines = 0;
    struct { size_t index; int status; unsigned dsn; } marks[MAX_MARKS];
    size_t nmarks = 0;
    int opt;
    optind = 2;
    while ((opt = getopt(argc, argv, "n:d:f:r:s:a:m:x:D:")) != -1) {
        switch (opt) {
        case 'n': count = atol(optarg); break;
        case 'd': dirname = optarg; break;
        case 'f': sender = optarg; break;
        case 'r':
            if (nrcpts == MAX_RCPTS)
                return 2;
            rcpts[nrcpts] = (struct queue_rcpt){ optarg, NULL, 0 };
            nrcpts++;
            break;
        case 's': size = atol(optarg); break;
        case 'a': age = atol(optarg); break;
        case 'm': mtime_off = atol(optarg); has_mtime = 1; break;
        case 'x': {
            if (nmarks == MAX_MARKS)
                return 2;
            char *copy = strdup(optarg), *colon = strchr(copy, ':');
            if (!colon) {
                free(copy);
                return 2;
            }
            *colon = '\0';
            char *dsn = strchr(colon + 1, ':');
            if (dsn)
                *dsn++ = '\0';
            marks[nmarks].index = (size_t)atol(copy);
            marks[nmarks].status = parse_status(colon + 1);
            unsigned x = 0, y = 0, z = 0;
            if (dsn)
                sscanf(dsn, "%u.%u.%u", &x, &y, &z);
            marks[nmarks].dsn = QUEUE_DSN_CODE(x, y, z);
            free(copy);
            if (marks[nmarks].status < 0)
                return 2;
            nmarks++;
            break;
        }
        case 'D':
            if (nlines == MAX_LINES)
                return 2;
            lines[nlines++] = optarg;
            break;
        default:
            return 2;
        }
    }
    if (nrcpts == 0) {
        rcpts[0] = (struct queue_rcpt){ "rcpt@example.com", NULL, 0 };
        nrcpts = 1;
    }
    /* The first recipient carries the DSN extras so `queue show` has them to show. */
    rcpts[0].orcpt = "rfc822;original@example.com";
    rcpts[0].notify = QUEUE_NOTIFY_SUCCESS | QUEUE_NOTIFY_FAILURE;
    enum queue_dir dir = QDIR_COUNT;
    for (int d = 0; d < QDIR_COUNT; d++)
        if (strcmp(dirname, queue_dir_name((enum queue_dir)d)) == 0)
            dir = (enum queue_dir)d;
    if (dir == QDIR_COUNT) {
        fprintf(stderr, "make-queue: unknown queue %s\n", dirname);
        return 2;
    }

    char *error = NULL;
    struct queue *q = queue_open(qdir, 1, &error);
    if (!q) {
        fprintf(stderr, "make-queue: %s\n", error);
        return 1;
    }
    char path[4096];
    snprintf(path, sizeof(path), "%s/defer", qdir);
    if (mkdir(path, 0700) != 0 && errno != EEXIST)
        return die(path);
    int defer_fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (defer_fd < 0)
        return die(path);

    struct queue_id_gen gen;
    queue_id_gen_init(&gen, (unsigned)getpid());
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    struct queue_envelope env = {
        .sender = sender,
        .envid = "ENVID-test-1",
        .ret = QUEUE_RET_HDRS,
        .flags = QUEUE_F_8BITMIME,
        .client_name = "client.example.org",
        .client_addr = "192.0.2.7",
        .client_port = "40123",
        .helo = "helo.example.org",
        .protocol = "ESMTPS",
        .tls_info = "TLSv1.3 with cipher TLS_AES_256_GCM_SHA384 (256/256 bits)",
        .arrival_sec = (long long)now.tv_sec - age,
        .arrival_usec = now.tv_nsec / 1000,
        .rcpt_count = nrcpts,
        .rcpts = rcpts,
    };
    char tid[QUEUE_ID_MAX];
    struct queue_writer *w = queue_writer_create(q, &gen, &env, tid);
    if (!w)
        return die("queue_writer_create");
    char head[256];
    int hl = snprintf(head, sizeof(head), "From: <%s>\r\nTo: <%s>\r\nSubject: queue test\r\n\r\n", sender,
                      rcpts[0].address);
    long body = size > hl ? size - hl : 0;
    if (queue_writer_write(w, head, (size_t)hl) != 0)
        return die("write");
    for (long k = 0; k < body; k++) {
        /* Lines of 60 'x' and CRLF, cut at the requested size. */
        char ch = (k % 62 == 60) ? '\r' : (k % 62 == 61) ? '\n' : 'x';
        if (queue_writer_write(w, &ch, 1) != 0)
            return die("write");
    }
    if (queue_writer_commit(w) != 0)
        return die("commit");
    queue_writer_free(w);

    int in = queue_dir_fd(q, QDIR_INCOMING);
    int tfd = openat(in, tid, O_RDWR | O_CLOEXEC);
    if (tfd < 0)
        return die("open template");
    if (nmarks > 0) {
        petrel_pool *pool = petrel_pool_create(4096);
        struct queue_message m;
        if (queue_message_read_fd(tfd, tid, pool, &m, &error) != 0) {
            fprintf(stderr, "make-queue: read template: %s\n", error);
            return 1;
        }
        for (size_t k = 0; k < nmarks; k++)
            if (marks[k].index >= nrcpts || queue_mark_rcpt_dsn(tfd, &m, marks[k].index, marks[k].status, marks[k].dsn) != 0)
                return die("mark");
        petrel_pool_destroy(pool);
    }
    struct stat st;
    if (fstat(tfd, &st) != 0)
        return die("fstat");
    char *bytes = malloc((size_t)st.st_size);
    if (!bytes || pread(tfd, bytes, (size_t)st.st_size, 0) != st.st_size)
        return die("read template");
    close(tfd);
    unlinkat(in, tid, 0);

    int dfd = queue_dir_fd(q, dir);
    for (long k = 0; k < count; k++) {
        char id[QUEUE_ID_MAX];
        queue_id_next(&gen, id);
        int fd = openat(dfd, id, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
        if (fd < 0 || write_all(fd, bytes, (size_t)st.st_size) != 0)
            return die(id);
        if (has_mtime) {
            struct timespec ts[2] = { { now.tv_sec + mtime_off, 0 }, { now.tv_sec + mtime_off, 0 } };
            if (futimens(fd, ts) != 0)
                return die("futimens");
        }
        close(fd);
        if (nlines > 0) {
            int lf = openat(defer_fd, id, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
            if (lf < 0)
                return die("defer file");
            for (size_t l = 0; l < nlines; l++)
                if (write_all(lf, lines[l], strlen(lines[l])) != 0 || write_all(lf, "\n", 1) != 0)
                    return die("defer file");
            close(lf);
        }
        printf("%s\n", id);
    }
    free(bytes);
    close(defer_fd);
    queue_close(q);
    return fflush(stdout) == 0 ? 0 : 1;
}
