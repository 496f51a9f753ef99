/*
 * Metrics in a role process: the core's own figures per module and hook,
 * and the petrel_metric_* functions modules use (the shared region and
 * its format are metrics.c's).
 *
 * The core records, per module:
 *   petrel_module_hook_calls_total{module,hook,verdict}   every call and how
 *       it ended: continue accept reject tempfail discard hold (the answer),
 *       invalid (it broke the reply rules), timeout, failed (PENDING
 *       without a handle), skipped (circuit open), none (informational hooks)
 *   petrel_module_hook_duration_seconds{module,hook}      from the call to its
 *       answer, suspension included
 *   petrel_module_circuit_open{module}                    processes in which the
 *       module's circuit is open or half-open
 *   petrel_module_circuit_opened_total{module}            times it opened
 * "hook" is the hook's name, a restriction's name, or "sasl check".
 *
 * A module's metric is a handle (runtime_int.h) naming a family of the
 * shared region; it is registered in init, in every process (the first
 * registers, the others find it). Names start with petrel_MODULE_ so that
 * modules never collide with each other or with the core.
 */
#include "config.h"

#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "lib/log.h"
#include "lib/xalloc.h"
#include "module/metrics.h"
#include "module/module.h"
#include "module/runtime_int.h"

#define MODULE_METRIC_MAX_LABELS 4   /* doc/plugin-guide.md, "Metrics" */

struct module_metric {
    int family;
    struct petrel_module *m;
};

void module_metrics_start(struct module_runtime *rt)
{
    static const char *const call_labels[] = { "module", "hook", "verdict", NULL };
    static const char *const hook_labels[] = { "module", "hook", NULL };
    static const char *const module_labels[] = { "module", NULL };
    char error[256];
    rt->fam_calls = rt->fam_duration = rt->fam_circuit_open = rt->fam_circuit_opened = -1;
    if (rt->metrics == NULL)
        return;
    rt->fam_calls = module_metrics_family(rt->metrics, METRIC_COUNTER, "petrel_module_hook_calls_total",
                                          "Module hook and restriction calls, by how they ended", call_labels,
                                          NULL, 0, error, sizeof(error));
    rt->fam_duration = module_metrics_family(rt->metrics, METRIC_HISTOGRAM, "petrel_module_hook_duration_seconds",
                                             "Time from a module call to its answer, suspension included",
                                             hook_labels, NULL, 0, error, sizeof(error));
    rt->fam_circuit_open = module_metrics_family(rt->metrics, METRIC_GAUGE, "petrel_module_circuit_open",
                                                 "Processes in which the module's circuit is open or half-open",
                                                 module_labels, NULL, 0, error, sizeof(error));
    rt->fam_circuit_opened = module_metrics_family(rt->metrics, METRIC_COUNTER,
                                                   "petrel_module_circuit_opened_total",
                                                   "Times the module's circuit opened", module_labels, NULL, 0,
                                                   error, sizeof(error));
}

double module_clock(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

void module_record_call(const struct petrel_module *m, const char *label, const char *verdict, double started)
{
    struct module_runtime *rt = module_rt;
    if (rt == NULL || rt->metrics == NULL)
        return;
    const char *values[] = { m->name, label, verdict };
    module_metrics_add(rt->metrics, rt->fam_calls, values, 1, rt->process_index);
    if (started > 0)
        module_metrics_observe(rt->metrics, rt->fam_duration, values, module_clock() - started);
}

void module_record_circuit(const struct petrel_module *m, int open, int opened_now)
{
    struct module_runtime *rt = module_rt;
    if (rt == NULL || rt->metrics == NULL)
        return;
    const char *values[] = { m->name };
    module_metrics_set(rt->metrics, rt->fam_circuit_open, values, open ? 1 : 0, rt->process_index);
    if (opened_now)
        module_metrics_add(rt->metrics, rt->fam_circuit_opened, values, 1, rt->process_index);
}

/* ------------------------------------------------------------------ */
/* the API                                                             */

/* The smallest definition a module may pass: the 1.1 struct (freeze it
 * here when petrel_metric_def grows). */
#define METRIC_DEF_SIZE_V11 sizeof(petrel_metric_def)

petrel_metric *petrel_metric_register(petrel_module *m, const petrel_metric_def *given)
{
    struct module_runtime *rt = module_rt;
    if (m == NULL || given == NULL || !module_on_loop(m, __func__))
        return NULL;
    if (given->size < METRIC_DEF_SIZE_V11 || given->size > sizeof(petrel_metric_def)) {
        msg_warn("module %s: petrel_metric_register: the definition has size %zu: start it with "
                 "PETREL_METRIC_DEF_INIT", m->name, given->size);
        return NULL;
    }
    petrel_metric_def copy, *def = &copy;
    memset(&copy, 0, sizeof(copy));
    memcpy(&copy, given, given->size);
    if (rt == NULL || rt->metrics == NULL) {
        msg_info("module %s: metric %s: metrics are not recorded in this process", m->name,
                 def->name ? def->name : "(null)");
        return NULL;
    }
    char prefix[80];
    snprintf(prefix, sizeof(prefix), "petrel_%s_", m->name);
    if (def->name == NULL || strncmp(def->name, prefix, strlen(prefix)) != 0) {
        msg_warn("module %s: petrel_metric_register: metric \"%s\" must start with %s", m->name,
                 def->name ? def->name : "(null)", prefix);
        return NULL;
    }
    enum metric_type type = def->type == PETREL_METRIC_GAUGE ? METRIC_GAUGE
                          : def->type == PETREL_METRIC_HISTOGRAM ? METRIC_HISTOGRAM : METRIC_COUNTER;
    if (def->type != PETREL_METRIC_COUNTER && def->type != PETREL_METRIC_GAUGE &&
        def->type != PETREL_METRIC_HISTOGRAM) {
        msg_warn("module %s: petrel_metric_register: %s has an unknown type", m->name, def->name);
        return NULL;
    }
    size_t nlabels = 0;
    while (def->labels && def->labels[nlabels] && nlabels <= MODULE_METRIC_MAX_LABELS)
        nlabels++;
    if (nlabels > MODULE_METRIC_MAX_LABELS) {
        /* The plugin guide promises 4; the core's own families may have more. */
        msg_warn("module %s: petrel_metric_register: %s: at most %d labels", m->name, def->name,
                 MODULE_METRIC_MAX_LABELS);
        return NULL;
    }
    char error[256];
    int family = module_metrics_family(rt->metrics, type, def->name, def->help, def->labels, def->buckets,
                                       def->nbuckets, error, sizeof(error));
    if (family < 0) {
        msg_warn("module %s: petrel_metric_register: %s", m->name, error);
        return NULL;
    }
    struct module_metric *metric = xcalloc(1, sizeof(*metric));
    metric->family = family;
    metric->m = m;
    uintptr_t h = handle_alloc(&rt->metric_handles, metric, (unsigned)m->index);
    if (h == 0) {
        free(metric);
        return NULL;
    }
    return (petrel_metric *)h;
}

/* The metric behind a handle; NULL without a word for the NULL a failed
 * registration gave (so a module need not test it), logged otherwise. */
static struct module_metric *metric_of(petrel_metric *h, const char *fn)
{
    if (h == NULL || module_rt == NULL || module_rt->metrics == NULL)
        return NULL;
    struct module_metric *metric = handle_lookup(&module_rt->metric_handles, (uintptr_t)h, NULL, NULL);
    if (metric == NULL) {
        module_stale(&module_rt->metric_handles, (uintptr_t)h, fn);
        return NULL;
    }
    return module_on_loop(metric->m, fn) ? metric : NULL;
}

void petrel_metric_add(petrel_metric *h, const char *const *label_values, double value)
{
    struct module_metric *metric = metric_of(h, __func__);
    if (metric == NULL)
        return;
    enum metric_type type = module_metrics_type(module_rt->metrics, metric->family);
    if (type == METRIC_HISTOGRAM || (type == METRIC_COUNTER && value < 0)) {
        msg_warn("module %s: petrel_metric_add: %s: ignored", metric->m->name,
                 type == METRIC_HISTOGRAM ? "a histogram takes petrel_metric_observe" : "a counter only grows");
        return;
    }
    module_metrics_add(module_rt->metrics, metric->family, label_values, value, module_rt->process_index);
}

void petrel_metric_set(petrel_metric *h, const char *const *label_values, double value)
{
    struct module_metric *metric = metric_of(h, __func__);
    if (metric == NULL)
        return;
    if (module_metrics_type(module_rt->metrics, metric->family) != METRIC_GAUGE) {
        msg_warn("module %s: petrel_metric_set: only a gauge can be set: ignored", metric->m->name);
        return;
    }
    module_metrics_set(module_rt->metrics, metric->family, label_values, value, module_rt->process_index);
}

void petrel_metric_observe(petrel_metric *h, const char *const *label_values, double value)
{
    struct module_metric *metric = metric_of(h, __func__);
    if (metric == NULL)
        return;
    if (module_metrics_type(module_rt->metrics, metric->family) != METRIC_HISTOGRAM) {
        msg_warn("module %s: petrel_metric_observe: only a histogram observes: ignored", metric->m->name);
        return;
    }
    module_metrics_observe(module_rt->metrics, metric->family, label_values, value);
}
