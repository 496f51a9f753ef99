/*
 * petrel-sendmail: the sendmail(1) interface programs expect.
 *
 * Like Postfix's sendmail it never talks to the daemon: it hands the
 * message to petrel-postdrop (set-group-ID when installed by root), which
 * stores it durably in queue_directory/maildrop/; the pickup role of
 * petreld collects it from there, now or whenever petreld starts. So a
 * well-formed submission succeeds (exit 0) whether petreld is busy, down or
 * being restarted; exit 0 means the message is on stable storage.
 *
 *   petrel-sendmail [-t] [-i|-oi] [-f sender] [-F fullname] [-C dir] [recipient ...]
 *   petrel-sendmail -bs        SMTP on standard input/output (sendmail_bs.c)
 *   petrel-sendmail -bp        list the queue (mailq)
 *   petrel-sendmail -q         flush the queue
 *   petrel-sendmail -bi, -I    build the alias databases: runs `petrelctl newaliases`
 *                              from command_directory, as Postfix runs postalias
 *                              (also when invoked as newaliases)
 *
 * Recipients (arguments, and To:/Cc:/Bcc: with -t) are parsed as RFC 5322
 * address lists (core/mail/addrlist.c), qualified with myorigin and put in
 * the canonical SMTP form; anything that cannot be an envelope address, and
 * any argument with a CR or LF in it, is refused with exit status 64 and a
 * message naming it. The configuration is found like Postfix's: -C DIR,
 * else $MAIL_CONFIG, else the default. Exit status follows sysexits(3).
 */
#include "config.h"

#include <errno.h>
#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sysexits.h>
#include <unistd.h>

#include "config/cfg.h"
#include "lib/hash.h"
#include "lib/log.h"
#include "lib/xalloc.h"
#include "mail/addrlist.h"
#include "tools/queue_cmd.h"
#include "tools/sendmail.h"

int sendmail_bs(const struct sm_conf *conf);

static __attribute__((noreturn, format(printf, 2, 3))) void die(int status, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("petrel-sendmail: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    exit(status);
}

/* Finding 14 of issue 8: nothing with a line break reaches the envelope. */
static void refuse_line_breaks(const char *what, const char *value)
{
    if (value && strpbrk(value, "\r\n"))
        die(EX_USAGE, "%s contains a line break (CR or LF): refused", what);
}

/* ---- recipients: a list without duplicates, bounded ---- */

struct rcpt_list {
    const char **v;
    size_t n;
    uint32_t *slots;   /* open addressing over v's indexes + 1; 0 = empty */
    size_t nslots;
};

static void rcpt_add(struct rcpt_list *l, const char *address)
{
    if (l->nslots == 0) {
        l->nslots = 4 * MAILDROP_RCPT_MAX;
        l->slots = xcalloc(l->nslots, sizeof(*l->slots));
        l->v = xcalloc(MAILDROP_RCPT_MAX, sizeof(*l->v));
    }
    size_t i = hash_string(address) % l->nslots;
    for (; l->slots[i]; i = (i + 1) % l->nslots)
        if (strcmp(l->v[l->slots[i] - 1], address) == 0)
            return;   /* the same recipient twice gets one copy, as Postfix's cleanup does */
    if (l->n == MAILDROP_RCPT_MAX)
        die(EX_USAGE, "too many recipients (at most %d)", MAILDROP_RCPT_MAX);
    l->v[l->n] = address;
    l->slots[i] = (uint32_t)++l->n;
}

struct found_ctx {
    const struct sm_conf *conf;
    struct rcpt_list *list;
    const char *origin;      /* where the addresses came from, for messages */
    size_t count;
};

static int found_recipient(void *ctx, const char *local, const char *domain)
{
    struct found_ctx *f = ctx;
    const char *why = NULL;
    const char *address = sm_qualify(f->conf, local, domain, 0, &why);
    if (address == NULL)
        die(EX_USAGE, "%s: bad recipient address \"%s%s%s\": %s", f->origin, local, domain ? "@" : "",
            domain ? domain : "", why);
    rcpt_add(f->list, address);
    f->count++;
    return 0;
}

/* Returns how many mailboxes text held. */
static size_t add_recipients(const struct sm_conf *conf, struct rcpt_list *list, const char *text,
                             const char *origin)
{
    struct found_ctx f = { conf, list, origin, 0 };
    const char *error = NULL;
    if (addrlist_parse(text, strlen(text), conf->pool, found_recipient, &f, &error) != 0)
        die(EX_USAGE, "%s: cannot parse \"%.200s\": %s", origin, text, error);
    return f.count;
}

struct first_mailbox {
    const char *local, *domain;
    int count;
};

static int take_first(void *ctx, const char *local, const char *domain)
{
    struct first_mailbox *f = ctx;
    if (f->count++ == 0) {
        f->local = local;
        f->domain = domain;
    }
    return 0;
}

static const char *resolve_sender(const struct sm_conf *conf, const char *arg)
{
    const char *why = NULL;
    if (arg == NULL) {
        const char *address = sm_qualify(conf, conf->login, NULL, 1, &why);
        if (address == NULL)
            die(EX_USAGE, "cannot make a sender address from login name \"%s\": %s (use -f)", conf->login, why);
        return address;
    }
    if (*arg == '\0' || strcmp(arg, "<>") == 0)
        return "";
    struct first_mailbox first = { NULL, NULL, 0 };
    const char *error = NULL;
    if (addrlist_parse(arg, strlen(arg), conf->pool, take_first, &first, &error) != 0)
        die(EX_USAGE, "-f: cannot parse sender \"%.200s\": %s", arg, error);
    if (first.count == 0)
        die(EX_USAGE, "-f: no address in \"%.200s\"", arg);
    if (first.count > 1)
        fprintf(stderr, "petrel-sendmail: warning: -f option specified malformed sender: %s\n", arg);
    const char *address = sm_qualify(conf, first.local, first.domain, 1, &why);
    if (address == NULL)
        die(EX_USAGE, "-f: bad sender address \"%.200s\": %s", arg, why);
    return address;
}

/* ---- reading the message ---- */

struct input {
    char *line;
    size_t cap;
    size_t len;
    int dot_ends;
    int eof;
};

/* The next line without its line end (trailing CRs dropped, as Postfix's
 * sendmail_fix_line_endings = always does); 0 at the end of the input or
 * at a lone "." unless -i. */
static int next_line(struct input *in)
{
    if (in->eof)
        return 0;
    ssize_t got = getline(&in->line, &in->cap, stdin);
    if (got <= 0) {
        if (ferror(stdin))
            die(EX_DATAERR, "error reading the message: %s", strerror(errno));
        in->eof = 1;
        return 0;
    }
    size_t len = (size_t)got;
    if (len && in->line[len - 1] == '\n')
        len--;
    while (len && in->line[len - 1] == '\r')
        len--;
    in->line[len] = '\0';
    in->len = len;
    if (in->dot_ends && len == 1 && in->line[0] == '.') {
        in->eof = 1;
        return 0;
    }
    return 1;
}

static void write_line(struct sm_drop *d, const struct sm_conf *conf, const char *line, size_t len)
{
    maildrop_write_content(&d->w, line, len);
    maildrop_write_content(&d->w, "\r\n", 2);
    if (conf->size_limit && d->w.content_length > conf->size_limit) {
        sm_drop_cancel(d);
        die(EX_UNAVAILABLE, "message too large (message_size_limit = %llu bytes)", conf->size_limit);
    }
}

static int deliver(const struct sm_conf *conf, const char *sender_arg, const char *fullname, int extract,
                   int dot_ends, char **args, int nargs)
{
    const char *sender = resolve_sender(conf, sender_arg);
    struct rcpt_list rcpts;
    memset(&rcpts, 0, sizeof(rcpts));
    for (int i = 0; i < nargs; i++)
        if (add_recipients(conf, &rcpts, args[i], "recipient argument") == 0)
            die(EX_USAGE, "recipient argument \"%.200s\" holds no address", args[i]);

    struct sm_headers h;
    sm_headers_init(&h, conf, extract, sender, fullname, 1);
    struct input in = { NULL, 0, 0, dot_ends, 0 };
    int ended = 0;
    while (!ended && next_line(&in)) {
        ended = sm_headers_line(&h, in.line, in.len);
        if (ended < 0)
            die(EX_DATAERR, "message header section larger than %d bytes", SM_HEADER_LIMIT);
    }
    if (extract) {
        /* With Resent- headers present, only they count (RFC 5322 3.6.6). */
        char **values = h.nresent ? h.resent_to : h.to;
        size_t n = h.nresent ? h.nresent : h.nto;
        for (size_t i = 0; i < n; i++)
            add_recipients(conf, &rcpts, values[i], h.nresent ? "Resent-To/Cc/Bcc header" : "To/Cc/Bcc header");
    }
    if (rcpts.n == 0)
        die(EX_USAGE, extract ? "no recipient addresses found in message header"
                              : "recipient addresses must be given on the command line or with -t");

    struct sm_drop d;
    int status = sm_drop_open(&d, conf);
    if (status != 0)
        return status;
    maildrop_write_sender(&d.w, sender);
    for (size_t i = 0; i < rcpts.n; i++)
        maildrop_write_recipient(&d.w, rcpts.v[i]);
    maildrop_write_content_start(&d.w);
    sm_headers_emit(&h, &d.w);
    if (ended == 2)
        write_line(&d, conf, in.line, in.len);
    while (next_line(&in))
        write_line(&d, conf, in.line, in.len);
    if (conf->size_limit && d.w.content_length > conf->size_limit) {
        sm_drop_cancel(&d);
        die(EX_UNAVAILABLE, "message too large (message_size_limit = %llu bytes)", conf->size_limit);
    }
    char id[QUEUE_ID_MAX];
    status = sm_drop_finish(&d, id, sizeof(id));
    sm_headers_free(&h);
    free(in.line);
    free(rcpts.v);
    free(rcpts.slots);
    return status;
}

/* ---- configuration ---- */

static const char *peek(struct cfg_schema *schema, const struct sm_conf *conf, const char *name)
{
    char *value = cfg_peek(schema, conf->confdir, name);
    if (value == NULL)
        die(EX_CONFIG, "cannot read %s/main.cf: %s", conf->confdir, strerror(errno));
    const char *kept = petrel_pool_strdup(conf->pool, value);
    free(value);
    return kept;
}

static void load_conf(struct sm_conf *conf)
{
    struct cfg_schema *schema = cfg_schema_new();
    conf->myhostname = peek(schema, conf, "myhostname");
    conf->myorigin = peek(schema, conf, "myorigin");
    conf->mail_name = peek(schema, conf, "mail_name");
    const char *size = peek(schema, conf, "message_size_limit");
    const char *cmddir = peek(schema, conf, "command_directory");
    cfg_schema_free(schema);
    long long limit = 0;
    if (*size && cfg_parse_size(size, &limit) != 0)
        die(EX_CONFIG, "%s/main.cf: message_size_limit: bad value \"%s\"", conf->confdir, size);
    conf->size_limit = (unsigned long long)limit;
    if (*conf->myhostname == '\0') {
        char host[256];
        if (gethostname(host, sizeof(host)) != 0)
            snprintf(host, sizeof(host), "localhost");
        host[sizeof(host) - 1] = '\0';
        conf->myhostname = petrel_pool_strdup(conf->pool, host);
    }
    if (*conf->myorigin == '\0')
        conf->myorigin = conf->myhostname;
    conf->helper = petrel_pool_printf(conf->pool, "%s/petrel-postdrop", cmddir);
    struct passwd *pw = getpwuid(getuid());
    if (pw == NULL)
        die(EX_OSERR, "no login name found for user ID %ld", (long)getuid());
    conf->login = petrel_pool_strdup(conf->pool, pw->pw_name);
}

/* -bi: Postfix's sendmail runs $command_directory/postalias; Petrel's
 * newaliases lives in petrelctl. Does not return. */
static void run_newaliases(const char *confdir)
{
    struct cfg_schema *schema = cfg_schema_new();
    char *dir = cfg_peek(schema, confdir, "command_directory");
    cfg_schema_free(schema);
    const char *where = dir && *dir ? dir : PETREL_SBINDIR;
    size_t len = strlen(where) + sizeof("/petrelctl");
    char *path = xmalloc(len);
    snprintf(path, len, "%s/petrelctl", where);
    char *args[] = { "petrelctl", "-c", (char *)confdir, "newaliases", NULL };
    execv(path, args);
    die(EX_OSERR, "cannot run %s: %s", path, strerror(errno));
}

int main(int argc, char **argv)
{
    const char *confdir = getenv("MAIL_CONFIG");
    if (confdir == NULL || *confdir == '\0')
        confdir = PETREL_SYSCONFDIR;
    const char *sender = NULL, *fullname = NULL;
    int extract = 0, dot_ends = 1, mode_bs = 0, mode_bp = 0, mode_q = 0;
    const char *self = strrchr(argv[0], '/') ? strrchr(argv[0], '/') + 1 : argv[0];
    int mode_bi = strcmp(self, "newaliases") == 0;
    log_init("petrel", "sendmail");
    signal(SIGPIPE, SIG_IGN);
    /* A parent that ignores SIGCHLD (swaks --pipe does) would make the
     * helper's exit status unreadable: waitpid() would fail with ECHILD. */
    signal(SIGCHLD, SIG_DFL);
    /* sendmail's options: hand-parsed because -oi, -bs, -bp look like clusters to getopt. */
    int i = 1;
    for (; i < argc && argv[i][0] == '-' && argv[i][1]; i++) {
        const char *o = argv[i];
        if (strcmp(o, "--") == 0) {
            i++;
            break;
        } else if (strcmp(o, "-t") == 0) {
            extract = 1;
        } else if (strcmp(o, "-i") == 0 || strcmp(o, "-oi") == 0) {
            dot_ends = 0;
        } else if (strncmp(o, "-f", 2) == 0 || strncmp(o, "-r", 2) == 0) {
            sender = o[2] ? o + 2 : (i + 1 < argc ? argv[++i] : NULL);
            if (sender == NULL)
                die(EX_USAGE, "option %.2s needs an argument", o);
        } else if (strncmp(o, "-F", 2) == 0) {
            fullname = o[2] ? o + 2 : (i + 1 < argc ? argv[++i] : NULL);
            if (fullname == NULL)
                die(EX_USAGE, "option -F needs an argument");
        } else if (strncmp(o, "-C", 2) == 0) {
            confdir = o[2] ? o + 2 : (i + 1 < argc ? argv[++i] : NULL);
            if (confdir == NULL)
                die(EX_USAGE, "option -C needs an argument");
        } else if (strcmp(o, "-bs") == 0) {
            mode_bs = 1;
        } else if (strcmp(o, "-bp") == 0) {
            mode_bp = 1;
        } else if (strcmp(o, "-bi") == 0 || strcmp(o, "-I") == 0) {
            mode_bi = 1;
        } else if (strcmp(o, "-q") == 0) {
            mode_q = 1;
        } else if (strcmp(o, "-bm") == 0 || strncmp(o, "-o", 2) == 0 || strcmp(o, "-v") == 0 ||
                   strncmp(o, "-B", 2) == 0 || strncmp(o, "-N", 2) == 0 || strncmp(o, "-R", 2) == 0 ||
                   strncmp(o, "-V", 2) == 0 || strcmp(o, "-U") == 0 || strncmp(o, "-X", 2) == 0) {
            /* accepted and ignored, as Postfix's sendmail does for most of them */
            if ((strcmp(o, "-N") == 0 || strcmp(o, "-R") == 0 || strcmp(o, "-V") == 0 || strcmp(o, "-B") == 0 ||
                 strcmp(o, "-X") == 0) && i + 1 < argc)
                i++;
        } else {
            die(EX_USAGE, "unsupported option %s", o);
        }
    }
    if (mode_bi)
        run_newaliases(confdir);
    if (mode_bp) {
        char *args[] = { "list", NULL };
        return queue_main(confdir, 1, args);
    }
    if (mode_q) {
        char *args[] = { "flush", NULL };
        return queue_main(confdir, 1, args);
    }
    refuse_line_breaks("the -f sender", sender);
    refuse_line_breaks("the -F full name", fullname);
    for (int k = i; k < argc; k++)
        refuse_line_breaks("a recipient argument", argv[k]);

    struct sm_conf conf;
    memset(&conf, 0, sizeof(conf));
    conf.pool = petrel_pool_create(8192);
    conf.confdir = confdir;
    conf.default_confdir = strcmp(confdir, PETREL_SYSCONFDIR) == 0;
    load_conf(&conf);
    int status;
    if (mode_bs) {
        if (i < argc)
            die(EX_USAGE, "-bs takes no recipient arguments");
        status = sendmail_bs(&conf);
    } else {
        status = deliver(&conf, sender, fullname, extract, dot_ends, argv + i, argc - i);
    }
    petrel_pool_destroy(conf.pool);
    return status;
}
