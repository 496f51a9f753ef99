/*
 * The pickup role's first look at a maildrop file (steps 2 and 3 of
 * pickup.c's life of a file): claim it and read it once, whole, with the
 * bounded maildrop parser, before any byte of it is submitted.
 *
 * Claimed: opened O_NOFOLLOW, a regular file with the ready mode (0744),
 * flock(LOCK_EX|LOCK_NB) free (petrel-postdrop holds it while it writes),
 * still linked after the lock. A file never finished whose writer is gone
 * (unlocked, not ready, over an hour old) is removed with a log line: it
 * was never acknowledged. A file the parser refuses moves to
 * corrupt/maildrop-NAME with a warning saying why; a read error leaves it
 * for the next scan. The parse also collects what the submission needs:
 * the arrival time, sender, recipients, whether anything is 8-bit or
 * UTF-8, and the header section (bounded) for a non-delivery notice.
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "lib/buf.h"
#include "lib/log.h"
#include "lib/xalloc.h"
#include "queue/maildrop.h"
#include "queue/queue.h"
#include "smtpd/pickup_int.h"

#define ABANDONED_SECONDS 3600        /* an unfinished file whose writer is gone */
#define HEADERS_FOR_BOUNCE 50000      /* Postfix's bounce_size_limit */

static int collect_time(void *ctx, long long sec, long usec)
{
    struct job *j = ctx;
    j->arrival = sec;
    return 0;
}

static int collect_sender(void *ctx, const char *address)
{
    struct job *j = ctx;
    j->sender = petrel_pool_strdup(j->pool, address);
    return 0;
}

static int has_8bit(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)s[i] >= 0x80)
            return 1;
    return 0;
}

static int collect_rcpt(void *ctx, const char *address)
{
    struct job *j = ctx;
    if (j->nrcpt == j->cap) {
        size_t cap = j->cap ? j->cap * 2 : 16;
        const char **grown = petrel_pool_alloc(j->pool, cap * sizeof(*grown));
        if (j->nrcpt)
            memcpy(grown, j->rcpt, j->nrcpt * sizeof(*grown));
        j->rcpt = grown;
        j->cap = cap;
    }
    j->rcpt[j->nrcpt++] = petrel_pool_strdup(j->pool, address);
    return 0;
}

static int collect_content(void *ctx, const void *data, size_t n)
{
    struct job *j = ctx;
    if (!j->eight_bit && has_8bit(data, n))
        j->eight_bit = 1;
    if (!j->headers_done) {
        /* Keep the header section (bounded) for a possible notice. */
        size_t room = HEADERS_FOR_BOUNCE - j->headers.len;
        buf_append(&j->headers, data, n < room ? n : room);
        char *end = j->headers.data ? strstr(j->headers.data, "\r\n\r\n") : NULL;
        if (end) {
            j->headers.len = (size_t)(end - j->headers.data) + 2;
            j->headers.data[j->headers.len] = '\0';
            j->headers_done = 1;
        } else if (j->headers.len >= HEADERS_FOR_BOUNCE) {
            j->headers_done = 1;
        }
    }
    return 0;
}

/* Reads the whole file through the parser; 0 or -1 with the reason. */
static int check_file(struct job *j, const char **why)
{
    static const struct maildrop_handler collect = { collect_time, collect_sender, collect_rcpt, NULL,
                                                     collect_content, NULL };
    struct maildrop_parser p;
    maildrop_parser_init(&p, MAILDROP_FILE, 0);
    char *block = xmalloc(READ_BLOCK);
    int rc = 0;
    for (;;) {
        ssize_t n = read(j->fd, block, READ_BLOCK);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            *why = petrel_pool_printf(j->pool, "read error: %s", strerror(errno));
            rc = -2;
            break;
        }
        if (n == 0)
            break;
        if (maildrop_parse(&p, block, (size_t)n, &collect, j) != 0)
            break;
    }
    free(block);
    if (rc == 0 && maildrop_parse_finish(&p) != 0) {
        *why = petrel_pool_strdup(j->pool, p.error);
        rc = -1;
    }
    if (rc == 0) {
        j->utf8 = has_8bit(j->sender, strlen(j->sender));
        for (size_t i = 0; i < j->nrcpt && !j->utf8; i++)
            j->utf8 = has_8bit(j->rcpt[i], strlen(j->rcpt[i]));
    }
    return rc;
}

static void to_corrupt(struct pickup *pk, const char *name, long uid, const char *why)
{
    char target[QUEUE_ID_MAX + 16];
    snprintf(target, sizeof(target), "maildrop-%s", name);
    msg_warn("%s: uid=%ld: moving damaged maildrop file to corrupt/%s: %s", name, uid, target, why);
    if (renameat(pk->dirfd, name, pk->corrupt_fd, target) != 0) {
        msg_warn("%s: cannot move to corrupt/: %s; removing it", name, strerror(errno));
        unlinkat(pk->dirfd, name, 0);
    }
}

/* Claims and checks one file; returns a job ready to submit, or NULL. */
struct job *smtpd_pickup_claim(struct pickup *pk, const char *name)
{
    int fd = openat(pk->dirfd, name, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0) {
        if (errno == ELOOP) {
            msg_warn("%s: not a regular file (symbolic link): removing it", name);
            unlinkat(pk->dirfd, name, 0);
        } else if (errno != ENOENT) {
            msg_warn("%s: cannot open maildrop file: %s", name, strerror(errno));
        }
        return NULL;
    }
    struct stat st;
    memset(&st, 0, sizeof(st));
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        msg_warn("%s: uid=%ld: not a regular file: removing it", name, (long)st.st_uid);
        unlinkat(pk->dirfd, name, S_ISDIR(st.st_mode) ? AT_REMOVEDIR : 0);
        close(fd);
        return NULL;
    }
    if (flock(fd, LOCK_EX | LOCK_NB) != 0 || fstat(fd, &st) != 0 || st.st_nlink == 0) {
        close(fd);   /* being written, or already taken and removed */
        return NULL;
    }
    if ((st.st_mode & S_IRWXU) != S_IRWXU) {
        /* Not complete, and nobody holds its lock: its writer is gone. */
        if (time(NULL) - st.st_mtime > ABANDONED_SECONDS) {
            msg_warn("%s: uid=%ld: removing an incomplete maildrop file (its writer died before finishing)",
                     name, (long)st.st_uid);
            unlinkat(pk->dirfd, name, 0);
        }
        close(fd);
        return NULL;
    }
    petrel_pool *pool = petrel_pool_create(4096);
    struct job *j = petrel_pool_zalloc(pool, sizeof(*j));
    j->pk = pk;
    j->pool = pool;
    j->fd = fd;
    j->uid = (long)st.st_uid;
    memcpy(j->name, name, QUEUE_ID_MAX);
    j->origin.name = j->name;
    j->origin.dev = (unsigned long long)st.st_dev;
    j->origin.ino = (unsigned long long)st.st_ino;
    const char *why = NULL;
    int rc = check_file(j, &why);
    if (rc != 0) {
        if (rc == -1)
            to_corrupt(pk, name, j->uid, why);
        else
            msg_warn("%s: uid=%ld: %s; will retry", name, j->uid, why);
        buf_free(&j->headers);
        close(fd);
        petrel_pool_destroy(pool);
        return NULL;
    }
    long long now = (long long)time(NULL);
    if (pk->max_lifetime > 0 && now - j->arrival > pk->max_lifetime)
        j->expired = 1;
    j->outcome = petrel_pool_zalloc(pool, j->nrcpt);
    j->why = petrel_pool_zalloc(pool, j->nrcpt * sizeof(*j->why));
    return j;
}
