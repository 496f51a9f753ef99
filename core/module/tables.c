/*
 * Lookup tables and modules, both ways (see plugin.h): the table types a
 * module provides, registered into a role's table registry, and the
 * tables a module opens itself (petrel_table_open/petrel_table_lookup).
 *
 * Remote types (lookup_async) become TBL_TYPE_REMOTE types of the table
 * layer: each query the layer starts is handed to the module as a
 * petrel_table_query handle (runtime_int.h), guarded by a timer of the
 * module's NAME_hook_timeout. The handle goes stale when it is answered,
 * when the timer answers RETRY for it, and when the caller gives up
 * (lookup_cancel), so a module's late answer is a logged no-op.
 *
 * A module's own lookups always answer on a later loop turn (a zero
 * timeout event), local table or remote, so a callback never runs inside
 * the call that asked (plugin.h's rule for every callback).
 *
 * petrel_table_close() closes at once when no remote lookup of the table
 * is in flight, else when the last one is answered (the table layer wants
 * its queries finished before the close). The struct stays in the
 * module's list, marked closed, so that a lookup or a second close through
 * the old pointer is a logged refusal rather than a use after free; the
 * next petrel_table_open() reuses it. petrel_table_check() opens a spec and
 * closes it again, for a module's check(): in the master, where no role
 * registry exists yet, module_set_check() lends one (params.c).
 */
#include "config.h"

#include <stdlib.h>
#include <string.h>

#include <event2/event.h>

#include <petrel/plugin.h>
#include "lib/log.h"
#include "lib/xalloc.h"
#include "module/module.h"
#include "module/runtime_int.h"
#include "tables/table.h"

struct module_query;
static void query_end(struct module_query *mq);

/* ------------------------------------------------------------------ */
/* lookup-table types from modules                                     */

struct module_table {
    const petrel_table_type *type;
    struct petrel_module *module;
    void *handle;
    struct tbl_registry *reg;          /* owner entries only */
    struct module_query *in_flight;    /* open tables of a remote type: queries not yet answered */
};

static void *module_table_open(const struct tbl_type *type, const char *name, int flags, petrel_pool *pool,
                               char **error)
{
    struct module_table *owner = type->owner;
    const char *why = NULL;
    void *handle = owner->type->open(owner->module, name, pool, &why);
    if (handle == NULL) {
        *error = xstrdup(why ? why : "cannot open table");
        return NULL;
    }
    struct module_table *t = petrel_pool_zalloc(pool, sizeof(*t));
    *t = *owner;
    t->handle = handle;
    t->in_flight = NULL;
    return t;
}

static int module_table_lookup(void *handle, const char *key, const char **value, petrel_pool *scratch)
{
    struct module_table *t = handle;
    int rc = t->type->lookup(t->handle, key, value, scratch);
    return rc > 0 ? TBL_FOUND : rc == 0 ? TBL_NOTFOUND : TBL_ERROR;
}

static void module_table_close(void *handle)
{
    struct module_table *t = handle;
    while (t->in_flight)
        query_end(t->in_flight);   /* the layer cancelled them already; handles go stale */
    if (t->type->close)
        t->type->close(t->handle);
}

static int module_table_pattern(void *handle)
{
    struct module_table *t = handle;
    return t->type->handle_pattern(t->handle);
}

/* ------------------------------------------------------------------ */
/* remote types: queries as handles                                    */

struct module_query {
    struct module_query *next, *prev;  /* in the open table's in_flight list */
    struct module_table *table;
    struct tbl_query *q;
    uint32_t slot;
    struct event *timer;
};

static void query_unlink(struct module_query *mq)
{
    if (mq->prev)
        mq->prev->next = mq->next;
    else
        mq->table->in_flight = mq->next;
    if (mq->next)
        mq->next->prev = mq->prev;
}

/* Ends mq: its handle goes stale; the table layer's query is not told. */
static void query_end(struct module_query *mq)
{
    query_unlink(mq);
    handle_release(&module_rt->table_queries, mq->slot);
    if (mq->timer)
        event_free(mq->timer);
    free(mq);
}

static void query_timed_out(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct module_query *mq = arg;
    struct tbl_query *q = mq->q;
    msg_warn("%s: no answer from module %s within %us: lookup error (defer)", tbl_query_spec(q),
             mq->table->module->name, (mq->table->module->timeout_ms + 999) / 1000);
    query_end(mq);
    tbl_query_answer(q, TBL_ERROR, NULL);
}

static void module_table_start(void *handle, const char *key, struct tbl_query *q)
{
    struct module_table *t = handle;
    struct petrel_module *m = t->module;
    if (module_rt == NULL || module_rt->base == NULL) {
        msg_warn("%s: no event loop in this process: lookup error", tbl_query_spec(q));
        tbl_query_answer(q, TBL_ERROR, NULL);
        return;
    }
    struct module_query *mq = xcalloc(1, sizeof(*mq));
    uintptr_t h = handle_alloc(&module_rt->table_queries, mq, (unsigned)m->index);
    if (h == 0) {
        msg_warn("%s: too many table queries in flight in this process: lookup error", tbl_query_spec(q));
        free(mq);
        tbl_query_answer(q, TBL_ERROR, NULL);
        return;
    }
    mq->slot = handle_slot(h);
    mq->table = t;
    mq->q = q;
    mq->next = t->in_flight;
    if (t->in_flight)
        t->in_flight->prev = mq;
    t->in_flight = mq;
    mq->timer = evtimer_new(module_rt->base, query_timed_out, mq);
    unsigned ms = m->timeout_ms ? m->timeout_ms : 10000;
    struct timeval tv = { ms / 1000, (ms % 1000) * 1000 };
    evtimer_add(mq->timer, &tv);
    struct module_crash_frame frame = module_crash_enter(m, "table lookup");
    t->type->lookup_async(t->handle, (petrel_table_query *)h, key);
    module_crash_leave(frame);
}

static void module_table_cancel(void *handle, struct tbl_query *q)
{
    struct module_table *t = handle;
    for (struct module_query *mq = t->in_flight; mq; mq = mq->next)
        if (mq->q == q) {
            query_end(mq);
            return;
        }
}

static struct module_query *query_get(petrel_table_query *h, const char *fn)
{
    if (h == NULL || module_rt == NULL)
        return NULL;
    struct module_query *mq = handle_lookup(&module_rt->table_queries, (uintptr_t)h, NULL, NULL);
    if (mq == NULL)
        module_stale(&module_rt->table_queries, (uintptr_t)h, fn);
    else if (!module_on_loop(mq->table->module, fn))
        return NULL;
    return mq;
}

void petrel_table_answer(petrel_table_query *h, int status, const char *value)
{
    struct module_query *mq = query_get(h, __func__);
    if (mq == NULL)
        return;
    struct tbl_query *q = mq->q;
    int st = status == PETREL_TABLE_FOUND ? TBL_FOUND : status == PETREL_TABLE_NOTFOUND ? TBL_NOTFOUND : TBL_ERROR;
    if (st == TBL_FOUND && value == NULL) {
        msg_warn("%s: module %s answered FOUND without a value: lookup error", tbl_query_spec(q),
                 mq->table->module->name);
        st = TBL_ERROR;
    }
    query_end(mq);
    tbl_query_answer(q, st, value);
}

const char *petrel_table_query_spec(petrel_table_query *h)
{
    struct module_query *mq = query_get(h, __func__);
    return mq ? tbl_query_spec(mq->q) : NULL;
}

/* Builders (petrelctl map build): the core's char **error convention
 * holds malloc'd text, the API's const char ** holds the module's. */
struct module_builder {
    const petrel_table_type *type;
    void *builder;
};

static char *copy_error(const char *why, const char *fallback)
{
    return xstrdup(why ? why : fallback);
}

static void *module_build_open(const struct tbl_type *type, const char *path, petrel_pool *pool, char **error)
{
    struct module_table *owner = type->owner;
    const char *why = NULL;
    void *builder = owner->type->build_open(owner->module, path, pool, &why);
    if (builder == NULL) {
        *error = copy_error(why, "cannot create the table");
        return NULL;
    }
    struct module_builder *b = petrel_pool_zalloc(pool, sizeof(*b));
    b->type = owner->type;
    b->builder = builder;
    return b;
}

static int module_build_put(void *builder, const void *key, size_t klen, const void *value, size_t vlen, int replace,
                            char **error)
{
    struct module_builder *b = builder;
    const char *why = NULL;
    int rc = b->type->build_put(b->builder, key, klen, value, vlen, replace, &why);
    if (rc < 0)
        *error = copy_error(why, "write error");
    return rc < 0 ? -1 : rc > 0 ? 1 : 0;
}

static int module_build_close(void *builder, int commit, char **error)
{
    struct module_builder *b = builder;
    const char *why = NULL;
    if (b->type->build_close(b->builder, commit, &why) != 0) {
        *error = copy_error(why, "cannot finish the table");
        return -1;
    }
    return 0;
}

static int module_table_iterate(void *handle,
                                int (*fn)(void *arg, const void *key, size_t klen, const void *value, size_t vlen),
                                void *arg, char **error)
{
    struct module_table *t = handle;
    const char *why = NULL;
    if (t->type->iterate(t->handle, fn, arg, &why) != 0) {
        *error = copy_error(why, "read error");
        return -1;
    }
    return 0;
}

int module_set_register_tables(struct module_set *set, struct tbl_registry *reg)
{
    int bad = 0;
    if (set)
        set->tables = reg;
    for (int i = 0; set && i < set->n; i++) {
        struct petrel_module *m = set->mods[i];
        for (const petrel_table_type *tt = m->c.table_types; tt && tt->name; tt++) {
            /* Registry entries live as long as the module set. */
            struct tbl_type *type = xcalloc(1, sizeof(*type));
            struct module_table *owner = xcalloc(1, sizeof(*owner));
            owner->type = tt;
            owner->module = m;
            type->name = tt->name;
            type->lookup = module_table_lookup;
            type->close = module_table_close;
            type->flags = tt->pattern ? TBL_TYPE_PATTERN : 0;
            if (tt->lookup_async) {
                type->flags |= TBL_TYPE_REMOTE;
                type->lookup_start = module_table_start;
                type->lookup_cancel = module_table_cancel;
            }
            type->owner = owner;
            type->open_owned = module_table_open;
            if (tt->handle_pattern)
                type->handle_pattern = module_table_pattern;
            int file_based = tt->suffix != NULL;
            if (file_based) {
                type->suffix = tt->suffix;
                type->build_open = module_build_open;
                type->build_put = module_build_put;
                type->build_close = module_build_close;
                type->iterate = module_table_iterate;
            } else if (tt->iterate) {
                type->iterate = module_table_iterate;
            }
            if (tt->open == NULL || tt->lookup == NULL) {
                msg_error("module %s: table type %s lacks open or lookup", m->name, tt->name);
                bad++;
            } else if (file_based && (*tt->suffix == '\0' || tt->build_open == NULL || tt->build_put == NULL ||
                                      tt->build_close == NULL || tt->iterate == NULL)) {
                msg_error("module %s: table type %s has a file suffix but not build_open, build_put, build_close "
                          "and iterate", m->name, tt->name);
                bad++;
            } else if (tbl_registry_add(reg, type) != 0) {
                msg_error("module %s: table type %s: already provided by the core or another module", m->name,
                          tt->name);
                bad++;
            }
            m->table_regs = xrealloc(m->table_regs, (m->ntable_regs + 2) * sizeof(void *));
            m->table_regs[m->ntable_regs++] = type;
            m->table_regs[m->ntable_regs++] = owner;
        }
    }
    return bad ? -1 : 0;
}

/* ------------------------------------------------------------------ */
/* tables modules open                                                 */

struct petrel_table {
    struct petrel_module *module;
    struct tbl *t;                     /* NULL once closed */
    unsigned in_flight;                /* remote lookups not yet answered */
    int closing;                       /* petrel_table_close() came: close at the last answer */
};

/* One petrel_table_lookup: answered on a later loop turn. */
struct module_lookup {
    struct petrel_table *table;        /* a remote lookup's, until it is answered */
    struct petrel_module *module;
    petrel_table_fn *fn;
    void *arg;
    int status;
    char *value;
};

static void lookup_deliver(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct module_lookup *l = arg;
    int status = l->status == TBL_FOUND ? PETREL_TABLE_FOUND
               : l->status == TBL_NOTFOUND ? PETREL_TABLE_NOTFOUND : PETREL_TABLE_RETRY;
    struct module_crash_frame frame = module_crash_enter(l->module, "table lookup callback");
    l->fn(status, l->value, l->arg);
    module_crash_leave(frame);
    free(l->value);
    free(l);
}

static void lookup_later(struct module_lookup *l, int status, const char *value)
{
    l->status = status;
    l->value = status == TBL_FOUND && value ? xstrdup(value) : NULL;
    struct timeval now = { 0, 0 };
    if (module_rt == NULL || module_rt->base == NULL ||
        event_base_once(module_rt->base, -1, EV_TIMEOUT, lookup_deliver, l, &now) != 0)
        msg_panic("petrel_table_lookup: cannot schedule the answer");
}

static void table_really_close(struct petrel_table *pt)
{
    tbl_close(pt->t);
    pt->t = NULL;
    pt->closing = 0;
}

static void lookup_answered(void *arg, int status, const char *value)
{
    struct module_lookup *l = arg;
    struct petrel_table *pt = l->table;
    l->table = NULL;
    lookup_later(l, status, value);
    if (pt && --pt->in_flight == 0 && pt->closing)
        table_really_close(pt);
}

void petrel_table_close(petrel_table *pt)
{
    if (pt == NULL)
        return;
    if (pt->t == NULL || pt->closing) {
        msg_warn("module %s: petrel_table_close: the table is closed already", pt->module->name);
        return;
    }
    if (pt->in_flight)
        pt->closing = 1;
    else
        table_really_close(pt);
}

int petrel_table_check(petrel_module *m, const char *spec, const char **error)
{
    static char text[1024];
    *error = NULL;
    if (m == NULL || spec == NULL) {
        *error = "petrel_table_check: no module or no table";
        return -1;
    }
    if (m->set == NULL || m->set->tables == NULL) {
        snprintf(text, sizeof(text), "%s: no table registry in this process", spec);
        *error = text;
        return -1;
    }
    char *why = NULL;
    struct tbl *t = tbl_open(m->set->tables, spec, 0, &why);
    if (t == NULL) {
        snprintf(text, sizeof(text), "%s", why ? why : "cannot open table");
        free(why);
        *error = text;
        return -1;
    }
    tbl_close(t);
    return 0;
}

petrel_table *petrel_table_open(petrel_module *m, const char *spec, int flags, const char **error)
{
    static char text[1024];
    *error = NULL;
    if (m == NULL || spec == NULL) {
        *error = "petrel_table_open: no module or no table";
        return NULL;
    }
    if (m->set == NULL || m->set->tables == NULL) {
        snprintf(text, sizeof(text), "%s: no table registry in this process", spec);
        *error = text;
        return NULL;
    }
    char *why = NULL;
    struct tbl *t = tbl_open(m->set->tables, spec, (flags & PETREL_TABLE_FOLD_CASE) ? TBL_FLAG_FOLD_CASE : 0, &why);
    if (t == NULL) {
        snprintf(text, sizeof(text), "%s", why ? why : "cannot open table");
        free(why);
        *error = text;
        return NULL;
    }
    for (size_t i = 0; i < m->ntables; i++)
        if (m->tables[i]->t == NULL) {   /* closed: reused */
            m->tables[i]->t = t;
            return m->tables[i];
        }
    struct petrel_table *pt = xcalloc(1, sizeof(*pt));
    pt->module = m;
    pt->t = t;
    m->tables = xrealloc(m->tables, (m->ntables + 1) * sizeof(*m->tables));
    m->tables[m->ntables++] = pt;
    return pt;
}

int petrel_table_lookup(petrel_table *pt, const char *key, petrel_table_fn *fn, void *arg)
{
    if (pt == NULL || key == NULL || fn == NULL)
        return -1;
    if (pt->t == NULL || pt->closing) {
        msg_warn("module %s: petrel_table_lookup: the table is closed", pt->module->name);
        return -1;
    }
    if (module_rt == NULL || module_rt->base == NULL) {
        msg_warn("module %s: petrel_table_lookup: no event loop in this process", pt->module->name);
        return -1;
    }
    if (!module_on_loop(pt->module, __func__))
        return -1;
    if (strnlen(key, TBL_KEY_MAX + 1) > TBL_KEY_MAX) {
        msg_warn("module %s: %s: lookup key longer than %d bytes: refused", pt->module->name, tbl_spec(pt->t),
                 TBL_KEY_MAX);
        return -1;
    }
    struct module_lookup *l = xcalloc(1, sizeof(*l));
    l->module = pt->module;
    l->fn = fn;
    l->arg = arg;
    if (!tbl_is_remote(pt->t)) {
        const char *value;
        int status = tbl_lookup(pt->t, key, &value);
        lookup_later(l, status, value);
        return 0;
    }
    /* The query lives until it is answered (the type's timeout and the
     * module timer bound it); a module lookup has no one to cancel it. */
    l->table = pt;
    pt->in_flight++;
    tbl_query_start(pt->t, key, lookup_answered, l);
    return 0;
}

void module_tables_close(struct petrel_module *m)
{
    for (size_t i = 0; i < m->ntables; i++) {
        tbl_close(m->tables[i]->t);   /* NULL when closed already */
        free(m->tables[i]);
    }
    free(m->tables);
    m->tables = NULL;
    m->ntables = 0;
}

void module_set_tables_gone(struct module_set *set, struct tbl_registry *reg)
{
    if (set && set->tables == reg)
        set->tables = NULL;
}
