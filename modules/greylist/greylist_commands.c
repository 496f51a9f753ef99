/*
 * modules/greylist: petrelctl greylist list | whitelist | delete, on the
 * module's Redis keys (which every node of a cluster shares). Moved out of
 * greylist.c, whose opening comment describes the greylisting itself.
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

#include "greylist_int.h"
#include "redis_client.h"

/* ------------------------------------------------------------------ */
/* petrelctl greylist list | whitelist | delete                        */

/* The commands work on the module's Redis keys, which every node shares,
 * so the one worker the master picks answers for the cluster:
 *   PREFIXt:NET/SENDER/RECIPIENT  a triplet (hash: first, last)
 *   PREFIXc:ADDRESS               a client's passes (hash: count, last)
 *   PREFIXw:ADDRESS               a client whitelisted by petrelctl (expires after greylist_max_age)
 * Listing walks the keys with SCAN (never KEYS, which would stop Redis on
 * a big data set) and reads each batch with one script. */

#define LIST_MAX_ENTRIES 100000

/* Reads the keys of one SCAN batch. Returns {now, {key, a, b, ttl}...}:
 * first and last for a triplet, count and last for a client, 0 and 0 for
 * a whitelist entry. */
static const char list_script[] =
    "local t = redis.call('TIME') local out = {tonumber(t[1])}\n"
    "for i, k in ipairs(KEYS) do\n"
    "  local kind = string.sub(k, string.len(ARGV[1]) + 1, string.len(ARGV[1]) + 1)\n"
    "  local a, b = 0, 0\n"
    "  if kind == 't' then local v = redis.call('HMGET', k, 'first', 'last') a, b = v[1] or 0, v[2] or 0\n"
    "  elseif kind == 'c' then local v = redis.call('HMGET', k, 'count', 'last') a, b = v[1] or 0, v[2] or 0 end\n"
    "  table.insert(out, {k, tostring(a), tostring(b), redis.call('TTL', k)})\n"
    "end\n"
    "return out\n";

enum walk_mode { WALK_LIST, WALK_DELETE };

struct walk {
    petrel_command_request *r;
    petrel_module *m;
    enum walk_mode mode;
    char cursor[32];
    char *pattern;                    /* SCAN MATCH */
    char *client, *net;               /* the filter, or NULL */
    int json;
    unsigned long entries, deleted;
    int truncated;
    struct buf_text { char *data; size_t len, cap; } triplets, clients;
};

static void text_add(struct buf_text *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void text_add(struct buf_text *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0)
        return;
    if (b->len + (size_t)n + 1 > b->cap) {
        size_t cap = (b->cap ? b->cap * 2 : 1024) + (size_t)n;
        char *bigger = realloc(b->data, cap);
        if (bigger == NULL)
            return;
        b->data = bigger;
        b->cap = cap;
    }
    va_start(ap, fmt);
    vsnprintf(b->data + b->len, b->cap - b->len, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
}

/* A JSON string (quotes included), malloc'd. */
static char *json_string(const char *s)
{
    struct buf_text b = { 0 };
    text_add(&b, "\"");
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (*p == '"' || *p == '\\')
            text_add(&b, "\\%c", *p);
        else if (*p < 0x20 || *p == 0x7f)
            text_add(&b, "\\u%04x", *p);
        else
            text_add(&b, "%c", *p);
    }
    text_add(&b, "\"");
    return b.data;
}

static void walk_free(struct walk *w)
{
    free(w->pattern);
    free(w->client);
    free(w->net);
    free(w->triplets.data);
    free(w->clients.data);
    free(w);
}

/* SCAN MATCH takes a glob: the prefix and the client's network are text. */
static char *glob_escape(const char *s, petrel_pool *pool)
{
    char *out = petrel_pool_alloc(pool, strlen(s) * 2 + 1);
    char *o = out;
    for (; *s; s++) {
        if (strchr("*?[]\\", *s))
            *o++ = '\\';
        *o++ = *s;
    }
    *o = '\0';
    return out;
}

static void fmt_time(char *out, size_t size, long long t)
{
    time_t tt = (time_t)t;
    struct tm tm;
    if (t <= 0 || gmtime_r(&tt, &tm) == NULL || strftime(out, size, "%Y-%m-%d %H:%M:%S UTC", &tm) == 0)
        snprintf(out, size, "?");
}

/* One entry of the list script's answer. */
static void list_entry(struct walk *w, const struct greylist_conf *conf, long long now, const char *key,
                       long long a, long long b, long long ttl)
{
    size_t plen = strlen(conf->prefix);
    if (strlen(key) < plen + 2)
        return;
    char kind = key[plen];
    const char *rest = key + plen + 2;
    char t1[40], t2[40];
    if (kind == 't') {
        /* NET is "a.b.c.0/24" or "x::/64": two '/'-separated parts; the
         * sender ends at the first '/' after its '@' (an empty sender at once). */
        const char *p = strchr(rest, '/');
        p = p ? strchr(p + 1, '/') : NULL;
        if (p == NULL)
            return;
        char *net = strndup(rest, (size_t)(p - rest));
        const char *sender = p + 1;
        const char *at = strchr(sender, '@');
        const char *cut = *sender == '/' ? sender : strchr(at ? at : sender, '/');
        if (net == NULL || cut == NULL) {
            free(net);
            return;
        }
        if (w->net && strcmp(net, w->net) != 0) {
            free(net);
            return;
        }
        char *snd = strndup(sender, (size_t)(cut - sender));
        const char *rcpt = cut + 1;
        long long left = conf->delay - (now - a);
        int passed = b - a >= conf->delay;
        if (!passed && left <= 0)
            left = 0;
        fmt_time(t1, sizeof(t1), a);
        fmt_time(t2, sizeof(t2), b);
        if (w->json) {
            char *jn = json_string(net), *js = json_string(snd ? snd : ""), *jr = json_string(rcpt);
            text_add(&w->triplets, "%s\n    {\"client_network\": %s, \"sender\": %s, \"recipient\": %s, "
                     "\"state\": \"%s\", \"retry_in\": %lld, \"first_seen\": %lld, \"last_seen\": %lld, "
                     "\"expires_in\": %lld}", w->triplets.len ? "," : "", jn, js, jr, passed ? "passed" : "greylisted",
                     passed ? 0 : left, a, b, ttl);
            free(jn);
            free(js);
            free(jr);
        } else if (passed) {
            text_add(&w->triplets, "%s <%s> <%s>: passed (first seen %s, last seen %s)\n", net, snd ? snd : "",
                     rcpt, t1, t2);
        } else {
            text_add(&w->triplets, "%s <%s> <%s>: greylisted, a retry passes in %lld s (first seen %s)\n", net,
                     snd ? snd : "", rcpt, left, t1);
        }
        free(net);
        free(snd);
    } else if (kind == 'c' || kind == 'w') {
        if (w->client && strcmp(rest, w->client) != 0)
            return;
        int awl = kind == 'c' && conf->awl_count > 0 && a >= conf->awl_count;
        fmt_time(t1, sizeof(t1), b);
        fmt_time(t2, sizeof(t2), ttl > 0 ? now + ttl : 0);
        if (w->json) {
            char *jc = json_string(rest);
            if (kind == 'w')
                text_add(&w->clients, "%s\n    {\"client\": %s, \"whitelisted\": \"petrelctl\", \"expires_in\": %lld}",
                         w->clients.len ? "," : "", jc, ttl);
            else
                text_add(&w->clients, "%s\n    {\"client\": %s, \"passes\": %lld, \"whitelisted\": %s, "
                         "\"last_pass\": %lld, \"expires_in\": %lld}", w->clients.len ? "," : "", jc, a,
                         awl ? "\"auto\"" : "false", b, ttl);
            free(jc);
        } else if (kind == 'w') {
            text_add(&w->clients, "client %s: whitelisted (petrelctl greylist whitelist) until %s\n", rest, t2);
        } else {
            text_add(&w->clients, "client %s: %lld pass%s (last %s)%s\n", rest, a, a == 1 ? "" : "es", t1,
                     awl ? ", auto-whitelisted" : conf->awl_count > 0 ? "" : "");
        }
    } else {
        return;
    }
    w->entries++;
}

static void walk_step(struct walk *w);

static void walk_finish(struct walk *w, const char *error)
{
    if (error) {
        petrel_command_print(w->r, "greylist: Redis: %s", error);
        if (w->mode == WALK_DELETE && w->deleted)
            petrel_command_print(w->r, " (%lu keys were deleted before)", w->deleted);
        petrel_command_done(w->r, PETREL_COMMAND_FAILED);
    } else if (w->mode == WALK_DELETE) {
        petrel_command_print(w->r, "greylist: deleted %lu triplet%s of %s", w->deleted, w->deleted == 1 ? "" : "s",
                             w->net);
        petrel_command_done(w->r, PETREL_COMMAND_OK);
    } else if (w->json) {
        petrel_command_print(w->r, "{\"triplets\": [%s%s], \"clients\": [%s%s], \"truncated\": %s}",
                             w->triplets.data ? w->triplets.data : "", w->triplets.len ? "\n  " : "",
                             w->clients.data ? w->clients.data : "", w->clients.len ? "\n  " : "",
                             w->truncated ? "true" : "false");
        petrel_command_done(w->r, PETREL_COMMAND_OK);
    } else {
        if (w->entries == 0)
            petrel_command_print(w->r, "greylist: no triplets or clients%s%s\n", w->client ? " for " : "",
                                 w->client ? w->client : "");
        petrel_command_print(w->r, "%s%s", w->triplets.data ? w->triplets.data : "",
                             w->clients.data ? w->clients.data : "");
        if (w->truncated)
            petrel_command_print(w->r, "(more than %d entries: the rest is not shown)\n", LIST_MAX_ENTRIES);
        petrel_command_done(w->r, PETREL_COMMAND_OK);
    }
    walk_free(w);
}

static void walk_batch_read(const redisReply *reply, const char *error, void *arg)
{
    struct walk *w = arg;
    struct greylist_conf *conf = petrel_module_data(w->m);
    if (reply == NULL || conf == NULL || reply->type != REDIS_REPLY_ARRAY || reply->elements < 1) {
        walk_finish(w, error ? error : "unexpected reply");
        return;
    }
    long long now = reply->element[0]->integer;
    for (size_t i = 1; i < reply->elements; i++) {
        const redisReply *e = reply->element[i];
        if (e->type != REDIS_REPLY_ARRAY || e->elements != 4 || e->element[0]->type != REDIS_REPLY_STRING)
            continue;
        list_entry(w, conf, now, e->element[0]->str, e->element[1]->str ? atoll(e->element[1]->str) : 0,
                   e->element[2]->str ? atoll(e->element[2]->str) : 0, e->element[3]->integer);
        if (w->entries >= LIST_MAX_ENTRIES) {
            w->truncated = 1;
            walk_finish(w, NULL);
            return;
        }
    }
    if (strcmp(w->cursor, "0") == 0)
        walk_finish(w, NULL);
    else
        walk_step(w);
}

static void walk_batch_deleted(const redisReply *reply, const char *error, void *arg)
{
    struct walk *w = arg;
    if (reply == NULL || reply->type != REDIS_REPLY_INTEGER) {
        walk_finish(w, error ? error : "unexpected reply");
        return;
    }
    w->deleted += (unsigned long)reply->integer;
    if (strcmp(w->cursor, "0") == 0)
        walk_finish(w, NULL);
    else
        walk_step(w);
}

static void walk_scanned(const redisReply *reply, const char *error, void *arg)
{
    struct walk *w = arg;
    struct greylist_conf *conf = petrel_module_data(w->m);
    if (reply == NULL || conf == NULL || reply->type != REDIS_REPLY_ARRAY || reply->elements != 2 ||
        reply->element[0]->type != REDIS_REPLY_STRING || reply->element[1]->type != REDIS_REPLY_ARRAY) {
        walk_finish(w, error ? error : "unexpected reply to SCAN");
        return;
    }
    snprintf(w->cursor, sizeof(w->cursor), "%s", reply->element[0]->str);
    const redisReply *keys = reply->element[1];
    if (keys->elements == 0) {
        if (strcmp(w->cursor, "0") == 0)
            walk_finish(w, NULL);
        else
            walk_step(w);
        return;
    }
    size_t n = keys->elements;
    const char **argv = calloc(n + 4, sizeof(*argv));
    char count[32];
    if (argv == NULL) {
        walk_finish(w, "out of memory");
        return;
    }
    snprintf(count, sizeof(count), "%zu", n);
    size_t a = 0;
    if (w->mode == WALK_DELETE) {
        argv[a++] = "DEL";
    } else {
        argv[a++] = "EVAL";
        argv[a++] = list_script;
        argv[a++] = count;
    }
    for (size_t i = 0; i < n; i++)
        argv[a++] = keys->element[i]->str ? keys->element[i]->str : "";
    if (w->mode == WALK_LIST)
        argv[a++] = conf->prefix;
    redis_command(conf->redis, w->mode == WALK_DELETE ? walk_batch_deleted : walk_batch_read, w, (int)a, argv, NULL);
    free(argv);
}

static void walk_step(struct walk *w)
{
    struct greylist_conf *conf = petrel_module_data(w->m);
    if (conf == NULL) {
        walk_finish(w, "the module is not initialised");
        return;
    }
    const char *argv[] = { "SCAN", w->cursor, "MATCH", w->pattern, "COUNT", "1000" };
    redis_command(conf->redis, walk_scanned, w, 6, argv, NULL);
}

/* The client argument in the form the keys use (inet_ntop's), or NULL
 * after answering the request. */
static char *client_argument(petrel_command_request *r, const char *text, petrel_pool *pool)
{
    unsigned char a[16];
    char out[INET6_ADDRSTRLEN];
    if (inet_pton(AF_INET, text, a) == 1)
        inet_ntop(AF_INET, a, out, sizeof(out));
    else if (inet_pton(AF_INET6, text, a) == 1)
        inet_ntop(AF_INET6, a, out, sizeof(out));
    else {
        petrel_command_print(r, "greylist: \"%s\" is not an IPv4 or IPv6 address", text);
        petrel_command_done(r, PETREL_COMMAND_USAGE);
        return NULL;
    }
    return petrel_pool_strdup(pool, out);
}

static struct greylist_conf *command_conf(petrel_command_request *r)
{
    struct greylist_conf *conf = petrel_module_data(petrel_command_module(r));
    if (conf == NULL) {
        petrel_command_print(r, "greylist: the module is not initialised");
        petrel_command_done(r, PETREL_COMMAND_FAILED);
    }
    return conf;
}

static void cmd_list(petrel_command_request *r, int argc, const char *const *argv)
{
    struct greylist_conf *conf = command_conf(r);
    if (conf == NULL)
        return;
    petrel_pool *pool = petrel_pool_create(512);
    char *client = argc > 0 ? client_argument(r, argv[0], pool) : NULL;
    if (argc > 0 && client == NULL) {
        petrel_pool_destroy(pool);
        return;
    }
    struct walk *w = calloc(1, sizeof(*w));
    if (w == NULL) {
        petrel_command_print(r, "greylist: out of memory");
        petrel_command_done(r, PETREL_COMMAND_FAILED);
        petrel_pool_destroy(pool);
        return;
    }
    w->r = r;
    w->m = petrel_command_module(r);
    w->mode = WALK_LIST;
    w->json = petrel_command_json(r);
    strcpy(w->cursor, "0");
    w->pattern = strdup(petrel_pool_printf(pool, "%s*", glob_escape(conf->prefix, pool)));
    if (client) {
        w->client = strdup(client);
        w->net = strdup(greylist_client_network(client, pool));
    }
    petrel_pool_destroy(pool);
    walk_step(w);
}

struct simple_op {
    petrel_command_request *r;
    char *what;
};

static void simple_done(const redisReply *reply, const char *error, void *arg)
{
    struct simple_op *op = arg;
    if (reply == NULL) {
        petrel_command_print(op->r, "greylist: Redis: %s", error ? error : "no answer");
        petrel_command_done(op->r, PETREL_COMMAND_FAILED);
    } else if (reply->type == REDIS_REPLY_INTEGER && reply->integer == 0) {
        petrel_command_print(op->r, "greylist: %s: not found", op->what);
        petrel_command_done(op->r, PETREL_COMMAND_FAILED);
    } else {
        petrel_command_print(op->r, "greylist: %s", op->what);
        petrel_command_done(op->r, PETREL_COMMAND_OK);
    }
    free(op->what);
    free(op);
}

static void cmd_whitelist(petrel_command_request *r, int argc, const char *const *argv)
{
    (void)argc;
    struct greylist_conf *conf = command_conf(r);
    if (conf == NULL)
        return;
    petrel_pool *pool = petrel_pool_create(512);
    char *client = client_argument(r, argv[0], pool);
    struct simple_op *op = client ? calloc(1, sizeof(*op)) : NULL;
    if (op) {
        op->r = r;
        char max_age[32];
        snprintf(max_age, sizeof(max_age), "%lld", conf->max_age > 0 ? conf->max_age : 1);
        op->what = strdup(petrel_pool_printf(pool, "client %s whitelisted for %s s (greylist_max_age)", client,
                                             max_age));
        const char *cmd[] = { "SET", petrel_pool_printf(pool, "%sw:%s", conf->prefix, client), "petrelctl", "EX",
                              max_age };
        redis_command(conf->redis, simple_done, op, 5, cmd, NULL);
    } else if (client) {
        petrel_command_print(r, "greylist: out of memory");
        petrel_command_done(r, PETREL_COMMAND_FAILED);
    }
    petrel_pool_destroy(pool);
}

/* delete ADDRESS SENDER RECIPIENT: one triplet. delete ADDRESS: the
 * client's whitelist entry and passes, then every triplet of its network. */
static void client_keys_deleted(const redisReply *reply, const char *error, void *arg)
{
    struct walk *w = arg;
    if (reply == NULL || reply->type != REDIS_REPLY_INTEGER) {
        walk_finish(w, error ? error : "unexpected reply");
        return;
    }
    petrel_command_print(w->r, "greylist: client %s: %s\n", w->client,
                         reply->integer > 0 ? "whitelist entry and passes deleted" : "no whitelist entry or passes");
    walk_step(w);
}

static void cmd_delete(petrel_command_request *r, int argc, const char *const *argv)
{
    struct greylist_conf *conf = command_conf(r);
    if (conf == NULL)
        return;
    if (argc == 2) {
        petrel_command_print(r, "greylist delete: give the client alone, or the client, the sender and the recipient");
        petrel_command_done(r, PETREL_COMMAND_USAGE);
        return;
    }
    petrel_pool *pool = petrel_pool_create(512);
    char *client = client_argument(r, argv[0], pool);
    if (client == NULL) {
        petrel_pool_destroy(pool);
        return;
    }
    char *net = greylist_client_network(client, pool);
    if (argc == 3) {
        struct simple_op *op = calloc(1, sizeof(*op));
        if (op == NULL) {
            petrel_command_print(r, "greylist: out of memory");
            petrel_command_done(r, PETREL_COMMAND_FAILED);
            petrel_pool_destroy(pool);
            return;
        }
        /* <address> or <> as in the log, or the bare address */
        char *sender = petrel_pool_strdup(pool, argv[1]), *rcpt = petrel_pool_strdup(pool, argv[2]);
        size_t sl = strlen(sender), rl = strlen(rcpt);
        if (sl >= 2 && sender[0] == '<' && sender[sl - 1] == '>') {
            sender[sl - 1] = '\0';
            sender++;
        }
        if (rl >= 2 && rcpt[0] == '<' && rcpt[rl - 1] == '>') {
            rcpt[rl - 1] = '\0';
            rcpt++;
        }
        for (char *p = rcpt; *p; p++)
            *p = (char)tolower((unsigned char)*p);
        op->r = r;
        op->what = strdup(petrel_pool_printf(pool, "triplet %s <%s> <%s> deleted", net, sender, rcpt));
        const char *cmd[] = { "DEL", petrel_pool_printf(pool, "%st:%s/%s/%s", conf->prefix, net,
                                                        greylist_normalise_sender(sender, pool), rcpt) };
        redis_command(conf->redis, simple_done, op, 2, cmd, NULL);
        petrel_pool_destroy(pool);
        return;
    }
    struct walk *w = calloc(1, sizeof(*w));
    if (w == NULL) {
        petrel_command_print(r, "greylist: out of memory");
        petrel_command_done(r, PETREL_COMMAND_FAILED);
        petrel_pool_destroy(pool);
        return;
    }
    w->r = r;
    w->m = petrel_command_module(r);
    w->mode = WALK_DELETE;
    strcpy(w->cursor, "0");
    w->client = strdup(client);
    w->net = strdup(net);
    w->pattern = strdup(petrel_pool_printf(pool, "%st:%s/*", glob_escape(conf->prefix, pool), glob_escape(net, pool)));
    const char *cmd[] = { "DEL", petrel_pool_printf(pool, "%sw:%s", conf->prefix, client),
                          petrel_pool_printf(pool, "%sc:%s", conf->prefix, client) };
    redis_command(conf->redis, client_keys_deleted, w, 3, cmd, NULL);
    petrel_pool_destroy(pool);
}

const petrel_command greylist_commands[] = {
    { PETREL_COMMAND_INIT, .name = "list", .usage = "[CLIENT]", .min_args = 0, .max_args = 1,
      .flags = PETREL_COMMAND_JSON, .run = cmd_list,
      .help = "the triplets (of CLIENT's network) and clients Redis holds, with their state" },
    { PETREL_COMMAND_INIT, .name = "whitelist", .usage = "CLIENT", .min_args = 1, .max_args = 1, .run = cmd_whitelist,
      .help = "never greylist CLIENT (an address) again, on every node, for greylist_max_age" },
    { PETREL_COMMAND_INIT, .name = "delete", .usage = "CLIENT [SENDER RECIPIENT]", .min_args = 1, .max_args = 3,
      .run = cmd_delete,
      .help = "forget one triplet, or a client's whitelisting, passes and every triplet of its network" },
    { .name = NULL },
};
