/*
 * modules/milter: Postfix's smtpd_milters and non_smtpd_milters on the
 * plugin API (doc/modules/milter.md). The protocol is milter_conn.h's; this
 * module is the glue: configuration, one milter_conn per milter per SMTP
 * session, and the mapping of hooks, verdicts and edits. This file holds
 * the hooks and the module's descriptor; milter_config.c reads the
 * configuration described below, milter_session.c runs an event through
 * the chain, milter_edits.c applies the milters' modifications,
 * milter_maps.c does smtpd_milter_maps and milter_breaker.c the circuit
 * breaker that skips a milter that keeps failing.
 *
 * Configuration is Postfix's, read from the core's own parameters
 * (smtpd_milters, non_smtpd_milters, milter_default_action,
 * milter_protocol, the three timeouts, the milter_*_macros lists,
 * milter_macro_daemon_name, milter_macro_v) and the per-milter form
 * "{ inet:host:port, connect_timeout=10s, command_timeout=..., content_timeout=...,
 * default_action=accept, protocol=6 }". Each master.cf service may set
 * its own with -o (Postfix's per-service milters): the module reads every
 * service's values (petrel_service_config_*) and makes one profile (the
 * list and the macro values) per distinct set of values, main.cf's
 * included. It checks each profile in check() (petreld -n, start, reload,
 * naming the master.cf line of a bad -o) and builds them in init (host
 * names are resolved there, never on the loop); a session takes its
 * service's profile at connect. Sessions of the pickup service
 * (petrel-sendmail's mail) use non_smtpd_milters, every other service
 * smtpd_milters.
 *
 * Per session: connect, helo, mail, rcpt and data go to each milter in
 * turn, as they happen (those hooks may suspend); once the transaction is
 * to be discarded (an access DISCARD, a milter's), no later MAIL, RCPT,
 * DATA or content of it goes to any milter, as Postfix's smtpd skips them
 * (MILTER_SKIP_FLAGS; unknown commands still go, as in Postfix, except to
 * a milter that accepted or discarded the message). When the transaction
 * ends, each milter still in it gets SMFIC_ABORT at once (milter_tx_begin),
 * as from Postfix's mail_reset(). The header and body
 * hooks may not suspend, so the whole content goes to the milters at
 * end_of_message, one milter after the other: headers, end of headers,
 * body, end of message (none of it when header_checks or body_checks
 * took the milters off the message: petrel_milters_stopped). The body is
 * read from the queue file
 * (petrel_message_open with PETREL_MESSAGE_BODY, opened afresh for each
 * milter); the module keeps no copy of it. Each milter's modifications are
 * applied at once through the petrel_* edit functions (a REPLBODY streams
 * into petrel_body_replace_*, chunk by chunk, never held in memory) and to
 * the module's own copy of the headers, so the next milter sees them, as
 * in Postfix: a body reader opened after a committed REPLBODY reads the
 * new body.
 *
 * Verdicts: the first refusal ends the chain and its reply goes to the
 * client (the text of the first line: the plugin API has one-line
 * replies). At CONNECT, as Postfix: a 5xx refuses the connection, a 421
 * closes it, another 4xx is answered at the next command (the milter's
 * verdict stands for the session). A milter that fails gets its
 * default_action, logged by milter_conn with what happened.
 *
 * The core's own timeout for a suspended hook (milter_hook_timeout) is a
 * backstop only: its default is the maximum (1 h) so that the milters'
 * timeouts, which are Postfix's, decide.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <petrel/plugin.h>

#include "milter_conn.h"
#include "milter_module_int.h"


static const petrel_param milter_params[] = {
    { PETREL_PARAM_INIT, .name = "milter_buffer_limit", .type = PETREL_PARAM_SIZE, .default_value = "1048576",
      .help = "no effect: the milters get the body from the queue file (kept so that main.cf files that set "
              "it still load)",
      .min = 65536, .max = 1073741824 },
    /* Petrel's own (Postfix has no circuit breaker): doc/modules/milter.md. */
    { PETREL_PARAM_INIT, .name = "milter_circuit_breaker_failures", .type = PETREL_PARAM_INT, .default_value = "5",
      .help = "consecutive failures (cannot connect, timeout, a broken conversation) after which a milter is "
              "not asked for milter_circuit_breaker_backoff: its default_action applies at once; 0 turns the "
              "breaker off",
      .min = 0, .max = 1000000 },
    { PETREL_PARAM_INIT, .name = "milter_circuit_breaker_backoff", .type = PETREL_PARAM_TIME, .default_value = "30s",
      .help = "how long a milter whose breaker opened is not asked; then one session tries it again",
      .min = 1, .max = 86400 },
    { .name = NULL },
};

static session *session_of(petrel_session *s)
{
    void **slot = petrel_session_slot(s);
    return slot ? *slot : NULL;
}

/* "<address>" for MAIL and RCPT. */
static char *angle(const char *address)
{
    size_t len = strlen(address) + 3;
    char *out = malloc(len);
    if (out)
        snprintf(out, len, "<%s>", address);
    return out;
}

/* MAIL's or RCPT's arguments for the milters, as Postfix sends them: the
 * address in <>, then each ESMTP parameter the client gave (params: the
 * core's, one space between them). Returns 0, or -1 out of memory. */
static int envelope_argv(const char *address, const char *params, char **text, const char ***argv)
{
    free(*text);
    free(*argv);
    *text = NULL;
    *argv = NULL;
    char *a = angle(address ? address : "");
    if (a == NULL)
        return -1;
    size_t alen = strlen(a), plen = params ? strlen(params) : 0;
    size_t n = plen ? 3 : 2;
    for (size_t i = 0; i < plen; i++)
        n += params[i] == ' ';
    char *t = malloc(alen + 1 + plen + 1);
    const char **v = malloc(n * sizeof *v);
    if (t == NULL || v == NULL) {
        free(a);
        free(t);
        free(v);
        return -1;
    }
    memcpy(t, a, alen + 1);
    free(a);
    size_t i = 0;
    v[i++] = t;
    if (plen) {
        char *q = t + alen + 1;
        memcpy(q, params, plen + 1);
        v[i++] = q;
        for (; *q; q++)
            if (*q == ' ') {
                *q = '\0';
                v[i++] = q + 1;
            }
    }
    v[i] = NULL;
    *text = t;
    *argv = v;
    return 0;
}


/* ------------------------------------------------------------------ */
/* hooks                                                               */

static petrel_verdict milter_connect(petrel_session *s)
{
    petrel_module *m = petrel_session_module(s);
    module_conf *conf = petrel_module_data(m);
    if (conf == NULL)
        return PETREL_CONTINUE;
    const char *service = petrel_service_name(s);
    const profile *prof = milter_profile_of(conf, service);
    if (prof->nmilter_maps)
        return milter_maps_connect(s, prof);
    return milter_session_begin(s, prof, &prof->list, NULL);
}

/* A verdict for the hook (p NULL) or for the suspended call p. */
static petrel_verdict answer(petrel_pending *p, petrel_verdict v)
{
    if (p == NULL)
        return v;
    petrel_resume(p, v, 0, NULL, NULL);
    return PETREL_PENDING;
}

petrel_verdict milter_session_begin(petrel_session *s, const profile *prof, const milter_list *list,
                                    petrel_pending *p)
{
    petrel_module *m = petrel_session_module(s);
    module_conf *conf = petrel_module_data(m);
    if (list->n == 0)
        return answer(p, PETREL_CONTINUE);
    session *ss = calloc(1, sizeof *ss);
    if (ss == NULL)
        return answer(p, PETREL_TEMPFAIL);
    ss->m = m;
    ss->s = s;
    ss->conf = conf;
    ss->profile = prof;
    ss->n = list->n;
    ss->links = calloc(list->n, sizeof *ss->links);
    if (ss->links == NULL) {
        free(ss);
        return answer(p, PETREL_TEMPFAIL);
    }
    for (size_t i = 0; i < list->n; i++) {
        ss->links[i].ss = ss;
        ss->links[i].conn = milter_conn_create(list->items[i], &milter_session_ops, &ss->links[i]);
        ss->links[i].breaker = list->breakers ? list->breakers[i] : NULL;
    }
    for (size_t i = 0; i < list->n; i++)
        if (ss->links[i].conn == NULL) {
            milter_session_end(ss);
            return answer(p, PETREL_TEMPFAIL);
        }
    *petrel_session_slot(s) = ss;
    petrel_pool_cleanup_add(petrel_session_pool(s), milter_session_end, ss);
    if (p == NULL)
        return milter_start_event(ss, s, EV_CONNECT);
    milter_resume_event(ss, s, EV_CONNECT, p);
    return PETREL_PENDING;
}

static petrel_verdict milter_helo(petrel_session *s, const char *helo)
{
    session *ss = session_of(s);
    if (ss == NULL)
        return PETREL_CONTINUE;
    free(ss->helo);
    ss->helo = strdup(helo ? helo : "");
    /* It ended a transaction that was to be discarded: as Postfix's smtpd
     * (MILTER_SKIP_FLAGS still set when it reports HELO), no milter gets
     * it. */
    if (petrel_milters_stopped(s) == 1)
        return PETREL_CONTINUE;
    return milter_start_event(ss, s, EV_HELO);
}

static petrel_verdict milter_mail(petrel_session *s, const char *sender)
{
    session *ss = session_of(s);
    if (ss == NULL)
        return PETREL_CONTINUE;
    free(ss->sender);
    ss->sender = strdup(sender ? sender : "");
    if (ss->sender == NULL || envelope_argv(sender, petrel_sender_params(s), &ss->mail_arg, &ss->mail_argv) < 0)
        return PETREL_TEMPFAIL;
    ss->in_tx = 1;
    milter_tx_begin(ss, s);
    ss->tx_quarantined = 0;
    ss->tx_edits_stopped = 0;
    milter_edits_reset(ss);
    ss->discard = 0;
    if (ss->session_quarantine[0])
        milter_apply_quarantine(ss, ss->session_quarantine);
    if (petrel_milters_stopped(s) == 1)
        return PETREL_CONTINUE;
    return milter_start_event(ss, s, EV_MAIL);
}

static petrel_verdict milter_rcpt(petrel_session *s, const char *recipient)
{
    session *ss = session_of(s);
    if (ss == NULL)
        return PETREL_CONTINUE;
    free(ss->rcpt);
    free(ss->rcpt_refusal);
    ss->rcpt_refusal = NULL;
    ss->rcpt = strdup(recipient ? recipient : "");
    if (ss->rcpt == NULL
        || envelope_argv(recipient, petrel_recipient_params(s), &ss->rcpt_arg, &ss->rcpt_argv) < 0)
        return PETREL_TEMPFAIL;
    if (petrel_milters_stopped(s) == 1)
        return PETREL_CONTINUE;
    return milter_start_event(ss, s, EV_RCPT);
}

/* A recipient our own checks refused: milters that asked for rejected
 * recipients (SMFIP_RCPT_REJ) get it, with {rcpt_mailer} "error", as
 * Postfix sends it; their answer changes nothing (the refusal stands). */
static petrel_verdict milter_rcpt_rejected(petrel_session *s, const char *recipient, const char *reply)
{
    session *ss = session_of(s);
    if (ss == NULL)
        return PETREL_CONTINUE;
    free(ss->rcpt);
    free(ss->rcpt_refusal);
    ss->rcpt = strdup(recipient ? recipient : "");
    ss->rcpt_refusal = strdup(reply ? reply : "550 5.1.1 rejected");
    if (ss->rcpt == NULL || ss->rcpt_refusal == NULL
        || envelope_argv(recipient, petrel_recipient_params(s), &ss->rcpt_arg, &ss->rcpt_argv) < 0)
        return PETREL_CONTINUE;
    if (petrel_milters_stopped(s) == 1)
        return PETREL_CONTINUE;
    return milter_start_event(ss, s, EV_RCPT);
}

static petrel_verdict milter_unknown(petrel_session *s, const char *command_line)
{
    session *ss = session_of(s);
    if (ss == NULL)
        return PETREL_CONTINUE;
    free(ss->unknown_cmd);
    ss->unknown_cmd = strdup(command_line ? command_line : "");
    if (ss->unknown_cmd == NULL)
        return PETREL_TEMPFAIL;
    return milter_start_event(ss, s, EV_UNKNOWN);
}

static petrel_verdict milter_data(petrel_session *s)
{
    session *ss = session_of(s);
    if (ss == NULL || petrel_milters_stopped(s) == 1)
        return PETREL_CONTINUE;
    return milter_start_event(ss, s, EV_DATA);
}

static petrel_verdict milter_eom(petrel_session *s)
{
    session *ss = session_of(s);
    if (ss == NULL)
        return PETREL_CONTINUE;
    /* header_checks or body_checks answered REJECT, DISCARD, REDIRECT or
     * PASS: as Postfix's cleanup (CLEANUP_FLAG_FILTER_ALL cleared), no
     * milter gets the content; nor after a DISCARD before the content (a
     * restriction's or a milter's: Postfix's MILTER_SKIP_FLAGS). Their
     * transaction gets SMFIC_ABORT when it ends, right after the reply
     * (milter_tx_begin), as Postfix's smtpd aborts them then. */
    if (petrel_milters_stopped(s) == 1)
        return PETREL_CONTINUE;
    ss->msg = NULL;       /* a previous message's handles went stale with it */
    ss->newbody = NULL;
    if (milter_headers_load(ss) < 0) {
        petrel_set_reply(s, 451, "4.3.0", "Error: insufficient system resources");
        return PETREL_TEMPFAIL;
    }
    return milter_start_event(ss, s, EV_EOM);
}

const petrel_module_desc petrel_module_descriptor = {
    PETREL_MODULE_INIT,
    .name = "milter",
    .version = "1.0",
    .description = "Sendmail milters (smtpd_milters, non_smtpd_milters): spamass-milter, clamav-milter, "
                   "OpenDKIM, rspamd and any libmilter filter",
    .params = milter_params,
    .init = milter_init,
    .fini = milter_fini,
    .check = milter_check,
    .hooks = {
        .connect = milter_connect,
        .helo = milter_helo,
        .mail = milter_mail,
        .rcpt = milter_rcpt,
        .data = milter_data,
        .unknown = milter_unknown,
        .rcpt_rejected = milter_rcpt_rejected,
        .end_of_message = milter_eom,
    },
    .default_action = PETREL_ON_FAILURE_TEMPFAIL,
    /* A backstop: the milters' own timeouts (Postfix's) decide. */
    .hook_timeout_ms = 3600000,
};
