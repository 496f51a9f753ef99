/*
 * The dmarc module's evaluation component (RFC 7489) with libopendmarc:
 * the policy lookup, alignment (strict or relaxed, through libopendmarc's
 * organizational domains from the Public Suffix List), pct sampling, the
 * Authentication-Results text and opendmarc's history-file record (so that
 * opendmarc-import and opendmarc-reports send aggregate reports).
 *
 * The DNS lookups are the caller's: dmarc_eval_next_query() names the TXT
 * record wanted (_dmarc.FROM, then _dmarc.ORGDOMAIN) and
 * dmarc_eval_answer() takes the answer, so the module can use
 * petrel_dns_lookup on the loop and never block; libopendmarc's own
 * resolver (res_query, /etc/resolv.conf) is never used.
 */
#ifndef PETREL_MODULE_DMARC_EVAL_H
#define PETREL_MODULE_DMARC_EVAL_H

#include <stddef.h>

/* Once per process (libopendmarc keeps its suffix list in globals):
 * psl is the Public Suffix List file, or NULL/"" for none (then the
 * organizational domain is the last two labels). 0, or -1 with err. */
int dmarc_library_init(const char *psl, char *err, size_t errlen);
void dmarc_library_shutdown(void);

struct dmarc_eval;

enum dmarc_dns_status { DMARC_DNS_OK, DMARC_DNS_NOTFOUND, DMARC_DNS_TEMPFAIL };

enum dmarc_disposition { DMARC_DISP_NONE, DMARC_DISP_QUARANTINE, DMARC_DISP_REJECT };

struct dmarc_outcome {
    const char *result;          /* "pass", "fail", "none", "temperror", "permerror" */
    char policy_domain[256];     /* where the record was found */
    char p;                      /* the policy that applies: 'n', 'q', 'r', or 0 (none) */
    int pct;
    int dkim_aligned, spf_aligned;
    enum dmarc_disposition disposition;   /* after pct sampling */
    int sampled_out;             /* pct made the policy one step lighter */
};

/* client_ip: the SMTP client; from_domain: the RFC5322.From domain. */
struct dmarc_eval *dmarc_eval_new(const char *client_ip, const char *from_domain);
void dmarc_eval_free(struct dmarc_eval *e);

/* The TXT name to look up next, or NULL when the policy is known. */
const char *dmarc_eval_next_query(struct dmarc_eval *e);
/* The answer to that lookup: its TXT records (each one string). */
void dmarc_eval_answer(struct dmarc_eval *e, enum dmarc_dns_status status, const char *const *txt, size_t n);

/* The SPF result ("pass", "fail", ... as spf.result) for domain, checked
 * for the MAIL FROM (helo = 0) or HELO identity; and each DKIM result. */
void dmarc_eval_spf(struct dmarc_eval *e, const char *domain, const char *result, int helo);
void dmarc_eval_dkim(struct dmarc_eval *e, const char *domain, const char *selector, const char *result);

/* Decides. random_percent (0-99) is drawn by the caller, so tests can fix
 * it: a reject or quarantine policy applies when random_percent < pct,
 * else the next lighter one does (RFC 7489 6.6.4). */
void dmarc_eval_decide(struct dmarc_eval *e, unsigned random_percent, struct dmarc_outcome *out);

/* "dmarc=fail (p=reject dis=reject) header.from=example.com", as opendmarc
 * writes it (without the authserv-id). */
void dmarc_eval_auth_results(const struct dmarc_eval *e, const struct dmarc_outcome *o, char *buf, size_t size);

/* Appends this message's record to opendmarc's history file (locked).
 * job: the queue ID, reporter: $myhostname, mfrom_domain: the envelope
 * sender's domain. 0, or -1 with err. */
int dmarc_history_append(const char *path, const struct dmarc_eval *e, const struct dmarc_outcome *o,
                         const char *job, const char *reporter, const char *mfrom_domain, long received,
                         char *err, size_t errlen);

#endif
