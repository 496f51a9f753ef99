/*
 * The SMTP session engine: one state machine per connection, driven by
 * libevent bufferevents (a TLS filter is stacked on the socket after
 * STARTTLS). Input is processed one command at a time, in order; replies
 * are appended to the output buffer and written when the loop runs, so a
 * pipelined group is answered in one write.
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
 */
#include "config.h"

#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>
#include <arpa/inet.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/event.h>
#include <openssl/err.h>

#include "config/config.h"
#include "lib/log.h"
#include "lib/workq.h"
#include "lib/xalloc.h"
#include "smtpd/anvil.h"
#include "smtpd/restrict.h"
#include "smtpd/smtpd_int.h"
#include "tables/cidr.h"
#include "tables/access.h"
#include "tables/table.h"

#define SESSION_POOL_SIZE 2048
#define TX_POOL_SIZE 2048
#define SCRATCH_POOL_SIZE 4096
/* Replies not yet taken by the client: past this, no further command is
 * read until the client has read them (a client that pipelines and never
 * reads would otherwise grow the output buffer without end). */
#define OUTPUT_LIMIT (256 * 1024)
#define SMALL_POOL_SIZE 512

static void session_read_cb(struct bufferevent *bev, void *arg);
static void session_write_cb(struct bufferevent *bev, void *arg);
static void session_event_cb(struct bufferevent *bev, short what, void *arg);
static void session_process_input(struct smtpd_session *s);
static void session_free(struct smtpd_session *s);

/* ------------------------------------------------------------------ */
/* replies and logging                                                 */

void smtpd_reply(struct smtpd_session *s, const char *fmt, ...)
{
    struct evbuffer *out = bufferevent_get_output(s->bev);
    va_list ap;
    va_start(ap, fmt);
    if (s->debug) {
        char line[1024];
        va_list copy;
        va_copy(copy, ap);
        vsnprintf(line, sizeof(line), fmt, copy);
        va_end(copy);
        msg_info("> %s: %s", s->namaddr, line);
    }
    evbuffer_add_vprintf(out, fmt, ap);
    va_end(ap);
    evbuffer_add(out, "\r\n", 2);
}

static const char *counter_names[CNT_MAX] = {
    "ehlo", "helo", "starttls", "auth", "mail", "rcpt", "data", "bdat", "rset", "noop",
    "quit", "vrfy", "help", "unknown",
};

/* Postfix 3.x disconnect summary: "ehlo=1 mail=1 rcpt=0/1 data=1 quit=1 commands=4/5". */
static void log_disconnect(struct smtpd_session *s)
{
    if (s->local_submission)
        return;   /* no connect line either: see session_start */
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

static const char *tx_sender_for_log(struct smtpd_session *s)
{
    return s->tx && s->tx->mail.address ? s->tx->mail.address : NULL;
}

/* Postfix's reject log line, read by pflogsumm:
 * "NOQUEUE: reject: RCPT from name[addr]: 554 5.7.1 <x>: Relay access denied; from=<a> to=<b> proto=ESMTP helo=<h>" */
static void log_reject(struct smtpd_session *s, const char *what, const char *verb, int code,
                       const char *enhanced, const char *text, const char *rcpt)
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
    msg_info("%s: %s: %s from %s: %d %s %s;%s", qid, what, verb, s->namaddr, code, enhanced, text, extra);
}

static void count_error(struct smtpd_session *s, enum smtpd_counter c)
{
    s->counter_errors[c]++;
    s->errors++;
}

/* Runs the modules' hooks of a phase, then next(); without hooks, next() at once. */
static void hooks_then(struct smtpd_session *s, enum smtpd_phase phase, const char *arg,
                       smtpd_phase_done_fn *next)
{
    if (smtpd_phase_has_hooks(s, phase)) {
        smtpd_run_phase(s, phase, arg, next);
        return;
    }
    struct restrict_result dunno = { RV_DUNNO, 0, NULL, NULL };
    s->state = SMTPD_WAIT;
    next(s, &dunno);
}

static int refused(const struct restrict_result *r)
{
    return r->verdict == RV_REJECT || r->verdict == RV_DEFER;
}

/* ------------------------------------------------------------------ */
/* transactions                                                        */

static void tx_free(struct smtpd_session *s)
{
    struct smtpd_tx *tx = s->tx;
    if (tx == NULL)
        return;
    if (tx->writer)
        queue_writer_abort(tx->writer);
    petrel_pool_destroy(tx->pool);
    s->tx = NULL;
}

static struct smtpd_tx *tx_new(struct smtpd_session *s)
{
    tx_free(s);
    petrel_pool *pool = petrel_pool_create(TX_POOL_SIZE);
    struct smtpd_tx *tx = petrel_pool_zalloc(pool, sizeof(*tx));
    tx->pool = pool;
    s->tx = tx;
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

static void session_free(struct smtpd_session *s)
{
    struct smtpd_worker *w = s->worker;
    if (s->tx && s->tx->commit_job) {
        /* The fsync is running on a thread: its completion frees the
         * transaction. The message stays queued (it is complete); the
         * client never saw 250 and may send it again, which is allowed. */
        workq_cancel(s->tx->commit_job);
        s->tx = NULL;
    }
    smtpd_plugin_session_gone(s);
    tx_free(s);
    if (s->client_key)
        anvil_disconnect(w->anvil, w->index, s->client_key);
    if (s->counted_in_service)
        anvil_service_release(w->anvil, w->index, s->listener->service_key);   /* wakes waiting listeners */
    if (s->delay_timer)
        event_free(s->delay_timer);
    if (s->bev) {
        /* After STARTTLS our output goes through the TLS filter into the
         * socket bufferevent below it, which only writes when the loop runs:
         * the last reply (221, 421, 554) is still there as ciphertext when
         * the filter reports its own buffer empty. Freeing would drop it. */
        struct bufferevent *under = bufferevent_get_underlying(s->bev);
        if (under)
            flush_ciphertext(under);
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
    if (w->draining && w->nsessions == 0)
        event_base_loopexit(w->base, NULL);
}

/* Ends the session after the pending output has been written. */
static void session_close_after_flush(struct smtpd_session *s)
{
    s->state = SMTPD_CLOSING;
    bufferevent_disable(s->bev, EV_READ);
    /* Inside the input loop the session must outlive this call: the loop
     * (and handle_command below it) still use it, and frees it at its end.
     * This matters with TLS, whose filter passes our reply on at once and
     * leaves the output empty here. */
    if (s->in_input_loop)
        return;
    if (evbuffer_get_length(bufferevent_get_output(s->bev)) == 0) {
        log_disconnect(s);
        session_free(s);
    }
    /* otherwise session_write_cb frees it when the buffer drains */
}

void smtpd_session_shutdown(struct smtpd_session *s, const char *reply)
{
    if (s->state == SMTPD_CLOSING)
        return;
    if (reply)
        smtpd_reply(s, "%s", reply);
    session_close_after_flush(s);
}

static void lost_connection(struct smtpd_session *s, const char *why)
{
    msg_info("%s after %s from %s", why, s->last_command ? s->last_command : "CONNECT", s->namaddr);
    log_disconnect(s);
    session_free(s);
}

static void session_write_cb(struct bufferevent *bev, void *arg)
{
    struct smtpd_session *s = arg;
    if (s->state == SMTPD_CLOSING) {
        log_disconnect(s);
        session_free(s);
        return;
    }
    if (s->output_full) {
        /* The client has read our replies: go on with its commands. */
        s->output_full = 0;
        session_process_input(s);
    }
}

static void starttls_hooked(struct smtpd_session *s, const struct restrict_result *r)
{
    s->state = SMTPD_CMD;
    if (refused(r)) {
        log_reject(s, "reject", "STARTTLS", r->code, r->enhanced, r->text, NULL);
        smtpd_reply(s, "%d %s %s", r->verdict == RV_REJECT ? 554 : 421, r->enhanced, r->text);
        s->last_command = "STARTTLS";
        session_close_after_flush(s);
        return;
    }
    smtpd_continue(s);
}

static void session_event_cb(struct bufferevent *bev, short what, void *arg)
{
    struct smtpd_session *s = arg;
    if (what & BEV_EVENT_CONNECTED) {
        smtpd_tls_established(s);
        if (smtpd_phase_has_hooks(s, PHASE_STARTTLS) && s->state == SMTPD_CMD)
            hooks_then(s, PHASE_STARTTLS, NULL, starttls_hooked);
        return;
    }
    if (what & BEV_EVENT_TIMEOUT) {
        if (s->state == SMTPD_CLOSING) {
            session_free(s);
            return;
        }
        msg_info("timeout after %s from %s", s->last_command ? s->last_command : "CONNECT", s->namaddr);
        smtpd_reply(s, "421 4.4.2 %s Error: timeout exceeded", s->set->myhostname);
        bufferevent_set_timeouts(s->bev, NULL, &s->set->timeout);
        s->quit_after_reply = 1;
        log_disconnect(s);
        s->state = SMTPD_CLOSING;
        bufferevent_disable(s->bev, EV_READ);
        bufferevent_setcb(s->bev, NULL, session_write_cb, session_event_cb, s);
        /* write_cb would log the disconnect twice: clear counters */
        memset(s->counters, 0, sizeof(s->counters));
        return;
    }
    if (what & (BEV_EVENT_EOF | BEV_EVENT_ERROR)) {
        if (s->state == SMTPD_CLOSING) {
            session_free(s);
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
        if (s->state == SMTPD_WAIT && s->tx && s->tx->commit_job) {
            /* Let the commit finish; its completion notices the lost client. */
        }
        lost_connection(s, "lost connection");
    }
}

static int addr_to_text(const struct sockaddr *sa, char *addr, size_t asize, char *port, size_t psize)
{
    if (sa->sa_family == AF_INET) {
        const struct sockaddr_in *in = (const struct sockaddr_in *)sa;
        inet_ntop(AF_INET, &in->sin_addr, addr, (socklen_t)asize);
        snprintf(port, psize, "%u", ntohs(in->sin_port));
        return 0;
    }
    if (sa->sa_family == AF_INET6) {
        const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)sa;
        if (IN6_IS_ADDR_V4MAPPED(&in6->sin6_addr)) {
            inet_ntop(AF_INET, &in6->sin6_addr.s6_addr[12], addr, (socklen_t)asize);
        } else {
            inet_ntop(AF_INET6, &in6->sin6_addr, addr, (socklen_t)asize);
        }
        snprintf(port, psize, "%u", ntohs(in6->sin6_port));
        return 0;
    }
    snprintf(addr, asize, "unknown");
    snprintf(port, psize, "0");
    return -1;
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

static void send_greeting(struct smtpd_session *s);
static void greeting_checked(struct smtpd_session *s, const struct restrict_result *r);
static void connect_hooked(struct smtpd_session *s, const struct restrict_result *r);

/* A new session on fd: a network client (sa), or a local submission from
 * the pickup role (local, with the maildrop file owner's uid). */
static void session_start(struct smtpd_listener *l, const struct smtpd_settings *set, int fd,
                          const struct sockaddr *sa, int counted_in_service, int local, long uid)
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
    /* Reverse lookups are not done yet (no asynchronous resolver in smtpd):
     * every client is "unknown", as Postfix logs a name that fails to verify. */
    s->name = "unknown";
    if (local) {
        /* A maildrop file (petrel-sendmail): a user of this host, known by
         * the uid that owns the file; trusted as mynetworks is. */
        snprintf(s->addr, sizeof(s->addr), "127.0.0.1");
        snprintf(s->port, sizeof(s->port), "0");
        s->name = "localhost";
        s->local_submission = 1;
        s->local_uid = uid;
    } else {
        addr_to_text(sa, s->addr, sizeof(s->addr), s->port, sizeof(s->port));
    }
    s->namaddr = petrel_pool_printf(pool, "%s[%s]", s->name, s->addr);
    s->in_mynetworks = s->local_submission || cidr_list_match(set->mynetworks, s->addr);
    s->debug = cidr_list_match(set->debug_peers, s->addr);
    s->bare_lf_excluded = cidr_list_match(set->bare_lf_exclusions, s->addr);
    session_link(w, s);

    int one = 1;
    if (!s->local_submission) {
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
        /* Like Postfix's pickup, a local submission logs no connect line:
         * its "ID: uid=N from=<...>" line says who sent it. */
        msg_info("connect from %s", s->namaddr);
    }

    if (set->tls_wrappermode) {
        if (set->tls_ctx == NULL) {
            msg_warn("%s: smtpd_tls_wrappermode requires a certificate; closing %s",
                     set->service_name, s->namaddr);
            close(fd);
            s->fd = -1;
            session_free(s);
            return;
        }
        if (smtpd_tls_start(s, 1) != 0) {
            session_free(s);
            return;
        }
    } else {
        s->bev = bufferevent_socket_new(w->base, fd, BEV_OPT_CLOSE_ON_FREE);
    }
    bufferevent_setcb(s->bev, session_read_cb, session_write_cb, session_event_cb, s);
    bufferevent_set_timeouts(s->bev, &set->timeout, &set->timeout);
    limit_buffers(s);

    /* Per-client limits (Postfix's anvil), per service as in Postfix: count
     * first, then decide. The service's own limit (maxproc) was applied
     * before the accept: a client never gets here while the service is full.
     * The pickup role submits one file at a time and has no anvil. */
    time_t now = time(NULL);
    unsigned concurrent = 0, rate = 0;
    if (!s->local_submission && !cidr_list_match(set->conn_limit_exceptions, s->addr)) {
        const char *key = petrel_pool_printf(s->pool, "client:%s:%s", set->service_name, s->addr);
        if (anvil_connect(w->anvil, w->index, key, now, set->rate_time_unit, &concurrent, &rate) == 0) {
            s->client_key = key;
            if (set->conn_count_limit && concurrent > set->conn_count_limit) {
                msg_warn("Connection concurrency limit exceeded: %u from %s for service %s",
                         concurrent, s->namaddr, set->service_name);
                smtpd_session_shutdown(s, petrel_pool_printf(s->pool,
                    "421 4.7.0 %s Error: too many connections from %s", set->myhostname, s->addr));
                return;
            }
            if (set->conn_rate_limit && rate > set->conn_rate_limit) {
                msg_warn("Connection rate limit exceeded: %u from %s for service %s",
                         rate, s->namaddr, set->service_name);
                smtpd_session_shutdown(s, petrel_pool_printf(s->pool,
                    "421 4.7.0 %s Error: too many connections from %s", set->myhostname, s->addr));
                return;
            }
        } else {
            msg_warn("connection accounting table full: not limiting %s", s->namaddr);
        }
    }
    bufferevent_enable(s->bev, EV_READ | EV_WRITE);

    if (!set->delay_reject && !restrict_list_empty(set->client_restrictions)) {
        static const enum restrict_stage stages[] = { RS_CLIENT };
        s->state = SMTPD_WAIT;
        restrict_check(s, stages, 1, NULL, greeting_checked);
        return;
    }
    hooks_then(s, PHASE_CONNECT, NULL, connect_hooked);
}

void smtpd_accept(struct smtpd_listener *l, const struct smtpd_settings *set, int fd, const struct sockaddr *sa,
                  int salen, int counted_in_service)
{
    session_start(l, set, fd, sa, counted_in_service, 0, -1);
}

void smtpd_accept_local(struct smtpd_listener *l, int fd, long uid)
{
    session_start(l, l->settings, fd, NULL, 0, 1, uid);
}

static void greeting_checked(struct smtpd_session *s, const struct restrict_result *r)
{
    s->state = SMTPD_CMD;
    if (r->verdict == RV_REJECT || r->verdict == RV_DEFER) {
        /* Postfix answers the greeting normally and then rejects every
         * command; a reject at connect time is easier on clients as 554. */
        log_reject(s, "reject", "CONNECT", r->code, r->enhanced, r->text, NULL);
        smtpd_reply(s, "%d %s %s", r->code == 554 || r->code >= 500 ? 554 : 421, r->enhanced, r->text);
        s->last_command = "CONNECT";
        session_close_after_flush(s);
        return;
    }
    hooks_then(s, PHASE_CONNECT, NULL, connect_hooked);
}

static void connect_hooked(struct smtpd_session *s, const struct restrict_result *r)
{
    s->state = SMTPD_CMD;
    if (refused(r)) {
        log_reject(s, "reject", "CONNECT", r->code, r->enhanced, r->text, NULL);
        smtpd_reply(s, "%d %s %s", r->verdict == RV_REJECT ? 554 : 421, r->enhanced, r->text);
        s->last_command = "CONNECT";
        session_close_after_flush(s);
        return;
    }
    send_greeting(s);
    smtpd_continue(s);
}

static void send_greeting(struct smtpd_session *s)
{
    /* A client that talks before our greeting is a spambot or a smuggler
     * (smtpd_forbid_unauth_pipelining). */
    if (s->set->forbid_unauth_pipelining && !s->set->tls_wrappermode) {
        char peek;
        ssize_t n = recv(s->fd, &peek, 1, MSG_PEEK | MSG_DONTWAIT);
        if (n > 0) {
            msg_info("improper command pipelining before greeting from %s", s->namaddr);
            smtpd_reply(s, "554 5.5.0 Error: SMTP protocol synchronization");
            s->last_command = "CONNECT";
            session_close_after_flush(s);
            return;
        }
    }
    smtpd_reply(s, "220 %s", s->set->banner);
}

/* ------------------------------------------------------------------ */
/* commands                                                            */

static int tls_required(const struct smtpd_session *s)
{
    return s->set->tls_level == TLS_LEVEL_ENCRYPT && !s->tls_active;
}

static void ehlo_reply(struct smtpd_session *s)
{
    const struct smtpd_settings *set = s->set;
    struct evbuffer *out = bufferevent_get_output(s->bev);
    evbuffer_add_printf(out, "250-%s\r\n", set->myhostname);
    evbuffer_add_printf(out, "250-PIPELINING\r\n");
    if (set->message_size_limit)
        evbuffer_add_printf(out, "250-SIZE %llu\r\n", set->message_size_limit);
    else
        evbuffer_add_printf(out, "250-SIZE\r\n");
    if (!set->disable_vrfy)
        evbuffer_add_printf(out, "250-VRFY\r\n");
    evbuffer_add_printf(out, "250-ETRN\r\n");
    if (set->sasl && (!set->tls_auth_only || s->tls_active))
        evbuffer_add_printf(out, "250-AUTH PLAIN LOGIN\r\n");
    if (set->tls_ctx && !s->tls_active && set->tls_level != TLS_LEVEL_NONE)
        evbuffer_add_printf(out, "250-STARTTLS\r\n");
    evbuffer_add_printf(out, "250-ENHANCEDSTATUSCODES\r\n");
    evbuffer_add_printf(out, "250-8BITMIME\r\n");
    evbuffer_add_printf(out, "250-DSN\r\n");
    if (set->smtputf8)
        evbuffer_add_printf(out, "250-SMTPUTF8\r\n");
    evbuffer_add_printf(out, "250 CHUNKING\r\n");
}

static void cmd_helo(struct smtpd_session *s, const struct smtp_command *cmd, int esmtp);
static void cmd_mail(struct smtpd_session *s, const struct smtp_command *cmd);
static void cmd_rcpt(struct smtpd_session *s, const struct smtp_command *cmd);
static void cmd_data(struct smtpd_session *s, const struct smtp_command *cmd);
static void cmd_bdat(struct smtpd_session *s, const struct smtp_command *cmd);
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
    s->last_command = esmtp ? "EHLO" : "HELO";
    if (reject_helo_text(s, cmd->args) != 0) {
        count_error(s, c);
        return;
    }
    /* HELO resets the transaction (RFC 5321 4.1.4). */
    tx_free(s);
    s->bdat_state = BDAT_NONE;
    /* The name goes into Received:, the log and the next hop's view: keep it
     * printable and neutered as Postfix does ("a b<c>" -> "a?b?c?"). Its
     * own pool is reset by each HELO, so a flood of them never adds up. */
    if (s->helo_pool)
        petrel_pool_reset(s->helo_pool);
    else
        s->helo_pool = petrel_pool_create(SMALL_POOL_SIZE);
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
    struct restrict_result dunno = { RV_DUNNO, 0, NULL, NULL };
    helo_checked(s, &dunno);
}

static void helo_hooked(struct smtpd_session *s, const struct restrict_result *r);

static void helo_checked(struct smtpd_session *s, const struct restrict_result *r)
{
    s->state = SMTPD_CMD;
    if (!refused(r)) {
        hooks_then(s, PHASE_HELO, s->helo, helo_hooked);
        return;
    }
    helo_hooked(s, r);
}

static void helo_hooked(struct smtpd_session *s, const struct restrict_result *r)
{
    s->state = SMTPD_CMD;
    if (refused(r)) {
        log_reject(s, "reject", s->esmtp ? "EHLO" : "HELO", r->code, r->enhanced, r->text, NULL);
        smtpd_reply(s, "%d %s %s", r->code, r->enhanced, r->text);
        count_error(s, s->esmtp ? CNT_EHLO : CNT_HELO);
        s->helo = NULL;
    } else if (s->esmtp) {
        ehlo_reply(s);
    } else {
        smtpd_reply(s, "250 %s", s->set->myhostname);
    }
    smtpd_continue(s);
}

static struct smtp_parse_opts parse_opts(const struct smtpd_session *s)
{
    struct smtp_parse_opts o;
    memset(&o, 0, sizeof(o));
    o.smtputf8_enabled = s->set->smtputf8 && s->esmtp;
    o.dsn_enabled = s->esmtp;
    o.transaction_smtputf8 = s->tx ? s->tx->mail.smtputf8 : 0;
    return o;
}

static void mail_checked(struct smtpd_session *s, const struct restrict_result *r);

static void cmd_mail(struct smtpd_session *s, const struct smtp_command *cmd)
{
    const struct smtpd_settings *set = s->set;
    s->last_command = "MAIL";
    if (set->helo_required && s->helo == NULL) {
        smtpd_reply(s, "503 5.5.1 Error: send HELO/EHLO first");
        count_error(s, CNT_MAIL);
        return;
    }
    if (tls_required(s)) {
        smtpd_reply(s, "530 5.7.0 Must issue a STARTTLS command first");
        count_error(s, CNT_MAIL);
        return;
    }
    if (s->tx) {
        smtpd_reply(s, "503 5.5.1 Error: nested MAIL command");
        count_error(s, CNT_MAIL);
        return;
    }
    if (s->bdat_state != BDAT_NONE) {
        /* after a refused chunk, until BDAT LAST or RSET */
        smtpd_reply(s, "503 5.5.1 Error: MAIL after BDAT");
        count_error(s, CNT_MAIL);
        return;
    }
    struct smtpd_tx *tx = tx_new(s);
    struct smtp_parse_opts opts = parse_opts(s);
    struct smtp_reply_err err;
    if (smtp_parse_mail(cmd->args, &opts, tx->pool, &tx->mail, &err) != 0) {
        smtpd_reply(s, "%d %s %s", err.code, err.enhanced, err.text);
        tx_free(s);
        count_error(s, CNT_MAIL);
        return;
    }
    if (tx->mail.size > 0 && set->message_size_limit &&
        (unsigned long long)tx->mail.size > set->message_size_limit) {
        smtpd_reply(s, "552 5.3.4 Message size exceeds fixed limit");
        log_reject(s, "reject", "MAIL", 552, "5.3.4", "Message size exceeds fixed limit", NULL);
        tx_free(s);
        count_error(s, CNT_MAIL);
        return;
    }
    if (!smtpd_queue_space_ok(s->worker, set->message_size_limit)) {
        msg_warn("not enough free space in the queue file system");
        smtpd_reply(s, "452 4.3.1 Insufficient system storage");
        tx_free(s);
        count_error(s, CNT_MAIL);
        return;
    }
    if (!set->delay_reject && restrict_stage_needed(set, RS_SENDER)) {
        static const enum restrict_stage stages[] = { RS_SENDER };
        s->state = SMTPD_WAIT;
        restrict_check(s, stages, 1, NULL, mail_checked);
        return;
    }
    struct restrict_result dunno = { RV_DUNNO, 0, NULL, NULL };
    mail_checked(s, &dunno);
}

static void mail_hooked(struct smtpd_session *s, const struct restrict_result *r);

static void mail_checked(struct smtpd_session *s, const struct restrict_result *r)
{
    s->state = SMTPD_CMD;
    if (!refused(r)) {
        if (r->verdict == RV_DISCARD)
            s->tx->discard = 1;
        else if (r->verdict == RV_HOLD)
            s->tx->hold = 1;
        hooks_then(s, PHASE_MAIL, s->tx->mail.address, mail_hooked);
        return;
    }
    mail_hooked(s, r);
}

static void mail_hooked(struct smtpd_session *s, const struct restrict_result *r)
{
    s->state = SMTPD_CMD;
    if (r->verdict == RV_REJECT || r->verdict == RV_DEFER) {
        log_reject(s, "reject", "MAIL", r->code, r->enhanced, r->text, NULL);
        smtpd_reply(s, "%d %s %s", r->code, r->enhanced, r->text);
        tx_free(s);
        count_error(s, CNT_MAIL);
    } else {
        if (r->verdict == RV_DISCARD)
            s->tx->discard = 1;
        else if (r->verdict == RV_HOLD)
            s->tx->hold = 1;
        smtpd_reply(s, "250 2.1.0 Ok");
    }
    smtpd_continue(s);
}

static void rcpt_checked(struct smtpd_session *s, const struct restrict_result *r);

static void cmd_rcpt(struct smtpd_session *s, const struct smtp_command *cmd)
{
    const struct smtpd_settings *set = s->set;
    s->last_command = "RCPT";
    if (s->tx == NULL) {
        smtpd_reply(s, "503 5.5.1 Error: need MAIL command");
        count_error(s, CNT_RCPT);
        return;
    }
    if (s->bdat_state != BDAT_NONE) {
        /* The envelope is in the queue file since the first chunk. */
        smtpd_reply(s, "503 5.5.1 Error: RCPT after BDAT");
        count_error(s, CNT_RCPT);
        return;
    }
    struct smtpd_tx *tx = s->tx;
    if (tx->nrcpts >= set->recipient_limit) {
        smtpd_reply(s, "452 4.5.3 Error: too many recipients");
        count_error(s, CNT_RCPT);
        return;
    }
    struct smtp_parse_opts opts = parse_opts(s);
    struct smtp_reply_err err;
    struct smtp_rcpt_args args;
    if (smtp_parse_rcpt(cmd->args, &opts, tx->pool, &args, &err) != 0) {
        smtpd_reply(s, "%d %s %s", err.code, err.enhanced, err.text);
        count_error(s, CNT_RCPT);
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
    struct smtpd_rcpt *r = &tx->rcpts[tx->nrcpts];
    r->address = args.address;
    r->orcpt = args.orcpt;
    r->notify = args.notify;

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

static void rcpt_checked(struct smtpd_session *s, const struct restrict_result *res)
{
    struct smtpd_tx *tx = s->tx;
    s->state = SMTPD_CMD;
    if (!refused(res)) {
        if (res->verdict == RV_DISCARD)
            tx->discard = 1;
        else if (res->verdict == RV_HOLD)
            tx->hold = 1;
        s->api.rcpt = tx->rcpts[tx->nrcpts].address;
        hooks_then(s, PHASE_RCPT, tx->rcpts[tx->nrcpts].address, rcpt_hooked);
        return;
    }
    rcpt_hooked(s, res);
}

static void rcpt_hooked(struct smtpd_session *s, const struct restrict_result *res)
{
    struct smtpd_tx *tx = s->tx;
    s->state = SMTPD_CMD;
    s->api.rcpt = NULL;
    struct smtpd_rcpt *r = &tx->rcpts[tx->nrcpts];
    if (res->verdict == RV_REJECT || res->verdict == RV_DEFER) {
        log_reject(s, "reject", "RCPT", res->code, res->enhanced, res->text, r->address);
        smtpd_reply(s, "%d %s %s", res->code, res->enhanced, res->text);
        count_error(s, CNT_RCPT);
    } else {
        if (res->verdict == RV_DISCARD)
            tx->discard = 1;
        else if (res->verdict == RV_HOLD)
            tx->hold = 1;
        tx->nrcpts++;
        smtpd_reply(s, "250 2.1.5 Ok");
    }
    smtpd_continue(s);
}

/* Received: header (RFC 5321 4.4), Postfix's layout. */
static void write_received(struct smtpd_session *s)
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
        buf_printf(&b, "Received: from %s (%s [%s])\r\n", s->helo ? s->helo : s->addr, s->name, s->addr);
        if (s->tls_info)
            buf_printf(&b, "\t(using %s)\r\n", s->tls_info);
        buf_printf(&b, "\tby %s (%s) with %s id %s", s->set->myhostname, s->set->mail_name,
                   tx->mail.smtputf8 ? (s->tls_active ? "UTF8SMTPS" : "UTF8SMTP") : s->protocol,
                   tx->queue_id);
        if (tx->nrcpts == 1)
            buf_printf(&b, "\r\n\tfor <%s>; %s\r\n", tx->rcpts[0].address, date);
        else
            buf_printf(&b, ";\r\n\t%s\r\n", date);
    }
    /* Every field is clean already (the HELO name is neutered, addresses
     * parsed); the header still goes through the one writer that never
     * lets a bare CR or LF out. */
    struct buf clean = BUF_INIT;
    smtpd_header_write(&clean, b.data, b.len);
    if (queue_writer_write(tx->writer, clean.data, clean.len) != 0 && !tx->write_errno)
        tx->write_errno = errno ? errno : EIO;
    buf_free(&clean);
    buf_free(&b);
}

/* A queue file for the transaction's envelope as it stands; its ID goes to tx->queue_id. */
static struct queue_writer *create_writer(struct smtpd_session *s)
{
    struct smtpd_tx *tx = s->tx;
    struct queue_rcpt *qr = petrel_pool_alloc(tx->pool, tx->nrcpts * sizeof(*qr));
    for (size_t i = 0; i < tx->nrcpts; i++) {
        qr[i].address = tx->rcpts[i].address;
        qr[i].orcpt = tx->rcpts[i].orcpt;
        qr[i].notify = tx->rcpts[i].notify;
    }
    /* always_bcc and sender_bcc_maps: extra recipients of the queued copy,
     * as Postfix's cleanup adds them (not announced in the headers). */
    const char *bcc[2];
    size_t nbcc = 0;
    const struct smtpd_settings *set = s->set;
    if (set->always_bcc && *set->always_bcc)
        bcc[nbcc++] = set->always_bcc;
    for (size_t i = 0; i < set->nsender_bcc_maps && *tx->mail.address; i++) {
        const char *v = NULL;
        if (tbl_access_lookup_address(set->sender_bcc_maps[i], tx->mail.address, set->recipient_delimiter, &v) ==
            TBL_FOUND) {
            bcc[nbcc++] = petrel_pool_strdup(tx->pool, v);
            break;
        }
    }
    if (nbcc) {
        struct queue_rcpt *grown = petrel_pool_zalloc(tx->pool, (tx->nrcpts + nbcc) * sizeof(*grown));
        memcpy(grown, qr, tx->nrcpts * sizeof(*qr));
        for (size_t i = 0; i < nbcc; i++)
            grown[tx->nrcpts + i].address = bcc[i];
        qr = grown;
    }
    struct queue_envelope env;
    memset(&env, 0, sizeof(env));
    env.sender = tx->mail.address;
    env.envid = tx->mail.envid;
    env.ret = tx->mail.ret;
    if (tx->mail.body == SMTP_BODY_8BITMIME)
        env.flags |= QUEUE_F_8BITMIME;
    if (tx->mail.smtputf8)
        env.flags |= QUEUE_F_SMTPUTF8;
    env.client_name = s->name;
    env.client_addr = s->addr;
    env.client_port = s->port;
    env.helo = s->helo;
    env.protocol = s->protocol;
    env.tls_info = s->tls_info;
    env.sasl_method = s->sasl_method;
    env.sasl_username = s->sasl_username;
    struct timeval tv;
    gettimeofday(&tv, NULL);
    env.arrival_sec = tv.tv_sec;
    env.arrival_usec = tv.tv_usec;
    env.rcpt_count = tx->nrcpts + nbcc;
    env.rcpts = qr;
    struct queue_writer *w = queue_writer_create(s->worker->queue, &s->worker->idgen, &env, tx->queue_id);
    if (w == NULL)
        msg_warn("cannot create queue file: %s", strerror(errno));
    return w;
}

static int open_queue_file(struct smtpd_session *s)
{
    struct smtpd_tx *tx = s->tx;
    if (tx->writer) {
        /* One queue file per transaction: a second would leak the first. */
        msg_warn("%s: internal error: queue file already open for %s", tx->queue_id, s->namaddr);
        errno = EEXIST;
        return -1;
    }
    tx->writer = create_writer(s);
    if (tx->writer == NULL)
        return -1;
    if (s->local_submission)
        msg_info("%s: uid=%ld from=<%s>", tx->queue_id, s->local_uid, tx->mail.address);
    else if (s->sasl_username)
        msg_info("%s: client=%s, sasl_method=%s, sasl_username=%s", tx->queue_id, s->namaddr, s->sasl_method,
                 s->sasl_username);
    else
        msg_info("%s: client=%s", tx->queue_id, s->namaddr);
    write_received(s);
    tx->content_start = queue_writer_content_size(tx->writer);
    return 0;
}

/* --- DATA and the first BDAT of a transaction: one path for both ---
 * smtpd_data_restrictions, then the modules' data hooks, then the queue
 * file; only then does DATA answer 354 or BDAT read its chunk into the file.
 * A refused BDAT still reads (and discards) its chunk before answering. */

static void data_checked(struct smtpd_session *s, const struct restrict_result *r);
static void data_hooked(struct smtpd_session *s, const struct restrict_result *r);
static void bdat_skip(struct smtpd_session *s, const char *reply);

static int data_preconditions(struct smtpd_session *s, const char *verb, enum smtpd_counter c)
{
    if (s->tx == NULL) {
        smtpd_reply(s, "503 5.5.1 Error: need MAIL command");
        count_error(s, c);
        return -1;
    }
    if (s->tx->nrcpts == 0) {
        smtpd_reply(s, "554 5.5.1 Error: no valid recipients");
        log_reject(s, "reject", verb, 554, "5.5.1", "Error: no valid recipients", NULL);
        count_error(s, c);
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
    struct restrict_result ok = { RV_DUNNO, 0, NULL, NULL };
    data_checked(s, &ok);
}

static void cmd_data(struct smtpd_session *s, const struct smtp_command *cmd)
{
    s->last_command = "DATA";
    if (s->bdat_state != BDAT_NONE) {
        smtpd_reply(s, "503 5.5.1 Error: DATA after BDAT");
        count_error(s, CNT_DATA);
        return;
    }
    if (*cmd->args) {
        smtpd_reply(s, "501 5.5.4 Syntax: DATA");
        count_error(s, CNT_DATA);
        return;
    }
    if (data_preconditions(s, "DATA", CNT_DATA) != 0)
        return;
    data_start(s, CNT_DATA);
}

static void data_checked(struct smtpd_session *s, const struct restrict_result *r)
{
    s->state = SMTPD_CMD;
    if (!refused(r)) {
        hooks_then(s, PHASE_DATA, NULL, data_hooked);
        return;
    }
    data_hooked(s, r);
}

static void data_hooked(struct smtpd_session *s, const struct restrict_result *r)
{
    int bdat = s->tx->eom_counter == CNT_BDAT;
    enum smtpd_counter c = bdat ? CNT_BDAT : CNT_DATA;
    s->state = SMTPD_CMD;
    if (r->verdict == RV_REJECT || r->verdict == RV_DEFER) {
        log_reject(s, "reject", bdat ? "BDAT" : "DATA", r->code, r->enhanced, r->text, NULL);
        if (bdat) {
            bdat_skip(s, petrel_pool_printf(s->scratch, "%d %s %s", r->code, r->enhanced, r->text));
        } else {
            smtpd_reply(s, "%d %s %s", r->code, r->enhanced, r->text);
            count_error(s, c);
        }
        smtpd_continue(s);
        return;
    }
    if (open_queue_file(s) != 0) {
        if (bdat) {
            bdat_skip(s, "451 4.3.0 Error: queue file write error");
        } else {
            smtpd_reply(s, "451 4.3.0 Error: queue file write error");
            tx_free(s);
            count_error(s, c);
        }
        smtpd_continue(s);
        return;
    }
    if (bdat) {
        s->bdat_state = BDAT_OK;
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

/* --- end of message: commit on the thread pool, answer on the loop --- */

struct commit_job {
    struct smtpd_session *session;
    struct smtpd_tx *tx;
    struct smtpd_worker *worker;
    unsigned long long size;
    int result, err;
    int hold_failed;
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
    job->result = queue_writer_commit(job->tx->writer);
    job->err = errno;
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
    } else {
        queue_writer_free(tx->writer);
    }
    tx->writer = NULL;
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
        smtpd_plugin_queued(s, tx->queue_id);
        message_received(s);
    } else {
        smtpd_reply(s, "451 4.3.0 Error: queue file write error");
        count_error(s, s->counters[CNT_BDAT] ? CNT_BDAT : CNT_DATA);
    }
    free(job);
    tx_free(s);
    smtpd_continue(s);
}

static void eom_hooked(struct smtpd_session *s, const struct restrict_result *r);
static void eod_checked(struct smtpd_session *s, const struct restrict_result *r);

static void finish_message(struct smtpd_session *s, enum smtpd_counter c)
{
    struct smtpd_tx *tx = s->tx;
    const char *verb = c == CNT_BDAT ? "BDAT" : "DATA";
    tx->eom_counter = c;
    smtpd_content_end(s);
    if (tx->content_bad) {
        /* smtpd_forbid_bare_newline = reject */
        smtpd_reply(s, "%d 5.5.2 Error: bare <LF> received", s->set->bare_lf_reject_code);
        log_reject(s, "reject", verb, s->set->bare_lf_reject_code, "5.5.2", "Error: bare <LF> received", NULL);
        tx_free(s);
        count_error(s, c);
        return;
    }
    unsigned long long size = queue_writer_content_size(tx->writer);
    int oversize = c == CNT_DATA ? s->data.oversize : 0;
    if (oversize || (s->set->message_size_limit && size > s->set->message_size_limit)) {
        smtpd_reply(s, "552 5.3.4 Message size exceeds fixed limit");
        log_reject(s, "reject", verb, 552, "5.3.4", "Message size exceeds fixed limit", NULL);
        tx_free(s);
        count_error(s, c);
        return;
    }
    if (tx->write_errno) {
        msg_warn("%s: queue file write error: %s", tx->queue_id, strerror(tx->write_errno));
        smtpd_reply(s, "451 4.3.0 Error: queue file write error");
        tx_free(s);
        count_error(s, c);
        return;
    }
    /* A header or body hook refused while the content streamed in. */
    if (refused(&tx->content_verdict)) {
        eom_hooked(s, &tx->content_verdict);
        return;
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
    hooks_then(s, PHASE_EOM, NULL, eom_hooked);
}

/* smtpd_end_of_data_restrictions decided; the modules' end-of-message hooks come next. */
static void eod_checked(struct smtpd_session *s, const struct restrict_result *r)
{
    if (refused(r)) {
        eom_hooked(s, r);
        return;
    }
    if (r->verdict == RV_HOLD)
        s->tx->hold = 1;
    else if (r->verdict == RV_DISCARD)
        s->tx->discard = 1;
    hooks_then(s, PHASE_EOM, NULL, eom_hooked);
}

static void eom_hooked(struct smtpd_session *s, const struct restrict_result *r)
{
    struct smtpd_tx *tx = s->tx;
    enum smtpd_counter c = tx->eom_counter;
    s->state = SMTPD_CMD;
    if (refused(r)) {
        log_reject(s, r->verdict == RV_REJECT ? "reject" : "reject", "END-OF-MESSAGE", r->code, r->enhanced,
                   r->text, NULL);
        smtpd_reply(s, "%d %s %s", r->code, r->enhanced, r->text);
        tx_free(s);
        count_error(s, c);
        smtpd_continue(s);
        return;
    }
    if (r->verdict == RV_HOLD)
        tx->hold = 1;
    else if (r->verdict == RV_DISCARD)
        tx->discard = 1;
    smtpd_content_rewrite_headers(s);
    if (!tx->discard && smtpd_content_edited(s) && smtpd_content_rewrite(s, create_writer, write_received) != 0) {
        msg_warn("%s: cannot apply the modules' changes: %s", tx->queue_id, strerror(errno));
        smtpd_reply(s, "451 4.3.0 Error: queue file write error");
        tx_free(s);
        count_error(s, c);
        smtpd_continue(s);
        return;
    }
    if (tx->discard) {
        /* Postfix's DISCARD: the client is told the message was taken. */
        msg_info("%s: discard: END-OF-MESSAGE from %s: %s; from=<%s> proto=%s helo=<%s>", tx->queue_id,
                 s->namaddr, "discarded by restriction or module", tx->mail.address, s->esmtp ? "ESMTP" : "SMTP",
                 s->helo ? s->helo : "");
        smtpd_reply(s, "250 2.0.0 Ok: queued as %s", tx->queue_id);
        message_received(s);
        tx_free(s);
        smtpd_continue(s);
        return;
    }
    if (tx->hold)
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
    if (tx->write_errno)
        return 0;
    if (queue_writer_write(tx->writer, data, n) != 0)
        tx->write_errno = errno ? errno : EIO;
    smtpd_content_feed(s, data, n);
    return 0;
}

/* Feeds buffered input to the DATA reader; returns 1 when the message ended. */
static int consume_data(struct smtpd_session *s)
{
    struct evbuffer *in = bufferevent_get_input(s->bev);
    while (evbuffer_get_length(in) > 0) {
        struct evbuffer_iovec vec;
        if (evbuffer_peek(in, -1, NULL, &vec, 1) < 1)
            break;
        int done = 0;
        size_t used = smtp_data_feed(&s->data, vec.iov_base, vec.iov_len, emit_content, s, &done);
        evbuffer_drain(in, used);
        if (done) {
            if (smtp_data_bare_lf_violation(&s->data))
                s->tx->content_bad = 1;
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
                tx->content_bad = 1;
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

static void bdat_chunk_done(struct smtpd_session *s)
{
    struct smtpd_tx *tx = s->tx;
    s->state = SMTPD_CMD;
    if (s->bdat_refusal) {
        smtpd_reply(s, "%s", s->bdat_refusal);
        s->bdat_refusal = NULL;
        count_error(s, CNT_BDAT);
        tx_free(s);
        s->bdat_state = s->bdat_last ? BDAT_NONE : BDAT_ERROR;
        return;
    }
    if (s->set->message_size_limit && tx->bdat_total > s->set->message_size_limit) {
        smtpd_reply(s, "552 5.3.4 Message size exceeds fixed limit");
        log_reject(s, "reject", "BDAT", 552, "5.3.4", "Message size exceeds fixed limit", NULL);
        count_error(s, CNT_BDAT);
        tx_free(s);
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
    finish_message(s, CNT_BDAT);
}

static void consume_bdat(struct smtpd_session *s)
{
    struct evbuffer *in = bufferevent_get_input(s->bev);
    while (s->bdat_remaining > 0 && evbuffer_get_length(in) > 0) {
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

static void cmd_bdat(struct smtpd_session *s, const struct smtp_command *cmd)
{
    s->last_command = "BDAT";
    unsigned long long size;
    int last;
    struct smtp_reply_err err;
    if (smtp_parse_bdat(cmd->args, &size, &last, &err) != 0) {
        /* Without a valid size we cannot find the next command: give up. */
        smtpd_reply(s, "%d %s %s", err.code, err.enhanced, err.text);
        count_error(s, CNT_BDAT);
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
            log_reject(s, "reject", "BDAT", 554, "5.5.1", "Error: no valid recipients", NULL);
            bdat_skip(s, "554 5.5.1 Error: no valid recipients");
            return;
        }
        data_start(s, CNT_BDAT);
        return;
    }
    s->state = SMTPD_BDAT;
}

/* --- STARTTLS --- */

static void cmd_starttls(struct smtpd_session *s, const struct smtp_command *cmd)
{
    s->last_command = "STARTTLS";
    if (*cmd->args) {
        smtpd_reply(s, "501 5.5.4 Syntax: STARTTLS");
        count_error(s, CNT_STARTTLS);
        return;
    }
    if (s->tls_active) {
        smtpd_reply(s, "554 5.5.1 Error: TLS already active");
        count_error(s, CNT_STARTTLS);
        return;
    }
    if (s->set->tls_ctx == NULL || s->set->tls_level == TLS_LEVEL_NONE) {
        smtpd_reply(s, "502 5.5.1 Error: command not implemented");
        count_error(s, CNT_STARTTLS);
        return;
    }
    if (s->tx) {
        smtpd_reply(s, "503 5.5.1 Error: MAIL transaction in progress");
        count_error(s, CNT_STARTTLS);
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
        session_close_after_flush(s);
        return;
    }
    bufferevent_setcb(s->bev, session_read_cb, session_write_cb, session_event_cb, s);
    bufferevent_set_timeouts(s->bev, &s->set->timeout, &s->set->timeout);
    limit_buffers(s);
    bufferevent_enable(s->bev, EV_READ | EV_WRITE);
    /* RFC 3207: forget everything learned before TLS. */
    s->helo = NULL;
    s->esmtp = 0;
    s->bdat_state = BDAT_NONE;
    tx_free(s);
}

/* ------------------------------------------------------------------ */
/* SMTP AUTH (RFC 4954): PLAIN and LOGIN, verified by a module's SASL back-end */

static int b64_value(int c)
{
    if (c >= 'A' && c <= 'Z') return c - 'A';
    if (c >= 'a' && c <= 'z') return c - 'a' + 26;
    if (c >= '0' && c <= '9') return c - '0' + 52;
    if (c == '+') return 62;
    if (c == '/') return 63;
    return -1;
}

/* Strict base64: returns the decoded length, or -1. out has room for strlen(in). */
static long b64_decode(const char *in, char *out)
{
    size_t len = strlen(in), o = 0;
    if (len % 4)
        return -1;
    for (size_t i = 0; i < len; i += 4) {
        int v[4];
        for (int k = 0; k < 4; k++) {
            v[k] = in[i + k] == '=' ? -2 : b64_value((unsigned char)in[i + k]);
            if (v[k] == -1 || (v[k] == -2 && (i + 4 != len || k < 2)))
                return -1;
        }
        if (v[2] == -2 && v[3] != -2)
            return -1;
        out[o++] = (char)(v[0] << 2 | v[1] >> 4);
        if (v[2] >= 0)
            out[o++] = (char)((v[1] & 15) << 4 | v[2] >> 2);
        if (v[3] >= 0)
            out[o++] = (char)((v[2] & 3) << 6 | v[3]);
    }
    return (long)o;
}

struct sasl_call {
    const char *mech, *user, *password;
};

static petrel_verdict call_sasl(petrel_session *ps, void *arg)
{
    struct sasl_call *c = arg;
    struct smtpd_session *s = ps->smtpd;
    return s->set->sasl->check(ps, s->set->sasl_path, c->mech, c->user, c->password);
}

static void auth_hooked(struct smtpd_session *s, const struct restrict_result *r)
{
    s->state = SMTPD_CMD;
    if (refused(r)) {
        smtpd_reply(s, "%d %s %s", r->code, r->enhanced, r->text);
        s->sasl_username = s->sasl_method = NULL;
        count_error(s, CNT_AUTH);
    } else {
        smtpd_reply(s, "235 2.7.0 Authentication successful");
    }
    smtpd_continue(s);
}

static void sasl_answered(struct smtpd_session *s, struct petrel_pending *p, const struct restrict_result *r)
{
    const char *mech = s->auth_mech;
    s->state = SMTPD_CMD;
    s->auth_mech = NULL;
    if (r->verdict == RV_PERMIT) {
        /* The login outlives the command: its own pool, reset when a later
         * AUTH succeeds again (after a module refused this one). */
        if (s->login_pool)
            petrel_pool_reset(s->login_pool);
        else
            s->login_pool = petrel_pool_create(SMALL_POOL_SIZE);
        s->sasl_username = petrel_pool_strdup(s->login_pool, s->auth_user);
        s->sasl_method = mech;
        s->protocol = s->tls_active ? "ESMTPSA" : "ESMTPA";
        s->auth_user = NULL;
        hooks_then(s, PHASE_AUTH, mech, auth_hooked);
        return;
    }
    s->auth_user = NULL;
    if (r->verdict == RV_DEFER) {
        msg_warn("%s: SASL %s authentication failed: temporary failure of the back-end", s->namaddr, mech);
        smtpd_reply(s, "454 4.7.0 Temporary authentication failure");
    } else {
        /* Postfix's line, which fail2ban and friends read. */
        msg_warn("%s: SASL %s authentication failed: authentication failure", s->namaddr, mech);
        smtpd_reply(s, "535 5.7.8 Error: authentication failed: authentication failure");
    }
    count_error(s, CNT_AUTH);
    smtpd_continue(s);
}

static void sasl_verify(struct smtpd_session *s, const char *user, const char *password)
{
    struct sasl_call call = { s->auth_mech, user, password };
    s->auth_user = petrel_pool_strdup(s->scratch, user);
    s->state = SMTPD_WAIT;
    struct petrel_pending *pending;
    petrel_verdict v = smtpd_plugin_call(s, s->set->sasl_module, "sasl check", call_sasl, &call, &pending);
    if (pending) {
        smtpd_plugin_wait(s, pending, sasl_answered);
        return;
    }
    struct restrict_result r = { v == PETREL_ACCEPT ? RV_PERMIT : v == PETREL_TEMPFAIL ? RV_DEFER : RV_REJECT,
                                 0, NULL, NULL };
    if ((int)v == PETREL_TEMPFAIL + 100)
        r.verdict = RV_DEFER;
    sasl_answered(s, NULL, &r);
}

static void auth_plain(struct smtpd_session *s, const char *b64)
{
    char *raw = petrel_pool_alloc(s->scratch, strlen(b64) + 1);
    long n = b64_decode(b64, raw);
    if (n < 0) {
        s->state = SMTPD_CMD;
        s->auth_mech = NULL;
        smtpd_reply(s, "501 5.5.2 Cannot decode response");
        count_error(s, CNT_AUTH);
        return;
    }
    /* authzid NUL authcid NUL password */
    const char *authz = raw, *end = raw + n;
    const char *user = memchr(authz, '\0', (size_t)n);
    const char *pass = user ? memchr(user + 1, '\0', (size_t)(end - user - 1)) : NULL;
    if (user == NULL || pass == NULL || memchr(pass + 1, '\0', (size_t)(end - pass - 1))) {
        s->state = SMTPD_CMD;
        s->auth_mech = NULL;
        smtpd_reply(s, "501 5.5.2 Invalid authentication data");
        count_error(s, CNT_AUTH);
        return;
    }
    char *password = petrel_pool_strndup(s->scratch, pass + 1, (size_t)(end - pass - 1));
    sasl_verify(s, user + 1, password);
}

static void auth_response(struct smtpd_session *s, const char *line)
{
    if (strcmp(line, "*") == 0) {
        s->state = SMTPD_CMD;
        s->auth_mech = NULL;
        s->auth_user = NULL;
        smtpd_reply(s, "501 5.7.0 Authentication aborted");
        count_error(s, CNT_AUTH);
        return;
    }
    if (strcmp(s->auth_mech, "PLAIN") == 0) {
        auth_plain(s, line);
        return;
    }
    char *raw = petrel_pool_alloc(s->scratch, strlen(line) + 1);
    long n = b64_decode(line, raw);
    if (n < 0 || memchr(raw, '\0', (size_t)n)) {
        s->state = SMTPD_CMD;
        s->auth_mech = NULL;
        s->auth_user = NULL;
        smtpd_reply(s, "501 5.5.2 Cannot decode response");
        count_error(s, CNT_AUTH);
        return;
    }
    raw[n] = '\0';
    if (s->auth_user == NULL) {
        s->auth_user = raw;
        smtpd_reply(s, "334 UGFzc3dvcmQ6");   /* "Password:" */
        return;
    }
    sasl_verify(s, s->auth_user, raw);
}

static void cmd_auth(struct smtpd_session *s, const struct smtp_command *cmd)
{
    const struct smtpd_settings *set = s->set;
    s->last_command = "AUTH";
    if (set->sasl == NULL) {
        smtpd_reply(s, "503 5.5.1 Error: authentication not enabled");
        count_error(s, CNT_AUTH);
        return;
    }
    if (set->tls_auth_only && !s->tls_active) {
        smtpd_reply(s, "538 5.7.11 Encryption required for requested authentication mechanism");
        count_error(s, CNT_AUTH);
        return;
    }
    if (s->sasl_username) {
        smtpd_reply(s, "503 5.5.1 Error: already authenticated");
        count_error(s, CNT_AUTH);
        return;
    }
    if (s->tx) {
        smtpd_reply(s, "503 5.5.1 Error: MAIL transaction in progress");
        count_error(s, CNT_AUTH);
        return;
    }
    size_t ml = strcspn(cmd->args, " ");
    const char *initial = cmd->args[ml] ? cmd->args + ml + 1 : NULL;
    if (ml == 5 && strncasecmp(cmd->args, "PLAIN", 5) == 0) {
        s->auth_mech = "PLAIN";
        s->auth_user = NULL;
        if (initial && strcmp(initial, "=") != 0) {
            auth_plain(s, initial);
        } else {
            s->state = SMTPD_AUTH;
            smtpd_reply(s, "334 ");
        }
    } else if (ml == 5 && strncasecmp(cmd->args, "LOGIN", 5) == 0) {
        s->auth_mech = "LOGIN";
        s->auth_user = NULL;
        s->state = SMTPD_AUTH;
        if (initial) {
            auth_response(s, initial);
        } else {
            smtpd_reply(s, "334 VXNlcm5hbWU6");   /* "Username:" */
        }
    } else if (ml == 0) {
        smtpd_reply(s, "501 5.5.4 Syntax: AUTH mechanism");
        count_error(s, CNT_AUTH);
    } else {
        smtpd_reply(s, "504 5.5.4 Unrecognized authentication type");
        count_error(s, CNT_AUTH);
    }
}

/* ------------------------------------------------------------------ */
/* the command loop                                                    */

static int is_pipelining_violation(struct smtpd_session *s, enum smtp_verb verb)
{
    if (!s->set->forbid_unauth_pipelining)
        return 0;
    if (evbuffer_get_length(bufferevent_get_input(s->bev)) == 0)
        return 0;
    /* RFC 2920: these may only end a group; a HELO (not EHLO) client may not
     * pipeline at all. BDAT is followed by its chunk by design. */
    switch (verb) {
    case SMTP_VERB_EHLO: case SMTP_VERB_HELO: case SMTP_VERB_DATA: case SMTP_VERB_NOOP:
    case SMTP_VERB_VRFY: case SMTP_VERB_EXPN: case SMTP_VERB_ETRN: case SMTP_VERB_QUIT:
    case SMTP_VERB_HELP: case SMTP_VERB_AUTH:
        return 1;
    case SMTP_VERB_BDAT: case SMTP_VERB_STARTTLS:
        return 0;
    default:
        return !s->esmtp;
    }
}

static int is_junk_command(enum smtp_verb verb)
{
    switch (verb) {
    case SMTP_VERB_HELO: case SMTP_VERB_EHLO: case SMTP_VERB_NOOP: case SMTP_VERB_VRFY:
    case SMTP_VERB_ETRN: case SMTP_VERB_RSET:
        return 1;
    default:
        return 0;
    }
}

static void too_many_errors(struct smtpd_session *s)
{
    msg_info("too many errors after %s from %s", s->last_command ? s->last_command : "CONNECT", s->namaddr);
    smtpd_session_shutdown(s, petrel_pool_printf(s->pool, "421 4.7.0 %s Error: too many errors",
                                                 s->set->myhostname));
}

static void handle_command(struct smtpd_session *s, char *line, size_t len)
{
    struct smtp_command cmd;
    const struct smtpd_settings *set = s->set;
    if (s->debug)
        msg_info("< %s: %.*s", s->namaddr, (int)(len > 500 ? 500 : len), line);
    /* An empty (or all-blank) line has no command word at all: Postfix
     * answers it as a syntax error (500), not as an unknown command (502). */
    size_t blanks = strspn(line, " \t");
    if (smtp_parse_command(line, len, &cmd) != 0 || blanks == len) {
        s->counters[CNT_UNKNOWN]++;
        s->last_command = "UNKNOWN";
        smtpd_reply(s, "500 5.5.2 Error: bad syntax");
        count_error(s, CNT_UNKNOWN);
        return;
    }
    if (is_pipelining_violation(s, cmd.verb)) {
        msg_info("improper command pipelining after %s from %s: %.100s", smtp_verb_name(cmd.verb),
                 s->namaddr, line);
        smtpd_reply(s, "554 5.5.0 Error: SMTP protocol synchronization");
        s->last_command = smtp_verb_name(cmd.verb);
        session_close_after_flush(s);
        return;
    }
    /* 8-bit bytes in commands are legal only with SMTPUTF8, inside addresses
     * (checked by the address parser); elsewhere Postfix is lenient. */
    if (tls_required(s) && cmd.verb != SMTP_VERB_EHLO && cmd.verb != SMTP_VERB_HELO &&
        cmd.verb != SMTP_VERB_STARTTLS && cmd.verb != SMTP_VERB_QUIT && cmd.verb != SMTP_VERB_NOOP &&
        cmd.verb != SMTP_VERB_RSET) {
        s->last_command = smtp_verb_name(cmd.verb);
        smtpd_reply(s, "530 5.7.0 Must issue a STARTTLS command first");
        s->errors++;
        return;
    }
    switch (cmd.verb) {
    case SMTP_VERB_EHLO:
        s->counters[CNT_EHLO]++;
        cmd_helo(s, &cmd, 1);
        break;
    case SMTP_VERB_HELO:
        s->counters[CNT_HELO]++;
        cmd_helo(s, &cmd, 0);
        break;
    case SMTP_VERB_MAIL:
        s->counters[CNT_MAIL]++;
        cmd_mail(s, &cmd);
        break;
    case SMTP_VERB_RCPT:
        s->counters[CNT_RCPT]++;
        cmd_rcpt(s, &cmd);
        break;
    case SMTP_VERB_DATA:
        s->counters[CNT_DATA]++;
        cmd_data(s, &cmd);
        break;
    case SMTP_VERB_BDAT:
        s->counters[CNT_BDAT]++;
        cmd_bdat(s, &cmd);
        break;
    case SMTP_VERB_RSET:
        s->counters[CNT_RSET]++;
        s->last_command = "RSET";
        if (*cmd.args) {
            smtpd_reply(s, "501 5.5.4 Syntax: RSET");
            count_error(s, CNT_RSET);
            break;
        }
        tx_free(s);
        s->bdat_state = BDAT_NONE;
        smtpd_reply(s, "250 2.0.0 Ok");
        break;
    case SMTP_VERB_NOOP:
        s->counters[CNT_NOOP]++;
        s->last_command = "NOOP";
        smtpd_reply(s, "250 2.0.0 Ok");
        break;
    case SMTP_VERB_QUIT:
        s->counters[CNT_QUIT]++;
        s->last_command = "QUIT";
        smtpd_reply(s, "221 2.0.0 Bye");
        session_close_after_flush(s);
        break;
    case SMTP_VERB_VRFY:
        s->counters[CNT_VRFY]++;
        s->last_command = "VRFY";
        if (set->disable_vrfy) {
            smtpd_reply(s, "502 5.5.1 VRFY command is disabled");
            count_error(s, CNT_VRFY);
        } else if (*cmd.args == '\0') {
            smtpd_reply(s, "501 5.5.4 Syntax: VRFY address");
            count_error(s, CNT_VRFY);
        } else {
            /* RFC 5321 3.5.3: cannot verify, but will accept and attempt delivery. */
            smtpd_reply(s, "252 2.0.0 Send some mail, I'll try my best");
        }
        break;
    case SMTP_VERB_HELP:
        s->counters[CNT_HELP]++;
        s->last_command = "HELP";
        smtpd_reply(s, "214 2.0.0 Commands: EHLO HELO MAIL RCPT DATA BDAT RSET NOOP QUIT VRFY HELP STARTTLS");
        break;
    case SMTP_VERB_STARTTLS:
        s->counters[CNT_STARTTLS]++;
        cmd_starttls(s, &cmd);
        break;
    case SMTP_VERB_AUTH:
        s->counters[CNT_AUTH]++;
        cmd_auth(s, &cmd);
        break;
    case SMTP_VERB_EXPN:
    case SMTP_VERB_ETRN:
    case SMTP_VERB_UNKNOWN:
    default:
        s->counters[CNT_UNKNOWN]++;
        s->last_command = "UNKNOWN";
        if (cmd.verb == SMTP_VERB_ETRN)
            smtpd_reply(s, "458 4.3.0 Unable to queue messages for the node");
        else
            smtpd_reply(s, "502 5.5.2 Error: command not recognized");
        count_error(s, CNT_UNKNOWN);
        break;
    }
    /* Postfix's smtpd_junk_command_limit: the commands a client could repeat
     * forever without an error (HELO, EHLO, NOOP, VRFY, ETRN, RSET) count as
     * errors once more than the limit were sent, so the error limits end a
     * flood. A message received resets the count (and the errors). */
    if (is_junk_command(cmd.verb) && s->state != SMTPD_CLOSING && s->junk++ > set->junk_command_limit)
        s->errors++;
}

static void error_delay_over(evutil_socket_t fd, short what, void *arg)
{
    smtpd_continue(arg);
}

/* An AUTH response line over smtpd_sasl_response_limit ends the exchange
 * as in Postfix. */
static void auth_line_too_long(struct smtpd_session *s)
{
    s->long_auth_line = 0;
    s->state = SMTPD_CMD;
    s->auth_mech = NULL;
    s->auth_user = NULL;
    smtpd_reply(s, "500 5.5.6 SASL response limit exceeded");
    count_error(s, CNT_AUTH);
}

/* One AUTH response line (RFC 4954 4). A line longer than
 * smtpd_sasl_response_limit is discarded up to its end, however it arrives,
 * before it is answered; the exchange then ends, so the rest of the line is
 * never taken for a command. Returns 1 when more input is needed. */
static int auth_line(struct smtpd_session *s, struct evbuffer *in)
{
    size_t limit = s->set->sasl_response_limit;
    struct evbuffer_ptr eol = evbuffer_search_eol(in, NULL, NULL, EVBUFFER_EOL_LF);
    if (eol.pos < 0) {
        size_t avail = evbuffer_get_length(in);
        if (avail > limit + 1 || s->long_auth_line) {
            if (!s->long_auth_line)
                msg_warn("%s: SASL response longer than %zu bytes", s->namaddr, limit);
            evbuffer_drain(in, avail);
            s->long_auth_line = 1;
        }
        return 1;
    }
    size_t alen = (size_t)eol.pos;
    if (s->long_auth_line || alen > limit + 1) {
        if (!s->long_auth_line)
            msg_warn("%s: SASL response longer than %zu bytes", s->namaddr, limit);
        evbuffer_drain(in, alen + 1);
        auth_line_too_long(s);
        return 0;
    }
    char *aline = petrel_pool_alloc(s->scratch, alen + 1);
    evbuffer_remove(in, aline, alen + 1);
    if (alen && aline[alen - 1] == '\r')
        alen--;
    aline[alen] = '\0';
    if (alen > limit) {
        msg_warn("%s: SASL response longer than %zu bytes", s->namaddr, limit);
        auth_line_too_long(s);
        return 0;
    }
    auth_response(s, aline);
    return 0;
}

/* Reads complete command lines and dispatches them until input runs out or
 * the session waits for something. */
static void session_process_input(struct smtpd_session *s)
{
    if (s->in_input_loop)
        return;   /* a continuation ran synchronously: the outer loop goes on */
    s->in_input_loop = 1;
    struct evbuffer *in = bufferevent_get_input(s->bev);
    const struct smtpd_settings *set = s->set;
    while (s->state != SMTPD_CLOSING && s->state != SMTPD_WAIT) {
        if (s->state == SMTPD_DATA) {
            if (!consume_data(s))
                break;
            s->state = SMTPD_CMD;
            finish_message(s, CNT_DATA);
            continue;
        }
        if (s->state == SMTPD_BDAT) {
            consume_bdat(s);
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
            if (auth_line(s, in) != 0)
                break;
            continue;
        }
        if (s->delay_timer && evtimer_pending(s->delay_timer, NULL))
            break;
        size_t avail = evbuffer_get_length(in);
        if (avail == 0)
            break;
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
            session_close_after_flush(s);
            break;
        }
        int errors_before = s->errors;
        handle_command(s, line, linelen);
        if (s->errors > errors_before && s->errors >= set->soft_error_limit &&
            s->state != SMTPD_CLOSING && set->error_sleep_time > 0) {
            /* Tarpit clients that keep making mistakes (smtpd_error_sleep_time). */
            struct timeval tv = { (time_t)set->error_sleep_time, 0 };
            if (s->delay_timer == NULL)
                s->delay_timer = evtimer_new(s->worker->base, error_delay_over, s);
            evtimer_add(s->delay_timer, &tv);
            break;
        }
    }
    s->in_input_loop = 0;
    if (s->state == SMTPD_CLOSING && evbuffer_get_length(bufferevent_get_output(s->bev)) == 0) {
        log_disconnect(s);
        session_free(s);
    }
}

void smtpd_session_stop(struct smtpd_session *s)
{
    if (s->state == SMTPD_CLOSING || (s->tx && s->tx->commit_job))
        return;
    /* Whatever it waits for (a module, a restriction) answers nobody now. */
    smtpd_plugin_session_gone(s);
    s->check = NULL;
    if (s->delay_timer)
        evtimer_del(s->delay_timer);
    if (s->tx && s->tx->writer)
        msg_info("%s: %s in progress from %s abandoned at shutdown; nothing was accepted", s->tx->queue_id,
                 s->tx->eom_counter == CNT_BDAT ? "BDAT" : "DATA", s->namaddr);
    tx_free(s);   /* removes an incomplete queue file */
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
    session_process_input(s);
}
