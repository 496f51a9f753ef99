/*
 * Copies of a generation: one per master.cf service (main.cf plus that
 * line's -o overrides, re-expanded and validated; the generation itself
 * when there are none) and the stress variant of a service (everything
 * evaluated again with stress=yes, as Postfix's master passes -o stress=yes
 * to processes it starts at a service's limit). A copy shares the
 * generation's pool and dies with it.
 */
#include "config.h"

#include <stdlib.h>
#include <string.h>

#include "config/config_impl.h"

/* ---- per-service copies ---- */

struct cfg *cfg_service_copy(struct cfg *gen, const char *service_name, const char *command,
                             const char *const *names, const char *const *values,
                             const char *file, int line)
{
    size_t extra = 0;
    for (size_t i = 0; names[i]; i++)
        extra++;
    struct cfg *cfg = petrel_pool_zalloc(gen->pool, sizeof(*cfg));
    *cfg = *gen;
    cfg->generation = gen;
    cfg->service_name = service_name;
    cfg->values = petrel_pool_alloc(gen->pool, (gen->nvalues + extra + 1) * sizeof(*cfg->values));
    memcpy(cfg->values, gen->values, gen->nvalues * sizeof(*cfg->values));
    cfg->nvalues = gen->nvalues;
    for (size_t i = 0; i < cfg->nvalues; i++) {
        struct cfg_value *v = &cfg->values[i];
        v->state = VAL_PENDING;
        v->value = NULL;
        v->list = NULL;
        v->number = 0;
        v->boolean = 0;
        v->failed = 0;
        /* The host name is the generation's; defaults derived from other values are recomputed. */
        if (v->compute && !v->file && strcmp(v->name, "myhostname") == 0)
            v->compute = NULL;
    }
    for (size_t i = 0; names[i]; i++) {
        if (!cfg_value_find(cfg, names[i])) {
            struct cfg_value *v = &cfg->values[cfg->nvalues++];
            memset(v, 0, sizeof(*v));
            v->name = petrel_pool_strdup(gen->pool, names[i]);
            v->param = cfg_schema_find(gen->schema, names[i]);
            qsort(cfg->values, cfg->nvalues, sizeof(*cfg->values), cfg_value_cmp);
        }
        struct cfg_value *v = cfg_value_find(cfg, names[i]);
        v->raw = petrel_pool_strdup(gen->pool, values[i]);
        v->file = file;
        v->line = line;
        v->override = 1;
    }
    struct cfg_value *sn = cfg_value_find(cfg, "service_name");
    if (sn && !sn->override)
        sn->raw = service_name;
    struct cfg_value *pn = cfg_value_find(cfg, "process_name");
    if (pn && !pn->override)
        pn->raw = command;
    for (size_t i = 0; i < cfg->nvalues; i++)
        cfg_value_expand(cfg, &cfg->values[i], 1);
    for (size_t i = 0; i < cfg->nvalues; i++) {
        struct cfg_value *v = &cfg->values[i];
        if (!v->override) {
            /* Inherited: report only if an override changed it (the generation reported the rest). */
            const struct cfg_value *g = cfg_value_find(gen, v->name);
            if (g && g->value && v->value && strcmp(g->value, v->value) == 0) {
                v->failed = g->failed;
                v->number = g->number;
                v->boolean = g->boolean;
                v->list = g->list;
                continue;
            }
        }
        cfg_value_validate(cfg, v);
    }
    return cfg;
}

/* ---- the stress variant ---- */

const struct cfg *cfg_stress_copy(struct cfg *base)
{
    struct cfg_value *flag = cfg_value_find(base, "stress");
    if (flag == NULL || !flag->referenced || (flag->value && strcmp(flag->value, "yes") == 0))
        return base;   /* nothing depends on $stress, or main.cf forces it already */
    struct cfg *gen = base->generation ? (struct cfg *)base->generation : base;
    struct cfg *cfg = petrel_pool_zalloc(gen->pool, sizeof(*cfg));
    *cfg = *base;
    cfg->generation = gen;
    cfg->values = petrel_pool_alloc(gen->pool, base->nvalues * sizeof(*cfg->values));
    memcpy(cfg->values, base->values, base->nvalues * sizeof(*cfg->values));
    for (size_t i = 0; i < cfg->nvalues; i++) {
        struct cfg_value *v = &cfg->values[i];
        v->state = VAL_PENDING;
        v->value = NULL;
        v->list = NULL;
        v->number = 0;
        v->boolean = 0;
        v->failed = 0;
        /* Quiet expansion: base reported its own problems already. */
        v->override = 0;
        if (v->compute && !v->file && strcmp(v->name, "myhostname") == 0)
            v->compute = NULL;
    }
    struct cfg_value *stress = cfg_value_find(cfg, "stress");
    stress->raw = "yes";
    stress->compute = NULL;
    for (size_t i = 0; i < cfg->nvalues; i++)
        cfg_value_expand(cfg, &cfg->values[i], 1);
    for (size_t i = 0; i < cfg->nvalues; i++) {
        struct cfg_value *v = &cfg->values[i];
        const struct cfg_value *b = &base->values[i];   /* same order: same names */
        if (b->value && v->value && strcmp(b->value, v->value) == 0) {
            v->failed = b->failed;
            v->number = b->number;
            v->boolean = b->boolean;
            v->list = b->list;
            continue;
        }
        if (v->failed && v->param) {
            cfg_error(cfg, cfg_value_file(cfg, v), v->line, v->name,
                      "cannot be expanded with stress=yes (the value a service under stress uses)");
            continue;
        }
        cfg_value_validate(cfg, v);
    }
    return cfg;
}

int cfg_same_except(const struct cfg *a, const struct cfg *b, const char *const *names)
{
    for (size_t i = 0; i < a->nvalues; i++) {
        const struct cfg_value *va = &a->values[i];
        const struct cfg_value *vb = cfg_value_find(b, va->name);
        const char *sa = va->value ? va->value : "", *sb = vb && vb->value ? vb->value : "";
        if (strcmp(sa, sb) == 0)
            continue;
        size_t k;
        for (k = 0; names[k]; k++)
            if (strcmp(names[k], va->name) == 0)
                break;
        if (names[k] == NULL)
            return 0;
    }
    return a->nvalues == b->nvalues;
}
