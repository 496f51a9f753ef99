/*
 * The spf module's DNS bridge: lets code on a worker thread (libspf2, which
 * only knows blocking lookups) ask the role's own resolver
 * (petrel_dns_lookup, that is dns_resolver or the system's resolvers) and
 * wait for the answer, so that SPF sees exactly the DNS the rest of petreld
 * sees. See spf_dns.c for how the two threads meet.
 */
#ifndef PETREL_MODULE_SPF_DNS_H
#define PETREL_MODULE_SPF_DNS_H

#include <time.h>

#include <petrel/plugin.h>

struct spf_bridge;

/* One answer as the worker thread gets it: status as petrel_dns_answer's,
 * values malloc'd (free with spf_dns_answer_free). */
struct spf_dns_answer {
    petrel_dns_status status;
    size_t count;
    char **values;
};

/* On the loop (module init): the bridge, or NULL with *error. */
struct spf_bridge *spf_bridge_create(petrel_module *m, const char **error);
/* On the loop (module fini): no new queries are started; the bridge is
 * freed when the last thread that holds it lets go. */
void spf_bridge_release(struct spf_bridge *b);
/* A reference for the length of one evaluation: taken on the loop when
 * the work is handed to a thread, dropped by whoever finishes last. */
void spf_bridge_hold(struct spf_bridge *b);
void spf_bridge_drop(struct spf_bridge *b);

/* On a worker thread: asks the loop to look name up and waits until the
 * answer arrives or deadline (CLOCK_MONOTONIC) passes (then TEMPFAIL).
 * For PETREL_DNS_PTR, name is an address. */
void spf_bridge_query(struct spf_bridge *b, petrel_dns_type type, const char *name,
                      const struct timespec *deadline, struct spf_dns_answer *out);
void spf_dns_answer_free(struct spf_dns_answer *a);

#endif
