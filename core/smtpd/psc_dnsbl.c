/*
 * postscreen's DNSBL test (Postfix's postscreen_dnsbl.c and dnsblog(8)):
 * postscreen_dnsbl_sites parsed once per configuration, then for each
 * client one A query per list, all at once, through the worker's resolver
 * (core/lib/dns.c, c-ares on the loop). Each answer runs past every
 * (filter, weight) pair given for its list; the score is the sum of the
 * weights that matched, and the list with the largest matching weight names
 * the block in replies.
 *
 * Why the core does these lookups rather than the dnsbl module: Postfix's
 * postscreen needs no add-on for them, so a Postfix configuration with
 * postscreen_dnsbl_sites must not depend on `modules = dnsbl`; and the test
 * needs what the plugin API does not carry: each answer's TTL (a passed
 * test is cached for the lowest TTL, between postscreen_dnsbl_min_ttl and
 * _max_ttl) and a partial score when postscreen_greet_wait ends before
 * every list answered. The price is a second copy of the list syntax
 * parser (the module has one for its own restrictions); see
 * doc/postscreen.md.
 *
 * TTLs follow dnsblog: a listed answer's lowest A record TTL, a "not
 * listed" answer's SOA TTL (negative caching), -1 for a lookup that failed
 * or timed out. As in Postfix, an answer that listed the client counts
 * towards fail_ttl for positive weights and pass_ttl for allowlists
 * (negative weights), and the other way round for "not listed".
 *
 * Late answers never touch a request that was collected or cancelled: its
 * queries are cancelled in c-ares (their callbacks never run) and their
 * timers freed before the request is.
 */
#include "config.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <event2/event.h>

#include "lib/dns.h"
#include "lib/log.h"
#include "lib/xalloc.h"
#include "smtpd/psc.h"
#include "smtpd/smtpd_int.h"

/* ------------------------------------------------------------------ */
/* postscreen_dnsbl_sites                                              */

static void set_bit(unsigned char *set, unsigned v)
{
    set[v / 8] |= (unsigned char)(1u << (v % 8));
}

static int parse_octet(const char **p)
{
    const char *s = *p;
    if (!isdigit((unsigned char)*s))
        return -1;
    int v = 0;
    while (isdigit((unsigned char)*s)) {
        v = v * 10 + (*s - '0');
        if (v > 255)
            return -1;
        s++;
    }
    *p = s;
    return v;
}

const char *psc_dnsbl_filter_parse(const char *text, struct psc_dnsbl_filter *out, petrel_pool *pool)
{
    memset(out, 0, sizeof(*out));
    const char *p = text;
    for (int field = 0; field < 4; field++) {
        if (field > 0) {
            if (*p != '.')
                return petrel_pool_printf(pool, "bad filter \"%s\": expected four fields separated by \".\"", text);
            p++;
        }
        if (*p != '[') {
            int v = parse_octet(&p);
            if (v < 0)
                return petrel_pool_printf(pool, "bad filter \"%s\": expected a number from 0 to 255 or [...]", text);
            set_bit(out->octet[field], (unsigned)v);
            continue;
        }
        p++;
        for (;;) {
            int lo = parse_octet(&p);
            if (lo < 0)
                return petrel_pool_printf(pool, "bad filter \"%s\": expected a number from 0 to 255 in [...]",
                                          text);
            int hi = lo;
            if (p[0] == '.' && p[1] == '.') {
                p += 2;
                hi = parse_octet(&p);
                if (hi < lo)
                    return petrel_pool_printf(pool, "bad filter \"%s\": bad range in [...]", text);
            }
            for (int v = lo; v <= hi; v++)
                set_bit(out->octet[field], (unsigned)v);
            if (*p == ';') {
                p++;
                continue;
            }
            if (*p == ']') {
                p++;
                break;
            }
            return petrel_pool_printf(pool, "bad filter \"%s\": expected \";\" or \"]\" in [...]", text);
        }
    }
    if (*p != '\0')
        return petrel_pool_printf(pool, "bad filter \"%s\": unexpected text after the fourth field", text);
    return NULL;
}

int psc_dnsbl_filter_match(const struct psc_dnsbl_filter *f, const char *answer)
{
    unsigned char a[4];
    if (inet_pton(AF_INET, answer, a) != 1)
        return 0;
    for (int i = 0; i < 4; i++)
        if (!(f->octet[i][a[i] / 8] & (1u << (a[i] % 8))))
            return 0;
    return 1;
}

/* Postfix's valid_hostname for a list domain: letters, digits, '-' and '_'
 * in labels of at most 63, at most 255 in all, no empty label. */
static int valid_domain(const char *d)
{
    size_t n = strlen(d), label = 0;
    if (n == 0 || n > 255 || d[0] == '.' || d[n - 1] == '.')
        return 0;
    for (const char *p = d; *p; p++) {
        if (*p == '.') {
            if (label == 0)
                return 0;
            label = 0;
        } else if (isalnum((unsigned char)*p) || *p == '-' || *p == '_') {
            if (++label > 63)
                return 0;
        } else {
            return 0;
        }
    }
    return 1;
}

struct psc_dnsbl_list *psc_dnsbl_parse(const char *const *items, petrel_pool *pool, const char **error)
{
    struct psc_dnsbl_list *list = petrel_pool_zalloc(pool, sizeof(*list));
    size_t n = 0;
    while (items[n])
        n++;
    list->domains = petrel_pool_zalloc(pool, (n ? n : 1) * sizeof(*list->domains));
    for (size_t i = 0; i < n; i++) {
        char *copy = petrel_pool_strdup(pool, items[i]);
        int weight = 1;
        char *star = strchr(copy, '*');
        if (star) {
            *star = '\0';
            char *end;
            errno = 0;
            long w = strtol(star + 1, &end, 10);
            if (star[1] == '\0' || *end != '\0' || errno || w < -1000000 || w > 1000000) {
                *error = petrel_pool_printf(pool, "bad DNSBL weight factor \"%s\" in \"%s\"", star + 1, items[i]);
                return NULL;
            }
            weight = (int)w;
        }
        struct psc_dnsbl_filter *filter = NULL;
        char *eq = strchr(copy, '=');
        if (eq) {
            *eq = '\0';
            filter = petrel_pool_zalloc(pool, sizeof(*filter));
            const char *why = psc_dnsbl_filter_parse(eq + 1, filter, pool);
            if (why) {
                *error = petrel_pool_printf(pool, "bad DNSBL filter syntax in \"%s\": %s", items[i], why);
                return NULL;
            }
        }
        if (!valid_domain(copy)) {
            *error = petrel_pool_printf(pool, "bad DNSBL domain name \"%s\" in \"%s\"", copy, items[i]);
            return NULL;
        }
        for (char *p = copy; *p; p++)
            *p = (char)tolower((unsigned char)*p);
        /* A domain given several times (with different filters) is asked once. */
        struct psc_dnsbl_domain *d = NULL;
        for (size_t k = 0; k < list->ndomains; k++)
            if (strcmp(list->domains[k].name, copy) == 0)
                d = &list->domains[k];
        if (d == NULL) {
            d = &list->domains[list->ndomains++];
            d->name = copy;
            d->reply_name = copy;
            d->sites = petrel_pool_zalloc(pool, n * sizeof(*d->sites));
        }
        d->sites[d->nsites].filter = filter;
        d->sites[d->nsites].weight = weight;
        d->nsites++;
    }
    return list;
}

int psc_dnsbl_query_name(const char *addr, const char *domain, char *out, size_t size)
{
    unsigned char a[16];
    int n;
    if (inet_pton(AF_INET, addr, a) == 1) {
        n = snprintf(out, size, "%u.%u.%u.%u.%s", a[3], a[2], a[1], a[0], domain);
    } else if (inet_pton(AF_INET6, addr, a) == 1) {
        /* RFC 5782 2.4: the 32 nibbles, least significant first. */
        static const char hex[] = "0123456789abcdef";
        char nibbles[65];
        char *p = nibbles;
        for (int i = 15; i >= 0; i--) {
            *p++ = hex[a[i] & 0xf];
            *p++ = '.';
            *p++ = hex[a[i] >> 4];
            *p++ = '.';
        }
        *p = '\0';
        n = snprintf(out, size, "%s%s", nibbles, domain);
    } else {
        return -1;
    }
    return n > 0 && (size_t)n < size ? 0 : -1;
}

/* ------------------------------------------------------------------ */
/* one client's lookups                                                */

struct lookup {
    struct psc_dnsbl_request *req;
    const struct psc_dnsbl_domain *domain;
    struct dns_query *query;
    struct event *timer;
    char name[300];
    int answered;
};

struct psc_dnsbl_request {
    struct smtpd_worker *w;
    char client_addr[64];
    struct lookup *lookups;
    size_t nlookups;
    size_t pending;            /* lookups still in flight (or whose timer has not fired) */
    long long timeout;
    int done;                  /* collected or cancelled: answers are dropped */
    int notified;
    psc_dnsbl_done_fn *notify;
    void *arg;
    struct event *notify_ev;   /* the "every list answered" call, never from inside psc_dnsbl_start */
    /* the score so far */
    int total;
    const char *name;
    int name_weight;
    int fail_ttl, pass_ttl;
};

static void request_release(struct psc_dnsbl_request *r)
{
    if (!r->done || r->pending > 0)
        return;
    if (r->notify_ev)
        event_free(r->notify_ev);
    free(r->lookups);
    free(r);
}

static void on_notify(evutil_socket_t fd, short what, void *arg)
{
    struct psc_dnsbl_request *r = arg;
    if (!r->done && !r->notified) {
        r->notified = 1;
        r->notify(r->arg);
    }
}

static void lookup_finished(struct lookup *l)
{
    struct psc_dnsbl_request *r = l->req;
    l->answered = 1;
    if (l->timer) {
        event_free(l->timer);
        l->timer = NULL;
    }
    r->pending--;
    if (r->pending == 0 && !r->done)
        event_active(r->notify_ev, EV_TIMEOUT, 0);
    request_release(r);
}

/* As dnsblog logs it; then the answer runs past the list's filters. */
static void on_answer(const struct dns_answer *ans, void *arg)
{
    struct lookup *l = arg;
    struct psc_dnsbl_request *r = l->req;
    l->query = NULL;
    if (l->answered)
        return;
    if (!r->done) {
        const struct psc_dnsbl_domain *d = l->domain;
        if (ans->status == DNS_OK) {
            for (size_t i = 0; i < ans->count; i++)
                psc_log_as("dnsblog", 0, "addr %s listed by domain %s as %s", r->client_addr, d->name,
                           ans->values[i]);
            for (size_t k = 0; k < d->nsites; k++) {
                const struct psc_dnsbl_site *site = &d->sites[k];
                int match = site->filter == NULL;
                for (size_t i = 0; !match && i < ans->count; i++)
                    match = psc_dnsbl_filter_match(site->filter, ans->values[i]);
                if (match) {
                    if (r->name == NULL || r->name_weight < site->weight) {
                        r->name = d->reply_name;
                        r->name_weight = site->weight;
                    }
                    r->total += site->weight;
                }
                int *ttl = site->weight > 0 ? &r->fail_ttl : &r->pass_ttl;
                if (*ttl < 0 || *ttl > ans->ttl)
                    *ttl = ans->ttl;
            }
        } else {
            if (ans->status != DNS_NXDOMAIN && ans->status != DNS_NODATA)
                psc_log_as("dnsblog", 1, "dnsblog_query: lookup error for DNS query %s: %s", l->name,
                           dns_status_text(ans->status));
            for (size_t k = 0; k < d->nsites; k++) {
                int *ttl = d->sites[k].weight > 0 ? &r->pass_ttl : &r->fail_ttl;
                if (*ttl < 0 || *ttl > ans->ttl)
                    *ttl = ans->ttl;
            }
        }
    }
    lookup_finished(l);
}

static void on_lookup_timeout(evutil_socket_t fd, short what, void *arg)
{
    struct lookup *l = arg;
    struct psc_dnsbl_request *r = l->req;
    if (!r->done)
        psc_log_as("postscreen", 1, "dnsblog reply timeout %llds for %s", r->timeout, l->domain->name);
    /* The query goes on inside c-ares; its answer is dropped. Like a
     * failed lookup it lists nobody and says nothing about TTLs. */
    dns_cancel(l->query);
    l->query = NULL;
    lookup_finished(l);
}

struct psc_dnsbl_request *psc_dnsbl_start(struct smtpd_worker *w, const struct psc_dnsbl_list *list,
                                          const char *client_addr, long long timeout_seconds,
                                          psc_dnsbl_done_fn *done, void *arg)
{
    struct psc_dnsbl_request *r = xcalloc(1, sizeof(*r));
    r->w = w;
    snprintf(r->client_addr, sizeof(r->client_addr), "%s", client_addr);
    r->notify = done;
    r->arg = arg;
    r->timeout = timeout_seconds;
    r->fail_ttl = r->pass_ttl = -1;
    r->notify_ev = event_new(w->base, -1, 0, on_notify, r);
    r->lookups = xcalloc(list->ndomains ? list->ndomains : 1, sizeof(*r->lookups));
    r->nlookups = list->ndomains;
    r->pending = list->ndomains;
    struct timeval tv = { (time_t)timeout_seconds, 0 };
    for (size_t i = 0; i < list->ndomains; i++) {
        struct lookup *l = &r->lookups[i];
        l->req = r;
        l->domain = &list->domains[i];
        l->timer = evtimer_new(w->base, on_lookup_timeout, l);
        evtimer_add(l->timer, &tv);
    }
    /* Queries go out after every lookup is set up: an answer c-ares knows
     * at once (a bad name) then finds a complete request. */
    for (size_t i = 0; i < list->ndomains; i++) {
        struct lookup *l = &r->lookups[i];
        if (l->answered)
            continue;
        if (psc_dnsbl_query_name(client_addr, l->domain->name, l->name, sizeof(l->name)) != 0 || w->dns == NULL) {
            struct dns_answer bad = { DNS_BADNAME, 0, NULL, NULL, -1 };
            on_answer(&bad, l);
            continue;
        }
        l->query = dns_lookup(w->dns, DNS_A, l->name, on_answer, l);
    }
    if (list->ndomains == 0)
        event_active(r->notify_ev, EV_TIMEOUT, 0);
    return r;
}

int psc_dnsbl_result(struct psc_dnsbl_request *r, const char **name, int *ttl)
{
    int score = r->total;
    *name = r->name;
    *ttl = score > 0 ? r->fail_ttl : r->pass_ttl;
    psc_dnsbl_cancel(r);
    return score;
}

void psc_dnsbl_cancel(struct psc_dnsbl_request *r)
{
    if (r == NULL)
        return;
    r->done = 1;
    if (r->notify_ev)
        event_del(r->notify_ev);
    /* Lookups still in flight keep the request until they report. */
    for (size_t i = 0; i < r->nlookups; i++) {
        struct lookup *l = &r->lookups[i];
        if (!l->answered && l->query) {
            dns_cancel(l->query);
            l->query = NULL;
            l->answered = 1;
            if (l->timer) {
                event_free(l->timer);
                l->timer = NULL;
            }
            r->pending--;
        } else if (!l->answered && l->timer) {
            event_free(l->timer);
            l->timer = NULL;
            l->answered = 1;
            r->pending--;
        }
    }
    request_release(r);
}
