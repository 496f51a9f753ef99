/*
 * petrelctl's `dkim keygen`: a DKIM key and its DNS record (dkim_keygen.c,
 * doc/modules/dkim.md).
 */
#ifndef PETREL_TOOLS_DKIM_KEYGEN_H
#define PETREL_TOOLS_DKIM_KEYGEN_H

/* argv[0] is the subcommand ("keygen"). Returns the exit status. */
int dkim_keygen_main(const char *confdir, int argc, char **argv);

#endif
