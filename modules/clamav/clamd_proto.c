/*
 * clamd's commands and replies (see clamd_proto.h). The reply parser works
 * on a length-delimited line (never a C string it hopes is terminated) and
 * checks the forms clamd gives; a virus name is kept to printable characters
 * without spaces, since it ends up in logs, replies and headers.
 */
#include "clamd_proto.h"

#include <stdio.h>
#include <string.h>

const char *clamd_command_text(clamd_command cmd, size_t *len)
{
    /* The sizeof includes the terminating NUL: it is part of the command. */
    static const char instream[] = "zINSTREAM", ping[] = "zPING", version[] = "zVERSION";
    switch (cmd) {
    case CLAMD_PING:
        *len = sizeof ping;
        return ping;
    case CLAMD_VERSION:
        *len = sizeof version;
        return version;
    case CLAMD_INSTREAM:
    default:
        *len = sizeof instream;
        return instream;
    }
}

void clamd_chunk_header(unsigned char out[4], uint32_t n)
{
    out[0] = (unsigned char)(n >> 24);
    out[1] = (unsigned char)(n >> 16);
    out[2] = (unsigned char)(n >> 8);
    out[3] = (unsigned char)n;
}

static int ends_with(const char *s, size_t n, const char *suffix)
{
    size_t k = strlen(suffix);
    return n >= k && memcmp(s + n - k, suffix, k) == 0;
}

int clamd_parse_reply(clamd_command cmd, const char *line, size_t len, clamd_reply *r, char *err, size_t errlen)
{
    memset(r, 0, sizeof *r);
    if (len > CLAMD_REPLY_MAX) {
        snprintf(err, errlen, "reply longer than %d bytes", CLAMD_REPLY_MAX);
        return -1;
    }
    for (size_t i = 0; i < len; i++)
        r->text[i] = (unsigned char)line[i] >= 32 && (unsigned char)line[i] < 127 ? line[i] : '?';
    r->text[len] = 0;
    if (memchr(line, 0, len) != NULL) {
        snprintf(err, errlen, "NUL inside the reply");
        return -1;
    }
    if (cmd == CLAMD_PING) {
        if (len == 4 && memcmp(line, "PONG", 4) == 0) {
            r->verdict = CLAMD_PONG;
            return 0;
        }
        snprintf(err, errlen, "not PONG: \"%.80s\"", r->text);
        return -1;
    }
    if (cmd == CLAMD_VERSION) {
        if (len >= 7 && memcmp(line, "ClamAV ", 7) == 0) {
            r->verdict = CLAMD_VERSION_TEXT;
            return 0;
        }
        snprintf(err, errlen, "not a version: \"%.80s\"", r->text);
        return -1;
    }
    /* INSTREAM */
    if (ends_with(line, len, " ERROR")) {
        static const char limit[] = "INSTREAM size limit exceeded";
        r->verdict = len >= sizeof limit - 1 && memcmp(line, limit, sizeof limit - 1) == 0 ? CLAMD_SIZE_LIMIT
                                                                                          : CLAMD_ERROR;
        return 0;
    }
    static const char prefix[] = "stream: ";
    size_t plen = sizeof prefix - 1;
    if (len < plen || memcmp(line, prefix, plen) != 0) {
        snprintf(err, errlen, "unexpected reply \"%.80s\"", r->text);
        return -1;
    }
    const char *rest = line + plen;
    size_t rlen = len - plen;
    if (rlen == 2 && memcmp(rest, "OK", 2) == 0) {
        r->verdict = CLAMD_CLEAN;
        return 0;
    }
    if (ends_with(rest, rlen, " FOUND")) {
        size_t vlen = rlen - 6;
        if (vlen == 0 || vlen > CLAMD_VIRUS_MAX) {
            snprintf(err, errlen, "virus name empty or longer than %d bytes", CLAMD_VIRUS_MAX);
            return -1;
        }
        for (size_t i = 0; i < vlen; i++) {
            unsigned char ch = (unsigned char)rest[i];
            if (ch <= 32 || ch >= 127) {
                snprintf(err, errlen, "virus name with a character that is not allowed (0x%02x)", ch);
                return -1;
            }
        }
        memcpy(r->virus, rest, vlen);
        r->virus[vlen] = 0;
        r->verdict = CLAMD_FOUND;
        return 0;
    }
    snprintf(err, errlen, "unexpected reply \"%.80s\"", r->text);
    return -1;
}
