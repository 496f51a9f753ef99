/*
 * Milter addresses and non-blocking connects (see milter_endpoint.h).
 */
#include "milter_endpoint.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <string.h>
#include <sys/un.h>
#include <unistd.h>

static int unix_endpoint(const char *path, const char *base, milter_endpoint *ep, char *err, size_t errlen)
{
    struct sockaddr_un sun;
    char full[sizeof sun.sun_path + 1];
    int n;
    if (*path == 0) {
        snprintf(err, errlen, "empty socket path");
        return -1;
    }
    if (path[0] != '/' && base != NULL && *base)
        n = snprintf(full, sizeof full, "%s/%s", base, path);
    else
        n = snprintf(full, sizeof full, "%s", path);
    if (n < 0 || (size_t)n >= sizeof sun.sun_path) {
        snprintf(err, errlen, "socket path is longer than %zu bytes", sizeof sun.sun_path - 1);
        return -1;
    }
    memset(&sun, 0, sizeof sun);
    sun.sun_family = AF_UNIX;
    memcpy(sun.sun_path, full, (size_t)n + 1);
    memcpy(&ep->addr[0], &sun, sizeof sun);
    ep->addrlen[0] = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + (size_t)n + 1);
    ep->count = 1;
    return 0;
}

int milter_endpoint_parse(const char *spec, const char *unix_base, milter_endpoint *ep, char *err,
                          size_t errlen)
{
    memset(ep, 0, sizeof *ep);
    if (spec == NULL || strlen(spec) >= sizeof ep->spec) {
        snprintf(err, errlen, "milter address missing or too long");
        return -1;
    }
    snprintf(ep->spec, sizeof ep->spec, "%s", spec);
    const char *colon = strchr(spec, ':');
    if (colon == NULL || colon == spec || colon[1] == 0) {
        snprintf(err, errlen, "\"%s\": a milter address is transport:endpoint (inet:host:port or "
                 "unix:pathname)", spec);
        return -1;
    }
    size_t tlen = (size_t)(colon - spec);
    const char *rest = colon + 1;
    if ((tlen == 4 && strncmp(spec, "unix", 4) == 0) || (tlen == 5 && strncmp(spec, "local", 5) == 0))
        return unix_endpoint(rest, unix_base, ep, err, errlen);
    int family;
    if (tlen == 4 && strncmp(spec, "inet", 4) == 0)
        family = AF_UNSPEC;
    else if (tlen == 5 && strncmp(spec, "inet6", 5) == 0)
        family = AF_INET6;
    else {
        snprintf(err, errlen, "\"%s\": unknown transport \"%.*s\" (inet, inet6 or unix)", spec,
                 (int)tlen, spec);
        return -1;
    }
    /* host:port, [v6]:port */
    char host[256], port[64];
    const char *hp = rest, *pp;
    size_t hn;
    if (*hp == '[') {
        const char *close = strchr(hp, ']');
        if (close == NULL || close[1] != ':') {
            snprintf(err, errlen, "\"%s\": expected [address]:port", spec);
            return -1;
        }
        hp++;
        hn = (size_t)(close - hp);
        pp = close + 2;
    } else {
        const char *last = strrchr(hp, ':');
        if (last == NULL || strchr(hp, ':') != last) {
            snprintf(err, errlen, "\"%s\": expected host:port (an IPv6 address goes in brackets)", spec);
            return -1;
        }
        hn = (size_t)(last - hp);
        pp = last + 1;
    }
    if (hn == 0 || hn >= sizeof host || *pp == 0 || strlen(pp) >= sizeof port) {
        snprintf(err, errlen, "\"%s\": expected host:port", spec);
        return -1;
    }
    memcpy(host, hp, hn);
    host[hn] = 0;
    snprintf(port, sizeof port, "%s", pp);

    struct addrinfo hints, *res = NULL;
    memset(&hints, 0, sizeof hints);
    hints.ai_family = family;
    hints.ai_socktype = SOCK_STREAM;
    int rc = getaddrinfo(host, port, &hints, &res);
    if (rc != 0) {
        snprintf(err, errlen, "\"%s\": %s", spec, gai_strerror(rc));
        return -1;
    }
    for (struct addrinfo *ai = res; ai != NULL && ep->count < MILTER_ENDPOINT_ADDRS; ai = ai->ai_next) {
        if (ai->ai_addrlen > sizeof ep->addr[0])
            continue;
        memcpy(&ep->addr[ep->count], ai->ai_addr, ai->ai_addrlen);
        ep->addrlen[ep->count] = (socklen_t)ai->ai_addrlen;
        ep->count++;
    }
    freeaddrinfo(res);
    if (ep->count == 0) {
        snprintf(err, errlen, "\"%s\": no usable address", spec);
        return -1;
    }
    return 0;
}

int milter_endpoint_is_tcp(const milter_endpoint *ep, size_t i)
{
    return i < ep->count && (ep->addr[i].ss_family == AF_INET || ep->addr[i].ss_family == AF_INET6);
}

int milter_endpoint_connect(const milter_endpoint *ep, size_t i, int *in_progress)
{
    *in_progress = 0;
    if (i >= ep->count) {
        errno = EINVAL;
        return -1;
    }
    const struct sockaddr *sa = (const struct sockaddr *)&ep->addr[i];
    int fd = socket(sa->sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    if (sa->sa_family == AF_INET || sa->sa_family == AF_INET6) {
        /* Small request/reply packets: Nagle would hold each one for an ACK. */
        int one = 1;
        (void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    }
    if (connect(fd, sa, ep->addrlen[i]) == 0)
        return fd;
    if (errno == EINPROGRESS) {
        *in_progress = 1;
        return fd;
    }
    int saved = errno;
    close(fd);
    errno = saved;
    return -1;
}

int milter_endpoint_connected(int fd)
{
    int soerr = 0;
    socklen_t len = sizeof soerr;
    if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &len) < 0)
        return -1;
    if (soerr != 0) {
        errno = soerr;
        return -1;
    }
    return 0;
}

void milter_endpoint_describe(const milter_endpoint *ep, size_t i, char *out, size_t outlen)
{
    if (i >= ep->count) {
        snprintf(out, outlen, "%s", ep->spec);
        return;
    }
    const struct sockaddr *sa = (const struct sockaddr *)&ep->addr[i];
    char a[INET6_ADDRSTRLEN];
    if (sa->sa_family == AF_INET) {
        const struct sockaddr_in *in = (const struct sockaddr_in *)sa;
        inet_ntop(AF_INET, &in->sin_addr, a, sizeof a);
        snprintf(out, outlen, "%s:%u", a, (unsigned)ntohs(in->sin_port));
    } else if (sa->sa_family == AF_INET6) {
        const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)sa;
        inet_ntop(AF_INET6, &in6->sin6_addr, a, sizeof a);
        snprintf(out, outlen, "[%s]:%u", a, (unsigned)ntohs(in6->sin6_port));
    } else {
        const struct sockaddr_un *un = (const struct sockaddr_un *)sa;
        snprintf(out, outlen, "%s", un->sun_path);
    }
}
