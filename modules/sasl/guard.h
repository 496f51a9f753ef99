/*
 * The stolen-account guard (guard.c, doc/modules/sasl.md).
 */
#ifndef PETREL_MODULES_SASL_GUARD_H
#define PETREL_MODULES_SASL_GUARD_H

#include "sasl_int.h"

int sasl_guard_init(struct sasl_module *sm, const char **error);
void sasl_guard_fini(struct sasl_module *sm);
petrel_verdict sasl_guard_mail(petrel_session *s, const char *sender);
petrel_verdict sasl_guard_rcpt(petrel_session *s, const char *recipient);
petrel_verdict sasl_guard_eom(petrel_session *s);
/* petrelctl sasl held [--json] | release LOGIN */
void sasl_guard_cmd_held(petrel_command_request *r, int argc, const char *const *argv);
void sasl_guard_cmd_release(petrel_command_request *r, int argc, const char *const *argv);

#define GUARD_PARAMS                                                                                          \
    { PETREL_PARAM_INIT, .name = "sasl_guard_enable", .type = PETREL_PARAM_BOOL, .default_value = "no",         \
      .help = "hold the mail of a login that suddenly sends far more than usual" },                             \
    { PETREL_PARAM_INIT, .name = "sasl_guard_state_file", .type = PETREL_PARAM_STRING,                          \
      .default_value = "$data_directory/sasl_guard.state",                                                      \
      .help = "the guard's counters, shared by the workers (a file every worker maps)" },                       \
    { PETREL_PARAM_INIT, .name = "sasl_guard_queue_directory", .type = PETREL_PARAM_STRING,                     \
      .default_value = "$queue_directory",                                                                       \
      .help = "where the guard looks for the held messages it is waiting for" },                                \
    { PETREL_PARAM_INIT, .name = "sasl_guard_window", .type = PETREL_PARAM_TIME, .default_value = "1h",         \
      .help = "the window messages and recipients are counted in", .min = 60 },                                 \
    { PETREL_PARAM_INIT, .name = "sasl_guard_min_messages", .type = PETREL_PARAM_INT, .default_value = "100",   \
      .help = "more messages than this in a window may trip the guard" },                                       \
    { PETREL_PARAM_INIT, .name = "sasl_guard_min_recipients", .type = PETREL_PARAM_INT,                         \
      .default_value = "200", .help = "more distinct recipients than this in a window may trip the guard" },    \
    { PETREL_PARAM_INIT, .name = "sasl_guard_factor", .type = PETREL_PARAM_INT, .default_value = "10",          \
      .help = "and more than this many times the login's usual window", .min = 1 },

#endif
