/*
 * Readers of the stored message (petrel_message_*, ABI 1.1), whatever role
 * opened them: smtpd at end of message and in the queued hook, the queue
 * manager in the delivery hook. The role says where the bytes are (a
 * module_message_source) and which list owns the reader; everything else
 * (reading, sizes, handles, staleness) is here, so a reader behaves the
 * same in every hook.
 *
 * Lifetime. What ends a reader is its owner: the role releases its list
 * when the hook's call completes (end of message: when every module
 * answered; queued and delivery: when the module's hook returns), and the
 * handle then goes stale like a session's. So a module cannot pin a
 * removed queue file's disk space past the hook, and cannot reach freed
 * memory through a handle it kept.
 *
 * Every reader reads through the role's read function, which goes through
 * the queue's content reader (queue_content_pread, or the writer's
 * queue_writer_read_content at end of message), so the content map of an
 * edited queue file is followed. A source without one (fd and base, which
 * the reader dup(2)s) is one run of bytes; no role uses it for a queue file.
 */
#include "config.h"

#include <errno.h>
#include <stdio.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <petrel/plugin.h>
#include "lib/log.h"
#include "lib/xalloc.h"
#include "module/module.h"
#include "module/runtime.h"
#include "module/runtime_int.h"

struct module_message {
    struct module_message *next, **prevp;   /* in its owner's list */
    void *handle;
    struct petrel_module *module;
    char queue_id[40];
    /* the content bytes [start, end) of the source, then sep bytes of
     * CRLF, then body_len bytes of body_fd; pos counts from the start */
    int fd;
    unsigned long long base;
    module_message_read_fn *read;
    void *read_arg;
    unsigned long long start, end, pos;
    size_t sep;
    int body_fd;
    unsigned long long body_len;
};

static void reader_free(struct module_message *o)
{
    module_object_release(MODULE_OBJECT_MESSAGE, o->handle);
    if (o->fd >= 0)
        close(o->fd);
    if (o->body_fd >= 0)
        close(o->body_fd);
    free(o);
}

static void reader_unlink(struct module_message *o)
{
    if (o->prevp) {
        *o->prevp = o->next;
        if (o->next)
            o->next->prevp = o->prevp;
    }
    o->next = NULL;
    o->prevp = NULL;
}

static int dup_fd(int fd)
{
    return fd < 0 ? -1 : fcntl(fd, F_DUPFD_CLOEXEC, 3);
}

petrel_message *module_message_open(struct petrel_module *m, const struct module_message_source *src,
                                    struct module_message **list)
{
    struct module_message *o = xcalloc(1, sizeof(*o));
    o->module = m;
    snprintf(o->queue_id, sizeof(o->queue_id), "%s", src->queue_id ? src->queue_id : "NOQUEUE");
    o->fd = -1;
    o->body_fd = -1;
    o->base = src->base;
    o->read = src->read;
    o->read_arg = src->read_arg;
    o->start = src->start;
    o->end = src->end;
    if (o->start > o->end)
        o->start = o->end;
    if ((src->read == NULL && (o->fd = dup_fd(src->fd)) < 0) ||
        (src->body_fd >= 0 && (o->body_fd = dup_fd(src->body_fd)) < 0)) {
        msg_warn("%s: module %s: petrel_message_open: %s", o->queue_id, m->name, strerror(errno));
        reader_free(o);
        return NULL;
    }
    if (o->body_fd >= 0) {
        o->body_len = src->body_len;
        o->sep = src->sep;
    }
    o->handle = module_object_new(MODULE_OBJECT_MESSAGE, o, m);
    if (o->handle == NULL) {
        msg_warn("%s: module %s: too many open messages in this process", o->queue_id, m->name);
        reader_free(o);
        return NULL;
    }
    o->next = *list;
    if (o->next)
        o->next->prevp = &o->next;
    o->prevp = list;
    *list = o;
    return o->handle;
}

void module_message_release_all(struct module_message **list)
{
    while (*list) {
        struct module_message *o = *list;
        reader_unlink(o);
        reader_free(o);
    }
}

long long module_message_body_offset(module_message_read_fn *read, void *arg, unsigned long long size)
{
    /* The body starts after the first empty line: at 2 when the content
     * starts with one, else after the first CRLF CRLF; size when there is
     * none (headers only). Read in pieces that overlap by 3 bytes. */
    char buf[8192];
    unsigned long long off = 0;
    if (size >= 2) {
        char two[2];
        if (read(arg, 0, two, 2) == 2 && two[0] == '\r' && two[1] == '\n')
            return 2;
    }
    while (off < size) {
        size_t want = size - off > sizeof(buf) ? sizeof(buf) : (size_t)(size - off);
        ssize_t n = read(arg, off, buf, want);
        if (n <= 0)
            return -1;
        for (ssize_t i = 0; i + 3 < n; i++)
            if (buf[i] == '\r' && buf[i + 1] == '\n' && buf[i + 2] == '\r' && buf[i + 3] == '\n')
                return (long long)(off + (unsigned long long)i + 4);
        if ((unsigned long long)n == size - off)
            break;
        off += (unsigned long long)(n > 3 ? n - 3 : n);
    }
    return (long long)size;
}

/* ------------------------------------------------------------------ */
/* the API                                                             */

long long petrel_message_size(petrel_message *msg)
{
    struct module_message *o = module_object_get(MODULE_OBJECT_MESSAGE, msg, NULL, __func__);
    return o ? (long long)(o->end - o->start + o->sep + o->body_len) : -1;
}

static long read_at(struct module_message *o, unsigned long long off, void *buf, size_t len, const char *fn)
{
    unsigned long long head = o->end - o->start, total = head + o->sep + o->body_len;
    if (off >= total || len == 0)
        return 0;
    if (len > total - off)
        len = (size_t)(total - off);
    if (len > 1u << 30)
        len = 1u << 30;
    ssize_t n;
    if (off < head) {
        /* One source per read: the queue file up to the end of its part. */
        if (len > head - off)
            len = (size_t)(head - off);
        if (o->read) {
            n = o->read(o->read_arg, o->start + off, buf, len);
        } else {
            do
                n = pread(o->fd, buf, len, (off_t)(o->base + o->start + off));
            while (n < 0 && errno == EINTR);
        }
    } else if (off < head + o->sep) {
        size_t at = (size_t)(off - head);
        n = (ssize_t)(o->sep - at < len ? o->sep - at : len);
        static const char crlf[] = "\r\n";
        memcpy(buf, crlf + at, (size_t)n);
    } else {
        do
            n = pread(o->body_fd, buf, len, (off_t)(off - head - o->sep));
        while (n < 0 && errno == EINTR);
    }
    if (n == 0)
        errno = EIO;   /* shorter than it was */
    if (n <= 0) {
        msg_warn("%s: module %s: %s: read of the stored message: %s", o->queue_id, o->module->name, fn,
                 strerror(errno));
        return -1;
    }
    return (long)n;
}

long petrel_message_read(petrel_message *msg, void *buf, size_t len)
{
    struct module_message *o = module_object_get(MODULE_OBJECT_MESSAGE, msg, NULL, __func__);
    if (o == NULL || buf == NULL)
        return -1;
    long n = read_at(o, o->pos, buf, len, __func__);
    if (n > 0)
        o->pos += (unsigned long long)n;
    return n;
}

long petrel_message_pread(petrel_message *msg, long long off, void *buf, size_t len)
{
    struct module_message *o = module_object_get(MODULE_OBJECT_MESSAGE, msg, NULL, __func__);
    if (o == NULL || buf == NULL || off < 0)
        return -1;
    return read_at(o, (unsigned long long)off, buf, len, __func__);
}

void petrel_message_close(petrel_message *msg)
{
    struct module_message *o = module_object_get(MODULE_OBJECT_MESSAGE, msg, NULL, __func__);
    if (o == NULL)
        return;
    reader_unlink(o);
    reader_free(o);
}

/* ------------------------------------------------------------------ */
/* the delivery hook (queue manager)                                   */

petrel_message *petrel_delivery_message_open(petrel_module *m, const petrel_delivery_result *r, unsigned flags)
{
    struct module_runtime *rt = module_rt;
    if (m == NULL || !module_on_loop(m, __func__))
        return NULL;
    if (!module_requires_minor(m, 1, __func__))
        return NULL;
    const struct module_delivery_call *d = rt ? rt->delivery : NULL;
    if (d == NULL || d->module != m || r == NULL || r != d->result) {
        msg_warn("module %s: %s outside its delivery hook, or for another delivery: ignored", m->name, __func__);
        return NULL;
    }
    if (d->read == NULL) {
        msg_warn("%s: module %s: %s: the queue file is not open here", r->queue_id, m->name, __func__);
        return NULL;
    }
    struct module_message_source src = {
        .queue_id = r->queue_id, .fd = -1, .read = d->read, .read_arg = d->read_arg, .body_fd = -1,
        .start = 0, .end = d->content_length,
    };
    if (flags & PETREL_MESSAGE_BODY) {
        long long at = module_message_body_offset(d->read, d->read_arg, d->content_length);
        if (at < 0) {
            msg_warn("%s: module %s: %s: read of the stored message: %s", r->queue_id, m->name, __func__,
                     strerror(errno));
            return NULL;
        }
        src.start = (unsigned long long)at;
    }
    return module_message_open(m, &src, &rt->delivery->readers);
}
