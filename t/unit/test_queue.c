/* Unit tests for core/queue: IDs, queue file round trips, group commit,
 * damage detection, recovery and in-place marks. Runs in a fresh directory
 * under $TMPDIR (or /tmp) and removes it at the end. */
#include "config.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <petrel/pool.h>
#include "lib/xalloc.h"
#include "queue/queue.h"
#include "../tap.h"

static char root[4096];

static int exists_in(struct queue *q, enum queue_dir dir, const char *id)
{
    struct stat st;
    return fstatat(queue_dir_fd(q, dir), id, &st, 0) == 0;
}

static void remove_tree(const char *path)
{
    DIR *d = opendir(path);
    if (d) {
        struct dirent *de;
        while ((de = readdir(d)) != NULL) {
            if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
                continue;
            char sub[8192];
            snprintf(sub, sizeof(sub), "%s/%s", path, de->d_name);
            struct stat st;
            if (lstat(sub, &st) == 0 && S_ISDIR(st.st_mode))
                remove_tree(sub);
            else
                unlink(sub);
        }
        closedir(d);
    }
    rmdir(path);
}

/* Reads a whole (small) file into a malloc'ed buffer. */
static unsigned char *slurp(int dirfd, const char *name, size_t *size)
{
    int fd = openat(dirfd, name, O_RDONLY);
    struct stat st;
    if (fd < 0 || fstat(fd, &st) < 0)
        return NULL;
    unsigned char *data = xmalloc((size_t)st.st_size + 1);
    ssize_t n = pread(fd, data, (size_t)st.st_size, 0);
    close(fd);
    *size = n < 0 ? 0 : (size_t)n;
    return data;
}

static void spew(int dirfd, const char *name, const void *data, size_t size)
{
    int fd = openat(dirfd, name, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    if (fd < 0 || write(fd, data, size) != (ssize_t)size)
        fprintf(stderr, "# cannot write %s: %s\n", name, strerror(errno));
    if (fd >= 0)
        close(fd);
}

/* Replaces the whole content of fd. */
static void rewrite(int fd, const void *data, size_t size)
{
    if (ftruncate(fd, 0) < 0 || pwrite(fd, data, size, 0) != (ssize_t)size)
        fprintf(stderr, "# rewrite: %s\n", strerror(errno));
}

/* Commits one small message and returns 0; the ID goes to id. */
static int put_message(struct queue *q, struct queue_id_gen *g, const struct queue_envelope *env,
                       const char *content, char *id)
{
    struct queue_writer *w = queue_writer_create(q, g, env, id);
    if (!w)
        return -1;
    if (queue_writer_write(w, content, strlen(content)) < 0 || queue_writer_commit(w) < 0) {
        queue_writer_abort(w);
        return -1;
    }
    queue_writer_free(w);
    return 0;
}

static const struct queue_rcpt simple_rcpts[] = {
    { "one@example.org", NULL, 0 },
    { "two@example.org", "rfc822;two@example.org", QUEUE_NOTIFY_FAILURE | QUEUE_NOTIFY_DELAY },
};
static const struct queue_envelope simple_env = {
    .sender = "sender@example.com", .protocol = "ESMTP", .client_name = "localhost",
    .client_addr = "127.0.0.1", .arrival_sec = 1700000000, .arrival_usec = 5,
    .rcpt_count = 2, .rcpts = simple_rcpts,
};

/* ---- IDs ---- */

static int cmp_ids(const void *a, const void *b)
{
    return strcmp(a, b);
}

static void test_ids(void)
{
    enum { N = 1000000 };
    char (*ids)[QUEUE_ID_MAX] = xmalloc(sizeof(*ids) * N);
    struct queue_id_gen g1, g2;
    queue_id_gen_init(&g1, 1);
    queue_id_gen_init(&g2, (unsigned)getpid());
    int shape_ok = 1, per_gen_order = 1, time_order = 1;
    for (int i = 0; i < N; i++) {
        queue_id_next(i % 2 ? &g2 : &g1, ids[i]);
        if (strlen(ids[i]) != QUEUE_ID_LEN || !queue_id_valid(ids[i]))
            shape_ok = 0;
        if (i >= 2 && strcmp(ids[i - 2], ids[i]) >= 0)
            per_gen_order = 0;
        if (i >= 1 && strncmp(ids[i - 1], ids[i], 11) > 0)
            time_order = 0;
    }
    ok(shape_ok, "1e6 IDs have the fixed length and alphabet");
    ok(per_gen_order, "each generator's IDs sort in creation order");
    ok(time_order, "across generators, the time part never goes back");
    qsort(ids, N, sizeof(*ids), cmp_ids);
    int unique = 1;
    for (int i = 1; i < N; i++)
        if (strcmp(ids[i - 1], ids[i]) == 0)
            unique = 0;
    ok(unique, "1e6 IDs from two generators are all distinct");

    long long sec;
    long usec;
    ok(queue_id_time(ids[N - 1], &sec, &usec) == 0 && llabs(sec - (long long)time(NULL)) < 60
           && usec >= 0 && usec < 1000000, "the ID encodes the current time");
    ok(!queue_id_valid("0123456789ABCDEFGHI") && !queue_id_valid("0123456789") && !queue_id_valid("../x")
           && !queue_id_valid(""), "malformed IDs are refused");

    /* A clock stepping back still yields increasing IDs. */
    struct queue_id_gen g3;
    queue_id_gen_init(&g3, 7);
    char a[QUEUE_ID_MAX], b[QUEUE_ID_MAX];
    queue_id_next(&g3, a);
    g3.last_usec += 3600ull * 1000000;   /* as if the previous ID came from an hour ahead */
    queue_id_next(&g3, a);
    queue_id_next(&g3, b);
    ok(strcmp(a, b) < 0, "IDs keep increasing when the clock is behind the last ID");
    free(ids);
}

/* ---- round trip ---- */

static void test_round_trip(struct queue *q)
{
    /* Values built to look like records or SMTP if anything framed by lines. */
    const char nasty_sender[] = "evil\r\nR\x7f\xff\xff\xff\xffX\r\n.\r\n@example.com";
    const char nasty_envid[] = "id\r\nS<forged@x>\nM\x01\x02";
    const char nasty_orcpt[] = "rfc822;a\r\nRCPT TO:<injected@x>\r\n\x05\x00tail";  /* NUL cuts it */
    struct queue_rcpt rcpts[] = {
        { "first@example.org", nasty_orcpt, QUEUE_NOTIFY_SUCCESS | QUEUE_NOTIFY_FAILURE },
        { "second\r\n@example.org", NULL, QUEUE_NOTIFY_NEVER },
        { "\xc3\xa9t\xc3\xa9@example.org", "", 0 },
    };
    struct queue_envelope env = {
        .sender = nasty_sender, .envid = nasty_envid, .ret = QUEUE_RET_HDRS,
        .flags = QUEUE_F_8BITMIME | QUEUE_F_SMTPUTF8,
        .client_name = "mx.example.net", .client_addr = "2001:db8::1", .client_port = "54321",
        .helo = "helo\r\nX-Injected: yes", .protocol = "ESMTPSA",
        .tls_info = "TLSv1.3 with cipher TLS_AES_256_GCM_SHA384 (256/256 bits)",
        .sasl_method = "PLAIN", .sasl_username = "user\r\nname",
        .arrival_sec = 1712345678, .arrival_usec = 999999,
        .rcpt_count = 3, .rcpts = rcpts,
    };
    struct queue_id_gen g;
    queue_id_gen_init(&g, 42);
    char id[QUEUE_ID_MAX];
    struct queue_writer *w = queue_writer_create(q, &g, &env, id);
    ok(w != NULL, "writer created");
    if (!w)
        return;
    is_str(queue_writer_id(w), id, "writer reports its ID");
    const char body[] = "Subject: hi\r\n\r\n.leading dot kept\r\nR\0\0\0\x05X\r\n";
    ok(queue_writer_write(w, body, sizeof(body) - 1) == 0, "content written");
    is_int(queue_writer_content_size(w), sizeof(body) - 1, "content size counted");
    ok(queue_writer_commit(w) == 0, "commit succeeds");
    queue_writer_free(w);

    petrel_pool *pool = petrel_pool_create(0);
    struct queue_message m;
    char *error = NULL;
    int rc = queue_message_read(queue_dir_fd(q, QDIR_INCOMING), id, pool, &m, &error);
    ok(rc == 0, "committed file reads back (%s)", rc ? error : "ok");
    if (rc == 0) {
        is_str(m.id, id, "id");
        is_str(m.env.sender, nasty_sender, "sender with CR/LF and record-like bytes round-trips");
        is_str(m.env.envid, nasty_envid, "ENVID with CR/LF round-trips");
        is_int(m.env.ret, QUEUE_RET_HDRS, "RET");
        is_int(m.env.flags, QUEUE_F_8BITMIME | QUEUE_F_SMTPUTF8, "flags");
        is_str(m.env.client_name, "mx.example.net", "client name");
        is_str(m.env.client_addr, "2001:db8::1", "client address");
        is_str(m.env.client_port, "54321", "client port");
        is_str(m.env.helo, "helo\r\nX-Injected: yes", "HELO with CRLF");
        is_str(m.env.protocol, "ESMTPSA", "protocol");
        is_str(m.env.tls_info, env.tls_info, "TLS info");
        is_str(m.env.sasl_method, "PLAIN", "SASL method");
        is_str(m.env.sasl_username, "user\r\nname", "SASL username");
        is_int(m.env.arrival_sec, 1712345678, "arrival seconds");
        is_int(m.env.arrival_usec, 999999, "arrival microseconds");
        is_int(m.env.rcpt_count, 3, "no recipient was injected or lost");
        is_str(m.env.rcpts[0].address, "first@example.org", "rcpt 0 address");
        is_str(m.env.rcpts[0].orcpt, "rfc822;a\r\nRCPT TO:<injected@x>\r\n\x05",
               "ORCPT round-trips up to the C string's NUL");
        is_int(m.env.rcpts[0].notify, QUEUE_NOTIFY_SUCCESS | QUEUE_NOTIFY_FAILURE, "rcpt 0 NOTIFY");
        is_str(m.env.rcpts[1].address, "second\r\n@example.org", "rcpt 1 address with CRLF");
        ok(m.env.rcpts[1].orcpt == NULL, "absent ORCPT stays NULL");
        is_int(m.env.rcpts[1].notify, QUEUE_NOTIFY_NEVER, "rcpt 1 NOTIFY=NEVER");
        is_str(m.env.rcpts[2].orcpt, "", "empty ORCPT stays empty, not NULL");
        is_str(m.env.rcpts[2].address, "\xc3\xa9t\xc3\xa9@example.org", "UTF-8 address");
        is_int(m.pending_count, 3, "all recipients pending");
        is_int(m.rcpt_state[1].status, QUEUE_RCPT_PENDING, "status pending");
        is_int(m.content_length, sizeof(body) - 1, "content length");
        ok(m.content_offset + (off_t)m.content_length < m.file_size, "content lies before the end record");

        char got[sizeof(body)];
        int fd = openat(queue_dir_fd(q, QDIR_INCOMING), id, O_RDONLY);
        ok(pread(fd, got, sizeof(body) - 1, m.content_offset) == (ssize_t)sizeof(body) - 1
               && memcmp(got, body, sizeof(body) - 1) == 0, "content bytes round-trip");
        close(fd);
    }

    /* Optional fields absent, null sender. */
    struct queue_rcpt one = { "x@y", NULL, 0 };
    struct queue_envelope bare = { .sender = "", .rcpt_count = 1, .rcpts = &one };
    char id2[QUEUE_ID_MAX];
    ok(put_message(q, &g, &bare, "", id2) == 0, "minimal message with empty content commits");
    petrel_pool_reset(pool);
    rc = queue_message_read(queue_dir_fd(q, QDIR_INCOMING), id2, pool, &m, &error);
    ok(rc == 0 && strcmp(m.env.sender, "") == 0 && m.env.envid == NULL && m.env.helo == NULL
           && m.env.tls_info == NULL && m.env.sasl_username == NULL && m.content_length == 0,
       "null sender and absent fields read back as \"\" and NULL");

    /* Invalid envelopes are refused before any file exists. */
    struct queue_envelope bad = bare;
    bad.rcpt_count = 0;
    errno = 0;
    ok(queue_writer_create(q, &g, &bad, id2) == NULL && errno == EINVAL, "no recipient: EINVAL");
    struct queue_rcpt empty = { "", NULL, 0 };
    bad.rcpt_count = 1;
    bad.rcpts = &empty;
    ok(queue_writer_create(q, &g, &bad, id2) == NULL && errno == EINVAL, "empty address: EINVAL");
    bad.rcpts = &one;
    bad.sender = NULL;
    ok(queue_writer_create(q, &g, &bad, id2) == NULL && errno == EINVAL, "NULL sender: EINVAL");

    /* Abort unlinks. */
    w = queue_writer_create(q, &g, &bare, id2);
    queue_writer_write(w, "x", 1);
    ok(exists_in(q, QDIR_INCOMING, id2), "file exists while being written");
    queue_writer_abort(w);
    ok(!exists_in(q, QDIR_INCOMING, id2), "abort removes the file");

    /* The writer lock: held while the writer works, gone when it closes the
     * file or dies. */
    w = queue_writer_create(q, &g, &bare, id2);
    int probe = openat(queue_dir_fd(q, QDIR_INCOMING), id2, O_RDONLY | O_CLOEXEC);
    is_int(queue_file_writer_active(probe), 1, "a file being written has an active writer");
    ok(queue_writer_commit(w) == 0, "commit");
    is_int(queue_file_writer_active(probe), 1, "committed but still open: still its writer's");
    queue_writer_free(w);
    is_int(queue_file_writer_active(probe), 0, "closed by its writer: no writer");
    close(probe);
    int pipefd[2];
    ok(pipe(pipefd) == 0, "pipe");
    pid_t child = fork();
    if (child == 0) {
        char cid[QUEUE_ID_MAX];
        struct queue_id_gen cg;
        queue_id_gen_init(&cg, 4242);
        struct queue_writer *cw = queue_writer_create(q, &cg, &bare, cid);
        if (cw == NULL || write(pipefd[1], cid, strlen(cid)) < 0)
            _exit(2);
        _exit(0);   /* dies holding the writer open, as a crashed worker */
    }
    close(pipefd[1]);
    int status = 0;
    waitpid(child, &status, 0);
    char cid[QUEUE_ID_MAX] = "";
    ssize_t got = read(pipefd[0], cid, sizeof(cid) - 1);
    close(pipefd[0]);
    cid[got > 0 ? got : 0] = '\0';
    probe = openat(queue_dir_fd(q, QDIR_INCOMING), cid, O_RDONLY | O_CLOEXEC);
    ok(probe >= 0 && queue_file_writer_active(probe) == 0, "a writer that died left no lock behind (%s)", cid);
    if (probe >= 0)
        close(probe);
    unlinkat(queue_dir_fd(q, QDIR_INCOMING), cid, 0);

    /* A NUL inside a string record (a foreign or damaged file) is rejected. */
    size_t size;
    unsigned char *raw = slurp(queue_dir_fd(q, QDIR_INCOMING), id, &size);
    unsigned char *s = memmem(raw, size, "evil", 4);
    s[1] = '\0';
    spew(queue_dir_fd(q, QDIR_INCOMING), "00000000000000000NN", raw, size);
    petrel_pool_reset(pool);
    rc = queue_message_read(queue_dir_fd(q, QDIR_INCOMING), "00000000000000000NN", pool, &m, &error);
    ok(rc == -1 && errno == EBADMSG, "NUL inside the sender record is rejected (%s)", rc ? error : "accepted");
    unlinkat(queue_dir_fd(q, QDIR_INCOMING), "00000000000000000NN", 0);
    free(raw);
    petrel_pool_destroy(pool);
}

/* ---- big content ---- */

static unsigned char pattern_byte(uint64_t i)
{
    return (unsigned char)((i * 2654435761u) >> 13);
}

static void test_big_content(struct queue *q)
{
    const size_t total = 10 * 1024 * 1024;
    struct queue_id_gen g;
    queue_id_gen_init(&g, 3);
    char id[QUEUE_ID_MAX];
    struct queue_writer *w = queue_writer_create(q, &g, &simple_env, id);
    unsigned char *chunk = xmalloc(300000);
    size_t sent = 0, round = 0;
    int write_ok = 1;
    /* Mixed chunk sizes exercise buffered copies and the direct writev path. */
    while (sent < total) {
        size_t want = (round++ % 5 == 4) ? 300000 : 7919;
        if (want > total - sent)
            want = total - sent;
        for (size_t i = 0; i < want; i++)
            chunk[i] = pattern_byte(sent + i);
        if (queue_writer_write(w, chunk, want) < 0)
            write_ok = 0;
        sent += want;
    }
    ok(write_ok, "10 MB streamed in mixed chunk sizes");
    is_int(queue_writer_content_size(w), total, "content size is 10 MB");
    ok(queue_writer_commit(w) == 0, "big message commits");
    queue_writer_free(w);

    petrel_pool *pool = petrel_pool_create(0);
    struct queue_message m;
    char *error = NULL;
    int rc = queue_message_read(queue_dir_fd(q, QDIR_INCOMING), id, pool, &m, &error);
    ok(rc == 0 && m.content_length == total, "big message reads back with its length");
    ok(petrel_pool_bytes(pool) < 64 * 1024, "reading does not pull the content into memory");
    int fd = openat(queue_dir_fd(q, QDIR_INCOMING), id, O_RDONLY);
    int same = rc == 0;
    for (size_t off = 0; same && off < total; off += 300000) {
        size_t n = total - off < 300000 ? total - off : 300000;
        if (pread(fd, chunk, n, m.content_offset + (off_t)off) != (ssize_t)n)
            same = 0;
        for (size_t i = 0; same && i < n; i++)
            if (chunk[i] != pattern_byte(off + i))
                same = 0;
    }
    close(fd);
    ok(same, "all 10 MB of content round-trip");
    free(chunk);
    petrel_pool_destroy(pool);
}

/* ---- concurrent commits ---- */

enum { THREADS = 8, PER_THREAD = 40 };

struct committer {
    struct queue *q;
    unsigned tag;
    int failures;
};

static void *commit_many(void *arg)
{
    struct committer *c = arg;
    struct queue_id_gen g;
    queue_id_gen_init(&g, c->tag);
    for (int i = 0; i < PER_THREAD; i++) {
        char id[QUEUE_ID_MAX];
        if (put_message(c->q, &g, &simple_env, "Subject: x\r\n\r\nbody\r\n", id) < 0)
            c->failures++;
    }
    return NULL;
}

static void test_concurrent_commits(struct queue *q)
{
    struct queue_stats before, after;
    queue_get_stats(q, &before);
    pthread_t threads[THREADS];
    struct committer cs[THREADS];
    for (int i = 0; i < THREADS; i++) {
        cs[i] = (struct committer){ q, 100 + (unsigned)i, 0 };
        pthread_create(&threads[i], NULL, commit_many, &cs[i]);
    }
    int failures = 0;
    for (int i = 0; i < THREADS; i++) {
        pthread_join(threads[i], NULL);
        failures += cs[i].failures;
    }
    queue_get_stats(q, &after);
    unsigned long long commits = after.commits - before.commits;
    unsigned long long syncs = after.dir_syncs - before.dir_syncs;
    is_int(failures, 0, "%d concurrent commits from %d threads all succeed", THREADS * PER_THREAD, THREADS);
    is_int(commits, THREADS * PER_THREAD, "every commit is counted");
#ifdef PETREL_TEST_NO_FSYNC
    is_int(syncs, 0, "test-no-fsync build issues no directory fsync");
#else
    ok(syncs > 0 && syncs < commits, "group commit: %llu directory fsyncs for %llu commits", syncs, commits);
#endif
}

/* ---- damage ---- */

static void test_damage(struct queue *q)
{
    struct queue_id_gen g;
    queue_id_gen_init(&g, 9);
    char id[QUEUE_ID_MAX];
    put_message(q, &g, &simple_env, "Subject: t\r\n\r\nhello\r\n", id);
    size_t size;
    int dfd = queue_dir_fd(q, QDIR_INCOMING);
    unsigned char *orig = slurp(dfd, id, &size);
    petrel_pool *pool = petrel_pool_create(0);
    struct queue_message m;
    char *error;
    ok(queue_message_read(dfd, id, pool, &m, &error) == 0, "original reads");
    off_t content_offset = m.content_offset;
    off_t status0 = m.rcpt_state[0].status_offset, status1 = m.rcpt_state[1].status_offset;

    /* Every truncation point: always a clean -1 with a reason. */
    char path[8192];
    snprintf(path, sizeof(path), "%s/scratch", root);
    int fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0600);
    int all_rejected = 1, all_classified = 1;
    for (size_t cut = 0; cut < size; cut++) {
        rewrite(fd, orig, cut);
        petrel_pool_reset(pool);
        error = NULL;
        if (queue_message_read_fd(fd, "cut", pool, &m, &error) != -1 || !error || !*error)
            all_rejected = 0;
        else if (errno != ENODATA && errno != EBADMSG)
            all_classified = 0;
    }
    ok(all_rejected, "all %zu truncations of a queue file are rejected with a reason", size);
    ok(all_classified, "truncations report ENODATA or EBADMSG");

    /* Every single-byte corruption outside the content and the mutable
     * status/DSN bytes is detected. */
    int flips_caught = 1;
    size_t first_missed = 0;
    for (size_t i = 0; i < size; i++) {
        int mutable_byte = ((off_t)i >= status0 && (off_t)i < status0 + 5)
                           || ((off_t)i >= status1 && (off_t)i < status1 + 5);
        if ((off_t)i >= content_offset && i < size - 41)
            continue;   /* content bytes: not checksummed by design */
        if (mutable_byte)
            continue;
        unsigned char *copy = xmalloc(size);
        memcpy(copy, orig, size);
        copy[i] ^= 0x20;
        rewrite(fd, copy, size);
        free(copy);
        petrel_pool_reset(pool);
        if (queue_message_read_fd(fd, "flip", pool, &m, &error) == 0 && flips_caught) {
            flips_caught = 0;
            first_missed = i;
        }
    }
    ok(flips_caught, "every envelope/end-record byte flip is detected (first miss at %zu)", first_missed);

    /* A status byte out of range is damage; a valid one is a mark. */
    unsigned char *copy = xmalloc(size);
    memcpy(copy, orig, size);
    copy[status0] = 77;
    rewrite(fd, copy, size);
    petrel_pool_reset(pool);
    ok(queue_message_read_fd(fd, "st", pool, &m, &error) == -1 && errno == EBADMSG,
       "unknown status value is rejected (%s)", error);
    free(copy);
    close(fd);
    unlink(path);
    free(orig);
    petrel_pool_destroy(pool);
}

/* ---- edits without a copy (format version 2) ---- */

static const struct queue_rcpt edited_rcpts[] = { { "new@example.net", NULL, QUEUE_NOTIFY_NEVER } };

/* Reads the whole content of msg through the content reader, len bytes at a
 * time, into a malloc'd string. */
static char *read_all(int fd, const struct queue_message *m, size_t step)
{
    char *out = xmalloc((size_t)m->content_length + 1);
    unsigned long long off = 0;
    while (off < m->content_length) {
        ssize_t n = queue_content_pread(fd, m, off, out + off, step);
        if (n <= 0)
            break;
        off += (unsigned long long)n;
    }
    out[off] = '\0';
    return out;
}

static void test_edits(struct queue *q)
{
    struct queue_id_gen g;
    queue_id_gen_init(&g, 11);
    char id[QUEUE_ID_MAX];
    static const char original[] = "Received: by us\r\nSubject: old\r\nX-Keep: 1\r\n\r\nbody line\r\n";
    static const char new_headers[] = "Received: by us\r\nSubject: new\r\nX-Added: yes\r\n";
    const char *rest = strstr(original, "X-Keep");
    struct queue_writer *w = queue_writer_create(q, &g, &simple_env, id);
    ok(w != NULL, "writer for an edited message");
    if (!w)
        return;
    queue_writer_write(w, original, strlen(original));
    unsigned long long at = queue_writer_edit_begin(w);
    is_int(at, strlen(original), "edit data starts after the content as received");
    queue_writer_write(w, new_headers, strlen(new_headers));
    is_int(queue_writer_content_size(w), strlen(original), "appended edit data is not content yet");
    struct queue_segment map[2] = {
        { at, strlen(new_headers) },
        { (unsigned long long)(rest - original), strlen(rest) },
    };
    struct queue_segment bad = { at, strlen(new_headers) + 1 };
    ok(queue_writer_set_content_map(w, &bad, 1) == -1 && errno == EINVAL, "a range past the data is refused");
    ok(queue_writer_set_content_map(w, map, 2) == 0, "content map set");
    char expect[256];
    snprintf(expect, sizeof(expect), "%s%s", new_headers, rest);
    is_int(queue_writer_content_size(w), strlen(expect), "content size follows the map");
    char back[256] = { 0 };
    ok(queue_writer_read_content(w, 0, back, sizeof(back) - 1) > 0, "the writer reads the edited content back");
    struct queue_envelope env = simple_env;
    env.sender = "changed@example.com";
    env.rcpt_count = 1;
    env.rcpts = edited_rcpts;
    ok(queue_writer_set_envelope(w, &env) == 0, "new envelope set");
    ok(queue_writer_truncate(w, 3) == -1 && errno == EINVAL, "no truncation once editing");
    ok(queue_writer_commit(w) == 0, "edited message committed");
    queue_writer_free(w);

    int dfd = queue_dir_fd(q, QDIR_INCOMING);
    petrel_pool *pool = petrel_pool_create(0);
    struct queue_message m;
    char *error = NULL;
    int fd = openat(dfd, id, O_RDWR);
    ok(fd >= 0 && queue_message_read_fd(fd, id, pool, &m, &error) == 0, "edited file reads (%s)", error ? error : "ok");
    is_int(m.version, 2, "an edited file is version 2");
    is_str(m.env.sender, "changed@example.com", "the new sender");
    ok(m.env.rcpt_count == 1 && strcmp(m.env.rcpts[0].address, "new@example.net") == 0
       && m.env.rcpts[0].notify == QUEUE_NOTIFY_NEVER, "the new recipient list");
    is_int(m.content_length, strlen(expect), "content length is the edited message's");
    int same = 1;
    size_t steps[] = { 1, 3, 7, 64, 4096 };
    for (size_t i = 0; i < sizeof(steps) / sizeof(steps[0]); i++) {
        char *got = read_all(fd, &m, steps[i]);
        same &= strcmp(got, expect) == 0;
        free(got);
    }
    ok(same, "the content reader splices the edited headers and the original rest, at any read size");
    char tail[8];
    ok(queue_content_pread(fd, &m, m.content_length, tail, sizeof(tail)) == 0, "0 at the end of the content");
    /* No copy: the data region is the content as received plus the edit. */
    ok(m.file_size > m.content_offset + (off_t)(strlen(original) + strlen(new_headers))
       && m.file_size < 2 * m.content_offset + (off_t)(strlen(original) + strlen(new_headers)) + 100,
       "file = first envelope + content + edit + second envelope + end (%lld bytes)", (long long)m.file_size);
    ok(queue_mark_rcpt_dsn(fd, &m, 0, QUEUE_RCPT_DELIVERED, QUEUE_DSN_CODE(2, 0, 0)) == 0, "marked in place");
    petrel_pool_reset(pool);
    ok(queue_message_read_fd(fd, id, pool, &m, &error) == 0 && m.rcpt_state[0].status == QUEUE_RCPT_DELIVERED
       && m.pending_count == 0, "the mark is read back from the second envelope");

    /* Damage: truncations, flips outside the data and the status bytes. */
    size_t size;
    unsigned char *orig = slurp(dfd, id, &size);
    off_t status0 = m.rcpt_state[0].status_offset;
    off_t env2 = m.content_offset + (off_t)strlen(original) + (off_t)strlen(new_headers);
    char path[8192];
    snprintf(path, sizeof(path), "%s/scratch2", root);
    int sfd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0600);
    int all_rejected = 1;
    for (size_t cut = 0; cut < size; cut++) {
        rewrite(sfd, orig, cut);
        petrel_pool_reset(pool);
        if (queue_message_read_fd(sfd, "cut", pool, &m, &error) != -1 || (errno != ENODATA && errno != EBADMSG))
            all_rejected = 0;
    }
    ok(all_rejected, "all %zu truncations of an edited file are rejected", size);
    /* The first envelope (status bytes at fixed places, read as zero), the
     * data and the second envelope's status bytes are not checked; every
     * other byte of the header, the second envelope and the end record is. */
    int flips_caught = 1;
    size_t first_missed = 0;
    for (size_t i = 0; i < size; i++) {
        if ((i >= 16 && (off_t)i < env2) || ((off_t)i >= status0 && (off_t)i < status0 + 5))
            continue;
        orig[i] ^= 0x20;
        rewrite(sfd, orig, size);
        orig[i] ^= 0x20;
        petrel_pool_reset(pool);
        if (queue_message_read_fd(sfd, "flip", pool, &m, &error) == 0 && flips_caught) {
            flips_caught = 0;
            first_missed = i;
        }
    }
    ok(flips_caught, "every header, second-envelope and end-record flip is detected (first miss at %zu; second envelope at %lld, %zu bytes)",
       first_missed, (long long)env2, size);
    /* A map range past the data: the exact reason. The map is the last
     * record but 'M': 5 + 32 bytes before the 'M' and the end record. */
    size_t map_at = size - 49 - 5 - (5 + 32);
    memset(orig + map_at + 5 + 8, 0x7f, 1);
    rewrite(sfd, orig, size);
    petrel_pool_reset(pool);
    char want[256];
    snprintf(want, sizeof(want),
             "content map record at offset %zu: range 1 (%llu bytes at %llu) is empty or runs past the data (%zu bytes)",
             map_at, (unsigned long long)strlen(new_headers) | 0x7f00000000000000ull, at,
             strlen(original) + strlen(new_headers));
    ok(queue_message_read_fd(sfd, "map", pool, &m, &error) == -1 && errno == EBADMSG, "a bad map is damage");
    is_str(error, want, "with the exact reason");
    memset(orig + map_at + 5 + 8, 0, 1);
    /* A version this reader does not know. */
    orig[8] = 3;
    rewrite(sfd, orig, size);
    petrel_pool_reset(pool);
    ok(queue_message_read_fd(sfd, "v3", pool, &m, &error) == -1, "version 3 is refused");
    free(orig);
    close(sfd);
    unlink(path);

    /* A new envelope alone: the content stays whole (no map). */
    char id3[QUEUE_ID_MAX];
    struct queue_writer *ew = queue_writer_create(q, &g, &simple_env, id3);
    queue_writer_write(ew, original, strlen(original));
    ok(queue_writer_set_envelope(ew, &env) == 0 && queue_writer_commit(ew) == 0, "envelope-only edit committed");
    queue_writer_free(ew);
    petrel_pool_reset(pool);
    int efd = openat(dfd, id3, O_RDONLY);
    ok(efd >= 0 && queue_message_read_fd(efd, id3, pool, &m, &error) == 0 && m.version == 2 && m.segments == NULL
       && m.content_length == strlen(original) && strcmp(m.env.sender, "changed@example.com") == 0,
       "an envelope-only edit: version 2, the new sender, the content whole");
    char *whole = efd >= 0 ? read_all(efd, &m, 5) : NULL;
    is_str(whole, original, "and the content reads back as received");
    free(whole);
    if (efd >= 0)
        close(efd);

    /* Without edits the writer still writes version 1 (an older reader
     * can read it). */
    char id1[QUEUE_ID_MAX];
    put_message(q, &g, &simple_env, "Subject: v1\r\n\r\nx\r\n", id1);
    ok(queue_message_read(dfd, id1, pool, &m, &error) == 0 && m.version == 1 && m.segments == NULL,
       "an unedited message is still written as version 1");

    /* A writer killed while editing leaves an incomplete file. */
    char id2[QUEUE_ID_MAX];
    pid_t pid = fork();
    if (pid == 0) {
        struct queue_writer *cw = queue_writer_create(q, &g, &simple_env, id2);
        queue_writer_write(cw, original, strlen(original));
        unsigned long long cat = queue_writer_edit_begin(cw);
        queue_writer_write(cw, new_headers, strlen(new_headers));
        struct queue_segment one = { cat, strlen(new_headers) };
        queue_writer_set_content_map(cw, &one, 1);
        queue_writer_read_content(cw, 0, back, 1);   /* flushes: the edit is on disk */
        int out = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
        if (out < 0 || write(out, id2, QUEUE_ID_LEN) != QUEUE_ID_LEN)
            _exit(1);
        _exit(0);
    }
    int status = 0;
    waitpid(pid, &status, 0);
    size_t idlen = 0;
    char *crashed = (char *)slurp(AT_FDCWD, path, &idlen);
    if (crashed && idlen == QUEUE_ID_LEN)
        crashed[QUEUE_ID_LEN] = '\0';
    petrel_pool_reset(pool);
    error = NULL;
    int crc = crashed && idlen == QUEUE_ID_LEN ? queue_message_read(dfd, crashed, pool, &m, &error) : 0;
    ok(crc == -1 && errno == ENODATA, "a writer that died while editing leaves an incomplete file (%s)",
       error ? error : "?");
    if (crashed)
        unlinkat(dfd, crashed, 0);
    free(crashed);
    unlink(path);
    close(fd);
    petrel_pool_destroy(pool);
}

/* ---- recovery and marks ---- */

struct found_log {
    char active[8][QUEUE_ID_MAX];
    char deferred[8][QUEUE_ID_MAX];
    int n_active, n_deferred;
};

static void on_found(void *ctx, enum queue_dir dir, const char *id)
{
    struct found_log *f = ctx;
    if (dir == QDIR_ACTIVE && f->n_active < 8)
        snprintf(f->active[f->n_active++], QUEUE_ID_MAX, "%s", id);
    else if (dir == QDIR_DEFERRED && f->n_deferred < 8)
        snprintf(f->deferred[f->n_deferred++], QUEUE_ID_MAX, "%s", id);
}

static void count_id(void *ctx, const char *id)
{
    (void)id;
    (*(int *)ctx)++;
}

static void test_recovery_and_marks(void)
{
    char path[8192];
    snprintf(path, sizeof(path), "%s/recover", root);
    char *error = NULL;
    struct queue *q = queue_open(path, 1, &error);
    ok(q != NULL, "second queue opened (%s)", error ? error : "ok");
    if (!q)
        return;
    struct queue_id_gen g;
    queue_id_gen_init(&g, 11);
    int in = queue_dir_fd(q, QDIR_INCOMING);

    char complete[QUEUE_ID_MAX], never_flushed[QUEUE_ID_MAX], half[QUEUE_ID_MAX];
    char damaged[QUEUE_ID_MAX], deferred[QUEUE_ID_MAX], held[QUEUE_ID_MAX];
    put_message(q, &g, &simple_env, "Subject: a\r\n\r\nA\r\n", complete);

    /* Writer that died before its first flush: an empty file. */
    struct queue_writer *w = queue_writer_create(q, &g, &simple_env, never_flushed);
    queue_writer_write(w, "abc", 3);
    queue_writer_free(w);

    /* Writer that died after flushing part of a big message. */
    w = queue_writer_create(q, &g, &simple_env, half);
    char block[70000];
    memset(block, 'z', sizeof(block));
    queue_writer_write(w, block, sizeof(block));
    queue_writer_free(w);

    /* A finished file damaged later, in active/. */
    put_message(q, &g, &simple_env, "Subject: d\r\n\r\nD\r\n", damaged);
    size_t size;
    unsigned char *raw = slurp(in, damaged, &size);
    raw[20] ^= 1;
    spew(in, damaged, raw, size);
    free(raw);
    queue_move(q, damaged, QDIR_INCOMING, QDIR_ACTIVE);

    put_message(q, &g, &simple_env, "Subject: e\r\n\r\nE\r\n", deferred);
    ok(queue_move(q, deferred, QDIR_INCOMING, QDIR_DEFERRED) == 0, "move to deferred");
    put_message(q, &g, &simple_env, "Subject: h\r\n\r\nH\r\n", held);
    ok(queue_move_durable(q, held, QDIR_INCOMING, QDIR_HOLD) == 0, "durable move to hold");
    spew(queue_dir_fd(q, QDIR_ACTIVE), "README", "not mail", 8);

    int n_incoming = 0;
    ok(queue_scan(q, QDIR_INCOMING, count_id, &n_incoming) == 0 && n_incoming == 3,
       "scan sees the 3 incoming files (%d)", n_incoming);

    struct found_log found = { .n_active = 0 };
    struct queue_recover_stats st;
    ok(queue_recover(q, on_found, &found, &st) == 0, "recovery runs");
    is_int(st.removed_incomplete, 2, "two unfinished incoming files removed");
    is_int(st.recovered_incoming, 1, "one complete incoming file recovered");
    is_int(st.moved_to_corrupt, 1, "one damaged file moved to corrupt/");
    is_int(st.active, 1, "one message found in active/");
    is_int(st.deferred, 1, "one message found in deferred/");
    is_int(st.held, 1, "the held message stays held");
    is_int(st.ignored, 1, "a stray file is ignored");
    ok(!exists_in(q, QDIR_INCOMING, never_flushed) && !exists_in(q, QDIR_INCOMING, half),
       "incomplete files are gone");
    ok(exists_in(q, QDIR_ACTIVE, complete) && !exists_in(q, QDIR_INCOMING, complete),
       "complete incoming file is now in active/");
    ok(exists_in(q, QDIR_CORRUPT, damaged) && !exists_in(q, QDIR_ACTIVE, damaged),
       "damaged file is in corrupt/");
    ok(exists_in(q, QDIR_HOLD, held), "held file untouched");
    ok(found.n_active == 1 && !strcmp(found.active[0], complete), "callback saw the recovered message in active/");
    ok(found.n_deferred == 1 && !strcmp(found.deferred[0], deferred), "callback saw the deferred message");

    /* Marks in place persist across re-reads. */
    petrel_pool *pool = petrel_pool_create(0);
    struct queue_message m;
    int fd = openat(queue_dir_fd(q, QDIR_ACTIVE), complete, O_RDWR);
    ok(queue_message_read_fd(fd, complete, pool, &m, &error) == 0, "recovered message reads");
    struct stat before, after;
    fstat(fd, &before);
    ok(queue_mark_rcpt_dsn(fd, &m, 0, QUEUE_RCPT_DELIVERED, QUEUE_DSN_CODE(2, 0, 0)) == 0, "mark rcpt 0 delivered");
    ok(queue_mark_rcpt(fd, &m, 1, QUEUE_RCPT_DEFERRED) == 0, "mark rcpt 1 deferred");
    is_int(m.pending_count, 1, "in-memory pending count follows marks");
    errno = 0;
    ok(queue_mark_rcpt(fd, &m, 2, QUEUE_RCPT_DELIVERED) == -1 && errno == EINVAL, "mark out of range: EINVAL");
    ok(queue_mark_rcpt(fd, &m, 0, 9) == -1 && errno == EINVAL, "unknown status: EINVAL");
    fstat(fd, &after);
    is_int(after.st_size, before.st_size, "marks do not change the file size");
    close(fd);
    petrel_pool_reset(pool);
    int rc = queue_message_read(queue_dir_fd(q, QDIR_ACTIVE), complete, pool, &m, &error);
    ok(rc == 0, "marked file still validates (%s)", rc ? error : "ok");
    if (rc == 0) {
        is_int(m.rcpt_state[0].status, QUEUE_RCPT_DELIVERED, "rcpt 0 delivered after re-read");
        is_int(m.rcpt_state[0].dsn_code, QUEUE_DSN_CODE(2, 0, 0), "rcpt 0 DSN code after re-read");
        is_int(m.rcpt_state[1].status, QUEUE_RCPT_DEFERRED, "rcpt 1 deferred after re-read");
        is_int(m.pending_count, 1, "one recipient still pending");
        is_str(m.env.rcpts[1].address, "two@example.org", "recipient data intact after marks");
    }

    ok(queue_remove(q, complete, QDIR_ACTIVE) == 0 && !exists_in(q, QDIR_ACTIVE, complete), "remove");
    ok(queue_move(q, "../escape", QDIR_ACTIVE, QDIR_HOLD) == -1 && errno == EINVAL, "move refuses a non-ID");
    petrel_pool_reset(pool);
    ok(queue_message_read(queue_dir_fd(q, QDIR_ACTIVE), "../../etc/passwd", pool, &m, &error) == -1
           && errno == EINVAL, "read refuses a non-ID name");
    ok(queue_message_read(queue_dir_fd(q, QDIR_ACTIVE), complete, pool, &m, &error) == -1 && errno == ENOENT
           && error && strstr(error, "open"), "missing file: ENOENT with a reason");

    /* A second recovery finds a clean queue. */
    ok(queue_recover(q, NULL, NULL, &st) == 0 && st.removed_incomplete == 0 && st.moved_to_corrupt == 0
           && st.deferred == 1 && st.held == 1, "recovery is idempotent");
    petrel_pool_destroy(pool);
    queue_close(q);
}


/* ---- maildrop origin ---- */

static void test_origin(void)
{
    char path[8192];
    snprintf(path, sizeof(path), "%s/origin", root);
    char *error = NULL;
    struct queue *q = queue_open(path, 1, &error);
    ok(q != NULL, "origin queue opened (%s)", error ? error : "ok");
    if (!q)
        return;
    char drop[8300];
    snprintf(drop, sizeof(drop), "%s/maildrop", path);
    ok(mkdir(drop, 0700) == 0, "maildrop/ made");
    int dfd = open(drop, O_RDONLY | O_DIRECTORY);
    const char *name = "1ABCDEFGHJK00001000";
    int fd = openat(dfd, name, O_WRONLY | O_CREAT | O_EXCL, 0744);
    struct stat st;
    ok(fd >= 0 && fstat(fd, &st) == 0, "a maildrop file");
    close(fd);

    struct queue_rcpt one = { "x@y", NULL, 0 };
    struct queue_origin origin = { name, (unsigned long long)st.st_dev, (unsigned long long)st.st_ino, 1 };
    struct queue_envelope env = { .sender = "s@y", .rcpt_count = 1, .rcpts = &one, .origin = &origin };
    struct queue_id_gen g;
    queue_id_gen_init(&g, 12);
    char id[QUEUE_ID_MAX];
    ok(put_message(q, &g, &env, "Subject: o\r\n\r\nO\r\n", id) == 0, "a message with a maildrop origin commits");
    petrel_pool *pool = petrel_pool_create(0);
    struct queue_message m;
    int rc = queue_message_read(queue_dir_fd(q, QDIR_INCOMING), id, pool, &m, &error);
    ok(rc == 0 && m.env.origin != NULL, "it reads back with its origin (%s)", rc ? error : "ok");
    if (rc == 0 && m.env.origin) {
        is_str(m.env.origin->name, name, "origin name");
        ok(m.env.origin->dev == origin.dev && m.env.origin->ino == origin.ino, "origin device and inode");
        is_int(m.env.origin->last, 1, "origin last flag");
    }

    /* Not the last queue file of the maildrop file: left alone. */
    origin.last = 0;
    is_int(queue_origin_release(q, &env, 1), 0, "no release while a notice is still to come");
    ok(faccessat(dfd, name, F_OK, 0) == 0, "the maildrop file stays");
    origin.last = 1;
    /* Another file under the same name (another inode): never removed. */
    origin.ino++;
    is_int(queue_origin_release(q, &env, 1), 0, "a file of that name with another inode is not the origin");
    ok(faccessat(dfd, name, F_OK, 0) == 0, "and stays");
    origin.ino--;
    is_int(queue_origin_release(q, &env, 1), 1, "the origin is removed");
    ok(faccessat(dfd, name, F_OK, 0) != 0 && errno == ENOENT, "the maildrop file is gone");
    is_int(queue_origin_release(q, &env, 1), 0, "a second release finds nothing: idempotent");

    /* The start-up recovery releases the origin of a committed incoming/ file. */
    fd = openat(dfd, name, O_WRONLY | O_CREAT | O_EXCL, 0744);
    ok(fd >= 0 && fstat(fd, &st) == 0, "the maildrop file again (a pickup died before removing it)");
    close(fd);
    origin.dev = (unsigned long long)st.st_dev;
    origin.ino = (unsigned long long)st.st_ino;
    unlinkat(queue_dir_fd(q, QDIR_INCOMING), id, 0);
    ok(put_message(q, &g, &env, "Subject: o\r\n\r\nO\r\n", id) == 0, "its queue file in incoming/");
    struct queue_recover_stats stats;
    ok(queue_recover(q, NULL, NULL, &stats) == 0, "recovery runs");
    is_int(stats.maildrop_released, 1, "recovery removed the maildrop file of a queued message");
    is_int(stats.recovered_incoming, 1, "and moved the queue file on");
    ok(faccessat(dfd, name, F_OK, 0) != 0, "the maildrop file is gone");

    /* A damaged origin record. */
    char bad[QUEUE_ID_MAX];
    ok(put_message(q, &g, &env, "x", bad) == 0, "another message with an origin");
    size_t size;
    unsigned char *raw = slurp(queue_dir_fd(q, QDIR_INCOMING), bad, &size);
    unsigned char *rec = memmem(raw, size, name, strlen(name));
    ok(rec != NULL, "its origin record is found");
    if (rec) {
        rec[-17] = 2;   /* an unknown flag */
        spew(queue_dir_fd(q, QDIR_INCOMING), bad, raw, size);
        petrel_pool_reset(pool);
        rc = queue_message_read(queue_dir_fd(q, QDIR_INCOMING), bad, pool, &m, &error);
        ok(rc == -1 && errno == EBADMSG && strstr(error, "maildrop origin record") != NULL,
           "an unknown origin flag makes the file damaged (%s)", rc ? error : "accepted");
    }
    free(raw);
    struct queue_envelope badenv = env;
    struct queue_origin badorigin = origin;
    badorigin.name = "../etc/passwd";
    badenv.origin = &badorigin;
    errno = 0;
    ok(queue_writer_create(q, &g, &badenv, bad) == NULL && errno == EINVAL, "an origin name that is no queue ID: EINVAL");
    petrel_pool_destroy(pool);
    close(dfd);
    queue_close(q);
}

int main(void)
{
    const char *tmp = getenv("TMPDIR");
    snprintf(root, sizeof(root), "%s/petrel-test-queue-XXXXXX", tmp && *tmp ? tmp : "/tmp");
    if (!mkdtemp(root)) {
        perror("mkdtemp");
        return 1;
    }
    char path[8192];
    snprintf(path, sizeof(path), "%s/spool", root);
    char *error = NULL;
    ok(queue_open(path, 0, &error) == NULL && error != NULL, "opening a missing queue fails with a reason");
    free(error);
    error = NULL;
    struct queue *q = queue_open(path, 1, &error);
    ok(q != NULL, "queue created (%s)", error ? error : "ok");
    if (!q)
        return done_testing();
    for (int d = 0; d < QDIR_COUNT; d++)
        ok(queue_dir_fd(q, (enum queue_dir)d) >= 0, "%s/ is open", queue_dir_name((enum queue_dir)d));
    is_str(queue_dir_name(QDIR_DEFERRED), "deferred", "directory names");

    test_ids();
    test_round_trip(q);
    test_big_content(q);
    test_concurrent_commits(q);
    test_damage(q);
    test_edits(q);
    queue_close(q);
    test_recovery_and_marks();
    test_origin();
    remove_tree(root);
    return done_testing();
}
