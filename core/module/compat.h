/*
 * A module's descriptor in today's layout, whatever ABI 1.x minor it was
 * built for (compat.c explains the rules).
 */
#ifndef PETREL_MODULE_COMPAT_H
#define PETREL_MODULE_COMPAT_H

#include <stddef.h>

#include <petrel/plugin.h>

enum compat_kind { COMPAT_PARAMS, COMPAT_RESTRICTIONS, COMPAT_TABLE_TYPES, COMPAT_SASL_BACKENDS,
                   COMPAT_SASL_SERVERS, COMPAT_COMMANDS };

/* Copies of the descriptor's arrays in the current layout, each ended by
 * a zeroed entry (name NULL). */
struct compat_desc {
    petrel_hooks hooks;
    int (*check)(petrel_module *m);
    petrel_param *params;
    size_t nparams;
    petrel_restriction *restrictions;
    size_t nrestrictions;
    petrel_table_type *table_types;
    size_t ntable_types;
    petrel_sasl_backend *sasl_backends;
    size_t nsasl_backends;
    petrel_sasl_server *sasl_servers;      /* ABI 1.1: empty for a 1.0 module */
    size_t nsasl_servers;
    petrel_command *commands;              /* ABI 1.1: empty for a 1.0 module */
    size_t ncommands;
};

/* Reads every array of d; -1 with error set (naming the array and entry)
 * when one is malformed. */
int compat_read_descriptor(const petrel_module_desc *d, struct compat_desc *out, char *error, size_t error_size);
void compat_free_descriptor(struct compat_desc *c);
/* One array (malloc'd, ended by a zeroed entry), or NULL with error. */
void *compat_read_array(enum compat_kind kind, const void *array, unsigned abi_minor, size_t *count,
                        char *error, size_t error_size);

#endif
