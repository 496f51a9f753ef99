/*
 * Fuzz target for the bounce composer (core/qmgr/bounce.c): delivery status
 * notifications built from hostile envelope fields (sender, ENVID, ORCPT,
 * recipients, remote replies quoted in Diagnostic-Code, our own host name)
 * and hostile message content (the returned original).
 *
 * Input: byte 0 picks the kind (failure, delay, success), RET=HDRS, the
 * 8-bit flags and the size limit; byte 1 the number of recipients (1..4);
 * then NUL-terminated fields: myhostname, postmaster, queue ID, sender,
 * ENVID, To, boundary seed, then per recipient address, ORCPT, action,
 * status, Remote-MTA, Diagnostic-Code, reason (an empty field means "not
 * set" where the field is optional); whatever follows is the original
 * message content.
 *
 * Properties, beyond "no crash, no leak, no hang":
 *  - the notice is composed (a content built to contain every boundary we
 *    try is the one allowed refusal, EEXIST);
 *  - every line we write (the header section, the notification and the
 *    delivery-status parts, the part headers) ends in CRLF, holds no bare CR
 *    or LF and no NUL, and is at most 998 octets: no envelope value can start
 *    a new header or field, and the message is valid RFC 5322;
 *  - the MIME structure holds: the boundary is made of RFC 2046 bchars, and
 *    no line starts with "--boundary" but the three part delimiters and the
 *    closing one;
 *  - one Final-Recipient field per recipient;
 *  - part 3 is exactly the original, or its first lines when only headers
 *    are returned; and when the original has no bare CR or LF, neither has
 *    the whole notice;
 *  - a failing emit callback makes it return -1.
 *
 * make check builds it with t/fuzz/replay_main.c and replays
 * t/fuzz/corpus/bounce; `make fuzz` runs it with libFuzzer (doc/testing.md).
 */
#include "config.h"

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "lib/buf.h"
#include "qmgr/bounce.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define PREFIX "ENVELOPE RECORDS\r\n"   /* content starts after this, as in a queue file */

static void check(int cond, const char *what)
{
    if (!cond) {
        fprintf(stderr, "property violated: %s\n", what);
        abort();
    }
}

static int emit_buf(void *ctx, const char *d, size_t n)
{
    buf_append(ctx, d, n);
    return 0;
}

static int emit_fail_after(void *ctx, const char *d, size_t n)
{
    (void)d;
    size_t *left = ctx;
    if (n > *left)
        return -1;
    *left -= n;
    return 0;
}

/* Next NUL-terminated field, or NULL at the end of the fields. */
static const char *field(const char **cursor, const char *end)
{
    const char *start = *cursor;
    const char *nul = start < end ? memchr(start, '\0', (size_t)(end - start)) : NULL;
    if (nul == NULL)
        return NULL;
    *cursor = nul + 1;
    return start;
}

static const char *opt(const char *f)
{
    return f && *f ? f : NULL;
}

/* Lines of [p, p+n) that we wrote: CRLF only, no NUL, at most 998 octets. */
static void check_lines(const char *p, size_t n, const char *what)
{
    size_t line = 0;
    for (size_t k = 0; k < n; k++) {
        char c = p[k];
        check(c != '\0', what);
        if (c == '\r')
            check(k + 1 < n && p[k + 1] == '\n', what);
        if (c == '\n') {
            check(k > 0 && p[k - 1] == '\r', what);
            line = 0;
            continue;
        }
        check(++line <= 999, what);   /* 998 octets plus the CR */
    }
}

static size_t count(const char *hay, size_t n, const char *needle)
{
    size_t c = 0, nl = strlen(needle);
    for (const char *p = hay; (p = memmem(p, n - (size_t)(p - hay), needle, nl)) != NULL; p++)
        c++;
    return c;
}

static int has_bare_cr_lf(const char *p, size_t n)
{
    for (size_t k = 0; k < n; k++) {
        if (p[k] == '\r' && (k + 1 == n || p[k + 1] != '\n'))
            return 1;
        if (p[k] == '\n' && (k == 0 || p[k - 1] != '\r'))
            return 1;
    }
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 2 || size > 200000)
        return 0;
    const char *cursor = (const char *)data + 2, *end = (const char *)data + size;
    unsigned flags = data[0];
    size_t nrcpt = 1 + data[1] % 4;
    const char *kinds[] = { "failure", "delay", "success", "failure" };

    struct bounce_info info;
    memset(&info, 0, sizeof(info));
    const char *host = field(&cursor, end);
    info.myhostname = host && *host ? host : "mx.petrel.test";
    info.postmaster = opt(field(&cursor, end));
    info.queue_id = opt(field(&cursor, end));
    const char *sender = field(&cursor, end);
    const char *envid = opt(field(&cursor, end));
    info.to = opt(field(&cursor, end));
    info.boundary_seed = opt(field(&cursor, end));
    struct bounce_rcpt rcpts[4];
    memset(rcpts, 0, sizeof(rcpts));
    for (size_t i = 0; i < nrcpt; i++) {
        const char *a = field(&cursor, end);
        rcpts[i].address = a ? a : "rcpt@remote.test";
        rcpts[i].orcpt = opt(field(&cursor, end));
        rcpts[i].action = opt(field(&cursor, end));
        rcpts[i].status = opt(field(&cursor, end));
        rcpts[i].remote_mta = opt(field(&cursor, end));
        rcpts[i].diagnostic = opt(field(&cursor, end));
        rcpts[i].reason = opt(field(&cursor, end));
        rcpts[i].last_attempt = (flags & 0x40) ? 1700000000 + (long long)i : 0;
    }
    const char *content = cursor;
    size_t clen = (size_t)(end - cursor);

    /* The original lives in a file after some envelope-like bytes. */
    int fd = memfd_create("petrel-fuzz-bounce", MFD_CLOEXEC);
    check(fd >= 0, "memfd_create");
    if (write(fd, PREFIX, sizeof(PREFIX) - 1) != (ssize_t)(sizeof(PREFIX) - 1) ||
        (clen && write(fd, content, clen) != (ssize_t)clen))
        abort();
    struct queue_rcpt qr = { rcpts[0].address, rcpts[0].orcpt, 0 };
    struct queue_message msg;
    memset(&msg, 0, sizeof(msg));
    msg.id = "0000000000000FZZZ00";
    msg.env.sender = sender ? sender : "";
    msg.env.envid = envid;
    msg.env.flags = (flags & 0x08 ? QUEUE_F_8BITMIME : 0) | (flags & 0x10 ? QUEUE_F_SMTPUTF8 : 0);
    msg.env.arrival_sec = (flags & 0x20) ? 1699990000 : 0;
    msg.env.rcpt_count = 1;
    msg.env.rcpts = &qr;
    msg.content_offset = (off_t)(sizeof(PREFIX) - 1);
    msg.content_length = clen;
    msg.file_size = (off_t)(sizeof(PREFIX) - 1 + clen);

    info.msg = &msg;
    info.fd = fd;
    info.kind = kinds[flags & 3];
    info.rcpts = rcpts;
    info.nrcpt = nrcpt;
    info.headers_only = !!(flags & 0x04);
    info.now = 1700000000;
    info.size_limit = (flags & 0x80) ? 200 : 0;
    info.max_lifetime = 5 * 86400;
    info.retry_until = (flags & 0x20) ? 1700400000 : 0;

    struct buf out = BUF_INIT;
    errno = 0;
    int rc = bounce_compose(&info, emit_buf, &out);
    if (rc != 0) {
        check(errno == EEXIST, "the notice is composed (only a content holding every boundary may stop it)");
        goto done;
    }
    check(out.len > 0, "something was written");
    const char *msgtext = out.data;
    size_t n = out.len;

    /* The header section. */
    const char *eoh = memmem(msgtext, n, "\r\n\r\n", 4);
    check(eoh != NULL, "the header section ends with an empty line");
    size_t hlen = (size_t)(eoh - msgtext) + 2;
    check_lines(msgtext, hlen, "header lines are CRLF-terminated, without NUL, bare CR/LF or overlong lines");
    for (const char *line = msgtext; line < msgtext + hlen;) {
        const char *lf = memchr(line, '\n', (size_t)(msgtext + hlen - line));
        if (line[0] != ' ' && line[0] != '\t') {
            const char *colon = memchr(line, ':', (size_t)(lf - line));
            check(colon != NULL && colon > line, "every header line is a field or a continuation");
            for (const char *c = line; c < colon; c++)
                check(*c > 32 && *c < 127, "field names are printable ASCII");
        }
        line = lf + 1;
    }

    /* The boundary and the MIME structure. */
    /* Ours is on its own line (a value of a field we write holds no CR/LF,
     * but may hold the text boundary="). */
    const char *bp = memmem(msgtext, hlen, "\r\n\tboundary=\"", 13);
    check(bp != NULL, "a boundary parameter");
    bp += 13;
    const char *be = memchr(bp, '"', (size_t)(msgtext + hlen - bp));
    check(be != NULL && be > bp && be - bp < 80, "a closed boundary of sensible length");
    char boundary[128], delim[140], close_delim[140];
    snprintf(boundary, sizeof(boundary), "%.*s", (int)(be - bp), bp);
    for (const char *b = boundary; *b; b++)   /* RFC 2046 bchars (without space) */
        check((*b >= '0' && *b <= '9') || (*b >= 'A' && *b <= 'Z') || (*b >= 'a' && *b <= 'z') ||
                  strchr("'()+_,-./:=?", *b) != NULL,
              "the boundary is made of RFC 2046 bchars");
    snprintf(delim, sizeof(delim), "\r\n--%s\r\n", boundary);
    snprintf(close_delim, sizeof(close_delim), "\r\n--%s--\r\n", boundary);
    char line_start[140];
    snprintf(line_start, sizeof(line_start), "\r\n--%s", boundary);
    check(count(msgtext, n, line_start) == 4, "a line starting with the boundary is one of the four delimiters");
    check(count(msgtext, n, delim) == 3, "three parts");
    size_t cl = strlen(close_delim);
    check(n >= cl && memcmp(msgtext + n - cl, close_delim, cl) == 0, "the closing delimiter ends the message");

    /* Parts 1 and 2 and part 3's own header: all ours. */
    const char *p1 = memmem(msgtext, n, delim, strlen(delim));
    const char *p3 = p1;
    for (int k = 0; k < 2; k++)
        p3 = memmem(p3 + 1, (size_t)(msgtext + n - p3 - 1), delim, strlen(delim));
    check(p3 != NULL, "part 3 exists");
    const char *p3_body = memmem(p3 + strlen(delim), (size_t)(msgtext + n - p3 - strlen(delim)), "\r\n\r\n", 4);
    check(p3_body != NULL, "part 3 has a header");
    p3_body += 4;
    check_lines(p1, (size_t)(p3_body - p1), "parts 1 and 2 are CRLF lines without NUL, bare CR/LF or overlong lines");
    const char *p2 = memmem(p1 + 1, (size_t)(msgtext + n - p1 - 1), delim, strlen(delim));
    check(count(p2, (size_t)(p3 - p2), "\r\nFinal-Recipient: ") == nrcpt, "one Final-Recipient per recipient");
    /* Part 1's own header (up to its empty line) says its charset. */
    const char *p1_body = memmem(p1 + 2, (size_t)(p2 - p1 - 2), "\r\n\r\n", 4);
    check(p1_body != NULL, "part 1 has a header");
    if (memmem(p1, (size_t)(p1_body - p1), "charset=us-ascii", 16)) {
        for (const char *c = p1; c < p2; c++)
            check((unsigned char)*c < 0x80, "a us-ascii part is 7-bit");
    }

    /* Part 3: the original, or its first lines. */
    size_t enclosed = (size_t)(msgtext + n - cl - p3_body);
    int full = memmem(p3, (size_t)(p3_body - p3), "message/rfc822", 14) != NULL;
    if (enclosed > 0 && (enclosed > clen || memcmp(p3_body, content, enclosed) != 0)) {
        /* A CRLF was added after an original that does not end in LF. */
        check(enclosed >= 2 && memcmp(p3_body + enclosed - 2, "\r\n", 2) == 0 &&
                  memcmp(p3_body, content, enclosed - 2) == 0,
              "part 3 is the original's bytes");
        enclosed -= 2;
    }
    if (full)
        check(enclosed == clen, "a full return encloses the whole original");
    else
        check(enclosed == 0 || enclosed == clen || content[enclosed - 1] == '\n',
              "headers are returned up to a line end (or all of an original without a body)");
    if (!has_bare_cr_lf(content, clen) && memchr(content, '\0', clen) == NULL)
        check(!has_bare_cr_lf(msgtext, n), "no bare CR or LF in the notice of a clean original");

    /* A failing emit. */
    size_t left = n / 2;
    check(bounce_compose(&info, emit_fail_after, &left) == -1, "a failing emit fails the compose");

done:
    buf_free(&out);
    close(fd);
    return 0;
}
