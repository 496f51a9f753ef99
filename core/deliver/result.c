/* Filling delivery results (see deliver.h). Reply text from the network is
 * kept printable: it ends up in logs and in bounce messages. */
#include "config.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "deliver/deliver.h"

void dlv_result_set(struct dlv_result *r, enum dlv_status status, const char *dsn, const char *relay,
                    const char *fmt, ...)
{
    memset(r, 0, sizeof(*r));
    r->status = status;
    snprintf(r->dsn, sizeof(r->dsn), "%s", dsn ? dsn : (status == DLV_SENT ? "2.0.0" : status == DLV_DEFERRED
                                                         ? "4.0.0" : "5.0.0"));
    snprintf(r->relay, sizeof(r->relay), "%s", relay ? relay : "none");
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(r->text, sizeof(r->text), fmt, ap);
    va_end(ap);
    for (char *p = r->text; *p; p++)
        if ((unsigned char)*p < 0x20 || *p == 0x7f)
            *p = ' ';
}

double dlv_monotonic(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}
