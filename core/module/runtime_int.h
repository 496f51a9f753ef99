/*
 * Internals shared by the files of the module runtime (not for roles).
 *
 * Handles. What a module holds as petrel_session *, petrel_pending *,
 * petrel_timer * or petrel_watch * is never a pointer to memory: it is an
 * integer naming a slot of a per-process table, that slot's generation,
 * and (for sessions and pending calls) the index of the module it was
 * handed to. Bit layout (64-bit pointers only):
 *
 *   63 62 61..56  55  54..34     33..16  15..8   7..0
 *    1  0  gen hi  1  gen lo     slot    module  tag
 *
 * The tag byte is odd and names the kind, so a handle is never an aligned
 * address, and handles of different kinds never validate as each other.
 * Bits 63/62 (x86-64: not a canonical address) and 55 (arm64: the
 * kernel's half, even with top-byte-ignore) make any dereference fault.
 * The generation (27 bits) grows each time a slot is freed; free slots are
 * reused in FIFO order, so a stale handle would have to be kept across
 * 2^27 reuses of its slot to alias a live one.
 */
#ifndef PETREL_MODULE_RUNTIME_INT_H
#define PETREL_MODULE_RUNTIME_INT_H

#include <pthread.h>
#include <stdint.h>

#include <petrel/plugin.h>
#include "module/hooks.h"
#include "module/runtime.h"

struct event;
struct event_base;
struct workq;
struct dns_resolver;
struct module_set;
struct petrel_module;

#define HANDLE_TAG_SESSION 0x5bu
#define HANDLE_TAG_PENDING 0xa7u
#define HANDLE_TAG_TIMER 0x3du
#define HANDLE_TAG_WATCH 0xc9u
#define HANDLE_TAG_METRIC 0x6bu
#define HANDLE_TAG_SASL 0x95u
#define HANDLE_TAG_TABLE_QUERY 0xe3u
#define HANDLE_TAG_COMMAND 0xd1u
#define HANDLE_TAG_MESSAGE 0x71u
#define HANDLE_TAG_BODY_WRITER 0x8fu
#define HANDLE_NO_MODULE 0xffu
#define HANDLE_SLOT_BITS 18
#define HANDLE_MAX_SLOTS (1u << HANDLE_SLOT_BITS)
#define HANDLE_GEN_BITS 27

struct handle_entry {
    uint32_t generation;                 /* of the object now (or last) in the slot; never 0 */
    uint32_t next_free;                  /* free list link */
    void *object;                        /* NULL when free */
};

struct handle_table {
    const char *kind;                    /* "session", "pending call", ... for log lines */
    unsigned tag;
    struct handle_entry *entries;
    uint32_t n, cap;
    uint32_t free_head, free_tail, nfree;
};

void handle_table_init(struct handle_table *t, const char *kind, unsigned tag);
void handle_table_free(struct handle_table *t);
/* Stores object in a slot; returns the handle for module index mod, or 0 when the table is full. */
uintptr_t handle_alloc(struct handle_table *t, void *object, unsigned mod);
/* The handle of an occupied slot for another module index. */
uintptr_t handle_for(const struct handle_table *t, uint32_t slot, unsigned mod);
/* Frees a slot: every handle to it goes stale. */
void handle_release(struct handle_table *t, uint32_t slot);
/* The object of a valid handle (and its slot and module index), or NULL. */
void *handle_lookup(const struct handle_table *t, uintptr_t h, uint32_t *slot, unsigned *mod);
/* The module index a handle of this kind carries, even when stale; -1 if it is no such handle. */
int handle_module(const struct handle_table *t, uintptr_t h);
uint32_t handle_slot(uintptr_t h);

/* This process's runtime (NULL until module_runtime_start). */
/* The delivery hook call in progress (module_notify_delivery), for
 * petrel_delivery_message_open: the module called, the result it was given,
 * the queue file, and the readers it opened (released when it returns). */
struct module_delivery_call {
    struct petrel_module *module;
    const petrel_delivery_result *result;
    module_message_read_fn *read;   /* the queue manager's content reader, or NULL */
    void *read_arg;
    unsigned long long content_length;
    struct module_message *readers;
};

struct module_runtime {
    struct module_delivery_call *delivery;   /* while a delivery hook runs */
    struct module_set *set;
    unsigned role;
    struct event_base *base;
    struct workq *pool;              /* petrel_run_blocking's threads, made at the first call */
    unsigned pool_threads;           /* module_thread_limit */
    struct dns_resolver *dns;
    const petrel_dns_answer *dns_answer;   /* the answer a DNS callback is being given */
    long dns_ttl;                          /* and its TTL (petrel_dns_answer_ttl) */
    struct module_metrics *metrics;
    unsigned process_index;
    pthread_t loop_thread;
    struct handle_table sessions, pendings, timers, watches, metric_handles, sasl_requests, table_queries,
        command_requests, messages, body_writers;
    int fam_calls, fam_duration, fam_circuit_open, fam_circuit_opened;   /* the core's metrics */
};
extern struct module_runtime *module_rt;

/* The module with index i in this process's set, or NULL. */
struct petrel_module *module_by_index(int i);
/* On the loop thread? Logs (naming the module and fn) when not. */
int module_on_loop(const struct petrel_module *m, const char *fn);
/* Logs that fn got a handle that is stale or not one of ours (rate-limited per module). */
void module_stale(const struct handle_table *t, uintptr_t h, const char *fn);

/* One module's reply set with petrel_set_reply() for the call in progress
 * or the suspended one (malloc'd copies: one per module at most). */
struct module_reply {
    int code;
    char *enhanced, *text;
    int multiline;          /* petrel_set_reply_lines: text's lines are separated by '\n' */
};

/* One note (notes.c): a named value a module set for the session or the transaction. */
struct module_note {
    struct module_note *next;
    int tx;
    char *name;
    char *value;
};

/* What a suspended call completes into. */
enum module_waiter { WAIT_NONE, WAIT_PHASE, WAIT_CALL };

struct module_session {
    uint32_t slot;                       /* in module_rt->sessions */
    void *host;
    const struct module_host *ops;
    petrel_pool *pool, *tx_pool;
    void **slots, **tx_slots;            /* petrel_session_slot / petrel_tx_slot, per module */
    struct module_reply *replies;        /* per module */
    struct module_note *notes;           /* notes.c */
    unsigned nnotes;
    /* the call in progress (a module is running on this session) */
    struct petrel_module *calling;
    const char *calling_label;
    int calling_may_suspend;
    int calling_deferrals;           /* a restriction's: DEFER_IF_PERMIT/REJECT are answers */
    double calling_started;
    int closed;                          /* closed while a module was running: free when it returns */
    /* the suspended call, if any (at most one: the session waits for it) */
    uint32_t pending_slot;
    int has_pending;
    /* what its completion continues */
    enum module_waiter waiter;
    module_done_fn *done;
    struct {
        enum module_hook hook;
        int index;
        struct module_hook_args args;
        struct module_result result;     /* collected DISCARD/HOLD */
    } run;
    struct event *continue_ev;           /* runs the completion of a resume on the next loop turn */
    struct module_result completed;      /* the result it carries */
    struct petrel_module *completed_by;
    /* the SASL back-end's unanswered request, if any (sasl.c) */
    uint32_t sasl_slot;
    int has_sasl;
    /* A module this session's service turns off (its hooks are not called:
     * smtpd's receive_override_options=no_milters for the milter module), or -1. */
    int off_index;
};

/* sessions.c */
void module_note_free(struct module_note *n);
/* Frees the transaction's notes (tx_only) or every note of the session. */
void module_notes_clear(struct module_session *ms, int tx_only);
struct module_session *module_session_get(petrel_session *h, struct petrel_module **m, const char *fn);
/* The pool for the strings of a call's answer (module_host.call_pool). */
petrel_pool *module_session_call_pool(const struct module_session *ms);
void module_reply_clear(struct module_reply *r);
petrel_session *module_session_handle(const struct module_session *ms, const struct petrel_module *m);
void module_session_destroy(struct module_session *ms);

/* metrics_api.c */
void module_metrics_start(struct module_runtime *rt);
double module_clock(void);
/* One call of m's hook or restriction (label) ended with verdict; started
 * is module_clock() at the call (0: no duration, e.g. skipped). */
void module_record_call(const struct petrel_module *m, const char *label, const char *verdict, double started);

/* dispatch.c */
void module_pending_cancel(struct module_session *ms);

/* sasl.c: the session's unanswered SASL request goes stale (nothing is told). */
void module_sasl_cancel(struct module_session *ms);

#endif
