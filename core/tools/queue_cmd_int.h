/*
 * Private to `petrelctl queue` (queue_cmd.c, queue_show.c): the commands,
 * the selectors, one message as the commands see it, and the command's
 * context; the output of list and show is queue_show.c.
 */
#ifndef PETREL_TOOLS_QUEUE_CMD_INT_H
#define PETREL_TOOLS_QUEUE_CMD_INT_H

#include <stdio.h>
#include <sys/stat.h>
#include <time.h>

#include <petrel/pool.h>

#include "queue/queue.h"

enum verb { V_LIST, V_SHOW, V_DELETE, V_HOLD, V_RELEASE, V_REQUEUE, V_FLUSH };

#define QBIT(d) (1u << (d))
#define QALL_LIVE (QBIT(QDIR_INCOMING) | QBIT(QDIR_ACTIVE) | QBIT(QDIR_DEFERRED) | QBIT(QDIR_HOLD))
#define DIR_END QDIR_COUNT

struct verb_info {
    const char *name;
    enum verb verb;
    /* Directories the command may work on, in scan order. The order follows
     * the flow of mail (incoming -> active -> deferred) where messages may
     * move during a scan, so one the queue manager moves is met again in
     * the next directory rather than missed. list/show use showq's order. */
    enum queue_dir order[QDIR_COUNT + 1];
    unsigned defaults;       /* the set used without --queue (corrupt/ only on request) */
    const char *done;        /* postsuper-style summary, NULL for none */
};

static const struct verb_info verbs[] = {
    { "list", V_LIST, { QDIR_ACTIVE, QDIR_INCOMING, QDIR_DEFERRED, QDIR_HOLD, QDIR_CORRUPT, DIR_END },
      QALL_LIVE, NULL },
    { "show", V_SHOW, { QDIR_ACTIVE, QDIR_INCOMING, QDIR_DEFERRED, QDIR_HOLD, QDIR_CORRUPT, DIR_END },
      QALL_LIVE, NULL },
    { "delete", V_DELETE, { QDIR_INCOMING, QDIR_ACTIVE, QDIR_DEFERRED, QDIR_HOLD, QDIR_CORRUPT, DIR_END },
      QALL_LIVE, "Deleted" },
    { "hold", V_HOLD, { QDIR_INCOMING, QDIR_ACTIVE, QDIR_DEFERRED, DIR_END },
      QBIT(QDIR_INCOMING) | QBIT(QDIR_ACTIVE) | QBIT(QDIR_DEFERRED), "Placed on hold" },
    { "release", V_RELEASE, { QDIR_HOLD, DIR_END }, QBIT(QDIR_HOLD), "Released from hold" },
    { "requeue", V_REQUEUE, { QDIR_ACTIVE, QDIR_DEFERRED, QDIR_HOLD, DIR_END },
      QBIT(QDIR_ACTIVE) | QBIT(QDIR_DEFERRED) | QBIT(QDIR_HOLD), "Requeued" },
    { "flush", V_FLUSH, { QDIR_DEFERRED, DIR_END }, QBIT(QDIR_DEFERRED), "Flushed" },
};

struct selector {
    const char *sender;        /* NULL = any; "" = the null sender */
    const char *domain;        /* recipient domain, NULL = any */
    long long older_than;      /* seconds, -1 = any age */
    unsigned queues;           /* QBIT set; 0 = the command's defaults */
    const char *reason;        /* substring of a defer reason, NULL = any */
};

/* An undelivered recipient as listed: address and (possibly empty) reason. */
struct shown {
    const char *address;
    const char *dsn;           /* from the defer file, or NULL */
    const char *reason;        /* "" when none is known */
};

/* One message as the commands see it. */
struct msg {
    const char *id;
    enum queue_dir dir;
    int ok;                    /* envelope read */
    const char *error;         /* why not, for a damaged file */
    struct queue_message m;
    struct stat st;            /* for damaged files: size and mtime */
    struct shown *rcpts;       /* undelivered recipients in display order */
    size_t nrcpts;
    int rcpts_built;
};

struct ctx {
    const struct verb_info *vi;
    struct queue *q;
    int defer_fd;              /* $queue_directory/defer or -1 */
    petrel_pool *pool;         /* per message, reset after each */
    struct selector sel;
    unsigned selected;         /* QBIT set the command works on */
    unsigned allowed;          /* every directory it may work on (explicit IDs) */
    time_t now;
    int json;
    FILE *out;
    unsigned long count;       /* messages listed or acted on */
    unsigned long long bytes;  /* their sizes (list) */
    unsigned synced;           /* QBIT set of directories to fsync at the end */
    int status;                /* exit status so far */
};

/* queue_cmd.c */
/* Fills msg->rcpts: undelivered recipients, those with a defer reason first. */
void qc_build_rcpts(struct ctx *c, struct msg *msg);
/* When the message arrived (seconds). */
long long qc_arrival(const struct msg *msg);

/* queue_show.c: the output of list (showq's text, postqueue -j's JSON) and show. */
void qc_list_text(struct ctx *c, struct msg *msg);
void qc_list_json(struct ctx *c, struct msg *msg);
int qc_show_message(struct ctx *c, struct msg *msg, int fd);

#endif
