/*
 * Splitting a module's LIST parameter (see list_items.h).
 */
#include "list_items.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <string.h>

const char **list_items_split(const char *text, size_t *count, petrel_pool *pool)
{
    size_t cap = 8;
    const char **items = petrel_pool_zalloc(pool, cap * sizeof(*items));
    *count = 0;
    const char *p = text ? text : "";
    for (;;) {
        while (*p == ',' || isspace((unsigned char)*p))
            p++;
        if (*p == '\0')
            break;
        size_t len = strcspn(p, ", \t\r\n");
        if (*count + 1 >= cap) {
            const char **bigger = petrel_pool_zalloc(pool, cap * 2 * sizeof(*bigger));
            memcpy(bigger, items, cap * sizeof(*items));
            items = bigger;
            cap *= 2;
        }
        items[(*count)++] = petrel_pool_strndup(pool, p, len);
        p += len;
    }
    return items;
}

int list_item_is_table(const char *item)
{
    const char *colon = strchr(item, ':');
    if (colon == NULL || colon == item)
        return 0;
    for (const char *c = item; c < colon; c++)
        if (!((*c >= 'a' && *c <= 'z') || (*c >= '0' && *c <= '9') || *c == '_'))
            return 0;
    unsigned char a6[16];
    char addr[64];
    size_t len = strcspn(item, "/");
    if (len < sizeof(addr)) {
        memcpy(addr, item, len);
        addr[len] = '\0';
        if (inet_pton(AF_INET6, addr, a6) == 1)
            return 0;
    }
    return 1;
}
