/*
 * Private to core/master: a configuration generation and its bound
 * listeners, shared by the supervisor (master.c), the loader (load.c) and
 * the listener code (listen.c); the master's own state, shared by the
 * supervisor, the role processes it forks (spawn.c) and its start-up
 * (startup.c); the metrics endpoint (http.c) and the figures the master
 * reads for it (figures.c).
 */
#ifndef PETREL_MASTER_MASTER_INT_H
#define PETREL_MASTER_MASTER_INT_H

#include <sys/types.h>
#include <time.h>

#include <event2/util.h>

#include "config/cfg.h"
#include "master/master.h"
#include "smtpd/anvil.h"
#include "smtpd/smtpd.h"

#define MAX_LISTENERS 64
#define LISTEN_BACKLOG 4096

struct bound_listener {
    char key[128];                       /* "inet:127.0.0.1:2525" — identity across reloads */
    int fd;
    const struct master_service *service;
};

/* A master.cf spawn(8) service's socket (spawn_service.c). */
#define MAX_SPAWN_SERVICES 32
struct master;
struct spawn_listener {
    char key[128 + 4096];                /* "unix:PATH" or "inet:host:port" — identity across reloads */
    int fd;                              /* -1 once taken over by the next generation */
    int bound_here;                      /* bound by this generation (not taken over) */
    const struct master_service *service;
    struct master *m;
    struct event *ev;                    /* readable: accept and fork */
    int paused;                          /* at maxproc: not accepting */
    char **argv;                         /* the command (argv= and what follows) */
    char user[256];
    uid_t uid;
    gid_t gid;
    unsigned time_limit;                 /* seconds */
};

struct generation {
    struct loaded_config conf;
    struct cfg *cfg;                     /* conf.cfg */
    unsigned number;
    struct bound_listener listeners[MAX_LISTENERS];
    int nlisteners;
    struct smtpd_listen_fd fds[MAX_LISTENERS];
    int nworkers;
    struct spawn_listener spawns[MAX_SPAWN_SERVICES];
    int nspawns;
};

/* The master's state (master.c, spawn.c, startup.c). */
#define MAX_WORKERS ANVIL_MAX_WORKERS
#define STOP_TIMEOUT_SECONDS 10   /* workers answer 421 at once; this bounds a stuck one */
/* The pickup role finishes the file it is submitting when told to stop,
 * within this, and gives up (the file stays in maildrop/) before the
 * master's kill. A kill is harmless too (doc/queue-format.md, Maildrop
 * origin); stopping by itself just keeps the log quiet. */
#define PICKUP_STOP_GRACE_SECONDS (STOP_TIMEOUT_SECONDS - 3)
_Static_assert(PICKUP_STOP_GRACE_SECONDS > 0 && PICKUP_STOP_GRACE_SECONDS < STOP_TIMEOUT_SECONDS,
               "the pickup role's grace must end before the master kills it");

struct worker_proc {
    pid_t pid;                           /* 0 = free slot */
    unsigned generation;
    time_t started;
    unsigned backoff;                    /* seconds before the next restart */
    int draining;
    int is_qmgr;                         /* the queue manager, else an smtpd worker */
    int is_pickup;                       /* the pickup role (maildrop/), else an smtpd worker */
    struct event *restart_timer;
};

struct master {
    const struct master_options *opts;
    struct generation *gen;
    struct event_base *base;
    struct anvil *anvil;
    struct tls_ticket_keys *tickets;   /* shared TLS session ticket keys (tls/tls_ticket.c) */
    struct event *ticket_timer;        /* rotates them every smtpd_tls_session_cache_timeout */
    struct module_metrics *metrics;      /* shared by every role process, kept across reloads */
    struct worker_proc workers[MAX_WORKERS];
    uid_t run_uid;
    gid_t run_gid;
    gid_t setgid_gid;                    /* setgid_group: petrel-postdrop's and maildrop/'s group */
    int privileged;
    int stopping;
    char queue_dir[4096];
    char pid_path[4200];
    char control_path[4200];
    int pid_fd;
    struct evconnlistener *control;
    struct modctl *modctl;               /* channels to the smtpd workers for module commands (modctl.c) */
    struct master_http *http;            /* metrics_listen, or NULL */
    struct master_stats *stats;          /* petrelctl stats: samples for the rates */
    struct event *stats_timer;
    time_t started;
    struct event *stop_timer;
    char binary[4096];
    struct spawn_child *spawn_children; /* commands of spawn services that run (spawn_service.c) */
};

/* spawn.c: the role processes (smtpd workers, the queue manager, pickup):
 * forking them, restarting one that dies, reaping them. */
/* smtpd_workers, or one per core, leaving room for a draining generation. */
int master_worker_count(const struct cfg *cfg);
/* Whether master.cf has a qmgr line. */
int master_has_qmgr(const struct cfg *cfg);
/* Forks the processes m->gen asks for. */
void master_start_workers(struct master *m);
int master_live_workers(const struct master *m);
enum role_kind { KIND_SMTPD, KIND_QMGR, KIND_PICKUP };
enum role_kind master_role_kind(const struct worker_proc *w);
/* The queue manager that runs (at most one), or NULL. */
struct worker_proc *master_running_qmgr(struct master *m);
/* SIGCHLD: reaps and restarts (with a growing delay after a quick death). */
void master_on_sigchld(evutil_socket_t sig, short what, void *arg);

/* child_fds.c: in a child just forked from the master, closes each
 * descriptor the process has open (as /proc/self/fd lists them) for which
 * match says 1. The master's sockets that a child must not hold are found
 * this way, by what they are (getsockname), since libevent's objects do
 * not say. */
void master_close_fds_matching(int (*match)(int fd, void *arg), void *arg);

/* startup.c: the queue tree, the pid file, privileges and the background. */
int master_resolve_owner(struct master *m, const struct cfg *cfg);
int master_make_queue_dir(struct master *m, const struct cfg *cfg);
int master_lock_pid_file(struct master *m);
/* Creates what the roles need in the queue and runs the recovery scan. */
int master_prepare_queue(struct master *m, const struct cfg *cfg);
void master_prepare_data_directory(struct master *m, const struct cfg *cfg);
void master_write_pid(struct master *m);
int master_daemonize(void);

/* listen.c: binds every smtpd listener of gen's master.cf, taking over the
 * sockets of old (the running generation, or NULL) whose addresses stay;
 * 0, or -1 after logging (nothing of gen stays bound). */
int master_bind_listeners(struct generation *gen, struct generation *old);

/* modctl.c: the channels to the smtpd workers that run module control
 * commands (petrelctl MODULE COMMAND), one per worker slot. */
#define MODCTL_MAX_SLOTS ANVIL_MAX_WORKERS
struct event_base;
struct bufferevent;
struct modctl;
/* How an answer goes back to petrelctl (the control socket's framing). */
typedef void modctl_reply_fn(struct bufferevent *client, int status, const char *text);
struct modctl *modctl_new(struct event_base *base, modctl_reply_fn *reply);
void modctl_free(struct modctl *mc);
/* In a forked child: closes its copies of the master's ends. */
void modctl_close_in_child(struct modctl *mc);
/* A new channel's two ends (close-on-exec); 0, or -1 logged. */
int modctl_pair(int fds[2]);
/* The master's end of slot's new worker. */
void modctl_attach(struct modctl *mc, int slot, int fd);
/* slot's worker exited: its requests fail now. */
void modctl_worker_gone(struct modctl *mc, int slot);
int modctl_has_channel(const struct modctl *mc, int slot);
/* Sends argv (command, args) for module to slot's worker; the answer (or a
 * failure after timeout_ms and a margin) goes to client through the reply
 * function, which then owns client. */
void modctl_send(struct modctl *mc, int slot, struct bufferevent *client, unsigned timeout_ms, const char *module,
                 int argc, const char *const *argv);

/* spawn_service.c: master.cf spawn(8) services, run by the master itself. */
struct spawn_child;
/* user=, argv= and the socket's form of one spawn line; 0, or -1 with *error. */
int master_spawn_check(const struct master_service *svc, char **error);
/* Binds gen's spawn sockets, taking over old's with the same key; 0, or -1 logged. */
int master_bind_spawn_services(struct master *m, struct generation *gen, struct generation *old);
/* Starts accepting on m->gen's spawn sockets (after m->gen is set). */
void master_start_spawn_services(struct master *m);
/* Closes g's spawn sockets that were not taken over (removing unix ones). */
void master_spawn_generation_free(struct generation *g);
/* SIGCHLD: 1 when pid was a spawned command (logged, counted off), else 0. */
int master_spawn_reaped(struct master *m, pid_t pid, int status);
/* Stops accepting and sends sig to every command's process group. */
void master_spawn_stop(struct master *m, int sig);
/* Frees the records of the commands (at exit, after they were reaped). */
void master_spawn_forget(struct master *m);

/* load.c */
/* master.cf's pickup line, or NULL. */
const struct master_service *master_pickup_service(const struct cfg *cfg);
/* What master.cf asks for that will not happen (no qmgr, no pickup, chroot), said loudly. */
void master_warn_about_services(const struct cfg *cfg);

/* http.c: the metrics endpoint (metrics_listen, metrics_allow). */
struct buf;
struct event_base;
struct master_http;
struct master_http_source {
    void (*metrics)(void *arg, struct buf *out, int openmetrics);   /* the text format, or OpenMetrics 1.0 */
    int (*health)(void *arg, struct buf *why);     /* 0 healthy, else -1 with one line per reason */
    void (*status)(void *arg, struct buf *html);   /* the /status page */
    void *arg;
};
/* Checks both parameters; 0, or -1 with error (naming the parameter). */
int master_http_check(const struct cfg *cfg, char *error, size_t esize);
/* Serves what cfg says: starts, moves, keeps (taking the new metrics_allow)
   or stops *current. 0, or -1 with error and *current unchanged. */
int master_http_update(struct master_http **current, struct event_base *base, const struct cfg *cfg,
                       const struct master_http_source *source, char *error, size_t esize);
void master_http_stop(struct master_http *h);
/* In a child just forked from the master: closes its copies of the
 * endpoint's sockets (listening and accepted) without touching the
 * connections, which stay the master's. */
void master_http_close_in_child(struct master_http *h);

/* figures.c: what the master reads from the queue directory when asked. */
struct master_queue_figures {
    const char *name;          /* "incoming", "active", "deferred", "hold", "corrupt", "maildrop" */
    long messages;
    double oldest_age;         /* seconds since the oldest one arrived (0: empty) */
};
#define MASTER_QUEUES 6
void master_queue_figures(const char *queue_dir, struct master_queue_figures out[MASTER_QUEUES]);
/* 0 when the queue's directories can be written by the roles (uid and gid
   when privileged, else this process); -1 with one line per problem. */
int master_queue_writable(const char *queue_dir, int privileged, unsigned uid, unsigned gid, struct buf *why);

/* stats.c: petrelctl stats (the control socket's "stats" and "stats-json"). */
struct module_metrics;
struct master_snapshot {
    long long started;         /* the master's start (Unix time) */
    unsigned generation;
    int smtpd, smtpd_expected, qmgr, qmgr_expected, pickup, pickup_expected, draining;
    struct master_queue_figures queue[MASTER_QUEUES];
    const char *health;        /* /status: what /healthz says is wrong, or NULL */
};
struct master_stats;
enum master_stats_format { MASTER_STATS_TEXT, MASTER_STATS_JSON, MASTER_STATS_HTML };
#define MASTER_STATUS_REFRESH_SECONDS 5
struct master_stats *master_stats_new(void);
void master_stats_free(struct master_stats *st);
/* Records the totals now (the master's timer, every few seconds), for the rates. */
void master_stats_sample(struct master_stats *st, struct module_metrics *mm, double now);
void master_stats_render(const struct master_stats *st, struct module_metrics *mm, const struct master_snapshot *snap,
                         double now, enum master_stats_format format, struct buf *out);
#define MASTER_STATS_SAMPLE_SECONDS 5

/* stats_board.c: the queue manager's busiest destinations (qmgr/board.c)
 * as a section of petrelctl stats (text), a JSON array, or an HTML table. */
void master_board_render(struct module_metrics *mm, enum master_stats_format format, struct buf *out);

#endif
