/*
 * The asynchronous Redis client of the bundled modules (see redis_client.h
 * for what it does). Structure:
 *
 * - struct conn wraps one hiredis asynchronous context (to the data server
 *   or, briefly, to a sentinel) with its petrel_watch. hiredis tells us
 *   which events it wants (addRead, delWrite...); we keep the mask and
 *   re-arm one watch for it. Giving up on a connection (often from inside
 *   a hiredis callback, where it may not be freed) shuts its socket down:
 *   hiredis then sees the end on the next loop turn and frees the context
 *   itself, calling back every command still pending with no reply. The
 *   conn struct goes after that, on a zero-delay timer.
 * - struct cmd is one command: its caller's callback, its deadline timer,
 *   and, while the client connects, a copy of its arguments. hiredis calls
 *   our reply callback exactly once per command sent (with NULL when the
 *   connection goes); the caller's callback runs at the first of the reply
 *   or the deadline, and the cmd is freed when both sides are done.
 * - The client moves DOWN -> RESOLVING (sentinels) -> CONNECTING ->
 *   READY, and back to DOWN on any failure, where a back-off timer starts
 *   the next attempt.
 */
#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>

#include <hiredis/async.h>
#include <hiredis/hiredis.h>

#include "redis_client.h"

#define BACKOFF_FIRST_MS 500
#define BACKOFF_MAX_MS 30000

enum state { ST_DOWN, ST_RESOLVING, ST_CONNECTING, ST_READY };

struct redis_client;

struct conn {
    struct conn *next_conn;         /* every conn of the client, until freed */
    petrel_timer *free_timer;
    struct redis_client *rc;
    redisAsyncContext *ac;
    petrel_watch *watch;
    int events;
    int dead;                       /* hiredis has freed the context: freed by a zero-delay timer */
    int abandoned;                  /* given up on: its end is no news */
    int sentinel;                   /* a connection to a sentinel */
};

struct cmd {
    struct cmd *next, *prev;        /* in rc->waiting (not yet sent) or rc->sent */
    struct redis_client *rc;
    redis_reply_fn *fn;
    void *arg;
    petrel_timer *timer;
    int answered;                   /* the caller's callback ran */
    int in_hiredis;                 /* hiredis holds it: it will call back */
    int argc;
    char **argv;
    size_t *argvlen;
    const char *error;              /* for a deferred failure */
};

struct endpoint {
    char *host;                     /* or the socket path */
    int port;                       /* 0: UNIX socket */
};

struct redis_client {
    petrel_module *m;
    char *label;
    struct endpoint server;
    char *user, *password;
    int database;
    struct endpoint *sentinels;
    size_t nsentinels, next_sentinel;
    char *master_name;
    unsigned timeout_ms;

    enum state state;
    struct conn *conn;              /* the data connection (CONNECTING, READY) */
    struct conn *sconn;             /* the sentinel being asked (RESOLVING) */
    struct conn *conns;             /* all, including those being closed */
    struct endpoint current;        /* where the data connection goes */
    petrel_timer *retry_timer, *attempt_timer;
    unsigned backoff_ms;
    int reported_down;              /* the outage was logged */
    int ever_up;
    int setup_pending;              /* AUTH/SELECT/ROLE replies still to come */
    struct cmd waiting;             /* list head: commands waiting for READY */
    int freeing;
};

static void start_attempt(struct redis_client *rc);
static void fail(struct redis_client *rc, const char *why);

/* ------------------------------------------------------------------ */
/* endpoints                                                           */

static int parse_endpoint(const char *text, struct endpoint *out)
{
    memset(out, 0, sizeof(*out));
    while (isspace((unsigned char)*text))
        text++;
    if (strncmp(text, "unix:", 5) == 0) {
        if (text[5] != '/')
            return -1;
        out->host = strdup(text + 5);
        return out->host ? 0 : -1;
    }
    const char *colon;
    const char *host = text;
    size_t hlen;
    if (*text == '[') {
        const char *close = strchr(text, ']');
        if (close == NULL || close[1] != ':')
            return -1;
        host = text + 1;
        hlen = (size_t)(close - host);
        colon = close + 1;
    } else {
        colon = strrchr(text, ':');
        if (colon == NULL)
            return -1;
        hlen = (size_t)(colon - text);
    }
    char *end;
    errno = 0;
    long port = strtol(colon + 1, &end, 10);
    while (isspace((unsigned char)*end))
        end++;
    if (hlen == 0 || colon[1] == '\0' || *end != '\0' || errno || port < 1 || port > 65535)
        return -1;
    out->host = strndup(host, hlen);
    out->port = (int)port;
    return out->host ? 0 : -1;
}

static void free_endpoint(struct endpoint *e)
{
    free(e->host);
    e->host = NULL;
}

static const char *endpoint_text(const struct endpoint *e, char *buf, size_t size)
{
    if (e->port == 0)
        snprintf(buf, size, "unix:%s", e->host ? e->host : "?");
    else
        snprintf(buf, size, "%s:%d", e->host ? e->host : "?", e->port);
    return buf;
}

/* Splits "a, b c" into items; calls fn for each; stops at the first -1. */
static int each_item(const char *list, int (*fn)(const char *item, void *arg), void *arg)
{
    const char *p = list ? list : "";
    for (;;) {
        while (*p == ',' || isspace((unsigned char)*p))
            p++;
        if (*p == '\0')
            return 0;
        size_t n = strcspn(p, ", \t\r\n");
        char *item = strndup(p, n);
        int r = item ? fn(item, arg) : -1;
        free(item);
        if (r != 0)
            return r;
        p += n;
    }
}

static int check_item(const char *item, void *arg)
{
    struct endpoint e;
    if (parse_endpoint(item, &e) != 0 || e.port == 0) {
        snprintf(arg, 128, "%s", item);   /* item is freed when this returns */
        free_endpoint(&e);
        return -1;
    }
    free_endpoint(&e);
    return 0;
}

const char *redis_config_check(const struct redis_config *cfg, petrel_pool *pool)
{
    int with_sentinels = cfg->sentinels && *cfg->sentinels;
    if (with_sentinels) {
        char bad[128] = "";
        if (each_item(cfg->sentinels, check_item, bad) != 0)
            return petrel_pool_printf(pool, "bad sentinel address \"%s\": host:port expected", bad);
        if (cfg->master_name == NULL || *cfg->master_name == '\0')
            return "sentinels are set but the master name is empty";
        return NULL;
    }
    struct endpoint e;
    if (cfg->server == NULL || parse_endpoint(cfg->server, &e) != 0)
        return petrel_pool_printf(pool, "bad Redis address \"%s\": host:port or unix:/path expected",
                                  cfg->server ? cfg->server : "");
    free_endpoint(&e);
    return NULL;
}

/* ------------------------------------------------------------------ */
/* the hiredis adapter on petrel watches                               */

static void conn_watch_fired(int fd, int events, void *arg)
{
    struct conn *c = arg;
    (void)fd;
    if (c->dead || c->ac == NULL)
        return;
    if (events & PETREL_WATCH_READ)
        redisAsyncHandleRead(c->ac);
    /* The read may have closed the connection (c->ac is then NULL). */
    if ((events & PETREL_WATCH_WRITE) && !c->dead && c->ac)
        redisAsyncHandleWrite(c->ac);
}

static void conn_rearm(struct conn *c)
{
    if (c->watch) {
        petrel_watch_cancel(c->watch);
        c->watch = NULL;
    }
    if (c->events && c->ac && !c->dead)
        c->watch = petrel_watch_fd(c->rc->m, c->ac->c.fd, c->events, conn_watch_fired, c);
}

static void ev_add_read(void *p)
{
    struct conn *c = p;
    if (!(c->events & PETREL_WATCH_READ)) {
        c->events |= PETREL_WATCH_READ;
        conn_rearm(c);
    }
}

static void ev_del_read(void *p)
{
    struct conn *c = p;
    if (c->events & PETREL_WATCH_READ) {
        c->events &= ~PETREL_WATCH_READ;
        conn_rearm(c);
    }
}

static void ev_add_write(void *p)
{
    struct conn *c = p;
    if (!(c->events & PETREL_WATCH_WRITE)) {
        c->events |= PETREL_WATCH_WRITE;
        conn_rearm(c);
    }
}

static void ev_del_write(void *p)
{
    struct conn *c = p;
    if (c->events & PETREL_WATCH_WRITE) {
        c->events &= ~PETREL_WATCH_WRITE;
        conn_rearm(c);
    }
}

/* hiredis frees the context: no more events for it. */
static void ev_cleanup(void *p)
{
    struct conn *c = p;
    c->events = 0;
    if (c->watch) {
        petrel_watch_cancel(c->watch);
        c->watch = NULL;
    }
    c->ac = NULL;
}

static void conn_free_later(void *arg)
{
    struct conn *c = arg;
    struct conn **pp = &c->rc->conns;
    while (*pp && *pp != c)
        pp = &(*pp)->next_conn;
    if (*pp)
        *pp = c->next_conn;
    free(c);
}

/* The connection has gone (hiredis has freed or is freeing its context). */
static void conn_on_disconnect(const redisAsyncContext *ac, int status)
{
    struct conn *c = ac->data;
    (void)status;
    if (c == NULL)
        return;
    struct redis_client *rc = c->rc;
    c->dead = 1;
    c->ac = NULL;
    if (rc && rc->conn == c) {
        if (!c->abandoned && !rc->freeing)
            fail(rc, ac->errstr[0] ? ac->errstr : "connection closed");
        rc->conn = NULL;
    } else if (rc && rc->sconn == c) {
        rc->sconn = NULL;
    }
    /* Freed after hiredis has finished with the context that points to it
     * (redis_client_free frees its conns itself). */
    if (rc && !rc->freeing)
        c->free_timer = petrel_timer_start(rc->m, 0, conn_free_later, c);
}

/* Closes a connection now; only outside hiredis callbacks (fini): pending
 * commands get their NULL replies, the disconnect callback runs. */
static void conn_close(struct conn *c)
{
    if (c == NULL || c->dead)
        return;
    c->abandoned = 1;
    redisAsyncContext *ac = c->ac;
    if (ac)
        redisAsyncFree(ac);   /* calls conn_on_disconnect and ev_cleanup */
}

/* Gives up on a connection from anywhere, hiredis callbacks included: the
 * socket is shut down, hiredis notices on the next loop turn and frees. */
static void conn_abandon(struct conn *c)
{
    if (c == NULL || c->dead || c->abandoned)
        return;
    c->abandoned = 1;
    if (c->ac && c->ac->c.fd >= 0) {
        shutdown(c->ac->c.fd, SHUT_RDWR);
        ev_add_read(c);
    }
}

static struct conn *conn_open(struct redis_client *rc, const struct endpoint *e, int sentinel, const char **error)
{
    redisAsyncContext *ac = e->port ? redisAsyncConnect(e->host, e->port) : redisAsyncConnectUnix(e->host);
    if (ac == NULL) {
        *error = "out of memory";
        return NULL;
    }
    if (ac->err) {
        static char buf[160];
        snprintf(buf, sizeof(buf), "%s", ac->errstr);
        *error = buf;
        redisAsyncFree(ac);
        return NULL;
    }
    struct conn *c = calloc(1, sizeof(*c));
    if (c == NULL) {
        redisAsyncFree(ac);
        *error = "out of memory";
        return NULL;
    }
    c->rc = rc;
    c->ac = ac;
    c->sentinel = sentinel;
    c->next_conn = rc->conns;
    rc->conns = c;
    ac->data = c;
    ac->ev.data = c;
    ac->ev.addRead = ev_add_read;
    ac->ev.delRead = ev_del_read;
    ac->ev.addWrite = ev_add_write;
    ac->ev.delWrite = ev_del_write;
    ac->ev.cleanup = ev_cleanup;
    redisAsyncSetDisconnectCallback(ac, conn_on_disconnect);
    /* A non-blocking connect reports its end as writability. */
    ev_add_write(c);
    return c;
}

/* ------------------------------------------------------------------ */
/* commands                                                            */

static void cmd_unlink(struct cmd *k)
{
    if (k->next) {
        k->prev->next = k->next;
        k->next->prev = k->prev;
        k->next = k->prev = NULL;
    }
}

static void cmd_free(struct cmd *k)
{
    for (int i = 0; i < k->argc && k->argv; i++)
        free(k->argv[i]);
    free(k->argv);
    free(k->argvlen);
    free(k);
}

static void cmd_answer(struct cmd *k, const redisReply *reply, const char *error)
{
    if (k->answered)
        return;
    k->answered = 1;
    if (k->timer) {
        petrel_timer_cancel(k->timer);
        k->timer = NULL;
    }
    k->fn(reply, error, k->arg);
}

static void send_cmd(struct redis_client *rc, struct cmd *k);

static void cmd_timed_out(void *arg)
{
    struct cmd *k = arg;
    struct redis_client *rc = k->rc;
    k->timer = NULL;
    if (k->answered)
        return;
    if (!k->in_hiredis) {
        /* Still waiting for a connection. */
        cmd_unlink(k);
        cmd_answer(k, NULL, "timed out waiting for a connection");
        cmd_free(k);
        return;
    }
    cmd_answer(k, NULL, "timed out");
    /* A server that does not answer one command answers no other: start
     * again (hiredis then completes this one, which frees it). */
    if (rc->state == ST_READY)
        fail(rc, "a command timed out");
}

static void cmd_replied(redisAsyncContext *ac, void *r, void *privdata)
{
    struct cmd *k = privdata;
    redisReply *reply = r;
    (void)ac;
    k->in_hiredis = 0;
    if (reply == NULL)
        cmd_answer(k, NULL, "connection lost");
    else if (reply->type == REDIS_REPLY_ERROR) {
        cmd_answer(k, NULL, reply->str);
        /* A master demoted by a failover refuses writes: find the new one. */
        if (strncmp(reply->str, "READONLY", 8) == 0 && k->rc->state == ST_READY && k->rc->nsentinels)
            fail(k->rc, "the server has become a replica (READONLY)");
    } else {
        cmd_answer(k, reply, NULL);
    }
    cmd_free(k);
}

static void send_cmd(struct redis_client *rc, struct cmd *k)
{
    k->in_hiredis = 1;
    if (redisAsyncCommandArgv(rc->conn->ac, cmd_replied, k, k->argc, (const char **)k->argv, k->argvlen) !=
        REDIS_OK) {
        k->in_hiredis = 0;
        cmd_answer(k, NULL, "cannot send the command");
        cmd_free(k);
    }
}

static void deferred_failure(void *arg)
{
    struct cmd *k = arg;
    k->timer = NULL;
    cmd_answer(k, NULL, k->error);
    cmd_free(k);
}

void redis_command(struct redis_client *rc, redis_reply_fn *fn, void *arg, int argc, const char **argv,
                   const size_t *argvlen)
{
    struct cmd *k = calloc(1, sizeof(*k));
    if (k == NULL)
        return;   /* out of memory: nothing sensible to do */
    k->rc = rc;
    k->fn = fn;
    k->arg = arg;
    k->argc = argc;
    k->argv = calloc((size_t)argc, sizeof(*k->argv));
    k->argvlen = calloc((size_t)argc, sizeof(*k->argvlen));
    for (int i = 0; k->argv && k->argvlen && i < argc; i++) {
        size_t n = argvlen ? argvlen[i] : strlen(argv[i]);
        k->argv[i] = malloc(n + 1);
        if (k->argv[i]) {
            memcpy(k->argv[i], argv[i], n);
            k->argv[i][n] = '\0';
        }
        k->argvlen[i] = n;
    }
    if (rc->state == ST_DOWN || rc->freeing) {
        /* Known to be down: fail at once, but never before we return. */
        k->error = "Redis is down";
        k->timer = petrel_timer_start(rc->m, 0, deferred_failure, k);
        if (k->timer == NULL)
            cmd_free(k);
        return;
    }
    k->timer = petrel_timer_start(rc->m, rc->timeout_ms, cmd_timed_out, k);
    if (rc->state == ST_READY) {
        send_cmd(rc, k);
        return;
    }
    /* Connecting: wait for READY, within the command's deadline. */
    k->prev = rc->waiting.prev;
    k->next = &rc->waiting;
    rc->waiting.prev->next = k;
    rc->waiting.prev = k;
}

int redis_client_up(const struct redis_client *rc)
{
    return rc && rc->state == ST_READY;
}

/* ------------------------------------------------------------------ */
/* the connection's life                                               */

static void flush_waiting(struct redis_client *rc, const char *error)
{
    while (rc->waiting.next != &rc->waiting) {
        struct cmd *k = rc->waiting.next;
        cmd_unlink(k);
        if (error) {
            cmd_answer(k, NULL, error);
            cmd_free(k);
        } else {
            send_cmd(rc, k);
        }
    }
}

static void retry_fired(void *arg)
{
    struct redis_client *rc = arg;
    rc->retry_timer = NULL;
    start_attempt(rc);
}

static void cancel_attempt_timer(struct redis_client *rc)
{
    if (rc->attempt_timer) {
        petrel_timer_cancel(rc->attempt_timer);
        rc->attempt_timer = NULL;
    }
}

/* Something went wrong: close, tell the waiting commands, try again later. */
static void fail(struct redis_client *rc, const char *why)
{
    char where[300];
    cancel_attempt_timer(rc);
    struct conn *c = rc->conn, *s = rc->sconn;
    rc->conn = NULL;
    rc->sconn = NULL;
    enum state was = rc->state;
    rc->state = ST_DOWN;
    if (!rc->reported_down) {
        rc->reported_down = 1;
        petrel_module_log(rc->m, PETREL_LOG_WARNING, "%s: Redis at %s %s: %s; retrying in the background",
                          rc->label, rc->nsentinels ? rc->master_name : endpoint_text(&rc->current, where, sizeof(where)),
                          was == ST_READY ? "went away" : "is unavailable", why);
    }
    flush_waiting(rc, "Redis is down");
    conn_abandon(c);
    conn_abandon(s);
    if (rc->freeing)
        return;
    rc->backoff_ms = rc->backoff_ms ? rc->backoff_ms * 2 : BACKOFF_FIRST_MS;
    if (rc->backoff_ms > BACKOFF_MAX_MS)
        rc->backoff_ms = BACKOFF_MAX_MS;
    if (rc->retry_timer == NULL)
        rc->retry_timer = petrel_timer_start(rc->m, rc->backoff_ms, retry_fired, rc);
}

static void attempt_timed_out(void *arg)
{
    struct redis_client *rc = arg;
    rc->attempt_timer = NULL;
    fail(rc, rc->state == ST_RESOLVING ? "no sentinel answered in time" : "connecting timed out");
}

static void became_ready(struct redis_client *rc)
{
    char where[300];
    cancel_attempt_timer(rc);
    rc->state = ST_READY;
    rc->backoff_ms = 0;
    if (rc->reported_down || !rc->ever_up)
        petrel_module_log(rc->m, rc->reported_down ? PETREL_LOG_WARNING : PETREL_LOG_INFO,
                          "%s: connected to Redis at %s%s", rc->label,
                          endpoint_text(&rc->current, where, sizeof(where)), rc->reported_down ? ": it is back" : "");
    rc->reported_down = 0;
    rc->ever_up = 1;
    flush_waiting(rc, NULL);
}

/* Replies to AUTH, SELECT and ROLE, sent ahead of everything else. */
static void setup_replied(redisAsyncContext *ac, void *r, void *privdata)
{
    struct conn *c = ac->data;
    redisReply *reply = r;
    const char *what = privdata;
    if (c == NULL || c->dead || c->rc == NULL || c->rc->conn != c)
        return;
    struct redis_client *rc = c->rc;
    char why[300];
    if (reply == NULL) {
        fail(rc, "connection lost while setting up");
        return;
    }
    if (reply->type == REDIS_REPLY_ERROR) {
        snprintf(why, sizeof(why), "%s refused: %s", what, reply->str);
        fail(rc, why);
        return;
    }
    if (strcmp(what, "ROLE") == 0) {
        if (reply->type != REDIS_REPLY_ARRAY || reply->elements < 1 ||
            reply->element[0]->type != REDIS_REPLY_STRING || strcmp(reply->element[0]->str, "master") != 0) {
            fail(rc, "the server Sentinel named is not a master (yet)");
            return;
        }
    }
    if (--rc->setup_pending == 0)
        became_ready(rc);
}

static void connect_to(struct redis_client *rc, const struct endpoint *e)
{
    free_endpoint(&rc->current);
    rc->current.host = strdup(e->host);
    rc->current.port = e->port;
    const char *error = NULL;
    rc->state = ST_CONNECTING;
    struct conn *c = conn_open(rc, e, 0, &error);
    if (c == NULL) {
        fail(rc, error);
        return;
    }
    rc->conn = c;
    rc->setup_pending = 0;
    char db[16];
    snprintf(db, sizeof(db), "%d", rc->database);
    if (rc->password && *rc->password) {
        if (rc->user && *rc->user) {
            const char *argv[] = { "AUTH", rc->user, rc->password };
            redisAsyncCommandArgv(c->ac, setup_replied, (void *)"AUTH", 3, argv, NULL);
        } else {
            const char *argv[] = { "AUTH", rc->password };
            redisAsyncCommandArgv(c->ac, setup_replied, (void *)"AUTH", 2, argv, NULL);
        }
        rc->setup_pending++;
    }
    if (rc->database != 0) {
        const char *argv[] = { "SELECT", db };
        redisAsyncCommandArgv(c->ac, setup_replied, (void *)"SELECT", 2, argv, NULL);
        rc->setup_pending++;
    }
    /* ROLE proves the server answers; with Sentinel, that it is the master. */
    const char *argv[] = { "ROLE" };
    redisAsyncCommandArgv(c->ac, setup_replied, (void *)"ROLE", 1, argv, NULL);
    rc->setup_pending++;
}

static void ask_next_sentinel(struct redis_client *rc);

static void sentinel_replied(redisAsyncContext *ac, void *r, void *privdata)
{
    struct conn *c = ac->data;
    redisReply *reply = r;
    (void)privdata;
    if (c == NULL || c->dead || c->rc == NULL || c->rc->sconn != c)
        return;
    struct redis_client *rc = c->rc;
    struct endpoint master = { NULL, 0 };
    if (reply && reply->type == REDIS_REPLY_ARRAY && reply->elements == 2 &&
        reply->element[0]->type == REDIS_REPLY_STRING && reply->element[1]->type == REDIS_REPLY_STRING) {
        long port = strtol(reply->element[1]->str, NULL, 10);
        if (port > 0 && port < 65536) {
            master.host = reply->element[0]->str;
            master.port = (int)port;
        }
    }
    /* Done with this sentinel either way. */
    rc->sconn = NULL;
    c->abandoned = 1;
    redisAsyncDisconnect(ac);
    if (master.host)
        connect_to(rc, &master);
    else
        ask_next_sentinel(rc);
}

static void ask_next_sentinel(struct redis_client *rc)
{
    while (rc->next_sentinel < rc->nsentinels) {
        const struct endpoint *e = &rc->sentinels[rc->next_sentinel++];
        const char *error = NULL;
        struct conn *c = conn_open(rc, e, 1, &error);
        if (c == NULL)
            continue;
        rc->sconn = c;
        const char *argv[] = { "SENTINEL", "get-master-addr-by-name", rc->master_name };
        redisAsyncCommandArgv(c->ac, sentinel_replied, NULL, 3, argv, NULL);
        return;
    }
    fail(rc, "no sentinel knows the master");
}

static void start_attempt(struct redis_client *rc)
{
    if (rc->freeing)
        return;
    rc->attempt_timer = petrel_timer_start(rc->m, rc->timeout_ms, attempt_timed_out, rc);
    if (rc->nsentinels) {
        rc->state = ST_RESOLVING;
        rc->next_sentinel = 0;
        ask_next_sentinel(rc);
    } else {
        connect_to(rc, &rc->server);
    }
}

struct sentinel_list {
    struct endpoint *items;
    size_t n;
};

static int add_sentinel(const char *item, void *arg)
{
    struct sentinel_list *l = arg;
    struct endpoint *bigger = realloc(l->items, (l->n + 1) * sizeof(*bigger));
    if (bigger == NULL)
        return -1;
    l->items = bigger;
    if (parse_endpoint(item, &l->items[l->n]) != 0)
        return -1;
    l->n++;
    return 0;
}

struct redis_client *redis_client_create(petrel_module *m, const struct redis_config *cfg, const char *label)
{
    struct redis_client *rc = calloc(1, sizeof(*rc));
    if (rc == NULL)
        return NULL;
    rc->m = m;
    rc->label = strdup(label);
    rc->user = cfg->user ? strdup(cfg->user) : NULL;
    rc->password = cfg->password ? strdup(cfg->password) : NULL;
    rc->database = cfg->database;
    rc->timeout_ms = cfg->timeout_ms ? cfg->timeout_ms : 2000;
    rc->master_name = cfg->master_name ? strdup(cfg->master_name) : NULL;
    rc->waiting.next = rc->waiting.prev = &rc->waiting;
    if (cfg->sentinels && *cfg->sentinels) {
        struct sentinel_list l = { NULL, 0 };
        each_item(cfg->sentinels, add_sentinel, &l);
        rc->sentinels = l.items;
        rc->nsentinels = l.n;
        rc->current.host = strdup(rc->master_name ? rc->master_name : "?");
    } else if (cfg->server) {
        parse_endpoint(cfg->server, &rc->server);
        rc->current.host = rc->server.host ? strdup(rc->server.host) : NULL;
        rc->current.port = rc->server.port;
    }
    start_attempt(rc);
    return rc;
}

void redis_client_free(struct redis_client *rc)
{
    if (rc == NULL)
        return;
    rc->freeing = 1;
    if (rc->retry_timer)
        petrel_timer_cancel(rc->retry_timer);
    rc->retry_timer = NULL;
    cancel_attempt_timer(rc);
    flush_waiting(rc, "shutting down");
    rc->conn = rc->sconn = NULL;
    /* hiredis is done with a conn once redisAsyncFree returns. */
    struct conn *c, *next;
    for (c = rc->conns; c; c = next) {
        next = c->next_conn;
        if (c->free_timer)
            petrel_timer_cancel(c->free_timer);
        conn_close(c);
        free(c);
    }
    rc->conns = NULL;
    free_endpoint(&rc->server);
    free_endpoint(&rc->current);
    for (size_t i = 0; i < rc->nsentinels; i++)
        free_endpoint(&rc->sentinels[i]);
    free(rc->sentinels);
    free(rc->label);
    free(rc->user);
    free(rc->password);
    free(rc->master_name);
    free(rc);
}
