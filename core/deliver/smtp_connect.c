/*
 * The SMTP client's connections (Postfix's smtp_connect.c, smtp_reuse.c and
 * the TLS part of smtp_proto.c): opening a non-blocking TCP or UNIX-domain
 * connection, the per-connection timer and what a timeout or a lost
 * connection means for the job, STARTTLS's TLS filter and certificate
 * checks, and the cache of idle connections (RSET, then parked for
 * connection_cache_time for the next job to the same next hop).
 *
 * A connection may be closed from inside one of its own callbacks: it is
 * then only marked (zombie) and freed when the callback returns (busy).
 */
#include "config.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/event.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "deliver/smtp_client_int.h"
#include "lib/xalloc.h"
#include "module/metrics_core.h"
#include "tls/tls.h"

static void count_handshake(const struct smtp_client *c, const char *result, SSL *ssl);

/* ------------------------------------------------------------------ */
/* connection plumbing */

void sc_conn_arm(struct sc_conn *conn, unsigned secs)
{
    if (secs == 0) {
        evtimer_del(conn->timer);
        return;
    }
    struct timeval tv = { (time_t)secs, 0 };
    evtimer_add(conn->timer, &tv);
}

void sc_conn_printf(struct sc_conn *conn, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    evbuffer_add_vprintf(bufferevent_get_output(conn->bev), fmt, ap);
    va_end(ap);
}

void sc_conn_free_now(struct sc_conn *conn)
{
    struct smtp_client *c = conn->c;
    if (conn->prev)
        conn->prev->next = conn->next;
    else
        c->conns = conn->next;
    if (conn->next)
        conn->next->prev = conn->prev;
    if (conn->bev)
        bufferevent_free(conn->bev);
    event_free(conn->timer);
    sc_sasl_free(conn);
    smtp_reply_reader_free(&conn->reader);
    free(conn->key);
    free(conn);
}

/* Closes the connection now (no QUIT); the memory goes when no callback of
 * ours is on the stack. */
void sc_conn_close(struct sc_conn *conn)
{
    if (conn->job && conn->job->conn == conn)
        conn->job->conn = NULL;
    conn->job = NULL;
    evtimer_del(conn->timer);
    if (conn->bev) {
        bufferevent_disable(conn->bev, EV_READ | EV_WRITE);
        bufferevent_setcb(conn->bev, NULL, NULL, NULL, NULL);
        bufferevent_free(conn->bev);
        conn->bev = NULL;
    }
    if (conn->busy)
        conn->zombie = 1;
    else
        sc_conn_free_now(conn);
}

/* Ends use of a connection: QUIT (and wait briefly for its reply), or
 * RSET and park it when caching is on and the dialogue is in a clean state. */
void sc_conn_release(struct sc_conn *conn)
{
    struct smtp_client *c = conn->c;
    if (conn->job && conn->job->conn == conn)
        conn->job->conn = NULL;
    conn->job = NULL;
    if (conn->bev == NULL) {
        sc_conn_close(conn);
        return;
    }
    /* smtp_connection_reuse_time_limit: an old connection is not parked
     * again, so a slow server does not keep attracting deliveries; an
     * authenticated session is never handed to another job (another sender) */
    int too_old = c->set.connection_reuse_time > 0 && sc_elapsed(&conn->opened) >= c->set.connection_reuse_time;
    if (c->set.connection_cache_time > 0 && !too_old && !conn->authed && conn->sasl == NULL) {
        conn->state = S_RSET;
        sc_conn_printf(conn, "RSET\r\n");
        sc_conn_arm(conn, c->set.rset_timeout);
    } else {
        conn->state = S_QUIT;
        sc_conn_printf(conn, "QUIT\r\n");
        sc_conn_arm(conn, c->set.quit_timeout);
    }
}

/* ------------------------------------------------------------------ */
/* failures of a session */

const char *sc_stage_text(const struct sc_conn *conn)
{
    const struct sc_job *a = conn->job;
    switch (conn->state) {
    case S_CONNECTING: return "connecting";
    case S_GREETING: return "receiving the initial server greeting";
    case S_EHLO: return conn->c->set.lmtp ? "performing the LHLO handshake" : "performing the EHLO handshake";
    case S_HELO: return "performing the HELO handshake";
    case S_STARTTLS: return "receiving the STARTTLS response";
    case S_TLS_HANDSHAKE: return "performing the TLS handshake";
    case S_AUTH: return "performing the SASL authentication";
    case S_TXN:
        if (a && a->nreplied < a->ncmds) {
            switch (a->cmds[a->nreplied].kind) {
            case CMD_XFORWARD_ADDR: return "sending XFORWARD name/address";
            case CMD_XFORWARD_PROTO: return "sending XFORWARD protocol/helo_name";
            case CMD_MAIL: return "sending MAIL FROM";
            case CMD_RCPT: return "sending RCPT TO";
            case CMD_DATA: return "sending DATA command";
            }
        }
        return "sending MAIL FROM";
    case S_BODY: return "sending message body";
    case S_DOT: case S_DOT_IGNORE: return "sending end of data -- message may be sent more than once";
    case S_RSET: return "sending final RSET";
    case S_QUIT: return "sending QUIT";
    default: return "talking to the server";
    }
}

/* The session on conn failed softly (timeout, lost connection, protocol
 * error, bad greeting). A failure of a connection taken from the cache before
 * anything was committed sends the job to a fresh connection instead. */
void sc_session_fail(struct sc_conn *conn, const char *dsn, const char *fmt, ...)
{
    struct sc_job *a = conn->job;
    char text[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(text, sizeof(text), fmt, ap);
    va_end(ap);
    if (a == NULL) {   /* a parked or closing connection: just drop it */
        sc_conn_close(conn);
        return;
    }
    /* nothing of this job but XFORWARD was answered yet: nothing can have
     * been delivered (the XFORWARD commands come first, MAIL next) */
    int uncommitted = conn->state == S_RSET
                      || (conn->state == S_TXN && (a->nreplied == 0 || a->cmds[a->nreplied - 1].kind < CMD_MAIL));
    if (conn->reused && uncommitted) {
        msg_info("%s: cached connection to %s failed (%s); retrying on a new connection", a->job->queue_id,
                 conn->relay, text);
        sc_conn_close(conn);
        a->reuse_failed = 1;
        sc_job_next(a);
        return;
    }
    sc_pending_set(a, DLV_DEFERRED, dsn, conn->relay, "%s", text);
    msg_info("%s: %s", a->job->queue_id, text);
    sc_conn_close(conn);
    sc_job_next(a);
}

static void conn_timeout(evutil_socket_t fd, short what, void *arg)
{
    struct sc_conn *conn = arg;
    (void)fd;
    (void)what;
    if (conn->state == S_IDLE) {
        /* the cache time is over: say goodbye */
        conn->state = S_QUIT;
        sc_conn_printf(conn, "QUIT\r\n");
        /* a parked connection is not worth a long wait for the goodbye */
        sc_conn_arm(conn, conn->c->set.quit_timeout < 5 ? conn->c->set.quit_timeout : 5);
        return;
    }
    if (conn->state == S_QUIT || conn->job == NULL) {
        sc_conn_close(conn);
        return;
    }
    if (conn->state == S_CONNECTING) {
        sc_session_fail(conn, "4.4.1", "connect to %s: Connection timed out", conn->relay);
        return;
    }
    if (conn->state == S_TLS_HANDSHAKE)
        count_handshake(conn->c, "failed", NULL);
    sc_session_fail(conn, "4.4.2", "conversation with %s timed out while %s", conn->desc, sc_stage_text(conn));
}


static void on_write(struct bufferevent *bev, void *arg)
{
    struct sc_conn *conn = arg;
    (void)bev;
    if (conn->state == S_BODY && conn->job) {
        conn->busy++;
        sc_body_feed(conn->job);
        conn->busy--;
        if (conn->zombie && !conn->busy)
            sc_conn_free_now(conn);
    }
}

static void tls_established(struct sc_conn *conn);

static void on_event(struct bufferevent *bev, short what, void *arg)
{
    struct sc_conn *conn = arg;
    int err = EVUTIL_SOCKET_ERROR();
    (void)bev;
    conn->busy++;
    if (what & BEV_EVENT_CONNECTED) {
        if (conn->state == S_CONNECTING) {
            conn->state = S_GREETING;
            clock_gettime(CLOCK_MONOTONIC, &conn->opened);
            sc_conn_arm(conn, conn->c->set.helo_timeout);
        } else if (conn->state == S_TLS_HANDSHAKE) {
            tls_established(conn);
        }
    } else if (what & (BEV_EVENT_EOF | BEV_EVENT_ERROR)) {
        if (conn->state == S_CONNECTING) {
            sc_session_fail(conn, "4.4.1", "connect to %s: %s", conn->relay, strerror(err ? err : ECONNREFUSED));
        } else if (conn->state == S_TLS_HANDSHAKE) {
            char reason[256] = "handshake failure";
            unsigned long e = bufferevent_get_openssl_error(conn->bev);
            if (e)
                ERR_error_string_n(e, reason, sizeof(reason));
            ERR_clear_error();
            count_handshake(conn->c, "failed", NULL);
            struct sc_job *a = conn->job;
            if (a && conn->c->set.tls_level == SMTP_TLS_MAY) {
                msg_info("%s: TLS handshake with %s failed (%s); retrying in plaintext", a->job->queue_id,
                         conn->relay, reason);
                sc_conn_close(conn);
                a->retry_plain = 1;
                sc_job_next(a);
            } else {
                sc_session_fail(conn, "4.7.5", "Cannot start TLS: handshake failure with %s: %s", conn->desc, reason);
            }
        } else if (conn->state == S_IDLE || conn->state == S_QUIT || (conn->state == S_RSET && !conn->job)) {
            sc_conn_close(conn);
        } else {
            sc_session_fail(conn, "4.4.2", "lost connection with %s while %s", conn->desc, sc_stage_text(conn));
        }
    }
    conn->busy--;
    if (conn->zombie && !conn->busy)
        sc_conn_free_now(conn);
}

/* ------------------------------------------------------------------ */
/* TLS */

/* The session cache key of a connection: the level, the server's name,
 * address and port (Postfix keys its client sessions much the same way),
 * so a session checked at one level is never resumed at a stricter one. */
static size_t session_key(const struct sc_conn *conn, char *out, size_t size)
{
    int n = snprintf(out, size, "%s&%s&%s&%u", smtp_tls_level_name(conn->c->set.tls_level), conn->addr.host,
                     conn->addr.addr, conn->addr.port);
    return n < 0 ? 0 : (size_t)n >= size ? size - 1 : (size_t)n;
}

/* OpenSSL hands over a session the server gave us (with TLS 1.3 after the
 * handshake, in a NewSessionTicket): keep it for the next connection. */
static int on_new_session(SSL *ssl, SSL_SESSION *sess)
{
    struct sc_conn *conn = SSL_get_app_data(ssl);
    if (conn == NULL || conn->c->scache == NULL)
        return 0;
    char key[700];
    size_t n = session_key(conn, key, sizeof(key));
    tls_scache_put(conn->c->scache, (const unsigned char *)key, n, sess);
    return 0;   /* we did not keep a reference */
}

void sc_client_tls_init(struct smtp_client *c)
{
    if (c->scache) {
        SSL_CTX_set_session_cache_mode(c->ssl, SSL_SESS_CACHE_CLIENT | SSL_SESS_CACHE_NO_INTERNAL_STORE);
        SSL_CTX_sess_set_new_cb(c->ssl, on_new_session);
    }
}

void sc_tls_start(struct sc_conn *conn)
{
    struct smtp_client *c = conn->c;
    struct sc_job *a = conn->job;
    SSL *ssl = SSL_new(c->ssl);
    if (ssl == NULL) {
        sc_session_fail(conn, "4.7.5", "Cannot start TLS: out of memory");
        return;
    }
    SSL_set_app_data(ssl, conn);
    int literal = conn->addr.family != AF_UNIX && strcmp(conn->addr.host, conn->addr.addr) == 0;
    if (!literal)
        SSL_set_tlsext_host_name(ssl, conn->addr.host);
    if (c->set.tls_level == SMTP_TLS_VERIFY || c->set.tls_level == SMTP_TLS_SECURE) {
        SSL_set_hostflags(ssl, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
        if (literal) {
            X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl), conn->addr.addr);
        } else {
            /* smtp_tls_verify_cert_match (hostname: the MX name) or
             * smtp_tls_secure_cert_match (nexthop, dot-nexthop: not the
             * DNS-supplied, hence forgeable, MX name) */
            const char *const *match = (const char *const *)(c->set.tls_level == SMTP_TLS_VERIFY ? c->verify_match : c->secure_match);
            int any = 0;
            for (; match && *match; match++) {
                char name[300];
                if (strcasecmp(*match, "hostname") == 0)
                    snprintf(name, sizeof(name), "%s", conn->addr.host);
                else if (strcasecmp(*match, "nexthop") == 0)
                    snprintf(name, sizeof(name), "%s", a->domain);
                else if (strcasecmp(*match, "dot-nexthop") == 0)
                    snprintf(name, sizeof(name), ".%s", a->domain);
                else
                    snprintf(name, sizeof(name), "%s", *match);
                (any++ ? SSL_add1_host : SSL_set1_host)(ssl, name);
            }
            if (!any)   /* nothing may match: never verified */
                SSL_set1_host(ssl, "invalid.");
        }
    }
    if (c->scache) {
        char key[700];
        size_t n = session_key(conn, key, sizeof(key));
        SSL_SESSION *sess = tls_scache_get(c->scache, (const unsigned char *)key, n);
        if (sess) {
            SSL_set_session(ssl, sess);
            SSL_SESSION_free(sess);
        }
    }
    /* Nothing may sit in the input buffer now: it would be plaintext the
     * server sent after 220 (a STARTTLS injection attempt). */
    evbuffer_drain(bufferevent_get_input(conn->bev), evbuffer_get_length(bufferevent_get_input(conn->bev)));
    struct bufferevent *tb = bufferevent_openssl_filter_new(c->base, conn->bev, ssl, BUFFEREVENT_SSL_CONNECTING,
                                                            BEV_OPT_CLOSE_ON_FREE);
    if (tb == NULL) {
        SSL_free(ssl);
        sc_session_fail(conn, "4.7.5", "Cannot start TLS: cannot create the TLS layer");
        return;
    }
    bufferevent_openssl_set_allow_dirty_shutdown(tb, 1);
    bufferevent_setwatermark(tb, EV_WRITE, SC_CHUNK, 0);
    conn->bev = tb;
    conn->state = S_TLS_HANDSHAKE;
    bufferevent_setcb(tb, sc_on_read, on_write, on_event, conn);
    bufferevent_enable(tb, EV_READ | EV_WRITE);
    sc_conn_arm(conn, c->set.starttls_timeout);
}

/* Level fingerprint: the certificate's or its public key's fingerprint is
 * one of smtp_tls_fingerprint_cert_match (Postfix 2.9 and later). */
static int fingerprint_matches(const struct smtp_client *c, X509 *peer)
{
    char fp[EVP_MAX_MD_SIZE * 3 + 1], pk[EVP_MAX_MD_SIZE * 3 + 1];
    tls_fingerprint(peer, c->fingerprint_digest, 0, fp, sizeof(fp));
    tls_fingerprint(peer, c->fingerprint_digest, 1, pk, sizeof(pk));
    for (size_t i = 0; i < c->nfingerprints; i++)
        if ((fp[0] && strcmp(c->fingerprints[i], fp) == 0) || (pk[0] && strcmp(c->fingerprints[i], pk) == 0))
            return 1;
    return 0;
}

/* petrel_smtp_tls_handshakes_total: result is ok, failed (no session) or
 * not_verified (a session whose certificate the level refuses); version is
 * OpenSSL's fixed name of the protocol ("TLSv1.3"), "none" without one. */
static void count_handshake(const struct smtp_client *c, const char *result, SSL *ssl)
{
    const char *labels[] = { c->set.metrics_transport ? c->set.metrics_transport : (c->set.lmtp ? "lmtp" : "smtp"),
                             result, ssl ? SSL_get_version(ssl) : "none" };
    core_metric_add(c->set.metrics, CM_SMTP_TLS_HANDSHAKES, labels, 1);
}

static void tls_established(struct sc_conn *conn)
{
    struct smtp_client *c = conn->c;
    SSL *ssl = bufferevent_openssl_get_ssl(conn->bev);
    enum smtp_tls_level lvl = c->set.tls_level;
    conn->tls = 1;
    X509 *peer = SSL_get1_peer_certificate(ssl);
    long v = SSL_get_verify_result(ssl);
    const char *trust = peer == NULL ? "Anonymous" : v == X509_V_OK ? "Trusted" : "Untrusted";
    if (lvl == SMTP_TLS_VERIFY || lvl == SMTP_TLS_SECURE) {
        if (peer == NULL || v != X509_V_OK) {
            X509_free(peer);
            conn->state = S_TLS_HANDSHAKE;
            count_handshake(c, "not_verified", ssl);
            sc_session_fail(conn, "4.7.5", "Server certificate not verified: %s: %s", conn->desc,
                            peer ? X509_verify_cert_error_string(v) : "no certificate");
            return;
        }
        trust = "Verified";
    } else if (lvl == SMTP_TLS_FINGERPRINT) {
        if (peer == NULL || !fingerprint_matches(c, peer)) {
            X509_free(peer);
            conn->state = S_TLS_HANDSHAKE;
            count_handshake(c, "not_verified", ssl);
            sc_session_fail(conn, "4.7.5", "Server certificate not verified: %s: %s", conn->desc,
                            peer ? "no fingerprint match" : "no certificate");
            return;
        }
        trust = "Verified";
    }
    X509_free(peer);
    count_handshake(c, "ok", ssl);
    if (c->set.tls_loglevel >= 2 && SSL_session_reused(ssl))
        msg_info("%s: Reusing old session", conn->relay);
    if (c->set.tls_loglevel >= 1) {
        char how[300];
        tls_describe(ssl, how, sizeof(how));
        msg_info("%s TLS connection established to %s: %s", trust, conn->relay, how);
    }
    sc_conn_send_ehlo(conn);
}

/* ------------------------------------------------------------------ */
/* connecting */

void sc_conn_open(struct sc_job *a, const struct sc_addr *addr, int no_tls)
{
    struct smtp_client *c = a->c;
    struct sc_conn *conn = xcalloc(1, sizeof(*conn));
    conn->c = c;
    conn->addr = *addr;
    conn->no_tls = no_tls;
    conn->key = xstrdup(a->job->nexthop);
    conn->timer = evtimer_new(c->base, conn_timeout, conn);
    conn->next = c->conns;
    if (c->conns)
        c->conns->prev = conn;
    c->conns = conn;
    conn->job = a;
    a->conn = conn;
    conn->state = S_CONNECTING;
    if (addr->family == AF_UNIX) {
        snprintf(conn->desc, sizeof(conn->desc), "%s[%s]", addr->host, addr->addr);
        snprintf(conn->relay, sizeof(conn->relay), "%s[%s]", addr->host, addr->addr);
    } else {
        snprintf(conn->desc, sizeof(conn->desc), "%s[%s]", addr->host, addr->addr);
        snprintf(conn->relay, sizeof(conn->relay), "%s[%s]:%u", addr->host, addr->addr, addr->port);
    }
    c->stats.connections++;

    struct sockaddr_storage ss;
    socklen_t sl = 0;
    memset(&ss, 0, sizeof(ss));
    if (addr->family == AF_UNIX) {
        struct sockaddr_un *su = (struct sockaddr_un *)&ss;
        su->sun_family = AF_UNIX;
        size_t pl = strnlen(addr->addr, sizeof(su->sun_path) - 1);   /* checked in parse_nexthop */
        memcpy(su->sun_path, addr->addr, pl);
        sl = sizeof(*su);
    } else if (addr->family == AF_INET) {
        struct sockaddr_in *s4 = (struct sockaddr_in *)&ss;
        s4->sin_family = AF_INET;
        s4->sin_port = htons((unsigned short)addr->port);
        inet_pton(AF_INET, addr->addr, &s4->sin_addr);
        sl = sizeof(*s4);
    } else {
        struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&ss;
        s6->sin6_family = AF_INET6;
        s6->sin6_port = htons((unsigned short)addr->port);
        inet_pton(AF_INET6, addr->addr, &s6->sin6_addr);
        sl = sizeof(*s6);
    }
    int fd = socket(addr->family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    int err = 0;
    if (fd >= 0 && addr->family != AF_UNIX) {
        /* Commands and the body's last segment must not wait for the peer's
         * delayed ACK (Nagle): that cost ~40 ms per message. */
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    }
    if (fd < 0)
        err = errno;
    /* smtp_bind_address / smtp_bind_address6: the source address of this
     * family (Postfix's smtp_connect_addr). A failed bind is a warning, and
     * the connection goes out from the kernel's choice, unless
     * smtp_bind_address_enforce says to defer. */
    const struct sockaddr_storage *bind_to = addr->family == AF_INET ? &c->bind4
                                          : addr->family == AF_INET6 ? &c->bind6 : NULL;
    socklen_t bind_len = addr->family == AF_INET ? c->bind4_len : addr->family == AF_INET6 ? c->bind6_len : 0;
    if (!err && bind_len && bind(fd, (const struct sockaddr *)bind_to, bind_len) < 0) {
        int e = errno;
        const char *text = addr->family == AF_INET ? c->bind4_text : c->bind6_text;
        msg_warn("%s: bind %s: %s", a->job->queue_id, text, strerror(e));
        if (c->set.bind_enforce) {
            close(fd);
            sc_pending_set(a, DLV_DEFERRED, "4.4.0", conn->relay, "server configuration error");
            msg_info("%s: cannot bind %s_%s %s: %s", a->job->queue_id, c->prefix,
                     addr->family == AF_INET ? "bind_address" : "bind_address6", text, strerror(e));
            sc_conn_close(conn);
            sc_job_next(a);
            return;
        }
    }
    if (!err && connect(fd, (struct sockaddr *)&ss, sl) < 0 && errno != EINPROGRESS)
        err = errno;
    if (err) {
        if (fd >= 0)
            close(fd);
        const char *where = addr->family == AF_UNIX ? addr->addr : conn->relay;
        sc_pending_set(a, DLV_DEFERRED, "4.4.1", conn->relay, "connect to %s: %s", where, strerror(err));
        msg_info("%s: connect to %s: %s", a->job->queue_id, where, strerror(err));
        sc_conn_close(conn);
        sc_job_next(a);
        return;
    }
    conn->bev = bufferevent_socket_new(c->base, fd, BEV_OPT_CLOSE_ON_FREE);
    bufferevent_setcb(conn->bev, sc_on_read, on_write, on_event, conn);
    bufferevent_setwatermark(conn->bev, EV_WRITE, SC_CHUNK, 0);
    bufferevent_enable(conn->bev, EV_READ | EV_WRITE);
    sc_conn_arm(conn, c->set.connect_timeout);
    /* NULL address: the socket is already connecting; libevent reports
     * BEV_EVENT_CONNECTED or the error from SO_ERROR */
    bufferevent_socket_connect(conn->bev, NULL, 0);
}

/* A parked (or RSET-pending) connection for this next hop, if any. */
struct sc_conn *sc_cache_take(struct smtp_client *c, const char *key)
{
    for (struct sc_conn *conn = c->conns; conn; conn = conn->next)
        if (conn->job == NULL && !conn->zombie && conn->bev && (conn->state == S_IDLE || conn->state == S_RSET)
            && strcmp(conn->key, key) == 0)
            return conn;
    return NULL;
}
