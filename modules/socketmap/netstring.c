/*
 * The bounded, incremental netstring reader and the encoder (netstring.h).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "netstring.h"

void netstring_reader_init(struct netstring_reader *r, size_t limit)
{
    memset(r, 0, sizeof(*r));
    r->state = NS_LENGTH;
    r->limit = limit;
}

void netstring_reader_free(struct netstring_reader *r)
{
    free(r->data);
    r->data = NULL;
}

static size_t fail(struct netstring_reader *r, const char *why, size_t used)
{
    r->state = NS_ERROR;
    r->error = why;
    return used;
}

size_t netstring_feed(struct netstring_reader *r, const char *bytes, size_t len)
{
    size_t i = 0;
    while (i < len) {
        char c = bytes[i];
        switch (r->state) {
        case NS_LENGTH:
            i++;
            if (c >= '0' && c <= '9') {
                if (r->digits > 0 && r->length == 0)
                    return fail(r, "netstring length with a leading zero", i);
                if (++r->digits > 10)
                    return fail(r, "netstring length too long", i);
                r->length = r->length * 10 + (size_t)(c - '0');
                if (r->length > r->limit)
                    return fail(r, "netstring longer than the size limit", i);
            } else if (c == ':' && r->digits > 0) {
                r->data = malloc(r->length + 1);
                if (r->data == NULL)
                    return fail(r, "out of memory", i);
                r->have = 0;
                r->state = r->length ? NS_DATA : NS_COMMA;
            } else {
                return fail(r, "netstring length expected", i);
            }
            break;
        case NS_DATA: {
            size_t want = r->length - r->have;
            size_t take = len - i < want ? len - i : want;
            memcpy(r->data + r->have, bytes + i, take);
            r->have += take;
            i += take;
            if (r->have == r->length)
                r->state = NS_COMMA;
            break;
        }
        case NS_COMMA:
            i++;
            if (c != ',')
                return fail(r, "netstring without its closing comma", i);
            r->data[r->length] = '\0';
            r->state = NS_DONE;
            return i;
        default:
            return i;
        }
    }
    return i;
}

int netstring_has_nul(const struct netstring_reader *r)
{
    return r->state == NS_DONE && memchr(r->data, '\0', r->length) != NULL;
}

char *netstring_encode(const char *payload, size_t len, size_t *out_len)
{
    char head[32];
    int n = snprintf(head, sizeof(head), "%zu:", len);
    char *out = malloc((size_t)n + len + 1);
    if (out == NULL)
        return NULL;
    memcpy(out, head, (size_t)n);
    memcpy(out + n, payload, len);
    out[(size_t)n + len] = ',';
    *out_len = (size_t)n + len + 1;
    return out;
}
