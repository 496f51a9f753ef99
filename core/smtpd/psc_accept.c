/*
 * postscreen's first steps for a new connection (postscreen.c has the
 * whole order): its endpoints, from the socket or a PROXY header; the
 * CONNECT line and the per-client and post-queue limits; the permanent
 * list (postscreen_access_list, whose remote tables the session waits for
 * in a lookup scope of its own); the temporary allowlist; then the tests
 * that are due (psc_early_tests) or the hand-off to smtpd.
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

/* ------------------------------------------------------------------ */
/* a new connection                                                    */

/* ACL_PENDING: a remote table has no answer yet (the walk runs in the
 * session's lookup scope and is run again when the answer is in). */
enum acl_verdict { ACL_DUNNO, ACL_PERMIT, ACL_REJECT, ACL_ERROR, ACL_PENDING };

/* One access-list word, or the words of a table's value (no tables there). */
static enum acl_verdict acl_word(const struct psc_session *s, const char *word, const char *origin, int *matched)
{
    *matched = 1;
    if (strcasecmp(word, "permit") == 0)
        return ACL_PERMIT;
    if (strcasecmp(word, "reject") == 0)
        return ACL_REJECT;
    if (strcasecmp(word, "dunno") == 0)
        return ACL_DUNNO;
    if (strcasecmp(word, "permit_mynetworks") == 0) {
        *matched = namadr_list_match(s->ps->mynetworks, NULL, s->client_addr);
        if (*matched < 0) {
            psc_warn("%s: mynetworks lookup error -- ignoring the remainder of this access list", origin);
            return ACL_ERROR;
        }
        return *matched ? ACL_PERMIT : ACL_DUNNO;
    }
    psc_warn("%s: unknown command: %s -- ignoring the remainder of this access list", origin, word);
    return ACL_ERROR;
}

static enum acl_verdict acl_eval(const struct psc_session *s)
{
    const struct psc_settings *ps = s->ps;
    for (size_t i = 0; i < ps->nacl; i++) {
        const struct psc_acl_item *a = &ps->acl[i];
        switch (a->kind) {
        case PSC_ACL_PERMIT: return ACL_PERMIT;
        case PSC_ACL_REJECT: return ACL_REJECT;
        case PSC_ACL_DUNNO: return ACL_DUNNO;
        case PSC_ACL_MYNETWORKS:
            switch (namadr_list_match(ps->mynetworks, NULL, s->client_addr)) {
            case 1: return ACL_PERMIT;
            case 0: break;
            default:
                psc_warn("postscreen_access_list: mynetworks lookup error -- ignoring the remainder of this "
                         "access list");
                return ACL_ERROR;
            }
            break;
        case PSC_ACL_TABLE: {
            const char *value = NULL;
            int rc = tbl_lookup(a->table, s->client_addr, &value);
            if (rc == TBL_PENDING)
                return ACL_PENDING;
            if (rc == TBL_ERROR) {
                psc_warn("postscreen_access_list: %s: table lookup error -- ignoring the remainder of this "
                         "access list", a->spec);
                return ACL_ERROR;
            }
            if (rc != TBL_FOUND)
                break;
            /* The value is a list of the same words; a table there is refused. */
            char copy[1024];
            snprintf(copy, sizeof(copy), "%s", value);
            char *save = NULL;
            for (char *w = strtok_r(copy, ", \t", &save); w; w = strtok_r(NULL, ", \t", &save)) {
                if (strchr(w, ':')) {
                    psc_warn("table %s: lookup result \"%s\" is not allowed -- ignoring remainder of access list",
                             a->spec, w);
                    break;
                }
                int matched;
                enum acl_verdict v = acl_word(s, w, a->spec, &matched);
                if (v == ACL_ERROR)
                    return ACL_ERROR;
                if (matched && v != ACL_DUNNO)
                    return v;
                if (matched && v == ACL_DUNNO)
                    break;
            }
            break;
        }
        }
    }
    return ACL_DUNNO;
}

static void acl_decide(struct psc_session *s);
static void acl_decided(struct psc_session *s, enum acl_verdict verdict);

static void connect_done(struct psc_session *s)
{
    struct smtpd_listener *l = s->listener;
    struct smtpd_worker *w = l->worker;
    const struct psc_settings *ps = s->ps;
    time_t now = time(NULL);
    psc_log("CONNECT from [%s]:%s to [%s]:%s", s->client_addr, s->client_port, s->server_addr, s->server_port);

    unsigned screening = 0, concurrency = 0, rate = 0;
    const char *key = petrel_pool_printf(s->pool, "%s", l->screen_key);
    if (anvil_connect(w->anvil, w->index, key, now, 0, &screening, &rate) == 0)
        s->screen_key = key;
    s->screening_at_connect = screening;
    if (s->screen_key)
        psc_stress_update(s);
    key = petrel_pool_printf(s->pool, "client:%s:%s", ps->service_name, s->client_addr);
    if (anvil_connect(w->anvil, w->index, key, now, 0, &concurrency, &rate) == 0)
        s->client_key = key;
    else
        psc_warn("connection accounting table full: not limiting [%s]:%s", s->client_addr, s->client_port);

    if (ps->client_connection_count_limit > 0 && (int)concurrency > ps->client_connection_count_limit) {
        psc_log("NOQUEUE: reject: CONNECT from [%s]:%s: too many connections", s->client_addr, s->client_port);
        psc_drop(s, "421 4.7.0 Error: too many connections\r\n");
        return;
    }
    if (ps->post_queue_limit > 0 && (int)anvil_concurrent(w->anvil, l->post_key) >= ps->post_queue_limit) {
        psc_log("NOQUEUE: reject: CONNECT from [%s]:%s: all server ports busy", s->client_addr, s->client_port);
        psc_drop(s, "421 4.3.2 All server ports are busy\r\n");
        return;
    }

    acl_decide(s);
}

static void acl_answered(void *arg);

/* postscreen_access_list for this client. Local tables answer at once; a
 * remote one (pgsql:, socketmap:, ...) is asked from the session's own
 * lookup scope, and this client waits for the answer (nothing of its
 * screening starts before the verdict, as in Postfix, where the list is
 * evaluated before anything else), while every other connection of the
 * worker goes on. A table that cannot answer is Postfix's lookup error:
 * warned about, and the rest of the list is ignored (the client is
 * screened as with "dunno"). */
static void acl_decide(struct psc_session *s)
{
    struct tbl_registry *reg = s->listener->worker->tables;
    if (!s->ps->acl_remote) {
        acl_decided(s, acl_eval(s));
        return;
    }
    for (;;) {
        if (s->acl_lookups == NULL)
            s->acl_lookups = tbl_scope_new();
        tbl_scope_enter(reg, s->acl_lookups);
        enum acl_verdict v = acl_eval(s);
        tbl_scope_leave(reg);
        if (v == ACL_PENDING && tbl_scope_missing(s->acl_lookups)) {
            if (tbl_scope_fetch(s->acl_lookups, acl_answered, s))
                return;   /* acl_answered() goes on */
            continue;     /* answered at once */
        }
        tbl_scope_free(s->acl_lookups);
        s->acl_lookups = NULL;
        acl_decided(s, v == ACL_PENDING ? ACL_ERROR : v);
        return;
    }
}

static void acl_answered(void *arg)
{
    acl_decide(arg);
}

/* The permanent list has spoken: then the temporary allowlist, and the
 * tests that are due. */
static void acl_decided(struct psc_session *s, enum acl_verdict verdict)
{
    struct smtpd_listener *l = s->listener;
    const struct psc_settings *ps = s->ps;
    time_t now = time(NULL);
    switch (verdict) {
    case ACL_REJECT:
        psc_log("%sLISTED [%s]:%s", ps->respectful_logging ? "DENY" : "BLACK", s->client_addr, s->client_port);
        s->flags |= PSC_F_DENY_FAIL;
        switch (ps->denylist_action) {
        case PSC_ACT_DROP:
            psc_drop(s, "521 5.3.2 Service currently unavailable\r\n");
            return;
        case PSC_ACT_ENFORCE:
            s->rcpt_reply = "550 5.3.2 Service currently unavailable\r\n";
            s->flags |= PSC_F_NOFORWARD;
            break;
        default:
            s->flags &= ~PSC_F_DENY_FAIL;   /* tested again next time */
            break;
        }
        break;
    case ACL_PERMIT:
        psc_log("%sLISTED [%s]:%s", ps->respectful_logging ? "ALLOW" : "WHITE", s->client_addr, s->client_port);
        psc_conclude(s);
        return;
    default:
        break;
    }

    /* The temporary allowlist. */
    char stamps[256];
    unsigned saved = s->flags;
    if ((s->flags & PSC_MASK_ANY_FAIL) == 0 && l->psc_cache &&
        psc_cache_lookup(l->psc_cache, s->client_addr, stamps, sizeof(stamps)) == 1) {
        psc_parse_tests(s, stamps, now);
        s->flags |= saved;
        if ((s->flags & (PSC_MASK_ANY_TODO | PSC_MASK_ANY_FAIL)) == 0) {
            psc_log("PASS OLD [%s]:%s", s->client_addr, s->client_port);
            psc_conclude(s);
            return;
        }
    } else {
        psc_new_tests(s);
        s->flags |= saved;
    }

    /* Clients of a backup MX address are not allowlisted. */
    if (!psc_interfaces_allow(ps->allowlist_interfaces, ps->nallowlist_interfaces, s->server_addr)) {
        s->flags |= PSC_F_ALLOW_FAIL | PSC_F_NOFORWARD;
        psc_log("%sLIST VETO [%s]:%s", ps->respectful_logging ? "ALLOW" : "WHITE", s->client_addr, s->client_port);
    }

    if (ps->pre_queue_limit > 0 && (int)s->screening_at_connect >= ps->pre_queue_limit) {
        psc_log("reject: connect from [%s]:%s: all screening ports busy", s->client_addr, s->client_port);
        psc_drop(s, "421 4.3.2 All screening ports are busy\r\n");
        return;
    }

    if (s->flags & PSC_MASK_EARLY(PSC_K_TODO))
        psc_early_tests(s);
    else if (s->flags & (PSC_MASK_SMTPD(PSC_K_TODO) | PSC_F_NOFORWARD))
        psc_smtpd_tests(s);
    else
        psc_conclude(s);
}

static int endpoint_text(const struct sockaddr_storage *ss, char *addr, size_t asize, char *port, size_t psize)
{
    if (ss->ss_family == AF_INET) {
        const struct sockaddr_in *in = (const struct sockaddr_in *)ss;
        inet_ntop(AF_INET, &in->sin_addr, addr, (socklen_t)asize);
        snprintf(port, psize, "%u", ntohs(in->sin_port));
        return 0;
    }
    if (ss->ss_family == AF_INET6) {
        const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)ss;
        if (IN6_IS_ADDR_V4MAPPED(&in6->sin6_addr))
            inet_ntop(AF_INET, &in6->sin6_addr.s6_addr[12], addr, (socklen_t)asize);
        else
            inet_ntop(AF_INET6, &in6->sin6_addr, addr, (socklen_t)asize);
        snprintf(port, psize, "%u", ntohs(in6->sin6_port));
        return 0;
    }
    return -1;
}

/* The socket's own endpoints (no proxy, or a proxy health check). */
static int local_endpoints(struct psc_session *s)
{
    struct sockaddr_storage ss;
    socklen_t len = sizeof(ss);
    if (getpeername(s->fd, (struct sockaddr *)&ss, &len) != 0) {
        psc_warn("getpeername: %s -- dropping this connection", strerror(errno));
        return -1;
    }
    if (endpoint_text(&ss, s->client_addr, sizeof(s->client_addr), s->client_port, sizeof(s->client_port)) != 0) {
        psc_warn("cannot convert client address/port to string -- dropping this connection");
        return -1;
    }
    len = sizeof(ss);
    if (getsockname(s->fd, (struct sockaddr *)&ss, &len) != 0 ||
        endpoint_text(&ss, s->server_addr, sizeof(s->server_addr), s->server_port, sizeof(s->server_port)) != 0) {
        psc_warn("getsockname: %s -- dropping this connection", strerror(errno));
        return -1;
    }
    return 0;
}

/* Without its endpoints a connection cannot be screened or logged. */
static void endpoint_failed(struct psc_session *s)
{
    static const char reply[] = "421 4.3.2 No system resources\r\n";
    (void)!send(s->fd, reply, sizeof(reply) - 1, MSG_DONTWAIT | MSG_NOSIGNAL);
    psc_session_free(s);
}

static void proxy_done(void *arg, int status, const struct haproxy_endpoints *ep, const char *why)
{
    struct psc_session *s = arg;
    s->proxy = NULL;
    if (status != 0) {
        psc_warn("haproxy read: %s", why);
        endpoint_failed(s);
        return;
    }
    if (ep->local) {
        if (local_endpoints(s) != 0) {
            endpoint_failed(s);
            return;
        }
    } else {
        snprintf(s->client_addr, sizeof(s->client_addr), "%s", ep->client_addr);
        snprintf(s->client_port, sizeof(s->client_port), "%s", ep->client_port);
        snprintf(s->server_addr, sizeof(s->server_addr), "%s", ep->server_addr);
        snprintf(s->server_port, sizeof(s->server_port), "%s", ep->server_port);
    }
    connect_done(s);
}

void psc_accept(struct smtpd_listener *l, int fd)
{
    struct smtpd_worker *w = l->worker;
    petrel_pool *pool = petrel_pool_create(1024);
    struct psc_session *s = petrel_pool_zalloc(pool, sizeof(*s));
    s->pool = pool;
    s->listener = l;
    s->ps = l->screen;
    s->fd = fd;
    s->final_reply = "421 4.3.2 Service currently unavailable\r\n";
    s->rcpt_reply = "450 4.3.2 Service currently unavailable\r\n";
    s->protocol = "SMTP";
    s->where = "CONNECT";
    s->test_name = "TEST NAME HERE";
    s->post_key = l->post_key;
    s->dnsbl_score = PSC_NO_DNSBL_SCORE;
    gettimeofday(&s->start_time, NULL);
    for (int t = 0; t < PSC_T_COUNT; t++)
        s->expire[t] = PSC_STAMP_INVALID;
    s->next = w->screening;
    if (w->screening)
        w->screening->prev = s;
    w->screening = s;
    w->nscreening++;
    if (s->ps->upstream_proxy) {
        struct timeval tv = { (time_t)s->ps->upstream_proxy_timeout, 0 };
        s->proxy = smtpd_proxy_read_start(w->base, fd, s->ps->proxy_families, &tv, "time limit exceeded",
                                          proxy_done, s);
        if (s->proxy == NULL)
            endpoint_failed(s);
        return;
    }
    if (local_endpoints(s) != 0) {
        endpoint_failed(s);
        return;
    }
    connect_done(s);
}
