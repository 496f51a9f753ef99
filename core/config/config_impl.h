/*
 * Internals shared by the files of core/config (not for other subsystems):
 * the in-memory shape of a configuration generation, the expander and the
 * small text helpers. A struct cfg is an array of values sorted by name,
 * so lookups are a binary search and a per-service copy is one memcpy.
 */
#ifndef PETREL_CONFIG_IMPL_H
#define PETREL_CONFIG_IMPL_H

#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>

#include <petrel/pool.h>
#include "config/cfg.h"
#include "lib/buf.h"
#include "lib/log.h"

#define CFG_MAX_LINE (1 << 20)          /* longest logical line of main.cf/master.cf */
#define CFG_MAX_VALUE (1 << 20)         /* longest value after expansion */
#define CFG_MAX_NESTING 100             /* Postfix's limit on $name nesting */
#define CFG_MAX_LIST_FILE (4 << 20)     /* largest /file/name read into a list */

enum cfg_state { VAL_PENDING, VAL_EXPANDING, VAL_DONE };

/* Computes a default from the host or from other values (myhostname, mynetworks, ...). */
struct cfg;
struct cfg_classes;
typedef const char *cfg_compute_fn(struct cfg *cfg);

struct cfg_value {
    const char *name;
    const struct cfg_param *param;     /* NULL for a name only main.cf or -o defines */
    const char *raw;                   /* as written, or the default */
    const char *file;                  /* NULL: the value is the default */
    int line;
    cfg_compute_fn *compute;           /* default computed at load time, or NULL */
    const char *value;                 /* expanded */
    long long number;                  /* INT, TIME (s), SIZE; for a STR with choices, its choice's index */
    int boolean;
    const char *const *list;
    enum cfg_state state;
    int referenced;                    /* some value says $name: not an unused parameter */
    int failed;                        /* expansion or validation error already logged */
    int override;                      /* set by a master.cf -o option (service cfg only) */
    /* A per-transport parameter (SERVICE_destination_recipient_limit): the
     * master.cf service it belongs to, and the name of its family's
     * classification line (transport_destination_recipient_limit). */
    const struct master_service *family_service;
    const char *class_name;
};

struct cfg {
    petrel_pool *pool;
    const struct cfg *generation;      /* NULL for a generation; else the one owning this service cfg */
    const struct cfg_schema *schema;
    const char *confdir;
    const char *main_path;
    const char *master_path;
    struct cfg_value *values;          /* sorted by name */
    size_t nvalues;
    struct master_service *services;
    size_t nservices;
    int errors;
    int quiet;                         /* cfg_peek: log nothing */
    const char *service_name;          /* for a service cfg: $service_name */
    struct cfg_classes *classes;       /* what Petrel does with each name (classes.h), the generation's */
    /* The classification's text for a Postfix name (NULL if it is none):
     * set by load.c, so that expansion (config.c, below classes.c) can say
     * what an unset Postfix name is without depending on classes.c. */
    const char *(*postfix_name_text)(const struct cfg *cfg, const char *name);
};

/* Logging with the generation's quiet flag honoured; counts errors. */
void cfg_error(struct cfg *cfg, const char *file, int line, const char *name, const char *fmt, ...)
    PETREL_PRINTF(5, 6);
void cfg_warn(struct cfg *cfg, const char *file, int line, const char *name, const char *fmt, ...)
    PETREL_PRINTF(5, 6);

struct cfg_value *cfg_value_find(const struct cfg *cfg, const char *name);
/* Expands one value (memoized, not validated); 0 or -1 after an error. */
int cfg_value_expand(struct cfg *cfg, struct cfg_value *v, int quiet);
/* Expands text in the context of cfg (for -o values and cfg_peek); NULL on error. */
char *cfg_expand_text(struct cfg *cfg, const char *text, const char *file, int line,
                      const char *name);
int cfg_name_char(int c);
/* A character of a parameter name as main.cf and -o may write it: also '-'
 * and '.', which master.cf service names (and so per-transport parameters
 * such as smtp-amavis_destination_recipient_limit) may contain. $name
 * expansion stops at them, as in Postfix. */
int cfg_param_name_char(int c);
/* The generation's quiet flag (cfg_peek and petrelctl load quietly). */
int cfg_is_quiet(const struct cfg *cfg);
/* Edit distance capped at limit+1 (for "did you mean"). */
int cfg_edit_distance(const char *a, const char *b, int limit);
/* Reads one logical line (Postfix readlline rules); returns 0 at EOF, -1 on an over-long line. */
struct cfg_reader;
struct cfg_reader *cfg_reader_open(const char *path);
struct cfg_reader *cfg_reader_from_stream(FILE *fp);   /* takes ownership of fp */
int cfg_reader_next(struct cfg_reader *r, struct buf *out, int *first_line);
void cfg_reader_close(struct cfg_reader *r);

/* params.c */
const struct cfg_param *cfg_core_params(size_t *n);
/* params_postscreen.c: postscreen's parameters, part of the core schema. */
const struct cfg_param *cfg_postscreen_params(size_t *n);
/* params_smtp.c: the SMTP/LMTP client's and TLS parameters, also "core". */
const struct cfg_param *cfg_smtp_params(size_t *n);
/* defaults.c: the function computing name's default from the host (or
 * from compatibility_level), or NULL. */
cfg_compute_fn *cfg_computed_default(const char *name);
/* defaults.c: 1 when master.cf's '-' in the chroot column means y
 * (compatibility_level below 1, as in Postfix). */
int cfg_compat_chroot_default(const struct cfg *cfg);
/* params.c: kept as written, never $-expanded. */
int cfg_param_is_raw(const char *name);
/* config.c: validates an expanded value against its parameter's type. */
void cfg_value_validate(struct cfg *cfg, struct cfg_value *v);
/* s without leading and trailing white space (in place). */
char *cfg_trim(char *s);
/* Where a value was set, for messages: its file, else main.cf. */
const char *cfg_value_file(const struct cfg *cfg, const struct cfg_value *v);
/* qsort comparison of struct cfg_value by name (cfg->values stays sorted). */
int cfg_value_cmp(const void *a, const void *b);

/* classes.c: appends "; did you mean \"NAME\"?" for the closest known name, if any. */
void cfg_suggest_name(const struct cfg *cfg, const char *name, struct buf *out);
/* Loads a generation even when it has errors (cfg->errors counts them); quiet logs nothing. */
struct cfg *cfg_load_generation(const struct cfg_schema *schema, const char *confdir, int quiet);

/* master.cf: parses path (or the built-in default when it does not exist) into cfg->services. */
int cfg_master_load(struct cfg *cfg);
/* The per-service copy of a generation with overrides applied; see master.c. */
struct cfg *cfg_service_copy(struct cfg *gen, const char *service_name, const char *command,
                             const char *const *names, const char *const *values,
                             const char *file, int line);
/* base (a generation or a service copy) evaluated again with stress=yes;
 * base itself when no value refers to $stress. Only values that differ from
 * base are validated, so nothing is reported twice. */
const struct cfg *cfg_stress_copy(struct cfg *base);

/* A master.cf line's white-space separated fields, { } groups (nested)
 * keeping their spaces (master.c); free with cfg_list_free. */
char **cfg_master_tokenize(const char *text, size_t *count);

#endif
