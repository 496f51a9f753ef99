/*
 * Maildrop files (format in maildrop.h and doc/queue-format.md): the
 * incremental validating parser shared by petrel-postdrop (reading what
 * petrel-sendmail sends it) and the pickup role (reading the file), the
 * writer both sides use, and the address check.
 *
 * The parser is a push parser, like smtp_data.c: bytes go in as they come,
 * split anywhere, and no record is ever buffered beyond an address (content
 * is handed through as it arrives), so its memory is the struct itself
 * whatever the input. Every rule is checked at the byte that breaks it and
 * the error names the offset, so a bad file is reported precisely.
 */
#include "config.h"

#include <errno.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "lib/xalloc.h"
#include "queue/maildrop.h"
#include "queue/queue.h"
#include "mail/smtp_parse.h"

enum stage {
    ST_MAGIC,        /* reading the 8 magic bytes */
    ST_HEAD,         /* reading a record's type and length */
    ST_PAYLOAD,      /* reading a record's payload */
    ST_DONE,         /* the end record was read: nothing may follow */
    ST_FAILED,
};

/* Which record may come next: the order is fixed. */
enum expect { EXPECT_TIME, EXPECT_SENDER, EXPECT_RCPT, EXPECT_RCPT_OR_M, EXPECT_CONTENT };

#define REC_HEAD 5

static uint32_t get_u32(const unsigned char *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static uint64_t get_u64(const unsigned char *p)
{
    return (uint64_t)get_u32(p) << 32 | get_u32(p + 4);
}

static void put_u32(unsigned char *p, uint32_t v)
{
    p[0] = (unsigned char)(v >> 24);
    p[1] = (unsigned char)(v >> 16);
    p[2] = (unsigned char)(v >> 8);
    p[3] = (unsigned char)v;
}

static void put_u64(unsigned char *p, uint64_t v)
{
    put_u32(p, (uint32_t)(v >> 32));
    put_u32(p + 4, (uint32_t)v);
}

/* ---- addresses ---- */

int maildrop_address_canonical(const char *address, int sender, petrel_pool *pool, const char **out,
                               const char **why)
{
    size_t len = strlen(address);
    if (sender && len == 0) {
        *out = "";
        return 0;
    }
    if (len == 0) {
        *why = "empty address";
        return -1;
    }
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)address[i];
        if (c == '\r' || c == '\n') {
            *why = "line break (CR or LF) in address";
            return -1;
        }
        if (c < 32 || c == 127) {
            *why = "control character in address";
            return -1;
        }
    }
    if (len > MAILDROP_ADDRESS_MAX) {
        *why = "address too long";
        return -1;
    }
    /* smtpd's own path grammar decides, so pickup's MAIL/RCPT lines parse
     * back to exactly this address. */
    struct smtp_parse_opts opts;
    memset(&opts, 0, sizeof(opts));
    opts.smtputf8_enabled = 1;
    opts.transaction_smtputf8 = 1;
    struct smtp_reply_err err;
    char *line = petrel_pool_printf(pool, "%s:<%s>%s", sender ? "FROM" : "TO", address, sender ? " SMTPUTF8" : "");
    const char *parsed;
    if (sender) {
        struct smtp_mail_args m;
        if (smtp_parse_mail(line, &opts, pool, &m, &err) != 0) {
            *why = strstr(err.text, "too long") ? "address too long (RFC 5321 limits)" : "bad address syntax";
            return -1;
        }
        parsed = m.address;
    } else {
        struct smtp_rcpt_args r;
        if (smtp_parse_rcpt(line, &opts, pool, &r, &err) != 0) {
            *why = strstr(err.text, "too long") ? "address too long (RFC 5321 limits)" : "bad address syntax";
            return -1;
        }
        parsed = r.address;
    }
    if (strlen(parsed) > MAILDROP_ADDRESS_MAX) {
        *why = "address too long";
        return -1;
    }
    *out = parsed;
    return 0;
}

int maildrop_address_ok(const char *address, int sender, const char **why)
{
    petrel_pool *pool = petrel_pool_create(1024);
    const char *canonical = NULL;
    int rc = maildrop_address_canonical(address, sender, pool, &canonical, why);
    if (rc == 0 && strcmp(canonical, address) != 0) {
        *why = "address not in canonical form";
        rc = -1;
    }
    petrel_pool_destroy(pool);
    return rc;
}

int maildrop_name_valid(const char *name)
{
    return queue_id_valid(name);
}

/* ---- parser ---- */

void maildrop_parser_init(struct maildrop_parser *p, enum maildrop_source source,
                          unsigned long long content_limit)
{
    memset(p, 0, sizeof(*p));
    p->source = source;
    p->content_limit = content_limit;
    p->stage = ST_MAGIC;
    p->expect = source == MAILDROP_FILE ? EXPECT_TIME : EXPECT_SENDER;
}

void maildrop_parser_fail(struct maildrop_parser *p, const char *fmt, ...)
{
    if (p->stage == ST_FAILED)
        return;
    char text[160];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(text, sizeof(text), fmt, ap);
    va_end(ap);
    snprintf(p->error, sizeof(p->error), "%s (at byte %llu)", text, p->offset);
    p->stage = ST_FAILED;
}

#define EXPECT(p) ((p)->expect)
#define SET_EXPECT(p, e) ((p)->expect = (int)(e))
#define RECORD(p) ((p)->type)

static int check_head(struct maildrop_parser *p, int type, uint32_t length)
{
    int expect = EXPECT(p);
    switch (type) {
    case 'T':
        if (expect != EXPECT_TIME) {
            maildrop_parser_fail(p, p->source == MAILDROP_SUBMISSION ? "a time record may not be submitted"
                                                                      : "time record out of place");
            return -1;
        }
        if (length != 12) {
            maildrop_parser_fail(p, "time record of %u bytes (expected 12)", length);
            return -1;
        }
        return 0;
    case 'S':
        if (expect != EXPECT_SENDER) {
            maildrop_parser_fail(p, expect == EXPECT_TIME ? "missing time record" : "sender record out of place");
            return -1;
        }
        break;
    case 'R':
        if (expect != EXPECT_RCPT && expect != EXPECT_RCPT_OR_M) {
            maildrop_parser_fail(p, expect < EXPECT_RCPT ? "recipient before the sender" : "recipient after the content");
            return -1;
        }
        if (p->recipients >= MAILDROP_RCPT_MAX) {
            maildrop_parser_fail(p, "more than %d recipients", MAILDROP_RCPT_MAX);
            return -1;
        }
        if (length == 0) {
            maildrop_parser_fail(p, "empty recipient");
            return -1;
        }
        break;
    case 'M':
        if (expect != EXPECT_RCPT_OR_M) {
            maildrop_parser_fail(p, expect == EXPECT_RCPT ? "no recipient" : "content start out of place");
            return -1;
        }
        if (length != 0) {
            maildrop_parser_fail(p, "content start record of %u bytes (expected 0)", length);
            return -1;
        }
        return 0;
    case 'C':
        if (expect != EXPECT_CONTENT) {
            maildrop_parser_fail(p, "content before the content start");
            return -1;
        }
        if (length == 0 || length > MAILDROP_CHUNK_MAX) {
            maildrop_parser_fail(p, "content record of %u bytes (expected 1 to %d)", length, MAILDROP_CHUNK_MAX);
            return -1;
        }
        if (p->content_limit && p->content_length + length > p->content_limit) {
            maildrop_parser_fail(p, "message larger than %llu bytes", p->content_limit);
            return -1;
        }
        return 0;
    case 'X':
        if (expect != EXPECT_CONTENT) {
            maildrop_parser_fail(p, "end record before the content");
            return -1;
        }
        if (length != 8) {
            maildrop_parser_fail(p, "end record of %u bytes (expected 8)", length);
            return -1;
        }
        return 0;
    default:
        if (type >= 33 && type <= 126)
            maildrop_parser_fail(p, "unknown record type '%c'", type);
        else
            maildrop_parser_fail(p, "unknown record type %d", type);
        return -1;
    }
    /* S and R: an address, read whole into p->field. */
    if (length > MAILDROP_ADDRESS_MAX) {
        maildrop_parser_fail(p, "address of %u bytes (at most %d)", length, MAILDROP_ADDRESS_MAX);
        return -1;
    }
    return 0;
}

static int stopped(struct maildrop_parser *p)
{
    if (p->stage != ST_FAILED)
        maildrop_parser_fail(p, "stopped by the reader");
    return -1;
}

/* A complete S, R, T, M or X payload is in p->field (or nothing, for M). */
static int finish_record(struct maildrop_parser *p, const struct maildrop_handler *h, void *ctx)
{
    const unsigned char *f = (const unsigned char *)p->field;
    const char *why = NULL;
    switch (RECORD(p)) {
    case 'T': {
        uint64_t sec = get_u64(f);
        uint32_t usec = get_u32(f + 8);
        if (sec > (uint64_t)INT64_MAX / 2 || usec >= 1000000) {
            maildrop_parser_fail(p, "bad time record");
            return -1;
        }
        SET_EXPECT(p, EXPECT_SENDER);
        if (h && h->time && h->time(ctx, (long long)sec, (long)usec) != 0)
            return stopped(p);
        return 0;
    }
    case 'S':
    case 'R': {
        int sender = RECORD(p) == 'S';
        p->field[p->length] = '\0';
        if (memchr(p->field, '\0', p->length)) {
            maildrop_parser_fail(p, "NUL byte in %s address", sender ? "sender" : "recipient");
            return -1;
        }
        if (maildrop_address_ok(p->field, sender, &why) != 0) {
            maildrop_parser_fail(p, "%s address: %s", sender ? "sender" : "recipient", why);
            return -1;
        }
        if (sender) {
            SET_EXPECT(p, EXPECT_RCPT);
            if (h && h->sender && h->sender(ctx, p->field) != 0)
                return stopped(p);
        } else {
            p->recipients++;
            SET_EXPECT(p, EXPECT_RCPT_OR_M);
            if (h && h->recipient && h->recipient(ctx, p->field) != 0)
                return stopped(p);
        }
        return 0;
    }
    case 'M':
        SET_EXPECT(p, EXPECT_CONTENT);
        if (h && h->start && h->start(ctx) != 0)
            return stopped(p);
        return 0;
    case 'C':
        SET_EXPECT(p, EXPECT_CONTENT);
        return 0;
    case 'X': {
        uint64_t length = get_u64(f);
        if (length != p->content_length) {
            maildrop_parser_fail(p, "end record says %llu content bytes, %llu were read",
                                 (unsigned long long)length, p->content_length);
            return -1;
        }
        p->stage = ST_DONE;
        if (h && h->end && h->end(ctx, p->content_length) != 0)
            return stopped(p);
        return 0;
    }
    }
    maildrop_parser_fail(p, "internal error: record %d", RECORD(p));
    return -1;
}

int maildrop_parse(struct maildrop_parser *p, const void *data, size_t len, const struct maildrop_handler *h,
                   void *ctx)
{
    const unsigned char *in = data;
    size_t pos = 0;
    while (pos < len) {
        switch (p->stage) {
        case ST_FAILED:
            return -1;
        case ST_DONE:
            maildrop_parser_fail(p, "data after the end record");
            return -1;
        case ST_MAGIC: {
            unsigned char c = in[pos];
            if (c != (unsigned char)MAILDROP_MAGIC[p->magic_got]) {
                maildrop_parser_fail(p, "not a maildrop file (bad magic)");
                return -1;
            }
            pos++;
            p->offset++;
            if (++p->magic_got == MAILDROP_MAGIC_LEN)
                p->stage = ST_HEAD;
            break;
        }
        case ST_HEAD: {
            p->head[p->head_got++] = in[pos++];
            p->offset++;
            if (p->head_got < REC_HEAD)
                break;
            p->head_got = 0;
            int type = p->head[0];
            uint32_t length = get_u32(p->head + 1);
            /* Report at the record's first byte. */
            p->offset -= REC_HEAD;
            int rc = check_head(p, type, length);
            p->offset += REC_HEAD;
            if (rc != 0)
                return -1;
            p->type = type;
            p->length = length;
            p->got = 0;
            if (length > 0) {
                p->stage = ST_PAYLOAD;
            } else {
                p->stage = ST_HEAD;
                if (finish_record(p, h, ctx) != 0)
                    return -1;
            }
            break;
        }
        case ST_PAYLOAD: {
            size_t want = p->length - p->got;
            size_t n = len - pos < want ? len - pos : want;
            if (RECORD(p) == 'C') {
                p->content_length += n;
                if (h && h->content && h->content(ctx, in + pos, n) != 0)
                    return stopped(p);
            } else {
                memcpy(p->field + p->got, in + pos, n);
            }
            pos += n;
            p->offset += n;
            p->got += (uint32_t)n;
            if (p->got == p->length) {
                p->stage = ST_HEAD;
                if (finish_record(p, h, ctx) != 0)
                    return -1;
            }
            break;
        }
        }
    }
    return p->stage == ST_FAILED ? -1 : 0;
}

int maildrop_parse_finish(struct maildrop_parser *p)
{
    if (p->stage == ST_DONE)
        return 0;
    if (p->stage != ST_FAILED)
        maildrop_parser_fail(p, p->stage == ST_MAGIC && p->magic_got == 0 ? "empty input"
                                                                            : "truncated: no end record");
    return -1;
}

/* ---- writer ---- */

static int put_record(struct maildrop_writer *w, int type, const void *data, size_t len)
{
    unsigned char head[REC_HEAD];
    head[0] = (unsigned char)type;
    put_u32(head + 1, (uint32_t)len);
    if (w->failed)
        return -1;
    if (fwrite(head, 1, REC_HEAD, w->fp) != REC_HEAD || (len && fwrite(data, 1, len, w->fp) != len)) {
        w->failed = errno ? errno : EIO;
        return -1;
    }
    return 0;
}

int maildrop_writer_init(struct maildrop_writer *w, FILE *fp)
{
    memset(w, 0, sizeof(*w));
    w->fp = fp;
    w->chunk = xmalloc(MAILDROP_CHUNK_MAX);
    if (fwrite(MAILDROP_MAGIC, 1, MAILDROP_MAGIC_LEN, fp) != MAILDROP_MAGIC_LEN) {
        w->failed = errno ? errno : EIO;
        return -1;
    }
    return 0;
}

int maildrop_write_time(struct maildrop_writer *w, long long sec, long usec)
{
    unsigned char t[12];
    put_u64(t, (uint64_t)sec);
    put_u32(t + 8, (uint32_t)usec);
    return put_record(w, 'T', t, sizeof(t));
}

int maildrop_write_sender(struct maildrop_writer *w, const char *address)
{
    return put_record(w, 'S', address, strlen(address));
}

int maildrop_write_recipient(struct maildrop_writer *w, const char *address)
{
    return put_record(w, 'R', address, strlen(address));
}

int maildrop_write_content_start(struct maildrop_writer *w)
{
    return put_record(w, 'M', NULL, 0);
}

static int flush_chunk(struct maildrop_writer *w)
{
    if (w->chunk_len == 0)
        return w->failed ? -1 : 0;
    int rc = put_record(w, 'C', w->chunk, w->chunk_len);
    w->chunk_len = 0;
    return rc;
}

int maildrop_write_content(struct maildrop_writer *w, const void *data, size_t len)
{
    const char *p = data;
    w->content_length += len;
    while (len > 0) {
        size_t room = MAILDROP_CHUNK_MAX - w->chunk_len;
        size_t n = len < room ? len : room;
        memcpy(w->chunk + w->chunk_len, p, n);
        w->chunk_len += n;
        p += n;
        len -= n;
        if (w->chunk_len == MAILDROP_CHUNK_MAX && flush_chunk(w) != 0)
            return -1;
    }
    return w->failed ? -1 : 0;
}

int maildrop_write_end(struct maildrop_writer *w)
{
    unsigned char n[8];
    flush_chunk(w);
    put_u64(n, w->content_length);
    put_record(w, 'X', n, sizeof(n));
    if (!w->failed && fflush(w->fp) != 0)
        w->failed = errno ? errno : EIO;
    if (w->failed) {
        errno = w->failed;
        return -1;
    }
    return 0;
}

void maildrop_writer_free(struct maildrop_writer *w)
{
    free(w->chunk);
    w->chunk = NULL;
}
