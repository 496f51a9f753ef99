/*
 * Private to core/master: a configuration generation and its bound
 * listeners, shared by the supervisor (master.c), the loader (load.c) and
 * the listener code (listen.c).
 */
#ifndef PETREL_MASTER_MASTER_INT_H
#define PETREL_MASTER_MASTER_INT_H

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

struct generation {
    struct loaded_config conf;
    struct cfg *cfg;                     /* conf.cfg */
    unsigned number;
    struct bound_listener listeners[MAX_LISTENERS];
    int nlisteners;
    struct smtpd_listen_fd fds[MAX_LISTENERS];
    int nworkers;
};

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

/* load.c */
/* master.cf's pickup line, or NULL. */
const struct master_service *master_pickup_service(const struct cfg *cfg);
/* What master.cf asks for that will not happen (no qmgr, no pickup, chroot), said loudly. */
void master_warn_about_services(const struct cfg *cfg);

#endif
