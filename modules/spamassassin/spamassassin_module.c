/*
 * modules/spamassassin: the message goes to spamd (SPAMC/SPAMD SYMBOLS) at
 * end of data, no milter in between (doc/modules/spamassassin.md). The
 * protocol is spamd_client.h's; the session side (watch, timer, the stored
 * message, suspend and resume) is modules/common/scanner_session.c's, as
 * for clamav; this file is the configuration and the verdict.
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

#include "scanner_session.h"
#include "spamd_client.h"
#include "buffer_limit.h"

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

static int sa_check(petrel_module *m)
{
    buffer_limit_warn_unused(m, "spamassassin_buffer_limit");
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
/* a session: scanner_session.c, with spamd's client and verdict        */

static const scanner_kind sa_scanner;

static size_t sa_max_size(const void *cv)
{
    const conf *c = cv;
    return c->max_size;
}

static void op_log(void *arg, spamd_log_level level, const char *text)
{
    scanner_session_log(arg, (int)level, text);
}

/* spamd wants the length first: the stored message's size. */
static int sa_start(scanner_session *ss, const void *cv, size_t size, void **client)
{
    const conf *c = cv;
    static const spamd_ops ops = { scanner_session_watch, scanner_session_timer, scanner_session_done,
                                   scanner_session_read, NULL, op_log };
    spamd_client *cl = spamd_client_create(c->spamd, &ops, ss);
    *client = cl;
    if (cl == NULL)
        return -1;
    return spamd_client_start(cl, SPAMD_SYMBOLS, size) == SPAMD_PENDING;
}

static void sa_io(void *client, int events)
{
    spamd_client_io(client, events);
}

static void sa_timeout(void *client)
{
    spamd_client_timeout(client);
}

static void sa_free(void *client)
{
    spamd_client_free(client);
}

/* spamass-milter's headers and the verdict. */
static petrel_verdict sa_decide(petrel_session *s, const void *cv, const void *client, scanner_reply *reply)
{
    const spamd_result *r = spamd_client_result(client);
    const conf *c = cv;
    if (r->outcome == SPAMD_SKIPPED)
        return scanner_skipped(s, &sa_scanner, c->max_size);
    if (r->outcome != SPAMD_OK)
        return scanner_failed(s, &sa_scanner, r->error ? r->error : (r->code_text ? r->code_text : "no answer"),
                              c->tempfail_on_failure, reply);
    char status[1024];
    snprintf(status, sizeof status, "%s, score=%.1f required=%.1f tests=%.900s", r->is_spam ? "Yes" : "No",
             r->score, r->threshold, r->symbols && *r->symbols ? r->symbols : "none");
    char score[32];
    snprintf(score, sizeof score, "%.1f", r->score);
    petrel_log(s, PETREL_LOG_INFO, "spamassassin: %s, score=%.1f required=%.1f", r->is_spam ? "spam" : "clean",
               r->score, r->threshold);
    int reject = c->reject && (c->reject_score < 0 ? r->is_spam : r->score >= c->reject_score);
    if (reject) {
        reply->code = 550;
        reply->enhanced = "5.7.1";
        snprintf(reply->text, sizeof reply->text, "%s", c->reject_text);
        return PETREL_REJECT;
    }
    if (r->is_spam)
        petrel_header_add(s, "X-Spam-Flag", "YES");
    petrel_header_add(s, "X-Spam-Score", score);
    petrel_header_add(s, "X-Spam-Status", status);
    return PETREL_CONTINUE;
}

static const scanner_kind sa_scanner = {
    .name = "spamassassin",
    .max_size = sa_max_size,
    .start = sa_start,
    .io = sa_io,
    .timeout = sa_timeout,
    .free = sa_free,
    .decide = sa_decide,
};

static petrel_verdict sa_data(petrel_session *s)
{
    return scanner_session_data(s, &sa_scanner);
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
        .end_of_message = scanner_session_eom,
    },
    .default_action = PETREL_ON_FAILURE_CONTINUE,
    /* spamassassin_connect_timeout and spamassassin_timeout decide; this is a backstop. */
    .hook_timeout_ms = 3600000,
};
