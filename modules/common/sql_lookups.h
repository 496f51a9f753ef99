/*
 * The lookups an asynchronous SQL client (pgsql, mysql) has in hand: each
 * is a struct sql_request, waiting in the table's FIFO or on one of its
 * connections, bounded by TYPE_timeout from the moment it was asked, and
 * answered exactly once through the glue (remote_table.h).
 *
 * The connections stay the module's (a libpq or Connector/C state machine
 * each): the queue knows a request's connection only as a pointer, and
 * calls the module back for the two things it cannot do itself, handing
 * waiting lookups to connections (dispatch) and closing the connection of
 * a lookup that timed out (abandon). How each module hands lookups out
 * stays in its dispatch, because the two differ: pgsql waits for a free
 * connection still being made (and tries another host when one cannot
 * be started), mysql gives the lookup to such a connection at once.
 */
#ifndef PETREL_MODULES_SQL_LOOKUPS_H
#define PETREL_MODULES_SQL_LOOKUPS_H

#include <petrel/plugin.h>

#include "remote_table.h"
#include "sql_table.h"

struct sql_lookups;

struct sql_request {
    struct sql_request *next;
    struct sql_lookups *owner;
    struct remote_lookup *rl;   /* answered through the glue (remote_table.c) */
    char *key;
    petrel_timer *timer;        /* TYPE_timeout */
    void *conn;                 /* the module's connection it is on; NULL while it waits */
};

struct sql_lookups {
    struct sql_table *table;    /* module, type, file, timeout, hosts */
    struct sql_request *head, *tail;
    /* Hands waiting lookups to connections (the module's table is arg). */
    void (*dispatch)(void *arg);
    /* Closes conn, whose lookup timed out: its answer would come for
     * nobody. conn no longer has a request when this is called. */
    void (*abandon)(void *conn);
    void *arg;
};

void sql_lookups_init(struct sql_lookups *l, struct sql_table *table, void (*dispatch)(void *),
                      void (*abandon)(void *), void *arg);

/* The asynchronous lookup: a key that is not looked up is "not found" at
 * once; else it waits in the FIFO (its timer started) and dispatch runs. */
void sql_lookups_start(struct sql_lookups *l, struct remote_lookup *rl, const char *key);

/* The first waiting lookup, taken off the FIFO, or NULL. */
struct sql_request *sql_lookups_next(struct sql_lookups *l);

/* r's connection failed: r goes back to the front of the FIFO when a host
 * is live (another may answer it), else it fails: "no database server
 * available". */
void sql_lookups_retry(struct sql_lookups *l, struct sql_request *r);

/* Fails r: "no database server available" (logged), a temporary error. */
void sql_lookups_unavailable(struct sql_lookups *l, struct sql_request *r);

/* Fails r, a temporary error, when a connection could not be made for a
 * reason that is not the server's (why: "out of memory"), logged. A
 * dispatch loop must fail the lookup then, never try again at once: the
 * next attempt would fail the same way, and the loop would never end. */
void sql_lookups_no_connection(struct sql_lookups *l, struct sql_request *r, const char *why);

/* Answers r and frees it: status 1 found (value), 0 not found, -1 error
 * (a temporary failure; the error was logged). */
void sql_request_answer(struct sql_request *r, int status, const char *value);

/* Frees what waits in the FIFO without answering (closing: the core made
 * the handles stale already). The connections are the module's. */
void sql_lookups_drop(struct sql_lookups *l);

#endif
