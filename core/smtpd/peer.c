/*
 * The client's name, as Postfix's smtpd_peer finds it, asynchronously at
 * connect: the name of the address (the "reverse name"), then the IPv4
 * (IPv4 client) or IPv6 (IPv6 client) addresses of that name, which must
 * contain the address for the name to be "verified". The verified name is
 * what Received:, the log (name[addr]), check_client_access and
 * reject_unknown_client_hostname see; the reverse name is kept for
 * reject_unknown_reverse_client_hostname and
 * check_reverse_client_hostname_access. Either is "unknown" when it is not
 * known, with a status that tells a temporary failure (a DNS that does not
 * answer: 4) from a permanent one (no PTR, 5) and from a name that does not
 * resolve back to the address (6, "forged"), so that restrictions never
 * give a permanent answer for a temporary problem.
 *
 * Postfix asks getnameinfo()/getaddrinfo(), which with glibc's default
 * nsswitch ("hosts: files dns") answer from /etc/hosts first. So does this:
 * each step asks the worker's copy of the hosts file (lib/hosts_file.h,
 * re-read within a second of a change) and goes to DNS through the worker's
 * resolver (`dns_resolver`, c-ares) only when the file does not list the
 * address (reverse) or the name with an address of the client's family
 * (forward). When nsswitch.conf does not put files first, only DNS is
 * asked, and the first worker says so at start; "hosts: files" without
 * dns asks the file alone (peer_dns NULL: what it does not list has no
 * name, as getnameinfo() has none). A name from either source
 * that is not a valid host name (or is numeric) is no name, as in Postfix's
 * sockaddr_to_hostname(). The session greets the client when the name is
 * known, as Postfix does; the resolver's timeouts bound the wait.
 * smtpd_peername_lookup = no skips all of it (every client is "unknown",
 * status 5).
 *
 * PETREL_HOSTS_FILE and PETREL_NSSWITCH_FILE in the environment replace
 * /etc/hosts and /etc/nsswitch.conf: the test suite's own files
 * (doc/testing.md); a start with either set says so in the log.
 */
#include "config.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "lib/dns.h"
#include "lib/hosts_file.h"
#include "lib/log.h"
#include "lib/xalloc.h"
#include "smtpd/smtpd_int.h"
#include "tables/cidr.h"

struct smtpd_peer_lookup {
    struct smtpd_session *s;
    struct dns_resolver *dns;  /* NULL: the hosts file alone answers */
    struct dns_query *query;
    void (*done)(struct smtpd_session *s);
    struct cidr_addr addr;     /* the client's */
    int starting;              /* nesting of calls that may answer at once: done(s) waits for them */
    int finished;
};

static void peer_known(struct smtpd_peer_lookup *p)
{
    struct smtpd_session *s = p->s;
    s->peer_lookup = NULL;
    p->finished = 1;
    if (p->starting == 0)
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

static int same_address(const char *a, const struct cidr_addr *y)
{
    struct cidr_addr x;
    if (cidr_addr_parse(a, &x) != 0 || x.family != y->family)
        return 0;
    return memcmp(x.bytes, y->bytes, x.family == AF_INET ? 4 : 16) == 0;
}

static void name_unknown(struct smtpd_session *s, int status)
{
    s->name = "unknown";
    s->name_status = status;
}

static void name_verified(struct smtpd_session *s)
{
    s->name = s->reverse_name;
    s->name_status = SMTPD_PEER_OK;
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
        if (same_address(a->values[i], &p->addr)) {
            name_verified(s);
            peer_known(p);
            return;
        }
    }
    msg_warn("hostname %s does not resolve to address %s", s->reverse_name, s->addr);
    name_unknown(s, SMTPD_PEER_FORGED);
    peer_known(p);
}

/* The reverse name is known (status SMTPD_PEER_OK) or not: verify it, from
 * the hosts file when it names it with an address of the client's family
 * (getaddrinfo() stops there), else through DNS. */
static void reverse_known(struct smtpd_peer_lookup *p, int status, const char *name)
{
    struct smtpd_session *s = p->s;
    /* Postfix takes the first name getnameinfo() gives. */
    if (status == SMTPD_PEER_OK && !acceptable_name(name))
        status = SMTPD_PEER_PERM;
    if (status != SMTPD_PEER_OK) {
        s->reverse_name = "unknown";
        s->reverse_name_status = status;
        name_unknown(s, status);
        peer_known(p);
        return;
    }
    s->reverse_name = petrel_pool_strdup(s->pool, name);
    s->reverse_name_status = SMTPD_PEER_OK;
    int v6 = p->addr.family == AF_INET6;
    if (s->worker->hosts) {
        switch (hosts_file_name_has(s->worker->hosts, s->reverse_name, p->addr.family, p->addr.bytes)) {
        case HOSTS_MATCH:
            name_verified(s);
            peer_known(p);
            return;
        case HOSTS_OTHER:
            msg_warn("hostname %s does not resolve to address %s", s->reverse_name, s->addr);
            name_unknown(s, SMTPD_PEER_FORGED);
            peer_known(p);
            return;
        case HOSTS_NOT_LISTED:
            break;
        }
    }
    if (p->dns == NULL) {
        /* getaddrinfo() with files alone: EAI_NONAME, forged in Postfix */
        msg_warn("hostname %s does not resolve to address %s: Name or service not known", s->reverse_name, s->addr);
        name_unknown(s, SMTPD_PEER_FORGED);
        peer_known(p);
        return;
    }
    p->starting++;
    struct dns_query *q = dns_lookup(p->dns, v6 ? DNS_AAAA : DNS_A, s->reverse_name, forward_answered, p);
    p->starting--;
    if (p->finished) {
        if (p->starting == 0)
            p->done(s);   /* answered at once; the session may be gone after this */
        return;
    }
    p->query = q;
}

static void reverse_answered(const struct dns_answer *a, void *arg)
{
    struct smtpd_peer_lookup *p = arg;
    p->query = NULL;
    int status = a->status == DNS_OK ? SMTPD_PEER_OK : a->status == DNS_TEMPFAIL ? SMTPD_PEER_TEMP : SMTPD_PEER_PERM;
    reverse_known(p, status, status == SMTPD_PEER_OK ? a->values[0] : NULL);
}

void smtpd_peer_lookup(struct smtpd_session *s, void (*done)(struct smtpd_session *s))
{
    s->name = s->reverse_name = "unknown";
    s->name_status = s->reverse_name_status = SMTPD_PEER_PERM;
    struct cidr_addr addr;
    struct smtpd_worker *w = s->worker;
    if (!s->set->peername_lookup || (w->peer_dns == NULL && w->hosts == NULL) ||
        cidr_addr_parse(s->addr, &addr) != 0) {
        done(s);
        return;
    }
    struct smtpd_peer_lookup *p = petrel_pool_zalloc(s->pool, sizeof(*p));
    p->s = s;
    p->dns = w->peer_dns;
    p->done = done;
    p->addr = addr;
    s->peer_lookup = p;
    p->starting = 1;
    const char *listed = w->hosts ? hosts_file_name_of(w->hosts, addr.family, addr.bytes) : NULL;
    if (listed) {
        /* getnameinfo() stops at the hosts file's first line for the
         * address, even when its name is no valid host name. */
        reverse_known(p, SMTPD_PEER_OK, listed);
    } else if (p->dns == NULL) {
        reverse_known(p, SMTPD_PEER_PERM, NULL);   /* getnameinfo(): EAI_NONAME */
    } else {
        struct dns_query *q = dns_lookup(p->dns, DNS_PTR, s->addr, reverse_answered, p);
        if (!p->finished && p->query == NULL)
            p->query = q;   /* still waiting for the PTR (not for a forward lookup it started) */
    }
    p->starting = 0;
    if (p->finished)
        done(s);
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

/* Whether the hosts file is asked, decided once per worker from
 * nsswitch.conf; the first worker tells why not (or what else differs). */
void smtpd_peer_hosts_open(struct smtpd_worker *w)
{
    const char *hosts_path = getenv("PETREL_HOSTS_FILE");
    const char *nsswitch_path = getenv("PETREL_NSSWITCH_FILE");
    int tell = w->index == 0;
    if (tell && (hosts_path || nsswitch_path))
        msg_info("client names: hosts file %s, nsswitch %s (from the environment: PETREL_HOSTS_FILE, "
                 "PETREL_NSSWITCH_FILE)", hosts_path ? hosts_path : "/etc/hosts",
                 nsswitch_path ? nsswitch_path : "/etc/nsswitch.conf");
    if (hosts_path == NULL || *hosts_path == '\0')
        hosts_path = "/etc/hosts";
    if (nsswitch_path == NULL || *nsswitch_path == '\0')
        nsswitch_path = "/etc/nsswitch.conf";
    char *why = NULL, *note = NULL;
    int dns = 1;
    w->peer_dns = w->dns;
    if (hosts_file_first_in_nsswitch(nsswitch_path, &dns, &why, &note)) {
        w->hosts = hosts_file_create(hosts_path, w->base, !tell);
        if (tell && note)
            msg_warn("%s", note);
        if (!dns) {
            /* glibc never asks DNS; neither do Postfix's lookups */
            w->peer_dns = NULL;
            if (tell && note == NULL)
                msg_info("%s: hosts: files without dns: client names come from %s only (a client not in it is "
                         "unknown), as with Postfix", nsswitch_path, hosts_path);
        }
    } else if (tell) {
        msg_warn("%s: client names come from DNS only; %s is not consulted", why, hosts_path);
    }
    free(why);
    free(note);
}
