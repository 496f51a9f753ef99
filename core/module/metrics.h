/*
 * Module metrics: counters, gauges and histograms that modules register
 * by name (with a fixed set of label names) and the core records per
 * module and hook, aggregated across every role process.
 *
 * The master maps one anonymous MAP_SHARED region before it forks
 * anything (as it does for anvil's connection counts); every role process
 * inherits it and updates it with atomic operations, so the figures
 * survive a worker's crash and restart, and a reload. Counters and
 * histograms are shared totals; a gauge keeps one value per process (its
 * column, the process's slot in the master) and reads as their sum, and
 * the master zeroes a column when its process exits, so a dead worker
 * leaves no phantom "in flight" behind.
 *
 * The region is bounded (METRICS_MAX_FAMILIES metric names,
 * METRICS_MAX_SERIES label combinations); when it is full a new series is
 * not recorded and each process says so once in the log.
 * module_metrics_render() writes everything in the Prometheus text format
 * (for the control socket's "metrics" request, petrelctl metrics, and the
 * metrics endpoint to come).
 */
#ifndef PETREL_MODULE_METRICS_H
#define PETREL_MODULE_METRICS_H

#include <stddef.h>

#define METRICS_MAX_FAMILIES 256
#define METRICS_MAX_SERIES 4096
#define METRICS_MAX_LABELS 5           /* the core's; modules' at most 4 (metrics_api.c) */
#define METRICS_MAX_BUCKETS 15
#define METRICS_MAX_PROCESSES 64          /* gauge columns: the master's process slots */
#define METRICS_MAX_LABEL_VALUE 60

enum metric_type { METRIC_COUNTER, METRIC_GAUGE, METRIC_HISTOGRAM };

struct module_metrics;
struct buf;

/* In the master, before forking; NULL (logged) if it cannot be mapped. */
struct module_metrics *module_metrics_create(void);
void module_metrics_destroy(struct module_metrics *mm);
/* Process slot `process` exited: its gauge values go. */
void module_metrics_forget_process(struct module_metrics *mm, unsigned process);

/* Finds or registers a metric family. Returns its index, or -1 with error
 * (a bad name or label, a family of the same name with another shape, a
 * full table). labels: NULL-terminated names (or NULL). buckets: ascending
 * upper bounds for a histogram (NULL: the latency defaults). */
int module_metrics_family(struct module_metrics *mm, enum metric_type type, const char *name, const char *help,
                          const char *const *labels, const double *buckets, size_t nbuckets, char *error,
                          size_t error_size);
size_t module_metrics_nlabels(const struct module_metrics *mm, int family);
enum metric_type module_metrics_type(const struct module_metrics *mm, int family);

/* Updates the series of family with these label values (as many as the
 * family has labels). add: counters (value >= 0) and gauges; set: gauges;
 * observe: histograms. process is the caller's gauge column. */
void module_metrics_add(struct module_metrics *mm, int family, const char *const *values, double value,
                        unsigned process);
void module_metrics_set(struct module_metrics *mm, int family, const char *const *values, double value,
                        unsigned process);
void module_metrics_observe(struct module_metrics *mm, int family, const char *const *values, double value);

/* Reading figures back (petrelctl stats): every series of the family named
 * `name`, in no particular order, with its label values, its value (a
 * counter's total, a gauge's sum, a histogram's sample count) and, for a
 * histogram, the sum of its samples. Returns the number of series. */
typedef void metrics_series_fn(void *arg, const char *const *labels, size_t nlabels, double value, double sum);
size_t module_metrics_foreach(struct module_metrics *mm, const char *name, metrics_series_fn *fn, void *arg);

/* The most recent events of a kind worth showing a person (the /status
 * page's recent rejects): a ring of METRICS_RECENT lines in the region,
 * written by any process without a lock (each entry has a sequence number;
 * a line being written while it is read is skipped). */
#define METRICS_RECENT 20
#define METRICS_RECENT_LINE 300
void module_metrics_recent_add(struct module_metrics *mm, const char *line);
/* Calls fn for each line kept, newest first, with its Unix time. */
typedef void metrics_recent_fn(void *arg, long long when, const char *line);
void module_metrics_recent_each(struct module_metrics *mm, metrics_recent_fn *fn, void *arg);

/* The queue manager's board of its busiest destinations (petrelctl stats
 * and top, /status): a text of at most METRICS_BOARD_SIZE - 1 bytes the
 * queue manager replaces every second and the master reads, both under the
 * region's lock (one copy each way). Not in /metrics: a destination is a
 * host or domain name, an unbounded label. */
#define METRICS_BOARD_SIZE 8192
void module_metrics_board_set(struct module_metrics *mm, const char *text);
/* Copies the board into out (size bytes, NUL-terminated); returns the Unix
 * time it was written, 0 when it never was. */
long long module_metrics_board_get(struct module_metrics *mm, char *out, size_t size);

/* Everything, in the Prometheus text exposition format (0.0.4). */
void module_metrics_render(struct module_metrics *mm, struct buf *out);
/* Or in OpenMetrics 1.0 (openmetrics set): a counter's family is named
 * without its _total (its samples keep it). The caller ends the text with
 * "# EOF". */
void module_metrics_render_as(struct module_metrics *mm, struct buf *out, int openmetrics);

#endif
