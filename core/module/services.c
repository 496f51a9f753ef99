/*
 * Services the plugin API gives modules in any role: per-module data,
 * logging, and the role's event loop (timers, fd watches,
 * asynchronous DNS, blocking work on the modules' own threads). Callbacks run on
 * the loop inside the crash context (crash.c), and never before the call
 * that scheduled them has returned: a DNS answer known at once (a bad
 * name) is delivered on the next loop turn.
 *
 * petrel_run_blocking has a pool of its own (module_thread_limit threads,
 * made at the first call), apart from the role's: a module that holds
 * every thread (SPF waiting on a slow DNS) never delays a queue commit's
 * fsync or a local delivery. At shutdown the pool gets a short grace
 * period (runtime stop, start.c), not the time the work may take.
 *
 * Timers and watches are handles (runtime_int.h): cancelling one that
 * already fired or was cancelled is a logged no-op, not a double free.
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
#include "module/runtime_int.h"

/* ------------------------------------------------------------------ */
/* module data, logging                                               */

void petrel_module_set_data(petrel_module *m, void *data)
{
    if (m)
        m->data = data;
}

void *petrel_module_data(petrel_module *m)
{
    return m ? m->data : NULL;
}

const char *petrel_module_name(petrel_module *m)
{
    return m ? m->name : NULL;
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


static void log_text(enum log_level level, const char *prefix, const char *mod, const char *text)
{
    switch (level) {
    case LOG_LEVEL_WARN: msg_warn("%s%s: %s", prefix, mod, text); break;
    case LOG_LEVEL_ERROR: msg_error("%s%s: %s", prefix, mod, text); break;
    default: msg_info("%s%s: %s", prefix, mod, text); break;
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
    log_text(level_of(level), "module ", m ? m->name : "?", text);
}

void petrel_log(petrel_session *h, petrel_log_level level, const char *fmt, ...)
{
    char text[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(text, sizeof(text), fmt, ap);
    va_end(ap);
    if (level == PETREL_LOG_DEBUG && !log_verbose())
        return;
    /* The module is known from the handle even when the session is gone:
     * its line is logged all the same, without a queue ID. */
    struct petrel_module *m = petrel_session_module(h);
    if (m == NULL)
        return;
    struct module_session *ms = module_rt ? handle_lookup(&module_rt->sessions, (uintptr_t)h, NULL, NULL) : NULL;
    if (ms == NULL || ms->host == NULL || !module_on_loop(m, __func__)) {
        log_text(level_of(level), "module ", m->name, text);
        return;
    }
    char prefix[64];
    snprintf(prefix, sizeof(prefix), "%s: ", ms->ops && ms->ops->log_id ? ms->ops->log_id(ms->host) : "NOQUEUE");
    log_text(level_of(level), prefix, m->name, text);
}
/* ------------------------------------------------------------------ */
/* loop services                                                       */

/* Where the loop is: NULL (logged) outside a role process's runtime. */
static struct module_runtime *loop_of(petrel_module *m, const char *fn)
{
    if (m == NULL || module_rt == NULL || module_rt->base == NULL) {
        msg_warn("module %s: %s: no event loop in this process (called from init, check or a tool?)",
                 m ? m->name : "?", fn);
        return NULL;
    }
    return module_on_loop(m, fn) ? module_rt : NULL;
}

struct module_timer {
    struct event *ev;
    uint32_t slot;
    petrel_timer_fn *fn;
    void *arg;
    struct petrel_module *m;
};

static void timer_fired(evutil_socket_t fd, short what, void *arg)
{
    struct module_timer *t = arg;
    petrel_timer_fn *fn = t->fn;
    void *fn_arg = t->arg;
    struct petrel_module *m = t->m;
    /* Released first: the handle is stale inside fn (a cancel there is a no-op). */
    handle_release(&module_rt->timers, t->slot);
    event_free(t->ev);
    free(t);
    struct module_crash_frame frame = module_crash_enter(m, "timer");
    fn(fn_arg);
    module_crash_leave(frame);
}

petrel_timer *petrel_timer_start(petrel_module *m, unsigned ms, petrel_timer_fn *fn, void *arg)
{
    struct module_runtime *rt = loop_of(m, __func__);
    if (rt == NULL || fn == NULL)
        return NULL;
    struct module_timer *t = xcalloc(1, sizeof(*t));
    uintptr_t h = handle_alloc(&rt->timers, t, (unsigned)m->index);
    if (h == 0) {
        msg_error("module %s: too many timers in this process: petrel_timer_start fails", m->name);
        free(t);
        return NULL;
    }
    t->slot = handle_slot(h);
    t->fn = fn;
    t->arg = arg;
    t->m = m;
    t->ev = evtimer_new(rt->base, timer_fired, t);
    struct timeval tv = { ms / 1000, (ms % 1000) * 1000 };
    evtimer_add(t->ev, &tv);
    return (petrel_timer *)h;
}

void petrel_timer_cancel(petrel_timer *h)
{
    if (h == NULL || module_rt == NULL)
        return;
    struct module_timer *t = handle_lookup(&module_rt->timers, (uintptr_t)h, NULL, NULL);
    if (t == NULL) {
        module_stale(&module_rt->timers, (uintptr_t)h, __func__);
        return;
    }
    if (!module_on_loop(t->m, __func__))
        return;
    handle_release(&module_rt->timers, t->slot);
    event_free(t->ev);
    free(t);
}

struct module_watch {
    struct event *ev;
    uint32_t slot;
    petrel_watch_fn *fn;
    void *arg;
    struct petrel_module *m;
};

static void watch_fired(evutil_socket_t fd, short what, void *arg)
{
    struct module_watch *w = arg;
    int events = (what & EV_READ ? PETREL_WATCH_READ : 0) | (what & EV_WRITE ? PETREL_WATCH_WRITE : 0);
    struct module_crash_frame frame = module_crash_enter(w->m, "fd watch");
    w->fn((int)fd, events, w->arg);   /* may cancel the watch: w is not touched after */
    module_crash_leave(frame);
}

petrel_watch *petrel_watch_fd(petrel_module *m, int fd, int events, petrel_watch_fn *fn, void *arg)
{
    struct module_runtime *rt = loop_of(m, __func__);
    if (rt == NULL || fn == NULL || fd < 0 || !(events & (PETREL_WATCH_READ | PETREL_WATCH_WRITE)))
        return NULL;
    struct module_watch *w = xcalloc(1, sizeof(*w));
    uintptr_t h = handle_alloc(&rt->watches, w, (unsigned)m->index);
    if (h == 0) {
        msg_error("module %s: too many fd watches in this process: petrel_watch_fd fails", m->name);
        free(w);
        return NULL;
    }
    w->slot = handle_slot(h);
    w->fn = fn;
    w->arg = arg;
    w->m = m;
    short what = EV_PERSIST | (events & PETREL_WATCH_READ ? EV_READ : 0) | (events & PETREL_WATCH_WRITE ? EV_WRITE : 0);
    w->ev = event_new(rt->base, fd, what, watch_fired, w);
    event_add(w->ev, NULL);
    return (petrel_watch *)h;
}

void petrel_watch_cancel(petrel_watch *h)
{
    if (h == NULL || module_rt == NULL)
        return;
    struct module_watch *w = handle_lookup(&module_rt->watches, (uintptr_t)h, NULL, NULL);
    if (w == NULL) {
        module_stale(&module_rt->watches, (uintptr_t)h, __func__);
        return;
    }
    if (!module_on_loop(w->m, __func__))
        return;
    handle_release(&module_rt->watches, w->slot);
    event_free(w->ev);
    free(w);
}

struct dns_call {
    petrel_dns_fn *fn;
    void *arg;
    struct petrel_module *m;
    int in_lookup;                      /* dns_lookup() has not returned yet */
    struct petrel_dns_answer copy;      /* an answer kept for the next loop turn */
    long ttl;                           /* its TTL */
};

/* petrel_dns_answer has no room for the TTL (it carries no size, so it
 * cannot grow): the answer being delivered and its TTL are the runtime's,
 * and petrel_dns_answer_ttl() asks for them while the callback runs. */
static void dns_deliver(struct dns_call *c, const petrel_dns_answer *a, long ttl)
{
    const petrel_dns_answer *outer = module_rt->dns_answer;
    long outer_ttl = module_rt->dns_ttl;
    module_rt->dns_answer = a;
    module_rt->dns_ttl = ttl;
    struct module_crash_frame frame = module_crash_enter(c->m, "dns callback");
    c->fn(a, c->arg);
    module_crash_leave(frame);
    module_rt->dns_answer = outer;
    module_rt->dns_ttl = outer_ttl;
}

long petrel_dns_answer_ttl(const petrel_dns_answer *a)
{
    struct module_runtime *rt = module_rt;
    if (rt == NULL || a == NULL || rt->dns_answer != a) {
        msg_warn("petrel_dns_answer_ttl: not the answer of a DNS callback that is running: -1");
        return -1;
    }
    return rt->dns_ttl;
}

static void dns_deferred(evutil_socket_t fd, short what, void *arg)
{
    struct dns_call *c = arg;
    dns_deliver(c, &c->copy, c->ttl);
    for (size_t i = 0; i < c->copy.count; i++)
        free((char *)c->copy.values[i]);
    free((void *)c->copy.values);
    free((void *)c->copy.preferences);
    free(c);
}

static void dns_done(const struct dns_answer *a, void *arg)
{
    struct dns_call *c = arg;
    petrel_dns_answer pa = { (petrel_dns_status)a->status, a->count, a->values, a->preferences };
    if (c->in_lookup) {
        /* Answered before petrel_dns_lookup returned: keep a copy for the next loop turn. */
        c->copy.status = pa.status;
        c->copy.count = pa.count;
        c->ttl = a->ttl;
        char **values = xcalloc(pa.count ? pa.count : 1, sizeof(*values));
        for (size_t i = 0; i < pa.count; i++)
            values[i] = xstrdup(pa.values[i]);
        c->copy.values = (const char *const *)values;
        if (pa.preferences && pa.count) {
            int *prefs = xcalloc(pa.count, sizeof(*prefs));
            memcpy(prefs, pa.preferences, pa.count * sizeof(*prefs));
            c->copy.preferences = prefs;
        }
        event_base_once(module_rt->base, -1, EV_TIMEOUT, dns_deferred, c, NULL);
        return;
    }
    dns_deliver(c, &pa, a->ttl);
    free(c);
}

int petrel_dns_lookup(petrel_module *m, petrel_dns_type type, const char *name, petrel_dns_fn *fn, void *arg)
{
    struct module_runtime *rt = loop_of(m, __func__);
    if (rt == NULL || rt->dns == NULL || fn == NULL || name == NULL)
        return -1;
    static const enum dns_type types[] = { DNS_A, DNS_AAAA, DNS_MX, DNS_TXT, DNS_PTR };
    if ((unsigned)type >= sizeof(types) / sizeof(types[0]))
        return -1;
    struct dns_call *c = xcalloc(1, sizeof(*c));
    c->fn = fn;
    c->arg = arg;
    c->m = m;
    c->in_lookup = 1;
    dns_lookup(rt->dns, types[type], name, dns_done, c);
    c->in_lookup = 0;   /* c may be scheduled for the next turn, never freed yet */
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
    c->m->blocking_calls--;
    struct module_crash_frame frame = module_crash_enter(c->m, "blocking call completion");
    c->done(c->arg);
    module_crash_leave(frame);
    free(c);
}

int petrel_run_blocking(petrel_module *m, void (*work)(void *arg), void (*done)(void *arg), void *arg)
{
    struct module_runtime *rt = loop_of(m, __func__);
    if (rt == NULL || rt->base == NULL || work == NULL || done == NULL)
        return -1;
    if (rt->pool == NULL)
        rt->pool = workq_create(rt->base, (int)rt->pool_threads);
    struct blocking_call *c = xcalloc(1, sizeof(*c));
    c->work = work;
    c->done = done;
    c->arg = arg;
    c->m = m;
    m->blocking_calls++;
    workq_submit(rt->pool, blocking_work, blocking_done, c);
    return 0;
}
