/*
 * modules/milter: the milters' modifications. The module keeps its own copy
 * of the message's headers (loaded at end of message, changed with each
 * edit) so that the next milter sees the headers as the previous ones left
 * them, as in Postfix; each edit is applied at once through the petrel_*
 * edit functions (a REPLBODY streams into petrel_body_replace_*). Moved out
 * of milter_module.c, whose opening comment describes the design.
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

/* milter_header_checks (the core's, petrel_milter_header_checks) on a
 * header about to be written: 1 write *name / *value (perhaps replaced),
 * 0 do not, -1 an error. After a REJECT or DISCARD no edit of the message
 * is made any more, as Postfix's libmilter code stops applying them. */
static int header_checked(session *ss, const char **name, const char **value)
{
    const char *new_name = NULL, *new_value = NULL;
    switch (petrel_milter_header_checks(ss->s, *name, *value, &new_name, &new_value)) {
    case PETREL_HEADER_KEEP:
        return 1;
    case PETREL_HEADER_REPLACED:
        *name = new_name;
        *value = new_value;
        return 1;
    case PETREL_HEADER_DROP:
        return 0;
    case PETREL_HEADER_STOP:
        ss->tx_edits_stopped = 1;
        return 0;
    default:
        return -1;
    }
}

int milter_op_edit(void *arg, const milter_edit *e)
{
    link *l = arg;
    session *ss = l->ss;
    petrel_session *s = ss->s;
    size_t i;
    const char *name = e->name, *value = e->value;
    int rc;
    if (ss->tx_edits_stopped && e->type != MILTER_EDIT_QUARANTINE)
        return 0;
    switch (e->type) {
    case MILTER_EDIT_ADD_HEADER:
        if ((rc = header_checked(ss, &name, &value)) <= 0)
            return rc;
        if (petrel_header_add(s, name, value) < 0)
            return -1;
        return headers_add(ss, ss->nheaders, name, value);
    case MILTER_EDIT_INSERT_HEADER:
        if ((rc = header_checked(ss, &name, &value)) <= 0)
            return rc;
        if (petrel_header_insert(s, e->index, name, value) < 0)
            return -1;
        return headers_add(ss, e->index, name, value);
    case MILTER_EDIT_CHANGE_HEADER:
        if ((rc = header_checked(ss, &name, &value)) <= 0)
            return rc;
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
        {
            char *v = strdup(value);
            if (v == NULL)
                return -1;
            free(ss->headers[i].value);
            ss->headers[i].value = v;
        }
        return 0;
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
