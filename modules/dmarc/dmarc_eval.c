/*
 * DMARC evaluation with libopendmarc (dmarc_eval.h).
 *
 * libopendmarc does the parts that must agree with opendmarc: parsing the
 * record, organizational domains (Public Suffix List), alignment and the
 * policy to enforce. We do the DNS ourselves (the caller asks, we say what)
 * in libopendmarc's order: _dmarc.FROM, and when it has no DMARC record,
 * _dmarc.ORGDOMAIN, whose sp= then applies. pct sampling (RFC 7489 6.6.4)
 * is ours too: libopendmarc leaves it to its milter.
 *
 * libopendmarc quirks handled here: strict alignment (adkim=s, aspf=s) is
 * checked by us, because libopendmarc 1.4.2 lets a subdomain align in
 * strict mode; opendmarc_policy_store_dmarc() sets
 * the context's From domain to its domain argument, so it gets the From
 * domain and the organizational domain separately; store_dkim() chooses
 * among signatures with the record's adkim=, so results are stored only
 * after the record is parsed.
 */
#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/file.h>
#include <arpa/inet.h>

#include <opendmarc/dmarc.h>

#include "dmarc_eval.h"

#define MAX_DKIM 16

/* Exported by libopendmarc 1.4 but missing from its dmarc.h: the
 * organizational domain of domain (from the suffix list, else the last
 * two labels) into tld; 0 on success. */
int opendmarc_get_tld(u_char *domain, u_char *tld, size_t tlen);

/* opendmarc's history file writes Authentication-Results result codes
 * (its opendmarc-ar.h): these are their values. */
enum ares { ARES_PASS = 0, ARES_SOFTFAIL = 2, ARES_NEUTRAL = 3, ARES_TEMPERROR = 4, ARES_PERMERROR = 5,
            ARES_NONE = 6, ARES_FAIL = 7 };
/* opendmarc.h's (the milter's, not installed): the action line, and the
 * arc and arc_policy lines of a message without ARC. */
enum history_action { HISTORY_REJECT = 0, HISTORY_ACCEPT = 2, HISTORY_QUARANTINE = 4 };
#define HISTORY_ARC_FAIL ARES_FAIL
#define HISTORY_ARC_POLICY_FAIL 2

struct dkim_result {
    char domain[256];
    char selector[64];
    char result[16];
};

struct dmarc_eval {
    DMARC_POLICY_T *pctx;
    char ip[64];
    char from[256];
    char org[256];
    int stage;              /* 0: _dmarc.FROM, 1: _dmarc.ORG, 2: done */
    char qname[300];
    int found, tempfail, permerror, used_org;
    char policy_domain[256];
    char spf_domain[256], spf_result[16];
    int spf_helo, spf_set;
    struct dkim_result dkim[MAX_DKIM];
    size_t ndkim;
    int decided;
    int policy;             /* DMARC_POLICY_* after decide */
};

static OPENDMARC_LIB_T library;

int dmarc_library_init(const char *psl, char *err, size_t errlen)
{
    memset(&library, 0, sizeof(library));
    if (psl && *psl) {
        if (strlen(psl) >= sizeof(library.tld_source_file)) {
            snprintf(err, errlen, "%s: path too long", psl);
            return -1;
        }
        FILE *f = fopen(psl, "r");
        if (f == NULL) {
            snprintf(err, errlen, "%s: %s", psl, strerror(errno));
            return -1;
        }
        fclose(f);
        library.tld_type = OPENDMARC_TLD_TYPE_MOZILLA;
        strcpy((char *)library.tld_source_file, psl);
    } else {
        library.tld_type = OPENDMARC_TLD_TYPE_NONE;
    }
    if (opendmarc_policy_library_init(&library) != DMARC_PARSE_OKAY) {
        snprintf(err, errlen, "libopendmarc: cannot read the public suffix list %s", psl ? psl : "");
        return -1;
    }
    return 0;
}

void dmarc_library_shutdown(void)
{
    opendmarc_policy_library_shutdown(&library);
}

struct dmarc_eval *dmarc_eval_new(const char *client_ip, const char *from_domain)
{
    struct dmarc_eval *e = calloc(1, sizeof(*e));
    if (e == NULL)
        return NULL;
    snprintf(e->ip, sizeof(e->ip), "%s", client_ip ? client_ip : "");
    snprintf(e->from, sizeof(e->from), "%s", from_domain ? from_domain : "");
    for (char *c = e->from; *c; c++)
        *c = (char)tolower((unsigned char)*c);
    struct in6_addr a6;
    int type = inet_pton(AF_INET6, e->ip, &a6) == 1 ? DMARC_POLICY_IP_TYPE_IPV6 : DMARC_POLICY_IP_TYPE_IPV4;
    e->pctx = opendmarc_policy_connect_init((u_char *)e->ip, type);
    if (e->pctx == NULL) {
        free(e);
        return NULL;
    }
    if (e->from[0] == '\0' || opendmarc_policy_store_from_domain(e->pctx, (u_char *)e->from) != DMARC_PARSE_OKAY)
        e->stage = 2;   /* no usable From domain: nothing to look up */
    return e;
}

void dmarc_eval_free(struct dmarc_eval *e)
{
    if (e == NULL)
        return;
    opendmarc_policy_connect_shutdown(e->pctx);
    free(e);
}

const char *dmarc_eval_next_query(struct dmarc_eval *e)
{
    if (e->stage == 0)
        snprintf(e->qname, sizeof(e->qname), "_dmarc.%s", e->from);
    else if (e->stage == 1)
        snprintf(e->qname, sizeof(e->qname), "_dmarc.%s", e->org);
    else
        return NULL;
    return e->qname;
}

static int is_dmarc_record(const char *txt)
{
    if (strncasecmp(txt, "v=DMARC1", 8) != 0)
        return 0;
    const char *rest = txt + 8;
    while (*rest == ' ' || *rest == '\t')
        rest++;
    return *rest == ';' || *rest == '\0';
}

void dmarc_eval_answer(struct dmarc_eval *e, enum dmarc_dns_status status, const char *const *txt, size_t n)
{
    if (e->stage > 1)
        return;
    if (status == DMARC_DNS_TEMPFAIL) {
        e->tempfail = 1;
        e->stage = 2;
        return;
    }
    const char *record = NULL;
    size_t records = 0;
    for (size_t i = 0; status == DMARC_DNS_OK && i < n; i++)
        if (txt[i] && is_dmarc_record(txt[i])) {
            record = txt[i];
            records++;
        }
    if (records == 1) {
        const char *where = e->stage == 0 ? e->from : e->org;
        int rc = e->stage == 0 ? opendmarc_policy_parse_dmarc(e->pctx, (u_char *)e->from, (u_char *)record)
                               : opendmarc_policy_store_dmarc(e->pctx, (u_char *)record, (u_char *)e->from,
                                                              (u_char *)e->org);
        snprintf(e->policy_domain, sizeof(e->policy_domain), "%s", where);
        e->used_org = e->stage == 1;
        e->stage = 2;
        if (rc == DMARC_PARSE_OKAY)
            e->found = 1;
        else
            e->permerror = 1;
        return;
    }
    /* none, or several (RFC 7489 6.6.3: then there is no policy here) */
    if (e->stage == 0) {
        u_char org[256];
        memset(org, 0, sizeof(org));
        if (opendmarc_get_tld((u_char *)e->from, org, sizeof(org)) == 0 && org[0] &&
            strcasecmp((char *)org, e->from) != 0) {
            snprintf(e->org, sizeof(e->org), "%s", (char *)org);
            e->stage = 1;
            return;
        }
    }
    e->stage = 2;
}

void dmarc_eval_spf(struct dmarc_eval *e, const char *domain, const char *result, int helo)
{
    snprintf(e->spf_domain, sizeof(e->spf_domain), "%s", domain ? domain : "");
    snprintf(e->spf_result, sizeof(e->spf_result), "%s", result ? result : "none");
    e->spf_helo = helo;
    e->spf_set = 1;
}

void dmarc_eval_dkim(struct dmarc_eval *e, const char *domain, const char *selector, const char *result)
{
    if (e->ndkim >= MAX_DKIM || domain == NULL || *domain == '\0')
        return;
    struct dkim_result *d = &e->dkim[e->ndkim++];
    snprintf(d->domain, sizeof(d->domain), "%s", domain);
    snprintf(d->selector, sizeof(d->selector), "%s", selector ? selector : "");
    snprintf(d->result, sizeof(d->result), "%s", result ? result : "none");
}

static int spf_outcome(const char *r)
{
    if (strcmp(r, "pass") == 0)
        return DMARC_POLICY_SPF_OUTCOME_PASS;
    if (strcmp(r, "temperror") == 0)
        return DMARC_POLICY_SPF_OUTCOME_TMPFAIL;
    if (strcmp(r, "fail") == 0 || strcmp(r, "softfail") == 0)
        return DMARC_POLICY_SPF_OUTCOME_FAIL;
    return DMARC_POLICY_SPF_OUTCOME_NONE;
}

static int dkim_outcome(const char *r)
{
    if (strcmp(r, "pass") == 0)
        return DMARC_POLICY_DKIM_OUTCOME_PASS;
    if (strcmp(r, "temperror") == 0)
        return DMARC_POLICY_DKIM_OUTCOME_TMPFAIL;
    if (strcmp(r, "fail") == 0)
        return DMARC_POLICY_DKIM_OUTCOME_FAIL;
    return DMARC_POLICY_DKIM_OUTCOME_NONE;
}

void dmarc_eval_decide(struct dmarc_eval *e, unsigned random_percent, struct dmarc_outcome *out)
{
    memset(out, 0, sizeof(*out));
    snprintf(out->policy_domain, sizeof(out->policy_domain), "%s", e->policy_domain);
    out->pct = 100;
    out->disposition = DMARC_DISP_NONE;
    e->decided = 1;
    e->policy = DMARC_POLICY_ABSENT;
    if (e->tempfail) {
        out->result = "temperror";
        return;
    }
    if (e->permerror) {
        out->result = "permerror";
        return;
    }
    if (!e->found) {
        out->result = "none";
        return;
    }
    if (e->spf_set && e->spf_domain[0])
        opendmarc_policy_store_spf(e->pctx, (u_char *)e->spf_domain, spf_outcome(e->spf_result),
                                   e->spf_helo ? DMARC_POLICY_SPF_ORIGIN_HELO : DMARC_POLICY_SPF_ORIGIN_MAILFROM,
                                   NULL);
    for (size_t i = 0; i < e->ndkim; i++)
        opendmarc_policy_store_dkim(e->pctx, (u_char *)e->dkim[i].domain, (u_char *)e->dkim[i].selector,
                                    dkim_outcome(e->dkim[i].result), NULL);
    e->policy = opendmarc_get_policy_to_enforce(e->pctx);
    int align_dkim = 0, align_spf = 0, p = 0, sp = 0, pct = 100;
    opendmarc_policy_fetch_alignment(e->pctx, &align_dkim, &align_spf);
    opendmarc_policy_fetch_p(e->pctx, &p);
    opendmarc_policy_fetch_sp(e->pctx, &sp);
    opendmarc_policy_fetch_pct(e->pctx, &pct);
    out->dkim_aligned = align_dkim == DMARC_POLICY_DKIM_ALIGNMENT_PASS;
    out->spf_aligned = align_spf == DMARC_POLICY_SPF_ALIGNMENT_PASS;
    out->pct = pct;
    out->p = (char)(e->used_org && sp != DMARC_RECORD_P_UNSPECIFIED ? sp : p);
    /* libopendmarc 1.4.2 aligns a subdomain of the From domain even in
     * strict mode (its check falls back to organizational domains whatever
     * the mode): strict alignment is an exact match, checked here. */
    int adkim = 0, aspf = 0;
    opendmarc_policy_fetch_adkim(e->pctx, &adkim);
    opendmarc_policy_fetch_aspf(e->pctx, &aspf);
    if (aspf == DMARC_RECORD_A_STRICT)
        out->spf_aligned = e->spf_set && strcmp(e->spf_result, "pass") == 0 && strcasecmp(e->spf_domain, e->from) == 0;
    if (adkim == DMARC_RECORD_A_STRICT) {
        out->dkim_aligned = 0;
        for (size_t i = 0; i < e->ndkim; i++)
            if (strcmp(e->dkim[i].result, "pass") == 0 && strcasecmp(e->dkim[i].domain, e->from) == 0)
                out->dkim_aligned = 1;
    }
    if (out->dkim_aligned || out->spf_aligned)
        e->policy = DMARC_POLICY_PASS;
    else if (e->policy == DMARC_POLICY_PASS)
        e->policy = out->p == DMARC_RECORD_P_REJECT ? DMARC_POLICY_REJECT
                  : out->p == DMARC_RECORD_P_QUARANTINE ? DMARC_POLICY_QUARANTINE : DMARC_POLICY_NONE;
    switch (e->policy) {
    case DMARC_POLICY_PASS:
        out->result = "pass";
        return;
    case DMARC_POLICY_REJECT:
    case DMARC_POLICY_QUARANTINE:
        out->result = "fail";
        out->disposition = e->policy == DMARC_POLICY_REJECT ? DMARC_DISP_REJECT : DMARC_DISP_QUARANTINE;
        if ((int)random_percent >= pct) {
            /* not in the sample: the next lighter policy (RFC 7489 6.6.4) */
            out->disposition = out->disposition == DMARC_DISP_REJECT ? DMARC_DISP_QUARANTINE : DMARC_DISP_NONE;
            out->sampled_out = 1;
        }
        return;
    case DMARC_POLICY_NONE:
        out->result = "fail";
        return;
    default:
        out->result = "none";
        return;
    }
}

void dmarc_eval_auth_results(const struct dmarc_eval *e, const struct dmarc_outcome *o, char *buf, size_t size)
{
    const char *policy = o->p == DMARC_RECORD_P_REJECT ? "reject" : o->p == DMARC_RECORD_P_QUARANTINE ? "quarantine"
                       : "none";
    const char *dis = o->disposition == DMARC_DISP_REJECT ? "reject"
                    : o->disposition == DMARC_DISP_QUARANTINE ? "quarantine" : "none";
    snprintf(buf, size, "dmarc=%s (p=%s dis=%s) header.from=%s", o->result, policy, dis,
             e->from[0] ? e->from : "unknown");
}

static int ares_of(const char *r)
{
    static const struct { const char *name; int code; } map[] = {
        { "pass", ARES_PASS }, { "softfail", ARES_SOFTFAIL }, { "neutral", ARES_NEUTRAL },
        { "temperror", ARES_TEMPERROR }, { "permerror", ARES_PERMERROR }, { "none", ARES_NONE },
        { "fail", ARES_FAIL },
    };
    for (size_t i = 0; i < sizeof(map) / sizeof(map[0]); i++)
        if (strcmp(r, map[i].name) == 0)
            return map[i].code;
    return ARES_NONE;
}

/* The field order and numbers of opendmarc 1.4's history records
 * (opendmarc/opendmarc.c, read by opendmarc-import). */
int dmarc_history_append(const char *path, const struct dmarc_eval *e, const struct dmarc_outcome *o,
                         const char *job, const char *reporter, const char *mfrom_domain, long received,
                         char *err, size_t errlen)
{
    char rec[8192];
    size_t n = 0;
#define HISTORY_ADD(...) do { if (n < sizeof(rec)) n += (size_t)snprintf(rec + n, sizeof(rec) - n, __VA_ARGS__); } while (0)
    HISTORY_ADD("job %s\n", job);
    HISTORY_ADD("reporter %s\n", reporter);
    HISTORY_ADD("received %ld\n", received);
    HISTORY_ADD("ipaddr %s\n", e->ip);
    HISTORY_ADD("from %s\n", e->from);
    HISTORY_ADD("mfrom %s\n", mfrom_domain && *mfrom_domain ? mfrom_domain : e->from);
    for (size_t i = 0; i < e->ndkim; i++)
        HISTORY_ADD("dkim %s %s %d\n", e->dkim[i].domain, e->dkim[i].selector[0] ? e->dkim[i].selector : "-",
            ares_of(e->dkim[i].result));
    HISTORY_ADD("spf %d\n", e->spf_set ? ares_of(e->spf_result) : -1);
    HISTORY_ADD("pdomain %s\n", e->policy_domain[0] ? e->policy_domain : e->from);
    HISTORY_ADD("policy %d\n", e->found ? e->policy : DMARC_POLICY_ABSENT);
    u_char **rua = e->found ? opendmarc_policy_fetch_rua(e->pctx, NULL, 0, 1) : NULL;
    if (rua && rua[0]) {
        for (size_t i = 0; rua[i]; i++)
            HISTORY_ADD("rua %s\n", (char *)rua[i]);
    } else {
        HISTORY_ADD("rua -\n");
    }
    int v = 0;
    opendmarc_policy_fetch_pct(e->pctx, &v);
    HISTORY_ADD("pct %d\n", v);
    opendmarc_policy_fetch_adkim(e->pctx, &v);
    HISTORY_ADD("adkim %d\n", v);
    opendmarc_policy_fetch_aspf(e->pctx, &v);
    HISTORY_ADD("aspf %d\n", v);
    opendmarc_policy_fetch_p(e->pctx, &v);
    HISTORY_ADD("p %d\n", v);
    opendmarc_policy_fetch_sp(e->pctx, &v);
    HISTORY_ADD("sp %d\n", v);
    HISTORY_ADD("align_dkim %d\n", o->dkim_aligned ? DMARC_POLICY_DKIM_ALIGNMENT_PASS : DMARC_POLICY_DKIM_ALIGNMENT_FAIL);
    HISTORY_ADD("align_spf %d\n", o->spf_aligned ? DMARC_POLICY_SPF_ALIGNMENT_PASS : DMARC_POLICY_SPF_ALIGNMENT_FAIL);
    HISTORY_ADD("arc %d\n", HISTORY_ARC_FAIL);
    HISTORY_ADD("arc_policy %d json:[]\n", HISTORY_ARC_POLICY_FAIL);
    HISTORY_ADD("action %d\n", o->disposition == DMARC_DISP_REJECT ? HISTORY_REJECT
                     : o->disposition == DMARC_DISP_QUARANTINE ? HISTORY_QUARANTINE : HISTORY_ACCEPT);
#undef HISTORY_ADD
    if (n >= sizeof(rec)) {
        snprintf(err, errlen, "history record too long");
        return -1;
    }
    /* values from the network (rua URIs, selectors) must not break lines */
    for (size_t i = 0; i < n; i++)
        if ((rec[i] < 0x20 && rec[i] != '\n') || rec[i] == 0x7f)
            rec[i] = '?';
    FILE *f = fopen(path, "a");
    if (f == NULL) {
        snprintf(err, errlen, "%s: %s", path, strerror(errno));
        return -1;
    }
    flock(fileno(f), LOCK_EX);   /* opendmarc locks the same way */
    size_t w = fwrite(rec, 1, n, f);
    int bad = w != n || fflush(f) != 0;
    fclose(f);
    if (bad) {
        snprintf(err, errlen, "%s: write failed", path);
        return -1;
    }
    return 0;
}
