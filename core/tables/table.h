/*
 * Lookup tables: Postfix's DICT idea. A table is named "TYPE:NAME"
 * (texthash:/etc/petrel/access, regexp:/etc/petrel/header_checks,
 * inline:{ a=b }, ...). A registry maps type names to a struct tbl_type that
 * opens, queries and closes one kind of table; the built-in types are
 * registered by tbl_registry_new() and modules add more (lmdb:, sqlite:, ...).
 *
 * Design decisions:
 * - A registry is an object, not process state: each configuration
 *   generation can own one, and tests build their own.
 * - An open table owns two pools: one holds the type's handle and dies with
 *   it (a reload builds the new contents in a fresh pool and swaps only on
 *   success, so a bad edit never empties a live table); the other is scratch
 *   memory reset before every lookup, which is why a returned value is valid
 *   only until the next lookup, reload or close.
 * - Pattern types (regexp, pcre, cidr) set TBL_TYPE_PATTERN: access(5)-style
 *   callers query them once with the whole string, never with partial keys.
 */
#ifndef PETREL_TABLES_TABLE_H
#define PETREL_TABLES_TABLE_H

#include <stddef.h>

#include <petrel/pool.h>

enum { TBL_FOUND = 1, TBL_NOTFOUND = 0, TBL_ERROR = -1 };

/* Lowercase keys before lookup (Postfix's default for most maps). Applies to
 * fixed-string types only: pattern types decide case with their own flags. */
#define TBL_FLAG_FOLD_CASE 1

/* struct tbl_type.flags: the type matches patterns, not fixed keys. */
#define TBL_TYPE_PATTERN 1

/* Keys longer than this are refused with TBL_ERROR (and a warning), never
 * truncated: a truncated key could match an entry meant for another key.
 * Large enough for a header line at Postfix's header_size_limit. */
#define TBL_KEY_MAX (128 * 1024)

struct tbl_type {
    const char *name;   /* "texthash": the TYPE in TYPE:NAME */
    /* Opens NAME. Memory that lives as long as the handle comes from pool;
     * on failure returns NULL and sets *error to malloc'd text that does not
     * repeat the spec (tbl_open prefixes it). File syntax errors start with
     * "line N: " so the full message reads "regexp:/etc/x line 3: ...". */
    void *(*open)(const char *name, int flags, petrel_pool *pool, char **error);
    /* Returns TBL_FOUND (with *value set), TBL_NOTFOUND or TBL_ERROR. *value
     * may point into the handle or into scratch, which tbl_lookup resets
     * before each call. */
    int (*lookup)(void *handle, const char *key, const char **value, petrel_pool *scratch);
    /* Releases what the pool does not own (compiled regexps, connections). */
    void (*close)(void *handle);
    /* May be NULL: tbl_reload then re-opens NAME and swaps on success. A type
     * with its own reload must keep the old contents when it fails. */
    int (*reload)(void *handle, char **error);
    unsigned flags;     /* TBL_TYPE_* */
    /* Types registered at run time (by modules) carry their owner; when set,
     * open_owned is called instead of open, with this type. */
    void *owner;
    void *(*open_owned)(const struct tbl_type *type, const char *name, int flags, petrel_pool *pool,
                        char **error);
};

struct tbl_registry;
struct tbl;

/* A registry with the built-in types: texthash, inline, static, fail,
 * regexp, pcre, cidr, unix. */
struct tbl_registry *tbl_registry_new(void);
/* -1 (and nothing changes) when a type of that name is already known. */
int tbl_registry_add(struct tbl_registry *reg, const struct tbl_type *type);
const struct tbl_type *tbl_registry_find(const struct tbl_registry *reg, const char *name);
void tbl_registry_free(struct tbl_registry *reg);

/* Opens "TYPE:NAME". A "proxy:" prefix (Postfix's proxymap) is accepted and
 * ignored: Petrel reads tables in-process. On failure returns NULL with
 * *error (malloc'd, caller frees) naming the spec; an unknown type reads
 * "unsupported dictionary type: foo", and types Petrel provides elsewhere
 * (hash, lmdb, cdb, sqlite, pgsql, redis, ...) say where. */
struct tbl *tbl_open(const struct tbl_registry *reg, const char *spec, int flags, char **error);
/* TBL_FOUND / TBL_NOTFOUND / TBL_ERROR. *value is valid until the next
 * lookup, reload or close of this table. */
int tbl_lookup(struct tbl *t, const char *key, const char **value);
/* Re-reads the table (SIGHUP). On failure returns -1 with *error set and
 * keeps the old contents. */
int tbl_reload(struct tbl *t, char **error);
const char *tbl_spec(const struct tbl *t);
const struct tbl_type *tbl_get_type(const struct tbl *t);
/* True for regexp/pcre/cidr-like tables (see TBL_TYPE_PATTERN). */
int tbl_is_pattern(const struct tbl *t);
void tbl_close(struct tbl *t);

#endif
