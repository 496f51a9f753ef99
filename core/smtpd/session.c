/*
 * The SMTP session engine: one state machine per connection, driven by
 * libevent bufferevents (a TLS filter is stacked on the socket after
 * STARTTLS). Input is processed one command at a time, in order; replies
 * are appended to the output buffer and written once the callback that
 * produced them returns, so a pipelined group is answered in one write.
 * Without TLS, session_io.c reads and writes the socket itself (fewer
 * system calls than libevent's socket bufferevent).
 *
 * Whenever a step is asynchronous (a restriction that waits, the fsync of
 * a queue file), the session enters SMTPD_WAIT and stops reading; the step's
 * continuation puts it back and resumes input processing. Nothing that was
 * received after a command is looked at before that command is answered.
 *
 * A message is answered 250 only after its queue file and directory entry
 * are on stable storage (queue_writer_commit on the worker thread pool).
 *
 * Memory per session is bounded whatever the client sends: a command line
 * and everything its handling allocates live in a scratch pool that is
 * reset before the next command line is read (or in the transaction's pool,
 * freed with the transaction); strings a later command replaces (the HELO
 * name, the SASL login) have pools of their own, reset on replacement; input
 * is buffered only up to a watermark, with or without TLS, and no command is
 * read while OUTPUT_LIMIT bytes of replies wait for the client. Repetition
 * is limited as Postfix limits it: smtpd_junk_command_limit, then the error
 * limits.
 *
 * This file holds the session's life (its memory, the input loop,
 * timeouts, shutdown, close) and what every command shares (replies, the
 * reject log line, error counts, the transaction). The start of a session
 * (accept, PROXY header, the client's name, connect checks, the greeting)
 * is in connect.c. The commands themselves are elsewhere: commands.c (the command table and the envelope commands),
 * auth.c (AUTH), data.c (DATA, BDAT, end of message and commit) and
 * envelope.c (the queue file's envelope and our Received: header).
 */
#include "config.h"

#include <errno.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/event.h>
#include <openssl/err.h>

#include "config/cfg.h"
#include "lib/log.h"
#include "module/metrics_core.h"
#include "lib/workq.h"
#include "lib/xalloc.h"
#include "smtpd/anvil.h"
#include "smtpd/content_int.h"
#include "smtpd/haproxy_read.h"
#include "smtpd/restrict.h"
#include "smtpd/smtpd_int.h"
#include "tables/table.h"

static void filter_cancel(struct smtpd_session *s);

#define SESSION_POOL_SIZE 2048
#define TX_POOL_SIZE 2048
#define SCRATCH_POOL_SIZE 4096
/* Replies not yet taken by the client: past this, no further command is
 * read until the client has read them (a client that pipelines and never
 * reads would otherwise grow the output buffer without end). */
#define OUTPUT_LIMIT (256 * 1024)

static void session_read_cb(struct bufferevent *bev, void *arg);
static void session_write_cb(struct bufferevent *bev, void *arg);
static void session_event_cb(struct bufferevent *bev, short what, void *arg);
static void session_process_input(struct smtpd_session *s);

/* ------------------------------------------------------------------ */
/* replies and logging                                                 */

/* A reply after which the command goes on: 3yz (RFC 5321 4.2.1: DATA's 354,
 * AUTH's 334, RFC 4954), and STARTTLS's 220 before its handshake (Postfix's
 * starttls_cmd returns once the handshake is done). */
static int is_intermediate_reply(const struct smtpd_session *s, const char *line)
{
    if (line[0] == '3')
        return 1;
    return s->unanswered_counter == CNT_STARTTLS && strncmp(line, "220", 3) == 0;
}

void smtpd_reply(struct smtpd_session *s, const char *fmt, ...)
{
    struct evbuffer *out = bufferevent_get_output(s->bev);
    char stack[1024];
    char *line = stack;
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(stack, sizeof(stack), fmt, ap);
    va_end(ap);
    if (n < 0)
        return;
    if ((size_t)n >= sizeof(stack)) {
        line = xmalloc((size_t)n + 1);
        va_start(ap, fmt);
        vsnprintf(line, (size_t)n + 1, fmt, ap);
        va_end(ap);
    }
    /* soft_bounce: every 5xx reply goes out as 4xx, its enhanced code too,
     * on every line of it (Postfix's smtpd_chat_reply) */
    if (s->set->soft_bounce) {
        for (char *p = line; p && *p; ) {
            if (p[0] == '5' && p[1] && p[2] && (p[3] == ' ' || p[3] == '-' || p[3] == '\0')) {
                p[0] = '4';
                if (p[3] && p[4] == '5' && p[5] == '.')
                    p[4] = '4';
            }
            char *next = strstr(p, "\r\n");
            p = next ? next + 2 : NULL;
        }
    }
    if (s->debug)
        msg_info("> %s: %s", s->namaddr, line);
    /* Postfix disconnects after any 421 or 521 reply (a restriction may
     * answer one: access(5)). */
    if (strncmp(line, "421", 3) == 0 || strncmp(line, "521", 3) == 0)
        s->hangup_after_reply = 1;
    if (s->unanswered && !is_intermediate_reply(s, line))
        s->unanswered = 0;
    const char *reply_class = core_metric_reply_class(line);
    if (reply_class) {
        const char *labels[] = { s->set->service_name, reply_class };
        core_metric_add(s->worker->metrics, CM_SMTPD_REPLIES, labels, 1);
    }
    evbuffer_add(out, line, (size_t)n);
    evbuffer_add(out, "\r\n", 2);
    if (line != stack)
        free(line);
}

void smtpd_reply_refusal(struct smtpd_session *s, int code, const char *enhanced, const char *text)
{
    smtpd_reply(s, "%s", smtpd_reply_format(s, code, enhanced, text));
}

static const char *counter_names[CNT_MAX] = {
    "helo", "ehlo", "xforward", "starttls", "auth", "mail", "rcpt", "data", "bdat", "rset", "noop",
    "vrfy", "etrn", "quit", "help", "unknown",
};

/* The session ends while a command waits for its answer: the client left
 * or timed out while the command's check was pending (Petrel drops the
 * check: there is no verdict), or inside its content, AUTH exchange or TLS
 * handshake, or the server shuts down. Postfix counts a command a success
 * when its action returns (smtpd_proto: success_count); a read or write
 * that fails inside the action leaves by longjmp, so such a command counts
 * in the total only: "rcpt=0/1", not "rcpt=1". (Postfix, synchronous,
 * finishes a check before it can see that the client left; it counts that
 * command by the check's verdict. Petrel gives no verdict it did not
 * reach.) A message whose commit is running is the exception: it stays
 * queued, and Postfix would have counted its DATA a success. */
static void charge_unanswered(struct smtpd_session *s)
{
    if (!s->unanswered)
        return;
    s->unanswered = 0;
    if (s->tx && s->tx->commit_job)
        return;
    s->counter_errors[s->unanswered_counter]++;
}

void smtpd_command_answered(struct smtpd_session *s)
{
    s->unanswered = 0;
}

/* Postfix 3.x disconnect summary: "ehlo=1 mail=1 rcpt=0/1 data=1 quit=1 commands=4/5". */
static void log_disconnect(struct smtpd_session *s)
{
    if (s->local_submission || s->disconnect_logged)
        return;   /* no connect line either: see session_start; or said already */
    s->disconnect_logged = 1;
    charge_unanswered(s);
    char line[512];
    size_t len = 0;
    unsigned total = 0, total_ok = 0;
    for (int i = 0; i < CNT_MAX; i++) {
        unsigned n = s->counters[i];
        if (n == 0)
            continue;
        unsigned ok_count = n - s->counter_errors[i];
        total += n;
        total_ok += ok_count;
        int w = ok_count == n ? snprintf(line + len, sizeof(line) - len, " %s=%u", counter_names[i], n)
                              : snprintf(line + len, sizeof(line) - len, " %s=%u/%u", counter_names[i],
                                         ok_count, n);
        if (w > 0 && (size_t)w < sizeof(line) - len)
            len += (size_t)w;
    }
    line[len] = '\0';
    if (total_ok == total)
        msg_info("disconnect from %s%s commands=%u", s->namaddr, line, total);
    else
        msg_info("disconnect from %s%s commands=%u/%u", s->namaddr, line, total_ok, total);
}

void smtpd_count_command(struct smtpd_session *s, enum smtpd_counter c)
{
    s->counters[c]++;
    s->unanswered = 1;
    s->unanswered_counter = c;
    const char *labels[] = { s->set->service_name, counter_names[c] };
    core_metric_add(s->worker->metrics, CM_SMTPD_COMMANDS, labels, 1);
}

void smtpd_count_error(struct smtpd_session *s, enum smtpd_counter c)
{
    s->counter_errors[c]++;
    s->errors++;
    if (s->unanswered && s->unanswered_counter == c)
        s->unanswered = 0;   /* its outcome is known */
}

/* Runs the modules' hooks of a phase, then next(); without hooks, next() at once. */
void smtpd_hooks_then(struct smtpd_session *s, enum smtpd_phase phase, const char *arg,
                      smtpd_phase_done_fn *next)
{
    if (smtpd_phase_has_hooks(s, phase)) {
        smtpd_run_phase(s, phase, arg, next);
        return;
    }
    struct restrict_result dunno = { .verdict = RV_DUNNO };
    s->state = SMTPD_WAIT;
    next(s, &dunno);
}

/* ------------------------------------------------------------------ */
/* transactions                                                        */

void smtpd_tx_free(struct smtpd_session *s)
{
    struct smtpd_tx *tx = s->tx;
    if (tx == NULL)
        return;
    s->xforward.set = 0;   /* XFORWARD's values last one transaction (xforward.c) */
    smtpd_message_tx_end(tx);
    if (tx->writer)
        queue_writer_abort(tx->writer);
    petrel_pool_destroy(tx->pool);
    s->tx = NULL;
    if (s->policy_conns)
        smtpd_policy_release(s);
    smtpd_plugin_tx(s);
}

struct smtpd_tx *smtpd_tx_new(struct smtpd_session *s)
{
    smtpd_tx_free(s);
    petrel_pool *pool = petrel_pool_create(TX_POOL_SIZE);
    struct smtpd_tx *tx = petrel_pool_zalloc(pool, sizeof(*tx));
    tx->pool = pool;
    s->tx = tx;
    smtpd_plugin_tx(s);
    return tx;
}

/* ------------------------------------------------------------------ */
/* session lifecycle                                                   */

static void session_link(struct smtpd_worker *w, struct smtpd_session *s)
{
    s->next = w->sessions;
    if (w->sessions)
        w->sessions->prev = s;
    w->sessions = s;
    w->nsessions++;
}

static void session_unlink(struct smtpd_worker *w, struct smtpd_session *s)
{
    if (s->prev)
        s->prev->next = s->next;
    else
        w->sessions = s->next;
    if (s->next)
        s->next->prev = s->prev;
    w->nsessions--;
}

/* Best effort, non-blocking: sends what a closing TLS session still has
 * below its filter. The socket bufferevent keeps the start of its output
 * frozen (evbuffer_write and evbuffer_copyout refuse it), so peek at it.
 * A client too slow to take a final short reply loses it, as on close. */
static void flush_ciphertext(struct bufferevent *under)
{
    struct evbuffer *out = bufferevent_get_output(under);
    evutil_socket_t fd = bufferevent_getfd(under);
    struct evbuffer_iovec vec[8];
    int n = evbuffer_peek(out, -1, NULL, vec, 8);
    if (fd < 0 || n <= 0)
        return;
    struct iovec iov[8];
    int count = n < 8 ? n : 8;
    for (int i = 0; i < count; i++) {
        iov[i].iov_base = vec[i].iov_base;
        iov[i].iov_len = vec[i].iov_len;
    }
    struct msghdr msg;
    memset(&msg, 0, sizeof(msg));
    msg.msg_iov = iov;
    msg.msg_iovlen = (size_t)count;
    (void)sendmsg(fd, &msg, MSG_DONTWAIT | MSG_NOSIGNAL);
}

void smtpd_session_free(struct smtpd_session *s)
{
    struct smtpd_worker *w = s->worker;
    if (s->tx && s->tx->commit_job) {
        /* The fsync is running on a thread: its completion frees the
         * transaction. The message stays queued (it is complete); the
         * client never saw 250 and may send it again, which is allowed. */
        workq_cancel(s->tx->commit_job);
        s->tx = NULL;
    }
    const char *ended[] = { s->set->service_name, s->tls_active ? "yes" : "no" };
    core_metric_add(w->metrics, CM_SMTPD_SESSIONS, ended, 1);
    smtpd_sasl_session_gone(s);   /* the back-end's end() still sees the session */
    smtpd_plugin_session_gone(s);
    restrict_cancel(s);
    filter_cancel(s);
    tbl_scope_free(s->lookups);
    s->lookups = NULL;
    tbl_scope_free(s->ehlo_lookups);   /* cancels a discard-maps lookup in flight */
    s->ehlo_lookups = NULL;
    smtpd_peer_cancel(s);
    if (s->sleep_timer)
        event_free(s->sleep_timer);
    smtpd_tx_free(s);
    smtpd_policy_release(s);
    smtpd_proxy_read_cancel(s->proxy);
    if (s->client_key)
        anvil_disconnect(w->anvil, w->index, s->client_key);
    if (s->counted_in_service)
        anvil_service_release(w->anvil, w->index, s->listener->service_key);   /* wakes waiting listeners */
    if (s->delay_timer)
        event_free(s->delay_timer);
    if (s->record_timer)
        event_free(s->record_timer);
    if (s->bev) {
        /* After STARTTLS our output goes through the TLS filter into the
         * socket bufferevent below it, which only writes when the loop runs:
         * the last reply (221, 421, 554) is still there as ciphertext when
         * the filter reports its own buffer empty. Freeing would drop it. */
        struct bufferevent *under = bufferevent_get_underlying(s->bev);
        if (under)
            flush_ciphertext(under);
        smtpd_io_free(s);
        bufferevent_free(s->bev);   /* closes the socket (and frees the TLS state) */
    } else if (s->fd >= 0) {
        close(s->fd);
    }
    session_unlink(w, s);
    petrel_pool_destroy(s->scratch);
    if (s->helo_pool)
        petrel_pool_destroy(s->helo_pool);
    if (s->login_pool)
        petrel_pool_destroy(s->login_pool);
    petrel_pool_destroy(s->pool);
    smtpd_worker_check_drained(w);
}

void smtpd_worker_check_drained(struct smtpd_worker *w)
{
    if (w->draining && w->nsessions == 0 && w->nscreening == 0)
        event_base_loopexit(w->base, NULL);
}

/* Ends the session after the pending output has been written. */
void smtpd_session_close_after_flush(struct smtpd_session *s)
{
    s->state = SMTPD_CLOSING;
    smtpd_io_stop_input(s);
    /* Inside the input loop the session must outlive this call: the loop
     * (and smtpd_handle_command below it) still use it, and frees it at its end.
     * This matters with TLS, whose filter passes our reply on at once and
     * leaves the output empty here. */
    if (s->in_input_loop)
        return;
    if (evbuffer_get_length(bufferevent_get_output(s->bev)) == 0) {
        log_disconnect(s);
        smtpd_session_free(s);
    }
    /* otherwise session_write_cb frees it when the buffer drains */
}

void smtpd_session_shutdown(struct smtpd_session *s, const char *reply)
{
    if (s->state == SMTPD_CLOSING)
        return;
    if (reply)
        smtpd_reply(s, "%s", reply);
    smtpd_session_close_after_flush(s);
}

static void lost_connection(struct smtpd_session *s, const char *why)
{
    msg_info("%s after %s from %s", why, s->last_command ? s->last_command : "CONNECT", s->namaddr);
    log_disconnect(s);
    smtpd_session_free(s);
}

/* Everything written to the client has left the output buffer (libevent,
 * or session_io.c's direct write). */
static void session_write_cb(struct bufferevent *bev, void *arg)
{
    struct smtpd_session *s = arg;
    (void)bev;
    smtpd_io_written(s);
    if (s->state == SMTPD_CLOSING) {
        log_disconnect(s);
        smtpd_session_free(s);
        return;
    }
    if (s->output_full) {
        /* The client has read our replies: go on with its commands. */
        s->output_full = 0;
        session_process_input(s);
    }
}

/* The TLS being set up answers a STARTTLS command (not implicit TLS, where
 * no command waits): its failures count as the command's errors. */
static int starttls_command_pending(const struct smtpd_session *s)
{
    return s->unanswered && s->unanswered_counter == CNT_STARTTLS;
}

void smtpd_starttls_hooked(struct smtpd_session *s, const struct restrict_result *r)
{
    s->state = SMTPD_CMD;
    if (smtpd_refused(r)) {
        if (starttls_command_pending(s))
            smtpd_count_error(s, CNT_STARTTLS);
        smtpd_log_reject(s, "reject", "STARTTLS", r->restriction, r->code, r->enhanced, r->text, NULL);
        smtpd_reply_refusal(s, r->verdict == RV_REJECT ? 554 : 421, r->enhanced, r->text);
        s->last_command = "STARTTLS";
        smtpd_session_close_after_flush(s);
        return;
    }
    smtpd_command_answered(s);
    smtpd_continue(s);
}

/* libevent may hand over the first bytes read through TLS (a fast client's
 * EHLO) before it reports the finished handshake as BEV_EVENT_CONNECTED:
 * the session is encrypted as soon as OpenSSL says so, so that this EHLO
 * already offers AUTH under smtpd_tls_auth_only and no longer offers
 * STARTTLS. Returns 1 when the STARTTLS hooks now run (they resume the
 * input themselves) or the session ends (smtpd_tls_req_ccert, the new TLS
 * session rate limit). */
/* version: OpenSSL's fixed name of the protocol ("TLSv1.3"), "none" without a session. */
static void count_handshake(struct smtpd_session *s, const char *result, SSL *ssl)
{
    const char *labels[] = { s->set->service_name, result, ssl ? SSL_get_version(ssl) : "none" };
    core_metric_add(s->worker->metrics, CM_SMTPD_TLS_HANDSHAKES, labels, 1);
}

static int tls_became_active(struct smtpd_session *s)
{
    if (s->tls_active || s->bev == NULL)
        return 0;
    SSL *ssl = bufferevent_openssl_get_ssl(s->bev);
    if (ssl == NULL || !SSL_is_init_finished(ssl))
        return 0;
    s->tls_handshaking = 0;
    count_handshake(s, "ok", ssl);
    bufferevent_set_timeouts(s->bev, &s->set->timeout, &s->set->timeout);
    int starttls = starttls_command_pending(s);
    /* Postfix: a missing client certificate ends the session after its 421,
     * STARTTLS counted a success; the new session rate limit leaves the
     * command unfinished (longjmp), a failure. */
    int refused = smtpd_tls_established(s) != 0;
    if (!refused && smtpd_tls_count_new_session(s) != 0) {
        refused = 1;
        if (starttls)
            smtpd_count_error(s, CNT_STARTTLS);
    }
    if (refused) {
        s->last_command = "STARTTLS";
        smtpd_session_close_after_flush(s);
        return 1;
    }
    if (!s->greeted && smtpd_phase_has_hooks(s, PHASE_STARTTLS)) {
        s->tls_hooks_pending = 1;   /* implicit TLS done before the greeting: after it */
        return 0;
    }
    if (smtpd_phase_has_hooks(s, PHASE_STARTTLS) && s->state == SMTPD_CMD) {
        smtpd_hooks_then(s, PHASE_STARTTLS, NULL, smtpd_starttls_hooked);   /* answers STARTTLS */
        return 1;
    }
    smtpd_command_answered(s);
    return 0;
}

/* Output not yet written: ours, or, after STARTTLS, ciphertext in the
 * socket bufferevent below the TLS filter. */
static int output_pending(struct smtpd_session *s)
{
    if (evbuffer_get_length(bufferevent_get_output(s->bev)) > 0)
        return 1;
    struct bufferevent *under = bufferevent_get_underlying(s->bev);
    return under && evbuffer_get_length(bufferevent_get_output(under)) > 0;
}

static void session_event_cb(struct bufferevent *bev, short what, void *arg)
{
    struct smtpd_session *s = arg;
    if (what & BEV_EVENT_CONNECTED) {
        tls_became_active(s);
        return;
    }
    if ((what & BEV_EVENT_TIMEOUT) && (what & BEV_EVENT_WRITING) && s->state != SMTPD_CLOSING &&
        !output_pending(s)) {
        /* Not a timeout: libevent's TLS filter (bufferevent_ssl.c) arms its
         * write timer when a reply goes into an empty output and, as a
         * filter, never disarms it once the reply has gone, so it fires
         * smtpd_timeout after our last reply with nothing left to write: an
         * idle client then lost its 421 (the timer had disabled writing),
         * and a DATA transfer longer than smtpd_timeout was cut. Writing
         * is on again (the timer re-arms: the same again, harmlessly); the
         * read timeout is what bounds an idle client. */
        bufferevent_enable(s->bev, EV_WRITE);
        return;
    }
    if (what & BEV_EVENT_TIMEOUT) {
        if (s->state == SMTPD_CLOSING) {
            smtpd_session_free(s);
            return;
        }
        if (s->tls_handshaking) {
            /* smtpd_starttls_timeout: nothing can be said inside a handshake */
            msg_info("timeout after STARTTLS from %s", s->namaddr);
            count_handshake(s, "failed", NULL);
            s->last_command = "STARTTLS";
            log_disconnect(s);
            smtpd_session_free(s);
            return;
        }
        msg_info("timeout after %s from %s", s->last_command ? s->last_command : "CONNECT", s->namaddr);
        charge_unanswered(s);   /* before the 421, which is no answer of the command's own */
        smtpd_reply(s, "421 4.4.2 %s Error: timeout exceeded", s->set->myhostname);
        bufferevent_set_timeouts(s->bev, NULL, &s->set->timeout);
        s->quit_after_reply = 1;
        /* now: a client that reads nothing never lets write_cb (which would
         * log it otherwise) run; the write timeout then frees the session */
        log_disconnect(s);
        s->state = SMTPD_CLOSING;
        smtpd_io_stop_input(s);
        bufferevent_setcb(s->bev, NULL, session_write_cb, session_event_cb, s);
        return;
    }
    if (what & (BEV_EVENT_EOF | BEV_EVENT_ERROR)) {
        if (s->state == SMTPD_CLOSING) {
            smtpd_session_free(s);
            return;
        }
        if (what & BEV_EVENT_ERROR) {
            unsigned long ssl_err = bufferevent_get_openssl_error(bev);
            if (ssl_err) {
                char text[256];
                ERR_error_string_n(ssl_err, text, sizeof(text));
                msg_warn("TLS library problem: %s from %s", text, s->namaddr);
            }
        }
        if (s->tls_handshaking)
            count_handshake(s, "failed", NULL);
        if (s->state == SMTPD_WAIT && s->tx && s->tx->commit_job) {
            /* Let the commit finish; its completion notices the lost client. */
        }
        lost_connection(s, "lost connection");
    }
}

/* Bounds what one session may buffer: a command line plus slack, or a DATA
 * read chunk. Reading stops at the watermark until the session consumes, so
 * a client that sends while the session waits (a check, a tarpit delay, the
 * fsync) only fills the socket buffers. After STARTTLS the filter on top
 * needs the same limit, or decrypted input piles up in it unread; the
 * socket below it gets a write limit, which the TLS filter honours, so
 * unread replies stay in the filter where OUTPUT_LIMIT sees them. */
static void limit_buffers(struct smtpd_session *s)
{
    bufferevent_setwatermark(s->bev, EV_READ, 0, s->set->line_length_limit + 65536);
    struct bufferevent *under = bufferevent_get_underlying(s->bev);
    if (under)
        bufferevent_setwatermark(under, EV_WRITE, 0, OUTPUT_LIMIT);
}

/* Installs the session's callbacks, timeouts and buffer limits on s->bev:
 * the socket at accept, or the TLS filter STARTTLS stacks on top of it. */
void smtpd_session_attach(struct smtpd_session *s)
{
    bufferevent_setcb(s->bev, session_read_cb, session_write_cb, session_event_cb, s);
    /* smtpd_starttls_timeout bounds a handshake, smtpd_timeout the rest */
    const struct timeval *tv = s->tls_handshaking ? &s->set->starttls_timeout : &s->set->timeout;
    bufferevent_set_timeouts(s->bev, tv, tv);
    limit_buffers(s);
    smtpd_io_attach(s);
}

/* A new session on fd, not yet begun (connect.c): its addresses may
 * still have to come from a PROXY header. */
struct smtpd_session *smtpd_session_new(struct smtpd_listener *l, const struct smtpd_settings *set, int fd,
                                        int counted_in_service)
{
    struct smtpd_worker *w = l->worker;
    petrel_pool *pool = petrel_pool_create(SESSION_POOL_SIZE);
    struct smtpd_session *s = petrel_pool_zalloc(pool, sizeof(*s));
    s->pool = pool;
    s->scratch = petrel_pool_create(SCRATCH_POOL_SIZE);
    s->worker = w;
    s->listener = l;
    s->set = set;
    s->fd = fd;
    s->counted_in_service = counted_in_service;
    s->state = SMTPD_CMD;
    s->protocol = "SMTP";
    s->name = s->reverse_name = "unknown";
    s->name_status = s->reverse_name_status = SMTPD_PEER_PERM;
    /* The addresses until session_begin knows them (a PROXY header that
     * fails is logged against these). */
    snprintf(s->addr, sizeof(s->addr), "unknown");
    snprintf(s->port, sizeof(s->port), "0");
    s->namaddr = "unknown[unknown]";
    session_link(w, s);
    return s;
}


static void too_many_errors(struct smtpd_session *s)
{
    msg_info("too many errors after %s from %s", s->last_command ? s->last_command : "CONNECT", s->namaddr);
    smtpd_session_shutdown(s, petrel_pool_printf(s->pool, "421 4.7.0 %s Error: too many errors",
                                                 s->set->myhostname));
}


static void error_delay_over(evutil_socket_t fd, short what, void *arg)
{
    struct smtpd_session *s = arg;
    s->error_slept = 1;
    smtpd_continue(s);
}


/* smtpd_command_filter (Postfix): the command line, without leading blanks,
 * looked up in the table; a value found replaces the line. A lookup error
 * ends the session with 421 4.3.0, as in Postfix. filter_result applies
 * the table's answer r; filter_command looks up a local table at once. A
 * remote table (pgsql:, socketmap:, ...) is asked with a lone query
 * instead: the session waits (SMTPD_WAIT, no further input read) and
 * filter_answered runs the command when the answer comes, so the worker's
 * other sessions go on meanwhile. */
static int filter_result(struct smtpd_session *s, int r, const char *value, char **line, size_t *len)
{
    const char *key = *line + strspn(*line, " \t");
    if (r == TBL_FOUND) {
        msg_info("%s: replacing command \"%.100s\" with \"%.100s\"", s->namaddr, *line, value);
        size_t n = strlen(value);
        char *copy = petrel_pool_alloc(s->scratch, n + 1);
        memcpy(copy, value, n + 1);
        *line = copy;
        *len = n;
    } else if (r == TBL_ERROR) {
        msg_warn("%s lookup error for \"%.100s\"", tbl_spec(s->set->command_filter), key);
        msg_info("NOQUEUE: reject: %s from %s: 421 4.3.0 %s Server local data error",
                 s->last_command ? s->last_command : "CONNECT", s->namaddr, s->set->myhostname);
        smtpd_reply(s, "421 4.3.0 %s Server local data error", s->set->myhostname);
        smtpd_session_close_after_flush(s);
        return -1;
    }
    return 0;
}

static int filter_command(struct smtpd_session *s, char **line, size_t *len)
{
    const char *key = *line + strspn(*line, " \t");
    const char *value;
    int r = tbl_lookup(s->set->command_filter, key, &value);
    return filter_result(s, r, value, line, len);
}

static void filter_answered(void *arg, int status, const char *value)
{
    struct smtpd_session *s = arg;
    char *line = s->filter_line;
    size_t len = s->filter_len;
    s->filter_query = NULL;
    s->filter_line = NULL;
    s->state = s->filter_state;
    if (filter_result(s, status, value, &line, &len) == 0)
        smtpd_handle_command(s, line, len);
    smtpd_continue(s);
}

/* Cancels a remote command filter lookup in flight (the session ends). */
static void filter_cancel(struct smtpd_session *s)
{
    if (s->filter_query == NULL)
        return;
    tbl_query_cancel(s->filter_query);
    s->filter_query = NULL;
    s->filter_line = NULL;
    if (s->state == SMTPD_WAIT)
        s->state = s->filter_state;
}

/* Starts the remote lookup of line; the session waits for it. */
static void filter_command_start(struct smtpd_session *s, char *line, size_t len)
{
    s->filter_line = line;   /* in scratch, which is reset only by the next command line */
    s->filter_len = len;
    s->filter_state = s->state;
    s->state = SMTPD_WAIT;
    s->filter_query = tbl_query_start_lookup(s->set->command_filter, line + strspn(line, " \t"), filter_answered, s);
    /* NULL: answered already (filter_answered ran) */
}

/* smtpd_per_record_deadline: smtpd_timeout bounds each whole command or
 * content line, not each read, so a client that trickles one byte at a time
 * cannot hold a session forever. The deadline starts when the session
 * begins to wait for a record and ends when one is complete. */
static void record_deadline(evutil_socket_t fd, short what, void *arg)
{
    struct smtpd_session *s = arg;
    (void)fd;
    (void)what;
    /* busy on our side: the client is not late; closing: smtpd_timeout
     * fired first and its 421 is on its way (a second timeout here would
     * free the session before the reply is written) */
    if (s->state == SMTPD_WAIT || s->state == SMTPD_CLOSING)
        return;
    session_event_cb(s->bev, BEV_EVENT_TIMEOUT | BEV_EVENT_READING, s);
}

static void record_deadline_update(struct smtpd_session *s, int before)
{
    if (!s->set->per_record_deadline || s->tls_handshaking || s->state == SMTPD_CLOSING || s->bev == NULL)
        return;
    struct evbuffer *in = bufferevent_get_input(s->bev);
    struct evbuffer_ptr eol = evbuffer_search_eol(in, NULL, NULL, EVBUFFER_EOL_LF);
    if (before) {
        if (eol.pos >= 0 && s->record_timer)   /* a record is complete: its deadline is met */
            evtimer_del(s->record_timer);
        return;
    }
    if (s->record_timer == NULL)
        s->record_timer = evtimer_new(s->worker->base, record_deadline, s);
    if (s->state != SMTPD_WAIT && !evtimer_pending(s->record_timer, NULL))
        evtimer_add(s->record_timer, &s->set->timeout);
}

/* Reads complete command lines and dispatches them until input runs out or
 * the session waits for something. */
static void session_process_input(struct smtpd_session *s)
{
    if (s->in_input_loop)
        return;   /* a continuation ran synchronously: the outer loop goes on */
    s->in_input_loop = 1;
    record_deadline_update(s, 1);
    struct evbuffer *in = bufferevent_get_input(s->bev);
    const struct smtpd_settings *set = s->set;
    while (s->state != SMTPD_CLOSING && s->state != SMTPD_WAIT) {
        if (s->hangup_after_reply) {
            /* A 421 or 521 went out (a restriction's answer): Postfix hangs up. */
            smtpd_session_close_after_flush(s);
            break;
        }
        if ((s->state == SMTPD_DATA || s->state == SMTPD_BDAT) && smtpd_proxy_congested(s))
            break;   /* the before-queue filter reads slower: its write callback resumes */
        if (s->state == SMTPD_DATA) {
            if (!smtpd_consume_data(s))
                break;
            s->state = SMTPD_CMD;
            smtpd_finish_message(s, CNT_DATA);
            continue;
        }
        if (s->state == SMTPD_BDAT) {
            smtpd_consume_bdat(s);
            if (s->state == SMTPD_BDAT)
                break;
            continue;
        }
        if (s->errors >= set->hard_error_limit) {
            too_many_errors(s);
            break;
        }
        if (evbuffer_get_length(bufferevent_get_output(s->bev)) > OUTPUT_LIMIT) {
            s->output_full = 1;   /* session_write_cb resumes */
            break;
        }
        if (s->state == SMTPD_AUTH) {
            if (smtpd_auth_line(s, in) != 0)
                break;
            continue;
        }
        if (s->delay_timer && evtimer_pending(s->delay_timer, NULL))
            break;
        size_t avail = evbuffer_get_length(in);
        if (avail == 0)
            break;
        if (s->errors >= set->soft_error_limit && set->error_sleep_time > 0 && !s->error_slept) {
            /* Postfix's smtpd_soft_error_limit: past it, every reply waits
             * smtpd_error_sleep_time (the tarpit of clients that keep
             * making mistakes); the session waits here, not the worker */
            struct timeval tv = { (time_t)set->error_sleep_time, 0 };
            if (s->delay_timer == NULL)
                s->delay_timer = evtimer_new(s->worker->base, error_delay_over, s);
            evtimer_add(s->delay_timer, &tv);
            break;
        }
        /* The previous command is answered: nothing of it is needed any more. */
        petrel_pool_reset(s->scratch);
        struct evbuffer_ptr eol = evbuffer_search_eol(in, NULL, NULL, EVBUFFER_EOL_LF);
        if (eol.pos < 0) {
            if (avail > set->line_length_limit) {
                /* Keep memory bounded: discard what we have, answer once
                 * when the line finally ends. */
                evbuffer_drain(in, avail);
                s->long_line = 1;
            }
            break;
        }
        size_t linelen = (size_t)eol.pos;   /* bytes before the LF */
        if (s->long_line || linelen > set->line_length_limit) {
            evbuffer_drain(in, linelen + 1);
            s->long_line = 0;
            s->last_command = "UNKNOWN";
            smtpd_reply(s, "500 5.5.2 Error: line too long");
            s->errors++;
            continue;
        }
        char *line = petrel_pool_alloc(s->scratch, linelen + 1);
        evbuffer_remove(in, line, linelen + 1);
        int bare_lf = linelen == 0 || line[linelen - 1] != '\r';
        if (!bare_lf)
            linelen--;
        line[linelen] = '\0';
        if (bare_lf && set->bare_lf_policy == DATA_BARE_LF_REJECT && !s->bare_lf_excluded) {
            msg_info("disconnect: bare <LF> received from %s after %s", s->namaddr,
                     s->last_command ? s->last_command : "CONNECT");
            smtpd_reply(s, "%d 5.5.2 Error: bare <LF> received", set->bare_lf_reject_code);
            smtpd_session_close_after_flush(s);
            break;
        }
        s->error_slept = 0;
        if (set->command_filter && tbl_is_remote(set->command_filter)) {
            filter_command_start(s, line, linelen);
            continue;   /* the loop stops while the session waits */
        }
        if (set->command_filter && filter_command(s, &line, &linelen) != 0)
            break;
        smtpd_handle_command(s, line, linelen);
    }
    s->in_input_loop = 0;
    record_deadline_update(s, 0);
    if (s->state == SMTPD_CLOSING && evbuffer_get_length(bufferevent_get_output(s->bev)) == 0) {
        log_disconnect(s);
        smtpd_session_free(s);
    }
}

void smtpd_session_stop(struct smtpd_session *s)
{
    if (s->proxy) {
        /* Still reading its PROXY header: nobody has been greeted yet. */
        smtpd_session_free(s);
        return;
    }
    if (s->state == SMTPD_CLOSING || (s->tx && s->tx->commit_job))
        return;
    /* Whatever it waits for (a module, a restriction) answers nobody now. */
    smtpd_sasl_session_gone(s);   /* the back-end's end() still sees the session */
    smtpd_plugin_session_gone(s);
    restrict_cancel(s);
    filter_cancel(s);
    if (s->delay_timer)
        evtimer_del(s->delay_timer);
    if (s->tx && s->tx->writer)
        msg_info("%s: %s in progress from %s abandoned at shutdown; nothing was accepted", s->tx->queue_id,
                 s->tx->eom_counter == CNT_BDAT ? "BDAT" : "DATA", s->namaddr);
    smtpd_tx_free(s);   /* removes an incomplete queue file */
    charge_unanswered(s);   /* the 421 below is not the command's own answer */
    if (s->state == SMTPD_WAIT || s->state == SMTPD_DATA || s->state == SMTPD_BDAT || s->state == SMTPD_AUTH)
        s->state = SMTPD_CMD;
    smtpd_session_shutdown(s, petrel_pool_printf(s->pool, "421 4.3.2 %s Service shutting down",
                                                 s->set->myhostname));
}

/* Resumes input processing after an asynchronous step or a delay. */
void smtpd_continue(struct smtpd_session *s)
{
    if (s->state == SMTPD_WAIT)
        return;
    if (s->worker->stopping && s->state == SMTPD_CMD && s->tx == NULL) {
        smtpd_session_shutdown(s, petrel_pool_printf(s->pool, "421 4.3.2 %s Service shutting down",
                                                     s->set->myhostname));
        return;
    }
    session_process_input(s);
}

static void session_read_cb(struct bufferevent *bev, void *arg)
{
    struct smtpd_session *s = arg;
    if (tls_became_active(s))
        return;
    session_process_input(s);
}
