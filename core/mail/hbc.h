/*
 * Header and body checks (Postfix's header_body_checks and the action
 * language of header_checks(5)): the four table lists of one side
 * (header_checks, mime_header_checks, nested_header_checks, body_checks
 * for the receiving side; smtp_header_checks, ... for the SMTP client),
 * the lookup of one logical header or one body line, and the parsing of
 * the action a table returns. What an action does is the caller's: smtpd
 * applies the whole set to the message being received, the SMTP client
 * the restricted set Postfix allows there.
 *
 * A header is looked up as Postfix's cleanup sees it: the logical header,
 * its lines joined with "\n" (not unfolded), "Name:" first. A body line is
 * looked up as it is stored, one line (or one line_length_limit piece of a
 * longer line) at a time. Nothing is decoded. An empty key never matches
 * (Postfix's rule). A key is a C string: a NUL byte ends it, as in Postfix.
 */
#ifndef PETREL_MAIL_HBC_H
#define PETREL_MAIL_HBC_H

#include <stddef.h>

#include <petrel/pool.h>

#include "mail/mime.h"

struct cfg;
struct tbl;
struct tbl_registry;

/* Which list a line is checked against. */
enum hbc_list { HBC_HEADER, HBC_MIME_HEADER, HBC_NESTED_HEADER, HBC_BODY, HBC_NLISTS };

struct hbc_tables {
    const char *param[HBC_NLISTS];     /* "header_checks", ... (for messages) */
    struct tbl **tables[HBC_NLISTS];
    size_t n[HBC_NLISTS];
    int shared[HBC_NLISTS];            /* the same tables as an earlier list: not closed twice */
    struct tbl_registry *reg;          /* where they were opened (for hbc_wait) */
};

/* Opens the tables of the four parameters named in params (header,
 * mime-header, nested-header, body order; NULL: a list not used). 0, or -1 with *error
 * (malloc'd) "param: why". */
int hbc_open(struct hbc_tables *h, const struct cfg *cfg, struct tbl_registry *reg,
             const char *const params[HBC_NLISTS], char **error);
void hbc_close(struct hbc_tables *h);
/* 1 when list has at least one table; hbc_any: any list has. */
int hbc_has(const struct hbc_tables *h, enum hbc_list list);
int hbc_any(const struct hbc_tables *h);
int hbc_any_header(const struct hbc_tables *h);
/* 1 when a table of any list is remote (pgsql:, socketmap:, ...). */
int hbc_any_remote(const struct hbc_tables *h);

/* The list a header is checked against: a MIME header anywhere goes to
 * mime_header_checks; other headers by where they are (primary:
 * header_checks, an attached message: nested_header_checks, a multipart
 * part: mime_header_checks). */
enum hbc_list hbc_header_list(enum mime_class cls, int is_mime);

/* Looks key up in list's tables in order: 1 found (*value copied into
 * pool), 0 not found (or an empty key), -1 a table failed, -2 a remote
 * table has no answer yet (only inside a lookup scope, tables/table.h:
 * fetch, then look up again). */
int hbc_lookup(struct hbc_tables *h, enum hbc_list list, const char *key, petrel_pool *pool, const char **value);

/* Lookups that wait for remote tables (tables/table.h, "Remote tables";
 * doc/architecture.md, "Tables that wait"), for a caller that can suspend
 * its work: hbc_wait_lookup answers as hbc_lookup, from the wait's memo,
 * or -2 when a remote table has no answer yet (the key is recorded); the
 * caller then has hbc_wait_fetch ask every recorded key at once and looks
 * up again when done(arg) is called. The memo holds the answers of at
 * most `lines` lines (each may ask every table of its list); the caller
 * resets it (hbc_wait_reset) once those lines have their verdicts. */
struct hbc_wait;
struct hbc_wait *hbc_wait_new(struct hbc_tables *h, size_t lines);
int hbc_wait_lookup(struct hbc_wait *w, enum hbc_list list, const char *key, petrel_pool *pool,
                    const char **value);
/* 0: every answer came at once (look up again now; done is not called),
 * 1: done(arg) is called from the loop when they all have. */
int hbc_wait_fetch(struct hbc_wait *w, void (*done)(void *arg), void *arg);
/* Forgets the answers and cancels lookups in flight (done is not called). */
void hbc_wait_reset(struct hbc_wait *w);
void hbc_wait_free(struct hbc_wait *w);

enum hbc_command {
    HBC_DUNNO,       /* also OK */
    HBC_REJECT, HBC_WARN, HBC_INFO, HBC_HOLD, HBC_DISCARD, HBC_FILTER, HBC_PASS, HBC_PREPEND,
    HBC_REPLACE, HBC_REDIRECT, HBC_BCC, HBC_STRIP, HBC_IGNORE,
    HBC_UNKNOWN,     /* not a command of header_checks(5) */
};

struct hbc_action {
    enum hbc_command command;
    const char *word;       /* the command as written, for messages (word_len bytes) */
    size_t word_len;
    const char *text;       /* what follows it, leading white space skipped ("" when none) */
};

/* Splits a table's result into its command (case-insensitive) and text. */
void hbc_parse_action(const char *value, struct hbc_action *out);
const char *hbc_command_name(enum hbc_command c);

/* Postfix's dsn_prepend: text when it starts with an RFC 3463 code
 * (x.y.z, class 2, 4 or 5), else def_dsn and text; the code goes to
 * *dsn (pool) and the rest to *rest. */
void hbc_dsn_split(const char *def_dsn, const char *text, petrel_pool *pool, const char **dsn, const char **rest);

/* A REJECT's text as the client gets it: a table's $1 may copy a folded
 * header, line breaks included, into it, and a reply must stay one line of
 * at most 512 octets (RFC 5321 4.5.3.1.5): control characters and 8-bit
 * bytes become '?' (Postfix's printable()), and the text is cut at
 * HBC_REPLY_TEXT_MAX bytes. The copy comes from pool. */
#define HBC_REPLY_TEXT_MAX 400
const char *hbc_reply_text(petrel_pool *pool, const char *text);

#endif
