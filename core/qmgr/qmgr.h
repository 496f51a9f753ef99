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

/* The parameters the queue manager binds or reads (config/bind.h); the
 * SMTP and LMTP clients' are deliver/smtp_client.h's. */
struct cfg_bind_table;
extern const struct cfg_bind_table qmgr_bind_table, smtp_client_bind_table, lmtp_client_bind_table;

/* Builds the settings and clients of every SMTP and LMTP transport as a
 * queue manager would (main.cf, then each smtp/lmtp service of master.cf
 * with its -o overrides), so a value the clients cannot honour stops the
 * load: 0, or -1 with *error ("parameter: problem", malloc'd) and *where
 * the configuration that has it. */
int qmgr_check_transports(const struct cfg *cfg, const struct cfg **where, char **error);

/* Opens every smtp_*_checks and lmtp_*_checks table of main.cf and of each
 * master.cf smtp/lmtp service (checks.c), as a start or reload must:
 * 0, or -1 with *error (malloc'd) naming the parameter. */
struct tbl_registry;
int qmgr_checks_validate(const struct cfg *cfg, struct tbl_registry *reg, char **error);

#endif
