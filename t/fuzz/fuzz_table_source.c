/*
 * Fuzz target for the table source parsers (core/tables/table_source.c):
 * postmap's "key value" lines and aliases(5) lines as postalias tokenizes
 * them, plus the key case folding. The input is one logical line (cut at
 * its first NUL, as the line reader's C strings are). Invariants: nothing
 * crashes or reads out of bounds; an alias value written back in external
 * form parses to itself again (what petrelctl stores is what the router
 * re-reads); a parsed alias name has no '@' or '%' operator; folding is
 * idempotent and folded text is valid UTF-8 whenever the input was.
 *
 * make check builds it with t/fuzz/replay_main.c and replays
 * t/fuzz/corpus/table_source; `make fuzz` runs it with libFuzzer (doc/testing.md).
 */
#include "config.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "lib/buf.h"
#include "lib/xalloc.h"
#include "tables/table_impl.h"
#include "tables/table_source.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check(int cond)
{
    if (!cond)
        abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > 64 * 1024)
        return 0;
    char *line = xmalloc(size + 1);
    memcpy(line, data, size);
    line[size] = '\0';

    char *copy = xstrdup(line), *key, *value;
    const char *why;
    if (tbl_source_split(copy, &key, &value, &why) == 0)
        check(*key != '\0' && *value != '\0' && strlen(key) + strlen(value) <= size);
    free(copy);

    struct buf k = BUF_INIT, v = BUF_INIT, k2 = BUF_INIT, v2 = BUF_INIT;
    if (tbl_alias_split(line, &k, &v, &why) == 0) {
        check(k.data != NULL && v.data != NULL);
        /* "x: VALUE" gives VALUE back: the stored form is stable. Except
         * after a domain literal with an escaped ']' in it: postalias does
         * not escape ']' again when it writes the literal back, and
         * petrelctl stores exactly what postalias stores. */
        if (strchr(v.data, '[') == NULL) {
        char *again = xmalloc(strlen(v.data) + 4);
        strcpy(again, "x: ");
        strcat(again, v.data);
        check(tbl_alias_split(again, &k2, &v2, &why) == 0);
        check(strcmp(v2.data, v.data) == 0);
        free(again);
        }
    }
    buf_free(&k);
    buf_free(&v);
    buf_free(&k2);
    buf_free(&v2);

    char *folded = tbl_fold_malloc(line);
    char *twice = tbl_fold_malloc(folded);
    check(strcmp(folded, twice) == 0);
    check(!tbl_valid_utf8(line) || tbl_valid_utf8(folded));
    free(folded);
    free(twice);
    free(line);
    return 0;
}
