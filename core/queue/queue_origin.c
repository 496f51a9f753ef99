/*
 * The maildrop origin of a queue file: removing the maildrop file a queued
 * message came from, idempotently.
 *
 * The pickup role turns a maildrop file into a queue file and only then
 * removes the maildrop file; a SIGKILL between the two (the master's stop
 * timeout, the OOM killer) used to leave both, and the next pickup queued
 * the message a second time. Two files cannot change together, so the
 * queue file says where it came from (a 'D' record: the maildrop file's
 * name, device and inode) and every reader that takes a queue file out of
 * incoming/ - the start-up recovery, the queue manager, a starting pickup
 * role - first removes that maildrop file if it is still there. A queue
 * file leaves incoming/ (and can be delivered) only after its maildrop
 * file is durably gone, and while it sits in incoming/ the next pickup
 * finds it before it looks at maildrop/. doc/queue-format.md has the
 * whole argument.
 *
 * The device and inode guard against ever removing a different file that
 * happens to have the same name (names are queue IDs from petrel-postdrop's
 * generator, so this would take a reused name and a reused inode).
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "lib/log.h"
#include "queue/maildrop.h"
#include "queue/queue.h"
#include "queue/queue_int.h"

static int open_maildrop(struct queue *q)
{
    char path[4200];
    snprintf(path, sizeof(path), "%s/%s", q->path, MAILDROP_DIR);
    return open(path, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
}

int queue_origin_release(struct queue *q, const struct queue_envelope *env, int sync)
{
    const struct queue_origin *o = env->origin;
    if (o == NULL || !o->last)
        return 0;   /* a non-delivery notice follows: see doc/queue-format.md */
    int dfd = open_maildrop(q);
    if (dfd < 0)
        return errno == ENOENT ? 0 : -1;   /* no maildrop/: nothing can be picked up again */
    int ret = 0;
    struct stat st;
    if (fstatat(dfd, o->name, &st, AT_SYMLINK_NOFOLLOW) == 0) {
        if ((unsigned long long)st.st_dev == o->dev && (unsigned long long)st.st_ino == o->ino) {
            if (unlinkat(dfd, o->name, 0) == 0)
                ret = 1;
            else if (errno != ENOENT)
                ret = -1;
        }
    } else if (errno != ENOENT) {
        ret = -1;
    }
    if (ret >= 0 && sync && queue_sync_dir(dfd) != 0)
        ret = -1;
    int err = errno;
    close(dfd);
    errno = err;
    return ret;
}

int queue_origin_sync(struct queue *q)
{
    int dfd = open_maildrop(q);
    if (dfd < 0)
        return errno == ENOENT ? 0 : -1;
    int ret = queue_sync_dir(dfd);
    int err = errno;
    close(dfd);
    errno = err;
    return ret;
}
