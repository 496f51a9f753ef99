/*
 * The stolen-account guard: not written yet.
 */
#include "guard.h"

int sasl_guard_init(struct sasl_module *sm, const char **error)
{
    (void)sm;
    (void)error;
    return 0;
}

void sasl_guard_fini(struct sasl_module *sm)
{
    (void)sm;
}
