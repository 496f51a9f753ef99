/*
 * An smtpd worker process: one libevent loop serving every SMTP listener
 * the master handed over, plus a small thread pool for fsync. Signals:
 * SIGTERM stops (idle sessions get 421, transactions in flight finish,
 * then exit, with a hard deadline); SIGUSR1 drains (stop accepting, let
 * established sessions end on their own: used when a reload replaces this
 * worker). SIGHUP is ignored: the master reloads by replacing workers.
 */
#include "config.h"

#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <event2/event.h>
#include <event2/listener.h>

#include "config/config.h"
#include "lib/dns.h"
#include "lib/log.h"
#include "lib/workq.h"
#include "lib/xalloc.h"
#include "smtpd/smtpd.h"
#include "smtpd/smtpd_int.h"
#include "tables/table.h"
#include "module/module.h"
#include "qmgr/route.h"

#define SHUTDOWN_GRACE_SECONDS 30

static void on_accept(struct evconnlistener *ev, evutil_socket_t fd, struct sockaddr *sa, int salen,
                      void *arg)
{
    struct smtpd_listener *l = arg;
    smtpd_accept(l, fd, sa, salen);
}

static void on_accept_error(struct evconnlistener *ev, void *arg)
{
    int err = EVUTIL_SOCKET_ERROR();
    /* EMFILE and friends: pause briefly rather than spin. */
    msg_warn("accept: %s", evutil_socket_error_to_string(err));
}

static void stop_listening(struct smtpd_worker *w)
{
    for (int i = 0; i < w->nlisteners; i++) {
        if (w->listeners[i].ev) {
            evconnlistener_free(w->listeners[i].ev);   /* closes our copy of the socket */
            w->listeners[i].ev = NULL;
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
        /* Idle sessions are told now; busy ones when their step completes. */
        struct smtpd_session *s = w->sessions, *next;
        for (; s; s = next) {
            next = s->next;
            if (s->state == SMTPD_CMD && s->tx == NULL)
                smtpd_session_shutdown(s, petrel_pool_printf(s->pool, "421 4.3.2 %s Service shutting down",
                                                             s->set->myhostname));
        }
        struct timeval tv = { SHUTDOWN_GRACE_SECONDS, 0 };
        w->drain_timer = evtimer_new(w->base, deadline, w);
        evtimer_add(w->drain_timer, &tv);
    }
    if (w->nsessions == 0)
        event_base_loopexit(w->base, NULL);
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

int smtpd_worker_main(const struct smtpd_worker_args *args)
{
    struct smtpd_worker w;
    memset(&w, 0, sizeof(w));
    log_set_role("smtpd");
    signal(SIGPIPE, SIG_IGN);
    w.base = event_base_new();
    if (w.base == NULL)
        msg_fatal("event_base_new failed");
    w.pool = petrel_pool_create(8192);
    w.cfg = args->cfg;
    w.anvil = args->anvil;
    w.index = args->worker_index;
    w.queue_minfree = cfg_int(args->cfg, "queue_minfree");
    w.space_ok = 1;
    w.tables = tbl_registry_new();
    char *error = NULL;
    w.queue = args->queue;
    queue_id_gen_init(&w.idgen, (unsigned)getpid());
    /* fsync waits on the disk, not the CPU: a few threads keep several in flight. */
    w.workq = workq_create(w.base, 4);
    w.modules = args->modules;
    w.dns = dns_resolver_create(w.base, cfg_get(args->cfg, "dns_resolver"), &error);
    if (w.dns == NULL)
        msg_fatal("%s", error);
    if (w.modules)
        w.modules->dns = w.dns;
    if (w.modules && w.modules->n) {
        smtpd_plugin_install_crash_handler(-1);
        if (module_set_init(w.modules, w.base, w.workq) != 0)
            msg_fatal("cannot start: a module failed to initialise");
        if (module_set_register_tables(w.modules, w.tables) != 0)
            msg_fatal("cannot start: a module's table type clashes with another");
    }
    /* Header rewriting needs the same maps as the queue manager's routing. */
    w.router = router_create(args->cfg, w.tables, 1, &error);
    if (w.router == NULL)
        msg_fatal("%s", error);

    w.nlisteners = args->nlisteners;
    w.listeners = xcalloc((size_t)args->nlisteners, sizeof(*w.listeners));
    for (int i = 0; i < args->nlisteners; i++) {
        struct smtpd_listener *l = &w.listeners[i];
        l->worker = &w;
        l->fd = args->listeners[i].fd;
        l->settings = smtpd_settings_create(&w, args->listeners[i].service, &error);
        if (l->settings == NULL)
            msg_fatal("%s", error);   /* located: main.cf or master.cf line */
        evutil_make_socket_nonblocking(l->fd);
        l->ev = evconnlistener_new(w.base, on_accept, l, LEV_OPT_CLOSE_ON_FREE | LEV_OPT_CLOSE_ON_EXEC,
                                   0 /* already listening: keep the master's backlog */, l->fd);
        if (l->ev == NULL)
            msg_fatal("cannot listen on service %s", args->listeners[i].service->name);
        evconnlistener_set_error_cb(l->ev, on_accept_error);
    }
    w.sig_term = evsignal_new(w.base, SIGTERM, on_sigterm, &w);
    w.sig_drain = evsignal_new(w.base, SIGUSR1, on_sigdrain, &w);
    w.sig_hup = evsignal_new(w.base, SIGHUP, on_sighup, &w);
    event_add(w.sig_term, NULL);
    event_add(w.sig_drain, NULL);
    event_add(w.sig_hup, NULL);

    event_base_dispatch(w.base);

    /* Commits still running must finish before we go: a message whose
     * fsync completes here is kept even if its client never hears 250. */
    workq_destroy(w.workq);
    module_set_fini(w.modules);
    if (w.nsessions)
        msg_info("exiting with %u sessions still open", w.nsessions);
    return 0;
}

int smtpd_validate_service(const struct master_service *service, struct module_set *modules, char **error)
{
    struct smtpd_worker w;
    memset(&w, 0, sizeof(w));
    w.modules = modules;
    w.tables = tbl_registry_new();
    if (module_set_register_tables(modules, w.tables) != 0) {
        tbl_registry_free(w.tables);
        if (asprintf(error, "%s, line %d: service %s: modules: a table type is provided twice", service->file,
                     service->line, service->name) < 0)
            *error = xstrdup("modules: a table type is provided twice");
        return -1;
    }
    struct smtpd_settings *set = smtpd_settings_create(&w, service, error);
    smtpd_settings_free(set);
    tbl_registry_free(w.tables);
    return set ? 0 : -1;
}
