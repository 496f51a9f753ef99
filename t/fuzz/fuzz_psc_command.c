/*
 * Fuzz target for postscreen's reading of what a client sends before it
 * is handed to smtpd (core/smtpd/psc_parse.c): the command line framing
 * with its bare-newline and length tests, the command words, Postfix's
 * is_header (the non-SMTP command test), the printable form of a command
 * name that is logged, and the MAIL/RCPT address that is logged. Any
 * client on port 25 reaches all of it.
 *
 * Input: byte 0 gives line_length_limit (8..2048) and whether SMTPUTF8 is
 * on; the rest is the client's byte stream, framed one byte at a time as
 * psc_smtpd.c does.
 *
 * Properties beyond "no crash, no sanitizer report", each against an
 * independent reading of the stream:
 *  - a line ends exactly at CRLF (CRLF taken off) or at a bare LF (LF
 *    taken off), holds exactly the bytes in between, and is never longer
 *    than the limit; "too long" comes exactly when limit bytes are held;
 *  - the words are the line's non-space runs, in order;
 *  - is_header is true exactly for a ':' after a non-empty run of
 *    printable ASCII without blanks (blanks allowed only before ':');
 *  - the printable form has the same length, keeps printable ASCII, and
 *    holds only printable ASCII (and valid UTF-8 with SMTPUTF8);
 *  - the address of "X:..." holds no more bytes than the argument.
 *
 * make check builds it with t/fuzz/replay_main.c and replays
 * t/fuzz/corpus/psc_command; `make fuzz` runs it with libFuzzer (doc/testing.md).
 */
#include "config.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lib/buf.h"
#include "mail/smtp_syntax.h"
#include "smtpd/psc_parse.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check(int cond, const char *what)
{
    if (!cond) {
        fprintf(stderr, "property violated: %s\n", what);
        abort();
    }
}

static int header_oracle(const char *w)
{
    const char *colon = strchr(w, ':');
    if (colon == NULL)
        return 0;
    size_t n = (size_t)(colon - w);
    while (n > 0 && (w[n - 1] == ' ' || w[n - 1] == '\t'))
        n--;
    if (n == 0)
        return 0;
    for (size_t k = 0; k < n; k++)
        if ((unsigned char)w[k] < 0x21 || (unsigned char)w[k] > 0x7e)
            return 0;
    return 1;
}

static void check_printable(const char *orig, int utf8)
{
    size_t len = strlen(orig);
    char *p = malloc(len + 1);
    check(p != NULL, "out of memory in the harness");
    memcpy(p, orig, len + 1);
    psc_make_printable(p, utf8);
    check(strlen(p) == len, "the printable form has the same length");
    for (size_t k = 0; k < len; k++) {
        unsigned char c = (unsigned char)p[k];
        if ((unsigned char)orig[k] >= 0x20 && (unsigned char)orig[k] < 0x7f)
            check(c == (unsigned char)orig[k], "printable ASCII is kept");
        if (c >= 0x80)
            check(utf8, "8-bit bytes only with SMTPUTF8");
        else
            check(c >= 0x20 && c < 0x7f, "no control character in the printable form");
    }
    if (utf8)
        check(smtp_valid_utf8((const unsigned char *)p, len), "the printable form is valid UTF-8");
    free(p);
}

static void one_line(const char *line, size_t len, int utf8)
{
    /* what run_command sees: the line as a string (a NUL ends it) */
    char *copy = malloc(len + 1), *words = malloc(len + 1);
    check(copy && words, "out of memory in the harness");
    memcpy(copy, line, len);
    copy[len] = '\0';
    size_t slen = strlen(copy);
    /* the words, against the non-space runs */
    char *cursor = copy;
    size_t pos = 0, count = 0;
    const char *name = NULL;
    char *w;
    while ((w = psc_next_token(&cursor)) != NULL) {
        size_t wl = strlen(w);
        check(wl > 0 && strchr(w, ' ') == NULL, "a word is a non-empty run without spaces");
        while (pos < slen && line[pos] == ' ')
            pos++;
        check(pos + wl <= slen && memcmp(line + pos, w, wl) == 0 && (pos + wl == slen || line[pos + wl] == ' '),
              "the words are the line's non-space runs, in order");
        pos += wl;
        if (count++ == 0)
            name = w;
    }
    while (pos < slen && line[pos] == ' ')
        pos++;
    check(pos == slen, "no run is left out");
    if (name) {
        check(psc_is_header(name) == header_oracle(name), "is_header as Postfix's");
        check_printable(name, utf8);
    }
    /* MAIL FROM:/RCPT TO: */
    memcpy(words, line, len);
    words[len] = '\0';
    char *colon = strchr(words, ':');
    if (colon) {
        struct buf b = BUF_INIT;
        buf_puts(&b, "x");
        const char *addr = psc_extract_addr(colon + 1, &b);
        check(addr >= b.data + 1 && strlen(addr) <= strlen(colon + 1), "the address is no longer than its argument");
        check(b.len >= 1 && memcmp(b.data, "x", 1) == 0, "what the buffer held is kept");
        buf_free(&b);
    }
    free(copy);
    free(words);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1 || size > 65536)
        return 0;
    size_t limit = 8 + (size_t)(data[0] & 0x7f) * 16;
    int utf8 = data[0] >> 7;
    data++;
    size--;
    struct buf cmd = BUF_INIT;
    int state = PSC_READ_ANY;
    size_t start = 0;
    for (size_t i = 0; i < size; i++) {
        size_t held = cmd.len;
        enum psc_line_event ev = psc_line_byte(&cmd, &state, data[i], limit);
        if (ev == PSC_LINE_TOO_LONG) {
            check(held == limit && cmd.len == limit, "too long exactly when limit bytes are held");
            /* the session is dropped; start afresh after this byte */
            buf_reset(&cmd);
            state = PSC_READ_ANY;
            start = i + 1;
            continue;
        }
        check(cmd.len <= limit, "a line within the limit");
        if (ev == PSC_LINE_MORE) {
            check(data[i] != '\n', "an LF always ends a line");
            continue;
        }
        check(data[i] == '\n', "a line ends at an LF");
        size_t end = i;   /* the LF */
        if (ev == PSC_LINE_CRLF) {
            check(end > start && data[end - 1] == '\r', "CRLF after a CR");
            end--;
        } else {
            check(end == start || data[end - 1] != '\r', "a bare LF has no CR before it");
        }
        check(cmd.len == end - start && memcmp(cmd.data, data + start, cmd.len) == 0,
              "the line holds exactly the bytes before its end");
        one_line(cmd.data, cmd.len, utf8);
        buf_reset(&cmd);
        state = PSC_READ_ANY;
        start = i + 1;
    }
    buf_free(&cmd);
    return 0;
}
