/*
 * Client address lists of bundled modules (see client_nets.h). The address
 * text is parsed again at each match (inet_pton of a short string): the
 * lists are short and a match happens once per recipient at most.
 */
#include "client_nets.h"

#include "list_items.h"

#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Postfix's list syntax allows brackets: [addr], [addr]/bits or
 * [addr/bits] (cidr_match_parse; its lists write IPv6 that way, and IPv4
 * may have them too). Copies text without them into buf (size bytes):
 * 0, or -1 for a bracket out of place or a text too long. */
static int strip_brackets(const char *text, char *buf, size_t size)
{
    const char *close = strchr(text + 1, ']');
    if (close == NULL || (close[1] != '\0' && close[1] != '/'))
        return -1;
    if (close[1] == '/' && memchr(text, '/', (size_t)(close - text)) != NULL)
        return -1;   /* [addr/bits]/bits */
    int n = snprintf(buf, size, "%.*s%s", (int)(close - text - 1), text + 1, close + 1);
    return n < 0 || (size_t)n >= size ? -1 : 0;
}

int client_net_parse(const char *text, struct client_net *out)
{
    char plain[80];
    if (*text == '[') {
        if (strip_brackets(text, plain, sizeof(plain)) != 0)
            return -1;
        text = plain;
    }
    char buf[64];
    const char *slash = strchr(text, '/');
    size_t n = slash ? (size_t)(slash - text) : strlen(text);
    if (n == 0 || n >= sizeof(buf) || memchr(text, '[', n) || memchr(text, ']', n))
        return -1;
    memcpy(buf, text, n);
    buf[n] = '\0';
    memset(out, 0, sizeof(*out));
    if (inet_pton(AF_INET, buf, out->addr) == 1) {
        out->family = AF_INET;
        out->bits = 32;
    } else if (inet_pton(AF_INET6, buf, out->addr) == 1) {
        out->family = AF_INET6;
        out->bits = 128;
    } else {
        return -1;
    }
    if (slash) {
        /* digits only (Postfix's alldig): strtol alone would take "+8" */
        char *end;
        long b = strtol(slash + 1, &end, 10);
        if (slash[1] < '0' || slash[1] > '9' || *end != '\0' || b > out->bits)
            return -1;
        out->bits = (int)b;
    }
    return 0;
}

int client_net_match(const struct client_net *c, const char *addr)
{
    unsigned char a[16];
    if (c->family == AF_INET && inet_pton(AF_INET, addr, a) != 1) {
        /* An IPv4-mapped IPv6 address (::ffff:192.0.2.1) is that IPv4
         * client: Postfix turns it into the IPv4 form before any list sees
         * it, as the core does for the client address (connect.c). */
        unsigned char a6[16];
        static const unsigned char mapped[12] = { 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff };
        if (inet_pton(AF_INET6, addr, a6) != 1 || memcmp(a6, mapped, sizeof(mapped)) != 0)
            return 0;
        memcpy(a, a6 + 12, 4);
    } else if (c->family == AF_INET6 && inet_pton(AF_INET6, addr, a) != 1) {
        return 0;
    }
    int bits = c->bits;
    for (int i = 0; bits > 0; i++, bits -= 8) {
        unsigned char mask = bits >= 8 ? 0xff : (unsigned char)(0xff << (8 - bits));
        if ((a[i] & mask) != (c->addr[i] & mask))
            return 0;
    }
    return 1;
}

const char *client_nets_parse(const char *param, const char *text, petrel_pool *pool, struct client_net **list,
                              size_t *count)
{
    size_t n;
    const char **items = list_items_split(text, &n, pool);
    struct client_net *nets = petrel_pool_zalloc(pool, (n ? n : 1) * sizeof(*nets));
    for (size_t i = 0; i < n; i++) {
        if (list_item_is_table(items[i]))
            return petrel_pool_printf(pool, "%s: \"%s\" is a lookup table: this list takes addresses and networks",
                                      param, items[i]);
        if (client_net_parse(items[i], &nets[i]) != 0)
            return petrel_pool_printf(pool, "%s: \"%s\" is not an address or network", param, items[i]);
    }
    *list = nets;
    *count = n;
    return NULL;
}

int client_nets_match(const struct client_net *list, size_t count, const char *addr)
{
    for (size_t i = 0; addr && i < count; i++)
        if (client_net_match(&list[i], addr))
            return 1;
    return 0;
}
