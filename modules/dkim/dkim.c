/*
 * dkim: DKIM signing and verification (RFC 6376, RFC 8463) with
 * libopendkim, as a loadable module (doc/modules/dkim.md).
 *
 *   modules = spf dkim dmarc
 *   dkim_domain = example.com
 *   dkim_selector = 2026a
 *   dkim_key_file = /etc/petrel/dkim/2026a.private
 *
 * Mail from mynetworks and SASL-authenticated clients is signed when the
 * From domain has a key (dkim_tables.c); everybody else's is verified and
 * gets "Authentication-Results: $myhostname; dkim=..." on top. Forged
 * Authentication-Results carrying our authserv-id are removed either way.
 * The results go to the transaction notes dkim.results ("DOMAIN SELECTOR
 * RESULT" per signature, comma-separated) and dkim.from_domain for the
 * dmarc module, which therefore comes after this one in `modules`.
 *
 * Design: at end of message the message as stored (petrel_message_open:
 * our Received, the headers as header_checks left them, the body) streams
 * through the component (dkim_msg.c), for signing and verifying alike;
 * only the header section is kept. Up to 64 KiB it is fed at once on the
 * loop; a bigger message in 256 KiB slices, each read on the loop (the
 * work function of petrel_run_blocking may not call petrel_message_read)
 * and hashed on a worker thread, so the loop is not held by a 20 MiB body
 * (libopendkim hashes at about 20 MiB/s). The stored copy, not
 * the header and body hooks, because those give "Name: value" rebuilt
 * ("Subject:x" and "Subject: x" are the same value there, and simple
 * canonicalization hashes the difference, so a sender's c=simple
 * signature would fail), and the headers before header_checks' edits.
 * The body is hashed then, not while it arrives: the same work, later.
 * The hook suspends; once the message is fed, the key records the
 * signatures name are looked up on the loop
 * (petrel_dns_lookup, so dns_resolver answers, with dkim_lookup_timeout
 * for all of them), then dkmsg_end (RSA and Ed25519 work, libopendkim's
 * key callback answered from those lookups, never from its own resolver)
 * runs on a worker thread (petrel_run_blocking); its completion, back on
 * the loop, makes the edits and resumes the session.
 *
 * Lifetimes: a job is shared by the transaction (its pool cleanup), every
 * DNS lookup in flight, the timer and the worker's completion, each
 * holding a reference dropped on the loop; a completion whose session has
 * gone (petrel_pending_session is NULL) touches nothing of it. The
 * module's configuration (libopendkim's library handle, the tables) is
 * reference-counted too, because a reload's fini may come while a worker
 * still signs with it.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>

#include <petrel/plugin.h>

#include "dkim_msg.h"
#include "dkim_tables.h"

#define MAX_KEYS 16
#define MAX_TXT 4096
#define STORED_CHUNK (256 * 1024)  /* read and fed at a time */
#define INLINE_MAX (64 * 1024)      /* fed at once on the loop up to this size */

struct dk_mod {
    int refs;                  /* the module (init to fini) + each job */
    struct dk_tables tables;
    int have_tables;
    struct dkmsg_conf conf;
    char authserv_id[256];
    unsigned lookup_timeout_ms;
};

struct key_answer {
    struct dk_job *job;
    char name[DKMSG_KEY_NAME_MAX];
    int answered;
    int rc;                    /* 0 found, 1 no key, -1 temporary failure */
    char txt[MAX_TXT];
};

struct dk_job {
    int refs;
    petrel_module *m;
    struct dk_mod *mod;
    struct dkmsg *msg;
    int modes;
    int failed;                /* the message could not be read, or the component gave up */
    petrel_pending *pending;
    petrel_timer *timer;
    struct key_answer keys[MAX_KEYS];
    size_t nkeys, nanswered;
    petrel_message *stored;    /* the message being fed, at end of message */
    char *slice;               /* its bytes being fed (STORED_CHUNK) */
    size_t slice_len;
    int slice_rc;              /* dkmsg_feed's, on the worker */
    int working;               /* dkmsg_end started */
    int end_rc;
};

static const petrel_param dkim_params[] = {
    { PETREL_PARAM_INIT, .name = "dkim_domain", .type = PETREL_PARAM_STRING, .default_value = "",
      .help = "sign mail whose From domain is this domain or below it (with dkim_selector and dkim_key_file)" },
    { PETREL_PARAM_INIT, .name = "dkim_selector", .type = PETREL_PARAM_STRING, .default_value = "",
      .help = "the selector (s=) of dkim_key_file's key" },
    { PETREL_PARAM_INIT, .name = "dkim_key_file", .type = PETREL_PARAM_STRING, .default_value = "",
      .help = "the private key (PEM, RSA or Ed25519) for dkim_domain" },
    { PETREL_PARAM_INIT, .name = "dkim_key_table", .type = PETREL_PARAM_STRING, .default_value = "",
      .help = "OpenDKIM's KeyTable file, for many domains (with dkim_signing_table)" },
    { PETREL_PARAM_INIT, .name = "dkim_signing_table", .type = PETREL_PARAM_STRING, .default_value = "",
      .help = "OpenDKIM's SigningTable: file:PATH (OpenDKIM's lookup order) or refile:PATH (wildcards)" },
    { PETREL_PARAM_INIT, .name = "dkim_multiple_signatures", .type = PETREL_PARAM_BOOL, .default_value = "no",
      .help = "every SigningTable match signs (OpenDKIM's MultipleSignatures), not only the first" },
    { PETREL_PARAM_INIT, .name = "dkim_canonicalization", .type = PETREL_PARAM_STRING,
      .default_value = "relaxed/relaxed", .help = "header/body canonicalization of our signatures: relaxed or simple" },
    { PETREL_PARAM_INIT, .name = "dkim_lookup_timeout", .type = PETREL_PARAM_TIME, .default_value = "10s",
      .help = "time for the key lookups of one message; a key not found by then gives dkim=temperror" },
    { .name = NULL },
};

/* ------------------------------------------------------------------ */
/* configuration                                                        */

static int parse_canon(const char *v, int *relaxed_header, int *relaxed_body)
{
    char h[16], b[16];
    const char *slash = strchr(v, '/');
    size_t hl = slash ? (size_t)(slash - v) : strlen(v);
    if (hl == 0 || hl >= sizeof(h))
        return -1;
    memcpy(h, v, hl);
    h[hl] = '\0';
    snprintf(b, sizeof(b), "%s", slash ? slash + 1 : "simple");   /* RFC 6376 3.5: c=relaxed is relaxed/simple */
    if (strcmp(h, "relaxed") != 0 && strcmp(h, "simple") != 0)
        return -1;
    if (strcmp(b, "relaxed") != 0 && strcmp(b, "simple") != 0)
        return -1;
    *relaxed_header = strcmp(h, "relaxed") == 0;
    *relaxed_body = strcmp(b, "relaxed") == 0;
    return 0;
}

/* A KeyTable or SigningTable given as a Postfix-style table ("hash:/x",
 * "lmdb:/x", "cdb:/x", "pgsql:/x.cf"...) rather than a file (a path,
 * "file:" or "refile:", which the module reads itself). Such a table is
 * checked with petrel_table_check, so that a type that does not exist or a
 * database that does not open is named as it is for the core's own
 * tables, and then refused: lookups in it are not written yet, and reading
 * the spec as a path would only give "No such file". Returns 0 for a file
 * spec, -1 (reported) for a table spec. */
static int refuse_table_spec(petrel_module *m, const char *param, const char *spec, int report)
{
    if (strncmp(spec, "file:", 5) == 0 || strncmp(spec, "refile:", 7) == 0)
        return 0;
    size_t type_len = strspn(spec, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-");
    if (type_len == 0 || spec[type_len] != ':')
        return 0;   /* a path */
    const char *why = NULL;
    if (petrel_table_check(m, spec, &why) != 0) {
        if (report)
            petrel_config_error(m, param, "%s", why ? why : spec);
        return -1;
    }
    if (report)
        petrel_config_error(m, param, "%s: a table of type %.*s is not supported here yet: give OpenDKIM's file "
                            "(a path, file: or refile:)", spec, (int)type_len, spec);
    return -1;
}

/* Reads the signing configuration into t (have = 0 when nothing signs).
 * Problems are reported with petrel_config_error when report is set.
 * With check_keys, every key file named without "%" is read and its type
 * found, so that petreld -n names an unreadable or broken key. */
static int load_signing(petrel_module *m, struct dk_tables *t, int *have, int report, int check_keys)
{
    const char *domain = petrel_param_string(m, "dkim_domain");
    const char *selector = petrel_param_string(m, "dkim_selector");
    const char *key_file = petrel_param_string(m, "dkim_key_file");
    const char *key_table = petrel_param_string(m, "dkim_key_table");
    const char *signing_table = petrel_param_string(m, "dkim_signing_table");
    int single = *domain || *selector || *key_file;
    int tables = *key_table || *signing_table;
    char err[512];
    *have = 0;
    memset(t, 0, sizeof(*t));
    if (single && tables) {
        if (report)
            petrel_config_error(m, "dkim_domain", "dkim_domain/dkim_selector/dkim_key_file and "
                                "dkim_key_table/dkim_signing_table exclude each other: use one or the other");
        return -1;
    }
    if (single) {
        if (dk_tables_single(t, domain, selector, key_file, err, sizeof(err)) != 0) {
            if (report)
                petrel_config_error(m, !*domain ? "dkim_domain" : !*selector ? "dkim_selector" : "dkim_key_file",
                                    "%s (dkim_domain, dkim_selector and dkim_key_file go together)", err);
            return -1;
        }
    } else if (tables) {
        if (!*key_table || !*signing_table) {
            if (report)
                petrel_config_error(m, *key_table ? "dkim_signing_table" : "dkim_key_table",
                                    "dkim_key_table and dkim_signing_table go together");
            return -1;
        }
        int refused = refuse_table_spec(m, "dkim_key_table", key_table, report);
        if (refuse_table_spec(m, "dkim_signing_table", signing_table, report) != 0 || refused)
            return -1;
        if (dk_tables_load(t, key_table, signing_table, err, sizeof(err)) != 0) {
            /* err starts with the file it is about: name that one's parameter */
            const char *sp = strncmp(signing_table, "refile:", 7) == 0 ? signing_table + 7
                           : strncmp(signing_table, "file:", 5) == 0 ? signing_table + 5 : signing_table;
            size_t sl = strlen(sp);
            int in_signing = strncmp(err, sp, sl) == 0 && err[sl] == ':';
            if (report)
                petrel_config_error(m, in_signing ? "dkim_signing_table" : "dkim_key_table", "%s", err);
            return -1;
        }
    } else {
        return 0;
    }
    *have = 1;
    for (size_t i = 0; check_keys && i < t->nkeys; i++) {
        const struct dk_key *k = &t->keys[i];
        if (!k->is_path || strchr(k->source, '%'))
            continue;
        FILE *f = fopen(k->source, "r");
        char *text = malloc(65537);
        size_t n = f && text ? fread(text, 1, 65536, f) : 0;
        int bad = f == NULL || text == NULL;
        int saved = errno;
        if (f)
            fclose(f);
        enum dk_alg alg;
        if (bad) {
            if (report)
                petrel_config_error(m, single ? "dkim_key_file" : "dkim_key_table", "%s: %s", k->source,
                                    strerror(saved));
        } else if (dk_key_type(text, n, &alg, err, sizeof(err)) != 0) {
            bad = 1;
            if (report)
                petrel_config_error(m, single ? "dkim_key_file" : "dkim_key_table", "%s: %s", k->source, err);
        }
        free(text);
        if (bad) {
            dk_tables_free(t);
            *have = 0;
            return -1;
        }
    }
    return 0;
}

static int dkim_check(petrel_module *m)
{
    int rc = 0, rh = 1, rb = 1, have;
    const char *canon = petrel_param_string(m, "dkim_canonicalization");
    if (parse_canon(canon, &rh, &rb) != 0) {
        petrel_config_error(m, "dkim_canonicalization", "%s: expected relaxed/relaxed, relaxed/simple, "
                            "simple/relaxed or simple/simple", canon);
        rc = -1;
    }
    long long timeout = petrel_param_int(m, "dkim_lookup_timeout");
    if (timeout < 1 || timeout > 60) {
        petrel_config_error(m, "dkim_lookup_timeout", "expected 1s to 60s");
        rc = -1;
    }
    struct dk_tables t;
    if (load_signing(m, &t, &have, 1, 1) != 0)
        rc = -1;
    else if (have)
        dk_tables_free(&t);
    return rc;
}

static void mod_unref(struct dk_mod *mod)
{
    if (--mod->refs > 0)
        return;
    dkmsg_conf_free(&mod->conf);
    if (mod->have_tables)
        dk_tables_free(&mod->tables);
    free(mod);
}

static int fetch_from_answers(void *ctx, const char *qname, char *buf, size_t size);

static int dkim_init(petrel_module *m, const char **error)
{
    struct dk_mod *mod = calloc(1, sizeof(*mod));
    if (mod == NULL) {
        *error = "out of memory";
        return -1;
    }
    mod->refs = 1;
    int rh = 1, rb = 1;
    if (parse_canon(petrel_param_string(m, "dkim_canonicalization"), &rh, &rb) != 0) {
        free(mod);
        *error = "dkim_canonicalization: expected relaxed or simple for the header and the body";
        return -1;
    }
    if (load_signing(m, &mod->tables, &mod->have_tables, 1, 0) != 0) {
        free(mod);
        *error = "the signing configuration does not load (see the error above)";
        return -1;
    }
    const char *host = petrel_config_string(m, "myhostname");
    snprintf(mod->authserv_id, sizeof(mod->authserv_id), "%s", host && *host ? host : "localhost");
    long long timeout = petrel_param_int(m, "dkim_lookup_timeout");
    mod->lookup_timeout_ms = (unsigned)(timeout < 1 ? 1 : timeout > 60 ? 60 : timeout) * 1000;
    mod->conf.tables = mod->have_tables ? &mod->tables : NULL;
    mod->conf.authserv_id = mod->authserv_id;
    mod->conf.multiple = petrel_param_bool(m, "dkim_multiple_signatures");
    mod->conf.relaxed_header = rh;
    mod->conf.relaxed_body = rb;
    mod->conf.fetch = fetch_from_answers;
    char err[256];
    if (dkmsg_conf_init(&mod->conf, err, sizeof(err)) != 0) {
        if (mod->have_tables)
            dk_tables_free(&mod->tables);
        free(mod);
        *error = "libopendkim does not start (see the log)";
        petrel_module_log(m, PETREL_LOG_ERROR, "%s", err);
        return -1;
    }
    petrel_module_set_data(m, mod);
    return 0;
}

static void dkim_fini(petrel_module *m)
{
    struct dk_mod *mod = petrel_module_data(m);
    petrel_module_set_data(m, NULL);
    if (mod)
        mod_unref(mod);
}

/* ------------------------------------------------------------------ */
/* the job                                                              */

static void job_unref(struct dk_job *job)
{
    if (--job->refs > 0)
        return;
    dkmsg_free(job->msg);
    free(job->slice);
    mod_unref(job->mod);
    free(job);
}

static void job_tx_cleanup(void *arg)
{
    job_unref(arg);
}

/* The transaction's job, made at end of message. */
static struct dk_job *job_start(petrel_session *s)
{
    void **slot = petrel_tx_slot(s);
    if (slot == NULL)
        return NULL;
    if (*slot)
        return *slot;
    petrel_module *m = petrel_session_module(s);
    struct dk_mod *mod = petrel_module_data(m);
    if (mod == NULL)
        return NULL;
    int trusted = petrel_in_mynetworks(s) || petrel_sasl_username(s) != NULL;
    int modes = trusted ? (mod->have_tables ? DKMSG_SIGN : 0) : DKMSG_VERIFY;
    struct dk_job *job = calloc(1, sizeof(*job));
    if (job == NULL)
        return NULL;
    const char *id = petrel_queue_id(s);
    job->msg = dkmsg_new(&mod->conf, modes, id);
    if (job->msg == NULL) {
        free(job);
        return NULL;
    }
    dkmsg_set_fetch_ctx(job->msg, job);
    job->refs = 1;
    job->m = m;
    job->mod = mod;
    mod->refs++;
    job->modes = modes;
    *slot = job;
    petrel_pool_cleanup_add(petrel_tx_pool(s), job_tx_cleanup, job);
    return job;
}

/* libopendkim's key callback, on the worker thread: the answers looked up
 * on the loop before dkmsg_end started. */
static int fetch_from_answers(void *ctx, const char *qname, char *buf, size_t size)
{
    struct dk_job *job = ctx;
    for (size_t i = 0; job && i < job->nkeys; i++) {
        struct key_answer *k = &job->keys[i];
        if (strcasecmp(k->name, qname) != 0)
            continue;
        if (!k->answered || k->rc < 0)
            return -1;
        if (k->rc > 0)
            return 1;
        snprintf(buf, size, "%s", k->txt);
        return 0;
    }
    return -1;   /* a signature we did not see at end of headers */
}

static void job_work(void *arg)
{
    struct dk_job *job = arg;
    job->end_rc = dkmsg_end(job->msg);
}

/* dkim.result (the best signature's: pass, fail, neutral, temperror,
 * permerror, or none without one) and dkim.domains (the d= of those that
 * passed), as doc/plugin-guide.md lists them. */
static void publish_best(petrel_session *s, const struct dkmsg *msg)
{
    static const char *const order[] = { "pass", "fail", "neutral", "temperror", "permerror", NULL };
    const char *best = "none";
    char domains[2048] = "";
    size_t o = 0;
    for (int k = 0; order[k] && strcmp(best, "none") == 0; k++)
        for (size_t i = 0; i < dkmsg_result_count(msg); i++) {
            const char *d, *sel, *res;
            dkmsg_result(msg, i, &d, &sel, &res);
            if (strcmp(res, order[k]) == 0)
                best = order[k];
        }
    for (size_t i = 0; i < dkmsg_result_count(msg); i++) {
        const char *d, *sel, *res;
        dkmsg_result(msg, i, &d, &sel, &res);
        if (strcmp(res, "pass") != 0 || o + strlen(d) + 2 > sizeof(domains))
            continue;
        o += (size_t)snprintf(domains + o, sizeof(domains) - o, "%s%s", o ? " " : "", d);
    }
    petrel_note_set(s, PETREL_NOTE_TRANSACTION, "dkim.result", best);
    petrel_note_set(s, PETREL_NOTE_TRANSACTION, "dkim.domains", domains);
}

/* Back on the loop: the edits, the notes, and the session goes on. */
static void job_done(void *arg)
{
    struct dk_job *job = arg;
    petrel_session *s = petrel_pending_session(job->pending);
    if (s == NULL) {
        job_unref(job);
        return;
    }
    struct dkmsg *msg = job->msg;
    petrel_verdict verdict = PETREL_CONTINUE;
    if (job->end_rc != 0) {
        petrel_log(s, PETREL_LOG_WARNING, "dkim: %s", dkmsg_error(msg));
        if (job->modes & DKMSG_SIGN) {
            /* Mail of ours going out unsigned would change meaning silently. */
            petrel_set_reply(s, 451, "4.7.5", "DKIM signing failed, try again later");
            verdict = PETREL_TEMPFAIL;
        }
    } else {
        for (size_t i = dkmsg_forged_count(msg); i > 0; i--) {
            petrel_log(s, PETREL_LOG_INFO, "dkim: removed a forged Authentication-Results header with our "
                       "authserv-id");
            petrel_header_change(s, "Authentication-Results", dkmsg_forged(msg, i - 1), NULL);
        }
        const char *ar = dkmsg_auth_results(msg);
        if (ar && petrel_header_insert(s, 0, "Authentication-Results", ar) != 0)
            petrel_log(s, PETREL_LOG_WARNING, "dkim: the Authentication-Results header was refused");
        for (size_t i = 0; i < dkmsg_signature_count(msg); i++)
            if (petrel_header_insert(s, 0, "DKIM-Signature", dkmsg_signature(msg, i)) != 0) {
                petrel_log(s, PETREL_LOG_WARNING, "dkim: the DKIM-Signature header was refused");
                petrel_set_reply(s, 451, "4.7.5", "DKIM signing failed, try again later");
                verdict = PETREL_TEMPFAIL;
            }
        char results[4096] = "";
        size_t o = 0;
        for (size_t i = 0; i < dkmsg_result_count(msg); i++) {
            const char *d, *sel, *res;
            dkmsg_result(msg, i, &d, &sel, &res);
            int n = snprintf(results + o, sizeof(results) - o, "%s%s %s %s", o ? ", " : "", d, sel[0] ? sel : "-",
                             res);
            if (n < 0 || (size_t)n >= sizeof(results) - o) {
                results[o] = '\0';
                break;
            }
            o += (size_t)n;
        }
        if (job->modes & DKMSG_VERIFY) {
            publish_best(s, msg);
            petrel_note_set(s, PETREL_NOTE_TRANSACTION, "dkim.results", results);
            petrel_log(s, PETREL_LOG_INFO, "dkim: verified: %s", o ? results : "no signature");
        }
        petrel_note_set(s, PETREL_NOTE_TRANSACTION, "dkim.from_domain", dkmsg_from_domain(msg));
        if (dkmsg_signature_count(msg))
            petrel_log(s, PETREL_LOG_INFO, "dkim: signed for %s (%zu signature%s)", dkmsg_from_domain(msg),
                       dkmsg_signature_count(msg), dkmsg_signature_count(msg) == 1 ? "" : "s");
    }
    petrel_resume(job->pending, verdict, 0, NULL, NULL);
    job->pending = NULL;
    job_unref(job);
}

static void start_work(struct dk_job *job)
{
    if (job->working)
        return;
    job->working = 1;
    if (job->timer) {
        petrel_timer_cancel(job->timer);
        job->timer = NULL;
        job->refs--;   /* the timer's: the caller holds another */
    }
    job->refs++;
    if (petrel_run_blocking(job->m, job_work, job_done, job) != 0) {
        job_work(job);   /* no worker threads in this process */
        job_done(job);
    }
}

static void pick_record(struct key_answer *k, const petrel_dns_answer *a)
{
    const char *best = NULL;
    for (size_t i = 0; i < a->count && best == NULL; i++)
        if (strncmp(a->values[i], "v=DKIM1", 7) == 0)
            best = a->values[i];
    for (size_t i = 0; i < a->count && best == NULL; i++)
        if (strstr(a->values[i], "p="))
            best = a->values[i];
    if (best == NULL && a->count)
        best = a->values[0];
    if (best == NULL) {
        k->rc = 1;
        return;
    }
    snprintf(k->txt, sizeof(k->txt), "%s", best);
    k->rc = 0;
}

static void on_key(const petrel_dns_answer *a, void *arg)
{
    struct key_answer *k = arg;
    struct dk_job *job = k->job;
    if (!k->answered && !job->working) {
        k->answered = 1;
        job->nanswered++;
        switch (a->status) {
        case PETREL_DNS_OK:
            pick_record(k, a);
            break;
        case PETREL_DNS_NXDOMAIN:
        case PETREL_DNS_NODATA:
        case PETREL_DNS_BADNAME:
            k->rc = 1;
            break;
        default:
            k->rc = -1;
            break;
        }
        if (job->nanswered == job->nkeys)
            start_work(job);
    }
    job_unref(job);
}

/* dkim_lookup_timeout passed: keys not found yet are temporary failures. */
static void on_timeout(void *arg)
{
    struct dk_job *job = arg;
    job->timer = NULL;
    if (!job->working) {
        for (size_t i = 0; i < job->nkeys; i++)
            if (!job->keys[i].answered) {
                job->keys[i].answered = 1;
                job->keys[i].rc = -1;
            }
        start_work(job);
    }
    job_unref(job);
}

/* ------------------------------------------------------------------ */
/* the hook                                                             */

/* After the whole message was fed, on the loop, suspended: the key
 * lookups, then dkmsg_end on a worker (start_work). */
static void lookup_keys(struct dk_job *job)
{
    char names[MAX_KEYS][DKMSG_KEY_NAME_MAX];
    size_t n = (job->modes & DKMSG_VERIFY) ? dkmsg_key_names(job->msg, names, MAX_KEYS) : 0;
    for (size_t i = 0; i < n; i++) {
        struct key_answer *k = &job->keys[job->nkeys++];
        k->job = job;
        memcpy(k->name, names[i], sizeof(k->name));
    }
    if (n == 0) {
        start_work(job);
        return;
    }
    job->refs++;
    job->timer = petrel_timer_start(job->m, job->mod->lookup_timeout_ms, on_timeout, job);
    if (job->timer == NULL)
        job->refs--;
    for (size_t i = 0; i < job->nkeys; i++) {
        struct key_answer *k = &job->keys[i];
        job->refs++;
        if (petrel_dns_lookup(job->m, PETREL_DNS_TXT, k->name, on_key, k) != 0) {
            job->refs--;
            k->answered = 1;
            k->rc = -1;
            job->nanswered++;
        }
    }
    if (job->nanswered == job->nkeys)
        start_work(job);
}

/* The verdict when the message could not be fed (logged): mail we sign is
 * not accepted unsigned. */
static petrel_verdict feed_failed(petrel_session *s, struct dk_job *job)
{
    if (job->modes & DKMSG_SIGN) {
        /* Mail of ours going out unsigned would change meaning silently. */
        petrel_set_reply(s, 451, "4.7.5", "DKIM signing failed, try again later");
        return PETREL_TEMPFAIL;
    }
    return PETREL_CONTINUE;
}

static void slice_work(void *arg)
{
    struct dk_job *job = arg;
    job->slice_rc = dkmsg_feed(job->msg, job->slice, job->slice_len);
}

static void slice_next(struct dk_job *job);

static void slice_done(void *arg)
{
    struct dk_job *job = arg;
    petrel_session *s = petrel_pending_session(job->pending);
    if (s == NULL) {
        job->stored = NULL;   /* stale with the session: the core released it */
        job_unref(job);
        return;
    }
    if (job->slice_rc != 0) {
        job->failed = 1;
        petrel_log(s, PETREL_LOG_WARNING, "dkim: %s: the message is neither signed nor verified",
                   dkmsg_error(job->msg));
    }
    slice_next(job);
    job_unref(job);
}

/* A big message, suspended: the next slice read on the loop (a pread),
 * hashed on a worker thread, so that the loop serves other sessions
 * meanwhile; at the end, the key lookups. */
static void slice_next(struct dk_job *job)
{
    petrel_session *s = petrel_pending_session(job->pending);
    long n = job->failed ? -1 : petrel_message_read(job->stored, job->slice, STORED_CHUNK);
    if (n > 0) {
        job->slice_len = (size_t)n;
        job->refs++;
        if (petrel_run_blocking(job->m, slice_work, slice_done, job) == 0)
            return;
        job->refs--;
        slice_work(job);   /* no worker threads in this process */
        n = job->slice_rc == 0 ? 1 : -1;
        if (n < 0) {
            job->failed = 1;
            petrel_log(s, PETREL_LOG_WARNING, "dkim: %s: the message is neither signed nor verified",
                       dkmsg_error(job->msg));
        }
        while (n > 0 && (n = petrel_message_read(job->stored, job->slice, STORED_CHUNK)) > 0)
            if (dkmsg_feed(job->msg, job->slice, (size_t)n) != 0) {
                job->failed = 1;
                petrel_log(s, PETREL_LOG_WARNING, "dkim: %s: the message is neither signed nor verified",
                           dkmsg_error(job->msg));
                n = -1;
            }
    }
    petrel_message_close(job->stored);
    job->stored = NULL;
    free(job->slice);
    job->slice = NULL;
    if (n < 0 && !job->failed) {
        job->failed = 1;
        petrel_log(s, PETREL_LOG_WARNING, "dkim: the stored message could not be read to its end: it is "
                   "neither signed nor verified");
    }
    if (job->failed) {
        petrel_verdict v = feed_failed(s, job);
        petrel_resume(job->pending, v, 0, NULL, NULL);
        job->pending = NULL;
        return;
    }
    lookup_keys(job);
}

static petrel_verdict dkim_end_of_message(petrel_session *s)
{
    /* opendkim is a milter: after a header/body checks REJECT, DISCARD,
     * REDIRECT or PASS none sees the content, so the message is neither
     * signed nor verified and its headers are left alone (no
     * DKIM-Signature, no Authentication-Results, no forged one removed),
     * silently as a milter is skipped. */
    if (petrel_milters_stopped(s) == 1)
        return PETREL_CONTINUE;
    struct dk_job *job = job_start(s);
    if (job == NULL || job->modes == 0)
        return PETREL_CONTINUE;
    if (job->pending || job->working || job->stored)
        return PETREL_CONTINUE;   /* cannot happen: end of message comes once */
    job->stored = petrel_message_open(s, 0);
    /* A small message is fed here at once from a small buffer (a worker's
     * round trip, or a buffer malloc maps and unmaps, would cost more than
     * its hashing); a big one slice by slice. */
    long long size = job->stored ? petrel_message_size(job->stored) : -1;
    int small = size >= 0 && size <= INLINE_MAX;
    job->slice = malloc(small ? INLINE_MAX : STORED_CHUNK);
    if (job->stored == NULL || job->slice == NULL) {
        petrel_log(s, PETREL_LOG_WARNING, "dkim: %s: it is neither signed nor verified",
                   job->slice ? "the stored message cannot be read" : "out of memory");
        if (job->stored)
            petrel_message_close(job->stored);
        job->stored = NULL;
        free(job->slice);
        job->slice = NULL;
        return feed_failed(s, job);
    }
    if (small) {
        long n = petrel_message_read(job->stored, job->slice, INLINE_MAX);
        int rc = n >= 0 && (n == 0 || dkmsg_feed(job->msg, job->slice, (size_t)n) == 0) ? 0 : -1;
        petrel_message_close(job->stored);
        job->stored = NULL;
        free(job->slice);
        job->slice = NULL;
        if (rc != 0) {
            petrel_log(s, PETREL_LOG_WARNING, "dkim: %s: the message is neither signed nor verified",
                       n < 0 ? "the stored message could not be read" : dkmsg_error(job->msg));
            return feed_failed(s, job);
        }
        job->pending = petrel_suspend(s);
        if (job->pending == NULL)
            return PETREL_CONTINUE;
        lookup_keys(job);
        return PETREL_PENDING;
    }
    job->pending = petrel_suspend(s);
    if (job->pending == NULL) {
        petrel_message_close(job->stored);
        job->stored = NULL;
        return PETREL_CONTINUE;
    }
    slice_next(job);
    return PETREL_PENDING;
}

const petrel_module_desc petrel_module_descriptor = {
    PETREL_MODULE_INIT,
    .name = "dkim",
    .version = "1.0",
    .description = "DKIM signing (rsa-sha256, ed25519-sha256) and verification with libopendkim, "
                   "Authentication-Results",
    .params = dkim_params,
    .init = dkim_init,
    .fini = dkim_fini,
    .check = dkim_check,
    .hooks = { .end_of_message = dkim_end_of_message },
    /* dkim_lookup_timeout (10 s, at most 60 s) of DNS, then the signature work */
    .hook_timeout_ms = 90000,
};
