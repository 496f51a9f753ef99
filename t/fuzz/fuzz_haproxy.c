/*
 * Fuzz target for the PROXY protocol header parser (core/mail/haproxy.c):
 * the bytes are what a client (or a load balancer) sends first on a
 * connection to a listener with *_upstream_proxy_protocol = haproxy.
 * Besides crashes and sanitizer reports it checks invariants:
 *   - the verdict is the same whether the bytes arrive at once or grow one
 *     byte at a time (the reader calls the parser on every read): an
 *     incomplete prefix is never refused when its completion is accepted,
 *     and a header is complete at exactly one length;
 *   - a complete header is never longer than the input nor than
 *     HAPROXY_HEADER_MAX, and never ends inside a v1 line;
 *   - accepted endpoints are canonical printable addresses (inet_pton
 *     takes them and inet_ntop gives them back unchanged) and ports 0..65535;
 *   - a refusal always carries a reason.
 *
 * make check builds it with t/fuzz/replay_main.c and replays
 * t/fuzz/corpus/haproxy; `make fuzz` runs it with libFuzzer (doc/testing.md).
 */
#include "config.h"

#include <arpa/inet.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mail/haproxy.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check_that(int cond, const char *what)
{
    if (!cond) {
        fprintf(stderr, "property violated: %s\n", what);
        abort();
    }
}

/* The condition's text is the property's name. */
#define check(cond) check_that((cond), #cond)

static void check_addr(const char *addr)
{
    unsigned char bytes[16];
    char back[64];
    int family = strchr(addr, ':') ? AF_INET6 : AF_INET;
    check(inet_pton(family, addr, bytes) == 1);
    check(inet_ntop(family, bytes, back, sizeof(back)) != NULL);
    check(strcmp(back, addr) == 0);
}

static void check_port(const char *port)
{
    check(port[0] != '\0' && strlen(port) <= 5);
    check(port[0] != '0' || port[1] == '\0');
    long v = 0;
    for (const char *p = port; *p; p++) {
        check(*p >= '0' && *p <= '9');
        v = v * 10 + (*p - '0');
    }
    check(v <= 65535);
}

static void run(const uint8_t *data, size_t size, int families)
{
    const char *error = NULL;
    struct haproxy_endpoints ep;
    ssize_t whole = haproxy_parse(data, size, families, &ep, &error);
    check(whole >= -1);
    if (whole < 0)
        check(error != NULL && *error);
    if (whole > 0) {
        check((size_t)whole <= size && whole <= HAPROXY_HEADER_MAX);
        if (data[0] == 'P')
            check(data[whole - 1] == '\n' && memchr(data, '\n', (size_t)whole - 1) == NULL);
        if (!ep.local) {
            check_addr(ep.client_addr);
            check_addr(ep.server_addr);
            check_port(ep.client_port);
            check_port(ep.server_port);
        }
    }
    /* Byte by byte, as a slow proxy would deliver it. */
    ssize_t complete_at = 0;
    for (size_t n = 1; n <= size && n <= HAPROXY_HEADER_MAX; n++) {
        struct haproxy_endpoints part;
        const char *why = NULL;
        ssize_t r = haproxy_parse(data, n, families, &part, &why);
        if (r > 0) {
            complete_at = r;
            check((size_t)r == n);   /* complete exactly when its last byte arrived */
            check(whole == r);
            check(part.local == ep.local && strcmp(part.client_addr, ep.client_addr) == 0 &&
                  strcmp(part.client_port, ep.client_port) == 0 && strcmp(part.server_addr, ep.server_addr) == 0 &&
                  strcmp(part.server_port, ep.server_port) == 0);
            break;
        }
        if (r < 0) {
            check(whole < 0);   /* once bad, more bytes cannot make it good */
            break;
        }
    }
    if (whole > 0)
        check(complete_at == whole);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > 2 * HAPROXY_HEADER_MAX)
        return 0;
    /* inet_protocols: all, ipv4, ipv6 */
    run(data, size, HAPROXY_FAMILY_IPV4 | HAPROXY_FAMILY_IPV6);
    run(data, size, HAPROXY_FAMILY_IPV4);
    run(data, size, HAPROXY_FAMILY_IPV6);
    return 0;
}
