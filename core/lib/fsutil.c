/* File-system helpers (see fsutil.h). */
#include "config.h"

#include <string.h>
#include <sys/stat.h>

#include "lib/fsutil.h"

void fs_make_parents(const char *path, mode_t mode)
{
    char buf[4096];
    size_t len = strlen(path);
    if (len == 0 || len >= sizeof(buf))
        return;
    memcpy(buf, path, len + 1);
    while (len > 1 && buf[len - 1] == '/')
        buf[--len] = '\0';
    char *last = strrchr(buf, '/');
    if (last == NULL || last == buf)
        return;
    *last = '\0';
    for (char *p = buf + 1; *p; p++) {
        if (*p == '/') {
            *p = '\0';
            mkdir(buf, mode);
            *p = '/';
        }
    }
    mkdir(buf, mode);
}
