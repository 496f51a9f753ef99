/*
 * SMTP AUTH (RFC 4954) on the server side: the SMTP half of every SASL
 * mechanism. smtpd decodes each client response from base64 once, answers
 * "*" and over-long lines, sends the back-end's challenges as 334 replies,
 * and logs and answers outcomes as Postfix does; the back-end that
 * smtpd_sasl_type names runs the mechanism itself (sasl_glue.c), or, for a
 * 1.0 back-end that only checks passwords, smtpd runs PLAIN and LOGIN here.
 *
 * While a response line is awaited the session is in SMTPD_AUTH and
 * session.c hands each input line to smtpd_auth_line, bounded by
 * smtpd_sasl_response_limit; while the back-end thinks it is in SMTPD_WAIT.
 *
 * Failed attempts are throttled beyond what Postfix does alone: per client
 * address and per login, counted in the workers' shared table (anvil.c)
 * over smtpd_sasl_failure_window, each 535 is delayed longer
 * (smtpd_sasl_failure_delay, doubling), and at smtpd_sasl_failure_limit the
 * address or the login is locked out for smtpd_sasl_lockout_time: 454
 * 4.7.0 for every attempt, right or wrong, so a lockout is no password
 * oracle. Addresses in smtpd_client_event_limit_exceptions (mynetworks: a
 * webmail) are never locked out as a whole, only their logins are. Every
 * refusal is logged in the form fail2ban's postfix-sasl filter matches.
 */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <event2/buffer.h>
#include <event2/event.h>

#include "lib/base64.h"
#include "lib/hash.h"
#include "lib/log.h"
#include "lib/xalloc.h"
#include "mail/namadr.h"
#include "module/module.h"
#include "smtpd/anvil.h"
#include "smtpd/restrict.h"
#include "smtpd/smtpd_int.h"
#include "tables/cidr.h"

/* ------------------------------------------------------------------ */
/* base64 (lib/base64.c)                                               */

static long b64_decode(const char *in, unsigned char *out)
{
    return base64_decode(in, (char *)out);
}

static char *b64_encode(petrel_pool *pool, const unsigned char *in, size_t len)
{
    char *out = petrel_pool_alloc(pool, base64_encoded_size(len));
    base64_encode(in, len, out);
    return out;
}

/* ------------------------------------------------------------------ */
/* what is offered                                                     */

int smtpd_sasl_offered_now(const struct smtpd_session *s)
{
    const struct smtpd_settings *set = s->set;
    if (set->sasl == NULL && set->sasl_server == NULL)
        return 0;
    if (set->tls_auth_only && !s->tls_active)
        return 0;
    return 1;
}

void smtpd_sasl_mechanisms_known(struct smtpd_session *s, const char *list)
{
    s->sasl_offer = list;
    s->sasl_offer_known = 1;
    void (*next)(struct smtpd_session *) = s->sasl_offer_next;
    s->sasl_offer_next = NULL;
    s->state = SMTPD_CMD;
    if (next)
        next(s);
}

void smtpd_sasl_offer_then(struct smtpd_session *s, void (*next)(struct smtpd_session *s))
{
    s->sasl_offer = NULL;
    s->sasl_offer_known = 0;
    if (!smtpd_sasl_offered_now(s) || s->local_submission) {
        next(s);
        return;
    }
    s->sasl_offer_next = next;
    smtpd_sasl_ask_mechanisms(s);
}

/* ------------------------------------------------------------------ */
/* throttling failed attempts (shared by the workers)                 */

static const char *login_key(petrel_pool *pool, const char *login)
{
    /* Keys are bounded: a long login is known by its hash. */
    if (strlen(login) <= 100)
        return petrel_pool_printf(pool, "authfail-login:%s", login);
    return petrel_pool_printf(pool, "authfail-login:#%08x%zu", hash_string(login), strlen(login));
}

static int address_exempt(const struct smtpd_session *s)
{
    return namadr_list_match(s->set->conn_limit_exceptions, s->name, s->addr) > 0;
}

static int address_locked(struct smtpd_session *s, time_t now)
{
    if (s->set->sasl_failure_limit == 0 || address_exempt(s))
        return 0;
    const char *key = petrel_pool_printf(s->scratch, "authfail:%s", s->addr);
    return anvil_locked_until(s->worker->anvil, key, now) > now;
}

static int login_locked(struct smtpd_session *s, const char *login, time_t now)
{
    if (s->set->sasl_failure_limit == 0 || login == NULL)
        return 0;
    return anvil_locked_until(s->worker->anvil, login_key(s->scratch, login), now) > now;
}

/* Counts a failure; returns the delay (seconds) before the 535. */
static unsigned count_failure(struct smtpd_session *s, const char *login, const char *mech)
{
    const struct smtpd_settings *set = s->set;
    if (set->sasl_failure_limit == 0)
        return 0;
    time_t now = time(NULL);
    unsigned window = set->sasl_failure_window ? set->sasl_failure_window : 1;
    unsigned n_addr = 0, n_login = 0;
    if (!address_exempt(s)) {
        const char *key = petrel_pool_printf(s->scratch, "authfail:%s", s->addr);
        n_addr = anvil_count(s->worker->anvil, key, now, window);
        if (n_addr >= set->sasl_failure_limit) {
            anvil_lock(s->worker->anvil, key, now, now + (time_t)set->sasl_lockout_time);
            msg_warn("%s: SASL %s authentication failed: %u failures from this client within %us: "
                     "its AUTH is locked out for %us", s->namaddr, mech, n_addr, window, set->sasl_lockout_time);
        }
    }
    if (login) {
        const char *key = login_key(s->scratch, login);
        n_login = anvil_count(s->worker->anvil, key, now, window);
        if (n_login >= set->sasl_failure_limit) {
            anvil_lock(s->worker->anvil, key, now, now + (time_t)set->sasl_lockout_time);
            msg_warn("%s: SASL %s authentication failed: %u failures for login %s within %us: "
                     "the login is locked out for %us", s->namaddr, mech, n_login, login, window,
                     set->sasl_lockout_time);
        }
    }
    unsigned n = n_addr > n_login ? n_addr : n_login;
    if (n == 0 || set->sasl_failure_delay == 0)
        return 0;
    unsigned shift = n - 1 > 5 ? 5 : n - 1;
    unsigned delay = set->sasl_failure_delay << shift;
    return delay > 60 ? 60 : delay;
}

/* ------------------------------------------------------------------ */
/* outcomes                                                            */

static void auth_done(struct smtpd_session *s)
{
    s->state = SMTPD_CMD;
    s->auth_mech = NULL;
    s->auth_user = NULL;
    s->sasl_final = 0;
    s->sasl_final_user = NULL;
    smtpd_sasl_end(s);
}

static void auth_hooked(struct smtpd_session *s, const struct restrict_result *r)
{
    s->state = SMTPD_CMD;
    if (smtpd_refused(r)) {
        smtpd_reply_refusal(s, r->code, r->enhanced, r->text);
        s->sasl_username = s->sasl_method = NULL;
        smtpd_count_error(s, CNT_AUTH);
    } else {
        smtpd_reply(s, "235 2.7.0 Authentication successful");
    }
    smtpd_continue(s);
}

/* The refusal after the growing delay: the session reads nothing until then. */
static void delayed_reply(evutil_socket_t fd, short what, void *arg)
{
    struct smtpd_session *s = arg;
    s->state = SMTPD_CMD;
    if (s->auth_delayed_reply) {
        smtpd_reply(s, "%s", s->auth_delayed_reply);
        free(s->auth_delayed_reply);
        s->auth_delayed_reply = NULL;
    }
    smtpd_continue(s);
}

static void reply_after(struct smtpd_session *s, unsigned seconds, const char *text)
{
    if (seconds == 0) {
        smtpd_reply(s, "%s", text);
        smtpd_continue(s);
        return;
    }
    s->state = SMTPD_WAIT;
    free(s->auth_delayed_reply);
    s->auth_delayed_reply = xstrdup(text);
    if (s->auth_delay == NULL)
        s->auth_delay = evtimer_new(s->worker->base, delayed_reply, s);
    struct timeval tv = { (time_t)seconds, 0 };
    evtimer_add(s->auth_delay, &tv);
}

static void refuse(struct smtpd_session *s, const char *mech, int temporary, const char *reason, const char *login,
                   unsigned delay)
{
    /* Postfix's line; fail2ban's postfix-sasl filter reads it. */
    msg_warn("%s: SASL %s authentication failed: %s, sasl_username=%s", s->namaddr, mech, reason,
             login && *login ? login : "(unavailable)");
    const char *text = petrel_pool_printf(s->scratch, temporary ? "454 4.7.0 Temporary authentication failure: %s"
                                                               : "535 5.7.8 Error: authentication failed: %s",
                                          reason);
    smtpd_count_error(s, CNT_AUTH);
    reply_after(s, delay, text);
}

static void authenticated(struct smtpd_session *s, const char *mech, const char *login)
{
    /* The login outlives the command: its own pool, reset when a later AUTH
     * succeeds again (after a module refused this one). */
    if (s->login_pool)
        petrel_pool_reset(s->login_pool);
    else
        s->login_pool = petrel_pool_create(SMTPD_SMALL_POOL_SIZE);
    char *user = petrel_pool_strdup(s->login_pool, login);
    for (char *p = user; *p; p++)   /* printable, as Postfix keeps it */
        if ((unsigned char)*p < 0x20 || *p == 0x7f)
            *p = '?';
    s->sasl_username = user;
    s->sasl_method = petrel_pool_strdup(s->login_pool, mech);
    s->protocol = s->tls_active ? "ESMTPSA" : "ESMTPA";
    if (s->set->sasl_failure_limit)
        anvil_forget(s->worker->anvil, login_key(s->scratch, user));
    auth_done(s);
    smtpd_hooks_then(s, PHASE_AUTH, s->sasl_method, auth_hooked);
}

void smtpd_sasl_outcome(struct smtpd_session *s, const petrel_sasl_answer *a)
{
    const char *mech = s->auth_mech ? petrel_pool_strdup(s->scratch, s->auth_mech) : "?";
    time_t now = time(NULL);
    switch (a->status) {
    case PETREL_SASL_CHALLENGE:
        s->state = SMTPD_AUTH;
        smtpd_reply(s, "334 %s", b64_encode(s->scratch, a->data, a->len));
        smtpd_continue(s);
        return;
    case PETREL_SASL_SUCCESS: {
        const char *login = a->username;
        if (login == NULL || *login == '\0') {
            msg_warn("module %s: SASL success without a login: taken as a failure", s->set->sasl_module->name);
            auth_done(s);
            refuse(s, mech, 0, "authentication backend error", NULL, 0);
            return;
        }
        if (login_locked(s, login, now)) {
            auth_done(s);
            refuse(s, mech, 1, "too many failed attempts for this login, try again later", login, 0);
            return;
        }
        if (a->data && a->len) {
            /* RFC 4954 4: additional data with success goes in a 334; the
             * client answers with an empty line. */
            s->sasl_final = 1;
            s->sasl_final_user = petrel_pool_strdup(s->auth_pool, login);
            s->state = SMTPD_AUTH;
            smtpd_reply(s, "334 %s", b64_encode(s->scratch, a->data, a->len));
            smtpd_continue(s);
            return;
        }
        authenticated(s, mech, login);
        return;
    }
    case PETREL_SASL_TEMPFAIL:
        auth_done(s);
        refuse(s, mech, 1, a->reason && *a->reason ? a->reason : "authentication server unavailable", a->username,
               0);
        return;
    case PETREL_SASL_FAILURE:
    default: {
        auth_done(s);
        const char *login = a->username ? petrel_pool_strdup(s->scratch, a->username) : NULL;
        if (login_locked(s, login, now)) {
            refuse(s, mech, 1, "too many failed attempts for this login, try again later", login, 0);
            return;
        }
        unsigned delay = count_failure(s, login, mech);
        refuse(s, mech, 0, a->reason && *a->reason ? a->reason : "authentication failure", login, delay);
        return;
    }
    }
}

/* ------------------------------------------------------------------ */
/* 1.0 back-ends: smtpd runs PLAIN and LOGIN and asks check()          */

struct sasl_call {
    const struct smtpd_settings *set;
    const char *mech, *user, *password;
};

static petrel_verdict call_sasl(petrel_session *h, const void *arg)
{
    const struct sasl_call *c = arg;
    return c->set->sasl->check(h, c->set->sasl_path, c->mech, c->user, c->password);
}

static void check_answered(struct smtpd_session *s, const struct restrict_result *r)
{
    petrel_sasl_answer a = { PETREL_SASL_ANSWER_INIT, PETREL_SASL_FAILURE, NULL, 0, s->auth_user, NULL };
    if (r->verdict == RV_PERMIT)
        a.status = PETREL_SASL_SUCCESS;
    else if (r->verdict == RV_DEFER)
        a.status = PETREL_SASL_TEMPFAIL;
    smtpd_sasl_outcome(s, &a);
}

static void check_password(struct smtpd_session *s, const char *user, const char *password)
{
    struct sasl_call call = { s->set, s->auth_mech, user, password };
    s->auth_user = petrel_pool_strdup(s->scratch, user);
    s->state = SMTPD_WAIT;
    struct restrict_result r;
    int answered = smtpd_module_call(s, s->set->sasl_module, "sasl check", 0, call_sasl, &call, check_answered, &r);
    /* The password is not needed any more: do not leave it in the pool. */
    explicit_bzero((char *)password, strlen(password));
    if (answered)
        check_answered(s, &r);
}

static void builtin_step(struct smtpd_session *s, const unsigned char *data, long n, int have)
{
    if (strcmp(s->auth_mech, "PLAIN") == 0) {
        if (!have) {
            s->state = SMTPD_AUTH;
            smtpd_reply(s, "334 ");
            return;
        }
        /* authzid NUL authcid NUL password */
        petrel_sasl_plain msg;
        petrel_sasl_plain_verdict v = petrel_sasl_plain_split(data, (size_t)n, &msg);
        if (v == PETREL_SASL_PLAIN_MALFORMED) {
            auth_done(s);
            smtpd_reply(s, "501 5.5.2 Invalid authentication data");
            smtpd_count_error(s, CNT_AUTH);
            return;
        }
        char *user = petrel_pool_strndup(s->scratch, msg.authcid, msg.authcid_len);
        if (v == PETREL_SASL_PLAIN_OTHER_AUTHZID) {
            /* a 1.0 back-end checks a password, it cannot say who may act
             * for whom: refused, not ignored (the login would act as itself) */
            auth_done(s);
            refuse(s, "PLAIN", 0, "authorization identity differs from the login", user, 0);
            return;
        }
        char *password = petrel_pool_strndup(s->scratch, msg.password, msg.password_len);
        check_password(s, user, password);
        return;
    }
    /* LOGIN */
    if (have && memchr(data, '\0', (size_t)n)) {
        auth_done(s);
        smtpd_reply(s, "501 5.5.2 Invalid authentication data");
        smtpd_count_error(s, CNT_AUTH);
        return;
    }
    if (!have) {
        s->state = SMTPD_AUTH;
        smtpd_reply(s, "334 VXNlcm5hbWU6");   /* "Username:" */
        return;
    }
    char *text = petrel_pool_strndup(s->scratch, (const char *)data, (size_t)n);
    if (s->auth_user == NULL) {
        s->auth_user = petrel_pool_strdup(s->auth_pool, text);
        s->state = SMTPD_AUTH;
        smtpd_reply(s, "334 UGFzc3dvcmQ6");   /* "Password:" */
        return;
    }
    check_password(s, s->auth_user, text);
}

/* ------------------------------------------------------------------ */
/* the AUTH command                                                    */

static void auth_begin(struct smtpd_session *s);

static void auth_mechanisms_ready(struct smtpd_session *s)
{
    auth_begin(s);
    smtpd_continue(s);
}

void smtpd_cmd_auth(struct smtpd_session *s, const struct smtp_command *cmd)
{
    const struct smtpd_settings *set = s->set;
    /* smtpd_sasl_exceptions_networks only keeps AUTH out of EHLO (for
     * clients that log in whenever it is offered): a client there that
     * sends AUTH anyway is served, as by Postfix. smtpd_discard_ehlo_keywords
     * (or its address maps) taking AUTH away disables the command, as in
     * Postfix. */
    if ((set->sasl == NULL && set->sasl_server == NULL) || s->local_submission || (s->ehlo_discard & SMTPD_EHLO_AUTH)) {
        smtpd_reply(s, "503 5.5.1 Error: authentication not enabled");
        smtpd_count_error(s, CNT_AUTH);
        return;
    }
    if (set->tls_auth_only && !s->tls_active) {
        smtpd_reply(s, "538 5.7.11 Encryption required for requested authentication mechanism");
        smtpd_count_error(s, CNT_AUTH);
        return;
    }
    if (s->sasl_username) {
        smtpd_reply(s, "503 5.5.1 Error: already authenticated");
        smtpd_count_error(s, CNT_AUTH);
        return;
    }
    if (s->tx) {
        smtpd_reply(s, "503 5.5.1 Error: MAIL transaction in progress");
        smtpd_count_error(s, CNT_AUTH);
        return;
    }
    size_t ml = strcspn(cmd->args, " ");
    const char *initial = cmd->args[ml] ? cmd->args + ml + 1 : NULL;
    if (ml == 0 || ml > 20 || (initial && (strchr(initial, ' ') || *initial == '\0'))) {
        smtpd_reply(s, "501 5.5.4 Syntax: AUTH mechanism");
        smtpd_count_error(s, CNT_AUTH);
        return;
    }
    time_t now = time(NULL);
    if (set->auth_rate_limit && !address_exempt(s)) {
        /* Postfix's smtpd_client_auth_rate_limit, counted per service and
         * client as its anvil counts it. */
        const char *key = petrel_pool_printf(s->scratch, "auth:%s:%s", set->service_name, s->addr);
        unsigned rate = anvil_count(s->worker->anvil, key, now, set->rate_time_unit ? set->rate_time_unit : 60);
        if (rate > set->auth_rate_limit) {
            msg_warn("AUTH command rate limit exceeded: %u from %s for service %s", rate, s->namaddr,
                     set->service_name);
            smtpd_reply(s, "450 4.7.1 Error: too many AUTH commands from %s", s->addr);
            smtpd_count_error(s, CNT_AUTH);
            return;
        }
    }
    /* The exchange's strings live in its own small pool, reset by the next
     * AUTH: a session that sends AUTH forever never grows. */
    if (s->auth_pool)
        petrel_pool_reset(s->auth_pool);
    else
        s->auth_pool = petrel_pool_create(SMTPD_SMALL_POOL_SIZE);
    char *mech = petrel_pool_strndup(s->auth_pool, cmd->args, ml);
    for (char *p = mech; *p; p++)
        if (*p >= 'a' && *p <= 'z')
            *p = (char)(*p - 'a' + 'A');
    s->auth_mech = mech;
    s->auth_user = NULL;
    s->auth_initial = initial ? petrel_pool_strdup(s->scratch, initial) : NULL;
    if (address_locked(s, now)) {
        s->auth_mech = NULL;
        refuse(s, mech, 1, "too many failed authentication attempts from this client, try again later", NULL, 0);
        return;
    }
    if (!s->sasl_offer_known) {
        /* AUTH before EHLO, or the list was not known then: ask now. */
        s->sasl_offer_next = auth_mechanisms_ready;
        smtpd_sasl_ask_mechanisms(s);
        return;
    }
    auth_begin(s);
}

static void auth_begin(struct smtpd_session *s)
{
    const char *mech = s->auth_mech;
    const char *initial = s->auth_initial;
    s->auth_initial = NULL;
    if (s->sasl_offer == NULL && s->set->sasl_server) {
        /* The back-end could not say what it runs: it is down. */
        s->auth_mech = NULL;
        refuse(s, mech, 1, "authentication server unavailable", NULL, 0);
        return;
    }
    if (!smtpd_sasl_offers(s->sasl_offer, mech)) {
        s->auth_mech = NULL;
        smtpd_reply(s, "504 5.5.4 Unrecognized authentication type");
        smtpd_count_error(s, CNT_AUTH);
        return;
    }
    unsigned char *raw = NULL;
    long n = 0;
    if (initial) {
        raw = petrel_pool_alloc(s->scratch, strlen(initial) + 1);
        if (strcmp(initial, "=") != 0 && (n = b64_decode(initial, raw)) < 0) {
            s->auth_mech = NULL;
            smtpd_reply(s, "501 5.5.2 Cannot decode response");
            smtpd_count_error(s, CNT_AUTH);
            return;
        }
    }
    if (s->set->sasl_server == NULL)
        builtin_step(s, raw, n, initial != NULL);
    else
        smtpd_sasl_start(s, mech, raw, (size_t)n);
    if (raw)
        explicit_bzero(raw, (size_t)n);   /* no password stays in memory longer than its use */
}

static void auth_response(struct smtpd_session *s, const char *line)
{
    if (strcmp(line, "*") == 0) {
        msg_warn("%s: SASL %s authentication aborted", s->namaddr, s->auth_mech);
        auth_done(s);
        smtpd_reply(s, "501 5.7.0 Authentication aborted");
        smtpd_count_error(s, CNT_AUTH);
        return;
    }
    unsigned char *raw = petrel_pool_alloc(s->scratch, strlen(line) + 1);
    long n = b64_decode(line, raw);
    if (n < 0) {
        auth_done(s);
        smtpd_reply(s, "501 5.5.2 Cannot decode response");
        smtpd_count_error(s, CNT_AUTH);
        return;
    }
    if (s->sasl_final) {
        /* The response to success data must be empty (RFC 4954 4). */
        const char *login = s->sasl_final_user, *mech = petrel_pool_strdup(s->scratch, s->auth_mech);
        s->sasl_final = 0;
        if (n != 0) {
            auth_done(s);
            refuse(s, mech, 0, "unexpected data after the server's final message", login, 0);
            return;
        }
        authenticated(s, mech, login);
        return;
    }
    if (s->set->sasl_server == NULL)
        builtin_step(s, raw, n, 1);
    else
        smtpd_sasl_step(s, raw, (size_t)n);
    explicit_bzero(raw, (size_t)n);
}

/* An AUTH response line over smtpd_sasl_response_limit ends the exchange
 * as in Postfix. */
static void auth_line_too_long(struct smtpd_session *s)
{
    s->long_auth_line = 0;
    auth_done(s);
    smtpd_reply(s, "500 5.5.6 SASL response limit exceeded");
    smtpd_count_error(s, CNT_AUTH);
}

/* One AUTH response line (RFC 4954 4). A line longer than
 * smtpd_sasl_response_limit is discarded up to its end, however it arrives,
 * before it is answered; the exchange then ends, so the rest of the line is
 * never taken for a command. Returns 1 when more input is needed. */
int smtpd_auth_line(struct smtpd_session *s, struct evbuffer *in)
{
    size_t limit = s->set->sasl_response_limit;
    struct evbuffer_ptr eol = evbuffer_search_eol(in, NULL, NULL, EVBUFFER_EOL_LF);
    if (eol.pos < 0) {
        size_t avail = evbuffer_get_length(in);
        if (avail > limit + 1 || s->long_auth_line) {
            if (!s->long_auth_line)
                msg_warn("%s: SASL response longer than %zu bytes", s->namaddr, limit);
            evbuffer_drain(in, avail);
            s->long_auth_line = 1;
        }
        return 1;
    }
    size_t alen = (size_t)eol.pos;
    if (s->long_auth_line || alen > limit + 1) {
        if (!s->long_auth_line)
            msg_warn("%s: SASL response longer than %zu bytes", s->namaddr, limit);
        evbuffer_drain(in, alen + 1);
        auth_line_too_long(s);
        return 0;
    }
    petrel_pool_reset(s->scratch);
    char *aline = petrel_pool_alloc(s->scratch, alen + 1);
    evbuffer_remove(in, aline, alen + 1);
    if (alen && aline[alen - 1] == '\r')
        alen--;
    aline[alen] = '\0';
    if (alen > limit) {
        msg_warn("%s: SASL response longer than %zu bytes", s->namaddr, limit);
        explicit_bzero(aline, alen);
        auth_line_too_long(s);
        return 0;
    }
    auth_response(s, aline);
    explicit_bzero(aline, alen);
    return 0;
}

void smtpd_sasl_session_gone(struct smtpd_session *s)
{
    if (s->auth_delay) {
        event_free(s->auth_delay);
        s->auth_delay = NULL;
    }
    free(s->auth_delayed_reply);
    s->auth_delayed_reply = NULL;
    s->sasl_offer_next = NULL;
    smtpd_sasl_end(s);
    if (s->auth_pool) {
        petrel_pool_destroy(s->auth_pool);
        s->auth_pool = NULL;
    }
}
