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

struct cfg;
struct cfg_bind_table;

enum mail_class {
    MAIL_CLASS_LOCAL,
    MAIL_CLASS_VIRTUAL_ALIAS,
    MAIL_CLASS_VIRTUAL_MAILBOX,
    MAIL_CLASS_RELAY,
    MAIL_CLASS_DEFAULT,
};

struct mail_domains {
    const char *const *mydestination;
    const char *const *virtual_alias_domains;
    const char *const *virtual_mailbox_domains;
    const char *const *relay_domains;
};

/* The domain lists of cfg (they live as long as cfg). */
void mail_domains_init(struct mail_domains *d, const struct cfg *cfg);
/* The parameters mail_domains_init binds (config/bind.h). */
extern const struct cfg_bind_table mail_domains_bind_table;

/* 1 when domain is in the list (exact names, case-insensitive). */
int mail_domain_listed(const char *const *list, const char *domain);
/* As above, and a name also matches its subdomains (relay_domains:
 * Postfix's parent_domain_matches_subdomains). */
int mail_domain_listed_or_parent(const char *const *list, const char *domain);

/* Logs Postfix's warning for each name listed in two of the lists: it
 * works (the first class wins) but is almost always a mistake. */
void mail_domains_warn_overlaps(const struct mail_domains *d);

int mail_domain_is_local(const struct mail_domains *d, const char *domain);
/* Not the default class: a final destination (local, virtual alias, virtual
 * mailbox) or a domain we relay for; what reject_unauth_destination lets in. */
int mail_domain_is_ours(const struct mail_domains *d, const char *domain);
enum mail_class mail_domain_class(const struct mail_domains *d, const char *domain);

#endif
