/*
 * Postfix's log lines about an SMTP command's fate, shared by the session,
 * its commands and the restriction engine: "ID: reject: RCPT from
 * name[addr]: 554 5.7.1 text; from=<a> to=<b> proto=ESMTP helo=<h>" and
 * the same shape for hold, discard, warn, info, redirect, bcc, filter and
 * reject_warning (Postfix's log_whatsup), which pflogsumm reads; and the
 * one formatter of a refusal's reply that both the client and these lines
 * get (smtpd_reply_format).
 */
#include "config.h"

#include <stdio.h>
#include <string.h>

#include "lib/buf.h"
#include "lib/log.h"
#include "module/metrics.h"
#include "module/metrics_core.h"
#include "smtpd/smtpd_int.h"

static const char *tx_sender_for_log(struct smtpd_session *s)
{
    return s->tx && s->tx->mail.address ? s->tx->mail.address : NULL;
}

/* A refusal's reply: "550 5.7.1 text", or for a text of several lines
 * (separated by '\n': a module's petrel_set_reply_lines) every line with
 * the code and enhanced code, "550-5.7.1 a\r\n550 5.7.1 b". On s->scratch. */
const char *smtpd_reply_format(struct smtpd_session *s, int code, const char *enhanced, const char *text)
{
    if (text == NULL || enhanced == NULL || strchr(text, '\n') == NULL)
        return petrel_pool_printf(s->scratch, "%d %s %s", code, enhanced, text);
    size_t lines = 1;
    for (const char *p = text; (p = strchr(p, '\n')) != NULL; p++)
        lines++;
    size_t prefix = strlen(enhanced) + 16;
    char *out = petrel_pool_alloc(s->scratch, strlen(text) + lines * (prefix + 2) + 1);
    size_t o = 0;
    for (const char *p = text;;) {
        const char *nl = strchr(p, '\n');
        size_t n = nl ? (size_t)(nl - p) : strlen(p);
        o += (size_t)sprintf(out + o, "%d%c%s ", code, nl ? '-' : ' ', enhanced);
        memcpy(out + o, p, n);
        o += n;
        if (nl == NULL)
            break;
        out[o++] = '\r';
        out[o++] = '\n';
        p = nl + 1;
    }
    out[o] = '\0';
    return out;
}

/* Postfix's reject log line, read by pflogsumm:
 * "NOQUEUE: reject: RCPT from name[addr]: 554 5.7.1 <x>: Relay access denied; from=<a> to=<b> proto=ESMTP helo=<h>" */
void smtpd_count_reject(struct smtpd_session *s, const char *verb, const char *restriction, int code)
{
    /* Every label is bounded: verb is one of the fixed SMTP stage words
       (CONNECT, HELO, EHLO, MAIL, RCPT, DATA, BDAT, END-OF-MESSAGE,
       STARTTLS), restriction a name from the configuration or the code,
       the code a number from 400 to 599 (anything else is "other"). */
    char code_text[8];
    if (code >= 400 && code <= 599)
        snprintf(code_text, sizeof(code_text), "%d", code);
    else
        snprintf(code_text, sizeof(code_text), "other");
    const char *labels[] = { s->set->service_name, verb, code >= 500 ? "5xx" : "4xx",
                             restriction && *restriction ? restriction : "other", code_text };
    core_metric_add(s->worker->metrics, CM_SMTPD_REJECTS, labels, 1);
}

void smtpd_log_reject(struct smtpd_session *s, const char *what, const char *verb, const char *restriction, int code,
                      const char *enhanced, const char *text, const char *rcpt)
{
    /* A multi-line reply is logged whole, its CRLFs as "??" (as Postfix). */
    char line[1024];
    snprintf(line, sizeof(line), "%s", smtpd_reply_format(s, code, enhanced, text));
    for (char *c = line; *c; c++)
        if (*c == '\r' || *c == '\n')
            *c = '?';
    if (strcmp(what, "reject") == 0) {
        smtpd_count_reject(s, verb, restriction, code);
        /* The /status page's recent rejects: what the log line says, shorter. */
        struct buf recent = BUF_INIT;
        buf_printf(&recent, "%s %s from %s: %s", s->set->service_name, verb, s->namaddr, line);
        if (tx_sender_for_log(s))
            buf_printf(&recent, " from=<%s>", tx_sender_for_log(s));
        if (rcpt)
            buf_printf(&recent, " to=<%s>", rcpt);
        module_metrics_recent_add(s->worker->metrics, recent.data);
        buf_free(&recent);
    }
    smtpd_log_event(s, what, verb, line, rcpt);
}

void smtpd_log_event(struct smtpd_session *s, const char *what, const char *verb, const char *text,
                     const char *rcpt)
{
    char extra[1024];
    size_t len = 0;
    const char *sender = tx_sender_for_log(s);
    extra[0] = '\0';
    if (sender)
        len += (size_t)snprintf(extra + len, sizeof(extra) - len, " from=<%s>", sender);
    if (rcpt && len < sizeof(extra))
        len += (size_t)snprintf(extra + len, sizeof(extra) - len, " to=<%s>", rcpt);
    if (len < sizeof(extra))
        len += (size_t)snprintf(extra + len, sizeof(extra) - len, " proto=%s", s->esmtp ? "ESMTP" : "SMTP");
    if (s->helo && len < sizeof(extra))
        snprintf(extra + len, sizeof(extra) - len, " helo=<%s>", s->helo);
    const char *qid = s->tx && s->tx->queue_id[0] ? s->tx->queue_id : "NOQUEUE";
    msg_info("%s: %s: %s from %s: %s;%s", qid, what, verb, s->namaddr, text, extra);
}

