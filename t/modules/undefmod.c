/*
 * undefmod: a module that calls a plugin API function this petreld does
 * not have (as a module built against a newer header that forgot to raise
 * its ABI minor would). The loader must refuse it by name at load time,
 * not let the first call kill the process (lazy binding).
 */
#include <petrel/plugin.h>

PETREL_API int petrel_function_from_the_future(petrel_module *m);

static int undef_init(petrel_module *m, const char **error)
{
    (void)error;
    return petrel_function_from_the_future(m);
}

const petrel_module_desc petrel_module_descriptor = {
    .abi_major = PETREL_ABI_MAJOR,
    .abi_minor = PETREL_ABI_MINOR,
    .build_signature = PETREL_BUILD_SIGNATURE,
    .name = "undefmod",
    .version = "1.0",
    .init = undef_init,
};
