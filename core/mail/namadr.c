/*
 * Host name and address lists (see namadr.h): Postfix's namadr_list, read
 * once into items, matched item by item as Postfix's match_list does (for
 * each item the name, then the address; the first match decides, "!"
 * turns it into a refusal).
 *
 * An item is told apart by its form: '[' or only digits, dots, '/' (or an
 * IPv6 form with ':') is a network and must parse as one; "type:NAME" with
 * a lower-case type is a table; anything else is a host or domain name and
 * must look like one. So a typo is an error at load, never an item that
 * quietly matches nothing.
 */
#include "config.h"

#include <ctype.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "lib/log.h"
#include "lib/xalloc.h"
#include "mail/namadr.h"
#include "tables/cidr.h"
#include "tables/table.h"

enum item_kind { ITEM_NET, ITEM_NAME, ITEM_TABLE };

struct namadr_item {
    enum item_kind kind;
    int negate;
    struct cidr_net net;
    char *name;               /* lower case; a leading '.' for subdomains only */
    struct tbl *table;
};

struct namadr_list {
    char *param;
    struct namadr_item *items;
    size_t n;
    int parent_style;
};

/* Only digits, dots and '/': an IPv4 address or network (or a typo of one). */
static int ipv4_form(const char *s)
{
    return s[strspn(s, "0123456789./")] == '\0';
}

/* "type:" with a type Postfix would take: lower case letters, digits, '_'. */
static int table_form(const char *s)
{
    const char *colon = strchr(s, ':');
    if (colon == NULL || colon == s)
        return 0;
    for (const char *c = s; c < colon; c++)
        if (!(islower((unsigned char)*c) || isdigit((unsigned char)*c) || *c == '_'))
            return 0;
    return 1;
}

static int name_form(const char *s)
{
    if (*s == '.')
        s++;
    if (*s == '\0' || strlen(s) > 253)
        return 0;
    for (const char *c = s; *c; c++)
        if (!(isalnum((unsigned char)*c) || *c == '-' || *c == '.' || *c == '_'))
            return 0;
    return 1;
}

void namadr_list_free(struct namadr_list *list)
{
    if (list == NULL)
        return;
    for (size_t i = 0; i < list->n; i++) {
        free(list->items[i].name);
        if (list->items[i].table)
            tbl_close(list->items[i].table);
    }
    free(list->items);
    free(list->param);
    free(list);
}

struct namadr_list *namadr_list_open(const char *param, const char *const *items, const struct tbl_registry *reg,
                                     int parent_style, char **error)
{
    struct namadr_list *list = xcalloc(1, sizeof(*list));
    list->param = xstrdup(param);
    list->parent_style = parent_style;
    size_t n = 0;
    while (items && items[n])
        n++;
    list->items = xcalloc(n ? n : 1, sizeof(*list->items));
    for (size_t i = 0; i < n; i++) {
        const char *item = items[i];
        struct namadr_item *it = &list->items[list->n];
        for (; *item == '!'; item++)
            it->negate = !it->negate;
        char *why = NULL;
        if (*item == '\0') {
            *error = xasprintf("%s: no pattern after '!'", param);
        } else if (*item == '[' || ipv4_form(item) || (strchr(item, ':') && !table_form(item))) {
            it->kind = ITEM_NET;
            if (cidr_net_parse(item, &it->net, &why) != 0)
                *error = xasprintf("%s: %s", param, why ? why : item);
        } else if (table_form(item)) {
            it->kind = ITEM_TABLE;
            it->table = reg ? tbl_open(reg, item, TBL_FLAG_FOLD_CASE, &why) : NULL;
            if (it->table == NULL)
                *error = xasprintf("%s: %s", param, why ? why : item);
            else if (tbl_is_remote(it->table))
                *error = xasprintf("%s: %s: a table that answers over the network cannot be used here (the "
                                   "decision is made at once); use a local table type (cidr:, texthash:, hash:, "
                                   "regexp:...)", param, item);
        } else if (name_form(item)) {
            it->kind = ITEM_NAME;
            it->name = xstrdup(item);
            for (char *c = it->name; *c; c++)
                *c = (char)tolower((unsigned char)*c);
        } else {
            *error = xasprintf("%s: \"%s\" is neither a network, a host or domain name, nor a type:table", param,
                               item);
        }
        free(why);
        list->n++;
        if (*error) {
            namadr_list_free(list);
            return NULL;
        }
    }
    return list;
}

int namadr_list_empty(const struct namadr_list *list)
{
    return list == NULL || list->n == 0;
}

const char *namadr_list_first_name(const struct namadr_list *list)
{
    for (size_t i = 0; list && i < list->n; i++)
        if (list->items[i].kind == ITEM_NAME)
            return list->items[i].name;
    return NULL;
}

static int name_match(const struct namadr_list *list, const char *pattern, const char *name)
{
    size_t nl = strlen(name), pl = strlen(pattern);
    if (pattern[0] == '.')
        return nl > pl && strcasecmp(name + nl - pl, pattern) == 0;
    if (strcasecmp(name, pattern) == 0)
        return 1;
    return list->parent_style && nl > pl && name[nl - pl - 1] == '.' && strcasecmp(name + nl - pl, pattern) == 0;
}

/* One key of a table item: 1 found, 0 not, -1 error (logged). */
static int table_key(const struct namadr_list *list, struct tbl *t, const char *key)
{
    const char *value;
    int rc = tbl_lookup(t, key, &value);
    if (rc == TBL_FOUND)
        return 1;
    if (rc == TBL_NOTFOUND)
        return 0;
    msg_warn("%s: %s: table lookup problem for \"%s\"", list->param, tbl_spec(t), key);
    return -1;
}

/* The name (and for a parent-style list its parent domains, fixed-string
 * tables only), then the address. */
static int table_match(const struct namadr_list *list, struct tbl *t, const char *name, const char *addr)
{
    for (const char *entry = name; entry && *entry;) {
        int rc = table_key(list, t, entry);
        if (rc != 0)
            return rc;
        if (!list->parent_style || tbl_is_pattern(t))
            break;
        entry = strchr(entry + 1, '.');
        if (entry)
            entry++;
    }
    return addr ? table_key(list, t, addr) : 0;
}

int namadr_list_match(const struct namadr_list *list, const char *name, const char *addr)
{
    if (list == NULL)
        return 0;
    if (name && (*name == '\0' || strcasecmp(name, "unknown") == 0))
        name = NULL;
    struct cidr_addr a;
    int have_addr = addr && cidr_addr_parse(addr, &a) == 0;
    for (size_t i = 0; i < list->n; i++) {
        const struct namadr_item *it = &list->items[i];
        int m = 0;
        switch (it->kind) {
        case ITEM_NET: m = have_addr && cidr_net_contains(&it->net, &a); break;
        case ITEM_NAME: m = name && name_match(list, it->name, name); break;
        case ITEM_TABLE: m = table_match(list, it->table, name, addr); break;
        }
        if (m < 0)
            return -1;
        if (m)
            return !it->negate;
    }
    return 0;
}
