/*
 * Unit tests for core/tables: every built-in type's file format, errors that
 * name the spec and line, reload keeping old contents, the access(5) lookup
 * order (checked key by key with a recording table type), CIDR edge cases
 * and bounded handling of very long keys and lines.
 */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <petrel/pool.h>
#include "lib/buf.h"
#include "lib/xalloc.h"
#include "tables/access.h"
#include "tables/cidr.h"
#include "tables/table.h"
#include "../tap.h"

#ifndef TABLES_DATADIR
#define TABLES_DATADIR "t/unit/data/tables"
#endif

static char tmpdir[] = "/tmp/petrel-test-tables-XXXXXX";
static petrel_pool *test_pool;

/* Writes content to a file in the temp dir and returns its path. */
static const char *write_file(const char *name, const char *content)
{
    char *path = petrel_pool_printf(test_pool, "%s/%s", tmpdir, name);
    FILE *fp = fopen(path, "w");
    if (fp == NULL || fputs(content, fp) < 0 || fclose(fp) != 0) {
        perror(path);
        exit(2);
    }
    return path;
}

static struct tbl *open_ok(struct tbl_registry *reg, const char *spec, int flags)
{
    char *error = NULL;
    struct tbl *t = tbl_open(reg, spec, flags, &error);
    if (t == NULL) {
        printf("# tbl_open %s: %s\n", spec, error);
        printf("Bail out! cannot open %s\n", spec);
        exit(1);
    }
    return t;
}

/* Opens TYPE:PATH of a fresh file with content. */
static struct tbl *open_file(struct tbl_registry *reg, const char *type, const char *name,
                             const char *content, int flags)
{
    const char *path = write_file(name, content);
    return open_ok(reg, petrel_pool_printf(test_pool, "%s:%s", type, path), flags);
}

/* The value, "<notfound>" or "<error>", copied into the test pool. */
static const char *get(struct tbl *t, const char *key)
{
    const char *value;
    int r = tbl_lookup(t, key, &value);
    if (r == TBL_FOUND)
        return petrel_pool_strdup(test_pool, value);
    return r == TBL_NOTFOUND ? "<notfound>" : "<error>";
}

/* tbl_open must fail; returns the message. */
static const char *open_error(struct tbl_registry *reg, const char *spec)
{
    char *error = NULL;
    struct tbl *t = tbl_open(reg, spec, 0, &error);
    if (t) {
        tbl_close(t);
        return "<opened>";
    }
    const char *copy = petrel_pool_strdup(test_pool, error ? error : "<no message>");
    free(error);
    return copy;
}

/* Writes content to name and returns the error from opening TYPE:path. */
static const char *file_error(struct tbl_registry *reg, const char *type, const char *name,
                              const char *content, const char **path_out)
{
    const char *path = write_file(name, content);
    if (path_out)
        *path_out = path;
    return open_error(reg, petrel_pool_printf(test_pool, "%s:%s", type, path));
}

static int contains(const char *haystack, const char *needle)
{
    int found = strstr(haystack, needle) != NULL;
    if (!found)
        printf("# \"%s\" does not contain \"%s\"\n", haystack, needle);
    return found;
}

/* A type that records the keys it is asked and finds only the key named in
 * the spec ("record:KEY"). The last opened recorder is kept here so tests
 * can read its log: test code only. */
struct recorder {
    struct buf keys;
    const char *answer_key;
};
static struct recorder *last_recorder;

static void *recorder_open(const char *name, int flags, petrel_pool *pool, char **error)
{
    struct recorder *rec = petrel_pool_zalloc(pool, sizeof(*rec));
    rec->answer_key = petrel_pool_strdup(pool, name);
    last_recorder = rec;
    return rec;
}

static int recorder_lookup(void *handle, const char *key, const char **value, petrel_pool *scratch)
{
    struct recorder *rec = handle;
    if (rec->keys.len)
        buf_putc(&rec->keys, '|');
    buf_puts(&rec->keys, key);
    if (strcmp(key, rec->answer_key) == 0) {
        *value = "HIT";
        return TBL_FOUND;
    }
    return TBL_NOTFOUND;
}

static void recorder_close(void *handle)
{
    buf_free(&((struct recorder *)handle)->keys);
}

static const struct tbl_type recorder_type = {
    .name = "record", .open = recorder_open, .lookup = recorder_lookup, .close = recorder_close,
};
static const struct tbl_type recorder_pattern_type = {
    .name = "recordpat", .open = recorder_open, .lookup = recorder_lookup,
    .close = recorder_close, .flags = TBL_TYPE_PATTERN,
};
static const struct tbl_type duplicate_texthash = {
    .name = "texthash", .open = recorder_open, .lookup = recorder_lookup, .close = recorder_close,
};

static const char *recorded(void)
{
    const char *keys = last_recorder->keys.data ? last_recorder->keys.data : "";
    const char *copy = petrel_pool_strdup(test_pool, keys);
    buf_reset(&last_recorder->keys);
    return copy;
}

static void test_registry(struct tbl_registry *reg)
{
    ok(tbl_registry_find(reg, "texthash") != NULL, "texthash is built in");
    ok(tbl_registry_find(reg, "pcre") != NULL, "pcre is built in");
    ok(tbl_registry_find(reg, "cidr") != NULL, "cidr is built in");
    ok(tbl_registry_find(reg, "nosuch") == NULL, "unknown type is not found");
    is_int(tbl_registry_add(reg, &duplicate_texthash), -1, "duplicate type name is refused");
    is_int(tbl_registry_add(reg, &recorder_type), 0, "a new type can be added");
    is_int(tbl_registry_add(reg, &recorder_pattern_type), 0, "a new pattern type can be added");

    is_str(open_error(reg, "foo:bar"), "foo:bar: unsupported dictionary type: foo",
           "unknown type message");
    const char *missing = petrel_pool_printf(test_pool, "hash:%s/never-built", tmpdir);
    const char *e = open_error(reg, missing);
    ok(contains(e, petrel_pool_printf(test_pool, "%s: open database %s/never-built.lmdb: No such file or directory",
                                      missing, tmpdir))
       && contains(e, petrel_pool_printf(test_pool, "build it with `petrelctl map build %s`", missing)),
       "a missing hash: file says which command builds it");
    ok(contains(open_error(reg, "btree:/x"), "use hash:"), "btree: points to hash:");
    ok(contains(open_error(reg, "lmdb:/x"), "lmdb module"), "lmdb: names its module");
    ok(contains(open_error(reg, "sqlite:/x.cf"), "sqlite module"), "sqlite: names its module");
    ok(contains(open_error(reg, "pgsql:/x.cf"), "pgsql module"), "pgsql: names its module");
    ok(contains(open_error(reg, "redis:/x.cf"), "redis module"), "redis: names its module");
    ok(contains(open_error(reg, "cdb:/x"), "cdb module"), "cdb: explains itself");
    ok(contains(open_error(reg, "mysql:/x.cf"), "mysql module"), "mysql: names its module");
    ok(contains(open_error(reg, "ldap:/x.cf"), "ldap module"), "ldap: names its module");
    ok(contains(open_error(reg, "noseparator"), "expecting \"type:name\""), "spec without ':'");
    ok(contains(open_error(reg, "texthash:/nonexistent/file"),
                "texthash:/nonexistent/file: open /nonexistent/file"), "missing file is named");
}

static void test_texthash(struct tbl_registry *reg)
{
    struct tbl *t = open_file(reg, "texthash", "th1",
                              "# comment\n"
                              "\n"
                              "foo.example   OK\n"
                              "   # indented comment is still a comment\n"
                              "Mixed.Case    value one\n"
                              "multi         first part\n"
                              "\tsecond part\n"
                              "  \n"
                              "  third part\n"
                              "dup  first\n"
                              "dup  second\n"
                              "novalue\n"
                              "tabbed\t\t  spaced value   \n"
                              "crlf value\r\n"
                              "alias:  x\n",
                              TBL_FLAG_FOLD_CASE);
    is_str(get(t, "foo.example"), "OK", "texthash finds a key");
    is_str(get(t, "FOO.Example"), "OK", "texthash folds the lookup key");
    is_str(get(t, "mixed.case"), "value one", "texthash folds keys when loading");
    is_str(get(t, "multi"), "first part\tsecond part  third part",
           "continuation lines join, skipping blank and comment lines");
    is_str(get(t, "dup"), "first", "the first of duplicate keys wins");
    is_str(get(t, "novalue"), "<notfound>", "a line without a value is ignored");
    is_str(get(t, "tabbed"), "spaced value", "value is trimmed");
    is_str(get(t, "crlf"), "value", "CRLF line ends are accepted");
    is_str(get(t, "alias:"), "x", "key: value lines keep the colon in the key (with a warning)");
    is_str(get(t, "# comment"), "<notfound>", "comments are not keys");
    is_str(get(t, "missing"), "<notfound>", "unknown key");
    is_str(tbl_spec(t), petrel_pool_printf(test_pool, "texthash:%s/th1", tmpdir), "tbl_spec");
    ok(!tbl_is_pattern(t), "texthash is not a pattern table");
    tbl_close(t);

    t = open_file(reg, "texthash", "th2", "Mixed.Case value\n", 0);
    is_str(get(t, "Mixed.Case"), "value", "without folding the exact key is found");
    is_str(get(t, "mixed.case"), "<notfound>", "without folding case matters");
    tbl_close(t);

    t = open_ok(reg, petrel_pool_printf(test_pool, "proxy:texthash:%s/th2", tmpdir), 0);
    is_str(get(t, "Mixed.Case"), "value", "proxy: prefix opens the inner table");
    tbl_close(t);
}

static void test_inline_static_fail(struct tbl_registry *reg)
{
    struct tbl *t = open_ok(reg, "inline:{ a=1, B=2 c=3,{ key = value with spaces, and comma }, "
                                 "{empty=} }", TBL_FLAG_FOLD_CASE);
    is_str(get(t, "a"), "1", "inline key=value");
    is_str(get(t, "b"), "2", "inline keys fold");
    is_str(get(t, "C"), "3", "inline elements separated by white space");
    is_str(get(t, "key"), "value with spaces, and comma", "inline element in braces");
    is_str(get(t, "empty"), "", "inline empty value");
    is_str(get(t, "z"), "<notfound>", "inline unknown key");
    tbl_close(t);
    t = open_ok(reg, "inline:{a=1,a=2}", 0);
    is_str(get(t, "a"), "2", "inline: a later duplicate replaces (as Postfix)");
    tbl_close(t);
    ok(contains(open_error(reg, "inline:{}"), "empty table"), "empty inline table is an error");
    ok(contains(open_error(reg, "inline:{ a }"), "missing '=' after attribute name"),
       "inline element without '='");
    ok(contains(open_error(reg, "inline:{ a=1"), "bad syntax: \"inline:{ a=1\""),
       "unbalanced inline braces");
    ok(contains(open_error(reg, "inline:a=1"), "need \"inline:{name=value...}\""),
       "inline without braces");
    ok(contains(open_error(reg, "inline:{ {a=1}x }"), "syntax error after '}'"),
       "text after an inner brace group");

    t = open_ok(reg, "static:OK", 0);
    is_str(get(t, "anything"), "OK", "static: any key");
    is_str(get(t, ""), "OK", "static: even the empty key");
    tbl_close(t);
    t = open_ok(reg, "static:{ text with spaces }", 0);
    is_str(get(t, "x"), "text with spaces", "static:{ value with spaces }");
    tbl_close(t);
    ok(contains(open_error(reg, "static:{ oops"), "need \"static:{value}\""),
       "static with unbalanced braces");

    t = open_ok(reg, "fail:why", 0);
    is_str(get(t, "x"), "<error>", "fail: always errors");
    ok(tbl_is_pattern(t), "fail: is queried once by access lookups");
    tbl_close(t);
}

static void test_unix(struct tbl_registry *reg)
{
    struct tbl *t = open_ok(reg, "proxy:unix:passwd.byname", TBL_FLAG_FOLD_CASE);
    const char *root = get(t, "root");
    ok(strncmp(root, "root:", 5) == 0 && strstr(root, ":0:0:") != NULL,
       "unix:passwd.byname finds root as name:passwd:uid:gid:gecos:dir:shell");
    is_str(get(t, "ROOT"), root, "unix:passwd.byname: keys fold to lower case");
    is_str(get(t, "no-such-user-petrel-test"), "<notfound>", "unix:passwd.byname: an unknown user is not found");
    is_str(get(t, "root@localhost"), "<notfound>", "unix:passwd.byname: an address is not a user name");
    tbl_close(t);
    t = open_ok(reg, "unix:group.byname", 0);
    ok(strncmp(get(t, "root"), "root:", 5) == 0, "unix:group.byname finds the root group");
    is_str(get(t, "no-such-group-petrel-test"), "<notfound>", "unix:group.byname: unknown group");
    tbl_close(t);
    ok(contains(open_error(reg, "unix:shadow.byname"), "unknown table: unix:shadow.byname"),
       "unix: only has passwd.byname and group.byname");
}

static void test_regexp(struct tbl_registry *reg)
{
    struct tbl *t = open_file(reg, "regexp", "re1",
                              "# comment\n"
                              "/^case$/i            sensitive\n"
                              "/^CASE2$/            insensitive\n"
                              "/^(user)\\+([a-z]+)@(.*)$/   $1 at $3 ext $2 $$5 ${1}\n"
                              "/^opt(ional)?-x$/    [$1]\n"
                              "if /^block/\n"
                              "if !/skip/\n"
                              "/^block-a/           inner a\n"
                              "endif\n"
                              "/^block/             block rest\n"
                              "endif\n"
                              "/^two/!/three/       two without three\n"
                              "/^a+b$/x             basic regexp\n"
                              "/^long$/             first\n"
                              "  continued\n"
                              "/^slash\\/x$/        escaped delimiter\n"
                              "#/^hidden$/          commented out\n"
                              "/^empty$/\n"
                              "/^l(i)ne$/m          multi\n"
                              "!/@/                 no at sign\n",
                              0);
    ok(tbl_is_pattern(t), "regexp is a pattern table");
    is_str(get(t, "case"), "sensitive", "flag i makes the pattern case-sensitive: match");
    is_str(get(t, "CASE@x"), "<notfound>", "flag i makes the pattern case-sensitive: no match");
    is_str(get(t, "case2"), "insensitive", "patterns are case-insensitive by default");
    is_str(get(t, "user+tag@Example.COM"), "user at Example.COM ext tag $5 user",
           "$n, ${n} and $$ substitution");
    is_str(get(t, "opt-x"), "[]", "an unmatched group substitutes nothing");
    is_str(get(t, "optional-x"), "[ional]", "a matched optional group substitutes");
    is_str(get(t, "plain"), "no at sign", "negated pattern");
    is_str(get(t, "block-a@x"), "inner a", "nested if blocks");
    is_str(get(t, "block-a-skip@x"), "block rest", "inner negated if skips its block");
    is_str(get(t, "blockz@x"), "block rest", "outer if block");
    is_str(get(t, "two@x"), "two without three", "/p1/!/p2/ matches p1 without p2");
    is_str(get(t, "two-three@x"), "<notfound>", "/p1/!/p2/ fails when p2 matches");
    is_str(get(t, "a+b@"), "<notfound>", "flag x: basic regexp where + is literal (no match)");
    is_str(get(t, "a+b"), "basic regexp", "flag x: basic regexp where + is literal");
    is_str(get(t, "long"), "first  continued", "continuation line in a result");
    is_str(get(t, "slash/x"), "escaped delimiter", "escaped delimiter in a pattern");
    is_str(get(t, "hidden"), "no at sign", "commented-out rule is ignored");
    is_str(get(t, "empty"), "", "a rule without result gives the empty string");
    tbl_close(t);

    t = open_file(reg, "regexp", "re2", "/^empty$/\n/x/ found x\nendif\n/y/ found y\nif /z/\n/zz/ zz\n",
                  0);
    is_str(get(t, "empty"), "", "missing result is the empty string (with a warning)");
    is_str(get(t, "y"), "found y", "a stray endif is ignored (with a warning)");
    is_str(get(t, "zz"), "zz", "an if without endif runs to the end");
    is_str(get(t, "q"), "<notfound>", "no rule matches");
    tbl_close(t);

    const char *path;
    const char *e = file_error(reg, "regexp", "bad1", "/ok/ fine\n# c\n\n/a(/ broken\n", &path);
    ok(contains(e, petrel_pool_printf(test_pool, "regexp:%s line 4: bad regular expression", path)),
       "a bad pattern names the spec and line");
    ok(contains(file_error(reg, "regexp", "bad2", "/a/q result\n", NULL),
                "line 1: unknown regexp option \"q\""), "unknown flag");
    ok(contains(file_error(reg, "regexp", "bad3", "/a(b)/ $2\n", NULL),
                "line 1: out of range replacement index \"2\""), "out-of-range $number");
    ok(contains(file_error(reg, "regexp", "bad4", "/a/ $x\n", NULL),
                "non-numeric replacement index \"x\""), "non-numeric $name");
    ok(contains(file_error(reg, "regexp", "bad5", "/a(b)/\n/x\n", NULL),
                "line 2: no closing regexp delimiter \"/\""), "unterminated pattern");
    ok(contains(file_error(reg, "regexp", "bad6", "!/a(b)/ $1\n", NULL),
                "$number found in negative match"), "$number in a negated rule");
    ok(contains(file_error(reg, "regexp", "bad7", "if /a/\n  /b/ indented\nendif\n", NULL),
                "line 1: unexpected text after the if condition"),
       "indented rule inside if is an error, not a silently lost rule");
    ok(contains(file_error(reg, "regexp", "bad8", "foo bar\n", NULL),
                "line 1: unrecognized line"), "unrecognized line");
    ok(contains(file_error(reg, "regexp", "bad9", "/a/ ${1\n", NULL), "bad replacement syntax"),
       "unterminated ${");
    ok(contains(file_error(reg, "regexp", "bad10", "/a/ costs $\n", NULL),
                "bad replacement syntax"), "a lone $ must be written $$");
}

static void test_pcre(struct tbl_registry *reg)
{
    struct tbl *t = open_file(reg, "pcre", "pc1",
                              "/^case$/i                 sensitive\n"
                              "/^(\\w+)\\+(\\w+)@(.+)$/   $1 $3 ($2)\n"
                              "/^dot.all$/               dotall default\n"
                              "/^nodot.all$/s            dotall off\n"
                              "/^anch/A                  anchored\n"
                              "/ a b c /x                extended\n"
                              "/<(.+)>/U                 ungreedy $1\n"
                              "/^line$/m                 multiline\n"
                              "/^end$/E                  dollar endonly\n"
                              "/^obsolete$/X             x accepted\n"
                              "/^(?:a|(b))c$/            [$1]\n"
                              "!/@/                      no at sign\n"
                              "if /^blk/\n"
                              "/^blk-(\\d+)/             block $1\n"
                              "endif\n",
                              0);
    is_str(get(t, "case"), "sensitive", "pcre i flag: case-sensitive match");
    is_str(get(t, "user+ext@host"), "user host (ext)", "pcre $n substitution");
    is_str(get(t, "dot\nall"), "dotall default", "dot matches newline by default");
    is_str(get(t, "nodot\nall@"), "<notfound>", "flag s turns dotall off");
    is_str(get(t, "anchor@"), "anchored", "flag A anchors");
    is_str(get(t, "xabc@"), "extended", "flag x ignores white space in the pattern");
    is_str(get(t, "<a><b>@"), "ungreedy a", "flag U makes quantifiers lazy");
    is_str(get(t, "first@\nline\nlast"), "multiline", "flag m: ^ and $ at line breaks");
    is_str(get(t, "end\n"), "no at sign", "flag E: $ only at the very end");
    is_str(get(t, "obsolete"), "x accepted", "flag X is accepted");
    is_str(get(t, "ac"), "[]", "an unset group substitutes nothing");
    is_str(get(t, "bc"), "[b]", "a set group substitutes");
    is_str(get(t, "blk-42@"), "block 42", "if block with substitution");
    is_str(get(t, "CASE@"), "<notfound>", "nothing else matches");
    tbl_close(t);

    const char *path;
    const char *e = file_error(reg, "pcre", "pbad1", "/ok/ ok\n/a(/ broken\n", &path);
    ok(contains(e, petrel_pool_printf(test_pool, "pcre:%s line 2: bad regular expression", path)),
       "a bad pcre pattern names the spec and line");
    ok(contains(file_error(reg, "pcre", "pbad2", "/a/k r\n", NULL), "unknown regexp option \"k\""),
       "unknown pcre flag");
    ok(contains(file_error(reg, "pcre", "pbad3", "/a/!/b/ r\n", NULL), "unknown regexp option \"!\""),
       "pcre has no /p1/!/p2/ form");
}

static void test_cidr_parse(void)
{
    struct cidr_net net;
    struct cidr_addr addr;
    char *error = NULL;
    char text[64];

    is_int(cidr_net_parse("127.0.0.0/8", &net, &error), 0, "127.0.0.0/8 parses");
    cidr_addr_parse("127.1.2.3", &addr);
    ok(cidr_net_contains(&net, &addr), "127.1.2.3 is in 127.0.0.0/8");
    cidr_addr_parse("128.0.0.1", &addr);
    ok(!cidr_net_contains(&net, &addr), "128.0.0.1 is not");
    cidr_net_format(&net, text, sizeof(text));
    is_str(text, "127.0.0.0/8", "format");

    is_int(cidr_net_parse("0.0.0.0/0", &net, &error), 0, "/0 parses");
    cidr_addr_parse("203.0.113.9", &addr);
    ok(cidr_net_contains(&net, &addr), "0.0.0.0/0 matches any IPv4");
    cidr_addr_parse("2001:db8::1", &addr);
    ok(!cidr_net_contains(&net, &addr), "0.0.0.0/0 does not match IPv6");
    is_int(cidr_net_parse("::/0", &net, &error), 0, "::/0 parses");
    ok(cidr_net_contains(&net, &addr), "::/0 matches any IPv6");

    is_int(cidr_net_parse("192.168.1.1/32", &net, &error), 0, "/32 parses");
    cidr_addr_parse("192.168.1.1", &addr);
    ok(cidr_net_contains(&net, &addr), "/32 matches its host");
    cidr_addr_parse("192.168.1.2", &addr);
    ok(!cidr_net_contains(&net, &addr), "/32 matches nothing else");
    is_int(cidr_net_parse("192.168.1.1", &net, &error), 0, "a bare host parses");
    is_int(net.prefix_len, 32, "a bare IPv4 host is /32");
    is_int(cidr_net_parse("[::1]/128", &net, &error), 0, "[::1]/128 parses");
    cidr_addr_parse("::1", &addr);
    ok(cidr_net_contains(&net, &addr), "[::1]/128 matches ::1");
    cidr_addr_parse("::2", &addr);
    ok(!cidr_net_contains(&net, &addr), "[::1]/128 does not match ::2");
    is_int(cidr_net_parse("[::1/128]", &net, &error), 0, "[::1/128] parses");
    is_int(cidr_net_parse("::1/128", &net, &error), 0, "::1/128 parses");
    is_int(cidr_net_parse("[2001:db8::1]", &net, &error), 0, "[2001:db8::1] parses");
    is_int(net.prefix_len, 128, "a bare IPv6 host is /128");
    is_int(cidr_net_parse("2001:db8::/33", &net, &error), 0, "an odd IPv6 prefix parses");
    cidr_addr_parse("2001:db8:7fff::1", &addr);
    ok(cidr_net_contains(&net, &addr), "/33 includes the lower half");
    cidr_addr_parse("2001:db8:8000::1", &addr);
    ok(!cidr_net_contains(&net, &addr), "/33 excludes the upper half");

    struct {
        const char *entry;
        const char *message;
    } bad[] = {
        { "1.2.3.4/33", "bad net/mask pattern: \"1.2.3.4/33\"" },
        { "::1/129", "bad net/mask pattern: \"::1/129\"" },
        { "1.2.3.0/", "bad net/mask pattern" },
        { "1.2.3.0/abc", "bad net/mask pattern" },
        { "1.2.3.0/-1", "bad net/mask pattern" },
        { "1.2.3.0/0024", "bad net/mask pattern" },
        { "1.2.3.4/24", "non-null host address bits in \"1.2.3.4/24\", perhaps you should use "
                        "\"1.2.3.0/24\" instead" },
        { "2001:db8::1/64", "perhaps you should use \"2001:db8::/64\" instead" },
        { "1.2.3", "bad address pattern: \"1.2.3\"" },
        { "example.com", "bad address pattern" },
        { "[::1", "missing ']' character after \"[::1\"" },
        { "[::1]x", "garbage after \"[::1]\"" },
        { "1.2.3.256", "bad address pattern" },
        { "", "bad address pattern" },
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        error = NULL;
        int r = cidr_net_parse(bad[i].entry, &net, &error);
        ok(r == -1 && error && contains(error, bad[i].message), "bad entry \"%s\" is refused",
           bad[i].entry);
        free(error);
    }
    error = NULL;
    char longentry[300];
    memset(longentry, '1', sizeof(longentry) - 1);
    longentry[sizeof(longentry) - 1] = '\0';
    ok(cidr_net_parse(longentry, &net, &error) == -1 && contains(error, "too long"),
       "an over-long entry is refused without copying it");
    free(error);

    struct cidr_list *list = cidr_list_new();
    error = NULL;
    is_int(cidr_list_add_all(list, "127.0.0.0/8, [::1]/128 192.168.0.0/16,,10.1.2.3", &error), 0,
           "mynetworks-style list parses");
    is_int(cidr_list_count(list), 4, "four networks");
    ok(cidr_list_match(list, "127.0.0.1"), "list: loopback");
    ok(cidr_list_match(list, "::1"), "list: IPv6 loopback");
    ok(cidr_list_match(list, "[::1]"), "list: bracketed address");
    ok(cidr_list_match(list, "::ffff:192.168.3.4"), "list: IPv4-mapped IPv6 matches as IPv4");
    ok(cidr_list_match(list, "10.1.2.3"), "list: single host");
    ok(!cidr_list_match(list, "10.1.2.4"), "list: not the neighbour");
    ok(!cidr_list_match(list, "::2"), "list: other IPv6");
    ok(!cidr_list_match(list, "not-an-address"), "list: garbage does not match");
    ok(!cidr_list_match(list, ""), "list: empty does not match");
    is_int(cidr_list_add_all(list, "10.0.0.0/8 10.0.0.1/8", &error), -1, "a bad entry stops the list");
    ok(error && contains(error, "10.0.0.1/8"), "the error names the bad entry");
    free(error);
    cidr_list_free(list);

    list = cidr_list_new();
    error = NULL;
    is_int(cidr_list_add(list, "::ffff:192.0.2.0/120", &error), 0, "an IPv4-mapped network parses");
    ok(!cidr_list_match(list, "192.0.2.77"), "an IPv4-mapped network matches no IPv4 client, as in Postfix");
    ok(!cidr_list_match(list, "::ffff:192.0.2.77"), "nor the client written in mapped form (compared as IPv4)");
    cidr_list_free(list);
    list = cidr_list_new();
    is_int(cidr_list_add(list, "::ffff:192.0.2.1", &error), 0, "an IPv4-mapped host parses");
    ok(!cidr_list_match(list, "192.0.2.1"), "and matches no IPv4 client either, as in Postfix");
    cidr_list_free(list);
}

static void test_cidr_table(struct tbl_registry *reg)
{
    struct tbl *t = open_ok(reg, "cidr:" TABLES_DATADIR "/mynetworks.cidr", 0);
    ok(tbl_is_pattern(t), "cidr is a pattern table");
    is_str(get(t, "127.0.0.1"), "OK", "cidr: network match");
    is_str(get(t, "::1"), "OK", "cidr: bracketed IPv6 entry");
    is_str(get(t, "192.0.2.9"), "REJECT documentation net", "cidr: second rule");
    is_str(get(t, "198.51.100.1"), "DUNNO outside ten", "cidr: if !network block");
    is_str(get(t, "10.1.2.3"), "OK single host", "cidr: skipped if block, later host rule");
    is_str(get(t, "10.1.2.4"), "<notfound>", "cidr: nothing matches");
    is_str(get(t, "mail.example.com"), "<notfound>", "cidr: a name is not an address");
    is_str(get(t, "2001:db8::1"), "<notfound>", "cidr: IPv6 outside every rule");
    tbl_close(t);

    t = open_file(reg, "cidr", "c1", "!192.0.2.0/24 outside\n", 0);
    is_str(get(t, "192.0.2.1"), "<notfound>", "cidr: negated rule does not match inside");
    is_str(get(t, "198.51.100.1"), "outside", "cidr: negated rule matches outside");
    tbl_close(t);

    const char *path;
    const char *e = file_error(reg, "cidr", "cbad1", "# x\n1.2.3.4/24 REJECT\n", &path);
    ok(contains(e, petrel_pool_printf(test_pool, "cidr:%s line 2: non-null host address bits", path)),
       "cidr: bad entry names the spec and line");
    ok(contains(file_error(reg, "cidr", "cbad2", "1.2.3.0/24\n", NULL), "line 1: no lookup result"),
       "cidr: a rule needs a result");
    ok(contains(file_error(reg, "cidr", "cbad3", "1.2.3.0/24 $1\n", NULL), "<opened>"),
       "cidr: results are literal ($ is not special)");
}

static void test_reload(struct tbl_registry *reg)
{
    const char *path = write_file("reload", "key old\n");
    struct tbl *t = open_ok(reg, petrel_pool_printf(test_pool, "texthash:%s", path), 0);
    is_str(get(t, "key"), "old", "before reload");
    write_file("reload", "key new\nother x\n");
    char *error = NULL;
    is_int(tbl_reload(t, &error), 0, "reload succeeds");
    is_str(get(t, "key"), "new", "reload reads the new contents");
    is_str(get(t, "other"), "x", "reload sees new keys");
    unlink(path);
    is_int(tbl_reload(t, &error), -1, "reload of a vanished file fails");
    ok(error && contains(error, "open"), "the reload error says why");
    free(error);
    is_str(get(t, "key"), "new", "failed reload keeps the old contents");
    tbl_close(t);

    path = write_file("reload.re", "/^a$/ A\n");
    t = open_ok(reg, petrel_pool_printf(test_pool, "regexp:%s", path), 0);
    write_file("reload.re", "/^a$/ A2\n/b(/ broken\n");
    error = NULL;
    is_int(tbl_reload(t, &error), -1, "reload with a syntax error fails");
    ok(error && contains(error, "line 2: bad regular expression"), "reload error names the line");
    free(error);
    is_str(get(t, "a"), "A", "regexp keeps its old rules after a failed reload");
    write_file("reload.re", "/^a$/ A3\n");
    is_int(tbl_reload(t, &error), 0, "reload after fixing the file");
    is_str(get(t, "a"), "A3", "fixed file is served");
    tbl_close(t);
}

/* Opens record:ANSWER and returns the access lookup's key sequence. */
static const char *address_keys(struct tbl_registry *reg, const char *type, const char *address,
                                const char *delimiter, unsigned flags, const char *answer,
                                const char **result)
{
    struct tbl *t = open_ok(reg, petrel_pool_printf(test_pool, "%s:%s", type, answer), 0);
    const char *value;
    int r = tbl_access_lookup_address_ex(t, address, delimiter, flags, &value);
    *result = r == TBL_FOUND ? petrel_pool_strdup(test_pool, value)
                             : r == TBL_NOTFOUND ? "<notfound>" : "<error>";
    const char *keys = recorded();
    tbl_close(t);
    return keys;
}

static void test_access(struct tbl_registry *reg)
{
    const char *result;
    is_str(address_keys(reg, "record", "user+ext@foo.example.com", "+", 0, "", &result),
           "user+ext@foo.example.com|user@foo.example.com|foo.example.com|example.com|com"
           "|user+ext@|user@",
           "address order with an extension");
    is_str(result, "<notfound>", "nothing found");
    is_str(address_keys(reg, "record", "user+ext@foo.example.com", "+", 0, "example.com", &result),
           "user+ext@foo.example.com|user@foo.example.com|foo.example.com|example.com",
           "search stops at the first hit");
    is_str(result, "HIT", "the hit's value is returned");
    is_str(address_keys(reg, "record", "user@example.com", "+", 0, "", &result),
           "user@example.com|example.com|com|user@", "address order without an extension");
    is_str(address_keys(reg, "record", "user+ext@example.com", NULL, 0, "", &result),
           "user+ext@example.com|example.com|com|user+ext@", "no recipient_delimiter");
    is_str(address_keys(reg, "record", "a-b+c@x.org", "+-", 0, "", &result),
           "a-b+c@x.org|a@x.org|x.org|org|a-b+c@|a@", "several delimiter characters");
    is_str(address_keys(reg, "record", "owner-list@x.org", "-", 0, "", &result),
           "owner-list@x.org|x.org|org|owner-list@", "owner-* is not split with '-'");
    is_str(address_keys(reg, "record", "list-request@x.org", "-", 0, "", &result),
           "list-request@x.org|x.org|org|list-request@", "*-request is not split with '-'");
    is_str(address_keys(reg, "record", "postmaster+x@x.org", "+", 0, "", &result),
           "postmaster+x@x.org|postmaster@x.org|x.org|org|postmaster+x@|postmaster@",
           "postmaster+x is split (only bare postmaster is special)");
    is_str(address_keys(reg, "record", "+ext@x.org", "+", 0, "", &result),
           "+ext@x.org|x.org|org|+ext@", "a leading delimiter does not split");
    is_str(address_keys(reg, "record", "user@sub.example.com", NULL, TBL_ACCESS_DOT_PARENT, "",
                        &result),
           "user@sub.example.com|sub.example.com|.example.com|.com|user@",
           "dot-style parent domains");
    is_str(address_keys(reg, "record", "localonly", "+", 0, "", &result), "localonly|localonly@",
           "an address without a domain");
    is_str(address_keys(reg, "record", "", "+", 0, "", &result), "", "the null address looks up nothing");
    is_str(address_keys(reg, "record", "u@[192.0.2.1]", "+", 0, "", &result),
           "u@[192.0.2.1]|[192.0.2.1]|0.2.1]|2.1]|1]|u@",
           "an address literal is walked like Postfix does");
    is_str(address_keys(reg, "recordpat", "user+ext@foo.example.com", "+", 0, "", &result),
           "user+ext@foo.example.com", "a pattern table gets only the full address");

    struct tbl *t = open_ok(reg, "record:", 0);
    const char *value;
    tbl_access_lookup_domain(t, "foo.example.com", &value);
    is_str(recorded(), "foo.example.com|example.com|com", "domain and parent domains");
    tbl_access_lookup_domain(t, "example.com.", &value);
    is_str(recorded(), "example.com.|com.", "a trailing dot is kept as Postfix does");
    tbl_access_lookup_domain_ex(t, "a.b.c", TBL_ACCESS_DOT_PARENT, &value);
    is_str(recorded(), "a.b.c|.b.c|.c", "dot-style domain walk");
    tbl_access_lookup_client(t, "mail.example.com", "192.0.2.10", &value);
    is_str(recorded(), "mail.example.com|example.com|com|192.0.2.10|192.0.2|192.0|192",
           "client: host name, parents, address and prefixes");
    tbl_access_lookup_client(t, "unknown", "2001:DB8:0:0:1::1", &value);
    is_str(recorded(), "unknown|2001:db8::1:0:0:1|2001:db8::1:0:0|2001:db8::1:0|2001:db8::1|2001:db8:"
           "|2001:db8|2001",
           "client: IPv6 in compressed form, cut at each ':'");
    tbl_access_lookup_client(t, NULL, "1:2:3:4:5:6:7:8", &value);
    is_str(recorded(), "1:2:3:4:5:6:7:8|1:2:3:4:5:6:7|1:2:3:4:5:6|1:2:3:4:5|1:2:3:4|1:2:3|1:2|1",
           "client: full IPv6 prefixes");
    tbl_access_lookup_client(t, NULL, "::ffff:198.51.100.7", &value);
    is_str(recorded(), "198.51.100.7|198.51.100|198.51|198", "client: IPv4-mapped as IPv4");
    tbl_access_lookup_client(t, NULL, "::1", &value);
    is_str(recorded(), "::1|:", "client: ::1");
    tbl_access_lookup_client(t, NULL, "[192.0.2.1]", &value);
    is_str(recorded(), "192.0.2.1|192.0.2|192.0|192", "client: brackets removed");
    tbl_access_lookup_client(t, NULL, "garbage", &value);
    is_str(recorded(), "garbage", "client: a non-address gets one lookup");
    tbl_close(t);

    t = open_ok(reg, "recordpat:", 0);
    tbl_access_lookup_client(t, "mail.example.com", "192.0.2.10", &value);
    is_str(recorded(), "mail.example.com|192.0.2.10", "pattern table: name and address only");
    tbl_access_lookup_domain(t, "foo.example.com", &value);
    is_str(recorded(), "foo.example.com", "pattern table: the domain only");
    tbl_close(t);

    /* Real tables, folded as access maps are. */
    t = open_ok(reg, "texthash:" TABLES_DATADIR "/access.texthash", TBL_FLAG_FOLD_CASE);
    is_int(tbl_access_lookup_address(t, "Spammer@Example.COM", "+", &value), TBL_FOUND,
           "texthash access: full address, case folded");
    is_str(value, "REJECT no spammers", "its value");
    is_int(tbl_access_lookup_address(t, "spammer+x@example.com", "+", &value), TBL_FOUND,
           "texthash access: extension stripped");
    is_int(tbl_access_lookup_address(t, "anyone@mx.example.net", "+", &value), TBL_FOUND,
           "texthash access: parent domain");
    is_str(value, "OK", "parent domain value");
    is_int(tbl_access_lookup_address(t, "someone@a.sub.example.org", "+", &value), TBL_NOTFOUND,
           "texthash access: .parent entries need dot style");
    is_int(tbl_access_lookup_address_ex(t, "someone@a.sub.example.org", "+", TBL_ACCESS_DOT_PARENT,
                                        &value),
           TBL_FOUND, "texthash access: dot style finds .sub.example.org");
    is_int(tbl_access_lookup_address(t, "postmaster@elsewhere.test", "+", &value), TBL_FOUND,
           "texthash access: user@ form");
    is_int(tbl_access_lookup_client(t, "unknown", "192.0.2.55", &value), TBL_FOUND,
           "texthash access: client network prefix");
    is_str(value, "REJECT test network", "client value");
    is_int(tbl_access_lookup_client(t, "host.long.example", "2001:db8::25", &value), TBL_FOUND,
           "texthash access: parent domain of the client name");
    is_str(value, "550 5.7.1 this text    continues here", "continued value");
    is_int(tbl_access_lookup_client(t, "unknown", "2001:db8::25", &value), TBL_FOUND,
           "texthash access: IPv6 prefix");
    is_str(value, "REJECT documentation prefix", "IPv6 prefix value");
    is_int(tbl_access_lookup_client(t, "unknown", "198.51.100.1", &value), TBL_NOTFOUND,
           "texthash access: unknown client");
    tbl_close(t);

    t = open_ok(reg, "regexp:" TABLES_DATADIR "/header_checks.regexp", 0);
    is_str(get(t, "Subject: cheap VIAGRA"), "REJECT spam subject", "sample header_checks");
    is_str(get(t, "Received: from mx.example.net (x)"), "WARN received from mx.example.net",
           "sample header_checks substitution");
    is_str(get(t, "X-Spam-Flag: YES"), "DISCARD", "sample header_checks if block");
    is_str(get(t, "X-Other: 1"), "DUNNO not a mailer header", "sample header_checks negation");
    is_str(get(t, "X-Mailer: foo"), "<notfound>", "sample header_checks negation miss");
    tbl_close(t);

    t = open_ok(reg, "fail:x", 0);
    is_int(tbl_access_lookup_address(t, "a@b.c", "+", &value), TBL_ERROR, "errors stop the search");
    tbl_close(t);
}

static void test_long_input(struct tbl_registry *reg)
{
    size_t n = TBL_KEY_MAX + 1;
    char *huge = xmalloc(n + 1);
    memset(huge, 'a', n);
    huge[n] = '\0';
    struct tbl *t = open_ok(reg, "static:x", 0);
    is_str(get(t, huge), "<error>", "a key over TBL_KEY_MAX is refused");
    huge[TBL_KEY_MAX] = '\0';
    is_str(get(t, huge), "x", "a key of exactly TBL_KEY_MAX is looked up");
    tbl_close(t);

    t = open_file(reg, "regexp", "long.re", "/^a+$/ all a\n", 0);
    is_str(get(t, huge), "all a", "a 128 KiB key through a regexp");
    tbl_close(t);
    t = open_file(reg, "pcre", "long.pcre", "/^(a+)b$/ never\n/^a{100}/ prefix\n", 0);
    is_str(get(t, huge), "prefix", "a 128 KiB key through pcre");
    tbl_close(t);

    t = open_ok(reg, "record:", 0);
    const char *value;
    huge[TBL_KEY_MAX - 20] = '@';
    memcpy(huge + TBL_KEY_MAX - 10, ".b.c", 5);
    is_int(tbl_access_lookup_address(t, huge, "+", &value), TBL_NOTFOUND,
           "access lookup of a very long address");
    memset(huge, 'a', TBL_KEY_MAX + 1);
    huge[TBL_KEY_MAX + 1] = '\0';
    recorded();
    is_int(tbl_access_lookup_address(t, huge, "+", &value), TBL_ERROR,
           "an over-long address is an error, not a partial match");
    is_str(recorded(), "", "and nothing was looked up");
    tbl_close(t);
    free(huge);

    /* A line over the reader's limit fails with its line number. */
    struct buf content = BUF_INIT;
    buf_puts(&content, "ok 1\n");
    for (size_t i = 0; i < 80 * 1024; i++)
        buf_putc(&content, 'k');
    buf_puts(&content, " v\n");
    ok(contains(file_error(reg, "texthash", "longline", content.data, NULL),
                "line 2: line longer than"),
       "an over-long physical line is an error");
    /* Short physical lines that continue one another past the limit. */
    buf_reset(&content);
    buf_puts(&content, "ok 1\nx v");
    for (size_t i = 0; i < 8 * 1024; i++)
        buf_puts(&content, "\n        y");
    buf_putc(&content, '\n');
    ok(contains(file_error(reg, "texthash", "longlogical", content.data, NULL),
                "line 2: logical line longer than"),
       "an over-long logical line is an error");
    buf_free(&content);
}

int main(void)
{
    if (mkdtemp(tmpdir) == NULL) {
        perror("mkdtemp");
        return 2;
    }
    test_pool = petrel_pool_create(0);
    struct tbl_registry *reg = tbl_registry_new();

    test_registry(reg);
    test_texthash(reg);
    test_inline_static_fail(reg);
    test_unix(reg);
    test_regexp(reg);
    test_pcre(reg);
    test_cidr_parse();
    test_cidr_table(reg);
    test_reload(reg);
    test_access(reg);
    test_long_input(reg);

    tbl_registry_free(reg);
    petrel_pool_destroy(test_pool);
    char *cmd = xmalloc(strlen(tmpdir) + 16);
    sprintf(cmd, "rm -rf '%s'", tmpdir);
    if (system(cmd) != 0)
        printf("# could not remove %s\n", tmpdir);
    free(cmd);
    return done_testing();
}
