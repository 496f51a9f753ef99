/*
 * What Petrel does with every parameter name: the classification kept as
 * data in core/config/parameters.txt (its header says the format), built
 * into the binary, and the check that petreld -n, the start and a reload
 * run on a loaded configuration: a name that main.cf or a master.cf -o
 * option sets and that Petrel does not implement is logged with what will
 * not happen, and refused when that weakens security or filtering, unless
 * petrel_accept_unimplemented names it (doc/parameters.md).
 *
 * "Implemented" is not written in the data but derived: a name some
 * binding table reads (config/bind.h), or a parameter a loaded module
 * declared. So a parameter that gains code stops being warned about as soon
 * as its table line lands, and t/source/test_param_tables.py keeps the data
 * and the tables from contradicting each other.
 */
#ifndef PETREL_CONFIG_CLASSES_H
#define PETREL_CONFIG_CLASSES_H

#include <stddef.h>

struct cfg;
struct cfg_bind_table;

enum cfg_class_kind {
    CFG_CLASS_IMPLEMENTED,   /* no class in the data: some code reads it */
    CFG_CLASS_IGNORED,       /* accepted without effect; text: why it cannot matter */
    CFG_CLASS_WARN,          /* not implemented; text: what will not happen */
    CFG_CLASS_REFUSE,        /* not implemented, and that weakens security or filtering */
};

struct cfg_class {
    const char *name;
    const char *since;                 /* "3.4", "-", "petrel" */
    enum cfg_class_kind kind;
    const char *module;                /* provided by this module, or NULL */
    const char *const *ok;             /* values that need no word (NULL-terminated) */
    const char *const *warn_only;      /* REFUSE: values that only warn */
    const char *text;                  /* the reason, or what will not happen; "" when implemented */
    int line;                          /* in parameters.txt */
};

struct cfg_classes;

/* The built-in classification (parameters.txt). NULL, with *error
 * (malloc'd) naming the line, only when the data is malformed. */
struct cfg_classes *cfg_classes_new(char **error);
/* The same for other text in that format (tests). */
struct cfg_classes *cfg_classes_parse(const char *text, char **error);
const struct cfg_class *cfg_classes_find(const struct cfg_classes *c, const char *name);
size_t cfg_classes_count(const struct cfg_classes *c);
const struct cfg_class *cfg_classes_get(const struct cfg_classes *c, size_t i);   /* sorted by name */
void cfg_classes_free(struct cfg_classes *c);

/* The classification a loaded configuration was checked with (cfg_load
 * parses it once per generation); NULL only if the built-in data is
 * malformed, which the load reported as an error. */
const struct cfg_classes *cfg_get_classes(const struct cfg *cfg);

/* 1 when value (expanded) counts as one of values: without case, with
 * commas and white space as one separator, times and sizes as numbers. */
int cfg_class_value_matches(const char *value, const char *const *values, const struct cfg *cfg);

/* 1 when Petrel applies an -o option name of this master.cf line: every
 * one of smtpd and pickup services, the content checks and their limits of
 * cleanup services and of smtp and lmtp transports; the queue manager runs
 * every other setting of a transport with main.cf's value. */
struct master_service;
int cfg_service_applies_option(const struct master_service *svc, const char *name);

/* 1 when name is one of Postfix's per-transport parameters (SERVICE_destination_rate_delay,
 * ...) of the master.cf service named service: SERVICE_ followed by the
 * suffix of a transport_SUFFIX name of the classification. */
int cfg_transport_parameter_of(const struct cfg_classes *c, const char *name, const char *service);

/*
 * Logs what cfg sets that Petrel does not implement (main.cf, and each
 * service's -o options): information for IGNORED names, warnings for WARN
 * names, errors for REFUSE names (warnings when petrel_accept_unimplemented
 * names them or the value is a warn= one). A name is implemented when one
 * of the tables covers it or a loaded module declared it. An -o option of
 * an implemented name on a line whose options Petrel does not apply is a
 * warning (an error for TLS and SASL settings). Returns the number of
 * errors.
 */
int cfg_check_unimplemented(const struct cfg *cfg, const struct cfg_classes *classes,
                            const struct cfg_bind_table *const *tables, size_t ntables);

#endif
