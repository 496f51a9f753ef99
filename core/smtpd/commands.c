/*
 * The smtpd command table and the commands of the session and the envelope:
 * EHLO/HELO, MAIL, RCPT, RSET, NOOP, QUIT, VRFY, HELP, STARTTLS, and the
 * answers to what we do not implement. AUTH is in auth.c, DATA and BDAT in
 * data.c; session.c reads the lines and calls smtpd_handle_command.
 *
 * A command that consults the restrictions or the modules answers in two
 * steps: NAME_checked (smtpd_*_restrictions decided) then NAME_hooked (the
 * modules' hooks of that phase decided); either may run later, from the
 * loop, while the session waits in SMTPD_WAIT.
 */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <unistd.h>
#include <strings.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>

#include "config/cfg.h"
#include "lib/log.h"
#include "mail/maps.h"
#include "smtpd/content_int.h"
#include "smtpd/restrict.h"
#include "mail/namadr.h"
#include "smtpd/smtpd_int.h"
#include "tables/cidr.h"

/* ------------------------------------------------------------------ */
/* commands                                                            */

static int tls_required(const struct smtpd_session *s)
{
    return s->set->tls_level == TLS_LEVEL_ENCRYPT && !s->tls_active;
}

/* Postfix's EHLO keywords, in its ehlo_mask order (for the log line). */
static const struct { const char *name; unsigned bit; } ehlo_words[] = {
    { "8BITMIME", SMTPD_EHLO_8BITMIME }, { "AUTH", SMTPD_EHLO_AUTH }, { "ETRN", SMTPD_EHLO_ETRN },
    { "PIPELINING", SMTPD_EHLO_PIPELINING }, { "SIZE", SMTPD_EHLO_SIZE }, { "VERP", SMTPD_EHLO_VERP },
    { "VRFY", SMTPD_EHLO_VRFY }, { "XCLIENT", SMTPD_EHLO_XCLIENT }, { "XFORWARD", SMTPD_EHLO_XFORWARD },
    { "STARTTLS", SMTPD_EHLO_STARTTLS }, { "ENHANCEDSTATUSCODES", SMTPD_EHLO_ENHANCEDSTATUSCODES },
    { "DSN", SMTPD_EHLO_DSN }, { "SMTPUTF8", SMTPD_EHLO_SMTPUTF8 }, { "CHUNKING", SMTPD_EHLO_CHUNKING },
    { "REQUIRETLS", SMTPD_EHLO_REQUIRETLS }, { "SILENT-DISCARD", SMTPD_EHLO_SILENT },
};

static unsigned ehlo_mask_of(const char *const *words)
{
    unsigned mask = 0;
    for (; words && *words; words++)
        for (size_t i = 0; i < sizeof(ehlo_words) / sizeof(ehlo_words[0]); i++)
            if (strcasecmp(*words, ehlo_words[i].name) == 0)
                mask |= ehlo_words[i].bit;   /* unknown words are ignored, as in Postfix */
    return mask;
}

int smtpd_ehlo_discard_mask(struct smtpd_session *s, unsigned *mask)
{
    const struct smtpd_settings *set = s->set;
    *mask = 0;
    if (set->discard_ehlo_maps && set->discard_ehlo_maps->n) {
        const char *value = NULL;
        int r = mail_maps_get(set->discard_ehlo_maps, s->addr, s->pool, &value);
        if (r < 0)
            return -1;
        if (r > 0) {
            char **words = cfg_split_list(value);
            *mask = ehlo_mask_of((const char *const *)words);
            cfg_list_free(words);
            return 0;
        }
    }
    *mask = ehlo_mask_of(set->discard_ehlo_keywords);
    return 0;
}

static void ehlo_reply(struct smtpd_session *s)
{
    const struct smtpd_settings *set = s->set;
    unsigned discard = s->ehlo_discard;
    if (s->ehlo_discard_error) {
        /* Postfix: "don't know what EHLO features to announce" */
        msg_warn("don't know what EHLO features to announce to %s", s->namaddr);
        smtpd_reply(s, "421 4.3.0 %s Server local data error", set->myhostname);
        smtpd_session_close_after_flush(s);
        return;
    }
    int xforward = (discard & SMTPD_EHLO_XFORWARD) ? 0 : smtpd_xforward_allowed(s);
    if (xforward < 0) {
        /* a table of smtpd_authorized_xforward_hosts failed (Postfix's words) */
        msg_warn("don't know if EHLO feature XFORWARD should be announced to %s", s->namaddr);
        smtpd_reply(s, "421 4.3.0 %s Server local data error", set->myhostname);
        smtpd_session_close_after_flush(s);
        return;
    }
    if (discard && !(discard & SMTPD_EHLO_ENHANCEDSTATUSCODES) && !(discard & SMTPD_EHLO_SILENT)) {
        char names[300] = "";
        size_t n = 0;
        for (size_t i = 0; i < sizeof(ehlo_words) / sizeof(ehlo_words[0]); i++)
            if (discard & ehlo_words[i].bit)
                n += (size_t)snprintf(names + n, n < sizeof(names) ? sizeof(names) - n : 0, "%s%s", n ? " " : "",
                                      ehlo_words[i].name);
        msg_info("discarding EHLO keywords: %s", names);
    }
    const char *lines[16];
    char size[40];
    size_t k = 0;
    if (!(discard & SMTPD_EHLO_PIPELINING))
        lines[k++] = "PIPELINING";
    if (!(discard & SMTPD_EHLO_SIZE)) {
        if (set->message_size_limit)
            snprintf(size, sizeof(size), "SIZE %llu", set->message_size_limit);
        else
            snprintf(size, sizeof(size), "SIZE");
        lines[k++] = size;
    }
    if (!set->disable_vrfy && !(discard & SMTPD_EHLO_VRFY))
        lines[k++] = "VRFY";
    if (!(discard & SMTPD_EHLO_ETRN))
        lines[k++] = "ETRN";
    /* AUTH: the mechanisms the back-end offers now (sasl_glue.c), unless
     * smtpd_discard_ehlo_keywords takes it away (then the AUTH command is
     * refused too) or the client is in smtpd_sasl_exceptions_networks
     * (only hidden: AUTH is still served) */
    if (s->sasl_offer && *s->sasl_offer && !(discard & SMTPD_EHLO_AUTH) &&
        namadr_list_match(set->sasl_exceptions, s->name, s->addr) == 0) {
        /* in the HELO pool, with the offer: reset by the next EHLO */
        petrel_pool *pool = s->helo_pool ? s->helo_pool : s->pool;
        lines[k++] = petrel_pool_printf(pool, "AUTH %s", s->sasl_offer);
        if (set->broken_sasl_auth_clients)
            lines[k++] = petrel_pool_printf(pool, "AUTH=%s", s->sasl_offer);
    }
    if (set->tls_ctx && !s->tls_active && set->tls_level != TLS_LEVEL_NONE && !(discard & SMTPD_EHLO_STARTTLS))
        lines[k++] = "STARTTLS";
    /* Postfix's order of the attributes; only to clients that may use it */
    if (xforward)
        lines[k++] = "XFORWARD NAME ADDR PROTO HELO SOURCE PORT IDENT";
    if (!(discard & SMTPD_EHLO_ENHANCEDSTATUSCODES))
        lines[k++] = "ENHANCEDSTATUSCODES";
    if (!(discard & SMTPD_EHLO_8BITMIME))
        lines[k++] = "8BITMIME";
    if (!(discard & SMTPD_EHLO_DSN))
        lines[k++] = "DSN";
    if (set->smtputf8 && !(discard & SMTPD_EHLO_SMTPUTF8))
        lines[k++] = "SMTPUTF8";
    if (!(discard & SMTPD_EHLO_CHUNKING))
        lines[k++] = "CHUNKING";
    struct evbuffer *out = bufferevent_get_output(s->bev);
    evbuffer_add_printf(out, "250%c%s\r\n", k ? '-' : ' ', set->myhostname);
    for (size_t i = 0; i < k; i++)
        evbuffer_add_printf(out, "250%c%s\r\n", i + 1 < k ? '-' : ' ', lines[i]);
    smtpd_command_answered(s);
}

static void cmd_helo(struct smtpd_session *s, const struct smtp_command *cmd, int esmtp);

static void ehlo_ready(struct smtpd_session *s)
{
    s->state = SMTPD_CMD;
    ehlo_reply(s);
    smtpd_continue(s);
}
static void cmd_mail(struct smtpd_session *s, const struct smtp_command *cmd);
static void cmd_rcpt(struct smtpd_session *s, const struct smtp_command *cmd);
static void cmd_starttls(struct smtpd_session *s, const struct smtp_command *cmd);

static int reject_helo_text(struct smtpd_session *s, const char *arg)
{
    if (*arg == '\0') {
        smtpd_reply(s, "501 5.5.4 Syntax: %s hostname", s->esmtp ? "EHLO" : "HELO");
        return -1;
    }
    return 0;
}

static void helo_checked(struct smtpd_session *s, const struct restrict_result *r);

static void cmd_helo(struct smtpd_session *s, const struct smtp_command *cmd, int esmtp)
{
    enum smtpd_counter c = esmtp ? CNT_EHLO : CNT_HELO;
    s->esmtp = esmtp;
    if (reject_helo_text(s, cmd->args) != 0) {
        smtpd_count_error(s, c);
        return;
    }
    /* HELO resets the transaction (RFC 5321 4.1.4). One to be discarded
     * keeps this HELO from the milters (petrel_milters_stopped). */
    s->helo_skips_milters = s->tx && s->tx->cleanup == NULL && (s->tx->discard || s->tx->milters_stopped);
    smtpd_tx_free(s);
    s->bdat_state = BDAT_NONE;
    /* The name goes into Received:, the log and the next hop's view: keep it
     * printable and neutered as Postfix does ("a b<c>" -> "a?b?c?"). Its
     * own pool is reset by each HELO, so a flood of them never adds up. */
    if (s->helo_pool)
        petrel_pool_reset(s->helo_pool);
    else
        s->helo_pool = petrel_pool_create(SMTPD_SMALL_POOL_SIZE);
    /* The mechanisms on offer lived in that pool: EHLO asks again. */
    s->sasl_offer = NULL;
    s->sasl_offer_known = 0;
    s->helo = smtp_helo_printable(cmd->args, strlen(cmd->args), s->set->smtputf8, s->helo_pool);
    if (s->tls_active)
        s->protocol = esmtp ? "ESMTPS" : "SMTPS";
    else
        s->protocol = esmtp ? "ESMTP" : "SMTP";
    if (!s->set->delay_reject && !restrict_list_empty(s->set->helo_restrictions)) {
        static const enum restrict_stage stages[] = { RS_HELO };
        s->state = SMTPD_WAIT;
        restrict_check(s, stages, 1, NULL, helo_checked);
        return;
    }
    struct restrict_result dunno = { .verdict = RV_DUNNO };
    helo_checked(s, &dunno);
}

static void helo_hooked(struct smtpd_session *s, const struct restrict_result *r);

static void helo_checked(struct smtpd_session *s, const struct restrict_result *r)
{
    s->state = SMTPD_CMD;
    if (!smtpd_refused(r)) {
        s->in_helo_hooks = 1;
        smtpd_hooks_then(s, PHASE_HELO, s->helo, helo_hooked);
        return;
    }
    helo_hooked(s, r);
}

static void helo_hooked(struct smtpd_session *s, const struct restrict_result *r)
{
    s->state = SMTPD_CMD;
    s->in_helo_hooks = 0;
    s->helo_skips_milters = 0;
    if (smtpd_refused(r)) {
        smtpd_log_reject(s, "reject", s->esmtp ? "EHLO" : "HELO", r->restriction, r->code, r->enhanced, r->text, NULL);
        smtpd_reply_refusal(s, r->code, r->enhanced, r->text);
        smtpd_count_error(s, s->esmtp ? CNT_EHLO : CNT_HELO);
        s->helo = NULL;
    } else if (s->esmtp) {
        /* The mechanisms on offer may take the back-end a moment (its
         * first connection). */
        smtpd_sasl_offer_then(s, ehlo_ready);
        return;
    } else {
        smtpd_reply(s, "250 %s", s->set->myhostname);
    }
    smtpd_continue(s);
}

static struct smtp_parse_opts parse_opts(const struct smtpd_session *s)
{
    struct smtp_parse_opts o;
    memset(&o, 0, sizeof(o));
    o.smtputf8_enabled = s->set->smtputf8 && s->esmtp && !(s->ehlo_discard & SMTPD_EHLO_SMTPUTF8);
    o.dsn_enabled = s->esmtp;
    o.transaction_smtputf8 = s->tx ? s->tx->mail.smtputf8 : 0;
    return o;
}

static void mail_checked(struct smtpd_session *s, const struct restrict_result *r);

static void cmd_mail(struct smtpd_session *s, const struct smtp_command *cmd)
{
    const struct smtpd_settings *set = s->set;
    if (tls_required(s)) {
        smtpd_reply(s, "530 5.7.0 Must issue a STARTTLS command first");
        smtpd_count_error(s, CNT_MAIL);
        return;
    }
    if (s->tx) {
        smtpd_reply(s, "503 5.5.1 Error: nested MAIL command");
        smtpd_count_error(s, CNT_MAIL);
        return;
    }
    if (s->bdat_state != BDAT_NONE) {
        /* after a refused chunk, until BDAT LAST or RSET */
        smtpd_reply(s, "503 5.5.1 Error: MAIL after BDAT");
        smtpd_count_error(s, CNT_MAIL);
        return;
    }
    /* smtpd_client_message_rate_limit: counted for each MAIL FROM: (Postfix) */
    if (strncasecmp(cmd->args, "FROM:", 5) == 0 && smtpd_rate_mail(s) != 0) {
        smtpd_count_error(s, CNT_MAIL);
        return;
    }
    struct smtpd_tx *tx = smtpd_tx_new(s);
    struct smtp_parse_opts opts = parse_opts(s);
    struct smtp_reply_err err;
    if (smtpd_proxy_enabled(s))
        tx->mail_line = petrel_pool_printf(tx->pool, "MAIL %s", cmd->args);
    if (smtp_parse_mail(cmd->args, &opts, tx->pool, &tx->mail, &err) != 0) {
        smtpd_reply_refusal(s, err.code, err.enhanced, err.text);
        smtpd_tx_free(s);
        smtpd_count_error(s, CNT_MAIL);
        return;
    }
    if ((s->ehlo_discard & SMTPD_EHLO_DSN) && (tx->mail.ret || tx->mail.envid)) {
        /* smtpd_discard_ehlo_keywords took DSN away (Postfix) */
        smtpd_reply(s, "501 5.7.1 DSN support is disabled");
        smtpd_tx_free(s);
        smtpd_count_error(s, CNT_MAIL);
        return;
    }
    if (tx->mail.size > 0 && set->message_size_limit &&
        (unsigned long long)tx->mail.size > set->message_size_limit) {
        smtpd_reply(s, "552 5.3.4 Message size exceeds fixed limit");
        smtpd_log_reject(s, "reject", "MAIL", "message_size_limit", 552, "5.3.4", "Message size exceeds fixed limit", NULL);
        smtpd_tx_free(s);
        smtpd_count_error(s, CNT_MAIL);
        return;
    }
    if (!smtpd_queue_space_ok(s->worker, set->message_size_limit)) {
        msg_warn("not enough free space in the queue file system");
        smtpd_reply(s, "452 4.3.1 Insufficient system storage");
        smtpd_tx_free(s);
        smtpd_count_error(s, CNT_MAIL);
        return;
    }
    if (!set->delay_reject && restrict_stage_needed(set, RS_SENDER)) {
        static const enum restrict_stage stages[] = { RS_SENDER };
        s->state = SMTPD_WAIT;
        restrict_check(s, stages, 1, NULL, mail_checked);
        return;
    }
    struct restrict_result dunno = { .verdict = RV_DUNNO };
    mail_checked(s, &dunno);
}

static void mail_hooked(struct smtpd_session *s, const struct restrict_result *r);

static void mail_checked(struct smtpd_session *s, const struct restrict_result *r)
{
    s->state = SMTPD_CMD;
    if (!smtpd_refused(r)) {
        if (r->verdict == RV_DISCARD)
            s->tx->discard = 1;
        else if (r->verdict == RV_HOLD)
            s->tx->hold = 1;
        smtpd_hooks_then(s, PHASE_MAIL, s->tx->mail.address, mail_hooked);
        return;
    }
    mail_hooked(s, r);
}

static void mail_hooked(struct smtpd_session *s, const struct restrict_result *r)
{
    s->state = SMTPD_CMD;
    if (r->verdict == RV_REJECT || r->verdict == RV_DEFER) {
        smtpd_log_reject(s, "reject", "MAIL", r->restriction, r->code, r->enhanced, r->text, NULL);
        smtpd_reply_refusal(s, r->code, r->enhanced, r->text);
        smtpd_tx_free(s);
        smtpd_count_error(s, CNT_MAIL);
    } else {
        if (r->verdict == RV_DISCARD)
            s->tx->discard = 1;
        else if (r->verdict == RV_HOLD)
            s->tx->hold = 1;
        /* The policy protocol's "instance": one per accepted MAIL, unique
         * in the worker (Postfix: pid, time, sequence number). */
        struct timeval now;
        gettimeofday(&now, NULL);
        s->tx->instance = petrel_pool_printf(s->tx->pool, "%x.%lx.%lx.%x", s->worker->pid,
                                             (unsigned long)now.tv_sec, (unsigned long)now.tv_usec,
                                             s->worker->instance_seq++);
        if (s->tx->mail_line)
            smtpd_proxy_mail(s, s->tx->mail_line);
        smtpd_reply(s, "250 2.1.0 Ok");
    }
    smtpd_continue(s);
}

static void rcpt_checked(struct smtpd_session *s, const struct restrict_result *r);

static void cmd_rcpt(struct smtpd_session *s, const struct smtp_command *cmd)
{
    const struct smtpd_settings *set = s->set;
    if (s->tx == NULL) {
        smtpd_reply(s, "503 5.5.1 Error: need MAIL command");
        smtpd_count_error(s, CNT_RCPT);
        return;
    }
    if (s->bdat_state != BDAT_NONE) {
        /* The envelope is in the queue file since the first chunk. */
        smtpd_reply(s, "503 5.5.1 Error: RCPT after BDAT");
        smtpd_count_error(s, CNT_RCPT);
        return;
    }
    /* smtpd_client_recipient_rate_limit: counted for each RCPT TO: (Postfix) */
    if (strncasecmp(cmd->args, "TO:", 3) == 0 && smtpd_rate_rcpt(s) != 0) {
        smtpd_count_error(s, CNT_RCPT);
        return;
    }
    struct smtpd_tx *tx = s->tx;
    if (tx->nrcpts >= set->recipient_limit) {
        smtpd_reply(s, "452 4.5.3 Error: too many recipients");
        smtpd_count_error(s, CNT_RCPT);
        return;
    }
    struct smtp_parse_opts opts = parse_opts(s);
    struct smtp_reply_err err;
    struct smtp_rcpt_args args;
    if (smtp_parse_rcpt(cmd->args, &opts, tx->pool, &args, &err) != 0) {
        smtpd_reply_refusal(s, err.code, err.enhanced, err.text);
        smtpd_count_error(s, CNT_RCPT);
        return;
    }
    if ((s->ehlo_discard & SMTPD_EHLO_DSN) && (args.notify || args.orcpt)) {
        smtpd_reply(s, "501 5.7.1 DSN support is disabled");
        smtpd_count_error(s, CNT_RCPT);
        return;
    }
    if (tx->nrcpts == tx->rcpt_cap) {
        size_t cap = tx->rcpt_cap ? tx->rcpt_cap * 2 : 4;
        struct smtpd_rcpt *grown = petrel_pool_alloc(tx->pool, cap * sizeof(*grown));
        if (tx->nrcpts)
            memcpy(grown, tx->rcpts, tx->nrcpts * sizeof(*grown));
        tx->rcpts = grown;
        tx->rcpt_cap = cap;
    }
    /* Stage the recipient; it counts only once the checks accept it. */
    if (tx->mail_line)
        tx->rcpt_line = petrel_pool_printf(tx->pool, "RCPT %s", cmd->args);
    struct smtpd_rcpt *r = &tx->rcpts[tx->nrcpts];
    r->address = args.address;
    r->orcpt = args.orcpt;
    r->notify = args.notify;
    r->params = args.params;

    enum restrict_stage stages[5];
    int n = 0;
    if (set->delay_reject) {
        stages[n++] = RS_CLIENT;
        stages[n++] = RS_HELO;
        stages[n++] = RS_SENDER;
    }
    stages[n++] = RS_RELAY;
    stages[n++] = RS_RECIPIENT;
    s->state = SMTPD_WAIT;
    restrict_check(s, stages, n, r->address, rcpt_checked);
}

static void rcpt_hooked(struct smtpd_session *s, const struct restrict_result *res);
static void rcpt_rejected_reported(struct smtpd_session *s, const struct restrict_result *ignored);

static void rcpt_checked(struct smtpd_session *s, const struct restrict_result *res)
{
    struct smtpd_tx *tx = s->tx;
    s->state = SMTPD_CMD;
    if (!smtpd_refused(res)) {
        if (res->verdict == RV_DISCARD)
            tx->discard = 1;
        else if (res->verdict == RV_HOLD)
            tx->hold = 1;
        s->module_rcpt = tx->rcpts[tx->nrcpts].address;
        smtpd_hooks_then(s, PHASE_RCPT, tx->rcpts[tx->nrcpts].address, rcpt_hooked);
        return;
    }
    if (smtpd_phase_has_hooks(s, PHASE_RCPT_REJECTED)) {
        /* Modules that report refused recipients (milters asking with
         * SMFIP_RCPT_REJ) hear of it first; the refusal stands. */
        s->rcpt_refused = *res;
        s->rcpt_refused.enhanced = res->enhanced ? petrel_pool_strdup(tx->pool, res->enhanced) : NULL;
        s->rcpt_refused.text = res->text ? petrel_pool_strdup(tx->pool, res->text) : NULL;
        s->rcpt_refused.restriction = res->restriction ? petrel_pool_strdup(tx->pool, res->restriction) : NULL;
        const char *text = res->text ? res->text : "";
        s->rcpt_refusal = petrel_pool_printf(tx->pool, "%d %s %.*s", res->code,   /* its first line */
                                             res->enhanced ? res->enhanced : (res->code >= 500 ? "5.7.1" : "4.7.1"),
                                             (int)strcspn(text, "\r\n"), text);
        s->module_rcpt = tx->rcpts[tx->nrcpts].address;
        smtpd_run_phase(s, PHASE_RCPT_REJECTED, tx->rcpts[tx->nrcpts].address, rcpt_rejected_reported);
        return;
    }
    rcpt_hooked(s, res);
}

/* The modules heard of the refused recipient: the refusal stands. */
static void rcpt_rejected_reported(struct smtpd_session *s, const struct restrict_result *ignored)
{
    (void)ignored;
    s->rcpt_refusal = NULL;
    rcpt_hooked(s, &s->rcpt_refused);
}

/* The before-queue filter answered the recipient our checks accepted. */
static void rcpt_proxied(struct smtpd_session *s, int ok, const char *reply)
{
    s->state = SMTPD_CMD;
    if (ok) {
        s->tx->nrcpts++;
        smtpd_reply(s, "250 2.1.5 Ok");
    } else {
        smtpd_reply(s, "%s", reply);
        smtpd_count_error(s, CNT_RCPT);
    }
    smtpd_continue(s);
}

static void rcpt_hooked(struct smtpd_session *s, const struct restrict_result *res)
{
    struct smtpd_tx *tx = s->tx;
    s->state = SMTPD_CMD;
    s->module_rcpt = NULL;
    struct smtpd_rcpt *r = &tx->rcpts[tx->nrcpts];
    if (res->verdict == RV_REJECT || res->verdict == RV_DEFER) {
        smtpd_log_reject(s, "reject", "RCPT", res->restriction, res->code, res->enhanced, res->text, r->address);
        smtpd_reply_refusal(s, res->code, res->enhanced, res->text);
        smtpd_count_error(s, CNT_RCPT);
    } else {
        if (res->verdict == RV_DISCARD)
            tx->discard = 1;
        else if (res->verdict == RV_HOLD)
            tx->hold = 1;
        if (tx->mail_line) {
            /* Our checks accept it: now the filter's turn (Postfix
             * connects it at the first such recipient). */
            s->state = SMTPD_WAIT;
            smtpd_proxy_rcpt(s, tx->rcpt_line, rcpt_proxied);
            return;
        }
        tx->nrcpts++;
        smtpd_reply(s, "250 2.1.5 Ok");
    }
    smtpd_continue(s);
}

/* --- STARTTLS --- */

static void cmd_starttls(struct smtpd_session *s, const struct smtp_command *cmd)
{
    if (*cmd->args) {
        smtpd_reply(s, "501 5.5.4 Syntax: STARTTLS");
        smtpd_count_error(s, CNT_STARTTLS);
        return;
    }
    if (s->tls_active) {
        smtpd_reply(s, "554 5.5.1 Error: TLS already active");
        smtpd_count_error(s, CNT_STARTTLS);
        return;
    }
    if (s->set->tls_ctx == NULL || s->set->tls_level == TLS_LEVEL_NONE || (s->ehlo_discard & SMTPD_EHLO_STARTTLS)) {
        smtpd_reply(s, "502 5.5.1 Error: command not implemented");
        smtpd_count_error(s, CNT_STARTTLS);
        return;
    }
    if (s->tx) {
        smtpd_reply(s, "503 5.5.1 Error: MAIL transaction in progress");
        smtpd_count_error(s, CNT_STARTTLS);
        return;
    }
    if (smtpd_rate_starttls(s, 0) != 0) {
        smtpd_count_error(s, CNT_STARTTLS);
        return;
    }
    smtpd_reply(s, "220 2.0.0 Ready to start TLS");
    /* Whatever the client sent after STARTTLS, before the handshake, is
     * plaintext an attacker may have injected (CVE-2011-0411): drop it. */
    struct evbuffer *in = bufferevent_get_input(s->bev);
    size_t junk = evbuffer_get_length(in);
    if (junk) {
        msg_info("discarding %zu bytes of plaintext sent after STARTTLS by %s", junk, s->namaddr);
        evbuffer_drain(in, junk);
    }
    if (smtpd_tls_start(s, 0) != 0) {
        /* We are inside the input loop: it ends the session, not us. */
        msg_warn("cannot start TLS for %s", s->namaddr);
        smtpd_session_close_after_flush(s);
        return;
    }
    smtpd_session_attach(s);
    smtpd_io_enable(s);
    /* RFC 3207: forget everything learned before TLS. */
    s->helo = NULL;
    s->sasl_offer = NULL;   /* TLS changes the security options: EHLO asks again */
    s->sasl_offer_known = 0;
    s->esmtp = 0;
    s->bdat_state = BDAT_NONE;
    smtpd_tx_free(s);
}

/* --- the commands without a file of their own --- */

static void cmd_ehlo(struct smtpd_session *s, const struct smtp_command *cmd)
{
    cmd_helo(s, cmd, 1);
}

static void cmd_helo_only(struct smtpd_session *s, const struct smtp_command *cmd)
{
    cmd_helo(s, cmd, 0);
}

static void cmd_rset(struct smtpd_session *s, const struct smtp_command *cmd)
{
    if (*cmd->args) {
        smtpd_reply(s, "501 5.5.4 Syntax: RSET");
        smtpd_count_error(s, CNT_RSET);
        return;
    }
    smtpd_tx_free(s);
    s->xforward.set = 0;   /* Postfix's RSET forgets XFORWARD's values, transaction or not */
    s->bdat_state = BDAT_NONE;
    smtpd_reply(s, "250 2.0.0 Ok");
}

static void cmd_noop(struct smtpd_session *s, const struct smtp_command *cmd)
{
    smtpd_reply(s, "250 2.0.0 Ok");
}

static void cmd_quit(struct smtpd_session *s, const struct smtp_command *cmd)
{
    smtpd_reply(s, "221 2.0.0 Bye");
    smtpd_session_close_after_flush(s);
}

static void cmd_vrfy(struct smtpd_session *s, const struct smtp_command *cmd)
{
    if (s->set->disable_vrfy) {
        smtpd_reply(s, "502 5.5.1 VRFY command is disabled");
        smtpd_count_error(s, CNT_VRFY);
    } else if (*cmd->args == '\0') {
        smtpd_reply(s, "501 5.5.4 Syntax: VRFY address");
        smtpd_count_error(s, CNT_VRFY);
    } else {
        /* RFC 5321 3.5.3: cannot verify, but will accept and attempt delivery. */
        smtpd_reply(s, "252 2.0.0 Send some mail, I'll try my best");
    }
}

static void cmd_help(struct smtpd_session *s, const struct smtp_command *cmd)
{
    smtpd_reply(s, "214 2.0.0 Commands: EHLO HELO MAIL RCPT DATA BDAT RSET NOOP QUIT VRFY HELP STARTTLS");
}

static void cmd_etrn(struct smtpd_session *s, const struct smtp_command *cmd)
{
    smtpd_reply(s, "458 4.3.0 Unable to queue messages for the node");
    smtpd_count_error(s, CNT_ETRN);
}

static void unknown_hooked(struct smtpd_session *s, const struct restrict_result *r)
{
    s->state = SMTPD_CMD;
    if (smtpd_refused(r)) {
        smtpd_log_reject(s, "reject", "UNKNOWN", r->restriction, r->code, r->enhanced, r->text, NULL);
        smtpd_reply_refusal(s, r->code, r->enhanced, r->text);
    } else {
        smtpd_reply(s, "502 5.5.2 Error: command not recognized");
    }
    smtpd_count_error(s, CNT_UNKNOWN);
    smtpd_continue(s);
}

/* A command we do not know: the modules hear of it first (a milter's
 * SMFIC_UNKNOWN, as Postfix sends it), then 502 unless one refused it. */
static void cmd_unknown(struct smtpd_session *s, const struct smtp_command *cmd)
{
    smtpd_hooks_then(s, PHASE_UNKNOWN, s->command_line ? s->command_line : "", unknown_hooked);
}

/* ------------------------------------------------------------------ */
/* the command table                                                   */

/* What the dispatcher applies before and after a command's handler, as
 * Postfix's smtpd_cmd_table flags do. */
#define CMD_JUNK (1u << 0)       /* counts toward smtpd_junk_command_limit (Postfix's SMTPD_CMD_FLAG_LIMIT) */
#define CMD_PRE_TLS (1u << 1)    /* allowed before STARTTLS when TLS is required (SMTPD_CMD_FLAG_PRE_TLS) */
#define CMD_LAST (1u << 2)       /* may only end a pipelined group, RFC 2920 (SMTPD_CMD_FLAG_LAST) */
#define CMD_PIPELINED (1u << 3)  /* followed by more input by design, even from a HELO client:
                                    BDAT's chunk; STARTTLS drops what follows it */
#define CMD_NEED_HELO (1u << 4)  /* refused before HELO/EHLO when smtpd_helo_required */

struct smtpd_command {
    const char *name;            /* for "lost connection after NAME" and the logs */
    enum smtpd_counter counter;  /* its count in the disconnect line; its errors count there too */
    unsigned flags;
    void (*handler)(struct smtpd_session *s, const struct smtp_command *cmd);
};

/* Indexed by the parser's verb. EXPN and words we do not know are counted
 * as "unknown" in the disconnect line, as Postfix counts them (its command
 * table has ETRN and XFORWARD, not EXPN). */
static const struct smtpd_command commands[] = {
    [SMTP_VERB_UNKNOWN] = { "UNKNOWN", CNT_UNKNOWN, 0, cmd_unknown },
    [SMTP_VERB_HELO] = { "HELO", CNT_HELO, CMD_JUNK | CMD_PRE_TLS | CMD_LAST, cmd_helo_only },
    [SMTP_VERB_EHLO] = { "EHLO", CNT_EHLO, CMD_JUNK | CMD_PRE_TLS | CMD_LAST, cmd_ehlo },
    [SMTP_VERB_MAIL] = { "MAIL", CNT_MAIL, CMD_NEED_HELO, cmd_mail },
    [SMTP_VERB_RCPT] = { "RCPT", CNT_RCPT, 0, cmd_rcpt },
    [SMTP_VERB_DATA] = { "DATA", CNT_DATA, CMD_LAST, smtpd_cmd_data },
    [SMTP_VERB_BDAT] = { "BDAT", CNT_BDAT, CMD_PIPELINED, smtpd_cmd_bdat },
    [SMTP_VERB_RSET] = { "RSET", CNT_RSET, CMD_JUNK | CMD_PRE_TLS, cmd_rset },
    [SMTP_VERB_NOOP] = { "NOOP", CNT_NOOP, CMD_JUNK | CMD_PRE_TLS | CMD_LAST, cmd_noop },
    [SMTP_VERB_QUIT] = { "QUIT", CNT_QUIT, CMD_PRE_TLS | CMD_LAST, cmd_quit },
    [SMTP_VERB_VRFY] = { "VRFY", CNT_VRFY, CMD_JUNK | CMD_LAST, cmd_vrfy },
    [SMTP_VERB_EXPN] = { "UNKNOWN", CNT_UNKNOWN, CMD_LAST, cmd_unknown },
    [SMTP_VERB_HELP] = { "HELP", CNT_HELP, CMD_LAST, cmd_help },
    [SMTP_VERB_STARTTLS] = { "STARTTLS", CNT_STARTTLS, CMD_PRE_TLS | CMD_PIPELINED, cmd_starttls },
    [SMTP_VERB_AUTH] = { "AUTH", CNT_AUTH, CMD_LAST, smtpd_cmd_auth },
    [SMTP_VERB_ETRN] = { "ETRN", CNT_ETRN, CMD_JUNK | CMD_LAST, cmd_etrn },
    [SMTP_VERB_XFORWARD] = { "XFORWARD", CNT_XFORWARD, 0, smtpd_cmd_xforward },   /* xforward.c */
};

static const struct smtpd_command *command_for(enum smtp_verb verb)
{
    if ((size_t)verb < sizeof(commands) / sizeof(commands[0]) && commands[verb].handler)
        return &commands[verb];
    return &commands[SMTP_VERB_UNKNOWN];
}

/* smtpd_forbid_unauth_pipelining: more input behind a command that may only
 * end a group (RFC 2920); a HELO (not EHLO) client may not pipeline at all. */
static int is_pipelining_violation(struct smtpd_session *s, const struct smtpd_command *c)
{
    if (!s->set->forbid_unauth_pipelining)
        return 0;
    if (evbuffer_get_length(bufferevent_get_input(s->bev)) == 0)
        return 0;
    if (c->flags & CMD_LAST)
        return 1;
    if (c->flags & CMD_PIPELINED)
        return 0;
    return !s->esmtp;
}

void smtpd_handle_command(struct smtpd_session *s, char *line, size_t len)
{
    struct smtp_command cmd;
    const struct smtpd_settings *set = s->set;
    if (s->debug)
        msg_info("< %s: %.*s", s->namaddr, (int)(len > 500 ? 500 : len), line);
    s->command_line = line;
    /* An empty (or all-blank) line has no command word at all: Postfix
     * answers it as a syntax error (500), not as an unknown command (502). */
    size_t blanks = strspn(line, " \t");
    if (smtp_parse_command(line, len, &cmd) != 0 || blanks == len) {
        smtpd_count_command(s, CNT_UNKNOWN);
        s->last_command = "UNKNOWN";
        smtpd_reply(s, "500 5.5.2 Error: bad syntax");
        smtpd_count_error(s, CNT_UNKNOWN);
        return;
    }
    const struct smtpd_command *c = command_for(cmd.verb);
    /* Counted before anything may refuse it, as Postfix counts total_count:
     * a command refused here is in the total, not the successes. */
    smtpd_count_command(s, c->counter);
    if (is_pipelining_violation(s, c)) {
        msg_info("improper command pipelining after %s from %s: %.100s", smtp_verb_name(cmd.verb),
                 s->namaddr, line);
        smtpd_reply(s, "554 5.5.0 Error: SMTP protocol synchronization");
        smtpd_count_error(s, c->counter);
        s->last_command = smtp_verb_name(cmd.verb);
        smtpd_session_close_after_flush(s);
        return;
    }
    /* 8-bit bytes in commands are legal only with SMTPUTF8, inside addresses
     * (checked by the address parser); elsewhere Postfix is lenient. */
    if (tls_required(s) && !(c->flags & CMD_PRE_TLS)) {
        s->last_command = smtp_verb_name(cmd.verb);
        smtpd_reply(s, "530 5.7.0 Must issue a STARTTLS command first");
        smtpd_count_error(s, c->counter);
        return;
    }
    s->last_command = c->name;
    if (s->connect_refusal && cmd.verb != SMTP_VERB_QUIT && cmd.verb != SMTP_VERB_NOOP
        && cmd.verb != SMTP_VERB_RSET) {
        /* a module refused the connection (connect_hooked) */
        smtpd_reply(s, "%s", s->connect_refusal);
        smtpd_count_error(s, c->counter);
        return;
    }
    if ((c->flags & CMD_NEED_HELO) && set->helo_required && s->helo == NULL) {
        smtpd_reply(s, "503 5.5.1 Error: send HELO/EHLO first");
        smtpd_count_error(s, c->counter);
    } else {
        c->handler(s, &cmd);
    }
    /* Postfix's smtpd_junk_command_limit: the commands a client could repeat
     * forever without an error (HELO, EHLO, NOOP, VRFY, ETRN, RSET) count as
     * errors once more than the limit were sent, so the error limits end a
     * flood. A message received resets the count (and the errors). */
    if ((c->flags & CMD_JUNK) && s->state != SMTPD_CLOSING && s->junk++ > set->junk_command_limit)
        s->errors++;
}
