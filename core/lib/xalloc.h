/*
 * Heap allocation that either succeeds or does not return (Postfix's
 * mymalloc idea): callers never test for NULL, and out-of-memory is one
 * fatal log line instead of a crash somewhere later.
 */
#ifndef PETREL_LIB_XALLOC_H
#define PETREL_LIB_XALLOC_H

#include <stddef.h>

#define XALLOC_ATTRS __attribute__((returns_nonnull, warn_unused_result))
void *xmalloc(size_t size) XALLOC_ATTRS __attribute__((malloc));
void *xcalloc(size_t n, size_t size) XALLOC_ATTRS __attribute__((malloc));
void *xrealloc(void *p, size_t size) XALLOC_ATTRS;
char *xstrdup(const char *s) XALLOC_ATTRS __attribute__((malloc));
char *xstrndup(const char *s, size_t n) XALLOC_ATTRS __attribute__((malloc));
char *xasprintf(const char *fmt, ...) XALLOC_ATTRS __attribute__((malloc, format(printf, 1, 2)));
/* Appends line to *text ("a\nb": several problems reported as one text,
 * each line its own message); *text may be NULL. */
void xappend_line(char **text, const char *line);

#endif
