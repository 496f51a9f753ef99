/*
 * Fuzz target for what a policy server sends back (core/smtpd/policy_proto.c
 * and core/smtpd/access_action.c): the reply framing (where the reply ends,
 * bounded by POLICY_REPLY_MAX), the reply parser (the first action=), and
 * the access(5) action parser the action then goes through, with its
 * enhanced-status-code handling. Besides crashes and sanitizer reports it
 * checks invariants: a framed reply never exceeds the input or the limit,
 * a parsed action holds no NUL or LF and fits its buffer, a parsed 4NN/5NN
 * code is 400-599, every enhanced code found is valid and the fixed one
 * keeps its shape.
 *
 * make check builds it with t/fuzz/replay_main.c and replays
 * t/fuzz/corpus/policy_reply; `make fuzz FUZZ_TARGETS=policy_reply` runs it
 * with libFuzzer (doc/testing.md).
 */
#include "config.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "smtpd/access_action.h"
#include "smtpd/policy_proto.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check(int cond)
{
    if (!cond)
        abort();
}

static void check_action(const char *value)
{
    struct access_action a;
    access_action_parse(value, &a);
    check(a.word == value && a.word_len <= strlen(value));
    check(a.text >= value && a.text <= value + strlen(value));
    if (a.verb == ACCESS_CODE)
        check(a.code >= 400 && a.code <= 599);
    if (a.verb == ACCESS_REJECT || a.verb == ACCESS_DEFER || a.verb == ACCESS_CODE ||
        a.verb == ACCESS_DEFER_IF_PERMIT || a.verb == ACCESS_DEFER_IF_REJECT) {
        check(access_dsn_valid(a.dsn) == strlen(a.dsn));
        check(a.reason != NULL);
        static const char *const classes[] = { "Client host", "Sender address", "Recipient address", "Helo command" };
        for (size_t i = 0; i < 4; i++) {
            char fixed[12];
            access_dsn_fix(a.dsn, classes[i], fixed);
            check(access_dsn_valid(fixed) == strlen(fixed) && fixed[0] == a.dsn[0]);
        }
    }
    (void)access_is_header(a.text);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *in = (const char *)data;
    ssize_t end = policy_reply_end(in, size);
    check(end <= (ssize_t)size && end <= POLICY_REPLY_MAX);
    if (end < 0)
        check(size >= POLICY_REPLY_MAX);
    if (end > 0) {
        check(in[end - 1] == '\n');
        char action[POLICY_ACTION_MAX];
        const char *why = NULL;
        if (policy_reply_parse(in, (size_t)end, action, sizeof(action), &why) == 0) {
            check(strlen(action) < sizeof(action) && strchr(action, '\n') == NULL);
            check_action(action);
        } else {
            check(why != NULL);
        }
    }
    /* The action parser alone, on the input as one string. */
    char *value = malloc(size + 1);
    if (value == NULL)
        return 0;
    memcpy(value, data, size);
    value[size] = '\0';
    check_action(value);
    free(value);
    return 0;
}
