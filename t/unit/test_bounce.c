/* Unit tests for core/qmgr/bounce.c: the DSN's MIME structure (boundary
 * present, unique, three parts), per-recipient fields, RET=HDRS and the size
 * limit giving text/rfc822-headers, delay and success wording, a boundary
 * that occurs in the original, and emit failures. The original lives in a
 * temporary file after some envelope-like bytes, as in a queue file. */
#include "config.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "lib/buf.h"
#include "lib/xalloc.h"
#include "qmgr/bounce.h"
#include "../tap.h"

static int emit_buf(void *ctx, const char *data, size_t n)
{
    buf_append(ctx, data, n);
    return 0;
}

static int emit_fail_after(void *ctx, const char *data, size_t n)
{
    (void)data;
    size_t *left = ctx;
    if (n > *left)
        return -1;
    *left -= n;
    return 0;
}

static int make_file(const char *content, size_t len, off_t *off)
{
    char path[] = "/tmp/petrel-bounce-XXXXXX";
    int fd = mkstemp(path);
    unlink(path);
    static const char env[] = "ENVELOPE\r\n";
    if (write(fd, env, sizeof(env) - 1) < 0 || write(fd, content, len) < 0)
        abort();
    *off = sizeof(env) - 1;
    return fd;
}

static size_t count(const char *hay, const char *needle)
{
    size_t n = 0;
    for (const char *p = hay; (p = strstr(p, needle)) != NULL; p++)
        n++;
    return n;
}

/* The boundary parameter of the top Content-Type, into out. */
static int get_boundary(const char *msg, char *out, size_t size)
{
    const char *p = strstr(msg, "boundary=\"");
    if (!p)
        return -1;
    p += 10;
    const char *e = strchr(p, '"');
    if (!e || (size_t)(e - p) >= size)
        return -1;
    memcpy(out, p, (size_t)(e - p));
    out[e - p] = '\0';
    return 0;
}

static int all_crlf(const char *s, size_t n)
{
    for (size_t k = 0; k < n; k++)
        if (s[k] == '\n' && (k == 0 || s[k - 1] != '\r'))
            return 0;
    return 1;
}

static const char ORIGINAL[] =
    "Received: from client by mx.example with ESMTP id 0ABC\r\n"
    "From: s@example.com\r\n"
    "Subject: hello\r\n"
    "\r\n"
    "BODY-MARKER line\r\n";

struct setup {
    struct queue_message msg;
    struct queue_rcpt rcpts[2];
    struct bounce_rcpt br[2];
    struct bounce_info info;
};

static void setup(struct setup *s, int fd, off_t off, size_t len, const char *kind)
{
    memset(s, 0, sizeof(*s));
    s->rcpts[0].address = "a@x.example";
    s->rcpts[1].address = "b@y.example";
    s->msg.id = "0ABCDEFGHJK0000000A";
    s->msg.env.sender = "s@example.com";
    s->msg.env.envid = "ENV-123";
    s->msg.env.arrival_sec = 1700000000;
    s->msg.env.rcpt_count = 2;
    s->msg.env.rcpts = s->rcpts;
    s->msg.content_offset = off;
    s->msg.content_length = len;
    s->br[0] = (struct bounce_rcpt){ .address = "a@x.example", .orcpt = "rfc822;alias@x.example",
                                     .action = "failed", .status = "5.1.1", .remote_mta = "dns; mx.x.example",
                                     .diagnostic = "smtp; 550 5.1.1 <a@x.example>: no such user",
                                     .last_attempt = 1700000100,
                                     .reason = "host mx.x.example[192.0.2.1] said: 550 5.1.1 no such user "
                                               "(in reply to RCPT TO command)" };
    s->br[1] = (struct bounce_rcpt){ .address = "b@y.example", .action = "failed", .status = "5.2.2",
                                     .diagnostic = "x-unix; mailbox full\r\nInjected: yes", .last_attempt = 0 };
    s->info = (struct bounce_info){ .myhostname = "mx.example", .mail_name = "Petrel", .postmaster = "postmaster",
                                    .queue_id = s->msg.id, .msg = &s->msg, .fd = fd, .kind = kind,
                                    .rcpts = s->br, .nrcpt = 2, .now = 1700003600, .boundary_seed = "SEED1" };
}

int main(void)
{
    off_t off;
    int fd = make_file(ORIGINAL, sizeof(ORIGINAL) - 1, &off);
    struct setup s;
    struct buf b = BUF_INIT;
    char bd[128], delim[160];

    /* ---- failure, full original ---- */
    setup(&s, fd, off, sizeof(ORIGINAL) - 1, "failure");
    is_int(bounce_compose(&s.info, emit_buf, &b), 0, "failure: composed");
    ok(strstr(b.data, "From: MAILER-DAEMON@mx.example (Mail Delivery System)\r\n") != NULL, "From: header");
    ok(strstr(b.data, "\r\nSubject: Undelivered Mail Returned to Sender\r\n") != NULL, "Subject: failure");
    ok(strstr(b.data, "\r\nTo: s@example.com\r\n") != NULL, "To: the sender");
    ok(strstr(b.data, "\r\nAuto-Submitted: auto-replied\r\n") != NULL, "Auto-Submitted");
    ok(strstr(b.data, "\r\nMessage-Id: <") != NULL && strstr(b.data, "SEED1") != NULL, "Message-Id from the seed");
    ok(strstr(b.data, "\r\nDate: ") != NULL, "Date:");
    ok(strstr(b.data, "Content-Type: multipart/report; report-type=delivery-status;") != NULL, "multipart/report");
    ok(get_boundary(b.data, bd, sizeof(bd)) == 0, "boundary found: %s", bd);
    ok(strlen(bd) <= 70, "boundary at most 70 characters");
    snprintf(delim, sizeof(delim), "\r\n--%s\r\n", bd);
    is_int(count(b.data, delim), 3, "three parts");
    snprintf(delim, sizeof(delim), "\r\n--%s--\r\n", bd);
    is_int(count(b.data, delim), 1, "one close delimiter");
    ok(b.len >= strlen(delim) && strcmp(b.data + b.len - strlen(delim), delim) == 0, "message ends with it");
    ok(all_crlf(b.data, b.len), "CRLF line ends throughout");
    ok(strstr(b.data, "This is the mail system at host mx.example.") != NULL, "Postfix's opening");
    ok(strstr(b.data, "I'm sorry to have to inform you that your message could not") != NULL, "Postfix's text");
    ok(strstr(b.data, "<a@x.example> (expanded from <alias@x.example>): host mx.x.example[192.0.2.1] said: 550")
       != NULL, "per-recipient line with the original address");
    ok(strstr(b.data, "<b@y.example>: mailbox full  Injected: yes\r\n") != NULL,
       "reason falls back to the diagnostic, control characters flattened");
    ok(strstr(b.data, "Content-Type: message/delivery-status\r\n\r\nOriginal-Envelope-Id: ENV-123\r\n"
                      "Reporting-MTA: dns; mx.example\r\nArrival-Date: ") != NULL, "per-message fields in order");
    ok(strstr(b.data, "X-Petrel-Queue-ID: 0ABCDEFGHJK0000000A\r\n") != NULL, "X-Petrel-Queue-ID");
    ok(strstr(b.data, "X-Petrel-Sender: rfc822; s@example.com\r\n") != NULL, "X-Petrel-Sender");
    ok(strstr(b.data, "\r\n\r\nFinal-Recipient: rfc822; a@x.example\r\nOriginal-Recipient: rfc822;alias@x.example\r\n"
                      "Action: failed\r\nStatus: 5.1.1\r\nRemote-MTA: dns; mx.x.example\r\n"
                      "Diagnostic-Code: smtp; 550 5.1.1 <a@x.example>: no such user\r\nLast-Attempt-Date: ") != NULL,
       "recipient 1 fields");
    ok(strstr(b.data, "\r\n\r\nFinal-Recipient: rfc822; b@y.example\r\nAction: failed\r\nStatus: 5.2.2\r\n"
                      "Diagnostic-Code: x-unix; mailbox full  Injected: yes\r\n\r\n") != NULL,
       "recipient 2 fields, no header injection");
    ok(strstr(b.data, "\r\nInjected: yes") == NULL, "no injected field line");
    ok(strstr(b.data, "Content-Type: message/rfc822\r\n\r\nReceived: from client") != NULL, "message/rfc822 part");
    ok(strstr(b.data, "BODY-MARKER line\r\n") != NULL, "original body enclosed");

    /* ---- RET=HDRS ---- */
    buf_reset(&b);
    setup(&s, fd, off, sizeof(ORIGINAL) - 1, "failure");
    s.info.headers_only = 1;
    is_int(bounce_compose(&s.info, emit_buf, &b), 0, "hdrs: composed");
    ok(strstr(b.data, "Content-Type: text/rfc822-headers\r\n\r\nReceived: from client") != NULL,
       "RET=HDRS: text/rfc822-headers");
    ok(strstr(b.data, "Subject: hello\r\n") != NULL, "headers enclosed");
    ok(strstr(b.data, "BODY-MARKER") == NULL, "body not enclosed");
    ok(strstr(b.data, "message/rfc822") == NULL, "no message/rfc822");

    /* ---- over the size limit ---- */
    buf_reset(&b);
    setup(&s, fd, off, sizeof(ORIGINAL) - 1, "failure");
    s.info.size_limit = 70;
    is_int(bounce_compose(&s.info, emit_buf, &b), 0, "limit: composed");
    ok(strstr(b.data, "text/rfc822-headers") != NULL && strstr(b.data, "BODY-MARKER") == NULL,
       "over bounce_size_limit: headers only");
    ok(strstr(b.data, "Received: from client by mx.example with ESMTP id 0ABC\r\n") != NULL &&
       strstr(b.data, "\r\nFrom: s@example.com") == NULL, "headers cut at a line end within the limit");

    /* ---- delay ---- */
    buf_reset(&b);
    setup(&s, fd, off, sizeof(ORIGINAL) - 1, "delay");
    s.br[0].action = "delayed";
    s.br[0].status = "4.4.1";
    s.info.nrcpt = 1;
    s.info.max_lifetime = 5 * 86400;
    s.info.retry_until = 1700000000 + 5 * 86400;
    is_int(bounce_compose(&s.info, emit_buf, &b), 0, "delay: composed");
    ok(strstr(b.data, "Subject: Delayed Mail (still being retried)\r\n") != NULL, "delay: subject");
    ok(strstr(b.data, "# THIS IS A WARNING ONLY.  YOU DO NOT NEED TO RESEND YOUR MESSAGE. #") != NULL,
       "delay: warning banner");
    ok(strstr(b.data, "could not be delivered for more than 1 hour(s).\r\nIt will be retried until it is 5 day(s) old.")
       != NULL, "delay: durations");
    ok(strstr(b.data, "Action: delayed\r\nStatus: 4.4.1\r\n") != NULL, "delay: Action/Status");
    ok(strstr(b.data, "Will-Retry-Until: ") != NULL, "delay: Will-Retry-Until");
    ok(strstr(b.data, "Content-Description: Delayed Message Headers") != NULL &&
       strstr(b.data, "BODY-MARKER") == NULL, "delay: headers only");

    /* ---- success ---- */
    buf_reset(&b);
    setup(&s, fd, off, sizeof(ORIGINAL) - 1, "success");
    s.br[0] = (struct bounce_rcpt){ .address = "a@x.example", .action = "delivered", .status = "2.0.0",
                                    .diagnostic = "x-unix; delivered to maildir" };
    s.info.nrcpt = 1;
    is_int(bounce_compose(&s.info, emit_buf, &b), 0, "success: composed");
    ok(strstr(b.data, "Subject: Successful Mail Delivery Report\r\n") != NULL, "success: subject");
    ok(strstr(b.data, "Your message was successfully delivered to the destination(s)") != NULL, "success: text");
    ok(strstr(b.data, "<a@x.example>: delivered to maildir\r\n") != NULL, "success: recipient line");

    /* ---- null sender: postmaster copy ---- */
    buf_reset(&b);
    setup(&s, fd, off, sizeof(ORIGINAL) - 1, "failure");
    s.msg.env.sender = "";
    s.info.headers_only = 1;
    is_int(bounce_compose(&s.info, emit_buf, &b), 0, "double bounce: composed");
    ok(strstr(b.data, "\r\nTo: postmaster\r\n") != NULL, "double bounce: to the postmaster");
    ok(strstr(b.data, "Subject: Postmaster Copy: Undelivered Mail\r\n") != NULL, "double bounce: subject");

    /* ---- the default boundary occurs in the original ---- */
    char hostile[512];
    snprintf(hostile, sizeof(hostile),
             "Subject: x\r\n\r\n--0ABCDEFGHJK0000000A.1700003600/mx.example\r\nmore\r\n");
    off_t hoff;
    int hfd = make_file(hostile, strlen(hostile), &hoff);
    buf_reset(&b);
    setup(&s, hfd, hoff, strlen(hostile), "failure");
    is_int(bounce_compose(&s.info, emit_buf, &b), 0, "collision: composed");
    ok(get_boundary(b.data, bd, sizeof(bd)) == 0 && strcmp(bd, "0ABCDEFGHJK0000000A.1700003600/mx.example") != 0,
       "collision: another boundary chosen (%s)", bd);
    ok(strstr(hostile, bd) == NULL, "collision: new boundary not in the content");
    snprintf(delim, sizeof(delim), "\r\n--%s\r\n", bd);
    is_int(count(b.data, delim), 3, "collision: still three parts");
    close(hfd);

    /* ---- failures ---- */
    setup(&s, fd, off, sizeof(ORIGINAL) - 1, "failure");
    size_t left = 100;
    is_int(bounce_compose(&s.info, emit_fail_after, &left), -1, "emit failure is reported");
    setup(&s, fd, off, sizeof(ORIGINAL) - 1 + 500, "failure");
    buf_reset(&b);
    is_int(bounce_compose(&s.info, emit_buf, &b), -1, "short original is a read error");
    s.info.msg = NULL;
    is_int(bounce_compose(&s.info, emit_buf, &b), -1, "missing message: EINVAL");

    /* ---- a large original is streamed, not truncated, under the limit ---- */
    size_t biglen = 45000;
    char *big = xmalloc(biglen + 1);
    memcpy(big, "Subject: big\r\n\r\n", 16);
    for (size_t k = 16; k < biglen; k++)
        big[k] = (k % 78 == 76) ? '\r' : (k % 78 == 77) ? '\n' : 'z';
    off_t boff;
    int bfd = make_file(big, biglen, &boff);
    buf_reset(&b);
    setup(&s, bfd, boff, biglen, "failure");
    is_int(bounce_compose(&s.info, emit_buf, &b), 0, "big: composed");
    ok(b.len > biglen && memmem(b.data, b.len, big, biglen) != NULL, "big: the whole original enclosed");
    close(bfd);
    free(big);

    buf_free(&b);
    close(fd);

    /* ---- an edited message (queue format version 2): the original is
     * what the content map splices, read through queue_content_pread ---- */
    {
        static const char appended[] = "Subject: edited\r\n";
        char data[sizeof(ORIGINAL) + sizeof(appended)];
        memcpy(data, ORIGINAL, sizeof(ORIGINAL) - 1);
        memcpy(data + sizeof(ORIGINAL) - 1, appended, sizeof(appended) - 1);
        off_t eoff;
        int efd = make_file(data, sizeof(ORIGINAL) - 1 + sizeof(appended) - 1, &eoff);
        const char *subject = strstr(ORIGINAL, "Subject: hello"), *blank = strstr(ORIGINAL, "\r\n\r\n") + 2;
        struct queue_segment map[3] = {
            { 0, (unsigned long long)(subject - ORIGINAL) },
            { sizeof(ORIGINAL) - 1, sizeof(appended) - 1 },
            { (unsigned long long)(blank - ORIGINAL), (unsigned long long)(sizeof(ORIGINAL) - 1 - (size_t)(blank - ORIGINAL)) },
        };
        char want[512];
        snprintf(want, sizeof(want), "%.*s%s%s", (int)(subject - ORIGINAL), ORIGINAL, appended, blank);
        setup(&s, efd, eoff, strlen(want), "failure");
        s.msg.segments = map;
        s.msg.segment_count = 3;
        buf_reset(&b);
        is_int(bounce_compose(&s.info, emit_buf, &b), 0, "edited message: failure composed");
        ok(strstr(b.data, want) != NULL && strstr(b.data, "Subject: hello") == NULL,
           "the returned original is the edited message, spliced by its content map");
        setup(&s, efd, eoff, strlen(want), "delay");
        s.msg.segments = map;
        s.msg.segment_count = 3;
        buf_reset(&b);
        is_int(bounce_compose(&s.info, emit_buf, &b), 0, "edited message: delay notice composed");
        ok(strstr(b.data, "Subject: edited\r\n") != NULL && strstr(b.data, "BODY-MARKER") == NULL,
           "its headers only: the edited ones");
        close(efd);
        buf_free(&b);
    }
    return done_testing();
}
