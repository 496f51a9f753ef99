/*
 * The clients' log line (see log_line.h).
 */
#include "log_line.h"

#include <stdio.h>

void log_line_format(char *text, size_t size, const char *what, const char *who, const char *fmt, va_list ap)
{
    int n = snprintf(text, size, "%s %s: ", what, who);
    if (n < 0 || (size_t)n >= size)
        n = 0;
    vsnprintf(text + n, size - (size_t)n, fmt, ap);
}
