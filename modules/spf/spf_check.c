/*
 * check_host() with libspf2 on a worker thread, through our own DNS layer.
 *
 * libspf2 resolves through an SPF_dns_server_t; its stock one calls
 * res_nquery() with /etc/resolv.conf. Ours (layer_lookup) hands every query
 * to the module's bridge, i.e. to the role's resolver and dns_resolver, and
 * enforces what libspf2 does not:
 *   - RFC 7208 4.6.4 void lookups: more than limits->max_void A/AAAA/MX
 *     answers that are NXDOMAIN or empty make the result permerror;
 *   - RFC 7208 4.6.4 MX: an "mx" term whose domain has more than 10 MX
 *     records is a permerror (libspf2 silently uses the first 10);
 *   - one deadline for the whole evaluation: past it every lookup fails
 *     at once and the result is temperror;
 *   - the obsolete SPF RR type (99) that libspf2 asks for first is answered
 *     "no data" without a query (RFC 7208 3.1: TXT only).
 * libspf2 itself counts the 10 DNS-querying terms (max_dns_mech).
 *
 * libspf2's SPF_request_query_mailfrom() gives every loopback client a free
 * "pass"; we call the two steps it is made of (SPF_server_get_record and
 * SPF_record_interpret) so that a loopback client is evaluated like any
 * other (the module skips mynetworks by itself when asked to).
 *
 * Each evaluation has its own SPF_server_t and DNS layer (their hook is the
 * evaluation's context), so threads share nothing but the bridge.
 */
#include <strings.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <spf2/spf.h>

#include "spf_check.h"

/* A safety net above what 10 terms x (1 + 10 MX hosts) can need. */
#define MAX_QUERIES 150
#define MAX_MX 10

struct eval {
    struct spf_bridge *bridge;
    const struct spf_limits *limits;
    struct timespec deadline;
    unsigned queries;
    int voids;
    int stopped;               /* a limit or the deadline ended the evaluation */
    SPF_dns_stat_t stop_status;
    enum spf_result forced;    /* the result the stop imposes */
    SPF_dns_stat_t last_txt;   /* status of the last TXT answer (the record lookup) */
    char problem[200];
};

static const char *const result_names[SPF_RES_COUNT] = {
    "none", "neutral", "pass", "fail", "softfail", "temperror", "permerror",
};

const char *spf_result_name(enum spf_result r)
{
    return (unsigned)r < SPF_RES_COUNT ? result_names[r] : "none";
}

void spf_check_library_init(void)
{
    /* libspf2 prints warnings and notes on stdout/stderr from any thread:
     * our log is the module's, so they are switched off (what matters ends
     * in the response's errors, which we log). Its error handler aborts:
     * it stays, as it only fires on libspf2's internal assertions. */
    SPF_warning_handler = NULL;
    SPF_info_handler = NULL;
    SPF_debug_handler = NULL;
}

static int past(const struct timespec *deadline)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return now.tv_sec > deadline->tv_sec || (now.tv_sec == deadline->tv_sec && now.tv_nsec >= deadline->tv_nsec);
}

/* Ends the evaluation: every later lookup fails with status, and the
 * result is forced; the problem reads what + arg + tail. */
static void stop(struct eval *ev, enum spf_result forced, SPF_dns_stat_t status, const char *what, const char *arg,
                 const char *tail)
{
    if (ev->stopped)
        return;
    ev->stopped = 1;
    ev->forced = forced;
    ev->stop_status = status;
    snprintf(ev->problem, sizeof(ev->problem), "%s%s%s", what, arg, tail);
}

/* "4.3.2.1.in-addr.arpa" -> "1.2.3.4"; nibbles.ip6.arpa -> IPv6 text. */
static int address_of_reverse(const char *name, char *out, size_t size)
{
    size_t n = strlen(name);
    if (n > 13 && strcasecmp(name + n - 13, ".in-addr.arpa") == 0) {
        unsigned b[4];
        char tail[2];
        if (sscanf(name, "%3u.%3u.%3u.%3u%1[.]", &b[0], &b[1], &b[2], &b[3], tail) != 5 ||
            b[0] > 255 || b[1] > 255 || b[2] > 255 || b[3] > 255)
            return -1;
        snprintf(out, size, "%u.%u.%u.%u", b[3], b[2], b[1], b[0]);
        return 0;
    }
    if (n == 72 && strcasecmp(name + 63, ".ip6.arpa") == 0) {
        struct in6_addr a;
        for (int i = 0; i < 32; i++) {
            char c = name[i * 2];
            int v = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10
                  : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
            if (v < 0 || name[i * 2 + 1] != '.')
                return -1;
            int byte = 15 - i / 2;
            if (i % 2 == 0)
                a.s6_addr[byte] = (unsigned char)v;
            else
                a.s6_addr[byte] |= (unsigned char)(v << 4);
        }
        return inet_ntop(AF_INET6, &a, out, (socklen_t)size) ? 0 : -1;
    }
    return -1;
}

static SPF_dns_rr_t *answer_rr(SPF_dns_server_t *srv, const char *domain, ns_type type, SPF_dns_stat_t status)
{
    return SPF_dns_rr_new_init(srv, domain, type, 0, status);
}

static SPF_dns_rr_t *layer_lookup(SPF_dns_server_t *srv, const char *domain, ns_type type, int should_cache)
{
    struct eval *ev = srv->hook;
    if (type == ns_t_spf)
        return answer_rr(srv, domain, type, NO_DATA);
    if (ev->stopped)
        return answer_rr(srv, domain, type, ev->stop_status);

    petrel_dns_type ptype;
    char name[256];
    switch (type) {
    case ns_t_a: ptype = PETREL_DNS_A; break;
    case ns_t_aaaa: ptype = PETREL_DNS_AAAA; break;
    case ns_t_mx: ptype = PETREL_DNS_MX; break;
    case ns_t_txt: ptype = PETREL_DNS_TXT; break;
    case ns_t_ptr: ptype = PETREL_DNS_PTR; break;
    default: return answer_rr(srv, domain, type, NO_DATA);
    }
    if (ptype == PETREL_DNS_PTR) {
        if (address_of_reverse(domain, name, sizeof(name)) != 0)
            return answer_rr(srv, domain, type, HOST_NOT_FOUND);
    } else if (strlen(domain) >= sizeof(name)) {
        return answer_rr(srv, domain, type, HOST_NOT_FOUND);
    } else {
        strcpy(name, domain);
    }
    if (++ev->queries > MAX_QUERIES) {
        stop(ev, SPF_RES_PERMERROR, HOST_NOT_FOUND, "more than ", "150", " DNS queries");
        return answer_rr(srv, domain, type, ev->stop_status);
    }
    if (past(&ev->deadline)) {
        stop(ev, SPF_RES_TEMPERROR, TRY_AGAIN, "DNS lookups took too long (at ", domain, ")");
        return answer_rr(srv, domain, type, ev->stop_status);
    }

    struct spf_dns_answer a;
    spf_bridge_query(ev->bridge, ptype, name, &ev->deadline, &a);
    SPF_dns_rr_t *rr = NULL;
    switch (a.status) {
    case PETREL_DNS_OK:
        if (ptype == PETREL_DNS_MX && a.count > MAX_MX) {
            stop(ev, SPF_RES_PERMERROR, HOST_NOT_FOUND, "more than 10 MX records for ", domain, "");
            rr = answer_rr(srv, domain, type, ev->stop_status);
            break;
        }
        rr = answer_rr(srv, domain, type, NETDB_SUCCESS);
        if (rr == NULL)
            break;
        for (size_t i = 0; i < a.count; i++) {
            const char *v = a.values[i];
            size_t need = ptype == PETREL_DNS_A ? sizeof(struct in_addr)
                        : ptype == PETREL_DNS_AAAA ? sizeof(struct in6_addr) : strlen(v) + 1;
            if (SPF_dns_rr_buf_realloc(rr, rr->num_rr, need) != SPF_E_SUCCESS)
                break;
            int ok = 1;
            if (ptype == PETREL_DNS_A)
                ok = inet_pton(AF_INET, v, &rr->rr[rr->num_rr]->a) == 1;
            else if (ptype == PETREL_DNS_AAAA)
                ok = inet_pton(AF_INET6, v, &rr->rr[rr->num_rr]->aaaa) == 1;
            else
                memcpy(rr->rr[rr->num_rr]->txt, v, need);
            if (ok)
                rr->num_rr++;
        }
        if (rr->num_rr == 0)
            rr->herrno = NO_DATA;
        break;
    case PETREL_DNS_NXDOMAIN:
    case PETREL_DNS_BADNAME:
        rr = answer_rr(srv, domain, type, HOST_NOT_FOUND);
        break;
    case PETREL_DNS_NODATA:
        rr = answer_rr(srv, domain, type, NO_DATA);
        break;
    case PETREL_DNS_TEMPFAIL:
    default:
        if (past(&ev->deadline))
            stop(ev, SPF_RES_TEMPERROR, TRY_AGAIN, "DNS lookups took too long (at ", domain, ")");
        rr = answer_rr(srv, domain, type, TRY_AGAIN);
        break;
    }
    spf_dns_answer_free(&a);
    if (rr && ptype == PETREL_DNS_TXT)
        ev->last_txt = rr->herrno;
    if (rr && (rr->herrno == HOST_NOT_FOUND || rr->herrno == NO_DATA) && !ev->stopped &&
        (ptype == PETREL_DNS_A || ptype == PETREL_DNS_AAAA || ptype == PETREL_DNS_MX) &&
        ++ev->voids > ev->limits->max_void) {
        char limit[16];
        snprintf(limit, sizeof(limit), "%d", ev->limits->max_void);
        stop(ev, SPF_RES_PERMERROR, HOST_NOT_FOUND, "more than ", limit, " void DNS lookups");
    }
    return rr;
}

static void printable_copy(char *dst, size_t size, const char *src)
{
    size_t o = 0;
    for (; src && *src && o + 1 < size; src++)
        dst[o++] = (*src >= 0x20 && *src < 0x7f) ? *src : '?';
    dst[o] = '\0';
}

static enum spf_result result_of(SPF_result_t r)
{
    switch (r) {
    case SPF_RESULT_NEUTRAL: return SPF_RES_NEUTRAL;
    case SPF_RESULT_PASS: return SPF_RES_PASS;
    case SPF_RESULT_FAIL: return SPF_RES_FAIL;
    case SPF_RESULT_SOFTFAIL: return SPF_RES_SOFTFAIL;
    case SPF_RESULT_NONE: return SPF_RES_NONE;
    case SPF_RESULT_TEMPERROR: return SPF_RES_TEMPERROR;
    case SPF_RESULT_PERMERROR:
    case SPF_RESULT_INVALID:
    default: return SPF_RES_PERMERROR;
    }
}

static void first_error(SPF_response_t *resp, char *out, size_t size)
{
    for (int i = 0; i < SPF_response_messages(resp); i++) {
        SPF_error_t *e = SPF_response_message(resp, i);
        if (e && SPF_error_errorp(e)) {
            printable_copy(out, size, SPF_error_message(e));
            return;
        }
    }
    if (SPF_response_errcode(resp) != SPF_E_SUCCESS)
        printable_copy(out, size, SPF_strerror(SPF_response_errcode(resp)));
}

void spf_check_host(struct spf_bridge *b, const struct spf_limits *limits, const char *client_addr,
                    const char *helo, const char *sender, int helo_identity, struct spf_outcome *out)
{
    memset(out, 0, sizeof(*out));
    out->result = SPF_RES_PERMERROR;
    struct eval ev;
    memset(&ev, 0, sizeof(ev));
    ev.bridge = b;
    ev.limits = limits;
    clock_gettime(CLOCK_MONOTONIC, &ev.deadline);
    ev.deadline.tv_sec += limits->timeout_ms / 1000;
    ev.deadline.tv_nsec += (long)(limits->timeout_ms % 1000) * 1000000L;
    if (ev.deadline.tv_nsec >= 1000000000L) {
        ev.deadline.tv_sec++;
        ev.deadline.tv_nsec -= 1000000000L;
    }

    SPF_dns_server_t dns;
    memset(&dns, 0, sizeof(dns));
    dns.destroy = NULL;            /* ours: SPF_server_free leaves it alone */
    dns.lookup = layer_lookup;
    dns.name = "petrel";
    dns.hook = &ev;

    SPF_server_t *server = SPF_server_new_dns(&dns, 0);
    SPF_request_t *req = server ? SPF_request_new(server) : NULL;
    SPF_response_t *resp = req ? SPF_response_new(req) : NULL;
    if (resp == NULL) {
        out->result = SPF_RES_TEMPERROR;
        snprintf(out->problem, sizeof(out->problem), "out of memory");
        goto done;
    }
    SPF_server_set_max_dns_mech(server, limits->max_dns_terms);
    SPF_server_set_max_dns_mx(server, MAX_MX);
    SPF_server_set_max_dns_ptr(server, 10);

    struct in_addr v4;
    struct in6_addr v6;
    if (inet_pton(AF_INET, client_addr, &v4) == 1) {
        SPF_request_set_ipv4(req, v4);
    } else if (inet_pton(AF_INET6, client_addr, &v6) == 1) {
        if (IN6_IS_ADDR_V4MAPPED(&v6)) {
            memcpy(&v4, &v6.s6_addr[12], 4);
            SPF_request_set_ipv4(req, v4);
        } else {
            SPF_request_set_ipv6(req, v6);
        }
    } else {
        snprintf(out->problem, sizeof(out->problem), "client address is not an IP address");
        goto done;
    }
    if (helo && *helo)
        SPF_request_set_helo_dom(req, helo);
    /* "x@domain" stays; a bare domain (the HELO identity) becomes
     * postmaster@domain inside libspf2. */
    if (SPF_request_set_env_from(req, sender) != 0 || req->env_from_dp == NULL || req->env_from_dp[0] == '\0') {
        snprintf(out->problem, sizeof(out->problem), "no domain to check");
        out->result = SPF_RES_NONE;
        goto done;
    }
    (void)helo_identity;
    req->cur_dom = req->env_from_dp;
    printable_copy(out->domain, sizeof(out->domain), req->env_from_dp);

    SPF_record_t *record = NULL;
    SPF_errcode_t err = SPF_server_get_record(server, req, resp, &record);
    if (err != SPF_E_SUCCESS) {
        if (record)
            SPF_record_free(record);
        /* libspf2 1.2.10 (Debian 12) leaves the result unset when the record
         * lookup failed (fixed upstream in 2012, never released): a
         * temporary DNS failure is temperror, anything else unset is a
         * record that does not compile, a permerror. */
        if (resp->result != SPF_RESULT_INVALID)
            out->result = result_of(resp->result);
        else if (err == SPF_E_DNS_ERROR && ev.last_txt == TRY_AGAIN)
            out->result = SPF_RES_TEMPERROR;
        else
            out->result = SPF_RES_PERMERROR;
        if (out->result != SPF_RES_NONE)
            first_error(resp, out->problem, sizeof(out->problem));
    } else {
        resp->spf_record_exp = record;
        SPF_record_interpret(record, req, resp, 0);
        SPF_record_free(record);
        resp->spf_record_exp = NULL;
        out->result = result_of(SPF_response_result(resp));
        if (out->result == SPF_RES_PERMERROR || out->result == SPF_RES_TEMPERROR)
            first_error(resp, out->problem, sizeof(out->problem));
    }
    if (ev.stopped) {
        out->result = ev.forced;
        printable_copy(out->problem, sizeof(out->problem), ev.problem);
    }
done:
    out->queries = ev.queries;
    if (resp)
        SPF_response_free(resp);
    if (req)
        SPF_request_free(req);
    if (server)
        SPF_server_free(server);
}
