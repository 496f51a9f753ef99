/*
 * Connecting to a daemon a bundled module talks to (clamd, spamd), without
 * blocking the loop: the address a parameter gives, parsed once at
 * configuration time into a short list of socket addresses, then a
 * non-blocking connect that tries them in order.
 *
 * Addresses: "host:port", "[ipv6]:port", "host" (the default port),
 * "/path" or "unix:/path", and "PREFIX:host:port" for the one prefix the
 * caller names (clamav-milter's "tcp:", the milter spelling "inet:").
 * Host names are resolved by getaddrinfo, which may block: configuration
 * time only, never on the loop. At most PEER_ADDRS_MAX addresses are kept.
 *
 * The plugin API has no connect service of its own (include/petrel/
 * plugin.h: fd watches and timers only), so this is the one place the
 * bundled scanners do it; the socket and its readiness are the caller's.
 */
#ifndef PETREL_MODULES_PEER_CONNECT_H
#define PETREL_MODULES_PEER_CONNECT_H

#include <stddef.h>
#include <sys/socket.h>

#define PEER_ADDRS_MAX 8

typedef struct peer_addrs {
    size_t count;
    struct sockaddr_storage addr[PEER_ADDRS_MAX];
    socklen_t addrlen[PEER_ADDRS_MAX];
} peer_addrs;

/* Parses spec into *a (zeroed first). inet_prefix ("tcp:") may be NULL;
 * default_port is used when spec names none. 0, or -1 with a message
 * naming spec in err. */
int peer_addrs_parse(peer_addrs *a, const char *spec, const char *inet_prefix, const char *default_port, char *err,
                     size_t errlen);

typedef enum peer_connect_status {
    PEER_CONNECTED,    /* *fd is connected */
    PEER_CONNECTING,   /* *fd is connecting: wait until it is writable, then peer_connect_error() */
    PEER_UNREACHABLE,  /* no address left; *fd is -1 */
} peer_connect_status;

/* Called for each address that refused at once (err: the errno value). */
typedef void peer_connect_fail_fn(void *arg, int err);

/* Opens a non-blocking, close-on-exec stream socket (TCP_NODELAY on TCP) to
 * the addresses from a->addr[*index] on, until one connects or is in
 * progress; *index is left at that address. Sockets of addresses that fail
 * are closed, each failure told to fail (may be NULL). */
peer_connect_status peer_connect_start(const peer_addrs *a, size_t *index, int *fd, peer_connect_fail_fn *fail,
                                       void *arg);

/* After a connecting socket became writable: 0 when it connected, else the
 * errno value of the failure (the caller closes it and tries *index + 1). */
int peer_connect_error(int fd);

#endif
