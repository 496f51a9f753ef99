/*
 * Opening an ldap: table: its ldap_table(5) file read with
 * modules/common/table_config.c, every parameter Postfix knows either
 * applied, refused naming its line (a bad value)
 * or ignored with a warning (cache*, debuglevel, tls_random_file, sasl_*,
 * tls_* without TLS), and
 * server_host turned into LDAP URLs, with the names the loop's resolver
 * must answer first (ldap.c connects).
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>

#include <ldap.h>

#include <petrel/plugin.h>

#include "ldap_table.h"

static const char *const known_names[] = {
    "server_host", "server_port", "version", "scope", "search_base", "timeout", "query_filter", "result_format",
    "result_filter", "terminal_result_attribute", "leaf_result_attribute", "result_attribute",
    "special_result_attribute", "bind", "bind_dn", "bind_pw", "cache", "cache_expiry", TABLE_CACHE_SETTINGS,
    "recursion_limit", "expansion_limit", "size_limit", "dereference", "chase_referrals", "domain",
    "sasl_mechs", "sasl_realm", "sasl_authz_id", "sasl_minssf", "start_tls", "tls_ca_cert_file", "tls_ca_cert_dir",
    "tls_cert", "tls_key", "tls_require_cert", "tls_random_file", "tls_cipher_suite", "debuglevel", NULL,
};

static int parse_bool(const char *v, int *out)
{
    if (strcasecmp(v, "yes") == 0 || strcasecmp(v, "true") == 0 || strcmp(v, "1") == 0)
        *out = 1;
    else if (strcasecmp(v, "no") == 0 || strcasecmp(v, "false") == 0 || strcmp(v, "0") == 0)
        *out = 0;
    else
        return -1;
    return 0;
}

static int parse_long(const struct table_settings *c, const char *name, long def, long min, long *out,
                      petrel_pool *pool, const char **error)
{
    const char *v = table_settings_get(c, name, NULL);
    if (v == NULL) {
        *out = def;
        return 0;
    }
    char *end;
    errno = 0;
    long n = strtol(v, &end, 10);
    if (errno || *v == '\0' || *end != '\0' || n < min) {
        *error = petrel_pool_printf(pool, "line %d: %s: bad number \"%s\"", table_settings_line(c, name), name, v);
        return -1;
    }
    *out = n;
    return 0;
}

/* A server name the resolver must answer before libldap connects:
 * not an address, not localhost (/etc/hosts), not a socket. */
static int needs_resolving(const char *scheme, const char *host)
{
    unsigned char buf[sizeof(struct in6_addr)];
    if (host == NULL || *host == '\0' || strcasecmp(scheme, "ldap") != 0 || strcasecmp(host, "localhost") == 0)
        return 0;
    return inet_pton(AF_INET, host, buf) != 1 && inet_pton(AF_INET6, host, buf) != 1;
}

static int parse_hosts(struct table *t, const struct table_settings *c, petrel_pool *pool, const char **error)
{
    int line = table_settings_line(c, "server_host");
    long port;
    if (parse_long(c, "server_port", LDAP_PORT, 1, &port, pool, error) != 0)
        return -1;
    char *copy = petrel_pool_strdup(pool, table_settings_get(c, "server_host", "localhost")), *save = NULL;
    for (char *h = strtok_r(copy, ", \t", &save); h; h = strtok_r(NULL, ", \t", &save)) {
        if (t->nhosts == MAX_HOSTS) {
            *error = petrel_pool_printf(pool, "line %d: server_host: more than %d servers", line, MAX_HOSTS);
            return -1;
        }
        const char *url;
        if (ldap_is_ldap_url(h)) {
            LDAPURLDesc *desc = NULL;
            int rc = ldap_url_parse(h, &desc);
            if (rc != 0) {
                *error = petrel_pool_printf(pool, "line %d: server_host: bad URL \"%s\": %s", line, h,
                                            ldap_err2string(rc));
                return -1;
            }
            int tls = strcasecmp(desc->lud_scheme, "ldaps") == 0;
            struct ldap_host *slot = &t->hosts[t->nhosts];
            slot->scheme = petrel_pool_strdup(pool, desc->lud_scheme);
            slot->port = desc->lud_port ? desc->lud_port : LDAP_PORT;
            slot->name = needs_resolving(desc->lud_scheme, desc->lud_host) ? petrel_pool_strdup(pool, desc->lud_host)
                                                                           : NULL;
            ldap_free_urldesc(desc);
            t->tls |= tls;
            url = h;
        } else {
            url = strrchr(h, ':') && h[0] != '[' ? petrel_pool_printf(pool, "ldap://%s", h)
                                                 : petrel_pool_printf(pool, "ldap://%s:%ld", h, port);
            LDAPURLDesc *desc = NULL;
            if (ldap_url_parse(url, &desc) != 0) {
                *error = petrel_pool_printf(pool, "line %d: server_host: bad server \"%s\"", line, h);
                return -1;
            }
            struct ldap_host *slot = &t->hosts[t->nhosts];
            slot->scheme = "ldap";
            slot->port = desc->lud_port ? desc->lud_port : (int)port;
            slot->name = needs_resolving("ldap", desc->lud_host) ? petrel_pool_strdup(pool, desc->lud_host) : NULL;
            ldap_free_urldesc(desc);
        }
        t->hosts[t->nhosts].url = url;
        t->hosts[t->nhosts].dead_until = 0;
        t->nhosts++;
    }
    if (t->nhosts == 0) {
        *error = petrel_pool_printf(pool, "line %d: server_host is empty", line);
        return -1;
    }
    return 0;
}

/* Appends the attribute names of list to t->attrs; returns how many. */
static int add_attributes(struct table *t, size_t *n, const char *list, petrel_pool *pool)
{
    int added = 0;
    char *copy = petrel_pool_strdup(pool, list), *save = NULL;
    for (char *a = strtok_r(copy, ", \t", &save); a; a = strtok_r(NULL, ", \t", &save)) {
        char **grown = petrel_pool_alloc(pool, (*n + 2) * sizeof(*grown));
        if (*n)
            memcpy(grown, t->attrs, *n * sizeof(*grown));
        grown[(*n)++] = a;
        grown[*n] = NULL;
        t->attrs = grown;
        added++;
    }
    return added;
}

void *ldap_table_open(petrel_module *m, const char *name, petrel_pool *pool, struct table_cache_settings *cache,
                      const char **error)
{
    if (name[0] != '/' && name[0] != '.') {
        *error = petrel_pool_printf(pool, "parameters in main.cf (%s_server_host, ...) are not supported: name "
                                    "an ldap_table(5) configuration file by its path", name);
        return NULL;
    }
    struct table_settings c = { 0 };
    if (table_settings_read(name, &c, pool, error) != 0) {
        table_settings_free(&c);
        return NULL;
    }
    struct table *t = petrel_pool_zalloc(pool, sizeof(*t));
    t->module = m;
    t->config = petrel_pool_strdup(pool, name);
    void *result = NULL;
    table_settings_warn_unknown(&c, m, "ldap", name, known_names);

    /* What Petrel does not do: refused, or ignored with a warning. */
    const char *v;
    if ((v = table_settings_get(&c, "start_tls", NULL)) && parse_bool(v, &t->start_tls) != 0) {
        *error = petrel_pool_printf(pool, "line %d: start_tls = %s: yes or no", table_settings_line(&c, "start_tls"),
                                    v);
        goto out;
    }
    if ((v = table_settings_get(&c, "tls_require_cert", NULL)) && parse_bool(v, &t->tls_require_cert) != 0) {
        *error = petrel_pool_printf(pool, "line %d: tls_require_cert = %s: yes or no",
                                    table_settings_line(&c, "tls_require_cert"), v);
        goto out;
    }
    t->tls_ca_cert_file = table_settings_get(&c, "tls_ca_cert_file", NULL);
    t->tls_ca_cert_dir = table_settings_get(&c, "tls_ca_cert_dir", NULL);
    t->tls_cert = table_settings_get(&c, "tls_cert", NULL);
    t->tls_key = table_settings_get(&c, "tls_key", NULL);
    t->tls_cipher_suite = table_settings_get(&c, "tls_cipher_suite", NULL);
    if ((t->tls_cert == NULL) != (t->tls_key == NULL)) {
        *error = petrel_pool_printf(pool, "line %d: %s without %s: a client certificate needs both",
                                    table_settings_line(&c, t->tls_cert ? "tls_cert" : "tls_key"),
                                    t->tls_cert ? "tls_cert" : "tls_key", t->tls_cert ? "tls_key" : "tls_cert");
        goto out;
    }
    if ((v = table_settings_get(&c, "chase_referrals", NULL)) && parse_bool(v, &t->chase_referrals) != 0) {
        *error = petrel_pool_printf(pool, "line %d: chase_referrals = %s: yes or no",
                                    table_settings_line(&c, "chase_referrals"), v);
        goto out;
    }
    /* Petrel's result cache is turned on by cache_ttl (or
     * cache_negative_ttl), names Postfix does not know; with one of them,
     * cache_size is its bound in entries. Without, cache_size is Postfix's
     * legacy setting (the OpenLDAP client cache's bytes), ignored with a
     * warning as Postfix does, and so are cache and cache_expiry always:
     * a file written for Postfix never turns on a cache it did not have. */
    int petrel_cache = table_settings_find(&c, "cache_ttl") || table_settings_find(&c, "cache_negative_ttl");
    static const char *const ignored[] = { "cache", "cache_expiry", "cache_size", "debuglevel", "tls_random_file",
                                           NULL };
    for (const char *const *k = ignored; *k; k++)
        if (table_settings_find(&c, *k) && !(petrel_cache && strcmp(*k, "cache_size") == 0))
            petrel_module_log(m, PETREL_LOG_WARNING, "ldap:%s, line %d: %s is ignored%s", name,
                              table_settings_line(&c, *k), *k,
                              strncmp(*k, "cache", 5) == 0 ? " (Postfix's legacy LDAP client cache, ignored by "
                                                             "Postfix too; Petrel's result cache is cache_ttl)"
                              : strncmp(*k, "tls", 3) == 0 ? " (GnuTLS seeds itself)" : "");
    if (petrel_cache && table_cache_settings_read(cache, &c, pool, error) != 0)
        goto out;
    const char *bind = table_settings_get(&c, "bind", "yes");
    if (strcasecmp(bind, "yes") == 0 || strcasecmp(bind, "simple") == 0 || strcasecmp(bind, "true") == 0 ||
        strcmp(bind, "1") == 0) {
        t->bind = TABLE_BIND_SIMPLE;
    } else if (strcasecmp(bind, "no") == 0 || strcasecmp(bind, "none") == 0 || strcasecmp(bind, "false") == 0 ||
               strcmp(bind, "0") == 0) {
        t->bind = 0;
    } else if (strcasecmp(bind, "sasl") == 0) {
        t->bind = TABLE_BIND_SASL;
    } else {
        *error = petrel_pool_printf(pool, "line %d: unsupported parameter value: bind = %s",
                                    table_settings_line(&c, "bind"), bind);
        goto out;
    }
    t->bind_dn = table_settings_get(&c, "bind_dn", "");
    t->bind_pw = table_settings_get(&c, "bind_pw", "");
    t->sasl_mechs = table_settings_get(&c, "sasl_mechs", "");
    t->sasl_realm = table_settings_get(&c, "sasl_realm", "");
    t->sasl_authz_id = table_settings_get(&c, "sasl_authz_id", "");
    static const char *const sasl_names[] = { "sasl_mechs", "sasl_realm", "sasl_authz_id", "sasl_minssf", NULL };
    for (const char *const *k = sasl_names; t->bind != TABLE_BIND_SASL && *k; k++)
        if (table_settings_find(&c, *k))
            petrel_module_log(m, PETREL_LOG_WARNING, "ldap:%s, line %d: %s is ignored: bind is not sasl", name,
                              table_settings_line(&c, *k), *k);

    long version, timeout, deref, minssf;
    if (parse_long(&c, "version", 2, 2, &version, pool, error) != 0 ||
        parse_long(&c, "timeout", 10, 1, &timeout, pool, error) != 0 ||
        parse_long(&c, "expansion_limit", 0, 0, &t->expansion_limit, pool, error) != 0 ||
        parse_long(&c, "size_limit", t->expansion_limit, 0, &t->size_limit, pool, error) != 0 ||
        parse_long(&c, "recursion_limit", 1000, 1, &t->recursion_limit, pool, error) != 0 ||
        parse_long(&c, "dereference", 0, 0, &deref, pool, error) != 0 ||
        parse_long(&c, "sasl_minssf", 0, 0, &minssf, pool, error) != 0)
        goto out;
    if (minssf > 4096) {
        *error = petrel_pool_printf(pool, "line %d: sasl_minssf = %ld: 0 to 4096", table_settings_line(&c, "sasl_minssf"),
                                    minssf);
        goto out;
    }
    t->sasl_minssf = (int)minssf;
    if (version != 2 && version != 3) {
        *error = petrel_pool_printf(pool, "line %d: version = %ld: LDAP versions are 2 and 3",
                                    table_settings_line(&c, "version"), version);
        goto out;
    }
    if (deref > 3) {
        *error = petrel_pool_printf(pool, "line %d: dereference = %ld: the values are 0 to 3",
                                    table_settings_line(&c, "dereference"), deref);
        goto out;
    }
    if (timeout > 3600)
        timeout = 3600;
    t->version = (int)version;
    t->deref = (int)deref;
    t->timeout_ms = (unsigned)timeout * 1000;
    const char *scope = table_settings_get(&c, "scope", "sub");
    if (strcasecmp(scope, "sub") == 0)
        t->scope = LDAP_SCOPE_SUBTREE;
    else if (strcasecmp(scope, "one") == 0)
        t->scope = LDAP_SCOPE_ONELEVEL;
    else if (strcasecmp(scope, "base") == 0)
        t->scope = LDAP_SCOPE_BASE;
    else {
        *error = petrel_pool_printf(pool, "line %d: scope = %s: the scopes are sub, one and base",
                                    table_settings_line(&c, "scope"), scope);
        goto out;
    }
    if (parse_hosts(t, &c, pool, error) != 0)
        goto out;
    t->tls |= t->start_tls;
    static const char *const tls_names[] = { "tls_ca_cert_file", "tls_ca_cert_dir", "tls_cert", "tls_key",
                                             "tls_require_cert", "tls_cipher_suite", NULL };
    for (const char *const *k = tls_names; !t->tls && *k; k++)
        if (table_settings_find(&c, *k))
            petrel_module_log(m, PETREL_LOG_WARNING, "ldap:%s, line %d: %s is ignored: no TLS (start_tls = no "
                              "and no ldaps:// server)", name, table_settings_line(&c, *k), *k);

    t->search_base = table_settings_get(&c, "search_base", "");
    t->query_filter = table_settings_get(&c, "query_filter", "(mailacceptinggeneralid=%s)");
    t->result_format = table_settings_get(&c, "result_format", table_settings_get(&c, "result_filter", "%s"));
    char bad = 0;
    int dynamic = table_template_parse(&t->tpl, t->search_base, 1, &bad);
    if (dynamic < 0) {
        *error = petrel_pool_printf(pool, "line %d: search_base: invalid %%%c in \"%s\"",
                                    table_settings_line(&c, "search_base"), bad ? bad : ' ', t->search_base);
        goto out;
    }
    t->dynamic_base = dynamic > 0;
    dynamic = table_template_parse(&t->tpl, t->query_filter, 1, &bad);
    if (dynamic < 0) {
        *error = petrel_pool_printf(pool, "line %d: query_filter: invalid %%%c in \"%s\"",
                                    table_settings_line(&c, "query_filter"), bad ? bad : ' ', t->query_filter);
        goto out;
    }
    if (dynamic == 0)
        petrel_module_log(m, PETREL_LOG_WARNING, "ldap:%s: fixed query_filter %s is probably useless", name,
                          t->query_filter);
    if (table_template_parse(&t->tpl, t->result_format, 0, &bad) < 0) {
        *error = petrel_pool_printf(pool, "line %d: result_format: invalid %%%c in \"%s\"",
                                    table_settings_line(&c, table_settings_find(&c, "result_format")
                                                               ? "result_format" : "result_filter"),
                                    bad ? bad : ' ', t->result_format);
        goto out;
    }
    if (table_domains_parse(&t->domains, table_settings_get(&c, "domain", ""), table_settings_line(&c, "domain"),
                            "ldap", pool, error) != 0)
        goto out;

    size_t n = 0;
    t->attrs = petrel_pool_zalloc(pool, sizeof(*t->attrs));
    t->nterminal = add_attributes(t, &n, table_settings_get(&c, "terminal_result_attribute", ""), pool);
    t->nleaf = add_attributes(t, &n, table_settings_get(&c, "leaf_result_attribute", ""), pool);
    add_attributes(t, &n, table_settings_get(&c, "result_attribute", "maildrop"), pool);
    t->nordinary = (int)n;
    add_attributes(t, &n, table_settings_get(&c, "special_result_attribute", ""), pool);
    if (n == 0) {
        *error = petrel_pool_printf(pool, "no result attributes (result_attribute is empty)");
        goto out;
    }
    result = t;
out:
    table_settings_free(&c);
    return result;
}
