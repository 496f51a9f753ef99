/*
 * The body of the message in DATA, kept for a scanner (the milter and
 * clamav modules): the header and body hooks may not suspend, so a module
 * records the body as it streams in and sends it at end of message. Memory
 * up to a bound (milter_buffer_limit, clamav_buffer_limit), then an
 * unlinked file in a directory of the module's choice (the queue's
 * incoming/), so a large message costs disk, not memory. Reading hands out
 * pieces at any offset (pread), so several milters can read the same body
 * one after another.
 */
#ifndef PETREL_MESSAGE_SPOOL_H
#define PETREL_MESSAGE_SPOOL_H

#include <stddef.h>
#include <sys/types.h>

typedef struct message_spool {
    unsigned char *mem;
    size_t len, cap;
    size_t mem_limit;      /* past this many bytes the body moves to a file */
    const char *dir;       /* where the unlinked file is made */
    int fd;                /* -1 while in memory */
    off_t size;            /* bytes in the file */
    int failed;            /* a write failed: the body is incomplete */
    char error[160];
} message_spool;

void message_spool_init(message_spool *sp, size_t mem_limit, const char *dir);
/* Forgets the content (and closes the file) for the next message. */
void message_spool_reset(message_spool *sp);
/* Returns 0, or -1 with sp->error (the spool is then failed). */
int message_spool_append(message_spool *sp, const void *data, size_t len);
/* Total bytes held. */
size_t message_spool_size(const message_spool *sp);
/* The bytes from offset off: a pointer to at most max bytes, in memory
 * (*out points into the spool) or read into buf (max bytes). Returns the
 * length (0 at the end) or -1 with sp->error. */
long message_spool_read(message_spool *sp, size_t off, unsigned char *buf, size_t max, const unsigned char **out);

/* The message as a scanner sends it: the headers of the session
 * (petrel_header_at, "Name: value" CRLF), the empty line, then the body
 * from the spool, handed out in pieces of any size. */
struct petrel_session;
typedef struct message_reader {
    struct petrel_session *session;
    message_spool *spool;
    size_t header_i;
    char *line;               /* the line being handed out */
    size_t line_len, line_off;
    int headers_done;
    size_t body_off;
} message_reader;

void message_reader_start(message_reader *r, struct petrel_session *s, message_spool *spool);
/* Up to cap bytes; 0 at the end, -1 on an error. */
long message_reader_read(message_reader *r, void *buf, size_t cap);
void message_reader_end(message_reader *r);
/* The bytes message_reader_read hands out in all. */
size_t message_reader_size(struct petrel_session *s, message_spool *spool);

#endif
