/*
 * dmarc: DMARC (RFC 7489) with libopendmarc, as a loadable module
 * (doc/modules/dmarc.md).
 *
 *   modules = spf dkim dmarc        (this order: dmarc reads their results)
 *   smtpd_recipient_restrictions = permit_mynetworks, reject_unauth_destination, check_spf
 *
 * At end of message, for clients outside mynetworks and not authenticated:
 * the RFC5322.From domain from the header section, the SPF result from the
 * spf module's transaction notes (spf.result, spf.domain, spf.identity),
 * the DKIM results from the dkim module's (dkim.results, "DOMAIN SELECTOR
 * RESULT, ..."); the policy record looked up on the loop
 * (petrel_dns_lookup: _dmarc.FROM, then _dmarc.ORGDOMAIN), evaluated by
 * dmarc_eval.c; then Authentication-Results, the dmarc.result note,
 * opendmarc's history record, and the policy applied as the admin allows
 * (dmarc_reject_action, dmarc_temperror_action).
 *
 * Replies: a rejected message gets opendmarc's "550 5.7.1 rejected by
 * DMARC policy for DOMAIN"; a policy that cannot be known (DNS temporary
 * failure or no answer within dmarc_lookup_timeout) and a failure that
 * rests on a temporary SPF or DKIM error get "451 4.4.3 DMARC policy for
 * DOMAIN not available (temporary DNS failure), try again later" with
 * dmarc_temperror_action = defer (the default); a message with From
 * addresses in several domains (or several From headers) is rejected with
 * "550 5.7.1 several From domains: DMARC cannot apply", one whose From
 * address has no valid domain "550 5.7.1 From address without a valid
 * domain: DMARC cannot apply" (RFC 7489 6.6.1; dmarc_from.c parses).
 *
 * Lifetimes: a job is held by the suspended call, the DNS lookup in flight
 * and the timer, each reference dropped on the loop; a late answer after
 * the job finished (timeout, session gone) only drops its reference.
 * libopendmarc keeps its Public Suffix List in globals: it is set up once
 * per process (counted, so a reload's new generation and the old one
 * share it) and the list's path is that of the first generation.
 */
#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <petrel/plugin.h>

#include "dmarc_eval.h"
#include "dmarc_from.h"

enum reject_action { REJECT_REJECT, REJECT_QUARANTINE, REJECT_NONE };
enum temperror_action { TEMPERROR_DEFER, TEMPERROR_ACCEPT };

struct dm_mod {
    enum reject_action on_reject;
    enum temperror_action on_temperror;
    char *history;
    char authserv_id[256];
    unsigned lookup_timeout_ms;
};

struct dm_job {
    int refs;
    petrel_module *m;
    struct dmarc_eval *e;
    petrel_pending *pending;
    petrel_timer *timer;
    int finished;
    int dkim_temperror, spf_temperror;
    enum reject_action on_reject;
    enum temperror_action on_temperror;
    char from[256];
    char mfrom_domain[256];
    char queue_id[64];
    char authserv_id[256];
    char *history;
};

/* libopendmarc's globals: one setup per process. */
static int library_refs;

static const petrel_param dmarc_params[] = {
    { PETREL_PARAM_INIT, .name = "dmarc_reject_action", .type = PETREL_PARAM_STRING, .default_value = "reject",
      .help = "what p=reject does to a failing message: reject (550 5.7.1), quarantine (hold it) or none" },
    { PETREL_PARAM_INIT, .name = "dmarc_temperror_action", .type = PETREL_PARAM_STRING, .default_value = "defer",
      .help = "when the policy cannot be known (temporary DNS failure): defer (451 4.4.3) or accept" },
    { PETREL_PARAM_INIT, .name = "dmarc_history_file", .type = PETREL_PARAM_STRING, .default_value = "",
      .help = "opendmarc's history file for aggregate reports (opendmarc-import); empty: none" },
    { PETREL_PARAM_INIT, .name = "dmarc_public_suffix_list", .type = PETREL_PARAM_STRING,
      .default_value = "/usr/share/publicsuffix/public_suffix_list.dat",
      .help = "the Public Suffix List (organizational domains, relaxed alignment)" },
    { PETREL_PARAM_INIT, .name = "dmarc_lookup_timeout", .type = PETREL_PARAM_TIME, .default_value = "10s",
      .help = "time for the policy lookups of one message; past it the result is temperror" },
    { .name = NULL },
};

/* ------------------------------------------------------------------ */
/* configuration                                                        */

static int parse_reject(const char *v, enum reject_action *out)
{
    if (strcmp(v, "reject") == 0)
        *out = REJECT_REJECT;
    else if (strcmp(v, "quarantine") == 0)
        *out = REJECT_QUARANTINE;
    else if (strcmp(v, "none") == 0)
        *out = REJECT_NONE;
    else
        return -1;
    return 0;
}

static int parse_temperror(const char *v, enum temperror_action *out)
{
    if (strcmp(v, "defer") == 0)
        *out = TEMPERROR_DEFER;
    else if (strcmp(v, "accept") == 0)
        *out = TEMPERROR_ACCEPT;
    else
        return -1;
    return 0;
}

static int dmarc_check(petrel_module *m)
{
    int rc = 0;
    enum reject_action ra;
    enum temperror_action ta;
    const char *v = petrel_param_string(m, "dmarc_reject_action");
    if (parse_reject(v, &ra) != 0) {
        petrel_config_error(m, "dmarc_reject_action", "%s: expected reject, quarantine or none", v);
        rc = -1;
    }
    v = petrel_param_string(m, "dmarc_temperror_action");
    if (parse_temperror(v, &ta) != 0) {
        petrel_config_error(m, "dmarc_temperror_action", "%s: expected defer or accept", v);
        rc = -1;
    }
    long long timeout = petrel_param_int(m, "dmarc_lookup_timeout");
    if (timeout < 1 || timeout > 60) {
        petrel_config_error(m, "dmarc_lookup_timeout", "expected 1s to 60s");
        rc = -1;
    }
    /* Without the spf and dkim results before it, every aligned message
     * would look like a failure: refused, never silently. */
    const char *const *mods = petrel_config_list(m, "modules");
    int at_spf = -1, at_dkim = -1, at_dmarc = -1;
    for (int i = 0; mods && mods[i]; i++) {
        if (strcmp(mods[i], "spf") == 0 && at_spf < 0)
            at_spf = i;
        else if (strcmp(mods[i], "dkim") == 0 && at_dkim < 0)
            at_dkim = i;
        else if (strcmp(mods[i], "dmarc") == 0 && at_dmarc < 0)
            at_dmarc = i;
    }
    if (at_dmarc >= 0 && (at_spf < 0 || at_dkim < 0 || at_spf > at_dmarc || at_dkim > at_dmarc)) {
        petrel_config_error(m, "modules", "dmarc reads the results of the spf and dkim modules: list them before "
                            "it (modules = spf dkim dmarc)");
        rc = -1;
    }
    v = petrel_param_string(m, "dmarc_public_suffix_list");
    FILE *f = *v ? fopen(v, "r") : NULL;
    if (*v && f == NULL) {
        petrel_config_error(m, "dmarc_public_suffix_list", "%s: %s (Debian's publicsuffix package has it)", v,
                            strerror(errno));
        rc = -1;
    }
    if (f)
        fclose(f);
    return rc;
}

static int dmarc_init(petrel_module *m, const char **error)
{
    struct dm_mod *mod = calloc(1, sizeof(*mod));
    if (mod == NULL) {
        *error = "out of memory";
        return -1;
    }
    if (parse_reject(petrel_param_string(m, "dmarc_reject_action"), &mod->on_reject) != 0 ||
        parse_temperror(petrel_param_string(m, "dmarc_temperror_action"), &mod->on_temperror) != 0) {
        free(mod);
        *error = "dmarc_reject_action or dmarc_temperror_action has a value this module does not know";
        return -1;
    }
    if (library_refs == 0) {
        char err[512];
        if (dmarc_library_init(petrel_param_string(m, "dmarc_public_suffix_list"), err, sizeof(err)) != 0) {
            free(mod);
            petrel_module_log(m, PETREL_LOG_ERROR, "dmarc_public_suffix_list: %s", err);
            *error = "libopendmarc does not start (see the log)";
            return -1;
        }
    }
    library_refs++;
    const char *history = petrel_param_string(m, "dmarc_history_file");
    mod->history = *history ? strdup(history) : NULL;
    const char *host = petrel_config_string(m, "myhostname");
    snprintf(mod->authserv_id, sizeof(mod->authserv_id), "%s", host && *host ? host : "localhost");
    long long timeout = petrel_param_int(m, "dmarc_lookup_timeout");
    mod->lookup_timeout_ms = (unsigned)(timeout < 1 ? 1 : timeout > 60 ? 60 : timeout) * 1000;
    petrel_module_set_data(m, mod);
    return 0;
}

static void dmarc_fini(petrel_module *m)
{
    struct dm_mod *mod = petrel_module_data(m);
    petrel_module_set_data(m, NULL);
    if (mod == NULL)
        return;
    free(mod->history);
    free(mod);
    if (--library_refs == 0)
        dmarc_library_shutdown();
}

/* ------------------------------------------------------------------ */
/* the job                                                              */

static void job_unref(struct dm_job *job)
{
    if (--job->refs > 0)
        return;
    dmarc_eval_free(job->e);
    free(job->history);
    free(job);
}

static void feed_notes(petrel_session *s, struct dm_job *job)
{
    const char *spf = petrel_note_get(s, "spf.result");
    const char *spf_domain = petrel_note_get(s, "spf.domain");
    const char *identity = petrel_note_get(s, "spf.identity");
    if (spf && spf_domain && *spf_domain) {
        dmarc_eval_spf(job->e, spf_domain, spf, identity && strcmp(identity, "helo") == 0);
        job->spf_temperror = strcmp(spf, "temperror") == 0;
    }
    const char *dkim = petrel_note_get(s, "dkim.results");
    for (const char *p = dkim; p && *p;) {
        char d[256] = "", sel[64] = "", res[16] = "";
        if (sscanf(p, "%255s %63s %15[a-z]", d, sel, res) == 3) {
            dmarc_eval_dkim(job->e, d, strcmp(sel, "-") == 0 ? "" : sel, res);
            job->dkim_temperror |= strcmp(res, "temperror") == 0;
        }
        const char *comma = strchr(p, ',');
        p = comma ? comma + 1 : NULL;
        while (p && *p == ' ')
            p++;
    }
}

static void finish(struct dm_job *job)
{
    job->finished = 1;
    if (job->timer) {
        petrel_timer_cancel(job->timer);
        job->timer = NULL;
        job->refs--;   /* the timer's: the caller holds another */
    }
    petrel_session *s = petrel_pending_session(job->pending);
    if (s == NULL)
        return;
    struct dmarc_outcome o;
    dmarc_eval_decide(job->e, arc4random_uniform(100), &o);
    char ar[600];
    dmarc_eval_auth_results(job->e, &o, ar, sizeof(ar));
    /* A failure that rests on a temporary SPF or DKIM error is not final. */
    int temporary = strcmp(o.result, "temperror") == 0 ||
                    (strcmp(o.result, "fail") == 0 && (job->dkim_temperror || job->spf_temperror) &&
                     o.disposition != DMARC_DISP_NONE);
    const char *pdomain = o.policy_domain[0] ? o.policy_domain : job->from;
    if (job->history) {
        char err[300];
        if (dmarc_history_append(job->history, job->e, &o, job->queue_id, job->authserv_id, job->mfrom_domain,
                                 (long)time(NULL), err, sizeof(err)) != 0)
            petrel_log(s, PETREL_LOG_WARNING, "dmarc: dmarc_history_file: %s", err);
    }
    petrel_note_set(s, PETREL_NOTE_TRANSACTION, "dmarc.result", o.result);
    int rejects = o.disposition == DMARC_DISP_REJECT && job->on_reject == REJECT_REJECT;
    int holds = o.disposition == DMARC_DISP_QUARANTINE ||
                (o.disposition == DMARC_DISP_REJECT && job->on_reject == REJECT_QUARANTINE);
    petrel_note_set(s, PETREL_NOTE_TRANSACTION, "dmarc.policy",
                    temporary ? "none" : rejects ? "reject" : holds ? "quarantine" : "none");
    petrel_log(s, PETREL_LOG_INFO, "dmarc: %s: %s (policy domain %s, dkim aligned %d, spf aligned %d)", job->from,
               ar, pdomain, o.dkim_aligned, o.spf_aligned);
    char text[400];
    if (temporary && job->on_temperror == TEMPERROR_DEFER) {
        snprintf(text, sizeof(text), "DMARC policy for %.250s not available (temporary DNS failure), try again "
                 "later", pdomain);
        petrel_resume(job->pending, PETREL_TEMPFAIL, 451, "4.4.3", text);
        job->pending = NULL;
        return;
    }
    if (rejects && !temporary) {
        snprintf(text, sizeof(text), "rejected by DMARC policy for %.250s", pdomain);
        petrel_resume(job->pending, PETREL_REJECT, 550, "5.7.1", text);
        job->pending = NULL;
        return;
    }
    char header[1000];
    snprintf(header, sizeof(header), "%s;\r\n\t%s", job->authserv_id, ar);
    if (petrel_header_insert(s, 0, "Authentication-Results", header) != 0)
        petrel_log(s, PETREL_LOG_WARNING, "dmarc: the Authentication-Results header was refused");
    if (holds && !temporary) {
        snprintf(text, sizeof(text), "DMARC policy for %.250s: %s", pdomain,
                 o.disposition == DMARC_DISP_REJECT ? "reject (dmarc_reject_action = quarantine)" : "quarantine");
        petrel_quarantine(s, text);
    }
    petrel_resume(job->pending, PETREL_CONTINUE, 0, NULL, NULL);
    job->pending = NULL;
}

static void next_lookup(struct dm_job *job);

static void on_policy(const petrel_dns_answer *a, void *arg)
{
    struct dm_job *job = arg;
    if (!job->finished) {
        enum dmarc_dns_status st = a->status == PETREL_DNS_OK ? DMARC_DNS_OK
                                 : a->status == PETREL_DNS_TEMPFAIL ? DMARC_DNS_TEMPFAIL : DMARC_DNS_NOTFOUND;
        dmarc_eval_answer(job->e, st, a->values, st == DMARC_DNS_OK ? a->count : 0);
        next_lookup(job);
    }
    job_unref(job);
}

static void next_lookup(struct dm_job *job)
{
    for (;;) {
        const char *q = dmarc_eval_next_query(job->e);
        if (q == NULL) {
            finish(job);
            return;
        }
        job->refs++;
        if (petrel_dns_lookup(job->m, PETREL_DNS_TXT, q, on_policy, job) == 0)
            return;
        job->refs--;
        dmarc_eval_answer(job->e, DMARC_DNS_TEMPFAIL, NULL, 0);
    }
}

static void on_timeout(void *arg)
{
    struct dm_job *job = arg;
    job->timer = NULL;
    if (!job->finished) {
        /* the lookup in flight and any after it fail temporarily */
        const char *q;
        while ((q = dmarc_eval_next_query(job->e)) != NULL)
            dmarc_eval_answer(job->e, DMARC_DNS_TEMPFAIL, NULL, 0);
        finish(job);
    }
    job_unref(job);
}

/* ------------------------------------------------------------------ */
/* the hook                                                             */

static petrel_verdict dmarc_end_of_message(petrel_session *s)
{
    petrel_module *m = petrel_session_module(s);
    struct dm_mod *mod = petrel_module_data(m);
    if (mod == NULL || petrel_in_mynetworks(s) || petrel_sasl_username(s))
        return PETREL_CONTINUE;
    /* opendmarc is a milter: after a header/body checks REJECT, DISCARD,
     * REDIRECT or PASS it would not see the From header nor the message,
     * so there is no evaluation, no verdict and no Authentication-Results. */
    if (petrel_milters_stopped(s) == 1)
        return PETREL_CONTINUE;
    struct dmarc_from from;
    memset(&from, 0, sizeof(from));
    const char *name, *value;
    for (size_t i = 0; petrel_header_at(s, i, &name, &value) == 0; i++)
        if (strcasecmp(name, "From") == 0)
            dmarc_from_parse(&from, value);
    if (from.headers > 1 || from.ndomains > 1) {
        petrel_log(s, PETREL_LOG_INFO, "dmarc: reject: %d From headers, %d From domains", from.headers,
                   from.ndomains);
        petrel_set_reply(s, 550, "5.7.1", "several From domains: DMARC cannot apply");
        return PETREL_REJECT;
    }
    if (from.invalid) {
        petrel_log(s, PETREL_LOG_INFO, "dmarc: reject: a From address without a valid domain");
        petrel_set_reply(s, 550, "5.7.1", "From address without a valid domain: DMARC cannot apply");
        return PETREL_REJECT;
    }
    if (from.ndomains == 0) {
        petrel_log(s, PETREL_LOG_INFO, "dmarc: no From address: not evaluated");
        return PETREL_CONTINUE;
    }
    struct dm_job *job = calloc(1, sizeof(*job));
    if (job == NULL)
        return PETREL_TEMPFAIL;
    job->refs = 1;
    job->m = m;
    job->on_reject = mod->on_reject;
    job->on_temperror = mod->on_temperror;
    snprintf(job->from, sizeof(job->from), "%s", from.domains[0]);
    snprintf(job->authserv_id, sizeof(job->authserv_id), "%s", mod->authserv_id);
    const char *qid = petrel_queue_id(s);
    snprintf(job->queue_id, sizeof(job->queue_id), "%s", qid ? qid : "");
    const char *sender = petrel_sender(s);
    const char *at = sender ? strrchr(sender, '@') : NULL;
    snprintf(job->mfrom_domain, sizeof(job->mfrom_domain), "%s", at ? at + 1 : "");
    job->history = mod->history ? strdup(mod->history) : NULL;
    job->e = dmarc_eval_new(petrel_client_addr(s), job->from);
    if (job->e == NULL || (mod->history && job->history == NULL)) {
        job_unref(job);
        return PETREL_TEMPFAIL;
    }
    feed_notes(s, job);
    job->pending = petrel_suspend(s);
    if (job->pending == NULL) {
        job_unref(job);
        return PETREL_CONTINUE;
    }
    job->refs++;
    job->timer = petrel_timer_start(m, mod->lookup_timeout_ms, on_timeout, job);
    if (job->timer == NULL)
        job->refs--;
    next_lookup(job);
    job_unref(job);
    return PETREL_PENDING;
}

const petrel_module_desc petrel_module_descriptor = {
    PETREL_MODULE_INIT,
    .name = "dmarc",
    .version = "1.0",
    .description = "DMARC (RFC 7489) with libopendmarc: policy, alignment, Authentication-Results, "
                   "opendmarc's history file",
    .params = dmarc_params,
    .init = dmarc_init,
    .fini = dmarc_fini,
    .check = dmarc_check,
    .hooks = { .end_of_message = dmarc_end_of_message },
    /* dmarc_lookup_timeout (10 s, at most 60 s) for the policy lookups */
    .hook_timeout_ms = 90000,
};
