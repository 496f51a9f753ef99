/*
 * modules/milter: the circuit breaker of each milter address
 * (milter_module_int.h says what it does; doc/modules/milter.md how an
 * admin sees it). Petrel's own: Postfix asks a dead milter in every
 * session. The state is the module's, per smtpd worker process: no lock,
 * nothing on the hot path but a comparison of the clock with retry_at_ms
 * while a breaker is open.
 */
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <petrel/plugin.h>

#include "milter_conn.h"
#include "milter_module_int.h"

static unsigned long long now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (unsigned long long)ts.tv_sec * 1000ull + (unsigned long long)ts.tv_nsec / 1000000ull;
}

/* The breaker of the milter called name: one per address in the process. */
breaker *milter_breaker_for(module_conf *c, const char *name)
{
    for (size_t i = 0; i < c->nbreakers; i++)
        if (strcmp(c->breakers[i]->name, name) == 0)
            return c->breakers[i];
    breaker *b = calloc(1, sizeof *b);
    breaker **grown = realloc(c->breakers, (c->nbreakers + 1) * sizeof *grown);
    if (grown)
        c->breakers = grown;
    if (b == NULL || grown == NULL || (b->name = strdup(name)) == NULL) {
        free(b);
        return NULL;
    }
    c->breakers[c->nbreakers++] = b;
    return b;
}

int milter_breaker_skip(module_conf *conf, petrel_module *m, breaker *b)
{
    if (b == NULL || !b->open)
        return 0;
    unsigned long long now = now_ms();
    if (now < b->retry_at_ms)
        return 1;
    /* This session is the probe; the others skip until it is answered
     * (or for another back-off, should the probe's session vanish). */
    b->retry_at_ms = now + conf->breaker_backoff_ms;
    petrel_module_log(m, PETREL_LOG_INFO, "milter %s: circuit breaker: trying the milter again", b->name);
    return 0;
}

void milter_breaker_failed(module_conf *conf, petrel_module *m, breaker *b)
{
    if (b == NULL || conf->breaker_failures == 0)
        return;
    if (b->failures < 0xffffffffu)
        b->failures++;
    if (b->open) {
        b->retry_at_ms = now_ms() + conf->breaker_backoff_ms;
        petrel_module_log(m, PETREL_LOG_WARNING, "milter %s: circuit breaker: still failing; not asked for "
                          "another %u s (its default_action applies at once)", b->name,
                          conf->breaker_backoff_ms / 1000u);
    } else if (b->failures >= conf->breaker_failures) {
        b->open = 1;
        b->retry_at_ms = now_ms() + conf->breaker_backoff_ms;
        petrel_module_log(m, PETREL_LOG_WARNING, "milter %s: circuit breaker: %u consecutive failures; not "
                          "asked for %u s (its default_action applies at once)", b->name, b->failures,
                          conf->breaker_backoff_ms / 1000u);
    }
}

void milter_breaker_answered(module_conf *conf, petrel_module *m, breaker *b)
{
    (void)conf;
    if (b == NULL)
        return;
    b->failures = 0;
    if (b->open) {
        b->open = 0;
        petrel_module_log(m, PETREL_LOG_INFO, "milter %s: circuit breaker: the milter answers again", b->name);
    }
}
