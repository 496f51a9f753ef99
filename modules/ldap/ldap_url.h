/*
 * Where a referral's LDAP URL leads (ldap_url.c): pure functions over
 * libldap's URL parser, apart from the module so that the fuzz target
 * t/fuzz/fuzz_ldap_referral_url.c runs them without a server or a loop.
 */
#ifndef PETREL_MODULES_LDAP_URL_H
#define PETREL_MODULES_LDAP_URL_H

#include <stddef.h>

/* "ldaps://" + a host of at most 255 bytes + ":65535", bracketed IPv6 */
#define LDAP_SERVER_NAME_MAX 280

/* A referral's target: the server, and the search to send there. */
struct referral_target {
    char server[LDAP_SERVER_NAME_MAX];   /* "scheme://host:port", lower case */
    char *base, *filter;                 /* malloc'd */
    int scope;
};

/* The target of url, a referral met by a search of from_base, from_scope,
 * from_filter: the URL's base, scope and filter when it names them, the
 * search's otherwise (RFC 4511 4.1.10, as libldap chases). 0, or -1 with
 * *why (a URL that is not ldap:// or ldaps://, does not parse, or holds
 * control characters or an overlong host). */
int ldap_referral_target(const char *url, const char *from_base, int from_scope, const char *from_filter,
                         struct referral_target *out, const char **why);
void ldap_referral_target_free(struct referral_target *target);

/* "scheme://host:port" of an ldap:// or ldaps:// URL into buf (size
 * LDAP_SERVER_NAME_MAX); 0, or -1 (buf then ""). */
int ldap_server_name(const char *url, char *buf);

/* A trail's line for a search of base on server: "server/base", lower
 * case (malloc'd); and whether trail ("\n"-separated lines) holds line. */
char *ldap_trail_line(const char *server, const char *base);
int ldap_trail_has(const char *trail, const char *line);

#endif
