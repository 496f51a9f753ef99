/*
 * Shared connection accounting (see anvil.h). Open addressing with a bounded
 * probe window: a lookup scans the whole window for the key before reusing
 * an idle slot, so a key is never stored twice even without tombstones.
 */
#include "config.h"

#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>

#include "lib/log.h"
#include "lib/hash.h"
#include "smtpd/anvil.h"

#define ANVIL_KEY_MAX 48
#define ANVIL_PROBES 32

struct anvil_slot {
    char key[ANVIL_KEY_MAX];          /* "" = never used */
    uint16_t count[ANVIL_MAX_WORKERS];
    time_t window_start;
    uint32_t window_count;
};

struct anvil {
    pthread_mutex_t lock;
    unsigned nslots;
    size_t map_size;
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
    return a;
}

void anvil_destroy(struct anvil *a)
{
    if (a)
        munmap(a, a->map_size);
}

static void lock(struct anvil *a)
{
    if (pthread_mutex_lock(&a->lock) == EOWNERDEAD)
        pthread_mutex_consistent(&a->lock);   /* the owner died mid-update: counts are still sane */
}

static unsigned total(const struct anvil_slot *s)
{
    unsigned sum = 0;
    for (int i = 0; i < ANVIL_MAX_WORKERS; i++)
        sum += s->count[i];
    return sum;
}

static struct anvil_slot *find(struct anvil *a, const char *key, int create, time_t now, unsigned window)
{
    uint32_t h = hash_string(key);
    struct anvil_slot *idle = NULL;
    for (unsigned i = 0; i < ANVIL_PROBES && i < a->nslots; i++) {
        struct anvil_slot *s = &a->slots[(h + i) % a->nslots];
        if (strcmp(s->key, key) == 0)
            return s;
        if (idle == NULL && (s->key[0] == '\0' ||
                             (total(s) == 0 && (window == 0 || now - s->window_start >= (time_t)window))))
            idle = s;
    }
    if (!create || idle == NULL)
        return NULL;
    memset(idle, 0, sizeof(*idle));
    snprintf(idle->key, sizeof(idle->key), "%s", key);
    idle->window_start = now;
    return idle;
}

int anvil_connect(struct anvil *a, unsigned w, const char *addr, time_t now,
                  unsigned rate_window, unsigned *concurrent, unsigned *rate)
{
    if (w >= ANVIL_MAX_WORKERS)
        return -1;
    lock(a);
    struct anvil_slot *s = find(a, addr, 1, now, rate_window);
    if (s == NULL) {
        pthread_mutex_unlock(&a->lock);
        return -1;
    }
    if (s->count[w] < UINT16_MAX)
        s->count[w]++;
    if (rate_window && now - s->window_start >= (time_t)rate_window) {
        s->window_start = now;
        s->window_count = 0;
    }
    s->window_count++;
    *concurrent = total(s);
    *rate = s->window_count;
    pthread_mutex_unlock(&a->lock);
    return 0;
}

void anvil_disconnect(struct anvil *a, unsigned w, const char *addr)
{
    if (w >= ANVIL_MAX_WORKERS)
        return;
    lock(a);
    struct anvil_slot *s = find(a, addr, 0, 0, 0);
    if (s && s->count[w] > 0)
        s->count[w]--;
    pthread_mutex_unlock(&a->lock);
}

void anvil_reset_worker(struct anvil *a, unsigned w)
{
    if (w >= ANVIL_MAX_WORKERS)
        return;
    lock(a);
    for (unsigned i = 0; i < a->nslots; i++)
        a->slots[i].count[w] = 0;
    pthread_mutex_unlock(&a->lock);
}
