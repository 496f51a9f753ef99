/*
 * postscreen's parsing of a client's bytes: see psc_parse.h. Each
 * function is Postfix's postscreen_smtpd.c counterpart; the session code
 * (psc_smtpd.c) decides what a result means for the tests.
 */
#include "config.h"

#include <string.h>

#include "mail/smtp_syntax.h"
#include "smtpd/psc_parse.h"

enum psc_line_event psc_line_byte(struct buf *cmd, int *state, unsigned char ch, size_t limit)
{
    if (cmd->len >= limit)
        return PSC_LINE_TOO_LONG;
    buf_putc(cmd, (char)ch);
    if (ch == '\r')
        *state = PSC_READ_CR;
    else if (ch == '\n' && *state == PSC_READ_CR)
        *state = PSC_READ_CRLF;
    else
        *state = PSC_READ_ANY;
    if (*state == PSC_READ_CRLF) {
        cmd->len -= 2;
        cmd->data[cmd->len] = '\0';
        return PSC_LINE_CRLF;
    }
    if (ch == '\n') {
        cmd->len -= 1;
        cmd->data[cmd->len] = '\0';
        return PSC_LINE_BARE_LF;
    }
    return PSC_LINE_MORE;
}

char *psc_next_token(char **cursor)
{
    char *p = *cursor;
    if (p == NULL)
        return NULL;
    while (*p == ' ')
        p++;
    if (*p == '\0') {
        *cursor = p;
        return NULL;
    }
    char *start = p;
    while (*p && *p != ' ')
        p++;
    if (*p)
        *p++ = '\0';
    *cursor = p;
    return start;
}
const char *psc_extract_addr(const char *text, struct buf *out)
{
    const char *p = text;
    while (*p == ' ')
        p++;
    char stop = ' ';
    if (*p == '<') {
        p++;
        stop = '>';
    }
    size_t start = out->len;
    int inquote = 0;
    for (; *p; p++) {
        if (!inquote && *p == stop)
            break;
        if (*p == '"') {
            inquote = !inquote;
            continue;
        }
        if (*p == '\\' && *++p == '\0')
            break;
        buf_putc(out, *p);
    }
    buf_putc(out, '\0');
    out->len--;   /* the NUL is the string's end, not part of the address */
    const char *addr = out->data + start;
    /* Route addresses are logged without their route. */
    if (addr[0] == '@' && strchr(addr, ':'))
        addr = strchr(addr, ':') + 1;
    return addr;
}
int psc_is_header(const char *word)
{
    int state = 0;   /* 0 start, 1 in name, 2 in white space after it */
    size_t len = 0;
    for (const unsigned char *p = (const unsigned char *)word; *p; p++) {
        if (*p == ':')
            return state != 0 && len > 0;
        if (*p == ' ' || *p == '\t') {
            if (state == 0)
                return 0;
            state = 2;
            continue;
        }
        if (*p >= 0x80 || *p < 0x20 || *p == 0x7f || state == 2)
            return 0;
        state = 1;
        len++;
    }
    return 0;
}
void psc_make_printable(char *text, int utf8)
{
    for (unsigned char *p = (unsigned char *)text; *p; p++) {
        if (*p >= 0x20 && *p < 0x7f)
            continue;
        if (utf8 && *p >= 0x80) {
            size_t n = 1;
            while (p[n] >= 0x80 && (p[n] & 0xc0) == 0x80 && n < 4)
                n++;
            if (smtp_valid_utf8(p, n)) {
                p += n - 1;
                continue;
            }
        }
        *p = '?';
    }
}
