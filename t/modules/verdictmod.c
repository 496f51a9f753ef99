/*
 * verdictmod: a module restriction that answers what its argument says, to
 * test the ABI 1.1 restriction verdicts DEFER_IF_REJECT and DEFER_IF_PERMIT
 * and optional restriction arguments (max_args).
 *
 *   check_verdict VERDICT [CODE]
 *
 * VERDICT: dunno, ok, reject, defer_if_reject, defer_if_permit, or
 * later_defer_if_permit (suspends; a timer resumes with DEFER_IF_PERMIT).
 * CODE (optional) is the reply code (4xx) given with the verdict. compile
 * logs how many arguments it was given. verdictmod_mail_verdict =
 * defer_if_permit (per service, -o) makes its MAIL hook answer DEFER_IF_PERMIT, which only a
 * restriction may.
 */
#include <stdlib.h>
#include <string.h>

#include <petrel/plugin.h>

static const petrel_param params[] = {
    { PETREL_PARAM_INIT, .name = "verdictmod_mail_verdict", .type = PETREL_PARAM_STRING, .default_value = "dunno",
      .help = "what the MAIL hook answers (dunno or defer_if_permit)", .per_service = 1 },
    { .name = NULL },
};

struct rule {
    char verdict[32];
    int code;
};

static int compile(petrel_module *m, const char *const *args, void **state, petrel_pool *pool, const char **error)
{
    static const char *const known[] = { "dunno", "ok", "reject", "defer_if_reject", "defer_if_permit",
                                         "later_defer_if_permit", "broken", NULL };
    size_t n = 0;
    while (args[n])
        n++;
    int found = 0;
    for (size_t i = 0; known[i]; i++)
        found |= strcmp(args[0], known[i]) == 0;
    if (!found) {
        *error = "unknown verdict";
        return -1;
    }
    struct rule *r = petrel_pool_zalloc(pool, sizeof(*r));
    strncpy(r->verdict, args[0], sizeof(r->verdict) - 1);
    r->code = n > 1 ? atoi(args[1]) : 0;
    petrel_module_log(m, PETREL_LOG_INFO, "check_verdict %s compiled with %zu argument%s", args[0], n,
                      n == 1 ? "" : "s");
    *state = r;
    return 0;
}

static void later(void *arg)
{
    petrel_pending *p = arg;
    petrel_resume(p, PETREL_DEFER_IF_PERMIT, 0, NULL, "verdictmod defers later");
}

static petrel_verdict check(petrel_session *s, void *state)
{
    const struct rule *r = state;
    if (strcmp(r->verdict, "ok") == 0)
        return PETREL_ACCEPT;
    if (strcmp(r->verdict, "reject") == 0) {
        petrel_set_reply(s, 554, "5.7.1", "verdictmod rejects");
        return PETREL_REJECT;
    }
    if (strcmp(r->verdict, "defer_if_reject") == 0) {
        petrel_set_reply(s, r->code, NULL, "verdictmod defers if rejected");
        return PETREL_DEFER_IF_REJECT;
    }
    if (strcmp(r->verdict, "defer_if_permit") == 0) {
        petrel_set_reply(s, r->code, NULL, r->code ? "verdictmod defers if permitted" : NULL);
        return PETREL_DEFER_IF_PERMIT;
    }
    if (strcmp(r->verdict, "broken") == 0) {
        petrel_set_reply(s, 250, NULL, "a refusal cannot say 250");
        return PETREL_REJECT;
    }
    if (strcmp(r->verdict, "later_defer_if_permit") == 0) {
        petrel_pending *p = petrel_suspend(s);
        if (p == NULL || petrel_timer_start(petrel_session_module(s), 100, later, p) == NULL)
            return PETREL_TEMPFAIL;
        return PETREL_PENDING;
    }
    return PETREL_CONTINUE;
}

static petrel_verdict mail(petrel_session *s, const char *sender)
{
    (void)sender;
    const char *v = petrel_service_config_string(petrel_session_module(s), petrel_service_name(s),
                                                 "verdictmod_mail_verdict");
    if (v != NULL && strcmp(v, "defer_if_permit") == 0)
        return PETREL_DEFER_IF_PERMIT;
    return PETREL_CONTINUE;
}

static const petrel_restriction restrictions[] = {
    { PETREL_RESTRICTION_INIT, .name = "check_verdict", .nargs = 1, .max_args = 2, .compile = compile,
      .check = check },
    { .name = NULL },
};

const petrel_module_desc petrel_module_descriptor = {
    PETREL_MODULE_INIT,
    .name = "verdictmod",
    .version = "1.0",
    .description = "restriction verdicts and optional arguments (tests)",
    .params = params,
    .hooks = { .mail = mail },
    .restrictions = restrictions,
};
