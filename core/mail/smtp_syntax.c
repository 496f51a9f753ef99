/*
 * SMTP syntax both sides of SMTP need (the server's command parser in
 * smtpd/smtp_parse.c, the SMTP client, the restrictions): host names and
 * address literals as RFC 5321 and Postfix's valid_hostname() allow them,
 * the domain of an address, strict UTF-8, and xtext (RFC 3461), the
 * encoding of the DSN parameters ENVID and ORCPT.
 *
 * Like the command parser, everything here scans its input once with plain
 * ASCII character classes (never <ctype.h>: a locale must not widen what
 * counts as a letter), so hostile input costs linear time.
 */
#include "config.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <netdb.h>
#include <stdint.h>
#include <string.h>
#include <strings.h>

#include "mail/smtp_syntax.h"

/* ---- character classes --------------------------------------------- */

static int is_digit(int c)
{
    return c >= '0' && c <= '9';
}

static int is_alpha(int c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z');
}

static int to_upper(int c)
{
    return (c >= 'a' && c <= 'z') ? c - 'a' + 'A' : c;
}

static int hex_value(int c)
{
    if (is_digit(c))
        return c - '0';
    c = to_upper(c);
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

static int ascii_ncasecmp(const char *a, const char *b, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (to_upper((unsigned char)a[i]) != to_upper((unsigned char)b[i]))
            return 1;
        if (a[i] == 0)
            return 0;
    }
    return 0;
}

/* Strict UTF-8 (RFC 3629): no overlong forms, no surrogates, <= U+10FFFF. */
int smtp_valid_utf8(const unsigned char *s, size_t len)
{
    size_t i = 0;
    while (i < len) {
        unsigned c = s[i];
        size_t need;
        unsigned min, cp;
        if (c < 0x80) {
            i++;
            continue;
        } else if ((c & 0xE0) == 0xC0) {
            need = 1, min = 0x80, cp = c & 0x1F;
        } else if ((c & 0xF0) == 0xE0) {
            need = 2, min = 0x800, cp = c & 0x0F;
        } else if ((c & 0xF8) == 0xF0) {
            need = 3, min = 0x10000, cp = c & 0x07;
        } else {
            return 0;
        }
        if (len - i - 1 < need)
            return 0;
        for (size_t k = 1; k <= need; k++) {
            if ((s[i + k] & 0xC0) != 0x80)
                return 0;
            cp = (cp << 6) | (s[i + k] & 0x3F);
        }
        if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
            return 0;
        i += need + 1;
    }
    return 1;
}

/* ---- hostnames ----------------------------------------------------- */

/* Postfix valid_hostname(), optionally letting 8-bit bytes stand for the
 * letters of a U-label (SMTPUTF8 domains; UTF-8 validity is checked by the
 * caller, IDNA rules are not: the domain is only routed, never rewritten). */
static int valid_hostname_impl(const char *name, int allow_utf8)
{
    size_t total = 0, label_len = 0;
    int label_numeric = 1;
    char prev = 0;

    for (const char *p = name; *p; p++, total++) {
        unsigned char c = (unsigned char)*p;
        if (total >= SMTP_DOMAIN_MAX)
            return 0;
        if (c == '.') {
            if (label_len == 0 || prev == '-')
                return 0;
            label_len = 0;
            label_numeric = 1;
        } else {
            if (is_digit(c)) {
                /* label_numeric stays as it is */
            } else if (is_alpha(c) || (allow_utf8 && c >= 0x80)) {
                label_numeric = 0;
            } else if (c == '-') {
                if (label_len == 0)
                    return 0;
                label_numeric = 0;
            } else {
                return 0;
            }
            if (++label_len > 63)
                return 0;
        }
        prev = (char)c;
    }
    if (total == 0 || label_len == 0 || prev == '-' || label_numeric)
        return 0;
    return 1;
}

int smtp_valid_hostname(const char *name)
{
    return valid_hostname_impl(name, 0);
}

int smtp_valid_hostname_8bit(const char *name)
{
    return valid_hostname_impl(name, 1);
}

int smtp_is_fqdn(const char *name)
{
    return strchr(name, '.') != NULL && smtp_valid_hostname(name);
}

static int valid_ipv4_dotted(const char *s, size_t len)
{
    int parts = 0;
    size_t i = 0;
    while (parts < 4) {
        unsigned value = 0;
        size_t digits = 0;
        while (i < len && is_digit((unsigned char)s[i]) && digits < 3) {
            value = value * 10 + (unsigned)(s[i] - '0');
            digits++;
            i++;
        }
        if (digits == 0 || value > 255)
            return 0;
        parts++;
        if (parts < 4) {
            if (i >= len || s[i] != '.')
                return 0;
            i++;
        }
    }
    return i == len;
}

int smtp_valid_address_literal(const char *s)
{
    size_t len = strlen(s);
    if (len < 3 || s[0] != '[' || s[len - 1] != ']')
        return 0;
    const char *body = s + 1;
    size_t body_len = len - 2;
    if (body_len > 5 && ascii_ncasecmp(body, "IPv6:", 5) == 0) {
        char copy[INET6_ADDRSTRLEN];
        struct in6_addr addr;
        body += 5;
        body_len -= 5;
        if (body_len >= sizeof copy)
            return 0;
        for (size_t i = 0; i < body_len; i++)
            if (hex_value((unsigned char)body[i]) < 0 && body[i] != ':' && body[i] != '.')
                return 0;
        memcpy(copy, body, body_len);
        copy[body_len] = 0;
        return inet_pton(AF_INET6, copy, &addr) == 1;
    }
    return valid_ipv4_dotted(body, body_len);
}

int smtp_address_domain(const char *address, const char **domain)
{
    const char *at = NULL;
    int quoted = 0;
    for (const char *p = address; *p; p++) {
        if (quoted && *p == '\\' && p[1] != 0)
            p++;
        else if (*p == '"')
            quoted = !quoted;
        else if (*p == '@' && !quoted)
            at = p;
    }
    *domain = at ? at + 1 : NULL;
    return at != NULL;
}

/* ---- xtext --------------------------------------------------------- */

int smtp_xtext_decode(const char *in, petrel_pool *pool, char **out)
{
    size_t len = strlen(in);
    char *dst = petrel_pool_alloc(pool, len + 1);
    size_t n = 0;
    *out = NULL;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)in[i];
        if (c == '+') {
            if (len - i < 3)
                return -1;
            int hi = hex_value((unsigned char)in[i + 1]);
            int lo = hi < 0 ? -1 : hex_value((unsigned char)in[i + 2]);
            if (hi < 0 || lo < 0 || (hi == 0 && lo == 0))
                return -1;
            dst[n++] = (char)(hi * 16 + lo);
            i += 2;
        } else if (c < 33 || c > 126 || c == '=') {
            return -1;
        } else {
            dst[n++] = (char)c;
        }
    }
    dst[n] = 0;
    *out = dst;
    return 0;
}

char *smtp_xtext_encode(const char *in, petrel_pool *pool)
{
    static const char hex[] = "0123456789ABCDEF";
    size_t len = strlen(in);
    char *dst = petrel_pool_alloc(pool, len * 3 + 1);
    size_t n = 0;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)in[i];
        if (c < 33 || c > 126 || c == '+' || c == '=') {
            dst[n++] = '+';
            dst[n++] = hex[c >> 4];
            dst[n++] = hex[c & 15];
        } else {
            dst[n++] = (char)c;
        }
    }
    dst[n] = 0;
    return dst;
}

/* ---- ports and next hops ---- */

int smtp_port_parse(const char *text, unsigned *port)
{
    /* Postfix's known_tcp_ports: names that mean these ports whatever
     * services(5) says (its entries for 465 differ between systems). */
    static const struct { const char *name; unsigned port; } known[] = {
        { "lmtp", 24 }, { "smtp", 25 }, { "smtps", 465 }, { "submissions", 465 }, { "submission", 587 },
    };
    if (text == NULL || *text == '\0')
        return -1;
    if (isdigit((unsigned char)*text)) {
        unsigned long v = 0;
        for (const char *p = text; *p; p++) {
            if (!isdigit((unsigned char)*p))
                return -1;
            v = v * 10 + (unsigned long)(*p - '0');
            if (v > 65535)
                return -1;
        }
        if (v == 0)
            return -1;
        *port = (unsigned)v;
        return 0;
    }
    for (size_t i = 0; i < sizeof(known) / sizeof(known[0]); i++)
        if (strcasecmp(known[i].name, text) == 0) {
            *port = known[i].port;
            return 0;
        }
    for (const char *p = text; *p; p++)
        if (!isalnum((unsigned char)*p) && *p != '-' && *p != '_' && *p != '.')
            return -1;
    struct servent result, *found = NULL;
    char buf[4096];
    if (getservbyname_r(text, "tcp", &result, buf, sizeof(buf), &found) != 0 || found == NULL)
        return -1;
    *port = ntohs((uint16_t)found->s_port);
    return 0;
}

int smtp_nexthop_check(const char *nexthop, int lmtp, const char **why)
{
    const char *nh = nexthop;
    if (lmtp && strncmp(nh, "unix:", 5) == 0) {
        if (nh[5] == '\0' || strlen(nh + 5) >= 108) {
            *why = "a unix: socket path must be 1 to 107 bytes";
            return -1;
        }
        return 0;
    }
    if (lmtp && strncmp(nh, "inet:", 5) == 0)
        nh += 5;
    if (strpbrk(nh, ", \t")) {
        *why = "several next hops (Postfix 3.5) are not supported: give one";
        return -1;
    }
    char host[SMTP_DOMAIN_MAX + 1];
    const char *port = NULL;
    if (nh[0] == '[') {
        const char *close = strchr(nh, ']');
        if (close == NULL || close == nh + 1 || (size_t)(close - nh - 1) > SMTP_DOMAIN_MAX) {
            *why = "a [host] needs its closing bracket and a name or address inside";
            return -1;
        }
        memcpy(host, nh + 1, (size_t)(close - nh - 1));
        host[close - nh - 1] = '\0';
        if (close[1] == ':')
            port = close + 2;
        else if (close[1] != '\0') {
            *why = "only :port may follow ]";
            return -1;
        }
        const char *h = strncasecmp(host, "ipv6:", 5) == 0 ? host + 5 : host;
        struct in6_addr v6;
        struct in_addr v4;
        if (inet_pton(AF_INET, h, &v4) != 1 && inet_pton(AF_INET6, h, &v6) != 1 && !smtp_valid_hostname(h)) {
            *why = "not a host name or an IP address inside [ ]";
            return -1;
        }
    } else {
        const char *colon = strrchr(nh, ':');
        size_t hl = colon ? (size_t)(colon - nh) : strlen(nh);
        if (hl == 0 || hl > SMTP_DOMAIN_MAX) {
            *why = "no host or domain name";
            return -1;
        }
        memcpy(host, nh, hl);
        host[hl] = '\0';
        if (colon)
            port = colon + 1;
        struct in_addr v4;
        if (inet_pton(AF_INET, host, &v4) != 1 && !smtp_valid_hostname(host)) {
            *why = "not a valid host or domain name";
            return -1;
        }
    }
    unsigned p;
    if (port && smtp_port_parse(port, &p) < 0) {
        *why = "the port is neither a number from 1 to 65535 nor a known service name";
        return -1;
    }
    return 0;
}
