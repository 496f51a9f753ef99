/*
 * ldap: lookup tables in an LDAP directory, configured by Postfix's
 * ldap_table(5) files unchanged, answered asynchronously (Module API 1.1
 * lookup_async) with OpenLDAP's libldap:
 *
 *   server_host = ldap://ldap1.example.com ldap2.example.com:389
 *   search_base = ou=people, dc=example, dc=com
 *   query_filter = (&(mail=%s)(objectClass=inetOrgPerson))
 *   result_attribute = mailRoutingAddress
 *   version = 3      bind = yes      bind_dn = ...      bind_pw = ...
 *
 * Expansions as Postfix's (modules/common/table_config.c): %s %u %d
 * %1..%9 in query_filter and search_base, and %s %u %d %S %U %D in
 * result_format. Every piece of the key is escaped for where it goes:
 * RFC 4515 in the filter, RFC 4514 in the base (ldap_escape.c), so a key
 * cannot add a filter component, a wildcard or an RDN. A key that is not
 * valid UTF-8 is not looked up, as in Postfix.
 *
 * Results as Postfix's dict_ldap: every value of the result attributes of
 * every entry found, through result_format, joined with commas;
 * terminal_result_attribute, leaf_result_attribute and
 * special_result_attribute (DN or LDAP URL values that are searched in
 * turn, up to recursion_limit deep) behave as there. More entries than
 * size_limit, more results than expansion_limit, or any search error
 * fail the lookup temporarily (451, never "unknown"). A search base that
 * does not exist is "not found" when it depends on the key, an error
 * otherwise.
 *
 * Asynchronous: one connection per open table and per process, searches
 * multiplexed on it by message id (LDAP allows any number in flight). The
 * connection is made with LDAP_OPT_CONNECT_ASYNC (the TCP connect does not
 * block) and bound with ldap_sasl_bind (simple); results are read with
 * ldap_result() and a zero timeout when the fd is readable. Servers are
 * tried in a random order among the live ones; one that fails to connect
 * is left alone for 60 s while another one is live (a lone server is
 * tried again by the next lookup). A lookup is bounded by the file's timeout
 * (Postfix's default 10 s) from the moment it is asked; on a timeout the
 * connection is dropped, as Postfix does. A search whose connection breaks
 * is sent again once on a new connection. The blocking lookup (callers
 * that cannot wait; ldap_blocking.c) uses a connection of its own with
 * the same bounds.
 * A server given by a host name is resolved first on the loop
 * (petrel_dns_lookup, Postfix's dns_resolver): libldap's getaddrinfo would
 * block. A name the DNS does not know (NXDOMAIN, no IPv4 address) is
 * left to libldap, for /etc/hosts; "localhost" always is.
 *
 * The file is read in ldap_open.c, results in ldap_results.c, referrals
 * followed in ldap_referral.c.
 *
 * TLS (start_tls = yes, ldaps:// servers) and bind = sasl: libldap has
 * no non-blocking StartTLS, handshake or SASL exchange, so such a table
 * makes its connection on a worker thread (petrel_run_blocking;
 * ldap_setup.c) and hands it to the loop ready and bound; the searches
 * are then as above. Its server names are resolved by libldap there, so
 * the certificate is checked against them.
 *
 * Petrel's result cache (cache_ttl, cache_negative_ttl, cache_size; off by
 * default) and the merging of lookups of a key already asked are the
 * glue's (modules/common/remote_table.c). In a file that does not set
 * cache_ttl, cache_size is Postfix's legacy setting (ldap_open.c).
 *
 * Referrals (chase_referrals = yes) are followed by ldap_referral.c, not
 * by libldap (whose chasing blocks): ldap_search_finished reads a
 * search's results, from the table's server or a referred one, and hands
 * their referrals there. Ignored with a warning, as Postfix does: cache, cache_expiry,
 * cache_size without cache_ttl; debuglevel, tls_* settings without TLS and sasl_* ones
 * without bind = sasl.
 */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

#include <lber.h>
#include <ldap.h>

#include <petrel/plugin.h>

#include "ldap_table.h"

/* ------------------------------------------------------------------ */
/* connections                                                         */

int ldap_eligible(const struct table *t, const char *key)
{
    return table_valid_utf8(key) && table_domains_eligible(&t->domains, key);
}

static LDAP *ldap_new(struct table *t, int host, const char *url, int async)
{
    struct ldap_setup setup;
    ldap_setup_fill(&setup, t, url, 0);
    LDAP *ld = NULL;
    int rc = ldap_handle_make(&setup, async, &ld);
    if (rc != LDAP_SUCCESS)
        petrel_module_log(t->module, PETREL_LOG_WARNING, "ldap:%s: %s: %s", t->config, t->hosts[host].url,
                          ldap_err2string(rc));
    return ld;
}

/* A live server, chosen at random among the live ones; when every one
 * failed within the last minute, the one that failed longest ago (a lone
 * server that comes back is used at once, as Postfix reconnects at every
 * lookup). */
int ldap_pick_host(struct table *t)
{
    time_t now = time(NULL);
    int live[MAX_HOSTS], n = 0, oldest = 0;
    for (int i = 0; i < t->nhosts; i++) {
        if (t->hosts[i].dead_until <= now)
            live[n++] = i;
        if (t->hosts[i].dead_until < t->hosts[oldest].dead_until)
            oldest = i;
    }
    if (n == 0)
        return oldest;
    return live[n > 1 ? rand() % n : 0];
}

static int any_live_host(const struct table *t)
{
    time_t now = time(NULL);
    for (int i = 0; i < t->nhosts; i++)
        if (t->hosts[i].dead_until <= now)
            return 1;
    return 0;
}

enum conn_state { CONN_CONNECTING, CONN_BINDING, CONN_READY };

/* A search in flight: its message id, its lookup, what it asked. */
struct search {
    struct search *next;
    struct request *r;
    int msgid;
    struct search_spec spec;
};

struct ldap_conn {
    struct table *t;
    LDAP *ld;
    int host;
    enum conn_state state;
    int fd;
    petrel_watch *watch;
    int watch_events;
    int bind_msgid;
    struct search *searches;
    struct ldap_setup_job *setup;     /* TLS: being made on a worker thread (CONN_CONNECTING) */
};

struct request {
    struct request *next;             /* in the table's waiting list */
    struct table *t;
    struct remote_lookup *rl;         /* answered through the glue (remote_table.c) */
    char *key;
    petrel_timer *timer;
    int outstanding;                  /* its searches in flight */
    int resent;                       /* sent again after a broken connection */
    struct lookup lk;
};

static void dispatch(struct table *t);
static void conn_io(int fd, int events, void *arg);

static void request_free(struct request *r)
{
    ldap_referral_forget(r->t, r);
    if (r->timer)
        petrel_timer_cancel(r->timer);
    free(r->lk.result.data);
    free(r->key);
    free(r);
}

/* Forgets r's searches on c (abandoning them at the server). */
static void forget_searches(struct ldap_conn *c, struct request *r)
{
    for (struct search **p = &c->searches; *p;) {
        struct search *s = *p;
        if (s->r != r) {
            p = &s->next;
            continue;
        }
        *p = s->next;
        if (c->state == CONN_READY)
            ldap_abandon_ext(c->ld, s->msgid, NULL, NULL);
        ldap_spec_free(&s->spec);
        free(s);
    }
    r->outstanding = 0;
}

static void request_done(struct request *r, int status)
{
    struct table *t = r->t;
    if (t->conn)
        forget_searches(t->conn, r);
    remote_lookup_answer(r->rl, status, status == PETREL_TABLE_FOUND ? r->lk.result.data : NULL);
    request_free(r);
}

static void request_finish(struct request *r)
{
    if (r->lk.error)
        request_done(r, PETREL_TABLE_RETRY);
    else
        request_done(r, r->lk.result.len > 0 ? PETREL_TABLE_FOUND : PETREL_TABLE_NOTFOUND);
}

static void waiting_push(struct table *t, struct request *r, int front)
{
    if (front) {
        r->next = t->waiting_head;
        t->waiting_head = r;
        if (t->waiting_tail == NULL)
            t->waiting_tail = r;
        return;
    }
    r->next = NULL;
    if (t->waiting_tail)
        t->waiting_tail->next = r;
    else
        t->waiting_head = r;
    t->waiting_tail = r;
}

static void waiting_remove(struct table *t, struct request *r)
{
    struct request *prev = NULL;
    for (struct request *w = t->waiting_head; w; prev = w, w = w->next)
        if (w == r) {
            if (prev)
                prev->next = r->next;
            else
                t->waiting_head = r->next;
            if (t->waiting_tail == r)
                t->waiting_tail = prev;
            r->next = NULL;
            return;
        }
}

/* No server: every lookup waiting for a connection fails. */
static void fail_waiting(struct table *t)
{
    if (t->waiting_head)
        petrel_module_log(t->module, PETREL_LOG_WARNING, "ldap:%s: no LDAP server available", t->config);
    while (t->waiting_head) {
        struct request *r = t->waiting_head;
        t->waiting_head = r->next;
        if (t->waiting_head == NULL)
            t->waiting_tail = NULL;
        r->next = NULL;
        request_done(r, PETREL_TABLE_RETRY);
    }
}

static void conn_watch(struct ldap_conn *c, int events)
{
    if (c->watch && c->watch_events == events)
        return;
    if (c->watch)
        petrel_watch_cancel(c->watch);
    c->watch = petrel_watch_fd(c->t->module, c->fd, events, conn_io, c);
    c->watch_events = events;
}

/* Drops the connection. Its lookups are sent again on a new one once
 * when nothing of them was read yet, and fail otherwise. */
static void conn_drop(struct ldap_conn *c, int host_dead)
{
    struct table *t = c->t;
    if (host_dead)
        t->hosts[c->host].dead_until = time(NULL) + HOST_RETRY_SECONDS;
    t->conn = NULL;
    t->drops++;
    struct request *again = NULL;
    while (c->searches) {
        struct search *s = c->searches;
        c->searches = s->next;
        struct request *r = s->r;
        ldap_spec_free(&s->spec);
        free(s);
        if (r == NULL)
            continue;   /* another search of a lookup seen already */
        r->outstanding = 0;
        for (struct search *o = c->searches; o; o = o->next)
            if (o->r == r)
                o->r = NULL;
        if (!r->resent && r->lk.result.len == 0 && !r->lk.error) {
            ldap_referral_forget(t, r);   /* all of it again */
            r->resent = 1;
            r->lk.expansions = 0;
            r->next = again;
            again = r;
        } else {
            r->lk.error = 1;
            remote_lookup_answer(r->rl, PETREL_TABLE_RETRY, NULL);
            request_free(r);
        }
    }
    if (c->watch)
        petrel_watch_cancel(c->watch);
    if (c->setup)
        c->setup->owner = NULL;   /* the worker's result is thrown away */
    if (c->ld)
        ldap_unbind_ext(c->ld, NULL, NULL);
    free(c);
    while (again) {
        struct request *r = again;
        again = r->next;
        waiting_push(t, r, 1);
    }
    if (host_dead && !any_live_host(t))
        fail_waiting(t);   /* not round and round: the next lookup tries again */
    else
        dispatch(t);
}

/* Sends one search; 0, or -1 (the connection is unusable). */
static int conn_search(struct ldap_conn *c, struct request *r, const char *base, int scope, const char *filter,
                       char **attrs, int depth)
{
    struct table *t = c->t;
    int msgid = -1;
    int sizelimit = t->size_limit ? (int)t->size_limit : LDAP_NO_LIMIT;
    struct timeval tv = { (time_t)((t->timeout_ms + 999) / 1000), 0 };
    int rc = ldap_search_ext(c->ld, base, scope, filter, attrs, 0, NULL, NULL, &tv, sizelimit, &msgid);
    if (rc != LDAP_SUCCESS) {
        petrel_module_log(t->module, PETREL_LOG_WARNING, "ldap:%s: search on %s: %s", t->config,
                          t->hosts[c->host].url, ldap_err2string(rc));
        return -1;
    }
    struct search *s = calloc(1, sizeof(*s));
    if (s == NULL || (s->spec.base = strdup(base)) == NULL || (s->spec.filter = strdup(filter)) == NULL)
        abort();
    s->spec.attrs = ldap_attrs_copy(attrs);
    s->spec.scope = scope;
    s->spec.depth = depth;
    s->r = r;
    s->msgid = msgid;
    s->next = c->searches;
    c->searches = s;
    r->outstanding++;
    return 0;
}

struct spawn_ctx {
    struct ldap_conn *c;
    struct request *r;
    int broken;
};

static int spawn_async(void *arg, const char *base, int scope, const char *filter, char **attrs, int depth)
{
    struct spawn_ctx *x = arg;
    if (x->c == NULL) {   /* an entry from a referred server, and no connection to the table's own */
        petrel_module_log(x->r->t->module, PETREL_LOG_WARNING, "ldap:%s: no connection to search %.200s for "
                          "\"%.100s\"", x->r->t->config, base, x->r->key);
        return -1;
    }
    if (conn_search(x->c, x->r, base, scope, filter, attrs, depth) != 0) {
        x->broken = 1;
        return -1;
    }
    return 0;
}

/* Starts r's first search on the ready connection; 0, or -1 when the
 * connection broke (r is then back in the waiting list or answered). */
static int start_request(struct ldap_conn *c, struct request *r)
{
    struct table *t = c->t;
    char *base, *filter;
    if (!ldap_make_search(t, r->key, &base, &filter)) {
        request_done(r, PETREL_TABLE_NOTFOUND);
        return 0;
    }
    int rc = conn_search(c, r, base, t->scope, filter, t->attrs, 0);
    free(base);
    free(filter);
    if (rc == 0)
        return 0;
    waiting_push(t, r, 1);
    conn_drop(c, 0);
    return -1;
}

static void conn_ready(struct ldap_conn *c)
{
    c->state = CONN_READY;
    int nonblocking = fcntl(c->fd, F_GETFL);
    if (nonblocking >= 0)
        fcntl(c->fd, F_SETFL, nonblocking | O_NONBLOCK);
    conn_watch(c, PETREL_WATCH_READ);
    dispatch(c->t);
}

/* The TCP connection is up (or failed): bind, or be ready. */
static void conn_connected(struct ldap_conn *c)
{
    struct table *t = c->t;
    int soerr = 0;
    socklen_t len = sizeof(soerr);
    if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &soerr, &len) == 0 && soerr != 0) {
        petrel_module_log(t->module, PETREL_LOG_WARNING, "ldap:%s: connect to %s: %s", t->config,
                          t->hosts[c->host].url, strerror(soerr));
        conn_drop(c, 1);
        return;
    }
    if (t->bind) {
        struct berval cred = { strlen(t->bind_pw), (char *)t->bind_pw };
        int rc = ldap_sasl_bind(c->ld, t->bind_dn, LDAP_SASL_SIMPLE, &cred, NULL, NULL, &c->bind_msgid);
        if (rc == LDAP_X_CONNECTING)
            return;   /* not yet: the next writable event */
        if (rc != LDAP_SUCCESS) {
            petrel_module_log(t->module, PETREL_LOG_WARNING, "ldap:%s: bind to %s: %s", t->config,
                              t->hosts[c->host].url, ldap_err2string(rc));
            conn_drop(c, 1);
            return;
        }
        c->state = CONN_BINDING;
        conn_watch(c, PETREL_WATCH_READ);
        return;
    }
    conn_ready(c);
}

struct chase_ctx {
    struct request *r;
    const struct search_spec *spec;
    const char *url;
};

/* A referral in a search's results: the same search on the referred
 * server (ldap_referral.c). */
static int chase_async(void *arg, const char *url)
{
    struct chase_ctx *x = arg;
    struct table *t = x->r->t;
    struct search_spec next;
    char *server;
    if (ldap_referral_prepare(t, x->r->key, url, x->spec, x->url, &next, &server) != 0)
        return -1;
    int rc = ldap_referral_send(t, x->r, server, &next);
    free(server);
    if (rc == 0)
        x->r->outstanding++;
    return rc;
}

int ldap_search_finished(struct request *r, LDAP *ld, LDAPMessage *res, const struct search_spec *spec,
                         const char *url)
{
    struct table *t = r->t;
    int drop = 0, outcome = -1;
    r->outstanding--;
    if (res) {
        outcome = ldap_search_outcome(t, ld, res, spec->base, spec->depth, r->key, &drop);
        struct chase_ctx chase = { r, spec, url };
        if (outcome >= 0 && t->chase_referrals && ldap_referrals_each(t, ld, res, r->key, chase_async, &chase) != 0)
            outcome = -1;
    }
    if (outcome < 0)
        r->lk.error = 1;
    /* Special attributes' searches go to the table's own server, as
     * Postfix's go on its connection, wherever the entry came from. */
    struct ldap_conn *c = t->conn && t->conn->state == CONN_READY ? t->conn : NULL;
    struct spawn_ctx x = { c, r, 0 };
    if (outcome > 0 && !r->lk.error)
        ldap_read_entries(t, ld, res, &r->lk, spec->depth, spawn_async, &x);
    if (r->lk.error || r->outstanding == 0)
        request_finish(r);
    if (x.broken && t->conn == c)
        conn_drop(c, 0);
    return drop;
}

static void search_done(struct ldap_conn *c, struct search *s, LDAPMessage *res)
{
    struct table *t = c->t;
    struct request *r = s->r;
    unsigned long drops = t->drops;
    int drop = 0;
    if (r)
        drop = ldap_search_finished(r, c->ld, res, &s->spec, t->hosts[c->host].url);
    ldap_spec_free(&s->spec);
    free(s);
    if (drop && t->drops == drops)
        conn_drop(c, 0);
}

/* One result on the table's connection (ldap_read_ready's on_result):
 * the bind's while binding, else a search's. Nonzero when c is gone (a
 * drop counted in t->drops: this one, or any the answers caused). */
static int conn_result(void *arg, LDAPMessage *res)
{
    struct ldap_conn *c = arg;
    struct table *t = c->t;
    unsigned long drops = t->drops;
    int msgid = ldap_msgid(res);
    if (c->state == CONN_BINDING) {
        if (msgid != c->bind_msgid) {
            ldap_msgfree(res);
            return 0;
        }
        int err = LDAP_OTHER;
        char *text = NULL;
        if (ldap_parse_result(c->ld, res, &err, NULL, &text, NULL, NULL, 1) != LDAP_SUCCESS)
            err = LDAP_OTHER;
        if (err != LDAP_SUCCESS) {
            petrel_module_log(t->module, PETREL_LOG_WARNING, "ldap:%s: bind as \"%s\" to %s: %s%s%s", t->config,
                              t->bind_dn, t->hosts[c->host].url, ldap_err2string(err), text && *text ? ": " : "",
                              text ? text : "");
            ldap_memfree(text);
            conn_drop(c, 1);
            return 1;
        }
        ldap_memfree(text);
        conn_ready(c);
        return t->drops != drops;
    }
    struct search **p = &c->searches;
    while (*p && (*p)->msgid != msgid)
        p = &(*p)->next;
    if (*p == NULL) {
        ldap_msgfree(res);   /* abandoned: its lookup is gone */
        return 0;
    }
    struct search *s = *p;
    *p = s->next;
    search_done(c, s, res);
    ldap_msgfree(res);
    return t->drops != drops;
}

static void conn_io(int fd, int events, void *arg)
{
    (void)fd;
    struct ldap_conn *c = arg;
    struct table *t = c->t;
    if (c->state == CONN_CONNECTING) {
        if (events & PETREL_WATCH_WRITE)
            conn_connected(c);
        return;
    }
    int err;
    if (ldap_read_ready(c->ld, conn_result, c, &err) == 0)
        return;
    petrel_module_log(t->module, PETREL_LOG_WARNING, "ldap:%s: connection to %s: %s", t->config,
                      t->hosts[c->host].url, ldap_err2string(err));
    conn_drop(c, c->state != CONN_READY);
}

static void setup_done(void *owner, LDAP *ld, const char *diag)
{
    struct ldap_conn *c = owner;
    struct table *t = c->t;
    c->setup = NULL;
    if (ld == NULL)
        petrel_module_log(t->module, PETREL_LOG_WARNING, "ldap:%s: %s: %s", t->config, t->hosts[c->host].url, diag);
    int fd = -1;
    c->ld = ld;
    if (ld == NULL || ldap_get_option(ld, LDAP_OPT_DESC, &fd) != LDAP_OPT_SUCCESS || fd < 0) {
        conn_drop(c, 1);
        return;
    }
    c->fd = fd;
    conn_ready(c);
}

/* TLS or SASL: the connection is made, secured and bound on a worker
 * thread (libldap cannot do StartTLS, a handshake or a SASL exchange
 * without blocking); the lookups wait for it as for a connect. 0, or -1 (logged, host marked). */
static int conn_connect_threaded(struct table *t, int host, const char *url)
{
    struct ldap_conn *c = calloc(1, sizeof(*c));
    if (c == NULL)
        abort();
    c->t = t;
    c->host = host;
    c->fd = -1;
    c->state = CONN_CONNECTING;
    c->setup = ldap_setup_job_new(t, url, c, setup_done);
    t->conn = c;
    if (ldap_setup_job_run(t->module, c->setup) == 0)
        return 0;
    t->conn = NULL;
    free(c);
    petrel_module_log(t->module, PETREL_LOG_WARNING, "ldap:%s: connect to %s: no worker thread in this process for "
                      "the TLS or SASL set-up", t->config, url);
    t->hosts[host].dead_until = time(NULL) + HOST_RETRY_SECONDS;
    return -1;
}

/* Starts the connection to host at url; 0, or -1 (logged, host marked). */
static int conn_connect(struct table *t, int host, const char *url)
{
    if (LDAP_TABLE_THREADED_SETUP(t))
        return conn_connect_threaded(t, host, url);
    LDAP *ld = ldap_new(t, host, url, 1);
    if (ld == NULL) {
        t->hosts[host].dead_until = time(NULL) + HOST_RETRY_SECONDS;
        return -1;
    }
    int rc = ldap_connect(ld);
    int fd = -1;
    if ((rc == LDAP_SUCCESS || rc == LDAP_X_CONNECTING) &&
        ldap_get_option(ld, LDAP_OPT_DESC, &fd) == LDAP_OPT_SUCCESS && fd >= 0) {
        struct ldap_conn *c = calloc(1, sizeof(*c));
        if (c == NULL)
            abort();
        c->t = t;
        c->ld = ld;
        c->host = host;
        c->fd = fd;
        c->state = CONN_CONNECTING;
        t->conn = c;
        conn_watch(c, PETREL_WATCH_WRITE);
        if (c->watch)
            return 0;
        t->conn = NULL;
        free(c);
        rc = LDAP_LOCAL_ERROR;
    }
    petrel_module_log(t->module, PETREL_LOG_WARNING, "ldap:%s: connect to %s: %s", t->config, url,
                      ldap_err2string(rc == LDAP_SUCCESS ? LDAP_SERVER_DOWN : rc));
    ldap_unbind_ext(ld, NULL, NULL);
    t->hosts[host].dead_until = time(NULL) + HOST_RETRY_SECONDS;
    return -1;
}

static void resolved(const petrel_dns_answer *answer, void *arg)
{
    struct resolving *res = arg;
    struct table *t = res->t;
    int host = res->host, cancelled = res->cancelled;
    free(res);
    if (cancelled)
        return;
    t->resolving = NULL;
    const struct ldap_host *h = &t->hosts[host];
    if (answer->status == PETREL_DNS_OK && answer->count > 0) {
        char url[300];
        snprintf(url, sizeof(url), "%s://%s:%d", h->scheme, answer->values[0], h->port);
        if (conn_connect(t, host, url) == 0)
            return;
    } else if (answer->status == PETREL_DNS_NXDOMAIN || answer->status == PETREL_DNS_NODATA) {
        /* Not in the DNS (or no IPv4 address): libldap's own resolution,
         * for names in /etc/hosts and IPv6-only servers. */
        if (conn_connect(t, host, h->url) == 0)
            return;
    } else {
        petrel_module_log(t->module, PETREL_LOG_WARNING, "ldap:%s: cannot resolve %s: the DNS is not answering",
                          t->config, h->name);
        t->hosts[host].dead_until = time(NULL) + HOST_RETRY_SECONDS;
    }
    if (any_live_host(t))
        dispatch(t);
    else
        fail_waiting(t);
}

/* Connects to a server: its name resolved first on the loop when it has
 * one (libldap would block in getaddrinfo). */
static void conn_open(struct table *t)
{
    for (int attempt = 0; attempt < t->nhosts; attempt++) {
        int host = ldap_pick_host(t);
        if (t->hosts[host].name && !LDAP_TABLE_THREADED_SETUP(t)) {   /* resolved on the worker thread */
            struct resolving *res = calloc(1, sizeof(*res));
            if (res == NULL)
                abort();
            res->t = t;
            res->host = host;
            t->resolving = res;
            if (petrel_dns_lookup(t->module, PETREL_DNS_A, t->hosts[host].name, resolved, res) == 0)
                return;
            t->resolving = NULL;   /* no resolver in this process: libldap's */
            free(res);
        }
        if (conn_connect(t, host, t->hosts[host].url) == 0)
            return;
    }
    fail_waiting(t);
}

static void dispatch(struct table *t)
{
    if (t->waiting_head == NULL || t->resolving)
        return;
    if (t->conn == NULL) {
        conn_open(t);
        return;
    }
    struct ldap_conn *c = t->conn;
    if (c->state != CONN_READY)
        return;
    unsigned long drops = t->drops;
    while (t->waiting_head && t->drops == drops) {
        struct request *r = t->waiting_head;
        t->waiting_head = r->next;
        if (t->waiting_head == NULL)
            t->waiting_tail = NULL;
        r->next = NULL;
        if (start_request(c, r) != 0)
            return;
    }
}

static void request_timed_out(void *arg)
{
    struct request *r = arg;
    struct table *t = r->t;
    r->timer = NULL;
    petrel_module_log(t->module, PETREL_LOG_WARNING, "ldap:%s: no answer within %us for \"%.100s\"", t->config,
                      (t->timeout_ms + 999) / 1000, r->key);
    struct ldap_conn *c = t->conn;
    int in_flight = 0;
    for (struct search *s = c ? c->searches : NULL; s && !in_flight; s = s->next)
        in_flight = s->r == r;
    waiting_remove(t, r);
    ldap_referral_timed_out(t, r);
    request_done(r, PETREL_TABLE_RETRY);
    /* A server that does not answer in time is dropped, as Postfix does;
     * so is a connection that is still being made. (A referred server's
     * is dropped by ldap_referral_timed_out.) */
    if (c && (in_flight || c->state != CONN_READY))
        conn_drop(c, c->state != CONN_READY);
}

/* A timer at 0 answers from the loop: never inside lookup_async. */
static void answer_later(void *arg)
{
    struct request *r = arg;
    r->timer = NULL;
    request_done(r, PETREL_TABLE_NOTFOUND);
}

/* The asynchronous lookup (the glue, remote_table.c, answered from its
 * cache or joined a lookup in flight already). */
static void ldap_lookup_start(void *handle, struct remote_lookup *rl, const char *key)
{
    struct table *t = handle;
    if (!ldap_eligible(t, key)) {
        remote_lookup_answer(rl, PETREL_TABLE_NOTFOUND, NULL);
        return;
    }
    struct request *r = calloc(1, sizeof(*r));
    if (r == NULL || (r->key = strdup(key)) == NULL) {
        free(r);
        remote_lookup_answer(rl, PETREL_TABLE_RETRY, NULL);
        return;
    }
    r->t = t;
    r->rl = rl;
    r->lk.key = r->key;
    char *base, *filter;
    if (!ldap_make_search(t, key, &base, &filter)) {
        r->timer = petrel_timer_start(t->module, 0, answer_later, r);
        if (r->timer == NULL) {
            request_free(r);
            remote_lookup_answer(rl, PETREL_TABLE_NOTFOUND, NULL);
        }
        return;
    }
    free(base);
    free(filter);
    r->timer = petrel_timer_start(t->module, t->timeout_ms, request_timed_out, r);
    waiting_push(t, r, 0);
    dispatch(t);
}

/* ------------------------------------------------------------------ */
/* open, close, the module                                             */

static void table_close(void *handle)
{
    struct table *t = handle;
    if (t->resolving) {
        t->resolving->cancelled = 1;   /* its answer frees it */
        t->resolving = NULL;
    }
    if (t->conn) {
        struct ldap_conn *c = t->conn;
        while (c->searches) {
            struct search *s = c->searches;
            c->searches = s->next;
            if (s->r && s->r->outstanding) {
                s->r->outstanding = 0;
                for (struct search *o = c->searches; o; o = o->next)
                    if (o->r == s->r)
                        o->r = NULL;
                request_free(s->r);   /* the core made its handle stale already */
            }
            ldap_spec_free(&s->spec);
            free(s);
        }
        if (c->watch)
            petrel_watch_cancel(c->watch);
        if (c->setup)
            c->setup->owner = NULL;
        if (c->ld)
            ldap_unbind_ext(c->ld, NULL, NULL);
        free(c);
        t->conn = NULL;
    }
    while (t->waiting_head) {
        struct request *r = t->waiting_head;
        t->waiting_head = r->next;
        request_free(r);
    }
    t->waiting_tail = NULL;
    ldap_referral_close(t, request_free);
    ldap_blocking_drop(t);
}

static int table_pattern(void *handle)
{
    const struct table *t = handle;
    return table_template_partial(&t->tpl);
}

static const struct remote_table_type remote_type = {
    .name = "ldap", .open = ldap_table_open, .lookup = ldap_lookup_blocking, .start = ldap_lookup_start, .close = table_close,
    .handle_pattern = table_pattern,
};
REMOTE_TABLE_OPEN(open_remote, remote_type)

static const petrel_table_type table_types[] = {
    { PETREL_TABLE_TYPE_INIT, .name = "ldap", .open = open_remote, REMOTE_TABLE_ENTRIES },
    { .name = NULL },
};

const petrel_module_desc petrel_module_descriptor = {
    PETREL_MODULE_INIT,
    .name = "ldap",
    .version = "1.0",
    .description = "ldap: lookup tables (Postfix's ldap_table(5) configuration files), asynchronous",
    .table_types = table_types,
    /* Each table's timeout answers first; the core's guard only catches a lost lookup. */
    .hook_timeout_ms = 3600 * 1000,
};
