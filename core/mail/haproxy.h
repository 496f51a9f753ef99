/*
 * The server side of HAProxy's PROXY protocol (versions 1 and 2), as
 * Postfix's postscreen and smtpd read it with *_upstream_proxy_protocol =
 * haproxy: a load balancer in front of us opens each connection with a
 * header that says who the real client is.
 *
 * The header is untrusted input, so the parser is pure, bounded and
 * incremental: it is handed the bytes received so far (never more than
 * HAPROXY_HEADER_MAX) and says "complete, N bytes", "valid so far, read
 * more" or "bad, because ...". Reading exactly the header and never a byte
 * of the SMTP conversation behind it is the caller's business (haproxy_read.c
 * peeks, then consumes only what this parser claims).
 *
 * Decisions, as Postfix: version 1 "UNKNOWN" is refused (it would let a
 * connection sidestep address-based access control); version 2 LOCAL (a
 * health check) means "use the connection's own addresses"; TLVs are
 * skipped; IPv4-mapped IPv6 addresses become IPv4; addresses are printed
 * in canonical form whatever the proxy sent; error texts are Postfix's
 * (haproxy_srvr.c), so logs read the same.
 */
#ifndef PETREL_MAIL_HAPROXY_H
#define PETREL_MAIL_HAPROXY_H

#include <stddef.h>
#include <sys/types.h>

/* Postfix's HAPROXY_HEADER_MAX_LEN: the default IPv4 TCP MSS less headers. */
#define HAPROXY_HEADER_MAX 536

/* Which address families the proxy may announce (inet_protocols). */
#define HAPROXY_FAMILY_IPV4 1
#define HAPROXY_FAMILY_IPV6 2

struct haproxy_endpoints {
    int local;                 /* v2 LOCAL: not proxied; the fields below are empty */
    char client_addr[64];
    char client_port[8];
    char server_addr[64];
    char server_port[8];
};

/* Parses the first len bytes of a connection (at most HAPROXY_HEADER_MAX
 * are looked at). Returns the header's length when it is complete and
 * valid (out filled), 0 when the bytes are a valid beginning of a header
 * and more are needed, -1 with *error (static text) when they cannot be.
 * families: HAPROXY_FAMILY_* allowed. */
ssize_t haproxy_parse(const unsigned char *buf, size_t len, int families, struct haproxy_endpoints *out,
                      const char **error);

#endif
