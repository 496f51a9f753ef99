/*
 * Asynchronous DNS on a role's event loop, through c-ares. Every lookup of
 * the process goes to `dns_resolver` (host:port) when it is set, else to the
 * system's resolvers (/etc/resolv.conf). Answers arrive as callbacks on the
 * loop; nothing blocks.
 *
 * A lookup whose owner goes away can be cancelled: its callback is then never
 * called (the query itself finishes inside c-ares and is dropped).
 */
#ifndef PETREL_LIB_DNS_H
#define PETREL_LIB_DNS_H

#include <stddef.h>

struct event_base;
struct dns_resolver;
struct dns_query;

enum dns_type { DNS_A, DNS_AAAA, DNS_MX, DNS_TXT, DNS_PTR, DNS_NS };

enum dns_status {
    DNS_OK = 0,         /* answers present */
    DNS_NXDOMAIN,       /* the name does not exist */
    DNS_NODATA,         /* the name exists, no record of that type */
    DNS_TEMPFAIL,       /* SERVFAIL, timeout, refused: try again later */
    DNS_BADNAME,        /* the query itself was malformed */
};

struct dns_answer {
    enum dns_status status;
    size_t count;
    const char **values;      /* addresses as text, host names (MX, PTR, NS), TXT strings (joined) */
    const int *preferences;   /* MX only, parallel to values; sorted by preference */
    int ttl;                  /* seconds the answer may be kept: the lowest TTL of the answer
                                 records, or for NXDOMAIN/NODATA the TTL of the SOA record in
                                 the authority section (the negative caching time, as Postfix's
                                 dnsblog reports it); -1 when the reply says nothing */
};

typedef void dns_callback(const struct dns_answer *answer, void *arg);

/* server: "host:port", "host" or NULL/"" for the system's resolvers.
 * Returns NULL with *error (malloc'd) on failure. */
struct dns_resolver *dns_resolver_create(struct event_base *base, const char *server, char **error);
void dns_resolver_free(struct dns_resolver *r);
/* For DNS_PTR, name is an IPv4 or IPv6 address in text form. */
struct dns_query *dns_lookup(struct dns_resolver *r, enum dns_type type, const char *name, dns_callback *cb,
                             void *arg);
void dns_cancel(struct dns_query *q);
/* Told of every query that went to a server (the metrics), when it ends:
 * its type, how it ended ("ok", "nxdomain", "nodata", "timeout",
 * "servfail", "refused" (the servers refused it or could not be reached),
 * "error") and how long it took, retries included. A
 * query the resolver refuses before sending (a bad name) is told as
 * "badname" with no time. Cancelled queries are told too (they finish). */
typedef void dns_observe_fn(void *arg, enum dns_type type, const char *result, double seconds);
void dns_resolver_observe(struct dns_resolver *r, dns_observe_fn *fn, void *arg);
/* "a", "aaaa", "mx", "txt", "ptr", "ns". */
const char *dns_type_name(enum dns_type type);
const char *dns_status_text(enum dns_status status);

#endif
