/*
 * Heap allocation that either succeeds or does not return (Postfix's
 * mymalloc idea): callers never test for NULL, and out-of-memory is one
 * fatal log line instead of a crash somewhere later.
 */
#ifndef PETREL_LIB_XALLOC_H
#define PETREL_LIB_XALLOC_H

#include <stddef.h>

void *xmalloc(size_t size);
void *xcalloc(size_t n, size_t size);
void *xrealloc(void *p, size_t size);
char *xstrdup(const char *s);
char *xstrndup(const char *s, size_t n);

#endif
