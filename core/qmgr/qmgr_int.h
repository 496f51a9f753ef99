/*
 * Private to core/qmgr: the queue manager's in-memory state, shared by
 * qmgr.c (start and stop), intake.c (finding messages), message.c (a
 * message and its jobs), schedule.c (destinations, what runs next),
 * delivery.c (running jobs, collecting results) and finish.c (what happens
 * when a message has no job left: marks, notices, deferral, removal).
 */
#ifndef PETREL_QMGR_QMGR_INT_H
#define PETREL_QMGR_QMGR_INT_H

#include <sys/time.h>

#include <event2/event.h>

#include "deliver/deliver.h"
#include "deliver/smtp_client.h"
#include "lib/workq.h"
#include "mail/maps.h"
#include "qmgr/route.h"
#include "queue/queue.h"

#define DEST_BUCKETS 1024


struct qmgr;
struct qmsg;
struct dest;
struct notice;
struct deferred_note;
struct qmgr_transport;

struct rcpt_outcome {
    int state;                 /* 0 none yet, else DLV_SENT+1 / DLV_DEFERRED+1 / DLV_BOUNCED+1 (worst wins) */
    char dsn[16];
    char text[512];
    char relay[320];
    struct dest *dest;         /* where that outcome came from (board.c's deferred counts) */
};

struct qjob {
    struct qjob *next;         /* in its destination's queue */
    struct qjob *next_helper;  /* waiting for the mailbox helper */
    unsigned long long helper_id;
    size_t helper_left;        /* recipients the helper has not answered yet */
    struct qmsg *m;
    struct dest *d;
    enum route_kind kind;
    const char *transport;
    const char *path;
    long uid, gid;
    int from_alias;            /* an alias's |command or /file */
    const char *user, *extension;
    const char *const *pipe_argv;
    const char *pipe_flags;
    struct dlv_job dj;
    size_t *rcpt_index;
    const char **rcpt_addr;
    size_t cap;
    struct dlv_result *results;
    struct timeval started;
};

#define MSG_BUCKETS 16384

/* A message's routing while it runs (message.c): recipients whose routes
 * need a remote table's answer wait in the message's lookup scope; every
 * other message goes on meanwhile. */
struct tbl_scope;
/* Answers one message's routing may hold (tables/table.h): a recipient
 * needs a dozen at most (address forms, domain lists, transport_maps'
 * parent domains), so this is room for a big list's worth of distinct
 * ones; more are a lookup error for those recipients (a deferral). */
#define QMGR_ROUTE_MAX_LOOKUPS 4096
struct routing {
    struct tbl_scope *scope;
    struct route_list *routes;     /* per recipient, valid once done */
    unsigned char *done;           /* per recipient: routed (not waiting for an answer) */
    int sender_done, sender_failed;
    unsigned rounds;               /* fetches so far, for the log */
};

struct qmsg {
    struct qmsg *next, *prev;
    struct qmsg *next_hash;    /* in the queue manager's ID index */
    struct qmgr *q;
    char id[QUEUE_ID_MAX];
    int fd;
    petrel_pool *pool;
    struct queue_message msg;
    struct rcpt_outcome *outcome;
    unsigned jobs_left;
    struct timeval t_active;
    double arrival;
    const char *sender;        /* after sender_canonical_maps / masquerading */
    struct routing *routing;   /* while routing waits for table lookups (message.c), else NULL */
    struct notice *notices;    /* being committed (finish.c) */
    unsigned notices_left;     /* commits not yet answered */
};

/* What a destination did, for the board of busiest destinations
 * (board.c): totals since the queue manager started, and the last minute
 * in BOARD_SLOTS slots of BOARD_SLOT_SECONDS. */
#define BOARD_SLOTS 12
#define BOARD_SLOT_SECONDS 5
struct dest_figures {
    unsigned long long sent, deferred, bounced;
    long long slot_time[BOARD_SLOTS];          /* the slot's start / BOARD_SLOT_SECONDS */
    unsigned slot_sent[BOARD_SLOTS], slot_deferred[BOARD_SLOTS], slot_bounced[BOARD_SLOTS];
    unsigned long in_delivery;                 /* recipients in running jobs */
    unsigned long deferred_waiting;            /* recipients in deferred/ whose last attempt was here */
    double last_error_time;
    char last_error[240];                      /* printable ASCII only */
};

struct dest {
    struct dest *next_bucket;
    struct dest *next_ready;   /* in the ready ring */
    char *key;                 /* "transport\nnexthop" */
    struct qjob *head, *tail;
    unsigned active, limit;
    int in_ready;
    long long rate_delay;      /* TRANSPORT_destination_rate_delay: one at a time, this far apart */
    struct event *rate_timer;
    int resting;               /* waiting out rate_delay */
    int remote;                /* SMTP or LMTP: the board names it by its next hop */
    struct qmgr *q;
    struct dest_figures fig;   /* for petrelctl top (board.c) */
};

struct qmgr {
    struct event_base *base;
    const struct cfg *cfg;
    struct queue *queue;
    struct queue_id_gen idgen;
    struct workq *workq;
    struct tbl_registry *tables;
    struct router *router;
    struct dns_resolver *dns;
    struct module_metrics *metrics;    /* the shared metrics region (module/metrics_core.h), or NULL */
    unsigned process_index;            /* this process's gauge column there */
    struct qmgr_transport *transports; /* the SMTP and LMTP clients (transports.c) */
    int inotify_fd;
    struct event *inotify_ev, *scan_timer, *deferred_timer, *sig_term, *sig_flush, *sig_hup, *stop_timer;
    struct qmsg *messages;
    struct qmsg *by_id[MSG_BUCKETS];   /* "is it ours already?" in O(1), for scans of big queues */
    struct event *refill_timer;        /* room appeared: take more from incoming/ and deferred/ */
    unsigned nactive, active_limit;
    struct dest *buckets[DEST_BUCKETS];
    struct dest *ready_head, *ready_tail;
    unsigned deliveries, delivery_limit;
    unsigned dest_limit, dest_rcpt_limit;
    long long min_backoff, max_backoff, run_delay, max_lifetime, bounce_lifetime, delay_warning;
    const char *myhostname, *postmaster, *double_bounce_sender;
    const char *bounce_notice, *delay_notice, *error_notice;   /* *_notice_recipient, qualified */
    const char *const *notify_class_words;
    unsigned notify_classes;     /* MAIL_NOTIFY_*: notify_classes */
    const char *myorigin, *mail_name, *notice_recipient, *queue_directory, *dns_resolver;
    unsigned module_threads;          /* module_thread_limit: petrel_run_blocking's own pool */
    const char *bounce_notice_raw, *delay_notice_raw, *error_notice_raw;
    const char *command_expansion_filter, *recipient_delimiter;
    long long dest_rate_delay;   /* default_destination_rate_delay */
    int soft_bounce;             /* every bounce is a deferral; expired mail is not returned */
    unsigned long long mailbox_size_limit, virtual_mailbox_limit;   /* largest file a local delivery writes */
    struct module_set *modules;
    int helper_fd;             /* privileged mailbox helper, or -1 */
    struct event *helper_ev;
    unsigned long long helper_seq;
    struct qjob *helper_waiting;   /* jobs the helper has not fully answered */
    int stopping;
    int exiting;               /* the loop has ended: late completions only clean up */
    unsigned notices_in_flight;   /* notification commits on the thread pool */
    int intake_blocked;        /* the active limit was reached: rescan when room appears */
    struct qmgr_checks *checks;   /* smtp_header_checks and friends per transport (checks.c) */
    char defer_dir[4096];
    struct event *board_timer;          /* publishes the busiest destinations (board.c) */
    struct deferred_note *deferred_notes[MSG_BUCKETS];   /* board.c: who deferred what in deferred/ */
};

/* qmgr.c */
double qmgr_now(void);
unsigned qmgr_id_bucket(const char *id);

/* intake.c: event callbacks qmgr_main installs, and one directory's scan */
void qmgr_on_inotify(evutil_socket_t fd, short what, void *arg);
void qmgr_on_scan(evutil_socket_t fd, short what, void *arg);
void qmgr_on_deferred_scan(evutil_socket_t fd, short what, void *arg);
void qmgr_on_refill(evutil_socket_t fd, short what, void *arg);
void qmgr_on_flush(evutil_socket_t sig, short what, void *arg);
void qmgr_scan_dir(struct qmgr *q, enum queue_dir dir);

/* message.c: takes the message id from its directory into memory and
 * schedules its pending recipients (nothing when it is ours already, its
 * writer is still at work or the active limit is reached). */
void qmgr_take_message(struct qmgr *q, const char *id, enum queue_dir from);

/* schedule.c */
/* checks.c: a transport's smtp_header_checks and friends (NULL: none),
 * opened on first use; *failed when they cannot be opened. */
struct hbc_tables;
struct mime_limits;
struct hbc_tables *qmgr_transport_checks(struct qmgr *q, const char *transport, int lmtp,
                                         const struct mime_limits **limits, int *failed);
void qmgr_checks_free(struct qmgr *q);

/* The destination of transport and next hop, created on first use. */
struct dest *qmgr_dest_get(struct qmgr *q, const char *transport, const char *nexthop);
/* Puts d in the ready ring when it has a job and a free slot. */
void qmgr_make_ready(struct qmgr *q, struct dest *d);
void qmgr_enqueue_job(struct qmgr *q, struct qjob *j);
/* TRANSPORT_destination_rate_delay is over: the destination may go again. */
void qmgr_rate_rested(evutil_socket_t fd, short what, void *arg);
/* Starts jobs of ready destinations up to the global delivery limit. */
void qmgr_dispatch(struct qmgr *q);

/* delivery.c */
void qmgr_start_job(struct qmgr *q, struct qjob *j);
/* The mailbox helper's socket is readable: its answers. */
void qmgr_on_helper(evutil_socket_t fd, short what, void *arg);

/* transports.c */
/* The client for a job of this transport to nexthop (per-transport settings
 * from master.cf, per-destination smtp_tls_policy_maps): found(arg, client,
 * NULL, NULL), or found(arg, NULL, dsn, why) when that next hop's policy
 * cannot be applied or its table cannot answer (a deferral). Called exactly
 * once: before this returns when every policy table is local, else from the
 * loop once a remote table (pgsql:, socketmap:, ...) has answered, while
 * every other delivery goes on. log_id (the queue ID) names it in the log. */
typedef void qmgr_client_fn(void *arg, struct smtp_client *client, const char *dsn, const char *why);
void qmgr_smtp_client_find(struct qmgr *q, const char *transport, int lmtp, const char *nexthop, const char *log_id,
                           qmgr_client_fn *found, void *arg);
void qmgr_transports_free(struct qmgr *q);

/* board.c: the busiest destinations in the shared region, every second */
void qmgr_board_start(struct qmgr *q);
void qmgr_board_stop(struct qmgr *q);
/* One recipient's result at destination d. */
void qmgr_board_result(struct dest *d, const struct dlv_result *r);
/* The message goes to deferred/: its deferred recipients count at the
 * destinations that deferred them, until the message is taken again. */
void qmgr_board_deferred(struct qmgr *q, const struct qmsg *m);
/* The message id was taken into the active queue (from wherever). */
void qmgr_board_retaken(struct qmgr *q, const char *id);

/* finish.c */
/* The message has no job left: mark, notify, defer or remove, then free it
 * (possibly later: notices are committed on the thread pool first). */
void qmgr_finish_message(struct qmsg *m);
/* Nothing in flight any more while stopping: leave the loop. */
void qmgr_stop_if_idle(struct qmgr *q);

#endif
