/*
 * Sending events to a milter (see milter_conn.h): the gate that decides
 * whether an event goes out at all (the milter's NO* steps, SKIP, a verdict
 * already given, a protocol version without it), the macros of its stage,
 * the packet, and whether to wait for a reply (NR_* steps) or for the
 * output to drain. Body bytes gather into 64 KiB chunks here.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <netinet/in.h>

#include "milter_conn_int.h"

const milter_macro_list *mc_macro_list(const milter_conn *c, int stage)
{
    if (stage < MILTER_SYMLIST_STAGES && c->symlist[stage] != NULL)
        return c->symlist[stage];
    return &c->s->macros[stage];
}

/* The MACRO packet for a stage: only the macros that have a value. */
static int put_macros(milter_conn *c, int stage, int cmd)
{
    const milter_macro_list *l = mc_macro_list(c, stage);
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

const char *mc_state_name(enum conn_state s)
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
        (void)mc_flush_out(c);
    mc_sync_io(c);
    return 0;
}

/* Checks whether an event goes out at all, and queues its macros.
 * Returns 1 to send the event packet, 0 when c->result already holds the
 * answer (nothing to wait for). */
static int event_gate(milter_conn *c, int cmd, uint32_t no_flag, int stage, int in_message)
{
    mc_result_clear(c);
    if (c->pending) {
        mc_say(c, MILTER_LOG_ERROR, "%s while the previous event is still pending (ignored)",
            milter_command_name(cmd));
        return 0;
    }
    switch (c->state) {
    case S_ERROR:
    case S_REJECT_CON:
        mc_sticky_use(c, &c->con);
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
        mc_say(c, MILTER_LOG_ERROR, "%s in state %s (ignored)", milter_command_name(cmd), mc_state_name(c->state));
        return 0;
    }
    if (in_message) {
        if (!c->in_tx) {
            mc_say(c, MILTER_LOG_ERROR, "%s outside a transaction (ignored)", milter_command_name(cmd));
            return 0;
        }
        if (c->tx.set) {
            mc_sticky_use(c, &c->tx);
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
    /* After events with no reply due, a milter that answers them anyway
     * would have its answer taken for this event's: what is waiting on the
     * socket now is a protocol error (one recv, only after such events). */
    if (c->unanswered && c->fd >= 0 && !(no_flag & c->steps)) {
        c->unanswered = 0;
        mc_read_input(c);
        if (c->state == S_ERROR) {
            mc_sticky_use(c, &c->con);
            return 0;
        }
    }
    /* Macros go out even when the milter does not want the event itself
     * (as Postfix): a later callback may ask for them. */
    if (stage >= 0 && put_macros(c, stage, cmd) < 0) {
        mc_fail(c, 0, "cannot queue the macros for %s (output buffer full)", milter_command_name(cmd));
        return 0;
    }
    if (no_flag & c->steps) {
        c->last_sent = MILTER_CMD_MACRO;
        mc_start_wait(c, c->s->command_ms);
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
    mc_start_wait(c, wait_ms);
    if (mc_flush_out(c) < 0)
        return MILTER_DONE;
    if (nr_flag & c->steps) {
        c->unanswered = 1;
        if (milter_buf_used(&c->out) > OUT_HIGH_WATER) {
            c->draining = 1;
            c->pending = 1;
            mc_sync_io(c);
            return MILTER_PENDING;
        }
        mc_sync_io(c);
        return MILTER_DONE;
    }
    c->awaiting = cmd;
    c->unanswered = 0;
    c->pending = 1;
    mc_sync_io(c);
    return MILTER_PENDING;
}

static milter_status queue_failed(milter_conn *c, int cmd)
{
    mc_fail(c, 0, "cannot queue %s (output buffer full)", milter_command_name(cmd));
    mc_sync_io(c);
    return MILTER_DONE;
}

void mc_end_message(milter_conn *c)
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
    mc_free_message_buffers(c);
}

milter_status milter_conn_connect(milter_conn *c, const char *hostname, int family, const char *addr,
                                  unsigned port)
{
    if (!event_gate(c, MILTER_CMD_CONNECT, MILTER_P_NOCONNECT, MILTER_MACRO_CONNECT, 0)) {
        if (c->state == S_READY && c->fd >= 0 && !c->pending) {
            c->state = S_SESSION;   /* skipped (SMFIP_NOCONNECT), not refused */
            mc_sync_io(c);
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
        mc_say(c, MILTER_LOG_WARNING, "bad client port number %u", port);
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
    if (c->in_tx && c->tx_accepted && c->state == S_SESSION && !c->pending) {
        /* It accepted or discarded the message: as Postfix's
         * milter8_unknown_event skips a milter in ACCEPT_MSG, no unknown
         * command of the transaction goes to it (its macros neither);
         * after the transaction's SMFIC_ABORT it gets them again. */
        mc_result_clear(c);
        return MILTER_DONE;
    }
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
            mc_fail(c, 0, "cannot queue SMFIC_ABORT (output buffer full)");
            return;
        }
        c->last_sent = MILTER_CMD_ABORT;
        mc_start_wait(c, c->s->command_ms);
        (void)mc_flush_out(c);
    }
    mc_end_message(c);
}

milter_status milter_conn_mail(milter_conn *c, const char *const *argv)
{
    if (argv == NULL || argv[0] == NULL) {
        mc_result_clear(c);
        mc_say(c, MILTER_LOG_ERROR, "SMFIC_MAIL without a sender (ignored)");
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
        mc_result_clear(c);
        mc_say(c, MILTER_LOG_ERROR, "SMFIC_RCPT without a recipient (ignored)");
        return MILTER_DONE;
    }
    if (rejected && !((c->s->offer & MILTER_P_RCPT_REJ) && (c->steps & MILTER_P_RCPT_REJ))) {
        mc_result_clear(c);
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
        mc_fail(c, 0, "cannot queue the end-of-header macros (output buffer full)");
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
    mc_result_clear(c);
    if (c->pending) {
        mc_say(c, MILTER_LOG_ERROR, "SMFIC_BODY while the previous event is still pending (ignored)");
        return MILTER_DONE;
    }
    if (content_start(c) < 0)
        return MILTER_DONE;
    if (body_unwanted(c)) {
        /* Nothing is sent; the answer is what the next event would get. */
        *taken = len;
        if (c->state == S_ERROR || c->state == S_REJECT_CON)
            mc_sticky_use(c, &c->con);
        else if (c->tx.set)
            mc_sticky_use(c, &c->tx);
        return MILTER_DONE;
    }
    while (*taken < len) {
        size_t room = MILTER_CHUNK_MAX - milter_buf_used(&c->chunk);
        size_t n = len - *taken < room ? len - *taken : room;
        if (milter_buf_append(&c->chunk, p + *taken, n) < 0) {
            mc_fail(c, 0, "out of memory for a body chunk");
            mc_sync_io(c);
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

void mc_send_eom(milter_conn *c)
{
    c->reuse_ok = 0;
    if (put_macros(c, MILTER_MACRO_EOM, MILTER_CMD_EOM) < 0) {
        mc_fail(c, 0, "cannot queue the end-of-message macros (output buffer full)");
        return;
    }
    long start = milter_packet_begin(&c->out, MILTER_CMD_EOM);
    if (start < 0 || milter_packet_end(&c->out, start) < 0) {
        mc_fail(c, 0, "cannot queue SMFIC_BODYEOB (output buffer full)");
        return;
    }
    c->last_sent = MILTER_CMD_EOM;
    mc_start_wait(c, c->s->content_ms);
    c->body_done = 0;
    c->body_replacing = 0;
    if (mc_flush_out(c) < 0)
        return;
    c->awaiting = MILTER_CMD_EOM;
}

milter_status milter_conn_eom(milter_conn *c)
{
    mc_result_clear(c);
    if (c->pending) {
        mc_say(c, MILTER_LOG_ERROR, "SMFIC_BODYEOB while the previous event is still pending (ignored)");
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
                    mc_end_message(c);
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
            mc_end_message(c);
        }
        return MILTER_DONE;
    }
    mc_send_eom(c);
    if (c->fd < 0) {
        mc_sync_io(c);
        return MILTER_DONE;
    }
    c->pending = 1;
    mc_sync_io(c);
    return MILTER_PENDING;
}

int milter_conn_in_message(const milter_conn *c)
{
    return c->in_tx && !c->pending;
}

void milter_conn_abort(milter_conn *c)
{
    if (c->pending) {
        mc_say(c, MILTER_LOG_ERROR, "SMFIC_ABORT while an event is pending (ignored)");
        return;
    }
    if (c->in_tx)
        abort_tx(c);
    c->reuse_ok = 0;
    mc_sync_io(c);
}
