/*
 * postscreen in the smtpd worker: a screened connection's life, from accept
 * to the verdict (Postfix's postscreen.c, postscreen_early.c,
 * postscreen_misc.c, postscreen_tests.c and postscreen_send.c; the test
 * engine after the greeting is psc_smtpd.c).
 *
 * Order of business for a new connection, as in Postfix:
 *   1. its endpoints: the socket's, or a PROXY header's
 *      (postscreen_upstream_proxy_protocol);
 *   2. "CONNECT from [client]:port to [server]:port"; the per-client limit,
 *      and whether screened clients already wait too long for smtpd
 *      (postscreen_post_queue_limit);
 *   3. the permanent list (postscreen_access_list): allowlisted clients go
 *      to smtpd at once, denylisted ones meet postscreen_denylist_action
 *      (a remote table there is asked in a lookup scope of the session's
 *      own: this client waits for the answer, the worker does not);
 *   4. the temporary allowlist (postscreen_cache_map): a client whose
 *      every enabled test is still valid is "PASS OLD" and goes to smtpd;
 *   5. the tests that are due: before the greeting (a "220-" teaser, then
 *      postscreen_greet_wait for a client that talks too early and for the
 *      DNS lists), then if configured the after-greeting tests, whose
 *      clients must come back: their session is refused at RCPT;
 *   6. the verdict: the results go into the cache, and the client is handed
 *      to an smtpd session on the same socket (no process hop, nothing
 *      replayed: postscreen has only peeked at the input), or hears a final
 *      reply and is disconnected.
 * Steps 1 to 4 are psc_accept.c's; this file has the tests before the
 * greeting, the verdict and the hand-off.
 *
 * The smtpd session that follows is the pass service's (master.cf's
 * "smtpd pass ... smtpd" line named by smtpd_service_name): its -o
 * overrides, its maxproc. A client that passes when that service is full
 * waits here (the "post-queue"), as it would wait for an smtpd process in
 * Postfix, and is refused with 421 at connect when more than
 * postscreen_post_queue_limit wait. Counts that Postfix keeps in its one
 * postscreen process (clients being screened, per-client connections,
 * clients waiting) live in the shared connection table, so every worker
 * sees the same numbers.
 *
 * Log lines are Postfix's, word for word, under the role name postscreen
 * (petrel/postscreen[PID]: ...), so fail2ban and log tools read them.
 */
#include "config.h"

#include <arpa/inet.h>
#include <errno.h>
#include <limits.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#include <event2/event.h>

#include "config/cfg.h"
#include "lib/escape.h"
#include "lib/log.h"
#include "lib/workq.h"
#include "lib/xalloc.h"
#include "mail/namadr.h"
#include "smtpd/anvil.h"
#include "smtpd/haproxy_read.h"
#include "smtpd/psc.h"
#include "smtpd/smtpd_int.h"
#include "tables/cidr.h"
#include "tables/table.h"

#define OUT_LIMIT 65536            /* replies a client does not take are dropped past this */

/* ------------------------------------------------------------------ */
/* logging and replies                                                 */

/* Postfix's format_tv with 2 significant digits and at most 2 decimals:
 * "0", "0.1", "0.01", "1.5", "12". */
void psc_format_tv(long sec, long usec, char *out, size_t size)
{
    long resolution = 10000;
    if (sec > 0) {
        long n = 1;
        while (sec >= n && n <= 10)
            n *= 10;
        resolution = 10000 * n;
    } else {
        while (usec >= 100 * resolution)
            resolution *= 10;
    }
    if (resolution > 1) {
        usec += resolution / 2;
        if (usec >= 1000000) {
            sec++;
            usec -= 1000000;
        }
    }
    size_t len = (size_t)snprintf(out, size, "%ld", sec);
    if (usec >= resolution && len + 1 < size) {
        out[len++] = '.';
        long rem = usec;
        for (long n = 100000; rem >= resolution && n > 0 && len + 1 < size; n /= 10) {
            out[len++] = (char)('0' + rem / n);
            rem %= n;
        }
        out[len] = '\0';
    }
}

void psc_format_delta(const struct timeval *start, char *out, size_t size, long *elapsed_seconds)
{
    struct timeval now;
    gettimeofday(&now, NULL);
    long sec = (long)(now.tv_sec - start->tv_sec);
    long usec = (long)(now.tv_usec - start->tv_usec);
    while (usec < 0) {
        usec += 1000000;
        sec--;
    }
    if (sec < 0)
        sec = usec = 0;
    if (elapsed_seconds)
        *elapsed_seconds = sec;
    psc_format_tv(sec, usec, out, size);
}

int psc_send(struct psc_session *s, const char *text)
{
    /* Best effort and never blocking, as Postfix's psc_send_reply: what the
     * client does not take now is kept (within bounds) for the next try. */
    if (s->out.len + strlen(text) <= OUT_LIMIT) {
        size_t start = s->out.len;
        buf_puts(&s->out, text);
        /* soft_bounce: no reply of postscreen's is permanent. */
        if (s->ps->soft_bounce && s->out.len - start > 4) {
            if (s->out.data[start] == '5')
                s->out.data[start] = '4';
            if (s->out.data[start + 4] == '5')
                s->out.data[start + 4] = '4';
        }
    }
    if (s->fd < 0 || s->out.len == 0)
        return 0;
    ssize_t n = send(s->fd, s->out.data, s->out.len, MSG_DONTWAIT | MSG_NOSIGNAL);
    if (n > 0) {
        memmove(s->out.data, s->out.data + n, s->out.len - (size_t)n);
        s->out.len -= (size_t)n;
        return 0;
    }
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
        return 0;
    if (n < 0 && errno != EPIPE && errno != ECONNRESET)
        psc_warn("write [%s]:%s: %s", s->client_addr, s->client_port, strerror(errno));
    return -1;
}

/* ------------------------------------------------------------------ */
/* the tests' expiry times (the cache entry)                           */

static int test_enabled(const struct psc_settings *ps, int test)
{
    switch (test) {
    case PSC_T_PREGR: return ps->greet_banner && *ps->greet_banner;
    case PSC_T_DNSBL: return ps->dnsbl != NULL;
    case PSC_T_PIPEL: return ps->pipelining_enable;
    case PSC_T_NSMTP: return ps->non_smtp_enable;
    default: return ps->bare_newline_enable;
    }
}

void psc_todo_tests(struct psc_session *s, time_t now)
{
    s->flags = 0;
    for (int t = 0; t < PSC_T_COUNT; t++)
        if (s->expire[t] == PSC_STAMP_NEW)
            s->flags |= PSC_F_NEW;
    /* A disabled test never becomes "to do": nothing could clear it. */
    for (int t = 0; t < PSC_T_COUNT; t++)
        if (test_enabled(s->ps, t) && now > s->expire[t])
            s->flags |= PSC_F(t, PSC_K_TODO);
}

void psc_new_tests(struct psc_session *s)
{
    for (int t = 0; t < PSC_T_COUNT; t++)
        s->expire[t] = PSC_STAMP_NEW;
    psc_todo_tests(s, PSC_STAMP_NEW + 1);
}

void psc_parse_tests(struct psc_session *s, const char *stamps, time_t now)
{
    /* Older entries with fewer fields: the missing tests were disabled. */
    const char *p = stamps;
    for (int t = 0; t < PSC_T_COUNT; t++) {
        char *end;
        errno = 0;
        unsigned long long v = strtoull(p, &end, 10);
        if (end == p || (*end != '\0' && *end != ';') || errno == ERANGE || v > (unsigned long long)LONG_MAX)
            s->expire[t] = PSC_STAMP_DISABLED;
        else
            s->expire[t] = (time_t)v;
        p = *end == ';' ? end + 1 : end;
    }
    psc_todo_tests(s, now);
}

void psc_print_tests(struct psc_session *s, char *out, size_t size)
{
    /* A disabled test that was never passed is stored as such, so turning
     * it on later does not make every cached client "new" again. */
    for (int t = 0; t < PSC_T_COUNT; t++)
        if (!test_enabled(s->ps, t) && s->expire[t] == PSC_STAMP_NEW)
            s->expire[t] = PSC_STAMP_DISABLED;
    snprintf(out, size, "%lu;%lu;%lu;%lu;%lu", (unsigned long)s->expire[0], (unsigned long)s->expire[1],
             (unsigned long)s->expire[2], (unsigned long)s->expire[3], (unsigned long)s->expire[4]);
}

int psc_cache_keep(const char *value, time_t now, void *arg)
{
    struct psc_session dummy;
    memset(&dummy, 0, sizeof(dummy));
    dummy.ps = arg;
    psc_parse_tests(&dummy, value, now - (time_t)dummy.ps->cache_retention);
    return (dummy.flags & PSC_MASK_ANY_TODO) == 0;
}

/* ------------------------------------------------------------------ */
/* the session's end                                                   */

static void unlink_session(struct smtpd_worker *w, struct psc_session *s)
{
    if (s->prev)
        s->prev->next = s->next;
    else if (w->screening == s)
        w->screening = s->next;
    if (s->next)
        s->next->prev = s->prev;
    s->next = s->prev = NULL;
}

static void leave_wait_queue(struct smtpd_worker *w, struct psc_session *s)
{
    struct psc_session **pp = &w->psc_wait_head, *prev = NULL;
    while (*pp && *pp != s) {
        prev = *pp;
        pp = &(*pp)->wait_next;
    }
    if (*pp == s) {
        *pp = s->wait_next;
        if (w->psc_wait_tail == s)
            w->psc_wait_tail = prev;
    }
    s->wait_next = NULL;
}

/* Postfix's postscreen stress: on at 90% of postscreen_pre_queue_limit
 * clients being screened, off at 70%, as one state for every worker (the
 * count is theirs together, in anvil). Called when a client starts or stops
 * counting; the worker whose call changed it logs the change. */
void psc_stress_update(struct psc_session *s)
{
    struct smtpd_listener *l = s->listener;
    const struct psc_settings *ps = s->ps;
    unsigned high = ps->pre_queue_limit > 0 ? (unsigned)(0.9 * ps->pre_queue_limit) : 0, n;
    unsigned low = (unsigned)(0.7 * ps->pre_queue_limit);
    int on, turned = anvil_hysteresis(l->worker->anvil, l->screen_key, high, low, &n, &on);
    if (turned > 0)
        psc_log("entering STRESS mode with %u connections", n);
    else if (turned < 0)
        psc_log("leaving STRESS mode with %u connections", n);
}

int psc_stressed(const struct psc_session *s)
{
    return anvil_high(s->listener->worker->anvil, s->listener->screen_key);
}

/* The client no longer counts as being screened (it passed, or it left). */
static void stop_counting_screened(struct psc_session *s)
{
    struct smtpd_worker *w = s->listener->worker;
    if (s->screen_key) {
        anvil_disconnect(w->anvil, w->index, s->screen_key);
        s->screen_key = NULL;
        psc_stress_update(s);
    }
    if (s->client_key) {
        anvil_disconnect(w->anvil, w->index, s->client_key);
        s->client_key = NULL;
    }
}

/* Closing: what the client sent but nobody read would turn our FIN into a
 * reset that can destroy the final reply in flight, so the input is
 * drained (a little) first. */
static void close_client(int fd)
{
    char sink[4096];
    shutdown(fd, SHUT_WR);
    for (int i = 0; i < 16; i++)
        if (recv(fd, sink, sizeof(sink), MSG_DONTWAIT) <= 0)
            break;
    close(fd);
}

void psc_session_free(struct psc_session *s)
{
    struct smtpd_worker *w = s->listener->worker;
    smtpd_proxy_read_cancel(s->proxy);
    psc_dnsbl_cancel(s->dnsbl);
    tbl_scope_free(s->acl_lookups);   /* cancels a lookup in flight */
    tbl_scope_free(s->cmd_lookups);
    tbl_scope_free(s->dnsbl_lookups);
    if (s->cache_job)
        workq_cancel(s->cache_job);
    if (s->read_ev)
        event_free(s->read_ev);
    if (s->timer)
        event_free(s->timer);
    if (s->cmd_timer)
        event_free(s->cmd_timer);
    if (s->wait_ev)
        event_free(s->wait_ev);
    if (s->waiting) {
        leave_wait_queue(w, s);
        anvil_disconnect(w->anvil, w->index, s->post_key);
    }
    stop_counting_screened(s);
    if (s->fd >= 0)
        close_client(s->fd);
    buf_free(&s->out);
    buf_free(&s->cmd);
    free(s->helo);
    free(s->sender);
    unlink_session(w, s);
    w->nscreening--;
    petrel_pool_destroy(s->pool);
    smtpd_worker_check_drained(w);
}

void psc_drop(struct psc_session *s, const char *reply)
{
    s->flags |= PSC_F_NOFORWARD;
    s->final_reply = reply;
    psc_conclude(s);
}

void psc_hangup(struct psc_session *s)
{
    char delta[32];
    psc_format_delta(&s->start_time, delta, sizeof(delta), NULL);
    s->flags |= PSC_F_HANGUP;
    psc_log("HANGUP after %s from [%s]:%s in %s", delta, s->client_addr, s->client_port, s->test_name);
    s->flags |= PSC_F_NOFORWARD;
    psc_conclude(s);
}

/* SIGTERM: each screened client hears 421 and goes. */
void psc_stop_all(struct smtpd_worker *w)
{
    while (w->screening) {
        struct psc_session *s = w->screening;
        if (s->fd >= 0 && s->proxy == NULL) {
            char reply[300];
            snprintf(reply, sizeof(reply), "421 4.3.2 %s Service shutting down\r\n", s->ps->myhostname);
            psc_send(s, reply);
        }
        psc_session_free(s);
    }
}

/* ------------------------------------------------------------------ */
/* the hand-off to smtpd                                               */

/* A client waiting for an smtpd slot went away: it gives up its place in
 * the post-queue (and its count towards postscreen_post_queue_limit) now,
 * not when a slot would have been handed to a dead socket. */
static void on_wait_event(evutil_socket_t fd, short what, void *arg)
{
    struct psc_session *s = arg;
    if (!(what & EV_CLOSED)) {
        char c;
        ssize_t n = recv(fd, &c, 1, MSG_PEEK | MSG_DONTWAIT);
        if (n > 0 || (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))) {
            /* It talks before smtpd's greeting: the bytes are smtpd's to
             * judge. Without EV_CLOSED we cannot watch for the hang-up
             * behind them without spinning, so stop watching. */
            event_del(s->wait_ev);
            return;
        }
    }
    char delta[32];
    psc_format_delta(&s->start_time, delta, sizeof(delta), NULL);
    psc_log("HANGUP after %s from [%s]:%s while waiting for an smtpd session", delta, s->client_addr,
            s->client_port);
    psc_log("DISCONNECT [%s]:%s", s->client_addr, s->client_port);
    psc_session_free(s);
}

/* Watches a waiting client for its hang-up: EV_CLOSED (EPOLLRDHUP) sees it
 * even behind bytes the client sent early; elsewhere a read event peeks. */
static void watch_waiting(struct psc_session *s)
{
    struct event_base *base = s->listener->worker->base;
    short what = (event_base_get_features(base) & EV_FEATURE_EARLY_CLOSE) ? EV_CLOSED : EV_READ;
    s->wait_ev = event_new(base, s->fd, what | EV_PERSIST, on_wait_event, s);
    if (s->wait_ev)
        event_add(s->wait_ev, NULL);
}

static void hand_off(struct psc_session *s)
{
    struct smtpd_listener *l = s->listener;
    struct smtpd_worker *w = l->worker;
    int stressed = 0;
    int taken = smtpd_take_slot(l, &stressed);
    if (taken < 0) {
        /* The smtpd service is full: wait for a slot, as a client waits for
         * a free smtpd process behind Postfix's postscreen. */
        if (!s->waiting) {
            unsigned waiting = 0, rate = 0;
            stop_counting_screened(s);
            if (anvil_connect(w->anvil, w->index, s->post_key, time(NULL), 0, &waiting, &rate) == 0)
                s->waiting = 1;
            s->wait_next = NULL;
            if (w->psc_wait_tail)
                w->psc_wait_tail->wait_next = s;
            else
                w->psc_wait_head = s;
            w->psc_wait_tail = s;
            watch_waiting(s);
        }
        return;
    }
    if (s->waiting) {
        leave_wait_queue(w, s);
        anvil_disconnect(w->anvil, w->index, s->post_key);
        s->waiting = 0;
    }
    if (s->wait_ev) {
        event_free(s->wait_ev);   /* before smtpd watches the same socket */
        s->wait_ev = NULL;
    }
    stop_counting_screened(s);
    int fd = s->fd;
    s->fd = -1;   /* the smtpd session owns the socket now */
    const struct smtpd_settings *set = stressed ? l->stress_settings : l->settings;
    /* The smtpd session exists before the screen goes: a draining worker
     * whose last screened client this was would otherwise see nothing left
     * and exit under the client. */
    smtpd_accept_screened(l, set, fd, s->client_addr, s->client_port, s->server_addr, s->server_port, taken > 0);
    psc_session_free(s);
}

void psc_retry_waiting(struct smtpd_worker *w)
{
    /* In arrival order; stop at the first that still finds no room. */
    while (w->psc_wait_head) {
        struct psc_session *s = w->psc_wait_head;
        hand_off(s);
        if (w->psc_wait_head == s)
            break;
    }
}

static void finish_conclude(struct psc_session *s)
{
    if ((s->flags & PSC_F_NOFORWARD) == 0) {
        hand_off(s);
        return;
    }
    if ((s->flags & PSC_F_HANGUP) == 0 && s->final_reply)
        psc_send(s, s->final_reply);
    psc_log("DISCONNECT [%s]:%s", s->client_addr, s->client_port);
    psc_session_free(s);
}

static void cache_updated(void *arg, int cancelled)
{
    if (cancelled)
        return;   /* the session is gone */
    struct psc_session *s = arg;
    s->cache_job = NULL;
    finish_conclude(s);
}

void psc_conclude(struct psc_session *s)
{
    /* Leave every test's watch (and table lookup): only the verdict is
     * left to do. */
    tbl_scope_free(s->acl_lookups);
    s->acl_lookups = NULL;
    tbl_scope_free(s->cmd_lookups);
    s->cmd_lookups = NULL;
    tbl_scope_free(s->dnsbl_lookups);
    s->dnsbl_lookups = NULL;
    if (s->read_ev)
        event_del(s->read_ev);
    if (s->timer)
        event_del(s->timer);
    if (s->cmd_timer)
        event_del(s->cmd_timer);
    /* A client that failed a test keeps none of its passes. */
    if (s->flags & PSC_MASK_ANY_FAIL)
        s->flags &= ~PSC_MASK_ANY_PASS;
    unsigned passed = s->flags & PSC_MASK_ANY_PASS;
    if (passed && passed == PSC_TODO_TO_PASS(s->flags & PSC_MASK_ANY_TODO))
        psc_log("PASS %s [%s]:%s", (s->flags & PSC_F_NEW) ? "NEW" : "OLD", s->client_addr, s->client_port);
    /* The cache is updated whenever a test passed, even when others remain:
     * a client may earn its place over several sessions. The verdict waits
     * for the write, so the client's next connection (to any worker) finds
     * it. */
    if (passed && s->listener->psc_cache) {
        char value[128];
        psc_print_tests(s, value, sizeof(value));
        s->cache_job = psc_cache_update(s->listener->worker, s->listener->psc_cache, s->client_addr, value,
                                        cache_updated, s);
        if (s->cache_job)
            return;
    }
    finish_conclude(s);
}

/* ------------------------------------------------------------------ */
/* before the greeting: pregreet and DNSBL                             */

static long long greet_wait(const struct psc_session *s)
{
    return psc_stressed(s) ? s->ps->greet_wait_stress : s->ps->greet_wait;
}

/* A DNS allowlisting (score at or below a negative
 * postscreen_dnsbl_allowlist_threshold) lets the client skip the other
 * tests, and counts as passing them for as long as the DNSBL result. */
static void allowlist_non_dnsbl(struct psc_session *s)
{
    const struct psc_settings *ps = s->ps;
    if ((s->flags & PSC_MASK_ANY_FAIL) || s->dnsbl_score >= ps->dnsbl_threshold ||
        ps->dnsbl_allowlist_threshold >= 0 || s->dnsbl_score > ps->dnsbl_allowlist_threshold)
        return;
    time_t now = time(NULL);
    for (int t = 0; t < PSC_T_COUNT; t++) {
        if (t == PSC_T_DNSBL)
            continue;
        if ((s->flags & PSC_F(t, PSC_K_TODO)) && !(s->flags & PSC_F(t, PSC_K_PASS))) {
            s->flags |= PSC_F(t, PSC_K_DONE);
            s->flags |= PSC_F(t, PSC_K_PASS);
        }
        if (s->expire[t] < now + s->dnsbl_ttl)
            s->expire[t] = now + s->dnsbl_ttl;
    }
}

static void collect_dnsbl(struct psc_session *s)
{
    const char *name = NULL;
    int ttl = -1;
    s->dnsbl_score = psc_dnsbl_result(s->dnsbl, &name, &ttl);
    s->dnsbl = NULL;
    s->dnsbl_name = name ? name : "(unknown)";
    if (ttl < s->ps->dnsbl_min_ttl)
        ttl = (int)s->ps->dnsbl_min_ttl;
    if (ttl > s->ps->dnsbl_max_ttl)
        ttl = (int)s->ps->dnsbl_max_ttl;
    s->dnsbl_ttl = ttl;
    if (s->ps->dnsbl_allowlist_threshold < 0)
        allowlist_non_dnsbl(s);
}

/* The DNSBL test failed and its action is not "ignore": the reply it
 * gives (now, or at RCPT) names the list. */
static int dnsbl_act(struct psc_session *s)
{
    const struct psc_settings *ps = s->ps;
    if (s->dnsbl_name_error) {
        /* A remote postscreen_dnsbl_reply_map that cannot answer: the
         * list's own name may be a secret (the reason for the map), and
         * a verdict must not be worded from a half-known reply, so the
         * client hears a temporary error, as for any table that fails. */
        if (ps->dnsbl_action == PSC_ACT_DROP) {
            psc_drop(s, "421 4.3.0 Server local data error\r\n");
            return 1;
        }
        s->rcpt_reply = "450 4.3.0 Server local data error\r\n";
        s->flags |= PSC_F_NOFORWARD;
        return 0;
    }
    switch (ps->dnsbl_action) {
    case PSC_ACT_DROP:
        psc_drop(s, petrel_pool_printf(s->pool, "521 5.7.1 Service unavailable; client [%s] blocked using "
                                       "%s\r\n", s->client_addr, s->dnsbl_name));
        return 1;
    case PSC_ACT_ENFORCE:
        s->rcpt_reply = petrel_pool_printf(s->pool, "550 5.7.1 Service unavailable; client [%s] blocked "
                                           "using %s\r\n", s->client_addr, s->dnsbl_name);
        s->flags |= PSC_F_NOFORWARD;
        return 0;
    default:
        s->flags &= ~PSC_F(PSC_T_DNSBL, PSC_K_FAIL);   /* tested again next time */
        return 0;
    }
}

/* The tests before the greeting are over: the tests after it, or the verdict. */
static void early_end(struct psc_session *s)
{
    unsigned todo = s->flags & PSC_MASK_SMTPD(PSC_K_TODO);
    if ((s->flags & PSC_F_NOFORWARD) || (s->flags & PSC_MASK_SMTPD(PSC_K_PASS)) != PSC_TODO_TO_PASS(todo))
        psc_smtpd_tests(s);
    else
        psc_conclude(s);
}

static void dnsbl_name_answered(void *arg);

/* A remote postscreen_dnsbl_reply_map (a local one was read once, at
 * start, as Postfix reads it): the name of the list that the reply shows
 * is asked when a reply needs it, in the session's lookup scope; this
 * client waits for the answer, the others go on. Returns 1 while it waits
 * (dnsbl_name_answered goes on). */
static int dnsbl_name_lookup(struct psc_session *s)
{
    struct tbl_registry *reg = s->listener->worker->tables;
    struct tbl *t = s->ps->dnsbl_reply_table;
    for (;;) {
        if (s->dnsbl_lookups == NULL)
            s->dnsbl_lookups = tbl_scope_new();
        const char *value = NULL;
        tbl_scope_enter(reg, s->dnsbl_lookups);
        int rc = tbl_lookup(t, s->dnsbl_name, &value);
        tbl_scope_leave(reg);
        if (rc == TBL_PENDING && tbl_scope_missing(s->dnsbl_lookups)) {
            if (tbl_scope_fetch(s->dnsbl_lookups, dnsbl_name_answered, s))
                return 1;
            continue;   /* answered at once */
        }
        if (rc == TBL_FOUND) {
            s->dnsbl_name = petrel_pool_strdup(s->pool, value);
        } else if (rc != TBL_NOTFOUND) {
            psc_warn("postscreen_dnsbl_reply_map: %s: lookup error for %s", tbl_spec(t), s->dnsbl_name);
            s->dnsbl_name_error = 1;
        }
        tbl_scope_free(s->dnsbl_lookups);
        s->dnsbl_lookups = NULL;
        return 0;
    }
}

static void dnsbl_name_answered(void *arg)
{
    struct psc_session *s = arg;
    if (dnsbl_name_lookup(s) || dnsbl_act(s))
        return;
    early_end(s);
}

static void early_time(struct psc_session *s)
{
    const struct psc_settings *ps = s->ps;
    time_t now = time(NULL);
    if (s->read_ev)
        event_del(s->read_ev);
    if (s->timer)
        event_del(s->timer);
    if ((s->flags & PSC_F(PSC_T_PREGR, PSC_K_TODO)) &&
        !(s->flags & (PSC_F(PSC_T_PREGR, PSC_K_FAIL) | PSC_F(PSC_T_PREGR, PSC_K_DONE)))) {
        s->expire[PSC_T_PREGR] = now + (time_t)ps->greet_ttl;
        s->flags |= PSC_F(PSC_T_PREGR, PSC_K_PASS);
    }
    if ((s->flags & PSC_F(PSC_T_PREGR, PSC_K_FAIL)) && ps->greet_action == PSC_ACT_IGNORE)
        s->flags &= ~PSC_F(PSC_T_PREGR, PSC_K_FAIL);   /* not passed either: tested again next time */
    if (s->flags & PSC_F(PSC_T_DNSBL, PSC_K_TODO)) {
        /* Lists that have not answered by now count as not listed. */
        if (s->dnsbl_score == PSC_NO_DNSBL_SCORE)
            collect_dnsbl(s);
        if (s->dnsbl_score < ps->dnsbl_threshold) {
            s->expire[PSC_T_DNSBL] = now + s->dnsbl_ttl;
            s->flags |= PSC_F(PSC_T_DNSBL, PSC_K_PASS);
        } else {
            psc_log("DNSBL rank %d for [%s]:%s", s->dnsbl_score, s->client_addr, s->client_port);
            s->flags |= PSC_F(PSC_T_DNSBL, PSC_K_FAIL);
            if (ps->dnsbl_action != PSC_ACT_IGNORE && ps->dnsbl_reply_table && dnsbl_name_lookup(s))
                return;   /* dnsbl_name_answered() goes on */
            if (dnsbl_act(s))
                return;
        }
    }
    early_end(s);
}

static void on_greet_timer(evutil_socket_t fd, short what, void *arg)
{
    early_time(arg);
}

static int early_done(const struct psc_session *s)
{
    return (s->flags & PSC_MASK_EARLY(PSC_K_DONE)) == PSC_TODO_TO_DONE(s->flags & PSC_MASK_EARLY(PSC_K_TODO));
}

/* The client talks before its turn, or hangs up. */
static void on_early_read(evutil_socket_t fd, short what, void *arg)
{
    struct psc_session *s = arg;
    const struct psc_settings *ps = s->ps;
    char data[1024];
    ssize_t n = recv(s->fd, data, sizeof(data) - 1, MSG_PEEK | MSG_DONTWAIT);
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) {
        event_add(s->read_ev, NULL);
        return;
    }
    if (n <= 0) {
        psc_hangup(s);
        return;
    }
    char delta[32], escaped[512];
    long elapsed = 0;
    psc_format_delta(&s->start_time, delta, sizeof(delta), &elapsed);
    text_escape(data, (size_t)n, escaped, sizeof(escaped));
    psc_log("PREGREET %zd after %s from [%s]:%s: %.100s", n, delta, s->client_addr, s->client_port, escaped);
    s->flags |= PSC_F(PSC_T_PREGR, PSC_K_FAIL);
    switch (ps->greet_action) {
    case PSC_ACT_DROP:
        psc_drop(s, "521 5.5.1 Protocol error\r\n");
        return;
    case PSC_ACT_ENFORCE:
        s->rcpt_reply = "550 5.5.1 Protocol error\r\n";
        s->flags |= PSC_F_NOFORWARD;
        break;
    default:
        break;   /* decided when the wait ends */
    }
    /* No more reading here: only the wait for the DNS lists may go on. */
    s->flags |= PSC_F(PSC_T_PREGR, PSC_K_DONE);
    if (elapsed >= greet_wait(s) || early_done(s))
        early_time(s);
}

static void on_dnsbl_done(void *arg)
{
    struct psc_session *s = arg;
    collect_dnsbl(s);
    s->flags |= PSC_F(PSC_T_DNSBL, PSC_K_DONE);
    /* Waiting only for the lists: the wait ends now. */
    if (early_done(s))
        event_active(s->timer, EV_TIMEOUT, 0);
}

void psc_early_tests(struct psc_session *s)
{
    struct smtpd_worker *w = s->listener->worker;
    const struct psc_settings *ps = s->ps;
    s->test_name = "tests before SMTP handshake";
    gettimeofday(&s->start_time, NULL);
    if ((s->flags & PSC_F(PSC_T_PREGR, PSC_K_TODO)) &&
        psc_send(s, petrel_pool_printf(s->pool, "220-%s\r\n", ps->greet_banner)) != 0) {
        psc_hangup(s);
        return;
    }
    s->dnsbl_score = PSC_NO_DNSBL_SCORE;
    s->timer = evtimer_new(w->base, on_greet_timer, s);
    if (s->flags & PSC_F(PSC_T_DNSBL, PSC_K_TODO))
        s->dnsbl = psc_dnsbl_start(w, ps->dnsbl, s->client_addr, ps->dnsbl_timeout, on_dnsbl_done, s);
    struct timeval tv = { (time_t)greet_wait(s), 0 };
    evtimer_add(s->timer, &tv);
    if (s->flags & PSC_F(PSC_T_PREGR, PSC_K_TODO)) {
        s->read_ev = event_new(w->base, s->fd, EV_READ, on_early_read, s);
        event_add(s->read_ev, NULL);
    }
}
