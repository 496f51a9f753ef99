/*
 * SpamAssassin's SPAMC/SPAMD protocol, client side: the request head and a
 * bounded, incremental parser of spamd's response. Pure functions over
 * bytes (spamd_client.h is the connection on top), so the fuzz target runs
 * exactly this code.
 *
 * A request is "COMMAND SPAMC/1.5", headers (Content-length, User), an empty
 * line, then exactly Content-length bytes of message; the client then shuts
 * its side down. The response is "SPAMD/1.x CODE TEXT" (CODE 0 = EX_OK, else
 * a sysexits code: 76 "Bad header line", 69 "Service Unavailable", ...),
 * headers ("Spam: True ; 1000.0 / 5.0", "Content-length: N"), an empty
 * line, and for SYMBOLS, REPORT, PROCESS and HEADERS a body of
 * Content-length bytes (spamd sends Content-length from protocol 1.3 on).
 *
 * Limits: the status line and each header line at most SPAMD_LINE_MAX
 * bytes, at most SPAMD_HEADERS_MAX headers, the body at most the limit the
 * caller gives; anything beyond is an error with a text, never an overread.
 */
#ifndef PETREL_SPAMD_PROTO_H
#define PETREL_SPAMD_PROTO_H

#include <stddef.h>

#define SPAMD_LINE_MAX 1024
#define SPAMD_HEADERS_MAX 32
#define SPAMD_SYMBOLS_MAX 8192   /* the SYMBOLS list we keep (the body streams on) */

typedef enum spamd_command {
    SPAMD_CHECK,          /* is it spam, score / threshold */
    SPAMD_SYMBOLS,        /* ... and the names of the rules that hit */
    SPAMD_REPORT,         /* ... and the report text */
    SPAMD_REPORT_IFSPAM,  /* the report only for spam */
    SPAMD_PROCESS,        /* the whole message as SpamAssassin would rewrite it */
    SPAMD_HEADERS,        /* only its header section */
    SPAMD_PING,           /* is spamd there (no message) */
} spamd_command;

const char *spamd_command_name(spamd_command cmd);
/* spamd_command from its name ("SYMBOLS"), or -1. */
int spamd_command_parse(const char *name);

/* The request head for a message of `length` bytes. user: the User: header
 * (spamc -u), or NULL; it must be 1-128 printable characters. Returns the
 * head's length, or -1 with err. */
int spamd_request_head(spamd_command cmd, size_t length, const char *user, char *out, size_t outlen,
                       char *err, size_t errlen);

/* "True ; 1000.0 / 5.0" (also Yes/No for REPORT_IFSPAM). Returns 0 or -1. */
int spamd_parse_spam(const char *value, int *is_spam, double *score, double *threshold);

typedef enum spamd_parse_state { SPAMD_P_STATUS, SPAMD_P_HEADERS, SPAMD_P_BODY, SPAMD_P_DONE,
                                 SPAMD_P_ERROR } spamd_parse_state;

typedef struct spamd_response {
    spamd_parse_state state;
    char line[SPAMD_LINE_MAX + 1];
    size_t line_len;
    int headers;
    /* what was read */
    char version[16];        /* "1.1" */
    int code;                /* 0 = EX_OK */
    char code_text[256];     /* "EX_OK", "Bad header line: ..." (made printable) */
    int has_spam;
    int is_spam;
    double score, threshold;
    int has_length;
    size_t content_length;
    size_t body_bytes;
    size_t body_max;         /* limit on the body; 0: none */
    char symbols[SPAMD_SYMBOLS_MAX + 1];   /* SYMBOLS: the list, kept */
    size_t symbols_len;
    int keep_symbols;
    char error[200];
} spamd_response;

/* keep_symbols: keep the body as the SYMBOLS list (and still hand it on). */
void spamd_response_init(spamd_response *r, size_t body_max, int keep_symbols);

/* Feeds bytes of the response. Body bytes are handed to body(arg, data,
 * len) as they come (body may be NULL; a -1 from it stops with an error).
 * Returns 0 while more is expected, 1 when the response is complete
 * (Content-length reached, or no body announced), -1 on an error
 * (r->error). */
int spamd_response_feed(spamd_response *r, const unsigned char *data, size_t len,
                        int (*body)(void *arg, const void *data, size_t len), void *arg);
/* The connection closed: 1 when that completes the response (a body
 * without Content-length, as protocol 1.0 sends), -1 when it was cut. */
int spamd_response_eof(spamd_response *r);

#endif
