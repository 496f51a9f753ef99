/*
 * The restriction engine's insides, shared by its files: restrict.c (the
 * compiler and the evaluation loop), restrict_steps.c (the built-in
 * restrictions and the access(5) action evaluator), restrict_dns.c (the
 * restrictions that ask the DNS) and policy.c (check_policy_service).
 *
 * Evaluation follows Postfix's generic_checks(): a run walks the stage
 * lists of one SMTP command; a restriction class, or a table result that
 * names restrictions, is evaluated in a nested frame (at most
 * RESTRICT_MAX_DEPTH deep), whose decision is the decision of the step
 * that opened it. warn_if_reject, defer_if_reject and defer_if_permit keep
 * Postfix's meaning. A step that has to wait (DNS, a policy server, a
 * sleep, a module) returns RV_PENDING after restrict_wait(); its owner
 * calls restrict_step_done() with the verdict later, from the loop.
 */
#ifndef PETREL_SMTPD_RESTRICT_INT_H
#define PETREL_SMTPD_RESTRICT_INT_H

#include <petrel/plugin.h>
#include <petrel/pool.h>
#include "smtpd/restrict.h"

struct smtpd_session;
struct tbl;
struct tbl_registry;
struct module_set;
struct petrel_module;
struct policy_client;
struct cfg;

#define RESTRICT_MAX_DEPTH 100   /* Postfix: "unreasonable recursion" past 100 */

enum step_kind {
    STEP_PERMIT, STEP_REJECT, STEP_DEFER, STEP_DEFER_IF_PERMIT, STEP_DEFER_IF_REJECT, STEP_WARN_IF_REJECT,
    STEP_SLEEP, STEP_PERMIT_MYNETWORKS, STEP_PERMIT_INET_INTERFACES, STEP_PERMIT_SASL, STEP_REJECT_PLAINTEXT,
    STEP_REJECT_UNAUTH_DEST, STEP_DEFER_UNAUTH_DEST, STEP_PERMIT_AUTH_DEST, STEP_REJECT_UNAUTH_PIPELINING,
    STEP_REJECT_NON_FQDN_SENDER, STEP_REJECT_NON_FQDN_RCPT, STEP_REJECT_NON_FQDN_HELO, STEP_REJECT_INVALID_HELO,
    STEP_REJECT_UNKNOWN_CLIENT, STEP_REJECT_UNKNOWN_REVERSE, STEP_REJECT_MULTI_RCPT_BOUNCE,
    STEP_CHECK_CLIENT, STEP_CHECK_REVERSE_CLIENT, STEP_CHECK_HELO, STEP_CHECK_SENDER, STEP_CHECK_RCPT,
    STEP_CHECK_SASL, STEP_CHECK_ETRN,
    STEP_REJECT_UNLISTED_RCPT, STEP_REJECT_UNLISTED_SENDER,
    STEP_SENDER_LOGIN, STEP_AUTH_SENDER_LOGIN, STEP_UNAUTH_SENDER_LOGIN, STEP_KNOWN_SENDER_LOGIN,
    STEP_PERMIT_TLS_CLIENTCERTS, STEP_PERMIT_TLS_ALL_CLIENTCERTS, STEP_CHECK_CCERT,
    /* restrict_dns.c */
    STEP_REJECT_UNKNOWN_HELO, STEP_REJECT_UNKNOWN_SENDER_DOMAIN, STEP_REJECT_UNKNOWN_RCPT_DOMAIN,
    STEP_CHECK_SERVER,           /* check_{client,reverse_client_hostname,helo,sender,recipient}_{a,mx,ns}_access */
    /* policy.c */
    STEP_POLICY,
    STEP_CLASS,                  /* a name from smtpd_restriction_classes */
    STEP_MODULE,
};

/* What a check_*_{a,mx,ns}_access step looks at. */
enum restrict_target { TARGET_CLIENT, TARGET_REVERSE_CLIENT, TARGET_HELO, TARGET_SENDER, TARGET_RECIPIENT };

struct restrict_step {
    enum step_kind kind;
    const char *name;
    struct tbl *table;               /* check_*_access */
    int number;                      /* sleep: seconds; STEP_CHECK_SERVER: enum dns_type */
    enum restrict_target target;     /* STEP_CHECK_SERVER */
    int class_index;                 /* STEP_CLASS: into the settings' classes */
    struct policy_client *policy;    /* STEP_POLICY */
    /* STEP_MODULE */
    struct petrel_module *module;
    const petrel_restriction *provided;
    void *state;
};

struct restrict_list {
    struct restrict_step *steps;
    int nsteps;
};

/* smtpd_restriction_classes, compiled once per listener. */
struct restrict_classes {
    int n;
    const char **names;
    struct restrict_list **lists;
};

/* Everything compiling a list needs (settings.c fills it). */
struct restrict_compiler {
    petrel_pool *pool;               /* the settings' pool: lists live as long as they */
    const struct cfg *cfg;
    struct tbl_registry *tables;
    const struct module_set *modules;
    struct restrict_classes *classes;
    struct policy_client **policies; /* check_policy_service endpoints of these settings */
    int npolicies;
    int validating;                  /* petreld -n: nothing is connected */
};

/* Postfix's error classes: a refusal of class DATA (a table lookup
 * failure), SOFTWARE (a configuration error) or RESOURCE is never turned
 * into a warning by warn_if_reject. */
enum restrict_error_class { RCLASS_POLICY, RCLASS_PROTOCOL, RCLASS_DATA, RCLASS_SOFTWARE, RCLASS_RESOURCE };

/* A decision postponed by defer_if_permit or defer_if_reject: the first
 * reason is kept. */
struct restrict_deferral {
    int active;
    enum restrict_error_class error_class;
    int code;
    char dsn[12];
    char text[512];
    const char *restriction;         /* the restriction that raised it (its name) */
};

struct restrict_frame {
    const struct restrict_list *list;
    int index;                       /* the next step */
    const char *reply_name;          /* "<reply_name>: reply_class rejected: ..." */
    const char *reply_class;
};

struct restrict_run {
    enum restrict_stage stages[RS_COUNT];
    int nstages, stage_index;
    int in_stage;                    /* the current stage has begun */
    struct restrict_frame *frames;
    int depth, frame_cap;
    const char *rcpt;                /* the recipient of RCPT's checks */
    const char *where;               /* CONNECT, EHLO, HELO, MAIL, RCPT, DATA, BDAT, END-OF-MESSAGE */
    const struct restrict_step *step;   /* the step running or waiting: what refused, for the metrics */
    restrict_done_fn *done;
    struct restrict_result collected;   /* a module's HOLD/DISCARD seen so far */
    int rcpt_maps_checked, sender_maps_checked;
    int warn_if_reject;              /* the depth warn_if_reject applies from (0: off) */
    struct restrict_deferral defer_if_reject;
    /* the step that waits, and how to stop it when the session goes */
    void (*cancel)(void *ctx);
    void *cancel_ctx;
    int waiting;
};

/* --- the engine's services to steps (restrict.c) --- */

/* Postfix's smtpd_check_reject(): the step refuses with code, dsn and the
 * text fmt. warn_if_reject turns it into a logged "reject_warning" (RV_DUNNO),
 * a pending defer_if_reject turns a 5xx into that deferral. Fills r and
 * returns the verdict to return. */
enum restrict_verdict restrict_refuse(struct smtpd_session *s, struct restrict_run *run,
                                      enum restrict_error_class cls, int code, const char *dsn,
                                      struct restrict_result *r, const char *fmt, ...)
    __attribute__((format(printf, 7, 8)));
/* Postfix's DEFER_IF_PERMIT2: with tempfail_defer_if_permit (the
 * *_tempfail_action is defer_if_permit) and no warn_if_reject, remembers
 * the deferral for the end of the command and returns RV_DUNNO; otherwise
 * refuses at once. */
enum restrict_verdict restrict_defer_if_permit(struct smtpd_session *s, struct restrict_run *run,
                                               int tempfail_defer_if_permit, enum restrict_error_class cls,
                                               int code, const char *dsn, struct restrict_result *r,
                                               const char *fmt, ...) __attribute__((format(printf, 8, 9)));
void restrict_defer_if_reject(struct smtpd_session *s, struct restrict_run *run, enum restrict_error_class cls,
                              int code, const char *dsn, const char *fmt, ...)
    __attribute__((format(printf, 6, 7)));
/* 451 4.3.5 Server configuration error (the cause is logged by the caller). */
enum restrict_verdict restrict_server_error(struct smtpd_session *s, struct restrict_run *run,
                                            struct restrict_result *r);
/* 451 4.3.0 <name>: Temporary lookup failure. */
enum restrict_verdict restrict_lookup_failure(struct smtpd_session *s, struct restrict_run *run,
                                              const char *name, struct restrict_result *r);
/* Postfix's log_whatsup(): "ID: what: WHERE from name[addr]: text; from=<> to=<> proto= helo=<>". */
void restrict_log(struct smtpd_session *s, struct restrict_run *run, const char *what, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
/* Evaluates list in a nested frame; the step returns what this returns. */
enum restrict_verdict restrict_push(struct smtpd_session *s, struct restrict_run *run,
                                    const struct restrict_list *list, const char *reply_name,
                                    const char *reply_class, struct restrict_result *r);
/* The current step waits; cancel(ctx) stops it if the session goes first. */
void restrict_wait(struct smtpd_session *s, void (*cancel)(void *ctx), void *ctx);
/* A waiting step has its verdict: the evaluation goes on. */
void restrict_step_done(struct smtpd_session *s, enum restrict_verdict v, const struct restrict_result *r);
/* The frame a step runs in (reply name and class of generic replies). */
static inline const struct restrict_frame *restrict_frame(const struct restrict_run *run)
{
    return &run->frames[run->depth - 1];
}
/* Compiles restrictions named in a table result or policy reply (no
 * tables, no module restrictions, no policy services: Postfix refuses
 * tables there too); NULL with *why on an unknown name. */
struct restrict_list *restrict_compile_runtime(struct smtpd_session *s, const char *value, const char **why);

/* --- restrict_steps.c --- */
enum restrict_verdict restrict_run_builtin(struct smtpd_session *s, struct restrict_run *run,
                                           const struct restrict_step *step, struct restrict_result *r);
/* The access(5) action evaluator, for tables and policy replies: table
 * names the source ("texthash:/etc/x", "inet:127.0.0.1:9998"), datum the
 * key that matched ("policy query" for a policy server). */
enum restrict_verdict restrict_apply_action(struct smtpd_session *s, struct restrict_run *run, const char *table,
                                            const char *value, const char *datum, const char *reply_name,
                                            const char *reply_class, struct restrict_result *r);
/* The recipient's or sender's reply subject strings (Postfix's SMTPD_NAME_*). */
#define SUBJECT_CLIENT "Client host"
#define SUBJECT_REVERSE_CLIENT "Unverified Client host"
#define SUBJECT_HELO "Helo command"
#define SUBJECT_SENDER "Sender address"
#define SUBJECT_RECIPIENT "Recipient address"
#define SUBJECT_ETRN "Etrn command"
#define SUBJECT_DATA "Data command"
#define SUBJECT_EOD "End-of-data"
#define SUBJECT_SASL "SASL login name"
#define SUBJECT_CCERT "Client certificate"

/* --- restrict_dns.c --- */
enum restrict_verdict restrict_run_dns(struct smtpd_session *s, struct restrict_run *run,
                                       const struct restrict_step *step, struct restrict_result *r);

/* --- policy.c --- */
/* Compiles the argument of check_policy_service ("inet:host:port",
 * "unix:/path", or "{ endpoint, name = value, ... }" already unbraced);
 * endpoints with the same text share one client. NULL with *error. */
struct policy_client *policy_client_get(struct restrict_compiler *c, const char *spec, char **error);
enum restrict_verdict restrict_run_policy(struct smtpd_session *s, struct restrict_run *run,
                                          const struct restrict_step *step, struct restrict_result *r);

#endif
