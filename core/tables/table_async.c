/*
 * Remote tables: lookup scopes and asynchronous queries (see table.h,
 * "Remote tables", and doc/architecture.md, "Tables that wait").
 *
 * Design decisions:
 * - Callers keep their synchronous code. A caller that can wait enters a
 *   scope and runs its step; a remote table then answers from the scope's
 *   memo or says TBL_PENDING and records what was asked. The caller
 *   discards the step's result, fetches, and runs the step again. A step
 *   is thus re-run once per remote key it needs (an access(5) search of an
 *   address asks at most a handful), and the code that decides (access
 *   actions, recipient validation, Postfix's key orders) exists once.
 * - The memo is the caller's, not the table's: two sessions never see each
 *   other's answers, and an answer lives only as long as the caller's
 *   scope (one SMTP command), so nothing is cached behind an admin's back.
 * - The table layer knows no event loop: a type answers from whatever loop
 *   its process runs (the module runtime's), and its own timeout bounds
 *   every query; an answer given before lookup_start returned is held back
 *   and handed over when the scope's fetch returns (never re-entering the
 *   caller).
 * - Without a scope, a remote table's blocking lookup runs (bounded by the
 *   type's timeout): cleanup and petrelctl have no step to
 *   suspend yet (doc/tables.md lists every such caller). The queue manager
 *   routes each message in a scope of its own, sized for all its
 *   recipients (tbl_scope_new_sized), and tells finished recipients from
 *   waiting ones by the count of TBL_PENDING answers.
 */
#include "config.h"

#include <stdlib.h>
#include <string.h>

#include "lib/log.h"
#include "lib/xalloc.h"
#include "tables/table.h"
#include "tables/table_impl.h"
#include "tables/table_int.h"

enum answer_state { ANSWER_MISSING, ANSWER_FETCHING, ANSWER_READY };

struct tbl_answer {
    struct tbl *table;
    char *key;                 /* as the type sees it (folded) */
    enum answer_state state;
    int status;
    char *value;               /* TBL_FOUND */
    struct tbl_query *query;   /* ANSWER_FETCHING */
};

struct tbl_scope {
    struct tbl_answer *items;
    size_t n, cap;
    size_t max;                /* TBL_SCOPE_MAX_ANSWERS, or what tbl_scope_new_sized() said */
    unsigned long pending_given;   /* TBL_PENDING answers given (tbl_scope_pending_count) */
    size_t missing;            /* items in ANSWER_MISSING */
    size_t in_flight;          /* items in ANSWER_FETCHING */
    int fetching;              /* inside tbl_scope_fetch(): answers are collected, done is not called */
    void (*done)(void *arg);
    void *arg;
    int said_full;
};

struct tbl_query {
    struct tbl *table;
    char *key;
    /* a scope's query */
    struct tbl_scope *scope;
    size_t index;
    /* a lone query (tbl_query_start) */
    tbl_answer_fn *fn;
    void *arg;
    int starting;              /* lookup_start() has not returned */
    int answered;              /* answered while starting: status/value kept */
    int status;
    char *value;
    double started;            /* for the lookup's latency (tbl_registry_observe) */
};

/* A remote lookup's answer came: the registry's observer is told. */
static void observe(const struct tbl_query *q, int status)
{
    const struct tbl *t = q->table;
    if (t->observer->fn)
        t->observer->fn(t->observer->arg, t, status == TBL_FOUND || status == TBL_NOTFOUND ? status : TBL_ERROR,
                        tbl_clock() - q->started);
}

struct tbl_scope *tbl_scope_new_sized(size_t max_answers)
{
    struct tbl_scope *sc = xcalloc(1, sizeof(struct tbl_scope));
    sc->max = max_answers ? max_answers : 1;
    return sc;
}

struct tbl_scope *tbl_scope_new(void)
{
    return tbl_scope_new_sized(TBL_SCOPE_MAX_ANSWERS);
}

unsigned long tbl_scope_pending_count(const struct tbl_scope *sc)
{
    return sc ? sc->pending_given : 0;
}

static void query_free(struct tbl_query *q)
{
    free(q->key);
    free(q->value);
    free(q);
}

void tbl_scope_cancel(struct tbl_scope *sc)
{
    if (sc == NULL)
        return;
    for (size_t i = 0; i < sc->n; i++) {
        struct tbl_answer *a = &sc->items[i];
        if (a->state != ANSWER_FETCHING)
            continue;
        struct tbl_query *q = a->query;
        a->table->type->lookup_cancel(a->table->handle, q);
        query_free(q);
        a->query = NULL;
        a->state = ANSWER_MISSING;
        sc->missing++;
    }
    sc->in_flight = 0;
    sc->done = NULL;
    sc->arg = NULL;
}

void tbl_scope_reset(struct tbl_scope *sc)
{
    if (sc == NULL)
        return;
    tbl_scope_cancel(sc);
    for (size_t i = 0; i < sc->n; i++) {
        free(sc->items[i].key);
        free(sc->items[i].value);
    }
    sc->n = 0;
    sc->missing = 0;
    sc->said_full = 0;
}

void tbl_scope_free(struct tbl_scope *sc)
{
    tbl_scope_reset(sc);
    if (sc)
        free(sc->items);
    free(sc);
}

void tbl_scope_enter(struct tbl_registry *reg, struct tbl_scope *sc)
{
    reg->async->current = sc;
}

void tbl_scope_leave(struct tbl_registry *reg)
{
    reg->async->current = NULL;
}

int tbl_scope_missing(const struct tbl_scope *sc)
{
    return sc != NULL && sc->missing > 0;
}

/* The answer to a query of the scope arrived (or was held back). */
static void scope_answered(struct tbl_scope *sc, size_t index, int status, const char *value)
{
    struct tbl_answer *a = &sc->items[index];
    a->state = ANSWER_READY;
    a->query = NULL;
    a->status = status == TBL_FOUND || status == TBL_NOTFOUND ? status : TBL_ERROR;
    a->value = status == TBL_FOUND ? xstrdup(value ? value : "") : NULL;
    sc->in_flight--;
}

int tbl_scope_fetch(struct tbl_scope *sc, void (*done)(void *arg), void *arg)
{
    sc->fetching = 1;
    for (size_t i = 0; i < sc->n; i++) {
        struct tbl_answer *a = &sc->items[i];
        if (a->state != ANSWER_MISSING)
            continue;
        struct tbl_query *q = xcalloc(1, sizeof(*q));
        q->table = a->table;
        q->key = xstrdup(a->key);
        q->scope = sc;
        q->index = i;
        q->starting = 1;
        q->started = tbl_clock();
        a->state = ANSWER_FETCHING;
        a->query = q;
        sc->missing--;
        sc->in_flight++;
        a->table->type->lookup_start(a->table->handle, q->key, q);
        q->starting = 0;
        if (q->answered) {
            observe(q, q->status);
            scope_answered(sc, i, q->status, q->value);
            query_free(q);
        }
    }
    sc->fetching = 0;
    if (sc->in_flight == 0)
        return 0;
    sc->done = done;
    sc->arg = arg;
    return 1;
}

int tbl_remote_lookup(struct tbl *t, const char *key, const char **value)
{
    struct tbl_scope *sc = t->async->current;
    if (sc == NULL)
        /* Nobody can wait here: the type's blocking lookup, bounded by
         * its own timeout. */
        return t->type->lookup(t->handle, key, value, t->scratch);
    for (size_t i = 0; i < sc->n; i++) {
        struct tbl_answer *a = &sc->items[i];
        if (a->table != t || strcmp(a->key, key) != 0)
            continue;
        if (a->state != ANSWER_READY) {
            sc->pending_given++;
            return TBL_PENDING;
        }
        *value = a->value;
        return a->status;
    }
    if (sc->n == sc->max) {
        if (!sc->said_full)
            msg_warn("%s: more than %zu remote lookups in one step: answering the rest as a lookup error",
                     t->spec, sc->max);
        sc->said_full = 1;
        return TBL_ERROR;
    }
    if (sc->n == sc->cap) {
        /* Grown, never shrunk: queries in flight refer to items by index. */
        sc->cap = sc->cap ? sc->cap * 2 : 16;
        if (sc->cap > sc->max)
            sc->cap = sc->max;
        sc->items = xrealloc(sc->items, sc->cap * sizeof(*sc->items));
    }
    struct tbl_answer *a = &sc->items[sc->n++];
    memset(a, 0, sizeof(*a));
    a->table = t;
    a->key = xstrdup(key);
    a->state = ANSWER_MISSING;
    sc->missing++;
    sc->pending_given++;
    return TBL_PENDING;
}

/* ------------------------------------------------------------------ */
/* lone queries                                                        */

static struct tbl_query *query_start(struct tbl *t, const char *key, int fold, tbl_answer_fn *fn, void *arg);

struct tbl_query *tbl_query_start(struct tbl *t, const char *key, tbl_answer_fn *fn, void *arg)
{
    return query_start(t, key, (t->flags & TBL_FLAG_FOLD_CASE) != 0, fn, arg);
}

struct tbl_query *tbl_query_start_lookup(struct tbl *t, const char *key, tbl_answer_fn *fn, void *arg)
{
    /* as tbl_lookup(): a pattern type (socketmap:, Postfix's
     * DICT_FLAG_PATTERN) gets the key as it is */
    return query_start(t, key, (t->flags & TBL_FLAG_FOLD_CASE) && !(t->type->flags & TBL_TYPE_PATTERN), fn, arg);
}

static struct tbl_query *query_start(struct tbl *t, const char *key, int fold, tbl_answer_fn *fn, void *arg)
{
    struct tbl_query *q = xcalloc(1, sizeof(*q));
    q->table = t;
    q->key = fold ? tbl_fold_malloc(key) : xstrdup(key);
    q->fn = fn;
    q->arg = arg;
    q->starting = 1;
    q->started = tbl_clock();
    t->type->lookup_start(t->handle, q->key, q);
    q->starting = 0;
    if (q->answered) {
        /* Too early for the caller, who has no handle yet: types must
         * answer from the loop (the module glue defers an early answer to
         * the next loop turn). This layer has no loop to defer to, so the
         * caller gets it now, and the type's bug is logged. */
        msg_warn("%s: table type %s answered before its lookup started", t->spec, t->type->name);
        observe(q, q->status);
        fn(arg, q->status, q->value);
        query_free(q);
        return NULL;
    }
    return q;
}

void tbl_query_cancel(struct tbl_query *q)
{
    if (q == NULL)
        return;
    q->table->type->lookup_cancel(q->table->handle, q);
    query_free(q);
}

const char *tbl_query_spec(const struct tbl_query *q)
{
    return q->table->spec;
}

void tbl_query_answer(struct tbl_query *q, int status, const char *value)
{
    if (q->starting) {
        q->answered = 1;
        q->status = status;
        q->value = status == TBL_FOUND ? xstrdup(value ? value : "") : NULL;
        return;
    }
    observe(q, status);
    if (q->scope) {
        struct tbl_scope *sc = q->scope;
        scope_answered(sc, q->index, status, value);
        query_free(q);
        if (sc->in_flight == 0 && !sc->fetching && sc->done) {
            void (*done)(void *) = sc->done;
            void *arg = sc->arg;
            sc->done = NULL;
            sc->arg = NULL;
            done(arg);
        }
        return;
    }
    tbl_answer_fn *fn = q->fn;
    void *arg = q->arg;
    int st = status == TBL_FOUND || status == TBL_NOTFOUND ? status : TBL_ERROR;
    /* q is freed first: the caller's handle to it is spent. */
    char *copy = st == TBL_FOUND ? xstrdup(value ? value : "") : NULL;
    query_free(q);
    fn(arg, st, copy);
    free(copy);
}
