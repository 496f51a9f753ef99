/*
 * What the master reads from the queue directory for the metrics endpoint
 * and petrelctl stats: each queue's size and the age of its oldest message,
 * and whether the roles can still write the queue (/healthz).
 *
 * A scan reads directory entries only: a queue file's name is its queue ID,
 * which encodes the arrival time to the microsecond (queue/queue.h), so
 * the oldest message is found without opening or stat()ing a file (the
 * mtime of a deferred file is its next retry time, not its age). maildrop/
 * files have no queue ID: their mtime is when they were written.
 */
#include "config.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/time.h>
#include <unistd.h>

#include "lib/buf.h"
#include "master/master_int.h"
#include "queue/maildrop.h"
#include "queue/queue.h"

static const char *const queue_names[MASTER_QUEUES] = { "incoming", "active", "deferred", "hold", "corrupt",
                                                        "maildrop" };

static double now_seconds(void)
{
    struct timeval tv;
    gettimeofday(&tv, NULL);
    return (double)tv.tv_sec + tv.tv_usec / 1e6;
}

static void scan(const char *queue_dir, struct master_queue_figures *f, int by_id, double now)
{
    char path[4300];
    snprintf(path, sizeof(path), "%s/%s", queue_dir, f->name);
    DIR *dir = opendir(path);
    if (dir == NULL)
        return;
    double oldest = 0;
    struct dirent *de;
    while ((de = readdir(dir)) != NULL) {
        if (de->d_name[0] == '.')
            continue;
        f->messages++;
        double arrival = 0;
        long long sec;
        long usec;
        struct stat st;
        if (by_id && queue_id_time(de->d_name, &sec, &usec) == 0)
            arrival = (double)sec + usec / 1e6;
        else if (!by_id && fstatat(dirfd(dir), de->d_name, &st, AT_SYMLINK_NOFOLLOW) == 0)
            arrival = (double)st.st_mtim.tv_sec + st.st_mtim.tv_nsec / 1e9;
        if (arrival > 0 && (oldest == 0 || arrival < oldest))
            oldest = arrival;
    }
    closedir(dir);
    if (oldest > 0 && now > oldest)
        f->oldest_age = now - oldest;
}

void master_queue_figures(const char *queue_dir, struct master_queue_figures out[MASTER_QUEUES])
{
    double now = now_seconds();
    for (int i = 0; i < MASTER_QUEUES; i++) {
        out[i].name = queue_names[i];
        out[i].messages = 0;
        out[i].oldest_age = 0;
        scan(queue_dir, &out[i], strcmp(queue_names[i], MAILDROP_DIR) != 0, now);
    }
}

/* Write and search permission as the roles have it. */
static int writable(const char *path, int privileged, unsigned uid, unsigned gid)
{
    if (!privileged)
        return access(path, W_OK | X_OK) == 0;
    struct stat st;
    if (stat(path, &st) != 0)
        return 0;
    if (st.st_uid == uid)
        return (st.st_mode & (S_IWUSR | S_IXUSR)) == (S_IWUSR | S_IXUSR);
    if (st.st_gid == gid)
        return (st.st_mode & (S_IWGRP | S_IXGRP)) == (S_IWGRP | S_IXGRP);
    return (st.st_mode & (S_IWOTH | S_IXOTH)) == (S_IWOTH | S_IXOTH);
}

int master_queue_writable(const char *queue_dir, int privileged, unsigned uid, unsigned gid, struct buf *why)
{
    int status = 0;
    struct statvfs vfs;
    if (statvfs(queue_dir, &vfs) == 0 && (vfs.f_flag & ST_RDONLY)) {
        buf_printf(why, "queue directory %s is on a read-only file system\n", queue_dir);
        return -1;
    }
    for (int i = 0; i < (int)QDIR_COUNT; i++) {
        char path[4300];
        snprintf(path, sizeof(path), "%s/%s", queue_dir, queue_dir_name((enum queue_dir)i));
        if (!writable(path, privileged, uid, gid)) {
            buf_printf(why, "queue directory %s is not writable: %s\n", path,
                       access(path, F_OK) == 0 ? "permission denied" : strerror(errno));
            status = -1;
        }
    }
    return status;
}
