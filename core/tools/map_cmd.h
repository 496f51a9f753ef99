/*
 * petrelctl's table commands: `map` (postmap), `alias` (postalias) and
 * `newaliases`. See map_cmd.c and petrelctl(8).
 */
#ifndef PETREL_TOOLS_MAP_CMD_H
#define PETREL_TOOLS_MAP_CMD_H

/* argv[0] is the subcommand (build, query, dump, delete); aliases selects
 * the aliases(5) source format. Returns the exit status. */
int map_main(const char *confdir, int aliases, int argc, char **argv);
/* Builds every table of alias_database. */
int newaliases_main(const char *confdir, int argc, char **argv);

#endif
