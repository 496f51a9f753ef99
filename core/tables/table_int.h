/*
 * The table layer's own structures, shared by table.c (the registry and
 * the open-table object) and table_async.c (lookup scopes and queries of
 * remote tables). Not for types, which see only table.h and table_impl.h.
 */
#ifndef PETREL_TABLES_TABLE_INT_H
#define PETREL_TABLES_TABLE_INT_H

#include <sys/types.h>
#include <time.h>

#include "tables/table.h"

/* Where a registry's remote tables find the scope a caller entered. */
struct tbl_async {
    struct tbl_scope *current;
};

/* Warnings a process gives once per file, not once per table that names it
 * (alias_maps and local_recipient_maps open the same file, in every role). */
struct tbl_said {
    char **items;
    size_t n;
};

/* Who is told of lookups (tbl_registry_observe); shared by a registry's tables. */
struct tbl_observer {
    tbl_observe_fn *fn;
    void *arg;
};

/* Monotonic seconds, for lookup latencies (inline: both files use it,
 * neither calls into the other for it). */
static inline double tbl_clock(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

struct tbl_registry {
    const struct tbl_type **types;
    size_t count;
    size_t cap;
    struct tbl_said *said;
    struct tbl_async *async;      /* the lookup scope now entered (table_async.c) */
    struct tbl_observer *observer;
};

struct tbl {
    const struct tbl_type *type;
    char *spec;           /* as given, for messages */
    char *name;           /* NAME part of TYPE:NAME (after any proxy: prefix) */
    int flags;
    void *handle;
    petrel_pool *handle_pool;
    petrel_pool *scratch;
    /* file-based types: the compiled file and the inode now open */
    char *compiled;
    dev_t dev;
    ino_t ino;
    time_t next_check;    /* when a lookup looks at the path again */
    int complained;       /* a replaced file could not be opened, or the path vanished: said once */
    unsigned long reloads;   /* contents replaced so far (tbl_generation) */
    struct tbl_said *said;
    struct tbl_async *async;      /* the registry's */
    struct tbl_observer *observer;   /* the registry's */
    char *label;          /* TYPE:NAME */
};

/* table_async.c: a remote table's lookup inside or outside a scope. */
int tbl_remote_lookup(struct tbl *t, const char *key, const char **value);

#endif
