/*
 * The hook table (see hooks.h) and the per-hook module arrays built from
 * it when a module set is loaded.
 */
#include "config.h"

#include <stddef.h>
#include <stdlib.h>

#include "lib/buf.h"
#include "lib/xalloc.h"
#include "module/hooks.h"
#include "module/module.h"

static petrel_verdict call_connect(const petrel_hooks *h, petrel_module *m, petrel_session *s,
                                   const struct module_hook_args *a)
{
    return h->connect(s);
}

static petrel_verdict call_helo(const petrel_hooks *h, petrel_module *m, petrel_session *s,
                                const struct module_hook_args *a)
{
    return h->helo(s, a->a);
}

static petrel_verdict call_starttls(const petrel_hooks *h, petrel_module *m, petrel_session *s,
                                    const struct module_hook_args *a)
{
    return h->starttls(s);
}

static petrel_verdict call_auth(const petrel_hooks *h, petrel_module *m, petrel_session *s,
                                const struct module_hook_args *a)
{
    return h->auth(s, a->a, a->b);
}

static petrel_verdict call_mail(const petrel_hooks *h, petrel_module *m, petrel_session *s,
                                const struct module_hook_args *a)
{
    return h->mail(s, a->a);
}

static petrel_verdict call_rcpt(const petrel_hooks *h, petrel_module *m, petrel_session *s,
                                const struct module_hook_args *a)
{
    return h->rcpt(s, a->a);
}

static petrel_verdict call_data(const petrel_hooks *h, petrel_module *m, petrel_session *s,
                                const struct module_hook_args *a)
{
    return h->data(s);
}

static petrel_verdict call_header(const petrel_hooks *h, petrel_module *m, petrel_session *s,
                                  const struct module_hook_args *a)
{
    return h->header(s, a->a, a->b);
}

static petrel_verdict call_eoh(const petrel_hooks *h, petrel_module *m, petrel_session *s,
                               const struct module_hook_args *a)
{
    return h->end_of_headers(s);
}

static petrel_verdict call_body(const petrel_hooks *h, petrel_module *m, petrel_session *s,
                                const struct module_hook_args *a)
{
    return h->body(s, a->data, a->len);
}

static petrel_verdict call_eom(const petrel_hooks *h, petrel_module *m, petrel_session *s,
                               const struct module_hook_args *a)
{
    return h->end_of_message(s);
}

static petrel_verdict call_queued(const petrel_hooks *h, petrel_module *m, petrel_session *s,
                                  const struct module_hook_args *a)
{
    h->queued(s, a->a);
    return PETREL_CONTINUE;
}

static petrel_verdict call_delivery(const petrel_hooks *h, petrel_module *m, petrel_session *s,
                                    const struct module_hook_args *a)
{
    h->delivery(m, a->delivery);
    return PETREL_CONTINUE;
}

static petrel_verdict call_unknown(const petrel_hooks *h, petrel_module *m, petrel_session *s,
                                   const struct module_hook_args *a)
{
    return h->unknown(s, a->a);
}

static petrel_verdict call_rcpt_rejected(const petrel_hooks *h, petrel_module *m, petrel_session *s,
                                         const struct module_hook_args *a)
{
    return h->rcpt_rejected(s, a->a, a->b);
}

#define HOOK(id_, name_, runs_, suspend_, verdict_, session_, roles_, field_, fn_)                       \
    [id_] = { .id = id_, .name = name_, .runs = runs_, .may_suspend = suspend_, .verdict = verdict_,     \
              .session = session_, .roles = roles_, .offset = offsetof(petrel_hooks, field_), .invoke = fn_ }

const struct module_hook_def module_hook_table[MODULE_HOOK_COUNT] = {
    HOOK(MODULE_HOOK_CONNECT, "connect", "a client connected, before the greeting", 1, 1, 1,
         MODULE_ROLE_SMTPD, connect, call_connect),
    HOOK(MODULE_HOOK_HELO, "helo", "HELO or EHLO", 1, 1, 1, MODULE_ROLE_SMTPD, helo, call_helo),
    HOOK(MODULE_HOOK_STARTTLS, "starttls", "the TLS handshake completed", 1, 1, 1, MODULE_ROLE_SMTPD, starttls,
         call_starttls),
    HOOK(MODULE_HOOK_AUTH, "auth", "a client authenticated", 1, 1, 1, MODULE_ROLE_SMTPD, auth, call_auth),
    HOOK(MODULE_HOOK_MAIL, "mail", "MAIL FROM", 1, 1, 1, MODULE_ROLE_SMTPD, mail, call_mail),
    HOOK(MODULE_HOOK_RCPT, "rcpt", "each RCPT TO", 1, 1, 1, MODULE_ROLE_SMTPD, rcpt, call_rcpt),
    HOOK(MODULE_HOOK_DATA, "data", "DATA, before 354", 1, 1, 1, MODULE_ROLE_SMTPD, data, call_data),
    HOOK(MODULE_HOOK_HEADER, "header", "each header as content streams in", 0, 1, 1, MODULE_ROLE_SMTPD, header,
         call_header),
    HOOK(MODULE_HOOK_END_OF_HEADERS, "end_of_headers", "the header section ended", 0, 1, 1, MODULE_ROLE_SMTPD,
         end_of_headers, call_eoh),
    HOOK(MODULE_HOOK_BODY, "body", "body chunks as content streams in", 0, 1, 1, MODULE_ROLE_SMTPD, body,
         call_body),
    HOOK(MODULE_HOOK_END_OF_MESSAGE, "end_of_message", "the whole message arrived, before commit", 1, 1, 1,
         MODULE_ROLE_SMTPD, end_of_message, call_eom),
    HOOK(MODULE_HOOK_QUEUED, "queued", "the message is safe on disk", 0, 0, 1, MODULE_ROLE_SMTPD, queued,
         call_queued),
    HOOK(MODULE_HOOK_DELIVERY, "delivery", "a recipient was delivered, deferred or bounced", 0, 0, 0,
         MODULE_ROLE_QMGR, delivery, call_delivery),
    HOOK(MODULE_HOOK_UNKNOWN, "unknown", "a command smtpd does not know, before its 502", 1, 1, 1,
         MODULE_ROLE_SMTPD, unknown, call_unknown),
    HOOK(MODULE_HOOK_RCPT_REJECTED, "rcpt_rejected", "a RCPT TO smtpd's checks refused", 1, 1, 0,
         MODULE_ROLE_SMTPD, rcpt_rejected, call_rcpt_rejected),
};

int module_has_hook(const struct petrel_module *m, enum module_hook h)
{
    const void *const *slot = (const void *const *)((const char *)&m->c.hooks + module_hook_table[h].offset);
    return *slot != NULL;
}

unsigned module_hook_roles(const struct petrel_module *m)
{
    unsigned roles = 0;
    for (int h = 0; h < MODULE_HOOK_COUNT; h++)
        if (module_has_hook(m, (enum module_hook)h))
            roles |= module_hook_table[h].roles;
    return roles;
}

void module_phases_build(struct module_set *set)
{
    for (int h = 0; h < MODULE_HOOK_COUNT; h++) {
        struct module_phase *ph = &set->phases[h];
        ph->n = 0;
        ph->mods = xcalloc((size_t)(set->n ? set->n : 1), sizeof(*ph->mods));
        for (int i = 0; i < set->n; i++)
            if (module_has_hook(set->mods[i], (enum module_hook)h))
                ph->mods[ph->n++] = set->mods[i];
    }
}

void module_phases_free(struct module_set *set)
{
    for (int h = 0; h < MODULE_HOOK_COUNT; h++) {
        free(set->phases[h].mods);
        set->phases[h].mods = NULL;
        set->phases[h].n = 0;
    }
}

void module_phases_describe(const struct module_set *set, struct buf *out)
{
    int any = 0;
    for (int h = 0; h < MODULE_HOOK_COUNT; h++) {
        const struct module_phase *ph = &set->phases[h];
        if (ph->n == 0)
            continue;
        if (!any)
            buf_puts(out, "phases (modules run in this order):\n");
        any = 1;
        buf_printf(out, "  %s:", module_hook_table[h].name);
        for (int i = 0; i < ph->n; i++)
            buf_printf(out, "%s %s", i ? "," : "", ph->mods[i]->name);
        const struct module_hook_def *d = &module_hook_table[h];
        buf_printf(out, "   (%s%s%s)\n", d->roles & MODULE_ROLE_QMGR ? "queue manager" : "smtpd",
                   d->may_suspend ? ", may suspend" : "", d->verdict ? "" : ", informational");
    }
}
