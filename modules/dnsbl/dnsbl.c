/*
 * modules/dnsbl: Postfix's DNS allow- and blocklist restrictions
 * (reject_rbl_client, permit_dnswl_client, reject_rhsbl_client,
 * reject_rhsbl_reverse_client, reject_rhsbl_helo, reject_rhsbl_sender,
 * reject_rhsbl_recipient, permit_rhswl_client) with Postfix's replies
 * (default_rbl_reply and its $rbl_* names, maps_rbl_reject_code), and
 * postscreen's weighted score (dnsbl_sites, dnsbl_threshold,
 * dnsbl_whitelist_threshold) as one restriction, check_dnsbl_score.
 *
 * Design:
 * - A session's lookups live in a per-session cache (struct dnsbl_session,
 *   in the session slot): every query is asked once per session, whichever
 *   restrictions need it. The client-address queries of every list the
 *   configuration names start together at connect (in parallel, before the
 *   client even says EHLO), unless the client is in mynetworks; the others
 *   (sender, HELO, recipient, reverse name) start when a restriction first
 *   needs them.
 * - A restriction that needs an answer still in flight suspends. Each time
 *   a lookup completes, the suspended check is evaluated again; evaluation
 *   starts what it still needs (PTR then A for the reverse name, TXT after
 *   a listed A for the reply's $rbl_reason), so chains need no special code.
 * - Every lookup has its own deadline (dnsbl_timeout). A list that does
 *   not answer in time, or answers SERVFAIL, counts as not listed and is
 *   logged, as Postfix does ("a failed lookup counts as not listed").
 * - DNS callbacks can come after the session has ended: the cache is
 *   malloc'd and reference-counted by the lookups in flight, and the
 *   session's pool cleanup only marks it gone.
 * - Across sessions, answers are kept for their DNS TTL (petrel_dns_answer_ttl,
 *   capped at 1 h) in a per-process cache (dnsbl_cache.c): a session's
 *   lookup that finds a fresh answer there is answered at once, without a
 *   query. Failures and timeouts are never kept.
 * - rbl_reply_maps (per service, as Postfix reads it) is opened with
 *   petrel_table_open in init, each table once per process whichever
 *   services name it, and checked with petrel_table_check under
 *   petreld -n. Its lookups, local table or remote, answer on the loop:
 *   they join the session's lookup cache (struct reply_lookup) and a
 *   listed client's check waits for them as it waits for DNS. Postfix's
 *   search: the restriction's argument as written (with its =filter), then
 *   the bare domain, each through every table of the list in order; a
 *   table that fails answers 451 4.3.5, as Postfix's reject_server_error.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <petrel/plugin.h>

#include "dnsbl.h"

#define TXT_LIMIT 500          /* Postfix's RBL_TXT_LIMIT */

/* ------------------------------------------------------------------ */
/* configuration                                                       */

enum rule_kind {
    RBL_CLIENT, DNSWL_CLIENT, RHSBL_CLIENT, RHSWL_CLIENT, RHSBL_REVERSE_CLIENT, RHSBL_HELO,
    RHSBL_SENDER, RHSBL_RECIPIENT, DNSBL_SCORE,
};

struct rule {
    enum rule_kind kind;
    const char *name;                  /* the restriction's name, for the log */
    struct dnsbl_list list;            /* all but DNSBL_SCORE */
    const struct dnsbl_list *sites;    /* DNSBL_SCORE */
    size_t nsites;
};

/* Module data, made by init in each smtpd worker. */
/* What decides and answers, as one master.cf service (or main.cf) sets it:
 * the score thresholds and Postfix's default_rbl_reply and
 * maps_rbl_reject_code (through dnsbl_reply_template, dnsbl_reject_code),
 * which Postfix reads per service too. The lists queried are main.cf's. */
struct dnsbl_policy {
    const char *service;               /* NULL: main.cf's */
    long long threshold, allow_threshold;
    const char *reply_template;
    int reply_code;
    const char *reply_maps;            /* rbl_reply_maps as set ("" when not) */
    const char **reply_specs;          /* its tables, in search order */
    size_t nreply_specs;
    petrel_table **reply_tables;       /* opened by init (NULL in a compile) */
};

/* A table of rbl_reply_maps, opened once per process. */
struct open_table {
    const char *spec;
    petrel_table *table;
};

struct dnsbl_conf {
    petrel_pool *pool;
    struct dnsbl_policy main_policy;
    struct dnsbl_policy *policies;     /* one per hook service (petrel_service_at) */
    size_t npolicies;
    const struct dnsbl_list *sites;
    size_t nsites;
    unsigned timeout_ms;
    /* Zones queried with the client's address, started at connect: those
     * of dnsbl_sites and of every compiled client list (compile registers
     * them once init has run, which in a worker is before compiling). */
    const char **client_zones;
    size_t nclient_zones, client_zones_cap;
    struct dnsbl_cache *cache;         /* answers kept for their TTL (this process) */
    struct open_table *tables;         /* rbl_reply_maps tables, all services' */
    size_t ntables;
};

static const petrel_param dnsbl_params[] = {
    { PETREL_PARAM_INIT, .name = "dnsbl_sites", .type = PETREL_PARAM_LIST, .default_value = "",
      .help = "postscreen-style weighted lists for check_dnsbl_score: domain[=filter][*weight], ..." },
    { PETREL_PARAM_INIT, .name = "dnsbl_threshold", .type = PETREL_PARAM_INT, .default_value = "1",
      .help = "check_dnsbl_score rejects a client whose score reaches this", .per_service = 1 },
    { PETREL_PARAM_INIT, .name = "dnsbl_whitelist_threshold", .type = PETREL_PARAM_INT, .default_value = "0",
      .help = "check_dnsbl_score permits a client whose score is at most this (when negative)", .per_service = 1 },
    { PETREL_PARAM_INIT, .name = "dnsbl_allowlist_threshold", .type = PETREL_PARAM_INT,
      .default_value = "$dnsbl_whitelist_threshold",
      .help = "the same, under Postfix 3.6's name", .per_service = 1 },
    { PETREL_PARAM_INIT, .name = "dnsbl_timeout", .type = PETREL_PARAM_TIME, .default_value = "10s",
      .help = "how long one DNS list may take to answer; then it counts as not listed" },
    /* The module's view of Postfix's parameters (set those: these follow them). */
    { PETREL_PARAM_INIT, .name = "dnsbl_reply_template", .type = PETREL_PARAM_STRING,
      .default_value = "$default_rbl_reply",
      .help = "set default_rbl_reply instead", .per_service = 1 },
    { PETREL_PARAM_INIT, .name = "dnsbl_reject_code", .type = PETREL_PARAM_INT,
      .default_value = "$maps_rbl_reject_code",
      .help = "set maps_rbl_reject_code instead", .per_service = 1 },
    { PETREL_PARAM_INIT, .name = "dnsbl_reply_maps", .type = PETREL_PARAM_STRING, .default_value = "$rbl_reply_maps",
      .help = "set rbl_reply_maps instead", .per_service = 1 },
    { .name = NULL },
};

/* Splits a table list ("texthash:/a, socketmap:inet:127.0.0.1:9:rbl") as
 * Postfix splits a maps parameter: on commas and white space. */
static void split_specs(const char *text, petrel_pool *pool, const char ***out, size_t *n)
{
    size_t cap = 0;
    *out = NULL;
    *n = 0;
    for (const char *p = text ? text : "";;) {
        p += strspn(p, " \t\r\n,");
        if (*p == '\0')
            return;
        size_t len = strcspn(p, " \t\r\n,");
        if (*n == cap) {
            cap = cap ? cap * 2 : 4;
            const char **bigger = petrel_pool_zalloc(pool, cap * sizeof(*bigger));
            if (*n)
                memcpy(bigger, *out, *n * sizeof(*bigger));
            *out = bigger;
        }
        (*out)[(*n)++] = petrel_pool_strndup(pool, p, len);
        p += len;
    }
}

/* The table spec opens once per process (init), shared by the services
 * that name it; NULL with *error. */
static petrel_table *open_reply_table(petrel_module *m, struct dnsbl_conf *conf, const char *spec, const char **error)
{
    for (size_t i = 0; i < conf->ntables; i++)
        if (strcmp(conf->tables[i].spec, spec) == 0)
            return conf->tables[i].table;
    petrel_table *t = petrel_table_open(m, spec, PETREL_TABLE_FOLD_CASE, error);
    if (t == NULL)
        return NULL;
    struct open_table *bigger = petrel_pool_zalloc(conf->pool, (conf->ntables + 1) * sizeof(*bigger));
    if (conf->ntables)
        memcpy(bigger, conf->tables, conf->ntables * sizeof(*bigger));
    bigger[conf->ntables].spec = petrel_pool_strdup(conf->pool, spec);
    bigger[conf->ntables].table = t;
    conf->tables = bigger;
    conf->ntables++;
    return t;
}

/* The policy as the service (NULL: main.cf) sets it, checked; with conf
 * (init), its rbl_reply_maps tables are opened. */
static const char *policy_settings(petrel_module *m, const char *service, petrel_pool *pool, struct dnsbl_conf *conf,
                                   struct dnsbl_policy *out)
{
#define GET_STR(name) (service ? petrel_service_config_string(m, service, name) : petrel_param_string(m, name))
#define GET_INT(name) (service ? petrel_service_config_int(m, service, name) : petrel_param_int(m, name))
    const char *maps = GET_STR("dnsbl_reply_maps");
    out->reply_maps = petrel_pool_strdup(pool, maps ? maps : "");
    split_specs(maps, pool, &out->reply_specs, &out->nreply_specs);
    if (conf && out->nreply_specs) {
        out->reply_tables = petrel_pool_zalloc(pool, out->nreply_specs * sizeof(*out->reply_tables));
        for (size_t i = 0; i < out->nreply_specs; i++) {
            const char *why = NULL;
            if ((out->reply_tables[i] = open_reply_table(m, conf, out->reply_specs[i], &why)) == NULL)
                return petrel_pool_printf(pool, "rbl_reply_maps: %s", why ? why : out->reply_specs[i]);
        }
    }
    const char *template_text = GET_STR("dnsbl_reply_template");
    const char *err = dnsbl_template_check(template_text ? template_text : "", pool);
    if (err)
        return petrel_pool_printf(pool, "default_rbl_reply: %s", err);
    out->service = service;
    out->reply_template = petrel_pool_strdup(pool, template_text ? template_text : "");
    out->reply_code = (int)GET_INT("dnsbl_reject_code");
    out->threshold = GET_INT("dnsbl_threshold");
    out->allow_threshold = GET_INT("dnsbl_allowlist_threshold");
#undef GET_STR
#undef GET_INT
    return NULL;
}

/* Settings every restriction's compile checks, so that petreld -n reports
 * them; with conf, main.cf's policy and each service's are kept. */
static const char *check_common(petrel_module *m, petrel_pool *pool, struct dnsbl_conf *conf)
{
    struct dnsbl_policy main_policy;
    memset(&main_policy, 0, sizeof(main_policy));
    const char *err = policy_settings(m, NULL, pool, conf, &main_policy);
    if (err)
        return err;
    size_t n = petrel_service_count(m);
    struct dnsbl_policy *policies = petrel_pool_zalloc(pool, (n ? n : 1) * sizeof(*policies));
    for (size_t i = 0; i < n; i++) {
        const char *service = petrel_service_at(m, i);
        if ((err = policy_settings(m, service, pool, conf, &policies[i])) != NULL)
            return petrel_pool_printf(pool, "master.cf service %s: %s", service, err);
    }
    if (conf) {
        conf->main_policy = main_policy;
        conf->policies = policies;
        conf->npolicies = n;
    }
    return NULL;
}

static const char *parse_sites(petrel_module *m, petrel_pool *pool, struct dnsbl_list **out, size_t *n)
{
    const char *text = petrel_param_string(m, "dnsbl_sites");
    *out = NULL;
    *n = 0;
    if (text == NULL)
        return NULL;
    size_t cap = 0;
    const char *p = text;
    for (;;) {
        while (*p == ' ' || *p == '\t' || *p == ',' || *p == '\n' || *p == '\r')
            p++;
        if (*p == '\0')
            break;
        size_t len = strcspn(p, " \t,\r\n");
        char *item = petrel_pool_strndup(pool, p, len);
        p += len;
        if (*n == cap) {
            cap = cap ? cap * 2 : 8;
            struct dnsbl_list *bigger = petrel_pool_zalloc(pool, cap * sizeof(*bigger));
            if (*n)
                memcpy(bigger, *out, *n * sizeof(*bigger));
            *out = bigger;
        }
        const char *err = dnsbl_list_parse(item, 1, &(*out)[*n], pool);
        if (err)
            return petrel_pool_printf(pool, "dnsbl_sites: %s", err);
        (*n)++;
    }
    return NULL;
}

static void register_client_zone(struct dnsbl_conf *conf, const char *zone)
{
    for (size_t i = 0; i < conf->nclient_zones; i++)
        if (strcasecmp(conf->client_zones[i], zone) == 0)
            return;
    if (conf->nclient_zones == conf->client_zones_cap) {
        size_t cap = conf->client_zones_cap ? conf->client_zones_cap * 2 : 8;
        const char **bigger = petrel_pool_zalloc(conf->pool, cap * sizeof(*bigger));
        if (conf->nclient_zones)
            memcpy(bigger, conf->client_zones, conf->nclient_zones * sizeof(*bigger));
        conf->client_zones = bigger;
        conf->client_zones_cap = cap;
    }
    conf->client_zones[conf->nclient_zones++] = petrel_pool_strdup(conf->pool, zone);
}

static int compile_rule(petrel_module *m, enum rule_kind kind, const char *name, const char *const *args,
                        void **state, petrel_pool *pool, const char **error)
{
    const char *err = check_common(m, pool, NULL);
    if (err) {
        *error = err;
        return -1;
    }
    struct rule *r = petrel_pool_zalloc(pool, sizeof(*r));
    r->kind = kind;
    r->name = name;
    struct dnsbl_conf *conf = petrel_module_data(m);
    if (kind == DNSBL_SCORE) {
        struct dnsbl_list *sites;
        err = parse_sites(m, pool, &sites, &r->nsites);
        if (err == NULL && r->nsites == 0)
            err = "dnsbl_sites is empty: check_dnsbl_score has no list to ask";
        if (err) {
            *error = err;
            return -1;
        }
        r->sites = sites;
        for (size_t i = 0; conf && i < r->nsites; i++)
            register_client_zone(conf, sites[i].zone);
    } else {
        err = dnsbl_list_parse(args[0], 0, &r->list, pool);
        if (err) {
            *error = err;
            return -1;
        }
        if (conf && (kind == RBL_CLIENT || kind == DNSWL_CLIENT))
            register_client_zone(conf, r->list.zone);
    }
    *state = r;
    return 0;
}

#define COMPILE_FN(fn, kind, name)                                                                        \
    static int fn(petrel_module *m, const char *const *args, void **state, petrel_pool *pool,              \
                  const char **error)                                                                     \
    {                                                                                                     \
        return compile_rule(m, kind, name, args, state, pool, error);                                     \
    }
COMPILE_FN(compile_rbl_client, RBL_CLIENT, "reject_rbl_client")
COMPILE_FN(compile_dnswl_client, DNSWL_CLIENT, "permit_dnswl_client")
COMPILE_FN(compile_rhsbl_client, RHSBL_CLIENT, "reject_rhsbl_client")
COMPILE_FN(compile_rhswl_client, RHSWL_CLIENT, "permit_rhswl_client")
COMPILE_FN(compile_rhsbl_reverse, RHSBL_REVERSE_CLIENT, "reject_rhsbl_reverse_client")
COMPILE_FN(compile_rhsbl_helo, RHSBL_HELO, "reject_rhsbl_helo")
COMPILE_FN(compile_rhsbl_sender, RHSBL_SENDER, "reject_rhsbl_sender")
COMPILE_FN(compile_rhsbl_recipient, RHSBL_RECIPIENT, "reject_rhsbl_recipient")
COMPILE_FN(compile_score, DNSBL_SCORE, "check_dnsbl_score")

/* petreld -n, the start and a reload: every table of rbl_reply_maps, as
 * main.cf and each service set it, must open (a compile checks the rest). */
static int dnsbl_check_config(petrel_module *m)
{
    int bad = 0;
    petrel_pool *pool = petrel_pool_create(1024);
    size_t n = petrel_service_count(m);
    for (size_t i = 0; i <= n; i++) {
        const char *service = i < n ? petrel_service_at(m, i) : NULL;
        const char *maps = service ? petrel_service_config_string(m, service, "dnsbl_reply_maps")
                                   : petrel_param_string(m, "dnsbl_reply_maps");
        const char *main_maps = petrel_param_string(m, "dnsbl_reply_maps");
        if (service && strcmp(maps ? maps : "", main_maps ? main_maps : "") == 0)
            continue;   /* main.cf's, checked once */
        const char **specs;
        size_t nspecs;
        split_specs(maps, pool, &specs, &nspecs);
        for (size_t k = 0; k < nspecs; k++) {
            const char *why = NULL;
            if (petrel_table_check(m, specs[k], &why) == 0)
                continue;
            bad = 1;
            if (service)
                petrel_service_config_error(m, service, "rbl_reply_maps", "%s", why ? why : specs[k]);
            else
                petrel_config_error(m, "rbl_reply_maps", "%s", why ? why : specs[k]);
        }
    }
    petrel_pool_destroy(pool);
    return bad ? -1 : 0;
}

static int dnsbl_init(petrel_module *m, const char **error)
{
    petrel_pool *pool = petrel_pool_create(4096);
    struct dnsbl_conf *conf = petrel_pool_zalloc(pool, sizeof(*conf));
    conf->pool = pool;
    const char *err = check_common(m, pool, conf);
    struct dnsbl_list *sites = NULL;
    if (err == NULL)
        err = parse_sites(m, pool, &sites, &conf->nsites);
    if (err) {
        *error = err;   /* pool text: the process refuses to start, the pool goes with it */
        return -1;
    }
    conf->sites = sites;
    for (size_t i = 0; i < conf->nsites; i++)
        register_client_zone(conf, sites[i].zone);
    long long t = petrel_param_int(m, "dnsbl_timeout");
    conf->timeout_ms = (unsigned)(t > 0 && t < 3600 ? t * 1000 : 10000);
    conf->cache = dnsbl_cache_new();
    petrel_module_set_data(m, conf);
    return 0;
}

static void dnsbl_fini(petrel_module *m)
{
    struct dnsbl_conf *conf = petrel_module_data(m);
    if (conf) {
        dnsbl_cache_free(conf->cache);
        petrel_pool_destroy(conf->pool);
    }
    petrel_module_set_data(m, NULL);
}

/* ------------------------------------------------------------------ */
/* the per-session lookup cache                                        */

enum lookup_state { LOOKUP_PENDING, LOOKUP_ANSWERED, LOOKUP_TIMED_OUT };

struct dnsbl_session;

struct lookup {
    struct lookup *next;
    struct dnsbl_session *ds;
    petrel_dns_type type;
    char *query;
    enum lookup_state state;
    petrel_dns_status status;
    char **values;
    size_t count;
    petrel_timer *timer;
    int logged;                       /* its failure was logged */
};

/* One rbl_reply_maps lookup of the session: (table, key). */
enum reply_state { REPLY_PENDING, REPLY_FOUND, REPLY_NOTFOUND, REPLY_FAILED };

struct reply_lookup {
    struct reply_lookup *next;
    struct dnsbl_session *ds;
    petrel_table *table;
    char *key;
    enum reply_state state;
    char *value;
};

struct waiter {
    struct waiter *next;
    petrel_pending *pending;
    const struct rule *rule;
    struct dnsbl_reply_facts facts;   /* strings owned by the waiter */
};

struct dnsbl_session {
    petrel_module *m;
    struct dnsbl_conf *conf;
    const struct dnsbl_policy *policy;  /* the session's service's */
    int refs;                         /* the session (until gone) + lookups in flight */
    int gone;
    int evaluating, again;            /* evaluate_waiters is running; run it once more */
    struct lookup *lookups;
    struct reply_lookup *replies;
    struct waiter *waiters;
};

static void session_release(struct dnsbl_session *ds)
{
    if (--ds->refs > 0)
        return;
    struct lookup *l, *next;
    for (l = ds->lookups; l; l = next) {
        next = l->next;
        for (size_t i = 0; i < l->count; i++)
            free(l->values[i]);
        free(l->values);
        free(l->query);
        free(l);
    }
    struct reply_lookup *rl, *rnext;
    for (rl = ds->replies; rl; rl = rnext) {
        rnext = rl->next;
        free(rl->key);
        free(rl->value);
        free(rl);
    }
    free(ds);
}

static void free_waiter(struct waiter *w)
{
    struct dnsbl_reply_facts *f = &w->facts;
    free((char *)f->client_address);
    free((char *)f->client_name);
    free((char *)f->helo_name);
    free((char *)f->sender);
    free((char *)f->recipient);
    free(w);
}

/* The session pool is going away: the session has ended. */
static void session_gone(void *arg)
{
    struct dnsbl_session *ds = arg;
    ds->gone = 1;
    for (struct lookup *l = ds->lookups; l; l = l->next)
        if (l->timer) {
            petrel_timer_cancel(l->timer);
            l->timer = NULL;
        }
    struct waiter *w, *next;
    for (w = ds->waiters; w; w = next) {
        next = w->next;
        /* The call is orphaned: resuming only releases its handle. */
        petrel_resume(w->pending, PETREL_CONTINUE, 0, NULL, NULL);
        free_waiter(w);
    }
    ds->waiters = NULL;
    session_release(ds);
}

static struct dnsbl_session *session_state(petrel_session *s, petrel_module *m)
{
    void **slot = petrel_session_slot(s);
    if (slot == NULL)
        return NULL;
    if (*slot == NULL) {
        struct dnsbl_session *ds = calloc(1, sizeof(*ds));
        if (ds == NULL)
            return NULL;
        ds->m = m;
        ds->conf = petrel_module_data(m);
        ds->policy = ds->conf ? &ds->conf->main_policy : NULL;
        const char *service = petrel_service_name(s);
        for (size_t i = 0; ds->conf && service && i < ds->conf->npolicies; i++)
            if (strcmp(ds->conf->policies[i].service, service) == 0)
                ds->policy = &ds->conf->policies[i];
        ds->refs = 1;
        petrel_pool_cleanup_add(petrel_session_pool(s), session_gone, ds);
        *slot = ds;
    }
    return *slot;
}

static void evaluate_waiters(struct dnsbl_session *ds);
static void evaluate_waiters_once(struct dnsbl_session *ds);

static const char *type_name(petrel_dns_type t)
{
    return t == PETREL_DNS_TXT ? "TXT" : t == PETREL_DNS_PTR ? "PTR" : "A";
}

static void lookup_finished(struct lookup *l)
{
    struct dnsbl_session *ds = l->ds;
    if (l->timer) {
        petrel_timer_cancel(l->timer);
        l->timer = NULL;
    }
    if (l->type != PETREL_DNS_TXT && !l->logged &&
        (l->state == LOOKUP_TIMED_OUT || l->status == PETREL_DNS_TEMPFAIL || l->status == PETREL_DNS_BADNAME)) {
        l->logged = 1;
        if (l->state == LOOKUP_TIMED_OUT)
            petrel_module_log(ds->m, PETREL_LOG_WARNING, "%s: %s lookup timed out after %u ms: counted as not listed",
                              l->query, type_name(l->type), ds->conf->timeout_ms);
        else
            petrel_module_log(ds->m, PETREL_LOG_WARNING, "%s: %s lookup error (%s): counted as not listed",
                              l->query, type_name(l->type),
                              l->status == PETREL_DNS_TEMPFAIL ? "temporary failure" : "bad name");
    }
    if (!ds->gone)
        evaluate_waiters(ds);
}

static void lookup_answered(const petrel_dns_answer *a, void *arg)
{
    struct lookup *l = arg;
    struct dnsbl_session *ds = l->ds;
    /* Kept for the next sessions even when this one has gone or timed out. */
    dnsbl_cache_put(ds->conf->cache, l->type, l->query, a, petrel_dns_answer_ttl(a));
    if (l->state == LOOKUP_PENDING && !ds->gone) {
        l->state = LOOKUP_ANSWERED;
        l->status = a->status;
        if (a->status == PETREL_DNS_OK && a->count > 0) {
            l->values = calloc(a->count, sizeof(*l->values));
            for (size_t i = 0; l->values && i < a->count; i++)
                if ((l->values[l->count] = strdup(a->values[i])) != NULL)
                    l->count++;
        }
        lookup_finished(l);
    }
    session_release(ds);
}

static void lookup_timed_out(void *arg)
{
    struct lookup *l = arg;
    l->timer = NULL;   /* released as it fired */
    if (l->state != LOOKUP_PENDING)
        return;
    l->state = LOOKUP_TIMED_OUT;
    l->status = PETREL_DNS_TEMPFAIL;
    lookup_finished(l);
}

/* The cached lookup of (type, query), started if new. */
static struct lookup *lookup_get(struct dnsbl_session *ds, petrel_dns_type type, const char *query)
{
    for (struct lookup *l = ds->lookups; l; l = l->next)
        if (l->type == type && strcasecmp(l->query, query) == 0)
            return l;
    struct lookup *l = calloc(1, sizeof(*l));
    if (l == NULL || (l->query = strdup(query)) == NULL) {
        free(l);
        return NULL;
    }
    l->ds = ds;
    l->type = type;
    l->state = LOOKUP_PENDING;
    l->next = ds->lookups;
    ds->lookups = l;
    petrel_dns_status cached_status;
    const char *const *cached_values;
    size_t cached_count;
    if (dnsbl_cache_get(ds->conf->cache, type, query, &cached_status, &cached_values, &cached_count)) {
        /* Answered by an earlier session's lookup, still within its TTL. */
        l->state = LOOKUP_ANSWERED;
        l->status = cached_status;
        if (cached_count && (l->values = calloc(cached_count, sizeof(*l->values))) != NULL)
            for (size_t i = 0; i < cached_count; i++)
                if ((l->values[l->count] = strdup(cached_values[i])) != NULL)
                    l->count++;
        return l;
    }
    ds->refs++;
    l->timer = petrel_timer_start(ds->m, ds->conf->timeout_ms, lookup_timed_out, l);
    if (petrel_dns_lookup(ds->m, type, query, lookup_answered, l) != 0) {
        /* No resolver in this process: the lookup fails at once. */
        ds->refs--;
        l->state = LOOKUP_ANSWERED;
        l->status = PETREL_DNS_TEMPFAIL;
        if (l->timer) {
            petrel_timer_cancel(l->timer);
            l->timer = NULL;
        }
        l->logged = 1;
        petrel_module_log(ds->m, PETREL_LOG_WARNING, "%s: no DNS resolver available: counted as not listed", query);
    }
    return l;
}

/* petrel_table_lookup's answer, on the loop (never inside the call). */
static void reply_answered(int status, const char *value, void *arg)
{
    struct reply_lookup *rl = arg;
    struct dnsbl_session *ds = rl->ds;
    if (status == PETREL_TABLE_FOUND) {
        rl->value = strdup(value ? value : "");
        rl->state = rl->value ? REPLY_FOUND : REPLY_FAILED;
    } else {
        rl->state = status == PETREL_TABLE_NOTFOUND ? REPLY_NOTFOUND : REPLY_FAILED;
    }
    if (rl->state == REPLY_FAILED)
        petrel_module_log(ds->m, PETREL_LOG_WARNING, "rbl_reply_maps: lookup error for \"%s\"", rl->key);
    if (!ds->gone)
        evaluate_waiters(ds);
    session_release(ds);
}

/* The session's lookup of key in table, started if new; NULL when out of memory. */
static struct reply_lookup *reply_get(struct dnsbl_session *ds, petrel_table *table, const char *key)
{
    for (struct reply_lookup *rl = ds->replies; rl; rl = rl->next)
        if (rl->table == table && strcasecmp(rl->key, key) == 0)
            return rl;
    struct reply_lookup *rl = calloc(1, sizeof(*rl));
    if (rl == NULL || (rl->key = strdup(key)) == NULL) {
        free(rl);
        return NULL;
    }
    rl->ds = ds;
    rl->table = table;
    rl->state = REPLY_PENDING;
    rl->next = ds->replies;
    ds->replies = rl;
    ds->refs++;
    if (petrel_table_lookup(table, key, reply_answered, rl) != 0) {
        ds->refs--;
        rl->state = REPLY_FAILED;
        petrel_module_log(ds->m, PETREL_LOG_WARNING, "rbl_reply_maps: cannot look up \"%s\"", key);
    }
    return rl;
}

enum outcome { NOT_READY, NOT_LISTED, LISTED };

/* Postfix's search of rbl_reply_maps for a listed client: the argument as
 * written, then (when it has a =filter) the bare domain, each through
 * every table in order. LISTED when decided: *template is the table's
 * (NULL: default_rbl_reply), *failed when a table could not answer. */
static enum outcome reply_template(struct dnsbl_session *ds, const struct rule *r, const char **template_text,
                                   int *failed)
{
    const struct dnsbl_policy *pol = ds->policy;
    *template_text = NULL;
    *failed = 0;
    if (pol->reply_tables == NULL)
        return LISTED;
    const char *keys[2] = { r->list.spec, r->list.zone };
    int nkeys = r->list.spec && strcasecmp(r->list.spec, r->list.zone) != 0 ? 2 : 1;
    for (int k = nkeys == 2 ? 0 : 1; k < 2; k++) {
        for (size_t i = 0; i < pol->nreply_specs; i++) {
            struct reply_lookup *rl = reply_get(ds, pol->reply_tables[i], keys[k]);
            if (rl == NULL || rl->state == REPLY_FAILED) {
                *failed = 1;
                return LISTED;
            }
            if (rl->state == REPLY_PENDING)
                return NOT_READY;
            if (rl->state == REPLY_FOUND) {
                *template_text = rl->value;
                return LISTED;
            }
        }
    }
    return LISTED;
}

/* ------------------------------------------------------------------ */
/* evaluation                                                          */

/* Whether query is listed under filter (A answers; NULL filter: any).
 * With want_txt, a listed query's TXT answer is awaited too. */
static enum outcome listed(struct dnsbl_session *ds, const char *query, const struct dnsbl_filter *filter,
                           int want_txt, const char **reason, petrel_pool *pool)
{
    struct lookup *a = lookup_get(ds, PETREL_DNS_A, query);
    if (a == NULL)
        return NOT_LISTED;
    if (a->state == LOOKUP_PENDING)
        return NOT_READY;
    if (a->state != LOOKUP_ANSWERED || a->status != PETREL_DNS_OK)
        return NOT_LISTED;
    int match = filter == NULL && a->count > 0;
    for (size_t i = 0; filter && i < a->count; i++)
        if (dnsbl_filter_match(filter, a->values[i]))
            match = 1;
    if (!match)
        return NOT_LISTED;
    if (want_txt) {
        struct lookup *t = lookup_get(ds, PETREL_DNS_TXT, query);
        if (t && t->state == LOOKUP_PENDING)
            return NOT_READY;
        if (t && t->state == LOOKUP_ANSWERED && t->status == PETREL_DNS_OK && reason) {
            size_t len = 0;
            char *text = petrel_pool_alloc(pool, TXT_LIMIT + 1);
            text[0] = '\0';
            for (size_t i = 0; i < t->count && len < TXT_LIMIT; i++) {
                if (i > 0 && len + 3 < TXT_LIMIT) {
                    memcpy(text + len, " / ", 3);
                    len += 3;
                }
                size_t n = strlen(t->values[i]);
                if (n > TXT_LIMIT - len)
                    n = TXT_LIMIT - len;
                memcpy(text + len, t->values[i], n);
                len += n;
                text[len] = '\0';
            }
            *reason = text;
        }
    }
    return LISTED;
}

struct verdict {
    petrel_verdict v;
    int code;
    char enhanced[16];
    const char *text;
};

static const char *class_of(enum rule_kind kind)
{
    switch (kind) {
    case RHSBL_REVERSE_CLIENT: return "Unverified Client host";
    case RHSBL_HELO: return "Helo command";
    case RHSBL_SENDER: return "Sender address";
    case RHSBL_RECIPIENT: return "Recipient address";
    default: return "Client host";
    }
}

/* Postfix's rbl_reject_reply: the template expanded, then split into code,
 * enhanced code and text; a template that does not give a 4xx/5xx reply is
 * logged and answered 450 4.7.1 Service unavailable. */
static void rbl_reply(struct dnsbl_session *ds, const struct rule *r, const char *what, const char *reason,
                      const char *template_text, const struct dnsbl_reply_facts *session_facts, petrel_pool *pool,
                      struct verdict *out)
{
    struct dnsbl_reply_facts f = *session_facts;
    f.code = ds->policy->reply_code;
    f.domain = r->list.zone;
    f.reason = reason ? reason : "";
    f.what = what;
    f.class_name = class_of(r->kind);
    const char *why;
    if (template_text && (why = dnsbl_template_check(template_text, pool)) != NULL) {
        /* Postfix: warned, then answered as if not found. */
        petrel_module_log(ds->m, PETREL_LOG_WARNING, "bad rbl reply template for domain %s: %s: %s",
                          r->list.spec ? r->list.spec : r->list.zone, template_text, why);
        template_text = NULL;
    }
    if (template_text == NULL)
        template_text = ds->policy->reply_template;
    char *reply = dnsbl_template_expand(template_text, &f, pool);
    const char *text;
    if (reply == NULL ||
        dnsbl_reply_split(reply, &out->code, out->enhanced, sizeof(out->enhanced), &text) != 0) {
        petrel_module_log(ds->m, PETREL_LOG_WARNING, "rbl response code configuration error: %s",
                          reply ? reply : template_text);
        out->v = PETREL_TEMPFAIL;
        out->code = 450;
        snprintf(out->enhanced, sizeof(out->enhanced), "4.7.1");
        out->text = "Service unavailable";
        return;
    }
    out->v = out->code >= 500 ? PETREL_REJECT : PETREL_TEMPFAIL;
    /* The core takes at most 400 characters of text. */
    out->text = strlen(text) > 400 ? petrel_pool_strndup(pool, text, 400) : text;
}

/* Decides a rule from the cache: NOT_READY while an answer it needs is in
 * flight (then it has started every lookup it needs). */
static enum outcome evaluate(struct dnsbl_session *ds, const struct rule *r, const struct dnsbl_reply_facts *facts,
                             petrel_pool *pool, struct verdict *out)
{
    out->v = PETREL_CONTINUE;
    if (r->kind == DNSBL_SCORE) {
        /* postscreen: each (list, filter, weight) that matches adds its
         * weight once; all lists are asked at once. */
        long long score = 0;
        int best_weight = 0;
        const char *best = NULL;
        int ready = 1;
        for (size_t i = 0; i < r->nsites; i++) {
            const struct dnsbl_list *site = &r->sites[i];
            char *query = dnsbl_address_query(facts->client_address, site->zone, pool);
            if (query == NULL)
                return NOT_LISTED;
            enum outcome o = listed(ds, query, site->filter, 0, NULL, pool);
            if (o == NOT_READY)
                ready = 0;
            else if (o == LISTED) {
                score += site->weight;
                if (best == NULL || site->weight > best_weight) {
                    best = site->zone;
                    best_weight = site->weight;
                }
            }
        }
        if (!ready)
            return NOT_READY;
        if (score >= ds->policy->threshold) {
            petrel_module_log(ds->m, PETREL_LOG_INFO, "DNSBL rank %lld for [%s]", score, facts->client_address);
            out->v = PETREL_REJECT;
            out->code = 550;
            snprintf(out->enhanced, sizeof(out->enhanced), "5.7.1");
            out->text = petrel_pool_printf(pool, "Service unavailable; client [%s] blocked using %s",
                                           facts->client_address, best ? best : "dnsbl_sites");
            return LISTED;
        }
        if (ds->policy->allow_threshold < 0 && score <= ds->policy->allow_threshold) {
            petrel_module_log(ds->m, PETREL_LOG_INFO, "DNSBL rank %lld for [%s]: allowlisted", score,
                              facts->client_address);
            out->v = PETREL_ACCEPT;
            return LISTED;
        }
        return NOT_LISTED;
    }

    const char *what = NULL;
    char *query = NULL;
    switch (r->kind) {
    case RBL_CLIENT:
    case DNSWL_CLIENT:
        what = facts->client_address;
        query = dnsbl_address_query(what, r->list.zone, pool);
        break;
    case RHSBL_CLIENT:
    case RHSWL_CLIENT:
        what = facts->client_name;
        if (what == NULL || strcasecmp(what, "unknown") == 0)
            return NOT_LISTED;
        query = dnsbl_domain_query(what, r->list.zone, pool);
        break;
    case RHSBL_REVERSE_CLIENT: {
        /* The client's reverse name, unverified: its PTR record. */
        struct lookup *ptr = lookup_get(ds, PETREL_DNS_PTR, facts->client_address);
        if (ptr == NULL)
            return NOT_LISTED;
        if (ptr->state == LOOKUP_PENDING)
            return NOT_READY;
        if (ptr->state != LOOKUP_ANSWERED || ptr->status != PETREL_DNS_OK || ptr->count == 0)
            return NOT_LISTED;
        what = ptr->values[0];
        query = dnsbl_domain_query(what, r->list.zone, pool);
        break;
    }
    case RHSBL_HELO:
        what = facts->helo_name;
        query = dnsbl_domain_query(what, r->list.zone, pool);
        break;
    case RHSBL_SENDER:
        what = facts->sender;
        query = what && *what ? dnsbl_domain_query(what, r->list.zone, pool) : NULL;
        break;
    case RHSBL_RECIPIENT:
        what = facts->recipient;
        query = dnsbl_domain_query(what, r->list.zone, pool);
        break;
    case DNSBL_SCORE:
        break;
    }
    if (query == NULL)
        return NOT_LISTED;
    int permit = r->kind == DNSWL_CLIENT || r->kind == RHSWL_CLIENT;
    const char *reason = NULL;
    enum outcome o = listed(ds, query, r->list.filter, !permit, &reason, pool);
    if (o != LISTED)
        return o;
    if (permit) {
        petrel_module_log(ds->m, PETREL_LOG_INFO, "%s: %s [%s] listed by %s: permitted", r->name, what,
                          facts->client_address, r->list.zone);
        out->v = PETREL_ACCEPT;
        return LISTED;
    }
    const char *template_text;
    int failed;
    if (reply_template(ds, r, &template_text, &failed) == NOT_READY)
        return NOT_READY;
    if (failed) {
        /* Postfix's reject_server_error: a table that is down defers. */
        out->v = PETREL_TEMPFAIL;
        out->code = 451;
        snprintf(out->enhanced, sizeof(out->enhanced), "4.3.5");
        out->text = "Server configuration error";
        return LISTED;
    }
    rbl_reply(ds, r, what, reason, template_text, facts, pool, out);
    return LISTED;
}

static void resume_with(petrel_pending *p, const struct verdict *v)
{
    if (v->v == PETREL_REJECT || v->v == PETREL_TEMPFAIL)
        petrel_resume(p, v->v, v->code, v->enhanced, v->text);
    else
        petrel_resume(p, v->v, 0, NULL, NULL);
}

/* Re-evaluates the suspended checks after a lookup completed. A lookup can
 * complete while this runs (an answer known at once), hence the guard. */
static void evaluate_waiters(struct dnsbl_session *ds)
{
    if (ds->evaluating) {
        ds->again = 1;
        return;
    }
    ds->evaluating = 1;
    do {
        ds->again = 0;
        evaluate_waiters_once(ds);
    } while (ds->again && !ds->gone);
    ds->evaluating = 0;
}

static void evaluate_waiters_once(struct dnsbl_session *ds)
{
    struct waiter **wp = &ds->waiters;
    while (*wp) {
        struct waiter *w = *wp;
        petrel_pool *scratch = petrel_pool_create(1024);
        struct verdict v;
        enum outcome o = evaluate(ds, w->rule, &w->facts, scratch, &v);
        if (o == NOT_READY) {
            petrel_pool_destroy(scratch);
            wp = &w->next;
            continue;
        }
        *wp = w->next;
        resume_with(w->pending, &v);
        petrel_pool_destroy(scratch);
        free_waiter(w);
    }
}

static char *dup_or_null(const char *s)
{
    return s ? strdup(s) : NULL;
}

static petrel_verdict dnsbl_check(petrel_session *s, void *state)
{
    const struct rule *r = state;
    petrel_module *m = petrel_session_module(s);
    struct dnsbl_session *ds = session_state(s, m);
    if (ds == NULL || ds->conf == NULL)
        return PETREL_CONTINUE;
    struct dnsbl_reply_facts facts = {
        .client_address = petrel_client_addr(s),
        .client_name = petrel_client_name(s),
        .reverse_client_name = petrel_client_name(s),
        .helo_name = petrel_helo(s),
        .sender = petrel_sender(s),
        .recipient = petrel_recipient(s),
    };
    petrel_pool *scratch = petrel_pool_create(1024);
    struct verdict v;
    enum outcome o = evaluate(ds, r, &facts, scratch, &v);
    if (o != NOT_READY) {
        if (v.v == PETREL_REJECT || v.v == PETREL_TEMPFAIL)
            petrel_set_reply(s, v.code, v.enhanced, v.text);
        petrel_pool_destroy(scratch);
        return v.v;
    }
    petrel_pool_destroy(scratch);
    struct waiter *w = calloc(1, sizeof(*w));
    if (w == NULL)
        return PETREL_CONTINUE;
    w->rule = r;
    w->facts.client_address = dup_or_null(facts.client_address);
    w->facts.client_name = dup_or_null(facts.client_name);
    w->facts.reverse_client_name = w->facts.client_name;
    w->facts.helo_name = dup_or_null(facts.helo_name);
    w->facts.sender = dup_or_null(facts.sender);
    w->facts.recipient = dup_or_null(facts.recipient);
    w->pending = petrel_suspend(s);
    if (w->pending == NULL) {
        free_waiter(w);
        return PETREL_CONTINUE;
    }
    w->next = ds->waiters;
    ds->waiters = w;
    return PETREL_PENDING;
}

/* Connect: start every client-address query of the configuration at once. */
static petrel_verdict dnsbl_connect(petrel_session *s)
{
    petrel_module *m = petrel_session_module(s);
    struct dnsbl_conf *conf = petrel_module_data(m);
    if (conf == NULL || conf->nclient_zones == 0 || petrel_in_mynetworks(s))
        return PETREL_CONTINUE;
    struct dnsbl_session *ds = session_state(s, m);
    if (ds == NULL)
        return PETREL_CONTINUE;
    petrel_pool *scratch = petrel_pool_create(1024);
    for (size_t i = 0; i < conf->nclient_zones; i++) {
        char *query = dnsbl_address_query(petrel_client_addr(s), conf->client_zones[i], scratch);
        if (query)
            lookup_get(ds, PETREL_DNS_A, query);
    }
    petrel_pool_destroy(scratch);
    return PETREL_CONTINUE;
}

static const petrel_restriction dnsbl_restrictions[] = {
    { PETREL_RESTRICTION_INIT, .name = "reject_rbl_client", .nargs = 1,
      .compile = compile_rbl_client, .check = dnsbl_check },
    { PETREL_RESTRICTION_INIT, .name = "permit_dnswl_client", .nargs = 1,
      .compile = compile_dnswl_client, .check = dnsbl_check },
    { PETREL_RESTRICTION_INIT, .name = "reject_rhsbl_client", .nargs = 1,
      .compile = compile_rhsbl_client, .check = dnsbl_check },
    { PETREL_RESTRICTION_INIT, .name = "permit_rhswl_client", .nargs = 1,
      .compile = compile_rhswl_client, .check = dnsbl_check },
    { PETREL_RESTRICTION_INIT, .name = "reject_rhsbl_reverse_client", .nargs = 1,
      .compile = compile_rhsbl_reverse, .check = dnsbl_check },
    { PETREL_RESTRICTION_INIT, .name = "reject_rhsbl_helo", .nargs = 1,
      .compile = compile_rhsbl_helo, .check = dnsbl_check },
    { PETREL_RESTRICTION_INIT, .name = "reject_rhsbl_sender", .nargs = 1,
      .compile = compile_rhsbl_sender, .check = dnsbl_check },
    { PETREL_RESTRICTION_INIT, .name = "reject_rhsbl_recipient", .nargs = 1,
      .compile = compile_rhsbl_recipient, .check = dnsbl_check },
    { PETREL_RESTRICTION_INIT, .name = "check_dnsbl_score", .nargs = 0,
      .compile = compile_score, .check = dnsbl_check },
    { .name = NULL },
};

const petrel_module_desc petrel_module_descriptor = {
    PETREL_MODULE_INIT,
    .name = "dnsbl",
    .version = "1.0",
    .description = "DNS allow/blocklists: Postfix's reject_rbl_client family and postscreen's weighted score",
    .params = dnsbl_params,
    .init = dnsbl_init,
    .fini = dnsbl_fini,
    .check = dnsbl_check_config,
    .hooks = { .connect = dnsbl_connect },
    .restrictions = dnsbl_restrictions,
    /* A list that does not answer counts as not listed after dnsbl_timeout;
     * the core's own deadline only catches what that misses (a PTR, an A
     * and a TXT lookup in a row). */
    .hook_timeout_ms = 35000,
};
