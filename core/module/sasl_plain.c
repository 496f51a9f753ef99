/*
 * The PLAIN message's split (petrel_sasl_plain_split, <petrel/sasl.h>):
 * one implementation for smtpd's built-in PLAIN (smtpd/auth.c) and for
 * modules (the sasl module's table back-end), fuzzed by
 * t/fuzz/fuzz_sasl_plain.c. RFC 4616 2: the message is [authzid] NUL
 * authcid NUL passwd, where none of the three holds a NUL and authcid and
 * passwd are not empty... except that Postfix, Dovecot and Cyrus take an
 * empty password to the back-end, which refuses it; so do we. An empty
 * authcid is refused here: there is no one to check.
 */
#include "config.h"

#include <string.h>

#include <petrel/sasl.h>

petrel_sasl_plain_verdict petrel_sasl_plain_split(const unsigned char *data, size_t len, petrel_sasl_plain *out)
{
    memset(out, 0, sizeof(*out));
    const char *p = (const char *)data, *end = p + len;
    const char *nul1 = len ? memchr(p, '\0', len) : NULL;
    if (nul1 == NULL)
        return PETREL_SASL_PLAIN_MALFORMED;
    const char *nul2 = memchr(nul1 + 1, '\0', (size_t)(end - nul1 - 1));
    if (nul2 == NULL || memchr(nul2 + 1, '\0', (size_t)(end - nul2 - 1)) != NULL || nul2 == nul1 + 1)
        return PETREL_SASL_PLAIN_MALFORMED;
    out->authzid = p;
    out->authzid_len = (size_t)(nul1 - p);
    out->authcid = nul1 + 1;
    out->authcid_len = (size_t)(nul2 - nul1 - 1);
    out->password = nul2 + 1;
    out->password_len = (size_t)(end - nul2 - 1);
    if (out->authzid_len &&
        (out->authzid_len != out->authcid_len || memcmp(out->authzid, out->authcid, out->authcid_len) != 0))
        return PETREL_SASL_PLAIN_OTHER_AUTHZID;
    return PETREL_SASL_PLAIN_OK;
}
