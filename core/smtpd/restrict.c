/*
 * The restriction engine (see restrict.h). Steps are compiled from the
 * Postfix names into a small array; evaluation keeps its position in a
 * struct restrict_run so that a step answering RV_PENDING can be resumed.
 *
 * Reply texts and codes are Postfix's (reject_code 554, defer_code 450,
 * relay_domains_reject_code 554, unknown/non-FQDN codes 504/501...), so
 * log tools and clients see what they know.
 */
#include "config.h"

#include <ctype.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <string.h>
#include <strings.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>

#include "lib/log.h"
#include "lib/xalloc.h"
#include "mail/addr_class.h"
#include "mail/smtp_syntax.h"
#include "smtpd/rcpt_maps.h"
#include "smtpd/restrict.h"
#include "smtpd/smtpd_int.h"
#include "tables/cidr.h"
#include "tables/access.h"
#include "tables/table.h"
#include "module/module.h"

enum step_kind {
    STEP_PERMIT, STEP_REJECT, STEP_DEFER, STEP_PERMIT_MYNETWORKS, STEP_PERMIT_SASL,
    STEP_REJECT_UNAUTH_DEST, STEP_DEFER_UNAUTH_DEST, STEP_PERMIT_AUTH_DEST,
    STEP_REJECT_UNAUTH_PIPELINING, STEP_REJECT_NON_FQDN_SENDER, STEP_REJECT_NON_FQDN_RCPT,
    STEP_REJECT_NON_FQDN_HELO, STEP_REJECT_INVALID_HELO,
    STEP_CHECK_CLIENT, STEP_CHECK_HELO, STEP_CHECK_SENDER, STEP_CHECK_RCPT,
    STEP_REJECT_UNLISTED_RCPT, STEP_REJECT_UNLISTED_SENDER,
    STEP_MODULE,
};

struct restrict_step {
    enum step_kind kind;
    const char *name;
    struct tbl *table;
    /* STEP_MODULE */
    struct petrel_module *module;
    const petrel_restriction *provided;
    void *state;
};

struct restrict_list {
    struct restrict_step *steps;
    int nsteps;
};

struct restrict_run {
    enum restrict_stage stages[RS_COUNT];
    int nstages, stage_index, step_index;
    const char *rcpt;
    restrict_done_fn *done;
    struct restrict_result collected;   /* HOLD/DISCARD seen so far */
    /* reject_unlisted_recipient/_sender ran in this evaluation: the implicit
     * check at the end of the list is not repeated (Postfix's
     * recipient_rcptmap_checked) */
    int rcpt_maps_checked, sender_maps_checked;
};

static const struct { const char *name; enum step_kind kind; int takes_table; } builtin_steps[] = {
    { "permit", STEP_PERMIT, 0 },
    { "reject", STEP_REJECT, 0 },
    { "defer", STEP_DEFER, 0 },
    { "permit_mynetworks", STEP_PERMIT_MYNETWORKS, 0 },
    { "permit_sasl_authenticated", STEP_PERMIT_SASL, 0 },
    { "reject_unauth_destination", STEP_REJECT_UNAUTH_DEST, 0 },
    { "defer_unauth_destination", STEP_DEFER_UNAUTH_DEST, 0 },
    { "permit_auth_destination", STEP_PERMIT_AUTH_DEST, 0 },
    { "reject_unauth_pipelining", STEP_REJECT_UNAUTH_PIPELINING, 0 },
    { "reject_non_fqdn_sender", STEP_REJECT_NON_FQDN_SENDER, 0 },
    { "reject_non_fqdn_recipient", STEP_REJECT_NON_FQDN_RCPT, 0 },
    { "reject_non_fqdn_helo_hostname", STEP_REJECT_NON_FQDN_HELO, 0 },
    { "reject_non_fqdn_hostname", STEP_REJECT_NON_FQDN_HELO, 0 },
    { "reject_invalid_helo_hostname", STEP_REJECT_INVALID_HELO, 0 },
    { "reject_invalid_hostname", STEP_REJECT_INVALID_HELO, 0 },
    { "check_client_access", STEP_CHECK_CLIENT, 1 },
    { "check_helo_access", STEP_CHECK_HELO, 1 },
    { "check_sender_access", STEP_CHECK_SENDER, 1 },
    { "check_recipient_access", STEP_CHECK_RCPT, 1 },
    { "reject_unlisted_recipient", STEP_REJECT_UNLISTED_RCPT, 0 },
    { "check_recipient_maps", STEP_REJECT_UNLISTED_RCPT, 0 },   /* its name before Postfix 2.1 */
    { "reject_unlisted_sender", STEP_REJECT_UNLISTED_SENDER, 0 },
};

/* Names Postfix admins use that Petrel does not provide in the core: say
 * precisely why they cannot be used rather than "unknown". A name that a
 * bundled module provides says which module to load. */
#define FROM_MODULE(name) "is provided by module " name ", which is not loaded: add " name " to modules"
static const struct { const char *name; const char *why; } unavailable_steps[] = {
    { "reject_rbl_client", FROM_MODULE("dnsbl") },
    { "permit_dnswl_client", FROM_MODULE("dnsbl") },
    { "reject_rhsbl_sender", FROM_MODULE("dnsbl") },
    { "reject_rhsbl_client", FROM_MODULE("dnsbl") },
    { "reject_rhsbl_reverse_client", FROM_MODULE("dnsbl") },
    { "reject_rhsbl_helo", FROM_MODULE("dnsbl") },
    { "reject_rhsbl_recipient", FROM_MODULE("dnsbl") },
    { "permit_rhswl_client", FROM_MODULE("dnsbl") },
    { "check_dnsbl_score", FROM_MODULE("dnsbl") },
    { "check_greylist", FROM_MODULE("greylist") },
    { "check_rate_limit", FROM_MODULE("ratelimit") },
    { "check_spf", FROM_MODULE("spf") },
    { "reject_unknown_sender_domain", "needs DNS lookups in smtpd, not implemented yet" },
    { "reject_unknown_recipient_domain", "needs DNS lookups in smtpd, not implemented yet" },
    { "reject_unknown_client_hostname", "needs DNS lookups in smtpd, not implemented yet" },
    { "reject_unknown_reverse_client_hostname", "needs DNS lookups in smtpd, not implemented yet" },
    { "reject_unknown_helo_hostname", "needs DNS lookups in smtpd, not implemented yet" },
    { "check_policy_service", "(policy delegation) is not implemented yet" },
};

__attribute__((format(printf, 1, 2)))
static char *errorf(const char *fmt, ...)
{
    char *e = NULL;
    va_list ap;
    va_start(ap, fmt);
    if (vasprintf(&e, fmt, ap) < 0)
        e = xstrdup("out of memory");
    va_end(ap);
    return e;
}

static void close_tables(void *arg)
{
    struct restrict_list *list = arg;
    for (int i = 0; i < list->nsteps; i++)
        if (list->steps[i].table)
            tbl_close(list->steps[i].table);
}

struct restrict_list *restrict_compile(petrel_pool *pool, const char *param,
                                       const char *const *items, struct tbl_registry *tables,
                                       const struct module_set *modules, char **error)
{
    int n = 0;
    while (items[n])
        n++;
    struct restrict_list *list = petrel_pool_zalloc(pool, sizeof(*list));
    list->steps = petrel_pool_zalloc(pool, (size_t)(n ? n : 1) * sizeof(*list->steps));
    petrel_pool_cleanup_add(pool, close_tables, list);
    for (int i = 0; i < n; i++) {
        const char *item = items[i];
        size_t k;
        for (k = 0; k < sizeof(builtin_steps) / sizeof(builtin_steps[0]); k++)
            if (strcasecmp(builtin_steps[k].name, item) == 0)
                break;
        if (k == sizeof(builtin_steps) / sizeof(builtin_steps[0])) {
            struct petrel_module *owner = NULL;
            const petrel_restriction *provided = module_set_find_restriction(modules, item, &owner);
            if (provided) {
                struct restrict_step *step = &list->steps[list->nsteps++];
                step->kind = STEP_MODULE;
                step->name = provided->name;
                step->module = owner;
                step->provided = provided;
                int nargs = provided->nargs > 0 ? provided->nargs : 0;
                for (int a = 1; a <= nargs; a++) {
                    if (items[i + a] == NULL) {
                        *error = errorf("restriction %s (module %s) needs %d argument%s", item, owner->name, nargs,
                                        nargs == 1 ? "" : "s");
                        return NULL;
                    }
                }
                if (provided->compile) {
                    const char *cerr = NULL;
                    if (provided->compile(owner, items + i + 1, &step->state, pool, &cerr) != 0) {
                        *error = errorf("restriction %s (module %s): %s", item, owner->name,
                                        cerr ? cerr : "bad arguments");
                        return NULL;
                    }
                }
                i += nargs;
                continue;
            }
            for (size_t u = 0; u < sizeof(unavailable_steps) / sizeof(unavailable_steps[0]); u++)
                if (strcasecmp(unavailable_steps[u].name, item) == 0) {
                    *error = errorf("restriction %s %s", item, unavailable_steps[u].why);
                    return NULL;
                }
            if (strchr(item, ':'))
                *error = errorf("table %s given without a restriction in front of it "
                                "(e.g. check_sender_access %s)", item, item);
            else
                *error = errorf("unknown restriction \"%s\"", item);
            return NULL;
        }
        struct restrict_step *step = &list->steps[list->nsteps++];
        step->kind = builtin_steps[k].kind;
        step->name = builtin_steps[k].name;
        if (builtin_steps[k].takes_table) {
            const char *spec = items[i + 1];
            if (spec == NULL || strchr(spec, ':') == NULL) {
                *error = errorf("restriction %s needs a table argument (TYPE:NAME)", item);
                return NULL;
            }
            char *terr = NULL;
            step->table = tbl_open(tables, spec, TBL_FLAG_FOLD_CASE, &terr);
            if (step->table == NULL) {
                *error = errorf("%s: %s", item, terr ? terr : "cannot open table");
                free(terr);
                return NULL;
            }
            i++;
        }
    }
    return list;
}

int restrict_list_empty(const struct restrict_list *list)
{
    return list == NULL || list->nsteps == 0;
}

int restrict_list_has(const struct restrict_list *list, const char *name)
{
    for (int i = 0; list && i < list->nsteps; i++)
        if (strcmp(list->steps[i].name, name) == 0)
            return 1;
    return 0;
}

/* ------------------------------------------------------------------ */

static struct restrict_list *stage_list(const struct smtpd_settings *set, enum restrict_stage stage)
{
    switch (stage) {
    case RS_CLIENT: return set->client_restrictions;
    case RS_HELO: return set->helo_restrictions;
    case RS_SENDER: return set->sender_restrictions;
    case RS_RECIPIENT: return set->recipient_restrictions;
    case RS_RELAY: return set->relay_restrictions;
    case RS_DATA: return set->data_restrictions;
    case RS_EOD: return set->eod_restrictions;
    default: return NULL;
    }
}

/* "<subject>: Client host rejected: " — Postfix's wording per stage. */
static const char *subject_text(struct smtpd_session *s, struct restrict_run *run, enum restrict_stage stage,
                                enum step_kind kind, const char *why)
{
    petrel_pool *pool = smtpd_cmd_pool(s);
    switch (stage) {
    case RS_CLIENT:
        return petrel_pool_printf(pool, "<%s>: Client host rejected: %s", s->namaddr, why);
    case RS_HELO:
        return petrel_pool_printf(pool, "<%s>: Helo command rejected: %s", s->helo ? s->helo : "", why);
    case RS_SENDER:
        return petrel_pool_printf(pool, "<%s>: Sender address rejected: %s",
                                  s->tx && s->tx->mail.address ? s->tx->mail.address : "", why);
    case RS_RECIPIENT:
    case RS_RELAY:
        return petrel_pool_printf(pool, "<%s>: Recipient address rejected: %s", run->rcpt ? run->rcpt : "",
                                  why);
    case RS_DATA:
        return petrel_pool_printf(pool, "<DATA>: Data command rejected: %s", why);
    default:
        return petrel_pool_printf(pool, "<END-OF-MESSAGE>: End-of-data rejected: %s", why);
    }
    (void)kind;
}

static enum restrict_verdict decide(struct restrict_result *r, enum restrict_verdict v, int code,
                                    const char *enhanced, const char *text)
{
    r->verdict = v;
    r->code = code;
    r->enhanced = enhanced;
    r->text = text;
    return v;
}

static enum restrict_verdict reject_with(struct smtpd_session *s, struct restrict_run *run,
                                         enum restrict_stage stage, enum step_kind kind,
                                         int code, const char *enhanced, const char *why,
                                         struct restrict_result *r)
{
    return decide(r, code >= 500 ? RV_REJECT : RV_DEFER, code, enhanced,
                  subject_text(s, run, stage, kind, why));
}

static int domain_of(const char *address, const char **domain)
{
    return address && smtp_address_domain(address, domain) && *domain && **domain;
}

static int is_auth_destination(struct smtpd_session *s, const char *rcpt)
{
    const char *domain = NULL;
    if (!domain_of(rcpt, &domain))
        return strcasecmp(rcpt, "postmaster") == 0;   /* bare <postmaster> is ours */
    if (*domain == '[')
        return 0;   /* address literals: not ours unless configured (not yet supported) */
    return mail_domain_is_ours(&s->set->domains, domain);
}

/* Turns an access(5) table result into a verdict. */
static enum restrict_verdict access_action(struct smtpd_session *s, struct restrict_run *run,
                                           enum restrict_stage stage, const struct restrict_step *step,
                                           const char *value, struct restrict_result *r)
{
    while (isspace((unsigned char)*value))
        value++;
    size_t wl = strcspn(value, " \t");
    const char *rest = value + wl;
    while (isspace((unsigned char)*rest))
        rest++;
    petrel_pool *pool = smtpd_cmd_pool(s);

    if ((wl == 2 && strncasecmp(value, "OK", 2) == 0)) {
        return decide(r, RV_PERMIT, 0, NULL, NULL);
    }
    int all_digits = wl > 0;
    for (size_t i = 0; i < wl; i++)
        if (!isdigit((unsigned char)value[i]))
            all_digits = 0;
    if (all_digits && wl == 3 && (value[0] == '4' || value[0] == '5')) {
        int code = atoi(value);
        const char *enhanced = value[0] == '5' ? "5.7.1" : "4.7.1";
        const char *text = rest;
        /* An enhanced code in the text must agree with the reply's class. */
        if (rest[0] == value[0] && rest[1] == '.' && isdigit((unsigned char)rest[2])) {
            size_t el = strcspn(rest, " \t");
            enhanced = petrel_pool_strndup(pool, rest, el);
            text = rest + el;
            while (isspace((unsigned char)*text))
                text++;
        }
        return reject_with(s, run, stage, step->kind, code, enhanced, *text ? text : "Access denied", r);
    }
    if (all_digits)
        return decide(r, RV_PERMIT, 0, NULL, NULL);   /* numeric result: OK (access(5)) */
    if (wl == 6 && strncasecmp(value, "REJECT", 6) == 0)
        return reject_with(s, run, stage, step->kind, 554, "5.7.1", *rest ? rest : "Access denied", r);
    if (wl == 5 && strncasecmp(value, "DEFER", 5) == 0)
        return reject_with(s, run, stage, step->kind, 450, "4.7.1", *rest ? rest : "Access denied", r);
    if (wl == 5 && strncasecmp(value, "DUNNO", 5) == 0)
        return RV_DUNNO;
    if (wl == 4 && strncasecmp(value, "HOLD", 4) == 0)
        return decide(r, RV_HOLD, 0, NULL, NULL);
    if (wl == 7 && strncasecmp(value, "DISCARD", 7) == 0)
        return decide(r, RV_DISCARD, 0, NULL, NULL);
    if ((wl == 4 && strncasecmp(value, "WARN", 4) == 0) || (wl == 4 && strncasecmp(value, "INFO", 4) == 0)) {
        msg_info("%s: %s: %s from %s: %s", s->tx && s->tx->queue_id[0] ? s->tx->queue_id : "NOQUEUE",
                 wl == 4 && (value[0] == 'W' || value[0] == 'w') ? "warn" : "info", step->name, s->namaddr,
                 rest);
        return RV_DUNNO;
    }
    msg_warn("access table %s: unknown action \"%.*s\"", tbl_spec(step->table), (int)wl, value);
    return decide(r, RV_DEFER, 451, "4.3.5", "Server configuration error");
}

static enum restrict_verdict run_table(struct smtpd_session *s, struct restrict_run *run,
                                       enum restrict_stage stage, const struct restrict_step *step,
                                       struct restrict_result *r)
{
    const char *value = NULL;
    int found;
    switch (step->kind) {
    case STEP_CHECK_CLIENT:
        found = tbl_access_lookup_client(step->table, s->name, s->addr, &value);
        break;
    case STEP_CHECK_HELO:
        if (s->helo == NULL)
            return RV_DUNNO;
        found = tbl_access_lookup_domain(step->table, s->helo, &value);
        break;
    case STEP_CHECK_SENDER:
        if (s->tx == NULL)
            return RV_DUNNO;
        /* The null sender is looked up as the empty string? Postfix uses smtpd_null_access_lookup_key. */
        found = tbl_access_lookup_address(step->table, s->tx->mail.null_sender ? "<>" : s->tx->mail.address,
                                          s->set->recipient_delimiter, &value);
        break;
    default:
        if (run->rcpt == NULL)
            return RV_DUNNO;
        found = tbl_access_lookup_address(step->table, run->rcpt, s->set->recipient_delimiter, &value);
        break;
    }
    if (found == TBL_ERROR) {
        msg_warn("%s: table lookup error: %s", step->name, tbl_spec(step->table));
        return decide(r, RV_DEFER, 451, "4.3.0", "Temporary lookup failure");
    }
    if (found != TBL_FOUND)
        return RV_DUNNO;
    return access_action(s, run, stage, step, value, r);
}

/* Postfix's reject_unlisted_recipient and reject_unlisted_sender (explicit
 * in a list, or implicit at the end of the recipient or sender checks):
 * an unknown address in one of our domains is refused with the class's
 * code; a table that fails defers. */
static enum restrict_verdict check_unlisted(struct smtpd_session *s, struct restrict_run *run, int sender,
                                            struct restrict_result *r)
{
    const char *address = sender ? (s->tx ? s->tx->mail.address : NULL) : run->rcpt;
    if (address == NULL || *address == '\0')
        return RV_DUNNO;   /* no transaction yet, or the null sender */
    int *checked = sender ? &run->sender_maps_checked : &run->rcpt_maps_checked;
    if (*checked)
        return RV_DUNNO;
    *checked = 1;
    petrel_pool *pool = s->tx ? s->tx->pool : s->pool;
    struct rcpt_maps_answer answer;
    switch (smtpd_rcpt_maps_check(s->set->rcpt_maps, &s->set->domains, address, sender, pool, &answer)) {
    case RCPT_MAPS_KNOWN:
        return RV_DUNNO;
    case RCPT_MAPS_RETRY:
        return decide(r, RV_DEFER, 451, "4.3.0", petrel_pool_printf(pool, "<%s>: Temporary lookup failure", address));
    case RCPT_MAPS_UNKNOWN:
        break;
    }
    return reject_with(s, run, sender ? RS_SENDER : RS_RECIPIENT,
                       sender ? STEP_REJECT_UNLISTED_SENDER : STEP_REJECT_UNLISTED_RCPT, answer.code,
                       answer.enhanced, answer.why, r);
}

/* What runs when a stage's list is done (exhausted or PERMIT): the implicit
 * smtpd_reject_unlisted_sender / smtpd_reject_unlisted_recipient check,
 * unless the list already ran it, a DISCARD was decided or the mail is a
 * local submission. Returns 1 with *r when that refuses. */
static int stage_finished(struct smtpd_session *s, struct restrict_run *run, enum restrict_stage stage,
                          struct restrict_result *r)
{
    int discard = run->collected.verdict == RV_DISCARD || (s->tx && s->tx->discard);
    int sender;
    if (stage == RS_SENDER && s->set->reject_unlisted_sender)
        sender = 1;
    else if (stage == RS_RECIPIENT && s->set->reject_unlisted_recipient)
        sender = 0;
    else
        return 0;
    /* Mail from petrel-sendmail is never refused for an unknown address, as
     * Postfix's sendmail/pickup path never meets smtpd's check: it is
     * accepted and bounced to the local user who sent it. */
    if (discard || s->local_submission)
        return 0;
    struct restrict_result result = { RV_DUNNO, 0, NULL, NULL };
    enum restrict_verdict v = check_unlisted(s, run, sender, &result);
    if (v != RV_REJECT && v != RV_DEFER)
        return 0;
    *r = result;
    return 1;
}

int restrict_stage_needed(const struct smtpd_settings *set, enum restrict_stage stage)
{
    if (stage == RS_SENDER && set->reject_unlisted_sender)
        return 1;
    if (stage == RS_RECIPIENT && set->reject_unlisted_recipient)
        return 1;
    return !restrict_list_empty(stage_list(set, stage));
}

static enum restrict_verdict run_module_step(struct smtpd_session *s, struct restrict_run *run,
                                             const struct restrict_step *step, struct restrict_result *r);

static petrel_verdict call_restriction(petrel_session *ps, void *arg)
{
    const struct restrict_step *step = arg;
    return step->provided->check(ps, step->state);
}

static enum restrict_verdict run_step(struct smtpd_session *s, struct restrict_run *run,
                                      enum restrict_stage stage, const struct restrict_step *step,
                                      struct restrict_result *r)
{
    const char *sender = s->tx ? s->tx->mail.address : NULL;
    const char *domain = NULL;
    switch (step->kind) {
    case STEP_PERMIT:
        return decide(r, RV_PERMIT, 0, NULL, NULL);
    case STEP_REJECT:
        return reject_with(s, run, stage, step->kind, 554, "5.7.1", "Access denied", r);
    case STEP_DEFER:
        return reject_with(s, run, stage, step->kind, 450, "4.7.1", "Access denied", r);
    case STEP_PERMIT_MYNETWORKS:
        return s->in_mynetworks ? decide(r, RV_PERMIT, 0, NULL, NULL) : RV_DUNNO;
    case STEP_PERMIT_SASL:
        return s->sasl_username ? decide(r, RV_PERMIT, 0, NULL, NULL) : RV_DUNNO;
    case STEP_REJECT_UNAUTH_DEST:
    case STEP_DEFER_UNAUTH_DEST:
        if (run->rcpt == NULL || is_auth_destination(s, run->rcpt))
            return RV_DUNNO;
        return decide(r, step->kind == STEP_REJECT_UNAUTH_DEST ? RV_REJECT : RV_DEFER,
                      step->kind == STEP_REJECT_UNAUTH_DEST ? 554 : 454,
                      step->kind == STEP_REJECT_UNAUTH_DEST ? "5.7.1" : "4.7.1",
                      petrel_pool_printf(smtpd_cmd_pool(s), "<%s>: Relay access denied", run->rcpt));
    case STEP_PERMIT_AUTH_DEST:
        return run->rcpt && is_auth_destination(s, run->rcpt) ? decide(r, RV_PERMIT, 0, NULL, NULL) : RV_DUNNO;
    case STEP_REJECT_UNAUTH_PIPELINING:
        /* Checked when it matters, at DATA: the client sent more before our
         * 354. PIPELINING (RFC 2920) never allows that, so ESMTP clients are
         * caught too, as Postfix does; the wording is Postfix's. BDAT is
         * followed by its chunk by design (RFC 3030): never a violation. */
        if (stage == RS_DATA && s->bev && evbuffer_get_length(bufferevent_get_input(s->bev)) > 0 &&
            !(s->tx && s->tx->eom_counter == CNT_BDAT))
            return reject_with(s, run, stage, step->kind, 503, "5.5.0", "Improper use of SMTP command pipelining", r);
        return RV_DUNNO;
    case STEP_REJECT_NON_FQDN_SENDER:
        if (sender == NULL || *sender == '\0')
            return RV_DUNNO;
        if (domain_of(sender, &domain) && (*domain == '[' || smtp_is_fqdn(domain)))
            return RV_DUNNO;
        return reject_with(s, run, stage == RS_SENDER ? stage : RS_SENDER, step->kind, 504, "5.5.2",
                           "need fully-qualified address", r);
    case STEP_REJECT_NON_FQDN_RCPT:
        if (run->rcpt == NULL || strcasecmp(run->rcpt, "postmaster") == 0)
            return RV_DUNNO;
        if (domain_of(run->rcpt, &domain) && (*domain == '[' || smtp_is_fqdn(domain)))
            return RV_DUNNO;
        return reject_with(s, run, RS_RECIPIENT, step->kind, 504, "5.5.2", "need fully-qualified address", r);
    case STEP_REJECT_NON_FQDN_HELO:
        if (s->helo == NULL || *s->helo == '[' || smtp_is_fqdn(s->helo))
            return RV_DUNNO;
        return reject_with(s, run, RS_HELO, step->kind, 504, "5.5.2", "need fully-qualified hostname", r);
    case STEP_REJECT_INVALID_HELO:
        if (s->helo == NULL)
            return RV_DUNNO;
        if (*s->helo == '[' ? smtp_valid_address_literal(s->helo) : smtp_valid_hostname(s->helo))
            return RV_DUNNO;
        return reject_with(s, run, RS_HELO, step->kind, 501, "5.5.2", "Invalid name", r);
    case STEP_CHECK_CLIENT:
    case STEP_CHECK_HELO:
    case STEP_CHECK_SENDER:
    case STEP_CHECK_RCPT:
        return run_table(s, run, stage, step, r);
    case STEP_REJECT_UNLISTED_RCPT:
        return check_unlisted(s, run, 0, r);
    case STEP_REJECT_UNLISTED_SENDER:
        return check_unlisted(s, run, 1, r);
    case STEP_MODULE:
        return run_module_step(s, run, step, r);
    }
    return RV_DUNNO;
}

/* Applies one step's verdict to the run. Returns 1 when the evaluation is
 * decided (a refusal, in *r), 0 to go on. */
static int apply_step(struct restrict_run *run, enum restrict_verdict v, const struct restrict_result *step_result,
                      struct restrict_result *r)
{
    if (v == RV_HOLD || v == RV_DISCARD) {
        /* Non-terminating actions: remembered for the message. */
        if (run->collected.verdict != RV_DISCARD)
            run->collected.verdict = v;
        return 0;
    }
    if (v == RV_PERMIT) {
        /* this list is done (its end-of-list checks still run); the next stage too */
        run->step_index = INT_MAX;
        return 0;
    }
    if (v == RV_REJECT || v == RV_DEFER) {
        *r = *step_result;
        return 1;
    }
    return 0;
}

/* Walks the remaining stages and steps; returns 1 when finished. */
static int run_steps(struct smtpd_session *s, struct restrict_run *run, struct restrict_result *r)
{
    while (run->stage_index < run->nstages) {
        enum restrict_stage stage = run->stages[run->stage_index];
        struct restrict_list *list = stage_list(s->set, stage);
        if (list == NULL || run->step_index >= list->nsteps) {
            if (stage_finished(s, run, stage, r))
                return 1;
            run->stage_index++;
            run->step_index = 0;
            continue;
        }
        struct restrict_result step_result = { RV_DUNNO, 0, NULL, NULL };
        enum restrict_verdict v = run_step(s, run, stage, &list->steps[run->step_index], &step_result);
        run->step_index++;
        if (v == RV_PENDING)
            return 0;
        if (apply_step(run, v, &step_result, r))
            return 1;
    }
    *r = run->collected;
    return 1;
}

static void run_finished(struct smtpd_session *s, struct restrict_run *run, const struct restrict_result *result)
{
    s->check = NULL;
    run->done(s, result);
}

/* A module restriction that suspended has answered (or timed out). */
static void module_step_completed(struct smtpd_session *s, struct petrel_pending *p, const struct restrict_result *sr)
{
    struct restrict_run *run = s->check;
    if (run == NULL)
        return;
    struct restrict_result result = { RV_DUNNO, 0, NULL, NULL };
    if (apply_step(run, sr->verdict, sr, &result) || run_steps(s, run, &result))
        run_finished(s, run, &result);
}

static enum restrict_verdict run_module_step(struct smtpd_session *s, struct restrict_run *run,
                                             const struct restrict_step *step, struct restrict_result *r)
{
    struct petrel_module *m = step->module;
    if (!module_circuit_allows(m, time(NULL))) {
        smtpd_plugin_default_result(m, r);
        return r->verdict;
    }
    s->api.rcpt = run->rcpt;
    struct petrel_pending *pending;
    petrel_verdict v = smtpd_plugin_call(s, m, step->name, call_restriction, (void *)step, &pending);
    if (pending) {
        smtpd_plugin_wait(s, pending, module_step_completed);
        return RV_PENDING;
    }
    if ((int)v == PETREL_TEMPFAIL + 100) {
        smtpd_plugin_default_result(m, r);
    } else if (smtpd_plugin_result(s, m, v, s->api.reply_code, s->api.reply_enhanced, s->api.reply_text, r) != 0) {
        module_circuit_failure(m, time(NULL), "invalid reply");
    } else {
        module_circuit_success(m);
    }
    return r->verdict;
}

void restrict_check(struct smtpd_session *s, const enum restrict_stage *stages, int nstages,
                    const char *rcpt, restrict_done_fn *done)
{
    struct restrict_run *run = petrel_pool_zalloc(smtpd_cmd_pool(s), sizeof(*run));
    for (int i = 0; i < nstages && i < RS_COUNT; i++)
        run->stages[i] = stages[i];
    run->nstages = nstages;
    run->rcpt = rcpt;
    run->done = done;
    run->collected.verdict = RV_DUNNO;
    s->check = run;
    struct restrict_result result = { RV_DUNNO, 0, NULL, NULL };
    if (run_steps(s, run, &result))
        run_finished(s, run, &result);
    /* Otherwise a module step is pending: module_step_completed resumes. */
}
