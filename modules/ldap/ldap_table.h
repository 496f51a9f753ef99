/*
 * The ldap module's shared declarations: an open table (what its
 * ldap_table(5) file says, and its connection state), one lookup's
 * results, and the functions the module's files share. ldap.c is the
 * table type (connections, the asynchronous lookup), ldap_blocking.c the
 * blocking lookup, ldap_results.c reads search results the way Postfix's
 * dict_ldap does, ldap_referral.c follows referrals (chase_referrals =
 * yes), ldap_open.c reads the file.
 */
#ifndef PETREL_MODULES_LDAP_TABLE_H
#define PETREL_MODULES_LDAP_TABLE_H

#include <time.h>

#include <ldap.h>

#include <petrel/plugin.h>

#include "remote_table.h"
#include "table_config.h"

#define HOST_RETRY_SECONDS 60
#define MAX_HOSTS 16

struct ldap_host {
    const char *url;
    const char *name;                 /* a host name to resolve first (petrel_dns), or NULL */
    const char *scheme;
    int port;
    time_t dead_until;
};

/* A name being resolved for the connection. The table may close before
 * the answer comes: it then sets cancelled, and the answer frees this. */
struct resolving {
    struct table *t;
    int host;
    int cancelled;
};

struct request;
struct ldap_conn;
struct referral_conn;

/* Referrals (chase_referrals = yes; ldap_referral.c): libldap's default
 * hop limit (LDAP_OPT_REFHOPLIMIT, which Postfix leaves alone), and the
 * bound of each table's pool of connections to referred servers. */
#define REFERRAL_HOP_LIMIT 5
#define REFERRAL_MAX_CONNS 16

/* What one search asked, kept while it is in flight so that a referral
 * in its results can ask the same elsewhere. attrs is a malloc'd array
 * of the table's attribute names; trail the servers and bases already
 * referred to on the way here ("\n"-separated, NULL at the first server),
 * for loop detection. */
struct search_spec {
    char *base, *filter, *trail;
    char **attrs;
    int scope, depth, hops;
};

#define TABLE_BIND_SIMPLE 1
#define TABLE_BIND_SASL 2

struct table {
    petrel_module *module;
    const char *config;               /* the .cf file, for messages */
    struct ldap_host hosts[MAX_HOSTS];
    int nhosts;
    const char *search_base, *query_filter, *result_format;
    int dynamic_base;                 /* search_base depends on the key */
    int scope, version, deref;
    struct table_template tpl;
    struct table_domains domains;
    char **attrs;                     /* terminal, leaf, regular, special; NULL-terminated */
    int nterminal, nleaf, nordinary;  /* nordinary: terminal + leaf + regular */
    int bind;                         /* 0 none, TABLE_BIND_SIMPLE, TABLE_BIND_SASL */
    const char *bind_dn, *bind_pw;
    const char *sasl_mechs, *sasl_realm, *sasl_authz_id;   /* bind = sasl (Cyrus SASL through libldap) */
    int sasl_minssf;
    /* TLS (start_tls = yes, or ldaps:// servers): the connection is then
     * made, secured and bound on a worker thread (ldap.c) */
    int start_tls, tls;               /* tls: start_tls or any ldaps:// server */
    int chase_referrals;
    int tls_require_cert;
    const char *tls_ca_cert_file, *tls_ca_cert_dir, *tls_cert, *tls_key, *tls_cipher_suite;
    unsigned timeout_ms;
    long expansion_limit, size_limit, recursion_limit;
    struct ldap_conn *conn;           /* at most one */
    struct resolving *resolving;      /* the name of the next one, in the resolver */
    unsigned long drops;              /* connections dropped: a callback's check that its own is gone */
    struct request *waiting_head, *waiting_tail;   /* for the connection */
    LDAP *blocking;                   /* the blocking lookup's connection */
    int blocking_host;                /* its server */
    struct referral_conn *referrals;  /* connections to referred servers (ldap_referral.c) */
    int nreferrals;
    unsigned long referral_serial;     /* referral connections made: each one's number */
};

/* One lookup's results so far. */
struct lookup {
    const char *key;
    long expansions;
    int error;                        /* a temporary failure: RETRY */
    struct table_buffer result;
};

/* Starts a search for a special attribute's value, at depth. 0, or -1
 * (the lookup failed; logged). */
typedef int spawn_fn(void *arg, const char *base, int scope, const char *filter, char **attrs, int depth);

/* ldap_results.c */
/* Reads the entries of one search's results into lk (ordinary attributes
 * through result_format; special ones spawned one level deeper). */
void ldap_read_entries(struct table *t, LDAP *ld, LDAPMessage *res, struct lookup *lk, int depth, spawn_fn *spawn,
                       void *arg);
/* A finished search's outcome: 1 read its entries, 0 nothing to read, -1
 * error (logged; *drop set when the connection should go). */
int ldap_search_outcome(struct table *t, LDAP *ld, LDAPMessage *res, const char *base, int depth, const char *key,
                        int *drop);
/* The base and the filter for key (malloc'd, escaped); 0 when the key
 * lacks what the templates need. */
int ldap_make_search(const struct table *t, const char *key, char **base, char **filter);
/* Reads the results libldap has ready on a connection whose fd the loop
 * found readable (ldap_result() with a zero timeout, the table's
 * connection and a referred server's alike), handing each to on_result,
 * which owns it (ldap_msgfree) and returns nonzero when the connection is
 * gone (ld is not touched again). 0 when none is left or on_result
 * stopped; -1 when reading failed, *err the LDAP error: the connection is
 * broken, for the caller to log and drop. */
typedef int ldap_result_fn(void *arg, LDAPMessage *res);
int ldap_read_ready(LDAP *ld, ldap_result_fn *on_result, void *arg, int *err);

/* A table whose connections are made on a worker thread: TLS or SASL,
 * which libldap cannot do without blocking. */
#define LDAP_TABLE_THREADED_SETUP(t) ((t)->tls || (t)->bind == TABLE_BIND_SASL)

/* ldap_setup.c: a connection's settings, copied (copy = 1) for a worker
 * thread, or borrowed from the table (copy = 0). */
struct ldap_setup {
    char *url, *bind_dn, *bind_pw, *ca_file, *ca_dir, *cert, *key, *ciphers, *mechs, *realm, *authz_id;
    int copied, bind, tls, start_tls, require_cert, version, deref, sizelimit, minssf;
    unsigned timeout_ms;
    char diag[400];                   /* why ldap_setup_connect failed */
};
void ldap_setup_fill(struct ldap_setup *s, const struct table *t, const char *url, int copy);
void ldap_setup_release(struct ldap_setup *s);
/* A handle for s->url with the table's options (TLS ones included): an
 * LDAP result code. Calls no Petrel function. */
int ldap_handle_make(const struct ldap_setup *s, int async, LDAP **out);
/* Connects, starts TLS, binds, blocking: the handle, or NULL with s->diag
 * set. Calls no Petrel function (it runs on worker threads). */
LDAP *ldap_setup_connect(struct ldap_setup *s);

/* ldap_setup_job.c: ldap_setup_connect on a worker thread, then done(owner,
 * ld or NULL, why it failed) on the loop; done owns ld. An owner dropped
 * meanwhile sets owner to NULL: the handle is then unbound, done not
 * called. */
struct ldap_setup_job {
    void *owner;
    void (*done)(void *owner, LDAP *ld, const char *diag);
    struct ldap_setup s;              /* filled for url; the caller may adjust it before running */
    LDAP *ld;
};
struct ldap_setup_job *ldap_setup_job_new(const struct table *t, const char *url, void *owner,
                                          void (*done)(void *owner, LDAP *ld, const char *diag));
/* 0, or -1 (no worker thread in this process; the job is freed). */
int ldap_setup_job_run(petrel_module *m, struct ldap_setup_job *job);

/* ldap.c: whether key is looked up at all (UTF-8, domain). */
int ldap_eligible(const struct table *t, const char *key);
/* A server to connect to: a live one at random, or the one that failed
 * longest ago. */
int ldap_pick_host(struct table *t);

/* ldap_blocking.c: the blocking lookup (the table type's lookup), and
 * the closing of its connection. */
int ldap_lookup_blocking(void *handle, const char *key, const char **value, petrel_pool *scratch);
void ldap_blocking_drop(struct table *t);

/* ldap.c: a search's results (NULL: the search failed, logged) for r,
 * from the server at url (a connection to a referred server among them):
 * its entries read, its referrals chased, r answered when it was the
 * last. 1 when the connection the results came from should be dropped
 * (a search error), else 0. r may be gone on return. */
int ldap_search_finished(struct request *r, LDAP *ld, LDAPMessage *res, const struct search_spec *spec,
                         const char *url);

/* ldap_referral.c */
void ldap_spec_free(struct search_spec *spec);
/* A copy of attrs (a NULL-terminated array of the table's names). */
char **ldap_attrs_copy(char *const *attrs);
/* Calls chase(arg, url) for each referral in res (an LDAP_REFERRAL
 * result, each search continuation reference), with the first of its
 * URLs. 0, or -1 when one was unusable or chase failed (logged). */
int ldap_referrals_each(struct table *t, LDAP *ld, LDAPMessage *res, const char *key,
                        int (*chase)(void *arg, const char *url), void *arg);
/* The search of from, asked of the server of a referral URL (its base,
 * scope and filter when it names them): the spec to send (*next, its
 * trail and hops advanced) and the server ("scheme://host:port", *server;
 * both malloc'd). 0, or -1 (hop limit, loop, bad URL: logged). */
int ldap_referral_prepare(struct table *t, const char *key, const char *url, const struct search_spec *from,
                          const char *from_url, struct search_spec *next, char **server);
/* Sends next on the table's connection to server, made on a worker thread
 * if there is none (bounded pool); its results come back through
 * ldap_search_finished. Takes next (freed). 0, or -1 (logged). */
int ldap_referral_send(struct table *t, struct request *r, const char *server, struct search_spec *next);
/* Forgets r's searches on referred servers (abandoned). */
void ldap_referral_forget(struct table *t, struct request *r);
/* r timed out: the connections to referred servers that did not answer
 * its searches in time are dropped (from the loop, their other lookups
 * failing), as Postfix drops a server that does not answer. */
void ldap_referral_timed_out(struct table *t, struct request *r);
/* Closes every connection to a referred server (the table closes),
 * freeing with free_request the lookups still waiting for them. */
void ldap_referral_close(struct table *t, void (*free_request)(struct request *));

/* ldap_open.c: the table type's open. */
void *ldap_table_open(petrel_module *m, const char *name, petrel_pool *pool, struct table_cache_settings *cache,
                      const char **error);

#endif
