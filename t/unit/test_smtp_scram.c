/*
 * Unit tests for the SMTP client's SCRAM-SHA-256 messages
 * (core/deliver/smtp_scram.c): the RFC 7677 test vector end to end, and
 * the server messages a hostile or broken server may send: m=, a nonce
 * that is not ours, attributes out of order, bad salts and iteration
 * counts, NUL bytes, e= errors, wrong signatures, and messages and user
 * names past the bound (refused, never cut).
 */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "deliver/smtp_scram.h"
#include "lib/buf.h"
#include "../tap.h"

#define NONCE "rOprNGfwEbeRWgbNEkqO"
#define SNONCE NONCE "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0"
#define SERVER_FIRST "r=" SNONCE ",s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096"

/* The server-first message's fate, after a client-first for "user". */
static const char *final_for(const char *server_first, size_t len)
{
    static char why_copy[300];
    struct scram_client s;
    struct buf out = BUF_INIT;
    const char *why = NULL;
    scram_client_first(&s, "user", NONCE, &out, &why);
    buf_reset(&out);
    int rc = scram_client_final(&s, "pencil", server_first, len, &out, &why);
    snprintf(why_copy, sizeof(why_copy), "%s", rc == 0 ? "(ok)" : why);
    buf_free(&out);
    scram_client_free(&s);
    return why_copy;
}

static void test_rfc7677(void)
{
    struct scram_client s;
    struct buf out = BUF_INIT;
    const char *why = NULL;
    char err[300];
    ok(scram_client_first(&s, "user", NONCE, &out, &why) == 0, "client-first for user");
    is_str(out.data, "n,,n=user,r=" NONCE, "RFC 7677 client-first-message");
    buf_reset(&out);
    ok(scram_client_final(&s, "pencil", SERVER_FIRST, strlen(SERVER_FIRST), &out, &why) == 0,
       "RFC 7677 server-first is accepted");
    is_str(out.data, "c=biws,r=" SNONCE ",p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=",
           "RFC 7677 client-final-message, proof included");
    const char *v = "v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=";
    ok(scram_server_final(&s, v, strlen(v), &why, err, sizeof(err)) == 0, "RFC 7677 server-final verifies");
    const char *vext = "v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=,x=ext";
    ok(scram_server_final(&s, vext, strlen(vext), &why, err, sizeof(err)) == 0,
       "an optional extension after v= is ignored");
    const char *bad = "v=7rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=";
    ok(scram_server_final(&s, bad, strlen(bad), &why, err, sizeof(err)) != 0, "a wrong signature fails");
    is_str(why, "the server's SCRAM signature is wrong", "and says so");
    const char *shortv = "v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95A==";
    ok(scram_server_final(&s, shortv, strlen(shortv), &why, err, sizeof(err)) != 0, "a short signature fails");
    const char *e = "e=invalid-proof\x01\n";
    ok(scram_server_final(&s, e, strlen(e), &why, err, sizeof(err)) != 0, "e= fails");
    is_str(why, "the server's SCRAM error: invalid-proof??", "e= names the server's error, made printable");
    const char *none = "x=1";
    ok(scram_server_final(&s, none, strlen(none), &why, err, sizeof(err)) != 0, "no v= fails");
    is_str(why, "malformed SCRAM server-final message (no v= signature)", "and says so");
    const char *nul = "v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=\0";
    ok(scram_server_final(&s, nul, 48, &why, err, sizeof(err)) != 0, "a NUL in server-final fails");
    scram_client_free(&s);
    buf_free(&out);
}

static void test_user_names(void)
{
    struct scram_client s;
    struct buf out = BUF_INIT;
    const char *why = NULL;
    ok(scram_client_first(&s, "a=b,c", NONCE, &out, &why) == 0, "a user with = and ,");
    is_str(out.data, "n,,n=a=3Db=2Cc,r=" NONCE, "= and , are escaped (RFC 5802 5.1)");
    scram_client_free(&s);
    buf_reset(&out);
    /* longer than the old 600- and 1024-byte buffers: the whole name goes */
    char *user = malloc(SCRAM_MESSAGE_MAX + 2);
    memset(user, 'u', 3000);
    user[3000] = '\0';
    ok(scram_client_first(&s, user, NONCE, &out, &why) == 0, "a 3000-byte user name");
    is_int(out.len, 3 + 2 + 3000 + 3 + strlen(NONCE), "is sent whole");
    buf_reset(&out);
    ok(scram_client_final(&s, "pencil", SERVER_FIRST, strlen(SERVER_FIRST), &out, &why) == 0,
       "and the exchange goes on");
    scram_client_free(&s);
    buf_reset(&out);
    memset(user, 'u', SCRAM_MESSAGE_MAX + 1);
    user[SCRAM_MESSAGE_MAX + 1] = '\0';
    ok(scram_client_first(&s, user, NONCE, &out, &why) != 0, "a user name over the bound is refused");
    is_str(why, "the SASL user name is longer than 4096 bytes", "naming the bound");
    free(user);
    buf_free(&out);
}

static void test_server_first(void)
{
#define BAD(msg, want, name) is_str(final_for(msg, sizeof(msg) - 1), want, name)
    BAD("m=ext," SERVER_FIRST, "the server requires a SCRAM extension (m=) that we do not support",
        "a mandatory extension fails the exchange (RFC 5802)");
    BAD("r=" NONCE ",s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096", "the SCRAM server nonce does not extend ours",
        "a nonce with nothing of the server's");
    BAD("r=xOprNGfwEbeRWgbNEkqOabc,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096",
        "the SCRAM server nonce does not extend ours", "a nonce that is not ours");
    BAD("r=rOpr,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096", "the SCRAM server nonce does not extend ours",
        "a nonce shorter than ours");
    BAD("s=W22ZaJ0SNY7soEsUEjb6gQ==,r=" SNONCE ",i=4096", "malformed SCRAM challenge (no r= nonce first)",
        "attributes out of order");
    BAD("r=" SNONCE " x,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096", "malformed SCRAM challenge (no r= nonce first)",
        "a space in the nonce");
    BAD("r=" SNONCE ",i=4096", "malformed SCRAM challenge (no s= salt after the nonce)", "no salt");
    BAD("r=" SNONCE ",s=,i=4096", "malformed SCRAM challenge (no s= salt after the nonce)", "an empty salt");
    BAD("r=" SNONCE ",s=W22ZaJ0SNY7soEsUEjb6gQ,i=4096", "malformed SCRAM salt", "a salt without its padding");
    BAD("r=" SNONCE ",s=W22ZaJ0SNY7soEsUEjb6gQ==", "malformed SCRAM challenge (no i= iteration count after the salt)",
        "no iteration count");
    BAD("r=" SNONCE ",s=W22ZaJ0SNY7soEsUEjb6gQ==,i=0",
        "malformed SCRAM challenge (no i= iteration count after the salt)", "i=0");
    BAD("r=" SNONCE ",s=W22ZaJ0SNY7soEsUEjb6gQ==,i=-1",
        "malformed SCRAM challenge (no i= iteration count after the salt)", "a negative count");
    BAD("r=" SNONCE ",s=W22ZaJ0SNY7soEsUEjb6gQ==,i= 4096",
        "malformed SCRAM challenge (no i= iteration count after the salt)", "a space before the count");
    BAD("r=" SNONCE ",s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096x",
        "malformed SCRAM challenge (no i= iteration count after the salt)", "junk after the count");
    BAD("r=" SNONCE ",s=W22ZaJ0SNY7soEsUEjb6gQ==,i=99999999999999999999",
        "malformed SCRAM challenge (no i= iteration count after the salt)", "a count that would overflow");
    BAD("r=" SNONCE ",s=W22ZaJ0SNY7soEsUEjb6gQ==,i=1000001", "the SCRAM iteration count is above 1000000",
        "a count past the bound");
    BAD("r=" SNONCE ",s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096,", "malformed SCRAM challenge (an empty extension)",
        "a trailing comma");
    BAD("r=" SNONCE ",s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096,x=y", "(ok)", "an optional extension is ignored");
    BAD("r=" SNONCE ",s=W22ZaJ0SNY7soEsUEjb6gQ==\0,i=4096", "malformed SCRAM challenge (a NUL byte)", "a NUL byte");
    BAD("", "malformed SCRAM challenge (no r= nonce first)", "an empty challenge");
#undef BAD
    /* a long but legal server nonce and salt: more than the old 600 bytes */
    struct buf msg = BUF_INIT;
    buf_puts(&msg, "r=" NONCE);
    for (int k = 0; k < 1500; k++)
        buf_putc(&msg, "abcdefgh"[k % 8]);
    buf_puts(&msg, ",s=");
    for (int k = 0; k < 1200; k++)
        buf_putc(&msg, 'A');
    buf_puts(&msg, ",i=4096");
    is_str(final_for(msg.data, msg.len), "(ok)", "a 1500-byte server nonce and 900-byte salt are taken whole");
    struct scram_client s;
    struct buf out = BUF_INIT;
    const char *why = NULL;
    scram_client_first(&s, "user", NONCE, &out, &why);
    buf_reset(&out);
    ok(scram_client_final(&s, "pencil", msg.data, msg.len, &out, &why) == 0, "the long nonce");
    ok(out.len > 1500 + 20 &&
       memcmp(out.data + 9, msg.data + 2, 1500 + strlen(NONCE)) == 0, "is sent back whole in client-final");
    scram_client_free(&s);
    buf_reset(&msg);
    buf_puts(&msg, "r=" NONCE);
    for (int k = 0; k < SCRAM_MESSAGE_MAX; k++)
        buf_putc(&msg, 'n');
    buf_puts(&msg, ",s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096");
    is_str(final_for(msg.data, msg.len), "the SCRAM server-first message is longer than 4096 bytes",
           "a server-first message past the bound fails, naming why");
    buf_free(&msg);
    buf_free(&out);
}

int main(void)
{
    test_rfc7677();
    test_user_names();
    test_server_first();
    return done_testing();
}
