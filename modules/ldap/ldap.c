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
 * that cannot wait) uses a connection of its own with the same bounds.
 * A server given by a host name is resolved first on the loop
 * (petrel_dns_lookup, Postfix's dns_resolver): libldap's getaddrinfo would
 * block. A name the DNS does not know (NXDOMAIN, no IPv4 address) is
 * left to libldap, for /etc/hosts; "localhost" always is.
 *
 * Not supported (refused at open, naming the line): bind = sasl, TLS
 * (start_tls = yes, ldaps:// servers), chase_referrals = yes. Ignored
 * with a warning, as Postfix does: cache, cache_expiry, cache_size;
 * debuglevel and tls_* settings without TLS are warned about too.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <time.h>

#include <lber.h>
#include <ldap.h>

#include <petrel/plugin.h>

#include "ldap_escape.h"
#include "table_config.h"

#define HOST_RETRY_SECONDS 60
#define MAX_HOSTS 16

struct ldap_host {
    const char *url;
    const char *name;                 /* a host name to resolve first (petrel_dns), or NULL */
    const char *scheme;
    int port;
    time_t dead_until;
};

/* A name being resolved for the connection. The table may close before
 * the answer comes: it then sets cancelled, and the answer frees this. */
struct resolving {
    struct table *t;
    int host;
    int cancelled;
};

struct request;
struct ldap_conn;

struct table {
    petrel_module *module;
    const char *config;               /* the .cf file, for messages */
    struct ldap_host hosts[MAX_HOSTS];
    int nhosts;
    const char *search_base, *query_filter, *result_format;
    int dynamic_base;                 /* search_base depends on the key */
    int scope, version, deref;
    struct table_template tpl;
    struct table_domains domains;
    char **attrs;                     /* terminal, leaf, regular, special; NULL-terminated */
    int nterminal, nleaf, nordinary;  /* nordinary: terminal + leaf + regular */
    int bind;
    const char *bind_dn, *bind_pw;
    unsigned timeout_ms;
    long expansion_limit, size_limit, recursion_limit;
    struct ldap_conn *conn;           /* at most one */
    struct resolving *resolving;      /* the name of the next one, in the resolver */
    unsigned long drops;              /* connections dropped: a callback's check that its own is gone */
    struct request *waiting_head, *waiting_tail;   /* for the connection */
    LDAP *blocking;                   /* the blocking lookup's connection */
};

/* ------------------------------------------------------------------ */
/* reading results (shared by both forms of lookup)                    */

/* One lookup's results so far. */
struct lookup {
    const char *key;
    long expansions;
    int error;                        /* a temporary failure: RETRY */
    struct table_buffer result;
};

/* Starts a search for a special attribute's value, at depth. 0, or -1
 * (the lookup failed; logged). */
typedef int spawn_fn(void *arg, const char *base, int scope, const char *filter, char **attrs, int depth);

/* Postfix's attrdesc_subtype: "mail" asks for "mail" and "mail;lang-en". */
static int attribute_matches(const char *wanted, const char *returned)
{
    size_t n = strlen(wanted);
    return strncasecmp(wanted, returned, n) == 0 && (returned[n] == '\0' || returned[n] == ';');
}

static int attribute_index(const struct table *t, const char *attr)
{
    int i;
    for (i = 0; t->attrs[i]; i++)
        if (attribute_matches(t->attrs[i], attr))
            break;
    return i;
}

static int has_values(LDAP *ld, LDAPMessage *entry, const char *attr)
{
    struct berval **vals = ldap_get_values_len(ld, entry, attr);
    if (vals == NULL)
        return 0;
    int n = ldap_count_values_len(vals);
    ldap_value_free_len(vals);
    return n > 0;
}

/* The attributes of url that we asked for (Postfix's url_attrs): all of
 * ours when it names none, NULL when none of its names are ours. */
static char **url_attributes(const struct table *t, LDAPURLDesc *url)
{
    size_t n = 0;
    for (char **a = t->attrs; *a; a++)
        n++;
    char **out = calloc(n + 1, sizeof(*out));
    if (out == NULL)
        abort();
    if (url->lud_attrs == NULL || url->lud_attrs[0] == NULL) {
        memcpy(out, t->attrs, n * sizeof(*out));
        return out;
    }
    size_t k = 0;
    for (char **a = url->lud_attrs; *a && k < n; a++)
        for (char **ours = t->attrs; *ours; ours++)
            if (attribute_matches(*ours, *a)) {
                out[k++] = *ours;
                break;
            }
    if (k == 0) {
        free(out);
        return NULL;
    }
    return out;
}

/* A special attribute's value: a DN, or an LDAP URL to search. */
static void follow(struct table *t, struct lookup *lk, const char *value, int depth, spawn_fn *spawn, void *arg)
{
    if (!ldap_is_ldap_url(value)) {
        if (spawn(arg, value, LDAP_SCOPE_BASE, "(objectclass=*)", t->attrs, depth) != 0)
            lk->error = 1;
        return;
    }
    LDAPURLDesc *url = NULL;
    int rc = ldap_url_parse(value, &url);
    if (rc != 0) {
        petrel_module_log(t->module, PETREL_LOG_WARNING, "ldap:%s: malformed URL %.200s: %s (%d)", t->config,
                          value, ldap_err2string(rc), rc);
        lk->error = 1;
        return;
    }
    char **attrs = url_attributes(t, url);
    if (attrs && spawn(arg, url->lud_dn ? url->lud_dn : "", url->lud_scope,
                       url->lud_filter ? url->lud_filter : "(objectclass=*)", attrs, depth) != 0)
        lk->error = 1;
    free(attrs);
    ldap_free_urldesc(url);
}

/* Reads the entries of one search's results (Postfix's
 * dict_ldap_get_values): ordinary attributes expanded into lk->result,
 * special ones spawned as searches one level deeper. */
static void read_entries(struct table *t, LDAP *ld, LDAPMessage *res, struct lookup *lk, int depth, spawn_fn *spawn,
                         void *arg)
{
    long entries = 0;
    for (LDAPMessage *entry = ldap_first_entry(ld, res); entry && !lk->error; entry = ldap_next_entry(ld, entry)) {
        if (t->size_limit && ++entries > t->size_limit) {
            petrel_module_log(t->module, PETREL_LOG_WARNING, "ldap:%s: query size limit (%ld) exceeded for "
                              "\"%.100s\"", t->config, t->size_limit, lk->key);
            lk->error = 1;
            break;
        }
        int terminal = 0, leaf = 1;
        for (int i = 0; i < t->nterminal && !terminal; i++)
            terminal = has_values(ld, entry, t->attrs[i]);
        if (!terminal && t->nleaf > 0)
            for (int i = t->nordinary; t->attrs[i] && leaf; i++)
                leaf = !has_values(ld, entry, t->attrs[i]);
        BerElement *ber = NULL;
        for (char *attr = ldap_first_attribute(ld, entry, &ber); attr;
             ldap_memfree(attr), attr = ldap_next_attribute(ld, entry, ber)) {
            if (lk->error)
                continue;
            struct berval **vals = ldap_get_values_len(ld, entry, attr);
            if (vals == NULL)
                continue;
            int count = ldap_count_values_len(vals);
            int i = attribute_index(t, attr);
            if (i < t->nordinary || terminal) {
                int skip = (terminal && i >= t->nterminal) ||
                           (!leaf && i >= t->nterminal && i < t->nterminal + t->nleaf);
                for (int v = 0; v < count && !skip && !lk->error; v++) {
                    const char *text = vals[v]->bv_val;
                    if (vals[v]->bv_len == 0 || memchr(text, '\0', vals[v]->bv_len)) {
                        petrel_module_log(t->module, PETREL_LOG_WARNING, "ldap:%s: %s value %s for \"%.100s\" -- "
                                          "ignored", t->config, attr, vals[v]->bv_len ? "with a NUL byte" : "empty",
                                          lk->key);
                        continue;
                    }
                    if (table_template_expand(&t->tpl, t->result_format, text, lk->key, NULL, NULL, &lk->result) &&
                        t->expansion_limit > 0 && ++lk->expansions > t->expansion_limit) {
                        petrel_module_log(t->module, PETREL_LOG_WARNING, "ldap:%s: expansion limit exceeded for key "
                                          "\"%.100s\"", t->config, lk->key);
                        lk->error = 1;
                    }
                }
            } else if (t->attrs[i] && depth < t->recursion_limit) {
                for (int v = 0; v < count && !lk->error; v++)
                    follow(t, lk, vals[v]->bv_val, depth + 1, spawn, arg);
            } else if (t->attrs[i]) {
                petrel_module_log(t->module, PETREL_LOG_WARNING, "ldap:%s: recursion limit exceeded for special "
                                  "attribute %s=%.200s", t->config, attr, count ? vals[0]->bv_val : "");
                lk->error = 1;
            }
            ldap_value_free_len(vals);
        }
        if (ber)
            ber_free(ber, 0);
    }
}

/* A finished search's outcome: 1 read its entries, 0 nothing to read
 * (a base that does not exist), -1 error (logged; the connection should
 * be dropped when *drop is set). */
static int search_outcome(struct table *t, LDAP *ld, LDAPMessage *res, const char *base, int depth,
                          const char *key, int *drop)
{
    int err = LDAP_OTHER;
    char *text = NULL;
    *drop = 0;
    int rc = ldap_parse_result(ld, res, &err, NULL, &text, NULL, NULL, 0);
    if (rc != LDAP_SUCCESS)
        err = rc;
    int outcome;
    switch (err) {
    case LDAP_SUCCESS:
        outcome = 1;
        break;
    case LDAP_NO_SUCH_OBJECT:
        if (depth == 0 && t->dynamic_base) {
            outcome = 0;
            break;
        }
        petrel_module_log(t->module, PETREL_LOG_WARNING, "ldap:%s: %s %.200s not found%s", t->config,
                          depth ? "DN" : "search base", base ? base : "", depth ? ", skipping" : "");
        outcome = depth ? 0 : -1;
        break;
    case LDAP_SIZELIMIT_EXCEEDED:
        petrel_module_log(t->module, PETREL_LOG_WARNING, "ldap:%s: query size limit (%ld) exceeded for "
                          "\"%.100s\"", t->config, t->size_limit, key);
        outcome = -1;
        break;
    default:
        petrel_module_log(t->module, PETREL_LOG_WARNING, "ldap:%s: search error %d for \"%.100s\": %s%s%s",
                          t->config, err, key, ldap_err2string(err), text && *text ? ": " : "", text ? text : "");
        *drop = 1;
        outcome = -1;
        break;
    }
    ldap_memfree(text);
    return outcome;
}

/* The base and the filter for key; 0 when the key lacks what the
 * templates need (not found without asking). */
static int make_search(const struct table *t, const char *key, char **base, char **filter)
{
    struct table_buffer b = { 0 }, f = { 0 };
    table_buffer_put(&b, "", 0);
    table_buffer_put(&f, "", 0);
    if (!table_template_expand(&t->tpl, t->search_base, key, NULL, ldap_escape_dn, NULL, &b) ||
        !table_template_expand(&t->tpl, t->query_filter, key, NULL, ldap_escape_filter, NULL, &f)) {
        free(b.data);
        free(f.data);
        return 0;
    }
    *base = b.data;
    *filter = f.data;
    return 1;
}

static int eligible(const struct table *t, const char *key)
{
    return table_valid_utf8(key) && table_domains_eligible(&t->domains, key);
}

/* ------------------------------------------------------------------ */
/* connections                                                         */

static LDAP *ldap_new(struct table *t, int host, const char *url, int async)
{
    LDAP *ld = NULL;
    int rc = ldap_initialize(&ld, url);
    if (rc != LDAP_SUCCESS) {
        petrel_module_log(t->module, PETREL_LOG_WARNING, "ldap:%s: %s: %s", t->config, t->hosts[host].url,
                          ldap_err2string(rc));
        return NULL;
    }
    struct timeval tv = { (time_t)((t->timeout_ms + 999) / 1000), 0 };
    int sizelimit = t->size_limit ? (int)t->size_limit : LDAP_NO_LIMIT;
    ldap_set_option(ld, LDAP_OPT_PROTOCOL_VERSION, &t->version);
    ldap_set_option(ld, LDAP_OPT_NETWORK_TIMEOUT, &tv);
    ldap_set_option(ld, LDAP_OPT_TIMEOUT, &tv);
    ldap_set_option(ld, LDAP_OPT_SIZELIMIT, &sizelimit);
    ldap_set_option(ld, LDAP_OPT_DEREF, &t->deref);
    ldap_set_option(ld, LDAP_OPT_REFERRALS, LDAP_OPT_OFF);
    ldap_set_option(ld, LDAP_OPT_RESTART, LDAP_OPT_ON);
    if (async)
        ldap_set_option(ld, LDAP_OPT_CONNECT_ASYNC, LDAP_OPT_ON);
    return ld;
}

/* A live server, chosen at random among the live ones; when every one
 * failed within the last minute, the one that failed longest ago (a lone
 * server that comes back is used at once, as Postfix reconnects at every
 * lookup). */
static int pick_host(struct table *t)
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

/* A search in flight: its message id, its lookup, its depth. */
struct search {
    struct search *next;
    struct request *r;
    int msgid, depth;
    char *base;
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
};

struct request {
    struct request *next;             /* in the table's waiting list */
    struct table *t;
    petrel_table_query *q;
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
        free(s->base);
        free(s);
    }
    r->outstanding = 0;
}

static void request_done(struct request *r, int status)
{
    struct table *t = r->t;
    if (t->conn)
        forget_searches(t->conn, r);
    petrel_table_answer(r->q, status, status == PETREL_TABLE_FOUND ? r->lk.result.data : NULL);
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
        free(s->base);
        free(s);
        if (r == NULL)
            continue;   /* another search of a lookup seen already */
        r->outstanding = 0;
        for (struct search *o = c->searches; o; o = o->next)
            if (o->r == r)
                o->r = NULL;
        if (!r->resent && r->lk.result.len == 0 && !r->lk.error) {
            r->resent = 1;
            r->lk.expansions = 0;
            r->next = again;
            again = r;
        } else {
            r->lk.error = 1;
            petrel_table_answer(r->q, PETREL_TABLE_RETRY, NULL);
            request_free(r);
        }
    }
    if (c->watch)
        petrel_watch_cancel(c->watch);
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
    if (s == NULL || (s->base = strdup(base)) == NULL)
        abort();
    s->r = r;
    s->msgid = msgid;
    s->depth = depth;
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
    if (!make_search(t, r->key, &base, &filter)) {
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

static void search_done(struct ldap_conn *c, struct search *s, LDAPMessage *res)
{
    struct table *t = c->t;
    struct request *r = s->r;
    int depth = s->depth, drop = 0;
    int outcome = r ? search_outcome(t, c->ld, res, s->base, depth, r->key, &drop) : 0;
    free(s->base);
    free(s);
    if (r == NULL)
        return;
    r->outstanding--;
    if (outcome < 0)
        r->lk.error = 1;
    struct spawn_ctx x = { c, r, 0 };
    if (outcome > 0)
        read_entries(t, c->ld, res, &r->lk, depth, spawn_async, &x);
    if (r->lk.error || r->outstanding == 0)
        request_finish(r);
    if (drop || x.broken)
        conn_drop(c, 0);
}

static void conn_io(int fd, int events, void *arg)
{
    (void)fd;
    struct ldap_conn *c = arg;
    struct table *t = c->t;
    unsigned long drops = t->drops;
    if (c->state == CONN_CONNECTING) {
        if (events & PETREL_WATCH_WRITE)
            conn_connected(c);
        return;
    }
    for (;;) {
        LDAPMessage *res = NULL;
        struct timeval zero = { 0, 0 };
        int rc = ldap_result(c->ld, LDAP_RES_ANY, LDAP_MSG_ALL, &zero, &res);
        if (rc == 0)
            return;
        if (rc < 0) {
            int err = LDAP_SERVER_DOWN;
            ldap_get_option(c->ld, LDAP_OPT_RESULT_CODE, &err);
            petrel_module_log(t->module, PETREL_LOG_WARNING, "ldap:%s: connection to %s: %s", t->config,
                              t->hosts[c->host].url, ldap_err2string(err));
            conn_drop(c, c->state != CONN_READY);
            return;
        }
        int msgid = ldap_msgid(res);
        if (c->state == CONN_BINDING) {
            if (msgid != c->bind_msgid) {
                ldap_msgfree(res);
                continue;
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
                return;
            }
            ldap_memfree(text);
            conn_ready(c);
            if (t->drops != drops)
                return;
            continue;
        }
        struct search **p = &c->searches;
        while (*p && (*p)->msgid != msgid)
            p = &(*p)->next;
        if (*p == NULL) {
            ldap_msgfree(res);   /* abandoned: its lookup is gone */
            continue;
        }
        struct search *s = *p;
        *p = s->next;
        search_done(c, s, res);
        ldap_msgfree(res);
        if (t->drops != drops)
            return;   /* c is gone */
    }
}

/* Starts the connection to host at url; 0, or -1 (logged, host marked). */
static int conn_connect(struct table *t, int host, const char *url)
{
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
        int host = pick_host(t);
        if (t->hosts[host].name) {
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
    int in_flight = r->outstanding > 0;
    waiting_remove(t, r);
    request_done(r, PETREL_TABLE_RETRY);
    /* A server that does not answer in time is dropped, as Postfix does;
     * so is a connection that is still being made. */
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

static void ldap_lookup_async(void *handle, petrel_table_query *q, const char *key)
{
    struct table *t = handle;
    if (!eligible(t, key)) {
        petrel_table_answer(q, PETREL_TABLE_NOTFOUND, NULL);
        return;
    }
    struct request *r = calloc(1, sizeof(*r));
    if (r == NULL || (r->key = strdup(key)) == NULL) {
        free(r);
        petrel_table_answer(q, PETREL_TABLE_RETRY, NULL);
        return;
    }
    r->t = t;
    r->q = q;
    r->lk.key = r->key;
    char *base, *filter;
    if (!make_search(t, key, &base, &filter)) {
        r->timer = petrel_timer_start(t->module, 0, answer_later, r);
        if (r->timer == NULL) {
            request_free(r);
            petrel_table_answer(q, PETREL_TABLE_NOTFOUND, NULL);
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
/* the blocking lookup                                                 */

struct blocking_ctx {
    struct table *t;
    struct lookup *lk;
    int broken;
};

static void blocking_drop(struct table *t)
{
    if (t->blocking)
        ldap_unbind_ext(t->blocking, NULL, NULL);
    t->blocking = NULL;
}

static int spawn_blocking(void *arg, const char *base, int scope, const char *filter, char **attrs, int depth);

static int blocking_search(struct blocking_ctx *x, const char *base, int scope, const char *filter, char **attrs,
                           int depth)
{
    struct table *t = x->t;
    LDAPMessage *res = NULL;
    int sizelimit = t->size_limit ? (int)t->size_limit : LDAP_NO_LIMIT;
    struct timeval tv = { (time_t)((t->timeout_ms + 999) / 1000), 0 };
    int rc = ldap_search_ext_s(t->blocking, base, scope, filter, attrs, 0, NULL, NULL, &tv, sizelimit, &res);
    if (res == NULL) {
        if (rc == LDAP_SERVER_DOWN || rc == LDAP_CONNECT_ERROR || rc == LDAP_TIMEOUT)
            x->broken = 1;
        else
            petrel_module_log(t->module, PETREL_LOG_WARNING, "ldap:%s: search error for \"%.100s\": %s", t->config,
                              x->lk->key, ldap_err2string(rc));
        return -1;
    }
    int drop = 0;
    int outcome = search_outcome(t, t->blocking, res, base, depth, x->lk->key, &drop);
    if (outcome > 0)
        read_entries(t, t->blocking, res, x->lk, depth, spawn_blocking, x);
    ldap_msgfree(res);
    if (drop)
        x->broken = 1;
    return outcome < 0 ? -1 : 0;
}

static int spawn_blocking(void *arg, const char *base, int scope, const char *filter, char **attrs, int depth)
{
    return blocking_search(arg, base, scope, filter, attrs, depth);
}

static int blocking_connect(struct table *t)
{
    for (int attempt = 0; attempt < t->nhosts; attempt++) {
        int host = pick_host(t);
        LDAP *ld = ldap_new(t, host, t->hosts[host].url, 0);
        int rc = LDAP_LOCAL_ERROR;
        if (ld) {
            if (t->bind) {
                struct berval cred = { strlen(t->bind_pw), (char *)t->bind_pw };
                rc = ldap_sasl_bind_s(ld, t->bind_dn, LDAP_SASL_SIMPLE, &cred, NULL, NULL, NULL);
            } else {
                rc = ldap_connect(ld);
            }
        }
        if (rc == LDAP_SUCCESS) {
            t->blocking = ld;
            return 0;
        }
        petrel_module_log(t->module, PETREL_LOG_WARNING, "ldap:%s: %s to %s: %s", t->config,
                          t->bind ? "bind" : "connect", t->hosts[host].url, ldap_err2string(rc));
        if (ld)
            ldap_unbind_ext(ld, NULL, NULL);
        t->hosts[host].dead_until = time(NULL) + HOST_RETRY_SECONDS;
    }
    return -1;
}

static int ldap_lookup(void *handle, const char *key, const char **value, petrel_pool *scratch)
{
    struct table *t = handle;
    if (!eligible(t, key))
        return 0;
    char *base, *filter;
    if (!make_search(t, key, &base, &filter))
        return 0;
    int status = -1;
    for (int attempt = 0; attempt < 2; attempt++) {
        if (t->blocking == NULL && blocking_connect(t) != 0) {
            petrel_module_log(t->module, PETREL_LOG_WARNING, "ldap:%s: no LDAP server available", t->config);
            break;
        }
        struct lookup lk = { .key = key };
        struct blocking_ctx x = { t, &lk, 0 };
        int rc = blocking_search(&x, base, t->scope, filter, t->attrs, 0);
        if (x.broken)
            blocking_drop(t);
        if (x.broken && lk.result.len == 0 && attempt == 0 && rc != 0) {
            free(lk.result.data);
            continue;   /* the connection broke: once more on a new one */
        }
        if (rc != 0 || lk.error)
            status = -1;
        else if (lk.result.len > 0)
            status = 1, *value = petrel_pool_strdup(scratch, lk.result.data);
        else
            status = 0;
        free(lk.result.data);
        break;
    }
    free(base);
    free(filter);
    return status;
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
            free(s->base);
            free(s);
        }
        if (c->watch)
            petrel_watch_cancel(c->watch);
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
    blocking_drop(t);
}

static const char *const known_names[] = {
    "server_host", "server_port", "version", "scope", "search_base", "timeout", "query_filter", "result_format",
    "result_filter", "terminal_result_attribute", "leaf_result_attribute", "result_attribute",
    "special_result_attribute", "bind", "bind_dn", "bind_pw", "cache", "cache_expiry", "cache_size",
    "recursion_limit", "expansion_limit", "size_limit", "dereference", "chase_referrals", "domain",
    "sasl_mechs", "sasl_realm", "sasl_authz_id", "sasl_minssf", "start_tls", "tls_ca_cert_file", "tls_ca_cert_dir",
    "tls_cert", "tls_key", "tls_require_cert", "tls_random_file", "tls_cipher_suite", "debuglevel", NULL,
};

static int parse_bool(const char *v, int *out)
{
    if (strcasecmp(v, "yes") == 0 || strcasecmp(v, "true") == 0 || strcmp(v, "1") == 0)
        *out = 1;
    else if (strcasecmp(v, "no") == 0 || strcasecmp(v, "false") == 0 || strcmp(v, "0") == 0)
        *out = 0;
    else
        return -1;
    return 0;
}

static int parse_long(const struct table_settings *c, const char *name, long def, long min, long *out,
                      petrel_pool *pool, const char **error)
{
    const char *v = table_settings_get(c, name, NULL);
    if (v == NULL) {
        *out = def;
        return 0;
    }
    char *end;
    errno = 0;
    long n = strtol(v, &end, 10);
    if (errno || *v == '\0' || *end != '\0' || n < min) {
        *error = petrel_pool_printf(pool, "line %d: %s: bad number \"%s\"", table_settings_line(c, name), name, v);
        return -1;
    }
    *out = n;
    return 0;
}

/* A server name the resolver must answer before libldap connects:
 * not an address, not localhost (/etc/hosts), not a socket. */
static int needs_resolving(const char *scheme, const char *host)
{
    unsigned char buf[sizeof(struct in6_addr)];
    if (host == NULL || *host == '\0' || strcasecmp(scheme, "ldap") != 0 || strcasecmp(host, "localhost") == 0)
        return 0;
    return inet_pton(AF_INET, host, buf) != 1 && inet_pton(AF_INET6, host, buf) != 1;
}

static int parse_hosts(struct table *t, const struct table_settings *c, petrel_pool *pool, const char **error)
{
    int line = table_settings_line(c, "server_host");
    long port;
    if (parse_long(c, "server_port", LDAP_PORT, 1, &port, pool, error) != 0)
        return -1;
    char *copy = petrel_pool_strdup(pool, table_settings_get(c, "server_host", "localhost")), *save = NULL;
    for (char *h = strtok_r(copy, ", \t", &save); h; h = strtok_r(NULL, ", \t", &save)) {
        if (t->nhosts == MAX_HOSTS) {
            *error = petrel_pool_printf(pool, "line %d: server_host: more than %d servers", line, MAX_HOSTS);
            return -1;
        }
        const char *url;
        if (ldap_is_ldap_url(h)) {
            LDAPURLDesc *desc = NULL;
            int rc = ldap_url_parse(h, &desc);
            if (rc != 0) {
                *error = petrel_pool_printf(pool, "line %d: server_host: bad URL \"%s\": %s", line, h,
                                            ldap_err2string(rc));
                return -1;
            }
            int tls = strcasecmp(desc->lud_scheme, "ldaps") == 0;
            struct ldap_host *slot = &t->hosts[t->nhosts];
            slot->scheme = petrel_pool_strdup(pool, desc->lud_scheme);
            slot->port = desc->lud_port ? desc->lud_port : LDAP_PORT;
            slot->name = needs_resolving(desc->lud_scheme, desc->lud_host) ? petrel_pool_strdup(pool, desc->lud_host)
                                                                           : NULL;
            ldap_free_urldesc(desc);
            if (tls) {
                *error = petrel_pool_printf(pool, "line %d: server_host: \"%s\": TLS to the LDAP server (ldaps) is "
                                            "not supported by Petrel's ldap module yet: use ldap:// on a trusted "
                                            "network or ldapi://", line, h);
                return -1;
            }
            url = h;
        } else {
            url = strrchr(h, ':') && h[0] != '[' ? petrel_pool_printf(pool, "ldap://%s", h)
                                                 : petrel_pool_printf(pool, "ldap://%s:%ld", h, port);
            LDAPURLDesc *desc = NULL;
            if (ldap_url_parse(url, &desc) != 0) {
                *error = petrel_pool_printf(pool, "line %d: server_host: bad server \"%s\"", line, h);
                return -1;
            }
            struct ldap_host *slot = &t->hosts[t->nhosts];
            slot->scheme = "ldap";
            slot->port = desc->lud_port ? desc->lud_port : (int)port;
            slot->name = needs_resolving("ldap", desc->lud_host) ? petrel_pool_strdup(pool, desc->lud_host) : NULL;
            ldap_free_urldesc(desc);
        }
        t->hosts[t->nhosts].url = url;
        t->hosts[t->nhosts].dead_until = 0;
        t->nhosts++;
    }
    if (t->nhosts == 0) {
        *error = petrel_pool_printf(pool, "line %d: server_host is empty", line);
        return -1;
    }
    return 0;
}

/* Appends the attribute names of list to t->attrs; returns how many. */
static int add_attributes(struct table *t, size_t *n, const char *list, petrel_pool *pool)
{
    int added = 0;
    char *copy = petrel_pool_strdup(pool, list), *save = NULL;
    for (char *a = strtok_r(copy, ", \t", &save); a; a = strtok_r(NULL, ", \t", &save)) {
        char **grown = petrel_pool_alloc(pool, (*n + 2) * sizeof(*grown));
        if (*n)
            memcpy(grown, t->attrs, *n * sizeof(*grown));
        grown[(*n)++] = a;
        grown[*n] = NULL;
        t->attrs = grown;
        added++;
    }
    return added;
}

static void *table_open(petrel_module *m, const char *name, petrel_pool *pool, const char **error)
{
    if (name[0] != '/' && name[0] != '.') {
        *error = petrel_pool_printf(pool, "parameters in main.cf (%s_server_host, ...) are not supported: name "
                                    "an ldap_table(5) configuration file by its path", name);
        return NULL;
    }
    struct table_settings c = { 0 };
    if (table_settings_read(name, &c, pool, error) != 0) {
        table_settings_free(&c);
        return NULL;
    }
    struct table *t = petrel_pool_zalloc(pool, sizeof(*t));
    t->module = m;
    t->config = petrel_pool_strdup(pool, name);
    void *result = NULL;
    table_settings_warn_unknown(&c, m, "ldap", name, known_names);

    /* What Petrel does not do: refused, or ignored with a warning. */
    const char *v;
    int flag = 0;
    if ((v = table_settings_get(&c, "start_tls", NULL)) && (parse_bool(v, &flag) != 0 || flag)) {
        *error = petrel_pool_printf(pool, "line %d: start_tls = %s: TLS to the LDAP server is not supported by "
                                    "Petrel's ldap module yet", table_settings_line(&c, "start_tls"), v);
        goto out;
    }
    if ((v = table_settings_get(&c, "chase_referrals", NULL)) && (parse_bool(v, &flag) != 0 || flag)) {
        *error = petrel_pool_printf(pool, "line %d: chase_referrals = %s: referrals are not followed by Petrel's "
                                    "ldap module (a referral is a lookup error)",
                                    table_settings_line(&c, "chase_referrals"), v);
        goto out;
    }
    static const char *const ignored[] = { "cache", "cache_expiry", "cache_size", "debuglevel", "tls_ca_cert_file",
                                           "tls_ca_cert_dir", "tls_cert", "tls_key", "tls_require_cert",
                                           "tls_random_file", "tls_cipher_suite", "sasl_mechs", "sasl_realm",
                                           "sasl_authz_id", "sasl_minssf", NULL };
    for (const char *const *k = ignored; *k; k++)
        if (table_settings_find(&c, *k))
            petrel_module_log(m, PETREL_LOG_WARNING, "ldap:%s, line %d: %s is ignored%s", name,
                              table_settings_line(&c, *k), *k,
                              strncmp(*k, "cache", 5) == 0 ? " (LDAP result caching is not supported, as in Postfix)"
                              : strncmp(*k, "tls", 3) == 0 ? " (no TLS to the LDAP server)"
                              : strncmp(*k, "sasl", 4) == 0 ? " (no SASL bind)" : "");
    const char *bind = table_settings_get(&c, "bind", "yes");
    if (strcasecmp(bind, "yes") == 0 || strcasecmp(bind, "simple") == 0 || strcasecmp(bind, "true") == 0 ||
        strcmp(bind, "1") == 0) {
        t->bind = 1;
    } else if (strcasecmp(bind, "no") == 0 || strcasecmp(bind, "none") == 0 || strcasecmp(bind, "false") == 0 ||
               strcmp(bind, "0") == 0) {
        t->bind = 0;
    } else if (strcasecmp(bind, "sasl") == 0) {
        *error = petrel_pool_printf(pool, "line %d: bind = sasl: SASL binds are not supported by Petrel's ldap "
                                    "module (use bind = yes with bind_dn and bind_pw)",
                                    table_settings_line(&c, "bind"));
        goto out;
    } else {
        *error = petrel_pool_printf(pool, "line %d: unsupported parameter value: bind = %s",
                                    table_settings_line(&c, "bind"), bind);
        goto out;
    }
    t->bind_dn = table_settings_get(&c, "bind_dn", "");
    t->bind_pw = table_settings_get(&c, "bind_pw", "");

    long version, timeout, deref;
    if (parse_long(&c, "version", 2, 2, &version, pool, error) != 0 ||
        parse_long(&c, "timeout", 10, 1, &timeout, pool, error) != 0 ||
        parse_long(&c, "expansion_limit", 0, 0, &t->expansion_limit, pool, error) != 0 ||
        parse_long(&c, "size_limit", t->expansion_limit, 0, &t->size_limit, pool, error) != 0 ||
        parse_long(&c, "recursion_limit", 1000, 1, &t->recursion_limit, pool, error) != 0 ||
        parse_long(&c, "dereference", 0, 0, &deref, pool, error) != 0)
        goto out;
    if (version != 2 && version != 3) {
        *error = petrel_pool_printf(pool, "line %d: version = %ld: LDAP versions are 2 and 3",
                                    table_settings_line(&c, "version"), version);
        goto out;
    }
    if (deref > 3) {
        *error = petrel_pool_printf(pool, "line %d: dereference = %ld: the values are 0 to 3",
                                    table_settings_line(&c, "dereference"), deref);
        goto out;
    }
    if (timeout > 3600)
        timeout = 3600;
    t->version = (int)version;
    t->deref = (int)deref;
    t->timeout_ms = (unsigned)timeout * 1000;
    const char *scope = table_settings_get(&c, "scope", "sub");
    if (strcasecmp(scope, "sub") == 0)
        t->scope = LDAP_SCOPE_SUBTREE;
    else if (strcasecmp(scope, "one") == 0)
        t->scope = LDAP_SCOPE_ONELEVEL;
    else if (strcasecmp(scope, "base") == 0)
        t->scope = LDAP_SCOPE_BASE;
    else {
        *error = petrel_pool_printf(pool, "line %d: scope = %s: the scopes are sub, one and base",
                                    table_settings_line(&c, "scope"), scope);
        goto out;
    }
    if (parse_hosts(t, &c, pool, error) != 0)
        goto out;

    t->search_base = table_settings_get(&c, "search_base", "");
    t->query_filter = table_settings_get(&c, "query_filter", "(mailacceptinggeneralid=%s)");
    t->result_format = table_settings_get(&c, "result_format", table_settings_get(&c, "result_filter", "%s"));
    char bad = 0;
    int dynamic = table_template_parse(&t->tpl, t->search_base, 1, &bad);
    if (dynamic < 0) {
        *error = petrel_pool_printf(pool, "line %d: search_base: invalid %%%c in \"%s\"",
                                    table_settings_line(&c, "search_base"), bad ? bad : ' ', t->search_base);
        goto out;
    }
    t->dynamic_base = dynamic > 0;
    dynamic = table_template_parse(&t->tpl, t->query_filter, 1, &bad);
    if (dynamic < 0) {
        *error = petrel_pool_printf(pool, "line %d: query_filter: invalid %%%c in \"%s\"",
                                    table_settings_line(&c, "query_filter"), bad ? bad : ' ', t->query_filter);
        goto out;
    }
    if (dynamic == 0)
        petrel_module_log(m, PETREL_LOG_WARNING, "ldap:%s: fixed query_filter %s is probably useless", name,
                          t->query_filter);
    if (table_template_parse(&t->tpl, t->result_format, 0, &bad) < 0) {
        *error = petrel_pool_printf(pool, "line %d: result_format: invalid %%%c in \"%s\"",
                                    table_settings_line(&c, table_settings_find(&c, "result_format")
                                                               ? "result_format" : "result_filter"),
                                    bad ? bad : ' ', t->result_format);
        goto out;
    }
    if (table_domains_parse(&t->domains, table_settings_get(&c, "domain", ""), table_settings_line(&c, "domain"),
                            "ldap", pool, error) != 0)
        goto out;

    size_t n = 0;
    t->attrs = petrel_pool_zalloc(pool, sizeof(*t->attrs));
    t->nterminal = add_attributes(t, &n, table_settings_get(&c, "terminal_result_attribute", ""), pool);
    t->nleaf = add_attributes(t, &n, table_settings_get(&c, "leaf_result_attribute", ""), pool);
    add_attributes(t, &n, table_settings_get(&c, "result_attribute", "maildrop"), pool);
    t->nordinary = (int)n;
    add_attributes(t, &n, table_settings_get(&c, "special_result_attribute", ""), pool);
    if (n == 0) {
        *error = petrel_pool_printf(pool, "no result attributes (result_attribute is empty)");
        goto out;
    }
    result = t;
out:
    table_settings_free(&c);
    return result;
}

static int table_pattern(void *handle)
{
    const struct table *t = handle;
    return table_template_partial(&t->tpl);
}

static const petrel_table_type table_types[] = {
    { PETREL_TABLE_TYPE_INIT, .name = "ldap", .open = table_open, .lookup = ldap_lookup, .close = table_close,
      .handle_pattern = table_pattern, .lookup_async = ldap_lookup_async },
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
