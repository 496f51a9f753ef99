/*
 * The board of busiest destinations (petrelctl stats and top, /status):
 * what each destination is doing, published every second into the shared
 * metrics region for the master to show (module/metrics.h, "board").
 *
 * Why not in /metrics: a destination is a domain or host name, an
 * unbounded label; the board keeps only the BOARD_ROWS busiest.
 *
 * A destination is shown by its next hop for SMTP and LMTP (the same
 * domain or host reached through two transports is two rows) and by its
 * transport alone for the others (every mailbox of "virtual" is one row),
 * so the board never lists mailboxes. Per row: recipients in the active
 * queue (waiting for a slot and in delivery), recipients waiting in
 * deferred/ whose last attempt was there, sent, deferred and bounced
 * results over the last minute (BOARD_SLOTS slots of BOARD_SLOT_SECONDS)
 * and since the queue manager started, and its last error with its time.
 *
 * The deferred count is the queue manager's own account: a message it
 * moves to deferred/ adds its deferred recipients at the destinations that
 * deferred them (a note per message, so taking the message back subtracts
 * exactly that). Messages deferred before this queue manager started are
 * not counted until they are tried again; one taken out of deferred/ by
 * petrelctl queue delete or hold stays counted until this queue manager
 * takes it again (from any queue) or stops.
 *
 * Row format (one line each, fields separated by a tab, busiest first):
 *   transport, destination, active, in_delivery, deferred, concurrency in
 *   use (delivery jobs running, summed over a transport's mailboxes), its
 *   limit (for a transport's mailboxes, the limit of one: each is a
 *   destination of its own), sent/min,
 *   deferred/min, bounced/min, sent, deferred_total, bounced, seconds since
 *   the last error (-1: none), the last error.
 * Text from the network (a remote server's reply) is reduced to printable
 * ASCII here, so the board can go to a terminal as it is.
 */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <event2/event.h>

#include "lib/buf.h"
#include "lib/hash.h"
#include "lib/xalloc.h"
#include "module/metrics.h"
#include "qmgr/qmgr_int.h"

#define BOARD_ROWS 20
#define BOARD_EVERY_SECONDS 1

struct deferred_note {
    struct deferred_note *next;
    char id[QUEUE_ID_MAX];
    size_t n;
    struct dest *dests[];      /* one per deferred recipient */
};

/* board.c stays below qmgr.c (which starts it): its own clock and hash. */
static double board_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

static unsigned note_bucket(const char *id)
{
    return hash_string(id) % MSG_BUCKETS;
}

static long long slot_of(double now)
{
    return (long long)(now / BOARD_SLOT_SECONDS);
}

void qmgr_board_result(struct dest *d, const struct dlv_result *r)
{
    struct dest_figures *f = &d->fig;
    double now = board_now();
    long long slot = slot_of(now);
    int k = (int)(slot % BOARD_SLOTS);
    if (f->slot_time[k] != slot) {
        f->slot_time[k] = slot;
        f->slot_sent[k] = f->slot_deferred[k] = f->slot_bounced[k] = 0;
    }
    if (r->status == DLV_SENT) {
        f->sent++;
        f->slot_sent[k]++;
        return;
    }
    if (r->status == DLV_DEFERRED) {
        f->deferred++;
        f->slot_deferred[k]++;
    } else {
        f->bounced++;
        f->slot_bounced[k]++;
    }
    f->last_error_time = now;
    /* The agent's text (it holds the reply's code when there is one), or
     * the DSN code when there is no text. */
    char *o = f->last_error, *end = f->last_error + sizeof(f->last_error) - 1;
    for (const char *s = r->text[0] ? r->text : r->dsn; *s && o < end; s++)
        *o++ = *s >= 0x20 && *s < 0x7f && *s != '\t' ? *s : '?';
    *o = '\0';
}

void qmgr_board_deferred(struct qmgr *q, const struct qmsg *m)
{
    size_t n = 0;
    for (size_t i = 0; i < m->msg.env.rcpt_count; i++)
        if (m->outcome[i].state == DLV_DEFERRED + 1 && m->outcome[i].dest)
            n++;
    if (n == 0)
        return;
    qmgr_board_retaken(q, m->id);   /* an older note of the same message, if any */
    struct deferred_note *note = xmalloc(sizeof(*note) + n * sizeof(note->dests[0]));
    snprintf(note->id, sizeof(note->id), "%s", m->id);
    note->n = 0;
    for (size_t i = 0; i < m->msg.env.rcpt_count; i++) {
        struct dest *d = m->outcome[i].dest;
        if (m->outcome[i].state == DLV_DEFERRED + 1 && d) {
            note->dests[note->n++] = d;
            d->fig.deferred_waiting++;
        }
    }
    unsigned b = note_bucket(m->id);
    note->next = q->deferred_notes[b];
    q->deferred_notes[b] = note;
}

void qmgr_board_retaken(struct qmgr *q, const char *id)
{
    unsigned b = note_bucket(id);
    for (struct deferred_note **p = &q->deferred_notes[b]; *p; p = &(*p)->next) {
        struct deferred_note *note = *p;
        if (strcmp(note->id, id) != 0)
            continue;
        for (size_t i = 0; i < note->n; i++)
            if (note->dests[i]->fig.deferred_waiting > 0)
                note->dests[i]->fig.deferred_waiting--;
        *p = note->next;
        free(note);
        return;
    }
}

/* A board row: the destinations shown under one name, summed. */
struct row {
    const char *transport, *name;   /* point into a dest's key */
    size_t transport_len, name_len;
    unsigned long active, in_delivery, deferred_waiting, jobs, limit;
    unsigned minute_sent, minute_deferred, minute_bounced;
    unsigned long long sent, deferred, bounced;
    double last_error_time;
    const char *last_error;
};

static int row_order_by_name(const void *a, const void *b)
{
    const struct row *x = a, *y = b;
    size_t n = x->transport_len < y->transport_len ? x->transport_len : y->transport_len;
    int c = memcmp(x->transport, y->transport, n);
    if (c == 0 && x->transport_len != y->transport_len)
        c = x->transport_len < y->transport_len ? -1 : 1;
    if (c)
        return c;
    n = x->name_len < y->name_len ? x->name_len : y->name_len;
    c = memcmp(x->name, y->name, n);
    if (c == 0 && x->name_len != y->name_len)
        c = x->name_len < y->name_len ? -1 : 1;
    return c;
}

static double busyness(const struct row *r)
{
    return (double)r->active + (double)r->deferred_waiting + r->minute_sent + r->minute_deferred +
           r->minute_bounced;
}

static int row_order_by_busyness(const void *a, const void *b)
{
    const struct row *x = a, *y = b;
    double bx = busyness(x), by = busyness(y);
    if (bx != by)
        return bx > by ? -1 : 1;
    unsigned long long tx = x->sent + x->deferred + x->bounced, ty = y->sent + y->deferred + y->bounced;
    if (tx != ty)
        return tx > ty ? -1 : 1;
    return row_order_by_name(a, b);
}

static void put_field(struct buf *out, const char *s, size_t len)
{
    for (size_t i = 0; i < len; i++)
        buf_putc(out, s[i] >= 0x20 && s[i] < 0x7f && s[i] != '\t' ? s[i] : '?');
}

static void publish(struct qmgr *q)
{
    size_t ndest = 0;
    for (int b = 0; b < DEST_BUCKETS; b++)
        for (struct dest *d = q->buckets[b]; d; d = d->next_bucket)
            ndest++;
    struct row *rows = xcalloc(ndest ? ndest : 1, sizeof(*rows));
    double now = board_now();
    long long slot = slot_of(now);
    size_t n = 0;
    for (int b = 0; b < DEST_BUCKETS; b++) {
        for (struct dest *d = q->buckets[b]; d; d = d->next_bucket) {
            struct row *r = &rows[n++];
            const char *nl = strchr(d->key, '\n');
            r->transport = d->key;
            r->transport_len = nl ? (size_t)(nl - d->key) : strlen(d->key);
            r->name = d->remote && nl ? nl + 1 : "";
            r->name_len = strlen(r->name);
            for (struct qjob *j = d->head; j; j = j->next)
                r->active += j->dj.nrcpt;
            r->in_delivery = d->fig.in_delivery;
            r->active += d->fig.in_delivery;
            r->deferred_waiting = d->fig.deferred_waiting;
            r->jobs = d->active;
            r->limit = d->limit;
            for (int k = 0; k < BOARD_SLOTS; k++) {
                /* the last minute: the current slot and the ones before it */
                if (d->fig.slot_time[k] > slot - BOARD_SLOTS && d->fig.slot_time[k] <= slot) {
                    r->minute_sent += d->fig.slot_sent[k];
                    r->minute_deferred += d->fig.slot_deferred[k];
                    r->minute_bounced += d->fig.slot_bounced[k];
                }
            }
            r->sent = d->fig.sent;
            r->deferred = d->fig.deferred;
            r->bounced = d->fig.bounced;
            r->last_error_time = d->fig.last_error_time;
            r->last_error = d->fig.last_error;
        }
    }
    /* Merge the destinations shown under one name (a transport's mailboxes). */
    qsort(rows, n, sizeof(*rows), row_order_by_name);
    size_t merged = 0;
    for (size_t i = 0; i < n; i++) {
        if (merged > 0 && row_order_by_name(&rows[merged - 1], &rows[i]) == 0) {
            struct row *t = &rows[merged - 1], *r = &rows[i];
            t->active += r->active;
            t->in_delivery += r->in_delivery;
            t->deferred_waiting += r->deferred_waiting;
            t->jobs += r->jobs;
            if (r->limit > t->limit)
                t->limit = r->limit;   /* each mailbox's own limit, not their sum */
            t->minute_sent += r->minute_sent;
            t->minute_deferred += r->minute_deferred;
            t->minute_bounced += r->minute_bounced;
            t->sent += r->sent;
            t->deferred += r->deferred;
            t->bounced += r->bounced;
            if (r->last_error_time > t->last_error_time) {
                t->last_error_time = r->last_error_time;
                t->last_error = r->last_error;
            }
        } else {
            rows[merged++] = rows[i];
        }
    }
    qsort(rows, merged, sizeof(*rows), row_order_by_busyness);
    struct buf out = BUF_INIT;
    for (size_t i = 0; i < merged && i < BOARD_ROWS; i++) {
        const struct row *r = &rows[i];
        if (busyness(r) == 0 && r->sent + r->deferred + r->bounced == 0)
            break;   /* nothing ever happened there (a route being built) */
        put_field(&out, r->transport, r->transport_len);
        buf_putc(&out, '\t');
        put_field(&out, r->name, r->name_len);
        buf_printf(&out, "\t%lu\t%lu\t%lu\t%lu\t%lu\t%u\t%u\t%u\t%llu\t%llu\t%llu\t%.0f\t", r->active,
                   r->in_delivery, r->deferred_waiting, r->jobs, r->limit, r->minute_sent, r->minute_deferred, r->minute_bounced, r->sent, r->deferred,
                   r->bounced, r->last_error_time > 0 ? now - r->last_error_time : -1.0);
        put_field(&out, r->last_error, r->last_error_time > 0 ? strlen(r->last_error) : 0);
        buf_putc(&out, '\n');
    }
    module_metrics_board_set(q->metrics, out.data ? out.data : "");
    buf_free(&out);
    free(rows);
}

static void on_board_timer(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    publish(arg);
}

void qmgr_board_start(struct qmgr *q)
{
    if (q->metrics == NULL)
        return;
    q->board_timer = event_new(q->base, -1, EV_PERSIST, on_board_timer, q);
    struct timeval every = { BOARD_EVERY_SECONDS, 0 };
    event_add(q->board_timer, &every);
    publish(q);
}

void qmgr_board_stop(struct qmgr *q)
{
    if (q->board_timer) {
        event_free(q->board_timer);
        q->board_timer = NULL;
    }
    for (unsigned b = 0; b < MSG_BUCKETS; b++) {
        while (q->deferred_notes[b]) {
            struct deferred_note *note = q->deferred_notes[b];
            q->deferred_notes[b] = note->next;
            free(note);
        }
    }
}
