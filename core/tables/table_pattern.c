/*
 * Rule engine for pattern tables (see table_pattern.h). A table is an array
 * of rules; an "if" rule records the index of its "endif" so a failed
 * condition skips the whole block in one step. Results are split at load
 * time into literal text and $number references, so a lookup only copies.
 */
#include "config.h"

#include <ctype.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "lib/buf.h"
#include "lib/log.h"
#include "lib/xalloc.h"
#include "tables/table_impl.h"
#include "tables/table_pattern.h"

enum rule_op { OP_MATCH, OP_IF, OP_ENDIF };

/* One piece of a result: literal text, or a group number when group > 0. */
struct subst_part {
    int group;
    const char *text;
    size_t len;
};

struct rule {
    enum rule_op op;
    int lineno;
    int match;              /* 1, or 0 for a negated pattern */
    void *expr;
    int second_match;
    void *second_expr;      /* regexp's /p1/!/p2/ form */
    const char *literal;    /* the result when it has no $number */
    struct subst_part *parts;
    size_t nparts;
    size_t max_group;
    size_t endif;           /* OP_IF: index of the endif rule, or SIZE_MAX */
};

struct tbl_pattern_table {
    const struct tbl_pattern_engine *engine;
    const char *path;
    struct rule *rules;
    size_t nrules;
    size_t cap;
    struct tbl_capture *caps;   /* sized for the largest $number */
    size_t ncaps;
    int flags;                  /* TBL_FLAG_* of the open */
};

struct parsed_pattern {
    int match;
    char *text;
    char *flags;
};

static char *cfg_trim_rule(char *s);

static int is_space(int c)
{
    return c == ' ' || c == '\t' || c == '\r' || c == '\n' || c == '\f' || c == '\v';
}

static char *skip_space(char *p)
{
    while (is_space((unsigned char)*p))
        p++;
    return p;
}

/* Parses [!...]PATTERN[flags] at *cursor, in place. NULL or an error text. */
static const char *parse_pattern(const struct tbl_pattern_engine *engine, char **cursor,
                                 struct parsed_pattern *pat, int stop_at_bang, char **why_alloc)
{
    char *p = *cursor;
    pat->match = 1;
    for (;; p++) {
        if (*p == '!')
            pat->match = !pat->match;
        else if (!is_space((unsigned char)*p))
            break;
    }
    if (*p == '\0')
        return engine->delimited ? "no regexp" : "no address pattern";
    if (!engine->delimited) {
        pat->text = p;
        p += strcspn(p, " \t\r\n\f\v");
        if (*p)
            *p++ = '\0';
        pat->flags = p + strlen(p);   /* empty */
        *cursor = p;
        return NULL;
    }
    char delimiter = *p++;
    pat->text = p;
    while (*p && *p != delimiter) {
        if (*p == '\\' && p[1])
            p++;
        p++;
    }
    if (*p != delimiter) {
        *why_alloc = tbl_strprintf("no closing regexp delimiter \"%c\"", delimiter);
        return *why_alloc;
    }
    *p++ = '\0';
    pat->flags = p;
    while (*p && !is_space((unsigned char)*p) && !(stop_at_bang && *p == '!'))
        p++;
    /* Keep the flags NUL-terminated without losing a following '!'. */
    size_t flen = (size_t)(p - pat->flags);
    pat->flags = xstrndup(pat->flags, flen);
    *cursor = p;
    return NULL;
}

/* Splits a result into parts, checking $number syntax as mac_parse does. */
static char *parse_result(struct tbl_pattern_table *table, struct rule *rule, const char *text,
                          petrel_pool *pool)
{
    struct buf literal = BUF_INIT;
    size_t cap = 4, n = 0;
    struct subst_part *parts = xmalloc(cap * sizeof(*parts));
    char *why = NULL;
    const char *p = text;

    buf_append(&literal, "", 0);   /* allocated and NUL-terminated */
    while (*p && why == NULL) {
        if (*p != '$' || !table->engine->substitution) {
            buf_putc(&literal, *p++);
            continue;
        }
        const char *name;
        size_t name_len;
        if (p[1] == '$') {
            buf_putc(&literal, '$');
            p += 2;
            continue;
        } else if (p[1] == '{' || p[1] == '(') {
            char close = p[1] == '{' ? '}' : ')';
            const char *end = strchr(p + 2, close);
            if (end == NULL) {
                why = tbl_strprintf("bad replacement syntax: missing '%c'", close);
                break;
            }
            name = p + 2;
            name_len = (size_t)(end - name);
            p = end + 1;
        } else if (isalnum((unsigned char)p[1]) || p[1] == '_') {
            name = p + 1;
            name_len = 0;
            while (isalnum((unsigned char)name[name_len]) || name[name_len] == '_')
                name_len++;
            p = name + name_len;
        } else {
            why = tbl_strprintf("bad replacement syntax: '$' must be followed by a number"
                                " (write $$ for a literal '$')");
            break;
        }
        if (name_len == 0 || strspn(name, "0123456789") < name_len) {
            why = tbl_strprintf("non-numeric replacement index \"%.*s\"", (int)name_len, name);
            break;
        }
        long group = name_len > 3 ? 1000 : strtol(name, NULL, 10);
        if (group < 1 || group > TBL_MAX_SUBST) {
            why = tbl_strprintf("out of range replacement index \"%.*s\"", (int)name_len, name);
            break;
        }
        if (n + 2 > cap) {
            cap *= 2;
            parts = xrealloc(parts, cap * sizeof(*parts));
        }
        if (literal.len > 0) {
            parts[n].group = 0;
            parts[n].text = petrel_pool_memdup(pool, literal.data, literal.len);
            parts[n++].len = literal.len;
            buf_reset(&literal);
        }
        parts[n].group = (int)group;
        parts[n].text = NULL;
        parts[n++].len = 0;
        if ((size_t)group > rule->max_group)
            rule->max_group = (size_t)group;
    }
    if (why == NULL) {
        if (rule->max_group == 0) {
            rule->literal = petrel_pool_strdup(pool, literal.data);
        } else {
            if (literal.len > 0) {
                parts[n].group = 0;
                parts[n].text = petrel_pool_memdup(pool, literal.data, literal.len);
                parts[n++].len = literal.len;
            }
            rule->parts = petrel_pool_memdup(pool, parts, n * sizeof(*parts));
            rule->nparts = n;
        }
    }
    free(parts);
    buf_free(&literal);
    return why;
}

static void free_rule(const struct tbl_pattern_engine *engine, struct rule *rule)
{
    if (rule->expr)
        engine->free(rule->expr);
    if (rule->second_expr)
        engine->free(rule->second_expr);
}

void tbl_pattern_free(struct tbl_pattern_table *table)
{
    if (table == NULL)
        return;
    for (size_t i = 0; i < table->nrules; i++)
        free_rule(table->engine, &table->rules[i]);
    free(table->rules);
    table->rules = NULL;
    table->nrules = 0;
}

static void *compile(const struct tbl_pattern_engine *engine, struct parsed_pattern *pat,
                     int want_captures, size_t *ngroups, char **why)
{
    size_t dummy;
    return engine->compile(pat->text, pat->flags ? pat->flags : "", want_captures,
                           ngroups ? ngroups : &dummy, why);
}

/* Parses one logical line into *rule. Returns 0, 1 to skip the line, or -1
 * with *why set (no line number). */
static int parse_line(struct tbl_pattern_table *table, char *line, size_t nesting,
                      struct rule *rule, petrel_pool *pool, char **why)
{
    const struct tbl_pattern_engine *engine = table->engine;
    const char *err = NULL;
    char *owned_err = NULL;
    char *p = line;
    struct parsed_pattern first = { 0 }, second = { 0 };
    int status = -1;

    if (strncasecmp(p, "if", 2) == 0 && !isalnum((unsigned char)p[2])) {
        p = skip_space(p + 2);
        if ((err = parse_pattern(engine, &p, &first, 0, &owned_err)) != NULL)
            goto fail;
        p = skip_space(p);
        if (*p) {
            *why = tbl_strprintf("unexpected text after the if condition: \"%s\""
                                 " (rules inside if...endif must not be indented:"
                                 " an indented line continues the line above)", p);
            goto out;
        }
        rule->op = OP_IF;
        rule->match = first.match;
        rule->endif = SIZE_MAX;
        if ((rule->expr = compile(engine, &first, 0, NULL, why)) == NULL)
            goto out;
        status = 0;
        goto out;
    }
    if (strncasecmp(p, "endif", 5) == 0 && !isalnum((unsigned char)p[5])) {
        if (nesting == 0) {
            msg_warn("%s:%s, line %d: ignoring endif without matching if", engine->type_name,
                     table->path, rule->lineno);
            status = 1;
            goto out;
        }
        p = skip_space(p + 5);
        if (*p) {
            *why = tbl_strprintf("unexpected text after endif: \"%s\"", p);
            goto out;
        }
        rule->op = OP_ENDIF;
        status = 0;
        goto out;
    }
    if (engine->delimited && isalnum((unsigned char)*p)) {
        *why = tbl_strprintf("unrecognized line \"%.60s\" (expected /pattern/ result, if or endif)",
                             p);
        goto out;
    }
    if ((err = parse_pattern(engine, &p, &first, engine->second_pattern, &owned_err)) != NULL)
        goto fail;
    if (engine->second_pattern && *p == '!') {
        if ((err = parse_pattern(engine, &p, &second, 0, &owned_err)) != NULL)
            goto fail;
    }
    p = skip_space(p);
    if (*p == '\0') {
        if (engine->result_required) {
            *why = xstrdup("no lookup result");
            goto out;
        }
        msg_warn("%s:%s, line %d: no replacement text: using empty string", engine->type_name,
                 table->path, rule->lineno);
    }
    rule->op = OP_MATCH;
    rule->match = first.match;
    if ((*why = parse_result(table, rule, p, pool)) != NULL)
        goto out;
    if (rule->max_group > 0 && !first.match) {
        *why = xstrdup("$number found in negative match replacement text");
        goto out;
    }
    if (rule->max_group > 0 && (table->flags & TBL_FLAG_NO_REGSUB)) {
        *why = xstrdup("$number is not allowed in this table: its result would be text chosen by the client");
        goto out;
    }
    size_t ngroups = 0;
    if ((rule->expr = compile(engine, &first, rule->max_group > 0, &ngroups, why)) == NULL)
        goto out;
    if (rule->max_group > ngroups) {
        *why = tbl_strprintf("out of range replacement index \"%zu\": the pattern has %zu group%s",
                             rule->max_group, ngroups, ngroups == 1 ? "" : "s");
        goto out;
    }
    if (second.text) {
        rule->second_match = second.match;
        if ((rule->second_expr = compile(engine, &second, 0, NULL, why)) == NULL)
            goto out;
    }
    status = 0;
    goto out;
fail:
    *why = xstrdup(err);
out:
    free(owned_err);
    if (engine->delimited) {
        free(first.flags);
        free(second.flags);
    }
    if (status < 0)
        free_rule(engine, rule);
    return status;
}

/* s without white space around it (in place). */
static char *cfg_trim_rule(char *s)
{
    while (*s == ' ' || *s == '\t')
        s++;
    size_t n = strlen(s);
    while (n && (s[n - 1] == ' ' || s[n - 1] == '\t'))
        s[--n] = '\0';
    return s;
}

/* The rules of an inline table, Postfix 3.7's "regexp:{ {rule}, {rule} }":
 * the next rule's text (in place, without its braces) or NULL at the end;
 * *bad is set for text that is not a braced rule. */
static char *inline_next_rule(char **cursor, int *bad)
{
    char *p = *cursor;
    while (*p == ' ' || *p == '\t' || *p == ',' || *p == '\n' || *p == '\r')
        p++;
    if (*p == '\0')
        return NULL;
    if (*p != '{') {
        *bad = 1;
        return NULL;
    }
    char *start = ++p;
    int depth = 1;
    for (; *p; p++) {
        if (*p == '{')
            depth++;
        else if (*p == '}' && --depth == 0)
            break;
    }
    if (depth != 0) {
        *bad = 1;
        return NULL;
    }
    *p = '\0';
    *cursor = p + 1;
    return cfg_trim_rule(start);
}

/* The source of a table's logical lines: a file, or an inline "{...}" spec. */
struct rule_source {
    int is_inline;
    struct tbl_file file;
    char *text;            /* inline: a copy of the rules between the outer braces */
    char *cursor;
    int lineno;
};

static int source_open(struct rule_source *src, const char *path, char **error)
{
    memset(src, 0, sizeof(*src));
    size_t len = strlen(path);
    if (path[0] != '{')
        return tbl_file_open(&src->file, path, error);
    if (len < 2 || path[len - 1] != '}') {
        *error = tbl_strprintf("inline table \"%s\": missing \"}\"", path);
        return -1;
    }
    src->is_inline = 1;
    src->text = xstrndup(path + 1, len - 2);
    src->cursor = src->text;
    return 0;
}

/* 1 with *line, 0 at the end, -1 with *error. */
static int source_next(struct rule_source *src, char **line, int *lineno, char **error)
{
    if (!src->is_inline) {
        int r = tbl_file_next(&src->file, error);
        if (r > 0) {
            *line = src->file.line.data;
            *lineno = src->file.lineno;
        }
        return r;
    }
    int bad = 0;
    char *rule = inline_next_rule(&src->cursor, &bad);
    if (bad) {
        *error = tbl_strprintf("rule %d: expected { rule } in the inline table", src->lineno + 1);
        return -1;
    }
    if (rule == NULL)
        return 0;
    *line = rule;
    *lineno = ++src->lineno;
    return 1;
}

static void source_close(struct rule_source *src)
{
    if (src->is_inline)
        free(src->text);
    else
        tbl_file_close(&src->file);
}

struct tbl_pattern_table *tbl_pattern_load(const struct tbl_pattern_engine *engine,
                                           const char *path, int flags, petrel_pool *pool, char **error)
{
    struct rule_source file;
    if (source_open(&file, path, error) != 0)
        return NULL;
    struct tbl_pattern_table *table = petrel_pool_zalloc(pool, sizeof(*table));
    table->engine = engine;
    table->flags = flags;
    table->path = petrel_pool_strdup(pool, path);
    size_t *if_stack = NULL, nesting = 0, stack_cap = 0, max_group = 0;
    int r;

    char *text;
    int lineno = 0;
    while ((r = source_next(&file, &text, &lineno, error)) > 0) {
        struct rule rule;
        memset(&rule, 0, sizeof(rule));
        rule.lineno = lineno;
        char *why = NULL;
        int s = parse_line(table, text, nesting, &rule, pool, &why);
        if (s > 0)
            continue;
        if (s < 0) {
            *error = tbl_strprintf("%s %d: %s", file.is_inline ? "rule" : "line", lineno, why);
            free(why);
            r = -1;
            break;
        }
        if (table->nrules == table->cap) {
            table->cap = table->cap ? table->cap * 2 : 16;
            table->rules = xrealloc(table->rules, table->cap * sizeof(*table->rules));
        }
        size_t index = table->nrules++;
        table->rules[index] = rule;
        if (rule.op == OP_IF) {
            if (nesting == stack_cap) {
                stack_cap = stack_cap ? stack_cap * 2 : 8;
                if_stack = xrealloc(if_stack, stack_cap * sizeof(*if_stack));
            }
            if_stack[nesting++] = index;
        } else if (rule.op == OP_ENDIF) {
            table->rules[if_stack[--nesting]].endif = index;
        } else if (rule.max_group > max_group) {
            max_group = rule.max_group;
        }
    }
    source_close(&file);
    if (r == 0)
        while (nesting > 0)
            msg_warn("%s:%s, line %d: if has no matching endif", engine->type_name, path,
                     table->rules[if_stack[--nesting]].lineno);
    free(if_stack);
    if (r < 0) {
        tbl_pattern_free(table);
        return NULL;
    }
    table->ncaps = max_group > 0 ? max_group + 1 : 0;
    if (table->ncaps)
        table->caps = petrel_pool_alloc(pool, table->ncaps * sizeof(*table->caps));
    return table;
}

static const char *expand(const struct rule *rule, const char *key, const struct tbl_capture *caps,
                          petrel_pool *scratch)
{
    struct buf out = BUF_INIT;
    buf_append(&out, "", 0);
    for (size_t i = 0; i < rule->nparts; i++) {
        const struct subst_part *part = &rule->parts[i];
        if (part->group == 0) {
            buf_append(&out, part->text, part->len);
            continue;
        }
        const struct tbl_capture *c = &caps[part->group];
        /* An empty or unmatched group adds nothing, as in Postfix. */
        if (c->start >= 0 && c->end > c->start)
            buf_append(&out, key + c->start, (size_t)(c->end - c->start));
    }
    char *value = petrel_pool_strdup(scratch, out.data);
    buf_free(&out);
    return value;
}

/* Runs one expression: 1 when the rule's sense holds, 0 when not, -1 on error. */
static int run(const struct tbl_pattern_table *table, const struct rule *rule, void *expr,
               int match, const void *subject, size_t len, struct tbl_capture *caps, size_t ncaps)
{
    char *why = NULL;
    int r = table->engine->exec(expr, subject, len, caps, ncaps, &why);
    if (r < 0) {
        msg_warn("%s:%s, line %d: %s", table->engine->type_name, table->path, rule->lineno,
                 why ? why : "match error");
        free(why);
        return -1;
    }
    return r == match;
}

int tbl_pattern_lookup(struct tbl_pattern_table *table, const char *key, const char **value,
                       petrel_pool *scratch)
{
    const void *subject = key;
    size_t len = strlen(key);
    if (table->engine->prepare && (subject = table->engine->prepare(key, scratch)) == NULL)
        return TBL_NOTFOUND;
    for (size_t i = 0; i < table->nrules; i++) {
        const struct rule *rule = &table->rules[i];
        int r;
        switch (rule->op) {
        case OP_MATCH:
            r = run(table, rule, rule->expr, rule->match, subject, len, table->caps,
                    rule->max_group > 0 ? rule->max_group + 1 : 0);
            if (r <= 0) {
                if (r < 0)
                    return TBL_ERROR;
                continue;
            }
            if (rule->second_expr) {
                r = run(table, rule, rule->second_expr, rule->second_match, subject, len, NULL, 0);
                if (r < 0)
                    return TBL_ERROR;
                if (r == 0)
                    continue;
            }
            *value = rule->max_group == 0 ? rule->literal : expand(rule, key, table->caps, scratch);
            return TBL_FOUND;
        case OP_IF:
            r = run(table, rule, rule->expr, rule->match, subject, len, NULL, 0);
            if (r < 0)
                return TBL_ERROR;
            if (r == 0) {
                if (rule->endif == SIZE_MAX)   /* an if without endif runs to the end */
                    return TBL_NOTFOUND;
                i = rule->endif;
            }
            continue;
        case OP_ENDIF:
            continue;
        }
    }
    return TBL_NOTFOUND;
}
