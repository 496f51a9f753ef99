/*
 * milter_header_checks (Postfix's cleanup_milter_header_checks): the
 * header_checks(5) rules applied to each header a milter's edit would
 * write, when the milter module asks through the plugin API
 * (petrel_milter_header_checks and petrel_milter_header_checks_async,
 * plugin.h), with the subset of actions Postfix allows there. Moved out of
 * cleanup.c, which checks the message as it is received. Also the
 * module's question whether those checks took the milters off the message
 * (petrel_milters_stopped).
 *
 * Remote tables (pgsql:, socketmap:, ...): the asynchronous entry looks
 * up in a lookup scope of the transaction's own (tables/table.h); a key
 * whose answer is not in yet leaves the header undone, the scope fetches,
 * and the check runs again from the loop when the answer is in (the same
 * key then answers from the memo), and the module's callback gets the
 * outcome. One lookup waits at a time per transaction: the module holds
 * its later edits meanwhile (they change what the next check sees, and
 * Postfix applies them in order). The transaction's end frees the scope,
 * which cancels the lookup: the callback never runs for a transaction
 * that is gone. The synchronous entry (ABI 1.1's first form) keeps the
 * blocking lookup (doc/tables.md lists it), and local tables take the
 * direct path either way: no scope, no copy.
 */
#include "config.h"

#include <stdlib.h>
#include <string.h>

#include "lib/buf.h"
#include "lib/log.h"
#include "mail/hbc.h"
#include "mail/mime.h"
#include "module/module.h"
#include "module/runtime.h"
#include "smtpd/content_int.h"
#include "smtpd/smtpd.h"
#include "smtpd/smtpd_int.h"
#include "tables/table.h"

/* The header checks' answer is not in yet (an internal value; modules
 * see PETREL_HEADER_WAIT from the asynchronous entry only). */
#define MILTER_HEADER_PENDING (-2)

/* A transaction's remote lookup (tx->milter_wait, in the tx pool). */
struct milter_checks_wait {
    struct smtpd_session *s;
    struct tbl_scope *scope;
    const char *name, *value;         /* the header being checked (tx pool copies) */
    petrel_milter_header_checks_fn *fn;   /* NULL: no lookup waits */
    void *arg;
};

/* Postfix's cleanup_milter_hbc_log line: "milter-header-ACTION". */
#define MILTER_LOG_PREFIX "milter-header-"

static void milter_act_log(struct smtpd_session *s, const char *action, const char *line, const char *text)
{
    smtpd_checks_log(s, MILTER_LOG_PREFIX, action, "header", line, text);
}

/* Postfix's cleanup_milter_header_checks: the header a milter would write
 * ("Name: value" as it would be stored) is looked up in
 * milter_header_checks and the action applied to the transaction, with
 * the subset of header_checks(5) Postfix honours there: REJECT, DISCARD,
 * HOLD, FILTER, REDIRECT, BCC change the transaction; WARN, INFO log;
 * REPLACE replaces the header; IGNORE and STRIP drop it; PREPEND is not
 * implemented (warned, as Postfix does); PASS and unknown words are
 * warned about and ignored. REJECT, DISCARD and REDIRECT end the checks:
 * Postfix's cleanup_milter_hbc_extend clears CLEANUP_FLAG_FILTER_ALL and
 * from then on answers every action, whatever it is, by keeping the
 * header as it is (nothing logged, replaced or dropped); only a failing
 * lookup still defers the message. With scope (a remote table), a key
 * whose answer is not in yet gives MILTER_HEADER_PENDING and nothing is
 * done. */
static int milter_header(struct smtpd_session *s, struct tbl_scope *scope, const char *name, const char *value,
                         const char **new_name, const char **new_value)
{
    struct smtpd_tx *tx = s->tx;
    struct smtpd_cleanup_settings *set = s->set->cleanup;
    static const char param[] = "milter_header_checks";
    if (set == NULL || !hbc_has(&set->milter_checks, HBC_HEADER))
        return PETREL_HEADER_KEEP;
    if (smtpd_refused(&tx->milter_verdict))
        return PETREL_HEADER_STOP;
    if (tx->discard)
        return PETREL_HEADER_STOP;
    /* The header as the queue file will hold it: the value gets the one
     * space after the colon when it has no leading white space. */
    const char *sep = (*value == ' ' || *value == '\t') ? "" : " ";
    const char *line = petrel_pool_printf(tx->pool, "%s:%s%s", name, sep, value);
    const char *result = NULL;
    int rc;
    if (scope) {
        struct tbl_registry *reg = s->worker->tables;
        tbl_scope_enter(reg, scope);
        rc = hbc_lookup(&set->milter_checks, HBC_HEADER, line, tx->pool, &result);
        tbl_scope_leave(reg);
        if (rc == -2)
            return MILTER_HEADER_PENDING;
    } else {
        rc = hbc_lookup(&set->milter_checks, HBC_HEADER, line, tx->pool, &result);
    }
    if (rc < 0) {
        msg_warn("%s: %s map lookup problem -- message not accepted, try again later", tx->queue_id, param);
        tx->milter_verdict.verdict = RV_DEFER;
        tx->milter_verdict.code = 451;
        tx->milter_verdict.enhanced = "4.3.0";
        tx->milter_verdict.text = "Error: queue file write error";
        tx->milter_verdict.restriction = param;
        tx->milters_stopped = 1;   /* Postfix's edit error ends the milter chain */
        return PETREL_HEADER_STOP;
    }
    if (rc == 0 || tx->milter_checks_done)
        return PETREL_HEADER_KEEP;
    struct hbc_action a;
    hbc_parse_action(result, &a);
    switch (a.command) {
    case HBC_REJECT:
        tx->milter_checks_done = 1;
        /* Postfix's cleanup answers the milter's edit with the rejection,
         * which ends milter8's message and the chain: no later milter gets
         * the message. A DISCARD or REDIRECT does not (the edit succeeds). */
        tx->milters_stopped = 1;
        milter_act_log(s, "reject", line, smtpd_checks_reject(tx->pool, a.text, param, &tx->milter_verdict));
        return PETREL_HEADER_STOP;
    case HBC_DISCARD:
        /* The transaction's part is shared (smtpd_checks_tx_action). What
         * ends differs on purpose: here only milter_header_checks
         * (Postfix's cleanup_milter_hbc_extend), the milters go on (the
         * edit succeeds); header_checks' DISCARD ends the milters too. */
        smtpd_checks_tx_action(s, &a, MILTER_LOG_PREFIX, "header", line, param);
        tx->milter_checks_done = 1;
        return PETREL_HEADER_STOP;
    case HBC_REDIRECT:
        if (smtpd_checks_tx_action(s, &a, MILTER_LOG_PREFIX, "header", line, param))
            tx->milter_checks_done = 1;   /* as DISCARD's */
        return PETREL_HEADER_KEEP;
    case HBC_HOLD:
    case HBC_FILTER:
    case HBC_BCC:
    case HBC_WARN:
    case HBC_INFO:
        smtpd_checks_tx_action(s, &a, MILTER_LOG_PREFIX, "header", line, param);
        return PETREL_HEADER_KEEP;
    case HBC_REPLACE: {
        size_t name_len = mime_header_name_len(a.text, strlen(a.text));
        if (*a.text == '\0') {
            msg_warn("REPLACE action without text in %s map", param);
            return PETREL_HEADER_KEEP;
        }
        if (name_len == 0) {
            msg_warn("bad REPLACE header text \"%s\" in %s map -- need \"headername: headervalue\"", a.text,
                     param);
            return PETREL_HEADER_KEEP;
        }
        milter_act_log(s, "replace", line, a.text);
        /* "Name:value": the name without the colon or white space before it */
        const char *colon = strchr(a.text, ':');
        size_t n = (size_t)(colon - a.text);
        while (n > 0 && (a.text[n - 1] == ' ' || a.text[n - 1] == '\t'))
            n--;
        *new_name = petrel_pool_strndup(tx->pool, a.text, n);
        *new_value = petrel_pool_strdup(tx->pool, colon + 1);
        return PETREL_HEADER_REPLACED;
    }
    case HBC_STRIP:
        milter_act_log(s, "strip", line, a.text);
        return PETREL_HEADER_DROP;
    case HBC_IGNORE:
        return PETREL_HEADER_DROP;
    case HBC_PREPEND:
        msg_warn("the milter_header/body_checks prepend action is not implemented");
        return PETREL_HEADER_KEEP;
    case HBC_DUNNO:
        return PETREL_HEADER_KEEP;
    case HBC_PASS:
    case HBC_UNKNOWN:
        break;
    }
    msg_warn("unsupported command in %s map: %.*s", param, (int)a.word_len, a.word);
    return PETREL_HEADER_KEEP;
}


/* ------------------------------------------------------------------ */
/* the module API's entries                                            */

/* The session behind h in a mail transaction, with name and value given;
 * NULL (logged where it is the module's fault) otherwise. */
static struct smtpd_session *checked_session(petrel_session *h, struct petrel_module **m, const char *fn,
                                             const char *name, const char *value, const char **new_name,
                                             const char **new_value)
{
    struct smtpd_session *s = module_session_host(h, m, fn);
    if (s == NULL)
        return NULL;
    if (s->tx == NULL) {
        msg_warn("module %s: %s outside a mail transaction: ignored", (*m)->name, fn);
        return NULL;
    }
    if (name == NULL || value == NULL || new_name == NULL || new_value == NULL)
        return NULL;
    return s;
}

int petrel_milter_header_checks(petrel_session *h, const char *name, const char *value, const char **new_name,
                                const char **new_value)
{
    struct petrel_module *m;
    struct smtpd_session *s = checked_session(h, &m, __func__, name, value, new_name, new_value);
    if (s == NULL)
        return -1;
    /* Outside a scope a remote table's blocking lookup answers (bounded by
     * its timeout): the worker waits (doc/tables.md). */
    return milter_header(s, NULL, name, value, new_name, new_value);
}

int petrel_milters_stopped(petrel_session *h)
{
    struct petrel_module *m;
    struct smtpd_session *s = module_session_host(h, &m, __func__);
    if (s == NULL)
        return -1;
    if (s->tx == NULL && s->in_helo_hooks)
        return s->helo_skips_milters;   /* Postfix: no milter gets a HELO that ends a discarded transaction */
    if (s->tx == NULL) {
        msg_warn("module %s: %s outside a mail transaction: ignored", m->name, __func__);
        return -1;
    }
    struct smtpd_tx *tx = s->tx;
    /* Before the content a DISCARD (a restriction's, or a module's verdict)
     * keeps every later event from the milters, as Postfix's smtpd skips
     * them (MILTER_SKIP_FLAGS) and hands its cleanup no milters;
     * smtpd_cleanup_begin carries it into milters_stopped. */
    if (tx->cleanup == NULL)
        return tx->discard || tx->milters_stopped ? 1 : 0;
    return tx->milters_stopped ? 1 : 0;
}

static void wait_free(void *arg)
{
    struct milter_checks_wait *w = arg;
    tbl_scope_free(w->scope);   /* cancels a lookup in flight: wait_fetched never runs */
}

/* Checks w's header in its scope until the answer is known (the outcome)
 * or lookups are in flight (PETREL_HEADER_WAIT: wait_fetched runs when
 * they have answered). */
static void wait_fetched(void *arg);
static int wait_run(struct milter_checks_wait *w, const char **new_name, const char **new_value)
{
    for (;;) {
        int rc = milter_header(w->s, w->scope, w->name, w->value, new_name, new_value);
        if (rc != MILTER_HEADER_PENDING) {
            tbl_scope_reset(w->scope);   /* each header's answers are its own */
            return rc;
        }
        if (tbl_scope_fetch(w->scope, wait_fetched, w))
            return PETREL_HEADER_WAIT;
        /* answered at once: look up again */
    }
}

/* The scope's lookups answered (from the loop). */
static void wait_fetched(void *arg)
{
    struct milter_checks_wait *w = arg;
    const char *new_name = NULL, *new_value = NULL;
    int rc = wait_run(w, &new_name, &new_value);
    if (rc == PETREL_HEADER_WAIT)
        return;   /* the next table of the list waits too */
    petrel_milter_header_checks_fn *fn = w->fn;
    void *fn_arg = w->arg;
    w->fn = NULL;   /* the callback may ask about the next header */
    w->arg = NULL;
    fn(fn_arg, rc, new_name, new_value);
}

int petrel_milter_header_checks_async(petrel_session *h, const char *name, const char *value,
                                      const char **new_name, const char **new_value,
                                      petrel_milter_header_checks_fn *fn, void *arg)
{
    struct petrel_module *m;
    struct smtpd_session *s = checked_session(h, &m, __func__, name, value, new_name, new_value);
    if (s == NULL || fn == NULL)
        return -1;
    struct smtpd_tx *tx = s->tx;
    const struct smtpd_cleanup_settings *set = s->set->cleanup;
    if (set == NULL || !set->milter_checks_remote)
        return milter_header(s, NULL, name, value, new_name, new_value);   /* local tables: at once */
    struct milter_checks_wait *w = tx->milter_wait;
    if (w == NULL) {
        w = petrel_pool_zalloc(tx->pool, sizeof(*w));
        w->s = s;
        w->scope = tbl_scope_new();
        petrel_pool_cleanup_add(tx->pool, wait_free, w);
        tx->milter_wait = w;
    }
    if (w->fn != NULL) {
        msg_warn("module %s: %s while the answer about another header is awaited: ignored", m->name, __func__);
        return -1;
    }
    w->name = petrel_pool_strdup(tx->pool, name);
    w->value = petrel_pool_strdup(tx->pool, value);
    int rc = wait_run(w, new_name, new_value);
    if (rc == PETREL_HEADER_WAIT) {
        w->fn = fn;
        w->arg = arg;
    }
    return rc;
}
