/*
 * statemod: a table type ("statemod:NAME", every key found with the value
 * "here") whose open keeps per-process state in the module's data, as the
 * socketmap module's connections per server do: the first open creates it,
 * init (where it runs) marks it, and fini logs what it saw and frees it:
 *
 *   statemod: fini: init ran: no, tables opened: 1
 *
 * The tests look for that line from processes that never call init
 * (petreld -n, petrelctl map query): the core must call fini there too, or
 * the state leaks (LeakSanitizer reports it in the sanitizer build).
 */
#include <stdlib.h>

#include <petrel/plugin.h>

struct state {
    int init_ran;
    unsigned tables_opened;
};

static struct state *state_of(petrel_module *m)
{
    struct state *st = petrel_module_data(m);
    if (st == NULL) {
        st = calloc(1, sizeof(*st));
        if (st == NULL)
            abort();
        petrel_module_set_data(m, st);
    }
    return st;
}

static void *table_open(petrel_module *m, const char *name, petrel_pool *pool, const char **error)
{
    state_of(m)->tables_opened++;
    return petrel_pool_strdup(pool, name);
}

static int table_lookup(void *handle, const char *key, const char **value, petrel_pool *scratch)
{
    *value = "here";
    return 1;
}

static const petrel_table_type table_types[] = {
    { PETREL_TABLE_TYPE_INIT, .name = "statemod", .open = table_open, .lookup = table_lookup },
    { .name = NULL },
};

static int init(petrel_module *m, const char **error)
{
    state_of(m)->init_ran = 1;
    return 0;
}

static void fini(petrel_module *m)
{
    struct state *st = petrel_module_data(m);
    if (st == NULL)
        return;
    petrel_module_log(m, PETREL_LOG_INFO, "fini: init ran: %s, tables opened: %u", st->init_ran ? "yes" : "no",
                      st->tables_opened);
    free(st);
    petrel_module_set_data(m, NULL);
}

const petrel_module_desc petrel_module_descriptor = {
    PETREL_MODULE_INIT,
    .name = "statemod",
    .version = "1.0",
    .description = "a table type with per-process state in the module's data (tests only)",
    .init = init,
    .fini = fini,
    .table_types = table_types,
};
