/*
 * Reading the replies of an SMTP or LMTP server (the client side of
 * RFC 5321 4.2): lines "DDD-text" until "DDD text", framed from a libevent
 * input buffer. Split out of the SMTP client so that it can be tested and
 * fuzzed on its own (t/fuzz/fuzz_smtp_reply.c); it does no I/O itself.
 *
 * Everything is bounded whatever the server sends: a line is cut at
 * SMTP_REPLY_LINE_MAX bytes (the rest of it is skipped), a reply keeps at
 * most SMTP_REPLY_TEXT_MAX bytes of text, and a reply of more than
 * SMTP_REPLY_LINES_MAX lines is malformed. In what smtp_reply_read returns,
 * a TAB has become a space and any other control character (a NUL, a CR
 * before the line end, ESC) '?', so a reply text is printable wherever it
 * goes.
 */
#ifndef PETREL_DELIVER_SMTP_REPLY_H
#define PETREL_DELIVER_SMTP_REPLY_H

#include <stddef.h>

#include "lib/buf.h"

struct evbuffer;

#define SMTP_REPLY_LINE_MAX 2048   /* one reply line (RFC 5321 says 512; servers exceed it) */
#define SMTP_REPLY_TEXT_MAX 400    /* joined text of a multi-line reply: leaves room in the 512-byte
                                      result for "host X said: ... (in reply to RCPT TO command)" */
#define SMTP_REPLY_LINES_MAX 500   /* more lines than this in one reply: protocol error */
#define SMTP_REPLY_CHALLENGE_MAX 12288   /* a SASL challenge line ("334 base64") while the reader's sasl
                                            is set: RFC 4954 4 lets AUTH lines be this long */

/* EHLO keywords (struct smtp_reply.caps). */
#define SMTP_CAP_PIPELINING 1u
#define SMTP_CAP_SIZE 2u
#define SMTP_CAP_8BITMIME 4u
#define SMTP_CAP_SMTPUTF8 8u
#define SMTP_CAP_DSN 16u
#define SMTP_CAP_STARTTLS 32u
#define SMTP_CAP_AUTH 64u

struct smtp_reply {
    int code;                           /* 100..599, of the first line */
    char text[SMTP_REPLY_TEXT_MAX];     /* "550 5.1.1 first line second line" */
    size_t len;                         /* strlen(text) */
    char dsn[16];                       /* enhanced code of the first line, or "" */
    char first_word[256];               /* first word after the code (greeting/EHLO host name) */
    unsigned caps;                      /* EHLO keywords of the continuation lines (ehlo mode) */
    unsigned long long size_limit;      /* SIZE keyword's value, 0 when none */
    char auth[256];                     /* the mechanisms of the AUTH (and old AUTH=) keyword lines,
                                           space-separated, cut at a whole name */
    unsigned xforward;                  /* the attributes an XFORWARD keyword line names
                                           (XFORWARD_F_* of mail/xforward.h) */
};

struct smtp_reply_reader {
    struct smtp_reply reply;  /* the reply being read; complete when a call returns 1 */
    int ehlo;                 /* set by the caller while an EHLO/LHLO reply is awaited: continuation
                                 lines are keywords (caps), not text */
    int nlines;               /* lines of the current reply so far */
    int skipping;             /* discarding the rest of an overlong line */
    int sasl;                 /* set by the caller during SMTP AUTH: a 334 line may be
                                 SMTP_REPLY_CHALLENGE_MAX bytes and its text is kept whole */
    struct buf challenge;     /* the text after "334 " of the last one-line 334 reply read with
                                 sasl set (empty otherwise); never cut: see challenge_cut */
    int challenge_cut;        /* that line was longer than SMTP_REPLY_CHALLENGE_MAX */
};

/* Reads lines from in until one reply is complete (returns 1, the reply is
 * in r->reply), the buffer holds no complete line (0) or a line is not a
 * reply line (-1; the reader is then in no defined state: drop the
 * connection). Consumes only what it used: call again for the next reply. */
int smtp_reply_read(struct smtp_reply_reader *r, struct evbuffer *in);

/* Adds one line given without its line end (at most SMTP_REPLY_LINE_MAX
 * bytes, NUL-terminated at line[len]): 1 when it completes the reply, 0 when
 * more lines follow, -1 when malformed. */
int smtp_reply_line(struct smtp_reply_reader *r, const char *line, size_t len);

/* Frees what the reader allocated (the challenge buffer). */
void smtp_reply_reader_free(struct smtp_reply_reader *r);

/* The DSN code of a reply: its enhanced code when its class agrees with the
 * reply code, else X.0.0 (X = 2, 4 or 5; 4 for anything else). */
const char *smtp_reply_dsn(const struct smtp_reply *r, char out[16]);

#endif
