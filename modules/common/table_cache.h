/*
 * A per-table result cache for the database table modules (pgsql, mysql,
 * mysql, ldap, redis, socketmap): the answers of recent lookups, found and not found, kept
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
 *   byte for byte; values are copied. Entries are malloc'd (the cache
 *   itself is the table's pool's) and bounded by cache_size entries of at
 *   most the key and value lengths the core allows (128 KiB keys).
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

/* What a table asked for: ttl 0 and negative_ttl 0 is no cache. */
struct table_cache_settings {
    long ttl, negative_ttl;    /* seconds */
    long size;                 /* entries */
};
#define TABLE_CACHE_DEFAULT_SIZE 1000
#define TABLE_CACHE_MAX_SIZE 1000000
#define TABLE_CACHE_MAX_TTL (24 * 3600)

/* Reads cache_ttl, cache_negative_ttl (by default cache_ttl) and
 * cache_size from a *_table(5) file. 0, or -1 with *error (pool text)
 * naming the line. */
int table_cache_settings_read(struct table_cache_settings *s, const struct table_settings *c, petrel_pool *pool,
                              const char **error);
/* The names table_cache_settings_read reads, for table_settings_warn_unknown. */
#define TABLE_CACHE_SETTINGS "cache_ttl", "cache_negative_ttl", "cache_size"
/* "60", "60s", "10m", "1h", "1d" (Postfix's time units) into seconds, at
 * most TABLE_CACHE_MAX_TTL. 0, or -1. */
int table_cache_parse_time(const char *text, long *seconds);

/* The cache s asks for, or NULL (no cache: both TTLs 0), from pool (the
 * table's: table_cache_free then frees only the entries). spec
 * ("pgsql:/etc/postfix/x.cf") labels the metric; it is copied. */
struct table_cache *table_cache_new(const struct table_cache_settings *s, const char *spec, petrel_pool *pool);

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

#endif
