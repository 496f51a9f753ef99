/*
 * cidr:FILE - Postfix's cidr_table(5): "network/mask result" or "address
 * result", first match wins, with "!network/mask result" and
 * "if network/mask" ... "endif" blocks (Postfix 3.2). Results are literal
 * (no $number). A key that is not an IP address matches nothing, so an
 * access lookup that first tries the client's host name costs one parse.
 */
#include "config.h"

#include <stdlib.h>
#include <string.h>

#include "lib/xalloc.h"
#include "tables/cidr.h"
#include "tables/table_impl.h"
#include "tables/table_pattern.h"

static void *cidr_compile(const char *pattern, const char *flags, int want_captures,
                          size_t *ngroups, char **error)
{
    struct cidr_net net;
    if (cidr_net_parse(pattern, &net, error) != 0)
        return NULL;
    *ngroups = 0;
    struct cidr_net *copy = xmalloc(sizeof(*copy));
    *copy = net;
    return copy;
}

static const void *cidr_prepare(const char *key, petrel_pool *scratch)
{
    struct cidr_addr addr;
    if (cidr_addr_parse(key, &addr) != 0)
        return NULL;
    return petrel_pool_memdup(scratch, &addr, sizeof(addr));
}

static int cidr_exec(void *compiled, const void *subject, size_t len, struct tbl_capture *caps,
                     size_t ncaps, char **error)
{
    return cidr_net_contains(compiled, subject);
}

static const struct tbl_pattern_engine cidr_engine = {
    .type_name = "cidr",
    .delimited = 0,
    .second_pattern = 0,
    .substitution = 0,
    .result_required = 1,
    .compile = cidr_compile,
    .prepare = cidr_prepare,
    .exec = cidr_exec,
    .free = free,
};

static void *cidr_open(const char *name, int flags, petrel_pool *pool, char **error)
{
    return tbl_pattern_load(&cidr_engine, name, flags, pool, error);
}

static int cidr_lookup(void *handle, const char *key, const char **value, petrel_pool *scratch)
{
    return tbl_pattern_lookup(handle, key, value, scratch);
}

static void cidr_close(void *handle)
{
    tbl_pattern_free(handle);
}

const struct tbl_type tbl_type_cidr = {
    .name = "cidr",
    .open = cidr_open,
    .lookup = cidr_lookup,
    .close = cidr_close,
    .flags = TBL_TYPE_PATTERN,
};
