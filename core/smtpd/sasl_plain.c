/*
 * The PLAIN message's split: see sasl_plain.h. RFC 4616 2: the message
 * is [authzid] NUL authcid NUL passwd, where none of the three holds a
 * NUL and authcid and passwd are not empty... except that Postfix, Dovecot
 * and Cyrus take an empty password to the back-end, which refuses it; so
 * do we. An empty authcid is refused here: there is no one to check.
 */
#include "config.h"

#include <string.h>

#include "smtpd/sasl_plain.h"

enum sasl_plain_verdict sasl_plain_split(const unsigned char *data, size_t len, struct sasl_plain *out)
{
    memset(out, 0, sizeof(*out));
    const char *p = (const char *)data, *end = p + len;
    const char *nul1 = len ? memchr(p, '\0', len) : NULL;
    if (nul1 == NULL)
        return SASL_PLAIN_MALFORMED;
    const char *nul2 = memchr(nul1 + 1, '\0', (size_t)(end - nul1 - 1));
    if (nul2 == NULL || memchr(nul2 + 1, '\0', (size_t)(end - nul2 - 1)) != NULL)
        return SASL_PLAIN_MALFORMED;
    out->authzid = p;
    out->authzid_len = (size_t)(nul1 - p);
    out->authcid = nul1 + 1;
    out->authcid_len = (size_t)(nul2 - nul1 - 1);
    out->password = nul2 + 1;
    out->password_len = (size_t)(end - nul2 - 1);
    if (out->authcid_len == 0)
        return SASL_PLAIN_MALFORMED;
    if (out->authzid_len &&
        (out->authzid_len != out->authcid_len || memcmp(out->authzid, out->authcid, out->authcid_len) != 0))
        return SASL_PLAIN_OTHER_AUTHZID;
    return SASL_PLAIN_OK;
}
