/*
 * Unit tests for core/smtpd/smtp_parse: command split, MAIL/RCPT paths and
 * parameters (a table of good and bad lines with the exact reply expected),
 * xtext round trips, hostnames, address literals and BDAT arguments.
 */
#include "config.h"

#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <petrel/pool.h>
#include "mail/smtp_parse.h"
#include "../tap.h"

enum { MAIL, RCPT };

/* Option sets used by the table. */
#define O_NONE   0
#define O_UTF8   1   /* smtputf8_enabled */
#define O_DSN    2   /* dsn_enabled */
#define O_TXUTF8 4   /* transaction_smtputf8 (RCPT) */
#define O_8BIT   8   /* allow_8bit_localpart_without_smtputf8 */
#define O_NODOM  16  /* allow_missing_domain */

struct path_case {
    int kind;
    int opts;
    const char *args;
    int rc;
    const char *address;    /* expected on success */
    int code;               /* expected on failure */
    const char *enhanced;
    const char *text;       /* NULL: not checked */
};

static const struct path_case cases[] = {
    /* MAIL: good */
    { MAIL, 0, "FROM:<a@b.example>", 0, "a@b.example", 0, NULL, NULL },
    { MAIL, 0, "from:<a@b.example>", 0, "a@b.example", 0, NULL, NULL },
    { MAIL, 0, "FROM: <a@b.example>", 0, "a@b.example", 0, NULL, NULL },
    { MAIL, 0, "FROM:\t<a@b.example>", 0, "a@b.example", 0, NULL, NULL },
    { MAIL, 0, "FROM:<>", 0, "", 0, NULL, NULL },
    { MAIL, 0, "FROM:<> SIZE=0", 0, "", 0, NULL, NULL },
    { MAIL, 0, "FROM:a@b.example", 0, "a@b.example", 0, NULL, NULL },
    { MAIL, 0, "FROM:a@b.example SIZE=10", 0, "a@b.example", 0, NULL, NULL },
    { MAIL, 0, "FROM:<a@b.example> SIZE=1000 BODY=8BITMIME", 0, "a@b.example", 0, NULL, NULL },
    { MAIL, 0, "FROM:<a@b.example> body=7bit", 0, "a@b.example", 0, NULL, NULL },
    { MAIL, 0, "FROM:<a@b.example>   SIZE=5   ", 0, "a@b.example", 0, NULL, NULL },
    { MAIL, 0, "FROM:<@r1.example,@r2.example:u@c.example>", 0, "u@c.example", 0, NULL, NULL },
    { MAIL, 0, "FROM:<@r1.example:u@c.example>", 0, "u@c.example", 0, NULL, NULL },
    { MAIL, 0, "FROM:<\"a b\"@c.example>", 0, "\"a b\"@c.example", 0, NULL, NULL },
    { MAIL, 0, "FROM:<\"a\\\"b\"@c.example>", 0, "\"a\\\"b\"@c.example", 0, NULL, NULL },
    { MAIL, 0, "FROM:<\"ab\"@c.example>", 0, "ab@c.example", 0, NULL, NULL },
    { MAIL, 0, "FROM:<\"a\\b\"@c.example>", 0, "ab@c.example", 0, NULL, NULL },
    { MAIL, 0, "FROM:<\"a.b\"@c.example>", 0, "a.b@c.example", 0, NULL, NULL },
    { MAIL, 0, "FROM:<\"a..b\"@c.example>", 0, "\"a..b\"@c.example", 0, NULL, NULL },
    { MAIL, 0, "FROM:<\"\"@c.example>", 0, "\"\"@c.example", 0, NULL, NULL },
    { MAIL, 0, "FROM:<\"a>b\"@c.example>", 0, "\"a>b\"@c.example", 0, NULL, NULL },
    { MAIL, 0, "FROM:<foo.@docomo.example>", 0, "foo.@docomo.example", 0, NULL, NULL },
    { MAIL, 0, "FROM:<a..b@c.example>", 0, "a..b@c.example", 0, NULL, NULL },
    { MAIL, 0, "FROM:<a+tag@c.example>", 0, "a+tag@c.example", 0, NULL, NULL },
    { MAIL, 0, "FROM:<!#$%&'*+-/=?^_`{|}~@c.example>", 0, "!#$%&'*+-/=?^_`{|}~@c.example", 0, NULL, NULL },
    { MAIL, 0, "FROM:<a@[192.0.2.1]>", 0, "a@[192.0.2.1]", 0, NULL, NULL },
    { MAIL, 0, "FROM:<a@[IPv6:2001:db8::1]>", 0, "a@[IPv6:2001:db8::1]", 0, NULL, NULL },
    { MAIL, 0, "FROM:<a@localhost>", 0, "a@localhost", 0, NULL, NULL },
    { MAIL, O_NODOM, "FROM:<user>", 0, "user", 0, NULL, NULL },
    { MAIL, O_UTF8, "FROM:<\xc3\xa9@b.example> SMTPUTF8", 0, "\xc3\xa9@b.example", 0, NULL, NULL },
    { MAIL, O_UTF8, "FROM:<a@\xc3\xa9.example> SMTPUTF8", 0, "a@\xc3\xa9.example", 0, NULL, NULL },
    { MAIL, O_8BIT, "FROM:<\xe9@b.example>", 0, "\xe9@b.example", 0, NULL, NULL },
    { MAIL, O_DSN, "FROM:<a@b.example> RET=HDRS ENVID=abc+2Bdef", 0, "a@b.example", 0, NULL, NULL },
    { MAIL, 0, "FROM:<a@b.example> AUTH=<>", 0, "a@b.example", 0, NULL, NULL },
    { MAIL, 0, "FROM:<a@b.example> AUTH=u+40b.example", 0, "a@b.example", 0, NULL, NULL },

    /* MAIL: bad */
    { MAIL, 0, "", -1, NULL, 501, "5.5.4", "Syntax: MAIL FROM:<address>" },
    { MAIL, 0, "FROM:", -1, NULL, 501, "5.5.4", "Syntax: MAIL FROM:<address>" },
    { MAIL, 0, "FROM: ", -1, NULL, 501, "5.5.4", "Syntax: MAIL FROM:<address>" },
    { MAIL, 0, "FROM <a@b.example>", -1, NULL, 501, "5.5.4", "Syntax: MAIL FROM:<address>" },
    { MAIL, 0, "TO:<a@b.example>", -1, NULL, 501, "5.5.4", "Syntax: MAIL FROM:<address>" },
    { MAIL, 0, "FROM:<a@b.example", -1, NULL, 501, "5.1.7", "Bad sender address syntax" },
    { MAIL, 0, "FROM:<a@b.example>SIZE=1", -1, NULL, 501, "5.1.7", "Bad sender address syntax" },
    { MAIL, 0, "FROM:<a b@c.example>", -1, NULL, 501, "5.1.7", "Bad sender address syntax" },
    { MAIL, 0, "FROM:<a@>", -1, NULL, 501, "5.1.7", "Bad sender address syntax" },
    { MAIL, 0, "FROM:<@b.example>", -1, NULL, 501, "5.1.7", "Bad sender address syntax" },
    { MAIL, 0, "FROM:<user>", -1, NULL, 501, "5.1.7", "Bad sender address syntax" },
    { MAIL, 0, "FROM:<a@b@c.example>", -1, NULL, 501, "5.1.7", "Bad sender address syntax" },
    { MAIL, 0, "FROM:<a@-b.example>", -1, NULL, 501, "5.1.7", "Bad sender address syntax" },
    { MAIL, 0, "FROM:<a@b-.example>", -1, NULL, 501, "5.1.7", "Bad sender address syntax" },
    { MAIL, 0, "FROM:<a@b..example>", -1, NULL, 501, "5.1.7", "Bad sender address syntax" },
    { MAIL, 0, "FROM:<a@b.example.>", -1, NULL, 501, "5.1.7", "Bad sender address syntax" },
    { MAIL, 0, "FROM:<a@1.2.3.4>", -1, NULL, 501, "5.1.7", "Bad sender address syntax" },
    { MAIL, 0, "FROM:<a@b_c.example>", -1, NULL, 501, "5.1.7", "Bad sender address syntax" },
    { MAIL, 0, "FROM:<a@[1.2.3.256]>", -1, NULL, 501, "5.1.7", "Bad sender address syntax" },
    { MAIL, 0, "FROM:<a@[IPv6:zz::1]>", -1, NULL, 501, "5.1.7", "Bad sender address syntax" },
    { MAIL, 0, "FROM:<a@[1.2.3]>", -1, NULL, 501, "5.1.7", "Bad sender address syntax" },
    { MAIL, 0, "FROM:<a\x01@b.example>", -1, NULL, 501, "5.1.7", "Bad sender address syntax" },
    { MAIL, 0, "FROM:<\"a\x01\"@b.example>", -1, NULL, 501, "5.1.7", "Bad sender address syntax" },
    { MAIL, 0, "FROM:<\"a@b.example>", -1, NULL, 501, "5.1.7", "Bad sender address syntax" },
    { MAIL, 0, "FROM:<\"a\"b@c.example>", -1, NULL, 501, "5.1.7", "Bad sender address syntax" },
    { MAIL, 0, "FROM:<a(b)@c.example>", -1, NULL, 501, "5.1.7", "Bad sender address syntax" },
    { MAIL, 0, "FROM:<@r1.example>", -1, NULL, 501, "5.1.7", "Bad sender address syntax" },
    { MAIL, 0, "FROM:<@r1.example,u@c.example>", -1, NULL, 501, "5.1.7", "Bad sender address syntax" },
    { MAIL, 0, "FROM:<@-bad:u@c.example>", -1, NULL, 501, "5.1.7", "Bad sender address syntax" },
    { MAIL, 0, "FROM:<a@b.example>>", -1, NULL, 501, "5.1.7", "Bad sender address syntax" },
    { MAIL, 0, "FROM:<<a@b.example>>", -1, NULL, 501, "5.1.7", "Bad sender address syntax" },
    { MAIL, 0, "FROM:<a@b.example> SIZE=abc", -1, NULL, 501, "5.5.4", "Bad message size syntax" },
    { MAIL, 0, "FROM:<a@b.example> SIZE=", -1, NULL, 501, "5.5.4", "Bad message size syntax" },
    { MAIL, 0, "FROM:<a@b.example> SIZE=-1", -1, NULL, 501, "5.5.4", "Bad message size syntax" },
    { MAIL, 0, "FROM:<a@b.example> SIZE=99999999999999999999", -1, NULL, 552, "5.3.4", "Message size exceeds file system imposed limit" },
    { MAIL, 0, "FROM:<a@b.example> SIZE=1 SIZE=2", -1, NULL, 501, "5.5.4", "Error: multiple SIZE= options" },
    { MAIL, 0, "FROM:<a@b.example> SIZE", -1, NULL, 555, "5.5.4", "Unsupported option: SIZE" },
    { MAIL, 0, "FROM:<a@b.example> FOO=bar", -1, NULL, 555, "5.5.4", "Unsupported option: FOO=bar" },
    { MAIL, 0, "FROM:<a@b.example> X\x01Y", -1, NULL, 555, "5.5.4", "Unsupported option: X?Y" },
    { MAIL, 0, "FROM:<a@b.example> BODY=BINARYMIME", -1, NULL, 555, "5.5.4", "Unsupported option: BODY=BINARYMIME" },
    { MAIL, 0, "FROM:<a@b.example> BODY=9BIT", -1, NULL, 555, "5.5.4", "Unsupported option: BODY=9BIT" },
    { MAIL, 0, "FROM:<a@b.example> BODY=7BIT BODY=8BITMIME", -1, NULL, 501, "5.5.4", "Error: multiple BODY= options" },
    { MAIL, 0, "FROM:<a@b.example> SMTPUTF8", -1, NULL, 555, "5.5.4", "Unsupported option: SMTPUTF8" },
    { MAIL, O_UTF8, "FROM:<a@b.example> SMTPUTF8=yes", -1, NULL, 555, "5.5.4", "Unsupported option: SMTPUTF8=yes" },
    { MAIL, O_UTF8, "FROM:<a@b.example> SMTPUTF8 SMTPUTF8", -1, NULL, 501, "5.5.4", "Error: multiple SMTPUTF8 options" },
    { MAIL, O_UTF8, "FROM:<\xc3\xa9@b.example>", -1, NULL, 553, "5.6.7", "Must declare SMTPUTF8 to send unicode address" },
    { MAIL, 0, "FROM:<\xc3\xa9@b.example>", -1, NULL, 553, "5.6.7", "Must declare SMTPUTF8 to send unicode address" },
    { MAIL, O_8BIT, "FROM:<a@\xc3\xa9.example>", -1, NULL, 553, "5.6.7", "Must declare SMTPUTF8 to send unicode address" },
    { MAIL, O_UTF8, "FROM:<\xe9@b.example> SMTPUTF8", -1, NULL, 501, "5.1.7", "Bad sender address syntax" },
    { MAIL, O_UTF8, "FROM:<\xc0\xaf@b.example> SMTPUTF8", -1, NULL, 501, "5.1.7", "Bad sender address syntax" },
    { MAIL, O_UTF8, "FROM:<\xed\xa0\x80@b.example> SMTPUTF8", -1, NULL, 501, "5.1.7", "Bad sender address syntax" },
    { MAIL, 0, "FROM:<a@b.example> RET=FULL", -1, NULL, 501, "5.7.1", "DSN support is disabled" },
    { MAIL, O_DSN, "FROM:<a@b.example> RET=ALL", -1, NULL, 501, "5.5.4", "Bad RET parameter syntax" },
    { MAIL, O_DSN, "FROM:<a@b.example> RET=FULL RET=HDRS", -1, NULL, 501, "5.5.4", "Bad RET parameter syntax" },
    { MAIL, O_DSN, "FROM:<a@b.example> ENVID=a+2", -1, NULL, 501, "5.5.4", "Bad ENVID parameter syntax" },
    { MAIL, O_DSN, "FROM:<a@b.example> ENVID=a+0A", -1, NULL, 501, "5.5.4", "Bad ENVID parameter syntax" },
    { MAIL, O_DSN, "FROM:<a@b.example> ENVID=", -1, NULL, 501, "5.5.4", "Bad ENVID parameter syntax" },
    { MAIL, O_DSN, "FROM:<a@b.example> ENVID=a ENVID=b", -1, NULL, 501, "5.5.4", "Bad ENVID parameter syntax" },
    { MAIL, O_DSN, "FROM:<a@b.example> ENVID=xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx", -1, NULL, 501, "5.5.4", "Bad ENVID parameter syntax" },
    { MAIL, 0, "FROM:<a@b.example> AUTH=<> AUTH=<>", -1, NULL, 503, "5.5.4", "Error: multiple AUTH= options" },
    { MAIL, 0, "FROM:<a@b.example> AUTH=a+zz", -1, NULL, 501, "5.5.4", "Bad AUTH parameter syntax" },
    { MAIL, 0, "FROM:<aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa@b.example>", -1, NULL, 501, "5.1.7", "Bad sender address syntax: address too long" },

    /* RCPT: good */
    { RCPT, 0, "TO:<r@d.example>", 0, "r@d.example", 0, NULL, NULL },
    { RCPT, 0, "to: <r@d.example>", 0, "r@d.example", 0, NULL, NULL },
    { RCPT, 0, "TO:r@d.example", 0, "r@d.example", 0, NULL, NULL },
    { RCPT, 0, "TO:<postmaster>", 0, "postmaster", 0, NULL, NULL },
    { RCPT, 0, "TO:<PostMaster>", 0, "PostMaster", 0, NULL, NULL },
    { RCPT, 0, "TO:<@hop.example:r@d.example>", 0, "r@d.example", 0, NULL, NULL },
    { RCPT, O_DSN, "TO:<r@d.example> NOTIFY=SUCCESS,FAILURE,DELAY", 0, "r@d.example", 0, NULL, NULL },
    { RCPT, O_DSN, "TO:<r@d.example> NOTIFY=never", 0, "r@d.example", 0, NULL, NULL },
    { RCPT, O_DSN, "TO:<r@d.example> ORCPT=rfc822;r+40d.example", 0, "r@d.example", 0, NULL, NULL },
    { RCPT, O_UTF8 | O_TXUTF8, "TO:<\xc3\xa9@d.example>", 0, "\xc3\xa9@d.example", 0, NULL, NULL },

    /* RCPT: bad */
    { RCPT, 0, "TO:<>", -1, NULL, 501, "5.1.3", "Bad recipient address syntax" },
    { RCPT, 0, "TO:", -1, NULL, 501, "5.5.4", "Syntax: RCPT TO:<address>" },
    { RCPT, 0, "FROM:<r@d.example>", -1, NULL, 501, "5.5.4", "Syntax: RCPT TO:<address>" },
    { RCPT, 0, "TO:<user>", -1, NULL, 501, "5.1.3", "Bad recipient address syntax" },
    { RCPT, 0, "TO:<r@d.example> SIZE=10", -1, NULL, 555, "5.5.4", "Unsupported option: SIZE=10" },
    { RCPT, 0, "TO:<r@d.example> NOTIFY=NEVER", -1, NULL, 501, "5.7.1", "DSN support is disabled" },
    { RCPT, O_DSN, "TO:<r@d.example> NOTIFY=NEVER,SUCCESS", -1, NULL, 501, "5.5.4", "Error: Bad NOTIFY parameter syntax" },
    { RCPT, O_DSN, "TO:<r@d.example> NOTIFY=", -1, NULL, 501, "5.5.4", "Error: Bad NOTIFY parameter syntax" },
    { RCPT, O_DSN, "TO:<r@d.example> NOTIFY=SUCCESS,", -1, NULL, 501, "5.5.4", "Error: Bad NOTIFY parameter syntax" },
    { RCPT, O_DSN, "TO:<r@d.example> NOTIFY=SOMETIMES", -1, NULL, 501, "5.5.4", "Error: Bad NOTIFY parameter syntax" },
    { RCPT, O_DSN, "TO:<r@d.example> NOTIFY=DELAY NOTIFY=DELAY", -1, NULL, 501, "5.5.4", "Error: Bad NOTIFY parameter syntax" },
    { RCPT, O_DSN, "TO:<r@d.example> ORCPT=rfc822", -1, NULL, 501, "5.5.4", "Error: Bad ORCPT parameter syntax" },
    { RCPT, O_DSN, "TO:<r@d.example> ORCPT=;r@d", -1, NULL, 501, "5.5.4", "Error: Bad ORCPT parameter syntax" },
    { RCPT, O_DSN, "TO:<r@d.example> ORCPT=rfc822;r+4", -1, NULL, 501, "5.5.4", "Error: Bad ORCPT parameter syntax" },
    { RCPT, O_DSN, "TO:<r@d.example> ORCPT=rfc822;r+0D+0A", -1, NULL, 501, "5.5.4", "Error: Bad ORCPT parameter syntax" },
    { RCPT, O_DSN, "TO:<r@d.example> ORCPT=rfc822;a ORCPT=rfc822;b", -1, NULL, 501, "5.5.4", "Error: Bad ORCPT parameter syntax" },
    { RCPT, O_UTF8, "TO:<\xc3\xa9@d.example>", -1, NULL, 553, "5.6.7", "Must declare SMTPUTF8 to send unicode address" },
    { RCPT, 0, "TO:<r@d.example", -1, NULL, 501, "5.1.3", "Bad recipient address syntax" },
    { RCPT, 0, "TO:<r@d..example>", -1, NULL, 501, "5.1.3", "Bad recipient address syntax" },
};

static void fill_opts(int flags, struct smtp_parse_opts *o)
{
    memset(o, 0, sizeof *o);
    o->smtputf8_enabled = !!(flags & O_UTF8);
    o->dsn_enabled = !!(flags & O_DSN);
    o->transaction_smtputf8 = !!(flags & O_TXUTF8);
    o->allow_8bit_localpart_without_smtputf8 = !!(flags & O_8BIT);
    o->allow_missing_domain = !!(flags & O_NODOM);
}

static void run_table(petrel_pool *pool)
{
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const struct path_case *tc = &cases[i];
        struct smtp_parse_opts opts;
        struct smtp_reply_err err = { 0, NULL, NULL };
        const char *address = NULL;
        int rc;
        fill_opts(tc->opts, &opts);
        if (tc->kind == MAIL) {
            struct smtp_mail_args m;
            rc = smtp_parse_mail(tc->args, &opts, pool, &m, &err);
            address = rc == 0 ? m.address : NULL;
        } else {
            struct smtp_rcpt_args r;
            rc = smtp_parse_rcpt(tc->args, &opts, pool, &r, &err);
            address = rc == 0 ? r.address : NULL;
        }
        const char *verb = tc->kind == MAIL ? "MAIL" : "RCPT";
        if (!is_int(rc, tc->rc, "%s %s: return", verb, tc->args))
            printf("#   reply: %d %s %s\n", err.code, err.enhanced ? err.enhanced : "",
                   err.text ? err.text : "");
        if (tc->rc == 0) {
            is_str(address, tc->address, "%s %s: address", verb, tc->args);
        } else if (rc != 0) {
            char got[512], want[512];
            snprintf(got, sizeof got, "%d %s %s", err.code, err.enhanced, err.text);
            snprintf(want, sizeof want, "%d %s %s", tc->code, tc->enhanced, tc->text);
            is_str(got, want, "%s %s: reply", verb, tc->args);
        }
    }
}

static void test_mail_values(petrel_pool *pool)
{
    struct smtp_parse_opts opts = { .dsn_enabled = 1, .smtputf8_enabled = 1 };
    struct smtp_mail_args m;
    struct smtp_reply_err err;

    ok(smtp_parse_mail("FROM:<> SIZE=12345 BODY=8BITMIME SMTPUTF8 RET=HDRS ENVID=x+2By AUTH=u+2Bv",
                       &opts, pool, &m, &err) == 0, "MAIL with every parameter");
    is_int(m.null_sender, 1, "null sender flagged");
    is_int(m.size, 12345, "SIZE value");
    is_int(m.body, SMTP_BODY_8BITMIME, "BODY value");
    is_int(m.smtputf8, 1, "SMTPUTF8 flag");
    is_int(m.ret, SMTP_DSN_RET_HDRS, "RET value");
    is_str(m.envid, "x+y", "ENVID decoded");
    is_str(m.auth, "u+v", "AUTH decoded");
    is_str(m.params, "SIZE=12345 BODY=8BITMIME SMTPUTF8 RET=HDRS ENVID=x+2By AUTH=u+2Bv",
           "the parameters as sent, for the milters");
    ok(smtp_parse_mail("FROM:<a@b.example>  \t SIZE=1 \t BODY=7BIT  ", &opts, pool, &m, &err) == 0,
       "MAIL with blank runs between parameters");
    is_str(m.params, "SIZE=1 BODY=7BIT", "  one space between them, none around");

    ok(smtp_parse_mail("FROM:<a@b.example>", NULL, pool, &m, &err) == 0, "NULL opts");
    is_str(m.params, "", "no parameters: \"\"");
    is_int(m.size, -1, "SIZE unset is -1");
    is_int(m.body, SMTP_BODY_UNSET, "BODY unset");
    ok(m.envid == NULL && m.auth == NULL, "ENVID and AUTH unset");

    struct smtp_rcpt_args r;
    ok(smtp_parse_rcpt("TO:<r@d.example> NOTIFY=success,delay ORCPT=rfc822;r+2Bx+40d.example",
                       &opts, pool, &r, &err) == 0, "RCPT with DSN parameters");
    is_int(r.notify, SMTP_NOTIFY_SUCCESS | SMTP_NOTIFY_DELAY, "NOTIFY mask");
    is_str(r.orcpt, "rfc822;r+x@d.example", "ORCPT type;decoded");
    is_str(r.params, "NOTIFY=success,delay ORCPT=rfc822;r+2Bx+40d.example", "RCPT's parameters as sent");

    /* parameters a milter sets with CHGFROM and ADDRCPT_PAR */
    struct smtp_mail_args em = { 0 };
    struct smtp_rcpt_args er = { 0 };
    ok(smtp_parse_edit_param("RET=hdrs", pool, &em, NULL) == 0 && em.ret == SMTP_DSN_RET_HDRS, "edit: RET=");
    ok(smtp_parse_edit_param("ENVID=a+2Bb", pool, &em, NULL) == 0 && strcmp(em.envid, "a+b") == 0,
       "edit: ENVID= decoded");
    ok(smtp_parse_edit_param("ENVID=a+ZZ", pool, &em, NULL) == -1, "edit: ENVID= with bad xtext refused");
    ok(smtp_parse_edit_param("ENVID=a+0D", pool, &em, NULL) == -1, "edit: ENVID= with a CR refused");
    ok(smtp_parse_edit_param("RET=SOME", pool, &em, NULL) == -1, "edit: bad RET refused");
    ok(smtp_parse_edit_param("NOTIFY=NEVER", pool, &em, NULL) == -1, "edit: NOTIFY is not for a sender");
    ok(smtp_parse_edit_param("SIZE=1", pool, &em, NULL) == -1, "edit: SIZE is not applied");
    ok(smtp_parse_edit_param("RET", pool, &em, NULL) == -1 && smtp_parse_edit_param("RET=", pool, &em, NULL) == -1,
       "edit: no value refused");
    ok(smtp_parse_edit_param("NOTIFY=never", pool, NULL, &er) == 0 && er.notify == SMTP_NOTIFY_NEVER, "edit: NOTIFY=");
    ok(smtp_parse_edit_param("NOTIFY=NEVER,DELAY", pool, NULL, &er) == -1, "edit: NEVER with another refused");
    ok(smtp_parse_edit_param("ORCPT=rfc822;x+40y", pool, NULL, &er) == 0 && strcmp(er.orcpt, "rfc822;x@y") == 0,
       "edit: ORCPT= decoded");
    ok(smtp_parse_edit_param("ORCPT=rfc822;x+0Ay", pool, NULL, &er) == -1, "edit: ORCPT= with a LF refused");
    ok(smtp_parse_edit_param("RET=FULL", pool, NULL, &er) == -1, "edit: RET is not for a recipient");

    /* Length limits at and just past the boundaries. */
    char line[600];
    char local[80];
    memset(local, 'l', 64);
    local[64] = 0;
    snprintf(line, sizeof line, "FROM:<%s@b.example>", local);
    ok(smtp_parse_mail(line, NULL, pool, &m, &err) == 0, "local part of 64 accepted");

    /* A 255-octet domain: 3 labels of 63 + one of 63 with dots = 255. */
    char domain[300];
    size_t n = 0;
    for (int l = 0; l < 4; l++) {
        if (l)
            domain[n++] = '.';
        memset(domain + n, 'd', 63);
        n += 63;
    }
    domain[n] = 0;
    is_int(n, 255, "domain fixture is 255 octets");
    ok(smtp_valid_hostname(domain) == 1, "255-octet hostname valid");
    snprintf(line, sizeof line, "TO:<p@%s>", domain);
    ok(smtp_parse_rcpt(line, NULL, pool, &r, &err) == -1, "path over 256 octets rejected");
    is_str(err.text, "Bad recipient address syntax: address too long", "path too long reply");
    domain[n - 4] = 0; /* 251 octets: path <p@...> = 2 + 2 + 251 = 255 */
    snprintf(line, sizeof line, "TO:<p@%s>", domain);
    ok(smtp_parse_rcpt(line, NULL, pool, &r, &err) == 0, "path of 255 octets accepted");

    /* Overlong option text is shortened in the reply. */
    char big[300];
    memset(big, 'X', 200);
    big[200] = 0;
    snprintf(line, sizeof line, "FROM:<a@b.example> %s", big);
    ok(smtp_parse_mail(line, NULL, pool, &m, &err) == -1, "long unknown option rejected");
    ok(strlen(err.text) < 100, "unsupported-option reply bounded");
}

static void test_command(void)
{
    struct smtp_command cmd;
    const char *l1 = "mail FROM:<a@b>";
    ok(smtp_parse_command(l1, strlen(l1), &cmd) == 0, "command parsed");
    is_int(cmd.verb, SMTP_VERB_MAIL, "lower-case verb");
    is_str(cmd.args, "FROM:<a@b>", "args after verb");
    const char *l2 = "QUIT";
    smtp_parse_command(l2, strlen(l2), &cmd);
    is_int(cmd.verb, SMTP_VERB_QUIT, "QUIT");
    is_str(cmd.args, "", "no args is empty string");
    const char *l3 = "StartTLS  \t x";
    smtp_parse_command(l3, strlen(l3), &cmd);
    is_int(cmd.verb, SMTP_VERB_STARTTLS, "STARTTLS mixed case");
    is_str(cmd.args, "x", "blanks skipped");
    is_int(cmd.args_len, 1, "args_len");
    const char *l4 = "MAILX FROM:<>";
    smtp_parse_command(l4, strlen(l4), &cmd);
    is_int(cmd.verb, SMTP_VERB_UNKNOWN, "prefix of a verb is unknown");
    const char l5[] = "RCPT TO:<a\0b@c>";
    ok(smtp_parse_command(l5, sizeof l5 - 1, &cmd) == -1, "NUL in command rejected");
    const char *l6 = "";
    ok(smtp_parse_command(l6, 0, &cmd) == 0 && cmd.verb == SMTP_VERB_UNKNOWN, "empty line unknown");
    static const char *verbs[] = { "HELO", "EHLO", "MAIL", "RCPT", "DATA", "BDAT", "RSET", "NOOP",
                                   "QUIT", "VRFY", "EXPN", "HELP", "STARTTLS", "AUTH", "ETRN" };
    for (size_t i = 0; i < sizeof verbs / sizeof verbs[0]; i++) {
        smtp_parse_command(verbs[i], strlen(verbs[i]), &cmd);
        is_str(smtp_verb_name(cmd.verb), verbs[i], "verb %s recognised", verbs[i]);
    }
}

static void test_xtext(petrel_pool *pool)
{
    static const char *samples[] = { "", "plain", "a+b=c", "sp ace", "\x01\x7f\xff", "+=+=", "x@y.example" };
    for (size_t i = 0; i < sizeof samples / sizeof samples[0]; i++) {
        char *enc = smtp_xtext_encode(samples[i], pool);
        char *dec = NULL;
        ok(smtp_xtext_decode(enc, pool, &dec) == 0, "decode encoded #%zu", i);
        is_str(dec, samples[i], "xtext round trip #%zu (%s)", i, enc);
    }
    is_str(smtp_xtext_encode("a+b=c d", pool), "a+2Bb+3Dc+20d", "encode upper-case hex");
    char *out;
    ok(smtp_xtext_decode("a+2bc", pool, &out) == 0 && strcmp(out, "a+c") == 0, "lower-case hex accepted");
    ok(smtp_xtext_decode("a+", pool, &out) == -1, "truncated +");
    ok(smtp_xtext_decode("a+2", pool, &out) == -1, "truncated +X");
    ok(smtp_xtext_decode("a+G0", pool, &out) == -1, "non-hex");
    ok(smtp_xtext_decode("a+00", pool, &out) == -1, "encoded NUL");
    ok(smtp_xtext_decode("a=b", pool, &out) == -1, "bare =");
    ok(smtp_xtext_decode("a b", pool, &out) == -1, "space");
}

static void test_hostnames(void)
{
    static const struct { const char *name; int valid; int fqdn; } hosts[] = {
        { "example.com", 1, 1 }, { "localhost", 1, 0 }, { "a-b.example", 1, 1 },
        { "1a.example", 1, 1 }, { "x.123a", 1, 1 }, { "", 0, 0 }, { "-a.example", 0, 0 },
        { "a-.example", 0, 0 }, { "a..example", 0, 0 }, { ".example", 0, 0 },
        { "example.", 0, 0 }, { "a_b.example", 0, 0 }, { "1.2.3.4", 0, 0 }, { "x.123", 0, 0 },
        { "123", 0, 0 }, { "a b", 0, 0 }, { "\xc3\xa9.example", 0, 0 },
        { "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa.example", 1, 1 },
        { "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa.example", 0, 0 },
    };
    for (size_t i = 0; i < sizeof hosts / sizeof hosts[0]; i++) {
        is_int(smtp_valid_hostname(hosts[i].name), hosts[i].valid, "valid_hostname(%s)", hosts[i].name);
        is_int(smtp_is_fqdn(hosts[i].name), hosts[i].fqdn, "is_fqdn(%s)", hosts[i].name);
    }
    char longname[300];
    memset(longname, 'a', 256);
    for (int k = 60; k < 256; k += 61)
        longname[k] = '.';
    longname[256] = 0;
    is_int(smtp_valid_hostname(longname), 0, "256-octet hostname invalid");

    static const struct { const char *lit; int valid; } lits[] = {
        { "[192.0.2.1]", 1 }, { "[0.0.0.0]", 1 }, { "[255.255.255.255]", 1 },
        { "[IPv6:::1]", 1 }, { "[ipv6:2001:db8::1]", 1 }, { "[IPv6:::ffff:192.0.2.1]", 1 },
        { "[256.0.0.1]", 0 }, { "[1.2.3]", 0 }, { "[1.2.3.4.5]", 0 }, { "[1.2.3.4", 0 },
        { "1.2.3.4", 0 }, { "[]", 0 }, { "[IPv6:]", 0 }, { "[IPv6:1::2::3]", 0 },
        { "[IPv6:192.0.2.1]", 0 }, { "[1234.1.1.1]", 0 }, { "[x:y]", 0 }, { "[1.2.3.4 ]", 0 },
    };
    for (size_t i = 0; i < sizeof lits / sizeof lits[0]; i++)
        is_int(smtp_valid_address_literal(lits[i].lit), lits[i].valid, "address literal %s", lits[i].lit);

    const char *d;
    ok(smtp_address_domain("u@example.com", &d) == 1 && strcmp(d, "example.com") == 0, "domain of u@example.com");
    ok(smtp_address_domain("\"a@b\"@c.example", &d) == 1 && strcmp(d, "c.example") == 0, "quoted @ skipped");
    ok(smtp_address_domain("\"a\\\"@b\"@c.example", &d) == 1 && strcmp(d, "c.example") == 0, "escaped quote kept in quotes");
    ok(smtp_address_domain("postmaster", &d) == 0 && d == NULL, "no domain");
    ok(smtp_address_domain("", &d) == 0, "empty address has no domain");
}

static void test_bdat(void)
{
    static const struct { const char *args; int rc; unsigned long long size; int last; int code; } b[] = {
        { "0", 0, 0, 0, 0 }, { "100", 0, 100, 0, 0 }, { "100 LAST", 0, 100, 1, 0 },
        { "100 last", 0, 100, 1, 0 }, { "7  LAST  ", 0, 7, 1, 0 },
        { "18446744073709551615", 0, 18446744073709551615ULL, 0, 0 },
        { "18446744073709551616", -1, 0, 0, 552 }, { "", -1, 0, 0, 501 }, { "LAST", -1, 0, 0, 501 },
        { "10 FIRST", -1, 0, 0, 501 }, { "10 LAST x", -1, 0, 0, 501 }, { "-1", -1, 0, 0, 501 },
        { "1x", -1, 0, 0, 501 }, { "10 LASTX", -1, 0, 0, 501 },
    };
    for (size_t i = 0; i < sizeof b / sizeof b[0]; i++) {
        unsigned long long size;
        int last;
        struct smtp_reply_err err = { 0, NULL, NULL };
        int rc = smtp_parse_bdat(b[i].args, &size, &last, &err);
        is_int(rc, b[i].rc, "BDAT %s", b[i].args);
        if (rc == 0)
            ok(size == b[i].size && last == b[i].last, "BDAT %s values", b[i].args);
        else
            is_int(err.code, b[i].code, "BDAT %s reply code", b[i].args);
    }
}

/* The HELO name as Received: and the log get it (Postfix's printable + neuter). */
static void test_helo_printable(petrel_pool *pool)
{
    static const struct {
        const char *in;
        int utf8;
        const char *out;
    } h[] = {
        { "mx.example.org", 0, "mx.example.org" },
        { "  mx.example.org \t", 0, "mx.example.org" },
        { "a\rb\nc\x1b\x07" "d\x7f", 0, "a?b?c??d?" },
        { "a b\t\t c", 0, "a?b?c" },
        { "<x>(y)\"z\\;@", 0, "?x??y??z???" },
        { "[192.0.2.1]", 0, "[192.0.2.1]" },
        { "b\xc3\xbc" "cher", 1, "b\xc3\xbc" "cher" },
        { "b\xc3\xbc" "cher", 0, "b??cher" },
        { "bad\xff\xc3x\xe2\x82", 1, "bad??x??" },
        { "\xed\xa0\x80", 1, "???" },              /* a UTF-16 surrogate is not UTF-8 */
        { "\xc0\xaf", 1, "??" },                     /* overlong */
    };
    for (size_t i = 0; i < sizeof h / sizeof h[0]; i++)
        is_str(smtp_helo_printable(h[i].in, strlen(h[i].in), h[i].utf8, pool), h[i].out, "HELO printable %zu", i);
    const char nul[] = "a\0b";
    is_str(smtp_helo_printable(nul, 3, 0, pool), "a?b", "a NUL byte becomes ?");
}

int main(void)
{
    petrel_pool *pool = petrel_pool_create(0);
    printf("# %zu MAIL/RCPT table cases\n", sizeof cases / sizeof cases[0]);
    run_table(pool);
    test_mail_values(pool);
    test_command();
    test_xtext(pool);
    test_hostnames();
    test_bdat();
    test_helo_printable(pool);
    petrel_pool_destroy(pool);
    return done_testing();
}
