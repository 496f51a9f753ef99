/*
 * The key=value pairs of the Received-SPF header (spf_header.h), out of
 * spf.c so that its fuzz target (t/fuzz/fuzz_spf_header.c) can feed it the
 * HELO names and senders a client on port 25 chooses.
 */
#include <stdio.h>
#include <string.h>

#include "spf_header.h"

void spf_header_append_kv(char *buf, size_t size, const char *key, const char *value)
{
    size_t o = strlen(buf);
    int atom = *value != '\0';
    for (const char *c = value; *c; c++)
        if (!((*c >= 'a' && *c <= 'z') || (*c >= 'A' && *c <= 'Z') || (*c >= '0' && *c <= '9') ||
              strchr("!#$%&'*+-/=?^_`{|}~.:", *c)))
            atom = 0;
    o += (size_t)snprintf(buf + o, o < size ? size - o : 0, " %s=%s", key, atom ? "" : "\"");
    /* Room is kept for the closing quote, the ';' and the NUL: a value cut
     * after an escaped character once left buf without its NUL. */
    if (o + 3 > size)
        return;   /* cut by snprintf, or no room to close: buf ends where snprintf ended it */
    for (const char *c = value; *c; c++) {
        unsigned char ch = (unsigned char)*c;
        if (ch < 0x20 || ch == 0x7f)
            ch = '?';
        int escape = !atom && (ch == '"' || ch == '\\');
        if (o + (size_t)escape + 1 + 3 > size)
            break;
        if (escape)
            buf[o++] = '\\';
        buf[o++] = (char)ch;
    }
    if (!atom)
        buf[o++] = '"';
    buf[o++] = ';';
    buf[o] = '\0';
}
