/*
 * Reading a HAProxy PROXY header from a new connection, on the loop
 * (postscreen_upstream_proxy_protocol and smtpd_upstream_proxy_protocol =
 * haproxy). core/mail/haproxy.c parses; this file only reads.
 *
 * The header must be taken off the socket and not one byte more: what
 * follows belongs to the SMTP session (and, behind postscreen, to an smtpd
 * session that gets the raw socket). So each time the socket is readable we
 * peek at what is there, let the parser judge header-so-far plus peeked,
 * and then receive exactly the bytes that are header: all of them while it
 * is incomplete (everything before the end of a header is header), up to
 * its end once complete. Consuming as we go also keeps a level-triggered
 * read event from firing again for bytes already judged. The whole header
 * must arrive within the timeout; it can never exceed HAPROXY_HEADER_MAX.
 */
#include "config.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include <event2/event.h>

#include "lib/escape.h"
#include "lib/xalloc.h"
#include "smtpd/haproxy_read.h"

struct smtpd_proxy_read {
    struct event *ev;                  /* readable */
    struct event *timer;               /* the whole header's deadline (not re-armed by each read) */
    int fd;
    int families;
    unsigned char have[HAPROXY_HEADER_MAX];
    size_t nhave;
    const char *timeout_text;
    smtpd_haproxy_done_fn *done;
    void *arg;
};

static void finish(struct smtpd_proxy_read *r, int status, const struct haproxy_endpoints *ep, const char *why)
{
    smtpd_haproxy_done_fn *done = r->done;
    void *arg = r->arg;
    event_free(r->ev);
    event_free(r->timer);
    free(r);
    done(arg, status, ep, why);
}

static void on_timeout(evutil_socket_t fd, short what, void *arg)
{
    struct smtpd_proxy_read *r = arg;
    finish(r, -1, NULL, r->timeout_text);
}

static void on_readable(evutil_socket_t fd, short what, void *arg)
{
    struct smtpd_proxy_read *r = arg;
    struct haproxy_endpoints ep;
    memset(&ep, 0, sizeof(ep));
    unsigned char combined[HAPROXY_HEADER_MAX];
    memcpy(combined, r->have, r->nhave);
    ssize_t n = recv(r->fd, combined + r->nhave, sizeof(combined) - r->nhave, MSG_PEEK);
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
        return;
    if (n <= 0) {
        finish(r, -1, NULL, "EOF");
        return;
    }
    size_t total = r->nhave + (size_t)n;
    const char *error = NULL;
    ssize_t header = haproxy_parse(combined, total, r->families, &ep, &error);
    if (header < 0) {
        char escaped[HAPROXY_HEADER_MAX * 4 + 1];
        char why[sizeof(escaped) + 128];
        text_escape(combined, total, escaped, sizeof(escaped));
        snprintf(why, sizeof(why), "%s: %s", error, escaped);
        finish(r, -1, NULL, why);
        return;
    }
    /* The bytes that are header: all of them until it is complete. */
    size_t take = header > 0 ? (size_t)header - r->nhave : (size_t)n;
    ssize_t got = recv(r->fd, r->have + r->nhave, take, 0);
    if (got != (ssize_t)take) {
        char why[128];
        snprintf(why, sizeof(why), "%s", got < 0 ? strerror(errno) : "short read");
        finish(r, -1, NULL, why);
        return;
    }
    r->nhave += take;
    if (header > 0)
        finish(r, 0, &ep, NULL);
}

struct smtpd_proxy_read *smtpd_proxy_read_start(struct event_base *base, int fd, int families,
                                                const struct timeval *timeout, const char *timeout_text,
                                                smtpd_haproxy_done_fn *done, void *arg)
{
    struct smtpd_proxy_read *r = xcalloc(1, sizeof(*r));
    r->fd = fd;
    r->families = families;
    r->timeout_text = timeout_text;
    r->done = done;
    r->arg = arg;
    r->ev = event_new(base, fd, EV_READ | EV_PERSIST, on_readable, r);
    r->timer = evtimer_new(base, on_timeout, r);
    if (r->ev == NULL || r->timer == NULL || event_add(r->ev, NULL) != 0 || evtimer_add(r->timer, timeout) != 0) {
        if (r->ev)
            event_free(r->ev);
        if (r->timer)
            event_free(r->timer);
        free(r);
        return NULL;
    }
    return r;
}

void smtpd_proxy_read_cancel(struct smtpd_proxy_read *r)
{
    if (r == NULL)
        return;
    event_free(r->ev);
    event_free(r->timer);
    free(r);
}

int smtpd_proxy_families(const char *inet_protocols)
{
    int f = 0;
    if (inet_protocols == NULL || strstr(inet_protocols, "all"))
        return HAPROXY_FAMILY_IPV4 | HAPROXY_FAMILY_IPV6;
    if (strstr(inet_protocols, "ipv4"))
        f |= HAPROXY_FAMILY_IPV4;
    if (strstr(inet_protocols, "ipv6"))
        f |= HAPROXY_FAMILY_IPV6;
    return f;
}
