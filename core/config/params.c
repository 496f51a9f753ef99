/*
 * The core parameter table (Postfix's names and defaults at
 * compatibility_level = 3.6, with the safer 3.9 defaults Petrel adopts) and
 * the schema that modules extend.
 *
 * Like Postfix's mail_params.h, a default is raw text that may say $name;
 * a time default carries its unit ("5d"), which is also the unit assumed
 * when the admin writes a bare number. Defaults that depend on the host
 * (myhostname, mydomain, mynetworks, config_directory) are computed at load
 * time (defaults.c).
 */
#include "config.h"

#include <arpa/inet.h>
#include <ifaddrs.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#include "config/config_impl.h"
#include "lib/xalloc.h"

#ifndef PETREL_QUEUEDIR
#define PETREL_QUEUEDIR "/var/spool/petrel"
#endif
#ifndef PETREL_MODULEDIR
#define PETREL_MODULEDIR "/usr/local/lib/petrel/modules"
#endif
#ifndef PETREL_SBINDIR
#define PETREL_SBINDIR "/usr/local/sbin"
#endif
#ifndef PACKAGE_VERSION
#define PACKAGE_VERSION "0"
#endif

static const char *const bare_newline_modes[] = { "normalize", "yes", "reject", "no", NULL };
static const char *const milter_actions[] = { "accept", "reject", "tempfail", "quarantine", "shutdown", NULL };
static const char *const mynetworks_styles[] = { "host", "subnet", "class", NULL };
static const char *const database_types[] = { "hash", "lmdb", "cdb", NULL };
static const char *const tempfail_actions[] = { "defer_if_permit", "defer", NULL };

#define MAXT 0  /* no upper bound */
#define S(n, d, h) { n, CFG_STR, d, h, 0, 0, NULL }
#define E(n, d, c, h) { n, CFG_STR, d, h, 0, 0, c }
#define I(n, d, lo, hi, h) { n, CFG_INT, d, h, lo, hi, NULL }
#define B(n, d, h) { n, CFG_BOOL, d, h, 0, 0, NULL }
#define T(n, d, lo, h) { n, CFG_TIME, d, h, lo, MAXT, NULL }
#define Z(n, d, lo, h) { n, CFG_SIZE, d, h, lo, MAXT, NULL }
#define L(n, d, h) { n, CFG_LIST, d, h, 0, 0, NULL }
#define M(n, d, h) { n, CFG_TABLE, d, h, 0, 0, NULL }

/* Kept in alphabetical order only for readers; the schema sorts anyway. */
static const struct cfg_param core_params[] = {
    S("2bounce_notice_recipient", "postmaster", "who gets undeliverable bounces"),
    I("access_map_defer_code", "450", 400, 599, "reply code of DEFER in access tables and policy replies"),
    I("access_map_reject_code", "554", 400, 599, "reply code of REJECT in access tables and policy replies"),
    I("defer_code", "450", 400, 599, "reply code of the defer restriction"),
    I("invalid_hostname_reject_code", "501", 400, 599, "reply code of reject_invalid_helo_hostname"),
    I("multi_recipient_bounce_reject_code", "550", 400, 599, "reply code of reject_multi_recipient_bounce"),
    I("non_fqdn_reject_code", "504", 400, 599, "reply code of the reject_non_fqdn_* restrictions"),
    I("plaintext_reject_code", "450", 400, 599, "reply code of reject_plaintext_session"),
    I("reject_code", "554", 400, 599, "reply code of the reject restriction"),
    E("reject_tempfail_action", "defer_if_permit", tempfail_actions, "what a restriction does when the DNS fails for the moment"),
    I("relay_domains_reject_code", "554", 400, 599, "reply code of reject_unauth_destination (defer_unauth_destination: this - 100)"),
    B("smtpd_peername_lookup", "yes", "look up the client's name in the DNS (reverse, forward-confirmed)"),
    S("smtpd_null_access_lookup_key", "<>", "the key check_sender_access looks up for the null sender"),
    S("smtpd_policy_service_default_action", "451 4.3.5 Server configuration problem", "action when a policy server cannot be asked"),
    T("smtpd_policy_service_max_idle", "300s", 1, "close an unused policy server connection after this"),
    T("smtpd_policy_service_max_ttl", "1000s", 1, "close a policy server connection this long after it was opened"),
    S("smtpd_policy_service_policy_context", "", "the policy_context attribute of policy requests"),
    I("smtpd_policy_service_request_limit", "0", 0, 0, "requests per policy server connection (0 = no limit)"),
    T("smtpd_policy_service_retry_delay", "1s", 1, "pause before a failed policy request is tried again"),
    T("smtpd_policy_service_timeout", "100s", 1, "time limit to connect to, write to and read from a policy server"),
    I("smtpd_policy_service_try_limit", "2", 1, 0, "attempts of a policy request before the default action"),
    L("smtpd_restriction_classes", "", "names of restriction lists defined as parameters"),
    I("unknown_address_reject_code", "450", 400, 599, "reply code of reject_unknown_sender_domain / _recipient_domain"),
    E("unknown_address_tempfail_action", "$reject_tempfail_action", tempfail_actions, "reject_unknown_*_domain when the DNS fails for the moment"),
    I("unknown_client_reject_code", "450", 400, 599, "reply code of reject_unknown_client_hostname / _reverse_client_hostname"),
    I("unknown_hostname_reject_code", "450", 400, 599, "reply code of reject_unknown_helo_hostname"),
    E("unknown_helo_hostname_tempfail_action", "$reject_tempfail_action", tempfail_actions, "reject_unknown_helo_hostname when the DNS fails for the moment"),
    L("alias_database", "hash:/etc/aliases", "alias tables that newaliases builds"),
    M("alias_maps", "hash:/etc/aliases", "alias tables for local delivery"),
    L("allow_mail_to_commands", "alias, forward", "where |command deliveries may come from (alias, forward, include)"),
    L("allow_mail_to_files", "alias, forward", "where /file deliveries may come from (alias, forward, include)"),
    B("allow_percent_hack", "yes", "rewrite user%domain into user@domain"),
    L("alternate_config_directories", "", "configuration directories petrel-postdrop accepts from -c or MAIL_CONFIG for any user"),
    S("always_bcc", "", "address that gets a copy of every message"),
    T("address_class_cache_ttl", "30s", 0,
      "how long smtpd keeps a domain's address class (0: asks the domain lists' tables every time)"),
    T("anvil_rate_time_unit", "60s", 1, "time unit of the client rate limits"),
    B("append_dot_mydomain", "no", "append .$mydomain to incomplete domains"),
    B("biff", "no", "notify local users with comsat"),
    M("body_checks", "", "tables of body_checks(5) rules for message body lines (cleanup)"),
    I("body_checks_size_limit", "51200", 0, 0, "bytes of each body part that body_checks inspect"),
    B("broken_sasl_auth_clients", "no", "also announce AUTH=... for old Outlook clients"),
    S("bounce_notice_recipient", "postmaster", "who gets notices of bounces"),
    T("bounce_queue_lifetime", "5d", 0, "how long a bounce may stay queued"),
    M("canonical_maps", "", "address mapping for envelope and headers"),
    S("cleanup_service_name", "cleanup", "the master.cf cleanup service whose settings (header and body "
      "checks, MIME limits) apply to this smtpd or pickup service"),
    B("cleanup_replace_stray_cr_lf", "yes", "replace stray CR and LF in stored content"),
    S("command_directory", PETREL_SBINDIR, "where the administrative commands are"),
    S("command_expansion_filter",
      "1234567890!@%-_=+:,./abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ",
      "characters allowed in the environment of alias commands (others become _)"),
    S("compatibility_level", "3.6", "Postfix compatibility level of the defaults"),
    S("config_directory", "", "directory of main.cf and master.cf"),
    S("content_filter", "", "after-queue content filter transport:nexthop for mail this service receives"),
    S("daemon_directory", PETREL_SBINDIR, "where the daemon program is"),
    S("data_directory", "/var/lib/petrel", "directory for caches and other writable data"),
    L("debug_peer_list", "", "clients whose sessions are logged verbosely"),
    I("debug_peer_level", "2", 1, 0, "extra verbosity for debug_peer_list clients"),
    /* Postfix's RBL reply settings, used by the dnsbl module. default_rbl_reply
     * is raw: its $rbl_* names are expanded per reply, not at load time. */
    S("default_rbl_reply",
      "$rbl_code Service unavailable; $rbl_class [$rbl_what] blocked using $rbl_domain${rbl_reason?; $rbl_reason}",
      "reply template of the dnsbl module's rejections (expanded per reply)"),
    I("default_destination_concurrency_limit", "20", 0, 0, "parallel deliveries per destination"),
    I("default_destination_recipient_limit", "50", 0, 0, "recipients per delivery"),
    T("default_destination_rate_delay", "0s", 0, "pause between deliveries to one destination (then one at a time)"),
    I("smtp_destination_concurrency_limit", "$default_destination_concurrency_limit", 0, 0, "parallel smtp deliveries per destination"),
    I("relay_destination_concurrency_limit", "$default_destination_concurrency_limit", 0, 0, "parallel relay deliveries per destination"),
    I("lmtp_destination_concurrency_limit", "$default_destination_concurrency_limit", 0, 0, "parallel lmtp deliveries per destination"),
    I("virtual_destination_concurrency_limit", "$default_destination_concurrency_limit", 0, 0, "parallel virtual deliveries per destination"),
    I("local_destination_concurrency_limit", "2", 0, 0, "parallel local deliveries per recipient"),
    I("smtp_destination_recipient_limit", "$default_destination_recipient_limit", 0, 0, "recipients per smtp delivery"),
    I("lmtp_destination_recipient_limit", "$default_destination_recipient_limit", 0, 0, "recipients per lmtp delivery"),
    T("smtp_destination_rate_delay", "$default_destination_rate_delay", 0, "pause between smtp deliveries to one destination"),
    E("default_database_type", "hash", database_types,
      "table type petrelctl map build, alias build and newaliases use when none is given"),
    S("default_privs", "nobody", "rights for delivery to external files and commands"),
    S("default_filter_nexthop", "", "next hop of a content filter that names none (empty: the recipient domain)"),
    I("default_process_limit", "100", 1, 0, "maxproc of a master.cf service that says -"),
    S("default_transport", "smtp", "transport for domains that are not local or virtual"),
    L("defer_transports", "", "transports whose delivery is deferred"),
    T("delay_warning_time", "0h", 0, "when a delay notice is sent (0 = never)"),
    S("delay_notice_recipient", "postmaster", "who gets delay notices"),
    B("disable_vrfy_command", "no", "refuse the VRFY command"),
    B("disable_mime_input_processing", "no", "treat everything after the primary headers as body (no MIME parts)"),
    S("dns_resolver", "", "host:port of the DNS server every lookup uses (default: the system's)"),
    S("double_bounce_sender", "double-bounce", "sender of double bounces"),
    S("empty_address_recipient", "MAILER-DAEMON", "who gets mail to the null address"),
    S("error_notice_recipient", "postmaster", "who gets error notices"),
    I("header_size_limit", "102400", 1, 0, "largest message header"),
    M("header_checks", "", "tables of header_checks(5) rules for primary message headers (cleanup)"),
    I("hopcount_limit", "50", 1, 0, "most Received: headers a message may have"),
    S("home_mailbox", "", "mailbox path relative to the user's home"),
    S("html_directory", "no", "where HTML documentation is"),
    L("inet_interfaces", "all", "network addresses to listen on"),
    L("inet_protocols", "all", "IP versions to use"),
    I("line_length_limit", "2048", 1, 0, "longest SMTP line before it is split"),
    S("local_transport", "local:$myhostname", "transport for local domains"),
    M("local_recipient_maps", "proxy:unix:passwd.byname $alias_maps",
      "local users and aliases: unknown local recipients are rejected at RCPT"),
    S("luser_relay", "", "destination for unknown local users"),
    S("mail_name", "Petrel", "the name in the SMTP greeting"),
    S("mail_owner", "petrel", "unprivileged account the daemons run as"),
    S("mail_spool_directory", "/var/mail", "where local mailboxes are"),
    S("mail_version", PACKAGE_VERSION, "Petrel's version"),
    S("mailbox_command", "", "command that delivers to local mailboxes"),
    I("maps_rbl_reject_code", "554", 400, 599, "$rbl_code of default_rbl_reply (dnsbl module)"),
    Z("mailbox_size_limit", "51200000", 0, "largest mailbox file (0 = no limit)"),
    S("mailbox_transport", "", "transport for local mailbox delivery"),
    S("maillog_file", "", "file to log to instead of syslog or stderr"),
    S("mailq_path", PETREL_SBINDIR "/petrelctl", "the mailq command"),
    S("manpage_directory", "/usr/share/man", "where the manual pages are"),
    L("masquerade_domains", "", "domains whose subdomains are hidden"),
    L("masquerade_exceptions", "", "users not masqueraded"),
    M("milter_header_checks", "", "header_checks(5) rules for the headers milters add, insert or change (cleanup)"),
    M("mime_header_checks", "$header_checks", "header_checks(5) rules for MIME headers (cleanup)"),
    I("mime_boundary_length_limit", "2048", 1, 0, "longest MIME boundary kept for matching"),
    I("mime_nesting_limit", "100", 1, 0, "deepest MIME multipart nesting"),
    T("maximal_backoff_time", "4000s", 1, "longest retry interval of a deferred message"),
    T("maximal_queue_lifetime", "5d", 0, "how long a message may stay queued"),
    Z("message_size_limit", "10240000", 0, "largest message accepted"),
    S("meta_directory", "", "where installation metadata is"),
    S("metrics_listen", "", "host:port serving /metrics, /healthz and /status (empty: none)"),
    L("metrics_allow", "127.0.0.0/8 [::1]/128", "clients that may read the metrics endpoint (others get 403)"),
    E("milter_default_action", "tempfail", milter_actions, "what to do when a milter fails"),
    T("milter_command_timeout", "30s", 1, "milter reply timeout for commands"),
    T("milter_connect_timeout", "30s", 1, "milter connect timeout"),
    T("milter_content_timeout", "300s", 1, "milter reply timeout for content"),
    S("milter_connect_macros", "j {daemon_name} {daemon_addr} v _", "macros sent at connect"),
    S("milter_data_macros", "i", "macros sent at DATA"),
    S("milter_end_of_data_macros", "i", "macros sent at end of data"),
    S("milter_end_of_header_macros", "i", "macros sent at end of headers"),
    S("milter_helo_macros", "{tls_version} {cipher} {cipher_bits} {cert_subject} {cert_issuer}",
      "macros sent at HELO"),
    S("milter_macro_daemon_name", "$myhostname", "value of {daemon_name}"),
    L("smtpd_milter_maps", "", "tables giving a client IP address its own smtpd_milters, or DISABLE"),
    L("milter_macro_defaults", "", "name=value defaults for macros that have no value"),
    S("milter_macro_v", "$mail_name $mail_version", "value of the v macro"),
    S("milter_mail_macros", "i {auth_type} {auth_authen} {auth_author} {mail_addr} {mail_host} {mail_mailer}",
      "macros sent at MAIL FROM"),
    S("milter_protocol", "6", "milter protocol version (2, 3, 4 or 6, and optionally no_header_reply)"),
    S("milter_rcpt_macros", "i {rcpt_addr} {rcpt_host} {rcpt_mailer}", "macros sent at RCPT TO"),
    S("milter_unknown_command_macros", "", "macros sent with an unknown command"),
    S("module_directory", PETREL_MODULEDIR, "where NAME.so modules are found"),
    I("module_thread_limit", "8", 1, 256,
      "worker threads per process for modules' blocking work (petrel_run_blocking), apart from the queue's"),
    L("modules", "", "modules to load"),
    L("mydestination", "$myhostname, localhost.$mydomain, localhost", "domains delivered locally"),
    S("mydomain", "", "the internet domain of this host"),
    S("myhostname", "", "the fully qualified name of this host"),
    L("mynetworks", "", "trusted client networks"),
    M("nested_header_checks", "$header_checks", "header_checks(5) rules for headers of attached messages (cleanup)"),
    E("mynetworks_style", "host", mynetworks_styles, "how mynetworks is computed"),
    L("multi_instance_directories", "", "configuration directories of secondary instances"),
    S("multi_instance_name", "", "name of this instance (Postfix multi-instance)"),
    S("myorigin", "$myhostname", "domain of locally posted mail"),
    S("newaliases_path", PETREL_SBINDIR "/petrelctl", "the newaliases command"),
    L("non_smtpd_milters", "", "milters for mail not received by SMTP"),
    L("notify_classes", "resource, software", "problems reported to the postmaster"),
    L("petrel_accept_unimplemented", "",
      "parameters Petrel refuses because it does not implement them, accepted anyway by name (doc/parameters.md)"),
    S("process_name", "", "the command name of the current process (set per service)"),
    T("queue_run_delay", "300s", 1, "interval between deferred queue scans"),
    I("qmgr_message_active_limit", "20000", 1, 0, "most messages the queue manager holds in memory"),
    S("queue_directory", PETREL_QUEUEDIR, "the queue"),
    Z("queue_minfree", "0", 0, "free space the queue file system must keep"),
    S("readme_directory", "no", "where README files are"),
    M("recipient_bcc_maps", "", "per-recipient copies"),
    L("receive_override_options", "", "no_unknown_recipient_checks, no_address_mappings, no_header_body_checks, "
      "no_milters: what this receiving service leaves to a later pass (content filters)"),
    M("recipient_canonical_maps", "", "recipient address mapping"),
    S("recipient_delimiter", "", "separators of address extensions"),
    M("rbl_reply_maps", "", "per-list reply templates of the dnsbl module"),
    L("relay_domains", "", "domains this host relays to"),
    S("relay_transport", "relay", "transport for relay_domains"),
    M("relay_recipient_maps", "", "valid recipients in relay_domains (empty: all)"),
    S("relayhost", "", "next hop for non-local mail"),
    S("sample_directory", "/etc/petrel", "where sample files are"),
    M("sender_bcc_maps", "", "per-sender copies"),
    M("sender_canonical_maps", "", "sender address mapping"),
    M("sender_dependent_relayhost_maps", "", "relayhost per sender"),
    S("sendmail_path", PETREL_SBINDIR "/petrel-sendmail", "the sendmail command"),
    S("service_name", "", "the master.cf name of the current service (set per service)"),
    S("setgid_group", "postdrop", "group of petrel-postdrop and of the maildrop directory"),
    S("shlib_directory", "no", "where shared libraries are"),
    B("show_user_unknown_table_name", "yes", "name the table in \"User unknown\" replies"),
    T("minimal_backoff_time", "300s", 1, "shortest retry interval of a deferred message"),
    S("smtpd_banner", "$myhostname ESMTP $mail_name", "text of the 220 greeting"),
    I("smtpd_client_auth_rate_limit", "0", 0, 0, "AUTH commands per client per time unit"),
    I("smtpd_client_connection_count_limit", "50", 0, 0, "simultaneous connections per client"),
    I("smtpd_client_connection_rate_limit", "0", 0, 0, "connections per client per time unit"),
    L("smtpd_client_event_limit_exceptions", "${smtpd_client_connection_limit_exceptions:$mynetworks}",
      "clients exempt from the rate and count limits"),
    L("smtpd_client_connection_limit_exceptions", "", "Postfix 2.2's name of smtpd_client_event_limit_exceptions"),
    I("smtpd_client_message_rate_limit", "0", 0, 0, "messages per client per time unit"),
    I("smtpd_client_new_tls_session_rate_limit", "0", 0, 0, "new TLS sessions per client per time unit"),
    I("smtpd_client_recipient_rate_limit", "0", 0, 0, "recipients per client per time unit"),
    L("smtpd_client_restrictions", "", "restrictions at connect"),
    L("smtpd_data_restrictions", "", "restrictions at DATA"),
    B("smtpd_delay_reject", "yes", "wait until RCPT TO before rejecting"),
    L("smtpd_discard_ehlo_keywords", "", "EHLO keywords not announced"),
    S("smtpd_command_filter", "", "table that rewrites each command line from a client (its value replaces it)"),
    M("smtpd_discard_ehlo_keyword_address_maps", "", "EHLO keywords not announced, per client"),
    L("smtpd_end_of_data_restrictions", "", "restrictions at end of data"),
    T("smtpd_error_sleep_time", "1s", 0, "delay before an error reply"),
    L("smtpd_etrn_restrictions", "", "restrictions at ETRN"),
    E("smtpd_forbid_bare_newline", "normalize", bare_newline_modes,
      "how a bare LF in commands and DATA is handled"),
    L("smtpd_forbid_bare_newline_exclusions", "$mynetworks", "clients exempt from smtpd_forbid_bare_newline"),
    I("smtpd_forbid_bare_newline_reject_code", "550", 400, 599, "reply code for a bare LF"),
    B("smtpd_forbid_unauth_pipelining", "yes", "disconnect clients that pipeline without permission"),
    I("smtpd_hard_error_limit", "${stress?{1}:{20}}", 1, 0, "errors before the session is closed"),
    B("smtpd_helo_required", "no", "require HELO/EHLO before MAIL FROM"),
    L("smtpd_helo_restrictions", "", "restrictions at HELO/EHLO"),
    I("smtpd_junk_command_limit", "${stress?{1}:{100}}", 1, 0,
      "HELO/EHLO/NOOP/VRFY/ETRN/RSET commands before each counts as an error"),
    S("smtpd_proxy_ehlo", "$myhostname", "EHLO name smtpd sends to a before-queue content filter"),
    S("smtpd_proxy_filter", "", "before-queue content filter host:port (or unix:/path) smtpd relays each "
      "transaction to"),
    L("smtpd_proxy_options", "", "speed_adjust: receive the whole message before connecting to the filter"),
    T("smtpd_proxy_timeout", "100s", 1, "timeout of each exchange with the before-queue content filter"),
    L("smtpd_milters", "", "milters for mail received by SMTP"),
    I("smtpd_recipient_limit", "1000", 1, 0, "recipients per message"),
    L("smtpd_recipient_restrictions", "", "restrictions at RCPT TO"),
    B("smtpd_reject_unlisted_recipient", "yes", "reject unknown recipients in our domains at RCPT"),
    B("smtpd_reject_unlisted_sender", "no", "reject unknown senders in our domains at MAIL"),
    L("smtpd_relay_restrictions", "permit_mynetworks, permit_sasl_authenticated, defer_unauth_destination",
      "relay control at RCPT TO"),
    B("smtpd_sasl_auth_enable", "no", "offer SMTP AUTH"),
    B("smtpd_sasl_authenticated_header", "no", "name the SASL login in Received:"),
    S("smtpd_sasl_local_domain", "", "realm of SASL logins"),
    L("smtpd_sasl_mechanism_filter", "!external, static:rest", "which mechanisms the back-end offers are announced"),
    S("smtpd_sasl_path", "smtpd", "SASL configuration name or socket"),
    S("smtpd_sasl_service", "smtp", "the service name given to the SASL back-end"),
    I("smtpd_sasl_response_limit", "12288", 1, 0, "longest AUTH response line"),
    S("smtpd_sasl_security_options", "noanonymous", "allowed SASL mechanisms"),
    S("smtpd_sasl_tls_security_options", "$smtpd_sasl_security_options", "allowed SASL mechanisms under TLS"),
    I("smtpd_sasl_failure_limit", "10", 0, 0, "failed AUTH per client address or login within smtpd_sasl_failure_window before a lockout (0: none; Petrel)"),
    T("smtpd_sasl_failure_window", "10m", 1, "window of smtpd_sasl_failure_limit (Petrel)"),
    T("smtpd_sasl_lockout_time", "15m", 1, "how long a client address or login stays locked out (Petrel)"),
    T("smtpd_sasl_failure_delay", "1s", 0, "delay before a 535, doubling with each failure in the window, at most 60 s (Petrel)"),
    L("smtpd_sasl_exceptions_networks", "", "clients that are never offered AUTH"),
    L("smtpd_authorized_xforward_hosts", "", "clients (networks) that may send XFORWARD: content filters handing mail back"),
    S("smtpd_sasl_type", "cyrus", "SASL back-end: the name a loaded module provides (cyrus, dovecot, table, ...)"),
    M("smtpd_sender_login_maps", "", "which login owns which sender address"),
    L("smtpd_sender_restrictions", "", "restrictions at MAIL FROM"),
    I("smtpd_soft_error_limit", "10", 1, 0, "errors before replies are delayed"),
    T("smtpd_timeout", "${stress?{10}:{300}}s", 1, "command and data read timeout"),
    T("smtpd_starttls_timeout", "${stress?{10}:{300}}s", 1, "time limit of the TLS handshake"),
    B("smtpd_per_record_deadline", "${stress?{yes}:{no}}", "smtpd_timeout bounds each command and DATA line, not each read"),
    I("smtpd_workers", "0", 0, 0, "smtpd worker processes (0 = one per CPU)"),
    B("strict_7bit_headers", "no", "reject 8-bit data in message headers"),
    B("strict_8bitmime", "no", "strict_7bit_headers and strict_8bitmime_body together"),
    B("strict_8bitmime_body", "no", "reject 8-bit data in body parts declared or defaulting to 7 bits"),
    B("strict_mime_encoding_domain", "no", "reject message/* and multipart/* parts with base64 or quoted-printable"),
    B("smtputf8_enable", "yes", "support SMTPUTF8"),
    B("soft_bounce", "no", "turn bounces into deferrals"),
    S("stress", "", "\"yes\" while the service is under stress (set by petreld, as Postfix's master does)"),
    S("syslog_facility", "mail", "syslog facility"),
    S("syslog_name", "petrel", "name prefix of log lines"),
    M("transport_maps", "", "transport per destination"),
    L("canonical_classes", "envelope_sender, envelope_recipient, header_sender, header_recipient", "what canonical_maps rewrites"),
    L("masquerade_classes", "envelope_sender, header_sender, header_recipient", "what masquerade_domains rewrites"),
    I("unknown_local_recipient_reject_code", "550", 400, 599, "reply for unknown local users"),
    I("unknown_relay_recipient_reject_code", "550", 400, 599, "reply for unknown relay_recipient_maps users"),
    I("unknown_virtual_alias_reject_code", "550", 400, 599, "reply for unknown virtual alias domain users"),
    I("unknown_virtual_mailbox_reject_code", "550", 400, 599, "reply for unknown virtual mailbox users"),
    L("virtual_alias_domains", "$virtual_alias_maps", "alias-only virtual domains"),
    M("virtual_alias_maps", "$virtual_maps", "virtual address aliases"),
    M("virtual_gid_maps", "", "group id per virtual mailbox"),
    S("virtual_mailbox_base", "", "prefix of virtual mailbox paths"),
    L("virtual_mailbox_domains", "$virtual_mailbox_maps", "domains with virtual mailboxes"),
    Z("virtual_mailbox_limit", "51200000", 0, "largest virtual mailbox file"),
    M("virtual_mailbox_maps", "", "virtual mailbox paths"),
    M("virtual_maps", "", "legacy name of virtual_alias_maps"),
    I("virtual_minimum_uid", "100", 1, 0, "smallest uid from virtual_uid_maps"),
    S("virtual_transport", "virtual", "transport for virtual mailbox domains"),
    M("virtual_uid_maps", "", "user id per virtual mailbox"),
};

const struct cfg_param *cfg_core_params(size_t *n)
{
    *n = sizeof(core_params) / sizeof(core_params[0]);
    return core_params;
}

/* ---- schema ---- */

struct schema_entry {
    const struct cfg_param *param;
    const char *owner;
    int per_service;    /* cfg_schema_set_per_service */
};

struct cfg_schema {
    struct schema_entry *entries;   /* sorted by name */
    size_t n, cap;
};

static int entry_cmp(const void *a, const void *b)
{
    return strcmp(((const struct schema_entry *)a)->param->name,
                  ((const struct schema_entry *)b)->param->name);
}

static const struct schema_entry *schema_lookup(const struct cfg_schema *s, const char *name)
{
    size_t lo = 0, hi = s->n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = strcmp(name, s->entries[mid].param->name);
        if (c == 0)
            return &s->entries[mid];
        if (c < 0)
            hi = mid;
        else
            lo = mid + 1;
    }
    return NULL;
}

struct cfg_schema *cfg_schema_new(void)
{
    struct cfg_schema *s = xcalloc(1, sizeof(*s));
    size_t n;
    const struct cfg_param *core = cfg_core_params(&n);
    if (cfg_schema_add(s, core, n, "core") < 0)
        msg_panic("duplicate name in the core parameter table");
    core = cfg_postscreen_params(&n);
    if (cfg_schema_add(s, core, n, "core") < 0)
        msg_panic("duplicate name in the postscreen parameter table");
    core = cfg_smtp_params(&n);
    if (cfg_schema_add(s, core, n, "core") < 0)
        msg_panic("duplicate name in the SMTP client and TLS parameter table");
    return s;
}

int cfg_schema_add(struct cfg_schema *s, const struct cfg_param *params, size_t n, const char *owner)
{
    /* Check everything first so a failed add leaves the schema unchanged. */
    for (size_t i = 0; i < n; i++) {
        if (schema_lookup(s, params[i].name)) {
            msg_error("parameter %s of %s is already declared by %s", params[i].name, owner,
                      schema_lookup(s, params[i].name)->owner);
            return -1;
        }
        for (size_t j = 0; j < i; j++)
            if (strcmp(params[i].name, params[j].name) == 0) {
                msg_error("parameter %s is declared twice by %s", params[i].name, owner);
                return -1;
            }
    }
    if (s->n + n > s->cap) {
        s->cap = (s->n + n) * 2;
        s->entries = xrealloc(s->entries, s->cap * sizeof(*s->entries));
    }
    for (size_t i = 0; i < n; i++) {
        s->entries[s->n].param = &params[i];
        s->entries[s->n].owner = owner;
        s->entries[s->n].per_service = 0;
        s->n++;
    }
    qsort(s->entries, s->n, sizeof(*s->entries), entry_cmp);
    return 0;
}

const struct cfg_param *cfg_schema_find(const struct cfg_schema *s, const char *name)
{
    const struct schema_entry *e = schema_lookup(s, name);
    return e ? e->param : NULL;
}

const char *cfg_schema_owner(const struct cfg_schema *s, const char *name)
{
    const struct schema_entry *e = schema_lookup(s, name);
    return e ? e->owner : NULL;
}

int cfg_schema_set_per_service(struct cfg_schema *s, const char *name)
{
    struct schema_entry *e = (struct schema_entry *)schema_lookup(s, name);
    if (e == NULL)
        return -1;
    e->per_service = 1;
    return 0;
}

int cfg_schema_per_service(const struct cfg_schema *s, const char *name)
{
    const struct schema_entry *e = schema_lookup(s, name);
    return e ? e->per_service : 0;
}

size_t cfg_schema_count(const struct cfg_schema *s)
{
    return s->n;
}

const struct cfg_param *cfg_schema_param(const struct cfg_schema *s, size_t i)
{
    return i < s->n ? s->entries[i].param : NULL;
}

void cfg_schema_free(struct cfg_schema *s)
{
    if (!s)
        return;
    free(s->entries);
    free(s);
}

/* Postfix's raw parameters: their value is kept as written, because it
 * holds $names that are expanded later with other values (per reply). */
int cfg_param_is_raw(const char *name)
{
    return strcmp(name, "default_rbl_reply") == 0;
}
