/*
 * Unit tests of the log line the clamd, spamd and milter clients hand
 * their owner (modules/common/log_line.c): the prefix, truncation, and a
 * prefix too long for the buffer.
 */
#include <stdarg.h>
#include <string.h>

#include "../tap.h"
#include "log_line.h"

__attribute__((format(printf, 5, 6)))
static const char *line(char *text, size_t size, const char *what, const char *who, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    log_line_format(text, size, what, who, fmt, ap);
    va_end(ap);
    return text;
}

int main(void)
{
    char text[32];
    is_str(line(text, sizeof text, "clamd", "10.0.0.1:3310", "connect: %s", "refused"),
           "clamd 10.0.0.1:3310: connect: r", "the prefix, then the message, cut at the buffer's end");
    is_str(line(text, sizeof text, "spamd", "/run/spamd", "%d bytes", 42), "spamd /run/spamd: 42 bytes",
           "a message that fits");
    is_str(line(text, sizeof text, "milter", "inet:a-very-long-host-name:1234", "timed out"), "timed out",
           "a prefix that does not fit is left out, the message kept");
    is_str(line(text, sizeof text, "milter", "inet:host-name-is-23:25", "x"), "x",
           "a prefix of the buffer's size is left out too");
    is_str(line(text, sizeof text, "milter", "inet:host-name-is-22:2", "x"), "milter inet:host-name-is-22:2: ",
           "a prefix one byte shorter is kept whole, and the message has no room");
    char one[1];
    is_str(line(one, sizeof one, "clamd", "a", "text"), "", "a buffer of one byte holds the empty string");
    return done_testing();
}
