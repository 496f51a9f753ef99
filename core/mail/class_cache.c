/*
 * The address class cache (see class_cache.h). A linear scan of a few
 * fixed-size entries: cheaper than any lookup it saves, and no allocation
 * after the start.
 */
#include "config.h"

#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "lib/xalloc.h"
#include "mail/class_cache.h"

#define CLASS_CACHE_DOMAIN_MAX 255   /* RFC 1035: the longest domain name */

struct class_entry {
    char domain[CLASS_CACHE_DOMAIN_MAX + 1];   /* "" when the slot is free */
    enum mail_class cls;
    time_t expires;
    unsigned long used;                        /* when it last answered: the LRU order */
};

struct mail_class_cache {
    struct class_entry *entries;
    size_t size;
    time_t ttl;
    unsigned long tick;
    unsigned long generation;                  /* of the tables the entries came from */
};

struct mail_class_cache *mail_class_cache_new(size_t size, time_t ttl)
{
    struct mail_class_cache *c = xcalloc(1, sizeof(*c));
    c->size = size ? size : 1;
    c->entries = xcalloc(c->size, sizeof(*c->entries));
    c->ttl = ttl > 0 ? ttl : 1;
    return c;
}

void mail_class_cache_free(struct mail_class_cache *c)
{
    if (c == NULL)
        return;
    free(c->entries);
    free(c);
}

static struct class_entry *find(struct mail_class_cache *c, const char *domain)
{
    for (size_t i = 0; i < c->size; i++)
        if (c->entries[i].domain[0] && strcasecmp(c->entries[i].domain, domain) == 0)
            return &c->entries[i];
    return NULL;
}

int mail_class_cache_get(struct mail_class_cache *c, const char *domain, time_t now, enum mail_class *cls)
{
    struct class_entry *e = find(c, domain);
    if (e == NULL)
        return 0;
    if (now >= e->expires) {
        e->domain[0] = '\0';   /* expired: the slot is free again */
        return 0;
    }
    e->used = ++c->tick;
    *cls = e->cls;
    return 1;
}

void mail_class_cache_put(struct mail_class_cache *c, const char *domain, enum mail_class cls, time_t now)
{
    size_t len = strlen(domain);
    if (cls == MAIL_CLASS_ERROR || len == 0 || len > CLASS_CACHE_DOMAIN_MAX)
        return;
    struct class_entry *e = find(c, domain);
    for (size_t i = 0; e == NULL && i < c->size; i++)
        if (c->entries[i].domain[0] == '\0')
            e = &c->entries[i];
    if (e == NULL) {
        e = &c->entries[0];
        for (size_t i = 1; i < c->size; i++)
            if (c->entries[i].used < e->used)
                e = &c->entries[i];
    }
    memcpy(e->domain, domain, len + 1);
    e->cls = cls;
    e->expires = now + c->ttl;
    e->used = ++c->tick;
}

void mail_class_cache_flush(struct mail_class_cache *c)
{
    for (size_t i = 0; i < c->size; i++)
        c->entries[i].domain[0] = '\0';
}

void mail_class_cache_generation(struct mail_class_cache *c, unsigned long generation)
{
    if (generation != c->generation)
        mail_class_cache_flush(c);
    c->generation = generation;
}
