/*
 * postscreen's parameters (Postfix's names and defaults, postconf(5)), and
 * the few smtpd ones postscreen shares: a table of its own next to the
 * core table in params.c, because postscreen is one feature with many
 * names. Which of them take effect, and what Petrel says about those that
 * cannot, is written in doc/postscreen.md.
 *
 * Defaults that name another parameter keep Postfix's form
 * (${postscreen_blacklist_action?{$postscreen_blacklist_action}:{ignore}}),
 * so an old name set in main.cf still decides the new one.
 */
#include "config.h"

#include <stddef.h>

#include "config/config_impl.h"

static const char *const psc_actions[] = { "ignore", "enforce", "drop", "continue", NULL };
static const char *const proxy_protocols[] = { "", "haproxy", NULL };

#define S(n, d, h) { n, CFG_STR, d, h, 0, 0, NULL }
#define E(n, d, c, h) { n, CFG_STR, d, h, 0, 0, c }
#define I(n, d, lo, hi, h) { n, CFG_INT, d, h, lo, hi, NULL }
#define B(n, d, h) { n, CFG_BOOL, d, h, 0, 0, NULL }
#define T(n, d, lo, h) { n, CFG_TIME, d, h, lo, 0, NULL }
#define L(n, d, h) { n, CFG_LIST, d, h, 0, 0, NULL }
#define M(n, d, h) { n, CFG_TABLE, d, h, 0, 0, NULL }

/* Scores may be negative (allowlists); the bounds only keep sums sane. */
#define SCORE_MIN (-1000000)
#define SCORE_MAX 1000000

static const struct cfg_param postscreen_params[] = {
    /* the permanent allow/denylist */
    L("postscreen_access_list", "permit_mynetworks", "permanent allow/denylist of client addresses"),
    E("postscreen_blacklist_action", "ignore", psc_actions, "old name of postscreen_denylist_action"),
    E("postscreen_denylist_action",
      "${postscreen_blacklist_action?{$postscreen_blacklist_action}:{ignore}}", psc_actions,
      "what happens to a client that postscreen_access_list rejects (ignore, enforce, drop)"),
    L("postscreen_whitelist_interfaces", "static:all", "old name of postscreen_allowlist_interfaces"),
    L("postscreen_allowlist_interfaces",
      "${postscreen_whitelist_interfaces?{$postscreen_whitelist_interfaces}:{static:all}}",
      "local addresses where a client can earn the temporary allowlist"),
    B("respectful_logging", "yes", "log ALLOWLISTED/DENYLISTED rather than WHITELISTED/BLACKLISTED"),
    /* before the greeting */
    T("postscreen_greet_wait", "${stress?{2}:{6}}s", 1,
      "how long the pregreet test and the DNSBL lookups may take before the greeting"),
    S("postscreen_greet_banner", "$smtpd_banner", "the 220- teaser sent first (empty: no pregreet test)"),
    E("postscreen_greet_action", "ignore", psc_actions, "what happens to a client that talks before its turn"),
    T("postscreen_greet_ttl", "1d", 1, "how long a passed pregreet test counts"),
    L("postscreen_dnsbl_sites", "", "DNS lists: domain[=filter][*weight], ..."),
    I("postscreen_dnsbl_threshold", "1", 1, SCORE_MAX, "score at which a client is DNS-blocklisted"),
    I("postscreen_dnsbl_whitelist_threshold", "0", SCORE_MIN, SCORE_MAX,
      "old name of postscreen_dnsbl_allowlist_threshold"),
    I("postscreen_dnsbl_allowlist_threshold",
      "${postscreen_dnsbl_whitelist_threshold?{$postscreen_dnsbl_whitelist_threshold}:{0}}", SCORE_MIN, SCORE_MAX,
      "score at or below which (when negative) a client skips the other tests"),
    E("postscreen_dnsbl_action", "ignore", psc_actions, "what happens to a DNS-blocklisted client"),
    M("postscreen_dnsbl_reply_map", "", "the list name replies show, per list domain (hides secrets)"),
    S("postscreen_dnsbl_ttl", "", "old name of postscreen_dnsbl_max_ttl (hours)"),
    T("postscreen_dnsbl_min_ttl", "60s", 1, "shortest time a DNSBL result counts"),
    /* Postfix's default is ${postscreen_dnsbl_ttl?{$postscreen_dnsbl_ttl}:{1}}h,
     * which gives "2hh" for an old "postscreen_dnsbl_ttl = 2h": Postfix's
     * time parser ignores what follows the unit, ours refuses it. The unit
     * moves inside, and a bare old value still means hours (the default
     * unit taken from the default's last letter). */
    T("postscreen_dnsbl_max_ttl", "${postscreen_dnsbl_ttl?{$postscreen_dnsbl_ttl}:{1h}}", 1,
      "longest time a DNSBL result counts"),
    T("postscreen_dnsbl_timeout", "10s", 1, "how long one DNS list may take to answer"),
    /* after the greeting */
    B("postscreen_pipelining_enable", "no", "the pipelining test"),
    E("postscreen_pipelining_action", "enforce", psc_actions, "what happens to a client that pipelines"),
    T("postscreen_pipelining_ttl", "30d", 1, "how long a passed pipelining test counts"),
    B("postscreen_non_smtp_command_enable", "no", "the non-SMTP command test"),
    E("postscreen_non_smtp_command_action", "drop", psc_actions,
      "what happens to a client that sends a non-SMTP command"),
    T("postscreen_non_smtp_command_ttl", "30d", 1, "how long a passed non-SMTP command test counts"),
    B("postscreen_bare_newline_enable", "no", "the bare newline test"),
    E("postscreen_bare_newline_action", "ignore", psc_actions, "what happens to a client that sends a bare LF"),
    T("postscreen_bare_newline_ttl", "30d", 1, "how long a passed bare newline test counts"),
    I("postscreen_command_count_limit", "20", 1, 0, "commands one session of the after-greeting tests may send"),
    T("postscreen_command_time_limit", "${stress?{10}:{300}}s", 1, "time to send one whole command line"),
    L("smtpd_forbidden_commands", "CONNECT GET POST regexp:{{/^[^A-Z]/ Bogus}}",
      "commands that are not SMTP (postscreen's non-SMTP test)"),
    L("postscreen_forbidden_commands", "$smtpd_forbidden_commands", "commands the non-SMTP test looks for"),
    B("postscreen_helo_required", "$smtpd_helo_required", "the test engine wants HELO/EHLO before MAIL"),
    B("postscreen_disable_vrfy_command", "$disable_vrfy_command", "the test engine refuses VRFY"),
    L("postscreen_discard_ehlo_keywords", "$smtpd_discard_ehlo_keywords", "EHLO keywords the test engine leaves out"),
    M("postscreen_discard_ehlo_keyword_address_maps", "$smtpd_discard_ehlo_keyword_address_maps",
      "EHLO keywords to leave out, per client address"),
    S("postscreen_command_filter", "", "rewrites commands before the test engine sees them"),
    S("postscreen_reject_footer", "", "text appended to postscreen's 4xx/5xx replies"),
    M("postscreen_reject_footer_maps", "", "footers per reply"),
    S("postscreen_expansion_filter", "", "characters allowed in footer expansions"),
    /* STARTTLS in the test engine */
    S("postscreen_tls_security_level", "$smtpd_tls_security_level", "STARTTLS in the after-greeting test engine"),
    B("postscreen_use_tls", "$smtpd_use_tls", "old: opportunistic STARTTLS in the test engine"),
    B("postscreen_enforce_tls", "$smtpd_enforce_tls", "old: mandatory STARTTLS in the test engine"),
    /* Postfix's tlsproxy settings for the test engine's STARTTLS, which Petrel
     * does not offer: declared so that setting one is warned about by name. */
    S("postscreen_starttls_timeout", "", "STARTTLS in the after-220 test engine (not offered: no effect)"),
    S("postscreen_tls_CAfile", "", "STARTTLS in the after-220 test engine (not offered: no effect)"),
    S("postscreen_tls_CApath", "", "STARTTLS in the after-220 test engine (not offered: no effect)"),
    S("postscreen_tls_always_issue_session_ids", "", "STARTTLS in the after-220 test engine (not offered: no effect)"),
    S("postscreen_tls_ask_ccert", "", "STARTTLS in the after-220 test engine (not offered: no effect)"),
    S("postscreen_tls_ccert_verifydepth", "", "STARTTLS in the after-220 test engine (not offered: no effect)"),
    S("postscreen_tls_cert_file", "", "STARTTLS in the after-220 test engine (not offered: no effect)"),
    S("postscreen_tls_chain_files", "", "STARTTLS in the after-220 test engine (not offered: no effect)"),
    S("postscreen_tls_ciphers", "", "STARTTLS in the after-220 test engine (not offered: no effect)"),
    S("postscreen_tls_dcert_file", "", "STARTTLS in the after-220 test engine (not offered: no effect)"),
    S("postscreen_tls_dh1024_param_file", "", "STARTTLS in the after-220 test engine (not offered: no effect)"),
    S("postscreen_tls_dh512_param_file", "", "STARTTLS in the after-220 test engine (not offered: no effect)"),
    S("postscreen_tls_dkey_file", "", "STARTTLS in the after-220 test engine (not offered: no effect)"),
    S("postscreen_tls_eccert_file", "", "STARTTLS in the after-220 test engine (not offered: no effect)"),
    S("postscreen_tls_eckey_file", "", "STARTTLS in the after-220 test engine (not offered: no effect)"),
    S("postscreen_tls_eecdh_grade", "", "STARTTLS in the after-220 test engine (not offered: no effect)"),
    S("postscreen_tls_enable_rpk", "", "STARTTLS in the after-220 test engine (not offered: no effect)"),
    S("postscreen_tls_exclude_ciphers", "", "STARTTLS in the after-220 test engine (not offered: no effect)"),
    S("postscreen_tls_fingerprint_digest", "", "STARTTLS in the after-220 test engine (not offered: no effect)"),
    S("postscreen_tls_key_file", "", "STARTTLS in the after-220 test engine (not offered: no effect)"),
    S("postscreen_tls_loglevel", "", "STARTTLS in the after-220 test engine (not offered: no effect)"),
    S("postscreen_tls_loglevel_maps", "", "STARTTLS in the after-220 test engine (not offered: no effect)"),
    S("postscreen_tls_mandatory_ciphers", "", "STARTTLS in the after-220 test engine (not offered: no effect)"),
    S("postscreen_tls_mandatory_exclude_ciphers", "", "STARTTLS in the after-220 test engine (not offered: no effect)"),
    S("postscreen_tls_mandatory_protocols", "", "STARTTLS in the after-220 test engine (not offered: no effect)"),
    S("postscreen_tls_protocols", "", "STARTTLS in the after-220 test engine (not offered: no effect)"),
    S("postscreen_tls_req_ccert", "", "STARTTLS in the after-220 test engine (not offered: no effect)"),
    S("postscreen_tls_trace_size_limit", "", "STARTTLS in the after-220 test engine (not offered: no effect)"),
    /* the temporary allowlist */
    S("default_cache_db_type", "btree", "table type of caches (any of btree, hash, lmdb: an LMDB file)"),
    S("postscreen_cache_map", "$default_cache_db_type:$data_directory/postscreen_cache",
      "the temporary allowlist, shared by every smtpd worker"),
    T("postscreen_cache_retention_time", "7d", 1, "how long an expired entry stays before it is removed"),
    T("postscreen_cache_cleanup_interval", "12h", 0, "time between cache cleanups (0: never)"),
    /* capacity and plumbing */
    I("postscreen_pre_queue_limit", "$default_process_limit", 10, 0, "clients being screened at once"),
    I("postscreen_post_queue_limit", "$default_process_limit", 5, 0,
      "screened clients waiting for an smtpd session slot"),
    I("postscreen_client_connection_count_limit", "$smtpd_client_connection_count_limit", 0, 0,
      "simultaneous connections of one client to postscreen"),
    T("postscreen_watchdog_timeout", "10s", 10, "Postfix: kills a stuck postscreen process (no effect here)"),
    E("postscreen_upstream_proxy_protocol", "", proxy_protocols, "proxy protocol in front of postscreen (haproxy)"),
    T("postscreen_upstream_proxy_timeout", "5s", 1, "time to receive the proxy header"),
    E("smtpd_upstream_proxy_protocol", "", proxy_protocols, "proxy protocol in front of smtpd (haproxy)"),
    T("smtpd_upstream_proxy_timeout", "5s", 1, "time to receive the proxy header"),
    S("smtpd_service_name", "smtpd", "the master.cf pass service postscreen hands clients to"),
    S("dnsblog_service_name", "dnsblog", "Postfix's DNSBL lookup service (done inside the smtpd worker here)"),
    S("tlsproxy_service_name", "tlsproxy", "Postfix's TLS proxy service (not used here)"),
};

const struct cfg_param *cfg_postscreen_params(size_t *n)
{
    *n = sizeof(postscreen_params) / sizeof(postscreen_params[0]);
    return postscreen_params;
}
