/*
 * modules/greylist: what the module's two files share (greylist.c: the
 * configuration and the check_greylist restriction; greylist_commands.c:
 * petrelctl greylist list | whitelist | delete). Not an interface: only
 * this folder includes it.
 */
#ifndef PETREL_GREYLIST_INT_H
#define PETREL_GREYLIST_INT_H

#include <stddef.h>

#include <petrel/plugin.h>

#include "client_nets.h"
#include "redis_client.h"

struct greylist_conf {
    petrel_pool *pool;
    struct redis_client *redis;
    const char *prefix;
    long long delay, retry_window, max_age, awl_count;
    const char *text;
    int tempfail_when_down;
    struct client_net *clients;
    size_t nclients;
    const char **recipients;
    size_t nrecipients;
    /* per master.cf service (main.cf's above): the same struct with the
     * policy fields of that service; only these are used in them */
    struct greylist_conf *services;
    const char **service_names;
    size_t nservices;
};

/* The client's network: a.b.c.0/24 or the first 64 bits /64. */
char *greylist_client_network(const char *addr, petrel_pool *pool);
/* The sender as greylisting sees it (postgrey's substitutions). */
char *greylist_normalise_sender(const char *sender, petrel_pool *pool);

/* petrelctl greylist's commands (greylist_commands.c). */
extern const petrel_command greylist_commands[];

#endif
