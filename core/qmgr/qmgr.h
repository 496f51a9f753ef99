/* The queue manager role (see qmgr.c). */
#ifndef PETREL_QMGR_QMGR_H
#define PETREL_QMGR_QMGR_H

struct cfg;
struct queue;

struct module_set;
struct module_metrics;

struct qmgr_args {
    const struct cfg *cfg;
    struct queue *queue;      /* opened before privileges were dropped */
    struct module_set *modules;   /* for the delivery-result hooks */
    int mailbox_helper_fd;        /* privileged mailbox helper, or -1 (not started as root) */
    struct module_metrics *metrics;   /* the shared metrics region, or NULL */
    unsigned process_index;       /* the master's slot for this process (gauge column) */
};

/* Runs the queue manager until SIGTERM; returns the exit status. */
int qmgr_main(const struct qmgr_args *args);

/* The parameters the queue manager binds or reads, and those of the SMTP
 * and LMTP clients it runs (config/bind.h). */
struct cfg_bind_table;
extern const struct cfg_bind_table qmgr_bind_table, smtp_client_bind_table;

#endif
