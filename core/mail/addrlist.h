/*
 * RFC 5322 address lists, as they appear in To:, Cc:, Bcc: and their
 * Resent- forms, and in sendmail's recipient arguments: groups
 * ("team: a@x, b@y;"), comments ("(Joe)"), display names ("Joe Doe" <j@x>),
 * quoted local parts ("john doe"@x), domain literals ([192.0.2.1]) and
 * source routes (<@a,@b:u@x>, dropped).
 *
 * The parser is pure (no I/O, no global state) and bounded by its input.
 * It is as lenient as Postfix's tok822 parser where that is harmless (a
 * local part made of several words separated by spaces, as in
 * `sendmail '|cmd arg'`, is kept as one local part with single spaces;
 * a missing ';' at the end of a group), and strict where guessing would
 * send mail to the wrong place (unbalanced quotes, parentheses or angle
 * brackets, an '@' without a domain, text after '>').
 *
 * Addresses come out in internal form: the local part unquoted (quoted
 * pairs resolved), the domain as written (NULL when there is none, for the
 * caller to qualify). addrlist_quote_local gives the RFC 5321 form.
 */
#ifndef PETREL_MAIL_ADDRLIST_H
#define PETREL_MAIL_ADDRLIST_H

#include <stddef.h>

#include <petrel/pool.h>

/* found() is called once per mailbox, in order; it returns 0 to go on or
 * -1 to stop (addrlist_parse then returns -1 with *error "stopped").
 * Returns 0, or -1 with *error a static reason. Strings come from pool. */
int addrlist_parse(const char *text, size_t len, petrel_pool *pool,
                   int (*found)(void *ctx, const char *local, const char *domain), void *ctx,
                   const char **error);

/* The local part as RFC 5321 writes it: as is when it is a dot-atom (any
 * byte >= 0x80 counts as atom text, for SMTPUTF8), else a quoted string
 * with '"' and '\' escaped. The one quoting rule of Petrel: petrel-sendmail
 * uses it for its arguments and headers, smtpd's path parser for the
 * canonical form of a quoted local part in MAIL FROM and RCPT TO. */
char *addrlist_quote_local(petrel_pool *pool, const char *local);

#endif
