/*
 * Server-side TLS contexts: one SSL_CTX per listener, built from smtpd_tls_* as
 * Postfix builds it (core/tls does the grammar): smtpd_tls_mandatory_*
 * protocols, ciphers and exclusions at level encrypt, the opportunistic
 * ones at may; keys and certificate chains from smtpd_tls_chain_files,
 * which win over smtpd_tls_cert_file/_key_file; trust anchors for client
 * certificates from smtpd_tls_CAfile/_CApath, asked for with
 * smtpd_tls_ask_ccert (or _req_ccert at encrypt); DH parameters from
 * smtpd_tls_dh1024_param_file (empty or "auto": OpenSSL's own); the client's
 * cipher order unless tls_preempt_cipherlist.
 *
 * Resumption works across workers: session tickets are sealed with the
 * keys the master shares and rotates (tls/tls_ticket.c), and with
 * smtpd_tls_session_cache_database the session IDs of clients without
 * tickets live in the shared database (tls/tls_scache.c).
 *
 * Built when a listener's settings are (settings.c); the sessions' side is
 * tls.c. What policy delegation reports of a session's TLS
 * (smtpd_tls_facts) is here too, not in tls.c: tls.c belongs to the session
 * engine, and the restriction engine must not call into it.
 */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <event2/bufferevent_ssl.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include "config/cfg.h"
#include "lib/xalloc.h"
#include "smtpd/smtpd_int.h"
#include "tls/tls.h"

/* Accepts every client certificate: the result is read after the handshake
 * (SSL_get_verify_result), as Postfix's verify callback lets it through. */
static int accept_any(int ok, X509_STORE_CTX *ctx)
{
    (void)ok;
    (void)ctx;
    return 1;
}

static int load_dh(SSL_CTX *ctx, const char *file, char **error)
{
    if (file == NULL || *file == '\0' || strcasecmp(file, "auto") == 0) {
        SSL_CTX_set_dh_auto(ctx, 1);
        return 0;
    }
    BIO *bio = BIO_new_file(file, "r");
    EVP_PKEY *dh = bio ? PEM_read_bio_Parameters(bio, NULL) : NULL;
    BIO_free(bio);
    char why[256];
    if (dh == NULL || EVP_PKEY_base_id(dh) != EVP_PKEY_DH) {
        tls_error_text(why, sizeof(why));
        EVP_PKEY_free(dh);
        if (asprintf(error, "smtpd_tls_dh1024_param_file: cannot load DH parameters from %s: %s", file,
                     dh ? "not DH parameters" : why) < 0)
            *error = NULL;
        return -1;
    }
    if (SSL_CTX_set0_tmp_dh_pkey(ctx, dh) != 1) {
        tls_error_text(why, sizeof(why));
        EVP_PKEY_free(dh);
        if (asprintf(error, "smtpd_tls_dh1024_param_file: %s: %s", file, why) < 0)
            *error = NULL;
        return -1;
    }
    return 0;
}

SSL_CTX *smtpd_tls_ctx_create(const struct smtpd_settings *set, const struct tls_ticket_keys *tickets,
                              struct tls_scache **scache, char **error)
{
    const struct cfg *cfg = set->cfg;
    int mandatory = set->tls_level == TLS_LEVEL_ENCRYPT;
    const char *const *chain = cfg_list(cfg, "smtpd_tls_chain_files");
    const char *cert = cfg_get(cfg, "smtpd_tls_cert_file");
    if ((chain == NULL || *chain == NULL) && (cert == NULL || *cert == '\0')) {
        *error = xstrdup("smtpd_tls_cert_file: TLS is enabled but no certificate is configured "
                         "(smtpd_tls_chain_files or smtpd_tls_cert_file)");
        return NULL;
    }
    SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
    if (ctx == NULL) {
        *error = xstrdup("smtpd_tls_security_level: cannot create a TLS context");
        return NULL;
    }
    SSL_CTX_set_options(ctx, SSL_OP_NO_COMPRESSION | SSL_OP_NO_RENEGOTIATION);
    if (cfg_bool(cfg, "tls_preempt_cipherlist"))
        SSL_CTX_set_options(ctx, SSL_OP_CIPHER_SERVER_PREFERENCE);
    struct tls_cipher_lists lists = { cfg_get(cfg, "tls_high_cipherlist"), cfg_get(cfg, "tls_medium_cipherlist"),
                                      cfg_get(cfg, "tls_null_cipherlist") };
    const char *proto_param = mandatory ? "smtpd_tls_mandatory_protocols" : "smtpd_tls_protocols";
    const char *grade_param = mandatory ? "smtpd_tls_mandatory_ciphers" : "smtpd_tls_ciphers";
    if (tls_set_protocols(ctx, cfg_get(cfg, proto_param), proto_param, error) < 0 ||
        tls_set_ciphers(ctx, &lists, cfg_get(cfg, grade_param), grade_param, cfg_list(cfg, "smtpd_tls_exclude_ciphers"),
                        "smtpd_tls_exclude_ciphers",
                        mandatory ? cfg_list(cfg, "smtpd_tls_mandatory_exclude_ciphers") : NULL,
                        "smtpd_tls_mandatory_exclude_ciphers", error) < 0)
        goto failed;
    tls_set_groups(ctx, cfg_get(cfg, "tls_eecdh_auto_curves"), cfg_get(cfg, "tls_ffdhe_auto_groups"));
    if (load_dh(ctx, cfg_get(cfg, "smtpd_tls_dh1024_param_file"), error) < 0)
        goto failed;
    /* Postfix: chain files win; the legacy pair is then ignored (with a warning at load) */
    if (chain && *chain) {
        if (tls_load_chain_files(ctx, chain, "smtpd_tls_chain_files", error) < 0)
            goto failed;
    } else if (tls_load_cert_key(ctx, cert, "smtpd_tls_cert_file", cfg_get(cfg, "smtpd_tls_key_file"),
                                 "smtpd_tls_key_file", error) < 0) {
        goto failed;
    }
    const char *cafile = cfg_get(cfg, "smtpd_tls_CAfile");
    if (tls_load_ca(ctx, cafile, "smtpd_tls_CAfile", cfg_get(cfg, "smtpd_tls_CApath"), "smtpd_tls_CApath", 0,
                    error) < 0)
        goto failed;
    if (set->tls_ask_ccert) {
        SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER | SSL_VERIFY_CLIENT_ONCE, accept_any);
        SSL_CTX_set_verify_depth(ctx, set->tls_ccert_verifydepth + 1);
        /* the CA names the client is told about: those of smtpd_tls_CAfile */
        if (cafile && *cafile) {
            STACK_OF(X509_NAME) *names = SSL_load_client_CA_file(cafile);
            if (names)
                SSL_CTX_set_client_CA_list(ctx, names);
            ERR_clear_error();
        }
    }
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_SERVER);
    SSL_CTX_set_timeout(ctx, (long)cfg_int(cfg, "smtpd_tls_session_cache_timeout"));
    static const unsigned char sid_ctx[] = "petrel-smtpd";
    SSL_CTX_set_session_id_context(ctx, sid_ctx, sizeof(sid_ctx) - 1);
    tls_ticket_keys_use(ctx, tickets);
    const char *db = cfg_get(cfg, "smtpd_tls_session_cache_database");
    *scache = NULL;
    if (db && *db) {
        *scache = tls_scache_open(db, "smtpd_tls_session_cache_database",
                                  (unsigned)cfg_int(cfg, "smtpd_tls_session_cache_timeout"), error);
        if (*scache == NULL)
            goto failed;
        tls_scache_serve(ctx, *scache);
    }
    return ctx;

failed:
    SSL_CTX_free(ctx);
    return NULL;
}

void smtpd_tls_facts(struct smtpd_session *s, const char **protocol, const char **cipher, int *bits,
                     const char **sni)
{
    SSL *ssl = s->tls_active && s->bev ? bufferevent_openssl_get_ssl(s->bev) : NULL;
    if (ssl == NULL)
        return;
    const SSL_CIPHER *c = SSL_get_current_cipher(ssl);
    *protocol = SSL_get_version(ssl);
    *cipher = c ? SSL_CIPHER_get_name(c) : "";
    *bits = c ? SSL_CIPHER_get_bits(c, NULL) : 0;
    const char *name = SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name);
    *sni = name ? name : "";
}
