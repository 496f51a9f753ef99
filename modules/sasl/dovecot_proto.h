/*
 * The lines a Dovecot auth server sends its clients (auth-client protocol
 * 1.x), parsed without a connection so that the fuzz target
 * t/fuzz/fuzz_dovecot_auth.c and dovecot.c share one parser.
 *
 * Decision: strict. Numbers (VERSION, SPID, CUID, request ids) are plain
 * decimal: no sign, no space, no leading zero run past the value's own
 * digits, no overflow; a mechanism name is RFC 4422's (1-20 of A-Z 0-9 -
 * _); a line with a NUL byte is malformed. A malformed line is an error
 * the caller turns into a closed connection (a temporary failure for every
 * exchange on it), never a guess.
 */
#ifndef PETREL_MODULES_SASL_DOVECOT_PROTO_H
#define PETREL_MODULES_SASL_DOVECOT_PROTO_H

#include <stddef.h>

enum dc_reply_kind {
    DC_REPLY_OTHER,      /* a command we do not use (COOKIE, ...): ignored */
    DC_REPLY_VERSION,
    DC_REPLY_MECH,
    DC_REPLY_SPID,
    DC_REPLY_CUID,
    DC_REPLY_DONE,
    DC_REPLY_CONT,
    DC_REPLY_OK,
    DC_REPLY_FAIL,
};

struct dc_reply {
    enum dc_reply_kind kind;
    unsigned long major, minor;   /* VERSION */
    const char *mech;             /* MECH: the name, upper-cased */
    unsigned properties;          /* MECH: PETREL_SASL_* of its flags */
    int private_mech;             /* MECH: "private" (never offered) */
    unsigned long number;         /* SPID: the server's pid; CUID: our connection's id */
    unsigned id;                  /* CONT, OK, FAIL: the request id */
    const char *data;             /* CONT: the base64 challenge ("" when none) */
    const char *user, *reason;    /* OK, FAIL: unescaped, or NULL */
    int temp;                     /* FAIL: "temp" */
};

/* Parses one line (len bytes without its LF; changed in place: the
 * fields of *out point into it). 0, or -1 with *why naming what is wrong. */
int dovecot_parse_line(char *line, size_t len, struct dc_reply *out, const char **why);

/* A plain decimal number of at most max: 0 with *out, or -1. */
int dovecot_decimal(const char *s, unsigned long max, unsigned long *out);

#endif
