/*
 * futuremod: a module that claims a newer ABI minor than this petreld
 * provides (built from the same header with the minor raised), so the
 * loader must refuse it and say to upgrade Petrel.
 */
#include <petrel/plugin.h>

const petrel_module_desc petrel_module_descriptor = {
    .abi_major = PETREL_ABI_MAJOR,
    .abi_minor = PETREL_ABI_MINOR + 1,
    .build_signature = PETREL_BUILD_SIGNATURE,
    .name = "futuremod",
    .version = "1.0",
};
