/*
 * Queue files: the validating reader (versions 1 and 2) and in-place
 * recipient marks. The format is described in queue_file.c and
 * doc/queue-format.md; a reader accepts a file only when its end record,
 * envelope and hash agree (every bound checked before use), and says why
 * it refuses one (ENODATA: never finished; EBADMSG: damaged).
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "lib/xalloc.h"
#include "queue/queue.h"
#include "queue/queue_format.h"

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
    ssize_t got = qf_pread_full(fd, end, QF2_END_SIZE, (off_t)(size - QF2_END_SIZE));
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
        got = qf_pread_full(fd, env1 + first, (size_t)data_offset - first, (off_t)first);
        if (got < 0 || (size_t)got != data_offset - first) {
            free(env1);
            return fail(r, got < 0 ? errno : EBADMSG, error, "cannot read the envelope");
        }
    }
    uint64_t hash = qf_envelope_hash(env1, (size_t)data_offset);
    if (env1 != buf)
        free(env1);
    /* The envelope that counts, behind a copy of the header. */
    size_t env2_size = QF_HEADER_SIZE + (size_t)(limit - env_offset);
    unsigned char *env2 = xmalloc(env2_size);
    memcpy(env2, buf, QF_HEADER_SIZE);
    got = qf_pread_full(fd, env2 + QF_HEADER_SIZE, env2_size - QF_HEADER_SIZE, (off_t)env_offset);
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
    if (rc == 0 && qf_hash_records(hash, env2, QF_HEADER_SIZE, env2_size) != want_hash)
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
    ssize_t got = qf_pread_full(fd, buf, first, 0);
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
        got = qf_pread_full(fd, end, QF_END_SIZE, (off_t)(size - QF_END_SIZE));
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
        got = qf_pread_full(fd, buf + first, (size_t)content_offset - first, (off_t)first);
        if (got < 0 || (size_t)got != content_offset - first) {
            fail(&r, got < 0 ? errno : EBADMSG, error, "cannot read the envelope");
            goto out;
        }
    }
    r.env = buf;
    r.env_size = (size_t)content_offset;
    if (parse_envelope(&r, out, want_records) < 0)
        goto out;
    if (qf_envelope_hash(buf, r.env_size) != want_hash) {
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
