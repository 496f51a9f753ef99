/*
 * The output of `petrelctl queue list` and `show`, in Postfix's formats so
 * that scripts that read mailq or postqueue -j keep working: showq's text
 * columns (the first widened for our 19-character queue IDs), postqueue
 * -j's JSON objects, postcat -q's sections. Everything from a queue file
 * goes out printable: control characters and invalid UTF-8 become '?'.
 * Selecting and reading the messages is queue_cmd.c.
 */
#include "config.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "tools/queue_cmd_int.h"

/* ---- printing ---- */

/* Length of the valid UTF-8 sequence at p (>= 2), or 0. Overlongs,
 * surrogates and code points above U+10FFFF are invalid, as in Postfix's
 * printable(), so what we print is always valid UTF-8. */
static size_t utf8_len(const unsigned char *p)
{
    unsigned c = p[0];
    size_t n;
    unsigned cp;
    if (c >= 0xC2 && c <= 0xDF) {
        n = 2;
        cp = c & 0x1F;
    } else if (c >= 0xE0 && c <= 0xEF) {
        n = 3;
        cp = c & 0x0F;
    } else if (c >= 0xF0 && c <= 0xF4) {
        n = 4;
        cp = c & 0x07;
    } else {
        return 0;
    }
    for (size_t i = 1; i < n; i++) {
        if ((p[i] & 0xC0) != 0x80)
            return 0;
        cp = (cp << 6) | (p[i] & 0x3F);
    }
    if ((n == 3 && cp < 0x800) || (n == 4 && (cp < 0x10000 || cp > 0x10FFFF)) || (cp >= 0xD800 && cp <= 0xDFFF))
        return 0;
    return n;
}

/* Prints s with control characters and invalid UTF-8 bytes as '?', byte
 * for byte (so widths computed with strlen stay right), as showq does: an
 * address or reason must not be able to forge output lines. */
static void put_printable(FILE *out, const char *s)
{
    const unsigned char *p = (const unsigned char *)s;
    while (*p) {
        if (*p < 0x80) {
            putc(*p < 0x20 || *p == 0x7F ? '?' : *p, out);
            p++;
            continue;
        }
        size_t n = utf8_len(p);
        if (n == 0) {
            putc('?', out);
            p++;
        } else {
            fwrite(p, 1, n, out);
            p += n;
        }
    }
}

/* A JSON string as postqueue -j quotes it. */
static void put_json(FILE *out, const char *s)
{
    const unsigned char *p = (const unsigned char *)s;
    putc('"', out);
    while (*p) {
        unsigned c = *p;
        if (c < 0x20 || c == 0x7F) {
            switch (c) {
            case '\b': fputs("\\b", out); break;
            case '\f': fputs("\\f", out); break;
            case '\n': fputs("\\n", out); break;
            case '\r': fputs("\\r", out); break;
            case '\t': fputs("\\t", out); break;
            default: fprintf(out, "\\u%04X", c); break;
            }
            p++;
        } else if (c == '"' || c == '\\') {
            putc('\\', out);
            putc((int)c, out);
            p++;
        } else if (c < 0x80) {
            putc((int)c, out);
            p++;
        } else {
            size_t n = utf8_len(p);
            if (n == 0) {
                putc('?', out);
                p++;
            } else {
                fwrite(p, 1, n, out);
                p += n;
            }
        }
    }
    putc('"', out);
}

/* Postfix time syntax: a number with an optional unit s, m, h, d or w
 * (seconds by default). -1 when malformed. */

/* ---- list ---- */

/* showq_compat's formats with the first column widened from 11 to 20. */
#define LIST_STRING_FORMAT "%-20s %7s %-20s %s\n"
#define LIST_SENDER_FORMAT "%-20s %7lld %20.20s "
#define LIST_REASON_WIDTH (76 + 9)

void qc_list_text(struct ctx *c, struct msg *msg)
{
    FILE *out = c->out;
    if (c->count == 0)
        fprintf(out, LIST_STRING_FORMAT, "-Queue ID-", "--Size--", "----Arrival Time----",
                "-Sender/Recipient-------");
    else
        putc('\n', out);
    char idst[QUEUE_ID_MAX + 2];
    int mark = msg->dir == QDIR_ACTIVE ? '*' : msg->dir == QDIR_HOLD ? '!' : ' ';
    snprintf(idst, sizeof(idst), "%s%c", msg->id, mark);
    time_t t = (time_t)qc_arrival(msg);
    struct tm tm;
    char when[64] = "";
    if (localtime_r(&t, &tm) == NULL || asctime_r(&tm, when) == NULL)
        snprintf(when, sizeof(when), "%lld", (long long)t);
    long long size = msg->ok ? (long long)msg->m.content_length : (long long)msg->st.st_size;
    fprintf(out, LIST_SENDER_FORMAT, idst, size, when);
    if (!msg->ok) {
        fputs("(damaged queue file: ", out);
        put_printable(out, msg->error);
        fputs(")\n", out);
        return;
    }
    put_printable(out, *msg->m.env.sender ? msg->m.env.sender : "MAILER-DAEMON");
    putc('\n', out);
    qc_build_rcpts(c, msg);
    /* showq_compat: a "(reason)" line when the reason changes from the
     * previous recipient's, "(reason unavailable)" when it goes away. */
    const char *saved = "";
    for (size_t i = 0; i < msg->nrcpts; i++) {
        const char *why = msg->rcpts[i].reason;
        if (strcmp(saved, why) != 0) {
            saved = why;
            const char *show = *why ? why : "reason unavailable";
            int pad = LIST_REASON_WIDTH - (int)strlen(show);
            fprintf(out, "%*s(", pad < 0 ? 0 : pad, "");
            put_printable(out, show);
            fputs(")\n", out);
        }
        fprintf(out, "%-20s %7s %-20s ", "", "", "");
        put_printable(out, msg->rcpts[i].address);
        putc('\n', out);
    }
}

/* postqueue -j: one object per line, Postfix's field order. */
void qc_list_json(struct ctx *c, struct msg *msg)
{
    FILE *out = c->out;
    long long size = msg->ok ? (long long)msg->m.content_length : (long long)msg->st.st_size;
    fputs("{\"queue_name\": ", out);
    put_json(out, queue_dir_name(msg->dir));
    fputs(", \"queue_id\": ", out);
    put_json(out, msg->id);
    fprintf(out, ", \"arrival_time\": %lld, \"message_size\": %lld, \"forced_expire\": false, \"sender\": ",
            qc_arrival(msg), size);
    if (!msg->ok) {
        fputs("\"\", \"recipients\": [], \"error\": ", out);
        put_json(out, msg->error);
        fputs("}\n", out);
        return;
    }
    put_json(out, *msg->m.env.sender ? msg->m.env.sender : "MAILER-DAEMON");
    fputs(", \"recipients\": [", out);
    qc_build_rcpts(c, msg);
    for (size_t i = 0; i < msg->nrcpts; i++) {
        fputs(i ? ", {\"address\": " : "{\"address\": ", out);
        put_json(out, msg->rcpts[i].address);
        if (*msg->rcpts[i].reason) {
            fputs(", \"delay_reason\": ", out);
            put_json(out, msg->rcpts[i].reason);
        }
        putc('}', out);
    }
    fputs("]}\n", out);
}

/* ---- show ---- */

static const char *status_name(int status)
{
    switch (status) {
    case QUEUE_RCPT_PENDING: return "pending";
    case QUEUE_RCPT_DEFERRED: return "deferred";
    case QUEUE_RCPT_DELIVERED: return "delivered";
    case QUEUE_RCPT_BOUNCED: return "bounced";
    }
    return "unknown";
}

static void show_attr(FILE *out, const char *name, const char *value)
{
    if (value == NULL)
        return;
    fprintf(out, "named_attribute: %s=", name);
    put_printable(out, value);
    putc('\n', out);
}

/* postcat -q's layout (record names where Postfix has them), with the
 * content's CRLF line ends shown as LF, as postcat prints record lines. */
int qc_show_message(struct ctx *c, struct msg *msg, int fd)
{
    FILE *out = c->out;
    const char *qn = queue_dir_name(msg->dir);
    fprintf(out, "*** ENVELOPE RECORDS %s/%s ***\n", qn, msg->id);
    if (!msg->ok) {
        fprintf(out, "*** DAMAGED QUEUE FILE %s/%s: ", qn, msg->id);
        put_printable(out, msg->error);
        fputs(" ***\n", out);
        return -1;
    }
    const struct queue_envelope *env = &msg->m.env;
    fprintf(out, "message_size: %llu\n", msg->m.content_length);
    time_t t = (time_t)env->arrival_sec;
    struct tm tm;
    char when[64] = "";
    if (localtime_r(&t, &tm) != NULL && asctime_r(&tm, when) != NULL)
        when[strcspn(when, "\n")] = '\0';
    fprintf(out, "message_arrival_time: %s\n", when);
    fprintf(out, "arrival_time_usec: %lld.%06ld\n", env->arrival_sec, env->arrival_usec);
    fputs("sender: ", out);
    put_printable(out, env->sender);
    putc('\n', out);
    show_attr(out, "log_client_name", env->client_name);
    show_attr(out, "log_client_address", env->client_addr);
    show_attr(out, "log_client_port", env->client_port);
    show_attr(out, "log_helo_name", env->helo);
    show_attr(out, "log_protocol_name", env->protocol);
    show_attr(out, "tls", env->tls_info);
    show_attr(out, "sasl_method", env->sasl_method);
    show_attr(out, "sasl_username", env->sasl_username);
    if (env->content_filter) {
        /* postcat's line for a content filter record */
        fputs("content_filter: ", out);
        put_printable(out, env->content_filter);
        putc('\n', out);
    }
    if (env->flags & QUEUE_F_NO_ADDRESS_MAPPINGS)
        fputs("receive_override_options: no_address_mappings\n", out);
    if (env->flags & QUEUE_F_REDIRECTED)
        fputs("redirected: yes\n", out);
    if (env->flags & (QUEUE_F_8BITMIME | QUEUE_F_BINARYMIME))
        fprintf(out, "body_type: %s\n", env->flags & QUEUE_F_BINARYMIME ? "BINARYMIME" : "8BITMIME");
    if (env->flags & QUEUE_F_SMTPUTF8)
        fputs("smtputf8: yes\n", out);
    if (env->envid) {
        fputs("dsn_envid: ", out);
        put_printable(out, env->envid);
        putc('\n', out);
    }
    if (env->ret != QUEUE_RET_UNSET)
        fprintf(out, "dsn_ret: %s\n", env->ret == QUEUE_RET_FULL ? "FULL" : "HDRS");
    qc_build_rcpts(c, msg);
    for (size_t i = 0; i < env->rcpt_count; i++) {
        const struct queue_rcpt *r = &env->rcpts[i];
        const struct queue_rcpt_state *st = &msg->m.rcpt_state[i];
        if (r->orcpt) {
            fputs("dsn_orig_rcpt: ", out);
            put_printable(out, r->orcpt);
            putc('\n', out);
        }
        if (r->notify) {
            fputs("dsn_notify:", out);
            if (r->notify & QUEUE_NOTIFY_NEVER)
                fputs(" NEVER", out);
            if (r->notify & QUEUE_NOTIFY_SUCCESS)
                fputs(" SUCCESS", out);
            if (r->notify & QUEUE_NOTIFY_FAILURE)
                fputs(" FAILURE", out);
            if (r->notify & QUEUE_NOTIFY_DELAY)
                fputs(" DELAY", out);
            putc('\n', out);
        }
        fputs(queue_rcpt_status_final(st->status) ? "done_recipient: " : "recipient: ", out);
        put_printable(out, r->address);
        putc('\n', out);
        fprintf(out, "recipient_status: %s", status_name(st->status));
        if (st->dsn_code)
            fprintf(out, ", dsn=%u.%u.%u", st->dsn_code / 1000000u, st->dsn_code / 1000u % 1000u,
                    st->dsn_code % 1000u);
        for (size_t k = 0; k < msg->nrcpts; k++) {
            if (msg->rcpts[k].address == r->address || strcmp(msg->rcpts[k].address, r->address) == 0) {
                if (*msg->rcpts[k].reason) {
                    fputs(", reason=", out);
                    put_printable(out, msg->rcpts[k].reason);
                }
                break;
            }
        }
        putc('\n', out);
    }
    fprintf(out, "*** MESSAGE CONTENTS %s/%s ***\n", qn, msg->id);
    static const size_t chunk = 65536;
    char *buf = petrel_pool_alloc(c->pool, chunk);
    unsigned long long left = msg->m.content_length, off = 0;
    int cr = 0;   /* a CR ended the previous chunk */
    size_t last = 0;   /* index in buf of the last byte read */
    while (left > 0) {
        ssize_t n = queue_content_pread(fd, &msg->m, off, buf, left < chunk ? (size_t)left : chunk);
        if (n <= 0) {
            fprintf(stderr, "petrelctl: %s: read content: %s\n", msg->id, n < 0 ? strerror(errno) : "short file");
            return -1;
        }
        for (ssize_t i = 0; i < n; i++) {
            if (cr && buf[i] != '\n')
                putc('\r', out);
            cr = buf[i] == '\r';
            if (!cr)
                putc(buf[i], out);
        }
        last = (size_t)n - 1;
        left -= (unsigned long long)n;
        off += (unsigned long long)n;
    }
    if (cr)
        putc('\r', out);
    /* A last line without its line end still ends before the marker. */
    if (msg->m.content_length > 0 && buf[last] != '\n')
        putc('\n', out);
    fprintf(out, "*** MESSAGE FILE END %s/%s ***\n", qn, msg->id);
    return 0;
}
