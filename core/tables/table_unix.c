/*
 * unix:passwd.byname and unix:group.byname: the system's user and group
 * databases as tables (Postfix's dict_unix), through getpwnam_r/getgrnam_r,
 * so whatever NSS is configured answers. local_recipient_maps uses
 * unix:passwd.byname by default to know which local users exist.
 *
 * Values are Postfix's: "name:passwd:uid:gid:gecos:dir:shell" for passwd,
 * "name:passwd:gid:member,member" for group. A database that cannot be
 * read is an error (the caller defers), never "no such user".
 */
#include "config.h"

#include <errno.h>
#include <grp.h>
#include <pwd.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>

#include "lib/buf.h"
#include "lib/log.h"
#include "tables/table_impl.h"

enum unix_map { UNIX_PASSWD, UNIX_GROUP };

static void *unix_open(const char *name, int flags, petrel_pool *pool, char **error)
{
    (void)flags;
    enum unix_map *which = petrel_pool_alloc(pool, sizeof(*which));
    if (strcmp(name, "passwd.byname") == 0)
        *which = UNIX_PASSWD;
    else if (strcmp(name, "group.byname") == 0)
        *which = UNIX_GROUP;
    else {
        *error = tbl_strprintf("unknown table: unix:%s (use unix:passwd.byname or unix:group.byname)", name);
        return NULL;
    }
    return which;
}

/* getpwnam_r/getgrnam_r "not found" answers: 0 with no entry, or one of
 * the errors POSIX lists for an unknown name. */
static int not_found_errno(int e)
{
    return e == 0 || e == ENOENT || e == ESRCH || e == EBADF || e == EPERM;
}

static int unix_lookup(void *handle, const char *key, const char **value, petrel_pool *scratch)
{
    enum unix_map which = *(enum unix_map *)handle;
    size_t size = 1024;
    for (;;) {
        char *buf = petrel_pool_alloc(scratch, size);
        int e;
        if (which == UNIX_PASSWD) {
            struct passwd pw, *found = NULL;
            e = getpwnam_r(key, &pw, buf, size, &found);
            if (e == 0 && found) {
                *value = petrel_pool_printf(scratch, "%s:%s:%ld:%ld:%s:%s:%s", pw.pw_name, pw.pw_passwd,
                                            (long)pw.pw_uid, (long)pw.pw_gid, pw.pw_gecos, pw.pw_dir,
                                            pw.pw_shell);
                return TBL_FOUND;
            }
        } else {
            struct group gr, *found = NULL;
            e = getgrnam_r(key, &gr, buf, size, &found);
            if (e == 0 && found) {
                struct buf b = BUF_INIT;
                buf_printf(&b, "%s:%s:%ld:", gr.gr_name, gr.gr_passwd, (long)gr.gr_gid);
                for (char **m = gr.gr_mem; m && *m; m++)
                    buf_printf(&b, "%s%s", m == gr.gr_mem ? "" : ",", *m);
                *value = petrel_pool_strdup(scratch, b.data);
                buf_free(&b);
                return TBL_FOUND;
            }
        }
        if (e == ERANGE && size < 1024 * 1024) {
            size *= 4;
            continue;
        }
        if (not_found_errno(e))
            return TBL_NOTFOUND;
        msg_warn("unix:%s: cannot read the system's %s database: %s",
                 which == UNIX_PASSWD ? "passwd.byname" : "group.byname",
                 which == UNIX_PASSWD ? "user" : "group", strerror(e));
        return TBL_ERROR;
    }
}

static void unix_close(void *handle)
{
    (void)handle;
}

const struct tbl_type tbl_type_unix = {
    .name = "unix",
    .open = unix_open,
    .lookup = unix_lookup,
    .close = unix_close,
    .flags = 0,
};
