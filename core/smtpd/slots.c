/*
 * Service session slots and stress (doc/architecture.md, "Service limits
 * and stress"): taking a slot of a master.cf service in the shared table,
 * what happens when the service reaches its maxproc (the warning, the
 * stress period), and switching the waiting sessions of a stressed service
 * to its stress settings. The worker's accept loop takes a slot before
 * accept(); postscreen takes one for a client it passed.
 */
#include "config.h"

#include <string.h>
#include <time.h>

#include <event2/bufferevent.h>

#include "lib/log.h"
#include "smtpd/anvil.h"
#include "smtpd/smtpd_int.h"

/* Sessions of a service that wait for their client switch to its stress
 * settings; their timeout starts again with the (shorter) stress value. */
void smtpd_apply_stress(struct smtpd_worker *w, const char *service_key, unsigned epoch)
{
    const struct smtpd_listener *changed = NULL;
    for (int i = 0; i < w->nlisteners; i++) {
        struct smtpd_listener *l = &w->listeners[i];
        if (strcmp(l->service_key, service_key) == 0 && l->stress_epoch != epoch) {
            l->stress_epoch = epoch;
            changed = l;
        }
    }
    if (changed == NULL)
        return;
    unsigned switched = 0;
    for (struct smtpd_session *s = w->sessions; s; s = s->next) {
        struct smtpd_listener *l = s->listener;
        if (strcmp(l->service_key, service_key) != 0 || s->set == l->stress_settings)
            continue;
        if (s->state != SMTPD_CMD && s->state != SMTPD_AUTH && s->state != SMTPD_DATA && s->state != SMTPD_BDAT)
            continue;   /* busy on our side (a check, a commit) or closing */
        s->set = l->stress_settings;
        const struct timeval *tv = s->tls_handshaking ? &s->set->starttls_timeout : &s->set->timeout;
        smtpd_io_set_timeouts(s, tv);
        switched++;
    }
    if (switched)
        msg_info("service %s: under stress: %u session%s switched to the stress settings (smtpd_timeout %lds)",
                 changed->settings->service_name, switched, switched == 1 ? "" : "s",
                 (long)changed->stress_settings->timeout.tv_sec);
}

static void warn_busy(const struct smtpd_listener *l, unsigned sessions)
{
    const struct smtpd_settings *set = l->settings;
    msg_warn("service \"%s\" has reached its process limit \"%d\" (%u sessions): new clients wait until a "
             "session ends", set->service_name, set->maxproc, sessions);
    msg_warn("to avoid this condition, increase the process count in master.cf or reduce the service time "
             "per client%s", l->stress_eligible ? " (stress-adapting settings such as ${stress?{10}:{300}} now "
                                                  "apply to this service)" : "");
}

/* The service reached its limit (a connection waits, or we took the last
 * slot): log it, start the stress period everywhere. */
void smtpd_limit_reached(struct smtpd_listener *l, const struct anvil_take *take)
{
    struct smtpd_worker *w = l->worker;
    if (take->warn_busy)
        warn_busy(l, take->sessions);
    if (take->stress_began) {
        msg_info("service %s: under stress (at its process limit %d): stress=yes settings apply until it "
                 "stays below the limit for %d s", l->settings->service_name, l->settings->maxproc,
                 ANVIL_STRESS_SECONDS);
        anvil_wake_all(w->anvil);   /* every worker shortens its idle sessions (us too, below) */
    }
    if (take->stressed)
        smtpd_apply_stress(w, l->service_key, take->stress_epoch);
}

int smtpd_take_slot(struct smtpd_listener *l, int *stressed)
{
    struct smtpd_worker *w = l->worker;
    int maxproc = l->settings->maxproc;
    *stressed = 0;
    if (maxproc <= 0)
        return 0;
    struct anvil_take take;
    memset(&take, 0, sizeof(take));
    time_t now = time(NULL);
    enum anvil_take_status st = anvil_service_take(w->anvil, w->index, l->service_key, (unsigned)maxproc,
                                                   l->stress_eligible, now, &take);
    if (st == ANVIL_FULL) {
        smtpd_limit_reached(l, &take);
        return -1;
    }
    if (st == ANVIL_UNCOUNTED) {
        msg_warn("connection accounting table full: not limiting service %s", l->settings->service_name);
        return 0;
    }
    if (take.sessions >= (unsigned)maxproc) {
        anvil_service_limit_reached(w->anvil, l->service_key, l->stress_eligible, now, &take);
        smtpd_limit_reached(l, &take);
    }
    *stressed = take.stressed;
    return 1;
}
