/*
 * Region allocator behind petrel_pool. Blocks are chained; small requests are
 * carved from the current block, large ones (over a quarter block) get their
 * own block so they do not waste the tail. Nothing is freed individually:
 * lifetime is the pool's, which is the point.
 */
#include "config.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <petrel/pool.h>
#include "lib/log.h"
#include "lib/xalloc.h"

#define POOL_ALIGN 16
#define POOL_MIN_BLOCK 1024

struct pool_block {
    struct pool_block *next;
    size_t size;   /* usable bytes after the header */
    size_t used;
    /* data follows, aligned */
};

struct pool_cleanup {
    struct pool_cleanup *next;
    petrel_cleanup_fn *fn;
    void *arg;
};

struct petrel_pool {
    struct pool_block *current;  /* block being carved */
    struct pool_block *full;     /* retired and large blocks */
    struct pool_cleanup *cleanups;
    size_t block_size;
    size_t bytes;
};

#define BLOCK_HEADER ((sizeof(struct pool_block) + POOL_ALIGN - 1) & ~(size_t)(POOL_ALIGN - 1))

static struct pool_block *block_new(size_t size)
{
    struct pool_block *b = xmalloc(BLOCK_HEADER + size);
    b->next = NULL;
    b->size = size;
    b->used = 0;
    return b;
}

static inline char *block_data(struct pool_block *b)
{
    return (char *)b + BLOCK_HEADER;
}

petrel_pool *petrel_pool_create(size_t block_size_hint)
{
    size_t size = block_size_hint < POOL_MIN_BLOCK ? POOL_MIN_BLOCK : block_size_hint;
    petrel_pool *pool = xmalloc(sizeof(*pool));
    pool->current = block_new(size);
    pool->full = NULL;
    pool->cleanups = NULL;
    pool->block_size = size;
    pool->bytes = sizeof(*pool) + BLOCK_HEADER + size;
    return pool;
}

static void run_cleanups(petrel_pool *pool)
{
    /* Cleanups may allocate from the pool they belong to: detach first. */
    while (pool->cleanups) {
        struct pool_cleanup *c = pool->cleanups;
        pool->cleanups = c->next;
        c->fn(c->arg);
    }
}

static void free_chain(struct pool_block *b)
{
    while (b) {
        struct pool_block *next = b->next;
        free(b);
        b = next;
    }
}

void petrel_pool_destroy(petrel_pool *pool)
{
    if (pool == NULL)
        return;
    run_cleanups(pool);
    free_chain(pool->full);
    free_chain(pool->current);
    free(pool);
}

void petrel_pool_reset(petrel_pool *pool)
{
    run_cleanups(pool);
    free_chain(pool->full);
    pool->full = NULL;
    /* Keep only the first-sized block so a reused pool does not reallocate. */
    free_chain(pool->current->next);
    pool->current->next = NULL;
    if (pool->current->size != pool->block_size) {
        free(pool->current);
        pool->current = block_new(pool->block_size);
    }
    pool->current->used = 0;
    pool->bytes = sizeof(*pool) + BLOCK_HEADER + pool->block_size;
}

void *petrel_pool_alloc(petrel_pool *pool, size_t size)
{
    size_t need = (size + POOL_ALIGN - 1) & ~(size_t)(POOL_ALIGN - 1);
    if (need < size)
        msg_fatal("pool: allocation of %zu bytes overflows", size);
    if (need == 0)
        need = POOL_ALIGN;

    struct pool_block *cur = pool->current;
    if (cur->size - cur->used >= need) {
        void *p = block_data(cur) + cur->used;
        cur->used += need;
        return p;
    }
    if (need > pool->block_size / 4) {
        struct pool_block *big = block_new(need);
        big->used = need;
        big->next = pool->full;
        pool->full = big;
        pool->bytes += BLOCK_HEADER + need;
        return block_data(big);
    }
    struct pool_block *fresh = block_new(pool->block_size);
    cur->next = NULL;
    /* Retire the current block onto the full list. */
    struct pool_block *retired = cur;
    retired->next = pool->full;
    pool->full = retired;
    pool->current = fresh;
    pool->bytes += BLOCK_HEADER + pool->block_size;
    fresh->used = need;
    return block_data(fresh);
}

void *petrel_pool_zalloc(petrel_pool *pool, size_t size)
{
    void *p = petrel_pool_alloc(pool, size);
    memset(p, 0, size);
    return p;
}

void *petrel_pool_memdup(petrel_pool *pool, const void *p, size_t n)
{
    void *copy = petrel_pool_alloc(pool, n);
    memcpy(copy, p, n);
    return copy;
}

char *petrel_pool_strndup(petrel_pool *pool, const char *s, size_t n)
{
    size_t len = strnlen(s, n);
    char *copy = petrel_pool_alloc(pool, len + 1);
    memcpy(copy, s, len);
    copy[len] = '\0';
    return copy;
}

char *petrel_pool_strdup(petrel_pool *pool, const char *s)
{
    if (s == NULL)
        return NULL;
    return petrel_pool_memdup(pool, s, strlen(s) + 1);
}

char *petrel_pool_vprintf(petrel_pool *pool, const char *fmt, va_list ap)
{
    /* Most strings fit a small buffer: format once, copy once. */
    char small[256];
    va_list again;
    va_copy(again, ap);
    int len = vsnprintf(small, sizeof(small), fmt, ap);
    if (len < 0)
        msg_fatal("pool: bad format \"%s\"", fmt);
    char *out = petrel_pool_alloc(pool, (size_t)len + 1);
    if ((size_t)len < sizeof(small))
        memcpy(out, small, (size_t)len + 1);
    else
        vsnprintf(out, (size_t)len + 1, fmt, again);
    va_end(again);
    return out;
}

char *petrel_pool_printf(petrel_pool *pool, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    char *out = petrel_pool_vprintf(pool, fmt, ap);
    va_end(ap);
    return out;
}

int petrel_pool_cleanup_add(petrel_pool *pool, petrel_cleanup_fn *fn, void *arg)
{
    struct pool_cleanup *c = petrel_pool_alloc(pool, sizeof(*c));
    c->fn = fn;
    c->arg = arg;
    c->next = pool->cleanups;
    pool->cleanups = c;
    return 0;
}

size_t petrel_pool_bytes(const petrel_pool *pool)
{
    return pool->bytes;
}
