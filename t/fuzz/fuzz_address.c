/*
 * Fuzz target for envelope addresses from the parser to the router: the
 * MAIL/RCPT path parser (core/mail/smtp_parse.c) and then the router
 * (core/qmgr/route.c router_route and router_sender; core/mail/rewrite.c
 * for header addresses) with one fixed configuration that has every kind
 * of map an admin writes:
 * inline: and regexp: virtual aliases (with $1 substitution of the client's
 * local part), virtual mailbox domains, local aliases with |commands, /files
 * and :include:, transport_maps naming a master.cf pipe transport,
 * canonical maps, relay domains and a sender-dependent relayhost.
 *
 * Input: byte 0 picks the parser options and how the rest is used; the rest
 * is the text after "RCPT TO:" / "MAIL FROM:" (or a bare address to wrap in
 * <>). Every address the parser accepts is routed as a recipient and as a
 * sender; the raw text is routed too (the router must be safe whatever its
 * caller passes).
 *
 * Properties, beyond "no crash, no leak, no hang":
 *  - a command (ROUTE_PIPE without a master.cf argv) or a file (ROUTE_MBOX
 *    outside the mail spool and virtual_mailbox_base) is only ever one that
 *    alias_maps or its :include: file names, never one taken from the
 *    address (Postfix's rule: the recipient itself is never a command);
 *  - a master.cf pipe transport is reached only for the domain that
 *    transport_maps sends to it;
 *  - mailbox paths stay under their base: no ".." component, no path from
 *    the client outside virtual_mailbox_base or the spool;
 *  - every route is complete (address, transport; error routes a 4.x.x or
 *    5.x.x DSN with text), and the number of routes is bounded;
 *  - the parser's accepted address re-parses to itself (canonical form), and
 *    rewritten senders and header addresses contain no control characters.
 *
 * make check builds it with t/fuzz/replay_main.c and replays
 * t/fuzz/corpus/address; `make fuzz` runs it with libFuzzer (doc/testing.md).
 */
#include "config.h"

#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include <petrel/pool.h>
#include "config/cfg.h"
#include "lib/log.h"
#include "mail/rewrite.h"
#include "qmgr/route.h"
#include "mail/smtp_parse.h"
#include "tables/table.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define VBASE "/var/petrel-fuzz/vhosts"
#define SPOOL "/var/petrel-fuzz/spool"

/* What alias_maps and its :include: file name; nothing else may run or be written. */
static const char *const alias_commands[] = { "/usr/local/bin/filter", "/usr/bin/logger", "/usr/bin/inc-cmd",
                                              NULL };
static const char *const alias_files[] = { "/var/spool/archive/mbox", "/var/spool/archive/copy",
                                           "/var/spool/archive/inc-file", NULL };

static const char main_cf[] =
    "myhostname = mx.petrel.test\n"
    "mydomain = petrel.test\n"
    "myorigin = petrel.test\n"
    "mydestination = petrel.test, localhost\n"
    "recipient_delimiter = +\n"
    "mail_spool_directory = " SPOOL "\n"
    "virtual_mailbox_base = " VBASE "\n"
    "virtual_alias_domains = valias.test\n"
    "virtual_alias_maps = inline:{ {info@valias.test = root}, {team@valias.test = alice, bob@virtual.test},"
    " {fwd@petrel.test = ext@remote.test}, {@catch.test = catchall@virtual.test} },"
    " regexp:$config_directory/valias.regexp\n"
    "virtual_mailbox_domains = virtual.test\n"
    "virtual_mailbox_maps = inline:{ {bob@virtual.test = virtual.test/bob/},"
    " {carol@virtual.test = virtual.test/carol}, {catchall@virtual.test = virtual.test/catchall/} },"
    " regexp:$config_directory/vmailbox.regexp\n"
    "virtual_uid_maps = static:5000\n"
    "virtual_gid_maps = static:5000\n"
    "alias_maps = inline:{ {postmaster = root}, {filter = |/usr/local/bin/filter},"
    " {archive = /var/spool/archive/mbox}, {both = alice, |/usr/bin/logger, /var/spool/archive/copy},"
    " {list = :include:$config_directory/list.inc}, {loop1 = loop2}, {loop2 = loop1},"
    " {self = self, root}, {ext = ext@remote.test}, {empty = ,} }\n"
    "transport_maps = inline:{ {pipe.test = mypipe:}, {lmtp.test = lmtp:unix:/run/lmtp},"
    " {err.test = error:no mail here}, {.sub.petrel.test = relay:[inner.test]} }\n"
    "relay_domains = relay.test\n"
    "relayhost = [smarthost.test]:587\n"
    "sender_dependent_relayhost_maps = inline:{ {@special.test = [special-relay.test]} }\n"
    "canonical_maps = regexp:$config_directory/canonical.regexp\n"
    "masquerade_domains = petrel.test\n";

static const char master_cf[] =
    "qmgr unix n - n 300 1 qmgr\n"
    "mypipe unix - n n - - pipe flags=R user=nobody argv=/usr/bin/cat ${recipient}\n";

/* $1 comes from the client: the cases that make admins' maps dangerous. */
static const char valias_regexp[] =
    "/^redirect-(.*)@petrel\\.test$/ $1\n"
    "/^(.*)@old\\.test$/ $1@petrel.test\n"
    "/^owner-(.*)@valias\\.test$/ $1@remote.test, root\n";
/* No $1 here: the router refuses it in maps that name paths (Postfix's NO_REGSUB). */
static const char vmailbox_regexp[] = "/^dave@virtual\\.test$/ virtual.test/dave/\n/^[^@]*@virtual\\.test$/ virtual.test/shared/\n";
static const char canonical_regexp[] = "/^(.*)@legacy\\.test$/ $1@petrel.test\n";
static const char list_inc[] = "alice\nbob@virtual.test, |/usr/bin/inc-cmd\n/var/spool/archive/inc-file # c\n";

struct fuzz_router {
    char dir[256];
    struct cfg_schema *schema;
    struct cfg *cfg;
    struct tbl_registry *reg;
    struct router *router;
    struct mail_rewrite rw;   /* header address rewriting, as smtpd does it */
};

/* The scratch directory goes when the process exits (replay or fuzzer). */
static char scratch_dir[256];

static void remove_scratch(void)
{
    DIR *d = opendir(scratch_dir);
    if (d == NULL)
        return;
    struct dirent *de;
    while ((de = readdir(d)) != NULL)
        if (strcmp(de->d_name, ".") != 0 && strcmp(de->d_name, "..") != 0)
            unlinkat(dirfd(d), de->d_name, 0);
    closedir(d);
    rmdir(scratch_dir);
}

static void check(int cond, const char *what)
{
    if (!cond) {
        fprintf(stderr, "property violated: %s\n", what);
        abort();
    }
}

static void write_file(const char *dir, const char *name, const char *text)
{
    char path[512];
    snprintf(path, sizeof(path), "%s/%s", dir, name);
    FILE *f = fopen(path, "w");
    if (f == NULL || fputs(text, f) < 0 || fclose(f) != 0) {
        perror(path);
        abort();
    }
}

static struct fuzz_router *fuzz_router(void)
{
    /* libFuzzer passes no context: the one router is the harness's state,
     * built once from files in a scratch directory. */
    static struct fuzz_router fr;
    if (fr.router)
        return &fr;
    log_init("petrel", "fuzz");
    if (log_use_file("/dev/null") != 0)
        abort();
    const char *tmp = getenv("TMPDIR");
    snprintf(fr.dir, sizeof(fr.dir), "%s/petrel-fuzz-route-XXXXXX", tmp && *tmp ? tmp : "/tmp");
    if (!mkdtemp(fr.dir))
        abort();
    snprintf(scratch_dir, sizeof(scratch_dir), "%s", fr.dir);
    atexit(remove_scratch);
    write_file(fr.dir, "main.cf", main_cf);
    write_file(fr.dir, "master.cf", master_cf);
    write_file(fr.dir, "valias.regexp", valias_regexp);
    write_file(fr.dir, "vmailbox.regexp", vmailbox_regexp);
    write_file(fr.dir, "canonical.regexp", canonical_regexp);
    write_file(fr.dir, "list.inc", list_inc);
    fr.schema = cfg_schema_new();
    int nerrors = 0;
    fr.cfg = cfg_load(fr.schema, fr.dir, &nerrors);
    if (fr.cfg == NULL) {
        fprintf(stderr, "fuzz_address: the fixed configuration in %s does not load\n", fr.dir);
        abort();
    }
    fr.reg = tbl_registry_new();
    char *error = NULL;
    fr.router = router_create(fr.cfg, fr.reg, 1, &error);
    if (fr.router == NULL || mail_rewrite_open(&fr.rw, fr.cfg, fr.reg, 1, &error) != 0) {
        fprintf(stderr, "fuzz_address: router: %s\n", error);
        abort();
    }
    return &fr;
}

static int listed(const char *const *list, const char *s)
{
    for (; *list; list++)
        if (strcmp(*list, s) == 0)
            return 1;
    return 0;
}

static int printable(const char *s)
{
    for (; *s; s++)
        if ((unsigned char)*s < 0x20 || *s == 0x7f)
            return 0;
    return 1;
}

/* No "." or ".." path component after base, which must be a prefix. */
static int under(const char *path, const char *base)
{
    size_t n = strlen(base);
    if (strncmp(path, base, n) != 0 || path[n] != '/')
        return 0;
    for (const char *p = path + n; *p; p++)
        if (p[0] == '/' && p[1] == '.' && (p[2] == '/' || p[2] == '\0' || (p[2] == '.' && (p[3] == '/' || p[3] == '\0'))))
            return 0;
    return 1;
}

static const char *domain_of(const char *address)
{
    const char *at = strrchr(address, '@');
    return at ? at + 1 : "";
}

static void check_routes(const char *recipient, const struct route_list *rl)
{
    check(rl->count > 0, "every recipient gets at least one route");
    check(rl->count <= 1100, "the number of routes is bounded by the expansion limit");
    for (size_t i = 0; i < rl->count; i++) {
        const struct route *rt = &rl->items[i];
        check(rt->address != NULL && rt->transport != NULL, "a route names its address and transport");
        switch (rt->kind) {
        case ROUTE_PIPE:
            if (rt->pipe_argv == NULL) {
                check(rt->path != NULL && listed(alias_commands, rt->path) && rt->from_alias,
                      "a command runs only when alias_maps names it");
            } else {
                check(strcmp(rt->transport, "mypipe") == 0, "a pipe transport only by transport_maps");
                check(strcasecmp(domain_of(rt->address), "pipe.test") == 0,
                      "the pipe transport only for the domain transport_maps sends to it");
            }
            break;
        case ROUTE_MBOX:
        case ROUTE_MAILDIR:
            check(rt->path != NULL, "a mailbox route has a path");
            check(listed(alias_files, rt->path) || under(rt->path, VBASE) || under(rt->path, SPOOL),
                  "a file is written only where alias_maps, the spool or virtual_mailbox_base say");
            check(rt->from_alias == listed(alias_files, rt->path), "only a file from alias_maps is marked so");
            if (under(rt->path, SPOOL))
                check(strchr(rt->path + strlen(SPOOL) + 1, '/') == NULL, "a spool mailbox is one file name");
            break;
        case ROUTE_ERROR:
        case ROUTE_RETRY:
            check(rt->dsn != NULL && rt->dsn[0] == (rt->kind == ROUTE_ERROR ? '5' : '4') && rt->dsn[1] == '.',
                  "an error route has a DSN of its class");
            check(rt->nexthop != NULL, "an error route has a text");
            break;
        case ROUTE_SMTP:
        case ROUTE_LMTP:
            check(rt->nexthop != NULL && *rt->nexthop, "a network route has a next hop");
            break;
        case ROUTE_DISCARD:
            break;
        default:
            check(0, "a known route kind");
        }
    }
    (void)recipient;
}

static void route_one(struct fuzz_router *fr, const char *sender, const char *recipient, petrel_pool *pool)
{
    struct route_list rl;
    router_route(fr->router, sender, recipient, NULL, pool, &rl);
    check_routes(recipient, &rl);
}

static void check_rewrites(struct fuzz_router *fr, const char *address, petrel_pool *pool)
{
    int clean = printable(address);
    const char *s = router_sender(fr->router, address, NULL, pool, NULL);
    check(s != NULL && (!clean || printable(s)), "a rewritten sender has no control characters");
    for (int recipient = 0; recipient < 2; recipient++) {
        const char *h = mail_rewrite_header_address(&fr->rw, address, recipient, pool, NULL);
        check(h != NULL && (!clean || printable(h)), "a rewritten header address has no control characters");
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1 || size > 1024)
        return 0;
    struct fuzz_router *fr = fuzz_router();
    petrel_pool *pool = petrel_pool_create(0);
    unsigned flags = data[0];
    char *text = petrel_pool_alloc(pool, size);
    memcpy(text, data + 1, size - 1);
    text[size - 1] = '\0';
    struct smtp_parse_opts opts = {
        .smtputf8_enabled = !!(flags & 1),
        .dsn_enabled = !!(flags & 2),
        .transaction_smtputf8 = !!(flags & 4),
        .allow_8bit_localpart_without_smtputf8 = !!(flags & 8),
        .allow_missing_domain = !!(flags & 16),
    };
    int raw = !!(flags & 32);   /* the text is the whole argument ("TO:<a@b> NOTIFY=...") */
    const char *sender = (flags & 64) ? "someone@special.test" : "sender@remote.test";

    struct smtp_reply_err err;
    struct smtp_rcpt_args r;
    const char *rcpt_args = raw ? text : petrel_pool_printf(pool, "TO:<%s>", text);
    if (smtp_parse_rcpt(rcpt_args, &opts, pool, &r, &err) == 0) {
        check(r.address[0] != '\0' && printable(r.address), "a parsed recipient is printable");
        struct smtp_rcpt_args again;
        check(smtp_parse_rcpt(petrel_pool_printf(pool, "TO:<%s>", r.address), &opts, pool, &again, &err) == 0 &&
                  strcmp(again.address, r.address) == 0,
              "a parsed recipient re-parses to itself");
        route_one(fr, sender, r.address, pool);
        check_rewrites(fr, r.address, pool);
    }
    struct smtp_mail_args m;
    const char *mail_args = raw ? text : petrel_pool_printf(pool, "FROM:<%s>", text);
    if (smtp_parse_mail(mail_args, &opts, pool, &m, &err) == 0) {
        check(printable(m.address), "a parsed sender is printable");
        route_one(fr, m.address, "someone@remote.test", pool);
        check_rewrites(fr, m.address, pool);
    }
    /* The router must hold whatever its caller passes (queue files, modules). */
    if (*text) {
        route_one(fr, text, text, pool);
        check_rewrites(fr, text, pool);
    }
    petrel_pool_destroy(pool);
    return 0;
}
