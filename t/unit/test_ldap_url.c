/*
 * Unit tests of modules/ldap/ldap_url.c: where a referral's LDAP URL
 * leads (server, base, scope, filter), what it refuses and why, and the
 * loop detector's trail lines.
 */
#include <stdlib.h>
#include <string.h>

#include <ldap.h>

#include "../tap.h"
#include "ldap_url.h"

static const char *BASE = "ou=people,dc=example,dc=test", *FILTER = "(uid=alice)";

static void leads(const char *url, int from_scope, const char *server, const char *base, int scope,
                  const char *filter)
{
    struct referral_target t;
    const char *why = NULL;
    int rc = ldap_referral_target(url, BASE, from_scope, FILTER, &t, &why);
    ok(rc == 0, "%s is followed (%s)", url, why ? why : "");
    if (rc != 0)
        return;
    is_str(t.server, server, "%s: the server", url);
    is_str(t.base, base, "%s: the base", url);
    is_int(t.scope, scope, "%s: the scope", url);
    is_str(t.filter, filter, "%s: the filter", url);
    ldap_referral_target_free(&t);
}

static void refused(const char *url, const char *reason)
{
    struct referral_target t;
    const char *why = NULL;
    int rc = ldap_referral_target(url, BASE, LDAP_SCOPE_SUBTREE, FILTER, &t, &why);
    ok(rc == -1, "%s is refused", url);
    is_str(why ? why : "(none)", reason, "%s: why", url);
    ok(t.base == NULL && t.server[0] == '\0', "%s: nothing is left set", url);
}

int main(void)
{
    /* A continuation reference from slapd: base and scope named. */
    leads("ldap://127.0.0.1:3890/ou=remote,ou=people,dc=example,dc=test??sub", LDAP_SCOPE_ONELEVEL,
          "ldap://127.0.0.1:3890", "ou=remote,ou=people,dc=example,dc=test", LDAP_SCOPE_SUBTREE, FILTER);
    /* A referral for the base: no scope, so the search's (ldap_url_parse would say "base"). */
    leads("ldap://LDAP2.Example.COM/ou=x,dc=example,dc=test", LDAP_SCOPE_SUBTREE, "ldap://ldap2.example.com:389",
          "ou=x,dc=example,dc=test", LDAP_SCOPE_SUBTREE, FILTER);
    leads("ldap://h/ou=x??base", LDAP_SCOPE_SUBTREE, "ldap://h:389", "ou=x", LDAP_SCOPE_BASE, FILTER);
    /* No base: the search's; a filter of its own; ldaps:// and IPv6. */
    leads("ldaps://[::1]/??one?(mail=x)", LDAP_SCOPE_SUBTREE, "ldaps://[::1]:636", BASE, LDAP_SCOPE_ONELEVEL,
          "(mail=x)");
    leads("ldap://h:1234", LDAP_SCOPE_BASE, "ldap://h:1234", BASE, LDAP_SCOPE_BASE, FILTER);

    refused("ldapi://%2Ftmp%2Fslapd/dc=x", "not an ldap:// or ldaps:// URL");
    refused("http://example.com/", "not an LDAP URL");
    refused("ldap://h/dc=x%0Adc=y", "control characters in its base or filter");
    refused("ldap://h/dc=x??sub?(uid=%01)", "control characters in its base or filter");
    refused("ldap://h%0A/dc=x", "a host name with control characters or URL syntax");
    char longurl[400] = "ldap://";
    memset(longurl + 7, 'a', 300);
    strcpy(longurl + 307, "/dc=x");
    refused(longurl, "a host name too long");

    char name[LDAP_SERVER_NAME_MAX];
    ok(ldap_server_name("ldap://127.0.0.1:389", name) == 0, "a server_host URL is named");
    is_str(name, "ldap://127.0.0.1:389", "its name matches a referral's");
    ok(ldap_server_name("ldapi:///", name) == -1 && name[0] == '\0', "an ldapi:// URL has no server name");

    char *line = ldap_trail_line("ldap://h:389", "OU=Loop,DC=Example");
    is_str(line, "ldap://h:389/ou=loop,dc=example", "a trail line is lower case");
    ok(ldap_trail_has("ldap://g:389/dc=x\nldap://h:389/ou=loop,dc=example", line), "found at the end of a trail");
    ok(ldap_trail_has(line, line), "and as the whole trail");
    ok(!ldap_trail_has("ldap://h:389/ou=loop,dc=example,dc=test", line), "a longer line is another one");
    ok(!ldap_trail_has("", line), "an empty trail holds nothing");
    free(line);
    return done_testing();
}
