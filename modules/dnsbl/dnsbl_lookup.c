/*
 * A session's lookups, each asked once whichever restrictions need it: DNS
 * queries (A, TXT, PTR) with their own deadline (dnsbl_timeout) and the
 * per-process answer cache in front (dnsbl_cache.c), and rbl_reply_maps
 * lookups. Callbacks can come after the session has ended: struct
 * dnsbl_session is malloc'd and reference-counted by the lookups in
 * flight, and the session pool's cleanup only marks it gone. Each answer
 * re-evaluates the suspended checks (dnsbl_evaluate.c).
 */
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <petrel/plugin.h>

#include "dnsbl_module.h"

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

void dnsbl_free_waiter(struct waiter *w)
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
        dnsbl_free_waiter(w);
    }
    ds->waiters = NULL;
    session_release(ds);
}

struct dnsbl_session *dnsbl_session_state(petrel_session *s, petrel_module *m)
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
        dnsbl_evaluate_waiters(ds);
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
struct lookup *dnsbl_lookup_get(struct dnsbl_session *ds, petrel_dns_type type, const char *query)
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
        dnsbl_evaluate_waiters(ds);
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

enum outcome dnsbl_reply_maps_template(struct dnsbl_session *ds, const struct rule *r,
                                       const char **template_text, int *failed)
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
