/*
 * Netstrings (D. J. Bernstein's "LEN:BYTES,"), as the socketmap protocol
 * (Sendmail's, Postfix's socketmap: tables) frames every request and reply.
 *
 * The reader is incremental (bytes arrive from a non-blocking socket in
 * any pieces) and bounded: the length has at most 10 digits and may not
 * exceed the limit the caller gives (socketmap_max_reply_size), so a
 * hostile or broken server costs at most that much memory. Anything but
 * digits, ':', the announced bytes and ',' is a protocol error, never
 * skipped. The payload is kept with a NUL after it; netstring_has_nul()
 * says whether the payload itself contains one.
 */
#ifndef PETREL_SOCKETMAP_NETSTRING_H
#define PETREL_SOCKETMAP_NETSTRING_H

#include <stddef.h>

enum netstring_state { NS_LENGTH, NS_DATA, NS_COMMA, NS_DONE, NS_ERROR };

struct netstring_reader {
    enum netstring_state state;
    size_t limit;          /* largest payload accepted */
    size_t length;         /* announced */
    int digits;
    size_t have;           /* payload bytes read */
    char *data;            /* length + 1 bytes (malloc'd) */
    const char *error;     /* static text, NS_ERROR */
};

void netstring_reader_init(struct netstring_reader *r, size_t limit);
void netstring_reader_free(struct netstring_reader *r);
/* Consumes up to len bytes; returns how many it used (it stops after the
 * closing comma or at an error). Check r->state afterwards. */
size_t netstring_feed(struct netstring_reader *r, const char *bytes, size_t len);
/* 1 when a complete payload contains a NUL byte. */
int netstring_has_nul(const struct netstring_reader *r);

/* "LEN:" + payload + ",", malloc'd; *out_len its length. */
char *netstring_encode(const char *payload, size_t len, size_t *out_len);

#endif
