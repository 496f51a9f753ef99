/*
 * The SPAMC/SPAMD protocol's request head and response parser (see
 * spamd_proto.h). The parser keeps one line at a time (status and headers,
 * each bounded) and hands the body on as it comes, so a PROCESS reply of a
 * large message never sits in memory.
 */
#include "spamd_proto.h"

#include <ctype.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

static const char *const command_names[] = {
    [SPAMD_CHECK] = "CHECK", [SPAMD_SYMBOLS] = "SYMBOLS", [SPAMD_REPORT] = "REPORT",
    [SPAMD_REPORT_IFSPAM] = "REPORT_IFSPAM", [SPAMD_PROCESS] = "PROCESS", [SPAMD_HEADERS] = "HEADERS",
    [SPAMD_PING] = "PING",
};

const char *spamd_command_name(spamd_command cmd)
{
    if ((size_t)cmd < sizeof command_names / sizeof command_names[0])
        return command_names[cmd];
    return "CHECK";
}

int spamd_command_parse(const char *name)
{
    for (size_t i = 0; i < sizeof command_names / sizeof command_names[0]; i++)
        if (name != NULL && strcasecmp(name, command_names[i]) == 0)
            return (int)i;
    return -1;
}

int spamd_request_head(spamd_command cmd, size_t length, const char *user, char *out, size_t outlen,
                       char *err, size_t errlen)
{
    if (user != NULL) {
        size_t n = strlen(user);
        int bad = n == 0 || n > 128;
        for (size_t i = 0; i < n && !bad; i++)
            bad = (unsigned char)user[i] <= 32 || (unsigned char)user[i] >= 127;
        if (bad) {
            snprintf(err, errlen, "the spamd user must be 1 to 128 printable characters without spaces");
            return -1;
        }
    }
    int n;
    if (cmd == SPAMD_PING)
        n = snprintf(out, outlen, "PING SPAMC/1.5\r\n\r\n");
    else
        n = snprintf(out, outlen, "%s SPAMC/1.5\r\nContent-length: %zu\r\n%s%s%s\r\n", spamd_command_name(cmd),
                     length, user ? "User: " : "", user ? user : "", user ? "\r\n" : "");
    if (n < 0 || (size_t)n >= outlen) {
        snprintf(err, errlen, "request head too long");
        return -1;
    }
    return n;
}

/* A decimal number as spamd writes it ("1000.0", "-2.5"): strtod, with no
 * locale surprises accepted (digits, one '.', an optional sign). */
static int parse_number(const char **pp, double *v)
{
    const char *p = *pp;
    while (*p == ' ' || *p == '\t')
        p++;
    const char *start = p;
    if (*p == '-' || *p == '+')
        p++;
    int digits = 0, dot = 0;
    while (isdigit((unsigned char)*p) || (*p == '.' && !dot)) {
        if (*p == '.')
            dot = 1;
        else
            digits++;
        p++;
    }
    if (digits == 0 || p - start > 20)
        return -1;
    char num[24];
    memcpy(num, start, (size_t)(p - start));
    num[p - start] = 0;
    errno = 0;
    char *end;
    *v = strtod(num, &end);
    if (errno != 0 || *end != 0)
        return -1;
    *pp = p;
    return 0;
}

int spamd_parse_spam(const char *value, int *is_spam, double *score, double *threshold)
{
    const char *p = value;
    while (*p == ' ' || *p == '\t')
        p++;
    if (strncasecmp(p, "True", 4) == 0 || strncasecmp(p, "Yes", 3) == 0)
        *is_spam = 1;
    else if (strncasecmp(p, "False", 5) == 0 || strncasecmp(p, "No", 2) == 0)
        *is_spam = 0;
    else
        return -1;
    while (isalpha((unsigned char)*p))
        p++;
    while (*p == ' ' || *p == '\t')
        p++;
    if (*p++ != ';')
        return -1;
    if (parse_number(&p, score) < 0)
        return -1;
    while (*p == ' ' || *p == '\t')
        p++;
    if (*p++ != '/')
        return -1;
    if (parse_number(&p, threshold) < 0)
        return -1;
    while (*p == ' ' || *p == '\t')
        p++;
    return *p == 0 ? 0 : -1;
}

void spamd_response_init(spamd_response *r, size_t body_max, int keep_symbols)
{
    memset(r, 0, sizeof *r);
    r->state = SPAMD_P_STATUS;
    r->body_max = body_max;
    r->keep_symbols = keep_symbols;
}

__attribute__((format(printf, 2, 3)))
static int error(spamd_response *r, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(r->error, sizeof r->error, fmt, ap);
    va_end(ap);
    r->state = SPAMD_P_ERROR;
    return -1;
}

/* Printable copy of untrusted text, for logs and results. */
static void printable(char *out, size_t outlen, const char *in)
{
    size_t o = 0;
    for (; *in && o + 1 < outlen; in++)
        out[o++] = (unsigned char)*in >= 32 && (unsigned char)*in < 127 ? *in : '?';
    out[o] = 0;
}

static int status_line(spamd_response *r)
{
    /* "SPAMD/1.1 0 EX_OK" */
    const char *p = r->line;
    if (strncmp(p, "SPAMD/", 6) != 0) {
        char shown[80];
        printable(shown, sizeof shown, p);
        return error(r, "not a spamd response: \"%s\"", shown);
    }
    p += 6;
    size_t v = 0;
    while ((isdigit((unsigned char)p[v]) || p[v] == '.') && v < sizeof r->version - 1)
        v++;
    if (v == 0 || p[v] != ' ')
        return error(r, "bad protocol version in the status line");
    memcpy(r->version, p, v);
    r->version[v] = 0;
    p += v + 1;
    int code = 0, digits = 0;
    while (isdigit((unsigned char)*p) && digits < 4) {
        code = code * 10 + (*p++ - '0');
        digits++;
    }
    if (digits == 0 || (*p != ' ' && *p != 0))
        return error(r, "bad code in the status line");
    r->code = code;
    while (*p == ' ')
        p++;
    printable(r->code_text, sizeof r->code_text, p);
    r->state = SPAMD_P_HEADERS;
    return 0;
}

static int header_line(spamd_response *r)
{
    if (r->line_len == 0) {
        if (!r->has_length || r->content_length == 0) {
            r->state = SPAMD_P_DONE;
            return 1;
        }
        if (r->body_max && r->content_length > r->body_max)
            return error(r, "response body of %zu bytes is over the limit of %zu", r->content_length, r->body_max);
        r->state = SPAMD_P_BODY;
        return 0;
    }
    if (++r->headers > SPAMD_HEADERS_MAX)
        return error(r, "more than %d response headers", SPAMD_HEADERS_MAX);
    char *colon = strchr(r->line, ':');
    if (colon == NULL)
        return error(r, "response header without a colon");
    *colon = 0;
    const char *name = r->line, *value = colon + 1;
    while (*value == ' ' || *value == '\t')
        value++;
    if (strcasecmp(name, "Content-length") == 0) {
        char *end;
        if (!isdigit((unsigned char)*value) || strlen(value) > 15)
            return error(r, "bad Content-length");
        errno = 0;
        unsigned long long n = strtoull(value, &end, 10);
        if (errno != 0 || *end != 0)
            return error(r, "bad Content-length");
        r->has_length = 1;
        r->content_length = (size_t)n;
    } else if (strcasecmp(name, "Spam") == 0) {
        if (spamd_parse_spam(value, &r->is_spam, &r->score, &r->threshold) < 0) {
            char shown[80];
            printable(shown, sizeof shown, value);
            return error(r, "bad Spam header: \"%s\"", shown);
        }
        r->has_spam = 1;
    }
    /* Other headers (DidSet, DidRemove, Compress...) are not ours to act on. */
    return 0;
}

int spamd_response_feed(spamd_response *r, const unsigned char *data, size_t len,
                        int (*body)(void *arg, const void *data, size_t len), void *arg)
{
    size_t i = 0;
    while (i < len) {
        switch (r->state) {
        case SPAMD_P_STATUS:
        case SPAMD_P_HEADERS: {
            unsigned char ch = data[i++];
            if (ch == '\n') {
                if (r->line_len > 0 && r->line[r->line_len - 1] == '\r')
                    r->line_len--;
                r->line[r->line_len] = 0;
                if (memchr(r->line, 0, r->line_len) != NULL)
                    return error(r, "NUL in a response line");
                int rc = r->state == SPAMD_P_STATUS ? status_line(r) : header_line(r);
                r->line_len = 0;
                if (rc < 0)
                    return -1;
                if (rc > 0) {
                    if (i < len)
                        return error(r, "%zu bytes after the response", len - i);
                    return 1;
                }
                continue;
            }
            if (r->line_len == SPAMD_LINE_MAX)
                return error(r, "response line longer than %d bytes", SPAMD_LINE_MAX);
            r->line[r->line_len++] = (char)ch;
            break;
        }
        case SPAMD_P_BODY: {
            size_t n = len - i;
            if (r->has_length && n > r->content_length - r->body_bytes)
                n = r->content_length - r->body_bytes;
            if (!r->has_length && r->body_max && r->body_bytes + n > r->body_max)
                return error(r, "response body over the limit of %zu bytes", r->body_max);
            if (r->keep_symbols) {
                size_t room = SPAMD_SYMBOLS_MAX - r->symbols_len, k = n < room ? n : room;
                memcpy(r->symbols + r->symbols_len, data + i, k);
                r->symbols_len += k;
                r->symbols[r->symbols_len] = 0;
            }
            if (body != NULL && n > 0 && body(arg, data + i, n) < 0)
                return error(r, "the response body could not be taken");
            r->body_bytes += n;
            i += n;
            if (r->has_length && r->body_bytes == r->content_length) {
                r->state = SPAMD_P_DONE;
                if (i < len)
                    return error(r, "%zu bytes after the response body", len - i);
                return 1;
            }
            break;
        }
        case SPAMD_P_DONE:
            return error(r, "%zu bytes after the response", len - i);
        case SPAMD_P_ERROR:
            return -1;
        }
    }
    return r->state == SPAMD_P_DONE ? 1 : r->state == SPAMD_P_ERROR ? -1 : 0;
}

int spamd_response_eof(spamd_response *r)
{
    switch (r->state) {
    case SPAMD_P_DONE:
        return 1;
    case SPAMD_P_STATUS:
        if (r->line_len > 0 && strncmp(r->line, "SPAMD/", 6) == 0) {
            /* A status line without its line end (spamd's error replies end
             * with \r\n, but be lenient about the last line). */
            r->line[r->line_len] = 0;
            if (memchr(r->line, 0, r->line_len) != NULL)
                return error(r, "NUL in a response line");
            if (status_line(r) < 0)
                return -1;
            r->state = SPAMD_P_DONE;
            return 1;
        }
        error(r, "connection closed before the status line");
        return -1;
    case SPAMD_P_HEADERS:
        if (r->line_len == 0 && r->headers == 0) {
            /* A status line and nothing more: an error reply, or PONG. */
            r->state = SPAMD_P_DONE;
            return 1;
        }
        error(r, "connection closed in the response headers");
        return -1;
    case SPAMD_P_BODY:
        if (!r->has_length) {
            r->state = SPAMD_P_DONE;
            return 1;
        }
        error(r, "connection closed after %zu of %zu body bytes", r->body_bytes, r->content_length);
        return -1;
    case SPAMD_P_ERROR:
        return -1;
    }
    return -1;
}
