/*
 * DATA and BDAT (RFC 3030), the end of the message and its commit.
 *
 * Both commands take one path into the content: smtpd_data_restrictions,
 * the modules' data hooks, the automatic BCC lookups (bcc.c), then the
 * queue file (envelope.c). DATA content
 * goes through the dot-reader (smtp_data.c); BDAT chunks are read raw and
 * their line ends normalised the same way. At the end of the message come
 * smtpd_end_of_data_restrictions and the end-of-message hooks, then the
 * commit: queue_writer_commit (fsync of the file and of incoming/) runs on
 * the worker's thread pool and only its completion, back on the loop,
 * answers 250.
 */
#include "config.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>

#include "lib/log.h"
#include "module/metrics_core.h"
#include "lib/workq.h"
#include "lib/xalloc.h"
#include "smtpd/content_int.h"
#include "smtpd/restrict.h"
#include "smtpd/smtpd_int.h"

/* --- DATA and the first BDAT of a transaction: one path for both ---
 * smtpd_data_restrictions, then the modules' data hooks, then the BCC
 * lookups and the queue file; only then does DATA answer 354 or BDAT read its chunk into the file.
 * A refused BDAT still reads (and discards) its chunk before answering. */

static void data_checked(struct smtpd_session *s, const struct restrict_result *r);
static void data_hooked(struct smtpd_session *s, const struct restrict_result *r);
static void bdat_skip(struct smtpd_session *s, const char *reply);
static void bcc_looked_up(struct smtpd_session *s, int failed);

static int data_preconditions(struct smtpd_session *s, const char *verb, enum smtpd_counter c)
{
    if (s->tx == NULL) {
        smtpd_reply(s, "503 5.5.1 Error: need MAIL command");
        smtpd_count_error(s, c);
        return -1;
    }
    if (s->tx->nrcpts == 0) {
        smtpd_reply(s, "554 5.5.1 Error: no valid recipients");
        smtpd_log_reject(s, "reject", verb, "no_valid_recipients", 554, "5.5.1", "Error: no valid recipients", NULL);
        smtpd_count_error(s, c);
        return -1;
    }
    return 0;
}

/* c is CNT_DATA or CNT_BDAT: the command that starts the content. */
static void data_start(struct smtpd_session *s, enum smtpd_counter c)
{
    s->tx->eom_counter = c;
    s->state = SMTPD_WAIT;
    if (!restrict_list_empty(s->set->data_restrictions)) {
        static const enum restrict_stage stages[] = { RS_DATA };
        restrict_check(s, stages, 1, NULL, data_checked);
        return;
    }
    struct restrict_result ok = { .verdict = RV_DUNNO };
    data_checked(s, &ok);
}

void smtpd_cmd_data(struct smtpd_session *s, const struct smtp_command *cmd)
{
    if (s->bdat_state != BDAT_NONE) {
        smtpd_reply(s, "503 5.5.1 Error: DATA after BDAT");
        smtpd_count_error(s, CNT_DATA);
        return;
    }
    if (*cmd->args) {
        smtpd_reply(s, "501 5.5.4 Syntax: DATA");
        smtpd_count_error(s, CNT_DATA);
        return;
    }
    if (data_preconditions(s, "DATA", CNT_DATA) != 0)
        return;
    data_start(s, CNT_DATA);
}

static void data_checked(struct smtpd_session *s, const struct restrict_result *r)
{
    s->state = SMTPD_CMD;
    if (!smtpd_refused(r)) {
        smtpd_hooks_then(s, PHASE_DATA, NULL, data_hooked);
        return;
    }
    data_hooked(s, r);
}

/* Postfix's check before a BDAT chunk is read: a chunk that would take the
 * message past message_size_limit is skipped (read and dropped) and
 * answered "552 5.3.4 Chunk exceeds message size limit", which ends the
 * transaction; one far past it (beyond about 1.5 times the limit) is not
 * read at all: the session ends. -1 when the session ended. */
static int bdat_size_check(struct smtpd_session *s)
{
    unsigned long long limit = s->set->message_size_limit, total = s->tx->bdat_total, size = s->bdat_chunk_size;
    if (limit == 0 || (total <= limit && size <= limit - total))
        return 0;
    const char *id = s->tx->queue_id[0] ? s->tx->queue_id : "NOQUEUE";
    msg_warn("%s: BDAT request from %s exceeds message size limit", id, s->namaddr);
    if (total / 1.5 > limit - size / 1.5) {
        msg_warn("%s: too much BDAT content -- disabling further input from %s", id, s->namaddr);
        smtpd_count_error(s, CNT_BDAT);
        smtpd_session_shutdown(s, "552 5.3.4 Chunk exceeds message size limit");
        return -1;
    }
    s->bdat_refusal = "552 5.3.4 Chunk exceeds message size limit";
    return 0;
}

/* Content may flow: DATA answers 354, BDAT reads its chunk. */
static void content_ready(struct smtpd_session *s, int bdat)
{
    if (bdat) {
        s->bdat_state = BDAT_OK;
        if (bdat_size_check(s) != 0)
            return;
        s->state = SMTPD_BDAT;
        smtpd_continue(s);
        return;
    }
    enum data_bare_lf_policy policy = s->bare_lf_excluded ? DATA_BARE_LF_ALLOW
                                                          : (enum data_bare_lf_policy)s->set->bare_lf_policy;
    smtp_data_init(&s->data, policy, s->set->message_size_limit);
    smtpd_reply(s, "354 End data with <CR><LF>.<CR><LF>");
    s->state = SMTPD_DATA;
    smtpd_continue(s);
}

/* The before-queue filter answered DATA: our Received header goes first,
 * as to a queue file. */
static void data_proxied(struct smtpd_session *s, int ok, const char *reply)
{
    int bdat = s->tx->eom_counter == CNT_BDAT;
    s->state = SMTPD_CMD;
    if (!ok) {
        if (bdat) {
            bdat_skip(s, petrel_pool_strdup(s->scratch, reply));
        } else {
            smtpd_reply(s, "%s", reply);
            smtpd_count_error(s, CNT_DATA);
        }
        smtpd_continue(s);
        return;
    }
    struct buf received = BUF_INIT;
    smtpd_prepend_text(s, &received);   /* access tables' PREPEND headers first, as Postfix */
    smtpd_received_text(s, &received);
    smtpd_proxy_content(s, received.data, received.len);
    buf_free(&received);
    content_ready(s, bdat);
}

static void data_hooked(struct smtpd_session *s, const struct restrict_result *r)
{
    int bdat = s->tx->eom_counter == CNT_BDAT;
    enum smtpd_counter c = bdat ? CNT_BDAT : CNT_DATA;
    s->state = SMTPD_CMD;
    if (r->verdict == RV_REJECT || r->verdict == RV_DEFER) {
        smtpd_log_reject(s, "reject", bdat ? "BDAT" : "DATA", r->restriction, r->code, r->enhanced, r->text, NULL);
        if (bdat) {
            bdat_skip(s, smtpd_reply_format(s, r->code, r->enhanced, r->text));
        } else {
            smtpd_reply_refusal(s, r->code, r->enhanced, r->text);
            smtpd_count_error(s, c);
        }
        smtpd_continue(s);
        return;
    }
    if (s->tx->proxy) {
        /* smtpd_proxy_filter: no queue file here; the filter's DATA. */
        s->state = SMTPD_WAIT;
        smtpd_proxy_data(s, data_proxied);
        return;
    }
    /* The automatic BCC recipients go into the queue file's envelope: a
     * remote table's answer is waited for first (bcc.c). */
    smtpd_bcc_lookup(s, bcc_looked_up);
}

/* failed: a BCC map could not answer; the message is not accepted, with
 * Postfix's reply for it (CLEANUP_STAT_WRITE), as when the file cannot be
 * created. */
static void bcc_looked_up(struct smtpd_session *s, int failed)
{
    int bdat = s->tx->eom_counter == CNT_BDAT;
    enum smtpd_counter c = bdat ? CNT_BDAT : CNT_DATA;
    s->state = SMTPD_CMD;
    if (failed || smtpd_open_queue_file(s) != 0) {
        if (bdat) {
            bdat_skip(s, "451 4.3.0 Error: queue file write error");
        } else {
            smtpd_reply(s, "451 4.3.0 Error: queue file write error");
            smtpd_tx_free(s);
            smtpd_count_error(s, c);
        }
        smtpd_continue(s);
        return;
    }
    content_ready(s, bdat);
}

/* --- end of message: commit on the thread pool, answer on the loop --- */

struct commit_job {
    struct smtpd_session *session;
    struct smtpd_tx *tx;
    struct smtpd_worker *worker;
    unsigned long long size;
    int result, err;
    int hold_failed;
    double commit_seconds;        /* queue_writer_commit's time (the fsyncs) */
};

/* As Postfix does, a client that got a message through is forgiven its
 * earlier errors and junk commands. */
static void message_received(struct smtpd_session *s)
{
    s->errors = 0;
    s->junk = 0;
    s->bdat_state = BDAT_NONE;
}

static void commit_work(void *arg)
{
    struct commit_job *job = arg;
    struct timespec before, after;
    clock_gettime(CLOCK_MONOTONIC, &before);
    job->result = queue_writer_commit(job->tx->writer);
    job->err = errno;
    clock_gettime(CLOCK_MONOTONIC, &after);
    job->commit_seconds = (double)(after.tv_sec - before.tv_sec) + (after.tv_nsec - before.tv_nsec) / 1e9;
    if (job->result == 0 && job->tx->hold) {
        /* Quarantine: the message waits in hold/ until an admin releases it.
         * A failed move leaves it in incoming/, where it is still safe. */
        if (queue_move_durable(job->worker->queue, job->tx->queue_id, QDIR_INCOMING, QDIR_HOLD) != 0)
            job->hold_failed = errno;
    }
}

static void commit_done(void *arg, int cancelled)
{
    struct commit_job *job = arg;
    struct smtpd_tx *tx = job->tx;
    if (job->result != 0) {
        msg_warn("%s: queue file commit failed: %s", tx->queue_id, strerror(job->err));
        queue_writer_abort(tx->writer);
        tx->writer = NULL;
    } else if (cancelled || !smtpd_plugin_wants_queued(job->session)) {
        queue_writer_free(tx->writer);
        tx->writer = NULL;
    }
    /* Else the queued hooks may read the committed file through the
     * writer (message_api.c), which keeps its lock, so the queue manager
     * cannot take and remove the file before they returned: freed below. */
    tx->commit_job = NULL;
    if (cancelled) {
        if (job->result == 0)
            msg_info("%s: client went away before the reply; message kept", tx->queue_id);
        petrel_pool_destroy(tx->pool);
        free(job);
        return;
    }
    struct smtpd_session *s = job->session;
    s->state = SMTPD_CMD;
    if (job->result == 0) {
        if (job->hold_failed)
            msg_warn("%s: cannot move to the hold queue: %s", tx->queue_id, strerror(job->hold_failed));
        msg_info("%s: from=<%s>, size=%llu, nrcpt=%zu (queued%s)", tx->queue_id, tx->mail.address,
                 job->size, tx->nrcpts, tx->hold && !job->hold_failed ? ", on hold" : "");
        smtpd_reply(s, "250 2.0.0 Ok: queued as %s", tx->queue_id);
        const char *labels[] = { s->set->service_name };
        core_metric_add(s->worker->metrics, CM_SMTPD_MESSAGES, labels, 1);
        core_metric_add(s->worker->metrics, CM_SMTPD_BYTES, labels, (double)job->size);
        core_metric_add(s->worker->metrics, CM_SMTPD_RECIPIENTS, labels, (double)tx->nrcpts);
        core_metric_observe(s->worker->metrics, CM_QUEUE_COMMIT_SECONDS, NULL, job->commit_seconds);
        smtpd_plugin_queued(s, tx->queue_id);
        queue_writer_free(tx->writer);
        tx->writer = NULL;
        message_received(s);
    } else {
        smtpd_reply(s, "451 4.3.0 Error: queue file write error");
        smtpd_count_error(s, s->counters[CNT_BDAT] ? CNT_BDAT : CNT_DATA);
    }
    free(job);
    smtpd_tx_free(s);
    smtpd_continue(s);
}

static void eom_hooked(struct smtpd_session *s, const struct restrict_result *r);
static void headers_rewritten(struct smtpd_session *s, int ok);
static void eod_checked(struct smtpd_session *s, const struct restrict_result *r);

static void content_finished(struct smtpd_session *s);

/* A step that waited for the content checks (in SMTPD_WAIT) goes on as it
 * would have without the wait, as if inside the input loop, so that a
 * smtpd_continue() or a close in it leaves the session to the one call at
 * the end (which frees a closed session). */
static void after_checks(struct smtpd_session *s, void (*step)(struct smtpd_session *))
{
    s->state = SMTPD_CMD;
    s->in_input_loop = 1;
    step(s);
    s->in_input_loop = 0;
    smtpd_continue(s);
}

static void content_finished_late(struct smtpd_session *s)
{
    after_checks(s, content_finished);
}

/* The content checks answered while the reader had stopped: it reads on. */
static void content_resumed(struct smtpd_session *s)
{
    smtpd_continue(s);
}

void smtpd_finish_message(struct smtpd_session *s, enum smtpd_counter c)
{
    s->tx->eom_counter = c;
    /* The last header or line may still wait for a remote check table. */
    smtpd_cleanup_input_end(s);
    if (smtpd_cleanup_then(s, content_finished_late)) {
        s->state = SMTPD_WAIT;
        return;
    }
    content_finished(s);
}

/* The content stage is done with the whole message. */
static void content_finished(struct smtpd_session *s)
{
    struct smtpd_tx *tx = s->tx;
    enum smtpd_counter c = tx->eom_counter;
    const char *verb = c == CNT_BDAT ? "BDAT" : "DATA";
    smtpd_cleanup_end(s);
    unsigned long long size = tx->writer ? queue_writer_content_size(tx->writer) : tx->proxy_size;
    int oversize = c == CNT_DATA ? s->data.oversize : 0;
    if (oversize || (s->set->message_size_limit && size > s->set->message_size_limit))
        smtpd_tx_error(tx, TX_ERROR_SIZE);
    /* A header or body hook refused while the content streamed in. */
    if (smtpd_refused(&tx->content_verdict))
        smtpd_tx_error(tx, TX_ERROR_CONTENT);
    switch (tx->error) {
    case TX_ERROR_BARE_LF:
        /* smtpd_forbid_bare_newline = reject */
        smtpd_reply(s, "%d 5.5.2 Error: bare <LF> received", s->set->bare_lf_reject_code);
        smtpd_log_reject(s, "reject", verb, "smtpd_forbid_bare_newline", s->set->bare_lf_reject_code, "5.5.2", "Error: bare <LF> received", NULL);
        smtpd_tx_free(s);
        smtpd_count_error(s, c);
        return;
    case TX_ERROR_SIZE:
        smtpd_reply(s, "552 5.3.4 Message size exceeds fixed limit");
        smtpd_log_reject(s, "reject", verb, "message_size_limit", 552, "5.3.4", "Message size exceeds fixed limit", NULL);
        smtpd_tx_free(s);
        smtpd_count_error(s, c);
        return;
    case TX_ERROR_IO:
        msg_warn("%s: queue file write error: %s", tx->queue_id, strerror(tx->io_errno));
        smtpd_reply(s, "451 4.3.0 Error: queue file write error");
        smtpd_tx_free(s);
        smtpd_count_error(s, c);
        return;
    case TX_ERROR_CONTENT:
        eom_hooked(s, &tx->content_verdict);
        return;
    case TX_OK:
        break;
    }
    if (tx->content_verdict.verdict == RV_HOLD)
        tx->hold = 1;
    else if (tx->content_verdict.verdict == RV_DISCARD)
        tx->discard = 1;
    if (!restrict_list_empty(s->set->eod_restrictions)) {
        static const enum restrict_stage stages[] = { RS_EOD };
        s->state = SMTPD_WAIT;
        restrict_check(s, stages, 1, NULL, eod_checked);
        return;
    }
    tx->in_eom = 1;
    smtpd_hooks_then(s, PHASE_EOM, NULL, eom_hooked);
}

/* smtpd_end_of_data_restrictions decided; the modules' end-of-message hooks come next. */
static void eod_checked(struct smtpd_session *s, const struct restrict_result *r)
{
    if (smtpd_refused(r)) {
        eom_hooked(s, r);
        return;
    }
    if (r->verdict == RV_HOLD)
        s->tx->hold = 1;
    else if (r->verdict == RV_DISCARD)
        s->tx->discard = 1;
    s->tx->in_eom = 1;
    smtpd_hooks_then(s, PHASE_EOM, NULL, eom_hooked);
}

/* The before-queue filter's reply to ".", which is ours (Postfix's
 * proxy-accept / proxy-reject log line). */
static void dot_proxied(struct smtpd_session *s, int ok, const char *reply)
{
    struct smtpd_tx *tx = s->tx;
    s->state = SMTPD_CMD;
    msg_info("proxy-%s: END-OF-MESSAGE: %s; from=<%s> to=<%s> proto=%s helo=<%s>", ok ? "accept" : "reject", reply,
             tx->mail.address, tx->nrcpts ? tx->rcpts[tx->nrcpts - 1].address : "", s->esmtp ? "ESMTP" : "SMTP",
             s->helo ? s->helo : "");
    smtpd_reply(s, "%s", reply);
    if (ok)
        message_received(s);
    else
        smtpd_count_error(s, tx->eom_counter);
    smtpd_tx_free(s);   /* closes the filter's connection (QUIT) */
    smtpd_continue(s);
}

/* What a queue file would carry cannot reach one before a proxy filter:
 * Postfix refuses HOLD, DISCARD and the like there with a warning, and so
 * do we (for the modules' too). Then the filter gets ".". */
static void proxy_end_of_message(struct smtpd_session *s)
{
    struct smtpd_tx *tx = s->tx;
    if (tx->hold || tx->discard || smtpd_content_edited(s))
        msg_warn("%s: with smtpd_proxy_filter specified, %s is unavailable: the filter decides", s->namaddr,
                 tx->hold ? "HOLD" : tx->discard ? "DISCARD" : "changing the message");
    s->state = SMTPD_WAIT;
    smtpd_proxy_dot(s, dot_proxied);
}

static void eom_hooked(struct smtpd_session *s, const struct restrict_result *r)
{
    struct smtpd_tx *tx = s->tx;
    enum smtpd_counter c = tx->eom_counter;
    s->state = SMTPD_CMD;
    tx->in_eom = 0;
    smtpd_message_objects_end(s);
    if (!smtpd_refused(r) && smtpd_refused(&tx->milter_verdict)) {
        /* milter_header_checks refused a milter's header (milter_checks.c
         * logged it, as Postfix's cleanup does): that is the answer. */
        smtpd_count_reject(s, "END-OF-MESSAGE", tx->milter_verdict.restriction, tx->milter_verdict.code);
        smtpd_reply_refusal(s, tx->milter_verdict.code, tx->milter_verdict.enhanced, tx->milter_verdict.text);
        smtpd_tx_free(s);
        smtpd_count_error(s, c);
        smtpd_continue(s);
        return;
    }
    if (tx->body_errno && !smtpd_refused(r)) {
        /* A module's new body could not be written (message_api.c logged
         * why): whatever the module answered, nothing truncated is queued. */
        smtpd_reply(s, "451 4.3.0 Error: queue file write error");
        smtpd_tx_free(s);
        smtpd_count_error(s, c);
        smtpd_continue(s);
        return;
    }
    if (smtpd_refused(r)) {
        /* Header and body checks logged their own line, as Postfix's cleanup does. */
        if (!(r == &tx->content_verdict && tx->verdict_logged))
            smtpd_log_reject(s, "reject", "END-OF-MESSAGE", r->restriction, r->code, r->enhanced, r->text, NULL);
        else
            smtpd_count_reject(s, "END-OF-MESSAGE", r->restriction, r->code);
        smtpd_reply_refusal(s, r->code, r->enhanced, r->text);
        smtpd_tx_free(s);
        smtpd_count_error(s, c);
        smtpd_continue(s);
        return;
    }
    if (r->verdict == RV_HOLD)
        tx->hold = 1;
    else if (r->verdict == RV_DISCARD)
        tx->discard = 1;
    if (tx->proxy) {
        proxy_end_of_message(s);
        return;
    }
    smtpd_content_rewrite_headers(s, headers_rewritten);
}

/* Header address rewriting is done; the edits are applied and the message committed. */
static void headers_rewritten(struct smtpd_session *s, int ok)
{
    struct smtpd_tx *tx = s->tx;
    enum smtpd_counter c = tx->eom_counter;
    if (!ok) {
        smtpd_reply(s, "451 4.3.0 Error: queue file write error");
        smtpd_tx_free(s);
        smtpd_count_error(s, c);
        smtpd_continue(s);
        return;
    }
    if (!tx->discard && smtpd_content_edited(s) &&
        smtpd_content_rewrite(s, smtpd_create_writer, smtpd_write_received) != 0) {
        msg_warn("%s: cannot apply the modules' changes: %s", tx->queue_id, strerror(errno));
        smtpd_reply(s, "451 4.3.0 Error: queue file write error");
        smtpd_tx_free(s);
        smtpd_count_error(s, c);
        smtpd_continue(s);
        return;
    }
    if (!tx->discard && tx->envelope_changes != tx->envelope_written && smtpd_envelope_rewrite(s) != 0) {
        msg_warn("%s: cannot apply REDIRECT or BCC: %s", tx->queue_id, strerror(errno));
        smtpd_reply(s, "451 4.3.0 Error: queue file write error");
        smtpd_tx_free(s);
        smtpd_count_error(s, c);
        smtpd_continue(s);
        return;
    }
    if (tx->discard) {
        /* Postfix's DISCARD: the client is told the message was taken. */
        if (!tx->discard_logged)
            msg_info("%s: discard: END-OF-MESSAGE from %s: %s; from=<%s> proto=%s helo=<%s>", tx->queue_id,
                 s->namaddr, "discarded by restriction or module", tx->mail.address, s->esmtp ? "ESMTP" : "SMTP",
                 s->helo ? s->helo : "");
        smtpd_reply(s, "250 2.0.0 Ok: queued as %s", tx->queue_id);
        message_received(s);
        smtpd_tx_free(s);
        smtpd_continue(s);
        return;
    }
    if (tx->hold && !tx->hold_logged)
        msg_info("%s: hold: END-OF-MESSAGE from %s: %s; from=<%s> proto=%s helo=<%s>", tx->queue_id, s->namaddr,
                 tx->edits.quarantine_reason ? tx->edits.quarantine_reason : "held by restriction or module",
                 tx->mail.address, s->esmtp ? "ESMTP" : "SMTP", s->helo ? s->helo : "");
    unsigned long long size = queue_writer_content_size(tx->writer);
    struct commit_job *job = xcalloc(1, sizeof(*job));
    job->session = s;
    job->tx = tx;
    job->worker = s->worker;
    job->size = size;
    s->state = SMTPD_WAIT;
    tx->commit_job = workq_submit(s->worker->workq, commit_work, commit_done, job);
}

static int emit_content(void *ctx, const char *data, size_t n)
{
    struct smtpd_session *s = ctx;
    struct smtpd_tx *tx = s->tx;
    if (tx->proxy) {
        tx->proxy_size += n;
        smtpd_proxy_content(s, data, n);
        return 0;
    }
    if (tx->io_errno)
        return 0;
    smtpd_cleanup_feed(s, data, n);
    return 0;
}

/* Feeds buffered input to the DATA reader; returns 1 when the message
 * ended. While a content check waits for a remote table, the input stays
 * where it is (the check's answer calls smtpd_continue). */
int smtpd_consume_data(struct smtpd_session *s)
{
    struct evbuffer *in = bufferevent_get_input(s->bev);
    while (evbuffer_get_length(in) > 0) {
        if (s->tx && smtpd_cleanup_waiting(s) && smtpd_cleanup_then(s, content_resumed))
            return 0;
        struct evbuffer_iovec vec;
        if (evbuffer_peek(in, -1, NULL, &vec, 1) < 1)
            break;
        int done = 0;
        size_t used = smtp_data_feed(&s->data, vec.iov_base, vec.iov_len, emit_content, s, &done);
        evbuffer_drain(in, used);
        if (done) {
            if (smtp_data_bare_lf_violation(&s->data))
                smtpd_tx_error(s->tx, TX_ERROR_BARE_LF);
            return 1;
        }
    }
    return 0;
}

/* --- BDAT (RFC 3030): raw chunks; line ends are normalised as DATA's are --- */

static void bdat_write(struct smtpd_session *s, const char *p, size_t n)
{
    struct smtpd_tx *tx = s->tx;
    /* Bare CR or LF would let a later hop see a different message: a bare
     * LF becomes CRLF, a CR not followed by LF becomes a space
     * (cleanup_replace_stray_cr_lf). A CR at a chunk end waits for the
     * next chunk's first byte. */
    char out[8192];
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        char c = p[i];
        if (o + 3 > sizeof(out)) {
            emit_content(s, out, o);
            o = 0;
        }
        if (tx->bdat_pending_cr) {
            tx->bdat_pending_cr = 0;
            if (c == '\n') {
                out[o++] = '\r';
                out[o++] = '\n';
                continue;
            }
            out[o++] = ' ';
        }
        if (c == '\r') {
            tx->bdat_pending_cr = 1;
        } else if (c == '\n') {
            if (s->set->bare_lf_policy == DATA_BARE_LF_REJECT && !s->bare_lf_excluded)
                smtpd_tx_error(tx, TX_ERROR_BARE_LF);
            out[o++] = '\r';
            out[o++] = '\n';
        } else {
            out[o++] = c;
        }
    }
    if (o)
        emit_content(s, out, o);
}

/* Refuses the chunk of the BDAT being handled: it is read and discarded (so
 * the session stays in step with the client), then answered with reply. A
 * refused chunk ends the transaction; until BDAT LAST or RSET every later
 * chunk is read and answered 551, as in Postfix. */
static void bdat_skip(struct smtpd_session *s, const char *reply)
{
    s->bdat_refusal = reply;
    s->state = SMTPD_BDAT;
}

static void bdat_chunk_done(struct smtpd_session *s);

static void bdat_chunk_done_late(struct smtpd_session *s)
{
    after_checks(s, bdat_chunk_done);
}

static void bdat_chunk_done(struct smtpd_session *s)
{
    struct smtpd_tx *tx = s->tx;
    s->state = SMTPD_CMD;
    /* A chunk is answered once the content checks are done with it. */
    if (tx && !s->bdat_refusal && smtpd_cleanup_then(s, bdat_chunk_done_late)) {
        s->state = SMTPD_WAIT;
        return;
    }
    if (s->bdat_refusal) {
        smtpd_reply(s, "%s", s->bdat_refusal);
        s->bdat_refusal = NULL;
        smtpd_count_error(s, CNT_BDAT);
        smtpd_tx_free(s);
        s->bdat_state = s->bdat_last ? BDAT_NONE : BDAT_ERROR;
        return;
    }
    if (s->set->message_size_limit && tx->bdat_total > s->set->message_size_limit) {
        smtpd_reply(s, "552 5.3.4 Message size exceeds fixed limit");
        smtpd_log_reject(s, "reject", "BDAT", "message_size_limit", 552, "5.3.4", "Message size exceeds fixed limit", NULL);
        smtpd_count_error(s, CNT_BDAT);
        smtpd_tx_free(s);
        s->bdat_state = s->bdat_last ? BDAT_NONE : BDAT_ERROR;
        return;
    }
    if (!s->bdat_last) {
        smtpd_reply(s, "250 2.0.0 Ok: %llu bytes", s->bdat_chunk_size);
        return;
    }
    s->bdat_state = BDAT_NONE;
    if (tx->bdat_pending_cr) {
        tx->bdat_pending_cr = 0;
        emit_content(s, " ", 1);
    }
    smtpd_finish_message(s, CNT_BDAT);
}

void smtpd_consume_bdat(struct smtpd_session *s)
{
    struct evbuffer *in = bufferevent_get_input(s->bev);
    while (s->bdat_remaining > 0 && evbuffer_get_length(in) > 0) {
        if (s->tx && smtpd_cleanup_waiting(s) && smtpd_cleanup_then(s, content_resumed))
            return;
        struct evbuffer_iovec vec;
        if (evbuffer_peek(in, -1, NULL, &vec, 1) < 1)
            break;
        size_t n = vec.iov_len;
        if (n > s->bdat_remaining)
            n = (size_t)s->bdat_remaining;
        struct smtpd_tx *tx = s->tx;
        if (tx && !s->bdat_refusal) {
            unsigned long long limit = s->set->message_size_limit;
            if (!limit || tx->bdat_total < limit)
                bdat_write(s, vec.iov_base, n);
            tx->bdat_total += n;
        }
        evbuffer_drain(in, n);
        s->bdat_remaining -= n;
    }
    if (s->bdat_remaining == 0)
        bdat_chunk_done(s);
}

void smtpd_cmd_bdat(struct smtpd_session *s, const struct smtp_command *cmd)
{
    unsigned long long size;
    int last;
    struct smtp_reply_err err;
    if (s->ehlo_discard & SMTPD_EHLO_CHUNKING) {
        /* Postfix hangs up: what follows is raw content, not commands */
        smtpd_count_error(s, CNT_BDAT);
        smtpd_session_shutdown(s, "521 5.5.1 Error: command not implemented");
        return;
    }
    if (smtp_parse_bdat(cmd->args, &size, &last, &err) != 0) {
        /* Without a valid size we cannot find the next command: give up. */
        smtpd_reply_refusal(s, err.code, err.enhanced, err.text);
        smtpd_count_error(s, CNT_BDAT);
        smtpd_session_shutdown(s, "421 4.5.0 Error: unrecoverable BDAT syntax error");
        return;
    }
    s->bdat_remaining = size;
    s->bdat_last = last;
    s->bdat_chunk_size = size;
    s->bdat_refusal = NULL;
    if (size == 0 && !last) {
        /* Empty chunks would be a free NOOP (Postfix refuses them too). */
        msg_warn("%s: null BDAT request from %s", s->tx && s->tx->queue_id[0] ? s->tx->queue_id : "NOQUEUE",
                 s->namaddr);
        bdat_skip(s, "551 5.7.1 Null BDAT request");
        return;
    }
    if (s->bdat_state == BDAT_ERROR) {
        bdat_skip(s, petrel_pool_printf(s->scratch, "551 5.0.0 Discarded %llu bytes after earlier error", size));
        return;
    }
    if (s->tx == NULL) {
        bdat_skip(s, "503 5.5.1 Error: need MAIL command");
        return;
    }
    if (s->bdat_state == BDAT_NONE) {
        /* The first chunk: as DATA, through the data restrictions and hooks. */
        if (s->tx->nrcpts == 0) {
            smtpd_log_reject(s, "reject", "BDAT", "no_valid_recipients", 554, "5.5.1", "Error: no valid recipients", NULL);
            bdat_skip(s, "554 5.5.1 Error: no valid recipients");
            return;
        }
        data_start(s, CNT_BDAT);
        return;
    }
    if (bdat_size_check(s) != 0)
        return;
    s->state = SMTPD_BDAT;
}
