/*
 * clamd's protocol, client side, for INSTREAM (and PING and VERSION to see
 * that clamd is there): the command words and a bounded parser of clamd's
 * one-line reply. Pure functions (clamd_client.h is the connection).
 *
 * "zINSTREAM\0" (the z form: NUL-terminated command and reply), then
 * chunks, each a 4-byte network-order length and that many bytes, then a
 * zero length. clamd answers one line: "stream: OK", "stream: NAME FOUND",
 * "... ERROR" (e.g. "INSTREAM size limit exceeded. ERROR" past its
 * StreamMaxLength, after which it closes the connection), and for PING
 * "PONG", for VERSION "ClamAV 1.4.6/27000/...".
 */
#ifndef PETREL_CLAMD_PROTO_H
#define PETREL_CLAMD_PROTO_H

#include <stddef.h>
#include <stdint.h>

#define CLAMD_REPLY_MAX 1024     /* a longer reply is a protocol error */
#define CLAMD_VIRUS_MAX 256

typedef enum clamd_command { CLAMD_INSTREAM, CLAMD_PING, CLAMD_VERSION } clamd_command;

typedef enum clamd_verdict {
    CLAMD_CLEAN,        /* stream: OK */
    CLAMD_FOUND,        /* stream: NAME FOUND */
    CLAMD_SIZE_LIMIT,   /* INSTREAM size limit exceeded. ERROR */
    CLAMD_ERROR,        /* any other ... ERROR */
    CLAMD_PONG,         /* PING */
    CLAMD_VERSION_TEXT, /* VERSION */
} clamd_verdict;

typedef struct clamd_reply {
    clamd_verdict verdict;
    char virus[CLAMD_VIRUS_MAX + 1];     /* FOUND: the signature name */
    char text[CLAMD_REPLY_MAX + 1];      /* the reply, made printable */
} clamd_reply;

/* The command with its terminating NUL ("zINSTREAM\0"); *len its length. */
const char *clamd_command_text(clamd_command cmd, size_t *len);

/* A chunk header for n bytes. */
void clamd_chunk_header(unsigned char out[4], uint32_t n);

/* Parses one reply line (without its NUL or LF) as an answer to cmd.
 * Returns 0, or -1 with err when it is not a reply clamd gives. */
int clamd_parse_reply(clamd_command cmd, const char *line, size_t len, clamd_reply *r, char *err, size_t errlen);

#endif
