/*
 * Private to core/master: a configuration generation and its bound
 * listeners, shared by the supervisor (master.c), the loader (load.c) and
 * the listener code (listen.c).
 */
#ifndef PETREL_MASTER_MASTER_INT_H
#define PETREL_MASTER_MASTER_INT_H

#include "config/cfg.h"
#include "master/master.h"
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

/* load.c */
/* master.cf's pickup line, or NULL. */
const struct master_service *master_pickup_service(const struct cfg *cfg);
/* What master.cf asks for that will not happen (no qmgr, no pickup, chroot), said loudly. */
void master_warn_about_services(const struct cfg *cfg);

#endif
