/*
 * The role processes the master forks from its own binary: the smtpd
 * workers, the queue manager (with its privileged mailbox helper) and the
 * pickup role. A child starts clean (its own event loop, the master's
 * sockets closed), opens the queue while still privileged, then drops to
 * mail_owner and dies with the master (PR_SET_PDEATHSIG). A role that dies
 * is restarted, with a growing delay when it dies right after start; one
 * queue manager at a time, even across a reload. Moved from master.c,
 * which decides when (start, reload, stop).
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <stddef.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <event2/event.h>
#include <event2/listener.h>

#include "config/cfg.h"
#include "lib/log.h"
#include "master/master_int.h"
#include "module/metrics.h"
#include "module/metrics_core.h"
#include "queue/maildrop.h"
#include "queue/queue.h"
#include "smtpd/anvil.h"
#include "smtpd/smtpd.h"
#include "qmgr/qmgr.h"
#include "qmgr/mailbox_helper.h"

int master_worker_count(const struct cfg *cfg)
{
    long long n = cfg_int(cfg, "smtpd_workers");
    if (n <= 0)
        n = sysconf(_SC_NPROCESSORS_ONLN);
    if (n <= 0)
        n = 1;
    if (n > MAX_WORKERS / 2)
        n = MAX_WORKERS / 2;   /* leave room for a draining generation */
    return (int)n;
}

static void drop_privileges(struct master *m)
{
    if (!m->privileged)
        return;
    if (setgroups(0, NULL) != 0 || setgid(m->run_gid) != 0 || setuid(m->run_uid) != 0)
        msg_fatal("cannot drop privileges to uid %ld: %s", (long)m->run_uid, strerror(errno));
    if (setuid(0) == 0)
        msg_fatal("privileges could be regained after dropping them");
    /* The master's HOME (root's, when it was started from a shell) is not
     * this user's: libraries that look there, such as libpq for its
     * ~/.postgresql/ certificates (a directory it may not read is an error
     * there, failing every TLS connection), must ask the password database
     * instead, as in Postfix, whose daemons never import HOME. The child
     * has one thread here. */
    unsetenv("HOME");
}

/* The control connections the master has open (a petrelctl waiting for
 * its answer): a child's copy would keep each open after the master has
 * answered and closed it, so its client would see no end until the child
 * exits. Accepted UNIX sockets carry the listener's path as their own
 * address, which is how they are known here. */
static int control_connection(int fd, void *arg)
{
    const char *path = arg;
    struct sockaddr_un local;
    socklen_t len = sizeof(local);
    memset(&local, 0, sizeof(local));
    return getsockname(fd, (struct sockaddr *)&local, &len) == 0 && local.sun_family == AF_UNIX &&
           len > offsetof(struct sockaddr_un, sun_path) && strncmp(local.sun_path, path, sizeof(local.sun_path)) == 0;
}

static void close_master_fds(struct master *m)
{
    if (m->control)
        evconnlistener_free(m->control);   /* in the child: closes its copy */
    m->control = NULL;
    master_close_fds_matching(control_connection, m->control_path);
    if (m->modctl)
        modctl_close_in_child(m->modctl);
    master_http_close_in_child(m->http);   /* the metrics endpoint's sockets, not its connections */
    m->http = NULL;
    /* pid_fd stays open in the child on purpose: the flock on master.pid
     * belongs to the open file, shared by every process forked from the
     * master, so a new master cannot take it (and run its recovery scan)
     * while any worker of this one is still alive and writing the queue. */
}

/* In a child: the listening sockets it has no use for. Only smtpd workers
 * accept SMTP connections: a queue manager or pickup role that kept a copy
 * would keep a listener bound (its backlog filling, nobody serving it) after
 * a reload dropped it or a stop closed the workers', for as long as it runs.
 * Only the master accepts on a spawn service's socket. */
static void close_unused_listeners(const struct generation *g, enum role_kind kind)
{
    if (kind != KIND_SMTPD)
        for (int i = 0; i < g->nlisteners; i++)
            if (g->fds[i].fd >= 0)
                close(g->fds[i].fd);
    for (int i = 0; i < g->nspawns; i++)
        if (g->spawns[i].fd >= 0)
            close(g->spawns[i].fd);
}

int master_has_qmgr(const struct cfg *cfg)
{
    for (size_t i = 0; i < cfg_service_count(cfg); i++)
        if (cfg_service(cfg, i)->role == ROLE_QMGR)
            return 1;
    return 0;
}

enum role_kind master_role_kind(const struct worker_proc *w)
{
    return w->is_qmgr ? KIND_QMGR : w->is_pickup ? KIND_PICKUP : KIND_SMTPD;
}

static pid_t spawn_worker(struct master *m, int slot, enum role_kind kind)
{
    int is_qmgr = kind == KIND_QMGR;
    struct generation *g = m->gen;
    pid_t master_pid = getpid();
    int channel[2] = { -1, -1 };   /* module commands: smtpd workers only */
    if (kind == KIND_SMTPD && modctl_pair(channel) != 0)
        channel[0] = channel[1] = -1;
    pid_t pid = fork();
    if (pid < 0) {
        msg_warn("fork: %s", strerror(errno));
        if (channel[0] >= 0) {
            close(channel[0]);
            close(channel[1]);
        }
        return -1;
    }
    if (pid == 0) {
        if (channel[0] >= 0)
            close(channel[0]);
        /* The child must not run the master's loop: start clean. */
        /* The epoll set is shared with the parent until reinit: without it,
         * removing events here would remove them from the master too. Then
         * freeing the loop restores the signal dispositions it took over;
         * the worker builds its own loop. */
        event_reinit(m->base);
        close_master_fds(m);
        event_base_free(m->base);
        m->base = NULL;
        close_unused_listeners(g, kind);   /* after the loop that watched the spawn sockets is gone */
        signal(SIGTERM, SIG_DFL);
        signal(SIGHUP, SIG_DFL);
        signal(SIGCHLD, SIG_DFL);
        /* Open the queue while still privileged: the worker then works
         * through directory descriptors and needs no search permission on
         * the path above queue_directory. */
        char *error = NULL;
        struct queue *queue = queue_open(m->queue_dir, 0, &error);
        if (queue == NULL)
            msg_fatal("queue_directory %s: %s", m->queue_dir, error);
        int helper_fd = -1;
        if (is_qmgr && m->privileged) {
            /* Mailboxes are written as their owners: a helper keeps root for
             * that alone (qmgr/mailbox_helper.c); the queue manager does not. */
            int sv[2];
            if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) != 0)
                msg_fatal("socketpair: %s", strerror(errno));
            pid_t helper = fork();
            if (helper < 0)
                msg_fatal("fork: %s", strerror(errno));
            if (helper == 0) {
                close(sv[0]);
                _exit(mailbox_helper_main(sv[1], g->cfg, queue));
            }
            close(sv[1]);
            helper_fd = sv[0];
        }
        int maildrop_fd = -1;
        if (kind == KIND_PICKUP) {
            char path[4300];
            snprintf(path, sizeof(path), "%s/%s", m->queue_dir, MAILDROP_DIR);
            maildrop_fd = open(path, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
            if (maildrop_fd < 0)
                msg_fatal("%s: %s", path, strerror(errno));
        }
        drop_privileges(m);
        /* A worker must not outlive its master (kill -9, OOM killer):
         * orphans would go on writing the queue next to the next master.
         * Set after dropping privileges, which clears the setting; the
         * getppid() test closes the window where the master died first. */
        if (prctl(PR_SET_PDEATHSIG, SIGKILL) != 0)
            msg_fatal("prctl(PR_SET_PDEATHSIG): %s", strerror(errno));
        if (getppid() != master_pid)
            _exit(1);
        if (kind == KIND_PICKUP) {
            struct smtpd_pickup_args pa = { .cfg = g->cfg, .service = master_pickup_service(g->cfg), .queue = queue,
                                            .maildrop_fd = maildrop_fd, .modules = g->conf.modules,
                                            .metrics = m->metrics, .process_index = (unsigned)slot,
                                            .stop_grace_seconds = PICKUP_STOP_GRACE_SECONDS };
            _exit(smtpd_pickup_main(&pa));
        }
        if (is_qmgr) {
            struct qmgr_args qa = { .cfg = g->cfg, .queue = queue, .modules = g->conf.modules,
                                    .mailbox_helper_fd = helper_fd, .metrics = m->metrics,
                                    .process_index = (unsigned)slot };
            _exit(qmgr_main(&qa));
        }
        struct smtpd_worker_args args = {
            .cfg = g->cfg,
            .listeners = g->fds,
            .nlisteners = g->nlisteners,
            .anvil = m->anvil,
            .tickets = m->tickets,
            .metrics = m->metrics,
            .queue = queue,
            .modules = g->conf.modules,
            .worker_index = (unsigned)slot,
            .generation = g->number,
            .command_fd = channel[1],
        };
        _exit(smtpd_worker_main(&args));
    }
    if (channel[0] >= 0) {
        close(channel[1]);
        modctl_attach(m->modctl, slot, channel[0]);
    }
    struct worker_proc *w = &m->workers[slot];
    w->pid = pid;
    w->generation = g->number;
    w->started = time(NULL);
    w->draining = 0;
    w->is_qmgr = is_qmgr;
    w->is_pickup = kind == KIND_PICKUP;
    return pid;
}

static int free_slot(struct master *m)
{
    for (int i = 0; i < MAX_WORKERS; i++)
        if (m->workers[i].pid == 0 && (m->workers[i].restart_timer == NULL ||
                                        !evtimer_pending(m->workers[i].restart_timer, NULL)))
            return i;
    return -1;
}

struct worker_proc *master_running_qmgr(struct master *m)
{
    for (int i = 0; i < MAX_WORKERS; i++)
        if (m->workers[i].pid && m->workers[i].is_qmgr)
            return &m->workers[i];
    return NULL;
}

/* One queue manager at a time: a reload's new one starts when the old one has exited. */
static void start_qmgr(struct master *m)
{
    if (m->stopping || !master_has_qmgr(m->gen->cfg) || master_running_qmgr(m))
        return;
    for (int i = 0; i < MAX_WORKERS; i++)
        if (m->workers[i].pid == 0 && m->workers[i].is_qmgr && m->workers[i].restart_timer &&
            evtimer_pending(m->workers[i].restart_timer, NULL))
            return;   /* a crashed queue manager is waiting for its restart */
    int slot = free_slot(m);
    if (slot < 0) {
        msg_warn("no free slot for the queue manager");
        return;
    }
    m->workers[slot].backoff = 0;
    spawn_worker(m, slot, KIND_QMGR);
}

void master_start_workers(struct master *m)
{
    for (int i = 0; i < m->gen->nworkers; i++) {
        int slot = free_slot(m);
        if (slot < 0) {
            msg_warn("no free worker slot: too many draining workers");
            return;
        }
        m->workers[slot].backoff = 0;
        spawn_worker(m, slot, KIND_SMTPD);
    }
    start_qmgr(m);
    if (master_pickup_service(m->gen->cfg)) {
        /* A reload's new pickup may overlap the old one finishing its file:
         * each file is claimed with flock(2), so none is submitted twice. */
        int slot = free_slot(m);
        if (slot < 0) {
            msg_warn("no free slot for the pickup role");
            return;
        }
        m->workers[slot].backoff = 0;
        spawn_worker(m, slot, KIND_PICKUP);
    }
}

int master_live_workers(const struct master *m)
{
    int n = 0;
    for (int i = 0; i < MAX_WORKERS; i++)
        if (m->workers[i].pid)
            n++;
    return n;
}

static void restart_worker(evutil_socket_t fd, short what, void *arg);

static void on_child_exit(struct master *m, pid_t pid, int status)
{
    if (master_spawn_reaped(m, pid, status))
        return;   /* a spawn(8) service's command, not a role */
    for (int i = 0; i < MAX_WORKERS; i++) {
        struct worker_proc *w = &m->workers[i];
        if (w->pid != pid)
            continue;
        w->pid = 0;
        modctl_worker_gone(m->modctl, i);
        anvil_reset_worker(m->anvil, (unsigned)i);
        module_metrics_forget_process(m->metrics, (unsigned)i);
        int clean = WIFEXITED(status) && WEXITSTATUS(status) == 0;
        if (m->stopping || w->draining || w->generation != m->gen->number) {
            if (!clean)
                msg_warn("process %s pid %ld exit status %d", m->binary, (long)pid,
                         WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status));
            w->is_pickup = 0;
            if (w->is_qmgr) {
                w->is_qmgr = 0;
                start_qmgr(m);   /* the reload's queue manager takes over */
            }
            break;
        }
        const char *role[] = { w->is_qmgr ? "qmgr" : w->is_pickup ? "pickup" : "smtpd" };
        core_metric_add(m->metrics, CM_PROCESS_RESTARTS, role, 1);
        if (WIFSIGNALED(status))
            msg_warn("process %s pid %ld killed by signal %d", m->binary, (long)pid, WTERMSIG(status));
        else
            msg_warn("process %s pid %ld exit status %d", m->binary, (long)pid, WEXITSTATUS(status));
        /* A role that dies right after start would spin: back off. */
        time_t lived = time(NULL) - w->started;
        if (lived < 10) {
            w->backoff = w->backoff ? w->backoff * 2 : 1;
            if (w->backoff > 60)
                w->backoff = 60;
            msg_warn("%s: bad command startup -- throttling for %u seconds", m->binary, w->backoff);
        } else {
            w->backoff = 0;
        }
        if (w->restart_timer == NULL)
            w->restart_timer = evtimer_new(m->base, restart_worker, m);
        struct timeval tv = { w->backoff, 0 };
        evtimer_add(w->restart_timer, &tv);
        break;
    }
    if (m->stopping && master_live_workers(m) == 0)
        event_base_loopexit(m->base, NULL);
}

static void restart_worker(evutil_socket_t fd, short what, void *arg)
{
    struct master *m = arg;
    if (m->stopping)
        return;
    /* Find the slots whose timer fired (not pending, no process). */
    for (int i = 0; i < MAX_WORKERS; i++) {
        struct worker_proc *w = &m->workers[i];
        if (w->pid == 0 && w->restart_timer && !evtimer_pending(w->restart_timer, NULL) &&
            w->generation == m->gen->number && !w->draining) {
            spawn_worker(m, i, master_role_kind(w));
        }
    }
}

void master_on_sigchld(evutil_socket_t sig, short what, void *arg)
{
    struct master *m = arg;
    int status;
    pid_t pid;
    while ((pid = waitpid(-1, &status, WNOHANG)) > 0)
        on_child_exit(m, pid, status);
}
