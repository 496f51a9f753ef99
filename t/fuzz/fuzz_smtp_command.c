/*
 * Fuzz target for the SMTP command-line parsers (core/mail/smtp_parse.c).
 * The input is one command line; its first byte also picks the parser
 * options. Besides crashes and sanitizer reports it checks invariants:
 * every failure carries a complete 4xx/5xx reply, a parsed address obeys
 * the RFC 5321 length limits, re-parsing the canonical address gives the
 * same address (the canonical form is a fixed point), xtext round-trips, and
 * the HELO name as kept (smtp_helo_printable) is clean, the parameters
 * kept for the milters are the input's tokens, a parameter a milter
 * sets with CHGFROM or ADDRCPT_PAR (smtp_parse_edit_param) never yields a
 * control character, and XFORWARD's arguments (mail/xforward.c) either
 * fail with a complete printable 501 reply and change nothing, or leave
 * values that obey its limits.
 *
 * make check builds it with t/fuzz/replay_main.c and replays
 * t/fuzz/corpus/smtp_command; `make fuzz` runs it with libFuzzer (doc/testing.md).
 */
#include "config.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <petrel/pool.h>
#include "mail/smtp_parse.h"
#include "mail/xforward.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check(int cond)
{
    if (!cond)
        abort();
}

static void check_err(const struct smtp_reply_err *err)
{
    check(err->code >= 400 && err->code < 600);
    check(err->enhanced != NULL && err->text != NULL);
    check(err->enhanced[0] == '0' + err->code / 100);
    for (const char *t = err->text; *t; t++)
        check((unsigned char)*t >= 32 && (unsigned char)*t < 127);
}

static void check_address(const char *address)
{
    check(address != NULL);
    check(strlen(address) <= SMTP_PATH_MAX - 2);
    for (const char *a = address; *a; a++)
        check((unsigned char)*a >= 32 && *a != 127);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > 4096)
        return 0;
    petrel_pool *pool = petrel_pool_create(0);
    char *line = petrel_pool_alloc(pool, size + 1);
    memcpy(line, data, size);
    line[size] = 0;

    unsigned flags = size ? data[0] : 0;
    struct smtp_parse_opts opts = {
        .smtputf8_enabled = !!(flags & 1),
        .dsn_enabled = !!(flags & 2),
        .transaction_smtputf8 = !!(flags & 4),
        .allow_8bit_localpart_without_smtputf8 = !!(flags & 8),
        .allow_missing_domain = !!(flags & 16),
    };

    struct smtp_command cmd;
    if (smtp_parse_command(line, size, &cmd) == 0) {
        check(cmd.args >= line && cmd.args + cmd.args_len == line + size);
        check(smtp_verb_name(cmd.verb) != NULL);
    } else {
        check(memchr(line, 0, size) != NULL);
        cmd.args = line + strlen(line);   /* still exercise the parsers on the prefix */
    }
    /* Also try the text after the first byte so the option byte does not
     * have to spell a verb. */
    const char *inputs[2] = { cmd.args, size ? line + 1 : line };

    for (int k = 0; k < 2; k++) {
        const char *args = inputs[k];
        struct smtp_reply_err err;
        struct smtp_mail_args m;
        if (smtp_parse_mail(args, &opts, pool, &m, &err) == 0) {
            check_address(m.address);
            check(m.null_sender == (m.address[0] == 0));
            check(m.size >= -1);
            char *again = petrel_pool_printf(pool, "FROM:<%s>%s", m.address, m.smtputf8 ? " SMTPUTF8" : "");
            struct smtp_mail_args m2;
            check(smtp_parse_mail(again, &opts, pool, &m2, &err) == 0);
            check(strcmp(m.address, m2.address) == 0);
            check(m.params != NULL && strlen(m.params) <= strlen(args) && m.params[0] != ' ');
            check(strstr(m.params, "  ") == NULL && strchr(m.params, '\t') == NULL);
        } else {
            check_err(&err);
        }
        struct smtp_rcpt_args r;
        if (smtp_parse_rcpt(args, &opts, pool, &r, &err) == 0) {
            check_address(r.address);
            check(r.address[0] != 0);
            check(!(r.notify & SMTP_NOTIFY_NEVER) || r.notify == SMTP_NOTIFY_NEVER);
            char *again = petrel_pool_printf(pool, "TO:<%s>", r.address);
            struct smtp_rcpt_args r2;
            check(smtp_parse_rcpt(again, &opts, pool, &r2, &err) == 0);
            check(strcmp(r.address, r2.address) == 0);
        } else {
            check_err(&err);
        }
        /* the input as a parameter of a milter's CHGFROM, then ADDRCPT_PAR */
        struct smtp_mail_args em = { 0 };
        struct smtp_rcpt_args er = { 0 };
        if (smtp_parse_edit_param(args, pool, &em, NULL) == 0) {
            check(em.ret == SMTP_DSN_RET_FULL || em.ret == SMTP_DSN_RET_HDRS || em.envid != NULL);
            for (const char *e = em.envid ? em.envid : ""; *e; e++)
                check((unsigned char)*e >= 32 && *e != 127);
        }
        if (smtp_parse_edit_param(args, pool, NULL, &er) == 0) {
            check(er.notify != 0 || er.orcpt != NULL);
            check(!(er.notify & SMTP_NOTIFY_NEVER) || er.notify == SMTP_NOTIFY_NEVER);
            for (const char *o = er.orcpt ? er.orcpt : ""; *o; o++)
                check((unsigned char)*o >= 32 && *o != 127);
        }
        unsigned long long chunk;
        int last;
        if (smtp_parse_bdat(args, &chunk, &last, &err) < 0)
            check_err(&err);

        char *decoded;
        if (smtp_xtext_decode(args, pool, &decoded) == 0)
            check(strlen(decoded) <= strlen(args));
        char *encoded = smtp_xtext_encode(args, pool);
        check(smtp_xtext_decode(encoded, pool, &decoded) == 0 && strcmp(decoded, args) == 0);

        if (smtp_is_fqdn(args))
            check(smtp_valid_hostname(args) && strlen(args) <= SMTP_DOMAIN_MAX);
        (void)smtp_valid_address_literal(args);
        const char *domain;
        if (smtp_address_domain(args, &domain))
            check(domain > args && domain[-1] == '@');
    }
    /* XFORWARD's arguments: all or nothing, and what is kept is clean. */
    struct xforward_attrs xf, before;
    memset(&xf, 0, sizeof(xf));
    for (int round = 0; round < 2; round++) {
        char reply[400];
        before = xf;
        if (xforward_parse(cmd.args, strlen(cmd.args), &xf, reply, sizeof(reply)) != 0) {
            check(strncmp(reply, "501 5.5.4 ", 10) == 0);
            for (const char *r = reply; *r; r++)
                check((unsigned char)*r >= 32 && (unsigned char)*r < 127);
            check(memcmp(&xf, &before, sizeof(xf)) == 0);
            break;
        }
        const char *fields[] = { xf.name, xf.addr, xf.port, xf.proto, xf.helo, xf.ident };
        for (size_t i = 0; i < sizeof(fields) / sizeof(fields[0]); i++)
            for (const char *f = fields[i]; *f; f++)
                check((unsigned char)*f >= 32 && (unsigned char)*f < 127);
        for (const char *f = xf.helo; *f; f++)
            check(strchr(" <>()\\\";@", *f) == NULL);
        if ((xf.set & XFORWARD_F_NAME) && strcmp(xf.name, "unknown") != 0)
            check(smtp_valid_hostname(xf.name));
        if ((xf.set & XFORWARD_F_PORT) && strcmp(xf.port, "unknown") != 0)
            check(strspn(xf.port, "0123456789") == strlen(xf.port) && atoi(xf.port) <= 65535);
    }
    /* The HELO name as Received: and the log get it: never longer, never a
     * control byte, blank or specials (whatever the raw bytes, NUL included). */
    char *helo = smtp_helo_printable(line, size, flags & 1, pool);
    check(strlen(helo) <= size);
    for (const char *h = helo; *h; h++)
        check((unsigned char)*h > 32 && *h != 127 && strchr("<>()\\\";@", *h) == NULL);
    petrel_pool_destroy(pool);
    return 0;
}
