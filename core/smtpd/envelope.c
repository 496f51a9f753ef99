/*
 * The envelope writer: the queue file of a transaction (sender, recipients
 * with their DSN parameters, the automatic BCC recipients bcc.c found, the
 * client's identity), its first log line ("ID: client=...") and our Received:
 * header, the first header of the content (header_checks see it, as they
 * see Postfix's). Used when DATA or the first BDAT opens the file, and
 * again when edits make data.c write a new one.
 */
#include "config.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>

#include "lib/buf.h"
#include "lib/log.h"
#include "smtpd/content_int.h"
#include "smtpd/smtpd_int.h"

/* A certificate name inside a Received: comment: nothing that would end the
 * comment or the quoted string early. */
static const char *comment_text(struct smtpd_session *s, const char *text)
{
    char *out = petrel_pool_strdup(s->tx->pool, text ? text : "");
    for (char *p = out; *p; p++)
        if (*p == '(' || *p == ')' || *p == '\\' || *p == '"' || (unsigned char)*p < 0x20)
            *p = '?';
    return out;
}

/* Received: header (RFC 5321 4.4), Postfix's layout. */
void smtpd_received_text(struct smtpd_session *s, struct buf *out)
{
    struct smtpd_tx *tx = s->tx;
    char date[64];
    time_t now = time(NULL);
    struct tm tm;
    localtime_r(&now, &tm);
    strftime(date, sizeof(date), "%a, %d %b %Y %H:%M:%S %z (%Z)", &tm);
    struct buf b = BUF_INIT;
    if (s->local_submission) {
        /* Postfix's pickup form: the submitting user by uid, not by name. */
        buf_printf(&b, "Received: by %s (%s, from userid %ld)\r\n\tid %s; %s\r\n", s->set->myhostname,
                   s->set->mail_name, s->local_uid, tx->queue_id, date);
    } else {
        /* XFORWARD (xforward.c): the filter's original client, else ours */
        const char *helo = smtpd_xforward_helo(s), *addr = smtpd_xforward_addr(s);
        buf_printf(&b, "Received: from %s (%s [%s])\r\n", helo ? helo : addr, smtpd_xforward_name(s), addr);
        if (s->tls_info && s->set->tls_received_header) {
            /* smtpd_tls_received_header (Postfix's layout) */
            buf_printf(&b, "\t(using %s)\r\n", s->tls_info);
            if (s->ccert.present)
                buf_printf(&b, "\t(Client CN \"%s\", Issuer \"%s\" (%s))\r\n", comment_text(s, s->ccert.subject),
                           comment_text(s, s->ccert.issuer), s->ccert.verified ? "verified OK" : "not verified");
            else if (s->set->tls_ask_ccert)
                buf_puts(&b, "\t(Client did not present a certificate)\r\n");
            else
                buf_puts(&b, "\t(No client certificate requested)\r\n");
        }
        if (s->sasl_username && s->set->sasl_authenticated_header) {
            /* Postfix's comment; the login cannot end it early or break the header. */
            buf_puts(&b, "\t(Authenticated sender: ");
            for (const char *p = s->sasl_username; *p; p++)
                buf_putc(&b, (*p == '(' || *p == ')' || *p == '\\' || (unsigned char)*p < 0x20) ? '?' : *p);
            buf_puts(&b, ")\r\n");
        }
        /* Without a queue file (a before-queue filter gets the message)
         * there is no queue ID to name, as with Postfix. */
        buf_printf(&b, "\tby %s (%s) with %s%s%s", s->set->myhostname, s->set->mail_name,
                   tx->mail.smtputf8 ? (s->tls_active ? "UTF8SMTPS" : "UTF8SMTP") : smtpd_xforward_proto(s),
                   tx->queue_id[0] ? " id " : "", tx->queue_id);
        if (tx->nrcpts == 1)
            buf_printf(&b, "\r\n\tfor <%s>; %s\r\n", tx->rcpts[0].address, date);
        else
            buf_printf(&b, ";\r\n\t%s\r\n", date);
    }
    /* Every field is clean already (the HELO name is neutered, addresses
     * parsed); the header still goes through the one writer that never
     * lets a bare CR or LF out. */
    smtpd_header_write(out, b.data, b.len);
    buf_free(&b);
}

/* The headers of PREPEND actions of access tables and policy servers:
 * above our Received: header, in the order they fired (Postfix). */
void smtpd_prepend_text(struct smtpd_session *s, struct buf *out)
{
    struct smtpd_tx *tx = s->tx;
    struct buf b = BUF_INIT;
    for (size_t i = 0; i < tx->nprepend; i++)
        buf_printf(&b, "%s\r\n", tx->prepend[i]);
    if (b.len)
        smtpd_header_write(out, b.data, b.len);
    buf_free(&b);
}

static void write_header_line(struct smtpd_session *s, const char *text)
{
    struct buf b = BUF_INIT;
    smtpd_header_write(&b, text, strlen(text));
    buf_append(&b, "\r\n", 2);
    if (queue_writer_write(s->tx->writer, b.data, b.len) != 0)
        smtpd_tx_io_error(s->tx, errno);
    buf_free(&b);
}

void smtpd_write_received(struct smtpd_session *s)
{
    struct smtpd_tx *tx = s->tx;
    if (tx->nprepend) {
        struct buf b = BUF_INIT;
        smtpd_prepend_text(s, &b);
        if (queue_writer_write(tx->writer, b.data, b.len) != 0)
            smtpd_tx_io_error(tx, errno);
        buf_free(&b);
    }
    if (tx->received_prepend)
        write_header_line(s, tx->received_prepend);
    if (tx->received_action == RECEIVED_REPLACE) {
        write_header_line(s, tx->received_replacement);
    } else if (tx->received_action == RECEIVED_KEEP) {
        struct buf b = BUF_INIT;
        smtpd_received_text(s, &b);
        if (queue_writer_write(tx->writer, b.data, b.len) != 0)
            smtpd_tx_io_error(tx, errno);
        buf_free(&b);
    }
}

/* A queue file for the transaction's envelope as it stands; its ID goes to
 * tx->queue_id. With replacing (the transaction's file, when the envelope
 * or the headers changed at end of message) the envelope replaces that
 * file's instead (queue_writer_set_envelope: written after the content at
 * commit, nothing copied), so the ID never changes; replacing is returned. */
struct queue_writer *smtpd_create_writer(struct smtpd_session *s, struct queue_writer *replacing)
{
    struct smtpd_tx *tx = s->tx;
    /* The transaction's recipients, then the BCC actions' and the
     * automatic ones (always_bcc, sender_bcc_maps, recipient_bcc_maps,
     * looked up before the first file: bcc.c): extra recipients of the
     * queued copy, not announced in the headers, NOTIFY=NEVER as Postfix's
     * cleanup adds them. */
    const struct smtpd_settings *set = s->set;
    int mappings = !(set->receive_override & RO_NO_ADDRESS_MAPPINGS);
    const char **bcc = tx->auto_bcc;
    size_t nbcc = tx->nauto_bcc;
    size_t total = tx->nrcpts + tx->nbcc + nbcc;
    struct queue_rcpt *qr = petrel_pool_zalloc(tx->pool, total * sizeof(*qr));
    for (size_t i = 0; i < tx->nrcpts; i++) {
        qr[i].address = tx->rcpts[i].address;
        qr[i].orcpt = tx->rcpts[i].orcpt;
        qr[i].notify = tx->rcpts[i].notify;
    }
    for (size_t i = 0; i < tx->nbcc; i++) {
        qr[tx->nrcpts + i].address = tx->bcc[i];
        qr[tx->nrcpts + i].notify = QUEUE_NOTIFY_NEVER;
    }
    for (size_t i = 0; i < nbcc; i++) {
        qr[tx->nrcpts + tx->nbcc + i].address = bcc[i];
        qr[tx->nrcpts + tx->nbcc + i].notify = QUEUE_NOTIFY_NEVER;
    }
    size_t nqr = total;
    if (tx->redirect) {
        /* REDIRECT: every recipient goes to this address instead (Postfix's
         * queue manager does it at delivery; here the envelope says so). The
         * original recipient is kept as ORCPT for a single one. */
        struct queue_rcpt *one = petrel_pool_zalloc(tx->pool, sizeof(*one));
        one->address = tx->redirect;
        if (tx->nrcpts == 1)
            one->orcpt = tx->rcpts[0].orcpt ? tx->rcpts[0].orcpt
                                            : petrel_pool_printf(tx->pool, "rfc822;%s", tx->rcpts[0].address);
        qr = one;
        nqr = 1;
    }
    tx->envelope_written = tx->envelope_changes;
    struct queue_envelope env;
    memset(&env, 0, sizeof(env));
    env.sender = tx->mail.address;
    if (!mappings)
        env.flags |= QUEUE_F_NO_ADDRESS_MAPPINGS;
    if (tx->redirect)
        env.flags |= QUEUE_F_REDIRECTED;
    /* A FILTER action overrides content_filter (Postfix's precedence). */
    const char *filter = tx->filter ? tx->filter : set->content_filter;
    env.content_filter = filter && *filter ? filter : NULL;
    env.envid = tx->mail.envid;
    env.ret = tx->mail.ret;
    if (tx->mail.body == SMTP_BODY_8BITMIME)
        env.flags |= QUEUE_F_8BITMIME;
    if (tx->mail.smtputf8)
        env.flags |= QUEUE_F_SMTPUTF8;
    /* The client as Postfix records it for delivery (pipe's ${client_*}):
     * XFORWARD's original client when a filter gave one (xforward.c). */
    env.client_name = smtpd_xforward_name(s);
    env.client_addr = smtpd_xforward_addr(s);
    env.client_port = (s->xforward.set & XFORWARD_F_PORT) ? s->xforward.port : s->port;
    env.helo = smtpd_xforward_helo(s);
    env.protocol = smtpd_xforward_proto(s);
    /* Postfix's log_ident: the forwarded queue ID, kept for the next filter */
    const char *ident = (s->xforward.set & XFORWARD_F_IDENT) ? s->xforward.ident : "";
    env.log_ident = *ident && strcmp(ident, "unknown") != 0 ? ident : NULL;
    env.tls_info = s->tls_info;
    env.sasl_method = s->sasl_method;
    env.sasl_username = s->sasl_username;
    if (s->local_submission)
        env.origin = s->listener->maildrop_origin;
    struct timeval tv;
    gettimeofday(&tv, NULL);
    env.arrival_sec = tv.tv_sec;
    env.arrival_usec = tv.tv_usec;
    env.rcpt_count = nqr;
    env.rcpts = qr;
    if (replacing) {
        if (queue_writer_set_envelope(replacing, &env) != 0) {
            msg_warn("%s: cannot change the envelope: %s", tx->queue_id, strerror(errno));
            return NULL;
        }
        return replacing;
    }
    struct queue_writer *w = queue_writer_create(s->worker->queue, &s->worker->idgen, &env, tx->queue_id);
    if (w == NULL)
        msg_warn("NOQUEUE: cannot create queue file: %s", strerror(errno));
    return w;
}

int smtpd_open_queue_file(struct smtpd_session *s)
{
    struct smtpd_tx *tx = s->tx;
    if (tx->writer) {
        /* One queue file per transaction: a second would leak the first. */
        msg_warn("%s: internal error: queue file already open for %s", tx->queue_id, s->namaddr);
        errno = EEXIST;
        return -1;
    }
    tx->writer = smtpd_create_writer(s, NULL);
    if (tx->writer == NULL)
        return -1;
    if (s->local_submission)
        msg_info("%s: uid=%ld from=<%s>", tx->queue_id, s->local_uid, tx->mail.address);
    else {
        char forwarded[700];
        smtpd_xforward_log_suffix(s, forwarded, sizeof(forwarded));
        if (s->sasl_username)
            msg_info("%s: client=%s, sasl_method=%s, sasl_username=%s%s", tx->queue_id, s->namaddr, s->sasl_method,
                     s->sasl_username, forwarded);
        else
            msg_info("%s: client=%s%s", tx->queue_id, s->namaddr, forwarded);
    }
    struct buf prepend = BUF_INIT, received = BUF_INIT;
    smtpd_prepend_text(s, &prepend);
    smtpd_received_text(s, &received);
    smtpd_cleanup_begin(s, &prepend, received.data, received.len);
    buf_free(&prepend);
    buf_free(&received);
    return 0;
}

/* REDIRECT or BCC fired after the queue file was opened (in
 * smtpd_end_of_data_restrictions): the file gets the new envelope, written
 * after the content at commit, under the same queue ID; the content is not
 * copied. 0, or -1 with errno. */
int smtpd_envelope_rewrite(struct smtpd_session *s)
{
    struct smtpd_tx *tx = s->tx;
    if (smtpd_create_writer(s, tx->writer) == NULL)
        return -1;
    msg_info("%s: envelope changed by an access action: new envelope appended to the queue file", tx->queue_id);
    return 0;
}
