/*
 * SMTP/LMTP client delivery agent (see smtp_client.h). Postfix's smtp(8) is
 * the model for behaviour and wording; the code is our own.
 *
 * Shape. A job (struct sc_job) walks: route the next hop (MX lookup, then
 * A/AAAA per host, lazily, one host at a time) -> connect to the next
 * address -> greeting -> EHLO (HELO on 5xx) -> STARTTLS and EHLO again ->
 * transaction -> release the connection. A connection (struct sc_conn) is
 * separate from the job because it outlives it: after a clean transaction it
 * is RSET and parked in the client's cache for connection_cache_time, and
 * the next job to the same next hop takes it over (even while the RSET reply
 * is still in flight) instead of paying DNS, TCP, EHLO and TLS again.
 *
 * Recipients. Each recipient has a result that is final once SENT or
 * BOUNCED. DEFERRED ones are kept for the next address, as Postfix keeps
 * soft-failed recipients for the next MX host; when the address list (at
 * most smtp_mx_address_limit addresses, smtp_mx_session_limit sessions that got a
 * greeting) runs out, the last soft error stands.
 *
 * Commands. MAIL, the RCPTs and DATA form a list; with PIPELINING they go in
 * one write, otherwise one at a time, and either way the replies are read in
 * order against the list, so both paths share one reply handler. Timeouts
 * are one timer per connection, armed for the oldest unanswered command.
 *
 * Content is streamed from the queue file with pread in 64 KiB chunks,
 * dot-stuffed on the way, topped up from the write callback when the output
 * buffer drains below a watermark: a 50 MB message never sits in memory.
 *
 * TLS (smtp_tls_security_level): "may" uses STARTTLS when offered and, as
 * Postfix does, retries the same address in plaintext when the handshake
 * fails; "encrypt" defers (4.7.4 not offered, 4.7.5 handshake failure);
 * "verify" checks the chain against smtp_tls_CAfile and the MX host name,
 * "secure" the next-hop domain and its subdomains (not the DNS-supplied MX
 * name), deferring 4.7.5 on a mismatch. OpenSSL always computes the verify
 * result; we only enforce it at verify/secure.
 *
 * Mail loops (5.4.6): an MX list that names myhostname is cut at that
 * host's preference (nothing left: bounce), and a server whose greeting or
 * EHLO reply names myhostname is us (SMTP only; a local LMTP server shares
 * our name).
 *
 * Everything read from the network is bounded: replies are read by
 * smtp_reply.c (lines cut at SMTP_REPLY_LINE_MAX, text at
 * SMTP_REPLY_TEXT_MAX, at most SMTP_REPLY_LINES_MAX lines). No callback
 * into the caller happens before smtp_client_deliver returns: done() runs
 * from a zero-delay timer.
 *
 * Files, as Postfix's smtp/ is cut: this one holds the client, the jobs,
 * their results and the driver (sc_job_next); smtp_addr.c the next hop, MX
 * and address lookups; smtp_connect.c connections, timeouts, TLS and the
 * connection cache; smtp_proto.c the dialogue (greeting, EHLO, STARTTLS,
 * MAIL/RCPT/DATA, handling replies); smtp_reply.c reading them;
 * smtp_content.c streaming the message.
 * smtp_client_int.h has the structs they share.
 */
#include "config.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include <event2/event.h>
#include <openssl/err.h>
#include <openssl/ssl.h>

#include "deliver/smtp_client_int.h"
#include "lib/xalloc.h"
#include "tls/tls.h"

static void job_finish(struct sc_job *a);

/* ------------------------------------------------------------------ */
/* helpers */

double sc_elapsed(const struct timespec *since)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (double)(now.tv_sec - since->tv_sec) + (double)(now.tv_nsec - since->tv_nsec) / 1e9;
}

int sc_same_host(const char *a, const char *b)
{
    size_t la = strlen(a), lb = strlen(b);
    if (la && a[la - 1] == '.')
        la--;
    if (lb && b[lb - 1] == '.')
        lb--;
    return la == lb && la > 0 && strncasecmp(a, b, la) == 0;
}

/* Sets the result of recipient i unless it is already final. */
void sc_rcpt_set(struct sc_job *a, size_t i, enum dlv_status st, const char *dsn, const char *relay,
                 const char *fmt, ...)
{
    if (a->final[i])
        return;
    char text[sizeof(a->res[i].text)];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(text, sizeof(text), fmt, ap);
    va_end(ap);
    double cs = a->res[i].conn_secs, xs = a->res[i].xfer_secs;
    dlv_result_set(&a->res[i], st, dsn, relay, "%s", text);
    a->res[i].conn_secs = cs;
    a->res[i].xfer_secs = xs;
    if (st != DLV_DEFERRED)
        a->final[i] = 1;
    a->any_result = 1;
}

void sc_rcpt_reply_set(struct sc_job *a, size_t i, enum dlv_status st, const char *dsn, const char *relay,
                       const char *fmt, ...)
{
    char text[sizeof(a->res[i].text)];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(text, sizeof(text), fmt, ap);
    va_end(ap);
    if (st == DLV_BOUNCED && a->c->set.soft_bounce && !a->final[i]) {
        /* kept for the next server; the queue manager defers it if none
         * is left (soft_bounce turns every bounce into a deferral) */
        sc_rcpt_set(a, i, DLV_DEFERRED, dsn, relay, "%s", text);
        a->res[i].status = DLV_BOUNCED;
        return;
    }
    sc_rcpt_set(a, i, st, dsn, relay, "%s", text);
}

struct sc_addr *sc_addr_add(struct sc_job *a)
{
    if (a->naddrs == a->addrs_cap) {
        size_t cap = a->addrs_cap ? a->addrs_cap * 2 : 8;
        struct sc_addr *grown = petrel_pool_zalloc(a->pool, cap * sizeof(*grown));
        if (a->naddrs)
            memcpy(grown, a->addrs, a->naddrs * sizeof(*grown));
        a->addrs = grown;
        a->addrs_cap = cap;
    }
    struct sc_addr *x = &a->addrs[a->naddrs++];
    memset(x, 0, sizeof(*x));
    return x;
}

/* smtp_mx_address_limit (0: none, but never more than SC_MAX_ADDRS). */
int sc_address_limit_reached(const struct sc_job *a)
{
    unsigned limit = a->c->set.mx_address_limit;
    return a->naddrs >= SC_MAX_ADDRS || (limit > 0 && a->naddrs >= limit);
}

/* Same text for every recipient not yet final. */
void sc_pending_set(struct sc_job *a, enum dlv_status st, const char *dsn, const char *relay,
                    const char *fmt, ...)
{
    char text[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(text, sizeof(text), fmt, ap);
    va_end(ap);
    for (size_t i = 0; i < a->job->nrcpt; i++)
        sc_rcpt_set(a, i, st, dsn, relay, "%s", text);
}

static size_t pending_count(const struct sc_job *a)
{
    size_t n = 0;
    for (size_t i = 0; i < a->job->nrcpt; i++)
        n += !a->final[i];
    return n;
}

/* The job's driver: called whenever a step ends. Picks the next thing to
 * do: finish, reuse a cached connection, look up, or connect. */
void sc_job_next(struct sc_job *a)
{
    struct smtp_client *c = a->c;
    if (a->finishing)
        return;
    if (pending_count(a) == 0) {
        job_finish(a);
        return;
    }
    if (a->conn) {   /* still talking: a connection is only ever driven by its replies */
        return;
    }
    if (a->retry_plain && a->addr_next > 0) {
        a->retry_plain = 0;
        sc_conn_open(a, &a->addrs[a->addr_next - 1], 1);
        return;
    }
    if (!a->routed) {
        a->routed = 1;
        a->wait_mx = 1;   /* a synchronous answer (bad name) clears it inside dns_lookup */
        struct dns_query *q = dns_lookup(c->set.dns, DNS_MX, a->domain, sc_on_mx, a);
        if (a->wait_mx)
            a->q_mx = q;
        return;
    }
    /* smtp_mx_session_limit: sessions that got as far as the transaction */
    if (c->set.mx_session_limit > 0 && a->sessions >= c->set.mx_session_limit) {
        job_finish(a);
        return;
    }
    if (a->addr_next < a->naddrs) {
        sc_conn_open(a, &a->addrs[a->addr_next++], 0);
        return;
    }
    if (a->host_next < a->nhosts && !sc_address_limit_reached(a)) {
        sc_resolve_host(a);
        return;
    }
    job_finish(a);
}

/* ------------------------------------------------------------------ */
/* jobs */

static void job_unlink(struct sc_job *a)
{
    struct smtp_client *c = a->c;
    if (a->prev)
        a->prev->next = a->next;
    else if (c->jobs == a)
        c->jobs = a->next;
    if (a->next)
        a->next->prev = a->prev;
    a->prev = a->next = NULL;
}

static void job_free(struct sc_job *a)
{
    dns_cancel(a->q_mx);
    dns_cancel(a->q_a);
    dns_cancel(a->q_aaaa);
    sc_native_cancel(a);
    if (a->conn)
        sc_conn_close(a->conn);
    job_unlink(a);
    sc_body_reset(a);
    buf_free(&a->check_buf);
    buf_free(&a->ahead);
    event_free(a->finish_ev);
    petrel_pool_destroy(a->pool);
    free(a);
}

static void on_finish(evutil_socket_t fd, short what, void *arg)
{
    struct sc_job *a = arg;
    (void)fd;
    (void)what;
    smtp_done_fn *done = a->done;
    void *darg = a->arg;
    /* Results live in the job's pool: call done, then free. Unlinked first,
     * so a done() that frees the whole client cannot free this job too. */
    job_unlink(a);
    done(darg, a->res);
    job_free(a);
}

static void job_finish(struct sc_job *a)
{
    if (a->finishing)
        return;
    a->finishing = 1;
    for (size_t i = 0; i < a->job->nrcpt; i++) {
        if (!a->final[i] && a->res[i].text[0] == '\0')
            dlv_result_set(&a->res[i], DLV_DEFERRED, "4.4.1", "none", "delivery temporarily suspended: "
                           "no usable address for %s", a->domain);
        if (a->res[i].conn_secs == 0)
            a->res[i].conn_secs = a->txn_started ? a->conn_secs : sc_elapsed(&a->t_start);
    }
    if (a->conn)
        sc_conn_release(a->conn);
    struct timeval zero = { 0, 0 };
    evtimer_add(a->finish_ev, &zero);
}

void smtp_client_deliver(struct smtp_client *c, const struct dlv_job *job, smtp_done_fn *done, void *arg)
{
    struct sc_job *a = xcalloc(1, sizeof(*a));
    a->c = c;
    a->job = job;
    a->done = done;
    a->arg = arg;
    a->pool = petrel_pool_create(4096);
    a->lines_tail = &a->lines;
    size_t n = job->nrcpt ? job->nrcpt : 1;
    a->res = petrel_pool_zalloc(a->pool, n * sizeof(*a->res));
    a->final = petrel_pool_zalloc(a->pool, n);
    a->accepted = petrel_pool_zalloc(a->pool, n);
    a->cmds = petrel_pool_zalloc(a->pool, (n + 4) * sizeof(*a->cmds));   /* 2 XFORWARD, MAIL, DATA */
    a->eightbit = -1;
    a->finish_ev = evtimer_new(c->base, on_finish, a);
    clock_gettime(CLOCK_MONOTONIC, &a->t_start);
    a->next = c->jobs;
    if (c->jobs)
        c->jobs->prev = a;
    c->jobs = a;

    if (sc_parse_nexthop(a) < 0) {
        sc_pending_set(a, DLV_DEFERRED, "4.3.5", "none", "bad next hop \"%s\"", job->nexthop ? job->nexthop : "");
        job_finish(a);
        return;
    }
    struct sc_conn *conn = sc_cache_take(c, job->nexthop);
    if (conn) {
        c->stats.reused++;
        conn->job = a;
        conn->reused = 1;
        conn->counted = 0;
        a->conn = conn;
        if (conn->state == S_IDLE) {
            evtimer_del(conn->timer);
            /* txn_start may call back into job_next/job_finish: both defer
             * done() to the loop, so this stays re-entrancy safe; AUTH first
             * when this job has credentials */
            sc_conn_ready(conn);
        }
        /* else: S_RSET in flight; its 250 starts the transaction */
        return;
    }
    sc_job_next(a);
}

/* ------------------------------------------------------------------ */
/* client */

__attribute__((format(printf, 2, 3)))
static int fail(char **error, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    if (vasprintf(error, fmt, ap) < 0)
        *error = NULL;
    va_end(ap);
    return -1;
}

/* smtp_bind_address / smtp_bind_address6: a numeric address, maybe in [ ]. */
static int parse_bind_address(struct smtp_client *c, const char *value, int family, char **error)
{
    const char *param = family == AF_INET ? "bind_address" : "bind_address6";
    char text[64];
    if (value == NULL || *value == '\0')
        return 0;
    size_t len = strlen(value);
    if (value[0] == '[') {
        if (len < 3 || value[len - 1] != ']')
            return fail(error, "%s_%s: malformed value \"%s\"", c->prefix, param, value);
        value++;
        len -= 2;
    }
    if (len >= sizeof(text))
        return fail(error, "%s_%s: bad address \"%s\"", c->prefix, param, value);
    memcpy(text, value, len);
    text[len] = '\0';
    struct sockaddr_storage *ss = family == AF_INET ? &c->bind4 : &c->bind6;
    memset(ss, 0, sizeof(*ss));
    if (family == AF_INET) {
        struct sockaddr_in *s4 = (struct sockaddr_in *)ss;
        s4->sin_family = AF_INET;
        if (inet_pton(AF_INET, text, &s4->sin_addr) != 1)
            return fail(error, "%s_%s: \"%s\" is not an IPv4 address", c->prefix, param, text);
        c->bind4_len = sizeof(*s4);
        snprintf(c->bind4_text, sizeof(c->bind4_text), "%s", text);
    } else {
        struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)ss;
        s6->sin6_family = AF_INET6;
        if (inet_pton(AF_INET6, text, &s6->sin6_addr) != 1)
            return fail(error, "%s_%s: \"%s\" is not an IPv6 address", c->prefix, param, text);
        c->bind6_len = sizeof(*s6);
        snprintf(c->bind6_text, sizeof(c->bind6_text), "%s", text);
    }
    return 0;
}

static char **copy_list(const char *const *list)
{
    size_t n = 0;
    while (list && list[n])
        n++;
    char **out = xcalloc(n + 1, sizeof(char *));
    for (size_t i = 0; i < n; i++)
        out[i] = xstrdup(list[i]);
    return out;
}

static void free_list(char **list)
{
    for (size_t i = 0; list && list[i]; i++)
        free(list[i]);
    free(list);
}

/* The client's TLS context: the mandatory protocol and cipher settings at
 * encrypt and the verified levels, the opportunistic ones at may (Postfix's
 * rule), trust anchors, a client certificate, fingerprints, the session
 * cache. Errors name the parameter. */
static int make_tls_context(struct smtp_client *c, const struct smtp_client_settings *set, char **error)
{
    const char *p = c->prefix;
    char pa[64], pb[64];
    int mandatory = set->tls_level >= SMTP_TLS_ENCRYPT;
    c->ssl = SSL_CTX_new(TLS_client_method());
    if (c->ssl == NULL)
        return fail(error, "%s_tls_security_level: cannot create a TLS context", p);
    SSL_CTX_set_options(c->ssl, SSL_OP_NO_COMPRESSION | SSL_OP_NO_RENEGOTIATION);
    /* The chain is always checked (the result feeds the log and the
     * verify/secure decision), never enforced by OpenSSL: "may" and
     * "encrypt" accept any certificate, as Postfix does. */
    SSL_CTX_set_verify(c->ssl, SSL_VERIFY_NONE, NULL);
    snprintf(pa, sizeof(pa), "%s_tls_%sprotocols", p, mandatory ? "mandatory_" : "");
    if (tls_set_protocols(c->ssl, mandatory ? set->tls_mandatory_protocols : set->tls_protocols, pa, error) < 0)
        return -1;
    struct tls_cipher_lists lists = { set->tls_high_cipherlist, set->tls_medium_cipherlist, set->tls_null_cipherlist };
    snprintf(pa, sizeof(pa), "%s_tls_%sciphers", p, mandatory ? "mandatory_" : "");
    char ex[64];
    snprintf(ex, sizeof(ex), "%s_tls_exclude_ciphers", p);
    snprintf(pb, sizeof(pb), "%s_tls_mandatory_exclude_ciphers", p);
    if (tls_set_ciphers(c->ssl, &lists, mandatory ? set->tls_mandatory_ciphers : set->tls_ciphers, pa,
                        set->tls_exclude_ciphers, ex, mandatory ? set->tls_mandatory_exclude_ciphers : NULL, pb,
                        error) < 0)
        return -1;
    tls_set_groups(c->ssl, set->tls_eecdh_auto_curves, set->tls_ffdhe_auto_groups);
    snprintf(pa, sizeof(pa), "%s_tls_CAfile", p);
    snprintf(pb, sizeof(pb), "%s_tls_CApath", p);
    int verified = set->tls_level == SMTP_TLS_VERIFY || set->tls_level == SMTP_TLS_SECURE;
    if (tls_load_ca(c->ssl, set->tls_cafile, pa, set->tls_capath, pb, verified, error) < 0)
        return -1;
    /* A client certificate: chain files win over the cert/key pair. */
    if (set->tls_chain_files && *set->tls_chain_files) {
        snprintf(pa, sizeof(pa), "%s_tls_chain_files", p);
        if (tls_load_chain_files(c->ssl, set->tls_chain_files, pa, error) < 0)
            return -1;
    } else if (set->tls_cert_file && *set->tls_cert_file) {
        snprintf(pa, sizeof(pa), "%s_tls_cert_file", p);
        snprintf(pb, sizeof(pb), "%s_tls_key_file", p);
        if (tls_load_cert_key(c->ssl, set->tls_cert_file, pa, set->tls_key_file, pb, error) < 0)
            return -1;
    }
    if (set->tls_level == SMTP_TLS_FINGERPRINT) {
        snprintf(pa, sizeof(pa), "%s_tls_fingerprint_digest", p);
        if (tls_check_digest(set->tls_fingerprint_digest, pa, error) < 0)
            return -1;
        c->fingerprint_digest = xstrdup(set->tls_fingerprint_digest);
        size_t n = 0;
        while (set->tls_fingerprint_cert_match && set->tls_fingerprint_cert_match[n])
            n++;
        if (n == 0)
            return fail(error, "%s_tls_fingerprint_cert_match: empty at security level fingerprint: no "
                        "certificate could ever match", p);
        c->fingerprints = xcalloc(n, sizeof(char *));
        for (size_t i = 0; i < n; i++) {
            char *f = xstrdup(set->tls_fingerprint_cert_match[i]);
            for (char *q = f; *q; q++)
                *q = (char)toupper((unsigned char)*q);
            c->fingerprints[c->nfingerprints++] = f;
        }
    }
    /* Postfix's defaults when a caller gave none */
    static const char *const default_verify[] = { "hostname", NULL };
    static const char *const default_secure[] = { "nexthop", "dot-nexthop", NULL };
    c->verify_match = copy_list(set->tls_verify_cert_match ? set->tls_verify_cert_match : default_verify);
    c->secure_match = copy_list(set->tls_secure_cert_match ? set->tls_secure_cert_match : default_secure);
    if (set->tls_session_cache && *set->tls_session_cache) {
        snprintf(pa, sizeof(pa), "%s_tls_session_cache_database", p);
        c->scache = tls_scache_open(set->tls_session_cache, pa, set->tls_session_cache_timeout, error);
        if (c->scache == NULL)
            return -1;
        sc_client_tls_init(c);
    }
    return 0;
}

struct smtp_client *smtp_client_create(struct event_base *base, const struct smtp_client_settings *set,
                                       char **error)
{
    struct smtp_client *c = xcalloc(1, sizeof(*c));
    c->base = base;
    c->set = *set;
    c->prefix = set->lmtp ? "lmtp" : "smtp";
    c->myhostname = xstrdup(set->myhostname ? set->myhostname : "localhost");
    c->helo_name = xstrdup(set->helo_name && *set->helo_name ? set->helo_name : c->myhostname);
    c->set.myhostname = c->myhostname;
    c->set.helo_name = c->helo_name;
    /* Postfix's defaults for what a caller left at 0 (the connect timeout
     * may be 0: the kernel's own) */
    if (c->set.helo_timeout == 0) c->set.helo_timeout = 300;
    if (c->set.starttls_timeout == 0) c->set.starttls_timeout = 300;
    if (c->set.mail_timeout == 0) c->set.mail_timeout = 300;
    if (c->set.rcpt_timeout == 0) c->set.rcpt_timeout = 300;
    if (c->set.data_timeout == 0) c->set.data_timeout = 120;
    if (c->set.data_xfer_timeout == 0) c->set.data_xfer_timeout = 180;
    if (c->set.data_done_timeout == 0) c->set.data_done_timeout = 600;
    if (c->set.rset_timeout == 0) c->set.rset_timeout = 20;
    if (c->set.quit_timeout == 0) c->set.quit_timeout = 300;
    if (c->set.xforward_timeout == 0) c->set.xforward_timeout = 300;
    if (c->set.host_lookup_mask == 0)
        c->set.host_lookup_mask = c->set.dns_support == SMTP_DNS_DISABLED ? SMTP_HOST_NATIVE : SMTP_HOST_DNS;
    c->seed = (unsigned)time(NULL) ^ (unsigned)getpid() ^ (unsigned)(uintptr_t)c;
    if (parse_bind_address(c, set->bind_address, AF_INET, error) < 0 ||
        parse_bind_address(c, set->bind_address6, AF_INET6, error) < 0) {
        smtp_client_free(c);
        return NULL;
    }
    if (set->tls_level == SMTP_TLS_DANE || set->tls_level == SMTP_TLS_DANE_ONLY) {
        fail(error, "%s_tls_security_level: \"%s\" is not supported: Petrel has no DNSSEC-validated TLSA lookups",
             c->prefix, smtp_tls_level_name(set->tls_level));
        smtp_client_free(c);
        return NULL;
    }
    if (set->tls_level != SMTP_TLS_NONE && make_tls_context(c, set, error) < 0) {
        smtp_client_free(c);
        return NULL;
    }
    /* what the TLS context used is spent: nothing below reads it */
    c->set.tls_cafile = c->set.tls_capath = NULL;
    c->set.tls_cert_file = c->set.tls_key_file = c->set.tls_session_cache = NULL;
    c->set.tls_chain_files = c->set.tls_fingerprint_cert_match = NULL;
    c->set.tls_verify_cert_match = c->set.tls_secure_cert_match = NULL;
    c->set.host_lookup = NULL;
    c->set.bind_address = c->set.bind_address6 = NULL;
    return c;
}

void smtp_client_free(struct smtp_client *c)
{
    if (c == NULL)
        return;
    while (c->jobs)
        job_free(c->jobs);
    while (c->conns) {
        struct sc_conn *conn = c->conns;
        conn->busy = 0;
        sc_conn_close(conn);
    }
    if (c->ssl)
        SSL_CTX_free(c->ssl);
    tls_scache_close(c->scache);
    for (size_t i = 0; i < c->nfingerprints; i++)
        free(c->fingerprints[i]);
    free(c->fingerprints);
    free_list(c->verify_match);
    free_list(c->secure_match);
    free(c->fingerprint_digest);
    free(c->myhostname);
    free(c->helo_name);
    free(c);
}

void smtp_client_get_stats(const struct smtp_client *c, struct smtp_client_stats *out)
{
    *out = c->stats;
    out->cached = 0;
    out->open = 0;
    for (const struct sc_conn *conn = c->conns; conn; conn = conn->next) {
        if (conn->zombie)
            continue;
        out->open++;
        if (conn->job == NULL && (conn->state == S_IDLE || conn->state == S_RSET))
            out->cached++;
    }
}
