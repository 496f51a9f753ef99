/*
 * apimod: a test module for what ABI 1.1 adds, written against
 * <petrel/plugin.h> alone, as a third party would.
 *
 * Parameters and check:
 *   apimod_mode (STRING: fast|careful), apimod_level (INT 1..10),
 *   apimod_window (TIME 1s..1h), apimod_tags (LIST of red, green, blue),
 *   apimod_key_file (must exist and be readable), apimod_url (redis://HOST:PORT
 *   or unix:/PATH), apimod_socket (must be a UNIX socket). check() refuses bad
 *   values of the last three with petrel_config_error(); init logs the
 *   values it reads, the list items, some core parameters, and each
 *   service's values (petrel_service_config_*, master.cf -o): apimod_mode
 *   and apimod_level are declared per_service, the others are read from
 *   main.cf only (a service's -o of them is refused by petreld).
 *
 * Notes (read by notemod):
 *   connect: session note apimod.client = the client address;
 *   HELO: tries a transaction note outside a transaction (refused);
 *   MAIL FROM:<note-...>: transaction note apimod.sender = the sender, and
 *   tries to set notemod.forged (refused: not its namespace).
 *
 * Metrics (registered in init, in every process):
 *   petrel_apimod_mails_total{kind}   each MAIL FROM, kind "note" or "plain";
 *   petrel_apimod_processes           a gauge each process sets to 1;
 *   petrel_apimod_sender_length_bytes a histogram of sender lengths (10/20/40);
 *   and two definitions the core must refuse (logged), whose NULL handles
 *   the module then uses (nothing is recorded).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <petrel/plugin.h>

static const char *const modes[] = { "fast", "careful", NULL };
static const char *const colours[] = { "red", "green", "blue", NULL };

static const petrel_param params[] = {
    { PETREL_PARAM_INIT, .name = "apimod_mode", .type = PETREL_PARAM_STRING, .default_value = "fast",
      .help = "how the module works", .choices = modes, .per_service = 1 },
    { PETREL_PARAM_INIT, .name = "apimod_level", .type = PETREL_PARAM_INT, .default_value = "5",
      .help = "a level from 1 to 10", .min = 1, .max = 10, .per_service = 1 },
    { PETREL_PARAM_INIT, .name = "apimod_window", .type = PETREL_PARAM_TIME, .default_value = "60s",
      .help = "a window of 1 s to 1 h", .min = 1, .max = 3600 },
    { PETREL_PARAM_INIT, .name = "apimod_tags", .type = PETREL_PARAM_LIST, .default_value = "red, green",
      .help = "colours", .choices = colours },
    { PETREL_PARAM_INIT, .name = "apimod_key_file", .type = PETREL_PARAM_STRING, .default_value = "",
      .help = "a key file that must exist" },
    { PETREL_PARAM_INIT, .name = "apimod_url", .type = PETREL_PARAM_STRING, .default_value = "",
      .help = "redis://HOST:PORT or unix:/PATH" },
    { PETREL_PARAM_INIT, .name = "apimod_socket", .type = PETREL_PARAM_STRING, .default_value = "",
      .help = "a UNIX socket" },
    { .name = NULL },
};

/* ------------------------------------------------------------------ */
/* configuration check (in the master, before init)                    */

static int url_ok(const char *url)
{
    if (strncmp(url, "unix:/", 6) == 0)
        return url[6] != '\0';
    if (strncmp(url, "redis://", 8) != 0)
        return 0;
    const char *colon = strrchr(url + 8, ':');
    if (colon == NULL || colon == url + 8 || colon[1] == '\0')
        return 0;
    for (const char *p = colon + 1; *p; p++)
        if (*p < '0' || *p > '9')
            return 0;
    return 1;
}

static int check(petrel_module *m)
{
    int bad = 0;
    const char *key = petrel_param_string(m, "apimod_key_file");
    if (*key && access(key, R_OK) != 0) {
        petrel_config_error(m, "apimod_key_file", "%s: %s", key, strerror(errno));
        bad = 1;
    }
    const char *url = petrel_param_string(m, "apimod_url");
    if (*url && !url_ok(url)) {
        petrel_config_error(m, "apimod_url", "malformed URL \"%s\" (expected redis://HOST:PORT or unix:/PATH)", url);
        bad = 1;
    }
    const char *sock = petrel_param_string(m, "apimod_socket");
    struct stat st;
    if (*sock && stat(sock, &st) != 0) {
        petrel_config_error(m, "apimod_socket", "%s: %s", sock, strerror(errno));
        bad = 1;
    } else if (*sock && !S_ISSOCK(st.st_mode)) {
        petrel_config_error(m, "apimod_socket", "%s is not a socket", sock);
        bad = 1;
    }
    petrel_module_log(m, PETREL_LOG_INFO, "check ran (initialised: %s)", petrel_module_data(m) ? "yes" : "no");
    return bad ? -1 : 0;
}

/* ------------------------------------------------------------------ */
/* init                                                                 */

struct apimod {
    petrel_pool *pool;
    petrel_metric *mails, *processes, *lengths, *bad_counter, *bad_prefix;
};

static const char *const kind_label[] = { "kind", NULL };
static const double length_buckets[] = { 10, 20, 40 };

static void register_metrics(petrel_module *m, struct apimod *state)
{
    const petrel_metric_def mails = { PETREL_METRIC_DEF_INIT, .type = PETREL_METRIC_COUNTER,
                                      .name = "petrel_apimod_mails_total", .help = "MAIL commands seen",
                                      .labels = kind_label };
    const petrel_metric_def processes = { PETREL_METRIC_DEF_INIT, .type = PETREL_METRIC_GAUGE,
                                          .name = "petrel_apimod_processes", .help = "processes running apimod" };
    const petrel_metric_def lengths = { PETREL_METRIC_DEF_INIT, .type = PETREL_METRIC_HISTOGRAM,
                                        .name = "petrel_apimod_sender_length_bytes", .help = "sender lengths",
                                        .buckets = length_buckets, .nbuckets = 3 };
    const petrel_metric_def bad_counter = { PETREL_METRIC_DEF_INIT, .type = PETREL_METRIC_COUNTER,
                                            .name = "petrel_apimod_mails", .help = "no _total" };
    const petrel_metric_def bad_prefix = { PETREL_METRIC_DEF_INIT, .type = PETREL_METRIC_GAUGE,
                                           .name = "petrel_notemod_things", .help = "another module's prefix" };
    state->mails = petrel_metric_register(m, &mails);
    state->processes = petrel_metric_register(m, &processes);
    state->lengths = petrel_metric_register(m, &lengths);
    state->bad_counter = petrel_metric_register(m, &bad_counter);
    state->bad_prefix = petrel_metric_register(m, &bad_prefix);
    petrel_metric_set(state->processes, NULL, 1);
    petrel_metric_add(state->bad_counter, NULL, 1);   /* NULL: nothing is recorded */
}

static int init(petrel_module *m, const char **error)
{
    petrel_pool *pool = petrel_pool_create(1024);
    struct apimod *state = petrel_pool_zalloc(pool, sizeof(*state));
    state->pool = pool;
    petrel_module_set_data(m, state);
    register_metrics(m, state);
    char tags[256] = "";
    size_t n = 0;
    for (const char *const *t = petrel_param_list(m, "apimod_tags"); t && *t; t++)
        n += (size_t)snprintf(tags + n, n < sizeof(tags) ? sizeof(tags) - n : 0, "%s[%s]", n ? " " : "", *t);
    char nets[256] = "";
    n = 0;
    for (const char *const *t = petrel_config_list(m, "mynetworks"); t && *t; t++)
        n += (size_t)snprintf(nets + n, n < sizeof(nets) ? sizeof(nets) - n : 0, "%s[%s]", n ? " " : "", *t);
    petrel_module_log(m, PETREL_LOG_INFO,
                      "mode=%s level=%lld window=%lld tags=%s myhostname=%s mynetworks=%s "
                      "message_size_limit=%lld smtputf8_enable=%d",
                      petrel_param_string(m, "apimod_mode"), petrel_param_int(m, "apimod_level"),
                      petrel_param_int(m, "apimod_window"), tags, petrel_config_string(m, "myhostname"), nets,
                      petrel_config_int(m, "message_size_limit"), petrel_config_bool(m, "smtputf8_enable"));
    const char *own = petrel_config_string(m, "apimod_mode");
    petrel_module_log(m, PETREL_LOG_INFO, "petrel_config_string of its own parameter: %s", own ? own : "NULL");
    /* per-service values (master.cf -o) */
    for (size_t i = 0; i < petrel_service_count(m); i++) {
        const char *svc = petrel_service_at(m, i);
        petrel_module_log(m, PETREL_LOG_INFO, "service %s: myhostname=%s apimod_mode=%s apimod_level=%lld "
                          "smtputf8_enable=%d mynetworks=%s", svc, petrel_service_config_string(m, svc, "myhostname"),
                          petrel_service_config_string(m, svc, "apimod_mode"),
                          petrel_service_config_int(m, svc, "apimod_level"),
                          petrel_service_config_bool(m, svc, "smtputf8_enable"),
                          petrel_service_config_list(m, svc, "mynetworks")[0]);
    }
    petrel_module_log(m, PETREL_LOG_INFO, "no such service: myhostname=%s; past the end: %s",
                      petrel_service_config_string(m, "no-such-service", "myhostname"),
                      petrel_service_at(m, petrel_service_count(m)) ? "a name" : "NULL");
    const char *other = petrel_service_config_string(m, "no-such-service", "nosuchparam_x");
    petrel_module_log(m, PETREL_LOG_INFO, "petrel_service_config_string of an unknown parameter: %s",
                      other ? other : "NULL");
    return 0;
}

/* ------------------------------------------------------------------ */
/* notes                                                               */

static petrel_verdict on_connect(petrel_session *s)
{
    petrel_note_set(s, PETREL_NOTE_SESSION, "apimod.client", petrel_client_addr(s));
    return PETREL_CONTINUE;
}

static petrel_verdict on_helo(petrel_session *s, const char *helo)
{
    int rc = petrel_note_set(s, PETREL_NOTE_TRANSACTION, "apimod.helo", helo);
    petrel_log(s, PETREL_LOG_INFO, "transaction note before MAIL: %d", rc);
    return PETREL_CONTINUE;
}

static petrel_verdict on_mail(petrel_session *s, const char *sender)
{
    struct apimod *state = petrel_module_data(petrel_session_module(s));
    const char *kind[] = { strncmp(sender, "note-", 5) == 0 ? "note" : "plain" };
    petrel_metric_add(state->mails, kind, 1);
    petrel_metric_observe(state->lengths, NULL, (double)strlen(sender));
    if (strncmp(sender, "note-", 5) == 0) {
        petrel_note_set(s, PETREL_NOTE_TRANSACTION, "apimod.sender", sender);
        int rc = petrel_note_set(s, PETREL_NOTE_TRANSACTION, "notemod.forged", "yes");
        petrel_log(s, PETREL_LOG_INFO, "note in another module's namespace: %d", rc);
    }
    return PETREL_CONTINUE;
}

static void fini(petrel_module *m)
{
    struct apimod *state = petrel_module_data(m);
    petrel_module_set_data(m, NULL);
    if (state)
        petrel_pool_destroy(state->pool);
}

const petrel_module_desc petrel_module_descriptor = {
    PETREL_MODULE_INIT,
    .name = "apimod",
    .version = "1.1",
    .description = "exercises ABI 1.1 (tests only)",
    .params = params,
    .init = init,
    .fini = fini,
    .check = check,
    .hooks = { .connect = on_connect, .helo = on_helo, .mail = on_mail },
};
