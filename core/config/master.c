/*
 * master.cf: Postfix's service table.
 *
 * Eight columns (service, type, private, unpriv, chroot, wakeup, maxproc,
 * command + arguments), the same logical-line rules as main.cf, and
 * `-o name=value` / `-o { name = value }` overrides. Every Postfix service
 * command is accepted so a Postfix master.cf loads; each maps onto a Petrel
 * role or ROLE_IGNORED. A service with overrides (or any service, when
 * main.cf says $service_name or $process_name) gets its own copy of the
 * configuration, so an override applies to that listener only.
 */
#include "config.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config/classes.h"
#include "config/config_impl.h"
#include "lib/xalloc.h"

/* Used when master.cf does not exist: what a minimal Postfix master.cf provides. */
static const char default_master_cf[] =
    "# service type  private unpriv  chroot  wakeup  maxproc command + args\n"
    "smtp      inet  n       -       n       -       -       smtpd\n"
    "pickup    unix  n       -       n       60      1       pickup\n"
    "cleanup   unix  n       -       n       -       0       cleanup\n"
    "qmgr      unix  n       -       n       300     1       qmgr\n"
    "rewrite   unix  -       -       n       -       -       trivial-rewrite\n"
    "bounce    unix  -       -       n       -       0       bounce\n"
    "defer     unix  -       -       n       -       0       bounce\n"
    "trace     unix  -       -       n       -       0       bounce\n"
    "verify    unix  -       -       n       -       1       verify\n"
    "smtp      unix  -       -       n       -       -       smtp\n"
    "relay     unix  -       -       n       -       -       smtp\n"
    "error     unix  -       -       n       -       -       error\n"
    "retry     unix  -       -       n       -       -       error\n"
    "discard   unix  -       -       n       -       -       discard\n"
    "local     unix  -       n       n       -       -       local\n"
    "virtual   unix  -       n       n       -       -       virtual\n"
    "lmtp      unix  -       -       n       -       -       lmtp\n";

#define DEFAULT_MASTER_LABEL "(built-in master.cf)"

static const struct {
    const char *command;
    enum petrel_role role;
} commands[] = {
    { "smtpd", ROLE_SMTPD },     { "qmgr", ROLE_QMGR },       { "nqmgr", ROLE_QMGR },
    { "oqmgr", ROLE_QMGR },      { "pickup", ROLE_PICKUP },   { "cleanup", ROLE_CLEANUP },
    { "smtp", ROLE_SMTP },       { "relay", ROLE_SMTP },      { "lmtp", ROLE_LMTP },
    { "local", ROLE_LOCAL },     { "virtual", ROLE_VIRTUAL }, { "pipe", ROLE_PIPE },
    { "error", ROLE_ERROR },     { "retry", ROLE_ERROR },     { "discard", ROLE_DISCARD },
    /* Postfix services Petrel does inside its own roles, or does not need. */
    { "trivial-rewrite", ROLE_IGNORED }, { "tlsmgr", ROLE_IGNORED },  { "anvil", ROLE_IGNORED },
    { "bounce", ROLE_IGNORED },  { "defer", ROLE_IGNORED },   { "trace", ROLE_IGNORED },
    { "verify", ROLE_IGNORED },  { "flush", ROLE_IGNORED },   { "proxymap", ROLE_IGNORED },
    { "proxywrite", ROLE_IGNORED }, { "scache", ROLE_IGNORED }, { "showq", ROLE_IGNORED },
    { "postlog", ROLE_IGNORED }, { "postlogd", ROLE_IGNORED }, { "postscreen", ROLE_POSTSCREEN },
    { "dnsblog", ROLE_INSIDE }, { "tlsproxy", ROLE_INSIDE }, { "qmqpd", ROLE_IGNORED },
    { "spawn", ROLE_SPAWN },
};

/*
 * Per-transport parameters, as Postfix's postconf registers them: a
 * master.cf service running a delivery agent (local, virtual, smtp, lmtp,
 * pipe, error) has SERVICE_suffix for each suffix below, typed like the
 * default it falls back to; a spawn service has SERVICE_time_limit. So
 * `smtp-amavis_destination_recipient_limit = 1` in main.cf is a checked
 * integer the queue manager reads for transport smtp-amavis, not an unknown
 * name. Which suffixes Petrel implements is the binding tables' business
 * (the queue manager reads *_destination_concurrency_limit, ...); the rest
 * are classified by their transport_SUFFIX line (classes.h).
 */
static const struct {
    const char *suffix;
    enum cfg_type type;
    const char *fallback;        /* the parameter whose value applies when this one is not set */
    int pipe_and_spawn_only;
} families[] = {
    { "_time_limit", CFG_TIME, "$command_time_limit", 1 },
    { "_recipient_limit", CFG_INT, "$default_recipient_limit", 0 },
    { "_extra_recipient_limit", CFG_INT, "$default_extra_recipient_limit", 0 },
    { "_recipient_refill_limit", CFG_INT, "$default_recipient_refill_limit", 0 },
    { "_recipient_refill_delay", CFG_TIME, "$default_recipient_refill_delay", 0 },
    { "_delivery_slot_cost", CFG_INT, "$default_delivery_slot_cost", 0 },
    { "_delivery_slot_loan", CFG_INT, "$default_delivery_slot_loan", 0 },
    { "_delivery_slot_discount", CFG_INT, "$default_delivery_slot_discount", 0 },
    { "_minimum_delivery_slots", CFG_INT, "$default_minimum_delivery_slots", 0 },
    { "_initial_destination_concurrency", CFG_INT, "$initial_destination_concurrency", 0 },
    { "_destination_concurrency_limit", CFG_INT, "$default_destination_concurrency_limit", 0 },
    { "_destination_recipient_limit", CFG_INT, "$default_destination_recipient_limit", 0 },
    { "_destination_concurrency_positive_feedback", CFG_STR,
      "$default_destination_concurrency_positive_feedback", 0 },
    { "_destination_concurrency_negative_feedback", CFG_STR,
      "$default_destination_concurrency_negative_feedback", 0 },
    { "_destination_concurrency_failed_cohort_limit", CFG_INT,
      "$default_destination_concurrency_failed_cohort_limit", 0 },
    { "_destination_rate_delay", CFG_TIME, "$default_destination_rate_delay", 0 },
    { "_transport_rate_delay", CFG_TIME, "$default_transport_rate_delay", 0 },
};

static int delivery_role(enum petrel_role role)
{
    return role == ROLE_SMTP || role == ROLE_LMTP || role == ROLE_LOCAL || role == ROLE_VIRTUAL ||
           role == ROLE_PIPE || role == ROLE_ERROR;
}

/* Gives each main.cf name that is a per-transport parameter of a master.cf
 * service its type, and checks its value. */
static void type_family_values(struct cfg *gen)
{
    for (size_t i = 0; i < gen->nvalues; i++) {
        struct cfg_value *v = &gen->values[i];
        if (v->param || !v->file)
            continue;
        for (size_t s = 0; s < gen->nservices && !v->family_service; s++) {
            const struct master_service *svc = &gen->services[s];
            int spawn = strcmp(svc->command, "spawn") == 0;
            size_t sl = strlen(svc->name);
            if ((!delivery_role(svc->role) && !spawn) || strncmp(v->name, svc->name, sl) != 0 || v->name[sl] != '_')
                continue;
            for (size_t f = 0; f < sizeof(families) / sizeof(families[0]); f++) {
                if (strcmp(v->name + sl, families[f].suffix) != 0)
                    continue;
                if ((spawn || families[f].pipe_and_spawn_only) && !(svc->role == ROLE_PIPE || spawn))
                    break;
                if (spawn && f != 0)
                    break;
                struct cfg_param *p = petrel_pool_zalloc(gen->pool, sizeof(*p));
                p->name = v->name;
                p->type = families[f].type;
                p->def = families[f].fallback;
                p->help = "per-transport parameter";
                v->param = p;
                v->family_service = svc;
                v->class_name = petrel_pool_printf(gen->pool, "transport%s", families[f].suffix);
                cfg_value_expand(gen, v, 0);
                cfg_value_validate(gen, v);
                break;
            }
        }
    }
}

static int lookup_command(const char *command, enum petrel_role *role)
{
    for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++)
        if (strcmp(commands[i].command, command) == 0) {
            *role = commands[i].role;
            return 0;
        }
    return -1;
}

/* White-space separated tokens where { } groups (possibly nested) keep
 * their spaces: a master.cf line's fields and arguments (also for
 * petrelctl config -M/-F/-P). Free with cfg_list_free(). */
char **cfg_master_tokenize(const char *text, size_t *count)
{
    char **tokens = NULL;
    size_t n = 0, cap = 0;
    const char *p = text;
    for (;;) {
        while (*p && isspace((unsigned char)*p))
            p++;
        if (!*p)
            break;
        const char *start = p;
        int depth = 0;
        while (*p && (depth > 0 || !isspace((unsigned char)*p))) {
            if (*p == '{')
                depth++;
            else if (*p == '}' && depth > 0)
                depth--;
            p++;
        }
        if (n + 2 > cap) {
            cap = cap ? cap * 2 : 16;
            tokens = xrealloc(tokens, cap * sizeof(*tokens));
        }
        tokens[n++] = xstrndup(start, (size_t)(p - start));
    }
    if (!tokens)
        tokens = xcalloc(1, sizeof(*tokens));
    tokens[n] = NULL;
    *count = n;
    return tokens;
}

static int parse_flag(struct cfg *cfg, const char *file, int line, const char *service,
                      const char *column, const char *text, int dflt, int *out)
{
    if (strcmp(text, "-") == 0)
        *out = dflt;
    else if (strcmp(text, "y") == 0)
        *out = 1;
    else if (strcmp(text, "n") == 0)
        *out = 0;
    else {
        cfg_error(cfg, file, line, service, "bad %s field \"%s\" (expected y, n or -)", column, text);
        return -1;
    }
    return 0;
}

static int parse_count(const char *text, int *out, int *if_used)
{
    long n = 0;
    const char *p = text;
    if (!isdigit((unsigned char)*p))
        return -1;
    for (; isdigit((unsigned char)*p); p++) {
        n = n * 10 + (*p - '0');
        if (n > 1000000000L)
            return -1;
    }
    if (if_used && *p == '?') {
        *if_used = 1;
        p++;
    }
    if (*p)
        return -1;
    *out = (int)n;
    return 0;
}

/* "name=value" or "{ name = value }" after -o; 0 with both parts trimmed, -1 if malformed. */
static int split_override(const char *text, char **name, char **value)
{
    char *copy;
    size_t len = strlen(text);
    if (len >= 2 && text[0] == '{' && text[len - 1] == '}')
        copy = xstrndup(text + 1, len - 2);
    else
        copy = xstrdup(text);
    char *eq = strchr(copy, '=');
    if (!eq) {
        free(copy);
        return -1;
    }
    *eq = '\0';
    char *n = copy, *v = eq + 1;
    while (isspace((unsigned char)*n))
        n++;
    size_t nl = strlen(n);
    while (nl && isspace((unsigned char)n[nl - 1]))
        n[--nl] = '\0';
    while (isspace((unsigned char)*v))
        v++;
    size_t vl = strlen(v);
    while (vl && isspace((unsigned char)v[vl - 1]))
        v[--vl] = '\0';
    int ok = nl > 0;
    for (const char *c = n; *c; c++)
        if (!cfg_param_name_char(*c))
            ok = 0;
    if (ok) {
        *name = xstrdup(n);
        *value = xstrdup(v);
    }
    free(copy);
    return ok ? 0 : -1;
}

static void warn_unknown_override(struct cfg *gen, const char *file, int line, const char *service,
                                  const char *name)
{
    if (cfg_value_find(gen, name) || (gen->classes && cfg_classes_find(gen->classes, name)))
        return;   /* known, defined in main.cf, or a Postfix name (classes.h says what happens) */
    /* -o polite_destination_rate_delay=0 on the polite line: a Postfix
     * name, which the queue manager reads from main.cf only (in Postfix
     * too); classes.c says it is not applied. */
    if (gen->classes && cfg_transport_parameter_of(gen->classes, name, service))
        return;
    struct buf hint = BUF_INIT;
    buf_append(&hint, "", 0);
    cfg_suggest_name(gen, name, &hint);
    cfg_warn(gen, file, line, name, "unknown parameter in -o option%s", hint.data);
    buf_free(&hint);
}

struct pending_service {
    char **names, **values;      /* -o overrides, NULL-terminated */
    size_t noverrides;
};

/* Parses one logical line into *svc; returns -1 (after logging) if the line is bad. */
static int parse_service(struct cfg *gen, const char *file, int line, const char *text,
                         struct master_service *svc, struct pending_service *pending)
{
    size_t ntok;
    char **tok = cfg_master_tokenize(text, &ntok);
    int status = 0;
    memset(svc, 0, sizeof(*svc));
    memset(pending, 0, sizeof(*pending));
    if (ntok < 8) {
        cfg_error(gen, file, line, ntok ? tok[0] : NULL,
                  "wrong number of columns (%zu; expected at least 8: service type private unpriv "
                  "chroot wakeup maxproc command)", ntok);
        cfg_list_free(tok);
        return -1;
    }
    const char *service = tok[0];
    svc->name = petrel_pool_strdup(gen->pool, service);
    svc->file = file;
    svc->line = line;
    static const struct { const char *name; enum svc_type type; } types[] = {
        { "inet", SVC_INET }, { "unix", SVC_UNIX }, { "unix-dgram", SVC_UNIX_DGRAM },
        { "fifo", SVC_FIFO }, { "pass", SVC_PASS },
    };
    size_t t;
    for (t = 0; t < sizeof(types) / sizeof(types[0]); t++)
        if (strcmp(tok[1], types[t].name) == 0)
            break;
    if (t == sizeof(types) / sizeof(types[0])) {
        cfg_error(gen, file, line, service,
                  "bad service type \"%s\" (expected inet, unix, unix-dgram, fifo or pass)", tok[1]);
        status = -1;
    } else {
        svc->type = types[t].type;
    }
    if (parse_flag(gen, file, line, service, "private", tok[2], 1, &svc->private_) < 0)
        status = -1;
    if (parse_flag(gen, file, line, service, "unpriv", tok[3], 1, &svc->unpriv) < 0)
        status = -1;
    if (parse_flag(gen, file, line, service, "chroot", tok[4], cfg_compat_chroot_default(gen), &svc->chroot) < 0)
        status = -1;
    if (strcmp(tok[5], "-") == 0)
        svc->wakeup = 0;
    else if (parse_count(tok[5], &svc->wakeup, &svc->wakeup_if_used) < 0) {
        cfg_error(gen, file, line, service, "bad wakeup field \"%s\" (expected a number of seconds or -)",
                  tok[5]);
        status = -1;
    }
    if (strcmp(tok[6], "-") == 0)
        svc->maxproc = (int)cfg_int(gen, "default_process_limit");
    else if (parse_count(tok[6], &svc->maxproc, NULL) < 0) {
        cfg_error(gen, file, line, service, "bad maxproc field \"%s\" (expected a number or -)", tok[6]);
        status = -1;
    }
    svc->command = petrel_pool_strdup(gen->pool, tok[7]);
    if (lookup_command(tok[7], &svc->role) < 0) {
        cfg_error(gen, file, line, service, "unknown command \"%s\"", tok[7]);
        status = -1;
    }

    const char **argv = petrel_pool_alloc(gen->pool, (ntok - 7 + 1) * sizeof(*argv));
    size_t argc = 0;
    pending->names = xcalloc(ntok, sizeof(char *));
    pending->values = xcalloc(ntok, sizeof(char *));
    argv[argc++] = svc->command;
    for (size_t i = 8; i < ntok; i++) {
        const char *opt = NULL;
        if (strcmp(tok[i], "-o") == 0) {
            if (i + 1 >= ntok) {
                cfg_error(gen, file, line, service, "-o without name=value");
                status = -1;
                break;
            }
            opt = tok[++i];
        } else if (strncmp(tok[i], "-o", 2) == 0) {
            opt = tok[i] + 2;
        } else {
            argv[argc++] = petrel_pool_strdup(gen->pool, tok[i]);
            continue;
        }
        char *name, *value;
        if (split_override(opt, &name, &value) < 0) {
            cfg_error(gen, file, line, service, "bad -o option \"%s\" (expected name=value)", opt);
            status = -1;
            continue;
        }
        warn_unknown_override(gen, file, line, service, name);
        /* An -o value's $names count as used, like main.cf's. */
        free(cfg_expand_text(gen, value, file, line, name));
        size_t k;
        for (k = 0; k < pending->noverrides; k++)
            if (strcmp(pending->names[k], name) == 0)
                break;
        if (k < pending->noverrides) {
            free(pending->names[k]);
            free(pending->values[k]);
        } else {
            pending->noverrides++;
        }
        pending->names[k] = name;
        pending->values[k] = value;
    }
    argv[argc] = NULL;
    svc->argv = argv;
    cfg_list_free(tok);
    return status;
}

static void pending_free(struct pending_service *p)
{
    for (size_t i = 0; i < p->noverrides; i++) {
        free(p->names[i]);
        free(p->values[i]);
    }
    free(p->names);
    free(p->values);
}

int cfg_master_load(struct cfg *gen)
{
    const char *file = gen->master_path;
    struct cfg_reader *r = cfg_reader_open(file);
    if (!r) {
        if (errno != ENOENT) {
            cfg_error(gen, file, 0, NULL, "cannot open: %s", strerror(errno));
            return -1;
        }
        FILE *fp = fmemopen((void *)default_master_cf, sizeof(default_master_cf) - 1, "r");
        if (!fp)
            msg_fatal("fmemopen: %s", strerror(errno));
        r = cfg_reader_from_stream(fp);
        file = DEFAULT_MASTER_LABEL;
    }
    struct cfg_value *sn = cfg_value_find(gen, "service_name");
    struct cfg_value *pn = cfg_value_find(gen, "process_name");
    int always_copy = (sn && sn->referenced) || (pn && pn->referenced);

    struct master_service *services = NULL;
    struct pending_service *pending = NULL;
    size_t n = 0, cap = 0;
    struct buf line = BUF_INIT;
    int first, rc, status = 0;
    while ((rc = cfg_reader_next(r, &line, &first)) != 0) {
        if (rc < 0) {
            cfg_error(gen, file, first, NULL, "line is longer than %d bytes", CFG_MAX_LINE);
            status = -1;
            continue;
        }
        if (line.data[0] == ' ' || line.data[0] == '\t') {
            cfg_warn(gen, file, first, NULL, "ignoring text that starts with white space before any service");
            continue;
        }
        if (n == cap) {
            cap = cap ? cap * 2 : 32;
            services = xrealloc(services, cap * sizeof(*services));
            pending = xrealloc(pending, cap * sizeof(*pending));
        }
        if (parse_service(gen, file, first, line.data, &services[n], &pending[n]) < 0) {
            status = -1;
            if (services[n].name == NULL)
                continue;           /* too few columns: nothing to keep */
        }
        for (size_t i = 0; i < n; i++)
            if (strcmp(services[i].name, services[n].name) == 0 && services[i].type == services[n].type) {
                cfg_error(gen, file, first, services[n].name,
                          "duplicate service definition (first at line %d)", services[i].line);
                status = -1;
                break;
            }
        n++;
    }
    buf_free(&line);
    cfg_reader_close(r);

    gen->services = petrel_pool_alloc(gen->pool, (n ? n : 1) * sizeof(*gen->services));
    if (n)   /* services is NULL for an empty master.cf */
        memcpy(gen->services, services, n * sizeof(*services));
    gen->nservices = n;
    free(services);
    type_family_values(gen);
    for (size_t i = 0; i < n; i++) {
        struct master_service *svc = &gen->services[i];
        svc->cfg = gen;
        if (pending[i].noverrides || always_copy) {
            pending[i].names[pending[i].noverrides] = NULL;
            pending[i].values[pending[i].noverrides] = NULL;
            struct cfg *copy = cfg_service_copy(gen, svc->name, svc->command,
                                                (const char *const *)pending[i].names,
                                                (const char *const *)pending[i].values,
                                                svc->file, svc->line);
            copy->services = gen->services;
            copy->nservices = gen->nservices;
            svc->cfg = copy;
        }
        /* Postfix's master: a pass service (behind a connection screener)
         * is stressed like a public inet one. */
        if ((svc->role == ROLE_SMTPD && (svc->type == SVC_INET || svc->type == SVC_PASS) && svc->maxproc > 1) ||
            (svc->role == ROLE_POSTSCREEN && svc->type == SVC_INET))
            svc->stress_cfg = cfg_stress_copy((struct cfg *)svc->cfg);
        pending_free(&pending[i]);
    }
    free(pending);
    return status;
}
