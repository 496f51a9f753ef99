/*
 * Address-form lookups: which keys an address is looked up under in an
 * address map (virtual_alias_maps, virtual_mailbox_maps, the recipient
 * maps...), in Postfix's order (mail_addr_find):
 *
 *   user+ext@domain   MAIL_FIND_FULL
 *   user@domain       MAIL_FIND_NOEXT      (when there is an extension)
 *   user+ext, user    MAIL_FIND_LOCALPART  (the caller sets it only for a
 *                                           local domain)
 *   @domain           MAIL_FIND_AT_DOMAIN  (the catch-all)
 *
 * The router and the SMTP server share this code so that an address the
 * router delivers is an address the server accepts: the same split of the
 * extension (recipient_delimiter) and the same keys.
 */
#ifndef PETREL_MAIL_ADDR_FIND_H
#define PETREL_MAIL_ADDR_FIND_H

#include <petrel/pool.h>

struct mail_maps;

struct mail_addr {
    const char *local;      /* without extension */
    const char *extension;  /* or NULL */
    const char *domain;     /* "" when none */
    const char *full_local; /* with extension */
};

/* Splits address at its last '@' and the local part at the first character
 * of delimiter (recipient_delimiter; several characters are several
 * delimiters). "postmaster" and a local part that starts with a delimiter
 * keep their extension. Strings come from pool. */
void mail_addr_split(const char *address, const char *delimiter, petrel_pool *pool, struct mail_addr *out);

#define MAIL_FIND_FULL 1u
#define MAIL_FIND_NOEXT 2u
#define MAIL_FIND_LOCALPART 4u
#define MAIL_FIND_AT_DOMAIN 8u
/* What the router uses for virtual_alias_maps, virtual_mailbox_maps and
 * the canonical maps. */
#define MAIL_FIND_ADDRESS (MAIL_FIND_FULL | MAIL_FIND_NOEXT | MAIL_FIND_AT_DOMAIN)

/* Looks a up in m with the keys strategy asks for, in the order above.
 * 1 found (*value from pool), 0 not found, -1 a table failed (the search
 * stops there: a later key must not answer for an earlier one). */
int mail_addr_find(struct mail_maps *m, const struct mail_addr *a, unsigned strategy, petrel_pool *pool,
                   const char **value);

#endif
