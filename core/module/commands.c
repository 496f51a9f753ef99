/*
 * Module control commands (ABI 1.1 petrel_command): `petrelctl MODULE
 * COMMAND [ARGS]`. Two halves live here:
 *
 * - for the master, which has the generation's module set but runs no
 *   module code: finding a module's command, checking its arguments and
 *   writing the usage and help texts (module_command_find, _usage, _help);
 * - for the role process that runs the command (an smtpd worker, which the
 *   master hands the request to): the request handles through which a
 *   handler answers, now or after a round trip, and the deadline
 *   (module_command_run).
 *
 * A petrel_command_request is a handle like a petrel_pending: a slot of the
 * process's request table with a generation, so a late answer after the
 * deadline is logged and ignored, never a crash. An answer given while the
 * handler is still running is handed over when it returns, so whoever
 * asked is never re-entered from inside the module. The handler runs
 * with the crash context set, and every command is counted in the module's
 * call metrics under the label "command".
 */
#include "config.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/event.h>

#include "lib/buf.h"
#include "lib/log.h"
#include "lib/xalloc.h"
#include "module/module.h"
#include "module/runtime_int.h"

/* An answer is carried in one IPC frame (1 MiB): leave room for the rest. */
#define MAX_OUTPUT ((1u << 20) - 8192)
#define MAX_ARGS 32
#define MAX_ARG_LEN 1024

/* ------------------------------------------------------------------ */
/* finding commands and checking arguments (any process)               */

const petrel_command *module_command_find(const struct petrel_module *m, const char *name)
{
    for (const petrel_command *c = m->c.commands; c && c->name; c++)
        if (strcmp(c->name, name) == 0)
            return c;
    return NULL;
}

void module_command_usage(const struct petrel_module *m, const petrel_command *c, struct buf *out)
{
    buf_printf(out, "usage: petrelctl %s %s%s%s%s", m->name, c->name, c->flags & PETREL_COMMAND_JSON ? " [--json]" : "",
               c->usage && *c->usage ? " " : "", c->usage ? c->usage : "");
}

void module_command_help(const struct module_set *set, const struct petrel_module *m, struct buf *out)
{
    if (m->c.ncommands == 0) {
        buf_printf(out, "module %s has no petrelctl commands", m->name);
        return;
    }
    buf_printf(out, "commands of module %s:", m->name);
    for (const petrel_command *c = m->c.commands; c->name; c++) {
        struct buf line = BUF_INIT;
        module_command_usage(m, c, &line);
        buf_printf(out, "\n  %s", line.data + strlen("usage: "));
        if (c->help && *c->help)
            buf_printf(out, "\n      %s", c->help);
        buf_free(&line);
    }
    (void)set;
}

/* Takes --json off (when the command has it) and checks what is left.
 * Returns the index of the first argument for the handler, or -1 with the
 * reason in why. */
int module_command_check_args(const struct petrel_module *m, const petrel_command *c, int argc,
                              const char *const *argv, int *json, struct buf *why)
{
    int first = 0;
    *json = 0;
    while (first < argc && argv[first][0] == '-' && argv[first][1] == '-') {
        if (strcmp(argv[first], "--") == 0) {
            first++;
            break;
        }
        if (strcmp(argv[first], "--json") == 0 && (c->flags & PETREL_COMMAND_JSON)) {
            *json = 1;
            first++;
            continue;
        }
        buf_printf(why, "petrelctl %s %s: %s \"%.64s\"", m->name, c->name,
                   strcmp(argv[first], "--json") == 0 ? "has no JSON output:" : "unknown option", argv[first]);
        return -1;
    }
    int n = argc - first;
    if (n > MAX_ARGS) {
        buf_printf(why, "petrelctl %s %s: too many arguments (at most %d)", m->name, c->name, MAX_ARGS);
        return -1;
    }
    for (int i = first; i < argc; i++) {
        size_t len = strlen(argv[i]);
        int bad = len > MAX_ARG_LEN;
        for (const unsigned char *p = (const unsigned char *)argv[i]; *p && !bad; p++)
            if (*p < 0x20 || *p == 0x7f)
                bad = 1;
        if (bad) {
            buf_printf(why, "petrelctl %s %s: argument %d is %s", m->name, c->name, i - first + 1,
                       len > MAX_ARG_LEN ? "too long" : "not printable text (control characters)");
            return -1;
        }
    }
    if (n < c->min_args || (c->max_args >= 0 && n > c->max_args)) {
        buf_printf(why, "petrelctl %s %s: %s arguments", m->name, c->name, n < c->min_args ? "missing" : "too many");
        return -1;
    }
    return first;
}

/* ------------------------------------------------------------------ */
/* requests (in the process that runs the command)                     */

struct module_command_call {
    uint32_t slot;                    /* in module_rt->command_requests */
    struct petrel_module *m;
    const petrel_command *command;
    int json;
    int argc;
    char **argv;
    struct buf out;
    int truncated;
    int in_run;                       /* the handler is still running */
    int answered;                     /* answered inside it: handed over when it returns */
    petrel_command_status status;
    double started;
    struct event *timer;
    module_command_done_fn *done;
    void *arg;
};

static void call_free(struct module_command_call *c)
{
    if (c->timer)
        event_free(c->timer);
    handle_release(&module_rt->command_requests, c->slot);
    for (int i = 0; i < c->argc; i++)
        free(c->argv[i]);
    free(c->argv);
    buf_free(&c->out);
    free(c);
}

static const char *status_label(petrel_command_status s)
{
    return s == PETREL_COMMAND_OK ? "ok" : s == PETREL_COMMAND_USAGE ? "usage" : "failed";
}

/* Hands the answer over; the request is gone when done runs. */
static void deliver(struct module_command_call *c)
{
    module_command_done_fn *done = c->done;
    void *arg = c->arg;
    struct buf text = c->out;
    c->out = (struct buf)BUF_INIT;
    if (c->truncated)
        buf_puts(&text, "\n(output cut at 1 MiB)");
    if (c->status == PETREL_COMMAND_USAGE) {
        if (text.len)
            buf_puts(&text, "\n");
        module_command_usage(c->m, c->command, &text);
    }
    int status = (int)c->status;
    module_record_call(c->m, "command", status_label(c->status), c->started);
    call_free(c);
    done(arg, status, text.data ? text.data : "");
    buf_free(&text);
}

static void timed_out(evutil_socket_t fd, short what, void *arg)
{
    struct module_command_call *c = arg;
    (void)fd;
    (void)what;
    msg_warn("module %s: command %s: no answer within %u ms", c->m->name, c->command->name, c->m->timeout_ms);
    module_record_call(c->m, "command", "timeout", c->started);
    module_command_done_fn *done = c->done;
    void *cb_arg = c->arg;
    struct buf text = BUF_INIT;
    buf_printf(&text, "module %s did not answer command \"%s\" within %u ms (%s_hook_timeout); see the log",
               c->m->name, c->command->name, c->m->timeout_ms, c->m->name);
    call_free(c);
    done(cb_arg, PETREL_COMMAND_FAILED, text.data);
    buf_free(&text);
}

void module_command_run(const char *module, const char *command, int argc, const char *const *argv,
                        module_command_done_fn *done, void *arg)
{
    struct module_runtime *rt = module_rt;
    struct buf why = BUF_INIT;
    struct petrel_module *m = rt ? module_set_find_module(rt->set, module) : NULL;
    const petrel_command *cmd = m ? module_command_find(m, command) : NULL;
    if (cmd == NULL) {
        if (m == NULL)
            buf_printf(&why, "no module \"%.64s\" runs in this process", module);
        else
            buf_printf(&why, "module %s has no command \"%.64s\"", m->name, command);
        done(arg, PETREL_COMMAND_USAGE, why.data);
        buf_free(&why);
        return;
    }
    if (!m->initialised) {
        buf_printf(&why, "module %s is not initialised in this process", m->name);
        done(arg, PETREL_COMMAND_FAILED, why.data);
        buf_free(&why);
        return;
    }
    int json;
    int first = module_command_check_args(m, cmd, argc, argv, &json, &why);
    if (first < 0) {
        buf_puts(&why, "\n");
        module_command_usage(m, cmd, &why);
        done(arg, PETREL_COMMAND_USAGE, why.data);
        buf_free(&why);
        return;
    }
    struct module_command_call *c = xcalloc(1, sizeof(*c));
    uintptr_t h = handle_alloc(&rt->command_requests, c, (unsigned)m->index);
    if (h == 0) {
        free(c);
        done(arg, PETREL_COMMAND_FAILED, "too many commands in progress in this process");
        return;
    }
    c->slot = handle_slot(h);
    c->m = m;
    c->command = cmd;
    c->json = json;
    c->argc = argc - first;
    c->argv = xcalloc((size_t)c->argc + 1, sizeof(*c->argv));
    for (int i = 0; i < c->argc; i++)
        c->argv[i] = xstrdup(argv[first + i]);
    c->done = done;
    c->arg = arg;
    c->started = module_clock();
    unsigned ms = m->timeout_ms ? m->timeout_ms : 10000;
    c->timer = evtimer_new(rt->base, timed_out, c);
    struct timeval tv = { ms / 1000, (ms % 1000) * 1000 };
    evtimer_add(c->timer, &tv);
    msg_info("module %s: running command %s for petrelctl", m->name, cmd->name);
    c->in_run = 1;
    struct module_crash_frame saved = module_crash_enter(m, cmd->name);
    cmd->run((petrel_command_request *)h, c->argc, (const char *const *)c->argv);
    module_crash_leave(saved);
    /* The handler may have answered (then the request is still ours: in_run
     * kept it), or will answer later, or time out. */
    c->in_run = 0;
    if (c->answered)
        deliver(c);
}

/* ------------------------------------------------------------------ */
/* the API                                                             */

static struct module_command_call *lookup(petrel_command_request *r, const char *fn)
{
    if (module_rt == NULL)
        return NULL;
    struct module_command_call *c = handle_lookup(&module_rt->command_requests, (uintptr_t)r, NULL, NULL);
    if (c == NULL || c->answered) {
        module_stale(&module_rt->command_requests, (uintptr_t)r, fn);
        return NULL;
    }
    return module_on_loop(c->m, fn) ? c : NULL;
}

petrel_module *petrel_command_module(petrel_command_request *r)
{
    if (module_rt == NULL)
        return NULL;
    return module_by_index(handle_module(&module_rt->command_requests, (uintptr_t)r));
}

int petrel_command_json(petrel_command_request *r)
{
    struct module_command_call *c = lookup(r, __func__);
    return c ? c->json : 0;
}

static void append(struct module_command_call *c, const char *data, size_t len)
{
    if (c->truncated)
        return;
    if (c->out.len + len > MAX_OUTPUT) {
        c->truncated = 1;
        len = MAX_OUTPUT - c->out.len;
    }
    buf_append(&c->out, data, len);
}

void petrel_command_print(petrel_command_request *r, const char *fmt, ...)
{
    struct module_command_call *c = lookup(r, __func__);
    if (c == NULL || fmt == NULL)
        return;
    struct buf tmp = BUF_INIT;
    va_list ap;
    va_start(ap, fmt);
    buf_vprintf(&tmp, fmt, ap);
    va_end(ap);
    append(c, tmp.data ? tmp.data : "", tmp.len);
    buf_free(&tmp);
}

void petrel_command_print_json_string(petrel_command_request *r, const char *s)
{
    struct module_command_call *c = lookup(r, __func__);
    if (c == NULL)
        return;
    if (s == NULL) {
        append(c, "null", 4);
        return;
    }
    struct buf tmp = BUF_INIT;
    buf_putc(&tmp, '"');
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (*p == '"' || *p == '\\')
            buf_printf(&tmp, "\\%c", *p);
        else if (*p < 0x20 || *p == 0x7f)
            buf_printf(&tmp, "\\u%04x", *p);
        else
            buf_putc(&tmp, (char)*p);
    }
    buf_putc(&tmp, '"');
    append(c, tmp.data, tmp.len);
    buf_free(&tmp);
}

void petrel_command_done(petrel_command_request *r, petrel_command_status status)
{
    struct module_command_call *c = lookup(r, __func__);
    if (c == NULL)
        return;
    if (status != PETREL_COMMAND_OK && status != PETREL_COMMAND_FAILED && status != PETREL_COMMAND_USAGE) {
        msg_warn("module %s: petrel_command_done: status %d is none of PETREL_COMMAND_OK, _FAILED, _USAGE: "
                 "taken as FAILED", c->m->name, (int)status);
        status = PETREL_COMMAND_FAILED;
    }
    c->status = status;
    c->answered = 1;
    if (!c->in_run)
        deliver(c);
}
