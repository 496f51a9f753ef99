/*
 * Client address lists for bundled modules (greylist's
 * greylist_whitelist_clients, ratelimit's ratelimit_exclude_clients, spf's
 * spf_whitelist_clients): an address or a network in CIDR notation
 * (192.0.2.0/24, 2001:db8::/32), in brackets if one likes, as Postfix's
 * lists write IPv6 ([2001:db8::1], [2001:db8::]/32), parsed once at
 * configuration time and matched against the client's address text. A
 * network with host bits set (10.1.2.3/8) is refused, as in Postfix. An
 * IPv4-mapped IPv6 address (::ffff:192.0.2.1) matches as the IPv4 address
 * it stands for: Postfix converts it before any list sees it.
 *
 * The core has its own CIDR code (core/tables/cidr.c), which the plugin API
 * does not export; a module sees only the public headers, so the modules
 * share this one. Its names are not the core's cidr_*: the fuzz targets link
 * a module's files with libpetrelcore.
 */
#ifndef PETREL_MODULES_CLIENT_NETS_H
#define PETREL_MODULES_CLIENT_NETS_H

#include <stddef.h>

#include <petrel/plugin.h>

struct client_net {
    int family;                /* AF_INET or AF_INET6 */
    unsigned char addr[16];
    int bits;                  /* the prefix length; a bare address: 32 or 128 */
};

/* client_net_parse's answer for a network with bits set past its prefix
 * ("10.1.2.3/8"), which Postfix refuses (cidr_match_parse). */
#define CLIENT_NET_HOST_BITS (-2)

/* "addr", "addr/bits", "[addr]", "[addr]/bits" or "[addr/bits]" into *out:
 * 0; CLIENT_NET_HOST_BITS with *out the network those bits cleared
 * (10.0.0.0/8: Postfix's suggestion); -1 for anything else. */
int client_net_parse(const char *text, struct client_net *out);

/* A LIST parameter's value (items as list_items_split finds them) into
 * *list and *count (pool memory): NULL, or the error phrase
 * "PARAM: \"item\" is not an address or network" for the first bad item
 * ("... is a lookup table: this list takes addresses and networks" for a
 * TYPE:NAME item, which is refused, never ignored; Postfix's "PARAM:
 * non-null host address bits in \"10.1.2.3/8\", perhaps you should use
 * \"10.0.0.0/8\" instead" for a network with host bits set). */
const char *client_nets_parse(const char *param, const char *text, petrel_pool *pool, struct client_net **list,
                              size_t *count);

/* 1 when addr (an address's text, parsed once here) is in one of the
 * count networks of list, else 0 (also for a NULL addr or text that is not
 * an address). An IPv4 address matches only IPv4 networks, an IPv6 one only
 * IPv6 networks, except that an IPv4-mapped IPv6 address (::ffff:192.0.2.1)
 * also matches IPv4 networks as the IPv4 address it stands for. */
int client_nets_match(const struct client_net *list, size_t count, const char *addr);

#endif
