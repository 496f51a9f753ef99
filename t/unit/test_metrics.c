/*
 * The shared metrics region (core/module/metrics.c): families and their
 * checks, counters, gauges and histograms updated from several processes
 * at once (real forks, as the master's children), a process's gauge
 * column forgotten, the Prometheus text exactly, escaping, and a full
 * series table that drops new series.
 */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "lib/buf.h"
#include "lib/log.h"
#include "module/metrics.h"
#include "module/metrics_core.h"
#include "../tap.h"

static char *render(struct module_metrics *mm)
{
    struct buf b = BUF_INIT;
    module_metrics_render(mm, &b);
    char *text = strdup(b.data ? b.data : "");
    buf_free(&b);
    return text;
}

static int contains(const char *text, const char *line)
{
    return strstr(text, line) != NULL;
}

int main(void)
{
    log_init("petrel", "test");
    struct module_metrics *mm = module_metrics_create();
    ok(mm != NULL, "the region is mapped");
    char error[256];
    static const char *const verdict[] = { "module", "verdict", NULL };
    int calls = module_metrics_family(mm, METRIC_COUNTER, "petrel_test_calls_total", "Calls\nby verdict", verdict,
                                      NULL, 0, error, sizeof(error));
    int busy = module_metrics_family(mm, METRIC_GAUGE, "petrel_test_busy", "Busy things", NULL, NULL, 0, error,
                                     sizeof(error));
    static const double bounds[] = { 0.1, 1, 10 };
    int latency = module_metrics_family(mm, METRIC_HISTOGRAM, "petrel_test_latency_seconds", "Latency", NULL, bounds,
                                        3, error, sizeof(error));
    ok(calls == 0 && busy == 1 && latency == 2, "three families registered");
    is_int(module_metrics_family(mm, METRIC_COUNTER, "petrel_test_calls_total", "again", verdict, NULL, 0, error,
                                 sizeof(error)), calls, "registering the same shape again finds it");
    is_int(module_metrics_family(mm, METRIC_COUNTER, "petrel_test_calls_total", "x", NULL, NULL, 0, error,
                                 sizeof(error)), -1, "other labels under the same name are refused");
    is_str(error, "petrel_test_calls_total is already registered with another type, labels or buckets", "saying why");
    is_int(module_metrics_family(mm, METRIC_COUNTER, "petrel_test_calls", "x", NULL, NULL, 0, error, sizeof(error)), -1,
           "a counter without _total");
    is_int(module_metrics_family(mm, METRIC_GAUGE, "Petrel-Bad", "x", NULL, NULL, 0, error, sizeof(error)), -1,
           "a name with upper case and a dash");
    static const char *const le[] = { "le", NULL };
    is_int(module_metrics_family(mm, METRIC_HISTOGRAM, "petrel_test_h", "x", le, NULL, 0, error, sizeof(error)), -1,
           "a histogram label called le");
    static const double down[] = { 2, 1 };
    is_int(module_metrics_family(mm, METRIC_HISTOGRAM, "petrel_test_h", "x", NULL, down, 2, error, sizeof(error)), -1,
           "buckets that do not ascend");

    /* Four processes (columns 0..3) at once, as smtpd workers. */
    for (unsigned p = 0; p < 4; p++) {
        pid_t pid = fork();
        if (pid == 0) {
            for (int i = 0; i < 1000; i++) {
                const char *v1[] = { "m", i % 2 ? "reject" : "continue" };
                module_metrics_add(mm, calls, v1, 1, p);
                module_metrics_observe(mm, latency, NULL, i % 4 == 0 ? 0.0625 : i % 4 == 1 ? 0.5 : i % 4 == 2 ? 5 : 50);
            }
            module_metrics_set(mm, busy, NULL, 2 + p, p);   /* 2, 3, 4, 5 */
            _exit(0);
        }
    }
    int status, clean = 1;
    while (wait(&status) > 0)
        clean &= WIFEXITED(status) && WEXITSTATUS(status) == 0;
    ok(clean, "four writer processes finished");
    char *text = render(mm);
    ok(contains(text, "# HELP petrel_test_calls_total Calls\\nby verdict\n# TYPE petrel_test_calls_total counter\n"),
       "HELP (line feed escaped) and TYPE");
    ok(contains(text, "petrel_test_calls_total{module=\"m\",verdict=\"continue\"} 2000\n") &&
       contains(text, "petrel_test_calls_total{module=\"m\",verdict=\"reject\"} 2000\n"),
       "counter increments from four processes all count (2000 + 2000)");
    ok(contains(text, "petrel_test_busy 14\n"), "a gauge reads as the sum of the processes' values (2+3+4+5)");
    ok(contains(text, "petrel_test_latency_seconds_bucket{le=\"0.1\"} 1000\n") &&
       contains(text, "petrel_test_latency_seconds_bucket{le=\"1\"} 2000\n") &&
       contains(text, "petrel_test_latency_seconds_bucket{le=\"10\"} 3000\n") &&
       contains(text, "petrel_test_latency_seconds_bucket{le=\"+Inf\"} 4000\n") &&
       contains(text, "petrel_test_latency_seconds_count 4000\n") &&
       contains(text, "petrel_test_latency_seconds_sum 55562.5\n"), "histogram buckets are cumulative; sum and count");
    free(text);

    module_metrics_forget_process(mm, 3);
    text = render(mm);
    ok(contains(text, "petrel_test_busy 9\n"), "a process that exits takes its gauge value with it (14 - 5)");
    ok(contains(text, "petrel_test_calls_total{module=\"m\",verdict=\"reject\"} 2000\n"), "counters stay");
    free(text);

    const char *odd[] = { "quote\"back\\slash\nline", "x" };
    module_metrics_add(mm, calls, odd, 1, 0);
    text = render(mm);
    ok(contains(text, "petrel_test_calls_total{module=\"quote\\\"back\\\\slash\\nline\",verdict=\"x\"} 1\n"),
       "label values are escaped");
    free(text);

    /* Fill the series table: the rest is dropped, once logged. */
    static const char *const key[] = { "key", NULL };
    int many = module_metrics_family(mm, METRIC_COUNTER, "petrel_test_many_total", "Many", key, NULL, 0, error,
                                     sizeof(error));
    char value[32];
    for (int i = 0; i < METRICS_MAX_SERIES + 10; i++) {
        snprintf(value, sizeof(value), "k%d", i);
        const char *v[] = { value };
        module_metrics_add(mm, many, v, 1, 0);
    }
    text = render(mm);
    size_t lines = 0;
    for (const char *p = text; (p = strstr(p, "petrel_test_many_total{")) != NULL; p++)
        lines++;
    is_int(lines + 5, METRICS_MAX_SERIES, "a full table holds exactly its series (4096, 5 of them earlier ones); "
           "the rest are not recorded");
    free(text);
    module_metrics_destroy(mm);

    /* The core's families: registered first, each at its enum index, so
     * roles record without a lookup. */
    mm = module_metrics_create();
    is_int(core_metrics_register(mm), 0, "the core's families register");
    is_int(core_metrics_register(mm), 0, "again (a second call finds them at the same indices)");
    const char *svc[] = { "smtp" };
    core_metric_add(mm, CM_SMTPD_MESSAGES, svc, 1);
    core_metric_add(mm, CM_SMTPD_BYTES, svc, 1234);
    const char *tr[] = { "smtp", "sent" };
    core_metric_observe(mm, CM_DELIVERY_SECONDS, tr, 0.3);
    text = render(mm);
    ok(contains(text, "petrel_smtpd_messages_received_total{service=\"smtp\"} 1\n") &&
       contains(text, "petrel_smtpd_received_bytes_total{service=\"smtp\"} 1234\n"), "core counters");
    ok(contains(text, "petrel_delivery_duration_seconds_bucket{transport=\"smtp\",le=\"0.5\"} 1\n") &&
       contains(text, "petrel_delivery_duration_seconds_bucket{transport=\"smtp\",le=\"0.25\"} 0\n"),
       "the delivery histogram (one label: the extra value is ignored)");
    free(text);
    is_str(core_metric_reply_class("250 2.0.0 Ok"), "2xx", "reply class 2xx");
    is_str(core_metric_reply_class("554-5.7.1 no"), "5xx", "reply class 5xx of a multi-line reply");
    ok(core_metric_reply_class("25") == NULL && core_metric_reply_class("650 x") == NULL, "no class for a non-code");
    module_metrics_destroy(mm);
    return done_testing();
}
