/*
 * What pgsql_table(5) and mysql_table(5) files share (see sql_table.h):
 * the hosts list and the choice of a host, the settings both read alike,
 * the query's expansion. Every message keeps the text the two modules
 * gave when each had its own copy.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "sql_table.h"

#define HOST_RETRY_SECONDS 60   /* retry_interval's default, as Postfix's */
#define IDLE_SECONDS 60         /* idle_interval's default, as Postfix's */
#define IDLE_SECONDS_MAX 86400

int sql_table_file_read(struct sql_table *s, petrel_module *m, const char *type, const char *name,
                        const char *const *known, struct table_settings *c, petrel_pool *pool, const char **error)
{
    if (name[0] != '/' && name[0] != '.') {
        *error = petrel_pool_printf(pool, "parameters in main.cf (%s_query, ...) are not supported: name a "
                                    "%s_table(5) configuration file by its path", name, type);
        return -1;
    }
    if (table_settings_read(name, c, pool, error) != 0)
        return -1;
    s->module = m;
    s->type = type;
    s->config = petrel_pool_strdup(pool, name);
    table_settings_warn_unknown(c, m, type, name, known);
    return 0;
}

/* ------------------------------------------------------------------ */
/* hosts                                                               */

/* The length of a "scheme://" prefix (RFC 3986 scheme), 0 when s has none:
 * Postfix's pgsql takes any such host as a libpq connection URI. */
static size_t uri_scheme_length(const char *s)
{
    if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z')))
        return 0;
    const char *p = s + 1;
    while ((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') || *p == '+' ||
           *p == '-')
        p++;
    return strncmp(p, "://", 3) == 0 ? (size_t)(p + 3 - s) : 0;
}

/* A URI as the log shows it: no password (user:secret@ keeps the user) and
 * no query part (which may hold password=...). */
static const char *uri_for_messages(const char *uri, petrel_pool *pool)
{
    size_t scheme = uri_scheme_length(uri);
    const char *authority = uri + scheme;
    size_t authority_len = strcspn(authority, "/?#");
    const char *at = memchr(authority, '@', authority_len);
    size_t path_len = strcspn(authority + authority_len, "?#");
    if (at == NULL)
        return petrel_pool_printf(pool, "%.*s", (int)(scheme + authority_len + path_len), uri);
    const char *colon = memchr(authority, ':', (size_t)(at - authority));
    size_t user_len = (size_t)((colon ? colon : at) - authority);
    return petrel_pool_printf(pool, "%.*s%.*s%s%.*s", (int)scheme, uri, (int)user_len, authority,
                              colon ? ":(password)" : "", (int)(authority_len - (size_t)(at - authority) + path_len),
                              at);
}

/* One host that is not a URI: unix:PATH, or [inet:]HOST[:PORT] with an
 * IPv6 address in brackets. 0, or -1 with *error. */
static int host_parse(struct sql_host *h, char *item, int line, unsigned default_port, petrel_pool *pool,
                      const char **error)
{
    if (strncmp(item, "unix:", 5) == 0) {
        h->socket = item + 5;
        return 0;
    }
    const char *rest = strncmp(item, "inet:", 5) == 0 ? item + 5 : item;
    char *hp = petrel_pool_strdup(pool, rest);
    char *colon = strrchr(hp, ':');
    if (hp[0] == '[') {
        char *close = strchr(hp, ']');
        if (close == NULL) {
            *error = petrel_pool_printf(pool, "line %d: hosts: bad host \"%s\"", line, item);
            return -1;
        }
        *close = '\0';
        colon = close[1] == ':' ? close + 1 : NULL;
        hp++;
    }
    if (colon)
        *colon = '\0';
    h->host = hp;
    h->port = colon ? colon + 1 : NULL;
    int bad = *h->host == '\0' || (h->port && *h->port == '\0');
    if (default_port != 0) {
        /* The library takes a number: one that is not is refused now. */
        char *end = NULL;
        long port = h->port ? strtol(h->port, &end, 10) : (long)default_port;
        bad |= h->port && (*end != '\0' || port < 1 || port > 65535);
        h->port_number = (unsigned)port;
    }
    if (bad) {
        *error = petrel_pool_printf(pool, "line %d: hosts: bad host \"%s\"", line, item);
        return -1;
    }
    return 0;
}

static int hosts_parse(struct sql_hosts *hs, const char *list, int line, unsigned flags, unsigned default_port,
                       petrel_pool *pool, const char **error)
{
    char *copy = petrel_pool_strdup(pool, list), *save = NULL;
    for (char *item = strtok_r(copy, ", \t", &save); item; item = strtok_r(NULL, ", \t", &save)) {
        if (hs->n == SQL_MAX_HOSTS) {
            *error = petrel_pool_printf(pool, "line %d: hosts: more than %d hosts", line, SQL_MAX_HOSTS);
            return -1;
        }
        struct sql_host *h = &hs->items[hs->n++];
        memset(h, 0, sizeof(*h));
        h->name = item;
        if ((flags & SQL_HOSTS_URI) && uri_scheme_length(item) > 0) {
            h->uri = item;
            h->name = uri_for_messages(item, pool);
            continue;
        }
        hs->not_uri = item;
        if (host_parse(h, item, line, default_port, pool, error) != 0)
            return -1;
    }
    if (hs->n == 0) {
        hs->items[hs->n++] = (struct sql_host){ .name = "localhost", .host = "localhost", .port_number = default_port };
        hs->not_uri = "localhost";
    }
    /* One server is listed twice, as Postfix 3.10+ does (it may be a load
     * balancer): a single failure is retried at once on the "other" copy
     * instead of leaving the table without a server for retry_interval. */
    if (hs->n == 1)
        hs->items[hs->n++] = hs->items[0];
    return 0;
}

int sql_table_hosts_read(struct sql_table *s, const struct table_settings *c, unsigned flags, unsigned default_port,
                         petrel_pool *pool, const char **error)
{
    if (table_query_settings_parse(&s->q, c, s->module, s->type, s->config, TABLE_QUERY_TEMPLATE, "no query", pool,
                                   error) != 0)
        return -1;
    if (hosts_parse(&s->hosts, table_settings_get(c, "hosts", ""), table_settings_line(c, "hosts"), flags,
                    default_port, pool, error) != 0)
        return -1;
    s->user = table_settings_get(c, "user", NULL);
    s->password = table_settings_get(c, "password", NULL);
    s->dbname = table_settings_get(c, "dbname", NULL);
    if (s->hosts.not_uri && (s->dbname == NULL || *s->dbname == '\0')) {
        /* Where a host may be a URI, the message says which host needs it. */
        *error = flags & SQL_HOSTS_URI ? petrel_pool_printf(pool, "dbname is not set (host \"%s\" is not a URI)",
                                                            s->hosts.not_uri)
                                       : petrel_pool_strdup(pool, "dbname is not set");
        return -1;
    }
    return 0;
}

int sql_table_intervals_read(struct sql_table *s, const struct table_settings *c, petrel_pool *pool,
                             const char **error)
{
    long retry = 0, idle = 0;
    if (table_settings_long(c, "retry_interval", HOST_RETRY_SECONDS, 1, &retry, pool, error) != 0 ||
        table_settings_long(c, "idle_interval", IDLE_SECONDS, 1, &idle, pool, error) != 0)
        return -1;
    s->retry_seconds = (unsigned)retry;
    s->idle_ms = (unsigned)(idle > IDLE_SECONDS_MAX ? IDLE_SECONDS_MAX : idle) * 1000;
    return 0;
}

int sql_table_limits_read(struct sql_table *s, const struct table_settings *c, struct table_cache_settings *cache,
                          petrel_pool *pool, const char **error)
{
    char name[64];
    snprintf(name, sizeof(name), "%s_timeout", s->type);
    long long timeout = petrel_param_int(s->module, name);
    s->timeout_ms = (unsigned)(timeout > 0 ? timeout * 1000 : 30000);
    snprintf(name, sizeof(name), "%s_max_connections", s->type);
    s->max_conns = (int)petrel_param_int(s->module, name);
    if (s->max_conns < 1)
        s->max_conns = 1;
    return table_cache_settings_read(cache, c, pool, error);
}

int sql_table_pick_host(const struct sql_table *s)
{
    time_t now = time(NULL);
    int live[SQL_MAX_HOSTS], n = 0;
    for (int i = 0; i < s->hosts.n; i++)
        if (s->hosts.items[i].dead_until <= now)
            live[n++] = i;
    if (n == 0)
        return -1;
    return live[n > 1 ? rand() % n : 0];
}

void sql_table_host_failed(struct sql_table *s, int i)
{
    s->hosts.items[i].dead_until = time(NULL) + s->retry_seconds;
}

void sql_table_warn_unavailable(const struct sql_table *s)
{
    petrel_module_log(s->module, PETREL_LOG_WARNING, "%s:%s: no database server available", s->type, s->config);
}

char *sql_table_query_expand(const struct sql_table *s, const char *key, table_escape_fn *escape, void *escape_arg,
                             int *skip)
{
    *skip = 0;
    if (!table_query_eligible(&s->q, key)) {
        *skip = 1;
        return NULL;
    }
    struct table_buffer q = { 0 };
    if (!table_template_expand(&s->q.tpl, s->q.query, key, NULL, escape, escape_arg, &q)) {
        free(q.data);
        *skip = 1;
        return NULL;
    }
    return q.data;
}
