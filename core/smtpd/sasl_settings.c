/*
 * The SASL parameters of an smtpd service (smtpd_sasl_auth_enable and the
 * rest, doc/modules/sasl.md): which back-end smtpd_sasl_type names (an ABI
 * 1.1 petrel_sasl_server first, else a 1.0 petrel_sasl_backend), the
 * security options and smtpd_sasl_mechanism_filter. Read once per
 * service's settings; the plain values are bound by settings.c's table.
 */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "config/cfg.h"
#include "mail/sasl_options.h"
#include "module/module.h"
#include "smtpd/smtpd_int.h"

/* smtpd_sasl_mechanism_filter: Postfix matches it as a string list with
 * table lookups; Petrel takes names, !names and static:all / static:rest
 * (Postfix's default is "!external, static:rest") and refuses the other
 * table types by name rather than ignore them. */
static int compile_mech_filter(struct smtpd_settings *set, const struct cfg *cfg, char **error)
{
    const char *const *items = cfg_list(cfg, "smtpd_sasl_mechanism_filter");
    size_t n = 0;
    while (items[n])
        n++;
    set->sasl_mech_filter = petrel_pool_zalloc(set->pool, (n + 1) * sizeof(char *));
    for (size_t i = 0; i < n; i++) {
        const char *it = items[i];
        const char *word = it[0] == '!' ? it + 1 : it;
        if (strchr(word, ':') && strcasecmp(word, "static:all") != 0 && strcasecmp(word, "static:rest") != 0) {
            if (asprintf(error, "smtpd_sasl_mechanism_filter: \"%s\": only mechanism names, !names and "
                         "static:all are supported here", it) < 0)
                *error = NULL;
            return -1;
        }
        set->sasl_mech_filter[i] = it;
    }
    return 0;
}

int smtpd_sasl_settings(struct smtpd_settings *set, struct module_set *modules, const struct cfg *cfg,
                        int checking, char **error)
{
    const char *bad = NULL;
    /* The plain values are bound by settings.c's table (smtpd_service_bind_table). */
    if (!set->sasl_auth_enable)
        return 0;
    const char *type = set->sasl_type;
    set->sasl_server = module_set_find_sasl_server(modules, type, &set->sasl_module);
    if (set->sasl_server == NULL)
        set->sasl = module_set_find_sasl(modules, type, &set->sasl_module);
    if (set->sasl == NULL && set->sasl_server == NULL) {
        if (asprintf(error, "smtpd_sasl_type: no loaded module provides the SASL back-end \"%s\" "
                     "(load the module that does in `modules`, e.g. modules = sasl)", type) < 0)
            *error = NULL;
        return -1;
    }
    if (sasl_options_parse(cfg_get(cfg, "smtpd_sasl_security_options"), &set->sasl_security, &bad,
                                  set->pool) != 0 ||
        sasl_options_parse(cfg_get(cfg, "smtpd_sasl_tls_security_options"), &set->sasl_tls_security,
                                  &bad, set->pool) != 0) {
        if (asprintf(error, "smtpd_sasl_security_options: unknown option \"%s\" (use noplaintext, noactive, "
                     "nodictionary, noanonymous, forward_secrecy or mutual_auth)", bad) < 0)
            *error = NULL;
        return -1;
    }
    if (compile_mech_filter(set, cfg, error) != 0)
        return -1;
    /* The back-end's own look at smtpd_sasl_path (a password table that
     * is missing), where the configuration is checked: a worker that
     * restarts later must not die of a file that went away meanwhile
     * (it would take every other service of the worker with it). */
    if (checking && set->sasl_server && set->sasl_server->check_path) {
        const char *why = NULL;
        if (set->sasl_server->check_path(set->sasl_module, set->sasl_path ? set->sasl_path : "", set->pool, &why) !=
            0) {
            if (asprintf(error, "smtpd_sasl_path: %s", why ? why : "refused by the SASL back-end") < 0)
                *error = NULL;
            return -1;
        }
    }
    return 0;
}

