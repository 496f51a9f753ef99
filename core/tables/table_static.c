/*
 * static:VALUE and static:{ value with spaces } - every key maps to the
 * same value (dict_static). fail:NAME - every lookup fails (dict_fail),
 * which lets tests and admins force the "table unavailable" path.
 */
#include "config.h"

#include <string.h>

#include "tables/table_impl.h"

static void *static_open(const char *name, int flags, petrel_pool *pool, char **error)
{
    if (name[0] != '{')
        return petrel_pool_strdup(pool, name);
    size_t len = tbl_balanced_braces(name);
    if (len == 0 || name[len] != '\0') {
        *error = tbl_strprintf("bad syntax: \"static:%s\"; need \"static:{value}\"", name);
        return NULL;
    }
    char *value = petrel_pool_strndup(pool, name + 1, len - 2);
    return tbl_trim(value);
}

static int static_lookup(void *handle, const char *key, const char **value, petrel_pool *scratch)
{
    *value = handle;
    return TBL_FOUND;
}

static void nothing_to_close(void *handle)
{
    (void)handle;
}

const struct tbl_type tbl_type_static = {
    .name = "static",
    .open = static_open,
    .lookup = static_lookup,
    .close = nothing_to_close,
    .flags = 0,
};

static void *fail_open(const char *name, int flags, petrel_pool *pool, char **error)
{
    return petrel_pool_strdup(pool, name);
}

static int fail_lookup(void *handle, const char *key, const char **value, petrel_pool *scratch)
{
    *value = NULL;
    return TBL_ERROR;
}

/* A pattern type, so access lookups fail on the first query as Postfix's
 * fail: table does, instead of trying every partial key. */
const struct tbl_type tbl_type_fail = {
    .name = "fail",
    .open = fail_open,
    .lookup = fail_lookup,
    .close = nothing_to_close,
    .flags = TBL_TYPE_PATTERN,
};
