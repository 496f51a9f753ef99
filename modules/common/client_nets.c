/*
 * Client address lists of bundled modules (see client_nets.h). A list is
 * parsed once at configuration time; a lookup parses the client's address
 * text once (client_nets_match) and compares its bytes with each network.
 * A network written with host bits set ("10.1.2.3/8") is refused as
 * Postfix refuses it (cidr_match_parse), with Postfix's suggestion: taking
 * it as 10.0.0.0/8 would be guessing what was meant.
 */
#include "client_nets.h"

#include "list_items.h"

#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The client's address in the two forms a network may be compared with:
 * IPv4 (an IPv4 address, or the one an IPv4-mapped IPv6 address stands
 * for) and IPv6 (an IPv6 address as written, mapped ones included). */
struct client_addr {
    int have_v4;
    int have_v6;
    unsigned char v4[4];
    unsigned char v6[16];
};

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

/* The mask of a byte of which the first bits bits (1 or more) are in the prefix. */
static unsigned char byte_mask(int bits)
{
    return bits >= 8 ? 0xff : (unsigned char)(0xff << (8 - bits));
}

/* 1 when the first bits bits of a and b are the same. */
static int prefix_equal(const unsigned char *a, const unsigned char *b, int bits)
{
    for (int i = 0; bits > 0; i++, bits -= 8)
        if ((a[i] & byte_mask(bits)) != (b[i] & byte_mask(bits)))
            return 0;
    return 1;
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
        unsigned char masked[16] = { 0 };
        for (int i = 0, left = out->bits; left > 0; i++, left -= 8)
            masked[i] = out->addr[i] & byte_mask(left);
        if (memcmp(masked, out->addr, out->family == AF_INET ? 4 : 16) != 0) {
            memcpy(out->addr, masked, sizeof(masked));
            return CLIENT_NET_HOST_BITS;
        }
    }
    return 0;
}

/* The client's address text into *out once for the whole list; neither
 * form is there for text that is not an address. */
static void client_addr_parse(const char *text, struct client_addr *out)
{
    memset(out, 0, sizeof(*out));
    if (inet_pton(AF_INET, text, out->v4) == 1) {
        out->have_v4 = 1;
    } else if (inet_pton(AF_INET6, text, out->v6) == 1) {
        out->have_v6 = 1;
        /* An IPv4-mapped IPv6 address (::ffff:192.0.2.1) is that IPv4
         * client: Postfix turns it into the IPv4 form before any list sees
         * it, as the core does for the client address (connect.c). */
        static const unsigned char mapped[12] = { 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff };
        if (memcmp(out->v6, mapped, sizeof(mapped)) == 0) {
            memcpy(out->v4, out->v6 + 12, 4);
            out->have_v4 = 1;
        }
    }
}

static int client_net_contains(const struct client_net *c, const struct client_addr *a)
{
    if (c->family == AF_INET)
        return a->have_v4 && prefix_equal(a->v4, c->addr, c->bits);
    return a->have_v6 && prefix_equal(a->v6, c->addr, c->bits);
}

/* Postfix's words for a network with host bits set (cidr_match_parse),
 * the item shown without its brackets as Postfix shows it; net is the
 * network client_net_parse found with those bits cleared. */
static const char *host_bits_error(const char *param, const char *item, const struct client_net *net,
                                   petrel_pool *pool)
{
    char plain[80];
    if (*item == '[' && strip_brackets(item, plain, sizeof(plain)) == 0)
        item = plain;
    char suggestion[INET6_ADDRSTRLEN];
    if (inet_ntop(net->family, net->addr, suggestion, sizeof(suggestion)) == NULL)
        snprintf(suggestion, sizeof(suggestion), "?");
    return petrel_pool_printf(pool, "%s: non-null host address bits in \"%s\", perhaps you should use \"%s/%d\" "
                              "instead", param, item, suggestion, net->bits);
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
        int rc = client_net_parse(items[i], &nets[i]);
        if (rc == CLIENT_NET_HOST_BITS)
            return host_bits_error(param, items[i], &nets[i], pool);
        if (rc != 0)
            return petrel_pool_printf(pool, "%s: \"%s\" is not an address or network", param, items[i]);
    }
    *list = nets;
    *count = n;
    return NULL;
}

int client_nets_match(const struct client_net *list, size_t count, const char *addr)
{
    if (addr == NULL || count == 0)
        return 0;
    struct client_addr a;
    client_addr_parse(addr, &a);
    for (size_t i = 0; i < count; i++)
        if (client_net_contains(&list[i], &a))
            return 1;
    return 0;
}
