/*
 * The hosts file as glibc's files backend reads it (see hosts_file.h). The
 * rules, checked against glibc 2.36's getnameinfo()/getaddrinfo() with the
 * file bind-mounted over /etc/hosts:
 *   - a line ends at a newline or at a NUL byte (glibc reads lines with
 *     fgets() and parses them as C strings: what follows a NUL on its line
 *     is ignored); "#" starts a comment anywhere; fields are separated by
 *     white space; the first field is an address (inet_pton: no "127.1", no
 *     "%scope", so a scoped IPv6 line is ignored), the next the canonical
 *     name, the rest aliases. A line with an address and no name lists the
 *     address with the name "" (getnameinfo succeeds with an empty name).
 *     Lines of any length are read, as glibc does (the file's size is
 *     bounded: HOSTS_FILE_MAX_SIZE).
 *   - by address, the first line listing it wins and gives its first name;
 *     an IPv4 lookup also sees IPv4-mapped IPv6 lines and "::1" (as
 *     127.0.0.1), an IPv6 lookup sees IPv6 lines only.
 *   - by name, every line naming it (first name or alias, ASCII case
 *     ignored, a trailing dot is part of the name) counts, with the same
 *     family rules; a name no line of that family names is not found.
 * A read makes a new table (the text and its open-addressing hash indexes)
 * and replaces the old one whole, so answers never mix two versions of the
 * file. Reading and parsing touch nothing but the new table, so they can
 * run on a thread; what they found is logged back on the loop.
 */
#include "config.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <event2/event.h>

#include "lib/hosts_file.h"
#include "lib/log.h"
#include "lib/workq.h"
#include "lib/xalloc.h"

struct hosts_line {
    unsigned char v4[4];        /* the address as an IPv4 lookup sees it (has_v4) */
    unsigned char v6[16];       /* as an IPv6 lookup sees it (has_v6) */
    unsigned char has_v4, has_v6;
    const char *name;           /* the first name, "" when none */
};

struct hosts_name {             /* one name (first or alias) of one line */
    const char *name;
    uint32_t line;
    uint32_t next;              /* the next entry with the same name, + 1; 0: none */
};

/* One read of the file; everything points into text. */
struct hosts_table {
    char *text;
    struct hosts_line *lines;
    uint32_t nlines;
    struct hosts_name *names;
    uint32_t nnames;
    uint32_t *by_v4, *by_v6, *by_name;  /* index + 1; 0: empty slot */
    uint32_t v4_mask, v6_mask, name_mask;
};

/* What a file was when read: a change of any of these re-reads it. */
struct hosts_stamp {
    dev_t dev;
    ino_t ino;
    off_t size;
    struct timespec mtime, ctime;
};

/* One read, made on a thread (or the caller's): its result is installed on
 * the loop by read_done(). */
struct hosts_read {
    struct hosts_file *h;
    const char *path;           /* h's */
    struct hosts_table *table;  /* NULL when the read failed */
    struct hosts_stamp stamp;
    const char *failed_what;    /* the failed step ("open", "read"...), with failed_errno */
    int failed_errno;
    off_t size;                 /* the file's */
    size_t kept;                /* bytes parsed: less than size when over the cap */
};

struct hosts_file {
    char *path;
    struct hosts_table *table;  /* NULL: nothing listed */
    int have_stamp;
    struct hosts_stamp stamp;   /* the file table was read from */
    int failed_errno;           /* the error last logged, so it is logged once */
    int quiet;                  /* another worker's copy says what the reads find */
    int fixed;                  /* made from text (hosts_file_from_text): never re-read */
    /* Without a loop: each lookup looks, once a second. */
    int checked;
    double checked_at;          /* monotonic seconds of the last look at the file */
    /* With a loop: its timer looks, a thread reads. */
    struct event_base *base;
    struct event *timer;
    struct workq *wq;           /* one thread, made at the first re-read */
    int reading;                /* a read is on the thread: no other starts */
};

static uint32_t hash_bytes(const unsigned char *p, size_t n, uint32_t h)
{
    for (size_t i = 0; i < n; i++) {
        h ^= p[i];
        h *= 16777619u;
    }
    return h;
}

static uint32_t hash_name(const char *s)
{
    uint32_t h = 2166136261u;
    for (; *s; s++) {
        h ^= (unsigned char)tolower((unsigned char)*s);
        h *= 16777619u;
    }
    return h;
}

static uint32_t table_size(uint32_t n)
{
    uint32_t size = 16;
    while (size < 2 * n)
        size *= 2;
    return size;
}

static void table_free(struct hosts_table *t)
{
    if (t == NULL)
        return;
    free(t->text);
    free(t->lines);
    free(t->names);
    free(t->by_v4);
    free(t->by_v6);
    free(t->by_name);
    free(t);
}

/* The first line listing an address keeps the slot. */
static void index_address(uint32_t *table, uint32_t mask, const struct hosts_line *lines, uint32_t li, int v6)
{
    const unsigned char *key = v6 ? lines[li].v6 : lines[li].v4;
    size_t len = v6 ? 16 : 4;
    for (uint32_t i = hash_bytes(key, len, 2166136261u) & mask;; i = (i + 1) & mask) {
        if (table[i] == 0) {
            table[i] = li + 1;
            return;
        }
        if (memcmp(v6 ? lines[table[i] - 1].v6 : lines[table[i] - 1].v4, key, len) == 0)
            return;
    }
}

static void index_name(struct hosts_table *t, uint32_t ni)
{
    for (uint32_t i = hash_name(t->names[ni].name) & t->name_mask;; i = (i + 1) & t->name_mask) {
        if (t->by_name[i] == 0) {
            t->by_name[i] = ni + 1;
            return;
        }
        if (strcasecmp(t->names[t->by_name[i] - 1].name, t->names[ni].name) == 0) {
            t->names[ni].next = t->by_name[i];
            t->by_name[i] = ni + 1;
            return;
        }
    }
}

/* glibc's isspace() in the C locale, but for the newline, which ends lines. */
static int is_blank(char c)
{
    return c == ' ' || c == '\t' || c == '\r' || c == '\v' || c == '\f';
}

/* The next field of [*p, end) (with *end NUL), NUL-terminated in place;
 * NULL at the end. */
static char *next_field(char **p, char *end)
{
    char *s = *p;
    while (s < end && is_blank(*s))
        s++;
    if (s >= end)
        return NULL;
    char *f = s;
    while (s < end && !is_blank(*s))
        s++;
    if (s < end)
        *s++ = '\0';   /* at the end, *end is already NUL */
    *p = s;
    return f;
}

/* One line's address; 0 when it is no address glibc would accept. */
static int parse_address(const char *field, struct hosts_line *l)
{
    static const unsigned char loopback_v4[4] = { 127, 0, 0, 1 };
    if (inet_pton(AF_INET, field, l->v4) == 1) {
        l->has_v4 = 1;
        return 1;
    }
    struct in6_addr a6;
    if (inet_pton(AF_INET6, field, &a6) != 1)
        return 0;
    memcpy(l->v6, &a6, 16);
    l->has_v6 = 1;
    if (IN6_IS_ADDR_V4MAPPED(&a6)) {
        memcpy(l->v4, l->v6 + 12, 4);
        l->has_v4 = 1;
    } else if (IN6_IS_ADDR_LOOPBACK(&a6)) {
        memcpy(l->v4, loopback_v4, 4);
        l->has_v4 = 1;
    }
    return 1;
}

/* A table of text (len bytes, NUL-terminated, now the table's); fields are
 * cut in place. Touches nothing else: it runs on a thread. */
static struct hosts_table *parse(char *text, size_t len)
{
    struct hosts_table *t = xcalloc(1, sizeof(*t));
    t->text = text;
    char *end = text + len;
    /* Upper bounds first: lines with a field (empty lines take no room:
     * a file of newlines must not cost an entry per byte), and fields (a
     * field starts after a blank). */
    uint32_t max_lines = 1, max_names = 1;
    int line_has_field = 0;
    for (size_t i = 0; i < len; i++) {
        if (text[i] == '\n')
            line_has_field = 0;
        else if (!is_blank(text[i]) && (i == 0 || is_blank(text[i - 1]) || text[i - 1] == '\n')) {
            max_names++;
            if (!line_has_field)
                max_lines++;
            line_has_field = 1;
        }
    }
    t->lines = xcalloc(max_lines, sizeof(*t->lines));
    t->names = xcalloc(max_names, sizeof(*t->names));
    for (char *line = text; line < end;) {
        char *nl = memchr(line, '\n', (size_t)(end - line));
        char *stop = nl ? nl : end;
        char *next = nl ? nl + 1 : end;
        /* glibc's line is a C string: a NUL ends it, then "#" */
        char *cut = memchr(line, '\0', (size_t)(stop - line));
        if (cut)
            stop = cut;
        cut = memchr(line, '#', (size_t)(stop - line));
        if (cut)
            stop = cut;
        *stop = '\0';
        char *p = line;
        char *addr = next_field(&p, stop);
        struct hosts_line *l = &t->lines[t->nlines];
        if (addr == NULL || !parse_address(addr, l)) {
            memset(l, 0, sizeof(*l));
            line = next;
            continue;
        }
        l->name = "";
        for (char *name; (name = next_field(&p, stop)) != NULL;) {
            if (*l->name == '\0')
                l->name = name;
            t->names[t->nnames].name = name;
            t->names[t->nnames].line = t->nlines;
            t->nnames++;
        }
        t->nlines++;
        line = next;
    }
    /* The bounds were generous (every field counted as a name): give the
     * rest back, as each worker keeps its own table. */
    if (t->nlines)
        t->lines = xrealloc(t->lines, t->nlines * sizeof(*t->lines));
    if (t->nnames)
        t->names = xrealloc(t->names, t->nnames * sizeof(*t->names));
    uint32_t n4 = 0, n6 = 0;
    for (uint32_t i = 0; i < t->nlines; i++) {
        n4 += t->lines[i].has_v4;
        n6 += t->lines[i].has_v6;
    }
    uint32_t size4 = table_size(n4), size6 = table_size(n6), nsize = table_size(t->nnames);
    t->v4_mask = size4 - 1;
    t->v6_mask = size6 - 1;
    t->name_mask = nsize - 1;
    t->by_v4 = xcalloc(size4, sizeof(uint32_t));
    t->by_v6 = xcalloc(size6, sizeof(uint32_t));
    t->by_name = xcalloc(nsize, sizeof(uint32_t));
    for (uint32_t i = 0; i < t->nlines; i++) {
        if (t->lines[i].has_v4)
            index_address(t->by_v4, t->v4_mask, t->lines, i, 0);
        if (t->lines[i].has_v6)
            index_address(t->by_v6, t->v6_mask, t->lines, i, 1);
    }
    /* Newest first in each chain: order does not matter for a name's
     * addresses, only that all are there. */
    for (uint32_t i = 0; i < t->nnames; i++)
        index_name(t, i);
    return t;
}

static void failed(struct hosts_file *h, const char *what, int err)
{
    if (h->failed_errno != err && !h->quiet)
        msg_warn("cannot %s %s: %s: it answers no client name until it can be read", what, h->path,
                 strerror(err));
    h->failed_errno = err;
    h->have_stamp = 0;
    table_free(h->table);
    h->table = NULL;
}

static void stamp_of(const struct stat *st, struct hosts_stamp *s)
{
    s->dev = st->st_dev;
    s->ino = st->st_ino;
    s->size = st->st_size;
    s->mtime = st->st_mtim;
    s->ctime = st->st_ctim;
}

static int same_file(const struct hosts_file *h, const struct stat *st)
{
    const struct hosts_stamp *s = &h->stamp;
    return h->have_stamp && st->st_dev == s->dev && st->st_ino == s->ino && st->st_size == s->size &&
           st->st_mtim.tv_sec == s->mtime.tv_sec && st->st_mtim.tv_nsec == s->mtime.tv_nsec &&
           st->st_ctim.tv_sec == s->ctime.tv_sec && st->st_ctim.tv_nsec == s->ctime.tv_nsec;
}

/* Opens, reads and parses the file into r (on a thread, or the caller's).
 * The file is opened O_NONBLOCK (it may have been replaced by a FIFO since
 * the stat() that chose to read it), and what is read is identified by
 * fstat() of the open file. A file over the cap is read up to the last
 * line break within it: a line cut short is never parsed. */
static void read_work(void *arg)
{
    struct hosts_read *r = arg;
    int fd = open(r->path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
    if (fd < 0) {
        r->failed_what = "open";
        r->failed_errno = errno;
        return;
    }
    struct stat st;
    if (fstat(fd, &st) != 0) {
        r->failed_what = "stat";
        r->failed_errno = errno;
        close(fd);
        return;
    }
    if (!S_ISREG(st.st_mode)) {
        r->failed_what = "read (not a regular file)";
        r->failed_errno = EINVAL;
        close(fd);
        return;
    }
    size_t want = st.st_size > HOSTS_FILE_MAX_SIZE ? (size_t)HOSTS_FILE_MAX_SIZE : (size_t)st.st_size;
    char *text = xmalloc(want + 1);
    size_t got = 0;
    while (got < want) {
        ssize_t n = read(fd, text + got, want - got);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            r->failed_what = "read";
            r->failed_errno = errno;
            free(text);
            close(fd);
            return;
        }
        if (n == 0)
            break;
        got += (size_t)n;
    }
    close(fd);
    if ((off_t)want < st.st_size) {
        char *last = memrchr(text, '\n', got);
        got = last ? (size_t)(last - text) + 1 : 0;
    }
    text[got] = '\0';
    stamp_of(&st, &r->stamp);
    r->size = st.st_size;
    r->kept = got;
    r->table = parse(text, got);
}

/* On the loop: the read's table replaces the old one. */
static void install(struct hosts_file *h, struct hosts_read *r)
{
    if (r->table == NULL) {
        failed(h, r->failed_what, r->failed_errno);
        return;
    }
    if ((off_t)r->kept < r->size && !h->quiet)
        msg_warn("%s: larger than %ld bytes (%lld): only its first %zu bytes, up to the last line break within "
                 "the limit, are read; the lines after them are not consulted (glibc would read the whole file)", h->path,
                 HOSTS_FILE_MAX_SIZE, (long long)r->size, r->kept);
    table_free(h->table);
    h->table = r->table;
    h->stamp = r->stamp;
    h->have_stamp = 1;
    h->failed_errno = 0;
}

static void read_done(void *arg, int cancelled)
{
    struct hosts_read *r = arg;
    if (!cancelled) {
        r->h->reading = 0;
        install(r->h, r);
    } else {
        table_free(r->table);
    }
    free(r);
}

/* A stat() first: the once-a-second look at an unchanged file opens
 * nothing, and a path that is not a regular file (a FIFO would block
 * open()) is never opened. A changed file is read on the thread when there
 * is a loop, but for the first look (at creation: before any client), with
 * lookups answered from the old table meanwhile; else at once. */
static void look(struct hosts_file *h, int at_once)
{
    if (h->reading)
        return;   /* the read under way is checked against the file at the next look */
    struct stat st;
    if (stat(h->path, &st) != 0) {
        failed(h, "open", errno);
        return;
    }
    if (!S_ISREG(st.st_mode)) {
        failed(h, "read (not a regular file)", EINVAL);
        return;
    }
    if (same_file(h, &st))
        return;
    struct hosts_read *r = xcalloc(1, sizeof(*r));
    r->h = h;
    r->path = h->path;
    if (at_once || h->base == NULL) {
        read_work(r);
        read_done(r, 0);
        return;
    }
    if (h->wq == NULL)
        h->wq = workq_create(h->base, 1);
    h->reading = 1;
    workq_submit(h->wq, read_work, read_done, r);
}

static void on_timer(evutil_socket_t fd, short what, void *arg)
{
    look(arg, 0);
}

/* Without a loop: glibc reads the file on every lookup; one look a second
 * is close enough and keeps a stat() off every connection. */
static void refresh(struct hosts_file *h)
{
    if (h->fixed || h->base)
        return;
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
    double now = (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
    if (h->checked && now - h->checked_at < 1.0)
        return;
    h->checked = 1;
    h->checked_at = now;
    look(h, 1);
}

struct hosts_file *hosts_file_create(const char *path, struct event_base *base, int quiet)
{
    struct hosts_file *h = xcalloc(1, sizeof(*h));
    h->path = xstrdup(path);
    h->quiet = quiet;
    if (base) {
        h->base = base;
        look(h, 1);   /* before the first client: it gets the file's answer */
        static const struct timeval second = { 1, 0 };
        h->timer = event_new(base, -1, EV_PERSIST, on_timer, h);
        if (h->timer == NULL || event_add(h->timer, &second) != 0)
            msg_fatal("cannot watch %s: no timer", path);
    }
    return h;
}

struct hosts_file *hosts_file_from_text(const char *text, size_t len)
{
    struct hosts_file *h = xcalloc(1, sizeof(*h));
    h->path = xstrdup("(text)");
    h->fixed = 1;
    char *copy = xmalloc(len + 1);
    memcpy(copy, text, len);
    copy[len] = '\0';
    h->table = parse(copy, len);
    return h;
}

void hosts_file_free(struct hosts_file *h)
{
    if (h == NULL)
        return;
    if (h->timer)
        event_free(h->timer);
    /* waits for a read under way and installs it: freed below */
    workq_destroy(h->wq);
    table_free(h->table);
    free(h->path);
    free(h);
}

const char *hosts_file_path(const struct hosts_file *h)
{
    return h->path;
}

const char *hosts_file_name_of(struct hosts_file *h, int family, const void *addr)
{
    refresh(h);
    const struct hosts_table *t = h->table;
    const unsigned char *key = addr;
    int v6 = family == AF_INET6;
    if (v6 && IN6_IS_ADDR_V4MAPPED((const struct in6_addr *)addr)) {
        key += 12;
        v6 = 0;
    } else if (!v6 && family != AF_INET) {
        return NULL;
    }
    if (t == NULL || t->nlines == 0)
        return NULL;
    size_t len = v6 ? 16 : 4;
    const uint32_t *index = v6 ? t->by_v6 : t->by_v4;
    uint32_t mask = v6 ? t->v6_mask : t->v4_mask;
    for (uint32_t i = hash_bytes(key, len, 2166136261u) & mask; index[i]; i = (i + 1) & mask) {
        const struct hosts_line *l = &t->lines[index[i] - 1];
        if (memcmp(v6 ? l->v6 : l->v4, key, len) == 0)
            return l->name;
    }
    return NULL;
}

enum hosts_file_match hosts_file_name_has(struct hosts_file *h, const char *name, int family, const void *addr)
{
    refresh(h);
    const struct hosts_table *t = h->table;
    if (t == NULL || t->nnames == 0 || (family != AF_INET && family != AF_INET6))
        return HOSTS_NOT_LISTED;
    int v6 = family == AF_INET6;
    size_t len = v6 ? 16 : 4;
    enum hosts_file_match found = HOSTS_NOT_LISTED;
    for (uint32_t i = hash_name(name) & t->name_mask; t->by_name[i]; i = (i + 1) & t->name_mask) {
        if (strcasecmp(t->names[t->by_name[i] - 1].name, name) != 0)
            continue;
        for (uint32_t n = t->by_name[i]; n; n = t->names[n - 1].next) {
            const struct hosts_line *l = &t->lines[t->names[n - 1].line];
            if (!(v6 ? l->has_v6 : l->has_v4))
                continue;
            if (memcmp(v6 ? l->v6 : l->v4, addr, len) == 0)
                return HOSTS_MATCH;
            found = HOSTS_OTHER;
        }
        break;
    }
    return found;
}

int hosts_file_first_in_nsswitch(const char *path, int *dns, char **why, char **note)
{
    *why = *note = NULL;
    *dns = 0;
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
    if (fd < 0) {
        *why = xasprintf("%s: %s (glibc then uses \"hosts: dns [!UNAVAIL=return] files\": DNS first)", path,
                         strerror(errno));
        return 0;
    }
    char buf[65536];
    size_t got = 0;
    for (ssize_t n; got < sizeof(buf) - 1 && (n = read(fd, buf + got, sizeof(buf) - 1 - got)) != 0;) {
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            break;
        got += (size_t)n;
    }
    close(fd);
    buf[got] = '\0';
    /* glibc: "database: source [ACTION...] source...", "#" comments. */
    for (char *line = buf, *next; line && *line; line = next) {
        next = strchr(line, '\n');
        if (next)
            *next++ = '\0';
        char *hash = strchr(line, '#');
        if (hash)
            *hash = '\0';
        while (is_blank(*line))
            line++;
        if (strncmp(line, "hosts", 5) != 0)
            continue;
        char *p = line + 5;
        while (is_blank(*p))
            p++;
        if (*p != ':')
            continue;
        p++;
        char *end = p + strlen(p);
        char *first = next_field(&p, end);
        if (first == NULL || strcmp(first, "files") != 0) {
            *why = xasprintf("%s: the hosts line starts with %s, not files", path, first ? first : "nothing");
            return 0;
        }
        /* What glibc would do after files that Petrel does not: actions
         * (such as [NOTFOUND=return]) and sources other than dns. */
        char others[256] = "";
        for (char *f; (f = next_field(&p, end)) != NULL;) {
            /* nss-resolve asks systemd-resolved, which asks DNS: Petrel asks
             * dns_resolver instead (and says so in the note) */
            if (strcmp(f, "dns") == 0 || strcmp(f, "resolve") == 0)
                *dns = 1;
            if (strcmp(f, "dns") != 0 && strlen(others) + strlen(f) + 2 < sizeof(others))
                snprintf(others + strlen(others), sizeof(others) - strlen(others), "%s%s", *others ? " " : "", f);
        }
        if (*others && *dns)
            *note = xasprintf("%s: hosts: after files, \"%s\" is not followed: a client not in the hosts file is "
                              "looked up in DNS (dns_resolver)", path, others);
        else if (*others)
            *note = xasprintf("%s: hosts: after files, \"%s\" is not followed, and there is no dns: a client not "
                              "in the hosts file is unknown", path, others);
        return 1;
    }
    *why = xasprintf("%s: no hosts line (glibc then uses \"dns [!UNAVAIL=return] files\": DNS first)", path);
    return 0;
}
