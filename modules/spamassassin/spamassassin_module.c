/*
 * modules/spamassassin: the message goes to spamd (SPAMC/SPAMD SYMBOLS) at
 * end of data, no milter in between (doc/modules/spamassassin.md). The
 * protocol is spamd_client.h's; this file is the glue.
 *
 * As the clamav module: at end_of_message the client pulls the message
 * from the queue file (petrel_message_open/read: our Received header, the
 * headers, the body) while the hook is suspended; the module keeps no copy
 * (spamassassin_buffer_limit, which sized the copy earlier versions kept,
 * is still accepted and has no effect). spamd wants the length first:
 * petrel_message_size().
 *
 * Outcomes, as spamass-milter writes them: X-Spam-Status ("Yes, score=7.3
 * required=5.0 tests=A,B" or "No, ...") and X-Spam-Score on every scanned
 * message, X-Spam-Flag: YES on spam; with spamassassin_reject_score set, a
 * score at or above it is rejected (550 5.7.1 Blocked by SpamAssassin);
 * -1 means "what spamd calls spam" (spamass-milter's -r -1). A message above
 * spamassassin_max_size is not scanned (spamc -s); spamd down, slow or
 * failing: spamassassin_failure_action (accept by default, as spamc does).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <petrel/plugin.h>

#include "spamd_client.h"

static const char *const failure_actions[] = { "accept", "tempfail", NULL };

static const petrel_param sa_params[] = {
    { PETREL_PARAM_INIT, .name = "spamassassin_spamd", .type = PETREL_PARAM_STRING, .default_value = "127.0.0.1:783",
      .help = "where spamd listens: host:port, [ipv6]:port or unix:/path (spamd --listen, --socketpath)" },
    { PETREL_PARAM_INIT, .name = "spamassassin_connect_timeout", .type = PETREL_PARAM_TIME, .default_value = "10s",
      .help = "connecting to spamd", .min = 1, .max = 600 },
    { PETREL_PARAM_INIT, .name = "spamassassin_timeout", .type = PETREL_PARAM_TIME, .default_value = "600s",
      .help = "the longest wait for spamd without progress (spamc -t)", .min = 1, .max = 3000 },
    { PETREL_PARAM_INIT, .name = "spamassassin_max_size", .type = PETREL_PARAM_SIZE, .default_value = "512000",
      .help = "messages larger than this are not scanned (spamc -s)", .min = 1024 },
    { PETREL_PARAM_INIT, .name = "spamassassin_reject_score", .type = PETREL_PARAM_STRING, .default_value = "",
      .help = "reject at or above this score; -1: what spamd calls spam; empty: tag only (spamass-milter -r)" },
    { PETREL_PARAM_INIT, .name = "spamassassin_reject_text", .type = PETREL_PARAM_STRING,
      .default_value = "Blocked by SpamAssassin", .help = "the text of the 550 5.7.1 reply to rejected spam" },
    { PETREL_PARAM_INIT, .name = "spamassassin_failure_action", .type = PETREL_PARAM_STRING,
      .default_value = "accept", .help = "spamd down, slow or failing: accept (unscanned) or tempfail",
      .choices = failure_actions },
    { PETREL_PARAM_INIT, .name = "spamassassin_user", .type = PETREL_PARAM_STRING, .default_value = "",
      .help = "the user whose preferences spamd applies (spamc -u); empty: spamd's default" },
    { PETREL_PARAM_INIT, .name = "spamassassin_buffer_limit", .type = PETREL_PARAM_SIZE, .default_value = "1048576",
      .help = "no effect: the message is read from the queue file (kept so that main.cf files that set it still load)",
      .min = 65536, .max = 1073741824 },
    { .name = NULL },
};

typedef struct conf {
    spamd_settings *spamd;
    size_t max_size;
    int reject;              /* spamassassin_reject_score is set */
    double reject_score;     /* < 0: spamd's own verdict */
    int tempfail_on_failure;
    char *reject_text;
} conf;

static spamd_settings *make_settings(petrel_module *m, char *err, size_t errlen)
{
    const char *user = petrel_param_string(m, "spamassassin_user");
    spamd_config cfg = {
        .address = petrel_param_string(m, "spamassassin_spamd"),
        .connect_timeout_ms = (unsigned)petrel_param_int(m, "spamassassin_connect_timeout") * 1000u,
        .timeout_ms = (unsigned)petrel_param_int(m, "spamassassin_timeout") * 1000u,
        .max_size = (size_t)petrel_param_int(m, "spamassassin_max_size"),
        .user = user && *user ? user : NULL,
    };
    return spamd_settings_create(&cfg, err, errlen);
}

static int parse_score(const char *text, int *set, double *score)
{
    *set = 0;
    if (text == NULL || *text == '\0')
        return 0;
    char *end;
    double v = strtod(text, &end);
    if (end == text || *end != '\0')
        return -1;
    *set = 1;
    *score = v;
    return 0;
}

/* spamassassin_buffer_limit sized the copy of the message earlier versions kept;
 * nothing is kept now (the message is read from the queue file). Still
 * accepted so that a main.cf setting it loads, but a value set says what
 * will not happen (rule 2: nothing changes meaning silently). */
static void warn_buffer_limit(petrel_module *m)
{
    long long v = petrel_param_int(m, "spamassassin_buffer_limit");
    if (v != 1048576)
        petrel_module_log(m, PETREL_LOG_WARNING,
                          "spamassassin_buffer_limit = %lld has no effect: the message is read from the queue file and "
                          "no copy is kept in memory (remove it from main.cf)", v);
}

static int sa_check(petrel_module *m)
{
    warn_buffer_limit(m);
    int rc = 0;
    char err[256];
    spamd_settings *s = make_settings(m, err, sizeof err);
    if (s == NULL) {
        petrel_config_error(m, "spamassassin_spamd", "%s", err);
        rc = -1;
    }
    spamd_settings_free(s);
    int set;
    double score;
    if (parse_score(petrel_param_string(m, "spamassassin_reject_score"), &set, &score) < 0) {
        petrel_config_error(m, "spamassassin_reject_score", "\"%s\" is not a number (a score, -1, or empty)",
                            petrel_param_string(m, "spamassassin_reject_score"));
        rc = -1;
    }
    return rc;
}

static void conf_free(conf *c)
{
    if (c == NULL)
        return;
    spamd_settings_free(c->spamd);
    free(c->reject_text);
    free(c);
}

static int sa_init(petrel_module *m, const char **error)
{
    conf *c = calloc(1, sizeof *c);
    char err[256];
    if (c == NULL || (c->spamd = make_settings(m, err, sizeof err)) == NULL ||
        parse_score(petrel_param_string(m, "spamassassin_reject_score"), &c->reject, &c->reject_score) < 0) {
        conf_free(c);
        *error = "bad spamassassin_spamd or spamassassin_reject_score";
        return -1;
    }
    c->max_size = (size_t)petrel_param_int(m, "spamassassin_max_size");
    c->tempfail_on_failure = strcmp(petrel_param_string(m, "spamassassin_failure_action"), "tempfail") == 0;
    c->reject_text = strdup(petrel_param_string(m, "spamassassin_reject_text"));
    if (c->reject_text == NULL) {
        conf_free(c);
        *error = "out of memory";
        return -1;
    }
    petrel_module_set_data(m, c);
    return 0;
}

static void sa_fini(petrel_module *m)
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
    petrel_message *msg;      /* what the read callback hands out: the stored message */
    spamd_client *client;
    petrel_watch *watch;
    int watch_fd, watch_events;
    petrel_timer *timer;
    petrel_pending *pending;
} scan;

static void on_io(int fd, int events, void *arg)
{
    (void)fd;
    scan *sc = arg;
    spamd_client_io(sc->client, events);
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
    spamd_client_timeout(sc->client);
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

static void op_log(void *arg, spamd_log_level level, const char *text)
{
    scan *sc = arg;
    petrel_log(sc->s, level == SPAMD_LOG_INFO ? PETREL_LOG_INFO
                      : level == SPAMD_LOG_WARNING ? PETREL_LOG_WARNING : PETREL_LOG_ERROR, "%s", text);
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
    spamd_client_free(sc->client);
    sc->client = NULL;
    if (sc->msg) {
        petrel_message_close(sc->msg);
        sc->msg = NULL;
    }
}

/* spamass-milter's headers and the verdict. */
static petrel_verdict decide(scan *sc, int *code, const char **enhanced, char *text, size_t textlen)
{
    const spamd_result *r = spamd_client_result(sc->client);
    petrel_session *s = sc->s;
    conf *c = sc->conf;
    *code = 0;
    *enhanced = NULL;
    text[0] = '\0';
    if (r->outcome == SPAMD_SKIPPED) {
        petrel_log(s, PETREL_LOG_INFO, "spamassassin: message not scanned: larger than spamassassin_max_size "
                   "(%zu bytes)", c->max_size);
        return PETREL_CONTINUE;
    }
    if (r->outcome != SPAMD_OK) {
        petrel_log(s, PETREL_LOG_WARNING, "spamassassin: cannot scan the message: %s; spamassassin_failure_action %s",
                   r->error ? r->error : (r->code_text ? r->code_text : "no answer"),
                   c->tempfail_on_failure ? "tempfail" : "accept");
        if (!c->tempfail_on_failure)
            return PETREL_CONTINUE;
        *code = 451;
        *enhanced = "4.7.1";
        snprintf(text, textlen, "Service unavailable - try again later");
        return PETREL_TEMPFAIL;
    }
    char status[1024];
    snprintf(status, sizeof status, "%s, score=%.1f required=%.1f tests=%.900s", r->is_spam ? "Yes" : "No",
             r->score, r->threshold, r->symbols && *r->symbols ? r->symbols : "none");
    char score[32];
    snprintf(score, sizeof score, "%.1f", r->score);
    petrel_log(s, PETREL_LOG_INFO, "spamassassin: %s, score=%.1f required=%.1f", r->is_spam ? "spam" : "clean",
               r->score, r->threshold);
    int reject = c->reject && (c->reject_score < 0 ? r->is_spam : r->score >= c->reject_score);
    if (reject) {
        *code = 550;
        *enhanced = "5.7.1";
        snprintf(text, textlen, "%s", c->reject_text);
        return PETREL_REJECT;
    }
    if (r->is_spam)
        petrel_header_add(s, "X-Spam-Flag", "YES");
    petrel_header_add(s, "X-Spam-Score", score);
    petrel_header_add(s, "X-Spam-Status", status);
    return PETREL_CONTINUE;
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

static petrel_verdict sa_data(petrel_session *s)
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

static petrel_verdict sa_eom(petrel_session *s)
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
    long long stored = petrel_message_size(sc->msg);
    size_t size = stored < 0 ? 0 : (size_t)stored;
    if (stored < 0 || size > sc->conf->max_size) {
        petrel_log(s, PETREL_LOG_INFO, "spamassassin: message not scanned: larger than spamassassin_max_size "
                   "(%zu bytes)", sc->conf->max_size);
        finish_scan(sc);
        return PETREL_CONTINUE;
    }
    static const spamd_ops ops = { op_watch, op_timer, op_done, op_read, NULL, op_log };
    sc->client = spamd_client_create(sc->conf->spamd, &ops, sc);
    if (sc->client == NULL) {
        finish_scan(sc);
        return PETREL_TEMPFAIL;
    }
    if (spamd_client_start(sc->client, SPAMD_SYMBOLS, size) == SPAMD_DONE) {
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
    .name = "spamassassin",
    .version = "1.0",
    .description = "spam scoring with spamd (SPAMC/SPAMD), no milter in between",
    .params = sa_params,
    .init = sa_init,
    .fini = sa_fini,
    .check = sa_check,
    .hooks = {
        .data = sa_data,
        .end_of_message = sa_eom,
    },
    .default_action = PETREL_ON_FAILURE_CONTINUE,
    /* spamassassin_connect_timeout and spamassassin_timeout decide; this is a backstop. */
    .hook_timeout_ms = 3600000,
};
