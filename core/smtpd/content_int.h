/*
 * smtpd internals of the content path: what happens to a message between
 * the DATA and BDAT readers (data.c) and the queue file. The receiving half
 * of Postfix's cleanup (cleanup.c, with its settings in cleanup_settings.c
 * and what its header/body checks share with milter_header_checks in
 * checks_actions.c), the before-queue content filter (proxy.c), header
 * address rewriting and the content helpers (content.c) and the end of the
 * message objects modules hold (message_api.c). The session and the
 * transaction they work on are smtpd_int.h's.
 */
#ifndef PETREL_SMTPD_CONTENT_INT_H
#define PETREL_SMTPD_CONTENT_INT_H

#include <stddef.h>

#include "lib/buf.h"
#include "mail/hbc.h"
#include "mail/mime.h"
#include "queue/queue.h"
#include "smtpd/restrict.h"
#include "smtpd/smtpd_int.h"

/* The receiving half of Postfix's cleanup (cleanup.c): header and body
 * checks and the MIME limits, read from the master.cf cleanup service that
 * the smtpd or pickup service's cleanup_service_name names (main.cf when
 * that is the default "cleanup" and master.cf has no such line). */
struct smtpd_cleanup_settings {
    struct hbc_tables checks;
    struct hbc_tables milter_checks;  /* milter_header_checks (its HBC_HEADER list only) */
    struct mime_limits limits;
    unsigned mime_options;            /* MIME_OPT_*: disable_mime_input_processing, strict_* */
    long long body_check_len;         /* body_checks_size_limit (0: no limit) */
    int hopcount_limit;
    int strict;                       /* a strict_* option is on */
    int checks_remote;                /* a check table is remote: lookups may wait (cleanup.c) */
    int milter_checks_remote;         /* a milter_header_checks table is remote (milter_checks.c) */
};

/* cleanup.c: the content stage between the DATA reader and the queue file */
/* Starts the transaction's content: the access tables' PREPEND headers
 * (prepend, as written), then our Received header (received, len bytes),
 * which goes through header_checks like any header. */
void smtpd_cleanup_begin(struct smtpd_session *s, const struct buf *prepend, const char *received, size_t len);
/* Content bytes (CRLF line ends) as they arrive. */
void smtpd_cleanup_feed(struct smtpd_session *s, const char *data, size_t n);
/* 1 while a header or body check waits for a remote table: the DATA and
 * BDAT readers take no further input until it answers (smtpd_cleanup_then
 * tells them when). */
int smtpd_cleanup_waiting(const struct smtpd_session *s);
/* The content has ended (the parser's last header or line is given now). */
void smtpd_cleanup_input_end(struct smtpd_session *s);
/* 0 when nothing waits (go on now); 1 when then(s) will run, from the
 * loop, once the waiting checks have answered. */
int smtpd_cleanup_then(struct smtpd_session *s, void (*then)(struct smtpd_session *));
/* The end of the content: the checks' verdict goes to tx->content_verdict
 * (unless a module refused first), HOLD/DISCARD to tx->hold/discard. */
void smtpd_cleanup_end(struct smtpd_session *s);
/* milter_header_checks: petrel_milter_header_checks and its _async
 * variant (plugin.h) are milter_checks.c's, and so is
 * petrel_milters_stopped (tx->milters_stopped). */
/* checks_actions.c: what the two (cleanup.c's header/body checks and
 * milter_checks.c) share. A check's log line (Postfix's cleanup_act_log): "ID: PREFIXACTION: WHERE
 * CONTENT from CLIENT; from=<> to=<> proto= helo=<>: TEXT". */
void smtpd_checks_log(struct smtpd_session *s, const char *prefix, const char *action, const char *where,
                      const char *content, const char *text);
/* A check's REJECT [text]: the verdict into *r (451 for a 4.x.x code, else
 * 550; restriction = param); returns "DSN text" for the log line. */
const char *smtpd_checks_reject(petrel_pool *pool, const char *text, const char *param, struct restrict_result *r);
/* What header/body checks (cleanup.c's act) and milter_header_checks
 * (milter_checks.c) do alike to the transaction, as Postfix's cleanup_act and
 * cleanup_milter_hbc_extend do: WARN and INFO log; HOLD (unless held or
 * discarded already), DISCARD, FILTER, REDIRECT and BCC change the
 * transaction and log; a bad FILTER, REDIRECT or BCC argument is warned
 * about (naming the list, param) and ignored. prefix goes before the
 * action in the log line ("" or "milter-header-"). 1 when the action was
 * taken, 0 when not. What a DISCARD or REDIRECT ends is the caller's: the
 * checks and the milters after header/body checks, only the checks after
 * milter_header_checks. Any other command is the caller's alone. */
int smtpd_checks_tx_action(struct smtpd_session *s, const struct hbc_action *a, const char *prefix,
                           const char *where, const char *content, const char *param);
/* cleanup_settings.c: the parameters of the four check lists, in
 * enum hbc_list order. */
extern const char *const smtpd_cleanup_check_params[HBC_NLISTS];
/* Opens the checks and reads the limits of the cleanup service for svc. */
struct smtpd_cleanup_settings *smtpd_cleanup_settings_create(struct smtpd_worker *w,
                                                              const struct master_service *svc,
                                                              const struct cfg *cfg, char **error);
void smtpd_cleanup_settings_free(struct smtpd_cleanup_settings *c);
/* Warns about -o overrides of cleanup parameters on an smtpd or pickup line. */
void smtpd_cleanup_warn_overrides(const struct master_service *svc);

/* proxy.c: smtpd_proxy_filter, the before-queue content filter */
struct smtpd_proxy;
/* An exchange with the filter ended: ok, or the reply for the client. */
typedef void smtpd_proxy_done_fn(struct smtpd_session *s, int ok, const char *reply);
/* 1 when this session's mail goes through a before-queue filter. */
static inline int smtpd_proxy_enabled(const struct smtpd_session *s)
{
    return s->set->proxy_filter && *s->set->proxy_filter && !s->local_submission;
}
/* The MAIL command our checks accepted (the filter gets it later). */
void smtpd_proxy_mail(struct smtpd_session *s, const char *line);
void smtpd_proxy_rcpt(struct smtpd_session *s, const char *line, smtpd_proxy_done_fn *done);
void smtpd_proxy_data(struct smtpd_session *s, smtpd_proxy_done_fn *done);
void smtpd_proxy_content(struct smtpd_session *s, const char *data, size_t n);
/* More content waits for the filter than we buffer: read no more input. */
int smtpd_proxy_congested(const struct smtpd_session *s);
void smtpd_proxy_dot(struct smtpd_session *s, smtpd_proxy_done_fn *done);

/* content.c */
int smtpd_content_edited(const struct smtpd_session *s);
/* Appends header text, turning a stray CR into a space and a bare LF into
 * CRLF: no header we write ever carries a bare CR or LF. */
void smtpd_header_write(struct buf *out, const char *text, size_t len);
/* message_api.c: the end_of_message phase completed (readers and writers
 * go stale; an uncommitted writer is dropped); the transaction ends. */
void smtpd_message_objects_end(struct smtpd_session *s);
void smtpd_message_tx_end(struct smtpd_tx *tx);
/* Appends the replacement body to to. 0, or -1 with errno. */
int smtpd_body_copy(struct smtpd_tx *tx, struct queue_writer *to);
/* Header address rewriting (canonical maps, masquerading) into tx->edits,
 * then done(s, ok): at once, or from the loop when a remote canonical
 * table had to be waited for (the session in SMTPD_WAIT meanwhile, back
 * in SMTPD_CMD for done). ok 0: a table could not answer (logged as
 * Postfix's cleanup does): the message must not be accepted. */
typedef void smtpd_rewrite_done_fn(struct smtpd_session *s, int ok);
void smtpd_content_rewrite_headers(struct smtpd_session *s, smtpd_rewrite_done_fn *done);
int smtpd_content_rewrite(struct smtpd_session *s,
                          struct queue_writer *(*reopen)(struct smtpd_session *, struct queue_writer *),
                          void (*received)(struct smtpd_session *));

#endif
