/*
 * main.cf / master.cf: Postfix's configuration language with a typed
 * parameter table.
 *
 * A struct cfg_schema is the set of known parameters (the core's plus those
 * modules declare). cfg_load() reads one configuration generation: raw
 * main.cf values are kept, every known parameter is expanded ($name,
 * ${name?x}, ${name:x}, ...) once the whole file is read, then validated
 * against its type; every error in both files is logged before the load
 * fails. Everything a struct cfg hands out lives in that generation's pool
 * and dies with cfg_free(), so a reload never leaks into the next one.
 * Each master.cf service gets its own struct cfg (main.cf plus that
 * service's -o overrides), owned by the generation.
 *
 * Named cfg.h, not config.h: autoconf's config.h is "config.h" everywhere.
 */
#ifndef PETREL_CONFIG_CFG_H
#define PETREL_CONFIG_CFG_H

#include <stddef.h>

enum cfg_type { CFG_STR, CFG_INT, CFG_BOOL, CFG_TIME, CFG_SIZE, CFG_LIST, CFG_TABLE };

struct cfg_param {            /* one declared parameter */
    const char *name;
    enum cfg_type type;
    const char *def;           /* raw default, may contain $name; for CFG_TIME its unit
                                  letter ("300s", "5d") is the parameter's default unit */
    const char *help;
    long long min, max;        /* bounds for INT/TIME/SIZE (0,0 = unbounded); TIME in seconds */
    const char *const *choices;/* for enumerated CFG_STR values (or the items of a CFG_LIST),
                                  NULL-terminated, or NULL */
};

struct cfg_schema;             /* the set of known parameters: core ones + those modules add */
struct cfg_schema *cfg_schema_new(void);            /* pre-filled with every core parameter */
/* The params array must outlive the schema (modules pass their static table). -1 on duplicate name. */
int cfg_schema_add(struct cfg_schema *, const struct cfg_param *params, size_t n, const char *owner);
const struct cfg_param *cfg_schema_find(const struct cfg_schema *, const char *name);
/* Who declared the parameter: "core" or the owner given to cfg_schema_add; NULL if unknown. */
const char *cfg_schema_owner(const struct cfg_schema *, const char *name);
/* A module's parameter that it reads per master.cf service (petrel_param's
 * per_service): a service's -o of it takes effect. -1 for an unknown name. */
int cfg_schema_set_per_service(struct cfg_schema *, const char *name);
int cfg_schema_per_service(const struct cfg_schema *, const char *name);
size_t cfg_schema_count(const struct cfg_schema *);
const struct cfg_param *cfg_schema_param(const struct cfg_schema *, size_t i); /* sorted by name */
void cfg_schema_free(struct cfg_schema *);

enum petrel_role { ROLE_SMTPD, ROLE_QMGR, ROLE_PICKUP, ROLE_CLEANUP, ROLE_SMTP, ROLE_LMTP,
                   ROLE_LOCAL, ROLE_VIRTUAL, ROLE_PIPE, ROLE_ERROR, ROLE_DISCARD, ROLE_IGNORED,
                   ROLE_POSTSCREEN,    /* screens in the smtpd worker, then hands the client to a pass service */
                   ROLE_INSIDE,        /* dnsblog, tlsproxy: work Petrel does inside the smtpd worker */
                   ROLE_SPAWN };       /* spawn(8): the master runs the command per connection */
enum svc_type { SVC_INET, SVC_UNIX, SVC_UNIX_DGRAM, SVC_FIFO, SVC_PASS };

struct cfg;                    /* one loaded configuration generation (owns all its memory) */

struct master_service {
    const char *name;            /* column 1 as written: "smtp", "2525", "127.0.0.1:2525", "[::1]:2525" */
    enum svc_type type;
    int private_, unpriv, chroot;/* resolved ('-': private y, unpriv y, chroot n) */
    int wakeup, maxproc;         /* maxproc '-' = default_process_limit; 0 = unlimited */
    int wakeup_if_used;          /* wakeup written as "N?": wake only when the service was used */
    const char *command;         /* "smtpd", "qmgr", ... */
    const char *const *argv;     /* command + args, NULL-terminated, -o pairs removed */
    enum petrel_role role;       /* ROLE_IGNORED = accepted and ignored with a notice */
    const struct cfg *cfg;       /* main.cf with this service's -o overrides applied, re-expanded,
                                    validated; the main cfg itself when there are no overrides */
    const struct cfg *stress_cfg;/* the same with stress=yes, for an inet smtpd service with maxproc
                                    > 1 (what Postfix's master passes as -o stress=yes while the
                                    service is at its limit) and for postscreen (its own stress:
                                    postscreen_greet_wait, postscreen_command_time_limit); == cfg
                                    when no value depends on $stress; NULL for other services */
    const char *file;
    int line;
};

/*
 * Reads confdir/main.cf and confdir/master.cf (a built-in default when
 * master.cf does not exist). Logs every problem with msg_error() as
 * "PATH:LINE: PARAMETER: problem" (warnings with msg_warn()); returns NULL
 * if there was any error, with *nerrors (if not NULL) set to their number.
 * The schema must stay alive as long as the returned cfg.
 */
struct cfg *cfg_load(const struct cfg_schema *, const char *confdir, int *nerrors);
/* The same, but the configuration is returned even when it has errors
 * (*nerrors of them), so that the checks that follow (tables, restrictions,
 * what is not implemented) report their problems in the same run, as
 * petreld -n promises. Never NULL. */
struct cfg *cfg_load_all(const struct cfg_schema *, const char *confdir, int *nerrors);
/* 1 when name's value could not be expanded or validated (already reported). */
int cfg_failed(const struct cfg *, const char *name);
/*
 * Where to fix a problem whose text starts with "parameter: ": the main.cf
 * line that sets it ("PATH:LINE: text"), a master.cf -o option of svc
 * ("master.cf, line N: service NAME: text"), or, for a default value or a
 * text that names no parameter, svc's line when it has -o options and
 * main.cf otherwise ("PATH/main.cf: text"). svc may be NULL. Returns
 * malloc'd text.
 */
char *cfg_locate(const struct cfg *cfg, const struct master_service *svc, const char *text);
void cfg_free(struct cfg *);   /* no-op for a service's cfg: the generation owns it */
const char *cfg_confdir(const struct cfg *);
const char *cfg_get(const struct cfg *, const char *name);      /* expanded; NULL if neither known nor set */
const char *cfg_get_raw(const struct cfg *, const char *name);  /* as written (or the default) */
long long cfg_int(const struct cfg *, const char *name);        /* INT; TIME in seconds; SIZE in bytes */
int cfg_bool(const struct cfg *, const char *name);
const char *const *cfg_list(const struct cfg *, const char *name); /* NULL-terminated items; never NULL */
int cfg_is_default(const struct cfg *, const char *name);
/* Who declared the parameter: "core", a module's name, or NULL if unknown. */
const char *cfg_owner(const struct cfg *, const char *name);
/* Where the value was set: main.cf or master.cf (for -o); NULL file for a default. */
void cfg_origin(const struct cfg *, const char *name, const char **file, int *line);
/* 1 when a and b (two configurations of one generation) give every parameter
 * the same expanded value, except the parameters in names (NULL-terminated). */
int cfg_same_except(const struct cfg *a, const struct cfg *b, const char *const *names);
size_t cfg_service_count(const struct cfg *);
const struct master_service *cfg_service(const struct cfg *, size_t i);
/* The master.cf service named name (column 1 as written), from the
 * generation a service's configuration belongs to; NULL if none. */
const struct master_service *cfg_find_service(const struct cfg *, const char *name);

/*
 * The value of one parameter from confdir/main.cf, expanded, without
 * logging anything (for example "modules", needed before the module
 * parameters can be declared and the real load happens). Returns a copy
 * the caller frees, or NULL if main.cf cannot be read.
 */
char *cfg_peek(const struct cfg_schema *, const char *confdir, const char *name);

/* compatibility_level as a comparable number ("3.6" < "3.11"); -1 when malformed. */
long long cfg_compat_level_parse(const char *text);
/* Reports a malformed compatibility_level (an error, returns 1) and, below
 * the levels where Postfix changed defaults, each old default in effect
 * (information, or a warning when Petrel cannot honour it). */
int cfg_check_compatibility_level(const struct cfg *cfg);

/* Parsers shared with other subsystems (each returns 0, or -1 on a bad value). */
int cfg_parse_bool(const char *text, int *out);
int cfg_parse_time(const char *text, char default_unit, long long *seconds);
int cfg_parse_size(const char *text, long long *out);
/* Splits a Postfix list (commas and/or white space, { } grouping); free with cfg_list_free. */
char **cfg_split_list(const char *text);
void cfg_list_free(char **items);

/*
 * `petrelctl config` (postconf). argc/argv as for main(): argv[0] is the
 * command name and is skipped. No args = every parameter "name = value"
 * (raw, as postconf prints them; -x expands), -n only those set in main.cf,
 * -d defaults, -h values without "name = ", names = those parameters,
 * name=value ... (or -e name=value) edits main.cf in place keeping
 * comments and order, -X name ... removes definitions. Returns the exit
 * status; prints to stdout, errors to stderr.
 */
int postconf_main(const struct cfg_schema *, const char *confdir, int argc, char **argv);

#endif
