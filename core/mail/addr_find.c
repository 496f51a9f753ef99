/*
 * Address-form lookups (see addr_find.h).
 */
#include "config.h"

#include <string.h>
#include <strings.h>

#include "mail/addr_find.h"
#include "mail/maps.h"

void mail_addr_split(const char *address, const char *delimiter, petrel_pool *pool, struct mail_addr *p)
{
    const char *at = strrchr(address, '@');
    p->full_local = at ? petrel_pool_strndup(pool, address, (size_t)(at - address)) : petrel_pool_strdup(pool, address);
    p->domain = at ? petrel_pool_strdup(pool, at + 1) : "";
    p->local = p->full_local;
    p->extension = NULL;
    if (delimiter && *delimiter && strcasecmp(p->full_local, "postmaster") != 0) {
        size_t cut = strcspn(p->full_local, delimiter);
        if (p->full_local[cut] && cut > 0) {
            p->local = petrel_pool_strndup(pool, p->full_local, cut);
            p->extension = petrel_pool_strdup(pool, p->full_local + cut + 1);
        }
    }
}

int mail_addr_find(struct mail_maps *m, const struct mail_addr *a, unsigned strategy, petrel_pool *pool,
                   const char **value)
{
    int rc;
    if (m->n == 0)
        return 0;
    if (strategy & MAIL_FIND_FULL) {
        char *key = petrel_pool_printf(pool, "%s@%s", a->full_local, a->domain);
        if ((rc = mail_maps_get(m, key, pool, value)) != 0)
            return rc;
    }
    /* Only the full address goes to pattern tables (Postfix's
     * mail_addr_find asks the others with DICT_FLAG_FIXED). */
    if ((strategy & MAIL_FIND_NOEXT) && a->extension) {
        char *key = petrel_pool_printf(pool, "%s@%s", a->local, a->domain);
        if ((rc = mail_maps_get_partial(m, key, pool, value)) != 0)
            return rc;
    }
    if (strategy & MAIL_FIND_LOCALPART) {
        if ((rc = mail_maps_get_partial(m, a->full_local, pool, value)) != 0)
            return rc;
        if (a->extension && (rc = mail_maps_get_partial(m, a->local, pool, value)) != 0)
            return rc;
    }
    if ((strategy & MAIL_FIND_AT_DOMAIN) && *a->domain) {
        char *key = petrel_pool_printf(pool, "@%s", a->domain);
        return mail_maps_get_partial(m, key, pool, value);
    }
    return 0;
}
