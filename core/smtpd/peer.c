/*
 * The client's name, as Postfix's smtpd_peer finds it, asynchronously at
 * connect: the PTR record of the address (the "reverse name"), then the
 * A (IPv4 client) or AAAA (IPv6) records of that name, which must contain
 * the address for the name to be "verified". The verified name is what
 * Received:, the log (name[addr]), check_client_access and
 * reject_unknown_client_hostname see; the reverse name is kept for
 * reject_unknown_reverse_client_hostname and
 * check_reverse_client_hostname_access. Either is "unknown" when it is not
 * known, with a status that tells a temporary failure (a DNS that does not
 * answer: 4) from a permanent one (no PTR, 5) and from a name that does not
 * resolve back to the address (6, "forged"), so that restrictions never
 * give a permanent answer for a temporary problem.
 *
 * The lookups go through the worker's resolver (`dns_resolver`), not the
 * system's name service: /etc/hosts is not consulted (Postfix uses
 * getnameinfo()/getaddrinfo(), which do). The session greets the client
 * when the name is known, as Postfix does; the resolver's timeouts bound
 * the wait. smtpd_peername_lookup = no skips all of it (every client is
 * "unknown", status 5).
 */
#include "config.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <string.h>
#include <strings.h>

#include "lib/dns.h"
#include "lib/log.h"
#include "smtpd/smtpd_int.h"
#include "tables/cidr.h"

struct smtpd_peer_lookup {
    struct smtpd_session *s;
    struct dns_query *query;
    void (*done)(struct smtpd_session *s);
    int forward;               /* the PTR answered; now the name's addresses */
    int starting;              /* inside dns_lookup: an answer now must not finish the session's start */
    int finished;
};

static void peer_known(struct smtpd_peer_lookup *p)
{
    struct smtpd_session *s = p->s;
    s->peer_lookup = NULL;
    p->finished = 1;
    if (!p->starting)
        p->done(s);
}

/* Postfix's sockaddr_to_hostname(): a name that is not a valid host name,
 * or that is numeric, is no name at all. */
static int acceptable_name(const char *name)
{
    struct cidr_addr a;
    if (name == NULL || *name == '\0' || strlen(name) > 253)
        return 0;
    if (cidr_addr_parse(name, &a) == 0)
        return 0;
    return smtp_valid_hostname(name);
}

static int same_address(const char *a, const char *b)
{
    struct cidr_addr x, y;
    if (cidr_addr_parse(a, &x) != 0 || cidr_addr_parse(b, &y) != 0 || x.family != y.family)
        return 0;
    return memcmp(x.bytes, y.bytes, x.family == AF_INET ? 4 : 16) == 0;
}

static void name_unknown(struct smtpd_session *s, int status)
{
    s->name = "unknown";
    s->name_status = status;
}

static void forward_answered(const struct dns_answer *a, void *arg)
{
    struct smtpd_peer_lookup *p = arg;
    struct smtpd_session *s = p->s;
    p->query = NULL;
    if (a->status != DNS_OK) {
        msg_warn("hostname %s does not resolve to address %s: %s", s->reverse_name, s->addr,
                 a->status == DNS_TEMPFAIL ? "Temporary failure in name resolution"
                 : a->status == DNS_NODATA ? "No address associated with hostname" : "Name or service not known");
        name_unknown(s, a->status == DNS_TEMPFAIL ? SMTPD_PEER_TEMP : SMTPD_PEER_FORGED);
        peer_known(p);
        return;
    }
    for (size_t i = 0; i < a->count; i++) {
        if (same_address(a->values[i], s->addr)) {
            s->name = s->reverse_name;
            s->name_status = SMTPD_PEER_OK;
            peer_known(p);
            return;
        }
    }
    msg_warn("hostname %s does not resolve to address %s", s->reverse_name, s->addr);
    name_unknown(s, SMTPD_PEER_FORGED);
    peer_known(p);
}

static void reverse_answered(const struct dns_answer *a, void *arg)
{
    struct smtpd_peer_lookup *p = arg;
    struct smtpd_session *s = p->s;
    p->query = NULL;
    int status = a->status == DNS_OK ? SMTPD_PEER_OK : a->status == DNS_TEMPFAIL ? SMTPD_PEER_TEMP : SMTPD_PEER_PERM;
    /* Postfix takes the first name getnameinfo() gives. */
    if (status == SMTPD_PEER_OK && !acceptable_name(a->values[0]))
        status = SMTPD_PEER_PERM;
    if (status != SMTPD_PEER_OK) {
        s->reverse_name = "unknown";
        s->reverse_name_status = status;
        name_unknown(s, status);
        peer_known(p);
        return;
    }
    s->reverse_name = petrel_pool_strdup(s->pool, a->values[0]);
    s->reverse_name_status = SMTPD_PEER_OK;
    struct cidr_addr addr;
    int v6 = cidr_addr_parse(s->addr, &addr) == 0 && addr.family == AF_INET6;
    p->forward = 1;
    p->starting = 1;
    struct dns_query *q = dns_lookup(s->worker->dns, v6 ? DNS_AAAA : DNS_A, s->reverse_name, forward_answered, p);
    p->starting = 0;
    if (p->finished) {
        p->done(s);   /* answered at once; the session may be gone after this */
        return;
    }
    p->query = q;
}

void smtpd_peer_lookup(struct smtpd_session *s, void (*done)(struct smtpd_session *s))
{
    s->name = s->reverse_name = "unknown";
    s->name_status = s->reverse_name_status = SMTPD_PEER_PERM;
    struct cidr_addr addr;
    if (!s->set->peername_lookup || s->worker->dns == NULL || cidr_addr_parse(s->addr, &addr) != 0) {
        done(s);
        return;
    }
    struct smtpd_peer_lookup *p = petrel_pool_zalloc(s->pool, sizeof(*p));
    p->s = s;
    p->done = done;
    s->peer_lookup = p;
    p->starting = 1;
    struct dns_query *q = dns_lookup(s->worker->dns, DNS_PTR, s->addr, reverse_answered, p);
    p->starting = 0;
    if (p->finished) {
        done(s);
        return;
    }
    if (!p->forward)
        p->query = q;
}

void smtpd_peer_cancel(struct smtpd_session *s)
{
    struct smtpd_peer_lookup *p = s->peer_lookup;
    if (p == NULL)
        return;
    s->peer_lookup = NULL;
    if (p->query)
        dns_cancel(p->query);
    p->query = NULL;
}
