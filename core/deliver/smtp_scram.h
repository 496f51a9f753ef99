/*
 * The SCRAM-SHA-256 client's messages (RFC 5802, RFC 7677), out of the
 * SMTP client's session code (smtp_sasl.c) so that a unit test and a fuzz
 * target reach them without a connection: the client-first message, the
 * parse of the server-first message and the client-final message built
 * from it, and the check of the server-final message.
 *
 * Decision: every message is bounded (SCRAM_MESSAGE_MAX) but never cut: a
 * longer server message or user name is an authentication failure whose
 * reason names the bound, not a shorter nonce sent back.
 */
#ifndef PETREL_DELIVER_SMTP_SCRAM_H
#define PETREL_DELIVER_SMTP_SCRAM_H

#include <stddef.h>

#include "lib/buf.h"

/* The longest server-first or server-final message and the longest user
 * name we take (RFC 4954 lets an AUTH line be 12288 octets; base64 of
 * this much and the nonce fits). */
#define SCRAM_MESSAGE_MAX 4096
/* PBKDF2 iterations a server may ask for: RFC 7677 asks for at least 4096;
 * more than this would stall the queue manager's loop. */
#define SCRAM_ITERATIONS_MAX 1000000

struct scram_client {
    char *first_bare;              /* n=saslname,r=client-nonce */
    size_t nonce_len;              /* the client nonce: first_bare's tail */
    char *auth_message;            /* client-first-bare,server-first,client-final-without-proof */
    unsigned char salted[32];      /* SaltedPassword */
};

/* Starts an exchange: the client-first message "n,,n=USER,r=NONCE" into
 * *out (appended). nonce is printable ASCII without ','. 0, or -1 with
 * *why (a user name too long or holding a NUL-free but invalid byte). */
int scram_client_first(struct scram_client *s, const char *user, const char *nonce, struct buf *out,
                       const char **why);

/* What a server-first message says (scram_parse_server_first). */
struct scram_server_first {
    const char *nonce;             /* r=: points into the message, not NUL-terminated */
    size_t nonce_len;
    unsigned char *salt;           /* s=, decoded (malloc'd: scram_server_first_free) */
    size_t salt_len;
    long iterations;               /* i= */
};

/* Parses the server-first message (len bytes, not NUL-terminated) strictly
 * against our client-first: 0, or -1 with *why. */
int scram_parse_server_first(const struct scram_client *s, const char *server_first, size_t len,
                             struct scram_server_first *out, const char **why);
void scram_server_first_free(struct scram_server_first *sf);

/* Reads the server-first message (len bytes, not NUL-terminated, as
 * decoded from the challenge) and appends the client-final message to
 * *out. 0, or -1 with *why saying what was wrong with the message. */
int scram_client_final(struct scram_client *s, const char *password, const char *server_first, size_t len,
                       struct buf *out, const char **why);

/* Checks the server-final message: 0 when it is "v=" with the server
 * signature we expect; -1 with *why otherwise. When the server sent
 * "e=ERROR", *why points into errbuf (size bytes), the error made
 * printable. */
int scram_server_final(const struct scram_client *s, const char *server_final, size_t len, const char **why,
                       char *errbuf, size_t size);

/* Clears the secrets and frees what the exchange allocated. */
void scram_client_free(struct scram_client *s);

#endif
