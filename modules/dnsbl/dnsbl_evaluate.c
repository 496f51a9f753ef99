/*
 * Deciding a rule from a session's lookups (dnsbl_lookup.c): whether a
 * query is listed under its filter, postscreen's weighted score, and
 * Postfix's reply for a listed client (rbl_reject_reply: the template
 * from rbl_reply_maps or default_rbl_reply, expanded and split). A rule
 * that needs an answer still in flight is NOT_READY; evaluating it again
 * after each answer starts what it still needs, so chains (PTR then A,
 * TXT after a listed A) need no code of their own.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <petrel/plugin.h>

#include "dnsbl_module.h"

#define TXT_LIMIT 500          /* Postfix's RBL_TXT_LIMIT */

/* Whether query is listed under filter (A answers; NULL filter: any).
 * With want_txt, a listed query's TXT answer is awaited too. */
static enum outcome listed(struct dnsbl_session *ds, const char *query, const struct dnsbl_filter *filter,
                           int want_txt, const char **reason, petrel_pool *pool)
{
    struct lookup *a = dnsbl_lookup_get(ds, PETREL_DNS_A, query);
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
        struct lookup *t = dnsbl_lookup_get(ds, PETREL_DNS_TXT, query);
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

enum outcome dnsbl_evaluate(struct dnsbl_session *ds, const struct rule *r, const struct dnsbl_reply_facts *facts,
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
        struct lookup *ptr = dnsbl_lookup_get(ds, PETREL_DNS_PTR, facts->client_address);
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
    if (dnsbl_reply_maps_template(ds, r, &template_text, &failed) == NOT_READY)
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

static void evaluate_waiters_once(struct dnsbl_session *ds)
{
    struct waiter **wp = &ds->waiters;
    while (*wp) {
        struct waiter *w = *wp;
        petrel_pool *scratch = petrel_pool_create(1024);
        struct verdict v;
        enum outcome o = dnsbl_evaluate(ds, w->rule, &w->facts, scratch, &v);
        if (o == NOT_READY) {
            petrel_pool_destroy(scratch);
            wp = &w->next;
            continue;
        }
        *wp = w->next;
        resume_with(w->pending, &v);
        petrel_pool_destroy(scratch);
        dnsbl_free_waiter(w);
    }
}

/* Re-evaluates the suspended checks after a lookup completed. A lookup can
 * complete while this runs (an answer known at once), hence the guard. */
void dnsbl_evaluate_waiters(struct dnsbl_session *ds)
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
