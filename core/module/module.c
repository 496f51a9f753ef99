/*
 * Module loading, parameter declaration and circuit breakers (see
 * module.h). libltdl opens each object with local symbol scope, so two
 * modules' private symbols never clash; the only symbol looked up is the
 * descriptor.
 */
#include "config.h"

#include <ctype.h>
#include <dlfcn.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include <ltdl.h>

#include "config/cfg.h"
#include "lib/buf.h"
#include "lib/log.h"
#include "lib/xalloc.h"
#include "module/module.h"
#include "tables/table.h"

#define DEFAULT_TIMEOUT_MS 10000

/* "accept" is a synonym of "continue": the word product.md and
 * milter_default_action use for "let the mail through". */
static const char *const default_action_choices[] = { "continue", "accept", "tempfail", NULL };

static int valid_name(const char *name)
{
    if (*name == '\0' || strlen(name) > 64)
        return 0;
    for (const char *p = name; *p; p++)
        if (!(islower((unsigned char)*p) || isdigit((unsigned char)*p) || *p == '_'))
            return 0;
    return 1;
}

/* A module file (and its directory) must not be writable by anyone but its
 * owner, and the owner must be root or whoever runs petreld: otherwise
 * another user could make the MTA run their code. */
static int safe_file(const char *path, const char *what)
{
    struct stat st;
    if (stat(path, &st) != 0) {
        msg_error("%s %s: %s", what, path, strerror(errno));
        return 0;
    }
    if (st.st_mode & (S_IWGRP | S_IWOTH)) {
        msg_error("%s %s is writable by group or others (mode %04o): refusing to load it; "
                  "fix with chmod go-w %s", what, path, (unsigned)(st.st_mode & 07777), path);
        return 0;
    }
    if (st.st_uid != 0 && st.st_uid != geteuid()) {
        msg_error("%s %s is owned by uid %ld, neither root nor the user running petreld: refusing to load it",
                  what, path, (long)st.st_uid);
        return 0;
    }
    return 1;
}

static enum cfg_type param_type(petrel_param_type t)
{
    switch (t) {
    case PETREL_PARAM_INT: return CFG_INT;
    case PETREL_PARAM_BOOL: return CFG_BOOL;
    case PETREL_PARAM_TIME: return CFG_TIME;
    case PETREL_PARAM_SIZE: return CFG_SIZE;
    case PETREL_PARAM_LIST: return CFG_LIST;
    default: return CFG_STR;
    }
}

/* Bounds go with numbers, choices with strings and lists. */
static const char *param_limits_problem(const petrel_param *p)
{
    int numeric = p->type == PETREL_PARAM_INT || p->type == PETREL_PARAM_TIME || p->type == PETREL_PARAM_SIZE;
    if ((p->min || p->max) && !numeric)
        return "min and max apply to INT, TIME and SIZE parameters only";
    if (p->max != 0 && p->min > p->max)
        return "min is above max";
    if (p->choices && p->type != PETREL_PARAM_STRING && p->type != PETREL_PARAM_LIST)
        return "choices apply to STRING and LIST parameters only";
    if (p->choices && p->choices[0] == NULL)
        return "choices is empty (NULL means any value)";
    return NULL;
}

/* The module's own parameters plus the four every module gets from the core. */
static int declare_params(struct cfg_schema *schema, struct petrel_module *m)
{
    const petrel_module_desc *d = m->desc;
    size_t own = m->c.nparams;
    m->nparams = own + 4;
    m->params = xcalloc(m->nparams, sizeof(*m->params));
    size_t prefix = strlen(m->name);
    for (size_t i = 0; i < own; i++) {
        const petrel_param *p = &m->c.params[i];
        if (strncmp(p->name, m->name, prefix) != 0 || p->name[prefix] != '_') {
            msg_error("module %s (%s): parameter \"%s\" must start with \"%s_\"", m->name, m->path, p->name,
                      m->name);
            return -1;
        }
        const char *problem = param_limits_problem(p);
        if (problem) {
            msg_error("module %s (%s): parameter %s: %s", m->name, m->path, p->name, problem);
            return -1;
        }
        m->params[i].name = p->name;
        m->params[i].type = param_type(p->type);
        m->params[i].def = p->default_value ? p->default_value : "";
        m->params[i].help = p->help ? p->help : "";
        m->params[i].min = p->min;
        m->params[i].max = p->max;
        m->params[i].choices = p->choices;
    }
    char *names[4];
    names[0] = xmalloc(prefix + 32);
    snprintf(names[0], prefix + 32, "%s_default_action", m->name);
    names[1] = xmalloc(prefix + 32);
    snprintf(names[1], prefix + 32, "%s_hook_timeout", m->name);
    names[2] = xmalloc(prefix + 32);
    snprintf(names[2], prefix + 32, "%s_circuit_failures", m->name);
    names[3] = xmalloc(prefix + 32);
    snprintf(names[3], prefix + 32, "%s_circuit_cooldown", m->name);
    struct cfg_param *core = &m->params[own];
    core[0] = (struct cfg_param){ names[0], CFG_STR,
                                  d->default_action == PETREL_ON_FAILURE_TEMPFAIL ? "tempfail" : "continue",
                                  "what applies when the module times out, fails or its circuit is open",
                                  0, 0, default_action_choices };
    char *timeout = xmalloc(32);
    /* Shown in whole seconds, rounded up; an unset parameter keeps the
     * descriptor's exact milliseconds (module_set_bind). */
    snprintf(timeout, 32, "%us", ((d->hook_timeout_ms ? d->hook_timeout_ms : DEFAULT_TIMEOUT_MS) + 999) / 1000);
    core[1] = (struct cfg_param){ names[1], CFG_TIME, timeout,
                                  "how long a suspended hook or restriction of the module may take", 1, 3600, NULL };
    core[2] = (struct cfg_param){ names[2], CFG_INT, "5",
                                  "consecutive failures or timeouts that open the module's circuit (0: never)",
                                  0, 1000000, NULL };
    core[3] = (struct cfg_param){ names[3], CFG_TIME, "30s",
                                  "how long an open circuit skips the module before trying it again", 1, 86400, NULL };
    /* A Postfix parameter of the core may have the name already: the
     * milter module's milter_default_action is Postfix's (what applies
     * when one milter fails, read by the module itself). The core's
     * failure action for such a module is then the descriptor's. */
    m->default_action_is_core = cfg_schema_find(schema, names[0]) != NULL;
    int added = m->default_action_is_core
                    ? (cfg_schema_add(schema, m->params, own, m->name) == 0 &&
                       cfg_schema_add(schema, m->params + own + 1, m->nparams - own - 1, m->name) == 0)
                    : cfg_schema_add(schema, m->params, m->nparams, m->name) == 0;
    if (!added) {
        msg_error("module %s (%s): a parameter it declares is already declared by the core or another module",
                  m->name, m->path);
        return -1;
    }
    for (size_t i = 0; i < own; i++)
        if (m->c.params[i].per_service)
            cfg_schema_set_per_service(schema, m->c.params[i].name);
    return 0;
}

static void free_module(struct petrel_module *m)
{
    if (m == NULL)
        return;
    if (m->params) {
        size_t own = m->nparams - 4;
        for (size_t i = own; i < m->nparams; i++)
            free((char *)m->params[i].name);
        free((char *)m->params[own + 1].def);
        free(m->params);
    }
    module_tables_close(m);
    /* A table type's open runs where init may never run (the master's
     * checks and petreld -n, petrelctl, a role that only reads the
     * module's tables) and may keep per-process state in the module's
     * data: fini frees it there too, after the tables are closed. Where
     * init was called, module_set_fini decides (it may skip fini on
     * purpose: start.c). */
    if (!m->init_called && m->data != NULL && m->desc->fini)
        m->desc->fini(m);
    for (size_t i = 0; i < m->ntable_regs; i++)
        free(m->table_regs[i]);
    free(m->table_regs);
    compat_free_descriptor(&m->c);
    if (m->handle)
        lt_dlclose((lt_dlhandle)m->handle);
    free(m->name);
    free(m->reject_label);
    free(m->path);
    free(m);
}

/* A control command petrelctl could not name or run is the module's bug:
 * refuse it at load, naming the entry. */
static int commands_problem(const struct compat_desc *c, char *detail, size_t size)
{
    for (size_t i = 0; i < c->ncommands; i++) {
        const petrel_command *cmd = &c->commands[i];
        int ok = *cmd->name != '\0' && strlen(cmd->name) <= 32;
        for (const char *p = cmd->name; *p; p++)
            if (!(islower((unsigned char)*p) || isdigit((unsigned char)*p) || *p == '-' || *p == '_'))
                ok = 0;
        if (!ok) {
            snprintf(detail, size, "commands[%zu]: \"%.40s\" is not a command name (lower-case letters, digits, "
                     "'-' and '_', at most 32)", i, cmd->name);
            return -1;
        }
        if (cmd->run == NULL || cmd->min_args < 0 || (cmd->max_args >= 0 && cmd->max_args < cmd->min_args)) {
            snprintf(detail, size, "commands[%zu] (%s): %s", i, cmd->name,
                     cmd->run == NULL ? "no run function" : "min_args and max_args do not make a range");
            return -1;
        }
        for (size_t j = 0; j < i; j++)
            if (strcmp(c->commands[j].name, cmd->name) == 0) {
                snprintf(detail, size, "commands: \"%s\" is declared twice", cmd->name);
                return -1;
            }
    }
    return 0;
}

static struct petrel_module *load_one(const char *dir, const char *name)
{
    if (!valid_name(name)) {
        msg_error("modules: \"%s\" is not a valid module name (lower-case letters, digits, _)", name);
        return NULL;
    }
    size_t plen = strlen(dir) + strlen(name) + 8;
    char *path = xmalloc(plen);
    snprintf(path, plen, "%s/%s.so", dir, name);
    if (access(path, F_OK) != 0) {
        msg_error("modules: unknown module \"%s\": no %s (module_directory = %s)", name, path, dir);
        free(path);
        return NULL;
    }
    if (!safe_file(dir, "module_directory") || !safe_file(path, "module file")) {
        free(path);
        return NULL;
    }
    /* Bound now, not lazily: a module that calls a function this core
     * lacks is refused here, by name, rather than killing the process at
     * its first call; and the dynamic linker's reason is reported (libltdl
     * says "file not found" for any failure). libltdl then opens the same,
     * already loaded object. */
    int flags = RTLD_NOW | RTLD_LOCAL;
#ifdef PETREL_SANITIZERS
    /* Never unmapped in a sanitizer build: LeakSanitizer checks at exit,
     * after the modules are closed, and the global state of the libraries
     * a module brought in (libldap's libsasl2 and liblber) would be
     * reported as leaked once their data segments are gone, and every
     * report's module frames would be unknown. Close and fini still run. */
    flags |= RTLD_NODELETE;
#endif
    void *bound = dlopen(path, flags);
    if (bound == NULL) {
        const char *why = dlerror();
        msg_error("module %s: cannot load %s: %s", name, path, why ? why : "unknown error");
        free(path);
        return NULL;
    }
    lt_dladvise advise;
    lt_dladvise_init(&advise);
    lt_dladvise_local(&advise);
    lt_dlhandle h = lt_dlopenadvise(path, advise);
    lt_dladvise_destroy(&advise);
    dlclose(bound);
    if (h == NULL) {
        msg_error("module %s: cannot load %s: %s", name, path, lt_dlerror());
        free(path);
        return NULL;
    }
    const petrel_module_desc *d = lt_dlsym(h, PETREL_MODULE_SYMBOL);
    const char *problem = NULL;
    char detail[256] = "";
    if (d == NULL) {
        problem = "does not export " PETREL_MODULE_SYMBOL " (is it a Petrel module?)";
    } else if (d->abi_major != PETREL_ABI_MAJOR) {
        snprintf(detail, sizeof(detail), "was built for plugin ABI %u.%u, this petreld provides %d.%d: rebuild it "
                 "against this version's petrel-plugin", d->abi_major, d->abi_minor, PETREL_ABI_MAJOR,
                 PETREL_ABI_MINOR);
    } else if (d->abi_minor > PETREL_ABI_MINOR) {
        snprintf(detail, sizeof(detail), "needs plugin ABI %u.%u, newer than this petreld's %d.%d: upgrade Petrel",
                 d->abi_major, d->abi_minor, PETREL_ABI_MAJOR, PETREL_ABI_MINOR);
    } else if (d->build_signature == NULL || strcmp(d->build_signature, PETREL_BUILD_SIGNATURE) != 0) {
        snprintf(detail, sizeof(detail), "has build signature \"%s\", expected \"%s\"",
                 d->build_signature ? d->build_signature : "(none)", PETREL_BUILD_SIGNATURE);
    } else if (d->name == NULL || strcmp(d->name, name) != 0) {
        snprintf(detail, sizeof(detail), "calls itself \"%s\"; a module's name must match its file name",
                 d->name ? d->name : "(none)");
    }
    if (problem || detail[0]) {
        msg_error("module %s (%s) %s", name, path, problem ? problem : detail);
        lt_dlclose(h);
        free(path);
        return NULL;
    }
    struct compat_desc c;
    int unreadable = compat_read_descriptor(d, &c, detail, sizeof(detail)) != 0;
    if (!unreadable && commands_problem(&c, detail, sizeof(detail)) != 0) {
        compat_free_descriptor(&c);
        unreadable = 1;
    }
    if (unreadable) {
        msg_error("module %s (%s): %s", name, path, detail);
        lt_dlclose(h);
        free(path);
        return NULL;
    }
    struct petrel_module *m = xcalloc(1, sizeof(*m));
    m->desc = d;
    m->c = c;
    m->name = xstrdup(name);
    if (asprintf(&m->reject_label, "module:%s", name) < 0)
        m->reject_label = NULL;
    m->path = path;
    m->handle = h;
    return m;
}

struct module_set *module_set_load(struct cfg_schema *schema, const char *confdir)
{
    struct module_set *set = xcalloc(1, sizeof(*set));
    char *names = cfg_peek(schema, confdir, "modules");
    char *dir = cfg_peek(schema, confdir, "module_directory");
    if (names == NULL || *names == '\0') {
        free(names);
        free(dir);
        module_phases_build(set);
        return set;
    }
    if (lt_dlinit() != 0) {
        msg_error("libltdl: %s", lt_dlerror());
        free(names);
        free(dir);
        free(set);
        return NULL;
    }
    char **items = cfg_split_list(names);
    int n = 0, bad = 0;
    while (items[n])
        n++;
    set->mods = xcalloc((size_t)n, sizeof(*set->mods));
    for (int i = 0; i < n; i++) {
        int dup = 0;
        for (int j = 0; j < set->n; j++)
            if (strcmp(set->mods[j]->name, items[i]) == 0)
                dup = 1;
        if (dup) {
            msg_error("modules: module \"%s\" is listed twice", items[i]);
            bad++;
            continue;
        }
        struct petrel_module *m = load_one(dir ? dir : PETREL_MODULEDIR, items[i]);
        if (m == NULL) {
            bad++;
            continue;
        }
        m->set = set;
        m->index = set->n;
        m->roles = module_hook_roles(m);
        set->mods[set->n++] = m;
        if (declare_params(schema, m) != 0)
            bad++;
    }
    cfg_list_free(items);
    free(names);
    free(dir);
    if (!bad && set->n > MODULE_SET_MAX) {
        msg_error("modules: %d modules listed: at most %d can be loaded", set->n, MODULE_SET_MAX);
        bad++;
    }
    module_phases_build(set);
    if (bad) {
        module_set_free(set);
        return NULL;
    }
    return set;
}

void module_set_bind(struct module_set *set, const struct cfg *cfg)
{
    char name[128];
    for (int i = 0; set && i < set->n; i++) {
        struct petrel_module *m = set->mods[i];
        m->cfg = cfg;
        snprintf(name, sizeof(name), "%s_default_action", m->name);
        const char *action = cfg_get(cfg, name);
        m->default_action = action && strcasecmp(action, "tempfail") == 0 ? PETREL_ON_FAILURE_TEMPFAIL
                                                                          : PETREL_ON_FAILURE_CONTINUE;
        if (m->default_action_is_core)
            m->default_action = m->desc->default_action;
        snprintf(name, sizeof(name), "%s_hook_timeout", m->name);
        m->timeout_ms = (unsigned)(cfg_int(cfg, name) * 1000);
        if (m->desc->hook_timeout_ms && cfg_is_default(cfg, name))
            m->timeout_ms = m->desc->hook_timeout_ms;
        snprintf(name, sizeof(name), "%s_circuit_failures", m->name);
        m->circuit_failures = (unsigned)cfg_int(cfg, name);
        snprintf(name, sizeof(name), "%s_circuit_cooldown", m->name);
        m->circuit_cooldown = (unsigned)cfg_int(cfg, name);
    }
}

int module_used_by(const struct petrel_module *m, unsigned role)
{
    /* smtpd uses every module (restrictions, table types and SASL
     * back-ends live there too); other roles those with one of their hooks. */
    return role == MODULE_ROLE_SMTPD || (m->roles & role) != 0;
}

int module_set_init(struct module_set *set, unsigned role)
{
    for (int i = 0; set && i < set->n; i++) {
        struct petrel_module *m = set->mods[i];
        if (!module_used_by(m, role))
            continue;
        m->init_called = 1;
        if (m->desc->init) {
            const char *error = NULL;
            if (m->desc->init(m, &error) != 0) {
                msg_error("module %s: initialisation failed: %s", m->name, error ? error : "(no reason given)");
                return -1;
            }
        }
        m->initialised = 1;
    }
    return 0;
}

void module_set_fini(struct module_set *set)
{
    for (int i = set ? set->n - 1 : -1; i >= 0; i--) {
        struct petrel_module *m = set->mods[i];
        if (m->initialised && m->desc->fini)
            m->desc->fini(m);
        m->initialised = 0;
    }
}

void module_set_free(struct module_set *set)
{
    if (set == NULL)
        return;
    for (int i = 0; i < set->n; i++)
        free_module(set->mods[i]);
    module_phases_free(set);
    free(set->mods);
    free(set);
}

const petrel_restriction *module_set_find_restriction(const struct module_set *set, const char *name,
                                                      struct petrel_module **owner)
{
    for (int i = 0; set && i < set->n; i++) {
        const petrel_restriction *r = set->mods[i]->c.restrictions;
        for (; r && r->name; r++) {
            if (strcasecmp(r->name, name) == 0) {
                *owner = set->mods[i];
                return r;
            }
        }
    }
    return NULL;
}

const petrel_sasl_backend *module_set_find_sasl(const struct module_set *set, const char *name,
                                                struct petrel_module **owner)
{
    for (int i = 0; set && i < set->n; i++) {
        for (const petrel_sasl_backend *b = set->mods[i]->c.sasl_backends; b && b->name; b++) {
            if (strcasecmp(b->name, name) == 0) {
                *owner = set->mods[i];
                return b;
            }
        }
    }
    return NULL;
}

struct petrel_module *module_set_find_module(const struct module_set *set, const char *name)
{
    for (int i = 0; set && i < set->n; i++)
        if (strcmp(set->mods[i]->name, name) == 0)
            return set->mods[i];
    return NULL;
}

const struct cfg *module_cfg(const struct petrel_module *m)
{
    return m->cfg;
}

const petrel_sasl_server *module_set_find_sasl_server(const struct module_set *set, const char *name,
                                                      struct petrel_module **owner)
{
    for (int i = 0; set && i < set->n; i++) {
        for (const petrel_sasl_server *e = set->mods[i]->c.sasl_servers; e && e->name; e++) {
            if (strcasecmp(e->name, name) == 0 && e->mechanisms && e->start && e->step) {
                *owner = set->mods[i];
                return e;
            }
        }
    }
    return NULL;
}

/* ------------------------------------------------------------------ */
/* circuit breaker                                                     */

int module_circuit_allows(struct petrel_module *m, time_t now)
{
    if (m->circuit == CIRCUIT_OPEN) {
        if (now < m->open_until) {
            m->skipped++;
            return 0;
        }
        m->circuit = CIRCUIT_HALF_OPEN;
        msg_info("module %s: circuit half-open: trying the module again", m->name);
    }
    return 1;
}

void module_circuit_success(struct petrel_module *m)
{
    if (m->circuit == CIRCUIT_HALF_OPEN) {
        msg_info("module %s: circuit closed: the module answers again", m->name);
        module_record_circuit(m, 0, 0);
    }
    m->circuit = CIRCUIT_CLOSED;
    m->consecutive_failures = 0;
}

void module_circuit_failure(struct petrel_module *m, time_t now, const char *what)
{
    m->failures++;
    m->consecutive_failures++;
    if (m->circuit == CIRCUIT_HALF_OPEN ||
        (m->circuit_failures && m->consecutive_failures >= m->circuit_failures && m->circuit == CIRCUIT_CLOSED)) {
        m->circuit = CIRCUIT_OPEN;
        m->open_until = now + m->circuit_cooldown;
        m->circuit_opened++;
        module_record_circuit(m, 1, 1);
        msg_warn("module %s: circuit open after %u consecutive failure%s (last: %s): its hooks are skipped "
                 "with the default action (%s) for %u seconds (opened %llu time%s, %llu failures, %llu timeouts)",
                 m->name, m->consecutive_failures, m->consecutive_failures == 1 ? "" : "s", what,
                 m->default_action == PETREL_ON_FAILURE_TEMPFAIL ? "tempfail" : "continue", m->circuit_cooldown,
                 m->circuit_opened, m->circuit_opened == 1 ? "" : "s", m->failures, m->timeouts);
    }
}

void module_set_describe(const struct module_set *set, struct buf *out)
{
    if (set == NULL || set->n == 0) {
        buf_puts(out, "no modules loaded\n");
        return;
    }
    for (int i = 0; i < set->n; i++) {
        const struct petrel_module *m = set->mods[i];
        const petrel_module_desc *d = m->desc;
        buf_printf(out, "%s %s (ABI %u.%u) %s\n", m->name, d->version ? d->version : "?", d->abi_major,
                   d->abi_minor, m->path);
        if (d->description)
            buf_printf(out, "  %s\n", d->description);
        int any = 0;
        for (int h = 0; h < MODULE_HOOK_COUNT; h++) {
            if (module_has_hook(m, (enum module_hook)h)) {
                buf_printf(out, "%s%s", any ? " " : "  hooks: ", module_hook((enum module_hook)h)->name);
                any = 1;
            }
        }
        if (any)
            buf_puts(out, "\n");
        any = 0;
        for (const petrel_restriction *r = m->c.restrictions; r && r->name; r++) {
            buf_printf(out, "%s%s", any ? " " : "  restrictions: ", r->name);
            any = 1;
        }
        if (any)
            buf_puts(out, "\n");
        any = 0;
        for (const petrel_table_type *tt = m->c.table_types; tt && tt->name; tt++) {
            buf_printf(out, "%s%s:", any ? " " : "  table types: ", tt->name);
            any = 1;
        }
        if (any)
            buf_puts(out, "\n");
        any = 0;
        for (const petrel_sasl_backend *sb = m->c.sasl_backends; sb && sb->name; sb++) {
            buf_printf(out, "%s%s", any ? " " : "  SASL back-ends: ", sb->name);
            any = 1;
        }
        for (const petrel_sasl_server *ss = m->c.sasl_servers; ss && ss->name; ss++) {
            buf_printf(out, "%s%s", any ? " " : "  SASL back-ends: ", ss->name);
            any = 1;
        }
        if (any)
            buf_puts(out, "\n");
        any = 0;
        for (const petrel_command *cmd = m->c.commands; cmd && cmd->name; cmd++) {
            buf_printf(out, "%s%s", any ? " " : "  commands (petrelctl MODULE COMMAND): ", cmd->name);
            any = 1;
        }
        if (any)
            buf_puts(out, "\n");
        any = 0;
        for (const petrel_param *p = m->c.params; p && p->name; p++) {
            buf_printf(out, "%s%s", any ? " " : "  parameters: ", p->name);
            any = 1;
        }
        if (any)
            buf_puts(out, "\n");
    }
    module_phases_describe(set, out);
}
