/*
 * modules/dnsbl: Postfix's DNS allow- and blocklist restrictions
 * (reject_rbl_client, permit_dnswl_client, reject_rhsbl_client,
 * reject_rhsbl_reverse_client, reject_rhsbl_helo, reject_rhsbl_sender,
 * reject_rhsbl_recipient, permit_rhswl_client) with Postfix's replies
 * (default_rbl_reply and its $rbl_* names, maps_rbl_reject_code), and
 * postscreen's weighted score (dnsbl_sites, dnsbl_threshold,
 * dnsbl_whitelist_threshold) as one restriction, check_dnsbl_score.
 *
 * Design:
 * - A session's lookups live in a per-session cache (struct dnsbl_session,
 *   in the session slot): every query is asked once per session, whichever
 *   restrictions need it. The client-address queries of every list the
 *   configuration names start together at connect (in parallel, before the
 *   client even says EHLO), unless the client is in mynetworks; the others
 *   (sender, HELO, recipient, reverse name) start when a restriction first
 *   needs them.
 * - A restriction that needs an answer still in flight suspends. Each time
 *   a lookup completes, the suspended check is evaluated again; evaluation
 *   starts what it still needs (PTR then A for the reverse name, TXT after
 *   a listed A for the reply's $rbl_reason), so chains need no special code.
 * - Every lookup has its own deadline (dnsbl_timeout). A list that does
 *   not answer in time, or answers SERVFAIL, counts as not listed and is
 *   logged, as Postfix does ("a failed lookup counts as not listed").
 * - DNS callbacks can come after the session has ended: the cache is
 *   malloc'd and reference-counted by the lookups in flight, and the
 *   session's pool cleanup only marks it gone.
 * - Across sessions, answers are kept for their DNS TTL (petrel_dns_answer_ttl,
 *   capped at 1 h) in a per-process cache (dnsbl_cache.c): a session's
 *   lookup that finds a fresh answer there is answered at once, without a
 *   query. Failures and timeouts are never kept.
 * - rbl_reply_maps (per service, as Postfix reads it) is opened with
 *   petrel_table_open in init, each table once per process whichever
 *   services name it, and checked with petrel_table_check under
 *   petreld -n. Its lookups, local table or remote, answer on the loop:
 *   they join the session's lookup cache (struct reply_lookup) and a
 *   listed client's check waits for them as it waits for DNS. Postfix's
 *   search: the restriction's argument as written (with its =filter), then
 *   the bare domain, each through every table of the list in order; a
 *   table that fails answers 451 4.3.5, as Postfix's reject_server_error.
 *
 * Files: this one is the module (parameters, restrictions, hooks);
 * dnsbl_config.c reads the settings, dnsbl_lookup.c keeps a session's
 * lookups, dnsbl_evaluate.c decides a rule and words its reply
 * (dnsbl_module.h declares what they share); dnsbl_util.c holds the pure
 * parsers (dnsbl.h, fuzzed alone), dnsbl_cache.c the answer cache.
 */
#include <stdlib.h>
#include <string.h>

#include <petrel/plugin.h>

#include "dnsbl_module.h"

static const petrel_param dnsbl_params[] = {
    { PETREL_PARAM_INIT, .name = "dnsbl_sites", .type = PETREL_PARAM_LIST, .default_value = "",
      .help = "postscreen-style weighted lists for check_dnsbl_score: domain[=filter][*weight], ..." },
    { PETREL_PARAM_INIT, .name = "dnsbl_threshold", .type = PETREL_PARAM_INT, .default_value = "1",
      .help = "check_dnsbl_score rejects a client whose score reaches this", .per_service = 1 },
    { PETREL_PARAM_INIT, .name = "dnsbl_whitelist_threshold", .type = PETREL_PARAM_INT, .default_value = "0",
      .help = "check_dnsbl_score permits a client whose score is at most this (when negative)", .per_service = 1 },
    { PETREL_PARAM_INIT, .name = "dnsbl_allowlist_threshold", .type = PETREL_PARAM_INT,
      .default_value = "$dnsbl_whitelist_threshold",
      .help = "the same, under Postfix 3.6's name", .per_service = 1 },
    { PETREL_PARAM_INIT, .name = "dnsbl_timeout", .type = PETREL_PARAM_TIME, .default_value = "10s",
      .help = "how long one DNS list may take to answer; then it counts as not listed" },
    /* The module's view of Postfix's parameters (set those: these follow them). */
    { PETREL_PARAM_INIT, .name = "dnsbl_reply_template", .type = PETREL_PARAM_STRING,
      .default_value = "$default_rbl_reply",
      .help = "set default_rbl_reply instead", .per_service = 1 },
    { PETREL_PARAM_INIT, .name = "dnsbl_reject_code", .type = PETREL_PARAM_INT,
      .default_value = "$maps_rbl_reject_code",
      .help = "set maps_rbl_reject_code instead", .per_service = 1 },
    { PETREL_PARAM_INIT, .name = "dnsbl_reply_maps", .type = PETREL_PARAM_STRING, .default_value = "$rbl_reply_maps",
      .help = "set rbl_reply_maps instead", .per_service = 1 },
    { .name = NULL },
};

#define COMPILE_FN(fn, kind, name)                                                                        \
    static int fn(petrel_module *m, const char *const *args, void **state, petrel_pool *pool,              \
                  const char **error)                                                                     \
    {                                                                                                     \
        return dnsbl_compile_rule(m, kind, name, args, state, pool, error);                               \
    }
COMPILE_FN(compile_rbl_client, RBL_CLIENT, "reject_rbl_client")
COMPILE_FN(compile_dnswl_client, DNSWL_CLIENT, "permit_dnswl_client")
COMPILE_FN(compile_rhsbl_client, RHSBL_CLIENT, "reject_rhsbl_client")
COMPILE_FN(compile_rhswl_client, RHSWL_CLIENT, "permit_rhswl_client")
COMPILE_FN(compile_rhsbl_reverse, RHSBL_REVERSE_CLIENT, "reject_rhsbl_reverse_client")
COMPILE_FN(compile_rhsbl_helo, RHSBL_HELO, "reject_rhsbl_helo")
COMPILE_FN(compile_rhsbl_sender, RHSBL_SENDER, "reject_rhsbl_sender")
COMPILE_FN(compile_rhsbl_recipient, RHSBL_RECIPIENT, "reject_rhsbl_recipient")
COMPILE_FN(compile_score, DNSBL_SCORE, "check_dnsbl_score")

static char *dup_or_null(const char *s)
{
    return s ? strdup(s) : NULL;
}

static petrel_verdict dnsbl_check(petrel_session *s, void *state)
{
    const struct rule *r = state;
    petrel_module *m = petrel_session_module(s);
    struct dnsbl_session *ds = dnsbl_session_state(s, m);
    if (ds == NULL || ds->conf == NULL)
        return PETREL_CONTINUE;
    struct dnsbl_reply_facts facts = {
        .client_address = petrel_client_addr(s),
        .client_name = petrel_client_name(s),
        .reverse_client_name = petrel_client_name(s),
        .helo_name = petrel_helo(s),
        .sender = petrel_sender(s),
        .recipient = petrel_recipient(s),
    };
    petrel_pool *scratch = petrel_pool_create(1024);
    struct verdict v;
    enum outcome o = dnsbl_evaluate(ds, r, &facts, scratch, &v);
    if (o != NOT_READY) {
        if (v.v == PETREL_REJECT || v.v == PETREL_TEMPFAIL)
            petrel_set_reply(s, v.code, v.enhanced, v.text);
        petrel_pool_destroy(scratch);
        return v.v;
    }
    petrel_pool_destroy(scratch);
    struct waiter *w = calloc(1, sizeof(*w));
    if (w == NULL)
        return PETREL_CONTINUE;
    w->rule = r;
    w->facts.client_address = dup_or_null(facts.client_address);
    w->facts.client_name = dup_or_null(facts.client_name);
    w->facts.reverse_client_name = w->facts.client_name;
    w->facts.helo_name = dup_or_null(facts.helo_name);
    w->facts.sender = dup_or_null(facts.sender);
    w->facts.recipient = dup_or_null(facts.recipient);
    w->pending = petrel_suspend(s);
    if (w->pending == NULL) {
        dnsbl_free_waiter(w);
        return PETREL_CONTINUE;
    }
    w->next = ds->waiters;
    ds->waiters = w;
    return PETREL_PENDING;
}

/* Connect: start every client-address query of the configuration at once. */
static petrel_verdict dnsbl_connect(petrel_session *s)
{
    petrel_module *m = petrel_session_module(s);
    struct dnsbl_conf *conf = petrel_module_data(m);
    if (conf == NULL || conf->nclient_zones == 0 || petrel_in_mynetworks(s))
        return PETREL_CONTINUE;
    struct dnsbl_session *ds = dnsbl_session_state(s, m);
    if (ds == NULL)
        return PETREL_CONTINUE;
    petrel_pool *scratch = petrel_pool_create(1024);
    for (size_t i = 0; i < conf->nclient_zones; i++) {
        char *query = dnsbl_address_query(petrel_client_addr(s), conf->client_zones[i], scratch);
        if (query)
            dnsbl_lookup_get(ds, PETREL_DNS_A, query);
    }
    petrel_pool_destroy(scratch);
    return PETREL_CONTINUE;
}

static const petrel_restriction dnsbl_restrictions[] = {
    { PETREL_RESTRICTION_INIT, .name = "reject_rbl_client", .nargs = 1,
      .compile = compile_rbl_client, .check = dnsbl_check },
    { PETREL_RESTRICTION_INIT, .name = "permit_dnswl_client", .nargs = 1,
      .compile = compile_dnswl_client, .check = dnsbl_check },
    { PETREL_RESTRICTION_INIT, .name = "reject_rhsbl_client", .nargs = 1,
      .compile = compile_rhsbl_client, .check = dnsbl_check },
    { PETREL_RESTRICTION_INIT, .name = "permit_rhswl_client", .nargs = 1,
      .compile = compile_rhswl_client, .check = dnsbl_check },
    { PETREL_RESTRICTION_INIT, .name = "reject_rhsbl_reverse_client", .nargs = 1,
      .compile = compile_rhsbl_reverse, .check = dnsbl_check },
    { PETREL_RESTRICTION_INIT, .name = "reject_rhsbl_helo", .nargs = 1,
      .compile = compile_rhsbl_helo, .check = dnsbl_check },
    { PETREL_RESTRICTION_INIT, .name = "reject_rhsbl_sender", .nargs = 1,
      .compile = compile_rhsbl_sender, .check = dnsbl_check },
    { PETREL_RESTRICTION_INIT, .name = "reject_rhsbl_recipient", .nargs = 1,
      .compile = compile_rhsbl_recipient, .check = dnsbl_check },
    { PETREL_RESTRICTION_INIT, .name = "check_dnsbl_score", .nargs = 0,
      .compile = compile_score, .check = dnsbl_check },
    { .name = NULL },
};

const petrel_module_desc petrel_module_descriptor = {
    PETREL_MODULE_INIT,
    .name = "dnsbl",
    .version = "1.0",
    .description = "DNS allow/blocklists: Postfix's reject_rbl_client family and postscreen's weighted score",
    .params = dnsbl_params,
    .init = dnsbl_init,
    .fini = dnsbl_fini,
    .check = dnsbl_check_config,
    .hooks = { .connect = dnsbl_connect },
    .restrictions = dnsbl_restrictions,
    /* A list that does not answer counts as not listed after dnsbl_timeout;
     * the core's own deadline only catches what that misses (a PTR, an A
     * and a TXT lookup in a row). */
    .hook_timeout_ms = 35000,
};
