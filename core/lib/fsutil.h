/* Small file-system helpers shared by roles. */
#ifndef PETREL_LIB_FSUTIL_H
#define PETREL_LIB_FSUTIL_H

#include <sys/types.h>

/* mkdir -p of every directory above path's last component (a trailing '/'
 * counts as part of that component), each created with mode. Errors are
 * left for the caller's own open/mkdir to report. */
void fs_make_parents(const char *path, mode_t mode);

#endif
