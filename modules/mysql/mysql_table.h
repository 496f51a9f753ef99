/*
 * The mysql module's shared declarations: an open table (what its
 * mysql_table(5) file says, and its connections) and the functions the
 * module's files share. mysql.c is the table type (reading the file, the
 * hosts, a client handle with the table's options), mysql_query.c builds
 * a query (keys escaped by the library) and reads its result sets,
 * mysql_async.c is the non-blocking client (a state machine per
 * connection, on the loop's fd watches), mysql_blocking.c the blocking
 * lookup.
 */
#ifndef PETREL_MODULES_MYSQL_TABLE_H
#define PETREL_MODULES_MYSQL_TABLE_H

#include <time.h>

#include <mysql.h>

#include <petrel/plugin.h>

#include "remote_table.h"
#include "table_config.h"

#define MAX_HOSTS 16

struct my_host {
    const char *name;          /* as written */
    const char *host;          /* NULL with a socket */
    unsigned port;
    const char *socket;        /* unix:/path */
    time_t dead_until;
};

struct request;
struct my_conn;

struct table {
    petrel_module *module;
    const char *config;
    struct table_query_settings q; /* query, result_format, expansion_limit, domain */
    const char *user, *password, *dbname;
    const char *charset;          /* "charset" (utf8mb4): the connection's, for the server and the escaping */
    const char *option_file, *option_group; /* NULL, or "" for no group */
    const char *tls_cert_file, *tls_key_file, *tls_CAfile, *tls_CApath, *tls_ciphers; /* NULL: unset */
    int tls_verify_cert;          /* -1: unset (the library's default, off) */
    int require_result_set;
    unsigned retry_seconds;       /* "retry_interval": a host that failed is left alone this long */
    unsigned idle_ms;             /* "idle_interval": an idle connection is closed after this long */
    struct my_host hosts[MAX_HOSTS];
    int nhosts;
    unsigned timeout_ms;
    int max_conns;
    struct my_conn *conns;
    int nconns;
    struct request *queue_head, *queue_tail;
    MYSQL *blocking;
};

/* mysql.c: a live host chosen at random (one that failed is left alone
 * for retry_interval), or -1 when none is. */
int mysql_table_pick_host(struct table *t);
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

/* mysql_async.c: the asynchronous lookup (the glue, remote_table.c,
 * answered from its cache or joined a lookup in flight already). */
void mysql_table_lookup_start(void *handle, struct remote_lookup *rl, const char *key);
/* mysql_async.c: closes the table's connections and drops the lookups
 * waiting for one (the core made their handles stale already). */
void mysql_table_async_close(struct table *t);

/* mysql_blocking.c: the blocking lookup (the glue's cache in front), on a
 * connection of its own. */
int mysql_table_blocking_lookup(void *handle, const char *key, const char **value, petrel_pool *scratch);

#endif
