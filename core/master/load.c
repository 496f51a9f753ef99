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
#include "config/classes.h"
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
    }
    if (qmgr)
        return;
    const char *confdir = cfg_confdir(cfg);
    msg_warn("%s/master.cf: no qmgr service: mail will be received and queued but NEVER delivered", confdir);
    msg_warn("%s/master.cf: add Postfix's queue manager line: "
             "qmgr      unix  n       -       n       300     1       qmgr", confdir);
}

/* Logs each line of text once: a main.cf mistake is the same for every
 * smtpd service that inherits it, so it is said once (seen keeps what was
 * said). Lines about a parameter that already failed to load are dropped:
 * the loader reported that parameter. Returns the number of lines logged. */
struct said {
    char **lines;          /* as logged */
    size_t n;
    char **why;            /* the problem without "parameter: " */
    size_t nwhy;
};

static int say_errors(const struct cfg *cfg, const struct master_service *svc, char *text, struct said *seen)
{
    int logged = 0;
    for (char *line = text, *next; line && *line; line = next) {
        next = strchr(line, '\n');
        if (next)
            *next++ = '\0';
        /* "/path:12: param: why" or "param: why": skip one that failed already. */
        const char *param = line;
        if (line[0] == '/' && strstr(param, ": "))
            param = strstr(param, ": ") + 2;
        if (strncmp(param, "service ", 8) == 0 && strstr(param, ": "))
            param = strstr(param, ": ") + 2;
        char *name = xstrndup(param, strcspn(param, ": "));
        const struct cfg *where = svc && svc->cfg ? svc->cfg : cfg;
        int failed = cfg_failed(where, name);
        /* A default that repeats a reported problem (local_recipient_maps
         * names $alias_maps' table) says nothing new. */
        const char *why = param + strlen(name);
        why += strncmp(why, ": ", 2) == 0 ? 2 : 0;
        int echo = 0;
        for (size_t k = 0; k < seen->nwhy && cfg_get(where, name) && cfg_is_default(where, name); k++)
            echo |= strcmp(seen->why[k], why) == 0;
        if (!echo && *why) {
            seen->why = xrealloc(seen->why, (seen->nwhy + 1) * sizeof(*seen->why));
            seen->why[seen->nwhy++] = xstrdup(why);
        }
        free(name);
        if (failed || echo)
            continue;
        char *located = line[0] == '/' ? xstrdup(line) : cfg_locate(cfg, svc, line);
        size_t k;
        for (k = 0; k < seen->n; k++)
            if (strcmp(seen->lines[k], located) == 0)
                break;
        if (k < seen->n) {
            free(located);
            continue;
        }
        msg_error("%s", located);
        seen->lines = xrealloc(seen->lines, (seen->n + 1) * sizeof(*seen->lines));
        seen->lines[seen->n++] = located;
        logged++;
    }
    return logged;
}

/* A Postfix service Petrel does not run, and why that is fine, said at
 * -n, start and reload; one that would listen on the network is a warning
 * (nothing will listen there). */
static void say_ignored_service(const struct master_service *svc)
{
    static const struct { const char *command, *why; } reasons[] = {
        { "cleanup", "Petrel cleans mail up inside smtpd and pickup, with this service's header and body checks" },
        { "trivial-rewrite", "Petrel rewrites and resolves addresses inside smtpd and the queue manager" },
        { "bounce", "the queue manager writes bounces, delay and success notices itself" },
        { "defer", "the queue manager writes bounces, delay and success notices itself" },
        { "trace", "the queue manager writes bounces, delay and success notices itself" },
        { "tlsmgr", "TLS session caches and randomness are kept by each process" },
        { "anvil", "connection counts and rates are in shared memory" },
        { "scache", "the SMTP client keeps its connections itself" },
        { "proxymap", "tables are read in-process (proxy: is accepted and ignored)" },
        { "proxywrite", "tables are read in-process (proxy: is accepted and ignored)" },
        { "showq", "petrelctl queue list reads the queue itself" },
        { "postlog", "Petrel writes maillog_file itself" },
        { "postlogd", "Petrel writes maillog_file itself" },
        { "verify", "address verification is not implemented (reject_unverified_* are refused)" },
        { "flush", "fast flush is not implemented (ETRN is answered 458)" },
        { "qmqpd", "the QMQP server is not implemented" },
    };
    const char *why = "not needed by Petrel";
    for (size_t i = 0; i < sizeof(reasons) / sizeof(reasons[0]); i++)
        if (strcmp(reasons[i].command, svc->command) == 0)
            why = reasons[i].why;
    if (svc->type == SVC_INET)
        msg_warn("%s, line %d: service %s (command %s): %s; ignored: NOTHING listens on %s", svc->file, svc->line,
                 svc->name, svc->command, why, svc->name);
    else
        msg_info("%s, line %d: service %s (command %s): %s%s", svc->file, svc->line, svc->name, svc->command, why,
                 svc->role == ROLE_CLEANUP ? "; no process of its own" : "; ignored");
}

/* Loads and fully checks a configuration: the modules it names (their
 * parameters must be declared first), main.cf and master.cf, what it sets
 * that Petrel does not implement (config/classes.h), the resolver, the
 * routing and rewriting maps, then every smtpd listener's settings
 * (restrictions, tables, TLS). Every problem is logged, each once, before
 * it returns -1: a bad map does not hide the next one (petreld -n). */
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
    out->cfg = cfg_load_all(out->schema, confdir, &nerrors);
    struct said seen = { NULL, 0, NULL, 0 };
    nerrors += cfg_check_compatibility_level(out->cfg);
    if (cfg_get_classes(out->cfg))
        nerrors += cfg_check_unimplemented(out->cfg, cfg_get_classes(out->cfg), petrel_bind_tables,
                                           petrel_bind_ntables);
    module_set_bind(out->modules, out->cfg);
    if (module_set_check(out->modules) != 0) {
        msg_error("%s/main.cf: a module found problems with its configuration (see above)", confdir);
        nerrors++;
    }
    if (!cfg_failed(out->cfg, "dns_resolver")) {
        /* dns_resolver must parse here, not in a worker that would die on it. */
        struct event_base *probe = event_base_new();
        char *error = NULL;
        struct dns_resolver *r = dns_resolver_create(probe, cfg_get(out->cfg, "dns_resolver"), &error);
        dns_resolver_free(r);
        event_base_free(probe);
        if (r == NULL) {
            char *line = xasprintf("dns_resolver: %s", error);
            nerrors += say_errors(out->cfg, NULL, line, &seen);
            free(line);
            free(error);
        }
    }
    {
        /* metrics_listen and metrics_allow parse here (binding happens in the master). */
        char error[600];
        if (master_http_check(out->cfg, error, sizeof(error)) != 0) {
            const char *param = strncmp(error, "metrics_allow", 13) == 0 ? "metrics_allow" : "metrics_listen";
            const char *file = NULL;
            int line = 0;
            cfg_origin(out->cfg, param, &file, &line);
            msg_error("%s:%d: %s", file ? file : "main.cf", line, error);
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
        module_set_tables_gone(out->modules, reg);
        tbl_registry_free(reg);
        if (r == NULL || !checks_ok)
            nerrors += say_errors(out->cfg, NULL, error, &seen);
        free(error);
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
            if (where == NULL)
                where = out->cfg;
            int failed = cfg_failed(where, param);   /* the loader said it already */
            if (cfg_get(where, param) != NULL)
                cfg_origin(where, param, &file, &line);
            free(param);
            if (!failed) {
                if (file && line > 0)
                    msg_error("%s:%d: %s", file, line, error);
                else
                    msg_error("%s/main.cf: %s", confdir, error);
                nerrors++;
            }
        }
        free(error);
    }
    master_warn_about_services(out->cfg);
    for (size_t i = 0; check_services && i < cfg_service_count(out->cfg); i++) {
        const struct master_service *svc = cfg_service(out->cfg, i);
        if (svc->role != ROLE_SMTPD && svc->role != ROLE_PICKUP && svc->role != ROLE_POSTSCREEN) {
            /* qmgr is a role of its own; smtp, lmtp, local, virtual, pipe,
             * error and discard are transports the queue manager runs.
             * pickup runs smtpd sessions, so its settings are checked below. */
            if (svc->role == ROLE_SPAWN) {
                char *error = NULL;
                if (master_spawn_check(svc, &error) != 0) {
                    msg_error("%s, line %d: service %s (command spawn): %s", svc->file, svc->line, svc->name, error);
                    nerrors++;
                }
                free(error);
            } else if (svc->role == ROLE_IGNORED || svc->role == ROLE_CLEANUP)
                say_ignored_service(svc);
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
            int said = say_errors(out->cfg, svc, error, &seen);
            /* Nothing new to say (every line repeats a reported problem):
             * the start still fails, and nerrors counts it once already. */
            nerrors += said;
            if (said == 0 && nerrors == 0)
                nerrors = 1;
        }
        free(error);
    }
    for (size_t k = 0; k < seen.n; k++)
        free(seen.lines[k]);
    free(seen.lines);
    for (size_t k = 0; k < seen.nwhy; k++)
        free(seen.why[k]);
    free(seen.why);
    if (nerrors) {
        msg_error("%s: %d configuration error%s", confdir, nerrors, nerrors == 1 ? "" : "s");
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
