/*
 * postscreen's log lines: Postfix writes them as postfix/postscreen (and
 * postfix/dnsblog), and log tools and fail2ban filters look for those
 * names, so they are written under those role names, then the worker's
 * own (smtpd) is restored.
 */
#include "config.h"

#include <stdarg.h>
#include <stdio.h>

#include "lib/log.h"
#include "smtpd/psc.h"

__attribute__((format(printf, 3, 0)))
static void psc_vlog(const char *role, enum log_level level, const char *fmt, va_list ap)
{
    char saved[32];
    snprintf(saved, sizeof(saved), "%s", log_role());
    log_set_role(role);
    msg_vlog(level, fmt, ap);
    log_set_role(saved);
}

void psc_log(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    psc_vlog("postscreen", LOG_LEVEL_INFO, fmt, ap);
    va_end(ap);
}

void psc_log_as(const char *role, int warning, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    psc_vlog(role, warning ? LOG_LEVEL_WARN : LOG_LEVEL_INFO, fmt, ap);
    va_end(ap);
}
