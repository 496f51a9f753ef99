/*
 * Destinations and the scheduler (Postfix's qmgr_queue.c and qmgr_job.c).
 * A destination is a transport and a next hop; it has its own queue of jobs
 * and its own concurrency limit (TRANSPORT_destination_concurrency_limit,
 * one at a time with TRANSPORT_destination_rate_delay). Destinations with
 * work and a free slot wait in one ready ring, served round robin up to the
 * global delivery limit: a slow destination holds only its own slots.
 */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/event.h>

#include "config/cfg.h"
#include "lib/hash.h"
#include "lib/xalloc.h"
#include "module/metrics_core.h"
#include "qmgr/qmgr_int.h"

/* ------------------------------------------------------------------ */
/* destinations                                                        */

struct dest *qmgr_dest_get(struct qmgr *q, const char *transport, const char *nexthop)
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
    d->rate_delay = cfg_get(q->cfg, name) ? cfg_int(q->cfg, name) : q->dest_rate_delay;
    if (d->rate_delay > 0)
        d->limit = 1;
    if (d->limit == 0)
        d->limit = 1;
    d->next_bucket = q->buckets[b];
    q->buckets[b] = d;
    return d;
}

void qmgr_make_ready(struct qmgr *q, struct dest *d)
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

void qmgr_enqueue_job(struct qmgr *q, struct qjob *j)
{
    struct dest *d = j->d;
    j->next = NULL;
    if (d->tail)
        d->tail->next = j;
    else
        d->head = j;
    d->tail = j;
    qmgr_make_ready(q, d);
}

void qmgr_rate_rested(evutil_socket_t fd, short what, void *arg)
{
    struct dest *d = arg;
    d->resting = 0;
    qmgr_make_ready(d->q, d);
    qmgr_dispatch(d->q);
}

void qmgr_dispatch(struct qmgr *q)
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
        d->fig.in_delivery += j->dj.nrcpt;
        q->deliveries++;
        const char *transport[] = { j->transport };
        core_metric_gauge_add(q->metrics, CM_DELIVERIES_IN_FLIGHT, transport, 1, q->process_index);
        /* Round robin: a destination with more work goes to the back. */
        qmgr_make_ready(q, d);
        qmgr_start_job(q, j);
    }
}
