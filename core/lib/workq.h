/*
 * A small worker-thread pool whose completions come back to an event loop.
 * Blocking work (fsync, libraries that only block) runs on a thread; its
 * "done" callback runs later on the loop thread, so loop code never blocks
 * and never takes a lock. Completion is signalled through an eventfd that
 * the loop watches; the done queue is drained in submission-independent order.
 *
 * A job's memory belongs to the submitter until done() runs. If the submitter
 * goes away first (a session that died), it marks the job cancelled with
 * workq_cancel(): the work still runs (an fsync cannot be unwound) but
 * done() is called with cancelled = 1 so it only frees.
 *
 * A pool whose work may block for long (modules' petrel_run_blocking: an
 * SPF check waiting on DNS) is stopped with workq_destroy_bounded(), which
 * waits a bounded time and then leaves what still runs to the exiting
 * process instead of holding up the shutdown.
 */
#ifndef PETREL_LIB_WORKQ_H
#define PETREL_LIB_WORKQ_H

struct event_base;
struct workq;
struct workq_job;

typedef void workq_work_fn(void *arg);                 /* runs on a worker thread */
typedef void workq_done_fn(void *arg, int cancelled);  /* runs on the loop thread */

struct workq *workq_create(struct event_base *base, int threads);
/* Waits for running jobs, runs done() of finished ones, stops threads. */
void workq_destroy(struct workq *wq);
/* Like workq_destroy, but waits at most timeout_ms for the jobs still
 * queued or running. Returns how many it abandoned: their done() never
 * runs, jobs still queued never start, and the threads (and the pool's
 * memory, which they use) are left to the process, which must be about to
 * exit. 0: everything finished and the pool is freed. */
int workq_destroy_bounded(struct workq *wq, unsigned timeout_ms);
struct workq_job *workq_submit(struct workq *wq, workq_work_fn *work, workq_done_fn *done, void *arg);
void workq_cancel(struct workq_job *job);
int workq_pending(const struct workq *wq);

#endif
