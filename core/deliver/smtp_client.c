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
 * most SC_ADDR_LIMIT addresses, SC_SESSION_LIMIT sessions that got a
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

int smtp_tls_level_parse(const char *text, enum smtp_tls_level *out)
{
    static const struct { const char *name; enum smtp_tls_level level; } names[] = {
        { "", SMTP_TLS_NONE }, { "none", SMTP_TLS_NONE }, { "may", SMTP_TLS_MAY },
        { "encrypt", SMTP_TLS_ENCRYPT }, { "verify", SMTP_TLS_VERIFY }, { "secure", SMTP_TLS_SECURE },
    };
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
        if (strcasecmp(text ? text : "", names[i].name) == 0) {
            *out = names[i].level;
            return 0;
        }
    return -1;
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
    if (a->tried >= SC_ADDR_LIMIT || a->sessions >= SC_SESSION_LIMIT) {
        job_finish(a);
        return;
    }
    if (a->addr_next < a->naddrs) {
        sc_conn_open(a, &a->addrs[a->addr_next++], 0);
        return;
    }
    if (a->host_next < a->nhosts) {
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
    if (a->conn)
        sc_conn_close(a->conn);
    job_unlink(a);
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
    size_t n = job->nrcpt ? job->nrcpt : 1;
    a->res = petrel_pool_zalloc(a->pool, n * sizeof(*a->res));
    a->final = petrel_pool_zalloc(a->pool, n);
    a->accepted = petrel_pool_zalloc(a->pool, n);
    a->cmds = petrel_pool_zalloc(a->pool, (n + 2) * sizeof(*a->cmds));
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

struct smtp_client *smtp_client_create(struct event_base *base, const struct smtp_client_settings *set,
                                       char **error)
{
    struct smtp_client *c = xcalloc(1, sizeof(*c));
    c->base = base;
    c->set = *set;
    c->myhostname = xstrdup(set->myhostname ? set->myhostname : "localhost");
    c->helo_name = xstrdup(set->helo_name && *set->helo_name ? set->helo_name : c->myhostname);
    c->cafile = set->tls_cafile && *set->tls_cafile ? xstrdup(set->tls_cafile) : NULL;
    c->set.myhostname = c->myhostname;
    c->set.helo_name = c->helo_name;
    c->set.tls_cafile = c->cafile;
    if (c->set.connect_timeout == 0) c->set.connect_timeout = 30;
    if (c->set.helo_timeout == 0) c->set.helo_timeout = 300;
    if (c->set.mail_timeout == 0) c->set.mail_timeout = 300;
    if (c->set.rcpt_timeout == 0) c->set.rcpt_timeout = 300;
    if (c->set.data_timeout == 0) c->set.data_timeout = 120;
    if (c->set.data_done_timeout == 0) c->set.data_done_timeout = 600;
    if (c->set.quit_timeout == 0) c->set.quit_timeout = 300;
    c->seed = (unsigned)time(NULL) ^ (unsigned)getpid() ^ (unsigned)(uintptr_t)c;
    if (set->tls_level != SMTP_TLS_NONE) {
        c->ssl = SSL_CTX_new(TLS_client_method());
        if (c->ssl == NULL) {
            *error = xstrdup("SSL_CTX_new failed");
            smtp_client_free(c);
            return NULL;
        }
        SSL_CTX_set_options(c->ssl, SSL_OP_NO_COMPRESSION | SSL_OP_NO_RENEGOTIATION);
        /* The chain is always checked (the result feeds the verify/secure
         * decision), never enforced by OpenSSL: "may" and "encrypt" accept
         * any certificate, as Postfix does. */
        SSL_CTX_set_verify(c->ssl, SSL_VERIFY_NONE, NULL);
        if (set->tls_level >= SMTP_TLS_VERIFY) {
            int ok = c->cafile ? SSL_CTX_load_verify_locations(c->ssl, c->cafile, NULL)
                               : SSL_CTX_set_default_verify_paths(c->ssl);
            if (ok != 1) {
                char reason[256] = "unknown error";
                unsigned long e = ERR_get_error();
                if (e)
                    ERR_error_string_n(e, reason, sizeof(reason));
                ERR_clear_error();
                size_t len = strlen(reason) + (c->cafile ? strlen(c->cafile) : 0) + 64;
                *error = xmalloc(len);
                snprintf(*error, len, "smtp_tls_CAfile %s: %s", c->cafile ? c->cafile : "(default)", reason);
                smtp_client_free(c);
                return NULL;
            }
        }
    }
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
    free(c->myhostname);
    free(c->helo_name);
    free(c->cafile);
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
