/*
 * Connecting to a module's daemon and keeping its socket's watch and timer
 * (see peer_connect.h). The address list is parsed once per configuration;
 * a connect tries the addresses in order, so that a host name with an IPv6
 * and an IPv4 address still reaches a daemon that listens on one of them.
 */
#include "peer_connect.h"

#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <string.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

static int parse_unix(peer_addrs *a, const char *spec, const char *path, char *err, size_t errlen)
{
    struct sockaddr_un sun;
    size_t n = strlen(path);
    if (n == 0 || n >= sizeof sun.sun_path) {
        snprintf(err, errlen, "\"%s\": socket path empty or longer than %zu bytes", spec, sizeof sun.sun_path - 1);
        return -1;
    }
    memset(&sun, 0, sizeof sun);
    sun.sun_family = AF_UNIX;
    memcpy(sun.sun_path, path, n + 1);
    memcpy(&a->addr[0], &sun, sizeof sun);
    a->addrlen[0] = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n + 1);
    a->count = 1;
    return 0;
}

int peer_addrs_parse(peer_addrs *a, const char *spec, const char *inet_prefix, const char *default_port, char *err,
                     size_t errlen)
{
    memset(a, 0, sizeof *a);
    if (strncmp(spec, "unix:", 5) == 0)
        return parse_unix(a, spec, spec + 5, err, errlen);
    if (spec[0] == '/')
        return parse_unix(a, spec, spec, err, errlen);
    if (inet_prefix != NULL && strncmp(spec, inet_prefix, strlen(inet_prefix)) == 0)
        spec += strlen(inet_prefix);
    char host[256], port[32];
    snprintf(port, sizeof port, "%s", default_port);
    const char *colon;
    size_t hn;
    if (spec[0] == '[') {
        const char *close = strchr(spec, ']');
        if (close == NULL || (close[1] != 0 && close[1] != ':')) {
            snprintf(err, errlen, "\"%s\": expected [address]:port", spec);
            return -1;
        }
        hn = (size_t)(close - spec - 1);
        if (hn >= sizeof host) {
            snprintf(err, errlen, "\"%s\": host name too long", spec);
            return -1;
        }
        memcpy(host, spec + 1, hn);
        colon = close[1] == ':' ? close + 1 : NULL;
    } else {
        colon = strrchr(spec, ':');
        if (colon != NULL && strchr(spec, ':') != colon) {
            snprintf(err, errlen, "\"%s\": an IPv6 address goes in brackets", spec);
            return -1;
        }
        hn = colon ? (size_t)(colon - spec) : strlen(spec);
        if (hn >= sizeof host) {
            snprintf(err, errlen, "\"%s\": host name too long", spec);
            return -1;
        }
        memcpy(host, spec, hn);
    }
    host[hn] = 0;
    if (colon != NULL && (colon[1] == 0 || strlen(colon + 1) >= sizeof port)) {
        snprintf(err, errlen, "\"%s\": bad port", spec);
        return -1;
    }
    if (colon != NULL)
        snprintf(port, sizeof port, "%s", colon + 1);
    if (hn == 0) {
        snprintf(err, errlen, "\"%s\": no host", spec);
        return -1;
    }
    struct addrinfo hints, *res = NULL;
    memset(&hints, 0, sizeof hints);
    hints.ai_socktype = SOCK_STREAM;
    int rc = getaddrinfo(host, port, &hints, &res);
    if (rc != 0) {
        snprintf(err, errlen, "\"%s\": %s", spec, gai_strerror(rc));
        return -1;
    }
    for (struct addrinfo *ai = res; ai != NULL && a->count < PEER_ADDRS_MAX; ai = ai->ai_next) {
        if (ai->ai_addrlen > sizeof a->addr[0])
            continue;
        memcpy(&a->addr[a->count], ai->ai_addr, ai->ai_addrlen);
        a->addrlen[a->count++] = (socklen_t)ai->ai_addrlen;
    }
    freeaddrinfo(res);
    if (a->count == 0) {
        snprintf(err, errlen, "\"%s\": no usable address", spec);
        return -1;
    }
    return 0;
}

peer_connect_status peer_connect_start(const peer_addrs *a, size_t *index, int *fd, peer_connect_fail_fn *fail,
                                       void *arg)
{
    *fd = -1;
    for (; *index < a->count; (*index)++) {
        const struct sockaddr *sa = (const struct sockaddr *)&a->addr[*index];
        int s = socket(sa->sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (s >= 0 && (sa->sa_family == AF_INET || sa->sa_family == AF_INET6)) {
            int one = 1;
            (void)setsockopt(s, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        }
        if (s >= 0 && connect(s, sa, a->addrlen[*index]) == 0) {
            *fd = s;
            return PEER_CONNECTED;
        }
        if (s >= 0 && errno == EINPROGRESS) {
            *fd = s;
            return PEER_CONNECTING;
        }
        int e = errno;
        if (s >= 0)
            close(s);
        if (fail)
            fail(arg, e);
    }
    return PEER_UNREACHABLE;
}

int peer_connect_error(int fd)
{
    int soerr = 0;
    socklen_t len = sizeof soerr;
    if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &len) < 0)
        soerr = errno;
    return soerr;
}

/* ------------------------------------------------------------------ */
/* the socket's watch and timer                                        */

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

void peer_socket_init(peer_socket *p, peer_watch_fn *watch, peer_timer_fn *timer, void *arg)
{
    memset(p, 0, sizeof *p);
    p->fd = -1;
    p->watch = watch;
    p->timer = timer;
    p->arg = arg;
}

void peer_socket_sync(peer_socket *p, int want, int busy)
{
    if (want != p->watching) {
        if (p->watch)
            p->watch(p->arg, p->fd, want);
        p->watching = want;
    }
    if (busy && !p->timer_armed) {
        p->timer_armed = 1;
        if (p->timer)
            p->timer(p->arg, p->wait_ms);
    } else if (!busy && p->timer_armed) {
        p->timer_armed = 0;
        if (p->timer)
            p->timer(p->arg, 0);
    }
}

void peer_socket_close(peer_socket *p)
{
    if (p->fd < 0)
        return;
    if (p->watching && p->watch)
        p->watch(p->arg, p->fd, 0);
    p->watching = 0;
    if (p->timer_armed && p->timer)
        p->timer(p->arg, 0);
    p->timer_armed = 0;
    close(p->fd);
    p->fd = -1;
}

void peer_socket_progress(peer_socket *p)
{
    p->progress_ms = now_ms();
}

void peer_socket_wait(peer_socket *p, unsigned ms)
{
    int sooner = ms < p->wait_ms;
    p->wait_ms = ms;
    p->progress_ms = now_ms();
    if (p->timer_armed && sooner && p->timer)
        p->timer(p->arg, ms);
}

int peer_socket_rearm(peer_socket *p)
{
    uint64_t elapsed = now_ms() - p->progress_ms;
    if (elapsed >= p->wait_ms)
        return 0;
    p->timer_armed = 1;
    if (p->timer)
        p->timer(p->arg, (unsigned)(p->wait_ms - elapsed));
    return 1;
}
