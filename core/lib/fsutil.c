/* File-system helpers (see fsutil.h). */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "lib/fsutil.h"

int fs_sync_dir(const char *path)
{
    int fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    int rc = fsync(fd);
    int err = errno;
    close(fd);
    errno = err;
    return rc;
}

int fs_sync_parent(const char *path)
{
    char buf[4096];
    size_t len = strlen(path);
    if (len >= sizeof(buf)) {
        errno = ENAMETOOLONG;
        return -1;
    }
    memcpy(buf, path, len + 1);
    while (len > 1 && buf[len - 1] == '/')
        buf[--len] = '\0';
    char *last = strrchr(buf, '/');
    if (last == NULL)
        return fs_sync_dir(".");
    if (last == buf)
        last[1] = '\0';   /* "/name": the root */
    else
        *last = '\0';
    return fs_sync_dir(buf);
}

int fs_make_parents(const char *path, mode_t mode)
{
    char buf[4096];
    size_t len = strlen(path);
    if (len == 0 || len >= sizeof(buf))
        return 0;
    memcpy(buf, path, len + 1);
    while (len > 1 && buf[len - 1] == '/')
        buf[--len] = '\0';
    char *last = strrchr(buf, '/');
    if (last == NULL || last == buf)
        return 0;
    *last = '\0';
    /* Top down: a directory is made durable in its parent before anything
     * is created inside it. */
    for (char *p = buf + 1;; p++) {
        if (*p != '/' && *p != '\0')
            continue;
        char saved = *p;
        *p = '\0';
        if (mkdir(buf, mode) == 0 && fs_sync_parent(buf) < 0)
            return -1;
        if (saved == '\0')
            break;
        *p = saved;
    }
    return 0;
}
