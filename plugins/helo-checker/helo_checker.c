/*
 * helo_checker: an asynchronous example plugin. It shows, in one small
 * restriction, the four ways a Petrel plugin waits without blocking the
 * server: a worker thread, a DNS lookup, a timer, and suspension.
 *
 *   smtpd_recipient_restrictions = ..., check_helo_checker [DELAY_MS], ...
 *
 * For each RCPT it decides about the client's HELO name:
 *   1. a worker thread (petrel_run_blocking) scans helo_checker_deny_file,
 *      one name per line, for the HELO name: listed is REJECT (a file read
 *      may block, so it is never done on the event loop);
 *   2. otherwise the HELO name's A records are looked up (petrel_dns_lookup):
 *      an address that is the client's is CONTINUE (DUNNO);
 *   3. a name with no address (NXDOMAIN or NODATA) waits DELAY_MS (the
 *      optional argument, default helo_checker_delay: a tarpit, with
 *      petrel_timer_start) and then answers DEFER_IF_PERMIT: mail that
 *      nothing else accepts is deferred, mail that something rejects is
 *      rejected (ABI 1.1 verdicts);
 *   4. a DNS failure is DUNNO: the plugin fails open, and logs it.
 * The restriction suspends at the start and resumes from whichever
 * callback decides. The session may end meanwhile: every callback first
 * asks petrel_pending_session() and only frees when it is NULL.
 *
 * Everything here comes from <petrel/plugin.h>; the tree builds it against
 * core/include alone, and t/integration/test_helo_checker.py runs it.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <petrel/plugin.h>

static const petrel_param helo_checker_params[] = {
    { PETREL_PARAM_INIT, .name = "helo_checker_deny_file", .type = PETREL_PARAM_STRING, .default_value = "",
      .help = "file of HELO names to reject, one per line (empty: none)" },
    { PETREL_PARAM_INIT, .name = "helo_checker_delay", .type = PETREL_PARAM_INT, .default_value = "1000",
      .min = 0, .max = 60000, .help = "milliseconds to wait before deferring a HELO name without address" },
    { .name = NULL },
};

/* One check in flight: malloc'd, since callbacks may come after the session. */
struct check {
    petrel_module *m;
    petrel_pending *p;
    char helo[256];
    char client[64];
    char deny_file[1024];
    unsigned delay_ms;
    int listed;                 /* set by the worker thread */
};

static void finish(struct check *c, petrel_verdict v, int code, const char *text)
{
    petrel_resume(c->p, v, code, NULL, text);   /* a stale handle is a logged no-op */
    free(c);
}

static void tarpit_over(void *arg)
{
    struct check *c = arg;
    finish(c, PETREL_DEFER_IF_PERMIT, 450, "HELO name has no address");
}

static void helo_resolved(const petrel_dns_answer *a, void *arg)
{
    struct check *c = arg;
    petrel_session *s = petrel_pending_session(c->p);
    if (s == NULL) {            /* the client went away meanwhile */
        free(c);
        return;
    }
    if (a->status == PETREL_DNS_OK) {
        for (size_t i = 0; i < a->count; i++)
            if (strcmp(a->values[i], c->client) == 0) {
                petrel_log(s, PETREL_LOG_INFO, "HELO %s resolves to the client", c->helo);
                finish(c, PETREL_CONTINUE, 0, NULL);
                return;
            }
        petrel_log(s, PETREL_LOG_INFO, "HELO %s resolves elsewhere", c->helo);
        finish(c, PETREL_CONTINUE, 0, NULL);
        return;
    }
    if (a->status == PETREL_DNS_NXDOMAIN || a->status == PETREL_DNS_NODATA) {
        petrel_log(s, PETREL_LOG_INFO, "HELO %s has no address: waiting %u ms", c->helo, c->delay_ms);
        if (petrel_timer_start(c->m, c->delay_ms, tarpit_over, c) == NULL)
            tarpit_over(c);
        return;
    }
    petrel_log(s, PETREL_LOG_WARNING, "HELO %s: DNS lookup failed: not judged", c->helo);
    finish(c, PETREL_CONTINUE, 0, NULL);
}

/* On a worker thread: no Petrel function here, only c's own fields. */
static void scan_deny_file(void *arg)
{
    struct check *c = arg;
    FILE *f = c->deny_file[0] ? fopen(c->deny_file, "re") : NULL;
    if (f == NULL)
        return;
    char line[512];
    while (!c->listed && fgets(line, sizeof(line), f)) {
        line[strcspn(line, "\r\n")] = '\0';
        c->listed = line[0] != '\0' && line[0] != '#' && strcasecmp(line, c->helo) == 0;
    }
    fclose(f);
}

/* Back on the loop. */
static void deny_file_scanned(void *arg)
{
    struct check *c = arg;
    if (petrel_pending_session(c->p) == NULL) {
        free(c);
        return;
    }
    if (c->listed) {
        finish(c, PETREL_REJECT, 550, "HELO name refused");
        return;
    }
    if (petrel_dns_lookup(c->m, PETREL_DNS_A, c->helo, helo_resolved, c) != 0)
        finish(c, PETREL_CONTINUE, 0, NULL);   /* no resolver: not judged */
}

static int helo_checker_compile(petrel_module *m, const char *const *args, void **state, petrel_pool *pool,
                                const char **error)
{
    long long delay = petrel_param_int(m, "helo_checker_delay");
    if (args[0]) {
        char *end = NULL;
        delay = strtoll(args[0], &end, 10);
        if (*end != '\0' || delay < 0 || delay > 60000) {
            *error = "DELAY_MS must be a number of milliseconds from 0 to 60000";
            return -1;
        }
    }
    unsigned *d = petrel_pool_alloc(pool, sizeof(*d));
    *d = (unsigned)delay;
    *state = d;
    return 0;
}

static petrel_verdict helo_checker_check(petrel_session *s, void *state)
{
    const char *helo = petrel_helo(s);
    const char *client = petrel_client_addr(s);
    if (helo == NULL || client == NULL || strlen(helo) >= sizeof(((struct check *)0)->helo))
        return PETREL_CONTINUE;
    petrel_module *m = petrel_session_module(s);
    struct check *c = calloc(1, sizeof(*c));
    if (c == NULL)
        return PETREL_CONTINUE;
    c->m = m;
    snprintf(c->helo, sizeof(c->helo), "%s", helo);
    snprintf(c->client, sizeof(c->client), "%s", client);
    snprintf(c->deny_file, sizeof(c->deny_file), "%s", petrel_param_string(m, "helo_checker_deny_file"));
    c->delay_ms = *(const unsigned *)state;
    c->p = petrel_suspend(s);
    if (c->p == NULL || petrel_run_blocking(m, scan_deny_file, deny_file_scanned, c) != 0) {
        petrel_pending *p = c->p;
        free(c);
        if (p)
            petrel_resume(p, PETREL_CONTINUE, 0, NULL, NULL);
        return p ? PETREL_PENDING : PETREL_CONTINUE;
    }
    return PETREL_PENDING;
}

static const petrel_restriction helo_checker_restrictions[] = {
    { PETREL_RESTRICTION_INIT, .name = "check_helo_checker", .nargs = 0, .max_args = 1,
      .compile = helo_checker_compile, .check = helo_checker_check },
    { .name = NULL },
};

const petrel_module_desc petrel_module_descriptor = {
    PETREL_MODULE_INIT,
    .name = "helo_checker",
    .version = "1.0",
    .description = "judges the HELO name with a file, the DNS and a tarpit (asynchronous example)",
    .params = helo_checker_params,
    .restrictions = helo_checker_restrictions,
};
