/*
 * main.cf values: reading logical lines, typed validation, the accessors;
 * $name expansion is expand.c. Loading a generation (main.cf, then
 * master.cf) is load.c; the per-service and stress copies service.c; the
 * parameter table and schema params.c; defaults computed from the host
 * defaults.c.
 *
 * Reading follows Postfix's readlline(): blank and comment lines (# as the
 * first non-space character) are ignored, a line starting with white space
 * continues the logical line. Values are stored raw; once the whole file is
 * read each value is expanded with memoization, so `$name` always sees the
 * final definition of name (later lines override earlier ones, as in
 * Postfix) and each value is expanded once. A value being expanded is
 * marked, so a reference back to it is a loop, reported with the chain.
 * Validation runs after expansion, so a reference to a value of the wrong
 * type is only reported once, at the value itself.
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

/* ---- logging ---- */

static void cfg_vlog(struct cfg *cfg, enum log_level level, const char *file, int line,
                     const char *name, const char *fmt, va_list ap) PETREL_PRINTF(6, 0);
static void cfg_vlog(struct cfg *cfg, enum log_level level, const char *file, int line,
                     const char *name, const char *fmt, va_list ap)
{
    struct buf b = BUF_INIT;
    if (file && line > 0)
        buf_printf(&b, "%s:%d: ", file, line);
    else if (file)
        buf_printf(&b, "%s: ", file);
    /* A problem with a default nobody wrote has no line: say it is the default. */
    const struct cfg_value *v = name && file && line <= 0 ? cfg_value_find(cfg, name) : NULL;
    if (v && v->file == NULL)
        buf_printf(&b, "%s (not set in main.cf: its default value \"%s\"): ", name, v->raw ? v->raw : "");
    else if (name)
        buf_printf(&b, "%s: ", name);
    buf_vprintf(&b, fmt, ap);
    if (level == LOG_LEVEL_ERROR)
        msg_error("%s", b.data);
    else
        msg_warn("%s", b.data);
    buf_free(&b);
}

void cfg_error(struct cfg *cfg, const char *file, int line, const char *name, const char *fmt, ...)
{
    struct cfg *gen = cfg->generation ? (struct cfg *)cfg->generation : cfg;
    gen->errors++;
    if (gen->quiet)
        return;
    va_list ap;
    va_start(ap, fmt);
    cfg_vlog(cfg, LOG_LEVEL_ERROR, file, line, name, fmt, ap);
    va_end(ap);
}

void cfg_warn(struct cfg *cfg, const char *file, int line, const char *name, const char *fmt, ...)
{
    const struct cfg *gen = cfg->generation ? cfg->generation : cfg;
    if (gen->quiet)
        return;
    va_list ap;
    va_start(ap, fmt);
    cfg_vlog(cfg, LOG_LEVEL_WARN, file, line, name, fmt, ap);
    va_end(ap);
}

/* Where a value's problems are reported: its line, or main.cf for a default. */
const char *cfg_value_file(const struct cfg *cfg, const struct cfg_value *v)
{
    return v->file ? v->file : cfg->main_path;
}

/* ---- the logical-line reader ---- */

struct cfg_reader {
    FILE *fp;
    struct buf pending;      /* a physical line read ahead */
    int have_pending;
    int pending_line;
    int lineno;
};

struct cfg_reader *cfg_reader_open(const char *path)
{
    FILE *fp = fopen(path, "r");
    return fp ? cfg_reader_from_stream(fp) : NULL;
}

struct cfg_reader *cfg_reader_from_stream(FILE *fp)
{
    struct cfg_reader *r = xcalloc(1, sizeof(*r));
    r->fp = fp;
    return r;
}

void cfg_reader_close(struct cfg_reader *r)
{
    if (!r)
        return;
    fclose(r->fp);
    buf_free(&r->pending);
    free(r);
}

/* One physical line without its newline; 0 at EOF, -1 when longer than CFG_MAX_LINE. */
static int read_physical(struct cfg_reader *r, struct buf *out)
{
    int c, too_long = 0;
    buf_reset(out);
    buf_append(out, "", 0);  /* data is a string even when empty */
    c = getc(r->fp);
    if (c == EOF)
        return 0;
    r->lineno++;
    for (; c != EOF && c != '\n'; c = getc(r->fp)) {
        if (out->len < CFG_MAX_LINE)
            buf_putc(out, (char)c);
        else
            too_long = 1;
    }
    return too_long ? -1 : 1;
}

static int is_noise(const char *line)
{
    while (*line == ' ' || *line == '\t' || *line == '\r' || *line == '\f' || *line == '\v')
        line++;
    return *line == '\0' || *line == '#';
}

int cfg_reader_next(struct cfg_reader *r, struct buf *out, int *first_line)
{
    struct buf phys = BUF_INIT;
    int status, too_long = 0;
    buf_reset(out);
    buf_append(out, "", 0);  /* data is a string even when empty */
    /* Find the first line that is neither blank nor a comment. */
    for (;;) {
        if (r->have_pending) {
            r->have_pending = 0;
            buf_reset(&phys);
            buf_append(&phys, r->pending.data, r->pending.len);
            *first_line = r->pending_line;
            status = 1;
        } else {
            status = read_physical(r, &phys);
            *first_line = r->lineno;
        }
        if (status == 0) {
            buf_free(&phys);
            return 0;
        }
        if (status < 0)
            too_long = 1;
        if (!is_noise(phys.data))
            break;
    }
    buf_append(out, phys.data, phys.len);
    /* Append continuation lines; a non-blank line in column 1 starts the next logical line. */
    for (;;) {
        status = read_physical(r, &phys);
        if (status == 0)
            break;
        if (status < 0)
            too_long = 1;
        if (is_noise(phys.data))
            continue;
        if (phys.data[0] != ' ' && phys.data[0] != '\t') {
            buf_reset(&r->pending);
            buf_append(&r->pending, phys.data, phys.len);
            r->have_pending = 1;
            r->pending_line = r->lineno;
            break;
        }
        if (out->len + phys.len > CFG_MAX_LINE)
            too_long = 1;
        else
            buf_append(out, phys.data, phys.len);
    }
    buf_free(&phys);
    return too_long ? -1 : 1;
}

/* ---- small helpers ---- */

int cfg_name_char(int c)
{
    return isalnum((unsigned char)c) || c == '_';
}

int cfg_param_name_char(int c)
{
    return cfg_name_char(c) || c == '-' || c == '.';
}

int cfg_is_quiet(const struct cfg *cfg)
{
    return (cfg->generation ? cfg->generation : cfg)->quiet;
}

char *cfg_trim(char *s)
{
    while (isspace((unsigned char)*s))
        s++;
    size_t n = strlen(s);
    while (n > 0 && isspace((unsigned char)s[n - 1]))
        s[--n] = '\0';
    return s;
}

int cfg_edit_distance(const char *a, const char *b, int limit)
{
    size_t la = strlen(a), lb = strlen(b);
    if (la > 200 || lb > 200)
        return limit + 1;
    if ((la > lb ? la - lb : lb - la) > (size_t)limit)
        return limit + 1;
    int prev[201], cur[201];
    for (size_t j = 0; j <= lb; j++)
        prev[j] = (int)j;
    for (size_t i = 1; i <= la; i++) {
        cur[0] = (int)i;
        int row_min = cur[0];
        for (size_t j = 1; j <= lb; j++) {
            int cost = a[i - 1] != b[j - 1];
            int best = prev[j - 1] + cost;
            if (prev[j] + 1 < best)
                best = prev[j] + 1;
            if (cur[j - 1] + 1 < best)
                best = cur[j - 1] + 1;
            cur[j] = best;
            if (best < row_min)
                row_min = best;
        }
        if (row_min > limit)
            return limit + 1;
        memcpy(prev, cur, (lb + 1) * sizeof(int));
    }
    return prev[lb] > limit ? limit + 1 : prev[lb];
}

int cfg_value_cmp(const void *a, const void *b)
{
    return strcmp(((const struct cfg_value *)a)->name, ((const struct cfg_value *)b)->name);
}

struct cfg_value *cfg_value_find(const struct cfg *cfg, const char *name)
{
    size_t lo = 0, hi = cfg->nvalues;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = strcmp(name, cfg->values[mid].name);
        if (c == 0)
            return &cfg->values[mid];
        if (c < 0)
            hi = mid;
        else
            lo = mid + 1;
    }
    return NULL;
}

/* ---- typed parsers ---- */

int cfg_parse_bool(const char *text, int *out)
{
    if (strcasecmp(text, "yes") == 0 || strcasecmp(text, "true") == 0) {
        *out = 1;
        return 0;
    }
    if (strcasecmp(text, "no") == 0 || strcasecmp(text, "false") == 0) {
        *out = 0;
        return 0;
    }
    return -1;
}

static int parse_digits(const char **p, long long *out)
{
    const char *s = *p;
    long long n = 0;
    if (!isdigit((unsigned char)*s))
        return -1;
    for (; isdigit((unsigned char)*s); s++) {
        if (n > (LLONG_MAX - (*s - '0')) / 10)
            return -1;
        n = n * 10 + (*s - '0');
    }
    *p = s;
    *out = n;
    return 0;
}

int cfg_parse_time(const char *text, char default_unit, long long *seconds)
{
    const char *p = text;
    long long n, mult;
    if (parse_digits(&p, &n) < 0)
        return -1;
    char unit = *p ? *p++ : default_unit;
    if (*p)
        return -1;
    switch (unit) {
    case 's': mult = 1; break;
    case 'm': mult = 60; break;
    case 'h': mult = 3600; break;
    case 'd': mult = 86400; break;
    case 'w': mult = 7 * 86400; break;
    default: return -1;
    }
    if (n > LLONG_MAX / mult)
        return -1;
    *seconds = n * mult;
    return 0;
}

int cfg_parse_size(const char *text, long long *out)
{
    const char *p = text;
    if (parse_digits(&p, out) < 0 || *p)
        return -1;
    return 0;
}

static int parse_int(const char *text, long long *out)
{
    const char *p = text;
    int negative = 0;
    if (*p == '-' || *p == '+')
        negative = *p++ == '-';
    if (parse_digits(&p, out) < 0 || *p)
        return -1;
    if (negative)
        *out = -*out;
    return 0;
}

/* The unit a bare number has: the unit letter of the parameter's default ("5d" -> d). */
static char time_default_unit(const struct cfg_param *p)
{
    /* "300s", or the unit of a computed default's last value:
     * "${stress?{10}:{300}}s", "${postscreen_dnsbl_ttl?{...}:{1h}}". */
    const char *d = p->def ? p->def : "";
    size_t n = strlen(d);
    if (n >= 2 && d[n - 2] == '}' && strchr("smhdw", d[n - 1]))
        return d[n - 1];
    while (n > 0 && d[n - 1] == '}')
        n--;
    if (n >= 2 && isdigit((unsigned char)d[n - 2]) && strchr("smhdw", d[n - 1]))
        return d[n - 1];
    return 's';
}

/* ---- lists ---- */

/*
 * Postfix lists: items separated by commas and/or white space; { } groups
 * an item that contains separators and is stripped when it encloses the
 * whole item ("{ a b }" -> "a b"), but kept inside one ("inline:{a=b, c=d}").
 */
static int split_list(const char *text, char ***items_out, size_t *n_out)
{
    char **items = NULL;
    size_t n = 0, cap = 0;
    const char *p = text;
    int status = 0;
    for (;;) {
        while (*p && (isspace((unsigned char)*p) || *p == ','))
            p++;
        if (!*p)
            break;
        const char *start = p;
        int depth = 0;
        while (*p && (depth > 0 || !(isspace((unsigned char)*p) || *p == ','))) {
            if (*p == '{')
                depth++;
            else if (*p == '}' && depth > 0)
                depth--;
            p++;
        }
        if (depth > 0)
            status = -1;            /* unbalanced: the item runs to the end */
        size_t len = (size_t)(p - start);
        char *item;
        if (len >= 2 && start[0] == '{' && start[len - 1] == '}') {
            /* strip only if the opening brace closes at the very end */
            int d = 0;
            size_t i;
            for (i = 0; i < len; i++) {
                if (start[i] == '{')
                    d++;
                else if (start[i] == '}' && --d == 0)
                    break;
            }
            if (i == len - 1) {
                char *inner = xstrndup(start + 1, len - 2);
                item = xstrdup(cfg_trim(inner));
                free(inner);
            } else {
                item = xstrndup(start, len);
            }
        } else {
            item = xstrndup(start, len);
        }
        if (n + 2 > cap) {
            cap = cap ? cap * 2 : 8;
            items = xrealloc(items, cap * sizeof(*items));
        }
        items[n++] = item;
    }
    if (!items)
        items = xcalloc(1, sizeof(*items));
    items[n] = NULL;
    *items_out = items;
    *n_out = n;
    return status;
}

char **cfg_split_list(const char *text)
{
    char **items;
    size_t n;
    split_list(text, &items, &n);
    return items;
}

void cfg_list_free(char **items)
{
    if (!items)
        return;
    for (char **p = items; *p; p++)
        free(*p);
    free(items);
}

/* Match lists where Postfix reads "/file/name" items as more items. */
static int list_reads_files(const char *name)
{
    static const char *const names[] = {
        "mynetworks", "mydestination", "relay_domains", "virtual_alias_domains",
        "virtual_mailbox_domains", "smtpd_forbid_bare_newline_exclusions",
        "smtpd_client_event_limit_exceptions", "debug_peer_list", "masquerade_exceptions",
        "smtpd_sasl_exceptions_networks", "smtpd_authorized_xforward_hosts", NULL,
    };
    for (const char *const *n = names; *n; n++)
        if (strcmp(*n, name) == 0)
            return 1;
    return 0;
}

/* Appends the items of a list file (one level: items in it are not files
 * again). negate: the file was named as "!/file/name", so each item gets a
 * "!" (Postfix's match_list: "!" toggles, so "!!x" is x again). */
static int read_list_file(struct cfg *cfg, struct cfg_value *v, const char *path, int negate,
                          char ***items, size_t *n, size_t *cap)
{
    FILE *fp = fopen(path, "r");
    if (!fp) {
        cfg_error(cfg, cfg_value_file(cfg, v), v->line, v->name, "cannot open \"%s\": %s", path,
                  strerror(errno));
        return -1;
    }
    struct buf line = BUF_INIT;
    size_t total = 0;
    int c, status = 0;
    do {
        c = getc(fp);
        if (c != EOF && c != '\n') {
            buf_putc(&line, (char)c);
            if (++total > CFG_MAX_LIST_FILE) {
                cfg_error(cfg, cfg_value_file(cfg, v), v->line, v->name, "file \"%s\" is too large", path);
                status = -1;
                break;
            }
            continue;
        }
        if (line.len && !is_noise(line.data)) {
            char *hash = strchr(line.data, '#');
            if (hash)
                *hash = '\0';          /* Postfix strips trailing comments in these files */
            char **more;
            size_t nmore;
            split_list(line.data, &more, &nmore);
            for (size_t i = 0; i < nmore; i++) {
                if (*n + 2 > *cap) {
                    *cap = *cap * 2 + 8;
                    *items = xrealloc(*items, *cap * sizeof(**items));
                }
                if (negate) {
                    char *item = xasprintf("!%s", more[i]);
                    free(more[i]);
                    more[i] = item;
                }
                (*items)[(*n)++] = more[i];
            }
            free(more);
        }
        buf_reset(&line);
    } while (c != EOF);
    buf_free(&line);
    fclose(fp);
    return status;
}

/* Copies a heap list into the pool, freeing the heap copy. */
static const char *const *pool_list(struct cfg *cfg, char **items, size_t n)
{
    const char **list = petrel_pool_alloc(cfg->pool, (n + 1) * sizeof(*list));
    for (size_t i = 0; i < n; i++) {
        list[i] = petrel_pool_strdup(cfg->pool, items[i]);
        free(items[i]);
    }
    list[n] = NULL;
    free(items);
    return list;
}

/* ---- validation ---- */

static void check_range(struct cfg *cfg, struct cfg_value *v, long long n)
{
    const struct cfg_param *p = v->param;
    if (p->min == 0 && p->max == 0)
        return;
    if (n < p->min) {
        cfg_error(cfg, cfg_value_file(cfg, v), v->line, v->name, "value \"%s\" is below the minimum %lld",
                  v->value, p->min);
        v->failed = 1;
    } else if (p->max != 0 && n > p->max) {
        cfg_error(cfg, cfg_value_file(cfg, v), v->line, v->name, "value \"%s\" is above the maximum %lld",
                  v->value, p->max);
        v->failed = 1;
    }
}

static void bad_value(struct cfg *cfg, struct cfg_value *v, const char *what)
{
    cfg_error(cfg, cfg_value_file(cfg, v), v->line, v->name, "bad %s value \"%s\"", what, v->value);
    v->failed = 1;
}

static int table_name_ok(const char *item)
{
    const char *colon = strchr(item, ':');
    if (!colon || colon == item || colon[1] == '\0')
        return 0;
    for (const char *p = item; p < colon; p++)
        if (!isalnum((unsigned char)*p) && *p != '_' && *p != '-')
            return 0;
    return 1;
}

/* Checks the expanded value against the declared type and fills the typed fields. */
void cfg_value_validate(struct cfg *cfg, struct cfg_value *v)
{
    const struct cfg_param *p = v->param;
    if (!p || v->failed)
        return;
    const char *s = v->value;
    switch (p->type) {
    case CFG_STR:
        if (p->choices) {
            const char *const *c;
            for (c = p->choices; *c; c++)
                if (strcasecmp(*c, s) == 0)
                    break;
            v->number = c - p->choices;   /* parsed once: bindings map the index (bind.c) */
            if (!*c) {
                struct buf b = BUF_INIT;
                for (c = p->choices; *c; c++)
                    if (**c)
                        buf_printf(&b, "%s%s", b.len ? ", " : "", *c);
                cfg_error(cfg, cfg_value_file(cfg, v), v->line, v->name,
                          "bad value \"%s\" (expected one of: %s)", s, b.data);
                buf_free(&b);
                v->failed = 1;
            }
        }
        break;
    case CFG_INT:
        if (parse_int(s, &v->number) < 0)
            bad_value(cfg, v, "integer");
        else
            check_range(cfg, v, v->number);
        break;
    case CFG_BOOL:
        if (cfg_parse_bool(s, &v->boolean) < 0)
            bad_value(cfg, v, "boolean");
        break;
    case CFG_TIME:
        if (cfg_parse_time(s, time_default_unit(p), &v->number) < 0)
            bad_value(cfg, v, "time");
        else
            check_range(cfg, v, v->number);
        break;
    case CFG_SIZE:
        if (cfg_parse_size(s, &v->number) < 0)
            bad_value(cfg, v, "size");
        else
            check_range(cfg, v, v->number);
        break;
    case CFG_LIST:
    case CFG_TABLE: {
        char **items;
        size_t n;
        if (split_list(s, &items, &n) < 0) {
            cfg_error(cfg, cfg_value_file(cfg, v), v->line, v->name, "missing '}' in \"%s\"", s);
            v->failed = 1;
        }
        if (p->type == CFG_LIST && list_reads_files(p->name)) {
            char **all = NULL;
            size_t nall = 0, cap = 0;
            for (size_t i = 0; i < n; i++) {
                size_t bangs = strspn(items[i], "!");
                if (items[i][bangs] == '/') {
                    read_list_file(cfg, v, items[i] + bangs, (int)(bangs % 2), &all, &nall, &cap);
                    free(items[i]);
                    if (!all)
                        all = xcalloc(cap = 8, sizeof(*all));
                    continue;
                }
                if (nall + 2 > cap) {
                    cap = cap * 2 + 8;
                    all = xrealloc(all, cap * sizeof(*all));
                }
                all[nall++] = items[i];
            }
            free(items);
            items = all ? all : xcalloc(1, sizeof(*all));
            n = nall;
        }
        if (p->type == CFG_TABLE)
            for (size_t i = 0; i < n; i++)
                if (!table_name_ok(items[i])) {
                    cfg_error(cfg, cfg_value_file(cfg, v), v->line, v->name,
                              "bad lookup table \"%s\" (expected type:name)", items[i]);
                    v->failed = 1;
                }
        if (p->type == CFG_LIST && p->choices) {
            /* Each item must be one of the declared values. */
            for (size_t i = 0; i < n; i++) {
                const char *const *c;
                for (c = p->choices; *c; c++)
                    if (strcasecmp(*c, items[i]) == 0)
                        break;
                if (!*c) {
                    struct buf b = BUF_INIT;
                    for (c = p->choices; *c; c++)
                        buf_printf(&b, "%s%s", b.len ? ", " : "", *c);
                    cfg_error(cfg, cfg_value_file(cfg, v), v->line, v->name,
                              "bad item \"%s\" (expected any of: %s)", items[i], b.data);
                    buf_free(&b);
                    v->failed = 1;
                }
            }
        }
        v->list = pool_list(cfg, items, n);
        break;
    }
    }
}

void cfg_free(struct cfg *cfg)
{
    if (cfg && !cfg->generation)
        petrel_pool_destroy(cfg->pool);
}

/* ---- accessors ---- */

const char *cfg_confdir(const struct cfg *cfg)
{
    return cfg->confdir;
}

const char *cfg_get(const struct cfg *cfg, const char *name)
{
    const struct cfg_value *v = cfg_value_find(cfg, name);
    return v ? (v->value ? v->value : "") : NULL;
}

const char *cfg_get_raw(const struct cfg *cfg, const char *name)
{
    const struct cfg_value *v = cfg_value_find(cfg, name);
    return v ? (v->raw ? v->raw : "") : NULL;
}

long long cfg_int(const struct cfg *cfg, const char *name)
{
    const struct cfg_value *v = cfg_value_find(cfg, name);
    return v ? v->number : 0;
}

int cfg_bool(const struct cfg *cfg, const char *name)
{
    const struct cfg_value *v = cfg_value_find(cfg, name);
    return v ? v->boolean : 0;
}

const char *const *cfg_list(const struct cfg *cfg, const char *name)
{
    static const char *const empty[] = { NULL };
    const struct cfg_value *v = cfg_value_find(cfg, name);
    return v && v->list ? v->list : empty;
}

const char *cfg_owner(const struct cfg *cfg, const char *name)
{
    return cfg_schema_owner(cfg->schema, name);
}

int cfg_is_default(const struct cfg *cfg, const char *name)
{
    const struct cfg_value *v = cfg_value_find(cfg, name);
    return !v || !v->file;
}

void cfg_origin(const struct cfg *cfg, const char *name, const char **file, int *line)
{
    const struct cfg_value *v = cfg_value_find(cfg, name);
    *file = v ? v->file : NULL;
    *line = v ? v->line : 0;
}

size_t cfg_service_count(const struct cfg *cfg)
{
    return cfg->nservices;
}

const struct master_service *cfg_find_service(const struct cfg *cfg, const char *name)
{
    const struct cfg *gen = cfg->generation ? cfg->generation : cfg;
    for (size_t i = 0; i < gen->nservices; i++)
        if (strcmp(gen->services[i].name, name) == 0)
            return &gen->services[i];
    return NULL;
}

const struct master_service *cfg_service(const struct cfg *cfg, size_t i)
{
    return i < cfg->nservices ? &cfg->services[i] : NULL;
}
