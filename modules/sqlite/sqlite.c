/*
 * sqlite: lookup tables in an SQLite database, configured by Postfix's
 * sqlite_table(5) files unchanged:
 *
 *   dbpath = /etc/postfix/virtual.sqlite
 *   query = SELECT target FROM aliases WHERE address = '%s'
 *   result_format = %s          (optional)
 *   domain = example.com, /etc/postfix/sqlite-domains   (optional)
 *   expansion_limit = 1         (optional)
 *
 * The query expansions are Postfix's: %s the key, %u its local part, %d its
 * domain, %1..%9 the domain's labels from the right, %S %U %D the key's
 * parts in result_format, %% a percent sign; a key that lacks what the
 * query needs (no domain for %d, an empty local part for %u, too few labels)
 * is not found without asking the database. The legacy select_field,
 * table, where_field and additional_conditions build the query when query
 * is not set.
 *
 * Injection: every expansion is quoted for a single-quoted SQL literal
 * (a ' becomes '', as sqlite3_mprintf's %q does, which is all SQLite needs:
 * a backslash is not special there), and the expansion is done in one pass,
 * so a % or a quote in a key is data and can only ever match a row or not.
 * An expansion outside '...' in the query is warned about at open, as
 * Postfix does. Keys are C strings: a NUL byte cannot be part of one.
 *
 * Lookups run on the role's event loop: the database is a local file,
 * opened read-only; a lookup waits at most 100 ms for a writer's lock, then
 * fails with a temporary error (the mail is deferred, never "not found").
 * A query that uses %u, %d or %1..%9 makes the table a pattern table, as in
 * Postfix: it is asked with the full address only.
 */
#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <sqlite3.h>

#include <petrel/plugin.h>

#define LINE_MAX_BYTES (64 * 1024)
#define BUSY_TIMEOUT_MS 100

/* What the query or result template uses (db_common's flags). */
#define NEEDS_KEY_USER 1
#define NEEDS_KEY_DOMAIN 2
#define NEEDS_VALUE_USER 4
#define NEEDS_VALUE_DOMAIN 8

struct domain_item {
    const char *name;
    int negate;
};

struct table {
    petrel_module *module;
    const char *config;           /* the .cf file, for messages */
    sqlite3 *db;
    const char *query, *result_format;
    long expansion_limit;
    unsigned needs;
    int nparts;                   /* the highest %1..%9 */
    struct domain_item *domains;  /* NULL: every key is eligible */
    size_t ndomains;
};

struct setting {
    const char *name, *value;
    int line;
};

struct config {
    struct setting *items;
    size_t n;
};

static const char *const known_names[] = {
    "dbpath", "query", "result_format", "domain", "expansion_limit",
    "select_field", "table", "where_field", "additional_conditions", NULL,
};

static const struct setting *setting(const struct config *c, const char *name)
{
    const struct setting *found = NULL;
    for (size_t i = 0; i < c->n; i++)
        if (strcmp(c->items[i].name, name) == 0)
            found = &c->items[i];   /* the last one wins, as in main.cf */
    return found;
}

static const char *get(const struct config *c, const char *name, const char *def)
{
    const struct setting *s = setting(c, name);
    return s ? s->value : def;
}

static int line_of(const struct config *c, const char *name)
{
    const struct setting *s = setting(c, name);
    return s ? s->line : 0;
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
static int add_setting(struct config *c, char *text, int line, petrel_pool *pool, const char **error)
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
    c->items[c->n++] = (struct setting){ petrel_pool_strdup(pool, name), petrel_pool_strdup(pool, value), line };
    return 0;
}

/* Reads the file as Postfix's cfg_parser does: comments, blank lines, and
 * lines starting with white space that continue the previous one. */
static int read_config(const char *path, struct config *c, petrel_pool *pool, const char **error)
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

/* Which key parts a template needs; -1 on an unknown %x. */
static int parse_template(struct table *t, const char *format, int query, char *bad)
{
    for (const char *p = format; *p; p++) {
        if (*p != '%')
            continue;
        switch (*++p) {
        case '%': case 's': case 'S':
            break;
        case 'u':
            t->needs |= query ? NEEDS_KEY_USER : NEEDS_VALUE_USER;
            break;
        case 'd':
            t->needs |= query ? NEEDS_KEY_DOMAIN : NEEDS_VALUE_DOMAIN;
            break;
        case 'U':
            t->needs |= NEEDS_KEY_USER;
            break;
        case 'D':
            t->needs |= NEEDS_KEY_DOMAIN;
            break;
        case '1': case '2': case '3': case '4': case '5': case '6': case '7': case '8': case '9':
            if (t->nparts < *p - '0')
                t->nparts = *p - '0';
            t->needs |= NEEDS_KEY_DOMAIN;
            break;
        default:
            *bad = *p;
            return -1;
        }
    }
    return 0;
}

/* Postfix's warning for %x outside a '...' literal: the quoting that keeps
 * a key from changing the query only works inside one. */
static void warn_unquoted(const struct table *t, int line)
{
    char quote = 0;
    for (const char *p = t->query; *p; p++) {
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
                petrel_module_log(t->module, PETREL_LOG_WARNING,
                                  "sqlite:%s, line %d: query >%s< contains >%.2s< without the recommended '' "
                                  "quotes", t->config, line, t->query, p);
            if (p[1] != '\0')
                p++;
        }
    }
}

/* ------------------------------------------------------------------ */
/* expansion (db_common_expand)                                        */

struct buffer {
    char *data;
    size_t len, cap;
};

static void put(struct buffer *b, const char *s, size_t n)
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

/* A single-quoted SQL literal's content: ' doubled (sqlite3_mprintf %q). */
static void put_quoted(struct buffer *b, const char *s, size_t n, int quote)
{
    if (!quote) {
        put(b, s, n);
        return;
    }
    for (size_t i = 0; i < n; i++) {
        put(b, s + i, 1);
        if (s[i] == '\'')
            put(b, "'", 1);
    }
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

/* Expands format for value (the key for a query, a result otherwise; key is
 * then the lookup key). Returns 0 when the value lacks what the template
 * needs (no query, or a skipped result), 1 when appended to out. */
static int expand(const struct table *t, const char *format, const char *value, const char *key, int quote,
                  struct buffer *out)
{
    const char *vat = strrchr(value, '@');
    const char *vdomain = vat ? vat + 1 : NULL;
    const char *kat = key ? strrchr(key, '@') : NULL;
    const char *kdomain = kat ? kat + 1 : NULL;
    if (key == NULL) {
        if (((t->needs & NEEDS_KEY_DOMAIN) && (!vdomain || !*vdomain)) ||
            ((t->needs & NEEDS_KEY_USER) && vat == value))
            return 0;
    } else {
        if (((t->needs & NEEDS_VALUE_DOMAIN) && (!vdomain || !*vdomain)) ||
            ((t->needs & NEEDS_VALUE_USER) && vat == value))
            return 0;
        if (((t->needs & NEEDS_KEY_DOMAIN) && (!kdomain || !*kdomain)) ||
            ((t->needs & NEEDS_KEY_USER) && kat == key))
            return 0;
    }
    const char *parts_domain = key ? kdomain : vdomain;
    for (int i = 1; i <= t->nparts; i++) {
        const char *s;
        size_t n;
        if (parts_domain == NULL || !label(parts_domain, i, &s, &n))
            return 0;   /* too few labels, or an empty one */
    }
    if (out->len > 0)
        put(out, ",", 1);
    for (const char *p = format; *p; p++) {
        if (*p != '%') {
            put(out, p, 1);
            continue;
        }
        const char *s = NULL;
        size_t n = 0;
        switch (*++p) {
        case '%':
            put(out, "%", 1);
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
        default:   /* 1..9: parse_template allowed nothing else */
            label(parts_domain, *p - '0', &s, &n);
            break;
        }
        put_quoted(out, s, n, quote);
    }
    return 1;
}

/* ------------------------------------------------------------------ */
/* the table type                                                      */

static int domain_eligible(const struct table *t, const char *key)
{
    if (t->domains == NULL)
        return 1;
    const char *at = strrchr(key, '@');
    if (at == NULL || at == key)
        return 0;
    for (size_t i = 0; i < t->ndomains; i++)
        if (strcasecmp(t->domains[i].name, at + 1) == 0)
            return !t->domains[i].negate;
    return 0;
}

/* domain = name, !name, /file ... (Postfix's string list). */
static int parse_domains(struct table *t, const char *list, int line, petrel_pool *pool, const char **error)
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
                                        "sqlite module's domain list (list the domains, or name a file of them)",
                                        line, item);
            return -1;
        }
        char *names = item;
        if (*item == '/') {
            FILE *fp = fopen(item, "re");
            if (fp == NULL) {
                *error = petrel_pool_printf(pool, "line %d: domain: open %s: %s", line, item, strerror(errno));
                return -1;
            }
            struct buffer text = { 0 };
            char buf[4096];
            while (fgets(buf, sizeof(buf), fp)) {
                buf[strcspn(buf, "#")] = '\0';
                put(&text, buf, strlen(buf));
                put(&text, " ", 1);
            }
            fclose(fp);
            names = petrel_pool_strdup(pool, text.data ? text.data : "");
            free(text.data);
        }
        char *save = NULL;
        for (char *name = strtok_r(names, ", \t\r\n", &save); name; name = strtok_r(NULL, ", \t\r\n", &save)) {
            if (t->ndomains == cap) {
                cap = cap ? cap * 2 : 8;
                struct domain_item *grown = petrel_pool_alloc(pool, cap * sizeof(*grown));
                if (t->ndomains)
                    memcpy(grown, t->domains, t->ndomains * sizeof(*grown));
                t->domains = grown;
            }
            t->domains[t->ndomains++] = (struct domain_item){ name, negate };
        }
    }
    if (t->ndomains == 0)
        t->domains = NULL;
    return 0;
}

static void table_close(void *handle)
{
    struct table *t = handle;
    if (t->db)
        sqlite3_close(t->db);
    t->db = NULL;
}

static void *table_open(petrel_module *m, const char *name, petrel_pool *pool, const char **error)
{
    if (name[0] != '/' && name[0] != '.') {
        *error = petrel_pool_printf(pool, "parameters in main.cf (%s_query, ...) are not supported: name a "
                                    "sqlite_table(5) configuration file by its path", name);
        return NULL;
    }
    struct config c = { 0 };
    if (read_config(name, &c, pool, error) != 0) {
        free(c.items);
        return NULL;
    }
    struct table *t = petrel_pool_zalloc(pool, sizeof(*t));
    t->module = m;
    t->config = petrel_pool_strdup(pool, name);
    void *result = NULL;
    for (size_t i = 0; i < c.n; i++) {
        int known = 0;
        for (const char *const *k = known_names; *k; k++)
            known |= strcmp(*k, c.items[i].name) == 0;
        if (!known)
            petrel_module_log(m, PETREL_LOG_WARNING, "sqlite:%s, line %d: unknown parameter \"%s\" is ignored", name,
                              c.items[i].line, c.items[i].name);
    }
    const char *dbpath = get(&c, "dbpath", "");
    t->query = get(&c, "query", NULL);
    int qline = line_of(&c, "query");
    if (t->query == NULL) {
        const char *table = get(&c, "table", NULL), *select = get(&c, "select_field", NULL),
                   *where = get(&c, "where_field", NULL);
        if (table == NULL || select == NULL || where == NULL) {
            *error = petrel_pool_printf(pool, "no query (and not all of the legacy table, select_field and "
                                        "where_field are set)");
            goto out;
        }
        t->query = petrel_pool_printf(pool, "SELECT %s FROM %s WHERE %s='%%s' %s", select, table, where,
                                      get(&c, "additional_conditions", ""));
        qline = line_of(&c, "table");
    }
    t->result_format = get(&c, "result_format", "%s");
    const char *limit = get(&c, "expansion_limit", "0");
    char *end;
    errno = 0;
    t->expansion_limit = strtol(limit, &end, 10);
    if (errno || *limit == '\0' || *end != '\0' || t->expansion_limit < 0) {
        *error = petrel_pool_printf(pool, "line %d: expansion_limit: bad number \"%s\"", line_of(&c, "expansion_limit"),
                                    limit);
        goto out;
    }
    if (*dbpath == '\0') {
        *error = petrel_pool_printf(pool, "dbpath is not set");
        goto out;
    }
    char bad = 0;
    if (parse_template(t, t->query, 1, &bad) != 0) {
        *error = petrel_pool_printf(pool, "line %d: query: invalid %%%c in \"%s\"", qline, bad ? bad : ' ', t->query);
        goto out;
    }
    if (parse_template(t, t->result_format, 0, &bad) != 0) {
        *error = petrel_pool_printf(pool, "line %d: result_format: invalid %%%c in \"%s\"",
                                    line_of(&c, "result_format"), bad ? bad : ' ', t->result_format);
        goto out;
    }
    if (parse_domains(t, get(&c, "domain", ""), line_of(&c, "domain"), pool, error) != 0)
        goto out;
    warn_unquoted(t, qline);
    int rc = sqlite3_open_v2(dbpath, &t->db, SQLITE_OPEN_READONLY | SQLITE_OPEN_NOMUTEX, NULL);
    if (rc != SQLITE_OK) {
        *error = petrel_pool_printf(pool, "line %d: dbpath: open database %s: %s", line_of(&c, "dbpath"), dbpath,
                                    t->db ? sqlite3_errmsg(t->db) : sqlite3_errstr(rc));
        goto out;
    }
    sqlite3_busy_timeout(t->db, BUSY_TIMEOUT_MS);
    /* Prepare the query once with a harmless key, so that a misspelt
     * table or column is reported now, naming the file and line. */
    struct buffer probe = { 0 };
    expand(t, t->query, "probe@a.b.c.d.e.f.g.h.i", NULL, 1, &probe);
    sqlite3_stmt *stmt = NULL;
    rc = sqlite3_prepare_v2(t->db, probe.data ? probe.data : t->query, -1, &stmt, NULL);
    free(probe.data);
    if (rc != SQLITE_OK) {
        *error = petrel_pool_printf(pool, "line %d: query: %s", qline, sqlite3_errmsg(t->db));
        sqlite3_finalize(stmt);
        goto out;
    }
    sqlite3_finalize(stmt);
    result = t;
out:
    if (result == NULL)
        table_close(t);
    free(c.items);
    return result;
}

static int valid_utf8(const char *s)
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

static int table_lookup(void *handle, const char *key, const char **value, petrel_pool *scratch)
{
    struct table *t = handle;
    if (!valid_utf8(key) || !domain_eligible(t, key))
        return 0;
    struct buffer query = { 0 }, result = { 0 };
    if (!expand(t, t->query, key, NULL, 1, &query))
        return 0;
    int status = 0;
    long count = 0;
    sqlite3_stmt *stmt = NULL;
    int rc = sqlite3_prepare_v2(t->db, query.data, -1, &stmt, NULL);
    if (rc != SQLITE_OK) {
        petrel_module_log(t->module, PETREL_LOG_WARNING, "sqlite:%s: SQL prepare failed: %s", t->config,
                          sqlite3_errmsg(t->db));
        status = -1;
    }
    while (status == 0 && (rc = sqlite3_step(stmt)) != SQLITE_DONE) {
        if (rc != SQLITE_ROW) {
            petrel_module_log(t->module, PETREL_LOG_WARNING, "sqlite:%s: SQL step failed for the lookup of \"%s\": %s",
                              t->config, key, sqlite3_errmsg(t->db));
            status = -1;
            break;
        }
        const char *text = (const char *)sqlite3_column_text(stmt, 0);
        if (text == NULL)
            continue;
        if (*text == '\0') {
            petrel_module_log(t->module, PETREL_LOG_WARNING, "table \"sqlite:%s\": empty lookup result for: \"%s\""
                              " -- ignored", t->config, key);
            continue;
        }
        if (expand(t, t->result_format, text, key, 0, &result) && t->expansion_limit > 0 &&
            ++count > t->expansion_limit) {
            petrel_module_log(t->module, PETREL_LOG_WARNING, "sqlite:%s: expansion limit exceeded for key \"%s\"",
                              t->config, key);
            status = -1;
        }
    }
    sqlite3_finalize(stmt);
    if (status == 0 && result.len > 0) {
        *value = petrel_pool_strdup(scratch, result.data);
        status = 1;
    }
    free(query.data);
    free(result.data);
    return status;
}

static int table_pattern(void *handle)
{
    const struct table *t = handle;
    return (t->needs & (NEEDS_KEY_USER | NEEDS_KEY_DOMAIN)) != 0;
}

static const petrel_table_type table_types[] = {
    {
        PETREL_TABLE_TYPE_INIT,
        .name = "sqlite",
        .open = table_open,
        .lookup = table_lookup,
        .close = table_close,
        .handle_pattern = table_pattern,
    },
    { .name = NULL },
};

const petrel_module_desc petrel_module_descriptor = {
    PETREL_MODULE_INIT,
    .name = "sqlite",
    .version = "1.0",
    .description = "sqlite: lookup tables (Postfix's sqlite_table(5) configuration files)",
    .table_types = table_types,
};
