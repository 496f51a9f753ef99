/*
 * The stored message for modules (ABI 1.1) in smtpd: petrel_message_open
 * at end of message and in the queued hook (the reading itself is the
 * module runtime's, module/message.c, shared with the queue manager's
 * delivery hook), and petrel_body_replace_*, which streams a new body into
 * a file beside the queue files. Neither holds a message in memory: a
 * 50 MiB message costs a 64 KiB buffer.
 *
 * Both are transaction objects addressed by checked handles
 * (module_object_*). Readers and writers opened at end of message live
 * until the end_of_message phase completes (smtpd_message_objects_end,
 * from eom_hooked) or the transaction ends, whichever comes first; readers
 * opened in the queued hook until the hook returns (smtpd_plugin_queued).
 * A module that keeps a handle past that gets a logged no-op.
 *
 * At end of message a reader reads the queue file through its writer
 * (still being written: the writer flushes its buffer first). In the
 * queued hook the file is committed; smtpd keeps the writer (its
 * descriptor and its lock) until the hook has returned, so the queue
 * manager cannot take, deliver and remove the file under a reader.
 *
 * A new body goes to an unnamed file (O_TMPFILE) in the queue's incoming/
 * directory: the same file system as the queue file it will be copied
 * into, covered by the same free-space checks, and gone with the
 * descriptor, so a crash leaves nothing behind. A write the disk refuses
 * marks the transaction failed (tx->body_errno): end of message then
 * answers 451 4.3.0 whatever the module does, so a truncated body can never
 * be queued (rule 3).
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <petrel/plugin.h>
#include "lib/log.h"
#include "lib/xalloc.h"
#include "module/module.h"
#include "module/runtime.h"
#include "smtpd/content_int.h"
#include "smtpd/smtpd_int.h"

#define BODY_BUFFER 65536

struct smtpd_msg_obj {
    struct smtpd_msg_obj *next;
    void *handle;
    struct petrel_module *module;
    struct smtpd_session *s;
    int fd;
    unsigned long long size;
    unsigned char *buf;
    size_t used;
    int failed;
};

static void obj_unlink(struct smtpd_tx *tx, struct smtpd_msg_obj *o)
{
    for (struct smtpd_msg_obj **pp = &tx->msg_objects; *pp; pp = &(*pp)->next) {
        if (*pp == o) {
            *pp = o->next;
            break;
        }
    }
}

static void obj_free(struct smtpd_msg_obj *o)
{
    module_object_release(MODULE_OBJECT_BODY_WRITER, o->handle);
    if (o->fd >= 0)
        close(o->fd);
    free(o->buf);
    free(o);
}

void smtpd_message_objects_end(struct smtpd_session *s)
{
    struct smtpd_tx *tx = s->tx;
    if (tx == NULL)
        return;
    module_message_release_all(&tx->readers);
    while (tx->msg_objects) {
        struct smtpd_msg_obj *o = tx->msg_objects;
        tx->msg_objects = o->next;
        msg_warn("%s: module %s: a body writer was neither committed nor aborted when end of message "
                 "completed: the new body is dropped", tx->queue_id, o->module->name);
        obj_free(o);
    }
}

void smtpd_message_tx_end(struct smtpd_tx *tx)
{
    module_message_release_all(&tx->readers);
    while (tx->msg_objects) {
        struct smtpd_msg_obj *o = tx->msg_objects;
        tx->msg_objects = o->next;
        obj_free(o);
    }
    if (tx->edits.body_replaced && tx->edits.body_fd >= 0)
        close(tx->edits.body_fd);
    tx->edits.body_replaced = 0;
    tx->edits.body_fd = -1;
}

/* The session whose end_of_message a module may read or edit, or NULL
 * (logged). anywhere: any hook of a transaction will do (the one-call
 * petrel_body_replace, which 1.0 modules may call before end_of_message,
 * needs no queue file). */
static struct smtpd_session *at_eom_or(petrel_session *h, struct petrel_module **m, const char *fn, int anywhere)
{
    struct smtpd_session *s = module_session_host(h, m, fn);
    if (s == NULL)
        return NULL;
    if (s->tx == NULL || (!anywhere && !s->tx->in_eom)) {
        msg_warn("module %s: %s outside %s: ignored", (*m)->name, fn,
                 anywhere ? "a mail transaction" : "end_of_message");
        return NULL;
    }
    if (!anywhere && s->tx->writer == NULL) {
        msg_warn("%s: module %s: %s: the message has no queue file (smtpd_proxy_filter): ignored",
                 s->tx->queue_id[0] ? s->tx->queue_id : "NOQUEUE", (*m)->name, fn);
        return NULL;
    }
    return s;
}

static struct smtpd_session *at_eom(petrel_session *h, struct petrel_module **m, const char *fn)
{
    return at_eom_or(h, m, fn, 0);
}

static struct smtpd_msg_obj *obj_new(struct smtpd_session *s, struct petrel_module *m)
{
    struct smtpd_msg_obj *o = xcalloc(1, sizeof(*o));
    o->module = m;
    o->s = s;
    o->fd = -1;
    o->handle = module_object_new(MODULE_OBJECT_BODY_WRITER, o, m);
    if (o->handle == NULL) {
        msg_warn("%s: module %s: too many open body writers in this process", s->tx->queue_id,
                 m->name);
        free(o);
        return NULL;
    }
    o->next = s->tx->msg_objects;
    s->tx->msg_objects = o;
    return o;
}

/* ------------------------------------------------------------------ */
/* reading                                                             */

/* The queue file's content as written so far (end of message) or
 * committed (queued), through the transaction's writer. */
static ssize_t writer_read(void *arg, unsigned long long off, void *buf, size_t len)
{
    struct smtpd_tx *tx = arg;
    if (tx->writer == NULL) {
        errno = EBADF;   /* not reached: readers end before the writer */
        return -1;
    }
    return queue_writer_read_content(tx->writer, off, buf, len);
}

/* In the queued hook: the committed file, as it was queued (every edit
 * applied). */
static petrel_message *open_queued(struct smtpd_session *s, struct petrel_module *m, unsigned flags)
{
    struct smtpd_tx *tx = s->tx;
    struct module_message_source src = {
        .queue_id = tx->queue_id, .fd = -1, .read = writer_read, .read_arg = tx, .body_fd = -1,
        .start = 0, .end = queue_writer_content_size(tx->writer),
    };
    if (flags & PETREL_MESSAGE_BODY) {
        long long at = module_message_body_offset(writer_read, tx, src.end);
        if (at < 0) {
            msg_warn("%s: module %s: petrel_message_open: read of the stored message: %s", tx->queue_id, m->name,
                     strerror(errno));
            return NULL;
        }
        src.start = (unsigned long long)at;
    }
    return module_message_open(m, &src, &tx->readers);
}

petrel_message *petrel_message_open(petrel_session *h, unsigned flags)
{
    struct petrel_module *m = NULL;
    struct smtpd_session *q = module_session_host(h, &m, __func__);
    if (q == NULL || !module_requires_minor(m, 1, __func__))
        return NULL;
    if (q->tx && q->tx->in_queued && q->tx->writer)
        return open_queued(q, m, flags);
    struct smtpd_session *s = at_eom(h, &m, __func__);
    if (s == NULL)
        return NULL;
    struct smtpd_tx *tx = s->tx;
    if (tx->io_errno) {
        msg_warn("%s: module %s: %s: the queue file could not be written: no message to read", tx->queue_id,
                 m->name, __func__);
        return NULL;
    }
    struct module_message_source src = {
        .queue_id = tx->queue_id, .fd = -1, .read = writer_read, .read_arg = tx, .body_fd = -1,
        .start = (flags & PETREL_MESSAGE_BODY) ? tx->body_start : 0, .end = queue_writer_content_size(tx->writer),
    };
    if (tx->edits.body_replaced) {
        /* The body as it will be queued: the new one, after the headers
         * (the reader dups the descriptor: a later commit may close ours). */
        src.body_fd = tx->edits.body_fd;
        src.body_len = tx->edits.body_len;
        if (flags & PETREL_MESSAGE_BODY) {
            src.start = src.end = 0;
        } else {
            src.end = tx->headers_end;
            src.sep = 2;
        }
    }
    return module_message_open(m, &src, &tx->readers);
}

/* ------------------------------------------------------------------ */
/* a new body                                                          */

static int open_body_file(struct smtpd_session *s)
{
    int dir = queue_dir_fd(s->worker->queue, QDIR_INCOMING);
    int fd = openat(dir, ".", O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
    if (fd < 0 && (errno == EOPNOTSUPP || errno == EISDIR || errno == EINVAL)) {
        /* No O_TMPFILE here: a name no queue ID can have, removed at once. */
        for (int i = 0; i < 100 && fd < 0; i++) {
            char name[64];
            snprintf(name, sizeof(name), ".body.%ld.%d", (long)getpid(), i);
            fd = openat(dir, name, O_CREAT | O_EXCL | O_RDWR | O_CLOEXEC, 0600);
            if (fd >= 0)
                (void)unlinkat(dir, name, 0);
            else if (errno != EEXIST)
                break;
        }
    }
    return fd;
}

/* The disk refused the new body: the transaction cannot be queued. */
static void body_failed(struct smtpd_msg_obj *w, int err, const char *what)
{
    struct smtpd_tx *tx = w->s->tx;
    w->failed = 1;
    if (tx->body_errno == 0) {
        tx->body_errno = err ? err : EIO;
        msg_warn("%s: module %s: %s the new body: %s", tx->queue_id, w->module->name, what,
                 strerror(tx->body_errno));
    }
}

static petrel_body_writer *body_begin(petrel_session *h, const char *fn, int anywhere)
{
    struct petrel_module *m = NULL;
    struct smtpd_session *s = at_eom_or(h, &m, fn, anywhere);
    if (s == NULL)
        return NULL;
    if (!anywhere && !module_requires_minor(m, 1, fn))
        return NULL;
    struct smtpd_msg_obj *w = obj_new(s, m);
    if (w == NULL)
        return NULL;
    w->fd = open_body_file(s);
    if (w->fd < 0) {
        body_failed(w, errno, "cannot create a file for");
        /* The handle stays usable (writes fail) until the module aborts. */
    }
    return w->handle;
}

petrel_body_writer *petrel_body_replace_begin(petrel_session *h)
{
    return body_begin(h, __func__, 0);
}

static int body_flush(struct smtpd_msg_obj *w)
{
    size_t off = 0;
    while (off < w->used) {
        ssize_t n = write(w->fd, w->buf + off, w->used - off);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            body_failed(w, n < 0 ? errno : EIO, "cannot write");
            return -1;
        }
        off += (size_t)n;
    }
    w->used = 0;
    return 0;
}

int petrel_body_replace_write(petrel_body_writer *bw, const void *data, size_t len)
{
    struct smtpd_msg_obj *w = module_object_get(MODULE_OBJECT_BODY_WRITER, bw, NULL, __func__);
    if (w == NULL || (data == NULL && len))
        return -1;
    if (w->failed)
        return -1;
    if (w->buf == NULL)
        w->buf = xmalloc(BODY_BUFFER);
    const unsigned char *p = data;
    while (len > 0) {
        size_t take = BODY_BUFFER - w->used < len ? BODY_BUFFER - w->used : len;
        memcpy(w->buf + w->used, p, take);
        w->used += take;
        w->size += take;
        p += take;
        len -= take;
        if (w->used == BODY_BUFFER && body_flush(w) < 0)
            return -1;
    }
    return 0;
}

int petrel_body_replace_commit(petrel_body_writer *bw)
{
    struct smtpd_msg_obj *w = module_object_get(MODULE_OBJECT_BODY_WRITER, bw, NULL, __func__);
    if (w == NULL)
        return -1;
    struct smtpd_tx *tx = w->s->tx;
    int rc = -1;
    if (!w->failed && (w->used == 0 || body_flush(w) == 0)) {
        if (tx->edits.body_replaced && tx->edits.body_fd >= 0)
            close(tx->edits.body_fd);   /* the last commit wins */
        tx->edits.body_fd = w->fd;
        tx->edits.body_len = w->size;
        tx->edits.body_replaced = 1;
        w->fd = -1;
        rc = 0;
    }
    obj_unlink(tx, w);
    obj_free(w);
    return rc;
}

void petrel_body_replace_abort(petrel_body_writer *bw)
{
    struct smtpd_msg_obj *w = module_object_get(MODULE_OBJECT_BODY_WRITER, bw, NULL, __func__);
    if (w == NULL)
        return;
    obj_unlink(w->s->tx, w);
    obj_free(w);
}

int petrel_body_replace(petrel_session *h, const char *body, size_t len)
{
    if (body == NULL)
        return -1;
    petrel_body_writer *w = body_begin(h, __func__, 1);
    if (w == NULL)
        return -1;
    if (petrel_body_replace_write(w, body, len) != 0) {
        petrel_body_replace_abort(w);
        return -1;
    }
    return petrel_body_replace_commit(w);
}

/* ------------------------------------------------------------------ */
/* applying a new body                                                 */

int smtpd_body_copy(struct smtpd_tx *tx, struct queue_writer *to)
{
    char chunk[65536];
    unsigned long long off = 0;
    while (off < tx->edits.body_len) {
        size_t want = tx->edits.body_len - off > sizeof(chunk) ? sizeof(chunk) : (size_t)(tx->edits.body_len - off);
        ssize_t got = pread(tx->edits.body_fd, chunk, want, (off_t)off);
        if (got < 0 && errno == EINTR)
            continue;
        if (got <= 0) {
            if (got == 0)
                errno = EIO;
            return -1;
        }
        if (queue_writer_write(to, chunk, (size_t)got) != 0)
            return -1;
        off += (unsigned long long)got;
    }
    return 0;
}
