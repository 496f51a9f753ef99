/*
 * Fuzz target for a referral's LDAP URL turned into a server and a search
 * (modules/ldap/ldap_url.c): the URL comes from a directory server, in a
 * search continuation reference or an LDAP_REFERRAL result, and chooses
 * where the lookup goes next (chase_referrals = yes). Byte 0 picks the
 * search that met the referral (its scope, and whether its base is empty);
 * the rest, cut at the first NUL, is the URL. Besides crashes and
 * sanitizer reports it checks:
 *
 * - a URL is refused with a reason, or gives a server "ldap://host:port"
 *   or "ldaps://host:port" in lower case, within LDAP_SERVER_NAME_MAX, a
 *   port 1..65535, no control character, '/', '?' or space in it; and
 *   ldap_server_name() names the same server;
 * - the base and the filter hold no control character (no line break can
 *   split a trail line), the scope is 0..3; a URL with no '?' after its
 *   path keeps the search's scope and filter;
 * - a trail line holds no line break and is found in a trail that ends or
 *   starts with it, and not in one that only holds a longer line;
 * - the same URL gives the same answer twice.
 *
 * make check builds it with t/fuzz/replay_main.c and replays
 * t/fuzz/corpus/ldap_referral_url; `make fuzz` runs it with libFuzzer.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ldap_url.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check(int cond)
{
    if (!cond)
        abort();
}

static int clean(const char *s)
{
    for (; *s; s++)
        if ((unsigned char)*s < 0x20 || *s == 0x7f)
            return 0;
    return 1;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1 || size > 4096)
        return 0;
    int from_scope = data[0] & 3;
    const char *from_base = data[0] & 4 ? "" : "ou=people,dc=example,dc=test";
    const char *from_filter = "(uid=alice)";
    size_t n = strnlen((const char *)data + 1, size - 1);
    char *url = malloc(n + 1);
    if (url == NULL)
        return 0;
    memcpy(url, data + 1, n);
    url[n] = '\0';

    struct referral_target a, b;
    const char *why = NULL, *why2 = NULL;
    int rc = ldap_referral_target(url, from_base, from_scope, from_filter, &a, &why);
    int rc2 = ldap_referral_target(url, from_base, from_scope, from_filter, &b, &why2);
    check(rc == rc2);
    if (rc != 0) {
        check(why != NULL && why2 != NULL && a.base == NULL && a.server[0] == '\0');
        free(url);
        return 0;
    }
    check(strcmp(a.server, b.server) == 0 && strcmp(a.base, b.base) == 0 && strcmp(a.filter, b.filter) == 0 &&
          a.scope == b.scope);
    size_t len = strlen(a.server);
    check(len < LDAP_SERVER_NAME_MAX);
    check(strncmp(a.server, "ldap://", 7) == 0 || strncmp(a.server, "ldaps://", 8) == 0);
    const char *host = strstr(a.server, "://") + 3;
    const char *colon = strrchr(host, ':');
    check(colon != NULL && colon > host);
    char *end;
    long port = strtol(colon + 1, &end, 10);
    check(*end == '\0' && port >= 1 && port <= 65535);
    for (const char *p = a.server; *p; p++)
        check(!(*p >= 'A' && *p <= 'Z'));
    check(clean(a.server) && strpbrk(host, "/? ") == NULL);
    char again[LDAP_SERVER_NAME_MAX];
    check(ldap_server_name(url, again) == 0 && strcmp(again, a.server) == 0);
    check(clean(a.base) && clean(a.filter));
    check(a.scope >= 0 && a.scope <= 3);
    const char *path = strchr(strstr(url, "://") + 3, '/');
    if (path == NULL || strchr(path, '?') == NULL) {
        check(a.scope == from_scope);
        check(strcmp(a.filter, from_filter) == 0);
    }

    char *line = ldap_trail_line(a.server, a.base);
    check(strchr(line, '\n') == NULL);
    size_t ln = strlen(line);
    char *trail = malloc(2 * ln + 8);
    check(trail != NULL);
    snprintf(trail, 2 * ln + 8, "x\n%s", line);
    check(ldap_trail_has(trail, line));
    snprintf(trail, 2 * ln + 8, "%s\ny", line);
    check(ldap_trail_has(trail, line));
    snprintf(trail, 2 * ln + 8, "%s!\n!%s", line, line);
    check(!ldap_trail_has(trail, line));
    free(trail);
    free(line);
    ldap_referral_target_free(&a);
    ldap_referral_target_free(&b);
    free(url);
    return 0;
}
