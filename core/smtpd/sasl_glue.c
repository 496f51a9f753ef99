/*
 * The core's side of SASL back-ends (Postfix's smtpd_sasl_glue.c and
 * xsasl_server.c): which back-end smtpd_sasl_type names, which mechanisms
 * a session may use, and the request handles through which a back-end
 * answers, now or later.
 *
 * Two kinds of back-end: an ABI 1.1 petrel_sasl_server runs whole
 * mechanisms (challenges included) and answers each question through a
 * petrel_sasl_request; an ABI 1.0 petrel_sasl_backend only checks a user
 * and a password, and smtpd runs PLAIN and LOGIN for it (auth.c).
 *
 * The questions go through the module runtime (module/sasl.c), which
 * owns the request handles, their timeout (NAME_hook_timeout: 454 4.7.0),
 * the module's circuit breaker and its call metrics; an answer given
 * while the back-end's callback is still running reaches auth.c only when
 * the callback has returned, so a back-end is never re-entered from its
 * own call.
 *
 * Mechanisms are filtered here, in one place, by the security options
 * (smtpd_sasl_security_options, or smtpd_sasl_tls_security_options under
 * TLS: Postfix's noplaintext, noactive, nodictionary, noanonymous,
 * forward_secrecy, mutual_auth) against the properties the back-end
 * declares, and by smtpd_sasl_mechanism_filter.
 */
#include "config.h"

#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>

#include <event2/event.h>

#include "config/cfg.h"
#include "lib/log.h"
#include "lib/xalloc.h"
#include "mail/sasl_options.h"
#include "module/module.h"
#include "module/runtime.h"
#include "smtpd/smtpd_int.h"
#include "tables/cidr.h"

/* ------------------------------------------------------------------ */
/* smtpd_sasl_mechanism_filter (compiled by sasl_settings.c)            */

/* Does smtpd_sasl_mechanism_filter let mech through? The first item that
 * matches decides; a list that names none lets nothing through unless it
 * ends in static:all (an empty list lets everything through). */
static int mech_filter_allows(const struct smtpd_settings *set, const char *mech)
{
    const char *const *f = set->sasl_mech_filter;
    if (f == NULL || f[0] == NULL)
        return 1;
    for (; *f; f++) {
        int neg = (*f)[0] == '!';
        const char *word = neg ? *f + 1 : *f;
        if (strcasecmp(word, "static:all") == 0 || strcasecmp(word, "static:rest") == 0 ||
            strcasecmp(word, mech) == 0)
            return !neg;
    }
    return 0;
}

/* ------------------------------------------------------------------ */
/* mechanisms                                                          */

static unsigned excluded_properties(unsigned options)
{
    unsigned x = 0;
    if (options & SASL_OPT_NOPLAINTEXT)
        x |= PETREL_SASL_PLAINTEXT;
    if (options & SASL_OPT_NOACTIVE)
        x |= PETREL_SASL_ACTIVE;
    if (options & SASL_OPT_NODICTIONARY)
        x |= PETREL_SASL_DICTIONARY;
    if (options & SASL_OPT_NOANONYMOUS)
        x |= PETREL_SASL_ANONYMOUS;
    return x;
}

static unsigned required_properties(unsigned options)
{
    return (options & SASL_OPT_FORWARD_SECRECY ? PETREL_SASL_FORWARD_SECRECY : 0) |
           (options & SASL_OPT_MUTUAL_AUTH ? PETREL_SASL_MUTUAL_AUTH : 0);
}

unsigned smtpd_sasl_options_now(const struct smtpd_session *s)
{
    return s->tls_active ? s->set->sasl_tls_security : s->set->sasl_security;
}

static int mech_name_ok(const char *name)
{
    /* RFC 4422 3.1: 1-20 of A-Z 0-9 - _ */
    size_t n = strlen(name);
    if (n == 0 || n > 20)
        return 0;
    for (const char *p = name; *p; p++)
        if (!((*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') || *p == '-' || *p == '_'))
            return 0;
    return 1;
}

/* The space-separated list this session may use, from what the back-end
 * offers (pool: the caller's). */
static const char *filter_offer(struct smtpd_session *s, const petrel_sasl_mechanism *m, size_t n, petrel_pool *pool)
{
    unsigned options = smtpd_sasl_options_now(s);
    unsigned excluded = excluded_properties(options), required = required_properties(options);
    struct buf out;
    struct buf out0 = BUF_INIT;
    out = out0;
    for (size_t i = 0; i < n; i++) {
        if (m[i].name == NULL || !mech_name_ok(m[i].name)) {
            msg_warn("module %s: SASL back-end offers an invalid mechanism name: ignored",
                     s->set->sasl_module->name);
            continue;
        }
        if ((m[i].properties & excluded) || (m[i].properties & required) != required)
            continue;
        if (!mech_filter_allows(s->set, m[i].name))
            continue;
        if (out.len)
            buf_putc(&out, ' ');
        buf_puts(&out, m[i].name);
    }
    const char *list = petrel_pool_strndup(pool, out.data ? out.data : "", out.len);
    buf_free(&out);
    return list;
}

int smtpd_sasl_offers(const char *list, const char *mech)
{
    size_t ml = strlen(mech);
    for (const char *p = list; p && *p;) {
        size_t n = strcspn(p, " ");
        if (n == ml && strncasecmp(p, mech, n) == 0)
            return 1;
        p += n;
        p += strspn(p, " ");
    }
    return 0;
}

/* ------------------------------------------------------------------ */
/* answers                                                             */

static void mechanisms_answered(void *host, const struct module_sasl_reply *r)
{
    struct smtpd_session *s = host;
    const char *list = NULL;
    if (r->offered)
        list = filter_offer(s, r->mechanisms, r->nmechanisms, s->helo_pool ? s->helo_pool : s->pool);
    else if (!r->timed_out)
        msg_warn("%s: SASL back-end %s cannot list its mechanisms: %s", s->namaddr, s->set->sasl_server->name,
                 r->reason ? r->reason : "temporary failure");
    smtpd_sasl_mechanisms_known(s, list);
}

static void step_answered(void *host, const struct module_sasl_reply *r)
{
    struct smtpd_session *s = host;
    petrel_sasl_answer a = { PETREL_SASL_ANSWER_INIT, r->status, r->data, r->len, r->username, r->reason };
    smtpd_sasl_outcome(s, &a);
}

/* ------------------------------------------------------------------ */
/* the session's context for its back-end                              */

static void fill_context(struct smtpd_session *s)
{
    petrel_sasl_context *c = &s->sasl_ctx;
    if (c->size == 0) {
        c->size = sizeof(*c);
        c->module = s->set->sasl_module;
        c->path = s->set->sasl_path;
        c->service = s->set->sasl_service && *s->set->sasl_service ? s->set->sasl_service : "smtp";
        c->local_domain = s->set->sasl_local_domain ? s->set->sasl_local_domain : "";
        c->client_addr = s->addr;
        c->client_port = s->port;
        struct sockaddr_storage ss;
        socklen_t len = sizeof(ss);
        char host[64] = "", serv[16] = "";
        if (s->fd >= 0 && getsockname(s->fd, (struct sockaddr *)&ss, &len) == 0)
            getnameinfo((struct sockaddr *)&ss, len, host, sizeof(host), serv, sizeof(serv),
                        NI_NUMERICHOST | NI_NUMERICSERV);
        c->server_addr = petrel_pool_strdup(s->pool, host);
        c->server_port = petrel_pool_strdup(s->pool, serv);
        c->session_id = s->sasl_session_id;
        c->queue_directory = cfg_get(s->set->cfg, "queue_directory");
    }
    s->sasl_exchanges++;
    snprintf(s->sasl_session_id, sizeof(s->sasl_session_id), "%lx.%x.%u", (unsigned long)s->worker->index,
             (unsigned)(uintptr_t)s & 0xffffff, s->sasl_exchanges);
    c->tls = s->tls_active;
    c->client_cert_verified = s->tls_active && (s->set->tls_ask_ccert || s->set->tls_req_ccert) &&
                              s->ccert.present && s->ccert.verified;
    c->security = excluded_properties(smtpd_sasl_options_now(s));
}

/* ------------------------------------------------------------------ */
/* what auth.c asks                                                    */

/* Asks the back-end through the module runtime (module/sasl.c), which owns
 * the request handle, its timeout and the module's circuit breaker. */
static void ask(struct smtpd_session *s, struct module_sasl_question *q, module_sasl_done_fn *done)
{
    struct module_session *ms = smtpd_module_session(s);
    s->state = SMTPD_WAIT;
    if (ms == NULL) {
        struct module_sasl_reply r = { .status = PETREL_SASL_TEMPFAIL, .reason = "too many sessions" };
        done(s, &r);
        return;
    }
    q->server = s->set->sasl_server;
    q->context = &s->sasl_ctx;
    module_sasl_ask(ms, s->set->sasl_module, q, done);
}

void smtpd_sasl_ask_mechanisms(struct smtpd_session *s)
{
    const struct smtpd_settings *set = s->set;
    if (set->sasl_server == NULL) {
        /* A 1.0 back-end checks passwords: smtpd runs PLAIN and LOGIN. */
        static const petrel_sasl_mechanism builtin[] = { { "PLAIN", PETREL_SASL_PLAINTEXT },
                                                         { "LOGIN", PETREL_SASL_PLAINTEXT } };
        smtpd_sasl_mechanisms_known(s, filter_offer(s, builtin, 2, s->helo_pool ? s->helo_pool : s->pool));
        return;
    }
    fill_context(s);
    struct module_sasl_question q = { .kind = MODULE_SASL_MECHANISMS };
    ask(s, &q, mechanisms_answered);
}

void smtpd_sasl_start(struct smtpd_session *s, const char *mech, const unsigned char *initial, size_t len)
{
    fill_context(s);
    s->sasl_started = 1;
    s->sasl_state = NULL;
    struct module_sasl_question q = { .kind = MODULE_SASL_START, .mechanism = mech, .data = initial, .len = len,
                                      .state = &s->sasl_state };
    ask(s, &q, step_answered);
}

void smtpd_sasl_step(struct smtpd_session *s, const unsigned char *response, size_t len)
{
    struct module_sasl_question q = { .kind = MODULE_SASL_STEP, .data = response, .len = len,
                                      .state = &s->sasl_state };
    ask(s, &q, step_answered);
}

void smtpd_sasl_end(struct smtpd_session *s)
{
    if (!s->sasl_started)
        return;
    s->sasl_started = 0;
    if (s->ms && s->set->sasl_server)
        module_sasl_end(s->ms, s->set->sasl_module, s->set->sasl_server, &s->sasl_ctx, s->sasl_state);
    s->sasl_state = NULL;
}
