/*
 * $name expansion of main.cf and master.cf values: $name, ${name}, $(name),
 * ${name?value}, ${name:value} and the brace forms ${name?{a}:{b}}. Values
 * are expanded once, with memoization, after the whole file is read, so
 * $name sees the final definition; a value being expanded is marked, and a
 * reference back to it is a loop, reported with the cycle ("a -> b -> a").
 * A value that names a file (myorigin = /etc/mailname) is read here, when
 * it is expanded. Moved from config.c, whose logging and helpers it uses
 * (config.c calls nothing here; the loaders do).
 */
#include "config.h"

#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "config/config_impl.h"
#include "lib/xalloc.h"

struct expand_chain {
    const struct expand_chain *up;
    const char *name;
};

struct expander {
    struct cfg *cfg;
    const char *file;               /* where the text being expanded was written */
    int line;
    const char *name;               /* the parameter whose text it is */
    const struct expand_chain *chain;
    int depth;
    int quiet;
};

static int value_expand(struct cfg *cfg, struct cfg_value *v, const struct expand_chain *chain,
                        int depth, int quiet);
static int expand_text(struct expander *x, const char *text, size_t len, struct buf *out);

/* "a -> b -> a": only the cycle, not the path that led into it. */
static void loop_text(struct buf *b, const struct expand_chain *c, const char *name)
{
    const char *names[CFG_MAX_NESTING + 2] = { 0 };
    size_t n = 0, start = 0;
    for (; c && n < CFG_MAX_NESTING + 1; c = c->up)
        names[n++] = c->name;
    for (size_t i = 0; i < n; i++)
        if (strcmp(names[i], name) == 0)
            start = i;                   /* the chain is innermost first */
    for (size_t i = start + 1; i-- > 0;)
        buf_printf(b, "%s -> ", names[i]);
    buf_puts(b, name);
}

/* $name: appends name's expanded value; 0, or -1 after an error. */
static int expand_reference(struct expander *x, const char *name, int conditional, struct buf *out,
                            int *empty)
{
    struct cfg_value *v = cfg_value_find(x->cfg, name);
    *empty = 1;
    if (!v) {
        /* A Postfix name Petrel has no value for ($relocated_maps,
         * $process_id) is not "undefined": say what it is instead. */
        const char *what = x->cfg->postfix_name_text ? x->cfg->postfix_name_text(x->cfg, name) : NULL;
        if (!conditional && !x->quiet && what && what[0])
            cfg_warn(x->cfg, x->file, x->line, x->name,
                     "$%s expands to an empty string: Petrel has no value for this Postfix parameter (%s)", name,
                     what);
        else if (!conditional && !x->quiet)
            cfg_warn(x->cfg, x->file, x->line, x->name,
                     "undefined parameter $%s expands to an empty string", name);
        return 0;
    }
    v->referenced = 1;
    if (v->state == VAL_EXPANDING) {
        if (!x->quiet) {
            struct buf b = BUF_INIT;
            loop_text(&b, x->chain, name);
            cfg_error(x->cfg, x->file, x->line, x->name, "parameter expansion loop: %s", b.data);
            buf_free(&b);
        }
        return -1;
    }
    if (v->state == VAL_PENDING) {
        if (x->depth >= CFG_MAX_NESTING) {
            if (!x->quiet)
                cfg_error(x->cfg, x->file, x->line, x->name,
                          "unreasonable parameter nesting at $%s", name);
            return -1;
        }
        if (value_expand(x->cfg, v, x->chain, x->depth + 1, x->quiet) < 0)
            return -1;
    } else if (v->failed && !v->value) {
        return -1;
    }
    if (v->value) {
        buf_puts(out, v->value);
        *empty = v->value[0] == '\0';
    }
    return 0;
}

/* Index just past the bracket matching open at text[0], or 0 if unbalanced. */
static size_t match_bracket(const char *text, size_t len, char open, char close)
{
    int depth = 0;
    for (size_t i = 0; i < len; i++) {
        if (text[i] == open)
            depth++;
        else if (text[i] == close && --depth == 0)
            return i + 1;
    }
    return 0;
}

static size_t skip_space(const char *t, size_t i, size_t len)
{
    while (i < len && isspace((unsigned char)t[i]))
        i++;
    return i;
}

/*
 * ${name?value}, ${name:value}, ${name?{a}:{b}} and the brace forms
 * ${name?{a}} / ${name:{a}}. The chosen text is itself expanded.
 */
static int expand_conditional(struct expander *x, const char *name, char op, const char *text,
                              size_t len, struct buf *out)
{
    struct buf scratch = BUF_INIT;
    int empty, status;
    status = expand_reference(x, name, 1, &scratch, &empty);
    buf_free(&scratch);
    if (status < 0)
        return -1;
    const char *when_set = NULL, *when_empty = NULL;
    size_t set_len = 0, empty_len = 0;
    size_t i = skip_space(text, 0, len);
    if (i < len && text[i] == '{') {
        size_t end = match_bracket(text + i, len - i, '{', '}');
        if (!end)
            goto syntax;
        const char *first = text + i + 1;
        size_t first_len = end - 2;
        i = skip_space(text, i + end, len);
        if (i == len) {
            if (op == '?') {
                when_set = first;
                set_len = first_len;
            } else {
                when_empty = first;
                empty_len = first_len;
            }
        } else if (op == '?' && text[i] == ':') {
            i = skip_space(text, i + 1, len);
            if (i >= len || text[i] != '{')
                goto syntax;
            end = match_bracket(text + i, len - i, '{', '}');
            if (!end || skip_space(text, i + end, len) != len)
                goto syntax;
            when_set = first;
            set_len = first_len;
            when_empty = text + i + 1;
            empty_len = end - 2;
        } else {
            goto syntax;
        }
    } else if (op == '?') {
        when_set = text;
        set_len = len;
    } else {
        when_empty = text;
        empty_len = len;
    }
    if (!empty && when_set)
        return expand_text(x, when_set, set_len, out);
    if (empty && when_empty)
        return expand_text(x, when_empty, empty_len, out);
    return 0;
syntax:
    if (!x->quiet)
        cfg_error(x->cfg, x->file, x->line, x->name,
                  "bad conditional expansion \"${%s%c%.*s}\"", name, op, (int)len, text);
    return -1;
}

static int expand_text(struct expander *x, const char *text, size_t len, struct buf *out)
{
    int status = 0;
    for (size_t i = 0; i < len;) {
        if (out->len > CFG_MAX_VALUE) {
            if (!x->quiet)
                cfg_error(x->cfg, x->file, x->line, x->name, "value is too long after expansion");
            return -1;
        }
        if (text[i] != '$' || i + 1 >= len) {
            buf_putc(out, text[i++]);
            continue;
        }
        char next = text[i + 1];
        if (next == '$') {
            buf_putc(out, '$');
            i += 2;
        } else if (cfg_name_char(next)) {
            size_t start = ++i;
            while (i < len && cfg_name_char(text[i]))
                i++;
            char *name = xstrndup(text + start, i - start);
            int empty;
            if (expand_reference(x, name, 0, out, &empty) < 0)
                status = -1;
            free(name);
        } else if (next == '{' || next == '(') {
            char close = next == '{' ? '}' : ')';
            size_t end = match_bracket(text + i + 1, len - i - 1, next, close);
            if (!end) {
                if (!x->quiet)
                    cfg_error(x->cfg, x->file, x->line, x->name, "missing '%c' in \"%.*s\"", close,
                              (int)(len - i), text + i);
                return -1;
            }
            const char *inner = text + i + 2;
            size_t inner_len = end - 2;
            size_t n = 0;
            while (n < inner_len && cfg_name_char(inner[n]))
                n++;
            char *name = xstrndup(inner, n);
            int empty;
            if (n == 0 || (n < inner_len && inner[n] != '?' && inner[n] != ':')) {
                if (!x->quiet)
                    cfg_error(x->cfg, x->file, x->line, x->name, "bad parameter name in \"$%c%.*s%c\"",
                              next, (int)inner_len, inner, close);
                status = -1;
            } else if (n == inner_len) {
                if (expand_reference(x, name, 0, out, &empty) < 0)
                    status = -1;
            } else if (expand_conditional(x, name, inner[n], inner + n + 1, inner_len - n - 1, out) < 0) {
                status = -1;
            }
            free(name);
            i += 1 + end;
        } else {
            buf_putc(out, text[i++]);   /* a lone $ stays literal */
        }
    }
    return status;
}

/* Parameters whose value may be a file holding it: myorigin = /etc/mailname
 * (Debian's Postfix, built with MYORIGIN_FROM_FILE). */
static int value_from_file(const char *name)
{
    return strcmp(name, "myorigin") == 0;
}

#define CFG_MAX_VALUE_FILE 4096   /* the line read from such a file */

/* Replaces v's value ("/etc/mailname") by the first line of that file,
 * without leading and trailing white space, as Postfix reads it; an empty
 * or unreadable file is an error. Done when the value is expanded, so that
 * $myorigin in other values sees the name too. */
static int read_value_file(struct cfg *cfg, struct cfg_value *v, int quiet)
{
    FILE *fp = fopen(v->value, "r");
    if (fp == NULL) {
        if (!quiet)
            cfg_error(cfg, cfg_value_file(cfg, v), v->line, v->name, "cannot open %s: %s", v->value,
                      strerror(errno));
        return -1;
    }
    char line[CFG_MAX_VALUE_FILE] = "";
    if (fgets(line, sizeof(line), fp) == NULL && ferror(fp)) {
        if (!quiet)
            cfg_error(cfg, cfg_value_file(cfg, v), v->line, v->name, "read error on %s: %s", v->value,
                      strerror(errno));
        fclose(fp);
        return -1;
    }
    fclose(fp);
    line[strcspn(line, "\n")] = '\0';
    char *text = cfg_trim(line);
    if (*text == '\0') {
        if (!quiet)
            cfg_error(cfg, cfg_value_file(cfg, v), v->line, v->name, "%s file %s is empty", v->name, v->value);
        return -1;
    }
    v->value = petrel_pool_strdup(cfg->pool, text);
    return 0;
}

static int value_expand(struct cfg *cfg, struct cfg_value *v, const struct expand_chain *chain,
                        int depth, int quiet)
{
    if (v->state == VAL_DONE)
        return v->failed && !v->value ? -1 : 0;
    /* Expanding from here on, including while a computed default looks at
     * other values (mydomain's reads myhostname): a value that leads back
     * here is a loop, not an endless recursion. */
    v->state = VAL_EXPANDING;
    if (!v->file && v->compute && !v->override)
        v->raw = v->compute(cfg);
    if (!v->raw)
        v->raw = "";
    if (v->param && cfg_param_is_raw(v->name)) {
        v->value = v->raw;
        v->state = VAL_DONE;
        return 0;
    }
    struct expand_chain link = { chain, v->name };
    /* A service cfg reports only what its own -o values cause; the rest was reported already. */
    int own_quiet = cfg->generation && !v->override;
    struct expander x = {
        .cfg = cfg, .file = cfg_value_file(cfg, v), .line = v->line, .name = v->name,
        .chain = &link, .depth = depth, .quiet = quiet && own_quiet,
    };
    struct buf out = BUF_INIT;
    buf_append(&out, "", 0);
    int status = expand_text(&x, v->raw, strlen(v->raw), &out);
    v->value = petrel_pool_strndup(cfg->pool, out.data, out.len);
    buf_free(&out);
    v->state = VAL_DONE;
    if (status == 0 && v->value[0] == '/' && v->param && value_from_file(v->name) &&
        read_value_file(cfg, v, x.quiet) < 0)
        status = -1;
    if (status < 0)
        v->failed = 1;
    return status;
}

int cfg_value_expand(struct cfg *cfg, struct cfg_value *v, int quiet)
{
    return value_expand(cfg, v, NULL, 0, quiet);
}

char *cfg_expand_text(struct cfg *cfg, const char *text, const char *file, int line, const char *name)
{
    struct expander x = { .cfg = cfg, .file = file, .line = line, .name = name, .quiet = 1 };
    struct buf out = BUF_INIT;
    buf_append(&out, "", 0);
    int status = expand_text(&x, text, strlen(text), &out);
    char *result = status < 0 ? NULL : xstrdup(out.data);
    buf_free(&out);
    return result;
}
