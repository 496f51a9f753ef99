/*
 * Per-listener settings: main.cf plus one master.cf line's -o overrides,
 * turned once into plain fields, compiled restriction lists and a TLS
 * context, so that sessions never look at configuration text.
 */
#include "config.h"

#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/statvfs.h>
#include <arpa/inet.h>
#include <ifaddrs.h>
#include <netdb.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/un.h>

#include "config/bind.h"
#include "config/cfg.h"
#include "lib/log.h"
#include "lib/xalloc.h"
#include "mail/addr_class.h"
#include "mail/maps.h"
#include "mail/namadr.h"
#include "mail/resolve.h"
#include "smtpd/content_int.h"
#include "smtpd/rcpt_maps.h"
#include "smtpd/anvil.h"
#include "smtpd/haproxy_read.h"
#include "smtpd/restrict.h"
#include "smtpd/smtpd.h"
#include "smtpd/restrict_int.h"
#include "smtpd/smtpd_int.h"
#include "tables/cidr.h"
#include "module/module.h"
#include "queue/maildrop.h"
#include "tables/table.h"
#include "tables/access.h"
#include "mail/maps.h"
#include "mail/namadr.h"
#include "tls/tls.h"

/* Adds one problem, "parameter: why", to *error: settings report every
 * problem they find (petreld -n), one line each (xappend_line). */
__attribute__((format(printf, 2, 3)))
static int fail(char **error, const char *fmt, ...)
{
    va_list ap;
    char *line = NULL;
    va_start(ap, fmt);
    if (vasprintf(&line, fmt, ap) >= 0) {
        xappend_line(error, line);
        free(line);
    }
    va_end(ap);
    return -1;
}

/* The errors above read "parameter: problem". Say where to fix each one:
 * the main.cf line when the value comes from main.cf, the master.cf line
 * and service only for a -o override there, main.cf for a default value
 * (cfg_locate), so an admin is never sent to master.cf for a main.cf
 * mistake. */
static void locate_error(const struct master_service *svc, char **error)
{
    if (*error == NULL)
        return;
    char *located = NULL;
    for (char *line = *error, *next; line; line = next) {
        next = strchr(line, '\n');
        if (next)
            *next++ = '\0';
        char *one = cfg_locate(svc->cfg, svc, line);
        xappend_line(&located, one);
        free(one);
    }
    free(*error);
    *error = located;
}

/* A client list (mail/namadr.h). 1 with *error on a problem. */
static int client_list(struct smtpd_worker *w, const struct cfg *cfg, const char *param, int parent_style,
                       struct namadr_list **out, char **error)
{
    char *why = NULL;
    *out = namadr_list_open(param, cfg_list(cfg, param), w->tables, parent_style, &why);
    if (*out == NULL) {
        fail(error, "%s", why ? why : param);
        free(why);
        return 1;
    }
    return 0;
}

static int compile_list(struct smtpd_settings *set, struct restrict_compiler *c, const char *param,
                        struct restrict_list **out, char **error)
{
    char *err = NULL;
    *out = restrict_compile(c, param, cfg_list(set->cfg, param), &err);
    if (*out == NULL) {
        for (char *line = err, *next; line; line = next) {
            next = strchr(line, '\n');
            if (next)
                *next++ = '\0';
            fail(error, "%s: %s", param, line);
        }
        free(err);
        return -1;
    }
    if (restrict_list_has(*out, "reject_unauth_pipelining"))
        set->uses_unauth_pipelining = 1;
    static const char *const login_steps[] = { "reject_sender_login_mismatch",
                                                "reject_authenticated_sender_login_mismatch",
                                                "reject_unauthenticated_sender_login_mismatch",
                                                "reject_known_sender_login_mismatch", NULL };
    /* sender_login_maps is NULL when it failed to open: that was reported. */
    for (int i = 0; login_steps[i]; i++) {
        if (restrict_list_has(*out, login_steps[i]) && set->sender_login_maps && set->sender_login_maps->n == 0) {
            fail(error, "%s: %s needs smtpd_sender_login_maps (which login owns which sender address)", param,
                 login_steps[i]);
            return -1;
        }
    }
    return 0;
}

/* permit_inet_interfaces: the addresses of inet_interfaces ("all": every
 * address of this host), as Postfix's own_inet_addr() knows them. */
static struct cidr_list *own_addresses(const struct cfg *cfg, char **error)
{
    struct cidr_list *list = cidr_list_new();
    char *err = NULL;
    for (const char *const *item = cfg_list(cfg, "inet_interfaces"); *item; item++) {
        const char *h = *item;
        if (strcasecmp(h, "all") == 0) {
            struct ifaddrs *ifs = NULL;
            if (getifaddrs(&ifs) == 0) {
                for (struct ifaddrs *i = ifs; i; i = i->ifa_next) {
                    char text[INET6_ADDRSTRLEN];
                    if (i->ifa_addr == NULL || (i->ifa_addr->sa_family != AF_INET && i->ifa_addr->sa_family != AF_INET6))
                        continue;
                    const void *a = i->ifa_addr->sa_family == AF_INET
                                        ? (const void *)&((struct sockaddr_in *)i->ifa_addr)->sin_addr
                                        : (const void *)&((struct sockaddr_in6 *)i->ifa_addr)->sin6_addr;
                    if (inet_ntop(i->ifa_addr->sa_family, a, text, sizeof(text)) && !strchr(text, '%'))
                        cidr_list_add(list, text, &err), free(err), err = NULL;
                }
                freeifaddrs(ifs);
            }
            continue;
        }
        if (strcasecmp(h, "loopback-only") == 0 || strcasecmp(h, "localhost") == 0) {
            cidr_list_add(list, "127.0.0.1", &err), free(err), err = NULL;
            cidr_list_add(list, "::1", &err), free(err), err = NULL;
            continue;
        }
        struct addrinfo hints, *res = NULL;
        memset(&hints, 0, sizeof(hints));
        hints.ai_socktype = SOCK_STREAM;
        if (getaddrinfo(h, NULL, &hints, &res) != 0) {
            fail(error, "inet_interfaces: cannot resolve \"%s\"", h);
            cidr_list_free(list);
            return NULL;
        }
        for (struct addrinfo *a = res; a; a = a->ai_next) {
            char text[INET6_ADDRSTRLEN];
            const void *bytes = a->ai_family == AF_INET ? (const void *)&((struct sockaddr_in *)a->ai_addr)->sin_addr
                                                        : (const void *)&((struct sockaddr_in6 *)a->ai_addr)->sin6_addr;
            if ((a->ai_family == AF_INET || a->ai_family == AF_INET6) &&
                inet_ntop(a->ai_family, bytes, text, sizeof(text)))
                cidr_list_add(list, text, &err), free(err), err = NULL;
        }
        freeaddrinfo(res);
    }
    return list;
}


/* The tables a parameter lists, in the settings' pool (closed with it). */
static void free_settings_pool(void *arg)
{
    struct smtpd_settings *set = arg;
    if (set->borrowed)
        return;   /* the tables, lists and TLS context belong to the settings it shares them with */
    if (set->tls_ctx)
        SSL_CTX_free(set->tls_ctx);
    tls_scache_close(set->tls_scache);
    if (set->relay_clientcerts)
        mail_maps_close(set->relay_clientcerts);
    if (set->discard_ehlo_maps)
        mail_maps_close(set->discard_ehlo_maps);
    if (set->command_filter)
        tbl_close(set->command_filter);
    namadr_list_free(set->mynetworks);
    namadr_list_free(set->bare_lf_exclusions);
    namadr_list_free(set->conn_limit_exceptions);
    namadr_list_free(set->debug_peers);
    cidr_list_free(set->own_addresses);
    namadr_list_free(set->sasl_exceptions);
    namadr_list_free(set->xforward_hosts);
    if (set->sender_login_maps)
        mail_maps_close(set->sender_login_maps);
    if (set->sender_bcc_maps)
        mail_maps_close(set->sender_bcc_maps);
    if (set->recipient_bcc_maps)
        mail_maps_close(set->recipient_bcc_maps);
    smtpd_rcpt_maps_free(set->rcpt_maps);
    if (set->resolve)
        mail_resolve_close(set->resolve);
    mail_domains_close(&set->domains);
    smtpd_cleanup_settings_free(set->cleanup);
}

/* receive_override_options (Postfix's input_transp names). */
static int receive_override(const struct cfg *cfg, unsigned *mask, char **error)
{
    static const struct {
        const char *name;
        unsigned bit;
    } names[] = {
        { "no_unknown_recipient_checks", RO_NO_UNKNOWN_RCPT },
        { "no_address_mappings", RO_NO_ADDRESS_MAPPINGS },
        { "no_header_body_checks", RO_NO_HEADER_BODY },
        { "no_milters", RO_NO_MILTERS },
    };
    *mask = 0;
    for (const char *const *item = cfg_list(cfg, "receive_override_options"); *item; item++) {
        size_t i;
        for (i = 0; i < sizeof(names) / sizeof(names[0]); i++)
            if (strcasecmp(*item, names[i].name) == 0)
                break;
        if (i == sizeof(names) / sizeof(names[0]))
            return fail(error, "receive_override_options: unknown option \"%s\" (no_unknown_recipient_checks, "
                        "no_address_mappings, no_header_body_checks, no_milters)", *item);
        *mask |= names[i].bit;
    }
    return 0;
}

/* ------------------------------------------------------------------ */
/* smtpd_proxy_filter: where the before-queue filter is             */

static int proxy_resolve(struct smtpd_settings *set, const char *spec, const char *queue_directory, char **error)
{
    memset(&set->proxy_addr, 0, sizeof(set->proxy_addr));
    set->proxy_addr_len = 0;
    if (spec == NULL || *spec == '\0')
        return 0;
    if (strncasecmp(spec, "unix:", 5) == 0) {
        const char *path = spec + 5;
        struct sockaddr_un *sun = (struct sockaddr_un *)&set->proxy_addr;
        char full[sizeof(sun->sun_path) + 1];
        /* A relative path is relative to the queue directory (Postfix). */
        int n = *path == '/' ? snprintf(full, sizeof(full), "%s", path)
                             : snprintf(full, sizeof(full), "%s/%s", queue_directory, path);
        if (*path == '\0' || n < 0 || (size_t)n >= sizeof(sun->sun_path)) {
            if (asprintf(error, "smtpd_proxy_filter: bad UNIX-domain socket \"%s\"", spec) < 0)
                *error = NULL;
            return -1;
        }
        sun->sun_family = AF_UNIX;
        memcpy(sun->sun_path, full, (size_t)n + 1);
        set->proxy_addr_len = (socklen_t)sizeof(*sun);
        return 0;
    }
    if (strncasecmp(spec, "inet:", 5) == 0)
        spec += 5;
    /* host:port, [host]:port, or a port alone (localhost, as Postfix) */
    char host[256] = "localhost";
    const char *port = spec;
    if (*spec == '[') {
        const char *close = strchr(spec, ']');
        if (close == NULL || close[1] != ':' || (size_t)(close - spec - 1) >= sizeof(host))
            goto bad;
        snprintf(host, sizeof(host), "%.*s", (int)(close - spec - 1), spec + 1);
        port = close + 2;
    } else {
        const char *colon = strrchr(spec, ':');
        if (colon) {
            if ((size_t)(colon - spec) >= sizeof(host))
                goto bad;
            if (colon > spec)
                snprintf(host, sizeof(host), "%.*s", (int)(colon - spec), spec);
            port = colon + 1;
        }
    }
    if (*port == '\0')
        goto bad;
    struct addrinfo hints, *res = NULL;
    memset(&hints, 0, sizeof(hints));
    hints.ai_socktype = SOCK_STREAM;
    int rc = getaddrinfo(host, port, &hints, &res);
    if (rc != 0 || res == NULL) {
        if (asprintf(error, "smtpd_proxy_filter: %s: %s", spec, gai_strerror(rc)) < 0)
            *error = NULL;
        return -1;
    }
    memcpy(&set->proxy_addr, res->ai_addr, res->ai_addrlen);
    set->proxy_addr_len = res->ai_addrlen;
    freeaddrinfo(res);
    return 0;
bad:
    if (asprintf(error, "smtpd_proxy_filter: \"%s\" is not host:port, inet:host:port or unix:pathname", spec) < 0)
        *error = NULL;
    return -1;
}

/* smtpd_proxy_options: speed_adjust (Postfix's only option). */
static int proxy_options(const struct cfg *cfg, struct smtpd_settings *set, char **error)
{
    set->proxy_speed_adjust = 0;
    for (const char *const *item = cfg_list(cfg, "smtpd_proxy_options"); *item; item++) {
        if (strcasecmp(*item, "speed_adjust") != 0)
            return fail(error, "smtpd_proxy_options: unknown option \"%s\" (speed_adjust)", *item);
        set->proxy_speed_adjust = 1;
    }
    return 0;
}

/* content_filter = transport:nexthop, where the transport is one the
 * queue manager can deliver with: smtp, relay, lmtp, or a master.cf
 * service whose command is smtp, lmtp or pipe. Checked here so that a
 * typo stops the start instead of deferring every message. */
static int check_content_filter(const struct smtpd_worker *w, const char *filter, char **error)
{
    if (filter == NULL || *filter == '\0')
        return 0;
    const char *colon = strchr(filter, ':');
    if (colon == NULL || colon == filter)
        return fail(error, "content_filter: \"%s\" is not transport:nexthop", filter);
    size_t len = (size_t)(colon - filter);
    static const char *const builtin[] = { "smtp", "relay", "lmtp" };
    for (size_t i = 0; i < sizeof(builtin) / sizeof(builtin[0]); i++)
        if (strlen(builtin[i]) == len && strncmp(filter, builtin[i], len) == 0)
            return 0;
    for (size_t i = 0; w->cfg && i < cfg_service_count(w->cfg); i++) {
        const struct master_service *t = cfg_service(w->cfg, i);
        if (strlen(t->name) != len || strncmp(t->name, filter, len) != 0)
            continue;
        if (t->role == ROLE_SMTP || t->role == ROLE_LMTP || t->role == ROLE_PIPE)
            return 0;
        return fail(error, "content_filter: transport %.*s is a master.cf service with command %s: a content "
                    "filter needs an smtp, lmtp or pipe service", (int)len, filter, t->command);
    }
    if (w->cfg == NULL || cfg_service_count(w->cfg) == 0)
        return 0;
    return fail(error, "content_filter: transport %.*s is not a master.cf service (give it a line with command "
                "smtp, lmtp or pipe)", (int)len, filter);
}

/* What a service's stress configuration usually changes: values read into
 * plain fields. When nothing else differs, the stress settings share the
 * tables, restriction lists and TLS context of the normal ones instead of
 * opening everything a second time. */
static const char *const scalar_params[] = {
    "stress", "smtpd_timeout", "smtpd_starttls_timeout", "smtpd_per_record_deadline", "smtpd_hard_error_limit", "smtpd_soft_error_limit", "smtpd_junk_command_limit",
    "smtpd_error_sleep_time", "smtpd_banner", "smtpd_recipient_limit", "message_size_limit", "line_length_limit",
    "smtpd_client_connection_count_limit", "smtpd_client_connection_rate_limit", "smtpd_client_message_rate_limit",
    "smtpd_client_recipient_rate_limit", "smtpd_helo_required",
    "disable_vrfy_command", "smtpd_delay_reject", "smtpd_sasl_response_limit",
    /* postscreen's stress-dependent values: not smtpd's business */
    "postscreen_greet_wait", "postscreen_command_time_limit", NULL
};

#define SET(name, kind, field) CFG_BIND(name, kind, struct smtpd_settings, field)

static const struct cfg_choice bare_newline_modes[] = {
    { "normalize", DATA_BARE_LF_NORMALIZE }, { "yes", DATA_BARE_LF_NORMALIZE }, { "reject", DATA_BARE_LF_REJECT },
    { "no", DATA_BARE_LF_ALLOW }, { NULL, 0 },
};

static const struct cfg_choice proxy_protocols[] = { { "", 0 }, { "haproxy", 1 }, { NULL, 0 } };

/* The fields read straight from the configuration (no table, list or TLS):
 * what a service's stress settings read again (read_plain_values). */
/* Postfix's tempfail_actions (reject_tempfail_action and the like). */
static const struct cfg_choice tempfail_actions[] = { { "defer_if_permit", 1 }, { "defer", 0 }, { NULL, 0 } };

static const struct cfg_bind plain_binds[] = {
    SET("myhostname", STR, myhostname),
    SET("mail_name", STR, mail_name),
    SET("smtpd_banner", STR, banner),
    SET("line_length_limit", SIZE, line_length_limit),
    SET("header_size_limit", SIZE, header_size_limit),
    SET("message_size_limit", ULONG, message_size_limit),
    SET("smtpd_recipient_limit", UINT, recipient_limit),
    SET("smtpd_timeout", TIMEVAL, timeout),
    SET("smtpd_per_record_deadline", BOOL, per_record_deadline),
    SET("smtpd_starttls_timeout", TIMEVAL, starttls_timeout),
    SET("smtpd_soft_error_limit", INT, soft_error_limit),
    SET("smtpd_hard_error_limit", INT, hard_error_limit),
    SET("smtpd_error_sleep_time", LONG, error_sleep_time),
    SET("smtpd_junk_command_limit", INT, junk_command_limit),
    SET("smtpd_sasl_response_limit", SIZE, sasl_response_limit),
    SET("smtpd_helo_required", BOOL, helo_required),
    SET("disable_vrfy_command", BOOL, disable_vrfy),
    SET("smtpd_delay_reject", BOOL, delay_reject),
    SET("smtputf8_enable", BOOL, smtputf8),
    SET("smtpd_forbid_unauth_pipelining", BOOL, forbid_unauth_pipelining),
    CFG_BIND_CHOICE("smtpd_forbid_bare_newline", struct smtpd_settings, bare_lf_policy, bare_newline_modes),
    SET("smtpd_forbid_bare_newline_reject_code", INT, bare_lf_reject_code),
    SET("smtpd_client_connection_count_limit", UINT, conn_count_limit),
    SET("smtpd_client_connection_rate_limit", UINT, conn_rate_limit),
    SET("smtpd_client_message_rate_limit", UINT, message_rate_limit),
    SET("smtpd_client_recipient_rate_limit", UINT, recipient_rate_limit),
    SET("anvil_rate_time_unit", UINT, rate_time_unit),
    SET("recipient_delimiter", STR, recipient_delimiter),
    SET("smtpd_reject_unlisted_recipient", BOOL, reject_unlisted_recipient),
    SET("smtpd_reject_unlisted_sender", BOOL, reject_unlisted_sender),
    SET("always_bcc", STR, always_bcc),
    SET("myorigin", STR, myorigin),
    SET("soft_bounce", BOOL, soft_bounce),
    SET("smtpd_discard_ehlo_keywords", LIST, discard_ehlo_keywords),
    /* the restrictions' reply codes and choices (restrict_steps.c, restrict_dns.c) */
    SET("reject_code", INT, reject_code),
    SET("defer_code", INT, defer_code),
    SET("access_map_reject_code", INT, access_map_reject_code),
    SET("access_map_defer_code", INT, access_map_defer_code),
    SET("relay_domains_reject_code", INT, relay_code),
    SET("non_fqdn_reject_code", INT, non_fqdn_code),
    SET("invalid_hostname_reject_code", INT, invalid_hostname_code),
    SET("unknown_client_reject_code", INT, unknown_client_code),
    SET("unknown_hostname_reject_code", INT, unknown_hostname_code),
    SET("unknown_address_reject_code", INT, unknown_address_code),
    SET("multi_recipient_bounce_reject_code", INT, multi_rcpt_code),
    SET("plaintext_reject_code", INT, plaintext_code),
    CFG_BIND_CHOICE("unknown_helo_hostname_tempfail_action", struct smtpd_settings, unknown_helo_tf_defer_if_permit,
                    tempfail_actions),
    CFG_BIND_CHOICE("unknown_address_tempfail_action", struct smtpd_settings, unknown_address_tf_defer_if_permit,
                    tempfail_actions),
    SET("smtpd_null_access_lookup_key", STR, null_access_key),
    SET("smtpd_peername_lookup", BOOL, peername_lookup),
    CFG_BIND_CHOICE("smtpd_upstream_proxy_protocol", struct smtpd_settings, upstream_proxy, proxy_protocols),
    SET("smtpd_upstream_proxy_timeout", TIMEVAL, upstream_proxy_timeout),
    CFG_BIND_READ("inet_protocols"),
    SET("content_filter", STR, content_filter),
    SET("smtpd_proxy_filter", STR, proxy_filter),
    SET("smtpd_proxy_timeout", TIMEVAL, proxy_timeout),
    SET("smtpd_proxy_ehlo", STR, proxy_ehlo),
};
const struct cfg_bind_table smtpd_bind_table = CFG_BIND_TABLE("smtpd", plain_binds);

static const struct cfg_choice tls_levels[] = {
    { "", TLS_LEVEL_NONE }, { "none", TLS_LEVEL_NONE }, { "may", TLS_LEVEL_MAY },
    { "encrypt", TLS_LEVEL_ENCRYPT }, { NULL, 0 },
};

/* What a service's settings open, compile or build once (tables, lists,
 * TLS, SASL): shared by its stress settings when nothing of it differs. */
static const struct cfg_bind service_binds[] = {
    CFG_BIND_CHOICE("smtpd_tls_security_level", struct smtpd_settings, tls_level, tls_levels),
    SET("smtpd_tls_wrappermode", BOOL, tls_wrappermode),
    SET("smtpd_tls_auth_only", BOOL, tls_auth_only),
    SET("smtpd_sasl_auth_enable", BOOL, sasl_auth_enable),
    SET("smtpd_sasl_type", STR, sasl_type),
    SET("smtpd_sasl_path", STR, sasl_path),
    /* sasl_glue.c, auth.c, restrict.c */
    SET("smtpd_sasl_service", STR, sasl_service),
    SET("smtpd_sasl_local_domain", STR, sasl_local_domain),
    SET("smtpd_sasl_authenticated_header", BOOL, sasl_authenticated_header),
    SET("broken_sasl_auth_clients", BOOL, broken_sasl_auth_clients),
    SET("smtpd_client_auth_rate_limit", UINT, auth_rate_limit),
    SET("smtpd_sasl_failure_limit", UINT, sasl_failure_limit),
    SET("smtpd_sasl_failure_window", UINT, sasl_failure_window),
    SET("smtpd_sasl_lockout_time", UINT, sasl_lockout_time),
    SET("smtpd_sasl_failure_delay", UINT, sasl_failure_delay),
    CFG_BIND_READ("smtpd_sasl_security_options"),
    CFG_BIND_READ("smtpd_sasl_tls_security_options"),
    CFG_BIND_READ("smtpd_sasl_mechanism_filter"),
    CFG_BIND_READ("smtpd_sasl_exceptions_networks"),
    CFG_BIND_READ("smtpd_authorized_xforward_hosts"),
    CFG_BIND_READ("smtpd_sender_login_maps"),
    CFG_BIND_READ("sender_bcc_maps"),
    CFG_BIND_READ("recipient_bcc_maps"),
    CFG_BIND_READ("relay_clientcerts"),
    CFG_BIND_READ("smtpd_discard_ehlo_keyword_address_maps"),
    CFG_BIND_READ("smtpd_command_filter"),
    CFG_BIND_READ("mynetworks"),
    CFG_BIND_READ("smtpd_forbid_bare_newline_exclusions"),
    CFG_BIND_READ("smtpd_client_event_limit_exceptions"),
    CFG_BIND_READ("smtpd_client_connection_limit_exceptions"),   /* through the default of the one above */
    CFG_BIND_READ("debug_peer_list"),
    CFG_BIND_READ("smtpd_client_restrictions"),
    CFG_BIND_READ("smtpd_helo_restrictions"),
    CFG_BIND_READ("smtpd_sender_restrictions"),
    CFG_BIND_READ("smtpd_recipient_restrictions"),
    CFG_BIND_READ("smtpd_relay_restrictions"),
    CFG_BIND_READ("smtpd_data_restrictions"),
    CFG_BIND_READ("smtpd_end_of_data_restrictions"),
    CFG_BIND_READ("smtpd_restriction_classes"),
    CFG_BIND_READ("inet_interfaces"),                 /* permit_inet_interfaces */
    /* policy.c: check_policy_service's defaults, the attributes it sends */
    CFG_BIND_READ("smtpd_policy_service_timeout"),
    CFG_BIND_READ("smtpd_policy_service_max_idle"),
    CFG_BIND_READ("smtpd_policy_service_max_ttl"),
    CFG_BIND_READ("smtpd_policy_service_retry_delay"),
    CFG_BIND_READ("smtpd_policy_service_request_limit"),
    CFG_BIND_READ("smtpd_policy_service_try_limit"),
    CFG_BIND_READ("smtpd_policy_service_default_action"),
    CFG_BIND_READ("smtpd_policy_service_policy_context"),
    CFG_BIND_READ("queue_directory"),                 /* unix:private/NAME endpoints */
    CFG_BIND_READ("stress"),
    CFG_BIND_READ("compatibility_level"),
    CFG_BIND_READ("mail_version"),
    CFG_BIND_READ("receive_override_options"),
    /* milter_settings(): the milter module's lists, checked per service */
    CFG_BIND_READ("smtpd_milters"),
    CFG_BIND_READ("non_smtpd_milters"),
    CFG_BIND_READ("milter_default_action"),
    CFG_BIND_READ("milter_protocol"),
    CFG_BIND_READ("milter_connect_timeout"),
    CFG_BIND_READ("milter_command_timeout"),
    CFG_BIND_READ("milter_content_timeout"),
    CFG_BIND_READ("milter_connect_macros"),
    CFG_BIND_READ("milter_helo_macros"),
    CFG_BIND_READ("milter_mail_macros"),
    CFG_BIND_READ("milter_rcpt_macros"),
    CFG_BIND_READ("milter_data_macros"),
    CFG_BIND_READ("milter_end_of_header_macros"),
    CFG_BIND_READ("milter_end_of_data_macros"),
    CFG_BIND_READ("milter_unknown_command_macros"),
    CFG_BIND_READ("milter_macro_daemon_name"),
    CFG_BIND_READ("milter_macro_v"),
    CFG_BIND_READ("milter_macro_defaults"),
    CFG_BIND_READ("smtpd_milter_maps"),
    CFG_BIND_READ("smtpd_proxy_options"),
    CFG_BIND_READ("queue_directory"),
    SET("smtpd_use_tls", BOOL, use_tls),
    SET("smtpd_enforce_tls", BOOL, enforce_tls),
    SET("smtpd_tls_ask_ccert", BOOL, tls_ask_ccert),
    SET("smtpd_tls_req_ccert", BOOL, tls_req_ccert),
    SET("smtpd_tls_ccert_verifydepth", INT, tls_ccert_verifydepth),
    SET("smtpd_tls_fingerprint_digest", STR, tls_fingerprint_digest),
    SET("smtpd_tls_loglevel", INT, tls_loglevel),
    SET("smtpd_tls_received_header", BOOL, tls_received_header),
    SET("smtpd_client_new_tls_session_rate_limit", UINT, new_tls_rate_limit),
    /* tls.c */
    CFG_BIND_READ("smtpd_tls_cert_file"),
    CFG_BIND_READ("smtpd_tls_key_file"),
    CFG_BIND_READ("smtpd_tls_chain_files"),
    CFG_BIND_READ("smtpd_tls_protocols"),
    CFG_BIND_READ("smtpd_tls_mandatory_protocols"),
    CFG_BIND_READ("smtpd_tls_ciphers"),
    CFG_BIND_READ("smtpd_tls_mandatory_ciphers"),
    CFG_BIND_READ("smtpd_tls_exclude_ciphers"),
    CFG_BIND_READ("smtpd_tls_mandatory_exclude_ciphers"),
    CFG_BIND_READ("smtpd_tls_CAfile"),
    CFG_BIND_READ("smtpd_tls_CApath"),
    CFG_BIND_READ("smtpd_tls_dh1024_param_file"),
    CFG_BIND_READ("smtpd_tls_session_cache_timeout"),
    CFG_BIND_READ("smtpd_tls_session_cache_database"),
    CFG_BIND_READ("tls_preempt_cipherlist"),
    CFG_BIND_READ("tls_high_cipherlist"),
    CFG_BIND_READ("tls_medium_cipherlist"),
    CFG_BIND_READ("tls_null_cipherlist"),
    CFG_BIND_READ("tls_eecdh_auto_curves"),
    CFG_BIND_READ("tls_ffdhe_auto_groups"),
};
/* Also read: the address classes' domain lists and the address resolution
 * (core/mail) and the recipient maps (smtpd_rcpt_maps_bind_table). */
const struct cfg_bind_table smtpd_service_bind_table = CFG_BIND_TABLE("smtpd services", service_binds);

_Static_assert(sizeof(enum tls_level) == sizeof(int), "CHOICE bindings fill an int");

/* The fields read straight from the configuration (no table, list or TLS). */
static void read_plain_values(struct smtpd_settings *set, const struct master_service *svc, const struct cfg *cfg)
{
    petrel_pool *pool = set->pool;
    set->service_name = petrel_pool_strdup(pool, svc->name);
    cfg_bind_apply(cfg, &smtpd_bind_table, set);
    if (set->line_length_limit < 512)
        set->line_length_limit = 512;   /* RFC 5321 4.5.3.1.4: a command line may be 512 octets */
    set->maxproc = svc->maxproc;
    set->proxy_families = smtpd_proxy_families(cfg_get(cfg, "inet_protocols"));
}

/* smtpd_milters (non_smtpd_milters for the pickup service's local mail)
 * are the milter module's; without it they are refused like any name a
 * missing module provides (config/classes.c). The module reads each
 * service's own values (petrel_service_config_*: main.cf plus the
 * service's master.cf -o) and checks them; -o smtpd_milters= (empty) and
 * receive_override_options=no_milters turn it off for the service
 * (module_session_turn_off). The module knows a service by its name, so
 * a second service of the same name (whose sessions would get the first
 * one's milters) must not set other milter values. */
static const char *const milter_service_params[] = {
    "smtpd_milters", "non_smtpd_milters", "milter_default_action", "milter_protocol",
    "milter_connect_timeout", "milter_command_timeout", "milter_content_timeout", "milter_connect_macros",
    "milter_helo_macros", "milter_mail_macros", "milter_rcpt_macros", "milter_data_macros",
    "milter_end_of_header_macros", "milter_end_of_data_macros", "milter_unknown_command_macros",
    "milter_macro_daemon_name", "milter_macro_v", "milter_macro_defaults", "smtpd_milter_maps", "myhostname",
    "message_size_limit", NULL
};

static int milter_settings(struct smtpd_settings *set, const struct master_service *svc,
                           const struct module_set *modules, const struct cfg *cfg, char **error)
{
    const char *param = svc->role == ROLE_PICKUP ? "non_smtpd_milters" : "smtpd_milters";
    const char *list = cfg_get(cfg, param);
    /* smtpd_milter_maps may give a client milters when smtpd_milters has none */
    const char *maps = svc->role == ROLE_PICKUP ? NULL : cfg_get(cfg, "smtpd_milter_maps");
    int no_list = list == NULL || list[strspn(list, " \t\r\n,")] == '\0';
    int no_maps = maps == NULL || maps[strspn(maps, " \t\r\n,")] == '\0';
    set->milter_module = module_set_find_module(modules, "milter");
    set->milters_off = (no_list && no_maps) || (set->receive_override & RO_NO_MILTERS);
    if (set->milter_module == NULL)
        set->milters_off = 1;   /* refused unless accepted: parameters.txt's refuse@milter (config/classes.c) */
    if (set->milters_off)
        return 0;
    const struct master_service *first = module_hook_service(cfg, svc->name);
    if (first == NULL || first == svc || first->cfg == NULL)
        return 0;
    for (const char *const *p = milter_service_params; *p; p++) {
        const char *mine = cfg_get(cfg, *p), *theirs = cfg_get(first->cfg, *p);
        if (mine && theirs && strcmp(mine, theirs) != 0)
            return fail(error, "%s = %s: another service called %s (%s, line %d) sets %s = %s; the milter "
                        "module tells services apart by name: give this one its own name", *p, mine, svc->name,
                        first->file, first->line, *p, theirs);
    }
    return 0;
}

struct smtpd_settings *smtpd_settings_create(struct smtpd_worker *w, const struct master_service *svc,
                                             const struct cfg *cfg, const struct smtpd_settings *like,
                                             char **error)
{
    if (strlen(svc->name) > ANVIL_SERVICE_NAME_MAX) {
        fail(error, "the service name is longer than %d characters (connection accounting keys include it)",
             ANVIL_SERVICE_NAME_MAX);
        locate_error(svc, error);
        return NULL;
    }
    petrel_pool *pool = petrel_pool_create(8192);
    struct smtpd_settings *set = petrel_pool_zalloc(pool, sizeof(*set));
    if (like && cfg_same_except(like->cfg, cfg, scalar_params)) {
        /* Everything like has, with this configuration's plain values. */
        *set = *like;
        set->pool = pool;
        set->cfg = cfg;
        set->borrowed = 1;
        petrel_pool_cleanup_add(pool, free_settings_pool, set);
        read_plain_values(set, svc, cfg);
        return set;
    }
    set->pool = pool;
    set->cfg = cfg;
    petrel_pool_cleanup_add(pool, free_settings_pool, set);
    read_plain_values(set, svc, cfg);
    /* Everything is tried even after a problem, so that petreld -n reports
     * each one; the settings are used only when there was none. */
    int failed = 0;
    if (mail_domains_open(&set->domains, cfg, w->tables, 1, error) != 0)
        failed = 1;
    /* Every RCPT classifies its domain, up to twice (reject_unauth_destination
     * and the recipient validation): kept as Postfix's smtpd keeps it. */
    mail_domains_cache(&set->domains, cfg);
    {
        const char *param = NULL;
        set->rcpt_maps = smtpd_rcpt_maps_open(cfg, w->tables, &param, error);
        if (set->rcpt_maps == NULL)
            failed = 1;
    }
    set->resolve = petrel_pool_zalloc(pool, sizeof(*set->resolve));
    if (mail_resolve_open(set->resolve, cfg, w->tables, MAIL_MAPS_QUIET, error) != 0)
        failed = 1;
    /* Address maps, searched as Postfix's mail_addr_find does (bcc.c). */
    set->sender_bcc_maps = petrel_pool_zalloc(pool, sizeof(*set->sender_bcc_maps));
    if (mail_maps_open(set->sender_bcc_maps, cfg, w->tables, "sender_bcc_maps", 0, error) != 0) {
        set->sender_bcc_maps = NULL;
        failed = 1;
    }
    set->recipient_bcc_maps = petrel_pool_zalloc(pool, sizeof(*set->recipient_bcc_maps));
    if (mail_maps_open(set->recipient_bcc_maps, cfg, w->tables, "recipient_bcc_maps", 0, error) != 0) {
        set->recipient_bcc_maps = NULL;
        failed = 1;
    }

    set->relay_clientcerts = petrel_pool_zalloc(pool, sizeof(*set->relay_clientcerts));
    if (mail_maps_open(set->relay_clientcerts, cfg, w->tables, "relay_clientcerts", MAIL_MAPS_QUIET, error) != 0) {
        set->relay_clientcerts = NULL;
        failed = 1;
    }
    set->discard_ehlo_maps = petrel_pool_zalloc(pool, sizeof(*set->discard_ehlo_maps));
    if (mail_maps_open(set->discard_ehlo_maps, cfg, w->tables, "smtpd_discard_ehlo_keyword_address_maps",
                       MAIL_MAPS_QUIET, error) != 0) {
        set->discard_ehlo_maps = NULL;
        failed = 1;
    }
    {
        /* one table, as Postfix's dict_open of smtpd_command_filter */
        const char *spec = cfg_get(cfg, "smtpd_command_filter");
        if (spec && *spec) {
            char *why = NULL;
            set->command_filter = tbl_open(w->tables, spec, TBL_FLAG_FOLD_CASE, &why);
            if (set->command_filter == NULL) {
                failed = fail(error, "smtpd_command_filter: %s", why ? why : spec);
                free(why);
            }
        }
    }

    /* Postfix's namadr lists (smtpd_check.c, smtpd.c, debug_peer.c):
     * networks, the client's verified name, .domain, type:table, "!". The
     * ones in parent_domain_matches_subdomains' default (mynetworks,
     * debug_peer_list, and the bare newline exclusions, which Postfix
     * opens with mynetworks' style) also match a domain's subdomains. */
    failed |= client_list(w, cfg, "mynetworks", 1, &set->mynetworks, error);
    failed |= client_list(w, cfg, "smtpd_forbid_bare_newline_exclusions", 1, &set->bare_lf_exclusions, error);
    failed |= client_list(w, cfg, "smtpd_client_event_limit_exceptions", 0, &set->conn_limit_exceptions, error);
    failed |= client_list(w, cfg, "debug_peer_list", 1, &set->debug_peers, error);
    failed |= client_list(w, cfg, "smtpd_sasl_exceptions_networks", 0, &set->sasl_exceptions, error);
    failed |= client_list(w, cfg, "smtpd_authorized_xforward_hosts", 0, &set->xforward_hosts, error);

    cfg_bind_apply(cfg, &smtpd_service_bind_table, set);
    {
        /* These set *error as their only problem: each gets its own. */
        char *why = NULL;
        if (receive_override(cfg, &set->receive_override, &why) != 0 ||
            check_content_filter(w, set->content_filter, &why) != 0 || proxy_options(cfg, set, &why) != 0 ||
            proxy_resolve(set, set->proxy_filter, cfg_get(cfg, "queue_directory"), &why) != 0)
            failed = fail(error, "%s", why ? why : "smtpd: the content filter settings cannot be used");
        free(why);
        why = NULL;
        if ((set->cleanup = smtpd_cleanup_settings_create(w, svc, cfg, &why)) == NULL)
            failed = fail(error, "%s", why ? why : "cleanup: its settings cannot be used");
        free(why);
    }
    {
        /* smtpd_sasl_settings sets *error as its only problem. */
        char *why = NULL;
        if (smtpd_sasl_settings(set, w->modules, cfg, w->checking, &why) != 0)
            failed = fail(error, "%s", why ? why : "smtpd_sasl_type: the SASL settings cannot be used");
        free(why);
    }
    /* milter_settings sets *error with each problem. */
    if (milter_settings(set, svc, w->modules, cfg, error) != 0)
        failed = 1;
    if (svc->role == ROLE_PICKUP) {
        /* The pickup role's in-process sessions (local submission): the
         * limits and the TLS and AUTH requirements meant for network
         * clients do not apply, as in Postfix, where sendmail mail never
         * meets smtpd. Restrictions and module hooks do. */
        set->tls_level = TLS_LEVEL_NONE;
        set->tls_wrappermode = 0;
        set->tls_auth_only = 0;
        set->sasl = NULL;
        set->sasl_server = NULL;
        set->recipient_limit = MAILDROP_RCPT_MAX;
        set->soft_error_limit = INT_MAX;
        set->hard_error_limit = INT_MAX;
        set->error_sleep_time = 0;
        set->junk_command_limit = INT_MAX;
        set->maxproc = 0;
    }
    /* The legacy switches count only when the level is empty (Postfix). */
    if (*cfg_get(cfg, "smtpd_tls_security_level") == '\0')
        set->tls_level = set->enforce_tls ? TLS_LEVEL_ENCRYPT : set->use_tls ? TLS_LEVEL_MAY : TLS_LEVEL_NONE;
    /* Postfix asks for a client certificate when told to, or when one is
     * required at level encrypt; required is meaningless otherwise. */
    if (set->tls_req_ccert && set->tls_level != TLS_LEVEL_ENCRYPT) {
        if (w->checking)
            msg_warn("service %s: smtpd_tls_req_ccert = yes needs smtpd_tls_security_level = encrypt: "
                     "client certificates are not required", svc->name);
        set->tls_req_ccert = 0;
    }
    if (set->tls_req_ccert)
        set->tls_ask_ccert = 1;
    if (set->tls_level != TLS_LEVEL_NONE || set->tls_wrappermode) {
        /* These set *error as their only problem: each gets its own. */
        char *why = NULL;
        if (tls_check_digest(set->tls_fingerprint_digest, "smtpd_tls_fingerprint_digest", &why) < 0) {
            failed = fail(error, "%s", why ? why : "smtpd_tls_fingerprint_digest: unknown digest");
        } else {
            set->tls_ctx = smtpd_tls_ctx_create(set, w->tickets, &set->tls_scache, &why);
            if (set->tls_ctx == NULL)
                failed = fail(error, "%s", why ? why : "smtpd_tls_cert_file: cannot set up TLS");
        }
        free(why);
    }

    if ((set->own_addresses = own_addresses(cfg, error)) == NULL)
        failed = 1;

    set->sender_login_maps = petrel_pool_zalloc(pool, sizeof(*set->sender_login_maps));
    if (mail_maps_open(set->sender_login_maps, cfg, w->tables, "smtpd_sender_login_maps", 0, error) != 0) {
        set->sender_login_maps = NULL;
        failed = 1;
    }
    struct restrict_compiler compiler = { .pool = pool, .cfg = cfg, .tables = w->tables, .modules = w->modules,
                                          .validating = w->base == NULL };
    /* The lists may name classes: they are compiled once the classes are. */
    char *classes_error = NULL;
    int lists_failed = 0;
    if (restrict_classes_compile(&compiler, &classes_error) != 0) {
        lists_failed = fail(error, "%s", classes_error ? classes_error : "smtpd_restriction_classes: cannot compile");
        compiler.classes = NULL;
    }
    free(classes_error);
    set->classes = compiler.classes;
    static const struct { const char *param; size_t offset; } lists[] = {
        { "smtpd_client_restrictions", offsetof(struct smtpd_settings, client_restrictions) },
        { "smtpd_helo_restrictions", offsetof(struct smtpd_settings, helo_restrictions) },
        { "smtpd_sender_restrictions", offsetof(struct smtpd_settings, sender_restrictions) },
        { "smtpd_recipient_restrictions", offsetof(struct smtpd_settings, recipient_restrictions) },
        { "smtpd_relay_restrictions", offsetof(struct smtpd_settings, relay_restrictions) },
        { "smtpd_data_restrictions", offsetof(struct smtpd_settings, data_restrictions) },
        { "smtpd_end_of_data_restrictions", offsetof(struct smtpd_settings, eod_restrictions) },
    };
    for (size_t i = 0; i < sizeof(lists) / sizeof(lists[0]) && set->classes; i++)
        if (compile_list(set, &compiler, lists[i].param, (struct restrict_list **)((char *)set + lists[i].offset),
                         error))
            lists_failed = 1;
    /* Postfix refuses to run with neither list guarding relaying (judged
     * only when both lists compiled). */
    if (!lists_failed && !restrict_list_guards_relay(set->relay_restrictions, set->classes) &&
        !restrict_list_guards_relay(set->recipient_restrictions, set->classes))
        failed = fail(error, "smtpd_recipient_restrictions: in parameter smtpd_relay_restrictions or "
                      "smtpd_recipient_restrictions, specify at least one working instance of: "
                      "reject_unauth_destination, defer_unauth_destination, reject, defer or defer_if_permit: "
                      "this would be an open relay");
    failed |= lists_failed;
    if (!failed)
        return set;
    locate_error(svc, error);
    petrel_pool_destroy(pool);
    return NULL;
}

void smtpd_settings_free(struct smtpd_settings *set)
{
    if (set)
        petrel_pool_destroy(set->pool);
}

int smtpd_queue_space_ok(struct smtpd_worker *w, unsigned long long message_size_limit)
{
    time_t now = time(NULL);
    if (now == w->space_checked)
        return w->space_ok;
    w->space_checked = now;
    struct statvfs st;
    if (fstatvfs(queue_dir_fd(w->queue, QDIR_INCOMING), &st) != 0) {
        w->space_ok = 1;   /* cannot tell: let the write itself fail if it must */
        return 1;
    }
    unsigned long long avail = (unsigned long long)st.f_bavail * st.f_frsize;
    unsigned long long need = (unsigned long long)w->queue_minfree;
    if (need < message_size_limit + message_size_limit / 2)
        need = message_size_limit + message_size_limit / 2;
    w->space_ok = avail >= need;
    return w->space_ok;
}
