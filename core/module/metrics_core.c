/*
 * The core's figures in the shared metrics region (see metrics_core.h):
 * their names, help texts and labels, registered before any module's.
 */
#include "config.h"

#include <stddef.h>

#include "lib/log.h"
#include "module/metrics.h"
#include "module/metrics_core.h"

struct core_family {
    enum metric_type type;
    const char *name;
    const char *help;
    const char *labels[METRICS_MAX_LABELS + 1];
    const double *buckets;      /* histograms */
    size_t nbuckets;
};

static const double delivery_buckets[] = { 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300 };
static const double commit_buckets[] = { 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5 };

/* Designated, so a family without buckets leaves them zero. */
#define COUNTER(n, h, ...) { .type = METRIC_COUNTER, .name = n, .help = h, .labels = { __VA_ARGS__ } }
#define GAUGE(n, h, ...) { .type = METRIC_GAUGE, .name = n, .help = h, .labels = { __VA_ARGS__ } }
#define HISTOGRAM(n, h, b, ...) \
    { .type = METRIC_HISTOGRAM, .name = n, .help = h, .buckets = b, .nbuckets = sizeof(b) / sizeof(b[0]), \
      .labels = { __VA_ARGS__ } }

static const struct core_family families[CM_MAX] = {
    [CM_SMTPD_CONNECTIONS] = COUNTER("petrel_smtpd_connections_total",
                                     "SMTP connections accepted, per master.cf service", "service"),
    [CM_SMTPD_REJECTS] = COUNTER("petrel_smtpd_rejects_total",
                                 "Rejects (reject log lines), per service, SMTP stage, reply class, what refused "
                                 "(a restriction's name, a parameter's, module:NAME) and reply code",
                                 "service", "stage", "class", "restriction", "code"),
    [CM_SMTPD_REPLIES] = COUNTER("petrel_smtpd_replies_total", "SMTP replies sent, per service and reply code class",
                                 "service", "class"),
    [CM_SMTPD_MESSAGES] = COUNTER("petrel_smtpd_messages_received_total",
                                  "Messages accepted into the queue (answered 250 after DATA or BDAT)", "service"),
    [CM_SMTPD_BYTES] = COUNTER("petrel_smtpd_received_bytes_total", "Bytes of the messages accepted into the queue",
                               "service"),
    [CM_SMTPD_RECIPIENTS] = COUNTER("petrel_smtpd_received_recipients_total",
                                    "Recipients of the messages accepted into the queue", "service"),
    [CM_SMTPD_TLS_HANDSHAKES] = COUNTER("petrel_smtpd_tls_handshakes_total",
                                        "Server-side TLS handshakes (STARTTLS or wrapper mode), per result", "service",
                                        "result"),
    [CM_DELIVERIES] = COUNTER("petrel_deliveries_total",
                              "Delivery attempts per recipient, per transport and status (sent, deferred, bounced)",
                              "transport", "status"),
    [CM_DELIVERY_SECONDS] = HISTOGRAM("petrel_delivery_duration_seconds",
                                      "Time a delivery agent took for a recipient, per transport", delivery_buckets,
                                      "transport"),
    [CM_PROCESS_RESTARTS] = COUNTER("petrel_process_restarts_total",
                                    "Role processes that died and were restarted by the master", "role"),
    [CM_SMTPD_COMMANDS] = COUNTER("petrel_smtpd_commands_total",
                                  "SMTP commands received, per service and command (unknown: not a command smtpd knows)",
                                  "service", "command"),
    [CM_QUEUE_COMMIT_SECONDS] = HISTOGRAM("petrel_queue_commit_duration_seconds",
                                          "Time to make a received message durable (fsync of the queue file and its "
                                          "directory, group commit included) before the 250",
                                          commit_buckets, NULL),
    [CM_DELIVERIES_IN_FLIGHT] = GAUGE("petrel_deliveries_in_flight", "Delivery jobs running now, per transport",
                                      "transport"),
};

int core_metrics_register(struct module_metrics *mm)
{
    if (mm == NULL)
        return -1;
    for (int i = 0; i < CM_MAX; i++) {
        const struct core_family *f = &families[i];
        char error[256];
        int index = module_metrics_family(mm, f->type, f->name, f->help, f->labels, f->buckets, f->nbuckets, error,
                                          sizeof(error));
        if (index != i) {
            msg_error("metrics: cannot register the core's %s: %s", f->name,
                      index < 0 ? error : "registered out of order");
            return -1;
        }
    }
    return 0;
}

void core_metric_add(struct module_metrics *mm, enum core_metric m, const char *const *labels, double value)
{
    if (mm != NULL)
        module_metrics_add(mm, (int)m, labels, value, 0);
}

void core_metric_gauge_add(struct module_metrics *mm, enum core_metric m, const char *const *labels, double value,
                           unsigned process)
{
    if (mm != NULL)
        module_metrics_add(mm, (int)m, labels, value, process);
}

void core_metric_observe(struct module_metrics *mm, enum core_metric m, const char *const *labels, double value)
{
    if (mm != NULL)
        module_metrics_observe(mm, (int)m, labels, value);
}

const char *core_metric_reply_class(const char *reply)
{
    static const char *const classes[] = { "1xx", "2xx", "3xx", "4xx", "5xx" };
    if (reply == NULL || reply[0] < '1' || reply[0] > '5' || reply[1] < '0' || reply[1] > '9' || reply[2] < '0' ||
        reply[2] > '9')
        return NULL;
    return classes[reply[0] - '1'];
}
