/*
 * pcre:FILE - Postfix's pcre_table(5) with PCRE2 (libpcre2-8): the same
 * file language as regexp: (table_pattern.c) minus the /p1/!/p2/ form.
 * Default options are Postfix's: case-insensitive and dot-matches-newline;
 * flags toggle them: i (CASELESS), m (MULTILINE), s (DOTALL), x (EXTENDED),
 * A (ANCHORED), E (DOLLAR_ENDONLY), U (UNGREEDY). X (PCRE1's EXTRA) has no
 * PCRE2 equivalent: accepted with a warning, as Postfix does with PCRE2.
 * Subjects are bytes (no PCRE2_UTF), like Postfix without SMTPUTF8.
 */
#include "config.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>
#include <stdlib.h>
#include <string.h>

#include "lib/log.h"
#include "lib/xalloc.h"
#include "tables/table_impl.h"
#include "tables/table_pattern.h"

struct pcre_expr {
    pcre2_code *code;
    pcre2_match_data *match_data;
};

static void *pcre_compile_one(const char *pattern, const char *flags, int want_captures,
                              size_t *ngroups, char **error)
{
    uint32_t options = PCRE2_CASELESS | PCRE2_DOTALL;
    for (const char *f = flags; *f; f++) {
        switch (*f) {
        case 'i': options ^= PCRE2_CASELESS; break;
        case 'm': options ^= PCRE2_MULTILINE; break;
        case 's': options ^= PCRE2_DOTALL; break;
        case 'x': options ^= PCRE2_EXTENDED; break;
        case 'A': options ^= PCRE2_ANCHORED; break;
        case 'E': options ^= PCRE2_DOLLAR_ENDONLY; break;
        case 'U': options ^= PCRE2_UNGREEDY; break;
        case 'X':
            msg_warn("pcre: ignoring obsolete regexp option \"X\" in /%s/", pattern);
            break;
        default:
            *error = tbl_strprintf("unknown regexp option \"%c\" (pcre: knows i, m, s, x, A, E, U, X)",
                                   *f);
            return NULL;
        }
    }
    int code_error;
    PCRE2_SIZE offset;
    pcre2_code *code = pcre2_compile((PCRE2_SPTR)pattern, PCRE2_ZERO_TERMINATED, options,
                                     &code_error, &offset, NULL);
    if (code == NULL) {
        PCRE2_UCHAR text[256];
        if (pcre2_get_error_message(code_error, text, sizeof(text)) < 0)
            strcpy((char *)text, "unknown error");
        *error = tbl_strprintf("bad regular expression \"%s\" at offset %zu: %s", pattern,
                               (size_t)offset, (const char *)text);
        return NULL;
    }
    uint32_t count = 0;
    pcre2_pattern_info(code, PCRE2_INFO_CAPTURECOUNT, &count);
    *ngroups = count;
    struct pcre_expr *expr = xmalloc(sizeof(*expr));
    expr->code = code;
    expr->match_data = pcre2_match_data_create_from_pattern(code, NULL);
    if (expr->match_data == NULL)
        msg_fatal("pcre2_match_data_create_from_pattern: out of memory");
    return expr;
}

static int pcre_exec_one(void *compiled, const void *subject, size_t len, struct tbl_capture *caps,
                         size_t ncaps, char **error)
{
    struct pcre_expr *expr = compiled;
    int rc = pcre2_match(expr->code, subject, len, 0, 0, expr->match_data, NULL);
    if (rc == PCRE2_ERROR_NOMATCH)
        return 0;
    if (rc < 0) {
        PCRE2_UCHAR text[256];
        if (pcre2_get_error_message(rc, text, sizeof(text)) < 0)
            strcpy((char *)text, "unknown error");
        *error = tbl_strprintf("pcre2_match: %s", (const char *)text);
        return -1;
    }
    PCRE2_SIZE *ovector = pcre2_get_ovector_pointer(expr->match_data);
    uint32_t npairs = pcre2_get_ovector_count(expr->match_data);
    for (size_t i = 0; i < ncaps; i++) {
        /* rc counts the pairs that were set; later groups did not take part. */
        if (i < (size_t)rc && i < npairs && ovector[2 * i] != PCRE2_UNSET) {
            caps[i].start = (long)ovector[2 * i];
            caps[i].end = (long)ovector[2 * i + 1];
        } else {
            caps[i].start = caps[i].end = -1;
        }
    }
    return 1;
}

static void pcre_free_one(void *compiled)
{
    struct pcre_expr *expr = compiled;
    pcre2_match_data_free(expr->match_data);
    pcre2_code_free(expr->code);
    free(expr);
}

static const struct tbl_pattern_engine pcre_engine = {
    .type_name = "pcre",
    .delimited = 1,
    .second_pattern = 0,
    .substitution = 1,
    .result_required = 0,
    .compile = pcre_compile_one,
    .exec = pcre_exec_one,
    .free = pcre_free_one,
};

static void *pcre_open(const char *name, int flags, petrel_pool *pool, char **error)
{
    return tbl_pattern_load(&pcre_engine, name, flags, pool, error);
}

static int pcre_lookup(void *handle, const char *key, const char **value, petrel_pool *scratch)
{
    return tbl_pattern_lookup(handle, key, value, scratch);
}

static void pcre_close(void *handle)
{
    tbl_pattern_free(handle);
}

const struct tbl_type tbl_type_pcre = {
    .name = "pcre",
    .open = pcre_open,
    .lookup = pcre_lookup,
    .close = pcre_close,
    .flags = TBL_TYPE_PATTERN,
};
