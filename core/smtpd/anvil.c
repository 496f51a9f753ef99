/*
 * Shared connection accounting (see anvil.h). Open addressing with a bounded
 * probe window: a lookup scans the whole window for the key before reusing
 * an idle slot, so a key is never stored twice even without tombstones. A
 * slot is idle only when nothing refers to it any more: no connection, no
 * waiter, no stress period and no rate window still running. Each slot
 * keeps the length of its own rate window: whether a window still runs is
 * the slot's business, never the caller's (a lookup with a short or no
 * window must not wipe another key's connection rate).
 *
 * Wake-ups are written after the lock is released: an eventfd write never
 * blocks (EFD_NONBLOCK), and a worker that is gone simply never reads it.
 */
#include "config.h"

#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <unistd.h>

#include "lib/log.h"
#include "lib/hash.h"
#include "smtpd/anvil.h"

#define ANVIL_PROBES 32

struct anvil_slot {
    char key[ANVIL_KEY_MAX];          /* "" = never used */
    uint16_t count[ANVIL_MAX_WORKERS];
    time_t window_start;
    uint32_t window_count;
    uint32_t window;                  /* seconds window_count runs over (the longest its users asked); 0 = none */
    uint32_t stress_epoch;            /* service slots: bumped when a stress period begins */
    uint64_t waiters;                 /* service slots: workers paused until a session ends */
    time_t stress_until;              /* service slots: end of the stress period */
    time_t busy_warned;               /* service slots: last process-limit warning */
    time_t locked_until;              /* event slots: a lockout (failed AUTH) ends then */
    uint32_t high;                    /* count slots: 1 from reaching the high mark to falling to the low one */
};

struct anvil {
    pthread_mutex_t lock;
    unsigned nslots;
    size_t map_size;
    int wake_fd[ANVIL_MAX_WORKERS];   /* the same descriptors in every process (made before the fork) */
    struct anvil_slot slots[];
};

struct anvil *anvil_create(unsigned slots)
{
    size_t size = sizeof(struct anvil) + (size_t)slots * sizeof(struct anvil_slot);
    struct anvil *a = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (a == MAP_FAILED)
        msg_fatal("anvil: mmap %zu bytes: %s", size, strerror(errno));
    pthread_mutexattr_t attr;
    pthread_mutexattr_init(&attr);
    pthread_mutexattr_setpshared(&attr, PTHREAD_PROCESS_SHARED);
    pthread_mutexattr_setrobust(&attr, PTHREAD_MUTEX_ROBUST);
    pthread_mutex_init(&a->lock, &attr);
    pthread_mutexattr_destroy(&attr);
    a->nslots = slots;
    a->map_size = size;
    for (int i = 0; i < ANVIL_MAX_WORKERS; i++) {
        a->wake_fd[i] = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
        if (a->wake_fd[i] < 0)
            msg_fatal("anvil: eventfd: %s", strerror(errno));
    }
    return a;
}

void anvil_destroy(struct anvil *a)
{
    if (a == NULL)
        return;
    for (int i = 0; i < ANVIL_MAX_WORKERS; i++)
        close(a->wake_fd[i]);
    munmap(a, a->map_size);
}

static void lock(struct anvil *a)
{
    if (pthread_mutex_lock(&a->lock) == EOWNERDEAD)
        pthread_mutex_consistent(&a->lock);   /* the owner died mid-update: counts are still sane */
}

static void unlock(struct anvil *a)
{
    pthread_mutex_unlock(&a->lock);
}

static unsigned total(const struct anvil_slot *s)
{
    unsigned sum = 0;
    for (int i = 0; i < ANVIL_MAX_WORKERS; i++)
        sum += s->count[i];
    return sum;
}

static int idle(const struct anvil_slot *s, time_t now)
{
    if (s->key[0] == '\0')
        return 1;
    return total(s) == 0 && s->waiters == 0 && s->stress_until <= now && s->locked_until <= now && !s->high &&
           (s->window_count == 0 || now - s->window_start >= (time_t)s->window);
}

/* The window a count runs over is remembered in the slot, for idle(). */
static void note_window(struct anvil_slot *s, unsigned window)
{
    if (window > s->window)
        s->window = window;
}

static struct anvil_slot *find(struct anvil *a, const char *key, int create, time_t now)
{
    uint32_t h = hash_string(key);
    struct anvil_slot *reuse = NULL;
    for (unsigned i = 0; i < ANVIL_PROBES && i < a->nslots; i++) {
        struct anvil_slot *s = &a->slots[(h + i) % a->nslots];
        if (strcmp(s->key, key) == 0)
            return s;
        if (reuse == NULL && idle(s, now))
            reuse = s;
    }
    if (!create || reuse == NULL)
        return NULL;
    memset(reuse, 0, sizeof(*reuse));
    memcpy(reuse->key, key, strlen(key) + 1);
    reuse->window_start = now;
    return reuse;
}

static int key_fits(const char *key)
{
    if (strlen(key) < ANVIL_KEY_MAX)
        return 1;
    errno = ENAMETOOLONG;
    return 0;
}

static void wake(struct anvil *a, uint64_t workers)
{
    uint64_t one = 1;
    for (unsigned i = 0; i < ANVIL_MAX_WORKERS; i++)
        if (workers & ((uint64_t)1 << i))
            (void)!write(a->wake_fd[i], &one, sizeof(one));
}

int anvil_connect(struct anvil *a, unsigned w, const char *key, time_t now,
                  unsigned rate_window, unsigned *concurrent, unsigned *rate)
{
    if (w >= ANVIL_MAX_WORKERS || !key_fits(key))
        return -1;
    lock(a);
    struct anvil_slot *s = find(a, key, 1, now);
    if (s == NULL) {
        unlock(a);
        return -1;
    }
    note_window(s, rate_window);
    if (s->count[w] < UINT16_MAX)
        s->count[w]++;
    if (rate_window && now - s->window_start >= (time_t)rate_window) {
        s->window_start = now;
        s->window_count = 0;
    }
    s->window_count++;
    *concurrent = total(s);
    *rate = s->window_count;
    unlock(a);
    return 0;
}

unsigned anvil_concurrent(struct anvil *a, const char *key)
{
    if (!key_fits(key))
        return 0;
    lock(a);
    struct anvil_slot *s = find(a, key, 0, 0);
    unsigned n = s ? total(s) : 0;
    unlock(a);
    return n;
}

void anvil_disconnect(struct anvil *a, unsigned w, const char *key)
{
    if (w >= ANVIL_MAX_WORKERS || !key_fits(key))
        return;
    lock(a);
    struct anvil_slot *s = find(a, key, 0, 0);
    if (s && s->count[w] > 0)
        s->count[w]--;
    unlock(a);
}

/* The service is at its limit: Postfix's master then runs new processes with
 * stress=yes until the service has stayed below its limit for 1000 s. */
static void at_limit(struct anvil_slot *s, int stress_eligible, time_t now, struct anvil_take *out)
{
    if (stress_eligible) {
        if (s->stress_until <= now) {
            s->stress_epoch++;
            out->stress_began = 1;
        }
        s->stress_until = now + ANVIL_STRESS_SECONDS;
    }
    if (s->busy_warned == 0 || now - s->busy_warned >= ANVIL_STRESS_SECONDS) {
        s->busy_warned = now;
        out->warn_busy = 1;
    }
    out->stressed = s->stress_until > now;
    out->stress_epoch = s->stress_epoch;
}

enum anvil_take_status anvil_service_take(struct anvil *a, unsigned w, const char *key, unsigned limit,
                                          int stress_eligible, time_t now, struct anvil_take *out)
{
    memset(out, 0, sizeof(*out));
    if (w >= ANVIL_MAX_WORKERS || !key_fits(key))
        return ANVIL_UNCOUNTED;
    lock(a);
    struct anvil_slot *s = find(a, key, 1, now);
    if (s == NULL) {
        unlock(a);
        return ANVIL_UNCOUNTED;
    }
    enum anvil_take_status status;
    unsigned sessions = total(s);
    if (sessions < limit) {
        if (s->count[w] < UINT16_MAX)
            s->count[w]++;
        sessions++;
        status = ANVIL_TAKEN;
    } else {
        s->waiters |= (uint64_t)1 << w;
        status = ANVIL_FULL;
    }
    out->sessions = sessions;
    out->stressed = s->stress_until > now;
    out->stress_epoch = s->stress_epoch;
    /* Full: a client waits (the last slot taken counts only once its
     * accept succeeded: anvil_service_limit_reached). */
    if (status == ANVIL_FULL)
        at_limit(s, stress_eligible, now, out);
    unlock(a);
    return status;
}

void anvil_service_limit_reached(struct anvil *a, const char *key, int stress_eligible, time_t now,
                                 struct anvil_take *out)
{
    if (!key_fits(key))
        return;
    lock(a);
    struct anvil_slot *s = find(a, key, 0, 0);
    if (s)
        at_limit(s, stress_eligible, now, out);
    unlock(a);
}

void anvil_service_release(struct anvil *a, unsigned w, const char *key)
{
    if (w >= ANVIL_MAX_WORKERS || !key_fits(key))
        return;
    uint64_t waiters = 0;
    lock(a);
    struct anvil_slot *s = find(a, key, 0, 0);
    if (s && s->count[w] > 0) {
        s->count[w]--;
        waiters = s->waiters;
        s->waiters = 0;
    }
    unlock(a);
    wake(a, waiters);
}

int anvil_service_stressed(struct anvil *a, const char *key, time_t now, unsigned *epoch)
{
    *epoch = 0;
    if (!key_fits(key))
        return 0;
    lock(a);
    struct anvil_slot *s = find(a, key, 0, 0);
    int stressed = s && s->stress_until > now;
    if (s)
        *epoch = s->stress_epoch;
    unlock(a);
    return stressed;
}

int anvil_wake_fd(const struct anvil *a, unsigned w)
{
    return w < ANVIL_MAX_WORKERS ? a->wake_fd[w] : -1;
}

void anvil_wake_all(struct anvil *a)
{
    wake(a, ~(uint64_t)0);
}

void anvil_reset_worker(struct anvil *a, unsigned w)
{
    if (w >= ANVIL_MAX_WORKERS)
        return;
    uint64_t waiters = 0;
    lock(a);
    for (unsigned i = 0; i < a->nslots; i++) {
        struct anvil_slot *s = &a->slots[i];
        s->waiters &= ~((uint64_t)1 << w);
        if (s->count[w]) {
            s->count[w] = 0;
            waiters |= s->waiters;
            s->waiters = 0;
            /* with nobody counted any more, no hysteresis state stays on
             * (else the slot would never be idle); a count above the low mark
             * is looked at again by the next connect or disconnect */
            if (total(s) == 0)
                s->high = 0;
        }
    }
    unlock(a);
    wake(a, waiters);
}

int anvil_hysteresis(struct anvil *a, const char *key, unsigned high, unsigned low, unsigned *count, int *on)
{
    int turned = 0;
    *count = 0;
    *on = 0;
    if (!key_fits(key))
        return 0;
    lock(a);
    struct anvil_slot *s = find(a, key, 0, 0);
    if (s) {
        unsigned n = total(s);
        if (!s->high && high > 0 && n >= high) {
            s->high = 1;
            turned = 1;
        } else if (s->high && n <= low) {
            s->high = 0;
            turned = -1;
        }
        *count = n;
        *on = (int)s->high;
    }
    unlock(a);
    return turned;
}

int anvil_high(struct anvil *a, const char *key)
{
    if (!key_fits(key))
        return 0;
    lock(a);
    struct anvil_slot *s = find(a, key, 0, 0);
    int on = s ? (int)s->high : 0;
    unlock(a);
    return on;
}

/* ------------------------------------------------------------------ */
/* events and lockouts (AUTH commands, failed AUTH)                    */

unsigned anvil_count(struct anvil *a, const char *key, time_t now, unsigned window)
{
    if (!key_fits(key))
        return 0;
    lock(a);
    struct anvil_slot *s = find(a, key, 1, now);
    unsigned n = 0;
    if (s) {
        note_window(s, window);
        if (window && now - s->window_start >= (time_t)window) {
            s->window_start = now;
            s->window_count = 0;
        }
        if (s->window_count < UINT32_MAX)
            s->window_count++;
        n = s->window_count;
    }
    unlock(a);
    return n;
}

void anvil_lock(struct anvil *a, const char *key, time_t now, time_t until)
{
    if (!key_fits(key))
        return;
    lock(a);
    struct anvil_slot *s = find(a, key, 1, now);
    if (s)
        s->locked_until = until;
    unlock(a);
}

time_t anvil_locked_until(struct anvil *a, const char *key, time_t now)
{
    if (!key_fits(key))
        return 0;
    lock(a);
    struct anvil_slot *s = find(a, key, 0, now);
    time_t until = s ? s->locked_until : 0;
    unlock(a);
    return until;
}

void anvil_forget(struct anvil *a, const char *key)
{
    if (!key_fits(key))
        return;
    lock(a);
    struct anvil_slot *s = find(a, key, 0, 0);
    if (s) {
        s->window_count = 0;
        s->locked_until = 0;
    }
    unlock(a);
}

unsigned anvil_peek(struct anvil *a, const char *key, time_t now, unsigned window)
{
    if (!key_fits(key))
        return 0;
    lock(a);
    struct anvil_slot *s = find(a, key, 0, now);
    unsigned n = s && !(window && now - s->window_start >= (time_t)window) ? s->window_count : 0;
    unlock(a);
    return n;
}
