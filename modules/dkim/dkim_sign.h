/*
 * The dkim module's signer: one DKIM-Signature (RFC 6376, rsa-sha256 and
 * RFC 8463 ed25519-sha256, relaxed or simple canonicalization) made with
 * OpenSSL from a key that was decoded once (EVP_PKEY), instead of through
 * libopendkim's dkim_sign(), which takes the PEM text and decodes it again
 * for every message (the cost that bench/RESULTS.md section 4b measured).
 * Verification stays with libopendkim (dkim_msg.c).
 *
 * The body is canonicalized and hashed as it streams in (any chunk size,
 * CRLF or bare LF line ends: a bare LF counts as CRLF, the form the queue
 * stores); the header section is given at the end, each header as it
 * stands in the message (folded lines joined with CRLF, no final CRLF),
 * because h= lists what is there and simple canonicalization hashes the
 * exact bytes.
 */
#ifndef PETREL_MODULE_DKIM_SIGN_H
#define PETREL_MODULE_DKIM_SIGN_H

#include <stddef.h>

#include <openssl/evp.h>

#include "dkim_tables.h"

struct dksign;

/* key is referenced (EVP_PKEY_up_ref), not copied; signer may be NULL or
 * "" (no i=). NULL when out of memory. */
struct dksign *dksign_new(EVP_PKEY *key, enum dk_alg alg, const char *domain, const char *selector,
                          const char *signer, int relaxed_header, int relaxed_body);
/* Body bytes in chunks of any size. 0, or -1 when hashing failed. */
int dksign_body(struct dksign *s, const char *data, size_t len);
/* Makes the signature over headers (top to bottom) and the body fed so
 * far; oversign lists lower-case names signed once more than present
 * (RFC 6376 8.15). Returns the DKIM-Signature value (malloc'd, without the
 * name and ": ", folded with CRLF + tab) or NULL with err. */
char *dksign_finish(struct dksign *s, char *const *headers, size_t nheaders, const char *const *oversign,
                    long long timestamp, char *err, size_t errlen);
void dksign_free(struct dksign *s);

/* Exposed for the unit test: the canonical form of one header (with its
 * CRLF) appended to out, which must hold 2 * len + 3 bytes. Returns the
 * bytes written. */
size_t dksign_canon_header(const char *header, size_t len, int relaxed, char *out);

#endif
