/*
 * Queue files: the writer (envelope, streamed content, end record, durable
 * commit), the validating reader, and in-place recipient marks.
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
#include <stdarg.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

#include "lib/xalloc.h"
#include "queue/queue.h"
#include "queue/queue_int.h"

#define QF_MAGIC "PETRELQ1"
#define QF_END_MAGIC "PETRELQE"
#define QF_VERSION 1
#define QF_VERSION_EDITED 2
#define QF_HEADER_SIZE 16
#define QF_RECORD_HEADER 5
#define QF_END_PAYLOAD 36
#define QF_END_SIZE (QF_RECORD_HEADER + QF_END_PAYLOAD)
#define QF2_END_PAYLOAD 44
#define QF2_END_SIZE (QF_RECORD_HEADER + QF2_END_PAYLOAD)
#define QF_SEGMENT_SIZE 16
#define QF_SEGMENTS_MAX (QUEUE_FIELD_MAX / QF_SEGMENT_SIZE)
#define QF_RCPT_FIXED 10          /* status, dsn, notify, orcpt length */
#define QF_NO_ORCPT 0xFFFFFFFFu
#define QF_WRITE_BUFFER (64 * 1024)
#define QF_READ_FIRST (64 * 1024) /* first pread covers small files whole */
#define QF_ID_ATTEMPTS 8
#define QF_ORIGIN_SIZE (1 + 8 + 8 + QUEUE_ID_LEN)

enum qf_record {
    REC_TIME = 'T', REC_FLAGS = 'F', REC_SENDER = 'S', REC_ENVID = 'E',
    REC_CLIENT_NAME = 'c', REC_CLIENT_ADDR = 'a', REC_CLIENT_PORT = 'p',
    REC_HELO = 'h', REC_PROTOCOL = 'P', REC_TLS = 't', REC_SASL_METHOD = 'm',
    REC_SASL_USER = 'u', REC_FILTER = 'f', REC_LOG_IDENT = 'i', REC_ORIGIN = 'D', REC_RCPT = 'R', REC_CONTENT = 'M', REC_END = 'X',
    REC_CONTENT_MAP = 'C',
};

#define KNOWN_FLAGS (QUEUE_F_8BITMIME | QUEUE_F_SMTPUTF8 | QUEUE_F_BINARYMIME | QUEUE_F_NO_ADDRESS_MAPPINGS | \
                     QUEUE_F_REDIRECTED)
#define KNOWN_NOTIFY (QUEUE_NOTIFY_SUCCESS | QUEUE_NOTIFY_FAILURE | QUEUE_NOTIFY_DELAY | QUEUE_NOTIFY_NEVER)

/* ---- byte helpers ---- */

static void put_u32(unsigned char *p, uint32_t v)
{
    p[0] = (unsigned char)(v >> 24); p[1] = (unsigned char)(v >> 16);
    p[2] = (unsigned char)(v >> 8);  p[3] = (unsigned char)v;
}

static void put_u64(unsigned char *p, uint64_t v)
{
    put_u32(p, (uint32_t)(v >> 32));
    put_u32(p + 4, (uint32_t)v);
}

static uint32_t get_u32(const unsigned char *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static uint64_t get_u64(const unsigned char *p)
{
    return (uint64_t)get_u32(p) << 32 | get_u32(p + 4);
}

#define FNV_OFFSET 0xcbf29ce484222325ull
#define FNV_PRIME 0x100000001b3ull

static uint64_t fnv1a(uint64_t h, const unsigned char *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        h = (h ^ p[i]) * FNV_PRIME;
    return h;
}

/* Continues hash h over the records of env from pos to size, with each
 * recipient's status and DSN bytes read as zero. */
static uint64_t hash_records(uint64_t h, const unsigned char *env, size_t pos, size_t size)
{
    static const unsigned char zeros[5];
    while (pos + QF_RECORD_HEADER <= size) {
        size_t len = get_u32(env + pos + 1);
        h = fnv1a(h, env + pos, QF_RECORD_HEADER);
        pos += QF_RECORD_HEADER;
        if (len > size - pos)
            len = size - pos;   /* only reached on damaged input, which fails elsewhere */
        if (env[pos - QF_RECORD_HEADER] == REC_RCPT && len >= 5) {
            h = fnv1a(h, zeros, 5);
            h = fnv1a(h, env + pos + 5, len - 5);
        } else {
            h = fnv1a(h, env + pos, len);
        }
        pos += len;
    }
    return h;
}

/* The envelope hash: the header, then the records. */
static uint64_t envelope_hash(const unsigned char *env, size_t size)
{
    return hash_records(fnv1a(FNV_OFFSET, env, QF_HEADER_SIZE), env, QF_HEADER_SIZE, size);
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

/* Reads exactly len bytes at off; a short file is EBADMSG-worthy, so it
 * returns the count read and lets the caller judge. -1 on a system error. */
static ssize_t pread_full(int fd, void *buf, size_t len, off_t off)
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
            ssize_t n = pread_full(fd, (char *)buf + got, want, (off_t)(base + seg_off + in));
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
    w->hash = envelope_hash(w->buf, w->len);
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
    ssize_t got = pread_full(w->fd, env1, env1_len, 0);
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
    uint64_t hash = envelope_hash(env1, env1_len);

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
    hash = hash_records(hash, w->buf, 0, w->len);
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

/* ---- reader ---- */

struct qf_reader {
    petrel_pool *pool;
    char **error;
    const unsigned char *env;   /* header + envelope records */
    size_t env_size;
    int version;                /* 2: the records are the edited envelope after the data */
    off_t shift;                /* file offset of env[i] is i + shift */
    uint64_t data_length;       /* version 2: the data region's size */
    struct queue_segment *map;  /* version 2: the content map, if any */
    size_t map_count;
    uint64_t map_total;
    int has_map;
};

__attribute__((format(printf, 4, 5)))
static int fail(struct qf_reader *r, int err, char **error, const char *fmt, ...)
{
    if (error) {
        va_list ap;
        va_start(ap, fmt);
        *error = petrel_pool_vprintf(r->pool, fmt, ap);
        va_end(ap);
    }
    errno = err;
    return -1;
}

static const char *pool_string(petrel_pool *pool, const unsigned char *p, size_t n)
{
    char *s = petrel_pool_alloc(pool, n + 1);
    memcpy(s, p, n);
    s[n] = '\0';
    return s;
}

static const char *record_name(int type)
{
    switch (type) {
    case REC_TIME: return "arrival time";
    case REC_FLAGS: return "flags";
    case REC_SENDER: return "sender";
    case REC_ENVID: return "ENVID";
    case REC_CLIENT_NAME: return "client name";
    case REC_CLIENT_ADDR: return "client address";
    case REC_CLIENT_PORT: return "client port";
    case REC_HELO: return "HELO";
    case REC_PROTOCOL: return "protocol";
    case REC_TLS: return "TLS info";
    case REC_SASL_METHOD: return "SASL method";
    case REC_SASL_USER: return "SASL username";
    case REC_FILTER: return "content filter";
    case REC_LOG_IDENT: return "original queue ID";
    case REC_ORIGIN: return "maildrop origin";
    case REC_RCPT: return "recipient";
    case REC_CONTENT: return "content start";
    case REC_CONTENT_MAP: return "content map";
    default: return "unknown";
    }
}

/* The string field a record type fills, or NULL if it is not a string record. */
static const char **string_slot(struct queue_envelope *env, int type)
{
    switch (type) {
    case REC_SENDER: return &env->sender;
    case REC_ENVID: return &env->envid;
    case REC_CLIENT_NAME: return &env->client_name;
    case REC_CLIENT_ADDR: return &env->client_addr;
    case REC_CLIENT_PORT: return &env->client_port;
    case REC_HELO: return &env->helo;
    case REC_PROTOCOL: return &env->protocol;
    case REC_TLS: return &env->tls_info;
    case REC_SASL_METHOD: return &env->sasl_method;
    case REC_SASL_USER: return &env->sasl_username;
    case REC_FILTER: return &env->content_filter;
    case REC_LOG_IDENT: return &env->log_ident;
    default: return NULL;
    }
}

static int string_ok(const unsigned char *p, size_t n)
{
    return n <= QUEUE_FIELD_MAX && memchr(p, '\0', n) == NULL;
}

/* Parses the envelope records in r->env; fills out (not content fields). */
static int parse_envelope(struct qf_reader *r, struct queue_message *out, uint32_t want_records)
{
    const unsigned char *env = r->env;
    size_t size = r->env_size, pos = QF_HEADER_SIZE;
    char **error = r->error;
    unsigned char seen[256] = { 0 };
    size_t rcpt_count = 0, rcpt_cap = 0;
    struct queue_rcpt *rcpts = NULL;
    struct queue_rcpt_state *states = NULL;
    uint32_t records = 0;

    if (memcmp(env, QF_MAGIC, 8) != 0)
        return fail(r, EBADMSG, error, "not a queue file (bad magic)");
    if (env[8] != QF_VERSION && env[8] != QF_VERSION_EDITED)
        return fail(r, EBADMSG, error, "unsupported queue file version %u", env[8]);
    for (int i = 9; i < QF_HEADER_SIZE; i++)
        if (env[i] != 0)
            return fail(r, EBADMSG, error, "unknown header flags at byte %d", i);

    /* First pass counts recipients so the arrays are allocated once. */
    for (size_t p = pos; p + QF_RECORD_HEADER <= size;) {
        size_t len = get_u32(env + p + 1);
        if (env[p] == REC_RCPT && len > QF_RCPT_FIXED)
            rcpt_cap++;   /* only plausible ones: a hostile file cannot make us over-allocate */
        if (len > size - p - QF_RECORD_HEADER)
            break;
        p += QF_RECORD_HEADER + len;
    }
    if (rcpt_cap) {
        rcpts = petrel_pool_zalloc(r->pool, rcpt_cap * sizeof(*rcpts));
        states = petrel_pool_zalloc(r->pool, rcpt_cap * sizeof(*states));
    }

    for (;;) {
        if (size - pos < QF_RECORD_HEADER)
            return fail(r, EBADMSG, error, "envelope ends inside a record header at offset %zu", pos + (size_t)r->shift);
        int type = env[pos];
        size_t len = get_u32(env + pos + 1);
        size_t at = pos, where = pos + (size_t)r->shift;   /* where: in the file, for messages */
        const unsigned char *p = env + pos + QF_RECORD_HEADER;
        pos += QF_RECORD_HEADER;
        records++;
        if (len > size - pos)
            return fail(r, EBADMSG, error,
                        "record %u ('%c') at offset %zu: length %zu runs past the envelope end (%zu)",
                        records, type >= 0x20 && type < 0x7f ? type : '?', where, len, size);
        pos += len;
        if (type != REC_RCPT && seen[type]++)
            return fail(r, EBADMSG, error, "duplicate %s record at offset %zu", record_name(type), where);

        const char **slot = string_slot(&out->env, type);
        if (slot) {
            if (!string_ok(p, len))
                return fail(r, EBADMSG, error, "%s record at offset %zu: %s", record_name(type), where,
                            len > QUEUE_FIELD_MAX ? "too long" : "contains a NUL byte");
            *slot = pool_string(r->pool, p, len);
            continue;
        }
        switch (type) {
        case REC_TIME: {
            if (len != 12)
                return fail(r, EBADMSG, error, "arrival time record at offset %zu: length %zu, want 12", where, len);
            uint64_t sec = get_u64(p);
            uint32_t usec = get_u32(p + 8);
            if (sec > (uint64_t)INT64_MAX || usec >= 1000000)
                return fail(r, EBADMSG, error, "arrival time record at offset %zu: bad time", where);
            out->env.arrival_sec = (long long)sec;
            out->env.arrival_usec = (long)usec;
            break;
        }
        case REC_FLAGS: {
            if (len != 5)
                return fail(r, EBADMSG, error, "flags record at offset %zu: length %zu, want 5", where, len);
            uint32_t flags = get_u32(p);
            if ((flags & ~KNOWN_FLAGS) || p[4] > QUEUE_RET_HDRS)
                return fail(r, EBADMSG, error, "flags record at offset %zu: unknown flags or RET", where);
            out->env.flags = flags;
            out->env.ret = p[4];
            break;
        }
        case REC_ORIGIN: {
            if (len != QF_ORIGIN_SIZE)
                return fail(r, EBADMSG, error, "maildrop origin record at offset %zu: length %zu, want %d", where, len,
                            QF_ORIGIN_SIZE);
            char name[QUEUE_ID_MAX];
            memcpy(name, p + 17, QUEUE_ID_LEN);
            name[QUEUE_ID_LEN] = '\0';
            if ((p[0] & ~1u) || !queue_id_valid(name))
                return fail(r, EBADMSG, error, "maildrop origin record at offset %zu: bad flags or name", where);
            struct queue_origin *o = petrel_pool_zalloc(r->pool, sizeof(*o));
            o->name = petrel_pool_strdup(r->pool, name);
            o->dev = get_u64(p + 1);
            o->ino = get_u64(p + 9);
            o->last = p[0] & 1;
            out->env.origin = o;
            break;
        }
        case REC_RCPT: {
            if (len < QF_RCPT_FIXED + 1)
                return fail(r, EBADMSG, error, "recipient record at offset %zu: too short (%zu)", where, len);
            uint32_t olen = get_u32(p + 6);
            size_t olen_bytes = olen == QF_NO_ORCPT ? 0 : olen;
            if (olen_bytes > len - QF_RCPT_FIXED - 1)
                return fail(r, EBADMSG, error, "recipient record at offset %zu: ORCPT length %u too long", where, olen);
            const unsigned char *orcpt = p + QF_RCPT_FIXED, *addr = orcpt + olen_bytes;
            size_t alen = len - QF_RCPT_FIXED - olen_bytes;
            if (p[0] > QUEUE_RCPT_STATUS_MAX || (p[5] & ~KNOWN_NOTIFY))
                return fail(r, EBADMSG, error, "recipient record at offset %zu: bad status or NOTIFY", where);
            if (!string_ok(addr, alen) || !string_ok(orcpt, olen_bytes))
                return fail(r, EBADMSG, error, "recipient record at offset %zu: bad address or ORCPT", where);
            struct queue_rcpt *rc = &rcpts[rcpt_count];
            struct queue_rcpt_state *st = &states[rcpt_count];
            rcpt_count++;
            rc->address = pool_string(r->pool, addr, alen);
            rc->orcpt = olen == QF_NO_ORCPT ? NULL : pool_string(r->pool, orcpt, olen_bytes);
            rc->notify = p[5];
            st->status = p[0];
            st->dsn_code = get_u32(p + 1);
            st->status_offset = (off_t)(at + QF_RECORD_HEADER) + r->shift;
            if (!queue_rcpt_status_final(st->status))
                out->pending_count++;
            break;
        }
        case REC_CONTENT_MAP: {
            if (r->version != QF_VERSION_EDITED)
                return fail(r, EBADMSG, error, "unknown record type 0x%02x at offset %zu", type, where);
            if (len % QF_SEGMENT_SIZE != 0 || len > QUEUE_FIELD_MAX)
                return fail(r, EBADMSG, error, "content map record at offset %zu: length %zu, want a multiple of %d up to %u",
                            where, len, QF_SEGMENT_SIZE, QUEUE_FIELD_MAX);
            size_t n = len / QF_SEGMENT_SIZE;
            struct queue_segment *map = petrel_pool_zalloc(r->pool, (n ? n : 1) * sizeof(*map));
            uint64_t total = 0;
            for (size_t i = 0; i < n; i++) {
                uint64_t o = get_u64(p + i * QF_SEGMENT_SIZE), l = get_u64(p + i * QF_SEGMENT_SIZE + 8);
                if (l == 0 || o > r->data_length || l > r->data_length - o)
                    return fail(r, EBADMSG, error,
                                "content map record at offset %zu: range %zu (%llu bytes at %llu) is empty or runs past the data (%llu bytes)",
                                where, i + 1, (unsigned long long)l, (unsigned long long)o,
                                (unsigned long long)r->data_length);
                map[i].offset = o;
                map[i].length = l;
                total += l;   /* no overflow: l < 2^63 and total was at most INT64_MAX */
                if (total > (uint64_t)INT64_MAX)
                    return fail(r, EBADMSG, error, "content map record at offset %zu: content too long", where);
            }
            r->map = map;
            r->map_count = n;
            r->map_total = total;
            r->has_map = 1;
            break;
        }
        case REC_CONTENT:
            if (len != 0)
                return fail(r, EBADMSG, error, "content start record at offset %zu: length %zu, want 0", where, len);
            if (pos != size)
                return fail(r, EBADMSG, error, "content start record at offset %zu is not where the end record says content starts (%zu)", where, size + (size_t)r->shift);
            if (!seen[REC_TIME] || !seen[REC_FLAGS] || !seen[REC_SENDER])
                return fail(r, EBADMSG, error, "envelope lacks its %s record",
                            !seen[REC_TIME] ? "arrival time" : !seen[REC_FLAGS] ? "flags" : "sender");
            if (rcpt_count == 0)
                return fail(r, EBADMSG, error, "envelope has no recipient");
            if (records != want_records)
                return fail(r, EBADMSG, error, "envelope has %u records, end record says %u", records, want_records);
            out->env.rcpt_count = rcpt_count;
            out->env.rcpts = rcpts;
            out->rcpt_state = states;
            return 0;
        default:
            return fail(r, EBADMSG, error, "unknown record type 0x%02x at offset %zu", type, where);
        }
    }
}

/* A version 2 file (edited at end of message): the first envelope is
 * only hashed; the envelope that counts follows the data. buf holds the
 * file's first `first` bytes. */
static int read_edited(struct qf_reader *r, int fd, unsigned char *buf, size_t first, uint64_t size,
                       struct queue_message *out)
{
    char **error = r->error;
    unsigned char end[QF2_END_SIZE];
    if (size < QF_HEADER_SIZE + 2 * QF_RECORD_HEADER + QF2_END_SIZE)
        return fail(r, ENODATA, error, "incomplete: file is %llu bytes, shorter than any finished queue file",
                    (unsigned long long)size);
    ssize_t got = pread_full(fd, end, QF2_END_SIZE, (off_t)(size - QF2_END_SIZE));
    if (got != QF2_END_SIZE)
        return fail(r, got < 0 ? errno : EBADMSG, error, "cannot read the end record");
    if (end[0] != REC_END || get_u32(end + 1) != QF2_END_PAYLOAD || memcmp(end + 41, QF_END_MAGIC, 8) != 0)
        return fail(r, ENODATA, error, "incomplete: no end record (file is %llu bytes)", (unsigned long long)size);
    uint64_t data_offset = get_u64(end + 5), data_length = get_u64(end + 13), env_offset = get_u64(end + 21);
    uint32_t want_records = get_u32(end + 29);
    uint64_t want_hash = get_u64(end + 33);
    uint64_t limit = size - QF2_END_SIZE;
    if (data_offset < QF_HEADER_SIZE + QF_RECORD_HEADER || data_offset > QUEUE_ENVELOPE_MAX || data_offset > limit
        || data_length > limit - data_offset || env_offset != data_offset + data_length
        || limit - env_offset < QF_RECORD_HEADER || limit - env_offset > QUEUE_ENVELOPE_MAX)
        return fail(r, EBADMSG, error,
                    "end record does not match the file: data at %llu, %llu bytes, envelope at %llu, file %llu bytes",
                    (unsigned long long)data_offset, (unsigned long long)data_length,
                    (unsigned long long)env_offset, (unsigned long long)size);
    /* The first envelope, hashed as written (its records are superseded). */
    unsigned char *env1 = buf;
    if (data_offset > first) {
        env1 = xmalloc((size_t)data_offset);
        memcpy(env1, buf, first);
        got = pread_full(fd, env1 + first, (size_t)data_offset - first, (off_t)first);
        if (got < 0 || (size_t)got != data_offset - first) {
            free(env1);
            return fail(r, got < 0 ? errno : EBADMSG, error, "cannot read the envelope");
        }
    }
    uint64_t hash = envelope_hash(env1, (size_t)data_offset);
    if (env1 != buf)
        free(env1);
    /* The envelope that counts, behind a copy of the header. */
    size_t env2_size = QF_HEADER_SIZE + (size_t)(limit - env_offset);
    unsigned char *env2 = xmalloc(env2_size);
    memcpy(env2, buf, QF_HEADER_SIZE);
    got = pread_full(fd, env2 + QF_HEADER_SIZE, env2_size - QF_HEADER_SIZE, (off_t)env_offset);
    if (got < 0 || (size_t)got != env2_size - QF_HEADER_SIZE) {
        free(env2);
        return fail(r, got < 0 ? errno : EBADMSG, error, "cannot read the edited envelope");
    }
    r->env = env2;
    r->env_size = env2_size;
    r->version = QF_VERSION_EDITED;
    r->shift = (off_t)env_offset - QF_HEADER_SIZE;
    r->data_length = data_length;
    int rc = parse_envelope(r, out, want_records);
    if (rc == 0 && hash_records(hash, env2, QF_HEADER_SIZE, env2_size) != want_hash)
        rc = fail(r, EBADMSG, error, "envelope checksum mismatch");
    free(env2);
    if (rc < 0)
        return -1;
    out->version = QF_VERSION_EDITED;
    out->content_offset = (off_t)data_offset;
    out->content_length = r->has_map ? r->map_total : data_length;
    out->segments = r->has_map ? r->map : NULL;
    out->segment_count = r->has_map ? r->map_count : 0;
    out->file_size = (off_t)size;
    return 0;
}

int queue_message_read_fd(int fd, const char *id, petrel_pool *pool,
                          struct queue_message *out, char **error)
{
    struct qf_reader r = { .pool = pool, .error = error };
    struct stat st;
    unsigned char *buf = NULL;
    int ret = -1;

    memset(out, 0, sizeof(*out));
    out->id = petrel_pool_strdup(pool, id ? id : "");
    if (fstat(fd, &st) < 0)
        return fail(&r, errno, error, "fstat: %s", strerror(errno));
    if (!S_ISREG(st.st_mode))
        return fail(&r, EBADMSG, error, "not a regular file");
    uint64_t size = (uint64_t)st.st_size;
    if (size < QF_HEADER_SIZE + QF_RECORD_HEADER + QF_END_SIZE)
        return fail(&r, ENODATA, error, "incomplete: file is %llu bytes, shorter than any finished queue file",
                    (unsigned long long)size);

    size_t first = size < QF_READ_FIRST ? (size_t)size : QF_READ_FIRST;
    buf = xmalloc(first);
    ssize_t got = pread_full(fd, buf, first, 0);
    if (got < 0) {
        fail(&r, errno, error, "read: %s", strerror(errno));
        goto out;
    }
    if ((size_t)got < first) {
        fail(&r, EBADMSG, error, "file shrank while being read");
        goto out;
    }

    if (memcmp(buf, QF_MAGIC, 8) == 0 && buf[8] == QF_VERSION_EDITED) {
        ret = read_edited(&r, fd, buf, first, size, out);
        goto out;
    }
    unsigned char end[QF_END_SIZE];
    if (size == first) {
        memcpy(end, buf + size - QF_END_SIZE, QF_END_SIZE);
    } else {
        got = pread_full(fd, end, QF_END_SIZE, (off_t)(size - QF_END_SIZE));
        if (got < 0 || got != QF_END_SIZE) {
            fail(&r, got < 0 ? errno : EBADMSG, error, "cannot read the end record");
            goto out;
        }
    }
    if (end[0] != REC_END || get_u32(end + 1) != QF_END_PAYLOAD
        || memcmp(end + 33, QF_END_MAGIC, 8) != 0) {
        fail(&r, ENODATA, error, "incomplete: no end record (file is %llu bytes)", (unsigned long long)size);
        goto out;
    }
    uint64_t content_offset = get_u64(end + 5), content_length = get_u64(end + 13);
    uint32_t want_records = get_u32(end + 21);
    uint64_t want_hash = get_u64(end + 25);
    if (content_offset < QF_HEADER_SIZE + QF_RECORD_HEADER || content_offset > QUEUE_ENVELOPE_MAX
        || content_offset > size - QF_END_SIZE
        || content_length != size - QF_END_SIZE - content_offset) {
        fail(&r, EBADMSG, error,
             "end record does not match the file: content at %llu, %llu bytes, file %llu bytes",
             (unsigned long long)content_offset, (unsigned long long)content_length,
             (unsigned long long)size);
        goto out;
    }
    if (content_offset > first) {
        buf = xrealloc(buf, (size_t)content_offset);
        got = pread_full(fd, buf + first, (size_t)content_offset - first, (off_t)first);
        if (got < 0 || (size_t)got != content_offset - first) {
            fail(&r, got < 0 ? errno : EBADMSG, error, "cannot read the envelope");
            goto out;
        }
    }
    r.env = buf;
    r.env_size = (size_t)content_offset;
    if (parse_envelope(&r, out, want_records) < 0)
        goto out;
    if (envelope_hash(buf, r.env_size) != want_hash) {
        fail(&r, EBADMSG, error, "envelope checksum mismatch");
        goto out;
    }
    out->version = QF_VERSION;
    out->content_offset = (off_t)content_offset;
    out->content_length = content_length;
    out->file_size = (off_t)size;
    ret = 0;
out:
    free(buf);
    return ret;
}

int queue_message_read(int dirfd, const char *id, petrel_pool *pool,
                       struct queue_message *out, char **error)
{
    if (!id || !queue_id_valid(id)) {
        memset(out, 0, sizeof(*out));
        if (error)
            *error = petrel_pool_strdup(pool, "not a queue ID");
        errno = EINVAL;
        return -1;
    }
    int fd = openat(dirfd, id, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK);
    if (fd < 0) {
        int err = errno;
        memset(out, 0, sizeof(*out));
        if (error)
            *error = petrel_pool_printf(pool, "open: %s", strerror(err));
        errno = err;
        return -1;
    }
    int ret = queue_message_read_fd(fd, id, pool, out, error);
    int err = errno;
    close(fd);
    errno = err;
    return ret;
}

/* ---- marks ---- */

static int mark(int fd, struct queue_message *msg, size_t i, int status, unsigned dsn_code, int with_dsn)
{
    if (i >= msg->env.rcpt_count || status < 0 || status > QUEUE_RCPT_STATUS_MAX) {
        errno = EINVAL;
        return -1;
    }
    struct queue_rcpt_state *st = &msg->rcpt_state[i];
    unsigned char bytes[5];
    bytes[0] = (unsigned char)status;
    put_u32(bytes + 1, dsn_code);
    size_t n = with_dsn ? 5 : 1;
    ssize_t done;
    do
        done = pwrite(fd, bytes, n, st->status_offset);
    while (done < 0 && errno == EINTR);
    if (done < 0)
        return -1;
    if ((size_t)done != n) {
        errno = EIO;
        return -1;
    }
    int was_final = queue_rcpt_status_final(st->status), now_final = queue_rcpt_status_final(status);
    if (!was_final && now_final)
        msg->pending_count--;
    else if (was_final && !now_final)
        msg->pending_count++;
    st->status = status;
    if (with_dsn)
        st->dsn_code = dsn_code;
    return 0;
}

int queue_mark_rcpt(int fd, struct queue_message *msg, size_t rcpt_index, int status)
{
    return mark(fd, msg, rcpt_index, status, 0, 0);
}

int queue_mark_rcpt_dsn(int fd, struct queue_message *msg, size_t rcpt_index,
                        int status, unsigned dsn_code)
{
    return mark(fd, msg, rcpt_index, status, dsn_code, 1);
}
