/*
 * What a pgsql_table(5) and a mysql_table(5) file have in common, as
 * Postfix's dict_pgsql.c and dict_mysql.c read them alike: the hosts
 * list (and the choice of a live host among them), user, password,
 * dbname, the query settings (table_config.h's table_query_settings),
 * retry_interval and idle_interval, and the module's TYPE_timeout and
 * TYPE_max_connections. The pgsql and mysql modules keep one struct
 * sql_table in their table and read it with these functions, each at the
 * point of its table_open where it read the same settings before, so
 * that a file with several mistakes is refused for the same one.
 *
 * What only one type has stays in its module: the legacy parameters each
 * refuses (pgsql's list has select_function, which mysql_table(5) never
 * had), pgsql's encoding, mysql's charset, option files, TLS settings and
 * require_result_set, and every call into libpq or MariaDB Connector/C.
 * The two differences the hosts list has are flags here: connection
 * URIs (pgsql only, Postfix 3.3+) and whether a port must be a number
 * (mysql: the library takes a number; libpq takes the text and checks it).
 */
#ifndef PETREL_MODULES_SQL_TABLE_H
#define PETREL_MODULES_SQL_TABLE_H

#include <time.h>

#include <petrel/plugin.h>

#include "table_cache.h"
#include "table_config.h"

#define SQL_MAX_HOSTS 16

struct sql_host {
    const char *name;       /* for messages: as written; a URI without its password and query */
    const char *host;       /* a name or an address; NULL for a socket or a URI */
    const char *port;       /* as written after the host; NULL: none given */
    unsigned port_number;   /* with a default port: the port as a number (0 for a socket) */
    const char *socket;     /* unix:PATH: the path (mysql: the socket, pgsql: its directory) */
    const char *uri;        /* SQL_HOSTS_URI: a connection URI, whole, for the library */
    time_t dead_until;      /* it failed: left alone until then */
};

struct sql_hosts {
    struct sql_host items[SQL_MAX_HOSTS];
    int n;
    const char *not_uri;    /* the last host that is not a URI, as written (it needs dbname), or NULL */
};

/* flags of sql_table_hosts_read */
#define SQL_HOSTS_URI 1     /* "scheme://..." is a connection URI the library reads whole (pgsql) */

/* What the file said that both types read alike, and the module's limits. */
struct sql_table {
    petrel_module *module;
    const char *type;             /* "pgsql" or "mysql": messages, the module's parameter names */
    const char *config;           /* the file, for messages */
    struct table_query_settings q; /* query, result_format, expansion_limit, domain */
    struct sql_hosts hosts;
    const char *user, *password, *dbname;
    unsigned retry_seconds;       /* "retry_interval": a host that failed is left alone this long */
    unsigned idle_ms;             /* "idle_interval": an idle connection is closed after this long */
    unsigned timeout_ms;          /* TYPE_timeout: one lookup, connection included */
    int max_conns;                /* TYPE_max_connections: per table and process */
};

/* The start of table_open: name must be a file's path (main.cf parameters
 * are refused with the type's man page named); reads it into *c (to be
 * freed with table_settings_free, also on an error), fills s's module,
 * type and config, and warns about every name not in known. 0, or -1 with
 * *error. */
int sql_table_file_read(struct sql_table *s, petrel_module *m, const char *type, const char *name,
                        const char *const *known, struct table_settings *c, petrel_pool *pool, const char **error);

/* query (and result_format, expansion_limit, domain), hosts (flags:
 * SQL_HOSTS_*; default_port not 0: ports are numbers, and that one when a
 * host names none), user, password and dbname, which every host that is
 * not a URI needs. 0, or -1 with *error naming the line. */
int sql_table_hosts_read(struct sql_table *s, const struct table_settings *c, unsigned flags, unsigned default_port,
                         petrel_pool *pool, const char **error);

/* retry_interval and idle_interval (60 s each, as Postfix's; idle at most
 * a day). 0, or -1 with *error naming the line. */
int sql_table_intervals_read(struct sql_table *s, const struct table_settings *c, petrel_pool *pool,
                             const char **error);

/* The end of table_open: TYPE_timeout and TYPE_max_connections from the
 * module's parameters, and the result cache the file asks for
 * (cache_ttl...: table_cache.h). 0, or -1 with *error naming the line. */
int sql_table_limits_read(struct sql_table *s, const struct table_settings *c, struct table_cache_settings *cache,
                          petrel_pool *pool, const char **error);

/* A live host, chosen at random among the live ones (Postfix's order), or
 * -1 when every host failed within retry_interval. */
int sql_table_pick_host(const struct sql_table *s);
/* Host i failed to connect: left alone for retry_interval. */
void sql_table_host_failed(struct sql_table *s, int i);
/* Logs "TYPE:FILE: no database server available". */
void sql_table_warn_unavailable(const struct sql_table *s);

/* The query for key, each expansion passed through escape (the library's,
 * for the connection that will run it); malloc'd. NULL with *skip set
 * when key is not to be looked up (the domain list, UTF-8, or what the
 * query needs of the key). */
char *sql_table_query_expand(const struct sql_table *s, const char *key, table_escape_fn *escape, void *escape_arg,
                             int *skip);

#endif
