/*
 * Per-client connection counts and connection rates shared by every smtpd
 * worker (Postfix's anvil, without the extra process and round trip).
 *
 * The master maps one anonymous MAP_SHARED region before forking workers.
 * Each slot holds a client address, one connection counter per worker
 * index, and a fixed-window connection rate. Counting per worker lets the
 * master zero a crashed worker's column, so a crash never leaves phantom
 * connections behind. A robust process-shared mutex guards the table: a
 * worker that dies holding it does not wedge the others.
 */
#ifndef PETREL_SMTPD_ANVIL_H
#define PETREL_SMTPD_ANVIL_H

#include <time.h>

#define ANVIL_MAX_WORKERS 64

struct anvil;

struct anvil *anvil_create(unsigned slots);
void anvil_destroy(struct anvil *a);
/* Counts a new connection from addr for worker index w. Returns 0 and sets the
   client's concurrent count (including this one) and its connection count in
   the current rate window; -1 when the table is full (the caller lets the
   client in and logs: failing open keeps mail flowing). */
int anvil_connect(struct anvil *a, unsigned w, const char *addr, time_t now,
                  unsigned rate_window, unsigned *concurrent, unsigned *rate);
void anvil_disconnect(struct anvil *a, unsigned w, const char *addr);
/* Forgets every connection counted by worker index w (it exited). */
void anvil_reset_worker(struct anvil *a, unsigned w);

#endif
