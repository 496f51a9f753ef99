/*
 * Reading a HAProxy PROXY header off a new connection, asynchronously and
 * exactly (see haproxy_read.c); used by postscreen and by smtpd listeners with
 * *_upstream_proxy_protocol = haproxy.
 */
#ifndef PETREL_SMTPD_HAPROXY_READ_H
#define PETREL_SMTPD_HAPROXY_READ_H

#include <sys/time.h>

#include "mail/haproxy.h"

struct event_base;
struct smtpd_proxy_read;

/* status 0: ep holds the proxied endpoints (ep->local: use the socket's
 * own); -1: why says what failed, in Postfix's words ("EOF", the timeout
 * text, "PARSER ERROR: escaped bytes"), for "warning: haproxy read: WHY". */
typedef void smtpd_haproxy_done_fn(void *arg, int status, const struct haproxy_endpoints *ep, const char *why);

/* Starts reading from fd (non-blocking); done is called once, later, on the
 * loop (never from inside this call). NULL when no event can be made. */
struct smtpd_proxy_read *smtpd_proxy_read_start(struct event_base *base, int fd, int families,
                                                const struct timeval *timeout, const char *timeout_text,
                                                smtpd_haproxy_done_fn *done, void *arg);
/* The connection went away first: done is never called. */
void smtpd_proxy_read_cancel(struct smtpd_proxy_read *r);
/* HAPROXY_FAMILY_* that inet_protocols allows. */
int smtpd_proxy_families(const char *inet_protocols);

#endif
