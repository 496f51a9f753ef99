/*
 * The smtpd role: one event-driven worker process per core serves every
 * SMTP listener of master.cf. The master binds the sockets and forks the
 * workers; each worker accepts on all listeners and runs thousands of
 * sessions on one libevent loop. The pickup role runs the same sessions for
 * local submissions (maildrop files). Blocking work (fsync) goes to a small
 * thread pool whose completions return to the loop.
 */
#ifndef PETREL_SMTPD_SMTPD_H
#define PETREL_SMTPD_SMTPD_H

struct cfg;
struct master_service;
struct anvil;
struct queue;
struct tls_ticket_keys;
struct module_set;
struct module_metrics;

struct smtpd_listen_fd {
    int fd;
    const struct master_service *service;   /* its per-listener configuration */
};

struct smtpd_worker_args {
    const struct cfg *cfg;                  /* the generation this worker serves */
    const struct smtpd_listen_fd *listeners;
    int nlisteners;
    struct anvil *anvil;                    /* shared connection accounting */
    const struct tls_ticket_keys *tickets;  /* shared TLS session ticket keys */
    struct module_metrics *metrics;         /* shared metrics region, or NULL */
    struct queue *queue;                    /* opened before privileges were dropped */
    struct module_set *modules;             /* loaded by the master; initialised here */
    unsigned worker_index;                  /* column in the anvil table */
    unsigned generation;                    /* config generation, for logs */
    int command_fd;                         /* module control commands from the master, or -1 */
};

/* Builds a listener's settings (restrictions, tables, TLS) to check a
 * configuration without serving it; 0, or -1 with *error (malloc'd): one
 * line per problem, each naming where to fix it (the main.cf line of a
 * main.cf value, the master.cf line of a -o override, main.cf for a
 * default value; cfg_locate). cfg: the generation's main configuration
 * (its master.cf services). */
int smtpd_validate_service(const struct cfg *cfg, const struct master_service *service, struct module_set *modules,
                           char **error);

/* Runs a worker until it is told to stop; returns the process exit status. */
int smtpd_worker_main(const struct smtpd_worker_args *args);

/* The pickup role (pickup.c): submits the files of queue_directory/maildrop/
 * to in-process smtpd sessions. */
struct smtpd_pickup_args {
    const struct cfg *cfg;
    const struct master_service *service;   /* master.cf's pickup line: -o overrides, wakeup */
    struct queue *queue;
    int maildrop_fd;                        /* opened before privileges were dropped */
    struct module_set *modules;
    struct module_metrics *metrics;         /* shared metrics region, or NULL */
    unsigned process_index;                 /* the master's slot for this process (gauge column) */
    int stop_grace_seconds;                 /* finishing the file in progress on SIGTERM: shorter than
                                               the master's stop timeout, after which it kills */
};
int smtpd_pickup_main(const struct smtpd_pickup_args *args);

/* The parameters the smtpd role binds or reads (config/bind.h): a
 * listener's plain values, what a service opens and compiles, the recipient
 * maps, the worker's own and the pickup role's. */
struct cfg_bind_table;
extern const struct cfg_bind_table smtpd_bind_table, smtpd_service_bind_table, smtpd_rcpt_maps_bind_table,
    smtpd_worker_bind_table, smtpd_pickup_bind_table, smtpd_cleanup_bind_table;
/* postscreen's parameters (psc_settings.c). */
extern const struct cfg_bind_table psc_bind_table;

#endif
