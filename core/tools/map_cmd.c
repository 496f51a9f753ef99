/*
 * petrelctl map | alias | newaliases: Postfix's postmap(1), postalias(1)
 * and newaliases(1) for Petrel's tables.
 *
 *   petrelctl map build [-fnNprwFi] [TYPE:]FILE...   postmap [-i] TYPE:FILE
 *   petrelctl map query [-fF] TYPE:NAME KEY|-         postmap -q KEY
 *   petrelctl map dump [-F] TYPE:NAME                 postmap -s
 *   petrelctl map delete [-f] TYPE:NAME KEY|-         postmap -d KEY
 *   petrelctl alias build|query|dump|delete ...       postalias (aliases(5) input, "key: value" output)
 *   petrelctl newaliases                              newaliases: alias build of each alias_database table
 *
 * Design decisions:
 * - Every change, -i and -d included, writes a complete new file and
 *   renames it into place (tables/table_build.c): a running petreld never
 *   sees a table half-written, whatever the type. -i and -d copy the
 *   existing entries first, so they cost a full rewrite; tables are small
 *   next to the mail they route. Builds in one directory are serialised
 *   with flock() on the directory, so two concurrent -i runs do not lose
 *   each other's entries.
 * - Keys and values are stored as postmap stores them on Linux: keys
 *   case-folded (tbl_fold; -f keeps case) and both NUL-terminated (-n:
 *   without NUL), so Postfix's own postmap reads these files and the
 *   other way round. `postalias` adds the "@" → "@" entry sendmail uses to
 *   see that the database is complete.
 * - Table types come from the core and from the modules main.cf loads, so
 *   `map build cdb:FILE` needs `modules = cdb`, as petreld does to read it.
 *   The configuration is read without opening any table: newaliases must
 *   work when alias_maps names a table that does not exist yet.
 */
#include "config.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "config/cfg.h"
#include "lib/buf.h"
#include "lib/log.h"
#include "lib/xalloc.h"
#include "module/module.h"
#include "tables/table.h"
#include "tables/table_impl.h"
#include "tables/table_source.h"
#include "tools/map_cmd.h"

enum dup_mode { DUP_WARN, DUP_REPLACE, DUP_IGNORE };

struct opts {
    int fold;            /* lowercase keys (default; -f: no) */
    int nul;             /* -1 as the file already is (else with NUL), 1 -N, 0 -n */
    int b64;             /* -F */
    int default_mode;    /* -p */
    enum dup_mode dup;   /* -r, -w */
    int incremental;     /* -i */
    int aliases;         /* alias ... / newaliases: aliases(5) input */
};

struct env {
    struct cfg_schema *schema;
    struct module_set *modules;
    struct cfg *cfg;
    struct tbl_registry *reg;
    int utf8;
    const char *default_type;
};

static __attribute__((noreturn)) void usage_map(const char *what)
{
    fprintf(stderr,
            "usage: petrelctl [-c config_directory] %s build [-fnNprwF] [-i] [TYPE:]FILE ...\n"
            "       petrelctl [-c config_directory] %s query [-fF] TYPE:NAME KEY|-\n"
            "       petrelctl [-c config_directory] %s dump [-F] TYPE:NAME\n"
            "       petrelctl [-c config_directory] %s delete [-f] TYPE:NAME KEY|-\n",
            what, what, what, what);
    exit(2);
}

static int env_load(const char *confdir, struct env *e)
{
    memset(e, 0, sizeof(*e));
    e->schema = cfg_schema_new();
    e->modules = module_set_load(e->schema, confdir);
    if (e->modules == NULL) {
        fprintf(stderr, "petrelctl: %s/main.cf: the modules it lists could not be loaded (see above)\n", confdir);
        return -1;
    }
    int nerrors = 0;
    e->cfg = cfg_load(e->schema, confdir, &nerrors);
    if (e->cfg == NULL) {
        fprintf(stderr, "petrelctl: %s/main.cf: %d error%s (see above)\n", confdir, nerrors, nerrors == 1 ? "" : "s");
        return -1;
    }
    module_set_bind(e->modules, e->cfg);
    e->reg = tbl_registry_new();
    if (module_set_register_tables(e->modules, e->reg) != 0)
        return -1;
    e->utf8 = cfg_bool(e->cfg, "smtputf8_enable");
    e->default_type = cfg_get(e->cfg, "default_database_type");
    if (e->default_type == NULL || *e->default_type == '\0')
        e->default_type = "hash";
    return 0;
}

static void env_free(struct env *e)
{
    module_set_tables_gone(e->modules, e->reg);
    tbl_registry_free(e->reg);
    cfg_free(e->cfg);
    module_set_free(e->modules);
    cfg_schema_free(e->schema);
}

/* "FILE" means default_database_type:FILE, as for postmap. */
static char *full_spec(const struct env *e, const char *arg)
{
    if (strchr(arg, ':') == NULL)
        return tbl_strprintf("%s:%s", e->default_type, arg);
    return xstrdup(arg);
}

static const char *spec_name(const char *spec)
{
    if (strncmp(spec, "proxy:", 6) == 0)
        spec += 6;
    const char *colon = strchr(spec, ':');
    return colon ? colon + 1 : spec;
}

/* ------------------------------------------------------------------ */
/* base64 (-F)                                                         */

static const char b64chars[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

static void b64_encode(struct buf *out, const unsigned char *in, size_t len)
{
    for (size_t i = 0; i < len; i += 3) {
        unsigned v = (unsigned)in[i] << 16 | (i + 1 < len ? (unsigned)in[i + 1] << 8 : 0) |
                     (i + 2 < len ? in[i + 2] : 0);
        buf_putc(out, b64chars[(v >> 18) & 63]);
        buf_putc(out, b64chars[(v >> 12) & 63]);
        buf_putc(out, i + 1 < len ? b64chars[(v >> 6) & 63] : '=');
        buf_putc(out, i + 2 < len ? b64chars[v & 63] : '=');
    }
    buf_puts(out, "");
}

static int b64_decode(struct buf *out, const char *in)
{
    unsigned v = 0;
    int bits = 0;
    size_t len = strlen(in);
    if (len % 4 != 0)
        return -1;
    for (size_t i = 0; i < len; i++) {
        const char *p = strchr(b64chars, in[i]);
        if (in[i] == '=') {
            if (i < len - 2 || (i == len - 2 && in[len - 1] != '='))
                return -1;
            break;
        }
        if (p == NULL || in[i] == '\0')
            return -1;
        v = (v << 6) | (unsigned)(p - b64chars);
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            buf_putc(out, (char)((v >> bits) & 0xff));
        }
    }
    buf_puts(out, "");
    return 0;
}

/* postmap -F: the value names files; store their contents, base64. */
static int files_to_b64(const char *names, struct buf *out, char **error)
{
    char **files = cfg_split_list(names);
    struct buf content = BUF_INIT;
    int status = 0;
    if (files[0] == NULL) {
        *error = tbl_strprintf("empty pathname list: >>%s<<", names);
        status = -1;
    }
    for (size_t i = 0; status == 0 && files[i]; i++) {
        FILE *fp = fopen(files[i], "re");
        if (fp == NULL) {
            *error = tbl_strprintf("open %s: %s", files[i], strerror(errno));
            status = -1;
            break;
        }
        char chunk[8192];
        size_t n;
        while ((n = fread(chunk, 1, sizeof(chunk), fp)) > 0)
            buf_append(&content, chunk, n);
        if (ferror(fp)) {
            *error = tbl_strprintf("read %s: %s", files[i], strerror(errno));
            status = -1;
        }
        fclose(fp);
        if (files[i + 1])
            buf_putc(&content, '\n');
    }
    cfg_list_free(files);
    if (status == 0) {
        buf_reset(out);
        b64_encode(out, (const unsigned char *)(content.data ? content.data : ""), content.len);
    }
    buf_free(&content);
    return status;
}

/* ------------------------------------------------------------------ */
/* building                                                            */

struct build_state {
    struct tbl_build *b;
    const char *spec;
    const struct opts *o;
    int nul;             /* decided: 1 with NUL, 0 without */
    int failed;
    /* -d: keys to leave out when copying, and how many were left out */
    char **deletes;
    size_t ndeletes;
    size_t deleted;
    int *hit;
};

/* Stores one entry as postmap would. */
static int store(struct build_state *st, const char *key, const char *value)
{
    char *k = st->o->fold ? tbl_fold_malloc(key) : xstrdup(key);
    char *error = NULL;
    int rc = tbl_build_put(st->b, k, strlen(k) + (size_t)st->nul, value, strlen(value) + (size_t)st->nul,
                           st->o->dup == DUP_REPLACE, &error);
    if (rc < 0) {
        fprintf(stderr, "petrelctl: %s: key \"%s\": %s\n", st->spec, k, error);
        st->failed = 1;
    } else if (rc == 1 && st->o->dup == DUP_WARN) {
        msg_warn("%s: duplicate entry: \"%s\"", st->spec, k);
    }
    free(error);
    free(k);
    return rc < 0 ? -1 : 0;
}

/* -d: does this stored key (raw bytes) name one of the keys to delete? */
static int deleting(struct build_state *st, const void *key, size_t klen)
{
    for (size_t i = 0; i < st->ndeletes; i++) {
        size_t len = strlen(st->deletes[i]);
        if (st->hit[i])
            continue;   /* one entry per key, as postmap -d */
        if ((klen == len + 1 && memcmp(key, st->deletes[i], len + 1) == 0) ||
            (klen == len && memcmp(key, st->deletes[i], len) == 0)) {
            st->hit[i] = 1;
            return 1;
        }
    }
    return 0;
}

static int copy_entry(void *arg, const void *key, size_t klen, const void *value, size_t vlen)
{
    struct build_state *st = arg;
    if (st->nul < 0)
        st->nul = klen > 0 && ((const char *)key)[klen - 1] == '\0';
    if (st->ndeletes && deleting(st, key, klen)) {
        st->deleted++;
        return 0;
    }
    char *error = NULL;
    if (tbl_build_put(st->b, key, klen, value, vlen, 1, &error) < 0) {
        fprintf(stderr, "petrelctl: %s: %s\n", st->spec, error);
        free(error);
        st->failed = 1;
        return 1;
    }
    return 0;
}

/* Printable copy of a line for a warning about it. */
static char *printable(const char *s)
{
    char *copy = xstrdup(s);
    for (char *p = copy; *p; p++)
        if ((unsigned char)*p < 0x20 || (unsigned char)*p >= 0x7f)
            *p = '?';
    return copy;
}

/* Reads the source (the file path, or stdin for -i when path is NULL)
 * into the table. */
static int read_source(const struct env *e, struct build_state *st, const char *path, const char *label)
{
    struct tbl_file f;
    char *error = NULL;
    int opened = path ? tbl_file_open(&f, path, &error) : tbl_file_open_stream(&f, stdin, label);
    if (opened != 0) {
        fprintf(stderr, "petrelctl: %s\n", error);
        free(error);
        return -1;
    }
    f.path = label;
    struct buf key = BUF_INIT, value = BUF_INIT, b64 = BUF_INIT;
    int r;
    while ((r = tbl_file_next(&f, &error)) > 0 && !st->failed) {
        char *line = f.line.data;
        const char *why = NULL;
        if (e->utf8 && !tbl_valid_utf8(line)) {
            char *shown = printable(line);
            msg_warn("%s, line %d: non-UTF-8 input \"%s\" -- ignoring this line", label, f.lineno, shown);
            free(shown);
            continue;
        }
        const char *k, *v;
        if (st->o->aliases) {
            if (tbl_alias_split(line, &key, &value, &why) != 0) {
                msg_warn("%s, line %d: %s", label, f.lineno, why);
                continue;
            }
            k = key.data;
            v = value.data;
        } else {
            char *kk, *vv;
            if (tbl_source_split(line, &kk, &vv, &why) != 0) {
                msg_warn("%s, line %d: %s%s", label, f.lineno, why,
                         strcmp(why, "unbalanced '\"'") == 0 ? " -- ignoring this line" : "");
                continue;
            }
            if (kk[strlen(kk) - 1] == ':')
                msg_warn("%s, line %d: record is in \"key: value\" format; is this an alias file?", label,
                         f.lineno);
            k = kk;
            v = vv;
        }
        if (st->o->b64) {
            char *ferr = NULL;
            if (files_to_b64(v, &b64, &ferr) != 0) {
                msg_warn("%s, line %d: %s: skipping this entry", label, f.lineno, ferr);
                free(ferr);
                continue;
            }
            v = b64.data;
        }
        store(st, k, v);
    }
    if (r < 0) {
        fprintf(stderr, "petrelctl: %s %s\n", label, error);
        free(error);
        st->failed = 1;
    }
    tbl_file_close(&f);
    buf_free(&key);
    buf_free(&value);
    buf_free(&b64);
    return st->failed ? -1 : 0;
}

/* Serialises builds in the compiled file's directory (-i and -d read,
 * change and write back: two at once would lose an update). */
static int lock_directory(const char *compiled)
{
    char *copy = xstrdup(compiled);
    int fd = open(dirname(copy), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    free(copy);
    if (fd >= 0 && flock(fd, LOCK_EX) != 0) {
        close(fd);
        fd = -1;
    }
    return fd;
}

/* Rewrites spec: the existing entries (for -i and -d), then the source
 * (none for -d). Returns 0, 1 (-d: nothing to delete), or -1. */
static int rewrite(const struct env *e, const char *spec, const struct opts *o, char **deletes, size_t ndeletes)
{
    const struct tbl_type *type = NULL;
    char *compiled = tbl_compiled_path(e->reg, spec, &type);
    if (strncmp(spec, "proxy:", 6) == 0) {
        fprintf(stderr, "petrelctl: %s: cannot build tables through proxy:\n", spec);
        free(compiled);
        return -1;
    }
    int lock = compiled ? lock_directory(compiled) : -1;
    int existing = compiled && access(compiled, F_OK) == 0;
    const char *name = spec_name(spec);
    int from_source = !o->incremental && ndeletes == 0;
    struct tbl_build_options bo = { .source = from_source ? name : existing ? compiled : NULL,
                                    .default_mode = o->default_mode };
    char *error = NULL;
    struct build_state st = { .spec = spec, .o = o, .nul = o->nul, .deletes = deletes, .ndeletes = ndeletes };
    st.hit = xcalloc(ndeletes ? ndeletes : 1, sizeof(int));
    int status = -1;
    if (from_source && access(name, R_OK) != 0) {
        fprintf(stderr, "petrelctl: open %s: %s\n", name, strerror(errno));
        goto out;
    }
    if (ndeletes && !existing) {
        fprintf(stderr, "petrelctl: %s: %s: %s\n", spec, compiled ? compiled : name, strerror(ENOENT));
        goto out;
    }
    st.b = tbl_build_begin(e->reg, spec, &bo, &error);
    if (st.b == NULL) {
        fprintf(stderr, "petrelctl: %s\n", error);
        goto out;
    }
    if (existing && !from_source) {
        struct tbl *old = tbl_open(e->reg, spec, 0, &error);
        if (old == NULL || tbl_iterate(old, copy_entry, &st, &error) != 0) {
            fprintf(stderr, "petrelctl: %s\n", error);
            st.failed = 1;
        }
        tbl_close(old);
    }
    if (st.nul < 0)
        st.nul = 1;   /* Postfix's default on Linux */
    if (!st.failed && !ndeletes)
        read_source(e, &st, o->incremental ? NULL : name, o->incremental ? "stdin" : name);
    if (!st.failed && o->aliases && !ndeletes) {
        /* sendmail's "the database is complete" mark, as postalias writes it */
        struct opts mark = *o;
        mark.dup = DUP_REPLACE;
        st.o = &mark;
        store(&st, "@", "@");
        st.o = o;
    }
    if (st.failed || (ndeletes && st.deleted == 0)) {
        tbl_build_abort(st.b);
        status = st.failed ? -1 : 1;
        goto out;
    }
    if (tbl_build_commit(st.b, &error) != 0) {
        fprintf(stderr, "petrelctl: %s: %s\n", spec, error);
        goto out;
    }
    status = 0;
out:
    free(error);
    free(st.hit);
    free(compiled);
    if (lock >= 0)
        close(lock);
    return status;
}

/* ------------------------------------------------------------------ */
/* reading                                                             */

static void print_entry(const struct opts *o, const char *key, const char *value, int with_key)
{
    struct buf decoded = BUF_INIT;
    if (o->b64) {
        if (b64_decode(&decoded, value) != 0) {
            msg_warn("table value for \"%s\": malformed BASE64 value", key);
            buf_free(&decoded);
            return;
        }
        value = decoded.data;
    }
    if (with_key)
        printf(o->aliases ? "%s:\t%s\n" : "%s\t%s\n", key, value);
    else
        printf("%s\n", value);
    buf_free(&decoded);
}

static int dump_entry(void *arg, const void *key, size_t klen, const void *value, size_t vlen)
{
    const struct opts *o = arg;
    char *k = xstrndup(key, strnlen(key, klen));
    char *v = xstrndup(value, strnlen(value, vlen));
    print_entry(o, k, v, 1);
    free(k);
    free(v);
    return 0;
}

static struct tbl *open_for_reading(const struct env *e, const char *spec, const struct opts *o)
{
    char *error = NULL;
    struct tbl *t = tbl_open(e->reg, spec, (o->fold ? TBL_FLAG_FOLD_CASE : 0) | (o->aliases ? TBL_FLAG_ALIASES : 0),
                             &error);
    if (t == NULL) {
        fprintf(stderr, "petrelctl: %s\n", error);
        free(error);
    }
    return t;
}

/* Returns 0 found, 1 not found, 2 error. */
static int query(const struct env *e, const char *spec, const struct opts *o, const char *key)
{
    struct tbl *t = open_for_reading(e, spec, o);
    if (t == NULL)
        return 2;
    int found = 0, failed = 0;
    char line[TBL_LINE_MAX];
    if (strcmp(key, "-") == 0) {
        while (fgets(line, sizeof(line), stdin)) {
            line[strcspn(line, "\r\n")] = '\0';
            const char *value;
            int rc = tbl_lookup(t, line, &value);
            if (rc == TBL_FOUND) {
                print_entry(o, line, value, 1);
                found = 1;
            } else if (rc == TBL_ERROR) {
                fprintf(stderr, "petrelctl: %s: lookup error for \"%s\"\n", spec, line);
                failed = 1;
            }
        }
    } else {
        const char *value;
        int rc = tbl_lookup(t, key, &value);
        if (rc == TBL_FOUND) {
            print_entry(o, key, value, 0);
            found = 1;
        } else if (rc == TBL_ERROR) {
            fprintf(stderr, "petrelctl: %s: lookup error for \"%s\"\n", spec, key);
            failed = 1;
        }
    }
    tbl_close(t);
    return found ? 0 : failed ? 2 : 1;
}

/* ------------------------------------------------------------------ */
/* the commands                                                        */

/* Option clusters ("-fN") before the arguments. */
static int parse_opts(int argc, char **argv, const char *allowed, struct opts *o, const char *what)
{
    int i = 1;
    for (; i < argc && argv[i][0] == '-' && argv[i][1] != '\0'; i++) {
        if (strcmp(argv[i], "--") == 0)
            return i + 1;
        for (const char *c = argv[i] + 1; *c; c++) {
            if (strchr(allowed, *c) == NULL) {
                fprintf(stderr, "petrelctl: %s %s: unknown option -%c\n", what, argv[0], *c);
                usage_map(what);
            }
            switch (*c) {
            case 'f': o->fold = 0; break;
            case 'n': o->nul = 0; break;
            case 'N': o->nul = 1; break;
            case 'F': o->b64 = 1; break;
            case 'p': o->default_mode = 1; break;
            case 'r': o->dup = DUP_REPLACE; break;
            case 'w': o->dup = DUP_IGNORE; break;
            case 'i': o->incremental = 1; break;
            }
        }
    }
    return i;
}

int map_main(const char *confdir, int aliases, int argc, char **argv)
{
    const char *what = aliases ? "alias" : "map";
    if (argc < 1)
        usage_map(what);
    const char *sub = argv[0];
    struct opts o = { .fold = 1, .nul = -1, .dup = DUP_WARN, .aliases = aliases };
    int first;
    if (strcmp(sub, "build") == 0)
        first = parse_opts(argc, argv, "fnNprwFi", &o, what);
    else if (strcmp(sub, "query") == 0)
        first = parse_opts(argc, argv, "fF", &o, what);
    else if (strcmp(sub, "dump") == 0)
        first = parse_opts(argc, argv, "F", &o, what);
    else if (strcmp(sub, "delete") == 0)
        first = parse_opts(argc, argv, "f", &o, what);
    else
        usage_map(what);
    int nargs = argc - first;
    if (nargs < 1 || (strcmp(sub, "query") == 0 && nargs != 2) || (strcmp(sub, "delete") == 0 && nargs != 2) ||
        (strcmp(sub, "dump") == 0 && nargs != 1) || (o.incremental && nargs != 1))
        usage_map(what);
    struct env e;
    if (env_load(confdir, &e) != 0) {
        env_free(&e);
        return 1;
    }
    int status = 0;
    if (strcmp(sub, "build") == 0) {
        for (int i = first; i < argc; i++) {
            char *spec = full_spec(&e, argv[i]);
            if (rewrite(&e, spec, &o, NULL, 0) != 0)
                status = 1;
            free(spec);
        }
    } else if (strcmp(sub, "query") == 0) {
        char *spec = full_spec(&e, argv[first]);
        status = query(&e, spec, &o, argv[first + 1]);
        free(spec);
    } else if (strcmp(sub, "dump") == 0) {
        char *spec = full_spec(&e, argv[first]);
        struct tbl *t = open_for_reading(&e, spec, &o);
        char *error = NULL;
        if (t == NULL) {
            status = 1;
        } else if (tbl_iterate(t, dump_entry, &o, &error) != 0) {
            fprintf(stderr, "petrelctl: %s\n", error);
            free(error);
            status = 1;
        }
        tbl_close(t);
        free(spec);
    } else {
        char *spec = full_spec(&e, argv[first]);
        const char *key = argv[first + 1];
        char **keys = NULL;
        size_t nkeys = 0;
        char line[TBL_LINE_MAX];
        if (strcmp(key, "-") == 0) {
            while (fgets(line, sizeof(line), stdin)) {
                line[strcspn(line, "\r\n")] = '\0';
                if (*line == '\0')
                    continue;
                keys = xrealloc(keys, (nkeys + 1) * sizeof(*keys));
                keys[nkeys++] = xstrdup(line);
            }
        } else {
            keys = xmalloc(sizeof(*keys));
            keys[nkeys++] = xstrdup(key);
        }
        for (size_t i = 0; i < nkeys && o.fold; i++) {
            char *folded = tbl_fold_malloc(keys[i]);
            free(keys[i]);
            keys[i] = folded;
        }
        int rc = nkeys ? rewrite(&e, spec, &o, keys, nkeys) : 1;
        status = rc < 0 ? 2 : rc;
        for (size_t i = 0; i < nkeys; i++)
            free(keys[i]);
        free(keys);
        free(spec);
    }
    env_free(&e);
    return status;
}

int newaliases_main(const char *confdir, int argc, char **argv)
{
    if (argc > 1) {
        fprintf(stderr, "usage: petrelctl [-c config_directory] newaliases\n");
        return 2;
    }
    struct env e;
    if (env_load(confdir, &e) != 0) {
        env_free(&e);
        return 1;
    }
    struct opts o = { .fold = 1, .nul = -1, .dup = DUP_WARN, .aliases = 1 };
    int status = 0;
    for (const char *const *item = cfg_list(e.cfg, "alias_database"); *item; item++) {
        char *spec = full_spec(&e, *item);
        const struct tbl_type *type = NULL;
        char *compiled = tbl_compiled_path(e.reg, spec, &type);
        if (type != NULL && compiled == NULL)
            msg_info("alias_database: %s: nothing to build (%s: tables read their source directly)", spec,
                     type->name);
        else if (rewrite(&e, spec, &o, NULL, 0) != 0)
            status = 1;
        free(compiled);
        free(spec);
    }
    env_free(&e);
    return status;
}
