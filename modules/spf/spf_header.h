/*
 * The Received-SPF header's key=value pairs (RFC 7208 9.1): network text
 * (the client's HELO name, the envelope sender) written as a dot-atom when
 * it is one, else as a quoted-string with '"' and '\\' escaped, controls
 * made '?'.
 */
#ifndef PETREL_MODULE_SPF_HEADER_H
#define PETREL_MODULE_SPF_HEADER_H

#include <stddef.h>

/* Appends " key=value;" to the NUL-terminated buf of size bytes; what
 * does not fit is cut, buf stays NUL-terminated (a cut quoted value still
 * gets its closing quote when there is room for it). */
void spf_header_append_kv(char *buf, size_t size, const char *key, const char *value);

#endif
