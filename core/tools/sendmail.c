/*
 * petrel-sendmail: the sendmail(1) interface programs expect.
 *
 * It submits through the pickup service: an SMTP conversation over the UNIX
 * socket $queue_directory/public/pickup, served by the smtpd workers. No
 * setgid helper and no privileged file writes: the daemon learns the user
 * from the socket (SO_PEERCRED), and the message goes through the same
 * checks and module hooks as mail from the network. The configuration is
 * found like Postfix's sendmail: -C DIR, else $MAIL_CONFIG, else the default.
 *
 *   petrel-sendmail [-t] [-i|-oi] [-f sender] [-F fullname] [-C dir] [recipient ...]
 *   petrel-sendmail -bs        SMTP on standard input/output
 *   petrel-sendmail -bp        list the queue (mailq)
 *   petrel-sendmail -q         flush the queue
 *
 * Exit status follows sysexits(3): 0, EX_USAGE, EX_NOUSER/EX_UNAVAILABLE on
 * a permanent refusal, EX_TEMPFAIL on a temporary one or when petreld does
 * not answer.
 */
#include "config.h"

#include <ctype.h>
#include <errno.h>
#include <poll.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sysexits.h>
#include <time.h>
#include <unistd.h>

#include "config/config.h"
#include "lib/buf.h"
#include "lib/log.h"
#include "lib/xalloc.h"
#include "tools/queue_cmd.h"

#define MAX_RECIPIENTS 10000
#define HEADER_LIMIT (1024 * 1024)

struct conn {
    int fd;
    char buf[8192];
    size_t len;
    int code;
    char line[1024];
};

static __attribute__((noreturn)) void die(int status, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void die(int status, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("petrel-sendmail: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    exit(status);
}

static int read_reply(struct conn *c)
{
    for (;;) {
        char *nl = memchr(c->buf, '\n', c->len);
        if (nl) {
            size_t n = (size_t)(nl - c->buf) + 1;
            size_t keep = n < sizeof(c->line) ? n : sizeof(c->line) - 1;
            memcpy(c->line, c->buf, keep);
            c->line[keep] = '\0';
            c->line[strcspn(c->line, "\r\n")] = '\0';
            memmove(c->buf, c->buf + n, c->len - n);
            c->len -= n;
            if (strlen(c->line) >= 4 && c->line[3] == '-')
                continue;   /* more lines follow */
            c->code = atoi(c->line);
            return c->code;
        }
        if (c->len == sizeof(c->buf))
            c->len = 0;   /* an absurd line: drop it */
        ssize_t n = read(c->fd, c->buf + c->len, sizeof(c->buf) - c->len);
        if (n <= 0)
            die(EX_TEMPFAIL, "lost connection with the mail system");
        c->len += (size_t)n;
    }
}

static void send_all(struct conn *c, const char *data, size_t len)
{
    while (len) {
        ssize_t n = write(c->fd, data, len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            die(EX_TEMPFAIL, "lost connection with the mail system");
        data += n;
        len -= (size_t)n;
    }
}

static int command(struct conn *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int command(struct conn *c, const char *fmt, ...)
{
    char line[2048];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(line, sizeof(line) - 2, fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= sizeof(line) - 2)
        die(EX_DATAERR, "command too long");
    memcpy(line + n, "\r\n", 2);
    send_all(c, line, (size_t)n + 2);
    return read_reply(c);
}

/* "user@domain" in a new allocation */
static char *join_at(const char *user, const char *domain)
{
    size_t n = strlen(user) + strlen(domain) + 2;
    char *out = xmalloc(n);
    snprintf(out, n, "%s@%s", user, domain);
    return out;
}

static int refusal_status(int code)
{
    return code >= 500 ? EX_UNAVAILABLE : EX_TEMPFAIL;
}

static void connect_pickup(struct conn *c, const char *confdir)
{
    struct cfg_schema *schema = cfg_schema_new();
    char *qdir = cfg_peek(schema, confdir, "queue_directory");
    cfg_schema_free(schema);
    if (qdir == NULL)
        die(EX_CONFIG, "cannot read %s/main.cf: %s", confdir, strerror(errno));
    struct sockaddr_un sun;
    memset(&sun, 0, sizeof(sun));
    sun.sun_family = AF_UNIX;
    if ((size_t)snprintf(sun.sun_path, sizeof(sun.sun_path), "%s/public/pickup", qdir) >= sizeof(sun.sun_path))
        die(EX_CONFIG, "queue_directory path too long");
    c->fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (c->fd < 0 || connect(c->fd, (struct sockaddr *)&sun, sizeof(sun)) != 0)
        die(EX_TEMPFAIL, "cannot submit: %s: %s (is petreld running with a pickup line in master.cf?)",
            sun.sun_path, strerror(errno));
    free(qdir);
    c->len = 0;
    if (read_reply(c) != 220)
        die(refusal_status(c->code), "the mail system refused the submission: %s", c->line);
}

/* Adds the addresses of one header value (To/Cc/Bcc) to rcpts. */
static void header_addresses(const char *value, char **rcpts, int *n)
{
    const char *p = value;
    while (*p && *n < MAX_RECIPIENTS) {
        /* one address per comma-separated item (quotes respected) */
        const char *start = p;
        int quoted = 0, angle = 0;
        for (; *p; p++) {
            if (*p == '"')
                quoted = !quoted;
            else if (!quoted && *p == '<')
                angle = 1;
            else if (!quoted && *p == '>')
                angle = 0;
            else if (!quoted && !angle && *p == ',')
                break;
        }
        size_t len = (size_t)(p - start);
        char *item = xstrndup(start, len);
        char *lt = strchr(item, '<'), *addr = item;
        if (lt) {
            addr = lt + 1;
            addr[strcspn(addr, ">")] = '\0';
        }
        while (isspace((unsigned char)*addr))
            addr++;
        size_t al = strlen(addr);
        while (al && isspace((unsigned char)addr[al - 1]))
            addr[--al] = '\0';
        if (*addr && strchr(addr, '@') && !strchr(addr, ' '))
            rcpts[(*n)++] = xstrdup(addr);
        free(item);
        if (*p == ',')
            p++;
    }
}

static int header_is(const char *line, const char *name)
{
    size_t n = strlen(name);
    return strncasecmp(line, name, n) == 0 && line[n] == ':';
}

/* SMTP on stdin/stdout, relayed to the pickup service (-bs). */
static int relay_stdio(struct conn *c)
{
    /* The greeting was consumed by connect_pickup: repeat it. */
    printf("%s\r\n", c->line);
    fflush(stdout);
    if (c->len)
        fwrite(c->buf, 1, c->len, stdout);
    fflush(stdout);
    struct pollfd fds[2] = { { 0, POLLIN, 0 }, { c->fd, POLLIN, 0 } };
    char buf[8192];
    for (;;) {
        if (poll(fds, 2, -1) < 0) {
            if (errno == EINTR)
                continue;
            return EX_IOERR;
        }
        if (fds[0].revents) {
            ssize_t n = read(0, buf, sizeof(buf));
            if (n <= 0) {
                shutdown(c->fd, SHUT_WR);
                fds[0].fd = -1;
            } else {
                send_all(c, buf, (size_t)n);
            }
        }
        if (fds[1].revents) {
            ssize_t n = read(c->fd, buf, sizeof(buf));
            if (n <= 0)
                return 0;
            fwrite(buf, 1, (size_t)n, stdout);
            fflush(stdout);
        }
    }
}

int main(int argc, char **argv)
{
    const char *confdir = getenv("MAIL_CONFIG");
    if (confdir == NULL || *confdir == '\0')
        confdir = PETREL_SYSCONFDIR;
    const char *sender = NULL, *fullname = NULL;
    int extract = 0, dot_ends = 1, mode_bs = 0, mode_bp = 0, mode_q = 0;
    log_init("petrel", "sendmail");
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
        } else if (strncmp(o, "-F", 2) == 0) {
            fullname = o[2] ? o + 2 : (i + 1 < argc ? argv[++i] : NULL);
        } else if (strncmp(o, "-C", 2) == 0) {
            confdir = o[2] ? o + 2 : (i + 1 < argc ? argv[++i] : NULL);
        } else if (strcmp(o, "-bs") == 0) {
            mode_bs = 1;
        } else if (strcmp(o, "-bp") == 0) {
            mode_bp = 1;
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
    if (confdir == NULL)
        die(EX_USAGE, "missing option argument");
    if (mode_bp) {
        char *args[] = { "list", NULL };
        return queue_main(confdir, 1, args);
    }
    if (mode_q) {
        char *args[] = { "flush", NULL };
        return queue_main(confdir, 1, args);
    }
    struct conn c;
    memset(&c, 0, sizeof(c));
    connect_pickup(&c, confdir);
    if (mode_bs)
        return relay_stdio(&c);

    struct passwd *pw = getpwuid(getuid());
    const char *login = pw ? pw->pw_name : "nobody";
    struct cfg_schema *schema = cfg_schema_new();
    char *myorigin = cfg_peek(schema, confdir, "myorigin");
    char *myhostname = cfg_peek(schema, confdir, "myhostname");
    cfg_schema_free(schema);
    const char *origin = myorigin ? myorigin : "localhost";
    char *default_sender = join_at(login, origin);
    if (sender == NULL)
        sender = default_sender;
    else if (*sender && strchr(sender, '@') == NULL) {
        sender = join_at(sender, origin);
    }
    if (strcmp(sender, "<>") == 0)
        sender = "";

    /* Read the message: headers first (for -t and missing headers), then the body. */
    char **rcpts = xcalloc(MAX_RECIPIENTS, sizeof(char *));
    int nrcpt = 0;
    for (; i < argc && nrcpt < MAX_RECIPIENTS; i++) {
        if (strchr(argv[i], ',')) {
            header_addresses(argv[i], rcpts, &nrcpt);
        } else if (strchr(argv[i], '@')) {
            rcpts[nrcpt++] = xstrdup(argv[i]);
        } else {
            rcpts[nrcpt++] = join_at(argv[i], origin);
        }
    }
    struct buf headers = BUF_INIT, current = BUF_INIT;
    int have_from = 0, have_date = 0, have_msgid = 0, in_bcc = 0;
    char *line = NULL;
    size_t cap = 0;
    ssize_t got;
    int in_headers = 1;
    FILE *spool = tmpfile();   /* the body may be large: keep it out of memory */
    if (spool == NULL)
        die(EX_TEMPFAIL, "cannot create a temporary file: %s", strerror(errno));
    while ((got = getline(&line, &cap, stdin)) > 0) {
        size_t len = (size_t)got;
        while (len && (line[len - 1] == '\n' || line[len - 1] == '\r'))
            len--;
        line[len] = '\0';
        if (dot_ends && strcmp(line, ".") == 0)
            break;
        if (in_headers) {
            if (len == 0) {
                in_headers = 0;
                continue;
            }
            if ((line[0] == ' ' || line[0] == '\t') && headers.len) {
                if (!in_bcc) {
                    buf_append(&headers, line, len);
                    buf_puts(&headers, "\r\n");
                }
                if (extract && in_bcc >= 0)
                    buf_append(&current, line, len);
                continue;
            }
            if (!strchr(line, ':') || line[0] == ':') {
                /* not a header: the body starts here */
                in_headers = 0;
            } else {
                if (extract && current.len) {
                    header_addresses(current.data, rcpts, &nrcpt);
                    buf_reset(&current);
                }
                in_bcc = header_is(line, "Bcc") || header_is(line, "Resent-Bcc");
                if (extract && (header_is(line, "To") || header_is(line, "Cc") || in_bcc)) {
                    const char *v = strchr(line, ':') + 1;
                    buf_puts(&current, v);
                }
                have_from |= header_is(line, "From");
                have_date |= header_is(line, "Date");
                have_msgid |= header_is(line, "Message-ID");
                if (!in_bcc) {   /* Bcc never leaves this host */
                    buf_append(&headers, line, len);
                    buf_puts(&headers, "\r\n");
                }
                if (headers.len > HEADER_LIMIT)
                    die(EX_DATAERR, "message header section too large");
                continue;
            }
        }
        /* body line, dot-stuffed for SMTP */
        if (line[0] == '.')
            fputc('.', spool);
        fwrite(line, 1, len, spool);
        fputs("\r\n", spool);
    }
    if (extract && current.len)
        header_addresses(current.data, rcpts, &nrcpt);
    if (nrcpt == 0)
        die(EX_USAGE, "no recipient addresses found in message header");

    if (command(&c, "EHLO localhost") != 250)
        die(refusal_status(c.code), "EHLO refused: %s", c.line);
    if (command(&c, "MAIL FROM:<%s>", sender) != 250)
        die(refusal_status(c.code), "sender <%s> refused: %s", sender, c.line);
    int accepted = 0;
    for (int r = 0; r < nrcpt; r++) {
        if (command(&c, "RCPT TO:<%s>", rcpts[r]) == 250)
            accepted++;
        else
            fprintf(stderr, "petrel-sendmail: recipient <%s> refused: %s\n", rcpts[r], c.line);
    }
    if (accepted == 0)
        die(c.code >= 500 ? EX_NOUSER : EX_TEMPFAIL, "no recipient was accepted");
    if (command(&c, "DATA") != 354)
        die(refusal_status(c.code), "DATA refused: %s", c.line);
    /* Missing headers a local submission gets, as Postfix's cleanup adds them. */
    char stamp[128];
    time_t now = time(NULL);
    struct tm tm;
    localtime_r(&now, &tm);
    if (!have_date) {
        strftime(stamp, sizeof(stamp), "Date: %a, %d %b %Y %H:%M:%S %z\r\n", &tm);
        send_all(&c, stamp, strlen(stamp));
    }
    if (!have_msgid) {
        char id[256];
        snprintf(id, sizeof(id), "Message-ID: <%ld.%ld@%s>\r\n", (long)now, (long)getpid(),
                 myhostname ? myhostname : "localhost");
        send_all(&c, id, strlen(id));
    }
    if (!have_from) {
        struct buf from = BUF_INIT;
        if (fullname)
            buf_printf(&from, "From: %s <%s>\r\n", fullname, *sender ? sender : default_sender);
        else
            buf_printf(&from, "From: %s\r\n", *sender ? sender : default_sender);
        send_all(&c, from.data, from.len);
        buf_free(&from);
    }
    send_all(&c, headers.data ? headers.data : "", headers.len);
    send_all(&c, "\r\n", 2);
    rewind(spool);
    char chunk[65536];
    size_t n;
    while ((n = fread(chunk, 1, sizeof(chunk), spool)) > 0)
        send_all(&c, chunk, n);
    send_all(&c, ".\r\n", 3);
    if (read_reply(&c) != 250)
        die(refusal_status(c.code), "message refused: %s", c.line);
    command(&c, "QUIT");
    buf_free(&headers);
    buf_free(&current);
    free(line);
    return 0;
}
