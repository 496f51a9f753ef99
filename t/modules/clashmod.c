/*
 * clashmod: a module whose own global functions carry the names of core
 * internals (xmalloc, log_init, buf_new, dns_lookup), as a third-party
 * plugin may well have. With petreld exporting only petrel_*, each side
 * keeps its own: the module's calls reach the module's functions, and the
 * core (which never sees them) keeps logging and resolving as itself.
 *
 * At init it calls its own log_init (had it reached the core's, the
 * worker would log as "clashmod/clash" from then on). On MAIL FROM it
 * calls all four and logs whether each answered as the module's own, then
 * resolves the sender's domain through petrel_dns_lookup (the core's
 * resolver, which itself calls the core's dns_lookup) and answers with
 * what it found: 250 when the domain has an A record, 550 otherwise.
 */
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <petrel/plugin.h>

/* Global on purpose (not static): these are the clashing names. Declared
 * first so that the module builds warning-free. */
void *xmalloc(size_t n);
void log_init(const char *syslog_name, const char *role);
void *buf_new(void);
void *dns_lookup(void *resolver, int type, const char *name, void *cb, void *arg);

static char own_buffer[64];
static int own_log_init_called;

void *xmalloc(size_t n)
{
    return n <= sizeof(own_buffer) ? own_buffer : NULL;
}

void log_init(const char *syslog_name, const char *role)
{
    own_log_init_called++;
}

void *buf_new(void)
{
    return own_buffer + 1;
}

void *dns_lookup(void *resolver, int type, const char *name, void *cb, void *arg)
{
    return own_buffer + 2;
}

struct lookup {
    petrel_pending *pending;
    petrel_module *m;
};

static void answered(const petrel_dns_answer *a, void *arg)
{
    struct lookup *l = arg;
    petrel_module_log(l->m, PETREL_LOG_INFO, "core resolver answered status %d with %zu address%s",
                      (int)a->status, a->count, a->count == 1 ? "" : "es");
    if (a->status == PETREL_DNS_OK && a->count > 0)
        petrel_resume(l->pending, PETREL_CONTINUE, 0, NULL, NULL);
    else
        petrel_resume(l->pending, PETREL_REJECT, 550, "5.1.8", "clashmod: sender domain does not resolve");
    free(l);
}

static petrel_verdict on_mail(petrel_session *s, const char *sender)
{
    petrel_module *m = petrel_session_module(s);
    int before = own_log_init_called;
    log_init("clashmod", "clash");
    petrel_log(s, PETREL_LOG_INFO, "own xmalloc: %s, own log_init: %s, own buf_new: %s, own dns_lookup: %s",
               xmalloc(8) == own_buffer ? "yes" : "no", own_log_init_called == before + 1 ? "yes" : "no",
               buf_new() == own_buffer + 1 ? "yes" : "no",
               dns_lookup(NULL, 0, "example.org", NULL, NULL) == own_buffer + 2 ? "yes" : "no");
    const char *at = strrchr(sender, '@');
    if (at == NULL)
        return PETREL_CONTINUE;
    struct lookup *l = calloc(1, sizeof(*l));   /* outlives the session if need be: freed in answered() */
    if (l == NULL)
        return PETREL_TEMPFAIL;
    l->m = m;
    l->pending = petrel_suspend(s);
    if (petrel_dns_lookup(m, PETREL_DNS_A, at + 1, answered, l) != 0) {
        petrel_resume(l->pending, PETREL_TEMPFAIL, 451, "4.3.0", "clashmod: no resolver");
        free(l);
    }
    return PETREL_PENDING;
}

static int init(petrel_module *m, const char **error)
{
    log_init("clashmod", "clash");
    petrel_module_log(m, PETREL_LOG_INFO, "initialised; own log_init called %d time%s", own_log_init_called,
                      own_log_init_called == 1 ? "" : "s");
    return 0;
}

const petrel_module_desc petrel_module_descriptor = {
    PETREL_MODULE_INIT,
    .name = "clashmod",
    .version = "1.0",
    .description = "defines xmalloc, log_init, buf_new and dns_lookup of its own (tests only)",
    .init = init,
    .hooks = { .mail = on_mail },
};
