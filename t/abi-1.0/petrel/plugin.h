/*
 * The Petrel plugin API: the one header a bundled module or a third-party
 * plugin includes. Nothing else from the core is installed, and bundled
 * modules use nothing else either.
 *
 * A module is a shared object (NAME.so in module_directory) that exports one
 * symbol, `petrel_module_descriptor`, a const struct petrel_module_desc built
 * with designated initialisers (PETREL_MODULE_INIT fills in the ABI fields).
 * It declares its parameters, its hooks, and the named things it provides
 * (restrictions, lookup-table types). The core refuses a module built for
 * another ABI major, or for a newer ABI minor, with a clear message.
 *
 * Hooks follow the SMTP phases and return a verdict from a closed set. A hook
 * that must wait (DNS, Redis, a policy server) calls petrel_suspend(), returns
 * PETREL_PENDING, and later completes the handle exactly once with
 * petrel_resume(). The core enforces a per-module timeout; completing after
 * the timeout or after the session went away is a safe no-op.
 *
 * Replies are validated: a REJECT must carry a 5xx code, a TEMPFAIL a 4xx
 * code; anything else is answered 451 4.3.0 and logged as the module's fault.
 *
 * Memory: petrel_session_pool() lives as long as the connection,
 * petrel_tx_pool() as long as the mail transaction. Allocate from them and
 * never free: a plugin that forgets cannot leak.
 *
 * Every function here is to be called on the thread that called the hook
 * (the role's event loop), except the work function of petrel_run_blocking.
 */
#ifndef PETREL_PLUGIN_H
#define PETREL_PLUGIN_H

#include <stddef.h>
#include <stdarg.h>

#include <petrel/version.h>
#include <petrel/pool.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ------------------------------------------------------------------ */
/* opaque handles                                                      */

typedef struct petrel_module petrel_module;     /* a loaded module instance */
typedef struct petrel_session petrel_session;   /* one SMTP connection */
typedef struct petrel_pending petrel_pending;   /* a suspended hook or restriction */
typedef struct petrel_timer petrel_timer;
typedef struct petrel_watch petrel_watch;

/* ------------------------------------------------------------------ */
/* verdicts                                                            */

typedef enum petrel_verdict {
    PETREL_CONTINUE = 0,   /* no opinion: go on (a restriction's DUNNO) */
    PETREL_ACCEPT,         /* accept this phase; a restriction's OK (ends its list) */
    PETREL_REJECT,         /* permanent refusal: 5xx */
    PETREL_TEMPFAIL,       /* temporary refusal: 4xx */
    PETREL_DISCARD,        /* accept, then silently drop the message */
    PETREL_HOLD,           /* accept into the hold queue (quarantine) */
    PETREL_PENDING,        /* the answer comes later through petrel_resume() */
} petrel_verdict;

/* Sets the reply that goes with REJECT or TEMPFAIL (defaults: 550 5.7.1
 * "Rejected by module NAME" / 451 4.7.1 "Try again later"). text is copied.
 * enhanced may be NULL (derived from the code's class). */
void petrel_set_reply(petrel_session *s, int code, const char *enhanced, const char *text);

/* ------------------------------------------------------------------ */
/* parameters                                                          */

typedef enum petrel_param_type {
    PETREL_PARAM_STRING, PETREL_PARAM_INT, PETREL_PARAM_BOOL, PETREL_PARAM_TIME,
    PETREL_PARAM_SIZE, PETREL_PARAM_LIST,
} petrel_param_type;

typedef struct petrel_param {
    const char *name;          /* must start with the module's name and '_' */
    petrel_param_type type;
    const char *default_value; /* main.cf syntax; may use $name */
    const char *help;
} petrel_param;

/* Values from the configuration generation the module was loaded with
 * (main.cf: master.cf -o overrides of module parameters do not apply). */
const char *petrel_param_string(petrel_module *m, const char *name);
long long petrel_param_int(petrel_module *m, const char *name);   /* INT; TIME in seconds; SIZE in bytes */
int petrel_param_bool(petrel_module *m, const char *name);

/* ------------------------------------------------------------------ */
/* hooks                                                               */

/* One recipient's delivery outcome, reported by the queue manager. */
typedef enum petrel_delivery_status { PETREL_DELIVERY_SENT, PETREL_DELIVERY_DEFERRED,
                                      PETREL_DELIVERY_BOUNCED } petrel_delivery_status;
typedef struct petrel_delivery_result {
    const char *queue_id;
    const char *sender;          /* "" for <> */
    const char *recipient;       /* the address delivered to (after rewriting) */
    const char *original_recipient;
    petrel_delivery_status status;
    const char *dsn;             /* "2.0.0" */
    const char *relay;           /* "mx.example.com[192.0.2.1]:25", "virtual", ... */
    const char *text;            /* the reply or reason, as logged */
    double delay;                /* seconds since the message arrived */
} petrel_delivery_result;

typedef struct petrel_hooks {
    petrel_verdict (*connect)(petrel_session *s);
    petrel_verdict (*helo)(petrel_session *s, const char *helo);
    petrel_verdict (*starttls)(petrel_session *s);
    petrel_verdict (*auth)(petrel_session *s, const char *mechanism, const char *username);
    petrel_verdict (*mail)(petrel_session *s, const char *sender);
    petrel_verdict (*rcpt)(petrel_session *s, const char *recipient);
    petrel_verdict (*data)(petrel_session *s);
    /* Each header as received (name without the colon, value unfolded as
     * received, without the leading space). May not suspend. */
    petrel_verdict (*header)(petrel_session *s, const char *name, const char *value);
    /* The header section is complete. May not suspend (content is streaming in). */
    petrel_verdict (*end_of_headers)(petrel_session *s);
    /* Body bytes as received, CRLF line ends, in chunks of any size. May not suspend. */
    petrel_verdict (*body)(petrel_session *s, const char *chunk, size_t len);
    /* The whole message is known; edits made here are applied before the
     * message is committed. May suspend. */
    petrel_verdict (*end_of_message)(petrel_session *s);
    /* The message is safe on disk (informational). */
    void (*queued)(petrel_session *s, const char *queue_id);
    /* A recipient was delivered, deferred or bounced (informational; runs in
     * the queue manager process, where there is no SMTP session). */
    void (*delivery)(petrel_module *m, const petrel_delivery_result *r);
    void *spare[7];            /* room for growth within an ABI major */
} petrel_hooks;

/* ------------------------------------------------------------------ */
/* restrictions that modules add to smtpd_*_restrictions                */

typedef struct petrel_restriction {
    const char *name;          /* e.g. "check_rate_limit" */
    int nargs;                 /* words that follow it in the list (e.g. 1 for "100/1h") */
    /* Called once per list that names it; may reject the arguments with
     * *error (allocated with the pool given). state is kept for check().
     * Also runs when the configuration is only checked (petreld -n, before
     * a reload), where init has not run: parse arguments, touch nothing else. */
    int (*compile)(petrel_module *m, const char *const *args, void **state, petrel_pool *pool,
                   const char **error);
    /* Decides: CONTINUE (DUNNO), ACCEPT (OK), REJECT, TEMPFAIL, DISCARD, HOLD or PENDING. */
    petrel_verdict (*check)(petrel_session *s, void *state);
} petrel_restriction;

/* ------------------------------------------------------------------ */
/* lookup-table types (TYPE:NAME) that modules add                     */

typedef struct petrel_table_type {
    const char *name;          /* the TYPE, e.g. "lmdb" */
    /* Opens NAME; memory that lives as long as the table comes from pool.
     * Returns the table's handle, or NULL with *error (pool text). Runs in
     * every process that uses the table, possibly before init. */
    void *(*open)(petrel_module *m, const char *name, petrel_pool *pool, const char **error);
    /* 1 found (*value set; valid until the next lookup), 0 not found, -1 error.
     * scratch is reset before every lookup. Must not block for long: it runs
     * on the event loop (use a local file or an in-memory copy). */
    int (*lookup)(void *handle, const char *key, const char **value, petrel_pool *scratch);
    void (*close)(void *handle);   /* may be NULL */
    int pattern;               /* 1: matches patterns; queried once with the whole string */
} petrel_table_type;

/* ------------------------------------------------------------------ */
/* SASL back-ends for SMTP AUTH                                         */

/* smtpd speaks AUTH PLAIN and LOGIN itself (with smtpd_sasl_auth_enable =
 * yes) and asks the back-end named by smtpd_sasl_type to verify the
 * credentials. check() answers ACCEPT (valid), REJECT (invalid) or TEMPFAIL
 * (the back-end is down), possibly later through petrel_suspend() /
 * petrel_resume(). path is smtpd_sasl_path (a socket, a table, a service
 * name: the back-end decides). user and password are NUL-free strings. */
typedef struct petrel_sasl_backend {
    const char *name;          /* the smtpd_sasl_type value, e.g. "dovecot" */
    petrel_verdict (*check)(petrel_session *s, const char *path, const char *mechanism, const char *user,
                            const char *password);
} petrel_sasl_backend;

/* ------------------------------------------------------------------ */
/* the descriptor                                                      */

#define PETREL_BUILD_SIGNATURE "petrel-abi:" PETREL_STRINGIFY(PETREL_ABI_MAJOR) ":lp" \
    PETREL_STRINGIFY(__SIZEOF_POINTER__) ":" PETREL_STRINGIFY(__SIZEOF_LONG__)
#define PETREL_STRINGIFY_(x) #x
#define PETREL_STRINGIFY(x) PETREL_STRINGIFY_(x)

typedef enum petrel_default_action {
    PETREL_ON_FAILURE_CONTINUE = 0,   /* a failing module is skipped (fail open) */
    PETREL_ON_FAILURE_TEMPFAIL,       /* a failing module tempfails the phase (fail closed) */
} petrel_default_action;

typedef struct petrel_module_desc {
    unsigned abi_major, abi_minor;
    const char *build_signature;
    const char *name;          /* must equal the file name without .so */
    const char *version;
    const char *description;
    const petrel_param *params;          /* terminated by an entry with name NULL */
    /* Called in every role process that uses the module, after its
     * parameters are known; return 0, or -1 with *error (static or pool text). */
    int (*init)(petrel_module *m, const char **error);
    void (*fini)(petrel_module *m);
    petrel_hooks hooks;
    const petrel_restriction *restrictions;   /* terminated by an entry with name NULL */
    const petrel_table_type *table_types;     /* terminated by an entry with name NULL */
    const petrel_sasl_backend *sasl_backends; /* terminated by an entry with name NULL */
    /* What applies when a hook times out or the module's circuit is open:
     * the module's choice; admins override with NAME_default_action. */
    petrel_default_action default_action;
    unsigned hook_timeout_ms;                 /* 0: the core default (10 s) */
    void *spare[8];
} petrel_module_desc;

/* Use as: const petrel_module_desc petrel_module_descriptor = { PETREL_MODULE_INIT, .name = ... }; */
#define PETREL_MODULE_INIT .abi_major = PETREL_ABI_MAJOR, .abi_minor = PETREL_ABI_MINOR, \
    .build_signature = PETREL_BUILD_SIGNATURE
#define PETREL_MODULE_SYMBOL "petrel_module_descriptor"

/* Per-module data kept by the module itself (set in init). */
void petrel_module_set_data(petrel_module *m, void *data);
void *petrel_module_data(petrel_module *m);
const char *petrel_module_name(petrel_module *m);

/* ------------------------------------------------------------------ */
/* suspension                                                          */

/* In a hook or restriction check: returns a handle to complete later; the
 * hook then returns PETREL_PENDING. */
petrel_pending *petrel_suspend(petrel_session *s);
/* Completes a suspended call exactly once with its verdict (and, for REJECT
 * or TEMPFAIL, the reply). After a timeout or when the session is gone, this
 * only releases the handle. */
void petrel_resume(petrel_pending *p, petrel_verdict v, int code, const char *enhanced, const char *text);

/* ------------------------------------------------------------------ */
/* facts about the session and the transaction                         */

petrel_pool *petrel_session_pool(petrel_session *s);
petrel_pool *petrel_tx_pool(petrel_session *s);          /* NULL outside a transaction */
petrel_module *petrel_session_module(petrel_session *s); /* the module being called */
/* One pointer per module per session / per transaction, for the module's state. */
void **petrel_session_slot(petrel_session *s);
void **petrel_tx_slot(petrel_session *s);

const char *petrel_client_addr(petrel_session *s);
const char *petrel_client_name(petrel_session *s);       /* "unknown" when not looked up */
const char *petrel_helo(petrel_session *s);              /* NULL before HELO/EHLO */
int petrel_in_mynetworks(petrel_session *s);
const char *petrel_tls_info(petrel_session *s);          /* NULL without TLS */
const char *petrel_sasl_username(petrel_session *s);     /* NULL when not authenticated */
const char *petrel_sender(petrel_session *s);            /* NULL outside a transaction; "" for <> */
const char *petrel_recipient(petrel_session *s);         /* the RCPT being checked, or NULL */
size_t petrel_recipient_count(petrel_session *s);
const char *petrel_recipient_at(petrel_session *s, size_t i);
const char *petrel_queue_id(petrel_session *s);          /* NULL until the queue file exists */
const char *petrel_service_name(petrel_session *s);      /* the master.cf service */

/* Headers seen so far, in order: name and value of header i, or -1 past the end. */
int petrel_header_at(petrel_session *s, size_t i, const char **name, const char **value);

/* ------------------------------------------------------------------ */
/* message edits: recorded, applied by the core before commit          */

/* Header values: the text after the colon. A value that does not start
 * with white space gets the customary single space in front; folded values
 * use CRLF followed by white space. Values the header hook and
 * petrel_header_at() hand out have that one leading space removed. */

int petrel_header_add(petrel_session *s, const char *name, const char *value);     /* at the end */
int petrel_header_insert(petrel_session *s, size_t index, const char *name, const char *value);
/* Changes the nth (1-based) occurrence of name; value NULL deletes it. */
int petrel_header_change(petrel_session *s, const char *name, size_t nth, const char *value);
int petrel_sender_change(petrel_session *s, const char *sender);
int petrel_recipient_add(petrel_session *s, const char *recipient);
int petrel_recipient_delete(petrel_session *s, const char *recipient);
int petrel_body_replace(petrel_session *s, const char *body, size_t len);   /* CRLF line ends */
int petrel_quarantine(petrel_session *s, const char *reason);

/* ------------------------------------------------------------------ */
/* services on the role's event loop                                   */

typedef enum petrel_log_level { PETREL_LOG_DEBUG, PETREL_LOG_INFO, PETREL_LOG_WARNING,
                                PETREL_LOG_ERROR } petrel_log_level;
/* Logs "QUEUEID: text" (or "NOQUEUE: ...") when s is given, Postfix-style. */
void petrel_log(petrel_session *s, petrel_log_level level, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
void petrel_module_log(petrel_module *m, petrel_log_level level, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

typedef void petrel_timer_fn(void *arg);
petrel_timer *petrel_timer_start(petrel_module *m, unsigned ms, petrel_timer_fn *fn, void *arg);
/* Only before it fired: a timer is released when its function runs. */
void petrel_timer_cancel(petrel_timer *t);

#define PETREL_WATCH_READ 1
#define PETREL_WATCH_WRITE 2
typedef void petrel_watch_fn(int fd, int events, void *arg);
petrel_watch *petrel_watch_fd(petrel_module *m, int fd, int events, petrel_watch_fn *fn, void *arg);
void petrel_watch_cancel(petrel_watch *w);

/* Asynchronous DNS through dns_resolver (else the system's resolvers). The
 * callback runs on the loop; values live until it returns. For PTR, name is
 * an IPv4 or IPv6 address. Returns 0, or -1 when no resolver is available
 * (fn is then not called). */
typedef enum petrel_dns_type { PETREL_DNS_A, PETREL_DNS_AAAA, PETREL_DNS_MX, PETREL_DNS_TXT,
                               PETREL_DNS_PTR } petrel_dns_type;
typedef enum petrel_dns_status { PETREL_DNS_OK, PETREL_DNS_NXDOMAIN, PETREL_DNS_NODATA,
                                 PETREL_DNS_TEMPFAIL, PETREL_DNS_BADNAME } petrel_dns_status;
typedef struct petrel_dns_answer {
    petrel_dns_status status;
    size_t count;
    const char *const *values;  /* addresses as text, host names, or TXT strings */
    const int *preferences;     /* MX only: parallel to values, ascending */
} petrel_dns_answer;
typedef void petrel_dns_fn(const petrel_dns_answer *answer, void *arg);
int petrel_dns_lookup(petrel_module *m, petrel_dns_type type, const char *name, petrel_dns_fn *fn, void *arg);

/* Runs work(arg) on a worker thread, then done(arg) back on the loop. */
int petrel_run_blocking(petrel_module *m, void (*work)(void *arg), void (*done)(void *arg), void *arg);

#ifdef __cplusplus
}
#endif
#endif
