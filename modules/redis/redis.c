/*
 * redis: lookup tables in Redis. Postfix has no redis: type, so the
 * configuration file is Petrel's own, in the *_table(5) style the other
 * database tables share (modules/common/table_config.c):
 *
 *   hosts = 127.0.0.1:6379          (host:port or unix:/path, one or several;
 *                                    or sentinels = ... and master_name = ...)
 *   password = secret               user = postfix (Redis 6 ACL)
 *   database = 0                    timeout = 10
 *   query = HGET virtual_alias %s   (or GET alias:%s, SMEMBERS group:%s, ...)
 *   result_format = %s      domain = example.com      expansion_limit = 1
 *
 * The query is a Redis command: its words are split at open, then each is
 * expanded with Postfix's %s %u %d %1..%9, so a piece of the key always
 * lands inside one argument, which the protocol carries length-prefixed:
 * no key (spaces, CR LF, quotes, "*") can add an argument or a command,
 * and nothing needs escaping. Only read commands are accepted (GET, HGET,
 * SMEMBERS, LRANGE, ZRANGE): a table never writes. A nil or empty answer
 * is "not found"; a string or a number is the result; an array's elements
 * are results, each through result_format, joined with commas (more than
 * expansion_limit is an error); a Redis error is a temporary failure.
 *
 * Asynchronous through the shared hiredis client (modules/common/
 * redis_client.c: its deadline per command, reconnection with back-off,
 * AUTH and SELECT), created on the first asynchronous lookup of each
 * process; every lookup is bounded by timeout, and Redis down is a lookup
 * error (451), never "not found". The blocking lookup (callers that
 * cannot wait) uses a synchronous hiredis connection of its own with the
 * same timeout. With Sentinel (sentinels = host:port..., master_name) the
 * master is asked of the sentinels (the shared client follows failovers;
 * the blocking connection asks when it connects); without it, hosts names
 * one server or several (replicas with the same data): lookups go to the
 * first until it fails (down, a timeout, an error), then to the next, and
 * the lookup that met the failure is sent again there, once per server.
 *
 * cache_ttl, cache_negative_ttl and cache_size turn on the result cache
 * (off by default; errors never cached), which with the merging of
 * lookups of a key already asked is the glue's (modules/common/
 * remote_table.c), the type being declared through it.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/time.h>

#include <hiredis/hiredis.h>

#include <petrel/plugin.h>

#include "redis_client.h"
#include "remote_table.h"
#include "table_config.h"

#define MAX_WORDS 16
#define MAX_HOSTS 16

/* One server of hosts: its client's configuration, and where the blocking
 * connection goes. */
struct redis_host {
    struct redis_config rcfg;
    const char *host;                 /* the blocking connection's host, or unix socket path */
    int port;                         /* 0: a unix socket */
    struct redis_client *client;      /* created by the first asynchronous lookup sent to it */
};

struct table {
    petrel_module *module;
    const char *config;
    struct redis_config rcfg;         /* the settings every host shares (and Sentinel's) */
    struct redis_host hosts[MAX_HOSTS];
    int nhosts;
    int current;                      /* the host lookups go to, until it fails */
    const char *words[MAX_WORDS];
    int nwords;
    struct table_query_settings q;   /* query (its words below), result_format, expansion_limit, domain */
    redisContext *blocking;
    int closing;
};

struct request {
    struct table *t;
    struct remote_lookup *rl;         /* answered through the glue (remote_table.c) */
    char *key;
    int host, tries;                  /* where it was sent; hosts tried */
};

static const char *const read_commands[] = { "GET", "HGET", "SMEMBERS", "LRANGE", "ZRANGE", NULL };

/* ------------------------------------------------------------------ */
/* the command and its answer                                          */

/* The command's arguments for key (malloc'd, *argc of them); 0 when the
 * key lacks what the query needs. */
static int make_command(const struct table *t, const char *key, char **argv, size_t *lens, int *argc)
{
    for (int i = 0; i < t->nwords; i++) {
        struct table_buffer b = { 0 };
        table_buffer_put(&b, "", 0);
        if (!table_template_expand(&t->q.tpl, t->words[i], key, NULL, NULL, NULL, &b)) {
            free(b.data);
            while (i-- > 0)
                free(argv[i]);
            return 0;
        }
        argv[i] = b.data;
        lens[i] = b.len;
    }
    *argc = t->nwords;
    return 1;
}

static void free_command(char **argv, int argc)
{
    for (int i = 0; i < argc; i++)
        free(argv[i]);
}

/* One element of an answer into out; -1 when the limit is exceeded. */
static int add_value(const struct table *t, const char *key, const redisReply *r, struct table_buffer *out,
                     long *count)
{
    char number[32];
    const char *text;
    size_t len;
    if (r->type == REDIS_REPLY_INTEGER) {
        snprintf(number, sizeof(number), "%lld", r->integer);
        text = number, len = strlen(number);
    } else if (r->type == REDIS_REPLY_STRING || r->type == REDIS_REPLY_STATUS) {
        text = r->str, len = r->len;
    } else {
        return 0;   /* nil, or a nested array: nothing */
    }
    if (len == 0 || memchr(text, '\0', len)) {
        petrel_module_log(t->module, PETREL_LOG_WARNING, "redis:%s: %s value for \"%.100s\" -- ignored", t->config,
                          len ? "a binary" : "an empty", key);
        return 0;
    }
    return table_query_result_add(&t->q, t->module, "redis", t->config, key, text, out, count);
}

/* 1 found (*out malloc'd), 0 not found, -1 error (logged). */
static int read_reply(const struct table *t, const char *key, const redisReply *reply, const char *error, char **out)
{
    *out = NULL;
    if (reply == NULL || reply->type == REDIS_REPLY_ERROR) {
        petrel_module_log(t->module, PETREL_LOG_WARNING, "redis:%s: lookup of \"%.100s\": %s", t->config, key,
                          error ? error : reply ? reply->str : "no answer");
        return -1;
    }
    struct table_buffer result = { 0 };
    long count = 0;
    int status = 0;
    if (reply->type == REDIS_REPLY_ARRAY) {
        for (size_t i = 0; i < reply->elements && status == 0; i++)
            status = add_value(t, key, reply->element[i], &result, &count);
    } else {
        status = add_value(t, key, reply, &result, &count);
    }
    if (status < 0 || result.len == 0) {
        free(result.data);
        return status;
    }
    *out = result.data;
    return 1;
}

static int eligible(const struct table *t, const char *key)
{
    return table_domains_eligible(&t->q.domains, key);
}

/* ------------------------------------------------------------------ */
/* the asynchronous lookup                                             */

static int send_request(struct request *r);

static void answered(const redisReply *reply, const char *error, void *arg)
{
    struct request *r = arg;
    struct table *t = r->t;
    if (!t->closing && error && r->tries < t->nhosts) {
        /* That server failed (down, timed out, or an error): the next one,
         * for this lookup and the ones after it. */
        if (t->current == r->host)
            t->current = (r->host + 1) % t->nhosts;
        petrel_module_log(t->module, PETREL_LOG_WARNING, "redis:%s: %s: %s; trying %s", t->config,
                          t->hosts[r->host].rcfg.server, error, t->hosts[t->current].rcfg.server);
        if (send_request(r) == 0)
            return;
    }
    if (!t->closing) {   /* closing: the core made the handle stale already */
        char *value;
        int status = read_reply(r->t, r->key, reply, error, &value);
        remote_lookup_answer(r->rl, status > 0 ? PETREL_TABLE_FOUND : status == 0 ? PETREL_TABLE_NOTFOUND
                                                                                 : PETREL_TABLE_RETRY, value);
        free(value);
    }
    free(r->key);
    free(r);
}

/* The asynchronous lookup (the glue, remote_table.c, answered from its
 * cache or joined a lookup in flight already). */
static void redis_lookup_start(void *handle, struct remote_lookup *rl, const char *key)
{
    struct table *t = handle;
    char *argv[MAX_WORDS];
    size_t lens[MAX_WORDS];
    int argc = 0;
    if (!eligible(t, key) || !make_command(t, key, argv, lens, &argc)) {
        remote_lookup_answer(rl, PETREL_TABLE_NOTFOUND, NULL);
        return;
    }
    free_command(argv, argc);
    struct request *r = calloc(1, sizeof(*r));
    if (r == NULL || (r->key = strdup(key)) == NULL)
        abort();
    r->t = t;
    r->rl = rl;
    if (send_request(r) != 0) {
        remote_lookup_answer(rl, PETREL_TABLE_NOTFOUND, NULL);
        free(r->key);
        free(r);
    }
}

/* Sends r to the current host (one more try); 0, or -1 when the key makes
 * no command. The answer comes later, never before redis_command returns. */
static int send_request(struct request *r)
{
    struct table *t = r->t;
    char *argv[MAX_WORDS];
    size_t lens[MAX_WORDS];
    int argc = 0;
    if (!make_command(t, r->key, argv, lens, &argc))
        return -1;
    struct redis_host *h = &t->hosts[t->current];
    if (h->client == NULL) {
        char label[300];
        snprintf(label, sizeof(label), "redis:%.200s (%.80s)", t->config, h->rcfg.server);
        h->client = redis_client_create(t->module, &h->rcfg, label);
    }
    r->host = t->current;
    r->tries++;
    redis_command(h->client, answered, r, argc, (const char **)argv, lens);
    free_command(argv, argc);
    return 0;
}

/* ------------------------------------------------------------------ */
/* the blocking lookup                                                 */

static int ask_sentinels(struct table *t, char *host, size_t hostlen, int *port);

static int blocking_connect(struct table *t)
{
    struct timeval tv = { (time_t)(t->rcfg.timeout_ms / 1000), (suseconds_t)(t->rcfg.timeout_ms % 1000) * 1000 };
    char master[256];
    const char *host = t->hosts[t->current].host;
    int port = t->hosts[t->current].port;
    if (t->rcfg.sentinels) {
        if (ask_sentinels(t, master, sizeof(master), &port) != 0)
            return -1;
        host = master;
    }
    redisContext *ctx = port ? redisConnectWithTimeout(host, port, tv) : redisConnectUnixWithTimeout(host, tv);
    if (ctx == NULL || ctx->err) {
        petrel_module_log(t->module, PETREL_LOG_WARNING, "redis:%s: connect to %s%s%d: %s", t->config, host,
                          port ? ":" : "", port, ctx ? ctx->errstr : "out of memory");
        redisFree(ctx);
        return -1;
    }
    redisSetTimeout(ctx, tv);
    redisReply *reply = NULL;
    if (t->rcfg.password && *t->rcfg.password) {
        reply = t->rcfg.user && *t->rcfg.user ? redisCommand(ctx, "AUTH %s %s", t->rcfg.user, t->rcfg.password)
                                              : redisCommand(ctx, "AUTH %s", t->rcfg.password);
        if (reply == NULL || reply->type == REDIS_REPLY_ERROR)
            goto failed;
        freeReplyObject(reply);
    }
    if (t->rcfg.database) {
        reply = redisCommand(ctx, "SELECT %d", t->rcfg.database);
        if (reply == NULL || reply->type == REDIS_REPLY_ERROR)
            goto failed;
        freeReplyObject(reply);
    }
    t->blocking = ctx;
    return 0;
failed:
    petrel_module_log(t->module, PETREL_LOG_WARNING, "redis:%s: %s: %s", t->config, host,
                      reply ? reply->str : ctx->errstr);
    if (reply)
        freeReplyObject(reply);
    redisFree(ctx);
    return -1;
}

static int redis_lookup(void *handle, const char *key, const char **value, petrel_pool *scratch)
{
    struct table *t = handle;
    char *argv[MAX_WORDS];
    size_t lens[MAX_WORDS];
    int argc = 0;
    if (!eligible(t, key) || !make_command(t, key, argv, lens, &argc))
        return 0;
    int status = -1;
    for (int attempt = 0; attempt < t->nhosts + 1; attempt++) {
        if (t->blocking == NULL && blocking_connect(t) != 0) {
            t->current = (t->current + 1) % t->nhosts;   /* the next server, if there is one */
            continue;
        }
        redisReply *reply = redisCommandArgv(t->blocking, argc, (const char **)argv, lens);
        if (reply == NULL) {
            /* The connection broke (or timed out): once more on a new one. */
            const char *why = t->blocking->errstr;
            petrel_module_log(t->module, PETREL_LOG_WARNING, "redis:%s: lookup of \"%.100s\": %s", t->config, key,
                              why);
            redisFree(t->blocking);
            t->blocking = NULL;
            continue;
        }
        char *out;
        status = read_reply(t, key, reply, NULL, &out);
        freeReplyObject(reply);
        if (status > 0)
            *value = petrel_pool_strdup(scratch, out);
        free(out);
        break;
    }
    free_command(argv, argc);
    return status;
}

/* ------------------------------------------------------------------ */
/* open, close, the module                                             */

static void table_close(void *handle)
{
    struct table *t = handle;
    t->closing = 1;
    for (int i = 0; i < t->nhosts; i++)
        if (t->hosts[i].client) {
            /* Its pending commands answer now: their handles are stale already. */
            redis_client_free(t->hosts[i].client);
            t->hosts[i].client = NULL;
        }
    if (t->blocking)
        redisFree(t->blocking);
    t->blocking = NULL;
}

static const char *const known_names[] = {
    "hosts", "password", "user", "database", "timeout", "query", "result_format", "domain", "expansion_limit",
    "sentinels", "master_name", TABLE_CACHE_SETTINGS, NULL,
};

static int parse_number(const struct table_settings *c, const char *name, long def, long min, long max, long *out,
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
    if (errno || *v == '\0' || *end != '\0' || n < min || n > max) {
        *error = petrel_pool_printf(pool, "line %d: %s: bad number \"%s\" (%ld to %ld)", table_settings_line(c, name),
                                    name, v, min, max);
        return -1;
    }
    *out = n;
    return 0;
}

/* "host:port", "[v6]:port" or "unix:/path" (cut in place) into host (or
 * path) and port (0 for a socket). */
static int split_endpoint(char *copy, const char **host, int *port)
{
    if (strncmp(copy, "unix:", 5) == 0) {
        *host = copy + 5;
        *port = 0;
        return 0;
    }
    char *colon = strrchr(copy, ':');
    if (colon == NULL)
        return -1;
    *colon = '\0';
    *port = atoi(colon + 1);
    if (copy[0] == '[' && colon > copy + 1 && colon[-1] == ']') {
        colon[-1] = '\0';
        copy++;
    }
    *host = copy;
    return *port > 0 ? 0 : -1;
}

/* The master's address from the first sentinel that knows it. */
static int ask_sentinels(struct table *t, char *host, size_t hostlen, int *port)
{
    struct timeval tv = { (time_t)(t->rcfg.timeout_ms / 1000), (suseconds_t)(t->rcfg.timeout_ms % 1000) * 1000 };
    char *list = strdup(t->rcfg.sentinels), *save = NULL;
    if (list == NULL)
        abort();
    int found = -1;
    for (char *item = strtok_r(list, ", \t", &save); item && found != 0; item = strtok_r(NULL, ", \t", &save)) {
        const char *shost;
        int sport;
        if (split_endpoint(item, &shost, &sport) == 0 && sport > 0) {
            redisContext *ctx = redisConnectWithTimeout(shost, sport, tv);
            if (ctx && !ctx->err) {
                redisSetTimeout(ctx, tv);
                redisReply *r = redisCommand(ctx, "SENTINEL get-master-addr-by-name %s", t->rcfg.master_name);
                if (r && r->type == REDIS_REPLY_ARRAY && r->elements == 2 &&
                    r->element[0]->type == REDIS_REPLY_STRING && r->element[1]->type == REDIS_REPLY_STRING) {
                    snprintf(host, hostlen, "%s", r->element[0]->str);
                    *port = atoi(r->element[1]->str);
                    found = 0;
                }
                if (r)
                    freeReplyObject(r);
            }
            redisFree(ctx);
        }
    }
    free(list);
    if (found != 0)
        petrel_module_log(t->module, PETREL_LOG_WARNING, "redis:%s: no sentinel knows the master \"%s\"", t->config,
                          t->rcfg.master_name);
    return found;
}

static void *table_open(petrel_module *m, const char *name, petrel_pool *pool, struct table_cache_settings *cache,
                        const char **error)
{
    if (name[0] != '/' && name[0] != '.') {
        *error = petrel_pool_printf(pool, "name a redis table configuration file by its path (\"%s\")", name);
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
    /* TLS to Redis is a security setting: one we cannot apply stops the start
     * instead of sending the password and the keys in clear (Debian 12's
     * hiredis 0.14 has no hiredis_ssl). */
    for (size_t i = 0; i < c.n; i++) {
        if (strcmp(c.items[i].name, "tls") == 0 || strncmp(c.items[i].name, "tls_", 4) == 0) {
            *error = petrel_pool_printf(pool, "line %d: \"%s\": TLS to Redis is not available (this build's "
                                        "hiredis has no TLS support): remove the setting, or reach Redis over "
                                        "loopback, a unix: socket or a TLS tunnel", c.items[i].line,
                                        c.items[i].name);
            goto out;
        }
    }
    table_settings_warn_unknown(&c, m, "redis", name, known_names);
    const char *hosts = table_settings_get(&c, "hosts", "127.0.0.1:6379");
    int hline = table_settings_line(&c, "hosts");
    t->rcfg.sentinels = table_settings_get(&c, "sentinels", NULL);
    t->rcfg.master_name = table_settings_get(&c, "master_name", NULL);
    if (t->rcfg.sentinels) {
        const char *bad = redis_config_check(&t->rcfg, pool);
        if (bad) {
            *error = petrel_pool_printf(pool, "line %d: %s", table_settings_line(&c, "sentinels"), bad);
            goto out;
        }
        if (table_settings_find(&c, "hosts"))
            petrel_module_log(m, PETREL_LOG_WARNING, "redis:%s, line %d: hosts is ignored: the sentinels name the "
                              "master", name, hline);
    }
    t->rcfg.user = table_settings_get(&c, "user", NULL);
    t->rcfg.password = table_settings_get(&c, "password", NULL);
    long database, timeout;
    if (parse_number(&c, "database", 0, 0, 1000000, &database, pool, error) != 0 ||
        parse_number(&c, "timeout", 10, 1, 3600, &timeout, pool, error) != 0)
        goto out;
    t->rcfg.database = (int)database;
    t->rcfg.timeout_ms = (unsigned)timeout * 1000;
    if (t->rcfg.sentinels) {
        t->hosts[0].rcfg = t->rcfg;   /* the master, as the sentinels name it */
        t->nhosts = 1;
    } else {
        char *copy = petrel_pool_strdup(pool, hosts), *save = NULL;
        for (char *h = strtok_r(copy, ", \t", &save); h; h = strtok_r(NULL, ", \t", &save)) {
            if (t->nhosts == MAX_HOSTS) {
                *error = petrel_pool_printf(pool, "line %d: hosts: more than %d servers", hline, MAX_HOSTS);
                goto out;
            }
            struct redis_host *rh = &t->hosts[t->nhosts];
            rh->rcfg = t->rcfg;
            rh->rcfg.server = h;
            const char *bad = redis_config_check(&rh->rcfg, pool);
            if (bad) {
                *error = petrel_pool_printf(pool, "line %d: hosts: %s", hline, bad);
                goto out;
            }
            if (split_endpoint(petrel_pool_strdup(pool, h), &rh->host, &rh->port) != 0) {
                *error = petrel_pool_printf(pool, "line %d: hosts: bad address \"%s\"", hline, h);
                goto out;
            }
            t->nhosts++;
        }
        if (t->nhosts == 0) {
            *error = petrel_pool_printf(pool, "line %d: hosts is empty", hline);
            goto out;
        }
    }

    if (table_query_settings_parse(&t->q, &c, m, "redis", name, 0,
                                   "no query (a Redis read command, e.g. query = HGET virtual_alias %s)", pool,
                                   error) != 0)
        goto out;
    const char *query = t->q.query;
    int qline = t->q.query_line;
    char *copy = petrel_pool_strdup(pool, query), *save = NULL;
    int dynamic = 0;
    for (char *w = strtok_r(copy, " \t", &save); w; w = strtok_r(NULL, " \t", &save)) {
        if (t->nwords == MAX_WORDS) {
            *error = petrel_pool_printf(pool, "line %d: query: more than %d words", qline, MAX_WORDS);
            goto out;
        }
        char badc = 0;
        int n = table_template_parse(&t->q.tpl, w, 1, &badc);
        if (n < 0) {
            *error = petrel_pool_printf(pool, "line %d: query: invalid %%%c in \"%s\"", qline, badc ? badc : ' ',
                                        query);
            goto out;
        }
        dynamic += n;
        t->words[t->nwords++] = w;
    }
    int known = 0;
    for (const char *const *k = read_commands; t->nwords && *k; k++)
        known |= strcasecmp(*k, t->words[0]) == 0;
    if (!known) {
        *error = petrel_pool_printf(pool, "line %d: query: \"%s\": not a read command Petrel runs for a table "
                                    "(GET, HGET, SMEMBERS, LRANGE, ZRANGE)", qline, t->nwords ? t->words[0] : "");
        goto out;
    }
    if (dynamic == 0) {
        *error = petrel_pool_printf(pool, "line %d: query: \"%s\" does not use the key (%%s, %%u, %%d...)", qline,
                                    query);
        goto out;
    }
    if (table_cache_settings_read(cache, &c, pool, error) != 0)
        goto out;
    result = t;
out:
    table_settings_free(&c);
    return result;
}

static int table_pattern(void *handle)
{
    const struct table *t = handle;
    return table_template_partial(&t->q.tpl);
}

static const struct remote_table_type remote_type = {
    .name = "redis", .open = table_open, .lookup = redis_lookup, .start = redis_lookup_start, .close = table_close,
    .handle_pattern = table_pattern,
};
REMOTE_TABLE_OPEN(open_remote, remote_type)

static const petrel_table_type table_types[] = {
    { PETREL_TABLE_TYPE_INIT, .name = "redis", .open = open_remote, REMOTE_TABLE_ENTRIES },
    { .name = NULL },
};

const petrel_module_desc petrel_module_descriptor = {
    PETREL_MODULE_INIT,
    .name = "redis",
    .version = "1.0",
    .description = "redis: lookup tables (a Redis read command per lookup), asynchronous",
    .table_types = table_types,
    /* Each table's timeout answers first; the core's guard only catches a lost lookup. */
    .hook_timeout_ms = 3600 * 1000,
};
