/*
 * The built-in restrictions that decide at once, and the access(5) action
 * evaluator that check_*_access tables and policy servers share.
 *
 * Replies are Postfix's, word for word: reply codes from the *_reject_code
 * parameters, "<name>: Class rejected: text" with the subject each
 * restriction looks at (a check_client_access table answering in the
 * recipient restrictions still speaks of the "Client host"), enhanced
 * codes fixed to what is being refused (smtpd_dsn_fix).
 *
 * Actions that change the message (HOLD, DISCARD, REDIRECT, BCC, PREPEND)
 * apply to the transaction at once, as Postfix's do, and only inside one:
 * with smtpd_delay_reject = no a client or HELO restriction cannot use
 * them (Postfix warns and skips them). FILTER sets the message's content
 * filter (doc/content-inspection.md). Before a proxy filter
 * (smtpd_proxy_filter) nothing is queued, so HOLD, DISCARD, REDIRECT, BCC
 * and FILTER are unavailable there, with Postfix's warning.
 */
#include "config.h"

#include <ctype.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>

#include "lib/log.h"
#include "mail/addr_class.h"
#include "mail/addr_find.h"
#include "mail/maps.h"
#include "smtpd/access_action.h"
#include "smtpd/content_int.h"
#include "smtpd/restrict_int.h"
#include "smtpd/smtpd_int.h"
#include "tables/access.h"
#include "tables/cidr.h"
#include "tables/table.h"

static const char *sender_of(const struct smtpd_session *s)
{
    return s->tx ? s->tx->mail.address : NULL;
}

/* Postfix's can_delegate_action()/not_in_client_helo(): actions that
 * change the message need a transaction. */
static int in_transaction(struct smtpd_session *s, const char *table, const char *action)
{
    if (s->tx)
        return 1;
    msg_warn("access table %s: with smtpd_delay_reject=no, action %s is always skipped in %s or %s restrictions",
             table, action, SUBJECT_CLIENT, SUBJECT_HELO);
    return 0;
}

/* ... and a queue file that will carry them: none before a proxy filter. */
static int can_delegate(struct smtpd_session *s, const char *table, const char *action)
{
    if (smtpd_proxy_enabled(s)) {
        msg_warn("access table %s: with smtpd_proxy_filter specified, action %s is unavailable", table, action);
        return 0;
    }
    return in_transaction(s, table, action);
}

static void add_string(petrel_pool *pool, const char ***list, size_t *n, const char *value)
{
    const char **grown = petrel_pool_alloc(pool, (*n + 1) * sizeof(*grown));
    if (*n)
        memcpy(grown, *list, *n * sizeof(*grown));
    grown[(*n)++] = petrel_pool_strdup(pool, value);
    *list = grown;
}

enum restrict_verdict restrict_apply_action(struct smtpd_session *s, struct restrict_run *run, const char *table,
                                            const char *value, const char *datum, const char *reply_name,
                                            const char *reply_class, struct restrict_result *r)
{
    const struct smtpd_settings *set = s->set;
    struct access_action a;
    char dsn[12];
    access_action_parse(value, &a);
    struct smtpd_tx *tx = s->tx;
    switch (a.verb) {
    case ACCESS_DUNNO:
        return RV_DUNNO;
    case ACCESS_OK:
        return RV_PERMIT;
    case ACCESS_REJECT:
    case ACCESS_DEFER:
    case ACCESS_CODE:
        access_dsn_fix(a.dsn, reply_class, dsn);
        return restrict_refuse(s, run, RCLASS_POLICY,
                               a.verb == ACCESS_REJECT ? set->access_map_reject_code
                               : a.verb == ACCESS_DEFER ? set->access_map_defer_code : a.code,
                               dsn, r, "<%s>: %s rejected: %s", reply_name, reply_class,
                               *a.reason ? a.reason : "Access denied");
    case ACCESS_DEFER_IF_PERMIT:
        access_dsn_fix(a.dsn, reply_class, dsn);
        return restrict_defer_if_permit(s, run, 1, RCLASS_POLICY, set->access_map_defer_code, dsn, r,
                                        "<%s>: %s rejected: %s", reply_name, reply_class,
                                        *a.reason ? a.reason : "Service unavailable");
    case ACCESS_DEFER_IF_REJECT:
        access_dsn_fix(a.dsn, reply_class, dsn);
        restrict_defer_if_reject(s, run, RCLASS_POLICY, set->access_map_defer_code, dsn, "<%s>: %s rejected: %s",
                                 reply_name, reply_class, *a.reason ? a.reason : "Service unavailable");
        return RV_DUNNO;
    case ACCESS_INFO:
        restrict_log(s, run, "info", "%s", a.text);
        return RV_DUNNO;
    case ACCESS_WARN:
        restrict_log(s, run, "warn", "%s", a.text);
        return RV_DUNNO;
    case ACCESS_HOLD:
        if (!can_delegate(s, table, "HOLD") || tx->hold)
            return RV_DUNNO;
        restrict_log(s, run, "hold", "<%s>: %s %s", reply_name, reply_class, *a.text ? a.text : "triggers HOLD action");
        tx->hold = 1;
        return RV_DUNNO;
    case ACCESS_DISCARD:
        if (!can_delegate(s, table, "DISCARD"))
            return RV_DUNNO;
        restrict_log(s, run, "discard", "<%s>: %s %s", reply_name, reply_class,
                     *a.text ? a.text : "triggers DISCARD action");
        tx->discard = 1;
        return RV_PERMIT;
    case ACCESS_REDIRECT:
    case ACCESS_BCC: {
        const char *verb = a.verb == ACCESS_REDIRECT ? "REDIRECT" : "BCC";
        if (!can_delegate(s, table, verb))
            return RV_DUNNO;
        if (strchr(a.text, '@') == NULL) {
            msg_warn("access table %s entry \"%s\" requires user@domain target", table, datum);
            return RV_DUNNO;
        }
        restrict_log(s, run, a.verb == ACCESS_REDIRECT ? "redirect" : "bcc", "<%s>: %s triggers %s %s", reply_name,
                     reply_class, verb, a.text);
        if (a.verb == ACCESS_REDIRECT)
            tx->redirect = petrel_pool_strdup(tx->pool, a.text);   /* the last one wins */
        else
            add_string(tx->pool, &tx->bcc, &tx->nbcc, a.text);
        tx->envelope_changes++;
        return RV_DUNNO;
    }
    case ACCESS_FILTER:
        if (!can_delegate(s, table, "FILTER"))
            return RV_DUNNO;
        if (*a.text == '\0') {
            msg_warn("access table %s entry \"%s\" has FILTER entry without value", table, datum);
            return RV_DUNNO;
        }
        if (strchr(a.text, ':') == NULL) {
            msg_warn("access table %s entry \"%s\" requires transport:destination", table, datum);
            return RV_DUNNO;
        }
        restrict_log(s, run, "filter", "<%s>: %s triggers FILTER %s", reply_name, reply_class, a.text);
        /* The message goes to that content filter after it is queued,
         * instead of content_filter; the last one wins. */
        tx->filter = petrel_pool_strdup(tx->pool, a.text);
        if (tx->writer)
            tx->envelope_changed |= CHANGED_BY_ACCESS;   /* end of data: the queue file is rewritten */
        return RV_DUNNO;
    case ACCESS_PREPEND:
        if (!in_transaction(s, table, "PREPEND"))
            return RV_DUNNO;
        if (strcmp(run->where, "END-OF-MESSAGE") == 0) {
            msg_warn("access table %s: action PREPEND must be used before smtpd_end_of_data_restrictions", table);
            return RV_DUNNO;
        }
        if (!access_is_header(a.text)) {
            msg_warn("access table %s entry \"%s\" requires header: text", table, datum);
            return RV_DUNNO;
        }
        add_string(tx->pool, &tx->prepend, &tx->nprepend, a.text);
        return RV_DUNNO;
    case ACCESS_TABLE_IN_VALUE:
        msg_warn("access table %s has entry with lookup table: %s", table, value);
        msg_warn("do not specify lookup tables inside SMTPD access maps");
        msg_warn("define a restriction class and specify its name instead.");
        return restrict_server_error(s, run, r);
    case ACCESS_RESTRICTIONS:
        break;
    }
    const char *why = NULL;
    struct restrict_list *list = restrict_compile_runtime(s, value, &why);
    if (list == NULL) {
        msg_warn("access table %s entry \"%s\": %s: \"%s\"", table, datum, why, value);
        return restrict_server_error(s, run, r);
    }
    if (list->nsteps == 0) {
        msg_warn("access table %s entry %s has empty value", table, datum);
        return RV_PERMIT;
    }
    return restrict_push(s, run, list, reply_name, reply_class, r);
}

/* A table lookup: found (apply the action), not found, or an error (Postfix
 * answers "451 4.3.5 Server configuration error" through the same evaluator). */
static enum restrict_verdict table_result(struct smtpd_session *s, struct restrict_run *run,
                                          const struct restrict_step *step, int found, const char *value,
                                          const char *datum, const char *reply_name, const char *reply_class,
                                          struct restrict_result *r)
{
    if (found == TBL_ERROR) {
        msg_warn("%s: table lookup error: %s", step->name, tbl_spec(step->table));
        value = "451 4.3.5 Server configuration error";
    } else if (found != TBL_FOUND) {
        return RV_DUNNO;
    }
    return restrict_apply_action(s, run, tbl_spec(step->table), value, datum, reply_name, reply_class, r);
}

/* Postfix's forbid_allowlist(): names that are not verified may not say OK. */
static enum restrict_verdict forbid_ok(struct smtpd_session *s, struct restrict_run *run,
                                       const struct restrict_step *step, enum restrict_verdict v,
                                       const char *target, struct restrict_result *r)
{
    if (v != RV_PERMIT || (s->tx && s->tx->discard))
        return v;
    msg_warn("restriction %s returns OK for %s", step->name, target);
    msg_warn("this is not allowed for security reasons");
    msg_warn("use DUNNO instead of OK if you want to make an exception");
    return restrict_server_error(s, run, r);
}

static enum restrict_verdict run_table(struct smtpd_session *s, struct restrict_run *run,
                                       const struct restrict_step *step, struct restrict_result *r)
{
    const char *value = NULL;
    const char *sender = sender_of(s);
    int found;
    enum restrict_verdict v;
    switch (step->kind) {
    case STEP_CHECK_CLIENT:
        found = tbl_access_lookup_client(step->table, s->name, s->addr, &value);
        return table_result(s, run, step, found, value, s->namaddr, s->namaddr, SUBJECT_CLIENT, r);
    case STEP_CHECK_REVERSE_CLIENT:
        found = tbl_access_lookup_client(step->table, s->reverse_name, s->addr, &value);
        v = table_result(s, run, step, found, value, s->reverse_name, s->reverse_name, SUBJECT_REVERSE_CLIENT, r);
        return forbid_ok(s, run, step, v, s->reverse_name, r);
    case STEP_CHECK_HELO:
        if (s->helo == NULL)
            return RV_DUNNO;
        found = tbl_access_lookup_domain(step->table, s->helo, &value);
        return table_result(s, run, step, found, value, s->helo, s->helo, SUBJECT_HELO, r);
    case STEP_CHECK_SENDER:
        if (sender == NULL)
            return RV_DUNNO;
        if (*sender == '\0') {
            /* The null sender is looked up as smtpd_null_access_lookup_key, whole. */
            found = tbl_lookup(step->table, s->set->null_access_key, &value);
            return table_result(s, run, step, found, value, s->set->null_access_key, sender, SUBJECT_SENDER, r);
        }
        found = tbl_access_lookup_address(step->table, sender, s->set->recipient_delimiter, &value);
        return table_result(s, run, step, found, value, sender, sender, SUBJECT_SENDER, r);
    case STEP_CHECK_RCPT:
        if (run->rcpt == NULL)
            return RV_DUNNO;
        found = tbl_access_lookup_address(step->table, run->rcpt, s->set->recipient_delimiter, &value);
        return table_result(s, run, step, found, value, run->rcpt, run->rcpt, SUBJECT_RECIPIENT, r);
    case STEP_CHECK_SASL:
        if (s->sasl_username == NULL || *s->sasl_username == '\0')
            return RV_DUNNO;
        found = tbl_lookup(step->table, s->sasl_username, &value);
        {
            char *sane = petrel_pool_strdup(smtpd_cmd_pool(s), s->sasl_username);
            for (char *p = sane; *p; p++)
                if ((unsigned char)*p < 0x20 || *p == 0x7f)
                    *p = '_';
            return table_result(s, run, step, found, value, sane, sane, SUBJECT_SASL, r);
        }
    case STEP_CHECK_CCERT: {
        /* Postfix: the certificate's fingerprint, then its public key's
         * (smtpd_tls_fingerprint_digest); a certificate whose issuer is not
         * trusted may still match. The reply names the certificate's CN. */
        if (!s->ccert.present)
            return RV_DUNNO;
        const char *cn = s->ccert.subject ? s->ccert.subject : "";
        found = tbl_lookup(step->table, s->ccert.fingerprint, &value);
        if (found == TBL_NOTFOUND && s->ccert.pubkey_fingerprint && *s->ccert.pubkey_fingerprint)
            found = tbl_lookup(step->table, s->ccert.pubkey_fingerprint, &value);
        return table_result(s, run, step, found, value, cn, cn, SUBJECT_CCERT, r);
    }
    default:
        /* check_etrn_access: ETRN is answered 458 before any restriction
         * (Petrel does not implement it), so there is never a domain. */
        return RV_DUNNO;
    }
}

static int domain_of(const char *address, const char **domain)
{
    return address && smtp_address_domain(address, domain) && *domain && **domain;
}

/* Postfix's reject_non_fqdn_address: an address literal is left alone; a
 * trailing dot (but not two) is ignored. */
static int fqdn_address(const char *address)
{
    const char *domain = NULL;
    if (!domain_of(address, &domain))
        return 0;
    if (*domain == '[')
        return 1;
    size_t len = strlen(domain);
    if (len > 1 && domain[len - 1] == '.' && domain[len - 2] != '.') {
        char copy[256];
        if (len - 1 >= sizeof(copy))
            return 0;
        memcpy(copy, domain, len - 1);
        copy[len - 1] = '\0';
        return smtp_is_fqdn(copy);
    }
    return smtp_is_fqdn(domain);
}

/* A HELO name with one trailing dot (not two) is checked without it. */
static const char *helo_for_checks(struct smtpd_session *s)
{
    size_t len = strlen(s->helo);
    if (len > 1 && s->helo[len - 1] == '.' && s->helo[len - 2] != '.')
        return petrel_pool_strndup(smtpd_cmd_pool(s), s->helo, len - 1);
    return s->helo;
}

static int is_address(const char *text)
{
    struct cidr_addr a;
    return cidr_addr_parse(text, &a) == 0;
}

/* 1 when rcpt's domain is ours or one we relay for, 0 when not, -1 when
 * a table of a domain list failed. */
static int is_auth_destination(struct smtpd_session *s, const char *rcpt)
{
    const char *domain = NULL;
    if (!domain_of(rcpt, &domain))
        return strcasecmp(rcpt, "postmaster") == 0;   /* bare <postmaster> is ours */
    if (*domain == '[')
        return 0;   /* address literals: not ours unless configured (not yet supported) */
    return mail_domain_is_ours(&s->set->domains, domain);
}

static void sleep_over(evutil_socket_t fd, short what, void *arg)
{
    struct smtpd_session *s = arg;
    event_free(s->sleep_timer);
    s->sleep_timer = NULL;
    struct restrict_result dunno = { .verdict = RV_DUNNO };
    restrict_step_done(s, RV_DUNNO, &dunno);
}

static void sleep_cancel(void *ctx)
{
    struct smtpd_session *s = ctx;
    if (s->sleep_timer) {
        event_free(s->sleep_timer);
        s->sleep_timer = NULL;
    }
}

/* smtpd_sender_login_maps: who owns the sender address (Postfix's
 * reject_*_sender_login_mismatch). The address is looked up as Postfix's
 * mail_addr_find does (user+ext@domain, user@domain, user for a local
 * domain, @domain); the value lists the owners' logins. 1 found (*list),
 * 0 no owner, -1 the table failed. */
static int sender_owners(struct smtpd_session *s, const char *sender, const char **list)
{
    petrel_pool *pool = smtpd_cmd_pool(s);
    struct mail_addr a;
    mail_addr_split(sender, s->set->recipient_delimiter, pool, &a);
    unsigned strategy = MAIL_FIND_ADDRESS;
    if (*a.domain == '\0' || mail_domain_is_local(&s->set->domains, a.domain))
        strategy |= MAIL_FIND_LOCALPART;
    return mail_addr_find(s->set->sender_login_maps, &a, strategy, pool, list);
}

static int login_listed(const char *list, const char *login)
{
    for (const char *p = list; *p;) {
        p += strspn(p, ", \t");
        size_t n = strcspn(p, ", \t");
        if (n && strlen(login) == n && strncasecmp(p, login, n) == 0)
            return 1;
        p += n;
    }
    return 0;
}

static enum restrict_verdict sender_login(struct smtpd_session *s, struct restrict_run *run,
                                          const struct restrict_step *step, struct restrict_result *r)
{
    const char *sender = sender_of(s);
    if (sender == NULL || *sender == '\0')
        return RV_DUNNO;
    if (s->set->sasl == NULL && s->set->sasl_server == NULL) {
        /* Postfix's behaviour, said out loud. */
        msg_warn("restriction `%s' ignored: no SASL support (smtpd_sasl_auth_enable = no)", step->name);
        return RV_DUNNO;
    }
    if (s->set->sender_login_maps == NULL || s->set->sender_login_maps->n == 0) {
        /* settings.c refuses this in the restriction lists; a class may still name it */
        msg_warn("restriction `%s' ignored: smtpd_sender_login_maps is empty", step->name);
        return RV_DUNNO;
    }
    int authenticated = s->sasl_username != NULL;
    int check_auth = authenticated && step->kind != STEP_UNAUTH_SENDER_LOGIN;
    int check_unauth = !authenticated && step->kind != STEP_AUTH_SENDER_LOGIN;
    if (!check_auth && !check_unauth)
        return RV_DUNNO;
    const char *owners = NULL;
    int found = sender_owners(s, sender, &owners);
    if (found < 0)
        return restrict_lookup_failure(s, run, sender, r);
    if (check_auth) {
        if (found == 0 && step->kind == STEP_KNOWN_SENDER_LOGIN)
            return RV_DUNNO;   /* an address nobody owns */
        if (found == 1 && login_listed(owners, s->sasl_username))
            return RV_DUNNO;
        return restrict_refuse(s, run, RCLASS_POLICY, 553, "5.7.1", r,
                               "<%s>: Sender address rejected: not owned by user %s", sender, s->sasl_username);
    }
    if (found == 1)
        return restrict_refuse(s, run, RCLASS_POLICY, 553, "5.7.1", r, "<%s>: Sender address rejected: not logged in",
                               sender);
    return RV_DUNNO;
}

enum restrict_verdict restrict_run_builtin(struct smtpd_session *s, struct restrict_run *run,
                                           const struct restrict_step *step, struct restrict_result *r)
{
    const struct smtpd_settings *set = s->set;
    const struct restrict_frame *f = restrict_frame(run);
    const char *sender = sender_of(s);
    switch (step->kind) {
    case STEP_PERMIT:
        return RV_PERMIT;
    case STEP_REJECT:
        return restrict_refuse(s, run, RCLASS_POLICY, set->reject_code, "5.7.1", r, "<%s>: %s rejected: Access denied",
                               f->reply_name, f->reply_class);
    case STEP_DEFER:
        return restrict_refuse(s, run, RCLASS_POLICY, set->defer_code, "4.3.2", r,
                               "<%s>: %s rejected: Try again later", f->reply_name, f->reply_class);
    case STEP_DEFER_IF_PERMIT:
        return restrict_defer_if_permit(s, run, 1, RCLASS_POLICY, 450, "4.7.0", r,
                                        "<%s>: %s rejected: defer_if_permit requested", f->reply_name,
                                        f->reply_class);
    case STEP_DEFER_IF_REJECT:
        restrict_defer_if_reject(s, run, RCLASS_POLICY, 450, "4.7.0", "<%s>: %s rejected: defer_if_reject requested",
                                 f->reply_name, f->reply_class);
        return RV_DUNNO;
    case STEP_SLEEP:
        if (step->number <= 0)
            return RV_DUNNO;
        /* Postfix sleeps in its process; here only this session waits. */
        {
            struct timeval tv = { step->number, 0 };
            s->sleep_timer = evtimer_new(s->worker->base, sleep_over, s);
            evtimer_add(s->sleep_timer, &tv);
            restrict_wait(s, sleep_cancel, s);
            return RV_PENDING;
        }
    case STEP_PERMIT_MYNETWORKS:
        /* A mynetworks table failed: Postfix's 451 4.3.0 for the stage's
         * reply name (the recipient at RCPT, the client at connect). */
        if (s->in_mynetworks < 0)
            return restrict_lookup_failure(s, run, run->depth > 0 && run->frames[run->depth - 1].reply_name
                                                       ? run->frames[run->depth - 1].reply_name : s->namaddr, r);
        return s->in_mynetworks ? RV_PERMIT : RV_DUNNO;
    case STEP_PERMIT_INET_INTERFACES:
        return !s->local_submission && cidr_list_match(set->own_addresses, s->addr) ? RV_PERMIT : RV_DUNNO;
    case STEP_PERMIT_SASL:
        return s->sasl_username ? RV_PERMIT : RV_DUNNO;
    case STEP_PERMIT_TLS_ALL_CLIENTCERTS:
        /* any client certificate a CA in smtpd_tls_CAfile/_CApath verified */
        return s->ccert.verified ? RV_PERMIT : RV_DUNNO;
    case STEP_PERMIT_TLS_CLIENTCERTS: {
        /* relay_clientcerts names the public key's or the certificate's
         * fingerprint (Postfix's order); the issuer need not be trusted */
        if (!s->ccert.present)
            return RV_DUNNO;
        const char *prints[2] = { s->ccert.pubkey_fingerprint, s->ccert.fingerprint }, *value;
        for (int k = 0; k < 2; k++) {
            if (!prints[k] || !*prints[k])
                continue;
            int found = mail_maps_get(set->relay_clientcerts, prints[k], smtpd_cmd_pool(s), &value);
            if (found < 0)   /* pending (the step runs again) or failed (maps.c logged it) */
                return restrict_lookup_failure(s, run, prints[k], r);
            if (found > 0)
                return RV_PERMIT;
        }
        return RV_DUNNO;
    }
    case STEP_REJECT_PLAINTEXT:
        if (s->tls_active)
            return RV_DUNNO;
        return restrict_refuse(s, run, RCLASS_POLICY, set->plaintext_code, "4.7.1", r,
                               "Session encryption is required");
    case STEP_REJECT_UNAUTH_DEST:
    case STEP_DEFER_UNAUTH_DEST:
        if (run->rcpt == NULL)
            return RV_DUNNO;
        switch (is_auth_destination(s, run->rcpt)) {
        case 1:
            return RV_DUNNO;
        case -1:   /* a table of a domain list failed (Postfix's reject_dict_retry) */
            return restrict_lookup_failure(s, run, run->rcpt, r);
        }
        return restrict_refuse(s, run, RCLASS_POLICY,
                               step->kind == STEP_REJECT_UNAUTH_DEST ? set->relay_code : set->relay_code - 100,
                               step->kind == STEP_REJECT_UNAUTH_DEST ? "5.7.1" : "4.7.1", r,
                               "<%s>: Relay access denied", run->rcpt);
    case STEP_PERMIT_AUTH_DEST:
        if (run->rcpt == NULL)
            return RV_DUNNO;
        switch (is_auth_destination(s, run->rcpt)) {
        case 1:
            return RV_PERMIT;
        case -1:
            return restrict_lookup_failure(s, run, run->rcpt, r);
        }
        return RV_DUNNO;
    case STEP_REJECT_UNAUTH_PIPELINING:
        /* Checked when it matters, at DATA: the client sent more before our
         * 354. PIPELINING (RFC 2920) never allows that, so ESMTP clients are
         * caught too, as Postfix does; the wording is Postfix's. BDAT is
         * followed by its chunk by design (RFC 3030): never a violation. */
        if (strcmp(run->where, "DATA") == 0 && s->bev && evbuffer_get_length(bufferevent_get_input(s->bev)) > 0)
            return restrict_refuse(s, run, RCLASS_PROTOCOL, 503, "5.5.0", r,
                                   "<%s>: %s rejected: Improper use of SMTP command pipelining", f->reply_name,
                                   f->reply_class);
        return RV_DUNNO;
    case STEP_REJECT_NON_FQDN_SENDER:
        if (sender == NULL || *sender == '\0' || fqdn_address(sender))
            return RV_DUNNO;
        return restrict_refuse(s, run, RCLASS_POLICY, set->non_fqdn_code, "4.5.2", r,
                               "<%s>: %s rejected: need fully-qualified address", sender, SUBJECT_SENDER);
    case STEP_REJECT_NON_FQDN_RCPT:
        if (run->rcpt == NULL || fqdn_address(run->rcpt))
            return RV_DUNNO;
        return restrict_refuse(s, run, RCLASS_POLICY, set->non_fqdn_code, "4.5.2", r,
                               "<%s>: %s rejected: need fully-qualified address", run->rcpt, SUBJECT_RECIPIENT);
    case STEP_REJECT_NON_FQDN_HELO:
        if (s->helo == NULL)
            return RV_DUNNO;
        if (*s->helo == '[') {
            if (smtp_valid_address_literal(s->helo))
                return RV_DUNNO;
            return restrict_refuse(s, run, RCLASS_POLICY, set->invalid_hostname_code, "5.5.2", r,
                                   "<%s>: %s rejected: invalid ip address", s->helo, SUBJECT_HELO);
        }
        if (smtp_is_fqdn(helo_for_checks(s)))
            return RV_DUNNO;
        return restrict_refuse(s, run, RCLASS_POLICY, set->non_fqdn_code, "5.5.2", r,
                               "<%s>: %s rejected: need fully-qualified hostname", s->helo, SUBJECT_HELO);
    case STEP_REJECT_INVALID_HELO:
        if (s->helo == NULL)
            return RV_DUNNO;
        if (*s->helo == '[') {
            if (smtp_valid_address_literal(s->helo))
                return RV_DUNNO;
            return restrict_refuse(s, run, RCLASS_POLICY, set->invalid_hostname_code, "5.5.2", r,
                                   "<%s>: %s rejected: invalid ip address", s->helo, SUBJECT_HELO);
        }
        if (smtp_valid_hostname(helo_for_checks(s)) || is_address(s->helo))
            return RV_DUNNO;
        return restrict_refuse(s, run, RCLASS_POLICY, set->invalid_hostname_code, "5.5.2", r,
                               "<%s>: %s rejected: Invalid name", s->helo, SUBJECT_HELO);
    case STEP_REJECT_UNKNOWN_CLIENT:
        /* RFC 7372's 4.7.25 */
        if (s->name_status == SMTPD_PEER_OK)
            return RV_DUNNO;
        return restrict_refuse(s, run, RCLASS_POLICY,
                               s->name_status >= SMTPD_PEER_PERM ? set->unknown_client_code : 450, "4.7.25", r,
                               "Client host rejected: cannot find your hostname, [%s]", s->addr);
    case STEP_REJECT_UNKNOWN_REVERSE:
        if (s->reverse_name_status == SMTPD_PEER_OK)
            return RV_DUNNO;
        return restrict_refuse(s, run, RCLASS_POLICY,
                               s->reverse_name_status == SMTPD_PEER_PERM ? set->unknown_client_code : 450, "4.7.1",
                               r, "Client host rejected: cannot find your reverse hostname, [%s]", s->addr);
    case STEP_REJECT_MULTI_RCPT_BOUNCE: {
        /* At RCPT the recipient being checked is not counted yet. */
        size_t accepted = s->tx ? s->tx->nrcpts : 0;
        size_t more_than = strcmp(run->where, "RCPT") == 0 ? 0 : 1;
        if (sender == NULL || *sender != '\0' || accepted <= more_than)
            return RV_DUNNO;
        return restrict_refuse(s, run, RCLASS_POLICY, set->multi_rcpt_code, "5.5.3", r,
                               "<%s>: %s rejected: Multi-recipient bounce", f->reply_name, f->reply_class);
    }
    case STEP_CHECK_CLIENT:
    case STEP_CHECK_REVERSE_CLIENT:
    case STEP_CHECK_HELO:
    case STEP_CHECK_SENDER:
    case STEP_CHECK_RCPT:
    case STEP_CHECK_SASL:
    case STEP_CHECK_ETRN:
    case STEP_CHECK_CCERT:
        return run_table(s, run, step, r);
    case STEP_SENDER_LOGIN:
    case STEP_AUTH_SENDER_LOGIN:
    case STEP_UNAUTH_SENDER_LOGIN:
    case STEP_KNOWN_SENDER_LOGIN:
        return sender_login(s, run, step, r);
    default:
        msg_warn("internal error: restriction %s has no implementation", step->name);
        return restrict_server_error(s, run, r);
    }
}
