/*
 * One clamd request, non-blocking (see clamd_client.h).
 *
 * Steps: connect -> write the command, then the message as chunks (header
 * and data pulled from ops->read into one buffer as the socket drains it),
 * then the zero-length chunk -> read one NUL-terminated reply line. While
 * writing we also watch for input: clamd answers early when the stream
 * passes its StreamMaxLength, and closes; a write that fails with EPIPE or
 * ECONNRESET turns into reading that answer.
 */
#include "clamd_client.h"
#include "log_line.h"
#include "peer_connect.h"

#include <errno.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

struct clamd_settings {
    char address[512];
    peer_addrs peer;
    unsigned connect_ms, timeout_ms;
    size_t max_size, chunk;
};

enum state { S_IDLE, S_CONNECTING, S_SENDING, S_READING, S_DONE };

struct clamd_client {
    const clamd_settings *s;
    clamd_ops ops;
    void *arg;
    peer_socket sock;
    enum state state;
    size_t addr_index;
    int pending, report;
    clamd_command cmd;
    size_t size;
    int source_done;      /* the terminating zero chunk is queued */
    unsigned char *buf;   /* command, then chunk header + data */
    size_t buf_len, buf_off;
    char reply[CLAMD_REPLY_MAX + 1];
    size_t reply_len;
    clamd_result result;
    char error[256];
};

__attribute__((format(printf, 3, 4)))
static void say(clamd_client *c, clamd_log_level level, const char *fmt, ...)
{
    if (c->ops.log == NULL)
        return;
    char text[600];
    va_list ap;
    va_start(ap, fmt);
    log_line_format(text, sizeof text, "clamd", c->s->address, fmt, ap);
    va_end(ap);
    c->ops.log(c->arg, level, text);
}

clamd_settings *clamd_settings_create(const clamd_config *cfg, char *err, size_t errlen)
{
    clamd_settings *s = calloc(1, sizeof *s);
    if (s == NULL) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    if (cfg->address == NULL || strlen(cfg->address) >= sizeof s->address) {
        snprintf(err, errlen, "clamd address missing or too long");
        free(s);
        return NULL;
    }
    snprintf(s->address, sizeof s->address, "%s", cfg->address);
    if (peer_addrs_parse(&s->peer, cfg->address, "tcp:", "3310", err, errlen) < 0) {
        free(s);
        return NULL;
    }
    s->connect_ms = cfg->connect_timeout_ms ? cfg->connect_timeout_ms : 10000;
    s->timeout_ms = cfg->timeout_ms ? cfg->timeout_ms : 120000;
    s->max_size = cfg->max_size ? cfg->max_size : 25u * 1024 * 1024;
    s->chunk = cfg->chunk_size ? cfg->chunk_size : 64u * 1024;
    if (s->chunk > 16u * 1024 * 1024)
        s->chunk = 16u * 1024 * 1024;
    return s;
}

void clamd_settings_free(clamd_settings *s)
{
    free(s);
}

/* ------------------------------------------------------------------ */
/* the client                                                          */

clamd_client *clamd_client_create(const clamd_settings *s, const clamd_ops *ops, void *arg)
{
    clamd_client *c = calloc(1, sizeof *c);
    if (c == NULL)
        return NULL;
    c->s = s;
    c->ops = *ops;
    c->arg = arg;
    peer_socket_init(&c->sock, ops->watch, ops->timer, arg);
    return c;
}

static void sync_io(clamd_client *c)
{
    int want = 0;
    if (c->sock.fd >= 0) {
        if (c->state == S_CONNECTING)
            want = CLAMD_IO_WRITE;
        else if (c->state == S_SENDING)
            want = CLAMD_IO_WRITE | CLAMD_IO_READ;   /* an early answer */
        else if (c->state == S_READING)
            want = CLAMD_IO_READ;
    }
    peer_socket_sync(&c->sock, want, c->sock.fd >= 0 && c->state != S_DONE && c->state != S_IDLE);
}

void clamd_client_free(clamd_client *c)
{
    if (c == NULL)
        return;
    peer_socket_close(&c->sock);
    free(c->buf);
    free(c);
}

static void finish(clamd_client *c)
{
    peer_socket_close(&c->sock);
    c->state = S_DONE;
    free(c->buf);
    c->buf = NULL;
    if (c->pending)
        c->report = 1;
}

__attribute__((format(printf, 2, 3)))
static void failed(clamd_client *c, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(c->error, sizeof c->error, fmt, ap);
    va_end(ap);
    c->result.outcome = CLAMD_OUTCOME_FAILED;
    c->result.error = c->error;
    say(c, CLAMD_LOG_WARNING, "%s", c->error);
    finish(c);
}

static void answered(clamd_client *c)
{
    char why[200];
    if (clamd_parse_reply(c->cmd, c->reply, c->reply_len, &c->result.reply, why, sizeof why) < 0) {
        failed(c, "%s", why);
        return;
    }
    c->result.outcome = CLAMD_OUTCOME_ANSWERED;
    finish(c);
}

static void read_reply(clamd_client *c)
{
    char buf[512];
    for (int round = 0; round < 8 && c->sock.fd >= 0; round++) {
        ssize_t n = recv(c->sock.fd, buf, sizeof buf, 0);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK)
                return;
            if (c->reply_len > 0) {   /* a reply, then a reset: take the reply */
                answered(c);
                return;
            }
            failed(c, "error reading the reply: %s", strerror(errno));
            return;
        }
        peer_socket_progress(&c->sock);
        if (n == 0) {
            if (c->reply_len > 0)
                answered(c);     /* an unterminated last line */
            else
                failed(c, "connection closed without a reply");
            return;
        }
        for (ssize_t i = 0; i < n; i++) {
            if (buf[i] == 0) {     /* z-commands: the reply ends with a NUL */
                if (i + 1 < n) {
                    failed(c, "%zd bytes after the reply", n - i - 1);
                    return;
                }
                answered(c);
                return;
            }
            if (c->reply_len == CLAMD_REPLY_MAX) {
                failed(c, "reply longer than %d bytes", CLAMD_REPLY_MAX);
                return;
            }
            c->reply[c->reply_len++] = buf[i];
        }
    }
}

static void write_failed(clamd_client *c, int err)
{
    if (err == EPIPE || err == ECONNRESET) {
        c->state = S_READING;
        read_reply(c);
        if (c->state == S_DONE)
            return;
    }
    failed(c, "error writing the stream: %s", strerror(err));
}

static void send_stream(clamd_client *c)
{
    for (;;) {
        if (c->buf_off == c->buf_len) {
            if (c->source_done || c->cmd != CLAMD_INSTREAM) {
                c->state = S_READING;
                return;
            }
            size_t want = c->s->chunk;
            if (c->size && c->size - c->result.sent < want)
                want = c->size - c->result.sent;
            long n = want ? (c->ops.read ? c->ops.read(c->arg, c->buf + 4, want) : -1) : 0;
            if (n < 0) {
                failed(c, "cannot read the message");
                return;
            }
            if ((size_t)n > want)
                n = (long)want;
            if (n == 0 && c->size && c->result.sent < c->size) {
                failed(c, "the message ended after %zu of %zu bytes", c->result.sent, c->size);
                return;
            }
            if (c->result.sent + (size_t)n > c->s->max_size) {
                /* Size unknown up front and now too big: not scanned. */
                c->result.outcome = CLAMD_OUTCOME_SKIPPED;
                finish(c);
                return;
            }
            clamd_chunk_header(c->buf, (uint32_t)n);
            c->buf_off = 0;
            c->buf_len = 4 + (size_t)n;
            c->result.sent += (size_t)n;
            if (n == 0)
                c->source_done = 1;
        }
        ssize_t w = send(c->sock.fd, c->buf + c->buf_off, c->buf_len - c->buf_off, MSG_NOSIGNAL);
        if (w > 0) {
            c->buf_off += (size_t)w;
            peer_socket_progress(&c->sock);
            continue;
        }
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            return;
        write_failed(c, w < 0 ? errno : EPIPE);
        return;
    }
}

static void connect_refused(void *arg, int err)
{
    say(arg, CLAMD_LOG_WARNING, "connect: %s", strerror(err));
}

static void try_connect(clamd_client *c)
{
    switch (peer_connect_start(&c->s->peer, &c->addr_index, &c->sock.fd, connect_refused, c)) {
    case PEER_CONNECTED:
        c->state = S_SENDING;
        peer_socket_wait(&c->sock, c->s->timeout_ms);
        send_stream(c);
        return;
    case PEER_CONNECTING:
        c->state = S_CONNECTING;
        return;
    case PEER_UNREACHABLE:
        break;
    }
    failed(c, "cannot connect to clamd");
}

clamd_status clamd_client_start(clamd_client *c, clamd_command cmd, size_t message_size)
{
    memset(&c->result, 0, sizeof c->result);
    if (c->state != S_IDLE && c->state != S_DONE) {
        say(c, CLAMD_LOG_ERROR, "a request is already running (ignored)");
        c->result.outcome = CLAMD_OUTCOME_FAILED;
        c->result.error = "a request is already running";
        return CLAMD_DONE;
    }
    c->cmd = cmd;
    c->size = cmd == CLAMD_INSTREAM ? message_size : 0;
    if (cmd == CLAMD_INSTREAM && message_size > c->s->max_size) {
        c->result.outcome = CLAMD_OUTCOME_SKIPPED;
        c->state = S_DONE;
        return CLAMD_DONE;
    }
    free(c->buf);
    c->buf = malloc(c->s->chunk + 4 < 64 ? 64 : c->s->chunk + 4);
    if (c->buf == NULL) {
        c->result.outcome = CLAMD_OUTCOME_FAILED;
        c->result.error = "out of memory";
        return CLAMD_DONE;
    }
    size_t n;
    const char *text = clamd_command_text(cmd, &n);
    memcpy(c->buf, text, n);
    c->buf_len = n;
    c->buf_off = 0;
    c->source_done = 0;
    c->reply_len = 0;
    c->addr_index = 0;
    c->pending = 1;
    c->report = 0;
    peer_socket_wait(&c->sock, c->s->connect_ms);
    try_connect(c);
    if (c->report) {
        c->report = c->pending = 0;
        sync_io(c);
        return CLAMD_DONE;
    }
    sync_io(c);
    return CLAMD_PENDING;
}

static void report(clamd_client *c)
{
    sync_io(c);
    if (c->report) {
        c->report = 0;
        c->pending = 0;
        if (c->ops.done)
            c->ops.done(c->arg);   /* may free c */
    }
}

void clamd_client_io(clamd_client *c, int events)
{
    if (c->sock.fd < 0) {
        report(c);
        return;
    }
    if (c->state == S_CONNECTING) {
        int soerr = peer_connect_error(c->sock.fd);
        if (soerr != 0) {
            say(c, CLAMD_LOG_WARNING, "connect: %s", strerror(soerr));
            peer_socket_close(&c->sock);
            c->addr_index++;
            try_connect(c);
        } else {
            c->state = S_SENDING;
            peer_socket_wait(&c->sock, c->s->timeout_ms);
            send_stream(c);
        }
    } else {
        if (c->state == S_SENDING && (events & CLAMD_IO_READ)) {
            /* clamd answered before the end of the stream (its size limit),
             * or closed: read that; a readiness with nothing to read changes
             * nothing. */
            c->state = S_READING;
            read_reply(c);
            if (c->state == S_READING && c->reply_len == 0)
                c->state = S_SENDING;
        } else if (c->state == S_READING && (events & CLAMD_IO_READ))
            read_reply(c);
        if (c->state == S_SENDING && (events & CLAMD_IO_WRITE))
            send_stream(c);
    }
    report(c);
}

void clamd_client_timeout(clamd_client *c)
{
    c->sock.timer_armed = 0;
    if (c->sock.fd < 0 || c->state == S_DONE) {
        report(c);
        return;
    }
    if (peer_socket_rearm(&c->sock))
        return;
    failed(c, "timeout after %u ms %s", c->sock.wait_ms,
           c->state == S_CONNECTING ? "connecting" : c->state == S_SENDING ? "sending the stream"
                                                                             : "waiting for the reply");
    report(c);
}

const clamd_result *clamd_client_result(const clamd_client *c)
{
    return &c->result;
}
