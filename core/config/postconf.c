/*
 * `petrelctl config`: Postfix's postconf for main.cf.
 *
 * Display prints raw values as postconf does (-x expands), sorted by name.
 * Editing works on physical lines so comments, blank lines and order
 * survive: a definition (its first line plus its continuation lines) is
 * replaced where it stands, later duplicates are dropped, new names go at
 * the end, and the result replaces main.cf through a temporary file and
 * rename(), so a crash never leaves half a file.
 */
#include "config.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "config/config_impl.h"
#include "config/postconf_int.h"
#include "lib/xalloc.h"

enum { SHOW_DEFAULTS = 1, SHOW_NONDEFAULT = 2, SHOW_VALUE_ONLY = 4, SHOW_EXPANDED = 8,
       DO_EDIT = 16, DO_REMOVE = 32, DO_COMMENT = 64, FOLD = 128 };

static void print_entry(const char *name, const char *value, int flags)
{
    if (flags & SHOW_VALUE_ONLY)
        printf("%s\n", value);
    else if (*value)
        printf("%s = %s\n", name, value);
    else
        printf("%s =\n", name);
}

static const char *shown_value(struct cfg *cfg, struct cfg_value *v, int flags)
{
    if (flags & SHOW_DEFAULTS) {
        if (!v->param)
            return NULL;
        cfg_compute_fn *compute = cfg_computed_default(v->name);
        if (compute)
            return compute(cfg);
        return v->param->def ? v->param->def : "";
    }
    if (flags & SHOW_EXPANDED)
        return v->value ? v->value : "";
    return v->raw ? v->raw : "";
}

static int show(const struct cfg_schema *schema, const char *confdir, int flags, char **names, int nnames)
{
    struct cfg *cfg = cfg_load_generation(schema, confdir, 1);
    int status = 0;
    if (nnames > 0) {
        for (int i = 0; i < nnames; i++) {
            struct cfg_value *v = cfg_value_find(cfg, names[i]);
            const char *value = v ? shown_value(cfg, v, flags) : NULL;
            if (!value) {
                fprintf(stderr, "petrelctl: warning: %s: unknown parameter\n", names[i]);
                continue;
            }
            print_entry(v->name, value, flags);
        }
    } else {
        for (size_t i = 0; i < cfg->nvalues; i++) {
            struct cfg_value *v = &cfg->values[i];
            if ((flags & SHOW_NONDEFAULT) && !v->file)
                continue;
            const char *value = shown_value(cfg, v, flags);
            if (value)
                print_entry(v->name, value, flags);
        }
    }
    fflush(stdout);
    cfg_free(cfg);
    return status;
}

/* ---- editing ---- */

struct text_line {
    char *text;               /* without the newline */
    int drop;
};

static int line_is_noise(const char *s)
{
    while (*s == ' ' || *s == '\t' || *s == '\r')
        s++;
    return *s == '\0' || *s == '#';
}

/* The name a line in column 1 defines, or NULL; copied into name (bounded). */
static int definition_name(const char *line, char *name, size_t size)
{
    if (line[0] == ' ' || line[0] == '\t' || line_is_noise(line))
        return 0;
    const char *eq = strchr(line, '=');
    if (!eq)
        return 0;
    const char *end = eq;
    while (end > line && isspace((unsigned char)end[-1]))
        end--;
    size_t n = (size_t)(end - line);
    if (n == 0 || n >= size)
        return 0;
    memcpy(name, line, n);
    name[n] = '\0';
    return 1;
}

/* Index of the last line belonging to the definition starting at i. */
static size_t definition_end(struct text_line *lines, size_t n, size_t i)
{
    size_t end = i;
    for (size_t j = i + 1; j < n; j++) {
        const char *t = lines[j].text;
        if (line_is_noise(t))
            continue;
        if (t[0] != ' ' && t[0] != '\t')
            break;
        end = j;
    }
    return end;
}

static int read_lines(const char *path, struct text_line **out, size_t *nout)
{
    FILE *fp = fopen(path, "r");
    *out = NULL;
    *nout = 0;
    if (!fp)
        return errno == ENOENT ? 0 : -1;
    struct text_line *lines = NULL;
    size_t n = 0, cap = 0, total = 0;
    struct buf b = BUF_INIT;
    int c;
    buf_append(&b, "", 0);
    while ((c = getc(fp)) != EOF) {
        if (++total > POSTCONF_MAX_FILE) {
            errno = EFBIG;
            fclose(fp);
            buf_free(&b);
            for (size_t i = 0; i < n; i++)
                free(lines[i].text);
            free(lines);
            return -1;
        }
        if (c != '\n') {
            buf_putc(&b, (char)c);
            continue;
        }
        if (n == cap) {
            cap = cap ? cap * 2 : 64;
            lines = xrealloc(lines, cap * sizeof(*lines));
        }
        lines[n].text = xstrdup(b.data);
        lines[n++].drop = 0;
        buf_reset(&b);
    }
    if (b.len) {
        if (n == cap) {
            cap = cap ? cap * 2 : 64;
            lines = xrealloc(lines, cap * sizeof(*lines));
        }
        lines[n].text = xstrdup(b.data);
        lines[n++].drop = 0;
    }
    buf_free(&b);
    fclose(fp);
    *out = lines;
    *nout = n;
    return 0;
}

struct main_cf_text {
    struct text_line *lines;
    size_t n;
    char **appended;
    size_t nappended;
};

static void emit_main_cf(FILE *fp, void *arg)
{
    const struct main_cf_text *t = arg;
    for (size_t i = 0; i < t->n; i++)
        if (!t->lines[i].drop)
            fprintf(fp, "%s\n", t->lines[i].text);
    for (size_t i = 0; i < t->nappended; i++)
        fprintf(fp, "%s\n", t->appended[i]);
}

/* remove: 1 removes the definitions (-X), 2 comments them out (-#). */
static int edit(const char *confdir, int remove, char **args, int nargs)
{
    char *path = xmalloc(strlen(confdir) + 16);
    snprintf(path, strlen(confdir) + 16, "%s/main.cf", confdir);
    char **names = xcalloc((size_t)nargs + 1, sizeof(char *));
    char **newlines = xcalloc((size_t)nargs + 1, sizeof(char *));
    int *done = xcalloc((size_t)nargs + 1, sizeof(int));
    int status = 0;
    for (int i = 0; i < nargs && status == 0; i++) {
        const char *eq = remove ? NULL : strchr(args[i], '=');
        if (!remove && !eq) {
            fprintf(stderr, "petrelctl: error: \"%s\": expected name=value\n", args[i]);
            status = 1;
            break;
        }
        const char *end = eq ? eq : args[i] + strlen(args[i]);
        const char *name_end = end;
        while (name_end > args[i] && isspace((unsigned char)name_end[-1]))
            name_end--;
        names[i] = xstrndup(args[i], (size_t)(name_end - args[i]));
        for (const char *c = names[i]; *c || c == names[i]; c++)
            if (!*c || !cfg_param_name_char(*c)) {
                fprintf(stderr, "petrelctl: error: bad parameter name \"%s\"\n", names[i]);
                status = 1;
                break;
            }
        if (eq) {
            const char *value = eq + 1;
            while (isspace((unsigned char)*value))
                value++;
            size_t vl = strlen(value);
            while (vl && isspace((unsigned char)value[vl - 1]))
                vl--;
            if (memchr(value, '\n', vl) || memchr(value, '\r', vl)) {
                /* It would be written as several lines: another parameter, or
                 * text that silently joins this value. */
                fprintf(stderr, "petrelctl: error: %s: a value cannot contain a line break\n", names[i]);
                status = 1;
                break;
            }
            struct buf b = BUF_INIT;
            buf_printf(&b, "%s = %.*s", names[i], (int)vl, value);
            if (vl == 0)
                b.data[--b.len] = '\0';   /* "name =" like postconf writes */
            newlines[i] = b.data;
        }
    }
    struct text_line *lines = NULL;
    size_t n = 0;
    if (status == 0 && read_lines(path, &lines, &n) < 0) {
        fprintf(stderr, "petrelctl: error: read %s: %s\n", path, strerror(errno));
        status = 1;
    }
    if (status == 0) {
        char name[256];
        for (size_t i = 0; i < n; i++) {
            if (lines[i].drop || !definition_name(lines[i].text, name, sizeof(name)))
                continue;
            for (int k = nargs - 1; k >= 0; k--) {    /* the last of repeated arguments wins */
                if (strcmp(names[k], name) != 0)
                    continue;
                size_t end = definition_end(lines, n, i);
                if (remove == 2) {
                    /* -#: every line of the definition, as postconf does */
                    for (size_t j = i; j <= end; j++)
                        if (j == i || !line_is_noise(lines[j].text)) {
                            char *c = xasprintf("#%s", lines[j].text);
                            free(lines[j].text);
                            lines[j].text = c;
                        }
                    break;
                }
                for (size_t j = i + 1; j <= end; j++)
                    lines[j].drop = 1;
                if (remove || done[k]) {
                    lines[i].drop = 1;
                } else {
                    free(lines[i].text);
                    lines[i].text = xstrdup(newlines[k]);
                }
                for (int m = 0; m < nargs; m++)
                    if (strcmp(names[m], name) == 0)
                        done[m] = 1;
                break;
            }
        }
        char **appended = xcalloc((size_t)nargs + 1, sizeof(char *));
        size_t nappended = 0;
        for (int k = nargs - 1; k >= 0 && !remove; k--) {
            if (done[k])
                continue;
            appended[nappended++] = newlines[k];
            for (int m = 0; m < nargs; m++)
                if (strcmp(names[m], names[k]) == 0)
                    done[m] = 1;
        }
        /* appended was collected last-first; restore command-line order */
        for (size_t a = 0; a < nappended / 2; a++) {
            char *t = appended[a];
            appended[a] = appended[nappended - 1 - a];
            appended[nappended - 1 - a] = t;
        }
        if (postconf_replace_file(path, emit_main_cf, &(struct main_cf_text){ lines, n, appended, nappended }) < 0)
            status = 1;
        free(appended);
    }
    for (size_t i = 0; i < n; i++)
        free(lines[i].text);
    free(lines);
    for (int i = 0; i < nargs; i++) {
        free(names[i]);
        free(newlines[i]);
    }
    free(names);
    free(newlines);
    free(done);
    free(path);
    return status;
}

int postconf_main(const struct cfg_schema *schema, const char *confdir, int argc, char **argv)
{
    int flags = 0, i, master = 0;
    for (i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--") == 0) {
            i++;
            break;
        }
        if (a[0] != '-' || a[1] == '\0')
            break;
        for (const char *c = a + 1; *c; c++) {
            switch (*c) {
            case 'd': flags |= SHOW_DEFAULTS; break;
            case 'n': flags |= SHOW_NONDEFAULT; break;
            case 'h': flags |= SHOW_VALUE_ONLY; break;
            case 'x': flags |= SHOW_EXPANDED; break;
            case 'e': flags |= DO_EDIT; break;
            case 'X': flags |= DO_REMOVE; break;
            case '#': flags |= DO_COMMENT; break;
            case 'f': flags |= FOLD; break;
            case 'M':
            case 'F':
            case 'P':
                if (master && master != (*c == 'M' ? PC_MASTER_ENTRY : *c == 'F' ? PC_MASTER_FIELD : PC_MASTER_PARAM)) {
                    fprintf(stderr, "petrelctl: error: -M, -F and -P cannot be used together\n");
                    return 1;
                }
                master = *c == 'M' ? PC_MASTER_ENTRY : *c == 'F' ? PC_MASTER_FIELD : PC_MASTER_PARAM;
                break;
            case 'c':
                if (c[1] == '\0' && i + 1 < argc) {
                    confdir = argv[++i];
                    goto next;
                }
                fprintf(stderr, "petrelctl: error: -c needs a directory\n");
                return 1;
            default:
                fprintf(stderr, "usage: petrelctl config [-c confdir] [-d|-n] [-h] [-x] [name ...]\n"
                                "       petrelctl config [-e] name=value ...\n"
                                "       petrelctl config -X|-# name ...\n"
                                "       petrelctl config -M|-F|-P [-f] [-h] [service[/type[/name]] ...]\n"
                                "       petrelctl config -M service/type='entry' ... | -MX|-M# service/type ...\n"
                                "       petrelctl config -F service/type/field=value ...\n"
                                "       petrelctl config -P service/type/name=value ... | -PX service/type/name ...\n");
                return 1;
            }
        }
    next:;
    }
    char **rest = argv + i;
    int nrest = argc - i;
    for (int k = 0; k < nrest; k++)
        if (strchr(rest[k], '='))
            flags |= DO_EDIT;
    if (master) {
        if (flags & (SHOW_DEFAULTS | SHOW_NONDEFAULT | SHOW_EXPANDED)) {
            fprintf(stderr, "petrelctl: error: -d, -n and -x cannot be used with -M, -F or -P\n");
            return 1;
        }
        int modes = !!(flags & DO_EDIT) + !!(flags & DO_REMOVE) + !!(flags & DO_COMMENT);
        if (modes > 1) {
            fprintf(stderr, "petrelctl: error: editing with =, -X and -# cannot be combined\n");
            return 1;
        }
        int mode = flags & DO_EDIT ? PC_EDIT_SET : flags & DO_REMOVE ? PC_EDIT_REMOVE
                 : flags & DO_COMMENT ? PC_EDIT_COMMENT : PC_EDIT_NONE;
        return postconf_master(confdir, master, mode, (flags & FOLD ? PC_FOLD : 0) |
                               (flags & SHOW_VALUE_ONLY ? PC_VALUE_ONLY : 0), rest, nrest);
    }
    if (flags & FOLD) {
        /* postconf -f also folds main.cf output; Petrel does not (yet) */
        fprintf(stderr, "petrelctl: error: -f folds master.cf output only: use it with -M, -F or -P\n");
        return 1;
    }
    if ((flags & SHOW_DEFAULTS) && (flags & SHOW_NONDEFAULT)) {
        fprintf(stderr, "petrelctl: error: -d and -n cannot be used together\n");
        return 1;
    }
    if (flags & (DO_EDIT | DO_REMOVE | DO_COMMENT)) {
        if (!!(flags & DO_EDIT) + !!(flags & DO_REMOVE) + !!(flags & DO_COMMENT) > 1) {
            fprintf(stderr, "petrelctl: error: -e, -X and -# cannot be used together\n");
            return 1;
        }
        if (nrest == 0) {
            fprintf(stderr, "petrelctl: error: nothing to %s\n",
                    flags & DO_REMOVE ? "remove" : flags & DO_COMMENT ? "comment out" : "edit");
            return 1;
        }
        return edit(confdir, flags & DO_REMOVE ? 1 : flags & DO_COMMENT ? 2 : 0, rest, nrest);
    }
    return show(schema, confdir, flags, rest, nrest);
}
