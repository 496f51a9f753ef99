/*
 * Maildrop files: mail that a local user submitted (petrel-sendmail, through
 * the set-group-ID helper petrel-postdrop) waiting in queue_directory/maildrop/
 * until the pickup role turns it into a queue file, as Postfix's postdrop and
 * pickup do. A maildrop file is written by an ordinary user, so everything
 * that reads one treats it as hostile input: the parser below is bounded,
 * incremental (bytes may arrive split anywhere) and checks every field.
 *
 * FORMAT (version 1; also in doc/queue-format.md). Integers are big-endian.
 *
 *   magic, 8 bytes: "PETRELM1"
 *   records: [type: 1 byte][length: 4 bytes][payload: length bytes]
 *     'T' arrival time: seconds (8, >= 0) + microseconds (4, < 1000000)
 *         exactly once, first; written by petrel-postdrop, never taken from
 *         the user (the stream petrel-sendmail writes has no 'T')
 *     'S' envelope sender, canonical SMTP form, empty = the null sender;
 *         exactly once
 *     'R' envelope recipient, canonical SMTP form; 1 to MAILDROP_RCPT_MAX
 *     'M' content start, empty; exactly once
 *     'C' content, 1 to MAILDROP_CHUNK_MAX bytes; any number
 *     'X' end: the content length (8); exactly once, the last bytes
 *
 * The content is the message (RFC 5322) with CRLF line ends, not
 * dot-stuffed. An address is in "canonical SMTP form" when smtpd's own path
 * parser reads <address> back as exactly the same string (local part
 * quoted only when it is not a dot-atom), so pickup can put it between
 * angle brackets on a MAIL or RCPT line without any escaping question; no
 * control character (NUL, CR, LF, ...) can pass that check.
 *
 * A file is complete ("ready") when its owner-execute bit is set (mode
 * 0744, Postfix's convention): the helper sets it just before fsync, and
 * holds an exclusive flock(2) on the file until it is durable.
 */
#ifndef PETREL_QUEUE_MAILDROP_H
#define PETREL_QUEUE_MAILDROP_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include <petrel/pool.h>

#define MAILDROP_MAGIC "PETRELM1"
#define MAILDROP_MAGIC_LEN 8
#define MAILDROP_DIR "maildrop"
#define MAILDROP_ADDRESS_MAX 254      /* SMTP_PATH_MAX without the angle brackets */
#define MAILDROP_RCPT_MAX 10000
#define MAILDROP_CHUNK_MAX 65536
#define MAILDROP_READY_MODE 0744      /* complete; 0600 while being written */

enum maildrop_source {
    MAILDROP_SUBMISSION,   /* the stream petrel-sendmail writes: no 'T' record */
    MAILDROP_FILE,         /* a file in maildrop/: 'T' first */
};

/* What the parser found, record by record. Each callback returns 0, or -1
 * to stop parsing (maildrop_parse then fails with "stopped by the reader"
 * unless the callback set the parser's error itself). Content arrives in
 * pieces of any size; NULL callbacks are skipped. */
struct maildrop_handler {
    int (*time)(void *ctx, long long sec, long usec);
    int (*sender)(void *ctx, const char *address);
    int (*recipient)(void *ctx, const char *address);
    int (*start)(void *ctx);                              /* the 'M' record */
    int (*content)(void *ctx, const void *data, size_t len);
    int (*end)(void *ctx, unsigned long long content_length);
};

struct maildrop_parser {
    enum maildrop_source source;
    unsigned long long content_limit;   /* 0 = no limit */
    /* private */
    int stage;
    size_t magic_got;
    unsigned char head[5];
    size_t head_got;
    int expect;                         /* which record may come next */
    int type;                           /* the record being read */
    uint32_t length, got;
    char field[MAILDROP_ADDRESS_MAX + 16];
    size_t recipients;
    unsigned long long content_length;
    unsigned long long offset;          /* bytes consumed so far */
    char error[200];                    /* why it failed; "" while it has not */
};

void maildrop_parser_init(struct maildrop_parser *p, enum maildrop_source source,
                          unsigned long long content_limit);
/* Consumes len bytes. Returns 0, or -1 once the input is bad (p->error says
 * why and at which offset); after -1 every call fails again. */
int maildrop_parse(struct maildrop_parser *p, const void *data, size_t len, const struct maildrop_handler *h,
                   void *ctx);
/* At the end of the input: 0 when the end record was the last thing read,
 * else -1 with p->error ("truncated ..."). */
int maildrop_parse_finish(struct maildrop_parser *p);
/* Lets a callback refuse a record with its own reason. */
void maildrop_parser_fail(struct maildrop_parser *p, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/*
 * Addresses. maildrop_address_canonical checks one envelope address the way
 * smtpd reads MAIL FROM (sender) or RCPT TO paths, with SMTPUTF8 allowed;
 * on success *out (from pool) is the canonical form, which may differ from
 * the input in quoting only. On failure returns -1 and *why is a short
 * static reason ("control character in address", "bad address syntax", ...).
 * maildrop_address_ok accepts only an address already in canonical form.
 */
int maildrop_address_canonical(const char *address, int sender, petrel_pool *pool, const char **out,
                               const char **why);
int maildrop_address_ok(const char *address, int sender, const char **why);

/*
 * Writing, through stdio: records are framed here, content is cut into
 * chunks. Every call returns 0, or -1 with errno once a write failed (the
 * error is sticky, so a caller may check only at the end).
 */
struct maildrop_writer {
    FILE *fp;
    int failed;
    unsigned char *chunk;               /* MAILDROP_CHUNK_MAX bytes */
    size_t chunk_len;
    unsigned long long content_length;
};

int maildrop_writer_init(struct maildrop_writer *w, FILE *fp);   /* writes the magic */
int maildrop_write_time(struct maildrop_writer *w, long long sec, long usec);
int maildrop_write_sender(struct maildrop_writer *w, const char *address);
int maildrop_write_recipient(struct maildrop_writer *w, const char *address);
int maildrop_write_content_start(struct maildrop_writer *w);
int maildrop_write_content(struct maildrop_writer *w, const void *data, size_t len);
/* Flushes the last chunk, writes the end record and fflush()es. */
int maildrop_write_end(struct maildrop_writer *w);
void maildrop_writer_free(struct maildrop_writer *w);   /* does not close fp */

/* A maildrop file name is a queue ID ("0-9A-Z" base-32, 19 characters). */
int maildrop_name_valid(const char *name);

#endif
