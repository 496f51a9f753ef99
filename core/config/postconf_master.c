/*
 * `petrelctl config -M / -F / -P`: Postfix's postconf for master.cf.
 *
 * Showing: -M prints entries, -F their fields as service/type/field =
 * value, -P their -o options as service/type/parameter = value, each
 * filtered by service[/type[/field or parameter]] patterns where a missing
 * or "*" part matches anything; -f folds long lines, -h prints values only.
 * The output is postconf's, so scripts and people who know it read it the
 * same: the eight columns at postconf's positions, "-o name=value" with
 * "name = value" inside { } normalized to "name=value", { } around any
 * argument that contains white space, and, when folding, each -o option
 * on a line of its own indented by four spaces.
 *
 * Editing: -M service/type='entry' replaces or adds an entry, -MX removes
 * entries, -M# comments them out, -F service/type/field=value replaces a
 * field (command: the command and its arguments), -P service/type/name=value
 * adds or replaces an -o option and -PX removes one. As postconf does, only
 * the entries an edit touches are rewritten (folded); every other line,
 * comments included, stays as written, and the file is replaced through a
 * temporary file and rename().
 */
#include "config.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "config/config_impl.h"
#include "config/postconf_int.h"
#include "lib/xalloc.h"

#define LINE_LIMIT 80          /* fold before this column */
#define INDENT "    "
#define INDENT_LEN 4
#define MIN_FIELDS 8

static const char *const field_names[MIN_FIELDS] = {
    "service", "type", "private", "unprivileged", "chroot", "wakeup", "process_limit", "command",
};

/* ---- one entry: its words, normalized as postconf normalizes them ---- */

struct words {
    char **v;
    size_t n, cap;
};

static void words_add(struct words *w, const char *text, size_t len)
{
    if (w->n + 2 > w->cap) {
        w->cap = w->cap ? w->cap * 2 : 16;
        w->v = xrealloc(w->v, w->cap * sizeof(*w->v));
    }
    w->v[w->n++] = xstrndup(text, len);
    w->v[w->n] = NULL;
}

static void words_insert(struct words *w, size_t at, const char *text)
{
    words_add(w, text, strlen(text));
    char *moved = w->v[w->n - 1];
    memmove(w->v + at + 1, w->v + at, (w->n - 1 - at) * sizeof(*w->v));
    w->v[at] = moved;
}

static void words_remove(struct words *w, size_t at, size_t count)
{
    for (size_t i = at; i < at + count; i++)
        free(w->v[i]);
    memmove(w->v + at, w->v + at + count, (w->n - at - count + 1) * sizeof(*w->v));
    w->n -= count;
}

static void words_free(struct words *w)
{
    for (size_t i = 0; i < w->n; i++)
        free(w->v[i]);
    free(w->v);
    memset(w, 0, sizeof(*w));
}

/* White-space separated words of text; { } (nested) keep their spaces, as
 * petreld reads master.cf. */
static void split_words(const char *text, struct words *out)
{
    size_t n;
    char **tok = cfg_master_tokenize(text, &n);
    for (size_t i = 0; i < n; i++)
        words_add(out, tok[i], strlen(tok[i]));
    cfg_list_free(tok);
}

/* "{ text }" -> "text": the braces and the white space inside them go. */
static void strip_braces(char **word)
{
    size_t len = strlen(*word);
    if (len < 2 || (*word)[0] != '{' || (*word)[len - 1] != '}')
        return;
    char *inner = xstrndup(*word + 1, len - 2);
    char *trimmed = xstrdup(cfg_trim(inner));
    free(inner);
    free(*word);
    *word = trimmed;
}

/* "name = value" -> "name=value". */
static void normalize_nameval(char **word)
{
    char *eq = strchr(*word, '=');
    if (eq == NULL)
        return;
    char *name = xstrndup(*word, (size_t)(eq - *word));
    char *value = xstrdup(eq + 1);
    char *joined = xasprintf("%s=%s", cfg_trim(name), cfg_trim(value));
    free(name);
    free(value);
    free(*word);
    *word = joined;
}

/* Postfix's normalization of the daemon arguments: "-oname=value" becomes
 * "-o" "name=value", "-o { name = value }" becomes "-o" "name=value", and
 * a non-option argument in { } loses them. */
static void normalize_args(struct words *w)
{
    size_t i = MIN_FIELDS;
    for (; i < w->n; i++) {
        char *arg = w->v[i];
        if (arg[0] != '-' || strcmp(arg, "--") == 0)
            break;
        char *o = strchr(arg + 1, 'o');
        if (o && o > arg + 1) {
            /* "-vo..." -> "-v" "-o..." */
            char *rest = xasprintf("-%s", o);
            *o = '\0';
            words_insert(w, i + 1, rest);
            free(rest);
            continue;
        }
        if (arg[1] != 'o')
            continue;
        if (arg[2] != '\0') {
            words_insert(w, i + 1, arg + 2);
            w->v[i][2] = '\0';
        } else if (i + 1 >= w->n) {
            continue;
        }
        i++;
        if (w->v[i][0] == '{') {
            strip_braces(&w->v[i]);
            normalize_nameval(&w->v[i]);
        }
    }
    for (; i < w->n; i++)
        if (w->v[i][0] == '{')
            strip_braces(&w->v[i]);
}

/* The words of one logical master.cf line; -1 when it has too few columns. */
static int parse_entry(const char *text, struct words *w)
{
    memset(w, 0, sizeof(*w));
    split_words(text, w);
    if (w->n < MIN_FIELDS) {
        words_free(w);
        return -1;
    }
    normalize_args(w);
    return 0;
}

/* ---- printing, as postconf prints ---- */

struct out {
    struct buf b;
    int len;                  /* of the current output line */
};

static void put(struct out *o, const char *text)
{
    buf_puts(&o->b, text);
    o->len += (int)strlen(text);
}

static int has_blank(const char *s)
{
    return s[strcspn(s, " \t\r\n")] != '\0';
}

/* The command arguments after words[first], postconf's way: an -o option
 * and its value stay together and, when folding, get a line of their own;
 * another argument goes on the line while it fits. */
static void put_args(struct out *o, char *const *v, size_t n, size_t first, int fold)
{
    int options = 1;
    for (size_t i = first; i < n; i++) {
        const char *arg = v[i];
        const char *value = NULL;
        int len = (int)strlen(arg), parens = 0;
        if (options) {
            if (arg[0] != '-' || strcmp(arg, "--") == 0) {
                options = 0;
            } else if (arg[1] == 'o' && i + 1 < n) {
                value = v[i + 1];
                o->len = LINE_LIMIT;   /* an option with a value starts a line */
                len += (int)strlen(value) + 3;
                if ((parens = has_blank(value)) != 0)
                    len += 2;
            }
        }
        if (!options)
            parens = has_blank(arg);
        if (o->len > INDENT_LEN) {
            if (!fold || o->len + 1 + len < LINE_LIMIT) {
                put(o, " ");
            } else {
                buf_puts(&o->b, "\n" INDENT);
                o->len = INDENT_LEN;
            }
        }
        if (!options && parens)
            put(o, "{");
        put(o, arg);
        if (!options && parens)
            put(o, "}");
        if (value) {
            put(o, " ");
            if (parens)
                put(o, "{");
            put(o, value);
            if (parens)
                put(o, "}");
            i++;
            o->len = LINE_LIMIT;   /* and ends it */
        }
    }
}

static void print_entry(struct out *o, const struct words *w, int fold)
{
    static const int column[MIN_FIELDS] = { 0, 11, 17, 25, 33, 41, 49, 57 };
    o->len = 0;
    for (size_t f = 0; f < MIN_FIELDS; f++) {
        if (o->len > 0)
            do
                put(o, " ");
            while (o->len < column[f]);
        put(o, w->v[f]);
    }
    put_args(o, w->v, w->n, MIN_FIELDS, fold);
    buf_puts(&o->b, "\n");
}

/* ---- the file: entries with the physical lines they span ---- */

struct text_line {
    char *text;
    int drop;
    char *replacement;         /* printed instead of the line (an edited entry) */
};

struct entry {
    size_t first, last;        /* physical lines */
    struct words w;
    char *logical;
};

struct master_file {
    char *path;
    struct text_line *lines;
    size_t nlines;
    struct entry *entries;
    size_t nentries;
};

static int is_noise(const char *s)
{
    while (*s == ' ' || *s == '\t' || *s == '\r')
        s++;
    return *s == '\0' || *s == '#';
}

static void file_free(struct master_file *f)
{
    for (size_t i = 0; i < f->nlines; i++) {
        free(f->lines[i].text);
        free(f->lines[i].replacement);
    }
    free(f->lines);
    for (size_t i = 0; i < f->nentries; i++) {
        words_free(&f->entries[i].w);
        free(f->entries[i].logical);
    }
    free(f->entries);
    free(f->path);
}

/* Reads and parses master.cf; -1 after a message when it cannot. */
static int file_load(const char *confdir, struct master_file *f)
{
    memset(f, 0, sizeof(*f));
    f->path = xasprintf("%s/master.cf", confdir);
    FILE *fp = fopen(f->path, "r");
    if (fp == NULL) {
        fprintf(stderr, "petrelctl: error: open %s: %s\n", f->path, strerror(errno));
        return -1;
    }
    struct buf b = BUF_INIT;
    size_t cap = 0, total = 0;
    int c;
    buf_append(&b, "", 0);
    for (;;) {
        c = getc(fp);
        if (c != EOF && c != '\n') {
            if (++total > POSTCONF_MAX_FILE) {
                fclose(fp);
                buf_free(&b);
                fprintf(stderr, "petrelctl: error: %s is too large\n", f->path);
                return -1;
            }
            buf_putc(&b, (char)c);
            continue;
        }
        if (c == EOF && b.len == 0)
            break;
        if (f->nlines == cap) {
            cap = cap ? cap * 2 : 64;
            f->lines = xrealloc(f->lines, cap * sizeof(*f->lines));
        }
        f->lines[f->nlines].text = xstrdup(b.data);
        f->lines[f->nlines].drop = 0;
        f->lines[f->nlines++].replacement = NULL;
        buf_reset(&b);
        if (c == EOF)
            break;
    }
    buf_free(&b);
    fclose(fp);

    size_t ecap = 0;
    for (size_t i = 0; i < f->nlines; i++) {
        const char *t = f->lines[i].text;
        if (is_noise(t) || t[0] == ' ' || t[0] == '\t')
            continue;
        struct entry e = { .first = i, .last = i };
        struct buf logical = BUF_INIT;
        buf_puts(&logical, t);
        for (size_t j = i + 1; j < f->nlines; j++) {
            const char *u = f->lines[j].text;
            if (is_noise(u))
                continue;
            if (u[0] != ' ' && u[0] != '\t')
                break;
            buf_puts(&logical, " ");
            buf_puts(&logical, u);
            e.last = j;
        }
        e.logical = xstrdup(logical.data);
        buf_free(&logical);
        if (parse_entry(e.logical, &e.w) < 0) {
            fprintf(stderr, "petrelctl: error: %s, line %zu: expected at least 8 columns\n", f->path, i + 1);
            free(e.logical);
            return -1;
        }
        if (f->nentries == ecap) {
            ecap = ecap ? ecap * 2 : 32;
            f->entries = xrealloc(f->entries, ecap * sizeof(*f->entries));
        }
        f->entries[f->nentries++] = e;
        i = e.last;
    }
    return 0;
}

struct master_cf_text {
    const struct master_file *f;
    const char *const *appended;
    size_t nappended;
};

static void emit_master_cf(FILE *fp, void *arg)
{
    const struct master_cf_text *t = arg;
    for (size_t i = 0; i < t->f->nlines; i++) {
        if (t->f->lines[i].replacement)
            fputs(t->f->lines[i].replacement, fp);
        else if (!t->f->lines[i].drop)
            fprintf(fp, "%s\n", t->f->lines[i].text);
    }
    for (size_t i = 0; i < t->nappended; i++)
        fputs(t->appended[i], fp);
}

static int file_write(struct master_file *f, const char *const *appended, size_t nappended)
{
    return postconf_replace_file(f->path, emit_master_cf, &(struct master_cf_text){ f, appended, nappended });
}

/* ---- patterns: service[/type[/field]], "*" or a missing part for any ---- */

struct pattern {
    char *part[3];
};

static int pattern_parse(const char *text, int min, int max, struct pattern *p)
{
    memset(p, 0, sizeof(*p));
    if (text[0] == '/')
        return -1;
    int n = 0;
    for (const char *s = text; *s;) {
        size_t len = strcspn(s, "/");
        if (len > 0) {
            if (n == max)
                goto bad;
            p->part[n] = xstrndup(s, len);
            if (strchr(p->part[n], '*') && strcmp(p->part[n], "*") != 0)
                goto bad;   /* "*" only by itself, as in postconf */
            n++;
        }
        s += len;
        s += *s == '/';
    }
    if (n < min)
        goto bad;
    for (; n < max; n++)
        p->part[n] = xstrdup("*");
    return 0;
bad:
    for (int i = 0; i < 3; i++)
        free(p->part[i]);
    memset(p, 0, sizeof(*p));
    return -1;
}

static void pattern_free(struct pattern *p)
{
    for (int i = 0; i < 3; i++)
        free(p->part[i]);
}

static int part_matches(const char *pattern, const char *text)
{
    return pattern == NULL || strcmp(pattern, "*") == 0 || strcmp(pattern, text) == 0;
}

/* ---- showing ---- */

/* The -o options of an entry as name -> value, last one winning, sorted. */
struct option {
    const char *name;
    char *value;
    size_t index;              /* of the value word */
};

static int option_cmp(const void *a, const void *b)
{
    return strcmp(((const struct option *)a)->name, ((const struct option *)b)->name);
}

static struct option *entry_options(const struct words *w, size_t *count)
{
    struct option *opts = xcalloc(w->n + 1, sizeof(*opts));
    size_t n = 0;
    for (size_t i = MIN_FIELDS; i < w->n; i++) {
        const char *arg = w->v[i];
        if (arg[0] != '-' || strcmp(arg, "--") == 0)
            break;
        if (strcmp(arg, "-o") != 0 || i + 1 >= w->n)
            continue;
        const char *nv = w->v[++i];
        const char *eq = strchr(nv, '=');
        char *name = eq ? xstrndup(nv, (size_t)(eq - nv)) : xstrdup(nv);
        size_t k;
        for (k = 0; k < n; k++)
            if (strcmp(opts[k].name, name) == 0)
                break;
        if (k == n) {
            opts[n++].name = name;
        } else {
            free(name);
            free(opts[k].value);
        }
        opts[k].value = xstrdup(eq ? eq + 1 : "");
        opts[k].index = i;
    }
    qsort(opts, n, sizeof(*opts), option_cmp);
    *count = n;
    return opts;
}

static void options_free(struct option *opts, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        free((char *)opts[i].name);
        free(opts[i].value);
    }
    free(opts);
}

/* "name = value", folded as postconf folds it: the value on a line of its
 * own when it does not fit after the name. */
static void print_named(struct out *o, const char *name, const char *value, int flags)
{
    o->len = 0;
    if (!(flags & PC_VALUE_ONLY)) {
        put(o, name);
        put(o, *value ? " = " : " =");   /* postconf writes no trailing space */
    }
    if (o->len > 0 && o->len + (int)strlen(value) > LINE_LIMIT && (flags & PC_FOLD)) {
        while (o->b.len > 0 && o->b.data[o->b.len - 1] == ' ')
            o->b.data[--o->b.len] = '\0';   /* "name =" ends its line without a space */
        buf_puts(&o->b, "\n" INDENT);
        o->len = INDENT_LEN;
    }
    put(o, value);
}

static int show(const char *confdir, int what, int flags, char **args, int nargs)
{
    struct master_file f;
    if (file_load(confdir, &f) < 0)
        return 1;
    int max = what == PC_MASTER_ENTRY ? 2 : 3;
    struct pattern *pats = xcalloc((size_t)nargs + 1, sizeof(*pats));
    int status = 0;
    for (int i = 0; i < nargs; i++)
        if (pattern_parse(args[i], 1, max, &pats[i]) < 0) {
            fprintf(stderr, "petrelctl: error: \"%s\": expected service_name%s\n", args[i],
                    what == PC_MASTER_ENTRY ? "[/type]" : what == PC_MASTER_FIELD ? "[/type[/field]]"
                                                                                 : "[/type[/parameter]]");
            status = 1;
        }
    if (what == PC_MASTER_FIELD)
        for (int i = 0; i < nargs && status == 0; i++) {
            int known = strcmp(pats[i].part[2], "*") == 0;
            for (int k = 0; k < MIN_FIELDS; k++)
                known |= strcmp(pats[i].part[2], field_names[k]) == 0;
            if (!known) {
                fprintf(stderr, "petrelctl: error: \"%s\": unknown field \"%s\" (service, type, private, "
                                "unprivileged, chroot, wakeup, process_limit or command)\n", args[i], pats[i].part[2]);
                status = 1;
            }
        }
    struct out o = { BUF_INIT, 0 };
    buf_append(&o.b, "", 0);
    for (size_t e = 0; e < f.nentries && status == 0; e++) {
        const struct words *w = &f.entries[e].w;
        int wanted = nargs == 0;
        for (int i = 0; i < nargs && !wanted; i++)
            wanted = part_matches(pats[i].part[0], w->v[0]) && part_matches(pats[i].part[1], w->v[1]);
        if (!wanted)
            continue;
        if (what == PC_MASTER_ENTRY) {
            print_entry(&o, w, flags & PC_FOLD);
        } else if (what == PC_MASTER_FIELD) {
            for (int k = 0; k < MIN_FIELDS; k++) {
                int field_wanted = nargs == 0;
                for (int i = 0; i < nargs && !field_wanted; i++)
                    field_wanted = part_matches(pats[i].part[0], w->v[0]) &&
                                   part_matches(pats[i].part[1], w->v[1]) &&
                                   part_matches(pats[i].part[2], field_names[k]);
                if (!field_wanted)
                    continue;
                char *name = xasprintf("%s/%s/%s", w->v[0], w->v[1], field_names[k]);
                print_named(&o, name, w->v[k], flags);
                free(name);
                if (k == MIN_FIELDS - 1)
                    put_args(&o, w->v, w->n, MIN_FIELDS, flags & PC_FOLD);
                buf_puts(&o.b, "\n");
            }
        } else {
            size_t n;
            struct option *opts = entry_options(w, &n);
            for (size_t k = 0; k < n; k++) {
                int param_wanted = nargs == 0;
                for (int i = 0; i < nargs && !param_wanted; i++)
                    param_wanted = part_matches(pats[i].part[0], w->v[0]) &&
                                   part_matches(pats[i].part[1], w->v[1]) &&
                                   part_matches(pats[i].part[2], opts[k].name);
                if (!param_wanted)
                    continue;
                char *name = xasprintf("%s/%s/%s", w->v[0], w->v[1], opts[k].name);
                print_named(&o, name, opts[k].value, flags);
                free(name);
                buf_puts(&o.b, "\n");
            }
            options_free(opts, n);
        }
    }
    fputs(o.b.data, stdout);
    fflush(stdout);
    buf_free(&o.b);
    for (int i = 0; i < nargs; i++)
        pattern_free(&pats[i]);
    free(pats);
    file_free(&f);
    return status;
}

/* ---- editing ---- */

struct edit {
    const char *raw;
    struct pattern pat;
    char *value;               /* NULL for -X and -# */
    int field;                 /* -F: which field */
    struct words entry;        /* -M name/type=entry: the new entry */
    int matched;
};

/* Replaces field k of w by value (the command field: the command and its
 * arguments, as postconf's -F does). */
static void set_field(struct words *w, int k, const char *value)
{
    if (k < MIN_FIELDS - 1) {
        free(w->v[k]);
        w->v[k] = xstrdup(value);
        return;
    }
    while (w->n > MIN_FIELDS - 1)
        words_remove(w, w->n - 1, 1);
    split_words(value, w);
    normalize_args(w);
}

/* Adds or replaces (or, with value NULL, removes) the -o option name. */
static void set_option(struct words *w, const char *name, const char *value)
{
    size_t nl = strlen(name), insert_at = MIN_FIELDS, i;
    int done = 0;
    for (i = MIN_FIELDS; i < w->n; i++) {
        const char *arg = w->v[i];
        if (arg[0] != '-' || strcmp(arg, "--") == 0)
            break;
        if (strcmp(arg, "-o") != 0 || i + 1 >= w->n) {
            insert_at = i + 1;
            continue;
        }
        const char *nv = w->v[i + 1];
        if (strncmp(nv, name, nl) == 0 && (nv[nl] == '=' || nv[nl] == '\0')) {
            if (value == NULL || done) {
                words_remove(w, i, 2);
                i--;
                continue;
            }
            free(w->v[i + 1]);
            w->v[i + 1] = xasprintf("%s=%s", name, value);
            done = 1;
        }
        i++;
        insert_at = i + 1;
    }
    if (!done && value) {
        char *nv = xasprintf("%s=%s", name, value);
        words_insert(w, insert_at, "-o");
        words_insert(w, insert_at + 1, nv);
        free(nv);
    }
}

static int edit(const char *confdir, int what, int mode, char **args, int nargs)
{
    struct master_file f;
    if (file_load(confdir, &f) < 0)
        return 1;
    int status = 0, max = what == PC_MASTER_ENTRY ? 2 : 3;
    struct edit *edits = xcalloc((size_t)nargs + 1, sizeof(*edits));
    for (int i = 0; i < nargs && status == 0; i++) {
        struct edit *ed = &edits[i];
        ed->raw = args[i];
        char *text = xstrdup(args[i]);
        char *eq = strchr(text, '=');
        if (strchr(text, '\n')) {
            fprintf(stderr, "petrelctl: error: \"%s\": no multi-line input\n", args[i]);
            status = 1;
        } else if (mode == PC_EDIT_SET && eq == NULL) {
            fprintf(stderr, "petrelctl: error: \"%s\": expected pattern=value\n", args[i]);
            status = 1;
        } else if (mode != PC_EDIT_SET && eq) {
            fprintf(stderr, "petrelctl: error: \"%s\": -X and -# take names without values\n", args[i]);
            status = 1;
        }
        if (status == 0) {
            if (eq) {
                *eq = '\0';
                ed->value = xstrdup(cfg_trim(eq + 1));
            }
            char *pattern = cfg_trim(text);
            if (pattern_parse(pattern, max, max, &ed->pat) < 0 || strcmp(ed->pat.part[0], "*") == 0 ||
                strcmp(ed->pat.part[1], "*") == 0 || (max == 3 && strcmp(ed->pat.part[2], "*") == 0)) {
                fprintf(stderr, "petrelctl: error: \"%s\": expected %s\n", args[i],
                        what == PC_MASTER_ENTRY ? "service_name/type" : what == PC_MASTER_FIELD
                                                                           ? "service_name/type/field"
                                                                           : "service_name/type/parameter");
                status = 1;
            }
        }
        if (status == 0 && what == PC_MASTER_FIELD) {
            ed->field = -1;
            for (int k = 0; k < MIN_FIELDS; k++)
                if (strcmp(ed->pat.part[2], field_names[k]) == 0)
                    ed->field = k;
            if (ed->field < 0) {
                fprintf(stderr, "petrelctl: error: \"%s\": unknown field \"%s\"\n", args[i], ed->pat.part[2]);
                status = 1;
            } else if (ed->value && ed->field < MIN_FIELDS - 1 && has_blank(ed->value)) {
                fprintf(stderr, "petrelctl: error: \"%s\": only the command field may contain white space\n",
                        args[i]);
                status = 1;
            }
        }
        if (status == 0 && what == PC_MASTER_PARAM && ed->value && has_blank(ed->value)) {
            fprintf(stderr, "petrelctl: error: \"%s\": a parameter value set with -P cannot contain white space\n",
                    args[i]);
            status = 1;
        }
        if (status == 0 && what == PC_MASTER_ENTRY && ed->value && parse_entry(ed->value, &ed->entry) < 0) {
            fprintf(stderr, "petrelctl: error: \"%s\": an entry needs at least 8 columns\n", args[i]);
            status = 1;
        }
        free(text);
    }
    char **appended = xcalloc((size_t)nargs + 1, sizeof(char *));
    size_t nappended = 0;
    for (size_t e = 0; e < f.nentries && status == 0; e++) {
        struct entry *en = &f.entries[e];
        int touched = 0, remove = 0, comment = 0, replaced_by = -1;
        for (int i = 0; i < nargs; i++) {
            struct edit *ed = &edits[i];
            int match = part_matches(ed->pat.part[0], en->w.v[0]) && part_matches(ed->pat.part[1], en->w.v[1]);
            /* -M name/type='other/type ...': the entry the new text names goes too. */
            if (!match && what == PC_MASTER_ENTRY && ed->value)
                match = strcmp(ed->entry.v[0], en->w.v[0]) == 0 && strcmp(ed->entry.v[1], en->w.v[1]) == 0;
            if (!match)
                continue;
            ed->matched++;
            if (mode == PC_EDIT_REMOVE && what != PC_MASTER_PARAM) {
                remove = 1;
            } else if (mode == PC_EDIT_COMMENT) {
                comment = 1;
            } else if (what == PC_MASTER_ENTRY) {
                if (ed->matched == 1)
                    replaced_by = i;
                else
                    remove = 1;
            } else if (what == PC_MASTER_FIELD) {
                set_field(&en->w, ed->field, ed->value);
                touched = 1;
            } else {
                set_option(&en->w, ed->pat.part[2], mode == PC_EDIT_REMOVE ? NULL : ed->value);
                touched = 1;
            }
        }
        if (comment) {
            /* -M#: the entry's lines get a '#'; comments among them stay. */
            for (size_t l = en->first; l <= en->last; l++)
                if (l == en->first || !is_noise(f.lines[l].text)) {
                    char *c = xasprintf("#%s", f.lines[l].text);
                    free(f.lines[l].text);
                    f.lines[l].text = c;
                }
            continue;
        }
        if (!remove && replaced_by < 0 && !touched)
            continue;
        /* The entry's own lines go; comments among them stay where they are. */
        for (size_t l = en->first; l <= en->last; l++)
            if (l == en->first || !is_noise(f.lines[l].text))
                f.lines[l].drop = 1;
        if (remove)
            continue;
        struct out o = { BUF_INIT, 0 };
        buf_append(&o.b, "", 0);
        print_entry(&o, replaced_by >= 0 ? &edits[replaced_by].entry : &en->w, 1);
        size_t at = en->first;
        if (touched) {
            /* An edited field or option: postconf reads the entry to its
             * end first (comments and blank lines after it included, up to
             * the next entry) and writes it after them. */
            at = en->last;
            while (at + 1 < f.nlines && is_noise(f.lines[at + 1].text))
                at++;
            if (!f.lines[at].drop) {
                char *both = xasprintf("%s\n%s", f.lines[at].text, o.b.data);
                f.lines[at].replacement = both;
                f.lines[at].drop = 1;
                buf_free(&o.b);
                continue;
            }
        }
        f.lines[at].replacement = xstrdup(o.b.data);
        buf_free(&o.b);
    }
    for (int i = 0; i < nargs && status == 0; i++) {
        if (edits[i].matched)
            continue;
        if (what == PC_MASTER_ENTRY && mode == PC_EDIT_SET) {
            struct out o = { BUF_INIT, 0 };
            buf_append(&o.b, "", 0);
            print_entry(&o, &edits[i].entry, 1);
            appended[nappended++] = o.b.data;
        } else if (what != PC_MASTER_ENTRY) {
            fprintf(stderr, "petrelctl: warning: unmatched service_name/type: \"%s\"\n", edits[i].raw);
        }
    }
    if (status == 0 && file_write(&f, (const char *const *)appended, nappended) < 0)
        status = 1;
    for (size_t i = 0; i < nappended; i++)
        free(appended[i]);
    free(appended);
    for (int i = 0; i < nargs; i++) {
        pattern_free(&edits[i].pat);
        free(edits[i].value);
        words_free(&edits[i].entry);
    }
    free(edits);
    file_free(&f);
    return status;
}

int postconf_master(const char *confdir, int what, int mode, int flags, char **args, int nargs)
{
    if (mode == PC_EDIT_NONE)
        return show(confdir, what, flags, args, nargs);
    if (nargs == 0) {
        fprintf(stderr, "petrelctl: error: nothing to edit\n");
        return 1;
    }
    if (mode == PC_EDIT_COMMENT && what != PC_MASTER_ENTRY) {
        fprintf(stderr, "petrelctl: error: -# comments out whole entries: use it with -M\n");
        return 1;
    }
    if (mode == PC_EDIT_REMOVE && what == PC_MASTER_FIELD) {
        fprintf(stderr, "petrelctl: error: -X removes entries (-M) or parameters (-P), not fields\n");
        return 1;
    }
    return edit(confdir, what, mode, args, nargs);
}
