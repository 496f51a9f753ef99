/*
 * Unit tests of the SPAMC/SPAMD codec (modules/spamassassin/spamd_proto.c):
 * request heads, the Spam header, and the response parser with good and
 * hostile responses, fed whole and byte by byte, with the exact error texts.
 */
#include <stdio.h>
#include <string.h>

#include "../tap.h"
#include "spamd_proto.h"

static char body[4096];
static size_t body_len;

static int take(void *arg, const void *data, size_t len)
{
    (void)arg;
    if (body_len + len > sizeof body)
        return -1;
    memcpy(body + body_len, data, len);
    body_len += len;
    return 0;
}

/* Feeds a response whole (bytewise = 0) or one byte at a time; then EOF
 * unless it completed. Returns 1 complete, -1 error. */
static int parse(spamd_response *r, const char *text, size_t body_max, int keep, int bytewise)
{
    spamd_response_init(r, body_max, keep);
    body_len = 0;
    size_t len = strlen(text);
    int rc = 0;
    if (bytewise) {
        for (size_t i = 0; i < len && rc == 0; i++)
            rc = spamd_response_feed(r, (const unsigned char *)text + i, 1, take, NULL);
    } else
        rc = spamd_response_feed(r, (const unsigned char *)text, len, take, NULL);
    if (rc == 0)
        rc = spamd_response_eof(r);
    return rc;
}

int main(void)
{
    char head[512], err[256];
    ok(spamd_request_head(SPAMD_SYMBOLS, 1234, NULL, head, sizeof head, err, sizeof err) > 0
       && strcmp(head, "SYMBOLS SPAMC/1.5\r\nContent-length: 1234\r\n\r\n") == 0, "request head");
    ok(spamd_request_head(SPAMD_CHECK, 10, "alice", head, sizeof head, err, sizeof err) > 0
       && strcmp(head, "CHECK SPAMC/1.5\r\nContent-length: 10\r\nUser: alice\r\n\r\n") == 0, "with a User header");
    ok(spamd_request_head(SPAMD_PING, 0, NULL, head, sizeof head, err, sizeof err) > 0
       && strcmp(head, "PING SPAMC/1.5\r\n\r\n") == 0, "PING");
    ok(spamd_request_head(SPAMD_CHECK, 10, "bad\r\nUser: root", head, sizeof head, err, sizeof err) < 0,
       "a user with a line end is refused");
    is_str(err, "the spamd user must be 1 to 128 printable characters without spaces", "  text");
    is_int(spamd_command_parse("process"), SPAMD_PROCESS, "command names, any case");

    int spam;
    double score, threshold;
    ok(spamd_parse_spam("True ; 1000.0 / 5.0", &spam, &score, &threshold) == 0 && spam == 1 && score == 1000.0
       && threshold == 5.0, "Spam: True ; 1000.0 / 5.0");
    ok(spamd_parse_spam("False ; -2.3 / 5.0", &spam, &score, &threshold) == 0 && spam == 0 && score == -2.3,
       "a negative score");
    ok(spamd_parse_spam("Yes ; 7.1 / 5.0", &spam, &score, &threshold) == 0 && spam == 1, "Yes (REPORT_IFSPAM)");
    ok(spamd_parse_spam("Maybe ; 1 / 2", &spam, &score, &threshold) < 0, "neither true nor false");
    ok(spamd_parse_spam("True ; 1e999 / 5", &spam, &score, &threshold) < 0, "no exponents");
    ok(spamd_parse_spam("True ; 1.0 / 5.0 junk", &spam, &score, &threshold) < 0, "text after the threshold");
    ok(spamd_parse_spam("True ; nan / 5.0", &spam, &score, &threshold) < 0, "nan");

    spamd_response r;
    for (int bytewise = 0; bytewise < 2; bytewise++) {
        const char *how = bytewise ? " (byte by byte)" : "";
        ok(parse(&r, "SPAMD/1.1 0 EX_OK\r\nSpam: True ; 1003.3 / 5.0\r\n\r\n", 0, 0, bytewise) == 1 && r.code == 0
           && r.has_spam && r.is_spam && r.score == 1003.3 && strcmp(r.code_text, "EX_OK") == 0,
           "CHECK response%s", how);
        ok(parse(&r, "SPAMD/1.1 0 EX_OK\r\nContent-length: 11\r\nSpam: False ; 0.1 / 5.0\r\n\r\nGTUBE,OTHER", 0, 1,
                 bytewise) == 1 && strcmp(r.symbols, "GTUBE,OTHER") == 0 && body_len == 11,
           "SYMBOLS response%s", how);
        ok(parse(&r, "SPAMD/1.5 0 PONG\r\n", 0, 0, bytewise) == 1 && strcmp(r.code_text, "PONG") == 0,
           "PONG, then the close%s", how);
        ok(parse(&r, "SPAMD/1.0 76 Bad header line: (Content-Length mismatch)\r\n", 0, 0, bytewise) == 1
           && r.code == 76 && strcmp(r.code_text, "Bad header line: (Content-Length mismatch)") == 0,
           "an error response%s", how);
    }
    ok(parse(&r, "SPAMD/1.1 0 EX_OK\r\nContent-length: 100\r\n\r\nshort", 0, 0, 0) < 0, "a body cut short");
    is_str(r.error, "connection closed after 5 of 100 body bytes", "  text");
    ok(parse(&r, "SPAMD/1.1 0 EX_OK\r\nContent-length: 3\r\n\r\nabcdef", 0, 0, 0) < 0, "bytes after the body");
    is_str(r.error, "3 bytes after the response body", "  text");
    ok(parse(&r, "SPAMD/1.1 0 EX_OK\r\nContent-length: 5000\r\n\r\n", 1000, 0, 0) < 0, "a body above the limit");
    is_str(r.error, "response body of 5000 bytes is over the limit of 1000", "  text");
    ok(parse(&r, "HTTP/1.1 200 OK\r\n\r\n", 0, 0, 0) < 0, "not spamd");
    is_str(r.error, "not a spamd response: \"HTTP/1.1 200 OK\"", "  text");
    ok(parse(&r, "SPAMD/x 0 EX_OK\r\n\r\n", 0, 0, 0) < 0, "a bad version");
    ok(parse(&r, "SPAMD/1.1 zero EX_OK\r\n\r\n", 0, 0, 0) < 0, "a bad code");
    is_str(r.error, "bad code in the status line", "  text");
    ok(parse(&r, "SPAMD/1.1 0 EX_OK\r\nSpam: Perhaps\r\n\r\n", 0, 0, 0) < 0, "a bad Spam header");
    is_str(r.error, "bad Spam header: \"Perhaps\"", "  text");
    ok(parse(&r, "SPAMD/1.1 0 EX_OK\r\nContent-length: -1\r\n\r\n", 0, 0, 0) < 0, "a negative Content-length");
    is_str(r.error, "bad Content-length", "  text");
    ok(parse(&r, "SPAMD/1.1 0 EX_OK\r\nContent-length: 99999999999999999999\r\n\r\n", 0, 0, 0) < 0,
       "a huge Content-length");
    ok(parse(&r, "SPAMD/1.1 0 EX_OK\r\nno colon here\r\n\r\n", 0, 0, 0) < 0, "a header without a colon");
    is_str(r.error, "response header without a colon", "  text");
    ok(parse(&r, "SPAMD/1.1 0 EX_OK\r\nSpam: True ; 1 / 5\r\n", 0, 0, 0) < 0, "closed in the headers");
    is_str(r.error, "connection closed in the response headers", "  text");
    spamd_response_init(&r, 0, 0);
    ok(spamd_response_feed(&r, (const unsigned char *)"SPAMD/1.1 0 EX\0OK", 17, take, NULL) == 0
       && spamd_response_eof(&r) < 0, "a NUL in an unterminated status line (found by the fuzzer)");
    is_str(r.error, "NUL in a response line", "  text");
    ok(parse(&r, "", 0, 0, 0) < 0, "nothing at all");
    is_str(r.error, "connection closed before the status line", "  text");

    char longline[2100];
    memset(longline, 'a', sizeof longline - 1);
    memcpy(longline, "SPAMD/1.1 0 ", 12);
    longline[sizeof longline - 1] = 0;
    ok(parse(&r, longline, 0, 0, 0) < 0, "a line over %d bytes", SPAMD_LINE_MAX);
    is_str(r.error, "response line longer than 1024 bytes", "  text");
    char many[2000];
    size_t o = (size_t)sprintf(many, "SPAMD/1.1 0 EX_OK\r\n");
    for (int i = 0; i < 40; i++)
        o += (size_t)sprintf(many + o, "X-%d: y\r\n", i);
    strcpy(many + o, "\r\n");
    ok(parse(&r, many, 0, 0, 0) < 0, "more than %d headers", SPAMD_HEADERS_MAX);
    is_str(r.error, "more than 32 response headers", "  text");
    ok(parse(&r, "SPAMD/1.1 0 EX_\x01OK\r\nSpam: True ; 1 / 5\r\n\r\n", 0, 0, 0) == 1
       && strcmp(r.code_text, "EX_?OK") == 0, "control characters in the status text are made printable");
    return done_testing();
}
