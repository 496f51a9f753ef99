/*
 * The stolen-account guard (guard.c): see doc/modules/sasl.md.
 */
#ifndef PETREL_MODULES_SASL_GUARD_H
#define PETREL_MODULES_SASL_GUARD_H

#include "sasl_int.h"

int sasl_guard_init(struct sasl_module *sm, const char **error);
void sasl_guard_fini(struct sasl_module *sm);

#define GUARD_PARAMS
#define GUARD_HOOKS { 0 }

#endif
