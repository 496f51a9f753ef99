/*
 * inline:{ key=value, { key = value with spaces }, ... } - Postfix 3.0's
 * table written in the spec itself (dict_inline). Elements are separated by
 * commas and/or white space; an element in braces may contain both, with
 * white space around '=' and the value trimmed. A repeated key takes the
 * later value (Postfix does no duplicate check here). An empty table or a
 * malformed element is an error naming the spec, never a silent empty map.
 */
#include "config.h"

#include <stdlib.h>
#include <string.h>

#include "lib/xalloc.h"
#include "tables/strmap.h"
#include "tables/table_impl.h"

static int is_sep(char c)
{
    return c == ',' || c == ' ' || c == '\t' || c == '\r' || c == '\n' || c == '\f' || c == '\v';
}

/* Next element separated by commas/white space outside braces, in place. */
static char *next_element(char **cursor)
{
    char *p = *cursor;
    while (*p && is_sep(*p))
        p++;
    if (*p == '\0') {
        *cursor = p;
        return NULL;
    }
    char *start = p;
    int depth = 0;
    for (; *p; p++) {
        if (*p == '{')
            depth++;
        else if (*p == '}' && depth > 0)
            depth--;
        else if (depth == 0 && is_sep(*p))
            break;
    }
    if (*p)
        *p++ = '\0';
    *cursor = p;
    return start;
}

/* Postfix's split_nameval: "name = value", blanks around '=' allowed. */
static const char *split_nameval(char *text, char **name, char **value)
{
    char *np = text;
    while (*np == ' ' || *np == '\t')
        np++;
    if (*np == '\0')
        return "missing attribute name";
    char *ep = np;
    while (*ep && *ep != '=' && *ep != ' ' && *ep != '\t')
        ep++;
    char *cp = ep;
    while (*cp == ' ' || *cp == '\t')
        cp++;
    if (*cp != '=')
        return "missing '=' after attribute name";
    *ep = '\0';
    *name = np;
    *value = tbl_trim(cp + 1);
    return NULL;
}

static void *inline_open(const char *name, int flags, petrel_pool *pool, char **error)
{
    size_t len = tbl_balanced_braces(name);
    if (len == 0 || name[len] != '\0' || len < 2) {
        *error = tbl_strprintf("bad syntax: \"inline:%s\"; need \"inline:{name=value...}\"", name);
        return NULL;
    }
    char *inner = xstrndup(name + 1, len - 2);
    struct strmap *map = strmap_new(pool);
    const char *why = NULL;
    char *cursor = inner, *element;
    while (why == NULL && (element = next_element(&cursor)) != NULL) {
        if (element[0] == '{') {
            size_t elen = tbl_balanced_braces(element);
            if (elen == 0) {
                why = "missing '}'";
                break;
            }
            if (element[elen] != '\0') {
                why = "syntax error after '}'";
                break;
            }
            element[elen - 1] = '\0';
            element = tbl_trim(element + 1);
        }
        char *key, *value;
        if ((why = split_nameval(element, &key, &value)) != NULL)
            break;
        if (flags & TBL_FLAG_FOLD_CASE)
            key = tbl_fold(pool, key);
        strmap_put(map, key, value, 1);
    }
    free(inner);
    if (why == NULL && strmap_count(map) == 0)
        why = "empty table";
    if (why) {
        *error = tbl_strprintf("%s: \"inline:%s\"; need \"inline:{name=value...}\"", why, name);
        return NULL;
    }
    return map;
}

static int inline_lookup(void *handle, const char *key, const char **value, petrel_pool *scratch)
{
    *value = strmap_get(handle, key);
    return *value ? TBL_FOUND : TBL_NOTFOUND;
}

static void inline_close(void *handle)
{
    (void)handle;
}

const struct tbl_type tbl_type_inline = {
    .name = "inline",
    .open = inline_open,
    .lookup = inline_lookup,
    .close = inline_close,
    .flags = 0,
};
