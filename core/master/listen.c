/*
 * The master's listeners: every inet smtpd and postscreen service of master.cf,
 * bound once by the master (as root, before the roles drop privileges) and
 * inherited by the smtpd workers. On reload the sockets of addresses that
 * stay are taken over from the running generation, so a reload never
 * closes a listening socket that is still wanted; new ones are bound,
 * dropped ones closed when the old generation goes.
 */
#include "config.h"

#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "config/cfg.h"
#include "lib/log.h"
#include "lib/xalloc.h"
#include "master/master_int.h"

static const char *service_port(const char *name)
{
    static const struct { const char *name, *port; } known[] = {
        { "smtp", "25" }, { "submission", "587" }, { "smtps", "465" }, { "submissions", "465" },
        { "lmtp", "24" },
    };
    for (size_t i = 0; i < sizeof(known) / sizeof(known[0]); i++)
        if (strcmp(known[i].name, name) == 0)
            return known[i].port;
    return name;
}

/* Splits "host:port", "[v6]:port", "port" or "service" into host and port. */
static int split_endpoint(const char *name, char *host, size_t hsize, char *port, size_t psize)
{
    const char *colon = strrchr(name, ':');
    host[0] = '\0';
    if (name[0] == '[') {
        const char *close = strchr(name, ']');
        if (close == NULL || close[1] != ':')
            return -1;
        snprintf(host, hsize, "%.*s", (int)(close - name - 1), name + 1);
        snprintf(port, psize, "%s", service_port(close + 2));
        return 0;
    }
    if (colon && strchr(name, ':') == colon) {
        snprintf(host, hsize, "%.*s", (int)(colon - name), name);
        snprintf(port, psize, "%s", service_port(colon + 1));
        return 0;
    }
    snprintf(port, psize, "%s", service_port(name));
    return 0;
}

static int bind_one(const char *host, const char *port, int family, char **error)
{
    struct addrinfo hints, *res = NULL;
    memset(&hints, 0, sizeof(hints));
    hints.ai_family = family;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
    int rc = getaddrinfo(*host ? host : NULL, port, &hints, &res);
    if (rc != 0) {
        char msg[512];
        snprintf(msg, sizeof(msg), "cannot resolve listen address %s port %s: %s", *host ? host : "*", port,
                 gai_strerror(rc));
        *error = xstrdup(msg);
        return -1;
    }
    int fd = socket(res->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        *error = xstrdup(strerror(errno));
        freeaddrinfo(res);
        return -1;
    }
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (res->ai_family == AF_INET6)
        setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one));
    /* SMTP replies go out whole: no Nagle delay. An accepted socket
     * inherits this from its listener (Linux and the BSDs clone the
     * listener's options), which spares smtpd a setsockopt per connection;
     * smtpd checks the first connection of each listener (connect.c). */
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    if (bind(fd, res->ai_addr, res->ai_addrlen) != 0 || listen(fd, LISTEN_BACKLOG) != 0) {
        char msg[512];
        snprintf(msg, sizeof(msg), "bind %s port %s: %s", *host ? host : "*", port, strerror(errno));
        *error = xstrdup(msg);
        close(fd);
        freeaddrinfo(res);
        return -1;
    }
    freeaddrinfo(res);
    return fd;
}

static struct bound_listener *find_listener(struct generation *g, const char *key)
{
    for (int i = 0; g && i < g->nlisteners; i++)
        if (strcmp(g->listeners[i].key, key) == 0)
            return &g->listeners[i];
    return NULL;
}

/* Binds every smtpd inet listener of gen; reuses old's sockets for the same
 * address. On failure closes what it bound itself and returns -1. */
int master_bind_listeners(struct generation *gen, struct generation *old)
{
    const struct cfg *cfg = gen->cfg;
    const char *const *interfaces = cfg_list(cfg, "inet_interfaces");
    const char *protocols = cfg_get(cfg, "inet_protocols");
    int want4 = strstr(protocols, "all") || strstr(protocols, "ipv4");
    int want6 = strstr(protocols, "all") || strstr(protocols, "ipv6");
    for (size_t i = 0; i < cfg_service_count(cfg); i++) {
        const struct master_service *svc = cfg_service(cfg, i);
        if (svc->role != ROLE_SMTPD && svc->role != ROLE_POSTSCREEN)
            continue;
        if (svc->role == ROLE_SMTPD && svc->type == SVC_PASS)
            continue;   /* behind postscreen: its clients come through postscreen's socket */
        if (svc->type != SVC_INET) {
            msg_info("%s, line %d: service %s: only inet smtpd listeners are supported; ignored",
                     svc->file, svc->line, svc->name);
            continue;
        }
        char host[256], port[64];
        if (split_endpoint(svc->name, host, sizeof(host), port, sizeof(port)) != 0) {
            msg_error("%s, line %d: service %s: bad listen address", svc->file, svc->line, svc->name);
            goto failed;
        }
        /* A bare port listens on inet_interfaces ("all" = every address). */
        const char *single[2] = { host, NULL };
        const char *const *hosts = *host ? single : interfaces;
        for (; *hosts; hosts++) {
            const char *h = *hosts;
            int families[2], nf = 0;
            if (strcasecmp(h, "all") == 0) {
                if (want6)
                    families[nf++] = AF_INET6;
                if (want4)
                    families[nf++] = AF_INET;
                h = "";
            } else if (strcasecmp(h, "loopback-only") == 0 || strcasecmp(h, "localhost") == 0) {
                h = "127.0.0.1";
                families[nf++] = AF_INET;
            } else {
                families[nf++] = AF_UNSPEC;
            }
            for (int f = 0; f < nf; f++) {
                if (gen->nlisteners == MAX_LISTENERS) {
                    msg_error("too many listeners (at most %d)", MAX_LISTENERS);
                    goto failed;
                }
                struct bound_listener *l = &gen->listeners[gen->nlisteners];
                snprintf(l->key, sizeof(l->key), "inet:%d:%s:%s", families[f], h, port);
                l->service = svc;
                struct bound_listener *prev = find_listener(old, l->key);
                if (prev) {
                    l->fd = dup(prev->fd);
                } else {
                    char *error = NULL;
                    l->fd = bind_one(h, port, families[f], &error);
                    if (l->fd < 0) {
                        msg_error("%s, line %d: service %s: %s", svc->file, svc->line, svc->name, error);
                        free(error);
                        goto failed;
                    }
                }
                gen->fds[gen->nlisteners].fd = l->fd;
                gen->fds[gen->nlisteners].service = svc;
                gen->nlisteners++;
            }
        }
    }
    return 0;

failed:
    for (int i = 0; i < gen->nlisteners; i++)
        close(gen->listeners[i].fd);
    gen->nlisteners = 0;
    return -1;
}
