/*
 * modules/greylist: check_greylist, triplet greylisting as postgrey does
 * it, with its state in Redis so that every node of a cluster shares it.
 *
 * The triplet is (client network, sender, recipient): the client's /24
 * (IPv4) or /64 (IPv6), the sender lower-cased with postgrey's
 * substitutions (BATV prvs= tags and +extensions stripped, VERP numbers
 * made '#') plus SRS0/SRS1 rewritten to the original sender, and the
 * recipient. A first attempt is answered 450 4.7.1 with the seconds left
 * before a retry is accepted; a retry after greylist_delay (and within
 * greylist_retry_window) passes, and the triplet stays known for
 * greylist_max_age. A client whose triplets passed
 * greylist_auto_whitelist_count times (one per hour counts, as postgrey's
 * --auto-whitelist-clients) is no longer greylisted.
 *
 * One Lua script does each decision atomically on the Redis server, with
 * the server's clock (TIME), so that nodes with skewed clocks agree.
 *
 * Redis down, slow or failing over: greylist_default_action applies
 * (continue, that is accept, by default; or tempfail) and is logged; the
 * client library (modules/common/redis_client.c) reconnects in the
 * background, through Sentinel when configured, and greylisting resumes
 * by itself.
 *
 * The policy (greylist_delay, _retry_window, _auto_whitelist_count, the
 * whitelists and the text) is per master.cf service (.per_service): init
 * makes main.cf's and one per hook service, sharing the Redis client, and
 * a check uses its session's service's. greylist_max_age and the Redis
 * settings are main.cf's only (the state they describe is shared).
 *
 * This file holds the configuration and the restriction; petrelctl
 * greylist's commands are in greylist_commands.c (main.cf's policy).
 */
#include <arpa/inet.h>
#include <ctype.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <petrel/plugin.h>

#include "redis_client.h"
#include "greylist_int.h"
#include "list_items.h"

static const petrel_param greylist_params[] = {
    { PETREL_PARAM_INIT, .name = "greylist_redis", .type = PETREL_PARAM_STRING, .default_value = "127.0.0.1:6379",
      .help = "Redis server: host:port or unix:/path" },
    { PETREL_PARAM_INIT, .name = "greylist_redis_user", .type = PETREL_PARAM_STRING, .default_value = "",
      .help = "ACL user name (Redis 6 and later), with the password" },
    { PETREL_PARAM_INIT, .name = "greylist_redis_password", .type = PETREL_PARAM_STRING, .default_value = "",
      .help = "password (AUTH)" },
    { PETREL_PARAM_INIT, .name = "greylist_redis_database", .type = PETREL_PARAM_INT, .default_value = "0",
      .help = "database number (SELECT)" },
    { PETREL_PARAM_INIT, .name = "greylist_redis_sentinels", .type = PETREL_PARAM_LIST, .default_value = "",
      .help = "Sentinels (host:port, ...) that name the master; greylist_redis is then unused" },
    { PETREL_PARAM_INIT, .name = "greylist_redis_master_name", .type = PETREL_PARAM_STRING, .default_value = "mymaster",
      .help = "the master's name in Sentinel" },
    { PETREL_PARAM_INIT, .name = "greylist_redis_timeout", .type = PETREL_PARAM_TIME, .default_value = "2s",
      .help = "deadline of each Redis command and connection attempt" },
    { PETREL_PARAM_INIT, .name = "greylist_redis_prefix", .type = PETREL_PARAM_STRING,
      .default_value = "petrel:greylist:",
      .help = "prefix of the module's Redis keys" },
    { PETREL_PARAM_INIT, .name = "greylist_delay", .type = PETREL_PARAM_TIME, .default_value = "5m",
      .help = "how long a new triplet is refused", .per_service = 1 },
    { PETREL_PARAM_INIT, .name = "greylist_retry_window", .type = PETREL_PARAM_TIME, .default_value = "2d",
      .help = "how long after its first attempt a triplet may pass", .per_service = 1 },
    { PETREL_PARAM_INIT, .name = "greylist_max_age", .type = PETREL_PARAM_TIME, .default_value = "35d",
      .help = "how long a passed triplet or a client is remembered" },
    { PETREL_PARAM_INIT, .name = "greylist_auto_whitelist_count", .type = PETREL_PARAM_INT, .default_value = "5",
      .help = "passed triplets after which a client is no longer greylisted (0: never)", .per_service = 1 },
    { PETREL_PARAM_INIT, .name = "greylist_whitelist_clients", .type = PETREL_PARAM_LIST, .default_value = "",
      .help = "client addresses or networks never greylisted", .per_service = 1 },
    { PETREL_PARAM_INIT, .name = "greylist_whitelist_recipients", .type = PETREL_PARAM_LIST, .default_value = "",
      .help = "recipients never greylisted: user@domain, user@, @domain or domain", .per_service = 1 },
    { PETREL_PARAM_INIT, .name = "greylist_text", .type = PETREL_PARAM_STRING,
      .default_value = "Greylisted, try again in %s seconds",
      .help = "reply text: %s is the seconds left, %r the recipient's domain (postgrey's)", .per_service = 1 },
    { .name = NULL },
};

/* The decision. KEYS: the triplet, the client's auto-whitelist entry, the
 * client's whitelist entry (petrelctl greylist whitelist).
 * ARGV: delay, retry window, max age, auto-whitelist count.
 * Returns {"pass"|"greylist"|"awl"|"whitelist", seconds left, 1 when new}. */
static const char greylist_script[] =
    "if redis.call('EXISTS', KEYS[3]) == 1 then return {'whitelist', 0, 0} end\n"
    "local t = redis.call('TIME') local now = tonumber(t[1])\n"
    "local delay, retry, max_age, awl = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])\n"
    "if awl > 0 then\n"
    "  local c = redis.call('HMGET', KEYS[2], 'count', 'last')\n"
    "  local count = tonumber(c[1]) or 0\n"
    "  if count >= awl then\n"
    "    if now >= (tonumber(c[2]) or 0) + 3600 then redis.call('HSET', KEYS[2], 'count', count + 1, 'last', now) end\n"
    "    redis.call('EXPIRE', KEYS[2], max_age)\n"
    "    return {'awl', 0, 0}\n"
    "  end\n"
    "end\n"
    "local v = redis.call('HMGET', KEYS[1], 'first', 'last')\n"
    "local first, last = tonumber(v[1]), tonumber(v[2])\n"
    "local passed_before = false\n"
    "local known = first and last\n"
    "if known then\n"
    "  if last - first >= delay then passed_before = true\n"
    "  elseif now - first > retry then first = now end\n"
    "  if first > now then first = now end\n"
    "else first = now end\n"
    "redis.call('HSET', KEYS[1], 'first', first, 'last', now)\n"
    "local left = delay - (now - first)\n"
    "if left > 0 then\n"
    "  redis.call('EXPIRE', KEYS[1], retry + delay)\n"
    "  return {'greylist', left, known and 0 or 1}\n"
    "end\n"
    "redis.call('EXPIRE', KEYS[1], max_age)\n"
    "if awl > 0 and not passed_before then\n"
    "  local c = redis.call('HMGET', KEYS[2], 'count', 'last')\n"
    "  local cl = tonumber(c[2])\n"
    "  if not cl or now >= cl + 3600 then\n"
    "    redis.call('HSET', KEYS[2], 'count', (tonumber(c[1]) or 0) + 1, 'last', now)\n"
    "    redis.call('EXPIRE', KEYS[2], max_age)\n"
    "  end\n"
    "end\n"
    "return {'pass', 0, 0}\n";

/* ------------------------------------------------------------------ */
/* configuration                                                       */

static struct redis_config redis_settings(petrel_module *m)
{
    long long timeout = petrel_param_int(m, "greylist_redis_timeout");
    struct redis_config cfg = {
        .server = petrel_param_string(m, "greylist_redis"),
        .user = petrel_param_string(m, "greylist_redis_user"),
        .password = petrel_param_string(m, "greylist_redis_password"),
        .database = (int)petrel_param_int(m, "greylist_redis_database"),
        .sentinels = petrel_param_string(m, "greylist_redis_sentinels"),
        .master_name = petrel_param_string(m, "greylist_redis_master_name"),
        .timeout_ms = (unsigned)((timeout > 0 && timeout < 3600 ? timeout : 2) * 1000),
    };
    return cfg;
}

/* A parameter as the service (NULL: main.cf) sees it. */
static const char *param_string(petrel_module *m, const char *service, const char *name)
{
    return service ? petrel_service_config_string(m, service, name) : petrel_param_string(m, name);
}

static long long param_int(petrel_module *m, const char *service, const char *name)
{
    return service ? petrel_service_config_int(m, service, name) : petrel_param_int(m, name);
}

/* The per-service settings of one service (NULL: main.cf) into pol. */
static const char *policy_settings(petrel_module *m, const char *service, petrel_pool *pool,
                                   struct greylist_conf *pol)
{
    if (param_int(m, service, "greylist_auto_whitelist_count") < 0)
        return "greylist_auto_whitelist_count: 0 or more";
    struct client_net *clients;
    size_t nclients;
    const char *err = client_nets_parse("greylist_whitelist_clients",
                                        param_string(m, service, "greylist_whitelist_clients"), pool, &clients,
                                        &nclients);
    if (err)
        return err;
    const char *text = param_string(m, service, "greylist_text");
    for (const char *p = text ? text : ""; *p; p++)
        if ((unsigned char)*p < 0x20 || *p == 0x7f)
            return "greylist_text: control characters are not allowed";
    pol->clients = clients;
    pol->nclients = nclients;
    pol->recipients = list_items_split(param_string(m, service, "greylist_whitelist_recipients"), &pol->nrecipients,
                                       pool);
    for (size_t i = 0; i < pol->nrecipients; i++) {
        char *r = (char *)pol->recipients[i];
        for (; *r; r++)
            *r = (char)tolower((unsigned char)*r);
    }
    pol->text = petrel_pool_strdup(pool, text ? text : "");
    pol->delay = param_int(m, service, "greylist_delay");
    pol->retry_window = param_int(m, service, "greylist_retry_window");
    pol->max_age = petrel_param_int(m, "greylist_max_age");
    pol->awl_count = param_int(m, service, "greylist_auto_whitelist_count");
    return NULL;
}

/* Every setting that can be wrong, for compile (petreld -n) and init; with
 * conf, main.cf's policy and each service's are kept. */
static const char *check_settings(petrel_module *m, petrel_pool *pool, struct greylist_conf *conf)
{
    struct redis_config rcfg = redis_settings(m);
    const char *err = redis_config_check(&rcfg, pool);
    if (err)
        return petrel_pool_printf(pool, "%s: %s",
                                  rcfg.sentinels && *rcfg.sentinels ? "greylist_redis_sentinels" : "greylist_redis",
                                  err);
    if (petrel_param_int(m, "greylist_redis_database") < 0)
        return "greylist_redis_database: a database number is 0 or more";
    struct greylist_conf main_pol;
    memset(&main_pol, 0, sizeof(main_pol));
    if ((err = policy_settings(m, NULL, pool, &main_pol)) != NULL)
        return err;
    size_t n = petrel_service_count(m);
    struct greylist_conf *pols = petrel_pool_zalloc(pool, (n ? n : 1) * sizeof(*pols));
    const char **names = petrel_pool_zalloc(pool, (n ? n : 1) * sizeof(*names));
    for (size_t i = 0; i < n; i++) {
        names[i] = petrel_service_at(m, i);
        if ((err = policy_settings(m, names[i], pool, &pols[i])) != NULL)
            return petrel_pool_printf(pool, "master.cf service %s: %s", names[i], err);
    }
    if (conf) {
        conf->clients = main_pol.clients;
        conf->nclients = main_pol.nclients;
        conf->recipients = main_pol.recipients;
        conf->nrecipients = main_pol.nrecipients;
        conf->text = main_pol.text;
        conf->delay = main_pol.delay;
        conf->retry_window = main_pol.retry_window;
        conf->max_age = main_pol.max_age;
        conf->awl_count = main_pol.awl_count;
        conf->services = pols;
        conf->service_names = names;
        conf->nservices = n;
    }
    return NULL;
}

static int greylist_compile(petrel_module *m, const char *const *args, void **state, petrel_pool *pool,
                            const char **error)
{
    const char *err = check_settings(m, pool, NULL);
    if (err) {
        *error = err;
        return -1;
    }
    *state = NULL;
    return 0;
}

static int greylist_init(petrel_module *m, const char **error)
{
    petrel_pool *pool = petrel_pool_create(4096);
    struct greylist_conf *conf = petrel_pool_zalloc(pool, sizeof(*conf));
    conf->pool = pool;
    const char *err = check_settings(m, pool, conf);
    if (err) {
        *error = err;
        return -1;
    }
    conf->prefix = petrel_pool_strdup(pool, petrel_param_string(m, "greylist_redis_prefix"));
    const char *action = petrel_param_string(m, "greylist_default_action");
    conf->tempfail_when_down = action && strcasecmp(action, "tempfail") == 0;
    struct redis_config rcfg = redis_settings(m);
    conf->redis = redis_client_create(m, &rcfg, "greylist");
    if (conf->redis == NULL) {
        *error = "out of memory";
        return -1;
    }
    petrel_module_set_data(m, conf);
    return 0;
}

static void greylist_fini(petrel_module *m)
{
    struct greylist_conf *conf = petrel_module_data(m);
    if (conf == NULL)
        return;
    redis_client_free(conf->redis);
    petrel_pool_destroy(conf->pool);
    petrel_module_set_data(m, NULL);
}

/* ------------------------------------------------------------------ */
/* the triplet                                                         */

/* The client's network: a.b.c.0/24 or the first 64 bits /64. */
char *greylist_client_network(const char *addr, petrel_pool *pool)
{
    unsigned char a[16];
    char text[INET6_ADDRSTRLEN];
    if (inet_pton(AF_INET, addr, a) == 1) {
        a[3] = 0;
        inet_ntop(AF_INET, a, text, sizeof(text));
        return petrel_pool_printf(pool, "%s/24", text);
    }
    if (inet_pton(AF_INET6, addr, a) == 1) {
        memset(a + 8, 0, 8);
        inet_ntop(AF_INET6, a, text, sizeof(text));
        return petrel_pool_printf(pool, "%s/64", text);
    }
    return petrel_pool_strdup(pool, addr);
}

/* The sender as greylisting sees it: lower case; SRS0=HH=TT=domain=user@x
 * and SRS1=HH=x==HH=TT=domain=user@y as user@domain; BATV's prvs= tag
 * dropped; +extension dropped; runs of digits that stand alone (VERP)
 * made '#', as postgrey does. */
char *greylist_normalise_sender(const char *sender, petrel_pool *pool)
{
    char *s = petrel_pool_strdup(pool, sender ? sender : "");
    for (char *p = s; *p; p++)
        *p = (char)tolower((unsigned char)*p);
    char *at = strrchr(s, '@');
    if (at == NULL)
        return s;
    *at = '\0';
    char *user = s, *domain = at + 1;
    if (strncmp(user, "srs0=", 5) == 0 || strncmp(user, "srs1=", 5) == 0) {
        /* The last two '='-separated fields are the original domain and user. */
        char *last = strrchr(user, '=');
        if (last && last > user + 4) {
            *last = '\0';
            char *prev = strrchr(user, '=');
            if (prev && prev >= user + 4 && prev[1] && last[1]) {
                domain = prev + 1;
                user = last + 1;
            } else {
                *last = '=';
            }
        }
    }
    if (strncmp(user, "prvs=", 5) == 0 || strncmp(user, "msprvs1=", 8) == 0) {
        /* prvs=tag=user (RFC draft) or, seen too, prvs=user=tag. */
        char *first = strchr(user, '=');
        char *second = first ? strchr(first + 1, '=') : NULL;
        if (second && strchr(second + 1, '=') == NULL) {
            *second = '\0';
            const char *a = first + 1, *b = second + 1;
            size_t la = strlen(a);
            int a_tag = la == 10 && strspn(a, "0123456789abcdef") == 10;
            user = a_tag || !(strlen(b) == 10 && strspn(b, "0123456789abcdef") == 10) ? (char *)b : (char *)a;
        }
    }
    char *plus = strchr(user, '+');
    if (plus)
        *plus = '\0';
    /* VERP: numbers between word boundaries become '#'. */
    size_t ulen = strlen(user);
    char *out = petrel_pool_alloc(pool, ulen + strlen(domain) + 2);
    size_t o = 0;
    for (size_t i = 0; i < ulen;) {
        int boundary_before = i == 0 || !(isalnum((unsigned char)user[i - 1]) || user[i - 1] == '_');
        if (isdigit((unsigned char)user[i]) && boundary_before) {
            size_t j = i;
            while (j < ulen && isdigit((unsigned char)user[j]))
                j++;
            if (j == ulen || !(isalnum((unsigned char)user[j]) || user[j] == '_')) {
                out[o++] = '#';
                i = j;
                continue;
            }
            while (i < j)
                out[o++] = user[i++];
            continue;
        }
        out[o++] = user[i++];
    }
    out[o++] = '@';
    strcpy(out + o, domain);
    return out;
}

static int recipient_whitelisted(const struct greylist_conf *conf, const char *rcpt)
{
    const char *at = strrchr(rcpt, '@');
    size_t local_len = at ? (size_t)(at - rcpt) : strlen(rcpt);
    const char *domain = at ? at + 1 : "";
    for (size_t i = 0; i < conf->nrecipients; i++) {
        const char *w = conf->recipients[i];
        const char *wat = strrchr(w, '@');
        if (wat == NULL) {
            if (strcasecmp(w, domain) == 0)
                return 1;                                     /* domain */
        } else if (wat == w) {
            if (strcasecmp(w + 1, domain) == 0)
                return 1;                                     /* @domain */
        } else if (wat[1] == '\0') {
            if ((size_t)(wat - w) == local_len && strncasecmp(w, rcpt, local_len) == 0)
                return 1;                                     /* user@ */
        } else if (strcasecmp(w, rcpt) == 0) {
            return 1;                                         /* user@domain */
        }
    }
    return 0;
}

/* ------------------------------------------------------------------ */
/* the check                                                           */

struct request {
    petrel_pending *pending;
    petrel_module *m;
    const struct greylist_conf *policy;   /* the session's service's (lives with the module data) */
    char *recipient;                  /* for the reply */
    char *summary;                    /* "client=..., sender=..., recipient=..." for the log */
};

static void free_request(struct request *q)
{
    free(q->recipient);
    free(q->summary);
    free(q);
}

static const char *domain_of(const char *address)
{
    const char *at = strrchr(address, '@');
    return at ? at + 1 : address;
}

/* postgrey's text: %s the seconds left, %r the recipient's domain. */
static char *reply_text(const struct greylist_conf *conf, const char *recipient, long long left)
{
    char seconds[32];
    snprintf(seconds, sizeof(seconds), "%lld", left);
    const char *domain = domain_of(recipient);
    size_t cap = strlen(conf->text) + 64 + strlen(domain) * 4 + strlen(recipient);
    char *body = malloc(cap);
    if (body == NULL)
        return NULL;
    size_t o = snprintf(body, cap, "<%s>: Recipient address rejected: ", recipient);
    for (const char *p = conf->text; *p && o + 1 < cap; p++) {
        const char *insert = NULL;
        if (p[0] == '%' && p[1] == 's')
            insert = seconds;
        else if (p[0] == '%' && p[1] == 'r')
            insert = domain;
        if (insert) {
            size_t n = strlen(insert);
            if (o + n + 1 >= cap)
                break;
            memcpy(body + o, insert, n);
            o += n;
            p++;
            continue;
        }
        body[o++] = *p;
    }
    body[o] = '\0';
    if (o > 400)
        body[400] = '\0';
    return body;
}

static void decided(const redisReply *reply, const char *error, void *arg)
{
    struct request *q = arg;
    struct greylist_conf *conf = petrel_module_data(q->m);
    if (reply == NULL || reply->type != REDIS_REPLY_ARRAY || reply->elements != 3 ||
        reply->element[0]->type != REDIS_REPLY_STRING || reply->element[1]->type != REDIS_REPLY_INTEGER) {
        int tempfail = conf && conf->tempfail_when_down;
        petrel_module_log(q->m, PETREL_LOG_WARNING, "Redis %s (%s): %s; %s", error ? "failed" : "answered oddly",
                          error ? error : "unexpected reply", q->summary,
                          tempfail ? "deferred (greylist_default_action = tempfail)"
                                   : "not greylisted (greylist_default_action = continue)");
        if (tempfail)
            petrel_resume(q->pending, PETREL_TEMPFAIL, 451, "4.3.0", "Temporary greylisting failure, try again later");
        else
            petrel_resume(q->pending, PETREL_CONTINUE, 0, NULL, NULL);
        free_request(q);
        return;
    }
    const char *action = reply->element[0]->str;
    long long left = reply->element[1]->integer;
    int is_new = reply->element[2]->type == REDIS_REPLY_INTEGER && reply->element[2]->integer == 1;
    if (strcmp(action, "greylist") == 0) {
        petrel_module_log(q->m, PETREL_LOG_INFO, "action=greylist, reason=%s, %s",
                          is_new ? "new" : "early-retry", q->summary);
        char *text = reply_text(q->policy, q->recipient, left);
        petrel_resume(q->pending, PETREL_TEMPFAIL, 450, "4.7.1", text ? text : "Greylisted");
        free(text);
    } else {
        petrel_module_log(q->m, PETREL_LOG_INFO, "action=pass, reason=%s, %s",
                          strcmp(action, "awl") == 0         ? "client AWL"
                          : strcmp(action, "whitelist") == 0 ? "client whitelisted (petrelctl)"
                                                             : "triplet found",
                          q->summary);
        petrel_resume(q->pending, PETREL_CONTINUE, 0, NULL, NULL);
    }
    free_request(q);
}

/* The policy of the session's service (main.cf's for one not in master.cf). */
static const struct greylist_conf *policy_of(const struct greylist_conf *conf, const char *service)
{
    for (size_t i = 0; service && i < conf->nservices; i++)
        if (strcmp(conf->service_names[i], service) == 0)
            return &conf->services[i];
    return conf;
}

static petrel_verdict greylist_check(petrel_session *s, void *state)
{
    (void)state;
    petrel_module *m = petrel_session_module(s);
    struct greylist_conf *conf = petrel_module_data(m);
    const char *rcpt = petrel_recipient(s);
    const char *client = petrel_client_addr(s);
    if (conf == NULL || rcpt == NULL || client == NULL)
        return PETREL_CONTINUE;   /* outside the recipient restrictions there is no triplet */
    const struct greylist_conf *pol = policy_of(conf, petrel_service_name(s));
    if (client_nets_match(pol->clients, pol->nclients, client))
        return PETREL_CONTINUE;
    if (recipient_whitelisted(pol, rcpt))
        return PETREL_CONTINUE;
    const char *sender = petrel_sender(s);
    petrel_pool *pool = petrel_tx_pool(s) ? petrel_tx_pool(s) : petrel_session_pool(s);
    char *rcpt_lc = petrel_pool_strdup(pool, rcpt);
    for (char *p = rcpt_lc; *p; p++)
        *p = (char)tolower((unsigned char)*p);
    char *net = greylist_client_network(client, pool);
    char *triplet_key = petrel_pool_printf(pool, "%st:%s/%s/%s", conf->prefix, net,
                                           greylist_normalise_sender(sender, pool), rcpt_lc);
    char *client_key = petrel_pool_printf(pool, "%sc:%s", conf->prefix, client);
    char *whitelist_key = petrel_pool_printf(pool, "%sw:%s", conf->prefix, client);

    struct request *q = calloc(1, sizeof(*q));
    if (q == NULL)
        return PETREL_CONTINUE;
    q->m = m;
    q->policy = pol;
    q->recipient = strdup(rcpt);
    q->summary = strdup(petrel_pool_printf(pool, "client=%s[%s], sender=<%s>, recipient=<%s>",
                                           petrel_client_name(s), client, sender ? sender : "", rcpt));
    if (q->recipient == NULL || q->summary == NULL) {
        free_request(q);
        return PETREL_CONTINUE;
    }
    q->pending = petrel_suspend(s);
    if (q->pending == NULL) {
        free_request(q);
        return PETREL_CONTINUE;
    }
    char delay[32], retry[32], max_age[32], awl[32];
    snprintf(delay, sizeof(delay), "%lld", pol->delay);
    snprintf(retry, sizeof(retry), "%lld", pol->retry_window);
    snprintf(max_age, sizeof(max_age), "%lld", pol->max_age > 0 ? pol->max_age : 1);
    snprintf(awl, sizeof(awl), "%lld", pol->awl_count);
    const char *argv[] = { "EVAL", greylist_script, "3", triplet_key, client_key, whitelist_key, delay, retry,
                           max_age, awl };
    redis_command(conf->redis, decided, q, 10, argv, NULL);
    return PETREL_PENDING;
}

static const petrel_restriction greylist_restrictions[] = {
    { PETREL_RESTRICTION_INIT, .name = "check_greylist", .nargs = 0,
      .compile = greylist_compile, .check = greylist_check },
    { .name = NULL },
};

const petrel_module_desc petrel_module_descriptor = {
    PETREL_MODULE_INIT,
    .name = "greylist",
    .version = "1.0",
    .description = "triplet greylisting (postgrey's rules) with its state in Redis, shared by a cluster",
    .params = greylist_params,
    .init = greylist_init,
    .fini = greylist_fini,
    .restrictions = greylist_restrictions,
    .commands = greylist_commands,
    /* Redis has its own deadline (greylist_redis_timeout); this only
     * catches what that misses. */
    .hook_timeout_ms = 15000,
};
