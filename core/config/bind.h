/*
 * Parameters bound by tables (nginx's directive tables, Postfix's
 * CONFIG_*_TABLE): a role declares once, in a table, which parameter fills
 * which field of its settings struct, and cfg_bind_apply fills them. Code
 * never fetches a plain value by name: the name, the field and the kind are
 * in one line of a table.
 *
 * Bounds and choices live in the schema (params.c), which checks them when
 * the configuration loads; a CHOICE binding only maps the word the schema
 * accepted (its index, found once at load) to the role's enum value. The
 * check (cfg_bind_check) says whether a table fits the schema: every name
 * declared, every kind suits the parameter's type, every CHOICE table lists
 * exactly the schema's words in the schema's order.
 *
 * A parameter that code reads itself (a list of tables it opens, a
 * restriction list it compiles, a file name it loads) appears in a table
 * too, as CFG_BIND_READ: not stored, but known. So every parameter a role
 * reads is in one of the tables that petrel_bind_tables (master/bindings.c)
 * lists, and a parameter declared but read by nobody can be found
 * (t/unit/test_bind.c, t/source/test_param_tables.py).
 */
#ifndef PETREL_CONFIG_BIND_H
#define PETREL_CONFIG_BIND_H

#include <stddef.h>

struct cfg;
struct cfg_schema;

enum cfg_bind_kind {
    CFG_BIND_STR,       /* const char *: the expanded value */
    CFG_BIND_BOOL,      /* int: 0 or 1 */
    CFG_BIND_INT,       /* int: an INT, TIME (seconds) or SIZE (bytes) */
    CFG_BIND_UINT,      /* unsigned */
    CFG_BIND_LONG,      /* long long */
    CFG_BIND_ULONG,     /* unsigned long long */
    CFG_BIND_SIZE,      /* size_t */
    CFG_BIND_TIMEVAL,   /* struct timeval: a TIME, whole seconds (tv_usec left as it is) */
    CFG_BIND_LIST,      /* const char *const *: the items of a LIST or TABLE */
    CFG_BIND_CHOICE,    /* int: the value the choices give the parameter's word */
    CFG_BIND_READ,      /* not stored: the code opens, compiles or loads what it names */
};

struct cfg_choice {
    const char *word;   /* as the schema lists it */
    int value;
};

struct cfg_bind {
    const char *name;                  /* the parameter; for READ also "*_suffix", a per-transport family */
    enum cfg_bind_kind kind;
    size_t offset;                     /* of the field in the settings struct */
    const struct cfg_choice *choices;  /* CHOICE: one per schema word, in its order, then { NULL, 0 } */
};

struct cfg_bind_table {
    const char *owner;                 /* who reads these: "smtpd", "queue manager", "router", ... */
    const struct cfg_bind *binds;
    size_t n;
};

#define CFG_BIND_TABLE(owner, array) { owner, array, sizeof(array) / sizeof((array)[0]) }
/* A field of struct type, filled from parameter name. */
#define CFG_BIND(name, kind, type, field) { name, CFG_BIND_##kind, offsetof(type, field), NULL }
#define CFG_BIND_CHOICE(name, type, field, choices) { name, CFG_BIND_CHOICE, offsetof(type, field), choices }
/* A parameter the code reads itself. */
#define CFG_BIND_READ(name) { name, CFG_BIND_READ, 0, NULL }

/* Fills the fields of the struct at base from cfg, as t says. */
void cfg_bind_apply(const struct cfg *cfg, const struct cfg_bind_table *t, void *base);

/* 0 when t fits schema; else -1 with *error (malloc'd) naming the table
 * and the parameter. A "*_suffix" READ entry must match at least one
 * declared parameter. */
int cfg_bind_check(const struct cfg_schema *schema, const struct cfg_bind_table *t, char **error);

/* 1 when entry b covers parameter name (equal, or a "*_suffix" family). */
int cfg_bind_covers(const struct cfg_bind *b, const char *name);

/* What the configuration code itself reads (computed defaults, service copies, stress). */
extern const struct cfg_bind_table cfg_machinery_bind_table;

#endif
