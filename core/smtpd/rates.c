/*
 * Per-client rate limits of Postfix's anvil beyond connections (those are
 * in session.c): messages (smtpd_client_message_rate_limit, counted at each
 * MAIL FROM), recipients (smtpd_client_recipient_rate_limit, at each RCPT
 * TO) and new TLS sessions (smtpd_client_new_tls_session_rate_limit, at
 * each handshake that did not resume a session). Each counts per service
 * and client address in the shared table (anvil.c), over
 * anvil_rate_time_unit, across all workers; clients in
 * smtpd_client_event_limit_exceptions and local submissions are never
 * counted. Replies and log lines are Postfix's.
 */
#include "config.h"

#include <time.h>

#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <openssl/ssl.h>

#include "lib/log.h"
#include "smtpd/anvil.h"
#include "smtpd/smtpd_int.h"
#include "mail/namadr.h"
#include "tables/cidr.h"

static int exempt(const struct smtpd_session *s)
{
    return s->local_submission || s->worker->anvil == NULL || namadr_list_match(s->set->conn_limit_exceptions, s->name, s->addr) > 0;
}

static unsigned window(const struct smtpd_settings *set)
{
    return set->rate_time_unit ? set->rate_time_unit : 60;
}

/* Counts one event of kind and returns the rate, or 0 when not counted. */
static unsigned count(struct smtpd_session *s, const char *kind, int add)
{
    const char *key = petrel_pool_printf(s->scratch, "%s:%s:%s", kind, s->set->service_name, s->addr);
    time_t now = time(NULL);
    return add ? anvil_count(s->worker->anvil, key, now, window(s->set))
               : anvil_peek(s->worker->anvil, key, now, window(s->set));
}

int smtpd_rate_mail(struct smtpd_session *s)
{
    unsigned limit = s->set->message_rate_limit, rate;
    if (limit == 0 || exempt(s) || (rate = count(s, "mail", 1)) <= limit)
        return 0;
    smtpd_reply(s, "450 4.7.1 Error: too much mail from %s", s->addr);
    msg_warn("Message delivery request rate limit exceeded: %u from %s for service %s", rate, s->namaddr,
             s->set->service_name);
    return -1;
}

int smtpd_rate_rcpt(struct smtpd_session *s)
{
    unsigned limit = s->set->recipient_rate_limit, rate;
    if (limit == 0 || exempt(s) || (rate = count(s, "rcpt", 1)) <= limit)
        return 0;
    msg_warn("Recipient address rate limit exceeded: %u from %s for service %s", rate, s->namaddr,
             s->set->service_name);
    smtpd_reply(s, "450 4.7.1 Error: too many recipients from %s", s->addr);
    return -1;
}

int smtpd_rate_starttls(struct smtpd_session *s, int wrapper)
{
    unsigned limit = s->set->new_tls_rate_limit;
    if (limit == 0 || exempt(s) || count(s, "newtls", 0) <= limit)
        return 0;
    if (wrapper) {
        msg_warn("Refusing TLS service request from %s for service %s", s->namaddr, s->set->service_name);
        return -1;
    }
    msg_warn("Refusing STARTTLS request from %s for service %s", s->namaddr, s->set->service_name);
    smtpd_reply(s, "454 4.7.0 Error: too many new TLS sessions from %s", s->namaddr);
    return -1;
}

int smtpd_tls_count_new_session(struct smtpd_session *s)
{
    unsigned limit = s->set->new_tls_rate_limit, rate;
    SSL *ssl = bufferevent_openssl_get_ssl(s->bev);
    if (limit == 0 || exempt(s) || (ssl && SSL_session_reused(ssl)) || (rate = count(s, "newtls", 1)) <= limit)
        return 0;
    msg_warn("New TLS session rate limit exceeded: %u from %s for service %s", rate, s->namaddr,
             s->set->service_name);
    smtpd_reply(s, "421 4.7.0 %s Error: too many new TLS sessions from %s", s->set->myhostname, s->namaddr);
    return -1;
}
