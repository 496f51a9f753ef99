/*
 * Unit tests for the compiled tables of core/tables: hash: (LMDB) read and
 * written through the table layer's builder, the key forms Postfix uses
 * (NUL-terminated or not, case folded), atomic replacement and the reopen
 * of a rebuilt file, errors that name the file and the command that builds
 * it, file permissions taken from the source, and the two source formats
 * (postmap's "key value" lines and aliases(5)). Postfix's own postmap and
 * postalias are compared with in t/integration/test_tables_local.py.
 */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <petrel/pool.h>
#include "lib/buf.h"
#include "lib/xalloc.h"
#include "tables/table.h"
#include "tables/table_impl.h"
#include "tables/table_source.h"
#include "../tap.h"

static char tmpdir[] = "/tmp/petrel-test-tables-file-XXXXXX";
static petrel_pool *test_pool;

static const char *path_of(const char *name)
{
    return petrel_pool_printf(test_pool, "%s/%s", tmpdir, name);
}

static void write_file(const char *path, const char *content, mode_t mode)
{
    FILE *fp = fopen(path, "w");
    if (fp == NULL || fputs(content, fp) < 0 || fclose(fp) != 0 || chmod(path, mode) != 0) {
        perror(path);
        exit(2);
    }
}

static int contains(const char *haystack, const char *needle)
{
    int found = haystack && strstr(haystack, needle) != NULL;
    if (!found)
        printf("# \"%s\" does not contain \"%s\"\n", haystack ? haystack : "(null)", needle);
    return found;
}

static const char *get(struct tbl *t, const char *key)
{
    const char *value;
    int r = tbl_lookup(t, key, &value);
    if (r == TBL_FOUND)
        return petrel_pool_strdup(test_pool, value);
    return r == TBL_NOTFOUND ? "<notfound>" : "<error>";
}

/* Builds spec from "key=value" pairs (NULL-terminated), stored with or
 * without the terminating NUL. Returns 0 or -1 (message printed). */
static int build(struct tbl_registry *reg, const char *spec, const char *const *pairs, int nul)
{
    char *error = NULL;
    struct tbl_build *b = tbl_build_begin(reg, spec, NULL, &error);
    if (b == NULL) {
        printf("# build %s: %s\n", spec, error);
        free(error);
        return -1;
    }
    for (size_t i = 0; pairs[i]; i++) {
        const char *eq = strchr(pairs[i], '=');
        char *key = xstrndup(pairs[i], (size_t)(eq - pairs[i]));
        if (tbl_build_put(b, key, strlen(key) + (size_t)nul, eq + 1, strlen(eq + 1) + (size_t)nul, 0, &error) < 0) {
            printf("# put %s: %s\n", key, error);
            free(error);
            free(key);
            tbl_build_abort(b);
            return -1;
        }
        free(key);
    }
    if (tbl_build_commit(b, &error) != 0) {
        printf("# commit %s: %s\n", spec, error);
        free(error);
        return -1;
    }
    return 0;
}

static struct tbl *open_ok(struct tbl_registry *reg, const char *spec, int flags)
{
    char *error = NULL;
    struct tbl *t = tbl_open(reg, spec, flags, &error);
    if (t == NULL) {
        printf("# open %s: %s\n", spec, error);
        printf("Bail out! cannot open %s\n", spec);
        exit(1);
    }
    return t;
}

static int count_entry(void *arg, const void *key, size_t klen, const void *value, size_t vlen)
{
    (*(size_t *)arg)++;
    return 0;
}

static void test_hash_lookups(struct tbl_registry *reg)
{
    const char *spec = petrel_pool_printf(test_pool, "hash:%s", path_of("virtual"));
    static const char *const pairs[] = { "user@example.com=local1", "@example.org=catchall", "mixed=Value Kept", NULL };
    ok(build(reg, spec, pairs, 1) == 0, "hash: builds a table");
    struct stat st;
    ok(stat(path_of("virtual.lmdb"), &st) == 0, "the compiled file is NAME.lmdb");
    struct tbl *t = open_ok(reg, spec, TBL_FLAG_FOLD_CASE);
    is_str(get(t, "user@example.com"), "local1", "found");
    is_str(get(t, "USER@Example.COM"), "local1", "the lookup key is folded to lower case");
    is_str(get(t, "@example.org"), "catchall", "found (domain form)");
    is_str(get(t, "nobody@example.com"), "<notfound>", "not found");
    is_str(get(t, "mixed"), "Value Kept", "values keep their case");
    is_str(get(t, ""), "<notfound>", "an empty key is not found");
    char *long_key = xmalloc(2000);
    memset(long_key, 'a', 1999);
    long_key[1999] = '\0';
    is_str(get(t, long_key), "<notfound>", "a key longer than LMDB allows is not found (no error)");
    free(long_key);
    size_t n = 0;
    char *error = NULL;
    ok(tbl_iterate(t, count_entry, &n, &error) == 0 && n == 3, "iterate lists every entry");
    tbl_close(t);

    t = open_ok(reg, spec, 0);
    is_str(get(t, "USER@EXAMPLE.COM"), "<notfound>", "without folding the key is matched as given");
    tbl_close(t);

    /* Postfix's -n: no NUL byte after keys and values. */
    const char *spec0 = petrel_pool_printf(test_pool, "hash:%s", path_of("nonul"));
    static const char *const pairs0[] = { "alpha=one", "beta=two", NULL };
    ok(build(reg, spec0, pairs0, 0) == 0, "a table without NUL bytes builds");
    t = open_ok(reg, spec0, TBL_FLAG_FOLD_CASE);
    is_str(get(t, "alpha"), "one", "a key stored without NUL is found");
    is_str(get(t, "Beta"), "two", "and folded");
    is_str(get(t, "gamma"), "<notfound>", "not found in a table without NUL bytes");
    tbl_close(t);

    /* Duplicates: the first value stays, replace overwrites. */
    const char *specd = petrel_pool_printf(test_pool, "hash:%s", path_of("dups"));
    struct tbl_build *b = tbl_build_begin(reg, specd, NULL, &error);
    is_int(tbl_build_put(b, "k", 2, "first", 6, 0, &error), 0, "first put adds");
    is_int(tbl_build_put(b, "k", 2, "second", 7, 0, &error), 1, "a second put of the key reports a duplicate");
    is_int(tbl_build_put(b, "r", 2, "old", 4, 0, &error), 0, "another key");
    is_int(tbl_build_put(b, "r", 2, "new", 4, 1, &error), 1, "replace reports the key existed");
    ok(tbl_build_commit(b, &error) == 0, "commit");
    t = open_ok(reg, specd, 0);
    is_str(get(t, "k"), "first", "a duplicate keeps the first value");
    is_str(get(t, "r"), "new", "replace keeps the new value");
    tbl_close(t);
}

static void test_hash_errors(struct tbl_registry *reg)
{
    char *error = NULL;
    const char *spec = petrel_pool_printf(test_pool, "hash:%s", path_of("aliases"));
    write_file(path_of("aliases"), "root: admin\n", 0644);
    struct tbl *t = tbl_open(reg, spec, TBL_FLAG_ALIASES, &error);
    ok(t == NULL && contains(error, "petrelctl newaliases"), "a missing alias database names newaliases");
    free(error);
    write_file(path_of("aliases.db"), "not really Berkeley DB", 0644);
    t = tbl_open(reg, spec, 0, &error);
    ok(t == NULL && contains(error, "aliases.db is a Berkeley DB file from Postfix"),
       "Postfix's NAME.db is explained, not read");
    free(error);

    write_file(path_of("garbage.lmdb"), "this is not an LMDB file at all, just text that is long enough", 0644);
    t = tbl_open(reg, petrel_pool_printf(test_pool, "hash:%s", path_of("garbage")), 0, &error);
    ok(t == NULL && contains(error, path_of("garbage.lmdb")), "a file that is not LMDB is refused, naming the file");
    free(error);

    t = tbl_open(reg, "hash:relative/none", 0, &error);
    ok(t == NULL && contains(error, "the source file relative/none does not exist either"),
       "neither source nor compiled file: both named");
    free(error);

    struct tbl_build *b = tbl_build_begin(reg, "texthash:/etc/x", NULL, &error);
    ok(b == NULL && contains(error, "not built from a file"), "texthash: is not built");
    free(error);
    b = tbl_build_begin(reg, "lmdb:/x", NULL, &error);
    ok(b == NULL && contains(error, "lmdb module"), "a module type that is not loaded is named");
    free(error);
    b = tbl_build_begin(reg, petrel_pool_printf(test_pool, "hash:%s", path_of("longkey")), NULL, &error);
    char key[600];
    memset(key, 'k', sizeof(key) - 1);
    key[sizeof(key) - 1] = '\0';
    ok(tbl_build_put(b, key, sizeof(key), "v", 2, 0, &error) < 0 && contains(error, "LMDB keys are 1 to"),
       "a key LMDB cannot hold fails the build with a reason");
    free(error);
    tbl_build_abort(b);
    ok(access(path_of("longkey.lmdb"), F_OK) != 0, "an abandoned build leaves no compiled file");
}

/* Polls until the table shows want (the reopen check runs once a second). */
static const char *wait_for(struct tbl *t, const char *key, const char *want)
{
    const char *got = NULL;
    for (int i = 0; i < 40; i++) {
        got = get(t, key);
        if (strcmp(got, want) == 0)
            break;
        usleep(100 * 1000);
    }
    return got;
}

static void test_hash_rebuild(struct tbl_registry *reg)
{
    const char *spec = petrel_pool_printf(test_pool, "hash:%s", path_of("transport"));
    static const char *const v1[] = { "example.com=smtp:[one]", NULL };
    static const char *const v2[] = { "example.com=smtp:[two]", "new.example=smtp:[three]", NULL };
    build(reg, spec, v1, 1);
    struct tbl *t = open_ok(reg, spec, TBL_FLAG_FOLD_CASE);
    is_str(get(t, "example.com"), "smtp:[one]", "before the rebuild");
    struct stat before, after;
    stat(path_of("transport.lmdb"), &before);
    build(reg, spec, v2, 1);
    stat(path_of("transport.lmdb"), &after);
    ok(before.st_ino != after.st_ino, "a rebuild installs a new file (rename), never rewrites the old one");
    is_str(wait_for(t, "example.com", "smtp:[two]"), "smtp:[two]", "an open table picks up the rebuilt file");
    is_str(get(t, "new.example"), "smtp:[three]", "with its new keys");

    /* A broken replacement: the old contents stay. */
    write_file(path_of("transport.lmdb.tmp"), "garbage garbage garbage garbage garbage garbage garbage", 0644);
    rename(path_of("transport.lmdb.tmp"), path_of("transport.lmdb"));
    sleep(2);
    is_str(get(t, "example.com"), "smtp:[two]", "a replacement that cannot be opened leaves the old table in use");
    unlink(path_of("transport.lmdb"));
    sleep(2);
    is_str(get(t, "new.example"), "smtp:[three]", "so does a compiled file that disappeared");
    tbl_close(t);
}

static void test_hash_big(struct tbl_registry *reg)
{
    /* More than the 16 MiB the builder starts with: the map must grow. */
    char *error = NULL;
    const char *spec = petrel_pool_printf(test_pool, "hash:%s", path_of("big"));
    struct tbl_build *b = tbl_build_begin(reg, spec, NULL, &error);
    char key[64], value[256];
    memset(value, 'v', sizeof(value) - 1);
    value[sizeof(value) - 1] = '\0';
    int bad = 0;
    for (int i = 0; i < 120000 && !bad; i++) {
        snprintf(key, sizeof(key), "key%06d@example.com", i);
        bad = tbl_build_put(b, key, strlen(key) + 1, value, sizeof(value), 0, &error) != 0;
    }
    ok(!bad, "120,000 entries of 256 bytes go in");
    ok(tbl_build_commit(b, &error) == 0, "and commit");
    struct tbl *t = open_ok(reg, spec, 0);
    ok(strlen(get(t, "key000000@example.com")) == 255 && strlen(get(t, "key119999@example.com")) == 255,
       "first and last entries are there");
    size_t n = 0;
    tbl_iterate(t, count_entry, &n, &error);
    is_int(n, 120000, "every entry is there");
    tbl_close(t);
}

static void test_build_permissions(struct tbl_registry *reg)
{
    char *error = NULL;
    write_file(path_of("secret"), "user pass\n", 0640);
    struct tbl_build_options o = { .source = path_of("secret") };
    struct tbl_build *b = tbl_build_begin(reg, petrel_pool_printf(test_pool, "hash:%s", path_of("secret")), &o, &error);
    tbl_build_put(b, "user", 5, "pass", 5, 0, &error);
    tbl_build_commit(b, &error);
    struct stat st;
    stat(path_of("secret.lmdb"), &st);
    is_int(st.st_mode & 0777, 0640, "the compiled file is no more readable than its source");
    o.default_mode = 1;
    b = tbl_build_begin(reg, petrel_pool_printf(test_pool, "hash:%s", path_of("secret")), &o, &error);
    tbl_build_put(b, "user", 5, "pass", 5, 0, &error);
    tbl_build_commit(b, &error);
    stat(path_of("secret.lmdb"), &st);
    is_int(st.st_mode & 0777, 0644, "-p: mode 0644 whatever the source");
}

static const char *split(const char *line, int part)
{
    char *copy = petrel_pool_strdup(test_pool, line);
    char *key, *value;
    const char *why;
    if (tbl_source_split(copy, &key, &value, &why) != 0)
        return petrel_pool_printf(test_pool, "<%s>", why);
    return part ? value : key;
}

static void test_postmap_lines(void)
{
    is_str(split("key value", 0), "key", "key");
    is_str(split("key   value with  spaces  ", 1), "value with  spaces", "value keeps inner spaces");
    is_str(split("\"quoted key\" v", 0), "\"quoted key\"", "a quoted key keeps its quotes, as postmap stores it");
    is_str(split("a\\ b v", 0), "a\\ b", "a backslash escapes white space in the key");
    is_str(split("\"open v", 0), "<unbalanced '\"'>", "unbalanced quote");
    is_str(split("novalue", 0), "<expected format: key whitespace value>", "missing value");
}

static const char *alias(const char *line, int part)
{
    struct buf k = BUF_INIT, v = BUF_INIT;
    const char *why;
    const char *out;
    if (tbl_alias_split(line, &k, &v, &why) != 0)
        out = petrel_pool_printf(test_pool, "<%s>", why);
    else
        out = petrel_pool_strdup(test_pool, part ? v.data : k.data);
    buf_free(&k);
    buf_free(&v);
    return out;
}

static void test_alias_lines(void)
{
    /* Expected results are what Postfix 3.7's postalias stores for the same lines. */
    is_str(alias("postmaster:    root", 1), "root", "simple alias");
    is_str(alias("Root: admin@example.com, \"|/usr/bin/procmail -a foo\", /var/mail/x", 1),
           "admin@example.com, \"|/usr/bin/procmail -a foo\", /var/mail/x", "quoted command stays one quoted item");
    is_str(alias("list:\ta,\tb ,c d", 1), "a, b, c d", "items separated by \", \"");
    is_str(alias("\"quoted name\": x", 0), "quoted name", "the name is stored unquoted");
    is_str(alias("q2: \"john smith\"@example.com", 1), "\"john smith\"@example.com", "quoted local part kept");
    is_str(alias("paren: user (Real Name), other", 1), "user (Real Name), other", "comments kept");
    is_str(alias("angle: Real Name <user@example.org>", 1), "Real Name <user@example.org>", "space before <");
    is_str(alias("esc: \\root", 1), "root", "a backslash in an atom only escapes");
    is_str(alias("colon:in:value: a:b", 1), "in:value:a:b", "the first colon ends the name");
    is_str(alias("colon:in:value: a:b", 0), "colon", "name before the first colon");
    is_str(alias("empty: \"\"", 1), "\"\"", "an empty quoted value");
    is_str(alias("inc: :include:/etc/mail/list.txt", 1), ":include:/etc/mail/list.txt", ":include: kept");
    is_str(alias("tab\t:\tt", 0), "tab", "white space before the colon");
    is_str(alias("cmd: |/usr/bin/foo bar", 1), "|/usr/bin/foo bar", "an unquoted command as postalias joins it");
    is_str(alias("bad line without colon", 0), "<need name:value pair>", "no colon");
    is_str(alias("novalue:", 0), "<need name:value pair>", "no value");
    is_str(alias(": novalue", 0), "<need name:value pair>", "no name");
    is_str(alias("a, b: c", 0), "<need name:value pair>", "two names");
    is_str(alias("dom@example.com: x", 0), "<name must be local and have no domain>", "name with a domain");
    is_str(alias("pct%example: x", 0), "<name must be local and have no domain>", "name with a percent sign");
    ok(tbl_valid_utf8("j\xc3\xbcrgen") && !tbl_valid_utf8("bad\xff") && !tbl_valid_utf8("\xc0\x80") &&
       !tbl_valid_utf8("\xed\xa0\x80"), "UTF-8 check (overlong forms and surrogates are invalid)");
}

static void test_fold(void)
{
    is_str(tbl_fold(test_pool, "User@Example.COM"), "user@example.com", "ASCII keys are lowercased");
    is_str(tbl_fold(test_pool, "J\xc3\x9cRGEN@B\xc3\x84R.example"), "j\xc3\xbcrgen@b\xc3\xa4r.example",
           "UTF-8 letters are folded too (smtputf8_enable)");
    is_str(tbl_fold(test_pool, "Stra\xc3\x9f" "e"), "strasse", "full case folding, as Postfix's ICU casefold");
    is_str(tbl_fold(test_pool, "AB\xff\xfe" "CD"), "ab\xff\xfe" "cd", "bytes that are not UTF-8: ASCII folding only");
}

int main(void)
{
    if (mkdtemp(tmpdir) == NULL) {
        perror("mkdtemp");
        return 2;
    }
    test_pool = petrel_pool_create(0);
    struct tbl_registry *reg = tbl_registry_new();

    test_hash_lookups(reg);
    test_hash_errors(reg);
    test_hash_rebuild(reg);
    test_hash_big(reg);
    test_build_permissions(reg);
    test_postmap_lines();
    test_alias_lines();
    test_fold();

    tbl_registry_free(reg);
    petrel_pool_destroy(test_pool);
    char *cmd = xmalloc(strlen(tmpdir) + 16);
    sprintf(cmd, "rm -rf '%s'", tmpdir);
    if (system(cmd) != 0)
        printf("# could not remove %s\n", tmpdir);
    free(cmd);
    return done_testing();
}
