/*
 * The restrictions that ask the DNS, on the worker's loop (lib/dns.h, the
 * `dns_resolver`): reject_unknown_helo_hostname, reject_unknown_sender_domain,
 * reject_unknown_recipient_domain, and the check_*_{a,mx,ns}_access family
 * (Postfix's check_server_access).
 *
 * Postfix asks for the record types one after the other; here they go out
 * together and the answers are combined as Postfix's dns_lookup_l() combines
 * them: any answer wins; otherwise a temporary failure (SERVFAIL, timeout,
 * a resolver that does not answer) beats "not found", so a DNS that is down
 * never gives a permanent refusal: those restrictions then defer
 * (*_tempfail_action = defer_if_permit by default: 450 at the end of the
 * command unless something else refuses permanently).
 *
 * check_*_{mx,ns}_access look up the servers' addresses in parallel too,
 * then walk the servers in Postfix's order (name, then each address and its
 * networks), so the first match is the one Postfix would find.
 *
 * That walk runs in a DNS completion, outside the restriction engine's walk
 * and its lookup scope, so it has a scope of its own (struct dns_work's
 * tables, sized for every key of up to ADDRESS_MAX addresses): a remote
 * table with no answer yet counts as "not known" and the walk goes on, so
 * the first key of every server's search is fetched at once, in parallel;
 * the walk then runs again over the answers, until a match has only
 * "not found" before it (the one Postfix would find) or nothing is left
 * unknown. The session waits meanwhile; the worker serves the others.
 */
#include "config.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include <unicode/uidna.h>

#include "lib/dns.h"
#include "lib/log.h"
#include "mail/addr_class.h"
#include "smtpd/restrict_int.h"
#include "smtpd/smtpd_int.h"
#include "tables/access.h"
#include "tables/cidr.h"
#include "tables/table.h"

#define BATCH_MAX 24           /* queries in flight for one restriction */
#define SERVER_MAX 10          /* MX or NS hosts whose addresses are looked up */
#define ADDRESS_MAX 100        /* Postfix's dns_rr_list_limit */
/* The server walk's remote answers: a name and its parents, an address and
 * its networks (IPv6: up to 8 prefixes), for every server. */
#define WALK_ANSWERS_MAX 2048

struct lookup {
    enum dns_type type;
    const char *name;
    enum dns_status status;
    size_t count;
    const char **values;
    int null_mx;               /* MX: one record pointing at "." (RFC 7505) */
    int warned;                /* the server walk said it has no address (once) */
    struct dns_query *query;
    struct dns_work *owner;
};

/* One DNS restriction in progress; lives in the command's pool. */
struct dns_work {
    struct smtpd_session *s;
    const struct restrict_step *step;
    const char *domain;        /* what the restriction is about (ASCII) */
    const char *reply_name, *reply_class;
    struct lookup lookups[BATCH_MAX];
    int n, pending, starting;
    int phase;                 /* check_server: 0 the MX/NS list, 1 the servers' addresses */
    int first_server;
    void (*next)(struct dns_work *w);
    /* Answers can come before the restriction returns (a name refused by
     * the resolver library, numeric servers): the verdict then goes back
     * as the step's return value, never through restrict_step_done(). */
    int in_start, decided;
    enum restrict_verdict verdict;
    struct restrict_result result;
    /* check_*_{a,mx,ns}_access: the remote tables' answers for the server
     * walk (malloc'd; freed when the step finishes or is cancelled). */
    struct tbl_scope *tables;
};

/* ------------------------------------------------------------------ */
/* parallel lookups                                                    */

static void batch_finished(struct dns_work *w)
{
    if (w->pending == 0 && !w->starting)
        w->next(w);
}

static void lookup_answered(const struct dns_answer *a, void *arg)
{
    struct lookup *l = arg;
    struct dns_work *w = l->owner;
    petrel_pool *pool = smtpd_cmd_pool(w->s);
    l->query = NULL;
    l->status = a->status;
    l->count = a->count;
    l->values = petrel_pool_zalloc(pool, (a->count ? a->count : 1) * sizeof(*l->values));
    for (size_t i = 0; i < a->count; i++)
        l->values[i] = petrel_pool_strdup(pool, a->values[i]);
    if (l->type == DNS_MX && a->status == DNS_OK && a->count == 1 && a->preferences && a->preferences[0] == 0 &&
        (a->values[0][0] == '\0' || strcmp(a->values[0], ".") == 0))
        l->null_mx = 1;
    w->pending--;
    batch_finished(w);
}

static void add_lookup(struct dns_work *w, enum dns_type type, const char *name)
{
    if (w->n >= BATCH_MAX)
        return;
    struct lookup *l = &w->lookups[w->n++];
    memset(l, 0, sizeof(*l));
    l->type = type;
    l->name = name;
    l->owner = w;
    l->status = DNS_TEMPFAIL;
    w->pending++;
    l->query = dns_lookup(w->s->worker->dns, type, name, lookup_answered, l);
}

static void free_tables(struct dns_work *w)
{
    if (w->tables) {
        tbl_scope_free(w->tables);   /* cancels what is in flight */
        w->tables = NULL;
    }
}

static void cancel_work(void *ctx)
{
    struct dns_work *w = ctx;
    for (int i = 0; i < w->n; i++)
        if (w->lookups[i].query) {
            dns_cancel(w->lookups[i].query);
            w->lookups[i].query = NULL;
        }
    free_tables(w);
}

/* Starts lookups added between begin_batch() and run_batch(); next(w)
 * runs when every one has answered (maybe before run_batch returns, when
 * none had to wait: then the caller gets 0). Returns 1 when it waits. */
static void begin_batch(struct dns_work *w, void (*next)(struct dns_work *))
{
    w->starting = 1;
    w->next = next;
}

static int run_batch(struct dns_work *w)
{
    w->starting = 0;
    return w->pending > 0;
}

static void finish(struct dns_work *w, enum restrict_verdict v, const struct restrict_result *r)
{
    free_tables(w);
    if (w->in_start) {
        w->decided = 1;
        w->verdict = v;
        w->result = *r;
        return;
    }
    restrict_step_done(w->s, v, r);
}

/* Starts w (its lookups call finish() at the end): the step's verdict now,
 * or RV_PENDING. */
static enum restrict_verdict start(struct dns_work *w, void (*begin)(struct dns_work *), struct restrict_result *r)
{
    restrict_wait(w->s, cancel_work, w);
    w->in_start = 1;
    begin(w);
    w->in_start = 0;
    if (!w->decided)
        return RV_PENDING;
    w->s->check->waiting = 0;
    *r = w->result;
    return w->verdict;
}

/* ------------------------------------------------------------------ */
/* names                                                               */

/* The A-label form of a domain (Postfix converts UTF-8 domains with
 * midna_domain_to_ascii); NULL when it has none (then nothing is
 * concluded from the DNS). */
static const char *ascii_domain(petrel_pool *pool, const char *domain)
{
    int ascii = 1;
    for (const char *p = domain; *p; p++)
        if ((unsigned char)*p >= 0x80)
            ascii = 0;
    if (ascii)
        return domain;
    UErrorCode err = U_ZERO_ERROR;
    UIDNA *idna = uidna_openUTS46(UIDNA_NONTRANSITIONAL_TO_ASCII, &err);
    if (U_FAILURE(err))
        return NULL;
    char out[256];
    UIDNAInfo info = UIDNA_INFO_INITIALIZER;
    int32_t len = uidna_nameToASCII_UTF8(idna, domain, -1, out, (int32_t)sizeof(out) - 1, &info, &err);
    uidna_close(idna);
    if (U_FAILURE(err) || info.errors != 0 || len <= 0 || len >= (int32_t)sizeof(out))
        return NULL;
    out[len] = '\0';
    return petrel_pool_strdup(pool, out);
}

static int is_address(const char *text)
{
    struct cidr_addr a;
    return *text != '[' && cidr_addr_parse(text, &a) == 0;
}

/* ------------------------------------------------------------------ */
/* reject_unknown_helo_hostname (Postfix's reject_unknown_hostname)     */

static enum restrict_verdict unknown_hostname_verdict(struct dns_work *w, struct restrict_result *r)
{
    struct smtpd_session *s = w->s;
    int temporary = 0;
    for (int i = 0; i < w->n; i++) {
        /* An answer of any type will do; MTA names may have a null MX. */
        if (w->lookups[i].status == DNS_OK)
            return RV_DUNNO;
        if (w->lookups[i].status == DNS_TEMPFAIL)
            temporary = 1;
    }
    if (temporary)
        return restrict_defer_if_permit(s, s->check, s->set->unknown_helo_tf_defer_if_permit, RCLASS_POLICY, 450,
                                        "4.7.1", r, "<%s>: %s rejected: Host not found", w->reply_name,
                                        w->reply_class);
    return restrict_refuse(s, s->check, RCLASS_POLICY, s->set->unknown_hostname_code, "4.7.1", r,
                           "<%s>: %s rejected: Host not found", w->reply_name, w->reply_class);
}

static void unknown_hostname_done(struct dns_work *w)
{
    struct restrict_result r = { .verdict = RV_DUNNO };
    enum restrict_verdict v = unknown_hostname_verdict(w, &r);
    finish(w, v, &r);
}

static void begin_unknown_hostname(struct dns_work *w)
{
    begin_batch(w, unknown_hostname_done);
    add_lookup(w, DNS_A, w->domain);
    add_lookup(w, DNS_AAAA, w->domain);
    add_lookup(w, DNS_MX, w->domain);
    if (!run_batch(w))
        unknown_hostname_done(w);
}

/* ------------------------------------------------------------------ */
/* reject_unknown_{sender,recipient}_domain (reject_unknown_mailhost)   */

static enum restrict_verdict unknown_mailhost_verdict(struct dns_work *w, struct restrict_result *r)
{
    struct smtpd_session *s = w->s;
    int sender = w->step->kind == STEP_REJECT_UNKNOWN_SENDER_DOMAIN;
    const char *dsn = sender ? "4.1.8" : "4.1.2";
    const struct lookup *mx = &w->lookups[0];
    if (mx->status == DNS_OK && mx->null_mx)
        return restrict_refuse(s, s->check, RCLASS_POLICY, sender ? 550 : 556, sender ? "4.7.27" : "4.1.10", r,
                               "<%s>: %s rejected: Domain %s does not accept mail (nullMX)", w->reply_name,
                               w->reply_class, w->domain);
    int temporary = 0;
    for (int i = 0; i < w->n; i++) {
        if (w->lookups[i].status == DNS_OK)
            return RV_DUNNO;
        if (w->lookups[i].status == DNS_TEMPFAIL)
            temporary = 1;
    }
    if (temporary)
        return restrict_defer_if_permit(s, s->check, s->set->unknown_address_tf_defer_if_permit, RCLASS_POLICY, 450,
                                        dsn, r, "<%s>: %s rejected: Domain not found", w->reply_name,
                                        w->reply_class);
    return restrict_refuse(s, s->check, RCLASS_POLICY, s->set->unknown_address_code, dsn, r,
                           "<%s>: %s rejected: Domain not found", w->reply_name, w->reply_class);
}

static void unknown_mailhost_done(struct dns_work *w)
{
    struct restrict_result r = { .verdict = RV_DUNNO };
    enum restrict_verdict v = unknown_mailhost_verdict(w, &r);
    finish(w, v, &r);
}

static void begin_unknown_mailhost(struct dns_work *w)
{
    begin_batch(w, unknown_mailhost_done);
    add_lookup(w, DNS_MX, w->domain);   /* first: a null MX decides */
    add_lookup(w, DNS_A, w->domain);
    add_lookup(w, DNS_AAAA, w->domain);
    if (!run_batch(w))
        unknown_mailhost_done(w);
}

/* ------------------------------------------------------------------ */
/* check_*_{a,mx,ns}_access (Postfix's check_server_access)             */

static const char *type_name(int type)
{
    return type == DNS_MX ? "MX" : type == DNS_NS ? "NS" : "A";
}

/* The access action for a server address (the address and its networks)
 * or name (and its parent domains). found: 1 when the table answered, 0
 * when it has not, -1 when a remote table has no answer yet (inside a
 * lookup scope: TBL_PENDING). */
static enum restrict_verdict check_one(struct dns_work *w, const char *key, int is_name, int *found,
                                       struct restrict_result *r)
{
    struct smtpd_session *s = w->s;
    const char *value = NULL;
    int rc = is_name ? tbl_access_lookup_domain(w->step->table, key, &value)
                     : tbl_access_lookup_client(w->step->table, NULL, key, &value);
    if (rc == TBL_NOTFOUND || rc == TBL_PENDING) {
        *found = rc == TBL_PENDING ? -1 : 0;
        return RV_DUNNO;
    }
    *found = 1;
    if (rc == TBL_ERROR) {
        msg_warn("%s: table lookup error: %s", w->step->name, tbl_spec(w->step->table));
        value = "451 4.3.5 Server configuration error";
    }
    return restrict_apply_action(s, s->check, tbl_spec(w->step->table), value, key, w->reply_name, w->reply_class,
                                 r);
}

/* Postfix's forbid_allowlist(): a name found through the DNS may not say OK. */
static enum restrict_verdict forbid_ok(struct dns_work *w, enum restrict_verdict v, struct restrict_result *r)
{
    struct smtpd_session *s = w->s;
    if (v != RV_PERMIT || (s->tx && s->tx->discard))
        return v;
    msg_warn("restriction %s returns OK for %s", w->step->name, w->reply_name);
    msg_warn("this is not allowed for security reasons");
    msg_warn("use DUNNO instead of OK if you want to make an exception");
    return restrict_server_error(s, s->check, r);
}

/* Walks the servers in order (their names and addresses are known); the
 * first table match decides. Returns 1 when a remote table must answer
 * first (a key before the first match, or any key when none matched, is
 * still unknown): the keys are then missing in the current lookup scope. */
static int walk_servers(struct dns_work *w, enum restrict_verdict *verdict, struct restrict_result *r)
{
    enum restrict_verdict v = RV_DUNNO;
    int type = w->step->number;
    int found = 0, addresses = 0, unknown = 0;
    for (int i = w->first_server; i < w->n; i += 2) {
        const char *server = w->lookups[i].name;
        if (type != DNS_A) {
            v = check_one(w, server, 1, &found, r);
            if (found < 0)
                unknown = 1;
            if (found > 0)
                break;
        }
        int resolved = 0;
        for (int k = i; k < i + 2 && k < w->n && found <= 0; k++) {
            const struct lookup *l = &w->lookups[k];
            if (l->status != DNS_OK)
                continue;
            resolved = 1;
            for (size_t a = 0; a < l->count && found <= 0; a++) {
                if (++addresses > ADDRESS_MAX) {
                    if (unknown)
                        return 1;
                    msg_warn("check_server_access: %s server address count limit (%d) exceeded for %s %s -- "
                             "ignoring the remainder", type_name(type), ADDRESS_MAX, w->reply_class, w->reply_name);
                    *verdict = RV_DUNNO;
                    *r = (struct restrict_result){ .verdict = RV_DUNNO };
                    return 0;
                }
                v = check_one(w, l->values[a], 0, &found, r);
                if (found < 0)
                    unknown = 1;
            }
        }
        if (!resolved && type != DNS_A && !w->lookups[i].warned) {
            w->lookups[i].warned = 1;
            msg_warn("Unable to look up %s host %s for %s %s: %s", type_name(type), server, w->reply_class,
                     w->reply_name, dns_status_text(w->lookups[i].status));
        }
        if (found > 0)
            break;
    }
    if (unknown)
        return 1;   /* whatever matched after an unknown key may not be the first match */
    *verdict = found > 0 ? forbid_ok(w, v, r) : RV_DUNNO;
    if (found <= 0)
        *r = (struct restrict_result){ .verdict = RV_DUNNO };
    return 0;
}

static void servers_done(struct dns_work *w);

static void walk_tables_answered(void *arg)
{
    servers_done(arg);
}

/* Every server and its addresses are known: walk them, inside the walk's
 * own lookup scope, until the remote tables have answered what decides. */
static void servers_done(struct dns_work *w)
{
    struct smtpd_session *s = w->s;
    struct tbl_registry *reg = s->worker->tables;
    if (w->tables == NULL)
        w->tables = tbl_scope_new_sized(WALK_ANSWERS_MAX);
    for (;;) {
        struct restrict_result r = { .verdict = RV_DUNNO };
        enum restrict_verdict v = RV_DUNNO;
        tbl_scope_enter(reg, w->tables);
        int wait = walk_servers(w, &v, &r);
        tbl_scope_leave(reg);
        if (w->in_start)
            tbl_scope_enter(reg, s->lookups);   /* back in the restriction walk's scope */
        if (!wait) {
            finish(w, v, &r);
            return;
        }
        if (!tbl_scope_missing(w->tables)) {
            /* Cannot happen (an unknown key is a missing one); never loop. */
            msg_warn("%s: table lookup error: %s", w->step->name, tbl_spec(w->step->table));
            v = restrict_server_error(s, s->check, &r);
            finish(w, v, &r);
            return;
        }
        if (tbl_scope_fetch(w->tables, walk_tables_answered, w))
            return;   /* walk_tables_answered() runs the walk again */
    }
}

/* Looks up the addresses of each server name (numeric ones are used as
 * they are). */
static void resolve_servers(struct dns_work *w, const char **names, size_t count)
{
    w->phase = 1;
    w->first_server = w->n;
    begin_batch(w, servers_done);
    for (size_t i = 0; i < count && i < SERVER_MAX && w->n + 2 <= BATCH_MAX; i++) {
        const char *name = names[i];
        if (is_address(name)) {
            /* A pseudo-answer: the address itself, no lookup. */
            for (int k = 0; k < 2; k++) {
                struct lookup *l = &w->lookups[w->n++];
                memset(l, 0, sizeof(*l));
                l->name = name;
                l->owner = w;
                l->type = DNS_A;
                l->status = k == 0 ? DNS_OK : DNS_NODATA;
                l->count = k == 0;
                l->values = petrel_pool_zalloc(smtpd_cmd_pool(w->s), sizeof(*l->values));
                l->values[0] = name;
            }
            continue;
        }
        add_lookup(w, DNS_A, name);
        add_lookup(w, DNS_AAAA, name);
    }
    if (!run_batch(w))
        servers_done(w);
}

/* The MX or NS list of w->domain has answered. */
static void server_list_done(struct dns_work *w)
{
    struct lookup *l = &w->lookups[w->n - 1];
    int type = w->step->number;
    if (l->status == DNS_OK && l->null_mx) {
        struct restrict_result r = { .verdict = RV_DUNNO };
        finish(w, RV_DUNNO, &r);
        return;
    }
    if (l->status == DNS_NXDOMAIN || l->status == DNS_NODATA) {
        if (type == DNS_MX) {
            /* No MX: the domain is its own mail server. */
            const char *self[1] = { w->domain };
            resolve_servers(w, self, 1);
            return;
        }
        /* No NS: the parent domain's servers. */
        const char *dot = strchr(l->name, '.');
        if (dot && dot[1] && w->n < BATCH_MAX - 2 * SERVER_MAX) {
            begin_batch(w, server_list_done);
            add_lookup(w, DNS_NS, dot + 1);
            if (!run_batch(w))
                server_list_done(w);
            return;
        }
    }
    if (l->status != DNS_OK) {
        msg_warn("Unable to look up %s host for %s: %s", type_name(type), l->name, dns_status_text(l->status));
        struct restrict_result r = { .verdict = RV_DUNNO };
        finish(w, RV_DUNNO, &r);
        return;
    }
    resolve_servers(w, l->values, l->count);
}

/* ------------------------------------------------------------------ */

static void begin_check_server(struct dns_work *w)
{
    int type = w->step->number;
    if (type == DNS_A) {
        const char *self[1] = { w->domain };
        resolve_servers(w, self, 1);
        return;
    }
    begin_batch(w, server_list_done);
    add_lookup(w, type, w->domain);
    if (!run_batch(w))
        server_list_done(w);
}

static enum restrict_verdict start_check_server(struct smtpd_session *s, struct restrict_run *run,
                                                struct dns_work *w, const char *subject, struct restrict_result *r)
{
    const char *at = strrchr(subject, '@');
    const char *domain = at ? at + 1 : subject;
    int type = w->step->number;
    if (*domain == '\0')
        return RV_DUNNO;
    if (*domain == '[') {
        /* An address literal is its own mail server (no NS). */
        size_t len = strlen(domain);
        if (type == DNS_NS || len < 3 || domain[len - 1] != ']')
            return RV_DUNNO;
        char *bare = petrel_pool_strndup(smtpd_cmd_pool(s), domain + 1, len - 2);
        if (strncasecmp(bare, "IPv6:", 5) == 0)
            bare += 5;
        if (!is_address(bare))
            return RV_DUNNO;
        int found = 0;
        enum restrict_verdict v = check_one(w, bare, 0, &found, r);
        if (found < 0)
            return RV_PENDING;   /* the restriction walk's scope fetches it, then runs the step again */
        return found ? forbid_ok(w, v, r) : RV_DUNNO;
    }
    w->domain = ascii_domain(smtpd_cmd_pool(s), domain);
    if (w->domain == NULL) {
        msg_warn("%s: cannot convert %s to ASCII for a DNS lookup: restriction skipped", w->step->name, domain);
        return RV_DUNNO;
    }
    (void)run;
    return start(w, begin_check_server, r);
}

enum restrict_verdict restrict_run_dns(struct smtpd_session *s, struct restrict_run *run,
                                       const struct restrict_step *step, struct restrict_result *r)
{
    petrel_pool *pool = smtpd_cmd_pool(s);
    struct dns_work *w = petrel_pool_zalloc(pool, sizeof(*w));
    w->s = s;
    w->step = step;
    const char *sender = s->tx ? s->tx->mail.address : NULL;
    switch (step->kind) {
    case STEP_REJECT_UNKNOWN_HELO: {
        if (s->helo == NULL)
            return RV_DUNNO;
        if (*s->helo == '[') {
            if (smtp_valid_address_literal(s->helo))
                return RV_DUNNO;
            return restrict_refuse(s, run, RCLASS_POLICY, s->set->invalid_hostname_code, "5.5.2", r,
                                   "<%s>: %s rejected: invalid ip address", s->helo, SUBJECT_HELO);
        }
        w->reply_name = s->helo;
        w->reply_class = SUBJECT_HELO;
        w->domain = ascii_domain(pool, s->helo);
        if (w->domain == NULL)
            return restrict_refuse(s, run, RCLASS_POLICY, s->set->unknown_hostname_code, "4.7.1", r,
                                   "<%s>: %s rejected: Host not found", w->reply_name, w->reply_class);
        return start(w, begin_unknown_hostname, r);
    }
    case STEP_REJECT_UNKNOWN_SENDER_DOMAIN:
    case STEP_REJECT_UNKNOWN_RCPT_DOMAIN: {
        int is_sender = step->kind == STEP_REJECT_UNKNOWN_SENDER_DOMAIN;
        const char *address = is_sender ? sender : run->rcpt;
        if (address == NULL || *address == '\0')
            return RV_DUNNO;
        const char *at = strrchr(address, '@');
        /* No domain, an address literal, or one of ours: nothing to ask. */
        if (at == NULL || at[1] == '\0' || at[1] == '[')
            return RV_DUNNO;
        enum mail_class cls = mail_domain_class(&s->set->domains, at + 1);
        if (cls == MAIL_CLASS_ERROR)   /* a table of a domain list failed: we cannot tell whose it is */
            return restrict_lookup_failure(s, run, address, r);
        if (cls == MAIL_CLASS_LOCAL || cls == MAIL_CLASS_VIRTUAL_ALIAS || cls == MAIL_CLASS_VIRTUAL_MAILBOX)
            return RV_DUNNO;
        w->reply_name = address;
        w->reply_class = is_sender ? SUBJECT_SENDER : SUBJECT_RECIPIENT;
        w->domain = ascii_domain(pool, at + 1);
        if (w->domain == NULL)
            return restrict_refuse(s, run, RCLASS_POLICY, s->set->unknown_address_code, is_sender ? "4.1.8" : "4.1.2",
                                   r, "<%s>: %s rejected: Domain not found", w->reply_name, w->reply_class);
        return start(w, begin_unknown_mailhost, r);
    }
    default:
        break;
    }
    /* check_*_{a,mx,ns}_access */
    const char *subject = NULL;
    switch (step->target) {
    case TARGET_CLIENT:
        if (strcasecmp(s->name, "unknown") == 0)
            return RV_DUNNO;
        subject = s->name, w->reply_name = s->namaddr, w->reply_class = SUBJECT_CLIENT;
        break;
    case TARGET_REVERSE_CLIENT:
        if (strcasecmp(s->reverse_name, "unknown") == 0)
            return RV_DUNNO;
        subject = s->reverse_name, w->reply_name = s->reverse_name, w->reply_class = SUBJECT_REVERSE_CLIENT;
        break;
    case TARGET_HELO:
        if (s->helo == NULL)
            return RV_DUNNO;
        subject = s->helo, w->reply_name = s->helo, w->reply_class = SUBJECT_HELO;
        break;
    case TARGET_SENDER:
        if (sender == NULL || *sender == '\0')
            return RV_DUNNO;
        subject = sender, w->reply_name = sender, w->reply_class = SUBJECT_SENDER;
        break;
    case TARGET_RECIPIENT:
        if (run->rcpt == NULL || *run->rcpt == '\0')
            return RV_DUNNO;
        subject = run->rcpt, w->reply_name = run->rcpt, w->reply_class = SUBJECT_RECIPIENT;
        break;
    }
    return start_check_server(s, run, w, subject, r);
}
