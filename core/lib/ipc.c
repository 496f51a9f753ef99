/* Framed messages between roles (see ipc.h for the format). */
#include "config.h"

#include <errno.h>
#include <string.h>
#include <unistd.h>

#include "lib/ipc.h"

static void put_u32(char *p, uint32_t v)
{
    p[0] = (char)(v >> 24); p[1] = (char)(v >> 16); p[2] = (char)(v >> 8); p[3] = (char)v;
}

static uint32_t get_u32(const char *p)
{
    const unsigned char *u = (const unsigned char *)p;
    return (uint32_t)u[0] << 24 | (uint32_t)u[1] << 16 | (uint32_t)u[2] << 8 | u[3];
}

void ipc_begin(struct buf *b, enum ipc_type type)
{
    char head[8] = { 0 };
    buf_reset(b);
    head[4] = (char)((unsigned)type >> 8);
    head[5] = (char)type;
    buf_append(b, head, sizeof(head));
}

void ipc_add(struct buf *b, const void *data, size_t len)
{
    char n[4];
    put_u32(n, (uint32_t)len);
    buf_append(b, n, 4);
    buf_append(b, data, len);
    unsigned count = ((unsigned char)b->data[6] << 8 | (unsigned char)b->data[7]) + 1;
    b->data[6] = (char)(count >> 8);
    b->data[7] = (char)count;
}

void ipc_add_str(struct buf *b, const char *s)
{
    ipc_add(b, s, strlen(s));
}

void ipc_finish(struct buf *b)
{
    put_u32(b->data, (uint32_t)(b->len - 4));
}

long ipc_parse(const char *data, size_t len, struct ipc_msg *out)
{
    if (len < 8)
        return 0;
    uint32_t body = get_u32(data);
    if (body < 4 || body > IPC_MAX_FRAME)
        return -1;
    if (len - 4 < body)
        return 0;
    const unsigned char *u = (const unsigned char *)data;
    out->type = (uint16_t)(u[4] << 8 | u[5]);
    out->count = (uint16_t)(u[6] << 8 | u[7]);
    if (out->count > IPC_MAX_FIELDS)
        return -1;
    size_t pos = 8, end = 4 + (size_t)body;
    for (unsigned i = 0; i < out->count; i++) {
        if (end - pos < 4)
            return -1;
        uint32_t flen = get_u32(data + pos);
        pos += 4;
        if (flen > end - pos)
            return -1;
        out->fields[i].data = data + pos;
        out->fields[i].len = flen;
        pos += flen;
    }
    if (pos != end)
        return -1;
    return (long)end;
}

int ipc_write_all(int fd, const void *data, size_t len)
{
    const char *p = data;
    while (len > 0) {
        ssize_t n = write(fd, p, len);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

int ipc_read_frame(int fd, struct buf *b, struct ipc_msg *out)
{
    buf_reset(b);
    for (;;) {
        long n = ipc_parse(b->data ? b->data : "", b->len, out);
        if (n > 0)
            return 0;
        if (n < 0) {
            errno = EPROTO;
            return -1;
        }
        char chunk[4096];
        ssize_t got = read(fd, chunk, sizeof(chunk));
        if (got < 0 && errno == EINTR)
            continue;
        if (got <= 0) {
            if (got == 0)
                errno = ECONNRESET;
            return -1;
        }
        buf_append(b, chunk, (size_t)got);
    }
}
