/*
 * The content stage: what Postfix's cleanup does to a message while it is
 * received, between the DATA/BDAT reader and the queue file.
 *
 * Every message goes through it once, as it streams: the MIME parser
 * (mail/mime.h) finds the headers of the message, of its body parts and of
 * attached messages, and the body lines; header_checks, mime_header_checks,
 * nested_header_checks and body_checks (mail/hbc.h) are applied to each as
 * it goes by, and what they leave is what is written. Our own Received
 * header is checked first, as Postfix's cleanup checks the one its smtpd
 * wrote. Nothing is buffered beyond one header (header_size_limit) and one
 * line (line_length_limit), so an edit costs no second pass and a message
 * whose every line matches a rule costs no more memory than any other.
 *
 * Where the actions go:
 *   REJECT, hop count, MIME errors, a failing table -> tx->content_verdict
 *                            at the end of the content (Postfix's order);
 *   HOLD, DISCARD          -> tx->hold, tx->discard;
 *   PREPEND, REPLACE, IGNORE, STRIP -> the written content, and the list
 *                            of primary headers kept for modules and
 *                            header rewriting (tx->headers), which their
 *                            edits then start from, as milters' edits
 *                            start from what cleanup wrote;
 *   REJECT, DISCARD, REDIRECT, PASS -> also end the checks and take the
 *                            milters off the message (stop_filters);
 *   FILTER, REDIRECT       -> tx->filter, tx->redirect (envelope);
 *   BCC                    -> a recipient edit (EDIT_RCPT_ADD, NOTIFY=NEVER),
 *                            the edit modules make.
 * The envelope changes are applied at the end by rewriting the queue file
 * (content.c), as modules' are.
 *
 * milter_header_checks (Postfix's cleanup_milter_header_checks) is applied
 * later, to each header a milter's edit would write, when the milter
 * module asks: milter_checks.c, with the subset of actions Postfix allows
 * there.
 *
 * Modules see the message as it came: each primary header before the
 * checks (our Received excepted), then the raw bytes after the headers.
 *
 * When no check is configured (or receive_override_options has
 * no_header_body_checks), only the primary headers are parsed; the rest is
 * written as it arrives.
 *
 * A check in a remote table (pgsql:, socketmap:, ...) never blocks the
 * worker: the event whose lookup must wait, and every later one, are
 * queued in order until the answer comes, and the session reads no further
 * content meanwhile ("Waiting for a remote table" below). Local tables take
 * the direct path: no scope, no queue, no copy.
 */
#include "config.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "lib/buf.h"
#include "lib/log.h"
#include "lib/xalloc.h"
#include "mail/hbc.h"
#include "mail/mime.h"
#include "mail/rewrite.h"
#include "module/module.h"
#include "module/runtime.h"
#include "smtpd/content_int.h"
#include "smtpd/smtpd.h"
#include "smtpd/smtpd_int.h"
#include "tables/table.h"

struct smtpd_cleanup {
    struct smtpd_session *s;
    struct smtpd_cleanup_settings *set;   /* tables are looked up (not const) */
    struct mime_parser *mime;
    int checks;                       /* header/body checks still apply (Postfix's CLEANUP_FLAG_FILTER) */
    int full;                         /* the whole message is parsed (checks are configured) */
    int passthrough;                  /* past the primary headers: bytes go to the file as they come */
    int pass_pending;                 /* passthrough began inside the chunk being fed */
    unsigned long long pass_from;     /* its input offset */
    int modules;                      /* modules are loaded: call their content hooks */
    int storing;                      /* primary headers are kept in tx->headers */
    size_t stored_bytes;
    unsigned long long input_pos;     /* content bytes fed so far */
    long long module_body_from;       /* input offset of the body for modules; -1 before it */
    int hop_count;
    int rejected;                     /* a REJECT decided: reason */
    struct restrict_result reason;
    int hops;                         /* too many Received headers */
    int lookup_error;                 /* a table failed */
    struct buf out;                   /* scratch for one header or line */
    struct buf key;
    /* Remote check tables (see "Waiting for a remote table" below). */
    struct tbl_scope *scope;          /* NULL: every check table is local (no wait, no queue) */
    struct cleanup_event *queue;      /* events that wait for the head's lookup, in order */
    struct cleanup_event **queue_tail;
    int fetching;                     /* the scope's lookups are in flight */
    int input_ended;                  /* mime_parser_end ran */
    void (*then)(struct smtpd_session *);   /* runs when the queue has drained */
};

/* One parser event (or our Received header, or bytes for the modules'
 * body hook) kept until the lookups before it have answered. */
enum cleanup_event_kind { CEV_RECEIVED, CEV_HEADER, CEV_HEADER_END, CEV_BODY, CEV_MODULE_BODY };
struct cleanup_event {
    struct cleanup_event *next;
    enum cleanup_event_kind kind;
    struct mime_header h;             /* CEV_HEADER (h.text points into data) */
    unsigned long long a, b;          /* HEADER_END: end_input, body_input; BODY: offset */
    int flag;                         /* BODY: a continued line; HEADER_END: data holds early body bytes */
    size_t len, len2;                 /* data's length; RECEIVED: the access PREPEND part of it */
    char data[];
};

/* Primary headers kept for modules and header rewriting, at most this much
 * (past it the rest stays in the file, unseen by header edits). */
#define STORED_HEADERS_MAX(c) ((c)->set->limits.header_limit)

/* ------------------------------------------------------------------ */
/* output                                                              */

static void out_bytes(struct smtpd_cleanup *c, const char *p, size_t n)
{
    struct smtpd_tx *tx = c->s->tx;
    if (tx->io_errno || n == 0)
        return;
    if (queue_writer_write(tx->writer, p, n) != 0)
        smtpd_tx_io_error(tx, errno);
}

static unsigned long long out_size(struct smtpd_cleanup *c)
{
    return queue_writer_content_size(c->s->tx->writer);
}

/* One header as the parser gives it ("\n" between its lines), CRLF-ended. */
static void out_header(struct smtpd_cleanup *c, const char *text, size_t len)
{
    buf_reset(&c->out);
    smtpd_header_write(&c->out, text, len);
    buf_append(&c->out, "\r\n", 2);
    out_bytes(c, c->out.data, c->out.len);
}

/* Keeps a primary header (as written) for modules and header rewriting. */
static void store_header(struct smtpd_cleanup *c, const char *text, size_t len)
{
    struct smtpd_tx *tx = c->s->tx;
    if (!c->storing)
        return;
    if (c->stored_bytes + len > STORED_HEADERS_MAX(c)) {
        c->storing = 0;
        return;
    }
    const char *colon = memchr(text, ':', len);
    if (colon == NULL)
        return;
    c->stored_bytes += len;
    if (tx->nheaders == tx->header_cap) {
        size_t cap = tx->header_cap ? tx->header_cap * 2 : 16;
        struct smtpd_header *grown = petrel_pool_alloc(tx->pool, cap * sizeof(*grown));
        if (tx->nheaders)
            memcpy(grown, tx->headers, tx->nheaders * sizeof(*grown));
        tx->headers = grown;
        tx->header_cap = cap;
    }
    struct smtpd_header *h = &tx->headers[tx->nheaders++];
    h->name_len = (size_t)(colon - text);
    char *name = petrel_pool_alloc(tx->pool, h->name_len + 1);
    memcpy(name, text, h->name_len);
    name[h->name_len] = '\0';
    h->name = name;
    /* The value as written: "\n" between lines becomes CRLF. */
    struct buf v = BUF_INIT;
    smtpd_header_write(&v, colon + 1, len - (size_t)(colon + 1 - text));
    char *value = petrel_pool_alloc(tx->pool, v.len + 1);
    if (v.len)
        memcpy(value, v.data, v.len);
    value[v.len] = '\0';
    h->value = value;
    h->value_len = v.len;
    buf_free(&v);
    tx->rest_start = out_size(c);
}

/* ------------------------------------------------------------------ */
/* actions (header_checks(5))                                          */

static void act_log(struct smtpd_cleanup *c, const char *action, const char *where, const char *content,
                    const char *text)
{
    smtpd_checks_log(c->s, "", action, where, content, text);
}

enum act_result { ACT_KEEP, ACT_DROP, ACT_REPLACE, ACT_WAIT };

/* REJECT, DISCARD, REDIRECT, PASS: as Postfix's cleanup_act clears
 * CLEANUP_FLAG_FILTER_ALL, no later line is checked and no milter gets
 * the content (petrel_milters_stopped). */
static void stop_filters(struct smtpd_cleanup *c)
{
    c->checks = 0;
    c->s->tx->milters_stopped = 1;
}

/* Does what value (a table's result for line) says. where is "header" or
 * "body"; param names the table list. A REPLACE's text goes to
 * *replacement, a PREPEND's to *prepend. */
static enum act_result act(struct smtpd_cleanup *c, const char *where, const char *param, const char *line,
                           const char *value, const char **replacement, const char **prepend)
{
    struct smtpd_session *s = c->s;
    struct smtpd_tx *tx = s->tx;
    struct hbc_action a;
    hbc_parse_action(value, &a);
    int header = strcmp(where, "header") == 0;
    switch (a.command) {
    case HBC_REJECT:
        c->rejected = 1;
        stop_filters(c);
        /* param: header_checks, mime_header_checks, nested_header_checks, body_checks */
        act_log(c, "reject", where, line, smtpd_checks_reject(tx->pool, a.text, param, &c->reason));
        return ACT_KEEP;
    case HBC_WARN:
    case HBC_INFO:
    case HBC_HOLD:
    case HBC_FILTER:
    case HBC_BCC:
        smtpd_checks_tx_action(s, &a, "", where, line, param);
        return ACT_KEEP;
    case HBC_DISCARD:
    case HBC_REDIRECT:
        /* Taken (checks_actions.c), they end the checks and the milters
         * (Postfix's cleanup_act clears CLEANUP_FLAG_FILTER_ALL);
         * milter_header_checks' end only those checks, on purpose. */
        if (smtpd_checks_tx_action(s, &a, "", where, line, param))
            stop_filters(c);
        return ACT_KEEP;
    case HBC_PASS:
        act_log(c, "pass", where, line, a.text);
        stop_filters(c);
        return ACT_KEEP;
    case HBC_PREPEND:
        if (*a.text == '\0') {
            msg_warn("PREPEND action without text in %s map", param);
        } else if (header && mime_header_name_len(a.text, strlen(a.text)) == 0) {
            msg_warn("bad PREPEND header text \"%s\" in %s map -- need \"headername: headervalue\"", a.text,
                     param);
        } else {
            act_log(c, "prepend", where, line, a.text);
            *prepend = a.text;
        }
        return ACT_KEEP;
    case HBC_REPLACE:
        if (*a.text == '\0') {
            msg_warn("REPLACE action without text in %s map", param);
            return ACT_KEEP;
        }
        if (header && mime_header_name_len(a.text, strlen(a.text)) == 0) {
            msg_warn("bad REPLACE header text \"%s\" in %s map -- need \"headername: headervalue\"", a.text,
                     param);
            return ACT_KEEP;
        }
        act_log(c, "replace", where, line, a.text);
        *replacement = a.text;
        return ACT_REPLACE;
    case HBC_STRIP:
        act_log(c, "strip", where, line, a.text);
        return ACT_DROP;
    case HBC_IGNORE:
        return ACT_DROP;
    case HBC_DUNNO:
        return ACT_KEEP;
    case HBC_UNKNOWN:
        break;
    }
    msg_warn("unknown command in %s map: %.*s", param, (int)a.word_len, a.word);
    return ACT_KEEP;
}

/* Looks line up in list and acts on the result. ACT_WAIT: a remote table
 * has no answer yet and nothing was done (the caller queues its event). */
static enum act_result check(struct smtpd_cleanup *c, enum hbc_list list, const char *where, const char *line,
                             const char **replacement, const char **prepend)
{
    struct smtpd_tx *tx = c->s->tx;
    const char *value = NULL;
    int rc;
    if (c->scope) {
        struct tbl_registry *reg = c->s->worker->tables;
        tbl_scope_enter(reg, c->scope);
        rc = hbc_lookup(&c->set->checks, list, line, tx->pool, &value);
        tbl_scope_leave(reg);
        if (rc == -2)
            return ACT_WAIT;
    } else {
        rc = hbc_lookup(&c->set->checks, list, line, tx->pool, &value);
    }
    if (rc == 1)
        return act(c, where, smtpd_cleanup_check_params[list], line, value, replacement, prepend);
    if (rc < 0 && !c->lookup_error) {
        msg_warn("%s: %s map lookup problem -- message not accepted, try again later", tx->queue_id,
                 smtpd_cleanup_check_params[list]);
        c->lookup_error = 1;
        /* Postfix's cleanup processes nothing more after this error (the
         * message is deferred): no further lookup waits for a failing
         * server. */
        c->checks = 0;
    }
    return ACT_KEEP;
}

/* ------------------------------------------------------------------ */
/* parser callbacks                                                    */

static int is_received(const char *text, size_t name_len)
{
    return name_len == 8 && strncasecmp(text, "Received", 8) == 0;
}

/* The modules' header hook: the header as it came, name and value apart. */
static void module_header(struct smtpd_cleanup *c, const struct mime_header *h)
{
    struct buf name = BUF_INIT, value = BUF_INIT;
    buf_append(&name, h->text, h->name_len);
    const char *v = h->text + h->name_len + 1;
    size_t vlen = h->len - h->name_len - 1;
    if (vlen > 0 && *v == ' ') {
        v++;
        vlen--;
    }
    smtpd_header_write(&value, v, vlen);
    smtpd_plugin_header(c->s, name.data, value.data ? value.data : "");
    buf_free(&name);
    buf_free(&value);
}

/* One header; 1 when its lookup must wait (nothing done yet). */
static int header_event(struct smtpd_cleanup *c, const struct mime_header *h)
{
    struct smtpd_tx *tx = c->s->tx;
    const char *replacement = NULL, *prepend = NULL;
    enum act_result r = ACT_KEEP;
    enum hbc_list list = hbc_header_list(h->cls, h->is_mime);
    if (c->checks && hbc_has(&c->set->checks, list)) {
        r = check(c, list, "header", h->text, &replacement, &prepend);
        if (r == ACT_WAIT)
            return 1;
    }
    int primary = h->cls == MIME_PRIMARY;
    if (is_received(h->text, h->name_len)) {
        /* Postfix counts Received headers anywhere, but judges at primary ones. */
        c->hop_count++;
        if (primary && c->hop_count >= c->set->hopcount_limit && !c->hops) {
            msg_warn("%s: message rejected: hopcount exceeded", tx->queue_id);
            c->hops = 1;
        }
    }
    if (primary && c->modules)
        module_header(c, h);
    if (prepend) {
        out_header(c, prepend, strlen(prepend));
        if (primary)
            store_header(c, prepend, strlen(prepend));
    }
    if (r == ACT_DROP)
        return 0;
    const char *text = r == ACT_REPLACE ? replacement : h->text;
    size_t len = r == ACT_REPLACE ? strlen(replacement) : h->len;
    out_header(c, text, len);
    if (primary)
        store_header(c, text, len);
    return 0;
}

static struct cleanup_event *event_new(struct smtpd_cleanup *c, enum cleanup_event_kind kind, const char *data,
                                       size_t len);

static void on_header(void *ctx, const struct mime_header *h)
{
    struct smtpd_cleanup *c = ctx;
    if (c->passthrough)
        return;   /* the rest of the chunk the headers ended in is written as it came */
    if (c->queue == NULL && header_event(c, h) == 0)
        return;
    struct cleanup_event *e = event_new(c, CEV_HEADER, h->text, h->len);
    e->h = *h;
    e->h.text = e->data;
}

/* The end of the primary headers, in output order: where they end in the
 * file, and the modules' end-of-headers hook (with the first body bytes
 * when the body began in an earlier chunk). */
static void header_end_event(struct smtpd_cleanup *c, unsigned long long end_input, unsigned long long body_input,
                             const char *early, size_t early_len, int has_early)
{
    struct smtpd_tx *tx = c->s->tx;
    tx->headers_end = out_size(c);
    tx->body_start = tx->headers_end + (body_input - end_input);
    if (c->storing)
        tx->rest_start = tx->headers_end;
    if (c->modules)
        smtpd_plugin_content(c->s, CONTENT_EOH, NULL, NULL, 0);
    if (has_early)
        smtpd_plugin_body(c->s, early, early_len);
}

static void on_header_end(void *ctx, unsigned long long end_input, unsigned long long body_input, int separator)
{
    struct smtpd_cleanup *c = ctx;
    (void)separator;
    /* The line that ended the headers may have begun in an earlier chunk
     * (a client's CR and LF in two TCP segments, a long line): the part
     * fed before this chunk is gone from the input, but the parser still
     * holds it: the first bytes of its current line (the line starts at
     * end_input). c->input_pos is where the chunk being fed starts. */
    size_t held;
    const char *line = mime_parser_current_line(c->mime, &held);
    unsigned long long chunk_start = c->input_pos;
    const char *early = NULL;
    size_t early_len = 0;
    unsigned long long module_from = body_input;
    if (c->modules && body_input < chunk_start) {
        /* a body that starts without an empty line: its first line */
        size_t earlier = (size_t)(chunk_start - body_input);
        early = line;
        early_len = earlier < held ? earlier : held;
        module_from = chunk_start;
    }
    if (c->queue == NULL) {
        header_end_event(c, end_input, body_input, early, early_len, early != NULL);
    } else {
        struct cleanup_event *e = event_new(c, CEV_HEADER_END, early, early_len);
        e->a = end_input;
        e->b = body_input;
        e->flag = early != NULL;
    }
    c->module_body_from = (long long)module_from;
    if (!c->full) {
        /* Nothing looks at the rest: it goes to the file as it comes (no
         * check is configured, so no event ever waits here). */
        c->passthrough = 1;
        if (end_input < chunk_start) {
            size_t earlier = (size_t)(chunk_start - end_input);
            out_bytes(c, line, earlier < held ? earlier : held);
            end_input = chunk_start;
        }
        c->pass_pending = 1;
        c->pass_from = end_input;
    }
}

/* One body line (or piece); 1 when its lookup must wait (nothing done yet). */
static int body_event(struct smtpd_cleanup *c, const char *text, size_t len, int cont, unsigned long long offset)
{
    const char *replacement = NULL, *prepend = NULL;
    enum act_result r = ACT_KEEP;
    if (c->checks && hbc_has(&c->set->checks, HBC_BODY) &&
        (c->set->body_check_len == 0 || offset < (unsigned long long)c->set->body_check_len)) {
        buf_reset(&c->key);
        buf_append(&c->key, text, len);
        r = check(c, HBC_BODY, "body", c->key.data, &replacement, &prepend);
        if (r == ACT_WAIT)
            return 1;
    }
    if (prepend) {
        out_bytes(c, prepend, strlen(prepend));
        out_bytes(c, "\r\n", 2);
    }
    if (r == ACT_DROP)
        return 0;
    if (r == ACT_REPLACE) {
        text = replacement;
        len = strlen(replacement);
    }
    out_bytes(c, text, len);
    if (!cont)
        out_bytes(c, "\r\n", 2);
    return 0;
}

static void on_body(void *ctx, const char *text, size_t len, int cont, unsigned long long offset,
                    unsigned long long input_start)
{
    struct smtpd_cleanup *c = ctx;
    (void)input_start;
    if (c->passthrough)
        return;
    if (c->queue == NULL && body_event(c, text, len, cont, offset) == 0)
        return;
    struct cleanup_event *e = event_new(c, CEV_BODY, text, len);
    e->flag = cont;
    e->a = offset;
}

static void on_error(void *ctx, unsigned err, const char *text, size_t len)
{
    struct smtpd_cleanup *c = ctx;
    struct smtpd_session *s = c->s;
    struct smtpd_tx *tx = s->tx;
    if (err == MIME_ERR_TRUNC_HEADER || err == MIME_ERR_NON_EMPTY_EOH)
        return;
    msg_info("%s: reject: mime-error %s: %.*s from %s; from=<%s> to=<%s>", tx->queue_id, mime_error_text(err, NULL),
             len < 100 ? (int)len : 100, text, s->local_submission ? "local" : s->namaddr, tx->mail.address,
             tx->nrcpts ? tx->rcpts[0].address : "unknown");
}

/* ------------------------------------------------------------------ */
/* the stage                                                           */

/* ------------------------------------------------------------------ */
/* Waiting for a remote table                                          */

/* When a check table is remote (pgsql:, socketmap:, ...), each lookup runs
 * in the stage's own lookup scope (tables/table.h): a key whose answer is
 * not in yet makes the event (a header, a body line, our Received header)
 * wait, undone. That event and every later one (headers, the end of the
 * headers, body lines, bytes for the modules' body hook) are copied into
 * a queue, in order; the scope fetches, and when the answers come the
 * queue is run again from its head. Meanwhile smtpd_cleanup_waiting()
 * tells the DATA and BDAT readers to stop taking input: what the client
 * sent stays in the session's input buffer, which stops growing at its
 * watermark (TCP back-pressure), and the worker's other sessions go on.
 * The queue holds at most what one chunk of input produced. The end of
 * the content (smtpd_cleanup_then) waits for the queue too. With local
 * tables only there is no scope, no queue and no copy: each event is done
 * as the parser gives it. */

static struct cleanup_event *event_new(struct smtpd_cleanup *c, enum cleanup_event_kind kind, const char *data,
                                       size_t len)
{
    struct cleanup_event *e = xmalloc(sizeof(*e) + len + 1);
    memset(e, 0, sizeof(*e));
    e->kind = kind;
    e->len = len;
    if (len && data)
        memcpy(e->data, data, len);
    e->data[len] = '\0';
    *c->queue_tail = e;
    c->queue_tail = &e->next;
    return e;
}

static int received_event(struct smtpd_cleanup *c, const char *access_prepend, size_t prepend_len,
                          const char *received, size_t len);

/* Does one queued event; 1 when it waits again. */
static int event_run(struct smtpd_cleanup *c, struct cleanup_event *e)
{
    switch (e->kind) {
    case CEV_RECEIVED:
        return received_event(c, e->data, e->len2, e->data + e->len2, e->len - e->len2);
    case CEV_HEADER:
        return header_event(c, &e->h);
    case CEV_HEADER_END:
        header_end_event(c, e->a, e->b, e->data, e->len, e->flag);
        return 0;
    case CEV_BODY:
        return body_event(c, e->data, e->len, e->flag, e->a);
    case CEV_MODULE_BODY:
        smtpd_plugin_body(c->s, e->data, e->len);
        return 0;
    }
    return 0;
}

static void cleanup_fetched(void *arg);

/* Runs the queue from its head until it is empty (0) or an event waits
 * for lookups now in flight (1). */
static int cleanup_drain(struct smtpd_cleanup *c)
{
    while (c->queue) {
        struct cleanup_event *e = c->queue;
        if (event_run(c, e)) {
            if (tbl_scope_fetch(c->scope, cleanup_fetched, c)) {
                c->fetching = 1;
                return 1;
            }
            continue;   /* answered at once: run it again */
        }
        c->queue = e->next;
        if (c->queue == NULL)
            c->queue_tail = &c->queue;
        free(e);
        /* Each event's answers are its own: the memo stays small whatever
         * the number of headers and lines. */
        tbl_scope_reset(c->scope);
    }
    return 0;
}

/* The scope's lookups answered (from the loop). */
static void cleanup_fetched(void *arg)
{
    struct smtpd_cleanup *c = arg;
    c->fetching = 0;
    if (cleanup_drain(c))
        return;
    void (*then)(struct smtpd_session *) = c->then;
    c->then = NULL;
    if (then)
        then(c->s);   /* the reader's continuation (data.c): may free the transaction and c */
}

int smtpd_cleanup_waiting(const struct smtpd_session *s)
{
    const struct smtpd_cleanup *c = s->tx ? s->tx->cleanup : NULL;
    return c != NULL && c->queue != NULL;
}

int smtpd_cleanup_then(struct smtpd_session *s, void (*then)(struct smtpd_session *))
{
    struct smtpd_cleanup *c = s->tx ? s->tx->cleanup : NULL;
    if (c == NULL || c->queue == NULL)
        return 0;
    if (!c->fetching && cleanup_drain(c) == 0)
        return 0;
    c->then = then;
    return 1;
}

/* ------------------------------------------------------------------ */
/* the stage                                                           */

static void cleanup_free(void *arg)
{
    struct smtpd_cleanup *c = arg;
    tbl_scope_free(c->scope);   /* cancels lookups in flight: cleanup_fetched never runs */
    while (c->queue) {
        struct cleanup_event *e = c->queue;
        c->queue = e->next;
        free(e);
    }
    mime_parser_free(c->mime);
    buf_free(&c->out);
    buf_free(&c->key);
}

/* Our Received header, checked as Postfix's cleanup checks the one smtpd
 * wrote: the first primary header, in header_checks' form (no CR). 1 when
 * its lookup must wait (nothing written yet). */
static int received_event(struct smtpd_cleanup *c, const char *access_prepend, size_t prepend_len,
                          const char *received, size_t len)
{
    struct smtpd_tx *tx = c->s->tx;
    const char *replacement = NULL, *prepend = NULL;
    enum act_result r = ACT_KEEP;
    if (c->checks && hbc_has(&c->set->checks, HBC_HEADER)) {
        buf_reset(&c->key);
        for (size_t i = 0; i < len; i++)
            if (received[i] != '\r')
                buf_putc(&c->key, received[i]);
        while (c->key.len > 0 && c->key.data[c->key.len - 1] == '\n')
            c->key.data[--c->key.len] = '\0';
        r = check(c, HBC_HEADER, "header", c->key.data, &replacement, &prepend);
        if (r == ACT_WAIT)
            return 1;
    }
    tx->received_action = RECEIVED_KEEP;
    /* Access tables' and policy servers' PREPEND headers go first; the
     * checks do not see them (doc/content-inspection.md). */
    if (prepend_len)
        out_bytes(c, access_prepend, prepend_len);
    if (prepend) {
        tx->received_prepend = prepend;
        out_header(c, prepend, strlen(prepend));
    }
    if (r == ACT_DROP) {
        tx->received_action = RECEIVED_DROP;
    } else if (r == ACT_REPLACE) {
        tx->received_action = RECEIVED_REPLACE;
        tx->received_replacement = replacement;
        out_header(c, replacement, strlen(replacement));
    }
    if (tx->received_action == RECEIVED_KEEP)
        out_bytes(c, received, len);
    tx->content_start = tx->rest_start = tx->headers_end = tx->body_start = out_size(c);
    return 0;
}

void smtpd_cleanup_begin(struct smtpd_session *s, const struct buf *prepend, const char *received, size_t len)
{
    struct smtpd_tx *tx = s->tx;
    const struct smtpd_settings *set = s->set;
    struct smtpd_cleanup *c = petrel_pool_zalloc(tx->pool, sizeof(*c));
    c->s = s;
    c->set = set->cleanup;
    c->checks = !(set->receive_override & RO_NO_HEADER_BODY);
    c->modules = s->worker->modules && s->worker->modules->n > 0;
    c->storing = c->modules || (s->worker->rewrite && mail_rewrite_headers(s->worker->rewrite) &&
                                !(set->receive_override & RO_NO_ADDRESS_MAPPINGS));
    c->module_body_from = -1;
    c->queue_tail = &c->queue;
    if (c->checks && c->set->checks_remote)
        c->scope = tbl_scope_new();
    unsigned options = c->set->mime_options;
    if (!c->checks)
        options &= MIME_OPT_DISABLE_MIME;   /* no_header_body_checks: no strict MIME reports either */
    c->full = c->checks && (hbc_any(&c->set->checks) || (options & ~MIME_OPT_DISABLE_MIME));
    static const struct mime_callbacks callbacks = {
        .header = on_header, .header_end = on_header_end, .body = on_body, .error = on_error,
    };
    c->mime = mime_parser_new(&c->set->limits, options, &callbacks, c);
    petrel_pool_cleanup_add(tx->pool, cleanup_free, c);
    tx->cleanup = c;
    if (tx->discard)
        tx->milters_stopped = 1;   /* discarded before its content: no milter sees it (Postfix) */
    c->hop_count = 1;
    tx->received_action = RECEIVED_KEEP;
    size_t prepend_len = prepend ? prepend->len : 0;
    if (received_event(c, prepend_len ? prepend->data : "", prepend_len, received, len) == 0)
        return;
    /* Our Received header waits for a remote table: so does the content. */
    struct cleanup_event *e = event_new(c, CEV_RECEIVED, NULL, prepend_len + len);
    if (prepend_len)
        memcpy(e->data, prepend->data, prepend_len);
    memcpy(e->data + prepend_len, received, len);
    e->len2 = prepend_len;
    cleanup_drain(c);
}

void smtpd_cleanup_feed(struct smtpd_session *s, const char *data, size_t n)
{
    struct smtpd_cleanup *c = s->tx->cleanup;
    if (c == NULL || n == 0)
        return;
    unsigned long long chunk_start = c->input_pos;
    if (c->passthrough && !c->pass_pending) {
        out_bytes(c, data, n);
    } else {
        mime_parser_feed(c->mime, data, n);
        if (c->pass_pending) {
            c->pass_pending = 0;
            size_t from = (size_t)(c->pass_from - chunk_start);
            out_bytes(c, data + from, n - from);
        }
    }
    c->input_pos += n;
    if (c->modules && c->module_body_from >= 0) {
        unsigned long long from = (unsigned long long)c->module_body_from;
        if (from < chunk_start)
            from = chunk_start;
        if (from < c->input_pos) {
            const char *p = data + (from - chunk_start);
            size_t len = (size_t)(c->input_pos - from);
            if (c->queue == NULL)
                smtpd_plugin_body(s, p, len);
            else
                event_new(c, CEV_MODULE_BODY, p, len);
        }
    }
    if (c->queue && !c->fetching)
        cleanup_drain(c);
}

void smtpd_cleanup_input_end(struct smtpd_session *s)
{
    struct smtpd_cleanup *c = s->tx ? s->tx->cleanup : NULL;
    if (c == NULL || c->input_ended)
        return;
    c->input_ended = 1;
    if (!c->passthrough)
        mime_parser_end(c->mime);   /* the last header or line: it may wait too */
}

void smtpd_cleanup_end(struct smtpd_session *s)
{
    struct smtpd_tx *tx = s->tx;
    struct smtpd_cleanup *c = tx->cleanup;
    if (c == NULL)
        return;
    smtpd_cleanup_input_end(s);
    unsigned errs = mime_parser_errors(c->mime) & ~(MIME_ERR_TRUNC_HEADER | MIME_ERR_NON_EMPTY_EOH);
    struct restrict_result v = { .verdict = RV_DUNNO };
    /* Postfix's order: a 4xx REJECT, too many hops, a REJECT or MIME
     * error, a failed table. */
    if (c->rejected && c->reason.verdict == RV_DEFER) {
        v = c->reason;
    } else if (c->hops) {
        v = (struct restrict_result){ .verdict = RV_REJECT, .code = 554, .enhanced = "5.4.0",
                                      .text = "Error: too many hops", .restriction = "hopcount_limit" };
    } else if (c->rejected) {
        v = c->reason;
    } else if (errs) {
        const char *dsn = NULL;
        const char *text = mime_error_text(errs, &dsn);
        v = (struct restrict_result){ .verdict = RV_REJECT, .code = 550, .enhanced = dsn, .text = text,
                                      .restriction = "mime_error" };
    } else if (c->lookup_error) {
        v = (struct restrict_result){ .verdict = RV_DEFER, .code = 451, .enhanced = "4.3.0",
                                      .text = "Error: queue file write error", .restriction = "table_error" };
    }
    if (v.verdict != RV_DUNNO && !smtpd_refused(&tx->content_verdict)) {
        tx->content_verdict = v;
        tx->verdict_logged = 1;
    }
}
