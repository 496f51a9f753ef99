/*
 * Host name and address lists as Postfix's namadr_list reads them
 * (smtpd_authorized_xforward_hosts): a client matches by its name or its
 * address. Items, first match decides:
 *
 *   192.0.2.0/24, [2001:db8::]/32, 192.0.2.7   networks and addresses
 *   mail.example.com                             that name exactly
 *   .example.com                                 names below example.com
 *   type:table                                   the name, then the address,
 *                                                looked up as keys (found: match)
 *   !item                                        not this one (first match wins)
 *
 * "/file/name" items were replaced by the file's contents when the value
 * was read (config/). With parent_style (Postfix's
 * parent_domain_matches_subdomains names the list) "example.com" also
 * matches its subdomains. Names compare without case. A table must answer
 * at once: remote tables (mysql:, ldap:, ...) are refused when the list is
 * opened, since the callers decide synchronously.
 */
#ifndef PETREL_MAIL_NAMADR_H
#define PETREL_MAIL_NAMADR_H

struct namadr_list;
struct tbl_registry;

/* items: NULL-terminated (cfg_list). NULL with *error (malloc'd,
 * "param: problem") for a bad network, a bad name, a table that cannot be
 * opened or a remote one. */
struct namadr_list *namadr_list_open(const char *param, const char *const *items, const struct tbl_registry *reg,
                                     int parent_style, char **error);
/* 1 matches, 0 not, -1 a table failed (logged). name may be NULL or
 * "unknown" (then only addresses and tables keyed by address match). */
int namadr_list_match(const struct namadr_list *list, const char *name, const char *addr);
/* The first host or domain name item (they match only a client's name),
 * or NULL: for callers that know only the address (postscreen). */
const char *namadr_list_first_name(const struct namadr_list *list);
/* Whether the list has any item. */
int namadr_list_empty(const struct namadr_list *list);
void namadr_list_free(struct namadr_list *list);

#endif
