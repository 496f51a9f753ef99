/*
 * The SMTP and LMTP clients' parameters (Postfix's smtp_params.c and
 * lmtp_params.c): one list of {smtp name, lmtp name, kind, field} makes two
 * binding tables, so an LMTP delivery reads lmtp_lhlo_name where SMTP reads
 * smtp_helo_name, and neither can forget a parameter the other has.
 * smtp_client_settings_bind applies one of them and works out what the
 * values imply (the legacy TLS switches, the DNS support level and host
 * lookup methods), refusing what Petrel cannot honour. The client's SMTP
 * AUTH settings are bound the same way (smtp_sasl_* / lmtp_sasl_*); the
 * password maps are opened by the queue manager per transport.
 */
#include "config.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "config/bind.h"
#include "config/cfg.h"
#include "deliver/smtp_client.h"
#include "mail/sasl_options.h"

#define BOTH(X)                                                                                        \
    X("smtp_helo_name", "lmtp_lhlo_name", STR, helo_name)                                               \
    X("myhostname", "myhostname", STR, myhostname)                                                      \
    X("smtp_bind_address", "lmtp_bind_address", STR, bind_address)                                      \
    X("smtp_bind_address6", "lmtp_bind_address6", STR, bind_address6)                                   \
    X("smtp_bind_address_enforce", "lmtp_bind_address_enforce", BOOL, bind_enforce)                     \
    X("smtp_connect_timeout", "lmtp_connect_timeout", UINT, connect_timeout)                            \
    X("smtp_helo_timeout", "lmtp_lhlo_timeout", UINT, helo_timeout)                                     \
    X("smtp_starttls_timeout", "lmtp_starttls_timeout", UINT, starttls_timeout)                         \
    X("smtp_mail_timeout", "lmtp_mail_timeout", UINT, mail_timeout)                                     \
    X("smtp_rcpt_timeout", "lmtp_rcpt_timeout", UINT, rcpt_timeout)                                     \
    X("smtp_data_init_timeout", "lmtp_data_init_timeout", UINT, data_timeout)                           \
    X("smtp_data_xfer_timeout", "lmtp_data_xfer_timeout", UINT, data_xfer_timeout)                      \
    X("smtp_data_done_timeout", "lmtp_data_done_timeout", UINT, data_done_timeout)                      \
    X("smtp_rset_timeout", "lmtp_rset_timeout", UINT, rset_timeout)                                     \
    X("smtp_quit_timeout", "lmtp_quit_timeout", UINT, quit_timeout)                                     \
    X("smtp_connection_cache_time_limit", "lmtp_connection_cache_time_limit", UINT, connection_cache_time) \
    X("smtp_connection_reuse_time_limit", "lmtp_connection_reuse_time_limit", UINT, connection_reuse_time) \
    X("smtp_skip_5xx_greeting", "lmtp_skip_5xx_greeting", BOOL, skip_5xx_greeting)                      \
    X("smtp_line_length_limit", "lmtp_line_length_limit", UINT, line_length_limit)                      \
    X("smtp_mx_address_limit", "lmtp_mx_address_limit", UINT, mx_address_limit)                        \
    X("smtp_mx_session_limit", "lmtp_mx_session_limit", UINT, mx_session_limit)                        \
    X("smtp_host_lookup", "lmtp_host_lookup", LIST, host_lookup)                                        \
    X("disable_dns_lookups", "disable_dns_lookups", BOOL, disable_dns)                                  \
    X("soft_bounce", "soft_bounce", BOOL, soft_bounce)                                                  \
    X("smtp_send_xforward_command", "lmtp_send_xforward_command", BOOL, send_xforward)                  \
    X("smtp_xforward_timeout", "lmtp_xforward_timeout", UINT, xforward_timeout)                         \
    X("smtp_use_tls", "lmtp_use_tls", BOOL, use_tls)                                                    \
    X("smtp_enforce_tls", "lmtp_enforce_tls", BOOL, enforce_tls)                                        \
    X("smtp_tls_CAfile", "lmtp_tls_CAfile", STR, tls_cafile)                                            \
    X("smtp_tls_CApath", "lmtp_tls_CApath", STR, tls_capath)                                            \
    X("smtp_tls_protocols", "lmtp_tls_protocols", STR, tls_protocols)                                   \
    X("smtp_tls_mandatory_protocols", "lmtp_tls_mandatory_protocols", STR, tls_mandatory_protocols)     \
    X("smtp_tls_ciphers", "lmtp_tls_ciphers", STR, tls_ciphers)                                         \
    X("smtp_tls_mandatory_ciphers", "lmtp_tls_mandatory_ciphers", STR, tls_mandatory_ciphers)           \
    X("smtp_tls_exclude_ciphers", "lmtp_tls_exclude_ciphers", LIST, tls_exclude_ciphers)                \
    X("smtp_tls_mandatory_exclude_ciphers", "lmtp_tls_mandatory_exclude_ciphers", LIST,                \
      tls_mandatory_exclude_ciphers)                                                                    \
    X("tls_high_cipherlist", "tls_high_cipherlist", STR, tls_high_cipherlist)                           \
    X("tls_medium_cipherlist", "tls_medium_cipherlist", STR, tls_medium_cipherlist)                     \
    X("tls_null_cipherlist", "tls_null_cipherlist", STR, tls_null_cipherlist)                           \
    X("tls_eecdh_auto_curves", "tls_eecdh_auto_curves", STR, tls_eecdh_auto_curves)                     \
    X("tls_ffdhe_auto_groups", "tls_ffdhe_auto_groups", STR, tls_ffdhe_auto_groups)                     \
    X("smtp_tls_cert_file", "lmtp_tls_cert_file", STR, tls_cert_file)                                   \
    X("smtp_tls_key_file", "lmtp_tls_key_file", STR, tls_key_file)                                      \
    X("smtp_tls_chain_files", "lmtp_tls_chain_files", LIST, tls_chain_files)                            \
    X("smtp_tls_fingerprint_cert_match", "lmtp_tls_fingerprint_cert_match", LIST,                      \
      tls_fingerprint_cert_match)                                                                       \
    X("smtp_tls_fingerprint_digest", "lmtp_tls_fingerprint_digest", STR, tls_fingerprint_digest)        \
    X("smtp_tls_verify_cert_match", "lmtp_tls_verify_cert_match", LIST, tls_verify_cert_match)          \
    X("smtp_tls_secure_cert_match", "lmtp_tls_secure_cert_match", LIST, tls_secure_cert_match)          \
    X("smtp_tls_loglevel", "lmtp_tls_loglevel", INT, tls_loglevel)                                      \
    X("smtp_tls_note_starttls_offer", "lmtp_tls_note_starttls_offer", BOOL, tls_note_starttls_offer)    \
    X("smtp_tls_session_cache_database", "lmtp_tls_session_cache_database", STR, tls_session_cache)     \
    X("smtp_tls_session_cache_timeout", "lmtp_tls_session_cache_timeout", UINT, tls_session_cache_timeout) \
    X("smtp_sasl_auth_enable", "lmtp_sasl_auth_enable", BOOL, sasl_enable)                              \
    X("smtp_sasl_mechanism_filter", "lmtp_sasl_mechanism_filter", LIST, sasl_mech_filter)               \
    X("smtp_sender_dependent_authentication", "lmtp_sender_dependent_authentication", BOOL,            \
      sender_dependent_authentication)

static const struct cfg_choice tls_levels[] = {
    { "", SMTP_TLS_NONE }, { "none", SMTP_TLS_NONE }, { "may", SMTP_TLS_MAY }, { "encrypt", SMTP_TLS_ENCRYPT },
    { "dane", SMTP_TLS_DANE }, { "dane-only", SMTP_TLS_DANE_ONLY }, { "fingerprint", SMTP_TLS_FINGERPRINT },
    { "verify", SMTP_TLS_VERIFY }, { "secure", SMTP_TLS_SECURE }, { NULL, 0 },
};
static const struct cfg_choice dns_levels[] = {
    { "", SMTP_DNS_DEFAULT }, { "disabled", SMTP_DNS_DISABLED }, { "enabled", SMTP_DNS_ENABLED },
    { "dnssec", SMTP_DNS_DNSSEC }, { NULL, 0 },
};
_Static_assert(sizeof(enum smtp_tls_level) == sizeof(int), "CHOICE bindings fill an int");
_Static_assert(sizeof(enum smtp_dns_support) == sizeof(int), "CHOICE bindings fill an int");

#define SMTP_ENTRY(sn, ln, kind, field) CFG_BIND(sn, kind, struct smtp_client_settings, field),
#define LMTP_ENTRY(sn, ln, kind, field) CFG_BIND(ln, kind, struct smtp_client_settings, field),
static const struct cfg_bind smtp_binds[] = {
    BOTH(SMTP_ENTRY)
    CFG_BIND_CHOICE("smtp_tls_security_level", struct smtp_client_settings, tls_level, tls_levels),
    CFG_BIND_CHOICE("smtp_dns_support_level", struct smtp_client_settings, dns_support, dns_levels),
    CFG_BIND("smtp_always_send_ehlo", BOOL, struct smtp_client_settings, always_send_ehlo),
    CFG_BIND("smtp_never_send_ehlo", BOOL, struct smtp_client_settings, never_send_ehlo),
    CFG_BIND_READ("smtp_sasl_security_options"),        /* parsed by smtp_client_settings_bind */
    CFG_BIND_READ("smtp_sasl_tls_security_options"),
    CFG_BIND_READ("smtp_sasl_password_maps"),           /* opened per transport (qmgr/transports.c) */
};
static const struct cfg_bind lmtp_binds[] = {
    BOTH(LMTP_ENTRY)
    CFG_BIND_CHOICE("lmtp_tls_security_level", struct smtp_client_settings, tls_level, tls_levels),
    CFG_BIND_CHOICE("lmtp_dns_support_level", struct smtp_client_settings, dns_support, dns_levels),
    CFG_BIND_READ("lmtp_sasl_security_options"),
    CFG_BIND_READ("lmtp_sasl_tls_security_options"),
    CFG_BIND_READ("lmtp_sasl_password_maps"),
};
const struct cfg_bind_table smtp_client_bind_table = CFG_BIND_TABLE("SMTP client", smtp_binds);
const struct cfg_bind_table lmtp_client_bind_table = CFG_BIND_TABLE("LMTP client", lmtp_binds);

__attribute__((format(printf, 2, 3)))
static int fail(char **error, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    if (vasprintf(error, fmt, ap) < 0)
        *error = NULL;
    va_end(ap);
    return -1;
}

int smtp_client_settings_bind(const struct cfg *cfg, int lmtp, struct smtp_client_settings *out, char **error)
{
    const char *p = lmtp ? "lmtp" : "smtp";
    memset(out, 0, sizeof(*out));
    cfg_bind_apply(cfg, lmtp ? &lmtp_client_bind_table : &smtp_client_bind_table, out);
    out->lmtp = lmtp;
    out->default_port = lmtp ? 24 : 25;
    if (lmtp) {
        /* LMTP greets with LHLO whatever the greeting says */
        out->always_send_ehlo = 1;
        out->never_send_ehlo = 0;
    }
    /* The legacy switches count only when the level is empty (Postfix). */
    if (cfg_get(cfg, lmtp ? "lmtp_tls_security_level" : "smtp_tls_security_level")[0] == '\0')
        out->tls_level = out->enforce_tls ? SMTP_TLS_ENCRYPT : out->use_tls ? SMTP_TLS_MAY : SMTP_TLS_NONE;
    if (out->tls_level == SMTP_TLS_DANE || out->tls_level == SMTP_TLS_DANE_ONLY)
        return fail(error, "%s_tls_security_level: \"%s\" is not supported: Petrel has no DNSSEC-validated TLSA "
                    "lookups, so DANE cannot be applied (use verify or secure with %s_tls_CAfile, or fingerprint)",
                    p, smtp_tls_level_name(out->tls_level), p);
    /* Empty: disable_dns_lookups decides, as in Postfix. */
    if (out->dns_support == SMTP_DNS_DEFAULT)
        out->dns_support = out->disable_dns ? SMTP_DNS_DISABLED : SMTP_DNS_ENABLED;
    out->host_lookup_mask = 0;
    for (const char *const *w = out->host_lookup; w && *w; w++) {
        if (strcasecmp(*w, "dns") == 0)
            out->host_lookup_mask |= SMTP_HOST_DNS;
        else if (strcasecmp(*w, "native") == 0)
            out->host_lookup_mask |= SMTP_HOST_NATIVE;
        else
            return fail(error, "%s_host_lookup: unknown method \"%s\" (expected dns, native)", p, *w);
    }
    if (out->host_lookup_mask == 0)
        return fail(error, "%s_host_lookup: no lookup method (expected dns, native)", p);
    if (out->dns_support == SMTP_DNS_DISABLED)
        out->host_lookup_mask = SMTP_HOST_NATIVE;
    /* SMTP AUTH: an unknown security option is an error (Postfix's
     * NAME_MASK_FATAL), whether or not AUTH is enabled */
    static const char *const sasl_opts[2][2] = {
        { "smtp_sasl_security_options", "smtp_sasl_tls_security_options" },
        { "lmtp_sasl_security_options", "lmtp_sasl_tls_security_options" },
    };
    unsigned *opts[2] = { &out->sasl_options, &out->sasl_tls_options };
    for (int k = 0; k < 2; k++) {
        petrel_pool *pool = petrel_pool_create(256);
        const char *bad = NULL;
        int rc = sasl_options_parse(cfg_get(cfg, sasl_opts[lmtp][k]), opts[k], &bad, pool);
        if (rc != 0)
            rc = fail(error, "%s: unknown option \"%s\"", sasl_opts[lmtp][k], bad ? bad : "");
        petrel_pool_destroy(pool);
        if (rc != 0)
            return -1;
    }
    return 0;
}

int smtp_tls_level_parse(const char *text, enum smtp_tls_level *out)
{
    for (size_t i = 0; tls_levels[i].word; i++)
        if (strcasecmp(text ? text : "", tls_levels[i].word) == 0) {
            *out = (enum smtp_tls_level)tls_levels[i].value;
            return 0;
        }
    return -1;
}

const char *smtp_tls_level_name(enum smtp_tls_level level)
{
    for (size_t i = 1; tls_levels[i].word; i++)
        if (tls_levels[i].value == (int)level)
            return tls_levels[i].word;
    return "none";
}
