/*
 * The start-up recovery scan (petreld's master, before any role runs):
 * every file of incoming/, hold/, active/ and deferred/ is read once with
 * the queue file reader. A complete file in incoming/ moves to active/ (it
 * was acknowledged, or it may have been); an incomplete one is removed (it
 * was never acknowledged); a damaged one goes to corrupt/ with a log line;
 * a file that cannot be read for an I/O or permission reason is left alone.
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "lib/log.h"
#include "queue/queue.h"
#include "queue/queue_int.h"

struct recovery {
    struct queue *q;
    enum queue_dir dir;
    void (*found)(void *ctx, enum queue_dir dir, const char *id);
    void *ctx;
    struct queue_recover_stats *stats;
    petrel_pool *pool;   /* reset after every file */
    int origins;         /* files with a maildrop origin were seen: maildrop/ gets an fsync */
};

/* A queue file made from a maildrop file that is still there (the pickup
 * role died between the two): the maildrop file goes, so that it is not
 * queued twice. -1 when it could not be removed. */
static int release_origin(struct recovery *rc, const char *id, const struct queue_message *msg)
{
    if (msg->env.origin == NULL)
        return 0;
    rc->origins = 1;
    int r = queue_origin_release(rc->q, &msg->env, 0);
    if (r == 1) {
        msg_info("%s: removed maildrop file %s: its message was already queued", id, msg->env.origin->name);
        rc->stats->maildrop_released++;
    } else if (r < 0) {
        msg_error("%s: cannot remove maildrop file %s, whose message is queued: %s", id, msg->env.origin->name,
                  strerror(errno));
    }
    return r < 0 ? -1 : 0;
}

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
        int released = release_origin(rc, name, &msg);
        switch (rc->dir) {
        case QDIR_INCOMING:
            /* Active scan runs later and reports it; no found() here. Not
             * while its maildrop file may still be picked up again. */
            if (released < 0)
                rc->stats->ignored++;
            else if (queue_move(rc->q, name, QDIR_INCOMING, QDIR_ACTIVE) < 0)
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
        if (queue_scan_names(q, order[i], recover_one, &rc) < 0) {
            msg_error("cannot scan %s/%s: %s", q->path, queue_dir_name(order[i]), strerror(errno));
            ret = -1;
        }
    }
    petrel_pool_destroy(rc.pool);
    /* One fsync for every removal above, before any role can deliver. */
    if (rc.origins && queue_origin_sync(q) != 0) {
        msg_error("cannot fsync %s/maildrop: %s", q->path, strerror(errno));
        ret = -1;
    }
    return ret;
}
