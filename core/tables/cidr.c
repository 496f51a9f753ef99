/*
 * CIDR parsing and matching (see cidr.h). Parsing is bounded: entries are
 * copied into a fixed buffer (longer text cannot be an address anyway) and
 * the mask must be at most three digits.
 */
#include "config.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "lib/xalloc.h"
#include "tables/cidr.h"
#include "tables/table_impl.h"

/* Longest textual form we accept: an IPv6 address with an embedded IPv4
 * part is 45 characters; brackets, a '/' and a 3-digit mask add 6. */
#define CIDR_TEXT_MAX 64

static const unsigned char v4mapped_prefix[12] = { 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff };

static int parse_bare(const char *text, struct cidr_addr *addr)
{
    memset(addr, 0, sizeof(*addr));
    if (strchr(text, ':')) {
        if (inet_pton(AF_INET6, text, addr->bytes) != 1)
            return -1;
        addr->family = AF_INET6;
    } else {
        if (inet_pton(AF_INET, text, addr->bytes) != 1)
            return -1;
        addr->family = AF_INET;
    }
    return 0;
}

int cidr_addr_parse(const char *text, struct cidr_addr *addr)
{
    char copy[CIDR_TEXT_MAX];
    size_t len = strnlen(text, sizeof(copy));
    if (len >= sizeof(copy))
        return -1;
    memcpy(copy, text, len + 1);
    char *p = copy;
    if (*p == '[') {
        if (len < 2 || p[len - 1] != ']')
            return -1;
        p[len - 1] = '\0';
        p++;
    }
    if (parse_bare(p, addr) != 0)
        return -1;
    if (addr->family == AF_INET6 && memcmp(addr->bytes, v4mapped_prefix, 12) == 0) {
        memmove(addr->bytes, addr->bytes + 12, 4);
        memset(addr->bytes + 4, 0, 12);
        addr->family = AF_INET;
    }
    return 0;
}

static unsigned addr_bits(int family)
{
    return family == AF_INET ? 32 : 128;
}

static void apply_mask(unsigned char *bytes, unsigned nbytes, unsigned prefix_len)
{
    for (unsigned i = 0; i < nbytes; i++) {
        unsigned bits = prefix_len > i * 8 ? prefix_len - i * 8 : 0;
        if (bits < 8)
            bytes[i] &= (unsigned char)(0xff00u >> bits);
    }
}

int cidr_net_parse(const char *text, struct cidr_net *net, char **error)
{
    char copy[CIDR_TEXT_MAX];
    size_t len = strnlen(text, sizeof(copy));
    if (len >= sizeof(copy)) {
        *error = tbl_strprintf("bad address pattern: \"%.*s...\" (too long)", 40, text);
        return -1;
    }
    memcpy(copy, text, len + 1);
    memset(net, 0, sizeof(*net));

    /* Strip [] from [addr/len] or [addr]/len; find where /mask may start. */
    char *pattern = copy, *mask_search = copy;
    if (*pattern == '[') {
        pattern++;
        char *close = strchr(pattern, ']');
        if (close == NULL) {
            *error = tbl_strprintf("missing ']' character after \"[%s\"", pattern);
            return -1;
        }
        *close = '\0';
        mask_search = close + 1;
        if (*mask_search != '/') {
            if (*mask_search != '\0') {
                *error = tbl_strprintf("garbage after \"[%s]\"", pattern);
                return -1;
            }
            mask_search = pattern;
        }
    }
    char *slash = strchr(mask_search, '/');
    if (slash == NULL) {
        if (parse_bare(pattern, &net->addr) != 0) {
            *error = tbl_strprintf("bad address pattern: \"%s\"", pattern);
            return -1;
        }
        net->prefix_len = addr_bits(net->addr.family);
        return 0;
    }
    *slash = '\0';
    const char *mask = slash + 1;
    size_t mlen = strlen(mask);
    int digits_ok = mlen > 0 && mlen <= 3 && strspn(mask, "0123456789") == mlen;
    unsigned prefix = digits_ok ? (unsigned)atoi(mask) : 0;
    if (!digits_ok || parse_bare(pattern, &net->addr) != 0
        || prefix > addr_bits(net->addr.family)) {
        *error = tbl_strprintf("bad net/mask pattern: \"%s/%s\"", pattern, mask);
        return -1;
    }
    net->prefix_len = prefix;
    unsigned nbytes = net->addr.family == AF_INET ? 4 : 16;
    unsigned char masked[16];
    memcpy(masked, net->addr.bytes, sizeof(masked));
    apply_mask(masked, nbytes, prefix);
    if (memcmp(masked, net->addr.bytes, nbytes) != 0) {
        char suggestion[INET6_ADDRSTRLEN];
        inet_ntop(net->addr.family, masked, suggestion, sizeof(suggestion));
        *error = tbl_strprintf("non-null host address bits in \"%s/%s\", "
                               "perhaps you should use \"%s/%u\" instead",
                               pattern, mask, suggestion, prefix);
        return -1;
    }
    /* A network written in IPv4-mapped form (::ffff:192.0.2.0/120) stays
     * an IPv6 network, as in Postfix (cidr_match_parse): clients are
     * compared in their IPv4 form (cidr_addr_parse), so it matches none.
     * Taking it as 192.0.2.0/24 would widen mynetworks beyond what
     * Postfix trusts with the same line. */
    return 0;
}

int cidr_net_contains(const struct cidr_net *net, const struct cidr_addr *addr)
{
    if (net->addr.family != addr->family)
        return 0;
    unsigned nbytes = addr->family == AF_INET ? 4 : 16;
    unsigned char masked[16];
    memcpy(masked, addr->bytes, sizeof(masked));
    apply_mask(masked, nbytes, net->prefix_len);
    return memcmp(masked, net->addr.bytes, nbytes) == 0;
}

void cidr_net_format(const struct cidr_net *net, char *out, size_t size)
{
    char text[INET6_ADDRSTRLEN];
    inet_ntop(net->addr.family, net->addr.bytes, text, sizeof(text));
    snprintf(out, size, "%s/%u", text, net->prefix_len);
}

struct cidr_list {
    struct cidr_net *nets;
    size_t count;
    size_t cap;
};

struct cidr_list *cidr_list_new(void)
{
    return xcalloc(1, sizeof(struct cidr_list));
}

int cidr_list_add(struct cidr_list *list, const char *entry, char **error)
{
    struct cidr_net net;
    if (cidr_net_parse(entry, &net, error) != 0)
        return -1;
    if (list->count == list->cap) {
        list->cap = list->cap ? list->cap * 2 : 8;
        list->nets = xrealloc(list->nets, list->cap * sizeof(*list->nets));
    }
    list->nets[list->count++] = net;
    return 0;
}

int cidr_list_add_all(struct cidr_list *list, const char *text, char **error)
{
    static const char seps[] = ", \t\r\n";
    const char *p = text;
    for (;;) {
        p += strspn(p, seps);
        if (*p == '\0')
            return 0;
        size_t len = strcspn(p, seps);
        char *entry = xstrndup(p, len);
        int r = cidr_list_add(list, entry, error);
        free(entry);
        if (r != 0)
            return -1;
        p += len;
    }
}

int cidr_list_match_addr(const struct cidr_list *list, const struct cidr_addr *addr)
{
    for (size_t i = 0; i < list->count; i++)
        if (cidr_net_contains(&list->nets[i], addr))
            return 1;
    return 0;
}

int cidr_list_match(const struct cidr_list *list, const char *text)
{
    struct cidr_addr addr;
    if (cidr_addr_parse(text, &addr) != 0)
        return 0;
    return cidr_list_match_addr(list, &addr);
}

size_t cidr_list_count(const struct cidr_list *list)
{
    return list->count;
}

void cidr_list_free(struct cidr_list *list)
{
    if (list == NULL)
        return;
    free(list->nets);
    free(list);
}
