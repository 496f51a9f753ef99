/*
 * Postfix's escape() for log lines (see escape.h).
 */
#include "config.h"

#include <stdio.h>
#include <string.h>

#include "lib/escape.h"

size_t text_escape(const void *data, size_t len, char *out, size_t size)
{
    const unsigned char *p = data;
    size_t o = 0;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = p[i];
        char piece[5];
        size_t n;
        if (c >= 0x20 && c < 0x7f) {
            piece[0] = (char)c;
            piece[1] = (char)c;
            n = c == '\\' ? 2 : 1;
        } else {
            const char *named = c == '\a' ? "\\a" : c == '\b' ? "\\b" : c == '\f' ? "\\f" : c == '\n' ? "\\n"
                              : c == '\r' ? "\\r" : c == '\t' ? "\\t" : c == '\v' ? "\\v" : NULL;
            if (named) {
                memcpy(piece, named, 2);
                n = 2;
            } else {
                snprintf(piece, sizeof(piece), "\\%03o", c);
                n = 4;
            }
        }
        if (o + n + 1 > size)
            break;
        memcpy(out + o, piece, n);
        o += n;
    }
    if (size)
        out[o] = '\0';
    return o;
}
