/*
 * The restriction engine: Postfix's smtpd_*_restrictions lists, compiled
 * once per listener and evaluated per session at the right phase.
 *
 * A list is an array of steps (permit_mynetworks, check_sender_access
 * TYPE:NAME, ...). Evaluation walks the steps until one decides; a step
 * may suspend (RV_PENDING), in which case the run remembers its position
 * and the step's owner later calls restrict_resume(). The built-in steps
 * all decide at once; module steps (DNS, Redis, policy servers) will
 * suspend.
 *
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
                        RV_PENDING };

struct restrict_result {
    enum restrict_verdict verdict;
    int code;               /* SMTP reply code for REJECT/DEFER */
    const char *enhanced;   /* "5.7.1" */
    const char *text;       /* full text after the enhanced code */
};

struct restrict_list;

/* Compiles the items of parameter param (a Postfix restriction list). On an
 * unknown restriction, a missing argument or a table that cannot be opened,
 * returns NULL with *error (malloc'd) naming the problem. */
struct module_set;
struct restrict_list *restrict_compile(petrel_pool *pool, const char *param,
                                       const char *const *items, struct tbl_registry *tables,
                                       const struct module_set *modules, char **error);
int restrict_list_empty(const struct restrict_list *list);
/* 1 when evaluating stage can refuse anything: its list is not empty, or
 * it ends with an implicit check (smtpd_reject_unlisted_sender at
 * RS_SENDER, smtpd_reject_unlisted_recipient at RS_RECIPIENT). */
struct smtpd_settings;
int restrict_stage_needed(const struct smtpd_settings *set, enum restrict_stage stage);
int restrict_list_has(const struct restrict_list *list, const char *name);

/* Evaluates the lists of one SMTP phase for session s (with smtpd_delay_reject
 * semantics decided by the caller: it passes the stages to run, in order).
 * rcpt is the recipient for RS_RECIPIENT/RS_RELAY, else NULL. When every
 * list finishes, done(s, result) is called, possibly before this returns. */
typedef void restrict_done_fn(struct smtpd_session *s, const struct restrict_result *result);
void restrict_check(struct smtpd_session *s, const enum restrict_stage *stages, int nstages,
                    const char *rcpt, restrict_done_fn *done);

#endif
