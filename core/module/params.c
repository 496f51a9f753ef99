/*
 * Parameters as modules see them: their own (declared in the descriptor,
 * typed, bounded and validated with main.cf by the configuration check),
 * the core's (read-only), and the module's own check of its configuration.
 *
 * A module's check() runs wherever a configuration is loaded to be
 * checked or used by the master: petreld -n, the start, and a reload
 * before it is accepted. There init has not run and there is no event
 * loop: check looks at files and values, never at the network. Problems
 * are reported with petrel_config_error() in the core's own format,
 * "main.cf:LINE: parameter: problem", so the admin sees one kind of error.
 *
 * Per-service values (petrel_service_config_*) are those of the master.cf
 * service's own configuration (main.cf plus its -o overrides), for the
 * services whose sessions run module hooks (smtpd's and pickup's). A name
 * not unique among them gives the first (settings.c refuses a later one
 * whose milter values differ).
 */
#include "config.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <petrel/plugin.h>
#include "config/cfg.h"
#include "lib/log.h"
#include "lib/xalloc.h"
#include "module/module.h"
#include "tables/table.h"

static int declared(petrel_module *m, const char *name)
{
    if (m == NULL || name == NULL)
        return 0;
    for (size_t i = 0; i < m->nparams; i++)
        if (strcmp(m->params[i].name, name) == 0)
            return 1;
    msg_warn("module %s asked for parameter %s, which it did not declare", m->name, name);
    return 0;
}

const char *petrel_param_string(petrel_module *m, const char *name)
{
    return declared(m, name) ? cfg_get(m->cfg, name) : NULL;
}

long long petrel_param_int(petrel_module *m, const char *name)
{
    return declared(m, name) ? cfg_int(m->cfg, name) : 0;
}

int petrel_param_bool(petrel_module *m, const char *name)
{
    return declared(m, name) ? cfg_bool(m->cfg, name) : 0;
}

const char *const *petrel_param_list(petrel_module *m, const char *name)
{
    return declared(m, name) ? cfg_list(m->cfg, name) : NULL;
}

/* Is name a core parameter? (Another module's are its own business.) */
static int core_param(petrel_module *m, const char *name, const char *fn)
{
    if (m == NULL || name == NULL || m->cfg == NULL)
        return 0;
    const char *owner = cfg_owner(m->cfg, name);
    if (owner && strcmp(owner, "core") == 0)
        return 1;
    msg_warn("module %s: %s: \"%s\" is not a core parameter%s", m->name, fn, name,
             owner && strcmp(owner, m->name) == 0 ? " (it is the module's own: use petrel_param_*)" : "");
    return 0;
}

const char *petrel_config_string(petrel_module *m, const char *name)
{
    return core_param(m, name, __func__) ? cfg_get(m->cfg, name) : NULL;
}

const char *const *petrel_config_list(petrel_module *m, const char *name)
{
    return core_param(m, name, __func__) ? cfg_list(m->cfg, name) : NULL;
}

long long petrel_config_int(petrel_module *m, const char *name)
{
    return core_param(m, name, __func__) ? cfg_int(m->cfg, name) : 0;
}

int petrel_config_bool(petrel_module *m, const char *name)
{
    return core_param(m, name, __func__) ? cfg_bool(m->cfg, name) : 0;
}

void petrel_config_error(petrel_module *m, const char *name, const char *fmt, ...)
{
    char text[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(text, sizeof(text), fmt, ap);
    va_end(ap);
    if (m == NULL)
        return;
    m->check_problems++;
    const char *file = NULL;
    int line = 0;
    if (m->cfg && name)
        cfg_origin(m->cfg, name, &file, &line);
    if (file && line > 0)
        msg_error("%s:%d: %s: %s", file, line, name, text);
    else if (m->cfg && name)
        msg_error("%s/main.cf: %s: %s (the default value)", cfg_confdir(m->cfg), name, text);
    else
        msg_error("module %s: %s", m->name, text);
}

int module_set_check(struct module_set *set)
{
    int bad = 0;
    /* A check may open tables (petrel_table_check): where no role has
     * made a registry (the master, petreld -n), one is lent for it. */
    struct tbl_registry *lent = NULL;
    if (set && set->tables == NULL) {
        lent = tbl_registry_new();
        if (module_set_register_tables(set, lent) != 0)
            bad++;   /* a clash, logged; the checks still run */
    }
    for (int i = 0; set && i < set->n; i++) {
        struct petrel_module *m = set->mods[i];
        if (m->c.check == NULL)
            continue;
        m->check_problems = 0;
        int rc = m->c.check(m);
        if (rc != 0 && m->check_problems == 0)
            msg_error("module %s: its configuration check failed (the module gave no reason)", m->name);
        if (rc != 0 || m->check_problems)
            bad++;
    }
    if (lent) {
        module_set_tables_gone(set, lent);
        tbl_registry_free(lent);
    }
    return bad ? -1 : 0;
}

/* ------------------------------------------------------------------ */
/* per-service values (master.cf -o)                                   */

/* The services whose sessions run module hooks: smtpd's (listeners and
 * postscreen's pass services) and pickup's (local submission). */
static int hook_service(const struct master_service *svc)
{
    return svc->role == ROLE_SMTPD || svc->role == ROLE_PICKUP;
}

size_t petrel_service_count(petrel_module *m)
{
    size_t n = 0;
    for (size_t i = 0; m && m->cfg && i < cfg_service_count(m->cfg); i++)
        if (hook_service(cfg_service(m->cfg, i)))
            n++;
    return n;
}

const char *petrel_service_at(petrel_module *m, size_t index)
{
    for (size_t i = 0; m && m->cfg && i < cfg_service_count(m->cfg); i++) {
        const struct master_service *svc = cfg_service(m->cfg, i);
        if (hook_service(svc) && index-- == 0)
            return svc->name;
    }
    return NULL;
}

const struct master_service *module_hook_service(const struct cfg *cfg, const char *name)
{
    for (size_t i = 0; cfg && name && i < cfg_service_count(cfg); i++) {
        const struct master_service *svc = cfg_service(cfg, i);
        if (hook_service(svc) && strcmp(svc->name, name) == 0)
            return svc;
    }
    return NULL;
}

/* The service's configuration when name is a core parameter or one the
 * module declared; NULL (with a warning) otherwise. An unknown service
 * gives main.cf's values. */
static const struct cfg *service_cfg(petrel_module *m, const char *service, const char *name, const char *fn)
{
    if (m == NULL || name == NULL || m->cfg == NULL)
        return NULL;
    const char *owner = cfg_owner(m->cfg, name);
    if (owner == NULL || (strcmp(owner, "core") != 0 && strcmp(owner, m->name) != 0)) {
        msg_warn("module %s: %s: \"%s\" is neither a core parameter nor the module's own", m->name, fn, name);
        return NULL;
    }
    const struct master_service *svc = module_hook_service(m->cfg, service);
    return svc && svc->cfg ? svc->cfg : m->cfg;
}

const char *petrel_service_config_string(petrel_module *m, const char *service, const char *name)
{
    const struct cfg *cfg = service_cfg(m, service, name, __func__);
    return cfg ? cfg_get(cfg, name) : NULL;
}

const char *const *petrel_service_config_list(petrel_module *m, const char *service, const char *name)
{
    const struct cfg *cfg = service_cfg(m, service, name, __func__);
    return cfg ? cfg_list(cfg, name) : NULL;
}

long long petrel_service_config_int(petrel_module *m, const char *service, const char *name)
{
    const struct cfg *cfg = service_cfg(m, service, name, __func__);
    return cfg ? cfg_int(cfg, name) : 0;
}

int petrel_service_config_bool(petrel_module *m, const char *service, const char *name)
{
    const struct cfg *cfg = service_cfg(m, service, name, __func__);
    return cfg ? cfg_bool(cfg, name) : 0;
}

void petrel_service_config_error(petrel_module *m, const char *service, const char *name, const char *fmt, ...)
{
    char text[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(text, sizeof(text), fmt, ap);
    va_end(ap);
    if (m == NULL)
        return;
    const struct master_service *svc = m->cfg ? module_hook_service(m->cfg, service) : NULL;
    if (svc == NULL || name == NULL) {
        petrel_config_error(m, name, "%s", text);
        return;
    }
    m->check_problems++;
    /* cfg_locate: the master.cf line of a -o, else main.cf's line. */
    char *line = xasprintf("%s: %s", name, text);
    char *located = cfg_locate(m->cfg, svc, line);
    msg_error("%s", located);
    free(located);
    free(line);
}
