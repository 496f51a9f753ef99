/*
 * Fuzz target for the database tables' query expansion
 * (modules/common/table_config.c) with the ldap module's escaping
 * (modules/ldap/ldap_escape.c): the path by which a key from the network
 * (an envelope address, a client name) enters an LDAP filter or DN. Byte 0
 * picks the template; the rest, cut at the first NUL (keys are C strings),
 * is the key. Besides crashes and sanitizer reports it checks the
 * promises rule 1 rests on:
 *
 * - the expansion with escaping says "skip" exactly when the one without
 *   does (escaping never changes which keys are looked up);
 * - every backslash in the output starts a \XX escape (two hex digits:
 *   the templates have no backslash of their own);
 * - the output has exactly as many unescaped special characters (filter:
 *   "(", ")", "*", "\"; DN: "\", ",", "+", "=", ";", "<", ">", '"', "#",
 *   space) as the template itself: the key adds none;
 * - unescaping the output gives the unescaped expansion back, byte for
 *   byte: the key is data, all of it and nothing else.
 *
 * make check builds it with t/fuzz/replay_main.c and replays
 * t/fuzz/corpus/table_expand; `make fuzz` runs it with libFuzzer.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "ldap_escape.h"
#include "table_config.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check(int cond)
{
    if (!cond)
        abort();
}

static const struct {
    const char *format;
    int dn;
} templates[] = {
    { "(mailLocalAddress=%s)", 0 },
    { "(&(uid=%u)(|(mail=%s)(mail=%u@%d))(dc=%1)(dc=%2))", 0 },
    { "(&(objectClass=*)(cn=%s*)(x=%%))", 0 },
    { "uid=%u, ou=%d, dc=example, dc=test", 1 },
    { "dc=%3+dc=%2,dc=%1", 1 },
};

static int special(char c, int dn)
{
    return strchr(dn ? "\\,+=;<>\"# " : "()*\\", c) != NULL;
}

static int hexval(char c)
{
    return c >= '0' && c <= '9' ? c - '0' : c >= 'A' && c <= 'F' ? c - 'A' + 10 : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

/* Counts unescaped special characters; unescapes into out (when set).
 * Returns -1 for a backslash that does not start \XX. */
static long scan(const char *s, int dn, struct table_buffer *out)
{
    long count = 0;
    for (const char *p = s; *p; p++) {
        if (*p == '\\') {
            int hi = hexval(p[1]), lo = hi >= 0 ? hexval(p[2]) : -1;
            if (hi < 0 || lo < 0)
                return -1;
            char c = (char)(hi << 4 | lo);
            if (out)
                table_buffer_put(out, &c, 1);
            p += 2;
            continue;
        }
        if (special(*p, dn))
            count++;
        if (out)
            table_buffer_put(out, p, 1);
    }
    return count;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1 || size > 4096)
        return 0;
    size_t which = data[0] % (sizeof(templates) / sizeof(templates[0]));
    const char *format = templates[which].format;
    int dn = templates[which].dn;
    char *key = malloc(size);
    if (key == NULL)
        abort();
    memcpy(key, data + 1, size - 1);
    key[size - 1] = '\0';

    struct table_template tpl = { 0 };
    char bad = 0;
    check(table_template_parse(&tpl, format, 1, &bad) > 0);
    struct table_buffer escaped = { 0 }, plain = { 0 };
    int e = table_template_expand(&tpl, format, key, NULL, dn ? ldap_escape_dn : ldap_escape_filter, NULL, &escaped);
    int p = table_template_expand(&tpl, format, key, NULL, NULL, NULL, &plain);
    check(e == p);
    if (e) {
        /* The template's own specials: its expansion for a key that has none. */
        struct table_buffer shape = { 0 };
        check(table_template_expand(&tpl, format, "a@b.c.d.e", NULL, NULL, NULL, &shape) == 1);
        long template_specials = scan(shape.data, dn, NULL);
        check(template_specials >= 0);
        struct table_buffer unescaped = { 0 };
        table_buffer_put(&unescaped, "", 0);
        long count = scan(escaped.data, dn, &unescaped);
        check(count == template_specials);
        check(unescaped.len == plain.len && memcmp(unescaped.data, plain.data, plain.len) == 0);
        free(shape.data);
        free(unescaped.data);
    }
    free(escaped.data);
    free(plain.data);
    free(key);
    return 0;
}
