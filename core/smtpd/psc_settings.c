/*
 * A postscreen service's settings: main.cf plus its master.cf line's -o
 * overrides, read once per worker into plain fields, compiled lists and
 * open tables (psc.h). Everything an admin can get wrong is refused here,
 * with the file and line, so that `petreld -n`, start and reload say it
 * rather than a worker at its first client: an unknown access list word,
 * a bad DNSBL site, a cache map Petrel cannot keep, a missing pass service.
 *
 * Values Postfix evaluates twice, with and without stress
 * (postscreen_greet_wait, postscreen_command_time_limit), come from the
 * service's normal and stress configurations.
 */
#include "config.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "config/bind.h"
#include "config/cfg.h"
#include "lib/log.h"
#include "lib/xalloc.h"
#include "mail/namadr.h"
#include "smtpd/haproxy_read.h"
#include "smtpd/psc.h"
#include "smtpd/smtpd.h"
#include "smtpd/smtpd_int.h"
#include "tables/cidr.h"
#include "tables/table.h"

#define SET(name, kind, field) CFG_BIND(name, kind, struct psc_settings, field)

static const struct cfg_choice actions[] = {
    { "ignore", PSC_ACT_IGNORE }, { "enforce", PSC_ACT_ENFORCE }, { "drop", PSC_ACT_DROP },
    { "continue", PSC_ACT_IGNORE }, { NULL, 0 },
};

/* Postfix's tlsproxy settings for the test engine's STARTTLS, which is not
 * offered here: accepted, and warned about by name when set. */
#define PSC_TLS_PARAMS(X) \
    X("postscreen_starttls_timeout") \
    X("postscreen_tls_CAfile") \
    X("postscreen_tls_CApath") \
    X("postscreen_tls_always_issue_session_ids") \
    X("postscreen_tls_ask_ccert") \
    X("postscreen_tls_ccert_verifydepth") \
    X("postscreen_tls_cert_file") \
    X("postscreen_tls_chain_files") \
    X("postscreen_tls_ciphers") \
    X("postscreen_tls_dcert_file") \
    X("postscreen_tls_dh1024_param_file") \
    X("postscreen_tls_dh512_param_file") \
    X("postscreen_tls_dkey_file") \
    X("postscreen_tls_eccert_file") \
    X("postscreen_tls_eckey_file") \
    X("postscreen_tls_eecdh_grade") \
    X("postscreen_tls_enable_rpk") \
    X("postscreen_tls_exclude_ciphers") \
    X("postscreen_tls_fingerprint_digest") \
    X("postscreen_tls_key_file") \
    X("postscreen_tls_loglevel") \
    X("postscreen_tls_loglevel_maps") \
    X("postscreen_tls_mandatory_ciphers") \
    X("postscreen_tls_mandatory_exclude_ciphers") \
    X("postscreen_tls_mandatory_protocols") \
    X("postscreen_tls_protocols") \
    X("postscreen_tls_req_ccert") \
    X("postscreen_tls_trace_size_limit")
#define PSC_NAME(n) n,
#define PSC_READ(n) CFG_BIND_READ(n),
static const char *const tls_params[] = { PSC_TLS_PARAMS(PSC_NAME) NULL };

static const struct cfg_bind psc_binds[] = {
    SET("myhostname", STR, myhostname),
    CFG_BIND_READ("postscreen_access_list"),
    CFG_BIND_READ("mynetworks"),
    CFG_BIND_READ("postscreen_blacklist_action"),
    CFG_BIND_CHOICE("postscreen_denylist_action", struct psc_settings, denylist_action, actions),
    SET("respectful_logging", BOOL, respectful_logging),
    CFG_BIND_READ("postscreen_whitelist_interfaces"),
    CFG_BIND_READ("postscreen_allowlist_interfaces"),
    SET("postscreen_greet_wait", LONG, greet_wait),
    SET("postscreen_greet_banner", STR, greet_banner),
    CFG_BIND_CHOICE("postscreen_greet_action", struct psc_settings, greet_action, actions),
    SET("postscreen_greet_ttl", LONG, greet_ttl),
    SET("postscreen_dnsbl_sites", LIST, dnsbl_sites),
    SET("postscreen_dnsbl_threshold", INT, dnsbl_threshold),
    CFG_BIND_READ("postscreen_dnsbl_whitelist_threshold"),
    SET("postscreen_dnsbl_allowlist_threshold", INT, dnsbl_allowlist_threshold),
    CFG_BIND_CHOICE("postscreen_dnsbl_action", struct psc_settings, dnsbl_action, actions),
    CFG_BIND_READ("postscreen_dnsbl_reply_map"),
    CFG_BIND_READ("postscreen_dnsbl_ttl"),
    SET("postscreen_dnsbl_min_ttl", LONG, dnsbl_min_ttl),
    SET("postscreen_dnsbl_max_ttl", LONG, dnsbl_max_ttl),
    SET("postscreen_dnsbl_timeout", LONG, dnsbl_timeout),
    SET("postscreen_pipelining_enable", BOOL, pipelining_enable),
    CFG_BIND_CHOICE("postscreen_pipelining_action", struct psc_settings, pipelining_action, actions),
    SET("postscreen_pipelining_ttl", LONG, pipelining_ttl),
    SET("postscreen_non_smtp_command_enable", BOOL, non_smtp_enable),
    CFG_BIND_CHOICE("postscreen_non_smtp_command_action", struct psc_settings, non_smtp_action, actions),
    SET("postscreen_non_smtp_command_ttl", LONG, non_smtp_ttl),
    SET("postscreen_bare_newline_enable", BOOL, bare_newline_enable),
    CFG_BIND_CHOICE("postscreen_bare_newline_action", struct psc_settings, bare_newline_action, actions),
    SET("postscreen_bare_newline_ttl", LONG, bare_newline_ttl),
    SET("postscreen_command_count_limit", INT, command_count_limit),
    SET("postscreen_command_time_limit", LONG, command_time_limit),
    CFG_BIND_READ("smtpd_forbidden_commands"),
    SET("postscreen_forbidden_commands", LIST, forbidden_commands),
    SET("postscreen_helo_required", BOOL, helo_required),
    SET("postscreen_disable_vrfy_command", BOOL, disable_vrfy),
    SET("postscreen_discard_ehlo_keywords", LIST, discard_ehlo_keywords),
    CFG_BIND_READ("postscreen_discard_ehlo_keyword_address_maps"),
    CFG_BIND_READ("postscreen_command_filter"),
    CFG_BIND_READ("postscreen_reject_footer"),
    CFG_BIND_READ("postscreen_reject_footer_maps"),
    CFG_BIND_READ("postscreen_expansion_filter"),
    CFG_BIND_READ("postscreen_tls_security_level"),
    CFG_BIND_READ("postscreen_use_tls"),
    CFG_BIND_READ("postscreen_enforce_tls"),
    CFG_BIND_READ("postscreen_watchdog_timeout"),
    CFG_BIND_READ("disable_vrfy_command"),
    SET("smtputf8_enable", BOOL, smtputf8),
    SET("soft_bounce", BOOL, soft_bounce),
    SET("line_length_limit", SIZE, line_length_limit),
    SET("smtpd_banner", STR, smtpd_banner),
    SET("message_size_limit", ULONG, message_size_limit),
    CFG_BIND_READ("default_cache_db_type"),
    CFG_BIND_READ("data_directory"),
    SET("postscreen_cache_map", STR, cache_map),
    SET("postscreen_cache_retention_time", LONG, cache_retention),
    SET("postscreen_cache_cleanup_interval", LONG, cache_cleanup_interval),
    SET("postscreen_pre_queue_limit", INT, pre_queue_limit),
    SET("postscreen_post_queue_limit", INT, post_queue_limit),
    SET("postscreen_client_connection_count_limit", INT, client_connection_count_limit),
    SET("smtpd_service_name", STR, pass_service),
    SET("postscreen_upstream_proxy_protocol", STR, upstream_proxy_protocol),
    SET("postscreen_upstream_proxy_timeout", LONG, upstream_proxy_timeout),
    CFG_BIND_READ("inet_protocols"),
    CFG_BIND_READ("dnsblog_service_name"),
    CFG_BIND_READ("tlsproxy_service_name"),
    PSC_TLS_PARAMS(PSC_READ)
};
const struct cfg_bind_table psc_bind_table = CFG_BIND_TABLE("postscreen", psc_binds);

__attribute__((format(printf, 3, 4)))
static int fail(const struct master_service *svc, char **error, const char *fmt, ...)
{
    char *text = NULL;
    va_list ap;
    va_start(ap, fmt);
    if (vasprintf(&text, fmt, ap) < 0)
        text = NULL;
    va_end(ap);
    /* "param: problem": point at the main.cf line when main.cf set it. */
    const char *file = NULL;
    int line = 0;
    if (text) {
        size_t n = strcspn(text, ":");
        char *param = xstrndup(text, n);
        if (cfg_get(svc->cfg, param) != NULL)
            cfg_origin(svc->cfg, param, &file, &line);
        free(param);
    }
    if (file && line > 0 && (svc->file == NULL || strcmp(file, svc->file) != 0)) {
        if (asprintf(error, "%s:%d: %s", file, line, text ? text : "invalid setting") < 0)
            *error = NULL;
    } else if (asprintf(error, "%s, line %d: service %s: %s", svc->file, svc->line, svc->name,
                        text ? text : "invalid setting") < 0) {
        *error = NULL;
    }
    free(text);
    return -1;
}

const struct master_service *psc_pass_service(const struct master_service *svc)
{
    const char *name = cfg_get(svc->cfg, "smtpd_service_name");
    for (size_t i = 0; name && i < cfg_service_count(svc->cfg); i++) {
        const struct master_service *p = cfg_service(svc->cfg, i);
        if (p->type == SVC_PASS && p->role == ROLE_SMTPD && strcmp(p->name, name) == 0)
            return p;
    }
    return NULL;
}

static void free_psc_pool(void *arg)
{
    struct psc_settings *ps = arg;
    for (size_t i = 0; i < ps->nacl; i++)
        if (ps->acl[i].table)
            tbl_close(ps->acl[i].table);
    for (size_t i = 0; i < ps->nforbidden_tables; i++)
        tbl_close(ps->forbidden_tables[i]);
    if (ps->dnsbl_reply_table)
        tbl_close(ps->dnsbl_reply_table);
    namadr_list_free(ps->mynetworks);
    psc_interfaces_free(ps->allowlist_interfaces, ps->nallowlist_interfaces);
    free(ps->cache_path);
    free(ps->ehlo_reply);
}

static int open_acl(struct psc_settings *ps, struct smtpd_worker *w, const struct master_service *svc,
                    char **error)
{
    const char *const *items = cfg_list(ps->cfg, "postscreen_access_list");
    size_t n = 0;
    while (items[n])
        n++;
    ps->acl = petrel_pool_zalloc(ps->pool, (n ? n : 1) * sizeof(*ps->acl));
    for (size_t i = 0; i < n; i++) {
        struct psc_acl_item *a = &ps->acl[ps->nacl];
        a->spec = items[i];
        if (strcasecmp(items[i], "permit_mynetworks") == 0)
            a->kind = PSC_ACL_MYNETWORKS;
        else if (strcasecmp(items[i], "permit") == 0)
            a->kind = PSC_ACL_PERMIT;
        else if (strcasecmp(items[i], "reject") == 0)
            a->kind = PSC_ACL_REJECT;
        else if (strcasecmp(items[i], "dunno") == 0)
            a->kind = PSC_ACL_DUNNO;
        else if (strchr(items[i], ':')) {
            char *why = NULL;
            a->kind = PSC_ACL_TABLE;
            a->table = tbl_open(w->tables, items[i], TBL_FLAG_FOLD_CASE, &why);
            if (a->table == NULL) {
                fail(svc, error, "postscreen_access_list: %s", why ? why : items[i]);
                free(why);
                return -1;
            }
            if (tbl_is_remote(a->table))
                ps->acl_remote = 1;
        } else {
            return fail(svc, error, "postscreen_access_list: unknown \"%s\" (expected permit_mynetworks, "
                        "permit, reject, dunno or a type:table)", items[i]);
        }
        ps->nacl++;
    }
    return 0;
}

int psc_interfaces_parse(const char *const *items, petrel_pool *pool, struct psc_iface_rule **rules, size_t *n,
                         const char **bad)
{
    size_t count = 0;
    while (items[count])
        count++;
    struct psc_iface_rule *r = petrel_pool_zalloc(pool, (count ? count : 1) * sizeof(*r));
    *rules = r;
    *n = 0;
    for (size_t i = 0; i < count; i++, (*n)++) {
        const char *item = items[i];
        while (*item == '!') {   /* Postfix: each "!" inverts */
            r[i].negate = !r[i].negate;
            item++;
        }
        if (strcasecmp(item, "static:all") == 0) {
            r[i].all = 1;
            continue;
        }
        char *why = NULL;
        r[i].net = cidr_list_new();
        if (*item == '\0' || cidr_list_add(r[i].net, item, &why) != 0) {
            free(why);
            (*n)++;   /* its list is freed with the others */
            *bad = items[i];
            return -1;
        }
    }
    return 0;
}

int psc_interfaces_allow(const struct psc_iface_rule *rules, size_t n, const char *addr)
{
    for (size_t i = 0; i < n; i++)
        if (rules[i].all || cidr_list_match(rules[i].net, addr))
            return !rules[i].negate;
    return 0;   /* Postfix: no match, no allowlisting */
}

void psc_interfaces_free(struct psc_iface_rule *rules, size_t n)
{
    for (size_t i = 0; i < n; i++)
        cidr_list_free(rules[i].net);
}

/* postscreen_allowlist_interfaces: static:all, addresses and networks,
 * each with "!" if wanted. Postfix also takes tables and files here; those
 * are refused rather than half understood. */
static int open_allowlist_interfaces(struct psc_settings *ps, const struct master_service *svc, char **error)
{
    const char *bad = NULL;
    if (psc_interfaces_parse(cfg_list(ps->cfg, "postscreen_allowlist_interfaces"), ps->pool,
                             &ps->allowlist_interfaces, &ps->nallowlist_interfaces, &bad) != 0)
        return fail(svc, error, "postscreen_allowlist_interfaces: \"%s\" is not supported: list addresses and "
                    "networks (\"!\" allowed), or static:all", bad);
    return 0;
}

static int open_forbidden(struct psc_settings *ps, struct smtpd_worker *w, const struct master_service *svc,
                          char **error)
{
    size_t n = 0;
    for (const char *const *p = ps->forbidden_commands; *p; p++)
        n++;
    ps->forbidden_tables = petrel_pool_zalloc(ps->pool, (n ? n : 1) * sizeof(*ps->forbidden_tables));
    for (const char *const *p = ps->forbidden_commands; *p; p++) {
        if (strchr(*p, ':') == NULL)
            continue;
        char *why = NULL;
        struct tbl *t = tbl_open(w->tables, *p, TBL_FLAG_FOLD_CASE, &why);
        if (t == NULL) {
            fail(svc, error, "postscreen_forbidden_commands: %s", why ? why : *p);
            free(why);
            return -1;
        }
        ps->forbidden_tables[ps->nforbidden_tables++] = t;
        if (tbl_is_remote(t))
            ps->forbidden_remote = 1;
    }
    return 0;
}

/* The DNSBL names replies show: postscreen_dnsbl_reply_map, looked up
 * once, as Postfix does at start (a lookup error stops the start there and
 * here). A remote table is kept open instead and asked by the client whose
 * reply names a list (postscreen.c), so that no worker waits for it. */
static int map_dnsbl_names(struct psc_settings *ps, struct smtpd_worker *w, const struct master_service *svc,
                           char **error)
{
    ps->dnsbl_reply_map = cfg_get(ps->cfg, "postscreen_dnsbl_reply_map");
    if (ps->dnsbl == NULL || ps->dnsbl_reply_map == NULL || *ps->dnsbl_reply_map == '\0')
        return 0;
    char *why = NULL;
    struct tbl *t = tbl_open(w->tables, ps->dnsbl_reply_map, TBL_FLAG_FOLD_CASE, &why);
    if (t == NULL) {
        fail(svc, error, "postscreen_dnsbl_reply_map: %s", why ? why : ps->dnsbl_reply_map);
        free(why);
        return -1;
    }
    if (tbl_is_remote(t)) {
        ps->dnsbl_reply_table = t;   /* closed with the settings */
        return 0;
    }
    int status = 0;
    for (size_t i = 0; i < ps->dnsbl->ndomains; i++) {
        const char *value = NULL;
        int rc = tbl_lookup(t, ps->dnsbl->domains[i].name, &value);
        if (rc == TBL_FOUND) {
            ps->dnsbl->domains[i].reply_name = petrel_pool_strdup(ps->pool, value);
        } else if (rc == TBL_ERROR) {
            status = fail(svc, error, "postscreen_dnsbl_reply_map: %s: lookup error for %s", ps->dnsbl_reply_map,
                          ps->dnsbl->domains[i].name);
            break;
        }
    }
    tbl_close(t);
    return status;
}

/* Postfix's ehlo_mask words, for postscreen_discard_ehlo_keywords. */
static int discarded(const struct psc_settings *ps, const char *keyword)
{
    for (const char *const *p = ps->discard_ehlo_keywords; p && *p; p++)
        if (strcasecmp(*p, keyword) == 0)
            return 1;
    return 0;
}

/* The EHLO reply of the test engine: smtpd's, without PIPELINING (a
 * client that pipelines anyway shows itself), AUTH or STARTTLS. */
static char *format_ehlo(const struct psc_settings *ps)
{
    struct buf b = BUF_INIT;
    buf_printf(&b, "250-%s\r\n", ps->myhostname);
    if (!discarded(ps, "size")) {
        if (ps->message_size_limit > 0)
            buf_printf(&b, "250-SIZE %llu\r\n", ps->message_size_limit);
        else
            buf_puts(&b, "250-SIZE\r\n");
    }
    if (!discarded(ps, "vrfy") && !cfg_bool(ps->cfg, "disable_vrfy_command"))
        buf_puts(&b, "250-VRFY\r\n");
    if (!discarded(ps, "etrn"))
        buf_puts(&b, "250-ETRN\r\n");
    if (!discarded(ps, "enhancedstatuscodes"))
        buf_puts(&b, "250-ENHANCEDSTATUSCODES\r\n");
    if (!discarded(ps, "8bitmime"))
        buf_puts(&b, "250-8BITMIME\r\n");
    if (!discarded(ps, "dsn"))
        buf_puts(&b, "250-DSN\r\n");
    if (ps->smtputf8 && !discarded(ps, "smtputf8"))
        buf_puts(&b, "250-SMTPUTF8\r\n");
    if (!discarded(ps, "chunking"))
        buf_puts(&b, "250-CHUNKING\r\n");
    /* The last line says "250 ", not "250-". */
    char *text = b.data;
    size_t len = b.len;
    size_t last = len - 2;
    while (last > 0 && text[last - 1] != '\n')
        last--;
    text[last + 3] = ' ';
    return text;
}

/* Settings the configuration asks for that Petrel's postscreen does not
 * do: said at -n, start and reload, never silently dropped. */
static void warn_unsupported(const struct psc_settings *ps, const struct master_service *svc, int quiet)
{
    if (quiet)
        return;
    static const char *const unsupported[] = {
        "postscreen_command_filter", "postscreen_reject_footer", "postscreen_reject_footer_maps",
        "postscreen_discard_ehlo_keyword_address_maps", NULL,
    };
    for (const char *const *p = unsupported; *p; p++) {
        const char *v = cfg_get(ps->cfg, *p);
        if (v && *v)
            msg_warn("%s, line %d: service %s: %s is set but not implemented: it has no effect on postscreen's "
                     "replies or commands", svc->file, svc->line, svc->name, *p);
    }
    for (const char *const *p = tls_params; *p; p++) {
        const char *v = cfg_get(ps->cfg, *p);
        if (v && *v)
            msg_warn("%s, line %d: service %s: %s is set but has no effect: postscreen's after-220 test engine "
                     "offers no STARTTLS here", svc->file, svc->line, svc->name, *p);
    }
    /* The level Postfix's engine would use: postscreen_tls_security_level,
     * else the old postscreen_enforce_tls / postscreen_use_tls. */
    int deep = ps->pipelining_enable || ps->non_smtp_enable || ps->bare_newline_enable;
    const char *tls_param = "postscreen_tls_security_level";
    const char *tls = cfg_get(ps->cfg, tls_param);
    if (tls == NULL || *tls == '\0') {
        tls = NULL;
        if (cfg_bool(ps->cfg, "postscreen_enforce_tls"))
            tls_param = "postscreen_enforce_tls";
        else if (cfg_bool(ps->cfg, "postscreen_use_tls"))
            tls_param = "postscreen_use_tls";
        else
            tls_param = NULL;
    }
    if (deep && tls_param && (tls == NULL || strcmp(tls, "none") != 0))
        msg_warn("%s, line %d: service %s: %s = %s: the after-220 tests run without STARTTLS here (the test "
                 "session is refused at RCPT anyway; mail itself is received by smtpd with its TLS settings)",
                 svc->file, svc->line, svc->name, tls_param, tls ? tls : "yes");
    const char *proxy = cfg_get(ps->cfg, "postscreen_upstream_proxy_protocol");
    const struct master_service *pass = psc_pass_service(svc);
    if (pass) {
        const char *sp = cfg_get(pass->cfg, "smtpd_upstream_proxy_protocol");
        if (sp && *sp)
            msg_warn("%s, line %d: ignoring non-empty smtpd_upstream_proxy_protocol setting behind postscreen%s",
                     pass->file, pass->line, proxy && *proxy ? "" : " (set postscreen_upstream_proxy_protocol)");
    }
}

struct psc_settings *psc_settings_create(struct smtpd_worker *w, const struct master_service *svc, char **error)
{
    petrel_pool *pool = petrel_pool_create(8192);
    struct psc_settings *ps = petrel_pool_zalloc(pool, sizeof(*ps));
    ps->pool = pool;
    ps->cfg = svc->cfg;
    ps->service_name = petrel_pool_strdup(pool, svc->name);
    petrel_pool_cleanup_add(pool, free_psc_pool, ps);
    cfg_bind_apply(svc->cfg, &psc_bind_table, ps);
    ps->greet_wait_stress = ps->greet_wait;
    ps->command_time_limit_stress = ps->command_time_limit;
    if (svc->stress_cfg) {
        ps->greet_wait_stress = cfg_int(svc->stress_cfg, "postscreen_greet_wait");
        ps->command_time_limit_stress = cfg_int(svc->stress_cfg, "postscreen_command_time_limit");
    }
    ps->upstream_proxy = strcmp(ps->upstream_proxy_protocol, "haproxy") == 0;
    ps->proxy_families = smtpd_proxy_families(cfg_get(svc->cfg, "inet_protocols"));
    if (ps->line_length_limit < 512)
        ps->line_length_limit = 512;
    if (svc->type != SVC_INET) {
        fail(svc, error, "postscreen must be an inet service");
        goto failed;
    }
    if (psc_pass_service(svc) == NULL) {
        fail(svc, error, "postscreen hands clients to the service named by smtpd_service_name (\"%s\"), "
             "but master.cf has no \"%s pass ... smtpd\" line", ps->pass_service, ps->pass_service);
        goto failed;
    }
    {
        /* Postfix's postscreen reads mynetworks as an address list
         * (server_acl.c): networks and tables keyed by the address; host
         * names never match there, since postscreen does not look the
         * client's name up. Said at load rather than left silent. */
        char *why = NULL;
        ps->mynetworks = namadr_list_open("mynetworks", cfg_list(svc->cfg, "mynetworks"), w->tables, 1, &why);
        if (ps->mynetworks == NULL) {
            fail(svc, error, "%s", why ? why : "mynetworks: cannot be used");
            free(why);
            goto failed;
        }
        const char *name = namadr_list_first_name(ps->mynetworks);
        if (name && w->listeners == NULL)   /* once, as warn_unsupported */
            msg_warn("%s, line %d: service %s: mynetworks names hosts (\"%s\"): postscreen's permit_mynetworks "
                     "matches the client's address only, as in Postfix: the named hosts are not permitted by "
                     "postscreen (smtpd's permit_mynetworks does match them)", svc->file, svc->line, svc->name, name);
    }
    if (open_acl(ps, w, svc, error) != 0 || open_allowlist_interfaces(ps, svc, error) != 0 ||
        open_forbidden(ps, w, svc, error) != 0)
        goto failed;
    if (ps->dnsbl_sites && ps->dnsbl_sites[0]) {
        const char *why = NULL;
        ps->dnsbl = psc_dnsbl_parse(ps->dnsbl_sites, pool, &why);
        if (ps->dnsbl == NULL) {
            fail(svc, error, "postscreen_dnsbl_sites: %s", why);
            goto failed;
        }
    }
    if (map_dnsbl_names(ps, w, svc, error) != 0)
        goto failed;
    if (ps->cache_map && *ps->cache_map) {
        char *why = NULL;
        if (psc_cache_spec(ps->cache_map, &ps->cache_path, &why) != 0) {
            fail(svc, error, "postscreen_cache_map: %s", why ? why : ps->cache_map);
            free(why);
            goto failed;
        }
    }
    long long ttls[] = { ps->greet_ttl, ps->dnsbl_min_ttl, ps->pipelining_ttl, ps->non_smtp_ttl,
                         ps->bare_newline_ttl };
    ps->min_ttl = ttls[0];
    for (size_t i = 1; i < sizeof(ttls) / sizeof(ttls[0]); i++)
        if (ttls[i] < ps->min_ttl)
            ps->min_ttl = ttls[i];
    ps->ehlo_reply = format_ehlo(ps);
    /* A worker builds its settings quietly: the load said it all. */
    warn_unsupported(ps, svc, w->listeners != NULL);
    return ps;

failed:
    petrel_pool_destroy(pool);
    return NULL;
}

void psc_settings_free(struct psc_settings *ps)
{
    if (ps)
        petrel_pool_destroy(ps->pool);
}
