/*
 * Running a job on its delivery agent and collecting what it says (Postfix's
 * qmgr_deliver.c plus the agents' own logging): SMTP and LMTP on the
 * client's event loop (smtp_tls_policy_maps picks a client per security
 * level), Maildir, mbox and pipe on worker threads, or through the
 * privileged mailbox helper when we started as root; discard, error and
 * retry routes answer at once. Each result is logged in Postfix's shape,
 * shown to the modules' delivery hooks, and recorded per recipient (the
 * worst outcome wins); a message whose last job is done goes to finish.c.
 */
#include "config.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include <event2/event.h>

#include "config/cfg.h"
#include "deliver/deliver.h"
#include "deliver/local.h"
#include "deliver/smtp_client.h"
#include "lib/buf.h"
#include "lib/fsutil.h"
#include "lib/log.h"
#include "lib/workq.h"
#include "qmgr/mailbox_helper.h"
#include "qmgr/qmgr_int.h"
#include "qmgr/route.h"
#include "module/metrics_core.h"
#include "module/module.h"
#include "module/runtime.h"
#include "tables/table.h"

static void fmt_secs(char *out, size_t size, double v)
{
    if (v < 0)
        v = 0;
    if (v < 0.01)
        snprintf(out, size, "%s", v < 0.005 ? "0" : "0.01");
    else if (v < 10)
        snprintf(out, size, "%.2g", v);
    else
        snprintf(out, size, "%.0f", v);
}

static const char *status_word(enum dlv_status s)
{
    return s == DLV_SENT ? "sent" : s == DLV_DEFERRED ? "deferred" : "bounced";
}

/* Postfix's delivery line, as its delivery agent would log it; status
 * overrides the result's word (SOFTBOUNCE). */
/* The delivery hook's modules read the message through the queue's content
 * reader (the content map of an edited file included). */
static ssize_t qmsg_content_read(void *arg, unsigned long long off, void *buf, size_t len)
{
    struct qmsg *m = arg;
    return queue_content_pread(m->fd, &m->msg, off, buf, len);
}

static void log_delivery(struct qjob *j, size_t i, const struct dlv_result *r, const char *status)
{
    struct qmsg *m = j->m;
    double now = qmgr_now();
    double t_start = (double)j->started.tv_sec + j->started.tv_usec / 1e6;
    double t_active = (double)m->t_active.tv_sec + m->t_active.tv_usec / 1e6;
    char total[16], a[16], b[16], c[16], d[16];
    fmt_secs(total, sizeof(total), now - m->arrival);
    fmt_secs(a, sizeof(a), t_active - m->arrival);
    fmt_secs(b, sizeof(b), t_start - t_active);
    fmt_secs(c, sizeof(c), r->conn_secs);
    fmt_secs(d, sizeof(d), r->xfer_secs > 0 ? r->xfer_secs : now - t_start - r->conn_secs);
    const struct queue_rcpt *orig = &m->msg.env.rcpts[j->rcpt_index[i]];
    char orig_to[600] = "";
    if (strcasecmp(orig->address, j->rcpt_addr[i]) != 0)
        snprintf(orig_to, sizeof(orig_to), ", orig_to=<%s>", orig->address);
    log_set_role(j->transport);
    msg_info("%s: to=<%s>%s, relay=%s, delay=%s, delays=%s/%s/%s/%s, dsn=%s, status=%s (%s)", m->id,
             j->rcpt_addr[i], orig_to, r->relay, total, a, b, c, d, r->dsn, status ? status : status_word(r->status),
             r->text);
    log_set_role("qmgr");
    const char *labels[] = { j->transport, status_word(r->status) };
    core_metric_add(m->q->metrics, CM_DELIVERIES, labels, 1);
    core_metric_observe(m->q->metrics, CM_DELIVERY_SECONDS, labels, now - t_start);
    if (r->status == DLV_SENT && (j->kind == ROUTE_MAILDIR || j->kind == ROUTE_MBOX)) {
        const char *mailbox[] = { j->transport, j->kind == ROUTE_MAILDIR ? "maildir" : "mbox" };
        core_metric_observe(m->q->metrics, CM_MAILBOX_FSYNC_SECONDS, mailbox, r->sync_secs);
    }
    if (module_hook_active(MODULE_HOOK_DELIVERY)) {
        petrel_delivery_result pr = {
            .queue_id = m->id, .sender = m->msg.env.sender, .recipient = j->rcpt_addr[i],
            .original_recipient = orig->address,
            .status = r->status == DLV_SENT ? PETREL_DELIVERY_SENT
                    : r->status == DLV_DEFERRED ? PETREL_DELIVERY_DEFERRED : PETREL_DELIVERY_BOUNCED,
            .dsn = r->dsn, .relay = r->relay, .text = r->text, .delay = now - m->arrival,
        };
        module_notify_delivery(&pr, m->fd >= 0 ? qmsg_content_read : NULL, m, m->msg.content_length);
    }
}

/* ------------------------------------------------------------------ */
/* job completion                                                      */

static void record(struct qmsg *m, size_t rcpt, struct dest *d, const struct dlv_result *r)
{
    struct rcpt_outcome *o = &m->outcome[rcpt];
    int rank = (int)r->status + 1;
    /* Worst outcome wins: deferred over bounced over sent, so a recipient
     * that expanded to several destinations is retried when any failed
     * temporarily. */
    int worse = o->state == 0 || (rank == DLV_DEFERRED + 1) ||
                (rank == DLV_BOUNCED + 1 && o->state == DLV_SENT + 1);
    if (!worse)
        return;
    o->state = rank;
    snprintf(o->dsn, sizeof(o->dsn), "%s", r->dsn);
    snprintf(o->text, sizeof(o->text), "%s", r->text);
    snprintf(o->relay, sizeof(o->relay), "%s", r->relay);
    o->dest = d;
}


static void job_done(struct qjob *j, const struct dlv_result *results)
{
    struct qmgr *q = j->m->q;
    struct qmsg *m = j->m;
    for (size_t i = 0; i < j->dj.nrcpt; i++) {
        struct dlv_result r = results[i];
        const char *status = NULL;
        if (q->soft_bounce && r.status == DLV_BOUNCED) {
            /* soft_bounce: Postfix defers what it would bounce, with a 4.x.x
             * code, and logs status=SOFTBOUNCE */
            r.status = DLV_DEFERRED;
            r.dsn[0] = '4';
            status = "SOFTBOUNCE";
        }
        log_delivery(j, i, &r, status);
        record(m, j->rcpt_index[i], j->d, &r);
        qmgr_board_result(j->d, &r);
    }
    struct dest *d = j->d;
    d->active--;
    d->fig.in_delivery -= d->fig.in_delivery >= j->dj.nrcpt ? j->dj.nrcpt : d->fig.in_delivery;
    const char *transport[] = { j->transport };
    core_metric_gauge_add(q->metrics, CM_DELIVERIES_IN_FLIGHT, transport, -1, q->process_index);
    q->deliveries--;
    if (d->rate_delay > 0) {
        d->resting = 1;
        if (d->rate_timer == NULL)
            d->rate_timer = evtimer_new(q->base, qmgr_rate_rested, d);
        struct timeval tv = { (time_t)d->rate_delay, 0 };
        evtimer_add(d->rate_timer, &tv);
    }
    qmgr_make_ready(q, d);
    if (--m->jobs_left == 0)
        qmgr_finish_message(m);
    qmgr_dispatch(q);
    qmgr_stop_if_idle(q);
}

static void smtp_job_done(void *arg, const struct dlv_result *results)
{
    job_done(arg, results);
}

static void local_job_work(void *arg)
{
    struct qjob *j = arg;
    for (size_t i = 0; i < j->dj.nrcpt; i++) {
        struct dlv_result *r = &j->results[i];
        switch (j->kind) {
        case ROUTE_MAILDIR:
            /* virtual(8) creates the mailbox's parent directories (the
             * domain directory under virtual_mailbox_base). */
            if (fs_make_parents(j->path, 0700) != 0)
                local_result_dsn(r, "4.3.0", "local", "maildir delivery failed: fsync a new parent directory",
                                 errno);
            else
                maildir_deliver(j->path, &j->dj, i, r);
            break;
        case ROUTE_MBOX:
            mbox_deliver(j->path, &j->dj, i, r);
            break;
        case ROUTE_PIPE: {
            struct pipe_options opt;
            memset(&opt, 0, sizeof(opt));
            /* A master.cf pipe transport runs its argv= without a shell; an
             * alias's |command runs through /bin/sh, as local(8) does, with
             * nothing from the message pasted into it. */
            opt.argv = j->pipe_argv;
            opt.shell_command = j->pipe_argv ? NULL : j->path;
            opt.expansion_filter = j->m->q->command_expansion_filter;
            opt.service = j->pipe_argv ? j->transport : NULL;
            for (const char *f = j->pipe_flags; f && *f; f++) {
                opt.flags |= *f == 'F' ? PIPE_FLAG_FROM : *f == 'R' ? PIPE_FLAG_RETURN_PATH
                           : *f == 'D' ? PIPE_FLAG_DELIVERED_TO : *f == 'O' ? PIPE_FLAG_ORIG_TO
                           : *f == '>' ? PIPE_FLAG_QUOTE_FROM : 0u;
            }
            opt.recipient_delimiter = j->m->q->recipient_delimiter;
            opt.timeout = 1000;
            if (opt.argv == NULL && opt.shell_command == NULL) {
                dlv_result_set(r, DLV_DEFERRED, "4.3.5", j->transport, "pipe transport without a command");
                break;
            }
            pipe_deliver(&opt, &j->dj, i, r);
            break;
        }
        default:
            dlv_result_set(r, DLV_DEFERRED, "4.3.5", "none", "unsupported local route");
            break;
        }
        if (j->kind != ROUTE_PIPE)
            snprintf(r->relay, sizeof(r->relay), "%s", j->transport);
    }
}

static void local_job_done(void *arg, int cancelled)
{
    job_done(arg, ((struct qjob *)arg)->results);
}

static void immediate_done(evutil_socket_t fd, short what, void *arg)
{
    job_done(arg, ((struct qjob *)arg)->results);
}

/* ------------------------------------------------------------------ */
/* the privileged mailbox helper                                       */

void qmgr_on_helper(evutil_socket_t fd, short what, void *arg)
{
    struct qmgr *q = arg;
    for (;;) {
        char id[64];
        struct dlv_result r;
        int rc = mailbox_helper_read(fd, id, sizeof(id), &r);
        if (rc == -2) {
            msg_warn("the mailbox helper exited: mailbox deliveries are deferred until the queue manager restarts");
            event_del(q->helper_ev);
            close(q->helper_fd);
            q->helper_fd = -1;
            return;
        }
        if (rc != 0)
            return;
        /* id = "JOBSEQ.RECIPIENT" */
        unsigned long long seq = strtoull(id, NULL, 10);
        const char *dot = strchr(id, '.');
        size_t i = dot ? (size_t)strtoul(dot + 1, NULL, 10) : 0;
        struct qjob **pp = &q->helper_waiting;
        for (; *pp; pp = &(*pp)->next_helper) {
            struct qjob *j = *pp;
            if (j->helper_id != seq)
                continue;
            if (i < j->dj.nrcpt)
                j->results[i] = r;
            if (--j->helper_left == 0) {
                *pp = j->next_helper;
                job_done(j, j->results);
            }
            break;
        }
    }
}

static int start_helper_job(struct qmgr *q, struct qjob *j)
{
    if (q->helper_fd < 0 || j->uid < 0)
        return 0;
    if (j->uid == 0) {
        /* Postfix never writes a mailbox as root: mail for root goes through an alias. */
        for (size_t i = 0; i < j->dj.nrcpt; i++)
            dlv_result_set(&j->results[i], DLV_BOUNCED, "5.7.1", "local",
                           "mail for root needs an alias (no delivery as root)");
        event_base_once(q->base, -1, EV_TIMEOUT, immediate_done, j, &(struct timeval){ 0, 0 });
        return 1;
    }
    j->helper_id = ++q->helper_seq;
    j->helper_left = j->dj.nrcpt;
    j->next_helper = q->helper_waiting;
    q->helper_waiting = j;
    /* "pipe" and "file": an alias's |command or /file (run as default_privs);
     * "argv": a master.cf pipe transport; "maildir"/"mbox": a mailbox. */
    const char *kind = j->from_alias ? (j->kind == ROUTE_PIPE ? "pipe" : "file")
                     : j->kind == ROUTE_MAILDIR ? "maildir" : j->kind == ROUTE_MBOX ? "mbox"
                     : j->pipe_argv ? "argv" : "pipe";
    /* argv= words travel NUL-separated in the path field */
    struct buf words = BUF_INIT;
    for (const char *const *w = j->pipe_argv; w && *w; w++)
        buf_append(&words, *w, strlen(*w) + 1);
    const char *path = j->pipe_argv ? words.data : j->path;
    size_t path_len = j->pipe_argv ? words.len : j->path ? strlen(j->path) : 0;
    for (size_t i = 0; i < j->dj.nrcpt; i++) {
        char id[64];
        snprintf(id, sizeof(id), "%llu.%zu", j->helper_id, i);
        if (mailbox_helper_request(q->helper_fd, id, kind, path, path_len, j->uid, j->gid,
                                   j->m->id, j->dj.sender, j->rcpt_addr[i], j->rcpt_index[i],
                                   j->pipe_argv ? j->transport : j->dj.nexthop,
                                   q->recipient_delimiter, j->pipe_flags, j->dj.file_size_limit) != 0) {
            dlv_result_set(&j->results[i], DLV_DEFERRED, "4.3.0", "local", "mailbox helper unavailable: %s",
                           strerror(errno));
            if (--j->helper_left == 0) {
                struct qjob **pp = &q->helper_waiting;
                while (*pp && *pp != j)
                    pp = &(*pp)->next_helper;
                if (*pp)
                    *pp = j->next_helper;
                event_base_once(q->base, -1, EV_TIMEOUT, immediate_done, j, &(struct timeval){ 0, 0 });
            }
        }
    }
    buf_free(&words);
    return 1;
}

/* The job's client is known (qmgr_smtp_client_find): deliver, or defer as
 * Postfix defers a next hop whose TLS policy it cannot apply or look up. */
static void smtp_client_found(void *arg, struct smtp_client *c, const char *dsn, const char *why)
{
    struct qjob *j = arg;
    if (c == NULL) {
        for (size_t i = 0; i < j->dj.nrcpt; i++)
            dlv_result_set(&j->results[i], DLV_DEFERRED, dsn, "none", "%s", why);
        event_base_once(j->m->q->base, -1, EV_TIMEOUT, immediate_done, j, &(struct timeval){ 0, 0 });
        return;
    }
    smtp_client_deliver(c, &j->dj, smtp_job_done, j);
}

void qmgr_start_job(struct qmgr *q, struct qjob *j)
{
    gettimeofday(&j->started, NULL);
    j->dj.rcpt_index = j->rcpt_index;
    j->dj.rcpt_addr = j->rcpt_addr;
    j->results = petrel_pool_zalloc(j->m->pool, j->dj.nrcpt * sizeof(*j->results));
    if (j->kind == ROUTE_SMTP || j->kind == ROUTE_LMTP) {
        int failed = 0;
        j->dj.checks = qmgr_transport_checks(q, j->transport, j->kind == ROUTE_LMTP, &j->dj.mime_limits, &failed);
        if (failed) {
            /* Its smtp_header_checks cannot be applied: nothing goes out without them. */
            for (size_t i = 0; i < j->dj.nrcpt; i++)
                dlv_result_set(&j->results[i], DLV_DEFERRED, "4.3.5", "none",
                               "mail system configuration error: header/body checks of transport %s",
                               j->transport);
            event_base_once(q->base, -1, EV_TIMEOUT, immediate_done, j, &(struct timeval){ 0, 0 });
            return;
        }
    }
    switch (j->kind) {
    case ROUTE_SMTP:
    case ROUTE_LMTP:
        /* the next hop's TLS policy first (it may wait for a remote table) */
        qmgr_smtp_client_find(q, j->transport, j->kind == ROUTE_LMTP, j->dj.nexthop, j->m->id, smtp_client_found, j);
        return;
    case ROUTE_MAILDIR:
    case ROUTE_MBOX:
    case ROUTE_PIPE:
        /* Started as root: owned mailboxes are written by the helper as their owner. */
        if (start_helper_job(q, j))
            return;
        workq_submit(q->workq, local_job_work, local_job_done, j);
        return;
    case ROUTE_DISCARD:
    case ROUTE_ERROR:
    case ROUTE_RETRY:
        for (size_t i = 0; i < j->dj.nrcpt; i++) {
            if (j->kind == ROUTE_DISCARD)
                dlv_result_set(&j->results[i], DLV_SENT, "2.0.0", "none", "discarded");
            else
                dlv_result_set(&j->results[i], j->kind == ROUTE_ERROR ? DLV_BOUNCED : DLV_DEFERRED, j->path,
                               "none", "%s", j->dj.nexthop ? j->dj.nexthop : "mail transport unavailable");
        }
        /* Answer on the next loop turn: results never arrive before the call returns. */
        event_base_once(q->base, -1, EV_TIMEOUT, immediate_done, j, &(struct timeval){ 0, 0 });
        return;
    }
}
