/*
 * The SMTP/LMTP client delivery agent (Postfix's smtp(8) and lmtp(8) on one
 * event loop). The queue manager hands it a struct dlv_job for one next hop
 * and gets back one struct dlv_result per recipient through done(). Every
 * step (DNS, connect, TLS, the SMTP dialogue, streaming the content from the
 * queue file) is non-blocking on the caller's libevent loop; one client
 * serves any number of concurrent jobs and keeps idle connections for reuse
 * by the next job to the same next hop. See smtp_client.c for the design.
 */
#ifndef PETREL_DELIVER_SMTP_CLIENT_H
#define PETREL_DELIVER_SMTP_CLIENT_H

#include "deliver/deliver.h"

struct event_base;
struct dns_resolver;

enum smtp_tls_level { SMTP_TLS_NONE, SMTP_TLS_MAY, SMTP_TLS_ENCRYPT, SMTP_TLS_VERIFY, SMTP_TLS_SECURE };

struct smtp_client_settings {
    const char *helo_name;          /* smtp_helo_name, default $myhostname */
    const char *myhostname;         /* an MX or A record pointing back at us is a mail loop: bounce 5.4.6 */
    struct dns_resolver *dns;       /* created by the caller (dns_resolver parameter) */
    enum smtp_tls_level tls_level;  /* smtp_tls_security_level */
    const char *tls_cafile;         /* smtp_tls_CAfile, for verify/secure (NULL: the system's CAs) */
    unsigned connect_timeout, helo_timeout, mail_timeout, rcpt_timeout, data_timeout, data_done_timeout,
        quit_timeout;               /* seconds; Postfix defaults 30 300 300 300 120 600 300; 0 = default */
    int lmtp;                       /* speak LMTP: LHLO, one reply per recipient after DATA */
    unsigned connection_cache_time; /* seconds an idle connection is kept for the next job to the same
                                       next hop (0: off); Postfix smtp_connection_cache_time_limit 2s */
    unsigned default_port;          /* 25, or 24 for LMTP inet; 0 = that default */
    /* SMTP AUTH (smtp_sasl.c): smtp_sasl_auth_enable, the SASL_OPT_* of
     * smtp_sasl_security_options and smtp_sasl_tls_security_options,
     * smtp_sasl_mechanism_filter (NULL-terminated, or NULL), and
     * smtp_sender_dependent_authentication. */
    int sasl_enable;
    unsigned sasl_options, sasl_tls_options;
    const char *const *sasl_mech_filter;
    int sender_dependent_authentication;
    /* smtp_sasl_password_maps: key is a sender address (address = 1: looked
     * up as Postfix's mail_addr_find does), a host name or a next hop as
     * written. 1 found (*value malloc'd "user:password"), 0 not, -1 error. */
    int (*sasl_lookup)(void *arg, const char *key, int address, char **value);
    void *sasl_lookup_arg;
};

/* Parses smtp_tls_security_level ("none", "may", "encrypt", "verify",
 * "secure"; also Postfix's "dane"/"fingerprint" are refused). 0 or -1. */
int smtp_tls_level_parse(const char *text, enum smtp_tls_level *out);

struct smtp_client;

/* The settings' strings are copied. Returns NULL with *error (malloc'd) when
 * the TLS context cannot be built (e.g. an unreadable tls_cafile). */
struct smtp_client *smtp_client_create(struct event_base *base, const struct smtp_client_settings *set,
                                       char **error);
/* Closes every connection (cached or busy) and drops jobs in flight without
 * calling their done(): the caller is tearing down. */
void smtp_client_free(struct smtp_client *c);

typedef void smtp_done_fn(void *arg, const struct dlv_result *results /* job->nrcpt entries, same order */);

/*
 * nexthop: "example.com" (MX lookup: preference order, equal preferences
 * shuffled, A/AAAA fallback when there is no MX, null MX bounces 5.1.10),
 * "example.com:2525" (MX lookup, that port), "[host]" or "[host]:port" (no
 * MX lookup), "[192.0.2.1]:2525". LMTP: "unix:/path/to/socket",
 * "inet:host:port" or "host:port" (never an MX lookup).
 *
 * The job (its strings and arrays, msg and fd) must stay valid until done()
 * has been called. done() is called exactly once, on the loop, never before
 * smtp_client_deliver returns.
 */
void smtp_client_deliver(struct smtp_client *c, const struct dlv_job *job, smtp_done_fn *done, void *arg);

/* Counters for tests and metrics. */
struct smtp_client_stats {
    unsigned long long connections;   /* TCP/unix connections opened */
    unsigned long long reused;        /* jobs that started on a cached connection */
    unsigned cached;                  /* connections idle in the cache right now */
    unsigned open;                    /* connections open right now (busy, cached or saying QUIT) */
};
void smtp_client_get_stats(const struct smtp_client *c, struct smtp_client_stats *out);

#endif
