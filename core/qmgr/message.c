/*
 * A message in the queue manager (Postfix's qmgr_message.c): taken from its
 * queue directory into active/ and read once (a file whose writer still
 * holds it is left alone, an incomplete one whose writer is gone removed,
 * a damaged one moved to corrupt/), then each pending recipient routed and
 * put into a job: SMTP/LMTP recipients of one message with the same next
 * hop share a job up to TRANSPORT_destination_recipient_limit; mailbox and
 * pipe deliveries are one job each.
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <unistd.h>

#include "config/cfg.h"
#include "lib/log.h"
#include "lib/xalloc.h"
#include "qmgr/qmgr_int.h"
#include "qmgr/route.h"
#include "queue/queue.h"
#include "tables/table.h"

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
    /* mailbox_size_limit for local(8)'s mailboxes, files and alias
     * commands, virtual_mailbox_limit for virtual(8)'s; a master.cf pipe
     * transport has none */
    if ((rt->kind == ROUTE_MAILDIR || rt->kind == ROUTE_MBOX || (rt->kind == ROUTE_PIPE && rt->from_alias)) &&
        rt->transport)
        j->dj.file_size_limit = strcmp(rt->transport, "virtual") == 0 ? m->q->virtual_mailbox_limit
                              : strcmp(rt->transport, "local") == 0 ? m->q->mailbox_size_limit : 0;
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

static struct route_opts message_route_opts(const struct qmsg *m)
{
    struct route_opts opts = {
        .filter = m->msg.env.content_filter,
        .no_mappings = (m->msg.env.flags & QUEUE_F_NO_ADDRESS_MAPPINGS) != 0,
        .redirected = (m->msg.env.flags & QUEUE_F_REDIRECTED) != 0,
    };
    return opts;
}

static int rcpt_pending(const struct qmsg *m, size_t i)
{
    int status = m->msg.rcpt_state[i].status;
    return status != QUEUE_RCPT_DELIVERED && status != QUEUE_RCPT_BOUNCED;
}

/* Every recipient is routed: their routes become jobs. */
static void make_jobs(struct qmgr *q, struct qmsg *m)
{
    struct routing *rs = m->routing;
    size_t n = m->msg.env.rcpt_count;
    struct qjob **open_jobs = petrel_pool_zalloc(m->pool, (n * 4 + 4) * sizeof(*open_jobs));
    size_t nopen = 0;
    size_t nrcpt_pending = 0;
    for (size_t i = 0; i < n; i++) {
        if (!rcpt_pending(m, i))
            continue;
        nrcpt_pending++;
        struct route_list *routes = &rs->routes[i];
        for (size_t k = 0; k < routes->count; k++) {
            struct route *rt = &routes->items[k];
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
                j->d = qmgr_dest_get(q, rt->transport, rt->kind == ROUTE_SMTP || rt->kind == ROUTE_LMTP ? rt->nexthop
                                                                                                   : rt->path);
                j->d->remote = rt->kind == ROUTE_SMTP || rt->kind == ROUTE_LMTP;
                qmgr_enqueue_job(q, j);
            }
            j->rcpt_index[j->dj.nrcpt] = i;
            j->rcpt_addr[j->dj.nrcpt] = rt->address;
            j->dj.nrcpt++;
        }
    }
    msg_info("%s: from=<%s>, size=%llu, nrcpt=%zu (queue active)", m->id, m->msg.env.sender,
             m->msg.content_length, nrcpt_pending);
}

/* A sender whose canonical lookup failed: every recipient waits for the
 * table (a deferral), the message is never sent with an unmapped sender. */
static void defer_all(struct qmsg *m, const char *why)
{
    struct routing *rs = m->routing;
    for (size_t i = 0; i < m->msg.env.rcpt_count; i++) {
        if (!rcpt_pending(m, i))
            continue;
        struct route *rt = petrel_pool_zalloc(m->pool, sizeof(*rt));
        rt->kind = ROUTE_RETRY;
        rt->transport = "retry";
        rt->address = m->msg.env.rcpts[i].address;
        rt->dsn = "4.3.0";
        rt->nexthop = why;
        rt->uid = rt->gid = -1;
        rs->routes[i].items = rt;
        rs->routes[i].count = 1;
    }
}

static void route_answered(void *arg);

/* One routing pass over what is not routed yet (the sender, then each
 * recipient), inside the message's lookup scope: a remote table that has
 * not answered makes that address's result a placeholder, which is thrown
 * away; the missing answers are fetched in parallel and the pass runs
 * again when they are in (route_answered). Returns 1 when everything is
 * routed, 0 when the message waits for its lookups. */
static int route_pass(struct qmgr *q, struct qmsg *m)
{
    struct routing *rs = m->routing;
    struct route_opts opts = message_route_opts(m);
    size_t n = m->msg.env.rcpt_count;
    for (;;) {
        size_t left = 0;
        tbl_scope_enter(q->tables, rs->scope);
        if (!rs->sender_done) {
            unsigned long before = tbl_scope_pending_count(rs->scope);
            int failed = 0;
            const char *sender = router_sender(q->router, m->msg.env.sender, &opts, m->pool, &failed);
            if (tbl_scope_pending_count(rs->scope) == before) {
                rs->sender_done = 1;
                m->sender = sender;
                rs->sender_failed = failed;
            } else {
                left++;
            }
        }
        for (size_t i = 0; i < n; i++) {
            if (rs->done[i] || !rcpt_pending(m, i))
                continue;
            unsigned long before = tbl_scope_pending_count(rs->scope);
            router_route(q->router, m->msg.env.sender, m->msg.env.rcpts[i].address, &opts, m->pool,
                         &rs->routes[i]);
            if (tbl_scope_pending_count(rs->scope) == before)
                rs->done[i] = 1;
            else
                left++;
        }
        tbl_scope_leave(q->tables);
        if (left == 0)
            return 1;
        if (!tbl_scope_missing(rs->scope)) {
            /* Pending with nothing to fetch cannot happen (every pending
             * key is recorded as missing, and nothing is in flight during
             * a pass); if it ever did, the placeholders (deferrals) stand
             * rather than a loop that never ends. */
            msg_warn("%s: routing: table lookups pending but none to fetch: deferring", m->id);
            for (size_t i = 0; i < n; i++)
                rs->done[i] = 1;
            if (!rs->sender_done) {
                rs->sender_done = rs->sender_failed = 1;
                m->sender = m->msg.env.sender;
            }
            return 1;
        }
        rs->rounds++;
        if (tbl_scope_fetch(rs->scope, route_answered, m))
            return 0;   /* route_answered() continues */
        /* every answer came at once: the next pass now */
    }
}

/* Routing is over: the scope goes, the routes become jobs. */
static void routing_finish(struct qmgr *q, struct qmsg *m)
{
    struct routing *rs = m->routing;
    if (rs->rounds)
        msg_info("%s: routed after %u round%s of table lookups", m->id, rs->rounds, rs->rounds == 1 ? "" : "s");
    if (rs->sender_failed) {
        msg_warn("%s: sender <%s>: canonical_maps lookup failure: deferring the message", m->id,
                 m->msg.env.sender);
        defer_all(m, "canonical_maps lookup failure");
    }
    make_jobs(q, m);
    tbl_scope_free(rs->scope);
    rs->scope = NULL;
    m->routing = NULL;
    if (m->jobs_left == 0)
        qmgr_finish_message(m);
    else
        qmgr_dispatch(q);
}

static void route_answered(void *arg)
{
    struct qmsg *m = arg;
    struct qmgr *q = m->q;
    if (q->exiting || q->stopping)
        return;   /* the message stays in active/, routed afresh at the next start */
    if (route_pass(q, m))
        routing_finish(q, m);
}

/* Routes every pending recipient and makes the jobs, now or - when a
 * remote table (pgsql:, socketmap:, ...) must answer first - later, from
 * the loop, while other messages are scheduled and delivered meanwhile
 * (doc/architecture.md, "Tables that wait"). */
static void schedule_message(struct qmgr *q, struct qmsg *m)
{
    size_t n = m->msg.env.rcpt_count;
    struct routing *rs = petrel_pool_zalloc(m->pool, sizeof(*rs));
    rs->routes = petrel_pool_zalloc(m->pool, (n ? n : 1) * sizeof(*rs->routes));
    rs->done = petrel_pool_zalloc(m->pool, n ? n : 1);
    rs->scope = tbl_scope_new_sized(QMGR_ROUTE_MAX_LOOKUPS);
    m->routing = rs;
    if (route_pass(q, m))
        routing_finish(q, m);
    else
        msg_info("%s: waiting for table lookups to route it", m->id);
}

void qmgr_take_message(struct qmgr *q, const char *id, enum queue_dir from)
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
    /* Made from a maildrop file (the pickup role): that file must be gone,
     * durably, before the message can be delivered, or a pickup role that
     * died before removing it would queue the message again. Out of
     * incoming/ that was done already, unless a tool moved it; a removal
     * then still gets its fsync. */
    if (m->msg.env.origin) {
        int released = queue_origin_release(q->queue, &m->msg.env, incoming);
        if (released == 1 && !incoming)
            released = queue_origin_sync(q->queue) == 0 ? 1 : -1;
        if (released < 0) {
            msg_warn("%s: cannot remove maildrop file %s, whose message this is: %s; retrying later", id,
                     m->msg.env.origin->name, strerror(errno));
            close(fd);
            petrel_pool_destroy(m->pool);
            free(m);
            return;
        }
    }
    if (from != QDIR_ACTIVE && queue_move(q->queue, id, from, QDIR_ACTIVE) != 0) {
        msg_warn("%s: cannot move to the active queue: %s", id, strerror(errno));
        close(fd);
        petrel_pool_destroy(m->pool);
        free(m);
        return;
    }
    /* Its deferred recipients, if the board counted them, are active now
     * (from deferred/, or from incoming/ after petrelctl queue requeue). */
    qmgr_board_retaken(q, id);
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
