/*
 * postscreen's parsing of what a client sends before it is handed to
 * smtpd (psc_smtpd.c): the command line framing with its bare-newline and
 * length tests, the command words, Postfix's is_header for the non-SMTP
 * command test, the MAIL/RCPT address it logs, and the printable form of
 * a command name. Pure functions, out of the session so that the fuzz
 * target t/fuzz/fuzz_psc_command.c reaches them.
 */
#ifndef PETREL_SMTPD_PSC_PARSE_H
#define PETREL_SMTPD_PSC_PARSE_H

#include <stddef.h>

#include "lib/buf.h"

/* The framing state between bytes (struct psc_session's read_state). */
enum { PSC_READ_ANY, PSC_READ_CR, PSC_READ_CRLF };

/* What one more byte did to the line being read. */
enum psc_line_event {
    PSC_LINE_MORE,        /* the line goes on */
    PSC_LINE_CRLF,        /* the line ended with CRLF (cmd holds it without) */
    PSC_LINE_BARE_LF,     /* the line ended with a bare LF (cmd holds it without) */
    PSC_LINE_TOO_LONG,    /* cmd already held limit bytes: the byte was not added */
};

/* Adds ch to the command line in cmd (at most limit bytes); *state is
 * the framing state, PSC_READ_ANY at the start of a line. */
enum psc_line_event psc_line_byte(struct buf *cmd, int *state, unsigned char ch, size_t limit);

/* The next word (separated by spaces) of the NUL-terminated text at
 * *cursor, NUL-terminated in place, or NULL when there is none. */
char *psc_next_token(char **cursor);

/* Postfix's is_header: a mail header name followed by ':'. */
int psc_is_header(const char *word);

/* The address of a MAIL FROM:/RCPT TO: argument, unquoted, as Postfix's
 * psc_extract_addr takes it (nothing is delivered: any form is taken);
 * a route is dropped. Appended to out, NUL-terminated; returns out's data. */
const char *psc_extract_addr(const char *text, struct buf *out);

/* Postfix's printable(): what is not text (or, with utf8, not valid
 * UTF-8) becomes '?', in place. */
void psc_make_printable(char *text, int utf8);

#endif
