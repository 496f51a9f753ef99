/*
 * The actions of Postfix's access(5) tables, parsed. The same words come
 * from check_*_access table values and from policy servers' "action="
 * replies, and they mean the same in both: one parser (here, pure, fuzzed)
 * and one evaluator (restrict_steps.c) serve tables and policy replies.
 *
 * A value is a command word and optional text: "REJECT text", "DEFER",
 * "450 4.7.1 text", "HOLD why", "PREPEND X-Header: value", ... An
 * all-numeric value means OK; a value naming a lookup table is refused
 * (Postfix: "do not specify lookup tables inside SMTPD access maps"); any
 * other value is a list of restrictions (names, restriction classes) to
 * evaluate in place, as Postfix does.
 */
#ifndef PETREL_SMTPD_ACCESS_ACTION_H
#define PETREL_SMTPD_ACCESS_ACTION_H

#include <stddef.h>

enum access_verb {
    ACCESS_DUNNO,            /* skip this table (no parent keys are tried) */
    ACCESS_OK,               /* OK, RELAY, or an all-numeric value */
    ACCESS_REJECT,           /* REJECT [dsn] [text]: $access_map_reject_code */
    ACCESS_DEFER,            /* DEFER [dsn] [text]: $access_map_defer_code */
    ACCESS_DEFER_IF_PERMIT,  /* DEFER_IF_PERMIT [dsn] [text] */
    ACCESS_DEFER_IF_REJECT,  /* DEFER_IF_REJECT [dsn] [text] */
    ACCESS_CODE,             /* 4NN/5NN [dsn] text (421 and 521 also disconnect) */
    ACCESS_HOLD,             /* HOLD [text] */
    ACCESS_DISCARD,          /* DISCARD [text] */
    ACCESS_FILTER,           /* FILTER transport:destination */
    ACCESS_REDIRECT,         /* REDIRECT user@domain */
    ACCESS_BCC,              /* BCC user@domain */
    ACCESS_PREPEND,          /* PREPEND name: value */
    ACCESS_WARN,             /* WARN [text]: log only */
    ACCESS_INFO,             /* INFO [text]: log only */
    ACCESS_TABLE_IN_VALUE,   /* names a lookup table: a configuration error */
    ACCESS_RESTRICTIONS,     /* a list of restrictions to evaluate */
};

struct access_action {
    enum access_verb verb;
    const char *word;        /* the command word as written (not terminated) */
    size_t word_len;
    const char *text;        /* what follows the word, leading white space skipped */
    int code;                /* ACCESS_CODE: the 3-digit reply code */
    char dsn[12];            /* REJECT, DEFER, DEFER_IF_*, CODE: the enhanced status code
                                given at the start of text, else the default */
    const char *reason;      /* those verbs: text after the enhanced code ("" when none) */
};

/* Parses value (a NUL-terminated table or policy result). Never fails:
 * anything that is not an action is ACCESS_RESTRICTIONS. */
void access_action_parse(const char *value, struct access_action *a);

/* Postfix's dsn_valid(): the length of the RFC 3463 code "D.DDD.DDD" at the
 * start of text (followed by the end or white space), or 0. */
size_t access_dsn_valid(const char *text);

/* Postfix's smtpd_dsn_fix(): an address status (X.1.Y) is turned into the
 * sender's or the recipient's form, or X.0.0 for what is not an address.
 * reply_class is "Sender address", "Recipient address", "Client host", ...
 * Writes the result (at most 11 characters) to out. */
void access_dsn_fix(const char *dsn, const char *reply_class, char out[12]);

/* A header line "Name: value" as PREPEND needs it (Postfix's is_header()). */
int access_is_header(const char *text);

#endif
