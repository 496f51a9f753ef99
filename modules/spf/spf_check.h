/*
 * One SPF check_host() evaluation (RFC 7208 section 4) with libspf2, run on
 * a worker thread, its DNS served through the module's bridge (spf_dns.h).
 * The caller gives the identity; the result comes back as plain data that
 * the loop side turns into an action, a header and a note.
 */
#ifndef PETREL_MODULE_SPF_CHECK_H
#define PETREL_MODULE_SPF_CHECK_H

#include "spf_dns.h"

enum spf_result {
    SPF_RES_NONE = 0, SPF_RES_NEUTRAL, SPF_RES_PASS, SPF_RES_FAIL, SPF_RES_SOFTFAIL,
    SPF_RES_TEMPERROR, SPF_RES_PERMERROR,
};
#define SPF_RES_COUNT 7

/* "pass", "fail", ... as RFC 7208 section 8 spells them (lower case). */
const char *spf_result_name(enum spf_result r);

struct spf_limits {
    unsigned timeout_ms;   /* for the whole evaluation, every lookup included */
    int max_dns_terms;     /* RFC 7208 4.6.4: 10 terms that query DNS */
    int max_void;          /* RFC 7208 4.6.4: 2 void lookups */
};

struct spf_outcome {
    enum spf_result result;
    char domain[256];      /* whose policy was evaluated */
    char problem[200];     /* why permerror/temperror (printable ASCII), or "" */
    unsigned queries;      /* DNS queries made */
};

/* Evaluates check_host(client_addr, domain of sender, sender). For the HELO
 * identity pass helo_identity = 1 and sender = the HELO name: the sender
 * becomes postmaster@HELO as RFC 7208 section 2.3 says. helo may be NULL.
 * Blocking: call on a worker thread only. */
void spf_check_host(struct spf_bridge *b, const struct spf_limits *limits, const char *client_addr,
                    const char *helo, const char *sender, int helo_identity, struct spf_outcome *out);

/* Sets libspf2's process-wide message handlers once (they print to stdout
 * by default). Call on the loop before the first evaluation. */
void spf_check_library_init(void);

#endif
