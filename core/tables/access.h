/*
 * Postfix access(5) lookup order over any table, for check_*_access and the
 * other maps that look up addresses, domains and clients the same way.
 *
 * Fixed-string tables get the full key, then the partial keys (parent
 * domains, user@, network prefixes); pattern tables (regexp:, pcre:, cidr:)
 * get only the whole string, as in Postfix's smtpd_check.c. The first
 * TBL_FOUND or TBL_ERROR ends the search. Case folding is the table's
 * (open access maps with TBL_FLAG_FOLD_CASE, as Postfix does).
 */
#ifndef PETREL_TABLES_ACCESS_H
#define PETREL_TABLES_ACCESS_H

#include "tables/table.h"

/* Flags for the _ex variants. Default (0): parent domains are tried as
 * "example.com" (parent_domain_matches_subdomains includes the map, which
 * Postfix's default does for smtpd_access_maps). With TBL_ACCESS_DOT_PARENT
 * they are tried as ".example.com" (the map is not in that list). */
#define TBL_ACCESS_DOT_PARENT 1

/* user+ext@domain: "user+ext@domain", "user@domain", "domain" and its parent
 * domains, "user+ext@", "user@". recipient_delimiter (NULL or "" for none)
 * is a set of delimiter characters as in Postfix >= 2.11; postmaster,
 * mailer-daemon, double-bounce, owner-* and *-request (with '-') are never
 * split. An address without '@' tries the address, then "local@". The null
 * address "" finds nothing: callers look up smtpd_null_access_lookup_key
 * ("<>") themselves. */
int tbl_access_lookup_address(struct tbl *t, const char *address, const char *recipient_delimiter,
                              const char **value);
int tbl_access_lookup_address_ex(struct tbl *t, const char *address,
                                 const char *recipient_delimiter, unsigned flags,
                                 const char **value);

/* foo.example.com: "foo.example.com", "example.com", "com". */
int tbl_access_lookup_domain(struct tbl *t, const char *domain, const char **value);
int tbl_access_lookup_domain_ex(struct tbl *t, const char *domain, unsigned flags,
                                const char **value);

/* The host name and its parents (Postfix looks up "unknown" like any name;
 * hostname may be NULL to skip it), then the address and its prefixes:
 * "1.2.3.4", "1.2.3", "1.2", "1"; IPv6 in compressed lower-case form,
 * shortened at each ':' from the right ("2001:db8::1", "2001:db8:",
 * "2001:db8", "2001"). IPv4-mapped IPv6 is looked up as IPv4; brackets are
 * removed. */
int tbl_access_lookup_client(struct tbl *t, const char *hostname, const char *addr,
                             const char **value);
int tbl_access_lookup_client_ex(struct tbl *t, const char *hostname, const char *addr,
                                unsigned flags, const char **value);

#endif
