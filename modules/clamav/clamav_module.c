/*
 * modules/clamav: the message goes to clamd with INSTREAM at end of data,
 * no milter in between (doc/modules/clamav.md). The protocol is
 * clamd_client.h's; this file is the glue.
 *
 * At end_of_message the client pulls the message from the queue file
 * (petrel_message_open/read: our Received header, the headers, the body,
 * exactly what is queued), 64 KiB at a time, while the hook is suspended;
 * the module keeps no copy of it. clamav_buffer_limit, which sized the
 * copy earlier versions kept, is still accepted and has no effect.
 *
 * Outcomes: a finding rejects the message (clamav_action = reject, with
 * clamav_reject_text) or holds it (quarantine), with X-Virus-Status as
 * clamav-milter writes it; a clean message gets X-Virus-Status: Clean; a
 * message above clamav_max_size is not scanned (logged, as spamc skips
 * what is too big); clamd down, slow or confused: clamav_failure_action
 * (tempfail by default, or accept), logged with what happened.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <petrel/plugin.h>

#include "clamd_client.h"

static const char *const actions[] = { "reject", "quarantine", NULL };
static const char *const failure_actions[] = { "tempfail", "accept", NULL };

static const petrel_param clamav_params[] = {
    { PETREL_PARAM_INIT, .name = "clamav_clamd", .type = PETREL_PARAM_STRING,
      .default_value = "unix:/var/run/clamav/clamd.ctl",
      .help = "where clamd listens: host:port, [ipv6]:port or unix:/path (clamd.conf's TCPSocket or LocalSocket)" },
    { PETREL_PARAM_INIT, .name = "clamav_connect_timeout", .type = PETREL_PARAM_TIME, .default_value = "10s",
      .help = "connecting to clamd", .min = 1, .max = 600 },
    { PETREL_PARAM_INIT, .name = "clamav_timeout", .type = PETREL_PARAM_TIME, .default_value = "120s",
      .help = "the longest wait for clamd without progress", .min = 1, .max = 3000 },
    { PETREL_PARAM_INIT, .name = "clamav_max_size", .type = PETREL_PARAM_SIZE, .default_value = "26214400",
      .help = "messages larger than this are not scanned (clamd's StreamMaxLength)", .min = 1024 },
    { PETREL_PARAM_INIT, .name = "clamav_action", .type = PETREL_PARAM_STRING, .default_value = "reject",
      .help = "what a finding does: reject or quarantine (the hold queue)", .choices = actions },
    { PETREL_PARAM_INIT, .name = "clamav_reject_text", .type = PETREL_PARAM_STRING,
      .default_value = "Message rejected: infected with %v",
      .help = "the 554 5.7.1 reply to an infected message; %v is the signature name" },
    { PETREL_PARAM_INIT, .name = "clamav_failure_action", .type = PETREL_PARAM_STRING,
      .default_value = "tempfail",
      .help = "clamd down, slow or failing: tempfail (451 4.7.1) or accept (unscanned)", .choices = failure_actions },
    { PETREL_PARAM_INIT, .name = "clamav_add_header", .type = PETREL_PARAM_BOOL, .default_value = "yes",
      .help = "add X-Virus-Status (Clean, or Infected (NAME)) as clamav-milter's AddHeader does" },
    { PETREL_PARAM_INIT, .name = "clamav_buffer_limit", .type = PETREL_PARAM_SIZE, .default_value = "1048576",
      .help = "no effect: the message is read from the queue file (kept so that main.cf files that set it still load)",
      .min = 65536, .max = 1073741824 },
    { .name = NULL },
};

typedef struct conf {
    clamd_settings *clamd;
    size_t max_size;
    int quarantine;
    int accept_on_failure;
    int add_header;
    char *reject_text;
} conf;

static clamd_settings *make_settings(petrel_module *m, char *err, size_t errlen)
{
    clamd_config cfg = {
        .address = petrel_param_string(m, "clamav_clamd"),
        .connect_timeout_ms = (unsigned)petrel_param_int(m, "clamav_connect_timeout") * 1000u,
        .timeout_ms = (unsigned)petrel_param_int(m, "clamav_timeout") * 1000u,
        .max_size = (size_t)petrel_param_int(m, "clamav_max_size"),
    };
    const char *a = cfg.address;
    /* clamav-milter's spellings too: tcp:host:port, unix:/path */
    if (a && strncmp(a, "tcp:", 4) == 0)
        cfg.address = a + 4;
    return clamd_settings_create(&cfg, err, errlen);
}

/* clamav_buffer_limit sized the copy of the message earlier versions kept;
 * nothing is kept now (the message is read from the queue file). Still
 * accepted so that a main.cf setting it loads, but a value set says what
 * will not happen (rule 2: nothing changes meaning silently). */
static void warn_buffer_limit(petrel_module *m)
{
    long long v = petrel_param_int(m, "clamav_buffer_limit");
    if (v != 1048576)
        petrel_module_log(m, PETREL_LOG_WARNING,
                          "clamav_buffer_limit = %lld has no effect: the message is read from the queue file and "
                          "no copy is kept in memory (remove it from main.cf)", v);
}

static int clamav_check(petrel_module *m)
{
    warn_buffer_limit(m);
    char err[256];
    clamd_settings *s = make_settings(m, err, sizeof err);
    if (s == NULL) {
        petrel_config_error(m, "clamav_clamd", "%s", err);
        return -1;
    }
    clamd_settings_free(s);
    return 0;
}

static void conf_free(conf *c)
{
    if (c == NULL)
        return;
    clamd_settings_free(c->clamd);
    free(c->reject_text);
    free(c);
}

static int clamav_init(petrel_module *m, const char **error)
{
    conf *c = calloc(1, sizeof *c);
    char err[256];
    if (c == NULL || (c->clamd = make_settings(m, err, sizeof err)) == NULL) {
        conf_free(c);
        *error = "clamav_clamd: bad address";
        return -1;
    }
    c->max_size = (size_t)petrel_param_int(m, "clamav_max_size");
    c->quarantine = strcmp(petrel_param_string(m, "clamav_action"), "quarantine") == 0;
    c->accept_on_failure = strcmp(petrel_param_string(m, "clamav_failure_action"), "accept") == 0;
    c->add_header = petrel_param_bool(m, "clamav_add_header");
    c->reject_text = strdup(petrel_param_string(m, "clamav_reject_text"));
    if (c->reject_text == NULL) {
        conf_free(c);
        *error = "out of memory";
        return -1;
    }
    petrel_module_set_data(m, c);
    return 0;
}

static void clamav_fini(petrel_module *m)
{
    conf_free(petrel_module_data(m));
    petrel_module_set_data(m, NULL);
}

/* ------------------------------------------------------------------ */
/* a session                                                           */

typedef struct scan {
    petrel_module *m;
    petrel_session *s;
    conf *conf;
    clamd_client *client;
    petrel_watch *watch;
    int watch_fd, watch_events;
    petrel_timer *timer;
    petrel_pending *pending;
    petrel_message *msg;      /* what the read callback hands out: the stored message */
} scan;

static void on_io(int fd, int events, void *arg)
{
    (void)fd;
    scan *sc = arg;
    clamd_client_io(sc->client, events);
}

static void op_watch(void *arg, int fd, int events)
{
    scan *sc = arg;
    if (sc->watch && (events == 0 || sc->watch_fd != fd || sc->watch_events != events)) {
        petrel_watch_cancel(sc->watch);
        sc->watch = NULL;
    }
    if (events && sc->watch == NULL) {
        sc->watch = petrel_watch_fd(sc->m, fd, events, on_io, sc);
        sc->watch_fd = fd;
        sc->watch_events = events;
    }
}

static void on_timer(void *arg)
{
    scan *sc = arg;
    sc->timer = NULL;
    clamd_client_timeout(sc->client);
}

static void op_timer(void *arg, unsigned ms)
{
    scan *sc = arg;
    if (sc->timer) {
        petrel_timer_cancel(sc->timer);
        sc->timer = NULL;
    }
    if (ms)
        sc->timer = petrel_timer_start(sc->m, ms, on_timer, sc);
}

static void op_log(void *arg, clamd_log_level level, const char *text)
{
    scan *sc = arg;
    petrel_log(sc->s, level == CLAMD_LOG_INFO ? PETREL_LOG_INFO
                      : level == CLAMD_LOG_WARNING ? PETREL_LOG_WARNING : PETREL_LOG_ERROR, "%s", text);
}

static long op_read(void *arg, void *buf, size_t cap)
{
    scan *sc = arg;
    return petrel_message_read(sc->msg, buf, cap);
}

static void finish_scan(scan *sc)
{
    if (sc->watch) {
        petrel_watch_cancel(sc->watch);
        sc->watch = NULL;
    }
    if (sc->timer) {
        petrel_timer_cancel(sc->timer);
        sc->timer = NULL;
    }
    clamd_client_free(sc->client);
    sc->client = NULL;
    if (sc->msg) {
        petrel_message_close(sc->msg);
        sc->msg = NULL;
    }
}

/* The verdict from the client's result; replies through *code etc. */
static petrel_verdict decide(scan *sc, int *code, const char **enhanced, char *text, size_t textlen)
{
    const clamd_result *r = clamd_client_result(sc->client);
    petrel_session *s = sc->s;
    conf *c = sc->conf;
    *code = 0;
    *enhanced = NULL;
    text[0] = '\0';
    if (r->outcome == CLAMD_OUTCOME_SKIPPED) {
        petrel_log(s, PETREL_LOG_INFO, "clamav: message not scanned: larger than clamav_max_size (%zu bytes)",
                   c->max_size);
        return PETREL_CONTINUE;
    }
    if (r->outcome == CLAMD_OUTCOME_ANSWERED && r->reply.verdict == CLAMD_CLEAN) {
        if (c->add_header)
            petrel_header_add(s, "X-Virus-Status", "Clean");
        return PETREL_CONTINUE;
    }
    if (r->outcome == CLAMD_OUTCOME_ANSWERED && r->reply.verdict == CLAMD_FOUND) {
        char status[CLAMD_VIRUS_MAX + 32];
        snprintf(status, sizeof status, "Infected (%s)", r->reply.virus);
        petrel_log(s, PETREL_LOG_INFO, "clamav: infected: %s%s", r->reply.virus,
                   c->quarantine ? " (quarantined)" : "");
        if (c->add_header)
            petrel_header_add(s, "X-Virus-Status", status);
        if (c->quarantine) {
            petrel_quarantine(s, status);
            return PETREL_CONTINUE;
        }
        size_t o = 0;
        for (const char *p = c->reject_text; *p && o + 1 < textlen; p++) {
            if (p[0] == '%' && p[1] == 'v') {
                o += (size_t)snprintf(text + o, textlen - o, "%s", r->reply.virus);
                if (o >= textlen)
                    o = textlen - 1;
                p++;
            } else {
                text[o++] = *p;
            }
        }
        text[o] = '\0';
        *code = 554;
        *enhanced = "5.7.1";
        return PETREL_REJECT;
    }
    /* FAILED, or clamd said ERROR (a size limit of its own included). */
    const char *why = r->outcome == CLAMD_OUTCOME_FAILED ? (r->error ? r->error : "no answer") : r->reply.text;
    petrel_log(s, PETREL_LOG_WARNING, "clamav: cannot scan the message: %s; clamav_failure_action %s", why,
               c->accept_on_failure ? "accept" : "tempfail");
    if (c->accept_on_failure)
        return PETREL_CONTINUE;
    *code = 451;
    *enhanced = "4.7.1";
    snprintf(text, textlen, "Service unavailable - try again later");
    return PETREL_TEMPFAIL;
}

static void op_done(void *arg)
{
    scan *sc = arg;
    int code;
    const char *enhanced;
    char text[400];
    petrel_verdict v = decide(sc, &code, &enhanced, text, sizeof text);
    finish_scan(sc);
    petrel_pending *p = sc->pending;
    sc->pending = NULL;
    if (p)
        petrel_resume(p, v, code, enhanced, code ? text : NULL);
}

static void session_end(void *arg)
{
    scan *sc = arg;
    sc->msg = NULL;   /* the session's end made it stale; the core closed it */
    finish_scan(sc);
    free(sc);
}

static scan *scan_of(petrel_session *s)
{
    void **slot = petrel_session_slot(s);
    return slot ? *slot : NULL;
}

static petrel_verdict clamav_data(petrel_session *s)
{
    scan *sc = scan_of(s);
    if (sc == NULL) {
        petrel_module *m = petrel_session_module(s);
        conf *c = petrel_module_data(m);
        if (c == NULL || (sc = calloc(1, sizeof *sc)) == NULL)
            return PETREL_TEMPFAIL;
        sc->m = m;
        sc->conf = c;
        *petrel_session_slot(s) = sc;
        petrel_pool_cleanup_add(petrel_session_pool(s), session_end, sc);
    }
    sc->s = s;
    return PETREL_CONTINUE;
}

static petrel_verdict clamav_eom(petrel_session *s)
{
    scan *sc = scan_of(s);
    if (sc == NULL)
        return PETREL_CONTINUE;
    sc->s = s;
    sc->msg = petrel_message_open(s, 0);
    if (sc->msg == NULL) {
        petrel_set_reply(s, 451, "4.3.0", "Error: queue file write error");
        return PETREL_TEMPFAIL;
    }
    long long size = petrel_message_size(sc->msg);
    if (size < 0 || (unsigned long long)size > sc->conf->max_size) {
        petrel_log(s, PETREL_LOG_INFO, "clamav: message not scanned: larger than clamav_max_size (%zu bytes)",
                   sc->conf->max_size);
        finish_scan(sc);
        return PETREL_CONTINUE;
    }
    static const clamd_ops ops = { op_watch, op_timer, op_done, op_read, op_log };
    sc->client = clamd_client_create(sc->conf->clamd, &ops, sc);
    if (sc->client == NULL) {
        finish_scan(sc);
        return PETREL_TEMPFAIL;
    }
    if (clamd_client_start(sc->client, CLAMD_INSTREAM, 0) == CLAMD_DONE) {
        int code;
        const char *enhanced;
        char text[400];
        petrel_verdict v = decide(sc, &code, &enhanced, text, sizeof text);
        finish_scan(sc);
        if (code)
            petrel_set_reply(s, code, enhanced, text);
        return v;
    }
    sc->pending = petrel_suspend(s);
    if (sc->pending == NULL) {
        finish_scan(sc);
        return PETREL_TEMPFAIL;
    }
    return PETREL_PENDING;
}

const petrel_module_desc petrel_module_descriptor = {
    PETREL_MODULE_INIT,
    .name = "clamav",
    .version = "1.0",
    .description = "virus scanning with clamd (INSTREAM), no milter in between",
    .params = clamav_params,
    .init = clamav_init,
    .fini = clamav_fini,
    .check = clamav_check,
    .hooks = {
        .data = clamav_data,
        .end_of_message = clamav_eom,
    },
    .default_action = PETREL_ON_FAILURE_TEMPFAIL,
    /* clamav_connect_timeout and clamav_timeout decide; this is a backstop. */
    .hook_timeout_ms = 3600000,
};
