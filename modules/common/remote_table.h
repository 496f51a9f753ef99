/*
 * The glue every remote table type (pgsql, mysql, ldap, redis, socketmap)
 * is declared through: it stands between the core and the type, puts the
 * result cache (table_cache.c) in front of both lookups, and merges the
 * lookups of a key already on its way to the server. A type gets all of
 * it by declaring a struct remote_table_type and pointing its
 * petrel_table_type entry at the remote_table_* functions:
 *
 *   static const struct remote_table_type pgsql_remote = {
 *       .name = "pgsql", .open = table_open, .lookup = lookup_server,
 *       .start = lookup_start, .close = table_close, .handle_pattern = ... };
 *   REMOTE_TABLE_OPEN(pgsql_open, pgsql_remote)
 *   { PETREL_TABLE_TYPE_INIT, .name = "pgsql", .open = pgsql_open,
 *     REMOTE_TABLE_ENTRIES },
 *
 * Decisions a newcomer needs:
 * - The handle the core holds is the glue's (struct remote_table); the
 *   type's own handle is inside. The type's open says what cache its
 *   table asked for (a file's cache_ttl, or main.cf for socketmap);
 *   zero TTLs are no cache, and then the glue only passes lookups on.
 * - The type answers the glue's struct remote_lookup with
 *   remote_lookup_answer(), exactly once, never the core's query: the
 *   glue remembers the answer (errors never), and hands it to the
 *   query and to the queries that joined it.
 * - Lookups of the same key join the one in flight only with a cache
 *   (the burst of sessions after a start makes one query per key, not one
 *   per session); without a cache every lookup asks, as in Postfix.
 * - A joined query whose caller gave up is a stale handle the core
 *   ignores: the glue needs no bookkeeping for it.
 * - Hits and misses are counted in petrel_TYPE_cache_lookups_total
 *   {table, result}: a module may only register metrics under its own
 *   name (metrics_api.c), so the counter is one per type.
 */
#ifndef PETREL_MODULES_REMOTE_TABLE_H
#define PETREL_MODULES_REMOTE_TABLE_H

#include <petrel/plugin.h>

#include "table_cache.h"

struct remote_lookup;

struct remote_table_type {
    const char *name;     /* the TYPE: the metric's name, the cache's label */
    /* As petrel_table_type's open; also fills *cache (zeroed before: no
     * cache) with what the table asked for. */
    void *(*open)(petrel_module *m, const char *name, petrel_pool *pool, struct table_cache_settings *cache,
                  const char **error);
    /* The blocking lookup (as petrel_table_type's), asking the server. */
    int (*lookup)(void *handle, const char *key, const char **value, petrel_pool *scratch);
    /* The asynchronous lookup: answer rl once, with remote_lookup_answer(),
     * from the loop or before returning; rl is gone once answered. */
    void (*start)(void *handle, struct remote_lookup *rl, const char *key);
    /* Closes: lookups not answered yet are dropped without an answer
     * (the core made their queries stale already). May be NULL. */
    void (*close)(void *handle);
    /* As petrel_table_type's handle_pattern; may be NULL. */
    int (*handle_pattern)(void *handle);
};

void remote_lookup_answer(struct remote_lookup *rl, int status, const char *value);
/* The table spec ("ldap:/etc/postfix/x.cf") rl looks in, for log lines. */
const char *remote_lookup_spec(const struct remote_lookup *rl);

/* The petrel_table_type functions. */
void *remote_table_open(const struct remote_table_type *type, petrel_module *m, const char *name, petrel_pool *pool,
                        const char **error);
int remote_table_lookup(void *handle, const char *key, const char **value, petrel_pool *scratch);
void remote_table_lookup_async(void *handle, petrel_table_query *q, const char *key);
void remote_table_close(void *handle);
int remote_table_pattern(void *handle);

#define REMOTE_TABLE_OPEN(fn, type)                                                                            \
    static void *fn(petrel_module *m, const char *name, petrel_pool *pool, const char **error)                 \
    {                                                                                                          \
        return remote_table_open(&(type), m, name, pool, error);                                               \
    }
/* A pooled connection's idle_interval timer (Postfix 3.9+): started when the
 * connection becomes idle (again from now when restart is set), cancelled
 * while it is busy; expired(arg) closes it. */
void remote_idle_timer_update(petrel_module *m, petrel_timer **timer, int idle, int restart, unsigned ms,
                              petrel_timer_fn *expired, void *arg);

#define REMOTE_TABLE_ENTRIES                                                                                   \
    .lookup = remote_table_lookup, .close = remote_table_close, .handle_pattern = remote_table_pattern,       \
    .lookup_async = remote_table_lookup_async

#endif
