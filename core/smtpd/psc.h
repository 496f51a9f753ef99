/*
 * postscreen inside the smtpd worker (Postfix's postscreen(8), without the
 * extra process): the internals shared by its files.
 *
 *   postscreen.c   a screened connection's life: the PROXY header, CONNECT,
 *                  the permanent access list, the temporary allowlist, the
 *                  tests before the greeting (pregreet, DNSBL), the verdict
 *                  and the hand-off to an smtpd session on the same socket
 *   psc_smtpd.c    the dummy SMTP engine of the tests after the greeting
 *                  (pipelining, non-SMTP commands, bare newlines)
 *   psc_dnsbl.c    postscreen_dnsbl_sites: parsing, lookups, the weighted score
 *   psc_cache.c    the temporary allowlist (postscreen_cache_map): an LMDB
 *                  file every worker shares
 *   psc_settings.c a postscreen listener's settings
 *
 * Test state follows Postfix's design, because its rules are written in
 * it: every test (pregreet, dnsbl, pipelining, non-SMTP, bare newline) has
 * four flag bits, TODO (to be done in this session), PASS, FAIL and DONE
 * (final; for the tests after the greeting "SKIP": decided, stop testing),
 * laid out so that shifting the TODO bits right gives the PASS bits and
 * left the DONE bits; "all that was to do passed" is then one comparison.
 * Each test also has an expiry time: until then a client that passed it
 * need not pass it again, which is what the cache stores.
 */
#ifndef PETREL_SMTPD_PSC_H
#define PETREL_SMTPD_PSC_H

#include <limits.h>
#include <stddef.h>
#include <sys/time.h>
#include <time.h>

#include <petrel/pool.h>

#include "lib/buf.h"

struct cfg;
struct master_service;
struct namadr_list;
struct smtpd_worker;
struct smtpd_listener;
struct tbl;
struct tbl_scope;
struct cidr_list;
struct bufferevent;
struct event;
struct workq_job;
struct smtpd_proxy_read;

/* ------------------------------------------------------------------ */
/* tests and flags                                                     */

enum psc_test { PSC_T_PREGR, PSC_T_DNSBL, PSC_T_PIPEL, PSC_T_NSMTP, PSC_T_BARLF, PSC_T_COUNT };

#define PSC_F_NOFORWARD  (1u << 0)   /* do not hand this client to smtpd */
#define PSC_F_NEW        (1u << 3)   /* some test was never passed */
#define PSC_F_DENY_FAIL  (1u << 4)   /* permanently denylisted */
#define PSC_F_HANGUP     (1u << 5)   /* the client left: not a test failure */
#define PSC_F_X21        (1u << 6)   /* answer the next command with final_reply and hang up */
#define PSC_F_ALLOW_FAIL (1u << 7)   /* must not be allowlisted (postscreen_allowlist_interfaces) */

#define PSC_K_FAIL 0
#define PSC_K_PASS 1
#define PSC_K_TODO 2
#define PSC_K_DONE 3
#define PSC_F(test, kind) (1u << (8 + 4 * (test) + (kind)))
#define PSC_TODO_TO_PASS(todo) ((todo) >> 1)
#define PSC_TODO_TO_DONE(todo) ((todo) << 1)

#define PSC_MASK_OF(kind) (PSC_F(PSC_T_PREGR, kind) | PSC_F(PSC_T_DNSBL, kind) | PSC_F(PSC_T_PIPEL, kind) | \
                           PSC_F(PSC_T_NSMTP, kind) | PSC_F(PSC_T_BARLF, kind))
#define PSC_MASK_EARLY(kind) (PSC_F(PSC_T_PREGR, kind) | PSC_F(PSC_T_DNSBL, kind))
#define PSC_MASK_SMTPD(kind) (PSC_F(PSC_T_PIPEL, kind) | PSC_F(PSC_T_NSMTP, kind) | PSC_F(PSC_T_BARLF, kind))
#define PSC_MASK_ANY_FAIL (PSC_F_DENY_FAIL | PSC_F_ALLOW_FAIL | PSC_MASK_OF(PSC_K_FAIL))
#define PSC_MASK_ANY_PASS PSC_MASK_OF(PSC_K_PASS)
#define PSC_MASK_ANY_TODO PSC_MASK_OF(PSC_K_TODO)

/* Expiry times with a meaning of their own (else: valid until then). */
#define PSC_STAMP_NEW      ((time_t)0)   /* never passed */
#define PSC_STAMP_DISABLED ((time_t)1)   /* never passed, and the test was off when stored */
#define PSC_STAMP_INVALID  ((time_t)-1)  /* not yet known (never stored) */

enum psc_action { PSC_ACT_IGNORE, PSC_ACT_ENFORCE, PSC_ACT_DROP };

/* ------------------------------------------------------------------ */
/* postscreen_dnsbl_sites                                              */

struct psc_dnsbl_filter {
    unsigned char octet[4][32];      /* one 256-bit set per octet of an A answer */
};

struct psc_dnsbl_site {
    const struct psc_dnsbl_filter *filter;   /* NULL: any answer */
    int weight;
};

/* One DNS list: every (filter, weight) pair given for it, and the name
 * replies show (postscreen_dnsbl_reply_map hides a secret in the name). */
struct psc_dnsbl_domain {
    const char *name;
    const char *reply_name;
    struct psc_dnsbl_site *sites;
    size_t nsites;
};

struct psc_dnsbl_list {
    struct psc_dnsbl_domain *domains;
    size_t ndomains;
};

/* Parses postscreen_dnsbl_sites (domain[=filter][*weight], ...) into pool;
 * NULL with *error (pool text) naming the bad item. */
struct psc_dnsbl_list *psc_dnsbl_parse(const char *const *items, petrel_pool *pool, const char **error);
/* Postfix's filter syntax, d.d.d.d with [n;n..m] fields. NULL, or an error phrase (pool text). */
const char *psc_dnsbl_filter_parse(const char *text, struct psc_dnsbl_filter *out, petrel_pool *pool);
int psc_dnsbl_filter_match(const struct psc_dnsbl_filter *f, const char *answer);
/* "4.3.2.1.domain", or 32 nibbles for IPv6; 0, or -1 for a bad address. */
int psc_dnsbl_query_name(const char *addr, const char *domain, char *out, size_t size);

/* A client's lookups (one per DNS list), started at once. */
struct psc_dnsbl_request;
typedef void psc_dnsbl_done_fn(void *arg);
/* done is called (later, on the loop) when every list has answered or
 * timed out; never after psc_dnsbl_result or psc_dnsbl_cancel. */
struct psc_dnsbl_request *psc_dnsbl_start(struct smtpd_worker *w, const struct psc_dnsbl_list *list,
                                          const char *client_addr, long long timeout_seconds,
                                          psc_dnsbl_done_fn *done, void *arg);
/* The score so far (lists that have not answered count as not listed),
 * the list with the largest weight that listed the client (reply name),
 * and the TTL (the lowest TTL of the answers that decided, -1 when none).
 * Ends the request: its late answers are dropped. */
int psc_dnsbl_result(struct psc_dnsbl_request *r, const char **name, int *ttl);
void psc_dnsbl_cancel(struct psc_dnsbl_request *r);

/* ------------------------------------------------------------------ */
/* the temporary allowlist (postscreen_cache_map)                      */

struct psc_cache;
/* Opens (creating) the LMDB file for a postscreen_cache_map value; NULL
 * with *error (malloc'd). Checks the value only when path_out is NULL
 * (petreld -n). */
int psc_cache_spec(const char *spec, char **path_out, char **error);
struct psc_cache *psc_cache_open(const char *path, char **error);
void psc_cache_close(struct psc_cache *c);
const char *psc_cache_path(const struct psc_cache *c);
/* The entry for a client address into out (NUL-terminated); 1 found, 0 not, -1 error (logged). */
int psc_cache_lookup(struct psc_cache *c, const char *addr, char *out, size_t size);
/* Stores an entry on the worker's thread pool; done(arg) runs on the loop
 * afterwards (NULL job when it could not be queued: done is not called). */
struct workq_job *psc_cache_update(struct smtpd_worker *w, struct psc_cache *c, const char *addr,
                                   const char *value, void (*done)(void *arg, int cancelled), void *arg);
/* The periodic cleanup: every worker asks; the one that finds the last
 * cleanup older than interval removes the entries keep() refuses (on a
 * worker thread: keep must only read), and logs what it did. */
void psc_cache_cleanup(struct smtpd_worker *w, struct psc_cache *c, long long interval, long long retention,
                       int (*keep)(const char *value, time_t now, void *arg), void *arg);
/* Postfix's cache validator: an entry stays while no enabled test expired
 * more than postscreen_cache_retention_time ago. arg: the psc_settings. */
int psc_cache_keep(const char *value, time_t now, void *arg);

/* ------------------------------------------------------------------ */
/* settings                                                            */

/* One item of postscreen_allowlist_interfaces, in order: the first that
 * matches the local address decides, and "!" turns its match into a no
 * (Postfix's match lists: "!192.0.2.8, static:all" is a backup MX). */
struct psc_iface_rule {
    int negate;
    int all;                           /* static:all */
    struct cidr_list *net;             /* otherwise one address or network */
};

/* Parses the items (cidr lists owned by the caller: psc_interfaces_free);
 * -1 with *bad the item it cannot read (a table, a file). */
int psc_interfaces_parse(const char *const *items, petrel_pool *pool, struct psc_iface_rule **rules, size_t *n,
                         const char **bad);
/* Whether a client of local address addr may be allowlisted. */
int psc_interfaces_allow(const struct psc_iface_rule *rules, size_t n, const char *addr);
void psc_interfaces_free(struct psc_iface_rule *rules, size_t n);

/* One item of postscreen_access_list. */
struct psc_acl_item {
    enum { PSC_ACL_PERMIT, PSC_ACL_REJECT, PSC_ACL_DUNNO, PSC_ACL_MYNETWORKS, PSC_ACL_TABLE } kind;
    struct tbl *table;
    const char *spec;
};

struct psc_settings {
    petrel_pool *pool;
    const struct cfg *cfg;             /* the postscreen service's (main.cf + its -o) */
    const char *service_name;
    const char *myhostname;
    /* permanent allow/denylist */
    struct psc_acl_item *acl;
    size_t nacl;
    int acl_remote;                    /* some table of it asks a server: looked up in a scope */
    struct namadr_list *mynetworks;   /* matched by address only (Postfix's server_acl) */
    int denylist_action;
    int respectful_logging;            /* DENYLISTED/ALLOWLISTED, else BLACKLISTED/WHITELISTED */
    struct psc_iface_rule *allowlist_interfaces;   /* postscreen_allowlist_interfaces, in order */
    size_t nallowlist_interfaces;
    /* before the greeting */
    long long greet_wait, greet_wait_stress;
    const char *greet_banner;          /* the "220-" teaser; "" turns the pregreet test off */
    int greet_action;
    long long greet_ttl;
    struct psc_dnsbl_list *dnsbl;      /* NULL: no DNSBL test */
    const char *const *dnsbl_sites;
    int dnsbl_threshold, dnsbl_allowlist_threshold;
    int dnsbl_action;
    long long dnsbl_min_ttl, dnsbl_max_ttl, dnsbl_timeout;
    const char *dnsbl_reply_map;
    struct tbl *dnsbl_reply_table;     /* a remote dnsbl_reply_map: asked when a reply names a list */
    /* after the greeting */
    int pipelining_enable, non_smtp_enable, bare_newline_enable;
    int pipelining_action, non_smtp_action, bare_newline_action;
    long long pipelining_ttl, non_smtp_ttl, bare_newline_ttl;
    int command_count_limit;
    long long command_time_limit, command_time_limit_stress;
    const char *const *forbidden_commands;
    struct tbl **forbidden_tables;
    size_t nforbidden_tables;
    int forbidden_remote;              /* some table of it asks a server: looked up in a scope */
    int disable_vrfy, helo_required;
    int smtputf8;
    int soft_bounce;
    size_t line_length_limit;
    const char *smtpd_banner;
    char *ehlo_reply;                  /* formatted once: Postfix's engine announces no PIPELINING */
    const char *const *discard_ehlo_keywords;
    unsigned long long message_size_limit;
    /* the temporary allowlist */
    const char *cache_map;
    char *cache_path;                  /* NULL: no cache */
    long long cache_retention, cache_cleanup_interval;
    long long min_ttl;                 /* the shortest TTL of any test */
    /* capacity */
    int pre_queue_limit, post_queue_limit;
    int client_connection_count_limit;
    const char *pass_service;          /* smtpd_service_name */
    int upstream_proxy;                /* postscreen_upstream_proxy_protocol = haproxy */
    long long upstream_proxy_timeout;
    int proxy_families;
    const char *upstream_proxy_protocol;
};

/* A postscreen service's settings; NULL with *error (malloc'd) that names
 * the file and line to fix. w may be a validation-only worker. */
struct psc_settings *psc_settings_create(struct smtpd_worker *w, const struct master_service *svc, char **error);
void psc_settings_free(struct psc_settings *ps);
/* The smtpd pass service a postscreen service hands clients to, or NULL. */
const struct master_service *psc_pass_service(const struct master_service *svc);

/* ------------------------------------------------------------------ */
/* a screened connection                                               */

struct psc_session {
    struct psc_session *next, *prev;   /* the worker's screened connections */
    petrel_pool *pool;
    struct smtpd_listener *listener;
    const struct psc_settings *ps;
    int fd;
    char client_addr[64], client_port[8], server_addr[64], server_port[8];
    unsigned flags;
    time_t expire[PSC_T_COUNT];
    struct timeval start_time;         /* of the current test phase */
    const char *test_name;
    const char *final_reply;           /* what a dropped client hears */
    const char *rcpt_reply;            /* what the dummy engine answers RCPT and VRFY */
    struct smtpd_proxy_read *proxy;
    struct event *read_ev;             /* before the greeting: the client talks */
    struct event *timer;               /* the greet wait, or a delayed step */
    unsigned screening_at_connect;     /* clients being screened, this one included */
    struct tbl_scope *acl_lookups;     /* postscreen_access_list's remote lookups in flight */
    struct tbl_scope *cmd_lookups;     /* postscreen_forbidden_commands' (reading waits meanwhile) */
    struct psc_dnsbl_request *dnsbl;
    int dnsbl_score, dnsbl_ttl;        /* dnsbl_score INT_MAX: not yet collected */
    const char *dnsbl_name;
    int dnsbl_name_error;              /* a remote postscreen_dnsbl_reply_map could not name the list */
    struct tbl_scope *dnsbl_lookups;   /* that map's lookup in flight */
    const char *client_key;            /* counted per client (postscreen_client_connection_count_limit) */
    const char *screen_key;            /* counted among the sessions being screened */
    const char *post_key;              /* counted among the clients waiting for an smtpd session slot */
    struct workq_job *cache_job;
    struct psc_session *wait_next;     /* in the worker's queue of passed clients waiting for a slot */
    int waiting;
    struct event *wait_ev;             /* while waiting: the client hangs up */
    /* the dummy SMTP engine */
    struct event *cmd_timer;           /* the whole command line must arrive in time */
    unsigned char inbuf[4096];         /* one read's worth, as Postfix's VSTREAM buffer */
    size_t inpos, inlen;
    struct buf out;                    /* replies the client has not taken yet (bounded) */
    struct buf cmd;
    int read_state;
    int command_count;
    const char *where;
    const char *protocol;
    char *helo, *sender;
    int closing;
};

/* A DNSBL score not computed yet. */
#define PSC_NO_DNSBL_SCORE INT_MAX
/* A postscreen warning line. */
#define psc_warn(...) psc_log_as("postscreen", 1, __VA_ARGS__)

/* psc_accept.c: a new connection on a postscreen listener. */
void psc_accept(struct smtpd_listener *l, int fd);
/* postscreen.c */
/* The tests before the greeting (pregreet, DNSBL), then psc_conclude. */
void psc_early_tests(struct psc_session *s);
/* Records the test results (cache), then hands the client to smtpd or
 * says final_reply and hangs up. */
void psc_conclude(struct psc_session *s);
/* The client went away or broke the connection in the middle of a test. */
void psc_hangup(struct psc_session *s);
/* Drops the client: final_reply, DISCONNECT. */
void psc_drop(struct psc_session *s, const char *reply);
void psc_session_free(struct psc_session *s);
/* postscreen's stress (shared by the workers): re-evaluated when a client
 * starts or stops being screened, and read for the stress-dependent limits */
void psc_stress_update(struct psc_session *s);
int psc_stressed(const struct psc_session *s);
/* The worker's shared-table wake-up: clients waiting for an smtpd slot try again. */
void psc_retry_waiting(struct smtpd_worker *w);
/* SIGTERM: every screened connection ends now. */
void psc_stop_all(struct smtpd_worker *w);
/* "0.1", "6", "0.02": Postfix's delay format (2 significant digits, at
 * most 2 decimals) of the time since start, or of sec + usec. */
void psc_format_delta(const struct timeval *start, char *out, size_t size, long *elapsed_seconds);
void psc_format_tv(long sec, long usec, char *out, size_t size);
/* A postscreen log line: Postfix's postscreen(8) writes them as postfix/postscreen. */
void psc_log(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* The same under another of Postfix's program names (dnsblog), or a warning. */
void psc_log_as(const char *role, int warning, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
/* The tests' expiry times as the cache stores them, and back. */
void psc_print_tests(struct psc_session *s, char *out, size_t size);
void psc_parse_tests(struct psc_session *s, const char *stamps, time_t now);
void psc_todo_tests(struct psc_session *s, time_t now);
void psc_new_tests(struct psc_session *s);

/* psc_smtpd.c */
void psc_smtpd_tests(struct psc_session *s);
/* Best-effort write of one reply (CRLF included) to the client. */
int psc_send(struct psc_session *s, const char *text);

#endif
