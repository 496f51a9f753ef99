/*
 * RFC 4515 (filter) and RFC 4514 (DN) escaping of key pieces; see
 * ldap_escape.h.
 */
#include <string.h>

#include "ldap_escape.h"

static void put_escaped(struct table_buffer *out, const char *s, size_t n, const char *special)
{
    static const char hex[] = "0123456789ABCDEF";
    size_t start = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c >= 0x20 && c != 0x7f && strchr(special, c) == NULL)
            continue;
        table_buffer_put(out, s + start, i - start);
        char esc[3] = { '\\', hex[c >> 4], hex[c & 15] };
        table_buffer_put(out, esc, 3);
        start = i + 1;
    }
    table_buffer_put(out, s + start, n - start);
}

void ldap_escape_filter(struct table_buffer *out, const char *s, size_t n, void *unused)
{
    (void)unused;
    put_escaped(out, s, n, "*()\\");
}

void ldap_escape_dn(struct table_buffer *out, const char *s, size_t n, void *unused)
{
    (void)unused;
    put_escaped(out, s, n, " \"#+,;<=>\\");
}
