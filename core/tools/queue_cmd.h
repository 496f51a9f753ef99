/*
 * `petrelctl queue ...`: the queue administration commands (Postfix's
 * mailq/postqueue, postsuper and postcat -q in one). See queue_cmd.c for
 * the design and doc/man/petrelctl.8 for the user's view.
 */
#ifndef PETREL_TOOLS_QUEUE_CMD_H
#define PETREL_TOOLS_QUEUE_CMD_H

/* argv holds the words after "queue" (argc of them; argv[argc] need not be
 * NULL). Returns the process exit status: 0 ok, 1 a message was not found
 * or an operation failed, 2 usage. */
int queue_main(const char *confdir, int argc, char **argv);

#endif
