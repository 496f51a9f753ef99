/*
 * testmod: a real module for the integration tests of the module system.
 * It is driven by what the client sends, so one loaded module can exercise
 * every hook, verdict, suspension, edit and failure mode:
 *
 *   EHLO reject.helo.test           -> helo REJECT 550 5.7.1
 *   MAIL FROM:<ACTION-...@...>      -> mail hook, ACTION one of
 *        reject tempfail bad (250 on a reject: invalid) discard hold
 *        slow (PENDING, resumed after testmod_delay with CONTINUE)
 *        slowreject (PENDING, resumed with REJECT 550 5.7.1)
 *        hang (PENDING, never resumed: the hook timeout applies)
 *        late (PENDING, resumed after 1.5 s: the client is gone by then)
 *        crash (SIGSEGV inside the hook)
 *   RCPT TO:<ACTION-...@...>        -> rcpt hook, same actions
 *   a recipient "datareject@..."     -> data hook REJECT
 *   header X-Testmod-Reject: yes     -> REJECT at end of message (from the header hook)
 *   body line TESTMOD-BODY-REJECT    -> REJECT at end of message (from the body hook)
 *   header X-Testmod-Add: Name: v   -> petrel_header_add
 *   header X-Testmod-Insert: Name: v -> petrel_header_insert at 0
 *   header X-Testmod-Change: Name   -> petrel_header_change(Name, 1, " changed by testmod")
 *   header X-Testmod-Delete: Name   -> petrel_header_change(Name, 1, NULL)
 *   header X-Testmod-Sender: addr   -> petrel_sender_change
 *   header X-Testmod-Add-Rcpt: addr -> petrel_recipient_add
 *   header X-Testmod-Del-Rcpt: addr -> petrel_recipient_delete
 *   header X-Testmod-Body: text     -> petrel_body_replace("text\r\n")
 *   header X-Testmod-Quarantine: r  -> petrel_quarantine
 *   header X-Testmod-Crash: yes     -> SIGSEGV at end of message (the queue file
 *                                      exists, its content not yet written)
 *   restriction "check_testmod WORD": ok dunno reject tempfail slowok hang
 *
 * With testmod_log_hooks = yes every hook logs "testmod: hook NAME ...".
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include <petrel/plugin.h>

struct tx_state {
    const char *edits[32][2];     /* header name, value */
    int nedits;
    int header_reject;
    int body_reject;
    int crash;
    char tail[32];                /* body bytes carried across chunks */
};

struct delayed {
    petrel_pending *pending;
    petrel_verdict verdict;
};

static const petrel_param params[] = {
    { PETREL_PARAM_INIT, .name = "testmod_log_hooks", .type = PETREL_PARAM_BOOL, .default_value = "no",
      .help = "log every hook call" },
    { PETREL_PARAM_INIT, .name = "testmod_delay", .type = PETREL_PARAM_TIME, .default_value = "1s",
      .help = "how long the slow actions wait" },
    { PETREL_PARAM_INIT, .name = "testmod_connect_reject", .type = PETREL_PARAM_BOOL, .default_value = "no",
      .help = "reject every connection" },
    { .name = NULL },
};

static void trace(petrel_session *s, const char *hook, const char *arg)
{
    if (petrel_param_bool(petrel_session_module(s), "testmod_log_hooks"))
        petrel_log(s, PETREL_LOG_INFO, "hook %s %s", hook, arg ? arg : "");
}

static void resume_later(void *arg)
{
    struct delayed *d = arg;
    if (d->verdict == PETREL_REJECT)
        petrel_resume(d->pending, PETREL_REJECT, 550, "5.7.1", "testmod says no, later");
    else
        petrel_resume(d->pending, d->verdict, 0, NULL, NULL);
    free(d);
}

static petrel_verdict suspend_for(petrel_session *s, unsigned ms, petrel_verdict verdict)
{
    struct delayed *d = malloc(sizeof(*d));
    if (d == NULL)
        return PETREL_TEMPFAIL;
    d->pending = petrel_suspend(s);
    d->verdict = verdict;
    petrel_timer_start(petrel_session_module(s), ms, resume_later, d);
    return PETREL_PENDING;
}

/* The action is the address's local part up to the first '-'. */
static petrel_verdict act(petrel_session *s, const char *address)
{
    petrel_module *m = petrel_session_module(s);
    unsigned delay = (unsigned)petrel_param_int(m, "testmod_delay") * 1000;
    size_t n = strcspn(address, "-@");
    if (address[n] != '-')
        return PETREL_CONTINUE;
    if (strncmp(address, "reject", n) == 0 && n == 6) {
        petrel_set_reply(s, 550, "5.7.1", "testmod rejects this address");
        return PETREL_REJECT;
    }
    if (strncmp(address, "tempfail", n) == 0 && n == 8) {
        petrel_set_reply(s, 451, "4.7.1", "testmod tempfails this address");
        return PETREL_TEMPFAIL;
    }
    if (strncmp(address, "bad", n) == 0 && n == 3) {
        petrel_set_reply(s, 250, "2.0.0", "a reject must not look like success");
        return PETREL_REJECT;
    }
    if (strncmp(address, "mlreply", n) == 0 && n == 7) {
        static const char *const lines[] = { "testmod rejects this address", "for three reasons", "all good" };
        petrel_set_reply_lines(s, 550, "5.7.1", lines, 3);
        return PETREL_REJECT;
    }
    if (strncmp(address, "mlbad", n) == 0 && n == 5) {
        /* a line with a line end inside: refused by the core */
        static const char *const lines[] = { "first", "second\r\n250 2.0.0 injected" };
        petrel_set_reply_lines(s, 550, "5.7.1", lines, 2);
        return PETREL_REJECT;
    }
    if (strncmp(address, "mlmany", n) == 0 && n == 6) {
        const char *lines[PETREL_REPLY_LINES_MAX + 1];
        for (size_t i = 0; i <= PETREL_REPLY_LINES_MAX; i++)
            lines[i] = "one line too many";
        petrel_set_reply_lines(s, 550, "5.7.1", lines, PETREL_REPLY_LINES_MAX + 1);
        return PETREL_REJECT;
    }
    if (strncmp(address, "discard", n) == 0 && n == 7)
        return PETREL_DISCARD;
    if (strncmp(address, "hold", n) == 0 && n == 4)
        return PETREL_HOLD;
    if (strncmp(address, "slow", n) == 0 && n == 4)
        return suspend_for(s, delay, PETREL_CONTINUE);
    if (strncmp(address, "slowreject", n) == 0 && n == 10)
        return suspend_for(s, delay, PETREL_REJECT);
    if (strncmp(address, "late", n) == 0 && n == 4)
        return suspend_for(s, 1500, PETREL_CONTINUE);
    if (strncmp(address, "hang", n) == 0 && n == 4) {
        petrel_suspend(s);   /* never resumed: the core's timeout decides */
        return PETREL_PENDING;
    }
    if (strncmp(address, "crash", n) == 0 && n == 5) {
        raise(SIGSEGV);
        return PETREL_CONTINUE;
    }
    return PETREL_CONTINUE;
}

static petrel_verdict on_connect(petrel_session *s)
{
    trace(s, "connect", petrel_client_addr(s));
    if (petrel_param_bool(petrel_session_module(s), "testmod_connect_reject")) {
        petrel_set_reply(s, 554, "5.7.1", "testmod refuses connections");
        return PETREL_REJECT;
    }
    return PETREL_CONTINUE;
}

static petrel_verdict on_helo(petrel_session *s, const char *helo)
{
    trace(s, "helo", helo);
    if (strcasecmp(helo, "reject.helo.test") == 0) {
        petrel_set_reply(s, 550, "5.7.1", "testmod rejects this HELO");
        return PETREL_REJECT;
    }
    return PETREL_CONTINUE;
}

static petrel_verdict on_mail(petrel_session *s, const char *sender)
{
    trace(s, "mail", sender);
    return act(s, sender);
}

static petrel_verdict on_rcpt(petrel_session *s, const char *rcpt)
{
    trace(s, "rcpt", rcpt);
    return act(s, rcpt);
}

static petrel_verdict on_data(petrel_session *s)
{
    trace(s, "data", NULL);
    for (size_t i = 0; i < petrel_recipient_count(s); i++) {
        if (strncmp(petrel_recipient_at(s, i), "datareject@", 11) == 0) {
            petrel_set_reply(s, 554, "5.7.1", "testmod rejects DATA");
            return PETREL_REJECT;
        }
    }
    return PETREL_CONTINUE;
}

static struct tx_state *tx(petrel_session *s)
{
    void **slot = petrel_tx_slot(s);
    if (*slot == NULL)
        *slot = petrel_pool_zalloc(petrel_tx_pool(s), sizeof(struct tx_state));
    return *slot;
}

static petrel_verdict on_header(petrel_session *s, const char *name, const char *value)
{
    trace(s, "header", name);
    struct tx_state *t = tx(s);
    if (strcasecmp(name, "X-Testmod-Reject") == 0 && strncasecmp(value, "yes", 3) == 0)
        t->header_reject = 1;
    if (strcasecmp(name, "X-Testmod-Crash") == 0 && strncasecmp(value, "yes", 3) == 0)
        t->crash = 1;
    if (strncasecmp(name, "X-Testmod-", 10) == 0 && t->nedits < 32) {
        t->edits[t->nedits][0] = petrel_pool_strdup(petrel_tx_pool(s), name);
        /* values end at the line end: tests keep them on one line */
        size_t len = strcspn(value, "\r\n");
        t->edits[t->nedits][1] = petrel_pool_strndup(petrel_tx_pool(s), value, len);
        t->nedits++;
    }
    return PETREL_CONTINUE;
}

static petrel_verdict on_eoh(petrel_session *s)
{
    trace(s, "end_of_headers", NULL);
    return PETREL_CONTINUE;
}

static petrel_verdict on_body(petrel_session *s, const char *chunk, size_t len)
{
    static const char marker[] = "TESTMOD-BODY-REJECT";
    struct tx_state *t = tx(s);
    /* Search the carried tail plus this chunk, so a marker split across chunks is found. */
    size_t tl = strlen(t->tail);
    char window[64 + 32];
    size_t pos = 0;
    while (pos < len) {
        size_t take = len - pos < 64 ? len - pos : 64;
        memcpy(window, t->tail, tl);
        memcpy(window + tl, chunk + pos, take);
        size_t wl = tl + take;
        for (size_t i = 0; i + sizeof(marker) - 1 <= wl; i++)
            if (memcmp(window + i, marker, sizeof(marker) - 1) == 0)
                t->body_reject = 1;
        size_t keep = wl < sizeof(marker) - 1 ? wl : sizeof(marker) - 1;
        memcpy(t->tail, window + wl - keep, keep);
        tl = keep;
        t->tail[tl] = '\0';
        pos += take;
    }
    return PETREL_CONTINUE;
}

static void split_header(const char *spec, char *name, size_t size, const char **value)
{
    size_t n = strcspn(spec, ":");
    snprintf(name, size, "%.*s", (int)n, spec);
    *value = spec[n] ? spec + n + 1 : " ";
}

static petrel_verdict on_eom(petrel_session *s)
{
    trace(s, "end_of_message", NULL);
    struct tx_state *t = tx(s);
    if (t->crash) {
        /* A plugin with a bug. SIGSEGV is raised rather than provoked with a
         * NULL store, so sanitizer builds report nothing: the queue sees the
         * same thing either way (the worker dies by signal 11, file open). */
        raise(SIGSEGV);
    }
    if (t->header_reject || t->body_reject) {
        petrel_set_reply(s, 550, "5.7.1", t->header_reject ? "testmod rejects this header"
                                                           : "testmod rejects this body");
        return PETREL_REJECT;
    }
    for (int i = 0; i < t->nedits; i++) {
        const char *what = t->edits[i][0] + 10;
        const char *arg = t->edits[i][1];
        char name[128];
        const char *value;
        if (strcasecmp(what, "Add") == 0) {
            split_header(arg, name, sizeof(name), &value);
            petrel_header_add(s, name, value);
        } else if (strcasecmp(what, "Insert") == 0) {
            split_header(arg, name, sizeof(name), &value);
            petrel_header_insert(s, 0, name, value);
        } else if (strcasecmp(what, "Change") == 0) {
            petrel_header_change(s, arg, 1, " changed by testmod");
        } else if (strcasecmp(what, "Delete") == 0) {
            petrel_header_change(s, arg, 1, NULL);
        } else if (strcasecmp(what, "Sender") == 0) {
            petrel_sender_change(s, arg);
        } else if (strcasecmp(what, "Add-Rcpt") == 0) {
            petrel_recipient_add(s, arg);
        } else if (strcasecmp(what, "Del-Rcpt") == 0) {
            petrel_recipient_delete(s, arg);
        } else if (strcasecmp(what, "Body") == 0) {
            char *body = petrel_pool_printf(petrel_tx_pool(s), "%s\r\n", arg);
            petrel_body_replace(s, body, strlen(body));
        } else if (strcasecmp(what, "Quarantine") == 0) {
            petrel_quarantine(s, arg);
        }
    }
    return PETREL_CONTINUE;
}

static void on_queued(petrel_session *s, const char *queue_id)
{
    trace(s, "queued", queue_id);
}

static void on_delivery(petrel_module *m, const petrel_delivery_result *r)
{
    static const char *words[] = { "sent", "deferred", "bounced" };
    petrel_module_log(m, PETREL_LOG_INFO, "delivery %s to=<%s> status=%s dsn=%s relay=%s", r->queue_id,
                      r->recipient, words[r->status], r->dsn, r->relay);
}

/* lookup-table type testmod: keys containing "good" are OK, "bad" REJECT */
static void *table_open(petrel_module *m, const char *name, petrel_pool *pool, const char **error)
{
    if (strcmp(name, "fail") == 0) {
        *error = "testmod tables named fail cannot be opened";
        return NULL;
    }
    return petrel_pool_strdup(pool, name);
}

static int table_lookup(void *handle, const char *key, const char **value, petrel_pool *scratch)
{
    if (strstr(key, "good")) {
        *value = "OK";
        return 1;
    }
    if (strstr(key, "bad")) {
        *value = petrel_pool_printf(scratch, "REJECT testmod table %s refuses %s", (const char *)handle, key);
        return 1;
    }
    return 0;
}

static const petrel_table_type table_types[] = {
    { PETREL_TABLE_TYPE_INIT, .name = "testmod", .open = table_open, .lookup = table_lookup },
    { .name = NULL },
};

/* DNS: "dnsa" rejects a sender domain whose A record is 127.0.0.2; the
 * other dns words log what they find and continue. */
struct dns_wait {
    petrel_pending *pending;
    petrel_module *module;
    int type;
};

static void dns_answered(const petrel_dns_answer *a, void *arg)
{
    struct dns_wait *w = arg;
    static const char *names[] = { "A", "AAAA", "MX", "TXT", "PTR" };
    char line[1024];
    size_t n = (size_t)snprintf(line, sizeof(line), "dns %s status %d:", names[w->type], (int)a->status);
    int listed = 0;
    for (size_t i = 0; i < a->count && n < sizeof(line) - 64; i++) {
        if (a->preferences)
            n += (size_t)snprintf(line + n, sizeof(line) - n, " %d %s", a->preferences[i], a->values[i]);
        else
            n += (size_t)snprintf(line + n, sizeof(line) - n, " %s", a->values[i]);
        if (w->type == PETREL_DNS_A && strcmp(a->values[i], "127.0.0.2") == 0)
            listed = 1;
    }
    petrel_module_log(w->module, PETREL_LOG_INFO, "%s", line);
    if (listed)
        petrel_resume(w->pending, PETREL_REJECT, 554, "5.7.1", "testmod: sender domain is listed");
    else
        petrel_resume(w->pending, PETREL_CONTINUE, 0, NULL, NULL);
    free(w);
}

static petrel_verdict dns_check(petrel_session *s, petrel_dns_type type, const char *name)
{
    struct dns_wait *w = malloc(sizeof(*w));
    if (w == NULL)
        return PETREL_TEMPFAIL;
    w->module = petrel_session_module(s);
    w->type = (int)type;
    w->pending = petrel_suspend(s);
    if (petrel_dns_lookup(w->module, type, name, dns_answered, w) != 0) {
        petrel_resume(w->pending, PETREL_TEMPFAIL, 451, "4.3.0", "no resolver");
        free(w);
    }
    return PETREL_PENDING;
}

/* petrel_run_blocking: sleep on a thread, then answer OK. */
struct blocking {
    petrel_pending *pending;
};

static void blocking_work(void *arg)
{
    (void)arg;
    struct timespec ts = { 0, 200 * 1000 * 1000 };
    nanosleep(&ts, NULL);
}

static void blocking_done(void *arg)
{
    struct blocking *b = arg;
    petrel_resume(b->pending, PETREL_ACCEPT, 0, NULL, NULL);
    free(b);
}

/* petrel_watch_fd: a pipe that becomes readable answers OK. */
struct piped {
    petrel_pending *pending;
    petrel_watch *watch;
    int fds[2];
};

static void pipe_readable(int fd, int events, void *arg)
{
    struct piped *p = arg;
    char c;
    if (read(fd, &c, 1) != 1)
        return;
    petrel_watch_cancel(p->watch);
    close(p->fds[0]);
    close(p->fds[1]);
    petrel_resume(p->pending, PETREL_ACCEPT, 0, NULL, NULL);
    free(p);
}

static void pipe_write_later(void *arg)
{
    struct piped *p = arg;
    if (write(p->fds[1], "x", 1) != 1)
        return;   /* the hook timeout will answer */
}

/* check_testmod WORD */
static int compile_check(petrel_module *m, const char *const *args, void **state, petrel_pool *pool,
                         const char **error)
{
    static const char *const words[] = { "ok", "dunno", "reject", "tempfail", "slowok", "hang", "dnsa", "dnsmx",
                                         "dnstxt", "dnsptr", "blocking", "pipe", NULL };
    for (int i = 0; words[i]; i++) {
        if (strcmp(args[0], words[i]) == 0) {
            *state = (void *)words[i];
            return 0;
        }
    }
    *error = petrel_pool_printf(pool, "unknown word \"%s\" (use ok, dunno, reject, tempfail, slowok or hang)", args[0]);
    return -1;
}

static petrel_verdict check(petrel_session *s, void *state)
{
    const char *word = state;
    trace(s, "check_testmod", word);
    if (strcmp(word, "ok") == 0)
        return PETREL_ACCEPT;
    if (strcmp(word, "reject") == 0) {
        petrel_set_reply(s, 554, "5.7.1", "check_testmod rejects");
        return PETREL_REJECT;
    }
    if (strcmp(word, "tempfail") == 0) {
        petrel_set_reply(s, 450, "4.7.1", "check_testmod tempfails");
        return PETREL_TEMPFAIL;
    }
    if (strcmp(word, "slowok") == 0)
        return suspend_for(s, 300, PETREL_ACCEPT);
    if (strcmp(word, "hang") == 0) {
        petrel_suspend(s);
        return PETREL_PENDING;
    }
    const char *sender = petrel_sender(s);
    const char *domain = sender && strchr(sender, '@') ? strchr(sender, '@') + 1 : "";
    if (strcmp(word, "dnsa") == 0)
        return dns_check(s, PETREL_DNS_A, domain);
    if (strcmp(word, "dnsmx") == 0)
        return dns_check(s, PETREL_DNS_MX, domain);
    if (strcmp(word, "dnstxt") == 0)
        return dns_check(s, PETREL_DNS_TXT, domain);
    if (strcmp(word, "dnsptr") == 0)
        return dns_check(s, PETREL_DNS_PTR, petrel_client_addr(s));
    if (strcmp(word, "blocking") == 0) {
        struct blocking *b = malloc(sizeof(*b));
        if (b == NULL)
            return PETREL_TEMPFAIL;
        b->pending = petrel_suspend(s);
        petrel_run_blocking(petrel_session_module(s), blocking_work, blocking_done, b);
        return PETREL_PENDING;
    }
    if (strcmp(word, "pipe") == 0) {
        struct piped *p = malloc(sizeof(*p));
        if (p == NULL || pipe(p->fds) != 0) {
            free(p);
            return PETREL_TEMPFAIL;
        }
        p->pending = petrel_suspend(s);
        p->watch = petrel_watch_fd(petrel_session_module(s), p->fds[0], PETREL_WATCH_READ, pipe_readable, p);
        petrel_timer_start(petrel_session_module(s), 100, pipe_write_later, p);
        return PETREL_PENDING;
    }
    return PETREL_CONTINUE;
}

static const petrel_restriction restrictions[] = {
    { PETREL_RESTRICTION_INIT, .name = "check_testmod", .nargs = 1, .compile = compile_check, .check = check },
    { .name = NULL },
};

/* SASL back-end "testmod": alice/secret and slow/secret (answers after
 * 0.5 s) are valid; "down" is a back-end failure; anything else is wrong. */
static petrel_verdict sasl_check(petrel_session *s, const char *path, const char *mech, const char *user,
                                 const char *password)
{
    petrel_log(s, PETREL_LOG_INFO, "sasl check %s %s path=%s", mech, user, path);
    if (strcmp(user, "down") == 0)
        return PETREL_TEMPFAIL;
    if (strcmp(password, "secret") != 0)
        return PETREL_REJECT;
    if (strcmp(user, "alice") == 0)
        return PETREL_ACCEPT;
    if (strcmp(user, "slow") == 0)
        return suspend_for(s, 500, PETREL_ACCEPT);
    return PETREL_REJECT;
}

static const petrel_sasl_backend sasl_backends[] = {
    { PETREL_SASL_BACKEND_INIT, .name = "testmod", .check = sasl_check },
    { .name = NULL },
};

static int init(petrel_module *m, const char **error)
{
    petrel_module_log(m, PETREL_LOG_INFO, "initialised (delay %lld s)", petrel_param_int(m, "testmod_delay"));
    return 0;
}

const petrel_module_desc petrel_module_descriptor = {
    PETREL_MODULE_INIT,
    .name = "testmod",
    .version = "1.0",
    .description = "drives every hook from what the client sends (tests only)",
    .params = params,
    .init = init,
    .hooks = {
        .connect = on_connect,
        .helo = on_helo,
        .mail = on_mail,
        .rcpt = on_rcpt,
        .data = on_data,
        .header = on_header,
        .end_of_headers = on_eoh,
        .body = on_body,
        .end_of_message = on_eom,
        .queued = on_queued,
        .delivery = on_delivery,
    },
    .restrictions = restrictions,
    .table_types = table_types,
    .sasl_backends = sasl_backends,
    .default_action = PETREL_ON_FAILURE_CONTINUE,
};
