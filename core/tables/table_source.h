/*
 * The source formats that compiled tables are built from: postmap(1)'s
 * "key value" lines (also read by texthash:) and postalias(1)'s aliases(5)
 * "name: value, value" lines. Both take one logical line as the bounded
 * reader in table_impl.h returns it (comments, blank lines and
 * continuation lines already handled).
 */
#ifndef PETREL_TABLES_TABLE_SOURCE_H
#define PETREL_TABLES_TABLE_SOURCE_H

#include "lib/buf.h"

/* postmap(1): the key ends at the first white space outside double quotes
 * and keeps its quotes (a backslash escapes the next character); the value
 * is the rest without surrounding white space. Splits line in place.
 * Returns 0, or -1 with *why: "unbalanced '\"'" or "expected format: key
 * whitespace value". */
int tbl_source_split(char *line, char **key, char **value, const char **why);

/* aliases(5), read as postalias(1) reads it: the line is cut into RFC 822
 * tokens, the name is what precedes the first ':' (in its internal,
 * unquoted form: the form the router looks up), the value what follows it,
 * written back in external form (quoted strings keep their quotes, so
 * "|command with spaces" stays one item; items are separated by ", ").
 * Returns 0, or -1 with *why: "need name:value pair" or "name must be local
 * and have no domain". */
int tbl_alias_split(const char *line, struct buf *key, struct buf *value, const char **why);

/* 1 when s is valid UTF-8 (Postfix skips other lines of a source file when
 * smtputf8_enable = yes). */
int tbl_valid_utf8(const char *s);

#endif
