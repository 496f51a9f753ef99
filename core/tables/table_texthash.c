/*
 * texthash:FILE - Postfix's texthash: a text file of "key whitespace value"
 * lines read into memory, the same input postmap(1) compiles into a hash:
 * table, so a texthash: file can later be built into hash: or lmdb: as is.
 *
 * Format (dict_thash, postmap): logical lines as in table_impl.h; the key
 * ends at the first white space outside double quotes and keeps its quotes;
 * the value is the rest with surrounding white space removed
 * (tbl_source_split). A line with no value is ignored with a warning, and a
 * repeated key keeps its first value with a warning, as postmap does.
 */
#include "config.h"

#include <stdlib.h>
#include <string.h>

#include "lib/log.h"
#include "tables/strmap.h"
#include "tables/table_source.h"
#include "tables/table_impl.h"

struct texthash {
    struct strmap *map;
};

static void *texthash_open(const char *name, int flags, petrel_pool *pool, char **error)
{
    struct tbl_file file;
    if (tbl_file_open(&file, name, error) != 0)
        return NULL;
    struct texthash *th = petrel_pool_zalloc(pool, sizeof(*th));
    th->map = strmap_new(pool);
    int r;
    while ((r = tbl_file_next(&file, error)) > 0) {
        char *key, *value;
        const char *why;
        if (tbl_source_split(file.line.data, &key, &value, &why) != 0) {
            msg_warn("texthash:%s, line %d: %s -- ignoring this line", name, file.lineno, why);
            continue;
        }
        if (key[strlen(key) - 1] == ':')
            msg_warn("texthash:%s, line %d: record is in \"key: value\" format;"
                     " is this an alias file?", name, file.lineno);
        if (flags & TBL_FLAG_FOLD_CASE)
            key = tbl_fold(pool, key);
        if (strmap_put(th->map, key, value, 0) != 0)
            msg_warn("texthash:%s, line %d: duplicate entry: \"%s\" (the first one is used)",
                     name, file.lineno, key);
    }
    tbl_file_close(&file);
    return r < 0 ? NULL : th;
}

static int texthash_lookup(void *handle, const char *key, const char **value, petrel_pool *scratch)
{
    struct texthash *th = handle;
    *value = strmap_get(th->map, key);
    return *value ? TBL_FOUND : TBL_NOTFOUND;
}

static void texthash_close(void *handle)
{
    (void)handle;   /* everything lives in the handle's pool */
}

const struct tbl_type tbl_type_texthash = {
    .name = "texthash",
    .open = texthash_open,
    .lookup = texthash_lookup,
    .close = texthash_close,
    .reload = NULL,
    .flags = 0,
};
