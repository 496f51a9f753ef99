/*
 * The restriction compiler (see restrict.h): Postfix's names into steps.
 *
 * Every name Postfix documents is either a built-in step (builtins below),
 * a restriction class (smtpd_restriction_classes), a module's restriction,
 * or refused with the reason (unsupported_steps): a list that compiles does
 * what Postfix would do with it. Tables and policy services are opened
 * here, once per listener; restrictions named at run time (by a table or a
 * policy server) are compiled by restrict_compile_runtime() without them,
 * as Postfix wants a restriction class there.
 */
#include "config.h"

#include <ctype.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "config/cfg.h"
#include "lib/dns.h"
#include "lib/xalloc.h"
#include "module/module.h"
#include "smtpd/restrict.h"
#include "smtpd/restrict_int.h"
#include "smtpd/smtpd_int.h"
#include "tables/table.h"

enum arg_kind { ARG_NONE, ARG_TABLE, ARG_NUMBER, ARG_POLICY };

static const struct builtin {
    const char *name;
    enum step_kind kind;
    enum arg_kind arg;
    enum restrict_target target;   /* STEP_CHECK_SERVER */
    int dns_type;                  /* STEP_CHECK_SERVER */
} builtins[] = {
    { "permit", STEP_PERMIT, ARG_NONE, 0, 0 },
    { "reject", STEP_REJECT, ARG_NONE, 0, 0 },
    { "defer", STEP_DEFER, ARG_NONE, 0, 0 },
    { "defer_if_permit", STEP_DEFER_IF_PERMIT, ARG_NONE, 0, 0 },
    { "defer_if_reject", STEP_DEFER_IF_REJECT, ARG_NONE, 0, 0 },
    { "warn_if_reject", STEP_WARN_IF_REJECT, ARG_NONE, 0, 0 },
    { "sleep", STEP_SLEEP, ARG_NUMBER, 0, 0 },
    { "permit_mynetworks", STEP_PERMIT_MYNETWORKS, ARG_NONE, 0, 0 },
    { "permit_inet_interfaces", STEP_PERMIT_INET_INTERFACES, ARG_NONE, 0, 0 },
    { "permit_sasl_authenticated", STEP_PERMIT_SASL, ARG_NONE, 0, 0 },
    { "reject_plaintext_session", STEP_REJECT_PLAINTEXT, ARG_NONE, 0, 0 },
    { "reject_unauth_destination", STEP_REJECT_UNAUTH_DEST, ARG_NONE, 0, 0 },
    { "defer_unauth_destination", STEP_DEFER_UNAUTH_DEST, ARG_NONE, 0, 0 },
    { "permit_auth_destination", STEP_PERMIT_AUTH_DEST, ARG_NONE, 0, 0 },
    { "reject_unauth_pipelining", STEP_REJECT_UNAUTH_PIPELINING, ARG_NONE, 0, 0 },
    { "reject_non_fqdn_sender", STEP_REJECT_NON_FQDN_SENDER, ARG_NONE, 0, 0 },
    { "reject_non_fqdn_recipient", STEP_REJECT_NON_FQDN_RCPT, ARG_NONE, 0, 0 },
    { "reject_non_fqdn_helo_hostname", STEP_REJECT_NON_FQDN_HELO, ARG_NONE, 0, 0 },
    { "reject_non_fqdn_hostname", STEP_REJECT_NON_FQDN_HELO, ARG_NONE, 0, 0 },
    { "reject_invalid_helo_hostname", STEP_REJECT_INVALID_HELO, ARG_NONE, 0, 0 },
    { "reject_invalid_hostname", STEP_REJECT_INVALID_HELO, ARG_NONE, 0, 0 },
    { "reject_unknown_client_hostname", STEP_REJECT_UNKNOWN_CLIENT, ARG_NONE, 0, 0 },
    { "reject_unknown_client", STEP_REJECT_UNKNOWN_CLIENT, ARG_NONE, 0, 0 },
    { "reject_unknown_reverse_client_hostname", STEP_REJECT_UNKNOWN_REVERSE, ARG_NONE, 0, 0 },
    { "reject_unknown_helo_hostname", STEP_REJECT_UNKNOWN_HELO, ARG_NONE, 0, 0 },
    { "reject_unknown_hostname", STEP_REJECT_UNKNOWN_HELO, ARG_NONE, 0, 0 },
    { "reject_unknown_sender_domain", STEP_REJECT_UNKNOWN_SENDER_DOMAIN, ARG_NONE, 0, 0 },
    { "reject_unknown_address", STEP_REJECT_UNKNOWN_SENDER_DOMAIN, ARG_NONE, 0, 0 },
    { "reject_unknown_recipient_domain", STEP_REJECT_UNKNOWN_RCPT_DOMAIN, ARG_NONE, 0, 0 },
    { "reject_multi_recipient_bounce", STEP_REJECT_MULTI_RCPT_BOUNCE, ARG_NONE, 0, 0 },
    { "reject_unlisted_recipient", STEP_REJECT_UNLISTED_RCPT, ARG_NONE, 0, 0 },
    { "check_recipient_maps", STEP_REJECT_UNLISTED_RCPT, ARG_NONE, 0, 0 },   /* its name before Postfix 2.1 */
    { "reject_unlisted_sender", STEP_REJECT_UNLISTED_SENDER, ARG_NONE, 0, 0 },
    { "reject_sender_login_mismatch", STEP_SENDER_LOGIN, ARG_NONE, 0, 0 },
    { "reject_authenticated_sender_login_mismatch", STEP_AUTH_SENDER_LOGIN, ARG_NONE, 0, 0 },
    { "reject_unauthenticated_sender_login_mismatch", STEP_UNAUTH_SENDER_LOGIN, ARG_NONE, 0, 0 },
    { "reject_known_sender_login_mismatch", STEP_KNOWN_SENDER_LOGIN, ARG_NONE, 0, 0 },
    { "check_client_access", STEP_CHECK_CLIENT, ARG_TABLE, 0, 0 },
    { "check_reverse_client_hostname_access", STEP_CHECK_REVERSE_CLIENT, ARG_TABLE, 0, 0 },
    { "check_helo_access", STEP_CHECK_HELO, ARG_TABLE, 0, 0 },
    { "check_sender_access", STEP_CHECK_SENDER, ARG_TABLE, 0, 0 },
    { "check_recipient_access", STEP_CHECK_RCPT, ARG_TABLE, 0, 0 },
    { "check_sasl_access", STEP_CHECK_SASL, ARG_TABLE, 0, 0 },
    { "permit_tls_clientcerts", STEP_PERMIT_TLS_CLIENTCERTS, ARG_NONE, 0, 0 },
    { "permit_tls_all_clientcerts", STEP_PERMIT_TLS_ALL_CLIENTCERTS, ARG_NONE, 0, 0 },
    { "check_ccert_access", STEP_CHECK_CCERT, ARG_TABLE, 0, 0 },
    { "check_etrn_access", STEP_CHECK_ETRN, ARG_TABLE, 0, 0 },
    { "check_client_a_access", STEP_CHECK_SERVER, ARG_TABLE, TARGET_CLIENT, DNS_A },
    { "check_client_mx_access", STEP_CHECK_SERVER, ARG_TABLE, TARGET_CLIENT, DNS_MX },
    { "check_client_ns_access", STEP_CHECK_SERVER, ARG_TABLE, TARGET_CLIENT, DNS_NS },
    { "check_reverse_client_hostname_a_access", STEP_CHECK_SERVER, ARG_TABLE, TARGET_REVERSE_CLIENT, DNS_A },
    { "check_reverse_client_hostname_mx_access", STEP_CHECK_SERVER, ARG_TABLE, TARGET_REVERSE_CLIENT, DNS_MX },
    { "check_reverse_client_hostname_ns_access", STEP_CHECK_SERVER, ARG_TABLE, TARGET_REVERSE_CLIENT, DNS_NS },
    { "check_helo_a_access", STEP_CHECK_SERVER, ARG_TABLE, TARGET_HELO, DNS_A },
    { "check_helo_mx_access", STEP_CHECK_SERVER, ARG_TABLE, TARGET_HELO, DNS_MX },
    { "check_helo_ns_access", STEP_CHECK_SERVER, ARG_TABLE, TARGET_HELO, DNS_NS },
    { "check_sender_a_access", STEP_CHECK_SERVER, ARG_TABLE, TARGET_SENDER, DNS_A },
    { "check_sender_mx_access", STEP_CHECK_SERVER, ARG_TABLE, TARGET_SENDER, DNS_MX },
    { "check_sender_ns_access", STEP_CHECK_SERVER, ARG_TABLE, TARGET_SENDER, DNS_NS },
    { "check_recipient_a_access", STEP_CHECK_SERVER, ARG_TABLE, TARGET_RECIPIENT, DNS_A },
    { "check_recipient_mx_access", STEP_CHECK_SERVER, ARG_TABLE, TARGET_RECIPIENT, DNS_MX },
    { "check_recipient_ns_access", STEP_CHECK_SERVER, ARG_TABLE, TARGET_RECIPIENT, DNS_NS },
    { "check_policy_service", STEP_POLICY, ARG_POLICY, 0, 0 },
};

/* Names Postfix admins use that Petrel does not provide in the core: say
 * precisely why they cannot be used rather than "unknown". A name that a
 * bundled module provides says which module to load. */
#define FROM_MODULE(name) "is provided by module " name ", which is not loaded: add " name " to modules"
#define NOT_SUPPORTED "is not supported by Petrel: "
#define NO_VERIFY NOT_SUPPORTED "address verification (Postfix's verify service and its probes) is not implemented"
static const struct { const char *name; const char *why; } unsupported_steps[] = {
    { "reject_rbl_client", FROM_MODULE("dnsbl") },
    { "permit_dnswl_client", FROM_MODULE("dnsbl") },
    { "reject_rhsbl_sender", FROM_MODULE("dnsbl") },
    { "reject_rhsbl_client", FROM_MODULE("dnsbl") },
    { "reject_rhsbl_reverse_client", FROM_MODULE("dnsbl") },
    { "reject_rhsbl_helo", FROM_MODULE("dnsbl") },
    { "reject_rhsbl_recipient", FROM_MODULE("dnsbl") },
    { "permit_rhswl_client", FROM_MODULE("dnsbl") },
    { "check_dnsbl_score", FROM_MODULE("dnsbl") },
    { "check_greylist", FROM_MODULE("greylist") },
    { "check_rate_limit", FROM_MODULE("ratelimit") },
    { "check_spf", FROM_MODULE("spf") },
    { "reject_rbl", NOT_SUPPORTED "it is the pre-Postfix-2.0 name of reject_rbl_client (module dnsbl): use that name" },
    { "reject_maps_rbl", NOT_SUPPORTED "it is obsolete in Postfix too (maps_rbl_domains): "
                         "use reject_rbl_client (module dnsbl)" },
    { "check_relay_domains", NOT_SUPPORTED "it is obsolete in Postfix too: use permit_auth_destination and "
                             "reject_unauth_destination" },
    { "permit_naked_ip_address", NOT_SUPPORTED "Postfix 3.9 removed it too: use permit_mynetworks or "
                                 "permit_sasl_authenticated" },
    { "permit_mx_backup", NOT_SUPPORTED "it is not implemented: list the domains this host is a backup MX for in "
                          "relay_domains (Postfix recommends the same)" },
    { "reject_unverified_sender", NO_VERIFY },
    { "reject_unverified_recipient", NO_VERIFY },
    { "reject_unknown_forward_client_hostname", NOT_SUPPORTED "Postfix does not implement it either "
                                                "(use reject_unknown_client_hostname)" },
};

__attribute__((format(printf, 1, 2)))
static char *errorf(const char *fmt, ...)
{
    char *e = NULL;
    va_list ap;
    va_start(ap, fmt);
    if (vasprintf(&e, fmt, ap) < 0)
        e = xstrdup("out of memory");
    va_end(ap);
    return e;
}

/* Appends one error (taking it) to *all, "; " between them. */
static void add_error(char **all, char *one)
{
    if (*all == NULL) {
        *all = one;
        return;
    }
    char *joined = errorf("%s; %s", *all, one);
    free(*all);
    free(one);
    *all = joined;
}

static void close_tables(void *arg)
{
    struct restrict_list *list = arg;
    for (int i = 0; i < list->nsteps; i++)
        if (list->steps[i].table)
            tbl_close(list->steps[i].table);
}

static const struct builtin *find_builtin(const char *name)
{
    for (size_t k = 0; k < sizeof(builtins) / sizeof(builtins[0]); k++)
        if (strcasecmp(builtins[k].name, name) == 0)
            return &builtins[k];
    return NULL;
}

static const char *unsupported_reason(const char *name)
{
    for (size_t u = 0; u < sizeof(unsupported_steps) / sizeof(unsupported_steps[0]); u++)
        if (strcasecmp(unsupported_steps[u].name, name) == 0)
            return unsupported_steps[u].why;
    return NULL;
}

static int find_class(const struct restrict_classes *classes, const char *name)
{
    for (int i = 0; classes && i < classes->n; i++)
        if (strcmp(classes->names[i], name) == 0)
            return i;
    return -1;
}

static int all_digits(const char *s)
{
    if (!*s)
        return 0;
    for (; *s; s++)
        if (!isdigit((unsigned char)*s))
            return 0;
    return 1;
}

/* Is word a restriction (the core's, a class or a module's)? Where a
 * module restriction's optional arguments end. */
static int names_restriction(const struct restrict_compiler *c, const char *word)
{
    struct petrel_module *owner;
    return find_builtin(word) != NULL || find_class(c->classes, word) >= 0 ||
           module_set_find_restriction(c->modules, word, &owner) != NULL;
}

/* A bare TYPE:NAME in a list means the stage's access check, as in Postfix
 * (smtpd_client_restrictions: check_client_access, ...). */
static const char *default_acl(const char *param)
{
    if (param == NULL)
        return NULL;
    if (strcmp(param, "smtpd_client_restrictions") == 0)
        return "check_client_access";
    if (strcmp(param, "smtpd_helo_restrictions") == 0)
        return "check_helo_access";
    if (strcmp(param, "smtpd_sender_restrictions") == 0)
        return "check_sender_access";
    if (strcmp(param, "smtpd_recipient_restrictions") == 0 || strcmp(param, "smtpd_relay_restrictions") == 0)
        return "check_recipient_access";
    return NULL;
}

struct restrict_list *restrict_compile(struct restrict_compiler *c, const char *param,
                                       const char *const *items, char **error)
{
    petrel_pool *pool = c->pool;
    int n = 0;
    while (items[n])
        n++;
    struct restrict_list *list = petrel_pool_zalloc(pool, sizeof(*list));
    list->steps = petrel_pool_zalloc(pool, (size_t)(n ? n : 1) * sizeof(*list->steps));
    petrel_pool_cleanup_add(pool, close_tables, list);
    /* Every bad item of the list is reported, not only the first (petreld
     * -n names all that is wrong in one run): errors are collected, joined
     * with "; ", and the list is refused at the end. */
    char *errors = NULL;
    for (int i = 0; i < n; i++) {
        const char *item = items[i];
        const char *table_spec = NULL;
        const struct builtin *b = find_builtin(item);
        if (b == NULL && strchr(item, ':') && default_acl(param)) {
            b = find_builtin(default_acl(param));
            table_spec = item;
        }
        if (b == NULL) {
            int k = find_class(c->classes, item);
            if (k >= 0) {
                struct restrict_step *step = &list->steps[list->nsteps++];
                step->kind = STEP_CLASS;
                step->name = c->classes->names[k];
                step->class_index = k;
                continue;
            }
            struct petrel_module *owner = NULL;
            const petrel_restriction *provided = module_set_find_restriction(c->modules, item, &owner);
            if (provided) {
                struct restrict_step *step = &list->steps[list->nsteps++];
                step->kind = STEP_MODULE;
                step->name = provided->name;
                step->module = owner;
                step->provided = provided;
                int nargs = provided->nargs > 0 ? provided->nargs : 0;
                int missing = 0;
                for (int a = 1; a <= nargs; a++)
                    if (items[i + a] == NULL)
                        missing = 1;
                if (missing) {
                    add_error(&errors, errorf("restriction %s (module %s) needs %d argument%s", item, owner->name,
                                              nargs, nargs == 1 ? "" : "s"));
                    break;   /* the list ends here */
                }
                /* Optional arguments (max_args): words after the required
                 * ones, up to the maximum, until one names a restriction. */
                while ((provided->max_args < 0 || nargs < provided->max_args) && items[i + 1 + nargs] != NULL &&
                       !names_restriction(c, items[i + 1 + nargs]))
                    nargs++;
                const char **args = petrel_pool_zalloc(pool, (size_t)(nargs + 1) * sizeof(*args));
                for (int a = 0; a < nargs; a++)
                    args[a] = items[i + 1 + a];
                if (provided->compile) {
                    const char *cerr = NULL;
                    if (provided->compile(owner, args, &step->state, pool, &cerr) != 0) {
                        add_error(&errors, errorf("restriction %s (module %s): %s", item, owner->name,
                                                  cerr ? cerr : "bad arguments"));
                        i += nargs;
                        continue;
                    }
                }
                i += nargs;
                continue;
            }
            const char *why = unsupported_reason(item);
            if (why)
                add_error(&errors, errorf("restriction %s %s", item, why));
            else if (strchr(item, ':'))
                add_error(&errors, errorf("table %s given without a restriction in front of it "
                                          "(e.g. check_sender_access %s)", item, item));
            else
                add_error(&errors, errorf("unknown restriction \"%s\"", item));
            continue;
        }
        struct restrict_step *step = &list->steps[list->nsteps++];
        step->kind = b->kind;
        step->name = b->name;
        step->target = b->target;
        step->number = b->dns_type;
        if (b->arg == ARG_NONE)
            continue;
        const char *arg = table_spec ? table_spec : items[i + 1];
        if (b->arg == ARG_NUMBER) {
            if (arg == NULL || !all_digits(arg) || strlen(arg) > 6) {
                add_error(&errors, errorf("restriction %s must be followed by a number of seconds", item));
                continue;
            }
            step->number = atoi(arg);
            i++;
            continue;
        }
        if (arg == NULL || strchr(arg, ':') == NULL) {
            add_error(&errors, b->arg == ARG_POLICY
                                   ? errorf("restriction %s must be followed by inet:host:port or unix:/path", item)
                                   : errorf("restriction %s needs a table argument (TYPE:NAME)", item));
            continue;
        }
        if (b->arg == ARG_POLICY) {
            char *perr = NULL;
            step->policy = policy_client_get(c, arg, &perr);
            if (step->policy == NULL) {
                add_error(&errors, errorf("check_policy_service %s: %s", arg, perr ? perr : "bad endpoint"));
                free(perr);
                i++;
                continue;
            }
            i++;
            continue;
        }
        char *terr = NULL;
        step->table = tbl_open(c->tables, arg, TBL_FLAG_FOLD_CASE, &terr);
        if (step->table == NULL) {
            add_error(&errors, errorf("%s: %s", b->name, terr ? terr : "cannot open table"));
            free(terr);
            if (!table_spec)
                i++;
            continue;
        }
        if (!table_spec)
            i++;
    }
    if (errors) {
        *error = errors;
        return NULL;
    }
    return list;
}

int restrict_classes_compile(struct restrict_compiler *c, char **error)
{
    const char *const *names = cfg_list(c->cfg, "smtpd_restriction_classes");
    int n = 0;
    while (names[n])
        n++;
    struct restrict_classes *classes = petrel_pool_zalloc(c->pool, sizeof(*classes));
    classes->names = petrel_pool_zalloc(c->pool, (size_t)(n ? n : 1) * sizeof(*classes->names));
    classes->lists = petrel_pool_zalloc(c->pool, (size_t)(n ? n : 1) * sizeof(*classes->lists));
    for (int i = 0; i < n; i++) {
        if (find_builtin(names[i]) || unsupported_reason(names[i])) {
            *error = errorf("smtpd_restriction_classes: %s is the name of a restriction, not a class name",
                            names[i]);
            return -1;
        }
        classes->names[classes->n++] = petrel_pool_strdup(c->pool, names[i]);
    }
    /* Every name is known before any list is compiled: classes may name
     * each other (a loop is caught at run time, as in Postfix). */
    c->classes = classes;
    for (int i = 0; i < classes->n; i++) {
        const char *value = cfg_get(c->cfg, classes->names[i]);
        if (value == NULL || *value == '\0') {
            *error = errorf("smtpd_restriction_classes: restriction class `%s' needs a definition "
                            "(a parameter %s = restrictions...)", classes->names[i], classes->names[i]);
            return -1;
        }
        /* Class names are the admin's own parameters: not typed as lists. */
        char **split = cfg_split_list(value);
        int count = 0;
        while (split[count])
            count++;
        const char **items = petrel_pool_zalloc(c->pool, (size_t)(count + 1) * sizeof(*items));
        for (int k = 0; k < count; k++)
            items[k] = petrel_pool_strdup(c->pool, split[k]);
        cfg_list_free(split);
        char *err = NULL;
        classes->lists[i] = restrict_compile(c, NULL, items, &err);
        if (classes->lists[i] == NULL) {
            *error = errorf("%s (restriction class): %s", classes->names[i], err);
            free(err);
            return -1;
        }
    }
    return 0;
}

int restrict_list_empty(const struct restrict_list *list)
{
    return list == NULL || list->nsteps == 0;
}

int restrict_list_has(const struct restrict_list *list, const char *name)
{
    for (int i = 0; list && i < list->nsteps; i++)
        if (strcmp(list->steps[i].name, name) == 0)
            return 1;
    return 0;
}

/* Postfix's has_required(): the list (or a class it names) holds a
 * restriction that refuses relaying by default; "permit" ends the search
 * and warn_if_reject makes the next one not count. */
static int guards_relay(const struct restrict_list *list, const struct restrict_classes *classes, int depth)
{
    static const char *const required[] = { "reject_unauth_destination", "defer_unauth_destination", "reject",
                                            "defer", "defer_if_permit", NULL };
    for (int i = 0; list && i < list->nsteps && depth < RESTRICT_MAX_DEPTH; i++) {
        const struct restrict_step *step = &list->steps[i];
        if (step->kind == STEP_WARN_IF_REJECT) {
            i++;
            continue;
        }
        if (step->kind == STEP_PERMIT)
            return 0;
        for (const char *const *r = required; *r; r++)
            if (strcmp(step->name, *r) == 0)
                return 1;
        if (step->kind == STEP_CLASS && guards_relay(classes->lists[step->class_index], classes, depth + 1))
            return 1;
    }
    return 0;
}

int restrict_list_guards_relay(const struct restrict_list *list, const struct restrict_classes *classes)
{
    return guards_relay(list, classes, 0);
}

/* ------------------------------------------------------------------ */
/* compiling at run time: restrictions named by a table or policy server */

struct restrict_list *restrict_compile_runtime(struct smtpd_session *s, const char *value, const char **why)
{
    petrel_pool *pool = smtpd_cmd_pool(s);
    char **items = cfg_split_list(value);
    int n = 0;
    while (items[n])
        n++;
    struct restrict_list *list = petrel_pool_zalloc(pool, sizeof(*list));
    list->steps = petrel_pool_zalloc(pool, (size_t)(n ? n : 1) * sizeof(*list->steps));
    const struct restrict_classes *classes = s->set->classes;
    for (int i = 0; i < n; i++) {
        const char *item = items[i];
        struct restrict_step *step = &list->steps[list->nsteps];
        const struct builtin *b = find_builtin(item);
        int k;
        if (b && b->arg == ARG_NONE) {
            step->kind = b->kind;
            step->name = b->name;
        } else if (b && b->arg == ARG_NUMBER && items[i + 1] && all_digits(items[i + 1]) &&
                   strlen(items[i + 1]) <= 6) {
            step->kind = b->kind;
            step->name = b->name;
            step->number = atoi(items[++i]);
        } else if ((k = find_class(classes, item)) >= 0) {
            step->kind = STEP_CLASS;
            step->name = classes->names[k];
            step->class_index = k;
        } else {
            struct petrel_module *owner = NULL;
            /* Tables and policy services are opened when the
             * configuration is loaded; module restrictions are compiled
             * then too. Postfix asks for a restriction class here. */
            *why = b ? "restrictions with a table or server argument are not allowed here: define a restriction "
                       "class and name it instead"
                     : module_set_find_restriction(s->worker->modules, item, &owner)
                           ? "module restrictions are not allowed here: define a restriction class and name it "
                             "instead"
                           : "unknown smtpd restriction";
            cfg_list_free(items);
            return NULL;
        }
        list->nsteps++;
    }
    cfg_list_free(items);
    return list;
}

