/*
 * saslmod: a SASL server back-end (petrel_sasl_server, ABI 1.1) that does
 * with its request handles what a careless or merely slow back-end does,
 * so that test_sasl_handles.py can show the core logs and ignores it.
 * It offers PLAIN; the login in the initial response says what to do:
 *
 *   ok       answers SUCCESS inside start()
 *   twice    answers SUCCESS, then FAILURE, both inside start()
 *   late     keeps the handle; a timer answers SUCCESS after
 *            saslmod_delay ms (past saslmod_hook_timeout)
 *   anything else: FAILURE
 *
 * start() and end() log "saslmod: start N" and "saslmod: end N" (N counts
 * the exchanges of this process), so the test can see that end() comes
 * once per start().
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <petrel/plugin.h>

static const petrel_param params[] = {
    { PETREL_PARAM_INIT, .name = "saslmod_delay", .type = PETREL_PARAM_INT, .default_value = "1500",
      .help = "milliseconds before a late answer" },
    { .name = NULL },
};

static unsigned exchanges;

static void answer(petrel_sasl_request *r, petrel_sasl_status st, const char *user)
{
    petrel_sasl_answer a = { PETREL_SASL_ANSWER_INIT, st, NULL, 0, user, NULL };
    petrel_sasl_reply(r, &a);
}

static void mechanisms(petrel_sasl_request *r, const petrel_sasl_context *c)
{
    (void)c;
    static const petrel_sasl_mechanism m[] = { { "PLAIN", PETREL_SASL_PLAINTEXT } };
    petrel_sasl_offer(r, m, 1);
}

static void late_answer(void *arg)
{
    /* The request timed out long ago: the core must log and ignore this. */
    answer(arg, PETREL_SASL_SUCCESS, "late");
}

static void start(petrel_sasl_request *r, const petrel_sasl_context *c, const char *mech,
                  const unsigned char *initial, size_t len, void **state)
{
    unsigned *n = malloc(sizeof(*n));
    if (n == NULL)
        abort();
    *n = ++exchanges;
    *state = n;
    petrel_log(c->session, PETREL_LOG_INFO, "saslmod: start %u %s", *n, mech);
    char user[64] = "";
    if (initial && len > 1) {
        const unsigned char *u = memchr(initial, '\0', len);
        if (u) {
            size_t rest = len - (size_t)(u + 1 - initial);
            const unsigned char *end = memchr(u + 1, '\0', rest);
            size_t ulen = end ? (size_t)(end - (u + 1)) : rest;
            if (ulen < sizeof(user)) {
                memcpy(user, u + 1, ulen);
                user[ulen] = '\0';
            }
        }
    }
    if (strcmp(user, "ok") == 0) {
        answer(r, PETREL_SASL_SUCCESS, user);
    } else if (strcmp(user, "twice") == 0) {
        answer(r, PETREL_SASL_SUCCESS, user);
        answer(r, PETREL_SASL_FAILURE, user);
    } else if (strcmp(user, "late") == 0) {
        petrel_module *m = petrel_sasl_request_module(r);
        petrel_timer_start(m, (unsigned)petrel_param_int(m, "saslmod_delay"), late_answer, r);
    } else {
        answer(r, PETREL_SASL_FAILURE, user);
    }
}

static void step(petrel_sasl_request *r, const petrel_sasl_context *c, void *state, const unsigned char *resp,
                 size_t len)
{
    (void)c;
    (void)state;
    (void)resp;
    (void)len;
    answer(r, PETREL_SASL_FAILURE, NULL);
}

static void end(const petrel_sasl_context *c, void *state)
{
    unsigned *n = state;
    petrel_log(c->session, PETREL_LOG_INFO, "saslmod: end %u", n ? *n : 0);
    free(n);
}

static const petrel_sasl_server servers[] = {
    { PETREL_SASL_SERVER_INIT, .name = "saslmod", .mechanisms = mechanisms, .start = start, .step = step,
      .end = end },
    { .name = NULL },
};

const petrel_module_desc petrel_module_descriptor = {
    PETREL_MODULE_INIT,
    .name = "saslmod",
    .version = "1.0",
    .description = "test: a SASL server back-end that answers twice and late",
    .params = params,
    .sasl_servers = servers,
};
