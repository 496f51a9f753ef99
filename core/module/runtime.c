/*
 * The per-process module runtime (started by start.c), and the checks
 * every API function makes on its handle argument.
 *
 * There is one runtime per process because a module's late callback
 * reaches the core with nothing but a handle: the handle tables must be
 * found from there. It is the role's own state all the same: created by
 * the role at start, used only on its loop thread, gone with it.
 */
#include "config.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "lib/log.h"
#include "module/module.h"
#include "module/runtime_int.h"

struct module_runtime *module_rt;

int module_hook_active(enum module_hook h)
{
    return module_rt && module_rt->set && module_rt->set->phases[h].n > 0;
}

struct petrel_module *module_by_index(int i)
{
    if (module_rt == NULL || module_rt->set == NULL || i < 0 || i >= module_rt->set->n)
        return NULL;
    return module_rt->set->mods[i];
}

int module_on_loop(const struct petrel_module *m, const char *fn)
{
    if (module_rt == NULL || pthread_equal(pthread_self(), module_rt->loop_thread))
        return 1;
    msg_error("module %s: %s called from another thread (petrel_run_blocking's work function may call "
              "no Petrel function): ignored", m ? m->name : "?", fn);
    return 0;
}

int module_requires_minor(const struct petrel_module *m, unsigned minor, const char *fn)
{
    if (m->desc->abi_minor >= minor)
        return 1;
    /* A module built for an older minor cannot have been compiled against
     * a header that declares fn: it declared it itself, and would not even
     * load into a core of the minor it claims. Its descriptor is read
     * through that minor's layouts, so it is refused rather than half
     * served; logged at the 1st, 2nd, 4th, 8th... call, not per message. */
    struct petrel_module *w = (struct petrel_module *)m;
    unsigned long n = ++w->minor_refusals;
    if ((n & (n - 1)) == 0)
        msg_error("module %s: %s is plugin ABI %u.%u, but the module was built for ABI %u.%u: call refused "
                  "(rebuild it against the %u.%u headers and set PETREL_MODULE_INIT; %lu call%s so far)",
                  m->name, fn, PETREL_ABI_MAJOR, minor, m->desc->abi_major, m->desc->abi_minor, PETREL_ABI_MAJOR,
                  minor, n, n == 1 ? "" : "s");
    return 0;
}

void module_stale(const struct handle_table *t, uintptr_t h, const char *fn)
{
    static struct stale_log unknown[STALE_KINDS];
    struct petrel_module *m = module_by_index(handle_module(t, h));
    unsigned kind = t->tag == HANDLE_TAG_SESSION ? 0 : t->tag == HANDLE_TAG_PENDING ? 1 : 2;
    struct stale_log *sl = m ? &m->stale[kind] : &unknown[kind];
    /* A module that keeps calling with a dead handle must not flood the
     * log: at most 10 lines a second per module and kind of handle (so
     * that a late resume is not hidden by a burst of session calls), then
     * a count. */
    time_t now = time(NULL);
    if (now != sl->second) {
        sl->second = now;
        sl->lines = 0;
    }
    if (++sl->lines > 10) {
        sl->suppressed++;
        return;
    }
    char more[64] = "";
    if (sl->suppressed)
        snprintf(more, sizeof(more), " (and %lu similar lines suppressed)", sl->suppressed);
    sl->suppressed = 0;
    if (h == 0) {
        msg_warn("module %s: %s: NULL %s handle: ignored%s", m ? m->name : "?", fn, t->kind, more);
    } else if (m) {
        /* A late answer after a timeout or a hang-up is ordinary; anything else is the module's bug. */
        if (t->tag == HANDLE_TAG_PENDING || t->tag == HANDLE_TAG_SASL || t->tag == HANDLE_TAG_COMMAND)
            msg_info("module %s: %s: the %s is no longer valid (already %s, timed out, or its session "
                     "ended): ignored%s", m->name, fn, t->kind,
                     t->tag == HANDLE_TAG_PENDING ? "completed" : "answered", more);
        else
            msg_warn("module %s: %s: the %s handle is no longer valid (its session ended, or it was cancelled "
                     "or fired): ignored%s", m->name, fn, t->kind, more);
    } else {
        msg_warn("%s: not a valid %s handle (a module passed something else): ignored%s", fn, t->kind, more);
    }
}
