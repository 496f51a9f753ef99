/*
 * A plain-TCP session's replies, written straight to the socket.
 *
 * A socket bufferevent arms its write event (epoll_ctl) whenever data is
 * added to its output, writes on the next pass of the loop, and disarms
 * the event (epoll_ctl again) once the output is empty: two system calls
 * per reply besides the write, for replies that the kernel nearly always
 * takes whole. Here the socket bufferevent's EV_WRITE stays off. The first
 * byte added to its output makes a per-session event active (no system
 * call); it runs as soon as the callback that produced the reply returns,
 * before the loop waits again, and writes everything that has accumulated
 * with one writev. So the replies to a pipelined group still go out
 * together, in order (RFC 2920), as when libevent wrote them on its next
 * pass. Only what the kernel does not take is left to the bufferevent:
 * EV_WRITE on, with smtpd_timeout as its write timeout, until the output
 * drains, then off again. A failed write takes the same way, so the
 * session learns of a broken connection from the bufferevent's event
 * callback, as before.
 *
 * TLS sessions keep libevent's path: the bufferevent_openssl filter owns
 * the socket's output (after STARTTLS the plain bufferevent becomes the
 * filter's underlying one and is handed back to libevent here).
 */
#include "config.h"

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/event.h>

#include "lib/log.h"
#include "smtpd/smtpd_int.h"

/* Writes what the session's replies left in the output buffer. */
static void output_flush(evutil_socket_t fd, short what, void *arg)
{
    struct smtpd_session *s = arg;
    (void)fd;
    (void)what;
    if (!s->direct_output || s->write_armed)
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
    smtpd_session_output_drained(s);   /* may free the session */
}

static void output_added(struct evbuffer *out, const struct evbuffer_cb_info *info, void *arg)
{
    struct smtpd_session *s = arg;
    (void)out;
    /* Already active: a no-op; armed: the bufferevent's own callback
     * has seen the data. */
    if (info->n_added > 0 && s->direct_output && !s->write_armed)
        event_active(s->flush_event, EV_WRITE, 1);
}

void smtpd_output_attach(struct smtpd_session *s)
{
    if (bufferevent_openssl_get_ssl(s->bev) != NULL) {
        smtpd_output_detach(s);
        return;
    }
    if (s->flush_event == NULL)
        s->flush_event = event_new(s->worker->base, -1, 0, output_flush, s);
    if (s->flush_event == NULL)
        return;   /* out of memory: libevent's own path still works */
    s->output_watch = evbuffer_add_cb(bufferevent_get_output(s->bev), output_added, s);
    if (s->output_watch == NULL)
        return;
    s->direct_output = 1;
    s->write_armed = 0;
    bufferevent_disable(s->bev, EV_WRITE);
}

/* STARTTLS: the plain bufferevent now carries the TLS filter's ciphertext
 * (the "220 Ready to start TLS" reply may still be in it): libevent writes
 * it from now on. */
void smtpd_output_detach(struct smtpd_session *s)
{
    if (!s->direct_output)
        return;
    s->direct_output = 0;
    s->write_armed = 0;
    struct bufferevent *plain = bufferevent_get_underlying(s->bev);
    if (plain == NULL)
        return;
    if (s->output_watch)
        evbuffer_remove_cb_entry(bufferevent_get_output(plain), s->output_watch);
    s->output_watch = NULL;
    bufferevent_enable(plain, EV_WRITE);
}

/* The bufferevent wrote the rest of what output_flush left: back to
 * writing directly. */
void smtpd_output_written(struct smtpd_session *s)
{
    if (!s->write_armed)
        return;
    s->write_armed = 0;
    bufferevent_disable(s->bev, EV_WRITE);
}

/* The events the session's bufferevent needs: EV_WRITE only when libevent
 * writes the replies. */
short smtpd_output_events(const struct smtpd_session *s)
{
    return s->direct_output ? EV_READ : EV_READ | EV_WRITE;
}

void smtpd_output_free(struct smtpd_session *s)
{
    if (s->flush_event)
        event_free(s->flush_event);
    s->flush_event = NULL;
    s->direct_output = 0;
}
