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
struct workq_job *workq_submit(struct workq *wq, workq_work_fn *work, workq_done_fn *done, void *arg);
void workq_cancel(struct workq_job *job);
int workq_pending(const struct workq *wq);

#endif
