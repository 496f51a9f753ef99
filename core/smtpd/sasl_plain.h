/*
 * The PLAIN mechanism's message (RFC 4616): authzid NUL authcid NUL
 * passwd, split without a session so that a fuzz target
 * (t/fuzz/fuzz_sasl_plain.c) reaches it. smtpd's built-in PLAIN for the
 * 1.0 back-ends (auth.c) uses it.
 */
#ifndef PETREL_SMTPD_SASL_PLAIN_H
#define PETREL_SMTPD_SASL_PLAIN_H

#include <stddef.h>

struct sasl_plain {
    const char *authzid, *authcid, *password;   /* point into the message; not NUL-terminated */
    size_t authzid_len, authcid_len, password_len;
};

/* What the message is. */
enum sasl_plain_verdict {
    SASL_PLAIN_OK,             /* three fields, a login */
    SASL_PLAIN_MALFORMED,      /* not exactly two NULs, or an empty login: 501 5.5.2 */
    SASL_PLAIN_OTHER_AUTHZID,  /* an authorization identity other than the login, which
                                  a back-end that checks a password cannot grant */
};

enum sasl_plain_verdict sasl_plain_split(const unsigned char *data, size_t len, struct sasl_plain *out);

#endif
