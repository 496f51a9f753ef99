/*
 * The body of the message in DATA, kept for the milters: the header and
 * body hooks may not suspend, so the module records the body as it streams
 * in and sends it to the milters at end of message. Memory up to a bound
 * (milter_buffer_limit), then an unlinked file in a directory of the
 * administrator's choice (the queue's incoming/), so a large message costs
 * disk, not memory. Reading hands out pieces in order (pread), so several
 * milters can read the same body one after another.
 */
#ifndef PETREL_MILTER_SPOOL_H
#define PETREL_MILTER_SPOOL_H

#include <stddef.h>
#include <sys/types.h>

typedef struct milter_spool {
    unsigned char *mem;
    size_t len, cap;
    size_t mem_limit;      /* past this many bytes the body moves to a file */
    const char *dir;       /* where the unlinked file is made */
    int fd;                /* -1 while in memory */
    off_t size;            /* bytes in the file */
    int failed;            /* a write failed: the body is incomplete */
    char error[160];
} milter_spool;

void milter_spool_init(milter_spool *sp, size_t mem_limit, const char *dir);
/* Forgets the content (and closes the file) for the next message. */
void milter_spool_reset(milter_spool *sp);
/* Returns 0, or -1 with sp->error (the spool is then failed). */
int milter_spool_append(milter_spool *sp, const void *data, size_t len);
/* Total bytes held. */
size_t milter_spool_size(const milter_spool *sp);
/* The bytes from offset off: a pointer to at most max bytes, in memory
 * (*out points into the spool) or read into buf (max bytes). Returns the
 * length (0 at the end) or -1 with sp->error. */
long milter_spool_read(milter_spool *sp, size_t off, unsigned char *buf, size_t max, const unsigned char **out);

#endif
