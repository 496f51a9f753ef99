/*
 * The dnsbl module's shared declarations: a compiled restriction (struct
 * rule), the configuration each process keeps (struct dnsbl_conf, one
 * struct dnsbl_policy per service), and a session's lookups and suspended
 * checks (struct dnsbl_session). dnsbl.c is the module (its parameters,
 * restrictions and hooks), dnsbl_config.c reads the settings,
 * dnsbl_lookup.c keeps a session's DNS and rbl_reply_maps lookups,
 * dnsbl_evaluate.c decides a rule from them and words the reply. The pure
 * parsers they use are dnsbl.h's (dnsbl_util.c, fuzzed alone).
 */
#ifndef PETREL_MODULE_DNSBL_MODULE_H
#define PETREL_MODULE_DNSBL_MODULE_H

#include <stddef.h>

#include <petrel/plugin.h>

#include "dnsbl.h"

/* ------------------------------------------------------------------ */
/* configuration (dnsbl_config.c)                                      */

enum rule_kind {
    RBL_CLIENT, DNSWL_CLIENT, RHSBL_CLIENT, RHSWL_CLIENT, RHSBL_REVERSE_CLIENT, RHSBL_HELO,
    RHSBL_SENDER, RHSBL_RECIPIENT, DNSBL_SCORE,
};

struct rule {
    enum rule_kind kind;
    const char *name;                  /* the restriction's name, for the log */
    struct dnsbl_list list;            /* all but DNSBL_SCORE */
    const struct dnsbl_list *sites;    /* DNSBL_SCORE */
    size_t nsites;
};

/* What decides and answers, as one master.cf service (or main.cf) sets it:
 * the score thresholds and Postfix's default_rbl_reply and
 * maps_rbl_reject_code (through dnsbl_reply_template, dnsbl_reject_code),
 * which Postfix reads per service too. The lists queried are main.cf's. */
struct dnsbl_policy {
    const char *service;               /* NULL: main.cf's */
    long long threshold, allow_threshold;
    const char *reply_template;
    int reply_code;
    const char *reply_maps;            /* rbl_reply_maps as set ("" when not) */
    const char **reply_specs;          /* its tables, in search order */
    size_t nreply_specs;
    petrel_table **reply_tables;       /* opened by init (NULL in a compile) */
};

/* A table of rbl_reply_maps, opened once per process. */
struct open_table {
    const char *spec;
    petrel_table *table;
};

/* Module data, made by init in each smtpd worker. */
struct dnsbl_conf {
    petrel_pool *pool;
    struct dnsbl_policy main_policy;
    struct dnsbl_policy *policies;     /* one per hook service (petrel_service_at) */
    size_t npolicies;
    const struct dnsbl_list *sites;
    size_t nsites;
    unsigned timeout_ms;
    /* Zones queried with the client's address, started at connect: those
     * of dnsbl_sites and of every compiled client list (compile registers
     * them once init has run, which in a worker is before compiling). */
    const char **client_zones;
    size_t nclient_zones, client_zones_cap;
    struct dnsbl_cache *cache;         /* answers kept for their TTL (this process) */
    struct open_table *tables;         /* rbl_reply_maps tables, all services' */
    size_t ntables;
};

/* A restriction's compile, for each of the module's restrictions. */
int dnsbl_compile_rule(petrel_module *m, enum rule_kind kind, const char *name, const char *const *args,
                       void **state, petrel_pool *pool, const char **error);
/* The module's check (petreld -n, the start, a reload), init and fini. */
int dnsbl_check_config(petrel_module *m);
int dnsbl_init(petrel_module *m, const char **error);
void dnsbl_fini(petrel_module *m);

/* ------------------------------------------------------------------ */
/* a session's lookups (dnsbl_lookup.c)                                */

struct dnsbl_session;

enum lookup_state { LOOKUP_PENDING, LOOKUP_ANSWERED, LOOKUP_TIMED_OUT };

struct lookup {
    struct lookup *next;
    struct dnsbl_session *ds;
    petrel_dns_type type;
    char *query;
    enum lookup_state state;
    petrel_dns_status status;
    char **values;
    size_t count;
    petrel_timer *timer;
    int logged;                       /* its failure was logged */
};

/* One rbl_reply_maps lookup of the session: (table, key). */
enum reply_state { REPLY_PENDING, REPLY_FOUND, REPLY_NOTFOUND, REPLY_FAILED };

struct reply_lookup {
    struct reply_lookup *next;
    struct dnsbl_session *ds;
    petrel_table *table;
    char *key;
    enum reply_state state;
    char *value;
};

struct waiter {
    struct waiter *next;
    petrel_pending *pending;
    const struct rule *rule;
    struct dnsbl_reply_facts facts;   /* strings owned by the waiter */
};

struct dnsbl_session {
    petrel_module *m;
    struct dnsbl_conf *conf;
    const struct dnsbl_policy *policy;  /* the session's service's */
    int refs;                         /* the session (until gone) + lookups in flight */
    int gone;
    int evaluating, again;            /* evaluate_waiters is running; run it once more */
    struct lookup *lookups;
    struct reply_lookup *replies;
    struct waiter *waiters;
};

/* A rule's evaluation: an answer it needs is in flight, or decided. */
enum outcome { NOT_READY, NOT_LISTED, LISTED };

struct verdict {
    petrel_verdict v;
    int code;
    char enhanced[16];
    const char *text;
};

/* The session's state (made at its first use), or NULL when out of memory. */
struct dnsbl_session *dnsbl_session_state(petrel_session *s, petrel_module *m);
/* The session's lookup of (type, query), started if new; NULL when out of memory. */
struct lookup *dnsbl_lookup_get(struct dnsbl_session *ds, petrel_dns_type type, const char *query);
/* Postfix's search of rbl_reply_maps for a listed client: the argument as
 * written, then (when it has a =filter) the bare domain, each through
 * every table in order. LISTED when decided: *template is the table's
 * (NULL: default_rbl_reply), *failed when a table could not answer. */
enum outcome dnsbl_reply_maps_template(struct dnsbl_session *ds, const struct rule *r,
                                       const char **template_text, int *failed);
void dnsbl_free_waiter(struct waiter *w);

/* ------------------------------------------------------------------ */
/* evaluation (dnsbl_evaluate.c)                                       */

/* Decides a rule from the session's lookups: NOT_READY while an answer it
 * needs is in flight (then it has started every lookup it needs). */
enum outcome dnsbl_evaluate(struct dnsbl_session *ds, const struct rule *r, const struct dnsbl_reply_facts *facts,
                            petrel_pool *pool, struct verdict *out);
/* Re-evaluates the suspended checks after a lookup completed. */
void dnsbl_evaluate_waiters(struct dnsbl_session *ds);

#endif
