/*
 * Services the plugin API gives modules in any role: per-module data,
 * parameters, logging, and the role's event loop (timers, fd watches,
 * asynchronous DNS, blocking work on the thread pool). Callbacks run on
 * the loop inside the crash context (crash.c).
 */
#include "config.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/event.h>

#include <petrel/plugin.h>
#include "config/cfg.h"
#include "lib/dns.h"
#include "lib/log.h"
#include "lib/workq.h"
#include "lib/xalloc.h"
#include "module/module.h"

#define enter smtpd_plugin_enter
#define leave smtpd_plugin_leave

/* ------------------------------------------------------------------ */
/* module data, parameters, logging                                    */

void petrel_module_set_data(petrel_module *m, void *data) { m->data = data; }
void *petrel_module_data(petrel_module *m) { return m->data; }
const char *petrel_module_name(petrel_module *m) { return m->name; }

static int declared(petrel_module *m, const char *name)
{
    for (size_t i = 0; i < m->nparams; i++)
        if (strcmp(m->params[i].name, name) == 0)
            return 1;
    msg_warn("module %s asked for parameter %s, which it did not declare", m->name, name);
    return 0;
}

const char *petrel_param_string(petrel_module *m, const char *name)
{
    return declared(m, name) ? cfg_get(m->cfg, name) : NULL;
}

long long petrel_param_int(petrel_module *m, const char *name)
{
    return declared(m, name) ? cfg_int(m->cfg, name) : 0;
}

int petrel_param_bool(petrel_module *m, const char *name)
{
    return declared(m, name) ? cfg_bool(m->cfg, name) : 0;
}

static enum log_level level_of(petrel_log_level l)
{
    switch (l) {
    case PETREL_LOG_DEBUG: return LOG_LEVEL_DEBUG;
    case PETREL_LOG_WARNING: return LOG_LEVEL_WARN;
    case PETREL_LOG_ERROR: return LOG_LEVEL_ERROR;
    default: return LOG_LEVEL_INFO;
    }
}


void petrel_module_log(petrel_module *m, petrel_log_level level, const char *fmt, ...)
{
    char text[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(text, sizeof(text), fmt, ap);
    va_end(ap);
    if (level == PETREL_LOG_DEBUG && !log_verbose())
        return;
    switch (level_of(level)) {
    case LOG_LEVEL_WARN: msg_warn("module %s: %s", m->name, text); break;
    case LOG_LEVEL_ERROR: msg_error("module %s: %s", m->name, text); break;
    default: msg_info("module %s: %s", m->name, text); break;
    }
}

/* ------------------------------------------------------------------ */
/* loop services                                                       */

struct petrel_timer {
    struct event *ev;
    petrel_timer_fn *fn;
    void *arg;
    struct petrel_module *m;
};

static void timer_fired(evutil_socket_t fd, short what, void *arg)
{
    struct petrel_timer *t = arg;
    petrel_timer_fn *fn = t->fn;
    void *fn_arg = t->arg;
    struct petrel_module *m = t->m;
    event_free(t->ev);
    free(t);
    enter(m, "timer");
    fn(fn_arg);
    leave();
}

petrel_timer *petrel_timer_start(petrel_module *m, unsigned ms, petrel_timer_fn *fn, void *arg)
{
    if (m->set == NULL || m->set->base == NULL)
        return NULL;
    struct petrel_timer *t = xcalloc(1, sizeof(*t));
    t->fn = fn;
    t->arg = arg;
    t->m = m;
    t->ev = evtimer_new(m->set->base, timer_fired, t);
    struct timeval tv = { ms / 1000, (ms % 1000) * 1000 };
    evtimer_add(t->ev, &tv);
    return t;
}

void petrel_timer_cancel(petrel_timer *t)
{
    if (t == NULL)
        return;
    event_free(t->ev);
    free(t);
}

struct petrel_watch {
    struct event *ev;
    petrel_watch_fn *fn;
    void *arg;
    struct petrel_module *m;
};

static void watch_fired(evutil_socket_t fd, short what, void *arg)
{
    struct petrel_watch *w = arg;
    int events = (what & EV_READ ? PETREL_WATCH_READ : 0) | (what & EV_WRITE ? PETREL_WATCH_WRITE : 0);
    enter(w->m, "fd watch");
    w->fn((int)fd, events, w->arg);
    leave();
}

petrel_watch *petrel_watch_fd(petrel_module *m, int fd, int events, petrel_watch_fn *fn, void *arg)
{
    if (m->set == NULL || m->set->base == NULL)
        return NULL;
    struct petrel_watch *w = xcalloc(1, sizeof(*w));
    w->fn = fn;
    w->arg = arg;
    w->m = m;
    short what = EV_PERSIST | (events & PETREL_WATCH_READ ? EV_READ : 0) | (events & PETREL_WATCH_WRITE ? EV_WRITE : 0);
    w->ev = event_new(m->set->base, fd, what, watch_fired, w);
    event_add(w->ev, NULL);
    return w;
}

void petrel_watch_cancel(petrel_watch *w)
{
    if (w == NULL)
        return;
    event_free(w->ev);
    free(w);
}

struct dns_call {
    petrel_dns_fn *fn;
    void *arg;
    struct petrel_module *m;
};

static void dns_done(const struct dns_answer *a, void *arg)
{
    struct dns_call *c = arg;
    petrel_dns_answer pa = { (petrel_dns_status)a->status, a->count, a->values, a->preferences };
    enter(c->m, "dns callback");
    c->fn(&pa, c->arg);
    leave();
    free(c);
}

int petrel_dns_lookup(petrel_module *m, petrel_dns_type type, const char *name, petrel_dns_fn *fn, void *arg)
{
    if (m->set == NULL || m->set->dns == NULL || fn == NULL || name == NULL)
        return -1;
    static const enum dns_type types[] = { DNS_A, DNS_AAAA, DNS_MX, DNS_TXT, DNS_PTR };
    if ((unsigned)type >= sizeof(types) / sizeof(types[0]))
        return -1;
    struct dns_call *c = xcalloc(1, sizeof(*c));
    c->fn = fn;
    c->arg = arg;
    c->m = m;
    dns_lookup(m->set->dns, types[type], name, dns_done, c);
    return 0;
}

struct blocking_call {
    void (*work)(void *);
    void (*done)(void *);
    void *arg;
    struct petrel_module *m;
};

static void blocking_work(void *arg)
{
    struct blocking_call *c = arg;
    c->work(c->arg);
}

static void blocking_done(void *arg, int cancelled)
{
    struct blocking_call *c = arg;
    enter(c->m, "blocking call completion");
    c->done(c->arg);
    leave();
    free(c);
}

int petrel_run_blocking(petrel_module *m, void (*work)(void *arg), void (*done)(void *arg), void *arg)
{
    if (m->set == NULL || m->set->workq == NULL || work == NULL || done == NULL)
        return -1;
    struct blocking_call *c = xcalloc(1, sizeof(*c));
    c->work = work;
    c->done = done;
    c->arg = arg;
    c->m = m;
    workq_submit(m->set->workq, blocking_work, blocking_done, c);
    return 0;
}
