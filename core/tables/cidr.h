/*
 * CIDR networks: parsing "127.0.0.0/8", "[::1]/128", "[::1/128]", "::1/128"
 * and bare host addresses as Postfix's cidr_match does, and matching an
 * address string against one network or a list (mynetworks). Used by the
 * cidr: table type too.
 *
 * Decisions: a network with host bits set ("10.1.2.3/8") is an error that
 * suggests the right form, as in Postfix, because it is almost always a typo
 * that would otherwise match far more or less than intended. IPv4-mapped
 * IPv6 addresses (::ffff:192.0.2.1) are matched as the IPv4 address, the
 * way Postfix's smtpd presents such clients.
 */
#ifndef PETREL_TABLES_CIDR_H
#define PETREL_TABLES_CIDR_H

#include <stddef.h>

struct cidr_addr {
    int family;                 /* AF_INET or AF_INET6 */
    unsigned char bytes[16];    /* network byte order; 4 used for AF_INET */
};

struct cidr_net {
    struct cidr_addr addr;      /* host bits are zero */
    unsigned prefix_len;        /* 0..32 or 0..128 */
};

/* Parses an address ("192.0.2.1", "2001:db8::1", "[2001:db8::1]");
 * IPv4-mapped IPv6 becomes IPv4. 0, or -1 when it is not an address. */
int cidr_addr_parse(const char *text, struct cidr_addr *addr);
/* Parses a network; -1 with *error (malloc'd) naming the entry. */
int cidr_net_parse(const char *text, struct cidr_net *net, char **error);
int cidr_net_contains(const struct cidr_net *net, const struct cidr_addr *addr);
/* Writes "addr/len" into out (at least 64 bytes). */
void cidr_net_format(const struct cidr_net *net, char *out, size_t size);

struct cidr_list;

struct cidr_list *cidr_list_new(void);
/* Adds one network; -1 with *error naming the entry. */
int cidr_list_add(struct cidr_list *list, const char *entry, char **error);
/* Adds every entry of a comma and/or white space separated list
 * ("127.0.0.0/8, [::1]/128"); stops at the first bad entry with *error. */
int cidr_list_add_all(struct cidr_list *list, const char *text, char **error);
/* 1 when addr is inside one of the networks, 0 when not or when addr is
 * not an address at all. */
int cidr_list_match(const struct cidr_list *list, const char *addr);
int cidr_list_match_addr(const struct cidr_list *list, const struct cidr_addr *addr);
size_t cidr_list_count(const struct cidr_list *list);
void cidr_list_free(struct cidr_list *list);

#endif
