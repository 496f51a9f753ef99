/*
 * Postfix's XFORWARD command: its arguments (see xforward.c).
 */
#ifndef PETREL_MAIL_XFORWARD_H
#define PETREL_MAIL_XFORWARD_H

#include <stddef.h>

#define XFORWARD_VALUE_MAX 255   /* Postfix's limit, in bytes, before decoding */

enum { XFORWARD_F_NAME = 1u << 0, XFORWARD_F_ADDR = 1u << 1, XFORWARD_F_PORT = 1u << 2, XFORWARD_F_PROTO = 1u << 3,
       XFORWARD_F_HELO = 1u << 4, XFORWARD_F_IDENT = 1u << 5, XFORWARD_F_SOURCE = 1u << 6 };

/* What an XFORWARD command said; "unknown" for an attribute given as
 * [UNAVAILABLE] (an empty helo). Printable ASCII only. */
struct xforward_attrs {
    unsigned set;                     /* XFORWARD_F_* given */
    char name[256], addr[64], port[8], proto[65], helo[256], ident[256];
    int source_remote;                /* SOURCE=REMOTE (else LOCAL) */
};

/* Parses the arguments (after "XFORWARD ", len bytes, NUL-free) into
 * *attrs, adding to what is there: all or nothing. 0, or -1 with reply set
 * to a complete one-line "501 5.5.4 ..." reply (printable ASCII). */
int xforward_parse(const char *args, size_t len, struct xforward_attrs *attrs, char *reply, size_t reply_size);

#endif
