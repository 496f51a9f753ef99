/*
 * The pickup role's insides, shared by its files: pickup.c (the work list,
 * the in-process smtpd session that submits a file, the notices, the
 * loop) and pickup_claim.c (claiming a maildrop file and reading it whole
 * through the bounded maildrop parser). A job is one maildrop file, from
 * its claim to its removal; struct pickup is the role, one per process.
 */
#ifndef PETREL_SMTPD_PICKUP_INT_H
#define PETREL_SMTPD_PICKUP_INT_H

#include <sys/time.h>

#include "lib/buf.h"
#include "queue/maildrop.h"
#include "queue/queue.h"
#include "smtpd/smtpd_int.h"

struct bufferevent;
struct event;

#define REPLY_TEXT_MAX 400
#define READ_BLOCK 65536

enum step {
    P_GREETING, P_EHLO, P_MAIL, P_RCPT, P_DATA, P_CONTENT, P_DOT,
    P_RSET, P_BOUNCE_MAIL, P_BOUNCE_RCPT, P_BOUNCE_DATA, P_BOUNCE_DOT, P_QUIT,
};

enum outcome { RCPT_PENDING, RCPT_ACCEPTED, RCPT_REFUSED };

struct pickup;

struct job {
    struct pickup *pk;
    petrel_pool *pool;
    char name[QUEUE_ID_MAX];
    int fd;                           /* the maildrop file, flock()ed */
    struct queue_origin origin;       /* it, as the queue files of its session record it */
    long uid;
    long long arrival;
    int expired;                      /* older than maximal_queue_lifetime */
    const char *sender;
    const char **rcpt;
    size_t nrcpt, cap;
    unsigned char *outcome;           /* enum outcome per recipient */
    const char **why;                 /* the refusal reply per refused recipient */
    size_t next;                      /* the recipient whose RCPT reply is awaited */
    size_t naccepted, nrefused;
    int eight_bit, utf8;
    struct buf headers;               /* the original header section, for a notice */
    int headers_done;
    struct bufferevent *bev;          /* our end of the session */
    enum step step;
    char reply[REPLY_TEXT_MAX + 1];
    int code;
    char queue_id[64];                /* set once the message is queued */
    int retry;                        /* keep the file: try again later */
    int notice_failed;
    /* content streaming */
    struct maildrop_parser parser;
    int content_done;
    int at_line_start, prev_cr;
};

struct pickup {
    struct smtpd_worker *w;
    struct smtpd_listener listener;
    int dirfd, corrupt_fd, inotify_fd;
    struct event *inotify_ev, *scan_timer, *next_ev, *sig_term, *sig_drain, *sig_hup, *stop_timer;
    struct timeval scan_interval;
    char (*pending)[QUEUE_ID_MAX];
    size_t head, count;
    int rescan;
    struct job *job;
    int stopping;
    int stop_grace_seconds;
    long long max_lifetime;
    const char *myhostname;
};

/* pickup_claim.c: claims and checks the maildrop file name (locked, ready,
 * read whole without fault); returns a job ready to submit, or NULL (the
 * file is not ready, taken, gone, or moved to corrupt/ with a warning). */
struct job *smtpd_pickup_claim(struct pickup *pk, const char *name);

#endif
