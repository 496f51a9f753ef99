/*
 * socketmap: lookup tables answered by a server over the socketmap protocol
 * (Sendmail's, and Postfix's socketmap(5) tables), named as in Postfix:
 *
 *   socketmap:inet:HOST:PORT:NAME     socketmap:unix:/PATH:NAME
 *
 * A request is the netstring "NAME KEY"; the reply is the netstring
 * "OK VALUE", "NOTFOUND ", "TEMP reason", "TIMEOUT reason" or "PERM
 * reason". As in Postfix: TEMP, TIMEOUT, an unknown reply, a broken
 * connection and a timeout make the lookup fail temporarily (the client is
 * told 451, never "unknown user"); PERM is a configuration error (also a
 * failure, logged as such); a key longer than socketmap_max_query_size is
 * "not found" with a warning; a reply longer than socketmap_max_reply_size
 * is an error. The table is a pattern table (queried once with the whole
 * string, no parent domains), as Postfix's.
 *
 * Injection: the key travels as the bytes of a length-prefixed netstring,
 * so no byte of it (space, quote, backslash, ':' or ',') can change the
 * request's framing; the server sees exactly the key. A reply value with a
 * NUL byte in it is refused (an error), not cut short.
 *
 * Asynchronous: lookups are on the role's event loop (lookup_async): each
 * server endpoint (shared by every table that names it, as Postfix shares
 * one client per endpoint) has a pool of up to socketmap_max_connections
 * non-blocking connections, each carrying one request at a time (the
 * protocol has no request IDs); further requests wait in a FIFO. An idle
 * connection is reused for up to 10 s idle and 100 s in all (Postfix's
 * max_idle and max_ttl); a reused connection the server had closed is
 * retried once on a fresh one, as Postfix does. Every request is bounded by
 * socketmap_timeout, from the moment it is queued.
 *
 * The blocking lookup (for callers that cannot wait: the queue manager,
 * cleanup, petrelctl map query) uses its own connection per table, with
 * the same timeout, protocol and limits.
 *
 * Petrel's result cache (off by default; errors never cached) and the
 * merging of lookups of a key already asked are the glue's (modules/
 * common/remote_table.c). A socketmap table names no file, so its cache
 * is set in main.cf: socketmap_cache_ttl, socketmap_cache_negative_ttl,
 * socketmap_cache_size, for every socketmap table.
 */
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <petrel/plugin.h>

#include "netstring.h"
#include "remote_table.h"

#define MAX_IDLE_SECONDS 10
#define MAX_TTL_SECONDS 100

struct request;

/* What a reply's log line names. */
struct table_like {
    const char *spec;
};

struct conn {
    struct conn *next;
    struct endpoint *ep;
    int fd;
    int connecting;
    int fresh;                  /* no request completed on it yet */
    time_t born, last_used;
    petrel_watch *watch;
    petrel_timer *fail_timer;   /* connect() failed at once: reported from the loop */
    int connect_errno;
    struct request *req;        /* the one in progress, or NULL (idle) */
    size_t sent;
    struct netstring_reader reader;
};

struct request {
    struct request *next;
    struct endpoint *ep;
    const struct table *t;      /* whose close detaches it (rl NULL): the endpoint outlives tables */
    struct remote_lookup *rl;   /* answered through the glue (remote_table.c); NULL: nobody waits */
    char *wire;
    size_t wire_len;
    int retried;
    petrel_timer *timer;
    struct conn *conn;
};

struct endpoint {
    struct endpoint *next;
    char *name;                 /* "inet:127.0.0.1:9999" */
    struct sockaddr_storage addr;
    socklen_t addrlen;
    struct conn *conns;
    int nconns;
    struct request *queue_head, *queue_tail;
    struct state *st;
};

struct state {
    petrel_module *m;
    struct endpoint *endpoints;
    unsigned timeout_ms;
    size_t max_reply, max_query;
    int max_conns;
};

struct table {
    struct state *st;
    struct endpoint *ep;
    const char *spec;           /* "inet:127.0.0.1:9999:virtual" */
    const char *mapname;
    int blocking_fd;            /* the blocking lookup's connection, or -1 */
};

static struct state *state_of(petrel_module *m)
{
    struct state *st = petrel_module_data(m);
    if (st == NULL) {
        st = calloc(1, sizeof(*st));
        if (st == NULL)
            return NULL;
        st->m = m;
        petrel_module_set_data(m, st);
    }
    /* Parameters are read at every open: open may run before init, or
     * where init never runs (fini still frees the state there). */
    long long t = petrel_param_int(m, "socketmap_timeout");
    st->timeout_ms = (unsigned)(t > 0 ? t * 1000 : 100000);
    st->max_reply = (size_t)petrel_param_int(m, "socketmap_max_reply_size");
    st->max_query = (size_t)petrel_param_int(m, "socketmap_max_query_size");
    st->max_conns = (int)petrel_param_int(m, "socketmap_max_connections");
    if (st->max_conns < 1)
        st->max_conns = 1;
    return st;
}

/* "inet:host:port" or "unix:/path" into a socket address; NULL or why. */
static const char *resolve(const char *endpoint, struct sockaddr_storage *ss, socklen_t *len, char *why,
                           size_t size)
{
    memset(ss, 0, sizeof(*ss));
    if (strncmp(endpoint, "unix:", 5) == 0) {
        struct sockaddr_un *sun = (struct sockaddr_un *)ss;
        const char *path = endpoint + 5;
        if (*path == '\0' || strlen(path) >= sizeof(sun->sun_path)) {
            snprintf(why, size, "bad UNIX socket path \"%s\"", path);
            return why;
        }
        sun->sun_family = AF_UNIX;
        strcpy(sun->sun_path, path);
        *len = (socklen_t)sizeof(*sun);
        return NULL;
    }
    if (strncmp(endpoint, "inet:", 5) != 0) {
        snprintf(why, size, "server \"%s\" is neither inet:host:port nor unix:/path", endpoint);
        return why;
    }
    char *host = strdup(endpoint + 5);
    if (host == NULL) {
        snprintf(why, size, "out of memory");
        return why;
    }
    char *h = host;
    char *port = NULL;
    if (*h == '[') {   /* [::1]:port */
        char *close = strchr(h, ']');
        if (close && close[1] == ':') {
            *close = '\0';
            port = close + 2;
            h++;
        }
    } else {
        port = strrchr(h, ':');
        if (port)
            *port++ = '\0';
    }
    if (port == NULL || *port == '\0' || *h == '\0') {
        snprintf(why, size, "server \"%s\": expecting inet:host:port", endpoint);
        free(host);
        return why;
    }
    struct addrinfo hints = { 0 }, *res = NULL;
    hints.ai_socktype = SOCK_STREAM;
    int rc = getaddrinfo(h, port, &hints, &res);
    if (rc != 0 || res == NULL) {
        snprintf(why, size, "server \"%s\": %s", endpoint, gai_strerror(rc));
        free(host);
        return why;
    }
    memcpy(ss, res->ai_addr, res->ai_addrlen);
    *len = res->ai_addrlen;
    freeaddrinfo(res);
    free(host);
    return NULL;
}

static struct endpoint *endpoint_get(struct state *st, const char *name, char *why, size_t size)
{
    for (struct endpoint *ep = st->endpoints; ep; ep = ep->next)
        if (strcmp(ep->name, name) == 0)
            return ep;
    struct endpoint *ep = calloc(1, sizeof(*ep));
    if (ep == NULL || (ep->name = strdup(name)) == NULL) {
        free(ep);
        snprintf(why, size, "out of memory");
        return NULL;
    }
    if (resolve(name, &ep->addr, &ep->addrlen, why, size) != NULL) {
        free(ep->name);
        free(ep);
        return NULL;
    }
    ep->st = st;
    ep->next = st->endpoints;
    st->endpoints = ep;
    return ep;
}

/* ------------------------------------------------------------------ */
/* replies                                                             */

/* The reply payload as a lookup status; *value points into payload. */
static int reply_status(const struct table_like *t, char *payload, const char **value, petrel_module *m)
{
    char *space = strchr(payload, ' ');
    char *rest = space ? space + 1 : NULL;
    if (space)
        *space = '\0';
    if (strcmp(payload, "OK") == 0) {
        *value = rest ? rest : "";
        return PETREL_TABLE_FOUND;
    }
    if (strcmp(payload, "NOTFOUND") == 0)
        return PETREL_TABLE_NOTFOUND;
    const char *cls = strcmp(payload, "TEMP") == 0 ? "temporary"
                    : strcmp(payload, "TIMEOUT") == 0 ? "timeout"
                    : strcmp(payload, "PERM") == 0 ? "permanent" : "unknown";
    while (rest && *rest == ' ')
        rest++;
    if (rest)
        for (char *p = rest; *p; p++)
            if ((unsigned char)*p < 0x20 || (unsigned char)*p >= 0x7f)
                *p = '?';
    petrel_module_log(m, PETREL_LOG_WARNING, "socketmap:%s socketmap server %s error%s%.200s", t->spec, cls,
                      rest && *rest ? ": " : "", rest && *rest ? rest : "");
    return PETREL_TABLE_RETRY;
}

/* ------------------------------------------------------------------ */
/* the asynchronous client                                             */

static void conn_close(struct conn *c)
{
    struct endpoint *ep = c->ep;
    for (struct conn **p = &ep->conns; *p; p = &(*p)->next)
        if (*p == c) {
            *p = c->next;
            break;
        }
    ep->nconns--;
    if (c->watch)
        petrel_watch_cancel(c->watch);
    if (c->fail_timer)
        petrel_timer_cancel(c->fail_timer);
    if (c->fd >= 0)
        close(c->fd);
    netstring_reader_free(&c->reader);
    free(c);
}

static void request_free(struct request *r)
{
    if (r->timer)
        petrel_timer_cancel(r->timer);
    free(r->wire);
    free(r);
}

static void dispatch(struct endpoint *ep);

/* The table the request looks in, for log lines; NULL once it closed. */
static const char *request_spec(const struct request *r)
{
    return r->rl ? remote_lookup_spec(r->rl) : NULL;
}

/* The request is over with status: answer, free, and let the next go. */
static void request_done(struct request *r, int status, const char *value)
{
    struct remote_lookup *rl = r->rl;
    struct endpoint *ep = r->ep;
    request_free(r);
    remote_lookup_answer(rl, status, value);
    dispatch(ep);
}

/* A connection failed under its request: retry a reused connection once
 * (the server may have closed it while idle), else the lookup fails. */
static void conn_failed(struct conn *c, const char *what, int err)
{
    struct request *r = c->req;
    struct endpoint *ep = c->ep;
    int fresh = c->fresh;
    c->req = NULL;
    conn_close(c);
    if (r == NULL)
        return;
    r->conn = NULL;
    if (!fresh && !r->retried) {
        r->retried = 1;
        r->next = ep->queue_head;
        ep->queue_head = r;
        if (ep->queue_tail == NULL)
            ep->queue_tail = r;
        dispatch(ep);
        return;
    }
    const char *spec = request_spec(r);
    petrel_module_log(ep->st->m, PETREL_LOG_WARNING, "%s lookup error: %s %s: %s", spec ? spec : ep->name, what,
                      ep->name, err ? strerror(err) : "connection closed by the server");
    request_done(r, PETREL_TABLE_RETRY, NULL);
}

static void conn_io(int fd, int events, void *arg);

static void conn_want(struct conn *c, int events)
{
    if (c->fail_timer)
        return;   /* it fails from the timer */
    if (c->watch)
        petrel_watch_cancel(c->watch);
    c->watch = petrel_watch_fd(c->ep->st->m, c->fd, events, conn_io, c);
}

static void conn_start_request(struct conn *c, struct request *r)
{
    c->req = r;
    r->conn = c;
    c->sent = 0;
    netstring_reader_free(&c->reader);
    netstring_reader_init(&c->reader, c->ep->st->max_reply + 16);
    conn_want(c, PETREL_WATCH_WRITE);
}

static void conn_io(int fd, int events, void *arg)
{
    struct conn *c = arg;
    (void)events;
    if (c->req == NULL) {
        /* Idle: the server closed it, or sent what nobody asked for. */
        char b;
        ssize_t n = recv(fd, &b, 1, MSG_DONTWAIT);
        if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR) || n > 0)
            conn_close(c);
        return;
    }
    if (c->connecting) {
        int err = 0;
        socklen_t len = sizeof(err);
        if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0)
            err = errno;
        if (err != 0) {
            c->fresh = 1;
            conn_failed(c, "connect to", err);
            return;
        }
        c->connecting = 0;
    }
    struct request *r = c->req;
    if (c->sent < r->wire_len) {
        ssize_t n = send(fd, r->wire + c->sent, r->wire_len - c->sent, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (n < 0) {
            if (errno == EAGAIN || errno == EINTR)
                return;
            conn_failed(c, "write to", errno);
            return;
        }
        c->sent += (size_t)n;
        if (c->sent == r->wire_len)
            conn_want(c, PETREL_WATCH_READ);
        return;
    }
    char buf[4096];
    ssize_t n = recv(fd, buf, sizeof(buf), MSG_DONTWAIT);
    if (n < 0 && (errno == EAGAIN || errno == EINTR))
        return;
    if (n <= 0) {
        int err = n < 0 ? errno : 0;
        if (c->reader.state != NS_LENGTH || c->reader.digits > 0)
            c->fresh = 1;   /* a reply was under way: no retry */
        conn_failed(c, "read from", err);
        return;
    }
    size_t used = netstring_feed(&c->reader, buf, (size_t)n);
    struct endpoint *ep = c->ep;
    const char *spec = request_spec(r);
    struct table_like tl = { spec ? spec : ep->name };
    if (c->reader.state == NS_ERROR || (c->reader.state == NS_DONE && used < (size_t)n)) {
        petrel_module_log(ep->st->m, PETREL_LOG_WARNING, "%s lookup error: server %s: %s", tl.spec, ep->name,
                          c->reader.state == NS_ERROR ? c->reader.error : "more data than one reply");
        c->req = NULL;
        conn_close(c);
        request_done(r, PETREL_TABLE_RETRY, NULL);
        return;
    }
    if (c->reader.state != NS_DONE)
        return;
    c->req = NULL;
    r->conn = NULL;
    c->fresh = 0;
    c->last_used = time(NULL);
    conn_want(c, PETREL_WATCH_READ);   /* idle: notice a close */
    if (c->reader.length > ep->st->max_reply) {
        petrel_module_log(ep->st->m, PETREL_LOG_WARNING, "%s lookup error: reply longer than "
                          "socketmap_max_reply_size (%zu)", tl.spec, ep->st->max_reply);
        request_done(r, PETREL_TABLE_RETRY, NULL);
        return;
    }
    if (netstring_has_nul(&c->reader)) {
        petrel_module_log(ep->st->m, PETREL_LOG_WARNING, "%s lookup error: reply contains a NUL byte", tl.spec);
        request_done(r, PETREL_TABLE_RETRY, NULL);
        return;
    }
    const char *value = NULL;
    int status = reply_status(&tl, c->reader.data, &value, ep->st->m);
    char *copy = value ? strdup(value) : NULL;
    if (status == PETREL_TABLE_FOUND && copy == NULL)
        status = PETREL_TABLE_RETRY;
    request_done(r, status, copy);
    free(copy);
}

static void conn_connect_failed(void *arg)
{
    struct conn *c = arg;
    c->fail_timer = NULL;
    c->fresh = 1;
    conn_failed(c, "connect to", c->connect_errno);
}

static struct conn *conn_open(struct endpoint *ep)
{
    int fd = socket(ep->addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return NULL;
    struct conn *c = calloc(1, sizeof(*c));
    if (c == NULL) {
        close(fd);
        return NULL;
    }
    c->ep = ep;
    c->fd = fd;
    c->fresh = 1;
    c->born = c->last_used = time(NULL);
    netstring_reader_init(&c->reader, ep->st->max_reply + 16);
    c->next = ep->conns;
    ep->conns = c;
    ep->nconns++;
    if (connect(fd, (struct sockaddr *)&ep->addr, ep->addrlen) != 0) {
        if (errno != EINPROGRESS) {
            /* Refused at once (a UNIX socket nobody listens on): the
             * request fails from the loop, never inside lookup_async. */
            c->connect_errno = errno;
            c->connecting = 1;
            c->fail_timer = petrel_timer_start(ep->st->m, 0, conn_connect_failed, c);
            return c;
        }
        c->connecting = 1;
    }
    return c;
}

/* Hands queued requests to idle connections, opening more up to the limit. */
static void dispatch(struct endpoint *ep)
{
    time_t now = time(NULL);
    while (ep->queue_head) {
        struct conn *idle = NULL;
        for (struct conn *c = ep->conns, *next; c; c = next) {
            next = c->next;
            if (c->req != NULL || c->connecting)
                continue;
            if (now - c->last_used > MAX_IDLE_SECONDS || now - c->born > MAX_TTL_SECONDS) {
                conn_close(c);
                continue;
            }
            idle = c;
            break;
        }
        if (idle == NULL) {
            if (ep->nconns >= ep->st->max_conns)
                return;   /* a connection that finishes takes the next */
            idle = conn_open(ep);
            if (idle == NULL) {
                struct request *r = ep->queue_head;
                ep->queue_head = r->next;
                if (ep->queue_head == NULL)
                    ep->queue_tail = NULL;
                petrel_module_log(ep->st->m, PETREL_LOG_WARNING, "socketmap server %s: socket: %s", ep->name,
                                  strerror(errno));
                request_done(r, PETREL_TABLE_RETRY, NULL);
                return;
            }
        }
        struct request *r = ep->queue_head;
        ep->queue_head = r->next;
        if (ep->queue_head == NULL)
            ep->queue_tail = NULL;
        r->next = NULL;
        conn_start_request(idle, r);
    }
}

static void request_timed_out(void *arg)
{
    struct request *r = arg;
    struct endpoint *ep = r->ep;
    r->timer = NULL;
    if (r->conn) {
        r->conn->req = NULL;
        conn_close(r->conn);   /* its reply would come late, for the wrong request */
    } else {
        struct request **p = &ep->queue_head, *prev = NULL;
        while (*p && *p != r) {
            prev = *p;
            p = &(*p)->next;
        }
        if (*p) {
            *p = r->next;
            if (ep->queue_tail == r)
                ep->queue_tail = prev;
        }
    }
    const char *spec = request_spec(r);
    petrel_module_log(ep->st->m, PETREL_LOG_WARNING, "%s lookup error: no reply from %s within %us",
                      spec ? spec : ep->name, ep->name, (ep->st->timeout_ms + 999) / 1000);
    request_done(r, PETREL_TABLE_RETRY, NULL);
}

/* The request "MAPNAME KEY" as a netstring; NULL when the key is too long. */
static char *request_wire(const struct table *t, const char *key, size_t *len)
{
    size_t klen = strlen(key), mlen = strlen(t->mapname);
    char *payload = malloc(mlen + 1 + klen + 1);
    if (payload == NULL)
        return NULL;
    memcpy(payload, t->mapname, mlen);
    payload[mlen] = ' ';
    memcpy(payload + mlen + 1, key, klen);
    char *wire = netstring_encode(payload, mlen + 1 + klen, len);
    free(payload);
    return wire;
}

static int query_too_large(const struct table *t, const char *key)
{
    if (t->st->max_query == 0 || strlen(key) <= t->st->max_query)
        return 0;
    petrel_module_log(t->st->m, PETREL_LOG_WARNING, "table socketmap:%s query too large: '%.100s', returning "
                      "'not found'", t->spec, key);
    return 1;
}

/* The asynchronous lookup (the glue, remote_table.c, answered from its
 * cache or joined a lookup in flight already). */
static void socketmap_lookup_start(void *handle, struct remote_lookup *rl, const char *key)
{
    struct table *t = handle;
    if (query_too_large(t, key)) {
        remote_lookup_answer(rl, PETREL_TABLE_NOTFOUND, NULL);
        return;
    }
    struct request *r = calloc(1, sizeof(*r));
    if (r == NULL || (r->wire = request_wire(t, key, &r->wire_len)) == NULL) {
        free(r);
        remote_lookup_answer(rl, PETREL_TABLE_RETRY, NULL);
        return;
    }
    r->ep = t->ep;
    r->t = t;
    r->rl = rl;
    r->timer = petrel_timer_start(t->st->m, t->st->timeout_ms, request_timed_out, r);
    if (t->ep->queue_tail)
        t->ep->queue_tail->next = r;
    else
        t->ep->queue_head = r;
    t->ep->queue_tail = r;
    dispatch(t->ep);
}

/* ------------------------------------------------------------------ */
/* the blocking client                                                 */

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1000.0 + ts.tv_nsec / 1e6;
}

/* Waits for events on fd until deadline; 1 ready, 0 timeout, -1 error. */
static int wait_fd(int fd, short events, double deadline)
{
    for (;;) {
        double left = deadline - now_ms();
        if (left <= 0)
            return 0;
        struct pollfd p = { fd, events, 0 };
        int n = poll(&p, 1, (int)left + 1);
        if (n > 0)
            return 1;
        if (n < 0 && errno != EINTR)
            return -1;
    }
}

static int blocking_connect(struct table *t, double deadline)
{
    int fd = socket(t->ep->addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    if (connect(fd, (struct sockaddr *)&t->ep->addr, t->ep->addrlen) != 0) {
        if (errno != EINPROGRESS) {
            int e = errno;
            close(fd);
            errno = e;
            return -1;
        }
        if (wait_fd(fd, POLLOUT, deadline) != 1) {
            close(fd);
            errno = ETIMEDOUT;
            return -1;
        }
        int err = 0;
        socklen_t len = sizeof(err);
        getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len);
        if (err) {
            close(fd);
            errno = err;
            return -1;
        }
    }
    return fd;
}

/* One exchange on t->blocking_fd; 1 done (reader complete), 0 the
 * connection broke before any reply byte (retryable), -1 failed (*why). */
static int blocking_exchange(struct table *t, const char *wire, size_t wire_len, struct netstring_reader *rd,
                             double deadline, const char **why)
{
    size_t sent = 0;
    while (sent < wire_len) {
        if (wait_fd(t->blocking_fd, POLLOUT, deadline) != 1) {
            *why = "timeout";
            return -1;
        }
        ssize_t n = send(t->blocking_fd, wire + sent, wire_len - sent, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (n < 0 && errno != EAGAIN && errno != EINTR)
            return 0;
        if (n > 0)
            sent += (size_t)n;
    }
    int any = 0;
    while (rd->state != NS_DONE) {
        if (wait_fd(t->blocking_fd, POLLIN, deadline) != 1) {
            *why = "timeout";
            return -1;
        }
        char buf[4096];
        ssize_t n = recv(t->blocking_fd, buf, sizeof(buf), MSG_DONTWAIT);
        if (n < 0 && (errno == EAGAIN || errno == EINTR))
            continue;
        if (n <= 0) {
            if (!any)
                return 0;
            *why = "connection closed by the server";
            return -1;
        }
        any = 1;
        size_t used = netstring_feed(rd, buf, (size_t)n);
        if (rd->state == NS_ERROR) {
            *why = rd->error;
            return -1;
        }
        if (rd->state == NS_DONE && used < (size_t)n) {
            *why = "more data than one reply";
            return -1;
        }
    }
    return 1;
}

static int socketmap_lookup(void *handle, const char *key, const char **value, petrel_pool *scratch)
{
    struct table *t = handle;
    if (query_too_large(t, key))
        return 0;
    size_t wire_len;
    char *wire = request_wire(t, key, &wire_len);
    if (wire == NULL)
        return -1;
    double deadline = now_ms() + t->st->timeout_ms;
    struct netstring_reader rd;
    const char *why = NULL;
    int rc = 0;
    for (int attempt = 0; attempt < 2 && rc == 0; attempt++) {
        int reused = t->blocking_fd >= 0;
        if (t->blocking_fd < 0 && (t->blocking_fd = blocking_connect(t, deadline)) < 0) {
            why = strerror(errno);
            rc = -1;
            break;
        }
        netstring_reader_init(&rd, t->st->max_reply + 16);
        rc = blocking_exchange(t, wire, wire_len, &rd, deadline, &why);
        if (rc != 1) {
            close(t->blocking_fd);
            t->blocking_fd = -1;
            netstring_reader_free(&rd);
            if (rc == 0 && !reused) {
                why = "connection closed by the server";
                rc = -1;
            }
        }
    }
    free(wire);
    if (rc != 1) {
        petrel_module_log(t->st->m, PETREL_LOG_WARNING, "socketmap:%s lookup error: server %s: %s", t->spec,
                          t->ep->name, why ? why : "failed");
        return -1;
    }
    int status;
    if (rd.length > t->st->max_reply) {
        petrel_module_log(t->st->m, PETREL_LOG_WARNING, "socketmap:%s lookup error: reply longer than "
                          "socketmap_max_reply_size (%zu)", t->spec, t->st->max_reply);
        status = PETREL_TABLE_RETRY;
    } else if (netstring_has_nul(&rd)) {
        petrel_module_log(t->st->m, PETREL_LOG_WARNING, "socketmap:%s lookup error: reply contains a NUL byte",
                          t->spec);
        status = PETREL_TABLE_RETRY;
    } else {
        struct table_like tl = { t->spec };
        const char *v = NULL;
        status = reply_status(&tl, rd.data, &v, t->st->m);
        if (status == PETREL_TABLE_FOUND)
            *value = petrel_pool_strdup(scratch, v);
    }
    netstring_reader_free(&rd);
    return status == PETREL_TABLE_FOUND ? 1 : status == PETREL_TABLE_NOTFOUND ? 0 : -1;
}

/* ------------------------------------------------------------------ */
/* open, close, the module                                             */

static void *socketmap_open(petrel_module *m, const char *name, petrel_pool *pool, struct table_cache_settings *cache,
                            const char **error)
{
    static char why[512];
    struct state *st = state_of(m);
    if (st == NULL) {
        *error = "out of memory";
        return NULL;
    }
    const char *colon = strrchr(name, ':');
    if (colon == NULL || colon == name || colon[1] == '\0') {
        *error = "socketmap requires server:socketmap argument";
        return NULL;
    }
    char *server = petrel_pool_strndup(pool, name, (size_t)(colon - name));
    struct endpoint *ep = endpoint_get(st, server, why, sizeof(why));
    if (ep == NULL) {
        *error = why;
        return NULL;
    }
    struct table *t = petrel_pool_zalloc(pool, sizeof(*t));
    t->st = st;
    t->ep = ep;
    t->spec = petrel_pool_strdup(pool, name);
    t->mapname = petrel_pool_strdup(pool, colon + 1);
    t->blocking_fd = -1;
    /* A socketmap table has no file: its cache is main.cf's, for every
     * socketmap table of the process. */
    cache->ttl = petrel_param_int(m, "socketmap_cache_ttl");
    cache->negative_ttl = petrel_param_int(m, "socketmap_cache_negative_ttl");
    cache->size = petrel_param_int(m, "socketmap_cache_size");
    return t;
}

static void socketmap_close(void *handle)
{
    struct table *t = handle;
    if (t->blocking_fd >= 0)
        close(t->blocking_fd);
    /* Requests in flight belong to the endpoint, which other tables
     * share: they go on, and their answers go nowhere (the glue forgets
     * this table's lookups as it closes). */
    for (struct request *r = t->ep->queue_head; r; r = r->next)
        if (r->t == t)
            r->rl = NULL;
    for (struct conn *c = t->ep->conns; c; c = c->next)
        if (c->req && c->req->t == t)
            c->req->rl = NULL;
}

static void socketmap_fini(petrel_module *m)
{
    struct state *st = petrel_module_data(m);
    if (st == NULL)
        return;
    while (st->endpoints) {
        struct endpoint *ep = st->endpoints;
        st->endpoints = ep->next;
        while (ep->conns) {
            struct conn *c = ep->conns;
            if (c->req) {
                c->req->conn = NULL;
                c->req->next = ep->queue_head;
                ep->queue_head = c->req;
                c->req = NULL;
            }
            conn_close(c);
        }
        while (ep->queue_head) {
            struct request *r = ep->queue_head;
            ep->queue_head = r->next;
            request_free(r);
        }
        free(ep->name);
        free(ep);
    }
    free(st);
    petrel_module_set_data(m, NULL);
}

static const petrel_param params[] = {
    { PETREL_PARAM_INIT, .name = "socketmap_timeout", .type = PETREL_PARAM_TIME, .default_value = "100s",
      .help = "how long one lookup may take (connect, request and reply) before it fails temporarily",
      .min = 1, .max = 3000 },
    { PETREL_PARAM_INIT, .name = "socketmap_max_reply_size", .type = PETREL_PARAM_INT, .default_value = "100000",
      .help = "the largest reply accepted (Postfix's parameter of that name)", .min = 1, .max = 100000000 },
    { PETREL_PARAM_INIT, .name = "socketmap_max_query_size", .type = PETREL_PARAM_INT, .default_value = "10000",
      .help = "keys longer than this are not found, with a warning (Postfix's parameter of that name); 0: no limit",
      .min = 0, .max = 100000000 },
    { PETREL_PARAM_INIT, .name = "socketmap_max_connections", .type = PETREL_PARAM_INT, .default_value = "8",
      .help = "connections per server in each process; more requests wait for one", .min = 1, .max = 1000 },
    /* Petrel's result cache (doc/tables.md): a socketmap table names no
     * file to hold it, so main.cf does, for every socketmap table. */
    { PETREL_PARAM_INIT, .name = "socketmap_cache_ttl", .type = PETREL_PARAM_TIME, .default_value = "0s",
      .help = "how long a socketmap answer is reused without asking the server again; 0: no cache",
      .min = 0, .max = TABLE_CACHE_MAX_TTL },
    { PETREL_PARAM_INIT, .name = "socketmap_cache_negative_ttl", .type = PETREL_PARAM_TIME,
      .default_value = "$socketmap_cache_ttl",
      .help = "how long a socketmap \"not found\" is reused (errors never are)", .min = 0,
      .max = TABLE_CACHE_MAX_TTL },
    { PETREL_PARAM_INIT, .name = "socketmap_cache_size", .type = PETREL_PARAM_INT, .default_value = "1000",
      .help = "the most answers a socketmap table's cache keeps in each process (least recently used go first)",
      .min = 1, .max = TABLE_CACHE_MAX_SIZE },
    { .name = NULL },
};

static const struct remote_table_type remote_type = {
    .name = "socketmap", .open = socketmap_open, .lookup = socketmap_lookup, .start = socketmap_lookup_start,
    .close = socketmap_close,
};
REMOTE_TABLE_OPEN(open_remote, remote_type)

static const petrel_table_type table_types[] = {
    { PETREL_TABLE_TYPE_INIT, .name = "socketmap", .open = open_remote, REMOTE_TABLE_ENTRIES, .pattern = 1 },
    { .name = NULL },
};

const petrel_module_desc petrel_module_descriptor = {
    PETREL_MODULE_INIT,
    .name = "socketmap",
    .version = "1.0",
    .description = "socketmap: lookup tables (Postfix's socketmap(5) protocol), asynchronous",
    .params = params,
    .fini = socketmap_fini,
    .table_types = table_types,
    /* The module's own socketmap_timeout answers first; the core's guard
     * (NAME_hook_timeout) only catches a lookup the module lost. */
    .hook_timeout_ms = 3600 * 1000,
};
