/*
 * Postfix's escape(): how log lines quote bytes a client sent (a pregreet,
 * a PROXY header, a non-SMTP command). Printable ASCII stays as it is (a
 * backslash is doubled), \a \b \f \n \r \t \v are written by name, every
 * other byte as \ooo, so nothing the client sent can forge or break a line.
 */
#ifndef PETREL_LIB_ESCAPE_H
#define PETREL_LIB_ESCAPE_H

#include <stddef.h>

/* Escapes len bytes of data into out (size >= 1); stops before an escape
 * sequence that would not fit. Returns the length written (NUL excluded). */
size_t text_escape(const void *data, size_t len, char *out, size_t size);

#endif
