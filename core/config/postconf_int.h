/*
 * Shared by the two halves of `petrelctl config` (Postfix's postconf):
 * postconf.c for main.cf, postconf_master.c for master.cf (-M, -F, -P).
 */
#ifndef PETREL_CONFIG_POSTCONF_INT_H
#define PETREL_CONFIG_POSTCONF_INT_H

#include <stdio.h>

#define POSTCONF_MAX_FILE (16 << 20)   /* largest main.cf or master.cf it edits */

enum { PC_MASTER_ENTRY = 1, PC_MASTER_FIELD, PC_MASTER_PARAM };   /* -M, -F, -P */
enum { PC_EDIT_NONE, PC_EDIT_SET, PC_EDIT_REMOVE, PC_EDIT_COMMENT };  /* show, =, -X, -# */
#define PC_FOLD 1                 /* -f */
#define PC_VALUE_ONLY 2           /* -h */

/* Shows or edits master.cf (see postconf_master.c); returns the exit status. */
int postconf_master(const char *confdir, int what, int mode, int flags, char **args, int nargs);

/* Replaces path atomically with what emit writes (postconf_file.c); returns 0,
 * or -1 after saying why on stderr. */
int postconf_replace_file(const char *path, void (*emit)(FILE *fp, void *arg), void *arg);

#endif
