/*
 * The metrics endpoint (metrics_listen): libevent's evhttp on the master's
 * loop, serving GET /metrics (the Prometheus text format), /healthz (200,
 * or 503 naming every reason) and /status (a small self-refreshing HTML
 * page). Nothing here can change anything: the only methods are GET and
 * HEAD, and what is served comes from the master's callbacks.
 *
 * Decisions:
 *  - evhttp, not a parser of our own: it is already linked (libevent), is
 *    non-blocking on the loop the master runs anyway, and bounds what a
 *    client may send (headers at most 8 KiB, no body, 10 s timeouts).
 *  - In the master, not a role of its own: the figures it serves are the
 *    master's (the shared region it mapped, its process table, the queue
 *    directory), so nothing has to be forwarded. The endpoint is loopback
 *    only unless metrics_allow says otherwise, and a client outside
 *    metrics_allow gets 403 before its request is looked at.
 *  - A changed metrics_listen is bound on reload before the new
 *    configuration is taken; when it cannot be bound the reload is refused
 *    and the old endpoint stays.
 */
#include "config.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>

#include "lib/buf.h"
#include "lib/log.h"
#include "lib/xalloc.h"
#include "master/master_int.h"
#include "tables/cidr.h"

#define HTTP_DEFAULT_ALLOW "127.0.0.0/8 [::1]/128"

struct master_http {
    struct evhttp *http;
    char listen[300];                    /* metrics_listen as configured */
    struct cidr_list *allow;
    struct master_http_source source;
    struct sockaddr_storage bound;       /* the listening socket's address, to know its sockets in a child */
    socklen_t bound_len;
};

/* "host:port", "[v6]:port"; 0, or -1 with a message in error. */
static int split_listen(const char *spec, char *host, size_t hsize, unsigned short *port, char *error, size_t esize)
{
    const char *colon;
    if (spec[0] == '[') {
        const char *close = strchr(spec, ']');
        if (close == NULL || close[1] != ':') {
            snprintf(error, esize, "metrics_listen: \"%s\": expected [address]:port", spec);
            return -1;
        }
        snprintf(host, hsize, "%.*s", (int)(close - spec - 1), spec + 1);
        colon = close + 1;
    } else {
        colon = strrchr(spec, ':');
        if (colon == NULL || colon == spec || memchr(spec, ':', (size_t)(colon - spec)) != NULL) {
            snprintf(error, esize, "metrics_listen: \"%s\": expected host:port (an IPv6 address in brackets)", spec);
            return -1;
        }
        snprintf(host, hsize, "%.*s", (int)(colon - spec), spec);
    }
    char *end;
    long p = strtol(colon + 1, &end, 10);
    if (colon[1] == '\0' || *end != '\0' || p < 1 || p > 65535) {
        snprintf(error, esize, "metrics_listen: \"%s\": the port must be a number from 1 to 65535", spec);
        return -1;
    }
    *port = (unsigned short)p;
    return 0;
}

static struct cidr_list *parse_allow(const struct cfg *cfg, char *error, size_t esize)
{
    struct cidr_list *allow = cidr_list_new();
    char *why = NULL;
    if (cidr_list_add_all(allow, cfg_get(cfg, "metrics_allow"), &why) != 0) {
        snprintf(error, esize, "metrics_allow: %s", why ? why : "bad network");
        free(why);
        cidr_list_free(allow);
        return NULL;
    }
    return allow;
}

int master_http_check(const struct cfg *cfg, char *error, size_t esize)
{
    const char *spec = cfg_get(cfg, "metrics_listen");
    char host[300];
    unsigned short port;
    if (spec[0] != '\0' && split_listen(spec, host, sizeof(host), &port, error, esize) != 0)
        return -1;
    struct cidr_list *allow = parse_allow(cfg, error, esize);
    if (allow == NULL)
        return -1;
    cidr_list_free(allow);
    return 0;
}

static int peer_allowed(struct master_http *h, struct evhttp_request *req)
{
    struct evhttp_connection *conn = evhttp_request_get_connection(req);
    const struct sockaddr *sa = conn ? evhttp_connection_get_addr(conn) : NULL;
    char text[INET6_ADDRSTRLEN] = "";
    if (sa && sa->sa_family == AF_INET)
        inet_ntop(AF_INET, &((const struct sockaddr_in *)sa)->sin_addr, text, sizeof(text));
    else if (sa && sa->sa_family == AF_INET6)
        inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)sa)->sin6_addr, text, sizeof(text));
    return text[0] != '\0' && cidr_list_match(h->allow, text);
}

static void reply(struct evhttp_request *req, int code, const char *reason, const char *type, const struct buf *body)
{
    struct evkeyvalq *headers = evhttp_request_get_output_headers(req);
    evhttp_add_header(headers, "Content-Type", type);
    evhttp_add_header(headers, "Cache-Control", "no-store");
    struct evbuffer *out = evbuffer_new();
    if (body && body->len)
        evbuffer_add(out, body->data, body->len);
    evhttp_send_reply(req, code, reason, out);
    evbuffer_free(out);
}

static void reply_text(struct evhttp_request *req, int code, const char *reason, const char *text)
{
    struct buf b = BUF_INIT;
    buf_puts(&b, text);
    reply(req, code, reason, "text/plain; charset=utf-8", &b);
    buf_free(&b);
}

/* The client lists OpenMetrics in Accept (Prometheus does, ahead of the
 * text format) with a weight above 0. */
static int wants_openmetrics(struct evhttp_request *req)
{
    const char *accept = evhttp_find_header(evhttp_request_get_input_headers(req), "Accept");
    if (accept == NULL)
        return 0;
    for (const char *p = accept; (p = strstr(p, "application/openmetrics-text")) != NULL; p++) {
        /* this media range's parameters, up to the next range */
        const char *end = strchr(p, ',');
        size_t n = end ? (size_t)(end - p) : strlen(p);
        char range[256];
        snprintf(range, sizeof(range), "%.*s", (int)(n < sizeof(range) ? n : sizeof(range) - 1), p);
        double weight = 1;
        for (char *param = strchr(range, ';'); param != NULL; param = strchr(param + 1, ';')) {
            const char *name = param + 1;
            while (*name == ' ' || *name == '\t')
                name++;
            if ((name[0] == 'q' || name[0] == 'Q') && name[1] == '=')
                weight = strtod(name + 2, NULL);
        }
        if (weight > 0)
            return 1;
    }
    return 0;
}

static void on_request(struct evhttp_request *req, void *arg)
{
    struct master_http *h = arg;
    if (!peer_allowed(h, req)) {
        reply_text(req, 403, "Forbidden", "403 forbidden: this client is not in metrics_allow\n");
        return;
    }
    const struct evhttp_uri *uri = evhttp_request_get_evhttp_uri(req);
    const char *path = uri ? evhttp_uri_get_path(uri) : NULL;
    if (path == NULL)
        path = "";
    struct buf body = BUF_INIT;
    if (strcmp(path, "/metrics") == 0) {
        int openmetrics = wants_openmetrics(req);
        h->source.metrics(h->source.arg, &body, openmetrics);
        reply(req, 200, "OK",
              openmetrics ? "application/openmetrics-text; version=1.0.0; charset=utf-8"
                          : "text/plain; version=0.0.4; charset=utf-8", &body);
    } else if (strcmp(path, "/healthz") == 0) {
        int healthy = h->source.health(h->source.arg, &body) == 0;
        if (healthy)
            buf_puts(&body, "ok\n");
        reply(req, healthy ? 200 : 503, healthy ? "OK" : "Service Unavailable", "text/plain; charset=utf-8", &body);
    } else if (strcmp(path, "/status") == 0 && h->source.status) {
        h->source.status(h->source.arg, &body);
        /* Self-contained: nothing is loaded from anywhere, no script runs
           (the page refreshes itself with a meta tag). */
        evhttp_add_header(evhttp_request_get_output_headers(req), "Content-Security-Policy",
                          "default-src 'none'; style-src 'unsafe-inline'");
        reply(req, 200, "OK", "text/html; charset=utf-8", &body);
    } else if (strcmp(path, "/") == 0) {
        buf_puts(&body, "petrel: /metrics /healthz /status\n");
        reply(req, 200, "OK", "text/plain; charset=utf-8", &body);
    } else {
        reply_text(req, 404, "Not Found", "404 not found: try /metrics, /healthz or /status\n");
    }
    buf_free(&body);
}

static struct master_http *http_start(struct event_base *base, const char *spec, struct cidr_list *allow,
                                      const struct master_http_source *source, char *error, size_t esize)
{
    char host[300];
    unsigned short port;
    if (split_listen(spec, host, sizeof(host), &port, error, esize) != 0)
        return NULL;
    struct evhttp *http = evhttp_new(base);
    if (http == NULL) {
        snprintf(error, esize, "metrics_listen: cannot create the HTTP server");
        return NULL;
    }
    evhttp_set_allowed_methods(http, EVHTTP_REQ_GET | EVHTTP_REQ_HEAD);
    evhttp_set_max_headers_size(http, 8192);
    evhttp_set_max_body_size(http, 0);
    evhttp_set_timeout(http, 10);
    struct evhttp_bound_socket *handle = evhttp_bind_socket_with_handle(http, host, port);
    if (handle == NULL) {
        snprintf(error, esize, "metrics_listen: cannot listen on %s: %s", spec,
                 evutil_socket_error_to_string(EVUTIL_SOCKET_ERROR()));
        evhttp_free(http);
        return NULL;
    }
    struct master_http *h = xcalloc(1, sizeof(*h));
    h->http = http;
    snprintf(h->listen, sizeof(h->listen), "%s", spec);
    h->allow = allow;
    h->source = *source;
    h->bound_len = sizeof(h->bound);
    if (getsockname(evhttp_bound_socket_get_fd(handle), (struct sockaddr *)&h->bound, &h->bound_len) != 0)
        h->bound_len = 0;
    evhttp_set_gencb(http, on_request, h);
    msg_info("metrics: serving /metrics, /healthz and /status on %s", spec);
    return h;
}

void master_http_stop(struct master_http *h)
{
    if (h == NULL)
        return;
    evhttp_free(h->http);
    cidr_list_free(h->allow);
    free(h);
}

/* A socket of the endpoint's: bound to its address and port (the listening
 * socket, and every connection it accepted). */
static int endpoint_socket(int fd, void *arg)
{
    const struct master_http *h = arg;
    struct sockaddr_storage local;
    socklen_t len = sizeof(local);
    if (h->bound_len == 0 || getsockname(fd, (struct sockaddr *)&local, &len) != 0 ||
        local.ss_family != h->bound.ss_family)
        return 0;
    if (local.ss_family == AF_INET) {
        const struct sockaddr_in *a = (const struct sockaddr_in *)&local, *b = (const struct sockaddr_in *)&h->bound;
        return a->sin_port == b->sin_port &&
               (b->sin_addr.s_addr == htonl(INADDR_ANY) || a->sin_addr.s_addr == b->sin_addr.s_addr);
    }
    if (local.ss_family == AF_INET6) {
        const struct sockaddr_in6 *a = (const struct sockaddr_in6 *)&local, *b = (const struct sockaddr_in6 *)&h->bound;
        return a->sin6_port == b->sin6_port &&
               (IN6_IS_ADDR_UNSPECIFIED(&b->sin6_addr) || memcmp(&a->sin6_addr, &b->sin6_addr, sizeof(a->sin6_addr)) == 0);
    }
    return 0;
}

/* evhttp_free() here would shut the master's connections down: libevent
 * calls shutdown(fd, SHUT_WR) on each connection it frees, and a forked
 * child shares the master's sockets, so a scrape in progress while the
 * master forked (a reload, a worker's restart) ended without a reply. The
 * child closes its copies of the endpoint's descriptors instead, and leaves
 * libevent's objects alone (its loop is freed next, they are never used). */
void master_http_close_in_child(struct master_http *h)
{
    if (h == NULL)
        return;
    master_close_fds_matching(endpoint_socket, h);
}

int master_http_update(struct master_http **current, struct event_base *base, const struct cfg *cfg,
                       const struct master_http_source *source, char *error, size_t esize)
{
    const char *spec = cfg_get(cfg, "metrics_listen");
    struct cidr_list *allow = parse_allow(cfg, error, esize);
    if (allow == NULL)
        return -1;
    struct master_http *h = *current;
    if (h && strcmp(h->listen, spec) == 0) {
        cidr_list_free(h->allow);   /* the same address: only who may ask changes */
        h->allow = allow;
        h->source = *source;
        return 0;
    }
    if (spec[0] == '\0') {
        cidr_list_free(allow);
        master_http_stop(h);
        *current = NULL;
        return 0;
    }
    /* A new address: bound before the old one goes, so a failure changes nothing. */
    struct master_http *fresh = http_start(base, spec, allow, source, error, esize);
    if (fresh == NULL) {
        cidr_list_free(allow);
        return -1;
    }
    master_http_stop(h);
    *current = fresh;
    return 0;
}
