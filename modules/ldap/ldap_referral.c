/*
 * Referral chasing (chase_referrals = yes) for ldap: tables, without
 * libldap's own: LDAP_OPT_REFERRALS would connect, bind and search the
 * referred server with blocking calls inside ldap_result(), on the event
 * loop. Here a referral (an LDAP_REFERRAL result, or a search
 * continuation reference in a subtree search's results) becomes a search
 * of its own: the same filter and attributes, the base, scope and filter
 * of the URL when it names them (RFC 4511 4.1.10 and 4.5.3, as libldap
 * does), sent on a connection to the referred server that is made on a
 * worker thread (ldap_setup.c, as TLS and SASL connections are) and then
 * read on the loop. The results come back through ldap_search_finished
 * (ldap.c), which reads their entries into the lookup and chases their
 * own referrals in turn.
 *
 * Bounds, as libldap's: at most REFERRAL_HOP_LIMIT (5) referrals in a
 * row; a referral to a server and base already on the way is a loop.
 * Each table keeps at most REFERRAL_MAX_CONNS connections to referred
 * servers, reused by the next referral to the same one; an idle one
 * makes room for another server. The lookup's timeout covers the whole
 * chase. A referral that cannot be followed (hop limit, loop, a URL that
 * is not ldap:// or ldaps://, a server that does not answer, no room in
 * the pool) fails the lookup temporarily: 451, never "not found".
 *
 * The referred server is bound anonymously, as libldap does for Postfix
 * (dict_ldap sets no rebind procedure): the table's bind_dn and bind_pw
 * are for its own servers, never sent where a directory points. The
 * table's TLS settings apply to an ldaps:// referral, and start_tls = yes
 * to an ldap:// one too (the lookup is not sent in clear because a
 * server pointed elsewhere).
 */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <lber.h>
#include <ldap.h>

#include <petrel/plugin.h>

#include "ldap_table.h"
#include "ldap_url.h"

void ldap_spec_free(struct search_spec *spec)
{
    free(spec->base);
    free(spec->filter);
    free(spec->trail);
    free(spec->attrs);
    memset(spec, 0, sizeof(*spec));
}

char **ldap_attrs_copy(char *const *attrs)
{
    size_t n = 0;
    while (attrs[n])
        n++;
    char **copy = calloc(n + 1, sizeof(*copy));
    if (copy == NULL)
        abort();
    memcpy(copy, attrs, n * sizeof(*copy));
    return copy;
}

static char *copy_or_die(const char *s)
{
    char *d = strdup(s);
    if (d == NULL)
        abort();
    return d;
}

/* ------------------------------------------------------------------ */
/* the referrals of a result                                           */

static int chase_first(struct table *t, const char *key, char **urls, int (*chase)(void *, const char *), void *arg)
{
    for (int i = 0; urls && urls[i]; i++)
        if (ldap_is_ldap_url(urls[i]))
            return chase(arg, urls[i]);
    petrel_module_log(t->module, PETREL_LOG_WARNING, "ldap:%s: referral for \"%.100s\" without an LDAP URL (%.200s): "
                      "not followed", t->config, key, urls && urls[0] ? urls[0] : "none");
    return -1;
}

int ldap_referrals_each(struct table *t, LDAP *ld, LDAPMessage *res, const char *key,
                        int (*chase)(void *arg, const char *url), void *arg)
{
    int rc = 0;
    for (LDAPMessage *ref = ldap_first_reference(ld, res); ref && rc == 0; ref = ldap_next_reference(ld, ref)) {
        char **urls = NULL;
        if (ldap_parse_reference(ld, ref, &urls, NULL, 0) != LDAP_SUCCESS) {
            petrel_module_log(t->module, PETREL_LOG_WARNING, "ldap:%s: unreadable search reference for \"%.100s\"",
                              t->config, key);
            rc = -1;
        } else {
            rc = chase_first(t, key, urls, chase, arg);
        }
        ber_memvfree((void **)urls);
    }
    int err = LDAP_SUCCESS;
    char **urls = NULL;
    if (rc == 0 && ldap_parse_result(ld, res, &err, NULL, NULL, &urls, NULL, 0) == LDAP_SUCCESS &&
        err == LDAP_REFERRAL)
        rc = chase_first(t, key, urls, chase, arg);
    ber_memvfree((void **)urls);
    return rc;
}

/* ------------------------------------------------------------------ */
/* where a referral leads                                              */

int ldap_referral_prepare(struct table *t, const char *key, const char *url, const struct search_spec *from,
                          const char *from_url, struct search_spec *next, char **server)
{
    memset(next, 0, sizeof(*next));
    *server = NULL;
    if (from->hops >= REFERRAL_HOP_LIMIT) {
        petrel_module_log(t->module, PETREL_LOG_WARNING, "ldap:%s: referral hop limit (%d) exceeded for \"%.100s\" "
                          "at %.200s", t->config, REFERRAL_HOP_LIMIT, key, url);
        return -1;
    }
    struct referral_target target;
    const char *why = NULL;
    if (ldap_referral_target(url, from->base, from->scope, from->filter, &target, &why) != 0) {
        petrel_module_log(t->module, PETREL_LOG_WARNING, "ldap:%s: referral to %.200s for \"%.100s\": %s: not "
                          "followed", t->config, url, key, why);
        return -1;
    }
    /* The trail starts with where the first search went. */
    char *trail;
    if (from->trail) {
        trail = copy_or_die(from->trail);
    } else {
        char first[LDAP_SERVER_NAME_MAX] = "";
        if (from_url)
            ldap_server_name(from_url, first);
        trail = ldap_trail_line(first, from->base);
    }
    char *line = ldap_trail_line(target.server, target.base);
    if (ldap_trail_has(trail, line)) {
        petrel_module_log(t->module, PETREL_LOG_WARNING, "ldap:%s: referral loop for \"%.100s\": %.200s was referred "
                          "to already", t->config, key, line);
        free(line);
        free(trail);
        ldap_referral_target_free(&target);
        return -1;
    }
    size_t n = strlen(trail) + strlen(line) + 2;
    next->trail = malloc(n);
    if (next->trail == NULL)
        abort();
    snprintf(next->trail, n, "%s\n%s", trail, line);
    free(line);
    free(trail);
    next->base = target.base;
    next->filter = target.filter;
    next->scope = target.scope;
    next->attrs = ldap_attrs_copy(from->attrs);
    next->depth = from->depth;
    next->hops = from->hops + 1;
    *server = copy_or_die(target.server);
    return 0;
}

/* ------------------------------------------------------------------ */
/* connections to referred servers                                     */

/* A search sent (or to be sent, while the connection is being made). */
struct ref_search {
    struct ref_search *next;
    struct request *r;
    int msgid;
    struct search_spec spec;
};

struct referral_conn {
    struct referral_conn *next;
    struct table *t;
    char *server;                     /* "scheme://host:port" */
    LDAP *ld;                         /* NULL while being made */
    int fd;
    petrel_watch *watch;
    struct ldap_setup_job *setup;     /* the worker's job, while being made */
    struct ref_search *sent, *waiting;
    unsigned long id;                 /* conn_alive's check */
    int reading;                      /* its results are being read: not closed as idle meanwhile */
    int broken;                       /* a send failed: no more searches, dropped from the loop */
    petrel_timer *drop_timer;
};

static void ref_io(int fd, int events, void *arg);

/* Frees c (off the pool already, its searches taken). */
static void conn_release(struct referral_conn *c)
{
    if (c->watch)
        petrel_watch_cancel(c->watch);
    if (c->drop_timer)
        petrel_timer_cancel(c->drop_timer);
    if (c->setup)
        c->setup->owner = NULL;   /* the worker's result is thrown away */
    if (c->ld)
        ldap_unbind_ext(c->ld, NULL, NULL);
    free(c->server);
    free(c);
}

/* Whether c (numbered id) is still in the pool: a callback's check after
 * calls that may have dropped it. */
static int conn_alive(const struct table *t, const struct referral_conn *c, unsigned long id)
{
    for (const struct referral_conn *o = t->referrals; o; o = o->next)
        if (o == c && o->id == id)
            return 1;
    return 0;
}

/* Fails the lookups of the searches of list (each lookup once), freeing
 * the list. */
static void fail_searches(struct ref_search *list)
{
    while (list) {
        struct ref_search *s = list;
        list = s->next;
        struct request *r = s->r;
        ldap_spec_free(&s->spec);
        free(s);
        if (r == NULL)
            continue;
        for (struct ref_search *o = list; o; o = o->next)
            if (o->r == r)
                o->r = NULL;   /* answered by this failure already */
        ldap_search_finished(r, NULL, NULL, NULL, NULL);
    }
}

static void unlink_conn(struct table *t, struct referral_conn *c)
{
    for (struct referral_conn **p = &t->referrals; *p; p = &(*p)->next)
        if (*p == c) {
            *p = c->next;
            t->nreferrals--;
            return;
        }
}

/* Closes c, failing the lookups of its searches. */
static void ref_drop(struct referral_conn *c)
{
    struct table *t = c->t;
    unlink_conn(t, c);
    struct ref_search *list = c->sent;
    if (list) {
        struct ref_search *last = list;
        while (last->next)
            last = last->next;
        last->next = c->waiting;
    } else {
        list = c->waiting;
    }
    c->sent = c->waiting = NULL;
    conn_release(c);
    fail_searches(list);
}

/* Sends s on the ready connection; 0, or -1 (the connection is broken). */
static int ref_send(struct referral_conn *c, struct ref_search *s)
{
    struct table *t = c->t;
    int sizelimit = t->size_limit ? (int)t->size_limit : LDAP_NO_LIMIT;
    struct timeval tv = { (time_t)((t->timeout_ms + 999) / 1000), 0 };
    int rc = ldap_search_ext(c->ld, s->spec.base, s->spec.scope, s->spec.filter, s->spec.attrs, 0, NULL, NULL, &tv,
                             sizelimit, &s->msgid);
    if (rc != LDAP_SUCCESS) {
        petrel_module_log(t->module, PETREL_LOG_WARNING, "ldap:%s: search on referred server %s: %s", t->config,
                          c->server, ldap_err2string(rc));
        return -1;
    }
    s->next = c->sent;
    c->sent = s;
    return 0;
}

/* Sends what waited for the connection. */
static void ref_flush(struct referral_conn *c)
{
    while (c->waiting) {
        struct ref_search *s = c->waiting;
        c->waiting = s->next;
        if (ref_send(c, s) != 0) {
            s->next = c->waiting;
            c->waiting = s;
            ref_drop(c);
            return;
        }
    }
}

static void ref_setup_done(void *owner, LDAP *ld, const char *diag)
{
    struct referral_conn *c = owner;
    struct table *t = c->t;
    c->setup = NULL;
    if (ld == NULL)
        petrel_module_log(t->module, PETREL_LOG_WARNING, "ldap:%s: referred server %s: %s", t->config, c->server,
                          diag);
    c->ld = ld;
    int fd = -1;
    if (ld == NULL || ldap_get_option(ld, LDAP_OPT_DESC, &fd) != LDAP_OPT_SUCCESS || fd < 0) {
        ref_drop(c);
        return;
    }
    c->fd = fd;
    int flags = fcntl(fd, F_GETFL);
    if (flags >= 0)
        fcntl(fd, F_SETFL, flags | O_NONBLOCK);
    c->watch = petrel_watch_fd(t->module, fd, PETREL_WATCH_READ, ref_io, c);
    if (c->watch == NULL) {
        ref_drop(c);
        return;
    }
    ref_flush(c);
}

/* One search's result on a referred server's connection (ldap_read_ready's
 * on_result). Nonzero when c is gone: dropped by what the answer did, or
 * here for a search error. */
static int ref_result(void *arg, LDAPMessage *res)
{
    struct referral_conn *c = arg;
    struct table *t = c->t;
    unsigned long id = c->id;
    int msgid = ldap_msgid(res);
    struct ref_search **p = &c->sent;
    while (*p && (*p)->msgid != msgid)
        p = &(*p)->next;
    if (*p == NULL) {
        ldap_msgfree(res);   /* abandoned: its lookup is gone */
        return 0;
    }
    struct ref_search *s = *p;
    *p = s->next;
    char *server = copy_or_die(c->server);
    c->reading = 1;
    int drop = ldap_search_finished(s->r, c->ld, res, &s->spec, server);
    free(server);
    ldap_msgfree(res);
    ldap_spec_free(&s->spec);
    free(s);
    if (!conn_alive(t, c, id))
        return 1;   /* dropped meanwhile (its lookups answered) */
    c->reading = 0;
    if (drop) {
        ref_drop(c);
        return 1;
    }
    return 0;
}

static void ref_io(int fd, int events, void *arg)
{
    (void)fd;
    (void)events;
    struct referral_conn *c = arg;
    struct table *t = c->t;
    int err;
    if (ldap_read_ready(c->ld, ref_result, c, &err) == 0)
        return;
    petrel_module_log(t->module, PETREL_LOG_WARNING, "ldap:%s: connection to referred server %s: %s", t->config,
                      c->server, ldap_err2string(err));
    ref_drop(c);
}

/* A connection to server: the pool's, or a new one being made (an idle
 * one closed for it when the pool is full). NULL when there is no room. */
static struct referral_conn *ref_conn(struct table *t, const char *server)
{
    struct referral_conn *idle = NULL;
    for (struct referral_conn *c = t->referrals; c; c = c->next) {
        if (c->broken)
            continue;
        if (strcmp(c->server, server) == 0)
            return c;
        if (c->ld && !c->reading && c->sent == NULL && c->waiting == NULL)
            idle = c;
    }
    if (t->nreferrals >= REFERRAL_MAX_CONNS) {
        if (idle == NULL) {
            petrel_module_log(t->module, PETREL_LOG_WARNING, "ldap:%s: referral to %s: the %d connections to referred "
                              "servers are all busy", t->config, server, REFERRAL_MAX_CONNS);
            return NULL;
        }
        ref_drop(idle);   /* nothing in flight: nobody fails */
    }
    struct referral_conn *c = calloc(1, sizeof(*c));
    if (c == NULL)
        abort();
    c->t = t;
    c->server = copy_or_die(server);
    c->fd = -1;
    c->setup = ldap_setup_job_new(t, server, c, ref_setup_done);
    c->setup->s.bind = 0;   /* anonymous, as libldap binds for Postfix */
    c->setup->s.tls = t->tls || strncmp(server, "ldaps:", 6) == 0;
    if (ldap_setup_job_run(t->module, c->setup) != 0) {
        petrel_module_log(t->module, PETREL_LOG_WARNING, "ldap:%s: referral to %s: no worker thread in this process "
                          "to connect", t->config, server);
        free(c->server);
        free(c);
        return NULL;
    }
    c->id = ++t->referral_serial;
    c->next = t->referrals;
    t->referrals = c;
    t->nreferrals++;
    return c;
}

static void drop_later(void *arg)
{
    struct referral_conn *c = arg;
    c->drop_timer = NULL;
    ref_drop(c);
}

/* c gets no more searches, and is dropped from the loop (its other
 * lookups failing there): not at once, since the caller may be answering
 * a lookup that has searches on it. Without a timer it stays out of use
 * until the table closes. */
static void mark_broken(struct referral_conn *c)
{
    c->broken = 1;
    if (c->drop_timer == NULL)
        c->drop_timer = petrel_timer_start(c->t->module, 0, drop_later, c);
}

int ldap_referral_send(struct table *t, struct request *r, const char *server, struct search_spec *next)
{
    struct referral_conn *c = ref_conn(t, server);
    if (c == NULL) {
        ldap_spec_free(next);
        return -1;
    }
    struct ref_search *s = calloc(1, sizeof(*s));
    if (s == NULL)
        abort();
    s->r = r;
    s->spec = *next;
    memset(next, 0, sizeof(*next));
    if (c->ld == NULL) {
        s->next = c->waiting;
        c->waiting = s;
        return 0;
    }
    if (ref_send(c, s) == 0)
        return 0;
    ldap_spec_free(&s->spec);
    free(s);
    mark_broken(c);
    return -1;
}

static void forget_in(struct ref_search **list, struct referral_conn *c, struct request *r)
{
    for (struct ref_search **p = list; *p;) {
        struct ref_search *s = *p;
        if (s->r != r) {
            p = &s->next;
            continue;
        }
        *p = s->next;
        if (c && c->ld)
            ldap_abandon_ext(c->ld, s->msgid, NULL, NULL);
        ldap_spec_free(&s->spec);
        free(s);
    }
}

void ldap_referral_timed_out(struct table *t, struct request *r)
{
    for (struct referral_conn *c = t->referrals; c; c = c->next) {
        /* Being made (the worker's result is then thrown away) or
         * connected, it did not answer r in time. */
        int late = 0;
        for (struct ref_search *s = c->waiting; s && !late; s = s->next)
            late = s->r == r;
        for (struct ref_search *s = c->sent; s && !late; s = s->next)
            late = s->r == r;
        if (!late)
            continue;
        petrel_module_log(t->module, PETREL_LOG_WARNING, "ldap:%s: referred server %s: no answer in time", t->config,
                          c->server);
        mark_broken(c);
    }
}

void ldap_referral_forget(struct table *t, struct request *r)
{
    for (struct referral_conn *c = t->referrals; c; c = c->next) {
        forget_in(&c->sent, c, r);
        forget_in(&c->waiting, NULL, r);
    }
}

static void free_list(struct ref_search *list, void (*free_request)(struct request *))
{
    while (list) {
        struct ref_search *s = list;
        list = s->next;
        if (s->r && free_request) {
            for (struct ref_search *o = list; o; o = o->next)
                if (o->r == s->r)
                    o->r = NULL;
            free_request(s->r);   /* its searches here are forgotten with it */
        }
        ldap_spec_free(&s->spec);
        free(s);
    }
}

void ldap_referral_close(struct table *t, void (*free_request)(struct request *))
{
    /* The lookups still in flight here only: the core made their handles
     * stale already. free_request forgets a lookup's searches on every
     * connection, so each list is taken off its connection first. */
    for (struct referral_conn *c = t->referrals; c; c = c->next) {
        while (c->sent || c->waiting) {
            struct ref_search *list = c->sent ? c->sent : c->waiting;
            if (list == c->sent)
                c->sent = NULL;
            else
                c->waiting = NULL;
            free_list(list, free_request);
        }
    }
    while (t->referrals) {
        struct referral_conn *c = t->referrals;
        t->referrals = c->next;
        conn_release(c);
    }
    t->nreferrals = 0;
}
