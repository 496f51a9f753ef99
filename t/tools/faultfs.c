/*
 * faultfs: an LD_PRELOAD shim that makes chosen file-system calls fail, for
 * the fault-injection tests (t/integration/test_faults_*.py). It is built as
 * a check library and never installed.
 *
 * The rules come from the file named by PETREL_FAULTS_FILE (re-read whenever
 * it changes, so a test can switch faults on and off under a running
 * daemon) or, when that is unset, from PETREL_FAULTS itself. One rule per
 * line (or separated by ';'), words KEY=VALUE:
 *
 *   op=write path=/incoming/ errno=ENOSPC after=2 times=1
 *
 *   op      create (open/openat with O_CREAT), write (write, writev, pwrite,
 *           pwritev), fsync (fsync, fdatasync), rename (rename, renameat,
 *           renameat2), link (link, linkat), mkdir (mkdir, mkdirat)
 *   path    a substring of the absolute path (for descriptors: the path
 *           /proc/self/fd/N names; for renames and links: either name);
 *           with a trailing '$', the end of the path (path=/incoming$ is
 *           the directory itself, not the files in it)
 *   errno   EIO ENOSPC EACCES EDQUOT EROFS EPERM (default EIO)
 *   after   let this many matching calls through first (default 0)
 *   times   fail at most this many times, then let everything through
 *           (default: no limit)
 *   short   for writes: write only half of what was asked (at least one
 *           byte) and report that, instead of failing; callers must loop
 *
 * Counters are per process and restart when the rules change. Each fault
 * is appended to PETREL_FAULTS_LOG, when set, as "PID OP PATH ERRNO" (or
 * "short"), so a test can check that the fault it arranged really fired.
 *
 * Only the calls a program makes through the dynamic symbol are caught
 * (stdio's internal writes are not): that covers petreld's queue and
 * mailbox code, which uses the system calls directly.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <sys/uio.h>
#include <unistd.h>

#define MAX_RULES 16

enum fault_op { OP_CREATE, OP_WRITE, OP_FSYNC, OP_RENAME, OP_LINK, OP_MKDIR, OP_NONE };
static const char *const op_names[] = { "create", "write", "fsync", "rename", "link", "mkdir" };

struct rule {
    enum fault_op op;
    char path[256];
    int err;
    long after, times;
    int is_short;
    long seen, failed;
};

/* The shim's state: one per process (an LD_PRELOAD library has no other
 * place to keep it), guarded by one mutex. */
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static struct rule rules[MAX_RULES];
static int nrules;
static struct timespec rules_mtime;
static off_t rules_size = -1;
static int env_loaded;

static ssize_t (*real_write)(int, const void *, size_t);
static ssize_t (*real_writev)(int, const struct iovec *, int);
static ssize_t (*real_pwrite)(int, const void *, size_t, off_t);
static ssize_t (*real_pwritev)(int, const struct iovec *, int, off_t);
static int (*real_fsync)(int);
static int (*real_fdatasync)(int);
static int (*real_open)(const char *, int, ...);
static int (*real_openat)(int, const char *, int, ...);
static int (*real_rename)(const char *, const char *);
static int (*real_renameat)(int, const char *, int, const char *);
static int (*real_renameat2)(int, const char *, int, const char *, unsigned);
static int (*real_link)(const char *, const char *);
static int (*real_linkat)(int, const char *, int, const char *, int);
static int (*real_mkdir)(const char *, mode_t);
static int (*real_mkdirat)(int, const char *, mode_t);

static pthread_once_t once = PTHREAD_ONCE_INIT;

static void resolve(void)
{
    real_write = dlsym(RTLD_NEXT, "write");
    real_writev = dlsym(RTLD_NEXT, "writev");
    real_pwrite = dlsym(RTLD_NEXT, "pwrite64");
    real_pwritev = dlsym(RTLD_NEXT, "pwritev64");
    real_fsync = dlsym(RTLD_NEXT, "fsync");
    real_fdatasync = dlsym(RTLD_NEXT, "fdatasync");
    real_open = dlsym(RTLD_NEXT, "open64");
    real_openat = dlsym(RTLD_NEXT, "openat64");
    real_rename = dlsym(RTLD_NEXT, "rename");
    real_renameat = dlsym(RTLD_NEXT, "renameat");
    real_renameat2 = dlsym(RTLD_NEXT, "renameat2");
    real_link = dlsym(RTLD_NEXT, "link");
    real_linkat = dlsym(RTLD_NEXT, "linkat");
    real_mkdir = dlsym(RTLD_NEXT, "mkdir");
    real_mkdirat = dlsym(RTLD_NEXT, "mkdirat");
}

/* At load, before the program runs: never first inside a signal handler
 * that interrupted an unfinished resolve() (pthread_once would wait on it). */
__attribute__((constructor)) static void resolve_at_load(void)
{
    pthread_once(&once, resolve);
}

static int errno_named(const char *s)
{
    static const struct { const char *name; int value; } names[] = {
        { "EIO", EIO }, { "ENOSPC", ENOSPC }, { "EACCES", EACCES }, { "EDQUOT", EDQUOT },
        { "EROFS", EROFS }, { "EPERM", EPERM },
    };
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
        if (strcmp(s, names[i].name) == 0)
            return names[i].value;
    return EIO;
}

static void parse_rules(const char *text)
{
    nrules = 0;
    char line[1024];
    const char *p = text;
    while (*p && nrules < MAX_RULES) {
        size_t n = strcspn(p, ";\n");
        if (n >= sizeof(line))
            n = sizeof(line) - 1;
        memcpy(line, p, n);
        line[n] = '\0';
        p += n;
        if (*p)
            p++;
        struct rule r = { .op = OP_NONE, .err = EIO, .times = -1 };
        char *save = NULL;
        for (char *w = strtok_r(line, " \t", &save); w; w = strtok_r(NULL, " \t", &save)) {
            char *eq = strchr(w, '=');
            if (strcmp(w, "short") == 0) {
                r.is_short = 1;
                continue;
            }
            if (eq == NULL)
                continue;
            *eq++ = '\0';
            if (strcmp(w, "op") == 0) {
                for (int k = 0; k < OP_NONE; k++)
                    if (strcmp(eq, op_names[k]) == 0)
                        r.op = (enum fault_op)k;
            } else if (strcmp(w, "path") == 0) {
                snprintf(r.path, sizeof(r.path), "%s", eq);
            } else if (strcmp(w, "errno") == 0) {
                r.err = errno_named(eq);
            } else if (strcmp(w, "after") == 0) {
                r.after = strtol(eq, NULL, 10);
            } else if (strcmp(w, "times") == 0) {
                r.times = strtol(eq, NULL, 10);
            }
        }
        if (r.op != OP_NONE)
            rules[nrules++] = r;
    }
}

/* Under lock: brings the rules up to date with their file or variable. */
static void refresh(void)
{
    const char *file = getenv("PETREL_FAULTS_FILE");
    if (file == NULL) {
        if (!env_loaded) {
            const char *env = getenv("PETREL_FAULTS");
            parse_rules(env ? env : "");
            env_loaded = 1;
        }
        return;
    }
    struct stat st;
    if (stat(file, &st) != 0) {
        nrules = 0;
        rules_size = -1;
        return;
    }
    if (st.st_size == rules_size && st.st_mtim.tv_sec == rules_mtime.tv_sec
        && st.st_mtim.tv_nsec == rules_mtime.tv_nsec)
        return;
    char text[8192];
    int fd = real_open(file, O_RDONLY | O_CLOEXEC);
    ssize_t n = fd >= 0 ? read(fd, text, sizeof(text) - 1) : -1;
    if (fd >= 0)
        close(fd);
    text[n > 0 ? n : 0] = '\0';
    parse_rules(text);
    rules_size = st.st_size;
    rules_mtime = st.st_mtim;
}

static void note(enum fault_op op, const char *path, int err)
{
    const char *log = getenv("PETREL_FAULTS_LOG");
    if (log == NULL)
        return;
    char line[PATH_MAX + 64];
    int n = snprintf(line, sizeof(line), "%ld %s %s %s\n", (long)getpid(), op_names[op], path,
                     err ? strerrorname_np(err) : "short");
    int fd = real_open(log, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0666);
    if (fd >= 0) {
        real_write(fd, line, n > 0 && (size_t)n < sizeof(line) ? (size_t)n : strlen(line));
        close(fd);
    }
}

static int path_matches(const char *path, const char *pattern)
{
    if (path == NULL || *pattern == '\0')
        return 0;
    size_t n = strlen(pattern);
    if (pattern[n - 1] != '$')
        return strstr(path, pattern) != NULL;
    size_t len = strlen(path);
    return len >= n - 1 && memcmp(path + len - (n - 1), pattern, n - 1) == 0;
}

/* 0: let the call through; an errno: fail with it; -1: a short write.
 * Signals are blocked while the lock is held: a handler that writes (as
 * libevent's does, to its signal pipe) comes back here, and would wait
 * forever for the lock its own thread holds (a hung smtpd worker in
 * test_faults_incoming.py, its main thread in refresh() under the handler). */
static int decide(enum fault_op op, const char *path, const char *path2)
{
    pthread_once(&once, resolve);
    int verdict = 0;
    sigset_t all, saved;
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, &saved);
    pthread_mutex_lock(&lock);
    refresh();
    for (int i = 0; i < nrules; i++) {
        struct rule *r = &rules[i];
        if (r->op != op)
            continue;
        if (!path_matches(path, r->path) && !path_matches(path2, r->path))
            continue;
        if (r->seen++ < r->after)
            continue;
        if (r->times >= 0 && r->failed >= r->times)
            continue;
        r->failed++;
        verdict = r->is_short ? -1 : r->err;
        break;
    }
    pthread_mutex_unlock(&lock);
    pthread_sigmask(SIG_SETMASK, &saved, NULL);
    if (verdict)
        note(op, path && *path ? path : path2 ? path2 : "?", verdict > 0 ? verdict : 0);
    return verdict;
}

static void fd_path(int fd, char *out, size_t size)
{
    char link[64];
    snprintf(link, sizeof(link), "/proc/self/fd/%d", fd);
    ssize_t n = readlink(link, out, size - 1);
    out[n > 0 ? n : 0] = '\0';
}

static void at_path(int dirfd, const char *name, char *out, size_t size)
{
    if (name == NULL) {
        out[0] = '\0';
        return;
    }
    if (name[0] == '/') {
        snprintf(out, size, "%s", name);
        return;
    }
    char dir[PATH_MAX];
    if (dirfd == AT_FDCWD) {
        if (getcwd(dir, sizeof(dir)) == NULL)
            dir[0] = '\0';
    } else {
        fd_path(dirfd, dir, sizeof(dir));
    }
    snprintf(out, size, "%s/%s", dir, name);
}

static int no_rules_at_all(void)
{
    return getenv("PETREL_FAULTS_FILE") == NULL && getenv("PETREL_FAULTS") == NULL;
}

static int fd_decide(enum fault_op op, int fd)
{
    pthread_once(&once, resolve);
    if (no_rules_at_all())
        return 0;
    char path[PATH_MAX];
    fd_path(fd, path, sizeof(path));
    return decide(op, path, NULL);
}

static int at_decide(enum fault_op op, int dirfd, const char *name, int dirfd2, const char *name2)
{
    pthread_once(&once, resolve);
    if (no_rules_at_all())
        return 0;
    char a[PATH_MAX], b[PATH_MAX];
    at_path(dirfd, name, a, sizeof(a));
    at_path(dirfd2, name2, b, sizeof(b));
    return decide(op, a, name2 ? b : NULL);
}

/* ---- the intercepted calls ---- */

ssize_t write(int fd, const void *buf, size_t n)
{
    int v = fd_decide(OP_WRITE, fd);
    if (v > 0) {
        errno = v;
        return -1;
    }
    if (v < 0 && n > 1)
        n /= 2;
    return real_write(fd, buf, n);
}

ssize_t pwrite64(int fd, const void *buf, size_t n, off_t off)
{
    int v = fd_decide(OP_WRITE, fd);
    if (v > 0) {
        errno = v;
        return -1;
    }
    if (v < 0 && n > 1)
        n /= 2;
    return real_pwrite(fd, buf, n, off);
}
ssize_t pwrite(int fd, const void *buf, size_t n, off_t off) __attribute__((alias("pwrite64")));

/* A short vectored write: the first half of the first non-empty buffer. */
static ssize_t short_writev(int fd, const struct iovec *iov, int cnt, off_t off, int positioned)
{
    for (int i = 0; i < cnt; i++) {
        if (iov[i].iov_len == 0)
            continue;
        size_t n = iov[i].iov_len > 1 ? iov[i].iov_len / 2 : 1;
        return positioned ? real_pwrite(fd, iov[i].iov_base, n, off) : real_write(fd, iov[i].iov_base, n);
    }
    return positioned ? real_pwritev(fd, iov, cnt, off) : real_writev(fd, iov, cnt);
}

ssize_t writev(int fd, const struct iovec *iov, int cnt)
{
    int v = fd_decide(OP_WRITE, fd);
    if (v > 0) {
        errno = v;
        return -1;
    }
    return v < 0 ? short_writev(fd, iov, cnt, 0, 0) : real_writev(fd, iov, cnt);
}

ssize_t pwritev64(int fd, const struct iovec *iov, int cnt, off_t off)
{
    int v = fd_decide(OP_WRITE, fd);
    if (v > 0) {
        errno = v;
        return -1;
    }
    return v < 0 ? short_writev(fd, iov, cnt, off, 1) : real_pwritev(fd, iov, cnt, off);
}
ssize_t pwritev(int fd, const struct iovec *iov, int cnt, off_t off) __attribute__((alias("pwritev64")));

int fsync(int fd)
{
    int v = fd_decide(OP_FSYNC, fd);
    if (v > 0) {
        errno = v;
        return -1;
    }
    return real_fsync(fd);
}

int fdatasync(int fd)
{
    int v = fd_decide(OP_FSYNC, fd);
    if (v > 0) {
        errno = v;
        return -1;
    }
    return real_fdatasync(fd);
}

int open64(const char *path, int flags, ...)
{
    mode_t mode = 0;
    if (flags & (O_CREAT | __O_TMPFILE)) {
        va_list ap;
        va_start(ap, flags);
        mode = (mode_t)va_arg(ap, int);
        va_end(ap);
    }
    pthread_once(&once, resolve);
    if (flags & O_CREAT) {
        int v = at_decide(OP_CREATE, AT_FDCWD, path, AT_FDCWD, NULL);
        if (v > 0) {
            errno = v;
            return -1;
        }
    }
    return real_open(path, flags, mode);
}
int open(const char *path, int flags, ...) __attribute__((alias("open64")));

int openat64(int dirfd, const char *path, int flags, ...)
{
    mode_t mode = 0;
    if (flags & (O_CREAT | __O_TMPFILE)) {
        va_list ap;
        va_start(ap, flags);
        mode = (mode_t)va_arg(ap, int);
        va_end(ap);
    }
    pthread_once(&once, resolve);
    if (flags & O_CREAT) {
        int v = at_decide(OP_CREATE, dirfd, path, AT_FDCWD, NULL);
        if (v > 0) {
            errno = v;
            return -1;
        }
    }
    return real_openat(dirfd, path, flags, mode);
}
int openat(int dirfd, const char *path, int flags, ...) __attribute__((alias("openat64")));

int rename(const char *from, const char *to)
{
    int v = at_decide(OP_RENAME, AT_FDCWD, from, AT_FDCWD, to);
    if (v > 0) {
        errno = v;
        return -1;
    }
    return real_rename(from, to);
}

int renameat(int fromfd, const char *from, int tofd, const char *to)
{
    int v = at_decide(OP_RENAME, fromfd, from, tofd, to);
    if (v > 0) {
        errno = v;
        return -1;
    }
    return real_renameat(fromfd, from, tofd, to);
}

int renameat2(int fromfd, const char *from, int tofd, const char *to, unsigned flags)
{
    int v = at_decide(OP_RENAME, fromfd, from, tofd, to);
    if (v > 0) {
        errno = v;
        return -1;
    }
    return real_renameat2(fromfd, from, tofd, to, flags);
}

int link(const char *from, const char *to)
{
    int v = at_decide(OP_LINK, AT_FDCWD, from, AT_FDCWD, to);
    if (v > 0) {
        errno = v;
        return -1;
    }
    return real_link(from, to);
}

int linkat(int fromfd, const char *from, int tofd, const char *to, int flags)
{
    int v = at_decide(OP_LINK, fromfd, from, tofd, to);
    if (v > 0) {
        errno = v;
        return -1;
    }
    return real_linkat(fromfd, from, tofd, to, flags);
}

int mkdir(const char *path, mode_t mode)
{
    int v = at_decide(OP_MKDIR, AT_FDCWD, path, AT_FDCWD, NULL);
    if (v > 0) {
        errno = v;
        return -1;
    }
    return real_mkdir(path, mode);
}

int mkdirat(int dirfd, const char *path, mode_t mode)
{
    int v = at_decide(OP_MKDIR, dirfd, path, AT_FDCWD, NULL);
    if (v > 0) {
        errno = v;
        return -1;
    }
    return real_mkdirat(dirfd, path, mode);
}
