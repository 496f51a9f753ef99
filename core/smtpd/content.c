/*
 * The edits of a message (modules' header, envelope and body changes,
 * header address rewriting, and what header/body checks decided after the
 * queue file was opened: BCC, REDIRECT, FILTER) and their application.
 *
 * The content itself is written by the content stage (cleanup.c), which
 * parses it once as it streams to the queue file and keeps the primary
 * headers as written (after header_checks) when modules or header
 * rewriting need them.
 *
 * Edits are applied at the end of the message, before the commit, to the
 * same queue file, without copying the message (queue format version 2,
 * doc/queue-format.md): our Received header (as header_checks left it) and
 * the edited header list are appended after the content as received, and
 * the content map says the message is those new headers, then the
 * original from where the kept headers end (or the kept headers' rest, then
 * the replacement body, appended from the file message_api.c wrote it to).
 * A changed envelope is written after the data at commit. Nothing of it is
 * visible before the commit, so a crash leaves an uncommitted file that
 * the recovery scan deletes, or the committed one. The ID the module saw,
 * the one in our Received header and in the 250 reply, and the one the
 * queue manager delivers under are the same (Postfix's cleanup applies
 * milter edits before its commit too, appending header records that its
 * reader follows). A new body alone needs no map: the queue file is cut
 * back after its headers and the body appended.
 *
 * Header address rewriting (canonical maps on From:, To:, ...) runs at the
 * end of the message; with a remote canonical table it waits, header by
 * header, without blocking the worker (smtpd_content_rewrite_headers).
 *
 * Header text is binary-safe: names and values carry their lengths (a value
 * may hold NUL bytes, which Postfix passes through), and nothing that copies
 * or writes content uses strlen. Whatever header text we write goes through
 * smtpd_header_write(), which never lets a bare CR or LF out.
 */
#include "config.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "lib/log.h"
#include "module/module.h"
#include "mail/rewrite.h"
#include "smtpd/content_int.h"
#include "smtpd/smtpd_int.h"
#include "tables/table.h"

/* A copy of n bytes, NUL bytes included, with a terminating NUL for C callers. */
static char *mem_string(petrel_pool *pool, const char *p, size_t n)
{
    char *copy = petrel_pool_alloc(pool, n + 1);
    memcpy(copy, p, n);
    copy[n] = '\0';
    return copy;
}

/* ------------------------------------------------------------------ */
/* address rewriting in headers (Postfix's header_sender/header_recipient) */

static int header_class(const char *name)
{
    static const char *const senders[] = { "From", "Sender", "Reply-To", "Errors-To", "Return-Receipt-To",
                                           "Resent-From", "Resent-Sender", "Resent-Reply-To", NULL };
    static const char *const recipients[] = { "To", "Cc", "Bcc", "Apparently-To", "Resent-To", "Resent-Cc",
                                              "Resent-Bcc", NULL };
    for (int i = 0; senders[i]; i++)
        if (strcasecmp(name, senders[i]) == 0)
            return 1;
    for (int i = 0; recipients[i]; i++)
        if (strcasecmp(name, recipients[i]) == 0)
            return 2;
    return 0;
}

/* A table that could not answer (or has no answer yet): its parameter,
 * and the first address it failed for. */
struct rewrite_failure {
    const char *param, *address;
};

/* Rewrites one address token in place in out; returns 1 when it changed.
 * A token holding a NUL byte is no address: it is copied as it is. A table
 * that cannot answer (or has no answer yet) sets *failed. */
static int rewrite_token(struct smtpd_session *s, struct buf *out, const char *start, const char *end, int recipient,
                         struct rewrite_failure *failed)
{
    size_t len = (size_t)(end - start);
    if (memchr(start, '\0', len)) {
        buf_append(out, start, len);
        return 0;
    }
    char *addr = petrel_pool_strndup(s->tx->pool, start, len);
    const char *fresh = addr;
    if (strchr(addr, '@') && !strpbrk(addr, " \t\"()<>,;")) {
        const char *param = NULL;
        fresh = mail_rewrite_header_address(s->worker->rewrite, addr, recipient, s->tx->pool, &param);
        if (param && failed->param == NULL) {
            failed->param = param;
            failed->address = addr;
        }
    }
    buf_puts(out, fresh);
    return strcmp(fresh, addr) != 0;
}

/* Rewrites every address of one header value of len bytes (comma-separated
 * items, each "Name <addr>" or a bare addr); returns NULL when nothing
 * changed, else the new value and its length in *out_len. Quoted strings
 * and comments are copied as they are; so are NUL bytes. */
static const char *rewrite_value(struct smtpd_session *s, const char *value, size_t len, int recipient,
                                 size_t *out_len, struct rewrite_failure *failed)
{
    struct buf out = BUF_INIT;
    int changed = 0;
    const char *p = value, *end = value + len;
    while (p < end) {
        /* one item: up to a comma outside quotes and angle brackets */
        const char *item = p;
        int quoted = 0, angle = 0;
        const char *lt = NULL, *gt = NULL;
        for (; p < end; p++) {
            if (*p == '\\' && quoted && p + 1 < end) {
                p++;
                continue;
            }
            if (*p == '"')
                quoted = !quoted;
            else if (!quoted && *p == '<' && !angle) {
                angle = 1;
                lt = p;
            } else if (!quoted && *p == '>' && angle) {
                angle = 0;
                gt = p;
            } else if (!quoted && !angle && *p == ',')
                break;
        }
        const char *item_end = p;
        if (lt && gt && gt > lt) {
            buf_append(&out, item, (size_t)(lt + 1 - item));
            changed |= rewrite_token(s, &out, lt + 1, gt, recipient, failed);
            buf_append(&out, gt, (size_t)(item_end - gt));
        } else {
            const char *a = item, *b = item_end;
            while (a < b && (*a == ' ' || *a == '\t' || *a == '\r' || *a == '\n'))
                a++;
            while (b > a && (b[-1] == ' ' || b[-1] == '\t' || b[-1] == '\r' || b[-1] == '\n'))
                b--;
            buf_append(&out, item, (size_t)(a - item));
            if (a < b)
                changed |= rewrite_token(s, &out, a, b, recipient, failed);
            buf_append(&out, b, (size_t)(item_end - b));
        }
        if (p < end && *p == ',') {
            buf_putc(&out, ',');
            p++;
        }
    }
    const char *result = NULL;
    if (changed) {
        *out_len = out.len;
        result = mem_string(s->tx->pool, out.data ? out.data : "", out.len);
    }
    buf_free(&out);
    return result;
}

/* Header address rewriting runs at the end of the message, one header at a
 * time. With a remote canonical table (pgsql:, socketmap:, ...) each
 * header is rewritten inside a lookup scope of its own (tables/table.h): a
 * key with no answer yet throws that header's attempt away, the scope
 * fetches, and the header is rewritten again when the answers are in; the
 * session waits (SMTPD_WAIT), the worker does not. Local tables need no
 * scope: each header is done at once. A table that cannot answer defers
 * the message, as Postfix's cleanup does. */
struct header_rewrite {
    struct smtpd_session *s;
    struct tbl_scope *scope;          /* NULL: every canonical table is local */
    size_t next;                      /* the next header of tx->headers */
    smtpd_rewrite_done_fn *done;
};

/* A header's worth of lookups: its addresses times the keys of each. */
#define HEADER_REWRITE_MAX_ANSWERS 4096

static int maps_remote(const struct mail_maps *m)
{
    for (size_t i = 0; i < m->n; i++)
        if (tbl_is_remote(m->tables[i]))
            return 1;
    return 0;
}

static void header_rewrite_free(void *arg)
{
    struct header_rewrite *hr = arg;
    tbl_scope_free(hr->scope);   /* cancels lookups in flight: header_rewrite_fetched never runs */
    hr->scope = NULL;
}

/* Rewrites headers from hr->next on: 0 done, 1 waiting for a fetch, -1 a
 * table failed (logged). */
static int header_rewrite_run(struct header_rewrite *hr);

static void header_rewrite_fetched(void *arg)
{
    struct header_rewrite *hr = arg;
    struct smtpd_session *s = hr->s;
    int rc = header_rewrite_run(hr);
    if (rc == 1)
        return;
    s->state = SMTPD_CMD;
    hr->done(s, rc == 0);
}

static int header_rewrite_run(struct header_rewrite *hr)
{
    struct smtpd_session *s = hr->s;
    struct smtpd_tx *tx = s->tx;
    struct tbl_registry *reg = s->worker->tables;
    while (hr->next < tx->nheaders) {
        size_t i = hr->next;
        int cls = header_class(tx->headers[i].name);
        if (cls == 0) {
            hr->next++;
            continue;
        }
        size_t fresh_len = 0;
        struct rewrite_failure failed = { NULL, NULL };
        unsigned long pending = tbl_scope_pending_count(hr->scope);
        if (hr->scope)
            tbl_scope_enter(reg, hr->scope);
        const char *fresh = rewrite_value(s, tx->headers[i].value, tx->headers[i].value_len, cls == 2, &fresh_len,
                                          &failed);
        if (hr->scope)
            tbl_scope_leave(reg);
        if (hr->scope && tbl_scope_pending_count(hr->scope) != pending) {
            /* Some answers are not in yet: this header again, once they are. */
            if (tbl_scope_fetch(hr->scope, header_rewrite_fetched, hr))
                return 1;
            continue;
        }
        if (failed.param) {
            msg_warn("%s: %s map lookup problem for %.200s -- message not accepted, try again later",
                     tx->queue_id, failed.param, failed.address);
            return -1;
        }
        tbl_scope_reset(hr->scope);
        hr->next++;
        if (fresh == NULL)
            continue;
        size_t nth = 0;
        for (size_t k = 0; k <= i; k++)
            if (strcasecmp(tx->headers[k].name, tx->headers[i].name) == 0)
                nth++;
        struct smtpd_edit *e = smtpd_edit_append(tx->pool, &tx->edits, EDIT_HEADER_CHANGE);
        e->index = nth;
        e->name = tx->headers[i].name;
        e->value = fresh;
        e->value_len = fresh_len;
    }
    return 0;
}

void smtpd_content_rewrite_headers(struct smtpd_session *s, smtpd_rewrite_done_fn *done)
{
    struct smtpd_tx *tx = s->tx;
    struct mail_rewrite *rw = s->worker->rewrite;
    if (rw == NULL || !mail_rewrite_headers(rw) || (s->set->receive_override & RO_NO_ADDRESS_MAPPINGS)) {
        done(s, 1);
        return;
    }
    struct header_rewrite *hr = petrel_pool_zalloc(tx->pool, sizeof(*hr));
    hr->s = s;
    hr->done = done;
    if (maps_remote(&rw->canonical) || maps_remote(&rw->sender_canonical) || maps_remote(&rw->rcpt_canonical)) {
        hr->scope = tbl_scope_new_sized(HEADER_REWRITE_MAX_ANSWERS);
        petrel_pool_cleanup_add(tx->pool, header_rewrite_free, hr);
    }
    int rc = header_rewrite_run(hr);
    if (rc == 1) {
        s->state = SMTPD_WAIT;
        return;
    }
    done(s, rc == 0);
}

/* ------------------------------------------------------------------ */
/* applying edits                                                      */

int smtpd_content_edited(const struct smtpd_session *s)
{
    const struct smtpd_tx *tx = s->tx;
    return tx->edits.count || tx->edits.sender || tx->edits.body_replaced || tx->envelope_changed;
}

/* An edit's value as the header gets it: kept as given when it starts with
 * white space, else after the customary space. */
static void render_value(petrel_pool *pool, const struct smtpd_edit *e, struct smtpd_header *h)
{
    size_t len = e->value_len;
    if (len && (e->value[0] == ' ' || e->value[0] == '\t')) {
        h->value = e->value;
        h->value_len = len;
        return;
    }
    char *v = petrel_pool_alloc(pool, len + 2);
    v[0] = ' ';
    memcpy(v + 1, e->value, len);
    v[len + 1] = '\0';
    h->value = v;
    h->value_len = len + 1;
}

void smtpd_header_write(struct buf *out, const char *text, size_t len)
{
    for (size_t i = 0; i < len; i++) {
        char c = text[i];
        if (c == '\r') {
            if (i + 1 < len && text[i + 1] == '\n') {
                buf_append(out, "\r\n", 2);
                i++;
            } else {
                buf_putc(out, ' ');   /* a stray CR, as cleanup_replace_stray_cr_lf */
            }
        } else if (c == '\n') {
            buf_append(out, "\r\n", 2);
        } else {
            buf_putc(out, c);
        }
    }
}

/* Only the body changed: the queue file is cut back to the end of its
 * headers and the new body appended, in the same file under the same
 * queue ID (no copy of the rest of the message). */
static int body_only(const struct smtpd_tx *tx)
{
    return tx->edits.body_replaced && tx->edits.count == 0 && tx->edits.sender == NULL && !tx->envelope_changed;
}

static int replace_body_in_place(struct smtpd_tx *tx)
{
    if (queue_writer_truncate(tx->writer, tx->headers_end) != 0 ||
        queue_writer_write(tx->writer, "\r\n", 2) != 0 || smtpd_body_copy(tx, tx->writer) != 0)
        return -1;
    msg_info("%s: edited by modules in place (1 change)", tx->queue_id);
    return 0;
}

int smtpd_content_rewrite(struct smtpd_session *s,
                          struct queue_writer *(*reopen)(struct smtpd_session *, struct queue_writer *),
                          void (*received)(struct smtpd_session *))
{
    struct smtpd_tx *tx = s->tx;
    petrel_pool *pool = tx->pool;
    if (body_only(tx))
        return replace_body_in_place(tx);

    /* The edited header list. */
    size_t cap = tx->nheaders + tx->edits.count + 1;
    struct smtpd_header *hs = petrel_pool_alloc(pool, cap * sizeof(*hs));
    size_t nh = tx->nheaders;
    if (nh)
        memcpy(hs, tx->headers, nh * sizeof(*hs));
    for (struct smtpd_edit *e = tx->edits.first; e; e = e->next) {
        if (e->kind == EDIT_HEADER_INSERT) {
            size_t at = e->index > nh ? nh : e->index;
            memmove(&hs[at + 1], &hs[at], (nh - at) * sizeof(*hs));
            hs[at].name = e->name;
            hs[at].name_len = strlen(e->name);
            render_value(pool, e, &hs[at]);
            nh++;
        } else if (e->kind == EDIT_HEADER_CHANGE) {
            size_t seen = 0;
            for (size_t i = 0; i < nh; i++) {
                if (strcasecmp(hs[i].name, e->name) != 0 || ++seen != e->index)
                    continue;
                if (e->value == NULL) {
                    memmove(&hs[i], &hs[i + 1], (nh - i - 1) * sizeof(*hs));
                    nh--;
                } else {
                    render_value(pool, e, &hs[i]);
                }
                break;
            }
        }
    }
    /* The edited recipient list. */
    size_t rcap = tx->nrcpts + tx->edits.count + 1;
    struct smtpd_rcpt *rs = petrel_pool_zalloc(pool, rcap * sizeof(*rs));
    size_t nr = tx->nrcpts;
    memcpy(rs, tx->rcpts, nr * sizeof(*rs));
    for (struct smtpd_edit *e = tx->edits.first; e; e = e->next) {
        if (e->kind == EDIT_RCPT_ADD) {
            int dup = 0;
            for (size_t i = 0; i < nr && e->notify; i++)
                dup |= rs[i].notify == e->notify && strcasecmp(rs[i].address, e->value) == 0;
            if (dup)
                continue;   /* a BCC action ignores an address it already added (Postfix) */
            rs[nr].address = e->value;
            rs[nr].notify = e->notify;
            rs[nr].orcpt = e->orcpt;
            nr++;
        } else if (e->kind == EDIT_RCPT_DELETE) {
            for (size_t i = 0; i < nr; i++) {
                if (strcasecmp(rs[i].address, e->value) == 0) {
                    memmove(&rs[i], &rs[i + 1], (nr - i - 1) * sizeof(*rs));
                    nr--;
                    break;
                }
            }
        }
    }
    if (nr == 0) {
        msg_warn("%s: modules deleted every recipient: discarding the message", tx->queue_id);
        tx->discard = 1;
        return 0;
    }

    struct queue_writer *w = tx->writer;
    unsigned long long received_size = queue_writer_content_size(w);
    tx->rcpts = rs;
    tx->nrcpts = nr;
    tx->rcpt_cap = rcap;
    if (tx->edits.sender) {
        tx->mail.address = (char *)tx->edits.sender;
        if (tx->edits.sender_ret)
            tx->mail.ret = tx->edits.sender_ret;
        if (tx->edits.sender_envid)
            tx->mail.envid = (char *)tx->edits.sender_envid;
    }
    /* From here on what is written is data that the content map places:
     * [Received and the edited headers][the original from rest_start], or
     * [...][the kept headers' rest][CRLF and the new body]. */
    unsigned long long head_at = queue_writer_edit_begin(w);
    if (reopen(s, w) == NULL)
        return -1;
    received(s);
    struct buf b = BUF_INIT;
    for (size_t i = 0; i < nh; i++) {
        smtpd_header_write(&b, hs[i].name, hs[i].name_len);
        buf_putc(&b, ':');
        smtpd_header_write(&b, hs[i].value, hs[i].value_len);
        buf_append(&b, "\r\n", 2);
    }
    int rc = queue_writer_write(w, b.data ? b.data : "", b.len);
    buf_free(&b);
    struct queue_segment map[3];
    size_t nmap = 0;
    unsigned long long at = queue_writer_data_size(w);
    if (at > head_at)
        map[nmap++] = (struct queue_segment){ head_at, at - head_at };
    unsigned long long rest_end = tx->edits.body_replaced ? tx->headers_end : received_size;
    if (rest_end > tx->rest_start)
        map[nmap++] = (struct queue_segment){ tx->rest_start, rest_end - tx->rest_start };
    if (rc == 0 && tx->edits.body_replaced) {
        rc = queue_writer_write(w, "\r\n", 2);
        if (rc == 0)
            rc = smtpd_body_copy(tx, w);
        unsigned long long end = queue_writer_data_size(w);
        if (rc == 0 && end > at)
            map[nmap++] = (struct queue_segment){ at, end - at };
    }
    if (rc == 0)
        rc = queue_writer_set_content_map(w, map, nmap);
    if (rc != 0)
        return -1;
    /* The changes, and who made them: a BCC of the checks is one of edits.count. */
    unsigned module_edits = tx->edits.count - tx->checks_bcc + (tx->edits.sender ? 1 : 0) +
                            (tx->edits.body_replaced ? 1 : 0);
    unsigned changes = module_edits + tx->checks_bcc + ((tx->filter || tx->redirect) && tx->envelope_changed ? 1 : 0);
    struct buf by = BUF_INIT;
    if (module_edits)
        buf_puts(&by, "modules");
    if (tx->envelope_changed & CHANGED_BY_CHECKS)
        buf_printf(&by, "%sheader/body checks", by.len ? " and " : "");
    if (tx->envelope_changed & CHANGED_BY_ACCESS)
        buf_printf(&by, "%san access map", by.len ? " and " : "");
    msg_info("%s: edited by %s (%u change%s)", tx->queue_id, by.len ? by.data : "modules", changes,
             changes == 1 ? "" : "s");
    buf_free(&by);
    return 0;
}
