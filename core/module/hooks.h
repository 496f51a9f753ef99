/*
 * The one hook table: every hook of petrel_hooks with the phase it runs
 * in, whether it may suspend, whether it answers with a verdict, which
 * roles call it, and how to call it. The dispatcher, `petrelctl modules`
 * and the queue manager all read this table; nothing else switches over
 * hook names.
 *
 * When a module set is loaded, each hook gets its array of the modules
 * that implement it, in the order of `modules` (nginx's phase handler
 * arrays): a phase walks a flat array instead of asking every module.
 */
#ifndef PETREL_MODULE_HOOKS_H
#define PETREL_MODULE_HOOKS_H

#include <stddef.h>

#include <petrel/plugin.h>

struct petrel_module;
struct module_set;
struct buf;

enum module_hook {
    MODULE_HOOK_CONNECT,
    MODULE_HOOK_HELO,
    MODULE_HOOK_STARTTLS,
    MODULE_HOOK_AUTH,
    MODULE_HOOK_MAIL,
    MODULE_HOOK_RCPT,
    MODULE_HOOK_DATA,
    MODULE_HOOK_HEADER,
    MODULE_HOOK_END_OF_HEADERS,
    MODULE_HOOK_BODY,
    MODULE_HOOK_END_OF_MESSAGE,
    MODULE_HOOK_QUEUED,
    MODULE_HOOK_DELIVERY,
    MODULE_HOOK_UNKNOWN,
    MODULE_HOOK_RCPT_REJECTED,
    MODULE_HOOK_COUNT
};

/* The roles (processes) that call hooks and therefore initialise modules. */
#define MODULE_ROLE_SMTPD 0x1u
#define MODULE_ROLE_QMGR 0x2u

/* What a hook is handed besides the session. */
struct module_hook_args {
    const char *a;                         /* HELO name, AUTH mechanism, sender, recipient,
                                              header name, queue ID, unknown command line */
    const char *b;                         /* AUTH user name, header value, a refused RCPT's reply */
    const char *data;                      /* body chunk */
    size_t len;
    const petrel_delivery_result *delivery;
};

typedef petrel_verdict module_hook_invoke_fn(const petrel_hooks *hooks, petrel_module *m, petrel_session *s,
                                             const struct module_hook_args *args);

struct module_hook_def {
    enum module_hook id;
    const char *name;                      /* as petrelctl modules and the metrics name it */
    const char *runs;                      /* when, in a few words */
    unsigned may_suspend : 1;              /* may return PENDING after petrel_suspend() */
    unsigned verdict : 1;                  /* its verdict counts (else informational) */
    unsigned session : 1;                  /* called with a session handle */
    unsigned roles;                        /* MODULE_ROLE_* that call it */
    size_t offset;                         /* of its pointer in petrel_hooks */
    module_hook_invoke_fn *invoke;
};

extern const struct module_hook_def module_hook_table[MODULE_HOOK_COUNT];

static inline const struct module_hook_def *module_hook(enum module_hook h)
{
    return &module_hook_table[h];
}

/* Does module m implement hook h? */
int module_has_hook(const struct petrel_module *m, enum module_hook h);
/* The roles whose hooks m implements (MODULE_ROLE_*). */
unsigned module_hook_roles(const struct petrel_module *m);

/* Per-hook arrays of the modules implementing it, in `modules` order. */
struct module_phase {
    struct petrel_module **mods;
    int n;
};
void module_phases_build(struct module_set *set);
void module_phases_free(struct module_set *set);
/* Appends, for each hook that some module implements, "  NAME: a, b" to out. */
void module_phases_describe(const struct module_set *set, struct buf *out);

#endif
