/*
 * The remote table glue (see remote_table.h for what and why): the
 * glue's handle wraps the type's, every asynchronous lookup is a struct
 * remote_lookup on the table's in-flight list until the type answers it,
 * and the lookups that joined it wait on it (only with a cache).
 */
#include <stdlib.h>
#include <string.h>

#include "remote_table.h"

/* A query that joined a lookup of the same key. */
struct joined {
    struct joined *next;
    petrel_table_query *q;
};

struct remote_table {
    const struct remote_table_type *type;
    void *handle;                       /* the type's */
    petrel_module *module;
    const char *spec;                   /* "TYPE:NAME" */
    struct table_cache *cache;          /* NULL: no cache */
    struct remote_lookup *in_flight;
};

struct remote_lookup {
    struct remote_lookup *next, *prev;  /* the table's in_flight */
    struct remote_table *rt;
    petrel_table_query *q;
    struct joined *joined;
    char key[];
};

void *remote_table_open(const struct remote_table_type *type, petrel_module *m, const char *name, petrel_pool *pool,
                        const char **error)
{
    struct table_cache_settings cache = { 0, 0, TABLE_CACHE_DEFAULT_SIZE };
    void *handle = type->open(m, name, pool, &cache, error);
    if (handle == NULL)
        return NULL;
    struct remote_table *rt = petrel_pool_zalloc(pool, sizeof(*rt));
    rt->type = type;
    rt->handle = handle;
    rt->module = m;
    rt->spec = petrel_pool_printf(pool, "%s:%s", type->name, name);
    rt->cache = table_cache_new(&cache, rt->spec, pool);
    return rt;
}

static void unlink_lookup(struct remote_lookup *rl)
{
    struct remote_table *rt = rl->rt;
    if (rl->prev)
        rl->prev->next = rl->next;
    else
        rt->in_flight = rl->next;
    if (rl->next)
        rl->next->prev = rl->prev;
    rl->next = rl->prev = NULL;
}

static void free_joined(struct joined *j)
{
    while (j) {
        struct joined *next = j->next;
        free(j);
        j = next;
    }
}

void remote_lookup_answer(struct remote_lookup *rl, int status, const char *value)
{
    if (rl == NULL)
        return;
    struct remote_table *rt = rl->rt;
    unlink_lookup(rl);
    if (status != PETREL_TABLE_FOUND && status != PETREL_TABLE_NOTFOUND)
        status = PETREL_TABLE_RETRY;
    if (status == PETREL_TABLE_FOUND && value == NULL)
        value = "";
    table_cache_put(rt->cache, rl->key, status, value);
    /* The list is taken first: answering may start lookups on this table. */
    struct joined *j = rl->joined;
    petrel_table_query *q = rl->q;
    free(rl);
    petrel_table_answer(q, status, value);
    for (struct joined *w = j; w; w = w->next)
        petrel_table_answer(w->q, status, value);
    free_joined(j);
}

const char *remote_lookup_spec(const struct remote_lookup *rl)
{
    return rl->rt->spec;
}

static struct remote_lookup *in_flight_for(const struct remote_table *rt, const char *key)
{
    for (struct remote_lookup *rl = rt->in_flight; rl; rl = rl->next)
        if (strcmp(rl->key, key) == 0)
            return rl;
    return NULL;
}

void remote_table_lookup_async(void *handle, petrel_table_query *q, const char *key)
{
    struct remote_table *rt = handle;
    if (rt->cache) {
        table_cache_count_in(rt->cache, rt->module, rt->type->name);
        const char *cached = NULL;
        int status = table_cache_get(rt->cache, key, &cached);
        if (status >= 0) {
            petrel_table_answer(q, status, cached);
            return;
        }
        struct remote_lookup *same = in_flight_for(rt, key);
        if (same) {
            struct joined *j = malloc(sizeof(*j));
            if (j == NULL) {
                petrel_table_answer(q, PETREL_TABLE_RETRY, NULL);
                return;
            }
            j->q = q;
            j->next = same->joined;
            same->joined = j;
            return;
        }
    }
    size_t klen = strlen(key) + 1;
    struct remote_lookup *rl = calloc(1, sizeof(*rl) + klen);
    if (rl == NULL) {
        petrel_table_answer(q, PETREL_TABLE_RETRY, NULL);
        return;
    }
    memcpy(rl->key, key, klen);
    rl->rt = rt;
    rl->q = q;
    rl->next = rt->in_flight;
    if (rt->in_flight)
        rt->in_flight->prev = rl;
    rt->in_flight = rl;
    rt->type->start(rt->handle, rl, rl->key);
}

/* The cache's answer, or the server's (remembered). */
int remote_table_lookup(void *handle, const char *key, const char **value, petrel_pool *scratch)
{
    struct remote_table *rt = handle;
    const char *cached = NULL;
    int status = table_cache_get(rt->cache, key, &cached);
    if (status >= 0) {
        if (status == PETREL_TABLE_FOUND)
            *value = petrel_pool_strdup(scratch, cached);
        return status;
    }
    status = rt->type->lookup(rt->handle, key, value, scratch);
    table_cache_put(rt->cache, key, status, status > 0 ? *value : NULL);
    return status;
}

void remote_table_close(void *handle)
{
    struct remote_table *rt = handle;
    if (rt->type->close)
        rt->type->close(rt->handle);   /* drops its lookups unanswered */
    while (rt->in_flight) {
        struct remote_lookup *rl = rt->in_flight;
        unlink_lookup(rl);
        free_joined(rl->joined);
        free(rl);
    }
    table_cache_free(rt->cache);
    rt->cache = NULL;
}

int remote_table_pattern(void *handle)
{
    struct remote_table *rt = handle;
    return rt->type->handle_pattern ? rt->type->handle_pattern(rt->handle) : 0;
}

void remote_idle_timer_update(petrel_module *m, petrel_timer **timer, int idle, int restart, unsigned ms,
                              petrel_timer_fn *expired, void *arg)
{
    if (*timer && (!idle || restart)) {
        petrel_timer_cancel(*timer);
        *timer = NULL;
    }
    if (idle && *timer == NULL)
        *timer = petrel_timer_start(m, ms, expired, arg);
}
