/*
 * What header/body checks (cleanup.c, Postfix's cleanup_act) and
 * milter_header_checks (milter_checks.c, Postfix's
 * cleanup_milter_hbc_extend) do alike: the log line of an action, the
 * reply of a REJECT, and what WARN, INFO, HOLD, DISCARD, FILTER, REDIRECT
 * and BCC do to the transaction. What each stops afterwards differs on
 * purpose and stays with its caller: header/body checks end themselves
 * and take the milters off the message; milter_header_checks end only
 * themselves (the milter's edit succeeds, and later milters still run).
 */
#include "config.h"

#include <string.h>

#include "lib/buf.h"
#include "lib/log.h"
#include "mail/hbc.h"
#include "smtpd/content_int.h"
#include "smtpd/smtpd.h"
#include "smtpd/smtpd_int.h"

/* Postfix's cleanup_act_log line; milter_header_checks' (milter_checks.c)
 * is the same with "milter-header-" before the action. */
void smtpd_checks_log(struct smtpd_session *s, const char *prefix, const char *action, const char *where,
                      const char *content, const char *text)
{
    struct smtpd_tx *tx = s->tx;
    struct buf b = BUF_INIT;
    buf_printf(&b, "%s: %s%s: %s %.200s from %s;", tx->queue_id, prefix, action, where, content,
               s->local_submission ? "local" : s->namaddr);
    buf_printf(&b, " from=<%s>", tx->mail.address);
    if (tx->nrcpts > 0)
        buf_printf(&b, " to=<%s>", tx->rcpts[0].address);
    if (!s->local_submission)
        buf_printf(&b, " proto=%s helo=<%s>", s->esmtp ? "ESMTP" : "SMTP", s->helo ? s->helo : "");
    if (text && *text)
        buf_printf(&b, ": %s", text);
    msg_info("%s", b.data);
    buf_free(&b);
}

const char *smtpd_checks_reject(petrel_pool *pool, const char *text, const char *param, struct restrict_result *r)
{
    const char *dsn, *rest;
    if (*text) {
        hbc_dsn_split("5.7.1", text, pool, &dsn, &rest);
        if (dsn[0] != '4' && dsn[0] != '5') {
            msg_warn("bad DSN action in %s -- need 4.x.x or 5.x.x", text);
            ((char *)dsn)[0] = '4';
        }
    } else {
        dsn = "5.7.1";
        rest = "message content rejected";
    }
    r->verdict = dsn[0] == '4' ? RV_DEFER : RV_REJECT;
    r->code = dsn[0] == '4' ? 451 : 550;
    r->enhanced = dsn;
    r->text = hbc_reply_text(pool, rest);
    r->restriction = param;
    return petrel_pool_printf(pool, "%s %s", dsn, rest);
}

/* An address a REDIRECT or BCC may put into the envelope: it has a local
 * part and a domain, and nothing an envelope field must not hold. */
static int envelope_address_ok(const char *a)
{
    size_t len = strlen(a);
    const char *at = strrchr(a, '@');
    if (len == 0 || len > 512 || at == NULL || at == a || at[1] == '\0')
        return 0;
    for (const char *p = a; *p; p++)
        if ((unsigned char)*p <= ' ' || *p == '<' || *p == '>' || (unsigned char)*p == 0x7f)
            return 0;
    return 1;
}

/* A FILTER destination: transport:nexthop, printable, no white space (it
 * may come from a $1 of the message, so it is checked like data). */
static int filter_ok(const char *f)
{
    if (strchr(f, ':') == NULL || *f == ':' || strlen(f) > 255)
        return 0;
    for (const char *p = f; *p; p++)
        if ((unsigned char)*p <= ' ' || (unsigned char)*p >= 0x7f)
            return 0;
    return 1;
}

/* REDIRECT's and BCC's argument: an address fit for the envelope, or
 * Postfix's warning ("bad REDIRECT target", "bad BCC address"). */
static int envelope_argument_ok(const struct hbc_action *a, const char *what, const char *param)
{
    if (envelope_address_ok(a->text))
        return 1;
    msg_warn("bad %s \"%s\" in %s map -- need user@domain", what, a->text, param);
    return 0;
}

int smtpd_checks_tx_action(struct smtpd_session *s, const struct hbc_action *a, const char *prefix,
                           const char *where, const char *content, const char *param)
{
    struct smtpd_tx *tx = s->tx;
    switch (a->command) {
    case HBC_WARN:
        smtpd_checks_log(s, prefix, "warning", where, content, a->text);
        return 1;
    case HBC_INFO:
        smtpd_checks_log(s, prefix, "info", where, content, a->text);
        return 1;
    case HBC_HOLD:
        if (tx->hold || tx->discard)
            return 0;
        smtpd_checks_log(s, prefix, "hold", where, content, a->text);
        tx->hold = 1;
        tx->hold_logged = 1;
        return 1;
    case HBC_DISCARD:
        smtpd_checks_log(s, prefix, "discard", where, content, a->text);
        tx->discard = 1;
        tx->discard_logged = 1;
        return 1;
    case HBC_FILTER:
        if (*a->text == '\0') {
            msg_warn("missing FILTER command argument in %s map", param);
            return 0;
        }
        if (!filter_ok(a->text)) {
            msg_warn("bad FILTER command %s in %s -- need transport:destination", a->text, param);
            return 0;
        }
        tx->filter = petrel_pool_strdup(tx->pool, a->text);
        tx->envelope_changed |= CHANGED_BY_CHECKS;
        smtpd_checks_log(s, prefix, "filter", where, content, a->text);
        return 1;
    case HBC_REDIRECT:
        if (!envelope_argument_ok(a, "REDIRECT target", param))
            return 0;
        tx->redirect = petrel_pool_strdup(tx->pool, a->text);
        tx->envelope_changed |= CHANGED_BY_CHECKS;
        smtpd_checks_log(s, prefix, "redirect", where, content, a->text);
        return 1;
    case HBC_BCC: {
        if (!envelope_argument_ok(a, "BCC address", param))
            return 0;
        struct smtpd_edit *e = smtpd_edit_append(tx->pool, &tx->edits, EDIT_RCPT_ADD);
        e->value = petrel_pool_strdup(tx->pool, a->text);
        e->notify = QUEUE_NOTIFY_NEVER;
        tx->checks_bcc++;
        tx->envelope_changed |= CHANGED_BY_CHECKS;
        smtpd_checks_log(s, prefix, "bcc", where, content, a->text);
        return 1;
    }
    default:
        break;   /* the caller's alone: never passed here */
    }
    return 0;
}
