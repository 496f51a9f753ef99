/*
 * Address classes (see addr_class.h).
 */
#include "config.h"

#include <stddef.h>
#include <string.h>
#include <strings.h>

#include "config/bind.h"
#include "config/cfg.h"
#include "lib/log.h"
#include "mail/addr_class.h"

static const struct cfg_bind domain_binds[] = {
    CFG_BIND("mydestination", LIST, struct mail_domains, mydestination),
    CFG_BIND("virtual_alias_domains", LIST, struct mail_domains, virtual_alias_domains),
    CFG_BIND("virtual_mailbox_domains", LIST, struct mail_domains, virtual_mailbox_domains),
    CFG_BIND("relay_domains", LIST, struct mail_domains, relay_domains),
};
const struct cfg_bind_table mail_domains_bind_table = CFG_BIND_TABLE("address classes", domain_binds);

void mail_domains_init(struct mail_domains *d, const struct cfg *cfg)
{
    cfg_bind_apply(cfg, &mail_domains_bind_table, d);
}

int mail_domain_listed(const char *const *list, const char *domain)
{
    for (; list && *list; list++)
        if (strcasecmp(*list, domain) == 0)
            return 1;
    return 0;
}

int mail_domain_listed_or_parent(const char *const *list, const char *domain)
{
    for (; list && *list; list++) {
        const char *d = **list == '.' ? *list + 1 : *list;
        size_t dl = strlen(d), nl = strlen(domain);
        if (strcasecmp(domain, d) == 0 ||
            (nl > dl && domain[nl - dl - 1] == '.' && strcasecmp(domain + nl - dl, d) == 0))
            return 1;
    }
    return 0;
}

void mail_domains_warn_overlaps(const struct mail_domains *d)
{
    static const struct { const char *name; size_t offset; } lists[] = {
        { "mydestination", offsetof(struct mail_domains, mydestination) },
        { "virtual_alias_domains", offsetof(struct mail_domains, virtual_alias_domains) },
        { "virtual_mailbox_domains", offsetof(struct mail_domains, virtual_mailbox_domains) },
        { "relay_domains", offsetof(struct mail_domains, relay_domains) },
    };
    const size_t n = sizeof(lists) / sizeof(lists[0]);
    for (size_t i = 0; i < n; i++) {
        const char *const *first = *(const char *const *const *)((const char *)d + lists[i].offset);
        for (const char *const *name = first; name && *name; name++) {
            if (strchr(*name, ':') || **name == '!' || **name == '/')
                continue;   /* tables and patterns: nothing to compare */
            for (size_t j = i + 1; j < n; j++) {
                if (i == 0 && j == n - 1)
                    continue;   /* relay_domains = $mydestination is an old default, as in Postfix */
                const char *const *later = *(const char *const *const *)((const char *)d + lists[j].offset);
                if (mail_domain_listed(later, *name))
                    msg_warn("do not list domain %s in BOTH %s and %s (it is treated as %s)", *name,
                             lists[i].name, lists[j].name, lists[i].name);
            }
        }
    }
}

int mail_domain_is_local(const struct mail_domains *d, const char *domain)
{
    return *domain == '\0' || mail_domain_listed(d->mydestination, domain);
}

int mail_domain_is_ours(const struct mail_domains *d, const char *domain)
{
    return mail_domain_class(d, domain) != MAIL_CLASS_DEFAULT;
}

enum mail_class mail_domain_class(const struct mail_domains *d, const char *domain)
{
    if (mail_domain_is_local(d, domain))
        return MAIL_CLASS_LOCAL;
    if (mail_domain_listed(d->virtual_alias_domains, domain))
        return MAIL_CLASS_VIRTUAL_ALIAS;
    if (mail_domain_listed(d->virtual_mailbox_domains, domain))
        return MAIL_CLASS_VIRTUAL_MAILBOX;
    if (mail_domain_listed_or_parent(d->relay_domains, domain))
        return MAIL_CLASS_RELAY;
    return MAIL_CLASS_DEFAULT;
}
