/*
 * A list of lookup tables named by one parameter, searched in order
 * (Postfix's MAPS): alias_maps, virtual_alias_maps, local_recipient_maps...
 *
 * A lookup answers found, not found, or error. An error is never "not
 * found": whoever asks must defer (Postfix's DICT_ERR_RETRY), because a
 * database that is down says nothing about whether a user exists.
 */
#ifndef PETREL_MAIL_MAPS_H
#define PETREL_MAIL_MAPS_H

#include <stddef.h>

#include <petrel/pool.h>

struct cfg;
struct tbl;
struct tbl_registry;

struct mail_maps {
    const char *param;      /* the parameter the tables came from, for messages */
    struct tbl **tables;
    size_t n;
};

/* Postfix's default alias_maps is hash:/etc/aliases. On a system without
 * an /etc/aliases at all (neither the source nor the compiled
 * /etc/aliases.lmdb), that default is left out with a warning (unless
 * quiet): there are no aliases to apply, so mail goes to the users
 * themselves, as an empty aliases file would have it. Any other table that
 * cannot be opened - a missing compiled file while the source exists, or a
 * table the admin set - is an error that stops the start (doc/tables.md).
 * Postfix would start and defer local mail instead. */
#define MAIL_MAPS_DEFAULT_ALIASES_OPTIONAL 1
/* No warnings: another process of the same start already gave them. */
#define MAIL_MAPS_QUIET 2

/* Opens the tables listed in parameter param (case-folded keys). Returns 0,
 * or -1 with a line "param: why" for each table that failed appended to
 * *error (malloc'd; NULL or earlier problems on entry: xappend_line). The
 * maps whose result is a mailbox path, an ID or a next hop
 * (virtual_mailbox_maps, virtual_uid_maps, virtual_gid_maps, transport_maps,
 * sender_dependent_relayhost_maps) are opened with TBL_FLAG_NO_REGSUB. */
int mail_maps_open(struct mail_maps *m, const struct cfg *cfg, struct tbl_registry *reg, const char *param,
                   int flags, char **error);
void mail_maps_close(struct mail_maps *m);

/* 1 found (*value copied into pool), 0 not found, -1 a table failed. */
int mail_maps_get(struct mail_maps *m, const char *key, petrel_pool *pool, const char **value);
/* The same for a partial key (user@domain without its extension, user,
 * @domain): pattern tables (regexp:, pcre:, an SQL query with %u or %d)
 * are skipped, as Postfix asks only fixed-string tables for those. */
int mail_maps_get_partial(struct mail_maps *m, const char *key, petrel_pool *pool, const char **value);

#endif
