/*
 * petreld: the Petrel mail system. One binary; the master forks its roles.
 *
 *   petreld [-c CONFDIR] [-n] [-d] [-v]
 */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "lib/log.h"
#include "master/master.h"

static void usage(void)
{
    fprintf(stderr, "usage: petreld [-c config_directory] [-n] [-d] [-v]\n"
                    "  -c DIR  read DIR/main.cf and DIR/master.cf (default %s)\n"
                    "  -n      check the configuration and exit\n"
                    "  -d      run in the background (pid file in the queue directory)\n"
                    "  -v      more verbose logging\n", PETREL_SYSCONFDIR);
    exit(2);
}

int main(int argc, char **argv)
{
    struct master_options opts = { .confdir = PETREL_SYSCONFDIR };
    int check_only = 0;
    int c;
    while ((c = getopt(argc, argv, "c:ndvh")) != -1) {
        switch (c) {
        case 'c': opts.confdir = optarg; break;
        case 'n': check_only = 1; break;
        case 'd': opts.daemonize = 1; break;
        case 'v': opts.verbose++; break;
        default: usage();
        }
    }
    if (optind != argc)
        usage();
    log_set_verbose(opts.verbose);
    if (check_only)
        return master_check_config(&opts);
    return master_run(&opts);
}
