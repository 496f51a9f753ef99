/*
 * Where a milter listens: Postfix's "inet:host:port", "unix:pathname"
 * (also "local:pathname"), and "inet6:host:port" for an IPv6-only lookup;
 * IPv6 addresses go in brackets ("inet:[::1]:8891").
 *
 * milter_endpoint_parse resolves host names with getaddrinfo, which may
 * block: it belongs to configuration time (module init, reload), never to
 * the event loop. Connecting is non-blocking (milter_endpoint_connect).
 */
#ifndef PETREL_MILTER_ENDPOINT_H
#define PETREL_MILTER_ENDPOINT_H

#include <stddef.h>
#include <sys/socket.h>

#define MILTER_ENDPOINT_ADDRS 8

typedef struct milter_endpoint {
    char spec[512];                 /* as configured, for logs */
    size_t count;                   /* addresses to try, in order */
    struct sockaddr_storage addr[MILTER_ENDPOINT_ADDRS];
    socklen_t addrlen[MILTER_ENDPOINT_ADDRS];
} milter_endpoint;

/* unix_base: the directory a relative unix: path is relative to (Postfix:
 * the queue directory), or NULL to take it as given. Returns 0, or -1 with
 * err naming what is wrong. */
int milter_endpoint_parse(const char *spec, const char *unix_base, milter_endpoint *ep, char *err,
                          size_t errlen);

/* Starts a non-blocking connect to address i. Returns the socket (close-on-
 * exec, non-blocking, TCP_NODELAY) with *in_progress set when the connect
 * completes later (wait until writable, then milter_endpoint_connected), or
 * -1 with errno. */
int milter_endpoint_connect(const milter_endpoint *ep, size_t i, int *in_progress);
/* Whether address i is a TCP one (inet: or inet6:), not a UNIX socket. */
int milter_endpoint_is_tcp(const milter_endpoint *ep, size_t i);
/* After writability: 0, or -1 with errno set to the connect's error. */
int milter_endpoint_connected(int fd);
/* "127.0.0.1:8891" or the path, for logs. */
void milter_endpoint_describe(const milter_endpoint *ep, size_t i, char *out, size_t outlen);

#endif
