/*
 * The master process: reads the configuration, binds every master.cf
 * listener, creates the queue tree, and forks the role processes from the
 * same binary (one smtpd worker per core for now; qmgr and delivery roles
 * arrive with their issues). It restarts a role that dies, with a growing
 * delay when it dies right after start, and serves the control socket that
 * petrelctl talks to.
 *
 * Reload (SIGHUP or `petrelctl reload`) never disturbs a working system:
 * the new configuration is loaded and checked completely, listeners are
 * bound (reusing the sockets of addresses that stay), and only then new
 * workers start and the old ones are told to drain: they stop accepting
 * and exit when their established sessions end. A broken configuration is
 * refused and logged, and the old one keeps serving.
 *
 * This file supervises (starts, stops, reloads, the figures and the
 * control socket); spawn.c forks, restarts and reaps the role processes,
 * startup.c prepares the queue tree, the pid file and privileges; load.c
 * loads and checks a configuration generation, listen.c binds its
 * listeners.
 */
#include "config.h"

#include <dirent.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <arpa/inet.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/listener.h>

#include "config/cfg.h"
#include "lib/buf.h"
#include "lib/dns.h"
#include "lib/ipc.h"
#include "lib/log.h"
#include "lib/xalloc.h"
#include "master/master.h"
#include "master/master_int.h"
#include "module/metrics.h"
#include "module/metrics_core.h"
#include "module/module.h"
#include "smtpd/anvil.h"
#include "tls/tls.h"

/* ------------------------------------------------------------------ */
/* generations                                                         */

static void generation_free(struct generation *g)
{
    if (g == NULL)
        return;
    for (int i = 0; i < g->nlisteners; i++)
        close(g->listeners[i].fd);
    master_spawn_generation_free(g);
    master_unload_config(&g->conf);
    free(g);
}

/* ------------------------------------------------------------------ */
/* stop and reload                                                     */

static void stop_timeout(evutil_socket_t fd, short what, void *arg)
{
    struct master *m = arg;
    msg_warn("workers did not stop within %d seconds: killing them", STOP_TIMEOUT_SECONDS);
    /* Which one, and what it is: the next step of finding out why it hung
     * (its own last log lines, under the same PID). */
    for (int i = 0; i < MAX_WORKERS; i++) {
        const struct worker_proc *w = &m->workers[i];
        if (w->pid == 0)
            continue;
        msg_warn("killing %s pid %ld (started %lds ago%s)",
                 w->is_qmgr ? "the queue manager" : w->is_pickup ? "the pickup role" : "smtpd worker", (long)w->pid,
                 (long)(time(NULL) - w->started), w->draining ? ", draining after a reload" : "");
        kill(w->pid, SIGKILL);
    }
}

static void begin_stop(struct master *m)
{
    if (m->stopping)
        return;
    m->stopping = 1;
    msg_info("terminating on signal 15");
    for (int i = 0; i < MAX_WORKERS; i++)
        if (m->workers[i].pid)
            kill(m->workers[i].pid, SIGTERM);
    master_spawn_stop(m, SIGTERM);   /* the commands are not waited for (killed at exit) */
    if (master_live_workers(m) == 0) {
        event_base_loopexit(m->base, NULL);
        return;
    }
    struct timeval tv = { STOP_TIMEOUT_SECONDS, 0 };
    m->stop_timer = evtimer_new(m->base, stop_timeout, m);
    evtimer_add(m->stop_timer, &tv);
}

/* maillog_file wins; else syslog when running in the background (-d) or
 * when main.cf sets syslog_facility; else standard error. */
static void apply_logging(const struct cfg *cfg, int daemonized)
{
    const char *name = cfg_get(cfg, "syslog_name");
    log_init(name && *name ? name : "petrel", "master");
    const char *file = cfg_get(cfg, "maillog_file");
    if (file && *file) {
        if (log_use_file(file) != 0)
            msg_warn("cannot open maillog_file %s: %s; logging to stderr", file, strerror(errno));
    } else if (daemonized || !cfg_is_default(cfg, "syslog_facility")) {
        if (log_use_syslog(cfg_get(cfg, "syslog_facility")) != 0) {
            log_use_stderr();
            msg_warn("syslog_facility: unknown facility \"%s\"; logging to stderr", cfg_get(cfg, "syslog_facility"));
        }
    } else {
        log_use_stderr();
    }
}

/* The lifetime of a ticket key: smtpd_tls_session_cache_timeout (Postfix's
 * tlsmgr rotates on the same clock). */
static unsigned ticket_lifetime(const struct cfg *cfg)
{
    long long t = cfg_int(cfg, "smtpd_tls_session_cache_timeout");
    return t > 0 ? (unsigned)t : 3600;
}

static void schedule_ticket_rotation(struct master *m)
{
    struct timeval tv = { (time_t)ticket_lifetime(m->gen->cfg), 0 };
    evtimer_add(m->ticket_timer, &tv);
}

static void rotate_tickets(evutil_socket_t fd, short what, void *arg)
{
    struct master *m = arg;
    (void)fd;
    (void)what;
    tls_ticket_keys_rotate(m->tickets, ticket_lifetime(m->gen->cfg));
    schedule_ticket_rotation(m);
}

/* ------------------------------------------------------------------ */
/* figures for the metrics endpoint and the control socket             */

struct role_counts {
    int smtpd, qmgr, pickup, draining;
};

static struct role_counts count_roles(const struct master *m)
{
    struct role_counts c = { 0, 0, 0, 0 };
    for (int i = 0; i < MAX_WORKERS; i++) {
        const struct worker_proc *w = &m->workers[i];
        if (w->pid == 0)
            continue;
        if (w->draining)
            c.draining++;
        else if (w->is_qmgr)
            c.qmgr++;
        else if (w->is_pickup)
            c.pickup++;
        else
            c.smtpd++;
    }
    return c;
}

static void put_gauge_family(struct buf *out, const char *name, const char *help)
{
    buf_printf(out, "# HELP %s %s\n# TYPE %s gauge\n", name, help, name);
}

/* The module and core figures of the shared region, then what only the
   master knows: the queue and the processes (read now). */
static void render_metrics(void *arg, struct buf *out, int openmetrics)
{
    struct master *m = arg;
    module_metrics_render_as(m->metrics, out, openmetrics);
    struct master_queue_figures q[MASTER_QUEUES];
    master_queue_figures(m->queue_dir, q);
    put_gauge_family(out, "petrel_queue_messages", "Messages in each queue directory");
    for (int i = 0; i < MASTER_QUEUES; i++)
        buf_printf(out, "petrel_queue_messages{queue=\"%s\"} %ld\n", q[i].name, q[i].messages);
    put_gauge_family(out, "petrel_queue_oldest_message_age_seconds",
                     "Seconds since the oldest message of each queue arrived (0 when the queue is empty)");
    for (int i = 0; i < MASTER_QUEUES; i++)
        buf_printf(out, "petrel_queue_oldest_message_age_seconds{queue=\"%s\"} %.3f\n", q[i].name, q[i].oldest_age);
    struct role_counts c = count_roles(m);
    put_gauge_family(out, "petrel_processes", "Role processes running (draining ones after a reload apart)");
    buf_printf(out, "petrel_processes{role=\"smtpd\"} %d\npetrel_processes{role=\"qmgr\"} %d\n"
               "petrel_processes{role=\"pickup\"} %d\npetrel_processes{role=\"draining\"} %d\n",
               c.smtpd, c.qmgr, c.pickup, c.draining);
    put_gauge_family(out, "petrel_processes_expected", "Role processes the configuration asks for");
    buf_printf(out, "petrel_processes_expected{role=\"smtpd\"} %d\npetrel_processes_expected{role=\"qmgr\"} %d\n"
               "petrel_processes_expected{role=\"pickup\"} %d\n", m->gen->nworkers, master_has_qmgr(m->gen->cfg),
               master_pickup_service(m->gen->cfg) != NULL);
    struct buf ignored = BUF_INIT;
    int writable = master_queue_writable(m->queue_dir, m->privileged, (unsigned)m->run_uid, (unsigned)m->run_gid,
                                         &ignored) == 0;
    buf_free(&ignored);
    put_gauge_family(out, "petrel_queue_writable", "1 when the roles can write every queue directory, else 0");
    buf_printf(out, "petrel_queue_writable %d\n", writable);
    put_gauge_family(out, "petrel_start_time_seconds", "When the master started (Unix time)");
    buf_printf(out, "petrel_start_time_seconds %lld\n", (long long)m->started);
    put_gauge_family(out, "petrel_config_generation", "The configuration generation (1, plus one per reload)");
    buf_printf(out, "petrel_config_generation %u\n", m->gen->number);
    if (openmetrics)
        buf_puts(out, "# EOF\n");
}

/* /healthz: every role the configuration asks for runs, and the queue can be written. */
static int check_health(void *arg, struct buf *why)
{
    struct master *m = arg;
    int status = 0;
    if (m->stopping) {
        buf_puts(why, "petrel is stopping\n");
        status = -1;
    }
    struct role_counts c = count_roles(m);
    if (c.smtpd < m->gen->nworkers) {
        buf_printf(why, "smtpd: %d of %d workers running\n", c.smtpd, m->gen->nworkers);
        status = -1;
    }
    if (master_has_qmgr(m->gen->cfg) && c.qmgr == 0) {
        buf_puts(why, "qmgr: not running\n");
        status = -1;
    }
    if (master_pickup_service(m->gen->cfg) && c.pickup == 0) {
        buf_puts(why, "pickup: not running\n");
        status = -1;
    }
    if (master_queue_writable(m->queue_dir, m->privileged, (unsigned)m->run_uid, (unsigned)m->run_gid, why) != 0)
        status = -1;
    return status;
}

static double now_seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

static void take_snapshot(struct master *m, struct master_snapshot *snap)
{
    struct role_counts c = count_roles(m);
    snap->started = (long long)m->started;
    snap->generation = m->gen->number;
    snap->smtpd = c.smtpd;
    snap->smtpd_expected = m->gen->nworkers;
    snap->qmgr = c.qmgr;
    snap->qmgr_expected = master_has_qmgr(m->gen->cfg);
    snap->pickup = c.pickup;
    snap->pickup_expected = master_pickup_service(m->gen->cfg) != NULL;
    snap->draining = c.draining;
    snap->health = NULL;
    master_queue_figures(m->queue_dir, snap->queue);
}

static void render_status(void *arg, struct buf *html)
{
    struct master *m = arg;
    struct master_snapshot snap;
    take_snapshot(m, &snap);
    struct buf why = BUF_INIT;
    if (check_health(m, &why) != 0)
        snap.health = why.data;
    master_stats_render(m->stats, m->metrics, &snap, now_seconds(), MASTER_STATS_HTML, html);
    buf_free(&why);
}

static void stats_tick(evutil_socket_t fd, short what, void *arg)
{
    struct master *m = arg;
    master_stats_sample(m->stats, m->metrics, now_seconds());
}

static struct master_http_source http_source(struct master *m)
{
    struct master_http_source s = { .metrics = render_metrics, .health = check_health, .status = render_status, .arg = m };
    return s;
}

/* Returns 0 when the new configuration is serving, -1 when refused. */
static int reload(struct master *m, struct buf *why)
{
    msg_info("reload -- version %s, configuration %s", PACKAGE_VERSION, m->opts->confdir);
    struct loaded_config conf;
    if (master_load_config(m->opts->confdir, &conf, 1) != 0) {
        msg_error("reload refused: the configuration has errors; the running configuration stays");
        buf_puts(why, "reload refused: the configuration has errors (see the log); the running configuration stays");
        return -1;
    }
    struct cfg *cfg = conf.cfg;
    if (strcmp(cfg_get(cfg, "queue_directory"), m->queue_dir) != 0) {
        msg_error("reload refused: queue_directory cannot change while running (restart instead)");
        buf_puts(why, "reload refused: queue_directory cannot change while running");
        master_unload_config(&conf);
        return -1;
    }
    char http_error[600];
    struct master_http_source source = http_source(m);
    if (master_http_update(&m->http, m->base, cfg, &source, http_error, sizeof(http_error)) != 0) {
        msg_error("reload refused: %s; the running configuration stays", http_error);
        buf_printf(why, "reload refused: %s", http_error);
        master_unload_config(&conf);
        return -1;
    }
    master_prepare_data_directory(m, cfg);
    struct generation *gen = xcalloc(1, sizeof(*gen));
    gen->conf = conf;
    gen->cfg = cfg;
    gen->number = m->gen->number + 1;
    gen->nworkers = master_worker_count(cfg);
    if (master_bind_listeners(gen, m->gen) != 0 || master_bind_spawn_services(m, gen, m->gen) != 0) {
        msg_error("reload refused: cannot bind the new listeners; the running configuration stays");
        buf_puts(why, "reload refused: cannot bind the new listeners (see the log)");
        generation_free(gen);
        return -1;
    }
    /* Old workers stop accepting and finish their sessions. */
    for (int i = 0; i < MAX_WORKERS; i++) {
        struct worker_proc *w = &m->workers[i];
        if (w->pid && w->generation == m->gen->number) {
            w->draining = 1;
            /* smtpd workers drain their sessions; the queue manager stops
             * (two must never work on the queue at once). */
            kill(w->pid, w->is_qmgr ? SIGTERM : SIGUSR1);
        }
        if (w->pid == 0 && w->restart_timer)
            evtimer_del(w->restart_timer);
    }
    struct generation *old = m->gen;
    m->gen = gen;
    apply_logging(cfg, m->opts->daemonize);
    log_set_role("master");
    /* New keys for the new generation; tickets of the previous key still
     * open (and are renewed) until their lifetime is over. */
    tls_ticket_keys_rotate(m->tickets, ticket_lifetime(cfg));
    schedule_ticket_rotation(m);
    master_start_workers(m);
    master_start_spawn_services(m);
    generation_free(old);   /* closes the master's copies of dropped listeners */
    buf_puts(why, "reloaded");
    return 0;
}

static void on_sigterm(evutil_socket_t sig, short what, void *arg)
{
    begin_stop(arg);
}

static void on_sighup(evutil_socket_t sig, short what, void *arg)
{
    struct buf why = BUF_INIT;
    reload(arg, &why);
    buf_free(&why);
    log_reopen();
}

/* ------------------------------------------------------------------ */
/* control socket                                                      */

static void control_reply(struct bufferevent *bev, int status, const char *text)
{
    struct buf b = BUF_INIT;
    char code[16];
    snprintf(code, sizeof(code), "%d", status);
    ipc_begin(&b, IPC_CTL_REPLY);
    ipc_add_str(&b, code);
    ipc_add_str(&b, text);
    ipc_finish(&b);
    bufferevent_write(bev, b.data, b.len);
    buf_free(&b);
}

static void control_written(struct bufferevent *bev, void *arg)
{
    bufferevent_free(bev);
}

static void control_event(struct bufferevent *bev, short what, void *arg)
{
    if (what & (BEV_EVENT_EOF | BEV_EVENT_ERROR | BEV_EVENT_TIMEOUT))
        bufferevent_free(bev);
}

/* The answer to a module command, from modctl.c: the connection is ours
 * again, to write it and close. */
static void module_command_reply(struct bufferevent *bev, int status, const char *text)
{
    bufferevent_setcb(bev, NULL, control_written, control_event, NULL);
    bufferevent_enable(bev, EV_WRITE);
    control_reply(bev, status, text);
}

/* petrelctl MODULE [COMMAND [ARGS]]: fields[1] is the module's name. The
 * command is checked here against the generation's module set (so a typo
 * is answered without bothering a worker), then run by one smtpd worker
 * of the current generation (modctl.c says why there). Returns 1 when the
 * request went to a worker (the answer follows), else 0 with status and
 * text set. */
static int module_command(struct master *m, struct bufferevent *bev, const struct ipc_msg *msg, int *status,
                          struct buf *text)
{
    char *fields[IPC_MAX_FIELDS];
    int n = 0;
    for (int i = 1; i < msg->count; i++) {
        if (memchr(msg->fields[i].data, '\0', msg->fields[i].len) != NULL) {
            *status = 2;
            buf_puts(text, "malformed control request: a NUL byte in an argument");
            for (int k = 0; k < n; k++)
                free(fields[k]);
            return 0;
        }
        fields[n] = xmalloc(msg->fields[i].len + 1);
        memcpy(fields[n], msg->fields[i].data, msg->fields[i].len);
        fields[n][msg->fields[i].len] = '\0';
        n++;
    }
    int sent = 0;
    const struct module_set *set = m->gen->conf.modules;
    struct petrel_module *mod = n > 0 ? module_set_find_module(set, fields[0]) : NULL;
    const petrel_command *cmd = mod && n > 1 ? module_command_find(mod, fields[1]) : NULL;
    int json;
    *status = 2;
    if (mod == NULL) {
        buf_printf(text, "unknown command \"%.64s\": not a petrelctl command, and no loaded module has that name "
                   "(modules:", n > 0 ? fields[0] : "");
        for (int i = 0; set && i < set->n; i++)
            buf_printf(text, " %s", set->mods[i]->name);
        buf_puts(text, set && set->n ? ")" : " none loaded)");
    } else if (n == 1 || strcmp(fields[1], "help") == 0) {
        module_command_help(set, mod, text);
        *status = n == 1 ? 2 : 0;
    } else if (cmd == NULL) {
        buf_printf(text, "module %s has no command \"%.64s\"\n", mod->name, fields[1]);
        module_command_help(set, mod, text);
    } else if (module_command_check_args(mod, cmd, n - 2, (const char *const *)fields + 2, &json, text) < 0) {
        buf_puts(text, "\n");
        module_command_usage(mod, cmd, text);
    } else {
        int slot = -1;
        for (int i = 0; i < MAX_WORKERS && slot < 0; i++) {
            const struct worker_proc *w = &m->workers[i];
            if (w->pid && !w->draining && master_role_kind(w) == KIND_SMTPD && w->generation == m->gen->number &&
                modctl_has_channel(m->modctl, i))
                slot = i;
        }
        if (slot < 0) {
            *status = 1;
            buf_printf(text, "petrelctl %s %s: no smtpd worker is running to run it (restarting? see the log)",
                       mod->name, cmd->name);
        } else {
            /* No reading (nor its timeout) while a worker has the request;
             * the reply function takes the connection back. */
            bufferevent_disable(bev, EV_READ);
            bufferevent_setcb(bev, NULL, NULL, NULL, NULL);
            modctl_send(m->modctl, slot, bev, mod->timeout_ms ? mod->timeout_ms : 10000, mod->name, n - 1,
                        (const char *const *)fields + 1);
            sent = 1;
        }
    }
    for (int k = 0; k < n; k++)
        free(fields[k]);
    return sent;
}

static void control_read(struct bufferevent *bev, void *arg)
{
    struct master *m = arg;
    struct evbuffer *in = bufferevent_get_input(bev);
    size_t len = evbuffer_get_length(in);
    const char *data = (const char *)evbuffer_pullup(in, -1);
    struct ipc_msg msg;
    long n = ipc_parse(data, len, &msg);
    if (n == 0)
        return;
    bufferevent_setcb(bev, NULL, control_written, control_event, m);
    if (n < 0 || msg.type != IPC_CTL_REQUEST || msg.count < 1) {
        control_reply(bev, 2, "malformed control request");
        return;
    }
    char command[32];
    snprintf(command, sizeof(command), "%.*s", (int)(msg.fields[0].len < 31 ? msg.fields[0].len : 31),
             msg.fields[0].data);
    struct buf text = BUF_INIT;
    int status = 0;
    if (strcmp(command, "status") == 0) {
        int working = 0, draining = 0;
        for (int i = 0; i < MAX_WORKERS; i++) {
            if (m->workers[i].pid == 0)
                continue;
            if (m->workers[i].draining)
                draining++;
            else
                working++;
        }
        struct worker_proc *qm = master_running_qmgr(m);
        struct worker_proc *pickup = NULL;
        if (qm)
            working--;
        for (int i = 0; i < MAX_WORKERS; i++)
            if (m->workers[i].pid && m->workers[i].is_pickup && !m->workers[i].draining) {
                pickup = &m->workers[i];
                working--;
            }
        buf_printf(&text, "petrel is running: master pid %ld, configuration generation %u, "
                   "%d smtpd worker%s", (long)getpid(), m->gen->number, working, working == 1 ? "" : "s");
        if (qm)
            buf_printf(&text, ", queue manager pid %ld", (long)qm->pid);
        if (pickup)
            buf_printf(&text, ", pickup pid %ld", (long)pickup->pid);
        if (draining)
            buf_printf(&text, " (+%d draining after reload)", draining);
        for (int i = 0; i < m->gen->nlisteners; i++)
            buf_printf(&text, "\nlistening: %s (service %s)", m->gen->listeners[i].key + 5,
                       m->gen->listeners[i].service->name);
        /* Queue sizes: a directory count each (fast even for large queues). */
        static const char *const dirs[] = { "incoming", "active", "deferred", "hold", "corrupt", "maildrop" };
        buf_puts(&text, "\nqueue:");
        for (size_t d = 0; d < sizeof(dirs) / sizeof(dirs[0]); d++) {
            char path[4200];
            snprintf(path, sizeof(path), "%s/%s", m->queue_dir, dirs[d]);
            long count = 0;
            DIR *dir = opendir(path);
            struct dirent *de;
            while (dir && (de = readdir(dir)) != NULL)
                if (de->d_name[0] != '.')
                    count++;
            if (dir)
                closedir(dir);
            buf_printf(&text, " %s %ld", dirs[d], count);
        }
    } else if (strcmp(command, "flush") == 0) {
        struct worker_proc *q = master_running_qmgr(m);
        if (q && kill(q->pid, SIGUSR2) == 0) {
            buf_puts(&text, "flush requested");
        } else {
            status = 1;
            buf_puts(&text, "no queue manager is running (is qmgr in master.cf?)");
        }
    } else if (strcmp(command, "metrics") == 0) {
        /* The Prometheus text the metrics endpoint will serve; a frame
         * holds at most 1 MiB, so a larger text is cut at a line. */
        render_metrics(m, &text, 0);
        size_t limit = (1u << 20) - 4096;
        if (text.len > limit) {
            size_t cut = limit;
            while (cut > 0 && text.data[cut - 1] != '\n')
                cut--;
            text.len = cut;
            text.data[cut] = '\0';
            buf_puts(&text, "# truncated: more than 1 MiB of metrics\n");
        }
        while (text.len > 0 && text.data[text.len - 1] == '\n')
            text.data[--text.len] = '\0';
    } else if (strcmp(command, "stats") == 0 || strcmp(command, "stats-json") == 0) {
        struct master_snapshot snap;
        take_snapshot(m, &snap);
        master_stats_render(m->stats, m->metrics, &snap, now_seconds(),
                            strcmp(command, "stats-json") == 0 ? MASTER_STATS_JSON : MASTER_STATS_TEXT, &text);
        while (text.len > 0 && text.data[text.len - 1] == '\n')
            text.data[--text.len] = '\0';
    } else if (strcmp(command, "stop") == 0) {
        buf_puts(&text, "stopping");
        begin_stop(m);
    } else if (strcmp(command, "reload") == 0) {
        status = reload(m, &text) == 0 ? 0 : 1;
    } else if (strcmp(command, "module") == 0) {
        if (module_command(m, bev, &msg, &status, &text)) {
            buf_free(&text);
            return;
        }
    } else {
        status = 2;
        buf_printf(&text, "unknown control command \"%s\"", command);
    }
    control_reply(bev, status, text.data ? text.data : "");
    buf_free(&text);
}

static void control_accept(struct evconnlistener *l, evutil_socket_t fd, struct sockaddr *sa, int len, void *arg)
{
    struct master *m = arg;
    struct bufferevent *bev = bufferevent_socket_new(m->base, fd, BEV_OPT_CLOSE_ON_FREE);
    struct timeval tv = { 10, 0 };
    bufferevent_set_timeouts(bev, &tv, &tv);
    bufferevent_setcb(bev, control_read, NULL, control_event, m);
    bufferevent_enable(bev, EV_READ | EV_WRITE);
}

static int open_control(struct master *m)
{
    struct sockaddr_un sun;
    memset(&sun, 0, sizeof(sun));
    sun.sun_family = AF_UNIX;
    if (strlen(m->control_path) >= sizeof(sun.sun_path)) {
        msg_error("control socket path too long: %s", m->control_path);
        return -1;
    }
    strcpy(sun.sun_path, m->control_path);
    unlink(m->control_path);
    mode_t old = umask(077);
    m->control = evconnlistener_new_bind(m->base, control_accept, m, LEV_OPT_CLOSE_ON_FREE | LEV_OPT_CLOSE_ON_EXEC,
                                         16, (struct sockaddr *)&sun, sizeof(sun));
    umask(old);
    if (m->control == NULL) {
        msg_error("cannot create control socket %s: %s", m->control_path, strerror(errno));
        return -1;
    }
    return 0;
}

int master_run(const struct master_options *opts)
{
    struct master m;
    memset(&m, 0, sizeof(m));
    m.opts = opts;
    m.pid_fd = -1;
    log_init("petrel", "master");
    ssize_t blen = readlink("/proc/self/exe", m.binary, sizeof(m.binary) - 1);
    if (blen <= 0)
        snprintf(m.binary, sizeof(m.binary), "petreld");
    signal(SIGPIPE, SIG_IGN);

    struct loaded_config conf;
    if (master_load_config(opts->confdir, &conf, 1) != 0) {
        msg_error("fatal: not starting: fix the configuration errors above");
        return 1;
    }
    struct cfg *cfg = conf.cfg;
    apply_logging(cfg, opts->daemonize);
    /* Lock before the recovery scan: a second master must never scan (and
     * purge "incomplete" files from) the queue of one that is running. */
    if (master_resolve_owner(&m, cfg) != 0 || master_make_queue_dir(&m, cfg) != 0 || master_lock_pid_file(&m) != 0 ||
        master_prepare_queue(&m, cfg) != 0) {
        master_unload_config(&conf);
        return 1;
    }
    master_prepare_data_directory(&m, cfg);
    m.gen = xcalloc(1, sizeof(*m.gen));
    m.gen->conf = conf;
    m.gen->cfg = cfg;
    m.gen->number = 1;
    m.gen->nworkers = master_worker_count(cfg);
    if (master_bind_listeners(m.gen, NULL) != 0 || master_bind_spawn_services(&m, m.gen, NULL) != 0) {
        msg_error("fatal: not starting: cannot bind the listeners");
        generation_free(m.gen);
        return 1;
    }
    if (opts->daemonize && master_daemonize() != 0) {
        msg_error("cannot daemonize: %s", strerror(errno));
        return 1;
    }
    master_write_pid(&m);
    m.base = event_base_new();
    snprintf(m.control_path, sizeof(m.control_path), "%s/private/control", m.queue_dir);
    if (open_control(&m) != 0)
        return 1;
    m.anvil = anvil_create(16384);
    m.tickets = tls_ticket_keys_create(ticket_lifetime(cfg));
    if (m.tickets == NULL)
        msg_warn("cannot map memory for shared TLS session ticket keys: each smtpd worker uses its own");
    m.ticket_timer = evtimer_new(m.base, rotate_tickets, &m);
    schedule_ticket_rotation(&m);
    m.metrics = module_metrics_create();
    m.modctl = modctl_new(m.base, module_command_reply);
    /* The core's families first, before any module's: their indices are fixed (module/metrics_core.h). */
    if (m.metrics && core_metrics_register(m.metrics) != 0)
        msg_fatal("metrics: cannot register the core's figures");

    struct event *ev_chld = evsignal_new(m.base, SIGCHLD, master_on_sigchld, &m);
    struct event *ev_term = evsignal_new(m.base, SIGTERM, on_sigterm, &m);
    struct event *ev_int = evsignal_new(m.base, SIGINT, on_sigterm, &m);
    struct event *ev_hup = evsignal_new(m.base, SIGHUP, on_sighup, &m);
    event_add(ev_chld, NULL);
    event_add(ev_term, NULL);
    event_add(ev_int, NULL);
    event_add(ev_hup, NULL);

    m.started = time(NULL);
    m.stats = master_stats_new();
    master_stats_sample(m.stats, m.metrics, now_seconds());
    m.stats_timer = event_new(m.base, -1, EV_PERSIST, stats_tick, &m);
    struct timeval sample_every = { MASTER_STATS_SAMPLE_SECONDS, 0 };
    event_add(m.stats_timer, &sample_every);
    char http_error[600];
    struct master_http_source source = http_source(&m);
    if (master_http_update(&m.http, m.base, cfg, &source, http_error, sizeof(http_error)) != 0)
        msg_fatal("not starting: %s", http_error);
    msg_info("daemon started -- version %s, configuration %s", PACKAGE_VERSION, opts->confdir);
    master_start_workers(&m);
    master_start_spawn_services(&m);
    event_base_dispatch(m.base);

    /* Reap anything left (loopexit after the last worker, or a forced
     * stop); a spawned command still running after its SIGTERM is killed. */
    master_spawn_stop(&m, SIGKILL);
    int status;
    while (waitpid(-1, &status, 0) > 0)
        ;
    master_spawn_forget(&m);
    unlink(m.control_path);
    unlink(m.pid_path);
    msg_info("stopped");
    for (int i = 0; i < MAX_WORKERS; i++)
        if (m.workers[i].restart_timer)
            event_free(m.workers[i].restart_timer);
    if (m.stop_timer)
        event_free(m.stop_timer);
    event_free(ev_chld);
    event_free(ev_term);
    event_free(ev_int);
    event_free(ev_hup);
    evconnlistener_free(m.control);
    modctl_free(m.modctl);
    master_http_stop(m.http);
    event_free(m.stats_timer);
    master_stats_free(m.stats);
    generation_free(m.gen);
    anvil_destroy(m.anvil);
    event_free(m.ticket_timer);
    tls_ticket_keys_free(m.tickets);
    module_metrics_destroy(m.metrics);
    event_base_free(m.base);
    close(m.pid_fd);
    return 0;
}
