/* The master process (see master.c). */
#ifndef PETREL_MASTER_MASTER_H
#define PETREL_MASTER_MASTER_H

#include <stddef.h>

struct master_options {
    const char *confdir;
    int daemonize;
    int verbose;
};

struct cfg_schema;
struct module_set;
struct cfg;

/* One configuration generation: the schema (core + module parameters), the
 * modules it loads, and the parsed main.cf/master.cf. */
struct loaded_config {
    struct cfg_schema *schema;
    struct module_set *modules;
    struct cfg *cfg;
};
/* Loads modules, main.cf and master.cf; with check_services also builds every
 * smtpd listener's settings to catch bad restrictions, tables and TLS files.
 * Logs every problem; returns 0 or -1. */
int master_load_config(const char *confdir, struct loaded_config *out, int check_services);
void master_unload_config(struct loaded_config *lc);

/* petreld -n: load and check everything, print every problem, return the exit status. */
int master_check_config(const struct master_options *opts);
/* Runs the mail system until stopped; returns the exit status. */
int master_run(const struct master_options *opts);

/* Every binding table of the core (config/bind.h), n of them: which
 * parameters each role binds or reads (bindings.c). */
struct cfg_bind_table;
extern const struct cfg_bind_table *const petrel_bind_tables[];
extern const size_t petrel_bind_ntables;

#endif
