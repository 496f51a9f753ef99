/*
 * The plugin API as smtpd implements it: what a module sees of a session
 * (facts, pools, slots), the edits it may request, the services it may use,
 * and the dispatcher that calls every module's hook of one SMTP phase.
 *
 * Hooks run in the order of `modules`. A hook that suspends hands out a
 * struct petrel_pending; the phase waits for it (other sessions go on) until
 * the module resumes it or NAME_hook_timeout fires, whichever comes first.
 * A handle is heap-owned and freed only by petrel_resume(), so a late
 * resume after a timeout or after the session died touches nothing but the
 * handle: the session orphans its handles when it goes away.
 *
 * A module's verdict is validated: REJECT needs a 5xx reply and TEMPFAIL a
 * 4xx one, else the client gets 451 4.3.0 and the log names the module.
 * Timeouts and invalid replies count as failures for the module's circuit
 * breaker (module/module.c).
 *
 * While a hook runs, the worker records which module and hook it is in
 * (module/crash.c), so that a crash is logged with their names before the
 * process dies. Services that do not depend on the session (timers, DNS,
 * parameters, ...) live in module/services.c.
 */
#include "config.h"

#include <errno.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include <event2/event.h>

#include <petrel/plugin.h>
#include "config/cfg.h"
#include "lib/dns.h"
#include "lib/log.h"
#include "lib/workq.h"
#include "lib/xalloc.h"
#include "module/module.h"
#include "smtpd/restrict.h"
#include "smtpd/smtpd_int.h"

#define SESSION_OF(ps) ((ps)->smtpd)
#define enter smtpd_plugin_enter
#define leave smtpd_plugin_leave


/* ------------------------------------------------------------------ */
/* replies                                                             */

void petrel_set_reply(petrel_session *ps, int code, const char *enhanced, const char *text)
{
    struct smtpd_session *s = SESSION_OF(ps);
    petrel_pool *pool = smtpd_cmd_pool(s);
    ps->reply_code = code;
    ps->reply_enhanced = enhanced ? petrel_pool_strdup(pool, enhanced) : NULL;
    ps->reply_text = text ? petrel_pool_strdup(pool, text) : NULL;
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

static int printable_text(const char *t)
{
    for (; *t; t++)
        if ((unsigned char)*t < 0x20 || *t == 0x7f)
            return 0;
    return 1;
}

/* Turns a module's verdict and reply into a checked result. Returns 0, or
 * -1 when the module broke the rules (the result then says 451 4.3.0). */
int smtpd_plugin_result(struct smtpd_session *s, struct petrel_module *m, petrel_verdict v, int code,
                        const char *enhanced, const char *text, struct restrict_result *out)
{
    petrel_pool *pool = smtpd_cmd_pool(s);
    memset(out, 0, sizeof(*out));
    switch (v) {
    case PETREL_CONTINUE: out->verdict = RV_DUNNO; return 0;
    case PETREL_ACCEPT: out->verdict = RV_PERMIT; return 0;
    case PETREL_DISCARD: out->verdict = RV_DISCARD; return 0;
    case PETREL_HOLD: out->verdict = RV_HOLD; return 0;
    case PETREL_REJECT:
    case PETREL_TEMPFAIL: {
        int cls = v == PETREL_REJECT ? 5 : 4;
        if (code == 0)
            code = cls == 5 ? 550 : 451;
        if (enhanced == NULL)
            enhanced = cls == 5 ? "5.7.1" : "4.7.1";
        if (text == NULL)
            text = petrel_pool_printf(pool, cls == 5 ? "Rejected by module %s" : "Try again later (module %s)",
                                      m->name);
        if (code / 100 != cls || code % 100 > 59 || !valid_enhanced(enhanced, cls) || !printable_text(text) ||
            strlen(text) > 400) {
            msg_warn("module %s: invalid %s reply \"%d %s %.100s\": answering 451 4.3.0 instead", m->name,
                     v == PETREL_REJECT ? "reject" : "tempfail", code, enhanced, text);
            out->verdict = RV_DEFER;
            out->code = 451;
            out->enhanced = "4.3.0";
            out->text = "Error: internal filter failure";
            return -1;
        }
        out->verdict = cls == 5 ? RV_REJECT : RV_DEFER;
        out->code = code;
        out->enhanced = petrel_pool_strdup(pool, enhanced);
        out->text = petrel_pool_strdup(pool, text);
        return 0;
    }
    default:
        msg_warn("module %s: unknown verdict %d: answering 451 4.3.0", m->name, (int)v);
        out->verdict = RV_DEFER;
        out->code = 451;
        out->enhanced = "4.3.0";
        out->text = "Error: internal filter failure";
        return -1;
    }
}

/* What a failing, slow or circuit-broken module means for the phase. */
void smtpd_plugin_default_result(struct petrel_module *m, struct restrict_result *out)
{
    memset(out, 0, sizeof(*out));
    if (m->default_action == PETREL_ON_FAILURE_TEMPFAIL) {
        out->verdict = RV_DEFER;
        out->code = 451;
        out->enhanced = "4.3.0";
        out->text = "Error: filter temporarily unavailable, try again later";
    } else {
        out->verdict = RV_DUNNO;
    }
}

/* ------------------------------------------------------------------ */
/* suspension                                                          */

struct petrel_pending {
    struct petrel_pending *next, *prev;   /* the session's list */
    struct smtpd_session *s;              /* NULL once orphaned */
    struct petrel_module *m;
    struct event *timer;
    int done;                             /* the session moved on (timeout) */
    void (*complete)(struct smtpd_session *s, struct petrel_pending *p, const struct restrict_result *r);
};

static void pending_unlink(struct petrel_pending *p)
{
    struct smtpd_session *s = p->s;
    if (s == NULL)
        return;
    if (p->prev)
        p->prev->next = p->next;
    else
        s->pending = p->next;
    if (p->next)
        p->next->prev = p->prev;
    p->next = p->prev = NULL;
}

static void pending_timeout(evutil_socket_t fd, short what, void *arg)
{
    struct petrel_pending *p = arg;
    struct smtpd_session *s = p->s;
    p->done = 1;
    msg_warn("module %s: no answer within %u ms for %s", p->m->name, p->m->timeout_ms, s->namaddr);
    p->m->timeouts++;
    module_circuit_failure(p->m, time(NULL), "timeout");
    struct restrict_result r;
    smtpd_plugin_default_result(p->m, &r);
    p->complete(s, p, &r);
}

petrel_pending *petrel_suspend(petrel_session *ps)
{
    struct smtpd_session *s = SESSION_OF(ps);
    struct petrel_pending *p = xcalloc(1, sizeof(*p));
    p->s = s;
    p->m = ps->module;
    p->next = s->pending;
    if (s->pending)
        s->pending->prev = p;
    s->pending = p;
    ps->suspended = p;
    return p;
}

/* Arms the timeout of a handle the hook returned PENDING with. */
void smtpd_plugin_wait(struct smtpd_session *s, struct petrel_pending *p,
                       void (*complete)(struct smtpd_session *, struct petrel_pending *, const struct restrict_result *))
{
    p->complete = complete;
    struct timeval tv = { p->m->timeout_ms / 1000, (p->m->timeout_ms % 1000) * 1000 };
    p->timer = evtimer_new(s->worker->base, pending_timeout, p);
    evtimer_add(p->timer, &tv);
}

void petrel_resume(petrel_pending *p, petrel_verdict v, int code, const char *enhanced, const char *text)
{
    if (p == NULL)
        return;
    struct smtpd_session *s = p->s;
    if (p->timer)
        event_free(p->timer);
    p->timer = NULL;
    if (s == NULL || p->done || p->complete == NULL) {
        /* Too late (timeout fired, session gone) or resumed inside the hook
         * before it returned PENDING (the caller sees it through done). */
        if (s != NULL && p->complete == NULL && !p->done) {
            p->done = 1;
            s->api.early_verdict = v;
            s->api.early_code = code;
            s->api.early_enhanced = enhanced ? petrel_pool_strdup(smtpd_cmd_pool(s), enhanced) : NULL;
            s->api.early_text = text ? petrel_pool_strdup(smtpd_cmd_pool(s), text) : NULL;
            s->api.resumed_early = 1;
            return;   /* freed by the caller that is still inside the hook */
        }
        pending_unlink(p);
        free(p);
        return;
    }
    p->done = 1;
    pending_unlink(p);
    struct restrict_result r;
    if (smtpd_plugin_result(s, p->m, v, code, enhanced, text, &r) != 0)
        module_circuit_failure(p->m, time(NULL), "invalid reply");
    else
        module_circuit_success(p->m);
    void (*complete)(struct smtpd_session *, struct petrel_pending *, const struct restrict_result *) = p->complete;
    free(p);
    complete(s, NULL, &r);
}

void smtpd_plugin_session_gone(struct smtpd_session *s)
{
    struct petrel_pending *p = s->pending, *next;
    for (; p; p = next) {
        next = p->next;
        if (p->timer)
            event_free(p->timer);
        p->timer = NULL;
        p->s = NULL;          /* orphaned: the module's resume frees it */
        p->next = p->prev = NULL;
    }
    s->pending = NULL;
}

/* Calls one module entry point with the session prepared for it; maps an
 * early resume (inside the hook) to a normal verdict. */
petrel_verdict smtpd_plugin_call(struct smtpd_session *s, struct petrel_module *m, const char *hook,
                                 petrel_verdict (*call)(petrel_session *, void *), void *arg,
                                 struct petrel_pending **pending)
{
    s->api.smtpd = s;
    s->api.module = m;
    s->api.suspended = NULL;
    s->api.reply_code = 0;
    s->api.reply_enhanced = NULL;
    s->api.reply_text = NULL;
    s->api.resumed_early = 0;
    m->calls++;
    enter(m, hook);
    petrel_verdict v = call(&s->api, arg);
    leave();
    *pending = NULL;
    if (v != PETREL_PENDING && s->api.suspended) {
        /* Suspended, then answered directly after all: the handle is dead. */
        struct petrel_pending *p = s->api.suspended;
        pending_unlink(p);
        if (p->timer)
            event_free(p->timer);
        if (s->api.resumed_early) {
            free(p);
        } else {
            p->s = NULL;      /* a later petrel_resume() frees it */
            p->done = 1;
        }
        s->api.suspended = NULL;
    }
    if (v == PETREL_PENDING) {
        struct petrel_pending *p = s->api.suspended;
        if (p == NULL) {
            msg_warn("module %s: hook %s returned PENDING without petrel_suspend(): treated as a failure",
                     m->name, hook);
            module_circuit_failure(m, time(NULL), "PENDING without a handle");
            return PETREL_TEMPFAIL + 100;   /* caller applies the default action */
        }
        if (s->api.resumed_early) {
            pending_unlink(p);
            free(p);
            s->api.reply_code = s->api.early_code;
            s->api.reply_enhanced = s->api.early_enhanced;
            s->api.reply_text = s->api.early_text;
            return s->api.early_verdict;
        }
        *pending = p;
    }
    return v;
}

/* ------------------------------------------------------------------ */
/* phase dispatcher                                                    */

struct hook_run {
    enum smtpd_phase phase;
    int index;
    const char *arg;
    struct restrict_result result;      /* collected HOLD/DISCARD, or the final refusal */
    smtpd_phase_done_fn *done;
};

static const char *phase_names[] = { "connect", "helo", "starttls", "auth", "mail", "rcpt", "data",
                                     "end_of_headers", "end_of_message" };

struct phase_arg {
    enum smtpd_phase phase;
    const char *arg;
};

static petrel_verdict call_phase(petrel_session *ps, void *varg)
{
    struct phase_arg *a = varg;
    const petrel_hooks *h = &ps->module->desc->hooks;
    switch (a->phase) {
    case PHASE_CONNECT: return h->connect(ps);
    case PHASE_HELO: return h->helo(ps, a->arg);
    case PHASE_STARTTLS: return h->starttls(ps);
    case PHASE_AUTH: return h->auth(ps, a->arg, SESSION_OF(ps)->sasl_username);
    case PHASE_MAIL: return h->mail(ps, a->arg);
    case PHASE_RCPT: return h->rcpt(ps, a->arg);
    case PHASE_DATA: return h->data(ps);
    case PHASE_EOH: return h->end_of_headers(ps);
    case PHASE_EOM: return h->end_of_message(ps);
    }
    return PETREL_CONTINUE;
}

static int has_hook(const struct petrel_module *m, enum smtpd_phase phase)
{
    const petrel_hooks *h = &m->desc->hooks;
    switch (phase) {
    case PHASE_CONNECT: return h->connect != NULL;
    case PHASE_HELO: return h->helo != NULL;
    case PHASE_STARTTLS: return h->starttls != NULL;
    case PHASE_AUTH: return h->auth != NULL;
    case PHASE_MAIL: return h->mail != NULL;
    case PHASE_RCPT: return h->rcpt != NULL;
    case PHASE_DATA: return h->data != NULL;
    case PHASE_EOH: return h->end_of_headers != NULL;
    case PHASE_EOM: return h->end_of_message != NULL;
    }
    return 0;
}

static void run_hooks(struct smtpd_session *s, struct hook_run *run);

/* Folds one module's answer into the run; returns 1 when the phase is decided. */
static int absorb(struct smtpd_session *s, struct hook_run *run, const struct restrict_result *r)
{
    switch (r->verdict) {
    case RV_REJECT:
    case RV_DEFER:
        run->result = *r;
        return 1;
    case RV_PERMIT:
        /* ACCEPT: this phase needs no more opinions. */
        return 1;
    case RV_DISCARD:
    case RV_HOLD:
        if (run->result.verdict != RV_DISCARD)
            run->result.verdict = r->verdict;
        return 0;
    default:
        return 0;
    }
}

static void finish_run(struct smtpd_session *s, struct hook_run *run)
{
    s->hook_run = NULL;
    smtpd_phase_done_fn *done = run->done;
    struct restrict_result result = run->result;
    done(s, &result);
}

static void hook_completed(struct smtpd_session *s, struct petrel_pending *p, const struct restrict_result *r)
{
    struct hook_run *run = s->hook_run;
    if (run == NULL)
        return;
    run->index++;
    if (absorb(s, run, r)) {
        finish_run(s, run);
        return;
    }
    run_hooks(s, run);
}

static void run_hooks(struct smtpd_session *s, struct hook_run *run)
{
    struct module_set *set = s->worker->modules;
    time_t now = time(NULL);
    for (; set && run->index < set->n; run->index++) {
        struct petrel_module *m = set->mods[run->index];
        if (!has_hook(m, run->phase))
            continue;
        struct restrict_result r;
        if (!module_circuit_allows(m, now)) {
            smtpd_plugin_default_result(m, &r);
            if (absorb(s, run, &r)) {
                finish_run(s, run);
                return;
            }
            continue;
        }
        struct phase_arg a = { run->phase, run->arg };
        struct petrel_pending *pending;
        petrel_verdict v = smtpd_plugin_call(s, m, phase_names[run->phase], call_phase, &a, &pending);
        if (pending) {
            smtpd_plugin_wait(s, pending, hook_completed);
            return;   /* hook_completed continues the run */
        }
        if ((int)v == PETREL_TEMPFAIL + 100) {
            smtpd_plugin_default_result(m, &r);
        } else if (smtpd_plugin_result(s, m, v, s->api.reply_code, s->api.reply_enhanced, s->api.reply_text,
                                       &r) != 0) {
            module_circuit_failure(m, now, "invalid reply");
        } else {
            module_circuit_success(m);
        }
        if (absorb(s, run, &r)) {
            run->index++;
            finish_run(s, run);
            return;
        }
    }
    finish_run(s, run);
}

int smtpd_phase_has_hooks(struct smtpd_session *s, enum smtpd_phase phase)
{
    struct module_set *set = s->worker->modules;
    for (int i = 0; set && i < set->n; i++)
        if (has_hook(set->mods[i], phase))
            return 1;
    return 0;
}

void smtpd_run_phase(struct smtpd_session *s, enum smtpd_phase phase, const char *arg, smtpd_phase_done_fn *done)
{
    petrel_pool *pool = smtpd_cmd_pool(s);
    struct hook_run *run = petrel_pool_zalloc(pool, sizeof(*run));
    run->phase = phase;
    run->arg = arg;
    run->done = done;
    run->result.verdict = RV_DUNNO;
    s->hook_run = run;
    s->state = SMTPD_WAIT;
    run_hooks(s, run);
}

/* Content hooks (header, end of headers, body) may not suspend: they are
 * called as content streams in. A refusal (or HOLD/DISCARD) is remembered
 * and answered at the end of data; after a refusal no more are called. */
void smtpd_plugin_content(struct smtpd_session *s, enum smtpd_content_hook which, const char *name,
                          const char *data, size_t len)
{
    static const char *const hook_names[] = { "header", "end_of_headers", "body" };
    struct module_set *set = s->worker->modules;
    for (int i = 0; set && i < set->n; i++) {
        struct petrel_module *m = set->mods[i];
        const petrel_hooks *h = &m->desc->hooks;
        int present = which == CONTENT_HEADER ? h->header != NULL
                    : which == CONTENT_EOH ? h->end_of_headers != NULL : h->body != NULL;
        int refused_already = s->tx->content_verdict.verdict == RV_REJECT ||
                              s->tx->content_verdict.verdict == RV_DEFER;
        if (!present || refused_already || !module_circuit_allows(m, time(NULL)))
            continue;
        s->api.smtpd = s;
        s->api.module = m;
        s->api.reply_code = 0;
        s->api.reply_enhanced = s->api.reply_text = NULL;
        enter(m, hook_names[which]);
        petrel_verdict v = which == CONTENT_HEADER ? h->header(&s->api, name, data)
                         : which == CONTENT_EOH ? h->end_of_headers(&s->api) : h->body(&s->api, data, len);
        leave();
        if (v == PETREL_PENDING) {
            msg_warn("module %s: the %s hook may not suspend: ignored", m->name, hook_names[which]);
            continue;
        }
        struct restrict_result r;
        smtpd_plugin_result(s, m, v, s->api.reply_code, s->api.reply_enhanced, s->api.reply_text, &r);
        if (r.verdict == RV_REJECT || r.verdict == RV_DEFER || r.verdict == RV_DISCARD || r.verdict == RV_HOLD)
            s->tx->content_verdict = r;
    }
}

void smtpd_plugin_header(struct smtpd_session *s, const char *name, const char *value)
{
    smtpd_plugin_content(s, CONTENT_HEADER, name, value, 0);
}

void smtpd_plugin_body(struct smtpd_session *s, const char *chunk, size_t len)
{
    smtpd_plugin_content(s, CONTENT_BODY, NULL, chunk, len);
}

void smtpd_plugin_queued(struct smtpd_session *s, const char *queue_id)
{
    struct module_set *set = s->worker->modules;
    for (int i = 0; set && i < set->n; i++) {
        struct petrel_module *m = set->mods[i];
        if (m->desc->hooks.queued == NULL)
            continue;
        s->api.smtpd = s;
        s->api.module = m;
        enter(m, "queued");
        m->desc->hooks.queued(&s->api, queue_id);
        leave();
    }
}

/* ------------------------------------------------------------------ */
/* facts                                                               */

petrel_pool *petrel_session_pool(petrel_session *ps) { return SESSION_OF(ps)->pool; }
petrel_pool *petrel_tx_pool(petrel_session *ps) { return SESSION_OF(ps)->tx ? SESSION_OF(ps)->tx->pool : NULL; }
petrel_module *petrel_session_module(petrel_session *ps) { return ps->module; }

static void **slot(petrel_pool *pool, void ***slots, struct module_set *set, struct petrel_module *m)
{
    if (*slots == NULL)
        *slots = petrel_pool_zalloc(pool, (size_t)(set->n ? set->n : 1) * sizeof(void *));
    for (int i = 0; i < set->n; i++)
        if (set->mods[i] == m)
            return &(*slots)[i];
    return &(*slots)[0];
}

void **petrel_session_slot(petrel_session *ps)
{
    struct smtpd_session *s = SESSION_OF(ps);
    return slot(s->pool, &s->module_slots, s->worker->modules, ps->module);
}

void **petrel_tx_slot(petrel_session *ps)
{
    struct smtpd_session *s = SESSION_OF(ps);
    if (s->tx == NULL)
        return NULL;
    return slot(s->tx->pool, &s->tx->module_slots, s->worker->modules, ps->module);
}

const char *petrel_client_addr(petrel_session *ps) { return SESSION_OF(ps)->addr; }
const char *petrel_client_name(petrel_session *ps) { return SESSION_OF(ps)->name; }
const char *petrel_helo(petrel_session *ps) { return SESSION_OF(ps)->helo; }
int petrel_in_mynetworks(petrel_session *ps) { return SESSION_OF(ps)->in_mynetworks; }
const char *petrel_tls_info(petrel_session *ps) { return SESSION_OF(ps)->tls_info; }
const char *petrel_sasl_username(petrel_session *ps) { return SESSION_OF(ps)->sasl_username; }
const char *petrel_service_name(petrel_session *ps) { return SESSION_OF(ps)->set->service_name; }

const char *petrel_sender(petrel_session *ps)
{
    struct smtpd_session *s = SESSION_OF(ps);
    if (s->tx == NULL)
        return NULL;
    return s->tx->edits.sender ? s->tx->edits.sender : s->tx->mail.address;
}

const char *petrel_recipient(petrel_session *ps) { return ps->rcpt; }

size_t petrel_recipient_count(petrel_session *ps)
{
    struct smtpd_session *s = SESSION_OF(ps);
    return s->tx ? s->tx->nrcpts : 0;
}

const char *petrel_recipient_at(petrel_session *ps, size_t i)
{
    struct smtpd_session *s = SESSION_OF(ps);
    if (s->tx == NULL || i >= s->tx->nrcpts)
        return NULL;
    return s->tx->rcpts[i].address;
}

const char *petrel_queue_id(petrel_session *ps)
{
    struct smtpd_session *s = SESSION_OF(ps);
    return s->tx && s->tx->queue_id[0] ? s->tx->queue_id : NULL;
}

int petrel_header_at(petrel_session *ps, size_t i, const char **name, const char **value)
{
    struct smtpd_session *s = SESSION_OF(ps);
    if (s->tx == NULL || i >= s->tx->nheaders)
        return -1;
    *name = s->tx->headers[i].name;
    const char *v = s->tx->headers[i].value;
    *value = v[0] == ' ' ? v + 1 : v;   /* as the header hook sees it */
    return 0;
}

/* ------------------------------------------------------------------ */
/* edits                                                               */

static int header_name_ok(const char *name)
{
    if (name == NULL || *name == '\0' || strlen(name) > 200)
        return 0;
    for (const char *p = name; *p; p++)
        if ((unsigned char)*p <= 32 || (unsigned char)*p >= 127 || *p == ':')
            return 0;
    return 1;
}

/* A header value may be folded (CRLF followed by white space) but must not
 * end a header early or inject another one. */
static int header_value_ok(const char *value)
{
    for (const char *p = value; *p; p++) {
        if (*p == '\r' || *p == '\n') {
            if (p[0] != '\r' || p[1] != '\n' || (p[2] != ' ' && p[2] != '\t'))
                return 0;
            p++;
        } else if ((unsigned char)*p < 0x20 && *p != '\t') {
            return 0;
        }
    }
    return 1;
}

static struct smtpd_edit *new_edit(struct smtpd_session *s, enum smtpd_edit_kind kind)
{
    struct smtpd_tx *tx = s->tx;
    struct smtpd_edit *e = petrel_pool_zalloc(tx->pool, sizeof(*e));
    e->kind = kind;
    if (tx->edits.last)
        tx->edits.last->next = e;
    else
        tx->edits.first = e;
    tx->edits.last = e;
    tx->edits.count++;
    return e;
}

static int edit_allowed(struct smtpd_session *s, const char *what)
{
    if (s->tx == NULL) {
        msg_warn("module %s: %s outside a mail transaction: ignored", s->api.module ? s->api.module->name : "?",
                 what);
        return 0;
    }
    return 1;
}

int petrel_header_add(petrel_session *ps, const char *name, const char *value)
{
    return petrel_header_insert(ps, (size_t)-1, name, value);
}

int petrel_header_insert(petrel_session *ps, size_t index, const char *name, const char *value)
{
    struct smtpd_session *s = SESSION_OF(ps);
    if (!edit_allowed(s, "header insert") || !header_name_ok(name) || value == NULL || !header_value_ok(value))
        return -1;
    struct smtpd_edit *e = new_edit(s, EDIT_HEADER_INSERT);
    e->index = index;
    e->name = petrel_pool_strdup(s->tx->pool, name);
    e->value = petrel_pool_strdup(s->tx->pool, value);
    e->value_len = strlen(value);
    return 0;
}

int petrel_header_change(petrel_session *ps, const char *name, size_t nth, const char *value)
{
    struct smtpd_session *s = SESSION_OF(ps);
    if (!edit_allowed(s, "header change") || !header_name_ok(name) || nth == 0 ||
        (value && !header_value_ok(value)))
        return -1;
    struct smtpd_edit *e = new_edit(s, EDIT_HEADER_CHANGE);
    e->index = nth;
    e->name = petrel_pool_strdup(s->tx->pool, name);
    e->value = value ? petrel_pool_strdup(s->tx->pool, value) : NULL;
    e->value_len = value ? strlen(value) : 0;
    return 0;
}

static int address_ok(const char *a)
{
    if (a == NULL || strlen(a) > 512)
        return 0;
    for (const char *p = a; *p; p++)
        if ((unsigned char)*p < 0x21 || *p == '<' || *p == '>' || (unsigned char)*p == 0x7f)
            return 0;
    return 1;
}

int petrel_sender_change(petrel_session *ps, const char *sender)
{
    struct smtpd_session *s = SESSION_OF(ps);
    if (!edit_allowed(s, "sender change") || !address_ok(sender))
        return -1;
    s->tx->edits.sender = petrel_pool_strdup(s->tx->pool, sender);
    return 0;
}

int petrel_recipient_add(petrel_session *ps, const char *rcpt)
{
    struct smtpd_session *s = SESSION_OF(ps);
    if (!edit_allowed(s, "recipient add") || !address_ok(rcpt) || *rcpt == '\0')
        return -1;
    struct smtpd_edit *e = new_edit(s, EDIT_RCPT_ADD);
    e->value = petrel_pool_strdup(s->tx->pool, rcpt);
    return 0;
}

int petrel_recipient_delete(petrel_session *ps, const char *rcpt)
{
    struct smtpd_session *s = SESSION_OF(ps);
    if (!edit_allowed(s, "recipient delete") || rcpt == NULL)
        return -1;
    struct smtpd_edit *e = new_edit(s, EDIT_RCPT_DELETE);
    e->value = petrel_pool_strdup(s->tx->pool, rcpt);
    return 0;
}

int petrel_body_replace(petrel_session *ps, const char *body, size_t len)
{
    struct smtpd_session *s = SESSION_OF(ps);
    if (!edit_allowed(s, "body replace") || body == NULL)
        return -1;
    s->tx->edits.body = petrel_pool_memdup(s->tx->pool, body, len);
    s->tx->edits.body_len = len;
    s->tx->edits.body_replaced = 1;
    return 0;
}

int petrel_quarantine(petrel_session *ps, const char *reason)
{
    struct smtpd_session *s = SESSION_OF(ps);
    if (!edit_allowed(s, "quarantine"))
        return -1;
    s->tx->hold = 1;
    s->tx->edits.quarantine_reason = petrel_pool_strdup(s->tx->pool, reason ? reason : "quarantined");
    return 0;
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

void petrel_log(petrel_session *ps, petrel_log_level level, const char *fmt, ...)
{
    struct smtpd_session *s = SESSION_OF(ps);
    char text[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(text, sizeof(text), fmt, ap);
    va_end(ap);
    if (level == PETREL_LOG_DEBUG && !log_verbose())
        return;
    const char *qid = s->tx && s->tx->queue_id[0] ? s->tx->queue_id : "NOQUEUE";
    const char *mod = ps->module ? ps->module->name : "?";
    switch (level_of(level)) {
    case LOG_LEVEL_WARN: msg_warn("%s: %s: %s", qid, mod, text); break;
    case LOG_LEVEL_ERROR: msg_error("%s: %s: %s", qid, mod, text); break;
    default: msg_info("%s: %s: %s", qid, mod, text); break;
    }
}
