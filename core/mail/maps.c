/*
 * Table lists (see maps.h). The tables are opened once, when a role builds
 * its settings, so that a bad table stops the start instead of the first
 * message.
 */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config/config.h"
#include "lib/log.h"
#include "lib/xalloc.h"
#include "mail/maps.h"
#include "tables/table.h"

static int default_alias_item(const struct cfg *cfg, const char *spec)
{
    if (!cfg_is_default(cfg, "alias_maps"))
        return 0;
    for (const char *const *item = cfg_list(cfg, "alias_maps"); *item; item++)
        if (strcmp(*item, spec) == 0)
            return 1;
    return 0;
}

int mail_maps_open(struct mail_maps *m, const struct cfg *cfg, struct tbl_registry *reg, const char *param,
                   int flags, char **error)
{
    const char *const *specs = cfg_list(cfg, param);
    size_t n = 0;
    while (specs[n])
        n++;
    m->param = param;
    m->tables = xcalloc(n ? n : 1, sizeof(*m->tables));
    m->n = 0;
    for (size_t i = 0; i < n; i++) {
        char *why = NULL;
        struct tbl *t = tbl_open(reg, specs[i], TBL_FLAG_FOLD_CASE, &why);
        if (t == NULL) {
            if ((flags & MAIL_MAPS_DEFAULT_ALIASES_OPTIONAL) && default_alias_item(cfg, specs[i])) {
                /* Postfix's default alias_maps (hash:/etc/aliases) needs a
                 * table type Petrel may not have: run without it, say so once. */
                if (!(flags & MAIL_MAPS_QUIET))
                    msg_info("%s: %s; local aliases are not used (set alias_maps to change this)", param, why);
                free(why);
                continue;
            }
            size_t len = strlen(param) + (why ? strlen(why) : 0) + 32;
            *error = xmalloc(len);
            snprintf(*error, len, "%s: %s", param, why ? why : "cannot open table");
            free(why);
            mail_maps_close(m);
            return -1;
        }
        m->tables[m->n++] = t;
    }
    return 0;
}

void mail_maps_close(struct mail_maps *m)
{
    for (size_t i = 0; i < m->n; i++)
        tbl_close(m->tables[i]);
    free(m->tables);
    m->tables = NULL;
    m->n = 0;
}

int mail_maps_get(struct mail_maps *m, const char *key, petrel_pool *pool, const char **value)
{
    for (size_t i = 0; i < m->n; i++) {
        const char *v;
        int rc = tbl_lookup(m->tables[i], key, &v);
        if (rc == TBL_ERROR) {
            msg_warn("%s: %s: lookup error for \"%s\"", m->param, tbl_spec(m->tables[i]), key);
            return -1;
        }
        if (rc == TBL_FOUND) {
            *value = petrel_pool_strdup(pool, v);
            return 1;
        }
    }
    return 0;
}
