/*
 * Canonical maps and masquerading (see rewrite.h). Lookups use the address
 * map key order (mail/addr_find.h): user+ext@domain, user@domain, @domain.
 * Masquerading strips host parts below a listed domain
 * (host.example.com -> example.com); the first listed domain that matches
 * wins, a "!domain" entry keeps that one as it is, and
 * masquerade_exceptions names local parts never masqueraded (a match list
 * as in Postfix: the first item that matches decides, "!user" says "not
 * this one"; type:table items are refused, not compared as text).
 */
#include "config.h"

#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "config/bind.h"
#include "config/cfg.h"
#include "lib/xalloc.h"
#include "mail/addr_find.h"
#include "mail/rewrite.h"

#define R(name, kind, field) CFG_BIND(name, kind, struct mail_rewrite, field)
static const struct cfg_bind rewrite_binds[] = {
    R("myorigin", STR, myorigin),
    R("recipient_delimiter", STR, delimiter),
    R("masquerade_domains", LIST, masquerade_domains),
    R("masquerade_exceptions", LIST, masquerade_exceptions),
    R("canonical_classes", LIST, canonical_classes),
    R("masquerade_classes", LIST, masquerade_classes),
    CFG_BIND_READ("canonical_maps"),
    CFG_BIND_READ("recipient_canonical_maps"),
    CFG_BIND_READ("sender_canonical_maps"),
};
const struct cfg_bind_table mail_rewrite_bind_table = CFG_BIND_TABLE("canonical and masquerade rewriting",
                                                                     rewrite_binds);

int mail_rewrite_open(struct mail_rewrite *rw, const struct cfg *cfg, struct tbl_registry *reg, int quiet,
                      char **error)
{
    memset(rw, 0, sizeof(*rw));
    cfg_bind_apply(cfg, &mail_rewrite_bind_table, rw);
    int q = quiet ? MAIL_MAPS_QUIET : 0;
    int failed = 0;
    for (const char *const *x = rw->masquerade_exceptions; x && *x; x++)
        if (strchr(*x, ':')) {
            /* Postfix looks the user up in such a table; Petrel would
             * compare the text and never match: refused, not ignored. */
            char *line = xasprintf("masquerade_exceptions: table %s: tables are not supported here; list the "
                                   "user names", *x + strspn(*x, "!"));
            xappend_line(error, line);
            free(line);
            failed = 1;
        }
    /* Every table is tried, so that each bad one is reported. */
    if (failed | mail_maps_open(&rw->canonical, cfg, reg, "canonical_maps", q, error) |
        mail_maps_open(&rw->rcpt_canonical, cfg, reg, "recipient_canonical_maps", q, error) |
        mail_maps_open(&rw->sender_canonical, cfg, reg, "sender_canonical_maps", q, error)) {
        mail_rewrite_close(rw);
        return -1;
    }
    return 0;
}

void mail_rewrite_close(struct mail_rewrite *rw)
{
    mail_maps_close(&rw->canonical);
    mail_maps_close(&rw->rcpt_canonical);
    mail_maps_close(&rw->sender_canonical);
}

const char *mail_rewrite_qualify(const struct mail_rewrite *rw, const char *addr, petrel_pool *pool)
{
    if (strchr(addr, '@'))
        return petrel_pool_strdup(pool, addr);
    return petrel_pool_printf(pool, "%s@%s", addr, rw->myorigin);
}

static int address_lookup(struct mail_maps *m, const struct mail_addr *a, petrel_pool *pool, const char **value)
{
    return mail_addr_find(m, a, MAIL_FIND_ADDRESS, pool, value);
}

static int has_class(const char *const *list, const char *cls)
{
    for (; list && *list; list++)
        if (strcasecmp(*list, cls) == 0)
            return 1;
    return 0;
}

/* canonical rewriting for one class; a lookup error sets *failed (when
 * given) to the parameter of the maps that failed and keeps the address */
static const char *canonical(struct mail_rewrite *rw, const char *address, int recipient, const char *cls,
                             petrel_pool *pool, const char **failed)
{
    struct mail_addr a;
    mail_addr_split(address, rw->delimiter, pool, &a);
    const char *v = NULL;
    struct mail_maps *own = recipient ? &rw->rcpt_canonical : &rw->sender_canonical;
    int rc = address_lookup(own, &a, pool, &v);
    const struct mail_maps *asked = own;
    if (rc == 0 && has_class(rw->canonical_classes, cls)) {
        rc = address_lookup(&rw->canonical, &a, pool, &v);
        asked = &rw->canonical;
    }
    if (rc == 1)
        return mail_rewrite_qualify(rw, v, pool);
    if (rc < 0 && failed)
        *failed = asked->param ? asked->param : "canonical_maps";
    return address;
}

static const char *masquerade(const struct mail_rewrite *rw, const char *out, petrel_pool *pool)
{
    /* masquerade_domains: host.example.com -> example.com, first match wins */
    const char *at = strrchr(out, '@');
    if (at == NULL)
        return out;
    size_t ll = (size_t)(at - out);
    for (const char *const *x = rw->masquerade_exceptions; x && *x; x++) {
        size_t bangs = strspn(*x, "!");
        const char *user = *x + bangs;
        if (strlen(user) == ll && strncasecmp(out, user, ll) == 0) {
            if (bangs % 2 == 0)
                return out;   /* an exception */
            break;            /* "!user": the first match decides, so it is masqueraded */
        }
    }
    const char *domain = at + 1;
    for (const char *const *d = rw->masquerade_domains; d && *d; d++) {
        const char *md = **d == '!' ? *d + 1 : *d;
        size_t dl = strlen(md), nl = strlen(domain);
        if (nl > dl && domain[nl - dl - 1] == '.' && strcasecmp(domain + nl - dl, md) == 0) {
            if (**d == '!')
                return out;   /* "!sub.example.com": never masquerade this one */
            return petrel_pool_printf(pool, "%.*s@%s", (int)ll, out, md);
        }
        if (strcasecmp(domain, md) == 0)
            return out;
    }
    return out;
}

int mail_rewrite_headers(const struct mail_rewrite *rw)
{
    return rw->sender_canonical.n || rw->rcpt_canonical.n || rw->canonical.n || rw->masquerade_domains[0];
}

const char *mail_rewrite_header_address(struct mail_rewrite *rw, const char *address, int recipient,
                                        petrel_pool *pool, const char **failed)
{
    const char *cls = recipient ? "header_recipient" : "header_sender";
    const char *why = NULL;
    const char *out = canonical(rw, address, recipient, cls, pool, &why);
    if (why) {
        if (failed)
            *failed = why;
        return address;   /* not masqueraded either: the message is not accepted */
    }
    if (has_class(rw->masquerade_classes, cls))
        out = masquerade(rw, out, pool);
    return out;
}

const char *mail_rewrite_sender(struct mail_rewrite *rw, const char *sender, petrel_pool *pool, int *failed)
{
    if (sender == NULL || *sender == '\0')
        return sender;
    const char *why = NULL;
    const char *out = canonical(rw, sender, 0, "envelope_sender", pool, &why);
    if (why && failed)
        *failed = 1;
    if (!has_class(rw->masquerade_classes, "envelope_sender"))
        return out;
    return masquerade(rw, out, pool);
}

const char *mail_rewrite_recipient(struct mail_rewrite *rw, const char *recipient, petrel_pool *pool,
                                   int *failed)
{
    if (!rw->rcpt_canonical.n && !rw->canonical.n)
        return recipient;
    struct mail_addr a;
    mail_addr_split(recipient, rw->delimiter, pool, &a);
    const char *v = NULL;
    int rc = address_lookup(&rw->rcpt_canonical, &a, pool, &v);
    if (rc == 0)
        rc = address_lookup(&rw->canonical, &a, pool, &v);
    if (rc == 1)
        return mail_rewrite_qualify(rw, v, pool);
    if (rc < 0 && failed)
        *failed = 1;
    return recipient;
}
