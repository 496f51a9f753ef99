/*
 * The master's start-up, before any role runs: mail_owner and setgid_group
 * (refused when they could reach root or the queue), the queue tree and
 * maildrop/ with their owners and modes (set again at every start, as
 * Postfix's post-install does), the pid file's lock (held by the master
 * and every child, so a second master never scans a running queue), the
 * recovery scan, data_directory, and going to the background. Moved from
 * master.c, which calls these in order (and data_directory at a reload).
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "config/cfg.h"
#include "lib/log.h"
#include "master/master_int.h"
#include "queue/maildrop.h"
#include "queue/queue.h"

int master_make_queue_dir(struct master *m, const struct cfg *cfg)
{
    snprintf(m->queue_dir, sizeof(m->queue_dir), "%s", cfg_get(cfg, "queue_directory"));
    if (mkdir(m->queue_dir, 0755) != 0 && errno != EEXIST) {
        msg_error("queue_directory %s: cannot create: %s", m->queue_dir, strerror(errno));
        return -1;
    }
    return 0;
}

/* maildrop/: where petrel-postdrop leaves local submissions (doc/architecture.md).
 * As root: mail_owner:setgid_group 1730, so the set-group-ID helper can
 * create files, nobody else can enter, and the sticky bit keeps users from
 * removing or renaming each other's files. Single-user: 1700, the one user.
 * The modes are set again at every start, as Postfix's post-install does. */
static int make_maildrop(struct master *m)
{
    char dir[4200];
    snprintf(dir, sizeof(dir), "%s/%s", m->queue_dir, MAILDROP_DIR);
    if (mkdir(dir, 0700) != 0 && errno != EEXIST) {
        msg_error("%s: cannot create: %s", dir, strerror(errno));
        return -1;
    }
    struct stat st;
    if (lstat(dir, &st) != 0 || !S_ISDIR(st.st_mode)) {
        msg_error("%s: not a directory", dir);
        return -1;
    }
    if (m->privileged && chown(dir, m->run_uid, m->setgid_gid) != 0) {
        msg_error("chown %s: %s", dir, strerror(errno));
        return -1;
    }
    if (chmod(dir, m->privileged ? 01730 : 01700) != 0) {
        msg_error("chmod %s: %s", dir, strerror(errno));
        return -1;
    }
    /* Before the maildrop, petrel-sendmail spoke SMTP to public/pickup;
     * nothing listens there any more. */
    char old[4300];
    snprintf(old, sizeof(old), "%s/public/pickup", m->queue_dir);
    if (lstat(old, &st) == 0 && S_ISSOCK(st.st_mode) && unlink(old) == 0) {
        snprintf(old, sizeof(old), "%s/public", m->queue_dir);
        rmdir(old);   /* only if empty */
    }
    return 0;
}

int master_prepare_queue(struct master *m, const struct cfg *cfg)
{
    char *error = NULL;
    struct queue *q = queue_open(m->queue_dir, 1, &error);
    if (q == NULL) {
        msg_error("queue_directory %s: %s", m->queue_dir, error);
        free(error);
        return -1;
    }
    static const char *const own_dirs[] = { "private", "defer" };
    for (size_t i = 0; i < sizeof(own_dirs) / sizeof(own_dirs[0]); i++) {
        char dir[4200];
        snprintf(dir, sizeof(dir), "%s/%s", m->queue_dir, own_dirs[i]);
        if (mkdir(dir, 0700) != 0 && errno != EEXIST) {
            msg_error("%s: cannot create: %s", dir, strerror(errno));
            queue_close(q);
            return -1;
        }
    }
    if (make_maildrop(m) != 0) {
        queue_close(q);
        return -1;
    }
    if (m->privileged) {
        /* The network-facing roles own the queue; nobody else reads it. */
        const char *subdirs[] = { "", "/private", "/defer", "/incoming", "/active", "/deferred", "/hold", "/corrupt" };
        for (size_t i = 0; i < sizeof(subdirs) / sizeof(subdirs[0]); i++) {
            char path[4200];
            snprintf(path, sizeof(path), "%s%s", m->queue_dir, subdirs[i]);
            if (chown(path, i == 0 ? 0 : m->run_uid, i == 0 ? 0 : m->run_gid) != 0)
                msg_warn("chown %s: %s", path, strerror(errno));
        }
    }
    struct queue_recover_stats stats;
    memset(&stats, 0, sizeof(stats));
    queue_recover(q, NULL, NULL, &stats);
    if (stats.removed_incomplete || stats.recovered_incoming || stats.moved_to_corrupt || stats.ignored)
        msg_info("queue recovery: %zu incomplete file%s removed, %zu message%s moved from incoming/ to active/, "
                 "%zu damaged file%s moved to corrupt, %zu file%s left alone",
                 stats.removed_incomplete, stats.removed_incomplete == 1 ? "" : "s", stats.recovered_incoming,
                 stats.recovered_incoming == 1 ? "" : "s", stats.moved_to_corrupt,
                 stats.moved_to_corrupt == 1 ? "" : "s", stats.ignored, stats.ignored == 1 ? "" : "s");
    queue_close(q);
    return 0;
}

/* Whether the process whose ID the pid file holds is alive (an unreadable
 * or empty file counts as alive: refuse rather than guess). */
static int master_alive(int fd)
{
    char text[32];
    ssize_t n = pread(fd, text, sizeof(text) - 1, 0);
    if (n <= 0)
        return 1;
    text[n] = '\0';
    char *end;
    long pid = strtol(text, &end, 10);
    if (end == text || pid <= 1)
        return 1;
    return kill((pid_t)pid, 0) == 0 || errno == EPERM;
}

/* data_directory holds the postscreen cache (and Postfix's other caches):
 * the workers write it as mail_owner, so it is created for them, as
 * Postfix's post-install does. Only needed when some postscreen service
 * keeps a cache there; a problem is logged, and postscreen then runs
 * without its cache (the workers say so). */
void master_prepare_data_directory(struct master *m, const struct cfg *cfg)
{
    int wanted = 0;
    for (size_t i = 0; i < cfg_service_count(cfg); i++) {
        const struct master_service *svc = cfg_service(cfg, i);
        const char *map = svc->role == ROLE_POSTSCREEN ? cfg_get(svc->cfg, "postscreen_cache_map") : NULL;
        wanted |= map && *map;
    }
    const char *dir = cfg_get(cfg, "data_directory");
    if (!wanted || dir == NULL || *dir != '/')
        return;
    if (mkdir(dir, 0700) != 0 && errno != EEXIST) {
        msg_warn("data_directory %s: cannot create: %s", dir, strerror(errno));
        return;
    }
    struct stat st;
    if (m->privileged && stat(dir, &st) == 0 && S_ISDIR(st.st_mode) && st.st_uid == 0 &&
        chown(dir, m->run_uid, m->run_gid) != 0)
        msg_warn("chown %s: %s", dir, strerror(errno));
}

int master_lock_pid_file(struct master *m)
{
    snprintf(m->pid_path, sizeof(m->pid_path), "%s/master.pid", m->queue_dir);
    m->pid_fd = open(m->pid_path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (m->pid_fd < 0) {
        msg_error("cannot open %s: %s", m->pid_path, strerror(errno));
        return -1;
    }
    /* The lock is held by a running master and its workers. When the
     * master recorded in the file is gone (killed), its workers are dying
     * of it (PR_SET_PDEATHSIG): wait for them, briefly, rather than refuse. */
    int waited = 0;
    while (flock(m->pid_fd, LOCK_EX | LOCK_NB) != 0) {
        if (errno != EWOULDBLOCK || master_alive(m->pid_fd) || waited >= 100) {
            msg_error("the Petrel mail system is already running (lock held on %s)", m->pid_path);
            return -1;
        }
        if (waited++ == 0)
            msg_info("%s: the previous master is gone; waiting for its workers to exit", m->pid_path);
        struct timespec tick = { 0, 100 * 1000 * 1000 };
        nanosleep(&tick, NULL);
    }
    return 0;
}

void master_write_pid(struct master *m)
{
    char text[32];
    int n = snprintf(text, sizeof(text), "%10ld\n", (long)getpid());
    if (ftruncate(m->pid_fd, 0) != 0 || pwrite(m->pid_fd, text, (size_t)n, 0) != n)
        msg_warn("cannot write %s: %s", m->pid_path, strerror(errno));
}

int master_resolve_owner(struct master *m, const struct cfg *cfg)
{
    m->privileged = geteuid() == 0;
    if (!m->privileged) {
        m->run_uid = getuid();
        m->run_gid = getgid();
        return 0;
    }
    const char *owner = cfg_get(cfg, "mail_owner");
    struct passwd *pw = getpwnam(owner);
    if (pw == NULL) {
        msg_error("mail_owner: user \"%s\" does not exist (create it: useradd --system --user-group %s)",
                  owner, owner);
        return -1;
    }
    if (pw->pw_uid == 0) {
        msg_error("mail_owner: user \"%s\" has privileged user ID 0; refusing to run mail as root", owner);
        return -1;
    }
    m->run_uid = pw->pw_uid;
    m->run_gid = pw->pw_gid;
    const char *group = cfg_get(cfg, "setgid_group");
    struct group *gr = getgrnam(group);
    if (gr == NULL) {
        msg_error("setgid_group: group \"%s\" does not exist (create it: groupadd --system %s; "
                  "`make install` as root does)", group, group);
        return -1;
    }
    if (gr->gr_gid == 0 || gr->gr_gid == pw->pw_gid) {
        /* Postfix's rule: the group that any user can act as through
         * petrel-postdrop must not be able to reach the queue itself. */
        msg_error("setgid_group: group \"%s\" (gid %ld) must differ from mail_owner's group and from root's",
                  group, (long)gr->gr_gid);
        return -1;
    }
    m->setgid_gid = gr->gr_gid;
    return 0;
}

int master_daemonize(void)
{
    pid_t pid = fork();
    if (pid < 0)
        return -1;
    if (pid > 0)
        _exit(0);
    setsid();
    int fd = open("/dev/null", O_RDWR);
    if (fd >= 0) {
        dup2(fd, 0);
        dup2(fd, 1);
        /* stderr stays when it is the log sink only if maillog_file is unset. */
        if (fd > 2)
            close(fd);
    }
    return 0;
}
