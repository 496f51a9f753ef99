/*
 * How the queue manager finds its messages: inotify on incoming/ (a file
 * closed after writing, or renamed in) for new mail at once; a periodic
 * scan of incoming/ for what inotify missed (only files left alone for
 * STALE_INCOMING_SECONDS, so a file being written or committed is never
 * taken); a scan of deferred/ every queue_run_delay for messages whose
 * retry time (their mtime) has come; a refill scan when room appears under
 * qmgr_message_active_limit; and SIGUSR2 (petrelctl queue flush).
 */
#include "config.h"

#include <fcntl.h>
#include <sys/inotify.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <event2/event.h>

#include "lib/log.h"
#include "qmgr/qmgr_int.h"
#include "queue/queue.h"

#define STALE_INCOMING_SECONDS 10

/* ------------------------------------------------------------------ */
/* intake: inotify, scans                                             */

void qmgr_on_inotify(evutil_socket_t fd, short what, void *arg)
{
    struct qmgr *q = arg;
    char buf[16384] __attribute__((aligned(__alignof__(struct inotify_event))));
    /* A bounded batch per call: the descriptor stays readable and the loop
     * comes back, after it has looked at signals and timers. */
    for (int batch = 0; batch < 8 && !q->stopping; batch++) {
        ssize_t n = read(fd, buf, sizeof(buf));
        if (n <= 0)
            break;
        for (char *p = buf; p < buf + n;) {
            struct inotify_event *ev = (struct inotify_event *)p;
            if (ev->mask & IN_Q_OVERFLOW) {
                /* Events were lost: let a scan find the files. */
                struct timeval soon = { 0, 0 };
                evtimer_add(q->scan_timer, &soon);
            } else if (ev->len && queue_id_valid(ev->name)) {
                qmgr_take_message(q, ev->name, QDIR_INCOMING);
            }
            p += sizeof(*ev) + ev->len;
        }
    }
}

struct scan_ctx {
    struct qmgr *q;
    enum queue_dir dir;
    time_t now;
};

static void scan_one(void *arg, const char *id)
{
    struct scan_ctx *c = arg;
    struct stat st;
    if (c->q->nactive >= c->q->active_limit) {
        c->q->intake_blocked = 1;
        return;   /* full: the rest waits for the refill */
    }
    if (fstatat(queue_dir_fd(c->q->queue, c->dir), id, &st, AT_SYMLINK_NOFOLLOW) != 0)
        return;
    if (c->dir == QDIR_INCOMING && c->now - st.st_mtime < STALE_INCOMING_SECONDS)
        return;   /* maybe still being written or committed: inotify reports it */
    if (c->dir == QDIR_DEFERRED && st.st_mtime > c->now)
        return;   /* not due yet */
    qmgr_take_message(c->q, id, c->dir);
}

void qmgr_scan_dir(struct qmgr *q, enum queue_dir dir)
{
    struct scan_ctx c = { q, dir, time(NULL) };
    queue_scan(q->queue, dir, scan_one, &c);
}

void qmgr_on_scan(evutil_socket_t fd, short what, void *arg)
{
    struct qmgr *q = arg;
    qmgr_scan_dir(q, QDIR_INCOMING);
    /* A scan of a big queue takes a while: re-arm from the real time, not
     * from the loop's cached clock (that would fire again at once). */
    event_base_update_cache_time(q->base);
    struct timeval again = { STALE_INCOMING_SECONDS, 0 };
    evtimer_add(q->scan_timer, &again);
}

void qmgr_on_deferred_scan(evutil_socket_t fd, short what, void *arg)
{
    struct qmgr *q = arg;
    qmgr_scan_dir(q, QDIR_DEFERRED);
    event_base_update_cache_time(q->base);
    struct timeval again = { (time_t)q->run_delay, 0 };
    evtimer_add(q->deferred_timer, &again);
}

void qmgr_on_refill(evutil_socket_t fd, short what, void *arg)
{
    struct qmgr *q = arg;
    q->intake_blocked = 0;
    qmgr_scan_dir(q, QDIR_INCOMING);
    qmgr_scan_dir(q, QDIR_DEFERRED);
    event_base_update_cache_time(q->base);
}

void qmgr_on_flush(evutil_socket_t sig, short what, void *arg)
{
    struct qmgr *q = arg;
    msg_info("flush requested: scanning the deferred queue");
    qmgr_scan_dir(q, QDIR_INCOMING);
    qmgr_scan_dir(q, QDIR_DEFERRED);
}
