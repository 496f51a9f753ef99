/*
 * Unit tests for core/mail/mime.c (Postfix's mime_state) and the action
 * language of core/mail/hbc.c: each callback is written into a trace in
 * the shape of Postfix's own mime_state test program ("MAIN |Subject: x",
 * "MULT |...", "NEST |...", "BODY N offset |line", "HEADER END"), so an
 * expectation reads like the message. Covered: headers joined with "\n"
 * and "Name :" normalised, multipart parts and boundaries at any depth,
 * message/rfc822 and multipart/digest, MIME headers anywhere, garbage in a
 * header block, the header, line, boundary and nesting limits, every
 * error report, base64 left as it is, and that how the input is split
 * never changes the result.
 */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <petrel/pool.h>
#include "lib/buf.h"
#include "mail/hbc.h"
#include "mail/mime.h"
#include "../tap.h"

struct trace {
    struct buf out;
    unsigned errs;
};

static const char *cls_name(enum mime_class c)
{
    return c == MIME_PRIMARY ? "MAIN" : c == MIME_MULTIPART ? "MULT" : "NEST";
}

static void t_header(void *ctx, const struct mime_header *h)
{
    struct trace *t = ctx;
    buf_printf(&t->out, "%s%s |", cls_name(h->cls), h->is_mime ? "*" : "");
    buf_append(&t->out, h->text, h->len);
    buf_putc(&t->out, '\n');
}

static void t_end(void *ctx, unsigned long long end_input, unsigned long long body_input, int separator)
{
    struct trace *t = ctx;
    buf_printf(&t->out, "HEADER END %llu %llu %d\n", end_input, body_input, separator);
}

static void t_body(void *ctx, const char *text, size_t len, int cont, unsigned long long offset,
                   unsigned long long input_start)
{
    struct trace *t = ctx;
    (void)input_start;
    buf_printf(&t->out, "BODY%s %llu |", cont ? "+" : "", offset);
    buf_append(&t->out, text, len);
    buf_putc(&t->out, '\n');
}

static void t_error(void *ctx, unsigned err, const char *text, size_t len)
{
    struct trace *t = ctx;
    (void)text;
    (void)len;
    t->errs |= err;
    buf_printf(&t->out, "ERROR %s\n", mime_error_text(err, NULL));
}

static const struct mime_callbacks callbacks = { t_header, t_end, t_body, t_error };

/* The trace of message fed in pieces of piece bytes (0: all at once). */
static char *run(const char *message, size_t len, const struct mime_limits *lim, unsigned options, size_t piece,
                 unsigned *errs)
{
    struct trace t = { BUF_INIT, 0 };
    struct mime_limits none = { 0, 0, 0, 0 };
    struct mime_parser *p = mime_parser_new(lim ? lim : &none, options, &callbacks, &t);
    if (piece == 0)
        piece = len ? len : 1;
    for (size_t i = 0; i < len; i += piece)
        mime_parser_feed(p, message + i, len - i < piece ? len - i : piece);
    mime_parser_end(p);
    if (errs)
        *errs = mime_parser_errors(p);
    mime_parser_free(p);
    char *s = strdup(t.out.data ? t.out.data : "");
    buf_free(&t.out);
    return s;
}

/* Checks the trace, and that feeding one byte at a time and in pieces of 7
 * gives the same trace. */
static void check(const char *name, const char *message, const struct mime_limits *lim, unsigned options,
                  const char *want)
{
    size_t len = strlen(message);
    char *whole = run(message, len, lim, options, 0, NULL);
    is_str(whole, want, "%s", name);
    char *bytes = run(message, len, lim, options, 1, NULL);
    char *sevens = run(message, len, lim, options, 7, NULL);
    ok(strcmp(whole, bytes) == 0 && strcmp(whole, sevens) == 0, "%s: the same fed in pieces", name);
    free(whole);
    free(bytes);
    free(sevens);
}

static void test_headers(void)
{
    check("primary headers, folded lines joined with LF, the empty line is body",
          "Subject: hello\r\nTo: a@b,\r\n\tc@d\r\n\r\nline one\r\nline two\r\n", NULL, 0,
          "MAIN |Subject: hello\n"
          "MAIN |To: a@b,\n\tc@d\n"
          "HEADER END 32 34 1\n"
          "BODY 0 |\n"
          "BODY 1 |line one\n"
          "BODY 10 |line two\n");
    check("obsolete \"Name :\" becomes \"Name:\"; MIME headers are marked",
          "Subject :  x\r\nMIME-Version: 1.0\r\nContent-Type: text/plain\r\n\r\nb\r\n", NULL, 0,
          "MAIN |Subject:  x\n"
          "MAIN* |MIME-Version: 1.0\n"
          "MAIN* |Content-Type: text/plain\n"
          "HEADER END 59 61 1\n"
          "BODY 0 |\n"
          "BODY 1 |b\n");
    check("a line that is no header ends the headers and is body (no empty line inserted)",
          "Subject: x\r\nFrom nobody\r\nmore\r\n", NULL, 0,
          "MAIN |Subject: x\n"
          "HEADER END 12 12 0\n"
          "BODY 0 |From nobody\n"
          "BODY 12 |more\n");
    check("headers only, no final line end", "Subject: x\r\nX-Last: y", NULL, 0,
          "MAIN |Subject: x\n"
          "MAIN |X-Last: y\n"
          "HEADER END 21 21 0\n");
    check("LF line ends work too", "A: 1\nB: 2\n\nbody\n", NULL, 0,
          "MAIN |A: 1\nMAIN |B: 2\nHEADER END 10 11 1\nBODY 0 |\nBODY 1 |body\n");
}

static const char multipart[] =
    "Subject: parts\r\n"
    "Content-Type: multipart/mixed; boundary=\"outer\"\r\n"
    "\r\n"
    "preamble\r\n"
    "--outer\r\n"
    "Content-Type: text/plain\r\n"
    "X-Part: one\r\n"
    "\r\n"
    "first part\r\n"
    "--outer\r\n"
    "Content-Type: message/rfc822\r\n"
    "\r\n"
    "Subject: inner\r\n"
    "Received: from x\r\n"
    "\r\n"
    "inner body\r\n"
    "--outer--\r\n"
    "epilogue\r\n";

static void test_multipart(void)
{
    /* A closing boundary starts a body part of its own: its offset is 0,
     * as in Postfix (body_checks_size_limit counts per part). */
    check("multipart: part headers, boundaries as body, nested message headers, epilogue", multipart, NULL, 0,
          "MAIN |Subject: parts\n"
          "MAIN* |Content-Type: multipart/mixed; boundary=\"outer\"\n"
          "HEADER END 65 67 1\n"
          "BODY 0 |\n"
          "BODY 1 |preamble\n"
          "BODY 10 |--outer\n"
          "MULT* |Content-Type: text/plain\n"
          "MULT |X-Part: one\n"
          "BODY 0 |\n"
          "BODY 1 |first part\n"
          "BODY 12 |--outer\n"
          "MULT* |Content-Type: message/rfc822\n"
          "BODY 0 |\n"
          "NEST |Subject: inner\n"
          "NEST |Received: from x\n"
          "BODY 0 |\n"
          "BODY 1 |inner body\n"
          "BODY 0 |--outer--\n"
          "BODY 10 |epilogue\n");
    check("multipart/digest parts default to message/rfc822",
          "Content-Type: multipart/digest; boundary=d\r\n\r\n--d\r\n\r\nSubject: digested\r\n\r\nx\r\n--d--\r\n",
          NULL, 0,
          "MAIN* |Content-Type: multipart/digest; boundary=d\n"
          "HEADER END 44 46 1\n"
          "BODY 0 |\n"
          "BODY 1 |--d\n"
          "BODY 0 |\n"
          "NEST |Subject: digested\n"
          "BODY 0 |\n"
          "BODY 1 |x\n"
          "BODY 0 |--d--\n");
    check("an inner boundary ends inner parts; the outer boundary pops them",
          "Content-Type: multipart/mixed; boundary=a\r\n\r\n--a\r\nContent-Type: multipart/alternative; "
          "boundary=b\r\n\r\n--b\r\nX-In: b\r\n\r\ntext\r\n--a\r\nX-Next: a\r\n\r\nafter\r\n--a--\r\n",
          NULL, 0,
          "MAIN* |Content-Type: multipart/mixed; boundary=a\n"
          "HEADER END 43 45 1\n"
          "BODY 0 |\n"
          "BODY 1 |--a\n"
          "MULT* |Content-Type: multipart/alternative; boundary=b\n"
          "BODY 0 |\n"
          "BODY 1 |--b\n"
          "MULT |X-In: b\n"
          "BODY 0 |\n"
          "BODY 1 |text\n"
          "BODY 6 |--a\n"
          "MULT |X-Next: a\n"
          "BODY 0 |\n"
          "BODY 1 |after\n"
          "BODY 0 |--a--\n");
    check("boundary parameters: comments skipped, quoted strings unquoted, case ignored",
          "Content-Type: Multipart/Mixed (a comment); BOUNDARY = \"x y\"\r\n\r\n--x y\r\nH: 1\r\n\r\nb\r\n",
          NULL, 0,
          "MAIN* |Content-Type: Multipart/Mixed (a comment); BOUNDARY = \"x y\"\n"
          "HEADER END 61 63 1\n"
          "BODY 0 |\n"
          "BODY 1 |--x y\n"
          "MULT |H: 1\n"
          "BODY 0 |\n"
          "BODY 1 |b\n");
    check("disable_mime_input_processing: everything after the headers is body", multipart, NULL,
          MIME_OPT_DISABLE_MIME,
          "MAIN |Subject: parts\n"
          "MAIN* |Content-Type: multipart/mixed; boundary=\"outer\"\n"
          "HEADER END 65 67 1\n"
          "BODY 0 |\n"
          "BODY 1 |preamble\n"
          "BODY 10 |--outer\n"
          "BODY 18 |Content-Type: text/plain\n"
          "BODY 43 |X-Part: one\n"
          "BODY 55 |\n"
          "BODY 56 |first part\n"
          "BODY 67 |--outer\n"
          "BODY 75 |Content-Type: message/rfc822\n"
          "BODY 104 |\n"
          "BODY 105 |Subject: inner\n"
          "BODY 120 |Received: from x\n"
          "BODY 137 |\n"
          "BODY 138 |inner body\n"
          "BODY 149 |--outer--\n"
          "BODY 159 |epilogue\n");
    check("base64 is not decoded",
          "Content-Type: text/plain\r\nContent-Transfer-Encoding: base64\r\n\r\nc3BhbQ==\r\n", NULL, 0,
          "MAIN* |Content-Type: text/plain\n"
          "MAIN* |Content-Transfer-Encoding: base64\n"
          "HEADER END 61 63 1\n"
          "BODY 0 |\n"
          "BODY 1 |c3BhbQ==\n");
}

static void test_limits(void)
{
    struct mime_limits small = { 40, 16, 2, 4 };
    check("lines longer than line_limit are records; a header grows by them",
          "Subject: 0123456789abcdefghij\r\n\r\n0123456789abcdefghijklmnopqrstuvwxyz\r\n", &small, 0,
          "MAIN |Subject: 0123456789abcdefghij\n"
          "HEADER END 31 33 1\n"
          "BODY 0 |\n"
          "BODY+ 1 |0123456789abcdef\n"
          "BODY+ 18 |ghijklmnopqrstuv\n"
          "BODY 35 |wxyz\n");
    check("a header past header_limit loses the lines that do not fit",
          "Subject: aaaaaaaaaa\r\n bbbbbbbbbb\r\n cccccccccc\r\n dddddddddd\r\n eeeeeeeeee\r\nX: y\r\n\r\n", &small, 0,
          "MAIN |Subject: aaaaaaaaaa\n bbbbbbbbbb\n cccccccccc\n"
          "MAIN |X: y\n"
          "HEADER END 79 81 1\n"
          "BODY 0 |\n");
    check("a boundary is kept to boundary_limit bytes and still matches",
          "Content-Type: multipart/mixed; boundary=abcdefgh\r\n\r\n--abcdefgh\r\nH: 1\r\n\r\nx\r\n", &small, 0,
          "MAIN* |Content-Type: multipart/mixed; boundary=abcdefgh\n"
          "HEADER END 50 52 1\n"
          "BODY 0 |\n"
          "BODY 1 |--abcdefgh\n"
          "MULT |H: 1\n"
          "BODY 0 |\n"
          "BODY 1 |x\n");
    check("no boundary is looked for in a record that continues a line",
          "Content-Type: multipart/mixed; boundary=b\r\n\r\n0123456789abcdef--b\r\nH: 1\r\n", &small, 0,
          "MAIN* |Content-Type: multipart/mixed; boundary=b\n"
          "HEADER END 43 45 1\n"
          "BODY 0 |\n"
          "BODY+ 1 |0123456789abcdef\n"
          "BODY 18 |--b\n"
          "BODY 22 |H: 1\n");

    /* Nesting past the limit: reported, and the stack stops growing. */
    struct buf deep = BUF_INIT;
    for (int i = 0; i < 30; i++)
        buf_printf(&deep, "Content-Type: multipart/mixed; boundary=b%d\r\n\r\n--b%d\r\n", i, i);
    unsigned errs = 0;
    struct mime_limits nest = { 0, 0, 5, 0 };
    char *trace = run(deep.data, deep.len, &nest, MIME_OPT_REPORT_NESTING, 0, &errs);
    ok(errs == MIME_ERR_NESTING, "nesting deeper than mime_nesting_limit is reported");
    ok(strstr(trace, "ERROR MIME nesting exceeds safety limit\n") != NULL, "once, with Postfix's text");
    free(trace);
    trace = run(deep.data, deep.len, &nest, 0, 0, &errs);
    ok(errs == 0, "without the report option nothing is reported (the boundaries are just not kept)");
    free(trace);
    buf_free(&deep);
    const char *dsn = NULL;
    is_str(mime_error_text(MIME_ERR_NESTING | MIME_ERR_8BIT_IN_HEADER, &dsn), "MIME nesting exceeds safety limit",
           "the most serious error is reported");
    is_str(dsn, "5.6.0", "with 5.6.0");
}

static void test_errors(void)
{
    unsigned errs = 0;
    char *trace = run("Subject: caf\xc3\xa9\r\n\r\nok\r\n", 20, NULL, MIME_OPT_REPORT_8BIT_IN_HEADER, 0, &errs);
    ok(errs == MIME_ERR_8BIT_IN_HEADER, "8-bit data in a header");
    free(trace);
    const char *body8 = "Subject: x\r\n\r\ncaf\xc3\xa9\r\n";
    trace = run(body8, strlen(body8), NULL, MIME_OPT_REPORT_8BIT_IN_7BIT_BODY, 0, &errs);
    ok(errs == MIME_ERR_8BIT_IN_7BIT_BODY, "8-bit data in a body that defaults to 7 bits");
    free(trace);
    const char *body8ok = "Content-Transfer-Encoding: 8bit\r\n\r\ncaf\xc3\xa9\r\n";
    trace = run(body8ok, strlen(body8ok), NULL, MIME_OPT_REPORT_8BIT_IN_7BIT_BODY, 0, &errs);
    ok(errs == 0, "8-bit data in an 8bit body is fine");
    free(trace);
    const char *domain = "Content-Type: multipart/mixed; boundary=x\r\nContent-Transfer-Encoding: base64\r\n\r\nx\r\n";
    trace = run(domain, strlen(domain), NULL, MIME_OPT_REPORT_ENCODING_DOMAIN, 0, &errs);
    ok(errs == MIME_ERR_ENCODING_DOMAIN, "multipart with base64 is an encoding domain error");
    free(trace);
    const char *rfc822 = "Content-Type: message/rfc822\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\nA: b\r\n";
    trace = run(rfc822, strlen(rfc822), NULL, MIME_OPT_REPORT_ENCODING_DOMAIN, 0, &errs);
    ok(errs == MIME_ERR_ENCODING_DOMAIN, "message/rfc822 with quoted-printable too");
    free(trace);
    trace = run(rfc822, strlen(rfc822), NULL, 0, 0, &errs);
    ok(errs == 0, "not reported unless asked");
    free(trace);
}

static void test_header_names(void)
{
    is_int(mime_header_name_len("Subject: x", 10), 7, "a header name");
    is_int(mime_header_name_len("Subject  : x", 12), 7, "the obsolete form");
    is_int(mime_header_name_len(" Subject: x", 11), 0, "not after white space");
    is_int(mime_header_name_len("Sub ject: x", 11), 0, "no white space inside");
    is_int(mime_header_name_len("Subject x", 9), 0, "a colon is needed");
    is_int(mime_header_name_len(":x", 2), 0, "a name is needed");
    is_int(mime_header_name_len("S\xc3\xa9: x", 6), 0, "ASCII only");
    ok(mime_is_mime_header("content-type", 12) && mime_is_mime_header("MIME-Version", 12) &&
           !mime_is_mime_header("Content-Length", 14),
       "MIME headers are Postfix's list");
}

static void test_actions(void)
{
    struct hbc_action a;
    hbc_parse_action("REJECT 5.7.1 go away", &a);
    ok(a.command == HBC_REJECT && strcmp(a.text, "5.7.1 go away") == 0, "REJECT with text");
    hbc_parse_action("prepend X-Seen: yes", &a);
    ok(a.command == HBC_PREPEND && strcmp(a.text, "X-Seen: yes") == 0, "commands are case-insensitive");
    hbc_parse_action("OK", &a);
    ok(a.command == HBC_DUNNO, "OK means DUNNO");
    hbc_parse_action("REJECTED text", &a);
    ok(a.command == HBC_UNKNOWN && a.word_len == 8, "an unknown command keeps its word");
    hbc_parse_action("IGNORE\tall this", &a);
    ok(a.command == HBC_IGNORE && strcmp(a.text, "all this") == 0, "a tab ends the command");
    petrel_pool *pool = petrel_pool_create(256);
    const char *dsn, *rest;
    hbc_dsn_split("5.7.1", "4.7.0 later", pool, &dsn, &rest);
    ok(strcmp(dsn, "4.7.0") == 0 && strcmp(rest, "later") == 0, "a code at the start is taken");
    hbc_dsn_split("5.7.1", "554 no", pool, &dsn, &rest);
    ok(strcmp(dsn, "5.7.1") == 0 && strcmp(rest, "554 no") == 0, "an SMTP code is text");
    hbc_dsn_split("5.7.1", "5.1234.1 x", pool, &dsn, &rest);
    ok(strcmp(dsn, "5.7.1") == 0, "at most three digits");
    hbc_dsn_split("5.7.1", "5.7.1", pool, &dsn, &rest);
    ok(strcmp(dsn, "5.7.1") == 0 && *rest == '\0', "a code alone");
    petrel_pool_destroy(pool);
    ok(hbc_header_list(MIME_PRIMARY, 0) == HBC_HEADER && hbc_header_list(MIME_PRIMARY, 1) == HBC_MIME_HEADER &&
           hbc_header_list(MIME_NESTED, 0) == HBC_NESTED_HEADER && hbc_header_list(MIME_NESTED, 1) == HBC_MIME_HEADER &&
           hbc_header_list(MIME_MULTIPART, 0) == HBC_MIME_HEADER,
       "which list checks which header (Postfix's classes)");
}

int main(void)
{
    test_headers();
    test_multipart();
    test_limits();
    test_errors();
    test_header_names();
    test_actions();
    return done_testing();
}
