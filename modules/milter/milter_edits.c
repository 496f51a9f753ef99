/*
 * modules/milter: the milters' modifications. The module keeps its own copy
 * of the message's headers (loaded at end of message, changed with each
 * edit) so that the next milter sees the headers as the previous ones left
 * them, as in Postfix; each edit is applied through the petrel_* edit
 * functions (a REPLBODY streams into petrel_body_replace_*) as it comes,
 * unless the core's milter_header_checks must wait for a remote table
 * about a header: that edit and the ones after it are then held, in
 * order, until the answer comes, and the milter's answer to the event is
 * taken (the next milter asked) only when none is left. Moved out of
 * milter_module.c, whose opening comment describes the design.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <petrel/plugin.h>

#include "milter_conn.h"
#include "milter_module_int.h"

/* ------------------------------------------------------------------ */
/* the module's copy of the headers                                    */

static int headers_add(session *ss, size_t at, const char *name, const char *value)
{
    if (ss->nheaders == ss->cap_headers) {
        size_t cap = ss->cap_headers ? ss->cap_headers * 2 : 32;
        header *bigger = realloc(ss->headers, cap * sizeof *bigger);
        if (bigger == NULL)
            return -1;
        ss->headers = bigger;
        ss->cap_headers = cap;
    }
    char *n = strdup(name), *v = strdup(value);
    if (n == NULL || v == NULL) {
        free(n);
        free(v);
        return -1;
    }
    if (at > ss->nheaders)
        at = ss->nheaders;
    memmove(ss->headers + at + 1, ss->headers + at, (ss->nheaders - at) * sizeof *ss->headers);
    ss->headers[at].name = n;
    ss->headers[at].value = v;
    ss->nheaders++;
    return 0;
}

void milter_headers_clear(session *ss)
{
    for (size_t i = 0; i < ss->nheaders; i++) {
        free(ss->headers[i].name);
        free(ss->headers[i].value);
    }
    ss->nheaders = 0;
}

/* The index of the nth (1-based) header called name, or (size_t)-1. */
static size_t headers_find(const session *ss, const char *name, size_t nth)
{
    for (size_t i = 0; i < ss->nheaders; i++)
        if (strcasecmp(ss->headers[i].name, name) == 0 && --nth == 0)
            return i;
    return (size_t)-1;
}

int milter_headers_load(session *ss)
{
    milter_headers_clear(ss);
    const char *name, *value;
    for (size_t i = 0; petrel_header_at(ss->s, i, &name, &value) == 0; i++) {
        /* The hook's value lacks the one space after the colon. */
        size_t len = strlen(value) + 2;
        char *v = malloc(len);
        if (v == NULL)
            return -1;
        snprintf(v, len, " %s", value);
        int rc = headers_add(ss, ss->nheaders, name, v);
        free(v);
        if (rc < 0)
            return -1;
    }
    return 0;
}

/* ------------------------------------------------------------------ */
/* modifications                                                       */

int milter_apply_quarantine(session *ss, const char *reason)
{
    if (ss->tx_quarantined)
        return 0;
    ss->tx_quarantined = 1;
    petrel_log(ss->s, PETREL_LOG_INFO, "milter-hold: %s", reason);
    return petrel_quarantine(ss->s, reason);
}

/* ------------------------------------------------------------------ */
/* milter_header_checks, and the edits held while its answer is awaited */

/* An edit kept, a copy, until the answer about an earlier header is in. */
typedef struct held_edit {
    struct held_edit *next;
    milter_edit e;       /* its strings point into text */
    char text[];
} held_edit;

enum { EDIT_WAITING = 2 };   /* edit_step: the header checks' answer is awaited */

static void checks_answered(void *arg, int result, const char *new_name, const char *new_value);

static held_edit *hold(session *ss, const milter_edit *e)
{
    const char *strs[5] = { e->name, e->value, e->address, e->args, e->reason };
    size_t len = 0;
    for (size_t i = 0; i < 5; i++)
        len += strs[i] ? strlen(strs[i]) + 1 : 0;
    held_edit *h = malloc(sizeof(*h) + len);
    if (h == NULL)
        return NULL;
    h->next = NULL;
    h->e = *e;
    h->e.data = NULL;   /* body chunks are never held (milter_op_edit) */
    h->e.len = 0;
    const char **dst[5] = { &h->e.name, &h->e.value, &h->e.address, &h->e.args, &h->e.reason };
    char *p = h->text;
    for (size_t i = 0; i < 5; i++) {
        if (strs[i] == NULL)
            continue;
        size_t n = strlen(strs[i]) + 1;
        memcpy(p, strs[i], n);
        *dst[i] = p;
        p += n;
    }
    if (ss->held == NULL)
        ss->held_tail = &ss->held;
    *ss->held_tail = h;
    ss->held_tail = &h->next;
    return h;
}

static void held_pop(session *ss)
{
    held_edit *h = ss->held;
    ss->held = h->next;
    if (ss->held == NULL)
        ss->held_tail = &ss->held;
    free(h);
}

void milter_edits_reset(session *ss)
{
    while (ss->held)
        held_pop(ss);
    ss->held_tail = &ss->held;
    ss->checks_waiting = 0;
    ss->held_failed = 0;
    if (ss->held_done) {
        /* The transaction ended while the answer was awaited: the milter
         * had answered the event; the core's answer to it is what
         * stands. */
        ss->held_done = NULL;
        ss->waiting = 0;
    }
}

int milter_edits_holding(const session *ss)
{
    return ss->held != NULL;
}

/* Writes a header edit the checks allowed (name, value perhaps replaced). */
static int header_write(session *ss, const milter_edit *e, const char *name, const char *value)
{
    petrel_session *s = ss->s;
    size_t i;
    switch (e->type) {
    case MILTER_EDIT_ADD_HEADER:
        if (petrel_header_add(s, name, value) < 0)
            return -1;
        return headers_add(ss, ss->nheaders, name, value);
    case MILTER_EDIT_INSERT_HEADER:
        if (petrel_header_insert(s, e->index, name, value) < 0)
            return -1;
        return headers_add(ss, e->index, name, value);
    default:   /* MILTER_EDIT_CHANGE_HEADER */
        break;
    }
    i = headers_find(ss, e->name, e->index);
    if (i == (size_t)-1) {
        /* Sendmail and Postfix add a header that is not there. */
        if (petrel_header_add(s, name, value) < 0)
            return -1;
        return headers_add(ss, ss->nheaders, name, value);
    }
    if (strcasecmp(name, e->name) != 0) {
        /* REPLACE gave the header another name: the old one goes, the
         * new one takes its place. */
        if (petrel_header_change(s, e->name, e->index, NULL) < 0 || petrel_header_insert(s, i, name, value) < 0)
            return -1;
        free(ss->headers[i].name);
        free(ss->headers[i].value);
        memmove(ss->headers + i, ss->headers + i + 1, (ss->nheaders - i - 1) * sizeof *ss->headers);
        ss->nheaders--;
        return headers_add(ss, i, name, value);
    }
    if (petrel_header_change(s, e->name, e->index, value) < 0)
        return -1;
    char *v = strdup(value);
    if (v == NULL)
        return -1;
    free(ss->headers[i].value);
    ss->headers[i].value = v;
    return 0;
}

/* A header edit once milter_header_checks (the core's) has answered.
 * After a REJECT or DISCARD (STOP) no edit of the message is made any
 * more, as Postfix's libmilter code stops applying them. */
static int header_checked(session *ss, const milter_edit *e, int result, const char *new_name,
                          const char *new_value)
{
    switch (result) {
    case PETREL_HEADER_KEEP:
        return header_write(ss, e, e->name, e->value);
    case PETREL_HEADER_REPLACED:
        return header_write(ss, e, new_name, new_value);
    case PETREL_HEADER_DROP:
        return 0;
    case PETREL_HEADER_STOP:
        ss->tx_edits_stopped = 1;
        return 0;
    default:
        return -1;
    }
}

static int edit_apply(session *ss, const milter_edit *e);

/* Makes edit e now, or asks about its header: 0 done, -1 an error,
 * EDIT_WAITING when checks_answered will finish it. */
static int edit_step(session *ss, const milter_edit *e)
{
    if (ss->tx_edits_stopped && e->type != MILTER_EDIT_QUARANTINE)
        return 0;
    if (e->type != MILTER_EDIT_ADD_HEADER && e->type != MILTER_EDIT_INSERT_HEADER &&
        e->type != MILTER_EDIT_CHANGE_HEADER)
        return edit_apply(ss, e);
    const char *new_name = NULL, *new_value = NULL;
    int rc = petrel_milter_header_checks_async(ss->s, e->name, e->value, &new_name, &new_value, checks_answered, ss);
    if (rc == PETREL_HEADER_WAIT) {
        ss->checks_waiting = 1;
        return EDIT_WAITING;
    }
    return header_checked(ss, e, rc, new_name, new_value);
}

/* Makes the held edits, in order, until one waits again or none is left;
 * then the milter's answer to the event, if it came meanwhile, is taken. */
static void held_drain(session *ss)
{
    while (ss->held && !ss->checks_waiting) {
        if (!ss->held_failed) {
            int rc = edit_step(ss, &ss->held->e);
            if (rc == EDIT_WAITING)
                return;
            if (rc < 0)
                ss->held_failed = 1;   /* the rest is not made, as milter_conn stops delivering */
        }
        held_pop(ss);
    }
    if (ss->held == NULL && ss->held_done) {
        link *l = ss->held_done;
        ss->held_done = NULL;
        milter_event_done(l);
    }
}

/* The core's answer about the held head's header (from the loop). */
static void checks_answered(void *arg, int result, const char *new_name, const char *new_value)
{
    session *ss = arg;
    ss->checks_waiting = 0;
    if (ss->held == NULL)
        return;
    if (!ss->held_failed && header_checked(ss, &ss->held->e, result, new_name, new_value) < 0)
        ss->held_failed = 1;
    held_pop(ss);
    held_drain(ss);
}

/* The milter connection's edit callback. While an answer is awaited the
 * edits that follow are held, in order: the header checks of each must
 * see the transaction as the ones before left it (a REJECT stops them
 * all). The chunks of a replacement body are not held (a body is never
 * kept in memory): they go to the core at once, which changes nothing,
 * since the header edits and the body are apart in the message and a
 * STOP refuses or discards the message, new body and all. */
int milter_op_edit(void *arg, const milter_edit *e)
{
    link *l = arg;
    session *ss = l->ss;
    if (milter_event_abandoned(ss))
        return 0;   /* for nobody (a quarantine would hold the next message): logged with the answer */
    int body = e->type == MILTER_EDIT_BODY_CHUNK || e->type == MILTER_EDIT_BODY_END;
    if (ss->held != NULL && !body)
        return hold(ss, e) ? 0 : -1;
    int rc = edit_step(ss, e);
    if (rc != EDIT_WAITING)
        return rc;
    return hold(ss, e) ? 0 : -1;
}

/* Every edit but the headers' checked ones. */
static int edit_apply(session *ss, const milter_edit *e)
{
    petrel_session *s = ss->s;
    size_t i;
    switch (e->type) {
    case MILTER_EDIT_ADD_HEADER:
    case MILTER_EDIT_INSERT_HEADER:
    case MILTER_EDIT_CHANGE_HEADER:
        return -1;   /* edit_step's */
    case MILTER_EDIT_DELETE_HEADER:
        i = headers_find(ss, e->name, e->index);
        if (i == (size_t)-1)
            return 0;
        if (petrel_header_change(s, e->name, e->index, NULL) < 0)
            return -1;
        free(ss->headers[i].name);
        free(ss->headers[i].value);
        memmove(ss->headers + i, ss->headers + i + 1, (ss->nheaders - i - 1) * sizeof *ss->headers);
        ss->nheaders--;
        return 0;
    case MILTER_EDIT_CHANGE_FROM:
        /* RET= and ENVID= are applied, anything else ignored with a warning (Postfix) */
        return petrel_sender_change_params(s, e->address, e->args);
    case MILTER_EDIT_ADD_RCPT:
        /* NOTIFY= and ORCPT= are applied, anything else ignored with a warning (Postfix) */
        return petrel_recipient_add_params(s, e->address, e->args);
    case MILTER_EDIT_DELETE_RCPT:
        return petrel_recipient_delete(s, e->address);
    case MILTER_EDIT_BODY_CHUNK:
        /* Streamed to a file in the queue directory: a write the disk
         * refuses fails the message (451) in the core, whatever follows. */
        if (e->body_first || ss->newbody == NULL) {
            if (ss->newbody)
                petrel_body_replace_abort(ss->newbody);
            if ((ss->newbody = petrel_body_replace_begin(s)) == NULL)
                return -1;
        }
        return petrel_body_replace_write(ss->newbody, e->data, e->len);
    case MILTER_EDIT_BODY_END: {
        /* The new body is what the next milters read. */
        petrel_body_writer *w = ss->newbody;
        ss->newbody = NULL;
        if (w == NULL && (w = petrel_body_replace_begin(s)) == NULL)   /* an empty REPLBODY */
            return -1;
        return petrel_body_replace_commit(w);
    }
    case MILTER_EDIT_QUARANTINE:
        if (!ss->in_tx) {
            snprintf(ss->session_quarantine, sizeof ss->session_quarantine, "%s", e->reason);
            return 0;
        }
        return milter_apply_quarantine(ss, e->reason);
    }
    return -1;
}
