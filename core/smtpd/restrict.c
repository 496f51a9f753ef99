/*
 * The restriction engine's evaluation (see restrict.h and restrict_int.h);
 * the compiler is restrict_compile.c.
 *
 * A run walks the stages of one command (client, helo, sender, relay,
 * recipient with smtpd_delay_reject at RCPT), each stage list in a frame;
 * classes and table results that name restrictions open nested frames.
 * Postfix's state per command is kept: warn_if_reject (the next
 * restriction's reject is only logged), defer_if_reject (a later 5xx
 * becomes the remembered 4xx) and defer_if_permit (kept in the session
 * across stages, checked at the end of RCPT, DATA and END-OF-MESSAGE).
 */
#include "config.h"

#include <ctype.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "config/cfg.h"
#include "lib/dns.h"
#include "lib/log.h"
#include "lib/xalloc.h"
#include "mail/addr_class.h"
#include "mail/smtp_syntax.h"
#include "module/module.h"
#include "module/runtime.h"
#include "smtpd/access_action.h"
#include "smtpd/rcpt_maps.h"
#include "smtpd/restrict.h"
#include "smtpd/restrict_int.h"
#include "smtpd/smtpd_int.h"
#include "tables/table.h"

/* ------------------------------------------------------------------ */
/* evaluation                                                          */

static struct restrict_list *stage_list(const struct smtpd_settings *set, enum restrict_stage stage)
{
    switch (stage) {
    case RS_CLIENT: return set->client_restrictions;
    case RS_HELO: return set->helo_restrictions;
    case RS_SENDER: return set->sender_restrictions;
    case RS_RECIPIENT: return set->recipient_restrictions;
    case RS_RELAY: return set->relay_restrictions;
    case RS_DATA: return set->data_restrictions;
    case RS_EOD: return set->eod_restrictions;
    default: return NULL;
    }
}

static enum restrict_verdict decide(struct restrict_result *r, enum restrict_verdict v, int code,
                                    const char *enhanced, const char *text)
{
    r->verdict = v;
    r->code = code;
    r->enhanced = enhanced;
    r->text = text;
    return v;
}

/* The name of the step running now (what refuses), for the metrics. */
static const char *step_name(const struct restrict_run *run)
{
    return run->step ? run->step->name : NULL;
}

void restrict_log(struct smtpd_session *s, struct restrict_run *run, const char *what, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    char *text = petrel_pool_vprintf(smtpd_cmd_pool(s), fmt, ap);
    va_end(ap);
    smtpd_log_event(s, what, run->where, text, run->rcpt);
}

/* Keeps a reply printable and within an SMTP line (Postfix: printable()
 * and 510 characters). */
static const char *reply_text(petrel_pool *pool, const char *text, size_t room)
{
    size_t len = strlen(text);
    if (len > room)
        len = room;
    char *out = petrel_pool_strndup(pool, text, len);
    for (char *p = out; *p; p++)
        if ((unsigned char)*p < 0x20 || *p == 0x7f)
            *p = ' ';
    return out;
}

static enum restrict_verdict refuse(struct smtpd_session *s, struct restrict_run *run, enum restrict_error_class cls,
                                    int code, const char *dsn, const char *text, struct restrict_result *r)
{
    petrel_pool *pool = smtpd_cmd_pool(s);
    char fixed[12];
    if (code < 400 || code > 599 || access_dsn_valid(dsn) == 0) {
        msg_warn("SMTP reply code configuration error: %d %s %s", code, dsn, text);
        code = 450;
        dsn = "4.7.1";
        text = "Service unavailable";
    }
    int warn = run->warn_if_reject && cls != RCLASS_SOFTWARE && cls != RCLASS_RESOURCE && cls != RCLASS_DATA;
    if (!warn && run->defer_if_reject.active && code >= 500) {
        /* An earlier defer_if_reject: report that instead. */
        struct restrict_deferral d = run->defer_if_reject;
        run->defer_if_reject.active = 0;
        run->warn_if_reject = 0;
        enum restrict_verdict v = refuse(s, run, d.error_class, d.code, d.dsn, petrel_pool_strdup(pool, d.text), r);
        r->restriction = d.restriction;
        return v;
    }
    /* The enhanced code's class follows the reply code's. */
    snprintf(fixed, sizeof(fixed), "%c%s", '0' + code / 100, dsn + 1);
    text = reply_text(pool, text, 500);
    if (warn) {
        smtpd_log_reject(s, "reject_warning", run->where, step_name(run), code, fixed, text, run->rcpt);
        return RV_DUNNO;
    }
    return decide(r, code >= 500 ? RV_REJECT : RV_DEFER, code, petrel_pool_strdup(pool, fixed), text);
}

enum restrict_verdict restrict_refuse(struct smtpd_session *s, struct restrict_run *run,
                                      enum restrict_error_class cls, int code, const char *dsn,
                                      struct restrict_result *r, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    char *text = petrel_pool_vprintf(smtpd_cmd_pool(s), fmt, ap);
    va_end(ap);
    return refuse(s, run, cls, code, dsn, text, r);
}

__attribute__((format(printf, 6, 0)))
static void defer_if(struct restrict_deferral *d, const char *restriction, enum restrict_error_class cls, int code,
                     const char *dsn, const char *fmt, va_list ap)
{
    if (d->active)
        return;   /* the first reason is kept */
    d->active = 1;
    d->restriction = restriction;
    d->error_class = cls;
    d->code = code;
    snprintf(d->dsn, sizeof(d->dsn), "%s", dsn);
    vsnprintf(d->text, sizeof(d->text), fmt, ap);
}

enum restrict_verdict restrict_defer_if_permit(struct smtpd_session *s, struct restrict_run *run,
                                               int tempfail_defer_if_permit, enum restrict_error_class cls,
                                               int code, const char *dsn, struct restrict_result *r,
                                               const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    if (run->warn_if_reject == 0 && tempfail_defer_if_permit) {
        defer_if(&s->defer_if_permit, step_name(run), cls, code, dsn, fmt, ap);
        va_end(ap);
        return RV_DUNNO;
    }
    char *text = petrel_pool_vprintf(smtpd_cmd_pool(s), fmt, ap);
    va_end(ap);
    return refuse(s, run, cls, code, dsn, text, r);
}

void restrict_defer_if_reject(struct smtpd_session *s, struct restrict_run *run, enum restrict_error_class cls,
                              int code, const char *dsn, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    defer_if(&run->defer_if_reject, step_name(run), cls, code, dsn, fmt, ap);
    va_end(ap);
}

enum restrict_verdict restrict_server_error(struct smtpd_session *s, struct restrict_run *run,
                                            struct restrict_result *r)
{
    return refuse(s, run, RCLASS_SOFTWARE, 451, "4.3.5", "Server configuration error", r);
}

enum restrict_verdict restrict_lookup_failure(struct smtpd_session *s, struct restrict_run *run, const char *name,
                                              struct restrict_result *r)
{
    return restrict_refuse(s, run, RCLASS_DATA, 451, "4.3.0", r, "<%s>: Temporary lookup failure", name);
}

/* The deferral remembered by defer_if_permit, as the command's answer. */
static enum restrict_verdict deferral(struct smtpd_session *s, struct restrict_run *run,
                                      const struct restrict_deferral *d, struct restrict_result *r)
{
    enum restrict_verdict v = refuse(s, run, d->error_class, d->code, d->dsn,
                                     petrel_pool_strdup(smtpd_cmd_pool(s), d->text), r);
    if (r->restriction == NULL)
        r->restriction = d->restriction;
    return v;
}

static void push_frame(struct smtpd_session *s, struct restrict_run *run, const struct restrict_list *list,
                       const char *reply_name, const char *reply_class)
{
    if (run->depth == run->frame_cap) {
        /* Grows in the session's pool; bounded by RESTRICT_MAX_DEPTH. */
        int cap = run->frame_cap ? run->frame_cap * 2 : 8;
        struct restrict_frame *grown = petrel_pool_zalloc(s->pool, (size_t)cap * sizeof(*grown));
        if (run->depth)
            memcpy(grown, run->frames, (size_t)run->depth * sizeof(*grown));
        run->frames = grown;
        run->frame_cap = cap;
    }
    struct restrict_frame *f = &run->frames[run->depth++];
    f->list = list;
    f->index = 0;
    f->reply_name = reply_name;
    f->reply_class = reply_class;
}

enum restrict_verdict restrict_push(struct smtpd_session *s, struct restrict_run *run,
                                    const struct restrict_list *list, const char *reply_name,
                                    const char *reply_class, struct restrict_result *r)
{
    if (run->depth >= RESTRICT_MAX_DEPTH) {
        msg_warn("restriction %s causes unreasonable recursion", reply_class);
        return restrict_server_error(s, run, r);
    }
    push_frame(s, run, list, reply_name, reply_class);
    return RV_NESTED;
}

/* Reply name and class of a stage's own refusals (Postfix's generic_checks arguments). */
static void stage_subject(struct smtpd_session *s, struct restrict_run *run, enum restrict_stage stage,
                          const char **name, const char **class)
{
    switch (stage) {
    case RS_CLIENT:
        *name = s->namaddr, *class = SUBJECT_CLIENT;
        break;
    case RS_HELO:
        *name = s->helo ? s->helo : "", *class = SUBJECT_HELO;
        break;
    case RS_SENDER:
        *name = s->tx && s->tx->mail.address ? s->tx->mail.address : "", *class = SUBJECT_SENDER;
        break;
    case RS_RECIPIENT:
    case RS_RELAY:
        *name = run->rcpt ? run->rcpt : "", *class = SUBJECT_RECIPIENT;
        break;
    case RS_DATA:
        *name = "DATA", *class = SUBJECT_DATA;
        break;
    default:
        *name = "END-OF-MESSAGE", *class = SUBJECT_EOD;
        break;
    }
}

/* Postfix's SMTPD_CHECK_RESET and the defer_if_permit flag of the stage:
 * raised by an earlier stage of the same transaction, or not at all. */
static void stage_begin(struct smtpd_session *s, struct restrict_run *run, enum restrict_stage stage)
{
    int previous_relay = run->stage_index > 0 && run->stages[run->stage_index - 1] == RS_RELAY;
    if (!(stage == RS_RECIPIENT && previous_relay)) {
        run->warn_if_reject = 0;
        run->defer_if_reject.active = 0;
    }
    switch (stage) {
    case RS_CLIENT: s->defer_if_permit.active = 0; break;
    case RS_HELO: s->defer_if_permit.active = s->defer_if_permit_client; break;
    case RS_SENDER:
        s->defer_if_permit.active = s->defer_if_permit_client | s->defer_if_permit_helo;
        run->sender_maps_checked = 0;
        break;
    case RS_RELAY: s->defer_if_permit.active = s->defer_if_permit_sender; break;
    case RS_RECIPIENT:
        if (!previous_relay)
            s->defer_if_permit.active = s->defer_if_permit_sender;
        break;
    default: s->defer_if_permit.active = 0; break;
    }
    const char *name, *class;
    stage_subject(s, run, stage, &name, &class);
    struct restrict_list *list = stage_list(s->set, stage);
    /* Postfix evaluates no HELO restrictions before HELO/EHLO. */
    if (stage == RS_HELO && s->helo == NULL)
        list = NULL;
    if (!restrict_list_empty(list))
        push_frame(s, run, list, name, class);
}

/* Postfix's reject_unlisted_recipient and reject_unlisted_sender (explicit
 * in a list, or implicit at the end of the recipient or sender checks):
 * an unknown address in one of our domains is refused with the class's
 * code; a table that fails defers. */
static enum restrict_verdict check_unlisted(struct smtpd_session *s, struct restrict_run *run, int sender,
                                            struct restrict_result *r)
{
    /* receive_override_options = no_unknown_recipient_checks: a later pass
     * (after a content filter) or nobody validates addresses here. */
    if (s->set->receive_override & RO_NO_UNKNOWN_RCPT)
        return RV_DUNNO;
    const char *address = sender ? (s->tx ? s->tx->mail.address : NULL) : run->rcpt;
    if (address == NULL || *address == '\0')
        return RV_DUNNO;   /* no transaction yet, or the null sender */
    int *checked = sender ? &run->sender_maps_checked : &run->rcpt_maps_checked;
    if (*checked)
        return RV_DUNNO;
    *checked = 1;
    petrel_pool *pool = smtpd_cmd_pool(s);
    struct rcpt_maps_answer answer;
    switch (smtpd_rcpt_maps_check(s->set->rcpt_maps, &s->set->domains, address, sender, pool, &answer)) {
    case RCPT_MAPS_KNOWN:
        return RV_DUNNO;
    case RCPT_MAPS_RETRY:
        return restrict_lookup_failure(s, run, address, r);
    case RCPT_MAPS_UNKNOWN:
        break;
    }
    enum restrict_verdict v = restrict_refuse(s, run, RCLASS_POLICY, answer.code, answer.enhanced, r,
                                              "<%s>: %s rejected: %s", address,
                                              sender ? SUBJECT_SENDER : SUBJECT_RECIPIENT, answer.why);
    /* Named as the restriction even when implicit (smtpd_reject_unlisted_*). */
    if (r->restriction == NULL)
        r->restriction = sender ? "reject_unlisted_sender" : "reject_unlisted_recipient";
    return v;
}

/* The end of a stage's lists (exhausted or PERMIT): what Postfix does after
 * generic_checks() returns. Returns 1 with *r when that refuses. */
static int stage_end(struct smtpd_session *s, struct restrict_run *run, enum restrict_stage stage,
                     struct restrict_result *r)
{
    int discard = run->collected.verdict == RV_DISCARD || (s->tx && s->tx->discard);
    struct restrict_result result = { .verdict = RV_DUNNO };
    enum restrict_verdict v = RV_DUNNO;
    switch (stage) {
    case RS_CLIENT:
        s->defer_if_permit_client = s->defer_if_permit.active;
        return 0;
    case RS_HELO:
        s->defer_if_permit_helo = s->defer_if_permit.active;
        return 0;
    case RS_SENDER:
        s->defer_if_permit_sender = s->defer_if_permit.active;
        /* Mail from petrel-sendmail is never refused for an unknown address, as
         * Postfix's sendmail/pickup path never meets smtpd's check: it is
         * accepted and bounced to the local user who sent it. */
        if (s->set->reject_unlisted_sender && !discard && !s->local_submission)
            v = check_unlisted(s, run, 1, &result);
        break;
    case RS_RELAY:
        return 0;
    case RS_RECIPIENT:
        if (s->defer_if_permit.active)
            v = deferral(s, run, &s->defer_if_permit, &result);
        if (!smtpd_refused(&result) && s->set->reject_unlisted_recipient && !discard && !s->local_submission)
            v = check_unlisted(s, run, 0, &result);
        break;
    default:
        if (s->defer_if_permit.active)
            v = deferral(s, run, &s->defer_if_permit, &result);
        break;
    }
    if (v != RV_REJECT && v != RV_DEFER)
        return 0;
    *r = result;
    return 1;
}

int restrict_stage_needed(const struct smtpd_settings *set, enum restrict_stage stage)
{
    if (stage == RS_SENDER && set->reject_unlisted_sender)
        return 1;
    if (stage == RS_RECIPIENT && set->reject_unlisted_recipient)
        return 1;
    return !restrict_list_empty(stage_list(set, stage));
}

static enum restrict_verdict run_module_step(struct smtpd_session *s, struct restrict_run *run,
                                             const struct restrict_step *step, struct restrict_result *r);

static petrel_verdict call_restriction(petrel_session *h, const void *arg)
{
    const struct restrict_step *step = arg;
    return step->provided->check(h, step->state);
}

static enum restrict_verdict run_step(struct smtpd_session *s, struct restrict_run *run,
                                      const struct restrict_step *step, struct restrict_result *r)
{
    switch (step->kind) {
    case STEP_CLASS: {
        const struct restrict_frame *f = restrict_frame(run);
        return restrict_push(s, run, s->set->classes->lists[step->class_index], f->reply_name, f->reply_class, r);
    }
    case STEP_MODULE:
        return run_module_step(s, run, step, r);
    case STEP_POLICY:
        return restrict_run_policy(s, run, step, r);
    case STEP_REJECT_UNKNOWN_HELO:
    case STEP_REJECT_UNKNOWN_SENDER_DOMAIN:
    case STEP_REJECT_UNKNOWN_RCPT_DOMAIN:
    case STEP_CHECK_SERVER:
        return restrict_run_dns(s, run, step, r);
    case STEP_REJECT_UNLISTED_RCPT:
        return check_unlisted(s, run, 0, r);
    case STEP_REJECT_UNLISTED_SENDER:
        return check_unlisted(s, run, 1, r);
    default:
        return restrict_run_builtin(s, run, step, r);
    }
}

/* Ends every frame of the current stage (a PERMIT, a DISCARD, or both
 * deferrals raised): the stage's lists are done. */
static void unwind(struct restrict_run *run)
{
    run->depth = 0;
    run->warn_if_reject = 0;
}

/* A step at the current depth finished with v. Returns 1 when the whole
 * evaluation is decided (a refusal, in *r). */
static int step_finished(struct smtpd_session *s, struct restrict_run *run, enum restrict_verdict v,
                         const struct restrict_result *step_result, struct restrict_result *r)
{
    /* warn_if_reject covers the one restriction after it (and whatever
     * that one opens); then it is spent. */
    if (run->warn_if_reject >= run->depth)
        run->warn_if_reject = 0;
    switch (v) {
    case RV_HOLD:
    case RV_DISCARD:
        /* A module's non-terminating verdicts: remembered for the message. */
        if (run->collected.verdict != RV_DISCARD)
            run->collected.verdict = v;
        return 0;
    case RV_PERMIT:
        /* Ends this list, and the lists that opened it: the stage is done
         * (its end-of-list checks still run; so does the next stage). */
        unwind(run);
        return 0;
    case RV_REJECT:
    case RV_DEFER:
        *r = *step_result;
        if (r->restriction == NULL)
            r->restriction = step_name(run);
        return 1;
    default:
        break;
    }
    if (s->defer_if_permit.active && run->defer_if_reject.active)
        unwind(run);
    return 0;
}

/* Where the walk stood before a step: a step that asked a remote table
 * for something it has no answer to yet is undone to here, and run again
 * once the answers are in (tables/table.h, "Remote tables"). Everything a
 * step may change on its way to a table lookup is in here. */
struct run_mark {
    int stage_index, in_stage, depth, index, warn_if_reject;
    int rcpt_maps_checked, sender_maps_checked;
    struct restrict_deferral defer_if_reject, defer_if_permit;
    int dip_client, dip_helo, dip_sender;
    struct restrict_result collected;
};

static void mark_take(struct smtpd_session *s, const struct restrict_run *run, struct run_mark *m)
{
    m->stage_index = run->stage_index;
    m->in_stage = run->in_stage;
    m->depth = run->depth;
    m->index = run->depth > 0 ? run->frames[run->depth - 1].index : 0;
    m->warn_if_reject = run->warn_if_reject;
    m->rcpt_maps_checked = run->rcpt_maps_checked;
    m->sender_maps_checked = run->sender_maps_checked;
    m->defer_if_reject = run->defer_if_reject;
    m->defer_if_permit = s->defer_if_permit;
    m->dip_client = s->defer_if_permit_client;
    m->dip_helo = s->defer_if_permit_helo;
    m->dip_sender = s->defer_if_permit_sender;
    m->collected = run->collected;
}

static void mark_restore(struct smtpd_session *s, struct restrict_run *run, const struct run_mark *m)
{
    run->stage_index = m->stage_index;
    run->in_stage = m->in_stage;
    run->depth = m->depth;
    if (run->depth > 0)
        run->frames[run->depth - 1].index = m->index;
    run->warn_if_reject = m->warn_if_reject;
    run->rcpt_maps_checked = m->rcpt_maps_checked;
    run->sender_maps_checked = m->sender_maps_checked;
    run->defer_if_reject = m->defer_if_reject;
    s->defer_if_permit = m->defer_if_permit;
    s->defer_if_permit_client = m->dip_client;
    s->defer_if_permit_helo = m->dip_helo;
    s->defer_if_permit_sender = m->dip_sender;
    run->collected = m->collected;
}

static void lookups_cancel(void *ctx)
{
    struct smtpd_session *s = ctx;
    tbl_scope_cancel(s->lookups);
}

/* Every missing remote answer is in: the step runs again. */
static void lookups_done(void *ctx)
{
    struct smtpd_session *s = ctx;
    restrict_step_done(s, RV_NESTED, NULL);
}

/* Walks the remaining stages and steps; returns 1 when finished. */
static int walk(struct smtpd_session *s, struct restrict_run *run, struct restrict_result *r)
{
    struct run_mark mark;
    for (;;) {
        mark_take(s, run, &mark);
        int finished = 0;
        int more = 0;
        if (run->stage_index >= run->nstages) {
            *r = run->collected;
            return 1;
        }
        enum restrict_stage stage = run->stages[run->stage_index];
        if (!run->in_stage) {
            run->in_stage = 1;
            stage_begin(s, run, stage);
        }
        if (run->depth > 0 && s->tx && s->tx->discard)
            unwind(run);   /* Postfix: nothing is evaluated after DISCARD */
        if (run->depth == 0) {
            if (stage_end(s, run, stage, r)) {
                finished = 1;
            } else {
                run->in_stage = 0;
                run->stage_index++;
            }
        } else {
            struct restrict_frame *f = &run->frames[run->depth - 1];
            if (f->index >= f->list->nsteps) {
                /* This list found nothing: back to the step that opened
                 * it, which is then done with DUNNO. */
                run->depth--;
                if (run->warn_if_reject > run->depth)
                    run->warn_if_reject = 0;
                if (run->depth > 0 && step_finished(s, run, RV_DUNNO, NULL, r))
                    finished = 1;
            } else {
                const struct restrict_step *step = &f->list->steps[f->index++];
                if (step->kind == STEP_WARN_IF_REJECT) {
                    if (run->warn_if_reject == 0)
                        run->warn_if_reject = run->depth;
                    continue;
                }
                struct restrict_result step_result = { .verdict = RV_DUNNO };
                run->step = step;
                enum restrict_verdict v = run_step(s, run, step, &step_result);
                if (v == RV_PENDING && !tbl_scope_missing(s->lookups))
                    return 0;
                if (v != RV_NESTED && v != RV_PENDING && step_finished(s, run, v, &step_result, r))
                    finished = 1;
            }
        }
        if (tbl_scope_missing(s->lookups)) {
            /* A remote table had no answer yet: whatever this step
             * decided is void. Fetch, then run it again. */
            mark_restore(s, run, &mark);
            restrict_wait(s, lookups_cancel, s);
            if (tbl_scope_fetch(s->lookups, lookups_done, s))
                return 0;
            run->waiting = 0;
            run->cancel = NULL;
            run->cancel_ctx = NULL;
            more = 1;   /* every answer came at once */
        }
        if (finished && !more)
            return 1;
    }
}

static int run_steps(struct smtpd_session *s, struct restrict_run *run, struct restrict_result *r)
{
    tbl_scope_enter(s->worker->tables, s->lookups);
    int finished = walk(s, run, r);
    tbl_scope_leave(s->worker->tables);
    return finished;
}

static void run_finished(struct smtpd_session *s, struct restrict_run *run, const struct restrict_result *result)
{
    s->check = NULL;
    run->done(s, result);
}

void restrict_wait(struct smtpd_session *s, void (*cancel)(void *ctx), void *ctx)
{
    struct restrict_run *run = s->check;
    run->waiting = 1;
    run->cancel = cancel;
    run->cancel_ctx = ctx;
}

void restrict_step_done(struct smtpd_session *s, enum restrict_verdict v, const struct restrict_result *sr)
{
    struct restrict_run *run = s->check;
    if (run == NULL)
        return;
    run->waiting = 0;
    run->cancel = NULL;
    run->cancel_ctx = NULL;
    struct restrict_result result = { .verdict = RV_DUNNO };
    if (v == RV_NESTED || !step_finished(s, run, v, sr, &result)) {
        if (!run_steps(s, run, &result))
            return;   /* another step waits */
    }
    run_finished(s, run, &result);
}

void restrict_cancel(struct smtpd_session *s)
{
    struct restrict_run *run = s->check;
    s->check = NULL;
    if (run && run->waiting && run->cancel)
        run->cancel(run->cancel_ctx);
    if (run) {
        run->waiting = 0;
        run->cancel = NULL;
    }
}

/* A module restriction's answer as the engine takes it: its refusals go
 * through Postfix's smtpd_check_reject() like any restriction's (a
 * warn_if_reject before it makes a 5xx or 4xx a logged reject_warning, a
 * pending defer_if_reject turns a 5xx into that deferral; a module's
 * failure is a software error, which warn_if_reject leaves alone), and
 * DEFER_IF_REJECT and DEFER_IF_PERMIT are Postfix's actions of those
 * names: remembered with the module's (4xx) reply, then DUNNO. */
static enum restrict_verdict module_answer(struct smtpd_session *s, struct restrict_run *run,
                                           const struct restrict_result *a, struct restrict_result *r)
{
    switch (a->verdict) {
    case RV_REJECT:
    case RV_DEFER:
        return refuse(s, run, a->failure ? RCLASS_SOFTWARE : RCLASS_POLICY, a->code, a->enhanced, a->text, r);
    case RV_DEFER_IF_PERMIT:
        return restrict_defer_if_permit(s, run, 1, RCLASS_POLICY, a->code, a->enhanced, r, "%s", a->text);
    case RV_DEFER_IF_REJECT:
        restrict_defer_if_reject(s, run, RCLASS_POLICY, a->code, a->enhanced, "%s", a->text);
        return RV_DUNNO;
    default:
        *r = *a;
        return a->verdict;
    }
}

/* A module restriction that suspended has answered (or timed out). */
static void module_step_completed(struct smtpd_session *s, const struct restrict_result *sr)
{
    struct restrict_run *run = s->check;
    if (run == NULL)
        return;
    struct restrict_result r = { .verdict = RV_DUNNO };
    enum restrict_verdict v = module_answer(s, run, sr, &r);
    restrict_step_done(s, v, &r);
}

static enum restrict_verdict run_module_step(struct smtpd_session *s, struct restrict_run *run,
                                             const struct restrict_step *step, struct restrict_result *r)
{
    s->module_rcpt = run->rcpt;
    struct restrict_result answer;
    if (smtpd_module_call(s, step->module, step->name, MODULE_CALL_RESTRICTION, call_restriction, step,
                          module_step_completed, &answer))
        return module_answer(s, run, &answer, r);
    return RV_PENDING;
}

/* The command whose checks these are, as Postfix names it in the log and
 * in policy requests (protocol_state). */
static const char *where_of(struct smtpd_session *s, enum restrict_stage last)
{
    switch (last) {
    case RS_CLIENT: return "CONNECT";
    case RS_HELO: return s->esmtp ? "EHLO" : "HELO";
    case RS_SENDER: return "MAIL";
    case RS_RECIPIENT:
    case RS_RELAY: return "RCPT";
    case RS_DATA: return s->tx && s->tx->eom_counter == CNT_BDAT ? "BDAT" : "DATA";
    default: return "END-OF-MESSAGE";
    }
}

void restrict_check(struct smtpd_session *s, const enum restrict_stage *stages, int nstages,
                    const char *rcpt, restrict_done_fn *done)
{
    /* One run per session, reused: a session evaluates one command at a time. */
    if (s->run == NULL)
        s->run = petrel_pool_zalloc(s->pool, sizeof(*s->run));
    struct restrict_run *run = s->run;
    struct restrict_frame *frames = run->frames;
    int cap = run->frame_cap;
    memset(run, 0, sizeof(*run));
    run->frames = frames;
    run->frame_cap = cap;
    for (int i = 0; i < nstages && i < RS_COUNT; i++)
        run->stages[i] = stages[i];
    run->nstages = nstages < RS_COUNT ? nstages : RS_COUNT;
    run->rcpt = rcpt;
    run->done = done;
    run->collected.verdict = RV_DUNNO;
    run->where = where_of(s, run->stages[run->nstages - 1]);
    if (s->lookups == NULL)
        s->lookups = tbl_scope_new();
    tbl_scope_reset(s->lookups);   /* each command asks the tables afresh */
    s->check = run;
    struct restrict_result result = { .verdict = RV_DUNNO };
    /* RFC 5321 4.5.1: postmaster (without a domain) is always accepted. */
    if (rcpt && strcasecmp(rcpt, "postmaster") == 0) {
        run_finished(s, run, &result);
        return;
    }
    if (run_steps(s, run, &result))
        run_finished(s, run, &result);
    /* Otherwise a step waits: restrict_step_done() resumes. */
}
