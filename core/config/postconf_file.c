/*
 * Writing a configuration file for petrelctl config (main.cf edits in
 * postconf.c, master.cf edits in postconf_master.c): the new text goes to
 * a temporary file beside the old one, keeps its mode, is fsynced and
 * renamed over it, so petreld (a reload) or an editor reads the old text or
 * the new, never half of one.
 */
#include "config.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "config/postconf_int.h"
#include "lib/xalloc.h"

/* Replaces path with what emit writes: a temporary file next to it, the
 * old file's mode, fsync, then rename, so an editor or petreld reading the
 * file sees the old or the new text, never half of one. */
int postconf_replace_file(const char *path, void (*emit)(FILE *fp, void *arg), void *arg)
{
    char *tmp = xasprintf("%s.tmpXXXXXX", path);
    int fd = mkstemp(tmp);
    if (fd < 0) {
        fprintf(stderr, "petrelctl: error: create %s: %s\n", tmp, strerror(errno));
        free(tmp);
        return -1;
    }
    struct stat st;
    (void)fchmod(fd, stat(path, &st) == 0 ? st.st_mode & 07777 : 0644);
    FILE *fp = fdopen(fd, "w");
    if (fp == NULL) {
        fprintf(stderr, "petrelctl: error: write %s: %s\n", tmp, strerror(errno));
        close(fd);
        unlink(tmp);
        free(tmp);
        return -1;
    }
    emit(fp, arg);
    int failed = fflush(fp) != 0 || fsync(fd) != 0;
    failed |= fclose(fp) != 0;
    if (failed || rename(tmp, path) < 0) {
        fprintf(stderr, "petrelctl: error: write %s: %s\n", path, strerror(errno));
        unlink(tmp);
        free(tmp);
        return -1;
    }
    free(tmp);
    return 0;
}
