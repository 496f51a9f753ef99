/*
 * Server-side TLS: one SSL_CTX per listener, built from smtpd_tls_* with
 * safe floors (TLS 1.2 at least, as smtpd_tls_protocols defaults to), and
 * session resumption (OpenSSL's session cache and tickets). Ticket keys are
 * OpenSSL's per-context random keys: each worker has its own, so a client
 * resumes on the worker that issued its ticket (doc/architecture.md).
 * libevent reports the finished handshake as BEV_EVENT_CONNECTED; the
 * session then calls smtpd_tls_established().
 */
#include "config.h"

#include <string.h>
#include <strings.h>

#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <openssl/err.h>
#include <openssl/ssl.h>

#include "config/cfg.h"
#include "lib/log.h"
#include "lib/xalloc.h"
#include "smtpd/smtpd_int.h"

static char *ssl_error_text(const char *what, const char *file)
{
    char reason[256] = "unknown error";
    unsigned long e = ERR_get_error();
    if (e)
        ERR_error_string_n(e, reason, sizeof(reason));
    ERR_clear_error();
    size_t n = strlen(what) + strlen(file) + strlen(reason) + 8;
    char *out = xmalloc(n);
    snprintf(out, n, "%s %s: %s", what, file, reason);
    return out;
}

/* "!SSLv2, !SSLv3, !TLSv1, !TLSv1.1" or ">=TLSv1.2" (Postfix syntax) -> minimum version. */
static int min_protocol(const char *spec)
{
    if (spec == NULL || *spec == '\0')
        return TLS1_2_VERSION;
    if (strstr(spec, ">=TLSv1.3"))
        return TLS1_3_VERSION;
    if (strstr(spec, ">=TLSv1.2"))
        return TLS1_2_VERSION;
    if (strstr(spec, "!TLSv1.2"))
        return TLS1_3_VERSION;
    /* Older protocols are never enabled, whatever the list says. */
    return TLS1_2_VERSION;
}

SSL_CTX *smtpd_tls_ctx_create(const struct cfg *cfg, char **error)
{
    const char *cert = cfg_get(cfg, "smtpd_tls_cert_file");
    const char *key = cfg_get(cfg, "smtpd_tls_key_file");
    if (cert == NULL || *cert == '\0') {
        *error = xstrdup("smtpd_tls_cert_file: TLS is enabled but no certificate is configured");
        return NULL;
    }
    if (key == NULL || *key == '\0')
        key = cert;
    SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
    if (ctx == NULL) {
        *error = ssl_error_text("SSL_CTX_new", "");
        return NULL;
    }
    SSL_CTX_set_min_proto_version(ctx, min_protocol(cfg_get(cfg, "smtpd_tls_protocols")));
    SSL_CTX_set_options(ctx, SSL_OP_NO_COMPRESSION | SSL_OP_NO_RENEGOTIATION | SSL_OP_CIPHER_SERVER_PREFERENCE);
    /* Postfix's "medium" grade: no export, no NULL, no anonymous, no RC4/3DES. */
    SSL_CTX_set_cipher_list(ctx, "HIGH:MEDIUM:!aNULL:!eNULL:!RC4:!3DES:!MD5:!EXPORT");
    if (SSL_CTX_use_certificate_chain_file(ctx, cert) != 1) {
        *error = ssl_error_text("smtpd_tls_cert_file: cannot load certificate chain", cert);
        SSL_CTX_free(ctx);
        return NULL;
    }
    if (SSL_CTX_use_PrivateKey_file(ctx, key, SSL_FILETYPE_PEM) != 1) {
        *error = ssl_error_text("smtpd_tls_key_file: cannot load private key", key);
        SSL_CTX_free(ctx);
        return NULL;
    }
    if (SSL_CTX_check_private_key(ctx) != 1) {
        *error = ssl_error_text("smtpd_tls_key_file: key does not match certificate", key);
        SSL_CTX_free(ctx);
        return NULL;
    }
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_SERVER);
    SSL_CTX_set_timeout(ctx, (long)cfg_int(cfg, "smtpd_tls_session_cache_timeout"));
    static const unsigned char sid_ctx[] = "petrel-smtpd";
    SSL_CTX_set_session_id_context(ctx, sid_ctx, sizeof(sid_ctx) - 1);
    return ctx;
}

const char *smtpd_tls_describe(petrel_pool *pool, SSL *ssl)
{
    int alg_bits = 0;
    const SSL_CIPHER *c = SSL_get_current_cipher(ssl);
    int bits = SSL_CIPHER_get_bits(c, &alg_bits);
    return petrel_pool_printf(pool, "%s with cipher %s (%d/%d bits)", SSL_get_version(ssl),
                              SSL_CIPHER_get_name(c), bits, alg_bits);
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

/* Called once the handshake completes: record and log what was negotiated. */
void smtpd_tls_established(struct smtpd_session *s)
{
    SSL *ssl = bufferevent_openssl_get_ssl(s->bev);
    s->tls_active = 1;
    s->tls_info = smtpd_tls_describe(s->pool, ssl);
    msg_info("%s TLS connection established from %s: %s", SSL_session_reused(ssl) ? "Reused" : "Anonymous",
             s->namaddr, s->tls_info);
}

int smtpd_tls_start(struct smtpd_session *s, int wrapper)
{
    SSL *ssl = SSL_new(s->set->tls_ctx);
    if (ssl == NULL)
        return -1;
    struct bufferevent *bev;
    if (wrapper) {
        bev = bufferevent_openssl_socket_new(s->worker->base, s->fd, ssl, BUFFEREVENT_SSL_ACCEPTING,
                                             BEV_OPT_CLOSE_ON_FREE);
    } else {
        bev = bufferevent_openssl_filter_new(s->worker->base, s->bev, ssl, BUFFEREVENT_SSL_ACCEPTING,
                                             BEV_OPT_CLOSE_ON_FREE);
    }
    if (bev == NULL) {
        SSL_free(ssl);
        return -1;
    }
    bufferevent_openssl_set_allow_dirty_shutdown(bev, 1);
    s->bev = bev;   /* the caller installs the session callbacks on it */
    return 0;
}

