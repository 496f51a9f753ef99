/*
 * SASL helpers of the plugin API that need no session or request: the
 * PLAIN message's split (RFC 4616 2). smtpd's built-in PLAIN and the sasl
 * module's table back-end both read AUTH PLAIN responses with it, so the
 * bytes any client sends meet one parser, fuzzed once
 * (t/fuzz/fuzz_sasl_plain.c). <petrel/plugin.h> includes this header (as
 * it includes <petrel/pool.h>); the SASL back-end types are in plugin.h.
 */
#ifndef PETREL_SASL_H
#define PETREL_SASL_H

#include <stddef.h>

#ifndef PETREL_API
#define PETREL_API __attribute__((visibility("default")))
#endif

#ifdef __cplusplus
extern "C" {
#endif

/* ABI 1.1, added after petrel_milters_stopped (a plugin that calls it is
 * refused by an older 1.1 petreld, at load time).
 *
 * petrel_sasl_plain_split() reads a decoded PLAIN message, [authzid] NUL
 * authcid NUL passwd, bounded by len alone (the bytes come from base64:
 * they are not a string). MALFORMED unless it holds exactly two NULs with
 * a login (authcid) between them; *out is then all zero. Otherwise the
 * fields point into the message, none holds a NUL and none is
 * NUL-terminated. An empty password is OK here: as in Postfix, Dovecot
 * and Cyrus it goes on to the back-end, which refuses it. OTHER_AUTHZID:
 * well formed, but the authorization identity is neither empty nor the
 * login, which a back-end that checks a password cannot grant (refuse it,
 * do not ignore it: the login would act as itself). smtpd answers
 * MALFORMED with 501 5.5.2 and OTHER_AUTHZID with 535 5.7.8. The struct
 * holds RFC 4616's three fields and will not grow. */
#define PETREL_HAVE_SASL_PLAIN_SPLIT 1
typedef struct petrel_sasl_plain {
    const char *authzid, *authcid, *password;
    size_t authzid_len, authcid_len, password_len;
} petrel_sasl_plain;

typedef enum petrel_sasl_plain_verdict {
    PETREL_SASL_PLAIN_OK,
    PETREL_SASL_PLAIN_MALFORMED,       /* not exactly two NULs, or an empty login */
    PETREL_SASL_PLAIN_OTHER_AUTHZID,   /* an authorization identity other than the login */
} petrel_sasl_plain_verdict;

PETREL_API petrel_sasl_plain_verdict petrel_sasl_plain_split(const unsigned char *data, size_t len,
                                                             petrel_sasl_plain *out);

#ifdef __cplusplus
}
#endif
#endif
