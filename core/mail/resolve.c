/*
 * Address resolution (see resolve.h). Lookups in transport_maps follow
 * Postfix's transport(5) order; sender_dependent_relayhost_maps is an
 * address map (user+ext@domain, user@domain, @domain).
 */
#include "config.h"

#include <stddef.h>
#include <string.h>

#include "config/bind.h"
#include "config/cfg.h"
#include "mail/addr_find.h"
#include "mail/resolve.h"
#include "tables/table.h"

#define R(name, kind, field) CFG_BIND(name, kind, struct mail_resolve, field)
static const struct cfg_bind resolve_binds[] = {
    R("local_transport", STR, local_transport),
    R("virtual_transport", STR, virtual_transport),
    R("relay_transport", STR, relay_transport),
    R("default_transport", STR, default_transport),
    R("relayhost", STR, relayhost),
    R("recipient_delimiter", STR, delimiter),
    R("show_user_unknown_table_name", BOOL, show_table),
    CFG_BIND_READ("transport_maps"),
    CFG_BIND_READ("sender_dependent_relayhost_maps"),
};
const struct cfg_bind_table mail_resolve_bind_table = CFG_BIND_TABLE("address resolution", resolve_binds);

int mail_resolve_open(struct mail_resolve *r, const struct cfg *cfg, struct tbl_registry *reg, int flags,
                      char **error)
{
    memset(r, 0, sizeof(*r));
    cfg_bind_apply(cfg, &mail_resolve_bind_table, r);
    int failed = mail_maps_open(&r->transport, cfg, reg, "transport_maps", flags, error) |
                 mail_maps_open(&r->sender_relay, cfg, reg, "sender_dependent_relayhost_maps", flags, error);
    return failed ? -1 : 0;
}

void mail_resolve_close(struct mail_resolve *r)
{
    mail_maps_close(&r->transport);
    mail_maps_close(&r->sender_relay);
}

int mail_resolve_transport_map(struct mail_resolve *r, const struct mail_addr *a, petrel_pool *pool,
                               const char **value)
{
    if (r->transport.n == 0)
        return 0;
    char *key = petrel_pool_printf(pool, "%s@%s", a->full_local, a->domain);
    int rc = mail_maps_get(&r->transport, key, pool, value);
    if (rc != 0)
        return rc;
    const char *d = a->domain;
    if (*d && (rc = mail_maps_get(&r->transport, d, pool, value)) != 0)
        return rc;
    for (const char *dot = strchr(d, '.'); dot; dot = strchr(dot + 1, '.'))
        if ((rc = mail_maps_get(&r->transport, dot, pool, value)) != 0)
            return rc;
    return mail_maps_get(&r->transport, "*", pool, value);
}

int mail_resolve_relayhost(struct mail_resolve *r, const char *sender, petrel_pool *pool, const char **relayhost)
{
    *relayhost = r->relayhost && *r->relayhost ? r->relayhost : NULL;
    if (r->sender_relay.n == 0 || sender == NULL || *sender == '\0')
        return 0;
    struct mail_addr s;
    mail_addr_split(sender, r->delimiter, pool, &s);
    const char *v = NULL;
    int rc = mail_addr_find(&r->sender_relay, &s, MAIL_FIND_ADDRESS, pool, &v);
    if (rc < 0)
        return -1;
    if (rc == 1)
        *relayhost = v;
    return 0;
}

const char *mail_resolve_class_spec(const struct mail_resolve *r, enum mail_class cls, const char *domain,
                                    const char *relayhost, const char **default_nexthop)
{
    *default_nexthop = domain;
    /* Off-host mail (relay_domains and the rest) goes to the sender's or
     * the global relayhost when there is one, as Postfix's resolve.c
     * ("enforce all the relayhost precedences in one place"); a next hop
     * in the transport's own spec (relay_transport = relay:[host]) wins. */
    if (mail_class_off_host(cls) && relayhost && *relayhost)
        *default_nexthop = relayhost;
    switch (cls) {
    case MAIL_CLASS_LOCAL: return r->local_transport;
    case MAIL_CLASS_VIRTUAL_MAILBOX: return r->virtual_transport;
    case MAIL_CLASS_RELAY: return r->relay_transport;
    default: return r->default_transport;
    }
}

const char *mail_resolve_split(const char *spec, const char *default_nexthop, petrel_pool *pool,
                               const char **nexthop)
{
    const char *colon = strchr(spec, ':');
    *nexthop = colon && colon[1] ? colon + 1 : default_nexthop;
    return colon ? petrel_pool_strndup(pool, spec, (size_t)(colon - spec)) : petrel_pool_strdup(pool, spec);
}

static int maps_wait(const struct mail_maps *m)
{
    for (size_t i = 0; i < m->n; i++)
        if (tbl_is_remote(m->tables[i]))
            return 1;
    return 0;
}

static int list_waits(const struct domain_list *l)
{
    for (size_t i = 0; i < l->n; i++)
        if (l->items[i].table && tbl_is_remote(l->items[i].table))
            return 1;
    return 0;
}

int mail_resolve_address(struct mail_resolve *r, const struct mail_domains *d, const char *sender,
                         const char *address, petrel_pool *pool, const char **transport, const char **nexthop)
{
    if (list_waits(&d->mydestination) || list_waits(&d->virtual_alias_domains) ||
        list_waits(&d->virtual_mailbox_domains) || list_waits(&d->relay_domains) || maps_wait(&r->transport) ||
        maps_wait(&r->sender_relay))
        return -1;
    struct mail_addr a;
    mail_addr_split(address, r->delimiter, pool, &a);
    enum mail_class cls = mail_domain_class(d, a.domain);
    if (cls == MAIL_CLASS_ERROR)
        return -1;
    if (cls == MAIL_CLASS_VIRTUAL_ALIAS) {
        *transport = "error";
        *nexthop = r->show_table ? "5.1.1 User unknown in virtual alias table" : "5.1.1 User unknown";
        return 0;
    }
    const char *value = NULL;
    int rc = mail_resolve_transport_map(r, &a, pool, &value);
    if (rc < 0)
        return -1;
    if (rc == 1) {
        *transport = mail_resolve_split(value, a.domain, pool, nexthop);
        return 0;
    }
    const char *relayhost = NULL;
    if (mail_class_off_host(cls) && mail_resolve_relayhost(r, sender, pool, &relayhost) < 0)
        return -1;
    const char *default_nexthop;
    const char *spec = mail_resolve_class_spec(r, cls, a.domain, relayhost, &default_nexthop);
    *transport = mail_resolve_split(spec, default_nexthop, pool, nexthop);
    return 0;
}
