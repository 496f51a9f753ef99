/*
 * mbox delivery (Postfix local(8) "mailbox" delivery): one message appended
 * to a Berkeley mailbox file.
 *
 * Design:
 *  - Format mboxrd: "From SENDER DATE" separator, Return-Path and
 *    Delivered-To headers, the content with LF line ends and every line
 *    matching /^>*From / given one more '>', then a blank line.
 *  - Locking, as Postfix's mailbox_delivery_lock = fcntl, dotlock: first
 *    PATH.lock (O_EXCL; older than 5 minutes counts as stale and is
 *    removed, Postfix's stale_lock_time), then an fcntl write lock on the
 *    file. Both are retried with short sleeps (no alarm(2): we may be on a
 *    thread) for at most MBOX_LOCK_WAIT seconds, then the delivery defers.
 *    The fcntl lock is an open-file-description lock where Linux has them
 *    (F_OFD_SETLK): classic POSIX locks belong to the process, so two
 *    delivery threads of petreld would not exclude each other; OFD locks
 *    do, and they still conflict with other programs' classic fcntl locks.
 *    A dotlock we may not create (a spool directory the user cannot write)
 *    is skipped rather than fatal: the fcntl lock still serialises writers.
 *  - A failed append is truncated back to the size the file had under the
 *    lock, so a failure never leaves half a message for a MUA to parse.
 *  - The data is fsynced before "sent"; a mailbox file we created also
 *    has its directory fsynced, or a crash could take the new name away.
 *  - Status codes as Postfix: lock trouble and unusable directories defer
 *    (4.2.0); a mailbox that is a symlink, not a regular file or hard
 *    linked bounces (5.2.0: a security property, not a passing state);
 *    write errors map through local_errno_dsn() (ENOSPC 4.3.0, EDQUOT and
 *    EFBIG 5.2.2) and otherwise defer with 4.3.0.
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "deliver/local.h"
#include "lib/fsutil.h"

#define RELAY "local"
#define MBOX_LOCK_WAIT 10          /* seconds for both locks together */
#define MBOX_STALE_LOCK 300        /* seconds; Postfix's stale_lock_time */
#define MBOX_LOCK_SLEEP_MS 50

static double mono_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void sleep_ms(long ms)
{
    struct timespec ts = { ms / 1000, (ms % 1000) * 1000000L };
    while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
        ;
}

/* Takes PATH.lock. Returns 1 when held, 0 when skipped (no permission to
 * create it), -1 with errno on failure (EAGAIN: still locked at the deadline). */
static int dotlock_take(const char *lockpath, double deadline)
{
    for (;;) {
        int fd = open(lockpath, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
        if (fd >= 0) {
            close(fd);
            return 1;
        }
        if (errno == EACCES || errno == EPERM || errno == EROFS)
            return 0;
        if (errno != EEXIST)
            return -1;
        struct stat st;
        if (lstat(lockpath, &st) == 0 && time(NULL) - st.st_mtime > MBOX_STALE_LOCK) {
            /* Stale: its owner died. A racing remover is harmless: the
             * O_EXCL create above decides who gets the lock. */
            unlink(lockpath);
            continue;
        }
        if (mono_now() >= deadline) {
            errno = EAGAIN;
            return -1;
        }
        sleep_ms(MBOX_LOCK_SLEEP_MS);
    }
}

static int fcntl_lock(int fd, double deadline)
{
    struct flock l;
    for (;;) {
        memset(&l, 0, sizeof(l));
        l.l_type = F_WRLCK;
        l.l_whence = SEEK_SET;
#ifdef F_OFD_SETLK
        int r = fcntl(fd, F_OFD_SETLK, &l);
        if (r < 0 && errno == EINVAL)
            r = fcntl(fd, F_SETLK, &l);   /* kernel without OFD locks */
#else
        int r = fcntl(fd, F_SETLK, &l);
#endif
        if (r == 0)
            return 0;
        if (errno != EAGAIN && errno != EACCES && errno != EINTR)
            return -1;
        if (mono_now() >= deadline) {
            errno = EAGAIN;
            return -1;
        }
        sleep_ms(MBOX_LOCK_SLEEP_MS);
    }
}

/* "Mon Jan  2 15:04:05 2006", in local time, as ctime(3) without its
 * locale or static buffer. */
static void from_date(char *out, size_t size, time_t t)
{
    static const char days[7][4] = { "Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat" };
    static const char months[12][4] = { "Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                        "Jul", "Aug", "Sep", "Oct", "Nov", "Dec" };
    struct tm tm;
    localtime_r(&t, &tm);
    snprintf(out, size, "%s %s %2d %02d:%02d:%02d %d", days[tm.tm_wday % 7], months[tm.tm_mon % 12],
             tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, tm.tm_year + 1900);
}

/* Opens the mailbox for appending, creating it when missing. Refuses
 * symlinks (O_NOFOLLOW), non-regular files and hard-linked files. On
 * failure returns -1 and sets *dsn and *why. */
static int mbox_open(const char *path, const char **dsn, const char **why, int *err, int *created)
{
    int fd = -1;
    *created = 0;
    for (int tries = 0; tries < 2 && fd < 0; tries++) {
        fd = open(path, O_WRONLY | O_APPEND | O_NOFOLLOW | O_NOCTTY | O_CLOEXEC | O_NONBLOCK);
        if (fd < 0 && errno == ENOENT) {
            fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_EXCL | O_NOFOLLOW | O_NOCTTY | O_CLOEXEC, 0600);
            *created = fd >= 0;
        }
        if (fd < 0 && errno != EEXIST)
            break;   /* EEXIST: created by someone else meanwhile; open it */
    }
    if (fd < 0) {
        *err = errno;
        if (errno == ELOOP) {
            *dsn = "5.2.0";
            *why = "mailbox is a symbolic link";
            *err = 0;
        } else if (errno == EISDIR) {
            *dsn = "5.2.0";
            *why = "mailbox is not a regular file";
            *err = 0;
        } else {
            *dsn = local_errno_dsn(errno, "4.2.0");
            *why = "cannot open mailbox";
        }
        return -1;
    }
    struct stat st;
    if (fstat(fd, &st) < 0) {
        *err = errno;
        *dsn = "4.2.0";
        *why = "cannot stat mailbox";
    } else if (!S_ISREG(st.st_mode)) {
        *err = 0;
        *dsn = "5.2.0";
        *why = "mailbox is not a regular file";
    } else if (st.st_nlink != 1) {
        *err = 0;
        *dsn = "5.2.0";
        *why = "mailbox has too many hard links";
    } else {
        /* Blocking writes from here on (O_NONBLOCK was only for a FIFO). */
        int fl = fcntl(fd, F_GETFL);
        if (fl >= 0)
            fcntl(fd, F_SETFL, fl & ~O_NONBLOCK);
        return fd;
    }
    close(fd);
    return -1;
}

int mbox_deliver(const char *mbox_path, const struct dlv_job *job, size_t i, struct dlv_result *out)
{
    if (local_check_job(job, i, out, RELAY) < 0 || mbox_path == NULL)
        return -1;

    char what[1200], lockpath[4200];
    if ((size_t)snprintf(lockpath, sizeof(lockpath), "%s.lock", mbox_path) >= sizeof(lockpath)) {
        dlv_result_set(out, DLV_BOUNCED, "5.2.0", RELAY, "cannot update mailbox: path too long");
        return 0;
    }
    double deadline = mono_now() + MBOX_LOCK_WAIT;
    int dotlock = dotlock_take(lockpath, deadline);
    if (dotlock < 0) {
        int err = errno;
        snprintf(what, sizeof(what), "cannot update mailbox %.400s: unable to create lock file %.400s.lock",
                 mbox_path, mbox_path);
        local_result_dsn(out, err == EAGAIN ? "4.2.0" : local_errno_dsn(err, "4.2.0"), RELAY, what, err);
        return 0;
    }

    const char *dsn = NULL, *why = NULL;
    int err = 0, created = 0;
    int fd = mbox_open(mbox_path, &dsn, &why, &err, &created);
    if (fd < 0) {
        snprintf(what, sizeof(what), "cannot update mailbox %.400s: %s", mbox_path, why);
        local_result_dsn(out, dsn, RELAY, what, err);
        goto unlock;
    }
    if (fcntl_lock(fd, deadline) < 0) {
        err = errno;
        snprintf(what, sizeof(what), "cannot update mailbox %.400s: unable to lock for exclusive access", mbox_path);
        local_result_dsn(out, "4.2.0", RELAY, what, err);
        goto close;
    }
    struct stat st;
    if (fstat(fd, &st) < 0) {
        err = errno;
        snprintf(what, sizeof(what), "cannot update mailbox %.400s: cannot stat", mbox_path);
        local_result_dsn(out, "4.2.0", RELAY, what, err);
        goto close;
    }
    off_t orig = st.st_size;
    unsigned long long file_size = (unsigned long long)orig;

    char buf[65536], sender[600], rcpt[600], date[64];
    from_date(date, sizeof(date), time(NULL));
    local_header_safe(sender, sizeof(sender), job->sender);
    local_header_safe(rcpt, sizeof(rcpt), job->rcpt_addr[i]);
    size_t fill = (size_t)snprintf(buf, sizeof(buf), "From %s %s\nReturn-Path: <%s>\nDelivered-To: %s\n",
                                   sender[0] ? sender : "MAILER-DAEMON", date, sender, rcpt);
    struct local_content c;
    local_content_init(&c, job, 1, 1);
    c.ensure_final_nl = 1;
    int read_err = 0, done = 0;
    while (!err && !done) {
        ssize_t r = local_content_read(&c, buf + fill, sizeof(buf) - fill - 1);
        if (r < 0) {
            read_err = errno;
            break;
        }
        fill += (size_t)r;
        if (r == 0) {
            buf[fill++] = '\n';   /* the blank line that ends an mbox message */
            done = 1;
        }
        if (done || fill >= sizeof(buf) - 1) {
            /* mailbox_size_limit is the size of the whole mbox file */
            if (local_write_limited(fd, buf, fill, &file_size, job->file_size_limit) < 0)
                err = errno;
            fill = 0;
        }
    }
    double sync_started = dlv_monotonic();
    if (!err && !read_err && fsync(fd) < 0)
        err = errno;
    /* A mailbox we created: its name must survive a crash too. */
    int dir_err = !err && !read_err && created && fs_sync_parent(mbox_path) < 0 ? errno : 0;
    double synced = dlv_monotonic() - sync_started;
    if (dir_err)
        err = dir_err;
    if (err || read_err) {
        /* Take the partial message back; the lock is still ours. If even
         * that fails, the mailbox has a torn message: say so loudly. */
        int terr = ftruncate(fd, orig) < 0 ? errno : 0;
        if (read_err) {
            local_result_dsn(out, "4.3.0", RELAY, "mailbox delivery failed: error reading message", read_err);
        } else {
            snprintf(what, sizeof(what), "cannot update mailbox %.400s: %s%s", mbox_path,
                     dir_err ? "cannot fsync its directory" : "error writing message",
                     terr ? " (and truncating it back failed)" : "");
            local_result_dsn(out, local_errno_dsn(err, "4.3.0"), RELAY, what, err);
        }
        goto close;
    }
    dlv_result_set(out, DLV_SENT, "2.0.0", RELAY, "delivered to mailbox");
    out->sync_secs = synced;

close:
    close(fd);   /* releases the fcntl lock */
unlock:
    if (dotlock > 0)
        unlink(lockpath);
    return 0;
}
