/*
 * `petrelctl queue list|show|delete|hold|release|requeue|flush`: Postfix's
 * mailq (postqueue -p / -j), postcat -q and postsuper -d/-h/-H/-r, plus
 * postqueue -f, on Petrel's spool.
 *
 * Design:
 *
 * - Streaming. The queue may hold 500,000 messages, so nothing is ever
 *   collected: queue_scan streams each directory (readdir), and each
 *   message is read into one pool that is reset after the message. Memory
 *   is bounded by the largest single message envelope (plus its defer
 *   file), whatever the queue size. Only envelopes are read; `show`
 *   streams the content in 64 KiB chunks.
 *
 * - The running system is not stopped. Moves are rename(2) (queue_move)
 *   and deletes unlink(2), so a message the queue manager is delivering
 *   can be held, requeued or deleted: the queue manager keeps its open
 *   descriptor and finds the name gone (ENOENT) when it next moves or
 *   removes it. Conversely a file that vanishes under us (delivered,
 *   moved) is skipped silently. Explicit IDs are looked up again when they
 *   vanish mid-operation, because the queue manager may just have moved
 *   them to another directory. The directories touched are fsynced once at
 *   the end (not once per message, which would make bulk work on a big
 *   queue crawl), so a completed command survives a crash.
 *
 * - Output formats are Postfix's, so scripts that parse mailq or
 *   postqueue -j keep working: showq_compat's columns with the first column
 *   widened by 9 for our 19-character queue IDs (everything after it,
 *   recipient indent and right-aligned reasons included, moves by the same
 *   9 columns), its reason-line rules and its summary line; postqueue -j's
 *   object layout and string quoting; postsuper's summaries on stderr.
 *   As showq does, recipients with a line in the queue manager's defer
 *   file ($queue_directory/defer/ID: "address TAB dsn TAB reason") come
 *   first with their reason, then the other undelivered recipients.
 *
 * - Selectors (sender, recipient domain, age, queue, defer reason) filter
 *   every command, so bulk work on a big queue is one streamed pass. The
 *   envelope is read only when a selector or the command needs it: a bare
 *   `delete ALL` or `flush` touches names only.
 */
#include "config.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <petrel/pool.h>

#include "config/cfg.h"
#include "lib/buf.h"
#include "lib/ipc.h"
#include "queue/queue.h"
#include "tools/queue_cmd.h"
#include "tools/queue_cmd_int.h"

static int usage(const char *why)
{
    if (why)
        fprintf(stderr, "petrelctl: %s\n", why);
    fprintf(stderr,
            "usage: petrelctl queue [list] [--json] [SELECTOR...] [ID...]\n"
            "       petrelctl queue show ID... | SELECTOR...\n"
            "       petrelctl queue delete|hold|release|requeue ID... | ALL | SELECTOR...\n"
            "       petrelctl queue flush [ID... | SELECTOR...]\n"
            "selectors: --sender ADDR (\"<>\" for the null sender), --recipient-domain DOMAIN,\n"
            "           --older-than TIME (30s, 10m, 2h, 3d, 1w), --reason TEXT,\n"
            "           --queue incoming|active|deferred|hold|corrupt (may repeat)\n");
    return 2;
}

/* ---- small helpers ---- */

static long long parse_duration(const char *s)
{
    if (!isdigit((unsigned char)*s))
        return -1;
    errno = 0;
    char *end;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno != 0)
        return -1;
    unsigned long long unit = 1;
    switch (*end) {
    case '\0': case 's': unit = 1; break;
    case 'm': unit = 60; break;
    case 'h': unit = 3600; break;
    case 'd': unit = 86400; break;
    case 'w': unit = 604800; break;
    default: return -1;
    }
    if (*end != '\0' && end[1] != '\0')
        return -1;
    if (v > (unsigned long long)(1LL << 53) / unit)
        return -1;
    return (long long)(v * unit);
}

static int parse_queue_name(const char *name, unsigned *set)
{
    for (int d = 0; d < QDIR_COUNT; d++) {
        if (strcmp(name, queue_dir_name((enum queue_dir)d)) == 0) {
            *set |= QBIT(d);
            return 0;
        }
    }
    return -1;
}

static const char *domain_of(const char *address)
{
    const char *at = strrchr(address, '@');
    return at ? at + 1 : "";
}

/* ---- reading a message ---- */

/* The defer file's text (NUL-terminated, in the pool) or NULL when there is
 * none: its absence is normal (never tried, or not deferred). A file
 * bigger than the envelope limit is read up to that limit. */
static char *read_defer(struct ctx *c, const char *id, size_t *len)
{
    if (c->defer_fd < 0)
        return NULL;
    int fd = openat(c->defer_fd, id, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0)
        return NULL;
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        close(fd);
        return NULL;
    }
    size_t cap = st.st_size > (off_t)QUEUE_ENVELOPE_MAX ? QUEUE_ENVELOPE_MAX : (size_t)st.st_size;
    char *text = petrel_pool_alloc(c->pool, cap + 1);
    size_t got = 0;
    while (got < cap) {
        ssize_t n = read(fd, text + got, cap - got);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        got += (size_t)n;
    }
    close(fd);
    text[got] = '\0';
    *len = got;
    return text;
}

struct slot {
    const char *address;
    long shown;                /* index in msg->rcpts, or -1 */
};

static unsigned long hash_str(const char *s)
{
    unsigned long h = 14695981039346656037UL;
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 1099511628211UL;
    return h;
}

static struct slot *slot_find(struct slot *tab, size_t mask, const char *address, int insert)
{
    for (size_t i = hash_str(address) & mask;; i = (i + 1) & mask) {
        if (tab[i].address == NULL) {
            if (!insert)
                return NULL;
            tab[i].address = address;
            tab[i].shown = -1;
            return &tab[i];
        }
        if (strcmp(tab[i].address, address) == 0)
            return &tab[i];
    }
}

/* Builds msg->rcpts: the undelivered recipients, those named in the defer
 * file first (in its order, with its reason; a later line for the same
 * address updates the reason), then the others without a reason, skipping
 * addresses already listed, as showq's duplicate filter does. A hash table
 * keeps a message with many recipients linear. */
void qc_build_rcpts(struct ctx *c, struct msg *msg)
{
    if (msg->rcpts_built)
        return;
    msg->rcpts_built = 1;
    const struct queue_message *m = &msg->m;
    size_t pending = 0;
    for (size_t i = 0; i < m->env.rcpt_count; i++)
        if (!queue_rcpt_status_final(m->rcpt_state[i].status))
            pending++;
    msg->rcpts = petrel_pool_alloc(c->pool, (pending ? pending : 1) * sizeof(*msg->rcpts));
    msg->nrcpts = 0;
    size_t len = 0;
    char *text = pending ? read_defer(c, msg->id, &len) : NULL;
    if (text == NULL) {
        for (size_t i = 0; i < m->env.rcpt_count; i++)
            if (!queue_rcpt_status_final(m->rcpt_state[i].status))
                msg->rcpts[msg->nrcpts++] = (struct shown){ m->env.rcpts[i].address, NULL, "" };
        return;
    }
    size_t size = 8;
    while (size < pending * 2)
        size *= 2;
    struct slot *tab = petrel_pool_zalloc(c->pool, size * sizeof(*tab));
    for (size_t i = 0; i < m->env.rcpt_count; i++)
        if (!queue_rcpt_status_final(m->rcpt_state[i].status))
            slot_find(tab, size - 1, m->env.rcpts[i].address, 1);
    char *line = text, *end = text + len;
    while (line < end) {
        char *nl = memchr(line, '\n', (size_t)(end - line));
        char *next = nl ? nl + 1 : end;
        if (nl)
            *nl = '\0';
        size_t ll = strlen(line);
        if (ll > 0 && line[ll - 1] == '\r')
            line[ll - 1] = '\0';
        char *tab1 = strchr(line, '\t');
        char *tab2 = tab1 ? strchr(tab1 + 1, '\t') : NULL;
        if (tab2) {
            *tab1 = *tab2 = '\0';
            struct slot *s = slot_find(tab, size - 1, line, 0);
            if (s) {
                if (s->shown < 0) {
                    s->shown = (long)msg->nrcpts;
                    msg->rcpts[msg->nrcpts++] = (struct shown){ s->address, tab1 + 1, tab2 + 1 };
                } else {
                    msg->rcpts[s->shown].dsn = tab1 + 1;
                    msg->rcpts[s->shown].reason = tab2 + 1;
                }
            }
        }
        line = next;
    }
    for (size_t i = 0; i < m->env.rcpt_count; i++) {
        if (queue_rcpt_status_final(m->rcpt_state[i].status))
            continue;
        struct slot *s = slot_find(tab, size - 1, m->env.rcpts[i].address, 0);
        if (s && s->shown >= 0)
            continue;
        msg->rcpts[msg->nrcpts++] = (struct shown){ m->env.rcpts[i].address, NULL, "" };
    }
}

/* Reads msg's envelope from an open file or by name. Returns 0 (msg->ok
 * tells whether the file was valid), or ENOENT when the file is gone or is
 * still being written: both are skipped silently. */
static int load(struct ctx *c, struct msg *msg, int fd)
{
    char *error = NULL;
    int rc = fd >= 0 ? queue_message_read_fd(fd, msg->id, c->pool, &msg->m, &error)
                     : queue_message_read(queue_dir_fd(c->q, msg->dir), msg->id, c->pool, &msg->m, &error);
    if (rc == 0) {
        msg->ok = 1;
        return 0;
    }
    int err = errno;
    if (err == ENOENT || (err == ENODATA && msg->dir == QDIR_INCOMING))
        return ENOENT;   /* gone, or an incoming file whose writer has not finished */
    msg->ok = 0;
    msg->error = error ? error : petrel_pool_strdup(c->pool, strerror(err));
    int sfd = queue_dir_fd(c->q, msg->dir);
    if ((fd >= 0 ? fstat(fd, &msg->st) : fstatat(sfd, msg->id, &msg->st, AT_SYMLINK_NOFOLLOW)) != 0)
        return ENOENT;
    return 0;
}

long long qc_arrival(const struct msg *msg)
{
    return msg->ok ? msg->m.env.arrival_sec : (long long)msg->st.st_mtime;
}

static int need_envelope(const struct ctx *c)
{
    return c->vi->verb == V_LIST || c->vi->verb == V_SHOW || c->sel.sender || c->sel.domain
           || c->sel.reason || c->sel.older_than >= 0;
}

/* Whether a loaded message passes the selectors. A damaged file matches
 * only selectors that do not look inside the envelope. */
static int matches(struct ctx *c, struct msg *msg)
{
    if (c->sel.older_than >= 0 && !((long long)c->now - qc_arrival(msg) > c->sel.older_than))
        return 0;
    if (!c->sel.sender && !c->sel.domain && !c->sel.reason)
        return 1;
    if (!msg->ok)
        return 0;
    if (c->sel.sender && strcasecmp(msg->m.env.sender, c->sel.sender) != 0)
        return 0;
    if (c->sel.domain || c->sel.reason) {
        qc_build_rcpts(c, msg);
        int dom = !c->sel.domain, why = !c->sel.reason;
        for (size_t i = 0; i < msg->nrcpts && !(dom && why); i++) {
            if (!dom && strcasecmp(domain_of(msg->rcpts[i].address), c->sel.domain) == 0)
                dom = 1;
            if (!why && strcasestr(msg->rcpts[i].reason, c->sel.reason) != NULL)
                why = 1;
        }
        return dom && why;
    }
    return 1;
}

/* ---- actions ---- */

static void sync_later(struct ctx *c, enum queue_dir a, enum queue_dir b)
{
    c->synced |= QBIT(a) | QBIT(b);
}

/* Applies the command to ID in dir. 0 done, 1 not applicable here,
 * ENOENT the file vanished, -1 failed (reported). */
static int act(struct ctx *c, enum queue_dir dir, const char *id)
{
    int rc = 0;
    enum queue_dir to = dir;
    switch (c->vi->verb) {
    case V_DELETE:
        rc = queue_remove(c->q, id, dir);
        if (rc == 0 && c->defer_fd >= 0)
            (void)unlinkat(c->defer_fd, id, 0);   /* its reasons die with it; usually absent */
        break;
    case V_HOLD:
        to = QDIR_HOLD;
        break;
    case V_RELEASE:
        to = QDIR_DEFERRED;
        break;
    case V_REQUEUE:
        to = QDIR_INCOMING;
        break;
    case V_FLUSH:
        /* The queue manager retries a deferred file when its mtime has
         * passed: now is "retry at once". */
        rc = utimensat(queue_dir_fd(c->q, dir), id, NULL, AT_SYMLINK_NOFOLLOW);
        break;
    default:
        return 1;
    }
    if (to != dir) {
        rc = queue_move(c->q, id, dir, to);
        if (rc == 0 && c->vi->verb == V_RELEASE)
            /* Due at once: deferred/ is scheduled by mtime. A failure only
             * delays the retry, so it is not worth failing the command. */
            (void)utimensat(queue_dir_fd(c->q, to), id, NULL, AT_SYMLINK_NOFOLLOW);
        if (rc == 0 && c->vi->verb == V_REQUEUE && c->defer_fd >= 0)
            (void)unlinkat(c->defer_fd, id, 0);   /* scheduled afresh: old reasons no longer apply */
    }
    if (rc != 0) {
        if (errno == ENOENT)
            return ENOENT;
        fprintf(stderr, "petrelctl: %s: cannot %s (%s/%s): %s\n", id, c->vi->name, queue_dir_name(dir), id,
                strerror(errno));
        c->status = 1;
        return -1;
    }
    sync_later(c, dir, to);
    c->count++;
    return 0;
}

/* Selects and processes one message found in dir. 0, or ENOENT when it
 * vanished (an explicit ID is then looked up again). */
static int process(struct ctx *c, enum queue_dir dir, const char *id)
{
    struct msg msg;
    memset(&msg, 0, sizeof(msg));
    msg.id = id;
    msg.dir = dir;
    if (c->vi->verb == V_SHOW) {
        /* One open file for envelope and content, so a move between the
         * two cannot pair one message's envelope with nothing. */
        int fd = openat(queue_dir_fd(c->q, dir), id, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
        if (fd < 0) {
            if (errno == ENOENT)
                return ENOENT;
            fprintf(stderr, "petrelctl: %s/%s: %s\n", queue_dir_name(dir), id, strerror(errno));
            c->status = 1;
            return 0;
        }
        int rc = load(c, &msg, fd);
        if (rc == 0 && matches(c, &msg)) {
            if (qc_show_message(c, &msg, fd) != 0)
                c->status = 1;
            c->count++;
        }
        close(fd);
        return rc;
    }
    if (need_envelope(c)) {
        int rc = load(c, &msg, -1);
        if (rc != 0)
            return rc;
        if (!matches(c, &msg))
            return 0;
    }
    if (c->vi->verb == V_LIST) {
        if (c->json)
            qc_list_json(c, &msg);
        else
            qc_list_text(c, &msg);
        c->count++;
        c->bytes += msg.ok ? msg.m.content_length : (unsigned long long)msg.st.st_size;
        return 0;
    }
    int rc = act(c, dir, id);
    return rc == ENOENT ? ENOENT : 0;
}

/* The directory being scanned travels beside the context. */
struct scan_arg {
    struct ctx *c;
    enum queue_dir dir;
};

static void scan_cb(void *arg, const char *id)
{
    struct scan_arg *a = arg;
    (void)process(a->c, a->dir, id);
    petrel_pool_reset(a->c->pool);
}

/* Where ID is now, among all directories (so a message in a directory the
 * command does not work on is "found", not "unknown"). */
static int locate(struct ctx *c, const char *id, enum queue_dir *where)
{
    static const enum queue_dir flow[] = { QDIR_INCOMING, QDIR_ACTIVE, QDIR_DEFERRED, QDIR_HOLD, QDIR_CORRUPT };
    for (size_t i = 0; i < sizeof(flow) / sizeof(flow[0]); i++) {
        struct stat st;
        if (fstatat(queue_dir_fd(c->q, flow[i]), id, &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISREG(st.st_mode)) {
            *where = flow[i];
            return 0;
        }
    }
    return -1;
}

static void do_id(struct ctx *c, const char *id)
{
    if (!queue_id_valid(id)) {
        fprintf(stderr, "petrelctl: %s: not a queue ID\n", id);
        c->status = 1;
        return;
    }
    int seen = 0;
    /* A few rounds: the queue manager may move the file between our look
     * at one directory and the next, or between the look and the action. */
    for (int round = 0; round < 4; round++) {
        enum queue_dir dir;
        if (locate(c, id, &dir) != 0)
            continue;
        seen = 1;
        /* A named message may be in corrupt/ too (delete it, show why it
         * is damaged), unless --queue narrowed the choice. */
        if (!((c->sel.queues ? c->selected : c->allowed) & QBIT(dir)))
            return;   /* not where this command works (release of a non-held message): nothing to do */
        int rc = process(c, dir, id);
        petrel_pool_reset(c->pool);
        if (rc != ENOENT)
            return;
    }
    if (!seen) {
        fprintf(stderr, "petrelctl: %s: no such message in the queue\n", id);
        c->status = 1;
    }
    /* seen but gone since: delivered or removed meanwhile, skipped silently */
}

/* ---- configuration and the master ---- */

static char *queue_directory(const char *confdir)
{
    struct cfg_schema *schema = cfg_schema_new();
    char *dir = cfg_peek(schema, confdir, "queue_directory");
    cfg_schema_free(schema);
    if (dir == NULL)
        fprintf(stderr, "petrelctl: cannot read %s/main.cf: %s\n", confdir, strerror(errno));
    return dir;
}

/* Asks the master to rescan the deferred queue now. 0 done, 1 failed
 * (reported). */
static int request_flush(const char *qdir)
{
    struct sockaddr_un sun;
    memset(&sun, 0, sizeof(sun));
    sun.sun_family = AF_UNIX;
    if ((size_t)snprintf(sun.sun_path, sizeof(sun.sun_path), "%s/private/control", qdir) >= sizeof(sun.sun_path)) {
        fprintf(stderr, "petrelctl: queue_directory path too long: %s\n", qdir);
        return 1;
    }
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0 || connect(fd, (struct sockaddr *)&sun, sizeof(sun)) != 0) {
        fprintf(stderr, "petrelctl: cannot flush: the Petrel mail system is not running (%s: %s)\n", sun.sun_path,
                strerror(errno));
        if (fd >= 0)
            close(fd);
        return 1;
    }
    struct buf b = BUF_INIT;
    ipc_begin(&b, IPC_CTL_REQUEST);
    ipc_add_str(&b, "flush");
    ipc_finish(&b);
    struct ipc_msg reply;
    int status = 1;
    if (ipc_write_all(fd, b.data, b.len) != 0) {
        fprintf(stderr, "petrelctl: write to %s: %s\n", sun.sun_path, strerror(errno));
    } else if (ipc_read_frame(fd, &b, &reply) != 0 || reply.type != IPC_CTL_REPLY || reply.count < 2) {
        fprintf(stderr, "petrelctl: no valid reply from the master on %s\n", sun.sun_path);
    } else {
        status = reply.fields[0].len == 1 && reply.fields[0].data[0] == '0' ? 0 : 1;
        if (status != 0)
            fprintf(stderr, "petrelctl: cannot flush: %.*s\n", (int)reply.fields[1].len, reply.fields[1].data);
        else if (reply.fields[1].len > 0)
            printf("%.*s\n", (int)reply.fields[1].len, reply.fields[1].data);
    }
    buf_free(&b);
    close(fd);
    return status;
}

/* ---- main ---- */

static const char *option_value(int argc, char **argv, int *i, const char *name)
{
    size_t n = strlen(name);
    const char *a = argv[*i];
    if (strncmp(a, name, n) != 0)
        return NULL;
    if (a[n] == '=')
        return a + n + 1;
    if (a[n] != '\0')
        return NULL;
    if (*i + 1 >= argc)
        return "";   /* reported as missing by the caller */
    return argv[++*i];
}

int queue_main(const char *confdir, int argc, char **argv)
{
    int i = 0;
    const struct verb_info *vi = &verbs[0];
    if (argc > 0 && argv[0][0] != '-') {
        vi = NULL;
        for (size_t k = 0; k < sizeof(verbs) / sizeof(verbs[0]); k++)
            if (strcmp(argv[0], verbs[k].name) == 0)
                vi = &verbs[k];
        if (vi == NULL) {
            if (strcmp(argv[0], "help") == 0)
                return usage(NULL);
            fprintf(stderr, "petrelctl: unknown queue command \"%s\"\n", argv[0]);
            return usage(NULL);
        }
        i = 1;
    }
    struct ctx c;
    memset(&c, 0, sizeof(c));
    c.vi = vi;
    c.sel.older_than = -1;
    c.defer_fd = -1;
    c.out = stdout;
    int all = 0, nids = 0, any_selector = 0, options_done = 0;
    /* IDs are collected in place at the front of argv's tail, so no
     * allocation grows with the command line. */
    char **ids = argv + i;
    for (; i < argc; i++) {
        const char *a = argv[i], *v;
        if (!options_done && a[0] == '-' && a[1] != '\0') {
            if (strcmp(a, "--") == 0) {
                options_done = 1;
            } else if (strcmp(a, "--json") == 0 || strcmp(a, "-j") == 0) {
                if (vi->verb != V_LIST)
                    return usage("--json is for queue list only");
                c.json = 1;
            } else if ((v = option_value(argc, argv, &i, "--sender")) != NULL) {
                c.sel.sender = strcmp(v, "<>") == 0 ? "" : v;
                any_selector = 1;
            } else if ((v = option_value(argc, argv, &i, "--recipient-domain")) != NULL) {
                if (*v == '\0')
                    return usage("--recipient-domain needs a domain");
                c.sel.domain = v[0] == '@' ? v + 1 : v;
                any_selector = 1;
            } else if ((v = option_value(argc, argv, &i, "--older-than")) != NULL) {
                if ((c.sel.older_than = parse_duration(v)) < 0) {
                    fprintf(stderr, "petrelctl: bad --older-than \"%s\": use a number with s, m, h, d or w\n", v);
                    return usage(NULL);
                }
                any_selector = 1;
            } else if ((v = option_value(argc, argv, &i, "--queue")) != NULL) {
                /* Repeatable, and "deferred,hold" works too. */
                char name[32];
                const char *p = v;
                do {
                    size_t len = strcspn(p, ",");
                    snprintf(name, sizeof(name), "%.*s", (int)(len < sizeof(name) - 1 ? len : sizeof(name) - 1), p);
                    if (parse_queue_name(name, &c.sel.queues) != 0) {
                        fprintf(stderr, "petrelctl: unknown queue \"%s\"\n", name);
                        return usage(NULL);
                    }
                    p += len;
                } while (*p++ == ',');
                any_selector = 1;
            } else if ((v = option_value(argc, argv, &i, "--reason")) != NULL) {
                if (*v == '\0')
                    return usage("--reason needs some text");
                c.sel.reason = v;
                any_selector = 1;
            } else {
                fprintf(stderr, "petrelctl: unknown option \"%s\"\n", a);
                return usage(NULL);
            }
        } else if (strcmp(a, "ALL") == 0) {
            all = 1;
        } else {
            ids[nids++] = argv[i];
        }
    }
    if (all && nids > 0)
        return usage("give queue IDs or ALL, not both");
    if ((vi->verb == V_SHOW || vi->verb == V_DELETE || vi->verb == V_HOLD || vi->verb == V_RELEASE
         || vi->verb == V_REQUEUE) && !all && nids == 0 && !any_selector)
        return usage(vi->verb == V_SHOW ? "queue show needs a queue ID or a selector"
                                        : "say which messages: queue IDs, ALL, or selectors");
    if (all && (vi->verb == V_LIST || vi->verb == V_SHOW || vi->verb == V_FLUSH))
        all = 0;   /* "everything" is already their default */
    unsigned allowed = 0;
    for (const enum queue_dir *d = vi->order; *d != DIR_END; d++)
        allowed |= QBIT(*d);
    c.selected = (c.sel.queues ? c.sel.queues : vi->defaults) & allowed;
    c.allowed = allowed;
    if (c.selected == 0) {
        fprintf(stderr, "petrelctl: queue %s works on", vi->name);
        for (const enum queue_dir *d = vi->order; *d != DIR_END; d++)
            fprintf(stderr, " %s/", queue_dir_name(*d));
        fputs(" only\n", stderr);
        return 2;
    }

    char *qdir = queue_directory(confdir);
    if (qdir == NULL)
        return 1;
    char *error = NULL;
    c.q = queue_open(qdir, 0, &error);
    if (c.q == NULL) {
        fprintf(stderr, "petrelctl: %s\n", error ? error : "cannot open the queue");
        free(error);
        free(qdir);
        return 1;
    }
    {
        char path[4096];
        if ((size_t)snprintf(path, sizeof(path), "%s/defer", qdir) < sizeof(path))
            c.defer_fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    }
    c.pool = petrel_pool_create(16384);
    c.now = time(NULL);
    /* Big writes: a 500,000-message listing is mostly output. */
    setvbuf(stdout, NULL, _IOFBF, 1 << 16);

    if (nids > 0) {
        for (int k = 0; k < nids; k++)
            do_id(&c, ids[k]);
    } else {
        for (const enum queue_dir *d = vi->order; *d != DIR_END; d++) {
            if (!(c.selected & QBIT(*d)))
                continue;
            struct scan_arg a = { &c, *d };
            if (queue_scan(c.q, *d, scan_cb, &a) != 0) {
                fprintf(stderr, "petrelctl: scan %s/%s: %s\n", qdir, queue_dir_name(*d), strerror(errno));
                c.status = 1;
            }
        }
    }

    if (vi->verb == V_LIST && !c.json) {
        if (c.count == 0)
            fputs("Mail queue is empty\n", stdout);
        else
            fprintf(stdout, "\n-- %llu Kbytes in %lu Request%s.\n", c.bytes / 1024, c.count,
                    c.count == 1 ? "" : "s");
    }
    if (fflush(stdout) != 0 || ferror(stdout)) {
        fprintf(stderr, "petrelctl: output write error: %s\n", strerror(errno));
        c.status = 1;
    }
    /* One fsync per directory touched makes the whole command durable. */
    for (int d = 0; d < QDIR_COUNT; d++)
        if ((c.synced & QBIT(d)) && fsync(queue_dir_fd(c.q, (enum queue_dir)d)) != 0) {
            fprintf(stderr, "petrelctl: fsync %s/%s: %s\n", qdir, queue_dir_name((enum queue_dir)d), strerror(errno));
            c.status = 1;
        }
    if (vi->done && c.count > 0)
        fprintf(stderr, "petrelctl: %s: %lu message%s\n", vi->done, c.count, c.count == 1 ? "" : "s");
    if (vi->verb == V_FLUSH && request_flush(qdir) != 0)
        c.status = 1;

    petrel_pool_destroy(c.pool);
    if (c.defer_fd >= 0)
        close(c.defer_fd);
    queue_close(c.q);
    free(qdir);
    return c.status;
}
