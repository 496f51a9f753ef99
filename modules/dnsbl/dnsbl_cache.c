/*
 * The dnsbl module's answer cache, kept across sessions for as long as
 * the DNS said an answer may be kept (petrel_dns_answer_ttl, ABI 1.1):
 * a client that connects again within the TTL, or the next client of the
 * same network asking the same list, costs no query. One cache per
 * process (module data), on the loop thread only, so no locks.
 *
 * Bounds: at most DNSBL_CACHE_MAX entries (a full cache first drops what
 * has expired, then takes nothing new: a flood of distinct clients cannot
 * grow it), and a TTL is capped at DNSBL_CACHE_TTL_MAX (Postfix's
 * postscreen_dnsbl_max_ttl, 1 h). Only answers are kept: OK, NXDOMAIN and
 * NODATA with a TTL above 0; a failure or a timeout never is.
 */
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <petrel/plugin.h>

#include "dnsbl.h"

#define DNSBL_CACHE_BUCKETS 1024
#define DNSBL_CACHE_MAX 8192
#define DNSBL_CACHE_TTL_MAX 3600

struct entry {
    struct entry *next;
    petrel_dns_type type;
    char *query;
    petrel_dns_status status;
    char **values;
    size_t count;
    time_t expires;
};

struct dnsbl_cache {
    struct entry *buckets[DNSBL_CACHE_BUCKETS];
    size_t n;
};

static unsigned bucket_of(petrel_dns_type type, const char *query)
{
    unsigned h = 2166136261u ^ (unsigned)type;
    for (const unsigned char *p = (const unsigned char *)query; *p; p++) {
        unsigned char c = *p >= 'A' && *p <= 'Z' ? (unsigned char)(*p + 32) : *p;
        h = (h ^ c) * 16777619u;
    }
    return h % DNSBL_CACHE_BUCKETS;
}

static void entry_free(struct entry *e)
{
    for (size_t i = 0; i < e->count; i++)
        free(e->values[i]);
    free(e->values);
    free(e->query);
    free(e);
}

struct dnsbl_cache *dnsbl_cache_new(void)
{
    return calloc(1, sizeof(struct dnsbl_cache));
}

void dnsbl_cache_free(struct dnsbl_cache *c)
{
    if (c == NULL)
        return;
    for (size_t b = 0; b < DNSBL_CACHE_BUCKETS; b++) {
        struct entry *e, *next;
        for (e = c->buckets[b]; e; e = next) {
            next = e->next;
            entry_free(e);
        }
    }
    free(c);
}

static void drop_expired(struct dnsbl_cache *c, time_t now)
{
    for (size_t b = 0; b < DNSBL_CACHE_BUCKETS; b++) {
        struct entry **pe = &c->buckets[b];
        while (*pe) {
            struct entry *e = *pe;
            if (e->expires <= now) {
                *pe = e->next;
                entry_free(e);
                c->n--;
            } else {
                pe = &e->next;
            }
        }
    }
}

int dnsbl_cache_get(struct dnsbl_cache *c, petrel_dns_type type, const char *query, petrel_dns_status *status,
                    const char *const **values, size_t *count)
{
    if (c == NULL)
        return 0;
    time_t now = time(NULL);
    struct entry **pe = &c->buckets[bucket_of(type, query)];
    for (; *pe; pe = &(*pe)->next) {
        struct entry *e = *pe;
        if (e->type != type || strcasecmp(e->query, query) != 0)
            continue;
        if (e->expires <= now) {
            *pe = e->next;
            entry_free(e);
            c->n--;
            return 0;
        }
        *status = e->status;
        *values = (const char *const *)e->values;
        *count = e->count;
        return 1;
    }
    return 0;
}

void dnsbl_cache_put(struct dnsbl_cache *c, petrel_dns_type type, const char *query, const petrel_dns_answer *a,
                     long ttl)
{
    if (c == NULL || ttl <= 0 ||
        (a->status != PETREL_DNS_OK && a->status != PETREL_DNS_NXDOMAIN && a->status != PETREL_DNS_NODATA))
        return;
    time_t now = time(NULL);
    if (c->n >= DNSBL_CACHE_MAX)
        drop_expired(c, now);
    if (c->n >= DNSBL_CACHE_MAX)
        return;
    const char *const *old_values;
    size_t old_count;
    petrel_dns_status old_status;
    if (dnsbl_cache_get(c, type, query, &old_status, &old_values, &old_count))
        return;   /* another session's lookup of the same query came first */
    struct entry *e = calloc(1, sizeof(*e));
    if (e == NULL || (e->query = strdup(query)) == NULL) {
        free(e);
        return;
    }
    size_t n = a->status == PETREL_DNS_OK ? a->count : 0;
    if (n && (e->values = calloc(n, sizeof(*e->values))) == NULL) {
        entry_free(e);
        return;
    }
    for (size_t i = 0; i < n; i++) {
        if ((e->values[i] = strdup(a->values[i])) == NULL) {
            entry_free(e);
            return;
        }
        e->count++;
    }
    e->type = type;
    e->status = a->status;
    e->expires = now + (ttl < DNSBL_CACHE_TTL_MAX ? ttl : DNSBL_CACHE_TTL_MAX);
    unsigned b = bucket_of(type, query);
    e->next = c->buckets[b];
    c->buckets[b] = e;
    c->n++;
}
