/*
 * The framed message format roles use to talk over UNIX sockets (and that
 * petrelctl uses on the control socket). A frame is
 *
 *   u32 length (big-endian, bytes after this field) | u16 type | u16 count |
 *   count x ( u32 field length | field bytes )
 *
 * Every length is checked against the frame before use, fields are opaque
 * bytes (never newline-delimited text), and a frame is at most IPC_MAX_FRAME.
 */
#ifndef PETREL_LIB_IPC_H
#define PETREL_LIB_IPC_H

#include <stddef.h>
#include <stdint.h>

#include "lib/buf.h"

#define IPC_MAX_FRAME (1u << 20)
#define IPC_MAX_FIELDS 64

enum ipc_type {
    IPC_CTL_REQUEST = 1,   /* petrelctl -> master: field 0 = command, then arguments */
    IPC_CTL_REPLY = 2,     /* master -> petrelctl: field 0 = exit status ("0"), field 1 = text */
    IPC_MAILBOX_REQUEST = 3,   /* qmgr -> mailbox helper: one delivery (qmgr/mailbox_helper.c) */
    IPC_MAILBOX_RESULT = 4,    /* mailbox helper -> qmgr: its result */
    IPC_MODCMD_REQUEST = 5,    /* master -> smtpd worker: id, module, command, args (master/modctl.c) */
    IPC_MODCMD_REPLY = 6,      /* smtpd worker -> master: id, status ("0".."2"), text */
};

struct ipc_field {
    const char *data;   /* points into the frame; NUL-terminated copy not guaranteed */
    uint32_t len;
};

struct ipc_msg {
    uint16_t type;
    uint16_t count;
    struct ipc_field fields[IPC_MAX_FIELDS];
};

/* Starts a frame in b (clears it); add fields; then finish. */
void ipc_begin(struct buf *b, enum ipc_type type);
void ipc_add(struct buf *b, const void *data, size_t len);
void ipc_add_str(struct buf *b, const char *s);
void ipc_finish(struct buf *b);

/* Parses one complete frame at data (len bytes available). Returns the frame's
   total size when complete, 0 when more bytes are needed, -1 when malformed. */
long ipc_parse(const char *data, size_t len, struct ipc_msg *out);

/* Blocking helpers for simple clients (petrelctl) and tests. */
int ipc_write_all(int fd, const void *data, size_t len);
/* Reads one frame into b; returns 0 and fills out, -1 on error or EOF. */
int ipc_read_frame(int fd, struct buf *b, struct ipc_msg *out);

#endif
