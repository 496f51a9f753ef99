/*
 * keepmod: a module that does what a careless or merely asynchronous module
 * does with handles, so the tests (and the sanitizer build) can show that
 * none of it reaches freed memory. Restriction "check_keepmod WORD":
 *
 *   keep         suspends and keeps the session and pending handles past the
 *                end of the session; a timer, a DNS lookup (keepmod_dns_name,
 *                answered late by the test's slow DNS server) and a blocking
 *                call on a worker thread each, when they fire, call the API
 *                with those handles and log what each call returned:
 *                "keepmod: CALLBACK after the session: ..."
 *   owner        sets the session note keepmod.owner (a later session that
 *                may reuse the first one's slot) and answers OK
 *   earlyreject  suspends, resumes with REJECT inside the check, returns CONTINUE
 *   earlypending the same, but returns PENDING as documented
 *   twice        suspends; a timer resumes with OK, then again with REJECT
 *   cancelled    suspends and returns REJECT without resuming; a timer
 *                resumes the cancelled handle later
 *   badname      suspends and looks up a name c-ares refuses at once; the DNS
 *                callback logs whether it ran before petrel_dns_lookup returned
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <petrel/plugin.h>

static const petrel_param params[] = {
    { PETREL_PARAM_INIT, .name = "keepmod_delay", .type = PETREL_PARAM_INT, .default_value = "1200",
      .help = "milliseconds before the late callbacks fire" },
    { PETREL_PARAM_INIT, .name = "keepmod_dns_name", .type = PETREL_PARAM_STRING, .default_value = "slow.test",
      .help = "the name looked up late" },
    { .name = NULL },
};

struct kept {
    petrel_module *m;
    petrel_session *s;
    petrel_pending *p;
    int remaining;              /* callbacks still to come */
};

static const char *ptr(const void *p)
{
    return p ? "set" : "NULL";
}

/* Every kind of API call with handles whose session has ended. */
static void after_the_session(struct kept *k, const char *who)
{
    petrel_session *again = petrel_pending_session(k->p);
    const char *addr = petrel_client_addr(k->s);
    void **slot = petrel_session_slot(k->s);
    void **tx_slot = petrel_tx_slot(k->s);
    petrel_pool *pool = petrel_session_pool(k->s);
    const char *owner = petrel_note_get(k->s, "keepmod.owner");
    int note = petrel_note_set(k->s, PETREL_NOTE_SESSION, "keepmod.late", "x");
    int header = petrel_header_add(k->s, "X-Late", "too late");
    petrel_pending *suspended = petrel_suspend(k->s);
    size_t rcpts = petrel_recipient_count(k->s);
    const char *helo = petrel_helo(k->s);
    petrel_set_reply(k->s, 550, "5.7.1", "too late");
    petrel_log(k->s, PETREL_LOG_INFO, "%s after the session: pending_session=%s client_addr=%s slot=%s tx_slot=%s "
               "pool=%s note_get=%s note_set=%d header_add=%d suspend=%s rcpts=%zu helo=%s module=%s", who,
               ptr(again), ptr(addr), ptr(slot), ptr(tx_slot), ptr(pool), owner ? owner : "NULL", note, header,
               ptr(suspended), rcpts, ptr(helo), petrel_module_name(petrel_session_module(k->s)));
    petrel_resume(k->p, PETREL_REJECT, 550, "5.7.1", "too late");
    if (--k->remaining == 0)
        free(k);
}

static void timer_fired(void *arg)
{
    after_the_session(arg, "timer");
}

static void dns_answered(const petrel_dns_answer *a, void *arg)
{
    after_the_session(arg, "dns callback");
}

static void sleep_on_thread(void *arg)
{
    struct timespec ts = { 1, 300 * 1000 * 1000 };
    nanosleep(&ts, NULL);
}

static void blocking_done(void *arg)
{
    after_the_session(arg, "blocking completion");
}

static petrel_verdict keep(petrel_session *s)
{
    petrel_module *m = petrel_session_module(s);
    struct kept *k = calloc(1, sizeof(*k));
    if (k == NULL)
        return PETREL_TEMPFAIL;
    k->m = m;
    k->s = s;
    k->p = petrel_suspend(s);
    petrel_log(s, PETREL_LOG_INFO, "session handle %p (keep)", (void *)s);
    k->remaining = 3;
    petrel_timer_start(m, (unsigned)petrel_param_int(m, "keepmod_delay"), timer_fired, k);
    if (petrel_dns_lookup(m, PETREL_DNS_A, petrel_param_string(m, "keepmod_dns_name"), dns_answered, k) != 0)
        k->remaining--;
    if (petrel_run_blocking(m, sleep_on_thread, blocking_done, k) != 0)
        k->remaining--;
    return PETREL_PENDING;
}

struct later {
    petrel_pending *p;
    int twice;
};

static void resume_later(void *arg)
{
    struct later *l = arg;
    petrel_resume(l->p, PETREL_ACCEPT, 0, NULL, NULL);
    if (l->twice)
        petrel_resume(l->p, PETREL_REJECT, 554, "5.7.1", "the second resume must not count");
    free(l);
}

static int resolving;   /* petrel_dns_lookup has not returned yet (one lookup at a time: a test) */

static void badname_answered(const petrel_dns_answer *a, void *arg)
{
    petrel_pending *p = arg;
    petrel_session *s = petrel_pending_session(p);
    petrel_log(s, PETREL_LOG_INFO, "dns callback for a bad name: status %d, ran before petrel_dns_lookup returned: "
               "%s", (int)a->status, resolving ? "yes" : "no");
    petrel_resume(p, PETREL_ACCEPT, 0, NULL, NULL);
}

static int compile(petrel_module *m, const char *const *args, void **state, petrel_pool *pool, const char **error)
{
    static const char *const words[] = { "keep", "owner", "earlyreject", "earlypending", "twice", "cancelled",
                                         "badname", NULL };
    for (int i = 0; words[i]; i++) {
        if (strcmp(args[0], words[i]) == 0) {
            *state = (void *)words[i];
            return 0;
        }
    }
    *error = "unknown word";
    return -1;
}

static petrel_verdict check(petrel_session *s, void *state)
{
    const char *word = state;
    petrel_module *m = petrel_session_module(s);
    if (strcmp(word, "keep") == 0)
        return keep(s);
    if (strcmp(word, "owner") == 0) {
        petrel_note_set(s, PETREL_NOTE_SESSION, "keepmod.owner", "a later session");
        petrel_log(s, PETREL_LOG_INFO, "session handle %p (owner)", (void *)s);
        return PETREL_ACCEPT;
    }
    if (strcmp(word, "earlyreject") == 0 || strcmp(word, "earlypending") == 0) {
        petrel_pending *p = petrel_suspend(s);
        petrel_resume(p, PETREL_REJECT, 554, "5.7.1", "keepmod resumed early");
        return strcmp(word, "earlyreject") == 0 ? PETREL_CONTINUE : PETREL_PENDING;
    }
    if (strcmp(word, "twice") == 0 || strcmp(word, "cancelled") == 0) {
        struct later *l = calloc(1, sizeof(*l));
        if (l == NULL)
            return PETREL_TEMPFAIL;
        l->p = petrel_suspend(s);
        l->twice = strcmp(word, "twice") == 0;
        petrel_timer_start(m, 200, resume_later, l);
        if (l->twice)
            return PETREL_PENDING;
        petrel_set_reply(s, 554, "5.7.1", "keepmod answers without resuming");
        return PETREL_REJECT;
    }
    if (strcmp(word, "badname") == 0) {
        petrel_pending *p = petrel_suspend(s);
        resolving = 1;
        if (petrel_dns_lookup(m, PETREL_DNS_A, "bad..name", badname_answered, p) != 0)
            petrel_resume(p, PETREL_TEMPFAIL, 451, "4.3.0", "no resolver");
        resolving = 0;
        return PETREL_PENDING;
    }
    return PETREL_CONTINUE;
}

static const petrel_restriction restrictions[] = {
    { PETREL_RESTRICTION_INIT, .name = "check_keepmod", .nargs = 1, .compile = compile, .check = check },
    { .name = NULL },
};

const petrel_module_desc petrel_module_descriptor = {
    PETREL_MODULE_INIT,
    .name = "keepmod",
    .version = "1.0",
    .description = "keeps handles past the end of their session (tests only)",
    .params = params,
    .restrictions = restrictions,
};
