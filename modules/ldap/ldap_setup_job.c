/*
 * A connection made on a worker thread (TLS or SASL: ldap_setup.c says
 * why it blocks), for the table's own servers (ldap.c) and for referred
 * servers (ldap_referral.c) alike: the set-up runs on the thread with its
 * own copy of the settings, then the owner's done callback takes the
 * handle on the event loop. An owner that goes away meanwhile only sets
 * job->owner to NULL: the handle made for nobody is unbound here.
 */
#include <stdlib.h>

#include <ldap.h>

#include "ldap_table.h"

static void setup_job_work(void *arg)
{
    struct ldap_setup_job *job = arg;
    job->ld = ldap_setup_connect(&job->s);
}

static void setup_job_done(void *arg)
{
    struct ldap_setup_job *job = arg;
    if (job->owner)
        job->done(job->owner, job->ld, job->s.diag);
    else if (job->ld)
        ldap_unbind_ext(job->ld, NULL, NULL);
    ldap_setup_release(&job->s);
    free(job);
}

struct ldap_setup_job *ldap_setup_job_new(const struct table *t, const char *url, void *owner,
                                          void (*done)(void *owner, LDAP *ld, const char *diag))
{
    struct ldap_setup_job *job = calloc(1, sizeof(*job));
    if (job == NULL)
        abort();
    job->owner = owner;
    job->done = done;
    ldap_setup_fill(&job->s, t, url, 1);
    return job;
}

int ldap_setup_job_run(petrel_module *m, struct ldap_setup_job *job)
{
    if (petrel_run_blocking(m, setup_job_work, setup_job_done, job) == 0)
        return 0;
    ldap_setup_release(&job->s);
    free(job);
    return -1;
}
