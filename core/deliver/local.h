/*
 * Local delivery agents: Maildir, mbox and pipe (Postfix's virtual(8),
 * local(8) and pipe(8) delivery back ends).
 *
 * Each function delivers the message of one job recipient and BLOCKS: the
 * queue manager runs it on a worker thread, or in a child process that has
 * already switched to the mailbox owner's uid. So nothing here touches
 * global state, the process's signal dispositions or the current directory;
 * everything comes in as arguments and the outcome goes out in *out.
 *
 * The message is streamed from job->fd with pread(2) at
 * queue_content_pread in fixed-size chunks, never held whole in memory.
 * Queue content has CRLF line ends; mailboxes get LF (as Postfix's local and
 * virtual agents write them).
 *
 * Return value: 0 when *out was filled (whatever the status: SENT, DEFERRED
 * or BOUNCED); -1 only for a caller error (bad index, NULL arguments), with
 * *out then filled as a DEFERRED 4.3.5 so it can still be logged. The relay
 * field is "local" for Maildir and mbox (the caller may overwrite it with
 * "virtual") and the service name for pipe.
 */
#ifndef PETREL_DELIVER_LOCAL_H
#define PETREL_DELIVER_LOCAL_H

#include <stddef.h>
#include <sys/types.h>

#include "deliver/deliver.h"

/* Writes Return-Path: <sender>, Delivered-To: <rcpt>, then the content into
 * MAILDIR/tmp/UNIQUE, fsyncs it, links it to MAILDIR/new/UNIQUE,S=<size>
 * and fsyncs new/. Creates MAILDIR and its tmp/new/cur (0700) when missing,
 * but not MAILDIR's parent, and makes what it created durable (fsync of
 * MAILDIR's parent, then of MAILDIR) before anything goes inside. */
int maildir_deliver(const char *maildir_path, const struct dlv_job *job, size_t i, struct dlv_result *out);

/* Appends to the mbox file at MBOX_PATH (created 0600 when missing, and then
 * its directory fsynced along with the data) under a
 * dotlock and an fcntl lock: From_ line, Return-Path, Delivered-To, the
 * content with mboxrd ">From " quoting, a blank line. A failed append is
 * truncated away. */
int mbox_deliver(const char *mbox_path, const struct dlv_job *job, size_t i, struct dlv_result *out);

/* Postfix pipe(8) flags that add envelope information to the message. */
#define PIPE_FLAG_FROM          1u   /* F: mbox From_ line first */
#define PIPE_FLAG_RETURN_PATH   2u   /* R: Return-Path: header */
#define PIPE_FLAG_DELIVERED_TO  4u   /* D: Delivered-To: header */
#define PIPE_FLAG_ORIG_TO       8u   /* O: X-Original-To: header */
#define PIPE_FLAG_QUOTE_FROM   16u   /* >: ">From " quoting of body lines */

struct pipe_options {
    /* Command and arguments, argv[0] an absolute path or a name looked up
     * in /usr/local/bin:/usr/bin:/bin. Each argument may hold macros
     * ${name} or $name: sender recipient original_recipient user extension
     * mailbox domain nexthop queue_id size client_address client_hostname
     * client_helo client_protocol sasl_method sasl_username. No shell. */
    const char *const *argv;
    const char *recipient_delimiter;   /* NULL or "" = none; any of its characters splits */
    unsigned timeout;                  /* seconds (0 = 1000, Postfix's command_time_limit) */
    int crlf;                          /* 1: keep the queue's CRLF line ends on stdin (default LF, as pipe(8)) */
    uid_t uid;                         /* 0 = keep */
    gid_t gid;                         /* 0 = keep */
    unsigned flags;                    /* PIPE_FLAG_* */
    const char *service;               /* for "delivered via NAME service" and relay=; NULL = "pipe" */
    const char *const *env;            /* extra "NAME=value" strings, NULL-terminated, or NULL */
    /* An alias's |command (local(8)): run as /bin/sh -c COMMAND instead of
     * argv, with NO macro expansion in the command text. What the message
     * says about itself reaches the command only in the environment (SENDER,
     * RECIPIENT, LOCAL, USER, LOGNAME, DOMAIN, EXTENSION, ORIGINAL_RECIPIENT,
     * CLIENT_*, SASL_*), each value censored by expansion_filter: a byte not
     * in it becomes '_', as Postfix's command_expansion_filter does. */
    const char *shell_command;
    const char *expansion_filter;      /* NULL = Postfix's default set */
    const char *home;                  /* HOME for the command, or NULL */
};

int pipe_deliver(const struct pipe_options *opt, const struct dlv_job *job, size_t i, struct dlv_result *out);

/* ---- shared by the three agents (defined in maildir.c) ---- */

/* local_write_all, counting the file's size in *size: a write past limit
 * (when not 0) fails with EFBIG before anything is written. */
int local_write_limited(int fd, const void *data, size_t n, unsigned long long *size, unsigned long long limit);

/* Pull-style reader of a job's content with the line-end and quoting
 * transformations the agents need. Bounded: a fixed input buffer and O(1)
 * state, whatever the line lengths. */
#define LOCAL_CONTENT_CHUNK 16384
struct local_content {
    int fd;
    const struct queue_message *msg;          /* read through queue_content_pread */
    unsigned long long next_off, remaining;   /* content position to read next, content bytes left */
    int to_lf;                 /* CRLF -> LF */
    int quote_from;            /* mboxrd: a line matching ^>*From  gets one more '>' */
    int ensure_final_nl;       /* add a newline if the content does not end with one */
    /* state */
    unsigned char in[LOCAL_CONTENT_CHUNK];
    size_t in_pos, in_len;
    int held_cr;               /* a CR waiting to see whether LF follows */
    int at_bol;                /* next input byte starts a line */
    unsigned long long gt_run; /* '>' seen at the start of the current line, not yet emitted */
    size_t from_matched;       /* bytes of "From " matched after the '>' run */
    int flush_quote;           /* when flushing: emit the extra '>' first */
    unsigned long long flush_gt;
    size_t flush_from, flush_from_pos;   /* bytes of "From " to emit, and emitted so far */
    int last_nl;               /* the last byte produced was '\n' */
    int produced_any;
    int done;
};

void local_content_init(struct local_content *c, const struct dlv_job *job, int to_lf, int quote_from);
/* Fills out with up to size (>= 16) bytes. Returns the byte count, 0 at the
 * end, -1 with errno on a read error (EIO for a file shorter than the
 * envelope says). */
ssize_t local_content_read(struct local_content *c, char *out, size_t size);

/* Writes all of data to fd, retrying on EINTR and short writes. 0 or -1. */
int local_write_all(int fd, const void *data, size_t n);
/* Copies s into out (size > 0) replacing control characters with '?', so an
 * envelope field cannot inject header lines. Returns out. */
char *local_header_safe(char *out, size_t size, const char *s);
/* The DSN code for a mailbox errno, as Postfix's mbox_dsn(): EAGAIN/ESTALE
 * 4.2.0, ENOSPC 4.3.0, EDQUOT/EFBIG 5.2.2, otherwise def. */
const char *local_errno_dsn(int err, const char *def);
/* Sets a DEFERRED/BOUNCED result from a DSN code (its first digit decides):
 * "WHAT: strerror(err)", or WHAT alone when err is 0. */
void local_result_dsn(struct dlv_result *out, const char *dsn, const char *relay, const char *what, int err);
/* Checks job and i; on error fills out and returns -1. */
int local_check_job(const struct dlv_job *job, size_t i, struct dlv_result *out, const char *relay);

#endif
