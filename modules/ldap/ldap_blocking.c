/*
 * The blocking lookup of an ldap: table, for callers that cannot wait
 * (the queue manager's routing, petrelctl map query): a connection of its
 * own, made with ldap_setup_connect, searches with ldap_search_ext_s
 * bounded by the table's timeout, the results read by ldap_results.c as
 * the asynchronous lookup's are. A broken connection is made again once.
 * Referrals (chase_referrals = yes) are followed at once, as ldap_referral.c
 * prepares them: a connection to the referred server, bound anonymously,
 * for that search only; none is followed once the table's timeout has
 * passed since the lookup began (each connect and search is bounded by it
 * too).
 */
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <ldap.h>

#include <petrel/plugin.h>

#include "ldap_table.h"

struct blocking_ctx {
    struct table *t;
    struct lookup *lk;
    int broken;
    const char *url;                  /* the table's server that t->blocking is connected to */
    struct timespec deadline;         /* the lookup's timeout: no referral followed after it */
};

void ldap_blocking_drop(struct table *t)
{
    if (t->blocking)
        ldap_unbind_ext(t->blocking, NULL, NULL);
    t->blocking = NULL;
}

static int spawn_blocking(void *arg, const char *base, int scope, const char *filter, char **attrs, int depth);

/* One search on ld (the table's server at url, or a referred one), its
 * referrals chased and its entries read into x->lk. 0, or -1 (logged, or
 * x->broken set when the table's connection broke). */
static int blocking_run(struct blocking_ctx *x, LDAP *ld, const struct search_spec *spec, const char *url);

struct blocking_chase {
    struct blocking_ctx *x;
    const struct search_spec *spec;
    const char *url;
};

/* A referral, followed at once: the blocking lookup may block. */
static int chase_blocking(void *arg, const char *url)
{
    struct blocking_chase *bc = arg;
    struct table *t = bc->x->t;
    struct search_spec next;
    char *server;
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    if (now.tv_sec > bc->x->deadline.tv_sec ||
        (now.tv_sec == bc->x->deadline.tv_sec && now.tv_nsec >= bc->x->deadline.tv_nsec)) {
        petrel_module_log(t->module, PETREL_LOG_WARNING, "ldap:%s: no answer within %us for \"%.100s\": referral "
                          "to %.200s not followed", t->config, (t->timeout_ms + 999) / 1000, bc->x->lk->key, url);
        return -1;
    }
    if (ldap_referral_prepare(t, bc->x->lk->key, url, bc->spec, bc->url, &next, &server) != 0)
        return -1;
    struct ldap_setup setup;
    ldap_setup_fill(&setup, t, server, 0);
    setup.bind = 0;   /* anonymous, as in ldap_referral.c */
    setup.tls = t->tls || strncmp(server, "ldaps:", 6) == 0;
    LDAP *ld = ldap_setup_connect(&setup);
    int rc = -1;
    if (ld == NULL) {
        petrel_module_log(t->module, PETREL_LOG_WARNING, "ldap:%s: referred server %s: %s", t->config, server,
                          setup.diag);
    } else {
        rc = blocking_run(bc->x, ld, &next, server);
        ldap_unbind_ext(ld, NULL, NULL);
    }
    ldap_spec_free(&next);
    free(server);
    return rc;
}

static int blocking_run(struct blocking_ctx *x, LDAP *ld, const struct search_spec *spec, const char *url)
{
    struct table *t = x->t;
    LDAPMessage *res = NULL;
    int sizelimit = t->size_limit ? (int)t->size_limit : LDAP_NO_LIMIT;
    struct timeval tv = { (time_t)((t->timeout_ms + 999) / 1000), 0 };
    int rc = ldap_search_ext_s(ld, spec->base, spec->scope, spec->filter, spec->attrs, 0, NULL, NULL, &tv, sizelimit,
                               &res);
    if (res == NULL) {
        if (ld == t->blocking && (rc == LDAP_SERVER_DOWN || rc == LDAP_CONNECT_ERROR || rc == LDAP_TIMEOUT))
            x->broken = 1;
        else
            petrel_module_log(t->module, PETREL_LOG_WARNING, "ldap:%s: search error for \"%.100s\"%s%s: %s",
                              t->config, x->lk->key, ld == t->blocking ? "" : " on referred server ",
                              ld == t->blocking ? "" : url, ldap_err2string(rc));
        return -1;
    }
    int drop = 0;
    int outcome = ldap_search_outcome(t, ld, res, spec->base, spec->depth, x->lk->key, &drop);
    struct blocking_chase bc = { x, spec, url };
    if (outcome >= 0 && t->chase_referrals && ldap_referrals_each(t, ld, res, x->lk->key, chase_blocking, &bc) != 0)
        outcome = -1;
    if (outcome > 0 && !x->lk->error && t->blocking)
        ldap_read_entries(t, ld, res, x->lk, spec->depth, spawn_blocking, x);
    ldap_msgfree(res);
    if (drop && ld == t->blocking)
        x->broken = 1;
    return outcome < 0 ? -1 : 0;
}

static int blocking_search(struct blocking_ctx *x, const char *base, int scope, const char *filter, char **attrs,
                           int depth, const char *url)
{
    /* Borrowed, not copied: blocking_run only reads it. */
    struct search_spec spec = { .base = (char *)base, .filter = (char *)filter, .attrs = attrs, .scope = scope,
                                .depth = depth };
    return blocking_run(x, x->t->blocking, &spec, url);
}

static int spawn_blocking(void *arg, const char *base, int scope, const char *filter, char **attrs, int depth)
{
    struct blocking_ctx *x = arg;
    if (x->t->blocking == NULL)
        return -1;
    return blocking_search(x, base, scope, filter, attrs, depth, x->url);
}

static int blocking_connect(struct table *t)
{
    for (int attempt = 0; attempt < t->nhosts; attempt++) {
        int host = ldap_pick_host(t);
        struct ldap_setup setup;
        ldap_setup_fill(&setup, t, t->hosts[host].url, 0);
        LDAP *ld = ldap_setup_connect(&setup);
        if (ld) {
            t->blocking = ld;
            t->blocking_host = host;
            return 0;
        }
        petrel_module_log(t->module, PETREL_LOG_WARNING, "ldap:%s: %s: %s", t->config, t->hosts[host].url,
                          setup.diag);
        t->hosts[host].dead_until = time(NULL) + HOST_RETRY_SECONDS;
    }
    return -1;
}

int ldap_lookup_blocking(void *handle, const char *key, const char **value, petrel_pool *scratch)
{
    struct table *t = handle;
    if (!ldap_eligible(t, key))
        return 0;
    char *base, *filter;
    if (!ldap_make_search(t, key, &base, &filter))
        return 0;
    int status = -1;
    for (int attempt = 0; attempt < 2; attempt++) {
        if (t->blocking == NULL && blocking_connect(t) != 0) {
            petrel_module_log(t->module, PETREL_LOG_WARNING, "ldap:%s: no LDAP server available", t->config);
            break;
        }
        struct lookup lk = { .key = key };
        struct blocking_ctx x = { t, &lk, 0, t->hosts[t->blocking_host].url, { 0, 0 } };
        clock_gettime(CLOCK_MONOTONIC, &x.deadline);
        x.deadline.tv_sec += (time_t)(t->timeout_ms / 1000);
        x.deadline.tv_nsec += (long)(t->timeout_ms % 1000) * 1000000L;
        if (x.deadline.tv_nsec >= 1000000000L) {
            x.deadline.tv_sec++;
            x.deadline.tv_nsec -= 1000000000L;
        }
        int rc = blocking_search(&x, base, t->scope, filter, t->attrs, 0, x.url);
        if (x.broken)
            ldap_blocking_drop(t);
        if (x.broken && lk.result.len == 0 && attempt == 0 && rc != 0) {
            free(lk.result.data);
            continue;   /* the connection broke: once more on a new one */
        }
        if (rc != 0 || lk.error)
            status = -1;
        else if (lk.result.len > 0)
            status = 1, *value = petrel_pool_strdup(scratch, lk.result.data);
        else
            status = 0;
        free(lk.result.data);
        break;
    }
    free(base);
    free(filter);
    return status;
}
