/*
 * The SMTP and LMTP clients of the queue manager, one set per transport:
 * a master.cf service whose command is smtp or lmtp (smtp, relay, a
 * "smtp-out unix ... smtp -o smtp_bind_address=192.0.2.7" line) delivers
 * with its own settings - main.cf plus that line's -o overrides, as each
 * Postfix smtp(8) process reads them - and a transport that master.cf does
 * not name reads main.cf. SMTP reads smtp_* parameters, LMTP their lmtp_*
 * twins (deliver/smtp_settings.c).
 *
 * Within a transport, smtp_tls_policy_maps (lmtp_tls_policy_maps) may give
 * a next hop another security level and attributes (Postfix's
 * smtp_tls_policy.c): the next hop as written, then, for a plain host
 * name, its parent domains (".example.com"); the value is "level attr=value ...":
 * match= (hostnames and nexthop/dot-nexthop/hostname for verify and secure,
 * separated by ':'; fingerprints separated by '|' for fingerprint),
 * protocols=, ciphers=, exclude=. Each distinct value gets its own client
 * (and connection cache). A level or attribute Petrel cannot apply (an
 * unknown one, dane-only) defers that next hop with Postfix's "client TLS
 * configuration problem"; dane degrades to may with a warning, as Postfix
 * degrades it without DNSSEC.
 *
 * SMTP AUTH in the client is per transport too: smtp_sasl_password_maps
 * (lmtp_sasl_password_maps) is opened from the transport's configuration,
 * so "relay ... -o smtp_sasl_auth_enable=yes -o smtp_sasl_password_maps=..."
 * authenticates on that transport only.
 *
 * Remote tables (pgsql:, socketmap:, ...) in either never block the loop
 * (doc/architecture.md, "Tables that wait"): the policy search runs in a
 * lookup scope of the delivery's own (struct policy_wait) and runs again
 * when the answers are in, the delivery waiting meanwhile; the password
 * search runs in a scope of the connection's own (struct sasl_wait), the
 * connection waiting after EHLO. A table that cannot answer defers, with
 * Postfix's texts, never "no policy" or "no password". Local tables take
 * the synchronous path, with no scope.
 */
#include "config.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <event2/event.h>

#include "config/cfg.h"
#include "deliver/smtp_client.h"
#include "lib/log.h"
#include "lib/xalloc.h"
#include "mail/addr_find.h"
#include "mail/maps.h"
#include "mail/notify.h"
#include "mail/smtp_syntax.h"
#include "qmgr/qmgr.h"
#include "qmgr/qmgr_int.h"
#include "tables/table.h"

struct policy_client {
    struct policy_client *next;
    char *value;                       /* the policy table's value, as found */
    struct smtp_client *client;        /* NULL: the value cannot be applied */
};

struct qmgr_transport {
    struct qmgr_transport *next;
    char *name;
    int lmtp;
    const struct cfg *cfg;             /* main.cf, or the service's with its -o overrides */
    struct smtp_client_settings set;
    struct smtp_client *client;        /* the transport's own level */
    struct tbl **policy;               /* smtp_tls_policy_maps */
    size_t npolicy;
    struct policy_client *by_policy;
    struct mail_maps sasl_maps;        /* smtp_sasl_password_maps, when AUTH is on */
    int sasl_maps_open;
    int sasl_remote;                   /* one of them is remote: lookups may wait */
    int policy_remote;                 /* a policy table is remote: lookups may wait */
    struct policy_wait *policy_waits;  /* jobs waiting for a policy */
    struct qmgr *q;
    const char *sasl_maps_param;
};

/* The configuration a transport reads: its master.cf service's, else main.cf. */
static const struct cfg *transport_cfg(const struct cfg *cfg, const char *name)
{
    for (size_t i = 0; i < cfg_service_count(cfg); i++) {
        const struct master_service *svc = cfg_service(cfg, i);
        if (strcmp(svc->name, name) == 0 && (svc->role == ROLE_SMTP || svc->role == ROLE_LMTP))
            return svc->cfg;
    }
    return cfg;
}

/* A connection's smtp_sasl_password_maps answers while a remote table
 * (pgsql:, socketmap:, ...) is asked: the lookups run in a scope of the
 * connection's own (doc/architecture.md, "Tables that wait"), so the
 * connection waits and every other delivery of the queue manager goes on. */
struct sasl_wait {
    struct qmgr_transport *t;
    struct tbl_scope *scope;
    void (*resume)(void *arg);
    void *resume_arg;
};

/* smtp_sasl_password_maps for the SMTP client (deliver/smtp_sasl.c): a
 * sender as Postfix's mail_addr_find looks it up (user+ext@domain,
 * user@domain, @domain), or a host name or next hop as written. With a
 * remote table the lookup runs in the connection's scope: an answer not in
 * yet is SMTP_SASL_LOOKUP_WAIT, and the client asks again once it is. */
static int sasl_lookup(void *arg, void **waitp, const char *key, int address, char **value)
{
    struct qmgr_transport *t = arg;
    struct sasl_wait *w = *waitp;
    if (w == NULL && t->sasl_remote) {
        w = xcalloc(1, sizeof(*w));
        w->t = t;
        w->scope = tbl_scope_new();
        *waitp = w;
    }
    petrel_pool *pool = petrel_pool_create(512);
    const char *v = NULL;
    int found;
    unsigned long before = 0;
    if (w) {
        tbl_scope_enter(t->q->tables, w->scope);
        before = tbl_scope_pending_count(w->scope);
    }
    if (address) {
        struct mail_addr a;
        mail_addr_split(key, "", pool, &a);
        found = mail_addr_find(&t->sasl_maps, &a, MAIL_FIND_ADDRESS, pool, &v);
    } else {
        found = mail_maps_get(&t->sasl_maps, key, pool, &v);
    }
    if (w) {
        if (tbl_scope_pending_count(w->scope) != before)
            found = SMTP_SASL_LOOKUP_WAIT;
        tbl_scope_leave(t->q->tables);
    }
    if (found == 1)
        *value = xstrdup(v);
    petrel_pool_destroy(pool);
    return found;
}

static void sasl_answered(void *arg)
{
    struct sasl_wait *w = arg;
    w->resume(w->resume_arg);
}

static int sasl_lookup_wait(void *arg, void *wait, void (*resume)(void *), void *resume_arg)
{
    (void)arg;
    struct sasl_wait *w = wait;
    w->resume = resume;
    w->resume_arg = resume_arg;
    return tbl_scope_fetch(w->scope, sasl_answered, w);
}

static void sasl_lookup_end(void *arg, void *wait)
{
    (void)arg;
    struct sasl_wait *w = wait;
    tbl_scope_free(w->scope);   /* cancels what is in flight */
    free(w);
}

static struct qmgr_transport *transport_get(struct qmgr *q, const char *name, int lmtp)
{
    for (struct qmgr_transport *t = q->transports; t; t = t->next)
        if (t->lmtp == lmtp && strcmp(t->name, name) == 0)
            return t;
    struct qmgr_transport *t = xcalloc(1, sizeof(*t));
    t->name = xstrdup(name);
    t->lmtp = lmtp;
    t->q = q;
    t->cfg = transport_cfg(q->cfg, name);
    char *error = NULL;
    /* checked by the master at load (qmgr_check_transports): failing here
     * means the configuration changed under us */
    if (smtp_client_settings_bind(t->cfg, lmtp, &t->set, &error) < 0)
        msg_fatal("transport %s: %s", name, error);
    t->set.dns = q->dns;
    t->set.workq = q->workq;
    t->set.metrics = q->metrics;
    t->set.metrics_transport = t->name;
    if (t->set.sasl_enable) {
        t->sasl_maps_param = lmtp ? "lmtp_sasl_password_maps" : "smtp_sasl_password_maps";
        if (mail_maps_open(&t->sasl_maps, t->cfg, q->tables, t->sasl_maps_param, 0, &error) != 0)
            msg_fatal("transport %s: %s", name, error);
        t->sasl_maps_open = 1;
        for (size_t i = 0; i < t->sasl_maps.n; i++)
            t->sasl_remote |= tbl_is_remote(t->sasl_maps.tables[i]);
        t->set.sasl_lookup = sasl_lookup;
        t->set.sasl_lookup_wait = sasl_lookup_wait;
        t->set.sasl_lookup_end = sasl_lookup_end;
        t->set.sasl_lookup_arg = t;
    }
    t->client = smtp_client_create(q->base, &t->set, &error);
    if (t->client == NULL)
        msg_fatal("transport %s: %s", name, error);
    const char *param = lmtp ? "lmtp_tls_policy_maps" : "smtp_tls_policy_maps";
    const char *const *specs = cfg_list(t->cfg, param);
    size_t n = 0;
    while (specs[n])
        n++;
    t->policy = xcalloc(n ? n : 1, sizeof(struct tbl *));
    for (size_t i = 0; i < n; i++) {
        char *why = NULL;
        struct tbl *tb = tbl_open(q->tables, specs[i], TBL_FLAG_FOLD_CASE, &why);
        if (tb == NULL)
            msg_fatal("%s: %s", param, why ? why : specs[i]);
        t->policy[t->npolicy++] = tb;
        t->policy_remote |= tbl_is_remote(tb);
    }
    t->next = q->transports;
    q->transports = t;
    return t;
}

/* Splits s at any of seps into a NULL-terminated list in pool. */
static const char **split(petrel_pool *pool, const char *s, const char *seps)
{
    size_t n = 1;
    for (const char *p = s; *p; p++)
        n += strchr(seps, *p) != NULL;
    const char **out = petrel_pool_zalloc(pool, (n + 1) * sizeof(char *));
    size_t k = 0;
    while (*s) {
        size_t len = strcspn(s, seps);
        if (len)
            out[k++] = petrel_pool_strndup(pool, s, len);
        s += len;
        if (*s)
            s++;
    }
    return out;
}

/* A policy table value ("level attr=value ...") applied to a copy of the
 * transport's settings; NULL with *why when it cannot be applied. */
static struct smtp_client *policy_client_make(struct qmgr *q, struct qmgr_transport *t, const char *key,
                                              const char *value, const char **why)
{
    petrel_pool *pool = petrel_pool_create(1024);
    struct smtp_client_settings set = t->set;
    const char *p = t->lmtp ? "lmtp" : "smtp";
    char *copy = petrel_pool_strdup(pool, value);
    char *save = NULL;
    char *word = strtok_r(copy, " \t,", &save);
    enum smtp_tls_level level;
    struct smtp_client *client = NULL;
    if (word == NULL || smtp_tls_level_parse(word, &level) != 0 || *word == '\0') {
        msg_warn("%s_tls_policy_maps: %s: unknown security level \"%s\"", p, key, word ? word : "");
        goto done;
    }
    if (level == SMTP_TLS_DANE_ONLY) {
        msg_warn("%s_tls_policy_maps: %s: dane-only configured, but Petrel has no DNSSEC-validated TLSA lookups",
                 p, key);
        goto done;
    }
    if (level == SMTP_TLS_DANE) {
        /* Postfix's dane without DNSSEC support: opportunistic TLS */
        msg_warn("%s_tls_policy_maps: %s: dane configured with dnssec lookups unavailable: using may", p, key);
        level = SMTP_TLS_MAY;
    }
    set.tls_level = level;
    for (char *attr = strtok_r(NULL, " \t,", &save); attr; attr = strtok_r(NULL, " \t,", &save)) {
        char *eq = strchr(attr, '=');
        if (eq == NULL) {
            msg_warn("%s_tls_policy_maps: %s: malformed attribute \"%s\"", p, key, attr);
            goto done;
        }
        *eq++ = '\0';
        if (strcasecmp(attr, "match") == 0) {
            if (level == SMTP_TLS_FINGERPRINT)
                set.tls_fingerprint_cert_match = split(pool, eq, "|");
            else if (level == SMTP_TLS_VERIFY || level == SMTP_TLS_SECURE)
                set.tls_verify_cert_match = set.tls_secure_cert_match = split(pool, eq, ":");
            else {
                msg_warn("%s_tls_policy_maps: %s: match= is not valid at level %s", p, key, word);
                goto done;
            }
        } else if (strcasecmp(attr, "protocols") == 0) {
            set.tls_protocols = set.tls_mandatory_protocols = eq;
        } else if (strcasecmp(attr, "ciphers") == 0) {
            set.tls_ciphers = set.tls_mandatory_ciphers = eq;
        } else if (strcasecmp(attr, "exclude") == 0) {
            set.tls_mandatory_exclude_ciphers = split(pool, eq, ":");
        } else {
            msg_warn("%s_tls_policy_maps: %s: attribute %s is not supported", p, key, attr);
            goto done;
        }
    }
    char *error = NULL;
    client = smtp_client_create(q->base, &set, &error);
    if (client == NULL) {
        msg_warn("%s_tls_policy_maps: %s: %s", p, key, error);
        free(error);
    }
done:
    petrel_pool_destroy(pool);
    if (client == NULL)
        *why = "client TLS configuration problem";
    return client;
}

/* A job whose next hop's smtp_tls_policy_maps search needs a remote
 * table's answer: the search runs in a scope of the job's own and runs
 * again when the answers are in (doc/architecture.md, "Tables that wait"). */
struct policy_wait {
    struct policy_wait *prev, *next;   /* the transport's, for the teardown */
    struct qmgr_transport *t;
    struct tbl_scope *scope;
    char *nexthop, *log_id;
    qmgr_client_fn *found;
    void *arg;
    unsigned rounds;
};

/* Postfix's smtp_tls_policy.c search: the next hop as written, then, when
 * it is a host name (not "[host]:port", "host:port" or an address), its
 * parent domains (".example.com"); in each key every table in order, the
 * first match wins and a table that cannot answer ends the search.
 * Returns TBL_FOUND with *client (NULL with *dsn, *why: the policy cannot
 * be applied), TBL_ERROR with *dsn, *why, or TBL_PENDING (inside a scope:
 * a remote table has not answered yet). */
static int policy_search(struct qmgr *q, struct qmgr_transport *t, const char *nexthop, struct smtp_client **client,
                         const char **dsn, const char **why)
{
    const char *p = t->lmtp ? "lmtp" : "smtp";
    *client = t->client;
    if (t->npolicy == 0 || nexthop == NULL)
        return TBL_FOUND;
    int domains = smtp_valid_hostname_8bit(nexthop);
    for (const char *key = nexthop; key; key = domains ? strchr(key + 1, '.') : NULL) {
        for (size_t i = 0; i < t->npolicy; i++) {
            const char *v;
            int r = tbl_lookup(t->policy[i], key, &v);
            if (r == TBL_PENDING)
                return TBL_PENDING;
            if (r == TBL_ERROR) {
                msg_warn("%s_tls_policy_maps, next-hop destination \"%s\": policy table lookup error", p, key);
                *client = NULL;
                *dsn = "4.7.5";
                *why = "client TLS configuration problem";
                return TBL_ERROR;
            }
            if (r != TBL_FOUND)
                continue;
            struct policy_client *pc;
            for (pc = t->by_policy; pc; pc = pc->next)
                if (strcmp(pc->value, v) == 0)
                    break;
            if (pc == NULL) {
                const char *ignored;
                pc = xcalloc(1, sizeof(*pc));
                pc->value = xstrdup(v);
                pc->client = policy_client_make(q, t, key, v, &ignored);
                pc->next = t->by_policy;
                t->by_policy = pc;
            }
            *client = pc->client;
            if (pc->client == NULL) {
                *dsn = "4.7.5";
                *why = "client TLS configuration problem";
            }
            return TBL_FOUND;
        }
    }
    return TBL_FOUND;
}

static void policy_wait_free(struct policy_wait *w)
{
    struct qmgr_transport *t = w->t;
    if (w->prev)
        w->prev->next = w->next;
    else
        t->policy_waits = w->next;
    if (w->next)
        w->next->prev = w->prev;
    tbl_scope_free(w->scope);   /* cancels what is in flight */
    free(w->nexthop);
    free(w->log_id);
    free(w);
}

static void policy_answered(void *arg);

/* One pass of the search in w's scope; 1 when it is over (found() called,
 * w freed), 0 when it waits for answers. */
static int policy_pass(struct policy_wait *w)
{
    struct qmgr_transport *t = w->t;
    struct qmgr *q = t->q;
    for (;;) {
        struct smtp_client *client = NULL;
        const char *dsn = NULL, *why = NULL;
        tbl_scope_enter(q->tables, w->scope);
        int r = policy_search(q, t, w->nexthop, &client, &dsn, &why);
        tbl_scope_leave(q->tables);
        if (r != TBL_PENDING) {
            if (w->rounds)
                msg_info("%s: TLS policy for next hop %s after %u round%s of %s lookups", w->log_id, w->nexthop,
                         w->rounds, w->rounds == 1 ? "" : "s", t->lmtp ? "lmtp_tls_policy_maps" : "smtp_tls_policy_maps");
            qmgr_client_fn *found = w->found;
            void *arg = w->arg;
            policy_wait_free(w);
            found(arg, client, dsn, why);
            return 1;
        }
        w->rounds++;
        if (tbl_scope_fetch(w->scope, policy_answered, w))
            return 0;
        /* every answer came at once: search again now */
    }
}

static void policy_answered(void *arg)
{
    policy_pass(arg);
}

void qmgr_smtp_client_find(struct qmgr *q, const char *transport, int lmtp, const char *nexthop, const char *log_id,
                           qmgr_client_fn *found, void *arg)
{
    struct qmgr_transport *t = transport_get(q, transport, lmtp);
    if (!t->policy_remote || nexthop == NULL) {
        /* local tables: the synchronous search, as always */
        struct smtp_client *client = NULL;
        const char *dsn = NULL, *why = NULL;
        policy_search(q, t, nexthop, &client, &dsn, &why);
        found(arg, client, dsn, why);
        return;
    }
    struct policy_wait *w = xcalloc(1, sizeof(*w));
    w->t = t;
    w->scope = tbl_scope_new();
    w->nexthop = xstrdup(nexthop);
    w->log_id = xstrdup(log_id);
    w->found = found;
    w->arg = arg;
    w->next = t->policy_waits;
    if (w->next)
        w->next->prev = w;
    t->policy_waits = w;
    if (!policy_pass(w))
        msg_info("%s: waiting for %s lookups for next hop %s", log_id,
                 lmtp ? "lmtp_tls_policy_maps" : "smtp_tls_policy_maps", nexthop);
}

void qmgr_transports_free(struct qmgr *q)
{
    while (q->transports) {
        struct qmgr_transport *t = q->transports;
        q->transports = t->next;
        while (t->policy_waits)   /* jobs that waited; the process is ending */
            policy_wait_free(t->policy_waits);
        smtp_client_free(t->client);
        while (t->by_policy) {
            struct policy_client *pc = t->by_policy;
            t->by_policy = pc->next;
            smtp_client_free(pc->client);
            free(pc->value);
            free(pc);
        }
        for (size_t i = 0; i < t->npolicy; i++)
            tbl_close(t->policy[i]);
        free(t->policy);
        if (t->sasl_maps_open)
            mail_maps_close(&t->sasl_maps);
        free(t->name);
        free(t);
    }
}

/* One transport's settings, as a queue manager would build them. */
static int check_one(const struct cfg *cfg, int lmtp, struct event_base *base, char **error)
{
    struct smtp_client_settings set;
    if (smtp_client_settings_bind(cfg, lmtp, &set, error) < 0)
        return -1;
    struct smtp_client *c = smtp_client_create(base, &set, error);
    if (c == NULL)
        return -1;
    smtp_client_free(c);
    return 0;
}

/* Whether virtual_transport names a master.cf service that runs the
 * virtual delivery agent (transport_maps may name one too: those are
 * looked up per message and not checked here). */
static int virtual_agent_used(const struct cfg *cfg)
{
    const char *transport = cfg_get(cfg, "virtual_transport");
    if (transport == NULL)
        return 0;
    size_t len = strcspn(transport, ":");
    char *name = strndup(transport, len);
    const struct master_service *svc = name ? cfg_find_service(cfg, name) : NULL;
    int used = svc == NULL ? name != NULL && strcmp(name, "virtual") == 0 : strcmp(svc->command, "virtual") == 0;
    free(name);
    return used;
}

int qmgr_check_transports(const struct cfg *cfg, const struct cfg **where, char **error)
{
    *where = cfg;
    /* Postfix's local(8) and virtual(8) refuse to start with a mailbox
     * limit that a message may exceed: the queue file could not be read
     * back into a mailbox of that size */
    static const char *const limits[] = { "mailbox_size_limit", "virtual_mailbox_limit" };
    long long message_limit = cfg_int(cfg, "message_size_limit");
    for (int k = 0; k < 2; k++) {
        /* Postfix's virtual(8) checks its limit when it starts, which it
         * does only when mail goes to it: a configuration whose
         * virtual_transport is another agent (lmtp:..., mailcow and most
         * hosting stacks) runs with any virtual_mailbox_limit. */
        if (k == 1 && !virtual_agent_used(cfg))
            continue;
        long long limit = cfg_int(cfg, limits[k]);
        if (limit > 0 && message_limit == 0) {
            if (asprintf(error, "%s: configuration error: %s is limited but message_size_limit is unlimited",
                         limits[k], limits[k]) < 0)
                *error = NULL;
            return -1;
        }
        if (limit > 0 && limit < message_limit) {
            if (asprintf(error, "%s: configuration error: %s is smaller than message_size_limit", limits[k],
                         limits[k]) < 0)
                *error = NULL;
            return -1;
        }
    }
    unsigned classes;
    const char *bad = NULL;
    if (mail_notify_classes(cfg_list(cfg, "notify_classes"), &classes, &bad) != 0) {
        if (asprintf(error, "notify_classes: unknown class \"%s\" (expected bounce, 2bounce, data, delay, policy, "
                     "protocol, resource, software)", bad) < 0)
            *error = NULL;
        return -1;
    }
    /* The queue manager sends the bounce, 2bounce and delay copies; the
     * session transcripts of the other classes are not written. Postfix's
     * default (resource, software) is documented; a list the admin wrote
     * is warned about, naming what will not happen. */
    unsigned transcripts = classes & (MAIL_NOTIFY_POLICY | MAIL_NOTIFY_PROTOCOL | MAIL_NOTIFY_RESOURCE |
                                      MAIL_NOTIFY_SOFTWARE | MAIL_NOTIFY_DATA);
    if (transcripts && !cfg_is_default(cfg, "notify_classes")) {
        static const struct { unsigned bit; const char *name; } names[] = {
            { MAIL_NOTIFY_POLICY, "policy" }, { MAIL_NOTIFY_PROTOCOL, "protocol" },
            { MAIL_NOTIFY_RESOURCE, "resource" }, { MAIL_NOTIFY_SOFTWARE, "software" }, { MAIL_NOTIFY_DATA, "data" },
        };
        char list[80] = "";
        for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
            if (transcripts & names[i].bit)
                snprintf(list + strlen(list), sizeof(list) - strlen(list), "%s%s", *list ? ", " : "", names[i].name);
        msg_warn("notify_classes: %s: not implemented: the postmaster (error_notice_recipient) will NOT get "
                 "these session transcripts; only bounce, 2bounce and delay notices are sent", list);
    }
    struct event_base *base = event_base_new();
    int rc = 0;
    /* main.cf for transports master.cf does not name (smtp, lmtp), then
     * each smtp or lmtp service with its -o overrides */
    if (check_one(cfg, 0, base, error) < 0 || check_one(cfg, 1, base, error) < 0) {
        rc = -1;
    } else {
        for (size_t i = 0; i < cfg_service_count(cfg) && rc == 0; i++) {
            const struct master_service *svc = cfg_service(cfg, i);
            if (svc->role != ROLE_SMTP && svc->role != ROLE_LMTP)
                continue;
            if (check_one(svc->cfg, svc->role == ROLE_LMTP, base, error) < 0) {
                *where = svc->cfg;
                rc = -1;
            }
        }
    }
    event_base_free(base);
    if (rc == 0) {
        static const char *const dnssec[] = { "smtp_dns_support_level", "lmtp_dns_support_level" };
        for (int k = 0; k < 2; k++)
            if (strcasecmp(cfg_get(cfg, dnssec[k]), "dnssec") == 0)
                msg_warn("%s = dnssec: Petrel does not validate DNSSEC; lookups are made as with enabled "
                         "(and the dane security levels are refused)", dnssec[k]);
    }
    return rc;
}
