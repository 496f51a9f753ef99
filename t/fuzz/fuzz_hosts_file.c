/*
 * Fuzz target for the hosts file parser (core/lib/hosts_file.c), which
 * smtpd's client-name lookup reads: /etc/hosts is the administrator's, not
 * the network's, but it is read by every smtpd worker, so its parser is
 * bounded and fuzzed like the others. Besides crashes and sanitizer reports
 * it checks invariants: a name found by address holds no blank, "#" or
 * newline; the name a line gives for an address resolves back to that
 * address (the line itself names it), for IPv4 and IPv6 alike; a lookup of
 * a name no line can hold (it has a blank) finds nothing; a NUL ends its
 * line (glibc's rule): the input with what follows each line's first NUL
 * taken out gives the same names.
 *
 * make check builds it with t/fuzz/replay_main.c and replays
 * t/fuzz/corpus/hosts_file; `make fuzz FUZZ_TARGETS=hosts_file` runs it with
 * libFuzzer (doc/testing.md).
 */
#include "config.h"

#include <netinet/in.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "lib/hosts_file.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check(int cond)
{
    if (!cond)
        abort();
}

static void check_name(struct hosts_file *h, int family, const unsigned char *addr)
{
    const char *name = hosts_file_name_of(h, family, addr);
    if (name == NULL || *name == '\0')
        return;
    check(strpbrk(name, " \t\r\n\v\f#") == NULL);
    char *copy = strdup(name);   /* the name as a caller holds it, apart from the file's text */
    check(copy != NULL);
    /* An IPv4-mapped address is looked up as IPv4, and so must be its name. */
    if (family == AF_INET6 && IN6_IS_ADDR_V4MAPPED((const struct in6_addr *)addr))
        check(hosts_file_name_has(h, copy, AF_INET, addr + 12) == HOSTS_MATCH);
    else
        check(hosts_file_name_has(h, copy, family, addr) == HOSTS_MATCH);
    free(copy);
}

/* Both give the same name (or none) for the address. */
static void check_same(struct hosts_file *a, struct hosts_file *b, int family, const unsigned char *addr)
{
    const char *x = hosts_file_name_of(a, family, addr), *y = hosts_file_name_of(b, family, addr);
    check((x == NULL) == (y == NULL));
    check(x == NULL || strcmp(x, y) == 0);
}

/* The input with each line cut at its first NUL, malloc'd (*len: its length). */
static char *cut_at_nul(const uint8_t *data, size_t size, size_t *len)
{
    char *out = malloc(size + 1);
    size_t n = 0;
    int skipping = 0;
    for (size_t i = 0; i < size; i++) {
        if (data[i] == '\n')
            skipping = 0;
        else if (data[i] == '\0')
            skipping = 1;
        if (!skipping)
            out[n++] = (char)data[i];
    }
    *len = n;
    return out;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct hosts_file *h = hosts_file_from_text((const char *)data, size);
    /* Addresses to ask: the input's first bytes, and the usual suspects. */
    unsigned char v4[4] = { 127, 0, 0, 1 }, v6[16] = { 0 };
    v6[15] = 1;
    check_name(h, AF_INET, v4);
    check_name(h, AF_INET6, v6);
    if (size >= 4) {
        memcpy(v4, data, 4);
        check_name(h, AF_INET, v4);
    }
    if (size >= 16) {
        memcpy(v6, data, 16);
        check_name(h, AF_INET6, v6);
    }
    static const unsigned char mapped[16] = { 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 10, 0, 0, 1 };
    check_name(h, AF_INET6, mapped);
    check(hosts_file_name_has(h, "a b", AF_INET, v4) == HOSTS_NOT_LISTED);
    if (memchr(data, 0, size)) {
        size_t len;
        char *cut = cut_at_nul(data, size, &len);
        struct hosts_file *c = hosts_file_from_text(cut, len);
        check_same(h, c, AF_INET, v4);
        check_same(h, c, AF_INET6, v6);
        check_same(h, c, AF_INET6, mapped);
        hosts_file_free(c);
        free(cut);
    }
    hosts_file_free(h);
    return 0;
}
