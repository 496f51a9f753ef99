/*
 * The ratelimit module's in-memory counters, shared by the smtpd workers
 * of one node: a file-backed MAP_SHARED region (ratelimit_state_file) that
 * every worker maps at init, guarded by one process-shared robust mutex.
 *
 * Why a file and not a new API: the plugin API has no shared memory for
 * modules, and the workers are forked before a module's init runs, so an
 * anonymous mapping cannot be shared. A file that each worker maps is
 * shared by construction, survives worker restarts and reloads (the
 * counters go on), and needs nothing from the core. The robust mutex means
 * a worker that dies holding the lock (a crash elsewhere in the process)
 * does not stop the others: the next locker recovers it.
 *
 * Counting is a sliding window of RATELIMIT_BUCKETS buckets (plus the one
 * being filled), the same scheme as the Redis script: an event is
 * forgotten between WINDOW and WINDOW + WINDOW/RATELIMIT_BUCKETS after it
 * happened, and no window of WINDOW ever holds more than N.
 *
 * The table is set-associative (sets of 8 slots, chosen by the key's
 * hash): a key lives in its set, an empty or idle slot is reused first,
 * and a full set evicts its least recently used key (logged).
 */
#ifndef PETREL_MODULE_RATELIMIT_SHM_H
#define PETREL_MODULE_RATELIMIT_SHM_H

#include <stddef.h>
#include <stdint.h>

#define RATELIMIT_BUCKETS 60

struct ratelimit_shm;

/* Opens (creating and sizing it when new or of another layout) the state
 * file with room for at least nslots keys. NULL with *error (static or
 * malloc'd text in errbuf). */
struct ratelimit_shm *ratelimit_shm_open(const char *path, size_t nslots, char *errbuf, size_t errsize);
void ratelimit_shm_close(struct ratelimit_shm *t);

/* Adds add events to key (window_ms long, at most limit) at now_ms unless
 * that would pass the limit. Returns 1 (counted) or 0 (over the limit, not
 * counted), with *count the events in the window (after adding). *evicted
 * is set when another key had to be forgotten to make room. */
int ratelimit_shm_hit(struct ratelimit_shm *t, const char *key, uint64_t window_ms, uint64_t limit, uint64_t add,
                      uint64_t now_ms, uint64_t *count, int *evicted);

/* The events of key in its window at now_ms (0 when unknown). */
uint64_t ratelimit_shm_peek(struct ratelimit_shm *t, const char *key, uint64_t window_ms, uint64_t now_ms);

#endif
