/*
 * smtpd internals shared by the session engine, the restriction engine and
 * the TLS glue. Two structs carry the state with different lifetimes, as
 * OpenSMTPD separates them: struct smtpd_session lives as long as the
 * connection, struct smtpd_tx as long as one mail transaction (MAIL to the
 * end of DATA, or RSET); each owns a pool, so RSET frees exactly the
 * transaction and nothing stale survives it.
 *
 * The content path's own interface (cleanup's checks, the before-queue
 * filter, header rewriting, the message objects) is in content_int.h.
 */
#ifndef PETREL_SMTPD_SMTPD_INT_H
#define PETREL_SMTPD_SMTPD_INT_H

#include <errno.h>
#include <stddef.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>

#include <openssl/ssl.h>

#include <petrel/plugin.h>
#include <petrel/pool.h>
#include "lib/buf.h"
#include "mail/addr_class.h"
#include "mail/xforward.h"
#include "mail/sasl_options.h"
#include "mail/hbc.h"
#include "mail/mime.h"
#include "queue/queue.h"
#include "mail/smtp_data.h"
#include "smtpd/restrict.h"
#include "smtpd/restrict_int.h"
#include "mail/smtp_parse.h"

struct event_base;
struct event;
struct bufferevent;
struct evconnlistener;
struct workq;
struct workq_job;
struct tbl_registry;
struct tbl_scope;
struct tbl;
struct mail_rewrite;
struct mail_resolve;
struct cidr_list;
struct namadr_list;
struct restrict_list;
struct restrict_run;
struct anvil;
struct cfg;
struct master_service;
struct module_set;
struct petrel_module;
struct module_session;
struct module_metrics;
struct restrict_result;
struct smtpd_rcpt_maps;
struct mail_maps;
struct evbuffer;
struct smtpd_peer_lookup;
struct hosts_file;
struct policy_conn;
struct restrict_classes;
struct psc_settings;
struct psc_cache;
struct psc_session;
struct anvil_take;
struct smtpd_proxy_read;
struct smtpd_msg_obj;

/* The SMTP phases whose module hooks the session runs. */
enum smtpd_phase { PHASE_CONNECT, PHASE_HELO, PHASE_STARTTLS, PHASE_AUTH, PHASE_MAIL, PHASE_RCPT, PHASE_DATA,
                   PHASE_EOH, PHASE_EOM, PHASE_UNKNOWN, PHASE_RCPT_REJECTED };

enum smtpd_edit_kind { EDIT_HEADER_INSERT, EDIT_HEADER_CHANGE, EDIT_RCPT_ADD, EDIT_RCPT_DELETE };

struct smtpd_edit {
    struct smtpd_edit *next;
    enum smtpd_edit_kind kind;
    size_t index;                     /* insert position, or nth occurrence for a change */
    const char *name, *value;
    size_t value_len;                 /* header edits: value may hold NUL (a rewritten header) */
    unsigned notify;                  /* EDIT_RCPT_ADD: its NOTIFY (a BCC action's is NEVER) */
    const char *orcpt;                /* EDIT_RCPT_ADD: its ORCPT ("type;address"), or NULL */
};

/* Message changes requested by modules, applied when the message is committed. */
struct smtpd_edits {
    struct smtpd_edit *first, *last;
    unsigned count;
    const char *sender;               /* new envelope sender, or NULL */
    int sender_ret;                   /* with it, a new RET (SMTP_DSN_RET_*), 0: unchanged */
    const char *sender_envid;         /* with it, a new ENVID, NULL: unchanged */
    /* the replacement body (message_api.c): an unnamed file in incoming/,
     * CRLF line ends; body_fd is valid while body_replaced is set */
    int body_replaced;
    int body_fd;
    unsigned long long body_len;
    const char *quarantine_reason;
};

/* A new edit of that kind at the end of the list, zeroed otherwise (the
 * transaction's pool owns it). */
static inline struct smtpd_edit *smtpd_edit_append(petrel_pool *pool, struct smtpd_edits *edits,
                                                   enum smtpd_edit_kind kind)
{
    struct smtpd_edit *e = petrel_pool_zalloc(pool, sizeof(*e));
    e->kind = kind;
    if (edits->last)
        edits->last->next = e;
    else
        edits->first = e;
    edits->last = e;
    edits->count++;
    return e;
}

/* Header text keeps its length: a value may hold NUL bytes (Postfix passes
 * them through), so nothing that copies or writes content may use strlen. */
struct smtpd_header {
    const char *name;
    const char *value;                /* as received after the colon (leading space included) */
    size_t name_len, value_len;       /* both strings are also NUL-terminated for C callers */
};

enum tls_level { TLS_LEVEL_NONE, TLS_LEVEL_MAY, TLS_LEVEL_ENCRYPT };

/* How well the client's name is known (Postfix's SMTPD_PEER_CODE_*). */
enum smtpd_peer_status { SMTPD_PEER_OK = 2, SMTPD_PEER_TEMP = 4, SMTPD_PEER_PERM = 5, SMTPD_PEER_FORGED = 6 };

/* receive_override_options: what a receiving service leaves to a later
 * pass (Postfix's INPUT_TRANSP_*). */
#define RO_NO_UNKNOWN_RCPT      1u   /* no_unknown_recipient_checks */
#define RO_NO_ADDRESS_MAPPINGS  2u   /* no_address_mappings */
#define RO_NO_HEADER_BODY       4u   /* no_header_body_checks */
#define RO_NO_MILTERS           8u   /* no_milters */

/* cleanup's settings (content_int.h): what the settings point to */
struct smtpd_cleanup_settings;

/* EHLO keywords smtpd_discard_ehlo_keywords may remove (Postfix's ehlo_mask) */
enum {
    SMTPD_EHLO_8BITMIME = 1u << 0, SMTPD_EHLO_PIPELINING = 1u << 1, SMTPD_EHLO_SIZE = 1u << 2,
    SMTPD_EHLO_VRFY = 1u << 3, SMTPD_EHLO_ETRN = 1u << 4, SMTPD_EHLO_AUTH = 1u << 5, SMTPD_EHLO_VERP = 1u << 6,
    SMTPD_EHLO_STARTTLS = 1u << 7, SMTPD_EHLO_XCLIENT = 1u << 8, SMTPD_EHLO_XFORWARD = 1u << 9,
    SMTPD_EHLO_ENHANCEDSTATUSCODES = 1u << 10, SMTPD_EHLO_DSN = 1u << 11, SMTPD_EHLO_SMTPUTF8 = 1u << 12,
    SMTPD_EHLO_CHUNKING = 1u << 13, SMTPD_EHLO_REQUIRETLS = 1u << 14, SMTPD_EHLO_SILENT = 1u << 15,
};

/* One listener's settings: main.cf plus that master.cf line's -o overrides,
 * resolved once per worker so the hot path never parses configuration. */
struct smtpd_settings {
    petrel_pool *pool;
    const struct cfg *cfg;
    const char *service_name;
    const char *myhostname;
    const char *banner;               /* expanded smtpd_banner */
    const char *mail_name;
    size_t line_length_limit;
    size_t header_size_limit;         /* header_size_limit: the header section modules see */
    unsigned long long message_size_limit;
    unsigned recipient_limit;
    struct timeval timeout;
    int soft_error_limit, hard_error_limit;
    long long error_sleep_time;
    int junk_command_limit;
    size_t sasl_response_limit;       /* smtpd_sasl_response_limit: longest AUTH response line */
    int helo_required;
    int disable_vrfy;
    int delay_reject;
    int smtputf8;
    int forbid_unauth_pipelining;
    int bare_lf_policy;               /* enum data_bare_lf_policy */
    int bare_lf_reject_code;
    struct namadr_list *bare_lf_exclusions;
    struct namadr_list *mynetworks;
    struct namadr_list *conn_limit_exceptions;
    struct namadr_list *debug_peers;    /* debug_peer_list: log these sessions' conversation */
    unsigned conn_count_limit, conn_rate_limit, rate_time_unit;
    int maxproc;                      /* concurrent sessions of this service, 0 = unlimited */
    struct mail_domains domains;      /* the address classes' domain lists */
    struct mail_resolve *resolve;     /* transports and next hops per class (mail/resolve.h): the
                                       * {mail_host} {mail_mailer} {rcpt_host} {rcpt_mailer} facts */
    const char *recipient_delimiter;
    /* recipient validation: smtpd_reject_unlisted_recipient/_sender and the
     * tables that say who exists (rcpt_maps.h) */
    int reject_unlisted_recipient, reject_unlisted_sender;
    struct smtpd_rcpt_maps *rcpt_maps;
    const char *always_bcc;
    unsigned receive_override;        /* RO_* */
    /* smtpd_proxy_filter (proxy.c): where, how long to wait, what EHLO says */
    const char *proxy_filter;
    struct timeval proxy_timeout;
    const char *proxy_ehlo;
    int proxy_speed_adjust;           /* smtpd_proxy_options = speed_adjust */
    struct sockaddr_storage proxy_addr;
    socklen_t proxy_addr_len;
    const char *content_filter;       /* content_filter: "transport:nexthop", "" for none */
    struct smtpd_cleanup_settings *cleanup;   /* shared with the stress settings */
    int soft_bounce;                  /* every 5xx reply goes out as 4xx (smtpd_reply) */
    /* sender_bcc_maps, recipient_bcc_maps (bcc.c); myorigin qualifies a bare
     * address and makes its domain local for their key order */
    struct mail_maps *sender_bcc_maps, *recipient_bcc_maps;
    const char *myorigin;
    const char *const *discard_ehlo_keywords;
    struct mail_maps *discard_ehlo_maps;   /* smtpd_discard_ehlo_keyword_address_maps */
    struct tbl *command_filter;       /* smtpd_command_filter */
    int per_record_deadline;          /* smtpd_per_record_deadline */
    /* TLS */
    SSL_CTX *tls_ctx;
    struct tls_scache *tls_scache;    /* smtpd_tls_session_cache_database */
    enum tls_level tls_level;
    int use_tls, enforce_tls;         /* the legacy smtpd_use_tls / smtpd_enforce_tls, for an empty level */
    int tls_wrappermode;
    int tls_auth_only;
    int tls_ask_ccert, tls_req_ccert;
    struct mail_maps *relay_clientcerts;   /* permit_tls_clientcerts: fingerprints */
    int tls_ccert_verifydepth;
    const char *tls_fingerprint_digest;
    int tls_loglevel;
    int tls_received_header;
    struct timeval starttls_timeout;  /* smtpd_starttls_timeout: the handshake */
    unsigned new_tls_rate_limit;      /* smtpd_client_new_tls_session_rate_limit */
    unsigned message_rate_limit;      /* smtpd_client_message_rate_limit */
    unsigned recipient_rate_limit;    /* smtpd_client_recipient_rate_limit */
    /* SMTP AUTH (smtpd_sasl_auth_enable, smtpd_sasl_type, smtpd_sasl_path): a
     * back-end that runs mechanisms (ABI 1.1) or one that checks passwords
     * (1.0, for which smtpd runs PLAIN and LOGIN); sasl_glue.c */
    int sasl_auth_enable;
    const char *sasl_type;
    const petrel_sasl_server *sasl_server;
    const petrel_sasl_backend *sasl;
    struct petrel_module *sasl_module;
    /* Milters (the milter module reads main.cf's lists; settings.c checks
     * that the service asks for nothing else): the module, when loaded, and
     * whether this service turns it off (its list is empty, or
     * receive_override_options has no_milters). */
    struct petrel_module *milter_module;
    int milters_off;
    const char *sasl_path;
    const char *sasl_service;         /* smtpd_sasl_service */
    const char *sasl_local_domain;    /* smtpd_sasl_local_domain */
    unsigned sasl_security, sasl_tls_security;   /* SASL_OPT_* (mail/sasl_options.h) of the two option lists */
    const char **sasl_mech_filter;    /* smtpd_sasl_mechanism_filter, NULL-terminated */
    int sasl_authenticated_header;    /* smtpd_sasl_authenticated_header */
    int broken_sasl_auth_clients;     /* also announce AUTH=... */
    struct namadr_list *sasl_exceptions;   /* smtpd_sasl_exceptions_networks: never offered AUTH */
    struct namadr_list *xforward_hosts;  /* smtpd_authorized_xforward_hosts: may send XFORWARD */
    struct mail_maps *sender_login_maps; /* smtpd_sender_login_maps: who owns which sender address */
    unsigned auth_rate_limit;         /* smtpd_client_auth_rate_limit (per anvil_rate_time_unit) */
    unsigned sasl_failure_limit, sasl_failure_window, sasl_lockout_time, sasl_failure_delay;
    /* restriction lists, compiled */
    struct restrict_list *client_restrictions, *helo_restrictions, *sender_restrictions,
        *recipient_restrictions, *relay_restrictions, *data_restrictions, *eod_restrictions;
    struct restrict_classes *classes;         /* smtpd_restriction_classes */
    /* reply codes and choices of the restrictions (Postfix's names) */
    int reject_code, defer_code, access_map_reject_code, access_map_defer_code, relay_code, non_fqdn_code,
        invalid_hostname_code, unknown_client_code, unknown_hostname_code, unknown_address_code,
        multi_rcpt_code, plaintext_code;
    int unknown_helo_tf_defer_if_permit;      /* unknown_helo_hostname_tempfail_action = defer_if_permit */
    int unknown_address_tf_defer_if_permit;   /* unknown_address_tempfail_action = defer_if_permit */
    const char *null_access_key;              /* smtpd_null_access_lookup_key */
    int peername_lookup;                      /* smtpd_peername_lookup */
    struct cidr_list *own_addresses;          /* permit_inet_interfaces: inet_interfaces' addresses */
    int uses_unauth_pipelining;       /* reject_unauth_pipelining appears somewhere */
    /* smtpd_upstream_proxy_protocol = haproxy: a PROXY header before SMTP */
    int upstream_proxy;
    struct timeval upstream_proxy_timeout;
    int proxy_families;               /* HAPROXY_FAMILY_* from inet_protocols */
    int borrowed;                     /* tables, lists and TLS belong to the settings it was made like */
};

struct smtpd_worker;

/* One listening socket of a master.cf service (worker.c). A service with a
 * maxproc limit takes a session slot in the shared table before each
 * accept; when the service is full the listener is paused and connections
 * wait in the kernel's backlog until a session of the service ends. */
struct smtpd_listener {
    struct smtpd_worker *worker;
    struct event *ev;                 /* readable: a connection waits in the backlog */
    struct event *retry_timer;        /* out of descriptors: try again shortly */
    struct smtpd_settings *settings;
    struct smtpd_settings *stress_settings;   /* with stress=yes; == settings when nothing differs */
    const char *service_key;          /* "service:NAME": its session count in the shared table */
    int fd;
    int stress_eligible;              /* Postfix: an inet service with maxproc > 1, not loopback-only */
    unsigned stress_epoch;            /* the stress period this worker's sessions were switched for */
    int paused;                       /* the service is full: not accepting */
    /* postscreen (psc.h): this socket is a postscreen service's; settings
     * and service_key are then those of the smtpd pass service that
     * screened clients are handed to, within the same worker */
    struct psc_settings *screen;
    struct psc_cache *psc_cache;      /* its temporary allowlist (shared with listeners of the same file) */
    const char *screen_key;           /* "postscreen:NAME": clients being screened (pre-queue) */
    const char *post_key;             /* "postscreen-post:NAME": screened clients waiting for a session slot */
    /* the pickup role's listener: the maildrop file being submitted, which
     * the queue files of its session record (queue_origin) */
    const struct queue_origin *maildrop_origin;
    /* our end of its connections (connect.c): 0 not known yet; 1 the
     * socket's own address, the same for every connection; -1 a wildcard
     * address: asked per connection */
    int local_fixed;
    /* its connections' TCP_NODELAY (connect.c): 0 not known yet; 1
     * inherited from the listening socket (the master sets it there); -1
     * set per connection */
    int nodelay;
    char local_addr[64];
    char local_port[8];
};

struct smtpd_worker {
    struct event_base *base;
    struct workq *workq;
    struct queue *queue;
    struct queue_id_gen idgen;
    struct anvil *anvil;
    const struct tls_ticket_keys *tickets;   /* shared session ticket keys (the master's), or NULL */
    unsigned index;
    const struct cfg *cfg;
    petrel_pool *pool;                /* worker lifetime */
    struct tbl_registry *tables;
    struct smtpd_listener *listeners;
    int nlisteners;
    struct smtpd_session *sessions;   /* doubly linked, for shutdown */
    unsigned nsessions;
    struct psc_session *screening;    /* postscreen's connections (psc.h), for shutdown */
    unsigned nscreening;
    struct psc_cache **psc_caches;    /* one per postscreen_cache_map file: LMDB wants one handle per process */
    size_t npsc_caches;
    struct event *psc_cleanup_timer;
    struct psc_session *psc_wait_head, *psc_wait_tail;   /* passed, waiting for an smtpd session slot */
    int draining;                     /* stop accepting, finish sessions */
    int stopping;                     /* SIGTERM: 421 idle sessions too */
    struct event *sig_term, *sig_drain, *sig_hup, *drain_timer;
    struct event *wake;               /* the shared table's eventfd: a service slot freed, or stress began */
    struct module_set *modules;       /* this generation's modules, initialised in this worker */
    struct dns_resolver *dns;
    struct hosts_file *hosts;         /* the client-name lookup's /etc/hosts (peer.c), or NULL: DNS only */
    struct dns_resolver *peer_dns;    /* the client-name lookup's DNS: dns, or NULL ("hosts: files", no dns) */
    struct module_metrics *metrics;   /* the shared metrics region (module/metrics_core.h), or NULL */
    struct mail_rewrite *rewrite;     /* canonical maps and masquerading for header rewriting */
    long long queue_minfree;
    const char *dns_resolver;         /* the resolver's spec (lib/dns.h) */
    unsigned module_threads;          /* module_thread_limit: petrel_run_blocking's own pool */
    time_t space_checked;
    int space_ok;
    unsigned instance_seq;            /* the policy protocol's instance numbers */
    unsigned pid;                     /* getpid() at start: a system call, asked once */
    int checking;                     /* smtpd_validate_service: give the configuration's warnings */
};

struct smtpd_rcpt {
    const char *address;
    const char *orcpt;
    unsigned notify;
    const char *params;     /* the RCPT's ESMTP parameters as sent ("" when none), for the milters */
};

/* What went wrong in a transaction: one state, as OpenSMTPD's TX_ERROR_*.
 * Content keeps being read after an error (the session stays in step with
 * the client) and the end of the message answers it. Ordered by
 * precedence: when several happen, the end of the message answers the
 * highest (smtpd_tx_error keeps it). */
enum smtpd_tx_error {
    TX_OK,
    TX_ERROR_CONTENT,   /* a header or body hook refused: tx->content_verdict holds its reply */
    TX_ERROR_IO,        /* writing the queue file failed (tx->io_errno): 451 4.3.0 */
    TX_ERROR_SIZE,      /* over message_size_limit: 552 5.3.4 */
    TX_ERROR_BARE_LF,   /* a bare LF under smtpd_forbid_bare_newline = reject: 5.5.2 */
};

struct smtpd_tx {
    petrel_pool *pool;
    struct smtp_mail_args mail;
    struct smtpd_rcpt *rcpts;
    size_t nrcpts, rcpt_cap;
    struct queue_writer *writer;
    char queue_id[QUEUE_ID_MAX];
    enum smtpd_tx_error error;        /* what the end of the message answers (TX_OK: go on) */
    int io_errno;                     /* the first queue file write error: nothing more is written */
    unsigned long long bdat_total;
    int bdat_pending_cr;              /* BDAT normalisation: CR at a chunk end */
    int discard, hold;                /* verdicts collected during the transaction */
    /* access actions (tables, policy servers) */
    const char *instance;             /* the policy protocol's "instance": set when MAIL is accepted */
    const char *redirect;             /* REDIRECT (also of header/body checks): every recipient goes here */
    const char **bcc;                 /* BCC: extra recipients (NOTIFY=NEVER) */
    size_t nbcc;
    /* always_bcc, sender_bcc_maps, recipient_bcc_maps (bcc.c): looked up at
     * DATA or the first BDAT, before the queue file is created; kept for
     * every file the transaction writes (edits rewrite it) */
    const char **auto_bcc;
    size_t nauto_bcc;
    struct tbl_scope *bcc_lookups;    /* their remote tables' answers; freed with the pool */
    void (*bcc_done)(struct smtpd_session *s, int failed);
    const char **prepend;             /* PREPEND: headers above our Received: */
    size_t nprepend;
    unsigned envelope_changes;        /* REDIRECT and BCC actions so far */
    unsigned envelope_written;        /* ... when the queue file's envelope was written */
    struct workq_job *commit_job;
    /* for modules */
    struct smtpd_edits edits;
    int in_eom;                       /* the end_of_message hooks run: the message may be read */
    struct smtpd_msg_obj *msg_objects;/* body writers modules hold (message_api.c) */
    struct module_message *readers;   /* message readers modules hold (module/message.c) */
    int in_queued;                    /* the queued hooks run: the committed message may be read */
    int body_errno;                   /* a new body could not be written: the message is refused (451) */
    /* The content (cleanup.c): the primary headers as written to the queue
     * file (after header_checks), kept when modules or header rewriting
     * need them, and where things are in the written content. */
    struct smtpd_cleanup *cleanup;
    struct smtpd_header *headers;
    size_t nheaders, header_cap;
    unsigned long long content_start; /* content offset after our Received header */
    unsigned long long rest_start;    /* after the last header kept in headers[] */
    unsigned long long headers_end;   /* where the primary headers end (the empty line, if any) */
    unsigned long long body_start;    /* where the body begins (after the empty line) */
    /* What header_checks did to our own Received header, so that a rewrite
     * (modules' edits) writes it the same way. */
    enum { RECEIVED_KEEP, RECEIVED_DROP, RECEIVED_REPLACE } received_action;
    const char *received_replacement, *received_prepend;
    /* Routing decided while receiving: FILTER (access maps, header/body
     * checks; content_filter by default); REDIRECT (above) from the checks
     * too. A change after the queue file was created is applied by
     * rewriting it. */
    const char *filter;
    /* Who changed the envelope after the queue file was created (the
     * rewrite's log line names them): header/body checks (FILTER, REDIRECT,
     * BCC: checks_bcc of edits.count are theirs) or an access map (FILTER). */
    unsigned envelope_changed;
#define CHANGED_BY_CHECKS 1u
#define CHANGED_BY_ACCESS 2u
    unsigned checks_bcc;
    int verdict_logged;               /* content_verdict came from the checks, which logged it */
    int hold_logged, discard_logged;  /* the checks logged their HOLD / DISCARD */
    /* header/body checks' REJECT, DISCARD, REDIRECT or PASS: the milters
     * get none of this message's content (Postfix's cleanup clears
     * CLEANUP_FLAG_FILTER_ALL, the milters' flag with the checks' own);
     * a milter_header_checks REJECT: no later milter gets it. The milter
     * module asks through petrel_milters_stopped(). */
    int milters_stopped;
    int eom_counter;                  /* CNT_DATA or CNT_BDAT: the command that started the content */
    struct smtpd_proxy *proxy;        /* smtpd_proxy_filter: the filter's side of this transaction */
    unsigned long long proxy_size;    /* content bytes sent to it */
    const char *mail_line;            /* the client's MAIL command, for the filter */
    const char *rcpt_line;            /* the RCPT command being checked, for the filter */
    struct restrict_result content_verdict;   /* a refusal from a header or body hook */
    /* milter_header_checks: a REJECT (logged) answered at the end of
     * message whatever the modules say; after it, a DISCARD or a REDIRECT
     * no more of its actions apply (Postfix's CLEANUP_FLAG_FILTER_ALL). */
    struct restrict_result milter_verdict;
    int milter_checks_done;
    struct milter_checks_wait *milter_wait;   /* a remote milter_header_checks lookup (milter_checks.c) */
};

enum smtpd_state {
    SMTPD_CMD,       /* reading commands */
    SMTPD_DATA,      /* reading DATA content */
    SMTPD_BDAT,      /* reading a BDAT chunk */
    SMTPD_WAIT,      /* an asynchronous step (check, commit) is in progress */
    SMTPD_AUTH,      /* reading an AUTH response line (base64) */
    SMTPD_CLOSING,   /* flushing the last reply, then close */
};

/* BDAT in the current transaction, as Postfix tracks it: after a refused
 * chunk every later chunk is read and answered 551 until BDAT LAST or RSET. */
enum smtpd_bdat_state { BDAT_NONE, BDAT_OK, BDAT_ERROR };

/* Postfix's smtpd_cmd_table, in its order (the disconnect line's); no
 * XCLIENT, which Petrel does not implement (an unknown command here). */
enum smtpd_counter { CNT_HELO, CNT_EHLO, CNT_XFORWARD, CNT_STARTTLS, CNT_AUTH, CNT_MAIL, CNT_RCPT, CNT_DATA,
                     CNT_BDAT, CNT_RSET, CNT_NOOP, CNT_VRFY, CNT_ETRN, CNT_QUIT, CNT_HELP, CNT_UNKNOWN,
                     CNT_MAX };

struct smtpd_session {
    struct smtpd_session *next, *prev;
    petrel_pool *pool;                /* the connection's lifetime: only what is allocated once */
    petrel_pool *scratch;             /* one command: reset before the next command line is read */
    petrel_pool *helo_pool;           /* the HELO name: reset by each HELO/EHLO */
    petrel_pool *login_pool;          /* the SASL login name: reset by each successful AUTH */
    petrel_pool *auth_pool;           /* the AUTH exchange's strings: reset by each AUTH command */
    struct smtpd_worker *worker;
    struct smtpd_listener *listener;
    const struct smtpd_settings *set;
    struct bufferevent *bev;          /* the socket, or the TLS filter on top of it */
    int fd;
    enum smtpd_state state;
    char addr[64];
    char port[8];
    char server_addr[64];             /* our end of the connection */
    char server_port[8];
    const char *name;                 /* the verified client name, or "unknown" (peer.c) */
    const char *reverse_name;         /* the unverified PTR name, or "unknown" */
    int name_status, reverse_name_status;   /* SMTPD_PEER_* */
    const char *rcpt_refusal;         /* PHASE_RCPT_REJECTED: the refusal ("550 5.1.1 ..."), tx pool */
    struct restrict_result rcpt_refused;   /* ... and the checks' result it stands for */
    unsigned conn_count;              /* this client's concurrent sessions of this service (0: not counted) */
    struct smtpd_peer_lookup *peer_lookup;  /* in flight */
    const char *namaddr;              /* "name[addr]" for logs */
    const char *helo;                 /* printable, neutered as Postfix does (helo_pool) */
    int esmtp;
    /* The HELO/EHLO whose hooks run (1), and whether it ended a transaction
     * that was to be discarded (1): Postfix's smtpd sends that HELO to no
     * milter (MILTER_SKIP_FLAGS, before its mail_reset); the milter module
     * asks petrel_milters_stopped in its helo hook. */
    int in_helo_hooks;
    int helo_skips_milters;
    int in_mynetworks;
    int local_submission;             /* from the pickup role (a maildrop file) */
    int debug;                        /* a debug_peer_list client: log commands and replies */
    const char *auth_mech;            /* AUTH in progress: the mechanism (upper case) */
    const char *auth_user;            /* 1.0 back-end, LOGIN: the user name, once given */
    /* SASL (auth.c, sasl_glue.c) */
    const char *sasl_offer;           /* the mechanisms this session may use (helo_pool), NULL: not asked yet */
    int sasl_offer_known;
    void (*sasl_offer_next)(struct smtpd_session *s);   /* what waits for the list */
    petrel_sasl_context sasl_ctx;
    void *sasl_state;                 /* the back-end's state for the exchange */
    int sasl_started;                 /* start() was called: end() is owed */
    int sasl_final;                   /* success with final data: waiting for the client's empty response */
    const char *sasl_final_user;      /* the login that success named (scratch) */
    unsigned sasl_exchanges;
    char sasl_session_id[48];
    const char *auth_initial;         /* AUTH's initial response, kept while the list is asked */
    struct event *auth_delay;         /* the growing delay before a failure is answered */
    char *auth_delayed_reply;         /* that answer (malloc'd) */
    long local_uid;                   /* owner of that maildrop file */
    int bare_lf_excluded;
    const char *client_key;           /* "client:SERVICE:ADDR" in the shared table, when counted */
    int counted_in_service;           /* holds a session slot of its service (maxproc) */
    int tls_active;
    int tls_handshaking;              /* smtpd_starttls_timeout applies */
    const char *tls_info;             /* "TLSv1.3 with cipher X (256/256 bits)" */
    struct smtpd_ccert {              /* the client certificate, when one was presented */
        int present, verified;
        const char *subject, *issuer; /* CNs (issuer: O without a CN) */
        const char *fingerprint, *pubkey_fingerprint;   /* smtpd_tls_fingerprint_digest */
    } ccert;
    const char *protocol;             /* "SMTP", "ESMTP", "ESMTPS", "ESMTPA", ... */
    /* XFORWARD (xforward.c): what an authorized content filter says about
     * the original client, for the next transaction's Received: header,
     * queue file and log line; cleared when the transaction ends. */
    struct xforward_attrs xforward;
    const char *sasl_username, *sasl_method;
    int errors;
    int junk;                         /* junk commands since the last message (smtpd_junk_command_limit) */
    unsigned counters[CNT_MAX];
    unsigned counter_errors[CNT_MAX];
    /* A command counted whose final reply has not gone out (its check waits,
     * or its content, AUTH response or TLS handshake is being read): if the
     * session ends first, it counts as failed, as in Postfix (session.c). */
    int unanswered;
    enum smtpd_counter unanswered_counter;
    int disconnect_logged;            /* one "disconnect from" line per session */
    const char *last_command;          /* for "lost connection after X" */
    int in_input_loop;
    int long_line;                    /* discarding the rest of an overlong line */
    int long_auth_line;               /* the same for an AUTH response line */
    int output_full;                  /* unread replies: commands wait until the client reads */
    /* plain TCP: our own reads and writes on the socket (session_io.c) */
    int direct_io;
    int write_armed;                  /* ... except now: the kernel did not take all, libevent writes */
    int read_suspended;               /* the input is at its watermark */
    struct event *flush_event;        /* active while replies wait for the next write */
    struct event *read_event;
    struct evbuffer_cb_entry *output_watch, *input_watch;
    int quit_after_reply;
    struct smtp_data_reader data;
    unsigned long long bdat_remaining;
    unsigned long long bdat_chunk_size;
    int bdat_last;
    enum smtpd_bdat_state bdat_state;
    const char *bdat_refusal;         /* the reply for the chunk being skipped (scratch) */
    struct smtpd_tx *tx;
    struct smtpd_proxy_read *proxy;   /* reading the PROXY header (smtpd_upstream_proxy_protocol) */
    struct event *delay_timer;        /* error sleep */
    int error_slept;                  /* the next command has waited smtpd_error_sleep_time */
    struct event *record_timer;       /* smtpd_per_record_deadline */
    unsigned ehlo_discard;            /* SMTPD_EHLO_* not announced (smtpd_discard_ehlo_keywords) */
    int ehlo_discard_error;           /* the address maps failed: EHLO gets 421 4.3.0 */
    /* smtpd_discard_ehlo_keyword_address_maps with a remote table: its
     * answer is awaited (connect.c) in parallel with the client's name;
     * the greeting waits for both. */
    struct tbl_scope *ehlo_lookups;
    int ehlo_discard_waiting;
    int peer_name_known;
    struct restrict_run *check;       /* the restriction evaluation in progress */
    struct restrict_run *run;         /* its storage, reused by every evaluation of the session */
    struct tbl_scope *lookups;        /* remote tables' answers for the command being checked (restrict.c) */
    struct tbl_query *filter_query;   /* a remote smtpd_command_filter lookup in flight (session.c) */
    char *filter_line;                /* its command line, in scratch, while it waits */
    size_t filter_len;
    enum smtpd_state filter_state;    /* the state to return to when it answers */
    struct event *sleep_timer;        /* the sleep restriction */
    /* Postfix's defer_if_permit: raised by a restriction, answered at the
     * end of RCPT, DATA or END-OF-MESSAGE unless something refuses; the
     * stage snapshots carry it from CONNECT, HELO and MAIL to RCPT. */
    struct restrict_deferral defer_if_permit;
    int defer_if_permit_client, defer_if_permit_helo, defer_if_permit_sender;
    struct policy_conn *policy_conns; /* policy connections held for the transaction */
    int hangup_after_reply;           /* a 421 or 521 reply was sent: close (Postfix) */
    int greeted;                      /* the 220 went out */
    const char *command_line;         /* the command being handled, as received (scratch) */
    const char *connect_refusal;      /* a module refused the connection: every command's reply (pool) */
    int tls_hooks_pending;            /* implicit TLS finished before the greeting: STARTTLS hooks after it */
    /* modules */
    struct module_session *ms;        /* the module runtime's view (plugin_api.c), opened on first use */
    const char *module_rcpt;          /* the recipient a module restriction or rcpt hook is checking */
    void (*module_done)(struct smtpd_session *s, const struct restrict_result *r);
};

static inline void smtpd_tx_error(struct smtpd_tx *tx, enum smtpd_tx_error e)
{
    if (e > tx->error)
        tx->error = e;
}

/* A queue file write failed with err (0: EIO): the first one is kept. */
static inline void smtpd_tx_io_error(struct smtpd_tx *tx, int err)
{
    if (tx->io_errno == 0)
        tx->io_errno = err ? err : EIO;
    smtpd_tx_error(tx, TX_ERROR_IO);
}

/* Where per-command allocations go: the transaction when there is one
 * (freed with it), else the command scratch pool, so that commands repeated
 * outside a transaction never grow the session. */
static inline petrel_pool *smtpd_cmd_pool(const struct smtpd_session *s)
{
    return s->tx ? s->tx->pool : s->scratch;
}

/* worker.c: what every process that runs sessions sets up (smtpd workers, pickup) */
/* metrics and process_index: the shared metrics region and this process's
 * slot in the master (its gauge column), for the module runtime. */
void smtpd_worker_init(struct smtpd_worker *w, const struct cfg *cfg, struct queue *queue,
                       struct module_set *modules, struct anvil *anvil, unsigned index,
                       struct module_metrics *metrics, unsigned process_index);
void smtpd_worker_fini(struct smtpd_worker *w);

/* connect.c: the start of a session, up to the greeting */
/* A connection accepted on l, served with set (l's settings, or its stress
 * settings); counted_in_service: it holds one of the service's session slots,
 * given back when the session ends. */
void smtpd_accept(struct smtpd_listener *l, const struct smtpd_settings *set, int fd, const struct sockaddr *sa,
                  int salen, int counted_in_service);
/* A client postscreen passed (psc.h): the smtpd session continues on its
 * socket with the addresses postscreen saw (a PROXY header's, perhaps);
 * counted_in_service as for smtpd_accept. */
void smtpd_accept_screened(struct smtpd_listener *l, const struct smtpd_settings *set, int fd,
                           const char *client_addr, const char *client_port, const char *server_addr,
                           const char *server_port, int counted_in_service);
/* A local submission from the pickup role: fd is its end of a socket pair,
 * uid the owner of the maildrop file (the trust SO_PEERCRED gave before). */
void smtpd_accept_local(struct smtpd_listener *l, int fd, long uid);
/* slots.c: a service reached its limit (a connection waits, or the last slot
 * was taken): the warning, the stress period everywhere. */
void smtpd_limit_reached(struct smtpd_listener *l, const struct anvil_take *take);
/* Sessions of a stressed service that wait for their client switch to its
 * stress settings, in this worker. */
void smtpd_apply_stress(struct smtpd_worker *w, const char *service_key, unsigned epoch);
/* Takes a session slot of l's service for a client already accepted (one
 * postscreen passed): 1 taken (the session gives it back), 0 nothing to
 * count (no maxproc, or the table is full), -1 the service is full (the
 * worker is woken when a slot frees). *stressed: use the stress settings. */
int smtpd_take_slot(struct smtpd_listener *l, int *stressed);
/* The worker exits when draining and neither sessions nor screened
 * connections are left. */
void smtpd_worker_check_drained(struct smtpd_worker *w);
/* session.c */
/* SIGTERM: ends the session now with 421 (a DATA in progress is abandoned and
 * its incomplete file removed), unless its message is being committed: that
 * one is answered first, then gets 421 (smtpd_continue). */
void smtpd_session_stop(struct smtpd_session *s);
void smtpd_reply(struct smtpd_session *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* A refusal "CODE ENHANCED TEXT"; a text of several lines ('\n' between
 * them, from a module) becomes a multi-line reply, each line with the codes. */
const char *smtpd_reply_format(struct smtpd_session *s, int code, const char *enhanced, const char *text);
void smtpd_reply_refusal(struct smtpd_session *s, int code, const char *enhanced, const char *text);
void smtpd_session_shutdown(struct smtpd_session *s, const char *reply);
void smtpd_continue(struct smtpd_session *s);
int smtpd_queue_space_ok(struct smtpd_worker *w, unsigned long long message_size_limit);
/* The session engine's services to the command files (commands.c, auth.c,
 * data.c, envelope.c). */
void smtpd_session_attach(struct smtpd_session *s);
/* session_io.c: a plain-TCP session's own reads and writes. attach after
 * the bufferevent's callbacks, watermarks and timeouts are set (and again
 * after STARTTLS: then it hands the socket back to libevent); enable starts
 * reading; stop_input stops it; written: libevent drained the output;
 * set_timeouts: a new smtpd_timeout. */
void smtpd_io_attach(struct smtpd_session *s);
void smtpd_io_detach(struct smtpd_session *s);
void smtpd_io_enable(struct smtpd_session *s);
void smtpd_io_stop_input(struct smtpd_session *s);
void smtpd_io_written(struct smtpd_session *s);
void smtpd_io_set_timeouts(struct smtpd_session *s, const struct timeval *tv);
void smtpd_io_free(struct smtpd_session *s);
void smtpd_session_close_after_flush(struct smtpd_session *s);
/* A new session on fd, in the worker's list but not yet begun (connect.c
 * begins it); freed, whatever its state, by smtpd_session_free. */
struct smtpd_session *smtpd_session_new(struct smtpd_listener *l, const struct smtpd_settings *set, int fd,
                                        int counted_in_service);
void smtpd_session_free(struct smtpd_session *s);
/* The modules' STARTTLS hooks answered (after a handshake, or after the
 * greeting when implicit TLS finished before it). */
void smtpd_starttls_hooked(struct smtpd_session *s, const struct restrict_result *r);
/* Postfix's reject line: "ID: reject: VERB from name[addr]: CODE X.Y.Z text; from=<> to=<> proto= helo=<>".
 * A "reject" (not a "reject_warning") is counted in petrel_smtpd_rejects_total
 * under restriction: what refused (a restriction's or parameter's name,
 * "module:NAME"; NULL counts as "other"), never text from the network. */
void smtpd_log_reject(struct smtpd_session *s, const char *what, const char *verb, const char *restriction, int code,
                      const char *enhanced, const char *text, const char *rcpt);
/* Only the count, for a refusal logged elsewhere (cleanup's header and body checks). */
void smtpd_count_reject(struct smtpd_session *s, const char *verb, const char *restriction, int code);
/* Postfix's log_whatsup(): "ID: what: VERB from name[addr]: text; from=<> to=<> proto= helo=<>" */
void smtpd_log_event(struct smtpd_session *s, const char *what, const char *verb, const char *text,
                     const char *rcpt);
/* A command of kind c arrived: the session's count (the disconnect line) and the metric. */
void smtpd_count_command(struct smtpd_session *s, enum smtpd_counter c);
/* A command of kind c failed: counted in the disconnect line and the error limits. */
void smtpd_count_error(struct smtpd_session *s, enum smtpd_counter c);
/* The command being handled is answered without a reply of ours through
 * smtpd_reply (the EHLO reply, a TLS handshake that completed). */
void smtpd_command_answered(struct smtpd_session *s);
struct smtpd_tx *smtpd_tx_new(struct smtpd_session *s);
void smtpd_tx_free(struct smtpd_session *s);
/* xforward.c */
void smtpd_cmd_xforward(struct smtpd_session *s, const struct smtp_command *cmd);
int smtpd_xforward_allowed(const struct smtpd_session *s);
/* The client as the Received: header and the log name it: XFORWARD's
 * values where a filter gave them, else the connection's. */
const char *smtpd_xforward_name(const struct smtpd_session *s);
const char *smtpd_xforward_addr(const struct smtpd_session *s);
const char *smtpd_xforward_helo(const struct smtpd_session *s);
const char *smtpd_xforward_proto(const struct smtpd_session *s);
/* ", orig_queue_id=X, orig_client=NAME[ADDR]:PORT" for the "client=" log line, or "". */
void smtpd_xforward_log_suffix(const struct smtpd_session *s, char *out, size_t size);
/* Size of the pools of strings a later command replaces (HELO name, SASL login). */
#define SMTPD_SMALL_POOL_SIZE 512

/* A verdict that ends the command: reject or defer. */
static inline int smtpd_refused(const struct restrict_result *r)
{
    return r->verdict == RV_REJECT || r->verdict == RV_DEFER;
}

/* commands.c: one command line (without its line end), dispatched through the command table. */
void smtpd_handle_command(struct smtpd_session *s, char *line, size_t len);

/* auth.c */
void smtpd_cmd_auth(struct smtpd_session *s, const struct smtp_command *cmd);
/* The back-end answered a start() or step() (sasl_glue.c calls it). */
void smtpd_sasl_outcome(struct smtpd_session *s, const petrel_sasl_answer *a);
/* The mechanisms this session may use are known (NULL: the back-end cannot say). */
void smtpd_sasl_mechanisms_known(struct smtpd_session *s, const char *list);
/* For EHLO: learns the mechanisms on offer (possibly later), then next(s). */
void smtpd_sasl_offer_then(struct smtpd_session *s, void (*next)(struct smtpd_session *s));
/* AUTH may be offered now (enabled, and TLS active when smtpd_tls_auth_only). */
int smtpd_sasl_offered_now(const struct smtpd_session *s);
/* The session ends: any exchange ends with it. */
void smtpd_sasl_session_gone(struct smtpd_session *s);

/* sasl_glue.c */
/* sasl_settings.c: reads the SASL parameters into set; -1 with *error (malloc'd). */
int smtpd_sasl_settings(struct smtpd_settings *set, struct module_set *modules, const struct cfg *cfg, int checking,
                        char **error);
unsigned smtpd_sasl_options_now(const struct smtpd_session *s);
int smtpd_sasl_offers(const char *list, const char *mech);
void smtpd_sasl_ask_mechanisms(struct smtpd_session *s);
void smtpd_sasl_start(struct smtpd_session *s, const char *mech, const unsigned char *initial, size_t len);
void smtpd_sasl_step(struct smtpd_session *s, const unsigned char *response, size_t len);
/* Ends the exchange: calls the back-end's end(); an unanswered request goes stale. */
void smtpd_sasl_end(struct smtpd_session *s);
/* One AUTH response line from the input; 1 when more input is needed. */
int smtpd_auth_line(struct smtpd_session *s, struct evbuffer *in);

/* data.c */
void smtpd_cmd_data(struct smtpd_session *s, const struct smtp_command *cmd);
void smtpd_cmd_bdat(struct smtpd_session *s, const struct smtp_command *cmd);
/* Feeds buffered input to the DATA reader; 1 when the message ended. */
int smtpd_consume_data(struct smtpd_session *s);
/* Reads the current BDAT chunk; answers it when it is complete. */
void smtpd_consume_bdat(struct smtpd_session *s);
/* The content is complete (c: CNT_DATA or CNT_BDAT): checks, hooks, commit. */
void smtpd_finish_message(struct smtpd_session *s, enum smtpd_counter c);

/* bcc.c */
/* Looks up the transaction's automatic BCC recipients (tx->auto_bcc), then
 * calls done(s, failed): at once when every table answered at once, else
 * later from the loop, while the session waits (SMTPD_WAIT) and the
 * worker's other sessions go on. failed: a table could not answer (logged
 * as Postfix does); the message must not be accepted. Not called when the
 * transaction ends first. */
void smtpd_bcc_lookup(struct smtpd_session *s, void (*done)(struct smtpd_session *s, int failed));

/* envelope.c */
/* Opens the transaction's queue file and writes the Received: header; -1 with errno. */
int smtpd_open_queue_file(struct smtpd_session *s);
/* A queue file for the transaction's envelope as it stands; its ID goes to
 * tx->queue_id. replacing: the transaction's file so far, whose envelope
 * this one replaces (queue_writer_set_envelope); returns it, or NULL. */
struct queue_writer *smtpd_create_writer(struct smtpd_session *s, struct queue_writer *replacing);
/* Received: header (RFC 5321 4.4), Postfix's layout, into out. */
void smtpd_received_text(struct smtpd_session *s, struct buf *out);
/* The headers of access tables' and policy servers' PREPEND actions, into out
 * (written above our Received: header). */
void smtpd_prepend_text(struct smtpd_session *s, struct buf *out);
/* Writes the PREPEND headers and our Received header into a rewritten queue
 * file as header_checks left it (kept, replaced, dropped, with a header prepended). */
void smtpd_write_received(struct smtpd_session *s);
/* REDIRECT or BCC changed the envelope after the file was opened: write it again. */
int smtpd_envelope_rewrite(struct smtpd_session *s);

/* settings.c */
/* Settings for one of svc's configurations: svc->cfg, or svc->stress_cfg
 * (what its sessions use while the service is under stress). With like (the
 * same service's other settings, which must outlive these), tables,
 * restriction lists and TLS are shared when only plain values differ. NULL
 * with *error (malloc'd) saying where to fix it: "main.cf:LINE: param:
 * problem", or "master.cf, line N: service S: ..." for a -o override. */
struct smtpd_settings *smtpd_settings_create(struct smtpd_worker *w, const struct master_service *svc,
                                             const struct cfg *cfg, const struct smtpd_settings *like,
                                             char **error);
void smtpd_settings_free(struct smtpd_settings *set);

/* peer.c: the client's name (reverse DNS, forward-confirmed); done(s)
 * runs when it is known, possibly before this returns. */
void smtpd_peer_lookup(struct smtpd_session *s, void (*done)(struct smtpd_session *s));
void smtpd_peer_cancel(struct smtpd_session *s);
/* The hosts file the lookups ask first, if nsswitch.conf puts files first
 * (w->hosts; NULL: DNS only, said once in the log), and whether they ask
 * DNS after it (w->peer_dns). */
void smtpd_peer_hosts_open(struct smtpd_worker *w);

/* policy.c: the transaction ended; held policy connections go back to the pool. */
void smtpd_policy_release(struct smtpd_session *s);

/* tls_context.c: the protocol, cipher, its bits and the SNI name the client sent ("" when none). */
void smtpd_tls_facts(struct smtpd_session *s, const char **protocol, const char **cipher, int *bits,
                     const char **sni);

/* commands.c: the EHLO keywords not announced to this client
 * (smtpd_discard_ehlo_keyword_address_maps by address, else
 * smtpd_discard_ehlo_keywords); -1 when the table lookup failed. */
int smtpd_ehlo_discard_mask(struct smtpd_session *s, unsigned *mask);

/* rates.c: Postfix's per-client rate limits. 0 to go on; -1 when the
 * limit is exceeded (the reply is queued; for a wrapper-mode handshake
 * there is none: close). */
int smtpd_rate_mail(struct smtpd_session *s);
int smtpd_rate_rcpt(struct smtpd_session *s);
int smtpd_rate_starttls(struct smtpd_session *s, int wrapper);
/* After a handshake: counts a session that was not resumed. */
int smtpd_tls_count_new_session(struct smtpd_session *s);

/* tls.c */
struct tls_ticket_keys;
struct tls_scache;
/* The listener's context (set's TLS fields are read); tickets may be NULL
 * (a configuration check); *scache is the session cache it uses, or NULL. */
SSL_CTX *smtpd_tls_ctx_create(const struct smtpd_settings *set, const struct tls_ticket_keys *tickets,
                              struct tls_scache **scache, char **error);
int smtpd_tls_start(struct smtpd_session *s, int wrapper);
const char *smtpd_tls_describe(petrel_pool *pool, SSL *ssl);
/* 0, or -1 when the session must end (the reply is queued). */
int smtpd_tls_established(struct smtpd_session *s);

/* plugin_api.c: the glue to the module runtime (module/runtime.h) */
typedef void smtpd_phase_done_fn(struct smtpd_session *s, const struct restrict_result *r);
int smtpd_phase_has_hooks(struct smtpd_session *s, enum smtpd_phase phase);
/* Runs the modules' hooks of a phase; done(s, result) follows, possibly before this returns. */
void smtpd_run_phase(struct smtpd_session *s, enum smtpd_phase phase, const char *arg, smtpd_phase_done_fn *done);
enum smtpd_content_hook { CONTENT_HEADER, CONTENT_EOH, CONTENT_BODY };
void smtpd_plugin_content(struct smtpd_session *s, enum smtpd_content_hook which, const char *name,
                          const char *data, size_t len);
void smtpd_plugin_header(struct smtpd_session *s, const char *name, const char *value);
void smtpd_plugin_body(struct smtpd_session *s, const char *chunk, size_t len);
void smtpd_plugin_queued(struct smtpd_session *s, const char *queue_id);
/* Queued hooks will run for s (commit_done keeps the writer for them). */
int smtpd_plugin_wants_queued(struct smtpd_session *s);
/* A transaction began or ended (s->tx set or NULL): the modules' transaction state follows. */
void smtpd_plugin_tx(struct smtpd_session *s);
void smtpd_plugin_session_gone(struct smtpd_session *s);
/* The module runtime's view of the session (opened on first use), or NULL
 * when the process's session table is full. */
struct module_session *smtpd_module_session(struct smtpd_session *s);
/* Calls one module entry point (a restriction check, a SASL back-end):
 * returns 1 with *r when it answered now, 0 when done(s, result) follows.
 * flags: MODULE_CALL_RESTRICTION (module/runtime.h) for a restriction. */
int smtpd_module_call(struct smtpd_session *s, struct petrel_module *m, const char *label, unsigned flags,
                      petrel_verdict (*invoke)(petrel_session *h, const void *arg), const void *arg,
                      smtpd_phase_done_fn *done, struct restrict_result *r);

/* session.c: runs the modules' hooks of phase, then next(); without hooks,
 * next() at once. */
void smtpd_hooks_then(struct smtpd_session *s, enum smtpd_phase phase, const char *arg, smtpd_phase_done_fn *next);

/* command_channel.c: runs the module control commands the master sends
 * over fd (master/modctl.c); nothing when fd is -1. */
void smtpd_command_channel_start(struct event_base *base, int fd);

#endif
