/*
 * Loading one configuration generation as the master does, for petreld,
 * its reloads, `petreld -n` and petrelctl: the modules main.cf names (their
 * parameters are declared before main.cf is parsed), main.cf and
 * master.cf, then everything that must fail here rather than in a running
 * role: the resolver spec, the routing and rewriting maps, and (with
 * check_services) every smtpd listener's settings. Every problem is logged
 * before the load fails.
 */
#include "config.h"

#include <stdlib.h>
#include <string.h>

#include <event2/event.h>

#include "config/cfg.h"
#include "lib/dns.h"
#include "lib/log.h"
#include "lib/xalloc.h"
#include "master/master.h"
#include "master/master_int.h"
#include "module/module.h"
#include "qmgr/qmgr.h"
#include "qmgr/route.h"
#include "smtpd/smtpd.h"
#include "tables/table.h"

/* What master.cf asks for that will not happen, said at -n, at start and at
 * reload. Without a queue manager mail is received, queued and never
 * delivered: that is almost always a master.cf copied from somewhere
 * incomplete, so it is said loudly. */
const struct master_service *master_pickup_service(const struct cfg *cfg)
{
    for (size_t i = 0; i < cfg_service_count(cfg); i++)
        if (cfg_service(cfg, i)->role == ROLE_PICKUP)
            return cfg_service(cfg, i);
    return NULL;
}

/* A pass service is reached only through a postscreen service that names it. */
static int pass_service_used(const struct cfg *cfg, const struct master_service *pass)
{
    for (size_t i = 0; i < cfg_service_count(cfg); i++) {
        const struct master_service *svc = cfg_service(cfg, i);
        const char *name = svc->role == ROLE_POSTSCREEN ? cfg_get(svc->cfg, "smtpd_service_name") : NULL;
        if (name && strcmp(name, pass->name) == 0)
            return 1;
    }
    return 0;
}

void master_warn_about_services(const struct cfg *cfg)
{
    int qmgr = 0;
    if (master_pickup_service(cfg) == NULL)
        msg_warn("%s/master.cf: no pickup service: mail submitted with petrel-sendmail will wait in "
                 "queue_directory/maildrop/ (add: pickup unix n - n 60 1 pickup)", cfg_confdir(cfg));
    for (size_t i = 0; i < cfg_service_count(cfg); i++) {
        const struct master_service *svc = cfg_service(cfg, i);
        if (svc->role == ROLE_QMGR)
            qmgr = 1;
        if (svc->chroot)
            msg_warn("%s, line %d: service %s: chroot is not supported; the service runs without it",
                     svc->file, svc->line, svc->name);
        if (svc->command && strcmp(svc->command, "spawn") == 0)
            msg_warn("%s, line %d: service %s (command spawn): Petrel does not run spawn(8) services: the "
                     "program it names is NOT started; run it yourself (e.g. from a systemd unit) and point "
                     "check_policy_service at its socket", svc->file, svc->line, svc->name);
    }
    if (qmgr)
        return;
    const char *confdir = cfg_confdir(cfg);
    msg_warn("%s/master.cf: no qmgr service: mail will be received and queued but NEVER delivered", confdir);
    msg_warn("%s/master.cf: add Postfix's queue manager line: "
             "qmgr      unix  n       -       n       300     1       qmgr", confdir);
}

/* Loads and fully checks a configuration: the modules it names (their
 * parameters must be declared first), main.cf and master.cf, then every
 * smtpd listener's settings (restrictions, tables, TLS). Returns -1 after
 * logging every problem. */
int master_load_config(const char *confdir, struct loaded_config *out, int check_services)
{
    memset(out, 0, sizeof(*out));
    out->schema = cfg_schema_new();
    out->modules = module_set_load(out->schema, confdir);
    if (out->modules == NULL) {
        msg_error("%s/main.cf: modules: cannot load the modules listed (see above)", confdir);
        master_unload_config(out);
        return -1;
    }
    int nerrors = 0;
    out->cfg = cfg_load(out->schema, confdir, &nerrors);
    if (out->cfg == NULL) {
        msg_error("%s/main.cf and master.cf: %d error%s", confdir, nerrors, nerrors == 1 ? "" : "s");
        master_unload_config(out);
        return -1;
    }
    module_set_bind(out->modules, out->cfg);
    if (module_set_check(out->modules) != 0) {
        msg_error("%s/main.cf: a module found problems with its configuration (see above)", confdir);
        master_unload_config(out);
        return -1;
    }
    {
        /* dns_resolver must parse here, not in a worker that would die on it. */
        struct event_base *probe = event_base_new();
        char *error = NULL;
        struct dns_resolver *r = dns_resolver_create(probe, cfg_get(out->cfg, "dns_resolver"), &error);
        dns_resolver_free(r);
        event_base_free(probe);
        if (r == NULL) {
            const char *file;
            int line;
            cfg_origin(out->cfg, "dns_resolver", &file, &line);
            msg_error("%s:%d: dns_resolver: %s", file ? file : "main.cf", line, error);
            free(error);
            master_unload_config(out);
            return -1;
        }
    }
    {
        /* The routing and rewriting maps open here or not at all: a worker
         * or queue manager must not be the first to find a bad map. This is
         * also where their warnings are given, once per start, reload or
         * petreld -n (the roles open them quietly). */
        struct tbl_registry *reg = tbl_registry_new();
        module_set_register_tables(out->modules, reg);
        char *error = NULL;
        struct router *r = router_create(out->cfg, reg, 0, &error);
        router_free(r);
        int checks_ok = r == NULL || qmgr_checks_validate(out->cfg, reg, &error) == 0;
        tbl_registry_free(reg);
        if (r == NULL || !checks_ok) {
            /* "param: why": point at the main.cf line that sets param. */
            const char *file = NULL;
            int line = 0;
            char *param = xstrndup(error, strcspn(error, ":"));
            if (cfg_get(out->cfg, param) != NULL)
                cfg_origin(out->cfg, param, &file, &line);
            free(param);
            if (file && line > 0)
                msg_error("%s:%d: %s", file, line, error);
            else if (error[0] == '/')
                msg_error("%s", error);   /* it names its master.cf line itself */
            else
                msg_error("%s/main.cf: %s", confdir, error);
            free(error);
            master_unload_config(out);
            return -1;
        }
    }
    {
        /* The SMTP and LMTP clients' settings (certificates, protocols,
         * bind addresses, security levels) fail here, not in a queue
         * manager that would die on them. */
        const struct cfg *where = NULL;
        char *error = NULL;
        if (qmgr_check_transports(out->cfg, &where, &error) != 0) {
            const char *file = NULL;
            int line = 0;
            char *param = xstrndup(error, strcspn(error, ":"));
            if (cfg_get(where, param) != NULL)
                cfg_origin(where, param, &file, &line);
            free(param);
            if (file && line > 0)
                msg_error("%s:%d: %s", file, line, error);
            else
                msg_error("%s/main.cf: %s", confdir, error);
            free(error);
            master_unload_config(out);
            return -1;
        }
    }
    master_warn_about_services(out->cfg);
    if (!check_services)
        return 0;
    int bad = 0;
    /* A main.cf mistake is the same for every smtpd service: say it once. */
    char **reported = NULL;
    size_t nreported = 0;
    for (size_t i = 0; i < cfg_service_count(out->cfg); i++) {
        const struct master_service *svc = cfg_service(out->cfg, i);
        if (svc->role != ROLE_SMTPD && svc->role != ROLE_PICKUP && svc->role != ROLE_POSTSCREEN) {
            /* qmgr is a role of its own; smtp, lmtp, local, virtual, pipe,
             * error and discard are transports the queue manager runs.
             * pickup runs smtpd sessions, so its settings are checked below. */
            if ((svc->role == ROLE_IGNORED && strcmp(svc->command, "spawn") != 0) || svc->role == ROLE_CLEANUP)
                msg_info("%s, line %d: service %s (command %s): %s", svc->file, svc->line, svc->name,
                         svc->command, svc->role == ROLE_IGNORED ? "not needed by Petrel; ignored"
                                                                 : "this role is not implemented yet; ignored");
            else if (svc->role == ROLE_INSIDE)
                msg_info("%s, line %d: service %s (command %s): done inside the smtpd workers (postscreen); "
                         "no process of its own", svc->file, svc->line, svc->name, svc->command);
            continue;
        }
        if (svc->role == ROLE_SMTPD && svc->type == SVC_PASS && !pass_service_used(out->cfg, svc))
            msg_warn("%s, line %d: service %s: a pass service that no postscreen service names in "
                     "smtpd_service_name: it receives no clients", svc->file, svc->line, svc->name);
        char *error = NULL;
        if (smtpd_validate_service(out->cfg, svc, out->modules, &error) != 0) {
            int seen = 0;
            for (size_t k = 0; k < nreported; k++)
                seen |= strcmp(reported[k], error) == 0;
            if (!seen) {
                msg_error("%s", error);
                reported = xrealloc(reported, (nreported + 1) * sizeof(*reported));
                reported[nreported++] = error;
            } else {
                free(error);
            }
            bad++;
        }
    }
    for (size_t k = 0; k < nreported; k++)
        free(reported[k]);
    free(reported);
    if (bad) {
        master_unload_config(out);
        return -1;
    }
    return 0;
}

void master_unload_config(struct loaded_config *lc)
{
    cfg_free(lc->cfg);
    cfg_schema_free(lc->schema);
    module_set_free(lc->modules);
    memset(lc, 0, sizeof(*lc));
}


int master_check_config(const struct master_options *opts)
{
    log_init("petrel", "petreld");
    struct loaded_config conf;
    if (master_load_config(opts->confdir, &conf, 1) != 0)
        return 1;
    master_unload_config(&conf);
    return 0;
}
