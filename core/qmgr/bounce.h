/*
 * Delivery status notifications (RFC 3464 / RFC 6522): the message the
 * queue manager sends back when recipients failed, are delayed, or asked
 * for NOTIFY=SUCCESS, in Postfix's wording.
 *
 * bounce_compose() only writes the message text; the caller creates the
 * queue file (sender <>, recipient the original sender or the postmaster)
 * and decides that a notification never goes to <>.
 */
#ifndef PETREL_QMGR_BOUNCE_H
#define PETREL_QMGR_BOUNCE_H

#include <stddef.h>

#include "queue/queue.h"

#define BOUNCE_SIZE_LIMIT 50000   /* Postfix's bounce_size_limit */

struct bounce_rcpt {
    const char *address;       /* Final-Recipient */
    const char *orcpt;         /* "rfc822;addr" as stored by smtpd (ORCPT), or NULL */
    const char *action;        /* "failed", "delayed", "delivered", "relayed", "expanded" */
    const char *status;        /* "5.1.1" */
    const char *remote_mta;    /* "dns; mx.example.com" or NULL */
    const char *diagnostic;    /* "smtp; 550 5.1.1 ..." or "x-unix; ..." or NULL */
    long long last_attempt;    /* Last-Attempt-Date; 0 = omit */
    const char *reason;        /* human text for part 1; NULL = diagnostic without its "type; " */
};

struct bounce_info {
    const char *myhostname;
    const char *mail_name;     /* "Petrel"; unused in the text (Postfix's templates say "The mail system") */
    const char *postmaster;    /* named in "please send mail to ..."; NULL = "postmaster".
                                  From: is always MAILER-DAEMON@myhostname, as Postfix. */
    const char *queue_id;      /* the original message's */
    const struct queue_message *msg;
    int fd;                    /* the original queue file, read with queue_content_pread */
    const char *kind;          /* "failure", "delay", "success" */
    const struct bounce_rcpt *rcpts;
    size_t nrcpt;
    int headers_only;          /* RET=HDRS, or a double bounce: text/rfc822-headers */
    long long now;
    const char *boundary_seed; /* e.g. the new queue ID: makes boundary and Message-Id unique */
    size_t size_limit;         /* larger originals are returned as headers only; 0 = BOUNCE_SIZE_LIMIT */
    const char *to;            /* To: header; NULL = the original sender, or postmaster when that is <> */
    long long max_lifetime;    /* delay notices: "retried until it is N day(s) old"; 0 = 5 days */
    long long retry_until;     /* delay notices: Will-Retry-Until; 0 = omit */
    int postmaster_copy;       /* notify_classes bounce or delay: the postmaster's copy of a failure or
                                  delay notice (Postfix's POSTMASTER_COPY): its own subject, no
                                  boilerplate, the original's headers only */
};

/* Writes the complete DSN message (headers + body, CRLF line ends) through
 * emit, in pieces of at most a few KiB. Returns 0, or -1 when emit failed,
 * the original could not be read (errno), or an argument is missing
 * (EINVAL). Thread-safe; no global state. */
int bounce_compose(const struct bounce_info *info, int (*emit)(void *ctx, const char *data, size_t n), void *ctx);

#endif
