/*
 * The parameters of the SMTP and LMTP clients and of TLS on both sides
 * (Postfix's smtp_params.c, lmtp_params.c and the TLS part of
 * mail_params.h), kept apart from params.c because they come in pairs: an
 * LMTP delivery reads lmtp_* where SMTP reads smtp_* (lmtp_lhlo_name for
 * smtp_helo_name, lmtp_lhlo_timeout for smtp_helo_timeout), with Postfix's
 * defaults for each (lmtp_connect_timeout is 0s: the kernel's own).
 *
 * Where Petrel's default differs from Postfix 3.6 it says so: the server
 * takes TLS 1.2 as its floor (smtpd_tls_protocols, _mandatory_protocols).
 */
#include "config.h"

#include "config/config_impl.h"

#define MAXT 0  /* no upper bound */
#define S(n, d, h) { n, CFG_STR, d, h, 0, 0, NULL }
#define E(n, d, c, h) { n, CFG_STR, d, h, 0, 0, c }
#define I(n, d, lo, hi, h) { n, CFG_INT, d, h, lo, hi, NULL }
#define B(n, d, h) { n, CFG_BOOL, d, h, 0, 0, NULL }
#define T(n, d, lo, h) { n, CFG_TIME, d, h, lo, MAXT, NULL }
#define L(n, d, h) { n, CFG_LIST, d, h, 0, 0, NULL }
#define M(n, d, h) { n, CFG_TABLE, d, h, 0, 0, NULL }

static const char *const tls_levels_in[] = { "", "none", "may", "encrypt", NULL };
static const char *const tls_levels_out[] = { "", "none", "may", "encrypt", "dane", "dane-only",
                                              "fingerprint", "verify", "secure", NULL };
static const char *const cipher_grades[] = { "export", "low", "medium", "high", "null", NULL };
static const char *const dns_support_levels[] = { "", "disabled", "enabled", "dnssec", NULL };
static const char *const eecdh_grades[] = { "auto", "strong", "ultra", "none", NULL };

/* One SMTP client parameter and its LMTP twin, with Postfix's defaults. */
#define TWIN_T(sn, ln, sd, ld, lo, h) T(sn, sd, lo, h), T(ln, ld, lo, h)
#define TWIN_S(sn, ln, d, h) S(sn, d, h), S(ln, d, h)
#define TWIN_B(sn, ln, sd, ld, h) B(sn, sd, h), B(ln, ld, h)
#define TWIN_I(sn, ln, d, lo, hi, h) I(sn, d, lo, hi, h), I(ln, d, lo, hi, h)
#define TWIN_L(sn, ln, d, h) L(sn, d, h), L(ln, d, h)
#define TWIN_E(sn, ln, d, c, h) E(sn, d, c, h), E(ln, d, c, h)
#define TWIN_M(sn, ln, h) M(sn, "", h), M(ln, "", h)

static const struct cfg_param smtp_params[] = {
    /* content inspection (core/mail/hbc.c) */
    TWIN_M("smtp_header_checks", "lmtp_header_checks", "header_checks(5) rules the client applies to primary headers"),
    TWIN_M("smtp_mime_header_checks", "lmtp_mime_header_checks",
           "header_checks(5) rules the client applies to MIME headers"),
    TWIN_M("smtp_nested_header_checks", "lmtp_nested_header_checks",
           "header_checks(5) rules the client applies to attached messages' headers"),
    TWIN_M("smtp_body_checks", "lmtp_body_checks", "body_checks(5) rules the client applies to body lines"),
    /* the dialogue */
    S("smtp_helo_name", "$myhostname", "hostname sent in EHLO/HELO"),
    S("lmtp_lhlo_name", "$myhostname", "hostname sent in LHLO"),
    TWIN_S("smtp_bind_address", "lmtp_bind_address", "", "local IPv4 address of outgoing connections"),
    TWIN_S("smtp_bind_address6", "lmtp_bind_address6", "", "local IPv6 address of outgoing connections"),
    TWIN_B("smtp_bind_address_enforce", "lmtp_bind_address_enforce", "no", "no",
           "defer delivery when the bind address cannot be used"),
    TWIN_T("smtp_connect_timeout", "lmtp_connect_timeout", "30s", "0s", 0,
           "time to complete a TCP connection (0: the kernel's limit)"),
    T("smtp_helo_timeout", "300s", 1, "greeting and EHLO/HELO reply timeout"),
    T("lmtp_lhlo_timeout", "300s", 1, "greeting and LHLO reply timeout"),
    TWIN_T("smtp_xforward_timeout", "lmtp_xforward_timeout", "300s", "300s", 1,
           "XFORWARD reply timeout"),
    TWIN_B("smtp_send_xforward_command", "lmtp_send_xforward_command", "no", "no",
           "send XFORWARD (the message's original client) to a server that announces it: a content filter"),
    TWIN_T("smtp_starttls_timeout", "lmtp_starttls_timeout", "300s", "300s", 1,
           "STARTTLS reply and TLS handshake timeout"),
    TWIN_T("smtp_mail_timeout", "lmtp_mail_timeout", "300s", "300s", 1, "MAIL FROM reply timeout"),
    TWIN_T("smtp_rcpt_timeout", "lmtp_rcpt_timeout", "300s", "300s", 1, "RCPT TO reply timeout"),
    TWIN_T("smtp_data_init_timeout", "lmtp_data_init_timeout", "120s", "120s", 1, "DATA reply timeout"),
    TWIN_T("smtp_data_xfer_timeout", "lmtp_data_xfer_timeout", "180s", "180s", 1,
           "time to send each piece of the content"),
    TWIN_T("smtp_data_done_timeout", "lmtp_data_done_timeout", "600s", "600s", 1, "end-of-data reply timeout"),
    TWIN_T("smtp_rset_timeout", "lmtp_rset_timeout", "20s", "20s", 1, "RSET reply timeout"),
    TWIN_T("smtp_quit_timeout", "lmtp_quit_timeout", "300s", "300s", 1, "QUIT reply timeout"),
    TWIN_T("smtp_connection_cache_time_limit", "lmtp_connection_cache_time_limit", "2s", "2s", 1,
           "how long an idle connection waits for the next delivery to its next hop"),
    TWIN_T("smtp_connection_reuse_time_limit", "lmtp_connection_reuse_time_limit", "300s", "300s", 1,
           "how long after it was opened a connection may be used again"),
    TWIN_B("smtp_skip_5xx_greeting", "lmtp_skip_5xx_greeting", "yes", "yes",
           "a 5xx greeting skips the server instead of bouncing"),
    B("smtp_always_send_ehlo", "yes", "EHLO even when the greeting does not say ESMTP"),
    B("smtp_never_send_ehlo", "no", "HELO, never EHLO"),
    TWIN_I("smtp_line_length_limit", "lmtp_line_length_limit", "998", 0, 0,
           "longest content line sent; longer ones are broken with CRLF SPACE (0: no limit)"),
    TWIN_I("smtp_mx_address_limit", "lmtp_mx_address_limit", "5", 0, 0,
           "most server addresses tried per delivery (0: no limit)"),
    TWIN_I("smtp_mx_session_limit", "lmtp_mx_session_limit", "2", 0, 0,
           "most sessions that reach the transaction per delivery (0: no limit)"),
    TWIN_E("smtp_dns_support_level", "lmtp_dns_support_level", "", dns_support_levels,
           "DNS use of the client (empty: by disable_dns_lookups)"),
    TWIN_L("smtp_host_lookup", "lmtp_host_lookup", "dns", "how server addresses are found: dns, native"),
    B("disable_dns_lookups", "no", "legacy: no DNS in the SMTP client (smtp_dns_support_level = disabled)"),

    /* TLS of the client */
    TWIN_E("smtp_tls_security_level", "lmtp_tls_security_level", "", tls_levels_out, "TLS policy of the client"),
    TWIN_B("smtp_use_tls", "lmtp_use_tls", "no", "no", "legacy: opportunistic TLS in the client"),
    TWIN_B("smtp_enforce_tls", "lmtp_enforce_tls", "no", "no", "legacy: mandatory TLS in the client"),
    TWIN_S("smtp_tls_CAfile", "lmtp_tls_CAfile", "", "CA certificates for server verification"),
    TWIN_S("smtp_tls_CApath", "lmtp_tls_CApath", "", "directory of CA certificates (c_rehash form)"),
    TWIN_I("smtp_tls_loglevel", "lmtp_tls_loglevel", "0", 0, 4, "TLS logging of the client"),
    TWIN_S("smtp_tls_session_cache_database", "lmtp_tls_session_cache_database", "",
           "where TLS sessions with servers are kept for resumption (empty: none)"),
    TWIN_T("smtp_tls_session_cache_timeout", "lmtp_tls_session_cache_timeout", "3600s", "3600s", 0,
           "lifetime of a cached client TLS session"),
    TWIN_S("smtp_tls_protocols", "lmtp_tls_protocols", ">=TLSv1", "TLS protocols at level may"),
    TWIN_S("smtp_tls_mandatory_protocols", "lmtp_tls_mandatory_protocols", ">=TLSv1",
           "TLS protocols at mandatory levels"),
    TWIN_E("smtp_tls_ciphers", "lmtp_tls_ciphers", "medium", cipher_grades, "cipher grade at level may"),
    TWIN_E("smtp_tls_mandatory_ciphers", "lmtp_tls_mandatory_ciphers", "medium", cipher_grades,
           "cipher grade at mandatory levels"),
    TWIN_L("smtp_tls_exclude_ciphers", "lmtp_tls_exclude_ciphers", "", "ciphers excluded at every level"),
    TWIN_L("smtp_tls_mandatory_exclude_ciphers", "lmtp_tls_mandatory_exclude_ciphers", "",
           "ciphers also excluded at mandatory levels"),
    TWIN_S("smtp_tls_cert_file", "lmtp_tls_cert_file", "", "client certificate (PEM)"),
    S("smtp_tls_key_file", "$smtp_tls_cert_file", "client private key (PEM)"),
    S("lmtp_tls_key_file", "$lmtp_tls_cert_file", "client private key (PEM)"),
    TWIN_L("smtp_tls_chain_files", "lmtp_tls_chain_files", "", "client keys with their certificate chains (PEM)"),
    TWIN_B("smtp_tls_note_starttls_offer", "lmtp_tls_note_starttls_offer", "no", "no",
           "log servers that offer STARTTLS when TLS is not used"),
    TWIN_L("smtp_tls_fingerprint_cert_match", "lmtp_tls_fingerprint_cert_match", "",
           "certificate or public key fingerprints accepted at level fingerprint"),
    L("smtp_tls_verify_cert_match", "hostname", "names the server certificate must match at level verify"),
    L("lmtp_tls_verify_cert_match", "hostname", "names the server certificate must match at level verify"),
    L("smtp_tls_secure_cert_match", "nexthop, dot-nexthop", "names the server certificate must match at level secure"),
    L("lmtp_tls_secure_cert_match", "nexthop", "names the server certificate must match at level secure"),
    TWIN_S("smtp_tls_fingerprint_digest", "lmtp_tls_fingerprint_digest", "sha256",
           "digest of fingerprints (sha256, sha1, md5, ...)"),
    M("smtp_tls_policy_maps", "", "TLS security level per next hop"),
    M("lmtp_tls_policy_maps", "", "TLS security level per next hop"),

    /* SMTP AUTH of the client (deliver/smtp_sasl.c) */
    TWIN_B("smtp_sasl_auth_enable", "lmtp_sasl_auth_enable", "no", "no", "SMTP AUTH in the client"),
    TWIN_L("smtp_sasl_mechanism_filter", "lmtp_sasl_mechanism_filter", "",
           "SASL mechanisms the client may use (empty: all)"),
    TWIN_M("smtp_sasl_password_maps", "lmtp_sasl_password_maps", "client credentials per destination"),
    TWIN_S("smtp_sasl_security_options", "lmtp_sasl_security_options", "noplaintext, noanonymous",
           "allowed client SASL mechanisms without TLS"),
    /* Postfix's defaults: under TLS the same as without, so PLAIN and LOGIN
     * need an explicit smtp_sasl_tls_security_options = noanonymous. */
    S("smtp_sasl_tls_security_options", "$smtp_sasl_security_options", "allowed client SASL mechanisms under TLS"),
    S("lmtp_sasl_tls_security_options", "$lmtp_sasl_security_options", "allowed client SASL mechanisms under TLS"),
    TWIN_B("smtp_sender_dependent_authentication", "lmtp_sender_dependent_authentication", "no", "no",
           "look the sender up in smtp_sasl_password_maps first"),

    /* TLS of the server */
    S("smtpd_tls_CAfile", "", "CA certificates for client certificates"),
    S("smtpd_tls_CApath", "", "directory of CA certificates (c_rehash form)"),
    B("smtpd_tls_auth_only", "no", "offer AUTH only under TLS"),
    S("smtpd_tls_cert_file", "", "server certificate (PEM)"),
    S("smtpd_tls_key_file", "$smtpd_tls_cert_file", "server private key (PEM)"),
    L("smtpd_tls_chain_files", "", "server keys with their certificate chains (PEM); wins over cert_file"),
    E("smtpd_tls_ciphers", "medium", cipher_grades, "cipher grade at level may"),
    E("smtpd_tls_mandatory_ciphers", "medium", cipher_grades, "cipher grade at level encrypt"),
    L("smtpd_tls_exclude_ciphers", "", "ciphers excluded at every level"),
    L("smtpd_tls_mandatory_exclude_ciphers", "", "ciphers also excluded at level encrypt"),
    /* Petrel: TLS 1.2 at least (Postfix says >=TLSv1) */
    S("smtpd_tls_mandatory_protocols", ">=TLSv1.2", "TLS protocols at level encrypt"),
    S("smtpd_tls_protocols", ">=TLSv1.2", "TLS protocols at level may"),
    I("smtpd_tls_loglevel", "0", 0, 4, "TLS logging of the server"),
    B("smtpd_tls_received_header", "no", "TLS details in Received:"),
    E("smtpd_tls_security_level", "", tls_levels_in, "TLS policy of the server"),
    S("smtpd_tls_session_cache_database", "", "where TLS sessions are kept for clients without tickets (empty: none)"),
    T("smtpd_tls_session_cache_timeout", "3600s", 0, "TLS session lifetime"),
    B("smtpd_tls_wrappermode", "no", "TLS from the first byte (port 465)"),
    B("smtpd_use_tls", "no", "legacy: opportunistic TLS in the server"),
    B("smtpd_enforce_tls", "no", "legacy: mandatory TLS in the server"),
    B("smtpd_tls_ask_ccert", "no", "ask clients for a certificate"),
    B("smtpd_tls_req_ccert", "no", "require a verified client certificate (at level encrypt)"),
    I("smtpd_tls_ccert_verifydepth", "9", 1, 0, "longest client certificate chain"),
    S("smtpd_tls_fingerprint_digest", "sha256", "digest of client certificate fingerprints"),
    M("relay_clientcerts", "", "client certificate or public key fingerprints permit_tls_clientcerts accepts"),
    S("smtpd_tls_dh1024_param_file", "", "DH parameters for DHE ciphers (empty or auto: OpenSSL's)"),
    S("smtpd_tls_dh512_param_file", "", "ignored, as by Postfix 3.6 and later (no export ciphers)"),
    E("smtpd_tls_eecdh_grade", "auto", eecdh_grades, "ignored, as by Postfix 3.6 and later (always auto)"),

    /* TLS of both */
    S("tls_high_cipherlist", "aNULL:-aNULL:HIGH:!SEED:!IDEA:!3DES:!RC2:!RC4:!RC5:!kDH:!kECDH:!aDSS:!MD5:@STRENGTH",
      "OpenSSL cipher list of grade high"),
    S("tls_medium_cipherlist",
      "aNULL:-aNULL:HIGH:MEDIUM:!SEED:!IDEA:!3DES:!RC2:!RC4:!RC5:!kDH:!kECDH:!aDSS:!MD5:+RC4:@STRENGTH",
      "OpenSSL cipher list of grade medium"),
    S("tls_null_cipherlist", "eNULL:!kDH:!kECDH:!aDSS:!MD5:!aNULL", "OpenSSL cipher list of grade null"),
    S("tls_low_cipherlist", "", "ignored, as by Postfix 3.6 and later (grade low means medium)"),
    S("tls_export_cipherlist", "", "ignored, as by Postfix 3.6 and later (grade export means medium)"),
    B("tls_preempt_cipherlist", "no", "the server's cipher order wins over the client's"),
    S("tls_eecdh_auto_curves", "X25519 X448 prime256v1 secp384r1 secp521r1",
      "elliptic curves offered, in order"),
    S("tls_ffdhe_auto_groups", "ffdhe2048 ffdhe3072", "finite-field DH groups offered (TLS 1.3), in order"),
    S("tls_eecdh_strong_curve", "prime256v1", "ignored, as by Postfix 3.6 and later"),
    S("tls_eecdh_ultra_curve", "secp384r1", "ignored, as by Postfix 3.6 and later"),
};

const struct cfg_param *cfg_smtp_params(size_t *n)
{
    *n = sizeof(smtp_params) / sizeof(smtp_params[0]);
    return smtp_params;
}
