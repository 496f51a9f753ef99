/*
 * modules/clamav: the message goes to clamd with INSTREAM at end of data,
 * no milter in between (doc/modules/clamav.md). The protocol is
 * clamd_client.h's; the session side (watch, timer, the stored message,
 * suspend and resume) is modules/common/scanner_session.c's, which every
 * content scanner shares; this file is the configuration and the verdict.
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
#include "scanner_session.h"
#include "buffer_limit.h"

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

static int clamav_check(petrel_module *m)
{
    buffer_limit_warn_unused(m, "clamav_buffer_limit");
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
/* a session: scanner_session.c, with clamd's client and verdict        */

static const scanner_kind clamav_scanner;

static size_t clamav_max_size(const void *cv)
{
    const conf *c = cv;
    return c->max_size;
}

static void op_log(void *arg, clamd_log_level level, const char *text)
{
    scanner_session_log(arg, (int)level, text);
}

static int clamav_start(scanner_session *ss, const void *cv, size_t size, void **client)
{
    (void)size;   /* the stream is cut at clamav_max_size as it is sent */
    const conf *c = cv;
    static const clamd_ops ops = { scanner_session_watch, scanner_session_timer, scanner_session_done,
                                   scanner_session_read, op_log };
    clamd_client *cl = clamd_client_create(c->clamd, &ops, ss);
    *client = cl;
    if (cl == NULL)
        return -1;
    return clamd_client_start(cl, CLAMD_INSTREAM, 0) == CLAMD_PENDING;
}

static void clamav_io(void *client, int events)
{
    clamd_client_io(client, events);
}

static void clamav_timeout(void *client)
{
    clamd_client_timeout(client);
}

static void clamav_free(void *client)
{
    clamd_client_free(client);
}

/* The verdict from the client's result. */
static petrel_verdict clamav_decide(petrel_session *s, const void *cv, const void *client, scanner_reply *reply)
{
    const clamd_result *r = clamd_client_result(client);
    const conf *c = cv;
    if (r->outcome == CLAMD_OUTCOME_SKIPPED)
        return scanner_skipped(s, &clamav_scanner, c->max_size);
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
        char *text = reply->text;
        size_t textlen = sizeof reply->text, o = 0;
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
        reply->code = 554;
        reply->enhanced = "5.7.1";
        return PETREL_REJECT;
    }
    /* FAILED, or clamd said ERROR (a size limit of its own included). */
    const char *why = r->outcome == CLAMD_OUTCOME_FAILED ? (r->error ? r->error : "no answer") : r->reply.text;
    return scanner_failed(s, &clamav_scanner, why, !c->accept_on_failure, reply);
}

static const scanner_kind clamav_scanner = {
    .name = "clamav",
    .max_size = clamav_max_size,
    .start = clamav_start,
    .io = clamav_io,
    .timeout = clamav_timeout,
    .free = clamav_free,
    .decide = clamav_decide,
};

static petrel_verdict clamav_data(petrel_session *s)
{
    return scanner_session_data(s, &clamav_scanner);
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
        .end_of_message = scanner_session_eom,
    },
    .default_action = PETREL_ON_FAILURE_TEMPFAIL,
    /* clamav_connect_timeout and clamav_timeout decide; this is a backstop. */
    .hook_timeout_ms = 3600000,
};
