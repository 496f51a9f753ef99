/*
 * Composing delivery status notifications: multipart/report with
 * report-type=delivery-status (RFC 6522), a message/delivery-status part
 * (RFC 3464) and the original message or its headers, in Postfix's words
 * so that people (and scripts that grep bounces) see what they know.
 *
 * Design:
 *  - Streaming: the text goes out through the caller's emit callback in
 *    small pieces and the original is copied from the queue file through
 *    the queue's content reader (queue_content_pread) in chunks, so a
 *    notification costs a fixed amount of memory whatever the message size.
 *  - What is returned: the whole original for failures when it is within
 *    size_limit (Postfix's bounce_size_limit) and RET is not HDRS; the
 *    header section only (text/rfc822-headers) otherwise, and always for
 *    delay and success notices (RFC 3461 section 4.3: RET is about failed
 *    DSNs).
 *  - The boundary is "QUEUEID.TIME/HOST" like Postfix's, and is checked
 *    against exactly the bytes that will be enclosed; on a hit a suffix
 *    derived from the seed and a try counter is added and the check runs
 *    again, so the boundary can never occur in the content.
 *  - Every envelope-derived value put in a header or field is stripped of
 *    control characters and capped, so no value can start a new field.
 */
#include "config.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include "qmgr/bounce.h"

#define FIELD_MAX 900          /* characters of one value in a field (lines stay under 998) */
#define LINE_MAX_OCTETS 998    /* RFC 5322 2.1.1, without the CRLF */
#define READ_CHUNK 16384
#define BOUNDARY_TRIES 16

struct out {
    int (*emit)(void *ctx, const char *data, size_t n);
    void *ctx;
    int failed;
    size_t len;
    char buf[8192];
};

static void out_flush(struct out *o)
{
    if (!o->failed && o->len > 0 && o->emit(o->ctx, o->buf, o->len) != 0)
        o->failed = 1;
    o->len = 0;
}

static void out_write(struct out *o, const char *data, size_t n)
{
    while (n > 0 && !o->failed) {
        size_t room = sizeof(o->buf) - o->len;
        size_t k = n < room ? n : room;
        memcpy(o->buf + o->len, data, k);
        o->len += k;
        data += k;
        n -= k;
        if (o->len == sizeof(o->buf))
            out_flush(o);
    }
}

static void out_puts(struct out *o, const char *s)
{
    out_write(o, s, strlen(s));
}

__attribute__((format(printf, 2, 3))) static void out_printf(struct out *o, const char *fmt, ...)
{
    char line[4096];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(line, sizeof(line), fmt, ap);
    va_end(ap);
    if (n < 0)
        return;
    out_write(o, line, (size_t)n < sizeof(line) ? (size_t)n : sizeof(line) - 1);
}

/* A value for a header or field: control characters become spaces, and at
 * most FIELD_MAX bytes are kept. */
static const char *clean(char *dst, const char *s)
{
    size_t j = 0;
    for (; s && *s && j < FIELD_MAX; s++)
        dst[j++] = ((unsigned char)*s < 0x20 || *s == 0x7f) ? ' ' : *s;
    dst[j] = '\0';
    return dst;
}

/* Writes text as one line, or, when it is longer than RFC 5322's 998
 * octets, as several: continuation lines are indented with four spaces and
 * a line is broken at its last space (else before a UTF-8 character), as
 * Postfix wraps the recipient lines of its notices. */
static void out_line_wrapped(struct out *o, const char *text)
{
    size_t len = strlen(text);
    for (int first = 1; first || len > 0; first = 0) {
        size_t room = first ? LINE_MAX_OCTETS : LINE_MAX_OCTETS - 4, n = len;
        if (n > room) {
            n = room;
            size_t k = n;
            while (k > room / 2 && text[k] != ' ')
                k--;
            if (text[k] == ' ')
                n = k;
            else
                while (n > 1 && ((unsigned char)text[n] & 0xc0) == 0x80)
                    n--;
        }
        if (!first)
            out_puts(o, "    ");
        out_write(o, text, n);
        out_puts(o, "\r\n");
        text += n;
        len -= n;
        if (len > 0 && *text == ' ') {
            text++;
            len--;
        }
    }
}

/* RFC 5322 date in local time with a numeric zone, independent of the
 * locale (day and month names are fixed English). */
static void rfc5322_date(char *out, size_t size, long long when)
{
    static const char days[7][4] = { "Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat" };
    static const char months[12][4] = { "Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                        "Jul", "Aug", "Sep", "Oct", "Nov", "Dec" };
    time_t t = (time_t)when;
    struct tm tm;
    localtime_r(&t, &tm);
    long off = tm.tm_gmtoff / 60;
    char sign = off < 0 ? '-' : '+';
    if (off < 0)
        off = -off;
    snprintf(out, size, "%s, %d %s %d %02d:%02d:%02d %c%02ld%02ld", days[tm.tm_wday % 7], tm.tm_mday,
             months[tm.tm_mon % 12], tm.tm_year + 1900, tm.tm_hour, tm.tm_min, tm.tm_sec, sign, off / 60,
             off % 60);
}

/* Content bytes [off, off + n) of msg through the queue's content reader:
 * fills buf fully unless the file ends (EIO then: the file is shorter than
 * its envelope says). */
static int read_at(const struct queue_message *msg, int fd, char *buf, size_t n, unsigned long long off)
{
    while (n > 0) {
        ssize_t r = queue_content_pread(fd, msg, off, buf, n);
        if (r <= 0) {
            if (r == 0)
                errno = EIO;
            return -1;
        }
        buf += r;
        n -= (size_t)r;
        off += (unsigned long long)r;
    }
    return 0;
}

/* Length of the header section of the content (up to and including the
 * line end of the last header, without the empty line), looking at most at
 * limit bytes; a longer header section is cut after its last complete line
 * within the limit. -1 on a read error. */
static long long header_length(const struct queue_message *msg, int fd, unsigned long long len, unsigned long long limit,
                               long long *out)
{
    char chunk[READ_CHUNK];
    unsigned long long scan = len < limit ? len : limit;
    unsigned long long pos = 0, last_eol = 0;
    int prev_lf = 1;   /* the content starts a line */
    while (pos < scan) {
        size_t n = scan - pos < sizeof(chunk) ? (size_t)(scan - pos) : sizeof(chunk);
        if (read_at(msg, fd, chunk, n, pos) < 0)
            return -1;
        for (size_t k = 0; k < n; k++) {
            char c = chunk[k];
            if (c == '\n') {
                if (prev_lf) {
                    /* An empty line: the headers end before it. */
                    *out = (long long)last_eol;
                    return 0;
                }
                prev_lf = 1;
                last_eol = pos + k + 1;
            } else if (c != '\r') {
                prev_lf = 0;
            }
        }
        pos += n;
    }
    /* No empty line: all of it is headers when it fit, else the complete lines. */
    *out = (long long)(len <= limit ? len : last_eol);
    return 0;
}

/* 1 when needle occurs in the first len content bytes, 0 if not, -1 on a
 * read error. Chunks overlap by strlen(needle)-1 bytes. */
static int content_contains(const struct queue_message *msg, int fd, unsigned long long len, const char *needle)
{
    char chunk[READ_CHUNK + 128];
    size_t nl = strlen(needle), keep = 0;
    unsigned long long pos = 0;
    while (pos < len) {
        size_t n = len - pos < READ_CHUNK ? (size_t)(len - pos) : READ_CHUNK;
        if (read_at(msg, fd, chunk + keep, n, pos) < 0)
            return -1;
        size_t have = keep + n;
        if (memmem(chunk, have, needle, nl))
            return 1;
        keep = have < nl - 1 ? have : nl - 1;
        memmove(chunk, chunk + have - keep, keep);
        pos += n;
    }
    return 0;
}

/* Text for the boundary: RFC 2046 allows only some 7-bit characters
 * (bchars) there, so anything else in a host name (a UTF-8 label) becomes
 * '_'; at most size - 1 characters. */
static void boundary_text(char *dst, const char *src, size_t size)
{
    size_t j = 0;
    for (; src && *src && j + 1 < size; src++) {
        unsigned char c = (unsigned char)*src;
        int safe = (c >= '0' && c <= '9') || (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || c == '.' ||
                   c == '-';
        dst[j++] = safe ? (char)c : '_';
    }
    dst[j] = '\0';
}

/* FNV-1a, to turn the seed and a try counter into a boundary suffix. */
static unsigned long long fnv(const char *s, unsigned tries)
{
    unsigned long long h = 1469598103934665603ull;
    for (; s && *s; s++)
        h = (h ^ (unsigned char)*s) * 1099511628211ull;
    h = (h ^ tries) * 1099511628211ull;
    return h;
}

/* The recipient's text for part 1: reason, else the diagnostic without its
 * "type; " prefix. */
static const char *human_reason(const struct bounce_rcpt *r)
{
    if (r->reason)
        return r->reason;
    if (r->diagnostic) {
        const char *semi = strchr(r->diagnostic, ';');
        if (semi) {
            semi++;
            while (*semi == ' ')
                semi++;
            return semi;
        }
        return r->diagnostic;
    }
    return r->status ? r->status : "";
}

/* The address in an ORCPT value "rfc822;addr" (or a bare address). */
static const char *orcpt_address(const char *orcpt)
{
    const char *semi = strchr(orcpt, ';');
    const char *a = semi ? semi + 1 : orcpt;
    while (*a == ' ')
        a++;
    return a;
}

int bounce_compose(const struct bounce_info *info, int (*emit)(void *ctx, const char *data, size_t n), void *ctx)
{
    if (info == NULL || emit == NULL || info->msg == NULL || info->myhostname == NULL || info->kind == NULL) {
        errno = EINVAL;
        return -1;
    }
    const struct queue_message *msg = info->msg;
    const char *kind = info->kind;
    int failure = strcmp(kind, "failure") == 0, delay = strcmp(kind, "delay") == 0;
    int success = !failure && !delay;
    size_t limit = info->size_limit ? info->size_limit : BOUNCE_SIZE_LIMIT;
    unsigned long long clen = msg->content_length;
    const char *qid = info->queue_id ? info->queue_id : (msg->id ? msg->id : "unknown");
    const char *sender = msg->env.sender ? msg->env.sender : "";
    const char *postmaster = info->postmaster ? info->postmaster : "postmaster";
    char v1[FIELD_MAX + 1], v2[FIELD_MAX + 1], host[FIELD_MAX + 1];
    clean(host, info->myhostname);

    /* What of the original is enclosed. */
    int full = failure && !info->headers_only && !info->postmaster_copy && clen <= limit;
    unsigned long long enclosed = clen;
    if (!full) {
        long long h;
        if (header_length(msg, info->fd, clen, limit, &h) < 0)
            return -1;
        enclosed = (unsigned long long)h;
    }

    /* The boundary: never a substring of what is enclosed. */
    char boundary[80], bqid[25], bhost[31];
    boundary_text(bqid, qid, sizeof(bqid));
    boundary_text(bhost, host, sizeof(bhost));
    for (unsigned tries = 0;; tries++) {
        if (tries == 0)
            snprintf(boundary, sizeof(boundary), "%s.%lld/%s", bqid, info->now, bhost);
        else
            snprintf(boundary, sizeof(boundary), "%s.%lld/%.20s=_%016llx", bqid, info->now, bhost,
                     fnv(info->boundary_seed ? info->boundary_seed : qid, tries));
        int hit = content_contains(msg, info->fd, enclosed, boundary);
        if (hit < 0)
            return -1;
        if (!hit)
            break;
        if (tries + 1 >= BOUNDARY_TRIES) {
            errno = EEXIST;   /* a message built against us: refuse rather than emit a broken MIME tree */
            return -1;
        }
    }

    struct out o = { .emit = emit, .ctx = ctx };
    char date[64];
    int eightbit = (msg->env.flags & (QUEUE_F_8BITMIME | QUEUE_F_SMTPUTF8 | QUEUE_F_BINARYMIME)) != 0;

    /* ---- message header ---- */
    const char *to = info->to ? info->to : (*sender ? sender : postmaster);
    const char *subject = info->postmaster_copy ? (delay ? "Postmaster Warning: Delayed Mail"
                                                         : "Postmaster Copy: Undelivered Mail")
                        : delay ? "Delayed Mail (still being retried)"
                        : success ? "Successful Mail Delivery Report"
                        : (*sender ? "Undelivered Mail Returned to Sender" : "Postmaster Copy: Undelivered Mail");
    rfc5322_date(date, sizeof(date), info->now);
    out_printf(&o, "From: MAILER-DAEMON@%s (Mail Delivery System)\r\n", host);
    out_printf(&o, "Subject: %s\r\n", subject);
    out_printf(&o, "To: %s\r\n", clean(v1, to));
    out_printf(&o, "Date: %s\r\n", date);
    {
        struct tm tm;
        time_t t = (time_t)info->now;
        gmtime_r(&t, &tm);
        out_printf(&o, "Message-Id: <%04d%02d%02d%02d%02d%02d.%.40s.%c@%s>\r\n", tm.tm_year + 1900, tm.tm_mon + 1,
                   tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
                   clean(v2, info->boundary_seed ? info->boundary_seed : qid), kind[0], host);
    }
    out_puts(&o, "Auto-Submitted: auto-replied\r\n");
    out_puts(&o, "MIME-Version: 1.0\r\n");
    out_printf(&o, "Content-Type: multipart/report; report-type=delivery-status;\r\n\tboundary=\"%s\"\r\n",
               boundary);
    if (eightbit && full)
        out_puts(&o, "Content-Transfer-Encoding: 8bit\r\n");
    out_puts(&o, "\r\n");
    out_puts(&o, "This is a MIME-encapsulated message.\r\n\r\n");

    /* ---- part 1: the human-readable notification ---- */
    int text8 = 0;
    /* part 1 also names our host and the postmaster (UTF-8 with SMTPUTF8) */
    for (const char *p = host; *p; p++)
        text8 |= (unsigned char)*p >= 0x80;
    for (const char *p = postmaster; *p; p++)
        text8 |= (unsigned char)*p >= 0x80;
    for (size_t i = 0; i < info->nrcpt; i++) {
        const char *fields[] = { info->rcpts[i].address, info->rcpts[i].orcpt, human_reason(&info->rcpts[i]) };
        for (size_t k = 0; k < 3; k++)
            for (const char *p = fields[k]; p && *p; p++)
                if ((unsigned char)*p >= 0x80)
                    text8 = 1;
    }
    out_printf(&o, "--%s\r\n", boundary);
    out_puts(&o, "Content-Description: Notification\r\n");
    out_printf(&o, "Content-Type: text/plain; charset=%s\r\n", text8 ? "utf-8" : "us-ascii");
    if (text8)
        out_puts(&o, "Content-Transfer-Encoding: 8bit\r\n");
    out_puts(&o, "\r\n");
    out_printf(&o, "This is the mail system at host %s.\r\n\r\n", host);
    if (info->postmaster_copy) {
        /* no boilerplate for the postmaster */
    } else if (failure) {
        out_puts(&o, "I'm sorry to have to inform you that your message could not\r\n"
                     "be delivered to one or more recipients. It's attached below.\r\n\r\n");
        out_printf(&o, "For further assistance, please send mail to %s.\r\n\r\n", clean(v1, postmaster));
        out_puts(&o, "If you do so, please include this problem report. You can\r\n"
                     "delete your own text from the attached returned message.\r\n\r\n");
    } else if (delay) {
        long long hours = (info->now - msg->env.arrival_sec) / 3600;
        long long days = (info->max_lifetime ? info->max_lifetime : 5 * 86400) / 86400;
        out_puts(&o, "####################################################################\r\n"
                     "# THIS IS A WARNING ONLY.  YOU DO NOT NEED TO RESEND YOUR MESSAGE. #\r\n"
                     "####################################################################\r\n\r\n");
        out_printf(&o, "Your message could not be delivered for more than %lld hour(s).\r\n",
                   hours > 0 ? hours : 0);
        out_printf(&o, "It will be retried until it is %lld day(s) old.\r\n\r\n", days > 0 ? days : 1);
        out_printf(&o, "For further assistance, please send mail to %s.\r\n\r\n", clean(v1, postmaster));
        out_puts(&o, "If you do so, please include this problem report. You can\r\n"
                     "delete your own text from the attached returned message.\r\n\r\n");
    } else {
        out_puts(&o, "Your message was successfully delivered to the destination(s)\r\n"
                     "listed below. If the message was delivered to mailbox you will\r\n"
                     "receive no further notifications. Otherwise you may still receive\r\n"
                     "notifications of mail delivery errors from other systems.\r\n\r\n");
    }
    out_puts(&o, "                   The mail system\r\n");
    for (size_t i = 0; i < info->nrcpt; i++) {
        const struct bounce_rcpt *r = &info->rcpts[i];
        char line[3 * FIELD_MAX + 64];
        size_t n = (size_t)snprintf(line, sizeof(line), "<%s>", clean(v1, r->address));
        if (r->orcpt) {
            const char *oa = orcpt_address(r->orcpt);
            if (*oa && strcasecmp(oa, r->address ? r->address : "") != 0)
                n += (size_t)snprintf(line + n, sizeof(line) - n, " (expanded from <%s>)", clean(v2, oa));
        }
        snprintf(line + n, sizeof(line) - n, ": %s", clean(v2, human_reason(r)));
        out_puts(&o, "\r\n");
        out_line_wrapped(&o, line);
    }
    out_puts(&o, "\r\n");

    /* ---- part 2: message/delivery-status ---- */
    out_printf(&o, "--%s\r\n", boundary);
    out_puts(&o, "Content-Description: Delivery report\r\n");
    out_puts(&o, "Content-Type: message/delivery-status\r\n\r\n");
    /* Per-message fields in RFC 3464's order; extension fields last. */
    if (msg->env.envid)
        out_printf(&o, "Original-Envelope-Id: %s\r\n", clean(v1, msg->env.envid));
    out_printf(&o, "Reporting-MTA: dns; %s\r\n", host);
    if (msg->env.arrival_sec > 0) {
        rfc5322_date(date, sizeof(date), msg->env.arrival_sec);
        out_printf(&o, "Arrival-Date: %s\r\n", date);
    }
    out_printf(&o, "X-Petrel-Queue-ID: %s\r\n", clean(v1, qid));
    out_printf(&o, "X-Petrel-Sender: rfc822; %s\r\n", clean(v1, sender));
    for (size_t i = 0; i < info->nrcpt; i++) {
        const struct bounce_rcpt *r = &info->rcpts[i];
        out_puts(&o, "\r\n");
        out_printf(&o, "Final-Recipient: rfc822; %s\r\n", clean(v1, r->address));
        if (r->orcpt) {
            if (strchr(r->orcpt, ';'))
                out_printf(&o, "Original-Recipient: %s\r\n", clean(v1, r->orcpt));
            else
                out_printf(&o, "Original-Recipient: rfc822; %s\r\n", clean(v1, r->orcpt));
        }
        out_printf(&o, "Action: %s\r\n", clean(v1, r->action ? r->action : failure ? "failed"
                                                    : delay ? "delayed" : "delivered"));
        out_printf(&o, "Status: %s\r\n", clean(v1, r->status ? r->status : failure ? "5.0.0"
                                                    : delay ? "4.0.0" : "2.0.0"));
        if (r->remote_mta)
            out_printf(&o, "Remote-MTA: %s\r\n", clean(v1, r->remote_mta));
        if (r->diagnostic)
            out_printf(&o, "Diagnostic-Code: %s\r\n", clean(v1, r->diagnostic));
        if (r->last_attempt > 0) {
            rfc5322_date(date, sizeof(date), r->last_attempt);
            out_printf(&o, "Last-Attempt-Date: %s\r\n", date);
        }
        if (delay && info->retry_until > 0) {
            rfc5322_date(date, sizeof(date), info->retry_until);
            out_printf(&o, "Will-Retry-Until: %s\r\n", date);
        }
    }
    out_puts(&o, "\r\n");

    /* ---- part 3: the original, or its headers ---- */
    out_printf(&o, "--%s\r\n", boundary);
    if (full) {
        out_puts(&o, "Content-Description: Undelivered Message\r\n");
        out_puts(&o, "Content-Type: message/rfc822\r\n");
        if (eightbit)
            out_puts(&o, "Content-Transfer-Encoding: 8bit\r\n");
    } else {
        out_printf(&o, "Content-Description: %s Message Headers\r\n",
                   failure ? "Undelivered" : delay ? "Delayed" : "Delivered");
        out_puts(&o, "Content-Type: text/rfc822-headers\r\n");
        if (eightbit)
            out_puts(&o, "Content-Transfer-Encoding: 8bit\r\n");
    }
    out_puts(&o, "\r\n");
    char chunk[READ_CHUNK];
    unsigned long long pos = 0;
    char last = '\n';
    while (pos < enclosed && !o.failed) {
        size_t n = enclosed - pos < sizeof(chunk) ? (size_t)(enclosed - pos) : sizeof(chunk);
        if (read_at(msg, info->fd, chunk, n, pos) < 0)
            return -1;
        out_write(&o, chunk, n);
        last = chunk[n - 1];
        pos += n;
    }
    if (last != '\n')
        out_puts(&o, "\r\n");
    out_printf(&o, "\r\n--%s--\r\n", boundary);
    out_flush(&o);
    if (o.failed) {
        if (errno == 0)
            errno = EIO;
        return -1;
    }
    return 0;
}
