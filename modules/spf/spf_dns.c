/*
 * The DNS bridge between libspf2 on a worker thread and the role's resolver.
 *
 * libspf2 asks its DNS layer for one record set at a time and waits for it.
 * A petrel_run_blocking() work function may call no Petrel function, so the
 * worker thread cannot call petrel_dns_lookup() itself: it queues a request
 * here, writes one byte into a pipe that the loop watches
 * (petrel_watch_fd), and waits on the request's condition variable. On the
 * loop, the watch takes every queued request to petrel_dns_lookup(); its
 * callback copies the answer into the request and wakes the thread. So
 * every SPF query goes to dns_resolver (or the system's resolvers when it is
 * unset), with c-ares' retries, exactly as the core's own lookups do; libspf2's
 * own resolver (res_nquery and /etc/resolv.conf) is never used.
 *
 * Lifetimes: a request is shared by the waiting thread and the loop's
 * callback, each holding a reference (its own mutex, because the callback
 * may come after the thread gave up at its deadline). The bridge is held by
 * the module (init to fini) and by each evaluation in flight; after fini no
 * query is started (answers TEMPFAIL) and the last holder frees it.
 */
#define _GNU_SOURCE   /* pipe2 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "spf_dns.h"

struct spf_dns_request {
    pthread_mutex_t lock;
    pthread_cond_t cond;
    int refs;                       /* the waiting thread + the loop side */
    int done;
    petrel_dns_type type;
    char name[256];
    struct spf_dns_answer answer;
    struct spf_dns_request *next;   /* in the bridge's queue */
};

struct spf_bridge {
    pthread_mutex_t lock;
    int refs;
    int closed;                     /* fini ran: no new queries */
    int pipe_read, pipe_write;
    petrel_module *m;
    petrel_watch *watch;
    struct spf_dns_request *head, *tail;
};

static void request_unref(struct spf_dns_request *r)
{
    pthread_mutex_lock(&r->lock);
    int left = --r->refs;
    pthread_mutex_unlock(&r->lock);
    if (left == 0) {
        spf_dns_answer_free(&r->answer);
        pthread_mutex_destroy(&r->lock);
        pthread_cond_destroy(&r->cond);
        free(r);
    }
}

/* Fills the answer (unless the thread already has one) and wakes it. */
static void request_complete(struct spf_dns_request *r, petrel_dns_status status, size_t count,
                             const char *const *values)
{
    pthread_mutex_lock(&r->lock);
    if (!r->done) {
        r->answer.status = status;
        r->answer.count = 0;
        r->answer.values = count ? calloc(count, sizeof(char *)) : NULL;
        for (size_t i = 0; r->answer.values && i < count; i++) {
            r->answer.values[i] = strdup(values[i] ? values[i] : "");
            if (r->answer.values[i] == NULL)
                break;
            r->answer.count++;
        }
        if (count && r->answer.count < count && status == PETREL_DNS_OK)
            r->answer.status = PETREL_DNS_TEMPFAIL;   /* out of memory: try again later */
        r->done = 1;
        pthread_cond_broadcast(&r->cond);
    }
    pthread_mutex_unlock(&r->lock);
    request_unref(r);
}

static void on_answer(const petrel_dns_answer *a, void *arg)
{
    request_complete(arg, a->status, a->status == PETREL_DNS_OK ? a->count : 0, a->values);
}

static void bridge_unref(struct spf_bridge *b)
{
    pthread_mutex_lock(&b->lock);
    int left = --b->refs;
    pthread_mutex_unlock(&b->lock);
    if (left == 0) {
        if (b->pipe_write >= 0)
            close(b->pipe_write);
        pthread_mutex_destroy(&b->lock);
        free(b);
    }
}

/* On the loop: start every queued query. */
static void on_wakeup(int fd, int events, void *arg)
{
    struct spf_bridge *b = arg;
    char drain[256];
    while (read(fd, drain, sizeof(drain)) > 0)
        ;
    pthread_mutex_lock(&b->lock);
    struct spf_dns_request *list = b->head;
    b->head = b->tail = NULL;
    pthread_mutex_unlock(&b->lock);
    while (list) {
        struct spf_dns_request *r = list;
        list = r->next;
        /* petrel_dns_lookup may answer before it returns (a bad name): the
         * callback then already dropped the loop side's reference. */
        if (petrel_dns_lookup(b->m, r->type, r->name, on_answer, r) != 0)
            request_complete(r, PETREL_DNS_TEMPFAIL, 0, NULL);
    }
}

struct spf_bridge *spf_bridge_create(petrel_module *m, const char **error)
{
    struct spf_bridge *b = calloc(1, sizeof(*b));
    if (b == NULL) {
        *error = "out of memory";
        return NULL;
    }
    int fds[2];
    if (pipe2(fds, O_NONBLOCK | O_CLOEXEC) != 0) {
        *error = "cannot create the DNS bridge's pipe";
        free(b);
        return NULL;
    }
    b->pipe_read = fds[0];
    b->pipe_write = fds[1];
    b->m = m;
    b->refs = 1;
    pthread_mutex_init(&b->lock, NULL);
    b->watch = petrel_watch_fd(m, b->pipe_read, PETREL_WATCH_READ, on_wakeup, b);
    if (b->watch == NULL) {
        *error = "no event loop for the DNS bridge";
        close(fds[0]);
        close(fds[1]);
        pthread_mutex_destroy(&b->lock);
        free(b);
        return NULL;
    }
    return b;
}

void spf_bridge_release(struct spf_bridge *b)
{
    if (b == NULL)
        return;
    petrel_watch_cancel(b->watch);
    pthread_mutex_lock(&b->lock);
    b->closed = 1;
    struct spf_dns_request *list = b->head;
    b->head = b->tail = NULL;
    pthread_mutex_unlock(&b->lock);
    while (list) {
        struct spf_dns_request *r = list;
        list = r->next;
        request_complete(r, PETREL_DNS_TEMPFAIL, 0, NULL);
    }
    close(b->pipe_read);
    bridge_unref(b);
}

void spf_bridge_hold(struct spf_bridge *b)
{
    pthread_mutex_lock(&b->lock);
    b->refs++;
    pthread_mutex_unlock(&b->lock);
}

void spf_bridge_drop(struct spf_bridge *b)
{
    bridge_unref(b);
}

void spf_bridge_query(struct spf_bridge *b, petrel_dns_type type, const char *name,
                      const struct timespec *deadline, struct spf_dns_answer *out)
{
    memset(out, 0, sizeof(*out));
    out->status = PETREL_DNS_TEMPFAIL;
    if (strlen(name) >= sizeof(((struct spf_dns_request *)0)->name)) {
        out->status = PETREL_DNS_BADNAME;
        return;
    }
    struct spf_dns_request *r = calloc(1, sizeof(*r));
    if (r == NULL)
        return;
    pthread_condattr_t attr;
    pthread_condattr_init(&attr);
    pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    pthread_cond_init(&r->cond, &attr);
    pthread_condattr_destroy(&attr);
    pthread_mutex_init(&r->lock, NULL);
    r->refs = 2;
    r->type = type;
    strcpy(r->name, name);

    pthread_mutex_lock(&b->lock);
    int closed = b->closed;
    if (!closed) {
        if (b->tail)
            b->tail->next = r;
        else
            b->head = r;
        b->tail = r;
    }
    pthread_mutex_unlock(&b->lock);
    if (closed) {
        request_complete(r, PETREL_DNS_TEMPFAIL, 0, NULL);
    } else {
        /* A full pipe already holds a wake-up: EAGAIN is harmless. */
        while (write(b->pipe_write, "q", 1) < 0 && errno == EINTR)
            ;
    }

    pthread_mutex_lock(&r->lock);
    while (!r->done) {
        if (pthread_cond_timedwait(&r->cond, &r->lock, deadline) == ETIMEDOUT)
            break;
    }
    if (r->done) {
        *out = r->answer;                  /* the answer moves to the caller */
        memset(&r->answer, 0, sizeof(r->answer));
    } else {
        r->done = 1;                       /* a late answer is dropped */
    }
    pthread_mutex_unlock(&r->lock);
    request_unref(r);
}

void spf_dns_answer_free(struct spf_dns_answer *a)
{
    for (size_t i = 0; i < a->count; i++)
        free(a->values[i]);
    free(a->values);
    a->values = NULL;
    a->count = 0;
}
