/*
 * Delivery to a command (Postfix pipe(8)): the message on the command's
 * standard input, the outcome from its exit status.
 *
 * Design:
 *  - An alias's |command (opt->shell_command) runs through /bin/sh -c with
 *    its text untouched: no macro is ever pasted into a shell command line.
 *    The envelope reaches it in local(8)'s environment variables, censored
 *    through command_expansion_filter. Only the admin's alias table can name
 *    such a command (see qmgr/route.c).
 *  - Otherwise no shell. Each argv template argument is expanded on its own, so a
 *    recipient like "a b;rm -rf" stays one argument. Macros are pipe(8)'s
 *    (${sender} ${recipient} ${user} ${extension} ${mailbox} ${domain}
 *    ${nexthop} ${queue_id} ${original_recipient} ${size} ${client_*}
 *    ${sasl_*}); $name works too. An unknown macro defers with 4.3.5
 *    (Postfix refuses it at start-up; the router should check earlier).
 *  - Safe from a threaded daemon: argv, envp and the executable's path are
 *    built before fork(2); the child calls only async-signal-safe
 *    functions. An exec failure comes back over a close-on-exec pipe.
 *    The child leads its own process group so the time limit kills the
 *    command's offspring too (Postfix does the same). SIGPIPE is blocked
 *    for this thread while writing and a pending one is consumed, so a
 *    command that stops reading never kills petreld.
 *  - One poll(2) loop writes stdin and reads stdout+stderr (one pipe, as
 *    pipe(8)) so neither side can deadlock on a full pipe. The first
 *    PIPE_OUTPUT_MAX bytes of output are kept for the reason text.
 *  - Outcome, as Postfix's pipe_command(): 0 sent; a sysexits code maps
 *    through Postfix's table (EX_TEMPFAIL and EX_OSERR defer with 4.3.0,
 *    the others bounce with their own code: EX_NOUSER 5.1.1 ...); other
 *    codes bounce "Command died with status N" (5.3.0); a signal defers;
 *    the time limit bounces 5.3.0 "Command time limit exceeded" (Postfix
 *    bounces it: a command that hangs on this message will hang again).
 *    When a failing command's output starts with an enhanced status code
 *    (4.x.x or 5.x.x), that code decides, as pipe(8) documents.
 *  - waitpid() is on the child's pid only: a SIGCHLD handler elsewhere in
 *    the process must not reap with waitpid(-1).
 */
#include "config.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "deliver/local.h"
#include "lib/buf.h"
#include "lib/xalloc.h"

#define PIPE_OUTPUT_MAX 512
#define PIPE_DEFAULT_TIMEOUT 1000   /* Postfix's command_time_limit */
#define PIPE_MAX_ARGS 256
#define PIPE_MAX_ARG_LEN 65536

struct macro_ctx {
    const struct dlv_job *job;
    size_t i;
    const char *delim;
};

/* Looks up one macro; appends its value to out. 0, or -1 if unknown. */
static int macro_value(const struct macro_ctx *m, const char *name, size_t len, struct buf *out)
{
    const struct dlv_job *job = m->job;
    const struct queue_envelope *env = &job->msg->env;
    const char *rcpt = job->rcpt_addr[m->i];
    const char *at = strrchr(rcpt, '@');
    size_t local_len = at ? (size_t)(at - rcpt) : strlen(rcpt);
    size_t user_len = local_len;
    if (m->delim && *m->delim) {
        for (size_t k = 0; k < local_len; k++)
            if (strchr(m->delim, rcpt[k])) {
                user_len = k;
                break;
            }
    }
#define IS(s) (len == sizeof(s) - 1 && memcmp(name, s, len) == 0)
    if (IS("sender")) {
        buf_puts(out, job->sender[0] ? job->sender : "MAILER-DAEMON");
    } else if (IS("recipient")) {
        buf_puts(out, rcpt);
    } else if (IS("original_recipient")) {
        const char *o = NULL;
        size_t ri = job->rcpt_index ? job->rcpt_index[m->i] : m->i;
        if (ri < env->rcpt_count)
            o = env->rcpts[ri].orcpt;
        if (o && strncasecmp(o, "rfc822;", 7) == 0)
            o += 7;
        while (o && *o == ' ')
            o++;
        buf_puts(out, o && *o ? o : rcpt);
    } else if (IS("mailbox")) {
        buf_append(out, rcpt, local_len);
    } else if (IS("user")) {
        buf_append(out, rcpt, user_len);
    } else if (IS("extension")) {
        if (user_len < local_len)
            buf_append(out, rcpt + user_len + 1, local_len - user_len - 1);
    } else if (IS("domain")) {
        buf_puts(out, at ? at + 1 : "");
    } else if (IS("nexthop")) {
        buf_puts(out, job->nexthop ? job->nexthop : (at ? at + 1 : ""));
    } else if (IS("queue_id")) {
        buf_puts(out, job->queue_id ? job->queue_id : "");
    } else if (IS("size")) {
        buf_printf(out, "%llu", job->msg->content_length);
    } else if (IS("client_address")) {
        buf_puts(out, env->client_addr ? env->client_addr : "");
    } else if (IS("client_hostname")) {
        buf_puts(out, env->client_name ? env->client_name : "");
    } else if (IS("client_port")) {
        buf_puts(out, env->client_port ? env->client_port : "");
    } else if (IS("client_helo")) {
        buf_puts(out, env->helo ? env->helo : "");
    } else if (IS("client_protocol")) {
        buf_puts(out, env->protocol ? env->protocol : "");
    } else if (IS("sasl_method")) {
        buf_puts(out, env->sasl_method ? env->sasl_method : "");
    } else if (IS("sasl_username")) {
        buf_puts(out, env->sasl_username ? env->sasl_username : "");
    } else {
        return -1;
    }
#undef IS
    return 0;
}

/* Expands one argument. On an unknown macro returns -1 and copies its name
 * into bad. */
static int expand_arg(const struct macro_ctx *m, const char *tmpl, struct buf *out, char *bad, size_t badsize)
{
    buf_reset(out);
    buf_puts(out, "");
    for (const char *p = tmpl; *p;) {
        if (p[0] == '$' && p[1] == '{') {
            const char *end = strchr(p + 2, '}');
            if (end) {
                if (macro_value(m, p + 2, (size_t)(end - p - 2), out) < 0) {
                    snprintf(bad, badsize, "%.*s", (int)(end - p - 2), p + 2);
                    return -1;
                }
                p = end + 1;
                continue;
            }
        } else if (p[0] == '$' && (isalpha((unsigned char)p[1]) || p[1] == '_')) {
            const char *end = p + 1;
            while (isalnum((unsigned char)*end) || *end == '_')
                end++;
            if (macro_value(m, p + 1, (size_t)(end - p - 1), out) < 0) {
                snprintf(bad, badsize, "%.*s", (int)(end - p - 1), p + 1);
                return -1;
            }
            p = end;
            continue;
        }
        buf_putc(out, *p++);
    }
    return 0;
}

/* Postfix's command_expansion_filter default. */
#define DEFAULT_EXPANSION_FILTER "1234567890!@%-_=+:,./abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"

/* Adds NAME=value to env (malloc'd), every byte of value outside filter
 * replaced by '_'. An empty value is left out, as local(8) does. */
static void env_add(char **env, size_t *n, const char *name, const char *value, size_t len, const char *filter)
{
    if (value == NULL || len == 0)
        return;
    struct buf b = BUF_INIT;
    buf_printf(&b, "%s=", name);
    for (size_t k = 0; k < len; k++)
        buf_putc(&b, value[k] != '\0' && strchr(filter, value[k]) ? value[k] : '_');
    env[(*n)++] = b.data;
}

/* local(8)'s environment for an alias command: what the message says
 * about itself, censored. env has room for 16 entries. */
static size_t shell_environment(const struct pipe_options *opt, const struct dlv_job *job, size_t i, char **env)
{
    const char *filter = opt->expansion_filter ? opt->expansion_filter : DEFAULT_EXPANSION_FILTER;
    const struct queue_envelope *qe = &job->msg->env;
    const char *rcpt = job->rcpt_addr[i];
    const char *at = strrchr(rcpt, '@');
    size_t local_len = at ? (size_t)(at - rcpt) : strlen(rcpt), user_len = local_len;
    for (size_t k = 0; opt->recipient_delimiter && *opt->recipient_delimiter && k < local_len; k++)
        if (strchr(opt->recipient_delimiter, rcpt[k])) {
            user_len = k;
            break;
        }
    size_t n = 0;
#define ADD(name, v) env_add(env, &n, name, v, (v) ? strlen(v) : 0, filter)
    env_add(env, &n, "USER", rcpt, user_len, filter);
    env_add(env, &n, "LOGNAME", rcpt, user_len, filter);
    ADD("SENDER", job->sender);
    ADD("RECIPIENT", rcpt);
    env_add(env, &n, "LOCAL", rcpt, local_len, filter);
    if (at)
        ADD("DOMAIN", at + 1);
    if (user_len < local_len)
        env_add(env, &n, "EXTENSION", rcpt + user_len + 1, local_len - user_len - 1, filter);
    size_t ri = job->rcpt_index ? job->rcpt_index[i] : i;
    const char *orcpt = ri < qe->rcpt_count ? qe->rcpts[ri].orcpt : NULL;
    if (orcpt && strncasecmp(orcpt, "rfc822;", 7) == 0)
        orcpt += 7;
    ADD("ORIGINAL_RECIPIENT", orcpt);
    ADD("CLIENT_HOSTNAME", qe->client_name);
    ADD("CLIENT_ADDRESS", qe->client_addr);
    ADD("CLIENT_HELO", qe->helo);
    ADD("CLIENT_PROTOCOL", qe->protocol);
    ADD("SASL_METHOD", qe->sasl_method);
    ADD("SASL_USERNAME", qe->sasl_username);
    if (opt->home)
        env_add(env, &n, "HOME", opt->home, strlen(opt->home), "/" DEFAULT_EXPANSION_FILTER);
#undef ADD
    return n;
}

/* Postfix's sys_exits table: code, DSN, text. */
static const struct { int code; const char *dsn; const char *text; } sys_exits[] = {
    { 64, "5.3.0", "command line usage error" },
    { 65, "5.6.0", "data format error" },
    { 66, "5.3.0", "cannot open input" },
    { 67, "5.1.1", "user unknown" },
    { 68, "5.1.2", "host name unknown" },
    { 69, "5.3.0", "service unavailable" },
    { 70, "5.3.0", "internal software error" },
    { 71, "4.3.0", "system resource problem" },
    { 72, "5.3.0", "critical OS file missing" },
    { 73, "5.2.0", "can't create user output file" },
    { 74, "5.3.0", "input/output error" },
    { 75, "4.3.0", "temporary failure" },
    { 76, "5.5.0", "remote error in protocol" },
    { 77, "5.7.0", "permission denied" },
    { 78, "5.3.5", "local configuration error" },
};

/* Copies an enhanced status code at the start of s ("5.1.1 ...") into dsn. */
static int leading_dsn(const char *s, char *dsn, size_t size)
{
    const char *p = s;
    if (*p != '4' && *p != '5')
        return 0;
    p++;
    for (int part = 0; part < 2; part++) {
        if (*p++ != '.')
            return 0;
        int digits = 0;
        while (isdigit((unsigned char)*p) && digits < 4)
            p++, digits++;
        if (digits == 0 || digits > 3)
            return 0;
    }
    if (*p && *p != ' ' && *p != '\t' && *p != '\n' && *p != '\r')
        return 0;
    snprintf(dsn, size, "%.*s", (int)(p - s), s);
    return 1;
}

static double mono_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Finds a command without '/' in a fixed path (not the daemon's PATH: the
 * search must not depend on how petreld was started). */
static char *resolve_command(const char *cmd)
{
    if (strchr(cmd, '/'))
        return xstrdup(cmd);
    static const char *const dirs[] = { "/usr/local/bin", "/usr/bin", "/bin" };
    for (size_t k = 0; k < sizeof(dirs) / sizeof(dirs[0]); k++) {
        struct buf b = BUF_INIT;
        buf_printf(&b, "%s/%s", dirs[k], cmd);
        if (access(b.data, X_OK) == 0)
            return b.data;
        buf_free(&b);
    }
    return NULL;
}

/* Async-signal-safe error report from the child, then exit. */
__attribute__((noreturn)) static void child_fail(int errfd, int stage)
{
    int msg[2] = { stage, errno };
    ssize_t w = write(errfd, msg, sizeof(msg));
    (void)w;
    _exit(71);   /* EX_OSERR */
}

int pipe_deliver(const struct pipe_options *opt, const struct dlv_job *job, size_t i, struct dlv_result *out)
{
    const char *service = opt && opt->service ? opt->service : opt && opt->shell_command ? "local" : "pipe";
    if (local_check_job(job, i, out, service) < 0)
        return -1;
    if (opt == NULL || ((opt->argv == NULL || opt->argv[0] == NULL) &&
                        (opt->shell_command == NULL || opt->shell_command[0] == '\0'))) {
        dlv_result_set(out, DLV_DEFERRED, "4.3.5", service, "pipe delivery without a command");
        return -1;
    }

    /* ---- argv, envp, path: everything the child needs, before fork ---- */
    struct macro_ctx m = { job, i, opt->recipient_delimiter };
    const char *shell_argv[] = { "/bin/sh", "-c", opt->shell_command, NULL };
    const char *const *templates = opt->shell_command ? shell_argv : opt->argv;
    size_t argc = 0;
    while (templates[argc] && argc < PIPE_MAX_ARGS)
        argc++;
    char **argv = xcalloc(argc + 1, sizeof(char *));
    char bad[128];
    struct buf b = BUF_INIT;
    int ok = 1;
    for (size_t k = 0; k < argc; k++) {
        if (opt->shell_command) {
            argv[k] = xstrdup(templates[k]);   /* never expanded: see the top of this file */
            continue;
        }
        if (expand_arg(&m, templates[k], &b, bad, sizeof(bad)) < 0) {
            dlv_result_set(out, DLV_DEFERRED, "4.3.5", service, "unknown command-line macro: $%s", bad);
            ok = 0;
            break;
        }
        if (b.len > PIPE_MAX_ARG_LEN) {
            dlv_result_set(out, DLV_DEFERRED, "4.3.5", service, "command argument too long");
            ok = 0;
            break;
        }
        argv[k] = xstrdup(b.data);
    }
    buf_free(&b);
    char *path = ok ? resolve_command(argv[0]) : NULL;
    if (ok && path == NULL) {
        dlv_result_set(out, DLV_DEFERRED, "4.3.5", service, "Command not found: \"%s\"", argv[0]);
        ok = 0;
    }
    size_t nextra = 0;
    while (opt->env && opt->env[nextra] && nextra < 64)
        nextra++;
    char **envp = xcalloc(nextra + 3 + 16, sizeof(char *));
    envp[0] = xstrdup("PATH=/usr/bin:/bin");
    envp[1] = xstrdup("SHELL=/bin/sh");
    for (size_t k = 0; k < nextra; k++)
        envp[2 + k] = xstrdup(opt->env[k]);
    if (opt->shell_command)
        shell_environment(opt, job, i, envp + 2 + nextra);

    int inp[2] = { -1, -1 }, outp[2] = { -1, -1 }, errp[2] = { -1, -1 };
    pid_t pid = -1;
    if (ok && (pipe2(inp, O_CLOEXEC) < 0 || pipe2(outp, O_CLOEXEC) < 0 || pipe2(errp, O_CLOEXEC) < 0)) {
        dlv_result_set(out, DLV_DEFERRED, "4.3.0", service, "Command failed: pipe: %m");
        ok = 0;
    }
    if (ok && (pid = fork()) < 0) {
        dlv_result_set(out, DLV_DEFERRED, "4.3.0", service, "Command failed: fork: %m");
        ok = 0;
    }
    if (ok && pid == 0) {
        /* Child: async-signal-safe calls only. */
        sigset_t none;
        sigemptyset(&none);
        sigprocmask(SIG_SETMASK, &none, NULL);
        struct sigaction dfl;
        memset(&dfl, 0, sizeof(dfl));
        dfl.sa_handler = SIG_DFL;
        sigaction(SIGPIPE, &dfl, NULL);   /* the daemon ignores it; the command must not inherit that */
        setpgid(0, 0);
        if (dup2(inp[0], 0) < 0 || dup2(outp[1], 1) < 0 || dup2(outp[1], 2) < 0)
            child_fail(errp[1], 1);
#ifdef SYS_close_range
        syscall(SYS_close_range, 3u, ~0u, 4u /* CLOSE_RANGE_CLOEXEC: errp must live until exec */);
#endif
        if (opt->gid && opt->gid != getgid()) {
            if (setgroups(1, &opt->gid) < 0 || setgid(opt->gid) < 0)
                child_fail(errp[1], 2);
        }
        if (opt->uid && opt->uid != getuid()) {
            if (setuid(opt->uid) < 0)
                child_fail(errp[1], 3);
        }
        if (chdir("/") < 0)
            child_fail(errp[1], 4);
        if (job->file_size_limit) {
            /* local(8): mailbox_size_limit holds for files an alias's
             * command writes too (RLIMIT_FSIZE, as Postfix sets it) */
            struct rlimit rl = { (rlim_t)job->file_size_limit, (rlim_t)job->file_size_limit };
            setrlimit(RLIMIT_FSIZE, &rl);
        }
        execve(path, argv, envp);
        child_fail(errp[1], 5);
    }
    if (inp[0] >= 0)
        close(inp[0]);
    if (outp[1] >= 0)
        close(outp[1]);
    if (errp[1] >= 0)
        close(errp[1]);

    int exec_err[2] = { 0, 0 };
    if (ok) {
        /* Blocks until exec(2) closes the pipe (success) or the child
         * reports why it could not get there. */
        ssize_t r;
        while ((r = read(errp[0], exec_err, sizeof(exec_err))) < 0 && errno == EINTR)
            ;
        if (r != (ssize_t)sizeof(exec_err))
            exec_err[0] = 0;
    }

    /* ---- feed stdin, collect output, under the time limit ---- */
    char output[PIPE_OUTPUT_MAX + 1];
    size_t outlen = 0;
    int timed_out = 0, write_err = 0, read_err = 0;
    if (ok && exec_err[0] == 0) {
        sigset_t pipeset, oldset;
        sigemptyset(&pipeset);
        sigaddset(&pipeset, SIGPIPE);
        pthread_sigmask(SIG_BLOCK, &pipeset, &oldset);

        fcntl(inp[1], F_SETFL, O_NONBLOCK);
        fcntl(outp[0], F_SETFL, O_NONBLOCK);
        const char *nl = opt->crlf ? "\r\n" : "\n";
        static const size_t WBUF = 65536;
        char *wbuf = xmalloc(WBUF);
        size_t wlen = 0, wpos = 0;
        char sender[600], rcpt[600];
        local_header_safe(sender, sizeof(sender), job->sender);
        local_header_safe(rcpt, sizeof(rcpt), job->rcpt_addr[i]);
        if (opt->flags & PIPE_FLAG_FROM) {
            time_t now = time(NULL);
            struct tm tm;
            char date[64];
            localtime_r(&now, &tm);
            strftime(date, sizeof(date), "%a %b %e %H:%M:%S %Y", &tm);
            wlen += (size_t)snprintf(wbuf + wlen, WBUF - wlen, "From %s %s%s",
                                     sender[0] ? sender : "MAILER-DAEMON", date, nl);
        }
        if (opt->flags & PIPE_FLAG_RETURN_PATH)
            wlen += (size_t)snprintf(wbuf + wlen, WBUF - wlen, "Return-Path: <%s>%s", sender, nl);
        if (opt->flags & PIPE_FLAG_DELIVERED_TO)
            wlen += (size_t)snprintf(wbuf + wlen, WBUF - wlen, "Delivered-To: %s%s", rcpt, nl);
        if (opt->flags & PIPE_FLAG_ORIG_TO) {
            struct buf o = BUF_INIT;
            char tmp[600], bad2[8];
            expand_arg(&m, "${original_recipient}", &o, bad2, sizeof(bad2));
            wlen += (size_t)snprintf(wbuf + wlen, WBUF - wlen, "X-Original-To: %s%s",
                                     local_header_safe(tmp, sizeof(tmp), o.data), nl);
            buf_free(&o);
        }
        struct local_content c;
        local_content_init(&c, job, !opt->crlf, (opt->flags & PIPE_FLAG_QUOTE_FROM) != 0);
        int stdin_open = 1, out_open = 1, content_done = 0;
        double deadline = mono_now() + (opt->timeout ? opt->timeout : PIPE_DEFAULT_TIMEOUT);
        while (stdin_open || out_open) {
            if (stdin_open && wpos == wlen) {
                if (content_done) {
                    close(inp[1]);
                    inp[1] = -1;
                    stdin_open = 0;
                    continue;
                }
                ssize_t r = local_content_read(&c, wbuf, WBUF);
                if (r < 0) {
                    read_err = errno;
                    break;
                }
                wpos = 0;
                wlen = (size_t)r;
                if (r == 0)
                    content_done = 1;
                continue;
            }
            double left = deadline - mono_now();
            if (left <= 0) {
                timed_out = 1;
                break;
            }
            struct pollfd pf[2];
            nfds_t np = 0;
            int in_ix = -1, out_ix = -1;
            if (stdin_open) {
                pf[np] = (struct pollfd){ .fd = inp[1], .events = POLLOUT };
                in_ix = (int)np++;
            }
            if (out_open) {
                pf[np] = (struct pollfd){ .fd = outp[0], .events = POLLIN };
                out_ix = (int)np++;
            }
            int ms = left > 1000 ? 1000 : (int)(left * 1000) + 1;
            int pr = poll(pf, np, ms);
            if (pr < 0 && errno != EINTR) {
                write_err = errno;
                break;
            }
            if (pr <= 0)
                continue;
            if (in_ix >= 0 && pf[in_ix].revents) {
                ssize_t w = write(inp[1], wbuf + wpos, wlen - wpos);
                if (w > 0) {
                    wpos += (size_t)w;
                } else if (w < 0 && errno != EAGAIN && errno != EINTR) {
                    /* EPIPE: the command stopped reading. Postfix ignores
                     * that; the exit status decides. */
                    if (errno != EPIPE)
                        write_err = errno;
                    close(inp[1]);
                    inp[1] = -1;
                    stdin_open = 0;
                }
            }
            if (out_ix >= 0 && pf[out_ix].revents) {
                char tmp[4096];
                ssize_t r = read(outp[0], tmp, sizeof(tmp));
                if (r > 0) {
                    size_t keep = (size_t)r;
                    if (keep > PIPE_OUTPUT_MAX - outlen)
                        keep = PIPE_OUTPUT_MAX - outlen;
                    memcpy(output + outlen, tmp, keep);
                    outlen += keep;
                } else if (r == 0 || (errno != EAGAIN && errno != EINTR)) {
                    out_open = 0;
                }
            }
        }
        free(wbuf);

        /* Consume a SIGPIPE our writes raised before unblocking it. */
        sigset_t pending;
        sigpending(&pending);
        if (sigismember(&pending, SIGPIPE)) {
            struct timespec zero = { 0, 0 };
            sigtimedwait(&pipeset, NULL, &zero);
        }
        pthread_sigmask(SIG_SETMASK, &oldset, NULL);

        /* The command closed its output; give it the rest of its time to exit. */
        int status = 0;
        if (!timed_out && !read_err && !write_err) {
            for (;;) {
                pid_t w = waitpid(pid, &status, WNOHANG);
                if (w == pid || (w < 0 && errno != EINTR))
                    break;
                if (mono_now() >= deadline) {
                    timed_out = 1;
                    break;
                }
                struct timespec ts = { 0, 5 * 1000000L };
                nanosleep(&ts, NULL);
            }
        }
        if (timed_out || read_err || write_err) {
            kill(-pid, SIGKILL);
            kill(pid, SIGKILL);
            while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
                ;
        }
        pid = -1;

        for (size_t k = 0; k < outlen; k++)
            if (output[k] == '\0')
                output[k] = ' ';
        while (outlen > 0 && (output[outlen - 1] == '\n' || output[outlen - 1] == '\r'))
            outlen--;
        output[outlen] = '\0';
        const char *sep = outlen ? ". Command output: " : "";

        if (read_err) {
            errno = read_err;
            dlv_result_set(out, DLV_DEFERRED, "4.3.0", service, "error reading message: %m");
        } else if (write_err) {
            errno = write_err;
            dlv_result_set(out, DLV_DEFERRED, "4.3.0", service, "Command failed: %m: \"%s\"", argv[0]);
        } else if (timed_out) {
            dlv_result_set(out, DLV_BOUNCED, "5.3.0", service, "Command time limit exceeded: \"%s\"%s%s",
                           argv[0], sep, output);
        } else if (WIFSIGNALED(status)) {
            dlv_result_set(out, DLV_DEFERRED, "4.3.0", service, "Command died with signal %d: \"%s\"%s%s",
                           WTERMSIG(status), argv[0], sep, output);
        } else if (WIFEXITED(status) && WEXITSTATUS(status) == 0) {
            if (opt->shell_command)
                dlv_result_set(out, DLV_SENT, "2.0.0", service, "delivered to command: %s", opt->shell_command);
            else
                dlv_result_set(out, DLV_SENT, "2.0.0", service, "delivered via %s service", service);
        } else {
            int code = WIFEXITED(status) ? WEXITSTATUS(status) : 1;
            const char *dsn = "5.3.0", *text = NULL;
            for (size_t k = 0; k < sizeof(sys_exits) / sizeof(sys_exits[0]); k++)
                if (sys_exits[k].code == code) {
                    dsn = sys_exits[k].dsn;
                    text = sys_exits[k].text;
                }
            char odsn[16];
            if (leading_dsn(output, odsn, sizeof(odsn)))
                dsn = odsn;
            enum dlv_status st = dsn[0] == '4' ? DLV_DEFERRED : DLV_BOUNCED;
            if (text)
                dlv_result_set(out, st, dsn, service, "%s%s%s", text, sep, output);
            else
                dlv_result_set(out, st, dsn, service, "Command died with status %d: \"%s\"%s%s", code, argv[0],
                               sep, output);
        }
    } else if (ok) {
        /* The child could not exec: a configuration problem, deferred so
         * the admin can fix it without losing mail (Postfix's child would
         * exit 1, which bounces). */
        static const char *const stage[] = { "?", "dup2", "setgid", "setuid", "chdir", "execve" };
        int s = exec_err[0] >= 1 && exec_err[0] <= 5 ? exec_err[0] : 0;
        errno = exec_err[1];
        dlv_result_set(out, DLV_DEFERRED, s == 5 && (errno == ENOENT || errno == EACCES) ? "4.3.5" : "4.3.0",
                       service, "Command failed: %s %s: %m", stage[s], path);
        while (waitpid(pid, NULL, 0) < 0 && errno == EINTR)
            ;
    }

    if (inp[1] >= 0)
        close(inp[1]);
    if (outp[0] >= 0)
        close(outp[0]);
    if (errp[0] >= 0)
        close(errp[0]);
    for (size_t k = 0; k < argc; k++)
        free(argv[k]);
    free(argv);
    for (char **e = envp; *e; e++)
        free(*e);
    free(envp);
    free(path);
    return 0;
}
