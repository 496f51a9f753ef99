/*
 * Helpers for the built-in table types: error strings, case folding and
 * the bounded logical-line reader (see table_impl.h for the format).
 * Case folding is Postfix's (util/casefold.c): ASCII keys take a fast path;
 * UTF-8 keys with other characters go through ICU's full case folding, as
 * in Postfix with smtputf8_enable = yes (the default at compatibility level
 * 1 and later, and Petrel's). The ICU case map is created once per process
 * and only read afterwards, which ICU allows from any thread.
 */
#include "config.h"

#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <stdint.h>
#include <string.h>

#include "lib/log.h"
#include <unicode/ucasemap.h>

#include "lib/xalloc.h"
#include "tables/table_impl.h"
#include "tables/table_source.h"

char *tbl_strprintf(const char *fmt, ...)
{
    va_list ap;
    struct buf b = BUF_INIT;
    va_start(ap, fmt);
    buf_vprintf(&b, fmt, ap);
    va_end(ap);
    if (b.data == NULL)
        return xstrdup("");
    return b.data;   /* ownership passes to the caller */
}

static inline int is_space(int c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v';
}

static inline char ascii_lower(char c)
{
    return (c >= 'A' && c <= 'Z') ? (char)(c - 'A' + 'a') : c;
}

static pthread_once_t casemap_once = PTHREAD_ONCE_INIT;
static UCaseMap *casemap;   /* written once, then only read */

static void casemap_init(void)
{
    UErrorCode err = U_ZERO_ERROR;
    casemap = ucasemap_open("", U_FOLD_CASE_DEFAULT, &err);
    if (U_FAILURE(err))
        casemap = NULL;   /* then ASCII folding only */
}

/* Unicode folding of valid UTF-8 s (len bytes); NULL when ICU fails. */
static char *unicode_fold(const char *s, size_t len)
{
    pthread_once(&casemap_once, casemap_init);
    if (casemap == NULL || len > INT32_MAX / 3)
        return NULL;
    int32_t cap = (int32_t)len + 16;
    for (int attempt = 0; attempt < 2; attempt++) {
        char *out = xmalloc((size_t)cap + 1);
        UErrorCode err = U_ZERO_ERROR;
        int32_t n = ucasemap_utf8FoldCase(casemap, out, cap, s, (int32_t)len, &err);
        if (err == U_BUFFER_OVERFLOW_ERROR) {
            free(out);
            cap = n;
            continue;
        }
        if (U_FAILURE(err) || n > cap) {
            free(out);
            return NULL;
        }
        out[n] = '\0';
        return out;
    }
    return NULL;
}

char *tbl_fold_malloc(const char *s)
{
    int ascii = 1;
    for (const char *p = s; *p && ascii; p++)
        ascii = (unsigned char)*p < 0x80;
    if (!ascii && tbl_valid_utf8(s)) {
        char *folded = unicode_fold(s, strlen(s));
        if (folded)
            return folded;
    }
    char *copy = xstrdup(s);
    for (char *p = copy; *p; p++)
        *p = ascii_lower(*p);
    return copy;
}

char *tbl_fold(petrel_pool *pool, const char *s)
{
    char *folded = tbl_fold_malloc(s);
    char *copy = petrel_pool_strdup(pool, folded);
    free(folded);
    return copy;
}

size_t tbl_balanced_braces(const char *s)
{
    int depth = 0;
    const char *p = s;
    if (*p != '{')
        return 0;
    for (; *p; p++) {
        if (*p == '{')
            depth++;
        else if (*p == '}' && --depth == 0)
            return (size_t)(p - s) + 1;
    }
    return 0;
}

char *tbl_trim(char *s)
{
    while (is_space((unsigned char)*s))
        s++;
    size_t len = strlen(s);
    while (len > 0 && is_space((unsigned char)s[len - 1]))
        s[--len] = '\0';
    return s;
}

int tbl_file_open(struct tbl_file *f, const char *path, char **error)
{
    memset(f, 0, sizeof(*f));
    f->path = path;
    f->fp = fopen(path, "re");
    if (f->fp == NULL) {
        *error = tbl_strprintf("open %s: %s", path, strerror(errno));
        return -1;
    }
    return 0;
}

int tbl_file_open_stream(struct tbl_file *f, FILE *fp, const char *label)
{
    memset(f, 0, sizeof(*f));
    f->path = label;
    f->fp = fp;
    f->borrowed = 1;
    return 0;
}

void tbl_file_close(struct tbl_file *f)
{
    if (f->fp && !f->borrowed)
        fclose(f->fp);
    f->fp = NULL;
    buf_free(&f->line);
    buf_free(&f->pending);
}

/* Reads one physical line without its newline: 1, 0 at EOF, -1 on error. */
static int read_physical(struct tbl_file *f, struct buf *out, char **error)
{
    int c;
    buf_reset(out);
    buf_append(out, "", 0);   /* allocated and NUL-terminated even if empty */
    if ((c = getc(f->fp)) == EOF)
        goto eof;
    f->physical_lineno++;
    for (; c != EOF && c != '\n'; c = getc(f->fp)) {
        if (out->len >= TBL_LINE_MAX) {
            *error = tbl_strprintf("line %d: line longer than %d bytes", f->physical_lineno,
                                   TBL_LINE_MAX);
            return -1;
        }
        buf_putc(out, (char)c);
    }
    if (out->len > 0 && out->data[out->len - 1] == '\r')
        out->data[--out->len] = '\0';
    if (c == EOF && ferror(f->fp))
        goto eof;
    return 1;
eof:
    if (ferror(f->fp)) {
        *error = tbl_strprintf("line %d: read error: %s", f->physical_lineno, strerror(errno));
        return -1;
    }
    return 0;
}

static int blank_or_comment(const char *s)
{
    while (is_space((unsigned char)*s))
        s++;
    return *s == '\0' || *s == '#';
}

/* Next physical line that is not blank or a comment (using the look-ahead). */
static int next_content_line(struct tbl_file *f, char **error)
{
    if (f->have_pending) {
        f->have_pending = 0;
        return 1;
    }
    for (;;) {
        int r = read_physical(f, &f->pending, error);
        if (r <= 0)
            return r;
        f->pending_lineno = f->physical_lineno;
        if (!blank_or_comment(f->pending.data))
            return 1;
    }
}

int tbl_file_next(struct tbl_file *f, char **error)
{
again:;
    int r = next_content_line(f, error);
    if (r <= 0)
        return r;
    buf_reset(&f->line);
    f->lineno = f->pending_lineno;
    /* Text that continues nothing: Postfix (readllines) warns and skips the
     * whole logical line rather than guess what it belongs to. */
    int orphan = is_space((unsigned char)f->pending.data[0]);
    buf_puts(&f->line, f->pending.data);
    for (;;) {
        r = next_content_line(f, error);
        if (r < 0)
            return -1;
        if (r == 0)
            break;
        if (!is_space((unsigned char)f->pending.data[0])) {
            f->have_pending = 1;
            break;
        }
        if (f->line.len + f->pending.len > TBL_LINE_MAX) {
            *error = tbl_strprintf("line %d: logical line longer than %d bytes", f->lineno,
                                   TBL_LINE_MAX);
            return -1;
        }
        buf_append(&f->line, f->pending.data, f->pending.len);
    }
    size_t len = f->line.len;
    while (len > 0 && is_space((unsigned char)f->line.data[len - 1]))
        f->line.data[--len] = '\0';
    f->line.len = len;
    if (orphan) {
        const char *text = f->line.data;
        while (is_space((unsigned char)*text))
            text++;
        msg_warn("%s, line %d: logical line must not start with white space: \"%.30s%s\" -- ignoring it",
                 f->path ? f->path : "table", f->lineno, text, strlen(text) > 30 ? "..." : "");
        goto again;
    }
    return 1;
}
