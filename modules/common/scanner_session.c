/*
 * The session side of a content scanner module (see scanner_session.h).
 *
 * The state is created at DATA, not at end of data, so that it is tied to
 * the session's pool once (a cleanup frees it, and with it a scan still
 * running when the client goes away) and reused by every transaction of
 * the connection. The pending handle is taken only after the client has
 * started: a scan that finishes at once (refused connection, a message
 * over the limit) answers without suspending the hook.
 */
#include "scanner_session.h"

#include <stdio.h>
#include <stdlib.h>

struct scanner_session {
    const scanner_kind *kind;
    petrel_module *m;
    petrel_session *s;
    const void *conf;
    void *client;
    petrel_watch *watch;
    int watch_fd, watch_events;
    petrel_timer *timer;
    petrel_pending *pending;
    petrel_message *msg;   /* what the read callback hands out: the stored message */
};

static void on_io(int fd, int events, void *arg)
{
    (void)fd;
    scanner_session *ss = arg;
    ss->kind->io(ss->client, events);
}

void scanner_session_watch(void *arg, int fd, int events)
{
    scanner_session *ss = arg;
    if (ss->watch && (events == 0 || ss->watch_fd != fd || ss->watch_events != events)) {
        petrel_watch_cancel(ss->watch);
        ss->watch = NULL;
    }
    if (events && ss->watch == NULL) {
        ss->watch = petrel_watch_fd(ss->m, fd, events, on_io, ss);
        ss->watch_fd = fd;
        ss->watch_events = events;
    }
}

static void on_timer(void *arg)
{
    scanner_session *ss = arg;
    ss->timer = NULL;
    ss->kind->timeout(ss->client);
}

void scanner_session_timer(void *arg, unsigned ms)
{
    scanner_session *ss = arg;
    if (ss->timer) {
        petrel_timer_cancel(ss->timer);
        ss->timer = NULL;
    }
    if (ms)
        ss->timer = petrel_timer_start(ss->m, ms, on_timer, ss);
}

void scanner_session_log(void *arg, int level, const char *text)
{
    scanner_session *ss = arg;
    petrel_log(ss->s, level == SCANNER_LOG_INFO ? PETREL_LOG_INFO
                      : level == SCANNER_LOG_WARNING ? PETREL_LOG_WARNING : PETREL_LOG_ERROR, "%s", text);
}

long scanner_session_read(void *arg, void *buf, size_t cap)
{
    scanner_session *ss = arg;
    return petrel_message_read(ss->msg, buf, cap);
}

/* Ends the scan: the loop services, the client and the stored message. */
static void finish_scan(scanner_session *ss)
{
    if (ss->watch) {
        petrel_watch_cancel(ss->watch);
        ss->watch = NULL;
    }
    if (ss->timer) {
        petrel_timer_cancel(ss->timer);
        ss->timer = NULL;
    }
    if (ss->client) {
        ss->kind->free(ss->client);
        ss->client = NULL;
    }
    if (ss->msg) {
        petrel_message_close(ss->msg);
        ss->msg = NULL;
    }
}

void scanner_session_done(void *arg)
{
    scanner_session *ss = arg;
    scanner_reply r = { 0 };
    petrel_verdict v = ss->kind->decide(ss->s, ss->conf, ss->client, &r);
    finish_scan(ss);
    petrel_pending *p = ss->pending;
    ss->pending = NULL;
    if (p)
        petrel_resume(p, v, r.code, r.enhanced, r.code ? r.text : NULL);
}

static void session_end(void *arg)
{
    scanner_session *ss = arg;
    ss->msg = NULL;   /* the session's end made it stale; the core closed it */
    finish_scan(ss);
    free(ss);
}

static scanner_session *session_of(petrel_session *s)
{
    void **slot = petrel_session_slot(s);
    return slot ? *slot : NULL;
}

petrel_verdict scanner_session_data(petrel_session *s, const scanner_kind *kind)
{
    scanner_session *ss = session_of(s);
    if (ss == NULL) {
        petrel_module *m = petrel_session_module(s);
        const void *conf = petrel_module_data(m);
        if (conf == NULL || (ss = calloc(1, sizeof *ss)) == NULL)
            return PETREL_TEMPFAIL;
        ss->kind = kind;
        ss->m = m;
        ss->conf = conf;
        *petrel_session_slot(s) = ss;
        petrel_pool_cleanup_add(petrel_session_pool(s), session_end, ss);
    }
    ss->s = s;
    return PETREL_CONTINUE;
}

petrel_verdict scanner_session_eom(petrel_session *s)
{
    scanner_session *ss = session_of(s);
    if (ss == NULL)
        return PETREL_CONTINUE;
    /* The scanner stands in for a milter (spamass-milter, clamav-milter):
     * where header/body checks took the milters off the message (REJECT,
     * DISCARD, REDIRECT, PASS), no milter would see its content, so the
     * daemon gets none of it and there is no verdict or header. Logged as
     * the size skip is, since the admin looks for the same line. */
    if (petrel_milters_stopped(s) == 1) {
        petrel_log(s, PETREL_LOG_INFO, "%s: message not scanned: header or body checks stopped the content "
                   "inspection", ss->kind->name);
        return PETREL_CONTINUE;
    }
    ss->s = s;
    ss->msg = petrel_message_open(s, 0);
    if (ss->msg == NULL) {
        petrel_set_reply(s, 451, "4.3.0", "Error: queue file write error");
        return PETREL_TEMPFAIL;
    }
    size_t max_size = ss->kind->max_size(ss->conf);
    long long stored = petrel_message_size(ss->msg);
    if (stored < 0 || (unsigned long long)stored > max_size) {
        finish_scan(ss);
        return scanner_skipped(s, ss->kind, max_size);
    }
    int started = ss->kind->start(ss, ss->conf, (size_t)stored, &ss->client);
    if (started < 0) {
        finish_scan(ss);
        return PETREL_TEMPFAIL;
    }
    if (started == 0) {
        scanner_reply r = { 0 };
        petrel_verdict v = ss->kind->decide(s, ss->conf, ss->client, &r);
        finish_scan(ss);
        if (r.code)
            petrel_set_reply(s, r.code, r.enhanced, r.text);
        return v;
    }
    ss->pending = petrel_suspend(s);
    if (ss->pending == NULL) {
        finish_scan(ss);
        return PETREL_TEMPFAIL;
    }
    return PETREL_PENDING;
}

petrel_verdict scanner_skipped(petrel_session *s, const scanner_kind *kind, size_t max_size)
{
    petrel_log(s, PETREL_LOG_INFO, "%s: message not scanned: larger than %s_max_size (%zu bytes)", kind->name,
               kind->name, max_size);
    return PETREL_CONTINUE;
}

petrel_verdict scanner_failed(petrel_session *s, const scanner_kind *kind, const char *why, int tempfail,
                              scanner_reply *reply)
{
    petrel_log(s, PETREL_LOG_WARNING, "%s: cannot scan the message: %s; %s_failure_action %s", kind->name, why,
               kind->name, tempfail ? "tempfail" : "accept");
    if (!tempfail)
        return PETREL_CONTINUE;
    reply->code = 451;
    reply->enhanced = "4.7.1";
    snprintf(reply->text, sizeof reply->text, "Service unavailable - try again later");
    return PETREL_TEMPFAIL;
}
