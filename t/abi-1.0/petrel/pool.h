/*
 * Memory pools: every allocation belongs to a pool whose lifetime is known
 * (configuration generation, worker, session, transaction). Destroying the
 * pool frees everything in it and runs its cleanup handlers in reverse order,
 * so a plugin that forgets to free does not leak. Allocation never returns
 * NULL: running out of memory ends the process with a log line.
 */
#ifndef PETREL_POOL_H
#define PETREL_POOL_H

#include <stddef.h>
#include <stdarg.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct petrel_pool petrel_pool;
typedef void petrel_cleanup_fn(void *arg);

petrel_pool *petrel_pool_create(size_t block_size_hint);
void petrel_pool_destroy(petrel_pool *pool);
/* Frees everything allocated so far but keeps the pool (and its first block) for reuse. */
void petrel_pool_reset(petrel_pool *pool);

void *petrel_pool_alloc(petrel_pool *pool, size_t size);
void *petrel_pool_zalloc(petrel_pool *pool, size_t size);
char *petrel_pool_strdup(petrel_pool *pool, const char *s);
char *petrel_pool_strndup(petrel_pool *pool, const char *s, size_t n);
void *petrel_pool_memdup(petrel_pool *pool, const void *p, size_t n);
char *petrel_pool_printf(petrel_pool *pool, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
char *petrel_pool_vprintf(petrel_pool *pool, const char *fmt, va_list ap);

/* Runs fn(arg) when the pool is destroyed or reset; returns 0. */
int petrel_pool_cleanup_add(petrel_pool *pool, petrel_cleanup_fn *fn, void *arg);

/* Bytes currently held by the pool (for memory accounting and tests). */
size_t petrel_pool_bytes(const petrel_pool *pool);

#ifdef __cplusplus
}
#endif
#endif
