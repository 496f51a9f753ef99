/*
 * A per-table result cache for the database table modules (pgsql, mysql,
 * redis, ldap): the answers of recent lookups, found and not found, kept
 * for a short time so that a hot key (the domain of every RCPT in
 * virtual_mailbox_domains) does not cost a database round trip each time.
 *
 * Decisions a newcomer needs:
 * - Off unless the table's file says "cache_ttl = 60s": a cached answer
 *   is a stale answer (a mailbox removed keeps being accepted, a new one
 *   keeps being refused, until the entry expires), and Postfix has no
 *   such cache, so exactness is the default. "cache_negative_ttl" (by
 *   default cache_ttl) bounds the life of "not found" separately, since a
 *   stale "not found" is a 550 for a mailbox that exists. "cache_size"
 *   bounds the entries (default 1000); the least recently used goes
 *   first. Postfix ignores names its *_table(5) readers do not ask for,
 *   so the same file still works for Postfix.
 * - Errors (server down, timeout, expansion limit) are never cached: the
 *   next lookup asks the server again.
 * - Per process and per open table, with no locking: each role process
 *   opens its own tables and answers lookups on its event loop.
 * - Keys are the keys the core hands over (case folded already), compared
 *   byte for byte; values are copied. Memory is malloc'd and bounded by
 *   cache_size entries of at most the key and value lengths the core
 *   allows (128 KiB keys).
 * - With a cache, a lookup of a key whose lookup is already on its way to
 *   the server waits for that answer instead of asking again
 *   (table_waiters): the burst of sessions after a start makes one query
 *   per key, not one per session. Without a cache every lookup asks, as
 *   in Postfix.
 * - Hits and misses are counted in petrel_MODULE_cache_lookups_total
 *   {table, result="hit"|"miss"} once table_cache_count_in() has
 *   registered the metric (from the event loop: the asynchronous lookup).
 */
#ifndef PETREL_MODULES_TABLE_CACHE_H
#define PETREL_MODULES_TABLE_CACHE_H

#include <stddef.h>

#include <petrel/plugin.h>

#include "table_config.h"

struct table_cache;

/* Reads cache_ttl, cache_negative_ttl and cache_size from c and creates
 * the cache (*cache NULL when cache_ttl is 0 or unset: no caching). spec
 * ("pgsql:/etc/postfix/x.cf") labels the metric. 0, or -1 with *error
 * (pool text) naming the line. */
int table_cache_open(struct table_cache **cache, const struct table_settings *c, const char *spec, petrel_pool *pool,
                     const char **error);
/* The names table_cache_open reads, for table_settings_warn_unknown. */
#define TABLE_CACHE_SETTINGS "cache_ttl", "cache_negative_ttl", "cache_size"

/* PETREL_TABLE_FOUND (*value set, valid until the next call on cache),
 * PETREL_TABLE_NOTFOUND, or -1: not cached (or expired). A NULL cache
 * caches nothing. */
int table_cache_get(struct table_cache *cache, const char *key, const char **value);
/* Remembers an answer: status PETREL_TABLE_FOUND with value, or
 * PETREL_TABLE_NOTFOUND; anything else (RETRY) is not remembered. */
void table_cache_put(struct table_cache *cache, const char *key, int status, const char *value);
/* Registers petrel_MODULE_cache_lookups_total for module m, named
 * module_name (once per cache; call it on the event loop). */
void table_cache_count_in(struct table_cache *cache, petrel_module *m, const char *module_name);
void table_cache_free(struct table_cache *cache);

/* Queries waiting for the answer of a lookup of the same key. */
struct table_waiter {
    struct table_waiter *next;
    petrel_table_query *q;
};
void table_waiters_add(struct table_waiter **list, petrel_table_query *q);
/* Answers every waiting query (status and value as petrel_table_answer)
 * and empties the list. */
void table_waiters_answer(struct table_waiter **list, int status, const char *value);
/* Empties the list without answering (the table is closing: the core made
 * the handles stale already). */
void table_waiters_free(struct table_waiter **list);

#endif
