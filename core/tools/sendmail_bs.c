/*
 * petrel-sendmail -bs: SMTP on standard input and output, as Postfix's
 * sendmail -bs runs its smtpd stand-alone. Each message accepted here is
 * stored through petrel-postdrop exactly like `petrel-sendmail rcpt...`
 * (the same header pass, the same maildrop file), so it needs no running
 * petreld, and the pickup role later applies the checks every local
 * submission gets; "250 ... queued as NAME" means the message is durably
 * in the maildrop.
 *
 * The peer is the local user who ran the command, over a pipe: commands
 * are answered one by one in order, and a client that pipelines (RFC 2920,
 * PIPELINING is offered) simply gets its replies in order. There is no
 * "protocol synchronization" check to trip over: that defence is for
 * network clients smuggling commands, and the replies are flushed only when
 * no complete command is waiting, so a pipelined group is answered in one
 * write. Syntax is checked with smtpd's own parsers (core/smtpd/smtp_parse.c)
 * and DATA is read with its DATA reader (only <CRLF>.<CRLF> ends a message).
 */
#include "config.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sysexits.h>
#include <unistd.h>

#include "lib/xalloc.h"
#include "mail/smtp_data.h"
#include "mail/smtp_parse.h"
#include "tools/sendmail.h"

#define BS_LINE_MAX 4096
#define BS_BUFFER (64 * 1024)

int sendmail_bs(const struct sm_conf *conf);

struct bs {
    const struct sm_conf *conf;
    char *in;
    size_t start, len;            /* unread input is in[start .. len) */
    int eof;
    int discarding;               /* inside an overlong command line */
    int esmtp;
    /* the transaction */
    petrel_pool *tx;
    const char *sender;
    int smtputf8;
    const char **rcpt;
    size_t nrcpt;
    /* DATA */
    struct sm_drop drop;
    struct sm_headers headers;
    struct buf line;              /* a header line being assembled */
    int header_error;
};

static void reply(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void reply(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vfprintf(stdout, fmt, ap);
    va_end(ap);
    fputs("\r\n", stdout);
}

/* More input, after sending the replies owed so far; 0 at EOF. */
static int fill(struct bs *b)
{
    if (b->eof)
        return 0;
    fflush(stdout);
    if (b->start > 0) {
        memmove(b->in, b->in + b->start, b->len - b->start);
        b->len -= b->start;
        b->start = 0;
    }
    if (b->len == BS_BUFFER)
        return 1;
    for (;;) {
        ssize_t n = read(0, b->in + b->len, BS_BUFFER - b->len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            b->eof = 1;
            return 0;
        }
        b->len += (size_t)n;
        return 1;
    }
}

/* The next command line (NUL-terminated, without CRLF) or NULL at EOF.
 * A line past BS_LINE_MAX is dropped as it comes (memory stays bounded)
 * and reported through *too_long once its end arrives. */
static char *next_command(struct bs *b, size_t *out_len, int *too_long)
{
    *too_long = 0;
    for (;;) {
        char *lf = memchr(b->in + b->start, '\n', b->len - b->start);
        if (lf) {
            char *line = b->in + b->start;
            size_t n = (size_t)(lf - line);
            b->start += n + 1;
            if (b->discarding || n > BS_LINE_MAX) {
                b->discarding = 0;
                *too_long = 1;
                *out_len = 0;
                return line;
            }
            if (n && line[n - 1] == '\r')
                n--;
            line[n] = '\0';
            *out_len = n;
            return line;
        }
        if (b->len - b->start > BS_LINE_MAX) {
            b->start = b->len;
            b->discarding = 1;
        }
        if (!fill(b))
            return NULL;
    }
}

static void tx_reset(struct bs *b)
{
    if (b->tx)
        petrel_pool_destroy(b->tx);
    b->tx = NULL;
    b->sender = NULL;
    b->rcpt = NULL;
    b->nrcpt = 0;
    b->smtputf8 = 0;
}

/* An address from a MAIL or RCPT path, qualified and in canonical form. */
static const char *qualify(struct bs *b, const char *address, int sender)
{
    const char *why = NULL, *out = NULL;
    if (sender && *address == '\0')
        return "";
    if (strchr(address, '@') == NULL)
        address = petrel_pool_printf(b->tx, "%s@%s", address, b->conf->myorigin);
    if (maildrop_address_canonical(address, sender, b->tx, &out, &why) != 0)
        return NULL;
    return out;
}

static void cmd_mail(struct bs *b, const char *args)
{
    if (b->tx) {
        reply("503 5.5.1 Error: nested MAIL command");
        return;
    }
    b->tx = petrel_pool_create(4096);
    struct smtp_parse_opts opts;
    memset(&opts, 0, sizeof(opts));
    opts.smtputf8_enabled = b->esmtp;
    opts.allow_missing_domain = 1;
    struct smtp_mail_args m;
    struct smtp_reply_err err;
    if (smtp_parse_mail(args, &opts, b->tx, &m, &err) != 0) {
        reply("%d %s %s", err.code, err.enhanced, err.text);
        tx_reset(b);
        return;
    }
    if (m.size > 0 && b->conf->size_limit && (unsigned long long)m.size > b->conf->size_limit) {
        reply("552 5.3.4 Message size exceeds fixed limit");
        tx_reset(b);
        return;
    }
    b->sender = qualify(b, m.address, 1);
    if (b->sender == NULL) {
        reply("501 5.1.7 Bad sender address syntax");
        tx_reset(b);
        return;
    }
    b->smtputf8 = m.smtputf8;
    reply("250 2.1.0 Ok");
}

static void cmd_rcpt(struct bs *b, const char *args)
{
    if (b->tx == NULL) {
        reply("503 5.5.1 Error: need MAIL command");
        return;
    }
    if (b->nrcpt >= MAILDROP_RCPT_MAX) {
        reply("452 4.5.3 Error: too many recipients");
        return;
    }
    struct smtp_parse_opts opts;
    memset(&opts, 0, sizeof(opts));
    opts.smtputf8_enabled = b->esmtp;
    opts.transaction_smtputf8 = b->smtputf8;
    opts.allow_missing_domain = 1;
    struct smtp_rcpt_args r;
    struct smtp_reply_err err;
    if (smtp_parse_rcpt(args, &opts, b->tx, &r, &err) != 0) {
        reply("%d %s %s", err.code, err.enhanced, err.text);
        return;
    }
    const char *address = qualify(b, r.address, 0);
    if (address == NULL) {
        reply("501 5.1.3 Bad recipient address syntax");
        return;
    }
    if (b->nrcpt % 64 == 0) {
        const char **grown = petrel_pool_alloc(b->tx, (b->nrcpt + 64) * sizeof(*grown));
        if (b->nrcpt)
            memcpy(grown, b->rcpt, b->nrcpt * sizeof(*grown));
        b->rcpt = grown;
    }
    b->rcpt[b->nrcpt++] = address;
    reply("250 2.1.5 Ok");
}

/* DATA content from the SMTP DATA reader: the header pass line by line,
 * then the body as it comes. */
static int data_emit(void *ctx, const char *data, size_t n)
{
    struct bs *b = ctx;
    if (b->header_error)
        return 0;
    if (b->headers.in_body)
        return maildrop_write_content(&b->drop.w, data, n) == 0 ? 0 : 1;
    while (n > 0) {
        const char *lf = memchr(data, '\n', n);
        size_t k = lf ? (size_t)(lf - data) + 1 : n;
        buf_append(&b->line, data, k);
        data += k;
        n -= k;
        if (b->line.len > SM_HEADER_LIMIT) {
            b->header_error = 1;
            return 0;
        }
        if (!lf)
            break;
        size_t len = b->line.len;
        while (len && (b->line.data[len - 1] == '\n' || b->line.data[len - 1] == '\r'))
            len--;
        int ended = sm_headers_line(&b->headers, b->line.data, len);
        if (ended < 0) {
            b->header_error = 1;
            return 0;
        }
        if (ended) {
            sm_headers_emit(&b->headers, &b->drop.w);
            if (ended == 2)
                maildrop_write_content(&b->drop.w, b->line.data, b->line.len);
            buf_reset(&b->line);
            return maildrop_write_content(&b->drop.w, data, n) == 0 ? 0 : 1;
        }
        buf_reset(&b->line);
    }
    return 0;
}

static void cmd_data(struct bs *b, const char *args)
{
    if (*args) {
        reply("501 5.5.4 Syntax: DATA");
        return;
    }
    if (b->tx == NULL) {
        reply("503 5.5.1 Error: need MAIL command");
        return;
    }
    if (b->nrcpt == 0) {
        reply("554 5.5.1 Error: no valid recipients");
        return;
    }
    if (sm_drop_open(&b->drop, b->conf) != 0) {
        reply("451 4.3.0 Error: queue file write error");
        tx_reset(b);
        return;
    }
    maildrop_write_sender(&b->drop.w, b->sender);
    for (size_t i = 0; i < b->nrcpt; i++)
        maildrop_write_recipient(&b->drop.w, b->rcpt[i]);
    maildrop_write_content_start(&b->drop.w);
    sm_headers_init(&b->headers, b->conf, 0, b->sender, NULL, 0);
    b->header_error = 0;
    buf_reset(&b->line);
    reply("354 End data with <CR><LF>.<CR><LF>");

    struct smtp_data_reader reader;
    smtp_data_init(&reader, DATA_BARE_LF_NORMALIZE, b->conf->size_limit);
    int done = 0;
    while (!done) {
        if (b->start == b->len && !fill(b))
            break;
        size_t used = smtp_data_feed(&reader, b->in + b->start, b->len - b->start, data_emit, b, &done);
        b->start += used;
    }
    if (!done) {
        /* The client went away in the middle: nothing is stored. */
        sm_drop_cancel(&b->drop);
        sm_headers_free(&b->headers);
        tx_reset(b);
        return;
    }
    if (reader.oversize || b->header_error) {
        sm_drop_cancel(&b->drop);
        reply(reader.oversize ? "552 5.3.4 Message size exceeds fixed limit"
                              : "552 5.3.4 Message header section too large");
    } else {
        if (!b->headers.in_body) {
            /* Headers only: the last line may lack its line end. */
            if (b->line.len)
                sm_headers_line(&b->headers, b->line.data, b->line.len);
            sm_headers_emit(&b->headers, &b->drop.w);
        }
        char id[QUEUE_ID_MAX];
        int status = sm_drop_finish(&b->drop, id, sizeof(id));
        if (status == 0)
            reply("250 2.0.0 Ok: queued as %s", id);
        else if (status == EX_UNAVAILABLE)
            reply("552 5.3.4 Message size exceeds fixed limit");
        else if (status == EX_DATAERR || status == EX_USAGE)
            reply("554 5.6.0 Error: message refused by petrel-postdrop");
        else
            reply("451 4.3.0 Error: queue file write error");
    }
    sm_headers_free(&b->headers);
    tx_reset(b);
}

int sendmail_bs(const struct sm_conf *conf)
{
    struct bs b;
    memset(&b, 0, sizeof(b));
    b.conf = conf;
    b.in = xmalloc(BS_BUFFER + 1);
    reply("220 %s ESMTP %s", conf->myhostname, conf->mail_name);
    for (;;) {
        size_t len;
        int too_long;
        char *line = next_command(&b, &len, &too_long);
        if (line == NULL)
            break;
        if (too_long) {
            reply("500 5.5.2 Error: line too long");
            continue;
        }
        struct smtp_command cmd;
        if (smtp_parse_command(line, len, &cmd) != 0 || strspn(line, " \t") == len) {
            reply("500 5.5.2 Error: bad syntax");
            continue;
        }
        switch (cmd.verb) {
        case SMTP_VERB_EHLO:
        case SMTP_VERB_HELO:
            if (*cmd.args == '\0') {
                reply("501 5.5.4 Syntax: %s hostname", cmd.verb == SMTP_VERB_EHLO ? "EHLO" : "HELO");
                break;
            }
            tx_reset(&b);
            b.esmtp = cmd.verb == SMTP_VERB_EHLO;
            if (!b.esmtp) {
                reply("250 %s", conf->myhostname);
                break;
            }
            reply("250-%s", conf->myhostname);
            reply("250-PIPELINING");
            if (conf->size_limit)
                reply("250-SIZE %llu", conf->size_limit);
            else
                reply("250-SIZE");
            reply("250-8BITMIME");
            reply("250-SMTPUTF8");
            reply("250 ENHANCEDSTATUSCODES");
            break;
        case SMTP_VERB_MAIL:
            cmd_mail(&b, cmd.args);
            break;
        case SMTP_VERB_RCPT:
            cmd_rcpt(&b, cmd.args);
            break;
        case SMTP_VERB_DATA:
            cmd_data(&b, cmd.args);
            break;
        case SMTP_VERB_RSET:
            tx_reset(&b);
            reply("250 2.0.0 Ok");
            break;
        case SMTP_VERB_NOOP:
            reply("250 2.0.0 Ok");
            break;
        case SMTP_VERB_VRFY:
            reply("252 2.0.0 Send some mail, I'll try my best");
            break;
        case SMTP_VERB_HELP:
            reply("214 2.0.0 Commands: EHLO HELO MAIL RCPT DATA RSET NOOP QUIT VRFY HELP");
            break;
        case SMTP_VERB_QUIT:
            reply("221 2.0.0 Bye");
            fflush(stdout);
            tx_reset(&b);
            free(b.in);
            buf_free(&b.line);
            return 0;
        case SMTP_VERB_AUTH:
            reply("503 5.5.1 Error: authentication not enabled");
            break;
        case SMTP_VERB_STARTTLS:
        case SMTP_VERB_BDAT:
        case SMTP_VERB_ETRN:
        case SMTP_VERB_EXPN:
            reply("502 5.5.1 Error: command not implemented");
            break;
        default:
            reply("502 5.5.2 Error: command not recognized");
            break;
        }
    }
    fflush(stdout);
    tx_reset(&b);
    free(b.in);
    buf_free(&b.line);
    return 0;
}
