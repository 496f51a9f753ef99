/*
 * pgsql: lookup tables in PostgreSQL, configured by Postfix's pgsql_table(5)
 * files unchanged, answered asynchronously (Module API 1.1 lookup_async):
 *
 *   hosts = inet:127.0.0.1:5432 db2.example.com unix:/run/postgresql
 *   user = postfix
 *   password = secret
 *   dbname = mail
 *   query = SELECT goto FROM alias WHERE address = '%s' AND active
 *   result_format = %s      domain = example.com      expansion_limit = 1
 *
 * Expansions as Postfix's (and the sqlite module's): %s the key, %u its
 * local part, %d its domain, %1..%9 the domain's labels from the right,
 * %S %U %D the key's parts in result_format, %%; a key that lacks what the
 * query needs is not found without asking. Every row's non-NULL columns
 * are results, joined with commas; more than expansion_limit is an error.
 *
 * Injection: each expansion in the query is escaped by libpq for the
 * connection that runs it (PQescapeStringConn: the server's encoding and
 * standard_conforming_strings decide what a quote or a backslash needs),
 * in one pass, so a quote, a backslash, a % or SQL in a key is data inside
 * the query's '...' literal. An expansion outside quotes is warned about at
 * open, as Postfix does. A key that is not valid UTF-8 is not looked up.
 *
 * Asynchronous: per open table and per process, up to
 * pgsql_max_connections connections (libpq's PQconnectStart/PQconnectPoll,
 * PQsendQuery, PQconsumeInput, driven by fd watches), one query at a time
 * each, further lookups in a FIFO. hosts are tried in a random order, as
 * Postfix does; a host that failed is left alone for 60 s. Each lookup is
 * bounded by pgsql_timeout from the moment it is asked; a lookup that finds
 * no live host, times out or gets an SQL error fails temporarily (the
 * client hears 451, never "unknown"). The blocking lookup (callers that
 * cannot wait) uses one connection of its own with the same bound
 * (connect_timeout and statement_timeout).
 *
 * Not supported (refused at open, naming the line): the legacy
 * select_field/table/where_field/additional_conditions and select_function
 * (write a query), and tables or files in domain.
 */
#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <libpq-fe.h>

#include <petrel/plugin.h>

#define LINE_MAX_BYTES (64 * 1024)
#define HOST_RETRY_SECONDS 60
#define MAX_HOSTS 16

struct domain_item {
    const char *name;
    int negate;
};

struct pg_host {
    const char *name;        /* as written */
    const char *host, *port; /* libpq's host (a name, an address or a socket directory) and port */
    time_t dead_until;
};

struct request;
struct pg_conn;

struct table {
    petrel_module *module;
    const char *config;           /* the .cf file, for messages */
    const char *query, *result_format;
    long expansion_limit;
    unsigned needs;
    int nparts;                   /* the highest %1..%9 */
    struct domain_item *domains;  /* NULL: every key is eligible */
    size_t ndomains;
    const char *user, *password, *dbname;
    struct pg_host hosts[MAX_HOSTS];
    int nhosts;
    unsigned timeout_ms;
    int max_conns;
    struct pg_conn *conns;
    int nconns;
    struct request *queue_head, *queue_tail;
    PGconn *blocking;             /* the blocking lookup's connection */
    int closing;
};
#define NEEDS_KEY_USER 1
#define NEEDS_KEY_DOMAIN 2
#define NEEDS_VALUE_USER 4
#define NEEDS_VALUE_DOMAIN 8


/* struct table: below the shared helpers' needs (defined before them). */

struct setting {
    const char *name, *value;
    int line;
};

struct config {
    struct setting *items;
    size_t n;
};

static const char *const known_names[] = {
    "hosts", "user", "password", "dbname", "query", "result_format", "domain", "expansion_limit",
    "select_field", "table", "where_field", "additional_conditions", "select_function", NULL,
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
                                  "pgsql:%s, line %d: query >%s< contains >%.2s< without the recommended '' "
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

/* A key part inside the query's '...' literal: escaped by the library for
 * the connection that will run the query (PQescapeStringConn: encoding
 * and standard_conforming_strings aware), never by hand. */
struct escaper {
    PGconn *conn;
    int failed;
};

static void put_quoted(struct buffer *b, const char *s, size_t n, struct escaper *esc)
{
    if (esc == NULL) {
        put(b, s, n);
        return;
    }
    char *to = malloc(2 * n + 1);
    if (to == NULL)
        abort();
    int err = 0;
    size_t len = PQescapeStringConn(esc->conn, to, s, n, &err);
    if (err)
        esc->failed = 1;
    put(b, to, len);
    free(to);
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
static int expand(const struct table *t, const char *format, const char *value, const char *key,
                  struct escaper *quote, struct buffer *out)
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
                                        "pgsql module's domain list (list the domains, or name a file of them)",
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

/* ------------------------------------------------------------------ */
/* hosts                                                               */

static int parse_hosts(struct table *t, const char *list, int line, petrel_pool *pool, const char **error)
{
    char *copy = petrel_pool_strdup(pool, list), *save = NULL;
    for (char *item = strtok_r(copy, ", \t", &save); item; item = strtok_r(NULL, ", \t", &save)) {
        if (t->nhosts == MAX_HOSTS) {
            *error = petrel_pool_printf(pool, "line %d: hosts: more than %d hosts", line, MAX_HOSTS);
            return -1;
        }
        struct pg_host *h = &t->hosts[t->nhosts++];
        h->name = item;
        if (strncmp(item, "unix:", 5) == 0) {
            /* libpq takes the socket's directory as the host */
            h->host = item + 5;
            h->port = NULL;
            continue;
        }
        const char *rest = strncmp(item, "inet:", 5) == 0 ? item + 5 : item;
        char *hp = petrel_pool_strdup(pool, rest);
        char *colon = strrchr(hp, ':');
        if (hp[0] == '[') {
            char *close = strchr(hp, ']');
            if (close == NULL) {
                *error = petrel_pool_printf(pool, "line %d: hosts: bad host \"%s\"", line, item);
                return -1;
            }
            *close = '\0';
            colon = close[1] == ':' ? close + 1 : NULL;
            hp++;
        }
        if (colon)
            *colon = '\0';
        h->host = hp;
        h->port = colon ? colon + 1 : NULL;
        if (*h->host == '\0' || (h->port && *h->port == '\0')) {
            *error = petrel_pool_printf(pool, "line %d: hosts: bad host \"%s\"", line, item);
            return -1;
        }
    }
    if (t->nhosts == 0)
        t->hosts[t->nhosts++] = (struct pg_host){ "localhost", "localhost", NULL, 0 };
    return 0;
}

/* A live host, chosen at random among the live ones (Postfix's order), or
 * -1 when every host failed within the last minute. */
static int pick_host(struct table *t, int avoid)
{
    time_t now = time(NULL);
    int live[MAX_HOSTS], n = 0;
    for (int i = 0; i < t->nhosts; i++)
        if (t->hosts[i].dead_until <= now && i != avoid)
            live[n++] = i;
    if (n == 0)
        return -1;
    return live[n > 1 ? rand() % n : 0];
}

static PGconn *connect_start(struct table *t, int host, int blocking)
{
    char timeout[32];
    snprintf(timeout, sizeof(timeout), "%u", (t->timeout_ms + 999) / 1000);
    char options[64];
    snprintf(options, sizeof(options), "-c statement_timeout=%u", t->timeout_ms);
    const char *keys[] = { "host", "port", "dbname", "user", "password", "connect_timeout", "options",
                           "application_name", NULL };
    const char *values[] = { t->hosts[host].host, t->hosts[host].port, t->dbname, t->user, t->password, timeout,
                             options, "petrel", NULL };
    return blocking ? PQconnectdbParams(keys, values, 0) : PQconnectStartParams(keys, values, 0);
}

/* ------------------------------------------------------------------ */
/* building the query, reading the result                              */

static int eligible(const struct table *t, const char *key);

/* The query for key on conn; NULL when the key is not to be looked up
 * (*skip set) or the escaping failed (*skip clear). */
static char *make_query(const struct table *t, PGconn *conn, const char *key, int *skip)
{
    *skip = 0;
    if (!eligible(t, key)) {
        *skip = 1;
        return NULL;
    }
    struct buffer q = { 0 };
    struct escaper esc = { conn, 0 };
    if (!expand(t, t->query, key, NULL, &esc, &q)) {
        free(q.data);
        *skip = 1;
        return NULL;
    }
    if (esc.failed) {
        petrel_module_log(t->module, PETREL_LOG_WARNING, "pgsql:%s: cannot escape the key \"%.100s\" for the "
                          "server's encoding: lookup error", t->config, key);
        free(q.data);
        return NULL;
    }
    return q.data;
}

/* 1 found (*out malloc'd), 0 not found, -1 error (logged). */
static int read_result(const struct table *t, PGresult *res, const char *key, char **out)
{
    *out = NULL;
    ExecStatusType st = PQresultStatus(res);
    if (st != PGRES_TUPLES_OK) {
        const char *why = PQresultErrorMessage(res);
        petrel_module_log(t->module, PETREL_LOG_WARNING, "pgsql:%s: query failed for \"%.100s\": %.*s", t->config,
                          key, (int)strcspn(why, "\n"), why);
        return -1;
    }
    struct buffer result = { 0 };
    long count = 0;
    for (int row = 0; row < PQntuples(res); row++)
        for (int col = 0; col < PQnfields(res); col++) {
            if (PQgetisnull(res, row, col))
                continue;
            const char *text = PQgetvalue(res, row, col);
            if (*text == '\0') {
                petrel_module_log(t->module, PETREL_LOG_WARNING, "table \"pgsql:%s\": empty lookup result for: "
                                  "\"%.100s\" -- ignored", t->config, key);
                continue;
            }
            if (expand(t, t->result_format, text, key, NULL, &result) && t->expansion_limit > 0 &&
                ++count > t->expansion_limit) {
                petrel_module_log(t->module, PETREL_LOG_WARNING, "pgsql:%s: expansion limit exceeded for key "
                                  "\"%.100s\"", t->config, key);
                free(result.data);
                return -1;
            }
        }
    if (result.len == 0) {
        free(result.data);
        return 0;
    }
    *out = result.data;
    return 1;
}

/* ------------------------------------------------------------------ */
/* the asynchronous client                                             */

struct request {
    struct request *next;
    struct table *t;
    petrel_table_query *q;
    char *key;
    petrel_timer *timer;
    struct pg_conn *conn;
};

enum conn_state { PG_CONNECTING, PG_IDLE, PG_BUSY };

struct pg_conn {
    struct pg_conn *next;
    struct table *t;
    PGconn *pg;
    int host;
    enum conn_state state;
    PostgresPollingStatusType polling;
    petrel_watch *watch;
    int watch_fd, watch_events;
    struct request *req;
    int tried_hosts;
};

static void dispatch(struct table *t);
static void conn_io(int fd, int events, void *arg);

static void conn_watch(struct pg_conn *c, int events)
{
    int fd = PQsocket(c->pg);
    if (c->watch && c->watch_fd == fd && c->watch_events == events)
        return;
    if (c->watch)
        petrel_watch_cancel(c->watch);
    c->watch = fd >= 0 ? petrel_watch_fd(c->t->module, fd, events, conn_io, c) : NULL;
    c->watch_fd = fd;
    c->watch_events = events;
}

static void conn_free(struct pg_conn *c)
{
    struct table *t = c->t;
    for (struct pg_conn **p = &t->conns; *p; p = &(*p)->next)
        if (*p == c) {
            *p = c->next;
            break;
        }
    t->nconns--;
    if (c->watch)
        petrel_watch_cancel(c->watch);
    PQfinish(c->pg);
    free(c);
}

static void request_free(struct request *r)
{
    if (r->timer)
        petrel_timer_cancel(r->timer);
    free(r->key);
    free(r);
}

static void request_done(struct request *r, int status, const char *value)
{
    petrel_table_query *q = r->q;
    request_free(r);
    petrel_table_answer(q, status, value);
}

static void queue_front(struct table *t, struct request *r)
{
    r->next = t->queue_head;
    t->queue_head = r;
    if (t->queue_tail == NULL)
        t->queue_tail = r;
}

/* The connection is unusable: its host is marked dead when it never
 * connected; its request goes back to the queue for another host (once
 * per host), or fails. */
static void conn_failed(struct pg_conn *c, const char *what)
{
    struct table *t = c->t;
    struct request *r = c->req;
    const char *why = PQerrorMessage(c->pg);
    petrel_module_log(t->module, PETREL_LOG_WARNING, "pgsql:%s: %s %s: %.*s", t->config, what,
                      t->hosts[c->host].name, (int)strcspn(why, "\n"), why);
    if (c->state == PG_CONNECTING)
        t->hosts[c->host].dead_until = time(NULL) + HOST_RETRY_SECONDS;
    c->req = NULL;
    conn_free(c);
    if (r) {
        r->conn = NULL;
        if (pick_host(t, -1) >= 0) {
            queue_front(t, r);
        } else {
            petrel_module_log(t->module, PETREL_LOG_WARNING, "pgsql:%s: no database server available", t->config);
            request_done(r, PETREL_TABLE_RETRY, NULL);
        }
    }
    dispatch(t);
}

static void send_query(struct pg_conn *c)
{
    struct request *r = c->req;
    struct table *t = c->t;
    int skip;
    char *query = make_query(t, c->pg, r->key, &skip);
    if (query == NULL) {
        c->req = NULL;
        r->conn = NULL;
        c->state = PG_IDLE;
        request_done(r, skip ? PETREL_TABLE_NOTFOUND : PETREL_TABLE_RETRY, NULL);
        dispatch(t);
        return;
    }
    int ok = PQsendQuery(c->pg, query);
    free(query);
    if (!ok) {
        conn_failed(c, "query on");
        return;
    }
    c->state = PG_BUSY;
    conn_watch(c, PQflush(c->pg) == 1 ? PETREL_WATCH_READ | PETREL_WATCH_WRITE : PETREL_WATCH_READ);
}

static void conn_io(int fd, int events, void *arg)
{
    (void)fd;
    struct pg_conn *c = arg;
    struct table *t = c->t;
    if (c->state == PG_CONNECTING) {
        c->polling = PQconnectPoll(c->pg);
        switch (c->polling) {
        case PGRES_POLLING_FAILED:
            conn_failed(c, "connect to");
            return;
        case PGRES_POLLING_READING:
            conn_watch(c, PETREL_WATCH_READ);
            return;
        case PGRES_POLLING_WRITING:
            conn_watch(c, PETREL_WATCH_WRITE);
            return;
        default:
            break;
        }
        PQsetnonblocking(c->pg, 1);
        c->state = PG_IDLE;
        conn_watch(c, PETREL_WATCH_READ);
        if (c->req)
            send_query(c);
        else
            dispatch(t);
        return;
    }
    if (c->state == PG_IDLE) {
        /* Nothing asked: the server closed the connection, or a notice. */
        if (!PQconsumeInput(c->pg) || PQstatus(c->pg) != CONNECTION_OK)
            conn_free(c);
        return;
    }
    if ((events & PETREL_WATCH_WRITE) && PQflush(c->pg) == 0)
        conn_watch(c, PETREL_WATCH_READ);
    if (!(events & PETREL_WATCH_READ))
        return;
    if (!PQconsumeInput(c->pg)) {
        conn_failed(c, "read from");
        return;
    }
    if (PQisBusy(c->pg))
        return;
    struct request *r = c->req;
    char *value = NULL;
    int status = 0, have = 0;
    PGresult *res;
    while ((res = PQgetResult(c->pg)) != NULL) {
        if (!have) {
            status = read_result(t, res, r->key, &value);
            have = 1;
        }
        PQclear(res);
    }
    c->req = NULL;
    r->conn = NULL;
    c->state = PG_IDLE;
    /* Before answering: the answer may start the next lookup, which must
     * not be handed to a connection that is going away. */
    if (PQstatus(c->pg) != CONNECTION_OK)
        conn_free(c);
    request_done(r, status > 0 ? PETREL_TABLE_FOUND : status == 0 ? PETREL_TABLE_NOTFOUND : PETREL_TABLE_RETRY,
                 value);
    free(value);
    dispatch(t);
}

static struct pg_conn *conn_open(struct table *t)
{
    int host = pick_host(t, -1);
    if (host < 0)
        return NULL;
    struct pg_conn *c = calloc(1, sizeof(*c));
    if (c == NULL)
        return NULL;
    c->t = t;
    c->host = host;
    c->state = PG_CONNECTING;
    c->pg = connect_start(t, host, 0);
    c->watch_fd = -1;
    c->next = t->conns;
    t->conns = c;
    t->nconns++;
    if (c->pg == NULL || PQstatus(c->pg) == CONNECTION_BAD) {
        /* Reported from the loop: never answer inside lookup_async. */
        c->polling = PGRES_POLLING_FAILED;
    }
    conn_watch(c, PETREL_WATCH_WRITE);
    if (c->watch == NULL) {
        t->hosts[host].dead_until = time(NULL) + HOST_RETRY_SECONDS;
        petrel_module_log(t->module, PETREL_LOG_WARNING, "pgsql:%s: connect to %s: %s", t->config,
                          t->hosts[host].name, c->pg ? PQerrorMessage(c->pg) : "out of memory");
        conn_free(c);
        return NULL;
    }
    return c;
}

static void dispatch(struct table *t)
{
    while (t->queue_head) {
        struct pg_conn *idle = NULL;
        for (struct pg_conn *c = t->conns; c; c = c->next)
            if (c->state == PG_IDLE && c->req == NULL) {
                idle = c;
                break;
            }
        if (idle == NULL) {
            int connecting_free = 0;
            for (struct pg_conn *c = t->conns; c; c = c->next)
                connecting_free |= c->state == PG_CONNECTING && c->req == NULL;
            if (connecting_free || t->nconns >= t->max_conns)
                return;   /* a connection that becomes free takes the next */
            idle = conn_open(t);
            if (idle == NULL) {
                if (pick_host(t, -1) >= 0)
                    continue;
                struct request *r = t->queue_head;
                t->queue_head = r->next;
                if (t->queue_head == NULL)
                    t->queue_tail = NULL;
                petrel_module_log(t->module, PETREL_LOG_WARNING, "pgsql:%s: no database server available",
                                  t->config);
                request_done(r, PETREL_TABLE_RETRY, NULL);
                continue;
            }
        }
        struct request *r = t->queue_head;
        t->queue_head = r->next;
        if (t->queue_head == NULL)
            t->queue_tail = NULL;
        r->next = NULL;
        idle->req = r;
        r->conn = idle;
        if (idle->state == PG_IDLE)
            send_query(idle);
    }
}

static void request_timed_out(void *arg)
{
    struct request *r = arg;
    struct table *t = r->t;
    r->timer = NULL;
    if (r->conn) {
        r->conn->req = NULL;
        conn_free(r->conn);   /* a query under way: its answer would come for nobody */
    } else {
        struct request **p = &t->queue_head, *prev = NULL;
        while (*p && *p != r) {
            prev = *p;
            p = &(*p)->next;
        }
        if (*p) {
            *p = r->next;
            if (t->queue_tail == r)
                t->queue_tail = prev;
        }
    }
    petrel_module_log(t->module, PETREL_LOG_WARNING, "pgsql:%s: no answer within %us for \"%.100s\"", t->config,
                      (t->timeout_ms + 999) / 1000, r->key);
    request_done(r, PETREL_TABLE_RETRY, NULL);
    dispatch(t);
}

static int valid_utf8(const char *s);

static int eligible(const struct table *t, const char *key)
{
    return valid_utf8(key) && domain_eligible(t, key);
}

static void pgsql_lookup_async(void *handle, petrel_table_query *q, const char *key)
{
    struct table *t = handle;
    if (!eligible(t, key)) {
        petrel_table_answer(q, PETREL_TABLE_NOTFOUND, NULL);
        return;
    }
    struct request *r = calloc(1, sizeof(*r));
    if (r == NULL || (r->key = strdup(key)) == NULL) {
        free(r);
        petrel_table_answer(q, PETREL_TABLE_RETRY, NULL);
        return;
    }
    r->t = t;
    r->q = q;
    r->timer = petrel_timer_start(t->module, t->timeout_ms, request_timed_out, r);
    if (t->queue_tail)
        t->queue_tail->next = r;
    else
        t->queue_head = r;
    t->queue_tail = r;
    dispatch(t);
}

/* ------------------------------------------------------------------ */
/* the blocking lookup                                                 */

static int pgsql_lookup(void *handle, const char *key, const char **value, petrel_pool *scratch)
{
    struct table *t = handle;
    if (!eligible(t, key))
        return 0;
    for (int attempt = 0; attempt < t->nhosts + 1; attempt++) {
        if (t->blocking && PQstatus(t->blocking) != CONNECTION_OK) {
            PQfinish(t->blocking);
            t->blocking = NULL;
        }
        if (t->blocking == NULL) {
            int host = pick_host(t, -1);
            if (host < 0)
                break;
            t->blocking = connect_start(t, host, 1);
            if (t->blocking == NULL || PQstatus(t->blocking) != CONNECTION_OK) {
                const char *why = t->blocking ? PQerrorMessage(t->blocking) : "out of memory";
                petrel_module_log(t->module, PETREL_LOG_WARNING, "pgsql:%s: connect to %s: %.*s", t->config,
                                  t->hosts[host].name, (int)strcspn(why, "\n"), why);
                t->hosts[host].dead_until = time(NULL) + HOST_RETRY_SECONDS;
                PQfinish(t->blocking);
                t->blocking = NULL;
                continue;
            }
        }
        int skip;
        char *query = make_query(t, t->blocking, key, &skip);
        if (query == NULL)
            return skip ? 0 : -1;
        PGresult *res = PQexec(t->blocking, query);
        free(query);
        if (res == NULL || PQstatus(t->blocking) != CONNECTION_OK) {
            PQclear(res);
            continue;   /* the connection broke: reconnect (another host, maybe) */
        }
        char *out = NULL;
        int status = read_result(t, res, key, &out);
        PQclear(res);
        if (status > 0)
            *value = petrel_pool_strdup(scratch, out);
        free(out);
        return status;
    }
    petrel_module_log(t->module, PETREL_LOG_WARNING, "pgsql:%s: no database server available", t->config);
    return -1;
}

/* ------------------------------------------------------------------ */
/* open, close, the module                                             */

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

static void table_close(void *handle)
{
    struct table *t = handle;
    while (t->conns) {
        struct pg_conn *c = t->conns;
        c->req = NULL;
        conn_free(c);
    }
    while (t->queue_head) {
        struct request *r = t->queue_head;
        t->queue_head = r->next;
        request_free(r);   /* the core made its handle stale already */
    }
    t->queue_tail = NULL;
    if (t->blocking)
        PQfinish(t->blocking);
    t->blocking = NULL;
}

static void *table_open(petrel_module *m, const char *name, petrel_pool *pool, const char **error)
{
    if (name[0] != '/' && name[0] != '.') {
        *error = petrel_pool_printf(pool, "parameters in main.cf (%s_query, ...) are not supported: name a "
                                    "pgsql_table(5) configuration file by its path", name);
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
            petrel_module_log(m, PETREL_LOG_WARNING, "pgsql:%s, line %d: unknown parameter \"%s\" is ignored", name,
                              c.items[i].line, c.items[i].name);
    }
    static const char *const legacy[] = { "select_field", "table", "where_field", "additional_conditions",
                                          "select_function", NULL };
    for (const char *const *k = legacy; *k; k++)
        if (setting(&c, *k)) {
            *error = petrel_pool_printf(pool, "line %d: %s: the legacy query parameters are not supported by "
                                        "Petrel: write the query with query =", line_of(&c, *k), *k);
            goto out;
        }
    t->query = get(&c, "query", NULL);
    int qline = line_of(&c, "query");
    if (t->query == NULL) {
        *error = petrel_pool_printf(pool, "no query");
        goto out;
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
    if (parse_hosts(t, get(&c, "hosts", ""), line_of(&c, "hosts"), pool, error) != 0)
        goto out;
    t->user = get(&c, "user", NULL);
    t->password = get(&c, "password", NULL);
    t->dbname = get(&c, "dbname", NULL);
    if (t->dbname == NULL || *t->dbname == '\0') {
        *error = petrel_pool_printf(pool, "dbname is not set");
        goto out;
    }
    long long timeout = petrel_param_int(m, "pgsql_timeout");
    t->timeout_ms = (unsigned)(timeout > 0 ? timeout * 1000 : 30000);
    t->max_conns = (int)petrel_param_int(m, "pgsql_max_connections");
    if (t->max_conns < 1)
        t->max_conns = 1;
    warn_unquoted(t, qline);
    result = t;
out:
    free(c.items);
    return result;
}

static int table_pattern(void *handle)
{
    const struct table *t = handle;
    return (t->needs & (NEEDS_KEY_USER | NEEDS_KEY_DOMAIN)) != 0;
}

static const petrel_param params[] = {
    { PETREL_PARAM_INIT, .name = "pgsql_timeout", .type = PETREL_PARAM_TIME, .default_value = "30s",
      .help = "how long one lookup may take (connection included) before it fails temporarily",
      .min = 1, .max = 3000 },
    { PETREL_PARAM_INIT, .name = "pgsql_max_connections", .type = PETREL_PARAM_INT, .default_value = "4",
      .help = "connections per table in each process; more lookups wait for one", .min = 1, .max = 100 },
    { .name = NULL },
};

static const petrel_table_type table_types[] = {
    { PETREL_TABLE_TYPE_INIT, .name = "pgsql", .open = table_open, .lookup = pgsql_lookup, .close = table_close,
      .handle_pattern = table_pattern, .lookup_async = pgsql_lookup_async },
    { .name = NULL },
};

const petrel_module_desc petrel_module_descriptor = {
    PETREL_MODULE_INIT,
    .name = "pgsql",
    .version = "1.0",
    .description = "pgsql: lookup tables (Postfix's pgsql_table(5) configuration files), asynchronous",
    .params = params,
    .table_types = table_types,
    /* pgsql_timeout answers first; the core's guard only catches a lost lookup. */
    .hook_timeout_ms = 3600 * 1000,
};
