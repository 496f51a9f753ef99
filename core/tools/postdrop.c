/*
 * petrel-postdrop: writes one local submission into queue_directory/maildrop/
 * (Postfix's postdrop). petrel-sendmail runs it and streams the envelope and
 * message on its standard input in the maildrop format (core/queue/maildrop.h,
 * without the time record); the helper checks every record, writes the file,
 * makes it durable and prints the file's name. Exit status 0 means the mail
 * is on stable storage and will be picked up whether petreld runs now or
 * starts later.
 *
 *   petrel-postdrop [-c config_dir]
 *
 * Installed set-group-ID setgid_group (default postdrop) when `make install`
 * runs as root: the maildrop directory is mail_owner:setgid_group mode 1730,
 * so only this program can create files there, nobody but mail_owner can
 * list or read them, and the sticky bit keeps users from removing or
 * renaming each other's files. The file's owner is the submitting user: the
 * pickup role takes the local-submission identity from it (fstat), never
 * from anything the user wrote. In single-user mode (no setgid bit) it simply
 * writes as the one user petreld runs as.
 *
 * Because it may run with privileges on behalf of any local user, it trusts
 * nothing it is given: the environment is cleared, a configuration
 * directory other than the default is accepted only from root, from a
 * helper without privileges, or when the default main.cf lists it in
 * alternate_config_directories or multi_instance_directories (Postfix's
 * rule); input is parsed by the bounded maildrop parser with
 * message_size_limit; the time record is its own; an incomplete or refused
 * submission leaves no file behind (also on SIGINT, SIGTERM, SIGHUP).
 *
 * Durability: the file is fsync()ed after its ready mode is set, then its
 * directory entry: fsync of maildrop/ when the directory can be read (the
 * single-user case), else syncfs(2), since the group that petrel-postdrop
 * runs as may create files in maildrop/ but not open it (mode 1730).
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sysexits.h>
#include <unistd.h>

#include "config/cfg.h"
#include "lib/xalloc.h"
#include "queue/maildrop.h"
#include "queue/queue.h"

#define READ_BLOCK 65536

/* What the signal handler needs to remove an unfinished file. Written
 * before the handlers can run, cleared (with signals blocked) once the
 * file is complete; a handler only calls unlinkat and _exit. */
#if defined(__SANITIZE_ADDRESS__)
#define PETREL_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define PETREL_ASAN 1
#endif
#endif
#ifdef PETREL_ASAN
/* Sanitizer builds only (doc/testing.md): set-group-ID, this process is not
 * dumpable, so LeakSanitizer (which must ptrace its own threads) cannot run
 * in it and would fail the exit; nor can ASan read ASAN_OPTIONS from
 * /proc/self/environ to be told so. */
int __lsan_is_turned_off(void);
int __lsan_is_turned_off(void)
{
    return getegid() != getgid() || geteuid() != getuid();
}
#endif

static volatile sig_atomic_t cleanup_dirfd = -1;
static char cleanup_name[QUEUE_ID_MAX];

static void on_signal(int sig)
{
    if (cleanup_dirfd >= 0)
        (void)unlinkat(cleanup_dirfd, cleanup_name, 0);
    _exit(128 + sig);
}

static void remove_unfinished(void)
{
    sigset_t all, old;
    sigfillset(&all);
    sigprocmask(SIG_BLOCK, &all, &old);
    if (cleanup_dirfd >= 0)
        (void)unlinkat(cleanup_dirfd, cleanup_name, 0);
    cleanup_dirfd = -1;
    sigprocmask(SIG_SETMASK, &old, NULL);
}

static __attribute__((noreturn, format(printf, 2, 3))) void die(int status, const char *fmt, ...)
{
    va_list ap;
    remove_unfinished();
    va_start(ap, fmt);
    fputs("petrel-postdrop: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    exit(status);
}

/* A setgid program must not start with a closed standard descriptor: the
 * first file it opens would become "standard error". */
static void sane_descriptors(void)
{
    for (int fd = 0; fd < 3; fd++) {
        struct stat st;
        if (fstat(fd, &st) != 0) {
            int n = open("/dev/null", O_RDWR);
            if (n != fd)
                _exit(EX_OSERR);
        }
    }
}

static int listed(const char *list, const char *dir)
{
    int found = 0;
    char **items = cfg_split_list(list ? list : "");
    for (char **i = items; *i && !found; i++)
        found = strcmp(*i, dir) == 0;
    cfg_list_free(items);
    return found;
}

/* Postfix's rule for -c / MAIL_CONFIG in a set-group-ID program. */
static void check_config_dir(const char *confdir, int privileged)
{
    if (strcmp(confdir, PETREL_SYSCONFDIR) == 0 || !privileged || getuid() == 0)
        return;
    struct cfg_schema *schema = cfg_schema_new();
    char *alternates = cfg_peek(schema, PETREL_SYSCONFDIR, "alternate_config_directories");
    char *instances = cfg_peek(schema, PETREL_SYSCONFDIR, "multi_instance_directories");
    cfg_schema_free(schema);
    int ok = listed(alternates, confdir) || listed(instances, confdir);
    free(alternates);
    free(instances);
    if (!ok)
        die(EX_NOPERM, "configuration directory %s is not allowed: list it in alternate_config_directories of %s/main.cf",
            confdir, PETREL_SYSCONFDIR);
}

struct copy {
    struct maildrop_writer w;
};

static int copy_sender(void *ctx, const char *a)
{
    return maildrop_write_sender(&((struct copy *)ctx)->w, a);
}

static int copy_recipient(void *ctx, const char *a)
{
    return maildrop_write_recipient(&((struct copy *)ctx)->w, a);
}

static int copy_start(void *ctx)
{
    return maildrop_write_content_start(&((struct copy *)ctx)->w);
}

static int copy_content(void *ctx, const void *d, size_t n)
{
    return maildrop_write_content(&((struct copy *)ctx)->w, d, n);
}

static int copy_end(void *ctx, unsigned long long length)
{
    return maildrop_write_end(&((struct copy *)ctx)->w);
}

int main(int argc, char **argv)
{
    sane_descriptors();
    umask(077);
    uid_t uid = getuid();
    int privileged = getegid() != getgid() || geteuid() != getuid();
    const char *confdir = getenv("MAIL_CONFIG");
    int opt;
    while ((opt = getopt(argc, argv, "c:rv")) != -1) {
        switch (opt) {
        case 'c':
            confdir = optarg;
            break;
        case 'r':   /* Postfix's postdrop protocol flag: the only protocol here */
        case 'v':
            break;
        default:
            die(EX_USAGE, "usage: petrel-postdrop [-c config_directory] (default %s)", PETREL_SYSCONFDIR);
        }
    }
    if (optind != argc)
        die(EX_USAGE, "usage: petrel-postdrop [-c config_directory] (default %s)", PETREL_SYSCONFDIR);
    if (confdir == NULL || *confdir == '\0')
        confdir = PETREL_SYSCONFDIR;
    char *config = xstrdup(confdir);
    /* Nothing from the caller's environment past this point. */
    clearenv();
    check_config_dir(config, privileged);

    struct cfg_schema *schema = cfg_schema_new();
    char *qdir = cfg_peek(schema, config, "queue_directory");
    char *size_text = cfg_peek(schema, config, "message_size_limit");
    cfg_schema_free(schema);
    if (qdir == NULL)
        die(EX_CONFIG, "cannot read %s/main.cf: %s", config, strerror(errno));
    long long size_limit = 0;
    if (size_text && *size_text && cfg_parse_size(size_text, &size_limit) != 0)
        die(EX_CONFIG, "%s/main.cf: message_size_limit: bad value \"%s\"", config, size_text);

    int qfd = open(qdir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (qfd < 0)
        die(EX_TEMPFAIL, "cannot open queue_directory %s: %s", qdir, strerror(errno));
    /* O_PATH: the group may create files in maildrop/ but not read it (1730). */
    int dfd = openat(qfd, MAILDROP_DIR, O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (dfd < 0)
        die(EX_TEMPFAIL, "cannot open %s/%s: %s%s", qdir, MAILDROP_DIR, strerror(errno),
            errno == ENOENT ? " (petreld creates it when it starts)" : "");
    /* For the directory fsync; not readable through the group, see commit. */
    int sync_fd = openat(qfd, MAILDROP_DIR, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    close(qfd);
    struct stat dst;
    if (fstat(dfd, &dst) != 0)
        die(EX_TEMPFAIL, "%s/%s: %s", qdir, MAILDROP_DIR, strerror(errno));
    /* With privileges, write only into a directory that keeps users apart. */
    if (privileged && (!(dst.st_mode & S_ISVTX) || (dst.st_mode & (S_IROTH | S_IWOTH | S_IXOTH))))
        die(EX_TEMPFAIL, "%s/%s: unsafe mode %04o (petreld sets 1730; is queue_directory right?)", qdir,
            MAILDROP_DIR, (unsigned)(dst.st_mode & 07777));

    signal(SIGPIPE, SIG_IGN);
    signal(SIGXFSZ, SIG_IGN);
    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_signal;
    sigfillset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGHUP, &sa, NULL);
    sigaction(SIGQUIT, &sa, NULL);

    /* A fresh name; O_EXCL, so an existing file is never touched. Signals
     * wait from before the file exists until the handler knows its name: a
     * SIGTERM in between (petrel-sendmail stops us that way when the message
     * is too large, often while we are still here) left an empty file that
     * pickup ignores for an hour. */
    struct queue_id_gen gen;
    queue_id_gen_init(&gen, (unsigned)getpid());
    char name[QUEUE_ID_MAX];
    int fd = -1, open_errno = 0;
    sigset_t all, unblocked;
    sigfillset(&all);
    sigprocmask(SIG_BLOCK, &all, &unblocked);
    for (int attempt = 0; attempt < 8 && fd < 0; attempt++) {
        queue_id_next(&gen, name);
        fd = openat(dfd, name, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
        open_errno = errno;
        if (fd < 0 && errno != EEXIST)
            break;
    }
    if (fd >= 0) {
        memcpy(cleanup_name, name, sizeof(name));
        cleanup_dirfd = dfd;
    }
    sigprocmask(SIG_SETMASK, &unblocked, NULL);
    if (fd < 0)
        die(EX_TEMPFAIL, "cannot create a file in %s/%s: %s%s", qdir, MAILDROP_DIR, strerror(open_errno),
            open_errno == EACCES && !privileged
                ? " (for users other than mail_owner, petrel-postdrop must be set-group-ID setgid_group: run make install as root)"
                : "");
    /* Held until the file is complete and durable: pickup skips a locked file. */
    flock(fd, LOCK_EX);

    FILE *out = fdopen(fd, "w");
    if (out == NULL)
        die(EX_TEMPFAIL, "fdopen: %s", strerror(errno));
    struct copy c;
    maildrop_writer_init(&c.w, out);
    struct timeval now;
    gettimeofday(&now, NULL);
    maildrop_write_time(&c.w, (long long)now.tv_sec, (long)now.tv_usec);

    struct maildrop_parser parser;
    maildrop_parser_init(&parser, MAILDROP_SUBMISSION, (unsigned long long)size_limit);
    static const struct maildrop_handler handler = { NULL, copy_sender, copy_recipient, copy_start,
                                                     copy_content, copy_end };
    char *block = xmalloc(READ_BLOCK);
    for (;;) {
        ssize_t n = read(0, block, READ_BLOCK);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            die(EX_IOERR, "uid=%ld: error reading the submission: %s", (long)uid, strerror(errno));
        if (n == 0)
            break;
        if (maildrop_parse(&parser, block, (size_t)n, &handler, &c) != 0) {
            if (c.w.failed)
                die(EX_TEMPFAIL, "uid=%ld: cannot write %s/%s/%s: %s", (long)uid, qdir, MAILDROP_DIR, name,
                    strerror(c.w.failed));
            if (strstr(parser.error, "message larger than"))
                die(EX_UNAVAILABLE, "uid=%ld: message too large (message_size_limit = %lld bytes)", (long)uid,
                    size_limit);
            die(EX_DATAERR, "uid=%ld: malformed submission: %s", (long)uid, parser.error);
        }
    }
    free(block);
    if (maildrop_parse_finish(&parser) != 0)
        die(EX_DATAERR, "uid=%ld: incomplete submission: %s", (long)uid, parser.error);
    if (c.w.failed)
        die(EX_TEMPFAIL, "uid=%ld: cannot write %s/%s/%s: %s", (long)uid, qdir, MAILDROP_DIR, name,
            strerror(c.w.failed));
    maildrop_writer_free(&c.w);

    /* Complete: mark it ready, then make data, mode and name durable. Only
     * then is success reported; the lock goes with the close. */
    if (fchmod(fd, MAILDROP_READY_MODE) != 0 || fsync(fd) != 0)
        die(EX_TEMPFAIL, "uid=%ld: cannot commit %s/%s/%s: %s", (long)uid, qdir, MAILDROP_DIR, name, strerror(errno));
    /* The new name must be durable too. Through setgid_group the directory
     * cannot be opened for fsync (mode 1730, as Postfix has it): syncfs(2)
     * on its file system commits the entry instead. */
    if ((sync_fd >= 0 ? fsync(sync_fd) : syncfs(fd)) != 0)
        die(EX_TEMPFAIL, "uid=%ld: cannot commit %s/%s: %s", (long)uid, qdir, MAILDROP_DIR, strerror(errno));
    sigprocmask(SIG_BLOCK, &all, NULL);
    cleanup_dirfd = -1;
    /* Unlock before the close: the kernel reports the close (inotify's
     * IN_CLOSE_WRITE, which wakes pickup) before it drops a lock held to
     * the end, and pickup would find the file still locked. */
    flock(fd, LOCK_UN);
    fclose(out);   /* everything is durable already: a close error cannot change that */
    printf("%s\n", name);
    fflush(stdout);
    free(config);
    free(qdir);
    free(size_text);
    return 0;
}
