/*
 * What a role process forked from the master closes of the master's
 * descriptors that libevent's objects hold (the metrics endpoint's sockets,
 * the control socket's connections): one walk of /proc/self/fd, each open
 * descriptor shown to the caller's test. Its own file so that http.c and
 * spawn.c, which each know one kind, both call it (spawn.c calls http.c).
 */
#include "config.h"

#include <dirent.h>
#include <stdlib.h>
#include <unistd.h>

#include "master/master_int.h"

void master_close_fds_matching(int (*match)(int fd, void *arg), void *arg)
{
    DIR *dir = opendir("/proc/self/fd");
    if (dir == NULL)
        return;
    int own = dirfd(dir);
    struct dirent *e;
    while ((e = readdir(dir)) != NULL) {
        char *end;
        long fd = strtol(e->d_name, &end, 10);
        if (*end != '\0' || end == e->d_name || fd == own)
            continue;
        if (match((int)fd, arg))
            close((int)fd);
    }
    closedir(dir);
}
