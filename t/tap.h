/*
 * A minimal TAP producer for C unit tests, read by automake's TAP driver.
 * ok() records one assertion with its expression and location; a test
 * program ends with done_testing(), which prints the plan and returns the
 * exit status.
 */
#ifndef PETREL_T_TAP_H
#define PETREL_T_TAP_H

#include <stdio.h>
#include <stdarg.h>
#include <string.h>

static int tap_count;
static int tap_failed;

#define ok(cond, ...) tap_ok(!!(cond), #cond, __FILE__, __LINE__, __VA_ARGS__)
#define is_str(got, want, ...) tap_is_str((got), (want), __FILE__, __LINE__, __VA_ARGS__)
#define is_int(got, want, ...) tap_is_int((long long)(got), (long long)(want), __FILE__, __LINE__, __VA_ARGS__)

__attribute__((format(printf, 5, 6), unused))
static int tap_ok(int pass, const char *expr, const char *file, int line, const char *fmt, ...)
{
    va_list ap;
    tap_count++;
    printf("%s %d - ", pass ? "ok" : "not ok", tap_count);
    va_start(ap, fmt);
    vprintf(fmt, ap);
    va_end(ap);
    printf("\n");
    if (!pass) {
        tap_failed++;
        printf("#   failed: %s at %s:%d\n", expr, file, line);
    }
    fflush(stdout);
    return pass;
}

__attribute__((format(printf, 5, 6), unused))
static int tap_is_str(const char *got, const char *want, const char *file, int line, const char *fmt, ...)
{
    va_list ap;
    int pass = (got == NULL && want == NULL) || (got && want && strcmp(got, want) == 0);
    tap_count++;
    printf("%s %d - ", pass ? "ok" : "not ok", tap_count);
    va_start(ap, fmt);
    vprintf(fmt, ap);
    va_end(ap);
    printf("\n");
    if (!pass) {
        tap_failed++;
        printf("#   at %s:%d\n#   got:  %s%s%s\n#   want: %s%s%s\n", file, line,
               got ? "\"" : "", got ? got : "NULL", got ? "\"" : "",
               want ? "\"" : "", want ? want : "NULL", want ? "\"" : "");
    }
    fflush(stdout);
    return pass;
}

__attribute__((format(printf, 5, 6), unused))
static int tap_is_int(long long got, long long want, const char *file, int line, const char *fmt, ...)
{
    va_list ap;
    int pass = got == want;
    tap_count++;
    printf("%s %d - ", pass ? "ok" : "not ok", tap_count);
    va_start(ap, fmt);
    vprintf(fmt, ap);
    va_end(ap);
    printf("\n");
    if (!pass) {
        tap_failed++;
        printf("#   at %s:%d\n#   got:  %lld\n#   want: %lld\n", file, line, got, want);
    }
    fflush(stdout);
    return pass;
}

__attribute__((unused))
static int done_testing(void)
{
    printf("1..%d\n", tap_count);
    return tap_failed ? 1 : 0;
}

#endif
