/*
 * The core's figures in the shared metrics region (see metrics_core.h):
 * their names, help texts and labels, registered before any module's.
 */
#include "config.h"

#include <stddef.h>

#include "lib/dns.h"
#include "lib/log.h"
#include "module/metrics.h"
#include "module/metrics_core.h"
#include "tables/table.h"

struct core_family {
    enum metric_type type;
    const char *name;
    const char *help;
    const char *labels[METRICS_MAX_LABELS + 1];
    const double *buckets;      /* histograms */
    size_t nbuckets;
};

static const double delivery_buckets[] = { 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300 };
static const double dns_buckets[] = { 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30 };
static const double table_buckets[] = { 0.00001, 0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 10 };
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
                                        "Server-side TLS handshakes (STARTTLS or wrapper mode), per result (ok, "
                                        "failed) and protocol version", "service", "result", "version"),
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
    [CM_DNS_QUERIES] = COUNTER("petrel_dns_queries_total",
                               "DNS queries, per record type and how they ended (ok, nxdomain, nodata, timeout, "
                               "servfail, refused, error, badname)", "type", "result"),
    [CM_DNS_SECONDS] = HISTOGRAM("petrel_dns_query_duration_seconds",
                                 "Time a DNS query took to answer or fail, retries included, per record type",
                                 dns_buckets, "type"),
    [CM_TABLE_LOOKUPS] = COUNTER("petrel_table_lookups_total",
                                 "Lookup table queries, per table type, table (TYPE:NAME) and result (found, "
                                 "notfound, error)", "type", "table", "result"),
    [CM_TABLE_SECONDS] = HISTOGRAM("petrel_table_lookup_duration_seconds",
                                   "Time a lookup table took to answer, per table type and table", table_buckets,
                                   "type", "table"),
    [CM_SMTP_TLS_HANDSHAKES] = COUNTER("petrel_smtp_tls_handshakes_total",
                                       "SMTP/LMTP client TLS handshakes, per transport, result (ok, failed, "
                                       "not_verified) and protocol version", "transport", "result", "version"),
    [CM_MAILBOX_FSYNC_SECONDS] = HISTOGRAM("petrel_mailbox_fsync_duration_seconds",
                                           "Time a mailbox delivery spent in fsync making the message durable (the "
                                           "file and its directories), per transport and mailbox format (maildir, "
                                           "mbox)", commit_buckets, "transport", "format"),
    [CM_SMTPD_SESSIONS] = COUNTER("petrel_smtpd_sessions_total",
                                  "SMTP sessions ended, per service and whether they ran over TLS (yes: STARTTLS "
                                  "completed or wrapper mode; no: plaintext to the end)", "service", "tls"),
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

static void observe_dns(void *arg, enum dns_type type, const char *result, double seconds)
{
    struct module_metrics *mm = arg;
    const char *labels[] = { dns_type_name(type), result };
    core_metric_add(mm, CM_DNS_QUERIES, labels, 1);
    if (seconds >= 0)
        core_metric_observe(mm, CM_DNS_SECONDS, labels, seconds);
}

void core_metrics_watch_dns(struct module_metrics *mm, struct dns_resolver *dns)
{
    if (mm != NULL && dns != NULL)
        dns_resolver_observe(dns, observe_dns, mm);
}

static void observe_table(void *arg, const struct tbl *t, int status, double seconds)
{
    struct module_metrics *mm = arg;
    const char *result = status == TBL_FOUND ? "found" : status == TBL_NOTFOUND ? "notfound" : "error";
    const char *labels[] = { tbl_get_type(t)->name, tbl_label(t), result };
    core_metric_add(mm, CM_TABLE_LOOKUPS, labels, 1);
    core_metric_observe(mm, CM_TABLE_SECONDS, labels, seconds);
}

void core_metrics_watch_tables(struct module_metrics *mm, struct tbl_registry *tables)
{
    if (mm != NULL && tables != NULL)
        tbl_registry_observe(tables, observe_table, mm);
}

const char *core_metric_reply_class(const char *reply)
{
    static const char *const classes[] = { "1xx", "2xx", "3xx", "4xx", "5xx" };
    if (reply == NULL || reply[0] < '1' || reply[0] > '5' || reply[1] < '0' || reply[1] > '9' || reply[2] < '0' ||
        reply[2] > '9')
        return NULL;
    return classes[reply[0] - '1'];
}
