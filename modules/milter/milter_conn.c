/*
 * One milter connection's state machine (see milter_conn.h for the
 * contract). Postfix's src/milter/milter8.c is the model for what happens
 * when; the structure is our own, because milter8.c blocks on its socket
 * and this must not.
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
#include "milter_conn.h"

#include <errno.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define DEFAULT_CONNECT_MS 30000u
#define DEFAULT_COMMAND_MS 30000u
#define DEFAULT_CONTENT_MS 300000u
#define READ_CHUNK (64u * 1024u)
#define READ_ROUNDS 8              /* reads per readiness event, for fairness */
#define OUT_HIGH_WATER (256u * 1024u)
#define OUT_LOW_WATER (64u * 1024u)
#define OUT_LIMIT (16u * 1024u * 1024u)
#define DEFAULT_MAX_BODY ((size_t)1 << 30)   /* the module passes message_size_limit */

struct milter_settings {
    char name[512];
    milter_endpoint endpoint;
    int version;
    uint32_t offer;
    milter_default_action default_action;
    unsigned connect_ms, command_ms, content_ms;
    milter_macro_list macros[MILTER_MACRO_STAGES];
    size_t max_reply, max_body;
};

enum conn_state {
    S_CLOSED,
    S_CONNECTING,
    S_NEGOTIATING,
    S_READY,        /* negotiated, no CONNECT yet */
    S_SESSION,      /* CONNECT sent */
    S_ACCEPT_CON,   /* the milter accepted the connection */
    S_REJECT_CON,   /* refused at CONNECT/HELO: same reply from now on */
    S_ERROR,        /* failed: default action from now on */
};

/* A result that later calls repeat, with its own copy of the strings (a
 * multi-line reply can be long: the copy is allocated, and freed when the
 * sticky result is replaced or the connection freed). */
typedef struct sticky {
    int set;
    milter_result r;
    char *strings;
} sticky;

struct milter_conn {
    const milter_settings *s;
    milter_conn_ops ops;
    void *arg;
    int fd;
    enum conn_state state;
    size_t addr_index;
    int watching;
    int timer_armed;
    unsigned wait_ms;
    uint64_t progress_ms;

    /* negotiated */
    uint32_t version, actions, steps, np_mask;
    milter_macro_list *symlist[MILTER_MACRO_STAGES];

    /* the call in flight */
    int pending;         /* a call returned PENDING */
    int report;          /* ... and is finished: done() at the end of the handler */
    int awaiting;        /* the command whose reply we wait for */
    int draining;        /* PENDING until the output drains */
    int then_eom;        /* after this BODY's reply, send EOM */
    int last_sent;

    /* session and transaction */
    int in_tx;
    int tx_accepted;     /* ACCEPT or DISCARD: no more events for this message */
    int content_started; /* EOH macros went out */
    int skip_cmd;        /* SKIP: further events of this command are not sent */
    int reuse_ok;        /* the last thing was an EOM answered with CONTINUE */
    sticky con;          /* REJECT_CON / ERROR reply */
    sticky tx;           /* a refusal that ended the message */
    sticky kept;         /* an answer that stands although the milter failed after it */
    char quarantine_out[128];
    char tx_quarantine[128];
    char session_quarantine[128];

    /* end of message */
    int body_replacing;
    int body_done;
    int edit_failed;
    int warned_actions;
    milter_body_norm norm;
    unsigned char *normbuf;

    /* buffers */
    milter_buf out;
    milter_buf chunk;
    milter_buf scratch;
    milter_reader reader;

    milter_result result;
    char result_reply[1024];
};

static void sticky_clear(sticky *st)
{
    free(st->strings);
    memset(st, 0, sizeof *st);
}

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

__attribute__((format(printf, 3, 4)))
static void say(milter_conn *c, milter_log_level level, const char *fmt, ...)
{
    if (c->ops.log == NULL)
        return;
    char text[1024];
    int n = snprintf(text, sizeof text, "milter %s: ", c->s->name);
    if (n < 0 || (size_t)n >= sizeof text)
        n = 0;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(text + n, sizeof text - (size_t)n, fmt, ap);
    va_end(ap);
    c->ops.log(c->arg, level, text);
}

/* ------------------------------------------------------------------ */
/* settings                                                            */

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

/* ------------------------------------------------------------------ */
/* creation, socket, watch and timer                                   */

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

static void sync_io(milter_conn *c)
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

static void close_socket(milter_conn *c)
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

static void free_message_buffers(milter_conn *c)
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
    close_socket(c);
    milter_buf_free(&c->out);
    milter_buf_free(&c->chunk);
    milter_buf_free(&c->scratch);
    milter_reader_free(&c->reader);
    free(c->normbuf);
    for (int i = 0; i < MILTER_MACRO_STAGES; i++)
        free(c->symlist[i]);
    sticky_clear(&c->con);
    sticky_clear(&c->tx);
    sticky_clear(&c->kept);
    free(c);
}

/* The wait that starts now: its timeout, and the clock restarts. */
static void start_wait(milter_conn *c, unsigned ms)
{
    c->wait_ms = ms;
    c->progress_ms = now_ms();
}

/* ------------------------------------------------------------------ */
/* results                                                             */

static void result_clear(milter_conn *c)
{
    memset(&c->result, 0, sizeof c->result);
    c->result.verdict = MILTER_CONTINUE;
}

/* Sets the current result; reply texts are copied into the connection. */
static void result_set(milter_conn *c, milter_verdict v, int code, const char *enhanced, const char *text)
{
    result_clear(c);
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
static void sticky_save(sticky *st, const milter_result *r)
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

static void sticky_use(milter_conn *c, const sticky *st)
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
        result_set(c, MILTER_CONTINUE, 0, NULL, NULL);
        break;
    case MILTER_DEFAULT_QUARANTINE:
        result_set(c, MILTER_CONTINUE, 0, NULL, NULL);
        c->result.quarantine = "milter default_action";
        break;
    case MILTER_DEFAULT_SHUTDOWN:
        if (conf)
            result_set(c, MILTER_SHUTDOWN, 421, "4.3.5", "Server configuration problem - try again later");
        else
            result_set(c, MILTER_SHUTDOWN, 421, "4.7.1", "Service unavailable - try again later");
        break;
    case MILTER_DEFAULT_REJECT:
        if (conf)
            result_set(c, MILTER_TEMPFAIL, 451, "4.3.5", "Server configuration problem - try again later");
        else
            result_set(c, MILTER_REJECT, 550, "5.5.0", "Service unavailable");
        break;
    case MILTER_DEFAULT_TEMPFAIL:
    default:
        if (conf)
            result_set(c, MILTER_TEMPFAIL, 451, "4.3.5", "Server configuration problem - try again later");
        else
            result_set(c, MILTER_TEMPFAIL, 451, "4.7.1", "Service unavailable - try again later");
        break;
    }
    c->result.failed = 1;
    c->result.connection = 1;
}

static void complete(milter_conn *c)
{
    if (c->pending)
        c->report = 1;
}

/* The milter failed: log why, drop the socket, and from now on answer
 * every event with the default action. A pending call completes with it. */
__attribute__((format(printf, 3, 4)))
static void fail(milter_conn *c, int conf, const char *fmt, ...)
{
    char why[768];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(why, sizeof why, fmt, ap);
    va_end(ap);
    say(c, MILTER_LOG_WARNING, "%s; default_action %s", why, milter_default_action_name(c->s->default_action));
    if (c->fd >= 0)
        (void)shutdown(c->fd, SHUT_RDWR);
    close_socket(c);
    c->body_replacing = 0;
    c->state = S_ERROR;
    failure_result(c, conf);
    sticky_save(&c->con, &c->result);
    complete(c);
}

/* A protocol fault noticed after the current call already has its answer
 * (stray bytes or a close right after a reply): the answer stands, later
 * events fail. */
static void fail_later(milter_conn *c, const char *why)
{
    sticky_save(&c->kept, &c->result);
    int report = c->report;
    fail(c, 0, "%s", why);
    sticky_use(c, &c->kept);
    c->report = report;
}

/* ------------------------------------------------------------------ */
/* output                                                              */

static int flush_out(milter_conn *c)
{
    while (c->fd >= 0 && milter_buf_used(&c->out) > 0) {
        ssize_t n = send(c->fd, milter_buf_head(&c->out), milter_buf_used(&c->out), MSG_NOSIGNAL);
        if (n > 0) {
            milter_buf_consume(&c->out, (size_t)n);
            c->progress_ms = now_ms();
            continue;
        }
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            return 0;
        fail(c, 0, "error writing %s: %s", milter_command_name(c->last_sent),
             n == 0 ? "no progress" : strerror(errno));
        return -1;
    }
    return c->fd >= 0 ? 0 : -1;
}

static const milter_macro_list *macro_list(const milter_conn *c, int stage)
{
    if (stage < MILTER_SYMLIST_STAGES && c->symlist[stage] != NULL)
        return c->symlist[stage];
    return &c->s->macros[stage];
}

/* The MACRO packet for a stage: only the macros that have a value. */
static int put_macros(milter_conn *c, int stage, int cmd)
{
    const milter_macro_list *l = macro_list(c, stage);
    if (l->count == 0 || c->ops.macro == NULL)
        return 0;
    long start = -1;
    for (size_t i = 0; i < l->count; i++) {
        char canon[MILTER_MACRO_NAME_MAX + 4];
        milter_macro_canonical(l->names[i], canon, sizeof canon);
        const char *value = c->ops.macro(c->arg, canon);
        if (value == NULL)
            continue;
        if (start < 0) {
            if ((start = milter_packet_begin(&c->out, MILTER_CMD_MACRO)) < 0 || milter_put_byte(&c->out, cmd) < 0)
                return -1;
        }
        if (milter_put_str(&c->out, l->names[i]) < 0 || milter_put_str(&c->out, value) < 0)
            return -1;
    }
    if (start >= 0 && milter_packet_end(&c->out, start) < 0)
        return -1;
    return 0;
}

/* ------------------------------------------------------------------ */
/* sending events                                                      */

static const char *state_name(enum conn_state s)
{
    static const char *const names[] = { "closed", "connecting", "negotiating", "ready", "session",
                                         "accepted the connection", "refused the connection", "failed" };
    return names[s];
}

/* An event that does not go out: whatever was queued before it (macros)
 * still must. */
static int not_sent(milter_conn *c)
{
    if (c->fd >= 0 && milter_buf_used(&c->out) > 0 && !c->pending)
        (void)flush_out(c);
    sync_io(c);
    return 0;
}

/* Checks whether an event goes out at all, and queues its macros.
 * Returns 1 to send the event packet, 0 when c->result already holds the
 * answer (nothing to wait for). */
static int event_gate(milter_conn *c, int cmd, uint32_t no_flag, int stage, int in_message)
{
    result_clear(c);
    if (c->pending) {
        say(c, MILTER_LOG_ERROR, "%s while the previous event is still pending (ignored)",
            milter_command_name(cmd));
        return 0;
    }
    switch (c->state) {
    case S_ERROR:
    case S_REJECT_CON:
        sticky_use(c, &c->con);
        return 0;
    case S_ACCEPT_CON:
        return 0;
    case S_SESSION:
        break;
    case S_READY:
        if (cmd == MILTER_CMD_CONNECT)
            break;
        /* FALLTHROUGH */
    default:
        say(c, MILTER_LOG_ERROR, "%s in state %s (ignored)", milter_command_name(cmd), state_name(c->state));
        return 0;
    }
    if (in_message) {
        if (!c->in_tx) {
            say(c, MILTER_LOG_ERROR, "%s outside a transaction (ignored)", milter_command_name(cmd));
            return 0;
        }
        if (c->tx.set) {
            sticky_use(c, &c->tx);
            return not_sent(c);
        }
        if (c->tx_accepted)
            return not_sent(c);
    }
    /* Not part of the protocol version in use: not even its macros. */
    if (no_flag & c->np_mask)
        return not_sent(c);
    if (c->skip_cmd) {
        if (c->skip_cmd == cmd)
            return not_sent(c);
        c->skip_cmd = 0;
    }
    c->reuse_ok = 0;
    /* Macros go out even when the milter does not want the event itself
     * (as Postfix): a later callback may ask for them. */
    if (stage >= 0 && put_macros(c, stage, cmd) < 0) {
        fail(c, 0, "cannot queue the macros for %s (output buffer full)", milter_command_name(cmd));
        return 0;
    }
    if (no_flag & c->steps) {
        c->last_sent = MILTER_CMD_MACRO;
        start_wait(c, c->s->command_ms);
        return not_sent(c);
    }
    return 1;
}

/* After the event packet was queued: write, and decide whether to wait. */
static milter_status event_sent(milter_conn *c, int cmd, uint32_t nr_flag, unsigned wait_ms)
{
    c->last_sent = cmd;
    if (c->fd < 0)
        return MILTER_DONE;
    start_wait(c, wait_ms);
    if (flush_out(c) < 0)
        return MILTER_DONE;
    if (nr_flag & c->steps) {
        if (milter_buf_used(&c->out) > OUT_HIGH_WATER) {
            c->draining = 1;
            c->pending = 1;
            sync_io(c);
            return MILTER_PENDING;
        }
        sync_io(c);
        return MILTER_DONE;
    }
    c->awaiting = cmd;
    c->pending = 1;
    sync_io(c);
    return MILTER_PENDING;
}

static milter_status queue_failed(milter_conn *c, int cmd)
{
    fail(c, 0, "cannot queue %s (output buffer full)", milter_command_name(cmd));
    sync_io(c);
    return MILTER_DONE;
}

/* ------------------------------------------------------------------ */
/* opening and negotiating                                             */

static void send_optneg(milter_conn *c)
{
    long start = milter_packet_begin(&c->out, MILTER_CMD_OPTNEG);
    if (start < 0 || milter_put_u32(&c->out, (uint32_t)c->s->version) < 0
        || milter_put_u32(&c->out, MILTER_ACT_ALL) < 0 || milter_put_u32(&c->out, c->s->offer) < 0
        || milter_packet_end(&c->out, start) < 0) {
        fail(c, 0, "cannot queue the option negotiation");
        return;
    }
    c->state = S_NEGOTIATING;
    c->last_sent = MILTER_CMD_OPTNEG;
    if (flush_out(c) < 0)
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
            say(c, MILTER_LOG_WARNING, "connect to %s: %s", where, strerror(errno));
            c->addr_index++;
            continue;
        }
        c->fd = fd;
        start_wait(c, c->s->connect_ms);
        if (in_progress) {
            c->state = S_CONNECTING;
            return;
        }
        send_optneg(c);
        return;
    }
    c->addr_index = 0;
    fail(c, 0, "cannot connect to the milter");
}

milter_status milter_conn_open(milter_conn *c)
{
    result_clear(c);
    if (c->pending || c->state != S_CLOSED) {
        say(c, MILTER_LOG_ERROR, "open in state %s (ignored)", state_name(c->state));
        return MILTER_DONE;
    }
    c->addr_index = 0;
    c->pending = 1;
    try_connect(c);
    if (c->report) {        /* failed at once: nothing to wait for */
        c->report = 0;
        c->pending = 0;
        sync_io(c);
        return MILTER_DONE;
    }
    sync_io(c);
    return MILTER_PENDING;
}

static void connect_ready(milter_conn *c)
{
    if (milter_endpoint_connected(c->fd) < 0) {
        char where[300];
        milter_endpoint_describe(&c->s->endpoint, c->addr_index, where, sizeof where);
        say(c, MILTER_LOG_WARNING, "connect to %s: %s", where, strerror(errno));
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

static uint32_t version_events(uint32_t version)
{
    return version >= 6 ? MILTER_P_V6 : version >= 4 ? MILTER_P_V4 : version == 3 ? MILTER_P_V3 : MILTER_P_V2;
}

static void negotiated(milter_conn *c, const milter_frame *f)
{
    c->awaiting = 0;
    if (f->cmd != MILTER_CMD_OPTNEG) {
        fail(c, 0, "unexpected reply %s in the initial handshake", milter_reply_name(f->cmd));
        return;
    }
    milter_optneg o;
    char why[256];
    if (milter_parse_optneg(f->data, f->len, &c->scratch, &o, why, sizeof why) < 0) {
        fail(c, 0, "bad option negotiation reply: %s", why);
        return;
    }
    if (o.version > (uint32_t)c->s->version) {
        fail(c, 0, "protocol version %u conflict with MTA protocol version %d", (unsigned)o.version,
             c->s->version);
        return;
    }
    if (o.version < 2) {
        fail(c, 0, "protocol version %u is older than 2", (unsigned)o.version);
        return;
    }
    if ((o.actions & MILTER_ACT_ALL) != o.actions) {
        fail(c, 0, "request mask 0x%x conflict with MTA request mask 0x%x", (unsigned)o.actions,
             (unsigned)MILTER_ACT_ALL);
        return;
    }
    c->version = o.version;
    c->actions = o.actions;
    c->steps = o.steps;
    /* Events outside our version, and outside the milter's when it speaks
     * an older one (Postfix: "based on a suggestion by Kouhei Sutou"). */
    c->np_mask = MILTER_P_NOSEND_MASK & ~c->s->offer;
    if (o.version < (uint32_t)c->s->version)
        c->np_mask |= MILTER_P_NOSEND_MASK & ~version_events(o.version);
    if (o.unknown_stages)
        say(c, MILTER_LOG_WARNING, "ignoring %d macro list(s) for unknown stages", o.unknown_stages);
    for (int i = 0; i < MILTER_SYMLIST_STAGES; i++) {
        if (o.symlist[i] == NULL)
            continue;
        if (c->symlist[i] == NULL && (c->symlist[i] = malloc(sizeof *c->symlist[i])) == NULL) {
            fail(c, 0, "out of memory");
            return;
        }
        if (milter_macro_list_parse(c->symlist[i], o.symlist[i], why, sizeof why) < 0) {
            fail(c, 1, "macro list for stage %d: %s", i, why);
            return;
        }
    }
    c->state = S_READY;
    result_set(c, MILTER_CONTINUE, 0, NULL, NULL);
    complete(c);
}

/* ------------------------------------------------------------------ */
/* replies to events                                                   */

static int connect_stage(int ev)
{
    return ev == MILTER_CMD_CONNECT || ev == MILTER_CMD_HELO;
}

static void end_message(milter_conn *c)
{
    c->in_tx = 0;
    c->tx_accepted = 0;
    /* The result may still point at the tx copy: keep the strings until
     * the next refusal replaces them. */
    c->tx.set = 0;
    c->content_started = 0;
    c->then_eom = 0;
    c->tx_quarantine[0] = 0;
    c->body_replacing = 0;
    c->body_done = 0;
    c->edit_failed = 0;
    c->warned_actions = 0;
    if (c->skip_cmd == MILTER_CMD_BODY || c->skip_cmd == MILTER_CMD_HEADER || c->skip_cmd == MILTER_CMD_RCPT)
        c->skip_cmd = 0;
    free_message_buffers(c);
}

static void send_eom(milter_conn *c);
static void quit_and_close(milter_conn *c);

/* The final reply to the event we waited for. */
static void event_reply(milter_conn *c, milter_verdict v, const milter_smtp_reply *custom)
{
    int ev = c->awaiting;
    c->awaiting = 0;
    if (custom != NULL) {
        result_clear(c);
        c->result.verdict = v;
        c->result.code = custom->code;
        c->result.enhanced = custom->enhanced[0] ? custom->enhanced : NULL;
        c->result.text = custom->first_text;
        c->result.reply = custom->text;
    } else if (v == MILTER_REJECT)
        result_set(c, v, 550, "5.7.1", "Command rejected");
    else if (v == MILTER_TEMPFAIL)
        result_set(c, v, 451, "4.7.1", "Service unavailable - try again later");
    else if (v == MILTER_SHUTDOWN)
        result_set(c, v, 421, "4.7.0", "Server closing connection");
    else
        result_set(c, v, 0, NULL, NULL);

    switch (v) {
    case MILTER_CONTINUE:
        break;
    case MILTER_ACCEPT:
        if (connect_stage(ev)) {
            /* No more events for this connection. */
            c->result.connection = 1;
            c->state = S_ACCEPT_CON;
            quit_and_close(c);
        } else
            c->tx_accepted = 1;
        break;
    case MILTER_DISCARD:
        if (connect_stage(ev)) {
            say(c, MILTER_LOG_WARNING, "DISCARD action is not allowed for connect or helo");
            result_set(c, MILTER_CONTINUE, 0, NULL, NULL);
        } else
            c->tx_accepted = 1;
        break;
    case MILTER_REJECT:
    case MILTER_TEMPFAIL:
    case MILTER_SHUTDOWN:
        if (connect_stage(ev) || v == MILTER_SHUTDOWN) {
            c->result.connection = 1;
            sticky_save(&c->con, &c->result);
            quit_and_close(c);
            c->state = S_REJECT_CON;
            sticky_use(c, &c->con);
        } else if (ev != MILTER_CMD_RCPT && ev != MILTER_CMD_UNKNOWN) {
            /* MAIL, DATA or content: the message is refused. */
            sticky_save(&c->tx, &c->result);
            sticky_use(c, &c->tx);
        }
        break;
    }

    if (ev == MILTER_CMD_BODY && c->then_eom) {
        c->then_eom = 0;
        if (c->result.verdict == MILTER_CONTINUE && c->state == S_SESSION && !c->tx_accepted) {
            send_eom(c);
            return;
        }
        ev = MILTER_CMD_EOM;    /* the message ends with this answer */
    }
    if (ev == MILTER_CMD_EOM) {
        const char *q = c->tx_quarantine[0] ? c->tx_quarantine
                      : c->session_quarantine[0] ? c->session_quarantine : NULL;
        if (c->edit_failed && v != MILTER_DISCARD && v != MILTER_SHUTDOWN && v != MILTER_TEMPFAIL) {
            result_set(c, MILTER_TEMPFAIL, 451, "4.3.0", "Error: message modification failed");
            c->result.edit_failed = 1;
        } else if (c->edit_failed)
            c->result.edit_failed = 1;
        if (q != NULL && c->state == S_SESSION) {
            /* The quarantine strings are about to be cleared: keep a copy. */
            snprintf(c->quarantine_out, sizeof c->quarantine_out, "%s", q);
            c->result.quarantine = c->quarantine_out;
        }
        if (c->state == S_SESSION && v == MILTER_CONTINUE && !c->edit_failed)
            c->reuse_ok = 1;
        end_message(c);
    }
    complete(c);
}

static void quarantine(milter_conn *c, const char *reason)
{
    if (c->in_tx)
        snprintf(c->tx_quarantine, sizeof c->tx_quarantine, "%s", reason);
    else
        snprintf(c->session_quarantine, sizeof c->session_quarantine, "%s", reason);
}

static uint32_t edit_action(int cmd)
{
    switch (cmd) {
    case MILTER_RSP_ADDHEADER:
    case MILTER_RSP_INSHEADER: return MILTER_ACT_ADDHDRS;
    case MILTER_RSP_CHGHEADER: return MILTER_ACT_CHGHDRS;
    case MILTER_RSP_CHGFROM: return MILTER_ACT_CHGFROM;
    case MILTER_RSP_ADDRCPT: return MILTER_ACT_ADDRCPT;
    case MILTER_RSP_ADDRCPT_PAR: return MILTER_ACT_ADDRCPT_PAR;
    case MILTER_RSP_DELRCPT: return MILTER_ACT_DELRCPT;
    case MILTER_RSP_REPLBODY: return MILTER_ACT_CHGBODY;
    case MILTER_RSP_QUARANTINE: return MILTER_ACT_QUARANTINE;
    default: return 0;
    }
}

static void check_action(milter_conn *c, int cmd)
{
    uint32_t need = edit_action(cmd);
    if (need && !(c->actions & need) && !(c->warned_actions & (int)need)) {
        c->warned_actions |= (int)need;
        say(c, MILTER_LOG_WARNING, "%s without having negotiated it (applied, as Postfix does)",
            milter_reply_name(cmd));
    }
}

static void deliver(milter_conn *c, const milter_edit *e)
{
    if (c->edit_failed || c->ops.edit == NULL)
        return;
    if (c->ops.edit(c->arg, e) < 0)
        c->edit_failed = 1;
}

static void end_replacement(milter_conn *c)
{
    unsigned char tail[2];
    size_t n = milter_body_norm_finish(&c->norm, tail);
    milter_edit e;
    memset(&e, 0, sizeof e);
    if (n > 0) {
        e.type = MILTER_EDIT_BODY_CHUNK;
        e.data = tail;
        e.len = n;
        deliver(c, &e);
    }
    e.type = MILTER_EDIT_BODY_END;
    e.data = NULL;
    e.len = 0;
    deliver(c, &e);
    c->body_replacing = 0;
    c->body_done = 1;
}

static void body_piece(milter_conn *c, const milter_frame *f)
{
    if (c->awaiting != MILTER_CMD_EOM) {
        fail(c, 0, "unexpected filter response SMFIR_REPLBODY after event %s", milter_command_name(c->awaiting));
        return;
    }
    if (f->first) {
        check_action(c, MILTER_RSP_REPLBODY);
        if (c->body_done) {
            fail(c, 1, "body replacement requests can't be mixed with other requests");
            return;
        }
        if (!c->body_replacing) {
            milter_body_norm_init(&c->norm);
            c->body_replacing = 1;
        }
    }
    if (c->s->max_body && c->norm.bytes + f->len > c->s->max_body) {
        fail(c, 1, "replacement body larger than %zu bytes", c->s->max_body);
        return;
    }
    if (f->len == 0)
        return;
    if (c->normbuf == NULL && (c->normbuf = malloc(2 * READ_CHUNK + 2)) == NULL) {
        fail(c, 0, "out of memory");
        return;
    }
    int first = c->norm.bytes == 0;
    size_t n = milter_body_normalize(&c->norm, f->data, f->len, c->normbuf);
    if (n == 0)
        return;
    milter_edit e;
    memset(&e, 0, sizeof e);
    e.type = MILTER_EDIT_BODY_CHUNK;
    e.data = c->normbuf;
    e.len = n;
    e.body_first = first;
    deliver(c, &e);
}

static void frame(milter_conn *c, const milter_frame *f)
{
    if (c->awaiting == MILTER_CMD_OPTNEG) {
        negotiated(c, f);
        return;
    }
    if (f->piece) {
        body_piece(c, f);
        return;
    }
    if (c->body_replacing)
        end_replacement(c);

    int cmd = f->cmd;
    char why[512];
    milter_edit e;
    switch (cmd) {
    case MILTER_RSP_PROGRESS:
    case MILTER_RSP_CONTINUE:
    case MILTER_RSP_ACCEPT:
    case MILTER_RSP_REJECT:
    case MILTER_RSP_TEMPFAIL:
    case MILTER_RSP_DISCARD:
    case MILTER_RSP_SHUTDOWN:
    case MILTER_RSP_SKIP:
        if (f->len != 0) {
            fail(c, 0, "reply %s was followed by %zu data bytes", milter_reply_name(cmd), f->len);
            return;
        }
        if (cmd == MILTER_RSP_PROGRESS)
            return;     /* still working: the clock was restarted by the read */
        if (cmd == MILTER_RSP_SKIP) {
            c->skip_cmd = c->awaiting;
            event_reply(c, MILTER_CONTINUE, NULL);
            return;
        }
        event_reply(c, cmd == MILTER_RSP_CONTINUE ? MILTER_CONTINUE : cmd == MILTER_RSP_ACCEPT ? MILTER_ACCEPT
                       : cmd == MILTER_RSP_REJECT ? MILTER_REJECT : cmd == MILTER_RSP_TEMPFAIL ? MILTER_TEMPFAIL
                       : cmd == MILTER_RSP_DISCARD ? MILTER_DISCARD : MILTER_SHUTDOWN, NULL);
        return;

    case MILTER_RSP_REPLYCODE: {
        milter_smtp_reply r;
        if (milter_parse_replycode(f->data, f->len, &c->scratch, &r, why, sizeof why) < 0) {
            char shown[120];
            size_t n = f->len < sizeof shown - 1 ? f->len : sizeof shown - 1;
            for (size_t i = 0; i < n; i++)
                shown[i] = f->data[i] >= 32 && f->data[i] < 127 ? (char)f->data[i] : '?';
            shown[n] = 0;
            fail(c, 1, "malformed reply: %s: \"%s\"", why, shown);
            return;
        }
        event_reply(c, r.code >= 500 ? MILTER_REJECT : MILTER_TEMPFAIL, &r);
        return;
    }

    case MILTER_RSP_QUARANTINE:
        if (milter_parse_edit(cmd, f->data, f->len, 0, &c->scratch, &e, why, sizeof why) < 0) {
            fail(c, 1, "%s", why);
            return;
        }
        check_action(c, cmd);
        quarantine(c, e.reason);
        deliver(c, &e);
        return;

    case MILTER_RSP_ADDHEADER:
    case MILTER_RSP_INSHEADER:
    case MILTER_RSP_CHGHEADER:
    case MILTER_RSP_CHGFROM:
    case MILTER_RSP_ADDRCPT:
    case MILTER_RSP_ADDRCPT_PAR:
    case MILTER_RSP_DELRCPT:
        if (c->awaiting != MILTER_CMD_EOM)
            break;
        if (milter_parse_edit(cmd, f->data, f->len, (c->steps & MILTER_P_HDR_LEADSPC) != 0, &c->scratch, &e,
                              why, sizeof why) < 0) {
            fail(c, 1, "%s", why);
            return;
        }
        check_action(c, cmd);
        if ((e.type == MILTER_EDIT_ADD_RCPT || e.type == MILTER_EDIT_DELETE_RCPT) && e.address[0] == 0) {
            say(c, MILTER_LOG_WARNING, "ignoring %s with an empty address", milter_reply_name(cmd));
            return;
        }
        deliver(c, &e);
        return;

    default:
        break;
    }
    fail(c, 0, "unexpected filter response %s after event %s", milter_reply_name(cmd),
         milter_command_name(c->awaiting));
}

static void process_input(milter_conn *c, const unsigned char *p, size_t left)
{
    while (c->fd >= 0) {
        milter_frame f;
        int r = milter_reader_next(&c->reader, &p, &left, &f);
        if (r == 0)
            return;
        if (r < 0) {
            fail(c, 0, "%s", c->reader.error);
            return;
        }
        if (!c->awaiting) {
            char why[200];
            snprintf(why, sizeof why, "unexpected %s from the milter while no reply was due",
                     milter_reply_name(f.cmd));
            if (c->report)
                fail_later(c, why);
            else
                fail(c, 0, "%s", why);
            return;
        }
        frame(c, &f);
    }
}

static void read_input(milter_conn *c)
{
    unsigned char buf[READ_CHUNK];
    for (int round = 0; round < READ_ROUNDS && c->fd >= 0; round++) {
        ssize_t n = recv(c->fd, buf, sizeof buf, 0);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK)
                return;
            if (c->awaiting)
                fail(c, 0, "can't read %s reply packet: %s", milter_command_name(c->awaiting), strerror(errno));
            else
                fail(c, 0, "read error on an idle connection: %s", strerror(errno));
            return;
        }
        if (n == 0) {
            if (c->awaiting)
                fail(c, 0, "connection closed by the milter while waiting for the reply to %s",
                     milter_command_name(c->awaiting));
            else if (!milter_reader_idle(&c->reader))
                fail(c, 0, "connection closed by the milter in the middle of a packet");
            else if (c->report)
                fail_later(c, "connection closed by the milter");
            else
                fail(c, 0, "connection closed by the milter");
            return;
        }
        c->progress_ms = now_ms();
        process_input(c, buf, (size_t)n);
    }
}

/* ------------------------------------------------------------------ */
/* the owner's loop                                                    */

static void report(milter_conn *c)
{
    sync_io(c);
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
        if (flush_out(c) == 0 && c->draining && milter_buf_used(&c->out) <= OUT_LOW_WATER) {
            c->draining = 0;
            result_set(c, MILTER_CONTINUE, 0, NULL, NULL);
            complete(c);
        }
    }
    if ((events & MILTER_IO_READ) && c->fd >= 0)
        read_input(c);
    report(c);
}

void milter_conn_timeout(milter_conn *c)
{
    c->timer_armed = 0;
    if (c->fd < 0) {
        report(c);
        return;
    }
    uint64_t now = now_ms(), elapsed = now - c->progress_ms;
    if (elapsed < c->wait_ms) {
        /* There was progress since the timer was armed: wait the rest. */
        c->timer_armed = 1;
        if (c->ops.timer)
            c->ops.timer(c->arg, (unsigned)(c->wait_ms - elapsed));
        return;
    }
    if (c->state == S_CONNECTING)
        fail(c, 0, "timeout after %u ms connecting", c->wait_ms);
    else if (c->awaiting)
        fail(c, 0, "timeout after %u ms waiting for the reply to %s", c->wait_ms,
             milter_command_name(c->awaiting));
    else
        fail(c, 0, "timeout after %u ms writing %s", c->wait_ms, milter_command_name(c->last_sent));
    report(c);
}

/* ------------------------------------------------------------------ */
/* events                                                              */

milter_status milter_conn_connect(milter_conn *c, const char *hostname, int family, const char *addr,
                                  unsigned port)
{
    if (!event_gate(c, MILTER_CMD_CONNECT, MILTER_P_NOCONNECT, MILTER_MACRO_CONNECT, 0)) {
        if (c->state == S_READY && c->fd >= 0 && !c->pending) {
            c->state = S_SESSION;   /* skipped (SMFIP_NOCONNECT), not refused */
            sync_io(c);
        }
        return MILTER_DONE;
    }
    c->state = S_SESSION;
    if (addr == NULL)
        addr = "unknown";
    char bracketed[300];
    const char *name = hostname;
    if (name == NULL || strcmp(name, "unknown") == 0) {
        if (strcmp(addr, "unknown") != 0) {
            snprintf(bracketed, sizeof bracketed, "[%s]", addr);
            name = bracketed;
        } else
            name = "unknown";
    }
    int fam = family == AF_INET ? MILTER_FAMILY_INET : family == AF_INET6 ? MILTER_FAMILY_INET6
            : family == AF_UNIX ? MILTER_FAMILY_UNIX : MILTER_FAMILY_UNKNOWN;
    if (port > 65535) {
        say(c, MILTER_LOG_WARNING, "bad client port number %u", port);
        port = 0;
    }
    long start = milter_packet_begin(&c->out, MILTER_CMD_CONNECT);
    int bad = start < 0 || milter_put_str(&c->out, name) < 0 || milter_put_byte(&c->out, fam) < 0;
    if (!bad && fam != MILTER_FAMILY_UNKNOWN)
        bad = milter_put_u16(&c->out, fam == MILTER_FAMILY_UNIX ? 0 : port) < 0 || milter_put_str(&c->out, addr) < 0;
    if (bad || milter_packet_end(&c->out, start) < 0)
        return queue_failed(c, MILTER_CMD_CONNECT);
    return event_sent(c, MILTER_CMD_CONNECT, MILTER_P_NR_CONN, c->s->command_ms);
}

static milter_status string_event(milter_conn *c, int cmd, uint32_t no_flag, uint32_t nr_flag, int stage,
                                  int in_message, const char *s)
{
    if (!event_gate(c, cmd, no_flag, stage, in_message))
        return MILTER_DONE;
    long start = milter_packet_begin(&c->out, cmd);
    if (start < 0 || milter_put_str(&c->out, s ? s : "") < 0 || milter_packet_end(&c->out, start) < 0)
        return queue_failed(c, cmd);
    return event_sent(c, cmd, nr_flag, c->s->command_ms);
}

milter_status milter_conn_helo(milter_conn *c, const char *helo)
{
    return string_event(c, MILTER_CMD_HELO, MILTER_P_NOHELO, MILTER_P_NR_HELO, MILTER_MACRO_HELO, 0, helo);
}

milter_status milter_conn_unknown(milter_conn *c, const char *command)
{
    return string_event(c, MILTER_CMD_UNKNOWN, MILTER_P_NOUNKNOWN, MILTER_P_NR_UNKN, MILTER_MACRO_UNKNOWN, 0,
                        command);
}

static milter_status argv_event(milter_conn *c, int cmd, uint32_t no_flag, uint32_t nr_flag, int stage,
                                const char *const *argv)
{
    if (!event_gate(c, cmd, no_flag, stage, 1))
        return MILTER_DONE;
    long start = milter_packet_begin(&c->out, cmd);
    int bad = start < 0;
    for (size_t i = 0; !bad && argv[i] != NULL; i++)
        bad = milter_put_str(&c->out, argv[i]) < 0;
    if (bad || milter_packet_end(&c->out, start) < 0)
        return queue_failed(c, cmd);
    return event_sent(c, cmd, nr_flag, c->s->command_ms);
}

static void abort_tx(milter_conn *c)
{
    if (c->fd >= 0 && c->state == S_SESSION) {
        long start = milter_packet_begin(&c->out, MILTER_CMD_ABORT);
        if (start < 0 || milter_packet_end(&c->out, start) < 0) {
            fail(c, 0, "cannot queue SMFIC_ABORT (output buffer full)");
            return;
        }
        c->last_sent = MILTER_CMD_ABORT;
        start_wait(c, c->s->command_ms);
        (void)flush_out(c);
    }
    end_message(c);
}

milter_status milter_conn_mail(milter_conn *c, const char *const *argv)
{
    if (argv == NULL || argv[0] == NULL) {
        result_clear(c);
        say(c, MILTER_LOG_ERROR, "SMFIC_MAIL without a sender (ignored)");
        return MILTER_DONE;
    }
    if (c->in_tx && !c->pending)
        abort_tx(c);
    if (c->state == S_SESSION && !c->pending) {
        c->in_tx = 1;
        c->tx_quarantine[0] = 0;
    }
    return argv_event(c, MILTER_CMD_MAIL, MILTER_P_NOMAIL, MILTER_P_NR_MAIL, MILTER_MACRO_MAIL, argv);
}

milter_status milter_conn_rcpt(milter_conn *c, const char *const *argv, int rejected)
{
    if (argv == NULL || argv[0] == NULL) {
        result_clear(c);
        say(c, MILTER_LOG_ERROR, "SMFIC_RCPT without a recipient (ignored)");
        return MILTER_DONE;
    }
    if (rejected && !((c->s->offer & MILTER_P_RCPT_REJ) && (c->steps & MILTER_P_RCPT_REJ))) {
        result_clear(c);
        return MILTER_DONE;
    }
    return argv_event(c, MILTER_CMD_RCPT, MILTER_P_NORCPT, MILTER_P_NR_RCPT, MILTER_MACRO_RCPT, argv);
}

milter_status milter_conn_data(milter_conn *c)
{
    if (!event_gate(c, MILTER_CMD_DATA, MILTER_P_NODATA, MILTER_MACRO_DATA, 1))
        return MILTER_DONE;
    long start = milter_packet_begin(&c->out, MILTER_CMD_DATA);
    if (start < 0 || milter_packet_end(&c->out, start) < 0)
        return queue_failed(c, MILTER_CMD_DATA);
    return event_sent(c, MILTER_CMD_DATA, MILTER_P_NR_DATA, c->s->command_ms);
}

/* The first content event sends the end-of-header macros, so that header
 * callbacks see them too (Postfix sends them with every header, which
 * libmilter drops; sending them once before the first header works). */
static int content_start(milter_conn *c)
{
    if (c->content_started || c->state != S_SESSION || !c->in_tx || c->tx.set || c->tx_accepted)
        return 0;
    c->content_started = 1;
    if (put_macros(c, MILTER_MACRO_EOH, MILTER_CMD_EOH) < 0) {
        fail(c, 0, "cannot queue the end-of-header macros (output buffer full)");
        return -1;
    }
    return 0;
}

milter_status milter_conn_header(milter_conn *c, const char *name, const char *value)
{
    if (!c->pending && content_start(c) < 0)
        return MILTER_DONE;
    if (!event_gate(c, MILTER_CMD_HEADER, MILTER_P_NOHDRS, -1, 1))
        return MILTER_DONE;
    long start = milter_packet_begin(&c->out, MILTER_CMD_HEADER);
    if (start < 0 || milter_put_str(&c->out, name) < 0
        || milter_put_header_value(&c->out, value ? value : "", (c->steps & MILTER_P_HDR_LEADSPC) != 0) < 0
        || milter_packet_end(&c->out, start) < 0)
        return queue_failed(c, MILTER_CMD_HEADER);
    return event_sent(c, MILTER_CMD_HEADER, MILTER_P_NR_HDR, c->s->content_ms);
}

milter_status milter_conn_eoh(milter_conn *c)
{
    if (!c->pending && content_start(c) < 0)
        return MILTER_DONE;
    if (!event_gate(c, MILTER_CMD_EOH, MILTER_P_NOEOH, -1, 1))
        return MILTER_DONE;
    long start = milter_packet_begin(&c->out, MILTER_CMD_EOH);
    if (start < 0 || milter_packet_end(&c->out, start) < 0)
        return queue_failed(c, MILTER_CMD_EOH);
    return event_sent(c, MILTER_CMD_EOH, MILTER_P_NR_EOH, c->s->content_ms);
}

/* Sends the gathered chunk as one BODY event. */
static milter_status send_chunk(milter_conn *c)
{
    if (!event_gate(c, MILTER_CMD_BODY, MILTER_P_NOBODY, -1, 1)) {
        milter_buf_reset(&c->chunk);
        return MILTER_DONE;
    }
    long start = milter_packet_begin(&c->out, MILTER_CMD_BODY);
    if (start < 0 || milter_put_bytes(&c->out, milter_buf_head(&c->chunk), milter_buf_used(&c->chunk)) < 0
        || milter_packet_end(&c->out, start) < 0)
        return queue_failed(c, MILTER_CMD_BODY);
    milter_buf_reset(&c->chunk);
    return event_sent(c, MILTER_CMD_BODY, MILTER_P_NR_BODY, c->s->content_ms);
}

/* 1 when body bytes would not be sent anyway (so they are not gathered). */
static int body_unwanted(const milter_conn *c)
{
    return c->state != S_SESSION || !c->in_tx || c->tx.set || c->tx_accepted || (c->steps & MILTER_P_NOBODY)
        || (c->np_mask & MILTER_P_NOBODY) || c->skip_cmd == MILTER_CMD_BODY;
}

milter_status milter_conn_body(milter_conn *c, const void *data, size_t len, size_t *taken)
{
    const unsigned char *p = data;
    *taken = 0;
    result_clear(c);
    if (c->pending) {
        say(c, MILTER_LOG_ERROR, "SMFIC_BODY while the previous event is still pending (ignored)");
        return MILTER_DONE;
    }
    if (content_start(c) < 0)
        return MILTER_DONE;
    if (body_unwanted(c)) {
        /* Nothing is sent; the answer is what the next event would get. */
        *taken = len;
        if (c->state == S_ERROR || c->state == S_REJECT_CON)
            sticky_use(c, &c->con);
        else if (c->tx.set)
            sticky_use(c, &c->tx);
        return MILTER_DONE;
    }
    while (*taken < len) {
        size_t room = MILTER_CHUNK_MAX - milter_buf_used(&c->chunk);
        size_t n = len - *taken < room ? len - *taken : room;
        if (milter_buf_append(&c->chunk, p + *taken, n) < 0) {
            fail(c, 0, "out of memory for a body chunk");
            sync_io(c);
            return MILTER_DONE;
        }
        *taken += n;
        if (milter_buf_used(&c->chunk) < MILTER_CHUNK_MAX)
            break;
        milter_status st = send_chunk(c);
        if (st == MILTER_PENDING)
            return st;
        if (c->result.verdict != MILTER_CONTINUE || body_unwanted(c)) {
            /* Refused or skipped: the rest is not sent either. */
            *taken = len;
            return MILTER_DONE;
        }
    }
    return MILTER_DONE;
}

static void send_eom(milter_conn *c)
{
    c->reuse_ok = 0;
    if (put_macros(c, MILTER_MACRO_EOM, MILTER_CMD_EOM) < 0) {
        fail(c, 0, "cannot queue the end-of-message macros (output buffer full)");
        return;
    }
    long start = milter_packet_begin(&c->out, MILTER_CMD_EOM);
    if (start < 0 || milter_packet_end(&c->out, start) < 0) {
        fail(c, 0, "cannot queue SMFIC_BODYEOB (output buffer full)");
        return;
    }
    c->last_sent = MILTER_CMD_EOM;
    start_wait(c, c->s->content_ms);
    c->body_done = 0;
    c->body_replacing = 0;
    if (flush_out(c) < 0)
        return;
    c->awaiting = MILTER_CMD_EOM;
}

milter_status milter_conn_eom(milter_conn *c)
{
    result_clear(c);
    if (c->pending) {
        say(c, MILTER_LOG_ERROR, "SMFIC_BODYEOB while the previous event is still pending (ignored)");
        return MILTER_DONE;
    }
    if (content_start(c) < 0)
        return MILTER_DONE;
    /* The last, partly filled body chunk goes first; EOM follows its reply. */
    if (milter_buf_used(&c->chunk) > 0) {
        if (!body_unwanted(c)) {
            milter_status st = send_chunk(c);
            if (st == MILTER_PENDING && c->awaiting == MILTER_CMD_BODY) {
                c->then_eom = 1;
                return st;
            }
            if (st == MILTER_PENDING) {
                /* Draining after a no-reply chunk: EOM queues behind it. */
                c->draining = 0;
                c->pending = 0;
            }
            if (c->fd < 0 || c->result.verdict != MILTER_CONTINUE) {
                if (c->state == S_SESSION)
                    end_message(c);
                return MILTER_DONE;
            }
        }
        milter_buf_reset(&c->chunk);
    }
    /* EOM has no NO* flag: it always goes out, unless the milter is done. */
    if (!event_gate(c, MILTER_CMD_EOM, 0, -1, 1)) {
        if (c->state == S_SESSION && !c->pending) {
            const char *q = c->tx_quarantine[0] ? c->tx_quarantine
                          : c->session_quarantine[0] ? c->session_quarantine : NULL;
            if (q != NULL && c->result.quarantine == NULL) {
                snprintf(c->quarantine_out, sizeof c->quarantine_out, "%s", q);
                c->result.quarantine = c->quarantine_out;
            }
            end_message(c);
        }
        return MILTER_DONE;
    }
    send_eom(c);
    if (c->fd < 0) {
        sync_io(c);
        return MILTER_DONE;
    }
    c->pending = 1;
    sync_io(c);
    return MILTER_PENDING;
}

void milter_conn_abort(milter_conn *c)
{
    if (c->pending) {
        say(c, MILTER_LOG_ERROR, "SMFIC_ABORT while an event is pending (ignored)");
        return;
    }
    if (c->in_tx)
        abort_tx(c);
    c->reuse_ok = 0;
    sync_io(c);
}

static void quit_and_close(milter_conn *c)
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
    close_socket(c);
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
    quit_and_close(c);
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
    start_wait(c, c->s->command_ms);
    if (flush_out(c) < 0)
        return -1;
    c->state = S_READY;
    c->reuse_ok = 0;
    c->skip_cmd = 0;
    c->session_quarantine[0] = 0;
    end_message(c);
    result_clear(c);
    sync_io(c);
    return 0;
}

/* ------------------------------------------------------------------ */
/* facts                                                               */

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
    return macro_list(c, stage);
}

int milter_conn_active(const milter_conn *c)
{
    return c->state == S_READY || c->state == S_SESSION || c->state == S_CONNECTING
        || c->state == S_NEGOTIATING;
}
