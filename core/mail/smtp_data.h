/*
 * Incremental reader for the SMTP DATA phase: the defence against SMTP
 * smuggling. Raw bytes go in as they arrive, split anywhere (one byte at a
 * time gives the same result as one big buffer); message content comes out
 * with CRLF line endings and dot-unstuffed. No I/O, no allocation: the
 * reader is a plain struct the session owns.
 *
 * The end of the message is ONLY <CR><LF>.<CR><LF>, where the first CRLF is
 * a real one (or the start of the data: ".\r\n" as the very first line is
 * an empty message). "\n.\n", "\n.\r\n", "\r\n.\n", "\r.\r\n" and the like
 * are content, never an end marker, whatever the policy.
 *
 * Bare LF (smtpd_forbid_bare_newline): under every policy it ends a content
 * line and is stored as CRLF, so the stored message is never ambiguous for a
 * next hop. The policies differ only in what the caller does afterwards:
 *   NORMALIZE ("normalize"/"yes", the default): accept the message.
 *   REJECT ("reject"): the reader keeps consuming up to the real end marker
 *     (so the session stays in sync) and smtp_data_bare_lf_violation() tells
 *     the caller to reply 550 5.5.2 "Error: bare <LF> received".
 *   ALLOW ("no"): accept, like NORMALIZE. Deliberately NOT Postfix's old
 *     behaviour of also ending the message at "\n.\n": that is exactly the
 *     smuggling hole, and no legitimate client depends on it.
 * Bare CR (a CR not followed by LF) becomes a space, as Postfix's
 * cleanup_replace_stray_cr_lf = yes does, and is flagged.
 * NUL bytes pass through (Postfix accepts them) and are flagged.
 * Long lines are passed through byte for byte, never split.
 *
 * BDAT chunks (RFC 3030) are raw content, without dot-stuffing or an end
 * marker, and do not go through this reader.
 */
#ifndef PETREL_MAIL_SMTP_DATA_H
#define PETREL_MAIL_SMTP_DATA_H

#include <stddef.h>

enum data_bare_lf_policy {
    DATA_BARE_LF_NORMALIZE,
    DATA_BARE_LF_REJECT,
    DATA_BARE_LF_ALLOW,
};

struct smtp_data_reader {
    /* Set by smtp_data_init. */
    enum data_bare_lf_policy policy;
    unsigned long long size_limit;      /* 0 = no limit */

    /* Private parser state. */
    int state;
    int line_after_crlf;                /* the current line began after a real CRLF */
    int in_headers;
    unsigned long long line_len;        /* bytes of the current line so far */
    unsigned long long emitted;         /* bytes handed to the emit callback */

    /* Results, valid at any time and final once done is set. */
    int done;                           /* end marker consumed */
    int saw_bare_lf;
    int saw_bare_cr;
    int saw_nul;
    int oversize;                       /* content exceeded size_limit: exactly the first
                                           size_limit bytes were emitted, then no more */
    int emit_failed;                    /* the callback returned non-zero: emission stopped */
    unsigned long long total_bytes;     /* content size, CRLF included, emitted or not */
    unsigned long long header_bytes;    /* bytes before the first empty line, CRLFs included */
    unsigned long long lines;           /* content lines */
    unsigned long long longest_line;    /* longest line, without its CRLF */
};

void smtp_data_init(struct smtp_data_reader *reader, enum data_bare_lf_policy policy,
                    unsigned long long size_limit);

/*
 * Consumes up to len bytes. Content goes out through emit (zero or more
 * calls, pointing into in or at static strings; the data is only valid
 * during the call). Once content passes size_limit (the first size_limit
 * bytes are emitted), or emit returns non-zero, nothing more is emitted but
 * input is still consumed up to the end marker. Returns the number of bytes consumed; sets *done (and
 * reader->done) when the end marker was consumed, and leaves the bytes after
 * it, which belong to the next command, unconsumed. Returns 0 once done.
 */
size_t smtp_data_feed(struct smtp_data_reader *reader, const char *in, size_t len,
                      int (*emit)(void *ctx, const char *data, size_t n), void *ctx, int *done);

/* 1 when the policy is REJECT and a bare LF was seen: reply 550 5.5.2. */
int smtp_data_bare_lf_violation(const struct smtp_data_reader *reader);

#endif
