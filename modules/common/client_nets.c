/*
 * Client address lists of bundled modules (see client_nets.h). The address
 * text is parsed again at each match (inet_pton of a short string): the
 * lists are short and a match happens once per recipient at most.
 */
#include "client_nets.h"

#include "list_items.h"

#include <arpa/inet.h>
#include <stdlib.h>
#include <string.h>

int client_net_parse(const char *text, struct client_net *out)
{
    char buf[64];
    const char *slash = strchr(text, '/');
    size_t n = slash ? (size_t)(slash - text) : strlen(text);
    if (n == 0 || n >= sizeof(buf))
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
        char *end;
        long b = strtol(slash + 1, &end, 10);
        if (slash[1] == '\0' || *end != '\0' || b < 0 || b > out->bits)
            return -1;
        out->bits = (int)b;
    }
    return 0;
}

int client_net_match(const struct client_net *c, const char *addr)
{
    unsigned char a[16];
    if (inet_pton(c->family, addr, a) != 1)
        return 0;
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
    for (size_t i = 0; i < n; i++)
        if (client_net_parse(items[i], &nets[i]) != 0)
            return petrel_pool_printf(pool, "%s: \"%s\" is not an address or network", param, items[i]);
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
