/*
 * The SASL part of the plugin API: back-ends that run whole mechanisms
 * (ABI 1.1) and the PLAIN message's split (RFC 4616 2), which smtpd's
 * built-in PLAIN and the sasl module's table back-end both use, so the
 * bytes any client sends meet one parser, fuzzed once
 * (t/fuzz/fuzz_sasl_plain.c). <petrel/plugin.h> includes this header (as
 * it includes <petrel/pool.h>): a plugin includes plugin.h only. The 1.0
 * yes-or-no back-end (petrel_sasl_backend) stays in plugin.h, next to the
 * verdicts it answers with.
 */
#ifndef PETREL_SASL_H
#define PETREL_SASL_H

#include <stddef.h>

#include <petrel/pool.h>

#ifndef PETREL_API
#define PETREL_API __attribute__((visibility("default")))
#endif

#ifdef __cplusplus
extern "C" {
#endif

/* The handles plugin.h declares too (a typedef may be repeated). */
typedef struct petrel_module petrel_module;
typedef struct petrel_session petrel_session;

/* ABI 1.1, added after petrel_milters_stopped (a plugin that calls it is
 * refused by an older 1.1 petreld, at load time).
 *
 * petrel_sasl_plain_split() reads a decoded PLAIN message, [authzid] NUL
 * authcid NUL passwd, bounded by len alone (the bytes come from base64:
 * they are not a string). MALFORMED unless it holds exactly two NULs with
 * a login (authcid) between them; *out is then all zero. Otherwise the
 * fields point into the message, none holds a NUL and none is
 * NUL-terminated. An empty password is OK here: as in Postfix, Dovecot
 * and Cyrus it goes on to the back-end, which refuses it. OTHER_AUTHZID:
 * well formed, but the authorization identity is neither empty nor the
 * login, which a back-end that checks a password cannot grant (refuse it,
 * do not ignore it: the login would act as itself). smtpd answers
 * MALFORMED with 501 5.5.2 and OTHER_AUTHZID with 535 5.7.8. The struct
 * holds RFC 4616's three fields and will not grow. */
#define PETREL_HAVE_SASL_PLAIN_SPLIT 1
typedef struct petrel_sasl_plain {
    const char *authzid, *authcid, *password;
    size_t authzid_len, authcid_len, password_len;
} petrel_sasl_plain;

typedef enum petrel_sasl_plain_verdict {
    PETREL_SASL_PLAIN_OK,
    PETREL_SASL_PLAIN_MALFORMED,       /* not exactly two NULs, or an empty login */
    PETREL_SASL_PLAIN_OTHER_AUTHZID,   /* an authorization identity other than the login */
} petrel_sasl_plain_verdict;

PETREL_API petrel_sasl_plain_verdict petrel_sasl_plain_split(const unsigned char *data, size_t len,
                                                             petrel_sasl_plain *out);

/* ------------------------------------------------------------------ */
/* SASL mechanisms with challenges (ABI 1.1)                           */

/* A SASL server back-end runs whole mechanisms (PLAIN, LOGIN, CRAM-MD5,
 * SCRAM-SHA-256, whatever it knows), challenges included, where a 1.0
 * petrel_sasl_backend only says yes or no to a user and a password.
 * smtpd speaks the SMTP side of RFC 4954 itself: it decodes every client
 * response from base64 once (a bad one is answered 501 5.5.2 without
 * asking the back-end), handles "*" (501 5.7.0) and
 * smtpd_sasl_response_limit, encodes challenges into 334 replies, filters
 * the offered mechanisms by smtpd_sasl_security_options (or
 * smtpd_sasl_tls_security_options under TLS) and
 * smtpd_sasl_mechanism_filter, and logs and answers outcomes as Postfix
 * does. The back-end sees raw bytes only.
 *
 * Every question to a back-end is a request handle (like petrel_pending:
 * no memory, checked by the core). The back-end answers it once, with
 * petrel_sasl_reply() (or petrel_sasl_offer() for a mechanisms request),
 * either before the callback returns or later from the loop (a socket
 * watch, a worker-thread completion). The handle goes stale when it is
 * answered, when the module's NAME_hook_timeout passes (the client then
 * gets 454 4.7.0), when the exchange ends (after end() has returned: end()
 * may still answer it) and when the session ends; an answer through a
 * stale handle is logged and ignored, so a late completion need not know
 * whether anybody still waits. */
typedef struct petrel_sasl_request petrel_sasl_request;
#define PETREL_HAVE_SASL_SERVER 1

/* What a mechanism is (Dovecot's MECH flags, Cyrus' security properties);
 * smtpd_sasl_security_options' noplaintext, noactive, nodictionary and
 * noanonymous drop mechanisms with the matching property,
 * forward_secrecy and mutual_auth keep only those that have it. */
#define PETREL_SASL_PLAINTEXT 0x01        /* the password crosses the wire (PLAIN, LOGIN) */
#define PETREL_SASL_ACTIVE 0x02           /* open to active (non-dictionary) attack */
#define PETREL_SASL_DICTIONARY 0x04       /* open to passive dictionary attack (CRAM-MD5) */
#define PETREL_SASL_ANONYMOUS 0x08        /* ANONYMOUS */
#define PETREL_SASL_FORWARD_SECRECY 0x10
#define PETREL_SASL_MUTUAL_AUTH 0x20      /* the server proves itself too (SCRAM) */

typedef struct petrel_sasl_mechanism {
    const char *name;          /* "SCRAM-SHA-256": upper case, as RFC 4422 names it */
    unsigned properties;       /* PETREL_SASL_* above */
} petrel_sasl_mechanism;

/* What a back-end may know about the session asking. Strings live as long
 * as the exchange (until the back-end's end() has been called). */
typedef struct petrel_sasl_context {
    size_t size;               /* sizeof(petrel_sasl_context) as the core knows it */
    petrel_module *module;     /* the back-end's module */
    petrel_session *session;   /* the session, as a handle of the back-end's module (stale once it ends) */
    const char *path;          /* smtpd_sasl_path: a socket, a table, an application name */
    const char *service;       /* smtpd_sasl_service ("smtp") */
    const char *local_domain;  /* smtpd_sasl_local_domain (the realm), "" for none */
    const char *client_addr, *client_port;
    const char *server_addr, *server_port;   /* where the client connected to */
    int tls;                   /* the session is encrypted (Dovecot's "secured") */
    unsigned security;         /* the PETREL_SASL_* properties the options exclude (for libraries that filter themselves) */
    const char *session_id;    /* a unique name of this exchange, for the back-end's own logs */
    const char *queue_directory;   /* a relative smtpd_sasl_path is relative to it, as in Postfix */
    /* Added in 1.1 after its first release: read it only when the core has
     * it, PETREL_SASL_CONTEXT_HAS(c, client_cert_verified). 1 when the
     * service asks for client certificates (smtpd_tls_ask_ccert or
     * smtpd_tls_req_ccert) and the client presented one that verified
     * (Dovecot's valid-client-cert), else 0. */
    int client_cert_verified;
} petrel_sasl_context;
/* Does the core's context have field? (It may be older than the header.) */
#define PETREL_SASL_CONTEXT_HAS(c, field) \
    ((c)->size >= offsetof(petrel_sasl_context, field) + sizeof((c)->field))

typedef enum petrel_sasl_status {
    PETREL_SASL_CHALLENGE,     /* send data as a 334 challenge and wait for the client's response */
    PETREL_SASL_SUCCESS,       /* authenticated as username; data, when any, is sent as a final 334 first */
    PETREL_SASL_FAILURE,       /* 535 5.7.8 Error: authentication failed: reason */
    PETREL_SASL_TEMPFAIL,      /* 454 4.7.0 Temporary authentication failure: reason (the back-end is down) */
} petrel_sasl_status;

typedef struct petrel_sasl_answer {
    size_t size;               /* sizeof(petrel_sasl_answer): PETREL_SASL_ANSWER_INIT */
    petrel_sasl_status status;
    const void *data;          /* CHALLENGE, SUCCESS: raw bytes (the core base64-encodes them) */
    size_t len;
    /* SUCCESS: the authenticated login (required; what permit_sasl_authenticated,
     * smtpd_sender_login_maps and the logs see). FAILURE: the login that was
     * tried, when known (logged as sasl_username=). Never a password. */
    const char *username;
    const char *reason;        /* FAILURE, TEMPFAIL: for the log and the reply; NULL: a default */
} petrel_sasl_answer;
#define PETREL_SASL_ANSWER_INIT .size = sizeof(petrel_sasl_answer)

/* Start each entry with PETREL_SASL_SERVER_INIT; end with a NULL name. */
typedef struct petrel_sasl_server {
    size_t size;               /* sizeof(petrel_sasl_server): PETREL_SASL_SERVER_INIT */
    const char *name;          /* the smtpd_sasl_type value, e.g. "dovecot" */
    /* The mechanisms it can run for this session (asked at every EHLO and
     * before AUTH): answer with petrel_sasl_offer(), or petrel_sasl_reply()
     * with TEMPFAIL when it cannot say (AUTH is then not offered). */
    void (*mechanisms)(petrel_sasl_request *r, const petrel_sasl_context *c);
    /* Starts mechanism (one the back-end offered, upper case) with the
     * client's initial response: initial NULL when there was none, a
     * zero-length one for "AUTH MECH =". *state is the back-end's own
     * pointer for this exchange, handed to step() and end(). */
    void (*start)(petrel_sasl_request *r, const petrel_sasl_context *c, const char *mechanism,
                  const unsigned char *initial, size_t len, void **state);
    /* The client's response to the last challenge, decoded. */
    void (*step)(petrel_sasl_request *r, const petrel_sasl_context *c, void *state,
                 const unsigned char *response, size_t len);
    /* The exchange is over (success, failure, "*", a timeout, the client
     * left): release state. Called exactly once for every start(), on the
     * loop; a request still unanswered goes stale when it returns (no
     * need to answer it). May be NULL. */
    void (*end)(const petrel_sasl_context *c, void *state);
    /* Added in 1.1 after its first release (a module built without it
     * still loads; the field then reads NULL): checks smtpd_sasl_path for
     * each service that uses this back-end, where the configuration is
     * checked (petreld -n, the start, before a reload), before init: a
     * password table that does not exist, a table type the back-end
     * cannot read. Return 0, or -1 with *error (static or pool text),
     * which the core reports as "FILE:LINE: smtpd_sasl_path: error" and
     * which stops the start. May be NULL. */
    int (*check_path)(petrel_module *m, const char *path, petrel_pool *pool, const char **error);
} petrel_sasl_server;
#define PETREL_SASL_SERVER_INIT .size = sizeof(petrel_sasl_server)

/* Answers a start() or step() request (or a mechanisms request with
 * TEMPFAIL). Copies what it needs. A second answer, or one through a
 * stale handle, is logged and ignored. */
PETREL_API void petrel_sasl_reply(petrel_sasl_request *r, const petrel_sasl_answer *a);
/* Answers a mechanisms request with the n mechanisms the back-end offers (at most 64;
 * a name that is not RFC 4422's, 1-20 of A-Z a-z 0-9 - _, is logged and not offered). */
PETREL_API void petrel_sasl_offer(petrel_sasl_request *r, const petrel_sasl_mechanism *mechanisms, size_t n);
/* The module a request belongs to (known even when the handle is stale). */
PETREL_API petrel_module *petrel_sasl_request_module(petrel_sasl_request *r);

#ifdef __cplusplus
}
#endif
#endif
