/*
 * The PLAIN message's split for smtpd_sasl_type = table: see plain.h.
 * Bounded by len alone: the message is bytes from base64, not a string.
 */
#include <string.h>

#include "plain.h"

enum plain_verdict plain_split(const unsigned char *data, size_t len, struct plain_fields *out)
{
    memset(out, 0, sizeof(*out));
    const char *p = (const char *)data, *end = p + len;
    const char *nul1 = len ? memchr(p, '\0', len) : NULL;
    if (nul1 == NULL)
        return PLAIN_MALFORMED;
    const char *nul2 = memchr(nul1 + 1, '\0', (size_t)(end - nul1 - 1));
    if (nul2 == NULL || memchr(nul2 + 1, '\0', (size_t)(end - nul2 - 1)) != NULL || nul2 == nul1 + 1)
        return PLAIN_MALFORMED;
    out->authzid = p;
    out->authzid_len = (size_t)(nul1 - p);
    out->login = nul1 + 1;
    out->login_len = (size_t)(nul2 - nul1 - 1);
    out->password = nul2 + 1;
    out->password_len = (size_t)(end - nul2 - 1);
    if (out->authzid_len &&
        (out->authzid_len != out->login_len || memcmp(out->authzid, out->login, out->login_len) != 0))
        return PLAIN_OTHER_AUTHZID;
    return PLAIN_OK;
}
