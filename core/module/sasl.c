/*
 * SASL server back-ends (ABI 1.1 petrel_sasl_server) in the module
 * runtime: the requests through which a back-end answers the role's
 * questions (which mechanisms, start, step), now or later, and the end of
 * an exchange. The SMTP half of AUTH (base64, 334, replies, logs) and the
 * choice of mechanisms are smtpd's (smtpd/auth.c, smtpd/sasl_glue.c); this
 * file only carries questions and answers, the way dispatch.c carries hook
 * calls.
 *
 * A petrel_sasl_request is a handle (runtime_int.h), like a petrel_pending:
 * a slot of the process's request table with a generation. A module
 * session has at most one request outstanding (the session waits for it).
 * It goes stale when it is answered, when the module's NAME_hook_timeout
 * passes (the role then hears TEMPFAIL, "authentication server did not
 * answer"), when the exchange ends (after the back-end's end() has
 * returned, so end() may still answer it) and when the session closes.
 * An answer through a stale handle is logged and ignored, never a crash,
 * so a back-end that answers from a worker-thread completion or a socket
 * callback need not know whether anybody still waits.
 *
 * An answer given while the back-end's callback is still running is kept
 * and handed to the role when the callback returns, so the role never
 * re-enters a back-end from inside its own call. Timeouts count as
 * failures for the module's circuit breaker; while its circuit is open,
 * questions are answered TEMPFAIL without calling it. Every question is
 * counted in the module's call metrics under its label ("sasl start"),
 * with the status of the answer.
 */
#include "config.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <event2/event.h>

#include "lib/log.h"
#include "lib/xalloc.h"
#include "module/module.h"
#include "module/runtime_int.h"

struct module_sasl_request {
    struct module_session *ms;
    struct petrel_module *m;
    enum module_sasl_kind kind;
    const char *label;
    double started;
    int in_call;                      /* the back-end's callback is still running */
    int answered;                     /* answered inside the callback: handed over when it returns */
    int ending;                       /* end() is running: an answer only releases the request */
    struct event *timer;
    module_sasl_done_fn *done;
    /* the answer (malloc'd copies) */
    struct module_sasl_reply reply;
    petrel_sasl_mechanism *mechs;
    unsigned char *data;
    char *username, *reason;
};

static const char *const labels[] = { [MODULE_SASL_MECHANISMS] = "sasl mechanisms",
                                      [MODULE_SASL_START] = "sasl start", [MODULE_SASL_STEP] = "sasl step" };

static const char *status_label(const struct module_sasl_reply *r)
{
    if (r->offered)
        return "offer";
    switch (r->status) {
    case PETREL_SASL_CHALLENGE:
        return "challenge";
    case PETREL_SASL_SUCCESS:
        return "success";
    case PETREL_SASL_FAILURE:
        return "failure";
    default:
        return "tempfail";
    }
}

static struct module_sasl_request *request_of(const struct module_session *ms)
{
    if (!ms->has_sasl)
        return NULL;
    return module_rt->sasl_requests.entries[ms->sasl_slot].object;
}

static void request_free(struct module_sasl_request *r)
{
    struct module_session *ms = r->ms;
    if (r->timer)
        event_free(r->timer);
    handle_release(&module_rt->sasl_requests, ms->sasl_slot);
    ms->has_sasl = 0;
    for (size_t i = 0; i < r->reply.nmechanisms; i++)
        free((char *)r->mechs[i].name);
    free(r->mechs);
    if (r->data) {
        explicit_bzero(r->data, r->reply.len);
        free(r->data);
    }
    free(r->username);
    free(r->reason);
    free(r);
}

void module_sasl_cancel(struct module_session *ms)
{
    struct module_sasl_request *r = request_of(ms);
    if (r)
        request_free(r);
}

/* Hands the answer to the role (the request is gone when done runs). */
static void deliver(struct module_sasl_request *r)
{
    struct module_session *ms = r->ms;
    module_sasl_done_fn *done = r->done;
    struct module_sasl_reply reply = r->reply;
    /* The copies live until done returns: detach them from the request. */
    petrel_sasl_mechanism *mechs = r->mechs;
    unsigned char *data = r->data;
    char *username = r->username, *reason = r->reason;
    size_t nmechs = r->reply.nmechanisms;
    r->mechs = NULL;
    r->data = NULL;
    r->username = r->reason = NULL;
    r->reply.nmechanisms = 0;
    module_record_call(r->m, r->label, reply.timed_out ? "timeout" : status_label(&reply), r->started);
    request_free(r);
    if (ms->host)
        done(ms->host, &reply);
    for (size_t i = 0; i < nmechs; i++)
        free((char *)mechs[i].name);
    free(mechs);
    if (data) {
        explicit_bzero(data, reply.len);
        free(data);
    }
    free(username);
    free(reason);
}

static void request_timeout(evutil_socket_t fd, short what, void *arg)
{
    struct module_sasl_request *r = arg;
    struct petrel_module *m = r->m;
    const char *peer = r->ms->ops && r->ms->ops->peer ? r->ms->ops->peer(r->ms->host) : "?";
    msg_warn("module %s: no answer within %u ms for %s (%s)", m->name, m->timeout_ms, peer, r->label);
    m->timeouts++;
    module_circuit_failure(m, time(NULL), "timeout");
    r->reply.timed_out = 1;
    r->reply.offered = 0;
    r->reply.status = PETREL_SASL_TEMPFAIL;
    free(r->reason);
    r->reason = xstrdup("authentication server did not answer");
    r->reply.reason = r->reason;
    deliver(r);
}

/* Printable and bounded: it reaches the log and the client's reply. */
static char *dup_text(const char *t, size_t max)
{
    if (t == NULL)
        return NULL;
    size_t n = strnlen(t, max);
    char *c = xmalloc(n + 1);
    for (size_t i = 0; i < n; i++)
        c[i] = ((unsigned char)t[i] < 0x20 || t[i] == 0x7f) ? '?' : t[i];
    c[n] = '\0';
    return c;
}

/* The live request behind a handle, or NULL (logged as stale). */
static struct module_sasl_request *request_get(petrel_sasl_request *h, const char *fn)
{
    struct module_runtime *rt = module_rt;
    struct petrel_module *owner = rt ? module_by_index(handle_module(&rt->sasl_requests, (uintptr_t)h)) : NULL;
    if (rt == NULL || !module_on_loop(owner, fn))
        return NULL;
    struct module_sasl_request *r = handle_lookup(&rt->sasl_requests, (uintptr_t)h, NULL, NULL);
    if (r == NULL)
        module_stale(&rt->sasl_requests, (uintptr_t)h, fn);
    return r;
}

/* Takes the answer; hands it over now, or when the callback returns. */
static void answered(struct module_sasl_request *r)
{
    if (r->ending) {
        request_free(r);
        return;
    }
    r->answered = 1;
    if (!r->in_call)
        deliver(r);
}

void petrel_sasl_reply(petrel_sasl_request *h, const petrel_sasl_answer *a)
{
    struct module_sasl_request *r = request_get(h, __func__);
    if (r == NULL || a == NULL)
        return;
    if (r->answered) {
        msg_warn("module %s: petrel_sasl_reply: the request was answered already inside its %s call: the first "
                 "answer applies", r->m->name, r->label);
        return;
    }
    petrel_sasl_status st = a->status;
    if (r->kind == MODULE_SASL_MECHANISMS && st != PETREL_SASL_TEMPFAIL) {
        msg_warn("module %s: a mechanisms request answered with petrel_sasl_reply(): taken as a temporary "
                 "failure", r->m->name);
        st = PETREL_SASL_TEMPFAIL;
    } else if (st != PETREL_SASL_CHALLENGE && st != PETREL_SASL_SUCCESS && st != PETREL_SASL_FAILURE &&
               st != PETREL_SASL_TEMPFAIL) {
        msg_warn("module %s: petrel_sasl_reply: unknown status %d: taken as a temporary failure", r->m->name,
                 (int)st);
        st = PETREL_SASL_TEMPFAIL;
    }
    r->reply.status = st;
    if (a->data && a->len) {
        r->data = xmalloc(a->len);
        memcpy(r->data, a->data, a->len);
        r->reply.data = r->data;
        r->reply.len = a->len;
    }
    r->username = dup_text(a->username, 256);
    r->reason = dup_text(a->reason, 200);
    r->reply.username = r->username;
    r->reply.reason = r->reason;
    module_circuit_success(r->m);
    answered(r);
}

void petrel_sasl_offer(petrel_sasl_request *h, const petrel_sasl_mechanism *mechanisms, size_t n)
{
    struct module_sasl_request *r = request_get(h, __func__);
    if (r == NULL)
        return;
    if (r->answered || r->kind != MODULE_SASL_MECHANISMS) {
        msg_warn("module %s: petrel_sasl_offer() for a request that %s: ignored", r->m->name,
                 r->answered ? "was answered already" : "is no mechanisms request");
        return;
    }
    if (n > 64)
        n = 64;
    r->mechs = xcalloc(n ? n : 1, sizeof(*r->mechs));
    size_t kept = 0;
    for (size_t i = 0; i < n && mechanisms; i++) {
        /* the names go into EHLO's AUTH line: only RFC 4422 names do */
        const char *name = mechanisms[i].name ? mechanisms[i].name : "";
        size_t len = strlen(name);
        if (len == 0 || len > 20 || strspn(name, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_") != len) {
            msg_warn("module %s: petrel_sasl_offer(): \"%.40s\" is not an RFC 4422 mechanism name: not offered",
                     r->m->name, name);
            continue;
        }
        r->mechs[kept].name = xstrdup(name);
        r->mechs[kept].properties = mechanisms[i].properties;
        kept++;
    }
    r->reply.offered = 1;
    r->reply.mechanisms = r->mechs;
    r->reply.nmechanisms = kept;
    module_circuit_success(r->m);
    answered(r);
}

petrel_module *petrel_sasl_request_module(petrel_sasl_request *h)
{
    /* The module is part of the handle: known even when the request is stale. */
    return module_rt ? module_by_index(handle_module(&module_rt->sasl_requests, (uintptr_t)h)) : NULL;
}

/* ------------------------------------------------------------------ */
/* what the role asks                                                  */

/* Runs fn with the call state a hook has (the crash frame, ms->calling so
 * that a session closed from inside waits for the return). Returns -1 when
 * the session was closed meanwhile (ms is gone). */
static int call_backend(struct module_session *ms, struct petrel_module *m, const char *label,
                        void (*fn)(const void *arg), const void *arg)
{
    /* The role may end an exchange from inside another module's call:
     * that call's state comes back afterwards. */
    struct petrel_module *outer = ms->calling;
    const char *outer_label = ms->calling_label;
    int outer_may_suspend = ms->calling_may_suspend;
    double outer_started = ms->calling_started;
    ms->calling = m;
    ms->calling_label = label;
    ms->calling_may_suspend = 0;
    ms->calling_started = module_clock();
    m->calls++;
    struct module_crash_frame frame = module_crash_enter(m, label);
    fn(arg);
    module_crash_leave(frame);
    ms->calling = outer;
    ms->calling_label = outer_label;
    ms->calling_may_suspend = outer_may_suspend;
    ms->calling_started = outer_started;
    if (outer == NULL && ms->closed) {
        module_session_destroy(ms);
        return -1;
    }
    return 0;
}

struct ask {
    const struct module_sasl_question *q;
    petrel_sasl_request *h;
};

static void ask_backend(const void *arg)
{
    const struct ask *a = arg;
    const struct module_sasl_question *q = a->q;
    switch (q->kind) {
    case MODULE_SASL_MECHANISMS:
        q->server->mechanisms(a->h, q->context);
        break;
    case MODULE_SASL_START:
        q->server->start(a->h, q->context, q->mechanism, q->data, q->len, q->state);
        break;
    case MODULE_SASL_STEP:
        q->server->step(a->h, q->context, *q->state, q->data, q->len);
        break;
    }
}

static void answer_now(struct module_session *ms, struct petrel_module *m, const struct module_sasl_question *q,
                       module_sasl_done_fn *done, const char *reason)
{
    struct module_sasl_reply reply = { .status = PETREL_SASL_TEMPFAIL, .reason = reason };
    module_record_call(m, labels[q->kind], "skipped", 0);
    done(ms->host, &reply);
}

void module_sasl_ask(struct module_session *ms, struct petrel_module *m, const struct module_sasl_question *q,
                     module_sasl_done_fn *done)
{
    module_sasl_cancel(ms);   /* one question at a time: an older one answers nobody */
    if (!module_circuit_allows(m, time(NULL))) {
        answer_now(ms, m, q, done, "authentication server unavailable");
        return;
    }
    struct module_sasl_request *r = xcalloc(1, sizeof(*r));
    uintptr_t h = handle_alloc(&module_rt->sasl_requests, r, (unsigned)m->index);
    if (h == 0) {
        free(r);
        msg_error("module %s: too many SASL requests in this process", m->name);
        answer_now(ms, m, q, done, "too many authentication requests");
        return;
    }
    r->ms = ms;
    r->m = m;
    r->kind = q->kind;
    r->label = labels[q->kind];
    r->done = done;
    r->in_call = 1;
    r->started = module_clock();
    ms->sasl_slot = handle_slot(h);
    ms->has_sasl = 1;
    q->context->module = m;
    q->context->session = module_session_handle(ms, m);
    struct ask a = { q, (petrel_sasl_request *)h };
    if (call_backend(ms, m, r->label, ask_backend, &a) != 0)
        return;   /* the session closed inside the call: the request went with it */
    r = request_of(ms);
    if (r == NULL)
        return;
    r->in_call = 0;
    if (r->answered) {
        deliver(r);
        return;
    }
    unsigned timeout = m->timeout_ms ? m->timeout_ms : 10000;
    struct timeval tv = { timeout / 1000, (timeout % 1000) * 1000 };
    r->timer = evtimer_new(module_rt->base, request_timeout, r);
    evtimer_add(r->timer, &tv);
}

struct end_call {
    const petrel_sasl_server *server;
    const petrel_sasl_context *context;
    void *state;
};

static void end_backend(const void *arg)
{
    const struct end_call *e = arg;
    e->server->end(e->context, e->state);
}

void module_sasl_end(struct module_session *ms, struct petrel_module *m, const petrel_sasl_server *server,
                     petrel_sasl_context *c, void *state)
{
    struct module_sasl_request *r = request_of(ms);
    if (r) {
        /* end() may still answer it; nobody hears that answer */
        if (r->timer)
            event_del(r->timer);
        r->ending = 1;
    }
    if (server->end) {
        c->session = module_session_handle(ms, m);
        struct end_call e = { server, c, state };
        if (call_backend(ms, m, "sasl end", end_backend, &e) != 0)
            return;
    }
    module_sasl_cancel(ms);
}
