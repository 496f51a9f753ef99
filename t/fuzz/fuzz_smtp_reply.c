/*
 * Fuzz target for the SMTP client's reply reader (core/deliver/smtp_reply.c):
 * what a remote server, or anything that answers on its port, sends us.
 * Byte 0 says whether an EHLO reply is awaited (keywords) and how the stream
 * is cut; the rest is the server's byte stream.
 *
 * Properties, beyond "no crash, no leak, no hang":
 *  - the same stream fed whole, one byte at a time and in pieces gives the
 *    same replies and fails (if it does) at the same reply;
 *  - every reply is complete: a code 100..599, a text that starts with that
 *    code and holds no control character, within SMTP_REPLY_TEXT_MAX; an
 *    enhanced code only of the form C.D.D with C the class 2, 4 or 5; the
 *    derived DSN always of the reply's class; a first word without blanks;
 *  - EHLO keywords only when an EHLO reply is awaited;
 *  - memory stays bounded: whenever the reader waits for more, the buffer
 *    holds at most one line's worth (SMTP_REPLY_LINE_MAX bytes, or
 *    SMTP_REPLY_CHALLENGE_MAX during SMTP AUTH) beyond what was just added;
 *  - during SMTP AUTH (byte 0's high bit, no EHLO) a "334 " reply keeps its
 *    challenge whole, or says it was cut: the challenge is the line's text
 *    (controls made '?') and at most SMTP_REPLY_CHALLENGE_MAX - 4 bytes.
 *
 * make check builds it with t/fuzz/replay_main.c and replays
 * t/fuzz/corpus/smtp_reply; `make fuzz` runs it with libFuzzer (doc/testing.md).
 */
#include "config.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>

#include "deliver/smtp_reply.h"
#include "lib/buf.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check(int cond, const char *what)
{
    if (!cond) {
        fprintf(stderr, "property violated: %s\n", what);
        abort();
    }
}

static void check_reply(const struct smtp_reply *r, int ehlo)
{
    check(r->code >= 100 && r->code <= 599, "a reply code is 100..599");
    check(strlen(r->text) == r->len && r->len < SMTP_REPLY_TEXT_MAX, "the text length is known and bounded");
    char code[4];
    snprintf(code, sizeof(code), "%03d", r->code);
    check(strncmp(r->text, code, 3) == 0 && (r->text[3] == '\0' || r->text[3] == ' '),
          "the text starts with the code");
    for (const char *c = r->text; *c; c++)
        check((unsigned char)*c >= 0x20 && *c != 0x7f, "no control character in a reply text");
    if (r->dsn[0]) {
        check(strchr("245", r->dsn[0]) != NULL && r->dsn[1] == '.', "an enhanced code starts with its class");
        int dots = 0;
        for (const char *p = r->dsn; *p; p++) {
            if (*p == '.')
                dots++;
            else
                check(*p >= '0' && *p <= '9', "an enhanced code is digits and dots");
        }
        check(dots == 2, "an enhanced code has three parts");
    }
    char dsn[16];
    smtp_reply_dsn(r, dsn);
    int cls = r->code / 100;
    check(dsn[0] == (cls == 2 || cls == 5 ? '0' + cls : '4'), "the derived DSN is of the reply's class");
    check(strpbrk(r->first_word, " ") == NULL, "the first word has no blank");
    if (!ehlo)
        check(r->caps == 0 && r->size_limit == 0, "keywords only in an EHLO reply");
}

/* Feeds data in pieces of at most piece bytes (0: all at once) and records
 * every reply as "code|dsn|caps|size|first_word|text\n" in out; returns the
 * final status (0: wants more, -1: malformed). */
static int feed(const uint8_t *data, size_t size, size_t piece, int ehlo, int sasl, struct buf *out)
{
    struct evbuffer *in = evbuffer_new();
    struct smtp_reply_reader rd;
    memset(&rd, 0, sizeof(rd));
    rd.ehlo = ehlo;
    rd.sasl = sasl;
    size_t max = sasl ? SMTP_REPLY_CHALLENGE_MAX : SMTP_REPLY_LINE_MAX;
    int status = 0;
    size_t pos = 0;
    while (pos < size && status >= 0) {
        size_t n = piece && size - pos > piece ? piece : size - pos;
        evbuffer_add(in, data + pos, n);
        pos += n;
        for (;;) {
            int rc = smtp_reply_read(&rd, in);
            if (rc < 0) {
                status = -1;
                break;
            }
            if (rc == 0) {
                check(evbuffer_get_length(in) <= max + n, "the reader buffers at most a line");
                break;
            }
            check_reply(&rd.reply, ehlo);
            buf_printf(out, "%d|%s|%u|%llu|%s|%s\n", rd.reply.code, rd.reply.dsn, rd.reply.caps,
                       rd.reply.size_limit, rd.reply.first_word, rd.reply.text);
            if (rd.challenge.len > 0 || rd.challenge_cut) {
                check(sasl && rd.reply.code == 334, "a challenge only from a 334 reply during AUTH");
                check(rd.challenge.len <= SMTP_REPLY_CHALLENGE_MAX - 4, "a challenge within its bound");
                check(strlen(rd.challenge.data) == rd.challenge.len, "a challenge holds no NUL");
                for (size_t k = 0; k < rd.challenge.len; k++)
                    check((unsigned char)rd.challenge.data[k] >= 0x20 && rd.challenge.data[k] != 0x7f,
                          "a challenge holds no control character");
                check(rd.challenge_cut || rd.reply.len >= SMTP_REPLY_TEXT_MAX - 1 ||
                      strcmp(rd.reply.text + 4, rd.challenge.data) == 0,
                      "a short challenge is the reply's text");
                buf_printf(out, "challenge %zu %d\n", rd.challenge.len, rd.challenge_cut);
            }
        }
    }
    smtp_reply_reader_free(&rd);
    evbuffer_free(in);
    return status;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1 || size > 65536)
        return 0;
    int ehlo = data[0] & 1;
    int sasl = (data[0] & 0x81) == 0x80;
    size_t piece = 1 + (data[0] >> 1);   /* 1..128 */
    data++;
    size--;
    struct buf whole = BUF_INIT, bytes = BUF_INIT, pieces = BUF_INIT;
    buf_append(&whole, "", 0);
    buf_append(&bytes, "", 0);
    buf_append(&pieces, "", 0);
    int s1 = feed(data, size, 0, ehlo, sasl, &whole);
    int s2 = feed(data, size, 1, ehlo, sasl, &bytes);
    int s3 = feed(data, size, piece, ehlo, sasl, &pieces);
    check(s1 == s2 && s1 == s3, "the same stream fails the same way however it is cut");
    check(whole.len == bytes.len && memcmp(whole.data, bytes.data, whole.len) == 0,
          "byte by byte gives the same replies as all at once");
    check(whole.len == pieces.len && memcmp(whole.data, pieces.data, whole.len) == 0,
          "pieces give the same replies as all at once");
    buf_free(&whole);
    buf_free(&bytes);
    buf_free(&pieces);
    return 0;
}
