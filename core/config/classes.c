/*
 * The parameter classification (see classes.h): parsing parameters.txt,
 * which the build embeds as cfg_parameters_text, and the check of a loaded
 * configuration against it.
 *
 * The data is parsed again for each configuration load (about a thousand
 * short lines, well under a millisecond), so that nothing of it is global
 * state: each load owns its copy, as it owns its schema.
 */
#include "config.h"

#include <ctype.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "config/bind.h"
#include "config/classes.h"
#include "config/config_impl.h"
#include "lib/xalloc.h"

extern const char cfg_parameters_text[];   /* parameters_data.c, made from parameters.txt */

struct cfg_classes {
    petrel_pool *pool;
    struct cfg_class *items;       /* sorted by name */
    size_t n;
};

static int class_cmp(const void *a, const void *b)
{
    return strcmp(((const struct cfg_class *)a)->name, ((const struct cfg_class *)b)->name);
}

/* One white-space separated token of line at *p; a token may contain a
 * "quoted part" with spaces (ok="a, b"). Returns a pool copy without the
 * quotes, or NULL at the end of the line. */
static char *next_token(petrel_pool *pool, const char **p)
{
    const char *s = *p;
    while (*s == ' ' || *s == '\t')
        s++;
    if (*s == '\0')
        return NULL;
    struct buf b = BUF_INIT;
    buf_append(&b, "", 0);
    int quoted = 0;
    for (; *s && (quoted || (*s != ' ' && *s != '\t')); s++) {
        if (*s == '"')
            quoted = !quoted;
        else
            buf_putc(&b, *s);
    }
    *p = s;
    char *token = petrel_pool_strdup(pool, b.data);
    buf_free(&b);
    return token;
}

static const char *const *pool_strv(petrel_pool *pool, const char **items, size_t n)
{
    const char **v = petrel_pool_alloc(pool, (n + 1) * sizeof(*v));
    if (n > 0)
        memcpy(v, items, n * sizeof(*v));   /* items is NULL when there are none */
    v[n] = NULL;
    return v;
}

__attribute__((format(printf, 3, 4)))
static struct cfg_classes *parse_failed(struct cfg_classes *c, char **error, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    if (vasprintf(error, fmt, ap) < 0)
        *error = NULL;
    va_end(ap);
    cfg_classes_free(c);
    return NULL;
}

struct cfg_classes *cfg_classes_parse(const char *text, char **error)
{
    struct cfg_classes *c = xcalloc(1, sizeof(*c));
    c->pool = petrel_pool_create(65536);
    size_t cap = 0;
    int lineno = 0;
    for (const char *line = text; *line;) {
        const char *end = strchr(line, '\n');
        size_t len = end ? (size_t)(end - line) : strlen(line);
        char *copy = petrel_pool_strndup(c->pool, line, len);
        line += len + (end != NULL);
        lineno++;
        const char *p = copy;
        while (*p == ' ' || *p == '\t')
            p++;
        if (*p == '\0' || *p == '#')
            continue;
        struct cfg_class k = { .line = lineno, .text = "" };
        k.name = next_token(c->pool, &p);
        k.since = next_token(c->pool, &p);
        if (k.since == NULL)
            return parse_failed(c, error, "parameters.txt:%d: %s: no version", lineno, k.name);
        char *cls = next_token(c->pool, &p);
        if (cls) {
            char *at = strchr(cls, '@');
            if (at) {
                *at = '\0';
                k.module = at + 1;
            }
            if (strcmp(cls, "ignored") == 0)
                k.kind = CFG_CLASS_IGNORED;
            else if (strcmp(cls, "warn") == 0)
                k.kind = CFG_CLASS_WARN;
            else if (strcmp(cls, "refuse") == 0)
                k.kind = CFG_CLASS_REFUSE;
            else
                return parse_failed(c, error, "parameters.txt:%d: %s: unknown class \"%s\"", lineno, k.name, cls);
            const char *ok[32], *warn_only[32];
            size_t nok = 0, nwarn = 0;
            for (;;) {
                const char *save = p;
                char *tok = next_token(c->pool, &p);
                if (tok && strncmp(tok, "ok=", 3) == 0 && nok < 32) {
                    ok[nok++] = tok + 3;
                } else if (tok && strncmp(tok, "warn=", 5) == 0 && nwarn < 32 && k.kind == CFG_CLASS_REFUSE) {
                    warn_only[nwarn++] = tok + 5;
                } else {
                    p = save;
                    break;
                }
            }
            k.ok = pool_strv(c->pool, ok, nok);
            k.warn_only = pool_strv(c->pool, warn_only, nwarn);
            while (*p == ' ' || *p == '\t')
                p++;
            k.text = p;
            if (*k.text == '\0')
                return parse_failed(c, error, "parameters.txt:%d: %s: %s without a text", lineno, k.name, cls);
        } else {
            k.ok = k.warn_only = pool_strv(c->pool, NULL, 0);
        }
        if (c->n == cap) {
            cap = cap ? cap * 2 : 1024;
            c->items = xrealloc(c->items, cap * sizeof(*c->items));
        }
        c->items[c->n++] = k;
    }
    qsort(c->items, c->n, sizeof(*c->items), class_cmp);
    for (size_t i = 1; i < c->n; i++)
        if (strcmp(c->items[i - 1].name, c->items[i].name) == 0)
            return parse_failed(c, error, "parameters.txt:%d: %s: listed twice (first at line %d)",
                                c->items[i].line, c->items[i].name, c->items[i - 1].line);
    return c;
}

struct cfg_classes *cfg_classes_new(char **error)
{
    return cfg_classes_parse(cfg_parameters_text, error);
}

const struct cfg_class *cfg_classes_find(const struct cfg_classes *c, const char *name)
{
    struct cfg_class key = { .name = name };
    return c->n ? bsearch(&key, c->items, c->n, sizeof(*c->items), class_cmp) : NULL;
}

size_t cfg_classes_count(const struct cfg_classes *c)
{
    return c->n;
}

const struct cfg_class *cfg_classes_get(const struct cfg_classes *c, size_t i)
{
    return i < c->n ? &c->items[i] : NULL;
}

void cfg_classes_free(struct cfg_classes *c)
{
    if (c == NULL)
        return;
    free(c->items);
    petrel_pool_destroy(c->pool);
    free(c);
}

const struct cfg_classes *cfg_get_classes(const struct cfg *cfg)
{
    return cfg->classes;
}

/* A "did you mean" for an unknown name: the closest declared parameter or
 * Postfix parameter name, within two edits. */
void cfg_suggest_name(const struct cfg *cfg, const char *name, struct buf *out)
{
    int best = 3;
    const char *best_name = NULL;
    for (size_t i = 0; i < cfg_schema_count(cfg->schema); i++) {
        const char *known = cfg_schema_param(cfg->schema, i)->name;
        int d = cfg_edit_distance(name, known, 2);
        if (d < best) {
            best = d;
            best_name = known;
        }
    }
    for (size_t i = 0; cfg->classes && i < cfg_classes_count(cfg->classes); i++) {
        const char *known = cfg_classes_get(cfg->classes, i)->name;
        int d = cfg_edit_distance(name, known, 2);
        if (d < best) {
            best = d;
            best_name = known;
        }
    }
    if (best_name)
        buf_printf(out, "; did you mean \"%s\"?", best_name);
}

/* ---- comparing values ---- */

/* value in a canonical form: a time or size as its number of seconds or
 * bytes, anything else lower case with each run of commas and white space
 * as one space. */
static char *canonical(const char *value)
{
    long long n;
    if (cfg_parse_time(value, 's', &n) == 0) {
        char *s = NULL;
        if (asprintf(&s, "%lld", n) < 0)
            s = xstrdup(value);
        return s;
    }
    size_t len = strlen(value);
    char *out = xmalloc(len + 1), *o = out;
    int sep = 0;
    for (const char *s = value; *s; s++) {
        if (*s == ',' || isspace((unsigned char)*s)) {
            sep = 1;
            continue;
        }
        if (sep && o > out)
            *o++ = ' ';
        sep = 0;
        *o++ = (char)tolower((unsigned char)*s);
    }
    *o = '\0';
    return out;
}

int cfg_class_value_matches(const char *value, const char *const *values, const struct cfg *cfg)
{
    char *have = canonical(value);
    int match = 0;
    for (; values && *values && !match; values++) {
        /* A value may say $name (smtp_helo_name: ok=$myhostname). */
        char *expanded = strchr(*values, '$') ? cfg_expand_text((struct cfg *)cfg, *values, NULL, 0, NULL) : NULL;
        char *want = canonical(expanded ? expanded : *values);
        int a, b;
        match = strcmp(have, want) == 0 ||
                (cfg_parse_bool(have, &a) == 0 && cfg_parse_bool(want, &b) == 0 && a == b);
        free(want);
        free(expanded);
    }
    free(have);
    return match;
}

/* ---- the check ---- */

static int covered(const char *name, const struct cfg_bind_table *const *tables, size_t ntables)
{
    for (size_t t = 0; t < ntables; t++)
        for (size_t i = 0; i < tables[t]->n; i++)
            if (cfg_bind_covers(&tables[t]->binds[i], name))
                return 1;
    return 0;
}

static int listed(const char *const *list, const char *name)
{
    for (; list && *list; list++)
        if (strcmp(*list, name) == 0)
            return 1;
    return 0;
}

#define ACCEPT_PARAM "petrel_accept_unimplemented"

/* Says what will not happen for v, classified as k; returns 1 for an error. */
static int report(const struct cfg *cfg, const struct cfg_value *v, const struct cfg_class *k)
{
    if (k == NULL || k->kind == CFG_CLASS_IMPLEMENTED)
        return 0;   /* names nobody knows are warned about by the loader */
    if (k->module && listed(cfg_list(cfg, "modules"), k->module))
        return 0;
    const char *value = v->value ? v->value : "";
    struct buf why = BUF_INIT;
    if (k->module)
        buf_printf(&why, "%s is set but the %s module is not loaded: %s", v->name, k->module, k->text);
    else if (k->kind == CFG_CLASS_IGNORED)
        buf_printf(&why, "%s has no effect in Petrel: %s", v->name, k->text);
    else
        buf_printf(&why, "%s is set but not implemented: %s", v->name, k->text);
    int errors = 0;
    if (k->kind == CFG_CLASS_IGNORED) {
        if (!cfg_is_quiet(cfg))
            msg_info("%s:%d: %s", v->file, v->line, why.data);
    } else if (!cfg_class_value_matches(value, k->ok, cfg)) {
        if (k->kind == CFG_CLASS_WARN || cfg_class_value_matches(value, k->warn_only, cfg))
            cfg_warn((struct cfg *)cfg, v->file, v->line, NULL, "%s", why.data);
        else if (listed(cfg_list(cfg, ACCEPT_PARAM), v->name))
            cfg_warn((struct cfg *)cfg, v->file, v->line, NULL, "%s (accepted by %s)", why.data, ACCEPT_PARAM);
        else {
            cfg_error((struct cfg *)cfg, v->file, v->line, NULL,
                      "%s; refusing to start: this weakens security or filtering "
                      "(to start anyway, list %s in %s)", why.data, v->name, ACCEPT_PARAM);
            errors = 1;
        }
    }
    buf_free(&why);
    return errors;
}

int cfg_service_applies_option(const struct master_service *svc, const char *name)
{
    /* Keep in step with the readers: smtpd/cleanup.c reads these from the
     * cleanup service that cleanup_service_name names, qmgr/checks.c
     * these from each smtp or lmtp transport. */
    static const char *const cleanup[] = {
        "header_checks", "mime_header_checks", "nested_header_checks", "body_checks", "header_size_limit",
        "line_length_limit", "mime_nesting_limit", "mime_boundary_length_limit", "body_checks_size_limit",
        "hopcount_limit", "disable_mime_input_processing", "strict_8bitmime", "strict_7bit_headers",
        "strict_8bitmime_body", "strict_mime_encoding_domain", "milter_header_checks", NULL,
    };
    static const char *const transport[] = {
        "smtp_header_checks", "smtp_mime_header_checks", "smtp_nested_header_checks", "smtp_body_checks",
        "lmtp_header_checks", "lmtp_mime_header_checks", "lmtp_nested_header_checks", "lmtp_body_checks",
        "header_size_limit", "line_length_limit", "mime_nesting_limit", "mime_boundary_length_limit", NULL,
    };
    switch (svc->role) {
    case ROLE_SMTPD:
    case ROLE_PICKUP:
    case ROLE_POSTSCREEN:   /* smtpd/psc_settings.c reads its service's options */
        return 1;
    case ROLE_CLEANUP:
        return listed(cleanup, name);
    case ROLE_SMTP:
    case ROLE_LMTP:
        return listed(transport, name);
    default:
        return 0;
    }
}

/* The SMTP and LMTP clients read every parameter of their binding table
 * from their own service (qmgr/transports.c: each smtp or lmtp service is
 * a transport with its -o overrides). */
static int client_reads(const struct master_service *svc, const char *name,
                        const struct cfg_bind_table *const *tables, size_t ntables)
{
    const char *owner = svc->role == ROLE_SMTP ? "SMTP client" : svc->role == ROLE_LMTP ? "LMTP client" : NULL;
    for (size_t t = 0; owner && t < ntables; t++)
        if (strcmp(tables[t]->owner, owner) == 0 && covered(name, &tables[t], 1))
            return 1;
    return 0;
}

int cfg_transport_parameter_of(const struct cfg_classes *c, const char *name, const char *service)
{
    size_t sl = strlen(service);
    if (strncmp(name, service, sl) != 0 || name[sl] != '_' || name[sl + 1] == '\0')
        return 0;
    /* transport_maps and transport_retry_time are names of their own, not families */
    if (strcmp(name + sl, "_maps") == 0 || strcmp(name + sl, "_retry_time") == 0)
        return 0;
    char family[256];
    if ((size_t)snprintf(family, sizeof(family), "transport%s", name + sl) >= sizeof(family))
        return 0;
    return cfg_classes_find(c, family) != NULL;
}

/* An -o option of an implemented parameter on a master.cf line whose
 * options Petrel does not apply: a delivery transport (the queue manager
 * runs every transport with main.cf's settings) or a service Petrel does
 * not run. A warning, and a refusal for TLS and SASL settings, which a
 * transport of its own usually exists to tighten. Returns 1 for an error. */
static int report_not_applied(const struct cfg *cfg, const struct master_service *svc, const struct cfg_value *v)
{
    struct buf why = BUF_INIT;
    buf_printf(&why, "service %s (command %s): -o %s=%s is not applied: %s", svc->name, svc->command, v->name,
               v->raw ? v->raw : "",
               svc->role == ROLE_IGNORED ? "Petrel does not run this service"
               : svc->role == ROLE_SPAWN ? "a spawn(8) command reads no Petrel parameters"
               : svc->role == ROLE_CLEANUP
                   ? "Petrel's cleanup (inside smtpd and pickup) reads only the header and body checks and their "
                     "limits from this service"
                   : "Petrel's queue manager runs every transport with main.cf's settings (only the SMTP and "
                     "LMTP clients' settings and the content checks and their limits are per transport)");
    int security = strstr(v->name, "_tls_") != NULL || strstr(v->name, "_sasl_") != NULL;
    int errors = 0;
    if (!security)
        cfg_warn((struct cfg *)cfg, v->file, v->line, NULL, "%s", why.data);
    else if (listed(cfg_list(cfg, ACCEPT_PARAM), v->name))
        cfg_warn((struct cfg *)cfg, v->file, v->line, NULL, "%s (accepted by %s)", why.data, ACCEPT_PARAM);
    else {
        cfg_error((struct cfg *)cfg, v->file, v->line, NULL,
                  "%s; refusing to start: this weakens security (to start anyway, list %s in %s)", why.data,
                  v->name, ACCEPT_PARAM);
        errors = 1;
    }
    buf_free(&why);
    return errors;
}

/* The module that declared name, when one did (not the core). */
static const char *module_owner(const struct cfg *cfg, const char *name)
{
    const char *owner = cfg_schema_owner(cfg->schema, name);
    return owner && strcmp(owner, "core") != 0 ? owner : NULL;
}

/* An -o option of a loaded module's own parameter (greylist_delay, or the
 * dkim_hook_timeout the core gives each module) on a service whose
 * sessions run the module's hooks. The module applies it only when it
 * declared the parameter per_service (it reads the value with
 * petrel_service_config_*); otherwise its sessions on this service run
 * with main.cf's value, and that changes the filtering the admin asked for
 * on this service, in either direction: refused, unless accepted. A
 * service whose sessions run no module hooks (a transport, postscreen's
 * own line) is report_not_applied's. Returns 1 for an error. */
static int check_module_option(const struct cfg *cfg, const struct master_service *svc, const struct cfg_value *v,
                               const char *module)
{
    if (cfg_schema_per_service(cfg->schema, v->name) && (svc->role == ROLE_SMTPD || svc->role == ROLE_PICKUP))
        return 0;
    struct buf why = BUF_INIT;
    buf_printf(&why, "service %s (command %s): -o %s=%s is not applied: module %s reads %s from main.cf only "
               "(not per service), so this service's sessions run with main.cf's value%s", svc->name,
               svc->command, v->name, v->raw ? v->raw : "", module, v->name,
               svc->role == ROLE_POSTSCREEN ? " (and module hooks run in the smtpd service postscreen passes to, "
                                              "not here)" : "");
    int errors = 0;
    if (listed(cfg_list(cfg, ACCEPT_PARAM), v->name))
        cfg_warn((struct cfg *)cfg, v->file, v->line, NULL, "%s (accepted by %s)", why.data, ACCEPT_PARAM);
    else {
        cfg_error((struct cfg *)cfg, v->file, v->line, NULL,
                  "%s; refusing to start: this changes the module's filtering on this service (set it in "
                  "main.cf, or to start anyway, list %s in %s)", why.data, v->name, ACCEPT_PARAM);
        errors = 1;
    }
    buf_free(&why);
    return errors;
}

/* Does a master.cf -o set name, a loaded module's own parameter? (Then
 * petrel_accept_unimplemented may name it: check_module_option.) */
static int module_option_set(const struct cfg *cfg, const char *name)
{
    if (module_owner(cfg, name) == NULL)
        return 0;
    for (size_t s = 0; s < cfg->nservices; s++) {
        const struct cfg *svc = cfg->services[s].cfg;
        if (svc == cfg || svc == NULL)
            continue;
        for (size_t i = 0; i < svc->nvalues; i++)
            if (svc->values[i].override && strcmp(svc->values[i].name, name) == 0)
                return 1;
    }
    return 0;
}

/* One value that main.cf or an -o option sets; returns 1 for an error. */
static int check_value(const struct cfg *cfg, const struct cfg_value *v, const struct cfg_classes *classes,
                       const struct cfg_bind_table *const *tables, size_t ntables)
{
    if (v->family_service) {
        /* A per-transport parameter (smtp-amavis_destination_recipient_limit):
         * moot for a service Petrel does not run; else implemented when a
         * table reads its family, or classified by the family's line. */
        if (v->family_service->role == ROLE_SPAWN)
            return 0;   /* NAME_time_limit: the master's spawn runner reads it (core/master/spawn_service.c) */
        if (v->family_service->role == ROLE_IGNORED) {
            cfg_warn((struct cfg *)cfg, v->file, v->line, v->name,
                     "no effect: service %s is a %s(8) service (%s, line %d), which Petrel does not run",
                     v->family_service->name, v->family_service->command, v->family_service->file,
                     v->family_service->line);
            return 0;
        }
        if (covered(v->name, tables, ntables))
            return 0;
        return report(cfg, v, cfg_classes_find(classes, v->class_name));
    }
    /* A name a module provides (smtpd_milters@milter) may be read by the
     * core on the module's behalf (smtpd checks each service's milter
     * list): its class still decides while the module is not loaded. */
    const struct cfg_class *provided = cfg_classes_find(classes, v->name);
    if (provided && provided->module && provided->kind != CFG_CLASS_IMPLEMENTED)
        return report(cfg, v, provided);
    if (covered(v->name, tables, ntables))
        return 0;
    const char *owner = cfg_schema_owner(cfg->schema, v->name);
    if (owner && strcmp(owner, "core") != 0)
        return 0;   /* a loaded module declared it: the module reads it */
    return report(cfg, v, cfg_classes_find(classes, v->name));
}

int cfg_check_unimplemented(const struct cfg *cfg, const struct cfg_classes *classes,
                            const struct cfg_bind_table *const *tables, size_t ntables)
{
    int errors = 0;
    for (size_t i = 0; i < cfg->nvalues; i++) {
        const struct cfg_value *v = &cfg->values[i];
        if (v->file == NULL)
            continue;
        errors += check_value(cfg, v, classes, tables, ntables);
    }
    for (size_t s = 0; s < cfg->nservices; s++) {
        const struct cfg *svc = cfg->services[s].cfg;
        if (svc == cfg || svc == NULL)
            continue;
        for (size_t i = 0; i < svc->nvalues; i++) {
            const struct cfg_value *v = &svc->values[i];
            if (!v->override)
                continue;
            const char *module = v->family_service ? NULL : module_owner(cfg, v->name);
            const enum petrel_role role = cfg->services[s].role;
            if (module && (role == ROLE_SMTPD || role == ROLE_PICKUP || role == ROLE_POSTSCREEN))
                errors += check_module_option(svc, &cfg->services[s], v, module);
            else if (cfg_transport_parameter_of(classes, v->name, cfg->services[s].name) && !v->family_service)
                errors += report_not_applied(svc, &cfg->services[s], v);
            else if (!cfg_service_applies_option(&cfg->services[s], v->name) &&
                !client_reads(&cfg->services[s], v->name, tables, ntables) && !v->family_service &&
                (covered(v->name, tables, ntables) || cfg_schema_owner(cfg->schema, v->name) != NULL) &&
                (cfg_classes_find(classes, v->name) == NULL ||
                 cfg_classes_find(classes, v->name)->kind == CFG_CLASS_IMPLEMENTED))
                errors += report_not_applied(svc, &cfg->services[s], v);
            else
                errors += check_value(svc, v, classes, tables, ntables);
        }
    }
    /* petrel_accept_unimplemented names what it accepts: a name that needs no acceptance is a mistake. */
    const struct cfg_value *accept = cfg_value_find(cfg, ACCEPT_PARAM);
    for (const char *const *name = cfg_list(cfg, ACCEPT_PARAM); accept && *name; name++) {
        const struct cfg_class *k = cfg_classes_find(classes, *name);
        if ((k == NULL || k->kind != CFG_CLASS_REFUSE || covered(*name, tables, ntables)) &&
            !module_option_set(cfg, *name))
            cfg_warn((struct cfg *)cfg, cfg_value_file(cfg, accept), accept->line, ACCEPT_PARAM,
                     "%s is not a parameter Petrel refuses; nothing to accept", *name);
    }
    return errors;
}
