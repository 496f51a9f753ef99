/*
 * postscreen's dummy SMTP engine (Postfix's postscreen_smtpd.c): the tests
 * after the 220 greeting, and the place where clients that failed a test
 * with the "enforce" action are refused at RCPT with their reason logged.
 *
 * It speaks just enough SMTP to see what a client does: EHLO announces no
 * PIPELINING (a client that pipelines anyway fails the pipelining test),
 * command names that are not SMTP (mail headers, "GET", "CONNECT", bytes
 * that are not text) fail the non-SMTP test, and a line ending in a bare
 * LF fails the bare newline test. A client passes them all by getting to
 * RCPT cleanly; RCPT is then answered "450 4.3.2 Service currently
 * unavailable" (Postfix's rule: a new client must come back, and its next
 * connection is "PASS OLD" and goes to smtpd). Since every RCPT is refused,
 * DATA and BDAT end the session.
 *
 * Input is read one recv() at a time into a small buffer, as Postfix reads
 * one VSTREAM buffer: "pipelining" means a command arrived together with
 * more input. A command line is at most line_length_limit bytes and must
 * arrive within postscreen_command_time_limit; a session has at most
 * postscreen_command_count_limit commands.
 */
#include "config.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>

#include <event2/event.h>

#include "lib/escape.h"
#include "lib/log.h"
#include "lib/xalloc.h"
#include "mail/smtp_syntax.h"
#include "smtpd/psc.h"
#include "smtpd/psc_parse.h"
#include "smtpd/smtpd_int.h"
#include "tables/table.h"

enum { CMD_ENABLED = 1, CMD_DESTROYS = 2, CMD_PAYLOAD = 4 };

struct command {
    const char *name;
    int (*action)(struct psc_session *s, char *args);
    int flags;
};

static const char *timeout_reply(struct psc_session *s)
{
    return petrel_pool_printf(s->pool, "421 4.4.2 %s Error: timeout exceeded\r\n", s->ps->myhostname);
}

static const char *generic_421(struct psc_session *s)
{
    return petrel_pool_printf(s->pool, "421 %s Service unavailable - try again later\r\n", s->ps->myhostname);
}


static void set_string(char **slot, const char *value)
{
    free(*slot);
    *slot = value ? xstrdup(value) : NULL;
}

/* ------------------------------------------------------------------ */
/* commands                                                            */

static int cmd_helo(struct psc_session *s, char *args)
{
    char *name = psc_next_token(&args);
    if (name == NULL)
        return psc_send(s, "501 Syntax: HELO hostname\r\n");
    set_string(&s->helo, name);
    set_string(&s->sender, NULL);
    return psc_send(s, petrel_pool_printf(s->pool, "250 %s\r\n", s->ps->myhostname));
}

static int cmd_ehlo(struct psc_session *s, char *args)
{
    char *name = psc_next_token(&args);
    if (name == NULL)
        return psc_send(s, "501 Syntax: EHLO hostname\r\n");
    set_string(&s->helo, name);
    set_string(&s->sender, NULL);
    s->protocol = "ESMTP";
    return psc_send(s, s->ps->ehlo_reply);
}

static int cmd_starttls(struct psc_session *s, char *args)
{
    if (psc_next_token(&args) != NULL)
        return psc_send(s, "501 5.5.4 Syntax: STARTTLS\r\n");
    /* Not offered: see doc/postscreen.md (Postfix without TLS answers the same). */
    return psc_send(s, "502 5.5.1 Error: command not implemented\r\n");
}


static int cmd_mail(struct psc_session *s, char *args)
{
    if (s->ps->helo_required && s->helo == NULL)
        return psc_send(s, "503 5.5.1 Error: send HELO/EHLO first\r\n");
    if (s->sender)
        return psc_send(s, "503 5.5.1 Error: nested MAIL command\r\n");
    char *colon = args ? strchr(args, ':') : NULL;
    if (colon == NULL)
        return psc_send(s, "501 5.5.4 Syntax: MAIL FROM:<address>\r\n");
    struct buf addr = BUF_INIT;
    set_string(&s->sender, psc_extract_addr(colon + 1, &addr));
    buf_free(&addr);
    return psc_send(s, "250 2.1.0 Ok\r\n");
}

/* soft_bounce: a 5xx reply becomes 4xx, in the code and the enhanced code. */
static const char *soften(struct psc_session *s, const char *reply)
{
    if (!s->ps->soft_bounce)
        return reply;
    char *copy = petrel_pool_strdup(s->pool, reply);
    if (copy[0] == '5')
        copy[0] = '4';
    if (strlen(copy) > 4 && copy[4] == '5')
        copy[4] = '4';
    return copy;
}

static int cmd_rcpt(struct psc_session *s, char *args)
{
    if (s->sender == NULL)
        return psc_send(s, "503 5.5.1 Error: need MAIL command\r\n");
    char *colon = args ? strchr(args, ':') : NULL;
    if (colon == NULL)
        return psc_send(s, "501 5.5.4 Syntax: RCPT TO:<address>\r\n");
    struct buf b = BUF_INIT;
    const char *addr = psc_extract_addr(colon + 1, &b);
    const char *reply = soften(s, s->rcpt_reply);
    psc_log("NOQUEUE: reject: RCPT from [%s]:%s: %.*s; from=<%s>, to=<%s>, proto=%s, helo=<%s>", s->client_addr,
            s->client_port, (int)strlen(reply) - 2, reply, s->sender, addr, s->protocol, s->helo ? s->helo : "");
    buf_free(&b);
    return psc_send(s, s->rcpt_reply);
}

static int cmd_data(struct psc_session *s, char *args)
{
    psc_log("DATA without valid RCPT from [%s]:%s", s->client_addr, s->client_port);
    if (psc_next_token(&args) != NULL)
        psc_drop(s, "501 5.5.4 Syntax: DATA\r\n");
    else if (s->sender == NULL)
        psc_drop(s, "503 5.5.1 Error: need RCPT command\r\n");
    else
        psc_drop(s, "554 5.5.1 Error: no valid recipients\r\n");
    return 0;
}

static int cmd_bdat(struct psc_session *s, char *args)
{
    psc_log("BDAT without valid RCPT from [%s]:%s", s->client_addr, s->client_port);
    int chunking_off = 0;
    for (const char *const *p = s->ps->discard_ehlo_keywords; p && *p; p++)
        chunking_off |= strcasecmp(*p, "chunking") == 0;
    if (chunking_off)
        psc_drop(s, "502 5.5.1 Error: command not implemented\r\n");
    else if (psc_next_token(&args) == NULL)
        psc_drop(s, "501 5.5.4 Syntax: BDAT count [LAST]\r\n");
    else if (s->sender == NULL)
        psc_drop(s, "554 5.5.1 Error: need MAIL command\r\n");
    else
        psc_drop(s, "554 5.5.1 Error: no valid recipients\r\n");
    return 0;
}

static int cmd_rset(struct psc_session *s, char *args)
{
    set_string(&s->sender, NULL);
    return psc_send(s, "250 2.0.0 Ok\r\n");
}

static int cmd_noop(struct psc_session *s, char *args)
{
    return psc_send(s, "250 2.0.0 Ok\r\n");
}

static int cmd_vrfy(struct psc_session *s, char *args)
{
    if (psc_next_token(&args) == NULL)
        return psc_send(s, "501 5.5.4 Syntax: VRFY address\r\n");
    if (s->ps->disable_vrfy)
        return psc_send(s, "502 5.5.1 VRFY command is disabled\r\n");
    return psc_send(s, s->rcpt_reply);
}

static int cmd_etrn(struct psc_session *s, char *args)
{
    if (s->ps->helo_required && s->helo == NULL)
        return psc_send(s, "503 5.5.1 Error: send HELO/EHLO first\r\n");
    if (psc_next_token(&args) == NULL)
        return psc_send(s, "500 Syntax: ETRN domain\r\n");
    return psc_send(s, "458 Unable to queue messages\r\n");
}

static int cmd_quit(struct psc_session *s, char *args)
{
    psc_drop(s, "221 2.0.0 Bye\r\n");
    return 0;
}

static const struct command commands[] = {
    { "HELO", cmd_helo, CMD_ENABLED },
    { "EHLO", cmd_ehlo, CMD_ENABLED },
    { "STARTTLS", cmd_starttls, CMD_ENABLED },
    { "XCLIENT", cmd_noop, 0 },
    { "XFORWARD", cmd_noop, 0 },
    { "AUTH", cmd_noop, 0 },
    { "MAIL", cmd_mail, CMD_ENABLED },
    { "RCPT", cmd_rcpt, CMD_ENABLED },
    { "DATA", cmd_data, CMD_ENABLED | CMD_DESTROYS },
    { "BDAT", cmd_bdat, CMD_ENABLED | CMD_DESTROYS | CMD_PAYLOAD },
    { "RSET", cmd_rset, CMD_ENABLED },
    { "NOOP", cmd_noop, CMD_ENABLED },
    { "VRFY", cmd_vrfy, CMD_ENABLED },
    { "ETRN", cmd_etrn, CMD_ENABLED },
    { "QUIT", cmd_quit, CMD_ENABLED | CMD_DESTROYS },
    { NULL, NULL, 0 },
};

/* ------------------------------------------------------------------ */
/* the tests                                                           */


/* postscreen_forbidden_commands, in order, as Postfix's string list: the
 * word (lowercased, as Postfix folds it for every item) against each
 * word and table; the first match decides. A table that cannot answer
 * ends the search with "not forbidden" and a warning, as Postfix (a
 * non-critical feature there); warn is 0 when the same answer will be
 * looked at again. A remote table is asked in the session's lookup scope
 * (cmd_lookups): TBL_PENDING when its answer is not in yet. */
static int forbidden(const struct psc_session *s, const char *word, int warn)
{
    const struct psc_settings *ps = s->ps;
    char key[512];
    size_t n = 0;
    for (; word[n] && n + 1 < sizeof(key); n++)
        key[n] = (word[n] >= 'A' && word[n] <= 'Z') ? (char)(word[n] - 'A' + 'a') : word[n];
    key[n] = '\0';
    if (word[n])
        return 0;   /* longer than any command a table could list */
    struct tbl_registry *reg = s->listener->worker->tables;
    size_t table = 0;
    for (const char *const *p = ps->forbidden_commands; p && *p; p++) {
        if (strchr(*p, ':') == NULL) {
            if (strcasecmp(*p, key) == 0)
                return 1;
            continue;
        }
        if (table >= ps->nforbidden_tables)
            break;
        struct tbl *t = ps->forbidden_tables[table++];
        const char *value;
        if (s->cmd_lookups)
            tbl_scope_enter(reg, s->cmd_lookups);
        int rc = tbl_lookup(t, key, &value);
        if (s->cmd_lookups)
            tbl_scope_leave(reg);
        if (rc == TBL_FOUND)
            return 1;
        if (rc == TBL_PENDING)
            return TBL_PENDING;
        if (rc == TBL_ERROR) {
            if (warn)
                psc_log_as("postscreen", 1, "postscreen_forbidden_commands: %s: table lookup problem", tbl_spec(t));
            return 0;
        }
    }
    return 0;
}

/* Postfix's non-SMTP command test for a command name that is no SMTP
 * command: a mail header, not UTF-8 (with SMTPUTF8), or forbidden. */
static int non_smtp_word(const struct psc_session *s, const char *name, int warn)
{
    if (psc_is_header(name) || (s->ps->smtputf8 && !smtp_valid_utf8((const unsigned char *)name, strlen(name))))
        return 1;
    return forbidden(s, name, warn);
}


static void escape_upto(const void *data, size_t len, size_t max, char *out, size_t size)
{
    text_escape(data, len < max ? len : max, out, size);
}

/* A test failed: the client is done with it for this session (SKIP),
 * and the action decides. Returns 1 when the session was dropped. */
static int test_failed(struct psc_session *s, int test, int action, const char *drop_reply)
{
    s->flags |= PSC_F(test, PSC_K_FAIL);
    s->flags &= ~PSC_F(test, PSC_K_PASS);
    s->expire[test] = PSC_STAMP_DISABLED;
    s->flags |= PSC_F(test, PSC_K_DONE);
    switch (action) {
    case PSC_ACT_DROP:
        psc_drop(s, drop_reply);
        return 1;
    case PSC_ACT_ENFORCE:
        s->rcpt_reply = "550 5.5.1 Protocol error\r\n";
        s->flags |= PSC_F_NOFORWARD;
        return 0;
    default:
        /* Ignored: passed until some other test expires. */
        s->flags &= ~PSC_F(test, PSC_K_FAIL);
        s->flags |= PSC_F(test, PSC_K_PASS);
        s->expire[test] = time(NULL) + (time_t)s->ps->min_ttl;
        return 0;
    }
}

static int todo_not_skipped(const struct psc_session *s, int test)
{
    return (s->flags & (PSC_F(test, PSC_K_TODO) | PSC_F(test, PSC_K_DONE))) == PSC_F(test, PSC_K_TODO);
}

static void arm_command_timer(struct psc_session *s)
{
    long long limit = psc_stressed(s) ? s->ps->command_time_limit_stress : s->ps->command_time_limit;
    struct timeval tv = { (time_t)limit, 0 };
    evtimer_add(s->cmd_timer, &tv);
}

static void on_command_timeout(evutil_socket_t fd, short what, void *arg)
{
    struct psc_session *s = arg;
    psc_log("COMMAND TIME LIMIT from [%s]:%s after %s", s->client_addr, s->client_port, s->where);
    psc_drop(s, timeout_reply(s));
}

/* One complete command line in s->cmd. Returns 1 when the session ended. */
static int run_command(struct psc_session *s)
{
    const struct psc_settings *ps = s->ps;
    buf_putc(&s->cmd, '\0');
    char *line = s->cmd.data;
    char *cursor = line;
    char *name = psc_next_token(&cursor);
    if (name == NULL)
        name = "";
    const char *saved_where = s->where;
    s->where = "UNIMPLEMENTED";
    const struct command *cmd = commands;
    for (; cmd->name; cmd++)
        if (strcasecmp(name, cmd->name) == 0) {
            s->where = cmd->name;
            break;
        }
    if ((s->flags & PSC_F_X21) && cmd->action != cmd_quit) {
        psc_drop(s, s->final_reply);
        return 1;
    }
    if (todo_not_skipped(s, PSC_T_NSMTP) && cmd->name == NULL && non_smtp_word(s, name, 1) == 1) {
        char escaped[512];
        psc_make_printable(name, ps->smtputf8);
        escape_upto(cursor, strlen(cursor), 100, escaped, sizeof(escaped));
        psc_log("NON-SMTP COMMAND from [%s]:%s after %s: %.100s %s", s->client_addr, s->client_port, saved_where,
                name, escaped);
        if (test_failed(s, PSC_T_NSMTP, ps->non_smtp_action, "521 5.7.0 Error: I can break rules, too. Goodbye.\r\n"))
            return 1;
    }
    if (!(cmd->flags & CMD_PAYLOAD) && todo_not_skipped(s, PSC_T_PIPEL) && s->inpos < s->inlen) {
        char escaped[512];
        psc_make_printable(name, ps->smtputf8);
        escape_upto(s->inbuf + s->inpos, s->inlen - s->inpos, 100, escaped, sizeof(escaped));
        psc_log("COMMAND PIPELINING from [%s]:%s after %.100s: %s", s->client_addr, s->client_port, name, escaped);
        if (test_failed(s, PSC_T_PIPEL, ps->pipelining_action, "521 5.5.1 Protocol error\r\n"))
            return 1;
    }
    /* Getting to RCPT cleanly passes the tests (a later command may still fail them). */
    if (cmd->action == cmd_rcpt) {
        static const int tests[] = { PSC_T_BARLF, PSC_T_NSMTP, PSC_T_PIPEL };
        long long ttls[] = { ps->bare_newline_ttl, ps->non_smtp_ttl, ps->pipelining_ttl };
        for (int i = 0; i < 3; i++) {
            int t = tests[i];
            unsigned mask = PSC_F(t, PSC_K_TODO) | PSC_F(t, PSC_K_PASS) | PSC_F(t, PSC_K_FAIL);
            if ((s->flags & mask) == PSC_F(t, PSC_K_TODO)) {
                s->flags |= PSC_F(t, PSC_K_PASS);
                s->expire[t] = time(NULL) + (time_t)ttls[i];
            }
        }
    }
    if (++s->command_count > ps->command_count_limit && cmd->action != cmd_quit) {
        psc_log("COMMAND COUNT LIMIT from [%s]:%s after %s", s->client_addr, s->client_port, saved_where);
        psc_drop(s, generic_421(s));
        return 1;
    }
    int status;
    if (cmd->name == NULL || !(cmd->flags & CMD_ENABLED)) {
        status = psc_send(s, "502 5.5.2 Error: command not recognized\r\n");
    } else {
        status = cmd->action(s, cursor);
        if (cmd->flags & CMD_DESTROYS)
            return 1;
    }
    if (status < 0) {
        psc_hangup(s);
        return 1;
    }
    arm_command_timer(s);
    return 0;
}

static void command_answered(void *arg);

/* A complete command line is in s->cmd. When the non-SMTP command test
 * needs a remote postscreen_forbidden_commands table, its answer is
 * fetched first: the session reads nothing meanwhile (what it already
 * read stays for the pipelining test), and the command runs when the
 * answer is in (command_answered); every other session goes on. Returns
 * 1 when the session ended, 2 when it waits, else 0. */
static int command_line(struct psc_session *s)
{
    const struct psc_settings *ps = s->ps;
    if (ps->forbidden_remote && todo_not_skipped(s, PSC_T_NSMTP) && !(s->flags & PSC_F_X21)) {
        /* the command name as run_command() will see it */
        char name[512];
        size_t start = 0, len = 0;
        while (start < s->cmd.len && s->cmd.data[start] == ' ')
            start++;
        while (start + len < s->cmd.len && s->cmd.data[start + len] != ' ' && s->cmd.data[start + len] != '\0' &&
               len + 1 < sizeof(name))
            len++;
        memcpy(name, s->cmd.data + start, len);
        name[len] = '\0';
        /* too long for forbidden() to look up */
        int known = start + len < s->cmd.len && s->cmd.data[start + len] != ' ' && s->cmd.data[start + len] != '\0';
        for (const struct command *cmd = commands; cmd->name; cmd++)
            if (strcasecmp(name, cmd->name) == 0)
                known = 1;
        if (!known) {
            if (s->cmd_lookups == NULL)
                s->cmd_lookups = tbl_scope_new();
            if (non_smtp_word(s, name, 0) == TBL_PENDING && tbl_scope_missing(s->cmd_lookups) &&
                tbl_scope_fetch(s->cmd_lookups, command_answered, s)) {
                event_del(s->read_ev);
                return 2;
            }
        }
    }
    if (run_command(s))
        return 1;
    /* Each command asks the tables afresh. */
    tbl_scope_free(s->cmd_lookups);
    s->cmd_lookups = NULL;
    return 0;
}

/* Runs the command lines in what was read. */
static void process_input(struct psc_session *s)
{
    const struct psc_settings *ps = s->ps;
    for (;;) {
        /* One command line, maybe over several reads. */
        int complete = 0;
        while (s->inpos < s->inlen) {
            unsigned char ch = s->inbuf[s->inpos++];
            enum psc_line_event ev = psc_line_byte(&s->cmd, &s->read_state, ch, ps->line_length_limit);
            if (ev == PSC_LINE_TOO_LONG) {
                psc_log("COMMAND LENGTH LIMIT from [%s]:%s after %s", s->client_addr, s->client_port, s->where);
                psc_drop(s, generic_421(s));
                return;
            }
            if (ev == PSC_LINE_BARE_LF && todo_not_skipped(s, PSC_T_BARLF)) {
                char escaped[512];
                escape_upto(s->cmd.data, s->cmd.len, 100, escaped, sizeof(escaped));
                psc_log("BARE NEWLINE from [%s]:%s after %s", s->client_addr, s->client_port, escaped);
                if (test_failed(s, PSC_T_BARLF, ps->bare_newline_action, "521 5.5.1 Protocol error\r\n"))
                    return;
            }
            if (ev != PSC_LINE_MORE) {
                complete = 1;
                break;
            }
        }
        if (!complete)
            return;   /* the rest of the line comes later, within the same time limit */
        s->read_state = PSC_READ_ANY;
        int ended = command_line(s);
        if (ended)
            return;   /* gone, or waiting for a table (command_answered goes on) */
        buf_reset(&s->cmd);
        if (s->inpos == s->inlen)
            return;
    }
}

static void on_read(evutil_socket_t fd, short what, void *arg)
{
    struct psc_session *s = arg;
    if (s->inpos == s->inlen) {
        ssize_t n = recv(s->fd, s->inbuf, sizeof(s->inbuf), MSG_DONTWAIT);
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
            return;
        if (n <= 0) {
            psc_hangup(s);
            return;
        }
        s->inpos = 0;
        s->inlen = (size_t)n;
    }
    process_input(s);
}

/* The remote forbidden-commands table answered: the waiting command runs,
 * then what the client sent after it, then reading goes on. */
static void command_answered(void *arg)
{
    struct psc_session *s = arg;
    if (command_line(s))
        return;
    buf_reset(&s->cmd);
    event_add(s->read_ev, NULL);
    if (s->inpos < s->inlen)
        process_input(s);
}

void psc_smtpd_tests(struct psc_session *s)
{
    struct smtpd_worker *w = s->listener->worker;
    s->test_name = "tests after SMTP handshake";
    gettimeofday(&s->start_time, NULL);
    s->read_state = PSC_READ_ANY;
    /* X21: no tests, the reply comes at the next command. A client that
     * failed a test before the greeting meets every test after it. */
    if (s->flags & PSC_F_X21)
        s->flags &= ~PSC_MASK_SMTPD(PSC_K_TODO);
    else if (s->flags & PSC_MASK_ANY_FAIL)
        s->flags |= PSC_MASK_SMTPD(PSC_K_TODO);
    /* A pregreeting client gets no greeting: fewer "non-SMTP" commands, a
     * better log of its sender and recipients. */
    if (!(s->flags & PSC_F(PSC_T_PREGR, PSC_K_FAIL)) &&
        psc_send(s, petrel_pool_printf(s->pool, "220 %s\r\n", s->ps->smtpd_banner)) != 0) {
        psc_hangup(s);
        return;
    }
    if (s->read_ev)
        event_free(s->read_ev);
    s->read_ev = event_new(w->base, s->fd, EV_READ | EV_PERSIST, on_read, s);
    s->cmd_timer = evtimer_new(w->base, on_command_timeout, s);
    event_add(s->read_ev, NULL);
    arm_command_timer(s);
}
