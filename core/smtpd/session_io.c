/*
 * A plain-TCP session's socket I/O, done here rather than by its socket
 * bufferevent: the same buffers and callbacks, fewer system calls.
 *
 * Output. A socket bufferevent arms its write event (epoll_ctl) whenever
 * data is added to its output, writes on the next pass of the loop, and
 * disarms the event (epoll_ctl again) once the output is empty: two system
 * calls per reply besides the write, for replies that the kernel nearly
 * always takes whole. Here the bufferevent's EV_WRITE stays off. The first
 * byte added to its output makes a per-session event active (no system
 * call); it runs as soon as the callback that produced the reply returns,
 * before the loop waits again, and writes everything that has accumulated
 * with one writev. So the replies to a pipelined group still go out
 * together, in order (RFC 2920), as when libevent wrote them on its next
 * pass. Only what the kernel does not take is left to the bufferevent:
 * EV_WRITE on, with smtpd_timeout as its write timeout, until the output
 * drains, then off again. A failed write takes the same way, so the
 * session learns of a broken connection from the bufferevent's event
 * callback, as before. Either way the bufferevent's write callback runs
 * when the output is empty.
 *
 * Input. libevent asks the kernel how much is readable (ioctl FIONREAD)
 * before every read, and reads at most 4 KiB. Here a read event of our own
 * (with smtpd_timeout, re-armed by libevent without a system call) reads up
 * to INPUT_CHUNK bytes with one recv() into the bufferevent's input buffer
 * and then runs the bufferevent's read callback; end of file, errors and
 * the timeout go to its event callback, as libevent reports them. The
 * bufferevent's read watermark still bounds the input: at the mark the read
 * event is removed, and put back when the session has consumed input.
 *
 * TLS sessions keep libevent's path: the bufferevent_openssl filter owns
 * the socket (after STARTTLS the plain bufferevent becomes the filter's
 * underlying one and is handed back to libevent here).
 */
#include "config.h"

#include <errno.h>
#include <sys/socket.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/event.h>

#include "smtpd/smtpd_int.h"

/* One read: what a busy client sends between two replies, or a good part
 * of a message's content. */
#define INPUT_CHUNK 16384

/* ------------------------------------------------------------------ */
/* output                                                              */

/* Writes what the session's replies left in the output buffer. */
static void output_flush(evutil_socket_t fd, short what, void *arg)
{
    struct smtpd_session *s = arg;
    (void)fd;
    (void)what;
    if (!s->direct_io || s->write_armed)
        return;   /* STARTTLS came in between, or libevent writes already */
    struct evbuffer *out = bufferevent_get_output(s->bev);
    if (evbuffer_get_length(out) == 0)
        return;
    /* The socket bufferevent freezes the start of its output against
     * other writers and lifts the freeze around its own writes: so here. */
    evbuffer_unfreeze(out, 1);
    (void)evbuffer_write(out, bufferevent_getfd(s->bev));
    evbuffer_freeze(out, 1);
    if (evbuffer_get_length(out) > 0) {
        /* A slow reader (or an error, which the bufferevent will meet and
         * report): libevent writes the rest and calls session_write_cb. */
        s->write_armed = 1;
        bufferevent_enable(s->bev, EV_WRITE);
        return;
    }
    /* as libevent reports a drained output: session_write_cb, which may
     * free the session (the bufferevent's low write mark is 0) */
    bufferevent_trigger(s->bev, EV_WRITE, 0);
}

static void output_added(struct evbuffer *out, const struct evbuffer_cb_info *info, void *arg)
{
    struct smtpd_session *s = arg;
    (void)out;
    /* Already active: a no-op; armed: the bufferevent's own callback
     * has seen the data. */
    if (info->n_added > 0 && s->direct_io && !s->write_armed)
        event_active(s->flush_event, EV_WRITE, 1);
}

/* The bufferevent wrote the rest of what output_flush left: back to
 * writing directly. */
void smtpd_io_written(struct smtpd_session *s)
{
    if (!s->write_armed)
        return;
    s->write_armed = 0;
    bufferevent_disable(s->bev, EV_WRITE);
}

/* ------------------------------------------------------------------ */
/* input                                                               */

static size_t input_limit(const struct smtpd_session *s)
{
    size_t high = 0;
    bufferevent_getwatermark(s->bev, EV_READ, NULL, &high);
    return high;   /* 0: none */
}

/* Stops reading: the read event's timeout goes too (libevent does the
 * same when it reports an end, an error or a timeout). */
static void input_off(struct smtpd_session *s)
{
    s->read_suspended = 0;
    if (s->read_event)
        event_del(s->read_event);
}

static void input_read(evutil_socket_t fd, short what, void *arg)
{
    struct smtpd_session *s = arg;
    struct bufferevent *bev = s->bev;
    if (what & EV_TIMEOUT) {
        input_off(s);
        bufferevent_trigger_event(bev, BEV_EVENT_TIMEOUT | BEV_EVENT_READING, 0);
        return;
    }
    struct evbuffer *in = bufferevent_get_input(bev);
    size_t want = INPUT_CHUNK;
    size_t high = input_limit(s);
    if (high) {
        size_t have = evbuffer_get_length(in);
        if (have >= high) {
            /* the session has not consumed: wait until it does (input_drained) */
            event_del(s->read_event);
            s->read_suspended = 1;
            return;
        }
        if (high - have < want)
            want = high - have;
    }
    char buf[INPUT_CHUNK];
    ssize_t n = recv(fd, buf, want, 0);
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
        return;
    if (n <= 0) {
        input_off(s);
        bufferevent_trigger_event(bev, (n == 0 ? BEV_EVENT_EOF : BEV_EVENT_ERROR) | BEV_EVENT_READING, 0);
        return;
    }
    /* The socket bufferevent freezes the end of its input against other
     * writers; its own reads lift the freeze: so here. */
    evbuffer_unfreeze(in, 0);
    int added = evbuffer_add(in, buf, (size_t)n);
    evbuffer_freeze(in, 0);
    if (added != 0) {
        input_off(s);
        bufferevent_trigger_event(bev, BEV_EVENT_ERROR | BEV_EVENT_READING, 0);
        return;
    }
    if (high && evbuffer_get_length(in) >= high) {
        event_del(s->read_event);   /* at the mark already: spare the next wake-up */
        s->read_suspended = 1;
    }
    bufferevent_trigger(bev, EV_READ, 0);   /* session_read_cb; may free the session */
}

/* The session consumed input: resume reading if the watermark stopped it. */
static void input_drained(struct evbuffer *in, const struct evbuffer_cb_info *info, void *arg)
{
    struct smtpd_session *s = arg;
    if (info->n_deleted == 0 || !s->read_suspended || !s->direct_io)
        return;
    size_t high = input_limit(s);
    if (high && evbuffer_get_length(in) >= high)
        return;
    s->read_suspended = 0;
    event_add(s->read_event, &s->set->timeout);
}

/* ------------------------------------------------------------------ */
/* the session's side                                                  */

void smtpd_io_attach(struct smtpd_session *s)
{
    if (bufferevent_openssl_get_ssl(s->bev) != NULL) {
        smtpd_io_detach(s);
        return;
    }
    struct event_base *base = s->worker->base;
    int fd = bufferevent_getfd(s->bev);
    if (s->flush_event == NULL)
        s->flush_event = event_new(base, -1, 0, output_flush, s);
    if (s->read_event == NULL)
        s->read_event = event_new(base, fd, EV_READ | EV_PERSIST, input_read, s);
    if (s->flush_event == NULL || s->read_event == NULL)
        return;   /* out of memory: libevent's own path still works */
    s->output_watch = evbuffer_add_cb(bufferevent_get_output(s->bev), output_added, s);
    s->input_watch = evbuffer_add_cb(bufferevent_get_input(s->bev), input_drained, s);
    if (s->output_watch == NULL || s->input_watch == NULL)
        return;
    s->direct_io = 1;
    s->write_armed = 0;
    bufferevent_disable(s->bev, EV_READ | EV_WRITE);
}

/* STARTTLS: the plain bufferevent now carries the TLS filter's ciphertext
 * (the "220 Ready to start TLS" reply may still be in it): libevent reads
 * and writes it from now on. */
void smtpd_io_detach(struct smtpd_session *s)
{
    if (!s->direct_io)
        return;
    s->direct_io = 0;
    s->write_armed = 0;
    input_off(s);
    if (s->read_event)
        event_free(s->read_event);
    s->read_event = NULL;
    struct bufferevent *plain = bufferevent_get_underlying(s->bev);
    if (plain == NULL)
        return;
    if (s->output_watch)
        evbuffer_remove_cb_entry(bufferevent_get_output(plain), s->output_watch);
    if (s->input_watch)
        evbuffer_remove_cb_entry(bufferevent_get_input(plain), s->input_watch);
    s->output_watch = s->input_watch = NULL;
    bufferevent_enable(plain, EV_WRITE);
}

/* Starts reading (and, without direct I/O, writing through libevent). */
void smtpd_io_enable(struct smtpd_session *s)
{
    if (!s->direct_io) {
        bufferevent_enable(s->bev, EV_READ | EV_WRITE);
        return;
    }
    s->read_suspended = 0;
    event_add(s->read_event, &s->set->timeout);
}

/* Stops reading: the session closes, or has timed out. */
void smtpd_io_stop_input(struct smtpd_session *s)
{
    if (!s->direct_io) {
        bufferevent_disable(s->bev, EV_READ);
        return;
    }
    input_off(s);
}

/* A new smtpd_timeout (the stress settings): for the bufferevent, and for
 * the read event if it waits. */
void smtpd_io_set_timeouts(struct smtpd_session *s, const struct timeval *tv)
{
    bufferevent_set_timeouts(s->bev, tv, tv);
    if (s->direct_io && s->read_event && event_pending(s->read_event, EV_READ, NULL))
        event_add(s->read_event, tv);
}

void smtpd_io_free(struct smtpd_session *s)
{
    if (s->flush_event)
        event_free(s->flush_event);
    s->flush_event = NULL;
    if (s->read_event)
        event_free(s->read_event);
    s->read_event = NULL;
    s->direct_io = 0;
}
