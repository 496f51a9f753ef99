/*
 * The mysql module's asynchronous client, with MariaDB Connector/C's
 * non-blocking API: per open table and per process, up to
 * mysql_max_connections connections, each a state machine (struct
 * my_conn: connect, character set, idle, query, store, next result set)
 * driven through the library's _start/_cont calls from fd watches, one
 * query at a time; further lookups wait in the table's FIFO. Each lookup
 * is bounded by mysql_timeout from the moment it is asked; no live host,
 * a timeout or an SQL error fails it temporarily.
 */
#include <stdlib.h>
#include <string.h>

#include <sys/socket.h>

#include <mysql.h>

#include <petrel/plugin.h>

#include "mysql_table.h"

enum my_op { OP_CONNECT, OP_CHARSET, OP_IDLE, OP_QUERY, OP_STORE, OP_NEXT };

struct my_conn {
    struct my_conn *next;
    struct table *t;
    MYSQL *my;
    int host;
    enum my_op op;
    int wait;                  /* MYSQL_WAIT_* the library asked for */
    petrel_watch *watch;
    struct sql_request *req;
    petrel_timer *start_timer; /* the first step runs from the loop */
    MYSQL_RES *first;          /* the query's first result set, while the others are read */
    petrel_timer *idle_timer;  /* idle_interval, while the connection has nothing to do */
    int more_sets;             /* a later result set returned data too */
};

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
    remote_idle_timer_update(c->t->sql.module, &c->idle_timer, c->op == OP_IDLE && c->req == NULL, restart,
                             c->t->sql.idle_ms, conn_idle_expired, c);
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
        c->watch = petrel_watch_fd(c->t->sql.module, fd, events, conn_io, c);
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

void mysql_table_conn_abandon(void *conn)
{
    struct my_conn *c = conn;
    c->req = NULL;
    conn_free(c);
}

/* The connection is unusable: its host is marked dead when it never
 * connected; its request goes back to the queue for another host, or
 * fails. */
static void conn_failed(struct my_conn *c, const char *what)
{
    struct table *t = c->t;
    struct sql_request *r = c->req;
    petrel_module_log(t->sql.module, PETREL_LOG_WARNING, "mysql:%s: %s %s: %s", t->sql.config, what,
                      t->sql.hosts.items[c->host].name, mysql_error(c->my));
    if (c->op == OP_CONNECT || c->op == OP_CHARSET)
        sql_table_host_failed(&t->sql, c->host);
    c->req = NULL;
    conn_free(c);
    if (r)
        sql_lookups_retry(&t->lookups, r);
    mysql_table_dispatch(t);
}

/* Runs the current operation one step (status: the events that happened,
 * 0 to start it). */
static void conn_step(struct my_conn *c, int status);

static void query_finished(struct my_conn *c)
{
    struct table *t = c->t;
    struct sql_request *r = c->req;
    char *value = NULL;
    MYSQL_RES *res = c->first;
    c->first = NULL;
    int st = mysql_table_result_sets_answer(t, res, c->more_sets, r->key, &value);
    c->more_sets = 0;
    c->req = NULL;
    r->conn = NULL;
    c->op = OP_IDLE;
    c->wait = 0;
    conn_idle_update(c, 1);
    conn_watch(c);
    sql_request_answer(r, st, value);
    free(value);
    mysql_table_dispatch(t);
}

static void conn_step(struct my_conn *c, int status)
{
    struct table *t = c->t;
    for (;;) {
        if (c->op == OP_CONNECT) {
            MYSQL *ret = NULL;
            const struct sql_host *h = &t->sql.hosts.items[c->host];
            c->wait = status == 0 ? mysql_real_connect_start(&ret, c->my, h->host, t->sql.user, t->sql.password,
                                                             t->sql.dbname, h->socket ? 0 : h->port_number, h->socket,
                                                             0)
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
            c->op = mysql_table_charset_differs(t, c->my) ? OP_CHARSET : OP_IDLE;
            if (c->op == OP_IDLE && c->req == NULL) {
                conn_watch(c);
                mysql_table_dispatch(t);
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
                mysql_table_dispatch(t);
                return;
            }
            continue;
        }
        if (c->op == OP_IDLE) {
            if (c->req == NULL)
                return;
            int skip;
            char *query = mysql_table_make_query(t, c->my, c->req->key, &skip);
            if (query == NULL) {
                struct sql_request *r = c->req;
                c->req = NULL;
                r->conn = NULL;
                sql_request_answer(r, skip ? 0 : -1, NULL);
                mysql_table_dispatch(t);
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

/* A new connection to a live host, or NULL: no host is live, or *why
 * says what failed (not the server: another host would not help). */
static struct my_conn *conn_open(struct table *t, const char **why)
{
    *why = NULL;
    int host = sql_table_pick_host(&t->sql);
    if (host < 0)
        return NULL;
    struct my_conn *c = calloc(1, sizeof(*c));
    if (c == NULL) {
        *why = "out of memory";
        return NULL;
    }
    c->t = t;
    c->host = host;
    c->op = OP_CONNECT;
    c->my = mysql_table_client_new(t, 1);
    c->next = t->conns;
    t->conns = c;
    t->nconns++;
    if (c->my == NULL) {
        conn_free(c);
        *why = "the client library could not be set up";   /* its options logged, or out of memory */
        return NULL;
    }
    /* The connect starts from the loop: a refusal known at once must not
     * answer a lookup inside lookup_async. */
    c->start_timer = petrel_timer_start(t->sql.module, 0, conn_begin, c);
    if (c->start_timer == NULL) {   /* it would never start: its lookup would wait for its timeout */
        conn_free(c);
        *why = "cannot start a timer";
        return NULL;
    }
    return c;
}

/* Hands the waiting lookups to idle connections, else to a free one still
 * connecting (it sends the query when it is up), else to a new one, up to
 * mysql_max_connections. */
void mysql_table_dispatch(void *arg)
{
    struct table *t = arg;
    while (t->lookups.head) {
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
            if (t->nconns >= t->sql.max_conns)
                return;
            const char *why;
            idle = conn_open(t, &why);
            if (idle == NULL) {
                if (why)
                    sql_lookups_no_connection(&t->lookups, sql_lookups_next(&t->lookups), why);
                else
                    sql_lookups_unavailable(&t->lookups, sql_lookups_next(&t->lookups));
                continue;
            }
        }
        struct sql_request *r = sql_lookups_next(&t->lookups);
        idle->req = r;
        r->conn = idle;
        if (idle->op == OP_IDLE)
            conn_step(idle, 0);
    }
}

void mysql_table_async_close(struct table *t)
{
    while (t->conns) {
        struct my_conn *c = t->conns;
        c->req = NULL;
        conn_free(c);
    }
    sql_lookups_drop(&t->lookups);   /* the core made their handles stale already */
}
