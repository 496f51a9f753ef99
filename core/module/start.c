/*
 * Starting and stopping the module runtime of a role process
 * (runtime.h): the handle tables, the crash handler, and init and fini of
 * the modules the role uses. Above the rest of core/module: it calls into
 * the loader and the runtime, nothing calls back into it.
 *
 * At stop, petrel_run_blocking work still running gets a short grace
 * period (MODULE_POOL_GRACE_MS), not the time it may take (an SPF check
 * waits up to 20 s on DNS): what finishes in time completes as usual,
 * before fini; a module whose work is still on a thread after it is not
 * finalised (its fini would free what the thread uses) and the process
 * exits around it, which is logged.
 */
#include "config.h"

#include <pthread.h>
#include <stdlib.h>

#include "lib/log.h"
#include "lib/workq.h"
#include "lib/xalloc.h"
#include "module/module.h"
#include "module/runtime_int.h"

#define MODULE_POOL_GRACE_MS 1000

int module_runtime_start(const struct module_runtime_args *args)
{
    struct module_runtime *rt = xcalloc(1, sizeof(*rt));
    rt->set = args->set;
    rt->role = args->role;
    rt->base = args->base;
    rt->pool_threads = args->threads ? args->threads : 1;
    rt->dns = args->dns;
    rt->metrics = args->metrics;
    rt->process_index = args->process_index;
    rt->loop_thread = pthread_self();
    handle_table_init(&rt->sessions, "session", HANDLE_TAG_SESSION);
    handle_table_init(&rt->pendings, "pending call", HANDLE_TAG_PENDING);
    handle_table_init(&rt->timers, "timer", HANDLE_TAG_TIMER);
    handle_table_init(&rt->watches, "fd watch", HANDLE_TAG_WATCH);
    handle_table_init(&rt->metric_handles, "metric", HANDLE_TAG_METRIC);
    handle_table_init(&rt->sasl_requests, "SASL request", HANDLE_TAG_SASL);
    handle_table_init(&rt->table_queries, "table query", HANDLE_TAG_TABLE_QUERY);
    handle_table_init(&rt->command_requests, "command request", HANDLE_TAG_COMMAND);
    handle_table_init(&rt->messages, "message", HANDLE_TAG_MESSAGE);
    handle_table_init(&rt->body_writers, "body writer", HANDLE_TAG_BODY_WRITER);
    module_rt = rt;
    module_metrics_start(rt);
    if (rt->set == NULL || rt->set->n == 0)
        return 0;
    /* Each module's circuit reads closed (0) from the start, so a dashboard
       or an alert sees the series before the first trouble. */
    for (int i = 0; i < rt->set->n; i++)
        module_record_circuit(rt->set->mods[i], 0, 0);
    module_crash_install(-1);
    return module_set_init(rt->set, rt->role);
}

void module_runtime_stop(void)
{
    struct module_runtime *rt = module_rt;
    if (rt == NULL)
        return;
    if (rt->pool != NULL) {
        int left = workq_destroy_bounded(rt->pool, MODULE_POOL_GRACE_MS);
        rt->pool = NULL;
        for (int i = 0; left > 0 && rt->set && i < rt->set->n; i++) {
            struct petrel_module *m = rt->set->mods[i];
            if (m->blocking_calls == 0 || !m->initialised)
                continue;
            msg_warn("module %s: %u blocking call%s still running %u ms after the stop began: abandoned, and the "
                     "module's fini is skipped", m->name, m->blocking_calls, m->blocking_calls == 1 ? "" : "s",
                     MODULE_POOL_GRACE_MS);
            m->initialised = 0;
        }
    }
    module_set_fini(rt->set);
    /* Sessions, timers and watches still registered belong to a loop that
     * is going away with the process; only the tables are freed. */
    handle_table_free(&rt->sessions);
    handle_table_free(&rt->pendings);
    handle_table_free(&rt->timers);
    handle_table_free(&rt->watches);
    handle_table_free(&rt->sasl_requests);
    handle_table_free(&rt->table_queries);
    handle_table_free(&rt->command_requests);
    handle_table_free(&rt->messages);
    handle_table_free(&rt->body_writers);
    for (uint32_t i = 0; i < rt->metric_handles.n; i++)
        free(rt->metric_handles.entries[i].object);
    handle_table_free(&rt->metric_handles);
    module_rt = NULL;
    free(rt);
}
