/*
 * The pickup role: turns the files local users leave in
 * queue_directory/maildrop/ (petrel-sendmail through petrel-postdrop) into
 * queue files, as Postfix's pickup does. The master forks it when master.cf
 * has a `pickup` line; it runs as mail_owner.
 *
 * Same processing as before the maildrop existed: each file is submitted
 * to an smtpd session that runs inside this process, over a socket pair,
 * so a local submission meets exactly the restrictions, module hooks,
 * Received: header, always_bcc and header rewriting it always met. The
 * session is a local one (smtpd_accept_local): trusted as mynetworks is,
 * with the identity taken from the file's owner (fstat on the opened file:
 * a user cannot chown, and only petrel-postdrop writes there), where
 * SO_PEERCRED used to give it.
 *
 * Life of a file:
 *   1. Found by inotify (IN_CLOSE_WRITE, IN_MOVED_TO), by the scan at start,
 *      or by the periodic scan (master.cf's wakeup column for pickup, 60 s
 *      by default), which also retries files that failed temporarily.
 *   2. Claimed: opened O_NOFOLLOW, must be a regular file with the ready
 *      mode (0744); flock(LOCK_EX|LOCK_NB), which fails while
 *      petrel-postdrop still writes it; still linked after the lock.
 *      A file never finished whose writer is gone (unlocked, not ready,
 *      over an hour old) is removed with a log line: it was never
 *      acknowledged.
 *   3. Read once in full with the bounded maildrop parser: anything wrong
 *      moves it to corrupt/maildrop-NAME with a warning saying why. No
 *      byte of a bad file is ever submitted.
 *   4. Submitted: EHLO, MAIL, RCPT..., DATA and the content read again from
 *      the file (dot-stuffed, bare LF made CRLF). The session's "250 ...
 *      queued as ID" comes after the queue file's fsync, like any 250.
 *   5. Outcome. Any 4xx (or a lost session) before the message was queued:
 *      nothing was queued, the file stays and is retried later. A 5xx for
 *      some recipients, or for the message: a non-delivery notice to the
 *      sender goes through the same session (MAIL FROM:<>), since the
 *      user was told "accepted" long ago; a file older than
 *      maximal_queue_lifetime turns its 4xx into failures too.
 *   6. The maildrop file is removed only now, so a crash before the commit
 *      leaves it to be submitted again. A crash after it is no duplicate:
 *      the queue file names the maildrop file (struct queue_origin, a 'D'
 *      record), and the queue manager, the recovery scan and the next
 *      pickup role (release_committed, at its start) remove the maildrop
 *      file of any such queue file before the message can go anywhere. The
 *      one case left is a kill between the message's commit and its
 *      notice's (doc/queue-format.md, Maildrop origin).
 *
 * Files are read with ordinary blocking reads on this role's loop: the loop
 * serves nothing but these in-process sessions, one file at a time.
 *
 * Steps 2 and 3 (claiming and reading a file) are in pickup_claim.c; the
 * job and the role's state are in pickup_int.h.
 */
#include "config.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/inotify.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>

#include "config/bind.h"
#include "config/cfg.h"
#include "lib/buf.h"
#include "lib/log.h"
#include "lib/xalloc.h"
#include "queue/maildrop.h"
#include "queue/queue.h"
#include "smtpd/smtpd.h"
#include "smtpd/smtpd_int.h"
#include "smtpd/pickup_int.h"

#define PENDING_MAX 4096              /* names waiting; past that, rescan later */
#define OUTPUT_HIGH (256 * 1024)      /* stop reading the file while this much waits */
#define SESSION_TIMEOUT_SECONDS 600

static void kick(struct pickup *pk);
static void job_finish(struct job *j);

/* ------------------------------------------------------------------ */
/* the work list                                                       */

static void enqueue_name(struct pickup *pk, const char *name)
{
    if (!maildrop_name_valid(name))
        return;
    if (pk->count == PENDING_MAX) {
        pk->rescan = 1;   /* the scan after the backlog will find it */
        return;
    }
    memcpy(pk->pending[(pk->head + pk->count) % PENDING_MAX], name, QUEUE_ID_MAX);
    pk->count++;
    kick(pk);
}

static void scan(struct pickup *pk)
{
    int fd = dup(pk->dirfd);
    DIR *dir = fd >= 0 ? fdopendir(fd) : NULL;
    if (dir == NULL) {
        msg_warn("cannot read the maildrop directory: %s", strerror(errno));
        if (fd >= 0)
            close(fd);
        return;
    }
    rewinddir(dir);
    struct dirent *de;
    pk->rescan = 0;
    while ((de = readdir(dir)) != NULL && pk->count < PENDING_MAX)
        if (de->d_name[0] != '.')
            enqueue_name(pk, de->d_name);
    if (de != NULL)
        pk->rescan = 1;
    closedir(dir);
}

static void on_scan(evutil_socket_t fd, short what, void *arg)
{
    struct pickup *pk = arg;
    if (!pk->stopping)
        scan(pk);
    evtimer_add(pk->scan_timer, &pk->scan_interval);
}

static void on_inotify(evutil_socket_t fd, short what, void *arg)
{
    struct pickup *pk = arg;
    char buf[16384] __attribute__((aligned(__alignof__(struct inotify_event))));
    for (;;) {
        ssize_t n = read(fd, buf, sizeof(buf));
        if (n <= 0)
            break;
        for (char *p = buf; p < buf + n;) {
            struct inotify_event *ev = (struct inotify_event *)p;
            if (ev->mask & IN_Q_OVERFLOW)
                pk->rescan = 1;
            else if (ev->len)
                enqueue_name(pk, ev->name);
            p += sizeof(*ev) + ev->len;
        }
    }
    if (pk->rescan && pk->count == 0)
        scan(pk);
}

/* ------------------------------------------------------------------ */
/* the session                                                         */

static void send_line(struct job *j, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void send_line(struct job *j, const char *fmt, ...)
{
    struct evbuffer *out = bufferevent_get_output(j->bev);
    va_list ap;
    va_start(ap, fmt);
    evbuffer_add_vprintf(out, fmt, ap);
    va_end(ap);
    evbuffer_add(out, "\r\n", 2);
}

/* Dot-stuffing, and CRLF for a bare LF, of file content on its way out. */
static int stream_content(void *ctx, const void *data, size_t n)
{
    struct job *j = ctx;
    struct evbuffer *out = bufferevent_get_output(j->bev);
    const char *p = data, *run = data;
    for (size_t i = 0; i < n; i++) {
        char c = p[i];
        if (j->at_line_start && c == '.') {
            evbuffer_add(out, run, (size_t)(p + i - run));
            evbuffer_add(out, ".", 1);
            run = p + i;
        }
        if (c == '\n' && !j->prev_cr) {
            evbuffer_add(out, run, (size_t)(p + i - run));
            evbuffer_add(out, "\r", 1);
            run = p + i;
        }
        j->at_line_start = c == '\n';
        j->prev_cr = c == '\r';
    }
    evbuffer_add(out, run, (size_t)(p + n - run));
    return 0;
}

static int stream_end(void *ctx, unsigned long long length)
{
    struct job *j = ctx;
    j->content_done = 1;
    return 0;
}

/* Sends more content while the output is short; the end marker at the end. */
static void stream_more(struct job *j)
{
    static const struct maildrop_handler handler = { NULL, NULL, NULL, NULL, stream_content, stream_end };
    struct evbuffer *out = bufferevent_get_output(j->bev);
    char *block = xmalloc(READ_BLOCK);
    while (!j->content_done && evbuffer_get_length(out) < OUTPUT_HIGH) {
        ssize_t n = read(j->fd, block, READ_BLOCK);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0 || maildrop_parse(&j->parser, block, (size_t)n, &handler, j) != 0) {
            /* Read fine a moment ago: an I/O error. Abandon the session
             * (smtpd drops the half-received message) and retry later. */
            msg_warn("%s: uid=%ld: cannot read the maildrop file again: %s; will retry", j->name, j->uid,
                     n < 0 ? strerror(errno) : j->parser.error[0] ? j->parser.error : "unexpected end");
            free(block);
            j->retry = 1;
            job_finish(j);
            return;
        }
    }
    free(block);
    if (j->content_done) {
        if (!j->at_line_start)
            evbuffer_add(out, "\r\n", 2);
        evbuffer_add(out, ".\r\n", 3);
        j->step = P_DOT;
        bufferevent_setwatermark(j->bev, EV_WRITE, 0, 0);
    }
}

static void start_content(struct job *j)
{
    if (lseek(j->fd, 0, SEEK_SET) != 0) {
        msg_warn("%s: lseek: %s; will retry", j->name, strerror(errno));
        j->retry = 1;
        job_finish(j);
        return;
    }
    maildrop_parser_init(&j->parser, MAILDROP_FILE, 0);
    j->content_done = 0;
    j->at_line_start = 1;
    j->prev_cr = 0;
    j->step = P_CONTENT;
    bufferevent_setwatermark(j->bev, EV_WRITE, OUTPUT_HIGH / 4, 0);
    stream_more(j);
}

static void send_mail(struct job *j)
{
    j->step = P_MAIL;
    send_line(j, "MAIL FROM:<%s>%s%s", j->sender, j->utf8 ? " SMTPUTF8" : "", j->eight_bit ? " BODY=8BITMIME" : "");
}

static void send_next_rcpt(struct job *j)
{
    j->step = P_RCPT;
    send_line(j, "RCPT TO:<%s>", j->rcpt[j->next]);
}

/* "5.1.1" from "550 5.1.1 text", else the class's generic code. */
static const char *status_of(petrel_pool *pool, const char *reply, int code)
{
    const char *p = reply + 3;
    while (*p == ' ' || *p == '-')
        p++;
    if ((p[0] == '4' || p[0] == '5') && p[1] == '.') {
        size_t n = strspn(p, "0123456789.");
        if (n >= 5 && n <= 11)
            return petrel_pool_strndup(pool, p, n);
    }
    return code >= 500 ? "5.0.0" : "4.0.0";
}

static void refuse(struct job *j, size_t i, const char *reply)
{
    if (j->outcome[i] == RCPT_ACCEPTED)
        j->naccepted--;
    j->outcome[i] = RCPT_REFUSED;
    j->why[i] = petrel_pool_strdup(j->pool, reply);
    j->nrefused++;
}

/* Every recipient not refused yet is refused with this reply. */
static void refuse_all(struct job *j)
{
    for (size_t i = 0; i < j->nrcpt; i++)
        if (j->outcome[i] != RCPT_REFUSED)
            refuse(j, i, j->reply);
}

/* A temporary failure: retry later, unless the file is too old for that. */
static int temporary(struct job *j)
{
    return j->code >= 400 && j->code < 500 && !j->expired;
}

static void begin_notice(struct job *j)
{
    if (*j->sender == '\0') {
        msg_warn("%s: uid=%ld: undeliverable mail from <> (%zu recipient%s refused): no notice is possible",
                 j->name, j->uid, j->nrefused, j->nrefused == 1 ? "" : "s");
        j->step = P_QUIT;
        send_line(j, "QUIT");
        return;
    }
    j->step = P_RSET;
    send_line(j, "RSET");
}

static void add_text(struct evbuffer *out, const char *text)
{
    /* Our own lines: dot-stuffed all the same. */
    for (const char *line = text; *line;) {
        const char *end = strstr(line, "\r\n");
        size_t n = end ? (size_t)(end - line) + 2 : strlen(line);
        if (*line == '.')
            evbuffer_add(out, ".", 1);
        evbuffer_add(out, line, n);
        line += n;
    }
}

/* The non-delivery notice, in Postfix's words (bounce(5) defaults). */
static void send_notice(struct job *j)
{
    struct evbuffer *out = bufferevent_get_output(j->bev);
    const char *host = j->pk->myhostname;
    char date[96], arrival[96];
    time_t now = time(NULL), arrived = (time_t)j->arrival;
    struct tm tm;
    localtime_r(&now, &tm);
    strftime(date, sizeof(date), "%a, %d %b %Y %H:%M:%S %z (%Z)", &tm);
    localtime_r(&arrived, &tm);
    strftime(arrival, sizeof(arrival), "%a, %d %b %Y %H:%M:%S %z (%Z)", &tm);
    struct buf b = BUF_INIT;
    char boundary[128];
    snprintf(boundary, sizeof(boundary), "%s.%ld/%s", j->name, (long)now, host);
    buf_printf(&b, "From: MAILER-DAEMON@%s (Mail Delivery System)\r\n", host);
    buf_printf(&b, "Subject: Undelivered Mail Returned to Sender\r\n");
    buf_printf(&b, "To: %s\r\n", j->sender);
    buf_printf(&b, "Date: %s\r\n", date);
    buf_printf(&b, "Message-ID: <%s.%ld.notice@%s>\r\n", j->name, (long)now, host);
    buf_printf(&b, "Auto-Submitted: auto-replied\r\nMIME-Version: 1.0\r\n");
    buf_printf(&b, "Content-Type: multipart/report; report-type=delivery-status;\r\n\tboundary=\"%s\"\r\n", boundary);
    buf_printf(&b, "Content-Transfer-Encoding: 8bit\r\n\r\nThis is a MIME-encapsulated message.\r\n\r\n");
    buf_printf(&b, "--%s\r\nContent-Description: Notification\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n",
               boundary);
    buf_printf(&b, "This is the mail system at host %s.\r\n\r\n"
                   "I'm sorry to have to inform you that your message could not\r\n"
                   "be delivered to one or more recipients. It's attached below.\r\n\r\n"
                   "For further assistance, please send mail to postmaster.\r\n\r\n"
                   "If you do so, please include this problem report. You can\r\n"
                   "delete your own text from the attached returned message.\r\n\r\n"
                   "                   The mail system\r\n\r\n", host);
    for (size_t i = 0; i < j->nrcpt; i++)
        if (j->outcome[i] == RCPT_REFUSED)
            buf_printf(&b, "<%s>: %s\r\n", j->rcpt[i], j->why[i]);
    buf_printf(&b, "\r\n--%s\r\nContent-Description: Delivery report\r\nContent-Type: message/delivery-status\r\n\r\n",
               boundary);
    buf_printf(&b, "Reporting-MTA: dns; %s\r\nX-Petrel-Maildrop-ID: %s\r\nX-Postfix-Sender: rfc822; %s\r\n"
                   "Arrival-Date: %s\r\n", host, j->name, j->sender, arrival);
    for (size_t i = 0; i < j->nrcpt; i++) {
        if (j->outcome[i] != RCPT_REFUSED)
            continue;
        int code = atoi(j->why[i]);
        buf_printf(&b, "\r\nFinal-Recipient: rfc822; %s\r\nAction: failed\r\nStatus: %s\r\n"
                       "Diagnostic-Code: smtp; %s\r\n", j->rcpt[i], status_of(j->pool, j->why[i], code), j->why[i]);
    }
    buf_printf(&b, "\r\n--%s\r\nContent-Description: Undelivered Message Headers\r\n"
                   "Content-Type: text/rfc822-headers\r\n\r\n", boundary);
    add_text(out, b.data);
    buf_free(&b);
    if (j->headers.len)
        add_text(out, j->headers.data);
    if (j->headers.len && (j->headers.len < 2 || strcmp(j->headers.data + j->headers.len - 2, "\r\n") != 0))
        evbuffer_add(out, "\r\n", 2);
    evbuffer_add_printf(out, "\r\n--%s--\r\n.\r\n", boundary);
    j->step = P_BOUNCE_DOT;
}

/* After the message (or its refusal): a notice when recipients were
 * refused, else done. */
static void after_message(struct job *j)
{
    if (j->nrefused)
        begin_notice(j);
    else {
        j->step = P_QUIT;
        send_line(j, "QUIT");
    }
}

/* One complete reply for the current step. */
static void on_reply(struct job *j)
{
    int code = j->code;
    switch (j->step) {
    case P_GREETING:
        if (code != 220)
            goto retry;
        j->step = P_EHLO;
        send_line(j, "EHLO localhost");
        return;
    case P_EHLO:
        if (code != 250)
            goto retry;
        send_mail(j);
        return;
    case P_MAIL:
        if (code == 250) {
            j->next = 0;
            send_next_rcpt(j);
            return;
        }
        if (temporary(j))
            goto retry;
        refuse_all(j);
        begin_notice(j);
        return;
    case P_RCPT:
        if (code == 250) {
            j->outcome[j->next] = RCPT_ACCEPTED;
            j->naccepted++;
        } else if (temporary(j)) {
            goto retry;   /* nothing is queued yet: the whole file waits */
        } else {
            refuse(j, j->next, j->reply);
        }
        if (++j->next < j->nrcpt) {
            send_next_rcpt(j);
            return;
        }
        if (j->naccepted == 0) {
            begin_notice(j);
            return;
        }
        /* With recipients refused, the notice is the last queue file. */
        j->origin.last = j->nrefused == 0;
        j->step = P_DATA;
        send_line(j, "DATA");
        return;
    case P_DATA:
        if (code == 354) {
            start_content(j);
            return;
        }
        if (temporary(j))
            goto retry;
        refuse_all(j);
        begin_notice(j);
        return;
    case P_CONTENT:
        break;   /* a reply before the end of DATA: smtpd never sends one */
    case P_DOT:
        if (code == 250) {
            const char *id = strstr(j->reply, "queued as ");
            snprintf(j->queue_id, sizeof(j->queue_id), "%s", id ? id + 10 : "?");
            after_message(j);
            return;
        }
        if (temporary(j))
            goto retry;
        refuse_all(j);
        begin_notice(j);
        return;
    case P_RSET:
        if (code != 250)
            goto notice_failed;
        j->step = P_BOUNCE_MAIL;
        send_line(j, "MAIL FROM:<>%s", j->utf8 ? " SMTPUTF8" : "");
        return;
    case P_BOUNCE_MAIL:
        if (code != 250)
            goto notice_failed;
        j->step = P_BOUNCE_RCPT;
        send_line(j, "RCPT TO:<%s>", j->sender);
        return;
    case P_BOUNCE_RCPT:
        if (code != 250)
            goto notice_failed;
        j->step = P_BOUNCE_DATA;
        j->origin.last = 1;
        send_line(j, "DATA");
        return;
    case P_BOUNCE_DATA:
        if (code != 354)
            goto notice_failed;
        send_notice(j);
        return;
    case P_BOUNCE_DOT:
        if (code != 250)
            goto notice_failed;
        {
            const char *id = strstr(j->reply, "queued as ");
            msg_info("%s: uid=%ld: sender non-delivery notification: %s", j->queue_id[0] ? j->queue_id : j->name,
                     j->uid, id ? id + 10 : "?");
        }
        j->step = P_QUIT;
        send_line(j, "QUIT");
        return;
    case P_QUIT:
        job_finish(j);
        return;
    }
    msg_warn("%s: unexpected reply in the pickup session: %s", j->name, j->reply);
retry:
    msg_info("%s: uid=%ld: from=<%s>: %s; will retry", j->name, j->uid, j->sender, j->reply);
    j->retry = 1;
    job_finish(j);
    return;
notice_failed:
    if (j->queue_id[0] == '\0' && j->code >= 400 && j->code < 500) {
        /* Nothing was queued: the whole file can wait for another try. */
        msg_info("%s: uid=%ld: cannot queue the non-delivery notice (%s); will retry", j->name, j->uid, j->reply);
        j->retry = 1;
        job_finish(j);
        return;
    }
    msg_warn("%s: uid=%ld: from=<%s>: the non-delivery notice for %zu refused recipient%s was refused: %s",
             j->name, j->uid, j->sender, j->nrefused, j->nrefused == 1 ? "" : "s", j->reply);
    j->step = P_QUIT;
    send_line(j, "QUIT");
}

static void on_read(struct bufferevent *bev, void *arg)
{
    struct job *j = arg;
    struct pickup *pk = j->pk;
    struct evbuffer *in = bufferevent_get_input(bev);
    for (;;) {
        size_t n = 0;
        char *line = evbuffer_readln(in, &n, EVBUFFER_EOL_CRLF);
        if (line == NULL) {
            if (evbuffer_get_length(in) > 8192) {
                snprintf(j->reply, sizeof(j->reply), "overlong reply line");
                j->retry = 1;
                job_finish(j);
            }
            return;
        }
        int cont = n >= 4 && line[3] == '-';
        if (!cont) {
            snprintf(j->reply, sizeof(j->reply), "%.*s", REPLY_TEXT_MAX, line);
            j->code = n >= 3 ? atoi(line) : 0;
        }
        free(line);
        if (cont)
            continue;
        on_reply(j);
        if (pk->job != j)
            return;   /* finished (and freed): only the pointer is compared */
    }
}

static void on_write(struct bufferevent *bev, void *arg)
{
    struct job *j = arg;
    if (j->step == P_CONTENT)
        stream_more(j);
}

static void on_event(struct bufferevent *bev, short what, void *arg)
{
    struct job *j = arg;
    if (j->step == P_QUIT && (what & BEV_EVENT_EOF)) {
        job_finish(j);
        return;
    }
    msg_warn("%s: uid=%ld: the pickup session ended unexpectedly%s; will retry", j->name, j->uid,
             (what & BEV_EVENT_TIMEOUT) ? " (timeout)" : "");
    j->retry = 1;
    job_finish(j);
}

static void job_finish(struct job *j)
{
    struct pickup *pk = j->pk;
    if (j->bev)
        bufferevent_free(j->bev);   /* closes our end; smtpd drops anything half done */
    j->bev = NULL;
    pk->listener.maildrop_origin = NULL;
    if (!j->retry) {
        /* The queue file (and any notice) is durable: the maildrop copy goes. */
        if (unlinkat(pk->dirfd, j->name, 0) != 0 && errno != ENOENT)
            msg_warn("%s: cannot remove the maildrop file: %s", j->name, strerror(errno));
    }
    close(j->fd);   /* releases the lock */
    buf_free(&j->headers);
    pk->job = NULL;
    petrel_pool_destroy(j->pool);
    kick(pk);
}

static void submit(struct pickup *pk, struct job *j)
{
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv) != 0) {
        msg_warn("socketpair: %s", strerror(errno));
        close(j->fd);
        buf_free(&j->headers);
        petrel_pool_destroy(j->pool);
        return;
    }
    pk->job = j;
    pk->listener.maildrop_origin = &j->origin;
    j->bev = bufferevent_socket_new(pk->w->base, sv[0], BEV_OPT_CLOSE_ON_FREE);
    struct timeval tv = { SESSION_TIMEOUT_SECONDS, 0 };
    bufferevent_set_timeouts(j->bev, &tv, &tv);
    bufferevent_setcb(j->bev, on_read, on_write, on_event, j);
    bufferevent_enable(j->bev, EV_READ | EV_WRITE);
    j->step = P_GREETING;
    if (j->expired)
        msg_warn("%s: uid=%ld: maildrop file older than maximal_queue_lifetime: temporary errors are final now",
                 j->name, j->uid);
    smtpd_accept_local(&pk->listener, sv[1], j->uid);
}

/* ------------------------------------------------------------------ */
/* files queued by a pickup role that died before removing them        */

struct release_scan {
    struct pickup *pk;
    petrel_pool *pool;
};

static void release_one(void *ctx, const char *id)
{
    struct release_scan *rs = ctx;
    struct queue *queue = rs->pk->w->queue;
    int fd = openat(queue_dir_fd(queue, QDIR_INCOMING), id, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK);
    if (fd < 0)
        return;   /* gone: the queue manager took it, and removed its maildrop file first */
    struct queue_message msg;
    /* A file still being written is not committed; only pickup roles write
     * origins, and no other one runs (its locks died with it). */
    if (queue_file_writer_active(fd) != 1 && queue_message_read_fd(fd, id, rs->pool, &msg, NULL) == 0
        && msg.env.origin) {
        int r = queue_origin_release(queue, &msg.env, 1);
        if (r == 1)
            msg_info("%s: removed maildrop file %s: its message was already queued", id, msg.env.origin->name);
        else if (r < 0)
            msg_warn("%s: cannot remove maildrop file %s, whose message is queued: %s", id, msg.env.origin->name,
                     strerror(errno));
    }
    close(fd);
    petrel_pool_reset(rs->pool);
}

/* Before the first look at maildrop/: a queue file in incoming/ that names
 * a maildrop file means that file was queued already (the queue manager
 * removes it before it moves the queue file on; doc/queue-format.md). */
static void release_committed(struct pickup *pk)
{
    struct release_scan rs = { pk, petrel_pool_create(4096) };
    if (queue_scan(pk->w->queue, QDIR_INCOMING, release_one, &rs) != 0)
        msg_warn("cannot scan incoming/: %s", strerror(errno));
    petrel_pool_destroy(rs.pool);
}

/* ------------------------------------------------------------------ */
/* the loop                                                            */

static void on_next(evutil_socket_t fd, short what, void *arg)
{
    struct pickup *pk = arg;
    while (pk->job == NULL && pk->count > 0 && !pk->stopping) {
        char name[QUEUE_ID_MAX];
        memcpy(name, pk->pending[pk->head], QUEUE_ID_MAX);
        pk->head = (pk->head + 1) % PENDING_MAX;
        pk->count--;
        struct job *j = smtpd_pickup_claim(pk, name);
        if (j)
            submit(pk, j);
    }
    if (pk->job == NULL && pk->count == 0 && pk->rescan && !pk->stopping)
        scan(pk);
    if (pk->stopping && pk->job == NULL)
        event_base_loopexit(pk->w->base, NULL);
}

static void kick(struct pickup *pk)
{
    if (!evtimer_pending(pk->next_ev, NULL)) {
        struct timeval now = { 0, 0 };
        evtimer_add(pk->next_ev, &now);
    }
}

static void stop_deadline(evutil_socket_t fd, short what, void *arg)
{
    struct pickup *pk = arg;
    msg_warn("stop deadline: abandoning the submission in progress (its maildrop file stays)");
    event_base_loopbreak(pk->w->base);
}

static void on_stop(evutil_socket_t sig, short what, void *arg)
{
    struct pickup *pk = arg;
    if (pk->stopping)
        return;
    /* The file in progress finishes (its commit is seconds at most); the
     * rest waits in the maildrop for the next pickup. */
    pk->stopping = 1;
    struct timeval tv = { pk->stop_grace_seconds, 0 };
    pk->stop_timer = evtimer_new(pk->w->base, stop_deadline, pk);
    evtimer_add(pk->stop_timer, &tv);
    kick(pk);
}

static void on_hup(evutil_socket_t sig, short what, void *arg)
{
    /* Reload is the master's business: it replaces this process. */
}

static const struct cfg_bind pickup_binds[] = {
    CFG_BIND("maximal_queue_lifetime", LONG, struct pickup, max_lifetime),
};
const struct cfg_bind_table smtpd_pickup_bind_table = CFG_BIND_TABLE("pickup", pickup_binds);

int smtpd_pickup_main(const struct smtpd_pickup_args *args)
{
    struct smtpd_worker w;
    struct pickup pk;
    log_set_role("pickup");
    smtpd_worker_init(&w, args->cfg, args->queue, args->modules, NULL, 0, args->metrics, args->process_index);
    memset(&pk, 0, sizeof(pk));
    pk.w = &w;
    pk.dirfd = args->maildrop_fd;
    pk.stop_grace_seconds = args->stop_grace_seconds > 0 ? args->stop_grace_seconds : 1;
    pk.corrupt_fd = queue_dir_fd(args->queue, QDIR_CORRUPT);
    cfg_bind_apply(args->cfg, &smtpd_pickup_bind_table, &pk);
    char *error = NULL;
    pk.listener.worker = &w;
    pk.listener.fd = -1;
    pk.listener.settings = smtpd_settings_create(&w, args->service, args->service->cfg, NULL, &error);
    if (pk.listener.settings == NULL)
        msg_fatal("%s", error);   /* located: main.cf or master.cf line */
    pk.listener.stress_settings = pk.listener.settings;   /* never in stress: not a network service */
    pk.listener.service_key = "service:pickup";
    pk.myhostname = pk.listener.settings->myhostname;
    pk.pending = xcalloc(PENDING_MAX, sizeof(*pk.pending));
    pk.scan_interval.tv_sec = args->service->wakeup > 0 ? args->service->wakeup : 60;

    pk.inotify_fd = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
    if (pk.inotify_fd < 0)
        msg_fatal("inotify_init1: %s", strerror(errno));
    char path[64];
    snprintf(path, sizeof(path), "/proc/self/fd/%d", pk.dirfd);
    if (inotify_add_watch(pk.inotify_fd, path, IN_CLOSE_WRITE | IN_MOVED_TO) < 0)
        msg_fatal("inotify_add_watch maildrop: %s", strerror(errno));
    pk.inotify_ev = event_new(w.base, pk.inotify_fd, EV_READ | EV_PERSIST, on_inotify, &pk);
    event_add(pk.inotify_ev, NULL);
    pk.next_ev = evtimer_new(w.base, on_next, &pk);
    pk.scan_timer = evtimer_new(w.base, on_scan, &pk);
    evtimer_add(pk.scan_timer, &pk.scan_interval);
    pk.sig_term = evsignal_new(w.base, SIGTERM, on_stop, &pk);
    pk.sig_drain = evsignal_new(w.base, SIGUSR1, on_stop, &pk);
    pk.sig_hup = evsignal_new(w.base, SIGHUP, on_hup, &pk);
    event_add(pk.sig_term, NULL);
    event_add(pk.sig_drain, NULL);
    event_add(pk.sig_hup, NULL);

    /* A pickup role before this one may have died between queueing a file
     * and removing it; then, and only then, whatever waits in maildrop/. */
    release_committed(&pk);
    scan(&pk);
    event_base_dispatch(w.base);

    smtpd_worker_fini(&w);
    return 0;
}
