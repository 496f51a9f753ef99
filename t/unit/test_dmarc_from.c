/*
 * Unit tests of the dmarc module's From header parser
 * (modules/dmarc/dmarc_from.c): address lists, display names, comments,
 * groups, several domains, and bad input that must never become a domain.
 */
#include <stdio.h>
#include <string.h>

#include "../tap.h"
#include "dmarc_from.h"

/* "N:domain,domain" (N = addresses) or "invalid". */
static const char *parse(const char *value)
{
    static char out[1200];
    struct dmarc_from f;
    memset(&f, 0, sizeof(f));
    dmarc_from_parse(&f, value);
    if (f.invalid)
        return "invalid";
    size_t o = (size_t)snprintf(out, sizeof(out), "%d:", f.addresses);
    for (int i = 0; i < f.ndomains && i < DMARC_FROM_MAX_DOMAINS; i++)
        o += (size_t)snprintf(out + o, sizeof(out) - o, "%s%s", i ? "," : "", f.domains[i]);
    if (f.ndomains > DMARC_FROM_MAX_DOMAINS)
        snprintf(out + o, sizeof(out) - o, ",...");
    return out;
}

int main(void)
{
    is_str(parse("alice@example.com"), "1:example.com", "a bare address");
    is_str(parse("Alice <alice@Example.COM>"), "1:example.com", "a name and an angle address, lower-cased");
    is_str(parse("\"Bob, the <boss@evil.example>\" <bob@example.org>"), "1:example.org",
           "a quoted display name with a comma and an address inside is skipped");
    is_str(parse("(boss@evil.example) carol@example.net (work)"), "1:example.net", "comments are skipped");
    is_str(parse("a@example.com, b@EXAMPLE.com"), "2:example.com", "two addresses, one domain");
    is_str(parse("a@example.com, b@example.org"), "2:example.com,example.org", "two domains");
    is_str(parse("friends: a@example.com, b@example.com;"), "2:example.com", "a group's members");
    is_str(parse("undisclosed-recipients:;"), "0:", "an empty group: no address");
    is_str(parse(""), "0:", "an empty value: no address");
    is_str(parse("<\"john doe\"@example.com>"), "1:example.com", "a quoted local part");
    is_str(parse("x@example.com."), "1:example.com", "a trailing dot is dropped");
    is_str(parse("Alice\r\n <alice@example.com>"), "1:example.com", "a folded value");
    is_str(parse("a@b.example, c@d.example, e@f.example, g@h.example, i@j.example"),
           "5:b.example,d.example,f.example,h.example,...", "more domains than kept: counted as more");

    is_str(parse("ceo@example.com;x"), "invalid", "a word after a semicolon is not an address");
    is_str(parse("nobody"), "invalid", "a bare word");
    is_str(parse("a@"), "invalid", "an empty domain");
    is_str(parse("a@[192.0.2.1]"), "invalid", "a domain literal");
    is_str(parse("a@exa mple.com"), "1:example.com", "white space inside the domain is folding");
    is_str(parse("a@example.com\"; spf=pass"), "1:example.com", "an unterminated quote hides the rest of the value");
    is_str(parse("a@exam;ple.com"), "invalid", "a semicolon never ends up in a domain");
    is_str(parse("a@exam\"ple\".com"), "1:exam.com", "nor does a quote");
    is_str(parse("a@ex(comment)ample.com"), "1:example.com", "a comment inside the domain is skipped");
    is_str(parse("a@example..com"), "invalid", "an empty label");
    is_str(parse("a@.example.com"), "invalid", "a leading dot");
    is_str(parse("<a@example.com"), "1:example.com", "an unclosed angle bracket");
    is_str(parse("(unclosed comment a@example.com"), "0:", "an unclosed comment hides the rest");

    char longv[3000];
    memset(longv, 'a', sizeof(longv) - 1);
    longv[sizeof(longv) - 1] = '\0';
    longv[5] = '@';
    is_str(parse(longv), "invalid", "an address longer than 1 KiB is invalid, never cut");
    char longd[400];
    snprintf(longd, sizeof(longd), "a@%0300d.example", 0);
    is_str(parse(longd), "invalid", "a domain longer than 253 bytes is invalid");

    struct dmarc_from f;
    memset(&f, 0, sizeof(f));
    dmarc_from_parse(&f, "a@example.com");
    dmarc_from_parse(&f, "b@example.com");
    ok(f.headers == 2 && f.ndomains == 1 && f.addresses == 2, "two From headers are counted");
    return done_testing();
}
