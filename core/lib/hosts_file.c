/*
 * The hosts file as glibc's files backend reads it (see hosts_file.h). The
 * rules, checked against glibc 2.36's getnameinfo()/getaddrinfo() with the
 * file bind-mounted over /etc/hosts:
 *   - "#" starts a comment anywhere; fields are separated by white space;
 *     the first field is an address (inet_pton: no "127.1", no "%scope", so
 *     a scoped IPv6 line is ignored), the next the canonical name, the rest
 *     aliases. A line with an address and no name lists the address with
 *     the name "" (getnameinfo succeeds with an empty name).
 *   - by address, the first line listing it wins and gives its first name;
 *     an IPv4 lookup also sees IPv4-mapped IPv6 lines and "::1" (as
 *     127.0.0.1), an IPv6 lookup sees IPv6 lines only.
 *   - by name, every line naming it (first name or alias, ASCII case
 *     ignored, a trailing dot is part of the name) counts, with the same
 *     family rules; a name no line of that family names is not found.
 * Indexes are open-addressing hash tables rebuilt on each read; a read
 * replaces everything, so answers never mix two versions of the file.
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

#include "lib/hosts_file.h"
#include "lib/log.h"
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

struct hosts_file {
    char *path;
    /* The file as last read; everything below points into text. */
    char *text;
    struct hosts_line *lines;
    uint32_t nlines;
    struct hosts_name *names;
    uint32_t nnames;
    uint32_t *by_v4, *by_v6, *by_name;  /* index + 1; 0: empty slot */
    uint32_t line_mask, name_mask;
    /* What the file was when read: a change of any of these re-reads it. */
    int have_id;
    dev_t dev;
    ino_t ino;
    off_t size;
    struct timespec mtime, ctime;
    int failed_errno;           /* the error last logged, so it is logged once */
    int fixed;                  /* made from text (hosts_file_from_text): never re-read */
    int checked;
    double checked_at;          /* monotonic seconds of the last look at the file */
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

static void clear(struct hosts_file *h)
{
    free(h->text);
    free(h->lines);
    free(h->names);
    free(h->by_v4);
    free(h->by_v6);
    free(h->by_name);
    h->text = NULL;
    h->lines = NULL;
    h->names = NULL;
    h->by_v4 = h->by_v6 = h->by_name = NULL;
    h->nlines = h->nnames = 0;
    h->line_mask = h->name_mask = 0;
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

static void index_name(struct hosts_file *h, uint32_t ni)
{
    for (uint32_t i = hash_name(h->names[ni].name) & h->name_mask;; i = (i + 1) & h->name_mask) {
        if (h->by_name[i] == 0) {
            h->by_name[i] = ni + 1;
            return;
        }
        if (strcasecmp(h->names[h->by_name[i] - 1].name, h->names[ni].name) == 0) {
            h->names[ni].next = h->by_name[i];
            h->by_name[i] = ni + 1;
            return;
        }
    }
}

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

/* Parses h->text (len bytes, NUL-terminated); fields are cut in place. */
static void parse(struct hosts_file *h, size_t len)
{
    char *text = h->text, *end = text + len;
    /* Upper bounds first: lines, and fields (a field starts after a blank). */
    uint32_t max_lines = 1, max_names = 1;
    for (size_t i = 0; i < len; i++) {
        if (text[i] == '\n')
            max_lines++;
        if (!is_blank(text[i]) && text[i] != '\n' && (i == 0 || is_blank(text[i - 1]) || text[i - 1] == '\n'))
            max_names++;
    }
    h->lines = xcalloc(max_lines, sizeof(*h->lines));
    h->names = xcalloc(max_names, sizeof(*h->names));
    unsigned long too_long = 0, first_too_long = 0, lineno = 0;
    for (char *line = text; line < end;) {
        char *nl = memchr(line, '\n', (size_t)(end - line));
        char *stop = nl ? nl : end;
        char *next = nl ? nl + 1 : end;
        lineno++;
        if (stop - line > HOSTS_FILE_MAX_LINE) {
            if (too_long++ == 0)
                first_too_long = lineno;
            line = next;
            continue;
        }
        char *hash = memchr(line, '#', (size_t)(stop - line));
        if (hash)
            stop = hash;
        *stop = '\0';
        char *p = line;
        char *addr = next_field(&p, stop);
        struct hosts_line *l = &h->lines[h->nlines];
        if (addr == NULL || !parse_address(addr, l)) {
            memset(l, 0, sizeof(*l));
            line = next;
            continue;
        }
        l->name = "";
        for (char *name; (name = next_field(&p, stop)) != NULL;) {
            if (*l->name == '\0')
                l->name = name;
            h->names[h->nnames].name = name;
            h->names[h->nnames].line = h->nlines;
            h->nnames++;
        }
        h->nlines++;
        line = next;
    }
    if (too_long)
        msg_warn("%s: %lu line%s longer than %d bytes ignored (the first: line %lu); glibc would read %s",
                 h->path, too_long, too_long == 1 ? "" : "s", HOSTS_FILE_MAX_LINE, first_too_long,
                 too_long == 1 ? "it" : "them");
    uint32_t lsize = table_size(h->nlines), nsize = table_size(h->nnames);
    h->line_mask = lsize - 1;
    h->name_mask = nsize - 1;
    h->by_v4 = xcalloc(lsize, sizeof(uint32_t));
    h->by_v6 = xcalloc(lsize, sizeof(uint32_t));
    h->by_name = xcalloc(nsize, sizeof(uint32_t));
    for (uint32_t i = 0; i < h->nlines; i++) {
        if (h->lines[i].has_v4)
            index_address(h->by_v4, h->line_mask, h->lines, i, 0);
        if (h->lines[i].has_v6)
            index_address(h->by_v6, h->line_mask, h->lines, i, 1);
    }
    /* Newest first in each chain: order does not matter for a name's
     * addresses, only that all are there. */
    for (uint32_t i = 0; i < h->nnames; i++)
        index_name(h, i);
}

static void failed(struct hosts_file *h, const char *what, int err)
{
    if (h->failed_errno != err)
        msg_warn("cannot %s %s: %s: client names come from DNS only until it can be read", what, h->path,
                 strerror(err));
    h->failed_errno = err;
    h->have_id = 0;
    clear(h);
}

static int same_file(const struct hosts_file *h, const struct stat *st)
{
    return h->have_id && st->st_dev == h->dev && st->st_ino == h->ino && st->st_size == h->size &&
           st->st_mtim.tv_sec == h->mtime.tv_sec && st->st_mtim.tv_nsec == h->mtime.tv_nsec &&
           st->st_ctim.tv_sec == h->ctime.tv_sec && st->st_ctim.tv_nsec == h->ctime.tv_nsec;
}

/* A stat() first: the once-a-second look at an unchanged file opens
 * nothing, and a path that is not a regular file (a FIFO would block
 * open() on the worker's loop) is never opened. The file is opened
 * O_NONBLOCK all the same (it may be replaced between the two calls), and
 * what is read is identified by fstat() of the open file. */
static void load(struct hosts_file *h)
{
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
    int fd = open(h->path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
    if (fd < 0) {
        failed(h, "open", errno);
        return;
    }
    if (fstat(fd, &st) != 0) {
        failed(h, "stat", errno);
        close(fd);
        return;
    }
    if (!S_ISREG(st.st_mode)) {
        failed(h, "read (not a regular file)", EINVAL);
        close(fd);
        return;
    }
    if (same_file(h, &st)) {
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
            int err = errno;
            free(text);
            close(fd);
            failed(h, "read", err);
            return;
        }
        if (n == 0)
            break;
        got += (size_t)n;
    }
    close(fd);
    if ((off_t)want < st.st_size)
        msg_warn("%s: larger than %ld bytes: only its first %ld bytes are read", h->path, HOSTS_FILE_MAX_SIZE,
                 HOSTS_FILE_MAX_SIZE);
    text[got] = '\0';
    clear(h);
    h->text = text;
    h->failed_errno = 0;
    h->have_id = 1;
    h->dev = st.st_dev;
    h->ino = st.st_ino;
    h->size = st.st_size;
    h->mtime = st.st_mtim;
    h->ctime = st.st_ctim;
    parse(h, got);
}

/* glibc reads the file on every lookup; one look a second is close enough
 * and keeps a stat() off every connection. */
static void refresh(struct hosts_file *h)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
    double now = (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
    if (h->fixed || (h->checked && now - h->checked_at < 1.0))
        return;
    h->checked = 1;
    h->checked_at = now;
    load(h);
}

struct hosts_file *hosts_file_create(const char *path)
{
    struct hosts_file *h = xcalloc(1, sizeof(*h));
    h->path = xstrdup(path);
    return h;
}

struct hosts_file *hosts_file_from_text(const char *text, size_t len)
{
    struct hosts_file *h = xcalloc(1, sizeof(*h));
    h->path = xstrdup("(text)");
    h->fixed = 1;
    h->text = xmalloc(len + 1);
    memcpy(h->text, text, len);
    h->text[len] = '\0';
    parse(h, len);
    return h;
}

void hosts_file_free(struct hosts_file *h)
{
    if (h == NULL)
        return;
    clear(h);
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
    const unsigned char *key = addr;
    int v6 = family == AF_INET6;
    if (v6 && IN6_IS_ADDR_V4MAPPED((const struct in6_addr *)addr)) {
        key += 12;
        v6 = 0;
    } else if (!v6 && family != AF_INET) {
        return NULL;
    }
    if (h->nlines == 0)
        return NULL;
    size_t len = v6 ? 16 : 4;
    const uint32_t *table = v6 ? h->by_v6 : h->by_v4;
    for (uint32_t i = hash_bytes(key, len, 2166136261u) & h->line_mask; table[i]; i = (i + 1) & h->line_mask) {
        const struct hosts_line *l = &h->lines[table[i] - 1];
        if (memcmp(v6 ? l->v6 : l->v4, key, len) == 0)
            return l->name;
    }
    return NULL;
}

enum hosts_file_match hosts_file_name_has(struct hosts_file *h, const char *name, int family, const void *addr)
{
    refresh(h);
    if (h->nnames == 0 || (family != AF_INET && family != AF_INET6))
        return HOSTS_NOT_LISTED;
    int v6 = family == AF_INET6;
    size_t len = v6 ? 16 : 4;
    enum hosts_file_match found = HOSTS_NOT_LISTED;
    for (uint32_t i = hash_name(name) & h->name_mask; h->by_name[i]; i = (i + 1) & h->name_mask) {
        if (strcasecmp(h->names[h->by_name[i] - 1].name, name) != 0)
            continue;
        for (uint32_t n = h->by_name[i]; n; n = h->names[n - 1].next) {
            const struct hosts_line *l = &h->lines[h->names[n - 1].line];
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

int hosts_file_first_in_nsswitch(const char *path, char **why, char **note)
{
    *why = *note = NULL;
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
        int dns = 0;
        for (char *f; (f = next_field(&p, end)) != NULL;)
            if (strcmp(f, "dns") == 0)
                dns = 1;
            else if (strlen(others) + strlen(f) + 2 < sizeof(others))
                snprintf(others + strlen(others), sizeof(others) - strlen(others), "%s%s", *others ? " " : "", f);
        if (*others)
            *note = xasprintf("%s: hosts: after files, \"%s\" is not followed: a client not in the hosts file is "
                              "looked up in DNS (dns_resolver)", path, others);
        else if (!dns)
            /* glibc would never ask DNS (Postfix: such a client is unknown) */
            *note = xasprintf("%s: hosts: no dns after files, but a client not in the hosts file is looked up in "
                              "DNS (dns_resolver) all the same", path);
        return 1;
    }
    *why = xasprintf("%s: no hosts line (glibc then uses \"dns [!UNAVAIL=return] files\": DNS first)", path);
    return 0;
}
