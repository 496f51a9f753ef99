/*
 * sanitizer-probe: commits, on request, exactly one of the faults the
 * sanitizer build must catch, so that t/integration/test_sanitizer_net.py
 * can show that a report from any process of a test reaches the harness and
 * fails the test. It is a test tool: never installed, never run by petreld.
 *
 *   sanitizer-probe heap-overflow | use-after-free | shift | leak | clean
 *
 * The faults sit behind volatile values so that the compiler cannot prove
 * them and drop or reject them.
 */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static volatile int index_past_end = 16;
static volatile int shift_by = 40;
static void *volatile sink;

int main(int argc, char **argv)
{
    const char *what = argc > 1 ? argv[1] : "";
    if (strcmp(what, "heap-overflow") == 0) {
        sink = malloc(16);
        ((char *)sink)[index_past_end] = 'x';
        free(sink);
    } else if (strcmp(what, "use-after-free") == 0) {
        sink = malloc(16);
        free(sink);
        printf("%d\n", ((char *)sink)[index_past_end - 16]);
    } else if (strcmp(what, "shift") == 0) {
        int one = 1;
        printf("%d\n", one << shift_by);
    } else if (strcmp(what, "leak") == 0) {
        sink = malloc(100);
        sink = NULL;   /* the only pointer to it is gone */
    } else if (strcmp(what, "clean") != 0) {
        fprintf(stderr, "usage: sanitizer-probe heap-overflow|use-after-free|shift|leak|clean\n");
        return 2;
    }
    return 0;
}
