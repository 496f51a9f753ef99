/*
 * Table lists (see maps.h). The tables are opened once, when a role builds
 * its settings, so that a bad table stops the start instead of the first
 * message.
 *
 * Alias tables (alias_maps, and its items where another list repeats them,
 * such as local_recipient_maps = ... $alias_maps) name the commands and
 * files that mail may be delivered to. Postfix runs those as the owner of
 * the alias database when that is not root; Petrel always runs them as
 * default_privs (core/qmgr/route.c), so an alias table owned by someone
 * else is warned about rather than silently treated differently, and so is
 * one that group or others may write.
 */
#include "config.h"

#include <stdio.h>
#include <errno.h>
#include <pwd.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "config/cfg.h"
#include "lib/log.h"
#include "lib/xalloc.h"
#include "mail/maps.h"
#include "tables/table.h"

static int default_alias_item(const struct cfg *cfg, const char *spec)
{
    if (!cfg_is_default(cfg, "alias_maps"))
        return 0;
    for (const char *const *item = cfg_list(cfg, "alias_maps"); *item; item++)
        if (strcmp(*item, spec) == 0)
            return 1;
    return 0;
}

/* Maps whose result is a mailbox path, a user or group ID or a next hop:
 * no result may copy text from the address ($1), as Postfix opens them with
 * DICT_FLAG_NO_REGSUB ("that would open a security hole", virtual(8)). */
static int no_substitution(const char *param)
{
    static const char *const names[] = { "virtual_mailbox_maps", "virtual_uid_maps", "virtual_gid_maps",
                                         "transport_maps", "sender_dependent_relayhost_maps", NULL };
    for (const char *const *n = names; *n; n++)
        if (strcmp(param, *n) == 0)
            return 1;
    return 0;
}

static int in_list(const char *const *list, const char *spec)
{
    for (; *list; list++)
        if (strcmp(*list, spec) == 0)
            return 1;
    return 0;
}

/* The default alias table on a system that has no aliases file at all:
 * neither NAME nor its compiled file exists. */
static int no_aliases_file(struct tbl_registry *reg, const char *spec)
{
    char *compiled = tbl_compiled_path(reg, spec, NULL);
    if (compiled == NULL)
        return 0;
    const char *name = strchr(strncmp(spec, "proxy:", 6) == 0 ? spec + 6 : spec, ':') + 1;
    int none = access(compiled, F_OK) != 0 && errno == ENOENT && access(name, F_OK) != 0 && errno == ENOENT;
    free(compiled);
    return none;
}

/* See the comment at the top: who may write it, and whose it is. */
static void check_alias_table(const struct cfg *cfg, const char *param, struct tbl *t)
{
    const char *file = tbl_data_file(t);
    struct stat st;
    if (file == NULL || stat(file, &st) != 0)
        return;
    if (st.st_mode & (S_IWGRP | S_IWOTH))
        msg_warn("%s: %s: %s is writable by group or others (mode %04o): whoever can write it decides which "
                 "commands and files mail is delivered to", param, tbl_spec(t), file, (unsigned)(st.st_mode & 07777));
    if (geteuid() == 0 && st.st_uid != 0) {
        struct passwd *pw = getpwuid(st.st_uid);
        msg_warn("%s: %s: %s is owned by %s (uid %ld): Postfix would run the commands and file deliveries it "
                 "names as that user; Petrel runs them as default_privs (%s)", param, tbl_spec(t), file,
                 pw ? pw->pw_name : "an unknown user", (long)st.st_uid, cfg_get(cfg, "default_privs"));
    }
}

int mail_maps_open(struct mail_maps *m, const struct cfg *cfg, struct tbl_registry *reg, const char *param,
                   int flags, char **error)
{
    const char *const *specs = cfg_list(cfg, param);
    size_t n = 0;
    while (specs[n])
        n++;
    m->param = param;
    m->tables = xcalloc(n ? n : 1, sizeof(*m->tables));
    m->n = 0;
    const char *const *alias_specs = cfg_list(cfg, "alias_maps");
    int failed = 0;
    for (size_t i = 0; i < n; i++) {
        char *why = NULL;
        int alias_table = strcmp(param, "alias_maps") == 0 || in_list(alias_specs, specs[i]);
        int open_flags = TBL_FLAG_FOLD_CASE | (alias_table ? TBL_FLAG_ALIASES : 0) |
                         (no_substitution(param) ? TBL_FLAG_NO_REGSUB : 0) |
                         ((flags & MAIL_MAPS_QUIET) ? TBL_FLAG_QUIET : 0);
        struct tbl *t = tbl_open(reg, specs[i], open_flags, &why);
        if (t == NULL) {
            if ((flags & MAIL_MAPS_DEFAULT_ALIASES_OPTIONAL) && default_alias_item(cfg, specs[i]) &&
                no_aliases_file(reg, specs[i])) {
                if (!(flags & MAIL_MAPS_QUIET))
                    msg_warn("%s: %s: there is no aliases file: local aliases are not used, mail goes to the "
                             "users themselves (create the file and run `petrelctl newaliases`, or set alias_maps)",
                             param, specs[i]);
                free(why);
                continue;
            }
            char *line = xasprintf("%s: %s", param, why ? why : "cannot open table");
            xappend_line(error, line);
            free(line);
            free(why);
            failed = 1;
            continue;
        }
        if (alias_table && !(flags & MAIL_MAPS_QUIET))
            check_alias_table(cfg, param, t);
        m->tables[m->n++] = t;
    }
    if (failed) {
        mail_maps_close(m);
        return -1;
    }
    return 0;
}

void mail_maps_close(struct mail_maps *m)
{
    for (size_t i = 0; i < m->n; i++)
        tbl_close(m->tables[i]);
    free(m->tables);
    m->tables = NULL;
    m->n = 0;
}

static int maps_get(struct mail_maps *m, const char *key, int partial, petrel_pool *pool, const char **value)
{
    for (size_t i = 0; i < m->n; i++) {
        const char *v;
        if (partial && tbl_is_pattern(m->tables[i]))
            continue;
        int rc = tbl_lookup(m->tables[i], key, &v);
        if (rc == TBL_PENDING)
            return -1;   /* a remote table will answer: the caller's step is run again (tables/table.h) */
        if (rc == TBL_ERROR) {
            msg_warn("%s: %s: lookup error for \"%s\"", m->param, tbl_spec(m->tables[i]), key);
            return -1;
        }
        if (rc == TBL_FOUND) {
            *value = petrel_pool_strdup(pool, v);
            return 1;
        }
    }
    return 0;
}

int mail_maps_get(struct mail_maps *m, const char *key, petrel_pool *pool, const char **value)
{
    return maps_get(m, key, 0, pool, value);
}

int mail_maps_get_partial(struct mail_maps *m, const char *key, petrel_pool *pool, const char **value)
{
    return maps_get(m, key, 1, pool, value);
}
