/*
 * The dkim module's message component: signs and/or verifies one message
 * with libopendkim while it is fed in chunks of any size (the header
 * section, then the body), never holding the body. Its results are what
 * the module asks the core to do at end of message: DKIM-Signature headers
 * to put on top, an Authentication-Results value (RFC 8601), and which
 * Authentication-Results headers to delete because they carry our
 * authserv-id (forged, RFC 8601 section 5).
 *
 * Signing is our own (dkim_sign.h, OpenSSL, keys decoded once);
 * verification is libopendkim's.
 *
 * Blocking: key lookups (verification) and the RSA work of dkmsg_end run
 * on the caller's thread, so the module calls dkmsg_end on a worker thread.
 */
#ifndef PETREL_MODULE_DKIM_MSG_H
#define PETREL_MODULE_DKIM_MSG_H

#include <stddef.h>

#include "dkim_tables.h"

/* Fetches the TXT record of qname ("sel._domainkey.example.com") into buf
 * (NUL-terminated, strings of one record joined). Returns 0, 1 when there
 * is no such record, -1 on a temporary failure. Called from dkmsg_end. */
typedef int dkmsg_key_fetch(void *ctx, const char *qname, char *buf, size_t size);

struct dkmsg_conf {
    const struct dk_tables *tables;    /* signing keys, or NULL */
    const char *authserv_id;           /* $myhostname */
    int multiple;                      /* every SigningTable match signs */
    int relaxed_header, relaxed_body;  /* 1 = relaxed (default), 0 = simple */
    dkmsg_key_fetch *fetch;
    void *fetch_ctx;
    struct dkmsg_lib *lib;             /* made by dkmsg_conf_init */
};

/* Sets up libopendkim for this configuration; 0 or -1 with err. */
int dkmsg_conf_init(struct dkmsg_conf *c, char *err, size_t errlen);
void dkmsg_conf_free(struct dkmsg_conf *c);

struct dkmsg;

enum dkmsg_mode { DKMSG_SIGN = 1, DKMSG_VERIFY = 2 };

/* id names the message in libopendkim's errors (a queue ID). */
struct dkmsg *dkmsg_new(const struct dkmsg_conf *c, int modes, const char *id);
/* The fetch callback's context for this message (the configuration's
 * fetch_ctx otherwise). */
void dkmsg_set_fetch_ctx(struct dkmsg *m, void *ctx);
/* Message bytes as stored (CRLF or LF line ends), in chunks of any size:
 * the exact bytes, since simple canonicalization (signing and verifying)
 * hashes them as they are ("Subject:x" is not "Subject: x").
 * Returns 0, or -1 when the component gave up (dkmsg_error says why;
 * the message must then go on unsigned/unverified). */
int dkmsg_feed(struct dkmsg *m, const char *data, size_t len);
/* Whether a key was chosen for this message (after the header section). */
int dkmsg_will_sign(const struct dkmsg *m);
/* End of message: signs and verifies. 0 or -1 (dkmsg_error). */
int dkmsg_end(struct dkmsg *m);
void dkmsg_free(struct dkmsg *m);
const char *dkmsg_error(const struct dkmsg *m);

/* Results after dkmsg_end. Values are header values without the name and
 * the colon, folded with CRLF + tab. */
size_t dkmsg_signature_count(const struct dkmsg *m);
const char *dkmsg_signature(const struct dkmsg *m, size_t i);        /* DKIM-Signature */
const char *dkmsg_auth_results(const struct dkmsg *m);               /* NULL when not verifying */
/* The From domain seen, and per verified signature its domain and result
 * (for DMARC: "pass", "fail", "neutral", "temperror", "permerror"). */
const char *dkmsg_from_domain(const struct dkmsg *m);
size_t dkmsg_result_count(const struct dkmsg *m);
void dkmsg_result(const struct dkmsg *m, size_t i, const char **domain, const char **selector, const char **result);

/* Whether the header section has ended (the empty line was fed). */
int dkmsg_headers_done(const struct dkmsg *m);
/* After the header section: the key records verification will ask the
 * fetch callback for ("sel._domainkey.example.com", each once, at most
 * max), so that a caller on an event loop can look them up before
 * dkmsg_end runs and answer the callback from memory. */
#define DKMSG_KEY_NAME_MAX 384
size_t dkmsg_key_names(const struct dkmsg *m, char (*names)[DKMSG_KEY_NAME_MAX], size_t max);
/* Forged Authentication-Results: the nth (1-based) occurrences to delete. */
size_t dkmsg_forged_count(const struct dkmsg *m);
size_t dkmsg_forged(const struct dkmsg *m, size_t i);

#endif
