/*
 * Pure parsers for SMTP server command lines (RFC 5321 with the ESMTP
 * extensions SIZE, 8BITMIME, SMTPUTF8, DSN, CHUNKING and AUTH=): no I/O, no
 * global state, every loop bounded by its input. They face hostile input,
 * so they are strict where the RFC grammar is unambiguous and lenient only
 * where Postfix is lenient and the leniency is harmless (space after
 * "FROM:", missing angle brackets, dots in the local part).
 *
 * Errors come back as the exact reply the server should send, worded like
 * Postfix's smtpd, so the caller never invents reply texts for syntax.
 *
 * In core/mail because more than smtpd speaks the server side: smtpd's
 * sessions, petrel-sendmail -bs, and the maildrop file checks.
 */
#ifndef PETREL_MAIL_SMTP_PARSE_H
#define PETREL_MAIL_SMTP_PARSE_H

#include <stddef.h>

#include <petrel/pool.h>

#include "mail/smtp_syntax.h"   /* hostnames, xtext, limits: shared with the SMTP client */

enum smtp_verb {
    SMTP_VERB_UNKNOWN,
    SMTP_VERB_HELO,
    SMTP_VERB_EHLO,
    SMTP_VERB_MAIL,
    SMTP_VERB_RCPT,
    SMTP_VERB_DATA,
    SMTP_VERB_BDAT,
    SMTP_VERB_RSET,
    SMTP_VERB_NOOP,
    SMTP_VERB_QUIT,
    SMTP_VERB_VRFY,
    SMTP_VERB_EXPN,
    SMTP_VERB_HELP,
    SMTP_VERB_STARTTLS,
    SMTP_VERB_AUTH,
    SMTP_VERB_ETRN,
    SMTP_VERB_XFORWARD,
};

struct smtp_command {
    enum smtp_verb verb;
    /* Points into the line after the verb and its separating blanks; "" when
     * none. Trailing blanks are kept; args_len counts up to the line end. */
    const char *args;
    size_t args_len;
};

/* Upper-case verb name for logs ("MAIL"), "UNKNOWN" for SMTP_VERB_UNKNOWN. */
const char *smtp_verb_name(enum smtp_verb verb);

/*
 * Splits one command line, given WITHOUT its line ending; line[len] must be
 * '\0' (a struct buf guarantees it) so that args is a C string. The verb is
 * the text before the first SP/HTAB, matched case-insensitively; anything
 * else is SMTP_VERB_UNKNOWN (reply "502 5.5.2 Error: command not
 * recognized"). Returns -1 when the line holds a NUL byte (reply "500 5.5.2
 * Error: bad syntax"): C string parsing past it would see a different
 * command than a byte-oriented peer. out->verb is UNKNOWN then.
 */
int smtp_parse_command(const char *line, size_t len, struct smtp_command *out);

/* An error reply. enhanced and text are static strings, or (for replies that
 * quote the client, e.g. "Unsupported option: FOO") live in the pool passed
 * to the parser. The wire form is "code enhanced text". */
struct smtp_reply_err {
    int code;
    const char *enhanced;
    const char *text;
};

enum smtp_body_type {
    SMTP_BODY_UNSET = 0,
    SMTP_BODY_7BIT,
    SMTP_BODY_8BITMIME,
    SMTP_BODY_BINARYMIME, /* never accepted: BINARYMIME is not offered */
};

enum smtp_dsn_ret { SMTP_DSN_RET_UNSET = 0, SMTP_DSN_RET_FULL = 1, SMTP_DSN_RET_HDRS = 2 };

#define SMTP_NOTIFY_SUCCESS 1u
#define SMTP_NOTIFY_FAILURE 2u
#define SMTP_NOTIFY_DELAY   4u
#define SMTP_NOTIFY_NEVER   8u

struct smtp_mail_args {
    char *address;          /* "local@domain", route dropped; "" for <> */
    int null_sender;
    long long size;         /* SIZE=, -1 when unset */
    int body;               /* enum smtp_body_type */
    int smtputf8;           /* SMTPUTF8 parameter given */
    int ret;                /* enum smtp_dsn_ret */
    char *envid;            /* decoded ENVID, NULL when unset */
    char *auth;             /* decoded AUTH= ("<>" kept as is), NULL when unset */
    char *params;           /* the ESMTP parameters as sent, one space between them; "" when none */
};

struct smtp_rcpt_args {
    char *address;          /* "local@domain" or "postmaster" */
    unsigned notify;        /* SMTP_NOTIFY_* mask, 0 when unset */
    char *orcpt;            /* "type;decoded-address", NULL when unset */
    char *params;           /* the ESMTP parameters as sent, one space between them; "" when none */
};

struct smtp_parse_opts {
    int smtputf8_enabled;   /* SMTPUTF8 is offered in EHLO */
    /* RCPT only: the MAIL FROM of this transaction carried SMTPUTF8, so
     * UTF-8 addresses are allowed. */
    int transaction_smtputf8;
    /* Postfix-style 8-bit leniency: bytes >= 0x80 in the local part without
     * SMTPUTF8 (not checked as UTF-8). Off by default. */
    int allow_8bit_localpart_without_smtputf8;
    int dsn_enabled;        /* DSN is offered: RET ENVID NOTIFY ORCPT */
    /* Postfix accepts "<user>" without a domain (its restrictions deal with
     * it later). 0 (default): a domain is required, as RFC 5321 says;
     * RCPT TO:<postmaster> is accepted either way (RFC 5321 4.5.1). */
    int allow_missing_domain;
};


/*
 * args: the text after the verb, e.g. "FROM:<a@b> SIZE=100 BODY=8BITMIME".
 * opts may be NULL (everything off). Returns 0, or -1 with *err set to the
 * precise reply. Strings in *out are allocated from pool.
 */
int smtp_parse_mail(const char *args, const struct smtp_parse_opts *opts, petrel_pool *pool,
                    struct smtp_mail_args *out, struct smtp_reply_err *err);
int smtp_parse_rcpt(const char *args, const struct smtp_parse_opts *opts, petrel_pool *pool,
                    struct smtp_rcpt_args *out, struct smtp_reply_err *err);

/* One ESMTP parameter that a module (a milter's CHGFROM or ADDRCPT_PAR)
 * sets on a changed sender (mail: RET=, ENVID=) or an added recipient
 * (rcpt: NOTIFY=, ORCPT=), checked as the client's would be; the other
 * one is NULL. Returns 0 with the field set, or -1 when the parameter is
 * malformed or not one of those (Postfix ignores it with a warning). */
int smtp_parse_edit_param(const char *token, petrel_pool *pool, struct smtp_mail_args *mail,
                          struct smtp_rcpt_args *rcpt);

/* "BDAT <size> [LAST]" arguments (RFC 3030). Only the syntax is checked:
 * the caller compares the size with message_size_limit. */
int smtp_parse_bdat(const char *args, unsigned long long *chunk_size, int *last,
                    struct smtp_reply_err *err);

/* The HELO/EHLO argument as Petrel keeps it (for Received:, the log, the
 * queue file and restrictions), Postfix's printable() + neuter(): white
 * space runs between words become one '?'; control bytes, DEL and (without
 * utf8, or when not valid UTF-8) bytes >= 0x80 become '?'; so do the
 * characters that would confuse a Received: header or a log parser:
 * space < > ( ) \ " ; @. The result is never longer than the argument and
 * holds no CR, LF or NUL. Leading and trailing white space is dropped. */
char *smtp_helo_printable(const char *arg, size_t len, int utf8, petrel_pool *pool);

#endif
