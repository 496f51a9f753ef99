/*
 * Server-side TLS in a session: starting the handshake (STARTTLS or
 * wrapper mode, bounded by smtpd_tls_starttls_timeout), and what is
 * learned once it is done - the summary for the log (smtpd_tls_loglevel)
 * and Received:, the client certificate's facts (verified or not, subject
 * and issuer CN, fingerprints) for the restrictions and the policy
 * protocol - and smtpd_tls_req_ccert's refusal of a client without a
 * verified certificate, as Postfix refuses it after the handshake ("421
 * 4.7.1 ... Client certificate not trusted"). A client certificate never
 * fails the handshake itself. The listener's context is tls_context.c's.
 *
 * libevent reports the finished handshake as BEV_EVENT_CONNECTED; the
 * session then calls smtpd_tls_established().
 */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include "config/cfg.h"
#include "lib/log.h"
#include "lib/xalloc.h"
#include "smtpd/smtpd_int.h"
#include "tls/tls.h"

const char *smtpd_tls_describe(petrel_pool *pool, SSL *ssl)
{
    char text[300];
    tls_describe(ssl, text, sizeof(text));
    return petrel_pool_strdup(pool, text);
}

/* Called once the handshake completes: record and log what was negotiated,
 * and the client certificate. 0, or -1 when the session must end (a
 * required client certificate is missing or not trusted: the reply is
 * already queued). */
int smtpd_tls_established(struct smtpd_session *s)
{
    SSL *ssl = bufferevent_openssl_get_ssl(s->bev);
    const struct smtpd_settings *set = s->set;
    s->tls_active = 1;
    s->tls_info = smtpd_tls_describe(s->pool, ssl);
    X509 *peer = SSL_get1_peer_certificate(ssl);
    if (peer) {
        char buf[300];
        s->ccert.present = 1;
        s->ccert.verified = SSL_get_verify_result(ssl) == X509_V_OK;
        tls_subject_cn(peer, buf, sizeof(buf));
        s->ccert.subject = petrel_pool_strdup(s->pool, buf);
        tls_issuer_cn(peer, buf, sizeof(buf));
        s->ccert.issuer = petrel_pool_strdup(s->pool, buf);
        tls_fingerprint(peer, set->tls_fingerprint_digest, 0, buf, sizeof(buf));
        s->ccert.fingerprint = petrel_pool_strdup(s->pool, buf);
        tls_fingerprint(peer, set->tls_fingerprint_digest, 1, buf, sizeof(buf));
        s->ccert.pubkey_fingerprint = petrel_pool_strdup(s->pool, buf);
        X509_free(peer);
    }
    if (set->tls_loglevel >= 2 && SSL_session_reused(ssl))
        msg_info("%s: Reusing old session", s->namaddr);
    if (set->tls_loglevel >= 1)
        msg_info("%s TLS connection established from %s: %s",
                 !s->ccert.present ? "Anonymous" : s->ccert.verified ? "Trusted" : "Untrusted", s->namaddr,
                 s->tls_info);
    if (set->tls_loglevel >= 1 && s->ccert.present)
        msg_info("%s: %s: subject_CN=%s, issuer=%s, fingerprint=%s, pkey_fingerprint=%s", s->namaddr,
                 s->ccert.verified ? "Trusted" : "Untrusted", s->ccert.subject, s->ccert.issuer,
                 s->ccert.fingerprint, s->ccert.pubkey_fingerprint);
    if (set->tls_req_ccert && !s->ccert.verified) {
        const char *why = s->ccert.present ? "Client certificate not trusted" : "No client certificate presented";
        msg_info("NOQUEUE: abort: TLS from %s: %s", s->namaddr, why);
        smtpd_reply(s, "421 4.7.1 %s Error: %s", set->myhostname, why);
        return -1;
    }
    return 0;
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
    s->tls_handshaking = 1;
    /* smtpd_starttls_timeout bounds the handshake, not smtpd_timeout */
    bufferevent_set_timeouts(bev, &s->set->starttls_timeout, &s->set->starttls_timeout);
    return 0;
}
