/*
 * pgsql: lookup tables in PostgreSQL, configured by Postfix's pgsql_table(5)
 * files unchanged, answered asynchronously (Module API 1.1 lookup_async):
 *
 *   hosts = inet:127.0.0.1:5432 db2.example.com unix:/run/postgresql
 *   hosts = postgresql://postfix:secret@db.example.com/mail?sslmode=verify-full
 *   user = postfix
 *   password = secret
 *   dbname = mail
 *   query = SELECT goto FROM alias WHERE address = '%s' AND active
 *   result_format = %s      domain = example.com      expansion_limit = 1
 *
 * Expansions as Postfix's (and the sqlite module's): %s the key, %u its
 * local part, %d its domain, %1..%9 the domain's labels from the right,
 * %S %U %D the key's parts in result_format, %%; a key that lacks what the
 * query needs is not found without asking. Every row's non-NULL columns
 * are results, joined with commas; more than expansion_limit is an error.
 *
 * Injection: each expansion in the query is escaped by libpq for the
 * connection that runs it (PQescapeStringConn: the server's encoding and
 * standard_conforming_strings decide what a quote or a backslash needs),
 * in one pass, so a quote, a backslash, a % or SQL in a key is data inside
 * the query's '...' literal. An expansion outside quotes is warned about at
 * open, as Postfix does. A key that is not valid UTF-8 is not looked up.
 *
 * Asynchronous: per open table and per process, up to
 * pgsql_max_connections connections (libpq's PQconnectStart/PQconnectPoll,
 * PQsendQuery, PQconsumeInput, driven by fd watches), one query at a time
 * each, further lookups in a FIFO. hosts are tried in a random order, as
 * Postfix does; a host that failed is left alone for retry_interval. Each lookup is
 * bounded by pgsql_timeout from the moment it is asked; a lookup that finds
 * no live host, times out or gets an SQL error fails temporarily (the
 * client hears 451, never "unknown"). The blocking lookup (callers that
 * cannot wait) uses one connection of its own with the same bound
 * (connect_timeout and statement_timeout).
 *
 * Petrel's own settings cache_ttl, cache_negative_ttl and cache_size turn
 * on a per-table result cache (off by default) in front of both lookups;
 * errors are never cached. The cache, and the merging of lookups of a key
 * already asked, are the glue's (modules/common/remote_table.c), which the
 * type is declared through.
 *
 * A host may be a libpq connection URI (any "scheme://", Postfix 3.3+):
 * libpq reads all of it - TLS (sslmode, sslrootcert, sslcert, sslkey...)
 * included - and user, password and dbname of the file are not used for
 * it (dbname is needed only by a host that is not a URI, as in Postfix
 * 3.10). Messages show a URI without its password and query part. TLS
 * is libpq's for every host (sslmode from the URI or PGSSLMODE, default
 * prefer); PQconnectPoll drives the handshake, and a TLS failure is a
 * failed connection: a lookup error, never "not found".
 *
 * encoding (UTF8, Postfix 3.8+) is libpq's client_encoding; retry_interval
 * (60 s) and idle_interval (60 s: an idle connection of the non-blocking
 * client is closed) as Postfix.
 *
 * Not supported (refused at open, naming the line): the legacy
 * select_field/table/where_field/additional_conditions and select_function
 * (write a query), and tables or files in domain.
 *
 * Shared with mysql (modules/common): what both files say alike (hosts,
 * user, password, dbname, query..., retry_interval, idle_interval) and the
 * choice of a live host, sql_table.c; the asynchronous lookups' FIFO,
 * timeout and answer, sql_lookups.c. The connections, every libpq call
 * and the escaping are this file's.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <libpq-fe.h>

#include <petrel/plugin.h>

#include "remote_table.h"
#include "sql_lookups.h"
#include "sql_table.h"
#include "table_config.h"

struct pg_conn;

struct table {
    struct sql_table sql;         /* what mysql_table(5) files have too: hosts, query, user... */
    struct sql_lookups lookups;   /* the asynchronous lookups waiting or under way */
    const char *encoding;         /* "encoding" (UTF8): libpq's client_encoding */
    struct pg_conn *conns;
    int nconns;
    PGconn *blocking;             /* the blocking lookup's connection */
};

static const char *const known_names[] = {
    "hosts", "user", "password", "dbname", "query", "result_format", "domain", "expansion_limit", TABLE_CACHE_SETTINGS,
    "select_field", "table", "where_field", "additional_conditions", "select_function", "encoding",
    "retry_interval", "idle_interval", NULL,
};

/* ------------------------------------------------------------------ */
/* escaping for the query (the expansion is table_config.c's)          */

/* A key part inside the query's '...' literal: escaped by the library for
 * the connection that will run the query (PQescapeStringConn: encoding
 * and standard_conforming_strings aware), never by hand. */
struct escaper {
    PGconn *conn;
    int failed;
};

static void put_quoted(struct table_buffer *b, const char *s, size_t n, void *arg)
{
    struct escaper *esc = arg;
    char *to = malloc(2 * n + 1);
    if (to == NULL)
        abort();
    int err = 0;
    size_t len = PQescapeStringConn(esc->conn, to, s, n, &err);
    if (err)
        esc->failed = 1;
    table_buffer_put(b, to, len);
    free(to);
}

/* A connection to host, started (or, blocking, made). A URI host is
 * expanded by libpq (expand_dbname) after Petrel's own defaults, so what
 * it says wins, and user, password and dbname are not added to it, as
 * Postfix ignores them for a URI; the client encoding comes last, as
 * Postfix sets it after connecting. TLS is libpq's: sslmode and the other
 * ssl* keywords of the URI, or the PGSSLMODE... environment, and
 * PQconnectPoll drives the handshake like the rest of the start-up. */
static PGconn *connect_start(struct table *t, int host, int blocking)
{
    char timeout[32];
    snprintf(timeout, sizeof(timeout), "%u", (t->sql.timeout_ms + 999) / 1000);
    char options[64];
    snprintf(options, sizeof(options), "-c statement_timeout=%u", t->sql.timeout_ms);
    const struct sql_host *h = &t->sql.hosts.items[host];
    const char *keys[12], *values[12];
    int n = 0;
#define PARAM(k, v) (keys[n] = (k), values[n] = (v), n++)
    PARAM("connect_timeout", timeout);
    PARAM("options", options);
    PARAM("application_name", "petrel");
    if (h->uri) {
        PARAM("dbname", h->uri);
    } else {
        PARAM("host", h->socket ? h->socket : h->host);   /* libpq takes a socket's directory as the host */
        PARAM("port", h->port);
        PARAM("dbname", t->sql.dbname);
        PARAM("user", t->sql.user);
        PARAM("password", t->sql.password);
    }
    PARAM("client_encoding", t->encoding);
    PARAM(NULL, NULL);
#undef PARAM
    int expand = h->uri != NULL;
    return blocking ? PQconnectdbParams(keys, values, expand) : PQconnectStartParams(keys, values, expand);
}

/* ------------------------------------------------------------------ */
/* building the query, reading the result                              */

/* The query for key on conn; NULL when the key is not to be looked up
 * (*skip set) or the escaping failed (*skip clear). */
static char *make_query(const struct table *t, PGconn *conn, const char *key, int *skip)
{
    struct escaper esc = { conn, 0 };
    char *query = sql_table_query_expand(&t->sql, key, put_quoted, &esc, skip);
    if (query && esc.failed) {
        petrel_module_log(t->sql.module, PETREL_LOG_WARNING, "pgsql:%s: cannot escape the key \"%.100s\" for the "
                          "server's encoding: lookup error", t->sql.config, key);
        free(query);
        return NULL;
    }
    return query;
}

/* 1 found (*out malloc'd), 0 not found, -1 error (logged). */
static int read_result(const struct table *t, PGresult *res, const char *key, char **out)
{
    *out = NULL;
    ExecStatusType st = PQresultStatus(res);
    if (st != PGRES_TUPLES_OK) {
        const char *why = PQresultErrorMessage(res);
        petrel_module_log(t->sql.module, PETREL_LOG_WARNING, "pgsql:%s: query failed for \"%.100s\": %.*s",
                          t->sql.config, key, (int)strcspn(why, "\n"), why);
        return -1;
    }
    struct table_buffer result = { 0 };
    long count = 0;
    for (int row = 0; row < PQntuples(res); row++)
        for (int col = 0; col < PQnfields(res); col++) {
            if (PQgetisnull(res, row, col))
                continue;
            const char *text = PQgetvalue(res, row, col);
            if (table_query_result_add(&t->sql.q, t->sql.module, "pgsql", t->sql.config, key, text, &result,
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

/* ------------------------------------------------------------------ */
/* the asynchronous client (its lookups: sql_lookups.c)                */

enum conn_state { PG_CONNECTING, PG_IDLE, PG_BUSY };

struct pg_conn {
    struct pg_conn *next;
    struct table *t;
    PGconn *pg;
    int host;
    enum conn_state state;
    PostgresPollingStatusType polling;
    petrel_watch *watch;
    int watch_fd, watch_events;
    struct sql_request *req;
    petrel_timer *idle_timer;  /* idle_interval, while the connection has nothing to do */
};

static void dispatch(void *arg);
static void conn_io(int fd, int events, void *arg);

static void conn_free(struct pg_conn *c);

static void conn_idle_expired(void *arg)
{
    struct pg_conn *c = arg;
    c->idle_timer = NULL;
    if (c->state == PG_IDLE && c->req == NULL)
        conn_free(c);
}

/* An idle connection is closed after idle_interval (Postfix 3.9+), counted
 * from when it last became idle; a busy one has no idle timer. */
static void conn_idle_update(struct pg_conn *c, int restart)
{
    remote_idle_timer_update(c->t->sql.module, &c->idle_timer, c->state == PG_IDLE && c->req == NULL, restart,
                             c->t->sql.idle_ms, conn_idle_expired, c);
}

static void conn_watch(struct pg_conn *c, int events)
{
    int fd = PQsocket(c->pg);
    conn_idle_update(c, 0);
    if (c->watch && c->watch_fd == fd && c->watch_events == events)
        return;
    if (c->watch)
        petrel_watch_cancel(c->watch);
    c->watch = fd >= 0 ? petrel_watch_fd(c->t->sql.module, fd, events, conn_io, c) : NULL;
    c->watch_fd = fd;
    c->watch_events = events;
}

static void conn_free(struct pg_conn *c)
{
    struct table *t = c->t;
    for (struct pg_conn **p = &t->conns; *p; p = &(*p)->next)
        if (*p == c) {
            *p = c->next;
            break;
        }
    t->nconns--;
    if (c->watch)
        petrel_watch_cancel(c->watch);
    if (c->idle_timer)
        petrel_timer_cancel(c->idle_timer);
    PQfinish(c->pg);
    free(c);
}

/* A lookup timed out on c (sql_lookups.c): its answer would come for nobody. */
static void conn_abandon(void *arg)
{
    struct pg_conn *c = arg;
    c->req = NULL;
    conn_free(c);
}

/* The connection is unusable: its host is marked dead when it never
 * connected; its request goes back to the queue for another host (once
 * per host), or fails. */
static void conn_failed(struct pg_conn *c, const char *what)
{
    struct table *t = c->t;
    struct sql_request *r = c->req;
    const char *why = PQerrorMessage(c->pg);
    petrel_module_log(t->sql.module, PETREL_LOG_WARNING, "pgsql:%s: %s %s: %.*s", t->sql.config, what,
                      t->sql.hosts.items[c->host].name, (int)strcspn(why, "\n"), why);
    if (c->state == PG_CONNECTING)
        sql_table_host_failed(&t->sql, c->host);
    c->req = NULL;
    conn_free(c);
    if (r)
        sql_lookups_retry(&t->lookups, r);
    dispatch(t);
}

static void send_query(struct pg_conn *c)
{
    struct sql_request *r = c->req;
    struct table *t = c->t;
    int skip;
    char *query = make_query(t, c->pg, r->key, &skip);
    if (query == NULL) {
        c->req = NULL;
        r->conn = NULL;
        c->state = PG_IDLE;
        sql_request_answer(r, skip ? 0 : -1, NULL);
        dispatch(t);
        return;
    }
    int ok = PQsendQuery(c->pg, query);
    free(query);
    if (!ok) {
        conn_failed(c, "query on");
        return;
    }
    c->state = PG_BUSY;
    conn_watch(c, PQflush(c->pg) == 1 ? PETREL_WATCH_READ | PETREL_WATCH_WRITE : PETREL_WATCH_READ);
}

static void conn_io(int fd, int events, void *arg)
{
    (void)fd;
    struct pg_conn *c = arg;
    struct table *t = c->t;
    if (c->state == PG_CONNECTING) {
        c->polling = PQconnectPoll(c->pg);
        switch (c->polling) {
        case PGRES_POLLING_FAILED:
            conn_failed(c, "connect to");
            return;
        case PGRES_POLLING_READING:
            conn_watch(c, PETREL_WATCH_READ);
            return;
        case PGRES_POLLING_WRITING:
            conn_watch(c, PETREL_WATCH_WRITE);
            return;
        default:
            break;
        }
        PQsetnonblocking(c->pg, 1);
        c->state = PG_IDLE;
        conn_watch(c, PETREL_WATCH_READ);
        if (c->req)
            send_query(c);
        else
            dispatch(t);
        return;
    }
    if (c->state == PG_IDLE) {
        /* Nothing asked: the server closed the connection, or a notice. */
        if (!PQconsumeInput(c->pg) || PQstatus(c->pg) != CONNECTION_OK)
            conn_free(c);
        return;
    }
    if ((events & PETREL_WATCH_WRITE) && PQflush(c->pg) == 0)
        conn_watch(c, PETREL_WATCH_READ);
    if (!(events & PETREL_WATCH_READ))
        return;
    if (!PQconsumeInput(c->pg)) {
        conn_failed(c, "read from");
        return;
    }
    if (PQisBusy(c->pg))
        return;
    struct sql_request *r = c->req;
    char *value = NULL;
    int status = 0, have = 0;
    PGresult *res;
    while ((res = PQgetResult(c->pg)) != NULL) {
        if (!have) {
            status = read_result(t, res, r->key, &value);
            have = 1;
        }
        PQclear(res);
    }
    c->req = NULL;
    r->conn = NULL;
    c->state = PG_IDLE;
    /* Before answering: the answer may start the next lookup, which must
     * not be handed to a connection that is going away. */
    if (PQstatus(c->pg) != CONNECTION_OK)
        conn_free(c);
    else
        conn_idle_update(c, 1);
    sql_request_answer(r, status, value);
    free(value);
    dispatch(t);
}

/* A new connection to a live host, or NULL: no host is live, or the one
 * picked failed (marked dead, logged), or *why says what else failed (the
 * host is not at fault: trying another would fail the same way). */
static struct pg_conn *conn_open(struct table *t, const char **why)
{
    *why = NULL;
    int host = sql_table_pick_host(&t->sql);
    if (host < 0)
        return NULL;
    struct pg_conn *c = calloc(1, sizeof(*c));
    if (c == NULL) {
        *why = "out of memory";
        return NULL;
    }
    c->t = t;
    c->host = host;
    c->state = PG_CONNECTING;
    c->pg = connect_start(t, host, 0);
    c->watch_fd = -1;
    c->next = t->conns;
    t->conns = c;
    t->nconns++;
    if (c->pg == NULL) {
        /* libpq could not allocate its connection: not the host's fault */
        conn_free(c);
        *why = "out of memory";
        return NULL;
    }
    if (PQstatus(c->pg) == CONNECTION_BAD) {
        /* Reported from the loop: never answer inside lookup_async. */
        c->polling = PGRES_POLLING_FAILED;
    }
    conn_watch(c, PETREL_WATCH_WRITE);
    if (c->watch == NULL) {
        sql_table_host_failed(&t->sql, host);
        petrel_module_log(t->sql.module, PETREL_LOG_WARNING, "pgsql:%s: connect to %s: %s", t->sql.config,
                          t->sql.hosts.items[host].name, PQerrorMessage(c->pg));
        conn_free(c);
        return NULL;
    }
    return c;
}

/* Hands the waiting lookups to idle connections, opening more up to
 * pgsql_max_connections; while one that is still connecting is free, it
 * takes the next lookup when it is up. A connection that cannot be
 * started marks its host dead, and another live host is tried; one that
 * fails for want of memory fails the lookup (a temporary error), since
 * trying again at once would never end. */
static void dispatch(void *arg)
{
    struct table *t = arg;
    while (t->lookups.head) {
        struct pg_conn *idle = NULL;
        for (struct pg_conn *c = t->conns; c; c = c->next)
            if (c->state == PG_IDLE && c->req == NULL) {
                idle = c;
                break;
            }
        if (idle == NULL) {
            int connecting_free = 0;
            for (struct pg_conn *c = t->conns; c; c = c->next)
                connecting_free |= c->state == PG_CONNECTING && c->req == NULL;
            if (connecting_free || t->nconns >= t->sql.max_conns)
                return;   /* a connection that becomes free takes the next */
            const char *why;
            idle = conn_open(t, &why);
            if (idle == NULL) {
                if (why) {
                    sql_lookups_no_connection(&t->lookups, sql_lookups_next(&t->lookups), why);
                    continue;
                }
                if (sql_table_pick_host(&t->sql) >= 0)
                    continue;
                sql_lookups_unavailable(&t->lookups, sql_lookups_next(&t->lookups));
                continue;
            }
        }
        struct sql_request *r = sql_lookups_next(&t->lookups);
        idle->req = r;
        r->conn = idle;
        if (idle->state == PG_IDLE)
            send_query(idle);
    }
}

/* The asynchronous lookup (the glue, remote_table.c, answered from its
 * cache or joined a lookup in flight already). */
static void lookup_start(void *handle, struct remote_lookup *rl, const char *key)
{
    struct table *t = handle;
    sql_lookups_start(&t->lookups, rl, key);
}

/* ------------------------------------------------------------------ */
/* the blocking lookup                                                 */

static int lookup_server(struct table *t, const char *key, const char **value, petrel_pool *scratch)
{
    for (int attempt = 0; attempt < t->sql.hosts.n + 1; attempt++) {
        if (t->blocking && PQstatus(t->blocking) != CONNECTION_OK) {
            PQfinish(t->blocking);
            t->blocking = NULL;
        }
        if (t->blocking == NULL) {
            int host = sql_table_pick_host(&t->sql);
            if (host < 0)
                break;
            t->blocking = connect_start(t, host, 1);
            if (t->blocking == NULL || PQstatus(t->blocking) != CONNECTION_OK) {
                const char *why = t->blocking ? PQerrorMessage(t->blocking) : "out of memory";
                petrel_module_log(t->sql.module, PETREL_LOG_WARNING, "pgsql:%s: connect to %s: %.*s", t->sql.config,
                                  t->sql.hosts.items[host].name, (int)strcspn(why, "\n"), why);
                sql_table_host_failed(&t->sql, host);
                PQfinish(t->blocking);
                t->blocking = NULL;
                continue;
            }
        }
        int skip;
        char *query = make_query(t, t->blocking, key, &skip);
        if (query == NULL)
            return skip ? 0 : -1;
        PGresult *res = PQexec(t->blocking, query);
        free(query);
        if (res == NULL || PQstatus(t->blocking) != CONNECTION_OK) {
            PQclear(res);
            continue;   /* the connection broke: reconnect (another host, maybe) */
        }
        char *out = NULL;
        int status = read_result(t, res, key, &out);
        PQclear(res);
        if (status > 0)
            *value = petrel_pool_strdup(scratch, out);
        free(out);
        return status;
    }
    sql_table_warn_unavailable(&t->sql);
    return -1;
}

/* The blocking lookup (the glue's cache in front). */
static int blocking_lookup(void *handle, const char *key, const char **value, petrel_pool *scratch)
{
    struct table *t = handle;
    if (!table_query_eligible(&t->sql.q, key))
        return 0;
    return lookup_server(t, key, value, scratch);
}

/* ------------------------------------------------------------------ */
/* open, close, the module                                             */

static void table_close(void *handle)
{
    struct table *t = handle;
    while (t->conns) {
        struct pg_conn *c = t->conns;
        c->req = NULL;
        conn_free(c);
    }
    sql_lookups_drop(&t->lookups);   /* the core made their handles stale already */
    if (t->blocking)
        PQfinish(t->blocking);
    t->blocking = NULL;
}

static void *table_open(petrel_module *m, const char *name, petrel_pool *pool, struct table_cache_settings *cache,
                        const char **error)
{
    struct table *t = petrel_pool_zalloc(pool, sizeof(*t));
    struct table_settings c = { 0 };
    void *result = NULL;
    if (sql_table_file_read(&t->sql, m, "pgsql", name, known_names, &c, pool, error) != 0)
        goto out;
    /* Not shared with mysql: its list has no select_function (Postfix's
     * mysql_table(5) never had one), and each says it in its own words. */
    static const char *const legacy[] = { "select_field", "table", "where_field", "additional_conditions",
                                          "select_function", NULL };
    for (const char *const *k = legacy; *k; k++)
        if (table_settings_find(&c, *k)) {
            *error = petrel_pool_printf(pool, "line %d: %s: the legacy query parameters are not supported by "
                                        "Petrel: write the query with query =", table_settings_line(&c, *k), *k);
            goto out;
        }
    if (sql_table_hosts_read(&t->sql, &c, SQL_HOSTS_URI, 0, pool, error) != 0)
        goto out;
    t->encoding = table_settings_get(&c, "encoding", "UTF8");
    if (sql_table_intervals_read(&t->sql, &c, pool, error) != 0)
        goto out;
    if (sql_table_limits_read(&t->sql, &c, cache, pool, error) != 0)
        goto out;
    sql_lookups_init(&t->lookups, &t->sql, dispatch, conn_abandon, t);
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

static const petrel_param params[] = {
    { PETREL_PARAM_INIT, .name = "pgsql_timeout", .type = PETREL_PARAM_TIME, .default_value = "30s",
      .help = "how long one lookup may take (connection included) before it fails temporarily",
      .min = 1, .max = 3000 },
    { PETREL_PARAM_INIT, .name = "pgsql_max_connections", .type = PETREL_PARAM_INT, .default_value = "4",
      .help = "connections per table in each process; more lookups wait for one", .min = 1, .max = 100 },
    { .name = NULL },
};

static const struct remote_table_type remote_type = {
    .name = "pgsql", .open = table_open, .lookup = blocking_lookup, .start = lookup_start, .close = table_close,
    .handle_pattern = table_pattern,
};
REMOTE_TABLE_OPEN(open_remote, remote_type)

static const petrel_table_type table_types[] = {
    { PETREL_TABLE_TYPE_INIT, .name = "pgsql", .open = open_remote, REMOTE_TABLE_ENTRIES },
    { .name = NULL },
};

const petrel_module_desc petrel_module_descriptor = {
    PETREL_MODULE_INIT,
    .name = "pgsql",
    .version = "1.0",
    .description = "pgsql: lookup tables (Postfix's pgsql_table(5) configuration files), asynchronous",
    .params = params,
    .table_types = table_types,
    /* pgsql_timeout answers first; the core's guard only catches a lost lookup. */
    .hook_timeout_ms = 3600 * 1000,
};
