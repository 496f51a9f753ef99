/*
 * sizemod: a module built for ABI 1.1 whose parameter entry lacks
 * PETREL_PARAM_INIT (its size is 0), as a 1.0 plugin converted by hand
 * might be. The loader must refuse it, naming the array and the macro,
 * rather than read its entries with the wrong stride.
 */
#include <petrel/plugin.h>

static const petrel_param params[] = {
    { .name = "sizemod_colour", .type = PETREL_PARAM_STRING, .default_value = "blue", .help = "a colour" },
    { .name = NULL },
};

const petrel_module_desc petrel_module_descriptor = {
    PETREL_MODULE_INIT,
    .name = "sizemod",
    .version = "1.0",
    .params = params,
};
