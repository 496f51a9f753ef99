/*
 * A string-to-string hash map whose memory all lives in one pool, used by
 * the in-memory table types (texthash:, inline:). Entries are never removed:
 * a table is rebuilt, not edited, so the pool's all-at-once lifetime fits.
 */
#ifndef PETREL_TABLES_STRMAP_H
#define PETREL_TABLES_STRMAP_H

#include <stddef.h>

#include <petrel/pool.h>

struct strmap;

struct strmap *strmap_new(petrel_pool *pool);
/* Copies key and value into the pool. Returns 0, or -1 when the key exists
 * and replace is 0 (the old value stays). */
int strmap_put(struct strmap *map, const char *key, const char *value, int replace);
const char *strmap_get(const struct strmap *map, const char *key);
size_t strmap_count(const struct strmap *map);

#endif
