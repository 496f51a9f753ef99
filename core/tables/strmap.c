/*
 * Chained hash map in a pool (see strmap.h). The bucket array doubles when
 * the load passes 1; the old array stays in the pool until it dies, which
 * costs at most as much as the final array. FNV-1a is enough here: keys
 * come from the administrator's files, not from clients.
 */
#include "config.h"

#include <stdint.h>
#include <string.h>

#include "lib/hash.h"
#include "tables/strmap.h"

struct strmap_entry {
    struct strmap_entry *next;
    uint32_t hash;
    const char *key;
    const char *value;
};

struct strmap {
    petrel_pool *pool;
    struct strmap_entry **buckets;
    size_t nbuckets;   /* a power of two */
    size_t count;
};

struct strmap *strmap_new(petrel_pool *pool)
{
    struct strmap *map = petrel_pool_zalloc(pool, sizeof(*map));
    map->pool = pool;
    map->nbuckets = 16;
    map->buckets = petrel_pool_zalloc(pool, map->nbuckets * sizeof(*map->buckets));
    return map;
}

static void grow(struct strmap *map)
{
    size_t n = map->nbuckets * 2;
    struct strmap_entry **fresh = petrel_pool_zalloc(map->pool, n * sizeof(*fresh));
    for (size_t i = 0; i < map->nbuckets; i++) {
        struct strmap_entry *e = map->buckets[i];
        while (e) {
            struct strmap_entry *next = e->next;
            e->next = fresh[e->hash & (n - 1)];
            fresh[e->hash & (n - 1)] = e;
            e = next;
        }
    }
    map->buckets = fresh;
    map->nbuckets = n;
}

static struct strmap_entry *find(const struct strmap *map, const char *key, uint32_t hash)
{
    for (struct strmap_entry *e = map->buckets[hash & (map->nbuckets - 1)]; e; e = e->next)
        if (e->hash == hash && strcmp(e->key, key) == 0)
            return e;
    return NULL;
}

int strmap_put(struct strmap *map, const char *key, const char *value, int replace)
{
    uint32_t hash = hash_string(key);
    struct strmap_entry *e = find(map, key, hash);
    if (e) {
        if (!replace)
            return -1;
        e->value = petrel_pool_strdup(map->pool, value);
        return 0;
    }
    if (map->count >= map->nbuckets)
        grow(map);
    e = petrel_pool_alloc(map->pool, sizeof(*e));
    e->hash = hash;
    e->key = petrel_pool_strdup(map->pool, key);
    e->value = petrel_pool_strdup(map->pool, value);
    e->next = map->buckets[hash & (map->nbuckets - 1)];
    map->buckets[hash & (map->nbuckets - 1)] = e;
    map->count++;
    return 0;
}

const char *strmap_get(const struct strmap *map, const char *key)
{
    struct strmap_entry *e = find(map, key, hash_string(key));
    return e ? e->value : NULL;
}

size_t strmap_count(const struct strmap *map)
{
    return map->count;
}
