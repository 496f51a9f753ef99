/*
 * SMTP syntax shared by the server and the client (see smtp_syntax.c):
 * RFC 5321 limits, host names, address literals, the domain of an address,
 * UTF-8 validity and xtext.
 */
#ifndef PETREL_MAIL_SMTP_SYNTAX_H
#define PETREL_MAIL_SMTP_SYNTAX_H

#include <stddef.h>

#include <petrel/pool.h>

/* RFC 5321 4.5.3.1 limits, in octets. */
#define SMTP_LOCAL_PART_MAX 64
#define SMTP_DOMAIN_MAX     255
#define SMTP_PATH_MAX       256   /* including the angle brackets */
#define SMTP_ENVID_MAX      100   /* RFC 3461 4.4, encoded form */
#define SMTP_ORCPT_MAX      500   /* RFC 3461 4.2, encoded form */

/* xtext (RFC 3461 4). Decoding accepts lower-case hex leniently and fails
 * (-1) on a malformed "+XX", on characters outside 33..126, on '=' and on
 * an encoded NUL. Encoding always produces upper-case hex. */
int smtp_xtext_decode(const char *in, petrel_pool *pool, char **out);
char *smtp_xtext_encode(const char *in, petrel_pool *pool);

/* Postfix valid_hostname(): labels of [A-Za-z0-9-], no leading or trailing
 * '-', label <= 63, total <= 255, no empty label (so no trailing dot), and
 * the last label not all-numeric. Returns 1 when valid. */
int smtp_valid_hostname(const char *name);
/* "[1.2.3.4]" or "[IPv6:...]" per RFC 5321 4.1.3; 1 when valid. */
int smtp_valid_address_literal(const char *s);
/* A valid hostname with at least one dot (reject_non_fqdn_*); 1 when so. */
int smtp_is_fqdn(const char *name);
/* As smtp_valid_hostname, but bytes >= 0x80 count as letters (the U-labels
 * of an SMTPUTF8 domain); the caller checks that the name is UTF-8. */
int smtp_valid_hostname_8bit(const char *name);

/* Strict UTF-8 (RFC 3629): no overlong forms, no surrogates, <= U+10FFFF. */
int smtp_valid_utf8(const unsigned char *s, size_t len);

/* A TCP port as a next hop or listener may name it: a number 1..65535, or
 * a service name, looked up first in Postfix's known_tcp_ports (lmtp=24,
 * smtp=25, smtps=submissions=465, submission=587), then in services(5).
 * 0, or -1 when it is neither. */
int smtp_port_parse(const char *text, unsigned *port);

/* Checks a next hop as the SMTP (lmtp 0) or LMTP client (lmtp 1) parses it:
 * "domain", "domain:port", "[host]", "[host]:port", "[IPv6:addr]:port",
 * LMTP's "unix:/path" and "inet:host:port", where a port may be a service
 * name. 0, or -1 with *why (static text) saying what is wrong. */
int smtp_nexthop_check(const char *nexthop, int lmtp, const char **why);

/* Sets *domain to the text after the last '@' outside a quoted local part
 * and returns 1; returns 0 with *domain = NULL when there is none. */
int smtp_address_domain(const char *address, const char **domain);

#endif
