/*
 * An asynchronous Redis client for bundled modules (greylist, ratelimit):
 * hiredis' asynchronous API driven by the plugin API's fd watches and
 * timers, so a Redis round trip never blocks the role's event loop.
 *
 * What it adds to hiredis:
 * - the loop adapter (addRead/delRead/addWrite/delWrite/cleanup on
 *   petrel_watch_fd);
 * - a deadline on every command (and on connecting): a command that has no
 *   answer in time completes with an error, and the connection is dropped,
 *   since a server that stopped answering one command answers no other;
 * - connection management: AUTH (password, or ACL user and password),
 *   SELECT, and reconnection with exponential back-off (0.5 s doubling to
 *   30 s) after any failure, logged once when Redis goes away and once when
 *   it is back;
 * - Sentinel: with sentinels configured, the master's address is asked of
 *   each sentinel in turn (SENTINEL get-master-addr-by-name), the server is
 *   checked to be a master (ROLE), and a READONLY answer (a demoted master
 *   after a failover) drops the connection so the next one finds the new
 *   master.
 *
 * Commands issued while the client is connecting wait (within their own
 * deadline); commands issued while Redis is known to be down fail at once,
 * so callers apply their fallback without waiting.
 */
#ifndef PETREL_MODULES_REDIS_CLIENT_H
#define PETREL_MODULES_REDIS_CLIENT_H

#include <stddef.h>

#include <hiredis/hiredis.h>
#include <petrel/plugin.h>

struct redis_config {
    const char *server;        /* "host:port", "unix:/path", or the Sentinel master name's address */
    const char *user;          /* ACL user (Redis 6+) or NULL/"" */
    const char *password;      /* NULL/"" for none */
    int database;
    const char *sentinels;     /* "host:port, host:port" or NULL/"" */
    const char *master_name;   /* the Sentinel master name */
    unsigned timeout_ms;       /* per command and per connection attempt */
};

struct redis_client;

/* Checks a configuration's syntax (for compile and init): NULL, or an
 * error phrase (pool text). param names the parameter for the message. */
const char *redis_config_check(const struct redis_config *cfg, petrel_pool *pool);

/* A client that connects at once in the background. label names it in the
 * log ("greylist_redis"). */
struct redis_client *redis_client_create(petrel_module *m, const struct redis_config *cfg, const char *label);
void redis_client_free(struct redis_client *rc);

/* The answer to a command: reply is hiredis' (valid during the call), or
 * NULL with error set ("timed out", "Redis is down", an -ERR text...).
 * An error reply from Redis (-ERR...) is passed as error too. */
typedef void redis_reply_fn(const redisReply *reply, const char *error, void *arg);

/* Sends a command (binary-safe arguments). fn is called exactly once, never
 * before redis_command returns. */
void redis_command(struct redis_client *rc, redis_reply_fn *fn, void *arg, int argc, const char **argv,
                   const size_t *argvlen);

/* 1 when connected and ready. */
int redis_client_up(const struct redis_client *rc);

#endif
