/*
 * The sasl module: SMTP AUTH back-ends for smtpd with Postfix's parameter
 * names (smtpd_sasl_type = dovecot | cyrus | table, smtpd_sasl_path), and
 * the stolen-account guard (guard.c).
 *
 *   dovecot.c  Dovecot's authentication protocol, asynchronous on the loop
 *   cyrus.c    Cyrus libsasl2 (saslauthd, auxprop sasldb), each step on a thread
 *   table.c    a table of `login crypt(3)-hash`, hashing on a thread
 *   workers.c  the module's own threads (never the queue's commit threads)
 *
 * The core speaks the SMTP side of every mechanism (core/smtpd/auth.c);
 * these back-ends see raw bytes and answer through request handles
 * (petrel_sasl_server in <petrel/plugin.h>).
 */
#include <stdlib.h>
#include <string.h>

#include "sasl_int.h"
#include "guard.h"

static const petrel_param sasl_params[] = {
    { PETREL_PARAM_INIT, .name = "sasl_worker_threads", .type = PETREL_PARAM_INT, .default_value = "4",
      .help = "threads for blocking SASL work (libsasl2, password hashing), apart from the queue's",
      .min = 1, .max = 64 },
    { PETREL_PARAM_INIT, .name = "sasl_cyrus_config_path", .type = PETREL_PARAM_STRING, .default_value = "",
      .help = "where Cyrus SASL finds APPLICATION.conf (Postfix's cyrus_sasl_config_path); empty: libsasl2's "
              "default" },
    GUARD_PARAMS
    { .name = NULL },
};

static int sasl_init(petrel_module *m, const char **error)
{
    struct sasl_module *sm = calloc(1, sizeof(*sm));
    if (sm == NULL) {
        *error = "out of memory";
        return -1;
    }
    sm->m = m;
    petrel_module_set_data(m, sm);
    long long threads = petrel_param_int(m, "sasl_worker_threads");   /* 1 to 64: petreld -n checks */
    sm->workers = sasl_workers_create(m, (unsigned)threads, error);
    if (sm->workers == NULL)
        return -1;
    if (sasl_guard_init(sm, error) != 0)
        return -1;
    return 0;
}

static void sasl_fini(petrel_module *m)
{
    struct sasl_module *sm = sasl_module_of(m);
    if (sm == NULL)
        return;
    sasl_workers_destroy(sm->workers);   /* completions run first: requests are answered */
    sasl_dovecot_fini(sm);
    sasl_cyrus_fini(sm);
    sasl_table_fini(sm);
    sasl_guard_fini(sm);
    free(sm);
    petrel_module_set_data(m, NULL);
}

static const petrel_sasl_server sasl_servers[] = {
    SASL_SERVER_ENTRY(dovecot),
    SASL_SERVER_ENTRY(cyrus),
    { PETREL_SASL_SERVER_INIT, .name = "table", .mechanisms = sasl_table_mechanisms, .start = sasl_table_start,
      .step = sasl_table_step, .end = sasl_table_end, .check_path = sasl_table_check_path },
    { .name = NULL },
};

static const petrel_command sasl_commands[] = {
    { PETREL_COMMAND_INIT, .name = "held", .min_args = 0, .max_args = 0, .flags = PETREL_COMMAND_JSON,
      .run = sasl_guard_cmd_held, .help = "the logins the stolen-account guard holds, with their held messages" },
    { PETREL_COMMAND_INIT, .name = "release", .usage = "LOGIN", .min_args = 1, .max_args = 1,
      .run = sasl_guard_cmd_release,
      .help = "let LOGIN send again now (its held messages stay in the hold queue for review)" },
    { .name = NULL },
};

const petrel_module_desc petrel_module_descriptor = {
    PETREL_MODULE_INIT,
    .name = "sasl",
    .version = "1.0",
    .description = "SMTP AUTH back-ends (dovecot, cyrus, table) and the stolen-account guard",
    .params = sasl_params,
    .init = sasl_init,
    .fini = sasl_fini,
    .hooks = { .mail = sasl_guard_mail, .rcpt = sasl_guard_rcpt, .end_of_message = sasl_guard_eom },
    .sasl_servers = sasl_servers,
    .commands = sasl_commands,
    .hook_timeout_ms = 30000,
};
