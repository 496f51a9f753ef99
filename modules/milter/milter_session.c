/*
 * modules/milter: a session's events through the chain of milters. Each
 * hook's event (milter_start_event) goes to each milter in turn, step by
 * step (at end of message: headers, end of headers, body read back from the
 * queue file, end of message); the first refusal ends the chain and its
 * reply goes to the client. Also the owner interface each milter_conn gets
 * (watches, timers, completion, logging and the macros' values) and the
 * end of a session. Moved out of milter_module.c, whose opening comment
 * describes the design.
 */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>

#include <petrel/plugin.h>

#include "milter_conn.h"
#include "milter_module_int.h"

/* ------------------------------------------------------------------ */
/* a session                                                           */

static const char *const event_names[] = { "CONNECT", "HELO", "MAIL", "RCPT", "DATA", "END-OF-MESSAGE",
                                           "UNKNOWN" };

static void run(session *ss);

static void set_result(session *ss, petrel_verdict v, int code, const char *enhanced, const char *text)
{
    free(ss->more_lines);
    ss->more_lines = NULL;
    ss->verdict = v;
    ss->code = code;
    snprintf(ss->enhanced, sizeof ss->enhanced, "%s", enhanced ? enhanced : "");
    /* The core takes one printable line of at most 400 characters. */
    size_t o = 0;
    for (const char *p = text ? text : ""; *p && o < sizeof ss->text - 1; p++)
        ss->text[o++] = (*p >= 0x20 && *p < 0x7f) ? *p : '?';
    ss->text[o] = '\0';
}

/* Length of the enhanced status code "d.d.d " at the start of text, the
 * space included; 0 when there is none. */
static size_t leading_enhanced(const char *text)
{
    const char *p = text;
    for (int part = 0; part < 3; part++) {
        size_t digits = 0;
        while (*p >= '0' && *p <= '9' && digits < 4)
            p++, digits++;
        if (digits == 0 || (part < 2 && *p++ != '.'))
            return 0;
    }
    if (*p != ' ' && *p != '\0')
        return 0;
    return (size_t)(p - text) + (*p == ' ');
}

/* A milter's multi-line reply ("550-5.7.1 a\r\n550 5.7.1 b", checked and
 * made printable by milter_parse_replycode): the first line's text goes to
 * ss->text, the others to ss->more_lines; each line loses its code and its
 * enhanced code (the core puts the first line's back on every line, as
 * libmilter's smfi_setmlreply sends them). After set_result(), which set
 * the verdict and the codes. */
static void set_result_lines(session *ss, const char *reply)
{
    const char *eol = strstr(reply, "\r\n");
    char first[PETREL_REPLY_TEXT_MAX + 1];
    size_t n = (size_t)(eol - reply) > 4 ? (size_t)(eol - reply) - 4 : 0;
    snprintf(first, sizeof first, "%.*s", (int)n, n ? reply + 4 : "");
    snprintf(ss->text, sizeof ss->text, "%s", first + leading_enhanced(first));
    free(ss->more_lines);
    ss->more_lines = NULL;
    size_t cap = strlen(eol) + 1, o = 0;
    char *more = malloc(cap);
    if (more == NULL)
        return;     /* the first line alone */
    for (const char *l = eol + 2; l;) {
        const char *next = strstr(l, "\r\n");
        size_t len = next ? (size_t)(next - l) : strlen(l);
        const char *t = len > 4 ? l + 4 : l + len;
        size_t tlen = len > 4 ? len - 4 : 0;
        char line[PETREL_REPLY_TEXT_MAX + 1];
        snprintf(line, sizeof line, "%.*s", (int)tlen, t);
        size_t e = leading_enhanced(line);
        o += (size_t)snprintf(more + o, cap - o, "\n%s", line + e);
        l = next ? next + 2 : NULL;
    }
    ss->more_lines = more;
}

/* Gives the core the reply of a refusal in ss (one line or several). */
static void hand_reply(session *ss)
{
    const char *enhanced = ss->enhanced[0] ? ss->enhanced : NULL;
    if (ss->more_lines == NULL) {
        petrel_set_reply(ss->s, ss->code, enhanced, ss->text);
        return;
    }
    const char *lines[PETREL_REPLY_LINES_MAX];
    size_t n = 0;
    lines[n++] = ss->text;
    char *copy = strdup(ss->more_lines);
    if (copy == NULL) {
        petrel_set_reply(ss->s, ss->code, enhanced, ss->text);
        return;
    }
    for (char *p = copy; (p = strchr(p, '\n')) != NULL && n < PETREL_REPLY_LINES_MAX;) {
        *p++ = '\0';
        lines[n++] = p;
    }
    petrel_set_reply_lines(ss->s, ss->code, enhanced, lines, n);
    free(copy);
}

static void finish(session *ss)
{
    ss->finished = 1;
    if (ss->event == EV_EOM) {
        ss->in_tx = 0;
        if (ss->msg)
            petrel_message_close(ss->msg);
        ss->msg = NULL;
        if (ss->newbody)
            petrel_body_replace_abort(ss->newbody);   /* a REPLBODY the milter never ended */
        ss->newbody = NULL;
    }
    if (!ss->in_hook && ss->pending) {
        petrel_pending *p = ss->pending;
        ss->pending = NULL;
        if (ss->verdict == PETREL_REJECT || ss->verdict == PETREL_TEMPFAIL)
            hand_reply(ss);
        petrel_resume(p, ss->verdict, 0, NULL, NULL);
    }
}

/* ------------------------------------------------------------------ */
/* the connection's owner interface                                    */

static void on_io(int fd, int events, void *arg)
{
    (void)fd;
    link *l = arg;
    milter_conn_io(l->conn, events);
}

static void op_watch(void *arg, int fd, int events)
{
    link *l = arg;
    if (l->watch && (events == 0 || l->watch_fd != fd || l->watch_events != events)) {
        petrel_watch_cancel(l->watch);
        l->watch = NULL;
    }
    if (events && l->watch == NULL) {
        l->watch = petrel_watch_fd(l->ss->m, fd, events, on_io, l);
        l->watch_fd = fd;
        l->watch_events = events;
    }
}

static void on_timer(void *arg)
{
    link *l = arg;
    l->timer = NULL;
    milter_conn_timeout(l->conn);
}

static void op_timer(void *arg, unsigned ms)
{
    link *l = arg;
    if (l->timer) {
        petrel_timer_cancel(l->timer);
        l->timer = NULL;
    }
    if (ms)
        l->timer = petrel_timer_start(l->ss->m, ms, on_timer, l);
}

static int after_call(session *ss);

static void op_done(void *arg)
{
    link *l = arg;
    session *ss = l->ss;
    if (milter_edits_holding(ss)) {
        /* Its edits wait for milter_header_checks: the next milter must
         * see them, so the answer is taken once they are made. */
        ss->held_done = l;
        return;
    }
    milter_event_done(l);
}

/* A failed milter counts once per failure for its circuit breaker. */
static void count_failure(session *ss, link *l)
{
    if (milter_conn_result(l->conn)->failed && !l->skipped && !l->failure_counted) {
        l->failure_counted = 1;
        milter_breaker_failed(ss->conf, ss->m, l->breaker);
    }
}

int milter_event_abandoned(const session *ss)
{
    return ss->pending != NULL && petrel_pending_session(ss->pending) == NULL;
}

/* The core stopped waiting for the suspended event (milter_hook_timeout
 * ran out and the module's failure action answered, or the session ended):
 * the answer is for nobody. It changes nothing (a quarantine, a refusal),
 * and the rest of the chain is not sent an event the core has finished
 * with (at end of message, the transaction is over and the other milters
 * got their SMFIC_ABORT). Returns 1 when so. */
static int answered_too_late(session *ss)
{
    if (!milter_event_abandoned(ss))
        return 0;
    petrel_log(ss->s, PETREL_LOG_WARNING, "milter: an answer to %s came after the core stopped waiting "
               "(milter_hook_timeout, or the session ended): ignored", event_names[ss->event]);
    ss->pending = NULL;
    ss->finished = 1;
    if (ss->event == EV_EOM) {
        /* The core closed them when the end of message was answered. */
        ss->msg = NULL;
        ss->newbody = NULL;
    }
    return 1;
}

void milter_event_done(link *l)
{
    session *ss = l->ss;
    ss->waiting = 0;
    /* An event the core gave up on has no outcome left to fail: the late
     * answer is only logged and counted below (answered_too_late). */
    if (ss->held_failed && milter_event_abandoned(ss))
        ss->held_failed = 0;
    if (ss->held_failed) {
        ss->held_failed = 0;
        petrel_log(ss->s, PETREL_LOG_ERROR, "milter: a modification held for milter_header_checks could not "
                   "be made");
        set_result(ss, PETREL_TEMPFAIL, 451, "4.3.0", "Error: message modification failed");
        finish(ss);
        return;
    }
    /* The milter answered an event (a completed negotiation alone does not
     * count: a milter may negotiate and then hang on every command). */
    if (ss->step != ST_OPEN && !milter_conn_result(l->conn)->failed)
        milter_breaker_answered(ss->conf, ss->m, l->breaker);
    if (answered_too_late(ss)) {
        count_failure(ss, l);
        return;
    }
    if (after_call(ss) == 0)
        run(ss);
}

static void op_log(void *arg, milter_log_level level, const char *text)
{
    link *l = arg;
    petrel_log(l->ss->s, level == MILTER_LOG_INFO ? PETREL_LOG_INFO
                         : level == MILTER_LOG_WARNING ? PETREL_LOG_WARNING : PETREL_LOG_ERROR, "%s", text);
}

static const char *macro_value(session *ss, const char *name)
{
    petrel_session *s = ss->s;
    if (strcmp(name, "{j}") == 0)
        return ss->profile->myhostname;
    if (strcmp(name, "{daemon_name}") == 0)
        return ss->profile->daemon_name;
    if (strcmp(name, "{v}") == 0)
        return ss->profile->macro_v;
    if (strcmp(name, "{_}") == 0) {
        /* Postfix's: the PTR name, and a warning when it is not verified */
        const char *addr = petrel_client_addr(s), *cname = petrel_client_name(s);
        const char *ptr = petrel_session_fact(s, "client_ptr");
        if (ptr == NULL)
            ptr = cname;
        snprintf(ss->underscore, sizeof ss->underscore, "%s [%s]%s", ptr ? ptr : "unknown", addr ? addr : "",
                 cname && ptr && strcasecmp(cname, ptr) != 0 ? " (may be forged)" : "");
        return ss->underscore;
    }
    if (strcmp(name, "{client_addr}") == 0)
        return petrel_client_addr(s);
    if (strcmp(name, "{client_name}") == 0)
        return petrel_client_name(s);
    if (strcmp(name, "{i}") == 0)
        return petrel_queue_id(s);
    if (strcmp(name, "{auth_authen}") == 0)
        return petrel_sasl_username(s);
    /* Postfix's smtpd_milter_eval names for the session's facts */
    static const struct { const char *macro, *fact; } facts[] = {
        { "{client_port}", "client_port" }, { "{daemon_addr}", "server_addr" },
        { "{daemon_port}", "server_port" }, { "{auth_type}", "sasl_method" },
        { "{auth_author}", "sasl_sender" }, { "{tls_version}", "tls_protocol" },
        { "{cipher}", "tls_cipher" }, { "{cipher_bits}", "tls_cipher_bits" },
        { "{cert_subject}", "tls_peer_subject" }, { "{cert_issuer}", "tls_peer_issuer" },
        { "{tls_sni}", "tls_sni" }, { "{client_ptr}", "client_ptr" },
        { "{client_resolve}", "client_resolve" }, { "{client_connections}", "client_connections" },
    };
    for (size_t i = 0; i < sizeof facts / sizeof facts[0]; i++)
        if (strcmp(name, facts[i].macro) == 0)
            return petrel_session_fact(s, facts[i].fact);
    if (strcmp(name, "{mail_addr}") == 0)
        return ss->in_tx ? ss->sender : NULL;
    if (ss->event == EV_RCPT && ss->rcpt_refusal) {
        /* Postfix's values for a refused recipient ("550 5.1.1 <a@b>: text"):
         * the error mailer, the enhanced code as the host, and what follows
         * the address as the address (Sendmail's $: of the error mailer). */
        const char *sp1 = strchr(ss->rcpt_refusal, ' ');
        const char *sp2 = sp1 ? strchr(sp1 + 1, ' ') : NULL;
        const char *sp3 = sp2 ? strchr(sp2 + 1, ' ') : NULL;
        if (strcmp(name, "{rcpt_mailer}") == 0)
            return "error";
        if (strcmp(name, "{rcpt_host}") == 0) {
            snprintf(ss->rcpt_macro, sizeof ss->rcpt_macro, "%.*s",
                     sp1 ? (int)((sp2 ? (size_t)(sp2 - sp1) : strlen(sp1)) - 1) : 0, sp1 ? sp1 + 1 : "");
            return ss->rcpt_macro;
        }
        if (strcmp(name, "{rcpt_addr}") == 0)
            return sp3 ? sp3 + 1 : NULL;
    }
    if (strcmp(name, "{rcpt_addr}") == 0)
        return ss->event == EV_RCPT ? ss->rcpt : NULL;
    /* Postfix's address resolution (transport = mailer, next hop = host),
     * which the core computes as its queue manager routes */
    if (strcmp(name, "{mail_mailer}") == 0 || strcmp(name, "{mail_host}") == 0)
        return ss->in_tx ? petrel_session_fact(s, name[6] == 'm' ? "mail_mailer" : "mail_host") : NULL;
    if (strcmp(name, "{rcpt_mailer}") == 0 || strcmp(name, "{rcpt_host}") == 0)
        return ss->event == EV_RCPT ? petrel_session_fact(s, name[6] == 'm' ? "rcpt_mailer" : "rcpt_host") : NULL;
    return NULL;
}

/* A macro's value, else its milter_macro_defaults value (Postfix 3.1),
 * else NULL: not sent. */
static const char *op_macro(void *arg, const char *name)
{
    link *l = arg;
    session *ss = l->ss;
    const char *v = macro_value(ss, name);
    if (v != NULL)
        return v;
    const profile *p = ss->profile;
    for (size_t i = 0; i < p->ndefaults; i++)
        if (strcmp(p->default_names[i], name) == 0)
            return p->default_values[i];
    return NULL;
}

/* ------------------------------------------------------------------ */
/* running an event through the chain                                  */

static enum step first_step(enum event ev)
{
    switch (ev) {
    case EV_CONNECT: return ST_OPEN;
    case EV_HELO: return ST_HELO;
    case EV_MAIL: return ST_MAIL;
    case EV_RCPT: return ST_RCPT;
    case EV_DATA: return ST_DATA;
    case EV_UNKNOWN: return ST_UNKNOWN;
    case EV_EOM: return ST_HEADER;
    }
    return ST_OPEN;
}

static void next_milter(session *ss)
{
    ss->cur++;
    /* milter_header_checks rejected a milter's header: as in Postfix, the
     * later milters are not sent the message. */
    if (ss->event == EV_EOM && petrel_milters_stopped(ss->s) == 1)
        ss->cur = ss->n;
    ss->step = first_step(ss->event);
    ss->header_i = 0;
    ss->body_off = 0;
}

/* The body for the current milter, as it stands (a REPLBODY of a milter
 * before it included). Returns 0, or -1 when it cannot be read. */
static int body_open(session *ss)
{
    if (ss->msg)
        petrel_message_close(ss->msg);
    ss->body_off = 0;
    ss->msg = petrel_message_open(ss->s, PETREL_MESSAGE_BODY);
    ss->body_size = ss->msg ? petrel_message_size(ss->msg) : -1;
    return ss->body_size < 0 ? -1 : 0;
}

/* Issues the current step's call. */
static milter_status issue(session *ss)
{
    milter_conn *c = ss->links[ss->cur].conn;
    switch (ss->step) {
    case ST_OPEN: {
        link *l = &ss->links[ss->cur];
        if (milter_breaker_skip(ss->conf, ss->m, l->breaker)) {
            l->skipped = 1;
            milter_conn_skip(c);
            return MILTER_DONE;
        }
        return milter_conn_open(c);
    }
    case ST_CONNECT: {
        const char *addr = petrel_client_addr(ss->s);
        int family = AF_UNSPEC;
        if (addr && strchr(addr, ':'))
            family = AF_INET6;
        else if (addr && *addr && isdigit((unsigned char)*addr))
            family = AF_INET;
        const char *port = petrel_session_fact(ss->s, "client_port");
        unsigned long portnum = port ? strtoul(port, NULL, 10) : 0;
        return milter_conn_connect(c, petrel_client_name(ss->s), family, family == AF_UNSPEC ? NULL : addr,
                                   portnum <= 65535 ? (unsigned)portnum : 0);
    }
    case ST_HELO:
        return milter_conn_helo(c, ss->helo ? ss->helo : "");
    case ST_MAIL:
        return milter_conn_mail(c, ss->mail_argv);
    case ST_RCPT:
        return milter_conn_rcpt(c, ss->rcpt_argv, ss->rcpt_refusal != NULL);
    case ST_UNKNOWN:
        return milter_conn_unknown(c, ss->unknown_cmd ? ss->unknown_cmd : "");
    case ST_DATA:
        return milter_conn_data(c);
    case ST_HEADER:
        return milter_conn_header(c, ss->headers[ss->header_i].name, ss->headers[ss->header_i].value);
    case ST_EOH:
        return milter_conn_eoh(c);
    case ST_BODY: {
        if (ss->readbuf == NULL && (ss->readbuf = malloc(MILTER_CHUNK_MAX)) == NULL) {
            ss->read_error = 1;
            return MILTER_DONE;
        }
        long n = petrel_message_pread(ss->msg, ss->body_off, ss->readbuf, MILTER_CHUNK_MAX);
        if (n <= 0) {
            /* The body is shorter than it was, or unreadable: the
             * message cannot be shown to the milter. */
            ss->read_error = 1;
            return MILTER_DONE;
        }
        size_t taken = 0;
        milter_status st = milter_conn_body(c, ss->readbuf, (size_t)n, &taken);
        ss->body_off += (long long)taken;
        return st;
    }
    case ST_EOM:
        return milter_conn_eom(c);
    }
    return MILTER_DONE;
}

/* Ends the event with a refusal from result r. */
static void refuse(session *ss, const milter_result *r)
{
    petrel_verdict v = r->verdict == MILTER_REJECT ? PETREL_REJECT : PETREL_TEMPFAIL;
    int code = r->code ? r->code : (v == PETREL_REJECT ? 550 : 451);
    const char *enhanced = r->enhanced;
    const char *text = r->text;
    if (r->verdict == MILTER_SHUTDOWN) {
        code = 421;
        enhanced = "4.7.0";
        text = "Server closing connection";
    }
    if (ss->event == EV_CONNECT && v == PETREL_TEMPFAIL && code != 421) {
        /* Postfix greets normally and answers the next commands with it
         * (the milter's verdict stands for the session). */
        set_result(ss, PETREL_CONTINUE, 0, NULL, NULL);
        finish(ss);
        return;
    }
    int multiline = r->verdict != MILTER_SHUTDOWN && r->reply != NULL && strstr(r->reply, "\r\n") != NULL;
    if (multiline)   /* logged whole, its CRLFs as "??", as Postfix */
        petrel_log(ss->s, PETREL_LOG_INFO, "milter-reject: %s from %s[%s]: %s", event_names[ss->event],
                   petrel_client_name(ss->s) ? petrel_client_name(ss->s) : "unknown",
                   petrel_client_addr(ss->s) ? petrel_client_addr(ss->s) : "", r->reply);
    else
        petrel_log(ss->s, PETREL_LOG_INFO, "milter-reject: %s from %s[%s]: %d %s %s", event_names[ss->event],
                   petrel_client_name(ss->s) ? petrel_client_name(ss->s) : "unknown",
                   petrel_client_addr(ss->s) ? petrel_client_addr(ss->s) : "", code, enhanced ? enhanced : "",
                   text ? text : "");
    set_result(ss, v, code, enhanced, text);
    if (multiline)
        set_result_lines(ss, r->reply);
    finish(ss);
}

/* Looks at the outcome of the call just made and moves on. Returns 1 when
 * the event is finished, else 0. */
static int after_call(session *ss)
{
    if (ss->read_error) {
        petrel_log(ss->s, PETREL_LOG_ERROR, "milter: cannot read the message back for the milters");
        set_result(ss, PETREL_TEMPFAIL, 451, "4.3.0", "Error: queue file read error");
        finish(ss);
        return 1;
    }
    link *l = &ss->links[ss->cur];
    milter_conn *c = l->conn;
    const milter_result *r = milter_conn_result(c);
    count_failure(ss, l);
    if (r->quarantine) {
        if (ss->in_tx)
            milter_apply_quarantine(ss, r->quarantine);
        else
            snprintf(ss->session_quarantine, sizeof ss->session_quarantine, "%s", r->quarantine);
    }
    if (ss->step == ST_OPEN) {
        /* A failure shows at CONNECT, where the default action applies. */
        ss->step = ST_CONNECT;
        return 0;
    }
    if (ss->event == EV_RCPT && ss->rcpt_refusal && r->verdict != MILTER_CONTINUE) {
        /* A refused recipient: the first answer ends the event, as in
         * Postfix, and changes nothing (our refusal stands). */
        set_result(ss, PETREL_CONTINUE, 0, NULL, NULL);
        finish(ss);
        return 1;
    }
    switch (r->verdict) {
    case MILTER_CONTINUE:
        break;
    case MILTER_ACCEPT:
        /* This milter is done with the message (or the session). */
        next_milter(ss);
        return 0;
    case MILTER_DISCARD:
        if (ss->event == EV_CONNECT || ss->event == EV_HELO)
            break;
        petrel_log(ss->s, PETREL_LOG_INFO, "milter-discard: %s: milter triggers DISCARD action",
                   event_names[ss->event]);
        ss->discard = 1;
        set_result(ss, PETREL_DISCARD, 0, NULL, NULL);
        finish(ss);
        return 1;
    case MILTER_REJECT:
    case MILTER_TEMPFAIL:
    case MILTER_SHUTDOWN:
        refuse(ss, r);
        return 1;
    }
    switch (ss->step) {
    case ST_HEADER:
        if (++ss->header_i < ss->nheaders)
            return 0;
        ss->step = ST_EOH;
        return 0;
    case ST_EOH:
        if (body_open(ss) < 0) {
            ss->read_error = 1;
            return after_call(ss);
        }
        ss->step = ss->body_size > 0 ? ST_BODY : ST_EOM;
        return 0;
    case ST_BODY:
        if (ss->body_off < ss->body_size)
            return 0;
        ss->step = ST_EOM;
        return 0;
    default:
        next_milter(ss);
        return 0;
    }
}

static void run(session *ss)
{
    while (!ss->finished && !ss->waiting) {
        if (ss->cur >= ss->n) {
            set_result(ss, ss->discard ? PETREL_DISCARD : PETREL_CONTINUE, 0, NULL, NULL);
            finish(ss);
            return;
        }
        if (ss->step == ST_HEADER && ss->header_i >= ss->nheaders)
            ss->step = ST_EOH;
        if (issue(ss) == MILTER_PENDING) {
            ss->waiting = 1;
            return;
        }
        if (after_call(ss))
            return;
    }
}

/* Runs event ev through the chain from within its hook. */
petrel_verdict milter_start_event(session *ss, petrel_session *s, enum event ev)
{
    if (ss->waiting) {
        /* The core's backstop timeout ran out while a milter still had the
         * previous event: the connection cannot take another. */
        petrel_log(s, PETREL_LOG_WARNING, "milter: %s while a milter still answers the previous event "
                   "(milter_hook_timeout is shorter than the milter timeouts)", event_names[ev]);
        petrel_set_reply(s, 451, "4.3.0", "Error: milter temporarily unavailable, try again later");
        return PETREL_TEMPFAIL;
    }
    ss->s = s;
    ss->event = ev;
    ss->cur = 0;
    ss->step = first_step(ev);
    ss->header_i = 0;
    ss->body_off = 0;
    ss->read_error = 0;
    ss->finished = 0;
    ss->pending = NULL;
    ss->in_hook = 1;
    run(ss);
    ss->in_hook = 0;
    if (ss->finished) {
        if (ss->verdict == PETREL_REJECT || ss->verdict == PETREL_TEMPFAIL)
            hand_reply(ss);
        return ss->verdict;
    }
    ss->pending = petrel_suspend(s);
    if (ss->pending == NULL) {
        petrel_set_reply(s, 451, "4.3.0", "Error: milter temporarily unavailable, try again later");
        return PETREL_TEMPFAIL;
    }
    return PETREL_PENDING;
}

void milter_resume_event(session *ss, petrel_session *s, enum event ev, petrel_pending *p)
{
    ss->s = s;
    ss->event = ev;
    ss->cur = 0;
    ss->step = first_step(ev);
    ss->header_i = 0;
    ss->body_off = 0;
    ss->read_error = 0;
    ss->finished = 0;
    ss->pending = p;
    ss->in_hook = 0;
    run(ss);   /* finish() resumes p, now or when the milters answered */
}

/* The end of a transaction: RSET, the end of DATA or BDAT whatever its
 * outcome, a new EHLO, a refused MAIL, the session's end. Postfix's smtpd
 * sends SMFIC_ABORT to every milter then (mail_reset's milter_abort), so
 * a milter frees the message's state at once, not at the next MAIL: after
 * a message whose content no milter got (header_checks or body_checks
 * stopped them, an earlier DISCARD), after a refused DATA, a milter's own
 * DISCARD. A milter that saw the end of message is out of the transaction
 * already (libmilter would ignore the ABORT: Postfix's is a no-op there).
 * The watch lives in the transaction's pool; the session's end, which may
 * come first (a transaction whose fsync runs on a thread outlives it),
 * disarms it. Otherwise, at the session's end, the core frees the
 * transaction before the session's pool, so ss is still there here: an
 * ABORT that cannot be written is logged through ss->s, a handle the core
 * has made stale by then, which petrel_log takes (the line names the module,
 * "module milter: ...", not the transaction), and calls nothing back (no
 * event is pending on that milter); milter_session_end then frees ss, its
 * watches and timers first. t/integration/test_milter_abort_fail.py breaks
 * a milter's socket so that the ABORT's write is what fails, at each of
 * these ends. */
typedef struct tx_end {
    session *ss;
} tx_end;

static void tx_ended(void *arg)
{
    tx_end *te = arg;
    session *ss = te->ss;
    if (ss == NULL)
        return;
    ss->tx_end = NULL;
    ss->in_tx = 0;
    for (size_t i = 0; i < ss->n; i++) {
        milter_conn *c = ss->links[i].conn;
        /* One still answering an event (a session that ends meanwhile)
         * gets its QUIT instead. */
        if (c && milter_conn_in_message(c))
            milter_conn_abort(c);
    }
}

void milter_tx_begin(session *ss, petrel_session *s)
{
    petrel_pool *pool = petrel_tx_pool(s);
    if (ss->tx_end != NULL || pool == NULL)
        return;   /* without a pool, the next MAIL or the session's QUIT ends it */
    tx_end *te = petrel_pool_zalloc(pool, sizeof *te);
    if (te == NULL)
        return;
    te->ss = ss;
    if (petrel_pool_cleanup_add(pool, tx_ended, te) == 0)
        ss->tx_end = te;
}

void milter_session_end(void *arg)
{
    session *ss = arg;
    if (ss->tx_end)
        ss->tx_end->ss = NULL;
    for (size_t i = 0; i < ss->n; i++) {
        link *l = &ss->links[i];
        if (l->conn) {
            milter_conn_quit(l->conn);
            milter_conn_free(l->conn);
        }
        if (l->watch)
            petrel_watch_cancel(l->watch);
        if (l->timer)
            petrel_timer_cancel(l->timer);
    }
    free(ss->links);
    free(ss->more_lines);
    milter_edits_reset(ss);
    milter_headers_clear(ss);
    free(ss->headers);
    free(ss->readbuf);   /* msg and newbody went stale with the session: the core closed them */
    free(ss->helo);
    free(ss->unknown_cmd);
    free(ss->sender);
    free(ss->rcpt);
    free(ss->rcpt_refusal);
    free(ss->mail_arg);
    free(ss->rcpt_arg);
    free(ss->mail_argv);
    free(ss->rcpt_argv);
    free(ss);
}

const milter_conn_ops milter_session_ops = { op_watch, op_timer, op_done, milter_op_edit, op_macro, op_log };
