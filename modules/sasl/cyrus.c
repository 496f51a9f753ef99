/*
 * smtpd_sasl_type = cyrus: Cyrus libsasl2, as Postfix's xsasl_cyrus_server
 * uses it. smtpd_sasl_path is the application name (default "smtpd"), so
 * libsasl2 reads smtpd.conf (from sasl_cyrus_config_path, Postfix's
 * cyrus_sasl_config_path, or its default /etc/sasl2 and /usr/lib/sasl2):
 * `pwcheck_method: saslauthd` (then saslauthd checks PLAIN and LOGIN) or
 * `auxprop` with `auxprop_plugin: sasldb` (any mechanism, sasldb2 made with
 * saslpasswd2), `mech_list: ...`.
 *
 * libsasl2 only blocks (saslauthd is a blocking socket; PAM behind it may
 * sleep seconds after a failure), so sasl_server_start and
 * sasl_server_step run on the module's own threads, one step at a time per
 * exchange. Listing mechanisms and creating a connection object stay on
 * the loop: they read no file and talk to nobody. libsasl2 is given
 * pthread mutexes (sasl_set_mutex), since several threads use it at once.
 *
 * An exchange whose end() comes while its step is on a thread (a timeout)
 * is marked; the thread's completion disposes of it.
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sasl/sasl.h>

#include "sasl_int.h"

static pthread_mutex_t init_lock = PTHREAD_MUTEX_INITIALIZER;
static int cyrus_initialised;   /* libsasl2's own state is per process: so is this */
static char *config_path;

struct cy_exchange {
    struct sasl_module *sm;
    sasl_conn_t *conn;
    petrel_sasl_request *r;
    int busy;                         /* a step is on a thread */
    int ended;                        /* end() came meanwhile: the completion disposes */
    /* the step */
    char *mech;
    unsigned char *in;
    size_t inlen;
    int first, has_in;
    int result;
    char *out;
    size_t outlen;
    char *user;
    char detail[200];
};

static void *mutex_alloc(void)
{
    pthread_mutex_t *m = malloc(sizeof(*m));
    if (m)
        pthread_mutex_init(m, NULL);
    return m;
}
static int mutex_lock(void *m) { return pthread_mutex_lock(m) ? SASL_FAIL : SASL_OK; }
static int mutex_unlock(void *m) { return pthread_mutex_unlock(m) ? SASL_FAIL : SASL_OK; }
static void mutex_free(void *m)
{
    pthread_mutex_destroy(m);
    free(m);
}

static int get_conf_path(void *context, const char **path)
{
    (void)context;
    *path = config_path;
    return SASL_OK;
}

static int cyrus_setup(petrel_module *m, const char *app, const char **why)
{
    pthread_mutex_lock(&init_lock);
    if (!cyrus_initialised) {
        const char *cp = petrel_param_string(m, "sasl_cyrus_config_path");
        static sasl_callback_t with_path[] = { { SASL_CB_GETCONFPATH, (int (*)(void))(void (*)(void))get_conf_path, NULL },
                                               { SASL_CB_LIST_END, NULL, NULL } };
        static sasl_callback_t none[] = { { SASL_CB_LIST_END, NULL, NULL } };
        free(config_path);
        config_path = cp && *cp ? strdup(cp) : NULL;
        sasl_set_mutex(mutex_alloc, mutex_lock, mutex_unlock, mutex_free);
        int rc = sasl_server_init(config_path ? with_path : none, app);
        if (rc != SASL_OK) {
            pthread_mutex_unlock(&init_lock);
            *why = sasl_errstring(rc, NULL, NULL);
            return -1;
        }
        cyrus_initialised = 1;
    }
    pthread_mutex_unlock(&init_lock);
    return 0;
}

static sasl_conn_t *new_conn(const petrel_sasl_context *c, const char **why)
{
    const char *app = c->path && *c->path ? c->path : "smtpd";
    if (cyrus_setup(c->module, app, why) != 0)
        return NULL;
    char local[96], remote[96];
    snprintf(local, sizeof(local), "%s;%s", c->server_addr, c->server_port);
    snprintf(remote, sizeof(remote), "%s;%s", c->client_addr, c->client_port);
    sasl_conn_t *conn = NULL;
    int rc = sasl_server_new(c->service, NULL, *c->local_domain ? c->local_domain : NULL,
                             *c->server_addr ? local : NULL, *c->client_addr ? remote : NULL, NULL, 0, &conn);
    if (rc != SASL_OK) {
        *why = sasl_errstring(rc, NULL, NULL);
        return NULL;
    }
    /* Postfix's security options, which libsasl2 applies itself too. */
    sasl_security_properties_t sp;
    memset(&sp, 0, sizeof(sp));
    sp.max_ssf = 0;   /* no SASL security layer: TLS protects the session, as in Postfix */
    sp.maxbufsize = 0;
    if (c->security & PETREL_SASL_PLAINTEXT)
        sp.security_flags |= SASL_SEC_NOPLAINTEXT;
    if (c->security & PETREL_SASL_ACTIVE)
        sp.security_flags |= SASL_SEC_NOACTIVE;
    if (c->security & PETREL_SASL_DICTIONARY)
        sp.security_flags |= SASL_SEC_NODICTIONARY;
    if (c->security & PETREL_SASL_ANONYMOUS)
        sp.security_flags |= SASL_SEC_NOANONYMOUS;
    sasl_setprop(conn, SASL_SEC_PROPS, &sp);
    return conn;
}

/* What the core filters by: the usual properties of the mechanisms
 * libsasl2 ships (it filters by its own knowledge too). */
static unsigned properties_of(const char *mech)
{
    if (strcmp(mech, "PLAIN") == 0 || strcmp(mech, "LOGIN") == 0)
        return PETREL_SASL_PLAINTEXT;
    if (strcmp(mech, "ANONYMOUS") == 0)
        return PETREL_SASL_ANONYMOUS;
    if (strcmp(mech, "CRAM-MD5") == 0 || strcmp(mech, "DIGEST-MD5") == 0)
        return PETREL_SASL_DICTIONARY;
    if (strncmp(mech, "SCRAM-", 6) == 0)
        return PETREL_SASL_MUTUAL_AUTH;
    return 0;
}

void sasl_cyrus_mechanisms(petrel_sasl_request *r, const petrel_sasl_context *c)
{
    const char *why = NULL;
    sasl_conn_t *conn = new_conn(c, &why);
    if (conn == NULL) {
        petrel_module_log(c->module, PETREL_LOG_WARNING, "cyrus: %s", why);
        sasl_answer(r, PETREL_SASL_TEMPFAIL, NULL, 0, NULL, why);
        return;
    }
    const char *list = NULL;
    unsigned len = 0;
    int count = 0;
    if (sasl_listmech(conn, NULL, "", " ", "", &list, &len, &count) != SASL_OK || list == NULL) {
        sasl_dispose(&conn);
        sasl_answer(r, PETREL_SASL_TEMPFAIL, NULL, 0, NULL, "no SASL authentication mechanisms");
        return;
    }
    petrel_sasl_mechanism mechs[32];
    char names[32][24];
    size_t n = 0;
    for (const char *p = list; *p && n < 32;) {
        size_t l = strcspn(p, " ");
        if (l > 0 && l < sizeof(names[0])) {
            memcpy(names[n], p, l);
            names[n][l] = '\0';
            mechs[n].name = names[n];
            mechs[n].properties = properties_of(names[n]);
            n++;
        }
        p += l;
        p += strspn(p, " ");
    }
    sasl_dispose(&conn);
    petrel_sasl_offer(r, mechs, n);
}

static void step_work(void *arg)
{
    struct cy_exchange *x = arg;
    const char *out = NULL;
    unsigned outlen = 0;
    if (x->first)
        x->result = sasl_server_start(x->conn, x->mech, x->has_in ? (const char *)x->in : NULL,
                                      (unsigned)x->inlen, &out, &outlen);
    else
        x->result = sasl_server_step(x->conn, (const char *)x->in, (unsigned)x->inlen, &out, &outlen);
    if (x->in) {
        explicit_bzero(x->in, x->inlen);
        free(x->in);
        x->in = NULL;
    }
    free(x->out);
    x->out = NULL;
    x->outlen = 0;
    if (out && outlen) {
        x->out = malloc(outlen);
        if (x->out) {
            memcpy(x->out, out, outlen);
            x->outlen = outlen;
        }
    }
    const void *user = NULL;
    free(x->user);
    x->user = NULL;
    if (sasl_getprop(x->conn, SASL_USERNAME, &user) == SASL_OK && user)
        x->user = strdup(user);
    if (x->result != SASL_OK && x->result != SASL_CONTINUE)
        snprintf(x->detail, sizeof(x->detail), "%s", sasl_errstring(x->result, NULL, NULL));
}

static void exchange_free(struct cy_exchange *x)
{
    if (x->conn)
        sasl_dispose(&x->conn);
    free(x->mech);
    free(x->out);
    free(x->user);
    if (x->in) {
        explicit_bzero(x->in, x->inlen);
        free(x->in);
    }
    free(x);
}

static void step_done(void *arg)
{
    struct cy_exchange *x = arg;
    x->busy = 0;
    petrel_sasl_request *r = x->r;
    x->r = NULL;
    if (x->ended) {
        /* nobody waits: the request went stale with the exchange */
        exchange_free(x);
        return;
    }
    switch (x->result) {
    case SASL_OK:
        sasl_answer(r, PETREL_SASL_SUCCESS, x->out, x->outlen, x->user, NULL);
        break;
    case SASL_CONTINUE:
        sasl_answer(r, PETREL_SASL_CHALLENGE, x->out, x->outlen, NULL, NULL);
        break;
    case SASL_TRYAGAIN:
    case SASL_UNAVAIL:
        sasl_answer(r, PETREL_SASL_TEMPFAIL, NULL, 0, x->user, x->detail);
        break;
    default:
        sasl_answer(r, PETREL_SASL_FAILURE, NULL, 0, x->user, x->detail);
        break;
    }
}

static void run_step(struct cy_exchange *x, petrel_sasl_request *r, const unsigned char *data, size_t len, int has)
{
    x->r = r;
    x->has_in = has;
    x->inlen = len;
    x->in = malloc(len + 1);
    if (x->in == NULL)
        abort();
    if (len)
        memcpy(x->in, data, len);
    x->in[len] = '\0';
    x->busy = 1;
    if (sasl_workers_run(x->sm->workers, step_work, step_done, x) != 0) {
        x->busy = 0;
        x->r = NULL;
        sasl_answer(r, PETREL_SASL_TEMPFAIL, NULL, 0, NULL, "no worker thread");
    }
}

void sasl_cyrus_start(petrel_sasl_request *r, const petrel_sasl_context *c, const char *mech,
                      const unsigned char *initial, size_t len, void **state)
{
    const char *why = NULL;
    sasl_conn_t *conn = new_conn(c, &why);
    if (conn == NULL) {
        sasl_answer(r, PETREL_SASL_TEMPFAIL, NULL, 0, NULL, why);
        return;
    }
    struct cy_exchange *x = calloc(1, sizeof(*x));
    if (x == NULL)
        abort();
    x->sm = sasl_module_of(c->module);
    x->conn = conn;
    x->mech = strdup(mech);
    x->first = 1;
    *state = x;
    run_step(x, r, initial, len, initial != NULL);
}

void sasl_cyrus_step(petrel_sasl_request *r, const petrel_sasl_context *c, void *state, const unsigned char *resp,
                     size_t len)
{
    (void)c;
    struct cy_exchange *x = state;
    if (x == NULL || x->busy) {
        sasl_answer(r, PETREL_SASL_TEMPFAIL, NULL, 0, NULL, "authentication step out of order");
        return;
    }
    x->first = 0;
    run_step(x, r, resp, len, 1);
}

void sasl_cyrus_end(const petrel_sasl_context *c, void *state)
{
    (void)c;
    struct cy_exchange *x = state;
    if (x == NULL)
        return;
    if (x->busy) {
        x->ended = 1;   /* the thread's completion frees it */
        return;
    }
    exchange_free(x);
}

void sasl_cyrus_fini(struct sasl_module *sm)
{
    (void)sm;   /* libsasl2's process state stays until exit (sasl_server_done is not re-entrant-safe) */
}
