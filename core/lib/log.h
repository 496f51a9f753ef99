/*
 * Postfix-shaped logging: one line per event, `NAME/ROLE[PID]: [QUEUEID: ]text`.
 * The sink is stderr (default), maillog_file (with the syslog-style prefix
 * postlogd writes, so pflogsumm reads it) or syslog(3). Logging state belongs
 * to the process: each role sets its role name after fork.
 *
 * Severity prefixes are Postfix's: "warning: ", "error: ", "fatal: ",
 * "panic: "; informational lines have none.
 */
#ifndef PETREL_LIB_LOG_H
#define PETREL_LIB_LOG_H

#include <stdarg.h>
#include <stddef.h>

#define PETREL_PRINTF(f, a) __attribute__((format(printf, f, a)))

void log_init(const char *syslog_name, const char *role);
void log_set_role(const char *role);
const char *log_role(void);
/* Sends lines to maillog_file (appending); returns -1 with errno on failure. */
int log_use_file(const char *path);
/* Sends lines to syslog with the facility named as in syslog_facility ("mail"). */
int log_use_syslog(const char *facility_name);
void log_use_stderr(void);
/* Reopens maillog_file (after rotation); no-op for other sinks. */
void log_reopen(void);
void log_set_verbose(int level);
/* For a fatal-signal handler: the descriptor lines go to (stderr for syslog)
 * and the "name/role[pid]: " prefix, formatted ahead of time because a
 * signal handler may not format. */
int log_crash_fd(void);
void log_crash_prefix(char *out, size_t size);
int log_verbose(void);

void msg_info(const char *fmt, ...) PETREL_PRINTF(1, 2);
void msg_warn(const char *fmt, ...) PETREL_PRINTF(1, 2);
void msg_error(const char *fmt, ...) PETREL_PRINTF(1, 2);
void msg_debug(const char *fmt, ...) PETREL_PRINTF(1, 2);
__attribute__((noreturn)) void msg_fatal(const char *fmt, ...) PETREL_PRINTF(1, 2);
__attribute__((noreturn)) void msg_panic(const char *fmt, ...) PETREL_PRINTF(1, 2);

enum log_level { LOG_LEVEL_DEBUG, LOG_LEVEL_INFO, LOG_LEVEL_WARN, LOG_LEVEL_ERROR,
                 LOG_LEVEL_FATAL, LOG_LEVEL_PANIC };
void msg_vlog(enum log_level level, const char *fmt, va_list ap) PETREL_PRINTF(2, 0);

#endif
