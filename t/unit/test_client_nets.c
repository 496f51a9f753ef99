/*
 * Unit tests of the client address lists that the greylist, ratelimit and
 * spf modules share (modules/common/client_nets.c): what parses (Postfix's
 * brackets included), what matches (an IPv4-mapped client against IPv4
 * networks included), and the exact error text for each kind of bad item
 * (Postfix's for a network with host bits set).
 */
#include <arpa/inet.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>

#include <petrel/pool.h>

#include "../tap.h"
#include "client_nets.h"

static const char *parse_list(const char *text, petrel_pool *pool, struct client_net **list, size_t *n)
{
    *list = NULL;
    *n = 0;
    return client_nets_parse("test_clients", text, pool, list, n);
}

/* One network as a list of one: client_nets_match parses the address. */
static int in_net(const struct client_net *net, const char *addr)
{
    return client_nets_match(net, 1, addr);
}

int main(void)
{
    petrel_pool *pool = petrel_pool_create(4096);
    struct client_net net;

    ok(client_net_parse("192.0.2.1", &net) == 0 && net.bits == 32, "a bare IPv4 address is a /32");
    ok(client_net_parse("2001:db8::1", &net) == 0 && net.bits == 128, "a bare IPv6 address is a /128");
    ok(client_net_parse("10.0.0.0/8", &net) == 0 && net.bits == 8, "an IPv4 network");
    ok(client_net_parse("0.0.0.0/0", &net) == 0 && net.bits == 0, "/0 is every address of the family");
    ok(client_net_parse("2001:db8::/32", &net) == 0 && net.bits == 32, "an IPv6 network");
    /* Postfix's lists write IPv6 in brackets (cidr_match_parse strips them) */
    ok(client_net_parse("[::1]", &net) == 0 && net.family == AF_INET6 && net.bits == 128, "[::1]");
    ok(client_net_parse("[2001:db8::]/32", &net) == 0 && net.bits == 32, "[2001:db8::]/32");
    ok(client_net_parse("[2001:db8::/32]", &net) == 0 && net.bits == 32, "[2001:db8::/32]");
    ok(client_net_parse("[192.0.2.1]", &net) == 0 && net.family == AF_INET && net.bits == 32,
       "[192.0.2.1]: brackets around IPv4 too");
    ok(client_net_parse("[10.0.0.0]/8", &net) == 0 && net.bits == 8, "[10.0.0.0]/8");

    const char *bad[] = { "", "/24", "10.0.0.0/33", "2001:db8::/129", "10.0.0.0/", "10.0.0.0/-1", "10.0.0.0/8x",
                          "10.0.0", "example.com", "10.0.0.0/+8", "10.0.0.0/ 8",
                          "[::1", "::1]", "[]", "[]/8", "[::1]x", "[::1]]", "[::1]/", "[::1/]", "[::1/64]/64",
                          "[::1/64", "[[::1]]", "10.0.0.0/8]", "[example.com]",
                          "1111:2222:3333:4444:5555:6666:7777:8888:9999:aaaa:bbbb:cccc:dddd/64" };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        ok(client_net_parse(bad[i], &net) == -1, "refused: \"%s\"", bad[i]);

    /* Postfix refuses host bits past the prefix (cidr_match_parse) and
     * suggests the network with them cleared */
    char text[INET6_ADDRSTRLEN];
    ok(client_net_parse("10.1.2.3/8", &net) == CLIENT_NET_HOST_BITS && net.bits == 8
           && strcmp(inet_ntop(AF_INET, net.addr, text, sizeof text), "10.0.0.0") == 0,
       "10.1.2.3/8: host bits, the network is 10.0.0.0/8");
    ok(client_net_parse("1.0.0.0/0", &net) == CLIENT_NET_HOST_BITS && net.bits == 0
           && strcmp(inet_ntop(AF_INET, net.addr, text, sizeof text), "0.0.0.0") == 0,
       "1.0.0.0/0: host bits, the network is 0.0.0.0/0");
    ok(client_net_parse("[2001:db8::1/64]", &net) == CLIENT_NET_HOST_BITS && net.bits == 64
           && strcmp(inet_ntop(AF_INET6, net.addr, text, sizeof text), "2001:db8::") == 0,
       "[2001:db8::1/64]: host bits, the network is 2001:db8::/64");
    const char *exact[] = { "192.0.2.128/25", "192.0.2.1/32", "10.1.2.3", "2001:db8:0:1::/64", "[2001:db8::]/32",
                            "::/0", "255.255.255.254/31" };
    for (size_t i = 0; i < sizeof exact / sizeof exact[0]; i++)
        ok(client_net_parse(exact[i], &net) == 0, "no host bits: \"%s\"", exact[i]);

    client_net_parse("192.0.2.0/25", &net);
    ok(in_net(&net, "192.0.2.127"), "192.0.2.127 is in 192.0.2.0/25");
    ok(!in_net(&net, "192.0.2.128"), "192.0.2.128 is not");
    /* Postfix turns an IPv4-mapped client address into IPv4 before any list sees it */
    ok(in_net(&net, "::ffff:192.0.2.1"), "::ffff:192.0.2.1 matches 192.0.2.0/25 as 192.0.2.1");
    ok(in_net(&net, "::FFFF:192.0.2.1"), "... in capitals too");
    ok(!in_net(&net, "::ffff:192.0.2.200"), "::ffff:192.0.2.200 does not");
    ok(!in_net(&net, "::192.0.2.1"), "an IPv4-compatible (not mapped) address does not");
    ok(!in_net(&net, "64:ff9b::192.0.2.1"), "nor a NAT64 one");
    ok(!in_net(&net, "2001:db8::1"), "an IPv6 address never matches an IPv4 network");
    ok(!in_net(&net, "not an address"), "text that is not an address never matches");
    client_net_parse("::ffff:0:0/96", &net);
    ok(!in_net(&net, "192.0.2.1"), "an IPv4 address never matches an IPv6 network");
    ok(in_net(&net, "::ffff:192.0.2.1"), "the mapped form matches ::ffff:0:0/96 as written");
    client_net_parse("[::1]", &net);
    ok(in_net(&net, "::1") && in_net(&net, "0:0:0:0:0:0:0:1"), "[::1] matches ::1 however written");
    client_net_parse("2001:db8:8000::/33", &net);
    ok(in_net(&net, "2001:db8:ffff::1"), "2001:db8:ffff::1 is in 2001:db8:8000::/33");
    ok(!in_net(&net, "2001:db8:7fff::1"), "2001:db8:7fff::1 is not");
    ok(!in_net(&net, "[2001:db8:ffff::1]"), "a client address in brackets is not an address");

    struct client_net *list;
    size_t n;
    ok(parse_list(NULL, pool, &list, &n) == NULL && n == 0, "no value: an empty list");
    ok(parse_list(" ,\t, ", pool, &list, &n) == NULL && n == 0, "only separators: an empty list");
    ok(parse_list("192.0.2.1, 10.0.0.0/8\t2001:db8::/32,,198.51.100.0/24", pool, &list, &n) == NULL && n == 4,
       "commas and white space separate items");
    ok(client_nets_match(list, n, "10.1.2.3") && client_nets_match(list, n, "2001:db8::5")
           && client_nets_match(list, n, "192.0.2.1"), "each item matches");
    ok(!client_nets_match(list, n, "192.0.2.2"), "an address in none does not");
    ok(!client_nets_match(list, n, NULL), "no client address does not");
    char many[600] = "";
    for (int i = 0; i < 20; i++)
        snprintf(many + strlen(many), sizeof many - strlen(many), "10.%d.0.0/16 ", i);
    ok(parse_list(many, pool, &list, &n) == NULL && n == 20, "a list longer than the first allocation");
    ok(client_nets_match(list, n, "10.19.1.1"), "its last item matches");

    is_str(parse_list("10.0.0.0/8, 10.0.0.0/33", pool, &list, &n),
           "test_clients: \"10.0.0.0/33\" is not an address or network", "a bad prefix length: named");
    ok(list == NULL && n == 0, "nothing is returned with an error");
    is_str(parse_list("mx.example.com 192.0.2.1", pool, &list, &n),
           "test_clients: \"mx.example.com\" is not an address or network", "a host name: named");
    is_str(parse_list("192.0.2.1 hash:/etc/postfix/clients", pool, &list, &n),
           "test_clients: \"hash:/etc/postfix/clients\" is a lookup table: this list takes addresses and networks",
           "a lookup table: refused, named");
    ok(parse_list("2001:db8::1 ::1/128 [::1]", pool, &list, &n) == NULL && n == 3,
       "IPv6 addresses are not taken for tables");
    is_str(parse_list("192.0.2.1 bad1 bad2", pool, &list, &n),
           "test_clients: \"bad1\" is not an address or network", "the first bad item is named");

    /* One parse of the client's address serves networks of both families:
     * a mapped client matches an IPv4 network after IPv6 ones, and an IPv6
     * network written in the mapped form as written. */
    ok(parse_list("2001:db8::/32 ::1 192.0.2.0/24", pool, &list, &n) == NULL && n == 3, "a list of both families");
    ok(client_nets_match(list, n, "::ffff:192.0.2.9"), "a mapped client matches its IPv4 network after IPv6 ones");
    ok(client_nets_match(list, n, "::1") && client_nets_match(list, n, "2001:db8::9"), "IPv6 clients match");
    ok(!client_nets_match(list, n, "::ffff:198.51.100.1") && !client_nets_match(list, n, "198.51.100.1"),
       "clients in none do not");
    ok(!client_nets_match(list, 0, "192.0.2.9"), "an empty list matches nothing");
    ok(parse_list("::ffff:0:0/96", pool, &list, &n) == NULL && client_nets_match(list, n, "::ffff:198.51.100.1")
           && !client_nets_match(list, n, "198.51.100.1"), "::ffff:0:0/96 matches the mapped form only");

    /* Host bits: Postfix's words (cidr_match_parse), the item without its
     * brackets, the mask as written, the prefix length as a number */
    struct {
        const char *list;
        const char *error;
    } host_bits[] = {
        { "192.0.2.0/24 10.1.2.3/8", "\"10.1.2.3/8\", perhaps you should use \"10.0.0.0/8\" instead" },
        { "192.0.2.1/24", "\"192.0.2.1/24\", perhaps you should use \"192.0.2.0/24\" instead" },
        { "1.0.0.0/0", "\"1.0.0.0/0\", perhaps you should use \"0.0.0.0/0\" instead" },
        { "10.1.2.3/08", "\"10.1.2.3/08\", perhaps you should use \"10.0.0.0/8\" instead" },
        { "2001:db8::1/64", "\"2001:db8::1/64\", perhaps you should use \"2001:db8::/64\" instead" },
        { "[2001:db8::1]/64", "\"2001:db8::1/64\", perhaps you should use \"2001:db8::/64\" instead" },
        { "[2001:db8::1/64]", "\"2001:db8::1/64\", perhaps you should use \"2001:db8::/64\" instead" },
        { "[10.1.2.3]/8", "\"10.1.2.3/8\", perhaps you should use \"10.0.0.0/8\" instead" },
        { "::ffff:10.1.2.3/104", "\"::ffff:10.1.2.3/104\", perhaps you should use \"::ffff:10.0.0.0/104\" instead" },
        { "1::/0", "\"1::/0\", perhaps you should use \"::/0\" instead" },
        { "10.1.2.3/8 bad", "\"10.1.2.3/8\", perhaps you should use \"10.0.0.0/8\" instead" },
    };
    for (size_t i = 0; i < sizeof host_bits / sizeof host_bits[0]; i++) {
        list = NULL;
        n = 0;
        is_str(parse_list(host_bits[i].list, pool, &list, &n),
               petrel_pool_printf(pool, "test_clients: non-null host address bits in %s", host_bits[i].error),
               "host bits refused: \"%s\"", host_bits[i].list);
        ok(list == NULL && n == 0, "... and nothing is returned");
    }

    petrel_pool_destroy(pool);
    return done_testing();
}
