/*
 * The smtpd side of the plugin API: the small glue that turns an smtpd
 * session into what modules see. The module runtime (core/module) owns
 * handles, calls, suspension, slots and services; this file gives it the
 * session (a module session opened on first use, told when transactions
 * begin and end, closed with the connection), runs the hooks of each SMTP
 * phase through it and translates its answers into the restriction
 * engine's results. It also implements the API functions that read smtpd
 * facts (client address, HELO, envelope, headers) and record message
 * edits; each finds its session from the handle through
 * module_session_host(), so a stale handle gets NULL, 0 or -1.
 */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <petrel/plugin.h>
#include "lib/log.h"
#include "mail/resolve.h"
#include "mail/rewrite.h"
#include "module/module.h"
#include "module/runtime.h"
#include "smtpd/restrict.h"
#include "smtpd/smtpd_int.h"

static struct smtpd_session *host_of(petrel_session *h, const char *fn)
{
    return module_session_host(h, NULL, fn);
}

/* ------------------------------------------------------------------ */
/* the module session of an smtpd session                              */

static const char *log_id(void *host)
{
    struct smtpd_session *s = host;
    return s->tx && s->tx->queue_id[0] ? s->tx->queue_id : "NOQUEUE";
}

static const char *peer(void *host)
{
    struct smtpd_session *s = host;
    return s->namaddr;
}

static petrel_pool *call_pool(void *host)
{
    return smtpd_cmd_pool(host);
}

static const struct module_host smtpd_module_host = { .log_id = log_id, .peer = peer, .call_pool = call_pool };

/* Opened on first use, so sessions of a worker without modules cost nothing. */
static struct module_session *ms_of(struct smtpd_session *s)
{
    if (s->ms == NULL) {
        s->ms = module_session_open(s, &smtpd_module_host, s->pool);
        if (s->ms && s->set->milters_off && s->set->milter_module)
            module_session_turn_off(s->ms, s->set->milter_module);
        if (s->ms && s->tx)
            module_session_tx(s->ms, s->tx->pool);
    }
    return s->ms;
}

struct module_session *smtpd_module_session(struct smtpd_session *s)
{
    return ms_of(s);
}

void smtpd_plugin_tx(struct smtpd_session *s)
{
    if (s->ms)
        module_session_tx(s->ms, s->tx ? s->tx->pool : NULL);
}

void smtpd_plugin_session_gone(struct smtpd_session *s)
{
    module_session_close(s->ms);
    s->ms = NULL;
}

static void to_restrict(const struct module_result *r, struct restrict_result *out)
{
    static const enum restrict_verdict map[] = {
        [PETREL_CONTINUE] = RV_DUNNO, [PETREL_ACCEPT] = RV_PERMIT, [PETREL_REJECT] = RV_REJECT,
        [PETREL_TEMPFAIL] = RV_DEFER, [PETREL_DISCARD] = RV_DISCARD, [PETREL_HOLD] = RV_HOLD,
        [PETREL_PENDING] = RV_DUNNO, [PETREL_DEFER_IF_REJECT] = RV_DEFER_IF_REJECT,
        [PETREL_DEFER_IF_PERMIT] = RV_DEFER_IF_PERMIT,
    };
    out->verdict = (unsigned)r->verdict < sizeof(map) / sizeof(map[0]) ? map[r->verdict] : RV_DEFER;
    out->code = r->code;
    out->enhanced = r->enhanced;
    out->text = r->text;
    out->restriction = r->by;
    out->failure = r->failure;
}

/* No room for a module session (the process's session table is full):
 * modules cannot be asked, so the session is refused for now. */
static void no_session(struct restrict_result *r)
{
    r->verdict = RV_DEFER;
    r->code = 451;
    r->enhanced = "4.3.0";
    r->text = "Error: too many sessions for the modules, try again later";
    r->restriction = "module_session_limit";
    r->failure = 1;
}

/* ------------------------------------------------------------------ */
/* phases                                                              */

static const enum module_hook phase_hooks[] = {
    [PHASE_CONNECT] = MODULE_HOOK_CONNECT, [PHASE_HELO] = MODULE_HOOK_HELO,
    [PHASE_STARTTLS] = MODULE_HOOK_STARTTLS, [PHASE_AUTH] = MODULE_HOOK_AUTH,
    [PHASE_MAIL] = MODULE_HOOK_MAIL, [PHASE_RCPT] = MODULE_HOOK_RCPT, [PHASE_DATA] = MODULE_HOOK_DATA,
    [PHASE_EOH] = MODULE_HOOK_END_OF_HEADERS, [PHASE_EOM] = MODULE_HOOK_END_OF_MESSAGE,
    [PHASE_UNKNOWN] = MODULE_HOOK_UNKNOWN, [PHASE_RCPT_REJECTED] = MODULE_HOOK_RCPT_REJECTED,
};

int smtpd_phase_has_hooks(struct smtpd_session *s, enum smtpd_phase phase)
{
    return module_hook_active(phase_hooks[phase]);
}

static void phase_done(void *host, const struct module_result *r)
{
    struct smtpd_session *s = host;
    struct restrict_result result;
    to_restrict(r, &result);
    smtpd_phase_done_fn *done = s->module_done;
    s->module_done = NULL;
    done(s, &result);
}

void smtpd_run_phase(struct smtpd_session *s, enum smtpd_phase phase, const char *arg, smtpd_phase_done_fn *done)
{
    s->state = SMTPD_WAIT;
    struct module_session *ms = ms_of(s);
    if (ms == NULL) {
        struct restrict_result r;
        no_session(&r);
        done(s, &r);
        return;
    }
    struct module_hook_args args = { .a = arg };
    if (phase == PHASE_AUTH)
        args.b = s->sasl_username;
    if (phase == PHASE_RCPT_REJECTED)
        args.b = s->rcpt_refusal;
    s->module_done = done;
    module_run_phase(ms, phase_hooks[phase], &args, phase_done);
}

/* Content hooks (header, end of headers, body) may not suspend: they are
 * called as content streams in. A refusal (or HOLD/DISCARD) is remembered
 * and answered at the end of data; after a refusal no more are called. */
void smtpd_plugin_content(struct smtpd_session *s, enum smtpd_content_hook which, const char *name,
                          const char *data, size_t len)
{
    static const enum module_hook hooks[] = { [CONTENT_HEADER] = MODULE_HOOK_HEADER,
                                              [CONTENT_EOH] = MODULE_HOOK_END_OF_HEADERS,
                                              [CONTENT_BODY] = MODULE_HOOK_BODY };
    enum module_hook hook = hooks[which];
    struct restrict_result *verdict = &s->tx->content_verdict;
    if (!module_hook_active(hook) || verdict->verdict == RV_REJECT || verdict->verdict == RV_DEFER)
        return;
    struct module_session *ms = ms_of(s);
    if (ms == NULL) {
        no_session(verdict);
        return;
    }
    struct module_hook_args args = { .a = name, .b = which == CONTENT_HEADER ? data : NULL,
                                     .data = which == CONTENT_BODY ? data : NULL, .len = len };
    struct module_result r;
    module_run_content(ms, hook, &args, &r);
    if (r.verdict != PETREL_CONTINUE && r.verdict != PETREL_ACCEPT)
        to_restrict(&r, verdict);
}

void smtpd_plugin_header(struct smtpd_session *s, const char *name, const char *value)
{
    smtpd_plugin_content(s, CONTENT_HEADER, name, value, 0);
}

void smtpd_plugin_body(struct smtpd_session *s, const char *chunk, size_t len)
{
    smtpd_plugin_content(s, CONTENT_BODY, NULL, chunk, len);
}

int smtpd_plugin_wants_queued(struct smtpd_session *s)
{
    return s != NULL && module_hook_active(MODULE_HOOK_QUEUED) && ms_of(s) != NULL;
}

void smtpd_plugin_queued(struct smtpd_session *s, const char *queue_id)
{
    if (!smtpd_plugin_wants_queued(s))
        return;
    struct module_hook_args args = { .a = queue_id };
    /* The hooks may read the message (petrel_message_open); their readers
     * go stale when the last hook has returned. */
    s->tx->in_queued = 1;
    module_notify(s->ms, MODULE_HOOK_QUEUED, &args);
    s->tx->in_queued = 0;
    module_message_release_all(&s->tx->readers);
}

/* ------------------------------------------------------------------ */
/* one entry point: a restriction, a SASL back-end                      */

static void call_done(void *host, const struct module_result *r)
{
    struct smtpd_session *s = host;
    struct restrict_result result;
    to_restrict(r, &result);
    smtpd_phase_done_fn *done = s->module_done;
    s->module_done = NULL;
    done(s, &result);
}

int smtpd_module_call(struct smtpd_session *s, struct petrel_module *m, const char *label, unsigned flags,
                      module_invoke_fn *invoke, const void *arg, smtpd_phase_done_fn *done, struct restrict_result *r)
{
    struct module_session *ms = ms_of(s);
    if (ms == NULL) {
        no_session(r);
        return 1;
    }
    struct module_result answer;
    s->module_done = done;
    if (module_call(ms, m, label, flags, invoke, arg, call_done, &answer)) {
        s->module_done = NULL;
        to_restrict(&answer, r);
        return 1;
    }
    return 0;
}

/* ------------------------------------------------------------------ */
/* facts                                                               */

const char *petrel_client_addr(petrel_session *h)
{
    struct smtpd_session *s = host_of(h, __func__);
    return s ? s->addr : NULL;
}

const char *petrel_client_name(petrel_session *h)
{
    struct smtpd_session *s = host_of(h, __func__);
    return s ? s->name : NULL;
}

const char *petrel_helo(petrel_session *h)
{
    struct smtpd_session *s = host_of(h, __func__);
    return s ? s->helo : NULL;
}

int petrel_in_mynetworks(petrel_session *h)
{
    struct smtpd_session *s = host_of(h, __func__);
    return s ? s->in_mynetworks > 0 : 0;
}

const char *petrel_tls_info(petrel_session *h)
{
    struct smtpd_session *s = host_of(h, __func__);
    return s ? s->tls_info : NULL;
}

/* Postfix's smtpd_resolve_addr for the milter macros: address without a
 * domain qualified as its rewrite_clnt_internal("local") does, then the
 * shared resolution (mail/resolve.h). NULL when it cannot say at once. */
static const char *resolved(struct smtpd_session *s, const char *sender, const char *address, int want_host)
{
    if (address == NULL || s->set->resolve == NULL)
        return NULL;
    if (*address && strchr(address, '@') == NULL && s->worker->rewrite)
        address = mail_rewrite_qualify(s->worker->rewrite, address, s->scratch);
    const char *transport, *nexthop;
    if (mail_resolve_address(s->set->resolve, &s->set->domains, sender, address, s->scratch, &transport,
                             &nexthop) != 0)
        return NULL;
    return want_host ? nexthop : transport;
}

const char *petrel_session_fact(petrel_session *h, const char *name)
{
    struct smtpd_session *s = host_of(h, __func__);
    if (s == NULL || name == NULL)
        return NULL;
    if (strcmp(name, "client_port") == 0)
        return s->port[0] ? s->port : NULL;
    if (strcmp(name, "client_ptr") == 0)
        return s->reverse_name;
    if (strcmp(name, "client_resolve") == 0)   /* Postfix's four words for the client name's status */
        return s->name_status == SMTPD_PEER_OK ? "OK" : s->name_status == SMTPD_PEER_FORGED ? "FORGED"
             : s->name_status == SMTPD_PEER_TEMP ? "TEMP" : "FAIL";
    if (strcmp(name, "client_connections") == 0)
        return petrel_pool_printf(s->scratch, "%u", s->conn_count);
    if (strncmp(name, "mail_", 5) == 0 && (strcmp(name + 5, "mailer") == 0 || strcmp(name + 5, "host") == 0))
        return resolved(s, NULL, petrel_sender(h), name[5] == 'h');
    if (strncmp(name, "rcpt_", 5) == 0 && (strcmp(name + 5, "mailer") == 0 || strcmp(name + 5, "host") == 0))
        return resolved(s, petrel_sender(h), s->module_rcpt, name[5] == 'h');
    if (strcmp(name, "server_addr") == 0)
        return s->server_addr[0] ? s->server_addr : NULL;
    if (strcmp(name, "server_port") == 0)
        return s->server_port[0] ? s->server_port : NULL;
    if (strcmp(name, "sasl_method") == 0)
        return s->sasl_username ? s->sasl_method : NULL;
    if (strcmp(name, "sasl_sender") == 0)
        return s->tx && s->tx->mail.auth ? s->tx->mail.auth : NULL;
    if (strncmp(name, "tls_", 4) == 0 && s->tls_active && !s->tls_handshaking) {
        if (strcmp(name, "tls_peer_subject") == 0)
            return s->ccert.present && s->ccert.verified ? s->ccert.subject : NULL;
        if (strcmp(name, "tls_peer_issuer") == 0)
            return s->ccert.present && s->ccert.verified ? s->ccert.issuer : NULL;
        const char *protocol, *cipher, *sni;
        int bits;
        smtpd_tls_facts(s, &protocol, &cipher, &bits, &sni);
        if (strcmp(name, "tls_protocol") == 0)
            return protocol;
        if (strcmp(name, "tls_cipher") == 0)
            return cipher;
        if (strcmp(name, "tls_cipher_bits") == 0)
            return petrel_pool_printf(s->scratch, "%d", bits);
        if (strcmp(name, "tls_sni") == 0)
            return sni && *sni ? sni : NULL;
    }
    return NULL;
}

const char *petrel_sasl_username(petrel_session *h)
{
    struct smtpd_session *s = host_of(h, __func__);
    return s ? s->sasl_username : NULL;
}

const char *petrel_service_name(petrel_session *h)
{
    struct smtpd_session *s = host_of(h, __func__);
    return s ? s->set->service_name : NULL;
}


const char *petrel_sender(petrel_session *h)
{
    struct smtpd_session *s = host_of(h, __func__);
    if (s == NULL || s->tx == NULL)
        return NULL;
    return s->tx->edits.sender ? s->tx->edits.sender : s->tx->mail.address;
}

const char *petrel_recipient(petrel_session *h)
{
    struct smtpd_session *s = host_of(h, __func__);
    return s ? s->module_rcpt : NULL;
}

const char *petrel_sender_params(petrel_session *h)
{
    struct smtpd_session *s = host_of(h, __func__);
    if (s == NULL || s->tx == NULL)
        return NULL;
    return s->tx->mail.params ? s->tx->mail.params : "";
}

const char *petrel_recipient_params(petrel_session *h)
{
    struct smtpd_session *s = host_of(h, __func__);
    if (s == NULL || s->module_rcpt == NULL)
        return NULL;
    /* The RCPT being checked is the one after the accepted ones. */
    const struct smtpd_rcpt *r = s->tx ? &s->tx->rcpts[s->tx->nrcpts] : NULL;
    return r && r->address == s->module_rcpt && r->params ? r->params : "";
}

size_t petrel_recipient_count(petrel_session *h)
{
    struct smtpd_session *s = host_of(h, __func__);
    return s && s->tx ? s->tx->nrcpts : 0;
}

const char *petrel_recipient_at(petrel_session *h, size_t i)
{
    struct smtpd_session *s = host_of(h, __func__);
    if (s == NULL || s->tx == NULL || i >= s->tx->nrcpts)
        return NULL;
    return s->tx->rcpts[i].address;
}

const char *petrel_queue_id(petrel_session *h)
{
    struct smtpd_session *s = host_of(h, __func__);
    return s && s->tx && s->tx->queue_id[0] ? s->tx->queue_id : NULL;
}

int petrel_header_at(petrel_session *h, size_t i, const char **name, const char **value)
{
    struct smtpd_session *s = host_of(h, __func__);
    if (s == NULL || s->tx == NULL || i >= s->tx->nheaders)
        return -1;
    *name = s->tx->headers[i].name;
    const char *v = s->tx->headers[i].value;
    *value = v[0] == ' ' ? v + 1 : v;   /* as the header hook sees it */
    return 0;
}

/* ------------------------------------------------------------------ */
/* edits                                                               */

static int header_name_ok(const char *name)
{
    if (name == NULL || *name == '\0' || strlen(name) > 200)
        return 0;
    for (const char *p = name; *p; p++)
        if ((unsigned char)*p <= 32 || (unsigned char)*p >= 127 || *p == ':')
            return 0;
    return 1;
}

/* A header value may be folded (CRLF followed by white space) but must not
 * end a header early or inject another one. */
static int header_value_ok(const char *value)
{
    for (const char *p = value; *p; p++) {
        if (*p == '\r' || *p == '\n') {
            if (p[0] != '\r' || p[1] != '\n' || (p[2] != ' ' && p[2] != '\t'))
                return 0;
            p++;
        } else if ((unsigned char)*p < 0x20 && *p != '\t') {
            return 0;
        }
    }
    return 1;
}

static struct smtpd_edit *new_edit(struct smtpd_session *s, enum smtpd_edit_kind kind)
{
    return smtpd_edit_append(s->tx->pool, &s->tx->edits, kind);
}

/* The session a module asks to edit, or NULL (logged) outside a transaction. */
static struct smtpd_session *editable(petrel_session *h, const char *fn)
{
    struct petrel_module *m;
    struct smtpd_session *s = module_session_host(h, &m, fn);
    if (s == NULL)
        return NULL;
    if (s->tx == NULL) {
        msg_warn("module %s: %s outside a mail transaction: ignored", m->name, fn);
        return NULL;
    }
    return s;
}

int petrel_header_add(petrel_session *h, const char *name, const char *value)
{
    return petrel_header_insert(h, (size_t)-1, name, value);
}

int petrel_header_insert(petrel_session *h, size_t index, const char *name, const char *value)
{
    struct smtpd_session *s = editable(h, __func__);
    if (s == NULL || !header_name_ok(name) || value == NULL || !header_value_ok(value))
        return -1;
    struct smtpd_edit *e = new_edit(s, EDIT_HEADER_INSERT);
    e->index = index;
    e->name = petrel_pool_strdup(s->tx->pool, name);
    e->value = petrel_pool_strdup(s->tx->pool, value);
    e->value_len = strlen(value);
    return 0;
}

int petrel_header_change(petrel_session *h, const char *name, size_t nth, const char *value)
{
    struct smtpd_session *s = editable(h, __func__);
    if (s == NULL || !header_name_ok(name) || nth == 0 ||
        (value && !header_value_ok(value)))
        return -1;
    struct smtpd_edit *e = new_edit(s, EDIT_HEADER_CHANGE);
    e->index = nth;
    e->name = petrel_pool_strdup(s->tx->pool, name);
    e->value = value ? petrel_pool_strdup(s->tx->pool, value) : NULL;
    e->value_len = value ? strlen(value) : 0;
    return 0;
}

static int address_ok(const char *a)
{
    if (a == NULL || strlen(a) > 512)
        return 0;
    for (const char *p = a; *p; p++)
        if ((unsigned char)*p < 0x21 || *p == '<' || *p == '>' || (unsigned char)*p == 0x7f)
            return 0;
    return 1;
}

int petrel_sender_change(petrel_session *h, const char *sender)
{
    struct smtpd_session *s = editable(h, __func__);
    if (s == NULL || !address_ok(sender))
        return -1;
    s->tx->edits.sender = petrel_pool_strdup(s->tx->pool, sender);
    return 0;
}

int petrel_recipient_add(petrel_session *h, const char *rcpt)
{
    struct smtpd_session *s = editable(h, __func__);
    if (s == NULL || !address_ok(rcpt) || *rcpt == '\0')
        return -1;
    struct smtpd_edit *e = new_edit(s, EDIT_RCPT_ADD);
    e->value = petrel_pool_strdup(s->tx->pool, rcpt);
    return 0;
}

/* Applies each of params (ESMTP parameters, one space or more between
 * them) that smtp_parse_edit_param accepts; the others are ignored with a
 * warning naming them, as Postfix's cleanup does for a milter's. */
static void edit_params(struct smtpd_session *s, petrel_session *h, const char *fn, const char *params,
                        struct smtp_mail_args *mail, struct smtp_rcpt_args *rcpt)
{
    struct petrel_module *m = petrel_session_module(h);
    char token[1024];
    for (const char *p = params ? params : ""; *p;) {
        while (*p == ' ')
            p++;
        size_t n = strcspn(p, " ");
        if (n == 0)
            break;
        snprintf(token, sizeof token, "%.*s", (int)(n < sizeof token ? n : sizeof token - 1), p);
        if (n >= sizeof token || smtp_parse_edit_param(token, s->tx->pool, mail, rcpt) < 0) {
            for (char *c = token; *c; c++)
                if ((unsigned char)*c < 0x20 || *c == 0x7f)
                    *c = '?';
            msg_warn("%s: module %s: %s: ignoring ESMTP parameter \"%.100s\" (%s)",
                     s->tx->queue_id[0] ? s->tx->queue_id : "NOQUEUE", m ? m->name : "?", fn, token,
                     mail ? "only a valid RET= or ENVID= is applied to a sender"
                          : "only a valid NOTIFY= or ORCPT= is applied to a recipient");
        }
        p += n;
    }
}

int petrel_sender_change_params(petrel_session *h, const char *sender, const char *params)
{
    struct smtpd_session *s = editable(h, __func__);
    if (s == NULL || !address_ok(sender))
        return -1;
    struct smtp_mail_args mail = { 0 };
    edit_params(s, h, __func__, params, &mail, NULL);
    s->tx->edits.sender = petrel_pool_strdup(s->tx->pool, sender);
    s->tx->edits.sender_ret = mail.ret;
    s->tx->edits.sender_envid = mail.envid;
    return 0;
}

int petrel_recipient_add_params(petrel_session *h, const char *rcpt, const char *params)
{
    struct smtpd_session *s = editable(h, __func__);
    if (s == NULL || !address_ok(rcpt) || *rcpt == '\0')
        return -1;
    struct smtp_rcpt_args r = { 0 };
    edit_params(s, h, __func__, params, NULL, &r);
    struct smtpd_edit *e = new_edit(s, EDIT_RCPT_ADD);
    e->value = petrel_pool_strdup(s->tx->pool, rcpt);
    e->notify = r.notify;
    e->orcpt = r.orcpt;
    return 0;
}

int petrel_recipient_delete(petrel_session *h, const char *rcpt)
{
    struct smtpd_session *s = editable(h, __func__);
    if (s == NULL || rcpt == NULL)
        return -1;
    struct smtpd_edit *e = new_edit(s, EDIT_RCPT_DELETE);
    e->value = petrel_pool_strdup(s->tx->pool, rcpt);
    return 0;
}

int petrel_quarantine(petrel_session *h, const char *reason)
{
    struct smtpd_session *s = editable(h, __func__);
    if (s == NULL)
        return -1;
    s->tx->hold = 1;
    s->tx->edits.quarantine_reason = petrel_pool_strdup(s->tx->pool, reason ? reason : "quarantined");
    return 0;
}
