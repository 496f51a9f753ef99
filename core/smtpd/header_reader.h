/*
 * Splitting message content into its header section and body as it streams
 * in (RFC 5322 2.2 and 2.1): one callback per header field (folded lines
 * joined, their CRLFs kept), one at the end of the header section, then the
 * body bytes. Used by content.c for module hooks and header rewriting; a
 * pure state machine with no session in it, so that t/fuzz/fuzz_header.c
 * can check it on its own.
 *
 * Rules (Postfix's cleanup): a header field starts with a name of printable
 * ASCII other than ':' followed by ':'; a line starting with a blank
 * continues the field before it; an empty line ends the header section (the
 * "separator"); any other line, or a header section larger than limit bytes,
 * ends it too and is already body. Input comes with CRLF line ends (smtpd
 * normalises them); the text passed to callbacks excludes the line end of a
 * field's last line. Memory: two heap buffers (at most limit bytes each),
 * freed by header_reader_free.
 */
#ifndef PETREL_SMTPD_HEADER_READER_H
#define PETREL_SMTPD_HEADER_READER_H

#include <stddef.h>

#include "lib/buf.h"

struct header_reader_cb {
    /* One field: the name (before ':') and the value (everything after ':',
     * folded lines included with their CRLFs). Lengths, not C strings: a
     * field may hold NUL bytes. */
    void (*header)(void *ctx, const char *name, size_t name_len, const char *value, size_t value_len);
    /* The header section ended; the body starts at offset body_start;
     * separator: it ended with an empty line (not counted in the body). */
    void (*end_of_headers)(void *ctx, unsigned long long body_start, int separator);
    void (*body)(void *ctx, const char *data, size_t n);
};

struct header_reader {
    struct buf line;              /* the physical line being assembled */
    struct buf field;             /* the field being assembled */
    unsigned long long start;     /* offset of the first content byte */
    unsigned long long pos;       /* content bytes seen */
    unsigned long long header_bytes;
    size_t limit;                 /* header_size_limit */
    int in_body;
};

void header_reader_init(struct header_reader *r, unsigned long long start, size_t limit);
void header_reader_feed(struct header_reader *r, const char *data, size_t n, const struct header_reader_cb *cb,
                        void *ctx);
/* At the end of the content: a last line without CRLF, and the end of the
 * header section when the content had no body. */
void header_reader_end(struct header_reader *r, const struct header_reader_cb *cb, void *ctx);
void header_reader_free(struct header_reader *r);

#endif
