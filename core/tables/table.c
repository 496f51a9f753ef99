/*
 * The table layer proper: the type registry and the open-table object that
 * wraps a type's handle (see table.h for the contract).
 *
 * Types that Petrel provides outside the core (modules, petrelctl) or not at
 * all are listed in type_hints[], so "hash:/etc/aliases" fails with a message
 * that says what to load or build instead of a bare "unsupported type". A
 * module that registers one of these names takes precedence: the hint is
 * only consulted when the registry has no such type.
 */
#include "config.h"

#include <stdlib.h>
#include <string.h>

#include "lib/log.h"
#include "lib/xalloc.h"
#include "tables/table.h"
#include "tables/table_impl.h"

struct tbl_registry {
    const struct tbl_type **types;
    size_t count;
    size_t cap;
};

struct tbl {
    const struct tbl_type *type;
    char *spec;           /* as given, for messages */
    char *name;           /* NAME part of TYPE:NAME (after any proxy: prefix) */
    int flags;
    void *handle;
    petrel_pool *handle_pool;
    petrel_pool *scratch;
};

static const struct tbl_type *const builtin_types[] = {
    &tbl_type_texthash, &tbl_type_inline, &tbl_type_static, &tbl_type_fail,
    &tbl_type_regexp,   &tbl_type_pcre,   &tbl_type_cidr,    &tbl_type_unix,
};

static const struct {
    const char *type;
    const char *hint;
} type_hints[] = {
    { "hash", "the hash: type needs the lmdb module or `petrelctl map build` (not built yet)" },
    { "btree", "Berkeley DB tables are not supported: use texthash:, or lmdb: from the lmdb module" },
    { "dbm", "DBM tables are not supported: use texthash:, or lmdb: from the lmdb module" },
    { "sdbm", "SDBM tables are not supported: use texthash:, or lmdb: from the lmdb module" },
    { "lmdb", "it is provided by the lmdb module: add lmdb to `modules` in main.cf" },
    { "cdb", "it is provided by the cdb module and built with `petrelctl map build` (not built yet)" },
    { "sqlite", "it is provided by the sqlite module: add sqlite to `modules` in main.cf" },
    { "pgsql", "it is provided by the pgsql module: add pgsql to `modules` in main.cf" },
    { "redis", "it is provided by the redis module: add redis to `modules` in main.cf" },
    { "mysql", "no Petrel module provides mysql: tables yet" },
    { "ldap", "no Petrel module provides ldap: tables yet" },
    { "memcache", "no Petrel module provides memcache: tables yet" },
    { "socketmap", "no Petrel module provides socketmap: tables yet" },
    { "tcp", "no Petrel module provides tcp: tables yet" },
    { "unionmap", "composite tables (unionmap:) are not implemented yet" },
    { "pipemap", "composite tables (pipemap:) are not implemented yet" },
    { "randmap", "randmap: tables are not implemented yet" },
    { "environ", "environ: tables are not implemented yet" },
    { "nis", "NIS tables are not supported (unix:passwd.byname reads whatever NSS is configured)" },
    { "nisplus", "NIS+ tables are not supported" },
    { "netinfo", "NetInfo tables are not supported" },
};

struct tbl_registry *tbl_registry_new(void)
{
    struct tbl_registry *reg = xcalloc(1, sizeof(*reg));
    for (size_t i = 0; i < sizeof(builtin_types) / sizeof(builtin_types[0]); i++)
        if (tbl_registry_add(reg, builtin_types[i]) != 0)
            msg_panic("tbl_registry_new: duplicate built-in type %s", builtin_types[i]->name);
    return reg;
}

int tbl_registry_add(struct tbl_registry *reg, const struct tbl_type *type)
{
    if (type == NULL || type->name == NULL || (type->open == NULL && type->open_owned == NULL)
        || type->lookup == NULL || type->close == NULL)
        return -1;
    if (tbl_registry_find(reg, type->name) != NULL)
        return -1;
    if (reg->count == reg->cap) {
        reg->cap = reg->cap ? reg->cap * 2 : 16;
        reg->types = xrealloc(reg->types, reg->cap * sizeof(*reg->types));
    }
    reg->types[reg->count++] = type;
    return 0;
}

const struct tbl_type *tbl_registry_find(const struct tbl_registry *reg, const char *name)
{
    for (size_t i = 0; i < reg->count; i++)
        if (strcmp(reg->types[i]->name, name) == 0)
            return reg->types[i];
    return NULL;
}

void tbl_registry_free(struct tbl_registry *reg)
{
    if (reg == NULL)
        return;
    free(reg->types);
    free(reg);
}

static const char *type_hint(const char *type)
{
    for (size_t i = 0; i < sizeof(type_hints) / sizeof(type_hints[0]); i++)
        if (strcmp(type_hints[i].type, type) == 0)
            return type_hints[i].hint;
    return NULL;
}

/* Joins the spec and a type's message: "spec line 3: ..." or "spec: ...". */
static char *spec_error(const char *spec, const char *text)
{
    if (strncmp(text, "line ", 5) == 0)
        return tbl_strprintf("%s %s", spec, text);
    return tbl_strprintf("%s: %s", spec, text);
}

struct tbl *tbl_open(const struct tbl_registry *reg, const char *spec, int flags, char **error)
{
    const char *rest = spec;
    *error = NULL;
    /* proxymap exists to reach tables from a chroot; Petrel reads them
     * in-process, so "proxy:TYPE:NAME" simply means TYPE:NAME. */
    if (strncmp(rest, "proxy:", 6) == 0)
        rest += 6;
    const char *colon = strchr(rest, ':');
    if (colon == NULL || colon == rest) {
        *error = tbl_strprintf("open table: expecting \"type:name\" form instead of \"%s\"", spec);
        return NULL;
    }
    char *type_name = xstrndup(rest, (size_t)(colon - rest));
    const struct tbl_type *type = tbl_registry_find(reg, type_name);
    if (type == NULL) {
        const char *hint = type_hint(type_name);
        if (hint)
            *error = tbl_strprintf("%s: table type %s is not available: %s", spec, type_name, hint);
        else
            *error = tbl_strprintf("%s: unsupported dictionary type: %s", spec, type_name);
        free(type_name);
        return NULL;
    }
    free(type_name);

    struct tbl *t = xcalloc(1, sizeof(*t));
    t->type = type;
    t->spec = xstrdup(spec);
    t->name = xstrdup(colon + 1);
    t->flags = flags;
    t->handle_pool = petrel_pool_create(0);
    char *why = NULL;
    t->handle = type->open_owned ? type->open_owned(type, t->name, flags, t->handle_pool, &why)
                                 : type->open(t->name, flags, t->handle_pool, &why);
    if (t->handle == NULL) {
        *error = spec_error(spec, why ? why : "open failed");
        free(why);
        petrel_pool_destroy(t->handle_pool);
        free(t->name);
        free(t->spec);
        free(t);
        return NULL;
    }
    t->scratch = petrel_pool_create(0);
    return t;
}

int tbl_lookup(struct tbl *t, const char *key, const char **value)
{
    *value = NULL;
    petrel_pool_reset(t->scratch);
    size_t len = strnlen(key, TBL_KEY_MAX + 1);
    if (len > TBL_KEY_MAX) {
        msg_warn("%s: lookup key longer than %d bytes: refusing the lookup", t->spec, TBL_KEY_MAX);
        return TBL_ERROR;
    }
    if ((t->flags & TBL_FLAG_FOLD_CASE) && !(t->type->flags & TBL_TYPE_PATTERN))
        key = tbl_lowercase(t->scratch, key);
    int status = t->type->lookup(t->handle, key, value, t->scratch);
    if (status != TBL_FOUND)
        *value = NULL;
    return status;
}

int tbl_reload(struct tbl *t, char **error)
{
    char *why = NULL;
    *error = NULL;
    if (t->type->reload) {
        if (t->type->reload(t->handle, &why) == 0)
            return 0;
        *error = spec_error(t->spec, why ? why : "reload failed");
        free(why);
        return -1;
    }
    petrel_pool *fresh_pool = petrel_pool_create(0);
    void *fresh = t->type->open_owned ? t->type->open_owned(t->type, t->name, t->flags, fresh_pool, &why)
                                      : t->type->open(t->name, t->flags, fresh_pool, &why);
    if (fresh == NULL) {
        *error = spec_error(t->spec, why ? why : "reload failed");
        free(why);
        petrel_pool_destroy(fresh_pool);
        return -1;
    }
    t->type->close(t->handle);
    petrel_pool_destroy(t->handle_pool);
    petrel_pool_reset(t->scratch);   /* values from the old contents die here */
    t->handle = fresh;
    t->handle_pool = fresh_pool;
    return 0;
}

const char *tbl_spec(const struct tbl *t)
{
    return t->spec;
}

const struct tbl_type *tbl_get_type(const struct tbl *t)
{
    return t->type;
}

int tbl_is_pattern(const struct tbl *t)
{
    return (t->type->flags & TBL_TYPE_PATTERN) != 0;
}

void tbl_close(struct tbl *t)
{
    if (t == NULL)
        return;
    t->type->close(t->handle);
    petrel_pool_destroy(t->handle_pool);
    petrel_pool_destroy(t->scratch);
    free(t->name);
    free(t->spec);
    free(t);
}
