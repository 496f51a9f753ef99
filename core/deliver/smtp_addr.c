/*
 * The SMTP client's next hop and its addresses (Postfix's smtp_addr.c):
 * parsing the next hop ("domain", "domain:port", "[host]:port", LMTP's
 * "unix:/path" and "inet:host:port"), the MX lookup (equal preferences
 * shuffled, null MX, the list cut where it names us) and the A/AAAA lookups
 * of one MX host at a time, done lazily when the job needs its next address.
 * DNS answers come back on the loop (lib/dns.c); each ends in sc_job_next.
 *
 * smtp_host_lookup = native (or "dns, native" after DNS found nothing) asks
 * getaddrinfo, which reads /etc/hosts and nsswitch as Postfix's native
 * lookups do; it blocks, so it runs on the client's worker threads and its
 * answer comes back on the loop. smtp_dns_support_level = disabled (or
 * disable_dns_lookups) means no MX lookup and native host lookups only.
 * At most smtp_mx_address_limit addresses are collected.
 */
#include "config.h"

#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/un.h>

#include "deliver/smtp_client_int.h"
#include "lib/workq.h"
#include "lib/xalloc.h"
#include "mail/smtp_syntax.h"

/* ------------------------------------------------------------------ */
/* routing */

static void add_found(struct sc_job *a, const char *host, const struct dns_answer *ans, int family)
{
    if (ans->status != DNS_OK)
        return;
    for (size_t i = 0; i < ans->count && !sc_address_limit_reached(a); i++) {
        struct sc_addr *x = sc_addr_add(a);
        snprintf(x->host, sizeof(x->host), "%s", host);
        snprintf(x->addr, sizeof(x->addr), "%s", ans->values[i]);
        x->family = family;
        x->port = a->port;
    }
}

/* The current host yielded no address: say why (the worst answer wins). */
static void host_failed(struct sc_job *a, const char *name, enum dns_status st, const char *native_error)
{
    int hard = !a->hosts_from_mx && (st == DNS_NXDOMAIN || st == DNS_NODATA || st == DNS_BADNAME);
    if (native_error)
        sc_pending_set(a, hard ? DLV_BOUNCED : DLV_DEFERRED, hard ? "5.4.4" : "4.4.4", "none",
                       "unable to look up host %s: %s", name, native_error);
    else
        sc_pending_set(a, hard ? DLV_BOUNCED : DLV_DEFERRED, hard ? "5.4.4" : "4.4.3", "none",
                       "Host or domain name not found. Name service error for name=%s type=A: %s", name,
                       dns_status_text(st));
}

static void resolve_native(struct sc_job *a);

/* Both address lookups of the current host are in. */
static void host_resolved(struct sc_job *a)
{
    const char *name = a->hosts[a->host_next].name;
    if (a->naddrs > a->addrs_before) {
        a->host_next++;
        sc_job_next(a);
        return;
    }
    enum dns_status st = a->st_a == DNS_TEMPFAIL || a->st_aaaa == DNS_TEMPFAIL ? DNS_TEMPFAIL
                       : a->st_a == DNS_NXDOMAIN ? DNS_NXDOMAIN : a->st_a;
    /* smtp_host_lookup = dns, native: a name DNS does not know may still be
     * in /etc/hosts (Postfix tries native after a "not found") */
    if ((a->c->set.host_lookup_mask & SMTP_HOST_NATIVE) && a->c->set.workq && st != DNS_TEMPFAIL) {
        resolve_native(a);
        return;
    }
    a->host_next++;
    host_failed(a, name, st, NULL);
    sc_job_next(a);
}

/* ---- native lookups (getaddrinfo, on the client's worker threads) ---- */

struct sc_native {
    struct sc_job *job;            /* NULL once the job is gone */
    struct workq_job *wj;
    char name[256];
    int gai_error;
    struct { int family; char addr[INET6_ADDRSTRLEN]; } found[64];
    size_t nfound;
};

static void native_work(void *arg)
{
    struct sc_native *n = arg;
    struct addrinfo hints, *res = NULL;
    memset(&hints, 0, sizeof(hints));
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    n->gai_error = getaddrinfo(n->name, NULL, &hints, &res);
    for (struct addrinfo *r = res; r && n->nfound < sizeof(n->found) / sizeof(n->found[0]); r = r->ai_next) {
        const void *src = r->ai_family == AF_INET ? (const void *)&((struct sockaddr_in *)r->ai_addr)->sin_addr
                        : r->ai_family == AF_INET6 ? (const void *)&((struct sockaddr_in6 *)r->ai_addr)->sin6_addr
                        : NULL;
        if (src == NULL)
            continue;
        n->found[n->nfound].family = r->ai_family;
        inet_ntop(r->ai_family, src, n->found[n->nfound].addr, sizeof(n->found[0].addr));
        n->nfound++;
    }
    if (res)
        freeaddrinfo(res);
}

static void native_done(void *arg, int cancelled)
{
    struct sc_native *n = arg;
    struct sc_job *a = n->job;
    if (cancelled || a == NULL) {
        free(n);
        return;
    }
    a->native = NULL;
    const char *name = a->hosts[a->host_next].name;
    for (size_t i = 0; i < n->nfound && !sc_address_limit_reached(a); i++) {
        struct sc_addr *x = sc_addr_add(a);
        snprintf(x->host, sizeof(x->host), "%s", name);
        snprintf(x->addr, sizeof(x->addr), "%s", n->found[i].addr);
        x->family = n->found[i].family;
        x->port = a->port;
    }
    if (a->naddrs == a->addrs_before) {
        int e = n->gai_error;
        char why[300];
        snprintf(why, sizeof(why), "%s", e ? gai_strerror(e) : "no address");
        /* Postfix: EAI_NONAME (and NODATA) is "no such host", the rest may pass */
        int nohost = e == 0 || e == EAI_NONAME
#ifdef EAI_NODATA
                     || e == EAI_NODATA
#endif
            ;
        host_failed(a, name, nohost ? DNS_NXDOMAIN : DNS_TEMPFAIL, why);
    }
    a->host_next++;
    free(n);
    sc_job_next(a);
}

static void resolve_native(struct sc_job *a)
{
    struct sc_native *n = xcalloc(1, sizeof(*n));
    n->job = a;
    snprintf(n->name, sizeof(n->name), "%s", a->hosts[a->host_next].name);
    a->native = n;
    n->wj = workq_submit(a->c->set.workq, native_work, native_done, n);
}

void sc_native_cancel(struct sc_job *a)
{
    if (a->native) {
        a->native->job = NULL;
        workq_cancel(a->native->wj);
        a->native = NULL;
    }
}

static void on_a(const struct dns_answer *ans, void *arg)
{
    struct sc_job *a = arg;
    a->q_a = NULL;
    a->wait_a = 0;
    a->st_a = ans->status;
    add_found(a, a->hosts[a->host_next].name, ans, AF_INET);
    if (!a->wait_aaaa)
        host_resolved(a);
}

static void on_aaaa(const struct dns_answer *ans, void *arg)
{
    struct sc_job *a = arg;
    a->q_aaaa = NULL;
    a->wait_aaaa = 0;
    a->st_aaaa = ans->status;
    add_found(a, a->hosts[a->host_next].name, ans, AF_INET6);
    if (!a->wait_a)
        host_resolved(a);
}

void sc_resolve_host(struct sc_job *a)
{
    const char *name = a->hosts[a->host_next].name;
    a->addrs_before = a->naddrs;
    if (!(a->c->set.host_lookup_mask & SMTP_HOST_DNS) && a->c->set.workq) {
        resolve_native(a);
        return;
    }
    a->wait_a = a->wait_aaaa = 1;
    a->st_a = a->st_aaaa = DNS_NODATA;
    /* a synchronous answer (bad name) clears wait_* inside dns_lookup */
    struct dns_query *q = dns_lookup(a->c->set.dns, DNS_A, name, on_a, a);
    if (a->wait_a)
        a->q_a = q;
    if (!a->wait_aaaa)
        return;
    q = dns_lookup(a->c->set.dns, DNS_AAAA, name, on_aaaa, a);
    if (a->wait_aaaa)
        a->q_aaaa = q;
}

static void shuffle_equal(struct sc_job *a)
{
    for (size_t start = 0; start < a->nhosts;) {
        size_t end = start + 1;
        while (end < a->nhosts && a->hosts[end].pref == a->hosts[start].pref)
            end++;
        for (size_t i = end - 1; i > start; i--) {
            size_t j = start + (size_t)rand_r(&a->c->seed) % (i - start + 1);
            if (j != i) {
                __typeof__(a->hosts[0]) t = a->hosts[i];
                a->hosts[i] = a->hosts[j];
                a->hosts[j] = t;
            }
        }
        start = end;
    }
}

void sc_on_mx(const struct dns_answer *ans, void *arg)
{
    struct sc_job *a = arg;
    a->q_mx = NULL;
    a->wait_mx = 0;
    if (ans->status == DNS_OK) {
        if (ans->count == 1 && (ans->values[0][0] == '\0' || strcmp(ans->values[0], ".") == 0)) {
            sc_pending_set(a, DLV_BOUNCED, "5.1.10", "none", "Domain %s does not accept mail (nullMX)", a->domain);
            sc_job_next(a);
            return;
        }
        for (size_t i = 0; i < ans->count && a->nhosts < SC_MAX_HOSTS; i++) {
            if (ans->values[i][0] == '\0' || strcmp(ans->values[i], ".") == 0)
                continue;
            snprintf(a->hosts[a->nhosts].name, sizeof(a->hosts[0].name), "%s", ans->values[i]);
            a->hosts[a->nhosts++].pref = ans->preferences ? ans->preferences[i] : 0;
        }
        a->hosts_from_mx = 1;
        shuffle_equal(a);
        /* Postfix: an MX host that is us cuts the list at its preference;
         * only better-preference hosts remain. None left: a mail loop. */
        const char *me = a->c->set.myhostname;
        for (size_t i = 0; me && *me && i < a->nhosts; i++)
            if (sc_same_host(a->hosts[i].name, me)) {
                size_t keep = 0;
                while (keep < a->nhosts && a->hosts[keep].pref < a->hosts[i].pref)
                    keep++;
                a->nhosts = keep;
                break;
            }
        if (a->nhosts == 0) {
            sc_pending_set(a, DLV_BOUNCED, "5.4.6", "none", "mail for %s loops back to myself", a->domain);
            sc_job_next(a);
            return;
        }
        sc_job_next(a);
        return;
    }
    if (ans->status == DNS_NODATA) {
        /* no MX: the domain's own address records (RFC 5321 5.1) */
        const char *me = a->c->set.myhostname;
        if (me && *me && sc_same_host(a->domain, me)) {
            sc_pending_set(a, DLV_BOUNCED, "5.4.6", "none", "mail for %s loops back to myself", a->domain);
            sc_job_next(a);
            return;
        }
        snprintf(a->hosts[0].name, sizeof(a->hosts[0].name), "%s", a->domain);
        a->nhosts = 1;
        sc_job_next(a);
        return;
    }
    if (ans->status == DNS_NXDOMAIN || ans->status == DNS_BADNAME)
        sc_pending_set(a, DLV_BOUNCED, "5.4.4", "none",
                       "Host or domain name not found. Name service error for name=%s type=MX: %s", a->domain,
                       dns_status_text(ans->status));
    else
        sc_pending_set(a, DLV_DEFERRED, "4.4.3", "none",
                       "Host or domain name not found. Name service error for name=%s type=MX: %s", a->domain,
                       dns_status_text(ans->status));
    sc_job_next(a);
}

static int parse_port(const char *s, unsigned *out)
{
    if (strcmp(s, "smtp") == 0) {
        *out = 25;
        return 0;
    }
    if (strcmp(s, "lmtp") == 0) {
        *out = 24;
        return 0;
    }
    char *end;
    unsigned long v = strtoul(s, &end, 10);
    if (*s == '\0' || *end || v == 0 || v > 65535)
        return -1;
    *out = (unsigned)v;
    return 0;
}

static int literal_family(const char *s)
{
    struct in6_addr v6;
    struct in_addr v4;
    if (inet_pton(AF_INET, s, &v4) == 1)
        return AF_INET;
    if (inet_pton(AF_INET6, s, &v6) == 1)
        return AF_INET6;
    return 0;
}

/* Parses the next hop into domain/port/flags; -1 when malformed. */
int sc_parse_nexthop(struct sc_job *a)
{
    struct smtp_client *c = a->c;
    const char *nh = a->job->nexthop ? a->job->nexthop : "";
    a->port = c->set.default_port ? c->set.default_port : c->set.lmtp ? 24 : 25;
    if (c->set.lmtp && strncmp(nh, "unix:", 5) == 0) {
        const char *path = nh + 5;
        if (*path == '\0' || strlen(path) >= sizeof(((struct sockaddr_un *)0)->sun_path))
            return -1;
        a->is_unix = 1;
        snprintf(a->domain, sizeof(a->domain), "%s", path);
        struct sc_addr *x = sc_addr_add(a);
        snprintf(x->host, sizeof(x->host), "%s",
                 c->set.myhostname && *c->set.myhostname ? c->set.myhostname : "localhost");
        memcpy(x->addr, path, strlen(path) + 1);   /* shorter than sun_path, checked above */
        x->family = AF_UNIX;
        a->routed = 1;
        return 0;
    }
    if (c->set.lmtp && strncmp(nh, "inet:", 5) == 0)
        nh += 5;
    char host[256];
    const char *port = NULL;
    if (nh[0] == '[') {
        const char *close = strchr(nh, ']');
        if (close == NULL || (size_t)(close - nh - 1) >= sizeof(host) || close == nh + 1)
            return -1;
        memcpy(host, nh + 1, (size_t)(close - nh - 1));
        host[close - nh - 1] = '\0';
        if (close[1] == ':')
            port = close + 2;
        else if (close[1] != '\0')
            return -1;
        if (strncasecmp(host, "ipv6:", 5) == 0)
            memmove(host, host + 5, strlen(host + 5) + 1);
    } else {
        const char *colon = strrchr(nh, ':');
        size_t hl = colon ? (size_t)(colon - nh) : strlen(nh);
        if (hl == 0 || hl >= sizeof(host))
            return -1;
        memcpy(host, nh, hl);
        host[hl] = '\0';
        if (colon)
            port = colon + 1;
        /* Postfix: an unbracketed name is looked up as MX (SMTP only) */
        a->want_mx = !c->set.lmtp;
    }
    if (port && parse_port(port, &a->port) < 0)
        return -1;
    snprintf(a->domain, sizeof(a->domain), "%s", host);
    int fam = literal_family(host);
    if (fam) {
        a->literal = 1;
        a->want_mx = 0;
        struct sc_addr *x = sc_addr_add(a);
        snprintf(x->host, sizeof(x->host), "%s", host);
        snprintf(x->addr, sizeof(x->addr), "%.127s", host);   /* an address literal: short */
        x->family = fam;
        x->port = a->port;
        a->routed = 1;
        return 0;
    }
    if (!smtp_valid_hostname(host))
        return -1;
    /* smtp_dns_support_level = disabled: no MX lookup, the name is a host */
    if (c->set.dns_support == SMTP_DNS_DISABLED)
        a->want_mx = 0;
    if (!a->want_mx) {
        snprintf(a->hosts[0].name, sizeof(a->hosts[0].name), "%s", host);
        a->nhosts = 1;
        a->routed = 1;
    }
    return 0;
}
