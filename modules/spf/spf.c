/*
 * spf: the check_spf restriction (RFC 7208) with libspf2.
 *
 *   smtpd_recipient_restrictions = permit_mynetworks, reject_unauth_destination, check_spf
 *
 * What it does, in the order policyd-spf does it: skip clients in
 * mynetworks, authenticated clients and whitelisted clients or sender
 * domains; check the HELO identity (when it is a domain name) and act on
 * its result; for the null sender the HELO identity decides, otherwise the
 * MAIL FROM identity does. Each result maps to an action (spf_*_action:
 * reject, defer, hold or dunno) with RFC 7372's codes (x.7.23 for fail,
 * x.7.24 for temperror and permerror). A result that lets the mail through
 * is recorded in a Received-SPF header (RFC 7208 section 9.1) added when
 * the DATA command arrives, at the top of the message.
 *
 * Design: libspf2 only blocks, so an evaluation (HELO then MAIL FROM) runs
 * on a worker thread (petrel_run_blocking) while the restriction is
 * suspended; its DNS goes back to the loop's resolver through the bridge
 * (spf_dns.c). The result is cached per transaction (every RCPT after the
 * first is answered at once) and the HELO result per session. The job is
 * shared by the thread's completion and the transaction (two references,
 * both dropped on the loop), because a completion may come after the
 * session is gone and must then touch nothing of it: it resumes and frees.
 * Everything the completion needs (the policy) is copied into the job.
 *
 * DMARC needs the result: with Module API 1.1 it is published as the
 * transaction notes spf.result and spf.domain (see publish_notes).
 *
 * Every spf_* parameter is per master.cf service (.per_service): compile
 * makes one policy for main.cf and one for each service that runs hooks
 * (petrel_service_at), and a check uses its session's service's, so port 25
 * may reject a fail while a submission line says -o spf_fail_action=dunno.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <petrel/plugin.h>

#include "client_nets.h"
#include "list_items.h"
#include "spf_check.h"
#include "spf_header.h"

/* ABI 1.1 elements start with their size; 1.0 has no such field. */
#ifdef PETREL_PARAM_INIT
#define SPF_PARAM PETREL_PARAM_INIT, .per_service = 1,
#define SPF_RESTRICTION PETREL_RESTRICTION_INIT,
#else
#define SPF_PARAM
#define SPF_RESTRICTION
#endif

enum spf_action { ACT_DUNNO, ACT_REJECT, ACT_DEFER, ACT_HOLD };
static const char *const action_names[] = { "dunno", "reject", "defer", "hold", NULL };

enum identity { ID_NONE, ID_HELO, ID_MAILFROM };

/* What decides, copied into each job (a completion may outlive the module). */
struct spf_policy {
    enum spf_action action[SPF_RES_COUNT];
    int helo_check;
    int header;
    struct spf_limits limits;
};

/* The restriction's compiled state (one per list that names check_spf). */
struct spf_conf {
    struct spf_policy policy;
    int skip_mynetworks, skip_authenticated;
    struct client_net *nets;   /* spf_whitelist_clients */
    size_t nnets;
    const char **domains;
    size_t ndomains;
};

/* check_spf's compiled state: main.cf's policy and each service's. */
struct spf_confs {
    struct spf_conf main;
    const char **services;
    struct spf_conf *confs;
    size_t n;
};

/* Module data, from init to fini. */
struct spf_mod {
    struct spf_bridge *bridge;
};

/* One evaluation: shared by the worker's completion and the transaction. */
struct spf_job {
    int refs;
    petrel_module *m;
    struct spf_bridge *bridge;
    struct spf_policy policy;
    petrel_pending *pending;
    char *client, *helo, *sender;
    int check_helo;            /* evaluate the HELO identity on the thread */
    int helo_known;            /* helo_out came from the session's cache */
    struct spf_outcome helo_out, mfrom_out;
    int completed;
};

struct spf_decision {
    enum identity identity;        /* whose result decides */
    const struct spf_outcome *outcome;
    petrel_verdict verdict;
    int code;
    const char *enhanced;
    char text[400];
    int header;                    /* add Received-SPF */
};

struct spf_tx {
    struct spf_job *job;
    int skipped_logged;
    int header_done;
};

struct spf_session {
    char *helo;                    /* HELO name whose result is cached */
    struct spf_outcome helo_out;
};

static const petrel_param spf_params[] = {
    { SPF_PARAM .name = "spf_fail_action", .type = PETREL_PARAM_STRING, .default_value = "reject",
      .help = "what a fail result does: reject (550 5.7.23), defer (451 4.7.23), hold or dunno" },
    { SPF_PARAM .name = "spf_softfail_action", .type = PETREL_PARAM_STRING, .default_value = "dunno",
      .help = "what a softfail result does: dunno (header only), reject, defer or hold" },
    { SPF_PARAM .name = "spf_neutral_action", .type = PETREL_PARAM_STRING, .default_value = "dunno",
      .help = "what a neutral result does: dunno, reject, defer or hold" },
    { SPF_PARAM .name = "spf_temperror_action", .type = PETREL_PARAM_STRING, .default_value = "defer",
      .help = "what a temporary DNS error does: defer (451 4.7.24), dunno, reject or hold" },
    { SPF_PARAM .name = "spf_permerror_action", .type = PETREL_PARAM_STRING, .default_value = "dunno",
      .help = "what an invalid SPF record does: dunno, reject (550 5.7.24), defer or hold" },
    { SPF_PARAM .name = "spf_helo_check", .type = PETREL_PARAM_BOOL, .default_value = "yes",
      .help = "check the HELO identity first and act on its result (the null sender's is always checked)" },
    { SPF_PARAM .name = "spf_received_header", .type = PETREL_PARAM_BOOL, .default_value = "yes",
      .help = "add a Received-SPF header when the result lets the mail through" },
    { SPF_PARAM .name = "spf_skip_mynetworks", .type = PETREL_PARAM_BOOL, .default_value = "yes",
      .help = "clients in mynetworks are not checked" },
    { SPF_PARAM .name = "spf_skip_authenticated", .type = PETREL_PARAM_BOOL, .default_value = "yes",
      .help = "SASL-authenticated clients are not checked" },
    { SPF_PARAM .name = "spf_whitelist_clients", .type = PETREL_PARAM_LIST, .default_value = "",
      .help = "client addresses or networks (address/bits) that are not checked" },
    { SPF_PARAM .name = "spf_whitelist_domains", .type = PETREL_PARAM_LIST, .default_value = "",
      .help = "sender domains that are not checked (.example.com: its subdomains)" },
    { SPF_PARAM .name = "spf_lookup_timeout", .type = PETREL_PARAM_TIME, .default_value = "20s",
      .help = "time for all DNS lookups of one check; past it the result is temperror" },
    { SPF_PARAM .name = "spf_void_lookup_limit", .type = PETREL_PARAM_INT, .default_value = "2",
      .help = "void DNS lookups (RFC 7208 4.6.4) allowed before permerror" },
    { SPF_PARAM .name = "spf_dns_lookup_limit", .type = PETREL_PARAM_INT, .default_value = "10",
      .help = "DNS-querying terms (RFC 7208 4.6.4) allowed before permerror" },
    { .name = NULL },
};

/* ------------------------------------------------------------------ */
/* configuration (compile runs under petreld -n too)                   */

/* A parameter as the service (NULL: main.cf) sees it. */
static const char *param_string(petrel_module *m, const char *service, const char *name)
{
#ifdef PETREL_PARAM_INIT
    if (service)
        return petrel_service_config_string(m, service, name);
#endif
    (void)service;
    return petrel_param_string(m, name);
}

static long long param_int(petrel_module *m, const char *service, const char *name)
{
#ifdef PETREL_PARAM_INIT
    if (service)
        return petrel_service_config_int(m, service, name);
#endif
    (void)service;
    return petrel_param_int(m, name);
}

static int param_bool(petrel_module *m, const char *service, const char *name)
{
#ifdef PETREL_PARAM_INIT
    if (service)
        return petrel_service_config_bool(m, service, name);
#endif
    (void)service;
    return petrel_param_bool(m, name);
}

static int parse_action(petrel_module *m, const char *service, const char *param, enum spf_action *out,
                        petrel_pool *pool, const char **error)
{
    const char *v = param_string(m, service, param);
    for (int i = 0; action_names[i]; i++) {
        if (v && strcasecmp(v, action_names[i]) == 0) {
            *out = (enum spf_action)i;
            return 0;
        }
    }
    *error = petrel_pool_printf(pool, "%s = %s: expected reject, defer, hold or dunno", param, v ? v : "");
    return -1;
}

/* The policy as the service (NULL: main.cf) sets it. */
static int compile_conf(petrel_module *m, const char *service, struct spf_conf *c, petrel_pool *pool,
                        const char **error)
{
    static const char *const action_params[SPF_RES_COUNT] = {
        [SPF_RES_FAIL] = "spf_fail_action", [SPF_RES_SOFTFAIL] = "spf_softfail_action",
        [SPF_RES_NEUTRAL] = "spf_neutral_action", [SPF_RES_TEMPERROR] = "spf_temperror_action",
        [SPF_RES_PERMERROR] = "spf_permerror_action",
    };
    for (int r = 0; r < SPF_RES_COUNT; r++) {
        c->policy.action[r] = ACT_DUNNO;
        if (action_params[r] && parse_action(m, service, action_params[r], &c->policy.action[r], pool, error) != 0)
            return -1;
    }
    c->policy.helo_check = param_bool(m, service, "spf_helo_check");
    c->policy.header = param_bool(m, service, "spf_received_header");
    long long timeout = param_int(m, service, "spf_lookup_timeout");
    long long voids = param_int(m, service, "spf_void_lookup_limit");
    long long terms = param_int(m, service, "spf_dns_lookup_limit");
    if (timeout < 1 || timeout > 300) {
        *error = "spf_lookup_timeout: expected 1s to 300s";
        return -1;
    }
    if (voids < 0 || voids > 100) {
        *error = "spf_void_lookup_limit: expected 0 to 100";
        return -1;
    }
    if (terms < 1 || terms > 100) {
        *error = "spf_dns_lookup_limit: expected 1 to 100";
        return -1;
    }
    c->policy.limits.timeout_ms = (unsigned)timeout * 1000;
    c->policy.limits.max_void = (int)voids;
    c->policy.limits.max_dns_terms = (int)terms;
    c->skip_mynetworks = param_bool(m, service, "spf_skip_mynetworks");
    c->skip_authenticated = param_bool(m, service, "spf_skip_authenticated");

    const char *err = client_nets_parse("spf_whitelist_clients", param_string(m, service, "spf_whitelist_clients"),
                                        pool, &c->nets, &c->nnets);
    if (err) {
        *error = err;
        return -1;
    }
    const char **domains = list_items_split(param_string(m, service, "spf_whitelist_domains"), &c->ndomains, pool);
    for (size_t i = 0; i < c->ndomains; i++) {
        if (list_item_is_table(domains[i])) {
            *error = petrel_pool_printf(pool, "spf_whitelist_domains: \"%s\" is a lookup table: this list takes "
                                        "domains", domains[i]);
            return -1;
        }
    }
    c->domains = domains;
    return 0;
}

static int spf_compile(petrel_module *m, const char *const *args, void **state, petrel_pool *pool,
                       const char **error)
{
    (void)args;
    struct spf_confs *all = petrel_pool_zalloc(pool, sizeof(*all));
    if (compile_conf(m, NULL, &all->main, pool, error) != 0)
        return -1;
#ifdef PETREL_PARAM_INIT
    all->n = petrel_service_count(m);
    all->services = petrel_pool_zalloc(pool, (all->n ? all->n : 1) * sizeof(*all->services));
    all->confs = petrel_pool_zalloc(pool, (all->n ? all->n : 1) * sizeof(*all->confs));
    for (size_t i = 0; i < all->n; i++) {
        all->services[i] = petrel_service_at(m, i);
        if (compile_conf(m, all->services[i], &all->confs[i], pool, error) != 0) {
            *error = petrel_pool_printf(pool, "master.cf service %s: %s", all->services[i], *error);
            return -1;
        }
    }
#endif
    *state = all;
    return 0;
}

/* The policy of the session's service (main.cf's for one not in master.cf). */
static const struct spf_conf *conf_of(const struct spf_confs *all, petrel_session *s)
{
#ifdef PETREL_PARAM_INIT
    const char *service = petrel_service_name(s);
    for (size_t i = 0; service && i < all->n; i++)
        if (strcmp(all->services[i], service) == 0)
            return &all->confs[i];
#else
    (void)s;
#endif
    return &all->main;
}

/* ------------------------------------------------------------------ */
/* skipping                                                             */

static int domain_match(const char *pattern, const char *domain)
{
    if (pattern[0] == '.') {
        size_t pl = strlen(pattern), dl = strlen(domain);
        return dl > pl && strcasecmp(domain + dl - pl, pattern) == 0;
    }
    return strcasecmp(pattern, domain) == 0;
}

/* Why this client or sender is not checked, or NULL. */
static const char *skip_reason(petrel_session *s, const struct spf_conf *c, const char *sender)
{
    if (c->skip_mynetworks && petrel_in_mynetworks(s))
        return "client in mynetworks";
    if (c->skip_authenticated && petrel_sasl_username(s))
        return "authenticated client";
    const char *client = petrel_client_addr(s);
    if (client_nets_match(c->nets, c->nnets, client))
        return "client in spf_whitelist_clients";
    const char *at = sender ? strrchr(sender, '@') : NULL;
    for (size_t i = 0; at && i < c->ndomains; i++)
        if (domain_match(c->domains[i], at + 1))
            return "sender domain in spf_whitelist_domains";
    return NULL;
}

/* A HELO argument worth an SPF check: a domain name (not an address
 * literal, not a bare word). */
static int helo_is_domain(const char *helo)
{
    if (helo == NULL || *helo == '\0' || strlen(helo) > 253 || strchr(helo, '.') == NULL)
        return 0;
    for (const char *c = helo; *c; c++)
        if (!((*c >= 'a' && *c <= 'z') || (*c >= 'A' && *c <= 'Z') || (*c >= '0' && *c <= '9') || *c == '.' ||
              *c == '-' || *c == '_'))
            return 0;
    return 1;
}

/* ------------------------------------------------------------------ */
/* deciding                                                             */

static const char *comment_for(const struct spf_outcome *o, const char *client, const char *who, char *buf,
                               size_t size)
{
    switch (o->result) {
    case SPF_RES_PASS:
        snprintf(buf, size, "domain of %s designates %s as permitted sender", who, client);
        break;
    case SPF_RES_FAIL:
        snprintf(buf, size, "domain of %s does not designate %s as permitted sender", who, client);
        break;
    case SPF_RES_SOFTFAIL:
        snprintf(buf, size, "domain of transitioning %s does not designate %s as permitted sender", who, client);
        break;
    case SPF_RES_NEUTRAL:
        snprintf(buf, size, "%s is neither permitted nor denied by domain of %s", client, who);
        break;
    case SPF_RES_NONE:
        if (o->domain[0])
            snprintf(buf, size, "domain of %s does not designate permitted sender hosts", who);
        else
            snprintf(buf, size, "no domain to check");
        break;
    case SPF_RES_TEMPERROR:
        snprintf(buf, size, "temporary error checking %s: %s", o->domain, o->problem);
        break;
    case SPF_RES_PERMERROR:
        snprintf(buf, size, "invalid SPF record of %s: %s", o->domain, o->problem);
        break;
    }
    /* a header comment: no parentheses or backslashes of the network's */
    for (char *p = buf; *p; p++)
        if (*p == '(' || *p == ')' || *p == '\\')
            *p = '?';
    return buf;
}

/* A HELO result decides for a non-null sender when it is conclusive (RFC
 * 7208 2.3: pass or fail, and softfail or neutral, whose actions the admin
 * chose) and its action does something; a HELO name whose DNS fails or
 * whose record is broken leaves the decision to MAIL FROM. */
static int helo_acts(const struct spf_job *job)
{
    enum spf_result r = job->helo_out.result;
    if (!(job->check_helo || job->helo_known) || r == SPF_RES_TEMPERROR || r == SPF_RES_PERMERROR)
        return 0;
    return job->policy.action[r] != ACT_DUNNO;
}

static void decide(const struct spf_job *job, struct spf_decision *d)
{
    memset(d, 0, sizeof(*d));
    const struct spf_policy *pol = &job->policy;
    const struct spf_outcome *o;
    enum spf_action act = ACT_DUNNO;
    if (job->check_helo || job->helo_known) {
        act = pol->action[job->helo_out.result];
        if (helo_acts(job) || job->sender[0] == '\0') {
            d->identity = ID_HELO;
            o = &job->helo_out;
            goto decided;
        }
    }
    if (job->sender[0] == '\0') {
        d->identity = ID_NONE;      /* null sender without a usable HELO name */
        o = &job->helo_out;
        act = ACT_DUNNO;
    } else {
        d->identity = ID_MAILFROM;
        o = &job->mfrom_out;
        act = pol->action[o->result];
    }
decided:
    d->outcome = o;
    int error_class = o->result == SPF_RES_TEMPERROR || o->result == SPF_RES_PERMERROR;
    char who[300], comment[600];
    if (d->identity == ID_MAILFROM)
        snprintf(who, sizeof(who), "%.280s", job->sender);
    else
        snprintf(who, sizeof(who), "postmaster@%.250s", job->helo ? job->helo : "");
    comment_for(o, job->client, who, comment, sizeof(comment));
    const char *label = d->identity == ID_HELO ? " (HELO)" : "";
    switch (act) {
    case ACT_REJECT:
        d->verdict = PETREL_REJECT;
        d->code = 550;
        d->enhanced = error_class ? "5.7.24" : "5.7.23";
        snprintf(d->text, sizeof(d->text), "SPF %s%s: %.330s", spf_result_name(o->result), label, comment);
        break;
    case ACT_DEFER:
        d->verdict = PETREL_TEMPFAIL;
        d->code = 451;
        d->enhanced = error_class ? "4.7.24" : "4.7.23";
        snprintf(d->text, sizeof(d->text), "SPF %s%s: %.330s", spf_result_name(o->result), label, comment);
        break;
    case ACT_HOLD:
        d->verdict = PETREL_HOLD;
        d->header = pol->header;
        break;
    case ACT_DUNNO:
        d->verdict = PETREL_CONTINUE;
        d->header = pol->header;
        break;
    }
}

static void header_value(const struct spf_job *job, const struct spf_decision *d, const char *receiver,
                         char *buf, size_t size)
{
    char who[300], comment[600];
    if (d->identity == ID_MAILFROM)
        snprintf(who, sizeof(who), "%.280s", job->sender);
    else
        snprintf(who, sizeof(who), "postmaster@%.250s", job->helo ? job->helo : "");
    comment_for(d->outcome, job->client, who, comment, sizeof(comment));
    if (receiver)
        snprintf(buf, size, "%s (%.200s: %.500s)\r\n\t", spf_result_name(d->outcome->result), receiver, comment);
    else
        snprintf(buf, size, "%s (%.500s)\r\n\t", spf_result_name(d->outcome->result), comment);
    spf_header_append_kv(buf, size, "client-ip", job->client);
    spf_header_append_kv(buf, size, "envelope-from", job->sender);
    if (job->helo)
        spf_header_append_kv(buf, size, "helo", job->helo);
    if (receiver)
        spf_header_append_kv(buf, size, "receiver", receiver);
    spf_header_append_kv(buf, size, "identity", d->identity == ID_MAILFROM ? "mailfrom" : "helo");
    /* the tab after the comment's fold would start the first pair with a space */
    char *fold = strstr(buf, "\r\n\t ");
    if (fold)
        memmove(fold + 3, fold + 4, strlen(fold + 4) + 1);
}

/* ------------------------------------------------------------------ */
/* the job                                                              */

static void job_unref(struct spf_job *job)
{
    if (--job->refs > 0)
        return;
    free(job->client);
    free(job->helo);
    free(job->sender);
    free(job);
}

static void job_tx_cleanup(void *arg)
{
    job_unref(arg);
}

/* Worker thread: no Petrel function, only the job's own data. */
static void job_work(void *arg)
{
    struct spf_job *job = arg;
    if (job->check_helo)
        spf_check_host(job->bridge, &job->policy.limits, job->client, job->helo, job->helo, 1, &job->helo_out);
    /* A HELO result that acts decides: the MAIL FROM check is not needed. */
    if (job->sender[0] != '\0' && !helo_acts(job))
        spf_check_host(job->bridge, &job->policy.limits, job->client, job->helo, job->sender, 0, &job->mfrom_out);
}

static void job_done(void *arg)
{
    struct spf_job *job = arg;
    job->completed = 1;
    spf_bridge_drop(job->bridge);
    job->bridge = NULL;
    struct spf_decision d;
    decide(job, &d);
    const struct spf_outcome *o = d.outcome;
    petrel_module_log(job->m, PETREL_LOG_INFO, "client=%s helo=%s sender=<%s>: %s %s (domain %s%s%s, %u queries)",
                      job->client, job->helo ? job->helo : "", job->sender,
                      d.identity == ID_MAILFROM ? "mailfrom" : "helo", spf_result_name(o->result),
                      o->domain[0] ? o->domain : "-", o->problem[0] ? ": " : "", o->problem,
                      job->helo_out.queries + job->mfrom_out.queries);
    petrel_resume(job->pending, d.verdict, d.code, d.enhanced, d.verdict == PETREL_REJECT ||
                  d.verdict == PETREL_TEMPFAIL ? d.text : NULL);
    job->pending = NULL;
    job_unref(job);
}

/* ------------------------------------------------------------------ */
/* session and transaction state                                        */

static struct spf_tx *tx_state(petrel_session *s)
{
    void **slot = petrel_tx_slot(s);
    if (slot == NULL)
        return NULL;
    if (*slot == NULL)
        *slot = petrel_pool_zalloc(petrel_tx_pool(s), sizeof(struct spf_tx));
    return *slot;
}

static struct spf_session *session_state(petrel_session *s)
{
    void **slot = petrel_session_slot(s);
    if (*slot == NULL)
        *slot = petrel_pool_zalloc(petrel_session_pool(s), sizeof(struct spf_session));
    return *slot;
}

/* Remembers a finished job's HELO result for the rest of the session. */
static void cache_helo(petrel_session *s, const struct spf_job *job)
{
    if (!job->completed || !job->check_helo)
        return;
    struct spf_session *ss = session_state(s);
    ss->helo = petrel_pool_strdup(petrel_session_pool(s), job->helo);
    ss->helo_out = job->helo_out;
}

/* The seam for DMARC: Module API 1.1's transaction notes. */
static void publish_notes(petrel_session *s, const struct spf_job *job, const struct spf_decision *d)
{
#if PETREL_ABI_MINOR >= 1
    const struct spf_outcome *o = d->identity == ID_NONE ? NULL : d->outcome;
    petrel_note_set(s, PETREL_NOTE_TRANSACTION, "spf.result", spf_result_name(o ? o->result : SPF_RES_NONE));
    petrel_note_set(s, PETREL_NOTE_TRANSACTION, "spf.domain", o ? o->domain : "");
    petrel_note_set(s, PETREL_NOTE_TRANSACTION, "spf.identity",
                    d->identity == ID_MAILFROM ? "mailfrom" : d->identity == ID_HELO ? "helo" : "");
#else
    /* ABI 1.0 has no notes: the result stays in this module's transaction
     * slot (struct spf_tx) until Module API 1.1 is merged. */
    (void)s;
    (void)job;
    (void)d;
#endif
}

static const char *receiver_name(petrel_session *s)
{
#if PETREL_ABI_MINOR >= 1
    return petrel_config_string(petrel_session_module(s), "myhostname");
#else
    (void)s;
    return NULL;   /* ABI 1.0: a module cannot read myhostname */
#endif
}

/* ------------------------------------------------------------------ */
/* the restriction and the hooks                                        */

static petrel_verdict answer(petrel_session *s, const struct spf_decision *d)
{
    if (d->verdict == PETREL_REJECT || d->verdict == PETREL_TEMPFAIL)
        petrel_set_reply(s, d->code, d->enhanced, d->text);
    return d->verdict;
}

static petrel_verdict spf_check(petrel_session *s, void *state)
{
    const struct spf_conf *c = conf_of(state, s);
    petrel_module *m = petrel_session_module(s);
    struct spf_mod *mod = petrel_module_data(m);
    const char *sender = petrel_sender(s);
    struct spf_tx *tx = tx_state(s);
    if (sender == NULL || tx == NULL) {
        petrel_log(s, PETREL_LOG_WARNING, "check_spf outside a mail transaction: no decision (use it in "
                   "smtpd_sender_restrictions or later)");
        return PETREL_CONTINUE;
    }
    const char *why = skip_reason(s, c, sender);
    if (why) {
        if (!tx->skipped_logged)
            petrel_log(s, PETREL_LOG_INFO, "spf: not checked: %s", why);
        tx->skipped_logged = 1;
        return PETREL_CONTINUE;
    }
    if (tx->job && tx->job->completed) {
        struct spf_decision d;
        cache_helo(s, tx->job);
        decide(tx->job, &d);
        return answer(s, &d);
    }
    if (tx->job)   /* cannot happen: the session waits for the first answer */
        return PETREL_CONTINUE;
    if (mod == NULL || mod->bridge == NULL) {
        petrel_set_reply(s, 451, "4.7.24", "SPF check unavailable");
        return PETREL_TEMPFAIL;
    }

    struct spf_job *job = calloc(1, sizeof(*job));
    const char *helo = petrel_helo(s);
    if (job == NULL)
        return PETREL_TEMPFAIL;
    job->refs = 2;
    job->m = m;
    job->policy = c->policy;
    job->client = strdup(petrel_client_addr(s));
    job->helo = helo ? strdup(helo) : NULL;
    job->sender = strdup(sender);
    if (job->client == NULL || job->sender == NULL || (helo && job->helo == NULL)) {
        job->refs = 1;
        job_unref(job);
        return PETREL_TEMPFAIL;
    }
    if (helo_is_domain(helo) && (c->policy.helo_check || sender[0] == '\0')) {
        struct spf_session *ss = session_state(s);
        if (ss->helo && strcmp(ss->helo, helo) == 0) {
            job->helo_known = 1;
            job->helo_out = ss->helo_out;
        } else {
            job->check_helo = 1;
        }
    }
    tx->job = job;
    petrel_pool_cleanup_add(petrel_tx_pool(s), job_tx_cleanup, job);
    job->bridge = mod->bridge;
    spf_bridge_hold(job->bridge);
    job->pending = petrel_suspend(s);
    if (petrel_run_blocking(m, job_work, job_done, job) != 0) {
        /* no worker threads in this process: answer now */
        spf_bridge_drop(job->bridge);
        job->bridge = NULL;
        job->completed = 0;
        tx->job = NULL;
        petrel_resume(job->pending, PETREL_TEMPFAIL, 451, "4.7.24", "SPF check unavailable");
        job_unref(job);
        return PETREL_PENDING;
    }
    return PETREL_PENDING;
}

/* DATA: the result is final; add Received-SPF at the top of the message
 * and publish the result for DMARC. */
static petrel_verdict spf_data(petrel_session *s)
{
    struct spf_tx *tx = tx_state(s);
    if (tx == NULL || tx->job == NULL || !tx->job->completed || tx->header_done)
        return PETREL_CONTINUE;
    tx->header_done = 1;
    cache_helo(s, tx->job);
    struct spf_decision d;
    decide(tx->job, &d);
    publish_notes(s, tx->job, &d);
    if (d.header && d.identity != ID_NONE) {
        char value[1500];
        header_value(tx->job, &d, receiver_name(s), value, sizeof(value));
        if (petrel_header_insert(s, 0, "Received-SPF", value) != 0)
            petrel_log(s, PETREL_LOG_WARNING, "spf: the Received-SPF header was refused");
    }
    return PETREL_CONTINUE;
}

static int spf_init(petrel_module *m, const char **error)
{
    struct spf_mod *mod = calloc(1, sizeof(*mod));
    if (mod == NULL) {
        *error = "out of memory";
        return -1;
    }
    spf_check_library_init();
    mod->bridge = spf_bridge_create(m, error);
    if (mod->bridge == NULL) {
        free(mod);
        return -1;
    }
    petrel_module_set_data(m, mod);
    return 0;
}

static void spf_fini(petrel_module *m)
{
    struct spf_mod *mod = petrel_module_data(m);
    if (mod == NULL)
        return;
    spf_bridge_release(mod->bridge);
    free(mod);
    petrel_module_set_data(m, NULL);
}

static const petrel_restriction spf_restrictions[] = {
    { SPF_RESTRICTION .name = "check_spf", .nargs = 0, .compile = spf_compile, .check = spf_check },
    { .name = NULL },
};

const petrel_module_desc petrel_module_descriptor = {
    PETREL_MODULE_INIT,
    .name = "spf",
    .version = "1.0",
    .description = "SPF (RFC 7208) checks of the HELO and MAIL FROM identities with libspf2: check_spf",
    .params = spf_params,
    .init = spf_init,
    .fini = spf_fini,
    .hooks = { .data = spf_data },
    .restrictions = spf_restrictions,
    /* one evaluation may take spf_lookup_timeout (20 s) of DNS */
    .hook_timeout_ms = 30000,
};
