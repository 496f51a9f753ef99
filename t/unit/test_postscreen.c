/*
 * postscreen's pure parts: the PROXY protocol parser (core/mail/haproxy.c)
 * with Postfix's error texts, postscreen_dnsbl_sites and its filters, DNSBL
 * query names, the cache entry format and its TTL rules, the delay format
 * of the log lines, and Postfix's escape() for quoted client bytes.
 */
#include "config.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "../tap.h"
#include "lib/escape.h"
#include "mail/haproxy.h"
#include "smtpd/psc.h"

static const unsigned char v2sig[12] = { '\r', '\n', '\r', '\n', 0, '\r', '\n', 'Q', 'U', 'I', 'T', '\n' };

static size_t v2(unsigned char *out, int ver_cmd, int fam, const unsigned char *body, size_t blen)
{
    memcpy(out, v2sig, 12);
    out[12] = (unsigned char)ver_cmd;
    out[13] = (unsigned char)fam;
    out[14] = (unsigned char)(blen >> 8);
    out[15] = (unsigned char)blen;
    if (blen)   /* body may be NULL for an empty one: memcpy's arguments must be valid even for 0 bytes */
        memcpy(out + 16, body, blen);
    return 16 + blen;
}

static const char *parse_error(const char *text, int families)
{
    struct haproxy_endpoints ep;
    const char *error = NULL;
    ssize_t n = haproxy_parse((const unsigned char *)text, strlen(text), families, &ep, &error);
    return n < 0 ? error : n == 0 ? "(incomplete)" : "(ok)";
}

static void test_haproxy(void)
{
    const int all = HAPROXY_FAMILY_IPV4 | HAPROXY_FAMILY_IPV6;
    struct haproxy_endpoints ep;
    const char *error = NULL;
    const char *line = "PROXY TCP4 192.0.2.1 198.51.100.2 34567 25\r\nEHLO x\r\n";
    ssize_t n = haproxy_parse((const unsigned char *)line, strlen(line), all, &ep, &error);
    is_int(n, 44, "v1: the header's length, and not a byte of what follows");
    is_str(ep.client_addr, "192.0.2.1", "v1 client address");
    is_str(ep.client_port, "34567", "v1 client port");
    is_str(ep.server_addr, "198.51.100.2", "v1 server address");
    is_str(ep.server_port, "25", "v1 server port");
    ok(!ep.local, "v1 is always proxied");
    is_int(haproxy_parse((const unsigned char *)line, 20, all, &ep, &error), 0, "v1 cut short: read more");
    is_int(haproxy_parse((const unsigned char *)"PRO", 3, all, &ep, &error), 0, "a prefix of PROXY: read more");

    line = "PROXY TCP6 2001:DB8:0:0::1 2001:db8::2 1 2\r\n";
    ok(haproxy_parse((const unsigned char *)line, strlen(line), all, &ep, &error) > 0, "v1 TCP6");
    is_str(ep.client_addr, "2001:db8::1", "IPv6 printed in canonical form");
    line = "PROXY TCP6 ::ffff:192.0.2.7 ::1 1 2\r\n";
    ok(haproxy_parse((const unsigned char *)line, strlen(line), all, &ep, &error) > 0, "v1 IPv4-mapped");
    is_str(ep.client_addr, "192.0.2.7", "IPv4-mapped IPv6 becomes IPv4");
    line = "PROXY  TCP4  10.0.0.1 10.0.0.2 5 6\n";
    ok(haproxy_parse((const unsigned char *)line, strlen(line), all, &ep, &error) > 0,
       "v1: extra spaces and a bare LF, as Postfix tokenizes");

    is_str(parse_error("PROXY UNKNOWN\r\n", all), "bad or missing protocol type", "UNKNOWN is refused");
    is_str(parse_error("PROXY TCP6 192.0.2.1 192.0.2.2 1 2\r\n", all), "bad or missing client address",
           "TCP6 with IPv4 addresses");
    is_str(parse_error("PROXY TCP4 192.0.2.1 192.0.2.2 1 2\r\n", HAPROXY_FAMILY_IPV6),
           "bad or missing protocol type", "TCP4 when inet_protocols has no ipv4");
    is_str(parse_error("PROXY TCP4 192.0.2.1 1\r\n", all), "bad or missing server address", "missing server");
    is_str(parse_error("PROXY TCP4 192.0.2.1 192.0.2.2 01 2\r\n", all), "bad or missing client port",
           "leading zero in a port");
    is_str(parse_error("PROXY TCP4 192.0.2.1 192.0.2.2 1 65536\r\n", all), "bad or missing server port",
           "port above 65535");
    is_str(parse_error("PROXY TCP4 192.0.2.1 192.0.2.2 1\r\n", all), "bad or missing server port", "missing port");
    is_str(parse_error("PROXY TCP4 300.0.2.1 192.0.2.2 1 2\r\n", all), "bad or missing client address",
           "not an address");
    is_str(parse_error("EHLO client.example\r\n", all), "unrecognized protocol header", "SMTP instead of a header");
    char nul[] = "PROXY TCP4 1.2.3.4\0 5.6.7.8 1 2\r\n";
    n = haproxy_parse((const unsigned char *)nul, sizeof(nul) - 1, all, &ep, &error);
    ok(n < 0 && strcmp(error, "missing protocol header terminator") == 0, "a NUL in a v1 line");
    char longline[700];
    memset(longline, 'x', sizeof(longline));
    memcpy(longline, "PROXY ", 6);
    n = haproxy_parse((const unsigned char *)longline, sizeof(longline), all, &ep, &error);
    ok(n < 0 && strcmp(error, "missing protocol header terminator") == 0,
       "no line end within 536 bytes: refused, not read on");

    unsigned char buf[600];
    unsigned char tcp4[12] = { 192, 0, 2, 1, 198, 51, 100, 2, 0x87, 0x07, 0, 25 };
    size_t len = v2(buf, 0x21, 0x11, tcp4, sizeof(tcp4));
    n = haproxy_parse(buf, len, all, &ep, &error);
    is_int(n, 28, "v2 TCP4 length");
    is_str(ep.client_addr, "192.0.2.1", "v2 client address");
    is_str(ep.client_port, "34567", "v2 client port");
    is_str(ep.server_port, "25", "v2 server port");
    is_int(haproxy_parse(buf, 15, all, &ep, &error), 0, "v2 before its length: read more");
    is_int(haproxy_parse(buf, 27, all, &ep, &error), 0, "v2 before its last byte: read more");
    unsigned char tlv[12 + 7];
    memcpy(tlv, tcp4, 12);
    memcpy(tlv + 12, "\x04\x00\x04" "abcd", 7);
    len = v2(buf, 0x21, 0x11, tlv, sizeof(tlv));
    is_int(haproxy_parse(buf, len, all, &ep, &error), 35, "v2 TLVs are skipped, counted in the length");
    len = v2(buf, 0x20, 0x00, NULL, 0);
    n = haproxy_parse(buf, len, all, &ep, &error);
    ok(n == 16 && ep.local, "v2 LOCAL: not proxied (a health check)");
    unsigned char tcp6[36];
    memset(tcp6, 0, sizeof(tcp6));
    tcp6[15] = 1;
    tcp6[31] = 2;
    tcp6[33] = 1;
    tcp6[35] = 25;
    len = v2(buf, 0x21, 0x21, tcp6, sizeof(tcp6));
    ok(haproxy_parse(buf, len, all, &ep, &error) == 52 && strcmp(ep.client_addr, "::1") == 0, "v2 TCP6");
    n = haproxy_parse(buf, len, HAPROXY_FAMILY_IPV4, &ep, &error);
    ok(n < 0 && strcmp(error, "Postfix IPv6 support is disabled") == 0, "v2 TCP6 without ipv6");
    len = v2(buf, 0x21, 0x11, tcp4, 4);
    n = haproxy_parse(buf, len, all, &ep, &error);
    ok(n < 0 && strcmp(error, "short address field") == 0, "v2 address field too short");
    unsigned char unix_addr[216] = { 0 };
    len = v2(buf, 0x21, 0x31, unix_addr, sizeof(unix_addr));
    n = haproxy_parse(buf, len, all, &ep, &error);
    ok(n < 0 && strcmp(error, "unsupported network protocol") == 0, "v2 AF_UNIX");
    len = v2(buf, 0x11, 0x11, tcp4, sizeof(tcp4));
    n = haproxy_parse(buf, len, all, &ep, &error);
    ok(n < 0 && strcmp(error, "unrecognized protocol version") == 0, "v2 version 1 byte");
    len = v2(buf, 0x22, 0x11, tcp4, sizeof(tcp4));
    n = haproxy_parse(buf, len, all, &ep, &error);
    ok(n < 0 && strcmp(error, "bad command in proxy header") == 0, "v2 unknown command");
    memcpy(buf, v2sig, 12);
    buf[12] = 0x21;
    buf[13] = 0x11;
    buf[14] = 0xff;
    buf[15] = 0xff;
    n = haproxy_parse(buf, 16, all, &ep, &error);
    ok(n < 0 && strcmp(error, "short version 2 protocol header") == 0,
       "v2 claiming 65535 bytes: refused at once, never waited for");
}

static void test_dnsbl_sites(void)
{
    petrel_pool *pool = petrel_pool_create(4096);
    const char *error = NULL;
    const char *items[] = { "zen.example=127.0.0.[2..11]*3", "bl.example", "Zen.Example=127.0.0.4*-1",
                            "wl.example=127.0.[0..255].[1;3]*-2", NULL };
    struct psc_dnsbl_list *list = psc_dnsbl_parse(items, pool, &error);
    ok(list != NULL, "postscreen_dnsbl_sites parses");
    if (list) {
        is_int(list->ndomains, 3, "a list named twice is asked once");
        is_str(list->domains[0].name, "zen.example", "domain lower-cased");
        is_int(list->domains[0].nsites, 2, "with both (filter, weight) pairs");
        is_int(list->domains[0].sites[0].weight, 3, "weight *3");
        is_int(list->domains[0].sites[1].weight, -1, "negative weight: an allowlist");
        is_int(list->domains[1].sites[0].weight, 1, "default weight 1");
        ok(list->domains[1].sites[0].filter == NULL, "no filter: any answer");
        ok(psc_dnsbl_filter_match(list->domains[0].sites[0].filter, "127.0.0.11"), "127.0.0.11 in [2..11]");
        ok(!psc_dnsbl_filter_match(list->domains[0].sites[0].filter, "127.0.0.12"), "127.0.0.12 is not");
        ok(psc_dnsbl_filter_match(list->domains[2].sites[0].filter, "127.0.200.3"), "[1;3] takes 3");
        ok(!psc_dnsbl_filter_match(list->domains[2].sites[0].filter, "127.0.200.2"), "and not 2");
        ok(!psc_dnsbl_filter_match(list->domains[0].sites[0].filter, "not-an-address"), "text never matches");
    }
    const char *bad[][2] = {
        { "bl.example=127.0.0.[2..]", "bad DNSBL filter syntax in \"bl.example=127.0.0.[2..]\": bad filter "
                                      "\"127.0.0.[2..]\": bad range in [...]" },
        { "bl.example*x", "bad DNSBL weight factor \"x\" in \"bl.example*x\"" },
        { "bl..example", "bad DNSBL domain name \"bl..example\" in \"bl..example\"" },
        { "bl.example=127.0.0", "bad DNSBL filter syntax in \"bl.example=127.0.0\": bad filter \"127.0.0\": "
                                "expected four fields separated by \".\"" },
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        const char *one[] = { bad[i][0], NULL };
        error = NULL;
        ok(psc_dnsbl_parse(one, pool, &error) == NULL, "refused: %s", bad[i][0]);
        is_str(error, bad[i][1], "with the reason");
    }
    char name[300];
    ok(psc_dnsbl_query_name("192.0.2.1", "zen.example", name, sizeof(name)) == 0 &&
           strcmp(name, "1.2.0.192.zen.example") == 0, "IPv4 query: reversed octets");
    ok(psc_dnsbl_query_name("2001:db8::1", "bl.example", name, sizeof(name)) == 0 &&
           strcmp(name, "1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.bl.example") == 0,
       "IPv6 query: 32 nibbles (RFC 5782)");
    ok(psc_dnsbl_query_name("nonsense", "bl.example", name, sizeof(name)) != 0, "not an address: no query");
    petrel_pool_destroy(pool);
}

static void test_cache_entries(void)
{
    struct psc_settings ps;
    memset(&ps, 0, sizeof(ps));
    ps.greet_banner = "mx ESMTP";
    ps.pipelining_enable = 1;
    ps.cache_retention = 7 * 86400;
    struct psc_session s;
    memset(&s, 0, sizeof(s));
    s.ps = &ps;
    psc_new_tests(&s);
    ok(s.flags & PSC_F_NEW, "a new client is NEW");
    ok((s.flags & PSC_F(PSC_T_PREGR, PSC_K_TODO)) && (s.flags & PSC_F(PSC_T_PIPEL, PSC_K_TODO)),
       "enabled tests are to do");
    ok(!(s.flags & PSC_F(PSC_T_DNSBL, PSC_K_TODO)) && !(s.flags & PSC_F(PSC_T_BARLF, PSC_K_TODO)),
       "disabled tests are not");
    s.expire[PSC_T_PREGR] = 2000;
    s.expire[PSC_T_PIPEL] = 5000;
    char value[128];
    psc_print_tests(&s, value, sizeof(value));
    is_str(value, "2000;1;5000;1;1", "Postfix's entry: disabled tests stored as 1, not as never passed");
    psc_parse_tests(&s, value, 1000);
    ok((s.flags & PSC_MASK_ANY_TODO) == 0, "before every expiry nothing is to do: PASS OLD");
    ok(!(s.flags & PSC_F_NEW), "and the client is not new");
    psc_parse_tests(&s, value, 3000);
    ok((s.flags & PSC_MASK_ANY_TODO) == PSC_F(PSC_T_PREGR, PSC_K_TODO), "after the pregreet TTL: that test again");
    psc_parse_tests(&s, "2000;1", 1000);
    is_int(s.expire[PSC_T_PIPEL], PSC_STAMP_DISABLED, "an old entry with fewer fields: missing tests disabled");
    ok((s.flags & PSC_F(PSC_T_PIPEL, PSC_K_TODO)) != 0, "so an enabled one is to do");
    psc_parse_tests(&s, "junk;;x", 1000);
    is_int(s.expire[PSC_T_PREGR], PSC_STAMP_DISABLED, "garbage reads as disabled, never as a pass");
    ok(psc_cache_keep("2000;1;5000;1;1", 2000 + 7 * 86400, &ps), "kept until an enabled test expired retention ago");
    ok(!psc_cache_keep("2000;1;5000;1;1", 2001 + 7 * 86400, &ps), "then removed");
    ok(!psc_cache_keep("9999999999;1;0;1;1", 1700000000, &ps),
       "an entry with a never-passed enabled test is removed (Postfix's validator)");
}

/* postscreen_cache_map: which Postfix specs name our LMDB file, and the
 * exact refusals of the others. */
static void test_cache_spec(void)
{
    static const struct {
        const char *spec, *path;
    } good[] = {
        { "btree:/var/lib/petrel/postscreen_cache", "/var/lib/petrel/postscreen_cache.lmdb" },
        { "hash:/x/c", "/x/c.lmdb" },
        { "lmdb:/x/c", "/x/c.lmdb" },
        { "proxy:btree:/var/lib/postfix/psc_cache", "/var/lib/postfix/psc_cache.lmdb" },
        { "BTREE:/x/c", "/x/c.lmdb" },
    };
    for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
        char *path = NULL, *error = NULL;
        int rc = psc_cache_spec(good[i].spec, &path, &error);
        is_int(rc, 0, "%s is kept", good[i].spec);
        is_str(path ? path : "", good[i].path, "in %s", good[i].path);
        free(path);
        free(error);
    }
    static const struct {
        const char *spec, *error;
    } bad[] = {
        { "memcache:127.0.0.1:11211",
          "type \"memcache\" is not supported for the postscreen cache (use btree:, hash: or lmdb:, an LMDB file "
          "every smtpd worker shares)" },
        { "proxy:memcache:x", "type \"memcache\" is not supported for the postscreen cache (use btree:, hash: or "
          "lmdb:, an LMDB file every smtpd worker shares)" },
        { "btree:postscreen_cache", "\"btree:postscreen_cache\": the cache file needs an absolute path" },
        { "/var/lib/x", "\"/var/lib/x\" is not type:name" },
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        char *path = NULL, *error = NULL;
        int rc = psc_cache_spec(bad[i].spec, &path, &error);
        is_int(rc, -1, "%s is refused", bad[i].spec);
        is_str(error ? error : "", bad[i].error, "with the reason");
        free(path);
        free(error);
    }
}

/* postscreen_allowlist_interfaces: the first match decides. */
static void test_interfaces(void)
{
    petrel_pool *pool = petrel_pool_create(1024);
    struct psc_iface_rule *r = NULL;
    size_t n = 0;
    const char *bad = NULL;
    const char *backup_mx[] = { "!192.0.2.8", "static:all", NULL };
    ok(psc_interfaces_parse(backup_mx, pool, &r, &n, &bad) == 0 && n == 2, "!192.0.2.8 static:all");
    ok(!psc_interfaces_allow(r, n, "192.0.2.8"), "the backup MX address: no allowlisting");
    ok(psc_interfaces_allow(r, n, "192.0.2.9"), "any other address: static:all");
    psc_interfaces_free(r, n);
    const char *nets[] = { "!192.0.2.0/28", "192.0.2.0/24", "[2001:db8::]/32", "!!198.51.100.1", NULL };
    ok(psc_interfaces_parse(nets, pool, &r, &n, &bad) == 0 && n == 4, "networks, IPv6, a double negation");
    ok(!psc_interfaces_allow(r, n, "192.0.2.3"), "inside the negated network first: no");
    ok(psc_interfaces_allow(r, n, "192.0.2.200"), "the next network: yes");
    ok(psc_interfaces_allow(r, n, "2001:db8::25"), "IPv6");
    ok(psc_interfaces_allow(r, n, "198.51.100.1"), "!! is no negation");
    ok(!psc_interfaces_allow(r, n, "203.0.113.1"), "no match: no allowlisting, as in Postfix");
    psc_interfaces_free(r, n);
    const char *empty[] = { NULL };
    ok(psc_interfaces_parse(empty, pool, &r, &n, &bad) == 0 && !psc_interfaces_allow(r, n, "192.0.2.1"),
       "an empty list allows no address");
    const char *table[] = { "192.0.2.1", "hash:/etc/postfix/ifaces", "static:all", NULL };
    bad = NULL;
    ok(psc_interfaces_parse(table, pool, &r, &n, &bad) == -1, "a table is refused");
    is_str(bad ? bad : "", "hash:/etc/postfix/ifaces", "naming it");
    psc_interfaces_free(r, n);
    const char *bare[] = { "!", NULL };
    ok(psc_interfaces_parse(bare, pool, &r, &n, &bad) == -1, "a lone ! is refused");
    psc_interfaces_free(r, n);
    petrel_pool_destroy(pool);
}

static void test_formats(void)
{
    char out[32];
    struct { long sec, usec; const char *want; } cases[] = {
        { 0, 0, "0" }, { 0, 4000, "0" }, { 0, 100000, "0.1" }, { 0, 123456, "0.12" }, { 0, 9000, "0.01" },
        { 1, 234567, "1.2" }, { 6, 0, "6" }, { 12, 600000, "13" }, { 0, 999999, "1" },
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        psc_format_tv(cases[i].sec, cases[i].usec, out, sizeof(out));
        is_str(out, cases[i].want, "%ld.%06ld s is logged as Postfix logs it", cases[i].sec, cases[i].usec);
    }
    char esc[64];
    text_escape("EHLO x\r\n\\\x01\xff", 11, esc, sizeof(esc));
    is_str(esc, "EHLO x\\r\\n\\\\\\001\\377", "escape(): names, doubled backslash, octal");
    text_escape("abcdef", 6, esc, 4);
    is_str(esc, "abc", "escape() stops within its buffer");
}

int main(void)
{
    test_haproxy();
    test_dnsbl_sites();
    test_cache_entries();
    test_cache_spec();
    test_interfaces();
    test_formats();
    return done_testing();
}
