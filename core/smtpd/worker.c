/*
 * An smtpd worker process: one libevent loop serving every SMTP listener
 * the master handed over, plus a small thread pool for fsync.
 *
 * Accepting: every worker watches every listening socket. A service with a
 * maxproc limit takes a session slot in the shared table (anvil.c) before
 * each accept(); when the service is full the worker stops watching that
 * socket, so new clients wait in the kernel's listen backlog, as they do
 * when Postfix's master stops accepting at a service's process limit. The
 * worker that ends a session of the service wakes the waiting workers
 * through the table's eventfds and they accept again. Only a client over
 * its own per-client limit is turned away (421, session.c).
 *
 * Stress: taking the last slot of a public service (inet, maxproc > 1, not
 * loopback-only: Postfix's rule) starts a stress period. New sessions then
 * use the listener's stress settings (main.cf and -o evaluated with
 * stress=yes, so ${stress?{10}:{300}} picks 10), and every worker switches
 * its sessions of that service that are waiting for their client to the
 * stress settings too, re-arming their timeouts: idle clients cannot hold
 * the slots for smtpd_timeout's normal 300 s.
 *
 * Signals: SIGTERM stops: listeners close and every session is answered
 * 421 at once (a DATA in progress is abandoned and its file removed), except
 * a message whose commit is under way: it finishes, is answered, then gets
 * 421; a short deadline covers clients that do not read. SIGUSR1 drains
 * (stop accepting, let established sessions end on their own: used when a
 * reload replaces this worker). SIGHUP is ignored: the master reloads by
 * replacing workers.
 */
#include "config.h"

#include <errno.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <event2/bufferevent.h>
#include <event2/event.h>

#include "config/bind.h"
#include "config/cfg.h"
#include "lib/dns.h"
#include "lib/hosts_file.h"
#include "lib/log.h"
#include "lib/workq.h"
#include "lib/xalloc.h"
#include "smtpd/anvil.h"
#include "smtpd/content_int.h"
#include "smtpd/psc.h"
#include "smtpd/smtpd.h"
#include "smtpd/smtpd_int.h"
#include "tables/table.h"
#include "module/metrics_core.h"
#include "module/module.h"
#include "mail/rewrite.h"
#include "module/runtime.h"

/* After SIGTERM every session is told at once; this only bounds clients
 * that do not take their 421 and commits stuck on a slow disk. */
#define SHUTDOWN_GRACE_SECONDS 5
#define ACCEPT_BATCH 16                  /* accepts per wake-up, so one listener cannot starve the loop */
#define ACCEPT_RETRY_MSEC 100            /* pause after EMFILE/ENFILE */
#define SMTPD_COMMIT_THREADS 16          /* queue commits (fsyncs) in flight per worker: see below */

static void listener_pause(struct smtpd_listener *l)
{
    if (l->ev && !l->paused) {
        event_del(l->ev);
        l->paused = 1;
    }
}

static void listener_resume(struct smtpd_listener *l)
{
    if (l->ev && l->paused && !l->worker->draining) {
        l->paused = 0;
        event_add(l->ev, NULL);
    }
}

static void accept_retry(evutil_socket_t fd, short what, void *arg)
{
    listener_resume(arg);
}

static void on_listener_readable(evutil_socket_t fd, short what, void *arg)
{
    struct smtpd_listener *l = arg;
    struct smtpd_worker *w = l->worker;
    for (int n = 0; n < ACCEPT_BATCH && !w->draining; n++) {
        if (l->screen) {
            /* postscreen takes every client; the smtpd service's slot is
             * taken when a client passes (postscreen.c). */
            int cfd = accept4(l->fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
            if (cfd < 0) {
                int err = errno;
                if (err == EAGAIN || err == EWOULDBLOCK)
                    return;
                if (err == EINTR || err == ECONNABORTED || err == EPROTO)
                    continue;
                msg_warn("accept: service %s: %s", l->screen->service_name, strerror(err));
                if (err == EMFILE || err == ENFILE || err == ENOBUFS || err == ENOMEM) {
                    listener_pause(l);
                    struct timeval tv = { 0, ACCEPT_RETRY_MSEC * 1000 };
                    evtimer_add(l->retry_timer, &tv);
                }
                return;
            }
            psc_accept(l, cfd);
            continue;
        }
        int maxproc = l->settings->maxproc;
        int counted = 0;
        struct anvil_take take;
        memset(&take, 0, sizeof(take));
        if (maxproc > 0) {
            /* The slot is taken before accept(): two workers can never both
             * take the last one. */
            enum anvil_take_status st = anvil_service_take(w->anvil, w->index, l->service_key, (unsigned)maxproc,
                                                           l->stress_eligible, time(NULL), &take);
            if (st == ANVIL_FULL) {
                /* Clients wait in the backlog; a session's end wakes us. */
                smtpd_limit_reached(l, &take);
                listener_pause(l);
                return;
            }
            if (st == ANVIL_UNCOUNTED)
                msg_warn("connection accounting table full: not limiting service %s", l->settings->service_name);
            counted = st == ANVIL_TAKEN;
        }
        struct sockaddr_storage ss;
        socklen_t len = sizeof(ss);
        int cfd = accept4(l->fd, (struct sockaddr *)&ss, &len, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (cfd < 0) {
            int err = errno;
            if (counted)
                anvil_service_release(w->anvil, w->index, l->service_key);
            if (err == EAGAIN || err == EWOULDBLOCK)
                return;   /* another worker took it */
            if (err == EINTR || err == ECONNABORTED || err == EPROTO)
                continue;
            msg_warn("accept: service %s: %s", l->settings->service_name, strerror(err));
            if (err == EMFILE || err == ENFILE || err == ENOBUFS || err == ENOMEM) {
                /* Out of descriptors: pause rather than spin on a readable socket. */
                listener_pause(l);
                struct timeval tv = { 0, ACCEPT_RETRY_MSEC * 1000 };
                evtimer_add(l->retry_timer, &tv);
            }
            return;
        }
        if (counted && take.sessions >= (unsigned)maxproc) {
            anvil_service_limit_reached(w->anvil, l->service_key, l->stress_eligible, time(NULL), &take);
            smtpd_limit_reached(l, &take);
        }
        const struct smtpd_settings *set = take.stressed ? l->stress_settings : l->settings;
        smtpd_accept(l, set, cfd, (struct sockaddr *)&ss, (int)len, counted);
    }
}

/* The shared table woke us: a session slot freed somewhere, or a stress
 * period began. */
static void on_wake(evutil_socket_t fd, short what, void *arg)
{
    struct smtpd_worker *w = arg;
    uint64_t count;
    (void)!read(fd, &count, sizeof(count));
    /* A draining worker (a reload replaces it) still listens: the screened
     * clients it holds waiting for an smtpd session slot get their turn
     * when one frees, and its idle sessions still switch to stress. */
    time_t now = time(NULL);
    for (int i = 0; i < w->nlisteners; i++) {
        struct smtpd_listener *l = &w->listeners[i];
        unsigned epoch;
        if (l->stress_eligible && anvil_service_stressed(w->anvil, l->service_key, now, &epoch))
            smtpd_apply_stress(w, l->service_key, epoch);
        /* A paused listener tries again: its service has room now, or the
         * next accept finds it full and waits once more (not when draining:
         * listener_resume knows). */
        listener_resume(l);
    }
    /* Screened clients waiting for an smtpd session slot try again too. */
    psc_retry_waiting(w);
}

static void stop_listening(struct smtpd_worker *w)
{
    for (int i = 0; i < w->nlisteners; i++) {
        struct smtpd_listener *l = &w->listeners[i];
        if (l->ev) {
            event_free(l->ev);
            l->ev = NULL;
            close(l->fd);   /* our copy: the master and the other workers keep theirs */
            l->fd = -1;
        }
        if (l->retry_timer) {
            event_free(l->retry_timer);
            l->retry_timer = NULL;
        }
    }
}

static void deadline(evutil_socket_t fd, short what, void *arg)
{
    struct smtpd_worker *w = arg;
    msg_warn("shutdown deadline: closing %u remaining sessions", w->nsessions);
    event_base_loopbreak(w->base);
}

static void begin_drain(struct smtpd_worker *w, int stopping)
{
    stop_listening(w);
    w->draining = 1;
    if (stopping && !w->stopping) {
        w->stopping = 1;
        psc_stop_all(w);
        struct smtpd_session *s = w->sessions, *next;
        for (; s; s = next) {
            next = s->next;
            smtpd_session_stop(s);
        }
        struct timeval tv = { SHUTDOWN_GRACE_SECONDS, 0 };
        w->drain_timer = evtimer_new(w->base, deadline, w);
        evtimer_add(w->drain_timer, &tv);
    }
    smtpd_worker_check_drained(w);
}

static void on_sigterm(evutil_socket_t sig, short what, void *arg)
{
    begin_drain(arg, 1);
}

static void on_sigdrain(evutil_socket_t sig, short what, void *arg)
{
    begin_drain(arg, 0);
}

static void on_sighup(evutil_socket_t sig, short what, void *arg)
{
    /* Reload is the master's business: it replaces this worker. */
}

/* Postfix's MASTER_FLAG_LOCAL_ONLY: every socket of the service is a UNIX
 * socket or a loopback address. Such services (content filters' return
 * paths, local submission) never go into stress mode. */
static int socket_is_local(int fd)
{
    struct sockaddr_storage ss;
    socklen_t len = sizeof(ss);
    if (getsockname(fd, (struct sockaddr *)&ss, &len) != 0)
        return 0;
    if (ss.ss_family == AF_UNIX)
        return 1;
    if (ss.ss_family == AF_INET)
        return (ntohl(((struct sockaddr_in *)&ss)->sin_addr.s_addr) >> 24) == 127;
    if (ss.ss_family == AF_INET6) {
        const struct in6_addr *a = &((struct sockaddr_in6 *)&ss)->sin6_addr;
        if (IN6_IS_ADDR_V4MAPPED(a))
            return a->s6_addr[12] == 127;
        return IN6_IS_ADDR_LOOPBACK(a);
    }
    return 0;
}

static int service_is_local(const struct smtpd_worker_args *args, const struct master_service *svc)
{
    for (int i = 0; i < args->nlisteners; i++)
        if (args->listeners[i].service == svc && !socket_is_local(args->listeners[i].fd))
            return 0;
    return 1;
}

static const struct cfg_bind worker_binds[] = {
    CFG_BIND("queue_minfree", LONG, struct smtpd_worker, queue_minfree),
    CFG_BIND("dns_resolver", STR, struct smtpd_worker, dns_resolver),
    CFG_BIND("module_thread_limit", UINT, struct smtpd_worker, module_threads),
};
const struct cfg_bind_table smtpd_worker_bind_table = CFG_BIND_TABLE("smtpd worker", worker_binds);

void smtpd_worker_init(struct smtpd_worker *w, const struct cfg *cfg, struct queue *queue,
                       struct module_set *modules, struct anvil *anvil, unsigned index,
                       struct module_metrics *metrics, unsigned process_index)
{
    memset(w, 0, sizeof(*w));
    signal(SIGPIPE, SIG_IGN);
    w->base = event_base_new();
    if (w->base == NULL)
        msg_fatal("event_base_new failed");
    w->pool = petrel_pool_create(8192);
    w->cfg = cfg;
    w->anvil = anvil;
    w->index = index;
    cfg_bind_apply(cfg, &smtpd_worker_bind_table, w);
    w->space_ok = 1;
    w->tables = tbl_registry_new();
    char *error = NULL;
    w->queue = queue;
    w->pid = (unsigned)getpid();
    queue_id_gen_init(&w->idgen, w->pid);
    /* fsync waits on the disk, not the CPU. The file system folds the
     * fsyncs in flight at once into one journal commit, so the pool's size
     * is the width of that group commit: with 4 threads, 10 sessions per
     * worker at once (conc 20 on 2 CPUs) waited about 3 ms (idle machine)
     * to 9 ms (busy disk) for a thread before their own fdatasync began.
     * An idle thread costs only its stack.
     * Modules' blocking work has threads of its own (the module runtime's),
     * so a commit never waits behind a module. */
    w->workq = workq_create(w->base, SMTPD_COMMIT_THREADS);
    w->modules = modules;
    w->metrics = metrics;
    w->dns = dns_resolver_create(w->base, w->dns_resolver, &error);
    if (w->dns == NULL)
        msg_fatal("%s", error);
    w->peer_dns = w->dns;   /* smtpd_peer_hosts_open may say otherwise */
    core_metrics_watch_dns(metrics, w->dns);
    core_metrics_watch_tables(metrics, w->tables);
    struct module_runtime_args rt = { .set = w->modules, .role = MODULE_ROLE_SMTPD,
                                      .base = w->base, .threads = w->module_threads, .dns = w->dns, .metrics = metrics,
                                      .process_index = process_index };
    /* Table types first: a module's init may open tables (petrel_table_open). */
    if (module_set_register_tables(w->modules, w->tables) != 0)
        msg_fatal("cannot start: a module's table type clashes with another");
    if (module_runtime_start(&rt) != 0)
        msg_fatal("cannot start: a module failed to initialise");
    /* Header rewriting: the canonical maps and masquerading the queue
     * manager applies to the envelope (mail/rewrite.h). */
    w->rewrite = xcalloc(1, sizeof(*w->rewrite));
    if (mail_rewrite_open(w->rewrite, cfg, w->tables, 1, &error) != 0)
        msg_fatal("%s", error);
}

void smtpd_worker_fini(struct smtpd_worker *w)
{
    /* Commits still running must finish before we go: a message whose
     * fsync completes here is kept even if its client never hears 250. */
    workq_destroy(w->workq);
    module_runtime_stop();
}

/* A postscreen service's settings, made once per worker and shared by all
 * its sockets. */
static struct psc_settings *screen_settings(struct smtpd_worker *w, const struct master_service *svc)
{
    for (int i = 0; i < w->nlisteners; i++)
        if (w->listeners[i].screen && w->listeners[i].screen->cfg == svc->cfg &&
            strcmp(w->listeners[i].screen->service_name, svc->name) == 0)
            return w->listeners[i].screen;
    char *error = NULL;
    struct psc_settings *ps = psc_settings_create(w, svc, &error);
    if (ps == NULL)
        msg_fatal("%s", error);
    return ps;
}

/* LMDB allows one handle per file and process: listeners naming the same
 * postscreen_cache_map share it. A cache that cannot be opened is not
 * fatal: postscreen then screens without one (every client is new), as
 * Postfix's does when the map is empty, and says so. */
static struct psc_cache *open_screen_cache(struct smtpd_worker *w, const struct psc_settings *ps)
{
    if (ps->cache_path == NULL)
        return NULL;
    for (size_t i = 0; i < w->npsc_caches; i++)
        if (strcmp(psc_cache_path(w->psc_caches[i]), ps->cache_path) == 0)
            return w->psc_caches[i];
    char *error = NULL;
    struct psc_cache *c = psc_cache_open(ps->cache_path, &error);
    if (c == NULL) {
        msg_warn("postscreen_cache_map %s: %s: postscreen runs without its temporary allowlist", ps->cache_map,
                 error);
        free(error);
        return NULL;
    }
    w->psc_caches = xrealloc(w->psc_caches, (w->npsc_caches + 1) * sizeof(*w->psc_caches));
    w->psc_caches[w->npsc_caches++] = c;
    return c;
}

static void on_cache_cleanup(evutil_socket_t fd, short what, void *arg)
{
    struct smtpd_worker *w = arg;
    for (int i = 0; i < w->nlisteners; i++) {
        struct smtpd_listener *l = &w->listeners[i];
        if (l->psc_cache == NULL || l->screen->cache_cleanup_interval <= 0)
            continue;
        int first = 1;
        for (int k = 0; k < i; k++)
            if (w->listeners[k].psc_cache == l->psc_cache)
                first = 0;
        if (first)
            psc_cache_cleanup(w, l->psc_cache, l->screen->cache_cleanup_interval, l->screen->cache_retention,
                              psc_cache_keep, l->screen);
    }
}

/* Each worker looks now and then whether a cleanup is due; the table
 * itself records when the last one ran, so only one worker does it. */
static void start_cache_cleanup(struct smtpd_worker *w)
{
    long long shortest = 0;
    for (int i = 0; i < w->nlisteners; i++) {
        const struct smtpd_listener *l = &w->listeners[i];
        if (l->psc_cache && l->screen->cache_cleanup_interval > 0 &&
            (shortest == 0 || l->screen->cache_cleanup_interval < shortest))
            shortest = l->screen->cache_cleanup_interval;
    }
    if (shortest == 0)
        return;
    /* Look a few times per interval (and at once), so a cleanup is at most a
     * fraction of the interval late whichever worker does it. */
    long long every = shortest / 4 > 0 ? shortest / 4 : 1;
    if (every > 3600)
        every = 3600;
    struct timeval tv = { (time_t)every, 0 };
    w->psc_cleanup_timer = event_new(w->base, -1, EV_PERSIST, on_cache_cleanup, w);
    event_add(w->psc_cleanup_timer, &tv);
    event_active(w->psc_cleanup_timer, EV_TIMEOUT, 0);
}

int smtpd_worker_main(const struct smtpd_worker_args *args)
{
    struct smtpd_worker w;
    log_set_role("smtpd");
    smtpd_worker_init(&w, args->cfg, args->queue, args->modules, args->anvil, args->worker_index, args->metrics,
                      args->worker_index);
    w.tickets = args->tickets;
    char *error = NULL;

    w.nlisteners = args->nlisteners;
    w.listeners = xcalloc((size_t)args->nlisteners, sizeof(*w.listeners));
    for (int i = 0; i < args->nlisteners; i++) {
        struct smtpd_listener *l = &w.listeners[i];
        const struct master_service *svc = args->listeners[i].service;
        l->worker = &w;
        l->fd = args->listeners[i].fd;
        if (svc->role == ROLE_POSTSCREEN) {
            /* Sessions of a postscreen socket use the pass service's
             * settings, slots and stress once their client has passed. */
            l->screen = screen_settings(&w, svc);
            l->screen_key = petrel_pool_printf(w.pool, "postscreen:%s", svc->name);
            l->post_key = petrel_pool_printf(w.pool, "postscreen-post:%s", svc->name);
            const struct master_service *screened = svc;
            svc = psc_pass_service(svc);
            if (svc == NULL)
                msg_fatal("%s, line %d: service %s: no pass service \"%s\" to hand clients to", screened->file,
                          screened->line, screened->name, l->screen->pass_service);
            l->stress_eligible = svc->maxproc > 1 && !socket_is_local(l->fd);
        }
        l->settings = smtpd_settings_create(&w, svc, svc->cfg, NULL, &error);
        if (l->settings == NULL)
            msg_fatal("%s", error);   /* located: main.cf or master.cf line */
        l->stress_settings = l->settings;
        if (svc->stress_cfg && svc->stress_cfg != svc->cfg) {
            l->stress_settings = smtpd_settings_create(&w, svc, svc->stress_cfg, l->settings, &error);
            if (l->stress_settings == NULL)
                msg_fatal("%s (with stress=yes)", error);
        }
        l->service_key = petrel_pool_printf(w.pool, "service:%s", svc->name);
        /* The service's series exist from the start (at 0), so a rate or an
           alert on "no mail" has something to look at before the first message. */
        const char *metric_service[] = { l->settings->service_name };
        for (enum core_metric c = CM_SMTPD_CONNECTIONS; c <= CM_SMTPD_RECIPIENTS; c++)
            if (c != CM_SMTPD_REJECTS && c != CM_SMTPD_REPLIES)
                core_metric_add(w.metrics, c, metric_service, 0);
        const char *plain_sessions[] = { l->settings->service_name, "no" };
        core_metric_add(w.metrics, CM_SMTPD_SESSIONS, plain_sessions, 0);
        if (l->settings->tls_ctx) {
            const char *tls_sessions[] = { l->settings->service_name, "yes" };
            core_metric_add(w.metrics, CM_SMTPD_SESSIONS, tls_sessions, 0);
            /* "ok" series appear with their protocol version's first handshake. */
            const char *failed[] = { l->settings->service_name, "failed", "none" };
            core_metric_add(w.metrics, CM_SMTPD_TLS_HANDSHAKES, failed, 0);
        }
        if (l->screen == NULL)
            l->stress_eligible = svc->type == SVC_INET && svc->maxproc > 1 && !service_is_local(args, svc);
        else
            l->psc_cache = open_screen_cache(&w, l->screen);
        evutil_make_socket_nonblocking(l->fd);
        /* Level-triggered: a connection left in the backlog (another worker
         * was faster, or we paused) is seen again. */
        l->ev = event_new(w.base, l->fd, EV_READ | EV_PERSIST, on_listener_readable, l);
        l->retry_timer = evtimer_new(w.base, accept_retry, l);
        if (l->ev == NULL || l->retry_timer == NULL || event_add(l->ev, NULL) != 0)
            msg_fatal("cannot listen on service %s", svc->name);
    }
    for (int i = 0; i < w.nlisteners; i++)
        if (w.listeners[i].settings->peername_lookup) {
            smtpd_peer_hosts_open(&w);
            break;
        }
    start_cache_cleanup(&w);
    smtpd_command_channel_start(w.base, args->command_fd);
    w.wake = event_new(w.base, anvil_wake_fd(w.anvil, w.index), EV_READ | EV_PERSIST, on_wake, &w);
    if (w.wake == NULL || event_add(w.wake, NULL) != 0)
        msg_fatal("cannot watch the connection table's wake-ups");
    w.sig_term = evsignal_new(w.base, SIGTERM, on_sigterm, &w);
    w.sig_drain = evsignal_new(w.base, SIGUSR1, on_sigdrain, &w);
    w.sig_hup = evsignal_new(w.base, SIGHUP, on_sighup, &w);
    event_add(w.sig_term, NULL);
    event_add(w.sig_drain, NULL);
    event_add(w.sig_hup, NULL);

    event_base_dispatch(w.base);

    event_free(w.wake);
    smtpd_worker_fini(&w);
    hosts_file_free(w.hosts);
    if (w.psc_cleanup_timer)
        event_free(w.psc_cleanup_timer);
    for (size_t i = 0; i < w.npsc_caches; i++)
        psc_cache_close(w.psc_caches[i]);
    if (w.nsessions)
        msg_info("exiting with %u sessions still open", w.nsessions);
    return 0;
}

int smtpd_validate_service(const struct cfg *cfg, const struct master_service *service, struct module_set *modules,
                           char **error)
{
    struct smtpd_worker w;
    memset(&w, 0, sizeof(w));
    w.cfg = cfg;
    w.modules = modules;
    w.checking = 1;
    w.tables = tbl_registry_new();
    if (service->role == ROLE_POSTSCREEN) {
        /* The screen's own settings; the pass service it hands clients to
         * is checked as an smtpd service of its own. */
        int ok = module_set_register_tables(modules, w.tables) == 0;
        struct psc_settings *ps = ok ? psc_settings_create(&w, service, error) : NULL;
        if (!ok && asprintf(error, "%s, line %d: service %s: modules: a table type is provided twice", service->file,
                            service->line, service->name) < 0)
            *error = xstrdup("modules: a table type is provided twice");
        psc_settings_free(ps);
        module_set_tables_gone(modules, w.tables);
        tbl_registry_free(w.tables);
        return ps ? 0 : -1;
    }
    if (module_set_register_tables(modules, w.tables) != 0) {
        module_set_tables_gone(modules, w.tables);
        tbl_registry_free(w.tables);
        if (asprintf(error, "%s, line %d: service %s: modules: a table type is provided twice", service->file,
                     service->line, service->name) < 0)
            *error = xstrdup("modules: a table type is provided twice");
        return -1;
    }
    struct smtpd_settings *set = smtpd_settings_create(&w, service, service->cfg, NULL, error);
    int ok = set != NULL;
    if (ok)
        smtpd_cleanup_warn_overrides(service);
    if (ok && service->stress_cfg && service->stress_cfg != service->cfg) {
        /* What its sessions use under stress must work too. */
        char *why = NULL;
        struct smtpd_settings *stressed = smtpd_settings_create(&w, service, service->stress_cfg, set, &why);
        if (stressed == NULL) {
            for (char *line = why, *next; line; line = next) {
                next = strchr(line, '\n');
                if (next)
                    *next++ = '\0';
                char *one = xasprintf("%s (with stress=yes)", line);
                xappend_line(error, one);
                free(one);
            }
            if (why == NULL)
                xappend_line(error, "invalid settings (with stress=yes)");
            free(why);
            ok = 0;
        }
        smtpd_settings_free(stressed);
    }
    smtpd_settings_free(set);
    module_set_tables_gone(modules, w.tables);
    tbl_registry_free(w.tables);
    return ok ? 0 : -1;
}
