/*
 * The shared in-memory counters of the ratelimit module (see
 * ratelimit_shm.h for the design). Layout of the file: a header (magic,
 * layout version, number of sets, the robust mutex), then the slots. The
 * file is created and initialised under flock(2), so workers that start
 * together agree on one initialisation; afterwards only the mutex is used,
 * for a few hundred nanoseconds per check.
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "ratelimit_shm.h"

#define MAGIC 0x5065724c524c3031ULL   /* "PerLRL01" */
#define WAYS 8
#define RING (RATELIMIT_BUCKETS + 1)
#define KEY_TEXT 80

struct slot {
    uint64_t h1, h2;                  /* the key's hash; h1 == 0 && h2 == 0: empty */
    uint64_t granule_ms;              /* window / RATELIMIT_BUCKETS */
    uint64_t newest;                  /* the bucket number last written */
    uint64_t last_ms;                 /* last use, for eviction */
    uint32_t count[RING];             /* bucket number % RING */
    char key[KEY_TEXT];               /* the key's start, for people */
};

struct header {
    uint64_t magic;
    uint64_t layout;                  /* sizeof(struct slot) and RING */
    uint64_t nsets;
    pthread_mutex_t lock;
};

struct ratelimit_shm {
    struct header *h;
    struct slot *slots;
    size_t map_size;
};

static uint64_t layout_id(void)
{
    return ((uint64_t)sizeof(struct slot) << 16) | RING;
}

static void hash_key(const char *key, uint64_t *h1, uint64_t *h2)
{
    uint64_t a = 0xcbf29ce484222325ULL, b = 0x9e3779b97f4a7c15ULL;
    for (const unsigned char *p = (const unsigned char *)key; *p; p++) {
        a = (a ^ *p) * 0x100000001b3ULL;
        b = (b + *p) * 0xff51afd7ed558ccdULL;
        b ^= b >> 29;
    }
    if (a == 0 && b == 0)
        a = 1;
    *h1 = a;
    *h2 = b;
}

static int init_mutex(pthread_mutex_t *m)
{
    pthread_mutexattr_t attr;
    if (pthread_mutexattr_init(&attr) != 0)
        return -1;
    pthread_mutexattr_setpshared(&attr, PTHREAD_PROCESS_SHARED);
    pthread_mutexattr_setrobust(&attr, PTHREAD_MUTEX_ROBUST);
    int r = pthread_mutex_init(m, &attr);
    pthread_mutexattr_destroy(&attr);
    return r == 0 ? 0 : -1;
}

/* The header of an existing valid table, read with pread (0 when none). */
static uint64_t existing_sets(int fd, off_t file_size)
{
    struct header h;
    if ((size_t)file_size < sizeof(h) || pread(fd, &h, sizeof(h), 0) != (ssize_t)sizeof(h))
        return 0;
    if (h.magic != MAGIC || h.layout != layout_id() || h.nsets == 0 ||
        (size_t)file_size != sizeof(struct header) + h.nsets * WAYS * sizeof(struct slot))
        return 0;
    return h.nsets;
}

struct ratelimit_shm *ratelimit_shm_open(const char *path, size_t nslots, char *errbuf, size_t errsize)
{
    size_t nsets = (nslots + WAYS - 1) / WAYS;
    if (nsets == 0)
        nsets = 1;
    int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (fd < 0) {
        snprintf(errbuf, errsize, "cannot open %s: %s", path, strerror(errno));
        return NULL;
    }
    if (flock(fd, LOCK_EX) != 0) {
        snprintf(errbuf, errsize, "cannot lock %s: %s", path, strerror(errno));
        close(fd);
        return NULL;
    }
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        snprintf(errbuf, errsize, "%s is not a regular file", path);
        close(fd);
        return NULL;
    }
    /* A valid table in use keeps its size: other workers (perhaps of an
     * older configuration) have it mapped, and shrinking it under them
     * would kill them. A new size applies once the file is removed. */
    uint64_t have = existing_sets(fd, st.st_size);
    int fresh = have == 0;
    if (!fresh)
        nsets = have;
    size_t size = sizeof(struct header) + nsets * WAYS * sizeof(struct slot);
    if (fresh && (ftruncate(fd, 0) != 0 || ftruncate(fd, (off_t)size) != 0)) {
        snprintf(errbuf, errsize, "cannot size %s: %s", path, strerror(errno));
        close(fd);
        return NULL;
    }
    void *map = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (map == MAP_FAILED) {
        snprintf(errbuf, errsize, "cannot map %s: %s", path, strerror(errno));
        close(fd);
        return NULL;
    }
    struct header *h = map;
    if (fresh) {
        if (init_mutex(&h->lock) != 0) {
            snprintf(errbuf, errsize, "cannot make the lock of %s", path);
            munmap(map, size);
            close(fd);
            return NULL;
        }
        h->nsets = nsets;
        h->layout = layout_id();
        h->magic = MAGIC;
        msync(map, sizeof(*h), MS_SYNC);
    }
    flock(fd, LOCK_UN);
    close(fd);   /* the mapping stays */
    struct ratelimit_shm *t = calloc(1, sizeof(*t));
    if (t == NULL) {
        munmap(map, size);
        snprintf(errbuf, errsize, "out of memory");
        return NULL;
    }
    t->h = h;
    t->slots = (struct slot *)((char *)map + sizeof(struct header));
    t->map_size = size;
    return t;
}

void ratelimit_shm_close(struct ratelimit_shm *t)
{
    if (t == NULL)
        return;
    munmap(t->h, t->map_size);
    free(t);
}

static void lock(struct ratelimit_shm *t)
{
    int r = pthread_mutex_lock(&t->h->lock);
    if (r == EOWNERDEAD)
        pthread_mutex_consistent(&t->h->lock);   /* a worker died holding it: the counters are still usable */
}

static void unlock(struct ratelimit_shm *t)
{
    pthread_mutex_unlock(&t->h->lock);
}

/* Brings a slot's ring to bucket number now_bucket (forgetting what left
 * the window) and returns the events in the window. */
static uint64_t advance(struct slot *s, uint64_t now_bucket)
{
    if (now_bucket > s->newest) {
        uint64_t gap = now_bucket - s->newest;
        if (gap >= RING)
            memset(s->count, 0, sizeof(s->count));
        else
            for (uint64_t b = s->newest + 1; b <= now_bucket; b++)
                s->count[b % RING] = 0;
        s->newest = now_bucket;
    }
    uint64_t sum = 0;
    for (int i = 0; i < RING; i++)
        sum += s->count[i];
    return sum;
}

static struct slot *find(struct ratelimit_shm *t, uint64_t h1, uint64_t h2, uint64_t granule, uint64_t now_ms,
                         int create, int *evicted)
{
    struct slot *set = &t->slots[(h1 % t->h->nsets) * WAYS];
    struct slot *free_slot = NULL, *oldest = NULL;
    for (int i = 0; i < WAYS; i++) {
        struct slot *s = &set[i];
        if (s->h1 == h1 && s->h2 == h2) {
            if (s->granule_ms != granule) {
                /* The same key under another window (a reload changed it). */
                memset(s->count, 0, sizeof(s->count));
                s->granule_ms = granule;
                s->newest = now_ms / granule;
            }
            return s;
        }
        int idle = (s->h1 == 0 && s->h2 == 0) ||
                   (s->granule_ms && advance(s, now_ms / s->granule_ms) == 0);
        if (idle && free_slot == NULL)
            free_slot = s;
        if (oldest == NULL || s->last_ms < oldest->last_ms)
            oldest = s;
    }
    if (!create)
        return NULL;
    struct slot *s = free_slot;
    if (s == NULL) {
        s = oldest;
        *evicted = 1;
    }
    memset(s, 0, sizeof(*s));
    s->h1 = h1;
    s->h2 = h2;
    s->granule_ms = granule;
    s->newest = now_ms / granule;
    return s;
}

static uint64_t granule_of(uint64_t window_ms)
{
    uint64_t g = window_ms / RATELIMIT_BUCKETS;
    return g ? g : 1;
}

int ratelimit_shm_hit(struct ratelimit_shm *t, const char *key, uint64_t window_ms, uint64_t limit, uint64_t add,
                      uint64_t now_ms, uint64_t *count, int *evicted)
{
    uint64_t h1, h2, granule = granule_of(window_ms);
    hash_key(key, &h1, &h2);
    *evicted = 0;
    lock(t);
    struct slot *s = find(t, h1, h2, granule, now_ms, 1, evicted);
    if (s->key[0] == '\0')
        snprintf(s->key, sizeof(s->key), "%s", key);
    uint64_t sum = advance(s, now_ms / granule);
    s->last_ms = now_ms;
    int counted = 0;
    if (sum + add <= limit) {
        uint32_t *c = &s->count[s->newest % RING];
        *c = (uint32_t)(*c + add > UINT32_MAX ? UINT32_MAX : *c + add);
        sum += add;
        counted = 1;
    }
    unlock(t);
    *count = sum;
    return counted;
}

uint64_t ratelimit_shm_peek(struct ratelimit_shm *t, const char *key, uint64_t window_ms, uint64_t now_ms)
{
    uint64_t h1, h2, granule = granule_of(window_ms);
    int evicted = 0;
    hash_key(key, &h1, &h2);
    lock(t);
    struct slot *s = find(t, h1, h2, granule, now_ms, 0, &evicted);
    uint64_t sum = s ? advance(s, now_ms / granule) : 0;
    unlock(t);
    return sum;
}
