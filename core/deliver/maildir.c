/*
 * Maildir delivery (Postfix virtual(8)/local(8) with a mailbox path ending
 * in "/"), plus the content reader the three local agents share.
 *
 * Design:
 *  - The message goes to MAILDIR/tmp/NAME (O_EXCL), is fsynced, then
 *    link(2)ed to MAILDIR/new/NAME,S=SIZE and tmp/NAME unlinked, as the
 *    Maildir specification says; rename(2) only where the file system has
 *    no hard links. new/ is fsynced too: the queue manager removes the
 *    queue file once we say "sent", so the name must be durable by then.
 *    For the same reason a Maildir we create is made durable first: its
 *    parent is fsynced after the mkdir, the Maildir after tmp/new/cur.
 *  - NAME is "SECONDS.M<usec>P<pid>R<64 random bits>.HOST". The spec's
 *    Q<counter> would need a process-wide counter (global mutable state,
 *    and per-process only anyway); 64 random bits from getrandom(2) are as
 *    unique, need no state and are safe from any thread or forked child.
 *    O_EXCL and link's EEXIST still catch the impossible collision.
 *  - Errors follow Postfix's virtual(8) maildir code: failing to create
 *    the directories or the file is a deferral (4.2.0) whatever the errno
 *    (missing parent, EACCES, ENOTDIR, ELOOP: an admin fixes those and the
 *    mail goes through on the next attempt), refined by mbox_dsn(): ENOSPC
 *    4.3.0, EDQUOT/EFBIG 5.2.2 (mailbox full: Postfix bounces it). Write
 *    errors other than those defer with 4.3.0, where Postfix would bounce
 *    with 5.3.0: an EIO is more often a passing disk problem than a
 *    property of the message, and a deferral loses nothing.
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdint.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>
#ifdef HAVE_GETRANDOM
#include <sys/random.h>
#endif

#include "deliver/local.h"
#include "lib/fsutil.h"

#define RELAY "local"

/* ---- shared helpers ---- */

void local_content_init(struct local_content *c, const struct dlv_job *job, int to_lf, int quote_from)
{
    memset(c, 0, sizeof(*c));
    c->fd = job->fd;
    c->msg = job->msg;
    c->next_off = 0;
    c->remaining = job->msg->content_length;
    c->to_lf = to_lf;
    c->quote_from = quote_from;
    c->at_bol = 1;
}

static const char from_word[] = "From ";

/* The line stage: mboxrd quoting. At a line start, '>'s and a prefix of
 * "From " are held as counters; a full match flushes them behind one more
 * '>', a mismatch flushes them as they were. A byte to emit goes to *pend,
 * which the caller emits after any flush. */
static void feed(struct local_content *c, int b, int *pend)
{
    if (c->quote_from && c->at_bol) {
        if (c->from_matched == 0 && b == '>') {
            c->gt_run++;
            return;
        }
        if (b == from_word[c->from_matched]) {
            if (++c->from_matched == sizeof(from_word) - 1) {
                c->flush_quote = 1;
                c->flush_gt = c->gt_run;
                c->flush_from = c->from_matched;
                c->flush_from_pos = 0;
                c->gt_run = 0;
                c->from_matched = 0;
                c->at_bol = 0;
            }
            return;
        }
        /* Mismatch: what was held goes out unquoted, then b. */
        c->flush_gt = c->gt_run;
        c->flush_from = c->from_matched;
        c->flush_from_pos = 0;
        c->gt_run = 0;
        c->from_matched = 0;
        c->at_bol = 0;
    }
    *pend = b;
}

ssize_t local_content_read(struct local_content *c, char *out, size_t size)
{
    size_t n = 0;
    int pend = -1;   /* one byte that must follow the current flush */
    /* Each turn emits at most one byte or consumes input, so out never
     * overflows and a '>' run of any length needs no buffer. */
    while (n < size) {
        int b = -1;
        if (c->flush_quote) {
            c->flush_quote = 0;
            b = '>';
        } else if (c->flush_gt) {
            c->flush_gt--;
            b = '>';
        } else if (c->flush_from) {
            b = from_word[c->flush_from_pos++];
            if (c->flush_from_pos == c->flush_from)
                c->flush_from = 0;
        } else if (pend >= 0) {
            b = pend;
            pend = -1;
        }
        if (b >= 0) {
            out[n++] = (char)b;
            c->last_nl = b == '\n';
            c->produced_any = 1;
            if (b == '\n')
                c->at_bol = 1;
            continue;
        }
        if (c->in_pos == c->in_len) {
            if (c->remaining == 0) {
                if (c->held_cr) {
                    c->held_cr = 0;
                    feed(c, '\r', &pend);
                    continue;
                }
                if (c->gt_run || c->from_matched) {
                    c->flush_gt = c->gt_run;
                    c->flush_from = c->from_matched;
                    c->flush_from_pos = 0;
                    c->gt_run = 0;
                    c->from_matched = 0;
                    c->at_bol = 0;
                    continue;
                }
                if (c->ensure_final_nl && c->produced_any && !c->last_nl) {
                    pend = '\n';
                    continue;
                }
                c->done = 1;
                break;
            }
            size_t want = c->remaining < sizeof(c->in) ? (size_t)c->remaining : sizeof(c->in);
            ssize_t r = queue_content_pread(c->fd, c->msg, c->next_off, c->in, want);
            if (r <= 0) {
                if (r == 0)
                    errno = EIO;   /* the file is shorter than its envelope says */
                return -1;
            }
            c->in_pos = 0;
            c->in_len = (size_t)r;
            c->next_off += (unsigned long long)r;
            c->remaining -= (unsigned long long)r;
        }
        int ch = c->in[c->in_pos++];
        if (c->held_cr) {
            c->held_cr = 0;
            if (ch == '\n') {
                feed(c, '\n', &pend);
            } else {
                c->in_pos--;          /* a bare CR stays; look at ch again */
                feed(c, '\r', &pend);
            }
            continue;
        }
        if (c->to_lf && ch == '\r') {
            c->held_cr = 1;
            continue;
        }
        feed(c, ch, &pend);
    }
    return (ssize_t)n;
}

int local_write_limited(int fd, const void *data, size_t n, unsigned long long *size, unsigned long long limit)
{
    /* Postfix sets RLIMIT_FSIZE: the write that would pass the limit fails
     * with EFBIG (mailbox full, 5.2.2). Here the limit is checked per file,
     * as local and virtual deliveries share one process. */
    if (limit && *size + n > limit) {
        errno = EFBIG;
        return -1;
    }
    if (local_write_all(fd, data, n) < 0)
        return -1;
    *size += n;
    return 0;
}

int local_write_all(int fd, const void *data, size_t n)
{
    const char *p = data;
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

char *local_header_safe(char *out, size_t size, const char *s)
{
    size_t j = 0;
    for (; s && *s && j + 1 < size; s++)
        out[j++] = ((unsigned char)*s < 0x20 || *s == 0x7f) ? '?' : *s;
    out[j] = '\0';
    return out;
}

const char *local_errno_dsn(int err, const char *def)
{
    if (err == EAGAIN || err == ESTALE)
        return "4.2.0";
    if (err == ENOSPC)
        return "4.3.0";
#ifdef EDQUOT
    if (err == EDQUOT)
        return "5.2.2";
#endif
    if (err == EFBIG)
        return "5.2.2";
    return def;
}

void local_result_dsn(struct dlv_result *out, const char *dsn, const char *relay, const char *what, int err)
{
    enum dlv_status st = dsn[0] == '5' ? DLV_BOUNCED : DLV_DEFERRED;
    if (err == 0) {
        dlv_result_set(out, st, dsn, relay, "%s", what);
        return;
    }
    errno = err;   /* %m: strerror without strerror's shared buffer */
    dlv_result_set(out, st, dsn, relay, "%s: %m", what);
}

int local_check_job(const struct dlv_job *job, size_t i, struct dlv_result *out, const char *relay)
{
    if (job == NULL || job->msg == NULL || job->rcpt_addr == NULL || i >= job->nrcpt
        || job->rcpt_addr[i] == NULL || job->sender == NULL) {
        if (out)
            dlv_result_set(out, DLV_DEFERRED, "4.3.5", relay, "delivery agent called without a recipient");
        return -1;
    }
    return 0;
}

/* ---- Maildir ---- */

static unsigned long long random64(void)
{
    unsigned long long v = 0;
#ifdef HAVE_GETRANDOM
    if (getrandom(&v, sizeof(v), GRND_NONBLOCK) == (ssize_t)sizeof(v))
        return v;
#endif
    /* No entropy yet (early boot): time, pid and a stack address differ
     * between any two concurrent callers; O_EXCL catches the rest. */
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    v = (unsigned long long)ts.tv_nsec * 0x9E3779B97F4A7C15ull ^ (unsigned long long)getpid() << 32
        ^ (unsigned long long)(uintptr_t)&v;
    return v;
}

/* The host part of a Maildir name: '/' and ':' encoded as the spec says. */
static void maildir_host(char *out, size_t size)
{
    char host[256];
    if (gethostname(host, sizeof(host)) < 0)
        snprintf(host, sizeof(host), "localhost");
    host[sizeof(host) - 1] = '\0';
    size_t j = 0;
    for (const char *p = host; *p && j + 5 < size; p++) {
        if (*p == '/' || *p == ':') {
            j += (size_t)snprintf(out + j, size - j, "\\%03o", (unsigned char)*p);
        } else {
            out[j++] = *p;
        }
    }
    out[j] = '\0';
}

static void maildir_name(char *out, size_t size, const char *host)
{
    struct timeval tv;
    gettimeofday(&tv, NULL);
    snprintf(out, size, "%lld.M%ldP%ldR%016llx.%s", (long long)tv.tv_sec, (long)tv.tv_usec,
             (long)getpid(), random64(), host);
}

/* Makes sub (relative to dfd) unless it exists; counts what it created. */
static int ensure_dir(int dfd, const char *sub, int *created)
{
    if (mkdirat(dfd, sub, 0700) == 0) {
        (*created)++;
        return 0;
    }
    return errno == EEXIST ? 0 : -1;
}

int maildir_deliver(const char *maildir_path, const struct dlv_job *job, size_t i, struct dlv_result *out)
{
    if (local_check_job(job, i, out, RELAY) < 0 || maildir_path == NULL)
        return -1;

    char what[1024], host[300], name[400], tmpname[420], newname[460];
    /* The path as messages show it: "/x/u/" + "/tmp/..." would read "/x/u//tmp/...". */
    char shown[401];
    snprintf(shown, sizeof(shown), "%s", maildir_path);
    for (size_t n = strlen(shown); n > 1 && shown[n - 1] == '/'; n--)
        shown[n - 1] = '\0';
    int dfd = open(maildir_path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd < 0 && errno == ENOENT) {
        int made = mkdir(maildir_path, 0700) == 0;
        if (!made && errno != EEXIST) {
            int err = errno;
            snprintf(what, sizeof(what), "maildir delivery failed: create maildir %.400s", shown);
            local_result_dsn(out, local_errno_dsn(err, "4.2.0"), RELAY, what, err);
            return 0;
        }
        /* A new mailbox must survive a crash once we report "sent": its
         * name goes to disk in the parent before anything goes inside. */
        if (made && fs_sync_parent(maildir_path) < 0) {
            int err = errno;
            snprintf(what, sizeof(what), "maildir delivery failed: fsync the directory above %.400s", shown);
            local_result_dsn(out, local_errno_dsn(err, "4.3.0"), RELAY, what, err);
            return 0;
        }
        dfd = open(maildir_path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    }
    int created = 0;
    if (dfd < 0 || ensure_dir(dfd, "tmp", &created) < 0 || ensure_dir(dfd, "new", &created) < 0
        || ensure_dir(dfd, "cur", &created) < 0) {
        int err = errno;
        snprintf(what, sizeof(what), "maildir delivery failed: create maildir %.400s", shown);
        local_result_dsn(out, local_errno_dsn(err, "4.2.0"), RELAY, what, err);
        if (dfd >= 0)
            close(dfd);
        return 0;
    }
    if (created && fsync(dfd) < 0) {   /* tmp/, new/ and cur/ themselves */
        int err = errno;
        close(dfd);
        snprintf(what, sizeof(what), "maildir delivery failed: fsync %.400s", shown);
        local_result_dsn(out, local_errno_dsn(err, "4.3.0"), RELAY, what, err);
        return 0;
    }

    maildir_host(host, sizeof(host));
    int fd = -1;
    for (int tries = 0; tries < 5 && fd < 0; tries++) {
        maildir_name(name, sizeof(name), host);
        snprintf(tmpname, sizeof(tmpname), "tmp/%s", name);
        fd = openat(dfd, tmpname, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
        if (fd < 0 && errno != EEXIST)
            break;
    }
    if (fd < 0) {
        int err = errno;
        snprintf(what, sizeof(what), "maildir delivery failed: create maildir file %.400s/%.420s", shown, tmpname);
        local_result_dsn(out, local_errno_dsn(err, "4.2.0"), RELAY, what, err);
        close(dfd);
        return 0;
    }

    /* Headers, then the content, through one 64 KiB buffer. */
    char buf[65536];
    char sender[600], rcpt[600];
    int hl = snprintf(buf, sizeof(buf), "Return-Path: <%s>\nDelivered-To: %s\n",
                      local_header_safe(sender, sizeof(sender), job->sender),
                      local_header_safe(rcpt, sizeof(rcpt), job->rcpt_addr[i]));
    size_t fill = (size_t)hl;
    unsigned long long size = 0;
    struct local_content c;
    local_content_init(&c, job, 1, 0);
    int err = 0, read_err = 0;
    for (;;) {
        ssize_t r = local_content_read(&c, buf + fill, sizeof(buf) - fill);
        if (r < 0) {
            read_err = errno;
            break;
        }
        fill += (size_t)r;
        if (fill == sizeof(buf) || (r == 0 && fill > 0)) {
            if (local_write_limited(fd, buf, fill, &size, job->file_size_limit) < 0) {
                err = errno;
                break;
            }
            fill = 0;
        }
        if (r == 0)
            break;
    }
    double sync_started = dlv_monotonic();
    if (!err && !read_err && fsync(fd) < 0)
        err = errno;
    double synced = dlv_monotonic() - sync_started;
    if (close(fd) < 0 && !err && !read_err)
        err = errno;   /* NFS reports write errors at close */
    if (err || read_err) {
        unlinkat(dfd, tmpname, 0);
        close(dfd);
        if (read_err)
            local_result_dsn(out, "4.3.0", RELAY, "maildir delivery failed: error reading message", read_err);
        else {
            snprintf(what, sizeof(what), "maildir delivery failed: write maildir file %.400s/%.420s", shown, tmpname);
            local_result_dsn(out, local_errno_dsn(err, "4.3.0"), RELAY, what, err);
        }
        return 0;
    }

    /* tmp/ -> new/: link so an existing name is never replaced. */
    int linked = 0;
    for (int tries = 0; tries < 5 && !linked; tries++) {
        if (tries > 0)
            maildir_name(name, sizeof(name), host);
        snprintf(newname, sizeof(newname), "new/%s,S=%llu", name, size);
        if (linkat(dfd, tmpname, dfd, newname, 0) == 0) {
            linked = 1;
            unlinkat(dfd, tmpname, 0);
        } else if (errno == EPERM || errno == EXDEV || errno == ENOSYS || errno == EOPNOTSUPP
                   || errno == EMLINK) {
            /* No hard links here (some FUSE and network file systems). */
            if (renameat(dfd, tmpname, dfd, newname) == 0)
                linked = 1;
            else
                break;
        } else if (errno != EEXIST) {
            break;
        }
    }
    if (!linked) {
        err = errno;
        unlinkat(dfd, tmpname, 0);
        close(dfd);
        snprintf(what, sizeof(what), "maildir delivery failed: link to %.400s/%.460s", shown, newname);
        local_result_dsn(out, local_errno_dsn(err, "4.2.0"), RELAY, what, err);
        return 0;
    }
    int nfd = openat(dfd, "new", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    sync_started = dlv_monotonic();
    int new_err = nfd < 0 ? errno : fsync(nfd) < 0 ? errno : 0;
    synced += dlv_monotonic() - sync_started;
    if (new_err) {
        /* The file is complete but its name may not survive a crash: defer
         * (a repeated delivery beats a lost one) and take the file back. */
        err = new_err;
        if (nfd >= 0)
            close(nfd);
        unlinkat(dfd, newname, 0);
        close(dfd);
        snprintf(what, sizeof(what), "maildir delivery failed: fsync %.400s/new", shown);
        local_result_dsn(out, local_errno_dsn(err, "4.3.0"), RELAY, what, err);
        return 0;
    }
    close(nfd);
    close(dfd);
    dlv_result_set(out, DLV_SENT, "2.0.0", RELAY, "delivered to maildir");
    out->sync_secs = synced;
    return 0;
}
