/*
 * Strict base64 decoding and encoding (see base64.h). A length that is not a multiple
 * of 4, a character outside the alphabet, '=' anywhere but in the last one
 * or two places of the last group, or a group "xx=y", is an error.
 */
#include "config.h"

#include <string.h>

#include "lib/base64.h"

static int b64_value(int c)
{
    if (c >= 'A' && c <= 'Z') return c - 'A';
    if (c >= 'a' && c <= 'z') return c - 'a' + 26;
    if (c >= '0' && c <= '9') return c - '0' + 52;
    if (c == '+') return 62;
    if (c == '/') return 63;
    return -1;
}

long base64_decode(const char *in, char *out)
{
    size_t len = strlen(in), o = 0;
    if (len % 4)
        return -1;
    for (size_t i = 0; i < len; i += 4) {
        int v[4];
        for (int k = 0; k < 4; k++) {
            v[k] = in[i + k] == '=' ? -2 : b64_value((unsigned char)in[i + k]);
            if (v[k] == -1 || (v[k] == -2 && (i + 4 != len || k < 2)))
                return -1;
        }
        if (v[2] == -2 && v[3] != -2)
            return -1;
        out[o++] = (char)(v[0] << 2 | v[1] >> 4);
        if (v[2] >= 0)
            out[o++] = (char)((v[1] & 15) << 4 | v[2] >> 2);
        if (v[3] >= 0)
            out[o++] = (char)((v[2] & 3) << 6 | v[3]);
    }
    return (long)o;
}

void base64_encode(const unsigned char *in, size_t len, char *out)
{
    static const char tab[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    char *o = out;
    for (size_t i = 0; i < len; i += 3) {
        unsigned v = (unsigned)in[i] << 16 | (i + 1 < len ? (unsigned)in[i + 1] << 8 : 0) |
                     (i + 2 < len ? in[i + 2] : 0);
        *o++ = tab[v >> 18 & 63];
        *o++ = tab[v >> 12 & 63];
        *o++ = i + 1 < len ? tab[v >> 6 & 63] : '=';
        *o++ = i + 2 < len ? tab[v & 63] : '=';
    }
    *o = '\0';
}
