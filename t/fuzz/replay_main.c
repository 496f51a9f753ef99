/*
 * Replay driver for libFuzzer targets, so every fuzz target also runs under
 * `make check` without clang's -fsanitize=fuzzer. Each argument is a file or
 * a directory; every regular file in a directory is fed once to
 * LLVMFuzzerTestOneInput. With no arguments it replays
 * $srcdir/t/fuzz/corpus/<program name without "fuzz_"> (or $top_srcdir)
 * and the reproducers `make fuzz` kept in t/fuzz/crashes/<name>-*, so the
 * make check line needs no arguments. Output is TAP: one line per input,
 * so a crash names the file that caused it.
 *
 * Link this file into a fuzz target only when NOT building with
 * -fsanitize=fuzzer (libFuzzer brings its own main).
 */
#include "config.h"

#include <dirent.h>
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* The replay state lives on main's stack and is passed down. */
struct replay_state {
    int count;
    int failures;
};

static void replay_file(struct replay_state *st, const char *path)
{
    FILE *fp = fopen(path, "rb");
    if (fp == NULL) {
        printf("not ok %d - cannot open %s: %s\n", ++st->count, path, strerror(errno));
        st->failures++;
        return;
    }
    size_t cap = 4096, len = 0;
    uint8_t *data = malloc(cap);
    size_t n;
    while (data != NULL && (n = fread(data + len, 1, cap - len, fp)) > 0) {
        len += n;
        if (len == cap) {
            uint8_t *bigger = realloc(data, cap * 2);
            if (bigger == NULL) {
                free(data);
                data = NULL;
                break;
            }
            data = bigger;
            cap *= 2;
        }
    }
    fclose(fp);
    if (data == NULL) {
        printf("not ok %d - out of memory reading %s\n", ++st->count, path);
        st->failures++;
        return;
    }
    /* A crash or sanitizer report aborts here; returning means success. */
    LLVMFuzzerTestOneInput(data, len);
    free(data);
    printf("ok %d - replay %s (%zu bytes)\n", ++st->count, path, len);
    fflush(stdout);
}

static int compare_names(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static void replay_path(struct replay_state *st, const char *path, const char *prefix, int must_exist)
{
    struct stat sb;
    if (stat(path, &sb) < 0) {
        if (!must_exist)
            return;
        printf("not ok %d - %s: %s\n", ++st->count, path, strerror(errno));
        st->failures++;
        return;
    }
    if (!S_ISDIR(sb.st_mode)) {
        replay_file(st, path);
        return;
    }
    DIR *dir = opendir(path);
    if (dir == NULL) {
        printf("not ok %d - opendir %s: %s\n", ++st->count, path, strerror(errno));
        st->failures++;
        return;
    }
    /* Sorted so that test numbering is stable from run to run. */
    char **names = NULL;
    size_t count = 0, cap = 0;
    struct dirent *de;
    while ((de = readdir(dir)) != NULL) {
        if (de->d_name[0] == '.' || strncmp(de->d_name, prefix, strlen(prefix)) != 0)
            continue;
        if (count == cap) {
            cap = cap ? cap * 2 : 64;
            char **bigger = realloc(names, cap * sizeof *names);
            if (bigger == NULL)
                break;
            names = bigger;
        }
        size_t need = strlen(path) + strlen(de->d_name) + 2;
        names[count] = malloc(need);
        if (names[count] == NULL)
            break;
        snprintf(names[count], need, "%s/%s", path, de->d_name);
        count++;
    }
    closedir(dir);
    if (count > 0)
        qsort(names, count, sizeof *names, compare_names);
    for (size_t i = 0; i < count; i++) {
        if (stat(names[i], &sb) == 0 && S_ISREG(sb.st_mode))
            replay_file(st, names[i]);
        free(names[i]);
    }
    free(names);
}

int main(int argc, char **argv)
{
    struct replay_state st = { 0, 0 };

    if (argc > 1) {
        for (int i = 1; i < argc; i++)
            replay_path(&st, argv[i], "", 1);
    } else {
        const char *srcdir = getenv("srcdir");
        if (srcdir == NULL)
            srcdir = getenv("top_srcdir");
        if (srcdir == NULL)
            srcdir = ".";
        const char *base = strrchr(argv[0], '/');
        base = base ? base + 1 : argv[0];
        /* libtool wrappers run the real binary as "lt-NAME". */
        if (strncmp(base, "lt-", 3) == 0)
            base += 3;
        if (strncmp(base, "fuzz_", 5) == 0)
            base += 5;
        char path[4096], prefix[256];
        snprintf(path, sizeof path, "%s/t/fuzz/corpus/%s", srcdir, base);
        replay_path(&st, path, "", 1);
        snprintf(path, sizeof path, "%s/t/fuzz/crashes", srcdir);
        snprintf(prefix, sizeof prefix, "%s-", base);
        replay_path(&st, path, prefix, 0);
    }
    if (st.count == 0) {
        printf("not ok 1 - no corpus files found\n");
        st.count = st.failures = 1;
    }
    printf("1..%d\n", st.count);
    return st.failures ? 1 : 0;
}
