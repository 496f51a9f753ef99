/*
 * regexp:FILE - Postfix's regexp_table(5) with POSIX regular expressions:
 * "/pattern/flags result", "!/pattern/ result", "/p1/!/p2/ result" (match
 * p1 but not p2), "if /pattern/" ... "endif", $1..$99 in results. Flags
 * toggle regcomp options from the default "extended, case-insensitive":
 * i (case), x (extended; so "x" means basic regular expressions), m
 * (REG_NEWLINE). The file language is shared with pcre: and cidr: (see
 * table_pattern.c); this file only compiles and runs one pattern.
 */
#include "config.h"

#include <regex.h>
#include <stdlib.h>
#include <string.h>

#include "lib/xalloc.h"
#include "tables/table_impl.h"
#include "tables/table_pattern.h"

static void *regexp_compile(const char *pattern, const char *flags, int want_captures,
                            size_t *ngroups, char **error)
{
    int options = REG_EXTENDED | REG_ICASE;
    for (const char *f = flags; *f; f++) {
        switch (*f) {
        case 'i':
            options ^= REG_ICASE;
            break;
        case 'm':
            options ^= REG_NEWLINE;
            break;
        case 'x':
            options ^= REG_EXTENDED;
            break;
        default:
            *error = tbl_strprintf("unknown regexp option \"%c\" (regexp: knows i, m, x)", *f);
            return NULL;
        }
    }
    if (!want_captures)
        options |= REG_NOSUB;
    regex_t *expr = xmalloc(sizeof(*expr));
    int status = regcomp(expr, pattern, options);
    if (status != 0) {
        char text[256];
        regerror(status, expr, text, sizeof(text));
        *error = tbl_strprintf("bad regular expression \"%s\": %s", pattern, text);
        free(expr);
        return NULL;
    }
    *ngroups = expr->re_nsub;
    return expr;
}

static int regexp_exec(void *compiled, const void *subject, size_t len, struct tbl_capture *caps,
                       size_t ncaps, char **error)
{
    regmatch_t match[TBL_MAX_SUBST + 1];
    int status = regexec(compiled, subject, ncaps, ncaps ? match : NULL, 0);
    if (status == REG_NOMATCH)
        return 0;
    if (status != 0) {
        char text[256];
        regerror(status, compiled, text, sizeof(text));
        *error = tbl_strprintf("regexec: %s", text);
        return -1;
    }
    for (size_t i = 0; i < ncaps; i++) {
        caps[i].start = match[i].rm_so;
        caps[i].end = match[i].rm_eo;
    }
    return 1;
}

static void regexp_free(void *compiled)
{
    regfree(compiled);
    free(compiled);
}

static const struct tbl_pattern_engine regexp_engine = {
    .type_name = "regexp",
    .delimited = 1,
    .second_pattern = 1,
    .substitution = 1,
    .result_required = 0,
    .compile = regexp_compile,
    .exec = regexp_exec,
    .free = regexp_free,
};

static void *regexp_open(const char *name, int flags, petrel_pool *pool, char **error)
{
    return tbl_pattern_load(&regexp_engine, name, flags, pool, error);
}

static int regexp_lookup(void *handle, const char *key, const char **value, petrel_pool *scratch)
{
    return tbl_pattern_lookup(handle, key, value, scratch);
}

static void regexp_close(void *handle)
{
    tbl_pattern_free(handle);
}

const struct tbl_type tbl_type_regexp = {
    .name = "regexp",
    .open = regexp_open,
    .lookup = regexp_lookup,
    .close = regexp_close,
    .flags = TBL_TYPE_PATTERN,
};
