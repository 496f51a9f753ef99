/*
 * Module sessions: the runtime's view of one role session (an SMTP
 * connection), found from a petrel_session handle through the per-process
 * session table. It owns what modules keep per session and per
 * transaction (slots, replies, notes) and the state of the module call in
 * progress or suspended (dispatch.c).
 *
 * API: module_session_open when the connection starts, module_session_tx
 * when a transaction begins and ends, module_session_close (dispatch.c,
 * which also cancels a suspended call) when the connection ends. From the
 * close on, every handle to the session is stale: API functions given one
 * log and return NULL, 0 or -1.
 */
#include "config.h"

#include <stdlib.h>
#include <string.h>


#include "lib/log.h"
#include "lib/xalloc.h"
#include "module/module.h"
#include "module/runtime_int.h"

void module_session_turn_off(struct module_session *ms, const struct petrel_module *m)
{
    ms->off_index = m->index;
}

struct module_session *module_session_open(void *host, const struct module_host *ops, petrel_pool *pool)
{
    struct module_runtime *rt = module_rt;
    if (rt == NULL || rt->set == NULL)
        return NULL;
    struct module_session *ms = xcalloc(1, sizeof(*ms));
    uintptr_t h = handle_alloc(&rt->sessions, ms, HANDLE_NO_MODULE);
    if (h == 0) {
        msg_error("modules: %u sessions open in this process: no room for another; its module calls fail "
                  "with each module's default action", HANDLE_MAX_SLOTS);
        free(ms);
        return NULL;
    }
    ms->slot = handle_slot(h);
    ms->off_index = -1;
    ms->host = host;
    ms->ops = ops;
    ms->pool = pool;
    size_t n = (size_t)(rt->set->n ? rt->set->n : 1);
    ms->slots = xcalloc(n, sizeof(*ms->slots));
    ms->tx_slots = xcalloc(n, sizeof(*ms->tx_slots));
    ms->replies = xcalloc(n, sizeof(*ms->replies));
    return ms;
}

void module_reply_clear(struct module_reply *r)
{
    free(r->enhanced);
    free(r->text);
    memset(r, 0, sizeof(*r));
}

petrel_pool *module_session_call_pool(const struct module_session *ms)
{
    return ms->ops && ms->ops->call_pool && ms->host ? ms->ops->call_pool(ms->host) : ms->pool;
}

/* Notes are set and read in notes.c; they are freed here, with their scope. */
void module_note_free(struct module_note *n)
{
    free(n->name);
    free(n->value);
    free(n);
}

void module_notes_clear(struct module_session *ms, int tx_only)
{
    struct module_note **link = &ms->notes;
    while (*link) {
        struct module_note *n = *link;
        if (tx_only && !n->tx) {
            link = &n->next;
            continue;
        }
        *link = n->next;
        module_note_free(n);
        ms->nnotes--;
    }
}

void module_session_tx(struct module_session *ms, petrel_pool *tx_pool)
{
    if (ms == NULL)
        return;
    size_t n = (size_t)(module_rt->set->n ? module_rt->set->n : 1);
    memset(ms->tx_slots, 0, n * sizeof(*ms->tx_slots));
    module_notes_clear(ms, 1);
    ms->tx_pool = tx_pool;
}

struct module_session *module_session_get(petrel_session *h, struct petrel_module **m, const char *fn)
{
    struct module_runtime *rt = module_rt;
    struct petrel_module *owner = rt ? module_by_index(handle_module(&rt->sessions, (uintptr_t)h)) : NULL;
    if (!module_on_loop(owner, fn))
        return NULL;
    if (rt == NULL) {
        msg_warn("module %s: %s: there are no sessions in this process: ignored", owner ? owner->name : "?", fn);
        return NULL;
    }
    unsigned mod;
    struct module_session *ms = handle_lookup(&rt->sessions, (uintptr_t)h, NULL, &mod);
    if (ms == NULL || owner == NULL || ms->host == NULL) {
        module_stale(&rt->sessions, (uintptr_t)h, fn);
        return NULL;
    }
    if (m)
        *m = owner;
    return ms;
}

void *module_session_host(petrel_session *h, struct petrel_module **m, const char *fn)
{
    struct module_session *ms = module_session_get(h, m, fn);
    return ms ? ms->host : NULL;
}

petrel_session *module_session_handle(const struct module_session *ms, const struct petrel_module *m)
{
    return (petrel_session *)handle_for(&module_rt->sessions, ms->slot, (unsigned)m->index);
}

/* ------------------------------------------------------------------ */
/* the API                                                             */

petrel_module *petrel_session_module(petrel_session *h)
{
    /* The module is part of the handle: known even after the session ended. */
    struct petrel_module *m =
        module_rt ? module_by_index(handle_module(&module_rt->sessions, (uintptr_t)h)) : NULL;
    if (m == NULL)
        msg_warn("petrel_session_module: not a session handle: ignored");
    return m;
}

petrel_pool *petrel_session_pool(petrel_session *h)
{
    struct module_session *ms = module_session_get(h, NULL, __func__);
    return ms ? ms->pool : NULL;
}

petrel_pool *petrel_tx_pool(petrel_session *h)
{
    struct module_session *ms = module_session_get(h, NULL, __func__);
    return ms ? ms->tx_pool : NULL;
}

void **petrel_session_slot(petrel_session *h)
{
    struct petrel_module *m;
    struct module_session *ms = module_session_get(h, &m, __func__);
    return ms ? &ms->slots[m->index] : NULL;
}

void **petrel_tx_slot(petrel_session *h)
{
    struct petrel_module *m;
    struct module_session *ms = module_session_get(h, &m, __func__);
    return ms && ms->tx_pool ? &ms->tx_slots[m->index] : NULL;
}
