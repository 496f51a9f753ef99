/* notify_classes (see notify.h). */
#include "config.h"

#include <stddef.h>
#include <strings.h>

#include "mail/notify.h"

int mail_notify_classes(const char *const *words, unsigned *mask, const char **bad)
{
    static const struct { const char *name; unsigned bit; } classes[] = {
        { "bounce", MAIL_NOTIFY_BOUNCE }, { "2bounce", MAIL_NOTIFY_2BOUNCE }, { "delay", MAIL_NOTIFY_DELAY },
        { "policy", MAIL_NOTIFY_POLICY }, { "protocol", MAIL_NOTIFY_PROTOCOL }, { "resource", MAIL_NOTIFY_RESOURCE },
        { "software", MAIL_NOTIFY_SOFTWARE }, { "data", MAIL_NOTIFY_DATA },
    };
    *mask = 0;
    for (; words && *words; words++) {
        size_t i;
        for (i = 0; i < sizeof(classes) / sizeof(classes[0]); i++)
            if (strcasecmp(*words, classes[i].name) == 0)
                break;
        if (i == sizeof(classes) / sizeof(classes[0])) {
            *bad = *words;
            return -1;
        }
        *mask |= classes[i].bit;
    }
    return 0;
}
