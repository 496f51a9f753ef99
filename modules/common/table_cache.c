/*
 * The per-table result cache (see table_cache.h for what and why): a
 * chained hash table of entries that are also on a least-recently-used
 * list; an entry past its expiry is dropped when it is next looked at,
 * and the least recently used one makes room when the cache is full.
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "table_cache.h"

#define MAX_TTL_SECONDS TABLE_CACHE_MAX_TTL
#define MAX_SIZE TABLE_CACHE_MAX_SIZE

struct cache_entry {
    struct cache_entry *chain;          /* the next in this bucket */
    struct cache_entry *newer, *older;  /* the LRU list */
    double expires;
    int status;                         /* PETREL_TABLE_FOUND or _NOTFOUND */
    char *value;                        /* points into key's allocation; NULL when not found */
    char key[];
};

struct table_cache {
    double ttl, negative_ttl;
    size_t size, count, nbuckets;
    struct cache_entry **buckets;
    struct cache_entry *newest, *oldest;
    const char *spec;                   /* the metric's table label */
    petrel_metric *lookups;
    int registered;
};

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

/* FNV-1a */
static size_t hash(const char *key)
{
    uint64_t h = 1469598103934665603ULL;
    for (const unsigned char *p = (const unsigned char *)key; *p; p++)
        h = (h ^ *p) * 1099511628211ULL;
    return (size_t)h;
}

/* "60", "60s", "10m", "1h", "1d" (Postfix's time units) into seconds. */
int table_cache_parse_time(const char *text, long *seconds)
{
    char *end;
    errno = 0;
    long n = strtol(text, &end, 10);
    if (errno || end == text || n < 0)
        return -1;
    long unit = 1;
    if (*end != '\0') {
        switch (*end++) {
        case 's': unit = 1; break;
        case 'm': unit = 60; break;
        case 'h': unit = 3600; break;
        case 'd': unit = 86400; break;
        default: return -1;
        }
        if (*end != '\0')
            return -1;
    }
    if (n > MAX_TTL_SECONDS / unit)
        return -1;
    *seconds = n * unit;
    return 0;
}

static int read_time(const struct table_settings *c, const char *name, long def, long *out, petrel_pool *pool,
                     const char **error)
{
    const char *text = table_settings_get(c, name, NULL);
    if (text == NULL) {
        *out = def;
        return 0;
    }
    if (table_cache_parse_time(text, out) != 0) {
        *error = petrel_pool_printf(pool, "line %d: %s: bad time \"%s\" (0 to %ds; units s, m, h, d)",
                                    table_settings_line(c, name), name, text, MAX_TTL_SECONDS);
        return -1;
    }
    return 0;
}

int table_cache_settings_read(struct table_cache_settings *s, const struct table_settings *c, petrel_pool *pool,
                              const char **error)
{
    if (read_time(c, "cache_ttl", 0, &s->ttl, pool, error) != 0 ||
        read_time(c, "cache_negative_ttl", s->ttl, &s->negative_ttl, pool, error) != 0)
        return -1;
    s->size = TABLE_CACHE_DEFAULT_SIZE;
    const char *text = table_settings_get(c, "cache_size", NULL);
    if (text) {
        char *end;
        errno = 0;
        s->size = strtol(text, &end, 10);
        if (errno || *text == '\0' || *end != '\0' || s->size < 1 || s->size > MAX_SIZE) {
            *error = petrel_pool_printf(pool, "line %d: cache_size: bad number \"%s\" (1 to %d)",
                                        table_settings_line(c, "cache_size"), text, MAX_SIZE);
            return -1;
        }
    }
    return 0;
}

struct table_cache *table_cache_new(const struct table_cache_settings *s, const char *spec, petrel_pool *pool)
{
    if (s->ttl <= 0 && s->negative_ttl <= 0)
        return NULL;
    /* The cache itself is the table's pool's: a process that lets the
     * table's pool go without closing it (a child of the master) loses no
     * memory of its own; only the entries are malloc'd. */
    struct table_cache *tc = petrel_pool_zalloc(pool, sizeof(*tc));
    tc->ttl = (double)s->ttl;
    tc->negative_ttl = (double)s->negative_ttl;
    tc->size = s->size > 0 ? (size_t)s->size : TABLE_CACHE_DEFAULT_SIZE;
    tc->nbuckets = 16;
    while (tc->nbuckets < tc->size)
        tc->nbuckets *= 2;
    tc->buckets = petrel_pool_zalloc(pool, tc->nbuckets * sizeof(*tc->buckets));
    tc->spec = petrel_pool_strdup(pool, spec);
    return tc;
}

static void unlink_lru(struct table_cache *tc, struct cache_entry *e)
{
    if (e->newer)
        e->newer->older = e->older;
    else
        tc->newest = e->older;
    if (e->older)
        e->older->newer = e->newer;
    else
        tc->oldest = e->newer;
    e->newer = e->older = NULL;
}

static void push_newest(struct table_cache *tc, struct cache_entry *e)
{
    e->older = tc->newest;
    e->newer = NULL;
    if (tc->newest)
        tc->newest->newer = e;
    tc->newest = e;
    if (tc->oldest == NULL)
        tc->oldest = e;
}

static void drop(struct table_cache *tc, struct cache_entry *e)
{
    struct cache_entry **link = &tc->buckets[hash(e->key) & (tc->nbuckets - 1)];
    while (*link != e)
        link = &(*link)->chain;
    *link = e->chain;
    unlink_lru(tc, e);
    tc->count--;
    free(e);
}

static struct cache_entry *find(struct table_cache *tc, const char *key)
{
    for (struct cache_entry *e = tc->buckets[hash(key) & (tc->nbuckets - 1)]; e; e = e->chain)
        if (strcmp(e->key, key) == 0)
            return e;
    return NULL;
}

static void count(struct table_cache *tc, const char *result)
{
    if (tc->lookups == NULL)
        return;
    const char *labels[] = { tc->spec, result };
    petrel_metric_add(tc->lookups, labels, 1);
}

int table_cache_get(struct table_cache *tc, const char *key, const char **value)
{
    if (tc == NULL)
        return -1;
    struct cache_entry *e = find(tc, key);
    if (e && e->expires <= now()) {
        drop(tc, e);
        e = NULL;
    }
    if (e == NULL) {
        count(tc, "miss");
        return -1;
    }
    unlink_lru(tc, e);
    push_newest(tc, e);
    count(tc, "hit");
    if (e->status == PETREL_TABLE_FOUND)
        *value = e->value;
    return e->status;
}

void table_cache_put(struct table_cache *tc, const char *key, int status, const char *value)
{
    if (tc == NULL || (status != PETREL_TABLE_FOUND && status != PETREL_TABLE_NOTFOUND))
        return;
    double ttl = status == PETREL_TABLE_FOUND ? tc->ttl : tc->negative_ttl;
    struct cache_entry *old = find(tc, key);
    if (old)
        drop(tc, old);
    if (ttl <= 0)
        return;
    while (tc->count >= tc->size)
        drop(tc, tc->oldest);
    size_t klen = strlen(key) + 1, vlen = status == PETREL_TABLE_FOUND ? strlen(value) + 1 : 0;
    struct cache_entry *e = malloc(sizeof(*e) + klen + vlen);
    if (e == NULL)
        abort();
    memcpy(e->key, key, klen);
    e->value = NULL;
    if (vlen) {
        e->value = e->key + klen;
        memcpy(e->value, value, vlen);
    }
    e->status = status;
    e->expires = now() + ttl;
    size_t b = hash(key) & (tc->nbuckets - 1);
    e->chain = tc->buckets[b];
    tc->buckets[b] = e;
    push_newest(tc, e);
    tc->count++;
}

void table_cache_count_in(struct table_cache *tc, petrel_module *m, const char *module_name)
{
    if (tc == NULL || tc->registered)
        return;
    tc->registered = 1;
    static const char *const labels[] = { "table", "result", NULL };
    char name[96];
    snprintf(name, sizeof(name), "petrel_%s_cache_lookups_total", module_name);
    tc->lookups = petrel_metric_register(m, &(petrel_metric_def){
        PETREL_METRIC_DEF_INIT, .type = PETREL_METRIC_COUNTER, .name = name,
        .help = "Lookups of a table's result cache (cache_ttl), by result: hit or miss", .labels = labels });
}

void table_cache_free(struct table_cache *tc)
{
    if (tc == NULL)
        return;
    while (tc->oldest)
        drop(tc, tc->oldest);
    tc->count = 0;   /* the rest is the pool's */
}
