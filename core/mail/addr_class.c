/*
 * Address classes (see addr_class.h).
 */
#include "config.h"

#include <ctype.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "config/bind.h"
#include "config/cfg.h"
#include "lib/log.h"
#include "lib/xalloc.h"
#include "mail/addr_class.h"
#include "mail/class_cache.h"
#include "tables/table.h"

static const struct cfg_bind domain_binds[] = {
    CFG_BIND_READ("mydestination"),
    CFG_BIND_READ("virtual_alias_domains"),
    CFG_BIND_READ("virtual_mailbox_domains"),
    CFG_BIND_READ("relay_domains"),
    CFG_BIND_READ("address_class_cache_ttl"),
};
const struct cfg_bind_table mail_domains_bind_table = CFG_BIND_TABLE("address classes", domain_binds);

static void list_close(struct domain_list *list)
{
    for (size_t i = 0; i < list->n; i++) {
        free((char *)list->items[i].name);
        if (list->items[i].table)
            tbl_close(list->items[i].table);
    }
    free(list->items);
    memset(list, 0, sizeof(*list));
}

static int list_open(struct domain_list *list, const struct cfg *cfg, const char *param, int parent_style,
                     struct tbl_registry *reg, int quiet, char **error)
{
    const char *const *items = cfg_list(cfg, param);
    size_t n = 0;
    while (items[n])
        n++;
    list->param = param;
    list->parent_style = parent_style;
    list->items = xcalloc(n ? n : 1, sizeof(*list->items));
    list->n = 0;
    int failed = 0;
    for (size_t i = 0; i < n; i++) {
        const char *item = items[i];
        int negate = 0;
        for (; *item == '!'; item++)
            negate = !negate;
        if (*item == '\0') {
            char *line = xasprintf("%s: no pattern after '!'", param);
            xappend_line(error, line);
            free(line);
            failed = 1;
            continue;
        }
        struct domain_item *it = &list->items[list->n];
        it->negate = negate;
        if (item[0] != '[' && strchr(item, ':')) {
            char *why = NULL;
            it->table = tbl_open(reg, item, TBL_FLAG_FOLD_CASE, &why);
            if (it->table == NULL) {
                char *line = xasprintf("%s: %s", param, why ? why : item);
                xappend_line(error, line);
                free(line);
                free(why);
                failed = 1;
                continue;
            }
        } else {
            char *name = xstrdup(item);
            for (char *c = name; *c; c++)
                *c = (char)tolower((unsigned char)*c);
            it->name = name;
            if (parent_style && name[0] == '.' && !quiet)
                msg_warn("%s: \"%s\" matches nothing: a name here already matches its subdomains "
                         "(parent_domain_matches_subdomains); write \"%s\"", param, item, name + 1);
        }
        list->n++;
    }
    return failed ? -1 : 0;
}

int mail_domains_open(struct mail_domains *d, const struct cfg *cfg, struct tbl_registry *reg, int quiet,
                      char **error)
{
    memset(d, 0, sizeof(*d));
    /* Every list is opened, so that each bad table is reported. */
    int failed = list_open(&d->mydestination, cfg, "mydestination", 0, reg, quiet, error) |
                 list_open(&d->virtual_alias_domains, cfg, "virtual_alias_domains", 0, reg, quiet, error) |
                 list_open(&d->virtual_mailbox_domains, cfg, "virtual_mailbox_domains", 0, reg, quiet, error) |
                 list_open(&d->relay_domains, cfg, "relay_domains", 1, reg, quiet, error);
    return failed ? -1 : 0;
}

/* Entries of the class cache: the hot domains of one process. */
#define CLASS_CACHE_SIZE 16

void mail_domains_cache(struct mail_domains *d, const struct cfg *cfg)
{
    long long ttl = cfg_int(cfg, "address_class_cache_ttl");
    mail_class_cache_free(d->cache);
    d->cache = ttl > 0 ? mail_class_cache_new(CLASS_CACHE_SIZE, (time_t)ttl) : NULL;
}

void mail_domains_close(struct mail_domains *d)
{
    mail_class_cache_free(d->cache);
    d->cache = NULL;
    list_close(&d->mydestination);
    list_close(&d->virtual_alias_domains);
    list_close(&d->virtual_mailbox_domains);
    list_close(&d->relay_domains);
}

/* A table item: the domain, and for a parent-style list each parent domain
 * too (fixed-string tables only: Postfix's match_hostname). */
static int table_match(const struct domain_list *list, struct tbl *t, const char *domain, int *unfinished)
{
    for (const char *entry = domain; entry && *entry;) {
        const char *value;
        int rc = tbl_lookup(t, entry, &value);
        if (rc == TBL_FOUND)
            return 1;
        if (rc == TBL_ERROR) {
            msg_warn("%s: %s: table lookup problem for \"%s\"", list->param, tbl_spec(t), domain);
            return -1;
        }
        if (rc == TBL_PENDING)
            *unfinished = 1;   /* the caller runs this again with the answer; until then "no" */
        if (!list->parent_style || tbl_is_pattern(t))
            break;
        entry = strchr(entry + 1, '.');
        if (entry)
            entry++;
    }
    return 0;
}

static int name_match(const struct domain_list *list, const char *pattern, const char *domain)
{
    if (strcasecmp(domain, pattern) == 0)
        return 1;
    if (list->parent_style) {
        size_t dl = strlen(domain), pl = strlen(pattern);
        return dl > pl && domain[dl - pl - 1] == '.' && strcasecmp(domain + dl - pl, pattern) == 0;
    }
    return 0;
}

static int list_match(const struct domain_list *list, const char *domain, int *unfinished)
{
    for (size_t i = 0; i < list->n; i++) {
        const struct domain_item *it = &list->items[i];
        int m = it->table ? table_match(list, it->table, domain, unfinished) : name_match(list, it->name, domain);
        if (m < 0)
            return -1;
        if (m)
            return !it->negate;
    }
    return 0;
}

int mail_domain_list_match(const struct domain_list *list, const char *domain)
{
    int unfinished = 0;
    return list_match(list, domain, &unfinished);
}

void mail_domains_warn_overlaps(const struct mail_domains *d)
{
    const struct domain_list *lists[] = { &d->mydestination, &d->virtual_alias_domains, &d->virtual_mailbox_domains,
                                          &d->relay_domains };
    const size_t n = sizeof(lists) / sizeof(lists[0]);
    for (size_t i = 0; i < n; i++) {
        for (size_t k = 0; k < lists[i]->n; k++) {
            const struct domain_item *it = &lists[i]->items[k];
            if (it->table || it->negate)
                continue;   /* tables and exclusions: nothing to compare */
            for (size_t j = i + 1; j < n; j++) {
                if (i == 0 && j == n - 1)
                    continue;   /* relay_domains = $mydestination is an old default, as in Postfix */
                for (size_t m = 0; m < lists[j]->n; m++)
                    if (!lists[j]->items[m].table && !lists[j]->items[m].negate &&
                        strcmp(lists[j]->items[m].name, it->name) == 0)
                        msg_warn("do not list domain %s in BOTH %s and %s (it is treated as %s)", it->name,
                                 lists[i]->param, lists[j]->param, lists[i]->param);
            }
        }
    }
}

int mail_domain_is_local(const struct mail_domains *d, const char *domain)
{
    return *domain == '\0' ? 1 : mail_domain_list_match(&d->mydestination, domain);
}

int mail_domain_is_ours(const struct mail_domains *d, const char *domain)
{
    enum mail_class c = mail_domain_class(d, domain);
    return c == MAIL_CLASS_ERROR ? -1 : c != MAIL_CLASS_DEFAULT;
}

static enum mail_class classify(const struct mail_domains *d, const char *domain, int *unfinished)
{
    static const enum mail_class classes[] = { MAIL_CLASS_LOCAL, MAIL_CLASS_VIRTUAL_ALIAS,
                                               MAIL_CLASS_VIRTUAL_MAILBOX, MAIL_CLASS_RELAY };
    const struct domain_list *lists[] = { &d->mydestination, &d->virtual_alias_domains, &d->virtual_mailbox_domains,
                                          &d->relay_domains };
    for (size_t i = 0; i < sizeof(lists) / sizeof(lists[0]); i++) {
        int m = list_match(lists[i], domain, unfinished);
        if (m < 0)
            return MAIL_CLASS_ERROR;
        if (m)
            return classes[i];
    }
    return MAIL_CLASS_DEFAULT;
}

/* The sum of the domain lists' tables' generations: it changes when one
 * of them was reloaded or its compiled file rebuilt, which a cached class
 * would otherwise hide until it expires. */
static unsigned long tables_generation(const struct mail_domains *d)
{
    const struct domain_list *lists[] = { &d->mydestination, &d->virtual_alias_domains, &d->virtual_mailbox_domains,
                                          &d->relay_domains };
    unsigned long generation = 0;
    for (size_t i = 0; i < sizeof(lists) / sizeof(lists[0]); i++)
        for (size_t k = 0; k < lists[i]->n; k++)
            if (lists[i]->items[k].table)
                generation += tbl_generation(lists[i]->items[k].table);
    return generation;
}

static time_t monotonic_seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec;
}

enum mail_class mail_domain_class(const struct mail_domains *d, const char *domain)
{
    if (*domain == '\0')
        return MAIL_CLASS_LOCAL;
    time_t now = 0;
    enum mail_class cls;
    if (d->cache) {
        mail_class_cache_generation(d->cache, tables_generation(d));
        now = monotonic_seconds();
        if (mail_class_cache_get(d->cache, domain, now, &cls))
            return cls;
    }
    int unfinished = 0;
    cls = classify(d, domain, &unfinished);
    /* Never kept: an error (the next RCPT asks again, as it must to see
     * the table back), nor a class decided while an answer was missing. */
    if (d->cache && !unfinished && cls != MAIL_CLASS_ERROR)
        mail_class_cache_put(d->cache, domain, cls, now);
    return cls;
}
