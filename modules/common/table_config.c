/*
 * The *_table(5) file reader, template expansion and domain list shared by
 * the database table modules (see table_config.h for what and why).
 */
#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <sys/stat.h>

#include "table_config.h"

#define LINE_MAX_BYTES (64 * 1024)

/* ------------------------------------------------------------------ */
/* the configuration file                                              */

const struct table_setting *table_settings_find(const struct table_settings *c, const char *name)
{
    const struct table_setting *found = NULL;
    for (size_t i = 0; i < c->n; i++)
        if (strcmp(c->items[i].name, name) == 0)
            found = &c->items[i];   /* the last one wins, as in main.cf */
    return found;
}

const char *table_settings_get(const struct table_settings *c, const char *name, const char *def)
{
    const struct table_setting *s = table_settings_find(c, name);
    return s ? s->value : def;
}

int table_settings_line(const struct table_settings *c, const char *name)
{
    const struct table_setting *s = table_settings_find(c, name);
    return s ? s->line : 0;
}

int table_settings_bool(const struct table_settings *c, const char *name, int def, int *out, petrel_pool *pool,
                        const char **error)
{
    const char *v = table_settings_get(c, name, NULL);
    if (v == NULL)
        *out = def;
    else if (strcasecmp(v, "yes") == 0 || strcasecmp(v, "true") == 0 || strcmp(v, "1") == 0)
        *out = 1;
    else if (strcasecmp(v, "no") == 0 || strcasecmp(v, "false") == 0 || strcmp(v, "0") == 0)
        *out = 0;
    else {
        *error = petrel_pool_printf(pool, "line %d: %s: \"%s\" is not yes or no", table_settings_line(c, name),
                                    name, v);
        return -1;
    }
    return 0;
}

int table_settings_long(const struct table_settings *c, const char *name, long def, long min, long *out,
                        petrel_pool *pool, const char **error)
{
    const char *v = table_settings_get(c, name, NULL);
    if (v == NULL) {
        *out = def;
        return 0;
    }
    char *end = NULL;
    errno = 0;
    long n = strtol(v, &end, 10);
    if (*v == '\0' || *end != '\0' || errno != 0 || n < min) {
        *error = petrel_pool_printf(pool, "line %d: %s: \"%s\" is not a number of at least %ld",
                                    table_settings_line(c, name), name, v, min);
        return -1;
    }
    *out = n;
    return 0;
}

const char *table_settings_path(const struct table_settings *c, const char *name, int directory, petrel_pool *pool,
                                const char **error)
{
    const char *v = table_settings_get(c, name, NULL);
    if (v == NULL)
        return NULL;
    struct stat st;
    const char *why = NULL;
    if (*v == '\0')
        why = "empty";
    else if (stat(v, &st) != 0)
        why = strerror(errno);
    else if (directory && !S_ISDIR(st.st_mode))
        why = "not a directory";
    else if (!directory && !S_ISREG(st.st_mode))
        why = "not a regular file";
    if (why) {
        *error = petrel_pool_printf(pool, "line %d: %s: %s: %s", table_settings_line(c, name), name, v, why);
        return NULL;
    }
    return v;
}

void table_settings_free(struct table_settings *c)
{
    free(c->items);
    c->items = NULL;
    c->n = 0;
}

void table_settings_warn_unknown(const struct table_settings *c, petrel_module *m, const char *type,
                                 const char *path, const char *const *known)
{
    for (size_t i = 0; i < c->n; i++) {
        int is_known = 0;
        for (const char *const *k = known; *k; k++)
            is_known |= strcmp(*k, c->items[i].name) == 0;
        if (!is_known)
            petrel_module_log(m, PETREL_LOG_WARNING, "%s:%s, line %d: unknown parameter \"%s\" is ignored", type,
                              path, c->items[i].line, c->items[i].name);
    }
}

static char *trim(char *s)
{
    while (isspace((unsigned char)*s))
        s++;
    size_t len = strlen(s);
    while (len > 0 && isspace((unsigned char)s[len - 1]))
        s[--len] = '\0';
    return s;
}

/* Adds one logical line "name = value" (main.cf syntax). */
static int add_setting(struct table_settings *c, char *text, int line, petrel_pool *pool, const char **error)
{
    char *eq = strchr(text, '=');
    if (eq == NULL) {
        *error = petrel_pool_printf(pool, "line %d: missing '=' after attribute name: \"%.60s\"", line, text);
        return -1;
    }
    *eq = '\0';
    char *name = trim(text), *value = trim(eq + 1);
    if (*name == '\0' || strcspn(name, " \t") != strlen(name)) {
        *error = petrel_pool_printf(pool, "line %d: bad attribute name: \"%.60s\"", line, name);
        return -1;
    }
    c->items = realloc(c->items, (c->n + 1) * sizeof(*c->items));
    if (c->items == NULL)
        abort();
    c->items[c->n++] = (struct table_setting){ petrel_pool_strdup(pool, name), petrel_pool_strdup(pool, value), line };
    return 0;
}

/* Reads the file as Postfix's cfg_parser does: comments, blank lines, and
 * lines starting with white space that continue the previous one. */
int table_settings_read(const char *path, struct table_settings *c, petrel_pool *pool, const char **error)
{
    FILE *fp = fopen(path, "re");
    if (fp == NULL) {
        *error = petrel_pool_printf(pool, "open %s: %s", path, strerror(errno));
        return -1;
    }
    char *line = malloc(LINE_MAX_BYTES + 2), *logical = malloc(LINE_MAX_BYTES + 2);
    if (line == NULL || logical == NULL)
        abort();
    logical[0] = '\0';
    int lineno = 0, start = 0, status = 0;
    size_t used = 0;
    while (status == 0) {
        int eof = fgets(line, LINE_MAX_BYTES + 2, fp) == NULL;
        if (!eof) {
            lineno++;
            size_t len = strlen(line);
            if (len > LINE_MAX_BYTES) {
                *error = petrel_pool_printf(pool, "line %d: line longer than %d bytes", lineno, LINE_MAX_BYTES);
                status = -1;
                break;
            }
            line[strcspn(line, "\r\n")] = '\0';
            const char *p = line;
            while (isspace((unsigned char)*p))
                p++;
            if (*p == '\0' || *p == '#')
                continue;
            if (isspace((unsigned char)line[0]) && used > 0) {
                if (used + strlen(line) > LINE_MAX_BYTES) {
                    *error = petrel_pool_printf(pool, "line %d: logical line too long", start);
                    status = -1;
                    break;
                }
                memcpy(logical + used, line, strlen(line) + 1);
                used += strlen(line);
                continue;
            }
        }
        if (used > 0)
            status = add_setting(c, logical, start, pool, error);
        if (eof)
            break;
        if (isspace((unsigned char)line[0])) {
            *error = petrel_pool_printf(pool, "line %d: text that continues nothing: \"%.60s\"", lineno, line);
            status = -1;
            break;
        }
        strcpy(logical, line);
        used = strlen(line);
        start = lineno;
    }
    if (status == 0 && ferror(fp)) {
        *error = petrel_pool_printf(pool, "read %s: %s", path, strerror(errno));
        status = -1;
    }
    fclose(fp);
    free(line);
    free(logical);
    return status;
}

/* ------------------------------------------------------------------ */
/* templates (db_common_parse, db_common_expand)                       */

int table_template_parse(struct table_template *t, const char *format, int query, char *bad)
{
    int dynamic = 0;
    for (const char *p = format; *p; p++) {
        if (*p != '%')
            continue;
        switch (*++p) {
        case '%':
            break;
        case 's': case 'S':
            dynamic++;
            break;
        case 'u':
            t->needs |= query ? TABLE_NEEDS_KEY_USER : TABLE_NEEDS_VALUE_USER;
            dynamic++;
            break;
        case 'd':
            t->needs |= query ? TABLE_NEEDS_KEY_DOMAIN : TABLE_NEEDS_VALUE_DOMAIN;
            dynamic++;
            break;
        case 'U':
            t->needs |= TABLE_NEEDS_KEY_USER;
            dynamic++;
            break;
        case 'D':
            t->needs |= TABLE_NEEDS_KEY_DOMAIN;
            dynamic++;
            break;
        case '1': case '2': case '3': case '4': case '5': case '6': case '7': case '8': case '9':
            if (t->nparts < *p - '0')
                t->nparts = *p - '0';
            t->needs |= TABLE_NEEDS_KEY_DOMAIN;
            dynamic++;
            break;
        default:
            *bad = *p;
            return -1;
        }
    }
    return dynamic;
}

int table_template_partial(const struct table_template *t)
{
    return (t->needs & (TABLE_NEEDS_KEY_USER | TABLE_NEEDS_KEY_DOMAIN)) != 0;
}

void table_warn_unquoted(petrel_module *m, const char *type, const char *path, int line, const char *query)
{
    char quote = 0;
    for (const char *p = query; *p; p++) {
        if (quote == 0) {
            if (*p == '\'' || *p == '"')
                quote = *p;
        } else if (*p == quote) {
            quote = 0;
        }
        if (quote == '\'')
            continue;
        if (*p == '%') {
            if (isalnum((unsigned char)p[1]))
                petrel_module_log(m, PETREL_LOG_WARNING,
                                  "%s:%s, line %d: query >%s< contains >%.2s< without the recommended '' "
                                  "quotes", type, path, line, query, p);
            if (p[1] != '\0')
                p++;
        }
    }
}

void table_buffer_put(struct table_buffer *b, const char *s, size_t n)
{
    if (b->len + n + 1 > b->cap) {
        b->cap = (b->len + n + 1) * 2;
        b->data = realloc(b->data, b->cap);
        if (b->data == NULL)
            abort();
    }
    memcpy(b->data + b->len, s, n);
    b->len += n;
    b->data[b->len] = '\0';
}

/* The labels of domain, counted from the right (1 = the top level). */
static int label(const char *domain, int n, const char **start, size_t *len)
{
    const char *end = domain + strlen(domain);
    for (int i = 1;; i++) {
        const char *dot = end;
        while (dot > domain && dot[-1] != '.')
            dot--;
        if (i == n) {
            *start = dot;
            *len = (size_t)(end - dot);
            return *len > 0;
        }
        if (dot == domain)
            return 0;
        end = dot - 1;
    }
}

int table_template_expand(const struct table_template *t, const char *format, const char *value, const char *key,
                          table_escape_fn *escape, void *escape_arg, struct table_buffer *out)
{
    const char *vat = strrchr(value, '@');
    const char *vdomain = vat ? vat + 1 : NULL;
    const char *kat = key ? strrchr(key, '@') : NULL;
    const char *kdomain = kat ? kat + 1 : NULL;
    if (key == NULL) {
        if (((t->needs & TABLE_NEEDS_KEY_DOMAIN) && (!vdomain || !*vdomain)) ||
            ((t->needs & TABLE_NEEDS_KEY_USER) && vat == value))
            return 0;
    } else {
        if (((t->needs & TABLE_NEEDS_VALUE_DOMAIN) && (!vdomain || !*vdomain)) ||
            ((t->needs & TABLE_NEEDS_VALUE_USER) && vat == value))
            return 0;
        if (((t->needs & TABLE_NEEDS_KEY_DOMAIN) && (!kdomain || !*kdomain)) ||
            ((t->needs & TABLE_NEEDS_KEY_USER) && kat == key))
            return 0;
    }
    const char *parts_domain = key ? kdomain : vdomain;
    for (int i = 1; i <= t->nparts; i++) {
        const char *s;
        size_t n;
        if (parts_domain == NULL || !label(parts_domain, i, &s, &n))
            return 0;   /* too few labels, or an empty one */
    }
    if (out->len > 0 && key != NULL)
        table_buffer_put(out, ",", 1);
    for (const char *p = format; *p; p++) {
        if (*p != '%') {
            table_buffer_put(out, p, 1);
            continue;
        }
        const char *s = NULL;
        size_t n = 0;
        switch (*++p) {
        case '%':
            table_buffer_put(out, "%", 1);
            continue;
        case 's':
            s = value, n = strlen(value);
            break;
        case 'u':
            s = value, n = vat ? (size_t)(vat - value) : strlen(value);
            break;
        case 'd':
            s = vdomain, n = strlen(vdomain);
            break;
        case 'S':
            s = key ? key : value, n = strlen(s);
            break;
        case 'U':
            if (key)
                s = key, n = kat ? (size_t)(kat - key) : strlen(key);
            else
                s = value, n = vat ? (size_t)(vat - value) : strlen(value);
            break;
        case 'D':
            s = key ? kdomain : vdomain, n = strlen(s);
            break;
        default:   /* 1..9: table_template_parse allowed nothing else */
            label(parts_domain, *p - '0', &s, &n);
            break;
        }
        if (escape)
            escape(out, s, n, escape_arg);
        else
            table_buffer_put(out, s, n);
    }
    return 1;
}

/* ------------------------------------------------------------------ */
/* the domain list                                                     */

int table_domains_eligible(const struct table_domains *d, const char *key)
{
    if (d->items == NULL)
        return 1;
    const char *at = strrchr(key, '@');
    if (at == NULL || at == key)
        return 0;
    for (size_t i = 0; i < d->n; i++)
        if (strcasecmp(d->items[i].name, at + 1) == 0)
            return !d->items[i].negate;
    return 0;
}

int table_domains_parse(struct table_domains *d, const char *list, int line, const char *type, petrel_pool *pool,
                        const char **error)
{
    size_t cap = 0;
    char *copy = petrel_pool_strdup(pool, list), *outer = NULL;
    for (char *item = strtok_r(copy, ", \t", &outer); item; item = strtok_r(NULL, ", \t", &outer)) {
        int negate = 0;
        if (*item == '!') {
            negate = 1;
            item++;
        }
        if (strchr(item, ':') && *item != '/') {
            *error = petrel_pool_printf(pool, "line %d: domain: \"%s\": lookup tables are not supported in the "
                                        "%s module's domain list (list the domains, or name a file of them)",
                                        line, item, type);
            return -1;
        }
        char *names = item;
        if (*item == '/') {
            FILE *fp = fopen(item, "re");
            if (fp == NULL) {
                *error = petrel_pool_printf(pool, "line %d: domain: open %s: %s", line, item, strerror(errno));
                return -1;
            }
            struct table_buffer text = { 0 };
            char buf[4096];
            while (fgets(buf, sizeof(buf), fp)) {
                buf[strcspn(buf, "#")] = '\0';
                table_buffer_put(&text, buf, strlen(buf));
                table_buffer_put(&text, " ", 1);
            }
            fclose(fp);
            names = petrel_pool_strdup(pool, text.data ? text.data : "");
            free(text.data);
        }
        char *save = NULL;
        for (char *name = strtok_r(names, ", \t\r\n", &save); name; name = strtok_r(NULL, ", \t\r\n", &save)) {
            if (d->n == cap) {
                cap = cap ? cap * 2 : 8;
                struct table_domain_item *grown = petrel_pool_alloc(pool, cap * sizeof(*grown));
                if (d->n)
                    memcpy(grown, d->items, d->n * sizeof(*grown));
                d->items = grown;
            }
            d->items[d->n++] = (struct table_domain_item){ name, negate };
        }
    }
    if (d->n == 0)
        d->items = NULL;
    return 0;
}

int table_valid_utf8(const char *s)
{
    const unsigned char *p = (const unsigned char *)s;
    while (*p) {
        int more = *p < 0x80 ? 0 : (*p >= 0xc2 && *p <= 0xdf) ? 1 : (*p >= 0xe0 && *p <= 0xef) ? 2
                 : (*p >= 0xf0 && *p <= 0xf4) ? 3 : -1;
        if (more < 0)
            return 0;
        for (int i = 1; i <= more; i++)
            if ((p[i] & 0xc0) != 0x80)
                return 0;
        p += more + 1;
    }
    return 1;
}

/* ------------------------------------------------------------------ */
/* the settings query tables share                                     */

int table_query_settings_parse(struct table_query_settings *q, const struct table_settings *c, petrel_module *m,
                               const char *type, const char *path, unsigned flags, const char *missing_query,
                               petrel_pool *pool, const char **error)
{
    if (q->query == NULL) {
        q->query = table_settings_get(c, "query", NULL);
        q->query_line = table_settings_line(c, "query");
    }
    if (q->query == NULL) {
        *error = petrel_pool_strdup(pool, missing_query);
        return -1;
    }
    const char *limit = table_settings_get(c, "expansion_limit", "0");
    char *end;
    errno = 0;
    long n = strtol(limit, &end, 10);
    if (errno || *limit == '\0' || *end != '\0' || n < 0 || n > INT_MAX) {
        *error = petrel_pool_printf(pool, "line %d: expansion_limit: bad number \"%s\" (0 to %d)",
                                    table_settings_line(c, "expansion_limit"), limit, INT_MAX);
        return -1;
    }
    q->expansion_limit = n;
    char bad = 0;
    if ((flags & TABLE_QUERY_TEMPLATE) && table_template_parse(&q->tpl, q->query, 1, &bad) < 0) {
        *error = petrel_pool_printf(pool, "line %d: query: invalid %%%c in \"%s\"", q->query_line, bad ? bad : ' ',
                                    q->query);
        return -1;
    }
    q->result_format = table_settings_get(c, "result_format", "%s");
    if (table_template_parse(&q->tpl, q->result_format, 0, &bad) < 0) {
        *error = petrel_pool_printf(pool, "line %d: result_format: invalid %%%c in \"%s\"",
                                    table_settings_line(c, "result_format"), bad ? bad : ' ', q->result_format);
        return -1;
    }
    if (table_domains_parse(&q->domains, table_settings_get(c, "domain", ""), table_settings_line(c, "domain"), type,
                            pool, error) != 0)
        return -1;
    if (flags & TABLE_QUERY_TEMPLATE)
        table_warn_unquoted(m, type, path, q->query_line, q->query);
    return 0;
}

int table_query_eligible(const struct table_query_settings *q, const char *key)
{
    return table_valid_utf8(key) && table_domains_eligible(&q->domains, key);
}

int table_query_result_add(const struct table_query_settings *q, petrel_module *m, const char *type,
                           const char *path, const char *key, const char *value, struct table_buffer *out,
                           long *count)
{
    if (*value == '\0') {
        petrel_module_log(m, PETREL_LOG_WARNING, "table \"%s:%s\": empty lookup result for: \"%.100s\" -- ignored",
                          type, path, key);
        return 0;
    }
    if (table_template_expand(&q->tpl, q->result_format, value, key, NULL, NULL, out) && q->expansion_limit > 0 &&
        ++*count > q->expansion_limit) {
        petrel_module_log(m, PETREL_LOG_WARNING, "%s:%s: expansion limit exceeded for key \"%.100s\"", type, path,
                          key);
        return -1;
    }
    return 0;
}
