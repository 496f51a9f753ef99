/*
 * The core's own figures (connections, replies, messages, TLS, deliveries,
 * restarts), kept in the same shared region as the modules' metrics
 * (metrics.h), so they are aggregated across every role process and survive
 * a worker's crash, a restart and a reload.
 *
 * module_metrics_create() registers these families first, in this order,
 * so a family's index is its enum value in every process: a role records
 * with core_metric_add(mm, CM_..., labels, n) and no lookup. Labels have
 * bounded cardinality by construction: service and transport names come
 * from master.cf, the rest from fixed word lists; never a client address,
 * an e-mail address or a host name.
 *
 * Queue sizes and the processes up are read when the metrics are served
 * (master/http.c), not kept here.
 */
#ifndef PETREL_MODULE_METRICS_CORE_H
#define PETREL_MODULE_METRICS_CORE_H

struct module_metrics;

enum core_metric {
    CM_SMTPD_CONNECTIONS,        /* counter {service} */
    CM_SMTPD_REJECTS,            /* counter {service,stage,class,restriction,code} */
    CM_SMTPD_REPLIES,            /* counter {service,class} */
    CM_SMTPD_MESSAGES,           /* counter {service} */
    CM_SMTPD_BYTES,              /* counter {service} */
    CM_SMTPD_RECIPIENTS,         /* counter {service} */
    CM_SMTPD_TLS_HANDSHAKES,     /* counter {service,result,version} */
    CM_DELIVERIES,               /* counter {transport,status} */
    CM_DELIVERY_SECONDS,         /* histogram {transport} */
    CM_PROCESS_RESTARTS,         /* counter {role} */
    CM_SMTPD_COMMANDS,           /* counter {service,command} */
    CM_QUEUE_COMMIT_SECONDS,     /* histogram {} */
    CM_DELIVERIES_IN_FLIGHT,     /* gauge {transport} */
    CM_DNS_QUERIES,              /* counter {type,result} */
    CM_DNS_SECONDS,              /* histogram {type} */
    CM_TABLE_LOOKUPS,            /* counter {type,table,result} */
    CM_TABLE_SECONDS,            /* histogram {type,table} */
    CM_SMTP_TLS_HANDSHAKES,      /* counter {transport,result,version} */
    CM_MAILBOX_FSYNC_SECONDS,    /* histogram {transport,format} */
    CM_SMTPD_SESSIONS,           /* counter {service,tls} */
    CM_MAX
};

/* Registers the families; 0, or -1 when one cannot be (logged). */
int core_metrics_register(struct module_metrics *mm);

/* Records one figure. labels: as many values as the family has (see the
 * enum). Does nothing when mm is NULL (no shared region). */
void core_metric_add(struct module_metrics *mm, enum core_metric m, const char *const *labels, double value);
/* A gauge: process is the caller's column (the master's slot for it). */
void core_metric_gauge_add(struct module_metrics *mm, enum core_metric m, const char *const *labels, double value,
                           unsigned process);
void core_metric_observe(struct module_metrics *mm, enum core_metric m, const char *const *labels, double value);

/* Records a role's DNS queries and table lookups in mm (dns.h's and
 * table.h's observers): per query type and result with latency, per table
 * ("TYPE:NAME" from the configuration) and result with latency. */
struct dns_resolver;
struct tbl_registry;
void core_metrics_watch_dns(struct module_metrics *mm, struct dns_resolver *dns);
void core_metrics_watch_tables(struct module_metrics *mm, struct tbl_registry *tables);

/* "2xx" ... "5xx" for a reply line (NULL when it does not start with a code). */
const char *core_metric_reply_class(const char *reply);

#endif
