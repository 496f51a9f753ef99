/*
 * The module runtime of one role process, as the roles see it. A role
 * (smtpd worker, queue manager) starts it once with its event loop and
 * resolver (the modules' worker threads are the runtime's own); from then on it only calls in here: it opens a module
 * session per SMTP connection, tells it when a transaction begins and
 * ends, runs the hooks of a phase, calls one module entry point (a
 * restriction, a SASL back-end), and closes the session when the
 * connection ends. Everything a module touches (handles, pending calls,
 * slots, replies, timers) is owned here, not by the role.
 *
 * Lifecycle of a call, as the roles see it:
 *   module_run_phase / module_call -> the module answers at once (done runs
 *   before the call returns, or the answer is in *out), or it suspended:
 *   then done runs later from the loop, exactly once, after petrel_resume()
 *   or NAME_hook_timeout, never if the session was closed first.
 *
 * A role's glue turns its own session into what modules see (facts such as
 * the client address) by asking module_session_host() for the role
 * session behind a valid handle.
 */
#ifndef PETREL_MODULE_RUNTIME_H
#define PETREL_MODULE_RUNTIME_H

#include <stddef.h>
#include <sys/types.h>

#include <petrel/plugin.h>
#include "module/hooks.h"

struct event_base;
struct dns_resolver;
struct module_set;
struct module_metrics;
struct petrel_module;

struct module_runtime_args {
    struct module_set *set;              /* this process's generation of modules */
    unsigned role;                       /* MODULE_ROLE_SMTPD or MODULE_ROLE_QMGR */
    struct event_base *base;
    unsigned threads;                    /* module_thread_limit: petrel_run_blocking's pool */
    struct dns_resolver *dns;
    struct module_metrics *metrics;      /* the shared metrics region, or NULL */
    unsigned process_index;              /* the process's column in shared tables */
};

/* Records the loop and services, installs the crash handler, and calls init
 * of every module the role uses. Returns -1 (logged) if an init fails. */
int module_runtime_start(const struct module_runtime_args *args);
/* Calls fini (reverse order) and forgets every session, timer and watch. */
void module_runtime_stop(void);
/* Does any module of this process implement hook h? */
int module_hook_active(enum module_hook h);

/* ------------------------------------------------------------------ */
/* sessions                                                            */

struct module_session;

/* What the role tells the runtime about its session. */
struct module_host {
    /* "QUEUEID" for log lines, or "NOQUEUE" before there is one. */
    const char *(*log_id)(void *host);
    /* "name[addr]" of the client, for warnings. */
    const char *(*peer)(void *host);
    /* Where the strings of a call's answer go: a pool that lives until the
     * role has used the answer (for smtpd, the transaction or the command),
     * so that answers repeated for a long session never grow it. */
    petrel_pool *(*call_pool)(void *host);
};

/* Opens the module view of a role session; pool lives as long as it. */
struct module_session *module_session_open(void *host, const struct module_host *ops, petrel_pool *pool);
/* The role session ends: every handle to it goes stale, a suspended call is
 * cancelled without its completion, and nothing calls back into host. */
void module_session_close(struct module_session *ms);
/* A transaction begins (its pool) or ends (NULL): transaction slots and
 * notes are cleared. */
void module_session_tx(struct module_session *ms, petrel_pool *tx_pool);
/* The service turns module m off for this session: none of its hooks run. */
void module_session_turn_off(struct module_session *ms, const struct petrel_module *m);
/* The role session behind a valid session handle (and the module it was
 * handed to), or NULL after logging that fn got a stale or foreign handle. */
void *module_session_host(petrel_session *h, struct petrel_module **m, const char *fn);

/* ------------------------------------------------------------------ */
/* calling modules                                                     */

/* A module's checked answer: verdict CONTINUE, ACCEPT, REJECT, TEMPFAIL,
 * DISCARD or HOLD, and for a restriction also DEFER_IF_REJECT or
 * DEFER_IF_PERMIT; code, enhanced and text are set for REJECT, TEMPFAIL
 * and the DEFER_IF_ ones. */
struct module_result {
    petrel_verdict verdict;
    int code;
    const char *enhanced;
    const char *text;
    /* Who answered, for the rejects metric ("module:NAME", the module's
     * reject_label); NULL when no module did. */
    const char *by;
    /* The module failed (its default action after a timeout or crash, an
     * answer that broke the rules), rather than answered: like Postfix's
     * MAIL_ERROR_SOFTWARE, warn_if_reject does not soften it. */
    int failure;
};

typedef void module_done_fn(void *host, const struct module_result *r);
typedef petrel_verdict module_invoke_fn(petrel_session *h, const void *arg);

/* Runs hook h of every module implementing it, in `modules` order, until
 * one refuses (REJECT, TEMPFAIL) or accepts (ACCEPT ends the phase);
 * DISCARD and HOLD are remembered. Then done(host, result), possibly
 * before this returns. The args' strings must live until done. */
void module_run_phase(struct module_session *ms, enum module_hook h, const struct module_hook_args *args,
                      module_done_fn *done);

/* Calls one entry point of module m (label names it: the restriction, "sasl").
 * Returns 1 with *out when it answered now (or its circuit is open), 0 when
 * it suspended: done(host, result) follows later. flags
 * MODULE_CALL_RESTRICTION: a restriction's check, which may also answer
 * DEFER_IF_REJECT or DEFER_IF_PERMIT (with a 4xx reply). */
#define MODULE_CALL_RESTRICTION 1u
int module_call(struct module_session *ms, struct petrel_module *m, const char *label, unsigned flags,
                module_invoke_fn *invoke, const void *arg, module_done_fn *done, struct module_result *out);

/* Content hooks (header, end_of_headers, body) may not suspend. Calls them
 * in order until one refuses; *out gets the last verdict other than
 * CONTINUE/ACCEPT (a refusal, DISCARD or HOLD), else CONTINUE. */
void module_run_content(struct module_session *ms, enum module_hook h, const struct module_hook_args *args,
                        struct module_result *out);

/* Reads up to len content bytes at content position off (0 = the first). */
typedef ssize_t module_message_read_fn(void *arg, unsigned long long off, void *buf, size_t len);

/* Informational hooks: queued (with a session) and delivery (none). The
 * delivery hook's modules may read the message (petrel_delivery_message_open)
 * through read(read_arg, ...), the queue manager's content reader, while the
 * hook runs: content_length bytes (read NULL: they may not). */
void module_notify(struct module_session *ms, enum module_hook h, const struct module_hook_args *args);
void module_notify_delivery(const petrel_delivery_result *r, module_message_read_fn *read, void *read_arg,
                            unsigned long long content_length);

/* ------------------------------------------------------------------ */
/* readers of the stored message (message.c)                           */

/* Where a reader's bytes are: content bytes [start, end) of the queue file
 * fd, whose content begins at file offset base (or, with read set, of what
 * read(read_arg, ...) returns: a file still being written); then, with
 * body_fd >= 0, sep bytes of CRLF and body_len bytes of body_fd (a new
 * body). The reader dups the descriptors it uses. */
struct module_message_source {
    const char *queue_id;
    int fd;
    unsigned long long base;
    module_message_read_fn *read;
    void *read_arg;
    unsigned long long start, end;
    size_t sep;
    int body_fd;
    unsigned long long body_len;
};
struct module_message;
/* A reader for module m on list (its owner's); the handle, or NULL (logged). */
petrel_message *module_message_open(struct petrel_module *m, const struct module_message_source *src,
                                    struct module_message **list);
/* Every reader on list goes stale and is freed (the owner's call ended). */
void module_message_release_all(struct module_message **list);
/* Where the body begins in content of size bytes that read(arg, ...)
 * returns (after the first empty line; size when there is none), or -1
 * with errno. */
long long module_message_body_offset(module_message_read_fn *read, void *arg, unsigned long long size);
/* 1 when module m was built for ABI minor at least minor; else logs that
 * fn needs it (the module declares an older ABI) and returns 0. */
int module_requires_minor(const struct petrel_module *m, unsigned minor, const char *fn);

/* What a failing, slow or circuit-broken module means (its default action). */
void module_default_result(const struct petrel_module *m, struct module_result *out);

/* ------------------------------------------------------------------ */
/* SASL server back-ends (ABI 1.1 petrel_sasl_server; sasl.c)          */

enum module_sasl_kind { MODULE_SASL_MECHANISMS, MODULE_SASL_START, MODULE_SASL_STEP };

/* One question to a back-end. */
struct module_sasl_question {
    enum module_sasl_kind kind;
    const petrel_sasl_server *server;
    petrel_sasl_context *context;   /* the role's: its module and session are set here */
    const char *mechanism;          /* START */
    const unsigned char *data;      /* START: the initial response (NULL: none); STEP: the response */
    size_t len;
    void **state;                   /* START: where the back-end puts its state; STEP: *state is handed to it */
};

/* The back-end's answer, valid while done runs. */
struct module_sasl_reply {
    int offered;                    /* MECHANISMS answered with petrel_sasl_offer() */
    const petrel_sasl_mechanism *mechanisms;
    size_t nmechanisms;
    petrel_sasl_status status;      /* otherwise (a MECHANISMS request: TEMPFAIL) */
    const unsigned char *data;
    size_t len;
    const char *username, *reason;  /* printable, bounded; may be NULL */
    int timed_out;                  /* no answer within NAME_hook_timeout (status TEMPFAIL) */
};

typedef void module_sasl_done_fn(void *host, const struct module_sasl_reply *r);

/* Asks module m's back-end; done(host, reply) follows exactly once,
 * possibly before this returns, unless the exchange ends or the session
 * closes first. A question still unanswered is dropped by the next one. */
void module_sasl_ask(struct module_session *ms, struct petrel_module *m, const struct module_sasl_question *q,
                     module_sasl_done_fn *done);
/* The exchange is over: calls the back-end's end() (when it has one) and
 * drops an unanswered request once end() has returned. */
void module_sasl_end(struct module_session *ms, struct petrel_module *m, const petrel_sasl_server *server,
                     petrel_sasl_context *c, void *state);

/* ------------------------------------------------------------------ */
/* control commands (ABI 1.1 petrel_command; commands.c)               */

/* The answer: status is a petrel_command_status (0 ok, 1 failed, 2 usage),
 * text the output or the error (with the usage line for 2). */
typedef void module_command_done_fn(void *arg, int status, const char *text);

/* Runs command of module (as petrelctl named them) with its arguments (a
 * leading --json included). done(arg, status, text) follows exactly once:
 * before this returns when the command is refused or answers at once,
 * else later from the loop (at the latest at NAME_hook_timeout). */
void module_command_run(const char *module, const char *command, int argc, const char *const *argv,
                        module_command_done_fn *done, void *arg);

/* ------------------------------------------------------------------ */
/* role objects as handles (objects.c)                                 */

/* What a role hands a module with a life of its own (a reader of the
 * stored message, a writer of a new body): registered here, given out as
 * a checked handle, released by the role when the object ends. */
enum module_object_kind { MODULE_OBJECT_MESSAGE, MODULE_OBJECT_BODY_WRITER };
/* The handle for object, as module m's; NULL when the table is full. */
void *module_object_new(enum module_object_kind k, void *object, const struct petrel_module *m);
/* The object behind a valid handle (and its module), or NULL after logging
 * that fn got a stale or foreign handle. */
void *module_object_get(enum module_object_kind k, const void *h, struct petrel_module **m, const char *fn);
/* Every handle to the object goes stale. */
void module_object_release(enum module_object_kind k, const void *h);

/* ------------------------------------------------------------------ */
/* crash context                                                       */

/* While a module runs, the process records which module and hook it is
 * in, so that a fatal signal is logged with their names. Frames nest (a
 * completion may run inside another module's call). */
struct module_crash_frame {
    const char *module;
    const char *hook;
};
struct module_crash_frame module_crash_enter(const struct petrel_module *m, const char *hook);
void module_crash_leave(struct module_crash_frame saved);
void module_crash_install(int log_fd);

#endif
