/*
 * scan-drive: a test driver for the content-scanning protocol layers
 * (modules/milter, and the spamd and clamd clients). It runs one state
 * machine with poll(2) standing in for the event loop, feeds it a message
 * from a file, and prints what the peer decided, one line per event, so the
 * integration tests can run real milters, spamd and clamd against exactly
 * the code the modules will use.
 *
 *   scan-drive milter [options] ENDPOINT MESSAGE-FILE
 *   scan-drive spamd [--command CHECK|SYMBOLS|REPORT|PROCESS|HEADERS|PING]
 *       [--user U] [--max-size N] [--timeout MS] [--body-out FILE] ADDRESS MESSAGE-FILE
 *   scan-drive clamd [--command INSTREAM|PING|VERSION] [--max-size N] [--chunk N]
 *       [--unknown-size] [--timeout MS] ADDRESS MESSAGE-FILE
 *
 * spamd and clamd get the file's bytes as they are (read in pieces, as
 * the modules will read the stored message) and print one "result:" line.
 *
 * The message file is read as a whole (it is a test), headers are split
 * as an MTA does (name, then the text after the colon with CRLF between
 * folded lines), LF line ends become CRLF. Output lines:
 *   open: ok version=6 actions=0x1ff steps=0x1f0010
 *   macros STAGE: names...              (the lists in force after SETSYMLIST)
 *   connect: continue
 *   rcpt <b@example.org>: reject 550 5.7.1 Command rejected
 *   edit: add_header X-Foo= bar          (name, '=', the exact text after the colon)
 *   edit: body_chunk 12 first
 *   eom: accept quarantine=reason
 *   log: warning milter ...: text
 * A verdict with "failed" comes from milter_default_action. With
 * --write-message FILE, the header and body edits are applied and the
 * resulting message written to FILE (to hand a signed message on to a
 * verifier, for instance).
 */
#include <errno.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "milter_conn.h"
#include "spamd_client.h"
#include "clamd_client.h"

static void die(const char *fmt, ...) __attribute__((noreturn, format(printf, 1, 2)));
static void die(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "scan-drive: ");
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\n");
    va_end(ap);
    exit(2);
}

static void *xmalloc(size_t n)
{
    void *p = malloc(n ? n : 1);
    if (p == NULL)
        die("out of memory");
    return p;
}

static char *xstrdup(const char *s)
{
    size_t n = strlen(s) + 1;
    return memcpy(xmalloc(n), s, n);
}

static long long now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* ------------------------------------------------------------------ */
/* the stand-in event loop: one fd, one timer                          */

typedef struct loop {
    int fd;
    int events;
    long long deadline;   /* -1: no timer */
    int done;
} loop;

static void loop_watch(loop *l, int fd, int events)
{
    l->fd = events ? fd : -1;
    l->events = events;
}

static void loop_timer(loop *l, unsigned ms)
{
    l->deadline = ms ? now_ms() + ms : -1;
}

/* Runs until done is set, or, with idle_ms >= 0, for that long as an idle
 * event loop does between two SMTP commands; io(arg, events) and
 * timeout(arg) are the state machine's entry points. */
static void loop_turns(loop *l, long long idle_ms, void (*io)(void *, int), void (*timeout)(void *), void *arg)
{
    long long until = idle_ms >= 0 ? now_ms() + idle_ms : -1;
    while (until >= 0 ? now_ms() < until : !l->done) {
        int wait = -1;
        if (l->deadline >= 0) {
            long long left = l->deadline - now_ms();
            wait = left < 0 ? 0 : (int)left;
        }
        if (until >= 0) {
            long long left = until - now_ms();
            if (wait < 0 || left < wait)
                wait = left < 0 ? 0 : (int)left;
        }
        if (l->fd < 0 && wait < 0)
            die("the state machine waits for nothing (no watch, no timer)");
        struct pollfd p = { .fd = l->fd, .events = 0 };
        if (l->events & MILTER_IO_READ)
            p.events |= POLLIN;
        if (l->events & MILTER_IO_WRITE)
            p.events |= POLLOUT;
        int n = poll(&p, l->fd >= 0 ? 1 : 0, wait);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            die("poll: %s", strerror(errno));
        if (n > 0) {
            int ev = 0;
            if (p.revents & (POLLIN | POLLHUP | POLLERR))
                ev |= MILTER_IO_READ;
            if (p.revents & (POLLOUT | POLLERR))
                ev |= MILTER_IO_WRITE;
            io(arg, ev);
        } else if (l->deadline >= 0 && now_ms() >= l->deadline) {
            l->deadline = -1;
            timeout(arg);
        }
    }
}

static void loop_run(loop *l, void (*io)(void *, int), void (*timeout)(void *), void *arg)
{
    loop_turns(l, -1, io, timeout, arg);
}

/* ------------------------------------------------------------------ */
/* messages                                                            */

typedef struct header {
    char *name;
    char *value;    /* the text after the colon, CRLF between lines */
} header;

typedef struct message {
    header *headers;
    size_t nheaders, cap;
    char *body;     /* CRLF line ends */
    size_t body_len;
} message;

static char *read_file(const char *path, size_t *len)
{
    FILE *fp = fopen(path, "rb");
    if (fp == NULL)
        die("%s: %s", path, strerror(errno));
    size_t cap = 65536, n = 0, got;
    char *data = xmalloc(cap + 1);
    while ((got = fread(data + n, 1, cap - n, fp)) > 0) {
        n += got;
        if (n == cap) {
            cap *= 2;
            data = realloc(data, cap + 1);
            if (data == NULL)
                die("out of memory");
        }
    }
    fclose(fp);
    data[n] = 0;
    *len = n;
    return data;
}

/* LF and CRLF -> CRLF. */
static char *crlf(const char *in, size_t len, size_t *outlen)
{
    char *out = xmalloc(2 * len + 1);
    size_t o = 0;
    for (size_t i = 0; i < len; i++) {
        if (in[i] == '\n' && (i == 0 || in[i - 1] != '\r'))
            out[o++] = '\r';
        out[o++] = in[i];
    }
    out[o] = 0;
    *outlen = o;
    return out;
}

static void add_header(message *m, const char *name, size_t nlen, const char *value, size_t vlen, size_t at)
{
    if (m->nheaders == m->cap) {
        m->cap = m->cap ? m->cap * 2 : 16;
        m->headers = realloc(m->headers, m->cap * sizeof *m->headers);
        if (m->headers == NULL)
            die("out of memory");
    }
    if (at > m->nheaders)
        at = m->nheaders;
    memmove(m->headers + at + 1, m->headers + at, (m->nheaders - at) * sizeof *m->headers);
    m->headers[at].name = memcpy(xmalloc(nlen + 1), name, nlen);
    m->headers[at].name[nlen] = 0;
    m->headers[at].value = memcpy(xmalloc(vlen + 1), value, vlen);
    m->headers[at].value[vlen] = 0;
    m->nheaders++;
}

static void parse_message(message *m, const char *path)
{
    size_t raw_len, len;
    char *raw = read_file(path, &raw_len);
    char *text = crlf(raw, raw_len, &len);
    free(raw);
    memset(m, 0, sizeof *m);
    size_t pos = 0;
    while (pos < len) {
        if (text[pos] == '\r' && pos + 1 < len && text[pos + 1] == '\n') {
            pos += 2;
            break;
        }
        const char *line = text + pos;
        const char *colon = memchr(line, ':', len - pos);
        const char *eol = strstr(line, "\r\n");
        if (colon == NULL || (eol != NULL && colon > eol))
            break;   /* not a header: the body starts here */
        size_t vstart = (size_t)(colon - text) + 1, end = vstart;
        for (;;) {
            const char *e = strstr(text + end, "\r\n");
            if (e == NULL) {
                end = len;
                break;
            }
            end = (size_t)(e - text);
            if (end + 2 < len && (text[end + 2] == ' ' || text[end + 2] == '\t')) {
                end += 2;
                continue;
            }
            break;
        }
        add_header(m, line, (size_t)(colon - line), text + vstart, end - vstart, m->nheaders);
        pos = end + 2 > len ? len : end + 2;
    }
    m->body_len = len - pos;
    m->body = memcpy(xmalloc(m->body_len + 1), text + pos, m->body_len);
    m->body[m->body_len] = 0;
    free(text);
}

static void free_message(message *m)
{
    for (size_t i = 0; i < m->nheaders; i++) {
        free(m->headers[i].name);
        free(m->headers[i].value);
    }
    free(m->headers);
    free(m->body);
}

/* ------------------------------------------------------------------ */
/* milter                                                              */

typedef struct macro_def {
    char *name;    /* with braces */
    char *value;
} macro_def;

typedef struct mdrive {
    loop loop;
    milter_conn *conn;
    macro_def macros[64];
    size_t nmacros;
    message *msg;           /* edits apply here */
    int replaced_body;
    char *new_body;
    size_t new_body_len, new_body_cap;
    int fail_edits_after;   /* --fail-edit N: the Nth edit is refused */
    int pause_ms;           /* --pause-ms: an idle loop between events, as between SMTP commands */
    int edits;
} mdrive;

static void m_watch(void *arg, int fd, int events) { loop_watch(&((mdrive *)arg)->loop, fd, events); }
static void m_timer(void *arg, unsigned ms) { loop_timer(&((mdrive *)arg)->loop, ms); }
static void m_done(void *arg) { ((mdrive *)arg)->loop.done = 1; }
static void m_io(void *arg, int events) { milter_conn_io(((mdrive *)arg)->conn, events); }
static void m_timeout(void *arg) { milter_conn_timeout(((mdrive *)arg)->conn); }

static void m_log(void *arg, milter_log_level level, const char *text)
{
    (void)arg;
    printf("log: %s %s\n", level == MILTER_LOG_ERROR ? "error" : level == MILTER_LOG_WARNING ? "warning" : "info",
           text);
    fflush(stdout);
}

static const char *m_macro(void *arg, const char *name)
{
    mdrive *d = arg;
    for (size_t i = 0; i < d->nmacros; i++)
        if (strcmp(d->macros[i].name, name) == 0)
            return d->macros[i].value;
    return NULL;
}

/* Prints a string with control characters escaped, so one edit is one line. */
static void print_escaped(const char *s)
{
    for (; *s; s++) {
        if (*s == '\r')
            fputs("\\r", stdout);
        else if (*s == '\n')
            fputs("\\n", stdout);
        else if (*s == '\t')
            fputs("\\t", stdout);
        else if ((unsigned char)*s < 32)
            printf("\\x%02x", (unsigned char)*s);
        else
            putchar(*s);
    }
}

static size_t find_header(message *m, const char *name, uint32_t nth)
{
    uint32_t seen = 0;
    for (size_t i = 0; i < m->nheaders; i++)
        if (strcasecmp(m->headers[i].name, name) == 0 && ++seen == nth)
            return i;
    return (size_t)-1;
}

static int m_edit(void *arg, const milter_edit *e)
{
    mdrive *d = arg;
    d->edits++;
    if (d->fail_edits_after && d->edits >= d->fail_edits_after) {
        printf("edit: refused by the driver (--fail-edit)\n");
        return -1;
    }
    message *m = d->msg;
    size_t i;
    switch (e->type) {
    case MILTER_EDIT_ADD_HEADER:
        printf("edit: add_header %s=", e->name);
        print_escaped(e->value);
        add_header(m, e->name, strlen(e->name), e->value, strlen(e->value), m->nheaders);
        break;
    case MILTER_EDIT_INSERT_HEADER:
        printf("edit: insert_header %u %s=", (unsigned)e->index, e->name);
        print_escaped(e->value);
        add_header(m, e->name, strlen(e->name), e->value, strlen(e->value), e->index);
        break;
    case MILTER_EDIT_CHANGE_HEADER:
        printf("edit: change_header %s[%u]=", e->name, (unsigned)e->index);
        print_escaped(e->value);
        if ((i = find_header(m, e->name, e->index)) != (size_t)-1) {
            free(m->headers[i].value);
            m->headers[i].value = xstrdup(e->value);
        } else
            add_header(m, e->name, strlen(e->name), e->value, strlen(e->value), m->nheaders);
        break;
    case MILTER_EDIT_DELETE_HEADER:
        printf("edit: delete_header %s[%u]", e->name, (unsigned)e->index);
        if ((i = find_header(m, e->name, e->index)) != (size_t)-1) {
            free(m->headers[i].name);
            free(m->headers[i].value);
            memmove(m->headers + i, m->headers + i + 1, (m->nheaders - i - 1) * sizeof *m->headers);
            m->nheaders--;
        }
        break;
    case MILTER_EDIT_CHANGE_FROM:
        printf("edit: change_from <%s> args=\"%s\"", e->address, e->args);
        break;
    case MILTER_EDIT_ADD_RCPT:
        printf("edit: add_rcpt <%s> args=\"%s\"", e->address, e->args);
        break;
    case MILTER_EDIT_DELETE_RCPT:
        printf("edit: delete_rcpt <%s>", e->address);
        break;
    case MILTER_EDIT_BODY_CHUNK:
        printf("edit: body_chunk %zu%s", e->len, e->body_first ? " first" : "");
        if (e->body_first || !d->replaced_body) {
            d->replaced_body = 1;
            d->new_body_len = 0;
        }
        if (d->new_body_len + e->len > d->new_body_cap) {
            d->new_body_cap = (d->new_body_len + e->len) * 2;
            d->new_body = realloc(d->new_body, d->new_body_cap);
            if (d->new_body == NULL)
                die("out of memory");
        }
        memcpy(d->new_body + d->new_body_len, e->data, e->len);
        d->new_body_len += e->len;
        break;
    case MILTER_EDIT_BODY_END:
        printf("edit: body_end %zu", d->new_body_len);
        if (!d->replaced_body) {
            d->replaced_body = 1;
            d->new_body_len = 0;
        }
        break;
    case MILTER_EDIT_QUARANTINE:
        printf("edit: quarantine %s", e->reason);
        break;
    }
    printf("\n");
    fflush(stdout);
    return 0;
}

static const char *verdict_name(milter_verdict v)
{
    static const char *const names[] = { "continue", "accept", "reject", "tempfail", "discard", "shutdown" };
    return names[v];
}

/* Waits for a pending call, then prints "what: verdict ...". Returns the
 * verdict. */
static milter_verdict m_finish(mdrive *d, milter_status st, const char *what)
{
    if (st == MILTER_PENDING) {
        d->loop.done = 0;
        loop_run(&d->loop, m_io, m_timeout, d);
    }
    const milter_result *r = milter_conn_result(d->conn);
    printf("%s: %s", what, verdict_name(r->verdict));
    if (r->reply) {
        printf(" ");
        print_escaped(r->reply);
    }
    if (r->connection)
        printf(" connection");
    if (r->failed)
        printf(" failed");
    if (r->edit_failed)
        printf(" edit_failed");
    if (r->quarantine)
        printf(" quarantine=%s", r->quarantine);
    printf("\n");
    fflush(stdout);
    milter_verdict v = r->verdict;
    if (d->pause_ms > 0)
        loop_turns(&d->loop, d->pause_ms, m_io, m_timeout, d);
    return v;
}

static char **split_args(const char *spec)
{
    /* "<a@b> NOTIFY=NEVER" -> {"<a@b>", "NOTIFY=NEVER", NULL} */
    char *copy = xstrdup(spec);
    char **argv = xmalloc(sizeof *argv * (strlen(spec) / 2 + 3));
    size_t n = 0;
    for (char *tok = strtok(copy, " "); tok != NULL; tok = strtok(NULL, " "))
        argv[n++] = tok;
    argv[n] = NULL;
    return argv;
}

static void write_message(const message *m, const mdrive *d, const char *path)
{
    FILE *fp = fopen(path, "wb");
    if (fp == NULL)
        die("%s: %s", path, strerror(errno));
    for (size_t i = 0; i < m->nheaders; i++)
        fprintf(fp, "%s:%s\r\n", m->headers[i].name, m->headers[i].value);
    fputs("\r\n", fp);
    if (d->replaced_body)
        fwrite(d->new_body, 1, d->new_body_len, fp);
    else
        fwrite(m->body, 1, m->body_len, fp);
    if (fclose(fp) != 0)
        die("%s: %s", path, strerror(errno));
}

static void milter_usage(void)
{
    die("usage: scan-drive milter [--protocol P] [--default-action A] [--timeouts CONNECT,COMMAND,CONTENT (ms)]\n"
        "  [--client NAME,ADDR,PORT,FAMILY(4|6|unix|unknown)] [--helo NAME] [--from \"<a> ARGS\"]\n"
        "  [--rcpt \"<b> ARGS\"]... [--rejected-rcpt \"<c>\"]... [--macro NAME=VALUE]... [--macros STAGE=LIST]...\n"
        "  [--unknown CMD] [--abort-after mail|rcpt|data] [--messages N] [--sessions N] [--chunk N]\n"
        "  [--offer-rcpt-rej] [--max-reply N] [--max-body N] [--fail-edit N] [--pause-ms N]\n"
        "  [--write-message FILE]\n"
        "  ENDPOINT MESSAGE-FILE");
}

static int stage_by_name(const char *name)
{
    static const char *const names[] = { "connect", "helo", "mail", "rcpt", "data", "eom", "eoh", "unknown" };
    for (int i = 0; i < MILTER_MACRO_STAGES; i++)
        if (strcmp(name, names[i]) == 0)
            return i;
    return -1;
}

static int drive_milter(int argc, char **argv)
{
    milter_config cfg;
    memset(&cfg, 0, sizeof cfg);
    const char *client_name = "client.example.com", *client_addr = "192.0.2.1", *helo = "client.example.com";
    unsigned client_port = 54321;
    int family = AF_INET;
    const char *from = "<sender@example.com>", *unknown = NULL, *abort_after = NULL, *write_to = NULL;
    const char *rcpts[64];
    int rcpt_rejected[64];
    size_t nrcpts = 0;
    int messages = 1, sessions = 1;
    size_t chunk = 0;
    static mdrive d;
    char *client_copy = NULL;
    memset(&d, 0, sizeof d);
    d.loop.fd = -1;
    d.loop.deadline = -1;

    int i;
    for (i = 0; i < argc && strncmp(argv[i], "--", 2) == 0; i++) {
        const char *opt = argv[i], *val = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(opt, "--offer-rcpt-rej") == 0) {
            cfg.offer_rcpt_rejected = 1;
            continue;
        }
        if (val == NULL)
            milter_usage();
        i++;
        if (strcmp(opt, "--protocol") == 0)
            cfg.protocol = val;
        else if (strcmp(opt, "--default-action") == 0)
            cfg.default_action = val;
        else if (strcmp(opt, "--timeouts") == 0) {
            if (sscanf(val, "%u,%u,%u", &cfg.connect_timeout_ms, &cfg.command_timeout_ms,
                       &cfg.content_timeout_ms) != 3)
                milter_usage();
        } else if (strcmp(opt, "--client") == 0) {
            free(client_copy);
            char *c = client_copy = xstrdup(val), *f[4];
            f[0] = strtok(c, ",");
            for (int k = 1; k < 4; k++)
                f[k] = strtok(NULL, ",");
            if (f[3] == NULL)
                milter_usage();
            client_name = f[0];
            client_addr = f[1];
            client_port = (unsigned)strtoul(f[2], NULL, 10);
            family = strcmp(f[3], "6") == 0 ? AF_INET6 : strcmp(f[3], "unix") == 0 ? AF_UNIX
                   : strcmp(f[3], "unknown") == 0 ? AF_UNSPEC : AF_INET;
        } else if (strcmp(opt, "--helo") == 0)
            helo = val;
        else if (strcmp(opt, "--from") == 0)
            from = val;
        else if (strcmp(opt, "--rcpt") == 0 || strcmp(opt, "--rejected-rcpt") == 0) {
            if (nrcpts == 64)
                milter_usage();
            rcpt_rejected[nrcpts] = opt[2] == 'r' && opt[3] == 'e' && opt[4] == 'j';
            rcpts[nrcpts++] = val;
        } else if (strcmp(opt, "--macro") == 0) {
            const char *eq = strchr(val, '=');
            if (eq == NULL || d.nmacros == 64)
                milter_usage();
            char name[80];
            snprintf(name, sizeof name, "%.*s", (int)(eq - val), val);
            char canon[84];
            milter_macro_canonical(name, canon, sizeof canon);
            d.macros[d.nmacros].name = xstrdup(canon);
            d.macros[d.nmacros].value = xstrdup(eq + 1);
            d.nmacros++;
        } else if (strcmp(opt, "--macros") == 0) {
            const char *eq = strchr(val, '=');
            char stage[16];
            if (eq == NULL || (size_t)(eq - val) >= sizeof stage)
                milter_usage();
            snprintf(stage, sizeof stage, "%.*s", (int)(eq - val), val);
            int s = stage_by_name(stage);
            if (s < 0)
                milter_usage();
            cfg.macros[s] = eq + 1;
        } else if (strcmp(opt, "--unknown") == 0)
            unknown = val;
        else if (strcmp(opt, "--abort-after") == 0)
            abort_after = val;
        else if (strcmp(opt, "--messages") == 0)
            messages = atoi(val);
        else if (strcmp(opt, "--sessions") == 0)
            sessions = atoi(val);
        else if (strcmp(opt, "--chunk") == 0)
            chunk = (size_t)strtoul(val, NULL, 10);
        else if (strcmp(opt, "--max-reply") == 0)
            cfg.max_reply = (size_t)strtoul(val, NULL, 10);
        else if (strcmp(opt, "--max-body") == 0)
            cfg.max_body = (size_t)strtoul(val, NULL, 10);
        else if (strcmp(opt, "--fail-edit") == 0)
            d.fail_edits_after = atoi(val);
        else if (strcmp(opt, "--pause-ms") == 0)
            d.pause_ms = atoi(val);
        else if (strcmp(opt, "--write-message") == 0)
            write_to = val;
        else
            milter_usage();
    }
    if (argc - i != 2)
        milter_usage();
    if (nrcpts == 0) {
        rcpt_rejected[nrcpts] = 0;
        rcpts[nrcpts++] = "<rcpt@example.org>";
    }
    cfg.name = argv[i];
    message msg;
    parse_message(&msg, argv[i + 1]);
    d.msg = &msg;

    char err[512];
    milter_settings *s = milter_settings_create(&cfg, err, sizeof err);
    if (s == NULL)
        die("%s", err);
    milter_conn_ops ops = { m_watch, m_timer, m_done, m_edit, m_macro, m_log };
    d.conn = milter_conn_create(s, &ops, &d);
    if (d.conn == NULL)
        die("out of memory");

    for (int session = 0; session < sessions; session++) {
        if (session > 0) {
            if (milter_conn_quit_nc(d.conn) == 0)
                printf("reuse: quit_nc\n");
            else {
                printf("reuse: new connection\n");
                milter_conn_free(d.conn);
                d.conn = milter_conn_create(s, &ops, &d);
            }
        }
        if (session == 0 || !milter_conn_active(d.conn) || milter_conn_version(d.conn) == 0) {
            milter_status st = milter_conn_open(d.conn);
            if (st == MILTER_PENDING) {
                d.loop.done = 0;
                loop_run(&d.loop, m_io, m_timeout, &d);
            }
            const milter_result *r = milter_conn_result(d.conn);
            if (r->failed) {
                m_finish(&d, MILTER_DONE, "open");
            } else {
                printf("open: ok version=%d actions=0x%x steps=0x%x\n", milter_conn_version(d.conn),
                       (unsigned)milter_conn_actions(d.conn), (unsigned)milter_conn_steps(d.conn));
                static const char *const stage_names[] = { "connect", "helo", "mail", "rcpt", "data", "eom", "eoh",
                                                           "unknown" };
                for (int st2 = 0; st2 < MILTER_MACRO_STAGES; st2++) {
                    const milter_macro_list *l = milter_conn_macros(d.conn, st2);
                    printf("macros %s:", stage_names[st2]);
                    for (size_t k = 0; k < l->count; k++)
                        printf(" %s", l->names[k]);
                    printf("\n");
                }
            }
        }
        /* A refusal at CONNECT or HELO ends the SMTP session (as smtpd
         * would refuse every command); an ACCEPT does not. */
        milter_verdict v = m_finish(&d, milter_conn_connect(d.conn, client_name, family, client_addr, client_port),
                                    "connect");
        if (milter_conn_result(d.conn)->connection && v != MILTER_CONTINUE && v != MILTER_ACCEPT)
            goto session_end;
        v = m_finish(&d, milter_conn_helo(d.conn, helo), "helo");
        if (milter_conn_result(d.conn)->connection && v != MILTER_CONTINUE && v != MILTER_ACCEPT)
            goto session_end;
        if (unknown)
            m_finish(&d, milter_conn_unknown(d.conn, unknown), "unknown");
        for (int msgno = 0; msgno < messages; msgno++) {
            char **fargv = split_args(from);
            v = m_finish(&d, milter_conn_mail(d.conn, (const char *const *)fargv), "mail");
            free(fargv[0]);
            free(fargv);
            if (v == MILTER_REJECT || v == MILTER_TEMPFAIL || v == MILTER_SHUTDOWN) {
                milter_conn_abort(d.conn);
                if (v == MILTER_SHUTDOWN || milter_conn_result(d.conn)->connection)
                    goto session_end;
                continue;
            }
            if (abort_after && strcmp(abort_after, "mail") == 0) {
                milter_conn_abort(d.conn);
                printf("abort\n");
                continue;
            }
            int accepted = 0;
            for (size_t k = 0; k < nrcpts; k++) {
                char what[300];
                snprintf(what, sizeof what, "rcpt %.280s%s", rcpts[k], rcpt_rejected[k] ? " (rejected)" : "");
                char **rargv = split_args(rcpts[k]);
                v = m_finish(&d, milter_conn_rcpt(d.conn, (const char *const *)rargv, rcpt_rejected[k]), what);
                free(rargv[0]);
                free(rargv);
                if (!rcpt_rejected[k] && v != MILTER_REJECT && v != MILTER_TEMPFAIL)
                    accepted++;
                if (v == MILTER_SHUTDOWN)
                    goto session_end;
            }
            if (!accepted || (abort_after && strcmp(abort_after, "rcpt") == 0)) {
                milter_conn_abort(d.conn);
                printf("abort\n");
                continue;
            }
            v = m_finish(&d, milter_conn_data(d.conn), "data");
            if (v == MILTER_REJECT || v == MILTER_TEMPFAIL || v == MILTER_SHUTDOWN
                || (abort_after && strcmp(abort_after, "data") == 0)) {
                milter_conn_abort(d.conn);
                printf("abort\n");
                if (v == MILTER_SHUTDOWN)
                    goto session_end;
                continue;
            }
            int refused = 0;
            for (size_t k = 0; k < msg.nheaders && !refused; k++) {
                char what[300];
                snprintf(what, sizeof what, "header %.280s", msg.headers[k].name);
                v = m_finish(&d, milter_conn_header(d.conn, msg.headers[k].name, msg.headers[k].value), what);
                refused = v == MILTER_REJECT || v == MILTER_TEMPFAIL || v == MILTER_DISCARD || v == MILTER_SHUTDOWN;
            }
            if (!refused) {
                v = m_finish(&d, milter_conn_eoh(d.conn), "eoh");
                refused = v == MILTER_REJECT || v == MILTER_TEMPFAIL || v == MILTER_DISCARD || v == MILTER_SHUTDOWN;
            }
            size_t off = 0, pieces = 0;
            while (!refused && off < msg.body_len) {
                size_t n = chunk && chunk < msg.body_len - off ? chunk : msg.body_len - off, taken;
                milter_status st = milter_conn_body(d.conn, msg.body + off, n, &taken);
                if (st == MILTER_PENDING || milter_conn_result(d.conn)->verdict != MILTER_CONTINUE) {
                    v = m_finish(&d, st, "body");
                    refused = v == MILTER_REJECT || v == MILTER_TEMPFAIL || v == MILTER_DISCARD
                           || v == MILTER_SHUTDOWN;
                }
                off += taken;
                if (++pieces > 10000000)
                    die("the body does not advance");
            }
            if (refused) {
                milter_conn_abort(d.conn);
                printf("abort\n");
                if (v == MILTER_SHUTDOWN)
                    goto session_end;
                continue;
            }
            v = m_finish(&d, milter_conn_eom(d.conn), "eom");
            if (v == MILTER_SHUTDOWN)
                goto session_end;
        }
        if (write_to)
            write_message(&msg, &d, write_to);
    session_end:
        if (session + 1 == sessions) {
            milter_conn_quit(d.conn);
            printf("quit\n");
        }
    }
    milter_conn_free(d.conn);
    milter_settings_free(s);
    free_message(&msg);
    free(d.new_body);
    for (size_t k = 0; k < d.nmacros; k++) {
        free(d.macros[k].name);
        free(d.macros[k].value);
    }
    free(client_copy);
    return 0;
}

/* ------------------------------------------------------------------ */
/* spamd and clamd: the message file is the stream                     */

typedef struct sdrive {
    loop loop;
    spamd_client *spamd;
    clamd_client *clamd;
    FILE *in;
    FILE *body_out;
    size_t body_pieces;
} sdrive;

static void s_watch(void *arg, int fd, int events) { loop_watch(&((sdrive *)arg)->loop, fd, events); }
static void s_timer(void *arg, unsigned ms) { loop_timer(&((sdrive *)arg)->loop, ms); }
static void s_done(void *arg) { ((sdrive *)arg)->loop.done = 1; }

static long s_read(void *arg, void *buf, size_t cap)
{
    sdrive *d = arg;
    size_t n = fread(buf, 1, cap, d->in);
    return ferror(d->in) ? -1 : (long)n;
}

static void s_log_spamd(void *arg, spamd_log_level level, const char *text)
{
    (void)arg;
    printf("log: %s %s\n", level == SPAMD_LOG_ERROR ? "error" : level == SPAMD_LOG_WARNING ? "warning" : "info", text);
}

static void s_log_clamd(void *arg, clamd_log_level level, const char *text)
{
    (void)arg;
    printf("log: %s %s\n", level == CLAMD_LOG_ERROR ? "error" : level == CLAMD_LOG_WARNING ? "warning" : "info", text);
}

static int s_body(void *arg, const void *data, size_t len)
{
    sdrive *d = arg;
    d->body_pieces++;
    if (d->body_out != NULL && fwrite(data, 1, len, d->body_out) != len)
        return -1;
    return 0;
}

static void sp_io(void *arg, int events) { spamd_client_io(((sdrive *)arg)->spamd, events); }
static void sp_timeout(void *arg) { spamd_client_timeout(((sdrive *)arg)->spamd); }
static void cl_io(void *arg, int events) { clamd_client_io(((sdrive *)arg)->clamd, events); }
static void cl_timeout(void *arg) { clamd_client_timeout(((sdrive *)arg)->clamd); }

static size_t file_size(FILE *fp)
{
    fseek(fp, 0, SEEK_END);
    long n = ftell(fp);
    fseek(fp, 0, SEEK_SET);
    return n < 0 ? 0 : (size_t)n;
}

static int drive_spamd(int argc, char **argv)
{
    spamd_config cfg;
    memset(&cfg, 0, sizeof cfg);
    int cmd = SPAMD_CHECK;
    const char *body_out = NULL;
    int i;
    for (i = 0; i + 1 < argc && strncmp(argv[i], "--", 2) == 0; i += 2) {
        const char *opt = argv[i], *val = argv[i + 1];
        if (strcmp(opt, "--command") == 0 && (cmd = spamd_command_parse(val)) >= 0)
            continue;
        else if (strcmp(opt, "--user") == 0)
            cfg.user = val;
        else if (strcmp(opt, "--max-size") == 0)
            cfg.max_size = (size_t)strtoul(val, NULL, 10);
        else if (strcmp(opt, "--timeout") == 0)
            cfg.timeout_ms = (unsigned)strtoul(val, NULL, 10);
        else if (strcmp(opt, "--body-out") == 0)
            body_out = val;
        else
            die("usage: scan-drive spamd [--command C] [--user U] [--max-size N] [--timeout MS] [--body-out F] "
                "ADDRESS FILE");
    }
    if (argc - i != 2)
        die("usage: scan-drive spamd [options] ADDRESS FILE");
    cfg.address = argv[i];
    char err[512];
    spamd_settings *s = spamd_settings_create(&cfg, err, sizeof err);
    if (s == NULL)
        die("%s", err);
    static sdrive d;
    memset(&d, 0, sizeof d);
    d.loop.fd = -1;
    d.loop.deadline = -1;
    if ((d.in = fopen(argv[i + 1], "rb")) == NULL)
        die("%s: %s", argv[i + 1], strerror(errno));
    if (body_out != NULL && (d.body_out = fopen(body_out, "wb")) == NULL)
        die("%s: %s", body_out, strerror(errno));
    spamd_ops ops = { s_watch, s_timer, s_done, s_read, s_body, s_log_spamd };
    d.spamd = spamd_client_create(s, &ops, &d);
    size_t size = file_size(d.in);
    if (spamd_client_start(d.spamd, (spamd_command)cmd, size) == SPAMD_PENDING)
        loop_run(&d.loop, sp_io, sp_timeout, &d);
    const spamd_result *r = spamd_client_result(d.spamd);
    if (r->outcome == SPAMD_SKIPPED)
        printf("result: skipped size=%zu\n", size);
    else if (r->outcome == SPAMD_FAILED)
        printf("result: failed code=%d %s\n", r->code, r->error ? r->error : "");
    else {
        printf("result: ok code=%d %s", r->code, r->code_text);
        if (r->has_spam)
            printf(" spam=%s score=%.1f threshold=%.1f", r->is_spam ? "yes" : "no", r->score, r->threshold);
        printf(" body=%zu\n", r->body_bytes);
        if (r->symbols)
            printf("symbols: %s\n", r->symbols);
    }
    printf("body pieces: %zu\n", d.body_pieces);
    if (d.body_out != NULL && fclose(d.body_out) != 0)
        die("%s: %s", body_out, strerror(errno));
    fclose(d.in);
    spamd_client_free(d.spamd);
    spamd_settings_free(s);
    return 0;
}

static int drive_clamd(int argc, char **argv)
{
    clamd_config cfg;
    memset(&cfg, 0, sizeof cfg);
    clamd_command cmd = CLAMD_INSTREAM;
    int unknown_size = 0;
    int i;
    for (i = 0; i < argc && strncmp(argv[i], "--", 2) == 0; i++) {
        const char *opt = argv[i], *val = i + 1 < argc ? argv[i + 1] : "";
        if (strcmp(opt, "--unknown-size") == 0) {
            unknown_size = 1;
            continue;
        }
        i++;
        if (strcmp(opt, "--command") == 0)
            cmd = strcmp(val, "PING") == 0 ? CLAMD_PING : strcmp(val, "VERSION") == 0 ? CLAMD_VERSION : CLAMD_INSTREAM;
        else if (strcmp(opt, "--max-size") == 0)
            cfg.max_size = (size_t)strtoul(val, NULL, 10);
        else if (strcmp(opt, "--chunk") == 0)
            cfg.chunk_size = (size_t)strtoul(val, NULL, 10);
        else if (strcmp(opt, "--timeout") == 0)
            cfg.timeout_ms = (unsigned)strtoul(val, NULL, 10);
        else
            die("usage: scan-drive clamd [--command C] [--max-size N] [--chunk N] [--unknown-size] [--timeout MS] "
                "ADDRESS FILE");
    }
    if (argc - i != 2)
        die("usage: scan-drive clamd [options] ADDRESS FILE");
    cfg.address = argv[i];
    char err[512];
    clamd_settings *s = clamd_settings_create(&cfg, err, sizeof err);
    if (s == NULL)
        die("%s", err);
    static sdrive d;
    memset(&d, 0, sizeof d);
    d.loop.fd = -1;
    d.loop.deadline = -1;
    if ((d.in = fopen(argv[i + 1], "rb")) == NULL)
        die("%s: %s", argv[i + 1], strerror(errno));
    clamd_ops ops = { s_watch, s_timer, s_done, s_read, s_log_clamd };
    d.clamd = clamd_client_create(s, &ops, &d);
    size_t size = file_size(d.in);
    if (clamd_client_start(d.clamd, cmd, unknown_size ? 0 : size) == CLAMD_PENDING)
        loop_run(&d.loop, cl_io, cl_timeout, &d);
    const clamd_result *r = clamd_client_result(d.clamd);
    static const char *const verdicts[] = { "clean", "found", "size_limit", "error", "pong", "version" };
    if (r->outcome == CLAMD_OUTCOME_SKIPPED)
        printf("result: skipped sent=%zu\n", r->sent);
    else if (r->outcome == CLAMD_OUTCOME_FAILED)
        printf("result: failed %s\n", r->error ? r->error : "");
    else
        printf("result: %s%s%s reply=\"%s\" sent=%zu\n", verdicts[r->reply.verdict], r->reply.virus[0] ? " " : "",
               r->reply.virus, r->reply.text, r->sent);
    fclose(d.in);
    clamd_client_free(d.clamd);
    clamd_settings_free(s);
    return 0;
}

int main(int argc, char **argv)
{
    setvbuf(stdout, NULL, _IOLBF, 0);
    if (argc < 2)
        die("usage: scan-drive milter|spamd|clamd ...");
    if (strcmp(argv[1], "milter") == 0)
        return drive_milter(argc - 2, argv + 2);
    if (strcmp(argv[1], "spamd") == 0)
        return drive_spamd(argc - 2, argv + 2);
    if (strcmp(argv[1], "clamd") == 0)
        return drive_clamd(argc - 2, argv + 2);
    die("unknown protocol %s", argv[1]);
}
