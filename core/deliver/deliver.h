/*
 * What every delivery agent is given and what it reports. The queue
 * manager opens a queue file, parses it (queue_message_read_fd), groups
 * recipients by transport and next hop, and hands an agent a struct
 * dlv_job; the agent returns one struct dlv_result per job recipient, and
 * the queue manager marks the queue file, logs, defers or bounces.
 */
#ifndef PETREL_DELIVER_DELIVER_H
#define PETREL_DELIVER_DELIVER_H

#include <stddef.h>
#include <sys/types.h>

#include "queue/queue.h"

struct hbc_tables;
struct mime_limits;

enum dlv_status { DLV_SENT, DLV_DEFERRED, DLV_BOUNCED };

struct dlv_result {
    enum dlv_status status;
    char dsn[16];       /* RFC 3463 code: "2.0.0", "4.4.1", "5.1.1" */
    char relay[320];    /* Postfix's relay=: "mx.example.com[192.0.2.1]:25", "virtual", "local", "none" */
    char text[512];     /* the reason in Postfix's words: "250 2.0.0 Ok: queued as X",
                           "delivered to maildir", "connect to mx[1.2.3.4]:25: Connection refused",
                           "host mx[1.2.3.4] said: 550 5.1.1 no such user (in reply to RCPT TO command)" */
    double conn_secs;   /* delays=a/b/c/d: c, connection setup including DNS, HELO, TLS */
    double xfer_secs;   /* d, message transmission */
    double sync_secs;   /* a mailbox delivery that was sent: time in fsync(2) making it durable (the file and
                           the directories its name is in); 0 otherwise */
};

/* Monotonic seconds, for timing a step (local_* agents' fsyncs). */
double dlv_monotonic(void);

struct dlv_job {
    const char *queue_id;
    int fd;                              /* the open queue file */
    const struct queue_message *msg;     /* its parsed envelope and content position */
    const char *sender;                  /* envelope sender to use ("" = <>) */
    size_t nrcpt;
    const size_t *rcpt_index;            /* indices into msg->env.rcpts (for ORCPT, NOTIFY) */
    const char *const *rcpt_addr;        /* final addresses after rewriting, parallel to rcpt_index */
    const char *nexthop;                 /* transport's next hop ("example.com", "[10.0.0.1]:25", ...) */
    /* SMTP/LMTP: the transport's smtp_header_checks, ... (NULL: none) and
     * the MIME limits they are applied with. */
    struct hbc_tables *checks;
    const struct mime_limits *mime_limits;
    unsigned long long file_size_limit;  /* largest file a local delivery writes (mailbox_size_limit,
                                            virtual_mailbox_limit; a whole mbox file); 0: none */
};

/* Fills r (and clears it first). */
void dlv_result_set(struct dlv_result *r, enum dlv_status status, const char *dsn, const char *relay,
                    const char *fmt, ...) __attribute__((format(printf, 5, 6)));

#endif
