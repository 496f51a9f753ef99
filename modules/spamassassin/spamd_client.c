/*
 * One request to spamd, non-blocking (see spamd_client.h).
 *
 * Steps: connect (addresses tried in order) -> write the request head and
 * the message, pulled from ops->read into one 64 KiB buffer as the socket
 * drains it -> shut our side down (spamd reads to Content-length, but
 * shutting down also ends a message whose last line has no line end) ->
 * read and parse the response (spamd_proto.c) until it is complete or the
 * connection ends. If spamd closes while we still write (it refused the
 * request), whatever it answered is read before giving up.
 *
 * The timer works as the milter connection's: armed while we wait, re-armed
 * for the rest when there was progress since.
 */
#include "spamd_client.h"
#include "log_line.h"
#include "peer_connect.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#define CHUNK (64u * 1024u)

struct spamd_settings {
    char address[512];
    peer_addrs peer;
    unsigned connect_ms, timeout_ms;
    size_t max_size, max_response;
    char user[130];
    int has_user;
};

enum state { S_IDLE, S_CONNECTING, S_SENDING, S_READING, S_DONE };

struct spamd_client {
    const spamd_settings *s;
    spamd_ops ops;
    void *arg;
    peer_socket sock;
    enum state state;
    size_t addr_index;
    int pending, report;
    spamd_command cmd;
    size_t size, sent;
    unsigned char *buf;   /* head, then message chunks */
    size_t buf_len, buf_off;
    spamd_response resp;
    spamd_result result;
    char error[256];
};

__attribute__((format(printf, 3, 4)))
static void say(spamd_client *c, spamd_log_level level, const char *fmt, ...)
{
    if (c->ops.log == NULL)
        return;
    char text[600];
    va_list ap;
    va_start(ap, fmt);
    log_line_format(text, sizeof text, "spamd", c->s->address, fmt, ap);
    va_end(ap);
    c->ops.log(c->arg, level, text);
}

spamd_settings *spamd_settings_create(const spamd_config *cfg, char *err, size_t errlen)
{
    spamd_settings *s = calloc(1, sizeof *s);
    if (s == NULL) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    if (cfg->address == NULL || strlen(cfg->address) >= sizeof s->address) {
        snprintf(err, errlen, "spamd address missing or too long");
        free(s);
        return NULL;
    }
    snprintf(s->address, sizeof s->address, "%s", cfg->address);
    if (peer_addrs_parse(&s->peer, cfg->address, "inet:", "783", err, errlen) < 0) {
        free(s);
        return NULL;
    }
    if (cfg->user != NULL) {
        char head[512];
        if (spamd_request_head(SPAMD_CHECK, 0, cfg->user, head, sizeof head, err, errlen) < 0) {
            free(s);
            return NULL;
        }
        snprintf(s->user, sizeof s->user, "%s", cfg->user);
        s->has_user = 1;
    }
    s->connect_ms = cfg->connect_timeout_ms ? cfg->connect_timeout_ms : 10000;
    s->timeout_ms = cfg->timeout_ms ? cfg->timeout_ms : 600000;
    s->max_size = cfg->max_size ? cfg->max_size : 500 * 1024;
    s->max_response = cfg->max_response ? cfg->max_response : 2 * s->max_size + 1024 * 1024;
    return s;
}

void spamd_settings_free(spamd_settings *s)
{
    free(s);
}

/* ------------------------------------------------------------------ */
/* the client                                                          */

spamd_client *spamd_client_create(const spamd_settings *s, const spamd_ops *ops, void *arg)
{
    spamd_client *c = calloc(1, sizeof *c);
    if (c == NULL)
        return NULL;
    c->s = s;
    c->ops = *ops;
    c->arg = arg;
    peer_socket_init(&c->sock, ops->watch, ops->timer, arg);
    return c;
}

static void sync_io(spamd_client *c)
{
    int want = 0;
    if (c->sock.fd >= 0)
        want = c->state == S_CONNECTING || c->state == S_SENDING ? SPAMD_IO_WRITE
             : c->state == S_READING ? SPAMD_IO_READ : 0;
    peer_socket_sync(&c->sock, want, c->sock.fd >= 0 && c->state != S_DONE && c->state != S_IDLE);
}

void spamd_client_free(spamd_client *c)
{
    if (c == NULL)
        return;
    peer_socket_close(&c->sock);
    free(c->buf);
    free(c);
}

static void finish(spamd_client *c)
{
    peer_socket_close(&c->sock);
    c->state = S_DONE;
    free(c->buf);
    c->buf = NULL;
    if (c->pending)
        c->report = 1;
}

__attribute__((format(printf, 2, 3)))
static void failed(spamd_client *c, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(c->error, sizeof c->error, fmt, ap);
    va_end(ap);
    c->result.outcome = SPAMD_FAILED;
    c->result.error = c->error;
    say(c, SPAMD_LOG_WARNING, "%s", c->error);
    finish(c);
}

/* The response is complete: what did spamd say? */
static void answered(spamd_client *c)
{
    spamd_response *r = &c->resp;
    spamd_result *res = &c->result;
    res->code = r->code;
    res->code_text = r->code_text;
    res->has_spam = r->has_spam;
    res->is_spam = r->is_spam;
    res->score = r->score;
    res->threshold = r->threshold;
    res->body_bytes = r->body_bytes;
    res->symbols = c->cmd == SPAMD_SYMBOLS ? r->symbols : NULL;
    if (r->code != 0) {
        failed(c, "spamd answered %d %s", r->code, r->code_text);
        res->code = r->code;
        return;
    }
    if (c->cmd == SPAMD_PING ? strcmp(r->code_text, "PONG") != 0 : !r->has_spam) {
        failed(c, c->cmd == SPAMD_PING ? "no PONG in spamd's answer" : "no Spam header in spamd's answer");
        return;
    }
    res->outcome = SPAMD_OK;
    finish(c);
}

static int body_piece(void *arg, const void *data, size_t len)
{
    spamd_client *c = arg;
    return c->ops.body ? c->ops.body(c->arg, data, len) : 0;
}

static void read_response(spamd_client *c)
{
    unsigned char buf[16384];
    for (int round = 0; round < 8 && c->state == S_READING; round++) {
        ssize_t n = recv(c->sock.fd, buf, sizeof buf, 0);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK)
                return;
            failed(c, "error reading the response: %s", strerror(errno));
            return;
        }
        peer_socket_progress(&c->sock);
        if (n == 0) {
            if (spamd_response_eof(&c->resp) > 0)
                answered(c);
            else
                failed(c, "%s", c->resp.error);
            return;
        }
        int rc = spamd_response_feed(&c->resp, buf, (size_t)n, body_piece, c);
        if (rc < 0) {
            failed(c, "%s", c->resp.error);
            return;
        }
        if (rc > 0) {
            answered(c);
            return;
        }
    }
}

/* The request was cut off by spamd: it may have said why. */
static void write_failed(spamd_client *c, int err)
{
    if (err == EPIPE || err == ECONNRESET) {
        c->state = S_READING;
        read_response(c);
        if (c->state == S_DONE)
            return;
    }
    failed(c, "error writing the request: %s", strerror(err));
}

static void send_request(spamd_client *c)
{
    for (;;) {
        if (c->buf_off == c->buf_len) {
            if (c->sent == c->size) {
                /* All sent: spamd reads to Content-length; the shutdown
                 * also ends a last line without its line end. */
                (void)shutdown(c->sock.fd, SHUT_WR);
                c->state = S_READING;
                peer_socket_wait(&c->sock, c->s->timeout_ms);
                read_response(c);
                return;
            }
            size_t want = c->size - c->sent < CHUNK ? c->size - c->sent : CHUNK;
            long n = c->ops.read ? c->ops.read(c->arg, c->buf, want) : -1;
            if (n < 0) {
                failed(c, "cannot read the message");
                return;
            }
            if (n == 0) {
                failed(c, "the message ended after %zu of %zu bytes", c->sent, c->size);
                return;
            }
            if ((size_t)n > want)
                n = (long)want;
            c->buf_off = 0;
            c->buf_len = (size_t)n;
            c->sent += (size_t)n;
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
    say(arg, SPAMD_LOG_WARNING, "connect: %s", strerror(err));
}

static void try_connect(spamd_client *c)
{
    switch (peer_connect_start(&c->s->peer, &c->addr_index, &c->sock.fd, connect_refused, c)) {
    case PEER_CONNECTED:
        c->state = S_SENDING;
        peer_socket_wait(&c->sock, c->s->timeout_ms);
        send_request(c);
        return;
    case PEER_CONNECTING:
        c->state = S_CONNECTING;
        return;
    case PEER_UNREACHABLE:
        break;
    }
    failed(c, "cannot connect to spamd");
}

spamd_status spamd_client_start(spamd_client *c, spamd_command cmd, size_t message_size)
{
    memset(&c->result, 0, sizeof c->result);
    c->result.code = -1;
    if (c->state != S_IDLE && c->state != S_DONE) {
        say(c, SPAMD_LOG_ERROR, "a request is already running (ignored)");
        c->result.outcome = SPAMD_FAILED;
        c->result.error = "a request is already running";
        return SPAMD_DONE;
    }
    c->cmd = cmd;
    c->size = cmd == SPAMD_PING ? 0 : message_size;
    c->sent = 0;
    if (cmd != SPAMD_PING && message_size > c->s->max_size) {
        c->result.outcome = SPAMD_SKIPPED;
        c->state = S_DONE;
        return SPAMD_DONE;
    }
    free(c->buf);
    c->buf = malloc(CHUNK > 512 ? CHUNK : 512);
    if (c->buf == NULL) {
        c->result.outcome = SPAMD_FAILED;
        c->result.error = "out of memory";
        return SPAMD_DONE;
    }
    int n = spamd_request_head(cmd, c->size, c->s->has_user ? c->s->user : NULL, (char *)c->buf, CHUNK, c->error,
                               sizeof c->error);
    if (n < 0) {
        c->result.outcome = SPAMD_FAILED;
        c->result.error = c->error;
        return SPAMD_DONE;
    }
    c->buf_len = (size_t)n;
    c->buf_off = 0;
    spamd_response_init(&c->resp, c->s->max_response, cmd == SPAMD_SYMBOLS);
    c->addr_index = 0;
    c->pending = 1;
    c->report = 0;
    peer_socket_wait(&c->sock, c->s->connect_ms);
    try_connect(c);
    if (c->report) {
        c->report = c->pending = 0;
        sync_io(c);
        return SPAMD_DONE;
    }
    sync_io(c);
    return SPAMD_PENDING;
}

static void report(spamd_client *c)
{
    sync_io(c);
    if (c->report) {
        c->report = 0;
        c->pending = 0;
        if (c->ops.done)
            c->ops.done(c->arg);   /* may free c */
    }
}

void spamd_client_io(spamd_client *c, int events)
{
    if (c->sock.fd < 0) {
        report(c);
        return;
    }
    if (c->state == S_CONNECTING) {
        int soerr = peer_connect_error(c->sock.fd);
        if (soerr != 0) {
            say(c, SPAMD_LOG_WARNING, "connect: %s", strerror(soerr));
            peer_socket_close(&c->sock);
            c->addr_index++;
            try_connect(c);
        } else {
            c->state = S_SENDING;
            peer_socket_wait(&c->sock, c->s->timeout_ms);
            send_request(c);
        }
    } else if (c->state == S_SENDING && (events & SPAMD_IO_WRITE))
        send_request(c);
    else if (c->state == S_READING && (events & SPAMD_IO_READ))
        read_response(c);
    report(c);
}

void spamd_client_timeout(spamd_client *c)
{
    c->sock.timer_armed = 0;
    if (c->sock.fd < 0 || c->state == S_DONE) {
        report(c);
        return;
    }
    if (peer_socket_rearm(&c->sock))
        return;
    failed(c, "timeout after %u ms %s", c->sock.wait_ms,
           c->state == S_CONNECTING ? "connecting" : c->state == S_SENDING ? "sending the message"
                                                                             : "waiting for the answer");
    report(c);
}

const spamd_result *spamd_client_result(const spamd_client *c)
{
    return &c->result;
}
