/*
 * Postfix's SASL security options (see sasl_options.h).
 */
#include "config.h"

#include <string.h>
#include <strings.h>

#include "mail/sasl_options.h"

static const struct {
    const char *name;
    unsigned bit;
} names[] = {
    { "noplaintext", SASL_OPT_NOPLAINTEXT }, { "noactive", SASL_OPT_NOACTIVE },
    { "nodictionary", SASL_OPT_NODICTIONARY }, { "noanonymous", SASL_OPT_NOANONYMOUS },
    { "forward_secrecy", SASL_OPT_FORWARD_SECRECY }, { "mutual_auth", SASL_OPT_MUTUAL_AUTH },
    { NULL, 0 },
};

int sasl_options_parse(const char *value, unsigned *out, const char **bad, petrel_pool *pool)
{
    *out = 0;
    const char *p = value ? value : "";
    while (*p) {
        p += strspn(p, ", \t\r\n");
        size_t n = strcspn(p, ", \t\r\n");
        if (n == 0)
            break;
        int found = 0;
        for (int i = 0; names[i].name; i++) {
            if (strlen(names[i].name) == n && strncasecmp(p, names[i].name, n) == 0) {
                *out |= names[i].bit;
                found = 1;
            }
        }
        if (!found) {
            *bad = petrel_pool_strndup(pool, p, n);
            return -1;
        }
        p += n;
    }
    return 0;
}
