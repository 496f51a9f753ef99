/*
 * modules/ratelimit: check_rate_limit N/WINDOW, or with Postfix's { }
 * grouping check_rate_limit { N/WINDOW KEY... [messages|recipients] }:
 * at most N messages (or recipients) per sliding WINDOW per key, where the
 * key is the client's address (default), the sender, the SASL user, the
 * recipient's domain, or a combination of them. Over the limit is
 * 450 4.7.1; nothing is counted for a refused attempt.
 *
 * Where counters live:
 * - with ratelimit_redis (or its Sentinel settings), in Redis, shared by
 *   every node: one Lua script checks and adds atomically on the server's
 *   clock (modules/common/redis_client.c carries it asynchronously);
 *   Redis down applies ratelimit_default_action and is logged;
 * - otherwise in memory shared by the node's workers: a file-backed
 *   region under data_directory (ratelimit_shm.c says why a file).
 * Both count in the same sliding window of 60 buckets.
 *
 * A message is counted once per transaction (at the first recipient the
 * restriction sees, or at DATA); recipients one by one at RCPT, or all at
 * once at DATA. Excluded: mynetworks, the null sender, and the clients of
 * ratelimit_exclude_clients; a key that does not apply (sasl_user for a
 * client that did not authenticate) skips the limit.
 *
 * The three exclusions are per master.cf service (.per_service): a
 * submission line may say -o ratelimit_exclude_mynetworks=no while port 25
 * keeps main.cf's value. init builds one profile per service; a session
 * finds its own by petrel_service_name() (a few services: a linear search).
 * mynetworks itself is the service's too (petrel_in_mynetworks).
 */
#include <arpa/inet.h>
#include <ctype.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>

#include <petrel/plugin.h>

#include "client_nets.h"
#include "ratelimit_shm.h"
#include "redis_client.h"

static const petrel_param ratelimit_params[] = {
    { PETREL_PARAM_INIT, .name = "ratelimit_redis", .type = PETREL_PARAM_STRING, .default_value = "",
      .help = "Redis server (host:port or unix:/path) shared by a cluster; empty: counters in memory on this node" },
    { PETREL_PARAM_INIT, .name = "ratelimit_redis_user", .type = PETREL_PARAM_STRING, .default_value = "",
      .help = "ACL user name (Redis 6 and later), with the password" },
    { PETREL_PARAM_INIT, .name = "ratelimit_redis_password", .type = PETREL_PARAM_STRING, .default_value = "",
      .help = "password (AUTH)" },
    { PETREL_PARAM_INIT, .name = "ratelimit_redis_database", .type = PETREL_PARAM_INT, .default_value = "0",
      .help = "database number (SELECT)" },
    { PETREL_PARAM_INIT, .name = "ratelimit_redis_sentinels", .type = PETREL_PARAM_LIST, .default_value = "",
      .help = "Sentinels (host:port, ...) that name the master" },
    { PETREL_PARAM_INIT, .name = "ratelimit_redis_master_name", .type = PETREL_PARAM_STRING,
      .default_value = "mymaster",
      .help = "the master's name in Sentinel" },
    { PETREL_PARAM_INIT, .name = "ratelimit_redis_timeout", .type = PETREL_PARAM_TIME, .default_value = "2s",
      .help = "deadline of each Redis command and connection attempt" },
    { PETREL_PARAM_INIT, .name = "ratelimit_redis_prefix", .type = PETREL_PARAM_STRING,
      .default_value = "petrel:ratelimit:",
      .help = "prefix of the module's Redis keys" },
    { PETREL_PARAM_INIT, .name = "ratelimit_state_file", .type = PETREL_PARAM_STRING,
      .default_value = "$data_directory/ratelimit.state",
      .help = "the file the in-memory counters are mapped from (shared by this node's workers)" },
    { PETREL_PARAM_INIT, .name = "ratelimit_memory_slots", .type = PETREL_PARAM_INT, .default_value = "16384",
      .help = "keys the in-memory counters hold" },
    { PETREL_PARAM_INIT, .name = "ratelimit_exclude_mynetworks", .type = PETREL_PARAM_BOOL, .default_value = "yes",
      .help = "clients in mynetworks are not limited", .per_service = 1 },
    { PETREL_PARAM_INIT, .name = "ratelimit_exclude_null_sender", .type = PETREL_PARAM_BOOL, .default_value = "yes",
      .help = "mail from <> is not limited", .per_service = 1 },
    { PETREL_PARAM_INIT, .name = "ratelimit_exclude_clients", .type = PETREL_PARAM_LIST, .default_value = "",
      .help = "client addresses or networks that are not limited", .per_service = 1 },
    { .name = NULL },
};

/* KEYS[1]: the counter. ARGV: limit, add, window (ms), buckets.
 * Returns {1 counted | 0 refused, events in the window}. */
static const char ratelimit_script[] =
    "local t = redis.call('TIME')\n"
    "local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)\n"
    "local limit, add, window, buckets = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])\n"
    "local granule = math.max(1, math.floor(window / buckets))\n"
    "local cur = math.floor(now / granule)\n"
    "local h = redis.call('HGETALL', KEYS[1])\n"
    "local sum = 0\n"
    "for i = 1, #h, 2 do\n"
    "  if tonumber(h[i]) < cur - buckets then redis.call('HDEL', KEYS[1], h[i])\n"
    "  else sum = sum + tonumber(h[i + 1]) end\n"
    "end\n"
    "if sum + add > limit then return {0, sum} end\n"
    "redis.call('HINCRBY', KEYS[1], cur, add)\n"
    "redis.call('PEXPIRE', KEYS[1], window + granule)\n"
    "return {1, sum + add}\n";

enum key_part { KEY_CLIENT = 1, KEY_SENDER = 2, KEY_SASL_USER = 4, KEY_RECIPIENT_DOMAIN = 8 };

struct rule {
    unsigned long long limit;
    unsigned long long window_ms;
    char window_text[32];
    unsigned keys;                    /* enum key_part bits, in the order client sender sasl_user domain */
    int recipients;                   /* count recipients, not messages */
};

/* What is not limited, as one master.cf service (or main.cf) says. */
struct exclusions {
    const char *service;              /* NULL: main.cf's */
    int mynetworks, null_sender;
    struct client_net *clients;
    size_t nclients;
};

struct ratelimit_conf {
    petrel_pool *pool;
    struct redis_client *redis;       /* or NULL: in memory */
    struct ratelimit_shm *shm;
    const char *prefix;
    int tempfail_when_down;
    struct exclusions main;           /* main.cf's */
    struct exclusions *services;      /* one per hook service (petrel_service_at) */
    size_t nservices;
    struct rule *rules;               /* the rules compiled in this process (petrelctl ratelimit show) */
    size_t nrules, caprules;
};

static void remember_rule(struct ratelimit_conf *conf, const struct rule *r);

/* ------------------------------------------------------------------ */
/* configuration                                                       */

/* "100/1h", "3/5s", "10/m": N and a window with a unit (s m h d w). */
static const char *parse_rate(const char *text, struct rule *r, petrel_pool *pool)
{
    const char *slash = strchr(text, '/');
    char *end;
    if (slash == NULL || !isdigit((unsigned char)text[0]))
        return petrel_pool_printf(pool, "\"%s\": N/WINDOW expected, e.g. 100/1h", text);
    unsigned long long n = strtoull(text, &end, 10);
    if (end != slash || n == 0 || n > 1000000000ULL)
        return petrel_pool_printf(pool, "\"%s\": the limit must be a number from 1 to 1000000000", text);
    const char *w = slash + 1;
    unsigned long long count = 1;
    if (isdigit((unsigned char)*w)) {
        count = strtoull(w, &end, 10);
        w = end;
    }
    unsigned long long unit;
    switch (*w) {
    case 's': unit = 1; break;
    case 'm': unit = 60; break;
    case 'h': unit = 3600; break;
    case 'd': unit = 86400; break;
    case 'w': unit = 604800; break;
    case '\0': unit = 1; break;   /* a bare number: seconds */
    default: unit = 0; break;
    }
    if (unit == 0 || (*w && w[1] != '\0') || count == 0 || count > 366ULL * 86400 / unit)
        return petrel_pool_printf(pool, "\"%s\": the window is a number with a unit s, m, h, d or w (at most a year)",
                                  text);
    r->limit = n;
    r->window_ms = count * unit * 1000;
    snprintf(r->window_text, sizeof(r->window_text), "%s", slash + 1);
    return NULL;
}

static const char *parse_rule(const char *arg, struct rule *r, petrel_pool *pool)
{
    memset(r, 0, sizeof(*r));
    char *copy = petrel_pool_strdup(pool, arg);
    char *save = NULL;
    char *word = strtok_r(copy, " \t,", &save);
    if (word == NULL)
        return "N/WINDOW expected, e.g. 100/1h";
    const char *err = parse_rate(word, r, pool);
    if (err)
        return err;
    int counting_given = 0;
    while ((word = strtok_r(NULL, " \t,", &save)) != NULL) {
        if (strcasecmp(word, "client") == 0)
            r->keys |= KEY_CLIENT;
        else if (strcasecmp(word, "sender") == 0)
            r->keys |= KEY_SENDER;
        else if (strcasecmp(word, "sasl_user") == 0)
            r->keys |= KEY_SASL_USER;
        else if (strcasecmp(word, "recipient_domain") == 0)
            r->keys |= KEY_RECIPIENT_DOMAIN;
        else if (strcasecmp(word, "messages") == 0 || strcasecmp(word, "recipients") == 0) {
            if (counting_given++)
                return "say messages or recipients once";
            r->recipients = strcasecmp(word, "recipients") == 0;
        } else
            return petrel_pool_printf(pool, "unknown word \"%s\": keys are client, sender, sasl_user, "
                                      "recipient_domain; counting is messages or recipients", word);
    }
    if (r->keys == 0)
        r->keys = KEY_CLIENT;
    return NULL;
}

static struct redis_config redis_settings(petrel_module *m)
{
    long long timeout = petrel_param_int(m, "ratelimit_redis_timeout");
    struct redis_config cfg = {
        .server = petrel_param_string(m, "ratelimit_redis"),
        .user = petrel_param_string(m, "ratelimit_redis_user"),
        .password = petrel_param_string(m, "ratelimit_redis_password"),
        .database = (int)petrel_param_int(m, "ratelimit_redis_database"),
        .sentinels = petrel_param_string(m, "ratelimit_redis_sentinels"),
        .master_name = petrel_param_string(m, "ratelimit_redis_master_name"),
        .timeout_ms = (unsigned)((timeout > 0 && timeout < 3600 ? timeout : 2) * 1000),
    };
    return cfg;
}

static int uses_redis(const struct redis_config *cfg)
{
    return (cfg->server && *cfg->server) || (cfg->sentinels && *cfg->sentinels);
}

static const char *parse_exclusions(petrel_module *m, const char *service, petrel_pool *pool, struct exclusions *out);

/* Checks the settings; with conf, keeps the exclusions of main.cf and of
 * each service. */
static const char *check_settings(petrel_module *m, petrel_pool *pool, struct ratelimit_conf *conf)
{
    struct redis_config rcfg = redis_settings(m);
    if (uses_redis(&rcfg)) {
        const char *err = redis_config_check(&rcfg, pool);
        if (err)
            return petrel_pool_printf(pool, "%s: %s",
                                      rcfg.sentinels && *rcfg.sentinels ? "ratelimit_redis_sentinels" : "ratelimit_redis",
                                      err);
    } else {
        const char *path = petrel_param_string(m, "ratelimit_state_file");
        if (path == NULL || path[0] != '/')
            return "ratelimit_state_file: an absolute path is expected";
        char *dir = petrel_pool_strdup(pool, path);
        char *slash = strrchr(dir, '/');
        *slash = '\0';
        struct stat st;
        if (stat(*dir ? dir : "/", &st) != 0 || !S_ISDIR(st.st_mode))
            return petrel_pool_printf(pool, "ratelimit_state_file: the directory %s does not exist "
                                      "(create it, owned by mail_owner, or set data_directory)", *dir ? dir : "/");
        if (petrel_param_int(m, "ratelimit_memory_slots") < 8)
            return "ratelimit_memory_slots: at least 8";
    }
    struct exclusions main_ex;
    const char *err = parse_exclusions(m, NULL, pool, &main_ex);
    if (err)
        return err;
    size_t n = petrel_service_count(m);
    struct exclusions *services = petrel_pool_zalloc(pool, (n ? n : 1) * sizeof(*services));
    for (size_t i = 0; i < n; i++) {
        const char *service = petrel_service_at(m, i);
        if ((err = parse_exclusions(m, service, pool, &services[i])) != NULL)
            return petrel_pool_printf(pool, "master.cf service %s: %s", service, err);
    }
    if (conf) {
        conf->main = main_ex;
        conf->services = services;
        conf->nservices = n;
    }
    return NULL;
}

/* Parses ratelimit_exclude_clients as the service (NULL: main.cf) sets it. */
static const char *parse_exclusions(petrel_module *m, const char *service, petrel_pool *pool, struct exclusions *out)
{
    const char *text = service ? petrel_service_config_string(m, service, "ratelimit_exclude_clients")
                               : petrel_param_string(m, "ratelimit_exclude_clients");
    out->service = service;
    out->mynetworks = service ? petrel_service_config_bool(m, service, "ratelimit_exclude_mynetworks")
                              : petrel_param_bool(m, "ratelimit_exclude_mynetworks");
    out->null_sender = service ? petrel_service_config_bool(m, service, "ratelimit_exclude_null_sender")
                               : petrel_param_bool(m, "ratelimit_exclude_null_sender");
    return client_nets_parse("ratelimit_exclude_clients", text, pool, &out->clients, &out->nclients);
}

static int ratelimit_compile(petrel_module *m, const char *const *args, void **state, petrel_pool *pool,
                             const char **error)
{
    const char *err = check_settings(m, pool, NULL);
    struct rule *r = petrel_pool_zalloc(pool, sizeof(*r));
    if (err == NULL)
        err = parse_rule(args[0], r, pool);
    if (err) {
        *error = err;
        return -1;
    }
    *state = r;
    struct ratelimit_conf *conf = petrel_module_data(m);
    if (conf)
        remember_rule(conf, r);   /* after init: a role's own lists, not petreld -n's */
    return 0;
}

static int ratelimit_init(petrel_module *m, const char **error)
{
    petrel_pool *pool = petrel_pool_create(4096);
    struct ratelimit_conf *conf = petrel_pool_zalloc(pool, sizeof(*conf));
    conf->pool = pool;
    const char *err = check_settings(m, pool, conf);
    if (err) {
        *error = err;
        return -1;
    }
    conf->prefix = petrel_pool_strdup(pool, petrel_param_string(m, "ratelimit_redis_prefix"));
    const char *action = petrel_param_string(m, "ratelimit_default_action");
    conf->tempfail_when_down = action && strcasecmp(action, "tempfail") == 0;
    struct redis_config rcfg = redis_settings(m);
    if (uses_redis(&rcfg)) {
        conf->redis = redis_client_create(m, &rcfg, "ratelimit");
        if (conf->redis == NULL) {
            *error = "out of memory";
            return -1;
        }
    } else {
        char errbuf[300];
        conf->shm = ratelimit_shm_open(petrel_param_string(m, "ratelimit_state_file"),
                                       (size_t)petrel_param_int(m, "ratelimit_memory_slots"), errbuf, sizeof(errbuf));
        if (conf->shm == NULL) {
            *error = petrel_pool_printf(pool, "ratelimit_state_file: %s", errbuf);
            return -1;
        }
    }
    petrel_module_set_data(m, conf);
    return 0;
}

static void ratelimit_fini(petrel_module *m)
{
    struct ratelimit_conf *conf = petrel_module_data(m);
    if (conf == NULL)
        return;
    redis_client_free(conf->redis);
    ratelimit_shm_close(conf->shm);
    free(conf->rules);
    petrel_pool_destroy(conf->pool);
    petrel_module_set_data(m, NULL);
}

/* ------------------------------------------------------------------ */
/* the check                                                           */

/* Counter keys already counted as a message in this transaction. */
struct tx_counted {
    const char **keys;
    size_t n, cap;
};

static int counted_in_tx(petrel_session *s, const char *key, int remember)
{
    void **slot = petrel_tx_slot(s);
    if (slot == NULL)
        return 0;
    struct tx_counted *c = *slot;
    if (c == NULL) {
        c = petrel_pool_zalloc(petrel_tx_pool(s), sizeof(*c));
        *slot = c;
    }
    for (size_t i = 0; i < c->n; i++)
        if (strcmp(c->keys[i], key) == 0)
            return 1;
    if (remember) {
        if (c->n == c->cap) {
            size_t cap = c->cap ? c->cap * 2 : 4;
            const char **bigger = petrel_pool_zalloc(petrel_tx_pool(s), cap * sizeof(*bigger));
            if (c->n)
                memcpy(bigger, c->keys, c->n * sizeof(*bigger));
            c->keys = bigger;
            c->cap = cap;
        }
        c->keys[c->n++] = petrel_pool_strdup(petrel_tx_pool(s), key);
    }
    return 0;
}

static char *lower(petrel_pool *pool, const char *s)
{
    char *d = petrel_pool_strdup(pool, s);
    for (char *p = d; *p; p++)
        *p = (char)tolower((unsigned char)*p);
    return d;
}

static const char *reply_text(petrel_pool *pool, const struct rule *r, const char *what, const char *recipient)
{
    const char *text = petrel_pool_printf(pool, "Rate limit exceeded: at most %llu %s per %s for %s, try again later",
                                          r->limit, r->recipients ? "recipients" : "messages", r->window_text, what);
    if (recipient)
        text = petrel_pool_printf(pool, "<%s>: Recipient address rejected: %s", recipient, text);
    return strlen(text) > 400 ? petrel_pool_strndup(pool, text, 400) : text;
}

struct request {
    petrel_pending *pending;
    petrel_module *m;
    struct rule rule;
    char *what, *recipient;
};

static void free_request(struct request *q)
{
    free(q->what);
    free(q->recipient);
    free(q);
}

static void redis_answered(const redisReply *reply, const char *error, void *arg)
{
    struct request *q = arg;
    struct ratelimit_conf *conf = petrel_module_data(q->m);
    if (reply == NULL || reply->type != REDIS_REPLY_ARRAY || reply->elements != 2 ||
        reply->element[0]->type != REDIS_REPLY_INTEGER) {
        int tempfail = conf && conf->tempfail_when_down;
        petrel_module_log(q->m, PETREL_LOG_WARNING, "Redis %s (%s): %s not counted; %s",
                          error ? "failed" : "answered oddly", error ? error : "unexpected reply", q->what,
                          tempfail ? "deferred (ratelimit_default_action = tempfail)"
                                   : "not limited (ratelimit_default_action = continue)");
        if (tempfail)
            petrel_resume(q->pending, PETREL_TEMPFAIL, 451, "4.3.0", "Temporary rate limit failure, try again later");
        else
            petrel_resume(q->pending, PETREL_CONTINUE, 0, NULL, NULL);
    } else if (reply->element[0]->integer == 1) {
        petrel_resume(q->pending, PETREL_CONTINUE, 0, NULL, NULL);
    } else {
        petrel_pool *pool = petrel_pool_create(512);
        petrel_module_log(q->m, PETREL_LOG_INFO, "%s: over the limit of %llu %s per %s", q->what, q->rule.limit,
                          q->rule.recipients ? "recipients" : "messages", q->rule.window_text);
        petrel_resume(q->pending, PETREL_TEMPFAIL, 450, "4.7.1", reply_text(pool, &q->rule, q->what, q->recipient));
        petrel_pool_destroy(pool);
    }
    free_request(q);
}

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* The session's service's exclusions (main.cf's for one not in master.cf). */
static const struct exclusions *exclusions_of(const struct ratelimit_conf *conf, const char *service)
{
    for (size_t i = 0; service && i < conf->nservices; i++)
        if (strcmp(conf->services[i].service, service) == 0)
            return &conf->services[i];
    return &conf->main;
}

static petrel_verdict ratelimit_check(petrel_session *s, void *state)
{
    const struct rule *r = state;
    petrel_module *m = petrel_session_module(s);
    struct ratelimit_conf *conf = petrel_module_data(m);
    if (conf == NULL)
        return PETREL_CONTINUE;
    const char *client = petrel_client_addr(s);
    const char *sender = petrel_sender(s);
    const char *recipient = petrel_recipient(s);
    const struct exclusions *ex = exclusions_of(conf, petrel_service_name(s));
    if (ex->mynetworks && petrel_in_mynetworks(s))
        return PETREL_CONTINUE;
    if (ex->null_sender && sender && *sender == '\0')
        return PETREL_CONTINUE;
    if (client_nets_match(ex->clients, ex->nclients, client))
        return PETREL_CONTINUE;

    petrel_pool *pool = petrel_tx_pool(s) ? petrel_tx_pool(s) : petrel_session_pool(s);
    /* The key's values, in a fixed order; a part that does not apply
     * (no sender yet, no SASL login, no recipient) skips the limit. */
    char *values = petrel_pool_strdup(pool, "");
    char *what = petrel_pool_strdup(pool, "");
    if (r->keys & KEY_CLIENT) {
        values = petrel_pool_printf(pool, "%s|c=%s", values, client ? client : "");
        what = petrel_pool_printf(pool, "%s%sclient %s", what, *what ? ", " : "", client ? client : "");
    }
    if (r->keys & KEY_SENDER) {
        if (sender == NULL || *sender == '\0')
            return PETREL_CONTINUE;
        values = petrel_pool_printf(pool, "%s|s=%s", values, lower(pool, sender));
        what = petrel_pool_printf(pool, "%s%ssender %s", what, *what ? ", " : "", sender);
    }
    if (r->keys & KEY_SASL_USER) {
        const char *user = petrel_sasl_username(s);
        if (user == NULL)
            return PETREL_CONTINUE;
        values = petrel_pool_printf(pool, "%s|u=%s", values, user);
        what = petrel_pool_printf(pool, "%s%sSASL user %s", what, *what ? ", " : "", user);
    }
    if (r->keys & KEY_RECIPIENT_DOMAIN) {
        const char *at = recipient ? strrchr(recipient, '@') : NULL;
        if (at == NULL)
            return PETREL_CONTINUE;
        values = petrel_pool_printf(pool, "%s|d=%s", values, lower(pool, at + 1));
        what = petrel_pool_printf(pool, "%s%srecipient domain %s", what, *what ? ", " : "", at + 1);
    }
    char *key = petrel_pool_printf(pool, "%s%llu:%s%s", conf->prefix, r->window_ms,
                                   r->recipients ? "r" : "m", values);

    /* How many to add: a message once per transaction; recipients one at
     * a time at RCPT, or all of them at DATA. */
    unsigned long long add = 1;
    if (!r->recipients) {
        if (counted_in_tx(s, key, 0))
            return PETREL_CONTINUE;
    } else if (recipient == NULL) {
        add = petrel_recipient_count(s);
        if (add == 0)
            return PETREL_CONTINUE;
    }

    if (conf->shm) {
        uint64_t count;
        int evicted;
        int ok = ratelimit_shm_hit(conf->shm, key, r->window_ms, r->limit, add, now_ms(), &count, &evicted);
        if (evicted)
            petrel_log(s, PETREL_LOG_WARNING, "ratelimit_memory_slots is full: the least recently used key was "
                       "forgotten to make room (raise ratelimit_memory_slots)");
        if (ok) {
            if (!r->recipients)
                counted_in_tx(s, key, 1);
            return PETREL_CONTINUE;
        }
        petrel_log(s, PETREL_LOG_INFO, "%s: over the limit of %llu %s per %s", what, r->limit,
                   r->recipients ? "recipients" : "messages", r->window_text);
        petrel_set_reply(s, 450, "4.7.1", reply_text(pool, r, what, recipient));
        return PETREL_TEMPFAIL;
    }

    /* Redis. The message counts for this transaction once asked, even if
     * Redis then fails: asking again per recipient would not help. */
    if (!r->recipients)
        counted_in_tx(s, key, 1);
    struct request *q = calloc(1, sizeof(*q));
    if (q == NULL)
        return PETREL_CONTINUE;
    q->m = m;
    q->rule = *r;
    q->what = strdup(what);
    q->recipient = recipient ? strdup(recipient) : NULL;
    q->pending = q->what ? petrel_suspend(s) : NULL;
    if (q->pending == NULL) {
        free_request(q);
        return PETREL_CONTINUE;
    }
    char limit[32], addtext[32], window[32], buckets[16];
    snprintf(limit, sizeof(limit), "%llu", r->limit);
    snprintf(addtext, sizeof(addtext), "%llu", add);
    snprintf(window, sizeof(window), "%llu", r->window_ms);
    snprintf(buckets, sizeof(buckets), "%d", RATELIMIT_BUCKETS);
    const char *argv[] = { "EVAL", ratelimit_script, "1", key, limit, addtext, window, buckets };
    redis_command(conf->redis, redis_answered, q, 8, argv, NULL);
    return PETREL_PENDING;
}

/* ------------------------------------------------------------------ */
/* petrelctl ratelimit show KEY                                        */

/* The rules a command can report on: those the restrictions of this
 * process compiled after init (every smtpd worker compiles all of its
 * services' lists), each once. */
static void remember_rule(struct ratelimit_conf *conf, const struct rule *r)
{
    for (size_t i = 0; i < conf->nrules; i++) {
        const struct rule *k = &conf->rules[i];
        if (k->limit == r->limit && k->window_ms == r->window_ms && k->keys == r->keys &&
            k->recipients == r->recipients)
            return;
    }
    if (conf->nrules == conf->caprules) {
        size_t cap = conf->caprules ? conf->caprules * 2 : 8;
        struct rule *bigger = realloc(conf->rules, cap * sizeof(*bigger));
        if (bigger == NULL)
            return;
        conf->rules = bigger;
        conf->caprules = cap;
    }
    conf->rules[conf->nrules++] = *r;
}

static const char *rule_text(petrel_pool *pool, const struct rule *r)
{
    return petrel_pool_printf(pool, "%llu/%s%s%s%s%s %s", r->limit, r->window_text,
                              r->keys & KEY_CLIENT ? " client" : "", r->keys & KEY_SENDER ? " sender" : "",
                              r->keys & KEY_SASL_USER ? " sasl_user" : "",
                              r->keys & KEY_RECIPIENT_DOMAIN ? " recipient_domain" : "",
                              r->recipients ? "recipients" : "messages");
}

/* The counts of KEYS in their windows, read only. ARGV: buckets, then
 * each key's window (ms). The same arithmetic as ratelimit_script. */
static const char show_script[] =
    "local t = redis.call('TIME')\n"
    "local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)\n"
    "local buckets = tonumber(ARGV[1]) local out = {}\n"
    "for i, k in ipairs(KEYS) do\n"
    "  local window = tonumber(ARGV[i + 1])\n"
    "  local granule = math.max(1, math.floor(window / buckets))\n"
    "  local cur = math.floor(now / granule)\n"
    "  local h = redis.call('HGETALL', k) local sum = 0\n"
    "  for j = 1, #h, 2 do if tonumber(h[j]) >= cur - buckets then sum = sum + tonumber(h[j + 1]) end end\n"
    "  table.insert(out, sum)\n"
    "end\n"
    "return out\n";

struct show {
    petrel_command_request *r;
    petrel_pool *pool;
    const char *what;                 /* "client 127.0.0.5" */
    const char *key_text;             /* as given */
    struct rule *rules;               /* those that count by exactly these keys */
    size_t n;
};

static void show_print(struct show *s, const unsigned long long *counts)
{
    int json = petrel_command_json(s->r);
    if (json) {
        petrel_command_print(s->r, "{\"key\": ");
        petrel_command_print_json_string(s->r, s->key_text);
        petrel_command_print(s->r, ", \"rules\": [");
    }
    for (size_t i = 0; i < s->n; i++) {
        const struct rule *r = &s->rules[i];
        if (json) {
            petrel_command_print(s->r, "%s{\"rule\": ", i ? ", " : "");
            petrel_command_print_json_string(s->r, rule_text(s->pool, r));
            petrel_command_print(s->r, ", \"limit\": %llu, \"window_seconds\": %llu, \"counting\": \"%s\", "
                                 "\"count\": %llu, \"over\": %s}", r->limit, r->window_ms / 1000,
                                 r->recipients ? "recipients" : "messages", counts[i],
                                 counts[i] >= r->limit ? "true" : "false");
        } else {
            petrel_command_print(s->r, "check_rate_limit %s: %llu of %llu %s in the last %s for %s%s\n",
                                 rule_text(s->pool, r), counts[i], r->limit, r->recipients ? "recipients" : "messages",
                                 r->window_text, s->what, counts[i] >= r->limit ? " (at the limit: refused)" : "");
        }
    }
    if (json)
        petrel_command_print(s->r, "]}");
    petrel_command_done(s->r, PETREL_COMMAND_OK);
}

static void show_free(struct show *s)
{
    petrel_pool_destroy(s->pool);
    free(s);
}

static void show_answered(const redisReply *reply, const char *error, void *arg)
{
    struct show *s = arg;
    if (reply == NULL || reply->type != REDIS_REPLY_ARRAY || reply->elements != s->n) {
        petrel_command_print(s->r, "ratelimit: Redis: %s", error ? error : "unexpected reply");
        petrel_command_done(s->r, PETREL_COMMAND_FAILED);
        show_free(s);
        return;
    }
    unsigned long long *counts = petrel_pool_zalloc(s->pool, (s->n + 1) * sizeof(*counts));
    for (size_t i = 0; i < s->n; i++)
        counts[i] = reply->element[i]->type == REDIS_REPLY_INTEGER ? (unsigned long long)reply->element[i]->integer : 0;
    show_print(s, counts);
    show_free(s);
}

/* KEY: part=value[,part=value...], parts client, sender, sasl_user,
 * recipient_domain; or a bare address (client) or user@domain (sender).
 * Sets *keys and the counter's values in the check's order and form. */
static const char *parse_show_key(const char *text, petrel_pool *pool, unsigned *keys, const char **values,
                                  const char **what)
{
    const char *parts[4] = { NULL, NULL, NULL, NULL };
    char *copy = petrel_pool_strdup(pool, text);
    char *save = NULL;
    *keys = 0;
    for (char *item = strtok_r(copy, ",", &save); item; item = strtok_r(NULL, ",", &save)) {
        char *eq = strchr(item, '=');
        int idx;
        const char *value = eq ? eq + 1 : item;
        if (eq) {
            *eq = '\0';
            idx = strcmp(item, "client") == 0 ? 0 : strcmp(item, "sender") == 0 ? 1
                : strcmp(item, "sasl_user") == 0 ? 2 : strcmp(item, "recipient_domain") == 0 ? 3 : -1;
            if (idx < 0)
                return petrel_pool_printf(pool, "\"%s\": keys are client, sender, sasl_user and recipient_domain", item);
        } else {
            idx = strchr(item, '@') ? 1 : 0;
        }
        if (*value == '\0' || parts[idx])
            return petrel_pool_printf(pool, "\"%s\": give each key once, with a value", text);
        parts[idx] = value;
        *keys |= 1u << idx;   /* KEY_CLIENT 1, KEY_SENDER 2, KEY_SASL_USER 4, KEY_RECIPIENT_DOMAIN 8 */
    }
    if (*keys == 0)
        return "a key is expected, e.g. client=192.0.2.1";
    const char *v = "", *w = "";
    if (parts[0]) {
        unsigned char a[16];
        char addr[INET6_ADDRSTRLEN];
        if (inet_pton(AF_INET, parts[0], a) == 1)
            inet_ntop(AF_INET, a, addr, sizeof(addr));
        else if (inet_pton(AF_INET6, parts[0], a) == 1)
            inet_ntop(AF_INET6, a, addr, sizeof(addr));
        else
            return petrel_pool_printf(pool, "\"%s\" is not an IPv4 or IPv6 address (nor user@domain)", parts[0]);
        v = petrel_pool_printf(pool, "|c=%s", addr);
        w = petrel_pool_printf(pool, "client %s", addr);
    }
    if (parts[1]) {
        v = petrel_pool_printf(pool, "%s|s=%s", v, lower(pool, parts[1]));
        w = petrel_pool_printf(pool, "%s%ssender %s", w, *w ? ", " : "", parts[1]);
    }
    if (parts[2]) {
        v = petrel_pool_printf(pool, "%s|u=%s", v, parts[2]);
        w = petrel_pool_printf(pool, "%s%sSASL user %s", w, *w ? ", " : "", parts[2]);
    }
    if (parts[3]) {
        v = petrel_pool_printf(pool, "%s|d=%s", v, lower(pool, parts[3]));
        w = petrel_pool_printf(pool, "%s%srecipient domain %s", w, *w ? ", " : "", parts[3]);
    }
    *values = v;
    *what = w;
    return NULL;
}

static void cmd_show(petrel_command_request *r, int argc, const char *const *argv)
{
    (void)argc;
    struct ratelimit_conf *conf = petrel_module_data(petrel_command_module(r));
    if (conf == NULL) {
        petrel_command_print(r, "ratelimit: the module is not initialised");
        petrel_command_done(r, PETREL_COMMAND_FAILED);
        return;
    }
    struct show *s = calloc(1, sizeof(*s));
    if (s == NULL) {
        petrel_command_print(r, "ratelimit: out of memory");
        petrel_command_done(r, PETREL_COMMAND_FAILED);
        return;
    }
    s->r = r;
    s->pool = petrel_pool_create(1024);
    s->key_text = petrel_pool_strdup(s->pool, argv[0]);
    unsigned keys;
    const char *values = "";
    const char *err = parse_show_key(argv[0], s->pool, &keys, &values, &s->what);
    if (err) {
        petrel_command_print(r, "ratelimit show: %s", err);
        petrel_command_done(r, PETREL_COMMAND_USAGE);
        show_free(s);
        return;
    }
    s->rules = petrel_pool_zalloc(s->pool, (conf->nrules + 1) * sizeof(*s->rules));
    for (size_t i = 0; i < conf->nrules; i++)
        if (conf->rules[i].keys == keys)
            s->rules[s->n++] = conf->rules[i];
    if (s->n == 0) {
        if (conf->nrules == 0) {
            petrel_command_print(r, "ratelimit: no check_rate_limit rule is in use (smtpd_*_restrictions)");
        } else {
            petrel_command_print(r, "ratelimit: no check_rate_limit rule counts by exactly %s; the rules are:",
                                 s->what);
            for (size_t i = 0; i < conf->nrules; i++)
                petrel_command_print(r, " %s%s", i ? "; " : "", rule_text(s->pool, &conf->rules[i]));
        }
        petrel_command_done(r, PETREL_COMMAND_FAILED);
        show_free(s);
        return;
    }
    const char **counter_keys = petrel_pool_zalloc(s->pool, (s->n + 1) * sizeof(*counter_keys));
    for (size_t i = 0; i < s->n; i++)
        counter_keys[i] = petrel_pool_printf(s->pool, "%s%llu:%s%s", conf->prefix, s->rules[i].window_ms,
                                             s->rules[i].recipients ? "r" : "m", values);
    if (conf->shm) {
        unsigned long long *counts = petrel_pool_zalloc(s->pool, (s->n + 1) * sizeof(*counts));
        for (size_t i = 0; i < s->n; i++)
            counts[i] = ratelimit_shm_peek(conf->shm, counter_keys[i], s->rules[i].window_ms, now_ms());
        show_print(s, counts);
        show_free(s);
        return;
    }
    const char **cmd = petrel_pool_zalloc(s->pool, (2 * s->n + 5) * sizeof(*cmd));
    size_t a = 0;
    cmd[a++] = "EVAL";
    cmd[a++] = show_script;
    cmd[a++] = petrel_pool_printf(s->pool, "%zu", s->n);
    for (size_t i = 0; i < s->n; i++)
        cmd[a++] = counter_keys[i];
    cmd[a++] = petrel_pool_printf(s->pool, "%d", RATELIMIT_BUCKETS);
    for (size_t i = 0; i < s->n; i++)
        cmd[a++] = petrel_pool_printf(s->pool, "%llu", s->rules[i].window_ms);
    redis_command(conf->redis, show_answered, s, (int)a, cmd, NULL);
}

static const petrel_command ratelimit_commands[] = {
    { PETREL_COMMAND_INIT, .name = "show", .usage = "KEY", .min_args = 1, .max_args = 1,
      .flags = PETREL_COMMAND_JSON, .run = cmd_show,
      .help = "the counts of the check_rate_limit rules for KEY: client=ADDR, sender=ADDR, sasl_user=LOGIN, "
              "recipient_domain=DOMAIN (joined with commas for a rule that combines them)" },
    { .name = NULL },
};

static const petrel_restriction ratelimit_restrictions[] = {
    { PETREL_RESTRICTION_INIT, .name = "check_rate_limit", .nargs = 1,
      .compile = ratelimit_compile, .check = ratelimit_check },
    { .name = NULL },
};

const petrel_module_desc petrel_module_descriptor = {
    PETREL_MODULE_INIT,
    .name = "ratelimit",
    .version = "1.0",
    .description = "check_rate_limit: messages or recipients per sliding window, in Redis or shared memory",
    .params = ratelimit_params,
    .init = ratelimit_init,
    .fini = ratelimit_fini,
    .restrictions = ratelimit_restrictions,
    .commands = ratelimit_commands,
    .hook_timeout_ms = 15000,
};
