/*
 * The lookups an asynchronous SQL client has in hand (see sql_lookups.h):
 * the FIFO, the timeout and the answer, shared by pgsql and mysql.
 */
#include <stdlib.h>
#include <string.h>

#include "sql_lookups.h"

void sql_lookups_init(struct sql_lookups *l, struct sql_table *table, void (*dispatch)(void *),
                      void (*abandon)(void *), void *arg)
{
    memset(l, 0, sizeof(*l));
    l->table = table;
    l->dispatch = dispatch;
    l->abandon = abandon;
    l->arg = arg;
}

static void request_free(struct sql_request *r)
{
    if (r->timer)
        petrel_timer_cancel(r->timer);
    free(r->key);
    free(r);
}

void sql_request_answer(struct sql_request *r, int status, const char *value)
{
    struct remote_lookup *rl = r->rl;
    request_free(r);
    remote_lookup_answer(rl, status > 0 ? PETREL_TABLE_FOUND : status == 0 ? PETREL_TABLE_NOTFOUND
                                                                           : PETREL_TABLE_RETRY,
                         value);
}

struct sql_request *sql_lookups_next(struct sql_lookups *l)
{
    struct sql_request *r = l->head;
    if (r == NULL)
        return NULL;
    l->head = r->next;
    if (l->head == NULL)
        l->tail = NULL;
    r->next = NULL;
    return r;
}

void sql_lookups_unavailable(struct sql_lookups *l, struct sql_request *r)
{
    sql_table_warn_unavailable(l->table);
    sql_request_answer(r, -1, NULL);
}

void sql_lookups_no_connection(struct sql_lookups *l, struct sql_request *r, const char *why)
{
    const struct sql_table *s = l->table;
    petrel_module_log(s->module, PETREL_LOG_WARNING, "%s:%s: cannot start a connection: %s; the lookup of \"%.100s\" "
                      "fails (temporary error)", s->type, s->config, why, r->key);
    sql_request_answer(r, -1, NULL);
}

void sql_lookups_retry(struct sql_lookups *l, struct sql_request *r)
{
    r->conn = NULL;
    if (sql_table_pick_host(l->table) < 0) {
        sql_lookups_unavailable(l, r);
        return;
    }
    r->next = l->head;
    l->head = r;
    if (l->tail == NULL)
        l->tail = r;
}

static void request_timed_out(void *arg)
{
    struct sql_request *r = arg;
    struct sql_lookups *l = r->owner;
    const struct sql_table *s = l->table;
    r->timer = NULL;
    if (r->conn) {
        l->abandon(r->conn);   /* a query under way: its answer would come for nobody */
    } else {
        struct sql_request **p = &l->head, *prev = NULL;
        while (*p && *p != r) {
            prev = *p;
            p = &(*p)->next;
        }
        if (*p) {
            *p = r->next;
            if (l->tail == r)
                l->tail = prev;
        }
    }
    petrel_module_log(s->module, PETREL_LOG_WARNING, "%s:%s: no answer within %us for \"%.100s\"", s->type,
                      s->config, (s->timeout_ms + 999) / 1000, r->key);
    sql_request_answer(r, -1, NULL);
    l->dispatch(l->arg);
}

void sql_lookups_start(struct sql_lookups *l, struct remote_lookup *rl, const char *key)
{
    const struct sql_table *s = l->table;
    if (!table_query_eligible(&s->q, key)) {
        remote_lookup_answer(rl, PETREL_TABLE_NOTFOUND, NULL);
        return;
    }
    struct sql_request *r = calloc(1, sizeof(*r));
    if (r == NULL || (r->key = strdup(key)) == NULL) {
        free(r);
        remote_lookup_answer(rl, PETREL_TABLE_RETRY, NULL);
        return;
    }
    r->owner = l;
    r->rl = rl;
    r->timer = petrel_timer_start(s->module, s->timeout_ms, request_timed_out, r);
    if (l->tail)
        l->tail->next = r;
    else
        l->head = r;
    l->tail = r;
    l->dispatch(l->arg);
}

void sql_lookups_drop(struct sql_lookups *l)
{
    struct sql_request *r;
    while ((r = sql_lookups_next(l)) != NULL)
        request_free(r);
}
