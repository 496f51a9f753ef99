/*
 * The dnsbl module's pure parts, kept apart from the session logic so that
 * they can be read (and fuzzed) alone: Postfix's reply filter syntax
 * (d.d.d.d where each d is a number or [n;n..m]), the weighted site list of
 * dnsbl_sites (postscreen's domain=filter*weight), DNS query names
 * (reversed IPv4 octets, IPv6 nibbles, right-hand-side domains), and the
 * reply template with its $rbl_* names (default_rbl_reply).
 *
 * Nothing here allocates but from the pool it is given, and nothing here
 * talks to the network.
 */
#ifndef PETREL_MODULE_DNSBL_H
#define PETREL_MODULE_DNSBL_H

#include <stddef.h>

#include <petrel/plugin.h>

/* A reply filter: one 256-bit set per octet of the A record. */
struct dnsbl_filter {
    unsigned char octet[4][32];
};

/* Parses "127.0.0.[2..11;20]"; NULL, or an error phrase (pool text). */
const char *dnsbl_filter_parse(const char *text, struct dnsbl_filter *out, petrel_pool *pool);
/* 1 when the dotted-quad answer matches (an answer that is not an IPv4
 * address never matches). */
int dnsbl_filter_match(const struct dnsbl_filter *f, const char *answer);

/* "zone[=filter]": the zone (pool text) and the filter (NULL without one). */
struct dnsbl_list {
    const char *spec;                  /* as written, the rbl_reply_maps key */
    const char *zone;
    const struct dnsbl_filter *filter;
    int weight;                        /* dnsbl_sites only (default 1) */
};
/* Parses a restriction's argument (with_weight 0) or a dnsbl_sites item
 * (with_weight 1). NULL, or an error phrase. */
const char *dnsbl_list_parse(const char *text, int with_weight, struct dnsbl_list *out, petrel_pool *pool);

/* The query for an address ("4.3.2.1.zone", 32 nibbles for IPv6), or NULL
 * for an address that is not one. */
char *dnsbl_address_query(const char *addr, const char *zone, petrel_pool *pool);
/* The query for a domain or the domain of an address ("example.com.zone"),
 * or NULL when Postfix would not look it up (empty, an address literal, a
 * numeric last label, not a valid host name). */
char *dnsbl_domain_query(const char *what, const char *zone, petrel_pool *pool);

/* The values a reply template may name: $rbl_code, $rbl_domain,
 * $rbl_reason (and $rbl_txt), $rbl_what, $rbl_class, and the client and
 * envelope facts Postfix's smtpd offers. NULL members expand empty. */
struct dnsbl_reply_facts {
    int code;
    const char *domain, *reason, *what, *class_name;
    const char *client_address, *client_name, *reverse_client_name, *helo_name;
    const char *sender, *recipient;
};
/* Checks a template's syntax and names: NULL, or an error phrase. */
const char *dnsbl_template_check(const char *template_text, petrel_pool *pool);
/* Expands a template (checked first). NULL on a syntax error. */
char *dnsbl_template_expand(const char *template_text, const struct dnsbl_reply_facts *facts, petrel_pool *pool);

/* Splits an expanded reply the way Postfix does: "CODE[ D.S.N] text".
 * Returns 0 with the parts (the enhanced code's class set to the reply's,
 * 4.7.1 by default), or -1 when it does not start with a 4xx/5xx code and
 * a space. */
int dnsbl_reply_split(const char *reply, int *code, char *enhanced, size_t enhanced_size, const char **text);

/* The answer cache across sessions (dnsbl_cache.c): answers kept for
 * their DNS TTL (capped at 1 h), at most 8192 of them, per process. */
struct dnsbl_cache;
struct dnsbl_cache *dnsbl_cache_new(void);
void dnsbl_cache_free(struct dnsbl_cache *c);
/* 1 with the answer (valid until the next put) when a fresh one is kept. */
int dnsbl_cache_get(struct dnsbl_cache *c, petrel_dns_type type, const char *query, petrel_dns_status *status,
                    const char *const **values, size_t *count);
/* Keeps answer a of (type, query) for ttl seconds (nothing for ttl <= 0 or a failure). */
void dnsbl_cache_put(struct dnsbl_cache *c, petrel_dns_type type, const char *query, const petrel_dns_answer *a,
                     long ttl);

#endif
