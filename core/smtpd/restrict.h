/*
 * The restriction engine: Postfix's smtpd_*_restrictions lists, compiled
 * once per listener and evaluated per session at the right phase.
 *
 * A list is an array of steps (permit_mynetworks, check_sender_access
 * TYPE:NAME, check_policy_service inet:host:port, a restriction class...).
 * Evaluation walks the steps until one decides; a step may wait (the DNS,
 * a policy server, sleep, a module), in which case the run remembers its
 * position and goes on when the answer comes (restrict_int.h).
 *
 * Every restriction Postfix documents is either built in, provided by a
 * module, or refused at compile time with a message that says why.
 * Restrictions provided by modules (petrel_restriction) mix freely with the
 * built-in ones; their arguments are the words that follow them.
 */
#ifndef PETREL_SMTPD_RESTRICT_H
#define PETREL_SMTPD_RESTRICT_H

#include <petrel/pool.h>

struct smtpd_session;
struct tbl_registry;

enum restrict_stage { RS_CLIENT, RS_HELO, RS_SENDER, RS_RECIPIENT, RS_RELAY, RS_DATA, RS_EOD,
                      RS_COUNT };

enum restrict_verdict { RV_DUNNO, RV_PERMIT, RV_REJECT, RV_DEFER, RV_DISCARD, RV_HOLD,
                        RV_PENDING,
                        /* a module restriction's answers, turned into Postfix's deferrals
                           by the engine (restrict.c) before anything else sees them */
                        RV_DEFER_IF_REJECT, RV_DEFER_IF_PERMIT,
                        RV_NESTED /* engine internal: a nested list was opened */ };

struct restrict_result {
    enum restrict_verdict verdict;
    int code;               /* SMTP reply code for REJECT/DEFER */
    const char *enhanced;   /* "5.7.1" */
    const char *text;       /* full text after the enhanced code */
    /* What refused, for petrel_smtpd_rejects_total{restriction}: the
     * restriction's name (a built-in one, a module's registered name, a
     * restriction class from main.cf) or "module:NAME" for a module's hook;
     * never text from the network. NULL until known. Static or as long-lived
     * as the settings. */
    const char *restriction;
    /* A module failed rather than answered (module_result.failure):
     * refused with Postfix's software error class, which warn_if_reject
     * leaves alone. */
    int failure;
};

struct restrict_list;
struct restrict_compiler;
struct restrict_classes;

/* Compiles the items of parameter param (a Postfix restriction list). On an
 * unknown or unsupported restriction, a missing argument or a table that
 * cannot be opened, returns NULL with *error (malloc'd) naming the problem. */
struct restrict_list *restrict_compile(struct restrict_compiler *c, const char *param,
                                       const char *const *items, char **error);
/* smtpd_restriction_classes: each NAME's value (a main.cf or -o parameter)
 * compiled; classes may name each other. 0, or -1 with *error. */
int restrict_classes_compile(struct restrict_compiler *c, char **error);
int restrict_list_empty(const struct restrict_list *list);
/* 1 when evaluating stage can refuse anything: its list is not empty, or
 * it ends with an implicit check (smtpd_reject_unlisted_sender at
 * RS_SENDER, smtpd_reject_unlisted_recipient at RS_RECIPIENT). */
struct smtpd_settings;
int restrict_stage_needed(const struct smtpd_settings *set, enum restrict_stage stage);
int restrict_list_has(const struct restrict_list *list, const char *name);
/* Postfix's open relay safety net: list (or a class it names) has a
 * reject_unauth_destination, defer_unauth_destination, reject, defer or
 * defer_if_permit that no permit comes before. */
int restrict_list_guards_relay(const struct restrict_list *list, const struct restrict_classes *classes);

/* Evaluates the lists of one SMTP phase for session s (with smtpd_delay_reject
 * semantics decided by the caller: it passes the stages to run, in order).
 * rcpt is the recipient for RS_RECIPIENT/RS_RELAY, else NULL. When every
 * list finishes, done(s, result) is called, possibly before this returns. */
typedef void restrict_done_fn(struct smtpd_session *s, const struct restrict_result *result);
void restrict_check(struct smtpd_session *s, const enum restrict_stage *stages, int nstages,
                    const char *rcpt, restrict_done_fn *done);
/* The session stops or goes away: a waiting step is stopped, done() is
 * never called. */
void restrict_cancel(struct smtpd_session *s);

#endif
