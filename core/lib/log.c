/*
 * The logger behind log.h. A line is formatted into one stack buffer and
 * written with a single write(2), so lines from several processes appending
 * to the same maillog_file never interleave. The state here is the process's
 * own logging context, set once per role.
 *
 * The process id in every line is cached: getpid() is a system call (glibc
 * stopped caching it), and a busy smtpd logs several lines per message. A
 * fork handler renews the cache in the child, so a forked process never
 * logs its parent's id.
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <syslog.h>
#include <time.h>
#include <unistd.h>

#include "lib/log.h"

enum log_sink { SINK_STDERR, SINK_FILE, SINK_SYSLOG };

static struct {
    char name[64];
    char role[32];
    char host[256];
    char file_path[4096];
    enum log_sink sink;
    int file_fd;
    int verbose;
    long pid;   /* getpid(), set by log_pid_init and renewed at fork */
} log_ctx = { .name = "petrel", .role = "petreld", .sink = SINK_STDERR, .file_fd = -1 };

static void log_pid_forked(void)
{
    log_ctx.pid = (long)getpid();   /* the child runs one thread here */
}

static void log_pid_init(void)
{
    log_ctx.pid = (long)getpid();
    (void)pthread_atfork(NULL, NULL, log_pid_forked);
}

/* Threads log too (the commit threads): pthread_once orders the first
 * write before every read. */
static long log_pid(void)
{
    static pthread_once_t once = PTHREAD_ONCE_INIT;
    (void)pthread_once(&once, log_pid_init);
    return log_ctx.pid;
}

static void copy_bounded(char *dst, size_t size, const char *src)
{
    snprintf(dst, size, "%s", src ? src : "");
}

void log_init(const char *syslog_name, const char *role)
{
    copy_bounded(log_ctx.name, sizeof(log_ctx.name), syslog_name ? syslog_name : "petrel");
    copy_bounded(log_ctx.role, sizeof(log_ctx.role), role ? role : "petreld");
    if (gethostname(log_ctx.host, sizeof(log_ctx.host)) != 0)
        copy_bounded(log_ctx.host, sizeof(log_ctx.host), "localhost");
    log_ctx.host[sizeof(log_ctx.host) - 1] = '\0';
    char *dot = strchr(log_ctx.host, '.');
    if (dot)
        *dot = '\0';   /* syslog shows the short host name */
}

void log_set_role(const char *role)
{
    copy_bounded(log_ctx.role, sizeof(log_ctx.role), role);
    if (log_ctx.sink == SINK_SYSLOG) {
        /* openlog keeps the ident pointer: our buffer lives as long as the process. */
        static char ident[sizeof(log_ctx.name) + sizeof(log_ctx.role) + 2];
        snprintf(ident, sizeof(ident), "%s/%s", log_ctx.name, log_ctx.role);
        openlog(ident, LOG_PID | LOG_NDELAY, LOG_MAIL);
    }
}

const char *log_role(void)
{
    return log_ctx.role;
}

int log_use_file(const char *path)
{
    int fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0640);
    if (fd < 0)
        return -1;
    if (log_ctx.file_fd >= 0)
        close(log_ctx.file_fd);
    log_ctx.file_fd = fd;
    copy_bounded(log_ctx.file_path, sizeof(log_ctx.file_path), path);
    log_ctx.sink = SINK_FILE;
    return 0;
}

static const struct { const char *name; int value; } facilities[] = {
    { "mail", LOG_MAIL }, { "daemon", LOG_DAEMON }, { "user", LOG_USER },
    { "local0", LOG_LOCAL0 }, { "local1", LOG_LOCAL1 }, { "local2", LOG_LOCAL2 },
    { "local3", LOG_LOCAL3 }, { "local4", LOG_LOCAL4 }, { "local5", LOG_LOCAL5 },
    { "local6", LOG_LOCAL6 }, { "local7", LOG_LOCAL7 },
};

int log_use_syslog(const char *facility_name)
{
    for (size_t i = 0; i < sizeof(facilities) / sizeof(facilities[0]); i++) {
        if (strcasecmp(facilities[i].name, facility_name) == 0) {
            static char ident[sizeof(log_ctx.name) + sizeof(log_ctx.role) + 2];
            snprintf(ident, sizeof(ident), "%s/%s", log_ctx.name, log_ctx.role);
            openlog(ident, LOG_PID | LOG_NDELAY, facilities[i].value);
            log_ctx.sink = SINK_SYSLOG;
            return 0;
        }
    }
    errno = EINVAL;
    return -1;
}

void log_use_stderr(void)
{
    log_ctx.sink = SINK_STDERR;
}

void log_reopen(void)
{
    if (log_ctx.sink == SINK_FILE && log_ctx.file_path[0]) {
        char path[sizeof(log_ctx.file_path)];
        memcpy(path, log_ctx.file_path, sizeof(path));
        if (log_use_file(path) != 0)
            msg_warn("cannot reopen maillog_file %s: %s", path, strerror(errno));
    }
}

void log_set_verbose(int level)
{
    log_ctx.verbose = level;
}

int log_crash_fd(void)
{
    return log_ctx.sink == SINK_FILE && log_ctx.file_fd >= 0 ? log_ctx.file_fd : STDERR_FILENO;
}

void log_crash_prefix(char *out, size_t size)
{
    snprintf(out, size, "%s/%s[%ld]: ", log_ctx.name, log_ctx.role, (long)getpid());
}

int log_verbose(void)
{
    return log_ctx.verbose;
}

static const char *level_prefix(enum log_level level)
{
    switch (level) {
    case LOG_LEVEL_WARN: return "warning: ";
    case LOG_LEVEL_ERROR: return "error: ";
    case LOG_LEVEL_FATAL: return "fatal: ";
    case LOG_LEVEL_PANIC: return "panic: ";
    default: return "";
    }
}

static int syslog_priority(enum log_level level)
{
    switch (level) {
    case LOG_LEVEL_DEBUG: return LOG_DEBUG;
    case LOG_LEVEL_WARN: return LOG_WARNING;
    case LOG_LEVEL_ERROR: return LOG_ERR;
    case LOG_LEVEL_FATAL: return LOG_CRIT;
    case LOG_LEVEL_PANIC: return LOG_ALERT;
    default: return LOG_INFO;
    }
}

void msg_vlog(enum log_level level, const char *fmt, va_list ap)
{
    int saved_errno = errno;
    char line[4096];
    size_t len = 0;

    if (log_ctx.sink == SINK_SYSLOG) {
        char text[3800];
        vsnprintf(text, sizeof(text), fmt, ap);
        syslog(syslog_priority(level), "%s%s", level_prefix(level), text);
        errno = saved_errno;
        return;
    }
    if (log_ctx.sink == SINK_FILE) {
        time_t now = time(NULL);
        struct tm tm;
        localtime_r(&now, &tm);
        len = strftime(line, sizeof(line), "%b %e %H:%M:%S ", &tm);
        len += (size_t)snprintf(line + len, sizeof(line) - len, "%s ", log_ctx.host);
    }
    int n = snprintf(line + len, sizeof(line) - len, "%s/%s[%ld]: %s",
                     log_ctx.name, log_ctx.role, log_pid(), level_prefix(level));
    if (n > 0)
        len += (size_t)n;
    if (len < sizeof(line)) {
        n = vsnprintf(line + len, sizeof(line) - len, fmt, ap);
        if (n > 0)
            len += (size_t)n;
    }
    if (len > sizeof(line) - 2)
        len = sizeof(line) - 2;   /* truncated: keep the newline */
    /* Control characters from the network never reach the log raw. */
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)line[i];
        if (c < 0x20 || c == 0x7f)
            line[i] = '?';
    }
    line[len++] = '\n';
    int fd = log_ctx.sink == SINK_FILE && log_ctx.file_fd >= 0 ? log_ctx.file_fd : STDERR_FILENO;
    ssize_t ignored = write(fd, line, len);
    (void)ignored;
    errno = saved_errno;
}

#define DEFINE_LOGGER(fn, level)                \
    void fn(const char *fmt, ...)               \
    {                                           \
        va_list ap;                             \
        va_start(ap, fmt);                      \
        msg_vlog(level, fmt, ap);               \
        va_end(ap);                             \
    }

DEFINE_LOGGER(msg_info, LOG_LEVEL_INFO)
DEFINE_LOGGER(msg_warn, LOG_LEVEL_WARN)
DEFINE_LOGGER(msg_error, LOG_LEVEL_ERROR)

void msg_debug(const char *fmt, ...)
{
    if (log_ctx.verbose <= 0)
        return;
    va_list ap;
    va_start(ap, fmt);
    msg_vlog(LOG_LEVEL_DEBUG, fmt, ap);
    va_end(ap);
}

void msg_fatal(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    msg_vlog(LOG_LEVEL_FATAL, fmt, ap);
    va_end(ap);
    exit(1);
}

void msg_panic(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    msg_vlog(LOG_LEVEL_PANIC, fmt, ap);
    va_end(ap);
    abort();
}
