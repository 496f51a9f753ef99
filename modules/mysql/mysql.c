/*
 * mysql: lookup tables in MySQL or MariaDB, configured by Postfix's
 * mysql_table(5) files unchanged, answered asynchronously (Module API 1.1
 * lookup_async) with MariaDB Connector/C's non-blocking API:
 *
 *   hosts = inet:127.0.0.1:3306 unix:/run/mysqld/mysqld.sock db2.example.com
 *   user = postfix
 *   password = secret
 *   dbname = mail
 *   query = SELECT goto FROM alias WHERE address = '%s' AND active = 1
 *   result_format = %s      domain = example.com      expansion_limit = 1
 *
 * Expansions, results, domain and expansion_limit as the pgsql and sqlite
 * modules (Postfix's db_common).
 *
 * Injection: each expansion in the query is escaped by the client library
 * for the connection that runs it (mysql_real_escape_string: the
 * connection's character set decides what a quote, a backslash or a NUL
 * needs), in one pass, so a quote, a backslash, a % or SQL in a key is data
 * inside the query's '...' literal. An expansion outside quotes is warned
 * about at open, as Postfix does. A key that is not valid UTF-8 is not
 * looked up. Connections use utf8mb4.
 *
 * Asynchronous: per open table and per process, up to
 * mysql_max_connections connections, each driven through
 * mysql_real_connect_start/_cont, mysql_real_query_start/_cont and
 * mysql_store_result_start/_cont from fd watches, one query at a time,
 * further lookups in a FIFO. hosts are tried in a random order, as Postfix
 * does; a host that failed is left alone for 60 s. Each lookup is bounded
 * by mysql_timeout from the moment it is asked; no live host, a timeout or
 * an SQL error fails the lookup temporarily (451, never "unknown"). The
 * blocking lookup (callers that cannot wait) uses a connection of its own
 * with the connect, read and write timeouts set to the same bound.
 *
 * Not supported (refused at open, naming the line): the legacy
 * select_field/table/where_field/additional_conditions (write a query),
 * option_file/option_group, tls_* settings, and tables or files in domain.
 */
#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <sys/socket.h>

#include <mysql.h>

#include <petrel/plugin.h>

#define LINE_MAX_BYTES (64 * 1024)
#define HOST_RETRY_SECONDS 60
#define MAX_HOSTS 16

struct domain_item {
    const char *name;
    int negate;
};

struct my_host {
    const char *name;          /* as written */
    const char *host;          /* NULL with a socket */
    unsigned port;
    const char *socket;        /* unix:/path */
    time_t dead_until;
};

struct request;
struct my_conn;

struct table {
    petrel_module *module;
    const char *config;
    const char *query, *result_format;
    long expansion_limit;
    unsigned needs;
    int nparts;
    struct domain_item *domains;
    size_t ndomains;
    const char *user, *password, *dbname;
    struct my_host hosts[MAX_HOSTS];
    int nhosts;
    unsigned timeout_ms;
    int max_conns;
    struct my_conn *conns;
    int nconns;
    struct request *queue_head, *queue_tail;
    MYSQL *blocking;
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
                                  "mysql:%s, line %d: query >%s< contains >%.2s< without the recommended '' "
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
 * the connection that will run the query (mysql_real_escape_string: the
 * connection's character set decides), never by hand. */
struct escaper {
    MYSQL *conn;
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
    unsigned long len = mysql_real_escape_string(esc->conn, to, s, (unsigned long)n);
    if (len == (unsigned long)-1)
        esc->failed = 1;
    else
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
                                        "mysql module's domain list (list the domains, or name a file of them)",
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
        struct my_host *h = &t->hosts[t->nhosts++];
        memset(h, 0, sizeof(*h));
        h->name = item;
        if (strncmp(item, "unix:", 5) == 0) {
            h->socket = item + 5;
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
        char *end = NULL;
        long port = colon ? strtol(colon + 1, &end, 10) : 3306;
        if (*h->host == '\0' || (colon && (*end != '\0' || port < 1 || port > 65535))) {
            *error = petrel_pool_printf(pool, "line %d: hosts: bad host \"%s\"", line, item);
            return -1;
        }
        h->port = (unsigned)port;
    }
    if (t->nhosts == 0)
        t->hosts[t->nhosts++] = (struct my_host){ "localhost", "localhost", 3306, NULL, 0 };
    return 0;
}

static int pick_host(struct table *t)
{
    time_t now = time(NULL);
    int live[MAX_HOSTS], n = 0;
    for (int i = 0; i < t->nhosts; i++)
        if (t->hosts[i].dead_until <= now)
            live[n++] = i;
    if (n == 0)
        return -1;
    return live[n > 1 ? rand() % n : 0];
}

static MYSQL *client_new(struct table *t, int nonblocking)
{
    MYSQL *m = mysql_init(NULL);
    if (m == NULL)
        return NULL;
    unsigned timeout = (t->timeout_ms + 999) / 1000;
    mysql_options(m, MYSQL_OPT_CONNECT_TIMEOUT, &timeout);
    mysql_options(m, MYSQL_OPT_READ_TIMEOUT, &timeout);
    mysql_options(m, MYSQL_OPT_WRITE_TIMEOUT, &timeout);
    mysql_options(m, MYSQL_SET_CHARSET_NAME, "utf8mb4");
    if (nonblocking)
        mysql_options(m, MYSQL_OPT_NONBLOCK, 0);
    return m;
}

/* ------------------------------------------------------------------ */
/* building the query, reading the result                              */

static int eligible(const struct table *t, const char *key);

static char *make_query(const struct table *t, MYSQL *conn, const char *key, int *skip)
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
        petrel_module_log(t->module, PETREL_LOG_WARNING, "mysql:%s: cannot escape the key \"%.100s\": lookup "
                          "error", t->config, key);
        free(q.data);
        return NULL;
    }
    return q.data;
}

/* 1 found (*out malloc'd), 0 not found, -1 error (logged). */
static int read_result(const struct table *t, MYSQL_RES *res, const char *key, char **out)
{
    *out = NULL;
    struct buffer result = { 0 };
    long count = 0;
    unsigned fields = mysql_num_fields(res);
    MYSQL_ROW row;
    while ((row = mysql_fetch_row(res)) != NULL)
        for (unsigned col = 0; col < fields; col++) {
            if (row[col] == NULL)
                continue;
            if (*row[col] == '\0') {
                petrel_module_log(t->module, PETREL_LOG_WARNING, "table \"mysql:%s\": empty lookup result for: "
                                  "\"%.100s\" -- ignored", t->config, key);
                continue;
            }
            if (expand(t, t->result_format, row[col], key, NULL, &result) && t->expansion_limit > 0 &&
                ++count > t->expansion_limit) {
                petrel_module_log(t->module, PETREL_LOG_WARNING, "mysql:%s: expansion limit exceeded for key "
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
    struct my_conn *conn;
};

enum my_op { OP_CONNECT, OP_IDLE, OP_QUERY, OP_STORE };

struct my_conn {
    struct my_conn *next;
    struct table *t;
    MYSQL *my;
    int host;
    enum my_op op;
    int wait;                  /* MYSQL_WAIT_* the library asked for */
    petrel_watch *watch;
    struct request *req;
    petrel_timer *start_timer; /* the first step runs from the loop */
};

static void dispatch(struct table *t);
static void conn_io(int fd, int events, void *arg);

static void conn_watch(struct my_conn *c)
{
    if (c->watch)
        petrel_watch_cancel(c->watch);
    c->watch = NULL;
    int events = (c->wait & MYSQL_WAIT_READ ? PETREL_WATCH_READ : 0) |
                 (c->wait & MYSQL_WAIT_WRITE ? PETREL_WATCH_WRITE : 0);
    if (c->op == OP_IDLE)
        events = PETREL_WATCH_READ;
    if (events == 0)
        events = PETREL_WATCH_READ;   /* EXCEPT or TIMEOUT only: the request's own timer bounds it */
    int fd = (int)mysql_get_socket(c->my);
    if (fd >= 0)
        c->watch = petrel_watch_fd(c->t->module, fd, events, conn_io, c);
}

static void conn_free(struct my_conn *c)
{
    struct table *t = c->t;
    for (struct my_conn **p = &t->conns; *p; p = &(*p)->next)
        if (*p == c) {
            *p = c->next;
            break;
        }
    t->nconns--;
    if (c->watch)
        petrel_watch_cancel(c->watch);
    if (c->start_timer)
        petrel_timer_cancel(c->start_timer);
    /* No goodbye (COM_QUIT) on a connection that may be mid-exchange:
     * closing the socket is enough for the server. */
    if (c->my) {
        int fd = (int)mysql_get_socket(c->my);
        if (fd >= 0)
            shutdown(fd, SHUT_RDWR);
        mysql_close(c->my);
    }
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

static void conn_failed(struct my_conn *c, const char *what)
{
    struct table *t = c->t;
    struct request *r = c->req;
    petrel_module_log(t->module, PETREL_LOG_WARNING, "mysql:%s: %s %s: %s", t->config, what, t->hosts[c->host].name,
                      mysql_error(c->my));
    if (c->op == OP_CONNECT)
        t->hosts[c->host].dead_until = time(NULL) + HOST_RETRY_SECONDS;
    c->req = NULL;
    conn_free(c);
    if (r) {
        r->conn = NULL;
        if (pick_host(t) >= 0) {
            r->next = t->queue_head;
            t->queue_head = r;
            if (t->queue_tail == NULL)
                t->queue_tail = r;
        } else {
            petrel_module_log(t->module, PETREL_LOG_WARNING, "mysql:%s: no database server available", t->config);
            request_done(r, PETREL_TABLE_RETRY, NULL);
        }
    }
    dispatch(t);
}

/* Runs the current operation one step (status: the events that happened,
 * 0 to start it). */
static void conn_step(struct my_conn *c, int status);

static void query_finished(struct my_conn *c, MYSQL_RES *res)
{
    struct table *t = c->t;
    struct request *r = c->req;
    char *value = NULL;
    int st = read_result(t, res, r->key, &value);
    mysql_free_result(res);
    c->req = NULL;
    r->conn = NULL;
    c->op = OP_IDLE;
    c->wait = 0;
    conn_watch(c);
    request_done(r, st > 0 ? PETREL_TABLE_FOUND : st == 0 ? PETREL_TABLE_NOTFOUND : PETREL_TABLE_RETRY, value);
    free(value);
    dispatch(t);
}

static void conn_step(struct my_conn *c, int status)
{
    struct table *t = c->t;
    for (;;) {
        if (c->op == OP_CONNECT) {
            MYSQL *ret = NULL;
            const struct my_host *h = &t->hosts[c->host];
            c->wait = status == 0 ? mysql_real_connect_start(&ret, c->my, h->host, t->user, t->password, t->dbname,
                                                             h->socket ? 0 : h->port, h->socket, 0)
                                  : mysql_real_connect_cont(&ret, c->my, status);
            if (c->wait) {
                conn_watch(c);
                return;
            }
            if (ret == NULL) {
                conn_failed(c, "connect to");
                return;
            }
            c->op = OP_IDLE;
            status = 0;
            if (c->req == NULL) {
                conn_watch(c);
                dispatch(t);
                return;
            }
        }
        if (c->op == OP_IDLE) {
            if (c->req == NULL)
                return;
            int skip;
            char *query = make_query(t, c->my, c->req->key, &skip);
            if (query == NULL) {
                struct request *r = c->req;
                c->req = NULL;
                r->conn = NULL;
                request_done(r, skip ? PETREL_TABLE_NOTFOUND : PETREL_TABLE_RETRY, NULL);
                dispatch(t);
                return;
            }
            int err = 0;
            c->op = OP_QUERY;
            c->wait = mysql_real_query_start(&err, c->my, query, (unsigned long)strlen(query));
            free(query);
            if (c->wait) {
                conn_watch(c);
                return;
            }
            if (err) {
                conn_failed(c, "query on");
                return;
            }
            c->op = OP_STORE;
            status = 0;
            continue;
        }
        if (c->op == OP_QUERY) {
            int err = 0;
            c->wait = mysql_real_query_cont(&err, c->my, status);
            if (c->wait) {
                conn_watch(c);
                return;
            }
            if (err) {
                conn_failed(c, "query on");
                return;
            }
            c->op = OP_STORE;
            status = 0;
            continue;
        }
        if (c->op == OP_STORE) {
            MYSQL_RES *res = NULL;
            c->wait = status == 0 ? mysql_store_result_start(&res, c->my) : mysql_store_result_cont(&res, c->my,
                                                                                                     status);
            if (c->wait) {
                conn_watch(c);
                return;
            }
            if (res == NULL) {
                if (mysql_errno(c->my)) {
                    conn_failed(c, "query on");
                    return;
                }
                petrel_module_log(t->module, PETREL_LOG_WARNING, "mysql:%s: the query returned no result set",
                                  t->config);
                struct request *r = c->req;
                c->req = NULL;
                r->conn = NULL;
                c->op = OP_IDLE;
                conn_watch(c);
                request_done(r, PETREL_TABLE_RETRY, NULL);
                dispatch(t);
                return;
            }
            query_finished(c, res);
            return;
        }
        return;
    }
}

static void conn_io(int fd, int events, void *arg)
{
    (void)fd;
    struct my_conn *c = arg;
    if (c->op == OP_IDLE) {
        /* Nothing asked: the server closed the connection. */
        conn_free(c);
        return;
    }
    int status = (events & PETREL_WATCH_READ ? MYSQL_WAIT_READ : 0) | (events & PETREL_WATCH_WRITE ? MYSQL_WAIT_WRITE : 0);
    conn_step(c, status);
}

static void conn_begin(void *arg)
{
    struct my_conn *c = arg;
    c->start_timer = NULL;
    conn_step(c, 0);
}

static struct my_conn *conn_open(struct table *t)
{
    int host = pick_host(t);
    if (host < 0)
        return NULL;
    struct my_conn *c = calloc(1, sizeof(*c));
    if (c == NULL)
        return NULL;
    c->t = t;
    c->host = host;
    c->op = OP_CONNECT;
    c->my = client_new(t, 1);
    c->next = t->conns;
    t->conns = c;
    t->nconns++;
    if (c->my == NULL) {
        conn_free(c);
        return NULL;
    }
    /* The connect starts from the loop: a refusal known at once must not
     * answer a lookup inside lookup_async. */
    c->start_timer = petrel_timer_start(t->module, 0, conn_begin, c);
    return c;
}

static void dispatch(struct table *t)
{
    while (t->queue_head) {
        struct my_conn *idle = NULL;
        for (struct my_conn *c = t->conns; c; c = c->next)
            if (c->op == OP_IDLE && c->req == NULL) {
                idle = c;
                break;
            }
        if (idle == NULL) {
            for (struct my_conn *c = t->conns; c; c = c->next)
                if (c->op == OP_CONNECT && c->req == NULL) {
                    idle = c;   /* it takes the request when it is up */
                    break;
                }
        }
        if (idle == NULL) {
            if (t->nconns >= t->max_conns)
                return;
            idle = conn_open(t);
            if (idle == NULL) {
                struct request *r = t->queue_head;
                t->queue_head = r->next;
                if (t->queue_head == NULL)
                    t->queue_tail = NULL;
                petrel_module_log(t->module, PETREL_LOG_WARNING, "mysql:%s: no database server available",
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
        if (idle->op == OP_IDLE)
            conn_step(idle, 0);
    }
}

static void request_timed_out(void *arg)
{
    struct request *r = arg;
    struct table *t = r->t;
    r->timer = NULL;
    if (r->conn) {
        r->conn->req = NULL;
        conn_free(r->conn);
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
    petrel_module_log(t->module, PETREL_LOG_WARNING, "mysql:%s: no answer within %us for \"%.100s\"", t->config,
                      (t->timeout_ms + 999) / 1000, r->key);
    request_done(r, PETREL_TABLE_RETRY, NULL);
    dispatch(t);
}

static int valid_utf8(const char *s);

static int eligible(const struct table *t, const char *key)
{
    return valid_utf8(key) && domain_eligible(t, key);
}

static void mysql_lookup_async(void *handle, petrel_table_query *q, const char *key)
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

static int mysql_lookup(void *handle, const char *key, const char **value, petrel_pool *scratch)
{
    struct table *t = handle;
    if (!eligible(t, key))
        return 0;
    for (int attempt = 0; attempt < t->nhosts + 1; attempt++) {
        if (t->blocking == NULL) {
            int host = pick_host(t);
            if (host < 0)
                break;
            const struct my_host *h = &t->hosts[host];
            t->blocking = client_new(t, 0);
            if (t->blocking == NULL)
                break;
            if (mysql_real_connect(t->blocking, h->host, t->user, t->password, t->dbname, h->socket ? 0 : h->port,
                                   h->socket, 0) == NULL) {
                petrel_module_log(t->module, PETREL_LOG_WARNING, "mysql:%s: connect to %s: %s", t->config, h->name,
                                  mysql_error(t->blocking));
                t->hosts[host].dead_until = time(NULL) + HOST_RETRY_SECONDS;
                mysql_close(t->blocking);
                t->blocking = NULL;
                continue;
            }
        }
        int skip;
        char *query = make_query(t, t->blocking, key, &skip);
        if (query == NULL)
            return skip ? 0 : -1;
        int err = mysql_real_query(t->blocking, query, (unsigned long)strlen(query));
        free(query);
        MYSQL_RES *res = err ? NULL : mysql_store_result(t->blocking);
        if (res == NULL) {
            petrel_module_log(t->module, PETREL_LOG_WARNING, "mysql:%s: query failed: %s", t->config,
                              mysql_error(t->blocking));
            mysql_close(t->blocking);
            t->blocking = NULL;
            continue;
        }
        char *out = NULL;
        int status = read_result(t, res, key, &out);
        mysql_free_result(res);
        if (status > 0)
            *value = petrel_pool_strdup(scratch, out);
        free(out);
        return status;
    }
    petrel_module_log(t->module, PETREL_LOG_WARNING, "mysql:%s: no database server available", t->config);
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
        struct my_conn *c = t->conns;
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
        mysql_close(t->blocking);
    t->blocking = NULL;
}

static void *table_open(petrel_module *m, const char *name, petrel_pool *pool, const char **error)
{
    if (name[0] != '/' && name[0] != '.') {
        *error = petrel_pool_printf(pool, "parameters in main.cf (%s_query, ...) are not supported: name a "
                                    "mysql_table(5) configuration file by its path", name);
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
            petrel_module_log(m, PETREL_LOG_WARNING, "mysql:%s, line %d: unknown parameter \"%s\" is ignored", name,
                              c.items[i].line, c.items[i].name);
    }
    static const char *const legacy[] = { "select_field", "table", "where_field", "additional_conditions",
                                          "option_file", "option_group", "tls_cert_file", "tls_key_file",
                                          "tls_CAfile", "tls_CApath", "tls_verify_cert", "tls_ciphers", NULL };
    for (const char *const *k = legacy; *k; k++)
        if (setting(&c, *k)) {
            *error = petrel_pool_printf(pool, "line %d: %s: not supported by Petrel's mysql module (write the "
                                        "query with query =; no option files, no TLS yet)", line_of(&c, *k), *k);
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
    long long timeout = petrel_param_int(m, "mysql_timeout");
    t->timeout_ms = (unsigned)(timeout > 0 ? timeout * 1000 : 30000);
    t->max_conns = (int)petrel_param_int(m, "mysql_max_connections");
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

static void my_fini(petrel_module *m)
{
    (void)m;
    mysql_thread_end();
}

static const petrel_param params[] = {
    { PETREL_PARAM_INIT, .name = "mysql_timeout", .type = PETREL_PARAM_TIME, .default_value = "30s",
      .help = "how long one lookup may take (connection included) before it fails temporarily",
      .min = 1, .max = 3000 },
    { PETREL_PARAM_INIT, .name = "mysql_max_connections", .type = PETREL_PARAM_INT, .default_value = "4",
      .help = "connections per table in each process; more lookups wait for one", .min = 1, .max = 100 },
    { .name = NULL },
};

static const petrel_table_type table_types[] = {
    { PETREL_TABLE_TYPE_INIT, .name = "mysql", .open = table_open, .lookup = mysql_lookup, .close = table_close,
      .handle_pattern = table_pattern, .lookup_async = mysql_lookup_async },
    { .name = NULL },
};

const petrel_module_desc petrel_module_descriptor = {
    PETREL_MODULE_INIT,
    .name = "mysql",
    .version = "1.0",
    .description = "mysql: lookup tables (Postfix's mysql_table(5) configuration files), asynchronous",
    .params = params,
    .table_types = table_types,
    .fini = my_fini,
    /* mysql_timeout answers first; the core's guard only catches a lost lookup. */
    .hook_timeout_ms = 3600 * 1000,
};
