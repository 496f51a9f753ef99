/*
 * Address classes (Postfix's ADDRESS_CLASS_README): the recipient domain
 * decides how mail is delivered and which table says whether the user
 * exists.
 *
 *   local            mydestination (or no domain)   local_recipient_maps
 *   virtual alias    virtual_alias_domains          virtual_alias_maps only
 *   virtual mailbox  virtual_mailbox_domains        virtual_mailbox_maps
 *   relay            relay_domains (and subdomains) relay_recipient_maps
 *   default          anything else                  (not ours)
 *
 * The SMTP server (reject_unauth_destination, recipient validation) and the
 * router both classify through this code, so they cannot disagree about a
 * domain. A domain listed in several lists gets the first class in the
 * order above, as Postfix's resolver does.
 */
#ifndef PETREL_MAIL_ADDR_CLASS_H
#define PETREL_MAIL_ADDR_CLASS_H

#include <stddef.h>

struct cfg;
struct cfg_bind_table;
struct tbl;
struct tbl_registry;

enum mail_class {
    MAIL_CLASS_LOCAL,
    MAIL_CLASS_VIRTUAL_ALIAS,
    MAIL_CLASS_VIRTUAL_MAILBOX,
    MAIL_CLASS_RELAY,
    MAIL_CLASS_DEFAULT,
    MAIL_CLASS_ERROR,          /* a table of a domain list failed: try again later */
};

/*
 * One domain list as Postfix's match lists read it: names, "type:table"
 * items (the domain is looked up as a key) and "!" before an item to say
 * "not this one"; the first item that matches decides. relay_domains is a
 * domain_list (a name also matches its subdomains, and a fixed-string table
 * is asked for each parent domain too: parent_domain_matches_subdomains);
 * the others are string lists (exact names, one lookup). "/file/name"
 * items were replaced by the file's contents when the value was read.
 */
struct domain_item {
    int negate;
    const char *name;          /* lower case, or NULL for a table */
    struct tbl *table;
};
struct domain_list {
    const char *param;
    struct domain_item *items;
    size_t n;
    int parent_style;
};

struct mail_class_cache;
struct mail_domains {
    struct domain_list mydestination, virtual_alias_domains, virtual_mailbox_domains, relay_domains;
    /* The classes of the last domains asked (class_cache.h), when the
     * owner turned it on: NULL for none. Owned by this struct. */
    struct mail_class_cache *cache;
};

/* The domain lists of cfg, with their tables open. 0, or -1 with a line
 * "parameter: why" appended to *error for each table that cannot be
 * opened (unless quiet, the warnings about lists are logged too). Close
 * with mail_domains_close, also after a failure. */
int mail_domains_open(struct mail_domains *d, const struct cfg *cfg, struct tbl_registry *reg, int quiet,
                      char **error);
void mail_domains_close(struct mail_domains *d);
/* From now on keeps the classes mail_domain_class finds (not its errors,
 * nor a class found while a remote table had no answer yet) for
 * address_class_cache_ttl seconds (0: keeps nothing). For a long-lived
 * process that classifies the same domains again and again (smtpd), as
 * Postfix's resolve_clnt cache does for its smtpd. */
void mail_domains_cache(struct mail_domains *d, const struct cfg *cfg);
/* The parameters mail_domains_open reads (config/bind.h). */
extern const struct cfg_bind_table mail_domains_bind_table;

/* 1 when domain matches the list, 0 when not, -1 when a table failed
 * (logged). */
int mail_domain_list_match(const struct domain_list *list, const char *domain);

/* Logs Postfix's warning for each name listed in two of the lists: it
 * works (the first class wins) but is almost always a mistake. */
void mail_domains_warn_overlaps(const struct mail_domains *d);

/* 1 local, 0 not, -1 a table failed. */
int mail_domain_is_local(const struct mail_domains *d, const char *domain);
/* Not the default class: a final destination (local, virtual alias, virtual
 * mailbox) or a domain we relay for; what reject_unauth_destination lets in.
 * -1 when a table failed. */
int mail_domain_is_ours(const struct mail_domains *d, const char *domain);
enum mail_class mail_domain_class(const struct mail_domains *d, const char *domain);

#endif
