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
 * looked up. Connections use utf8mb4.
 *
 * Asynchronous: per open table and per process, up to
 * mysql_max_connections connections, each driven through
 * mysql_real_connect_start/_cont, mysql_real_query_start/_cont and
 * mysql_store_result_start/_cont from fd watches, one query at a time,
 * further lookups in a FIFO. hosts are tried in a random order, as Postfix
 * does; a host that failed is left alone for 60 s. Each lookup is bounded
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
 * Not supported (refused at open, naming the line): the legacy
 * select_field/table/where_field/additional_conditions (write a query),
 * option_file/option_group, tls_* settings, and tables or files in domain.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <sys/socket.h>

#include <mysql.h>

#include <petrel/plugin.h>

#include "remote_table.h"
#include "table_config.h"

#define HOST_RETRY_SECONDS 60
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
    struct my_host hosts[MAX_HOSTS];
    int nhosts;
    unsigned timeout_ms;
    int max_conns;
    struct my_conn *conns;
    int nconns;
    struct request *queue_head, *queue_tail;
    MYSQL *blocking;
};

static const char *const known_names[] = {
    "hosts", "user", "password", "dbname", "query", "result_format", "domain", "expansion_limit", TABLE_CACHE_SETTINGS,
    "select_field", "table", "where_field", "additional_conditions", "select_function", NULL,
};

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
/* hosts                                                               */

static int parse_hosts(struct table *t, const char *list, int line, petrel_pool *pool, const char **error)
{
    char *copy = petrel_pool_strdup(pool, list), *save = NULL;
    for (char *item = strtok_r(copy, ", \t", &save); item; item = strtok_r(NULL, ", \t", &save)) {
        if (t->nhosts == MAX_HOSTS) {
            *error = petrel_pool_printf(pool, "line %d: hosts: more than %d hosts", line, MAX_HOSTS);
            return -1;
        }
        struct my_host *h = &t->hosts[t->nhosts++];
        memset(h, 0, sizeof(*h));
        h->name = item;
        if (strncmp(item, "unix:", 5) == 0) {
            h->socket = item + 5;
            continue;
        }
        const char *rest = strncmp(item, "inet:", 5) == 0 ? item + 5 : item;
        char *hp = petrel_pool_strdup(pool, rest);
        char *colon = strrchr(hp, ':');
        if (hp[0] == '[') {
            char *close = strchr(hp, ']');
            if (close == NULL) {
                *error = petrel_pool_printf(pool, "line %d: hosts: bad host \"%s\"", line, item);
                return -1;
            }
            *close = '\0';
            colon = close[1] == ':' ? close + 1 : NULL;
            hp++;
        }
        if (colon)
            *colon = '\0';
        h->host = hp;
        char *end = NULL;
        long port = colon ? strtol(colon + 1, &end, 10) : 3306;
        if (*h->host == '\0' || (colon && (*end != '\0' || port < 1 || port > 65535))) {
            *error = petrel_pool_printf(pool, "line %d: hosts: bad host \"%s\"", line, item);
            return -1;
        }
        h->port = (unsigned)port;
    }
    if (t->nhosts == 0)
        t->hosts[t->nhosts++] = (struct my_host){ "localhost", "localhost", 3306, NULL, 0 };
    return 0;
}

static int pick_host(struct table *t)
{
    time_t now = time(NULL);
    int live[MAX_HOSTS], n = 0;
    for (int i = 0; i < t->nhosts; i++)
        if (t->hosts[i].dead_until <= now)
            live[n++] = i;
    if (n == 0)
        return -1;
    return live[n > 1 ? rand() % n : 0];
}

static MYSQL *client_new(struct table *t, int nonblocking)
{
    MYSQL *m = mysql_init(NULL);
    if (m == NULL)
        return NULL;
    unsigned timeout = (t->timeout_ms + 999) / 1000;
    mysql_options(m, MYSQL_OPT_CONNECT_TIMEOUT, &timeout);
    mysql_options(m, MYSQL_OPT_READ_TIMEOUT, &timeout);
    mysql_options(m, MYSQL_OPT_WRITE_TIMEOUT, &timeout);
    mysql_options(m, MYSQL_SET_CHARSET_NAME, "utf8mb4");
    if (nonblocking)
        mysql_options(m, MYSQL_OPT_NONBLOCK, 0);
    return m;
}

/* ------------------------------------------------------------------ */
/* building the query, reading the result                              */

static int eligible(const struct table *t, const char *key);

static char *make_query(const struct table *t, MYSQL *conn, const char *key, int *skip)
{
    *skip = 0;
    if (!eligible(t, key)) {
        *skip = 1;
        return NULL;
    }
    struct table_buffer q = { 0 };
    struct escaper esc = { conn, 0 };
    if (!table_template_expand(&t->q.tpl, t->q.query, key, NULL, put_quoted, &esc, &q)) {
        free(q.data);
        *skip = 1;
        return NULL;
    }
    if (esc.failed) {
        petrel_module_log(t->module, PETREL_LOG_WARNING, "mysql:%s: cannot escape the key \"%.100s\": lookup "
                          "error", t->config, key);
        free(q.data);
        return NULL;
    }
    return q.data;
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
            if (table_query_result_add(&t->q, t->module, "mysql", t->config, key, row[col], &result, &count) < 0) {
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
/* the asynchronous client                                             */

struct request {
    struct request *next;
    struct table *t;
    struct remote_lookup *rl;     /* answered through the glue (remote_table.c) */
    char *key;
    petrel_timer *timer;
    struct my_conn *conn;
};

enum my_op { OP_CONNECT, OP_IDLE, OP_QUERY, OP_STORE };

struct my_conn {
    struct my_conn *next;
    struct table *t;
    MYSQL *my;
    int host;
    enum my_op op;
    int wait;                  /* MYSQL_WAIT_* the library asked for */
    petrel_watch *watch;
    struct request *req;
    petrel_timer *start_timer; /* the first step runs from the loop */
};

static void dispatch(struct table *t);
static void conn_io(int fd, int events, void *arg);

static void conn_watch(struct my_conn *c)
{
    if (c->watch)
        petrel_watch_cancel(c->watch);
    c->watch = NULL;
    int events = (c->wait & MYSQL_WAIT_READ ? PETREL_WATCH_READ : 0) |
                 (c->wait & MYSQL_WAIT_WRITE ? PETREL_WATCH_WRITE : 0);
    if (c->op == OP_IDLE)
        events = PETREL_WATCH_READ;
    if (events == 0)
        events = PETREL_WATCH_READ;   /* EXCEPT or TIMEOUT only: the request's own timer bounds it */
    int fd = (int)mysql_get_socket(c->my);
    if (fd >= 0)
        c->watch = petrel_watch_fd(c->t->module, fd, events, conn_io, c);
}

static void conn_free(struct my_conn *c)
{
    struct table *t = c->t;
    for (struct my_conn **p = &t->conns; *p; p = &(*p)->next)
        if (*p == c) {
            *p = c->next;
            break;
        }
    t->nconns--;
    if (c->watch)
        petrel_watch_cancel(c->watch);
    if (c->start_timer)
        petrel_timer_cancel(c->start_timer);
    /* No goodbye (COM_QUIT) on a connection that may be mid-exchange:
     * closing the socket is enough for the server. */
    if (c->my) {
        int fd = (int)mysql_get_socket(c->my);
        if (fd >= 0)
            shutdown(fd, SHUT_RDWR);
        mysql_close(c->my);
    }
    free(c);
}

static void request_free(struct request *r)
{
    if (r->timer)
        petrel_timer_cancel(r->timer);
    free(r->key);
    free(r);
}

static void request_done(struct request *r, int status, const char *value)
{
    struct remote_lookup *rl = r->rl;
    request_free(r);
    remote_lookup_answer(rl, status, value);
}

static void conn_failed(struct my_conn *c, const char *what)
{
    struct table *t = c->t;
    struct request *r = c->req;
    petrel_module_log(t->module, PETREL_LOG_WARNING, "mysql:%s: %s %s: %s", t->config, what, t->hosts[c->host].name,
                      mysql_error(c->my));
    if (c->op == OP_CONNECT)
        t->hosts[c->host].dead_until = time(NULL) + HOST_RETRY_SECONDS;
    c->req = NULL;
    conn_free(c);
    if (r) {
        r->conn = NULL;
        if (pick_host(t) >= 0) {
            r->next = t->queue_head;
            t->queue_head = r;
            if (t->queue_tail == NULL)
                t->queue_tail = r;
        } else {
            petrel_module_log(t->module, PETREL_LOG_WARNING, "mysql:%s: no database server available", t->config);
            request_done(r, PETREL_TABLE_RETRY, NULL);
        }
    }
    dispatch(t);
}

/* Runs the current operation one step (status: the events that happened,
 * 0 to start it). */
static void conn_step(struct my_conn *c, int status);

static void query_finished(struct my_conn *c, MYSQL_RES *res)
{
    struct table *t = c->t;
    struct request *r = c->req;
    char *value = NULL;
    int st = read_result(t, res, r->key, &value);
    mysql_free_result(res);
    c->req = NULL;
    r->conn = NULL;
    c->op = OP_IDLE;
    c->wait = 0;
    conn_watch(c);
    request_done(r, st > 0 ? PETREL_TABLE_FOUND : st == 0 ? PETREL_TABLE_NOTFOUND : PETREL_TABLE_RETRY, value);
    free(value);
    dispatch(t);
}

static void conn_step(struct my_conn *c, int status)
{
    struct table *t = c->t;
    for (;;) {
        if (c->op == OP_CONNECT) {
            MYSQL *ret = NULL;
            const struct my_host *h = &t->hosts[c->host];
            c->wait = status == 0 ? mysql_real_connect_start(&ret, c->my, h->host, t->user, t->password, t->dbname,
                                                             h->socket ? 0 : h->port, h->socket, 0)
                                  : mysql_real_connect_cont(&ret, c->my, status);
            if (c->wait) {
                conn_watch(c);
                return;
            }
            if (ret == NULL) {
                conn_failed(c, "connect to");
                return;
            }
            c->op = OP_IDLE;
            status = 0;
            if (c->req == NULL) {
                conn_watch(c);
                dispatch(t);
                return;
            }
        }
        if (c->op == OP_IDLE) {
            if (c->req == NULL)
                return;
            int skip;
            char *query = make_query(t, c->my, c->req->key, &skip);
            if (query == NULL) {
                struct request *r = c->req;
                c->req = NULL;
                r->conn = NULL;
                request_done(r, skip ? PETREL_TABLE_NOTFOUND : PETREL_TABLE_RETRY, NULL);
                dispatch(t);
                return;
            }
            int err = 0;
            c->op = OP_QUERY;
            c->wait = mysql_real_query_start(&err, c->my, query, (unsigned long)strlen(query));
            free(query);
            if (c->wait) {
                conn_watch(c);
                return;
            }
            if (err) {
                conn_failed(c, "query on");
                return;
            }
            c->op = OP_STORE;
            status = 0;
            continue;
        }
        if (c->op == OP_QUERY) {
            int err = 0;
            c->wait = mysql_real_query_cont(&err, c->my, status);
            if (c->wait) {
                conn_watch(c);
                return;
            }
            if (err) {
                conn_failed(c, "query on");
                return;
            }
            c->op = OP_STORE;
            status = 0;
            continue;
        }
        if (c->op == OP_STORE) {
            MYSQL_RES *res = NULL;
            c->wait = status == 0 ? mysql_store_result_start(&res, c->my) : mysql_store_result_cont(&res, c->my,
                                                                                                     status);
            if (c->wait) {
                conn_watch(c);
                return;
            }
            if (res == NULL) {
                if (mysql_errno(c->my)) {
                    conn_failed(c, "query on");
                    return;
                }
                petrel_module_log(t->module, PETREL_LOG_WARNING, "mysql:%s: the query returned no result set",
                                  t->config);
                struct request *r = c->req;
                c->req = NULL;
                r->conn = NULL;
                c->op = OP_IDLE;
                conn_watch(c);
                request_done(r, PETREL_TABLE_RETRY, NULL);
                dispatch(t);
                return;
            }
            query_finished(c, res);
            return;
        }
        return;
    }
}

static void conn_io(int fd, int events, void *arg)
{
    (void)fd;
    struct my_conn *c = arg;
    if (c->op == OP_IDLE) {
        /* Nothing asked: the server closed the connection. */
        conn_free(c);
        return;
    }
    int status = (events & PETREL_WATCH_READ ? MYSQL_WAIT_READ : 0) | (events & PETREL_WATCH_WRITE ? MYSQL_WAIT_WRITE : 0);
    conn_step(c, status);
}

static void conn_begin(void *arg)
{
    struct my_conn *c = arg;
    c->start_timer = NULL;
    conn_step(c, 0);
}

static struct my_conn *conn_open(struct table *t)
{
    int host = pick_host(t);
    if (host < 0)
        return NULL;
    struct my_conn *c = calloc(1, sizeof(*c));
    if (c == NULL)
        return NULL;
    c->t = t;
    c->host = host;
    c->op = OP_CONNECT;
    c->my = client_new(t, 1);
    c->next = t->conns;
    t->conns = c;
    t->nconns++;
    if (c->my == NULL) {
        conn_free(c);
        return NULL;
    }
    /* The connect starts from the loop: a refusal known at once must not
     * answer a lookup inside lookup_async. */
    c->start_timer = petrel_timer_start(t->module, 0, conn_begin, c);
    return c;
}

static void dispatch(struct table *t)
{
    while (t->queue_head) {
        struct my_conn *idle = NULL;
        for (struct my_conn *c = t->conns; c; c = c->next)
            if (c->op == OP_IDLE && c->req == NULL) {
                idle = c;
                break;
            }
        if (idle == NULL) {
            for (struct my_conn *c = t->conns; c; c = c->next)
                if (c->op == OP_CONNECT && c->req == NULL) {
                    idle = c;   /* it takes the request when it is up */
                    break;
                }
        }
        if (idle == NULL) {
            if (t->nconns >= t->max_conns)
                return;
            idle = conn_open(t);
            if (idle == NULL) {
                struct request *r = t->queue_head;
                t->queue_head = r->next;
                if (t->queue_head == NULL)
                    t->queue_tail = NULL;
                petrel_module_log(t->module, PETREL_LOG_WARNING, "mysql:%s: no database server available",
                                  t->config);
                request_done(r, PETREL_TABLE_RETRY, NULL);
                continue;
            }
        }
        struct request *r = t->queue_head;
        t->queue_head = r->next;
        if (t->queue_head == NULL)
            t->queue_tail = NULL;
        r->next = NULL;
        idle->req = r;
        r->conn = idle;
        if (idle->op == OP_IDLE)
            conn_step(idle, 0);
    }
}

static void request_timed_out(void *arg)
{
    struct request *r = arg;
    struct table *t = r->t;
    r->timer = NULL;
    if (r->conn) {
        r->conn->req = NULL;
        conn_free(r->conn);
    } else {
        struct request **p = &t->queue_head, *prev = NULL;
        while (*p && *p != r) {
            prev = *p;
            p = &(*p)->next;
        }
        if (*p) {
            *p = r->next;
            if (t->queue_tail == r)
                t->queue_tail = prev;
        }
    }
    petrel_module_log(t->module, PETREL_LOG_WARNING, "mysql:%s: no answer within %us for \"%.100s\"", t->config,
                      (t->timeout_ms + 999) / 1000, r->key);
    request_done(r, PETREL_TABLE_RETRY, NULL);
    dispatch(t);
}

static int eligible(const struct table *t, const char *key)
{
    return table_query_eligible(&t->q, key);
}

/* The asynchronous lookup (the glue, remote_table.c, answered from its
 * cache or joined a lookup in flight already). */
static void lookup_start(void *handle, struct remote_lookup *rl, const char *key)
{
    struct table *t = handle;
    if (!eligible(t, key)) {
        remote_lookup_answer(rl, PETREL_TABLE_NOTFOUND, NULL);
        return;
    }
    struct request *r = calloc(1, sizeof(*r));
    if (r == NULL || (r->key = strdup(key)) == NULL) {
        free(r);
        remote_lookup_answer(rl, PETREL_TABLE_RETRY, NULL);
        return;
    }
    r->t = t;
    r->rl = rl;
    r->timer = petrel_timer_start(t->module, t->timeout_ms, request_timed_out, r);
    if (t->queue_tail)
        t->queue_tail->next = r;
    else
        t->queue_head = r;
    t->queue_tail = r;
    dispatch(t);
}

/* ------------------------------------------------------------------ */
/* the blocking lookup                                                 */

static int lookup_server(struct table *t, const char *key, const char **value, petrel_pool *scratch)
{
    for (int attempt = 0; attempt < t->nhosts + 1; attempt++) {
        if (t->blocking == NULL) {
            int host = pick_host(t);
            if (host < 0)
                break;
            const struct my_host *h = &t->hosts[host];
            t->blocking = client_new(t, 0);
            if (t->blocking == NULL)
                break;
            if (mysql_real_connect(t->blocking, h->host, t->user, t->password, t->dbname, h->socket ? 0 : h->port,
                                   h->socket, 0) == NULL) {
                petrel_module_log(t->module, PETREL_LOG_WARNING, "mysql:%s: connect to %s: %s", t->config, h->name,
                                  mysql_error(t->blocking));
                t->hosts[host].dead_until = time(NULL) + HOST_RETRY_SECONDS;
                mysql_close(t->blocking);
                t->blocking = NULL;
                continue;
            }
        }
        int skip;
        char *query = make_query(t, t->blocking, key, &skip);
        if (query == NULL)
            return skip ? 0 : -1;
        int err = mysql_real_query(t->blocking, query, (unsigned long)strlen(query));
        free(query);
        MYSQL_RES *res = err ? NULL : mysql_store_result(t->blocking);
        if (res == NULL) {
            petrel_module_log(t->module, PETREL_LOG_WARNING, "mysql:%s: query failed: %s", t->config,
                              mysql_error(t->blocking));
            mysql_close(t->blocking);
            t->blocking = NULL;
            continue;
        }
        char *out = NULL;
        int status = read_result(t, res, key, &out);
        mysql_free_result(res);
        if (status > 0)
            *value = petrel_pool_strdup(scratch, out);
        free(out);
        return status;
    }
    petrel_module_log(t->module, PETREL_LOG_WARNING, "mysql:%s: no database server available", t->config);
    return -1;
}

/* The blocking lookup (the glue's cache in front). */
static int blocking_lookup(void *handle, const char *key, const char **value, petrel_pool *scratch)
{
    struct table *t = handle;
    if (!eligible(t, key))
        return 0;
    return lookup_server(t, key, value, scratch);
}

/* ------------------------------------------------------------------ */
/* open, close, the module                                             */

static void table_close(void *handle)
{
    struct table *t = handle;
    while (t->conns) {
        struct my_conn *c = t->conns;
        c->req = NULL;
        conn_free(c);
    }
    while (t->queue_head) {
        struct request *r = t->queue_head;
        t->queue_head = r->next;
        request_free(r);   /* the core made its handle stale already */
    }
    t->queue_tail = NULL;
    if (t->blocking)
        mysql_close(t->blocking);
    t->blocking = NULL;
}

static void *table_open(petrel_module *m, const char *name, petrel_pool *pool, struct table_cache_settings *cache,
                        const char **error)
{
    if (name[0] != '/' && name[0] != '.') {
        *error = petrel_pool_printf(pool, "parameters in main.cf (%s_query, ...) are not supported: name a "
                                    "mysql_table(5) configuration file by its path", name);
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
    table_settings_warn_unknown(&c, m, "mysql", name, known_names);
    static const char *const legacy[] = { "select_field", "table", "where_field", "additional_conditions",
                                          "option_file", "option_group", "tls_cert_file", "tls_key_file",
                                          "tls_CAfile", "tls_CApath", "tls_verify_cert", "tls_ciphers", NULL };
    for (const char *const *k = legacy; *k; k++)
        if (table_settings_find(&c, *k)) {
            *error = petrel_pool_printf(pool, "line %d: %s: not supported by Petrel's mysql module (write the "
                                        "query with query =; no option files, no TLS yet)",
                                        table_settings_line(&c, *k), *k);
            goto out;
        }
    if (table_query_settings_parse(&t->q, &c, m, "mysql", name, TABLE_QUERY_TEMPLATE, "no query", pool, error) != 0)
        goto out;
    if (parse_hosts(t, table_settings_get(&c, "hosts", ""), table_settings_line(&c, "hosts"), pool, error) != 0)
        goto out;
    t->user = table_settings_get(&c, "user", NULL);
    t->password = table_settings_get(&c, "password", NULL);
    t->dbname = table_settings_get(&c, "dbname", NULL);
    if (t->dbname == NULL || *t->dbname == '\0') {
        *error = petrel_pool_printf(pool, "dbname is not set");
        goto out;
    }
    long long timeout = petrel_param_int(m, "mysql_timeout");
    t->timeout_ms = (unsigned)(timeout > 0 ? timeout * 1000 : 30000);
    t->max_conns = (int)petrel_param_int(m, "mysql_max_connections");
    if (t->max_conns < 1)
        t->max_conns = 1;
    if (table_cache_settings_read(cache, &c, pool, error) != 0)
        goto out;
    result = t;
out:
    table_settings_free(&c);
    return result;
}

static int table_pattern(void *handle)
{
    const struct table *t = handle;
    return table_template_partial(&t->q.tpl);
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
    .name = "mysql", .open = table_open, .lookup = blocking_lookup, .start = lookup_start, .close = table_close,
    .handle_pattern = table_pattern,
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
