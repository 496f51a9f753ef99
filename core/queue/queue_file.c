/*
 * Queue files: the format, and the writer (envelope, streamed content,
 * edits, end record, durable commit). The reader and the in-place marks are
 * in queue_read.c; constants and byte helpers in queue_format.h.
 *
 * FORMAT (version 1; also in doc/queue-format.md). All integers big-endian.
 *
 *   header, 16 bytes: "PETRELQ1", version (1 byte, = 1), flags (1 byte, = 0),
 *                     6 reserved bytes (= 0)
 *   envelope records: [type: 1 byte][length: 4 bytes][payload: length bytes]
 *   content:          the message bytes, not framed
 *   end record:       'X', length 36, payload:
 *                       content offset (8) | content length (8) |
 *                       envelope record count (4) | envelope hash (8) |
 *                       "PETRELQE" (8)
 *
 * Envelope record types (each at most once unless said otherwise):
 *   'T' arrival time: seconds (8, signed) + microseconds (4)   required
 *   'F' flags (4: QUEUE_F_*) + RET (1: QUEUE_RET_*)              required
 *   'S' sender, may be empty                                    required
 *   'E' ENVID; 'c' client name; 'a' client address; 'p' client port;
 *   'h' HELO; 'P' protocol; 't' TLS info; 'm' SASL method; 'u' SASL username;
 *   'f' content filter (transport:nexthop) the message goes to first
 *   'i' the original queue ID a content filter forwarded (XFORWARD IDENT)
 *   'D' maildrop origin: flags (1: bit 1 = last) | device (8) | inode (8) |
 *       name (a queue ID, 19 bytes)
 *   'R' recipient, one or more, in RCPT order:
 *         status (1) | DSN code (4) | NOTIFY bits (1) |
 *         ORCPT length (4; 0xFFFFFFFF = no ORCPT) | ORCPT | address (the rest, >= 1 byte)
 *   'M' content start, length 0: the last envelope record; content follows
 *   'C' content map (version 2, second envelope only): ranges of the data,
 *       offset (8, from the data's start) | length (8, > 0) each, <= 4096
 *
 * VERSION 2 (a message edited at end of message; written only then, so an
 * unedited message stays readable by an older reader):
 *   header (version byte 2) | envelope 1 (as received, superseded) |
 *   data: the content as received, then what edits appended |
 *   envelope 2: the envelope that counts, 'C' when the content is not the
 *   whole data, 'M' last |
 *   end record: 'X', length 44, payload: data offset (8) | data length (8) |
 *     envelope 2 offset (8) | envelope 2 record count (4) | hash over the
 *     header, envelope 1 and envelope 2 (8) | "PETRELQE" (8)
 *   Edits never copy the message: new headers (and a new body) are appended
 *   as data and the content map splices them with the ranges of the
 *   original that stay. Envelope 2 is the whole envelope, so readers parse
 *   one envelope as in version 1. Every content reader goes through
 *   queue_content_pread (queue_writer_read_content while writing).
 *
 * Why this shape:
 * - Every field is length-prefixed and strings are opaque bytes (never NUL),
 *   so CR, LF or anything else a client smuggles through xtext in ENVID,
 *   ORCPT or an address is data, never a record boundary.
 * - The content is one unframed run because its length is only known at the
 *   end; the end record gives it, and since the end record has a fixed size
 *   at a fixed place (the last 41 bytes), a reader finds it with one pread
 *   and knows the exact envelope size before parsing. A file without a valid
 *   end record was never finished (the writer writes it before fsync).
 * - The status byte and DSN code of each recipient sit at fixed offsets and
 *   are rewritten in place with pwrite (Postfix marks records the same way),
 *   so delivery never rewrites the file. The envelope hash (64-bit FNV-1a
 *   over the header and envelope records, reading those 5 mutable bytes of
 *   every 'R' as zero) catches damage without being invalidated by marks.
 *   The content has no checksum: verifying megabytes on every read would
 *   cost more than the fsync that already protects it.
 * - Readers bound everything: each record against the envelope end, the
 *   envelope against QUEUE_ENVELOPE_MAX, strings against QUEUE_FIELD_MAX.
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

#include "lib/xalloc.h"
#include "queue/queue.h"
#include "queue/queue_format.h"
#include "queue/queue_int.h"

/* ---- hashing and reading, shared with queue_read.c ---- */

uint64_t qf_fnv1a(uint64_t h, const unsigned char *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        h = (h ^ p[i]) * FNV_PRIME;
    return h;
}

/* Continues hash h over the records of env from pos to size, with each
 * recipient's status and DSN bytes read as zero. */
uint64_t qf_hash_records(uint64_t h, const unsigned char *env, size_t pos, size_t size)
{
    static const unsigned char zeros[5];
    while (pos + QF_RECORD_HEADER <= size) {
        size_t len = get_u32(env + pos + 1);
        h = qf_fnv1a(h, env + pos, QF_RECORD_HEADER);
        pos += QF_RECORD_HEADER;
        if (len > size - pos)
            len = size - pos;   /* only reached on damaged input, which fails elsewhere */
        if (env[pos - QF_RECORD_HEADER] == REC_RCPT && len >= 5) {
            h = qf_fnv1a(h, zeros, 5);
            h = qf_fnv1a(h, env + pos + 5, len - 5);
        } else {
            h = qf_fnv1a(h, env + pos, len);
        }
        pos += len;
    }
    return h;
}

/* The envelope hash: the header, then the records. */
uint64_t qf_envelope_hash(const unsigned char *env, size_t size)
{
    return qf_hash_records(qf_fnv1a(FNV_OFFSET, env, QF_HEADER_SIZE), env, QF_HEADER_SIZE, size);
}

/* Reads exactly len bytes at off; a short file is EBADMSG-worthy, so it
 * returns the count read and lets the caller judge. -1 on a system error. */
ssize_t qf_pread_full(int fd, void *buf, size_t len, off_t off)
{
    size_t got = 0;
    while (got < len) {
        ssize_t n = pread(fd, (char *)buf + got, len - got, off + (off_t)got);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        if (n == 0)
            break;
        got += (size_t)n;
    }
    return (ssize_t)got;
}

static int write_full_iov(int fd, struct iovec *iov, int iovcnt)
{
    while (iovcnt > 0) {
        ssize_t n = writev(fd, iov, iovcnt);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        if (n == 0) {
            errno = EIO;
            return -1;
        }
        size_t done = (size_t)n;
        while (iovcnt > 0 && done >= iov->iov_len) {
            done -= iov->iov_len;
            iov++;
            iovcnt--;
        }
        if (iovcnt > 0) {
            iov->iov_base = (char *)iov->iov_base + done;
            iov->iov_len -= done;
        }
    }
    return 0;
}

/* Reads content bytes [off, off + len) of a content made of the ranges
 * segs (NULL: one run of total bytes) of the data region at file offset
 * base, whose size is total. Returns the bytes read (> 0), 0 at the end,
 * -1 + errno (EIO when the file ends early). */
static ssize_t content_pread(int fd, uint64_t base, const struct queue_segment *segs, size_t nsegs, uint64_t total,
                             uint64_t off, void *buf, size_t len)
{
    if (off >= total || len == 0)
        return 0;
    if (len > total - off)
        len = (size_t)(total - off);
    size_t got = 0;
    uint64_t seg_start = 0;
    for (size_t i = 0; got < len && (segs ? i < nsegs : i < 1); i++) {
        uint64_t seg_off = segs ? segs[i].offset : 0, seg_len = segs ? segs[i].length : total;
        uint64_t seg_end = seg_start + seg_len;
        uint64_t at = off + got;
        if (at < seg_end) {
            uint64_t in = at - seg_start;
            size_t want = len - got < seg_len - in ? len - got : (size_t)(seg_len - in);
            ssize_t n = qf_pread_full(fd, (char *)buf + got, want, (off_t)(base + seg_off + in));
            if (n < 0)
                return got ? (ssize_t)got : -1;
            got += (size_t)n;
            if ((size_t)n < want)
                break;   /* the file ends early */
        }
        seg_start = seg_end;
    }
    if (got == 0) {
        errno = EIO;
        return -1;
    }
    return (ssize_t)got;
}

ssize_t queue_content_pread(int fd, const struct queue_message *msg, unsigned long long off, void *buf, size_t len)
{
    return content_pread(fd, (uint64_t)msg->content_offset, msg->segments, msg->segment_count, msg->content_length,
                         off, buf, len);
}

/* ---- writer ---- */

struct queue_writer {
    struct queue *q;
    int fd;
    char id[QUEUE_ID_MAX];
    unsigned char *buf;           /* pending bytes, written on overflow and at commit */
    size_t len, cap;
    uint64_t content_offset;      /* the envelope's size */
    uint64_t content_size;
    uint32_t record_count;
    uint64_t hash;
    int error;                    /* sticky errno of a failed write */
    unsigned long long dir_sync_gen;   /* incoming/'s sync generation just after the create */
    /* edits (format version 2) */
    int editing;                  /* queue_writer_edit_begin was called */
    uint64_t received_size;       /* the content as received, until a map is set */
    struct queue_segment *map;    /* the content map, or NULL */
    size_t map_count;
    uint64_t map_total;
    unsigned char *env2;          /* a replacement envelope: header + records, without 'M' */
    size_t env2_len;
    uint32_t env2_records;
};

static unsigned char *wbuf_reserve(struct queue_writer *w, size_t extra)
{
    if (w->cap - w->len < extra) {
        size_t cap = w->cap ? w->cap : QF_WRITE_BUFFER;
        while (cap - w->len < extra)
            cap *= 2;
        w->buf = xrealloc(w->buf, cap);
        w->cap = cap;
    }
    return w->buf + w->len;
}

static void put_record(struct queue_writer *w, int type, const void *payload, size_t len)
{
    unsigned char *p = wbuf_reserve(w, QF_RECORD_HEADER + len);
    p[0] = (unsigned char)type;
    put_u32(p + 1, (uint32_t)len);
    if (len)
        memcpy(p + QF_RECORD_HEADER, payload, len);
    w->len += QF_RECORD_HEADER + len;
    w->record_count++;
}

static void put_string(struct queue_writer *w, int type, const char *s)
{
    if (s)
        put_record(w, type, s, strlen(s));
}

static void put_rcpt(struct queue_writer *w, const struct queue_rcpt *r)
{
    size_t alen = strlen(r->address), olen = r->orcpt ? strlen(r->orcpt) : 0;
    size_t len = QF_RCPT_FIXED + olen + alen;
    unsigned char *p = wbuf_reserve(w, QF_RECORD_HEADER + len);
    p[0] = REC_RCPT;
    put_u32(p + 1, (uint32_t)len);
    p += QF_RECORD_HEADER;
    p[0] = QUEUE_RCPT_PENDING;
    put_u32(p + 1, 0);
    p[5] = (unsigned char)r->notify;
    put_u32(p + 6, r->orcpt ? (uint32_t)olen : QF_NO_ORCPT);
    if (olen)
        memcpy(p + QF_RCPT_FIXED, r->orcpt, olen);
    memcpy(p + QF_RCPT_FIXED + olen, r->address, alen);
    w->len += QF_RECORD_HEADER + len;
    w->record_count++;
}

static int field_ok(const char *s, size_t *total)
{
    if (!s)
        return 1;
    size_t n = strlen(s);
    *total += QF_RECORD_HEADER + n;
    return n <= QUEUE_FIELD_MAX;
}

static int envelope_ok(const struct queue_envelope *env)
{
    size_t total = QF_HEADER_SIZE + 2 * QF_RECORD_HEADER + 12 + 5;
    if (!env->sender || env->rcpt_count == 0 || !env->rcpts
        || (env->flags & ~KNOWN_FLAGS) || env->ret < QUEUE_RET_UNSET || env->ret > QUEUE_RET_HDRS
        || env->arrival_sec < 0 || env->arrival_usec < 0 || env->arrival_usec >= 1000000)
        return 0;
    const char *fields[] = { env->sender, env->envid, env->client_name, env->client_addr,
                             env->client_port, env->helo, env->protocol, env->tls_info,
                             env->sasl_method, env->sasl_username, env->content_filter, env->log_ident };
    for (size_t i = 0; i < sizeof(fields) / sizeof(fields[0]); i++)
        if (!field_ok(fields[i], &total))
            return 0;
    if (env->origin && (!env->origin->name || !queue_id_valid(env->origin->name)))
        return 0;
    if (env->origin)
        total += QF_RECORD_HEADER + QF_ORIGIN_SIZE;
    for (size_t i = 0; i < env->rcpt_count; i++) {
        const struct queue_rcpt *r = &env->rcpts[i];
        if (!r->address || !*r->address || (r->notify & ~KNOWN_NOTIFY)
            || !field_ok(r->address, &total) || !field_ok(r->orcpt, &total))
            return 0;
        total += QF_RCPT_FIXED;
        if (total > QUEUE_ENVELOPE_MAX)
            return 0;
    }
    return total + QF_RECORD_HEADER <= QUEUE_ENVELOPE_MAX;
}

/* Opens incoming/id for a new queue file (O_EXCL) and takes the writer's
 * mark (queue_file_writer_active): held until the file is closed, dropped
 * by the kernel if the writer dies. A file system without flock only
 * loses the "writer gone" shortcut. */
static int writer_open(struct queue *q, const char *id)
{
    int fd = openat(queue_dir_fd(q, QDIR_INCOMING), id, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW,
                    0600);   /* read back when modules edit */
    if (fd >= 0)
        (void)flock(fd, LOCK_EX | LOCK_NB);
    return fd;
}

static struct queue_writer *writer_start(struct queue *q, int fd, const char *id, const struct queue_envelope *env);

struct queue_writer *queue_writer_create(struct queue *q, struct queue_id_gen *gen,
                                         const struct queue_envelope *env, char *id_out)
{
    if (!envelope_ok(env)) {
        errno = EINVAL;
        return NULL;
    }
    char id[QUEUE_ID_MAX];
    int fd = -1;
    for (int attempt = 0; attempt < QF_ID_ATTEMPTS && fd < 0; attempt++) {
        queue_id_next(gen, id);
        fd = writer_open(q, id);
        if (fd < 0 && errno != EEXIST)
            return NULL;
    }
    if (fd < 0)
        return NULL;   /* EEXIST every time: another process shares our tag and clock */
    if (id_out)
        memcpy(id_out, id, QUEUE_ID_LEN + 1);
    return writer_start(q, fd, id, env);
}

/* The header and envelope records of env, 'M' last, into w's buffer. */
static void build_envelope(struct queue_writer *w, const struct queue_envelope *env)
{
    unsigned char *h = wbuf_reserve(w, QF_HEADER_SIZE);
    memset(h, 0, QF_HEADER_SIZE);
    memcpy(h, QF_MAGIC, 8);
    h[8] = QF_VERSION;
    w->len = QF_HEADER_SIZE;

    unsigned char fixed[12];
    put_u64(fixed, (uint64_t)env->arrival_sec);
    put_u32(fixed + 8, (uint32_t)env->arrival_usec);
    put_record(w, REC_TIME, fixed, 12);
    put_u32(fixed, env->flags);
    fixed[4] = (unsigned char)env->ret;
    put_record(w, REC_FLAGS, fixed, 5);
    put_string(w, REC_SENDER, env->sender);
    put_string(w, REC_ENVID, env->envid);
    put_string(w, REC_CLIENT_NAME, env->client_name);
    put_string(w, REC_CLIENT_ADDR, env->client_addr);
    put_string(w, REC_CLIENT_PORT, env->client_port);
    put_string(w, REC_HELO, env->helo);
    put_string(w, REC_PROTOCOL, env->protocol);
    put_string(w, REC_TLS, env->tls_info);
    put_string(w, REC_SASL_METHOD, env->sasl_method);
    put_string(w, REC_SASL_USER, env->sasl_username);
    put_string(w, REC_FILTER, env->content_filter);
    put_string(w, REC_LOG_IDENT, env->log_ident);
    if (env->origin) {
        unsigned char origin[QF_ORIGIN_SIZE];
        origin[0] = env->origin->last ? 1 : 0;
        put_u64(origin + 1, env->origin->dev);
        put_u64(origin + 9, env->origin->ino);
        memcpy(origin + 17, env->origin->name, QUEUE_ID_LEN);
        put_record(w, REC_ORIGIN, origin, QF_ORIGIN_SIZE);
    }
    for (size_t i = 0; i < env->rcpt_count; i++)
        put_rcpt(w, &env->rcpts[i]);
    put_record(w, REC_CONTENT, NULL, 0);
}

static struct queue_writer *writer_start(struct queue *q, int fd, const char *id, const struct queue_envelope *env)
{
    struct queue_writer *w = xcalloc(1, sizeof(*w));
    w->q = q;
    w->fd = fd;
    w->dir_sync_gen = queue_sync_generation(q);   /* fd's entry now exists */
    memcpy(w->id, id, QUEUE_ID_MAX);
    build_envelope(w, env);
    w->content_offset = w->len;
    /* Statuses are all PENDING (zero) now, so the plain hash is the one
     * readers compute with status bytes zeroed. */
    w->hash = qf_envelope_hash(w->buf, w->len);
    return w;
}

static int flush_with(struct queue_writer *w, const void *extra, size_t extra_len)
{
    struct iovec iov[2] = { { w->buf, w->len }, { (void *)extra, extra_len } };
    int n = extra_len ? 2 : 1;
    if (write_full_iov(w->fd, iov, n) < 0) {
        w->error = errno;
        return -1;
    }
    w->len = 0;
    return 0;
}

int queue_writer_write(struct queue_writer *w, const void *data, size_t len)
{
    if (w->error) {
        errno = w->error;
        return -1;
    }
    if (len > (uint64_t)INT64_MAX - w->content_offset - w->content_size - QF_END_SIZE) {
        w->error = EFBIG;
        errno = EFBIG;
        return -1;
    }
    w->content_size += len;
    if (len <= w->cap - w->len) {
        memcpy(w->buf + w->len, data, len);
        w->len += len;
        return 0;
    }
    if (len >= w->cap / 2)
        return flush_with(w, data, len);   /* big chunk: one writev, no copy */
    size_t room = w->cap - w->len;
    memcpy(w->buf + w->len, data, room);
    w->len += room;
    if (flush_with(w, NULL, 0) < 0)
        return -1;
    memcpy(w->buf, (const char *)data + room, len - room);
    w->len = len - room;
    return 0;
}

size_t queue_writer_content_size(const struct queue_writer *w)
{
    return (size_t)(w->map ? w->map_total : w->editing ? w->received_size : w->content_size);
}

unsigned long long queue_writer_data_size(const struct queue_writer *w)
{
    return w->content_size;
}

ssize_t queue_writer_read_content(struct queue_writer *w, unsigned long long offset, void *buf, size_t len)
{
    if (w->error) {
        errno = w->error;
        return -1;
    }
    if (w->len && flush_with(w, NULL, 0) < 0)
        return -1;
    return content_pread(w->fd, w->content_offset, w->map, w->map_count, queue_writer_content_size(w), offset, buf,
                         len);
}

unsigned long long queue_writer_edit_begin(struct queue_writer *w)
{
    if (!w->editing) {
        w->editing = 1;
        w->received_size = w->content_size;
    }
    return w->content_size;
}

int queue_writer_set_content_map(struct queue_writer *w, const struct queue_segment *segs, size_t n)
{
    uint64_t total = 0;
    if (n > QF_SEGMENTS_MAX) {
        errno = EINVAL;
        return -1;
    }
    for (size_t i = 0; i < n; i++) {
        if (segs[i].length == 0 || segs[i].offset > w->content_size
            || segs[i].length > w->content_size - segs[i].offset) {
            errno = EINVAL;
            return -1;
        }
        total += segs[i].length;   /* no overflow: n * data size, n <= 4096, data < 2^51 */
    }
    struct queue_segment *copy = xmalloc((n ? n : 1) * sizeof(*copy));
    if (n)
        memcpy(copy, segs, n * sizeof(*copy));
    free(w->map);
    w->map = copy;
    w->map_count = n;
    w->map_total = total;
    (void)queue_writer_edit_begin(w);
    return 0;
}

int queue_writer_set_envelope(struct queue_writer *w, const struct queue_envelope *env)
{
    if (!envelope_ok(env)) {
        errno = EINVAL;
        return -1;
    }
    struct queue_writer tmp;
    memset(&tmp, 0, sizeof(tmp));
    build_envelope(&tmp, env);
    free(w->env2);
    w->env2 = tmp.buf;
    w->env2_len = tmp.len - QF_RECORD_HEADER;        /* without its 'M' */
    w->env2_records = tmp.record_count - 1;
    (void)queue_writer_edit_begin(w);
    return 0;
}

int queue_writer_truncate(struct queue_writer *w, unsigned long long size)
{
    if (w->error) {
        errno = w->error;
        return -1;
    }
    if (size > w->content_size || w->editing) {
        errno = EINVAL;
        return -1;
    }
    if (w->len && flush_with(w, NULL, 0) < 0)
        return -1;
    off_t end = (off_t)(w->content_offset + size);
    if (ftruncate(w->fd, end) < 0 || lseek(w->fd, end, SEEK_SET) < 0) {
        w->error = errno;
        return -1;
    }
    w->content_size = size;
    return 0;
}

const char *queue_writer_id(const struct queue_writer *w)
{
    return w->id;
}

/* The end of an edited file (version 2): the envelope as it stands after
 * the data, with the content map, 'M' last; the header says version 2; the
 * hash covers the header, the first envelope and this one. */
static int finish_edited(struct queue_writer *w)
{
    if (w->len && flush_with(w, NULL, 0) < 0)
        return -1;
    size_t env1_len = (size_t)w->content_offset;
    unsigned char *env1 = xmalloc(env1_len);
    ssize_t got = qf_pread_full(w->fd, env1, env1_len, 0);
    static const unsigned char version = QF_VERSION_EDITED;
    ssize_t put = got == (ssize_t)env1_len ? pwrite(w->fd, &version, 1, 8) : -1;
    if (put != 1) {
        w->error = got >= 0 && got < (ssize_t)env1_len ? EIO : put == 0 ? EIO : errno;
        free(env1);
        errno = w->error;
        return -1;
    }
    if (!w->map && w->content_size != w->received_size) {
        /* Data was appended but no map set: the content stays as received. */
        struct queue_segment whole = { 0, w->received_size };
        if (queue_writer_set_content_map(w, &whole, w->received_size ? 1 : 0) < 0) {
            free(env1);
            return -1;
        }
    }
    env1[8] = QF_VERSION_EDITED;
    uint64_t hash = qf_envelope_hash(env1, env1_len);

    uint32_t env1_records = w->record_count;
    w->record_count = 0;
    if (w->env2) {
        unsigned char *p = wbuf_reserve(w, w->env2_len - QF_HEADER_SIZE);
        memcpy(p, w->env2 + QF_HEADER_SIZE, w->env2_len - QF_HEADER_SIZE);
        w->len += w->env2_len - QF_HEADER_SIZE;
        w->record_count = w->env2_records;
    } else {
        size_t n = env1_len - QF_HEADER_SIZE - QF_RECORD_HEADER;   /* the first envelope's records but 'M' */
        unsigned char *p = wbuf_reserve(w, n);
        memcpy(p, env1 + QF_HEADER_SIZE, n);
        w->len += n;
        w->record_count = env1_records - 1;
    }
    free(env1);
    if (w->map) {
        unsigned char *p = wbuf_reserve(w, QF_RECORD_HEADER + w->map_count * QF_SEGMENT_SIZE);
        p[0] = REC_CONTENT_MAP;
        put_u32(p + 1, (uint32_t)(w->map_count * QF_SEGMENT_SIZE));
        for (size_t i = 0; i < w->map_count; i++) {
            put_u64(p + QF_RECORD_HEADER + i * QF_SEGMENT_SIZE, w->map[i].offset);
            put_u64(p + QF_RECORD_HEADER + i * QF_SEGMENT_SIZE + 8, w->map[i].length);
        }
        w->len += QF_RECORD_HEADER + w->map_count * QF_SEGMENT_SIZE;
        w->record_count++;
    }
    put_record(w, REC_CONTENT, NULL, 0);
    if (w->len > QUEUE_ENVELOPE_MAX) {
        w->error = EINVAL;
        errno = EINVAL;
        return -1;
    }
    hash = qf_hash_records(hash, w->buf, 0, w->len);
    unsigned char *p = wbuf_reserve(w, QF2_END_SIZE);
    p[0] = REC_END;
    put_u32(p + 1, QF2_END_PAYLOAD);
    put_u64(p + 5, w->content_offset);
    put_u64(p + 13, w->content_size);
    put_u64(p + 21, w->content_offset + w->content_size);
    put_u32(p + 29, w->record_count);
    put_u64(p + 33, hash);
    memcpy(p + 41, QF_END_MAGIC, 8);
    w->len += QF2_END_SIZE;
    return flush_with(w, NULL, 0);
}

int queue_writer_commit(struct queue_writer *w)
{
    if (w->error) {
        errno = w->error;
        return -1;
    }
    if (w->editing) {
        if (finish_edited(w) < 0)
            return -1;
        if (queue_sync_file(w->fd) < 0 || queue_group_commit_incoming(w->q, w->dir_sync_gen) < 0) {
            w->error = errno;
            return -1;
        }
        return 0;
    }
    unsigned char *p = wbuf_reserve(w, QF_END_SIZE);
    p[0] = REC_END;
    put_u32(p + 1, QF_END_PAYLOAD);
    put_u64(p + 5, w->content_offset);
    put_u64(p + 13, w->content_size);
    put_u32(p + 21, w->record_count);
    put_u64(p + 25, w->hash);
    memcpy(p + 33, QF_END_MAGIC, 8);
    w->len += QF_END_SIZE;
    if (flush_with(w, NULL, 0) < 0)
        return -1;
    if (queue_sync_file(w->fd) < 0 || queue_group_commit_incoming(w->q, w->dir_sync_gen) < 0) {
        w->error = errno;
        return -1;
    }
    return 0;
}

int queue_file_writer_active(int fd)
{
    if (flock(fd, LOCK_EX | LOCK_NB) == 0)
        return 0;
    return errno == EWOULDBLOCK ? 1 : -1;
}

static void writer_destroy(struct queue_writer *w)
{
    /* Unlock before closing: the close raises the queue manager's
     * IN_CLOSE_WRITE, and the kernel would drop the lock only after
     * queueing that event, so the queue manager could find the file still
     * locked and leave it until a periodic scan. */
    if (w->fd >= 0) {
        (void)flock(w->fd, LOCK_UN);
        close(w->fd);
    }
    free(w->buf);
    free(w->map);
    free(w->env2);
    free(w);
}

void queue_writer_abort(struct queue_writer *w)
{
    if (!w)
        return;
    unlinkat(queue_dir_fd(w->q, QDIR_INCOMING), w->id, 0);
    writer_destroy(w);
}

void queue_writer_free(struct queue_writer *w)
{
    if (w)
        writer_destroy(w);
}

