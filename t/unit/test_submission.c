/* Unit tests for local submission's parsers: RFC 5322 address lists
 * (core/mail/addrlist.c, what petrel-sendmail -t reads from To:/Cc:/Bcc:)
 * and the maildrop file format (core/queue/maildrop.c): round trips, every
 * rule of the format, and input split at every byte. */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <petrel/pool.h>
#include "lib/buf.h"
#include "mail/addrlist.h"
#include "queue/maildrop.h"
#include "../tap.h"

/* ---- address lists ---- */

static int collect(void *ctx, const char *local, const char *domain)
{
    struct buf *b = ctx;
    if (b->len)
        buf_puts(b, " | ");
    buf_printf(b, "%s@%s", local, domain ? domain : "(none)");
    return 0;
}

/* The mailboxes of text as "local@domain | ...", or "ERROR: why". */
static const char *parse(petrel_pool *pool, const char *text)
{
    struct buf b = BUF_INIT;
    const char *error = NULL;
    const char *out;
    if (addrlist_parse(text, strlen(text), pool, collect, &b, &error) != 0)
        out = petrel_pool_printf(pool, "ERROR: %s", error);
    else
        out = petrel_pool_strdup(pool, b.data ? b.data : "");
    buf_free(&b);
    return out;
}

static void test_addrlist(void)
{
    petrel_pool *pool = petrel_pool_create(4096);
    static const struct { const char *in, *want; } cases[] = {
        { "a@example.com", "a@example.com" },
        { "a@example.com, b@example.org", "a@example.com | b@example.org" },
        { "\"john doe\"@example.com", "john doe@example.com" },
        { "John Doe <john.doe@example.com>", "john.doe@example.com" },
        { "\"Doe, John\" <jd@example.com>, x@y.example", "jd@example.com | x@y.example" },
        { "jd@example.com (John Doe, the one)", "jd@example.com" },
        { "(comment (nested) here) a@b.example", "a@b.example" },
        { "team: a@x.example, \"b c\"@y.example;, d@z.example", "a@x.example | b c@y.example | d@z.example" },
        { "undisclosed-recipients:;", "" },
        { "Group:;", "" },
        { "list: a@x.example", "a@x.example" },
        { "<@route.example,@other.example:u@final.example>", "u@final.example" },
        { "user", "user@(none)" },
        { "u@[192.0.2.1]", "u@[192.0.2.1]" },
        { "\"a\\\"b\"@example.com", "a\"b@example.com" },
        { "|touch /tmp/x", "|touch /tmp/x@(none)" },
        { "\"|touch /tmp/x\"@localhost", "|touch /tmp/x@localhost" },
        { " , ,a@b.example,, ", "a@b.example" },
        { "first.last @ example . com", "first.last@example.com" },
        { "Jörg <jörg@bücher.example>", "jörg@bücher.example" },
        { "\"unterminated@example.com", "ERROR: unbalanced '\"' in address" },
        { "a@example.com (open", "ERROR: unbalanced '(' in address" },
        { "Joe <joe@example.com", "ERROR: missing '>' in address" },
        { "Joe <joe@example.com> trailing", "ERROR: text after '>' in address" },
        { "a@", "ERROR: missing domain after '@'" },
        { "@example.com", "ERROR: empty local part in address" },
        { "a@b@c", "ERROR: more than one '@' in address" },
        { "<>", "ERROR: empty address <>" },
        { "a\001b@example.com", "ERROR: control character in address" },
        { "\"a\rb\"@example.com", "ERROR: line break in a quoted string" },
        { "a@b.example>", "ERROR: bad address syntax" },
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
        is_str(parse(pool, cases[i].in), cases[i].want, "address list: %s", cases[i].in);

    is_str(addrlist_quote_local(pool, "john.doe"), "john.doe", "a dot-atom stays unquoted");
    is_str(addrlist_quote_local(pool, "john doe"), "\"john doe\"", "a space needs quotes");
    is_str(addrlist_quote_local(pool, "a\"b\\c"), "\"a\\\"b\\\\c\"", "quote and backslash are escaped");
    is_str(addrlist_quote_local(pool, ".a"), "\".a\"", "a leading dot needs quotes");
    is_str(addrlist_quote_local(pool, "a..b"), "\"a..b\"", "two dots need quotes");
    is_str(addrlist_quote_local(pool, "|cmd"), "|cmd", "'|' is atom text (the router must not run it)");
    petrel_pool_destroy(pool);
}

/* ---- maildrop ---- */

static void test_addresses(void)
{
    petrel_pool *pool = petrel_pool_create(4096);
    const char *why = NULL, *out = NULL;
    ok(maildrop_address_ok("a@example.com", 0, &why) == 0, "a plain recipient is canonical");
    ok(maildrop_address_ok("\"john doe\"@example.com", 0, &why) == 0, "a quoted local part is canonical");
    ok(maildrop_address_ok("", 1, &why) == 0, "the null sender is allowed as sender");
    ok(maildrop_address_ok("", 0, &why) != 0, "but not as recipient");
    ok(maildrop_address_ok("a@example.com\r\nRCPT TO:<b@x>", 0, &why) != 0 && strstr(why, "line break"),
       "CR/LF is refused: %s", why);
    ok(maildrop_address_ok("a@example.com> NOTIFY=NEVER", 0, &why) != 0, "no parameter smuggling past '>'");
    ok(maildrop_address_ok("\"john.doe\"@example.com", 0, &why) != 0, "a needlessly quoted dot-atom is not canonical");
    ok(maildrop_address_canonical("\"john.doe\"@example.com", 0, pool, &out, &why) == 0 &&
       strcmp(out, "john.doe@example.com") == 0, "canonical form drops needless quotes");
    ok(maildrop_address_ok("j\xc3\xb6rg@b\xc3\xbc" "cher.example", 0, &why) == 0, "UTF-8 is allowed (SMTPUTF8)");
    ok(maildrop_address_ok("bad\xff@example.com", 0, &why) != 0, "invalid UTF-8 is not");
    char longaddr[400];
    memset(longaddr, 'a', 300);
    strcpy(longaddr + 300, "@example.com");
    ok(maildrop_address_ok(longaddr, 0, &why) != 0, "an overlong address is refused");
    ok(maildrop_name_valid("0000000000000FZZZ00") && !maildrop_name_valid("../etc/passwd"),
       "maildrop names are queue IDs");
    petrel_pool_destroy(pool);
}

struct seen {
    struct buf log;
    unsigned long long content;
};

static int on_time(void *ctx, long long sec, long usec)
{
    struct seen *s = ctx;
    buf_printf(&s->log, "T%lld.%ld ", sec, usec);
    return 0;
}

static int on_sender(void *ctx, const char *a)
{
    struct seen *s = ctx;
    buf_printf(&s->log, "S<%s> ", a);
    return 0;
}

static int on_rcpt(void *ctx, const char *a)
{
    struct seen *s = ctx;
    buf_printf(&s->log, "R<%s> ", a);
    return 0;
}

static int on_content(void *ctx, const void *data, size_t len)
{
    struct seen *s = ctx;
    s->content += len;
    return 0;
}

static const struct maildrop_handler handler = { on_time, on_sender, on_rcpt, NULL, on_content, NULL };

/* Writes a file image through the writer into a memory stream. */
static char *build(size_t *len, int with_time, const char *sender, const char *const *rcpts, const char *content)
{
    char *mem = NULL;
    FILE *fp = open_memstream(&mem, len);
    struct maildrop_writer w;
    maildrop_writer_init(&w, fp);
    if (with_time)
        maildrop_write_time(&w, 1700000000, 123456);
    maildrop_write_sender(&w, sender);
    for (; *rcpts; rcpts++)
        maildrop_write_recipient(&w, *rcpts);
    maildrop_write_content_start(&w);
    maildrop_write_content(&w, content, strlen(content));
    maildrop_write_end(&w);
    maildrop_writer_free(&w);
    fclose(fp);
    return mem;
}

/* Parses img fed in pieces of step bytes; returns "" or the error. */
static const char *feed(petrel_pool *pool, const char *img, size_t len, size_t step, enum maildrop_source src,
                        unsigned long long limit, struct seen *seen)
{
    struct maildrop_parser p;
    maildrop_parser_init(&p, src, limit);
    for (size_t off = 0; off < len; off += step) {
        size_t n = len - off < step ? len - off : step;
        if (maildrop_parse(&p, img + off, n, &handler, seen) != 0)
            return petrel_pool_strdup(pool, p.error);
    }
    if (maildrop_parse_finish(&p) != 0)
        return petrel_pool_strdup(pool, p.error);
    return "";
}

static void test_maildrop_format(void)
{
    petrel_pool *pool = petrel_pool_create(4096);
    const char *rcpts[] = { "a@example.com", "\"john doe\"@example.com", NULL };
    size_t len;
    char *img = build(&len, 1, "s@example.com", rcpts, "Subject: x\r\n\r\nbody\r\n");
    struct seen seen = { BUF_INIT, 0 };
    is_str(feed(pool, img, len, len, MAILDROP_FILE, 0, &seen), "", "a written file parses");
    is_str(seen.log.data, "T1700000000.123456 S<s@example.com> R<a@example.com> R<\"john doe\"@example.com> ",
           "records come back in order");
    is_int(seen.content, 20, "the content length");
    int split_ok = 1;
    for (size_t step = 1; step < 40; step++) {
        struct seen s2 = { BUF_INIT, 0 };
        const char *r = feed(pool, img, len, step, MAILDROP_FILE, 0, &s2);
        if (*r || strcmp(s2.log.data, seen.log.data) != 0 || s2.content != 20)
            split_ok = 0;
        buf_free(&s2.log);
    }
    ok(split_ok, "the same result when the input arrives in pieces of 1 to 39 bytes");
    buf_free(&seen.log);

    int truncations_fail = 1;
    for (size_t cut = 0; cut < len; cut++) {
        struct seen s2 = { BUF_INIT, 0 };
        if (*feed(pool, img, cut, len, MAILDROP_FILE, 0, &s2) == '\0')
            truncations_fail = 0;
        buf_free(&s2.log);
    }
    ok(truncations_fail, "every truncation is refused");
    struct seen s3 = { BUF_INIT, 0 };
    ok(strstr(feed(pool, img, len, len, MAILDROP_SUBMISSION, 0, &s3), "time record may not be submitted") != NULL,
       "a submitted stream may not carry its own time");
    buf_free(&s3.log);
    struct seen s4 = { BUF_INIT, 0 };
    ok(strstr(feed(pool, img, len, len, MAILDROP_FILE, 10, &s4), "message larger than 10 bytes") != NULL,
       "the content limit is enforced");
    buf_free(&s4.log);
    free(img);

    img = build(&len, 0, "s@example.com", rcpts, "x\r\n");
    struct seen s5 = { BUF_INIT, 0 };
    is_str(feed(pool, img, len, 7, MAILDROP_SUBMISSION, 0, &s5), "", "the submission stream (no time) parses");
    struct seen s6 = { BUF_INIT, 0 };
    ok(strstr(feed(pool, img, len, len, MAILDROP_FILE, 0, &s6), "missing time record") != NULL,
       "a file needs its time record");
    buf_free(&s5.log);
    buf_free(&s6.log);
    free(img);

    /* Hand-made bad inputs: the exact reason for each. */
    static const struct { const char *name; const char *bytes; size_t len; const char *error; } bad[] = {
        { "bad magic", "PETRELQ1", 8, "not a maildrop file (bad magic) (at byte 6)" },
        { "unknown record", "PETRELM1Z\0\0\0\0", 13, "unknown record type 'Z' (at byte 8)" },
        { "recipient first", "PETRELM1R\0\0\0\1a", 14, "recipient before the sender (at byte 8)" },
        { "no recipient", "PETRELM1S\0\0\0\0M\0\0\0\0", 18, "no recipient (at byte 13)" },
        { "CR/LF sender", "PETRELM1S\0\0\0\5a\r\nb@", 18, "sender address: line break (CR or LF) in address (at byte 18)" },
        { "NUL address", "PETRELM1S\0\0\0\0R\0\0\0\3a\0b", 21, "NUL byte in recipient address (at byte 21)" },
        { "huge address", "PETRELM1S\0\0\0\0R\0\1\0\0", 18, "address of 65536 bytes (at most 254) (at byte 13)" },
        { "huge chunk", "PETRELM1S\0\0\0\0R\0\0\0\3a@b" "M\0\0\0\0C\0\2\0\0", 31,
          "content record of 131072 bytes (expected 1 to 65536) (at byte 26)" },
        { "bad end", "PETRELM1S\0\0\0\0R\0\0\0\3a@b" "M\0\0\0\0X\0\0\0\10\0\0\0\0\0\0\0\1", 39,
          "end record says 1 content bytes, 0 were read (at byte 39)" },
        { "trailing", "PETRELM1S\0\0\0\0R\0\0\0\3a@b" "M\0\0\0\0X\0\0\0\10\0\0\0\0\0\0\0\0!", 40,
          "data after the end record (at byte 39)" },
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        struct seen s = { BUF_INIT, 0 };
        is_str(feed(pool, bad[i].bytes, bad[i].len, bad[i].len, MAILDROP_SUBMISSION, 0, &s), bad[i].error,
               "refused: %s", bad[i].name);
        buf_free(&s.log);
    }
    petrel_pool_destroy(pool);
}

int main(void)
{
    test_addrlist();
    test_addresses();
    test_maildrop_format();
    return done_testing();
}
