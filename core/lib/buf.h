/*
 * Growable byte buffer for building replies, records and lines. Heap-backed
 * (not pool-backed) because its size changes; the owner frees it.
 */
#ifndef PETREL_LIB_BUF_H
#define PETREL_LIB_BUF_H

#include <stddef.h>
#include <stdarg.h>

struct buf {
    char *data;   /* always NUL-terminated after any operation */
    size_t len;
    size_t cap;
};

#define BUF_INIT { NULL, 0, 0 }

void buf_reserve(struct buf *b, size_t extra);
void buf_append(struct buf *b, const void *data, size_t len);
void buf_puts(struct buf *b, const char *s);
void buf_putc(struct buf *b, char c);
void buf_printf(struct buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void buf_vprintf(struct buf *b, const char *fmt, va_list ap) __attribute__((format(printf, 2, 0)));
void buf_reset(struct buf *b);
void buf_free(struct buf *b);

#endif
