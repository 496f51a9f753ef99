/*
 * Address resolution: Postfix's trivial-rewrite resolve, the (transport,
 * next hop) an address of each class goes to, without the alias expansion
 * and mailbox lookups that come after it.
 *
 *   local            local_transport     next hop: the domain (the default
 *                                        "local:$myhostname" names $myhostname)
 *   virtual alias    error               "5.1.1 User unknown in virtual alias table":
 *                                        resolve does not expand aliases
 *   virtual mailbox  virtual_transport   the domain
 *   relay            relay_transport     the domain
 *   default          default_transport   sender_dependent_relayhost_maps,
 *                                        relayhost, else the domain
 *
 * A "transport:nexthop" value names its own next hop; transport_maps
 * overrides both (all classes but virtual alias). The queue manager's
 * router (core/qmgr/route.c) decides where mail goes with this code after
 * its rewriting and alias expansion, and the SMTP server computes
 * Postfix's {mail_host} {mail_mailer} {rcpt_host} {rcpt_mailer} milter
 * macros with mail_resolve_address, so the two cannot disagree.
 *
 * Known difference kept from the router: Postfix lets relayhost override
 * the next hop of relay_domains mail too; Petrel's router (and so this
 * code) sends it to the domain (or relay_transport's next hop).
 */
#ifndef PETREL_MAIL_RESOLVE_H
#define PETREL_MAIL_RESOLVE_H

#include <petrel/pool.h>

#include "mail/addr_class.h"
#include "mail/maps.h"

struct cfg;
struct cfg_bind_table;
struct mail_addr;
struct tbl_registry;

struct mail_resolve {
    const char *local_transport, *virtual_transport, *relay_transport, *default_transport, *relayhost;
    const char *delimiter;                /* recipient_delimiter, for sender_dependent_relayhost_maps keys */
    int show_table;                       /* show_user_unknown_table_name */
    struct mail_maps transport, sender_relay;
};

/* Reads the parameters and opens transport_maps and
 * sender_dependent_relayhost_maps (flags: mail_maps_open's). 0, or -1 with
 * a line per problem appended to *error; close with mail_resolve_close,
 * also after a failure. */
int mail_resolve_open(struct mail_resolve *r, const struct cfg *cfg, struct tbl_registry *reg, int flags,
                      char **error);
void mail_resolve_close(struct mail_resolve *r);
/* The parameters mail_resolve_open reads (config/bind.h). */
extern const struct cfg_bind_table mail_resolve_bind_table;

/* transport_maps: the full address, then the domain and its parents
 * (".example.com"), then "*". 1 found (*value), 0 not, -1 a table failed. */
int mail_resolve_transport_map(struct mail_resolve *r, const struct mail_addr *a, petrel_pool *pool,
                               const char **value);
/* Mail for another host: relay_domains and the default class, whose next
 * hop relayhost (or the sender's) overrides. */
static inline int mail_class_off_host(enum mail_class cls)
{
    return cls == MAIL_CLASS_RELAY || cls == MAIL_CLASS_DEFAULT;
}

/* The next hop of off-host mail (mail_class_off_host) from sender:
 * sender_dependent_relayhost_maps (not for <>), else relayhost; NULL when
 * neither names one. 0, or -1 when a table failed. */
int mail_resolve_relayhost(struct mail_resolve *r, const char *sender, petrel_pool *pool, const char **relayhost);
/* The "transport[:nexthop]" value of class cls (not virtual alias or
 * error) and the next hop it has when it names none: the domain, or
 * relayhost (given) for off-host classes, as Postfix's resolve.c. */
const char *mail_resolve_class_spec(const struct mail_resolve *r, enum mail_class cls, const char *domain,
                                    const char *relayhost, const char **default_nexthop);
/* "transport:nexthop" -> the transport name (from pool) and the next hop,
 * default_nexthop when the value names none. */
const char *mail_resolve_split(const char *spec, const char *default_nexthop, petrel_pool *pool,
                               const char **nexthop);

/* Postfix's resolve of one address as a whole (its smtpd_resolve_addr,
 * for the milter macros): the transport name and the next hop. An address
 * without a domain is local (as Postfix, which appends $myhostname), "<>"
 * too. Every lookup is synchronous: when a domain list, transport_maps or
 * sender_dependent_relayhost_maps has a table that would have to be waited
 * for (a remote table, tables/table.h), the answer is -1 as for a table
 * that failed; the caller says nothing rather than something that may be
 * wrong. 0 when resolved. */
int mail_resolve_address(struct mail_resolve *r, const struct mail_domains *d, const char *sender,
                         const char *address, petrel_pool *pool, const char **transport, const char **nexthop);

#endif
