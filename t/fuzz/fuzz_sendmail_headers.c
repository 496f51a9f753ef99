/*
 * Fuzz target for what petrel-sendmail does with a message's header
 * section: the header pass (core/tools/sendmail_submit.c: Bcc removed,
 * Date/Message-ID/From added, To/Cc/Bcc and Resent- values collected for
 * -t) and the RFC 5322 address-list parser those values go through
 * (core/mail/addrlist.c), then the maildrop stream it writes. A local user
 * controls all of it.
 *
 * Input: byte 0 picks the options (drop a leading "From " line, -F full
 * name, null sender); the rest is the message as sendmail reads it from
 * standard input (lines end at LF; trailing CRs are dropped, as
 * petrel-sendmail does).
 *
 * Properties, beyond "no crash, no leak, no hang":
 *  - every recipient -t extracts is in canonical SMTP form: smtpd's own
 *    path parser reads RCPT TO:<address> back as exactly that address, and
 *    the maildrop format accepts it;
 *  - parse-then-serialise: each mailbox the address-list parser reports,
 *    written back as quoted-local@domain, parses to the same mailbox;
 *  - the maildrop stream written from it is accepted by the maildrop reader
 *    that pickup uses; its header section has no Bcc or Resent-Bcc field,
 *    CRLF line ends only, and a From, a Date and a Message-ID.
 *
 * make check builds it with t/fuzz/replay_main.c and replays
 * t/fuzz/corpus/sendmail_headers; `make fuzz` runs it with libFuzzer
 * (doc/testing.md).
 */
#include "config.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <petrel/pool.h>
#include "lib/buf.h"
#include "mail/addrlist.h"
#include "queue/maildrop.h"
#include "mail/smtp_parse.h"
#include "tools/sendmail.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define MAX_MAILBOXES 2000   /* keep one input cheap */

static void check(int cond, const char *what)
{
    if (!cond) {
        fprintf(stderr, "property violated: %s\n", what);
        abort();
    }
}

struct found {
    const struct sm_conf *conf;
    petrel_pool *pool;
    size_t count;
    int roundtrip;       /* checking a serialised mailbox: record it, nothing else */
    const char *local, *domain;
};

static int same(const char *a, const char *b)
{
    return (a == NULL && b == NULL) || (a && b && strcmp(a, b) == 0);
}

static int found_again(void *ctx, const char *local, const char *domain)
{
    struct found *f = ctx;
    f->count++;
    f->local = local;
    f->domain = domain;
    return 0;
}

static int found_mailbox(void *ctx, const char *local, const char *domain)
{
    struct found *f = ctx;
    if (++f->count > MAX_MAILBOXES)
        return -1;
    check(local != NULL, "a mailbox has a local part");
    /* Serialise and parse again: the same mailbox. */
    const char *quoted = addrlist_quote_local(f->pool, local);
    const char *text = domain ? petrel_pool_printf(f->pool, "%s@%s", quoted, domain) : quoted;
    struct found again = { f->conf, f->pool, 0, 1, NULL, NULL };
    const char *error = NULL;
    int rc = addrlist_parse(text, strlen(text), f->pool, found_again, &again, &error);
    check(rc == 0 && again.count == 1 && same(again.local, local) && same(again.domain, domain),
          "a mailbox written back as quoted-local@domain parses to the same mailbox");
    /* What -t would put in the envelope. */
    const char *why = NULL;
    const char *address = sm_qualify(f->conf, local, domain, 0, &why);
    if (address == NULL) {
        check(why != NULL, "a refused recipient says why");
        return 0;
    }
    check(maildrop_address_ok(address, 0, &why) == 0, "a recipient is in canonical maildrop form");
    for (const char *c = address; *c; c++)
        check((unsigned char)*c >= 32 && *c != 127, "no control character in a recipient");
    struct smtp_parse_opts opts = { .smtputf8_enabled = 1, .transaction_smtputf8 = 1 };
    struct smtp_rcpt_args r;
    struct smtp_reply_err err;
    check(smtp_parse_rcpt(petrel_pool_printf(f->pool, "TO:<%s>", address), &opts, f->pool, &r, &err) == 0 &&
              strcmp(r.address, address) == 0,
          "smtpd reads RCPT TO:<recipient> back as the same address");
    return 0;
}

struct drop_view {
    struct buf content;
    int sender_seen, rcpts;
};

static int on_content(void *ctx, const void *d, size_t n)
{
    buf_append(&((struct drop_view *)ctx)->content, d, n);
    return 0;
}

static int on_rcpt(void *ctx, const char *a)
{
    (void)a;
    ((struct drop_view *)ctx)->rcpts++;
    return 0;
}

static int on_sender(void *ctx, const char *a)
{
    (void)a;
    ((struct drop_view *)ctx)->sender_seen = 1;
    return 0;
}

static int field_is(const char *line, size_t len, const char *name)
{
    size_t n = strlen(name);
    return len > n && strncasecmp(line, name, n) == 0 && line[n] == ':';
}

static void check_drop(const char *mem, size_t len)
{
    struct drop_view v;
    memset(&v, 0, sizeof(v));
    buf_append(&v.content, "", 0);
    static const struct maildrop_handler handler = { NULL, on_sender, on_rcpt, NULL, on_content, NULL };
    struct maildrop_parser p;
    maildrop_parser_init(&p, MAILDROP_SUBMISSION, 0);
    int rc = maildrop_parse(&p, mem, len, &handler, &v);
    if (rc == 0)
        rc = maildrop_parse_finish(&p);
    if (rc != 0)
        fprintf(stderr, "maildrop reader: %s\n", p.error);
    check(rc == 0 && v.sender_seen && v.rcpts == 1, "the maildrop stream sendmail writes is accepted");
    /* The header section: up to the first empty line. */
    const char *c = v.content.data, *end = c + v.content.len;
    int from = 0, date = 0, msgid = 0;
    while (c < end) {
        const char *lf = memchr(c, '\n', (size_t)(end - c));
        check(lf != NULL && lf > c && lf[-1] == '\r', "header lines end in CRLF");
        size_t n = (size_t)(lf - c) - 1;
        if (n == 0)
            break;
        check(memchr(c, '\n', n) == NULL, "no bare LF in a header line");
        if (c[0] != ' ' && c[0] != '\t') {
            check(!field_is(c, n, "Bcc") && !field_is(c, n, "Resent-Bcc"), "Bcc never leaves this host");
            from |= field_is(c, n, "From");
            date |= field_is(c, n, "Date");
            msgid |= field_is(c, n, "Message-ID");
        }
        c = lf + 1;
    }
    check(from && date && msgid, "the header section has From, Date and Message-ID");
    buf_free(&v.content);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1 || size > 100000)
        return 0;
    unsigned flags = data[0];
    petrel_pool *pool = petrel_pool_create(0);
    struct sm_conf conf = {
        .confdir = "/nonexistent", .default_confdir = 1, .myorigin = "petrel.test",
        .myhostname = "mx.petrel.test", .mail_name = "Petrel", .helper = "/nonexistent", .login = "user",
        .pool = pool,
    };
    const char *sender = (flags & 4) ? "" : "user@petrel.test";
    struct sm_headers h;
    sm_headers_init(&h, &conf, 1, sender, (flags & 2) ? "Joe \"Q\" Public, Esq." : NULL, flags & 1);

    /* Lines as petrel-sendmail's next_line gives them. */
    const char *in = (const char *)data + 1, *end = (const char *)data + size;
    char *line = malloc(size);
    int ended = 0;
    size_t first_body_len = 0;
    while (in < end && !ended) {
        const char *lf = memchr(in, '\n', (size_t)(end - in));
        size_t len = lf ? (size_t)(lf - in) : (size_t)(end - in);
        memcpy(line, in, len);
        in = lf ? lf + 1 : end;
        while (len && line[len - 1] == '\r')
            len--;
        line[len] = '\0';
        ended = sm_headers_line(&h, line, len);
        first_body_len = len;
    }
    if (ended >= 0) {
        char **values = h.nresent ? h.resent_to : h.to;
        size_t n = h.nresent ? h.nresent : h.nto;
        struct found f = { &conf, pool, 0, 0, NULL, NULL };
        for (size_t i = 0; i < n; i++) {
            const char *error = NULL;
            if (addrlist_parse(values[i], strlen(values[i]), pool, found_mailbox, &f, &error) != 0)
                check(error != NULL, "a refused address list says why");
        }

        /* The maildrop stream, read back as pickup reads it. */
        char *mem = NULL;
        size_t mlen = 0;
        FILE *fp = open_memstream(&mem, &mlen);
        struct maildrop_writer w;
        maildrop_writer_init(&w, fp);
        maildrop_write_sender(&w, sender);
        maildrop_write_recipient(&w, "rcpt@petrel.test");
        maildrop_write_content_start(&w);
        sm_headers_emit(&h, &w);
        if (ended == 2) {
            maildrop_write_content(&w, line, first_body_len);
            maildrop_write_content(&w, "\r\n", 2);
        }
        check(maildrop_write_end(&w) == 0, "the maildrop stream is written");
        maildrop_writer_free(&w);
        fclose(fp);
        check_drop(mem, mlen);
        free(mem);
    }
    free(line);
    sm_headers_free(&h);
    petrel_pool_destroy(pool);
    return 0;
}
