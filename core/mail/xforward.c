/*
 * The arguments of Postfix's XFORWARD command (XFORWARD_README), parsed
 * and checked as Postfix's smtpd does; core/smtpd/xforward.c decides who
 * may send it and what it changes.
 *
 * Untrusted bytes from the network: each value at most 255 bytes,
 * xtext-decoded when it is valid xtext (Postfix before 2.3 sent raw
 * values), made printable, then checked per attribute - NAME a host name,
 * ADDR an IPv4 or IPv6 address (written back canonical), PORT a number up
 * to 65535, PROTO at most 64 bytes, SOURCE LOCAL or REMOTE; HELO, PROTO
 * and IDENT are neutered (Postfix's NEUTER_CHARACTERS become '?') so they
 * cannot break a header comment or a log line; "[UNAVAILABLE]" means
 * unknown. A bad attribute fails the whole command with Postfix's exact
 * 501 reply and changes nothing. Everything is in fixed buffers: no
 * allocation, whatever the client repeats.
 */
#include "config.h"

#include <arpa/inet.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "mail/smtp_syntax.h"
#include "mail/xforward.h"

#define UNAVAILABLE "[UNAVAILABLE]"
#define VALUE_MAX XFORWARD_VALUE_MAX

__attribute__((format(printf, 3, 4)))
static int fail(char *reply, size_t size, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(reply, size, fmt, ap);
    va_end(ap);
    return -1;
}

static int hex_digit(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    return -1;
}

/* xtext-decodes in (at most VALUE_MAX bytes) into out; 0 when in was not
 * valid xtext (then the caller takes it as it is). */
static int xtext_decode(const char *in, char *out, size_t size)
{
    size_t n = 0;
    for (const char *p = in; *p; p++) {
        unsigned char c = (unsigned char)*p;
        if (n + 1 >= size)
            return 0;
        if (c == '+') {
            int hi = p[1] ? hex_digit(p[1]) : -1;
            int lo = hi >= 0 && p[2] ? hex_digit(p[2]) : -1;
            if (hi < 0 || lo < 0 || (hi == 0 && lo == 0))
                return 0;
            out[n++] = (char)(hi * 16 + lo);
            p += 2;
        } else if (c < 33 || c > 126 || c == '=') {
            return 0;
        } else {
            out[n++] = (char)c;
        }
    }
    out[n] = '\0';
    return 1;
}

/* Postfix's printable(): anything but printable ASCII becomes '?'. */
static void make_printable(char *s)
{
    for (; *s; s++)
        if ((unsigned char)*s < 32 || (unsigned char)*s > 126)
            *s = '?';
}

/* Postfix's neuter() with its NEUTER_CHARACTERS: what could break a
 * header comment, a log line or a macro expansion becomes '?'. */
static void neuter(char *s)
{
    for (; *s; s++)
        if (strchr(" <>()\\\";@", *s))
            *s = '?';
}

static void copy(char *dst, size_t size, const char *src)
{
    snprintf(dst, size, "%s", src);
}

/* An IPv4 or IPv6 address (an "IPv6:" prefix allowed), written back in
 * its canonical form; 0 when it is not one. */
static int normalize_addr(const char *value, char *out, size_t size)
{
    unsigned char bin[16];
    const char *v = strncasecmp(value, "IPv6:", 5) == 0 ? value + 5 : value;
    if (inet_pton(AF_INET, v, bin) == 1)
        return inet_ntop(AF_INET, bin, out, (socklen_t)size) != NULL;
    if (inet_pton(AF_INET6, v, bin) == 1)
        return inet_ntop(AF_INET6, bin, out, (socklen_t)size) != NULL;
    return 0;
}

int xforward_parse(const char *args, size_t len, struct xforward_attrs *attrs, char *reply, size_t reply_size)
{
    char line[1024];
    if (len == 0 || strspn(args, " \t") >= len)
        return fail(reply, reply_size, "501 5.5.4 Syntax: XFORWARD attribute=value...");
    /* The line is bounded by the line length limit; more than 1023 bytes of
     * attributes cannot all fit their limits anyway. */
    if (len >= sizeof(line))
        return fail(reply, reply_size, "501 5.5.4 Error: attribute value too long");
    memcpy(line, args, len);
    line[len] = '\0';
    /* Everything is checked before anything is taken: a bad attribute
     * leaves the values as they were (Postfix applies the good ones before
     * the bad; nothing depends on that). */
    struct xforward_attrs next = *attrs;
    unsigned updated = 0;
    char *save = NULL;
    for (char *attr = strtok_r(line, " \t", &save); attr; attr = strtok_r(NULL, " \t", &save)) {
        char *raw = strchr(attr, '=');
        if (raw == NULL || raw[1] == '\0')
            return fail(reply, reply_size, "501 5.5.4 Error: attribute=value expected");
        *raw++ = '\0';
        if (strlen(raw) > VALUE_MAX)
            return fail(reply, reply_size, "501 5.5.4 Error: attribute value too long");
        char value[VALUE_MAX + 1];
        if (!xtext_decode(raw, value, sizeof(value)))
            copy(value, sizeof(value), raw);
        make_printable(value);
        int unavailable = strcmp(value, UNAVAILABLE) == 0;
        const char *bad = NULL;
        if (strcasecmp(attr, "NAME") == 0) {
            if (unavailable)
                copy(next.name, sizeof(next.name), "unknown");
            else if (!smtp_valid_hostname(value))
                bad = "NAME";
            else
                copy(next.name, sizeof(next.name), value);
            updated |= XFORWARD_F_NAME;
        } else if (strcasecmp(attr, "ADDR") == 0) {
            if (unavailable)
                copy(next.addr, sizeof(next.addr), "unknown");
            else if (!normalize_addr(value, next.addr, sizeof(next.addr)))
                bad = "ADDR";
            updated |= XFORWARD_F_ADDR;
        } else if (strcasecmp(attr, "PORT") == 0) {
            if (unavailable)
                copy(next.port, sizeof(next.port), "unknown");
            else if (value[strspn(value, "0123456789")] != '\0' || strlen(value) > 5 || atoi(value) > 65535)
                bad = "PORT";
            else
                copy(next.port, sizeof(next.port), value);
            updated |= XFORWARD_F_PORT;
        } else if (strcasecmp(attr, "PROTO") == 0) {
            if (unavailable)
                copy(next.proto, sizeof(next.proto), "unknown");
            else if (strlen(value) > 64)
                bad = "PROTO";
            else {
                neuter(value);
                copy(next.proto, sizeof(next.proto), value);
            }
            updated |= XFORWARD_F_PROTO;
        } else if (strcasecmp(attr, "HELO") == 0) {
            if (unavailable)
                next.helo[0] = '\0';
            else {
                neuter(value);
                copy(next.helo, sizeof(next.helo), value);
            }
            updated |= XFORWARD_F_HELO;
        } else if (strcasecmp(attr, "IDENT") == 0) {
            if (unavailable)
                copy(next.ident, sizeof(next.ident), "unknown");
            else {
                neuter(value);
                copy(next.ident, sizeof(next.ident), value);
            }
            updated |= XFORWARD_F_IDENT;
        } else if (strcasecmp(attr, "SOURCE") == 0) {
            if (unavailable || strcasecmp(value, "LOCAL") == 0)
                next.source_remote = 0;
            else if (strcasecmp(value, "REMOTE") == 0)
                next.source_remote = 1;
            else
                bad = "SOURCE";
            updated |= XFORWARD_F_SOURCE;
        } else {
            char shown[65];
            copy(shown, sizeof(shown), attr);
            make_printable(shown);
            return fail(reply, reply_size, "501 5.5.4 Bad XFORWARD attribute name: %s", shown);
        }
        if (bad)
            return fail(reply, reply_size, "501 5.5.4 Bad %s syntax: %s", bad, value);
    }
    next.set |= updated;
    *attrs = next;
    return 0;
}
