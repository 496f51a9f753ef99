/*
 * The dispatcher: calls module hooks and entry points for a module
 * session, checks their answers, and runs suspended calls to completion.
 *
 * API (runtime.h): module_run_phase walks the hook's module array (built
 * at load, hooks.c) in `modules` order; module_call calls one restriction
 * or SASL back-end; module_run_content and module_notify call the hooks
 * that may not suspend; module_notify_delivery serves the queue manager.
 *
 * Lifecycle of a suspended call. Inside its hook a module calls
 * petrel_suspend() and gets a petrel_pending handle (pending table,
 * runtime_int.h); the hook returns PENDING; the session waits (other
 * sessions go on) until one of:
 *   - petrel_resume(): the verdict is checked, the handle freed, and the
 *     completion runs on the next loop turn (never inside the module's
 *     callback, so the module's code after resume runs before the core
 *     moves the session on);
 *   - NAME_hook_timeout: the module's default action applies, the handle
 *     is freed;
 *   - the session closes: the handle is freed, nothing completes.
 * Once freed, the handle is stale: a second resume, a resume after the
 * timeout or after the session ended is logged and ignored.
 *
 * An early resume (petrel_resume() inside the hook, before it returns) is
 * honoured whatever the hook then returns: the resumed verdict is the
 * answer, and a hook that returns something other than PENDING after it
 * is logged as inconsistent. A hook that suspends and then returns a
 * verdict without resuming gets that verdict; its handle is cancelled.
 *
 * Answers are validated: REJECT needs a 5xx code and a 5.x.x enhanced
 * code, TEMPFAIL 4xx/4.x.x, text printable and at most 400 characters;
 * else the client gets 451 4.3.0 and the log names the module. Timeouts
 * and invalid answers count as failures for the module's circuit breaker
 * (module.c).
 */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <event2/event.h>

#include "lib/log.h"
#include "lib/xalloc.h"
#include "module/module.h"
#include "module/runtime_int.h"

enum pending_state { PENDING_IN_CALL, PENDING_RESUMED_EARLY, PENDING_WAITING };

struct module_pending {
    struct module_session *ms;
    struct petrel_module *m;
    enum pending_state state;
    struct event *timer;
    const char *label;
    int deferrals;                      /* DEFER_IF_PERMIT/REJECT are valid answers (a restriction) */
    double started;                     /* module_clock() at the call, for its duration */
    petrel_verdict early_verdict;
    int early_code;
    const char *early_enhanced, *early_text;
    int early_multiline;
};

enum call_outcome { CALL_ANSWERED, CALL_SUSPENDED, CALL_CLOSED };

static const char *const verdict_names[] = { "CONTINUE", "ACCEPT", "REJECT", "TEMPFAIL", "DISCARD", "HOLD",
                                             "PENDING", "DEFER_IF_REJECT", "DEFER_IF_PERMIT" };

static const char *verdict_name(petrel_verdict v)
{
    return (unsigned)v < sizeof(verdict_names) / sizeof(verdict_names[0]) ? verdict_names[v] : "(unknown)";
}

/* The verdict label of petrel_module_hook_calls_total. */
static const char *verdict_label(petrel_verdict v)
{
    static const char *const labels[] = { "continue", "accept", "reject", "tempfail", "discard", "hold",
                                          NULL, "defer_if_reject", "defer_if_permit" };
    return (unsigned)v < sizeof(labels) / sizeof(labels[0]) && labels[v] ? labels[v] : "invalid";
}

/* ------------------------------------------------------------------ */
/* answers                                                             */

void module_default_result(const struct petrel_module *m, struct module_result *out)
{
    memset(out, 0, sizeof(*out));
    out->by = m->reject_label;
    if (m->default_action == PETREL_ON_FAILURE_TEMPFAIL) {
        out->failure = 1;
        out->verdict = PETREL_TEMPFAIL;
        out->code = 451;
        out->enhanced = "4.3.0";
        out->text = "Error: filter temporarily unavailable, try again later";
    } else {
        out->verdict = PETREL_CONTINUE;
    }
}

static int valid_enhanced(const char *e, int cls)
{
    /* class.subject.detail: class must match the reply code's first digit */
    if (e == NULL || e[0] != '0' + cls || e[1] != '.')
        return 0;
    const char *p = e + 2;
    int digits = 0;
    while (*p >= '0' && *p <= '9' && digits < 4)
        p++, digits++;
    if (digits == 0 || *p != '.')
        return 0;
    p++;
    digits = 0;
    while (*p >= '0' && *p <= '9' && digits < 4)
        p++, digits++;
    return digits > 0 && *p == '\0';
}

/* A reply's text: one line of at most PETREL_REPLY_TEXT_MAX printable
 * characters, or (multiline, from petrel_set_reply_lines) 1 to
 * PETREL_REPLY_LINES_MAX such lines separated by '\n'. */
static int valid_text(const char *t, int multiline)
{
    size_t lines = 0;
    for (;;) {
        size_t len = 0;
        for (; t[len] && t[len] != '\n'; len++)
            if ((unsigned char)t[len] < 0x20 || t[len] == 0x7f)
                return 0;
        if (len > PETREL_REPLY_TEXT_MAX || ++lines > (multiline ? PETREL_REPLY_LINES_MAX : 1))
            return 0;
        if (t[len] == '\0')
            return 1;
        t += len + 1;
    }
}

static void internal_failure(struct module_result *out)
{
    out->failure = 1;
    out->verdict = PETREL_TEMPFAIL;
    out->code = 451;
    out->enhanced = "4.3.0";
    out->text = "Error: internal filter failure";
}

/* Turns a module's verdict and reply into a checked result. Returns 0, or
 * -1 when the module broke the rules (the result then says 451 4.3.0).
 * deferrals: the call is a restriction's, where DEFER_IF_REJECT and
 * DEFER_IF_PERMIT (with a 4xx reply) are answers too. */
static int check_answer(struct module_session *ms, const struct petrel_module *m, petrel_verdict v, int code,
                        const char *enhanced, const char *text, int multiline, int deferrals,
                        struct module_result *out)
{
    memset(out, 0, sizeof(*out));
    switch (v) {
    case PETREL_DEFER_IF_REJECT:
    case PETREL_DEFER_IF_PERMIT:
        if (!deferrals) {
            msg_warn("module %s: verdict %s outside a restriction (it belongs to restriction lists): answering "
                     "451 4.3.0", m->name, verdict_name(v));
            internal_failure(out);
            return -1;
        }
        if (code == 0)
            code = 450;
        if (enhanced == NULL)
            enhanced = "4.7.1";
        if (text == NULL)
            text = petrel_pool_printf(module_session_call_pool(ms), "Service unavailable (module %s)", m->name);
        if (code / 100 != 4 || code % 100 > 59 || !valid_enhanced(enhanced, 4) || !valid_text(text, multiline)) {
            char shown[101];
            snprintf(shown, sizeof shown, "%s", text);
            for (char *c = shown; *c; c++)
                if ((unsigned char)*c < 0x20 || *c == 0x7f)
                    *c = '?';
            msg_warn("module %s: invalid %s reply \"%d %s %s\": answering 451 4.3.0 instead", m->name,
                     verdict_name(v), code, enhanced, shown);
            internal_failure(out);
            return -1;
        }
        out->verdict = v;
        out->code = code;
        out->enhanced = petrel_pool_strdup(module_session_call_pool(ms), enhanced);
        out->text = petrel_pool_strdup(module_session_call_pool(ms), text);
        return 0;
    case PETREL_CONTINUE:
    case PETREL_ACCEPT:
    case PETREL_DISCARD:
    case PETREL_HOLD:
        out->verdict = v;
        return 0;
    case PETREL_REJECT:
    case PETREL_TEMPFAIL: {
        int cls = v == PETREL_REJECT ? 5 : 4;
        if (code == 0)
            code = cls == 5 ? 550 : 451;
        if (enhanced == NULL)
            enhanced = cls == 5 ? "5.7.1" : "4.7.1";
        if (text == NULL)
            text = petrel_pool_printf(module_session_call_pool(ms),
                                      cls == 5 ? "Rejected by module %s" : "Try again later (module %s)", m->name);
        if (code / 100 != cls || code % 100 > 59 || !valid_enhanced(enhanced, cls) || !valid_text(text, multiline)) {
            char shown[101];
            snprintf(shown, sizeof shown, "%s", text);
            for (char *c = shown; *c; c++)
                if ((unsigned char)*c < 0x20 || *c == 0x7f)
                    *c = '?';
            msg_warn("module %s: invalid %s reply \"%d %s %s\": answering 451 4.3.0 instead", m->name,
                     v == PETREL_REJECT ? "reject" : "tempfail", code, enhanced, shown);
            internal_failure(out);
            return -1;
        }
        out->verdict = v;
        out->code = code;
        out->enhanced = petrel_pool_strdup(module_session_call_pool(ms), enhanced);
        out->text = petrel_pool_strdup(module_session_call_pool(ms), text);
        return 0;
    }
    default:
        msg_warn("module %s: %s verdict %d: answering 451 4.3.0", m->name,
                 v == PETREL_PENDING ? "resumed with the" : "unknown", (int)v);
        internal_failure(out);
        return -1;
    }
}

/* Checks an answer, tells the circuit breaker how the module did, and
 * counts the call (label) for the metrics. */
static void settle(struct module_session *ms, struct petrel_module *m, int circuit, petrel_verdict v, int code,
                   const char *enhanced, const char *text, int multiline, int deferrals,
                   struct module_result *out, const char *label, double started)
{
    int broke = check_answer(ms, m, v, code, enhanced, text, multiline, deferrals, out);
    out->by = m->reject_label;
    if (broke != 0) {
        module_circuit_failure(m, time(NULL), "invalid reply");
        module_record_call(m, label, "invalid", started);
        return;
    }
    if (circuit)
        module_circuit_success(m);
    module_record_call(m, label, verdict_label(out->verdict), started);
}

/* ------------------------------------------------------------------ */
/* suspension                                                          */

static struct module_pending *pending_of(const struct module_session *ms)
{
    if (!ms->has_pending)
        return NULL;
    return module_rt->pendings.entries[ms->pending_slot].object;
}

static void pending_free(struct module_session *ms)
{
    struct module_pending *p = pending_of(ms);
    if (p == NULL)
        return;
    if (p->timer)
        event_free(p->timer);
    handle_release(&module_rt->pendings, ms->pending_slot);
    ms->has_pending = 0;
    free(p);
}

void module_pending_cancel(struct module_session *ms)
{
    pending_free(ms);
}

static void complete(struct module_session *ms, struct petrel_module *m, const struct module_result *r);

static void pending_timeout(evutil_socket_t fd, short what, void *arg)
{
    struct module_pending *p = arg;
    struct module_session *ms = p->ms;
    struct petrel_module *m = p->m;
    const char *peer = ms->ops && ms->ops->peer ? ms->ops->peer(ms->host) : "?";
    msg_warn("module %s: no answer within %u ms for %s (%s)", m->name, m->timeout_ms, peer, p->label);
    m->timeouts++;
    module_circuit_failure(m, time(NULL), "timeout");
    module_record_call(m, p->label, "timeout", p->started);
    pending_free(ms);
    struct module_result r;
    module_default_result(m, &r);
    complete(ms, m, &r);
}

static void arm_timeout(struct module_pending *p)
{
    unsigned ms = p->m->timeout_ms;
    struct timeval tv = { ms / 1000, (ms % 1000) * 1000 };
    p->timer = evtimer_new(module_rt->base, pending_timeout, p);
    evtimer_add(p->timer, &tv);
}

petrel_pending *petrel_suspend(petrel_session *h)
{
    struct petrel_module *m;
    struct module_session *ms = module_session_get(h, &m, __func__);
    if (ms == NULL)
        return NULL;
    if (ms->calling != m) {
        msg_warn("module %s: petrel_suspend outside a call of its own hook or restriction: nothing would "
                 "wait for it: ignored", m->name);
        return NULL;
    }
    if (!ms->calling_may_suspend) {
        msg_warn("module %s: the %s hook may not suspend: petrel_suspend ignored", m->name, ms->calling_label);
        return NULL;
    }
    if (ms->has_pending)   /* suspended twice in one call: the same handle */
        return (petrel_pending *)handle_for(&module_rt->pendings, ms->pending_slot, (unsigned)m->index);
    struct module_pending *p = xcalloc(1, sizeof(*p));
    p->ms = ms;
    p->m = m;
    p->state = PENDING_IN_CALL;
    p->label = ms->calling_label;
    p->deferrals = ms->calling_deferrals;
    p->started = ms->calling_started;
    uintptr_t ph = handle_alloc(&module_rt->pendings, p, (unsigned)m->index);
    if (ph == 0) {
        msg_error("module %s: too many pending calls in this process: petrel_suspend fails", m->name);
        free(p);
        return NULL;
    }
    ms->pending_slot = handle_slot(ph);
    ms->has_pending = 1;
    return (petrel_pending *)ph;
}

static void continue_later(evutil_socket_t fd, short what, void *arg)
{
    struct module_session *ms = arg;
    struct module_result r = ms->completed;
    complete(ms, ms->completed_by, &r);
}

void petrel_resume(petrel_pending *ph, petrel_verdict v, int code, const char *enhanced, const char *text)
{
    struct module_runtime *rt = module_rt;
    struct petrel_module *owner = rt ? module_by_index(handle_module(&rt->pendings, (uintptr_t)ph)) : NULL;
    if (rt == NULL || !module_on_loop(owner, __func__))
        return;
    struct module_pending *p = handle_lookup(&rt->pendings, (uintptr_t)ph, NULL, NULL);
    if (p == NULL) {
        module_stale(&rt->pendings, (uintptr_t)ph, __func__);
        return;
    }
    struct module_session *ms = p->ms;
    struct petrel_module *m = p->m;
    if (p->state == PENDING_RESUMED_EARLY) {
        msg_warn("module %s: petrel_resume called twice inside its %s call: the first verdict applies", m->name,
                 p->label);
        return;
    }
    int multiline = 0;
    if (code == 0 && enhanced == NULL && text == NULL) {
        /* petrel_set_reply() before the resume gives the reply */
        const struct module_reply *reply = &ms->replies[m->index];
        code = reply->code;
        enhanced = reply->enhanced;
        text = reply->text;
        multiline = reply->multiline;
    }
    if (p->state == PENDING_IN_CALL) {
        /* Resumed inside the hook: the answer is taken when the hook returns. */
        p->state = PENDING_RESUMED_EARLY;
        p->early_verdict = v;
        p->early_code = code;
        p->early_enhanced = enhanced ? petrel_pool_strdup(module_session_call_pool(ms), enhanced) : NULL;
        p->early_text = text ? petrel_pool_strdup(module_session_call_pool(ms), text) : NULL;
        p->early_multiline = multiline;
        return;
    }
    settle(ms, m, 1, v, code, enhanced, text, multiline, p->deferrals, &ms->completed, p->label, p->started);
    ms->completed_by = m;
    pending_free(ms);
    /* The module's callback finishes before the session moves on. */
    if (ms->continue_ev == NULL)
        ms->continue_ev = evtimer_new(rt->base, continue_later, ms);
    struct timeval now = { 0, 0 };
    evtimer_add(ms->continue_ev, &now);
}

petrel_session *petrel_pending_session(petrel_pending *ph)
{
    struct module_runtime *rt = module_rt;
    struct petrel_module *owner = rt ? module_by_index(handle_module(&rt->pendings, (uintptr_t)ph)) : NULL;
    if (rt == NULL || !module_on_loop(owner, __func__))
        return NULL;
    /* Asking is how a module learns that the session went away: no log line. */
    struct module_pending *p = handle_lookup(&rt->pendings, (uintptr_t)ph, NULL, NULL);
    if (p == NULL || p->ms->host == NULL)
        return NULL;
    return module_session_handle(p->ms, p->m);
}

void petrel_set_reply(petrel_session *h, int code, const char *enhanced, const char *text)
{
    struct petrel_module *m;
    struct module_session *ms = module_session_get(h, &m, __func__);
    if (ms == NULL)
        return;
    struct module_reply *r = &ms->replies[m->index];
    module_reply_clear(r);
    r->code = code;
    r->enhanced = enhanced ? xstrdup(enhanced) : NULL;
    r->text = text ? xstrdup(text) : NULL;
}

void petrel_set_reply_lines(petrel_session *h, int code, const char *enhanced, const char *const *lines,
                            size_t nlines)
{
    struct petrel_module *m;
    struct module_session *ms = module_session_get(h, &m, __func__);
    if (ms == NULL)
        return;
    struct module_reply *r = &ms->replies[m->index];
    module_reply_clear(r);
    r->code = code;
    r->enhanced = enhanced ? xstrdup(enhanced) : NULL;
    if (lines == NULL || nlines == 0)
        return;     /* no text: the default applies */
    /* One string, lines joined by '\n' (the checks refuse a '\n' inside a
     * line's text: it would end up separating two lines). */
    size_t total = 0;
    for (size_t i = 0; i < nlines; i++)
        total += strlen(lines[i] ? lines[i] : "") + 1;
    char *text = xmalloc(total);
    size_t o = 0;
    for (size_t i = 0; i < nlines; i++) {
        const char *l = lines[i] ? lines[i] : "";
        size_t n = strlen(l);
        memcpy(text + o, l, n);
        o += n;
        text[o++] = i + 1 < nlines ? '\n' : '\0';
    }
    r->text = text;
    r->multiline = 1;
}

/* ------------------------------------------------------------------ */
/* the end of a session                                                */

void module_session_destroy(struct module_session *ms)
{
    module_pending_cancel(ms);
    module_sasl_cancel(ms);
    if (ms->continue_ev)
        event_free(ms->continue_ev);
    for (int i = 0; module_rt && module_rt->set && i < module_rt->set->n; i++)
        module_reply_clear(&ms->replies[i]);
    module_notes_clear(ms, 0);
    if (module_rt)
        handle_release(&module_rt->sessions, ms->slot);
    free(ms->slots);
    free(ms->tx_slots);
    free(ms->replies);
    free(ms);
}

void module_session_close(struct module_session *ms)
{
    if (ms == NULL)
        return;
    /* Nothing calls back into the role from now on. */
    ms->host = NULL;
    ms->waiter = WAIT_NONE;
    if (ms->calling) {
        /* A module is running on this session (it made the role end it):
         * the call's return frees it. */
        ms->closed = 1;
        return;
    }
    module_session_destroy(ms);
}

/* ------------------------------------------------------------------ */
/* calling one entry point                                             */

typedef petrel_verdict entry_fn(petrel_session *h, struct petrel_module *m, const void *arg);

struct call_opts {
    const char *label;
    int may_suspend;
    int circuit;                /* the answer counts for the circuit breaker */
    int verdict;                /* the answer is a verdict (else informational) */
    int deferrals;              /* a restriction: DEFER_IF_REJECT/PERMIT are answers */
};

/* Calls fn for module m on ms with the call state set up, and turns what
 * happened into an answer (*out) or a suspension. */
static enum call_outcome call_entry(struct module_session *ms, struct petrel_module *m, const struct call_opts *o,
                                    entry_fn *fn, const void *arg, struct module_result *out)
{
    module_reply_clear(&ms->replies[m->index]);
    ms->calling = m;
    ms->calling_label = o->label;
    ms->calling_may_suspend = o->may_suspend;
    ms->calling_deferrals = o->deferrals;
    ms->calling_started = module_clock();
    double started = ms->calling_started;
    m->calls++;
    struct module_crash_frame frame = module_crash_enter(m, o->label);
    petrel_verdict v = fn(module_session_handle(ms, m), m, arg);
    module_crash_leave(frame);
    ms->calling = NULL;
    if (ms->closed) {
        module_session_destroy(ms);
        return CALL_CLOSED;
    }
    struct module_pending *p = pending_of(ms);
    if (v == PETREL_PENDING && !o->may_suspend) {
        msg_warn("module %s: the %s hook may not suspend: its PENDING is ignored", m->name, o->label);
        pending_free(ms);
        memset(out, 0, sizeof(*out));
        out->verdict = PETREL_CONTINUE;
        module_record_call(m, o->label, "invalid", started);
        return CALL_ANSWERED;
    }
    if (p && p->state == PENDING_RESUMED_EARLY) {
        if (v != PETREL_PENDING)
            msg_warn("module %s: %s returned %s after petrel_resume() inside it: the resumed verdict %s applies",
                     m->name, o->label, verdict_name(v), verdict_name(p->early_verdict));
        settle(ms, m, o->circuit, p->early_verdict, p->early_code, p->early_enhanced, p->early_text,
               p->early_multiline, o->deferrals, out, o->label, started);
        pending_free(ms);
        return CALL_ANSWERED;
    }
    if (v == PETREL_PENDING) {
        if (p == NULL) {
            msg_warn("module %s: %s returned PENDING without petrel_suspend(): treated as a failure", m->name,
                     o->label);
            module_circuit_failure(m, time(NULL), "PENDING without a handle");
            module_record_call(m, o->label, "failed", started);
            module_default_result(m, out);
            return CALL_ANSWERED;
        }
        p->state = PENDING_WAITING;
        arm_timeout(p);
        return CALL_SUSPENDED;
    }
    if (p) {
        msg_warn("module %s: %s suspended, then returned %s without resuming: the handle is cancelled", m->name,
                 o->label, verdict_name(v));
        pending_free(ms);
    }
    if (!o->verdict) {
        memset(out, 0, sizeof(*out));
        out->verdict = PETREL_CONTINUE;
        module_record_call(m, o->label, "none", started);
        return CALL_ANSWERED;
    }
    const struct module_reply *reply = &ms->replies[m->index];
    settle(ms, m, o->circuit, v, reply->code, reply->enhanced, reply->text, reply->multiline, o->deferrals, out,
           o->label, started);
    return CALL_ANSWERED;
}

/* ------------------------------------------------------------------ */
/* phases                                                              */

struct hook_call {
    enum module_hook hook;
    const struct module_hook_args *args;
};

static petrel_verdict hook_entry(petrel_session *h, struct petrel_module *m, const void *arg)
{
    const struct hook_call *c = arg;
    return module_hook(c->hook)->invoke(&m->c.hooks, m, h, c->args);
}

/* Folds one module's answer into the phase; returns 1 when the phase is decided. */
static int absorb(struct module_session *ms, const struct module_result *r)
{
    switch (r->verdict) {
    case PETREL_REJECT:
    case PETREL_TEMPFAIL:
        ms->run.result = *r;
        return 1;
    case PETREL_ACCEPT:
        /* this phase needs no more opinions */
        return 1;
    case PETREL_DISCARD:
    case PETREL_HOLD:
        if (ms->run.result.verdict != PETREL_DISCARD)
            ms->run.result.verdict = r->verdict;
        return 0;
    default:
        return 0;
    }
}

static void finish_phase(struct module_session *ms)
{
    struct module_result result = ms->run.result;
    module_done_fn *done = ms->done;
    ms->waiter = WAIT_NONE;
    done(ms->host, &result);
}

static void run_next(struct module_session *ms)
{
    const struct module_phase *ph = &module_rt->set->phases[ms->run.hook];
    const struct module_hook_def *def = module_hook(ms->run.hook);
    for (; ms->run.index < ph->n; ms->run.index++) {
        struct petrel_module *m = ph->mods[ms->run.index];
        struct module_result r;
        if (m->index == ms->off_index)
            continue;
        if (!module_circuit_allows(m, time(NULL))) {
            module_record_call(m, def->name, "skipped", 0);
            module_default_result(m, &r);
        } else {
            struct call_opts o = { def->name, def->may_suspend, 1, 1, 0 };
            struct hook_call c = { ms->run.hook, &ms->run.args };
            enum call_outcome out = call_entry(ms, m, &o, hook_entry, &c, &r);
            if (out != CALL_ANSWERED)
                return;   /* the completion goes on, or the session is gone */
        }
        if (absorb(ms, &r)) {
            ms->run.index++;
            finish_phase(ms);
            return;
        }
    }
    finish_phase(ms);
}

/* A suspended call answered (or timed out): continue what waited for it. */
static void complete(struct module_session *ms, struct petrel_module *m, const struct module_result *r)
{
    switch (ms->waiter) {
    case WAIT_PHASE:
        ms->run.index++;
        if (absorb(ms, r)) {
            finish_phase(ms);
            return;
        }
        run_next(ms);
        return;
    case WAIT_CALL: {
        module_done_fn *done = ms->done;
        ms->waiter = WAIT_NONE;
        done(ms->host, r);
        return;
    }
    case WAIT_NONE:
        return;
    }
}

void module_run_phase(struct module_session *ms, enum module_hook h, const struct module_hook_args *args,
                      module_done_fn *done)
{
    ms->waiter = WAIT_PHASE;
    ms->done = done;
    ms->run.hook = h;
    ms->run.index = 0;
    ms->run.args = *args;
    memset(&ms->run.result, 0, sizeof(ms->run.result));
    ms->run.result.verdict = PETREL_CONTINUE;
    run_next(ms);
}

struct invoke_call {
    module_invoke_fn *invoke;
    const void *arg;
};

static petrel_verdict invoke_entry(petrel_session *h, struct petrel_module *m, const void *arg)
{
    const struct invoke_call *c = arg;
    return c->invoke(h, c->arg);
}

int module_call(struct module_session *ms, struct petrel_module *m, const char *label, unsigned flags,
                module_invoke_fn *invoke, const void *arg, module_done_fn *done, struct module_result *out)
{
    if (!module_circuit_allows(m, time(NULL))) {
        module_record_call(m, label, "skipped", 0);
        module_default_result(m, out);
        return 1;
    }
    ms->waiter = WAIT_CALL;
    ms->done = done;
    struct call_opts o = { label, 1, 1, 1, (flags & MODULE_CALL_RESTRICTION) != 0 };
    struct invoke_call c = { invoke, arg };
    enum call_outcome outcome = call_entry(ms, m, &o, invoke_entry, &c, out);
    if (outcome == CALL_ANSWERED) {
        ms->waiter = WAIT_NONE;
        return 1;
    }
    return 0;
}

void module_run_content(struct module_session *ms, enum module_hook h, const struct module_hook_args *args,
                        struct module_result *out)
{
    memset(out, 0, sizeof(*out));
    out->verdict = PETREL_CONTINUE;
    const struct module_phase *ph = &module_rt->set->phases[h];
    const struct module_hook_def *def = module_hook(h);
    for (int i = 0; i < ph->n; i++) {
        struct petrel_module *m = ph->mods[i];
        if (m->index == ms->off_index)
            continue;
        if (!module_circuit_allows(m, time(NULL))) {
            module_record_call(m, def->name, "skipped", 0);
            continue;
        }
        struct module_result r;
        struct call_opts o = { def->name, 0, 0, 1, 0 };
        struct hook_call c = { h, args };
        if (call_entry(ms, m, &o, hook_entry, &c, &r) == CALL_CLOSED)
            return;
        if (r.verdict == PETREL_CONTINUE || r.verdict == PETREL_ACCEPT)
            continue;
        *out = r;
        if (r.verdict == PETREL_REJECT || r.verdict == PETREL_TEMPFAIL)
            return;
    }
}

void module_notify(struct module_session *ms, enum module_hook h, const struct module_hook_args *args)
{
    const struct module_phase *ph = &module_rt->set->phases[h];
    const struct module_hook_def *def = module_hook(h);
    for (int i = 0; i < ph->n; i++) {
        struct module_result ignored;
        if (ph->mods[i]->index == ms->off_index)
            continue;
        struct call_opts o = { def->name, 0, 0, 0, 0 };
        struct hook_call c = { h, args };
        if (call_entry(ms, ph->mods[i], &o, hook_entry, &c, &ignored) == CALL_CLOSED)
            return;
    }
}

void module_notify_delivery(const petrel_delivery_result *r, module_message_read_fn *read, void *read_arg,
                            unsigned long long content_length)
{
    if (!module_hook_active(MODULE_HOOK_DELIVERY))
        return;
    const struct module_phase *ph = &module_rt->set->phases[MODULE_HOOK_DELIVERY];
    const struct module_hook_def *def = module_hook(MODULE_HOOK_DELIVERY);
    struct module_hook_args args = { .delivery = r };
    for (int i = 0; i < ph->n; i++) {
        struct petrel_module *m = ph->mods[i];
        if (!module_circuit_allows(m, time(NULL)))
            continue;
        m->calls++;
        double started = module_clock();
        /* What petrel_delivery_message_open reads, for this call only: its
         * readers go stale when the hook returns (message.c). */
        struct module_delivery_call call = { m, r, read, read_arg, content_length, NULL };
        struct module_delivery_call *outer = module_rt->delivery;
        module_rt->delivery = &call;
        struct module_crash_frame frame = module_crash_enter(m, def->name);
        def->invoke(&m->c.hooks, m, NULL, &args);
        module_crash_leave(frame);
        module_rt->delivery = outer;
        module_message_release_all(&call.readers);
        module_record_call(m, def->name, "none", started);
    }
}
