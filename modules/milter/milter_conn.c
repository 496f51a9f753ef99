/*
 * One milter connection's state machine (see milter_conn.h for the
 * contract): its life, socket, timer, results and failures. Sending events
 * is milter_events.c, reading replies milter_reply.c (milter_conn_int.h
 * holds what they share). Postfix's src/milter/milter8.c is the model for
 * what happens when; the structure is our own, because milter8.c blocks on
 * its socket and this must not.
 *
 * States. CLOSED -> CONNECTING -> NEGOTIATING -> READY (options known) ->
 * SESSION (CONNECT sent) -> back to READY after QUIT_NC, or CLOSED after
 * QUIT. A verdict at CONNECT or HELO ends the session's conversation:
 * ACCEPT_CON (the milter wants nothing more) or REJECT_CON (every later
 * event gets the same reply), and the socket is closed, as Postfix does.
 * ERROR is the same after a failure: every event gets
 * milter_default_action's reply. Inside SESSION a transaction runs from
 * MAIL to EOM or ABORT; a message-level verdict (ACCEPT, DISCARD, or a
 * refusal at MAIL, DATA or in the content) ends the milter's part of it.
 *
 * One event at a time. Each event is: the macros for its stage (a MACRO
 * packet, no reply), the event packet, then either a reply (we wait) or no
 * reply (SMFIP_NR_*: the call is done at once and the packet drains in the
 * background; above OUT_HIGH_WATER bytes waiting, the call waits for the
 * drain instead). At end of message, a partly filled body chunk is sent
 * first and EOM follows its reply, inside the same pending call.
 *
 * Replies are read through milter_reader: whole packets, except REPLBODY
 * which comes in pieces, normalised and handed on as they arrive. A reply
 * that is not allowed after the event it answers, or has bytes it should
 * not have, fails the milter (Postfix's wording where it has one).
 *
 * Timer. One timer per connection, armed while we wait for the milter
 * (connect, reply, or output that will not drain). The time of the last
 * progress (bytes moved either way) is kept; when the timer fires early
 * relative to it, it is re-armed for the rest, so progress costs no timer
 * operations.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "log_line.h"
#include "milter_conn_int.h"

void mc_sticky_clear(sticky *st)
{
    free(st->strings);
    memset(st, 0, sizeof *st);
}

uint64_t mc_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

__attribute__((format(printf, 3, 4)))
void mc_say(milter_conn *c, milter_log_level level, const char *fmt, ...)
{
    if (c->ops.log == NULL)
        return;
    char text[1024];
    va_list ap;
    va_start(ap, fmt);
    log_line_format(text, sizeof text, "milter", c->s->name, fmt, ap);
    va_end(ap);
    c->ops.log(c->arg, level, text);
}

milter_settings *milter_settings_create(const milter_config *cfg, char *err, size_t errlen)
{
    milter_settings *s = calloc(1, sizeof *s);
    if (s == NULL) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    char why[256];
    snprintf(s->name, sizeof s->name, "%s", cfg->name ? cfg->name : "");
    if (milter_endpoint_parse(cfg->name, cfg->unix_base, &s->endpoint, why, sizeof why) < 0) {
        snprintf(err, errlen, "%s", why);
        goto fail;
    }
    if (milter_protocol_parse(cfg->protocol ? cfg->protocol : "6", &s->version, &s->offer, why,
                              sizeof why) < 0) {
        snprintf(err, errlen, "milter_protocol: %s", why);
        goto fail;
    }
    if (!cfg->offer_rcpt_rejected)
        s->offer &= ~MILTER_P_RCPT_REJ;
    if (milter_default_action_parse(cfg->default_action ? cfg->default_action : "tempfail",
                                    &s->default_action) < 0) {
        snprintf(err, errlen, "milter_default_action: unknown action \"%s\" (accept, reject, tempfail, "
                 "quarantine or shutdown)", cfg->default_action);
        goto fail;
    }
    s->connect_ms = cfg->connect_timeout_ms ? cfg->connect_timeout_ms : DEFAULT_CONNECT_MS;
    s->command_ms = cfg->command_timeout_ms ? cfg->command_timeout_ms : DEFAULT_COMMAND_MS;
    s->content_ms = cfg->content_timeout_ms ? cfg->content_timeout_ms : DEFAULT_CONTENT_MS;
    for (int i = 0; i < MILTER_MACRO_STAGES; i++) {
        const char *list = cfg->macros[i] ? cfg->macros[i] : milter_macro_params[i].default_value;
        if (milter_macro_list_parse(&s->macros[i], list, why, sizeof why) < 0) {
            snprintf(err, errlen, "%s: %s", milter_macro_params[i].parameter, why);
            goto fail;
        }
    }
    s->max_reply = cfg->max_reply ? cfg->max_reply : MILTER_REPLY_MAX_DEFAULT;
    s->max_body = cfg->max_body ? cfg->max_body : DEFAULT_MAX_BODY;
    return s;
fail:
    free(s);
    return NULL;
}

void milter_settings_free(milter_settings *s)
{
    free(s);
}

const char *milter_settings_name(const milter_settings *s)
{
    return s->name;
}

milter_conn *milter_conn_create(const milter_settings *s, const milter_conn_ops *ops, void *arg)
{
    milter_conn *c = calloc(1, sizeof *c);
    if (c == NULL)
        return NULL;
    c->s = s;
    c->ops = *ops;
    c->arg = arg;
    c->fd = -1;
    c->state = S_CLOSED;
    c->out.limit = OUT_LIMIT;
    c->chunk.limit = MILTER_CHUNK_MAX;
    milter_reader_init(&c->reader, s->max_reply, s->max_body, MILTER_RSP_REPLBODY);
    return c;
}

void mc_sync_io(milter_conn *c)
{
    int want = 0;
    if (c->fd >= 0) {
        if (c->state == S_CONNECTING)
            want = MILTER_IO_WRITE;
        else {
            /* Always readable: replies, and a close or stray bytes while idle. */
            want = MILTER_IO_READ;
            if (milter_buf_used(&c->out) > 0)
                want |= MILTER_IO_WRITE;
        }
    }
    if (want != c->watching) {
        if (c->ops.watch)
            c->ops.watch(c->arg, c->fd, want);
        c->watching = want;
    }
    int busy = c->fd >= 0 && (c->state == S_CONNECTING || c->awaiting || milter_buf_used(&c->out) > 0);
    if (busy && !c->timer_armed) {
        c->timer_armed = 1;
        if (c->ops.timer)
            c->ops.timer(c->arg, c->wait_ms);
    } else if (!busy && c->timer_armed) {
        c->timer_armed = 0;
        if (c->ops.timer)
            c->ops.timer(c->arg, 0);
    }
}

void mc_close_socket(milter_conn *c)
{
    if (c->fd < 0)
        return;
    if (c->watching && c->ops.watch)
        c->ops.watch(c->arg, c->fd, 0);
    c->watching = 0;
    if (c->timer_armed && c->ops.timer)
        c->ops.timer(c->arg, 0);
    c->timer_armed = 0;
    close(c->fd);
    c->fd = -1;
    c->awaiting = 0;
    c->draining = 0;
    c->then_eom = 0;
    milter_buf_reset(&c->out);
    milter_reader_free(&c->reader);
    milter_reader_init(&c->reader, c->s->max_reply, c->s->max_body, MILTER_RSP_REPLBODY);
}

void mc_free_message_buffers(milter_conn *c)
{
    milter_buf_free(&c->chunk);
    c->chunk.limit = MILTER_CHUNK_MAX;
    free(c->normbuf);
    c->normbuf = NULL;
    if (c->out.cap > OUT_LOW_WATER && milter_buf_used(&c->out) == 0) {
        milter_buf_free(&c->out);
        c->out.limit = OUT_LIMIT;
    }
    if (c->scratch.cap > 4096)
        milter_buf_free(&c->scratch);
}

void milter_conn_free(milter_conn *c)
{
    if (c == NULL)
        return;
    mc_close_socket(c);
    milter_buf_free(&c->out);
    milter_buf_free(&c->chunk);
    milter_buf_free(&c->scratch);
    milter_reader_free(&c->reader);
    free(c->normbuf);
    for (int i = 0; i < MILTER_MACRO_STAGES; i++)
        free(c->symlist[i]);
    mc_sticky_clear(&c->con);
    mc_sticky_clear(&c->tx);
    mc_sticky_clear(&c->kept);
    free(c);
}

/* The wait that starts now: its timeout, and the clock restarts. */
void mc_start_wait(milter_conn *c, unsigned ms)
{
    c->wait_ms = ms;
    c->progress_ms = mc_now_ms();
}

void mc_result_clear(milter_conn *c)
{
    memset(&c->result, 0, sizeof c->result);
    c->result.verdict = MILTER_CONTINUE;
}

/* Sets the current result; reply texts are copied into the connection. */
void mc_result_set(milter_conn *c, milter_verdict v, int code, const char *enhanced, const char *text)
{
    mc_result_clear(c);
    c->result.verdict = v;
    if (code) {
        c->result.code = code;
        c->result.enhanced = enhanced;
        c->result.text = text;
        snprintf(c->result_reply, sizeof c->result_reply, "%d%s%s %s", code, enhanced ? " " : "",
                 enhanced ? enhanced : "", text);
        c->result.reply = c->result_reply;
    }
}

/* Copies r and its strings (which may point into st's own old copy). */
void mc_sticky_save(sticky *st, const milter_result *r)
{
    const char *src[4] = { r->reply, r->enhanced, r->text, r->quarantine };
    size_t need = 0;
    for (int i = 0; i < 4; i++)
        need += src[i] ? strlen(src[i]) + 1 : 0;
    char *block = malloc(need ? need : 1);
    milter_result copy = *r;
    const char **dst[4] = { &copy.reply, &copy.enhanced, &copy.text, &copy.quarantine };
    size_t o = 0;
    for (int i = 0; i < 4; i++) {
        if (src[i] == NULL || block == NULL) {
            *dst[i] = NULL;
            continue;
        }
        size_t n = strlen(src[i]) + 1;
        memcpy(block + o, src[i], n);
        *dst[i] = block + o;
        o += n;
    }
    if (block == NULL && copy.code) {
        /* Out of memory: a reply without text is still a reply. */
        copy.text = "Service unavailable";
        copy.reply = NULL;
    }
    free(st->strings);
    st->strings = block;
    st->r = copy;
    st->set = 1;
}

void mc_sticky_use(milter_conn *c, const sticky *st)
{
    c->result = st->r;
}

/* What a failure leaves behind, as Postfix's milter8_comm_error() and
 * milter8_conf_error(): a broken conversation (conf = 0) or a milter that
 * sent something malformed (conf = 1). */
static void failure_result(milter_conn *c, int conf)
{
    switch (c->s->default_action) {
    case MILTER_DEFAULT_ACCEPT:
        mc_result_set(c, MILTER_CONTINUE, 0, NULL, NULL);
        break;
    case MILTER_DEFAULT_QUARANTINE:
        mc_result_set(c, MILTER_CONTINUE, 0, NULL, NULL);
        c->result.quarantine = "milter default_action";
        break;
    case MILTER_DEFAULT_SHUTDOWN:
        if (conf)
            mc_result_set(c, MILTER_SHUTDOWN, 421, "4.3.5", "Server configuration problem - try again later");
        else
            mc_result_set(c, MILTER_SHUTDOWN, 421, "4.7.1", "Service unavailable - try again later");
        break;
    case MILTER_DEFAULT_REJECT:
        if (conf)
            mc_result_set(c, MILTER_TEMPFAIL, 451, "4.3.5", "Server configuration problem - try again later");
        else
            mc_result_set(c, MILTER_REJECT, 550, "5.5.0", "Service unavailable");
        break;
    case MILTER_DEFAULT_TEMPFAIL:
    default:
        if (conf)
            mc_result_set(c, MILTER_TEMPFAIL, 451, "4.3.5", "Server configuration problem - try again later");
        else
            mc_result_set(c, MILTER_TEMPFAIL, 451, "4.7.1", "Service unavailable - try again later");
        break;
    }
    c->result.failed = 1;
    c->result.connection = 1;
}

void mc_complete(milter_conn *c)
{
    if (c->pending)
        c->report = 1;
}

/* The milter failed: log why, drop the socket, and from now on answer
 * every event with the default action. A pending call completes with it. */
__attribute__((format(printf, 3, 4)))
void mc_fail(milter_conn *c, int conf, const char *fmt, ...)
{
    char why[768];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(why, sizeof why, fmt, ap);
    va_end(ap);
    mc_say(c, MILTER_LOG_WARNING, "%s; default_action %s", why, milter_default_action_name(c->s->default_action));
    if (c->fd >= 0)
        (void)shutdown(c->fd, SHUT_RDWR);
    mc_close_socket(c);
    c->body_replacing = 0;
    c->state = S_ERROR;
    failure_result(c, conf);
    mc_sticky_save(&c->con, &c->result);
    mc_complete(c);
}

/* A protocol fault noticed after the current call already has its answer
 * (stray bytes or a close right after a reply): the answer stands, later
 * events fail. */
void mc_fail_later(milter_conn *c, const char *why)
{
    mc_sticky_save(&c->kept, &c->result);
    int report = c->report;
    mc_fail(c, 0, "%s", why);
    mc_sticky_use(c, &c->kept);
    c->report = report;
}

int mc_flush_out(milter_conn *c)
{
    while (c->fd >= 0 && milter_buf_used(&c->out) > 0) {
        ssize_t n = send(c->fd, milter_buf_head(&c->out), milter_buf_used(&c->out), MSG_NOSIGNAL);
        if (n > 0) {
            milter_buf_consume(&c->out, (size_t)n);
            c->progress_ms = mc_now_ms();
            continue;
        }
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            return 0;
        mc_fail(c, 0, "error writing %s: %s", milter_command_name(c->last_sent),
             n == 0 ? "no progress" : strerror(errno));
        return -1;
    }
    return c->fd >= 0 ? 0 : -1;
}

static void send_optneg(milter_conn *c)
{
    long start = milter_packet_begin(&c->out, MILTER_CMD_OPTNEG);
    if (start < 0 || milter_put_u32(&c->out, (uint32_t)c->s->version) < 0
        || milter_put_u32(&c->out, MILTER_ACT_ALL) < 0 || milter_put_u32(&c->out, c->s->offer) < 0
        || milter_packet_end(&c->out, start) < 0) {
        mc_fail(c, 0, "cannot queue the option negotiation");
        return;
    }
    c->state = S_NEGOTIATING;
    c->last_sent = MILTER_CMD_OPTNEG;
    if (mc_flush_out(c) < 0)
        return;
    c->awaiting = MILTER_CMD_OPTNEG;
}

/* Tries the endpoint's addresses from c->addr_index on. */
static void try_connect(milter_conn *c)
{
    const milter_endpoint *ep = &c->s->endpoint;
    while (c->addr_index < ep->count) {
        int in_progress;
        char where[300];
        milter_endpoint_describe(ep, c->addr_index, where, sizeof where);
        int fd = milter_endpoint_connect(ep, c->addr_index, &in_progress);
        if (fd < 0) {
            mc_say(c, MILTER_LOG_WARNING, "connect to %s: %s", where, strerror(errno));
            c->addr_index++;
            continue;
        }
        c->fd = fd;
        c->tcp = milter_endpoint_is_tcp(ep, c->addr_index);
        mc_start_wait(c, c->s->connect_ms);
        if (in_progress) {
            c->state = S_CONNECTING;
            return;
        }
        send_optneg(c);
        return;
    }
    c->addr_index = 0;
    mc_fail(c, 0, "cannot connect to the milter");
}

milter_status milter_conn_open(milter_conn *c)
{
    mc_result_clear(c);
    if (c->pending || c->state != S_CLOSED) {
        mc_say(c, MILTER_LOG_ERROR, "open in state %s (ignored)", mc_state_name(c->state));
        return MILTER_DONE;
    }
    c->addr_index = 0;
    c->pending = 1;
    try_connect(c);
    if (c->report) {        /* failed at once: nothing to wait for */
        c->report = 0;
        c->pending = 0;
        mc_sync_io(c);
        return MILTER_DONE;
    }
    mc_sync_io(c);
    return MILTER_PENDING;
}

/* The owner's circuit breaker (milter_module.c) gave up on this milter
 * for a while: no socket, no log line of ours, and every event answers the
 * default action as after a failure. */
void milter_conn_skip(milter_conn *c)
{
    mc_result_clear(c);
    if (c->pending || c->state != S_CLOSED) {
        mc_say(c, MILTER_LOG_ERROR, "skip in state %s (ignored)", mc_state_name(c->state));
        return;
    }
    c->state = S_ERROR;
    failure_result(c, 0);
    mc_sticky_save(&c->con, &c->result);
}

milter_status milter_conn_adopt(milter_conn *c, int fd)
{
    mc_result_clear(c);
    if (c->pending || c->state != S_CLOSED || fd < 0) {
        mc_say(c, MILTER_LOG_ERROR, "adopt in state %s (ignored)", mc_state_name(c->state));
        return MILTER_DONE;
    }
    c->fd = fd;
    c->pending = 1;
    mc_start_wait(c, c->s->connect_ms);
    send_optneg(c);
    if (c->report) {
        c->report = 0;
        c->pending = 0;
        mc_sync_io(c);
        return MILTER_DONE;
    }
    mc_sync_io(c);
    return MILTER_PENDING;
}

static void connect_ready(milter_conn *c)
{
    if (milter_endpoint_connected(c->fd) < 0) {
        char where[300];
        milter_endpoint_describe(&c->s->endpoint, c->addr_index, where, sizeof where);
        mc_say(c, MILTER_LOG_WARNING, "connect to %s: %s", where, strerror(errno));
        if (c->watching && c->ops.watch)
            c->ops.watch(c->arg, c->fd, 0);
        c->watching = 0;
        close(c->fd);
        c->fd = -1;
        c->addr_index++;
        try_connect(c);
        return;
    }
    send_optneg(c);
}

static void report(milter_conn *c)
{
    mc_sync_io(c);
    if (c->report) {
        c->report = 0;
        c->pending = 0;
        if (c->ops.done)
            c->ops.done(c->arg);      /* may free c: nothing after this */
    }
}

void milter_conn_io(milter_conn *c, int events)
{
    if (c->fd < 0) {
        report(c);
        return;
    }
    if (c->state == S_CONNECTING) {
        connect_ready(c);
        report(c);
        return;
    }
    if (events & MILTER_IO_WRITE) {
        if (mc_flush_out(c) == 0 && c->draining && milter_buf_used(&c->out) <= OUT_LOW_WATER) {
            c->draining = 0;
            mc_result_set(c, MILTER_CONTINUE, 0, NULL, NULL);
            mc_complete(c);
        }
    }
    if ((events & MILTER_IO_READ) && c->fd >= 0)
        mc_read_input(c);
    report(c);
}

void milter_conn_timeout(milter_conn *c)
{
    c->timer_armed = 0;
    if (c->fd < 0) {
        report(c);
        return;
    }
    uint64_t now = mc_now_ms(), elapsed = now - c->progress_ms;
    if (elapsed < c->wait_ms) {
        /* There was progress since the timer was armed: wait the rest. */
        c->timer_armed = 1;
        if (c->ops.timer)
            c->ops.timer(c->arg, (unsigned)(c->wait_ms - elapsed));
        return;
    }
    if (c->state == S_CONNECTING)
        mc_fail(c, 0, "timeout after %u ms connecting", c->wait_ms);
    else if (c->awaiting)
        mc_fail(c, 0, "timeout after %u ms waiting for the reply to %s", c->wait_ms,
             milter_command_name(c->awaiting));
    else
        mc_fail(c, 0, "timeout after %u ms writing %s", c->wait_ms, milter_command_name(c->last_sent));
    report(c);
}

void mc_quit_and_close(milter_conn *c)
{
    if (c->fd >= 0 && (c->state == S_READY || c->state == S_SESSION || c->state == S_ACCEPT_CON
                       || c->state == S_REJECT_CON)) {
        long start = milter_packet_begin(&c->out, MILTER_CMD_QUIT);
        if (start >= 0 && milter_packet_end(&c->out, start) == 0) {
            c->last_sent = MILTER_CMD_QUIT;
            /* Best effort: QUIT is 5 bytes on a socket that has room. */
            (void)send(c->fd, milter_buf_head(&c->out), milter_buf_used(&c->out), MSG_NOSIGNAL | MSG_DONTWAIT);
        }
    }
    mc_close_socket(c);
    if (c->state != S_ERROR && c->state != S_REJECT_CON && c->state != S_ACCEPT_CON)
        c->state = S_CLOSED;
    c->in_tx = 0;
    c->reuse_ok = 0;
}

void milter_conn_quit(milter_conn *c)
{
    /* A pending call is cancelled: no done() for it. */
    c->pending = 0;
    c->report = 0;
    mc_quit_and_close(c);
}

int milter_conn_reusable(const milter_conn *c)
{
    return c->fd >= 0 && c->state == S_SESSION && c->reuse_ok && !c->pending && !c->in_tx
        && milter_buf_used(&c->out) == 0 && c->version >= 6 && milter_reader_idle(&c->reader);
}

int milter_conn_quit_nc(milter_conn *c)
{
    if (!milter_conn_reusable(c)) {
        milter_conn_quit(c);
        if (c->state != S_ERROR)
            c->state = S_CLOSED;
        return -1;
    }
    long start = milter_packet_begin(&c->out, MILTER_CMD_QUIT_NC);
    if (start < 0 || milter_packet_end(&c->out, start) < 0) {
        milter_conn_quit(c);
        return -1;
    }
    c->last_sent = MILTER_CMD_QUIT_NC;
    mc_start_wait(c, c->s->command_ms);
    if (mc_flush_out(c) < 0)
        return -1;
    c->state = S_READY;
    c->reuse_ok = 0;
    c->skip_cmd = 0;
    c->session_quarantine[0] = 0;
    mc_end_message(c);
    mc_result_clear(c);
    mc_sync_io(c);
    return 0;
}

const milter_result *milter_conn_result(const milter_conn *c)
{
    return &c->result;
}

int milter_conn_version(const milter_conn *c)
{
    return (int)c->version;
}

uint32_t milter_conn_actions(const milter_conn *c)
{
    return c->actions;
}

uint32_t milter_conn_steps(const milter_conn *c)
{
    return c->steps;
}

const milter_macro_list *milter_conn_macros(const milter_conn *c, int stage)
{
    if (stage < 0 || stage >= MILTER_MACRO_STAGES)
        return NULL;
    return mc_macro_list(c, stage);
}

int milter_conn_active(const milter_conn *c)
{
    return c->state == S_READY || c->state == S_SESSION || c->state == S_CONNECTING
        || c->state == S_NEGOTIATING;
}
