/*
 * Loading one configuration generation: main.cf is read into (name, value,
 * line) triples, every known parameter gets its default (raw, or computed
 * from the host: defaults.c), main.cf's lines override them (a later line
 * wins, with a warning), every known value is expanded and validated, then
 * master.cf is read (master.c) with its per-service copies; names nobody
 * declared are warned about with a "did you mean". Every problem is logged
 * before the load fails.
 */
#include "config.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config/classes.h"
#include "config/config_impl.h"
#include "lib/xalloc.h"

struct main_line {
    char *name, *value;
    int line;
};

/* Reads main.cf into (name, value, line) triples; -1 if the file cannot be read. */
static int read_main(struct cfg *cfg, struct main_line **out, size_t *nout)
{
    struct cfg_reader *r = cfg_reader_open(cfg->main_path);
    if (!r) {
        cfg_error(cfg, cfg->main_path, 0, NULL, "cannot open: %s", strerror(errno));
        return -1;
    }
    struct buf line = BUF_INIT;
    struct main_line *lines = NULL;
    size_t n = 0, cap = 0;
    int first, status;
    while ((status = cfg_reader_next(r, &line, &first)) != 0) {
        if (status < 0) {
            cfg_error(cfg, cfg->main_path, first, NULL, "line is longer than %d bytes", CFG_MAX_LINE);
            continue;
        }
        if (line.data[0] == ' ' || line.data[0] == '\t') {
            cfg_warn(cfg, cfg->main_path, first, NULL,
                     "ignoring text that starts with white space before any parameter");
            continue;
        }
        char *eq = strchr(line.data, '=');
        if (!eq) {
            cfg_error(cfg, cfg->main_path, first, NULL, "missing '=' after parameter name: \"%.60s\"",
                      cfg_trim(line.data));
            continue;
        }
        *eq = '\0';
        char *name = cfg_trim(line.data);
        char *value = cfg_trim(eq + 1);
        const char *bad = name;
        while (*bad && cfg_param_name_char(*bad))
            bad++;
        if (!*name || *bad) {
            cfg_error(cfg, cfg->main_path, first, NULL, "bad parameter name \"%s\"", name);
            continue;
        }
        if (n == cap) {
            cap = cap ? cap * 2 : 64;
            lines = xrealloc(lines, cap * sizeof(*lines));
        }
        lines[n].name = xstrdup(name);
        lines[n].value = xstrdup(value);
        lines[n].line = first;
        n++;
    }
    buf_free(&line);
    cfg_reader_close(r);
    *out = lines;
    *nout = n;
    return 0;
}

static void free_classes(void *arg)
{
    cfg_classes_free(arg);
}

static const char *postfix_name_text(const struct cfg *cfg, const char *name)
{
    const struct cfg_class *k = cfg->classes ? cfg_classes_find(cfg->classes, name) : NULL;
    return k ? k->text : NULL;
}

struct cfg *cfg_load_generation(const struct cfg_schema *schema, const char *confdir, int quiet)
{
    petrel_pool *pool = petrel_pool_create(16384);
    struct cfg *cfg = petrel_pool_zalloc(pool, sizeof(*cfg));
    cfg->pool = pool;
    cfg->schema = schema;
    cfg->quiet = quiet;
    cfg->confdir = petrel_pool_strdup(pool, confdir);
    cfg->main_path = petrel_pool_printf(pool, "%s/main.cf", confdir);
    cfg->master_path = petrel_pool_printf(pool, "%s/master.cf", confdir);
    {
        char *why = NULL;
        cfg->classes = cfg_classes_new(&why);
        cfg->postfix_name_text = postfix_name_text;
        if (cfg->classes)
            petrel_pool_cleanup_add(pool, free_classes, cfg->classes);
        else
            cfg_error(cfg, NULL, 0, NULL, "the built-in parameter classification is malformed: %s", why ? why : "?");
        free(why);
    }

    struct main_line *lines = NULL;
    size_t nlines = 0;
    read_main(cfg, &lines, &nlines);

    /* Known parameters first, then the names only main.cf defines. */
    size_t nknown = cfg_schema_count(schema), cap = nknown + nlines;
    struct cfg_value *values = petrel_pool_zalloc(pool, (cap ? cap : 1) * sizeof(*values));
    size_t n = 0;
    for (size_t i = 0; i < nknown; i++) {
        const struct cfg_param *p = cfg_schema_param(schema, i);
        values[n].name = p->name;
        values[n].param = p;
        values[n].raw = p->def ? p->def : "";
        values[n].compute = cfg_computed_default(p->name);
        n++;
    }
    cfg->values = values;
    cfg->nvalues = n;
    for (size_t i = 0; i < nlines; i++) {
        if (cfg_value_find(cfg, lines[i].name))
            continue;
        int seen = 0;
        for (size_t j = nknown; j < n; j++)
            if (strcmp(values[j].name, lines[i].name) == 0)
                seen = 1;
        if (!seen)
            values[n++].name = petrel_pool_strdup(pool, lines[i].name);
    }
    qsort(values, n, sizeof(*values), cfg_value_cmp);
    cfg->nvalues = n;
    for (size_t i = 0; i < nlines; i++) {
        struct cfg_value *v = cfg_value_find(cfg, lines[i].name);
        if (v->file)
            cfg_warn(cfg, cfg->main_path, lines[i].line, v->name,
                     "overriding earlier entry at line %d", v->line);
        v->raw = petrel_pool_strdup(pool, lines[i].value);
        v->file = cfg->main_path;
        v->line = lines[i].line;
        free(lines[i].name);
        free(lines[i].value);
    }
    free(lines);

    for (size_t i = 0; i < cfg->nvalues; i++)
        if (cfg->values[i].param)
            cfg_value_expand(cfg, &cfg->values[i], 0);
    for (size_t i = 0; i < cfg->nvalues; i++)
        cfg_value_validate(cfg, &cfg->values[i]);

    cfg_master_load(cfg);

    /* Names that smtpd_restriction_classes lists are parameters the admin
     * defines (restriction lists), as in Postfix. */
    {
        struct cfg_value *classes = cfg_value_find(cfg, "smtpd_restriction_classes");
        char **names = classes && classes->value ? cfg_split_list(classes->value) : NULL;
        for (char **cls = names; cls && *cls; cls++) {
            struct cfg_value *v = cfg_value_find(cfg, *cls);
            if (v)
                v->referenced = 1;
        }
        cfg_list_free(names);
    }
    /* Unknown names: expanded quietly (only cfg_get sees them), warned about
     * when unused. Postfix's names are not unknown: what Petrel does with
     * them is the classification's business (classes.h). */
    for (size_t i = 0; i < cfg->nvalues; i++) {
        struct cfg_value *v = &cfg->values[i];
        if (v->param)
            continue;
        cfg_value_expand(cfg, v, 1);
        if (cfg->classes && cfg_classes_find(cfg->classes, v->name))
            continue;
        if (!v->referenced) {
            struct buf hint = BUF_INIT;
            buf_append(&hint, "", 0);
            cfg_suggest_name(cfg, v->name, &hint);
            cfg_warn(cfg, v->file, v->line, v->name, "unknown parameter%s", hint.data);
            buf_free(&hint);
        }
    }
    return cfg;
}

struct cfg *cfg_load(const struct cfg_schema *schema, const char *confdir, int *nerrors)
{
    struct cfg *cfg = cfg_load_generation(schema, confdir, 0);
    if (nerrors)
        *nerrors = cfg->errors;
    if (cfg->errors) {
        cfg_free(cfg);
        return NULL;
    }
    return cfg;
}

struct cfg *cfg_load_all(const struct cfg_schema *schema, const char *confdir, int *nerrors)
{
    struct cfg *cfg = cfg_load_generation(schema, confdir, 0);
    *nerrors = cfg->errors;
    return cfg;
}

int cfg_failed(const struct cfg *cfg, const char *name)
{
    const struct cfg_value *v = cfg_value_find(cfg, name);
    return v != NULL && v->failed;
}

char *cfg_locate(const struct cfg *cfg, const struct master_service *svc, const char *text)
{
    char *located = NULL;
    size_t name_len = 0;
    while (text[name_len] && cfg_param_name_char(text[name_len]))
        name_len++;
    const struct cfg_value *v = NULL;
    if (name_len > 0 && strncmp(text + name_len, ": ", 2) == 0) {
        char *param = xstrndup(text, name_len);
        v = cfg_value_find(svc && svc->cfg ? svc->cfg : cfg, param);
        free(param);
    }
    if (v && v->file && v->line > 0) {
        if (v->override && svc)
            located = xasprintf("%s, line %d: service %s: %s", v->file, v->line, svc->name, text);
        else
            located = xasprintf("%s:%d: %s", v->file, v->line, text);
    } else if (svc && svc->cfg && ((const struct cfg *)svc->cfg)->generation) {
        located = xasprintf("%s, line %d: service %s: %s", svc->file, svc->line, svc->name, text);
    } else if (v && v->file == NULL && name_len > 0) {
        /* A default nobody wrote (virtual_alias_domains = $virtual_alias_maps):
         * no line to point at, so say where the value comes from. */
        located = xasprintf("%s: %.*s (not set in main.cf: its default value \"%s\"): %s", cfg->main_path,
                            (int)name_len, text, v->raw ? v->raw : "", text + name_len + 2);
    } else {
        located = xasprintf("%s: %s", cfg->main_path, text);
    }
    return located;
}

char *cfg_peek(const struct cfg_schema *schema, const char *confdir, const char *name)
{
    struct cfg *cfg = cfg_load_generation(schema, confdir, 1);
    struct cfg_value *v = cfg_value_find(cfg, name);
    char *result = NULL;
    FILE *fp = fopen(cfg->main_path, "r");
    if (fp) {
        fclose(fp);
        result = xstrdup(v && v->value ? v->value : "");
    }
    cfg_free(cfg);
    return result;
}
