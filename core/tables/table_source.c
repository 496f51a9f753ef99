/*
 * Source-file formats for compiled tables (see table_source.h).
 *
 * aliases(5) lines are tokenized the way Postfix's postalias(1) does it,
 * so that the same file gives the same keys and values: white space
 * separates tokens; "quoted strings", (comments, possibly nested) and
 * [domain literals] are single tokens; the characters |%!()<>@,;:\".[] are
 * operators, one token each; anything else is an atom, where a backslash
 * takes the next character literally (an atom that then holds a special
 * character becomes a quoted string). The tokens are joined back with a
 * space only between two words (atoms, quoted strings, comments, literals),
 * after a comma and before '<'. Our own code; Postfix's tok822 is the
 * reference for the behaviour, and `postalias` is the oracle in the tests.
 */
#include "config.h"

#include <stdlib.h>
#include <string.h>

#include "lib/xalloc.h"
#include "tables/table_source.h"

static inline int is_space(int c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v';
}

int tbl_source_split(char *line, char **key, char **value, const char **why)
{
    char *p = line;
    int quoted = 0;
    for (; *p; p++) {
        if (*p == '\\') {
            if (*++p == '\0')
                break;
        } else if (is_space((unsigned char)*p)) {
            if (!quoted)
                break;
        } else if (*p == '"') {
            quoted = !quoted;
        }
    }
    if (quoted) {
        *why = "unbalanced '\"'";
        return -1;
    }
    if (*p)
        *p++ = '\0';
    while (is_space((unsigned char)*p))
        p++;
    size_t len = strlen(p);
    while (len > 0 && is_space((unsigned char)p[len - 1]))
        p[--len] = '\0';
    *key = line;
    *value = p;
    if (**key == '\0' || **value == '\0') {
        *why = "expected format: key whitespace value";
        return -1;
    }
    return 0;
}

/* ------------------------------------------------------------------ */
/* aliases(5)                                                          */

enum tok_kind { TOK_OP, TOK_ATOM, TOK_QSTRING, TOK_COMMENT, TOK_DOMLIT };

struct tok {
    enum tok_kind kind;
    char op;              /* TOK_OP */
    struct buf text;      /* the others: content without delimiters (a comment keeps its parentheses) */
};

static const char operators[] = "|%!()<>@,;:\\\".[]";

static int is_word(const struct tok *t)
{
    return t->kind != TOK_OP;
}

static int is_operator_char(int c)
{
    return c != '\0' && strchr(operators, c) != NULL;
}

/* Collects up to the end character (not included), a backslash taking the
 * next character literally; returns where scanning stops (past end). */
static const char *collect_until(const char *s, char end, struct buf *out)
{
    for (; *s && *s != end; s++) {
        if (*s == '\\' && *++s == '\0')
            break;
        buf_putc(out, is_space((unsigned char)*s) ? ' ' : *s);
    }
    return *s ? s + 1 : s;
}

static const char *scan_comment(const char *s, struct buf *out)
{
    int depth = 1;
    buf_putc(out, '(');
    while (*s) {
        char c = *s++;
        buf_putc(out, c);
        if (c == '(') {
            depth++;
        } else if (c == ')') {
            if (--depth == 0)
                break;
        } else if (c == '\\') {
            if (*s == '\0')
                break;
            buf_putc(out, *s++);
        }
    }
    return s;
}

static size_t scan(const char *s, struct tok **out)
{
    size_t n = 0, cap = 0;
    struct tok *toks = NULL;
    while (*s) {
        if (is_space((unsigned char)*s)) {
            s++;
            continue;
        }
        if (n == cap) {
            cap = cap ? cap * 2 : 16;
            toks = xrealloc(toks, cap * sizeof(*toks));
        }
        struct tok *t = &toks[n++];
        memset(t, 0, sizeof(*t));
        buf_puts(&t->text, "");
        char c = *s++;
        if (c == '(') {
            t->kind = TOK_COMMENT;
            s = scan_comment(s, &t->text);
        } else if (c == '[') {
            t->kind = TOK_DOMLIT;
            s = collect_until(s, ']', &t->text);
        } else if (c == '"') {
            t->kind = TOK_QSTRING;
            s = collect_until(s, '"', &t->text);
        } else if (c != '\\' && is_operator_char(c)) {
            t->kind = TOK_OP;
            t->op = c;
        } else {
            t->kind = TOK_ATOM;
            for (s--; *s; s++) {
                if (*s == '\\') {
                    if (*++s == '\0')
                        break;
                } else if (is_space((unsigned char)*s) || is_operator_char(*s)) {
                    break;
                }
                buf_putc(&t->text, is_space((unsigned char)*s) ? ' ' : *s);
            }
            if (t->text.len == 0) {
                /* a lone backslash at the end of the line: no token (postalias
                 * keeps an empty one, which only adds a trailing space) */
                buf_free(&t->text);
                n--;
                continue;
            }
            /* An escaped special character makes the atom a quoted string. */
            for (const char *p = t->text.data; *p; p++)
                if (*p == ' ' || (unsigned char)*p < 0x20 || *p == 0x7f || is_operator_char(*p)) {
                    t->kind = TOK_QSTRING;
                    break;
                }
        }
    }
    *out = toks;
    return n;
}

static void free_tokens(struct tok *toks, size_t n)
{
    for (size_t i = 0; i < n; i++)
        buf_free(&toks[i].text);
    free(toks);
}

static int space_after(const struct tok *toks, size_t i, size_t end)
{
    if (i + 1 >= end)
        return 0;
    const struct tok *t = &toks[i], *next = &toks[i + 1];
    if ((t->kind == TOK_OP && t->op == ',') || (next->kind == TOK_OP && next->op == '<'))
        return 1;
    return is_word(t) && is_word(next);
}

static void copy_escaped(struct buf *out, const char *text, const char *specials)
{
    for (; *text; text++) {
        if (strchr(specials, *text))
            buf_putc(out, '\\');
        buf_putc(out, *text);
    }
}

/* Internal form: words as they are, without quotes. */
static void internalize(const struct tok *toks, size_t begin, size_t end, struct buf *out)
{
    for (size_t i = begin; i < end; i++) {
        const struct tok *t = &toks[i];
        switch (t->kind) {
        case TOK_OP:
            buf_putc(out, t->op);
            break;
        case TOK_DOMLIT:
            buf_putc(out, '[');
            buf_puts(out, t->text.data);
            buf_putc(out, ']');
            break;
        default:
            buf_puts(out, t->text.data);
        }
        if (space_after(toks, i, end))
            buf_putc(out, ' ');
    }
}

/* External form: quoted strings and literals quoted again. */
static void externalize(const struct tok *toks, size_t begin, size_t end, struct buf *out)
{
    for (size_t i = begin; i < end; i++) {
        const struct tok *t = &toks[i];
        switch (t->kind) {
        case TOK_OP:
            buf_putc(out, t->op);
            if (t->op == ',') {
                buf_putc(out, ' ');
                continue;
            }
            break;
        case TOK_QSTRING:
            buf_putc(out, '"');
            copy_escaped(out, t->text.data, "\"\\\r\n");
            buf_putc(out, '"');
            break;
        case TOK_DOMLIT:
            buf_putc(out, '[');
            copy_escaped(out, t->text.data, "\\\r\n");
            buf_putc(out, ']');
            break;
        default:
            buf_puts(out, t->text.data);
        }
        if (space_after(toks, i, end))
            buf_putc(out, ' ');
    }
}

int tbl_alias_split(const char *line, struct buf *key, struct buf *value, const char **why)
{
    struct tok *toks;
    size_t n = scan(line, &toks);
    size_t colon = n;
    for (size_t i = 0; i < n; i++)
        if (toks[i].kind == TOK_OP && toks[i].op == ':') {
            colon = i;
            break;
        }
    int status = 0;
    if (colon == n || colon == 0 || colon + 1 == n) {
        *why = "need name:value pair";
        status = -1;
    }
    for (size_t i = 0; status == 0 && i < colon; i++)
        if (toks[i].kind == TOK_OP && toks[i].op == ',') {
            *why = "need name:value pair";
            status = -1;
        }
    for (size_t i = 0; status == 0 && i < colon; i++)
        if (toks[i].kind == TOK_OP && (toks[i].op == '@' || toks[i].op == '%')) {
            *why = "name must be local and have no domain";
            status = -1;
        }
    if (status == 0) {
        buf_reset(key);
        buf_puts(key, "");
        internalize(toks, 0, colon, key);
        buf_reset(value);
        buf_puts(value, "");
        externalize(toks, colon + 1, n, value);
    }
    free_tokens(toks, n);
    return status;
}

int tbl_valid_utf8(const char *s)
{
    const unsigned char *p = (const unsigned char *)s;
    while (*p) {
        unsigned c = *p;
        size_t more;
        unsigned min;
        if (c < 0x80) {
            p++;
            continue;
        } else if (c >= 0xc2 && c <= 0xdf) {
            more = 1, min = 0x80;
        } else if (c >= 0xe0 && c <= 0xef) {
            more = 2, min = 0x800;
        } else if (c >= 0xf0 && c <= 0xf4) {
            more = 3, min = 0x10000;
        } else {
            return 0;
        }
        unsigned cp = c & (0x3f >> more);
        for (size_t i = 1; i <= more; i++) {
            if ((p[i] & 0xc0) != 0x80)
                return 0;
            cp = (cp << 6) | (p[i] & 0x3f);
        }
        if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
            return 0;
        p += more + 1;
    }
    return 1;
}
