/*
 * The module loader and registry: `modules = a b c` loads NAME.so from
 * module_directory with libltdl, checks its one exported descriptor (ABI
 * major/minor, build signature, name), refuses a duplicate, an unknown name
 * or a file writable by group or others, and declares the module's
 * parameters in the configuration schema, so that `petreld -n` validates
 * them and `petrelctl config -d` lists them.
 *
 * A module set belongs to one configuration generation. The master loads it
 * before it reads main.cf (the module parameters must be known first);
 * every role process that uses modules inherits the mapped objects through
 * fork and calls init with that generation's configuration.
 *
 * Each module also carries its circuit breaker (per process): after
 * NAME_circuit_failures consecutive failures or timeouts its hooks are
 * skipped with its default action for NAME_circuit_cooldown, then one call
 * is let through (half-open) to see whether it recovered.
 */
#ifndef PETREL_MODULE_MODULE_H
#define PETREL_MODULE_MODULE_H

#include <stddef.h>
#include <time.h>

#include <petrel/plugin.h>
#include "module/compat.h"
#include "module/hooks.h"

struct cfg;
struct cfg_schema;
struct cfg_param;
struct tbl_registry;

enum circuit_state { CIRCUIT_CLOSED, CIRCUIT_OPEN, CIRCUIT_HALF_OPEN };

#define STALE_KINDS 3                  /* session, pending call, other handles */
struct stale_log {
    time_t second;
    unsigned lines;
    unsigned long suppressed;
};

struct petrel_module {
    const petrel_module_desc *desc;     /* as the module exports it: read it through c */
    struct compat_desc c;               /* its hooks and arrays in today's layout (compat.c) */
    char *name;
    char *reject_label;                 /* "module:NAME": the restriction label of its hooks' refusals */
    char *path;
    void *handle;                   /* lt_dlhandle */
    struct module_set *set;
    int index;                      /* its position in the set (and in handles) */
    unsigned roles;                 /* MODULE_ROLE_* whose hooks it implements */
    int default_action_is_core;     /* NAME_default_action is a core parameter (milter's): the descriptor's applies */
    const struct cfg *cfg;          /* the generation's main.cf values */
    void *data;                     /* petrel_module_set_data */
    int initialised;
    int init_called;                /* init was called in this process (whatever it returned) */
    struct cfg_param *params;       /* the schema's copy of the declared parameters */
    size_t nparams;
    /* from NAME_* core-declared parameters */
    unsigned timeout_ms;
    petrel_default_action default_action;
    unsigned circuit_failures;
    unsigned circuit_cooldown;      /* seconds */
    /* circuit breaker and counters (this process) */
    enum circuit_state circuit;
    unsigned consecutive_failures;
    time_t open_until;
    unsigned long long calls, failures, timeouts, skipped, circuit_opened;
    struct stale_log stale[STALE_KINDS];   /* API calls with a dead handle, per kind (rate-limited logging) */
    unsigned long minor_refusals;   /* calls of functions newer than its ABI minor (module_requires_minor) */
    unsigned blocking_calls;        /* petrel_run_blocking work not yet completed (this process) */
    unsigned check_problems;        /* petrel_config_error() calls during its check */
    void **table_regs;              /* registry entries made for its table types */
    size_t ntable_regs;
    struct petrel_table **tables;   /* tables it opened (petrel_table_open), closed when it is freed */
    size_t ntables;
};

struct module_set {
    struct petrel_module **mods;
    int n;
    struct module_phase phases[MODULE_HOOK_COUNT];   /* per hook, the modules implementing it */
    struct tbl_registry *tables;    /* the registry its table types went into last: petrel_table_open's */
};

/* At most this many modules per set: a handle carries the module's index in a byte. */
#define MODULE_SET_MAX 255

/* Loads the modules named by `modules` in confdir/main.cf into a new set and
 * declares their parameters in schema. Every problem is logged (msg_error)
 * naming the module and the file; returns NULL if any. An empty list gives
 * an empty set. */
struct module_set *module_set_load(struct cfg_schema *schema, const char *confdir);
/* The loaded module called name, or NULL. */
struct petrel_module *module_set_find_module(const struct module_set *set, const char *name);
/* The main.cf values of the module's configuration generation. */
const struct cfg *module_cfg(const struct petrel_module *m);
/* Gives every module the loaded configuration (after cfg_load). */
void module_set_bind(struct module_set *set, const struct cfg *cfg);
/* The first master.cf service called name whose sessions run module hooks
 * (smtpd, pickup), as petrel_service_config_* see it; NULL if none. */
struct master_service;
const struct master_service *module_hook_service(const struct cfg *cfg, const char *name);
/* Runs every module's check() on the bound configuration (params.c);
 * -1 when one found a problem (each is logged as file:line: parameter: problem). */
int module_set_check(struct module_set *set);
/* In a role process: calls init of every module the role uses (all of
 * them for smtpd; for the queue manager those with a queue-manager hook).
 * Returns -1 (logged) if an init fails. Roles call it through
 * module_runtime_start (runtime.h). */
int module_set_init(struct module_set *set, unsigned role);
void module_set_fini(struct module_set *set);
/* Does the role use module m (call its init and hooks)? */
int module_used_by(const struct petrel_module *m, unsigned role);
void module_set_free(struct module_set *set);

/* The module providing restriction name, or NULL. */
const petrel_restriction *module_set_find_restriction(const struct module_set *set, const char *name,
                                                      struct petrel_module **owner);

/* The module providing SASL back-end name, or NULL. */
const petrel_sasl_backend *module_set_find_sasl(const struct module_set *set, const char *name,
                                                struct petrel_module **owner);

/* The module providing the ABI 1.1 SASL server back-end name, or NULL. */
const petrel_sasl_server *module_set_find_sasl_server(const struct module_set *set, const char *name,
                                                      struct petrel_module **owner);

/* Control commands (commands.c): a module's command name, or NULL; the
 * usage line of a command ("usage: petrelctl greylist list [--json]
 * [CLIENT]"); the list of a module's commands. */
struct buf;
const petrel_command *module_command_find(const struct petrel_module *m, const char *name);
void module_command_usage(const struct petrel_module *m, const petrel_command *c, struct buf *out);
void module_command_help(const struct module_set *set, const struct petrel_module *m, struct buf *out);
/* Takes a leading --json off (for commands that have it) and checks the
 * arguments; the index of the first argument for the handler, or -1 with
 * the reason appended to why. */
int module_command_check_args(const struct petrel_module *m, const petrel_command *c, int argc,
                              const char *const *argv, int *json, struct buf *why);

/* Adds every module's lookup-table types to a registry; -1 (logged) on a clash. */
int module_set_register_tables(struct module_set *set, struct tbl_registry *reg);
/* reg is about to be freed: petrel_table_open stops using it. */
void module_set_tables_gone(struct module_set *set, struct tbl_registry *reg);
/* Closes the tables m opened (tables.c). */
void module_tables_close(struct petrel_module *m);

/* metrics_api.c: the circuit's state for the shared metrics. */
void module_record_circuit(const struct petrel_module *m, int open, int opened_now);

/* Circuit breaker: may the module be called now? (0: skip with its default action) */
int module_circuit_allows(struct petrel_module *m, time_t now);
void module_circuit_success(struct petrel_module *m);
void module_circuit_failure(struct petrel_module *m, time_t now, const char *what);

/* Writes what `petrelctl modules` shows. */
struct buf;
void module_set_describe(const struct module_set *set, struct buf *out);

#endif
