/*
 * Private to core/queue: the queue file format's constants, record types
 * and byte helpers, shared by the writer (queue_file.c) and the reader
 * (queue_read.c). The format itself is described in queue_file.c and
 * doc/queue-format.md.
 */
#ifndef PETREL_QUEUE_QUEUE_FORMAT_H
#define PETREL_QUEUE_QUEUE_FORMAT_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "queue/queue.h"

#define QF_MAGIC "PETRELQ1"
#define QF_END_MAGIC "PETRELQE"
#define QF_VERSION 1
#define QF_VERSION_EDITED 2
#define QF_HEADER_SIZE 16
#define QF_RECORD_HEADER 5
#define QF_END_PAYLOAD 36
#define QF_END_SIZE (QF_RECORD_HEADER + QF_END_PAYLOAD)
#define QF2_END_PAYLOAD 44
#define QF2_END_SIZE (QF_RECORD_HEADER + QF2_END_PAYLOAD)
#define QF_SEGMENT_SIZE 16
#define QF_SEGMENTS_MAX (QUEUE_FIELD_MAX / QF_SEGMENT_SIZE)
#define QF_RCPT_FIXED 10          /* status, dsn, notify, orcpt length */
#define QF_NO_ORCPT 0xFFFFFFFFu
#define QF_WRITE_BUFFER (64 * 1024)
#define QF_READ_FIRST (64 * 1024) /* first pread covers small files whole */
#define QF_ID_ATTEMPTS 8
#define QF_ORIGIN_SIZE (1 + 8 + 8 + QUEUE_ID_LEN)

enum qf_record {
    REC_TIME = 'T', REC_FLAGS = 'F', REC_SENDER = 'S', REC_ENVID = 'E',
    REC_CLIENT_NAME = 'c', REC_CLIENT_ADDR = 'a', REC_CLIENT_PORT = 'p',
    REC_HELO = 'h', REC_PROTOCOL = 'P', REC_TLS = 't', REC_SASL_METHOD = 'm',
    REC_SASL_USER = 'u', REC_FILTER = 'f', REC_LOG_IDENT = 'i', REC_ORIGIN = 'D', REC_RCPT = 'R', REC_CONTENT = 'M', REC_END = 'X',
    REC_CONTENT_MAP = 'C',
};

#define KNOWN_FLAGS (QUEUE_F_8BITMIME | QUEUE_F_SMTPUTF8 | QUEUE_F_BINARYMIME | QUEUE_F_NO_ADDRESS_MAPPINGS | \
                     QUEUE_F_REDIRECTED)
#define KNOWN_NOTIFY (QUEUE_NOTIFY_SUCCESS | QUEUE_NOTIFY_FAILURE | QUEUE_NOTIFY_DELAY | QUEUE_NOTIFY_NEVER)

#define FNV_OFFSET 0xcbf29ce484222325ull
#define FNV_PRIME 0x100000001b3ull

/* ---- byte helpers ---- */

static inline void put_u32(unsigned char *p, uint32_t v)
{
    p[0] = (unsigned char)(v >> 24); p[1] = (unsigned char)(v >> 16);
    p[2] = (unsigned char)(v >> 8);  p[3] = (unsigned char)v;
}

static inline void put_u64(unsigned char *p, uint64_t v)
{
    put_u32(p, (uint32_t)(v >> 32));
    put_u32(p + 4, (uint32_t)v);
}

static inline uint32_t get_u32(const unsigned char *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static inline uint64_t get_u64(const unsigned char *p)
{
    return (uint64_t)get_u32(p) << 32 | get_u32(p + 4);
}

uint64_t qf_fnv1a(uint64_t h, const unsigned char *p, size_t n);
/* Continues hash h over the records of env from pos to size, with each
 * recipient's status and DSN bytes read as zero. */
uint64_t qf_hash_records(uint64_t h, const unsigned char *env, size_t pos, size_t size);
/* The envelope hash: the header, then the records. */
uint64_t qf_envelope_hash(const unsigned char *env, size_t size);
/* Reads exactly len bytes at off unless the file ends first: returns the
 * count read (the caller judges a short one), -1 on a system error. */
ssize_t qf_pread_full(int fd, void *buf, size_t len, off_t off);

#endif
