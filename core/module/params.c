/*
 * Parameters as modules see them: their own (declared in the descriptor,
 * validated with main.cf by the configuration check).
 */
#include "config.h"

#include <string.h>

#include <petrel/plugin.h>
#include "config/cfg.h"
#include "lib/log.h"
#include "module/module.h"

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
