/*
 * sqlite: lookup tables in an SQLite database, configured by Postfix's
 * sqlite_table(5) files unchanged:
 *
 *   dbpath = /etc/postfix/virtual.sqlite
 *   query = SELECT target FROM aliases WHERE address = '%s'
 *   result_format = %s          (optional)
 *   domain = example.com, /etc/postfix/sqlite-domains   (optional)
 *   expansion_limit = 1         (optional)
 *
 * The query expansions are Postfix's: %s the key, %u its local part, %d its
 * domain, %1..%9 the domain's labels from the right, %S %U %D the key's
 * parts in result_format, %% a percent sign; a key that lacks what the
 * query needs (no domain for %d, an empty local part for %u, too few labels)
 * is not found without asking the database. The legacy select_field,
 * table, where_field and additional_conditions build the query when query
 * is not set.
 *
 * Injection: every expansion is quoted for a single-quoted SQL literal
 * (a ' becomes '', as sqlite3_mprintf's %q does, which is all SQLite needs:
 * a backslash is not special there), and the expansion is done in one pass,
 * so a % or a quote in a key is data and can only ever match a row or not.
 * An expansion outside '...' in the query is warned about at open, as
 * Postfix does. Keys are C strings: a NUL byte cannot be part of one.
 *
 * Lookups run on the role's event loop: the database is a local file,
 * opened read-only; a lookup waits at most 100 ms for a writer's lock, then
 * fails with a temporary error (the mail is deferred, never "not found").
 * A query that uses %u, %d or %1..%9 makes the table a pattern table, as in
 * Postfix: it is asked with the full address only.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sqlite3.h>

#include <petrel/plugin.h>

#include "table_config.h"

#define BUSY_TIMEOUT_MS 100

struct table {
    petrel_module *module;
    const char *config;           /* the .cf file, for messages */
    sqlite3 *db;
    struct table_query_settings q; /* query, result_format, expansion_limit, domain */
};

static const char *const known_names[] = {
    "dbpath", "query", "result_format", "domain", "expansion_limit",
    "select_field", "table", "where_field", "additional_conditions", NULL,
};

/* ------------------------------------------------------------------ */
/* escaping for the query (the expansion is table_config.c's)          */

/* A single-quoted SQL literal's content: ' doubled (sqlite3_mprintf %q). */
static void put_quoted(struct table_buffer *b, const char *s, size_t n, void *unused)
{
    (void)unused;
    for (size_t i = 0; i < n; i++) {
        table_buffer_put(b, s + i, 1);
        if (s[i] == '\'')
            table_buffer_put(b, "'", 1);
    }
}

/* ------------------------------------------------------------------ */
/* the table type                                                      */

static void table_close(void *handle)
{
    struct table *t = handle;
    if (t->db)
        sqlite3_close(t->db);
    t->db = NULL;
}

static void *table_open(petrel_module *m, const char *name, petrel_pool *pool, const char **error)
{
    if (name[0] != '/' && name[0] != '.') {
        *error = petrel_pool_printf(pool, "parameters in main.cf (%s_query, ...) are not supported: name a "
                                    "sqlite_table(5) configuration file by its path", name);
        return NULL;
    }
    struct table_settings c = { 0 };
    if (table_settings_read(name, &c, pool, error) != 0) {
        table_settings_free(&c);
        return NULL;
    }
    struct table *t = petrel_pool_zalloc(pool, sizeof(*t));
    t->module = m;
    t->config = petrel_pool_strdup(pool, name);
    void *result = NULL;
    table_settings_warn_unknown(&c, m, "sqlite", name, known_names);
    const char *dbpath = table_settings_get(&c, "dbpath", "");
    if (table_settings_find(&c, "query") == NULL) {
        const char *table = table_settings_get(&c, "table", NULL),
                   *select = table_settings_get(&c, "select_field", NULL),
                   *where = table_settings_get(&c, "where_field", NULL);
        if (table && select && where) {
            t->q.query = petrel_pool_printf(pool, "SELECT %s FROM %s WHERE %s='%%s' %s", select, table, where,
                                            table_settings_get(&c, "additional_conditions", ""));
            t->q.query_line = table_settings_line(&c, "table");
        }
    }
    if (table_query_settings_parse(&t->q, &c, m, "sqlite", name, TABLE_QUERY_TEMPLATE,
                                   "no query (and not all of the legacy table, select_field and where_field are set)",
                                   pool, error) != 0)
        goto out;
    if (*dbpath == '\0') {
        *error = petrel_pool_printf(pool, "dbpath is not set");
        goto out;
    }
    int rc = sqlite3_open_v2(dbpath, &t->db, SQLITE_OPEN_READONLY | SQLITE_OPEN_NOMUTEX, NULL);
    if (rc != SQLITE_OK) {
        *error = petrel_pool_printf(pool, "line %d: dbpath: open database %s: %s", table_settings_line(&c, "dbpath"),
                                    dbpath,
                                    t->db ? sqlite3_errmsg(t->db) : sqlite3_errstr(rc));
        goto out;
    }
    sqlite3_busy_timeout(t->db, BUSY_TIMEOUT_MS);
    /* Prepare the query once with a harmless key, so that a misspelt
     * table or column is reported now, naming the file and line. */
    struct table_buffer probe = { 0 };
    table_template_expand(&t->q.tpl, t->q.query, "probe@a.b.c.d.e.f.g.h.i", NULL, put_quoted, NULL, &probe);
    sqlite3_stmt *stmt = NULL;
    rc = sqlite3_prepare_v2(t->db, probe.data ? probe.data : t->q.query, -1, &stmt, NULL);
    free(probe.data);
    if (rc != SQLITE_OK) {
        *error = petrel_pool_printf(pool, "line %d: query: %s", t->q.query_line, sqlite3_errmsg(t->db));
        sqlite3_finalize(stmt);
        goto out;
    }
    sqlite3_finalize(stmt);
    result = t;
out:
    if (result == NULL)
        table_close(t);
    table_settings_free(&c);
    return result;
}

static int table_lookup(void *handle, const char *key, const char **value, petrel_pool *scratch)
{
    struct table *t = handle;
    if (!table_query_eligible(&t->q, key))
        return 0;
    struct table_buffer query = { 0 }, result = { 0 };
    if (!table_template_expand(&t->q.tpl, t->q.query, key, NULL, put_quoted, NULL, &query))
        return 0;
    int status = 0;
    long count = 0;
    sqlite3_stmt *stmt = NULL;
    int rc = sqlite3_prepare_v2(t->db, query.data, -1, &stmt, NULL);
    if (rc != SQLITE_OK) {
        petrel_module_log(t->module, PETREL_LOG_WARNING, "sqlite:%s: SQL prepare failed: %s", t->config,
                          sqlite3_errmsg(t->db));
        status = -1;
    }
    while (status == 0 && (rc = sqlite3_step(stmt)) != SQLITE_DONE) {
        if (rc != SQLITE_ROW) {
            petrel_module_log(t->module, PETREL_LOG_WARNING, "sqlite:%s: SQL step failed for the lookup of \"%s\": %s",
                              t->config, key, sqlite3_errmsg(t->db));
            status = -1;
            break;
        }
        const char *text = (const char *)sqlite3_column_text(stmt, 0);
        if (text == NULL)
            continue;
        if (table_query_result_add(&t->q, t->module, "sqlite", t->config, key, text, &result, &count) < 0)
            status = -1;
    }
    sqlite3_finalize(stmt);
    if (status == 0 && result.len > 0) {
        *value = petrel_pool_strdup(scratch, result.data);
        status = 1;
    }
    free(query.data);
    free(result.data);
    return status;
}

static int table_pattern(void *handle)
{
    const struct table *t = handle;
    return table_template_partial(&t->q.tpl);
}

static const petrel_table_type table_types[] = {
    {
        PETREL_TABLE_TYPE_INIT,
        .name = "sqlite",
        .open = table_open,
        .lookup = table_lookup,
        .close = table_close,
        .handle_pattern = table_pattern,
    },
    { .name = NULL },
};

const petrel_module_desc petrel_module_descriptor = {
    PETREL_MODULE_INIT,
    .name = "sqlite",
    .version = "1.0",
    .description = "sqlite: lookup tables (Postfix's sqlite_table(5) configuration files)",
    .table_types = table_types,
};
