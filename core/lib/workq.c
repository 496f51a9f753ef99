/*
 * Worker threads for blocking calls (see workq.h). One mutex guards both the
 * todo and the done list; workers signal the loop through one eventfd, and
 * the loop drains all finished jobs per wake-up, which batches completions
 * under load.
 */
#include "config.h"

#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#include <event2/event.h>

#include "lib/log.h"
#include "lib/workq.h"
#include "lib/xalloc.h"

struct workq_job {
    struct workq_job *next;
    workq_work_fn *work;
    workq_done_fn *done;
    void *arg;
    int cancelled;
};

struct workq {
    pthread_mutex_t lock;
    pthread_cond_t wake;
    struct workq_job *todo_head, *todo_tail;
    struct workq_job *done_head, *done_tail;
    int stopping;
    int abandoned;        /* workq_destroy_bounded gave up: start nothing more */
    int live;             /* threads that have not returned */
    pthread_cond_t gone;  /* signalled when a thread returns */
    int pending;          /* submitted and not yet completed on the loop */
    int nthreads;
    pthread_t *threads;
    int event_fd;
    struct event *ev;
};

static void push(struct workq_job **head, struct workq_job **tail, struct workq_job *job)
{
    job->next = NULL;
    if (*tail)
        (*tail)->next = job;
    else
        *head = job;
    *tail = job;
}

static void *worker_main(void *arg)
{
    struct workq *wq = arg;
    pthread_mutex_lock(&wq->lock);
    for (;;) {
        while (wq->todo_head == NULL && !wq->stopping)
            pthread_cond_wait(&wq->wake, &wq->lock);
        if ((wq->todo_head == NULL && wq->stopping) || wq->abandoned)
            break;
        struct workq_job *job = wq->todo_head;
        wq->todo_head = job->next;
        if (wq->todo_head == NULL)
            wq->todo_tail = NULL;
        pthread_mutex_unlock(&wq->lock);

        job->work(job->arg);

        pthread_mutex_lock(&wq->lock);
        int was_empty = wq->done_head == NULL;
        push(&wq->done_head, &wq->done_tail, job);
        if (was_empty) {
            uint64_t one = 1;
            ssize_t ignored = write(wq->event_fd, &one, sizeof(one));
            (void)ignored;
        }
    }
    wq->live--;
    pthread_cond_broadcast(&wq->gone);
    pthread_mutex_unlock(&wq->lock);
    return NULL;
}

static void drain_done(struct workq *wq)
{
    pthread_mutex_lock(&wq->lock);
    struct workq_job *job = wq->done_head;
    wq->done_head = wq->done_tail = NULL;
    pthread_mutex_unlock(&wq->lock);
    while (job) {
        struct workq_job *next = job->next;
        wq->pending--;
        job->done(job->arg, job->cancelled);
        free(job);
        job = next;
    }
}

static void on_event_fd(evutil_socket_t fd, short what, void *arg)
{
    uint64_t count;
    ssize_t ignored = read(fd, &count, sizeof(count));
    (void)ignored;
    drain_done(arg);
}

struct workq *workq_create(struct event_base *base, int threads)
{
    struct workq *wq = xcalloc(1, sizeof(*wq));
    pthread_mutex_init(&wq->lock, NULL);
    pthread_cond_init(&wq->wake, NULL);
    pthread_condattr_t monotonic;
    pthread_condattr_init(&monotonic);
    pthread_condattr_setclock(&monotonic, CLOCK_MONOTONIC);
    pthread_cond_init(&wq->gone, &monotonic);
    pthread_condattr_destroy(&monotonic);
    wq->event_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (wq->event_fd < 0)
        msg_fatal("eventfd: %s", strerror(errno));
    wq->ev = event_new(base, wq->event_fd, EV_READ | EV_PERSIST, on_event_fd, wq);
    event_add(wq->ev, NULL);
    wq->nthreads = threads > 0 ? threads : 1;
    wq->threads = xcalloc((size_t)wq->nthreads, sizeof(pthread_t));
    wq->live = wq->nthreads;
    for (int i = 0; i < wq->nthreads; i++) {
        int err = pthread_create(&wq->threads[i], NULL, worker_main, wq);
        if (err != 0)
            msg_fatal("pthread_create: %s", strerror(err));
    }
    return wq;
}

struct workq_job *workq_submit(struct workq *wq, workq_work_fn *work, workq_done_fn *done, void *arg)
{
    struct workq_job *job = xcalloc(1, sizeof(*job));
    job->work = work;
    job->done = done;
    job->arg = arg;
    pthread_mutex_lock(&wq->lock);
    push(&wq->todo_head, &wq->todo_tail, job);
    wq->pending++;
    pthread_cond_signal(&wq->wake);
    pthread_mutex_unlock(&wq->lock);
    return job;
}

void workq_cancel(struct workq_job *job)
{
    /* Only the loop thread reads this flag (in drain_done): no lock needed. */
    job->cancelled = 1;
}

int workq_pending(const struct workq *wq)
{
    return wq->pending;
}

static void free_pool(struct workq *wq)
{
    for (int i = 0; i < wq->nthreads; i++)
        pthread_join(wq->threads[i], NULL);
    drain_done(wq);
    event_free(wq->ev);
    close(wq->event_fd);
    pthread_mutex_destroy(&wq->lock);
    pthread_cond_destroy(&wq->wake);
    pthread_cond_destroy(&wq->gone);
    free(wq->threads);
    free(wq);
}

void workq_destroy(struct workq *wq)
{
    if (wq == NULL)
        return;
    pthread_mutex_lock(&wq->lock);
    wq->stopping = 1;
    pthread_cond_broadcast(&wq->wake);
    pthread_mutex_unlock(&wq->lock);
    free_pool(wq);
}

int workq_destroy_bounded(struct workq *wq, unsigned timeout_ms)
{
    if (wq == NULL)
        return 0;
    struct timespec deadline;
    clock_gettime(CLOCK_MONOTONIC, &deadline);
    deadline.tv_sec += timeout_ms / 1000;
    deadline.tv_nsec += (long)(timeout_ms % 1000) * 1000000L;
    if (deadline.tv_nsec >= 1000000000L) {
        deadline.tv_sec++;
        deadline.tv_nsec -= 1000000000L;
    }
    pthread_mutex_lock(&wq->lock);
    wq->stopping = 1;
    pthread_cond_broadcast(&wq->wake);
    while (wq->live > 0)
        if (pthread_cond_timedwait(&wq->gone, &wq->lock, &deadline) == ETIMEDOUT)
            break;
    int all_gone = wq->live == 0;
    if (!all_gone)
        wq->abandoned = 1;   /* threads that finish their job now return without taking another */
    pthread_mutex_unlock(&wq->lock);
    if (all_gone) {
        free_pool(wq);
        return 0;
    }
    /* The finished jobs' done() still runs; the rest is left behind. The
     * eventfd stays open (a thread may still write to it) and the memory
     * stays allocated (the threads hold it); the loop stops watching. */
    drain_done(wq);
    event_free(wq->ev);
    wq->ev = NULL;
    for (int i = 0; i < wq->nthreads; i++)
        pthread_detach(wq->threads[i]);
    return wq->pending;
}
