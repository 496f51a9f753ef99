/*
 * Where a referral's LDAP URL leads. The URL comes from a directory
 * server (a referral object's "ref" values, or what the server makes of
 * them), so it is parsed by libldap (ldap_url_parse) and then checked
 * before it names a server or a search: ldap:// or ldaps:// only (not
 * ldapi://, a local socket a directory has no business pointing at), no
 * control character in the host, the base or the filter (a line break in
 * a base would split its line in the loop detector's trail), a host that
 * fits LDAP_SERVER_NAME_MAX (two long names are never cut to one pool
 * key). What the URL leaves out is the search's own (RFC 4511 4.1.10):
 * an empty base, no scope, no filter. ldap_url_parse says "base" for a
 * URL without a scope, so whether it names one is read from the text.
 */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <ldap.h>

#include "ldap_url.h"

static int has_control(const char *s)
{
    for (; s && *s; s++)
        if ((unsigned char)*s < 0x20 || *s == 0x7f)
            return 1;
    return 0;
}

static char *copy_or_die(const char *s)
{
    char *d = strdup(s);
    if (d == NULL)
        abort();
    return d;
}

/* Whether url states a scope: its path has a third '?'-separated field
 * (dn?attributes?scope) that is not empty. */
static int url_names_scope(const char *url)
{
    const char *p = strstr(url, "://");
    if (p == NULL || (p = strchr(p + 3, '/')) == NULL)
        return 0;
    if ((p = strchr(p, '?')) == NULL || (p = strchr(p + 1, '?')) == NULL)
        return 0;
    return p[1] != '\0' && p[1] != '?';
}

static int is_ldap_scheme(const char *scheme)
{
    return scheme && (strcasecmp(scheme, "ldap") == 0 || strcasecmp(scheme, "ldaps") == 0);
}

/* The server of a parsed URL; 0, or -1 (*why set). */
static int name_of(const LDAPURLDesc *desc, char *buf, const char **why)
{
    buf[0] = '\0';
    if (!is_ldap_scheme(desc->lud_scheme)) {
        *why = "not an ldap:// or ldaps:// URL";
        return -1;
    }
    int tls = strcasecmp(desc->lud_scheme, "ldaps") == 0;
    int port = desc->lud_port ? desc->lud_port : tls ? LDAPS_PORT : LDAP_PORT;
    const char *host = desc->lud_host && *desc->lud_host ? desc->lud_host : "localhost";
    if (has_control(host) || strpbrk(host, "/?[]@ ") != NULL) {
        *why = "a host name with control characters or URL syntax";
        return -1;
    }
    if (port < 1 || port > 65535) {
        *why = "a port out of range";
        return -1;
    }
    int n = snprintf(buf, LDAP_SERVER_NAME_MAX, strchr(host, ':') ? "%s://[%s]:%d" : "%s://%s:%d",
                     tls ? "ldaps" : "ldap", host, port);
    if (n < 0 || n >= LDAP_SERVER_NAME_MAX) {
        buf[0] = '\0';
        *why = "a host name too long";
        return -1;
    }
    for (char *p = buf; *p; p++)
        *p = (char)tolower((unsigned char)*p);
    return 0;
}

int ldap_server_name(const char *url, char *buf)
{
    LDAPURLDesc *desc = NULL;
    const char *why = NULL;
    buf[0] = '\0';
    if (ldap_url_parse(url, &desc) != 0) {
        if (desc)
            ldap_free_urldesc(desc);
        return -1;
    }
    int rc = name_of(desc, buf, &why);
    ldap_free_urldesc(desc);
    return rc;
}

int ldap_referral_target(const char *url, const char *from_base, int from_scope, const char *from_filter,
                         struct referral_target *out, const char **why)
{
    memset(out, 0, sizeof(*out));
    LDAPURLDesc *desc = NULL;
    int rc = ldap_url_parse(url, &desc);
    if (rc != 0) {
        *why = "not an LDAP URL";
        if (desc)
            ldap_free_urldesc(desc);
        return -1;
    }
    const char *base = desc->lud_dn && *desc->lud_dn ? desc->lud_dn : from_base;
    const char *filter = desc->lud_filter && *desc->lud_filter ? desc->lud_filter : from_filter;
    int scope = url_names_scope(url) ? desc->lud_scope : from_scope;
    rc = name_of(desc, out->server, why);
    if (rc == 0 && (has_control(base) || has_control(filter))) {
        *why = "control characters in its base or filter";
        rc = -1;
    }
    if (rc == 0 && (scope < LDAP_SCOPE_BASE || scope > LDAP_SCOPE_CHILDREN)) {
        *why = "an unknown scope";
        rc = -1;
    }
    if (rc == 0) {
        out->base = copy_or_die(base);
        out->filter = copy_or_die(filter);
        out->scope = scope;
    } else {
        out->server[0] = '\0';
    }
    ldap_free_urldesc(desc);
    return rc;
}

void ldap_referral_target_free(struct referral_target *target)
{
    free(target->base);
    free(target->filter);
    memset(target, 0, sizeof(*target));
}

char *ldap_trail_line(const char *server, const char *base)
{
    size_t n = strlen(server) + strlen(base) + 2;
    char *line = malloc(n);
    if (line == NULL)
        abort();
    snprintf(line, n, "%s/%s", server, base);
    for (char *p = line; *p; p++)
        *p = (char)tolower((unsigned char)*p);
    return line;
}

int ldap_trail_has(const char *trail, const char *line)
{
    size_t n = strlen(line);
    for (const char *p = trail; p && *p;) {
        const char *end = strchr(p, '\n');
        size_t len = end ? (size_t)(end - p) : strlen(p);
        if (len == n && memcmp(p, line, n) == 0)
            return 1;
        p = end ? end + 1 : p + len;
    }
    return 0;
}
