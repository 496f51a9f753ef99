/*
 * One connection to one milter, MTA side: an event-driven, non-blocking
 * state machine over the protocol layer (milter_proto.h).
 *
 * The owner drives it through a small interface of its own choosing
 * (milter_conn_ops): the connection asks for its socket to be watched
 * (watch) and for one timer (timer), and the owner calls
 * milter_conn_io() when the socket is ready and milter_conn_timeout() when
 * the timer fires. The milter module maps these onto petrel_watch_fd() and
 * petrel_timer_start(); the test driver onto poll(2).
 *
 * Every event call (open, connect, helo, mail, rcpt, data, unknown, header,
 * eoh, body, eom) returns MILTER_DONE, with the outcome in
 * milter_conn_result(), or MILTER_PENDING, and then ops->done() runs
 * exactly once, from milter_conn_io() or milter_conn_timeout(), never from
 * inside the call. Issue the next event only after the previous one is
 * done. An event needs no round trip when the milter asked not to get it
 * (SMFIP_NO*), not to reply to it (SMFIP_NR_*), said SKIP, or already
 * decided (accepted or rejected the connection, failed): such calls
 * return DONE at once. Body bytes are gathered into 64 KiB chunks, so
 * milter_conn_body() usually returns DONE without any I/O.
 *
 * Modifications arrive at end of message through ops->edit(), in the order
 * the milter sent them, before the final verdict; a replacement body comes
 * as a series of MILTER_EDIT_BODY_CHUNK edits (line ends normalised to
 * CRLF) and MILTER_EDIT_BODY_END: it is never held whole in memory.
 *
 * Failure is an outcome, not an error path: a milter that cannot be
 * reached, times out, closes the connection, or sends something malformed
 * gets a log line naming what happened (ops->log), and from then on every
 * event returns milter_default_action's verdict with result.failed set, as
 * Postfix does. Timeouts are Postfix's: milter_connect_timeout for the
 * connection and the option negotiation, milter_content_timeout for
 * headers, body and end of message, milter_command_timeout for the rest;
 * each is the longest wait without progress (a PROGRESS reply is progress).
 *
 * Memory: the connection owns its buffers (malloc); a small idle
 * connection keeps no body or read buffers (reads go through the stack).
 * Strings in a result or an edit live until the next call.
 */
#ifndef PETREL_MILTER_CONN_H
#define PETREL_MILTER_CONN_H

#include <stddef.h>
#include <stdint.h>

#include "milter_proto.h"
#include "milter_endpoint.h"

typedef struct milter_conn milter_conn;

#define MILTER_IO_READ 1
#define MILTER_IO_WRITE 2

typedef enum milter_log_level { MILTER_LOG_INFO, MILTER_LOG_WARNING, MILTER_LOG_ERROR } milter_log_level;

typedef struct milter_conn_ops {
    /* Watch fd for the events (MILTER_IO_READ | MILTER_IO_WRITE); 0 stops
     * watching it (always done before the connection closes its socket). */
    void (*watch)(void *arg, int fd, int events);
    /* Arm the connection's one timer for ms milliseconds (replacing a
     * running one); 0 disarms it. */
    void (*timer)(void *arg, unsigned ms);
    /* A call that returned MILTER_PENDING is finished. The owner may issue
     * the next event, or free the connection, from here. */
    void (*done)(void *arg);
    /* A modification at end of message (or a quarantine at any time).
     * Return 0, or -1 when it cannot be applied: further edits are then not
     * delivered and the final result says edit_failed. May be NULL. */
    int (*edit)(void *arg, const milter_edit *edit);
    /* The value of a macro ("{client_addr}", "{j}": always with braces), or
     * NULL when it has none (it is then not sent). May be NULL. */
    const char *(*macro)(void *arg, const char *name);
    /* Text is "milter NAME: what happened". May be NULL. */
    void (*log)(void *arg, milter_log_level level, const char *text);
} milter_conn_ops;

/* One milter's settings, shared by all its connections (build once per
 * configuration; milter_settings_create may resolve host names, so it
 * belongs to configuration time). */
typedef struct milter_config {
    const char *name;             /* the address as configured: "inet:127.0.0.1:8891" */
    const char *unix_base;        /* base directory of relative unix: paths, or NULL */
    const char *protocol;         /* milter_protocol; NULL: "6" */
    const char *default_action;   /* milter_default_action; NULL: "tempfail" */
    unsigned connect_timeout_ms;  /* 0: 30 s */
    unsigned command_timeout_ms;  /* 0: 30 s */
    unsigned content_timeout_ms;  /* 0: 300 s */
    /* The milter_*_macros lists by stage; NULL: Postfix's default. */
    const char *macros[MILTER_MACRO_STAGES];
    /* Offer SMFIP_RCPT_REJ: the owner will report rejected recipients with
     * milter_conn_rcpt(..., rejected = 1) to milters that ask for them. */
    int offer_rcpt_rejected;
    size_t max_reply;             /* 0: MILTER_REPLY_MAX_DEFAULT */
    size_t max_body;              /* limit on a replacement body; 0: none */
} milter_config;

typedef struct milter_settings milter_settings;
milter_settings *milter_settings_create(const milter_config *cfg, char *err, size_t errlen);
void milter_settings_free(milter_settings *s);
const char *milter_settings_name(const milter_settings *s);

typedef enum milter_status { MILTER_DONE = 0, MILTER_PENDING = 1 } milter_status;

typedef enum milter_verdict {
    MILTER_CONTINUE = 0,  /* no objection: go on */
    MILTER_ACCEPT,        /* accept the message (at CONNECT/HELO: the connection); no more events for it */
    MILTER_REJECT,        /* refuse with the 5xx reply */
    MILTER_TEMPFAIL,      /* refuse with the 4xx reply */
    MILTER_DISCARD,       /* accept the message and drop it */
    MILTER_SHUTDOWN,      /* reply 421 and close the SMTP session */
} milter_verdict;

typedef struct milter_result {
    milter_verdict verdict;
    int code;               /* REJECT, TEMPFAIL, SHUTDOWN: the reply code */
    const char *enhanced;   /* "5.7.1", or NULL */
    const char *text;       /* the (first line's) text after the codes */
    const char *reply;      /* the whole reply, possibly multi-line: "550-5.7.1 a\r\n550 5.7.1 b" */
    int connection;         /* the verdict holds for the rest of the SMTP connection */
    int failed;             /* the milter failed: this is milter_default_action */
    const char *quarantine; /* non-NULL: hold the message (QUARANTINE, or default_action = quarantine) */
    int edit_failed;        /* ops->edit refused a modification (the verdict is then a 451) */
} milter_result;

milter_conn *milter_conn_create(const milter_settings *s, const milter_conn_ops *ops, void *arg);
/* Closes the socket without a QUIT (use milter_conn_quit first for a
 * clean end). Safe while a call is pending: done() is then not called. */
void milter_conn_free(milter_conn *c);

/* Connects and negotiates options. */
milter_status milter_conn_open(milter_conn *c);
/* Instead of open: the milter is not asked at all (the owner's circuit
 * breaker skips it); every event answers its default action with
 * result.failed set, as after a failure, without a log line. */
void milter_conn_skip(milter_conn *c);
/* Negotiates on a socket the owner connected (non-blocking, connected):
 * the connection owns and closes it from now on. */
milter_status milter_conn_adopt(milter_conn *c, int fd);
/* family: AF_INET, AF_INET6, AF_UNIX or AF_UNSPEC. hostname NULL or
 * "unknown" with an address: sent as "[addr]", as Postfix does. */
milter_status milter_conn_connect(milter_conn *c, const char *hostname, int family, const char *addr,
                                  unsigned port);
milter_status milter_conn_helo(milter_conn *c, const char *helo);
/* argv: "<sender>" then the ESMTP parameters, NULL-terminated. A MAIL
 * while a transaction is open aborts that transaction first. */
milter_status milter_conn_mail(milter_conn *c, const char *const *argv);
/* argv: "<recipient>" then its ESMTP parameters. rejected: the recipient
 * was refused by our own checks (sent only to milters that asked with
 * SMFIP_RCPT_REJ; their verdict is advisory). */
milter_status milter_conn_rcpt(milter_conn *c, const char *const *argv, int rejected);
milter_status milter_conn_data(milter_conn *c);
milter_status milter_conn_unknown(milter_conn *c, const char *command);
/* value: the text after the colon as the message has it, CRLF between
 * folded lines. */
milter_status milter_conn_header(milter_conn *c, const char *name, const char *value);
milter_status milter_conn_eoh(milter_conn *c);
/* Body bytes as stored (CRLF line ends), any amount: *taken says how many
 * were used; after a PENDING, call again with the rest. */
milter_status milter_conn_body(milter_conn *c, const void *data, size_t len, size_t *taken);
milter_status milter_conn_eom(milter_conn *c);
/* Ends the current transaction without a message (RSET, a refused MAIL,
 * a lost client): SMFIC_ABORT, no reply. */
void milter_conn_abort(milter_conn *c);
/* 1 while a transaction is open on c (MAIL went out; no end of message or
 * SMFIC_ABORT since) and no call is pending: what milter_conn_abort ends. */
int milter_conn_in_message(const milter_conn *c);
/* SMFIC_QUIT and close the socket. */
void milter_conn_quit(milter_conn *c);
/* Connection reuse. libmilter honours SMFIC_QUIT_NC only right after an
 * end of message it answered with CONTINUE (in any other state it ignores
 * QUIT_NC and then the next CONNECT too), so reuse is offered only then.
 * milter_conn_quit_nc returns 0 when the connection is ready for the next
 * session's milter_conn_connect, or -1 (then it quit and closed: open a
 * new one). */
int milter_conn_reusable(const milter_conn *c);
int milter_conn_quit_nc(milter_conn *c);

/* From the owner's loop. */
void milter_conn_io(milter_conn *c, int events);
void milter_conn_timeout(milter_conn *c);

const milter_result *milter_conn_result(const milter_conn *c);

/* What was negotiated (valid after a successful open). */
int milter_conn_version(const milter_conn *c);
uint32_t milter_conn_actions(const milter_conn *c);
uint32_t milter_conn_steps(const milter_conn *c);
/* The macro names the connection sends at a stage (after SETSYMLIST). */
const milter_macro_list *milter_conn_macros(const milter_conn *c, int stage);
/* 0 once the milter needs no more events in this session (accepted or
 * rejected the connection, or failed). */
int milter_conn_active(const milter_conn *c);

#endif
