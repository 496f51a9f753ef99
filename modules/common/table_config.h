/*
 * What the database table modules (sqlite, pgsql, mysql, ldap, redis) share, as
 * Postfix's cfg_parser and db_common do for its *_table(5) types:
 *
 * - the configuration file reader: "name = value" lines in main.cf's
 *   syntax (comments, blank lines, continuation lines that start with
 *   white space), the last setting of a name winning, each remembered with
 *   its line for messages;
 * - the templates (query, query_filter, search_base, result_format) and
 *   their expansion: %s the key, %u its local part, %d its domain, %1..%9
 *   the domain's labels from the right, %S %U %D the key's parts in a
 *   result_format, %%. A key that lacks what a template needs is not
 *   looked up at all. Every piece of the key that enters a query passes
 *   through the caller's escaping function (the database library's, or
 *   RFC 4515/4514 for LDAP): the expansion never pastes key bytes raw;
 * - the domain list ("domain = example.com, !other.example, /file");
 * - the settings every query table reads alike (table_query_settings:
 *   query, result_format, expansion_limit, domain) and the gathering of
 *   results into one comma-separated answer, so that pgsql, mysql,
 *   sqlite and redis parse and answer them in one way, with one set of
 *   messages.
 *
 * The expansion works on C strings the core hands over; it allocates with
 * malloc (the caller frees the buffer) and aborts when memory runs out,
 * as the modules did. Files and names that come from the admin, not from
 * the network, are the only things read here.
 */
#ifndef PETREL_MODULES_TABLE_CONFIG_H
#define PETREL_MODULES_TABLE_CONFIG_H

#include <stddef.h>

#include <petrel/plugin.h>

struct table_setting {
    const char *name, *value;
    int line;
};

struct table_settings {
    struct table_setting *items;
    size_t n;
};

/* Reads path into *c (pool strings, items malloc'd: table_settings_free).
 * 0, or -1 with *error naming the line. */
int table_settings_read(const char *path, struct table_settings *c, petrel_pool *pool, const char **error);
void table_settings_free(struct table_settings *c);
const struct table_setting *table_settings_find(const struct table_settings *c, const char *name);
const char *table_settings_get(const struct table_settings *c, const char *name, const char *def);
int table_settings_line(const struct table_settings *c, const char *name);   /* 0 when unset */
/* A yes/no setting (yes, true, 1 / no, false, 0, as Postfix's
 * cfg_get_bool): *out is def when unset. 0, or -1 with *error naming the
 * line. */
int table_settings_bool(const struct table_settings *c, const char *name, int def, int *out, petrel_pool *pool,
                        const char **error);
/* A whole number of at least min: *out is def when unset. 0, or -1 with
 * *error naming the line. */
int table_settings_long(const struct table_settings *c, const char *name, long def, long min, long *out,
                        petrel_pool *pool, const char **error);
/* The file (or, with directory, the directory) a setting names: NULL when
 * unset; when set, it must exist and be of that kind, else NULL with
 * *error naming the line, the setting and the file. Checked at open, so
 * that petreld -n refuses a TLS setting whose file is missing instead of
 * every lookup failing later. */
const char *table_settings_path(const struct table_settings *c, const char *name, int directory, petrel_pool *pool,
                                const char **error);
/* Warns (TYPE:FILE, line N: unknown parameter "x" is ignored) for every
 * name not in known (NULL-terminated). */
void table_settings_warn_unknown(const struct table_settings *c, petrel_module *m, const char *type,
                                 const char *path, const char *const *known);

/* A growing, NUL-terminated byte buffer (malloc). */
struct table_buffer {
    char *data;
    size_t len, cap;
};
void table_buffer_put(struct table_buffer *b, const char *s, size_t n);

/* What a table's templates need of a key; one per table, filled by parsing
 * every template of the table (Postfix's db_common_parse). */
struct table_template {
    unsigned needs;
    int nparts;   /* the highest %1..%9 */
};
#define TABLE_NEEDS_KEY_USER 1
#define TABLE_NEEDS_KEY_DOMAIN 2
#define TABLE_NEEDS_VALUE_USER 4
#define TABLE_NEEDS_VALUE_DOMAIN 8

/* Adds format's needs; query is 1 for a template expanded with the key,
 * 0 for a result_format. Returns the number of expansions of the key
 * (0: the template does not depend on it), or -1 with *bad set to the
 * character after an unknown %. */
int table_template_parse(struct table_template *t, const char *format, int query, char *bad);

/* 1 when the templates need %u or %d: Postfix then treats the table as a
 * pattern table, queried once with the whole string. */
int table_template_partial(const struct table_template *t);

/* Appends s[0..n) to out, escaped for its place in a query. */
typedef void table_escape_fn(struct table_buffer *out, const char *s, size_t n, void *arg);

/* Expands format for value (the key, for a query: key is then NULL; a
 * result otherwise, key being the lookup key). Every expansion goes
 * through escape (NULL: appended as is, for result_format only). A
 * result is separated from what out holds already by a comma. Returns 0
 * when value (or key) lacks what the templates need, 1 when appended. */
int table_template_expand(const struct table_template *t, const char *format, const char *value, const char *key,
                          table_escape_fn *escape, void *escape_arg, struct table_buffer *out);

/* Postfix's warning for %x outside a '...' literal in an SQL query. */
void table_warn_unquoted(petrel_module *m, const char *type, const char *path, int line, const char *query);

/* "domain = name, !name, /file": keys in other domains are not looked up. */
struct table_domain_item {
    const char *name;
    int negate;
};
struct table_domains {
    struct table_domain_item *items;   /* NULL: every key is eligible */
    size_t n;
};
int table_domains_parse(struct table_domains *d, const char *list, int line, const char *type, petrel_pool *pool,
                        const char **error);
int table_domains_eligible(const struct table_domains *d, const char *key);

/* 1 when s is valid UTF-8 (Postfix does not look up other keys). */
int table_valid_utf8(const char *s);

/* What pgsql, mysql, sqlite and redis read alike (Postfix's db_common). */
struct table_query_settings {
    const char *query;          /* "query": one template, or (redis) words the module splits */
    int query_line;             /* its line, for messages */
    const char *result_format;  /* "%s" unless set */
    long expansion_limit;       /* 0: no limit */
    struct table_template tpl;  /* the needs of query and result_format */
    struct table_domains domains;
};
/* flags of table_query_settings_parse */
#define TABLE_QUERY_TEMPLATE 1   /* query is one SQL template: parse it, warn about %x outside '' */

/* Reads query (unless the caller has set q->query and q->query_line
 * already, as sqlite does from the legacy fields; when neither is there,
 * *error is missing_query), expansion_limit, result_format and domain
 * from c, for the table type's file path (messages). With
 * TABLE_QUERY_TEMPLATE the query's expansions are parsed too; without it
 * the caller parses the query's pieces into q->tpl itself (redis). 0, or
 * -1 with *error (pool text) naming the line. */
int table_query_settings_parse(struct table_query_settings *q, const struct table_settings *c, petrel_module *m,
                               const char *type, const char *path, unsigned flags, const char *missing_query,
                               petrel_pool *pool, const char **error);

/* 1 when key is to be looked up: valid UTF-8, in the domain list. */
int table_query_eligible(const struct table_query_settings *q, const char *key);

/* Adds one value the database answered for key to out, through
 * result_format; an empty value is ignored with Postfix's warning. -1
 * (logged) when more than expansion_limit results are there, else 0. */
int table_query_result_add(const struct table_query_settings *q, petrel_module *m, const char *type,
                           const char *path, const char *key, const char *value, struct table_buffer *out,
                           long *count);

#endif
