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
struct workq;

enum smtp_tls_level { SMTP_TLS_NONE, SMTP_TLS_MAY, SMTP_TLS_ENCRYPT, SMTP_TLS_FINGERPRINT, SMTP_TLS_VERIFY,
                      SMTP_TLS_SECURE, SMTP_TLS_DANE, SMTP_TLS_DANE_ONLY };
#define SMTP_TLS_NLEVELS (SMTP_TLS_DANE_ONLY + 1)

enum smtp_dns_support { SMTP_DNS_DEFAULT, SMTP_DNS_DISABLED, SMTP_DNS_ENABLED, SMTP_DNS_DNSSEC };
/* struct smtp_client_settings.sasl_lookup: a remote table must answer first. */
#define SMTP_SASL_LOOKUP_WAIT 2
#define SMTP_HOST_DNS 1u          /* smtp_host_lookup: dns */
#define SMTP_HOST_NATIVE 2u       /* smtp_host_lookup: native (getaddrinfo: /etc/hosts, nsswitch) */

/*
 * What one client does, bound from main.cf (or a master.cf service's -o
 * overrides) by smtp_client_settings_bind: smtp_* parameters for an SMTP
 * client, their lmtp_* twins for an LMTP one (Postfix's smtp_params.c and
 * lmtp_params.c). Times are seconds. Strings and lists point into the
 * configuration; smtp_client_create copies what it keeps.
 */
struct smtp_client_settings {
    const char *helo_name;          /* smtp_helo_name / lmtp_lhlo_name */
    const char *myhostname;         /* an MX or A record pointing back at us is a mail loop: bounce 5.4.6 */
    struct dns_resolver *dns;       /* created by the caller (dns_resolver parameter) */
    struct workq *workq;            /* for native host lookups (getaddrinfo blocks); NULL: DNS only */
    int lmtp;                       /* speak LMTP: LHLO, one reply per recipient after DATA */
    unsigned default_port;          /* 25, or 24 for LMTP inet; 0 = that default */
    /* source addresses: smtp_bind_address, smtp_bind_address6 ("" or NULL: the kernel's choice) */
    const char *bind_address, *bind_address6;
    int bind_enforce;               /* smtp_bind_address_enforce: a failed bind defers (4.4.0) */
    /* timeouts; 0 = Postfix's default, except connect_timeout (0: the kernel's) */
    unsigned connect_timeout, helo_timeout, starttls_timeout, mail_timeout, rcpt_timeout, data_timeout,
        data_xfer_timeout, data_done_timeout, rset_timeout, quit_timeout;
    unsigned connection_cache_time; /* idle connection kept for the next job to the same next hop (0: off) */
    unsigned connection_reuse_time; /* a connection older than this is not parked again (0: no limit) */
    int skip_5xx_greeting;          /* a 5xx greeting defers (tries the next server) rather than bounces */
    int always_send_ehlo, never_send_ehlo;
    unsigned line_length_limit;     /* content lines longer than this are broken with CRLF SPACE (0: off) */
    unsigned mx_address_limit;      /* addresses tried per job (0: no limit) */
    unsigned mx_session_limit;      /* sessions reaching the transaction per job (0: no limit) */
    enum smtp_dns_support dns_support;
    int disable_dns;                /* disable_dns_lookups, for dns_support SMTP_DNS_DEFAULT */
    const char *const *host_lookup; /* smtp_host_lookup words */
    unsigned host_lookup_mask;      /* SMTP_HOST_*, from host_lookup and dns_support (settings_bind) */
    int soft_bounce;                /* soft_bounce: a 5xx qualifies for the next server too, as a 4xx */
    /* smtp_send_xforward_command: tell a server that announces XFORWARD
     * (a content filter) who the message's original client was */
    int send_xforward;
    unsigned xforward_timeout;      /* smtp_xforward_timeout */
    /* TLS */
    enum smtp_tls_level tls_level;  /* smtp_tls_security_level */
    int use_tls, enforce_tls;       /* the legacy smtp_use_tls / smtp_enforce_tls, for an empty level */
    const char *tls_cafile;         /* smtp_tls_CAfile, for verify/secure (NULL: the system's CAs) */
    const char *tls_capath;         /* smtp_tls_CApath */
    const char *tls_protocols, *tls_mandatory_protocols;
    const char *tls_ciphers, *tls_mandatory_ciphers;        /* grades */
    const char *const *tls_exclude_ciphers, *const *tls_mandatory_exclude_ciphers;
    const char *tls_high_cipherlist, *tls_medium_cipherlist, *tls_null_cipherlist;
    const char *tls_eecdh_auto_curves, *tls_ffdhe_auto_groups;
    const char *tls_cert_file, *tls_key_file;
    const char *const *tls_chain_files;
    const char *const *tls_fingerprint_cert_match;
    /* names a server certificate must match at verify and secure: hostname
     * (the MX host), nexthop, dot-nexthop (its subdomains), or a name
     * (".example.com": its subdomains) */
    const char *const *tls_verify_cert_match, *const *tls_secure_cert_match;
    const char *tls_fingerprint_digest;
    int tls_loglevel;               /* smtp_tls_loglevel: 1 logs each TLS session, 2 more */
    int tls_note_starttls_offer;    /* log "Host offered STARTTLS" when TLS is not used */
    const char *tls_session_cache;  /* smtp_tls_session_cache_database: "" off, else sessions are resumed */
    unsigned tls_session_cache_timeout;
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
     * written. 1 found (*value malloc'd "user:password"), 0 not, -1 error,
     * or SMTP_SASL_LOOKUP_WAIT: a remote table (pgsql:, socketmap:, ...)
     * has not answered yet. *wait is the connection's lookup state (NULL at
     * first; the lookup may create one and keep its answers there, so the
     * same questions asked again answer at once). On WAIT the client calls
     * sasl_lookup_wait(arg, *wait, resume, resume_arg): 1 when resume
     * (resume_arg) will be called from the loop, 0 when the answers came at
     * once; either way the client then asks its questions again, in the
     * same order. sasl_lookup_end(arg, wait) frees the state (and stops
     * lookups in flight: resume is not called after it). The wait and end
     * functions may be NULL when sasl_lookup never says WAIT. */
    int (*sasl_lookup)(void *arg, void **wait, const char *key, int address, char **value);
    int (*sasl_lookup_wait)(void *arg, void *wait, void (*resume)(void *resume_arg), void *resume_arg);
    void (*sasl_lookup_end)(void *arg, void *wait);
    void *sasl_lookup_arg;
    /* Where TLS handshakes are counted (petrel_smtp_tls_handshakes_total,
     * labelled with the transport's master.cf name); NULL: nowhere. Both
     * must outlive the client. */
    struct module_metrics *metrics;
    const char *metrics_transport;
};

struct cfg;
struct cfg_bind_table;
/* The parameters of each client (config/bind.h). */
extern const struct cfg_bind_table smtp_client_bind_table, lmtp_client_bind_table;

/* Fills *out from cfg: the smtp_* parameters, or lmtp_* ones for an LMTP
 * client, then what they imply (the legacy TLS switches, the DNS support
 * level and host lookup methods). Returns -1 with *error (malloc'd,
 * "parameter: problem") for a value Petrel cannot honour: the dane levels
 * (no DNSSEC-validated TLSA lookups), an unknown host lookup method. */
int smtp_client_settings_bind(const struct cfg *cfg, int lmtp, struct smtp_client_settings *out, char **error);

/* Parses a security level as smtp_tls_policy_maps writes it. 0 or -1. */
int smtp_tls_level_parse(const char *text, enum smtp_tls_level *out);
const char *smtp_tls_level_name(enum smtp_tls_level level);

struct smtp_client;

/* The settings' strings are copied. Returns NULL with *error (malloc'd,
 * "parameter: problem") when a setting cannot be honoured: an unreadable
 * CA or certificate file, a bad protocol or cipher list, a malformed bind
 * address, a dane level. */
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
