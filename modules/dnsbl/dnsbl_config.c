/*
 * The dnsbl module's settings: the policy of main.cf and of each master.cf
 * service (thresholds, default_rbl_reply, maps_rbl_reject_code and the
 * rbl_reply_maps tables, opened once per process), dnsbl_sites, and the
 * zones asked with the client's address at connect. A restriction's
 * compile checks them all, so that petreld -n reports what init would
 * refuse; init keeps them as the module's data.
 */
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <petrel/plugin.h>

#include "dnsbl_module.h"

/* Splits a table list ("texthash:/a, socketmap:inet:127.0.0.1:9:rbl") as
 * Postfix splits a maps parameter: on commas and white space. */
static void split_specs(const char *text, petrel_pool *pool, const char ***out, size_t *n)
{
    size_t cap = 0;
    *out = NULL;
    *n = 0;
    for (const char *p = text ? text : "";;) {
        p += strspn(p, " \t\r\n,");
        if (*p == '\0')
            return;
        size_t len = strcspn(p, " \t\r\n,");
        if (*n == cap) {
            cap = cap ? cap * 2 : 4;
            const char **bigger = petrel_pool_zalloc(pool, cap * sizeof(*bigger));
            if (*n)
                memcpy(bigger, *out, *n * sizeof(*bigger));
            *out = bigger;
        }
        (*out)[(*n)++] = petrel_pool_strndup(pool, p, len);
        p += len;
    }
}

/* The table spec opens once per process (init), shared by the services
 * that name it; NULL with *error. */
static petrel_table *open_reply_table(petrel_module *m, struct dnsbl_conf *conf, const char *spec, const char **error)
{
    for (size_t i = 0; i < conf->ntables; i++)
        if (strcmp(conf->tables[i].spec, spec) == 0)
            return conf->tables[i].table;
    petrel_table *t = petrel_table_open(m, spec, PETREL_TABLE_FOLD_CASE, error);
    if (t == NULL)
        return NULL;
    struct open_table *bigger = petrel_pool_zalloc(conf->pool, (conf->ntables + 1) * sizeof(*bigger));
    if (conf->ntables)
        memcpy(bigger, conf->tables, conf->ntables * sizeof(*bigger));
    bigger[conf->ntables].spec = petrel_pool_strdup(conf->pool, spec);
    bigger[conf->ntables].table = t;
    conf->tables = bigger;
    conf->ntables++;
    return t;
}

/* The policy as the service (NULL: main.cf) sets it, checked; with conf
 * (init), its rbl_reply_maps tables are opened. */
static const char *policy_settings(petrel_module *m, const char *service, petrel_pool *pool, struct dnsbl_conf *conf,
                                   struct dnsbl_policy *out)
{
#define GET_STR(name) (service ? petrel_service_config_string(m, service, name) : petrel_param_string(m, name))
#define GET_INT(name) (service ? petrel_service_config_int(m, service, name) : petrel_param_int(m, name))
    const char *maps = GET_STR("dnsbl_reply_maps");
    out->reply_maps = petrel_pool_strdup(pool, maps ? maps : "");
    split_specs(maps, pool, &out->reply_specs, &out->nreply_specs);
    if (conf && out->nreply_specs) {
        out->reply_tables = petrel_pool_zalloc(pool, out->nreply_specs * sizeof(*out->reply_tables));
        for (size_t i = 0; i < out->nreply_specs; i++) {
            const char *why = NULL;
            if ((out->reply_tables[i] = open_reply_table(m, conf, out->reply_specs[i], &why)) == NULL)
                return petrel_pool_printf(pool, "rbl_reply_maps: %s", why ? why : out->reply_specs[i]);
        }
    }
    const char *template_text = GET_STR("dnsbl_reply_template");
    const char *err = dnsbl_template_check(template_text ? template_text : "", pool);
    if (err)
        return petrel_pool_printf(pool, "default_rbl_reply: %s", err);
    out->service = service;
    out->reply_template = petrel_pool_strdup(pool, template_text ? template_text : "");
    out->reply_code = (int)GET_INT("dnsbl_reject_code");
    out->threshold = GET_INT("dnsbl_threshold");
    out->allow_threshold = GET_INT("dnsbl_allowlist_threshold");
#undef GET_STR
#undef GET_INT
    return NULL;
}

/* Settings every restriction's compile checks, so that petreld -n reports
 * them; with conf, main.cf's policy and each service's are kept. */
static const char *check_common(petrel_module *m, petrel_pool *pool, struct dnsbl_conf *conf)
{
    struct dnsbl_policy main_policy;
    memset(&main_policy, 0, sizeof(main_policy));
    const char *err = policy_settings(m, NULL, pool, conf, &main_policy);
    if (err)
        return err;
    size_t n = petrel_service_count(m);
    struct dnsbl_policy *policies = petrel_pool_zalloc(pool, (n ? n : 1) * sizeof(*policies));
    for (size_t i = 0; i < n; i++) {
        const char *service = petrel_service_at(m, i);
        if ((err = policy_settings(m, service, pool, conf, &policies[i])) != NULL)
            return petrel_pool_printf(pool, "master.cf service %s: %s", service, err);
    }
    if (conf) {
        conf->main_policy = main_policy;
        conf->policies = policies;
        conf->npolicies = n;
    }
    return NULL;
}

static const char *parse_sites(petrel_module *m, petrel_pool *pool, struct dnsbl_list **out, size_t *n)
{
    const char *text = petrel_param_string(m, "dnsbl_sites");
    *out = NULL;
    *n = 0;
    if (text == NULL)
        return NULL;
    size_t cap = 0;
    const char *p = text;
    for (;;) {
        while (*p == ' ' || *p == '\t' || *p == ',' || *p == '\n' || *p == '\r')
            p++;
        if (*p == '\0')
            break;
        size_t len = strcspn(p, " \t,\r\n");
        char *item = petrel_pool_strndup(pool, p, len);
        p += len;
        if (*n == cap) {
            cap = cap ? cap * 2 : 8;
            struct dnsbl_list *bigger = petrel_pool_zalloc(pool, cap * sizeof(*bigger));
            if (*n)
                memcpy(bigger, *out, *n * sizeof(*bigger));
            *out = bigger;
        }
        const char *err = dnsbl_list_parse(item, 1, &(*out)[*n], pool);
        if (err)
            return petrel_pool_printf(pool, "dnsbl_sites: %s", err);
        (*n)++;
    }
    return NULL;
}

static void register_client_zone(struct dnsbl_conf *conf, const char *zone)
{
    for (size_t i = 0; i < conf->nclient_zones; i++)
        if (strcasecmp(conf->client_zones[i], zone) == 0)
            return;
    if (conf->nclient_zones == conf->client_zones_cap) {
        size_t cap = conf->client_zones_cap ? conf->client_zones_cap * 2 : 8;
        const char **bigger = petrel_pool_zalloc(conf->pool, cap * sizeof(*bigger));
        if (conf->nclient_zones)
            memcpy(bigger, conf->client_zones, conf->nclient_zones * sizeof(*bigger));
        conf->client_zones = bigger;
        conf->client_zones_cap = cap;
    }
    conf->client_zones[conf->nclient_zones++] = petrel_pool_strdup(conf->pool, zone);
}

int dnsbl_compile_rule(petrel_module *m, enum rule_kind kind, const char *name, const char *const *args,
                       void **state, petrel_pool *pool, const char **error)
{
    const char *err = check_common(m, pool, NULL);
    if (err) {
        *error = err;
        return -1;
    }
    struct rule *r = petrel_pool_zalloc(pool, sizeof(*r));
    r->kind = kind;
    r->name = name;
    struct dnsbl_conf *conf = petrel_module_data(m);
    if (kind == DNSBL_SCORE) {
        struct dnsbl_list *sites;
        err = parse_sites(m, pool, &sites, &r->nsites);
        if (err == NULL && r->nsites == 0)
            err = "dnsbl_sites is empty: check_dnsbl_score has no list to ask";
        if (err) {
            *error = err;
            return -1;
        }
        r->sites = sites;
        for (size_t i = 0; conf && i < r->nsites; i++)
            register_client_zone(conf, sites[i].zone);
    } else {
        err = dnsbl_list_parse(args[0], 0, &r->list, pool);
        if (err) {
            *error = err;
            return -1;
        }
        if (conf && (kind == RBL_CLIENT || kind == DNSWL_CLIENT))
            register_client_zone(conf, r->list.zone);
    }
    *state = r;
    return 0;
}

/* petreld -n, the start and a reload: every table of rbl_reply_maps, as
 * main.cf and each service set it, must open (a compile checks the rest). */
int dnsbl_check_config(petrel_module *m)
{
    int bad = 0;
    petrel_pool *pool = petrel_pool_create(1024);
    size_t n = petrel_service_count(m);
    for (size_t i = 0; i <= n; i++) {
        const char *service = i < n ? petrel_service_at(m, i) : NULL;
        const char *maps = service ? petrel_service_config_string(m, service, "dnsbl_reply_maps")
                                   : petrel_param_string(m, "dnsbl_reply_maps");
        const char *main_maps = petrel_param_string(m, "dnsbl_reply_maps");
        if (service && strcmp(maps ? maps : "", main_maps ? main_maps : "") == 0)
            continue;   /* main.cf's, checked once */
        const char **specs;
        size_t nspecs;
        split_specs(maps, pool, &specs, &nspecs);
        for (size_t k = 0; k < nspecs; k++) {
            const char *why = NULL;
            if (petrel_table_check(m, specs[k], &why) == 0)
                continue;
            bad = 1;
            if (service)
                petrel_service_config_error(m, service, "rbl_reply_maps", "%s", why ? why : specs[k]);
            else
                petrel_config_error(m, "rbl_reply_maps", "%s", why ? why : specs[k]);
        }
    }
    petrel_pool_destroy(pool);
    return bad ? -1 : 0;
}

int dnsbl_init(petrel_module *m, const char **error)
{
    petrel_pool *pool = petrel_pool_create(4096);
    struct dnsbl_conf *conf = petrel_pool_zalloc(pool, sizeof(*conf));
    conf->pool = pool;
    const char *err = check_common(m, pool, conf);
    struct dnsbl_list *sites = NULL;
    if (err == NULL)
        err = parse_sites(m, pool, &sites, &conf->nsites);
    if (err) {
        *error = err;   /* pool text: the process refuses to start, the pool goes with it */
        return -1;
    }
    conf->sites = sites;
    for (size_t i = 0; i < conf->nsites; i++)
        register_client_zone(conf, sites[i].zone);
    long long t = petrel_param_int(m, "dnsbl_timeout");
    conf->timeout_ms = (unsigned)(t > 0 && t < 3600 ? t * 1000 : 10000);
    conf->cache = dnsbl_cache_new();
    petrel_module_set_data(m, conf);
    return 0;
}

void dnsbl_fini(petrel_module *m)
{
    struct dnsbl_conf *conf = petrel_module_data(m);
    if (conf) {
        dnsbl_cache_free(conf->cache);
        petrel_pool_destroy(conf->pool);
    }
    petrel_module_set_data(m, NULL);
}
