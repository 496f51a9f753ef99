/*
 * abimod: a module that claims another ABI major, so the loader must refuse
 * it. Built from the same public header with the version overridden.
 */
#include <petrel/plugin.h>

const petrel_module_desc petrel_module_descriptor = {
    .abi_major = PETREL_ABI_MAJOR + 1,
    .abi_minor = 0,
    .build_signature = PETREL_BUILD_SIGNATURE,
    .name = "abimod",
    .version = "1.0",
};
