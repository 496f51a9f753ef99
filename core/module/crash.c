/*
 * The crash context of a role process that runs modules: while a module's
 * hook or callback runs, the process records which module and hook it is
 * in, so that a fatal signal is logged with their names before the
 * process dies (the master then restarts it). Frames nest: a completion
 * that runs while another module is being called restores the outer frame
 * when it returns.
 */
#include "config.h"

#include <signal.h>
#include <string.h>
#include <unistd.h>

#include <petrel/plugin.h>
#include "lib/log.h"
#include "module/module.h"
#include "module/runtime.h"

/* ------------------------------------------------------------------ */
/* crash context: which module and hook this process is inside         */

static struct {
    const char *module;
    const char *hook;
    int fd;
    char prefix[96];
} crash_context;   /* the worker's own context: written only on its loop thread */

static void crash_handler(int sig)
{
    /* Only async-signal-safe calls here: build the line by hand, write it, re-raise. */
    char line[384];
    size_t n = 0;
    if (crash_context.module == NULL) {
        signal(sig, SIG_DFL);
        raise(sig);
        return;
    }
    const char *parts[] = { crash_context.prefix, "panic: module ", crash_context.module, " crashed in hook ",
                            crash_context.hook, ": signal ", NULL };
    for (int i = 0; parts[i]; i++) {
        for (const char *p = parts[i]; *p && n < sizeof(line) - 8; p++)
            line[n++] = *p;
    }
    int s = sig;
    char digits[4];
    int nd = 0;
    do {
        digits[nd++] = (char)('0' + s % 10);
        s /= 10;
    } while (s && nd < 3);
    while (nd)
        line[n++] = digits[--nd];
    line[n++] = '\n';
    ssize_t ignored = write(crash_context.fd, line, n);
    (void)ignored;
    signal(sig, SIG_DFL);
    raise(sig);
}

void module_crash_install(int log_fd)
{
    crash_context.fd = log_fd >= 0 ? log_fd : log_crash_fd();
    log_crash_prefix(crash_context.prefix, sizeof(crash_context.prefix));
    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = crash_handler;
    sa.sa_flags = SA_RESETHAND;
    sigaction(SIGSEGV, &sa, NULL);
    sigaction(SIGBUS, &sa, NULL);
    sigaction(SIGFPE, &sa, NULL);
    sigaction(SIGILL, &sa, NULL);
    sigaction(SIGABRT, &sa, NULL);
}

struct module_crash_frame module_crash_enter(const struct petrel_module *m, const char *hook)
{
    struct module_crash_frame saved = { crash_context.module, crash_context.hook };
    crash_context.module = m->name;
    crash_context.hook = hook;
    return saved;
}

void module_crash_leave(struct module_crash_frame saved)
{
    crash_context.module = saved.module;
    crash_context.hook = saved.hook;
}
