/*
 * modules/milter: Postfix's smtpd_milters and non_smtpd_milters on the
 * plugin API (doc/modules/milter.md). The protocol is milter_conn.h's; this
 * file is the glue: configuration, one milter_conn per milter per SMTP
 * session, and the mapping of hooks, verdicts and edits.
 *
 * Configuration is Postfix's, read from the core's own parameters
 * (smtpd_milters, non_smtpd_milters, milter_default_action,
 * milter_protocol, the three timeouts, the milter_*_macros lists,
 * milter_macro_daemon_name, milter_macro_v) and the per-milter form
 * "{ inet:host:port, connect_timeout=10s, command_timeout=..., content_timeout=...,
 * default_action=accept, protocol=6 }". Each master.cf service may set
 * its own with -o (Postfix's per-service milters): the module reads every
 * service's values (petrel_service_config_*) and makes one profile (the
 * list and the macro values) per distinct set of values, main.cf's
 * included. It checks each profile in check() (petreld -n, start, reload,
 * naming the master.cf line of a bad -o) and builds them in init (host
 * names are resolved there, never on the loop); a session takes its
 * service's profile at connect. Sessions of the pickup service
 * (petrel-sendmail's mail) use non_smtpd_milters, every other service
 * smtpd_milters.
 *
 * Per session: connect, helo, mail, rcpt and data go to each milter in
 * turn, as they happen (those hooks may suspend). The header and body
 * hooks may not suspend, so the whole content goes to the milters at
 * end_of_message, one milter after the other: headers, end of headers,
 * body, end of message. The body is read from the queue file
 * (petrel_message_open with PETREL_MESSAGE_BODY, opened afresh for each
 * milter); the module keeps no copy of it. Each milter's modifications are
 * applied at once through the petrel_* edit functions (a REPLBODY streams
 * into petrel_body_replace_*, chunk by chunk, never held in memory) and to
 * the module's own copy of the headers, so the next milter sees them, as
 * in Postfix: a body reader opened after a committed REPLBODY reads the
 * new body.
 *
 * Verdicts: the first refusal ends the chain and its reply goes to the
 * client (the text of the first line: the plugin API has one-line
 * replies). At CONNECT, as Postfix: a 5xx refuses the connection, a 421
 * closes it, another 4xx is answered at the next command (the milter's
 * verdict stands for the session). A milter that fails gets its
 * default_action, logged by milter_conn with what happened.
 *
 * The core's own timeout for a suspended hook (milter_hook_timeout) is a
 * backstop only: its default is the maximum (1 h) so that the milters'
 * timeouts, which are Postfix's, decide.
 */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>

#include <petrel/plugin.h>

#include "milter_conn.h"

static const petrel_param milter_params[] = {
    { PETREL_PARAM_INIT, .name = "milter_buffer_limit", .type = PETREL_PARAM_SIZE, .default_value = "1048576",
      .help = "no effect: the milters get the body from the queue file (kept so that main.cf files that set "
              "it still load)",
      .min = 65536, .max = 1073741824 },
    { .name = NULL },
};

/* ------------------------------------------------------------------ */
/* configuration                                                       */

typedef struct milter_list {
    milter_settings **items;
    size_t n;
} milter_list;

/* One service's milters and macro values. Services whose values are all
 * the same share one profile: parsed, checked and resolved once, in init. */
typedef struct profile {
    char *key;                /* every value it was built from (see profile_key) */
    milter_list list;
    char *myhostname, *daemon_name, *macro_v;
} profile;

typedef struct module_conf {
    profile **profiles;
    size_t nprofiles;
    /* master.cf's services (petrel_service_at) and the profile of each */
    char **services;
    profile **service_profiles;
    size_t nservices;
    profile *main_smtpd, *main_non_smtpd;   /* main.cf's, for a service not listed */
} module_conf;

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
    NULL
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
static void base_config(petrel_module *m, const char *service, milter_config *cfg)
{
    memset(cfg, 0, sizeof *cfg);
    cfg->unix_base = petrel_config_string(m, "queue_directory");
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
static int parse_item(const char *item, char *buf, size_t buflen, milter_config *cfg, char *err, size_t errlen)
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
        base_config(m, service, &cfg);
        char buf[1024], err[512];
        if (parse_item(items[i], buf, sizeof buf, &cfg, err, sizeof err) < 0) {
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

static void free_list(milter_list *l)
{
    for (size_t i = 0; i < l->n; i++)
        milter_settings_free(l->items[i]);
    free(l->items);
    l->items = NULL;
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
/* milter_buffer_limit sized the copy of the message earlier versions kept;
 * nothing is kept now (the message is read from the queue file). Still
 * accepted so that a main.cf setting it loads, but a value set says what
 * will not happen (rule 2: nothing changes meaning silently). */
static void warn_buffer_limit(petrel_module *m)
{
    long long v = petrel_param_int(m, "milter_buffer_limit");
    if (v != 1048576)
        petrel_module_log(m, PETREL_LOG_WARNING,
                          "milter_buffer_limit = %lld has no effect: the message is read from the queue file and "
                          "no copy is kept in memory (remove it from main.cf)", v);
}

static int milter_check(petrel_module *m)
{
    warn_buffer_limit(m);
    int rc = 0;
    size_t nservices = petrel_service_count(m), nkeys = 0;
    char **keys = calloc(nservices + 2, sizeof *keys);
    if (keys == NULL)
        return -1;
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
    }
    for (size_t i = 0; i < nkeys; i++)
        free(keys[i]);
    free(keys);
    return rc;
}

static void profile_free(profile *p)
{
    if (p == NULL)
        return;
    free_list(&p->list);
    free(p->key);
    free(p->myhostname);
    free(p->daemon_name);
    free(p->macro_v);
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
    p->myhostname = dup_or_empty(value_string(m, service, "myhostname"));
    p->daemon_name = dup_or_empty(value_string(m, service, "milter_macro_daemon_name"));
    p->macro_v = dup_or_empty(value_string(m, service, "milter_macro_v"));
    if (!p->myhostname || !p->daemon_name || !p->macro_v) {
        *error = "out of memory";
        return NULL;
    }
    return p;
}

static int milter_init(petrel_module *m, const char **error)
{
    module_conf *c = calloc(1, sizeof *c);
    if (c == NULL) {
        *error = "out of memory";
        return -1;
    }
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
static const profile *profile_of(const module_conf *c, const char *service)
{
    for (size_t i = 0; service && i < c->nservices; i++)
        if (strcmp(c->services[i], service) == 0)
            return c->service_profiles[i];
    return service && strcmp(service, "pickup") == 0 ? c->main_non_smtpd : c->main_smtpd;
}

static void milter_fini(petrel_module *m)
{
    conf_free(petrel_module_data(m));
    petrel_module_set_data(m, NULL);
}

/* ------------------------------------------------------------------ */
/* a session                                                           */

enum event { EV_CONNECT, EV_HELO, EV_MAIL, EV_RCPT, EV_DATA, EV_EOM, EV_UNKNOWN };
static const char *const event_names[] = { "CONNECT", "HELO", "MAIL", "RCPT", "DATA", "END-OF-MESSAGE",
                                           "UNKNOWN" };

enum step { ST_OPEN, ST_CONNECT, ST_HELO, ST_MAIL, ST_RCPT, ST_DATA, ST_HEADER, ST_EOH, ST_BODY, ST_EOM,
            ST_UNKNOWN };

typedef struct header {
    char *name;
    char *value;        /* the text after the colon, as in the message */
} header;

struct session;

typedef struct link {
    struct session *ss;
    milter_conn *conn;
    petrel_watch *watch;
    int watch_fd, watch_events;
    petrel_timer *timer;
} link;

typedef struct session {
    petrel_module *m;
    petrel_session *s;        /* the handle (checked by the core: safe after the session ends) */
    module_conf *conf;
    const profile *profile;   /* the session's service's milters and macro values */
    link *links;
    size_t n;

    /* the event in progress */
    enum event event;
    size_t cur;
    enum step step;
    int waiting;              /* a call on links[cur] is pending */
    int in_hook;
    int finished;
    petrel_pending *pending;
    petrel_verdict verdict;
    int code;
    char enhanced[16];
    char text[PETREL_REPLY_TEXT_MAX + 1];
    char *more_lines;         /* a multi-line reply: its lines after the first, each after a '\n' (malloc) */

    /* for the events and the macros */
    char *helo, *sender, *rcpt;
    char *unknown_cmd;        /* the unknown command's line (SMFIC_UNKNOWN) */
    const char **rcpt_argv, **mail_argv;   /* "<address>", then each ESMTP parameter, then NULL */
    char *mail_arg, *rcpt_arg;            /* their strings */
    char underscore[600];
    int in_tx;
    int tx_quarantined;
    char session_quarantine[128];

    /* the message */
    header *headers;
    size_t nheaders, cap_headers;
    size_t header_i;
    petrel_message *msg;      /* the body for the current milter (the last committed REPLBODY's, if any) */
    long long body_size;
    long long body_off;
    unsigned char *readbuf;   /* MILTER_CHUNK_MAX, made on first use */
    petrel_body_writer *newbody;   /* a REPLBODY arriving */
    int discard;
    int read_error;           /* the body could not be read back */
} session;

static void run(session *ss);

static void set_result(session *ss, petrel_verdict v, int code, const char *enhanced, const char *text)
{
    free(ss->more_lines);
    ss->more_lines = NULL;
    ss->verdict = v;
    ss->code = code;
    snprintf(ss->enhanced, sizeof ss->enhanced, "%s", enhanced ? enhanced : "");
    /* The core takes one printable line of at most 400 characters. */
    size_t o = 0;
    for (const char *p = text ? text : ""; *p && o < sizeof ss->text - 1; p++)
        ss->text[o++] = (*p >= 0x20 && *p < 0x7f) ? *p : '?';
    ss->text[o] = '\0';
}

/* Length of the enhanced status code "d.d.d " at the start of text, the
 * space included; 0 when there is none. */
static size_t leading_enhanced(const char *text)
{
    const char *p = text;
    for (int part = 0; part < 3; part++) {
        size_t digits = 0;
        while (*p >= '0' && *p <= '9' && digits < 4)
            p++, digits++;
        if (digits == 0 || (part < 2 && *p++ != '.'))
            return 0;
    }
    if (*p != ' ' && *p != '\0')
        return 0;
    return (size_t)(p - text) + (*p == ' ');
}

/* A milter's multi-line reply ("550-5.7.1 a\r\n550 5.7.1 b", checked and
 * made printable by milter_parse_replycode): the first line's text goes to
 * ss->text, the others to ss->more_lines; each line loses its code and its
 * enhanced code (the core puts the first line's back on every line, as
 * libmilter's smfi_setmlreply sends them). After set_result(), which set
 * the verdict and the codes. */
static void set_result_lines(session *ss, const char *reply)
{
    const char *eol = strstr(reply, "\r\n");
    char first[PETREL_REPLY_TEXT_MAX + 1];
    size_t n = (size_t)(eol - reply) > 4 ? (size_t)(eol - reply) - 4 : 0;
    snprintf(first, sizeof first, "%.*s", (int)n, n ? reply + 4 : "");
    snprintf(ss->text, sizeof ss->text, "%s", first + leading_enhanced(first));
    free(ss->more_lines);
    ss->more_lines = NULL;
    size_t cap = strlen(eol) + 1, o = 0;
    char *more = malloc(cap);
    if (more == NULL)
        return;     /* the first line alone */
    for (const char *l = eol + 2; l;) {
        const char *next = strstr(l, "\r\n");
        size_t len = next ? (size_t)(next - l) : strlen(l);
        const char *t = len > 4 ? l + 4 : l + len;
        size_t tlen = len > 4 ? len - 4 : 0;
        char line[PETREL_REPLY_TEXT_MAX + 1];
        snprintf(line, sizeof line, "%.*s", (int)tlen, t);
        size_t e = leading_enhanced(line);
        o += (size_t)snprintf(more + o, cap - o, "\n%s", line + e);
        l = next ? next + 2 : NULL;
    }
    ss->more_lines = more;
}

/* Gives the core the reply of a refusal in ss (one line or several). */
static void hand_reply(session *ss)
{
    const char *enhanced = ss->enhanced[0] ? ss->enhanced : NULL;
    if (ss->more_lines == NULL) {
        petrel_set_reply(ss->s, ss->code, enhanced, ss->text);
        return;
    }
    const char *lines[PETREL_REPLY_LINES_MAX];
    size_t n = 0;
    lines[n++] = ss->text;
    char *copy = strdup(ss->more_lines);
    if (copy == NULL) {
        petrel_set_reply(ss->s, ss->code, enhanced, ss->text);
        return;
    }
    for (char *p = copy; (p = strchr(p, '\n')) != NULL && n < PETREL_REPLY_LINES_MAX;) {
        *p++ = '\0';
        lines[n++] = p;
    }
    petrel_set_reply_lines(ss->s, ss->code, enhanced, lines, n);
    free(copy);
}

static void finish(session *ss)
{
    ss->finished = 1;
    if (ss->event == EV_EOM) {
        ss->in_tx = 0;
        if (ss->msg)
            petrel_message_close(ss->msg);
        ss->msg = NULL;
        if (ss->newbody)
            petrel_body_replace_abort(ss->newbody);   /* a REPLBODY the milter never ended */
        ss->newbody = NULL;
    }
    if (!ss->in_hook && ss->pending) {
        petrel_pending *p = ss->pending;
        ss->pending = NULL;
        if (ss->verdict == PETREL_REJECT || ss->verdict == PETREL_TEMPFAIL)
            hand_reply(ss);
        petrel_resume(p, ss->verdict, 0, NULL, NULL);
    }
}

/* ------------------------------------------------------------------ */
/* the connection's owner interface                                    */

static void on_io(int fd, int events, void *arg)
{
    (void)fd;
    link *l = arg;
    milter_conn_io(l->conn, events);
}

static void op_watch(void *arg, int fd, int events)
{
    link *l = arg;
    if (l->watch && (events == 0 || l->watch_fd != fd || l->watch_events != events)) {
        petrel_watch_cancel(l->watch);
        l->watch = NULL;
    }
    if (events && l->watch == NULL) {
        l->watch = petrel_watch_fd(l->ss->m, fd, events, on_io, l);
        l->watch_fd = fd;
        l->watch_events = events;
    }
}

static void on_timer(void *arg)
{
    link *l = arg;
    l->timer = NULL;
    milter_conn_timeout(l->conn);
}

static void op_timer(void *arg, unsigned ms)
{
    link *l = arg;
    if (l->timer) {
        petrel_timer_cancel(l->timer);
        l->timer = NULL;
    }
    if (ms)
        l->timer = petrel_timer_start(l->ss->m, ms, on_timer, l);
}

static int after_call(session *ss);

static void op_done(void *arg)
{
    link *l = arg;
    session *ss = l->ss;
    ss->waiting = 0;
    if (after_call(ss) == 0)
        run(ss);
}

static void op_log(void *arg, milter_log_level level, const char *text)
{
    link *l = arg;
    petrel_log(l->ss->s, level == MILTER_LOG_INFO ? PETREL_LOG_INFO
                         : level == MILTER_LOG_WARNING ? PETREL_LOG_WARNING : PETREL_LOG_ERROR, "%s", text);
}

static const char *op_macro(void *arg, const char *name)
{
    link *l = arg;
    session *ss = l->ss;
    petrel_session *s = ss->s;
    if (strcmp(name, "{j}") == 0)
        return ss->profile->myhostname;
    if (strcmp(name, "{daemon_name}") == 0)
        return ss->profile->daemon_name;
    if (strcmp(name, "{v}") == 0)
        return ss->profile->macro_v;
    if (strcmp(name, "{_}") == 0) {
        const char *addr = petrel_client_addr(s), *cname = petrel_client_name(s);
        snprintf(ss->underscore, sizeof ss->underscore, "%s [%s]", cname ? cname : "unknown", addr ? addr : "");
        return ss->underscore;
    }
    if (strcmp(name, "{client_addr}") == 0)
        return petrel_client_addr(s);
    if (strcmp(name, "{client_name}") == 0)
        return petrel_client_name(s);
    if (strcmp(name, "{i}") == 0)
        return petrel_queue_id(s);
    if (strcmp(name, "{auth_authen}") == 0)
        return petrel_sasl_username(s);
    /* Postfix's smtpd_milter_eval names for the session's facts */
    static const struct { const char *macro, *fact; } facts[] = {
        { "{client_port}", "client_port" }, { "{daemon_addr}", "server_addr" },
        { "{daemon_port}", "server_port" }, { "{auth_type}", "sasl_method" },
        { "{auth_author}", "sasl_sender" }, { "{tls_version}", "tls_protocol" },
        { "{cipher}", "tls_cipher" }, { "{cipher_bits}", "tls_cipher_bits" },
        { "{cert_subject}", "tls_peer_subject" }, { "{cert_issuer}", "tls_peer_issuer" },
        { "{tls_sni}", "tls_sni" },
    };
    for (size_t i = 0; i < sizeof facts / sizeof facts[0]; i++)
        if (strcmp(name, facts[i].macro) == 0)
            return petrel_session_fact(s, facts[i].fact);
    if (strcmp(name, "{mail_addr}") == 0)
        return ss->in_tx ? ss->sender : NULL;
    if (strcmp(name, "{rcpt_addr}") == 0)
        return ss->event == EV_RCPT ? ss->rcpt : NULL;
    return NULL;
}

/* ------------------------------------------------------------------ */
/* the module's copy of the headers                                    */

static int headers_add(session *ss, size_t at, const char *name, const char *value)
{
    if (ss->nheaders == ss->cap_headers) {
        size_t cap = ss->cap_headers ? ss->cap_headers * 2 : 32;
        header *bigger = realloc(ss->headers, cap * sizeof *bigger);
        if (bigger == NULL)
            return -1;
        ss->headers = bigger;
        ss->cap_headers = cap;
    }
    char *n = strdup(name), *v = strdup(value);
    if (n == NULL || v == NULL) {
        free(n);
        free(v);
        return -1;
    }
    if (at > ss->nheaders)
        at = ss->nheaders;
    memmove(ss->headers + at + 1, ss->headers + at, (ss->nheaders - at) * sizeof *ss->headers);
    ss->headers[at].name = n;
    ss->headers[at].value = v;
    ss->nheaders++;
    return 0;
}

static void headers_clear(session *ss)
{
    for (size_t i = 0; i < ss->nheaders; i++) {
        free(ss->headers[i].name);
        free(ss->headers[i].value);
    }
    ss->nheaders = 0;
}

/* The index of the nth (1-based) header called name, or (size_t)-1. */
static size_t headers_find(const session *ss, const char *name, size_t nth)
{
    for (size_t i = 0; i < ss->nheaders; i++)
        if (strcasecmp(ss->headers[i].name, name) == 0 && --nth == 0)
            return i;
    return (size_t)-1;
}

static int headers_load(session *ss)
{
    headers_clear(ss);
    const char *name, *value;
    for (size_t i = 0; petrel_header_at(ss->s, i, &name, &value) == 0; i++) {
        /* The hook's value lacks the one space after the colon. */
        size_t len = strlen(value) + 2;
        char *v = malloc(len);
        if (v == NULL)
            return -1;
        snprintf(v, len, " %s", value);
        int rc = headers_add(ss, ss->nheaders, name, v);
        free(v);
        if (rc < 0)
            return -1;
    }
    return 0;
}

/* ------------------------------------------------------------------ */
/* modifications                                                       */

static int apply_quarantine(session *ss, const char *reason)
{
    if (ss->tx_quarantined)
        return 0;
    ss->tx_quarantined = 1;
    petrel_log(ss->s, PETREL_LOG_INFO, "milter-hold: %s", reason);
    return petrel_quarantine(ss->s, reason);
}

static int op_edit(void *arg, const milter_edit *e)
{
    link *l = arg;
    session *ss = l->ss;
    petrel_session *s = ss->s;
    size_t i;
    switch (e->type) {
    case MILTER_EDIT_ADD_HEADER:
        if (petrel_header_add(s, e->name, e->value) < 0)
            return -1;
        return headers_add(ss, ss->nheaders, e->name, e->value);
    case MILTER_EDIT_INSERT_HEADER:
        if (petrel_header_insert(s, e->index, e->name, e->value) < 0)
            return -1;
        return headers_add(ss, e->index, e->name, e->value);
    case MILTER_EDIT_CHANGE_HEADER:
        i = headers_find(ss, e->name, e->index);
        if (i == (size_t)-1) {
            /* Sendmail and Postfix add a header that is not there. */
            if (petrel_header_add(s, e->name, e->value) < 0)
                return -1;
            return headers_add(ss, ss->nheaders, e->name, e->value);
        }
        if (petrel_header_change(s, e->name, e->index, e->value) < 0)
            return -1;
        {
            char *v = strdup(e->value);
            if (v == NULL)
                return -1;
            free(ss->headers[i].value);
            ss->headers[i].value = v;
        }
        return 0;
    case MILTER_EDIT_DELETE_HEADER:
        i = headers_find(ss, e->name, e->index);
        if (i == (size_t)-1)
            return 0;
        if (petrel_header_change(s, e->name, e->index, NULL) < 0)
            return -1;
        free(ss->headers[i].name);
        free(ss->headers[i].value);
        memmove(ss->headers + i, ss->headers + i + 1, (ss->nheaders - i - 1) * sizeof *ss->headers);
        ss->nheaders--;
        return 0;
    case MILTER_EDIT_CHANGE_FROM:
        /* RET= and ENVID= are applied, anything else ignored with a warning (Postfix) */
        return petrel_sender_change_params(s, e->address, e->args);
    case MILTER_EDIT_ADD_RCPT:
        /* NOTIFY= and ORCPT= are applied, anything else ignored with a warning (Postfix) */
        return petrel_recipient_add_params(s, e->address, e->args);
    case MILTER_EDIT_DELETE_RCPT:
        return petrel_recipient_delete(s, e->address);
    case MILTER_EDIT_BODY_CHUNK:
        /* Streamed to a file in the queue directory: a write the disk
         * refuses fails the message (451) in the core, whatever follows. */
        if (e->body_first || ss->newbody == NULL) {
            if (ss->newbody)
                petrel_body_replace_abort(ss->newbody);
            if ((ss->newbody = petrel_body_replace_begin(s)) == NULL)
                return -1;
        }
        return petrel_body_replace_write(ss->newbody, e->data, e->len);
    case MILTER_EDIT_BODY_END: {
        /* The new body is what the next milters read. */
        petrel_body_writer *w = ss->newbody;
        ss->newbody = NULL;
        if (w == NULL && (w = petrel_body_replace_begin(s)) == NULL)   /* an empty REPLBODY */
            return -1;
        return petrel_body_replace_commit(w);
    }
    case MILTER_EDIT_QUARANTINE:
        if (!ss->in_tx) {
            snprintf(ss->session_quarantine, sizeof ss->session_quarantine, "%s", e->reason);
            return 0;
        }
        return apply_quarantine(ss, e->reason);
    }
    return -1;
}

/* ------------------------------------------------------------------ */
/* running an event through the chain                                  */

static enum step first_step(enum event ev)
{
    switch (ev) {
    case EV_CONNECT: return ST_OPEN;
    case EV_HELO: return ST_HELO;
    case EV_MAIL: return ST_MAIL;
    case EV_RCPT: return ST_RCPT;
    case EV_DATA: return ST_DATA;
    case EV_UNKNOWN: return ST_UNKNOWN;
    case EV_EOM: return ST_HEADER;
    }
    return ST_OPEN;
}

static void next_milter(session *ss)
{
    ss->cur++;
    ss->step = first_step(ss->event);
    ss->header_i = 0;
    ss->body_off = 0;
}

/* The body for the current milter, as it stands (a REPLBODY of a milter
 * before it included). Returns 0, or -1 when it cannot be read. */
static int body_open(session *ss)
{
    if (ss->msg)
        petrel_message_close(ss->msg);
    ss->body_off = 0;
    ss->msg = petrel_message_open(ss->s, PETREL_MESSAGE_BODY);
    ss->body_size = ss->msg ? petrel_message_size(ss->msg) : -1;
    return ss->body_size < 0 ? -1 : 0;
}

/* Issues the current step's call. */
static milter_status issue(session *ss)
{
    milter_conn *c = ss->links[ss->cur].conn;
    switch (ss->step) {
    case ST_OPEN:
        return milter_conn_open(c);
    case ST_CONNECT: {
        const char *addr = petrel_client_addr(ss->s);
        int family = AF_UNSPEC;
        if (addr && strchr(addr, ':'))
            family = AF_INET6;
        else if (addr && *addr && isdigit((unsigned char)*addr))
            family = AF_INET;
        const char *port = petrel_session_fact(ss->s, "client_port");
        unsigned long portnum = port ? strtoul(port, NULL, 10) : 0;
        return milter_conn_connect(c, petrel_client_name(ss->s), family, family == AF_UNSPEC ? NULL : addr,
                                   portnum <= 65535 ? (unsigned)portnum : 0);
    }
    case ST_HELO:
        return milter_conn_helo(c, ss->helo ? ss->helo : "");
    case ST_MAIL:
        return milter_conn_mail(c, ss->mail_argv);
    case ST_RCPT:
        return milter_conn_rcpt(c, ss->rcpt_argv, 0);
    case ST_UNKNOWN:
        return milter_conn_unknown(c, ss->unknown_cmd ? ss->unknown_cmd : "");
    case ST_DATA:
        return milter_conn_data(c);
    case ST_HEADER:
        return milter_conn_header(c, ss->headers[ss->header_i].name, ss->headers[ss->header_i].value);
    case ST_EOH:
        return milter_conn_eoh(c);
    case ST_BODY: {
        if (ss->readbuf == NULL && (ss->readbuf = malloc(MILTER_CHUNK_MAX)) == NULL) {
            ss->read_error = 1;
            return MILTER_DONE;
        }
        long n = petrel_message_pread(ss->msg, ss->body_off, ss->readbuf, MILTER_CHUNK_MAX);
        if (n <= 0) {
            /* The body is shorter than it was, or unreadable: the
             * message cannot be shown to the milter. */
            ss->read_error = 1;
            return MILTER_DONE;
        }
        size_t taken = 0;
        milter_status st = milter_conn_body(c, ss->readbuf, (size_t)n, &taken);
        ss->body_off += (long long)taken;
        return st;
    }
    case ST_EOM:
        return milter_conn_eom(c);
    }
    return MILTER_DONE;
}

/* Ends the event with a refusal from result r. */
static void refuse(session *ss, const milter_result *r)
{
    petrel_verdict v = r->verdict == MILTER_REJECT ? PETREL_REJECT : PETREL_TEMPFAIL;
    int code = r->code ? r->code : (v == PETREL_REJECT ? 550 : 451);
    const char *enhanced = r->enhanced;
    const char *text = r->text;
    if (r->verdict == MILTER_SHUTDOWN) {
        code = 421;
        enhanced = "4.7.0";
        text = "Server closing connection";
    }
    if (ss->event == EV_CONNECT && v == PETREL_TEMPFAIL && code != 421) {
        /* Postfix greets normally and answers the next commands with it
         * (the milter's verdict stands for the session). */
        set_result(ss, PETREL_CONTINUE, 0, NULL, NULL);
        finish(ss);
        return;
    }
    int multiline = r->verdict != MILTER_SHUTDOWN && r->reply != NULL && strstr(r->reply, "\r\n") != NULL;
    if (multiline)   /* logged whole, its CRLFs as "??", as Postfix */
        petrel_log(ss->s, PETREL_LOG_INFO, "milter-reject: %s from %s[%s]: %s", event_names[ss->event],
                   petrel_client_name(ss->s) ? petrel_client_name(ss->s) : "unknown",
                   petrel_client_addr(ss->s) ? petrel_client_addr(ss->s) : "", r->reply);
    else
        petrel_log(ss->s, PETREL_LOG_INFO, "milter-reject: %s from %s[%s]: %d %s %s", event_names[ss->event],
                   petrel_client_name(ss->s) ? petrel_client_name(ss->s) : "unknown",
                   petrel_client_addr(ss->s) ? petrel_client_addr(ss->s) : "", code, enhanced ? enhanced : "",
                   text ? text : "");
    set_result(ss, v, code, enhanced, text);
    if (multiline)
        set_result_lines(ss, r->reply);
    finish(ss);
}

/* Looks at the outcome of the call just made and moves on. Returns 1 when
 * the event is finished, else 0. */
static int after_call(session *ss)
{
    if (ss->read_error) {
        petrel_log(ss->s, PETREL_LOG_ERROR, "milter: cannot read the message back for the milters");
        set_result(ss, PETREL_TEMPFAIL, 451, "4.3.0", "Error: queue file read error");
        finish(ss);
        return 1;
    }
    milter_conn *c = ss->links[ss->cur].conn;
    const milter_result *r = milter_conn_result(c);
    if (r->quarantine) {
        if (ss->in_tx)
            apply_quarantine(ss, r->quarantine);
        else
            snprintf(ss->session_quarantine, sizeof ss->session_quarantine, "%s", r->quarantine);
    }
    if (ss->step == ST_OPEN) {
        /* A failure shows at CONNECT, where the default action applies. */
        ss->step = ST_CONNECT;
        return 0;
    }
    switch (r->verdict) {
    case MILTER_CONTINUE:
        break;
    case MILTER_ACCEPT:
        /* This milter is done with the message (or the session). */
        next_milter(ss);
        return 0;
    case MILTER_DISCARD:
        if (ss->event == EV_CONNECT || ss->event == EV_HELO)
            break;
        petrel_log(ss->s, PETREL_LOG_INFO, "milter-discard: %s: milter triggers DISCARD action",
                   event_names[ss->event]);
        ss->discard = 1;
        set_result(ss, PETREL_DISCARD, 0, NULL, NULL);
        finish(ss);
        return 1;
    case MILTER_REJECT:
    case MILTER_TEMPFAIL:
    case MILTER_SHUTDOWN:
        refuse(ss, r);
        return 1;
    }
    switch (ss->step) {
    case ST_HEADER:
        if (++ss->header_i < ss->nheaders)
            return 0;
        ss->step = ST_EOH;
        return 0;
    case ST_EOH:
        if (body_open(ss) < 0) {
            ss->read_error = 1;
            return after_call(ss);
        }
        ss->step = ss->body_size > 0 ? ST_BODY : ST_EOM;
        return 0;
    case ST_BODY:
        if (ss->body_off < ss->body_size)
            return 0;
        ss->step = ST_EOM;
        return 0;
    default:
        next_milter(ss);
        return 0;
    }
}

static void run(session *ss)
{
    while (!ss->finished && !ss->waiting) {
        if (ss->cur >= ss->n) {
            set_result(ss, ss->discard ? PETREL_DISCARD : PETREL_CONTINUE, 0, NULL, NULL);
            finish(ss);
            return;
        }
        if (ss->step == ST_HEADER && ss->header_i >= ss->nheaders)
            ss->step = ST_EOH;
        if (issue(ss) == MILTER_PENDING) {
            ss->waiting = 1;
            return;
        }
        if (after_call(ss))
            return;
    }
}

/* Runs event ev through the chain from within its hook. */
static petrel_verdict start_event(session *ss, petrel_session *s, enum event ev)
{
    if (ss->waiting) {
        /* The core's backstop timeout ran out while a milter still had the
         * previous event: the connection cannot take another. */
        petrel_log(s, PETREL_LOG_WARNING, "milter: %s while a milter still answers the previous event "
                   "(milter_hook_timeout is shorter than the milter timeouts)", event_names[ev]);
        petrel_set_reply(s, 451, "4.3.0", "Error: milter temporarily unavailable, try again later");
        return PETREL_TEMPFAIL;
    }
    ss->s = s;
    ss->event = ev;
    ss->cur = 0;
    ss->step = first_step(ev);
    ss->header_i = 0;
    ss->body_off = 0;
    ss->read_error = 0;
    ss->finished = 0;
    ss->pending = NULL;
    ss->in_hook = 1;
    run(ss);
    ss->in_hook = 0;
    if (ss->finished) {
        if (ss->verdict == PETREL_REJECT || ss->verdict == PETREL_TEMPFAIL)
            hand_reply(ss);
        return ss->verdict;
    }
    ss->pending = petrel_suspend(s);
    if (ss->pending == NULL) {
        petrel_set_reply(s, 451, "4.3.0", "Error: milter temporarily unavailable, try again later");
        return PETREL_TEMPFAIL;
    }
    return PETREL_PENDING;
}

static void session_end(void *arg)
{
    session *ss = arg;
    for (size_t i = 0; i < ss->n; i++) {
        link *l = &ss->links[i];
        if (l->conn) {
            milter_conn_quit(l->conn);
            milter_conn_free(l->conn);
        }
        if (l->watch)
            petrel_watch_cancel(l->watch);
        if (l->timer)
            petrel_timer_cancel(l->timer);
    }
    free(ss->links);
    free(ss->more_lines);
    headers_clear(ss);
    free(ss->headers);
    free(ss->readbuf);   /* msg and newbody went stale with the session: the core closed them */
    free(ss->helo);
    free(ss->unknown_cmd);
    free(ss->sender);
    free(ss->rcpt);
    free(ss->mail_arg);
    free(ss->rcpt_arg);
    free(ss->mail_argv);
    free(ss->rcpt_argv);
    free(ss);
}

static session *session_of(petrel_session *s)
{
    void **slot = petrel_session_slot(s);
    return slot ? *slot : NULL;
}

/* "<address>" for MAIL and RCPT. */
static char *angle(const char *address)
{
    size_t len = strlen(address) + 3;
    char *out = malloc(len);
    if (out)
        snprintf(out, len, "<%s>", address);
    return out;
}

/* MAIL's or RCPT's arguments for the milters, as Postfix sends them: the
 * address in <>, then each ESMTP parameter the client gave (params: the
 * core's, one space between them). Returns 0, or -1 out of memory. */
static int envelope_argv(const char *address, const char *params, char **text, const char ***argv)
{
    free(*text);
    free(*argv);
    *text = NULL;
    *argv = NULL;
    char *a = angle(address ? address : "");
    if (a == NULL)
        return -1;
    size_t alen = strlen(a), plen = params ? strlen(params) : 0;
    size_t n = plen ? 3 : 2;
    for (size_t i = 0; i < plen; i++)
        n += params[i] == ' ';
    char *t = malloc(alen + 1 + plen + 1);
    const char **v = malloc(n * sizeof *v);
    if (t == NULL || v == NULL) {
        free(a);
        free(t);
        free(v);
        return -1;
    }
    memcpy(t, a, alen + 1);
    free(a);
    size_t i = 0;
    v[i++] = t;
    if (plen) {
        char *q = t + alen + 1;
        memcpy(q, params, plen + 1);
        v[i++] = q;
        for (; *q; q++)
            if (*q == ' ') {
                *q = '\0';
                v[i++] = q + 1;
            }
    }
    v[i] = NULL;
    *text = t;
    *argv = v;
    return 0;
}

/* ------------------------------------------------------------------ */
/* hooks                                                               */

static petrel_verdict milter_connect(petrel_session *s)
{
    petrel_module *m = petrel_session_module(s);
    module_conf *conf = petrel_module_data(m);
    if (conf == NULL)
        return PETREL_CONTINUE;
    const char *service = petrel_service_name(s);
    const profile *prof = profile_of(conf, service);
    const milter_list *list = &prof->list;
    if (list->n == 0)
        return PETREL_CONTINUE;
    session *ss = calloc(1, sizeof *ss);
    if (ss == NULL)
        return PETREL_TEMPFAIL;
    ss->m = m;
    ss->s = s;
    ss->conf = conf;
    ss->profile = prof;
    ss->n = list->n;
    ss->links = calloc(list->n, sizeof *ss->links);
    if (ss->links == NULL) {
        free(ss);
        return PETREL_TEMPFAIL;
    }
    static const milter_conn_ops ops = { op_watch, op_timer, op_done, op_edit, op_macro, op_log };
    for (size_t i = 0; i < list->n; i++) {
        ss->links[i].ss = ss;
        ss->links[i].conn = milter_conn_create(list->items[i], &ops, &ss->links[i]);
    }
    for (size_t i = 0; i < list->n; i++)
        if (ss->links[i].conn == NULL) {
            session_end(ss);
            return PETREL_TEMPFAIL;
        }
    *petrel_session_slot(s) = ss;
    petrel_pool_cleanup_add(petrel_session_pool(s), session_end, ss);
    return start_event(ss, s, EV_CONNECT);
}

static petrel_verdict milter_helo(petrel_session *s, const char *helo)
{
    session *ss = session_of(s);
    if (ss == NULL)
        return PETREL_CONTINUE;
    free(ss->helo);
    ss->helo = strdup(helo ? helo : "");
    return start_event(ss, s, EV_HELO);
}

static petrel_verdict milter_mail(petrel_session *s, const char *sender)
{
    session *ss = session_of(s);
    if (ss == NULL)
        return PETREL_CONTINUE;
    free(ss->sender);
    ss->sender = strdup(sender ? sender : "");
    if (ss->sender == NULL || envelope_argv(sender, petrel_sender_params(s), &ss->mail_arg, &ss->mail_argv) < 0)
        return PETREL_TEMPFAIL;
    ss->in_tx = 1;
    ss->tx_quarantined = 0;
    ss->discard = 0;
    if (ss->session_quarantine[0])
        apply_quarantine(ss, ss->session_quarantine);
    return start_event(ss, s, EV_MAIL);
}

static petrel_verdict milter_rcpt(petrel_session *s, const char *recipient)
{
    session *ss = session_of(s);
    if (ss == NULL)
        return PETREL_CONTINUE;
    free(ss->rcpt);
    ss->rcpt = strdup(recipient ? recipient : "");
    if (ss->rcpt == NULL
        || envelope_argv(recipient, petrel_recipient_params(s), &ss->rcpt_arg, &ss->rcpt_argv) < 0)
        return PETREL_TEMPFAIL;
    return start_event(ss, s, EV_RCPT);
}

static petrel_verdict milter_unknown(petrel_session *s, const char *command_line)
{
    session *ss = session_of(s);
    if (ss == NULL)
        return PETREL_CONTINUE;
    free(ss->unknown_cmd);
    ss->unknown_cmd = strdup(command_line ? command_line : "");
    if (ss->unknown_cmd == NULL)
        return PETREL_TEMPFAIL;
    return start_event(ss, s, EV_UNKNOWN);
}

static petrel_verdict milter_data(petrel_session *s)
{
    session *ss = session_of(s);
    if (ss == NULL)
        return PETREL_CONTINUE;
    return start_event(ss, s, EV_DATA);
}

static petrel_verdict milter_eom(petrel_session *s)
{
    session *ss = session_of(s);
    if (ss == NULL)
        return PETREL_CONTINUE;
    ss->msg = NULL;       /* a previous message's handles went stale with it */
    ss->newbody = NULL;
    if (headers_load(ss) < 0) {
        petrel_set_reply(s, 451, "4.3.0", "Error: insufficient system resources");
        return PETREL_TEMPFAIL;
    }
    return start_event(ss, s, EV_EOM);
}

const petrel_module_desc petrel_module_descriptor = {
    PETREL_MODULE_INIT,
    .name = "milter",
    .version = "1.0",
    .description = "Sendmail milters (smtpd_milters, non_smtpd_milters): spamass-milter, clamav-milter, "
                   "OpenDKIM, rspamd and any libmilter filter",
    .params = milter_params,
    .init = milter_init,
    .fini = milter_fini,
    .check = milter_check,
    .hooks = {
        .connect = milter_connect,
        .helo = milter_helo,
        .mail = milter_mail,
        .rcpt = milter_rcpt,
        .data = milter_data,
        .unknown = milter_unknown,
        .end_of_message = milter_eom,
    },
    .default_action = PETREL_ON_FAILURE_TEMPFAIL,
    /* A backstop: the milters' own timeouts (Postfix's) decide. */
    .hook_timeout_ms = 3600000,
};
