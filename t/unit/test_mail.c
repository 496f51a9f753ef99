/*
 * Unit tests for core/mail: the address split (recipient_delimiter), the
 * address-map key order and its strategies, a failing table stopping the
 * search, the address classes with Postfix's precedence, table lists
 * leaving out the default alias_maps only where asked to and only when the
 * host has no aliases file at all, the address class cache (expiry,
 * eviction, no errors kept, flushed by a table reload), and the
 * canonical/masquerade rewriting smtpd and the queue manager share.
 */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <petrel/pool.h>
#include "config/cfg.h"
#include "mail/addr_class.h"
#include "mail/addr_find.h"
#include "mail/class_cache.h"
#include "mail/maps.h"
#include "mail/namadr.h"
#include "mail/rewrite.h"
#include "tables/table.h"
#include "../tap.h"

static char topdir[] = "/tmp/petrel-test-mail-XXXXXX";
static int case_number;
static struct cfg_schema *schema;
static struct tbl_registry *reg;
static petrel_pool *pool;

/* A configuration from main.cf text (the built-in master.cf). */
static struct cfg *load(const char *main_cf)
{
    char dir[600], path[700];
    snprintf(dir, sizeof(dir), "%s/c%d", topdir, ++case_number);
    mkdir(dir, 0700);
    snprintf(path, sizeof(path), "%s/main.cf", dir);
    FILE *fp = fopen(path, "w");
    if (fp == NULL || fputs(main_cf, fp) < 0 || fclose(fp) != 0) {
        perror(path);
        exit(2);
    }
    int nerrors = 0;
    struct cfg *cfg = cfg_load(schema, dir, &nerrors);
    if (cfg == NULL) {
        printf("Bail out! cannot load %s (%d errors)\n", path, nerrors);
        exit(1);
    }
    return cfg;
}

static void test_split(void)
{
    struct mail_addr a;
    mail_addr_split("User+Tag@Example.COM", "+", pool, &a);
    is_str(a.local, "User", "split: local part without the extension");
    is_str(a.extension, "Tag", "split: the extension");
    is_str(a.full_local, "User+Tag", "split: the full local part");
    is_str(a.domain, "Example.COM", "split: the domain as written");
    mail_addr_split("a-b+c@d", "+-", pool, &a);
    ok(strcmp(a.local, "a") == 0 && strcmp(a.extension, "b+c") == 0,
       "split: several delimiters, the first one found cuts");
    mail_addr_split("Postmaster@d", "t", pool, &a);
    ok(a.extension == NULL && strcmp(a.local, "Postmaster") == 0, "split: postmaster is never split");
    mail_addr_split("+x@d", "+", pool, &a);
    ok(a.extension == NULL && strcmp(a.local, "+x") == 0, "split: a leading delimiter is not an extension");
    mail_addr_split("user+x@d", "", pool, &a);
    ok(a.extension == NULL, "split: no recipient_delimiter, no extension");
    mail_addr_split("user", "+", pool, &a);
    is_str(a.domain, "", "split: no domain is the empty domain");
    mail_addr_split("\"a@b\"@d", "+", pool, &a);
    ok(strcmp(a.full_local, "\"a@b\"") == 0 && strcmp(a.domain, "d") == 0, "split: at the last '@'");
}

static const char *find(struct mail_maps *m, const char *address, unsigned strategy)
{
    struct mail_addr a;
    const char *value = NULL;
    mail_addr_split(address, "+", pool, &a);
    int rc = mail_addr_find(m, &a, strategy, pool, &value);
    return rc < 0 ? "<error>" : rc == 0 ? "<notfound>" : value;
}

static void test_find(void)
{
    struct cfg *cfg = load("virtual_alias_maps = inline:{ {a+b@d.test = full}, {a@d.test = noext}, "
                           "{a+b = lp}, {c = lpnoext}, {@d.test = catchall} }\n"
                           "canonical_maps = inline:{ {x@d.test = before} } fail:down inline:{ {@d.test = after} }\n");
    struct mail_maps m;
    char *error = NULL;
    ok(mail_maps_open(&m, cfg, reg, "virtual_alias_maps", 0, &error) == 0, "open virtual_alias_maps");
    is_str(find(&m, "a+b@d.test", MAIL_FIND_ADDRESS), "full", "find: user+ext@domain first");
    is_str(find(&m, "a+z@d.test", MAIL_FIND_ADDRESS), "noext", "find: then user@domain");
    is_str(find(&m, "q@d.test", MAIL_FIND_ADDRESS), "catchall", "find: then @domain");
    is_str(find(&m, "a+b@d.test", MAIL_FIND_LOCALPART), "lp", "find: localpart user+ext");
    is_str(find(&m, "c+z@e.test", MAIL_FIND_LOCALPART), "lpnoext", "find: localpart user without the extension");
    is_str(find(&m, "c+z@e.test", MAIL_FIND_ADDRESS), "<notfound>", "find: the router's forms never try the localpart");
    is_str(find(&m, "A+B@D.TEST", MAIL_FIND_ADDRESS), "full", "find: keys fold to lower case");
    is_str(find(&m, "q@other.test", MAIL_FIND_ADDRESS | MAIL_FIND_LOCALPART), "<notfound>", "find: nothing matches");
    mail_maps_close(&m);

    ok(mail_maps_open(&m, cfg, reg, "canonical_maps", 0, &error) == 0, "open three tables, one failing");
    is_str(find(&m, "x@d.test", MAIL_FIND_ADDRESS), "before", "find: a table before the failing one answers");
    is_str(find(&m, "y@d.test", MAIL_FIND_ADDRESS), "<error>",
           "find: a failing table stops the search (a later @domain must not answer)");
    mail_maps_close(&m);
    cfg_free(cfg);
}

static void test_classes(void)
{
    struct cfg *cfg = load("mydestination = a.test, both.test\n"
                           "virtual_alias_domains = va.test both.test\n"
                           "virtual_mailbox_domains = vm.test va.test\n"
                           "relay_domains = relay.test\n");
    struct mail_domains d;
    char *error = NULL;
    ok(mail_domains_open(&d, cfg, reg, 1, &error) == 0, "class: the domain lists open");
    is_int(mail_domain_class(&d, "a.test"), MAIL_CLASS_LOCAL, "class: mydestination is local");
    is_int(mail_domain_class(&d, "A.TEST"), MAIL_CLASS_LOCAL, "class: domains match without case");
    is_int(mail_domain_class(&d, ""), MAIL_CLASS_LOCAL, "class: no domain is local");
    is_int(mail_domain_class(&d, "both.test"), MAIL_CLASS_LOCAL, "class: local wins over virtual alias (Postfix)");
    is_int(mail_domain_class(&d, "va.test"), MAIL_CLASS_VIRTUAL_ALIAS,
           "class: virtual alias wins over virtual mailbox (Postfix)");
    is_int(mail_domain_class(&d, "vm.test"), MAIL_CLASS_VIRTUAL_MAILBOX, "class: virtual mailbox");
    is_int(mail_domain_class(&d, "relay.test"), MAIL_CLASS_RELAY, "class: relay");
    is_int(mail_domain_class(&d, "sub.relay.test"), MAIL_CLASS_RELAY, "class: relay_domains matches subdomains");
    is_int(mail_domain_class(&d, "sub.a.test"), MAIL_CLASS_DEFAULT, "class: mydestination does not");
    is_int(mail_domain_class(&d, "notrelay.test"), MAIL_CLASS_DEFAULT, "class: a suffix is not a subdomain");
    is_int(mail_domain_class(&d, "x.test"), MAIL_CLASS_DEFAULT, "class: anything else is default");
    mail_domains_close(&d);
    cfg_free(cfg);

    /* Postfix's match lists: type:table items, "!" exclusions (the first
     * item that matches decides), parent domains of relay_domains in fixed
     * tables, and virtual_alias_domains = $virtual_alias_maps (issue 17). */
    char vpath[700], dpath[700], rpath[700], xpath[700];
    snprintf(vpath, sizeof(vpath), "%s/virtual", topdir);
    snprintf(dpath, sizeof(dpath), "%s/domains", topdir);
    snprintf(rpath, sizeof(rpath), "%s/relays", topdir);
    FILE *fp = fopen(vpath, "w");
    fputs("valias.test anything\nuser@valias.test someone@else.test\n", fp);
    fclose(fp);
    fp = fopen(dpath, "w");
    fputs("Hashed.Test OK\nno.hashed.test OK\n", fp);
    fclose(fp);
    fp = fopen(rpath, "w");
    fputs("partner.test OK\n", fp);
    fclose(fp);
    snprintf(xpath, sizeof(xpath), "%s/vm.regexp", topdir);
    fp = fopen(xpath, "w");
    fputs("/\\.vm\\.test$/ OK\n", fp);
    fclose(fp);
    char text[4000];
    snprintf(text, sizeof(text),
             "mydestination = $myhostname, !no.hashed.test, texthash:%s, localhost\n"
             "myhostname = mx.test\n"
             "virtual_alias_maps = texthash:%s\n"
             "virtual_mailbox_domains = !skip.vm.test, regexp:%s\n"
             "relay_domains = texthash:%s, .dotted.test, !no.relay.test, relay.test\n",
             dpath, vpath, xpath, rpath);
    cfg = load(text);
    error = NULL;
    ok(mail_domains_open(&d, cfg, reg, 1, &error) == 0, "lists: domain lists with tables open");
    if (error)
        printf("# %s\n", error);
    free(error);
    is_int(mail_domain_class(&d, "hashed.test"), MAIL_CLASS_LOCAL, "lists: a type:table item in mydestination matches");
    is_int(mail_domain_class(&d, "HASHED.test"), MAIL_CLASS_LOCAL, "lists: without case");
    is_int(mail_domain_class(&d, "no.hashed.test"), MAIL_CLASS_DEFAULT,
           "lists: a ! item before the table excludes a domain the table lists");
    is_int(mail_domain_class(&d, "sub.hashed.test"), MAIL_CLASS_DEFAULT, "lists: mydestination tables match exactly");
    is_int(mail_domain_class(&d, "valias.test"), MAIL_CLASS_VIRTUAL_ALIAS,
           "lists: virtual_alias_domains = $virtual_alias_maps (Postfix's default) matches a domain key");
    is_int(mail_domain_class(&d, "else.test"), MAIL_CLASS_DEFAULT, "lists: not the domain of a value");
    is_int(mail_domain_class(&d, "a.vm.test"), MAIL_CLASS_VIRTUAL_MAILBOX, "lists: a regexp table item");
    is_int(mail_domain_class(&d, "skip.vm.test"), MAIL_CLASS_DEFAULT, "lists: ! before a pattern table");
    is_int(mail_domain_class(&d, "partner.test"), MAIL_CLASS_RELAY, "lists: a relay_domains table");
    is_int(mail_domain_class(&d, "mx.partner.test"), MAIL_CLASS_RELAY,
           "lists: relay_domains asks a fixed table for parent domains (parent_domain_matches_subdomains)");
    is_int(mail_domain_class(&d, "a.dotted.test"), MAIL_CLASS_DEFAULT,
           "lists: .domain in relay_domains matches nothing, as in Postfix");
    is_int(mail_domain_class(&d, "no.relay.test"), MAIL_CLASS_DEFAULT, "lists: ! before a parent match excludes");
    is_int(mail_domain_class(&d, "x.relay.test"), MAIL_CLASS_RELAY, "lists: and the parent still matches others");
    ok(mail_domain_is_ours(&d, "x.relay.test") == 1 && mail_domain_is_ours(&d, "elsewhere.test") == 0,
       "lists: is_ours agrees");
    mail_domains_close(&d);
    cfg_free(cfg);

    cfg = load("mydestination = texthash:/nonexistent/domains, localhost\n");
    error = NULL;
    ok(mail_domains_open(&d, cfg, reg, 1, &error) == -1, "lists: a table that cannot be opened is an error");
    ok(error && strncmp(error, "mydestination: texthash:/nonexistent/domains: ", 46) == 0, "naming the parameter");
    if (error)
        printf("# %s\n", error);
    free(error);
    mail_domains_close(&d);
    cfg_free(cfg);
}

static void test_default_aliases(void)
{
    /* alias_maps at its default, hash:/etc/aliases. What happens depends on
     * the host's /etc (t/integration/test_aliases.py sets up each case in a
     * private /etc): left out only when there is no aliases file at all. */
    int source = access("/etc/aliases", F_OK) == 0, compiled = access("/etc/aliases.lmdb", F_OK) == 0;
    struct cfg *cfg = load("myhostname = mx.test\n");
    struct mail_maps m;
    char *error = NULL;
    int rc = mail_maps_open(&m, cfg, reg, "local_recipient_maps", MAIL_MAPS_DEFAULT_ALIASES_OPTIONAL | MAIL_MAPS_QUIET,
                            &error);
    if (!source && !compiled) {
        ok(rc == 0, "no /etc/aliases at all: local_recipient_maps opens with the default alias_maps left out");
        is_int(m.n, 1, "only unix:passwd.byname is left");
        ok(strncmp(find(&m, "root@mx.test", MAIL_FIND_ADDRESS | MAIL_FIND_LOCALPART), "root:", 5) == 0,
           "and it knows root (by its local part: mx.test is local)");
        mail_maps_close(&m);
    } else if (!compiled) {
        ok(rc == -1, "/etc/aliases was never built: an error, even for the default alias_maps");
        ok(error && strstr(error, "local_recipient_maps: hash:/etc/aliases: open database /etc/aliases.lmdb") &&
           strstr(error, "petrelctl newaliases"), "naming the parameter, the file and the command that builds it");
        free(error);
        error = NULL;
    } else {
        ok(rc == 0 && m.n == 2, "/etc/aliases.lmdb exists: the default alias_maps is used");
        mail_maps_close(&m);
    }
    cfg_free(cfg);

    cfg = load("alias_maps = hash:/nonexistent/aliases\n");
    error = NULL;
    ok(mail_maps_open(&m, cfg, reg, "local_recipient_maps", MAIL_MAPS_DEFAULT_ALIASES_OPTIONAL | MAIL_MAPS_QUIET,
                      &error) == -1,
       "an alias_maps the admin set is never left out");
    ok(error && strncmp(error, "local_recipient_maps: hash:/nonexistent/aliases", 47) == 0,
       "naming the parameter and table");
    free(error);
    cfg_free(cfg);
}

static void test_rewrite(void)
{
    struct cfg *cfg = load("myorigin = origin.test\n"
                           "sender_canonical_maps = inline:{ {old@s.test = new@s.test}, {bare@s.test = plain} }\n"
                           "recipient_canonical_maps = inline:{ {rold@r.test = rnew@r.test} }\n"
                           "canonical_maps = inline:{ {both@c.test = changed@c.test} }\n"
                           "canonical_classes = envelope_sender, header_sender\n"
                           "masquerade_domains = !keep.example.net, example.net\n"
                           "masquerade_exceptions = !admin, root, admin\n"
                           "masquerade_classes = envelope_sender, header_recipient\n");
    struct mail_rewrite rw;
    char *error = NULL;
    ok(mail_rewrite_open(&rw, cfg, reg, 1, &error) == 0, "rewrite: open the canonical maps");
    ok(mail_rewrite_headers(&rw), "rewrite: header rewriting is configured");
    is_str(mail_rewrite_sender(&rw, "old@s.test", pool, NULL), "new@s.test", "rewrite: sender_canonical_maps");
    is_str(mail_rewrite_sender(&rw, "bare@s.test", pool, NULL), "plain@origin.test",
           "rewrite: a result without a domain gets @myorigin");
    is_str(mail_rewrite_sender(&rw, "", pool, NULL), "", "rewrite: the null sender stays null");
    is_str(mail_rewrite_sender(&rw, "both@c.test", pool, NULL), "changed@c.test",
           "rewrite: canonical_maps for a class in canonical_classes");
    is_str(mail_rewrite_header_address(&rw, "both@c.test", 1, pool, NULL), "both@c.test",
           "rewrite: not for a class missing from canonical_classes");
    is_str(mail_rewrite_sender(&rw, "u@host.example.net", pool, NULL), "u@example.net",
           "rewrite: masquerade_domains strips the host");
    is_str(mail_rewrite_sender(&rw, "root@host.example.net", pool, NULL), "root@host.example.net",
           "rewrite: masquerade_exceptions");
    is_str(mail_rewrite_sender(&rw, "admin@host.example.net", pool, NULL), "admin@example.net",
           "rewrite: a !user in masquerade_exceptions comes first and is masqueraded (match list)");
    is_str(mail_rewrite_sender(&rw, "u@a.keep.example.net", pool, NULL), "u@a.keep.example.net",
           "rewrite: a !domain is never masqueraded");
    is_str(mail_rewrite_header_address(&rw, "u@host.example.net", 0, pool, NULL), "u@host.example.net",
           "rewrite: no masquerading for a class missing from masquerade_classes");
    is_str(mail_rewrite_header_address(&rw, "u@host.example.net", 1, pool, NULL), "u@example.net",
           "rewrite: header_recipient is masqueraded when listed");
    is_str(mail_rewrite_recipient(&rw, "rold@r.test", pool, NULL), "rnew@r.test",
           "rewrite: recipient_canonical_maps for the envelope recipient");
    is_str(mail_rewrite_recipient(&rw, "other@r.test", pool, NULL), "other@r.test", "rewrite: no entry, no change");
    mail_rewrite_close(&rw);
    cfg_free(cfg);

    cfg = load("masquerade_exceptions = root, hash:/etc/postfix/masq_users\n");
    error = NULL;
    ok(mail_rewrite_open(&rw, cfg, reg, 1, &error) == -1 && error &&
           strcmp(error, "masquerade_exceptions: table hash:/etc/postfix/masq_users: tables are not supported here; "
                         "list the user names") == 0,
       "rewrite: a table in masquerade_exceptions is refused, naming it");
    free(error);
    cfg_free(cfg);

    cfg = load("canonical_maps = fail:down\n");
    error = NULL;
    ok(mail_rewrite_open(&rw, cfg, reg, 1, &error) == 0 && mail_rewrite_headers(&rw),
       "rewrite: a failing table still counts as configured");
    int failed = 0;
    is_str(mail_rewrite_recipient(&rw, "u@d.test", pool, &failed), "u@d.test",
           "rewrite: a failing canonical table leaves the recipient as it is");
    ok(failed == 1, "rewrite: and says it failed (the router defers, never uses the unmapped address)");
    failed = 0;
    mail_rewrite_sender(&rw, "u@d.test", pool, &failed);
    ok(failed == 1, "rewrite: the same for the sender");
    mail_rewrite_close(&rw);
    cfg_free(cfg);
    cfg = load("\n");
    ok(mail_rewrite_open(&rw, cfg, reg, 1, &error) == 0 && !mail_rewrite_headers(&rw),
       "rewrite: nothing configured, no header rewriting");
    mail_rewrite_close(&rw);
    cfg_free(cfg);
}

/* Postfix's namadr lists: networks, names, .domains, tables, !exclusions. */
static void test_namadr(void)
{
    const char *items[] = { "!bad.example.org", ".example.org", "mail.example.net", "192.0.2.0/24", "[2001:db8::]/32",
                            "inline:{ {198.51.100.7 = x}, {named.test = y} }", NULL };
    char *error = NULL;
    struct namadr_list *l = namadr_list_open("xf", items, reg, 0, &error);
    ok(l != NULL, "a list of every kind opens (%s)", error ? error : "");
    if (l) {
        is_int(namadr_list_match(l, "mx.example.org", "203.0.113.1"), 1, ".example.org: a name below it");
        is_int(namadr_list_match(l, "example.org", "203.0.113.1"), 0, ".example.org: not the domain itself");
        is_int(namadr_list_match(l, "bad.example.org", "192.0.2.1"), 0, "!bad.example.org comes first: no match");
        is_int(namadr_list_match(l, "MAIL.example.NET", "203.0.113.1"), 1, "a host name, without case");
        is_int(namadr_list_match(l, "sub.mail.example.net", "203.0.113.1"), 0, "not its subdomains (no parent style)");
        is_int(namadr_list_match(l, "unknown", "192.0.2.77"), 1, "a network");
        is_int(namadr_list_match(l, "unknown", "2001:db8::5"), 1, "an IPv6 network");
        is_int(namadr_list_match(l, "unknown", "198.51.100.7"), 1, "a table keyed by the address");
        is_int(namadr_list_match(l, "named.test", "203.0.113.9"), 1, "a table keyed by the name");
        is_int(namadr_list_match(l, "unknown", "203.0.113.9"), 0, "nothing else");
        namadr_list_free(l);
    }
    const char *parent[] = { "example.com", NULL };
    l = namadr_list_open("p", parent, reg, 1, &error);
    ok(l && namadr_list_match(l, "a.b.example.com", "203.0.113.1") == 1, "parent style: subdomains match");
    namadr_list_free(l);
    const char *failing[] = { "fail:down", NULL };
    l = namadr_list_open("f", failing, reg, 0, &error);
    ok(l && namadr_list_match(l, "x.test", "203.0.113.1") == -1, "a failing table is an error, not a miss");
    namadr_list_free(l);
    const char *bad[][2] = { { "300.1.2.3", NULL }, { "host name", NULL }, { "!", NULL }, { "nosuch:x", NULL } };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        error = NULL;
        l = namadr_list_open("xf", bad[i], reg, 0, &error);
        ok(l == NULL && error && strncmp(error, "xf: ", 4) == 0, "\"%s\" is refused naming the parameter: %s",
           bad[i][0], error ? error : "(none)");
        free(error);
        namadr_list_free(l);
    }
}

/* The client lists moved onto namadr (mynetworks, debug_peer_list, ...):
 * plain networks keep their meaning; names need the verified name. */
static void test_client_lists(void)
{
    const char *nets[] = { "127.0.0.0/8", "[::1]/128", "192.0.2.7", "[2001:db8::]/32", "!198.51.100.9",
                           "198.51.100.0/24", NULL };
    char *error = NULL;
    struct namadr_list *l = namadr_list_open("mynetworks", nets, reg, 1, &error);
    ok(l != NULL, "networks as mynetworks has them open (%s)", error ? error : "");
    if (l) {
        is_int(namadr_list_match(l, "unknown", "127.1.2.3"), 1, "a network, whatever the name");
        is_int(namadr_list_match(l, "host.example", "::1"), 1, "a bracketed IPv6 network");
        is_int(namadr_list_match(l, NULL, "192.0.2.7"), 1, "a bare address");
        is_int(namadr_list_match(l, NULL, "192.0.2.8"), 0, "not its neighbour");
        is_int(namadr_list_match(l, NULL, "198.51.100.9"), 0, "a '!' exclusion (\"!/file\" items) before its network");
        is_int(namadr_list_match(l, NULL, "198.51.100.10"), 1, "the rest of that network");
        ok(namadr_list_first_name(l) == NULL, "no name items: postscreen has nothing to warn about");
        namadr_list_free(l);
    }
    const char *names[] = { "relay.example.com", "example.net", "192.0.2.0/24", NULL };
    l = namadr_list_open("mynetworks", names, reg, 1, &error);
    ok(l != NULL, "host names in mynetworks open (%s)", error ? error : "");
    if (l) {
        is_int(namadr_list_match(l, "relay.example.com", "203.0.113.5"), 1, "the verified name matches");
        is_int(namadr_list_match(l, "unknown", "203.0.113.5"), 0, "an unverified client does not match a name");
        is_int(namadr_list_match(l, NULL, "203.0.113.5"), 0, "address only (postscreen): no name match");
        is_int(namadr_list_match(l, "a.example.net", "203.0.113.5"), 1, "parent style: a subdomain matches");
        is_int(namadr_list_match(l, "badexample.net", "203.0.113.5"), 0, "but not a name that only ends alike");
        is_str(namadr_list_first_name(l), "relay.example.com", "the first name item is told to postscreen");
        namadr_list_free(l);
    }
    l = namadr_list_open("smtpd_client_event_limit_exceptions", names, reg, 0, &error);
    if (l) {
        is_int(namadr_list_match(l, "a.example.net", "203.0.113.5"), 0, "without parent style no subdomain");
        is_int(namadr_list_match(l, "example.net", "203.0.113.5"), 1, "only the name itself");
        namadr_list_free(l);
    }
    const char *keyed[] = { "inline:{ {203.0.113.6 = ok}, {trusted.example = ok} }", NULL };
    l = namadr_list_open("mynetworks", keyed, reg, 1, &error);
    if (l) {
        is_int(namadr_list_match(l, NULL, "203.0.113.6"), 1, "a table keyed by the address, address only");
        is_int(namadr_list_match(l, "trusted.example", "203.0.113.7"), 1, "a table keyed by the name");
        is_int(namadr_list_match(l, "x.trusted.example", "203.0.113.7"), 1, "parent style: its parent in the table");
        is_int(namadr_list_match(l, NULL, "203.0.113.7"), 0, "the name is not asked without one");
        namadr_list_free(l);
    }
}

static void test_class_cache(void)
{
    struct mail_class_cache *c = mail_class_cache_new(2, 30);
    enum mail_class cls = MAIL_CLASS_DEFAULT;
    ok(!mail_class_cache_get(c, "a.test", 100, &cls), "class cache: empty at first");
    mail_class_cache_put(c, "a.test", MAIL_CLASS_VIRTUAL_MAILBOX, 100);
    ok(mail_class_cache_get(c, "A.Test", 129, &cls) && cls == MAIL_CLASS_VIRTUAL_MAILBOX,
       "class cache: an entry answers until its TTL, without case");
    ok(!mail_class_cache_get(c, "a.test", 130, &cls), "class cache: and not from its TTL on");
    mail_class_cache_put(c, "b.test", MAIL_CLASS_ERROR, 130);
    ok(!mail_class_cache_get(c, "b.test", 130, &cls), "class cache: a lookup error is never kept");
    char longname[300];
    memset(longname, 'x', sizeof(longname) - 1);
    longname[sizeof(longname) - 1] = '\0';
    mail_class_cache_put(c, longname, MAIL_CLASS_DEFAULT, 130);
    ok(!mail_class_cache_get(c, longname, 130, &cls), "class cache: nor a name longer than a domain can be");

    /* Two entries: the least recently used one goes. */
    mail_class_cache_put(c, "a.test", MAIL_CLASS_LOCAL, 200);
    mail_class_cache_put(c, "b.test", MAIL_CLASS_RELAY, 201);
    ok(mail_class_cache_get(c, "a.test", 202, &cls) && cls == MAIL_CLASS_LOCAL, "class cache: two entries held");
    mail_class_cache_put(c, "c.test", MAIL_CLASS_DEFAULT, 203);
    ok(!mail_class_cache_get(c, "b.test", 203, &cls), "class cache: a third evicts the least recently used");
    ok(mail_class_cache_get(c, "a.test", 203, &cls) && mail_class_cache_get(c, "c.test", 203, &cls) &&
       cls == MAIL_CLASS_DEFAULT, "class cache: the recent ones stay");
    mail_class_cache_generation(c, 0);
    ok(mail_class_cache_get(c, "a.test", 203, &cls), "class cache: the same tables' generation keeps the entries");
    mail_class_cache_generation(c, 1);
    ok(!mail_class_cache_get(c, "a.test", 203, &cls) && !mail_class_cache_get(c, "c.test", 203, &cls),
       "class cache: a new generation forgets them all");
    mail_class_cache_free(c);

    /* Through mail_domain_class: a domain added to a table is not seen while
     * its class is kept, and is once the table is reloaded. */
    char path[700], text[800];
    snprintf(path, sizeof(path), "%s/vmdomains", topdir);
    FILE *fp = fopen(path, "w");
    fputs("old.test OK\n", fp);
    fclose(fp);
    snprintf(text, sizeof(text), "virtual_mailbox_domains = texthash:%s\naddress_class_cache_ttl = 1h\n", path);
    struct cfg *cfg = load(text);
    struct mail_domains d;
    char *error = NULL;
    ok(mail_domains_open(&d, cfg, reg, 1, &error) == 0, "class cache: the domain list opens");
    free(error);
    mail_domains_cache(&d, cfg);
    is_int(mail_domain_class(&d, "new.test"), MAIL_CLASS_DEFAULT, "class cache: new.test is not ours yet");
    fp = fopen(path, "w");
    fputs("old.test OK\nnew.test OK\n", fp);
    fclose(fp);
    is_int(mail_domain_class(&d, "new.test"), MAIL_CLASS_DEFAULT, "class cache: its class is kept");
    error = NULL;
    ok(tbl_reload(d.virtual_mailbox_domains.items[0].table, &error) == 0, "class cache: the table reloads");
    free(error);
    is_int(mail_domain_class(&d, "new.test"), MAIL_CLASS_VIRTUAL_MAILBOX,
           "class cache: after a reload of a domain list's table the new contents answer");
    mail_domains_close(&d);
    cfg_free(cfg);

    snprintf(text, sizeof(text), "virtual_mailbox_domains = texthash:%s\naddress_class_cache_ttl = 0\n", path);
    cfg = load(text);
    ok(mail_domains_open(&d, cfg, reg, 1, &error) == 0, "class cache: the list opens again");
    mail_domains_cache(&d, cfg);
    ok(d.cache == NULL, "class cache: address_class_cache_ttl = 0 keeps nothing");
    mail_domains_close(&d);
    cfg_free(cfg);
}

int main(void)
{
    if (mkdtemp(topdir) == NULL) {
        perror("mkdtemp");
        return 2;
    }
    schema = cfg_schema_new();
    reg = tbl_registry_new();
    pool = petrel_pool_create(0);
    test_split();
    test_find();
    test_classes();
    test_class_cache();
    test_default_aliases();
    test_rewrite();
    test_namadr();
    test_client_lists();
    petrel_pool_destroy(pool);
    tbl_registry_free(reg);
    cfg_schema_free(schema);
    char cmd[600];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", topdir);
    if (system(cmd) != 0)
        printf("# could not remove %s\n", topdir);
    return done_testing();
}
