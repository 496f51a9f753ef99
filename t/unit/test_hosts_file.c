/* Unit tests for core/lib/hosts_file.c. The expected answers are glibc
 * 2.36's (Debian 12): getnameinfo(NI_NAMEREQD) and getaddrinfo() with this
 * same file bind-mounted over /etc/hosts and "hosts: files" in
 * nsswitch.conf (a mount namespace: unshare -m; mount --bind). */
#include "config.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <event2/event.h>

#include "lib/hosts_file.h"
#include "../tap.h"

static const char *const HOSTS =
    "# comment line\n"
    "127.0.0.7 First.Example.test  alias1  ALIAS2   # trailing comment\n"
    "127.0.0.7 second.example.test\n"
    "127.0.0.8\tfirst.example.test\n"
    "   127.0.0.9 third.example.test#nospace\n"
    "::1 six-loop.example.test\n"
    "fe80::1%lo scoped.example.test\n"
    "2001:db8::5 v6.example.test v6alias\n"
    "::ffff:127.0.0.10 mapped.example.test\n"
    "127.0.0.11 bad_name.example.test\n"
    "127.0.0.12\n"
    "127.0.0.13 #onlycomment\n"
    "127.0.0.14 trail.example.test.\n"
    "2001:db8::5 v6second.example.test\n"
    "127.0.0.15 v6.example.test\n"
    "127.1 short.example.test\n"
    "0127.0.0.20 octal.example.test\n"
    "127.0.0.21\tTab.Example.Test\tTabAlias\r\n"
    "127.0.0.1 localhost\n"
    "127.0.0.30 last.example.test";   /* no final newline */

static void write_bytes(const char *path, const char *bytes, size_t len)
{
    FILE *f = fopen(path, "w");
    fwrite(bytes, 1, len, f);
    fclose(f);
}

static void write_file(const char *path, const char *text)
{
    write_bytes(path, text, strlen(text));
}

/* What stderr (the log) gets while fn runs, malloc'd. */
static char *log_of(void (*fn)(void *), void *arg)
{
    char tmp[] = "/tmp/test_hosts_file_log.XXXXXX";
    int fd = mkstemp(tmp);
    int saved = dup(2);
    dup2(fd, 2);
    fn(arg);
    dup2(saved, 2);
    close(saved);
    off_t n = lseek(fd, 0, SEEK_END);
    char *text = calloc(1, (size_t)n + 1);
    if (pread(fd, text, (size_t)n, 0) < 0)
        text[0] = '\0';
    close(fd);
    unlink(tmp);
    return text;
}

static const char *rev(struct hosts_file *h, const char *addr)
{
    unsigned char b[16];
    if (inet_pton(AF_INET, addr, b) == 1)
        return hosts_file_name_of(h, AF_INET, b);
    inet_pton(AF_INET6, addr, b);
    return hosts_file_name_of(h, AF_INET6, b);
}

static enum hosts_file_match fwd(struct hosts_file *h, const char *name, const char *addr)
{
    unsigned char b[16];
    if (inet_pton(AF_INET, addr, b) == 1)
        return hosts_file_name_has(h, name, AF_INET, b);
    inet_pton(AF_INET6, addr, b);
    return hosts_file_name_has(h, name, AF_INET6, b);
}

static const char *cut_answer;

static void rev_of_cut(void *h)
{
    cut_answer = rev(h, "127.0.0.77");
}

static struct hosts_file *created;

static void create_on_loop(void *arg)
{
    void **a = arg;
    created = hosts_file_create(a[0], a[1], 0);
}

static void create_quiet(void *arg)
{
    void **a = arg;
    created = hosts_file_create(a[0], a[1], 1);
    rev(created, "127.0.0.90");
}

/* On a loop: lookups never read the file; the loop's timer looks and a
 * thread reads, and until the new table is in the old one answers. */
static void on_loop(const char *path)
{
    struct event_base *base = event_base_new();
    write_file(path, "127.0.0.90 old.example.test\n");
    void *args[2] = { (void *)path, base };
    char *log = log_of(create_on_loop, args);
    struct hosts_file *h = created;
    is_str(rev(h, "127.0.0.90"), "old.example.test", "loop: read at creation, before the loop runs");
    is_str(log, "", "loop: nothing said of a good file");
    free(log);
    /* a new file, large enough that its parse takes a while */
    size_t len = 0, size = 4 * 1024 * 1024;
    char *big = malloc(size + 64);
    while (len < size)
        len += (size_t)sprintf(big + len, "10.%u.%u.%u filler%zu.example.test\n", (unsigned)(len >> 16) & 255,
                               (unsigned)(len >> 8) & 255, (unsigned)len & 255, len);
    len += (size_t)sprintf(big + len, "127.0.0.90 new.example.test\n");
    write_bytes(path, big, len);
    free(big);
    sleep(2);
    is_str(rev(h, "127.0.0.90"), "old.example.test", "loop: a lookup does not read the changed file");
    int turns = 0, gaps = 0;
    const char *name = "old.example.test";
    for (; turns < 1000 && strcmp(name, "new.example.test") != 0; turns++) {
        struct timeval tick = { 0, 10000 };
        event_base_loopexit(base, &tick);
        event_base_dispatch(base);
        name = rev(h, "127.0.0.90");
        if (name == NULL || (strcmp(name, "old.example.test") != 0 && strcmp(name, "new.example.test") != 0))
            gaps++;
        if (name == NULL)
            name = "";
    }
    is_str(name, "new.example.test", "loop: the new file answers once the loop ran its timer and the read");
    is_int(gaps, 0, "loop: the old file answered until then (%d turns of 10 ms), never nothing", turns);
    ok(turns > 1, "loop: the read took more than one turn (%d)", turns);
    unlink(path);
    for (int i = 0; i < 150 && rev(h, "127.0.0.90") != NULL; i++) {
        struct timeval tick = { 0, 10000 };
        event_base_loopexit(base, &tick);
        event_base_dispatch(base);
    }
    is_str(rev(h, "127.0.0.90"), NULL, "loop: the file removed, nothing listed");
    hosts_file_free(h);
    /* a quiet copy (not the first worker's) says nothing of the file */
    args[1] = NULL;
    log = log_of(create_quiet, args);
    is_str(rev(created, "127.0.0.90"), NULL, "quiet: a missing file lists nothing");
    is_str(log, "", "quiet: and says nothing of it");
    free(log);
    hosts_file_free(created);
    event_base_free(base);
}

int main(void)
{
    char dir[] = "/tmp/test_hosts_file.XXXXXX";
    if (mkdtemp(dir) == NULL)
        return 1;
    char path[256], ns[256];
    snprintf(path, sizeof(path), "%s/hosts", dir);
    snprintf(ns, sizeof(ns), "%s/nsswitch.conf", dir);
    write_file(path, HOSTS);
    struct hosts_file *h = hosts_file_create(path, NULL, 0);

    /* by address: the first line wins, its first name, case kept */
    is_str(rev(h, "127.0.0.7"), "First.Example.test", "reverse: the first line listing the address, its first name");
    is_str(rev(h, "127.0.0.8"), "first.example.test", "reverse: a tab separates fields");
    is_str(rev(h, "127.0.0.9"), "third.example.test", "reverse: # ends the name even without a space");
    is_str(rev(h, "::1"), "six-loop.example.test", "reverse: ::1 (IPv6)");
    is_str(rev(h, "127.0.0.1"), "six-loop.example.test", "reverse: an IPv4 lookup sees ::1 as 127.0.0.1, before a later 127.0.0.1 line");
    is_str(rev(h, "fe80::1"), NULL, "reverse: a scoped address line is ignored");
    is_str(rev(h, "2001:db8::5"), "v6.example.test", "reverse: IPv6, the first line");
    is_str(rev(h, "127.0.0.10"), "mapped.example.test", "reverse: an IPv4 lookup sees an IPv4-mapped line");
    is_str(rev(h, "::ffff:127.0.0.10"), "mapped.example.test", "reverse: an IPv4-mapped address is looked up as IPv4");
    is_str(rev(h, "127.0.0.11"), "bad_name.example.test", "reverse: the name as written (the caller validates it)");
    is_str(rev(h, "127.0.0.12"), "", "reverse: an address with no name is listed, with the name \"\"");
    is_str(rev(h, "127.0.0.13"), "", "reverse: an address with only a comment is listed, with no name");
    is_str(rev(h, "127.0.0.14"), "trail.example.test.", "reverse: a trailing dot is kept");
    is_str(rev(h, "127.0.0.20"), NULL, "reverse: 0127.0.0.20 is no address (inet_pton)");
    is_str(rev(h, "127.0.0.21"), "Tab.Example.Test", "reverse: fields separated by tabs, CRLF line");
    is_str(rev(h, "127.0.0.30"), "last.example.test", "reverse: a last line without a newline");
    is_str(rev(h, "127.0.0.99"), NULL, "reverse: an address no line lists");
    is_str(rev(h, "2001:db8::6"), NULL, "reverse: an IPv6 address no line lists");

    /* by name: every line naming it, the family's addresses */
    is_int(fwd(h, "first.example.test", "127.0.0.7"), HOSTS_MATCH, "forward: the first line's address");
    is_int(fwd(h, "first.example.test", "127.0.0.8"), HOSTS_MATCH, "forward: another line of the same name");
    is_int(fwd(h, "FIRST.EXAMPLE.TEST", "127.0.0.8"), HOSTS_MATCH, "forward: case is ignored");
    is_int(fwd(h, "first.example.test", "127.0.0.9"), HOSTS_OTHER, "forward: named, not with that address");
    is_int(fwd(h, "alias1", "127.0.0.7"), HOSTS_MATCH, "forward: an alias");
    is_int(fwd(h, "alias2", "127.0.0.7"), HOSTS_MATCH, "forward: an alias, case ignored");
    is_int(fwd(h, "second.example.test", "127.0.0.7"), HOSTS_MATCH, "forward: the second line's name");
    is_int(fwd(h, "first.example.test", "2001:db8::5"), HOSTS_NOT_LISTED, "forward: IPv6 lookup of an IPv4-only name: not listed (DNS)");
    is_int(fwd(h, "third.example.test#nospace", "127.0.0.9"), HOSTS_NOT_LISTED, "forward: the comment is no part of the name");
    is_int(fwd(h, "six-loop.example.test", "::1"), HOSTS_MATCH, "forward: IPv6 ::1");
    is_int(fwd(h, "six-loop.example.test", "127.0.0.1"), HOSTS_MATCH, "forward: IPv4 sees ::1 as 127.0.0.1");
    is_int(fwd(h, "scoped.example.test", "fe80::1"), HOSTS_NOT_LISTED, "forward: the scoped line is ignored");
    is_int(fwd(h, "v6alias", "2001:db8::5"), HOSTS_MATCH, "forward: an IPv6 alias");
    is_int(fwd(h, "mapped.example.test", "127.0.0.10"), HOSTS_MATCH, "forward: IPv4 sees the mapped line");
    is_int(fwd(h, "mapped.example.test", "::ffff:127.0.0.10"), HOSTS_MATCH, "forward: IPv6 sees it as written");
    is_int(fwd(h, "v6.example.test", "127.0.0.15"), HOSTS_MATCH, "forward: IPv4 lookup of a name with both families");
    is_int(fwd(h, "v6.example.test", "2001:db8::5"), HOSTS_MATCH, "forward: IPv6 lookup of the same name");
    is_int(fwd(h, "v6.example.test", "127.0.0.7"), HOSTS_OTHER, "forward: IPv4 lookup, another IPv4 address");
    is_int(fwd(h, "trail.example.test", "127.0.0.14"), HOSTS_NOT_LISTED, "forward: the trailing dot is part of the name");
    is_int(fwd(h, "localhost", "::1"), HOSTS_NOT_LISTED, "forward: an IPv6 lookup does not see 127.0.0.1");
    is_int(fwd(h, "short.example.test", "127.0.0.1"), HOSTS_NOT_LISTED, "forward: 127.1 is no address");
    is_int(fwd(h, "tabalias", "127.0.0.21"), HOSTS_MATCH, "forward: a tab-separated alias before CRLF");
    is_int(fwd(h, "nowhere.example.test", "127.0.0.7"), HOSTS_NOT_LISTED, "forward: a name no line names");

    /* a changed file is read again, at most a second later */
    write_file(path, "127.0.0.7 changed.example.test\n# longer than before, so the size differs\n");
    is_str(rev(h, "127.0.0.7"), "First.Example.test", "change: within the second, the old answer");
    sleep(2);
    is_str(rev(h, "127.0.0.7"), "changed.example.test", "change: a second later, the new file");
    is_int(fwd(h, "first.example.test", "127.0.0.8"), HOSTS_NOT_LISTED, "change: old names are gone");
    unlink(path);
    sleep(2);
    is_str(rev(h, "127.0.0.7"), NULL, "removed: nothing listed (DNS answers)");
    /* a long line is read, as glibc reads it (its buffer grows) */
    {
        size_t n = 100000;
        char *big = malloc(n + 200);
        strcpy(big, "127.0.0.40 long.example.test ");
        memset(big + 29, 'x', n);
        strcpy(big + 29 + n, " longalias\n127.0.0.41 after.example.test\n");
        write_file(path, big);
        free(big);
        sleep(2);
        is_str(rev(h, "127.0.0.40"), "long.example.test", "long line (100 kB): read, as glibc does");
        is_int(fwd(h, "longalias", "127.0.0.40"), HOSTS_MATCH, "long line: its last alias too");
        is_str(rev(h, "127.0.0.41"), "after.example.test", "long line: the next line is read");
    }
    /* a NUL ends its line (glibc parses fgets()'s line as a C string) */
    {
        static const char nul[] = "127.0.0.50 nul.example.test\0hidden.example.test\n"
                                  "127.0.0.51 after-nul.example.test\n"
                                  "\0127.0.0.52 leading-nul.example.test\n"
                                  "127.0.0.53\0 x.example.test\n"
                                  "127.0.0.54 a.example.test b.exa\0mple.test c.example.test\n"
                                  "127.0.0.55 fine.example.test\n";
        write_bytes(path, nul, sizeof(nul) - 1);
        sleep(2);
        is_str(rev(h, "127.0.0.50"), "nul.example.test", "NUL: the name before it");
        is_int(fwd(h, "hidden.example.test", "127.0.0.50"), HOSTS_NOT_LISTED, "NUL: what follows it on the line is ignored");
        is_str(rev(h, "127.0.0.51"), "after-nul.example.test", "NUL: the next line is read");
        is_str(rev(h, "127.0.0.52"), NULL, "NUL: a line starting with one is empty");
        is_str(rev(h, "127.0.0.53"), "", "NUL: right after the address, a line without a name");
        is_int(fwd(h, "b.exa", "127.0.0.54"), HOSTS_MATCH, "NUL: inside a name, the name ends there");
        is_int(fwd(h, "c.example.test", "127.0.0.54"), HOSTS_NOT_LISTED, "NUL: no alias after it");
        is_str(rev(h, "127.0.0.55"), "fine.example.test", "NUL: the last line");
    }
    /* over the size cap: read up to the last line break within it, and said */
    {
        size_t cap = (size_t)HOSTS_FILE_MAX_SIZE, len = 0;
        char *big = malloc(cap + 4096);
        static const char filler[] = "0.0.0.0 blocked.example.test\n";
        while (len + sizeof(filler) - 1 <= cap - 14) {
            memcpy(big + len, filler, sizeof(filler) - 1);
            len += sizeof(filler) - 1;
        }
        memset(big + len, '#', cap - 14 - len);   /* a comment line up to 14 bytes before the cap */
        big[cap - 15] = '\n';
        len = cap - 14;
        /* "127.0.0.77 cut" ends at the cap: the line is cut in its name */
        len += (size_t)sprintf(big + len, "127.0.0.77 cut.example.test\n127.0.0.78 past.example.test\n");
        write_bytes(path, big, len);
        free(big);
        sleep(2);
        char *log = log_of(rev_of_cut, h);
        is_str(cut_answer, NULL, "over the cap: the line the cap cuts is not read (not as \"cut\")");
        is_str(rev(h, "127.0.0.78"), NULL, "over the cap: a line past it is not read");
        is_str(rev(h, "0.0.0.0"), "blocked.example.test", "over the cap: the lines before it are read");
        ok(strstr(log, "only its first 16777202 bytes, up to the last line break within the limit, are read") != NULL,
           "over the cap: the log says how much is read: %s", log);
        free(log);
        log = log_of(rev_of_cut, h);
        is_str(log, "", "over the cap: said once per read, not at each lookup");
        free(log);
    }
    /* a FIFO at the path is never opened (an open() would block the loop
     * until a writer came): nothing listed, and the call returns */
    unlink(path);
    ok(mkfifo(path, 0600) == 0, "fifo: made");
    sleep(2);
    is_str(rev(h, "127.0.0.41"), NULL, "fifo: not read, nothing listed (DNS answers)");
    hosts_file_free(h);
    unlink(path);
    on_loop(path);

    /* nsswitch.conf */
    char *why, *note;
    int first, dns;
    write_file(ns, "passwd: files\n# hosts: dns\nhosts:          files dns\n");
    first = hosts_file_first_in_nsswitch(ns, &dns, &why, &note);
    ok(first == 1 && dns == 1 && why == NULL && note == NULL, "nsswitch: files dns");
    write_file(ns, "hosts: files mdns4_minimal [NOTFOUND=return] dns myhostname\n");
    first = hosts_file_first_in_nsswitch(ns, &dns, &why, &note);
    ok(first == 1 && dns == 1 && note && strstr(note, "\"mdns4_minimal [NOTFOUND=return] myhostname\" is not followed"),
       "nsswitch: files first, the other sources told: %s", note ? note : "(none)");
    free(note);
    write_file(ns, "hosts: files\n");
    first = hosts_file_first_in_nsswitch(ns, &dns, &why, &note);
    ok(first == 1 && dns == 0 && note == NULL, "nsswitch: files alone: no dns (the caller asks no DNS)");
    write_file(ns, "hosts: files resolve [!UNAVAIL=return] myhostname\n");
    first = hosts_file_first_in_nsswitch(ns, &dns, &why, &note);
    ok(first == 1 && dns == 1 && note && strstr(note, "\"resolve [!UNAVAIL=return] myhostname\" is not followed: a "
                                                    "client not in the hosts file is looked up in DNS"),
       "nsswitch: resolve (systemd-resolved, which asks DNS) counts as dns: %s", note ? note : "(none)");
    free(note);
    write_file(ns, "hosts: files myhostname\n");
    first = hosts_file_first_in_nsswitch(ns, &dns, &why, &note);
    ok(first == 1 && dns == 0 && note && strstr(note, "\"myhostname\" is not followed, and there is no dns: a client not "
                                                    "in the hosts file is unknown"),
       "nsswitch: files and another source, no dns: %s", note ? note : "(none)");
    free(note);
    write_file(ns, "hosts: dns files\n");
    first = hosts_file_first_in_nsswitch(ns, &dns, &why, &note);
    ok(first == 0 && why && strstr(why, "starts with dns, not files"), "nsswitch: dns first: %s", why ? why : "(none)");
    free(why);
    write_file(ns, "hosts:\tdns\n");
    first = hosts_file_first_in_nsswitch(ns, &dns, &why, &note);
    ok(first == 0 && why && strstr(why, "starts with dns"), "nsswitch: dns only: %s", why ? why : "(none)");
    free(why);
    write_file(ns, "passwd: files\n");
    first = hosts_file_first_in_nsswitch(ns, &dns, &why, &note);
    ok(first == 0 && why && strstr(why, "no hosts line"), "nsswitch: no hosts line: %s", why ? why : "(none)");
    free(why);
    unlink(ns);
    first = hosts_file_first_in_nsswitch(ns, &dns, &why, &note);
    ok(first == 0 && why && strstr(why, "No such file"), "nsswitch: no file: %s", why ? why : "(none)");
    free(why);
    rmdir(dir);
    return done_testing();
}
