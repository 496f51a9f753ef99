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
 * Once connected, a peer_socket keeps what the owner's loop is asked to do
 * for the socket: the events to watch and one timer for the longest wait
 * without progress (re-armed for the rest when there was progress since it
 * was armed, so a steady trickle never times out and a stall does). The
 * client calls back through two functions its owner gives (watch, timer),
 * which the clamav and spamassassin modules map onto petrel_watch_fd() and
 * petrel_timer_start() and the test driver onto poll(2).
 *
 * The plugin API has no connect service of its own (include/petrel/
 * plugin.h: fd watches and timers only), so this is the one place the
 * bundled scanners do it.
 */
#ifndef PETREL_MODULES_PEER_CONNECT_H
#define PETREL_MODULES_PEER_CONNECT_H

#include <stddef.h>
#include <stdint.h>
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

/* The owner's side: watch fd for events (0: stop); arm the timer for ms (0: disarm). */
typedef void peer_watch_fn(void *arg, int fd, int events);
typedef void peer_timer_fn(void *arg, unsigned ms);

typedef struct peer_socket {
    int fd;                 /* -1: none */
    int watching;           /* the events the owner watches now */
    int timer_armed;
    unsigned wait_ms;       /* the longest wait without progress in the current step */
    uint64_t progress_ms;   /* the last progress, CLOCK_MONOTONIC */
    peer_watch_fn *watch;   /* either may be NULL */
    peer_timer_fn *timer;
    void *arg;
} peer_socket;

void peer_socket_init(peer_socket *p, peer_watch_fn *watch, peer_timer_fn *timer, void *arg);
/* Asks the owner to watch want (when it changed), and keeps the timer armed
 * for wait_ms while busy, disarmed otherwise. */
void peer_socket_sync(peer_socket *p, int want, int busy);
/* Stops the watch and the timer, closes the socket; fd -1. */
void peer_socket_close(peer_socket *p);
/* Bytes moved: the wait starts again. */
void peer_socket_progress(peer_socket *p);
/* A new step (connecting, then talking): its longest wait is ms from now.
 * An armed timer is brought forward when ms is shorter than the wait it
 * was armed for, so a short timeout after a long connect timeout holds. */
void peer_socket_wait(peer_socket *p, unsigned ms);
/* The timer fired (the caller marked it disarmed): 1 when there was progress
 * within wait_ms, and the timer is armed again for the rest; 0 when the
 * wait is over. */
int peer_socket_rearm(peer_socket *p);

#endif
