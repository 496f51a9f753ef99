/*
 * The mysql module's shared declarations: an open table (what its
 * mysql_table(5) file says, and its connections) and the functions the
 * module's files share. mysql.c is the table type (reading the file, a
 * client handle with the table's options), mysql_query.c builds
 * a query (keys escaped by the library) and reads its result sets,
 * mysql_async.c is the non-blocking client (a state machine per
 * connection, on the loop's fd watches), mysql_blocking.c the blocking
 * lookup.
 */
#ifndef PETREL_MODULES_MYSQL_TABLE_H
#define PETREL_MODULES_MYSQL_TABLE_H

#include <mysql.h>

#include <petrel/plugin.h>

#include "remote_table.h"
#include "sql_lookups.h"
#include "sql_table.h"
#include "table_config.h"

struct my_conn;

struct table {
    struct sql_table sql;         /* what pgsql_table(5) files have too: hosts, query, user... */
    struct sql_lookups lookups;   /* the asynchronous lookups waiting or under way */
    const char *charset;          /* "charset" (utf8mb4): the connection's, for the server and the escaping */
    const char *option_file, *option_group; /* NULL, or "" for no group */
    const char *tls_cert_file, *tls_key_file, *tls_CAfile, *tls_CApath, *tls_ciphers; /* NULL: unset */
    int tls_verify_cert;          /* -1: unset (the library's default, off) */
    int require_result_set;
    struct my_conn *conns;
    int nconns;
    MYSQL *blocking;
};

/* mysql.c: a client handle with the table's options (NULL, logged). */
MYSQL *mysql_table_client_new(struct table *t, int nonblocking);
/* mysql.c: 1 when the connection's character set is not the table's: an
 * option file said otherwise (Postfix sets it again after connecting, too). */
int mysql_table_charset_differs(const struct table *t, MYSQL *m);

/* mysql_query.c: the query for key, its expansions escaped for conn
 * (malloc'd); NULL with *skip when key is not looked up (the query's
 * eligibility or template says so), NULL without it on an error (logged). */
char *mysql_table_make_query(const struct table *t, MYSQL *conn, const char *key, int *skip);
/* mysql_query.c: the answer from the query's result sets, as Postfix's
 * plmysql_query: the first one that returns data; a second one with data
 * is an error; no result set at all is an error with require_result_set =
 * yes, else "not found". 1 found (*out malloc'd), 0 not found, -1 error
 * (logged). res (NULL: none) is freed. */
int mysql_table_result_sets_answer(const struct table *t, MYSQL_RES *res, int more_sets, const char *key,
                                   char **out);

/* mysql_async.c: hands waiting lookups to connections (sql_lookups.h's
 * dispatch; arg is the table). */
void mysql_table_dispatch(void *arg);
/* mysql_async.c: closes the connection of a lookup that timed out
 * (sql_lookups.h's abandon). */
void mysql_table_conn_abandon(void *conn);
/* mysql_async.c: closes the table's connections and drops the lookups
 * waiting for one (the core made their handles stale already). */
void mysql_table_async_close(struct table *t);

/* mysql_blocking.c: the blocking lookup (the glue's cache in front), on a
 * connection of its own. */
int mysql_table_blocking_lookup(void *handle, const char *key, const char **value, petrel_pool *scratch);

#endif
