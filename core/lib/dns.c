/*
 * c-ares on libevent (see dns.h). c-ares tells us through its socket-state
 * callback which sockets to watch; each gets one persistent event. A single
 * timer, re-armed from ares_timeout() after every activity, drives c-ares'
 * retries and timeouts.
 */
#include "config.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <ares.h>
#include <arpa/nameser.h>
#include <event2/event.h>

#include "lib/dns.h"
#include "lib/log.h"
#include "lib/xalloc.h"

#define MAX_SOCKETS 16

struct dns_watch {
    ares_socket_t fd;
    struct event *ev;
};

struct dns_resolver {
    struct event_base *base;
    ares_channel channel;
    struct dns_watch watches[MAX_SOCKETS];
    struct event *timer;
    dns_observe_fn *observe;
    void *observe_arg;
};

struct dns_query {
    struct dns_resolver *r;
    enum dns_type type;
    dns_callback *cb;
    void *arg;
    int cancelled;
    int starting;       /* inside ares_query: a synchronous answer must not free q */
    int finished;
    double started;     /* monotonic seconds, for the observer */
};

static void rearm_timer(struct dns_resolver *r)
{
    struct timeval max = { 5, 0 }, tv;
    struct timeval *t = ares_timeout(r->channel, &max, &tv);
    evtimer_add(r->timer, t);
}

static void on_socket(evutil_socket_t fd, short what, void *arg)
{
    struct dns_resolver *r = arg;
    ares_process_fd(r->channel, what & EV_READ ? fd : ARES_SOCKET_BAD, what & EV_WRITE ? fd : ARES_SOCKET_BAD);
    rearm_timer(r);
}

static void on_timer(evutil_socket_t fd, short what, void *arg)
{
    struct dns_resolver *r = arg;
    ares_process_fd(r->channel, ARES_SOCKET_BAD, ARES_SOCKET_BAD);
    rearm_timer(r);
}

static void socket_state(void *data, ares_socket_t fd, int readable, int writable)
{
    struct dns_resolver *r = data;
    struct dns_watch *slot = NULL, *free_slot = NULL;
    for (int i = 0; i < MAX_SOCKETS; i++) {
        if (r->watches[i].ev && r->watches[i].fd == fd)
            slot = &r->watches[i];
        else if (r->watches[i].ev == NULL && free_slot == NULL)
            free_slot = &r->watches[i];
    }
    if (slot) {
        event_free(slot->ev);
        slot->ev = NULL;
    }
    if (!readable && !writable)
        return;
    if (slot == NULL)
        slot = free_slot;
    if (slot == NULL) {
        msg_warn("dns: more than %d resolver sockets; a query may time out", MAX_SOCKETS);
        return;
    }
    slot->fd = fd;
    slot->ev = event_new(r->base, fd, EV_PERSIST | (readable ? EV_READ : 0) | (writable ? EV_WRITE : 0),
                         on_socket, r);
    event_add(slot->ev, NULL);
}

struct dns_resolver *dns_resolver_create(struct event_base *base, const char *server, char **error)
{
    /* ares_library_init is process-wide by nature: the one piece of state here
     * that is not in the resolver object. */
    static int library_ready;
    if (!library_ready) {
        if (ares_library_init(ARES_LIB_INIT_ALL) != ARES_SUCCESS) {
            *error = xstrdup("c-ares: library initialisation failed");
            return NULL;
        }
        library_ready = 1;
    }
    struct dns_resolver *r = xcalloc(1, sizeof(*r));
    r->base = base;
    struct ares_options opts;
    memset(&opts, 0, sizeof(opts));
    opts.sock_state_cb = socket_state;
    opts.sock_state_cb_data = r;
    opts.timeout = 2000;
    opts.tries = 3;
    int rc = ares_init_options(&r->channel, &opts, ARES_OPT_SOCK_STATE_CB | ARES_OPT_TIMEOUTMS | ARES_OPT_TRIES);
    if (rc != ARES_SUCCESS) {
        size_t n = 128;
        *error = xmalloc(n);
        snprintf(*error, n, "c-ares: %s", ares_strerror(rc));
        free(r);
        return NULL;
    }
    if (server && *server) {
        /* "host:port"; a bare IPv6 address needs brackets to carry a port. */
        rc = ares_set_servers_ports_csv(r->channel, server);
        if (rc != ARES_SUCCESS) {
            size_t n = strlen(server) + 128;
            *error = xmalloc(n);
            snprintf(*error, n, "bad server \"%s\": %s", server, ares_strerror(rc));
            ares_destroy(r->channel);
            free(r);
            return NULL;
        }
    }
    r->timer = evtimer_new(base, on_timer, r);
    return r;
}

void dns_resolver_free(struct dns_resolver *r)
{
    if (r == NULL)
        return;
    ares_destroy(r->channel);   /* calls pending callbacks with ARES_EDESTRUCTION */
    for (int i = 0; i < MAX_SOCKETS; i++)
        if (r->watches[i].ev)
            event_free(r->watches[i].ev);
    event_free(r->timer);
    free(r);
}

const char *dns_status_text(enum dns_status status)
{
    switch (status) {
    case DNS_OK: return "ok";
    case DNS_NXDOMAIN: return "Host not found";
    case DNS_NODATA: return "No address associated with name";
    case DNS_TEMPFAIL: return "Host not found, try again";
    default: return "bad name";
    }
}

static double monotonic(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

void dns_resolver_observe(struct dns_resolver *r, dns_observe_fn *fn, void *arg)
{
    r->observe = fn;
    r->observe_arg = arg;
}

const char *dns_type_name(enum dns_type type)
{
    switch (type) {
    case DNS_A: return "a";
    case DNS_AAAA: return "aaaa";
    case DNS_MX: return "mx";
    case DNS_TXT: return "txt";
    case DNS_PTR: return "ptr";
    default: return "ns";
    }
}

/* How a query ended, in a few words (c-ares has dozens of codes). */
static const char *result_word(int rc)
{
    switch (rc) {
    case ARES_SUCCESS: return "ok";
    case ARES_ENOTFOUND: return "nxdomain";
    case ARES_ENODATA: return "nodata";
    case ARES_ETIMEOUT: return "timeout";
    case ARES_ESERVFAIL: return "servfail";
    /* c-ares answers ECONNREFUSED when every server refused the query
       (REFUSED) or could not be reached: one word for both. */
    case ARES_EREFUSED: case ARES_ECONNREFUSED: return "refused";
    case ARES_EBADNAME: case ARES_EBADQUERY: return "badname";
    default: return "error";
    }
}

static enum dns_status status_of(int rc)
{
    switch (rc) {
    case ARES_SUCCESS: return DNS_OK;
    case ARES_ENOTFOUND: return DNS_NXDOMAIN;
    case ARES_ENODATA: return DNS_NODATA;
    case ARES_EBADNAME: case ARES_EBADQUERY: return DNS_BADNAME;
    default: return DNS_TEMPFAIL;
    }
}

static int by_preference(const void *a, const void *b)
{
    const struct ares_mx_reply *const *x = a, *const *y = b;
    return (int)(*x)->priority - (int)(*y)->priority;
}

static void deliver(struct dns_query *q, struct dns_answer *ans)
{
    if (!q->cancelled)
        q->cb(ans, q->arg);
    q->finished = 1;
    if (!q->starting)
        free(q);
}

/* Skips a (possibly compressed) name at *pos; -1 when the packet is bad. */
static int skip_name(const unsigned char *abuf, int alen, int *pos)
{
    char *name = NULL;
    long len = 0;
    if (*pos >= alen || ares_expand_name(abuf + *pos, abuf, alen, &name, &len) != ARES_SUCCESS)
        return -1;
    ares_free_string(name);
    *pos += (int)len;
    return *pos <= alen ? 0 : -1;
}

/* The TTL of the SOA record in the authority section of a negative answer
 * (how long "not listed" may be believed), or -1. Every length is checked
 * against the packet: this is a reply from the network. */
static int negative_ttl(const unsigned char *abuf, int alen)
{
    if (abuf == NULL || alen < 12)
        return -1;
    int qd = (abuf[4] << 8) | abuf[5], an = (abuf[6] << 8) | abuf[7], ns = (abuf[8] << 8) | abuf[9];
    int pos = 12;
    for (int i = 0; i < qd; i++)
        if (skip_name(abuf, alen, &pos) != 0 || (pos += 4) > alen)
            return -1;
    int ttl = -1;
    for (int i = 0; i < an + ns; i++) {
        if (skip_name(abuf, alen, &pos) != 0 || pos + 10 > alen)
            return -1;
        int type = (abuf[pos] << 8) | abuf[pos + 1];
        long rr_ttl = ((long)abuf[pos + 4] << 24) | ((long)abuf[pos + 5] << 16) | ((long)abuf[pos + 6] << 8) |
                      (long)abuf[pos + 7];
        int rdlen = (abuf[pos + 8] << 8) | abuf[pos + 9];
        pos += 10 + rdlen;
        if (pos > alen)
            return -1;
        if (i >= an && type == ns_t_soa && rr_ttl >= 0 && rr_ttl <= 0x7fffffff && (ttl < 0 || rr_ttl < ttl))
            ttl = (int)rr_ttl;
    }
    return ttl;
}

static void parse_answer(struct dns_query *q, int status, unsigned char *abuf, int alen)
{
    struct dns_answer ans;
    memset(&ans, 0, sizeof(ans));
    ans.status = status_of(status);
    ans.ttl = -1;
    if (ans.status != DNS_OK) {
        if (ans.status == DNS_NXDOMAIN || ans.status == DNS_NODATA)
            ans.ttl = negative_ttl(abuf, alen);
        deliver(q, &ans);
        return;
    }
    const char *values[256];
    int prefs[256];
    size_t n = 0;
    char text[INET6_ADDRSTRLEN];
    int rc = ARES_SUCCESS;
    if (q->type == DNS_A || q->type == DNS_AAAA) {
        struct hostent *host = NULL;
        if (q->type == DNS_A) {
            struct ares_addrttl ttls[64];
            int naddr = 64;
            rc = ares_parse_a_reply(abuf, alen, &host, ttls, &naddr);
            for (int i = 0; rc == ARES_SUCCESS && i < naddr && n < 256; i++) {
                inet_ntop(AF_INET, &ttls[i].ipaddr, text, sizeof(text));
                values[n++] = xstrdup(text);
                if (ttls[i].ttl >= 0 && (ans.ttl < 0 || ttls[i].ttl < ans.ttl))
                    ans.ttl = ttls[i].ttl;
            }
        } else {
            struct ares_addr6ttl ttls[64];
            int naddr = 64;
            rc = ares_parse_aaaa_reply(abuf, alen, &host, ttls, &naddr);
            for (int i = 0; rc == ARES_SUCCESS && i < naddr && n < 256; i++) {
                inet_ntop(AF_INET6, &ttls[i].ip6addr, text, sizeof(text));
                values[n++] = xstrdup(text);
                if (ttls[i].ttl >= 0 && (ans.ttl < 0 || ttls[i].ttl < ans.ttl))
                    ans.ttl = ttls[i].ttl;
            }
        }
        if (host)
            ares_free_hostent(host);
    } else if (q->type == DNS_MX) {
        struct ares_mx_reply *mx = NULL;
        rc = ares_parse_mx_reply(abuf, alen, &mx);
        struct ares_mx_reply *sorted[256];
        size_t m = 0;
        for (struct ares_mx_reply *p = mx; rc == ARES_SUCCESS && p && m < 256; p = p->next)
            sorted[m++] = p;
        qsort(sorted, m, sizeof(sorted[0]), by_preference);
        for (size_t i = 0; i < m; i++) {
            values[n] = xstrdup(sorted[i]->host);
            prefs[n++] = sorted[i]->priority;
        }
        if (mx)
            ares_free_data(mx);
    } else if (q->type == DNS_TXT) {
        struct ares_txt_ext *txt = NULL;
        rc = ares_parse_txt_reply_ext(abuf, alen, &txt);
        /* A record may be split in several strings: join them. */
        char joined[4096];
        size_t jl = 0;
        for (struct ares_txt_ext *p = txt; rc == ARES_SUCCESS && p; p = p->next) {
            if (p->record_start && jl) {
                joined[jl] = '\0';
                if (n < 256)
                    values[n++] = xstrdup(joined);
                jl = 0;
            }
            size_t take = p->length < sizeof(joined) - 1 - jl ? p->length : sizeof(joined) - 1 - jl;
            memcpy(joined + jl, p->txt, take);
            jl += take;
        }
        if (rc == ARES_SUCCESS && (jl || txt) && n < 256) {
            joined[jl] = '\0';
            values[n++] = xstrdup(joined);
        }
        if (txt)
            ares_free_data(txt);
    } else if (q->type == DNS_NS) {
        struct hostent *host = NULL;
        rc = ares_parse_ns_reply(abuf, alen, &host);
        for (char **a = rc == ARES_SUCCESS && host ? host->h_aliases : NULL; a && *a && n < 256; a++)
            values[n++] = xstrdup(*a);
        if (host)
            ares_free_hostent(host);
    } else if (q->type == DNS_PTR) {
        struct hostent *host = NULL;
        rc = ares_parse_ptr_reply(abuf, alen, NULL, 0, AF_INET, &host);
        if (rc == ARES_SUCCESS && host) {
            if (host->h_name && n < 256)
                values[n++] = xstrdup(host->h_name);
            for (char **a = host->h_aliases; a && *a && n < 256; a++)
                values[n++] = xstrdup(*a);
        }
        if (host)
            ares_free_hostent(host);
    }
    if (rc != ARES_SUCCESS) {
        ans.status = status_of(rc);
        ans.ttl = -1;
    } else {
        ans.count = n;
        ans.values = values;
        ans.preferences = q->type == DNS_MX ? prefs : NULL;
        if (n == 0)
            ans.status = DNS_NODATA;
    }
    deliver(q, &ans);
    for (size_t i = 0; i < n; i++)
        free((char *)values[i]);
}

static void query_done(void *arg, int status, int timeouts, unsigned char *abuf, int alen)
{
    struct dns_query *q = arg;
    /* ARES_EDESTRUCTION: the resolver is going away, no answer came. */
    if (q->r->observe && status != ARES_EDESTRUCTION)
        q->r->observe(q->r->observe_arg, q->type, result_word(status), monotonic() - q->started);
    parse_answer(arg, status, abuf, alen);
}

/* 1.2.3.4 -> 4.3.2.1.in-addr.arpa; IPv6 -> nibbles.ip6.arpa */
static int reverse_name(const char *addr, char *out, size_t size)
{
    struct in_addr v4;
    struct in6_addr v6;
    if (inet_pton(AF_INET, addr, &v4) == 1) {
        const unsigned char *b = (const unsigned char *)&v4;
        snprintf(out, size, "%u.%u.%u.%u.in-addr.arpa", b[3], b[2], b[1], b[0]);
        return 0;
    }
    if (inet_pton(AF_INET6, addr, &v6) == 1) {
        static const char hex[] = "0123456789abcdef";
        size_t o = 0;
        for (int i = 15; i >= 0 && o + 5 < size; i--) {
            out[o++] = hex[v6.s6_addr[i] & 15];
            out[o++] = '.';
            out[o++] = hex[v6.s6_addr[i] >> 4];
            out[o++] = '.';
        }
        snprintf(out + o, size - o, "ip6.arpa");
        return 0;
    }
    return -1;
}

struct dns_query *dns_lookup(struct dns_resolver *r, enum dns_type type, const char *name, dns_callback *cb,
                             void *arg)
{
    struct dns_query *q = xcalloc(1, sizeof(*q));
    q->r = r;
    q->type = type;
    q->cb = cb;
    q->arg = arg;
    char rev[128];
    int qtype = type == DNS_A ? ns_t_a : type == DNS_AAAA ? ns_t_aaaa : type == DNS_MX ? ns_t_mx
              : type == DNS_TXT ? ns_t_txt : type == DNS_NS ? ns_t_ns : ns_t_ptr;
    if (type == DNS_PTR) {
        if (reverse_name(name, rev, sizeof(rev)) != 0) {
            struct dns_answer bad = { DNS_BADNAME, 0, NULL, NULL, -1 };
            if (r->observe)
                r->observe(r->observe_arg, type, "badname", -1);
            cb(&bad, arg);
            free(q);
            return NULL;
        }
        name = rev;
    }
    if (strlen(name) > 253) {
        struct dns_answer bad = { DNS_BADNAME, 0, NULL, NULL, -1 };
        if (r->observe)
            r->observe(r->observe_arg, type, "badname", -1);
        cb(&bad, arg);
        free(q);
        return NULL;
    }
    q->starting = 1;
    q->started = monotonic();
    ares_query(r->channel, name, ns_c_in, qtype, query_done, q);
    q->starting = 0;
    if (q->finished) {
        free(q);
        return NULL;
    }
    rearm_timer(r);
    return q;
}

void dns_cancel(struct dns_query *q)
{
    if (q)
        q->cancelled = 1;
}
