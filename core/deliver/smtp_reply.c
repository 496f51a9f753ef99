/*
 * Reading SMTP/LMTP replies (see smtp_reply.h). The framing follows the
 * client's old inline loop exactly: a line ends at LF (a CR before it is
 * dropped, as libevent's EVBUFFER_EOL_CRLF does); a line longer than
 * SMTP_REPLY_LINE_MAX keeps its start and the rest up to the next line end
 * is discarded, so a server cannot make us buffer without limit.
 */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <event2/buffer.h>

#include "deliver/smtp_reply.h"
#include "mail/xforward.h"

const char *smtp_reply_dsn(const struct smtp_reply *r, char out[16])
{
    int cls = r->code / 100;
    if (cls != 2 && cls != 4 && cls != 5)
        cls = 4;
    if (r->dsn[0] && r->dsn[0] - '0' == cls)
        snprintf(out, 16, "%s", r->dsn);
    else
        snprintf(out, 16, "%d.0.0", cls);
    return out;
}

/* Accepts "D.DDD.DDD" followed by white space or the end; 1 when found. */
static int parse_enhanced(const char *p, char out[16], size_t *used)
{
    size_t i = 0, parts = 0, digits = 0;
    if (p[0] != '2' && p[0] != '4' && p[0] != '5')
        return 0;
    for (;; i++) {
        if (p[i] >= '0' && p[i] <= '9') {
            if (++digits > 3 || (parts == 0 && digits > 1))
                return 0;
        } else if (p[i] == '.' && digits && parts < 2) {
            parts++;
            digits = 0;
        } else {
            break;
        }
    }
    if (parts != 2 || !digits || (p[i] != '\0' && p[i] != ' ' && p[i] != '\t') || i >= 16)
        return 0;
    memcpy(out, p, i);
    out[i] = '\0';
    *used = i;
    return 1;
}

/* One EHLO keyword line without the "250-" prefix. */
static void parse_ehlo_keyword(struct smtp_reply *r, const char *line)
{
    char kw[32];
    size_t n = 0;
    while (line[n] && line[n] != ' ' && line[n] != '=' && n < sizeof(kw) - 1) {
        kw[n] = line[n];
        n++;
    }
    kw[n] = '\0';
    if (strcasecmp(kw, "PIPELINING") == 0)
        r->caps |= SMTP_CAP_PIPELINING;
    else if (strcasecmp(kw, "8BITMIME") == 0)
        r->caps |= SMTP_CAP_8BITMIME;
    else if (strcasecmp(kw, "SMTPUTF8") == 0)
        r->caps |= SMTP_CAP_SMTPUTF8;
    else if (strcasecmp(kw, "DSN") == 0)
        r->caps |= SMTP_CAP_DSN;
    else if (strcasecmp(kw, "STARTTLS") == 0)
        r->caps |= SMTP_CAP_STARTTLS;
    else if (strcasecmp(kw, "SIZE") == 0) {
        r->caps |= SMTP_CAP_SIZE;
        r->size_limit = strtoull(line + n + (line[n] ? 1 : 0), NULL, 10);
    } else if (strcasecmp(kw, "XFORWARD") == 0) {
        /* Postfix's XFORWARD_README: the attributes the server takes */
        static const struct { const char *name; unsigned bit; } attrs[] = {
            { "NAME", XFORWARD_F_NAME }, { "ADDR", XFORWARD_F_ADDR }, { "PORT", XFORWARD_F_PORT },
            { "PROTO", XFORWARD_F_PROTO }, { "HELO", XFORWARD_F_HELO }, { "IDENT", XFORWARD_F_IDENT },
            { "SOURCE", XFORWARD_F_SOURCE },
        };
        const char *p = line + n;
        for (;;) {
            p += strspn(p, " ");
            size_t w = strcspn(p, " ");
            if (w == 0)
                break;
            for (size_t k = 0; k < sizeof(attrs) / sizeof(attrs[0]); k++)
                if (strlen(attrs[k].name) == w && strncasecmp(p, attrs[k].name, w) == 0)
                    r->xforward |= attrs[k].bit;
            p += w;
        }
    } else if (strcasecmp(kw, "AUTH") == 0) {
        r->caps |= SMTP_CAP_AUTH;
        const char *p = line + n;
        for (;;) {
            p += strspn(p, " =");
            size_t w = strcspn(p, " ");
            if (w == 0)
                break;
            size_t used = strlen(r->auth);
            if (used + (used ? 1 : 0) + w >= sizeof(r->auth))
                break;   /* the list is full: the rest of the names are dropped whole */
            snprintf(r->auth + used, sizeof(r->auth) - used, "%s%.*s", used ? " " : "", (int)w, p);
            p += w;
        }
    }
}

int smtp_reply_line(struct smtp_reply_reader *rd, const char *line, size_t len)
{
    struct smtp_reply *r = &rd->reply;
    if (len < 3 || line[0] < '1' || line[0] > '5' || line[1] < '0' || line[1] > '9' || line[2] < '0'
        || line[2] > '9' || (len > 3 && line[3] != ' ' && line[3] != '-'))
        return -1;
    int code = (line[0] - '0') * 100 + (line[1] - '0') * 10 + (line[2] - '0');
    int last = len == 3 || line[3] == ' ';
    const char *text = len > 3 ? line + 4 : "";
    char dsn[16];
    size_t used = 0;
    if (rd->nlines == 0) {
        memset(r, 0, sizeof(*r));
        r->code = code;
        if (parse_enhanced(text, dsn, &used))
            snprintf(r->dsn, sizeof(r->dsn), "%s", dsn);
        size_t w = 0;
        while (text[w] && text[w] != ' ' && w < sizeof(r->first_word) - 1) {
            r->first_word[w] = text[w];
            w++;
        }
        r->first_word[w] = '\0';
        r->len = (size_t)snprintf(r->text, sizeof(r->text), "%d%s%s", code, *text ? " " : "", text);
        if (r->len >= sizeof(r->text))
            r->len = sizeof(r->text) - 1;
    } else {
        if (rd->ehlo)
            parse_ehlo_keyword(r, text);
        /* a repeated enhanced code on continuation lines is noise */
        if (r->dsn[0] && parse_enhanced(text, dsn, &used) && strcmp(dsn, r->dsn) == 0) {
            text += used;
            while (*text == ' ')
                text++;
        }
        if (!rd->ehlo && *text && r->len + 1 < sizeof(r->text)) {
            int n = snprintf(r->text + r->len, sizeof(r->text) - r->len, " %s", text);
            r->len += (size_t)n;
            if (r->len >= sizeof(r->text))
                r->len = sizeof(r->text) - 1;
        }
    }
    rd->nlines++;
    if (last) {
        rd->nlines = 0;
        return 1;
    }
    if (rd->nlines > SMTP_REPLY_LINES_MAX)
        return -1;
    return 0;
}

int smtp_reply_read(struct smtp_reply_reader *rd, struct evbuffer *in)
{
    for (;;) {
        size_t eol_len = 0;
        struct evbuffer_ptr p = evbuffer_search_eol(in, NULL, &eol_len, EVBUFFER_EOL_CRLF);
        size_t avail = evbuffer_get_length(in);
        char line[SMTP_REPLY_CHALLENGE_MAX + 1];
        size_t max = rd->sasl ? SMTP_REPLY_CHALLENGE_MAX : SMTP_REPLY_LINE_MAX;
        size_t len;
        int cut = 0;
        if (p.pos < 0) {
            if (avail <= max)
                return 0;   /* wait for the rest of the line */
            /* an overlong line: keep its start, skip the rest */
            if (!rd->skipping) {
                evbuffer_remove(in, line, max);
                len = max;
                cut = 1;
                rd->skipping = 1;
            } else {
                evbuffer_drain(in, avail);
                continue;
            }
        } else {
            size_t take = (size_t)p.pos;
            if (rd->skipping) {
                evbuffer_drain(in, take + eol_len);
                rd->skipping = 0;
                continue;
            }
            len = take > max ? max : take;
            cut = take > max;
            evbuffer_remove(in, line, len);
            evbuffer_drain(in, take - len + eol_len);
        }
        line[len] = '\0';
        /* As Postfix's smtp_chat_resp: TAB becomes a space, any other control
         * character '?'. The text goes into logs, defer/ reasons, bounces and
         * `petrelctl queue` output; a NUL would also cut it short. */
        for (size_t i = 0; i < len; i++) {
            unsigned char c = (unsigned char)line[i];
            if (c == '\t')
                line[i] = ' ';
            else if (c < 0x20 || c == 0x7f)
                line[i] = '?';
        }
        if (rd->nlines == 0) {
            /* a SASL challenge is kept whole for the mechanism: the
             * reply's text is cut at SMTP_REPLY_TEXT_MAX for the logs */
            buf_reset(&rd->challenge);
            rd->challenge_cut = 0;
            if (rd->sasl && len >= 4 && memcmp(line, "334 ", 4) == 0) {
                buf_append(&rd->challenge, line + 4, len - 4);
                rd->challenge_cut = cut;
            }
        }
        int rc = smtp_reply_line(rd, line, len);
        if (rc != 0)
            return rc;
    }
}

void smtp_reply_reader_free(struct smtp_reply_reader *rd)
{
    buf_free(&rd->challenge);
}
