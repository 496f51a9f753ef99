/* Allocation wrappers that end the process on exhaustion (see xalloc.h). */
#include "config.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lib/log.h"
#include "lib/xalloc.h"

void *xmalloc(size_t size)
{
    void *p = malloc(size ? size : 1);
    if (p == NULL)
        msg_fatal("out of memory allocating %zu bytes", size);
    return p;
}

void *xcalloc(size_t n, size_t size)
{
    void *p = calloc(n ? n : 1, size ? size : 1);
    if (p == NULL)
        msg_fatal("out of memory allocating %zu x %zu bytes", n, size);
    return p;
}

void *xrealloc(void *old, size_t size)
{
    void *p = realloc(old, size ? size : 1);
    if (p == NULL)
        msg_fatal("out of memory reallocating %zu bytes", size);
    return p;
}

char *xstrdup(const char *s)
{
    size_t n = strlen(s) + 1;
    return memcpy(xmalloc(n), s, n);
}

char *xstrndup(const char *s, size_t n)
{
    size_t len = strnlen(s, n);
    char *p = xmalloc(len + 1);
    memcpy(p, s, len);
    p[len] = '\0';
    return p;
}

char *xasprintf(const char *fmt, ...)
{
    va_list ap;
    char *p = NULL;
    va_start(ap, fmt);
    int n = vasprintf(&p, fmt, ap);
    va_end(ap);
    if (n < 0)
        msg_fatal("out of memory formatting a message");
    return p;
}

void xappend_line(char **text, const char *line)
{
    if (*text == NULL) {
        *text = xstrdup(line);
        return;
    }
    size_t a = strlen(*text), b = strlen(line);
    *text = xrealloc(*text, a + b + 2);
    (*text)[a] = '\n';
    memcpy(*text + a + 1, line, b + 1);
}
