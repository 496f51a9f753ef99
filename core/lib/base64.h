/*
 * Base64 (RFC 4648), as SMTP AUTH responses and challenges use it (RFC
 * 4954): strict decoding, no line breaks, no white space, padding required and only at
 * the end. Generic code (Postfix keeps its base64_code in util/), so it
 * lives in lib/ where any role or mail code can use it.
 */
#ifndef PETREL_LIB_BASE64_H
#define PETREL_LIB_BASE64_H

#include <stddef.h>

/* Decodes the NUL-terminated in into out, which has room for strlen(in)
 * bytes; returns the decoded length (out is not NUL-terminated; the data
 * may hold NUL bytes), or -1 when in is not strict base64. */
long base64_decode(const char *in, char *out);

/* Room for encoding len bytes, the NUL included. */
#define base64_encoded_size(len) (((len) + 2) / 3 * 4 + 1)
/* Encodes len bytes of in into out (base64_encoded_size(len) bytes), NUL-terminated. */
void base64_encode(const unsigned char *in, size_t len, char *out);

#endif
