/*
 * Unit tests of clamd's reply parser (modules/clamav/clamd_proto.c), with
 * the exact error texts.
 */
#include <stdio.h>
#include <string.h>

#include "../tap.h"
#include "clamd_proto.h"

static int parse(clamd_command cmd, const char *text, clamd_reply *r, char *err, size_t errlen)
{
    return clamd_parse_reply(cmd, text, strlen(text), r, err, errlen);
}

int main(void)
{
    clamd_reply r;
    char err[256];
    size_t n;
    const char *cmd = clamd_command_text(CLAMD_INSTREAM, &n);
    ok(n == 10 && memcmp(cmd, "zINSTREAM\0", 10) == 0, "zINSTREAM with its NUL");
    unsigned char h[4];
    clamd_chunk_header(h, 65536);
    ok(h[0] == 0 && h[1] == 1 && h[2] == 0 && h[3] == 0, "chunk lengths are network order");

    ok(parse(CLAMD_INSTREAM, "stream: OK", &r, err, sizeof err) == 0 && r.verdict == CLAMD_CLEAN, "stream: OK");
    ok(parse(CLAMD_INSTREAM, "stream: Eicar-Signature FOUND", &r, err, sizeof err) == 0 && r.verdict == CLAMD_FOUND
       && strcmp(r.virus, "Eicar-Signature") == 0, "stream: Eicar-Signature FOUND");
    ok(parse(CLAMD_INSTREAM, "INSTREAM size limit exceeded. ERROR", &r, err, sizeof err) == 0
       && r.verdict == CLAMD_SIZE_LIMIT, "the size limit");
    ok(parse(CLAMD_INSTREAM, "stream: Can't allocate memory ERROR", &r, err, sizeof err) == 0
       && r.verdict == CLAMD_ERROR && strcmp(r.text, "stream: Can't allocate memory ERROR") == 0, "another ERROR");
    ok(parse(CLAMD_PING, "PONG", &r, err, sizeof err) == 0 && r.verdict == CLAMD_PONG, "PONG");
    ok(parse(CLAMD_VERSION, "ClamAV 1.4.6/27000/Mon Dec  1 09:00:00 2026", &r, err, sizeof err) == 0
       && r.verdict == CLAMD_VERSION_TEXT, "VERSION");

    ok(parse(CLAMD_INSTREAM, "stream:  FOUND", &r, err, sizeof err) < 0, "an empty virus name");
    is_str(err, "virus name empty or longer than 256 bytes", "  text");
    ok(parse(CLAMD_INSTREAM, "stream: Two Words FOUND", &r, err, sizeof err) < 0, "a virus name with a space");
    is_str(err, "virus name with a character that is not allowed (0x20)", "  text");
    ok(parse(CLAMD_INSTREAM, "stream: Evil\r\nX-Injected: yes FOUND", &r, err, sizeof err) < 0,
       "a virus name with a line end");
    is_str(err, "virus name with a character that is not allowed (0x0d)", "  text");
    ok(parse(CLAMD_INSTREAM, "OK", &r, err, sizeof err) < 0, "not a reply clamd gives");
    is_str(err, "unexpected reply \"OK\"", "  text");
    ok(clamd_parse_reply(CLAMD_INSTREAM, "stream: O\0K", 11, &r, err, sizeof err) < 0, "a NUL inside");
    is_str(err, "NUL inside the reply", "  text");
    ok(parse(CLAMD_PING, "PANG", &r, err, sizeof err) < 0, "PING answered otherwise");
    is_str(err, "not PONG: \"PANG\"", "  text");
    char longname[400];
    memcpy(longname, "stream: ", 8);
    memset(longname + 8, 'V', 300);
    strcpy(longname + 308, " FOUND");
    ok(parse(CLAMD_INSTREAM, longname, &r, err, sizeof err) < 0, "a virus name over %d bytes", CLAMD_VIRUS_MAX);
    is_str(err, "virus name empty or longer than 256 bytes", "  text");
    char huge[1100];
    memset(huge, 'x', sizeof huge - 1);
    huge[sizeof huge - 1] = 0;
    ok(parse(CLAMD_INSTREAM, huge, &r, err, sizeof err) < 0, "a reply over %d bytes", CLAMD_REPLY_MAX);
    is_str(err, "reply longer than 1024 bytes", "  text");
    return done_testing();
}
