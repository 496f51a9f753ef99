/*
 * The Petrel plugin API: the one header a bundled module or a third-party
 * plugin includes. Nothing else from the core is installed, and bundled
 * modules use nothing else either.
 *
 * A module is a shared object (NAME.so in module_directory) that exports one
 * symbol, `petrel_module_descriptor`, a const struct petrel_module_desc built
 * with designated initialisers (PETREL_MODULE_INIT fills in the ABI fields).
 * It declares its parameters, its hooks, and the named things it provides
 * (restrictions, lookup-table types, SASL back-ends). The core refuses a
 * module built for another ABI major, or for a newer ABI minor, with a clear
 * message; petreld exports the functions declared here and nothing else.
 *
 * Hooks follow the SMTP phases and return a verdict from a closed set. A hook
 * that must wait (DNS, Redis, a policy server) calls petrel_suspend(), returns
 * PETREL_PENDING, and later completes the call exactly once with
 * petrel_resume(). The core enforces a per-module timeout.
 *
 * Handles: petrel_session, petrel_pending, petrel_timer, petrel_watch,
 * petrel_metric, petrel_message and petrel_body_writer pointers are
 * handles, not memory. The core checks each one
 * it is given: a handle whose session ended (or whose call completed, timer
 * fired, ...) makes the function log and return NULL, 0 or -1, never crash,
 * so a module may keep handles for late callbacks. A session handle also
 * names the module it was handed to: slots, replies, notes and log lines
 * act for that module, whenever the call is made.
 *
 * Callbacks (timers, fd watches, DNS answers, blocking-call completions)
 * run on the role's event loop, never before the call that scheduled them
 * has returned.
 *
 * Replies are validated: a REJECT must carry a 5xx code, a TEMPFAIL a 4xx
 * code; anything else is answered 451 4.3.0 and logged as the module's fault.
 *
 * Memory: petrel_session_pool() lives as long as the connection,
 * petrel_tx_pool() as long as the mail transaction. Allocate from them and
 * never free: a plugin that forgets cannot leak. Memory a late callback
 * uses must be the module's own (malloc), not a session's pool.
 *
 * ABI rules (see doc/plugin-guide.md, "ABI rules"): within ABI major 1,
 * struct layouts never change, fields are only added (at the end of a
 * sized element, or in the descriptor's spare room), functions are only
 * added, and a plugin built against minor N loads into any core of minor
 * N or later. Every element of a descriptor array starts with its size
 * (PETREL_..._INIT), so it can grow.
 *
 * Every function here is to be called on the thread that called the hook
 * (the role's event loop), except the work function of petrel_run_blocking,
 * which may call none of them.
 */
#ifndef PETREL_PLUGIN_H
#define PETREL_PLUGIN_H

#include <stddef.h>
#include <stdarg.h>

#include <petrel/version.h>
#include <petrel/pool.h>
#include <petrel/sasl.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ------------------------------------------------------------------ */
/* opaque handles                                                      */

typedef struct petrel_module petrel_module;     /* a loaded module instance (valid while it is loaded) */
typedef struct petrel_session petrel_session;   /* handle: one SMTP connection, as one module sees it */
typedef struct petrel_pending petrel_pending;   /* handle: a suspended hook or restriction call */
typedef struct petrel_timer petrel_timer;       /* handle */
typedef struct petrel_watch petrel_watch;       /* handle */
typedef struct petrel_table_query petrel_table_query;   /* handle: one lookup a remote table type answers (ABI 1.1) */
typedef struct petrel_table petrel_table;       /* a table a module opened (valid while the module is loaded) */

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
    /* ABI 1.1, added after its first release (an older 1.1 petreld answers
     * them 451 4.3.0 as unknown verdicts): only from a restriction's check
     * (a hook's is answered 451 4.3.0), with a 4xx reply (default 450
     * 4.7.1 "Service unavailable (module NAME)"). Postfix's actions of
     * these names: DEFER_IF_REJECT makes a later 5xx refusal of the same
     * command this 4xx instead; DEFER_IF_PERMIT answers this 4xx at the
     * end of the command unless something refuses it first. Both go on
     * with the list, as DUNNO does. */
    PETREL_DEFER_IF_REJECT,
    PETREL_DEFER_IF_PERMIT,
} petrel_verdict;
#define PETREL_HAVE_DEFER_IF 1

/* Sets the reply that goes with REJECT or TEMPFAIL (defaults: 550 5.7.1
 * "Rejected by module NAME" / 451 4.7.1 "Try again later"). text is copied.
 * enhanced may be NULL (derived from the code's class). It applies to the
 * module's call in progress on the session, or to its suspended call when
 * petrel_resume() is then given no reply of its own. */
PETREL_API void petrel_set_reply(petrel_session *s, int code, const char *enhanced, const char *text);

/* 1.1, added after its first release: the same with a multi-line text,
 * nlines lines (each without its code, the core puts "550-5.7.1 " or
 * "550 5.7.1 " in front). At most PETREL_REPLY_LINES_MAX lines of at most
 * PETREL_REPLY_TEXT_MAX printable characters each. */
PETREL_API void petrel_set_reply_lines(petrel_session *s, int code, const char *enhanced,
                                       const char *const *lines, size_t nlines);
#define PETREL_REPLY_TEXT_MAX 400
#define PETREL_REPLY_LINES_MAX 32

/* ------------------------------------------------------------------ */
/* parameters                                                          */

typedef enum petrel_param_type {
    PETREL_PARAM_STRING, PETREL_PARAM_INT, PETREL_PARAM_BOOL, PETREL_PARAM_TIME,
    PETREL_PARAM_SIZE, PETREL_PARAM_LIST,
} petrel_param_type;

/* One declared parameter. Start each entry with PETREL_PARAM_INIT (its
 * size, so that the struct can grow within ABI 1.x); end the array with an
 * entry whose name is NULL. */
typedef struct petrel_param {
    size_t size;               /* sizeof(petrel_param): PETREL_PARAM_INIT */
    const char *name;          /* must start with the module's name and '_' */
    petrel_param_type type;
    const char *default_value; /* main.cf syntax; may use $name */
    const char *help;
    /* INT, TIME (seconds) and SIZE (bytes): inclusive bounds that petreld -n
     * enforces; min = max = 0 means none, max = 0 alone means no maximum. */
    long long min, max;
    /* STRING: the values allowed (compared without case), or for a LIST the
     * values each item may take; NULL-terminated, or NULL for any. */
    const char *const *choices;
    /* Added within ABI 1.1 (a module built before reads 0): nonzero when
     * the module reads this parameter per master.cf service with
     * petrel_service_config_*, so that a service's -o name=value takes
     * effect. Without it, petreld refuses such an -o (it would not apply:
     * the module reads main.cf's value) unless the admin accepts it in
     * petrel_accept_unimplemented. */
    int per_service;
} petrel_param;
#define PETREL_PARAM_INIT .size = sizeof(petrel_param)

/* Values of the module's own parameters, from the configuration
 * generation the module was loaded with (main.cf's: a service's master.cf
 * -o overrides are read with petrel_service_config_*). A parameter the module did not
 * declare gives NULL or 0 and a warning. */
PETREL_API const char *petrel_param_string(petrel_module *m, const char *name);
PETREL_API long long petrel_param_int(petrel_module *m, const char *name);   /* INT; TIME in seconds; SIZE in bytes */
PETREL_API int petrel_param_bool(petrel_module *m, const char *name);
/* ABI 1.1: a LIST parameter's items (split on commas and white space, { }
 * grouping kept), NULL-terminated; never NULL for a declared parameter. */
PETREL_API const char *const *petrel_param_list(petrel_module *m, const char *name);

/* ABI 1.1: read-only values of the core's own parameters (myhostname,
 * mynetworks, mydestination, queue_directory, ... any parameter Petrel
 * declares), as main.cf sets them or their defaults, expanded. A name that
 * is not a core parameter gives NULL or 0 and a warning. Strings live as
 * long as the module's configuration generation. */
PETREL_API const char *petrel_config_string(petrel_module *m, const char *name);
PETREL_API const char *const *petrel_config_list(petrel_module *m, const char *name);
PETREL_API long long petrel_config_int(petrel_module *m, const char *name);   /* INT; TIME in s; SIZE in bytes */
PETREL_API int petrel_config_bool(petrel_module *m, const char *name);

/* ABI 1.1 (added after its first release: a plugin that calls these is
 * refused by an older 1.1 petreld, at load time): per-service values.
 * master.cf may override parameters for one service (-o name=value); the
 * functions above give main.cf's values, these the value one service
 * sees. The services are those whose sessions run hooks (smtpd's and
 * pickup's), by their master.cf name (column 1, what
 * petrel_service_name() returns), in master.cf order; a module that
 * prepares something per service (in check and init) walks them with
 * petrel_service_count() and petrel_service_at(). name is a core
 * parameter or one the module declared (anything else: NULL or 0 and a
 * warning); a service that is not there gives main.cf's values. Strings
 * live as long as the configuration generation. */
PETREL_API size_t petrel_service_count(petrel_module *m);
PETREL_API const char *petrel_service_at(petrel_module *m, size_t i);   /* NULL past the end */
PETREL_API const char *petrel_service_config_string(petrel_module *m, const char *service, const char *name);
PETREL_API const char *const *petrel_service_config_list(petrel_module *m, const char *service, const char *name);
PETREL_API long long petrel_service_config_int(petrel_module *m, const char *service, const char *name);
PETREL_API int petrel_service_config_bool(petrel_module *m, const char *service, const char *name);
/* Reports a problem with service's value of name as petrel_config_error()
 * does, located where that value is set: "/etc/petrel/master.cf, line 17:
 * service submission: smtpd_milters: ..." for a -o, the main.cf line
 * otherwise. */
PETREL_API void petrel_service_config_error(petrel_module *m, const char *service, const char *name,
                                            const char *fmt, ...) __attribute__((format(printf, 4, 5)));

/* ABI 1.1: reports a problem with one of the module's parameters (or a
 * core parameter it depends on) the way the core reports its own:
 * "/etc/petrel/main.cf:12: dkim_key_file: /etc/dkim.key: No such file or
 * directory". Called from the descriptor's check() it fails petreld -n,
 * the start and the reload; elsewhere (init) it is only logged. */
PETREL_API void petrel_config_error(petrel_module *m, const char *name, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

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
    /* Each header as received: name without the colon; value as received
     * without the one space after the colon (a folded value keeps its CRLF
     * and the white space that starts each continuation line). May not
     * suspend. */
    petrel_verdict (*header)(petrel_session *s, const char *name, const char *value);
    /* The header section is complete. May not suspend (content is streaming in). */
    petrel_verdict (*end_of_headers)(petrel_session *s);
    /* Body bytes as received, CRLF line ends, in chunks of any size. May not suspend. */
    petrel_verdict (*body)(petrel_session *s, const char *chunk, size_t len);
    /* The whole message is known; edits made here are applied before the
     * message is committed. May suspend. */
    petrel_verdict (*end_of_message)(petrel_session *s);
    /* The message is safe on disk (informational), under queue_id, the
     * ID of the 250 reply (edits at end of message never change it). It
     * may read the message with petrel_message_open() until it returns. */
    void (*queued)(petrel_session *s, const char *queue_id);
    /* A recipient was delivered, deferred or bounced (informational; runs in
     * the queue manager process, where there is no SMTP session). It may
     * read the message with petrel_delivery_message_open(m, r, ...) until
     * it returns. */
    void (*delivery)(petrel_module *m, const petrel_delivery_result *r);
    /* 1.1, added after its first release: a command smtpd does not know
     * (the whole line as received, without CRLF), before its "502 5.5.2
     * Error: command not recognized"; a REJECT or TEMPFAIL replaces that
     * reply. May suspend. */
    petrel_verdict (*unknown)(petrel_session *s, const char *command_line);
    /* 1.1, added after its first release: a RCPT TO that smtpd's own
     * checks refused, with the refusal ("550 5.1.1 <u@example.org>:
     * Recipient address rejected: User unknown"), for modules that report
     * rejected recipients (milters that ask for them, as Postfix sends
     * them). Informational: the refusal stands whatever the verdict. May
     * suspend. A petreld without it never calls it. */
    petrel_verdict (*rcpt_rejected)(petrel_session *s, const char *recipient, const char *reply);
    void *spare[5];            /* room for growth within ABI 1.x (new hooks): leave zero */
} petrel_hooks;

/* ------------------------------------------------------------------ */
/* restrictions that modules add to smtpd_*_restrictions                */

/* Start each entry with PETREL_RESTRICTION_INIT; end with a NULL name. */
typedef struct petrel_restriction {
    size_t size;               /* sizeof(petrel_restriction): PETREL_RESTRICTION_INIT */
    const char *name;          /* e.g. "check_rate_limit" */
    int nargs;                 /* words that follow it in the list (e.g. 1 for "100/1h") */
    /* Called once per list that names it, with its arguments (args[nargs]
     * is NULL); may reject the arguments with
     * *error (allocated with the pool given). state is kept for check().
     * Also runs when the configuration is only checked (petreld -n, before
     * a reload), where init has not run: parse arguments, touch nothing else. */
    int (*compile)(petrel_module *m, const char *const *args, void **state, petrel_pool *pool,
                   const char **error);
    /* Decides: CONTINUE (DUNNO), ACCEPT (OK), REJECT, TEMPFAIL, DISCARD, HOLD,
     * DEFER_IF_REJECT, DEFER_IF_PERMIT or PENDING. */
    petrel_verdict (*check)(petrel_session *s, void *state);
    /* ABI 1.1, added after its first release (an older 1.1 petreld refuses
     * a module whose entries have it; one built before reads 0): optional
     * arguments. nargs words are required; after them the core takes more,
     * up to max_args in all (-1: no maximum), as long as the next word is
     * not a restriction (the core's, a module's, or a restriction class).
     * 0 (or anything below nargs): exactly nargs. compile's args then hold
     * the words taken, NULL-terminated (they always are). */
    int max_args;
} petrel_restriction;
#define PETREL_RESTRICTION_INIT .size = sizeof(petrel_restriction)

/* ------------------------------------------------------------------ */
/* lookup-table types (TYPE:NAME) that modules add                     */

/* Start each entry with PETREL_TABLE_TYPE_INIT; end with a NULL name. */
typedef struct petrel_table_type {
    size_t size;               /* sizeof(petrel_table_type): PETREL_TABLE_TYPE_INIT */
    const char *name;          /* the TYPE, e.g. "lmdb" */
    /* Opens NAME; memory that lives as long as the table comes from pool.
     * Returns the table's handle, or NULL with *error (pool text). Runs in
     * every process that uses the table, possibly before init. */
    void *(*open)(petrel_module *m, const char *name, petrel_pool *pool, const char **error);
    /* 1 found (*value set; valid until the next lookup), 0 not found, -1 error.
     * scratch is reset before every lookup. Must not block for long: it runs
     * on the event loop (use a local file or an in-memory copy), except in
     * a remote type (lookup_async below), where it is the bounded blocking
     * form for callers that cannot wait. */
    int (*lookup)(void *handle, const char *key, const char **value, petrel_pool *scratch);
    void (*close)(void *handle);   /* may be NULL */
    int pattern;               /* 1: matches patterns; queried once with the whole string */

    /* Optional: 1 when this open table, unlike the type as a whole, must be
     * queried once with the whole string (an SQL query that uses %u or %d,
     * which Postfix treats as a pattern table). May be NULL. */
    int (*handle_pattern)(void *handle);

    /* Optional, for file-based types that `petrelctl map build` writes. The
     * compiled file is NAME followed by suffix (".cdb"); when the suffix is
     * set, build_open, build_put, build_close and iterate must be too.
     * petrelctl creates an empty temporary file next to the compiled one,
     * has the type fill it, then fsyncs it and renames it into place, so a
     * builder writes only path. petreld notices the renamed file by itself
     * and reopens the table (open, lookup, close) within a second. */
    const char *suffix;
    /* Starts a new table in the (existing, empty) file at path. Returns the
     * builder, or NULL with *error (pool text). */
    void *(*build_open)(petrel_module *m, const char *path, petrel_pool *pool, const char **error);
    /* Stores key and value exactly as given (petrelctl has already folded
     * the case and added Postfix's NUL byte unless told not to). Returns 0
     * added, 1 the key was there already (its value kept, or replaced when
     * replace is set), -1 error with *error. */
    int (*build_put)(void *builder, const void *key, size_t klen, const void *value, size_t vlen, int replace,
                     const char **error);
    /* commit 1: complete the file; 0: abandon it (petrelctl removes it).
     * Releases the builder either way. Returns 0, or -1 with *error. */
    int (*build_close)(void *builder, int commit, const char **error);
    /* Calls fn for every entry of an open table, as stored (postmap -s, and
     * petrelctl's -i and -d, which copy the entries into a new file); stops
     * when fn returns non-zero. Returns 0, or -1 with *error. */
    int (*iterate)(void *handle, int (*fn)(void *arg, const void *key, size_t klen, const void *value, size_t vlen),
                   void *arg, const char **error);

    /* ABI 1.1, remote types (a database, a socketmap server): set
     * lookup_async. The core calls it where a caller can wait (smtpd's
     * restrictions and recipient validation at RCPT, modules'
     * petrel_table_lookup) and the type answers q exactly once with
     * petrel_table_answer(), from the loop (an fd watch, a timer), or
     * before it returns. key is already case folded. A server that is down
     * or slow is PETREL_TABLE_RETRY, never "not found": the client is then
     * told 451 and retries, as with Postfix's DICT_ERR_RETRY. The type
     * keeps its own timeout; the core also gives up on q after the
     * module's NAME_hook_timeout (answering RETRY, with a warning), and q
     * goes stale when the caller stops waiting (the session ended): an
     * answer through a stale handle is logged and ignored, so a late reply
     * from the server needs no bookkeeping. lookup (above) stays required:
     * it is the blocking form, used where nobody can wait (the queue
     * manager's routing, cleanup, petrelctl map query), and must honour
     * the same timeout. */
    void (*lookup_async)(void *handle, petrel_table_query *q, const char *key);
} petrel_table_type;
#define PETREL_TABLE_TYPE_INIT .size = sizeof(petrel_table_type)

/* Answers (ABI 1.1). */
#define PETREL_TABLE_FOUND 1
#define PETREL_TABLE_NOTFOUND 0
#define PETREL_TABLE_RETRY (-1)      /* the table cannot answer now: defer */
/* Answers q: status PETREL_TABLE_*, value (copied) for FOUND. A second
 * answer, or one through a stale handle, is logged and ignored. */
PETREL_API void petrel_table_answer(petrel_table_query *q, int status, const char *value);
/* The table spec ("socketmap:inet:127.0.0.1:9999:virtual") q looks in,
 * for the type's log lines; NULL for a stale handle. */
PETREL_API const char *petrel_table_query_spec(petrel_table_query *q);

/* ABI 1.1: tables for modules. Opens "TYPE:NAME" (any type the core or a
 * loaded module provides, "proxy:" accepted) in init or in a restriction's
 * compile; it stays open until the module is unloaded. NULL with *error
 * (text valid until the next call) when it cannot be opened. flags:
 * PETREL_TABLE_FOLD_CASE lowercases keys, as Postfix does for most maps. */
#define PETREL_TABLE_FOLD_CASE 1
PETREL_API petrel_table *petrel_table_open(petrel_module *m, const char *spec, int flags, const char **error);
/* Looks key up; fn(status, value, arg) runs once on the loop, always after
 * petrel_table_lookup has returned, local table or remote; value lives
 * until fn returns. status is PETREL_TABLE_FOUND, _NOTFOUND or _RETRY.
 * Returns 0, or -1 (fn is then not called) for a NULL table or key, a key
 * over 128 KiB, or a process without an event loop. */
typedef void petrel_table_fn(int status, const char *value, void *arg);
PETREL_API int petrel_table_lookup(petrel_table *t, const char *key, petrel_table_fn *fn, void *arg);
/* ABI 1.1 (added after its first release: a plugin that calls these is
 * refused by an older 1.1 petreld, at load time). Closes a table the
 * module opened, before the module is unloaded (a table per service, a
 * table reopened under a new name). Lookups already asked are still
 * answered (a remote table closes when the last one is); t must not be
 * used after, and a lookup or a second close through it while it is not
 * reused by a later petrel_table_open is a logged refusal. */
PETREL_API void petrel_table_close(petrel_table *t);
/* Opens spec as petrel_table_open would and closes it again: 0, or -1
 * with *error (text valid until the next call: "hash:/etc/x: cannot open
 * /etc/x.lmdb: No such file or directory"). For the descriptor's check()
 * (petreld -n, the start and a reload refuse a table that does not open,
 * as they do for the core's own tables; report it with
 * petrel_config_error()) and for init. */
PETREL_API int petrel_table_check(petrel_module *m, const char *spec, const char **error);

/* ------------------------------------------------------------------ */
/* SASL back-ends for SMTP AUTH                                         */

/* smtpd speaks AUTH PLAIN and LOGIN itself (with smtpd_sasl_auth_enable =
 * yes) and asks the back-end named by smtpd_sasl_type to verify the
 * credentials. check() answers ACCEPT (valid), REJECT (invalid) or TEMPFAIL
 * (the back-end is down), possibly later through petrel_suspend() /
 * petrel_resume(). path is smtpd_sasl_path (a socket, a table, a service
 * name: the back-end decides). user and password are NUL-free strings. */
/* Start each entry with PETREL_SASL_BACKEND_INIT; end with a NULL name. */
typedef struct petrel_sasl_backend {
    size_t size;               /* sizeof(petrel_sasl_backend): PETREL_SASL_BACKEND_INIT */
    const char *name;          /* the smtpd_sasl_type value, e.g. "dovecot" */
    petrel_verdict (*check)(petrel_session *s, const char *path, const char *mechanism, const char *user,
                            const char *password);
} petrel_sasl_backend;
#define PETREL_SASL_BACKEND_INIT .size = sizeof(petrel_sasl_backend)

/* ------------------------------------------------------------------ */
/* control commands: petrelctl MODULE COMMAND [ARGS] (ABI 1.1)         */

/* A module may offer admin commands: `petrelctl greylist list` runs the
 * greylist module's "list" command. petrelctl sends the command to the
 * master over the control socket (so only root, like every petrelctl
 * command that talks to petreld), and the master hands it to one smtpd
 * worker of the current configuration generation, which runs the
 * command's handler on its event loop, after the module's init. A command
 * therefore sees what one process sees: what it reports or changes should
 * be the module's shared state (Redis, a file, shared memory), which any
 * worker reaches, not one process's memory.
 *
 * The handler answers its request handle exactly once, before it returns
 * or later from the loop (after a Redis round trip, a timer): text with
 * petrel_command_print(), then petrel_command_done(). The request goes
 * stale when it is answered, and when NAME_hook_timeout passes without an
 * answer (petrelctl then reports that the module did not answer); text
 * printed or an answer given through a stale handle is logged and ignored.
 * The core checks the argument count against min_args and max_args,
 * takes a leading --json off (for commands with PETREL_COMMAND_JSON;
 * refused for the others), and refuses arguments with control characters,
 * so argv holds printable text only. */
typedef struct petrel_command_request petrel_command_request;   /* a handle, like a petrel_pending */
#define PETREL_HAVE_COMMANDS 1

typedef enum petrel_command_status {
    PETREL_COMMAND_OK = 0,       /* petrelctl prints the text on standard output and exits 0 */
    PETREL_COMMAND_FAILED = 1,   /* the text is an error: standard error, exit status 1 */
    PETREL_COMMAND_USAGE = 2,    /* bad arguments: the text, then the usage line; exit status 2 */
} petrel_command_status;

#define PETREL_COMMAND_JSON 0x01u   /* flags: answers in JSON when asked (petrelctl MODULE COMMAND --json) */

/* Start each entry with PETREL_COMMAND_INIT; end with a NULL name. */
typedef struct petrel_command {
    size_t size;               /* sizeof(petrel_command): PETREL_COMMAND_INIT */
    const char *name;          /* "list": lower-case letters, digits, '-' and '_' */
    const char *usage;         /* its arguments as the usage line shows them ("[CLIENT]"), or NULL */
    const char *help;          /* one line: what it does */
    int min_args, max_args;    /* arguments after the command's name (--json aside); max_args -1: no maximum */
    unsigned flags;            /* PETREL_COMMAND_JSON */
    /* Runs the command; argv[0..argc-1] are its arguments (argv[argc] is
     * NULL), valid until the request is answered or goes stale. */
    void (*run)(petrel_command_request *r, int argc, const char *const *argv);
} petrel_command;
#define PETREL_COMMAND_INIT .size = sizeof(petrel_command)

/* The module the request is for (known even when the handle is stale). */
PETREL_API petrel_module *petrel_command_module(petrel_command_request *r);
/* 1 when petrelctl asked for JSON (--json), else 0. */
PETREL_API int petrel_command_json(petrel_command_request *r);
/* Appends text to the answer. The answer holds at most about 1 MiB; what
 * goes past that is dropped and the answer says it was cut. */
PETREL_API void petrel_command_print(petrel_command_request *r, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
/* Appends s as a JSON string (quotes and escapes included; NULL as null). */
PETREL_API void petrel_command_print_json_string(petrel_command_request *r, const char *s);
/* Answers the request with what was printed (a second answer, or one
 * through a stale handle, is logged and ignored). */
PETREL_API void petrel_command_done(petrel_command_request *r, petrel_command_status status);

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
    /* Frees what init made. Also called, after the module's tables are
     * closed, in a process where init never ran but the module's data is
     * set (a table type's open, which may run before init, kept state
     * there). */
    void (*fini)(petrel_module *m);
    petrel_hooks hooks;
    const petrel_restriction *restrictions;   /* terminated by an entry with name NULL */
    const petrel_table_type *table_types;     /* terminated by an entry with name NULL */
    const petrel_sasl_backend *sasl_backends; /* terminated by an entry with name NULL */
    /* What applies when a hook times out or the module's circuit is open:
     * the module's choice; admins override with NAME_default_action. */
    petrel_default_action default_action;
    unsigned hook_timeout_ms;                 /* 0: the core default (10 s) */
    /* ABI 1.1: checks the module's configuration where init has not run
     * (petreld -n, the master at start and before it accepts a reload): a
     * key file that does not exist, a malformed URL, a socket path that is
     * not a socket. Report each problem with petrel_config_error() and
     * return -1; 0 when all is well. May be NULL. */
    int (*check)(petrel_module *m);
    /* ABI 1.1: SASL back-ends that run whole mechanisms, challenges
     * included (see "SASL mechanisms with challenges" below); each entry
     * starts with PETREL_SASL_SERVER_INIT, the array ends with an entry
     * whose name is NULL. Read only from modules built for minor 1 or
     * later. */
    const struct petrel_sasl_server *sasl_servers;
    /* ABI 1.1: admin commands, run as `petrelctl NAME COMMAND [ARGS]` (see
     * "control commands" below); each entry starts with
     * PETREL_COMMAND_INIT, the array ends with an entry whose name is
     * NULL. Read only from modules built for minor 1 or later. */
    const struct petrel_command *commands;
    void *spare[5];                           /* room for growth within ABI 1.x: leave zero */
} petrel_module_desc;

/* The one symbol a module exports (declared here so that the definition
 * has a prototype, and visible even when the module is built with
 * -fvisibility=hidden). Define it as:
 *   const petrel_module_desc petrel_module_descriptor = { PETREL_MODULE_INIT, .name = ... }; */
extern PETREL_API const petrel_module_desc petrel_module_descriptor;

#define PETREL_MODULE_INIT .abi_major = PETREL_ABI_MAJOR, .abi_minor = PETREL_ABI_MINOR, \
    .build_signature = PETREL_BUILD_SIGNATURE
#define PETREL_MODULE_SYMBOL "petrel_module_descriptor"

/* Per-module data kept by the module itself (set in init, or in a table
 * type's open: fini frees it either way). */
PETREL_API void petrel_module_set_data(petrel_module *m, void *data);
PETREL_API void *petrel_module_data(petrel_module *m);
PETREL_API const char *petrel_module_name(petrel_module *m);

/* ------------------------------------------------------------------ */
/* suspension                                                          */

/* In a hook or restriction check that may suspend: returns a handle to
 * complete later, and the hook returns PETREL_PENDING (suspending twice in
 * one call gives the same handle). NULL (logged) outside the module's own
 * call or in a hook that may not suspend. A hook that suspends and then
 * returns a verdict without resuming gets that verdict; its handle is
 * cancelled. */
PETREL_API petrel_pending *petrel_suspend(petrel_session *s);
/* Completes a suspended call exactly once with its verdict (and, for REJECT
 * or TEMPFAIL, the reply: code 0 with NULL texts takes the one set with
 * petrel_set_reply, else the defaults). The session moves on at the next
 * loop turn, after the caller returns. A second resume, a resume after the
 * timeout or after the session ended is logged and ignored. Resumed inside
 * the hook itself (before it returns), the verdict is the answer whatever
 * the hook then returns (return PETREL_PENDING; anything else is logged). */
PETREL_API void petrel_resume(petrel_pending *p, petrel_verdict v, int code, const char *enhanced, const char *text);
/* The session the suspended call belongs to, as a handle for the module
 * that suspended; NULL once the call completed, timed out or its session
 * ended (asking is how a late callback learns that: nothing is logged). */
PETREL_API petrel_session *petrel_pending_session(petrel_pending *p);

/* ------------------------------------------------------------------ */
/* facts about the session and the transaction                         */

/* Every function taking a session returns NULL, 0 or -1 (and logs) when
 * the session has ended. */
PETREL_API petrel_pool *petrel_session_pool(petrel_session *s);
PETREL_API petrel_pool *petrel_tx_pool(petrel_session *s);          /* NULL outside a transaction */
/* The module the handle was handed to (yours); known even after the
 * session ended, since the module is part of the handle. */
PETREL_API petrel_module *petrel_session_module(petrel_session *s);
/* One pointer per module per session / per transaction, for the module's
 * state (the handle's module's slot). */
PETREL_API void **petrel_session_slot(petrel_session *s);
PETREL_API void **petrel_tx_slot(petrel_session *s);                /* NULL outside a transaction */

PETREL_API const char *petrel_client_addr(petrel_session *s);
PETREL_API const char *petrel_client_name(petrel_session *s);       /* "unknown" when not looked up */
PETREL_API const char *petrel_helo(petrel_session *s);              /* NULL before HELO/EHLO */
PETREL_API int petrel_in_mynetworks(petrel_session *s);
PETREL_API const char *petrel_tls_info(petrel_session *s);          /* NULL without TLS */
PETREL_API const char *petrel_sasl_username(petrel_session *s);     /* NULL when not authenticated */
/* 1.1, added after its first release: one fact about the session by name,
 * NULL when unknown or not applicable: "client_port", "server_addr",
 * "server_port" (our end), "sasl_method" (when authenticated),
 * "sasl_sender" (MAIL FROM's AUTH=), and with TLS "tls_protocol",
 * "tls_cipher", "tls_cipher_bits", "tls_sni", "tls_peer_subject" and
 * "tls_peer_issuer" (CNs of a verified client certificate); also
 * "client_ptr" (the unverified PTR name, or "unknown"), "client_resolve"
 * (OK, FORGED, TEMP or FAIL: how the client name was verified) and
 * "client_connections" (the client's concurrent sessions of this service,
 * as counted for smtpd_client_connection_count_limit; "0" when not
 * counted), and Postfix's address resolution (transport and next hop, as
 * the queue manager routes) of the sender, "mail_mailer" and "mail_host"
 * (in a transaction), and of the RCPT being checked, "rcpt_mailer" and
 * "rcpt_host" (NULL when a table it needs is remote or failed), as
 * Postfix's milter macros have them. Valid until the next command. */
PETREL_API const char *petrel_session_fact(petrel_session *s, const char *name);
PETREL_API const char *petrel_sender(petrel_session *s);            /* NULL outside a transaction; "" for <> */
PETREL_API const char *petrel_recipient(petrel_session *s);         /* the RCPT being checked, or NULL */
/* 1.1, added after its first release: the ESMTP parameters of MAIL FROM
 * and of the RCPT TO being checked, as the client sent them and the core
 * accepted them, one space between them ("SIZE=1234 BODY=8BITMIME"); ""
 * when none, NULL outside a transaction or a RCPT check. */
PETREL_API const char *petrel_sender_params(petrel_session *s);
PETREL_API const char *petrel_recipient_params(petrel_session *s);
PETREL_API size_t petrel_recipient_count(petrel_session *s);
PETREL_API const char *petrel_recipient_at(petrel_session *s, size_t i);
PETREL_API const char *petrel_queue_id(petrel_session *s);          /* NULL until the queue file exists */
PETREL_API const char *petrel_service_name(petrel_session *s);      /* the master.cf service */

/* Headers seen so far, in order: name and value of header i (the value as
 * the header hook sees it), or -1 past the end. */
PETREL_API int petrel_header_at(petrel_session *s, size_t i, const char **name, const char **value);

/* ------------------------------------------------------------------ */
/* notes: values modules share in a session or a transaction (ABI 1.1)  */

/* A note is a named string one module sets and others read, e.g. the spf
 * module's "spf.result" for a DMARC module. Names are "MODULE.key": a
 * module sets only names that start with its own name and a dot, and
 * reads anyone's. Transaction notes end with the transaction (RSET, a new
 * MAIL, the end of DATA), session notes with the connection. */
typedef enum petrel_note_scope { PETREL_NOTE_SESSION, PETREL_NOTE_TRANSACTION } petrel_note_scope;
/* Sets (value copied, at most 4096 bytes) or, with value NULL, removes a
 * note. Returns 0, or -1 (logged) for a name outside the module's
 * namespace, a transaction note outside a transaction, or more than 128
 * notes in the session. */
PETREL_API int petrel_note_set(petrel_session *s, petrel_note_scope scope, const char *name, const char *value);
/* The note's value (the transaction's if both scopes have one), or NULL.
 * Valid until the note is set again or its scope ends. */
PETREL_API const char *petrel_note_get(petrel_session *s, const char *name);

/* ------------------------------------------------------------------ */
/* message edits: recorded, applied by the core before commit          */

/* Header values: the text after the colon. A value that does not start
 * with white space gets the customary single space in front; folded values
 * use CRLF followed by white space. Values the header hook and
 * petrel_header_at() hand out have that one leading space removed. */

PETREL_API int petrel_header_add(petrel_session *s, const char *name, const char *value);     /* at the end */
PETREL_API int petrel_header_insert(petrel_session *s, size_t index, const char *name, const char *value);
/* Changes the nth (1-based) occurrence of name; value NULL deletes it. */
PETREL_API int petrel_header_change(petrel_session *s, const char *name, size_t nth, const char *value);
PETREL_API int petrel_sender_change(petrel_session *s, const char *sender);
PETREL_API int petrel_recipient_add(petrel_session *s, const char *recipient);
PETREL_API int petrel_recipient_delete(petrel_session *s, const char *recipient);
/* 1.1, added after its first release: the same with ESMTP parameters
 * (space-separated, as a milter's CHGFROM and ADDRCPT_PAR carry them): a
 * valid RET= and ENVID= go with the new sender, NOTIFY= and ORCPT= with
 * the added recipient; any other, or a malformed one, is ignored with a
 * warning naming it (as Postfix does). */
PETREL_API int petrel_sender_change_params(petrel_session *s, const char *sender, const char *params);
PETREL_API int petrel_recipient_add_params(petrel_session *s, const char *recipient, const char *params);
/* Replaces the body with len bytes (CRLF line ends) held in memory; the
 * same as petrel_body_replace_begin(), one write and commit (the bytes go
 * to a file at once, not into memory). */
PETREL_API int petrel_body_replace(petrel_session *s, const char *body, size_t len);
PETREL_API int petrel_quarantine(petrel_session *s, const char *reason);

/* 1.1, added after its first release (a plugin that calls it is refused by
 * an older 1.1 petreld, at load time): Postfix's milter_header_checks. A
 * milter module asks, before it makes a milter's ADDHEADER, INSHEADER or
 * CHGHEADER edit (not a delete), what the core's milter_header_checks
 * tables say about the header it would write (value as for
 * petrel_header_add). The core applies the transaction's side of the
 * action (REJECT, DISCARD, HOLD, FILTER, REDIRECT, BCC; WARN and INFO are
 * logged) and answers what becomes of the header:
 *   PETREL_HEADER_KEEP      make the edit as it is;
 *   PETREL_HEADER_REPLACED  make it with *new_name and *new_value (REPLACE;
 *                           valid until the transaction ends);
 *   PETREL_HEADER_DROP      do not make it (IGNORE, STRIP);
 *   PETREL_HEADER_STOP      do not make it nor any further edit of this
 *                           message: it is rejected (the core answers the
 *                           client at the end of message, whatever the
 *                           module says), deferred or discarded.
 * Without milter_header_checks the answer is PETREL_HEADER_KEEP; -1 outside
 * a mail transaction (logged). */
enum { PETREL_HEADER_KEEP = 0, PETREL_HEADER_REPLACED = 1, PETREL_HEADER_DROP = 2, PETREL_HEADER_STOP = 3 };
PETREL_API int petrel_milter_header_checks(petrel_session *s, const char *name, const char *value,
                                           const char **new_name, const char **new_value);
/* The same without blocking (1.1, added after petrel_milter_header_checks;
 * a plugin that calls it is refused by an older 1.1 petreld, at load
 * time). petrel_milter_header_checks looks a remote table (pgsql:,
 * socketmap:, ...) up with its blocking lookup, and the worker's other
 * sessions wait meanwhile; this one returns PETREL_HEADER_WAIT instead,
 * and fn(arg, result, new_name, new_value) runs later, once, from the
 * loop (never before this call has returned), with what the call would
 * have answered (new_name and new_value as above, for REPLACED). With
 * local tables only, or an answer known at once, the answer is returned
 * as petrel_milter_header_checks returns it and fn is not called. One
 * header at a time per transaction: a call while another's answer is
 * awaited is refused (-1, logged); the module holds its later edits until
 * fn has run (the next check must see the transaction as this one left
 * it). When the transaction ends first (the client closed the
 * connection, the hook's timeout ended the call) fn is never called: arg
 * should be memory that lives as long as the session (or the module's,
 * freed by its session's end), never the transaction's pool. */
#define PETREL_HEADER_WAIT 4
#define PETREL_HAVE_MILTER_HEADER_CHECKS_ASYNC 1
typedef void petrel_milter_header_checks_fn(void *arg, int result, const char *new_name, const char *new_value);
PETREL_API int petrel_milter_header_checks_async(petrel_session *s, const char *name, const char *value,
                                                 const char **new_name, const char **new_value,
                                                 petrel_milter_header_checks_fn *fn, void *arg);
/* ABI 1.1, added after petrel_milter_header_checks_async (a plugin that
 * calls it is refused by an older 1.1 petreld, at load time): whether the
 * message's header/body checks took the milters off it, as Postfix's
 * cleanup clears CLEANUP_FLAG_FILTER_ALL (the checks' flag and the
 * milters'). 1 when header_checks, mime_header_checks,
 * nested_header_checks or body_checks answered REJECT, DISCARD, REDIRECT
 * or PASS for one of its lines: a module that relays the message to
 * milters (the milter module) asks at end_of_message and sends them none
 * of the content. It is the answer for every content inspector that
 * stands in for a milter, not only for milters: the bundled dkim, dmarc,
 * spamassassin and clamav modules (opendkim, opendmarc, spamass-milter,
 * clamav-milter) ask it at end_of_message and then neither scan, sign
 * nor verify, edit no header and give no verdict. Also 1 once
 * milter_header_checks refused a milter's header (REJECT, or a table
 * that fails): the later milters are not sent
 * the message, as Postfix's chain ends there. Before the content, 1 once
 * the transaction is to be discarded (a restriction's DISCARD, or a
 * module's): Postfix's smtpd then sends the milters no further MAIL,
 * RCPT or DATA of it (MILTER_SKIP_FLAGS), nor its content. 0 otherwise (HOLD, FILTER,
 * BCC and the line actions leave the milters on; so do a
 * milter_header_checks DISCARD or REDIRECT); -1 outside a mail
 * transaction (logged), except in the helo hook: there 1 when that HELO
 * or EHLO ended a transaction that was to be discarded (Postfix's smtpd
 * sends such a HELO to no milter: its MILTER_SKIP_FLAGS are still set),
 * else 0. */
#define PETREL_HAVE_MILTERS_STOPPED 1
PETREL_API int petrel_milters_stopped(petrel_session *s);

/* ------------------------------------------------------------------ */
/* the stored message, as a stream (ABI 1.1)                           */

/* Added in 1.1 after its first release (a plugin that calls these is
 * refused by an older 1.1 petreld, at load time; one whose descriptor
 * says ABI 1.0 gets NULL or -1 and a logged error: rebuild it against the
 * 1.1 headers).
 *
 * In end_of_message (and until its call completes, from the loop: a
 * module that suspended may read from a watch or timer callback) the
 * message is in the queue file. petrel_message_open() reads it from
 * there, without a copy in memory: our Received header, the headers as
 * header_checks left them, the empty line and the body, CRLF line ends,
 * the bytes that will be queued. A new body committed before the open
 * (petrel_body_replace_*, by this module or one before it) is what the
 * handle reads after the headers; header and envelope edits are applied
 * after end_of_message and are not seen here. With PETREL_MESSAGE_BODY it
 * starts after the empty line: the body only.
 *
 * In the queued hook (smtpd) petrel_message_open() reads the message as
 * it was committed, every edit applied; in the delivery hook (queue
 * manager) petrel_delivery_message_open() reads it as it is queued. Both
 * are the content only (the envelope is the hook's arguments).
 *
 * A message handle, like a session's, is checked by the core: it goes
 * stale at petrel_message_close(), when the call it was opened in
 * completes (end_of_message: when every module answered; queued and
 * delivery: when the module's hook returns) and when the session ends;
 * a stale handle is logged and answers -1. Until then it reads the same
 * bytes even if the queue manager moves or removes the queue file (a
 * handle holds the file open): to keep the message longer (an archive
 * written by a worker thread), copy it while the hook runs. Reading is a
 * pread(2) of a local file: it does not wait for the network. Several
 * handles may read the same message at once (several scanners, or one
 * per milter). */
typedef struct petrel_message petrel_message;   /* a handle */
#define PETREL_MESSAGE_BODY 1u
/* NULL (logged) outside end_of_message and the queued hook, for a message
 * that has no queue file (smtpd_proxy_filter), or after a queue file
 * write error. */
PETREL_API petrel_message *petrel_message_open(petrel_session *s, unsigned flags);
/* ABI 1.1, added after its first release (PETREL_HAVE_DELIVERY_MESSAGE):
 * in the delivery hook, the message r reports on. m and r are the hook's
 * own arguments; anything else (another hook, a kept r) is NULL and
 * logged. */
PETREL_API petrel_message *petrel_delivery_message_open(petrel_module *m, const petrel_delivery_result *r,
                                                        unsigned flags);
#define PETREL_HAVE_DELIVERY_MESSAGE 1
/* The bytes the handle reads in all (from its start), or -1. */
PETREL_API long long petrel_message_size(petrel_message *msg);
/* Reads up to len bytes from where the last read stopped: the count, 0 at
 * the end, -1 on an error (logged) or a stale handle. */
PETREL_API long petrel_message_read(petrel_message *msg, void *buf, size_t len);
/* Reads from offset off (from the handle's start) without moving the
 * sequential position. */
PETREL_API long petrel_message_pread(petrel_message *msg, long long off, void *buf, size_t len);
PETREL_API void petrel_message_close(petrel_message *msg);

/* A new body, written in pieces of any size (CRLF line ends, no
 * dot-stuffing) to a file in the queue directory, never held in memory.
 * petrel_body_replace_begin() in end_of_message (or from the loop while
 * its call is suspended); petrel_body_replace_write() as often as needed;
 * then petrel_body_replace_commit() makes it the message's body (the last
 * commit wins) or petrel_body_replace_abort() drops it. A writer still
 * open when the call completes is aborted (logged). The headers are kept
 * as they are (and header edits apply to them).
 *
 * A write the disk refuses (ENOSPC, EIO) fails the transaction: the
 * client gets 451 4.3.0 whatever the module then does, so a truncated
 * body is never queued. write and commit then return -1; the module
 * should abort and may return CONTINUE. */
typedef struct petrel_body_writer petrel_body_writer;   /* a handle */
PETREL_API petrel_body_writer *petrel_body_replace_begin(petrel_session *s);
PETREL_API int petrel_body_replace_write(petrel_body_writer *w, const void *data, size_t len);
PETREL_API int petrel_body_replace_commit(petrel_body_writer *w);
PETREL_API void petrel_body_replace_abort(petrel_body_writer *w);

/* ------------------------------------------------------------------ */
/* services on the role's event loop                                   */

typedef enum petrel_log_level { PETREL_LOG_DEBUG, PETREL_LOG_INFO, PETREL_LOG_WARNING,
                                PETREL_LOG_ERROR } petrel_log_level;
/* Logs "QUEUEID: NAME: text" (or "NOQUEUE: NAME: ...") Postfix-style, NAME
 * being the handle's module; after the session ended, "module NAME: text". */
PETREL_API void petrel_log(petrel_session *s, petrel_log_level level, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
PETREL_API void petrel_module_log(petrel_module *m, petrel_log_level level, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

typedef void petrel_timer_fn(void *arg);
PETREL_API petrel_timer *petrel_timer_start(petrel_module *m, unsigned ms, petrel_timer_fn *fn, void *arg);
/* Cancels a timer that has not fired; cancelling one that fired or was
 * cancelled already is a logged no-op. */
PETREL_API void petrel_timer_cancel(petrel_timer *t);

#define PETREL_WATCH_READ 1
#define PETREL_WATCH_WRITE 2
typedef void petrel_watch_fn(int fd, int events, void *arg);
PETREL_API petrel_watch *petrel_watch_fd(petrel_module *m, int fd, int events, petrel_watch_fn *fn, void *arg);
PETREL_API void petrel_watch_cancel(petrel_watch *w);

/* Asynchronous DNS through dns_resolver (else the system's resolvers). The
 * callback runs on the loop, always after petrel_dns_lookup has returned
 * (even for an answer known at once, such as BADNAME); values live until
 * it returns. For PTR, name is an IPv4 or IPv6 address. Returns 0, or -1
 * when no resolver is available (fn is then not called). */
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
PETREL_API int petrel_dns_lookup(petrel_module *m, petrel_dns_type type, const char *name, petrel_dns_fn *fn, void *arg);
/* ABI 1.1 (added after its first release: a plugin that calls it is
 * refused by an older 1.1 petreld, at load time): how many seconds the
 * answer may be kept, for a module's own cache. For OK, the lowest TTL of
 * the answer's records; for NXDOMAIN and NODATA, the negative-caching
 * time of the zone (the TTL of the SOA record in the reply, as RFC 2308
 * has it); -1 when the reply said nothing (TEMPFAIL, BADNAME, a reply
 * without a SOA: do not cache). Only for the answer a running DNS callback
 * was given (anything else: -1 and a warning). */
PETREL_API long petrel_dns_answer_ttl(const petrel_dns_answer *answer);

/* Runs work(arg) on a worker thread, then done(arg) back on the loop. work
 * may call no Petrel function. Returns 0, or -1 where there are no worker
 * threads (done is then not called). */
PETREL_API int petrel_run_blocking(petrel_module *m, void (*work)(void *arg), void (*done)(void *arg), void *arg);

/* ------------------------------------------------------------------ */
/* metrics (ABI 1.1)                                                   */

/* A module's counters, gauges and histograms, aggregated across every
 * petreld process and kept across worker restarts and reloads; they are
 * served with the core's in the Prometheus text format (petrelctl
 * metrics). Register them in init (each process does; the first one
 * creates the metric, the others find it), then update them from hooks
 * and callbacks. */
typedef struct petrel_metric petrel_metric;     /* a handle, like a session's */
typedef enum petrel_metric_type { PETREL_METRIC_COUNTER, PETREL_METRIC_GAUGE,
                                  PETREL_METRIC_HISTOGRAM } petrel_metric_type;
typedef struct petrel_metric_def {
    size_t size;                  /* sizeof(petrel_metric_def): PETREL_METRIC_DEF_INIT */
    petrel_metric_type type;
    /* "petrel_MODULE_what_unit": lower-case letters, digits and _, starting
     * with petrel_ and the module's name; a counter's name ends in _total. */
    const char *name;
    const char *help;
    /* The label names, NULL-terminated (at most 4), or NULL for none. */
    const char *const *labels;
    /* HISTOGRAM: ascending upper bounds (at most 15); NULL for latencies in
     * seconds (0.001 to 30). */
    const double *buckets;
    size_t nbuckets;
} petrel_metric_def;
#define PETREL_METRIC_DEF_INIT .size = sizeof(petrel_metric_def)

/* Returns the metric, or NULL (logged) for a bad definition, another shape
 * under the same name, a full table, or a process without metrics. NULL is
 * safe to pass to the functions below: nothing is recorded. */
PETREL_API petrel_metric *petrel_metric_register(petrel_module *m, const petrel_metric_def *def);
/* label_values: one per label name, in order (NULL when there are none);
 * each is cut at 60 bytes. A counter adds value (>= 0); a gauge adds to this
 * process's value (a gauge reads as the sum over processes, and a process
 * that exits takes its value with it). */
PETREL_API void petrel_metric_add(petrel_metric *metric, const char *const *label_values, double value);
PETREL_API void petrel_metric_set(petrel_metric *metric, const char *const *label_values, double value);  /* gauge */
PETREL_API void petrel_metric_observe(petrel_metric *metric, const char *const *label_values,
                                      double value);                                                 /* histogram */

/* SASL mechanisms with challenges (ABI 1.1): see <petrel/sasl.h>. */

#ifdef __cplusplus
}
#endif
#endif
