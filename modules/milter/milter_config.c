/*
 * modules/milter: the configuration. Postfix's parameters (smtpd_milters,
 * non_smtpd_milters, milter_*, the per-milter "{ address, name=value }"
 * form), read for main.cf and for each master.cf service, make one profile
 * per distinct set of values: checked in check() (petreld -n, start,
 * reload), built in init (host names are resolved there, never on the
 * loop), found by a session's service at connect (milter_profile_of).
 * Moved out of milter_module.c, whose opening comment describes the design.
 */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <petrel/plugin.h>

#include "milter_conn.h"
#include "milter_module_int.h"
#include "buffer_limit.h"

/* "30s", "5m", "1h", "2d", "1w" or a bare number of seconds -> ms. */
static int parse_time_ms(const char *text, unsigned *ms)
{
    char *end;
    if (!isdigit((unsigned char)*text))
        return -1;
    unsigned long long v = strtoull(text, &end, 10);
    unsigned long long unit = 1;
    if (*end) {
        if (end[1] != '\0')
            return -1;
        switch (tolower((unsigned char)*end)) {
        case 's': unit = 1; break;
        case 'm': unit = 60; break;
        case 'h': unit = 3600; break;
        case 'd': unit = 86400; break;
        case 'w': unit = 604800; break;
        default: return -1;
        }
    }
    if (v == 0 || v * unit > 4000000ull)
        return -1;
    *ms = (unsigned)(v * unit * 1000ull);
    return 0;
}

/* Values as service sees them (master.cf -o), or main.cf's for NULL. */
static const char *value_string(petrel_module *m, const char *service, const char *name)
{
    return service ? petrel_service_config_string(m, service, name) : petrel_config_string(m, name);
}

static const char *const *value_list(petrel_module *m, const char *service, const char *name)
{
    return service ? petrel_service_config_list(m, service, name) : petrel_config_list(m, name);
}

static long long value_int(petrel_module *m, const char *service, const char *name)
{
    return service ? petrel_service_config_int(m, service, name) : petrel_config_int(m, name);
}

/* The list parameter a service's sessions use: local mail from
 * petrel-sendmail comes through the pickup service. */
static const char *list_param(const char *service)
{
    return service && strcmp(service, "pickup") == 0 ? "non_smtpd_milters" : "smtpd_milters";
}

/* The parameters besides the list that make up a profile. */
static const char *const profile_params[] = {
    "milter_protocol", "milter_default_action", "milter_connect_timeout", "milter_command_timeout",
    "milter_content_timeout", "message_size_limit", "myhostname", "milter_macro_daemon_name", "milter_macro_v",
    "milter_macro_defaults", "smtpd_milter_maps", NULL
};

/* Every value a profile of param for service is built from, one a line:
 * equal keys give equal profiles. malloc'd; NULL when out of memory. */
static char *profile_key(petrel_module *m, const char *service, const char *param)
{
    size_t len = strlen(param) + 2, cap = 0;
    const char *values[1 + sizeof profile_params / sizeof *profile_params + MILTER_MACRO_STAGES];
    size_t n = 0;
    values[n++] = value_string(m, service, param);
    for (const char *const *p = profile_params; *p; p++)
        values[n++] = value_string(m, service, *p);
    for (int i = 0; i < MILTER_MACRO_STAGES; i++)
        values[n++] = value_string(m, service, milter_macro_params[i].parameter);
    for (size_t i = 0; i < n; i++)
        cap += strlen(values[i] ? values[i] : "") + 1;
    char *key = malloc(len + cap + 1);
    if (key == NULL)
        return NULL;
    size_t o = (size_t)snprintf(key, len + 1, "%s\n", param);
    for (size_t i = 0; i < n; i++)
        o += (size_t)snprintf(key + o, len + cap + 1 - o, "%s\n", values[i] ? values[i] : "");
    return key;
}

/* The settings shared by every milter of a list, as service sees them. */
void milter_base_config(petrel_module *m, const char *service, milter_config *cfg)
{
    memset(cfg, 0, sizeof *cfg);
    cfg->unix_base = petrel_config_string(m, "queue_directory");
    cfg->offer_rcpt_rejected = 1;   /* the rcpt_rejected hook reports them */
    cfg->protocol = value_string(m, service, "milter_protocol");
    cfg->default_action = value_string(m, service, "milter_default_action");
    cfg->connect_timeout_ms = (unsigned)value_int(m, service, "milter_connect_timeout") * 1000u;
    cfg->command_timeout_ms = (unsigned)value_int(m, service, "milter_command_timeout") * 1000u;
    cfg->content_timeout_ms = (unsigned)value_int(m, service, "milter_content_timeout") * 1000u;
    for (int i = 0; i < MILTER_MACRO_STAGES; i++)
        cfg->macros[i] = value_string(m, service, milter_macro_params[i].parameter);
    long long limit = value_int(m, service, "message_size_limit");
    /* A replacement body may be somewhat larger than what we accepted;
     * beyond twice the limit (or 1 GiB without one) it is refused. */
    cfg->max_body = limit > 0 ? (size_t)limit * 2 : (size_t)1 << 30;
}

/* One item of a milter list: "inet:host:port", or "{ address, name=value, ... }".
 * Fills cfg (names point into buf). Returns 0, or -1 with err. */
int milter_parse_item(const char *item, char *buf, size_t buflen, milter_config *cfg, char *err, size_t errlen)
{
    snprintf(buf, buflen, "%s", item);
    char *p = buf;
    if (*p == '{') {
        size_t len = strlen(p);
        if (len < 2 || p[len - 1] != '}') {
            snprintf(err, errlen, "\"%s\": missing \"}\"", item);
            return -1;
        }
        p[len - 1] = '\0';
        p++;
    }
    char *save = NULL;
    const char *name = strtok_r(p, ", \t\r\n", &save);
    if (name == NULL) {
        snprintf(err, errlen, "\"%s\": empty milter definition", item);
        return -1;
    }
    cfg->name = name;
    for (char *word; (word = strtok_r(NULL, ", \t\r\n", &save)) != NULL;) {
        char *eq = strchr(word, '=');
        if (eq == NULL) {
            snprintf(err, errlen, "\"%s\": \"%s\" is not name=value", item, word);
            return -1;
        }
        *eq = '\0';
        const char *value = eq + 1;
        unsigned *ms = NULL;
        if (strcmp(word, "connect_timeout") == 0)
            ms = &cfg->connect_timeout_ms;
        else if (strcmp(word, "command_timeout") == 0)
            ms = &cfg->command_timeout_ms;
        else if (strcmp(word, "content_timeout") == 0)
            ms = &cfg->content_timeout_ms;
        else if (strcmp(word, "default_action") == 0)
            cfg->default_action = value;
        else if (strcmp(word, "protocol") == 0)
            cfg->protocol = value;
        else {
            snprintf(err, errlen, "\"%s\": unknown setting \"%s\" (connect_timeout, command_timeout, "
                     "content_timeout, default_action or protocol)", item, word);
            return -1;
        }
        if (ms && parse_time_ms(value, ms) < 0) {
            snprintf(err, errlen, "\"%s\": %s: bad time \"%s\" (a number with an optional unit s, m, h, d or w)",
                     item, word, value);
            return -1;
        }
    }
    return 0;
}

/* Reports a problem with service's value of param (main.cf's for NULL). */
#define report(m, service, param, ...) \
    ((service) ? petrel_service_config_error((m), (service), (param), __VA_ARGS__) \
               : petrel_config_error((m), (param), __VA_ARGS__))

/* Builds (out != NULL) or only checks the list param as service sees it.
 * Problems are reported where the value is set. Returns 0 or -1. */
static int build_list(petrel_module *m, const char *service, const char *param, milter_list *out)
{
    const char *const *items = service ? petrel_service_config_list(m, service, param)
                                       : petrel_config_list(m, param);
    size_t count = 0;
    while (items && items[count])
        count++;
    if (out) {
        out->items = calloc(count ? count : 1, sizeof *out->items);
        out->n = 0;
        if (out->items == NULL)
            return -1;
    }
    int rc = 0;
    for (size_t i = 0; i < count; i++) {
        milter_config cfg;
        milter_base_config(m, service, &cfg);
        char buf[1024], err[512];
        if (milter_parse_item(items[i], buf, sizeof buf, &cfg, err, sizeof err) < 0) {
            report(m, service, param, "%s", err);
            rc = -1;
            continue;
        }
        milter_settings *s = milter_settings_create(&cfg, err, sizeof err);
        if (s == NULL) {
            report(m, service, param, "%s: %s", cfg.name, err);
            rc = -1;
            continue;
        }
        if (out)
            out->items[out->n++] = s;
        else
            milter_settings_free(s);
    }
    return rc;
}

static char *trimmed(const char *start, size_t len)
{
    while (len && isspace((unsigned char)*start))
        start++, len--;
    while (len && isspace((unsigned char)start[len - 1]))
        len--;
    return strndup(start, len);
}

static void free_defaults(profile *p)
{
    for (size_t i = 0; i < p->ndefaults; i++) {
        free(p->default_names[i]);
        free(p->default_values[i]);
    }
    free(p->default_names);
    free(p->default_values);
    p->default_names = p->default_values = NULL;
    p->ndefaults = 0;
}

/* milter_macro_defaults as service sees it, Postfix's grammar: items
 * name=value, {name}=value or { name = value } (white space around the
 * "=" and inside the braces ignored); a name gets its braces ("{name}").
 * Into p when it is not NULL; problems reported when loud is set (a
 * malformed item stops the start, as in Postfix; a repeated name is a
 * warning, the first value counts). Returns 0, or -1. */
static int parse_defaults(petrel_module *m, const char *service, profile *p, int loud)
{
    const char *const *items = service ? petrel_service_config_list(m, service, "milter_macro_defaults")
                                       : petrel_config_list(m, "milter_macro_defaults");
    const char *whole = value_string(m, service, "milter_macro_defaults");
    size_t count = 0;
    while (items && items[count])
        count++;
    char **names = calloc(count + 1, sizeof *names), **values = calloc(count + 1, sizeof *values);
    if (names == NULL || values == NULL) {
        free(names);
        free(values);
        return -1;
    }
    size_t n = 0;
    int rc = 0;
    for (size_t i = 0; i < count; i++) {
        const char *item = items[i], *name_end = item;
        size_t len = strlen(item);
        /* "{ name = value }": the braces go, unless they enclose the name only */
        if (item[0] == '{') {
            const char *close = NULL;
            int depth = 0;
            for (const char *q = item; *q && close == NULL; q++) {
                depth += *q == '{';
                if (*q == '}' && --depth == 0)
                    close = q;
            }
            if (close == NULL) {
                if (loud)
                    report(m, service, "milter_macro_defaults", "malformed default macro entry: missing '}' "
                           "in \"%s\"", whole);
                rc = -1;
                continue;
            }
            /* The core's list splitter already took the braces off a
             * "{ name = value }" group, so the only white space an item
             * has comes from such a group: "{name} = value" is fine. */
            const char *after = close + 1;
            while (isspace((unsigned char)*after))
                after++;
            if (close[1] == '\0') {
                item++;
                len -= 2;
                name_end = item;
            } else if (*after != '=') {
                if (loud)
                    report(m, service, "milter_macro_defaults", "malformed default macro entry: syntax "
                           "error after '}' in \"%s\"", whole);
                rc = -1;
                continue;
            } else {
                name_end = close + 1;
            }
        }
        const char *eq = memchr(name_end, '=', len - (size_t)(name_end - item));
        char *name = eq ? trimmed(item, (size_t)(eq - item)) : NULL;
        char *value = eq ? trimmed(eq + 1, len - (size_t)(eq - item) - 1) : NULL;
        if (eq == NULL || name == NULL || value == NULL || name[0] == '\0') {
            if (loud)
                report(m, service, "milter_macro_defaults", "malformed default macro entry: %s in \"%s\"",
                       eq == NULL ? "missing '=' after attribute name" : "missing attribute name", whole);
            free(name);
            free(value);
            rc = -1;
            continue;
        }
        if (name[0] != '{') {
            size_t nl = strlen(name) + 3;
            char *braced = malloc(nl);
            if (braced)
                snprintf(braced, nl, "{%s}", name);
            free(name);
            name = braced;
        }
        int dup = 0;
        for (size_t j = 0; name && j < n; j++)
            dup |= strcmp(names[j], name) == 0;
        if (name == NULL || dup) {
            if (dup && loud)
                petrel_module_log(m, PETREL_LOG_WARNING, "%s%smilter_macro_defaults: ignoring multiple default "
                                  "macro entries for %s in \"%s\"", service ? "service " : "",
                                  service ? service : "", name, whole);
            free(name);
            free(value);
            continue;
        }
        names[n] = name;
        values[n++] = value;
    }
    if (p && rc == 0) {
        p->default_names = names;
        p->default_values = values;
        p->ndefaults = n;
        return 0;
    }
    for (size_t i = 0; i < n; i++) {
        free(names[i]);
        free(values[i]);
    }
    free(names);
    free(values);
    return rc;
}

void milter_list_free(milter_list *l)
{
    for (size_t i = 0; i < l->n; i++)
        milter_settings_free(l->items[i]);
    free(l->items);
    free(l->breakers);
    l->items = NULL;
    l->breakers = NULL;
    l->n = 0;
}

/* Has a profile with this key been made (or checked) already? */
static int key_seen(char **keys, size_t n, const char *key)
{
    for (size_t i = 0; i < n; i++)
        if (strcmp(keys[i], key) == 0)
            return 1;
    return 0;
}

/* Checks main.cf's two lists, then each service's list where its values
 * differ (a master.cf -o), each distinct set of values once. */
int milter_check(petrel_module *m)
{
    buffer_limit_warn_unused(m, "milter_buffer_limit");
    int rc = 0;
    size_t nservices = petrel_service_count(m), nkeys = 0;
    char **keys = calloc(nservices + 2, sizeof *keys);
    const char **checked_defaults = calloc(nservices + 2, sizeof *checked_defaults);
    size_t ndefaults = 0;
    if (keys == NULL || checked_defaults == NULL) {
        free(keys);
        free(checked_defaults);
        return -1;
    }
    for (size_t i = 0; i < nservices + 2; i++) {
        const char *service = i < 2 ? NULL : petrel_service_at(m, i - 2);
        const char *param = i == 0 ? "smtpd_milters" : i == 1 ? "non_smtpd_milters" : list_param(service);
        char *key = profile_key(m, service, param);
        if (key == NULL) {
            rc = -1;
            break;
        }
        if (key_seen(keys, nkeys, key)) {
            free(key);
            continue;
        }
        keys[nkeys++] = key;
        if (build_list(m, service, param, NULL) < 0)
            rc = -1;
        /* each distinct value once (main.cf's is in both of its lists' keys) */
        const char *defaults = value_string(m, service, "milter_macro_defaults");
        int checked = 0;
        for (size_t j = 0; j < ndefaults && !checked; j++)
            checked = strcmp(checked_defaults[j], defaults ? defaults : "") == 0;
        if (!checked) {
            checked_defaults[ndefaults++] = defaults ? defaults : "";
            if (parse_defaults(m, service, NULL, 1) < 0)
                rc = -1;
        }
        const char *const *maps = value_list(m, service, "smtpd_milter_maps");
        for (size_t j = 0; strcmp(param, "smtpd_milters") == 0 && maps && maps[j]; j++) {
            const char *why = NULL;
            if (petrel_table_check(m, maps[j], &why) < 0) {
                report(m, service, "smtpd_milter_maps", "%s", why ? why : "cannot open");
                rc = -1;
            }
        }
    }
    for (size_t i = 0; i < nkeys; i++)
        free(keys[i]);
    free(keys);
    free(checked_defaults);
    return rc;
}

static void profile_free(profile *p)
{
    if (p == NULL)
        return;
    milter_list_free(&p->list);
    free(p->key);
    free(p->myhostname);
    free(p->daemon_name);
    free(p->macro_v);
    free(p->service);
    free(p->milter_maps);   /* the tables close with the module */
    free_defaults(p);
    free(p);
}

static void conf_free(module_conf *c)
{
    if (c == NULL)
        return;
    for (size_t i = 0; i < c->nprofiles; i++)
        profile_free(c->profiles[i]);
    free(c->profiles);
    for (size_t i = 0; i < c->nservices; i++)
        free(c->services[i]);
    free(c->services);
    free(c->service_profiles);
    milter_maps_free(c);
    for (size_t i = 0; i < c->nbreakers; i++) {
        free(c->breakers[i]->name);
        free(c->breakers[i]);
    }
    free(c->breakers);
    free(c);
}

static char *dup_or_empty(const char *s)
{
    return strdup(s ? s : "");
}

/* The profile for param as service sees it: an existing one with the
 * same values, or a new one. NULL (with *error) on failure. */
static profile *profile_for(petrel_module *m, module_conf *c, const char *service, const char *param,
                            const char **error)
{
    char *key = profile_key(m, service, param);
    if (key == NULL) {
        *error = "out of memory";
        return NULL;
    }
    for (size_t i = 0; i < c->nprofiles; i++)
        if (strcmp(c->profiles[i]->key, key) == 0) {
            free(key);
            return c->profiles[i];
        }
    profile *p = calloc(1, sizeof *p);
    profile **grown = realloc(c->profiles, (c->nprofiles + 1) * sizeof *grown);
    if (p == NULL || grown == NULL) {
        free(p);
        free(key);
        *error = "out of memory";
        return NULL;
    }
    c->profiles = grown;
    c->profiles[c->nprofiles++] = p;
    p->key = key;
    if (build_list(m, service, param, &p->list) < 0) {
        *error = "bad milter configuration (see the lines above)";
        return NULL;
    }
    p->list.breakers = calloc(p->list.n ? p->list.n : 1, sizeof *p->list.breakers);
    if (p->list.breakers == NULL) {
        *error = "out of memory";
        return NULL;
    }
    for (size_t i = 0; i < p->list.n; i++)
        if ((p->list.breakers[i] = milter_breaker_for(c, milter_settings_name(p->list.items[i]))) == NULL) {
            *error = "out of memory";
            return NULL;
        }
    p->myhostname = dup_or_empty(value_string(m, service, "myhostname"));
    p->daemon_name = dup_or_empty(value_string(m, service, "milter_macro_daemon_name"));
    p->macro_v = dup_or_empty(value_string(m, service, "milter_macro_v"));
    if (!p->myhostname || !p->daemon_name || !p->macro_v) {
        *error = "out of memory";
        return NULL;
    }
    if (parse_defaults(m, service, p, 0) < 0) {
        *error = "bad milter_macro_defaults";
        return NULL;
    }
    p->smtpd = strcmp(param, "smtpd_milters") == 0;
    if (service && (p->service = strdup(service)) == NULL) {
        *error = "out of memory";
        return NULL;
    }
    const char *const *maps = value_list(m, service, "smtpd_milter_maps");
    size_t nmaps = 0;
    while (p->smtpd && maps && maps[nmaps])
        nmaps++;
    if (nmaps) {
        if ((p->milter_maps = calloc(nmaps, sizeof *p->milter_maps)) == NULL) {
            *error = "out of memory";
            return NULL;
        }
        for (; p->nmilter_maps < nmaps; p->nmilter_maps++)
            if ((p->milter_maps[p->nmilter_maps] = petrel_table_open(m, maps[p->nmilter_maps],
                                                                     PETREL_TABLE_FOLD_CASE, error)) == NULL)
                return NULL;
    }
    return p;
}

int milter_init(petrel_module *m, const char **error)
{
    module_conf *c = calloc(1, sizeof *c);
    if (c == NULL) {
        *error = "out of memory";
        return -1;
    }
    long long failures = petrel_param_int(m, "milter_circuit_breaker_failures");
    long long backoff = petrel_param_int(m, "milter_circuit_breaker_backoff");
    c->breaker_failures = failures > 0 ? (unsigned)failures : 0;
    c->breaker_backoff_ms = (unsigned)(backoff > 0 ? backoff : 30) * 1000u;
    size_t nservices = petrel_service_count(m);
    c->services = calloc(nservices + 1, sizeof *c->services);
    c->service_profiles = calloc(nservices + 1, sizeof *c->service_profiles);
    if (c->services == NULL || c->service_profiles == NULL) {
        conf_free(c);
        *error = "out of memory";
        return -1;
    }
    if ((c->main_smtpd = profile_for(m, c, NULL, "smtpd_milters", error)) == NULL ||
        (c->main_non_smtpd = profile_for(m, c, NULL, "non_smtpd_milters", error)) == NULL) {
        conf_free(c);
        return -1;
    }
    for (size_t i = 0; i < nservices; i++) {
        const char *service = petrel_service_at(m, i);
        profile *p = profile_for(m, c, service, list_param(service), error);
        if (p == NULL) {
            conf_free(c);
            return -1;
        }
        if ((c->services[c->nservices] = strdup(service)) == NULL) {
            conf_free(c);
            *error = "out of memory";
            return -1;
        }
        c->service_profiles[c->nservices++] = p;
    }
    petrel_module_set_data(m, c);
    return 0;
}

/* The profile a session of service uses. */
const profile *milter_profile_of(const module_conf *c, const char *service)
{
    for (size_t i = 0; service && i < c->nservices; i++)
        if (strcmp(c->services[i], service) == 0)
            return c->service_profiles[i];
    return service && strcmp(service, "pickup") == 0 ? c->main_non_smtpd : c->main_smtpd;
}

void milter_fini(petrel_module *m)
{
    conf_free(petrel_module_data(m));
    petrel_module_set_data(m, NULL);
}
