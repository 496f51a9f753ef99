/*
 * Private to the SMTP/LMTP client (smtp_client*.c, smtp_addr.c,
 * smtp_connect.c, smtp_proto.c, smtp_content.c): the job, the connection
 * and the client, and the functions the files call across. A job (struct
 * sc_job) is one delivery request for one next hop; a connection (struct
 * sc_conn) outlives its job when it is parked in the cache for the next job
 * to the same next hop. See smtp_client.c for the design.
 */
#ifndef PETREL_DELIVER_SMTP_CLIENT_INT_H
#define PETREL_DELIVER_SMTP_CLIENT_INT_H

#include <stddef.h>
#include <time.h>

#include <sys/socket.h>

#include <event2/util.h>
#include <openssl/ssl.h>

#include <petrel/pool.h>

#include "deliver/smtp_client.h"
#include "deliver/smtp_reply.h"
#include "lib/buf.h"
#include "lib/dns.h"
#include "lib/log.h"

struct bufferevent;
struct event;
struct hbc_wait;
struct sc_line;
struct sc_native;
struct tls_scache;

#define SC_MAX_HOSTS 100          /* MX hosts considered (Postfix's dns_rr list has no limit either) */
#define SC_MAX_ADDRS 1000         /* addresses collected when smtp_mx_address_limit is 0 (no limit) */
#define SC_CHUNK 65536            /* pread size and output low watermark */
#define SC_OUT_HIGH (4 * SC_CHUNK) /* stop reading content above this much pending output */
#define SC_CHECK_WINDOW 32        /* lines whose remote check lookups run together (smtp_content.c) */
#define SC_CMD_MAX 8192           /* longest command we build (addresses plus parameters) */

enum sc_state {
    S_CONNECTING,
    S_GREETING,
    S_EHLO,
    S_HELO,
    S_STARTTLS,
    S_TLS_HANDSHAKE,
    S_AUTH,         /* SMTP AUTH exchange (smtp_sasl.c) */
    S_TXN,          /* awaiting replies to MAIL/RCPT/DATA */
    S_BODY,         /* streaming the content */
    S_DOT,          /* awaiting the end-of-data reply(ies) */
    S_DOT_IGNORE,   /* sent "." after a 354 nobody needed; the reply is ignored */
    S_RSET,         /* RSET before parking (a job may already wait for it) */
    S_IDLE,         /* parked in the cache */
    S_QUIT,
};

/* XFORWARD goes in two commands before MAIL, as Postfix sends it: the
 * client's name, address and port, then protocol, HELO, ident and source. */
enum sc_cmd_kind { CMD_XFORWARD_ADDR, CMD_XFORWARD_PROTO, CMD_MAIL, CMD_RCPT, CMD_DATA };

struct sc_cmd {
    enum sc_cmd_kind kind;
    size_t rcpt;                  /* job recipient index for CMD_RCPT */
};

struct sc_addr {
    char host[256];               /* name for relay=, TLS SNI and verification */
    char addr[128];               /* IP address text, or the unix socket path */
    int family;                   /* AF_INET, AF_INET6, AF_UNIX */
    unsigned port;
};

struct sc_job;

struct sc_conn {
    struct smtp_client *c;
    struct sc_conn *prev, *next;  /* every connection of the client */
    struct sc_job *job;           /* current owner, NULL while parked or closing */
    char *key;                    /* cache key: the next hop */
    struct bufferevent *bev;
    struct event *timer;
    enum sc_state state;
    struct sc_addr addr;
    char relay[400];              /* "mx.example.com[192.0.2.1]:25" (cut to 319 in results) */
    char desc[400];               /* "mx.example.com[192.0.2.1]" for texts */
    unsigned caps;
    unsigned xforward;            /* XFORWARD attributes the EHLO reply announced (XFORWARD_F_*) */
    unsigned long long size_limit;
    int tls;                      /* TLS is up */
    int no_tls;                   /* plaintext retry after a failed opportunistic handshake */
    int reused;                   /* handed over from the cache to the current job */
    int counted;                  /* counted as a session of its job (smtp_mx_session_limit) */
    struct timespec opened;       /* for smtp_connection_reuse_time_limit */
    int busy;                     /* inside one of our callbacks: free later */
    int zombie;                   /* closed while busy */
    struct smtp_reply_reader reader;   /* deliver/smtp_reply.c */
    /* SMTP AUTH (smtp_sasl.c) */
    unsigned server_mechs;        /* mechanisms we know that EHLO offered (bit per mechanism) */
    int server_auth;              /* EHLO offered AUTH at all */
    int authed;                   /* authenticated (or failed to): never cached for another job */
    struct sc_sasl *sasl;         /* the exchange in progress */
    void *sasl_wait;              /* smtp_sasl_password_maps answers (set.sasl_lookup's state) */
};

struct smtp_client {
    struct event_base *base;
    struct smtp_client_settings set;   /* strings point into the copies below; the TLS ones are spent */
    char *helo_name, *myhostname, *fingerprint_digest;
    char **fingerprints;               /* smtp_tls_fingerprint_cert_match, upper case */
    char **verify_match, **secure_match;   /* smtp_tls_verify_cert_match, _secure_cert_match */
    size_t nfingerprints;
    const char *prefix;                /* "smtp" or "lmtp": parameter names in messages */
    struct sockaddr_storage bind4, bind6;   /* smtp_bind_address, smtp_bind_address6 */
    socklen_t bind4_len, bind6_len;         /* 0: not set */
    char bind4_text[64], bind6_text[64];
    struct tls_scache *scache;         /* smtp_tls_session_cache_database */
    SSL_CTX *ssl;
    struct sc_conn *conns;
    struct sc_job *jobs;
    unsigned seed;                     /* rand_r state for shuffling equal MX preferences */
    struct smtp_client_stats stats;
};

struct sc_job {
    struct smtp_client *c;
    struct sc_job *prev, *next;
    petrel_pool *pool;
    const struct dlv_job *job;
    smtp_done_fn *done;
    void *arg;
    struct dlv_result *res;
    unsigned char *final;              /* per recipient: SENT or BOUNCED */
    unsigned char *accepted;           /* per recipient: RCPT accepted in this transaction */
    int any_result;                    /* some recipient has a result text */
    struct event *finish_ev;
    int finishing;
    /* routing */
    char domain[256];                  /* host part of the next hop */
    unsigned port;
    int want_mx, is_unix, literal;
    struct { char name[256]; int pref; } hosts[SC_MAX_HOSTS];
    size_t nhosts, host_next;
    int hosts_from_mx;                 /* hosts came from MX records (soft errors for their lookups) */
    struct sc_addr *addrs;             /* grown in the job's pool */
    size_t naddrs, addrs_cap, addr_next;
    size_t addrs_before;               /* naddrs before the current host's lookups */
    size_t sessions;
    int routed;                        /* MX/host list is known */
    int retry_plain;                   /* reconnect to the last address without TLS */
    int reuse_failed;                  /* a cached connection failed: go fresh */
    struct dns_query *q_mx, *q_a, *q_aaaa;
    int wait_mx, wait_a, wait_aaaa;
    enum dns_status st_a, st_aaaa;
    struct sc_native *native;          /* a getaddrinfo on the client's threads */
    struct sc_conn *conn;
    /* transaction */
    struct sc_cmd *cmds;
    size_t ncmds, nsent, nreplied;
    int mail_ok;
    size_t naccepted;
    size_t lmtp_next;                  /* LMTP: next accepted recipient awaiting its reply */
    unsigned long long body_off;
    int body_bol;
    struct mime_parser *mime;          /* smtp_header_checks and friends: the content as they see it */
    struct buf check_buf;              /* one header or line, NUL-terminated, to look up */
    int check_failed;                  /* a table failed: the transfer is abandoned and deferred */
    /* remote check tables (smtp_content.c, "Waiting for a remote table") */
    struct hbc_wait *check_wait;       /* NULL: every check table is local (lines go out as parsed) */
    int check_fetching;                /* the window's lookups are in flight */
    struct sc_line *lines, **lines_tail;   /* the window: parsed lines waiting for their verdicts */
    size_t nlines;
    petrel_pool *window_pool;          /* the window's answers */
    struct buf ahead;                  /* content read from the queue file, not yet parsed */
    size_t ahead_pos;
    int parse_ended;                   /* mime_parser_end ran */
    unsigned body_col;                 /* bytes of the current content line sent (smtp_line_length_limit) */
    int broke_line;                    /* "breaking line" logged for this delivery */
    int eightbit;                      /* -1 unknown, 0, 1 */
    struct timespec t_start, t_txn;
    double conn_secs;
    int txn_started;
};

/* smtp_client.c: results and the job's driver */
double sc_elapsed(const struct timespec *since);
/* Same host name, ignoring case and a trailing dot. */
int sc_same_host(const char *a, const char *b);
/* Sets the result of recipient i unless it is already final. */
void sc_rcpt_set(struct sc_job *a, size_t i, enum dlv_status st, const char *dsn, const char *relay,
                 const char *fmt, ...) PETREL_PRINTF(6, 7);
/* Same text for every recipient not yet final. */
void sc_pending_set(struct sc_job *a, enum dlv_status st, const char *dsn, const char *relay,
                    const char *fmt, ...) PETREL_PRINTF(5, 6);
/* A server's 5xx for recipient i: final, except under soft_bounce, where it
 * qualifies for the next server as a 4xx would (Postfix's smtp_trouble.c). */
void sc_rcpt_reply_set(struct sc_job *a, size_t i, enum dlv_status st, const char *dsn, const char *relay,
                       const char *fmt, ...) PETREL_PRINTF(6, 7);
/* Appends an address to the job's list (grown in its pool). */
struct sc_addr *sc_addr_add(struct sc_job *a);
/* Whether the job may use another address / another session. */
int sc_address_limit_reached(const struct sc_job *a);
/* Called whenever a step ends: finish, look up, connect, or wait. */
void sc_job_next(struct sc_job *a);

/* smtp_sasl.c: SMTP AUTH */
/* Learns the mechanisms an EHLO reply offered. */
void sc_sasl_ehlo(struct sc_conn *conn, const struct smtp_reply *r);
/* 1 an exchange started, 0 go on with the transaction, -1 the job was deferred. */
int sc_sasl_start(struct sc_conn *conn);
void sc_sasl_reply(struct sc_conn *conn, const struct smtp_reply *r);
void sc_sasl_free(struct sc_conn *conn);
/* smtp_proto.c: AUTH when the job should, then its transaction. */
void sc_conn_ready(struct sc_conn *conn);

/* smtp_addr.c: the next hop, MX and address lookups */
/* Parses the next hop into domain/port/flags; -1 when malformed. */
int sc_parse_nexthop(struct sc_job *a);
/* dns_lookup callback of the next hop's MX query. */
void sc_on_mx(const struct dns_answer *ans, void *arg);
/* Looks up the A and AAAA records of the next host of the MX list. */
void sc_resolve_host(struct sc_job *a);

/* The job is freed: forget its native lookup in flight. */
void sc_native_cancel(struct sc_job *a);

/* smtp_connect.c: connections, timeouts, TLS, the connection cache */
/* Arms the connection's timer; 0 = no timer (only the connect timeout may be 0). */
void sc_conn_arm(struct sc_conn *conn, unsigned secs);
void sc_conn_printf(struct sc_conn *conn, const char *fmt, ...) PETREL_PRINTF(2, 3);
void sc_conn_free_now(struct sc_conn *conn);
/* Closes the connection now (no QUIT); the memory goes when no callback of
 * ours is on the stack. */
void sc_conn_close(struct sc_conn *conn);
/* Ends use of a connection: QUIT, or RSET and park it in the cache. */
void sc_conn_release(struct sc_conn *conn);
/* What the session was doing, for "... while X" texts. */
const char *sc_stage_text(const struct sc_conn *conn);
/* The session on conn failed softly: defer what is pending (or retry a
 * cached connection's job on a fresh one), close, go on with the job. */
void sc_session_fail(struct sc_conn *conn, const char *dsn, const char *fmt, ...) PETREL_PRINTF(3, 4);
void sc_conn_open(struct sc_job *a, const struct sc_addr *addr, int no_tls);
/* A parked (or RSET-pending) connection for this next hop, if any. */
struct sc_conn *sc_cache_take(struct smtp_client *c, const char *key);
/* The server said 220 to STARTTLS: stack the TLS filter and shake hands. */
void sc_tls_start(struct sc_conn *conn);
/* The client's TLS context is made: session cache callbacks. */
void sc_client_tls_init(struct smtp_client *c);

/* smtp_proto.c: the SMTP dialogue */
/* Checks that need the server's capabilities, then MAIL. */
void sc_txn_start(struct sc_job *a);
void sc_conn_send_ehlo(struct sc_conn *conn);
/* bufferevent read callback: reply lines, then the reply's handler. */
void sc_on_read(struct bufferevent *bev, void *arg);

/* smtp_content.c: the message content */
/* Whether the content has 8-bit bytes (read ahead once); -1 on a read error. */
int sc_content_has_8bit(struct sc_job *a);
/* Frees what streaming the content with checks kept (a retry starts anew). */
void sc_body_reset(struct sc_job *a);
/* Streams content into the output buffer up to SC_OUT_HIGH. */
void sc_body_feed(struct sc_job *a);

#endif
