/*
 * mysql: lookup tables in MySQL or MariaDB, configured by Postfix's
 * mysql_table(5) files unchanged, answered asynchronously (Module API 1.1
 * lookup_async) with MariaDB Connector/C's non-blocking API:
 *
 *   hosts = inet:127.0.0.1:3306 unix:/run/mysqld/mysqld.sock db2.example.com
 *   user = postfix
 *   password = secret
 *   dbname = mail
 *   query = SELECT goto FROM alias WHERE address = '%s' AND active = 1
 *   result_format = %s      domain = example.com      expansion_limit = 1
 *
 * Expansions, results, domain and expansion_limit as the pgsql and sqlite
 * modules (Postfix's db_common).
 *
 * Injection: each expansion in the query is escaped by the client library
 * for the connection that runs it (mysql_real_escape_string: the
 * connection's character set decides what a quote, a backslash or a NUL
 * needs), in one pass, so a quote, a backslash, a % or SQL in a key is data
 * inside the query's '...' literal. An expansion outside quotes is warned
 * about at open, as Postfix does. A key that is not valid UTF-8 is not
 * looked up. Connections use "charset" (utf8mb4, Postfix 3.9's default),
 * set again after connecting when an option file chose another.
 *
 * TLS and option files as Postfix's dict_mysql with MariaDB Connector/C:
 * tls_cert_file, tls_key_file, tls_CAfile, tls_CApath and tls_ciphers are
 * the library's MYSQL_OPT_SSL_* (any of them asks for TLS; without
 * tls_verify_cert = yes the library neither checks the server's name nor
 * refuses a server without TLS); tls_verify_cert is
 * MYSQL_OPT_SSL_VERIFY_SERVER_CERT (unset: the library's default, off in
 * Connector/C 3.3, on in 3.4+).
 * option_file and option_group (default "client", as Postfix 3.2+: the
 * [client] group of the default my.cnf files is read) are
 * MYSQL_READ_DEFAULT_FILE/GROUP; the library reads them while connecting
 * (briefly blocking, local files), and what they say wins. Files named by
 * tls_* and option_file must exist at open (petreld -n). A TLS failure
 * is a failed connection: a lookup error, never "not found".
 *
 * Asynchronous: per open table and per process, up to
 * mysql_max_connections connections, each driven through
 * mysql_real_connect_start/_cont, mysql_real_query_start/_cont and
 * mysql_store_result_start/_cont from fd watches, one query at a time,
 * further lookups in a FIFO. hosts are tried in a random order, as Postfix
 * does; a host that failed is left alone for retry_interval. Each lookup is bounded
 * by mysql_timeout from the moment it is asked; no live host, a timeout or
 * an SQL error fails the lookup temporarily (451, never "unknown"). The
 * blocking lookup (callers that cannot wait) uses a connection of its own
 * with the connect, read and write timeouts set to the same bound.
 *
 * Petrel's own settings cache_ttl, cache_negative_ttl and cache_size turn
 * on a per-table result cache (off by default) in front of both lookups;
 * errors are never cached. The cache, and the merging of lookups of a key
 * already asked, are the glue's (modules/common/remote_table.c), which the
 * type is declared through.
 *
 * Every result set of a query is read (a stored procedure's CALL ends with
 * a status result); the first with data answers, a second with data is an
 * error, as in Postfix. require_result_set (yes), retry_interval (60 s)
 * and idle_interval (60 s: an idle connection of the non-blocking client
 * is closed) as Postfix.
 *
 * Not supported (refused at open, naming the line): the legacy
 * select_field/table/where_field/additional_conditions (write a query),
 * and tables or files in domain.
 *
 * Files: this one is the table type (the file, a client handle
 * with the table's options, the module); mysql_query.c builds a query and
 * reads its results, mysql_async.c is the non-blocking client,
 * mysql_blocking.c the blocking lookup (mysql_table.h declares what they
 * share). Shared with pgsql (modules/common): what both files say alike
 * (hosts, user, password, dbname, query..., retry_interval, idle_interval)
 * and the choice of a live host, sql_table.c; the asynchronous lookups'
 * FIFO, timeout and answer, sql_lookups.c.
 */
#include <string.h>

#include <mysql.h>

#include <petrel/plugin.h>

#include "mysql_table.h"

static const char *const known_names[] = {
    "hosts", "user", "password", "dbname", "query", "result_format", "domain", "expansion_limit", TABLE_CACHE_SETTINGS,
    "select_field", "table", "where_field", "additional_conditions", "charset", "option_file",
    "option_group", "tls_cert_file", "tls_key_file", "tls_CAfile", "tls_CApath", "tls_ciphers", "tls_verify_cert",
    "require_result_set", "retry_interval", "idle_interval", NULL,
};

/* A client handle with the table's options, in Postfix's order: the option
 * file and group first (the library reads them when it connects, and what
 * they say wins over what is set here, as in Postfix), then the TLS
 * settings. Any tls_* file or cipher list makes the library ask for TLS;
 * tls_verify_cert = yes also makes it check the server's certificate
 * (chain and name) and refuse a server without TLS. */
MYSQL *mysql_table_client_new(struct table *t, int nonblocking)
{
    MYSQL *m = mysql_init(NULL);
    if (m == NULL)
        return NULL;
    unsigned timeout = (t->sql.timeout_ms + 999) / 1000;
    int bad = 0;
    bad |= mysql_optionsv(m, MYSQL_OPT_CONNECT_TIMEOUT, &timeout);
    bad |= mysql_optionsv(m, MYSQL_OPT_READ_TIMEOUT, &timeout);
    bad |= mysql_optionsv(m, MYSQL_OPT_WRITE_TIMEOUT, &timeout);
    bad |= mysql_optionsv(m, MYSQL_SET_CHARSET_NAME, t->charset);
    if (t->option_file)
        bad |= mysql_optionsv(m, MYSQL_READ_DEFAULT_FILE, t->option_file);
    if (t->option_group && *t->option_group)
        bad |= mysql_optionsv(m, MYSQL_READ_DEFAULT_GROUP, t->option_group);
    if (t->tls_key_file)
        bad |= mysql_optionsv(m, MYSQL_OPT_SSL_KEY, t->tls_key_file);
    if (t->tls_cert_file)
        bad |= mysql_optionsv(m, MYSQL_OPT_SSL_CERT, t->tls_cert_file);
    if (t->tls_CAfile)
        bad |= mysql_optionsv(m, MYSQL_OPT_SSL_CA, t->tls_CAfile);
    if (t->tls_CApath)
        bad |= mysql_optionsv(m, MYSQL_OPT_SSL_CAPATH, t->tls_CApath);
    if (t->tls_ciphers)
        bad |= mysql_optionsv(m, MYSQL_OPT_SSL_CIPHER, t->tls_ciphers);
    if (t->tls_verify_cert >= 0) {
        my_bool verify = (my_bool)t->tls_verify_cert;
        bad |= mysql_optionsv(m, MYSQL_OPT_SSL_VERIFY_SERVER_CERT, &verify);
    }
    if (nonblocking)
        bad |= mysql_optionsv(m, MYSQL_OPT_NONBLOCK, 0);
    if (bad) {
        petrel_module_log(t->sql.module, PETREL_LOG_WARNING, "mysql:%s: cannot set the client's options: %s",
                          t->sql.config, mysql_error(m));
        mysql_close(m);
        return NULL;
    }
    return m;
}

int mysql_table_charset_differs(const struct table *t, MYSQL *m)
{
    const char *now = mysql_character_set_name(m);
    return now == NULL || strcmp(now, t->charset) != 0;
}

/* ------------------------------------------------------------------ */
/* open, close, the module                                             */

static void table_close(void *handle)
{
    struct table *t = handle;
    mysql_table_async_close(t);
    if (t->blocking)
        mysql_close(t->blocking);
    t->blocking = NULL;
}

static void *table_open(petrel_module *m, const char *name, petrel_pool *pool, struct table_cache_settings *cache,
                        const char **error)
{
    struct table *t = petrel_pool_zalloc(pool, sizeof(*t));
    struct table_settings c = { 0 };
    void *result = NULL;
    if (sql_table_file_read(&t->sql, m, "mysql", name, known_names, &c, pool, error) != 0)
        goto out;
    /* Not shared with pgsql: pgsql's list has select_function too (only
     * Postfix's pgsql_table(5) had one), and each says it in its own words. */
    static const char *const legacy[] = { "select_field", "table", "where_field", "additional_conditions", NULL };
    for (const char *const *k = legacy; *k; k++)
        if (table_settings_find(&c, *k)) {
            *error = petrel_pool_printf(pool, "line %d: %s: not supported by Petrel's mysql module (write the "
                                        "query with query =)", table_settings_line(&c, *k), *k);
            goto out;
        }
    /* The files are the library's to read when it connects; a missing one
     * is refused now (petreld -n) rather than failing every lookup. */
    *error = NULL;
    t->tls_cert_file = table_settings_path(&c, "tls_cert_file", 0, pool, error);
    t->tls_key_file = *error ? NULL : table_settings_path(&c, "tls_key_file", 0, pool, error);
    t->tls_CAfile = *error ? NULL : table_settings_path(&c, "tls_CAfile", 0, pool, error);
    t->tls_CApath = *error ? NULL : table_settings_path(&c, "tls_CApath", 1, pool, error);
    t->option_file = *error ? NULL : table_settings_path(&c, "option_file", 0, pool, error);
    if (*error)
        goto out;
    t->tls_ciphers = table_settings_get(&c, "tls_ciphers", NULL);
    t->option_group = table_settings_get(&c, "option_group", "client");
    t->charset = table_settings_get(&c, "charset", "utf8mb4");
    if (table_settings_bool(&c, "tls_verify_cert", -1, &t->tls_verify_cert, pool, error) != 0 ||
        table_settings_bool(&c, "require_result_set", 1, &t->require_result_set, pool, error) != 0 ||
        sql_table_intervals_read(&t->sql, &c, pool, error) != 0)
        goto out;
    if (*t->charset == '\0') {
        *error = petrel_pool_printf(pool, "line %d: charset is empty", table_settings_line(&c, "charset"));
        goto out;
    }
    /* Ports are numbers for the library, 3306 when a host names none. */
    if (sql_table_hosts_read(&t->sql, &c, 0, 3306, pool, error) != 0)
        goto out;
    if (sql_table_limits_read(&t->sql, &c, cache, pool, error) != 0)
        goto out;
    sql_lookups_init(&t->lookups, &t->sql, mysql_table_dispatch, mysql_table_conn_abandon, t);
    result = t;
out:
    table_settings_free(&c);
    return result;
}

static int table_pattern(void *handle)
{
    const struct table *t = handle;
    return table_template_partial(&t->sql.q.tpl);
}

/* The asynchronous lookup (the glue, remote_table.c, answered from its
 * cache or joined a lookup in flight already). */
static void lookup_start(void *handle, struct remote_lookup *rl, const char *key)
{
    struct table *t = handle;
    sql_lookups_start(&t->lookups, rl, key);
}

static void my_fini(petrel_module *m)
{
    (void)m;
    mysql_thread_end();
}

static const petrel_param params[] = {
    { PETREL_PARAM_INIT, .name = "mysql_timeout", .type = PETREL_PARAM_TIME, .default_value = "30s",
      .help = "how long one lookup may take (connection included) before it fails temporarily",
      .min = 1, .max = 3000 },
    { PETREL_PARAM_INIT, .name = "mysql_max_connections", .type = PETREL_PARAM_INT, .default_value = "4",
      .help = "connections per table in each process; more lookups wait for one", .min = 1, .max = 100 },
    { .name = NULL },
};

static const struct remote_table_type remote_type = {
    .name = "mysql", .open = table_open, .lookup = mysql_table_blocking_lookup, .start = lookup_start,
    .close = table_close, .handle_pattern = table_pattern,
};
REMOTE_TABLE_OPEN(open_remote, remote_type)

static const petrel_table_type table_types[] = {
    { PETREL_TABLE_TYPE_INIT, .name = "mysql", .open = open_remote, REMOTE_TABLE_ENTRIES },
    { .name = NULL },
};

const petrel_module_desc petrel_module_descriptor = {
    PETREL_MODULE_INIT,
    .name = "mysql",
    .version = "1.0",
    .description = "mysql: lookup tables (Postfix's mysql_table(5) configuration files), asynchronous",
    .params = params,
    .table_types = table_types,
    .fini = my_fini,
    /* mysql_timeout answers first; the core's guard only catches a lost lookup. */
    .hook_timeout_ms = 3600 * 1000,
};
