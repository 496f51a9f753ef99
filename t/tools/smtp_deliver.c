/*
 * smtp-deliver: drives the SMTP/LMTP client (core/deliver/smtp_client.c)
 * from the command line, on its own event loop, for the integration tests.
 *
 *   smtp-deliver [--config DIR] [--lmtp] [--tls none|may|encrypt|verify|secure]
 *                [--cafile F] [--dns host:port] [--myhostname N] [--helo N]
 *                [--timeout SECS] [--cache-time SECS] [--repeat N] [--linger]
 *                [--port P] QUEUE_FILE NEXTHOP
 *
 * takes the client's settings from DIR/main.cf as the queue manager binds
 * them (smtp_* parameters, lmtp_* with --lmtp), or Postfix's defaults
 * without --config (then with no connection cache unless --cache-time);
 * the other options override them.
 *
 * delivers every recipient of QUEUE_FILE to NEXTHOP and prints one line per
 * recipient, "RCPT status dsn relay text" (status: sent, deferred, bounced).
 * --repeat N delivers the same job N times, each one started from the
 * previous one's done() (so the second finds the first's connection in the
 * cache), then prints "STATS connections=N reused=N". --linger keeps the
 * loop running past the cache time so cached connections say QUIT. At the
 * end it prints "CLOSED open=N": connections not yet closed when it stopped
 * waiting (about two seconds after the last job).
 *
 *   smtp-deliver --make-queue-file QUEUE_DIR [--8bitmime] [--smtputf8]
 *                [--envid X] [--ret full|hdrs] [--notify LIST] [--orcpt]
 *                SENDER MESSAGE_FILE RCPT...
 *
 * writes a queue file (the message file's bytes are the content, taken as
 * they are: give it CRLF line ends) and prints its path. Exit status 0 unless
 * the tool itself failed.
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include <event2/event.h>
#include <petrel/pool.h>

#include "config/cfg.h"
#include "deliver/smtp_client.h"
#include "lib/dns.h"
#include "lib/workq.h"
#include "lib/log.h"
#include "queue/queue.h"

struct run {
    struct event_base *base;
    struct smtp_client *client;
    struct dlv_job job;
    int repeat;
    int linger;
    unsigned cache_time;
    int polls;
};

/* The configuration smtp-deliver loaded (see bind_settings): the bound
 * settings point into it, so main frees it last. */
static struct cfg *process_cfg;
static struct cfg_schema *process_schema;

static void usage(void)
{
    fprintf(stderr, "usage: smtp-deliver [--lmtp] [--tls LEVEL] [--cafile F] [--dns host:port] [--myhostname N]\n"
                    "                    [--helo N] [--timeout S] [--cache-time S] [--repeat N] [--linger]\n"
                    "                    [--port P] QUEUE_FILE NEXTHOP\n"
                    "       smtp-deliver --make-queue-file QUEUE_DIR [--8bitmime] [--smtputf8] [--envid X]\n"
                    "                    [--ret full|hdrs] [--notify LIST] [--orcpt] SENDER MESSAGE_FILE RCPT...\n");
    exit(2);
}

/* An explicit --cache-time was given. */
static int repeat_given(int argc, char **argv)
{
    for (int k = 1; k < argc; k++)
        if (strcmp(argv[k], "--cache-time") == 0)
            return 1;
    return 0;
}

static const char *status_word(enum dlv_status s)
{
    return s == DLV_SENT ? "sent" : s == DLV_DEFERRED ? "deferred" : "bounced";
}

/* Stops the loop once every connection is closed (QUIT answered), or
 * after about two seconds of waiting for that. */
static void on_stop(evutil_socket_t fd, short what, void *arg)
{
    struct run *r = arg;
    struct smtp_client_stats st;
    (void)fd;
    (void)what;
    smtp_client_get_stats(r->client, &st);
    /* parked connections need not be waited for unless --linger */
    if (st.open == (r->linger ? 0 : st.cached) || ++r->polls > 40) {
        event_base_loopexit(r->base, NULL);
        return;
    }
    struct timeval tv = { 0, 50000 };
    event_base_once(r->base, -1, EV_TIMEOUT, on_stop, r, &tv);
}

static void on_done(void *arg, const struct dlv_result *res)
{
    struct run *r = arg;
    for (size_t i = 0; i < r->job.nrcpt; i++)
        printf("%s %s %s %s %s\n", r->job.rcpt_addr[i], status_word(res[i].status), res[i].dsn, res[i].relay,
               res[i].text);
    fflush(stdout);
    if (--r->repeat > 0) {
        smtp_client_deliver(r->client, &r->job, on_done, r);
        return;
    }
    struct smtp_client_stats st;
    smtp_client_get_stats(r->client, &st);
    printf("STATS connections=%llu reused=%llu cached=%u\n", st.connections, st.reused, st.cached);
    fflush(stdout);
    /* the DNS resolver keeps a timer: the loop never runs dry, so stop it */
    struct timeval tv = { r->linger ? (time_t)r->cache_time + 2 : 0, 0 };
    event_base_once(r->base, -1, EV_TIMEOUT, on_stop, r, &tv);
}

static int make_queue_file(int argc, char **argv)
{
    const char *qdir = NULL, *envid = NULL;
    unsigned flags = 0, notify = 0;
    int ret = QUEUE_RET_UNSET, orcpt = 0, i = 0;
    if (argc < 1)
        usage();
    qdir = argv[i++];
    for (; i < argc && strncmp(argv[i], "--", 2) == 0; i++) {
        if (strcmp(argv[i], "--8bitmime") == 0)
            flags |= QUEUE_F_8BITMIME;
        else if (strcmp(argv[i], "--smtputf8") == 0)
            flags |= QUEUE_F_SMTPUTF8;
        else if (strcmp(argv[i], "--orcpt") == 0)
            orcpt = 1;
        else if (strcmp(argv[i], "--envid") == 0 && i + 1 < argc)
            envid = argv[++i];
        else if (strcmp(argv[i], "--ret") == 0 && i + 1 < argc)
            ret = strcasecmp(argv[++i], "full") == 0 ? QUEUE_RET_FULL : QUEUE_RET_HDRS;
        else if (strcmp(argv[i], "--notify") == 0 && i + 1 < argc) {
            const char *n = argv[++i];
            notify |= strstr(n, "SUCCESS") ? QUEUE_NOTIFY_SUCCESS : 0;
            notify |= strstr(n, "FAILURE") ? QUEUE_NOTIFY_FAILURE : 0;
            notify |= strstr(n, "DELAY") ? QUEUE_NOTIFY_DELAY : 0;
            notify |= strstr(n, "NEVER") ? QUEUE_NOTIFY_NEVER : 0;
        } else
            usage();
    }
    if (argc - i < 3)
        usage();
    const char *sender = argv[i++], *msgfile = argv[i++];
    size_t nrcpt = (size_t)(argc - i);
    petrel_pool *pool = petrel_pool_create(0);
    struct queue_rcpt *rcpts = petrel_pool_zalloc(pool, nrcpt * sizeof(*rcpts));
    for (size_t k = 0; k < nrcpt; k++) {
        rcpts[k].address = argv[i + (int)k];
        rcpts[k].notify = notify;
        rcpts[k].orcpt = orcpt ? petrel_pool_printf(pool, "rfc822;%s", argv[i + (int)k]) : NULL;
    }
    struct queue_envelope env;
    memset(&env, 0, sizeof(env));
    env.sender = sender;
    env.envid = envid;
    env.ret = ret;
    env.flags = flags;
    env.protocol = "ESMTP";
    env.arrival_sec = time(NULL);
    env.rcpt_count = nrcpt;
    env.rcpts = rcpts;
    /* one way out, failures included, so that nothing is left allocated */
    int status = 1;
    char *error = NULL;
    struct queue_writer *w = NULL;
    struct queue *q = queue_open(qdir, 1, &error);
    if (q == NULL) {
        fprintf(stderr, "smtp-deliver: %s\n", error);
        goto out;
    }
    struct queue_id_gen gen;
    queue_id_gen_init(&gen, (unsigned)getpid());
    char id[QUEUE_ID_MAX];
    w = queue_writer_create(q, &gen, &env, id);
    if (w == NULL) {
        fprintf(stderr, "smtp-deliver: queue_writer_create: %s\n", strerror(errno));
        goto out;
    }
    FILE *f = fopen(msgfile, "rb");
    if (f == NULL) {
        fprintf(stderr, "smtp-deliver: %s: %s\n", msgfile, strerror(errno));
        goto out;
    }
    char buf[65536];
    size_t n;
    while ((n = fread(buf, 1, sizeof(buf), f)) > 0)
        queue_writer_write(w, buf, n);
    fclose(f);
    if (queue_writer_commit(w) < 0) {
        fprintf(stderr, "smtp-deliver: commit: %s\n", strerror(errno));
        goto out;
    }
    queue_writer_free(w);
    w = NULL;
    printf("%s/incoming/%s\n", qdir, id);
    status = 0;
out:
    if (w)
        queue_writer_abort(w);
    if (q)
        queue_close(q);
    free(error);
    petrel_pool_destroy(pool);
    return status;
}

/* The settings as the queue manager binds them: from DIR/main.cf, or from
 * an empty main.cf (every default) when no --config is given. */
static int bind_settings(const char *confdir, int lmtp, struct smtp_client_settings *set)
{
    char tmp[] = "/tmp/smtp-deliver-XXXXXX";
    if (confdir == NULL) {
        if (mkdtemp(tmp) == NULL) {
            perror("smtp-deliver: mkdtemp");
            return -1;
        }
        char path[64];
        snprintf(path, sizeof(path), "%s/main.cf", tmp);
        FILE *f = fopen(path, "w");
        if (f)
            fclose(f);
    }
    struct cfg_schema *schema = cfg_schema_new();
    int nerrors = 0;
    struct cfg *cfg = cfg_load(schema, confdir ? confdir : tmp, &nerrors);
    if (confdir == NULL) {
        char path[64];
        snprintf(path, sizeof(path), "%s/main.cf", tmp);
        unlink(path);
        rmdir(tmp);
    }
    process_cfg = cfg;
    process_schema = schema;
    if (cfg == NULL) {
        fprintf(stderr, "smtp-deliver: %d configuration errors\n", nerrors);
        return -1;
    }
    char *error = NULL;
    if (smtp_client_settings_bind(cfg, lmtp, set, &error) < 0) {
        fprintf(stderr, "smtp-deliver: %s\n", error);
        free(error);
        return -1;
    }
    return 0;
}

/* Frees what bind_settings loaded; the settings bound from it go with it. */
static void free_settings(void)
{
    cfg_free(process_cfg);
    cfg_schema_free(process_schema);
    process_cfg = NULL;
    process_schema = NULL;
}

int main(int argc, char **argv)
{
    struct smtp_client_settings set;
    memset(&set, 0, sizeof(set));
    const char *dns = NULL, *confdir = NULL;
    int timeout = 0, repeat = 1, linger = 0, lmtp = 0;
    log_init("petrel", "smtp");
    if (argc >= 2 && strcmp(argv[1], "--make-queue-file") == 0)
        return make_queue_file(argc - 2, argv + 2);
    /* --config and --lmtp first: the other options override what they bind */
    for (int k = 1; k < argc && strncmp(argv[k], "--", 2) == 0; k++) {
        if (strcmp(argv[k], "--lmtp") == 0)
            lmtp = 1;
        else if (strcmp(argv[k], "--config") == 0 && k + 1 < argc)
            confdir = argv[++k];
        else if (strcmp(argv[k], "--linger") != 0)
            k++;
    }
    if (bind_settings(confdir, lmtp, &set) < 0) {
        free_settings();
        return 1;
    }
    /* this host's name would leak into the tests: a fixed one, unless
     * main.cf gave the client a HELO name of its own */
    if (strcmp(set.helo_name, set.myhostname) == 0)
        set.helo_name = "petrel-client.test";
    set.myhostname = "petrel-client.test";
    int i = 1;
    for (; i < argc && strncmp(argv[i], "--", 2) == 0; i++) {
        const char *o = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(o, "--lmtp") == 0)
            continue;
        if (strcmp(o, "--linger") == 0) {
            linger = 1;
            continue;
        }
        if (v == NULL)
            usage();
        i++;
        if (strcmp(o, "--config") == 0)
            continue;
        if (strcmp(o, "--tls") == 0) {
            if (smtp_tls_level_parse(v, &set.tls_level) < 0)
                usage();
        } else if (strcmp(o, "--cafile") == 0)
            set.tls_cafile = v;
        else if (strcmp(o, "--dns") == 0)
            dns = v;
        else if (strcmp(o, "--myhostname") == 0) {
            if (strcmp(set.helo_name, set.myhostname) == 0)
                set.helo_name = v;
            set.myhostname = v;
        } else if (strcmp(o, "--helo") == 0)
            set.helo_name = v;
        else if (strcmp(o, "--timeout") == 0)
            timeout = atoi(v);
        else if (strcmp(o, "--cache-time") == 0)
            set.connection_cache_time = (unsigned)atoi(v);
        else if (strcmp(o, "--repeat") == 0)
            repeat = atoi(v);
        else if (strcmp(o, "--port") == 0)
            set.default_port = (unsigned)atoi(v);
        else
            usage();
    }
    if (argc - i != 2)
        usage();
    const char *qfile = argv[i], *nexthop = argv[i + 1];
    if (timeout > 0)
        set.connect_timeout = set.helo_timeout = set.starttls_timeout = set.mail_timeout = set.rcpt_timeout =
            set.data_timeout = set.data_xfer_timeout = set.data_done_timeout = set.rset_timeout =
                set.quit_timeout = (unsigned)timeout;
    /* without --config the tool keeps its old default: no connection cache */
    if (confdir == NULL && !repeat_given(argc, argv))
        set.connection_cache_time = 0;

    /* One way out, failures included: everything made here is freed before
     * the process exits (the sanitizer run checks every process for leaks). */
    int status = 1;
    petrel_pool *pool = NULL;
    struct event_base *base = NULL;
    struct dns_resolver *resolver = NULL;
    struct workq *workq = NULL;
    struct smtp_client *client = NULL;
    char *error = NULL;
    int fd = open(qfile, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        fprintf(stderr, "smtp-deliver: %s: %s\n", qfile, strerror(errno));
        goto out;
    }
    pool = petrel_pool_create(0);
    struct queue_message msg;
    const char *base_name = strrchr(qfile, '/') ? strrchr(qfile, '/') + 1 : qfile;
    if (queue_message_read_fd(fd, base_name, pool, &msg, &error) < 0) {
        /* the message comes from the pool */
        fprintf(stderr, "smtp-deliver: %s: %s\n", qfile, error ? error : strerror(errno));
        error = NULL;
        goto out;
    }
    base = event_base_new();
    resolver = dns_resolver_create(base, dns, &error);
    if (resolver == NULL) {
        fprintf(stderr, "smtp-deliver: dns: %s\n", error);
        goto out;
    }
    set.dns = resolver;
    workq = workq_create(base, 2);
    set.workq = workq;
    client = smtp_client_create(base, &set, &error);
    if (client == NULL) {
        fprintf(stderr, "smtp-deliver: %s\n", error);
        goto out;
    }
    size_t n = msg.env.rcpt_count;
    size_t *index = petrel_pool_zalloc(pool, n * sizeof(*index));
    const char **addr = petrel_pool_zalloc(pool, n * sizeof(*addr));
    for (size_t k = 0; k < n; k++) {
        index[k] = k;
        addr[k] = msg.env.rcpts[k].address;
    }
    struct run r = {
        .base = base, .client = client, .repeat = repeat > 0 ? repeat : 1, .linger = linger,
        .cache_time = set.connection_cache_time,
        .job = { .queue_id = msg.id, .fd = fd, .msg = &msg, .sender = msg.env.sender, .nrcpt = n,
                 .rcpt_index = index, .rcpt_addr = addr, .nexthop = nexthop },
    };
    smtp_client_deliver(client, &r.job, on_done, &r);
    event_base_dispatch(base);
    {
        /* connections still open when the tool gave up waiting (a QUIT
         * reply that never came within smtp_quit_timeout) */
        struct smtp_client_stats st;
        smtp_client_get_stats(client, &st);
        printf("CLOSED open=%u\n", st.open);
        fflush(stdout);
    }
    status = 0;
out:
    free(error);
    if (client)
        smtp_client_free(client);
    if (workq)
        workq_destroy(workq);
    if (resolver)
        dns_resolver_free(resolver);
    if (base)
        event_base_free(base);
    if (pool)
        petrel_pool_destroy(pool);
    if (fd >= 0)
        close(fd);
    /* the settings pointed into the configuration: freed last */
    free_settings();
    return status;
}
