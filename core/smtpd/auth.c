/*
 * SMTP AUTH (RFC 4954) on the server side: PLAIN and LOGIN, spoken by smtpd
 * itself; the credentials are verified by the SASL back-end a module
 * provides (smtpd_sasl_type), possibly asynchronously. While a response
 * line is awaited the session is in SMTPD_AUTH and session.c hands each
 * input line to smtpd_auth_line, bounded by smtpd_sasl_response_limit.
 */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <event2/buffer.h>

#include "lib/base64.h"
#include "lib/log.h"
#include "smtpd/restrict.h"
#include "smtpd/smtpd_int.h"

/* ------------------------------------------------------------------ */
/* SMTP AUTH (RFC 4954): PLAIN and LOGIN, verified by a module's SASL back-end */

struct sasl_call {
    const struct smtpd_settings *set;
    const char *mech, *user, *password;
};

static petrel_verdict call_sasl(petrel_session *h, const void *arg)
{
    const struct sasl_call *c = arg;
    return c->set->sasl->check(h, c->set->sasl_path, c->mech, c->user, c->password);
}

static void auth_hooked(struct smtpd_session *s, const struct restrict_result *r)
{
    s->state = SMTPD_CMD;
    if (smtpd_refused(r)) {
        smtpd_reply(s, "%d %s %s", r->code, r->enhanced, r->text);
        s->sasl_username = s->sasl_method = NULL;
        smtpd_count_error(s, CNT_AUTH);
    } else {
        smtpd_reply(s, "235 2.7.0 Authentication successful");
    }
    smtpd_continue(s);
}

static void sasl_answered(struct smtpd_session *s, const struct restrict_result *r)
{
    const char *mech = s->auth_mech;
    s->state = SMTPD_CMD;
    s->auth_mech = NULL;
    if (r->verdict == RV_PERMIT) {
        /* The login outlives the command: its own pool, reset when a later
         * AUTH succeeds again (after a module refused this one). */
        if (s->login_pool)
            petrel_pool_reset(s->login_pool);
        else
            s->login_pool = petrel_pool_create(SMTPD_SMALL_POOL_SIZE);
        s->sasl_username = petrel_pool_strdup(s->login_pool, s->auth_user);
        s->sasl_method = mech;
        s->protocol = s->tls_active ? "ESMTPSA" : "ESMTPA";
        s->auth_user = NULL;
        smtpd_hooks_then(s, PHASE_AUTH, mech, auth_hooked);
        return;
    }
    s->auth_user = NULL;
    if (r->verdict == RV_DEFER) {
        msg_warn("%s: SASL %s authentication failed: temporary failure of the back-end", s->namaddr, mech);
        smtpd_reply(s, "454 4.7.0 Temporary authentication failure");
    } else {
        /* Postfix's line, which fail2ban and friends read. */
        msg_warn("%s: SASL %s authentication failed: authentication failure", s->namaddr, mech);
        smtpd_reply(s, "535 5.7.8 Error: authentication failed: authentication failure");
    }
    smtpd_count_error(s, CNT_AUTH);
    smtpd_continue(s);
}

static void sasl_verify(struct smtpd_session *s, const char *user, const char *password)
{
    struct sasl_call call = { s->set, s->auth_mech, user, password };
    s->auth_user = petrel_pool_strdup(s->scratch, user);
    s->state = SMTPD_WAIT;
    struct restrict_result r;
    if (smtpd_module_call(s, s->set->sasl_module, "sasl check", call_sasl, &call, sasl_answered, &r))
        sasl_answered(s, &r);
}

static void auth_plain(struct smtpd_session *s, const char *b64)
{
    char *raw = petrel_pool_alloc(s->scratch, strlen(b64) + 1);
    long n = base64_decode(b64, raw);
    if (n < 0) {
        s->state = SMTPD_CMD;
        s->auth_mech = NULL;
        smtpd_reply(s, "501 5.5.2 Cannot decode response");
        smtpd_count_error(s, CNT_AUTH);
        return;
    }
    /* authzid NUL authcid NUL password */
    const char *authz = raw, *end = raw + n;
    const char *user = memchr(authz, '\0', (size_t)n);
    const char *pass = user ? memchr(user + 1, '\0', (size_t)(end - user - 1)) : NULL;
    if (user == NULL || pass == NULL || memchr(pass + 1, '\0', (size_t)(end - pass - 1))) {
        s->state = SMTPD_CMD;
        s->auth_mech = NULL;
        smtpd_reply(s, "501 5.5.2 Invalid authentication data");
        smtpd_count_error(s, CNT_AUTH);
        return;
    }
    char *password = petrel_pool_strndup(s->scratch, pass + 1, (size_t)(end - pass - 1));
    sasl_verify(s, user + 1, password);
}

static void auth_response(struct smtpd_session *s, const char *line)
{
    if (strcmp(line, "*") == 0) {
        s->state = SMTPD_CMD;
        s->auth_mech = NULL;
        s->auth_user = NULL;
        smtpd_reply(s, "501 5.7.0 Authentication aborted");
        smtpd_count_error(s, CNT_AUTH);
        return;
    }
    if (strcmp(s->auth_mech, "PLAIN") == 0) {
        auth_plain(s, line);
        return;
    }
    char *raw = petrel_pool_alloc(s->scratch, strlen(line) + 1);
    long n = base64_decode(line, raw);
    if (n < 0 || memchr(raw, '\0', (size_t)n)) {
        s->state = SMTPD_CMD;
        s->auth_mech = NULL;
        s->auth_user = NULL;
        smtpd_reply(s, "501 5.5.2 Cannot decode response");
        smtpd_count_error(s, CNT_AUTH);
        return;
    }
    raw[n] = '\0';
    if (s->auth_user == NULL) {
        s->auth_user = raw;
        smtpd_reply(s, "334 UGFzc3dvcmQ6");   /* "Password:" */
        return;
    }
    sasl_verify(s, s->auth_user, raw);
}

void smtpd_cmd_auth(struct smtpd_session *s, const struct smtp_command *cmd)
{
    const struct smtpd_settings *set = s->set;
    if (set->sasl == NULL) {
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
    if (ml == 5 && strncasecmp(cmd->args, "PLAIN", 5) == 0) {
        s->auth_mech = "PLAIN";
        s->auth_user = NULL;
        if (initial && strcmp(initial, "=") != 0) {
            auth_plain(s, initial);
        } else {
            s->state = SMTPD_AUTH;
            smtpd_reply(s, "334 ");
        }
    } else if (ml == 5 && strncasecmp(cmd->args, "LOGIN", 5) == 0) {
        s->auth_mech = "LOGIN";
        s->auth_user = NULL;
        s->state = SMTPD_AUTH;
        if (initial) {
            auth_response(s, initial);
        } else {
            smtpd_reply(s, "334 VXNlcm5hbWU6");   /* "Username:" */
        }
    } else if (ml == 0) {
        smtpd_reply(s, "501 5.5.4 Syntax: AUTH mechanism");
        smtpd_count_error(s, CNT_AUTH);
    } else {
        smtpd_reply(s, "504 5.5.4 Unrecognized authentication type");
        smtpd_count_error(s, CNT_AUTH);
    }
}

/* An AUTH response line over smtpd_sasl_response_limit ends the exchange
 * as in Postfix. */
static void auth_line_too_long(struct smtpd_session *s)
{
    s->long_auth_line = 0;
    s->state = SMTPD_CMD;
    s->auth_mech = NULL;
    s->auth_user = NULL;
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
    char *aline = petrel_pool_alloc(s->scratch, alen + 1);
    evbuffer_remove(in, aline, alen + 1);
    if (alen && aline[alen - 1] == '\r')
        alen--;
    aline[alen] = '\0';
    if (alen > limit) {
        msg_warn("%s: SASL response longer than %zu bytes", s->namaddr, limit);
        auth_line_too_long(s);
        return 0;
    }
    auth_response(s, aline);
    return 0;
}
