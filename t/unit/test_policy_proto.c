/*
 * Unit tests for the policy protocol's bytes (core/smtpd/policy_proto.c)
 * and the access(5) action parser (core/smtpd/access_action.c) that table
 * results and policy replies share: request escaping, reply framing and
 * its bound, Postfix's reply parsing rules, every action word, 4NN/5NN
 * with and without text, enhanced codes and smtpd_dsn_fix, headers for
 * PREPEND.
 */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lib/buf.h"
#include "smtpd/access_action.h"
#include "smtpd/policy_proto.h"
#include "../tap.h"

static const char *parse(const char *reply, char *action, size_t size)
{
    const char *why = NULL;
    ssize_t end = policy_reply_end(reply, strlen(reply));
    if (end <= 0)
        return end == 0 ? "(incomplete)" : "(too long)";
    if (policy_reply_parse(reply, (size_t)end, action, size, &why) != 0)
        return why;
    return NULL;
}

static void test_request(void)
{
    struct buf b = BUF_INIT;
    policy_request_attr(&b, "helo_name", "a\nb\rc\x01" "d");
    policy_request_attr(&b, "sender", NULL);
    policy_request_attr_number(&b, "size", 12345);
    policy_request_end(&b);
    buf_putc(&b, '\0');
    is_str(b.data, "helo_name=a?b?c?d\nsender=\nsize=12345\n\n",
           "a value cannot end its line or the request: control bytes become '?'");
    buf_free(&b);
}

static void test_framing(void)
{
    ok(policy_reply_end("action=OK\n", 10) == 0, "no empty line yet: more input needed");
    ok(policy_reply_end("action=OK\n\nmore", 15) == 11, "the reply ends at the empty line");
    ok(policy_reply_end("\n", 1) == 1, "an empty reply is one empty line");
    char *big = malloc(POLICY_REPLY_MAX + 10);
    memset(big, 'x', POLICY_REPLY_MAX + 10);
    ok(policy_reply_end(big, POLICY_REPLY_MAX + 10) == -1, "past POLICY_REPLY_MAX without an end: refused");
    ok(policy_reply_end(big, POLICY_REPLY_MAX - 1) == 0, "just below the limit: still waiting");
    big[POLICY_REPLY_MAX - 2] = '\n';
    big[POLICY_REPLY_MAX - 1] = '\n';
    ok(policy_reply_end(big, POLICY_REPLY_MAX + 10) == POLICY_REPLY_MAX, "an end inside the limit is found");
    free(big);
}

static void test_parse(void)
{
    char action[64];
    ok(parse("action=DUNNO\n\n", action, sizeof(action)) == NULL && strcmp(action, "DUNNO") == 0, "action=DUNNO");
    ok(parse("foo=bar\naction=REJECT go\naction=OK\n\n", action, sizeof(action)) == NULL &&
           strcmp(action, "REJECT go") == 0,
       "other attributes are skipped; the first action counts (Postfix)");
    is_str(parse("foo=bar\n\n", action, sizeof(action)), "missing attribute action", "no action: refused");
    is_str(parse("\n", action, sizeof(action)), "missing attribute action", "an empty reply: refused");
    is_str(parse("action\n\n", action, sizeof(action)), "missing value for string attribute action",
           "action without '=': refused");
    ok(parse("action=DUNNO\r\n\n", action, sizeof(action)) == NULL && strcmp(action, "DUNNO\r") == 0,
       "a CR before LF is part of the value, as in Postfix");
    is_str(parse("action=" "0123456789012345678901234567890123456789012345678901234567890123456789\n\n", action,
                 sizeof(action)),
           "action too long", "an action longer than its buffer: refused");
    const char nul[] = "action=OK\0X\n\n";
    const char *why = NULL;
    ok(policy_reply_parse(nul, sizeof(nul) - 1, action, sizeof(action), &why) != 0 &&
           strcmp(why, "NUL byte in the action") == 0,
       "a NUL byte in the action: refused");
    ok(parse("actions=OK\naction2=REJECT\n\n", action, sizeof(action)) != NULL, "names are matched exactly");
}

static enum access_verb verb(const char *value)
{
    struct access_action a;
    access_action_parse(value, &a);
    return a.verb;
}

static void test_actions(void)
{
    ok(verb("DUNNO") == ACCESS_DUNNO && verb("dunno whatever") == ACCESS_DUNNO, "DUNNO, any case, text ignored");
    ok(verb("OK") == ACCESS_OK && verb("RELAY") == ACCESS_OK && verb("12345") == ACCESS_OK, "OK, RELAY, numeric");
    ok(verb("550") == ACCESS_OK, "a bare 550 is all-numeric: OK, as in Postfix");
    ok(verb("550 text") == ACCESS_CODE && verb("421 4.7.0 go") == ACCESS_CODE, "4NN/5NN with text");
    ok(verb("350 text") == ACCESS_RESTRICTIONS, "3NN is no reply code: a (bogus) restriction name");
    ok(verb("REJECT") == ACCESS_REJECT && verb("DEFER x") == ACCESS_DEFER, "REJECT, DEFER");
    ok(verb("DEFER_IF_PERMIT x") == ACCESS_DEFER_IF_PERMIT && verb("defer_if_reject") == ACCESS_DEFER_IF_REJECT,
       "DEFER_IF_PERMIT, DEFER_IF_REJECT");
    ok(verb("HOLD") == ACCESS_HOLD && verb("DISCARD x") == ACCESS_DISCARD && verb("FILTER a:b") == ACCESS_FILTER &&
           verb("REDIRECT a@b") == ACCESS_REDIRECT && verb("BCC a@b") == ACCESS_BCC &&
           verb("PREPEND X: y") == ACCESS_PREPEND && verb("WARN x") == ACCESS_WARN && verb("INFO") == ACCESS_INFO,
       "HOLD, DISCARD, FILTER, REDIRECT, BCC, PREPEND, WARN, INFO");
    ok(verb("hash:/etc/x") == ACCESS_TABLE_IN_VALUE, "a table in the value");
    ok(verb("reject_unauth_destination, permit") == ACCESS_RESTRICTIONS, "restrictions");
    ok(verb("DEFERRED") == ACCESS_RESTRICTIONS && verb("OKAY") == ACCESS_RESTRICTIONS,
       "words are matched whole");

    struct access_action a;
    access_action_parse("REJECT 5.7.9 go away", &a);
    ok(strcmp(a.dsn, "5.7.9") == 0 && strcmp(a.reason, "go away") == 0, "REJECT with an enhanced code");
    access_action_parse("REJECT go away", &a);
    ok(strcmp(a.dsn, "5.7.1") == 0 && strcmp(a.reason, "go away") == 0, "REJECT's default 5.7.1");
    access_action_parse("DEFER", &a);
    ok(strcmp(a.dsn, "4.7.1") == 0 && strcmp(a.reason, "") == 0, "DEFER's default 4.7.1, no text");
    access_action_parse("452 4.5.3 too many", &a);
    ok(a.code == 452 && strcmp(a.dsn, "4.5.3") == 0 && strcmp(a.reason, "too many") == 0, "452 4.5.3 text");
    access_action_parse("552 text only", &a);
    ok(a.code == 552 && strcmp(a.dsn, "5.7.1") == 0 && strcmp(a.reason, "text only") == 0, "5NN's default 5.7.1");
    access_action_parse("554 5.1234.1 not a code", &a);
    ok(strcmp(a.dsn, "5.7.1") == 0 && strcmp(a.reason, "5.1234.1 not a code") == 0,
       "an invalid enhanced code is text");

    ok(access_dsn_valid("5.7.1") == 5 && access_dsn_valid("4.123.456 x") == 9, "dsn_valid");
    ok(access_dsn_valid("3.7.1") == 0 && access_dsn_valid("5.7.") == 0 && access_dsn_valid("5.7.1x") == 0,
       "dsn_valid refuses bad codes");
    char fixed[12];
    access_dsn_fix("5.1.1", "Sender address", fixed);
    is_str(fixed, "5.1.7", "smtpd_dsn_fix: a recipient's 5.1.1 becomes the sender's 5.1.7");
    access_dsn_fix("4.1.8", "Recipient address", fixed);
    is_str(fixed, "4.1.2", "smtpd_dsn_fix: a sender's 4.1.8 becomes the recipient's 4.1.2");
    access_dsn_fix("5.1.2", "Client host", fixed);
    is_str(fixed, "5.0.0", "smtpd_dsn_fix: an address status for what is no address: 5.0.0");
    access_dsn_fix("5.7.1", "Client host", fixed);
    is_str(fixed, "5.7.1", "smtpd_dsn_fix: other codes stay");

    ok(access_is_header("X-Spam: yes") && access_is_header("X-Spam : yes") && !access_is_header(": x") &&
           !access_is_header("no header here") && !access_is_header("Bad Name: x"),
       "PREPEND needs a header line");
}

int main(void)
{
    test_request();
    test_framing();
    test_parse();
    test_actions();
    return done_testing();
}
