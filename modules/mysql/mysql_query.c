/*
 * The mysql module's query and its answer: the query text for a key, each
 * expansion escaped by the client library for the connection that runs it
 * (the expansion itself is table_config.c's), and the answer read from the
 * result sets, as Postfix's dict_mysql reads them. Both clients
 * (mysql_async.c, mysql_blocking.c) use these.
 */
#include <stdlib.h>

#include <mysql.h>

#include <petrel/plugin.h>

#include "mysql_table.h"

/* ------------------------------------------------------------------ */
/* escaping for the query (the expansion is table_config.c's)          */

/* A key part inside the query's '...' literal: escaped by the library for
 * the connection that will run the query (mysql_real_escape_string: the
 * connection's character set decides), never by hand. */
struct escaper {
    MYSQL *conn;
    int failed;
};

static void put_quoted(struct table_buffer *b, const char *s, size_t n, void *arg)
{
    struct escaper *esc = arg;
    char *to = malloc(2 * n + 1);
    if (to == NULL)
        abort();
    unsigned long len = mysql_real_escape_string(esc->conn, to, s, (unsigned long)n);
    if (len == (unsigned long)-1)
        esc->failed = 1;
    else
        table_buffer_put(b, to, len);
    free(to);
}

/* ------------------------------------------------------------------ */
/* building the query, reading the result                              */

char *mysql_table_make_query(const struct table *t, MYSQL *conn, const char *key, int *skip)
{
    struct escaper esc = { conn, 0 };
    char *query = sql_table_query_expand(&t->sql, key, put_quoted, &esc, skip);
    if (query && esc.failed) {
        petrel_module_log(t->sql.module, PETREL_LOG_WARNING, "mysql:%s: cannot escape the key \"%.100s\": lookup "
                          "error", t->sql.config, key);
        free(query);
        return NULL;
    }
    return query;
}

/* 1 found (*out malloc'd), 0 not found, -1 error (logged). */
static int read_result(const struct table *t, MYSQL_RES *res, const char *key, char **out)
{
    *out = NULL;
    struct table_buffer result = { 0 };
    long count = 0;
    unsigned fields = mysql_num_fields(res);
    MYSQL_ROW row;
    while ((row = mysql_fetch_row(res)) != NULL)
        for (unsigned col = 0; col < fields; col++) {
            if (row[col] == NULL)
                continue;
            if (table_query_result_add(&t->sql.q, t->sql.module, "mysql", t->sql.config, key, row[col], &result,
                                       &count) < 0) {
                free(result.data);
                return -1;
            }
        }
    if (result.len == 0) {
        free(result.data);
        return 0;
    }
    *out = result.data;
    return 1;
}

int mysql_table_result_sets_answer(const struct table *t, MYSQL_RES *res, int more_sets, const char *key,
                                   char **out)
{
    *out = NULL;
    int st;
    if (more_sets) {
        petrel_module_log(t->sql.module, PETREL_LOG_WARNING, "mysql:%s: query failed: multiple result sets returning "
                          "data are not supported", t->sql.config);
        st = -1;
    } else if (res == NULL) {
        if (t->require_result_set)
            petrel_module_log(t->sql.module, PETREL_LOG_WARNING, "mysql:%s: the query returned no result set "
                              "(require_result_set = yes)", t->sql.config);
        st = t->require_result_set ? -1 : 0;
    } else {
        st = read_result(t, res, key, out);
    }
    if (res)
        mysql_free_result(res);
    return st;
}

