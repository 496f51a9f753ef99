/*
 * The start of an SMTP session, from the accepted connection to the
 * greeting: the client's addresses (from the socket, a PROXY header, or
 * postscreen, which screened the client first; a local submission from
 * the pickup role has none and is trusted as mynetworks is), implicit TLS
 * (smtpd_tls_wrappermode), the lookup of the client's name, the
 * per-client connection limits (anvil), the client restrictions when
 * smtpd_delay_reject is off, the modules' connect hooks, and the 220
 * greeting, or the refusal that replaces it.
 *
 * Nothing the client sends is read before its name is known; what it sent
 * before our greeting is a protocol error under
 * smtpd_forbid_unauth_pipelining. Once greeted, the session belongs to the
 * input loop in session.c, which also owns the session's memory
 * (smtpd_session_new, smtpd_session_free).
 */
#include "config.h"

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
#include <arpa/inet.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>

#include "lib/log.h"
#include "lib/xalloc.h"
#include "module/metrics_core.h"
#include "smtpd/anvil.h"
#include "smtpd/haproxy_read.h"
#include "smtpd/restrict.h"
#include "smtpd/smtpd_int.h"
#include "mail/namadr.h"
#include "tables/cidr.h"
#include "tables/table.h"

static int addr_to_text(const struct sockaddr *sa, char *addr, size_t asize, char *port, size_t psize)
{
    if (sa->sa_family == AF_INET) {
        const struct sockaddr_in *in = (const struct sockaddr_in *)sa;
        inet_ntop(AF_INET, &in->sin_addr, addr, (socklen_t)asize);
        snprintf(port, psize, "%u", ntohs(in->sin_port));
        return 0;
    }
    if (sa->sa_family == AF_INET6) {
        const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)sa;
        if (IN6_IS_ADDR_V4MAPPED(&in6->sin6_addr)) {
            inet_ntop(AF_INET, &in6->sin6_addr.s6_addr[12], addr, (socklen_t)asize);
        } else {
            inet_ntop(AF_INET6, &in6->sin6_addr, addr, (socklen_t)asize);
        }
        snprintf(port, psize, "%u", ntohs(in6->sin6_port));
        return 0;
    }
    snprintf(addr, asize, "unknown");
    snprintf(port, psize, "0");
    return -1;
}

static void send_greeting(struct smtpd_session *s);
static void greeting_checked(struct smtpd_session *s, const struct restrict_result *r);
static void connect_hooked(struct smtpd_session *s, const struct restrict_result *r);
static void peer_known(struct smtpd_session *s);

static void ehlo_discard_answered(void *arg);

/* smtpd_discard_ehlo_keyword_address_maps (or smtpd_discard_ehlo_keywords)
 * for this client, in a lookup scope of the session's own: a remote table
 * that has no answer yet is fetched, and the session waits (the greeting
 * is held until then, as Postfix decides at connect, before greeting). A
 * table that cannot answer makes EHLO answer 421 4.3.0, as in Postfix. */
static void ehlo_discard_decide(struct smtpd_session *s)
{
    struct tbl_registry *reg = s->worker->tables;
    for (;;) {
        if (s->ehlo_lookups == NULL)
            s->ehlo_lookups = tbl_scope_new();
        tbl_scope_enter(reg, s->ehlo_lookups);
        int rc = smtpd_ehlo_discard_mask(s, &s->ehlo_discard);
        tbl_scope_leave(reg);
        if (rc != 0 && tbl_scope_missing(s->ehlo_lookups)) {
            if (tbl_scope_fetch(s->ehlo_lookups, ehlo_discard_answered, s)) {
                s->ehlo_discard_waiting = 1;
                return;
            }
            continue;   /* answered at once */
        }
        if (rc != 0) {
            msg_warn("%s lookup error for %s", "smtpd_discard_ehlo_keyword_address_maps", s->addr);
            s->ehlo_discard = 0;
            s->ehlo_discard_error = 1;
        }
        tbl_scope_free(s->ehlo_lookups);
        s->ehlo_lookups = NULL;
        s->ehlo_discard_waiting = 0;
        return;
    }
}

/* The session goes on when both the client's name and what EHLO discards
 * are known. */
static void peer_name_found(struct smtpd_session *s)
{
    s->peer_name_known = 1;
    if (s->ehlo_discard_waiting) {
        s->state = SMTPD_WAIT;
        return;   /* ehlo_discard_answered() goes on */
    }
    peer_known(s);
}

static void ehlo_discard_answered(void *arg)
{
    struct smtpd_session *s = arg;
    ehlo_discard_decide(s);
    if (!s->ehlo_discard_waiting && s->peer_name_known)
        peer_known(s);
}

/* Our end of a connection: the listening socket's address when it is bound
 * to one (every connection has it: one getsockname per listener, not per
 * connection), otherwise the connection's own. */
static void server_end(struct smtpd_session *s, int fd)
{
    struct smtpd_listener *l = s->listener;
    struct sockaddr_storage ours;
    socklen_t ours_len = sizeof(ours);
    if (l && l->local_fixed == 0) {
        l->local_fixed = -1;
        if (getsockname(l->fd, (struct sockaddr *)&ours, &ours_len) == 0) {
            const struct sockaddr_in *in = (const struct sockaddr_in *)&ours;
            const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)&ours;
            int specific = (ours.ss_family == AF_INET && in->sin_addr.s_addr != htonl(INADDR_ANY))
                        || (ours.ss_family == AF_INET6 && !IN6_IS_ADDR_UNSPECIFIED(&in6->sin6_addr));
            if (specific && addr_to_text((struct sockaddr *)&ours, l->local_addr, sizeof(l->local_addr),
                                         l->local_port, sizeof(l->local_port)) == 0)
                l->local_fixed = 1;
        }
    }
    if (l && l->local_fixed == 1) {
        snprintf(s->server_addr, sizeof(s->server_addr), "%s", l->local_addr);
        snprintf(s->server_port, sizeof(s->server_port), "%s", l->local_port);
        return;
    }
    ours_len = sizeof(ours);
    if (getsockname(fd, (struct sockaddr *)&ours, &ours_len) == 0)
        addr_to_text((struct sockaddr *)&ours, s->server_addr, sizeof(s->server_addr), s->server_port,
                     sizeof(s->server_port));
}

/* No Nagle delay on a client's connection: the replies go out whole. The
 * master sets TCP_NODELAY on the listening sockets and accepted sockets
 * inherit it; the first connection of each listener says whether they did
 * here (a getsockopt), and only if not is it set per connection. */
static void no_delay(struct smtpd_session *s, int fd)
{
    struct smtpd_listener *l = s->listener;
    int one = 1;
    if (l && l->nodelay == 0) {
        int on = 0;
        socklen_t len = sizeof(on);
        l->nodelay = getsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &on, &len) == 0 && on ? 1 : -1;
    }
    if (l == NULL || l->nodelay < 0)
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
}

/* The session starts: a network client at addr (from the socket, a PROXY
 * header or postscreen) talking to server_addr (NULL: the socket's own
 * address), or a local submission from the pickup role (local, with the
 * maildrop file owner's uid). */
static void session_begin(struct smtpd_session *s, const char *addr, const char *port, const char *server_addr,
                          const char *server_port, int local, long uid)
{
    struct smtpd_worker *w = s->worker;
    const struct smtpd_settings *set = s->set;
    int fd = s->fd;
    petrel_pool *pool = s->pool;
    s->state = SMTPD_CMD;
    if (local) {
        /* A maildrop file (petrel-sendmail): a user of this host, known by
         * the uid that owns the file; trusted as mynetworks is. */
        snprintf(s->addr, sizeof(s->addr), "127.0.0.1");
        snprintf(s->port, sizeof(s->port), "0");
        snprintf(s->server_addr, sizeof(s->server_addr), "127.0.0.1");
        snprintf(s->server_port, sizeof(s->server_port), "0");
        s->name = s->reverse_name = "localhost";
        s->name_status = s->reverse_name_status = SMTPD_PEER_OK;
        s->local_submission = 1;
        s->local_uid = uid;
    } else {
        const char *labels[] = { set->service_name };
        core_metric_add(w->metrics, CM_SMTPD_CONNECTIONS, labels, 1);
        snprintf(s->addr, sizeof(s->addr), "%s", addr);
        snprintf(s->port, sizeof(s->port), "%s", port);
        if (server_addr) {
            snprintf(s->server_addr, sizeof(s->server_addr), "%s", server_addr);
            snprintf(s->server_port, sizeof(s->server_port), "%s", server_port);
        } else {
            server_end(s, fd);
        }
    }
    s->namaddr = petrel_pool_printf(pool, "%s[%s]", s->name, s->addr);
    /* what EHLO will not announce (Postfix decides it at connect, from
     * the client's address: the proxied one behind a PROXY header); a
     * remote table answers while the client's name is looked up */
    ehlo_discard_decide(s);

    if (!s->local_submission)
        no_delay(s, fd);

    if (set->tls_wrappermode) {
        if (set->tls_ctx == NULL) {
            msg_warn("%s: smtpd_tls_wrappermode requires a certificate; closing %s",
                     set->service_name, s->namaddr);
            close(fd);
            s->fd = -1;
            smtpd_session_free(s);
            return;
        }
        if (smtpd_rate_starttls(s, 1) != 0 || smtpd_tls_start(s, 1) != 0) {
            if (s->bev == NULL) {
                close(fd);
                s->fd = -1;
            }
            smtpd_session_free(s);
            return;
        }
    } else {
        s->bev = bufferevent_socket_new(w->base, fd, BEV_OPT_CLOSE_ON_FREE);
    }
    smtpd_session_attach(s);
    smtpd_io_enable(s);
    if (s->local_submission) {
        peer_name_found(s);
        return;
    }
    /* Nothing the client sends is looked at until its name is known (a
     * client that leaves meanwhile ends the lookup). */
    s->state = SMTPD_WAIT;
    smtpd_peer_lookup(s, peer_name_found);
}

/* The client's name is known (or known to be unknown): log the connection,
 * apply the per-client limits, then the client restrictions and the
 * modules' connect hooks before the greeting. */
static void peer_known(struct smtpd_session *s)
{
    const struct smtpd_settings *set = s->set;
    struct smtpd_worker *w = s->worker;
    s->state = SMTPD_CMD;
    s->namaddr = petrel_pool_printf(s->pool, "%s[%s]", s->name, s->addr);
    /* Like Postfix's pickup, a local submission logs no connect line: its
     * "ID: uid=N from=<...>" line says who sent it. */
    if (!s->local_submission)
        msg_info("connect from %s", s->namaddr);
    /* The client lists match the verified name too (mail/namadr.h), so
     * they are decided here, before anything the client sent is read. A
     * table that fails: permit_mynetworks answers 451 (-1 is kept), the
     * others do as Postfix does with an error (not listed). */
    s->in_mynetworks = s->local_submission ? 1 : namadr_list_match(set->mynetworks, s->name, s->addr);
    s->debug = namadr_list_match(set->debug_peers, s->name, s->addr) > 0;
    s->bare_lf_excluded = namadr_list_match(set->bare_lf_exclusions, s->name, s->addr) > 0;

    /* Per-client limits (Postfix's anvil), per service as in Postfix: count
     * first, then decide. The service's own limit (maxproc) was applied
     * before the accept: a client never gets here while the service is full.
     * The pickup role submits one file at a time and has no anvil. */
    time_t now = time(NULL);
    unsigned concurrent = 0, rate = 0;
    if (!s->local_submission && namadr_list_match(set->conn_limit_exceptions, s->name, s->addr) <= 0) {
        const char *key = petrel_pool_printf(s->pool, "client:%s:%s", set->service_name, s->addr);
        if (anvil_connect(w->anvil, w->index, key, now, set->rate_time_unit, &concurrent, &rate) == 0) {
            s->client_key = key;
            s->conn_count = concurrent;
            if (set->conn_count_limit && concurrent > set->conn_count_limit) {
                msg_warn("Connection concurrency limit exceeded: %u from %s for service %s",
                         concurrent, s->namaddr, set->service_name);
                smtpd_session_shutdown(s, petrel_pool_printf(s->pool,
                    "421 4.7.0 %s Error: too many connections from %s", set->myhostname, s->addr));
                return;
            }
            if (set->conn_rate_limit && rate > set->conn_rate_limit) {
                msg_warn("Connection rate limit exceeded: %u from %s for service %s",
                         rate, s->namaddr, set->service_name);
                smtpd_session_shutdown(s, petrel_pool_printf(s->pool,
                    "421 4.7.0 %s Error: too many connections from %s", set->myhostname, s->addr));
                return;
            }
        } else {
            msg_warn("connection accounting table full: not limiting %s", s->namaddr);
        }
    }

    if (!set->delay_reject && !restrict_list_empty(set->client_restrictions)) {
        static const enum restrict_stage stages[] = { RS_CLIENT };
        s->state = SMTPD_WAIT;
        restrict_check(s, stages, 1, NULL, greeting_checked);
        return;
    }
    smtpd_hooks_then(s, PHASE_CONNECT, NULL, connect_hooked);
}

/* smtpd_upstream_proxy_protocol = haproxy: the client's addresses arrive
 * in the PROXY header. Without them we cannot tell what rights the peer
 * has, so a failure hangs up, as Postfix's smtpd does. */
static void proxy_read_done(void *arg, int status, const struct haproxy_endpoints *ep, const char *why)
{
    struct smtpd_session *s = arg;
    s->proxy = NULL;
    if (status == 0 && !ep->local) {
        session_begin(s, ep->client_addr, ep->client_port, ep->server_addr, ep->server_port, 0, -1);
        return;
    }
    if (status == 0) {
        /* A LOCAL header (a health check): the connection's own addresses. */
        struct sockaddr_storage ss;
        socklen_t len = sizeof(ss);
        char addr[64], port[8];
        if (getpeername(s->fd, (struct sockaddr *)&ss, &len) == 0 &&
            addr_to_text((struct sockaddr *)&ss, addr, sizeof(addr), port, sizeof(port)) == 0) {
            session_begin(s, addr, port, NULL, NULL, 0, -1);
            return;
        }
        why = "cannot find the connection's own address";
    }
    msg_warn("haproxy read: %s", why);
    msg_info("connect from %s", s->namaddr);
    char reply[300];
    int n = snprintf(reply, sizeof(reply), "421 4.3.0 %s Server local error\r\n", s->set->myhostname);
    (void)!send(s->fd, reply, (size_t)n, MSG_DONTWAIT | MSG_NOSIGNAL);
    msg_info("disconnect from %s commands=0/0", s->namaddr);
    smtpd_session_free(s);
}

void smtpd_accept(struct smtpd_listener *l, const struct smtpd_settings *set, int fd, const struct sockaddr *sa,
                  int salen, int counted_in_service)
{
    struct smtpd_session *s = smtpd_session_new(l, set, fd, counted_in_service);
    if (set->upstream_proxy) {
        s->state = SMTPD_WAIT;
        s->proxy = smtpd_proxy_read_start(l->worker->base, fd, set->proxy_families, &set->upstream_proxy_timeout,
                                          "timeout error", proxy_read_done, s);
        if (s->proxy == NULL) {
            msg_warn("haproxy read: cannot watch the connection");
            smtpd_session_free(s);
        }
        return;
    }
    char addr[64], port[8];
    addr_to_text(sa, addr, sizeof(addr), port, sizeof(port));
    session_begin(s, addr, port, NULL, NULL, 0, -1);
}

void smtpd_accept_screened(struct smtpd_listener *l, const struct smtpd_settings *set, int fd,
                           const char *client_addr, const char *client_port, const char *server_addr,
                           const char *server_port, int counted_in_service)
{
    struct smtpd_session *s = smtpd_session_new(l, set, fd, counted_in_service);
    session_begin(s, client_addr, client_port, server_addr, server_port, 0, -1);
}

void smtpd_accept_local(struct smtpd_listener *l, int fd, long uid)
{
    struct smtpd_session *s = smtpd_session_new(l, l->settings, fd, 0);
    session_begin(s, NULL, NULL, NULL, NULL, 1, uid);
}

static void greeting_checked(struct smtpd_session *s, const struct restrict_result *r)
{
    s->state = SMTPD_CMD;
    if (r->verdict == RV_REJECT || r->verdict == RV_DEFER) {
        /* Postfix answers the greeting normally and then rejects every
         * command; a reject at connect time is easier on clients as 554. */
        smtpd_log_reject(s, "reject", "CONNECT", r->restriction, r->code, r->enhanced, r->text, NULL);
        smtpd_reply_refusal(s, r->code == 554 || r->code >= 500 ? 554 : 421, r->enhanced, r->text);
        s->last_command = "CONNECT";
        smtpd_session_close_after_flush(s);
        return;
    }
    smtpd_hooks_then(s, PHASE_CONNECT, NULL, connect_hooked);
}

static void connect_hooked(struct smtpd_session *s, const struct restrict_result *r)
{
    s->state = SMTPD_CMD;
    if (smtpd_refused(r) && r->verdict != RV_REJECT) {
        smtpd_log_reject(s, "reject", "CONNECT", r->restriction, r->code, r->enhanced, r->text, NULL);
        smtpd_reply_refusal(s, 421, r->enhanced, r->text);
        s->last_command = "CONNECT";
        smtpd_session_close_after_flush(s);
        return;
    }
    if (smtpd_refused(r)) {
        /* As Postfix does with a milter's reject at connect: the greeting
         * says no, the session stays, and every command but QUIT, NOOP and
         * RSET gets the module's reply (smtpd_handle_command); the error
         * limits end a client that keeps trying. */
        smtpd_log_reject(s, "reject", "CONNECT", r->restriction, r->code, r->enhanced, r->text, NULL);
        s->connect_refusal = petrel_pool_strdup(s->pool, smtpd_reply_format(s, r->code, r->enhanced, r->text));
        smtpd_reply(s, "554 %s ESMTP not accepting connections", s->set->myhostname);
        s->greeted = 1;
        s->errors++;
        smtpd_continue(s);
        return;
    }
    send_greeting(s);
    if (s->tls_hooks_pending && s->state == SMTPD_CMD) {
        s->tls_hooks_pending = 0;
        smtpd_hooks_then(s, PHASE_STARTTLS, NULL, smtpd_starttls_hooked);
        return;
    }
    smtpd_continue(s);
}

static void send_greeting(struct smtpd_session *s)
{
    /* A client that talks before our greeting is a spambot or a smuggler
     * (smtpd_forbid_unauth_pipelining). */
    if (s->set->forbid_unauth_pipelining && !s->set->tls_wrappermode) {
        char peek;
        ssize_t n = recv(s->fd, &peek, 1, MSG_PEEK | MSG_DONTWAIT);
        /* What arrived while the client's name was looked up is already
         * in the input buffer. */
        if (n > 0 || evbuffer_get_length(bufferevent_get_input(s->bev)) > 0) {
            msg_info("improper command pipelining before greeting from %s", s->namaddr);
            smtpd_reply(s, "554 5.5.0 Error: SMTP protocol synchronization");
            s->last_command = "CONNECT";
            smtpd_session_close_after_flush(s);
            return;
        }
    }
    smtpd_reply(s, "220 %s", s->set->banner);
    s->greeted = 1;
}
