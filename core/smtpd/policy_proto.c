/*
 * The policy protocol's framing and reply parser (see policy_proto.h).
 * Lines end with LF alone, as Postfix's attr_scan_plain reads them: a CR
 * before it is part of the value (and then makes the action unknown, as
 * it does in Postfix).
 */
#include "config.h"

#include <stdio.h>
#include <string.h>

#include "smtpd/policy_proto.h"

void policy_request_attr(struct buf *b, const char *name, const char *value)
{
    buf_puts(b, name);
    buf_putc(b, '=');
    for (const unsigned char *p = (const unsigned char *)(value ? value : ""); *p; p++)
        buf_putc(b, *p < 0x20 || *p == 0x7f ? '?' : (char)*p);
    buf_putc(b, '\n');
}

void policy_request_attr_number(struct buf *b, const char *name, unsigned long long value)
{
    buf_printf(b, "%s=%llu\n", name, value);
}

void policy_request_end(struct buf *b)
{
    buf_putc(b, '\n');
}

ssize_t policy_reply_end(const char *data, size_t len)
{
    size_t limit = len < POLICY_REPLY_MAX ? len : POLICY_REPLY_MAX;
    if (limit > 0 && data[0] == '\n')
        return 1;
    for (size_t i = 1; i < limit; i++)
        if (data[i] == '\n' && data[i - 1] == '\n')
            return (ssize_t)(i + 1);
    return len >= POLICY_REPLY_MAX ? -1 : 0;
}

int policy_reply_parse(const char *data, size_t len, char *action, size_t action_size, const char **why)
{
    size_t pos = 0;
    while (pos < len) {
        const char *line = data + pos;
        const char *nl = memchr(line, '\n', len - pos);
        if (nl == NULL) {
            *why = "premature end of reply";
            return -1;
        }
        size_t line_len = (size_t)(nl - line);
        pos += line_len + 1;
        if (line_len == 0)
            break;   /* the end: no action seen */
        const char *eq = memchr(line, '=', line_len);
        size_t name_len = eq ? (size_t)(eq - line) : line_len;
        if (name_len != 6 || memcmp(line, "action", 6) != 0)
            continue;   /* an attribute we do not ask for: skipped, as Postfix does */
        if (eq == NULL) {
            *why = "missing value for string attribute action";
            return -1;
        }
        size_t value_len = line_len - name_len - 1;
        if (memchr(eq + 1, '\0', value_len)) {
            *why = "NUL byte in the action";
            return -1;
        }
        if (value_len >= action_size) {
            *why = "action too long";
            return -1;
        }
        memcpy(action, eq + 1, value_len);
        action[value_len] = '\0';
        /* The rest of the reply is skipped up to its end (already framed). */
        return 0;
    }
    *why = "missing attribute action";
    return -1;
}
