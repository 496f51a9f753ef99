/*
 * The log line a bundled module's client of a daemon (clamd, spamd, a
 * milter) hands its owner's log callback: "what who: " and the message,
 * in the caller's buffer. The clients keep their own log level and
 * callback types (their interfaces predate this file), so each keeps a
 * short variadic wrapper around this one formatter.
 */
#ifndef PETREL_MODULES_LOG_LINE_H
#define PETREL_MODULES_LOG_LINE_H

#include <stdarg.h>
#include <stddef.h>

/* "what who: " then fmt's text into text (size bytes, NUL-terminated,
 * truncated at the end); a prefix that does not fit whole is left out
 * rather than cut, and the message takes the whole buffer. */
__attribute__((format(printf, 5, 0)))
void log_line_format(char *text, size_t size, const char *what, const char *who, const char *fmt, va_list ap);

#endif
