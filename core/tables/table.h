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
 * - File-based types (hash:, and lmdb: or cdb: from modules) read a compiled
 *   file, NAME + suffix, that `petrelctl map build` writes beside a
 *   temporary and renames into place. A table notices on its own when that
 *   file was replaced: at most once a second a lookup compares the path's
 *   inode with the open one, and reopens (keeping the old copy if the new one
 *   cannot be opened). A rename swaps whole files, so a lookup sees the old
 *   table or the new one, never a half-built file (doc/tables.md).
 */
#ifndef PETREL_TABLES_TABLE_H
#define PETREL_TABLES_TABLE_H

#include <stddef.h>
#include <sys/types.h>

#include <petrel/pool.h>

struct tbl_query;

/* TBL_ERROR is Postfix's DICT_ERR_RETRY as much as a broken table: the
 * table cannot answer now, which never means "not found" (a caller defers,
 * 451 4.3.0 or 451 4.3.5 as Postfix answers). TBL_PENDING: a remote table
 * inside a lookup scope has no answer yet (see "Remote tables" below); a
 * caller outside a scope never sees it. */
enum { TBL_FOUND = 1, TBL_NOTFOUND = 0, TBL_ERROR = -1, TBL_PENDING = -2 };

/* Lowercase keys before lookup (Postfix's default for most maps). Applies to
 * fixed-string types only: pattern types decide case with their own flags. */
#define TBL_FLAG_FOLD_CASE 1
/* The table is an alias database (alias_maps): messages about a missing
 * compiled file name `petrelctl newaliases` instead of `map build`. */
#define TBL_FLAG_ALIASES 2
/* No result may copy text from the key ($1 in regexp: and pcre:): Postfix's
 * DICT_FLAG_NO_REGSUB, for maps whose result is a path, a user or group ID,
 * or a next hop, where it would let a client choose one. Opening a pattern
 * table with such a rule fails, naming the line. */
#define TBL_FLAG_NO_REGSUB 4
/* Warnings about the table's files (a source newer than its compiled file)
 * are left to another opener of the same start (MAIL_MAPS_QUIET). */
#define TBL_FLAG_QUIET 8

/* struct tbl_type.flags: the type matches patterns, not fixed keys. */
#define TBL_TYPE_PATTERN 1
/* The type asks a server over the network (pgsql:, socketmap:, ...): it has
 * lookup_start, and its blocking lookup is used only where nobody can wait. */
#define TBL_TYPE_REMOTE 2

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

    /* File-based types: the compiled file is NAME + suffix (".lmdb"), and
     * the type can write one. NULL for every other type. */
    const char *suffix;
    /* Starts an empty table in the file at path (a temporary that the
     * table layer created and later fsyncs and renames). */
    void *(*build_open)(const struct tbl_type *type, const char *path, petrel_pool *pool, char **error);
    /* Stores key and value as the bytes given (the caller decides case
     * folding and NUL termination). Returns 0 added, 1 the key existed (its
     * old value is kept, or replaced when replace is set), -1 error. */
    int (*build_put)(void *builder, const void *key, size_t klen, const void *value, size_t vlen, int replace,
                     char **error);
    /* commit 1: finish the file; 0: abandon it. Returns 0 or -1. */
    int (*build_close)(void *builder, int commit, char **error);
    /* Every entry of an open table, in database order, as stored; stops
     * early when fn returns non-zero. Returns 0 or -1 (*error set). */
    int (*iterate)(void *handle, int (*fn)(void *arg, const void *key, size_t klen, const void *value, size_t vlen),
                   void *arg, char **error);
    /* May be NULL: 1 when this open table is a pattern table although its
     * type is not (an SQL query using %u or %d). */
    int (*handle_pattern)(void *handle);

    /* Remote types (TBL_TYPE_REMOTE): starts looking up key (already case
     * folded) and answers later with tbl_query_answer(q, ...), exactly
     * once, from the event loop; answering before lookup_start returns is
     * allowed (the table layer notices). The type answers TBL_ERROR itself
     * when its server is down or its own timeout passes. */
    void (*lookup_start)(void *handle, const char *key, struct tbl_query *q);
    /* The caller gave up on q (the session ended, a timeout): q must not be
     * answered after this returns. */
    void (*lookup_cancel)(void *handle, struct tbl_query *q);
};

struct tbl_registry;
struct tbl;

/* A registry with the built-in types: texthash, inline, static, fail,
 * regexp, pcre, cidr, unix, hash. */
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
/* How many times t's contents were replaced: tbl_reload, or a rebuilt
 * compiled file, which this notices as a lookup does (its path is looked
 * at once a second at most). A caller that keeps answers derived from t
 * (mail/class_cache.h) compares it to know when they may be stale. */
unsigned long tbl_generation(struct tbl *t);
const char *tbl_spec(const struct tbl *t);
const struct tbl_type *tbl_get_type(const struct tbl *t);
/* True for regexp/pcre/cidr-like tables (see TBL_TYPE_PATTERN). */
int tbl_is_pattern(const struct tbl *t);
/* The file whose owner and permissions speak for the table: the compiled
 * file of a file-based type, else NAME when it is an absolute path; NULL
 * for tables without a file (inline:, static:, unix:, ...). */
const char *tbl_data_file(const struct tbl *t);
/* Every entry (see struct tbl_type.iterate); -1 with *error (malloc'd)
 * when the type cannot list its entries. */
int tbl_iterate(struct tbl *t, int (*fn)(void *arg, const void *key, size_t klen, const void *value, size_t vlen),
                void *arg, char **error);
void tbl_close(struct tbl *t);

/* Told of every lookup that asked a table (the metrics): the table, its
 * answer (TBL_FOUND, TBL_NOTFOUND, TBL_ERROR) and how long it took. A
 * remote table's lookup is told when its answer comes (an answer from a
 * scope's memo is not another lookup). Set in a role process, once. */
typedef void tbl_observe_fn(void *arg, const struct tbl *t, int status, double seconds);
void tbl_registry_observe(struct tbl_registry *reg, tbl_observe_fn *fn, void *arg);
/* "TYPE:NAME" without a proxy: prefix, for the metrics' labels; an inline
 * table (whose name is its content) is "inline:{XXXXXXXX}", a digest. */
const char *tbl_label(const struct tbl *t);

/* ------------------------------------------------------------------ */
/* Remote tables (doc/architecture.md, "Tables that wait").
 *
 * A lookup in a remote table cannot answer at once. Callers that can wait
 * (smtpd's restriction engine) run their synchronous code inside a lookup
 * scope: tbl_lookup() on a remote table then answers from the scope's
 * memo, or records the (table, key) as missing and returns TBL_PENDING,
 * which every caller treats as an unfinished step. The caller throws the
 * step's result away, has the scope fetch what is missing
 * (tbl_scope_fetch, asynchronously, all in parallel), and runs the step
 * again when the answers are in: the same keys now answer from the memo,
 * and the next missing key (an access(5) search tries several) repeats the
 * cycle. The memo lives as long as the caller says (one SMTP command in
 * smtpd), so every answer is as fresh as Postfix's.
 *
 * The queue manager routes a message inside a scope too (qmgr/message.c).
 * Outside a scope (cleanup, petrelctl) a remote table's
 * blocking lookup runs, bounded by its own timeout. */

struct tbl_scope;
/* A scope holds at most this many answers; a step that wants more gets
 * TBL_ERROR (logged) for the extra keys. */
#define TBL_SCOPE_MAX_ANSWERS 64

struct tbl_scope *tbl_scope_new(void);
/* A scope that holds up to max_answers (the queue manager routes every
 * recipient of a message in one scope, so that their lookups run in
 * parallel). */
struct tbl_scope *tbl_scope_new_sized(size_t max_answers);
/* How many times a lookup in sc answered TBL_PENDING so far: a caller that
 * runs several independent steps in one pass (the recipients of a message)
 * compares it before and after each to tell which are unfinished. */
unsigned long tbl_scope_pending_count(const struct tbl_scope *sc);
/* Cancels what is in flight and forgets every answer. */
void tbl_scope_reset(struct tbl_scope *sc);
void tbl_scope_free(struct tbl_scope *sc);
/* Lookups of reg's remote tables consult sc until tbl_scope_leave(). */
void tbl_scope_enter(struct tbl_registry *reg, struct tbl_scope *sc);
void tbl_scope_leave(struct tbl_registry *reg);
/* Keys a lookup asked for since the last fetch that have no answer yet. */
int tbl_scope_missing(const struct tbl_scope *sc);
/* Starts lookups for every missing key. Returns 0 when all of them
 * answered at once (run the step again now; done is not called), 1 when
 * done(arg) will be called from the loop once they all have. */
int tbl_scope_fetch(struct tbl_scope *sc, void (*done)(void *arg), void *arg);
/* Stops the lookups in flight (done is not called); answers are kept. */
void tbl_scope_cancel(struct tbl_scope *sc);

/* One asynchronous lookup, without a scope (modules' petrel_table_lookup).
 * fn(arg, status, value) runs once, later, from the loop, unless
 * tbl_query_cancel() came first; value lives until fn returns. For local
 * tables the caller looks up synchronously instead (tbl_is_remote). */
typedef void tbl_answer_fn(void *arg, int status, const char *value);
struct tbl_query *tbl_query_start(struct tbl *t, const char *key, tbl_answer_fn *fn, void *arg);
/* The same, with the key folded exactly as tbl_lookup() folds it (not for
 * a pattern type such as socketmap:), for a core caller that replaces a
 * tbl_lookup(); tbl_query_start folds whenever the table was opened with
 * TBL_FLAG_FOLD_CASE (PETREL_TABLE_FOLD_CASE: the modules' contract). */
struct tbl_query *tbl_query_start_lookup(struct tbl *t, const char *key, tbl_answer_fn *fn, void *arg);
void tbl_query_cancel(struct tbl_query *q);
/* For types: the answer to q (value copied). */
void tbl_query_answer(struct tbl_query *q, int status, const char *value);
/* The table q looks in (for the type's messages). */
const char *tbl_query_spec(const struct tbl_query *q);
int tbl_is_remote(const struct tbl *t);

/* "NAME.lmdb" for hash:NAME: the compiled file of a file-based TYPE:NAME
 * spec (malloc'd), or NULL when the type has none. *type_out, when not
 * NULL, gets the type (NULL when unknown). */
char *tbl_compiled_path(const struct tbl_registry *reg, const char *spec, const struct tbl_type **type_out);

/* ------------------------------------------------------------------ */
/* Writing a compiled file (petrelctl map build): the entries go to a
 * temporary file beside the compiled one; commit fsyncs it, gives it the
 * source file's permissions (and, as root, its owner, as postmap does) and
 * renames it over the compiled file, then fsyncs the directory. A running
 * petreld keeps reading the old file until it notices the new one. */

struct tbl_build;
struct tbl_build_options {
    const char *source;      /* the file whose mode (and owner, as root) the result takes; NULL: none */
    int default_mode;        /* postmap -p: 0644 whatever the source's mode */
};
/* Starts writing TYPE:NAME (NAME + suffix). NULL with *error (malloc'd)
 * when the type is unknown or cannot be written. */
struct tbl_build *tbl_build_begin(const struct tbl_registry *reg, const char *spec,
                                  const struct tbl_build_options *opts, char **error);
/* As struct tbl_type.build_put. */
int tbl_build_put(struct tbl_build *b, const void *key, size_t klen, const void *value, size_t vlen, int replace,
                  char **error);
/* Finishes and installs the file; on failure nothing is installed and the
 * temporary is removed. Frees b either way. */
int tbl_build_commit(struct tbl_build *b, char **error);
/* Removes the temporary. Frees b. */
void tbl_build_abort(struct tbl_build *b);
/* The path being written (for messages). */
const char *tbl_build_path(const struct tbl_build *b);

#endif
