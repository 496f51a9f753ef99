/*
 * A message body for a scanner, in memory then in an unlinked file
 * (see message_spool.h). The file is made with O_TMPFILE (never visible in
 * the directory), or where the file system lacks it, mkstemp and an
 * immediate unlink; either way it is gone when the descriptor closes, so a
 * crash leaves nothing behind.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <petrel/plugin.h>

#include "message_spool.h"

void message_spool_init(message_spool *sp, size_t mem_limit, const char *dir)
{
    memset(sp, 0, sizeof *sp);
    sp->mem_limit = mem_limit;
    sp->dir = dir;
    sp->fd = -1;
}

void message_spool_reset(message_spool *sp)
{
    free(sp->mem);
    sp->mem = NULL;
    sp->len = sp->cap = 0;
    if (sp->fd >= 0)
        close(sp->fd);
    sp->fd = -1;
    sp->size = 0;
    sp->failed = 0;
    sp->error[0] = '\0';
}

static int open_file(message_spool *sp)
{
    const char *dir = sp->dir && *sp->dir ? sp->dir : "/tmp";
    int fd = open(dir, O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
    if (fd < 0 && (errno == EOPNOTSUPP || errno == EISDIR || errno == EINVAL)) {
        char path[4096];
        snprintf(path, sizeof path, "%s/scan.XXXXXX", dir);
        fd = mkostemp(path, O_CLOEXEC);
        if (fd >= 0)
            (void)unlink(path);
    }
    if (fd < 0) {
        snprintf(sp->error, sizeof sp->error, "cannot create a temporary file in %s: %s", dir, strerror(errno));
        return -1;
    }
    sp->fd = fd;
    return 0;
}

static int write_all(message_spool *sp, const void *data, size_t len)
{
    const unsigned char *p = data;
    while (len > 0) {
        ssize_t n = pwrite(sp->fd, p, len, sp->size);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            snprintf(sp->error, sizeof sp->error, "write to the temporary file: %s",
                     n < 0 ? strerror(errno) : "no progress");
            return -1;
        }
        p += n;
        len -= (size_t)n;
        sp->size += n;
    }
    return 0;
}

int message_spool_append(message_spool *sp, const void *data, size_t len)
{
    if (sp->failed)
        return -1;
    if (sp->fd < 0 && sp->len + len <= sp->mem_limit) {
        if (sp->len + len > sp->cap) {
            size_t cap = sp->cap ? sp->cap : 16384;
            while (cap < sp->len + len)
                cap *= 2;
            if (cap > sp->mem_limit)
                cap = sp->mem_limit;
            unsigned char *bigger = realloc(sp->mem, cap);
            if (bigger == NULL) {
                snprintf(sp->error, sizeof sp->error, "out of memory");
                sp->failed = 1;
                return -1;
            }
            sp->mem = bigger;
            sp->cap = cap;
        }
        memcpy(sp->mem + sp->len, data, len);
        sp->len += len;
        return 0;
    }
    if (sp->fd < 0) {
        if (open_file(sp) < 0 || write_all(sp, sp->mem, sp->len) < 0) {
            sp->failed = 1;
            return -1;
        }
        free(sp->mem);
        sp->mem = NULL;
        sp->len = sp->cap = 0;
    }
    if (write_all(sp, data, len) < 0) {
        sp->failed = 1;
        return -1;
    }
    return 0;
}

size_t message_spool_size(const message_spool *sp)
{
    return sp->fd >= 0 ? (size_t)sp->size : sp->len;
}

long message_spool_read(message_spool *sp, size_t off, unsigned char *buf, size_t max, const unsigned char **out)
{
    size_t total = message_spool_size(sp);
    if (off >= total)
        return 0;
    size_t n = total - off < max ? total - off : max;
    if (sp->fd < 0) {
        *out = sp->mem + off;
        return (long)n;
    }
    for (;;) {
        ssize_t r = pread(sp->fd, buf, n, (off_t)off);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0) {
            snprintf(sp->error, sizeof sp->error, "read from the temporary file: %s",
                     r < 0 ? strerror(errno) : "unexpected end");
            return -1;
        }
        *out = buf;
        return (long)r;
    }
}

/* ------------------------------------------------------------------ */
/* the message as a scanner reads it                                   */

void message_reader_start(message_reader *r, petrel_session *s, message_spool *spool)
{
    memset(r, 0, sizeof *r);
    r->session = s;
    r->spool = spool;
}

void message_reader_end(message_reader *r)
{
    free(r->line);
    r->line = NULL;
}

size_t message_reader_size(petrel_session *s, message_spool *spool)
{
    size_t total = 2;
    const char *name, *value;
    for (size_t i = 0; petrel_header_at(s, i, &name, &value) == 0; i++)
        total += strlen(name) + strlen(value) + 4;
    return total + message_spool_size(spool);
}

long message_reader_read(message_reader *r, void *buf, size_t cap)
{
    unsigned char *out = buf;
    size_t n = 0;
    while (n < cap && (!r->headers_done || r->line != NULL)) {
        if (r->line == NULL) {
            const char *name, *value;
            if (petrel_header_at(r->session, r->header_i, &name, &value) != 0) {
                r->line = strdup("\r\n");
                r->headers_done = 1;
            } else {
                size_t len = strlen(name) + strlen(value) + 5;
                r->line = malloc(len);
                if (r->line)
                    snprintf(r->line, len, "%s: %s\r\n", name, value);
                r->header_i++;
            }
            if (r->line == NULL)
                return -1;
            r->line_len = strlen(r->line);
            r->line_off = 0;
        }
        size_t take = r->line_len - r->line_off < cap - n ? r->line_len - r->line_off : cap - n;
        memcpy(out + n, r->line + r->line_off, take);
        n += take;
        r->line_off += take;
        if (r->line_off == r->line_len) {
            free(r->line);
            r->line = NULL;
        }
    }
    while (n < cap) {
        const unsigned char *data;
        long got = message_spool_read(r->spool, r->body_off, out + n, cap - n, &data);
        if (got < 0)
            return -1;
        if (got == 0)
            break;
        if (data != out + n)
            memcpy(out + n, data, (size_t)got);
        n += (size_t)got;
        r->body_off += (size_t)got;
    }
    return (long)n;
}
