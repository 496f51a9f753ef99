/*
 * A client for clamd: one INSTREAM scan (or a PING or VERSION), non-blocking,
 * driven through the same small interface as the milter connection and the
 * spamd client: watch, timer, done (once, never from inside a call). The
 * clamav module maps it onto petrel_watch_fd() and petrel_timer_start(); the
 * test driver onto poll(2).
 *
 * The message is pulled from ops->read in chunks of at most chunk_size
 * bytes as the socket takes them: never held in memory. A message whose
 * known size is above max_size is not sent (CLAMD_OUTCOME_SKIPPED); clamd
 * has its own StreamMaxLength, past which it answers "INSTREAM size limit
 * exceeded. ERROR" and closes, possibly while we still write: the client
 * reads that answer rather than reporting a broken pipe.
 *
 * Addresses: "host:port", "[ipv6]:port", "/path" or "unix:/path" (as
 * clamav-milter's ClamdSocket tcp:host:port and unix:path, also accepted).
 */
#ifndef PETREL_CLAMD_CLIENT_H
#define PETREL_CLAMD_CLIENT_H

#include <stddef.h>

#include "clamd_proto.h"

#define CLAMD_IO_READ 1
#define CLAMD_IO_WRITE 2

typedef enum clamd_log_level { CLAMD_LOG_INFO, CLAMD_LOG_WARNING, CLAMD_LOG_ERROR } clamd_log_level;

typedef struct clamd_ops {
    void (*watch)(void *arg, int fd, int events);
    void (*timer)(void *arg, unsigned ms);
    void (*done)(void *arg);
    long (*read)(void *arg, void *buf, size_t cap);   /* 0 at the end, -1 on an error */
    void (*log)(void *arg, clamd_log_level level, const char *text);   /* "clamd ADDR: ..." */
} clamd_ops;

typedef struct clamd_config {
    const char *address;
    unsigned connect_timeout_ms;   /* 0: 10 s */
    unsigned timeout_ms;           /* the longest wait without progress; 0: 120 s */
    size_t max_size;               /* larger messages are not sent; 0: 25 MiB (clamd's StreamMaxLength) */
    size_t chunk_size;             /* 0: 64 KiB */
} clamd_config;

typedef struct clamd_settings clamd_settings;
clamd_settings *clamd_settings_create(const clamd_config *cfg, char *err, size_t errlen);
void clamd_settings_free(clamd_settings *s);

typedef enum clamd_status { CLAMD_DONE = 0, CLAMD_PENDING = 1 } clamd_status;

typedef enum clamd_outcome {
    CLAMD_OUTCOME_ANSWERED,   /* clamd answered: see reply.verdict */
    CLAMD_OUTCOME_SKIPPED,    /* above max_size: not sent */
    CLAMD_OUTCOME_FAILED,     /* no answer: down, timeout, protocol error */
} clamd_outcome;

typedef struct clamd_result {
    clamd_outcome outcome;
    clamd_reply reply;        /* ANSWERED */
    size_t sent;              /* message bytes sent */
    const char *error;        /* FAILED: why */
} clamd_result;

typedef struct clamd_client clamd_client;
clamd_client *clamd_client_create(const clamd_settings *s, const clamd_ops *ops, void *arg);
void clamd_client_free(clamd_client *c);

/* message_size: the size if known (0: unknown, the stream then stops being
 * sent past max_size). Ignored for PING and VERSION. */
clamd_status clamd_client_start(clamd_client *c, clamd_command cmd, size_t message_size);
void clamd_client_io(clamd_client *c, int events);
void clamd_client_timeout(clamd_client *c);
const clamd_result *clamd_client_result(const clamd_client *c);

#endif
