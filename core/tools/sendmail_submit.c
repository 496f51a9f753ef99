/*
 * petrel-sendmail's submission path (see sendmail.h): running
 * petrel-postdrop, qualifying addresses, and the header pass.
 *
 * The helper is started with fork/execv (no shell), with the configuration
 * directory passed as -c only when it is not the default, so that the
 * set-group-ID helper applies its own rule to it. It inherits our standard
 * error, so its messages reach the user unchanged.
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/wait.h>
#include <sysexits.h>
#include <time.h>
#include <unistd.h>

#include "lib/xalloc.h"
#include "mail/addrlist.h"
#include "tools/sendmail.h"

/* ---- petrel-postdrop ---- */

int sm_drop_open(struct sm_drop *d, const struct sm_conf *conf)
{
    memset(d, 0, sizeof(*d));
    d->pid = -1;
    d->from_helper = -1;
    if (access(conf->helper, X_OK) != 0) {
        fprintf(stderr, "petrel-sendmail: cannot run %s: %s (command_directory in %s/main.cf)\n", conf->helper,
                strerror(errno), conf->confdir);
        return EX_UNAVAILABLE;
    }
    int in[2], out[2];
    if (pipe2(in, O_CLOEXEC) != 0 || pipe2(out, O_CLOEXEC) != 0) {
        fprintf(stderr, "petrel-sendmail: pipe: %s\n", strerror(errno));
        return EX_OSERR;
    }
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    if (pid < 0) {
        fprintf(stderr, "petrel-sendmail: fork: %s\n", strerror(errno));
        return EX_OSERR;
    }
    if (pid == 0) {
        if (dup2(in[0], 0) < 0 || dup2(out[1], 1) < 0)
            _exit(EX_OSERR);
        signal(SIGPIPE, SIG_DFL);
        char *argv[4] = { (char *)"petrel-postdrop", NULL, NULL, NULL };
        if (!conf->default_confdir) {
            argv[1] = (char *)"-c";
            argv[2] = (char *)conf->confdir;
        }
        execv(conf->helper, argv);
        fprintf(stderr, "petrel-sendmail: cannot run %s: %s\n", conf->helper, strerror(errno));
        _exit(EX_UNAVAILABLE);
    }
    close(in[0]);
    close(out[1]);
    d->pid = pid;
    d->from_helper = out[0];
    d->to_helper = fdopen(in[1], "w");
    if (d->to_helper == NULL) {
        close(in[1]);
        sm_drop_cancel(d);
        return EX_OSERR;
    }
    maildrop_writer_init(&d->w, d->to_helper);
    return 0;
}

static int wait_helper(struct sm_drop *d)
{
    int status;
    while (waitpid(d->pid, &status, 0) < 0) {
        if (errno != EINTR)
            return EX_OSERR;
    }
    d->pid = -1;
    if (WIFEXITED(status))
        return WEXITSTATUS(status);
    fprintf(stderr, "petrel-sendmail: petrel-postdrop was killed by signal %d\n", WTERMSIG(status));
    return EX_TEMPFAIL;
}

int sm_drop_finish(struct sm_drop *d, char *id, size_t idsize)
{
    /* A write error (EPIPE: the helper gave up) is not ours to report: the
     * helper said why and its exit status tells. */
    maildrop_write_end(&d->w);
    maildrop_writer_free(&d->w);
    fclose(d->to_helper);
    d->to_helper = NULL;
    char text[64];
    size_t got = 0;
    ssize_t n;
    while (got < sizeof(text) - 1 && (n = read(d->from_helper, text + got, sizeof(text) - 1 - got)) != 0) {
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            break;
        got += (size_t)n;
    }
    text[got] = '\0';
    close(d->from_helper);
    d->from_helper = -1;
    int status = wait_helper(d);
    text[strcspn(text, "\r\n")] = '\0';
    if (status == 0 && !maildrop_name_valid(text)) {
        fprintf(stderr, "petrel-sendmail: petrel-postdrop gave no file name\n");
        return EX_SOFTWARE;
    }
    if (id)
        snprintf(id, idsize, "%s", status == 0 ? text : "");
    return status;
}

void sm_drop_cancel(struct sm_drop *d)
{
    /* The helper runs with our user ID: we may signal it, and it removes
     * its unfinished file on SIGTERM. */
    if (d->pid > 0) {
        kill(d->pid, SIGTERM);
        wait_helper(d);
    }
    if (d->to_helper) {
        maildrop_writer_free(&d->w);
        fclose(d->to_helper);
        d->to_helper = NULL;
    }
    if (d->from_helper >= 0)
        close(d->from_helper);
    d->from_helper = -1;
}

/* ---- addresses ---- */

const char *sm_qualify(const struct sm_conf *conf, const char *local, const char *domain, int sender,
                       const char **why)
{
    const char *quoted = addrlist_quote_local(conf->pool, local);
    const char *address = petrel_pool_printf(conf->pool, "%s@%s", quoted, domain ? domain : conf->myorigin);
    const char *canonical = NULL;
    if (maildrop_address_canonical(address, sender, conf->pool, &canonical, why) != 0)
        return NULL;
    return canonical;
}

/* ---- the header pass ---- */

enum header_kind { H_OTHER, H_TO, H_BCC, H_RESENT_TO, H_RESENT_BCC };

void sm_headers_init(struct sm_headers *h, const struct sm_conf *conf, int extract, const char *sender,
                     const char *fullname, int skip_from_line)
{
    memset(h, 0, sizeof(*h));
    h->conf = conf;
    h->extract = extract;
    h->sender = sender;
    h->fullname = fullname;
    h->skip_from_line = skip_from_line;
}

static int header_is(const char *line, size_t len, const char *name)
{
    size_t n = strlen(name);
    return len > n && strncasecmp(line, name, n) == 0 && line[n] == ':';
}

/* RFC 5322 field name: printable ASCII except ':', then ':'. */
static int field_name_length(const char *line, size_t len)
{
    size_t i = 0;
    while (i < len && (unsigned char)line[i] > 32 && (unsigned char)line[i] < 127 && line[i] != ':')
        i++;
    return i > 0 && i < len && line[i] == ':' ? (int)i : -1;
}

static void end_value(struct sm_headers *h)
{
    if (h->kind != H_OTHER && h->extract && h->value.len) {
        int resent = h->kind == H_RESENT_TO || h->kind == H_RESENT_BCC;
        char ***list = resent ? &h->resent_to : &h->to;
        size_t *n = resent ? &h->nresent : &h->nto;
        *list = xrealloc(*list, (*n + 1) * sizeof(**list));
        (*list)[(*n)++] = xstrndup(h->value.data, h->value.len);
    }
    buf_reset(&h->value);
    h->kind = H_OTHER;
}

int sm_headers_line(struct sm_headers *h, const char *line, size_t len)
{
    if (h->in_body)
        return 1;
    if (h->lines++ == 0 && h->skip_from_line) {
        /* An mbox "From " line (or ">From "), as Postfix's sendmail drops it. */
        size_t k = 0;
        while (k < len && line[k] == '>')
            k++;
        if (len - k >= 5 && strncmp(line + k, "From ", 5) == 0) {
            h->lines = 0;
            return 0;
        }
    }
    if (len > 0 && (line[0] == ' ' || line[0] == '\t') && h->seen_field) {
        /* A continuation of the header before. */
        if (h->kind == H_BCC || h->kind == H_RESENT_BCC) {
            buf_append(&h->value, line, len);
            return 0;
        }
        if (h->kind != H_OTHER)
            buf_append(&h->value, line, len);
        buf_append(&h->section, line, len);
        buf_puts(&h->section, "\r\n");
        return h->section.len > SM_HEADER_LIMIT ? -1 : 0;
    }
    end_value(h);
    int name_len = field_name_length(line, len);
    if (name_len < 0) {
        /* The empty line ends the header section; a line that is no header
         * starts the body (the separator is added). */
        h->in_body = 1;
        return len == 0 ? 1 : 2;
    }
    h->seen_field = 1;
    h->have_from |= header_is(line, len, "From");
    h->have_date |= header_is(line, len, "Date");
    h->have_msgid |= header_is(line, len, "Message-ID");
    if (header_is(line, len, "To") || header_is(line, len, "Cc"))
        h->kind = H_TO;
    else if (header_is(line, len, "Bcc"))
        h->kind = H_BCC;
    else if (header_is(line, len, "Resent-To") || header_is(line, len, "Resent-Cc"))
        h->kind = H_RESENT_TO;
    else if (header_is(line, len, "Resent-Bcc"))
        h->kind = H_RESENT_BCC;
    if (h->kind != H_OTHER)
        buf_append(&h->value, line + name_len + 1, len - (size_t)name_len - 1);
    if (h->kind == H_BCC || h->kind == H_RESENT_BCC)
        return 0;   /* Bcc: never leaves this host */
    buf_append(&h->section, line, len);
    buf_puts(&h->section, "\r\n");
    return h->section.len > SM_HEADER_LIMIT ? -1 : 0;
}

/* A display name as an RFC 5322 phrase: quoted unless it is plain words. */
static const char *phrase(petrel_pool *pool, const char *name)
{
    int plain = *name != '\0';
    for (const char *s = name; *s && plain; s++) {
        unsigned char c = (unsigned char)*s;
        plain = c >= 0x80 || c == ' ' || (c > 32 && c < 127 && !strchr("()<>[]:;@\\,.\"", c));
    }
    if (plain)
        return name;
    struct buf b = BUF_INIT;
    buf_putc(&b, '"');
    for (const char *s = name; *s; s++) {
        if (*s == '"' || *s == '\\')
            buf_putc(&b, '\\');
        buf_putc(&b, *s);
    }
    buf_putc(&b, '"');
    const char *out = petrel_pool_strdup(pool, b.data);
    buf_free(&b);
    return out;
}

int sm_headers_emit(struct sm_headers *h, struct maildrop_writer *w)
{
    end_value(h);
    const struct sm_conf *conf = h->conf;
    struct buf add = BUF_INIT;
    time_t now = time(NULL);
    struct tm tm;
    localtime_r(&now, &tm);
    if (!h->have_date) {
        char date[96];
        strftime(date, sizeof(date), "Date: %a, %d %b %Y %H:%M:%S %z\r\n", &tm);
        buf_puts(&add, date);
    }
    if (!h->have_msgid) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        char stamp[32];
        strftime(stamp, sizeof(stamp), "%Y%m%d%H%M%S", &tm);
        buf_printf(&add, "Message-ID: <%s.%06ld.%ld@%s>\r\n", stamp, (long)(ts.tv_nsec / 1000), (long)getpid(),
                   conf->myhostname);
    }
    if (!h->have_from) {
        const char *from = *h->sender ? h->sender : petrel_pool_printf(conf->pool, "MAILER-DAEMON@%s", conf->myhostname);
        if (h->fullname && *h->fullname)
            buf_printf(&add, "From: %s <%s>\r\n", phrase(conf->pool, h->fullname), from);
        else
            buf_printf(&add, "From: %s\r\n", from);
    }
    maildrop_write_content(w, add.data ? add.data : "", add.len);
    buf_free(&add);
    maildrop_write_content(w, h->section.data ? h->section.data : "", h->section.len);
    return maildrop_write_content(w, "\r\n", 2);
}

void sm_headers_free(struct sm_headers *h)
{
    for (size_t i = 0; i < h->nto; i++)
        free(h->to[i]);
    for (size_t i = 0; i < h->nresent; i++)
        free(h->resent_to[i]);
    free(h->to);
    free(h->resent_to);
    buf_free(&h->section);
    buf_free(&h->value);
}
