/*
 * A client for spamd (SpamAssassin's daemon): one request, non-blocking,
 * driven through the same small interface as the milter connection
 * (modules/milter/milter_conn.h): the client asks for its socket to be
 * watched (watch) and for one timer (timer); the owner calls
 * spamd_client_io() and spamd_client_timeout(); done() runs once, never from
 * inside a call. The spamassassin module maps these onto petrel_watch_fd()
 * and petrel_timer_start(); the test driver onto poll(2).
 *
 * The message comes from ops->read (pulled 64 KiB at a time as the socket
 * takes it, from the stored message): it is never held in memory, and its
 * size must be known up front (spamd wants Content-length). A message above
 * max_size is not sent (SPAMD_SKIPPED, as spamc skips messages over -s). A
 * response body (SYMBOLS, REPORT, PROCESS, HEADERS) goes to ops->body in
 * pieces as it arrives.
 *
 * Addresses: "host:port", "[ipv6]:port", "/path/to/socket" or
 * "unix:/path". spamd_settings_create resolves host names (getaddrinfo may
 * block): configuration time only.
 */
#ifndef PETREL_SPAMD_CLIENT_H
#define PETREL_SPAMD_CLIENT_H

#include <stddef.h>

#include "spamd_proto.h"

#define SPAMD_IO_READ 1
#define SPAMD_IO_WRITE 2

typedef enum spamd_log_level { SPAMD_LOG_INFO, SPAMD_LOG_WARNING, SPAMD_LOG_ERROR } spamd_log_level;

typedef struct spamd_ops {
    void (*watch)(void *arg, int fd, int events);   /* 0: stop watching */
    void (*timer)(void *arg, unsigned ms);           /* 0: disarm */
    void (*done)(void *arg);
    /* Up to cap bytes of the message; 0 at its end; -1 on an error. */
    long (*read)(void *arg, void *buf, size_t cap);
    /* Response body bytes; 0, or -1 to give up. May be NULL. */
    int (*body)(void *arg, const void *data, size_t len);
    void (*log)(void *arg, spamd_log_level level, const char *text);   /* "spamd ADDR: ..." */
} spamd_ops;

typedef struct spamd_config {
    const char *address;
    unsigned connect_timeout_ms;   /* 0: 10 s */
    unsigned timeout_ms;           /* the longest wait without progress; 0: 600 s (spamc -t) */
    size_t max_size;               /* larger messages are not scanned; 0: 500 KiB (spamc -s) */
    size_t max_response;           /* limit on a response body; 0: 2 * max_size + 1 MiB */
    const char *user;              /* the User: header (spamc -u), or NULL */
} spamd_config;

typedef struct spamd_settings spamd_settings;
spamd_settings *spamd_settings_create(const spamd_config *cfg, char *err, size_t errlen);
void spamd_settings_free(spamd_settings *s);

typedef enum spamd_status { SPAMD_DONE = 0, SPAMD_PENDING = 1 } spamd_status;

typedef enum spamd_outcome {
    SPAMD_OK,        /* spamd answered EX_OK: see is_spam, score, ... */
    SPAMD_SKIPPED,   /* larger than max_size: not sent */
    SPAMD_FAILED,    /* no answer (down, timeout, protocol error) or a spamd error code */
} spamd_outcome;

typedef struct spamd_result {
    spamd_outcome outcome;
    int code;               /* spamd's code: 0 EX_OK, 76 EX_PROTOCOL, ... (-1: no response) */
    const char *code_text;  /* "EX_OK", "Bad header line: ..." */
    int has_spam;           /* a Spam: header came */
    int is_spam;
    double score, threshold;
    const char *symbols;    /* SYMBOLS: "GTUBE,MISSING_DATE" */
    size_t body_bytes;      /* response body bytes handed to ops->body */
    const char *error;      /* FAILED: why, for the log */
} spamd_result;

typedef struct spamd_client spamd_client;
spamd_client *spamd_client_create(const spamd_settings *s, const spamd_ops *ops, void *arg);
void spamd_client_free(spamd_client *c);   /* closes; done() is not called */

/* One request: cmd for a message of message_size bytes (0 for PING). */
spamd_status spamd_client_start(spamd_client *c, spamd_command cmd, size_t message_size);
void spamd_client_io(spamd_client *c, int events);
void spamd_client_timeout(spamd_client *c);
const spamd_result *spamd_client_result(const spamd_client *c);

#endif
