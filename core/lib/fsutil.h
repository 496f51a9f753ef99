/* Small file-system helpers shared by roles. */
#ifndef PETREL_LIB_FSUTIL_H
#define PETREL_LIB_FSUTIL_H

#include <sys/types.h>

/* mkdir -p of every directory above path's last component (a trailing '/'
 * counts as part of that component), each created with mode. Each
 * directory it creates is made durable before the next one is made: the
 * directory holding the new entry is fsynced (a mailbox created under a
 * new directory must not vanish in a crash after the delivery was
 * reported). Returns 0, or -1 with errno when such an fsync failed.
 * Failures to create are left for the caller's own open/mkdir to report
 * (with a better message). */
int fs_make_parents(const char *path, mode_t mode);

/* fsync(2) of the directory path names. 0 or -1 with errno. */
int fs_sync_dir(const char *path);
/* fsync(2) of the directory that holds path's last component ("." for a
 * relative name without a slash). 0 or -1 with errno. */
int fs_sync_parent(const char *path);

#endif
