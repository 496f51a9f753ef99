/*
 * HAProxy PROXY protocol headers, versions 1 and 2 (see haproxy.h). The
 * specification is haproxy's doc/proxy-protocol.txt; the behaviour and the
 * error texts follow Postfix's haproxy_srvr.c.
 *
 * Version 1 is one text line, "PROXY TCP4|TCP6 client server cport sport"
 * ending in LF (CRLF in practice), tokens separated by spaces (and CR, as
 * Postfix tokenizes it). Version 2 is a 12-byte signature, a version and
 * command byte, a family byte, a big-endian length, then addresses and
 * optional TLVs (skipped).
 */
#include "config.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "mail/haproxy.h"

#define V1_PREFIX "PROXY "
#define V1_PREFIX_LEN 6
static const unsigned char v2_signature[12] = { '\r', '\n', '\r', '\n', 0, '\r', '\n', 'Q', 'U', 'I', 'T', '\n' };
#define V2_HEADER_LEN 16
#define V2_VERSION 0x20
#define V2_VERSION_MASK 0xf0
#define V2_CMD_LOCAL 0x00
#define V2_CMD_PROXY 0x01
#define V2_CMD_MASK 0x0f
#define V2_TCP4 0x11               /* AF_INET, SOCK_STREAM */
#define V2_TCP6 0x21               /* AF_INET6, SOCK_STREAM */
#define V2_ADDR_LEN_TCP4 12
#define V2_ADDR_LEN_TCP6 36

/* Canonical text of an address; an IPv4-mapped IPv6 address becomes IPv4,
 * as Postfix's normalize_v4mapped_addr does. */
static void format_addr(int family, const void *bytes, char *out, size_t size)
{
    if (family == AF_INET6) {
        const struct in6_addr *a6 = bytes;
        if (IN6_IS_ADDR_V4MAPPED(a6)) {
            inet_ntop(AF_INET, &a6->s6_addr[12], out, (socklen_t)size);
            return;
        }
    }
    inet_ntop(family, bytes, out, (socklen_t)size);
}

/* A v1 address token of the announced family, canonicalised. */
static int parse_v1_addr(const char *token, int family, char *out, size_t size)
{
    unsigned char bytes[16];
    if (token == NULL || strlen(token) >= 64 || inet_pton(family, token, bytes) != 1)
        return -1;
    format_addr(family, bytes, out, size);
    return 0;
}

/* Postfix's valid_hostport: decimal, no leading zero, at most 65535. */
static int parse_port(const char *token, char *out, size_t size)
{
    if (token == NULL || token[0] == '\0' || (token[0] == '0' && token[1] != '\0') || strlen(token) > 5)
        return -1;
    unsigned long value = 0;
    for (const char *p = token; *p; p++) {
        if (*p < '0' || *p > '9')
            return -1;
        value = value * 10 + (unsigned long)(*p - '0');
    }
    if (value > 65535)
        return -1;
    snprintf(out, size, "%lu", value);
    return 0;
}

/* Next token separated by runs of ' ' and '\r' (Postfix: mystrtok " \r"). */
static char *next_token(char **cursor)
{
    char *p = *cursor;
    while (*p == ' ' || *p == '\r')
        p++;
    if (*p == '\0') {
        *cursor = p;
        return NULL;
    }
    char *start = p;
    while (*p && *p != ' ' && *p != '\r')
        p++;
    if (*p)
        *p++ = '\0';
    *cursor = p;
    return start;
}

static ssize_t parse_v1(const unsigned char *buf, size_t len, int families, struct haproxy_endpoints *out,
                        const char **error)
{
    const unsigned char *lf = memchr(buf, '\n', len);
    if (lf == NULL) {
        if (len >= HAPROXY_HEADER_MAX) {
            *error = "missing protocol header terminator";
            return -1;
        }
        /* Until the line ends only the characters can be judged. */
        for (size_t i = 0; i < len; i++)
            if (buf[i] == '\0') {
                *error = "missing protocol header terminator";
                return -1;
            }
        return 0;
    }
    size_t line_len = (size_t)(lf - buf);
    char line[HAPROXY_HEADER_MAX + 1];
    memcpy(line, buf, line_len);
    line[line_len] = '\0';
    if (memchr(buf, '\0', line_len) != NULL) {
        /* Postfix stops at the NUL and finds no terminator. */
        *error = "missing protocol header terminator";
        return -1;
    }
    char *cursor = line;
    const char *token = next_token(&cursor);
    if (token == NULL || strcmp(token, "PROXY") != 0) {
        *error = "bad or missing protocol header";
        return -1;
    }
    token = next_token(&cursor);
    int family;
    if (token && strcasecmp(token, "TCP4") == 0 && (families & HAPROXY_FAMILY_IPV4))
        family = AF_INET;
    else if (token && strcasecmp(token, "TCP6") == 0 && (families & HAPROXY_FAMILY_IPV6))
        family = AF_INET6;
    else {
        *error = "bad or missing protocol type";
        return -1;
    }
    if (parse_v1_addr(next_token(&cursor), family, out->client_addr, sizeof(out->client_addr)) != 0) {
        *error = "bad or missing client address";
        return -1;
    }
    if (parse_v1_addr(next_token(&cursor), family, out->server_addr, sizeof(out->server_addr)) != 0) {
        *error = "bad or missing server address";
        return -1;
    }
    if (parse_port(next_token(&cursor), out->client_port, sizeof(out->client_port)) != 0) {
        *error = "bad or missing client port";
        return -1;
    }
    if (parse_port(next_token(&cursor), out->server_port, sizeof(out->server_port)) != 0) {
        *error = "bad or missing server port";
        return -1;
    }
    out->local = 0;
    return (ssize_t)line_len + 1;
}

static ssize_t parse_v2(const unsigned char *buf, size_t len, int families, struct haproxy_endpoints *out,
                        const char **error)
{
    if (len < V2_HEADER_LEN)
        return 0;
    if ((buf[12] & V2_VERSION_MASK) != V2_VERSION) {
        *error = "unrecognized protocol version";
        return -1;
    }
    size_t body = ((size_t)buf[14] << 8) | buf[15];
    size_t total = V2_HEADER_LEN + body;
    if (total > HAPROXY_HEADER_MAX) {
        /* Postfix reads no more than this and then finds it short. */
        *error = "short version 2 protocol header";
        return -1;
    }
    int cmd = buf[12] & V2_CMD_MASK;
    if (cmd != V2_CMD_LOCAL && cmd != V2_CMD_PROXY) {
        *error = "bad command in proxy header";
        return -1;
    }
    if (len < total)
        return 0;
    const unsigned char *addr = buf + V2_HEADER_LEN;
    memset(out, 0, sizeof(*out));
    if (cmd == V2_CMD_LOCAL) {
        out->local = 1;
        return (ssize_t)total;
    }
    uint16_t cport, sport;
    switch (buf[13]) {
    case V2_TCP4:
        if (!(families & HAPROXY_FAMILY_IPV4)) {
            *error = "Postfix IPv4 support is disabled";
            return -1;
        }
        if (body < V2_ADDR_LEN_TCP4) {
            *error = "short address field";
            return -1;
        }
        format_addr(AF_INET, addr, out->client_addr, sizeof(out->client_addr));
        format_addr(AF_INET, addr + 4, out->server_addr, sizeof(out->server_addr));
        cport = (uint16_t)((addr[8] << 8) | addr[9]);
        sport = (uint16_t)((addr[10] << 8) | addr[11]);
        break;
    case V2_TCP6:
        if (!(families & HAPROXY_FAMILY_IPV6)) {
            *error = "Postfix IPv6 support is disabled";
            return -1;
        }
        if (body < V2_ADDR_LEN_TCP6) {
            *error = "short address field";
            return -1;
        }
        format_addr(AF_INET6, addr, out->client_addr, sizeof(out->client_addr));
        format_addr(AF_INET6, addr + 16, out->server_addr, sizeof(out->server_addr));
        cport = (uint16_t)((addr[32] << 8) | addr[33]);
        sport = (uint16_t)((addr[34] << 8) | addr[35]);
        break;
    default:
        *error = "unsupported network protocol";
        return -1;
    }
    snprintf(out->client_port, sizeof(out->client_port), "%u", (unsigned)cport);
    snprintf(out->server_port, sizeof(out->server_port), "%u", (unsigned)sport);
    return (ssize_t)total;
}

ssize_t haproxy_parse(const unsigned char *buf, size_t len, int families, struct haproxy_endpoints *out,
                      const char **error)
{
    memset(out, 0, sizeof(*out));
    if (len > HAPROXY_HEADER_MAX)
        len = HAPROXY_HEADER_MAX;
    if (len == 0)
        return 0;
    /* Which version: the bytes so far must begin one of the two. */
    size_t n1 = len < V1_PREFIX_LEN ? len : V1_PREFIX_LEN;
    if (memcmp(buf, V1_PREFIX, n1) == 0)
        return len < V1_PREFIX_LEN ? 0 : parse_v1(buf, len, families, out, error);
    size_t n2 = len < sizeof(v2_signature) ? len : sizeof(v2_signature);
    if (memcmp(buf, v2_signature, n2) == 0)
        return len < sizeof(v2_signature) ? 0 : parse_v2(buf, len, families, out, error);
    *error = "unrecognized protocol header";
    return -1;
}
