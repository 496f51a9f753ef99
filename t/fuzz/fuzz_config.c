/*
 * Fuzz target for the configuration language (core/config): main.cf with
 * its continuation lines, $name / ${name?x} / ${name:x} / {..} expansion and
 * typed validation; master.cf with its columns and -o overrides (each
 * service's own re-expanded configuration); and postconf's in-place edit
 * (`petrelctl config name=value`).
 *
 * Input: main.cf, then a line "%%", then master.cf, then a line "%%", then
 * one "name=value" edit (each part optional).
 *
 * Properties, beyond "no crash, no leak, no hang" (expansion loops and
 * nesting are bounded):
 *  - a load either succeeds or counts its errors; every value of every
 *    known parameter can be read back, lists are NULL-terminated arrays of
 *    strings, and each service's configuration too;
 *  - parse-then-serialise: writing every parameter main.cf set back as
 *    "name = raw" (as postconf -n prints them) and loading that gives the
 *    same raw and expanded values, and the same number of errors;
 *  - an edit of a valid name either fails or is read back exactly as given
 *    (trimmed), and changes no other parameter.
 *
 * make check builds it with t/fuzz/replay_main.c and replays
 * t/fuzz/corpus/config; `make fuzz` runs it with libFuzzer (doc/testing.md).
 */
#include "config.h"

#include <fcntl.h>
#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "config/cfg.h"
#include "config/config_impl.h"
#include "lib/buf.h"
#include "lib/log.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

struct fuzz_conf {
    char dir[256];
    struct cfg_schema *schema;
    int devnull;
};

/* The scratch directory goes when the process exits (replay or fuzzer). */
static char scratch_dir[256];

static void remove_scratch(void)
{
    DIR *d = opendir(scratch_dir);
    if (d == NULL)
        return;
    struct dirent *de;
    while ((de = readdir(d)) != NULL)
        if (strcmp(de->d_name, ".") != 0 && strcmp(de->d_name, "..") != 0)
            unlinkat(dirfd(d), de->d_name, 0);
    closedir(d);
    rmdir(scratch_dir);
}

static void check(int cond, const char *what)
{
    if (!cond) {
        fprintf(stderr, "property violated: %s\n", what);
        abort();
    }
}

static struct fuzz_conf *fuzz_conf(void)
{
    /* libFuzzer passes no context: the scratch directory is the harness's state. */
    static struct fuzz_conf fc;
    if (fc.schema)
        return &fc;
    log_init("petrel", "fuzz");
    if (log_use_file("/dev/null") != 0)
        abort();
    const char *tmp = getenv("TMPDIR");
    snprintf(fc.dir, sizeof(fc.dir), "%s/petrel-fuzz-config-XXXXXX", tmp && *tmp ? tmp : "/tmp");
    if (!mkdtemp(fc.dir))
        abort();
    snprintf(scratch_dir, sizeof(scratch_dir), "%s", fc.dir);
    atexit(remove_scratch);
    fc.schema = cfg_schema_new();
    fc.devnull = open("/dev/null", O_WRONLY);
    return &fc;
}

static void write_file(const char *dir, const char *name, const char *text, size_t len)
{
    char path[512];
    snprintf(path, sizeof(path), "%s/%s", dir, name);
    FILE *f = fopen(path, "w");
    if (f == NULL || (len && fwrite(text, 1, len, f) != len) || fclose(f) != 0) {
        perror(path);
        abort();
    }
}

/* Reads every value the way the roles do; returns a digest of (name, raw,
 * value) for comparisons. */
static void walk(const struct cfg *cfg, const struct cfg_schema *schema, struct buf *digest)
{
    for (size_t i = 0; i < cfg_schema_count(schema); i++) {
        const struct cfg_param *p = cfg_schema_param(schema, i);
        const char *raw = cfg_get_raw(cfg, p->name);
        const char *value = cfg_get(cfg, p->name);
        check(raw != NULL && value != NULL, "every known parameter has a raw and an expanded value");
        const char *const *list = cfg_list(cfg, p->name);
        check(list != NULL, "cfg_list never returns NULL");
        size_t items = 0;
        for (; list[items]; items++)
            check(list[items][0] != '\0' || p->type != CFG_LIST, "no empty list item");
        switch (p->type) {
        case CFG_INT:
        case CFG_TIME:
        case CFG_SIZE:
            (void)cfg_int(cfg, p->name);
            break;
        case CFG_BOOL:
            (void)cfg_bool(cfg, p->name);
            break;
        default:
            break;
        }
        if (digest) {
            buf_printf(digest, "%s\n%s\n%s\n%zu\n", p->name, raw, value, items);
        }
    }
}

static struct cfg *load(struct fuzz_conf *fc, int *errors)
{
    int nerrors = 0;
    /* cfg_load logs each problem: the log goes to /dev/null. */
    struct cfg *cfg = cfg_load(fc->schema, fc->dir, &nerrors);
    *errors = nerrors;
    check(cfg != NULL || nerrors > 0, "a failed load counts its errors");
    return cfg;
}

static const char *part(const char **cursor, const char *end, size_t *len)
{
    const char *start = *cursor;
    const char *sep = NULL;
    for (const char *p = start; p + 3 <= end; p++) {
        if ((p == start || p[-1] == '\n') && p[0] == '%' && p[1] == '%' && (p + 2 == end || p[2] == '\n')) {
            sep = p;
            break;
        }
    }
    if (sep == NULL) {
        *len = (size_t)(end - start);
        *cursor = end;
    } else {
        *len = (size_t)(sep - start);
        *cursor = sep + 2 < end ? sep + 3 : end;
    }
    return start;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > 16384)
        return 0;
    struct fuzz_conf *fc = fuzz_conf();
    const char *cursor = (const char *)data, *end = (const char *)data + size;
    size_t main_len, master_len, edit_len;
    const char *main_cf = part(&cursor, end, &main_len);
    const char *master_cf = part(&cursor, end, &master_len);
    const char *edit = part(&cursor, end, &edit_len);
    write_file(fc->dir, "main.cf", main_cf, main_len);
    write_file(fc->dir, "master.cf", master_cf, master_len);

    int errors;
    struct cfg *cfg = load(fc, &errors);
    if (cfg == NULL)
        return 0;
    struct buf first = BUF_INIT;
    walk(cfg, fc->schema, &first);
    for (size_t i = 0; i < cfg_service_count(cfg); i++) {
        const struct master_service *svc = cfg_service(cfg, i);
        check(svc->name && svc->command && svc->argv && svc->cfg, "a service is complete");
        walk(svc->cfg, fc->schema, NULL);
    }

    /* Parse, serialise, parse: the same configuration. */
    struct buf again = BUF_INIT;
    for (size_t i = 0; i < cfg->nvalues; i++) {
        /* every name main.cf set, known or not (postconf -n's list) */
        const struct cfg_value *v = &cfg->values[i];
        if (v->file != NULL)
            buf_printf(&again, "%s = %s\n", v->name, v->raw);
    }
    cfg_free(cfg);
    write_file(fc->dir, "main.cf", again.data ? again.data : "", again.len);
    int errors2;
    struct cfg *cfg2 = load(fc, &errors2);
    check(cfg2 != NULL, "the serialised configuration loads again");
    struct buf second = BUF_INIT;
    walk(cfg2, fc->schema, &second);
    if (first.len != second.len || memcmp(first.data, second.data, first.len) != 0) {
        /* name which value differs */
        const char *a = first.data, *b = second.data;
        size_t k = 0;
        while (k < first.len && k < second.len && a[k] == b[k])
            k++;
        while (k > 0 && a[k - 1] != '\n')
            k--;
        fprintf(stderr, "serialised main.cf differs at: %.200s\nversus: %.200s\n", a + k, b + k);
    }
    check(first.len == second.len && memcmp(first.data, second.data, first.len) == 0,
          "main.cf written back as name = raw gives the same values");
    buf_free(&first);

    /* An edit of a valid name, read back. */
    char *eq = edit_len ? memchr(edit, '=', edit_len) : NULL;
    if (eq != NULL && memchr(edit, '\0', edit_len) == NULL) {
        char *arg = malloc(edit_len + 1);   /* a line break in it is a case to test */
        memcpy(arg, edit, edit_len);
        arg[edit_len] = '\0';
        char *name = strndup(arg, strcspn(arg, "="));
        size_t nl = strlen(name);
        while (nl && (name[nl - 1] == ' ' || name[nl - 1] == '\t'))
            name[--nl] = '\0';
        int valid = nl > 0 && cfg_schema_find(fc->schema, name) != NULL;
        if (valid && strchr(arg, '=') != NULL) {
            char *argv[] = { "config", arg, NULL };
            /* postconf reports on stdout/stderr: keep the fuzzer's output readable */
            fflush(stdout);
            fflush(stderr);
            int saved_out = dup(1), saved_err = dup(2);
            dup2(fc->devnull, 1);
            dup2(fc->devnull, 2);
            int rc = postconf_main(fc->schema, fc->dir, 2, argv);
            fflush(stdout);
            fflush(stderr);
            dup2(saved_out, 1);
            dup2(saved_err, 2);
            close(saved_out);
            close(saved_err);
            if (rc == 0) {
                int errors3;
                struct cfg *cfg3 = load(fc, &errors3);
                if (cfg3 != NULL) {
                    const char *want = strchr(arg, '=') + 1;
                    while (*want && strchr(" \t\r\n\v\f", *want))
                        want++;
                    size_t wl = strlen(want);
                    while (wl && strchr(" \t\r\n\v\f", want[wl - 1]))
                        wl--;
                    /* Checked first: a NULL here would be the fault, not a
                     * NULL printed as the value read back. */
                    const char *got = cfg_get_raw(cfg3, name);
                    check(got != NULL, "an edited parameter is still known");
                    if (strlen(got) != wl || strncmp(got, want, wl) != 0)
                        fprintf(stderr, "edit of %s: read back \"%s\", want \"%.*s\"\n", name, got, (int)wl, want);
                    check(strlen(got) == wl && strncmp(got, want, wl) == 0, "an edited value reads back as given");
                    /* Nothing else changed: every other raw value is the same. */
                    for (size_t i = 0; i < cfg_schema_count(fc->schema); i++) {
                        const char *other = cfg_schema_param(fc->schema, i)->name;
                        if (strcmp(other, name) != 0)
                            check(strcmp(cfg_get_raw(cfg3, other), cfg_get_raw(cfg2, other)) == 0,
                                  "an edit changes no other parameter");
                    }
                    cfg_free(cfg3);
                }
            }
        }
        free(name);
        free(arg);
    }
    cfg_free(cfg2);
    buf_free(&second);
    buf_free(&again);
    return 0;
}
