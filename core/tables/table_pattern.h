/*
 * The rule engine shared by the pattern table types (regexp:, pcre:,
 * cidr:). They share Postfix's file language - "PATTERN result",
 * "!PATTERN result", "if PATTERN" ... "endif" blocks that nest, logical
 * lines - and differ only in how one pattern is compiled and matched, which
 * a type supplies as a struct tbl_pattern_engine. First match wins.
 *
 * Stricter than Postfix on purpose: where Postfix logs a warning and skips a
 * rule (bad pattern, unknown flag, bad $number, text after "if PATTERN",
 * which is what indenting the rules inside an if block produces), opening
 * fails with the line number, because a silently dropped reject rule is
 * worse than a refused configuration.
 */
#ifndef PETREL_TABLES_TABLE_PATTERN_H
#define PETREL_TABLES_TABLE_PATTERN_H

#include <stddef.h>

#include <petrel/pool.h>

/* Offsets of a matched group in the subject; -1 when it took no part. */
struct tbl_capture {
    long start;
    long end;
};

#define TBL_MAX_SUBST 99   /* highest $number accepted in a result */

struct tbl_pattern_engine {
    const char *type_name;     /* "regexp", for messages */
    int delimited;             /* /pattern/flags (1) or a bare word (0) */
    int second_pattern;        /* regexp's legacy "/p1/!/p2/ result" form */
    int substitution;          /* results may use $1..$99 */
    int result_required;       /* an empty result is an error, not "" */
    /* Compiles one pattern with its flag letters. want_captures is 0 when no
     * group offsets will be asked for. Sets *ngroups. On failure returns NULL
     * with *error (malloc'd, without a line number). */
    void *(*compile)(const char *pattern, const char *flags, int want_captures, size_t *ngroups,
                     char **error);
    /* Optional: converts the key once per lookup (cidr parses the address).
     * Returning NULL means "cannot match anything": the lookup is NOTFOUND. */
    const void *(*prepare)(const char *key, petrel_pool *scratch);
    /* 1 match, 0 no match, -1 error (*error malloc'd). Fills caps[0..ncaps-1]
     * when ncaps > 0. subject is the prepared key when prepare is set. */
    int (*exec)(void *compiled, const void *subject, size_t subject_len, struct tbl_capture *caps,
                size_t ncaps, char **error);
    void (*free)(void *compiled);
};

struct tbl_pattern_table;

/* Reads and compiles PATH; NULL with *error "line N: ..." or "open ...".
 * flags: the TBL_FLAG_* the table is opened with (TBL_FLAG_NO_REGSUB). */
struct tbl_pattern_table *tbl_pattern_load(const struct tbl_pattern_engine *engine,
                                           const char *path, int flags, petrel_pool *pool, char **error);
int tbl_pattern_lookup(struct tbl_pattern_table *table, const char *key, const char **value,
                       petrel_pool *scratch);
void tbl_pattern_free(struct tbl_pattern_table *table);

#endif
