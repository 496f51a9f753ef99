/*
 * Finishing a message: what the queue manager does once a message has no
 * delivery job left - mark the outcomes in the queue file, queue the
 * notifications the sender (or the postmaster) is owed, then defer or
 * remove the message.
 *
 * The order is what keeps "nothing accepted is lost" true for bounces too:
 *
 *  1. Outcomes that owe nobody a notification are marked at once (sent
 *     without NOTIFY=SUCCESS, bounced with NOTIFY=NEVER, deferred).
 *  2. Each notification (non-delivery to the sender, or to the postmaster
 *     for mail from <>; success report; delay warning) is composed into a
 *     new queue file in incoming/ and committed on the thread pool exactly
 *     as smtpd commits mail: fdatasync of the file, then a group-committed
 *     fsync of incoming/.
 *  3. When every commit has answered: the recipients a committed
 *     notification covers are marked final. A notification that could not
 *     be created, composed or committed is not retried here: its
 *     recipients stay undelivered (deferred, 4.3.0, as Postfix defers a
 *     recipient when its bounce or trace service fails), the message stays
 *     queued, and they - and the notification with them - are tried again
 *     at the next attempt. A delay warning's marker is written only after
 *     its notification is committed, so a failed warning is tried again.
 *  4. Only then is the message deferred (some recipient is left) or
 *     removed.
 *
 * A crash anywhere between those steps repeats a delivery attempt or a
 * notification at worst; it never loses either. Expired messages
 * (maximal_queue_lifetime, bounce_queue_lifetime for mail from <>) are
 * returned as Postfix returns them: Action: failed with the last temporary
 * status (4.x.x) and reason of each recipient (RFC 3464 section 2.3.3).
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include <event2/event.h>

#include "config/cfg.h"
#include "lib/log.h"
#include "lib/workq.h"
#include "lib/xalloc.h"
#include "mail/notify.h"
#include "qmgr/bounce.h"
#include "qmgr/qmgr_int.h"
#include "queue/queue.h"
#include "tables/table.h"

enum notice_kind { NOTICE_FAILURE, NOTICE_POSTMASTER, NOTICE_SUCCESS, NOTICE_DELAY, NOTICE_BOUNCE_COPY,
                   NOTICE_DELAY_COPY };

static const char *const notice_names[] = {
    [NOTICE_FAILURE] = "sender non-delivery notification",
    [NOTICE_POSTMASTER] = "postmaster non-delivery notification",
    [NOTICE_SUCCESS] = "sender delivery status notification",
    [NOTICE_DELAY] = "sender delay notification",
    [NOTICE_BOUNCE_COPY] = "postmaster non-delivery notification",
    [NOTICE_DELAY_COPY] = "postmaster delay notification",
};

/* The postmaster's copies (notify_classes bounce, delay) are not critical:
 * one that cannot be queued is a warning, its recipients are final anyway
 * (Postfix: "postmaster notice failed while bouncing to ..."). */
static int is_copy(enum notice_kind k)
{
    return k == NOTICE_BOUNCE_COPY || k == NOTICE_DELAY_COPY;
}

/* One notification about m; lives in m's pool until the message is done. */
struct notice {
    struct notice *next;
    struct qmsg *m;
    enum notice_kind kind;
    size_t *rcpt;              /* the recipients it reports, indexes into env.rcpts */
    size_t n;
    struct queue_writer *w;
    char new_id[QUEUE_ID_MAX];
    int err;                   /* 0: committed; else why not */
    const char *step;          /* what failed: "create", "compose", "commit" */
};

static void message_free(struct qmsg *m)
{
    struct qmgr *q = m->q;
    struct qmsg **pp = &q->by_id[qmgr_id_bucket(m->id)];
    while (*pp && *pp != m)
        pp = &(*pp)->next_hash;
    if (*pp)
        *pp = m->next_hash;
    if (m->prev)
        m->prev->next = m->next;
    else
        q->messages = m->next;
    if (m->next)
        m->next->prev = m->prev;
    q->nactive--;
    if (m->routing)
        tbl_scope_free(m->routing->scope);
    if (m->fd >= 0)
        close(m->fd);
    petrel_pool_destroy(m->pool);
    free(m);
}

void qmgr_stop_if_idle(struct qmgr *q)
{
    if (q->stopping && !q->exiting && q->deliveries == 0 && q->notices_in_flight == 0)
        event_base_loopexit(q->base, NULL);
}

static unsigned dsn_code(const char *dsn)
{
    unsigned a = 0, b = 0, c = 0;
    if (sscanf(dsn, "%u.%u.%u", &a, &b, &c) != 3)
        return 0;
    return QUEUE_DSN_CODE(a, b, c);
}

static void mark(struct qmsg *m, size_t i, int status)
{
    if (queue_mark_rcpt_dsn(m->fd, &m->msg, i, status, dsn_code(m->outcome[i].dsn)) != 0)
        msg_warn("%s: cannot mark recipient %s: %s", m->id, m->msg.env.rcpts[i].address, strerror(errno));
}

/* ---- the defer log and the delay-warning marker ---- */

static long long backoff_for(struct qmgr *q, struct qmsg *m)
{
    long long age = (long long)(qmgr_now() - m->arrival);
    if (age > q->max_backoff)
        age = q->max_backoff;
    if (age < q->min_backoff)
        age = q->min_backoff;
    return age;
}

static void write_defer_log(struct qmgr *q, struct qmsg *m)
{
    char path[4200], tmp[4300];
    snprintf(path, sizeof(path), "%s/%s", q->defer_dir, m->id);
    snprintf(tmp, sizeof(tmp), "%s/.%s.tmp", q->defer_dir, m->id);
    FILE *f = fopen(tmp, "w");
    if (f == NULL) {
        msg_warn("%s: cannot write %s: %s", m->id, tmp, strerror(errno));
        return;
    }
    for (size_t i = 0; i < m->msg.env.rcpt_count; i++) {
        struct rcpt_outcome *o = &m->outcome[i];
        if (o->state == DLV_DEFERRED + 1)
            fprintf(f, "%s\t%s\t%s\n", m->msg.env.rcpts[i].address, o->dsn, o->text);
    }
    if (fclose(f) != 0 || rename(tmp, path) != 0)
        msg_warn("%s: cannot write %s: %s", m->id, path, strerror(errno));
}

static void remove_defer_log(struct qmgr *q, const char *id)
{
    char path[4200];
    snprintf(path, sizeof(path), "%s/%s", q->defer_dir, id);
    unlink(path);
    snprintf(path, sizeof(path), "%s/%s.warned", q->defer_dir, id);
    unlink(path);
}

static void warned_marker(struct qmgr *q, const char *id, char *out, size_t size)
{
    snprintf(out, size, "%s/%s.warned", q->defer_dir, id);
}

/* delay_warning_time: one "delayed mail" notice per message, remembered by
 * a marker file beside its defer log once the notice is committed. */
static int delay_warning_due(struct qmgr *q, struct qmsg *m)
{
    if (q->delay_warning <= 0 || *m->msg.env.sender == '\0' || qmgr_now() - m->arrival < (double)q->delay_warning)
        return 0;
    char marker[4200];
    warned_marker(q, m->id, marker, sizeof(marker));
    return access(marker, F_OK) != 0;
}

/* ---- notifications ---- */

static int emit_to_writer(void *ctx, const char *data, size_t n)
{
    return queue_writer_write(ctx, data, n);
}

static struct bounce_rcpt report_line(struct qmsg *m, size_t i, const char *action)
{
    const struct rcpt_outcome *o = &m->outcome[i];
    const struct queue_rcpt *r = &m->msg.env.rcpts[i];
    int remote = strchr(o->relay, '[') != NULL && strcmp(o->relay, "none") != 0;
    return (struct bounce_rcpt){
        .address = r->address, .orcpt = r->orcpt, .action = action, .status = o->dsn,
        .remote_mta = remote ? petrel_pool_printf(m->pool, "dns; %.*s", (int)strcspn(o->relay, "["), o->relay) : NULL,
        .diagnostic = petrel_pool_printf(m->pool, "%s; %s", remote ? "smtp" : "x-unix", o->text),
        .last_attempt = (long long)time(NULL),
    };
}

static void notice_commit_work(void *arg)
{
    struct notice *n = arg;
    errno = 0;
    if (queue_writer_commit(n->w) != 0) {
        n->err = errno ? errno : EIO;
        n->step = "commit";
    }
}

static void after_notices(struct qmsg *m);

static void notice_commit_done(void *arg, int cancelled)
{
    struct notice *n = arg;
    struct qmsg *m = n->m;
    struct qmgr *q = m->q;
    if (n->err)
        queue_writer_abort(n->w);   /* the file goes: nobody was told it exists */
    else
        queue_writer_free(n->w);    /* its close hands it to us through inotify */
    n->w = NULL;
    q->notices_in_flight--;
    if (q->exiting)
        return;   /* the original stays in active/ and is taken again at the next start */
    if (--m->notices_left == 0)
        after_notices(m);
}

/* Creates and composes the notification, then submits its commit. On
 * failure n->err and n->step say why (reported by after_notices). */
static void notice_start(struct qmsg *m, struct notice *n, const char *to)
{
    struct qmgr *q = m->q;
    struct bounce_rcpt *lines = petrel_pool_zalloc(m->pool, n->n * sizeof(*lines));
    static const char *const actions[] = { [NOTICE_FAILURE] = "failed", [NOTICE_POSTMASTER] = "failed",
                                           [NOTICE_SUCCESS] = "delivered", [NOTICE_DELAY] = "delayed",
                                           [NOTICE_BOUNCE_COPY] = "failed", [NOTICE_DELAY_COPY] = "delayed" };
    for (size_t k = 0; k < n->n; k++)
        lines[k] = report_line(m, n->rcpt[k], actions[n->kind]);

    struct queue_rcpt rcpt = { .address = to };
    struct queue_envelope env;
    memset(&env, 0, sizeof(env));
    env.sender = "";
    env.client_name = "localhost";
    env.client_addr = "127.0.0.1";
    env.helo = q->myhostname;
    env.protocol = "local";
    struct timeval tv;
    gettimeofday(&tv, NULL);
    env.arrival_sec = tv.tv_sec;
    env.arrival_usec = tv.tv_usec;
    env.rcpt_count = 1;
    env.rcpts = &rcpt;
    errno = 0;
    n->w = queue_writer_create(q->queue, &q->idgen, &env, n->new_id);
    if (n->w == NULL) {
        n->err = errno ? errno : EIO;
        n->step = "create";
        return;
    }
    struct bounce_info info;
    memset(&info, 0, sizeof(info));
    info.myhostname = q->myhostname;
    info.mail_name = q->mail_name;
    info.postmaster = "postmaster";
    info.queue_id = m->id;
    info.msg = &m->msg;
    info.fd = m->fd;
    info.kind = n->kind == NOTICE_SUCCESS ? "success"
              : n->kind == NOTICE_DELAY || n->kind == NOTICE_DELAY_COPY ? "delay" : "failure";
    info.postmaster_copy = is_copy(n->kind);
    info.to = is_copy(n->kind) ? to : NULL;
    info.rcpts = lines;
    info.nrcpt = n->n;
    info.headers_only = m->msg.env.ret == QUEUE_RET_HDRS || *m->msg.env.sender == '\0';
    info.now = (long long)time(NULL);
    info.boundary_seed = n->new_id;
    info.size_limit = BOUNCE_SIZE_LIMIT;
    info.max_lifetime = q->max_lifetime;
    errno = 0;
    if (bounce_compose(&info, emit_to_writer, n->w) != 0) {
        n->err = errno ? errno : EIO;
        n->step = "compose";
        queue_writer_abort(n->w);
        n->w = NULL;
        return;
    }
    m->notices_left++;
    q->notices_in_flight++;
    workq_submit(q->workq, notice_commit_work, notice_commit_done, n);
}

static struct notice *notice_new(struct qmsg *m, enum notice_kind kind)
{
    struct notice *n = petrel_pool_zalloc(m->pool, sizeof(*n));
    n->m = m;
    n->kind = kind;
    n->rcpt = petrel_pool_zalloc(m->pool, (m->msg.env.rcpt_count ? m->msg.env.rcpt_count : 1) * sizeof(size_t));
    n->next = m->notices;
    m->notices = n;
    return n;
}

/* A notification that could not be queued: its recipients are tried
 * again, so the notification is too. */
static void notice_failed(struct qmsg *m, struct notice *n)
{
    if (is_copy(n->kind)) {
        msg_warn("%s: postmaster notice failed while %s: %s", m->id,
                 n->kind == NOTICE_BOUNCE_COPY ? "bouncing" : "warning of a delay", strerror(n->err));
        return;
    }
    const char *step = strcmp(n->step, "create") == 0 ? "cannot create its queue file"
                     : strcmp(n->step, "compose") == 0 ? "cannot write it" : "cannot commit it to disk";
    if (n->kind == NOTICE_DELAY) {
        msg_warn("%s: cannot queue the %s: %s: %s; it is tried again at the next deferral", m->id,
                 notice_names[n->kind], step, strerror(n->err));
        return;
    }
    msg_warn("%s: cannot queue the %s: %s: %s; the message stays queued and its %zu recipient%s %s tried again later",
             m->id, notice_names[n->kind], step, strerror(n->err), n->n, n->n == 1 ? "" : "s",
             n->n == 1 ? "is" : "are");
    for (size_t k = 0; k < n->n; k++) {
        struct rcpt_outcome *o = &m->outcome[n->rcpt[k]];
        char text[sizeof(o->text)];
        snprintf(text, sizeof(text), "cannot queue the %s (%s: %s); last result: %s %.300s",
                 n->kind == NOTICE_SUCCESS ? "delivery status notification" : "non-delivery notification", step,
                 strerror(n->err), o->dsn, o->text);
        memcpy(o->text, text, sizeof(text));
        snprintf(o->dsn, sizeof(o->dsn), "4.3.0");
        o->state = DLV_DEFERRED + 1;
        mark(m, n->rcpt[k], QUEUE_RCPT_DEFERRED);
    }
}

/* Step 3 and 4: every notification has answered. */
static void after_notices(struct qmsg *m)
{
    struct qmgr *q = m->q;
    for (struct notice *n = m->notices; n; n = n->next) {
        if (n->err) {
            notice_failed(m, n);
            continue;
        }
        msg_info("%s: %s: %s", m->id, notice_names[n->kind], n->new_id);
        if (is_copy(n->kind))
            continue;
        if (n->kind == NOTICE_DELAY) {
            char marker[4200];
            warned_marker(q, m->id, marker, sizeof(marker));
            int fd = open(marker, O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
            if (fd >= 0)
                close(fd);
            continue;
        }
        for (size_t k = 0; k < n->n; k++)
            mark(m, n->rcpt[k], n->kind == NOTICE_SUCCESS ? QUEUE_RCPT_DELIVERED : QUEUE_RCPT_BOUNCED);
    }

    size_t deferred = 0;
    for (size_t i = 0; i < m->msg.env.rcpt_count; i++)
        if (m->outcome[i].state == DLV_DEFERRED + 1)
            deferred++;
    if (deferred) {
        write_defer_log(q, m);
        long long delay = backoff_for(q, m);
        struct timespec times[2];
        clock_gettime(CLOCK_REALTIME, &times[0]);
        times[1] = times[0];
        times[1].tv_sec += delay;
        /* The next attempt time is the file's mtime (Postfix's convention). */
        if (futimens(m->fd, times) != 0)
            msg_warn("%s: cannot set the retry time: %s", m->id, strerror(errno));
        if (queue_move(q->queue, m->id, QDIR_ACTIVE, QDIR_DEFERRED) != 0)
            msg_warn("%s: cannot move to the deferred queue: %s", m->id, strerror(errno));
        else
            qmgr_board_deferred(q, m);
    } else {
        if (queue_remove(q->queue, m->id, QDIR_ACTIVE) != 0 && errno != ENOENT)
            msg_warn("%s: cannot remove: %s", m->id, strerror(errno));
        else
            msg_info("%s: removed", m->id);
        remove_defer_log(q, m->id);
    }
    message_free(m);
    if (q->intake_blocked && !evtimer_pending(q->refill_timer, NULL)) {
        /* Refill in batches (whatever finished within half a second), not
         * one directory scan per finished message. */
        struct timeval soon = { 0, 500000 };
        evtimer_add(q->refill_timer, &soon);
    }
    qmgr_stop_if_idle(q);
}

/* Is a failed notification about m from <> to the postmaster itself (or
 * another notice recipient)? Then nobody is left to tell. */
static int is_failed_postmaster_notice(struct qmgr *q, struct qmsg *m)
{
    if (strcasecmp(m->msg.env.helo ? m->msg.env.helo : "", q->myhostname) != 0 || m->msg.env.protocol == NULL ||
        strcmp(m->msg.env.protocol, "local") != 0)
        return 0;
    const char *rcpt = m->msg.env.rcpts[0].address;
    return strcmp(rcpt, q->postmaster) == 0 || strcmp(rcpt, q->bounce_notice) == 0 ||
           strcmp(rcpt, q->delay_notice) == 0 || strcmp(rcpt, q->error_notice) == 0;
}

void qmgr_finish_message(struct qmsg *m)
{
    struct qmgr *q = m->q;
    size_t n = m->msg.env.rcpt_count;
    const char *sender = m->msg.env.sender;
    double lifetime = *sender ? (double)q->max_lifetime : (double)q->bounce_lifetime;

    size_t deferred = 0;
    for (size_t i = 0; i < n; i++)
        if (m->outcome[i].state == DLV_DEFERRED + 1)
            deferred++;
    /* soft_bounce: nothing is returned, expired mail stays queued (Postfix) */
    if (deferred && qmgr_now() - m->arrival >= lifetime && !q->soft_bounce) {
        /* Returned as Postfix returns expired mail: Action: failed with the
         * recipient's last (temporary) status and reason. */
        for (size_t i = 0; i < n; i++)
            if (m->outcome[i].state == DLV_DEFERRED + 1)
                m->outcome[i].state = DLV_BOUNCED + 1;
        msg_info("%s: from=<%s>, status=expired, returned to sender", m->id, sender);
        deferred = 0;
    }

    int warn_delay = deferred && delay_warning_due(q, m);
    /* A bounce of mail from <> goes to 2bounce_notice_recipient only when
     * notify_classes has 2bounce or bounce (Postfix); otherwise, and for a
     * notice of ours, it is discarded. */
    int double_bounce = *sender == '\0';
    int failure_kind = !double_bounce ? NOTICE_FAILURE
                     : is_failed_postmaster_notice(q, m) ? -1
                     : (q->notify_classes & (MAIL_NOTIFY_2BOUNCE | MAIL_NOTIFY_BOUNCE)) ? NOTICE_POSTMASTER : -2;
    struct notice *failure = NULL, *success = NULL, *delay = NULL;
    size_t discarded = 0;
    for (size_t i = 0; i < n; i++) {
        const struct rcpt_outcome *o = &m->outcome[i];
        unsigned notify = m->msg.env.rcpts[i].notify;
        if (o->state == DLV_SENT + 1) {
            if ((notify & QUEUE_NOTIFY_SUCCESS) && *sender) {
                if (success == NULL)
                    success = notice_new(m, NOTICE_SUCCESS);
                success->rcpt[success->n++] = i;
            } else {
                mark(m, i, QUEUE_RCPT_DELIVERED);
            }
        } else if (o->state == DLV_BOUNCED + 1) {
            if ((notify == 0 || (notify & QUEUE_NOTIFY_FAILURE)) && failure_kind >= 0) {
                if (failure == NULL)
                    failure = notice_new(m, (enum notice_kind)failure_kind);
                failure->rcpt[failure->n++] = i;
            } else {
                if (failure_kind < 0 && (notify == 0 || (notify & QUEUE_NOTIFY_FAILURE)))
                    discarded++;
                mark(m, i, QUEUE_RCPT_BOUNCED);
            }
        } else if (o->state == DLV_DEFERRED + 1) {
            mark(m, i, QUEUE_RCPT_DEFERRED);
            if (warn_delay && (notify == 0 || (notify & QUEUE_NOTIFY_DELAY))) {
                if (delay == NULL)
                    delay = notice_new(m, NOTICE_DELAY);
                delay->rcpt[delay->n++] = i;
            }
        }
    }
    if (discarded && failure_kind == -1)
        msg_warn("%s: undeliverable postmaster notification discarded", m->id);
    else if (discarded)
        msg_info("%s: undeliverable bounce discarded (notify_classes has neither 2bounce nor bounce)", m->id);

    if (q->exiting) {
        /* A delivery that finished while the queue manager stops: its marks
         * are written; the notifications are left to the next start, which
         * takes the message again from active/. */
        message_free(m);
        return;
    }
    /* The postmaster's copies (notify_classes bounce, delay): the same
     * recipients, to bounce_notice_recipient or delay_notice_recipient. */
    if (failure && failure->kind == NOTICE_FAILURE && (q->notify_classes & MAIL_NOTIFY_BOUNCE)) {
        struct notice *copy = notice_new(m, NOTICE_BOUNCE_COPY);
        memcpy(copy->rcpt, failure->rcpt, failure->n * sizeof(size_t));
        copy->n = failure->n;
        notice_start(m, copy, q->bounce_notice);
    }
    if (delay && (q->notify_classes & MAIL_NOTIFY_DELAY)) {
        struct notice *copy = notice_new(m, NOTICE_DELAY_COPY);
        memcpy(copy->rcpt, delay->rcpt, delay->n * sizeof(size_t));
        copy->n = delay->n;
        notice_start(m, copy, q->delay_notice);
    }
    /* The recipients' address of each notification. */
    if (failure)
        notice_start(m, failure, failure->kind == NOTICE_FAILURE ? sender : q->postmaster);
    if (success)
        notice_start(m, success, sender);
    if (delay)
        notice_start(m, delay, sender);
    if (m->notices_left == 0)
        after_notices(m);   /* none needed, or none could even be started */
}
