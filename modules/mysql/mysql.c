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

#define HOST_RETRY_SECONDS 60   /* retry_interval's default, as Postfix's */
#define IDLE_SECONDS 60         /* idle_interval's default, as Postfix's */
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

static const char *const known_names[] = {
    "hosts", "user", "password", "dbname", "query", "result_format", "domain", "expansion_limit", TABLE_CACHE_SETTINGS,
    "select_field", "table", "where_field", "additional_conditions", "select_function", "charset", "option_file",
    "option_group", "tls_cert_file", "tls_key_file", "tls_CAfile", "tls_CApath", "tls_ciphers", "tls_verify_cert",
    "require_result_set", "retry_interval", "idle_interval", NULL,
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
    /* One server is listed twice, as Postfix 3.10+ does (it may be a load
     * balancer): a single failure is retried at once on the "other" copy
     * instead of leaving the table without a server for retry_interval. */
    if (t->nhosts == 1)
        t->hosts[t->nhosts++] = t->hosts[0];
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

/* A client handle with the table's options, in Postfix's order: the option
 * file and group first (the library reads them when it connects, and what
 * they say wins over what is set here, as in Postfix), then the TLS
 * settings. Any tls_* file or cipher list makes the library ask for TLS;
 * tls_verify_cert = yes also makes it check the server's certificate
 * (chain and name) and refuse a server without TLS. */
static MYSQL *client_new(struct table *t, int nonblocking)
{
    MYSQL *m = mysql_init(NULL);
    if (m == NULL)
        return NULL;
    unsigned timeout = (t->timeout_ms + 999) / 1000;
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
        petrel_module_log(t->module, PETREL_LOG_WARNING, "mysql:%s: cannot set the client's options: %s",
                          t->config, mysql_error(m));
        mysql_close(m);
        return NULL;
    }
    return m;
}

/* 1 when the connection's character set is not the table's: an option
 * file said otherwise (Postfix sets it again after connecting, too). */
static int charset_differs(const struct table *t, MYSQL *m)
{
    const char *now = mysql_character_set_name(m);
    return now == NULL || strcmp(now, t->charset) != 0;
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

enum my_op { OP_CONNECT, OP_CHARSET, OP_IDLE, OP_QUERY, OP_STORE, OP_NEXT };

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
    MYSQL_RES *first;          /* the query's first result set, while the others are read */
    petrel_timer *idle_timer;  /* idle_interval, while the connection has nothing to do */
    int more_sets;             /* a later result set returned data too */
};

static void dispatch(struct table *t);
static void conn_io(int fd, int events, void *arg);

static void conn_free(struct my_conn *c);

static void conn_idle_expired(void *arg)
{
    struct my_conn *c = arg;
    c->idle_timer = NULL;
    if (c->op == OP_IDLE && c->req == NULL)
        conn_free(c);
}

/* An idle connection is closed after idle_interval (Postfix 3.9+), counted
 * from when it last became idle; a busy one has no idle timer. */
static void conn_idle_update(struct my_conn *c, int restart)
{
    remote_idle_timer_update(c->t->module, &c->idle_timer, c->op == OP_IDLE && c->req == NULL, restart, c->t->idle_ms,
                             conn_idle_expired, c);
}

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
    conn_idle_update(c, 0);
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
    if (c->first)
        mysql_free_result(c->first);
    if (c->idle_timer)
        petrel_timer_cancel(c->idle_timer);
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
    if (c->op == OP_CONNECT || c->op == OP_CHARSET)
        t->hosts[c->host].dead_until = time(NULL) + t->retry_seconds;
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

/* The answer from the query's result sets, as Postfix's plmysql_query:
 * the first one that returns data; a second one with data is an error; no
 * result set at all is an error with require_result_set = yes, else "not
 * found". 1 found (*out malloc'd), 0 not found, -1 error (logged). res
 * (NULL: none) is freed. */
static int result_sets_answer(const struct table *t, MYSQL_RES *res, int more_sets, const char *key, char **out)
{
    *out = NULL;
    int st;
    if (more_sets) {
        petrel_module_log(t->module, PETREL_LOG_WARNING, "mysql:%s: query failed: multiple result sets returning "
                          "data are not supported", t->config);
        st = -1;
    } else if (res == NULL) {
        if (t->require_result_set)
            petrel_module_log(t->module, PETREL_LOG_WARNING, "mysql:%s: the query returned no result set "
                              "(require_result_set = yes)", t->config);
        st = t->require_result_set ? -1 : 0;
    } else {
        st = read_result(t, res, key, out);
    }
    if (res)
        mysql_free_result(res);
    return st;
}

static void query_finished(struct my_conn *c)
{
    struct table *t = c->t;
    struct request *r = c->req;
    char *value = NULL;
    MYSQL_RES *res = c->first;
    c->first = NULL;
    int st = result_sets_answer(t, res, c->more_sets, r->key, &value);
    c->more_sets = 0;
    c->req = NULL;
    r->conn = NULL;
    c->op = OP_IDLE;
    c->wait = 0;
    conn_idle_update(c, 1);
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
            status = 0;
            c->op = charset_differs(t, c->my) ? OP_CHARSET : OP_IDLE;
            if (c->op == OP_IDLE && c->req == NULL) {
                conn_watch(c);
                dispatch(t);
                return;
            }
            continue;
        }
        if (c->op == OP_CHARSET) {
            int err = 0;
            c->wait = status == 0 ? mysql_set_character_set_start(&err, c->my, t->charset)
                                  : mysql_set_character_set_cont(&err, c->my, status);
            if (c->wait) {
                conn_watch(c);
                return;
            }
            if (err) {
                conn_failed(c, "set the character set on");
                return;
            }
            c->op = OP_IDLE;
            status = 0;
            if (c->req == NULL) {
                conn_watch(c);
                dispatch(t);
                return;
            }
            continue;
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
            if (res == NULL && mysql_errno(c->my)) {
                conn_failed(c, "query on");
                return;
            }
            if (res && c->first) {
                c->more_sets = 1;
                mysql_free_result(res);
            } else if (res) {
                c->first = res;
            }
            /* A stored procedure's CALL ends with a status result: every
             * set is read, or the connection's next query would be out of
             * sync. */
            if (!mysql_more_results(c->my)) {
                query_finished(c);
                return;
            }
            c->op = OP_NEXT;
            status = 0;
            continue;
        }
        if (c->op == OP_NEXT) {
            int more = 0;
            c->wait = status == 0 ? mysql_next_result_start(&more, c->my) : mysql_next_result_cont(&more, c->my,
                                                                                                   status);
            if (c->wait) {
                conn_watch(c);
                return;
            }
            if (more > 0) {
                conn_failed(c, "query on");
                return;
            }
            if (more < 0) {
                query_finished(c);
                return;
            }
            c->op = OP_STORE;
            status = 0;
            continue;
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
                if ((c->op == OP_CONNECT || c->op == OP_CHARSET) && c->req == NULL) {
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
            const char *failed = NULL;
            if (mysql_real_connect(t->blocking, h->host, t->user, t->password, t->dbname, h->socket ? 0 : h->port,
                                   h->socket, 0) == NULL)
                failed = "connect to";
            else if (charset_differs(t, t->blocking) && mysql_set_character_set(t->blocking, t->charset) != 0)
                failed = "set the character set on";
            if (failed) {
                petrel_module_log(t->module, PETREL_LOG_WARNING, "mysql:%s: %s %s: %s", t->config, failed, h->name,
                                  mysql_error(t->blocking));
                t->hosts[host].dead_until = time(NULL) + t->retry_seconds;
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
        /* Every result set is read (a CALL ends with a status result); the
         * answer is result_sets_answer()'s. */
        MYSQL_RES *first = NULL;
        int more_sets = 0, next = -1;
        if (!err)
            do {
                MYSQL_RES *res = mysql_store_result(t->blocking);
                if (res == NULL && mysql_errno(t->blocking)) {
                    err = 1;
                    break;
                }
                if (res && first) {
                    more_sets = 1;
                    mysql_free_result(res);
                } else if (res) {
                    first = res;
                }
                next = mysql_next_result(t->blocking);
                err = next > 0;
            } while (next == 0);
        if (err) {
            petrel_module_log(t->module, PETREL_LOG_WARNING, "mysql:%s: query failed: %s", t->config,
                              mysql_error(t->blocking));
            if (first)
                mysql_free_result(first);
            mysql_close(t->blocking);
            t->blocking = NULL;
            continue;
        }
        char *out = NULL;
        int status = result_sets_answer(t, first, more_sets, key, &out);
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
    long retry = 0, idle = 0;
    if (table_settings_bool(&c, "tls_verify_cert", -1, &t->tls_verify_cert, pool, error) != 0 ||
        table_settings_bool(&c, "require_result_set", 1, &t->require_result_set, pool, error) != 0 ||
        table_settings_long(&c, "retry_interval", HOST_RETRY_SECONDS, 1, &retry, pool, error) != 0 ||
        table_settings_long(&c, "idle_interval", IDLE_SECONDS, 1, &idle, pool, error) != 0)
        goto out;
    t->retry_seconds = (unsigned)retry;
    t->idle_ms = (unsigned)(idle > 86400 ? 86400 : idle) * 1000;
    if (*t->charset == '\0') {
        *error = petrel_pool_printf(pool, "line %d: charset is empty", table_settings_line(&c, "charset"));
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
