/*
 * Notes (Haraka's connection and transaction notes): named string values
 * one module sets and another reads, so that an SPF result reaches a DMARC
 * module without either knowing the other.
 *
 * A name is "MODULE.key": a module sets only names in its own namespace
 * (the module is known from the session handle) and reads anyone's. A
 * note lives in the session (until the connection ends) or in the
 * transaction (cleared by RSET, a new MAIL, the end of DATA). Values are
 * copied; each session holds at most MAX_NOTES notes of at most
 * MAX_VALUE bytes, so a module cannot grow a session without bound.
 */
#include "config.h"

#include <stdlib.h>
#include <string.h>

#include "lib/log.h"
#include "lib/xalloc.h"
#include "module/module.h"
#include "module/runtime_int.h"

#define MAX_NOTES 128
#define MAX_NAME 64
#define MAX_VALUE 4096

/* "MODULE.key" with MODULE the caller's name and key [a-z0-9_.-]. */
static const char *bad_name(const struct petrel_module *m, const char *name)
{
    size_t len = strlen(m->name);
    if (strlen(name) > MAX_NAME)
        return "is longer than 64 characters";
    if (strncmp(name, m->name, len) != 0 || name[len] != '.' || name[len + 1] == '\0')
        return "is not in the module's namespace (MODULE.key)";
    for (const char *p = name + len + 1; *p; p++)
        if (!((*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') || *p == '_' || *p == '.' || *p == '-'))
            return "has a key with characters other than a-z, 0-9, _, . and -";
    return NULL;
}

int petrel_note_set(petrel_session *h, petrel_note_scope scope, const char *name, const char *value)
{
    struct petrel_module *m;
    struct module_session *ms = module_session_get(h, &m, __func__);
    if (ms == NULL)
        return -1;
    const char *why = name == NULL ? "is NULL" : bad_name(m, name);
    if (why == NULL && scope != PETREL_NOTE_SESSION && scope != PETREL_NOTE_TRANSACTION)
        why = "has an unknown scope";
    if (why == NULL && scope == PETREL_NOTE_TRANSACTION && ms->tx_pool == NULL)
        why = "is a transaction note outside a transaction";
    if (why == NULL && value && strlen(value) > MAX_VALUE)
        why = "has a value longer than 4096 bytes";
    if (why) {
        msg_warn("module %s: petrel_note_set: note \"%.80s\" %s: ignored", m->name, name ? name : "", why);
        return -1;
    }
    int tx = scope == PETREL_NOTE_TRANSACTION;
    struct module_note **link = &ms->notes;
    for (; *link; link = &(*link)->next)
        if ((*link)->tx == tx && strcmp((*link)->name, name) == 0)
            break;
    if (value == NULL) {
        if (*link) {
            struct module_note *n = *link;
            *link = n->next;
            module_note_free(n);
            ms->nnotes--;
        }
        return 0;
    }
    if (*link) {
        free((*link)->value);
        (*link)->value = xstrdup(value);
        return 0;
    }
    if (ms->nnotes >= MAX_NOTES) {
        msg_warn("module %s: petrel_note_set: the session has %d notes already: \"%s\" ignored", m->name,
                 MAX_NOTES, name);
        return -1;
    }
    struct module_note *n = xcalloc(1, sizeof(*n));
    n->tx = tx;
    n->name = xstrdup(name);
    n->value = xstrdup(value);
    *link = n;
    ms->nnotes++;
    return 0;
}

const char *petrel_note_get(petrel_session *h, const char *name)
{
    struct module_session *ms = module_session_get(h, NULL, __func__);
    if (ms == NULL || name == NULL)
        return NULL;
    const char *session_value = NULL;
    for (struct module_note *n = ms->notes; n; n = n->next) {
        if (strcmp(n->name, name) != 0)
            continue;
        if (n->tx)
            return n->value;
        session_value = n->value;
    }
    return session_value;
}
