/*
 * check_policy_service: Postfix's SMTPD access policy delegation client,
 * non-blocking on the worker's loop.
 *
 * A policy client is one endpoint (inet:host:port or unix:/path, relative
 * paths under queue_directory as in Postfix) with its settings: the
 * smtpd_policy_service_* parameters, overridden per endpoint with
 * Postfix's "{ endpoint, name = value, ... }" form. It keeps a pool of
 * connections per worker, reused across sessions:
 *
 *   - a request takes a connection the session already holds, else an idle
 *     one, else opens a new one (non-blocking connect); a session holds its
 *     connection until its mail transaction ends, so every request about
 *     one message (one "instance") goes over the same connection, which
 *     Postfix promises to policy servers; outside a transaction the
 *     connection goes back to the pool after each reply;
 *   - an idle connection is closed after max_idle, any connection once
 *     max_ttl has passed since it was opened (after its request), after
 *     request_limit requests, and when the server says anything or closes
 *     while no request is pending (Postfix: "readable before we send");
 *   - connect, write and read each have `timeout`; a failed attempt
 *     (refused, reset, timeout, a reply without action=, one past
 *     POLICY_REPLY_MAX bytes) is logged and retried after retry_delay on a
 *     new connection, up to try_limit attempts; then the default_action
 *     applies ("451 4.3.5 Server configuration problem" by default).
 *
 * Only the session that asked waits; a session that goes away mid-request
 * closes that connection (its reply would belong to nobody). The reply's
 * action goes through the same evaluator as access tables
 * (restrict_apply_action), so every access(5) action works.
 *
 * A policy server can be a master.cf spawn(8) service reached at
 * unix:private/NAME, as in Postfix: the master runs it per connection
 * (core/master/spawn_service.c); nothing here differs for it.
 */
#include "config.h"

#include <errno.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>

#include "config/cfg.h"
#include "lib/log.h"
#include "lib/xalloc.h"
#include "mail/smtp_syntax.h"
#include "smtpd/policy_proto.h"
#include "smtpd/restrict_int.h"
#include "smtpd/smtpd_int.h"
#include "tables/table.h"
#include "tables/table_source.h"

struct policy_conn;

struct policy_client {
    const char *spec;                /* the check_policy_service argument, as written */
    const char *endpoint;            /* "inet:127.0.0.1:9998", "unix:/path" (what the log and table name say) */
    const char *name;                /* Postfix's auto_clnt_name: without the transport */
    struct sockaddr_storage addr;
    socklen_t addrlen;
    struct timeval timeout;
    long max_idle, max_ttl, retry_delay;
    int request_limit, try_limit;
    const char *default_action, *policy_context;
    struct policy_conn *idle;        /* connections nobody holds, most recent first */
};

struct policy_conn {
    struct policy_client *client;
    struct smtpd_worker *worker;
    struct bufferevent *bev;
    struct event *idle_timer;
    time_t opened;
    int requests;
    int connected;
    struct policy_request *req;      /* the request in flight */
    struct smtpd_session *holder;    /* the session holding it for its transaction */
    struct policy_conn *next;        /* in the idle list, or the holder's list */
};

/* One check_policy_service evaluation (the command's pool). */
struct policy_request {
    struct smtpd_session *s;
    struct policy_client *client;
    struct buf text;
    int tries;
    struct policy_conn *conn;
    struct event *retry_timer;
    const char *reply_name, *reply_class;
    int done;
};

/* ------------------------------------------------------------------ */
/* configuration                                                       */

__attribute__((format(printf, 2, 3)))
static int fail(char **error, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    if (vasprintf(error, fmt, ap) < 0)
        *error = NULL;
    va_end(ap);
    return -1;
}

static int parse_endpoint(struct policy_client *c, const struct cfg *cfg, const char *endpoint, petrel_pool *pool,
                          char **error)
{
    memset(&c->addr, 0, sizeof(c->addr));
    if (strncmp(endpoint, "unix:", 5) == 0 || strncmp(endpoint, "local:", 6) == 0) {
        const char *path = strchr(endpoint, ':') + 1;
        if (*path == '\0')
            return fail(error, "empty socket path");
        /* Postfix: a relative path is under the queue directory (private/NAME). */
        const char *full = *path == '/' ? path : petrel_pool_printf(pool, "%s/%s", cfg_get(cfg, "queue_directory"), path);
        struct sockaddr_un *un = (struct sockaddr_un *)&c->addr;
        if (strlen(full) >= sizeof(un->sun_path))
            return fail(error, "socket path too long: %s", full);
        un->sun_family = AF_UNIX;
        strcpy(un->sun_path, full);
        c->addrlen = sizeof(*un);
        c->name = full;
        c->endpoint = petrel_pool_printf(pool, "unix:%s", full);
        return 0;
    }
    if (strncmp(endpoint, "inet:", 5) != 0)
        return fail(error, "need inet:host:port or unix:/path, not \"%s\"", endpoint);
    const char *hostport = endpoint + 5;
    const char *colon = strrchr(hostport, ':');
    if (colon == NULL || colon == hostport || colon[1] == '\0')
        return fail(error, "need inet:host:port, not \"%s\"", endpoint);
    char *host = petrel_pool_strndup(pool, hostport, (size_t)(colon - hostport));
    size_t hl = strlen(host);
    if (hl >= 2 && host[0] == '[' && host[hl - 1] == ']') {
        host[hl - 1] = '\0';
        host++;
    }
    struct addrinfo hints, *res = NULL;
    memset(&hints, 0, sizeof(hints));
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_NUMERICHOST | AI_NUMERICSERV;
    int rc = getaddrinfo(host, colon + 1, &hints, &res);
    if (rc != 0) {
        /* A host name is resolved once, when the configuration is loaded. */
        hints.ai_flags = AI_NUMERICSERV;
        rc = getaddrinfo(host, colon + 1, &hints, &res);
    }
    if (rc != 0 || res == NULL)
        return fail(error, "cannot resolve %s: %s", hostport, gai_strerror(rc));
    memcpy(&c->addr, res->ai_addr, res->ai_addrlen);
    c->addrlen = res->ai_addrlen;
    freeaddrinfo(res);
    c->name = petrel_pool_strdup(pool, hostport);
    c->endpoint = petrel_pool_strdup(pool, endpoint);
    return 0;
}

/* One "name=value" override of the { ... } form (the name without the
 * smtpd_policy_service_ prefix). */
static int apply_override(struct policy_client *c, const char *item, petrel_pool *pool, char **error)
{
    const char *eq = strchr(item, '=');
    if (eq == NULL)
        return fail(error, "expected name=value, not \"%s\"", item);
    size_t nl = (size_t)(eq - item);
    while (nl > 0 && (item[nl - 1] == ' ' || item[nl - 1] == '\t'))
        nl--;
    const char *value = eq + 1;
    while (*value == ' ' || *value == '\t')
        value++;
    char *name = petrel_pool_strndup(pool, item, nl);
    long long n = 0;
    if (strcmp(name, "timeout") == 0 || strcmp(name, "max_idle") == 0 || strcmp(name, "max_ttl") == 0 ||
        strcmp(name, "retry_delay") == 0) {
        if (cfg_parse_time(value, 's', &n) != 0 || n < 1)
            return fail(error, "%s: bad time value \"%s\"", name, value);
        if (strcmp(name, "timeout") == 0)
            c->timeout.tv_sec = (time_t)n;
        else if (strcmp(name, "max_idle") == 0)
            c->max_idle = (long)n;
        else if (strcmp(name, "max_ttl") == 0)
            c->max_ttl = (long)n;
        else
            c->retry_delay = (long)n;
        return 0;
    }
    if (strcmp(name, "request_limit") == 0 || strcmp(name, "try_limit") == 0) {
        char *end = NULL;
        long v = strtol(value, &end, 10);
        if (end == value || *end || v < 0 || v > 1000000 || (strcmp(name, "try_limit") == 0 && v < 1))
            return fail(error, "%s: bad number \"%s\"", name, value);
        if (strcmp(name, "request_limit") == 0)
            c->request_limit = (int)v;
        else
            c->try_limit = (int)v;
        return 0;
    }
    if (strcmp(name, "default_action") == 0) {
        if (*value == '\0')
            return fail(error, "default_action: empty value");
        c->default_action = petrel_pool_strdup(pool, value);
        return 0;
    }
    if (strcmp(name, "policy_context") == 0) {
        c->policy_context = petrel_pool_strdup(pool, value);
        return 0;
    }
    return fail(error, "unknown attribute name \"%s\" (known: timeout, max_idle, max_ttl, retry_delay, "
                "request_limit, try_limit, default_action, policy_context)", name);
}

static void close_idle_clients(void *arg);

struct policy_client *policy_client_get(struct restrict_compiler *comp, const char *spec, char **error)
{
    for (int i = 0; i < comp->npolicies; i++)
        if (strcmp(comp->policies[i]->spec, spec) == 0)
            return comp->policies[i];
    const struct cfg *cfg = comp->cfg;
    petrel_pool *pool = comp->pool;
    struct policy_client *c = petrel_pool_zalloc(pool, sizeof(*c));
    c->spec = petrel_pool_strdup(pool, spec);
    c->timeout.tv_sec = (time_t)cfg_int(cfg, "smtpd_policy_service_timeout");
    c->max_idle = (long)cfg_int(cfg, "smtpd_policy_service_max_idle");
    c->max_ttl = (long)cfg_int(cfg, "smtpd_policy_service_max_ttl");
    c->retry_delay = (long)cfg_int(cfg, "smtpd_policy_service_retry_delay");
    c->request_limit = (int)cfg_int(cfg, "smtpd_policy_service_request_limit");
    c->try_limit = (int)cfg_int(cfg, "smtpd_policy_service_try_limit");
    c->default_action = cfg_get(cfg, "smtpd_policy_service_default_action");
    c->policy_context = cfg_get(cfg, "smtpd_policy_service_policy_context");
    /* "inet:h:p" alone, or the unbraced "{ inet:h:p, name = value, ... }". */
    char **items = cfg_split_list(spec);
    int rc = -1;
    if (items[0] == NULL)
        fail(error, "empty policy service");
    else if (parse_endpoint(c, cfg, items[0], pool, error) == 0) {
        rc = 0;
        for (char **p = items + 1; *p && rc == 0; p++)
            rc = apply_override(c, *p, pool, error);
    }
    cfg_list_free(items);
    if (rc != 0)
        return NULL;
    if (c->try_limit < 1)
        c->try_limit = 1;
    struct policy_client **grown = petrel_pool_alloc(pool, (size_t)(comp->npolicies + 1) * sizeof(*grown));
    if (comp->npolicies)
        memcpy(grown, comp->policies, (size_t)comp->npolicies * sizeof(*grown));
    grown[comp->npolicies++] = c;
    comp->policies = grown;
    /* The settings' pool dies with the worker or the configuration: the
     * idle connections go with it. */
    petrel_pool_cleanup_add(pool, close_idle_clients, c);
    return c;
}

/* ------------------------------------------------------------------ */
/* connections                                                         */

static void conn_close(struct policy_conn *pc);
static void request_failed(struct policy_request *rq, const char *why);
static void request_answered(struct policy_request *rq, const char *action);

static void unlink_idle(struct policy_conn *pc)
{
    for (struct policy_conn **p = &pc->client->idle; *p; p = &(*p)->next)
        if (*p == pc) {
            *p = pc->next;
            break;
        }
    pc->next = NULL;
}

static void unlink_holder(struct policy_conn *pc)
{
    struct smtpd_session *s = pc->holder;
    if (s == NULL)
        return;
    for (struct policy_conn **p = &s->policy_conns; *p; p = &(*p)->next)
        if (*p == pc) {
            *p = pc->next;
            break;
        }
    pc->next = NULL;
    pc->holder = NULL;
}

static void conn_close(struct policy_conn *pc)
{
    if (pc->holder)
        unlink_holder(pc);
    else
        unlink_idle(pc);
    if (pc->idle_timer)
        event_free(pc->idle_timer);
    if (pc->bev)
        bufferevent_free(pc->bev);
    free(pc);
}

static void close_idle_clients(void *arg)
{
    struct policy_client *c = arg;
    while (c->idle)
        conn_close(c->idle);
}

static void idle_expired(evutil_socket_t fd, short what, void *arg)
{
    conn_close(arg);
}

/* Between requests: close after max_idle, or when max_ttl runs out first. */
static void arm_idle(struct policy_conn *pc)
{
    struct policy_client *c = pc->client;
    long wait = c->max_idle;
    if (c->max_ttl > 0) {
        long left = c->max_ttl - (long)(time(NULL) - pc->opened);
        if (left < wait || wait <= 0)
            wait = left > 0 ? left : 0;
    }
    if (pc->idle_timer == NULL)
        pc->idle_timer = evtimer_new(pc->worker->base, idle_expired, pc);
    struct timeval tv = { wait, 0 };
    evtimer_add(pc->idle_timer, &tv);
}

/* The request is answered: the connection is held by the session until
 * its transaction ends, or goes back to the pool, or is closed. */
static void conn_release(struct policy_conn *pc, struct smtpd_session *s, int reusable)
{
    struct policy_client *c = pc->client;
    pc->req = NULL;
    if (pc->bev)
        bufferevent_set_timeouts(pc->bev, NULL, NULL);
    if (!reusable || (c->request_limit > 0 && pc->requests >= c->request_limit) ||
        (c->max_ttl > 0 && time(NULL) - pc->opened >= c->max_ttl)) {
        conn_close(pc);
        return;
    }
    if (s && s->tx) {
        if (pc->holder == NULL) {
            pc->holder = s;
            pc->next = s->policy_conns;
            s->policy_conns = pc;
        }
    } else if (pc->holder == NULL) {
        pc->next = c->idle;
        c->idle = pc;
    }
    arm_idle(pc);
}

static void conn_read(struct bufferevent *bev, void *arg)
{
    struct policy_conn *pc = arg;
    struct policy_request *rq = pc->req;
    struct evbuffer *in = bufferevent_get_input(bev);
    if (rq == NULL) {
        /* The server talks while nobody asked: not to be trusted again. */
        conn_close(pc);
        return;
    }
    size_t len = evbuffer_get_length(in);
    size_t look = len > POLICY_REPLY_MAX ? POLICY_REPLY_MAX : len;
    const char *data = (const char *)evbuffer_pullup(in, (ev_ssize_t)look);
    ssize_t end = policy_reply_end(data, look);
    if (end == 0)
        return;   /* more to come */
    if (end < 0) {
        request_failed(rq, "reply too long");
        return;
    }
    char action[POLICY_ACTION_MAX];
    const char *why = NULL;
    int rc = policy_reply_parse(data, (size_t)end, action, sizeof(action), &why);
    int leftover = len > (size_t)end;
    evbuffer_drain(in, (size_t)end);
    if (rc != 0) {
        msg_warn("%s in input from %s", why, pc->client->name);
        request_failed(rq, why);
        return;
    }
    pc->requests++;
    struct smtpd_session *s = rq->s;
    conn_release(pc, s, !leftover);
    rq->conn = NULL;
    request_answered(rq, action);
}

static void conn_event(struct bufferevent *bev, short what, void *arg)
{
    struct policy_conn *pc = arg;
    struct policy_request *rq = pc->req;
    if (what & BEV_EVENT_CONNECTED) {
        pc->connected = 1;
        return;
    }
    if (rq == NULL) {
        conn_close(pc);   /* the server went away between requests */
        return;
    }
    const char *why;
    if (what & BEV_EVENT_TIMEOUT) {
        msg_warn("timeout on %s while %s", pc->client->name,
                 !pc->connected ? "connecting" : (what & BEV_EVENT_READING) ? "reading input attribute name"
                                                                              : "sending the request");
        why = "Connection timed out";
    } else if (what & BEV_EVENT_EOF) {
        msg_warn("premature end-of-input on %s while reading input attribute name", pc->client->name);
        why = "Connection reset by peer";
    } else {
        int err = EVUTIL_SOCKET_ERROR();
        why = strerror(err ? err : ECONNRESET);
        if (!pc->connected)
            msg_warn("connect to %s: %s", pc->client->name, why);
    }
    request_failed(rq, why);
}

static struct policy_conn *conn_open(struct policy_client *c, struct smtpd_worker *w, const char **why)
{
    int fd = socket(c->addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        *why = strerror(errno);
        msg_warn("connect to %s: %s", c->name, *why);
        return NULL;
    }
    struct policy_conn *pc = xcalloc(1, sizeof(*pc));
    pc->client = c;
    pc->worker = w;
    pc->opened = time(NULL);
    pc->bev = bufferevent_socket_new(w->base, fd, BEV_OPT_CLOSE_ON_FREE);
    bufferevent_setcb(pc->bev, conn_read, NULL, conn_event, pc);
    bufferevent_setwatermark(pc->bev, EV_READ, 0, POLICY_REPLY_MAX + 1);
    bufferevent_set_timeouts(pc->bev, &c->timeout, &c->timeout);
    bufferevent_enable(pc->bev, EV_READ | EV_WRITE);
    if (bufferevent_socket_connect(pc->bev, (struct sockaddr *)&c->addr, (int)c->addrlen) != 0) {
        int err = EVUTIL_SOCKET_ERROR();
        *why = strerror(err ? err : ECONNREFUSED);
        msg_warn("connect to %s: %s", c->name, *why);
        bufferevent_free(pc->bev);
        free(pc);
        return NULL;
    }
    return pc;
}

/* A connection for s: the one it holds, an idle one, or a new one. */
static struct policy_conn *conn_get(struct policy_client *c, struct smtpd_session *s, const char **why)
{
    for (struct policy_conn *pc = s->policy_conns; pc; pc = pc->next)
        if (pc->client == c) {
            if (pc->idle_timer)
                evtimer_del(pc->idle_timer);
            return pc;
        }
    while (c->idle) {
        struct policy_conn *pc = c->idle;
        unlink_idle(pc);
        if (pc->idle_timer)
            evtimer_del(pc->idle_timer);
        /* A server that closed or talked meanwhile was noticed by conn_read
         * or conn_event; anything left over is not trusted. */
        if (evbuffer_get_length(bufferevent_get_input(pc->bev)) > 0) {
            conn_close(pc);
            continue;
        }
        return pc;
    }
    return conn_open(c, s->worker, why);
}

void smtpd_policy_release(struct smtpd_session *s)
{
    /* The transaction ended: the session's connections go back to the pool. */
    while (s->policy_conns) {
        struct policy_conn *pc = s->policy_conns;
        s->policy_conns = pc->next;
        pc->next = NULL;
        pc->holder = NULL;
        if (pc->req) {
            conn_close(pc);   /* a reply is pending for nobody */
            continue;
        }
        pc->next = pc->client->idle;
        pc->client->idle = pc;
        arm_idle(pc);
    }
}

/* ------------------------------------------------------------------ */
/* requests                                                            */

static void request_free(struct policy_request *rq)
{
    if (rq->retry_timer) {
        event_free(rq->retry_timer);
        rq->retry_timer = NULL;
    }
    buf_free(&rq->text);
}

static void request_cancel(void *ctx)
{
    struct policy_request *rq = ctx;
    if (rq->conn) {
        rq->conn->req = NULL;
        conn_close(rq->conn);
        rq->conn = NULL;
    }
    request_free(rq);
}

static void request_send(struct policy_request *rq);

static void retry_now(evutil_socket_t fd, short what, void *arg)
{
    request_send(arg);
}

static void request_failed(struct policy_request *rq, const char *why)
{
    struct smtpd_session *s = rq->s;
    struct policy_client *c = rq->client;
    if (rq->conn) {
        rq->conn->req = NULL;
        conn_close(rq->conn);
        rq->conn = NULL;
    }
    rq->tries++;
    if (rq->tries >= c->try_limit) {
        msg_warn("problem talking to server %s: %s", c->name, why);
        request_free(rq);
        struct restrict_result r = { .verdict = RV_DUNNO };
        enum restrict_verdict v = restrict_apply_action(s, s->check, c->endpoint, c->default_action,
                                                        "policy query", rq->reply_name, rq->reply_class, &r);
        restrict_step_done(s, v, &r);
        return;
    }
    if (rq->retry_timer == NULL)
        rq->retry_timer = evtimer_new(s->worker->base, retry_now, rq);
    struct timeval tv = { c->retry_delay, 0 };
    evtimer_add(rq->retry_timer, &tv);
}

static void request_answered(struct policy_request *rq, const char *action)
{
    struct smtpd_session *s = rq->s;
    struct policy_client *c = rq->client;
    request_free(rq);
    const char *value = action;
    if (s->set->smtputf8 && !tbl_valid_utf8(action)) {
        msg_warn("malformed UTF-8 in policy server %s response: \"%s\"", c->name, action);
        value = c->default_action;
    }
    struct restrict_result r = { .verdict = RV_DUNNO };
    enum restrict_verdict v = restrict_apply_action(s, s->check, c->endpoint, value, "policy query", rq->reply_name,
                                                    rq->reply_class, &r);
    restrict_step_done(s, v, &r);
}

static void request_send(struct policy_request *rq)
{
    const char *why = "Connection refused";
    struct policy_conn *pc = conn_get(rq->client, rq->s, &why);
    if (pc == NULL) {
        request_failed(rq, why);
        return;
    }
    rq->conn = pc;
    pc->req = rq;
    bufferevent_set_timeouts(pc->bev, &rq->client->timeout, &rq->client->timeout);
    bufferevent_write(pc->bev, rq->text.data, rq->text.len);
}

/* ------------------------------------------------------------------ */
/* the request's attributes (SMTPD_POLICY_README)                      */

static void build_request(struct smtpd_session *s, struct restrict_run *run, struct policy_client *c, struct buf *b)
{
    const struct smtpd_tx *tx = s->tx;
    const char *where = run->where;
    int in_data = strcmp(where, "DATA") == 0 || strcmp(where, "BDAT") == 0 || strcmp(where, "END-OF-MESSAGE") == 0;
    const char *rcpt = run->rcpt;
    if (rcpt == NULL && in_data && tx && tx->nrcpts == 1)
        rcpt = tx->rcpts[0].address;   /* DATA and END-OF-MESSAGE with one recipient */
    unsigned long long size = 0;
    if (tx && strcmp(where, "END-OF-MESSAGE") == 0 && tx->writer)
        size = queue_writer_content_size(tx->writer) - tx->content_start;
    else if (tx && tx->mail.size > 0)
        size = (unsigned long long)tx->mail.size;
    const char *tls_protocol = "", *tls_cipher = "", *tls_sni = "";
    int tls_bits = 0;
    if (s->tls_active)
        smtpd_tls_facts(s, &tls_protocol, &tls_cipher, &tls_bits, &tls_sni);
    policy_request_attr(b, "request", "smtpd_access_policy");
    policy_request_attr(b, "protocol_state", strcmp(where, "BDAT") == 0 ? "DATA" : where);
    policy_request_attr(b, "protocol_name", s->esmtp ? "ESMTP" : "SMTP");
    policy_request_attr(b, "client_address", s->addr);
    policy_request_attr(b, "client_name", s->name);
    policy_request_attr(b, "client_port", s->port);
    policy_request_attr(b, "reverse_client_name", s->reverse_name);
    policy_request_attr(b, "server_address", s->server_addr);
    policy_request_attr(b, "server_port", s->server_port);
    policy_request_attr(b, "helo_name", s->helo ? s->helo : "");
    policy_request_attr(b, "sender", tx && tx->mail.address ? tx->mail.address : "");
    policy_request_attr(b, "recipient", rcpt ? rcpt : "");
    policy_request_attr_number(b, "recipient_count", in_data && tx ? tx->nrcpts : 0);
    policy_request_attr(b, "queue_id", tx && tx->queue_id[0] ? tx->queue_id : "");
    policy_request_attr(b, "instance", tx && tx->instance ? tx->instance : "");
    policy_request_attr_number(b, "size", size);
    policy_request_attr(b, "etrn_domain", "");
    policy_request_attr(b, "stress", cfg_get(s->set->cfg, "stress"));
    policy_request_attr(b, "sasl_method", s->sasl_method ? s->sasl_method : "");
    policy_request_attr(b, "sasl_username", s->sasl_username ? s->sasl_username : "");
    policy_request_attr(b, "sasl_sender", tx && tx->mail.auth && strcmp(tx->mail.auth, "<>") != 0 ? tx->mail.auth : "");
    /* The client certificate (smtpd_tls_ask_ccert): subject and issuer
     * CN only when it is trusted, xtext-encoded; the fingerprints whenever
     * one was presented (Postfix's ENCODE_CN and IF_ENCRYPTED). */
    const struct smtpd_ccert *cc = &s->ccert;
    petrel_pool *cpool = smtpd_cmd_pool(s);
    policy_request_attr(b, "ccert_subject", cc->verified && cc->subject ? smtp_xtext_encode(cc->subject, cpool) : "");
    policy_request_attr(b, "ccert_issuer", cc->verified && cc->issuer ? smtp_xtext_encode(cc->issuer, cpool) : "");
    policy_request_attr(b, "ccert_fingerprint", cc->present && cc->fingerprint ? cc->fingerprint : "");
    policy_request_attr(b, "ccert_pubkey_fingerprint",
                        cc->present && cc->pubkey_fingerprint ? cc->pubkey_fingerprint : "");
    policy_request_attr(b, "encryption_protocol", tls_protocol);
    policy_request_attr(b, "encryption_cipher", tls_cipher);
    policy_request_attr_number(b, "encryption_keysize", (unsigned long long)(tls_bits > 0 ? tls_bits : 0));
    policy_request_attr(b, "tls_sni", tls_sni);
    policy_request_attr(b, "policy_context", c->policy_context);
    policy_request_attr(b, "compatibility_level", cfg_get(s->set->cfg, "compatibility_level"));
    policy_request_attr(b, "mail_version", cfg_get(s->set->cfg, "mail_version"));
    policy_request_end(b);
}

enum restrict_verdict restrict_run_policy(struct smtpd_session *s, struct restrict_run *run,
                                          const struct restrict_step *step, struct restrict_result *r)
{
    struct policy_request *rq = petrel_pool_zalloc(smtpd_cmd_pool(s), sizeof(*rq));
    const struct restrict_frame *f = restrict_frame(run);
    rq->s = s;
    rq->client = step->policy;
    rq->reply_name = f->reply_name;
    rq->reply_class = f->reply_class;
    build_request(s, run, rq->client, &rq->text);
    restrict_wait(s, request_cancel, rq);
    /* Always answered from the loop (a connect error included), never
     * from inside this call. */
    if (rq->retry_timer == NULL)
        rq->retry_timer = evtimer_new(s->worker->base, retry_now, rq);
    struct timeval now = { 0, 0 };
    evtimer_add(rq->retry_timer, &now);
    (void)r;
    return RV_PENDING;
}
