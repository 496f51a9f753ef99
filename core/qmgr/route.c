/*
 * Routing (see route.h). Lookups follow Postfix's key order for address
 * maps (user+ext@domain, user@domain, @domain) and for aliases (local part,
 * then without the extension). Rewriting is breadth-first over a work list
 * with a visited set: an address that maps back to itself is delivered as
 * is (Postfix's rule), a longer cycle or more than 1000 expansions is a
 * 5.4.6 loop.
 *
 * Commands ("|cmd") and files ("/path") are delivery targets only when an
 * admin's table names them: a value of alias_maps (or an address listed in
 * an alias's :include: file), allowed by allow_mail_to_commands /
 * allow_mail_to_files as in Postfix's local(8). Every work item carries
 * where it came from; an envelope recipient, a canonical or virtual alias
 * result is always an address, never a command or a file, whatever its
 * local part looks like. Such deliveries run as default_privs.
 */
#include "config.h"

#include <ctype.h>
#include <errno.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "config/bind.h"
#include "config/cfg.h"
#include "lib/buf.h"
#include "lib/log.h"
#include "lib/xalloc.h"
#include "mail/addr_class.h"
#include "mail/addr_find.h"
#include "mail/maps.h"
#include "mail/resolve.h"
#include "mail/rewrite.h"
#include "mail/smtp_syntax.h"
#include "qmgr/route.h"
#include "tables/table.h"

#define EXPANSION_LIMIT 1000
#define RECURSION_LIMIT 100

/* Where an address came from (Postfix's EXPAND_TYPE_* bits, so that
 * allow_mail_to_commands / allow_mail_to_files read as masks of them). */
enum expansion_origin {
    FROM_ENVELOPE = 0,   /* the recipient, or a canonical / virtual alias result */
    FROM_ALIAS = 1,      /* a value of alias_maps */
    FROM_FORWARD = 2,    /* a .forward file (not supported: never set) */
    FROM_INCLUDE = 4,    /* a line of an alias's :include: file */
};

struct router {
    const struct cfg *cfg;
    const char *myorigin, *mailbox_base, *home_mailbox, *spool, *delimiter;
    struct mail_domains domains;
    struct mail_resolve resolve;              /* class -> transport, transport_maps, relayhost (mail/resolve.h) */
    struct mail_maps valias, vmailbox, vuid, vgid, aliases;
    struct mail_rewrite rewrite;              /* canonical maps and masquerading (mail/rewrite.h) */
    unsigned command_origins, file_origins;   /* allow_mail_to_commands / _files as origin masks */
    const char *default_privs;                /* the user commands and files from aliases run as */
    const char *default_filter_nexthop;       /* a content filter's next hop when it names none */
    long long virtual_minimum_uid;            /* smaller uids from virtual_uid_maps are refused */
};

#define R(name, kind, field) CFG_BIND(name, kind, struct router, field)
static const struct cfg_bind router_binds[] = {
    R("myorigin", STR, myorigin),
    R("virtual_mailbox_base", STR, mailbox_base),
    R("home_mailbox", STR, home_mailbox),
    R("mail_spool_directory", STR, spool),
    R("recipient_delimiter", STR, delimiter),
    R("default_privs", STR, default_privs),
    R("default_filter_nexthop", STR, default_filter_nexthop),
    R("virtual_minimum_uid", LONG, virtual_minimum_uid),
    CFG_BIND_READ("allow_mail_to_commands"),
    CFG_BIND_READ("allow_mail_to_files"),
    CFG_BIND_READ("virtual_alias_maps"),
    CFG_BIND_READ("virtual_maps"),          /* Postfix 1.x's name, through virtual_alias_maps' default */
    CFG_BIND_READ("virtual_mailbox_maps"),
    CFG_BIND_READ("virtual_uid_maps"),
    CFG_BIND_READ("virtual_gid_maps"),
    CFG_BIND_READ("alias_maps"),
};
/* Also read: the address classes' domain lists, the resolution's transports
 * and tables and the rewriting (core/mail). */
const struct cfg_bind_table router_bind_table = CFG_BIND_TABLE("router", router_binds);

/* allow_mail_to_commands / allow_mail_to_files: a list of alias, forward, include. */
static int origin_mask(const struct cfg *cfg, const char *param, unsigned *mask, char **error)
{
    *mask = 0;
    for (const char *const *v = cfg_list(cfg, param); *v; v++) {
        if (strcasecmp(*v, "alias") == 0)
            *mask |= FROM_ALIAS;
        else if (strcasecmp(*v, "forward") == 0)
            *mask |= FROM_FORWARD;
        else if (strcasecmp(*v, "include") == 0)
            *mask |= FROM_INCLUDE;
        else {
            char *line = xasprintf("%s: unknown value \"%s\" (alias, forward, include)", param, *v);
            xappend_line(error, line);
            free(line);
            return -1;
        }
    }
    return 0;
}

/* A next hop of the SMTP (lmtp 0) or LMTP client, checked when the
 * configuration is loaded (petreld -n, start, reload) rather than at the
 * first delivery. Returns 1 after appending "param: why" to *error. */
static int bad_nexthop(const char *param, const char *nexthop, int lmtp, char **error)
{
    const char *why = NULL;
    if (smtp_nexthop_check(nexthop, lmtp, &why) == 0)
        return 0;
    char *line = xasprintf("%s: bad next hop \"%s\": %s", param, nexthop, why);
    xappend_line(error, line);
    free(line);
    return 1;
}

/* The next hop of a "transport:nexthop" parameter whose transport is an
 * SMTP or LMTP client, found as apply_transport finds it. */
static int bad_transport_nexthop(const struct router *r, const char *param, const char *spec, char **error)
{
    const char *colon = spec ? strchr(spec, ':') : NULL;
    if (colon == NULL || colon[1] == '\0')
        return 0;
    size_t len = (size_t)(colon - spec);
    int lmtp = -1;
    if ((len == 4 && strncmp(spec, "smtp", 4) == 0) || (len == 5 && strncmp(spec, "relay", 5) == 0))
        lmtp = 0;
    else if (len == 4 && strncmp(spec, "lmtp", 4) == 0)
        lmtp = 1;
    for (size_t i = 0; lmtp < 0 && i < cfg_service_count(r->cfg); i++) {
        const struct master_service *svc = cfg_service(r->cfg, i);
        if (strlen(svc->name) == len && strncmp(svc->name, spec, len) == 0 &&
            (svc->role == ROLE_SMTP || svc->role == ROLE_LMTP))
            lmtp = svc->role == ROLE_LMTP;
    }
    return lmtp < 0 ? 0 : bad_nexthop(param, colon + 1, lmtp, error);
}

struct router *router_create(const struct cfg *cfg, struct tbl_registry *reg, int quiet, char **error)
{
    struct router *r = xcalloc(1, sizeof(*r));
    r->cfg = cfg;
    cfg_bind_apply(cfg, &router_bind_table, r);
    /* Everything is tried, so that each problem is reported (petreld -n). */
    int q = quiet ? MAIL_MAPS_QUIET : 0;
    int failed = mail_domains_open(&r->domains, cfg, reg, quiet, error);
    failed |= mail_resolve_open(&r->resolve, cfg, reg, q, error) != 0;
    if (!quiet)
        mail_domains_warn_overlaps(&r->domains);
    const struct mail_resolve *res = &r->resolve;
    if (res->relayhost && *res->relayhost)
        failed |= bad_nexthop("relayhost", res->relayhost, 0, error);
    failed |= bad_transport_nexthop(r, "local_transport", res->local_transport, error) |
              bad_transport_nexthop(r, "virtual_transport", res->virtual_transport, error) |
              bad_transport_nexthop(r, "relay_transport", res->relay_transport, error) |
              bad_transport_nexthop(r, "default_transport", res->default_transport, error);
    failed |= origin_mask(cfg, "allow_mail_to_commands", &r->command_origins, error) |
              origin_mask(cfg, "allow_mail_to_files", &r->file_origins, error);
    failed |= mail_maps_open(&r->valias, cfg, reg, "virtual_alias_maps", q, error) |
              mail_maps_open(&r->vmailbox, cfg, reg, "virtual_mailbox_maps", q, error) |
              mail_maps_open(&r->vuid, cfg, reg, "virtual_uid_maps", q, error) |
              mail_maps_open(&r->vgid, cfg, reg, "virtual_gid_maps", q, error) |
              mail_maps_open(&r->aliases, cfg, reg, "alias_maps", q | MAIL_MAPS_DEFAULT_ALIASES_OPTIONAL, error) |
              mail_rewrite_open(&r->rewrite, cfg, reg, quiet, error);
    if (failed) {
        router_free(r);
        return NULL;
    }
    /* The class cache serves routing as it serves smtpd's RCPTs: Postfix's
     * queue manager gets the same from resolve_clnt's cache. */
    mail_domains_cache(&r->domains, cfg);
    return r;
}

void router_free(struct router *r)
{
    if (r == NULL)
        return;
    mail_domains_close(&r->domains);
    mail_maps_close(&r->valias);
    mail_maps_close(&r->vmailbox);
    mail_maps_close(&r->vuid);
    mail_maps_close(&r->vgid);
    mail_maps_close(&r->aliases);
    mail_resolve_close(&r->resolve);
    mail_rewrite_close(&r->rewrite);
    free(r);
}

/* ------------------------------------------------------------------ */
/* lookups                                                             */

/* Postfix's address map order: user+ext@domain, user@domain, @domain. */
static int address_lookup(struct mail_maps *m, const struct mail_addr *a, petrel_pool *pool, const char **value)
{
    return mail_addr_find(m, a, MAIL_FIND_ADDRESS, pool, value);
}

static struct route *add_route(struct route_list *out, petrel_pool *pool, size_t *cap)
{
    if (out->count == *cap) {
        size_t ncap = *cap ? *cap * 2 : 4;
        struct route *grown = petrel_pool_zalloc(pool, ncap * sizeof(*grown));
        if (out->count)
            memcpy(grown, out->items, out->count * sizeof(*grown));
        out->items = grown;
        *cap = ncap;
    }
    struct route *rt = &out->items[out->count++];
    memset(rt, 0, sizeof(*rt));
    rt->uid = rt->gid = -1;
    return rt;
}

static void route_error(struct route *rt, const char *address, const char *dsn, const char *text)
{
    rt->kind = dsn[0] == '4' ? ROUTE_RETRY : ROUTE_ERROR;
    rt->transport = dsn[0] == '4' ? "retry" : "error";
    rt->address = address;
    rt->dsn = dsn;
    rt->nexthop = text;
}

/* "transport:nexthop" -> route; nexthop may be empty (the class's default). */
static void apply_transport(const struct router *r, struct route *rt, const char *spec, const char *default_nexthop,
                            petrel_pool *pool)
{
    const char *colon = strchr(spec, ':');
    const char *nexthop;
    const char *name = mail_resolve_split(spec, default_nexthop, pool, &nexthop);
    rt->transport = name;
    rt->nexthop = nexthop;
    if (strcmp(name, "smtp") == 0 || strcmp(name, "relay") == 0) {
        rt->kind = ROUTE_SMTP;
    } else if (strcmp(name, "lmtp") == 0) {
        rt->kind = ROUTE_LMTP;
    } else if (strcmp(name, "discard") == 0) {
        rt->kind = ROUTE_DISCARD;
    } else if (strcmp(name, "error") == 0) {
        rt->kind = ROUTE_ERROR;
        rt->dsn = "5.0.0";
        rt->nexthop = colon && colon[1] ? colon + 1 : "mail transport unavailable";
    } else if (strcmp(name, "retry") == 0) {
        rt->kind = ROUTE_RETRY;
        rt->dsn = "4.0.0";
        rt->nexthop = colon && colon[1] ? colon + 1 : "mail transport unavailable";
    } else {
        /* A master.cf service of that name: its command decides. */
        for (size_t i = 0; i < cfg_service_count(r->cfg); i++) {
            const struct master_service *svc = cfg_service(r->cfg, i);
            if (strcmp(svc->name, name) != 0)
                continue;
            switch (svc->role) {
            case ROLE_SMTP: rt->kind = ROUTE_SMTP; return;
            case ROLE_LMTP: rt->kind = ROUTE_LMTP; return;
            case ROLE_PIPE:
                rt->kind = ROUTE_PIPE;
                rt->path = NULL;
                /* pipe(8) attributes: flags=..., user=..., argv=command args... (argv= takes the rest) */
                for (const char *const *a = svc->argv + 1; a && *a; a++) {
                    if (strncmp(*a, "flags=", 6) == 0)
                        rt->pipe_flags = *a + 6;
                    else if (strncmp(*a, "user=", 5) == 0)
                        rt->pipe_user = *a + 5;
                    else if (strncmp(*a, "argv=", 5) == 0) {
                        size_t n = 0;
                        while (a[n])
                            n++;
                        const char **argv = petrel_pool_zalloc(pool, (n + 1) * sizeof(char *));
                        argv[0] = *a + 5;
                        for (size_t k = 1; k < n; k++)
                            argv[k] = a[k];
                        rt->pipe_argv = argv;
                        break;
                    }
                }
                if (rt->pipe_user) {
                    /* user=name[:group]: the command runs as that user (when petreld runs as root) */
                    char *u = petrel_pool_strndup(pool, rt->pipe_user, strcspn(rt->pipe_user, ":"));
                    struct passwd pw, *found = NULL;
                    char buf[4096];
                    if (getpwnam_r(u, &pw, buf, sizeof(buf), &found) == 0 && found) {
                        rt->uid = (long)pw.pw_uid;
                        rt->gid = (long)pw.pw_gid;
                    } else {
                        rt->kind = ROUTE_RETRY;
                        rt->dsn = "4.3.5";
                        rt->nexthop = petrel_pool_printf(pool, "pipe transport %s: unknown user= %s", name, u);
                    }
                }
                return;
            case ROLE_DISCARD: rt->kind = ROUTE_DISCARD; return;
            case ROLE_ERROR:
                rt->kind = ROUTE_ERROR;
                rt->dsn = "5.0.0";
                rt->nexthop = colon && colon[1] ? colon + 1 : "mail transport unavailable";
                return;
            default:
                break;
            }
        }
        rt->kind = ROUTE_RETRY;
        rt->dsn = "4.3.0";
        rt->nexthop = petrel_pool_printf(pool, "mail transport unavailable: no transport \"%s\"", name);
    }
}

static int local_delivery(struct router *r, const char *address, const struct mail_addr *a, petrel_pool *pool,
                          struct route *rt)
{
    rt->transport = "local";
    rt->address = address;
    rt->user = a->local;
    rt->extension = a->extension;
    char *lower = petrel_pool_strdup(pool, a->local);
    for (char *p = lower; *p; p++)
        *p = (char)tolower((unsigned char)*p);
    struct passwd pw, *found = NULL;
    char buf[4096];
    if (getpwnam_r(lower, &pw, buf, sizeof(buf), &found) != 0 || found == NULL) {
        route_error(rt, address, "5.1.1", petrel_pool_printf(pool, "<%s>: unknown user: \"%s\"", address, lower));
        rt->transport = "local";
        return 0;
    }
    rt->uid = (long)pw.pw_uid;
    rt->gid = (long)pw.pw_gid;
    if (r->home_mailbox && *r->home_mailbox) {
        const char *hm = r->home_mailbox;
        rt->path = petrel_pool_printf(pool, "%s/%s", pw.pw_dir, hm);
        rt->kind = hm[strlen(hm) - 1] == '/' ? ROUTE_MAILDIR : ROUTE_MBOX;
    } else {
        rt->path = petrel_pool_printf(pool, "%s/%s", r->spool && *r->spool ? r->spool : "/var/mail", lower);
        rt->kind = ROUTE_MBOX;
    }
    return 0;
}

static int virtual_delivery(struct router *r, const char *address, const struct mail_addr *a, petrel_pool *pool,
                            struct route *rt)
{
    const char *mailbox = NULL;
    rt->transport = "virtual";
    rt->address = address;
    rt->user = a->local;
    rt->extension = a->extension;
    int rc = address_lookup(&r->vmailbox, a, pool, &mailbox);
    if (rc < 0) {
        route_error(rt, address, "4.3.0", "virtual_mailbox_maps lookup failure");
        return -1;
    }
    if (rc == 0) {
        route_error(rt, address, "5.1.1",
                    petrel_pool_printf(pool, "<%s>: User unknown in virtual mailbox table", address));
        rt->transport = "virtual";
        return 0;
    }
    if (mailbox[0] == '/' || strstr(mailbox, "../")) {
        /* Postfix: virtual mailbox paths are relative to virtual_mailbox_base */
        route_error(rt, address, "4.3.0", petrel_pool_printf(pool, "bad virtual mailbox path \"%s\"", mailbox));
        return -1;
    }
    rt->path = petrel_pool_printf(pool, "%s/%s", r->mailbox_base, mailbox);
    rt->kind = mailbox[strlen(mailbox) - 1] == '/' ? ROUTE_MAILDIR : ROUTE_MBOX;
    const char *id = NULL;
    int urc = address_lookup(&r->vuid, a, pool, &id);
    if (urc < 0) {
        route_error(rt, address, "4.3.0", "virtual_uid_maps lookup failure");
        return -1;
    }
    if (urc == 1) {
        char *end;
        rt->uid = strtol(id, &end, 10);
        if (end == id || *end || rt->uid < r->virtual_minimum_uid) {
            /* Postfix's virtual(8): a uid below virtual_minimum_uid (root's,
             * a system account's) is a configuration error, never used. */
            msg_warn("recipient %s: bad uid %s in virtual_uid_maps (below virtual_minimum_uid %lld)", address, id,
                     r->virtual_minimum_uid);
            route_error(rt, address, "4.3.5", "mail system configuration error");
            return -1;
        }
    }
    int grc = address_lookup(&r->vgid, a, pool, &id);
    if (grc < 0) {
        route_error(rt, address, "4.3.0", "virtual_gid_maps lookup failure");
        return -1;
    }
    if (grc == 1)
        rt->gid = strtol(id, NULL, 10);
    return 0;
}

/* Splits an alias or virtual alias value into addresses: separated by commas
 * or white space outside double quotes (aliases(5): a command or file name
 * with spaces is written in double quotes). With alias_value, a quoted
 * "|command", "/file" or ":include:file" loses its quotes (and backslash
 * escapes), as Postfix internalises it; quoted local parts of addresses
 * keep theirs. Returns a NULL-terminated malloc'd array (cfg_list_free). */
static char **split_targets(const char *value, int alias_value)
{
    size_t n = 0, cap = 4;
    char **items = xcalloc(cap + 1, sizeof(char *));
    const char *p = value;
    for (;;) {
        while (*p && (isspace((unsigned char)*p) || *p == ','))
            p++;
        if (!*p)
            break;
        struct buf item = BUF_INIT;
        int quoted = 0;
        for (; *p; p++) {
            if (*p == '"') {
                quoted = !quoted;
            } else if (*p == '\\' && quoted && p[1]) {
                buf_putc(&item, *p++);
            } else if (!quoted && (isspace((unsigned char)*p) || *p == ',')) {
                break;
            }
            buf_putc(&item, *p);
        }
        buf_puts(&item, "");
        char *text = item.data;
        size_t len = item.len;
        if (alias_value && len >= 2 && text[0] == '"' && text[len - 1] == '"' &&
            (text[1] == '|' || text[1] == '/' || strncasecmp(text + 1, ":include:", 9) == 0)) {
            char *out = text;
            for (size_t i = 1; i + 1 < len; i++) {
                if (text[i] == '\\' && i + 2 < len)
                    i++;
                *out++ = text[i];
            }
            *out = '\0';
        }
        if (n == cap) {
            cap *= 2;
            items = xrealloc(items, (cap + 1) * sizeof(char *));
        }
        items[n++] = text;
        items[n] = NULL;
    }
    return items;
}

static const char *qualify(const struct router *r, const char *addr, int alias_value, petrel_pool *pool);

const char *router_sender(struct router *r, const char *sender, const struct route_opts *opts, petrel_pool *pool,
                          int *failed)
{
    if (opts && opts->no_mappings)
        return *sender ? mail_rewrite_qualify(&r->rewrite, sender, pool) : sender;
    return mail_rewrite_sender(&r->rewrite, sender, pool, failed);
}

/* Appends @myorigin to an address without a domain. Only a value of
 * alias_maps (alias_value) may be a |command, a /file or an :include:,
 * which stay as they are; anywhere else those are plain local parts. */
static const char *qualify(const struct router *r, const char *addr, int alias_value, petrel_pool *pool)
{
    if (alias_value && (addr[0] == '|' || addr[0] == '/' || strncasecmp(addr, ":include:", 9) == 0))
        return petrel_pool_strdup(pool, addr);
    return mail_rewrite_qualify(&r->rewrite, addr, pool);
}

/* A |command or a /file from an alias (Postfix's local(8) deliver_token):
 * refused unless allow_mail_to_commands / allow_mail_to_files names where it
 * came from; run as default_privs. A path ending in / is a Maildir. */
static void command_or_file(const struct router *r, const char *recipient, const char *target,
                            enum expansion_origin origin, petrel_pool *pool, struct route *rt)
{
    int command = target[0] == '|';
    if (((command ? r->command_origins : r->file_origins) & (unsigned)origin) == 0) {
        route_error(rt, recipient, "5.7.1", command ? "mail to command is restricted" : "mail to file is restricted");
        rt->transport = "local";
        return;
    }
    rt->transport = "local";
    rt->address = recipient;
    rt->path = command ? target + 1 : target;
    rt->kind = command ? ROUTE_PIPE : target[strlen(target) - 1] == '/' ? ROUTE_MAILDIR : ROUTE_MBOX;
    rt->from_alias = 1;
    struct passwd pw, *found = NULL;
    char buf[4096];
    if (getpwnam_r(r->default_privs, &pw, buf, sizeof(buf), &found) != 0 || found == NULL || pw.pw_uid == 0) {
        route_error(rt, recipient, "4.3.5",
                    petrel_pool_printf(pool, "default_privs: %s user \"%s\" (mail system configuration error)",
                                       found ? "privileged" : "unknown", r->default_privs));
        rt->transport = "local";
        return;
    }
    rt->uid = (long)pw.pw_uid;
    rt->gid = (long)pw.pw_gid;
}

int router_route(struct router *r, const char *sender, const char *recipient, const struct route_opts *opts,
                 petrel_pool *pool, struct route_list *out)
{
    static const struct route_opts none = { NULL, 0, 0 };
    if (opts == NULL)
        opts = &none;
    /* Canonicalization (a missing domain added) always; the mappings only
     * when the message allows them. */
    int mappings = !opts->no_mappings && !opts->redirected;
    size_t cap = 0;
    out->items = NULL;
    out->count = 0;
    /* work list of (address, depth, local-aliases-applied, where it came from) */
    struct item { const char *address; int depth; int aliased; enum expansion_origin origin; } *work = NULL;
    size_t nwork = 0, wcap = 0, expansions = 0;
    const char **seen = NULL;
    size_t nseen = 0, scap = 0;
    int status = 0;

    int canonical_failed = 0;
    const char *start = mappings ? mail_rewrite_recipient(&r->rewrite, recipient, pool, &canonical_failed)
                                 : mail_rewrite_qualify(&r->rewrite, recipient, pool);
    if (canonical_failed) {
        /* Never the unmapped address: it could be another mailbox. */
        route_error(add_route(out, pool, &cap), recipient, "4.3.0", "canonical_maps lookup failure");
        return -1;
    }
#define PUSH(addr, d, al, from)                                                            \
    do {                                                                                   \
        if (nwork == wcap) {                                                               \
            wcap = wcap ? wcap * 2 : 8;                                                    \
            struct item *g = petrel_pool_alloc(pool, wcap * sizeof(*g));                   \
            if (nwork)                                                                     \
                memcpy(g, work, nwork * sizeof(*g));                                       \
            work = g;                                                                      \
        }                                                                                  \
        work[nwork].address = (addr);                                                      \
        work[nwork].depth = (d);                                                           \
        work[nwork].aliased = (al);                                                        \
        work[nwork].origin = (from);                                                       \
        nwork++;                                                                           \
    } while (0)
    PUSH(start, 0, 0, FROM_ENVELOPE);
    for (size_t w = 0; w < nwork; w++) {
        const char *address = work[w].address;
        int depth = work[w].depth;
        if (++expansions > EXPANSION_LIMIT || depth > RECURSION_LIMIT) {
            struct route *rt = add_route(out, pool, &cap);
            route_error(rt, recipient, "5.4.6", "mail forwarding loop or too many alias expansions");
            break;
        }
        int again = 0;
        for (size_t i = 0; i < nseen; i++)
            if (strcasecmp(seen[i], address) == 0)
                again = 1;
        struct mail_addr a;
        mail_addr_split(address, r->delimiter, pool, &a);
        const char *value = NULL;
        int rc = again || !mappings ? 0 : address_lookup(&r->valias, &a, pool, &value);
        if (rc < 0) {
            route_error(add_route(out, pool, &cap), address, "4.3.0", "virtual_alias_maps lookup failure");
            status = -1;
            continue;
        }
        if (nseen == scap) {
            scap = scap ? scap * 2 : 8;
            const char **g = petrel_pool_alloc(pool, scap * sizeof(*g));
            if (nseen)
                memcpy(g, seen, nseen * sizeof(*g));
            seen = g;
        }
        seen[nseen++] = address;
        if (rc == 1) {
            char **targets = split_targets(value, 0);
            if (targets[0] == NULL) {
                /* As Postfix: a result that is no address is a table error
                 * (defer), never a recipient that silently disappears. */
                cfg_list_free(targets);
                msg_warn("virtual_alias_maps lookup of %s returns no address: \"%s\"", address, value);
                route_error(add_route(out, pool, &cap), address, "4.3.0", "virtual_alias_maps lookup failure");
                status = -1;
                continue;
            }
            int self = 0;
            for (char **t = targets; *t; t++) {
                const char *q = qualify(r, *t, 0, pool);
                if (strcasecmp(q, address) == 0)
                    self = 1;   /* an alias to itself: deliver it as it is */
                else
                    PUSH(q, depth + 1, 0, FROM_ENVELOPE);
            }
            cfg_list_free(targets);
            if (!self)
                continue;
        }
        if (opts->filter && !opts->redirected && work[w].origin == FROM_ENVELOPE) {
            /* A content filter: this address, whatever its class, goes to
             * the filter, which hands the message back later. A REDIRECT
             * overrides it (Postfix's queue manager: "redirect overrides
             * all else"). */
            struct route *rt = add_route(out, pool, &cap);
            rt->address = address;
            rt->user = a.local;
            rt->extension = a.extension;
            const char *nexthop = r->default_filter_nexthop && *r->default_filter_nexthop
                                      ? r->default_filter_nexthop : a.domain;
            apply_transport(r, rt, opts->filter, nexthop, pool);
            continue;
        }
        if (work[w].origin != FROM_ENVELOPE && (address[0] == '|' || address[0] == '/')) {
            /* A command or a file named by the admin's alias table. */
            command_or_file(r, recipient, address, work[w].origin, pool, add_route(out, pool, &cap));
            continue;
        }
        const char *domain = a.domain;
        enum mail_class cls = mail_domain_class(&r->domains, domain);
        if (cls == MAIL_CLASS_ERROR) {
            route_error(add_route(out, pool, &cap), address, "4.3.0", "domain list lookup failure");
            status = -1;
            continue;
        }
        if (cls == MAIL_CLASS_VIRTUAL_ALIAS) {
            route_error(add_route(out, pool, &cap), address, "5.1.1",
                        petrel_pool_printf(pool, "<%s>: User unknown in virtual alias table", address));
            continue;
        }
        const char *tv = NULL;
        int trc = mail_resolve_transport_map(&r->resolve, &a, pool, &tv);
        if (trc < 0) {
            route_error(add_route(out, pool, &cap), address, "4.3.0", "transport_maps lookup failure");
            status = -1;
            continue;
        }
        int local = cls == MAIL_CLASS_LOCAL;
        if (local && !work[w].aliased && r->aliases.n) {
            /* alias_maps: the local part, then without the extension */
            char *key = petrel_pool_strdup(pool, a.full_local);
            for (char *p = key; *p; p++)
                *p = (char)tolower((unsigned char)*p);
            const char *av = NULL;
            int arc = mail_maps_get(&r->aliases, key, pool, &av);
            if (arc == 0 && a.extension)
                arc = mail_maps_get(&r->aliases, a.local, pool, &av);
            if (arc < 0) {
                route_error(add_route(out, pool, &cap), address, "4.3.0", "alias_maps lookup failure");
                status = -1;
                continue;
            }
            if (arc == 1) {
                char **targets = split_targets(av, 1);
                if (targets[0] == NULL) {
                    cfg_list_free(targets);
                    msg_warn("alias_maps lookup of %s returns no address: \"%s\"", key, av);
                    route_error(add_route(out, pool, &cap), address, "4.3.0", "alias_maps lookup failure");
                    status = -1;
                    continue;
                }
                for (char **t = targets; *t; t++) {
                    if (strncasecmp(*t, ":include:", 9) == 0) {
                        /* addresses from a file, one level */
                        FILE *f = fopen(*t + 9, "r");
                        char line[1024];
                        if (f == NULL) {
                            route_error(add_route(out, pool, &cap), address, "4.3.0",
                                        petrel_pool_printf(pool, "cannot open include file %s", *t + 9));
                            status = -1;
                            continue;
                        }
                        while (fgets(line, sizeof(line), f)) {
                            line[strcspn(line, "\r\n#")] = '\0';
                            char **more = split_targets(line, 1);
                            for (char **m = more; *m; m++)
                                PUSH(qualify(r, *m, 1, pool), depth + 1, 1, FROM_INCLUDE);
                            cfg_list_free(more);
                        }
                        fclose(f);
                    } else if ((*t)[0] == '|' || (*t)[0] == '/') {
                        PUSH(petrel_pool_strdup(pool, *t), depth + 1, 1, FROM_ALIAS);
                    } else {
                        const char *q = qualify(r, *t, 1, pool);
                        /* "user: user" (or user@ourdomain) delivers to the user
                         * itself: no second alias lookup for it. */
                        const char *qat = strrchr(q, '@');
                        size_t ql = qat ? (size_t)(qat - q) : strlen(q);
                        int self = ql == strlen(a.full_local) && strncasecmp(q, a.full_local, ql) == 0;
                        PUSH(q, depth + 1, self, FROM_ALIAS);
                    }
                }
                cfg_list_free(targets);
                continue;
            }
        }
        struct route *rt = add_route(out, pool, &cap);
        rt->address = address;
        rt->user = a.local;
        rt->extension = a.extension;
        if (trc == 1) {
            apply_transport(r, rt, tv, domain, pool);
            if (strcmp(rt->transport, "virtual") == 0 && virtual_delivery(r, address, &a, pool, rt) < 0)
                status = -1;
            else if (strcmp(rt->transport, "local") == 0)
                local_delivery(r, address, &a, pool, rt);
            continue;
        }
        const char *relayhost = NULL;
        if (mail_class_off_host(cls) && mail_resolve_relayhost(&r->resolve, sender, pool, &relayhost) < 0) {
            /* Not the default relayhost: the sender's own may be the
             * only one that accepts its mail. */
            route_error(rt, address, "4.3.0", "sender_dependent_relayhost_maps lookup failure");
            status = -1;
            continue;
        }
        const char *default_nexthop;
        const char *spec = mail_resolve_class_spec(&r->resolve, cls, domain, relayhost, &default_nexthop);
        apply_transport(r, rt, spec, default_nexthop, pool);
        if (cls == MAIL_CLASS_VIRTUAL_MAILBOX && strcmp(rt->transport, "virtual") == 0 &&
            virtual_delivery(r, address, &a, pool, rt) < 0)
            status = -1;
        else if (cls == MAIL_CLASS_LOCAL && strcmp(rt->transport, "local") == 0)
            local_delivery(r, address, &a, pool, rt);
    }
#undef PUSH
    return status;
}
