/*
 * Private helpers shared by the built-in table types (not for modules: they
 * see only the public plugin API). The file reader implements Postfix's
 * logical lines (readllines): '#' comment lines and blank lines are skipped
 * anywhere, and a line that starts with white space continues the previous
 * one. Every read is bounded, so a corrupt or hostile file costs at most
 * TBL_LINE_MAX bytes of memory per line.
 */
#ifndef PETREL_TABLES_TABLE_IMPL_H
#define PETREL_TABLES_TABLE_IMPL_H

#include <stdio.h>

#include <petrel/pool.h>
#include "lib/buf.h"
#include "tables/table.h"

#define TBL_LINE_MAX (64 * 1024)

/* A malloc'd formatted string, for the char **error convention. */
char *tbl_strprintf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* Case folding of fixed-string keys, as Postfix with smtputf8_enable =
 * yes: ASCII letters lowercased and, when s is valid UTF-8 that is not all
 * ASCII, Unicode full case folding (ICU's U_FOLD_CASE_DEFAULT, as Postfix's
 * casefold: "JÜRGEN" and "jürgen" are one key, "Straße" is "strasse").
 * Text that is not UTF-8 gets its ASCII letters lowercased only. The result
 * may be longer than s. tbl_fold copies into pool; tbl_fold_malloc returns
 * memory the caller frees. */
char *tbl_fold(petrel_pool *pool, const char *s);
char *tbl_fold_malloc(const char *s);
/* Strips leading and trailing white space in place; returns the new start. */
char *tbl_trim(char *s);
/* Length of the balanced {...} group that starts at s, 0 when s does not
 * start with '{' or the group is not closed. */
size_t tbl_balanced_braces(const char *s);

struct tbl_file {
    FILE *fp;
    const char *path;     /* as given to tbl_file_open, for warnings */
    struct buf line;      /* the current logical line, NUL-terminated */
    int lineno;           /* where the current logical line starts */
    struct buf pending;   /* a physical line read ahead and not yet used */
    int pending_lineno;
    int have_pending;
    int physical_lineno;
    int borrowed;         /* fp belongs to the caller */
};

/* 0, or -1 with *error = "open PATH: reason". */
int tbl_file_open(struct tbl_file *f, const char *path, char **error);
/* Reads an open stream (standard input); label names it in warnings.
 * tbl_file_close does not close it. Returns 0. */
int tbl_file_open_stream(struct tbl_file *f, FILE *fp, const char *label);
/* 1: next logical line in f->line.data (trailing white space removed);
 * 0: end of file; -1: read error or over-long line, with *error set
 * ("line N: ..."). */
int tbl_file_next(struct tbl_file *f, char **error);
void tbl_file_close(struct tbl_file *f);

/* Built-in types, registered by tbl_registry_new(). */
extern const struct tbl_type tbl_type_texthash;
extern const struct tbl_type tbl_type_inline;
extern const struct tbl_type tbl_type_static;
extern const struct tbl_type tbl_type_fail;
extern const struct tbl_type tbl_type_regexp;
extern const struct tbl_type tbl_type_pcre;
extern const struct tbl_type tbl_type_cidr;
extern const struct tbl_type tbl_type_unix;
extern const struct tbl_type tbl_type_hash;

#endif
