/*
 * Connection accounting shared by every smtpd worker: Postfix's anvil for
 * per-client counts and rates, plus what Postfix's master keeps per service
 * (its session count against maxproc, the stress flag), without an extra
 * process or a round trip.
 *
 * The master maps one anonymous MAP_SHARED region before forking workers.
 * Each slot holds a key ("client:SERVICE:ADDR" or "service:NAME"), one
 * counter per worker index, and a fixed-window connection rate. Counting
 * per worker lets the master zero a crashed worker's column, so a crash
 * never leaves phantom connections behind. A robust process-shared mutex
 * guards the table: a worker that dies holding it does not wedge the others.
 *
 * Service slots (maxproc): a worker takes a session slot *before* it
 * accepts a connection. When the service is full it stops accepting (the
 * client waits in the listen backlog, as with Postfix's master) and marks
 * itself a waiter; whoever ends a session of that service wakes the waiters
 * through their eventfd (one per worker index, created here before the
 * fork), so they accept again. Taking the last slot of a stress-eligible
 * service starts Postfix's stress pulse: the service counts as under stress
 * for ANVIL_STRESS_SECONDS after it was last full.
 *
 * Keys are stored whole, never truncated: a key of ANVIL_KEY_MAX bytes or
 * more is refused (the configuration check keeps service names short
 * enough that this cannot happen).
 */
#ifndef PETREL_SMTPD_ANVIL_H
#define PETREL_SMTPD_ANVIL_H

#include <time.h>

#define ANVIL_MAX_WORKERS 64
#define ANVIL_KEY_MAX 160             /* longest key + 1: "client:" + service name + ":" + address */
#define ANVIL_SERVICE_NAME_MAX 100    /* longest master.cf service name an smtpd listener may have */
#define ANVIL_STRESS_SECONDS 1000     /* Postfix's stress pulse stretcher */

struct anvil;

struct anvil *anvil_create(unsigned slots);
void anvil_destroy(struct anvil *a);

/* Counts a new connection from a client key for worker index w. Returns 0
   and sets the client's concurrent count (including this one) and its
   connection count in the current rate window; -1 when the table is full
   or the key too long (the caller lets the client in and logs: failing open
   keeps mail flowing). */
int anvil_connect(struct anvil *a, unsigned w, const char *key, time_t now,
                  unsigned rate_window, unsigned *concurrent, unsigned *rate);
void anvil_disconnect(struct anvil *a, unsigned w, const char *key);
/* The current count of a key (all workers), without counting anything. */
unsigned anvil_concurrent(struct anvil *a, const char *key);
/* One on/off state per key for all workers, with hysteresis (postscreen's
   stress): it turns on when the key's count reaches high (0: never) and off
   when it falls to low. Returns 1 when this call turned it on, -1 off, 0
   neither (so one worker logs each change); *count and *on as they are now.
   Each worker's own flag would diverge: the one that saw the high mark
   would stay in stress while the others' clients left. */
int anvil_hysteresis(struct anvil *a, const char *key, unsigned high, unsigned low, unsigned *count, int *on);
/* The state anvil_hysteresis last left for key. */
int anvil_high(struct anvil *a, const char *key);

/* Session slots of a service (maxproc). */
enum anvil_take_status {
    ANVIL_TAKEN,        /* counted: release it when the session ends */
    ANVIL_FULL,         /* at the limit: do not accept; w is woken when a slot frees */
    ANVIL_UNCOUNTED,    /* the table is full: accept without counting (logged by the caller) */
};
struct anvil_take {
    unsigned sessions;      /* the service's sessions, including the one taken */
    int stressed;           /* the service is under stress */
    unsigned stress_epoch;  /* which stress period (changes each time one begins) */
    int stress_began;       /* this call began a stress period (FULL, or limit_reached) */
    int warn_busy;          /* log the process-limit warning now (once per ANVIL_STRESS_SECONDS) */
};
enum anvil_take_status anvil_service_take(struct anvil *a, unsigned w, const char *key, unsigned limit,
                                          int stress_eligible, time_t now, struct anvil_take *out);
/* The connection that took the service's last slot was accepted: the
   service is at its limit (stress period, process-limit warning; out is
   updated). A slot taken for an accept() that found nothing is just given
   back: a connection another worker took must not count. */
void anvil_service_limit_reached(struct anvil *a, const char *key, int stress_eligible, time_t now,
                                 struct anvil_take *out);
/* Gives a slot back and wakes the workers waiting for one. */
void anvil_service_release(struct anvil *a, unsigned w, const char *key);
/* 1 when the service is under stress now (and its period in *epoch), else 0. */
int anvil_service_stressed(struct anvil *a, const char *key, time_t now, unsigned *epoch);

/* The eventfd that wakes worker index w (readable = look at your paused listeners). */
int anvil_wake_fd(const struct anvil *a, unsigned w);
/* Wakes every worker (a stress period began: they shorten their idle sessions' timeouts). */
void anvil_wake_all(struct anvil *a);

/* Forgets every connection counted by worker index w (it exited) and wakes
   the workers that wait for the slots it held. */
void anvil_reset_worker(struct anvil *a, unsigned w);
/* Events counted across the workers in a fixed window of `window` seconds
   (AUTH commands per client, failed AUTH per client and per login): counts
   one and returns the number in the current window (0 when the table is
   full: failing open). */
unsigned anvil_count(struct anvil *a, const char *key, time_t now, unsigned window);
/* A lockout of key until `until` (failed AUTH), and when it ends (0: none). */
void anvil_lock(struct anvil *a, const char *key, time_t now, time_t until);
time_t anvil_locked_until(struct anvil *a, const char *key, time_t now);
/* Clears key's count and lockout. */
void anvil_forget(struct anvil *a, const char *key);
/* The number in the current window, without counting (Postfix's *_stat:
   new TLS sessions before a handshake). */
unsigned anvil_peek(struct anvil *a, const char *key, time_t now, unsigned window);

#endif
