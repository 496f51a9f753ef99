/*
 * Filling settings structs from binding tables, and checking a table
 * against the schema (see bind.h). Applying a table costs one binary search
 * per entry, once per configuration generation and service: the hot paths
 * read plain fields.
 */
#include "config.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>

#include "config/bind.h"
#include "config/cfg.h"

/* What the configuration code reads itself: the defaults computed from the
 * host (defaults.c), master.cf's maxproc default and the names of a
 * service's copy (master.c, service.c), stress (service.c), the lists
 * whose items may name a /file (config.c), and the parameters the
 * classification check reads (classes.c). */
static const struct cfg_bind machinery_binds[] = {
    CFG_BIND_READ("config_directory"),
    CFG_BIND_READ("myhostname"),
    CFG_BIND_READ("mydomain"),
    CFG_BIND_READ("mynetworks_style"),
    CFG_BIND_READ("mynetworks"),
    CFG_BIND_READ("default_process_limit"),
    CFG_BIND_READ("service_name"),
    CFG_BIND_READ("process_name"),
    CFG_BIND_READ("stress"),
    CFG_BIND_READ("petrel_accept_unimplemented"),
    CFG_BIND_READ("compatibility_level"),
};
const struct cfg_bind_table cfg_machinery_bind_table = CFG_BIND_TABLE("configuration", machinery_binds);

void cfg_bind_apply(const struct cfg *cfg, const struct cfg_bind_table *t, void *base)
{
    for (size_t i = 0; i < t->n; i++) {
        const struct cfg_bind *b = &t->binds[i];
        void *field = (char *)base + b->offset;
        switch (b->kind) {
        case CFG_BIND_STR:
            *(const char **)field = cfg_get(cfg, b->name);
            break;
        case CFG_BIND_BOOL:
            *(int *)field = cfg_bool(cfg, b->name);
            break;
        case CFG_BIND_INT:
            *(int *)field = (int)cfg_int(cfg, b->name);
            break;
        case CFG_BIND_UINT:
            *(unsigned *)field = (unsigned)cfg_int(cfg, b->name);
            break;
        case CFG_BIND_LONG:
            *(long long *)field = cfg_int(cfg, b->name);
            break;
        case CFG_BIND_ULONG:
            *(unsigned long long *)field = (unsigned long long)cfg_int(cfg, b->name);
            break;
        case CFG_BIND_SIZE:
            *(size_t *)field = (size_t)cfg_int(cfg, b->name);
            break;
        case CFG_BIND_TIMEVAL:
            ((struct timeval *)field)->tv_sec = (time_t)cfg_int(cfg, b->name);
            break;
        case CFG_BIND_LIST:
            *(const char *const **)field = cfg_list(cfg, b->name);
            break;
        case CFG_BIND_CHOICE: {
            /* The schema found the word's index when it loaded the value;
             * a value it refused never gets here (the load failed). */
            long long index = cfg_int(cfg, b->name);
            size_t n = 0;
            while (b->choices[n].word)
                n++;
            *(int *)field = b->choices[index >= 0 && (size_t)index < n ? index : 0].value;
            break;
        }
        case CFG_BIND_READ:
            break;
        }
    }
}

int cfg_bind_covers(const struct cfg_bind *b, const char *name)
{
    if (b->name[0] == '*') {
        size_t ls = strlen(b->name + 1), ln = strlen(name);
        return ln > ls && strcmp(name + ln - ls, b->name + 1) == 0;
    }
    return strcmp(b->name, name) == 0;
}

__attribute__((format(printf, 2, 3)))
static int fail(char **error, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    if (vasprintf(error, fmt, ap) < 0)
        *error = NULL;
    va_end(ap);
    return -1;
}

static int kind_fits(enum cfg_bind_kind kind, const struct cfg_param *p)
{
    switch (kind) {
    case CFG_BIND_STR:
        return p->type == CFG_STR;
    case CFG_BIND_BOOL:
        return p->type == CFG_BOOL;
    case CFG_BIND_INT: case CFG_BIND_UINT: case CFG_BIND_LONG: case CFG_BIND_ULONG: case CFG_BIND_SIZE:
        return p->type == CFG_INT || p->type == CFG_TIME || p->type == CFG_SIZE;
    case CFG_BIND_TIMEVAL:
        return p->type == CFG_TIME;
    case CFG_BIND_LIST:
        return p->type == CFG_LIST || p->type == CFG_TABLE;
    case CFG_BIND_CHOICE:
        return p->type == CFG_STR && p->choices;
    case CFG_BIND_READ:
        return 1;
    }
    return 0;
}

int cfg_bind_check(const struct cfg_schema *schema, const struct cfg_bind_table *t, char **error)
{
    for (size_t i = 0; i < t->n; i++) {
        const struct cfg_bind *b = &t->binds[i];
        if (b->name[0] == '*') {
            if (b->kind != CFG_BIND_READ)
                return fail(error, "%s: %s: a family of parameters can only be read by code", t->owner, b->name);
            size_t k;
            for (k = 0; k < cfg_schema_count(schema); k++)
                if (cfg_bind_covers(b, cfg_schema_param(schema, k)->name))
                    break;
            if (k == cfg_schema_count(schema))
                return fail(error, "%s: %s: no declared parameter has this name", t->owner, b->name);
            continue;
        }
        const struct cfg_param *p = cfg_schema_find(schema, b->name);
        if (p == NULL)
            return fail(error, "%s: %s: not a declared parameter", t->owner, b->name);
        if (!kind_fits(b->kind, p))
            return fail(error, "%s: %s: the binding's kind does not suit the parameter's type", t->owner, b->name);
        if (b->kind == CFG_BIND_CHOICE) {
            size_t k = 0;
            for (; p->choices[k] && b->choices[k].word; k++)
                if (strcmp(p->choices[k], b->choices[k].word) != 0)
                    return fail(error, "%s: %s: choice %zu is \"%s\" in the schema, \"%s\" in the binding",
                                t->owner, b->name, k, p->choices[k], b->choices[k].word);
            if (p->choices[k] || b->choices[k].word)
                return fail(error, "%s: %s: the binding does not map every word of the schema, or more",
                            t->owner, b->name);
        }
    }
    return 0;
}
