/*
 * The queue manager role: from safe on disk to delivered, deferred or
 * bounced.
 *
 * Intake. A message becomes the queue manager's when its file in incoming/
 * is complete and durable: smtpd closes it only after the commit, and
 * inotify reports that close (IN_CLOSE_WRITE; IN_MOVED_TO for requeued
 * files). A periodic scan picks up what inotify missed, but only files
 * that have not been written for a while, so a file still being written or
 * committed is never taken. A file in incoming/ is never taken while its
 * writer holds the writer lock (queue_file_writer_active), however old it
 * looks; an incomplete file whose writer is gone (a crashed smtpd worker)
 * is removed, as the recovery scan removes it at start. Files there are
 * opened read-only: closing a writable descriptor would raise the very
 * IN_CLOSE_WRITE event we listen for, and a file left alone would then come
 * back forever. The message is renamed into active/ and parsed
 * once; at most qmgr_message_active_limit messages are in memory, the rest
 * waits on disk (bounded memory whatever the queue size).
 *
 * Routing (route.c) turns each pending recipient into one or more routes.
 * SMTP/LMTP recipients of one message with the same next hop form one job
 * (up to default_destination_recipient_limit); mailbox and pipe deliveries
 * are one job each and run on worker threads (they block on the disk).
 * Every destination (transport + next hop) has its own job queue and
 * concurrency limit (default_destination_concurrency_limit), so one slow
 * destination occupies only its own slots: the others keep flowing.
 *
 * Results are collected per recipient in memory. When a message has no
 * job left, finish.c marks them in the queue file in place, queues the
 * notifications it owes (bounce, never to <>; postmaster notification;
 * success report; delay warning) durably before the original may go,
 * then defers the message (next attempt time as the file's mtime, reasons
 * in defer/ID) or removes it; expired messages are returned there too.
 *
 * Stop (SIGTERM): no new delivery starts; the loop ends when the last
 * delivery and notification commit in flight is done, or after 5 s.
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/inotify.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include <event2/event.h>

#include "config/config.h"
#include "deliver/deliver.h"
#include "deliver/local.h"
#include "deliver/smtp_client.h"
#include "lib/buf.h"
#include "lib/dns.h"
#include "lib/fsutil.h"
#include "lib/hash.h"
#include "lib/log.h"
#include "lib/workq.h"
#include "lib/xalloc.h"
#include "qmgr/bounce.h"
#include "qmgr/qmgr.h"
#include "qmgr/qmgr_int.h"
#include "qmgr/route.h"
#include "qmgr/mailbox_helper.h"
#include "module/module.h"
#include "queue/queue.h"
#include "tables/table.h"

#define STALE_INCOMING_SECONDS 10
#define GLOBAL_DELIVERY_LIMIT 100

static void dispatch(struct qmgr *q);
static void take_message(struct qmgr *q, const char *id, enum queue_dir from);

/* ------------------------------------------------------------------ */
/* logging                                                             */

unsigned qmgr_id_bucket(const char *id)
{
    return hash_string(id) % MSG_BUCKETS;
}

double qmgr_now(void)
{
    struct timeval tv;
    gettimeofday(&tv, NULL);
    return (double)tv.tv_sec + tv.tv_usec / 1e6;
}

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

/* Postfix's delivery line, as its delivery agent would log it. */
static void log_delivery(struct qjob *j, size_t i, const struct dlv_result *r)
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
             j->rcpt_addr[i], orig_to, r->relay, total, a, b, c, d, r->dsn, status_word(r->status), r->text);
    log_set_role("qmgr");
    struct module_set *set = m->q->modules;
    for (int k = 0; set && k < set->n; k++) {
        struct petrel_module *mod = set->mods[k];
        if (mod->desc->hooks.delivery == NULL || !module_circuit_allows(mod, time(NULL)))
            continue;
        petrel_delivery_result pr = {
            .queue_id = m->id, .sender = m->msg.env.sender, .recipient = j->rcpt_addr[i],
            .original_recipient = orig->address,
            .status = r->status == DLV_SENT ? PETREL_DELIVERY_SENT
                    : r->status == DLV_DEFERRED ? PETREL_DELIVERY_DEFERRED : PETREL_DELIVERY_BOUNCED,
            .dsn = r->dsn, .relay = r->relay, .text = r->text, .delay = now - m->arrival,
        };
        mod->desc->hooks.delivery(mod, &pr);
    }
}

/* ------------------------------------------------------------------ */
/* destinations                                                        */

static struct dest *dest_get(struct qmgr *q, const char *transport, const char *nexthop)
{
    char *key = xmalloc(strlen(transport) + strlen(nexthop ? nexthop : "") + 2);
    snprintf(key, strlen(transport) + strlen(nexthop ? nexthop : "") + 2, "%s\n%s", transport, nexthop ? nexthop : "");
    unsigned b = hash_string(key) % DEST_BUCKETS;
    for (struct dest *d = q->buckets[b]; d; d = d->next_bucket) {
        if (strcmp(d->key, key) == 0) {
            free(key);
            return d;
        }
    }
    struct dest *d = xcalloc(1, sizeof(*d));
    d->key = key;
    d->q = q;
    d->limit = q->dest_limit;
    /* Postfix's per-transport overrides: TRANSPORT_destination_concurrency_limit
     * and TRANSPORT_destination_rate_delay (declared for the usual transports). */
    char name[160];
    snprintf(name, sizeof(name), "%s_destination_concurrency_limit", transport);
    if (cfg_get(q->cfg, name))
        d->limit = (unsigned)cfg_int(q->cfg, name);
    snprintf(name, sizeof(name), "%s_destination_rate_delay", transport);
    d->rate_delay = cfg_get(q->cfg, name) ? cfg_int(q->cfg, name) : cfg_int(q->cfg, "default_destination_rate_delay");
    if (d->rate_delay > 0)
        d->limit = 1;
    if (d->limit == 0)
        d->limit = 1;
    d->next_bucket = q->buckets[b];
    q->buckets[b] = d;
    return d;
}

static void make_ready(struct qmgr *q, struct dest *d)
{
    if (d->in_ready || d->resting || d->head == NULL || d->active >= d->limit)
        return;
    d->in_ready = 1;
    d->next_ready = NULL;
    if (q->ready_tail)
        q->ready_tail->next_ready = d;
    else
        q->ready_head = d;
    q->ready_tail = d;
}

static void enqueue_job(struct qmgr *q, struct qjob *j)
{
    struct dest *d = j->d;
    j->next = NULL;
    if (d->tail)
        d->tail->next = j;
    else
        d->head = j;
    d->tail = j;
    make_ready(q, d);
}

/* ------------------------------------------------------------------ */
/* job completion                                                      */

static void record(struct qmsg *m, size_t rcpt, const struct dlv_result *r)
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
}

static void rate_rested(evutil_socket_t fd, short what, void *arg)
{
    struct dest *d = arg;
    d->resting = 0;
    make_ready(d->q, d);
    dispatch(d->q);
}

/* smtp_tls_policy_maps: the next hop as written, then without brackets and
 * port, then its parent domains (".example.com"). */
static struct smtp_client *smtp_client_for(struct qmgr *q, const char *nexthop)
{
    if (q->ntls_policy == 0 || nexthop == NULL)
        return q->smtp;
    char host[300];
    const char *h = nexthop;
    if (*h == '[') {
        size_t n = strcspn(h + 1, "]");
        snprintf(host, sizeof(host), "%.*s", (int)n, h + 1);
    } else {
        snprintf(host, sizeof(host), "%.*s", (int)strcspn(h, ":"), h);
    }
    const char *keys[64];
    size_t nk = 0;
    keys[nk++] = nexthop;
    keys[nk++] = host;
    for (const char *dot = strchr(host, '.'); dot && nk < 64; dot = strchr(dot + 1, '.'))
        keys[nk++] = dot;
    for (size_t k = 0; k < nk; k++) {
        for (size_t i = 0; i < q->ntls_policy; i++) {
            const char *v;
            if (tbl_lookup(q->tls_policy[i], keys[k], &v) != TBL_FOUND)
                continue;
            char word[32];
            snprintf(word, sizeof(word), "%.*s", (int)strcspn(v, " \t"), v);
            enum smtp_tls_level level;
            if (smtp_tls_level_parse(word, &level) != 0) {
                msg_warn("smtp_tls_policy_maps: %s: unknown security level \"%s\"; using the default", keys[k], word);
                return q->smtp;
            }
            if (q->smtp_by_level[level] == NULL) {
                struct smtp_client_settings set = q->smtp_set;
                set.tls_level = level;
                char *error = NULL;
                q->smtp_by_level[level] = smtp_client_create(q->base, &set, &error);
                if (q->smtp_by_level[level] == NULL) {
                    msg_warn("smtp_tls_policy_maps: %s: %s", keys[k], error);
                    free(error);
                    return q->smtp;
                }
            }
            return q->smtp_by_level[level];
        }
    }
    return q->smtp;
}

static void job_done(struct qjob *j, const struct dlv_result *results)
{
    struct qmgr *q = j->m->q;
    struct qmsg *m = j->m;
    for (size_t i = 0; i < j->dj.nrcpt; i++) {
        log_delivery(j, i, &results[i]);
        record(m, j->rcpt_index[i], &results[i]);
    }
    struct dest *d = j->d;
    d->active--;
    q->deliveries--;
    if (d->rate_delay > 0) {
        d->resting = 1;
        if (d->rate_timer == NULL)
            d->rate_timer = evtimer_new(q->base, rate_rested, d);
        struct timeval tv = { (time_t)d->rate_delay, 0 };
        evtimer_add(d->rate_timer, &tv);
    }
    make_ready(q, d);
    if (--m->jobs_left == 0)
        qmgr_finish_message(m);
    dispatch(q);
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
            opt.expansion_filter = cfg_get(j->m->q->cfg, "command_expansion_filter");
            opt.service = j->pipe_argv ? j->transport : NULL;
            for (const char *f = j->pipe_flags; f && *f; f++) {
                opt.flags |= *f == 'F' ? PIPE_FLAG_FROM : *f == 'R' ? PIPE_FLAG_RETURN_PATH
                           : *f == 'D' ? PIPE_FLAG_DELIVERED_TO : *f == 'O' ? PIPE_FLAG_ORIG_TO
                           : *f == '>' ? PIPE_FLAG_QUOTE_FROM : 0u;
            }
            opt.recipient_delimiter = cfg_get(j->m->q->cfg, "recipient_delimiter");
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

static void on_helper(evutil_socket_t fd, short what, void *arg)
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
                                   cfg_get(q->cfg, "recipient_delimiter"), j->pipe_flags) != 0) {
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

static void start_job(struct qmgr *q, struct qjob *j)
{
    gettimeofday(&j->started, NULL);
    j->dj.rcpt_index = j->rcpt_index;
    j->dj.rcpt_addr = j->rcpt_addr;
    j->results = petrel_pool_zalloc(j->m->pool, j->dj.nrcpt * sizeof(*j->results));
    switch (j->kind) {
    case ROUTE_SMTP:
        smtp_client_deliver(smtp_client_for(q, j->dj.nexthop), &j->dj, smtp_job_done, j);
        return;
    case ROUTE_LMTP:
        smtp_client_deliver(q->lmtp, &j->dj, smtp_job_done, j);
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

static void dispatch(struct qmgr *q)
{
    if (q->stopping)
        return;   /* stopping: no new deliveries; what waits stays queued */
    while (q->ready_head && q->deliveries < q->delivery_limit) {
        struct dest *d = q->ready_head;
        q->ready_head = d->next_ready;
        if (q->ready_head == NULL)
            q->ready_tail = NULL;
        d->in_ready = 0;
        if (d->head == NULL || d->active >= d->limit)
            continue;
        struct qjob *j = d->head;
        d->head = j->next;
        if (d->head == NULL)
            d->tail = NULL;
        d->active++;
        q->deliveries++;
        /* Round robin: a destination with more work goes to the back. */
        make_ready(q, d);
        start_job(q, j);
    }
}

/* ------------------------------------------------------------------ */
/* taking a message                                                    */

static struct qjob *new_job(struct qmsg *m, const struct route *rt, size_t cap)
{
    struct qjob *j = petrel_pool_zalloc(m->pool, sizeof(*j));
    j->m = m;
    j->kind = rt->kind;
    j->transport = rt->transport;
    j->path = rt->kind == ROUTE_ERROR || rt->kind == ROUTE_RETRY ? rt->dsn : rt->path;
    j->uid = rt->uid;
    j->gid = rt->gid;
    j->from_alias = rt->from_alias;
    j->pipe_argv = rt->pipe_argv;
    j->pipe_flags = rt->pipe_flags;
    j->cap = cap;
    j->rcpt_index = petrel_pool_alloc(m->pool, cap * sizeof(size_t));
    j->rcpt_addr = petrel_pool_alloc(m->pool, cap * sizeof(char *));
    j->dj.queue_id = m->id;
    j->dj.fd = m->fd;
    j->dj.msg = &m->msg;
    j->dj.sender = m->sender;
    j->dj.nexthop = rt->nexthop;
    m->jobs_left++;
    return j;
}

static int groupable(enum route_kind k)
{
    return k == ROUTE_SMTP || k == ROUTE_LMTP || k == ROUTE_ERROR || k == ROUTE_RETRY || k == ROUTE_DISCARD;
}

/* TRANSPORT_destination_recipient_limit, else the default. */
static size_t rcpt_limit_for(struct qmgr *q, const char *transport)
{
    char name[160];
    snprintf(name, sizeof(name), "%s_destination_recipient_limit", transport);
    long long n = cfg_get(q->cfg, name) ? cfg_int(q->cfg, name) : (long long)q->dest_rcpt_limit;
    return n > 0 ? (size_t)n : 1;
}

static void schedule_message(struct qmgr *q, struct qmsg *m)
{
    m->sender = router_sender(q->router, m->msg.env.sender, m->pool);
    size_t n = m->msg.env.rcpt_count;
    struct qjob **open_jobs = petrel_pool_zalloc(m->pool, (n * 4 + 4) * sizeof(*open_jobs));
    size_t nopen = 0;
    size_t nrcpt_pending = 0;
    for (size_t i = 0; i < n; i++) {
        int status = m->msg.rcpt_state[i].status;
        if (status == QUEUE_RCPT_DELIVERED || status == QUEUE_RCPT_BOUNCED)
            continue;
        nrcpt_pending++;
        struct route_list routes;
        router_route(q->router, m->msg.env.sender, m->msg.env.rcpts[i].address, m->pool, &routes);
        for (size_t k = 0; k < routes.count; k++) {
            struct route *rt = &routes.items[k];
            struct qjob *j = NULL;
            if (groupable(rt->kind)) {
                for (size_t o = 0; o < nopen; o++) {
                    struct qjob *c = open_jobs[o];
                    if (c->kind == rt->kind && strcmp(c->transport, rt->transport) == 0 &&
                        strcmp(c->dj.nexthop ? c->dj.nexthop : "", rt->nexthop ? rt->nexthop : "") == 0 &&
                        (c->kind != ROUTE_ERROR || strcmp(c->path, rt->dsn) == 0) && c->dj.nrcpt < c->cap) {
                        j = c;
                        break;
                    }
                }
            }
            if (j == NULL) {
                j = new_job(m, rt, groupable(rt->kind) ? rcpt_limit_for(q, rt->transport) : 1);
                if (groupable(rt->kind) && nopen < n * 4 + 4)
                    open_jobs[nopen++] = j;
                j->d = dest_get(q, rt->transport, rt->kind == ROUTE_SMTP || rt->kind == ROUTE_LMTP ? rt->nexthop
                                                                                                   : rt->path);
                enqueue_job(q, j);
            }
            j->rcpt_index[j->dj.nrcpt] = i;
            j->rcpt_addr[j->dj.nrcpt] = rt->address;
            j->dj.nrcpt++;
        }
    }
    msg_info("%s: from=<%s>, size=%llu, nrcpt=%zu (queue active)", m->id, m->msg.env.sender,
             m->msg.content_length, nrcpt_pending);
    if (m->jobs_left == 0)
        qmgr_finish_message(m);
    else
        dispatch(q);
}

static void take_message(struct qmgr *q, const char *id, enum queue_dir from)
{
    if (q->stopping)
        return;
    if (q->nactive >= q->active_limit) {
        q->intake_blocked = 1;
        return;
    }
    unsigned bucket = qmgr_id_bucket(id);
    for (struct qmsg *x = q->by_id[bucket]; x; x = x->next_hash)
        if (strcmp(x->id, id) == 0)
            return;   /* already ours (an event and a scan both saw it) */
    /* In incoming/ the file is opened read-only: closing a descriptor
     * opened for writing there raises the very IN_CLOSE_WRITE event this
     * is called for, and a file we leave alone would come back forever. */
    int incoming = from == QDIR_INCOMING;
    int fd = openat(queue_dir_fd(q->queue, from), id, (incoming ? O_RDONLY : O_RDWR) | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0) {
        if (errno == EMFILE || errno == ENFILE) {
            /* Out of descriptors: stop taking messages until some finish. */
            msg_warn("%s: cannot open: %s; taking more messages when some are done", id, strerror(errno));
            q->intake_blocked = 1;
        }
        return;   /* ENOENT: deleted meanwhile (petrelctl, an abort): nothing to do */
    }
    int writer = 0;
    if (incoming) {
        /* A file whose writer is still at work is not committed yet, even
         * if it looks complete: its writer's close reports it again. */
        writer = queue_file_writer_active(fd);
        if (writer == 1) {
            close(fd);
            return;
        }
    }
    struct qmsg *m = xcalloc(1, sizeof(*m));
    m->q = q;
    m->fd = fd;
    m->pool = petrel_pool_create(4096);
    snprintf(m->id, sizeof(m->id), "%s", id);
    char *error = NULL;
    if (queue_message_read_fd(fd, m->id, m->pool, &m->msg, &error) != 0) {
        int err = errno;
        if (err == ENODATA && incoming) {
            /* Never finished. With its writer gone (a crashed smtpd worker,
             * say) it was never acknowledged either: remove it, as the
             * recovery scan does at start. If we cannot tell, leave it. */
            if (writer == 0) {
                if (unlinkat(queue_dir_fd(q->queue, QDIR_INCOMING), id, 0) == 0)
                    msg_info("%s: removed incomplete queue file (its writer is gone)", id);
                else if (errno != ENOENT)
                    msg_warn("%s: cannot remove incomplete queue file: %s", id, strerror(errno));
            }
        } else {
            msg_warn("%s: moving damaged queue file to corrupt: %s", id, error ? error : strerror(err));
            queue_move(q->queue, id, from, QDIR_CORRUPT);
        }
        close(fd);
        petrel_pool_destroy(m->pool);
        free(m);
        return;
    }
    if (from != QDIR_ACTIVE && queue_move(q->queue, id, from, QDIR_ACTIVE) != 0) {
        msg_warn("%s: cannot move to the active queue: %s", id, strerror(errno));
        close(fd);
        petrel_pool_destroy(m->pool);
        free(m);
        return;
    }
    if (incoming) {
        /* Out of incoming/ now: reopen for writing (recipient marks). */
        int rw = openat(queue_dir_fd(q->queue, QDIR_ACTIVE), id, O_RDWR | O_CLOEXEC | O_NOFOLLOW);
        if (rw < 0) {
            msg_warn("%s: cannot open in the active queue: %s; retrying later", id, strerror(errno));
            queue_move(q->queue, id, QDIR_ACTIVE, QDIR_DEFERRED);
            close(fd);
            petrel_pool_destroy(m->pool);
            free(m);
            return;
        }
        close(fd);
        m->fd = rw;
    }
    m->arrival = (double)m->msg.env.arrival_sec + m->msg.env.arrival_usec / 1e6;
    gettimeofday(&m->t_active, NULL);
    m->outcome = petrel_pool_zalloc(m->pool, (m->msg.env.rcpt_count ? m->msg.env.rcpt_count : 1) *
                                                 sizeof(*m->outcome));
    m->next = q->messages;
    if (q->messages)
        q->messages->prev = m;
    q->messages = m;
    m->next_hash = q->by_id[bucket];
    q->by_id[bucket] = m;
    q->nactive++;
    schedule_message(q, m);
}

/* ------------------------------------------------------------------ */
/* intake: inotify, scans, signals                                     */

static void on_inotify(evutil_socket_t fd, short what, void *arg)
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
                take_message(q, ev->name, QDIR_INCOMING);
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
    take_message(c->q, id, c->dir);
}

static void scan_dir(struct qmgr *q, enum queue_dir dir)
{
    struct scan_ctx c = { q, dir, time(NULL) };
    queue_scan(q->queue, dir, scan_one, &c);
}

static void on_scan(evutil_socket_t fd, short what, void *arg)
{
    struct qmgr *q = arg;
    scan_dir(q, QDIR_INCOMING);
    /* A scan of a big queue takes a while: re-arm from the real time, not
     * from the loop's cached clock (that would fire again at once). */
    event_base_update_cache_time(q->base);
    struct timeval again = { STALE_INCOMING_SECONDS, 0 };
    evtimer_add(q->scan_timer, &again);
}

static void on_deferred_scan(evutil_socket_t fd, short what, void *arg)
{
    struct qmgr *q = arg;
    scan_dir(q, QDIR_DEFERRED);
    event_base_update_cache_time(q->base);
    struct timeval again = { (time_t)q->run_delay, 0 };
    evtimer_add(q->deferred_timer, &again);
}

static void on_refill(evutil_socket_t fd, short what, void *arg)
{
    struct qmgr *q = arg;
    q->intake_blocked = 0;
    scan_dir(q, QDIR_INCOMING);
    scan_dir(q, QDIR_DEFERRED);
    event_base_update_cache_time(q->base);
}

static void on_flush(evutil_socket_t sig, short what, void *arg)
{
    struct qmgr *q = arg;
    msg_info("flush requested: scanning the deferred queue");
    scan_dir(q, QDIR_INCOMING);
    scan_dir(q, QDIR_DEFERRED);
}

static void stop_now(evutil_socket_t fd, short what, void *arg)
{
    struct qmgr *q = arg;
    event_base_loopbreak(q->base);
}

static void on_sigterm(evutil_socket_t sig, short what, void *arg)
{
    struct qmgr *q = arg;
    if (q->stopping)
        return;
    q->stopping = 1;
    if (q->deliveries == 0 && q->notices_in_flight == 0) {
        event_base_loopexit(q->base, NULL);
        return;
    }
    /* Deliveries and notification commits in flight get a moment to
     * finish (the loop ends as soon as the last one does); messages left
     * in active/ are taken again at the next start (at worst delivered
     * twice). */
    struct timeval grace = { 5, 0 };
    q->stop_timer = evtimer_new(q->base, stop_now, q);
    evtimer_add(q->stop_timer, &grace);
}

static void on_sighup(evutil_socket_t sig, short what, void *arg)
{
    /* The master replaces the queue manager on reload. */
}

static enum smtp_tls_level tls_level(const char *s)
{
    if (s == NULL || *s == '\0' || strcasecmp(s, "none") == 0)
        return SMTP_TLS_NONE;
    if (strcasecmp(s, "may") == 0)
        return SMTP_TLS_MAY;
    if (strcasecmp(s, "encrypt") == 0)
        return SMTP_TLS_ENCRYPT;
    if (strcasecmp(s, "verify") == 0)
        return SMTP_TLS_VERIFY;
    return SMTP_TLS_SECURE;
}

int qmgr_main(const struct qmgr_args *args)
{
    struct qmgr q;
    memset(&q, 0, sizeof(q));
    log_set_role("qmgr");
    signal(SIGPIPE, SIG_IGN);
    const struct cfg *cfg = args->cfg;
    q.cfg = cfg;
    q.queue = args->queue;
    q.base = event_base_new();
    q.workq = workq_create(q.base, 4);
    q.modules = args->modules;
    q.helper_fd = args->mailbox_helper_fd;
    if (q.helper_fd >= 0) {
        q.helper_ev = event_new(q.base, q.helper_fd, EV_READ | EV_PERSIST, on_helper, &q);
        event_add(q.helper_ev, NULL);
    }
    queue_id_gen_init(&q.idgen, (unsigned)getpid());
    q.tables = tbl_registry_new();
    q.myhostname = cfg_get(cfg, "myhostname");
    q.postmaster = cfg_get(cfg, "2bounce_notice_recipient");
    if (q.postmaster == NULL || *q.postmaster == '\0')
        q.postmaster = "postmaster";
    q.postmaster = strchr(q.postmaster, '@') ? xstrdup(q.postmaster)
                                             : (char *)petrel_pool_printf(petrel_pool_create(256), "%s@%s",
                                                                          q.postmaster, cfg_get(cfg, "myorigin"));
    q.active_limit = (unsigned)cfg_int(cfg, "qmgr_message_active_limit");
    if (q.active_limit == 0)
        q.active_limit = 20000;
    /* Every message in memory holds its queue file open: raise the soft
     * descriptor limit to the hard one, and keep the active limit below it. */
    struct rlimit nofile;
    if (getrlimit(RLIMIT_NOFILE, &nofile) == 0) {
        if (nofile.rlim_cur < nofile.rlim_max) {
            nofile.rlim_cur = nofile.rlim_max;
            setrlimit(RLIMIT_NOFILE, &nofile);
        }
        if (nofile.rlim_cur != RLIM_INFINITY && nofile.rlim_cur < (rlim_t)q.active_limit + 512) {
            unsigned room = nofile.rlim_cur > 1024 ? (unsigned)(nofile.rlim_cur - 512) : (unsigned)(nofile.rlim_cur / 2);
            msg_warn("open file limit %lu: keeping at most %u messages in memory (qmgr_message_active_limit %u)",
                     (unsigned long)nofile.rlim_cur, room, q.active_limit);
            q.active_limit = room;
        }
    }
    q.delivery_limit = GLOBAL_DELIVERY_LIMIT;
    q.dest_limit = (unsigned)cfg_int(cfg, "default_destination_concurrency_limit");
    q.dest_rcpt_limit = (unsigned)cfg_int(cfg, "default_destination_recipient_limit");
    if (q.dest_rcpt_limit == 0)
        q.dest_rcpt_limit = 50;
    q.min_backoff = cfg_int(cfg, "minimal_backoff_time");
    q.max_backoff = cfg_int(cfg, "maximal_backoff_time");
    q.run_delay = cfg_int(cfg, "queue_run_delay");
    if (q.run_delay <= 0)
        q.run_delay = 300;
    q.max_lifetime = cfg_int(cfg, "maximal_queue_lifetime");
    q.bounce_lifetime = cfg_int(cfg, "bounce_queue_lifetime");
    q.delay_warning = cfg_int(cfg, "delay_warning_time");
    snprintf(q.defer_dir, sizeof(q.defer_dir), "%s/defer", cfg_get(cfg, "queue_directory"));
    mkdir(q.defer_dir, 0700);

    char *error = NULL;
    q.router = router_create(cfg, q.tables, 0, &error);
    if (q.router == NULL)
        msg_fatal("%s", error);
    q.dns = dns_resolver_create(q.base, cfg_get(cfg, "dns_resolver"), &error);
    if (q.dns == NULL)
        msg_fatal("dns_resolver: %s", error);
    /* Modules with a delivery hook are initialised here too: init runs in
     * every role process that uses the module. */
    int wants_delivery = 0;
    for (int k = 0; q.modules && k < q.modules->n; k++)
        if (q.modules->mods[k]->desc->hooks.delivery)
            wants_delivery = 1;
    if (wants_delivery) {
        q.modules->dns = q.dns;
        if (module_set_init(q.modules, q.base, q.workq) != 0)
            msg_fatal("cannot start: a module failed to initialise");
    } else {
        q.modules = NULL;
    }
    struct smtp_client_settings smtp_set;
    memset(&smtp_set, 0, sizeof(smtp_set));
    smtp_set.helo_name = cfg_get(cfg, "myhostname");
    smtp_set.myhostname = q.myhostname;
    smtp_set.dns = q.dns;
    smtp_set.tls_level = tls_level(cfg_get(cfg, "smtp_tls_security_level"));
    smtp_set.tls_cafile = cfg_get(cfg, "smtp_tls_CAfile");
    smtp_set.connect_timeout = 30;
    smtp_set.helo_timeout = smtp_set.mail_timeout = smtp_set.rcpt_timeout = 300;
    smtp_set.data_timeout = 120;
    smtp_set.data_done_timeout = 600;
    smtp_set.quit_timeout = 300;
    smtp_set.connection_cache_time = 2;
    smtp_set.default_port = 25;
    q.smtp_set = smtp_set;
    {
        const char *const *specs = cfg_list(cfg, "smtp_tls_policy_maps");
        size_t n = 0;
        while (specs[n])
            n++;
        q.tls_policy = xcalloc(n ? n : 1, sizeof(struct tbl *));
        for (size_t i = 0; i < n; i++) {
            char *why = NULL;
            struct tbl *t = tbl_open(q.tables, specs[i], TBL_FLAG_FOLD_CASE, &why);
            if (t == NULL)
                msg_fatal("smtp_tls_policy_maps: %s", why ? why : specs[i]);
            q.tls_policy[q.ntls_policy++] = t;
        }
    }
    q.smtp = smtp_client_create(q.base, &smtp_set, &error);
    if (q.smtp == NULL)
        msg_fatal("smtp client: %s", error);
    smtp_set.lmtp = 1;
    smtp_set.default_port = 24;
    q.lmtp = smtp_client_create(q.base, &smtp_set, &error);
    if (q.lmtp == NULL)
        msg_fatal("lmtp client: %s", error);

    q.inotify_fd = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
    if (q.inotify_fd < 0)
        msg_fatal("inotify_init1: %s", strerror(errno));
    char incoming[4200];
    snprintf(incoming, sizeof(incoming), "/proc/self/fd/%d", queue_dir_fd(q.queue, QDIR_INCOMING));
    if (inotify_add_watch(q.inotify_fd, incoming, IN_CLOSE_WRITE | IN_MOVED_TO) < 0)
        msg_fatal("inotify_add_watch %s: %s", incoming, strerror(errno));
    q.inotify_ev = event_new(q.base, q.inotify_fd, EV_READ | EV_PERSIST, on_inotify, &q);
    event_add(q.inotify_ev, NULL);
    q.scan_timer = evtimer_new(q.base, on_scan, &q);
    q.refill_timer = evtimer_new(q.base, on_refill, &q);
    q.deferred_timer = evtimer_new(q.base, on_deferred_scan, &q);
    q.sig_term = evsignal_new(q.base, SIGTERM, on_sigterm, &q);
    q.sig_flush = evsignal_new(q.base, SIGUSR2, on_flush, &q);
    q.sig_hup = evsignal_new(q.base, SIGHUP, on_sighup, &q);
    event_add(q.sig_term, NULL);
    event_add(q.sig_flush, NULL);
    event_add(q.sig_hup, NULL);

    /* Messages left in active/ (by the recovery scan or a previous queue
     * manager) are ours at once; incoming/ and deferred/ follow. */
    scan_dir(&q, QDIR_ACTIVE);
    scan_dir(&q, QDIR_INCOMING);
    struct timeval first = { 1, 0 };
    evtimer_add(q.scan_timer, &first);
    struct timeval now0 = { 0, 0 };
    evtimer_add(q.deferred_timer, &now0);

    event_base_dispatch(q.base);
    q.exiting = 1;

    module_set_fini(q.modules);
    smtp_client_free(q.smtp);
    smtp_client_free(q.lmtp);
    for (int l = 0; l <= SMTP_TLS_SECURE; l++)
        smtp_client_free(q.smtp_by_level[l]);
    workq_destroy(q.workq);
    return 0;
}
