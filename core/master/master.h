/* The master process (see master.c). */
#ifndef PETREL_MASTER_MASTER_H
#define PETREL_MASTER_MASTER_H

struct master_options {
    const char *confdir;
    int daemonize;
    int verbose;
};

/* petreld -n: load and check everything, print every problem, return the exit status. */
int master_check_config(const struct master_options *opts);
/* Runs the mail system until stopped; returns the exit status. */
int master_run(const struct master_options *opts);

#endif
