/*
 * RFC 5322 address-list parsing (see addrlist.h for what is accepted).
 *
 * Two steps: a tokenizer turns the text into atoms, quoted strings, domain
 * literals and the specials < > : ; @ , . (comments and white space are
 * dropped, but a token remembers whether white space came before it), then
 * a small recursive descent over the tokens finds groups and mailboxes.
 * Working on tokens keeps every quoting rule in one place: after the
 * tokenizer, a '<' or ',' inside a quoted string or a comment can no longer
 * be mistaken for structure.
 */
#include "config.h"

#include <stdlib.h>
#include <string.h>

#include "lib/buf.h"
#include "lib/xalloc.h"
#include "mail/addrlist.h"

enum tok_kind { TOK_ATOM, TOK_QSTRING, TOK_DLITERAL, TOK_SPECIAL };

struct token {
    enum tok_kind kind;
    char special;             /* for TOK_SPECIAL */
    int space_before;         /* white space or a comment came before it */
    const char *text;         /* atoms, decoded quoted strings, "[literal]" */
};

struct tokens {
    struct token *v;
    size_t n, cap;
};

static const char specials[] = "<>:;@,.";

static int is_ctl(unsigned char c)
{
    return (c < 32 && c != ' ' && c != '\t' && c != '\r' && c != '\n') || c == 127;
}

static int is_space(unsigned char c)
{
    return c == ' ' || c == '\t' || c == '\r' || c == '\n';
}

static void push(struct tokens *t, enum tok_kind kind, char special, int space, const char *text)
{
    if (t->n == t->cap) {
        t->cap = t->cap ? t->cap * 2 : 16;
        t->v = xrealloc(t->v, t->cap * sizeof(*t->v));
    }
    t->v[t->n].kind = kind;
    t->v[t->n].special = special;
    t->v[t->n].space_before = space;
    t->v[t->n].text = text;
    t->n++;
}

static int tokenize(const char *s, size_t len, petrel_pool *pool, struct tokens *t, const char **error)
{
    size_t i = 0;
    int space = 0;
    while (i < len) {
        unsigned char c = (unsigned char)s[i];
        if (c == '\0' || is_ctl(c)) {
            *error = "control character in address";
            return -1;
        }
        if (is_space(c)) {
            space = 1;
            i++;
            continue;
        }
        if (c == '(') {
            int depth = 0;
            for (; i < len; i++) {
                unsigned char d = (unsigned char)s[i];
                if (d == '\0' || is_ctl(d)) {
                    *error = "control character in address";
                    return -1;
                }
                if (d == '\\') {
                    i++;
                    continue;
                }
                if (d == '(')
                    depth++;
                else if (d == ')' && --depth == 0)
                    break;
            }
            if (i >= len) {
                *error = "unbalanced '(' in address";
                return -1;
            }
            i++;
            space = 1;
            continue;
        }
        if (c == ')') {
            *error = "unbalanced ')' in address";
            return -1;
        }
        if (c == '"') {
            char *out = petrel_pool_alloc(pool, len - i + 1);
            size_t n = 0;
            for (i++; i < len && s[i] != '"'; i++) {
                unsigned char d = (unsigned char)s[i];
                if (d == '\\') {
                    if (++i >= len)
                        break;
                    d = (unsigned char)s[i];
                }
                if (d == '\0' || is_ctl(d) || d == '\r' || d == '\n') {
                    *error = d == '\r' || d == '\n' ? "line break in a quoted string" : "control character in address";
                    return -1;
                }
                out[n++] = (char)d;
            }
            if (i >= len) {
                *error = "unbalanced '\"' in address";
                return -1;
            }
            i++;
            out[n] = '\0';
            push(t, TOK_QSTRING, 0, space, out);
            space = 0;
            continue;
        }
        if (c == '[') {
            size_t start = i;
            for (i++; i < len && s[i] != ']'; i++) {
                unsigned char d = (unsigned char)s[i];
                if (d == '[' || d == '\\' || is_space(d) || d == '\0' || is_ctl(d)) {
                    *error = "bad domain literal in address";
                    return -1;
                }
            }
            if (i >= len) {
                *error = "unbalanced '[' in address";
                return -1;
            }
            i++;
            push(t, TOK_DLITERAL, 0, space, petrel_pool_strndup(pool, s + start, i - start));
            space = 0;
            continue;
        }
        if (c == ']' || c == '\\') {
            *error = c == ']' ? "unbalanced ']' in address" : "stray '\\' in address";
            return -1;
        }
        if (strchr(specials, c)) {
            push(t, TOK_SPECIAL, (char)c, space, NULL);
            space = 0;
            i++;
            continue;
        }
        size_t start = i;
        while (i < len) {
            unsigned char d = (unsigned char)s[i];
            if (d == '\0' || is_ctl(d) || is_space(d) || strchr(specials, d) || d == '(' || d == ')' || d == '"' ||
                d == '[' || d == ']' || d == '\\')
                break;
            i++;
        }
        push(t, TOK_ATOM, 0, space, petrel_pool_strndup(pool, s + start, i - start));
        space = 0;
    }
    return 0;
}

struct parse {
    const struct tokens *t;
    size_t i;
    petrel_pool *pool;
    int (*found)(void *ctx, const char *local, const char *domain);
    void *ctx;
    const char *error;
};

static int is_special(const struct parse *p, size_t i, char c)
{
    return i < p->t->n && p->t->v[i].kind == TOK_SPECIAL && p->t->v[i].special == c;
}

static int is_word(const struct parse *p, size_t i)
{
    return i < p->t->n && (p->t->v[i].kind == TOK_ATOM || p->t->v[i].kind == TOK_QSTRING);
}

static int fail(struct parse *p, const char *why)
{
    if (p->error == NULL)
        p->error = why;
    return -1;
}

/* local-part ["@" domain] over tokens [p->i, end). */
static int addr_spec(struct parse *p, size_t end)
{
    struct buf local = BUF_INIT, domain = BUF_INIT;
    size_t i = p->i;
    int prev_word = 0, rc = -1;
    for (; i < end && !is_special(p, i, '@'); i++) {
        const struct token *tk = &p->t->v[i];
        if (tk->kind == TOK_ATOM || tk->kind == TOK_QSTRING) {
            /* Words without a dot between them: Postfix keeps them as one
             * local part with a space (sendmail '|cmd arg'). */
            if (prev_word && tk->space_before)
                buf_putc(&local, ' ');
            buf_puts(&local, tk->text);
            prev_word = 1;
        } else if (tk->kind == TOK_SPECIAL && tk->special == '.') {
            buf_putc(&local, '.');
            prev_word = 0;
        } else {
            fail(p, "bad address syntax");
            goto out;
        }
    }
    if (local.len == 0) {
        fail(p, i < end ? "empty local part in address" : "empty address");
        goto out;
    }
    const char *dom = NULL;
    if (i < end) {
        for (i++; i < end; i++) {
            const struct token *tk = &p->t->v[i];
            if (tk->kind == TOK_ATOM || tk->kind == TOK_DLITERAL)
                buf_puts(&domain, tk->text);
            else if (tk->kind == TOK_SPECIAL && tk->special == '.')
                buf_putc(&domain, '.');
            else {
                fail(p, tk->kind == TOK_SPECIAL && tk->special == '@' ? "more than one '@' in address"
                                                                        : "bad domain in address");
                goto out;
            }
        }
        if (domain.len == 0) {
            fail(p, "missing domain after '@'");
            goto out;
        }
        dom = petrel_pool_strndup(p->pool, domain.data, domain.len);
    }
    p->i = end;
    if (p->found(p->ctx, petrel_pool_strndup(p->pool, local.data, local.len), dom) != 0) {
        fail(p, "stopped");
        goto out;
    }
    rc = 0;
out:
    buf_free(&local);
    buf_free(&domain);
    return rc;
}

/* A mailbox ending before the next ',' or ';' (or the end). */
static int mailbox(struct parse *p, int in_group)
{
    size_t end = p->i, angle = (size_t)-1;
    /* Inside <...> a ',' belongs to a source route, not to the list. */
    while (end < p->t->n && (angle != (size_t)-1 || (!is_special(p, end, ',') &&
                                                    !(in_group && is_special(p, end, ';'))))) {
        if (angle == (size_t)-1 && is_special(p, end, '<'))
            angle = end;
        if (angle == (size_t)-1 && (is_special(p, end, ';') || is_special(p, end, ':') || is_special(p, end, '>')))
            return fail(p, "bad address syntax");
        if (angle != (size_t)-1 && is_special(p, end, '>'))
            break;
        end++;
    }
    if (angle == (size_t)-1)
        return addr_spec(p, end);
    /* [display-name] "<" [route ":"] addr-spec ">" */
    for (size_t k = p->i; k < angle; k++)
        if (!is_word(p, k) && !is_special(p, k, '.'))
            return fail(p, "bad display name before '<'");
    if (!is_special(p, end, '>'))
        return fail(p, "missing '>' in address");
    size_t inner = angle + 1;
    if (is_special(p, inner, '@')) {
        /* A source route (@a,@b:): obsolete, dropped as RFC 5321 says. */
        while (inner < end && !is_special(p, inner, ':'))
            inner++;
        if (inner == end)
            return fail(p, "bad source route in address");
        inner++;
    }
    if (inner == end)
        return fail(p, "empty address <>");
    for (size_t k = inner; k < end; k++)
        if (is_special(p, k, '<'))
            return fail(p, "nested '<' in address");
    p->i = inner;
    if (addr_spec(p, end) != 0)
        return -1;
    p->i = end + 1;
    if (p->i < p->t->n && !is_special(p, p->i, ',') && !(in_group && is_special(p, p->i, ';')))
        return fail(p, "text after '>' in address");
    return 0;
}

/* display-name ":" [mailbox-list] ";", the ':' at colon. */
static int group(struct parse *p, size_t colon)
{
    for (size_t k = p->i; k < colon; k++)
        if (!is_word(p, k) && !is_special(p, k, '.'))
            return fail(p, "bad group name");
    p->i = colon + 1;
    while (p->i < p->t->n) {
        if (is_special(p, p->i, ',')) {
            p->i++;
            continue;
        }
        if (is_special(p, p->i, ';')) {
            p->i++;
            return 0;
        }
        if (mailbox(p, 1) != 0)
            return -1;
    }
    return 0;   /* a missing ';' at the very end: tolerated, as Postfix does */
}

int addrlist_parse(const char *text, size_t len, petrel_pool *pool,
                   int (*found)(void *ctx, const char *local, const char *domain), void *ctx,
                   const char **error)
{
    struct tokens t = { NULL, 0, 0 };
    *error = NULL;
    if (tokenize(text, len, pool, &t, error) != 0) {
        free(t.v);
        return -1;
    }
    struct parse p = { &t, 0, pool, found, ctx, NULL };
    int rc = 0;
    while (p.i < t.n) {
        if (is_special(&p, p.i, ',')) {
            p.i++;
            continue;
        }
        /* A group when ':' comes before anything that belongs to a mailbox. */
        size_t k = p.i;
        while (k < t.n && (is_word(&p, k) || is_special(&p, k, '.')))
            k++;
        if (is_special(&p, k, ':'))
            rc = group(&p, k);
        else
            rc = mailbox(&p, 0);
        if (rc != 0)
            break;
        if (p.i < t.n && !is_special(&p, p.i, ',')) {
            rc = fail(&p, "bad address syntax");
            break;
        }
    }
    if (rc != 0)
        *error = p.error ? p.error : "bad address syntax";
    free(t.v);
    return rc;
}

static int is_atext(unsigned char c)
{
    if (c >= 0x80)
        return 1;
    if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9'))
        return 1;
    return c && strchr("!#$%&'*+-/=?^_`{|}~", c) != NULL;
}

char *addrlist_quote_local(petrel_pool *pool, const char *local)
{
    int dot_atom = *local != '.' && *local != '\0';
    for (const char *s = local; *s && dot_atom; s++) {
        if (*s == '.') {
            if (s[1] == '.' || s[1] == '\0')
                dot_atom = 0;
        } else if (!is_atext((unsigned char)*s)) {
            dot_atom = 0;
        }
    }
    if (dot_atom)
        return petrel_pool_strdup(pool, local);
    size_t n = strlen(local);
    char *out = petrel_pool_alloc(pool, n * 2 + 3);
    size_t k = 0;
    out[k++] = '"';
    for (const char *s = local; *s; s++) {
        if (*s == '"' || *s == '\\')
            out[k++] = '\\';
        out[k++] = *s;
    }
    out[k++] = '"';
    out[k] = '\0';
    return out;
}
