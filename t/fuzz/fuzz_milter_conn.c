/*
 * Fuzz target for the milter connection state machine (modules/milter/
 * milter_conn.c, milter_events.c, milter_reply.c): the input is everything
 * "the milter" sends, written into a socketpair in pieces while the target
 * plays an SMTP session against the connection (CONNECT, HELO, MAIL, two
 * RCPTs, DATA, headers, EOH, body, EOM, and again), as an MTA would: the
 * next event only after the previous one is done.
 *
 * Byte 0: piece size and the milter's default action; byte 1: options
 * (HDR_LEADSPC is the milter's to choose, so it comes with the input's
 * OPTNEG). Besides crashes and sanitizer reports it checks that every
 * result is well formed (REJECT 5xx, TEMPFAIL 4xx, SHUTDOWN 421, a reply
 * text that starts with its code), that every modification respects what
 * milter_proto.h promises, that done() comes exactly once per pending call
 * and never from inside a call.
 *
 * make check builds it with t/fuzz/replay_main.c and replays
 * t/fuzz/corpus/milter_conn; `make fuzz` runs it with libFuzzer (doc/testing.md).
 */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "milter_conn.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check(int cond)
{
    if (!cond)
        abort();
}

typedef struct state {
    int in_call;     /* inside a milter_conn_* call */
    int dones;       /* done() calls */
    int watching;
} state;

static void f_watch(void *arg, int fd, int events) { (void)fd; ((state *)arg)->watching = events; }
static void f_timer(void *arg, unsigned ms) { (void)arg; (void)ms; }
static void f_log(void *arg, milter_log_level level, const char *text)
{
    (void)arg;
    (void)level;
    check(strncmp(text, "milter ", 7) == 0);
}

static void f_done(void *arg)
{
    state *st = arg;
    check(!st->in_call);
    st->dones++;
}

static const char *f_macro(void *arg, const char *name)
{
    (void)arg;
    return name[1] == 'i' || name[1] == 'j' ? "value" : NULL;
}

static int f_edit(void *arg, const milter_edit *e)
{
    (void)arg;
    switch (e->type) {
    case MILTER_EDIT_ADD_HEADER:
    case MILTER_EDIT_INSERT_HEADER:
    case MILTER_EDIT_CHANGE_HEADER:
        for (const char *v = e->value; *v; v++)
            if (*v == '\n')
                check(v > e->value && v[-1] == '\r' && (v[1] == ' ' || v[1] == '\t'));
        /* FALLTHROUGH */
    case MILTER_EDIT_DELETE_HEADER:
        check(e->name[0] != 0 && strchr(e->name, ':') == NULL);
        break;
    case MILTER_EDIT_CHANGE_FROM:
    case MILTER_EDIT_ADD_RCPT:
    case MILTER_EDIT_DELETE_RCPT:
        for (const char *a = e->address; *a; a++)
            check((unsigned char)*a >= 32);
        break;
    case MILTER_EDIT_BODY_CHUNK:
        check(e->len > 0 && e->data != NULL);
        break;
    case MILTER_EDIT_BODY_END:
    case MILTER_EDIT_QUARANTINE:
        break;
    }
    return 0;
}

static void check_result(const milter_result *r)
{
    switch (r->verdict) {
    case MILTER_REJECT:
        check(r->code >= 500 && r->code <= 599);
        break;
    case MILTER_TEMPFAIL:
        check(r->code >= 400 && r->code <= 499);
        break;
    case MILTER_SHUTDOWN:
        check(r->code == 421);
        break;
    case MILTER_CONTINUE:
    case MILTER_ACCEPT:
    case MILTER_DISCARD:
        break;
    default:
        check(0);
    }
    if (r->reply != NULL)
        check(r->reply[0] == '0' + r->code / 100);
}

static void drain(int fd)
{
    char junk[65536];
    while (read(fd, junk, sizeof junk) > 0)
        ;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 2 || size > (1u << 18))
        return 0;
    static const char *const actions[] = { "tempfail", "accept", "reject", "quarantine", "shutdown" };
    size_t piece = (size_t)(data[0] & 0x1f) * 7 + 1;
    milter_config cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.name = "unix:/nonexistent/fuzz.sock";
    cfg.default_action = actions[(data[0] >> 5) % 5];
    cfg.offer_rcpt_rejected = data[1] & 1;
    cfg.max_body = data[1] & 2 ? 1000 : 0;
    data += 2;
    size -= 2;
    char err[256];
    milter_settings *s = milter_settings_create(&cfg, err, sizeof err);
    check(s != NULL);

    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv) < 0) {
        milter_settings_free(s);
        return 0;
    }
    state st = { 0, 0, 0 };
    milter_conn_ops ops = { f_watch, f_timer, f_done, f_edit, f_macro, f_log };
    milter_conn *c = milter_conn_create(s, &ops, &st);
    check(c != NULL);

    static const char *const from[] = { "<s@example.com>", "SIZE=10", NULL };
    static const char *const rcpt1[] = { "<a@example.org>", NULL };
    static const char *const rcpt2[] = { "<b@example.org>", "NOTIFY=NEVER", NULL };
    static const char body[] = "line one\r\nline two\r\n";
    int step = 0, pending = 0, expected_dones = 0;
    size_t off = 0;
    int idle_rounds = 0;

    st.in_call = 1;
    pending = milter_conn_open(c) == MILTER_PENDING;
    st.in_call = 0;
    check(pending == 0 || st.dones == 0);
    if (!pending) {
        /* adopt instead (open() fails: the socket path does not exist) */
        check_result(milter_conn_result(c));
        milter_conn_free(c);
        c = milter_conn_create(s, &ops, &st);
        st.in_call = 1;
        pending = milter_conn_adopt(c, sv[0]) == MILTER_PENDING;
        st.in_call = 0;
    } else
        close(sv[0]);
    expected_dones += pending;

    while (step < 40 && idle_rounds < 3) {
        if (pending) {
            if (off < size) {
                size_t n = size - off < piece ? size - off : piece;
                ssize_t w = write(sv[1], data + off, n);
                if (w > 0)
                    off += (size_t)w;
            } else
                idle_rounds++;
            drain(sv[1]);
            int before = st.dones;
            milter_conn_io(c, MILTER_IO_READ | MILTER_IO_WRITE);
            drain(sv[1]);
            check(st.dones - before <= 1);
            if (st.dones > before) {
                pending = 0;
                check_result(milter_conn_result(c));
            }
            continue;
        }
        milter_status r;
        size_t taken;
        st.in_call = 1;
        switch (step % 13) {
        case 0: r = milter_conn_connect(c, "client.example.com", AF_INET, "192.0.2.1", 25); break;
        case 1: r = milter_conn_helo(c, "client.example.com"); break;
        case 2: r = milter_conn_mail(c, from); break;
        case 3: r = milter_conn_rcpt(c, rcpt1, 0); break;
        case 4: r = milter_conn_rcpt(c, rcpt2, 1); break;
        case 5: r = milter_conn_data(c); break;
        case 6: r = milter_conn_header(c, "Subject", " test\r\n\tfolded"); break;
        case 7: r = milter_conn_header(c, "From", " <s@example.com>"); break;
        case 8: r = milter_conn_eoh(c); break;
        case 9: r = milter_conn_body(c, body, sizeof body - 1, &taken); check(taken <= sizeof body - 1); break;
        case 10: r = milter_conn_eom(c); break;
        case 11: r = milter_conn_unknown(c, "XYZZY"); break;
        default:
            if (milter_conn_reusable(c))
                r = milter_conn_quit_nc(c) == 0 ? MILTER_DONE : MILTER_DONE;
            else {
                milter_conn_abort(c);
                r = MILTER_DONE;
            }
            break;
        }
        st.in_call = 0;
        if (r == MILTER_PENDING) {
            pending = 1;
            expected_dones++;
        } else
            check_result(milter_conn_result(c));
        step++;
    }
    if (!pending)
        check(st.dones == expected_dones);
    milter_conn_quit(c);
    milter_conn_free(c);
    close(sv[1]);
    milter_settings_free(s);
    (void)errno;
    return 0;
}
