/*
 * The table layer proper: the type registry and the open-table object that
 * wraps a type's handle (see table.h for the contract).
 *
 * Types that Petrel provides outside the core (modules, petrelctl) or not at
 * all are listed in type_hints[], so "hash:/etc/aliases" fails with a message
 * that says what to load or build instead of a bare "unsupported type". A
 * module that registers one of these names takes precedence: the hint is
 * only consulted when the registry has no such type.
 *
 * File-based types (a suffix in struct tbl_type) get three things here,
 * so that every such type, built in or from a module, behaves the same:
 * a missing compiled file is an error that names the command that builds
 * it; a source file newer than its compiled file is warned about (Postfix:
 * "database X is older than source file Y"); and a compiled file replaced
 * by a rebuild is reopened by the next lookup after at most a second.
 */
#include "config.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "lib/hash.h"
#include "lib/log.h"
#include "lib/xalloc.h"
#include "tables/table.h"
#include "tables/table_impl.h"
#include "tables/table_int.h"

static const struct tbl_type *const builtin_types[] = {
    &tbl_type_texthash, &tbl_type_inline, &tbl_type_static, &tbl_type_fail,
    &tbl_type_regexp,   &tbl_type_pcre,   &tbl_type_cidr,    &tbl_type_unix, &tbl_type_hash,
};

static const struct {
    const char *type;
    const char *hint;
} type_hints[] = {
    { "btree", "Berkeley DB tables are not supported: use hash: (an LMDB file built by `petrelctl map build`)" },
    { "dbm", "DBM tables are not supported: use hash: (an LMDB file built by `petrelctl map build`)" },
    { "sdbm", "SDBM tables are not supported: use hash: (an LMDB file built by `petrelctl map build`)" },
    { "lmdb", "it is provided by the lmdb module: add lmdb to `modules` in main.cf" },
    { "cdb", "it is provided by the cdb module: add cdb to `modules` in main.cf" },
    { "sqlite", "it is provided by the sqlite module: add sqlite to `modules` in main.cf" },
    { "pgsql", "it is provided by the pgsql module: add pgsql to `modules` in main.cf" },
    { "redis", "it is provided by the redis module: add redis to `modules` in main.cf" },
    { "mysql", "it is provided by the mysql module: add mysql to `modules` in main.cf" },
    { "ldap", "it is provided by the ldap module: add ldap to `modules` in main.cf" },
    { "memcache", "no Petrel module provides memcache: tables yet" },
    { "socketmap", "it is provided by the socketmap module: add socketmap to `modules` in main.cf" },
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
    reg->said = xcalloc(1, sizeof(*reg->said));
    reg->async = xcalloc(1, sizeof(*reg->async));
    reg->observer = xcalloc(1, sizeof(*reg->observer));
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
    if ((type->flags & TBL_TYPE_REMOTE) && (type->lookup_start == NULL || type->lookup_cancel == NULL))
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
    for (size_t i = 0; i < reg->said->n; i++)
        free(reg->said->items[i]);
    free(reg->said->items);
    free(reg->said);
    free(reg->async);
    free(reg->observer);
    free(reg->types);
    free(reg);
}

/* 1 the first time this process is told about text (per registry). */
static int first_time(struct tbl_said *said, const char *text)
{
    if (said == NULL)
        return 1;
    for (size_t i = 0; i < said->n; i++)
        if (strcmp(said->items[i], text) == 0)
            return 0;
    said->items = xrealloc(said->items, (said->n + 1) * sizeof(*said->items));
    said->items[said->n++] = xstrdup(text);
    return 1;
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

/* Splits "[proxy:]TYPE:NAME": the type (NULL with *error when unknown)
 * and where NAME starts. */
static const struct tbl_type *parse_spec(const struct tbl_registry *reg, const char *spec, const char **name,
                                         char **error)
{
    const char *rest = spec;
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
    }
    free(type_name);
    *name = colon + 1;
    return type;
}

char *tbl_compiled_path(const struct tbl_registry *reg, const char *spec, const struct tbl_type **type_out)
{
    const char *name;
    char *error = NULL;
    const struct tbl_type *type = parse_spec(reg, spec, &name, &error);
    free(error);
    if (type_out)
        *type_out = type;
    if (type == NULL || type->suffix == NULL)
        return NULL;
    return tbl_strprintf("%s%s", name, type->suffix);
}

/* Why a file-based table could not be opened, with the command that
 * builds its compiled file when that file is missing. */
static char *open_error(const struct tbl *t, const char *why)
{
    if (t->compiled == NULL || access(t->compiled, F_OK) == 0 || errno != ENOENT)
        return spec_error(t->spec, why);
    char *hint;
    if (t->flags & TBL_FLAG_ALIASES)
        hint = tbl_strprintf("build it with `petrelctl newaliases` (alias_database) or `petrelctl alias build %s`",
                             t->spec);
    else
        hint = tbl_strprintf("build it with `petrelctl map build %s`", t->spec);
    char *text;
    if (access(t->name, F_OK) != 0)
        text = tbl_strprintf("%s; the source file %s does not exist either (create it, then %s)", why, t->name,
                             hint);
    else
        text = tbl_strprintf("%s; %s", why, hint);
    /* Postfix's postmap wrote NAME.db (Berkeley DB): say why it is not read. */
    struct stat st;
    char *db = tbl_strprintf("%s.db", t->name);
    if (strcmp(t->type->name, "hash") == 0 && stat(db, &st) == 0) {
        char *more = tbl_strprintf("%s (%s is a Berkeley DB file from Postfix: Petrel's hash: tables are LMDB "
                                   "files named NAME.lmdb)", text, db);
        free(text);
        text = more;
    }
    free(db);
    free(hint);
    char *out = spec_error(t->spec, text);
    free(text);
    return out;
}

/* Postfix's warning, except when the source changed only seconds ago (an
 * admin who is editing it right now). */
static void check_source_age(struct tbl *t)
{
    struct stat src, db;
    if ((t->flags & TBL_FLAG_QUIET) || stat(t->name, &src) != 0 || stat(t->compiled, &db) != 0)
        return;
    if (src.st_mtime > db.st_mtime && src.st_mtime < time(NULL) - 100) {
        char *text = tbl_strprintf("database %s is older than source file %s", t->compiled, t->name);
        if (first_time(t->said, text))
            msg_warn("%s", text);
        free(text);
    }
}

struct tbl *tbl_open(const struct tbl_registry *reg, const char *spec, int flags, char **error)
{
    const char *name;
    *error = NULL;
    const struct tbl_type *type = parse_spec(reg, spec, &name, error);
    if (type == NULL)
        return NULL;

    struct tbl *t = xcalloc(1, sizeof(*t));
    t->type = type;
    t->spec = xstrdup(spec);
    t->name = xstrdup(name);
    t->flags = flags;
    t->said = reg->said;
    t->async = reg->async;
    t->observer = reg->observer;
    /* An inline table's name is its content, which may hold secrets
       (smtp_sasl_password_maps = inline:{...}): its label shows a digest. */
    t->label = strcmp(type->name, "inline") == 0 ? tbl_strprintf("inline:{%08x}", hash_string(t->name))
                                                 : tbl_strprintf("%s:%s", type->name, t->name);
    struct stat st;
    if (type->suffix) {
        /* stat before open: a rebuild in between makes the next check
         * reopen once more, never miss the new file. */
        t->compiled = tbl_strprintf("%s%s", t->name, type->suffix);
        if (stat(t->compiled, &st) == 0) {
            t->dev = st.st_dev;
            t->ino = st.st_ino;
        }
        t->next_check = time(NULL) + 1;
    }
    t->handle_pool = petrel_pool_create(0);
    char *why = NULL;
    t->handle = type->open_owned ? type->open_owned(type, t->name, flags, t->handle_pool, &why)
                                 : type->open(t->name, flags, t->handle_pool, &why);
    if (t->handle == NULL) {
        *error = open_error(t, why ? why : "open failed");
        free(why);
        petrel_pool_destroy(t->handle_pool);
        free(t->compiled);
        free(t->label);
        free(t->name);
        free(t->spec);
        free(t);
        return NULL;
    }
    t->scratch = petrel_pool_create(0);
    if (t->compiled)
        check_source_age(t);
    return t;
}

/* At most once a second: has `petrelctl map build` (or anyone) replaced the
 * compiled file? Then reopen it; the old contents stay until the new file
 * opened, so a lookup never fails because of a rebuild. */
static void check_replaced(struct tbl *t)
{
    time_t now = time(NULL);
    if (now < t->next_check)
        return;
    t->next_check = now + 1;
    struct stat st;
    if (stat(t->compiled, &st) != 0) {
        if (!t->complained)
            msg_warn("%s: %s: %s; still using the copy that is open", t->spec, t->compiled, strerror(errno));
        t->complained = 1;
        return;
    }
    if (st.st_dev == t->dev && st.st_ino == t->ino)
        return;
    char *error = NULL;
    if (tbl_reload(t, &error) != 0) {
        if (!t->complained)
            msg_warn("%s was replaced but cannot be opened (%s); still using the old copy", t->compiled, error);
        t->complained = 1;
        free(error);
        return;
    }
    t->dev = st.st_dev;
    t->ino = st.st_ino;
    t->complained = 0;
    msg_info("%s: %s was rebuilt: now using the new file", t->spec, t->compiled);
    check_source_age(t);
}

void tbl_registry_observe(struct tbl_registry *reg, tbl_observe_fn *fn, void *arg)
{
    reg->observer->fn = fn;
    reg->observer->arg = arg;
}

const char *tbl_label(const struct tbl *t)
{
    return t->label;
}

int tbl_lookup(struct tbl *t, const char *key, const char **value)
{
    *value = NULL;
    /* A remote table inside a scope is told of when its answer comes
       (table_async.c); every other lookup here. */
    int observed = t->observer->fn != NULL && !((t->type->flags & TBL_TYPE_REMOTE) && t->async->current);
    double started = observed ? tbl_clock() : 0;
    petrel_pool_reset(t->scratch);
    size_t len = strnlen(key, TBL_KEY_MAX + 1);
    if (len > TBL_KEY_MAX) {
        msg_warn("%s: lookup key longer than %d bytes: refusing the lookup", t->spec, TBL_KEY_MAX);
        if (observed)
            t->observer->fn(t->observer->arg, t, TBL_ERROR, tbl_clock() - started);
        return TBL_ERROR;
    }
    if (t->compiled)
        check_replaced(t);
    if ((t->flags & TBL_FLAG_FOLD_CASE) && !(t->type->flags & TBL_TYPE_PATTERN))
        key = tbl_fold(t->scratch, key);
    int status = (t->type->flags & TBL_TYPE_REMOTE) ? tbl_remote_lookup(t, key, value)
                                                    : t->type->lookup(t->handle, key, value, t->scratch);
    if (status != TBL_FOUND)
        *value = NULL;
    if (observed && status != TBL_PENDING)
        t->observer->fn(t->observer->arg, t, status == TBL_FOUND || status == TBL_NOTFOUND ? status : TBL_ERROR,
                        tbl_clock() - started);
    return status;
}

int tbl_is_remote(const struct tbl *t)
{
    return (t->type->flags & TBL_TYPE_REMOTE) != 0;
}

int tbl_reload(struct tbl *t, char **error)
{
    char *why = NULL;
    *error = NULL;
    if (t->type->reload) {
        if (t->type->reload(t->handle, &why) == 0) {
            t->reloads++;
            return 0;
        }
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
    t->reloads++;
    return 0;
}

unsigned long tbl_generation(struct tbl *t)
{
    if (t->compiled)
        check_replaced(t);
    return t->reloads;
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
    return (t->type->flags & TBL_TYPE_PATTERN) != 0 ||
           (t->type->handle_pattern != NULL && t->type->handle_pattern(t->handle));
}

const char *tbl_data_file(const struct tbl *t)
{
    if (t->compiled)
        return t->compiled;
    return t->name[0] == '/' ? t->name : NULL;
}

int tbl_iterate(struct tbl *t, int (*fn)(void *arg, const void *key, size_t klen, const void *value, size_t vlen),
                void *arg, char **error)
{
    *error = NULL;
    if (t->type->iterate == NULL) {
        *error = tbl_strprintf("%s: the %s type cannot list its entries", t->spec, t->type->name);
        return -1;
    }
    char *why = NULL;
    if (t->type->iterate(t->handle, fn, arg, &why) != 0) {
        *error = spec_error(t->spec, why ? why : "read error");
        free(why);
        return -1;
    }
    return 0;
}

void tbl_close(struct tbl *t)
{
    if (t == NULL)
        return;
    t->type->close(t->handle);
    petrel_pool_destroy(t->handle_pool);
    petrel_pool_destroy(t->scratch);
    free(t->compiled);
    free(t->label);
    free(t->name);
    free(t->spec);
    free(t);
}
