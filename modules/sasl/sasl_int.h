/*
 * Internals shared by the sasl module's files: the three server back-ends
 * (dovecot.c, cyrus.c, table.c), the module's own worker threads
 * (workers.c) and base64.
 */
#ifndef PETREL_MODULES_SASL_INT_H
#define PETREL_MODULES_SASL_INT_H

#include <stddef.h>

#include <petrel/plugin.h>

/* The module's per-process state (petrel_module_data). */
struct sasl_module {
    petrel_module *m;
    struct sasl_workers *workers;    /* blocking work: crypt(3), libsasl2 */
    struct dovecot_client *dovecot;  /* the connection to Dovecot's auth service */
    struct sasl_table *tables;       /* smtpd_sasl_type = table: the paths opened (table.c) */
    int cyrus_ready;
    struct sasl_guard *guard;        /* sasl_guard_enable (guard.c) */
};

static inline struct sasl_module *sasl_module_of(petrel_module *m)
{
    return petrel_module_data(m);
}

/* workers.c: the module's own threads, so that a slow saslauthd or a
 * costly hash never waits behind, or holds up, the queue's commits. */
struct sasl_workers *sasl_workers_create(petrel_module *m, unsigned threads, const char **error);
void sasl_workers_destroy(struct sasl_workers *w);
/* work(arg) on a thread, then done(arg) on the loop. 0, or -1. */
int sasl_workers_run(struct sasl_workers *w, void (*work)(void *), void (*done)(void *), void *arg);

/* base64 (RFC 4648) */
char *sasl_b64_encode(const unsigned char *in, size_t len);             /* malloc'd */
long sasl_b64_decode(const char *in, size_t inlen, unsigned char *out); /* out: inlen bytes; -1 bad */

/* Each back-end's petrel_sasl_server callbacks (sasl.c lists them). */
#define SASL_SERVER_FUNCS(kind)                                                                               \
    void sasl_##kind##_mechanisms(petrel_sasl_request *r, const petrel_sasl_context *c);                     \
    void sasl_##kind##_start(petrel_sasl_request *r, const petrel_sasl_context *c, const char *mech,        \
                             const unsigned char *initial, size_t len, void **state);                          \
    void sasl_##kind##_step(petrel_sasl_request *r, const petrel_sasl_context *c, void *state,              \
                            const unsigned char *resp, size_t len);                                            \
    void sasl_##kind##_end(const petrel_sasl_context *c, void *state);                                       \
    void sasl_##kind##_fini(struct sasl_module *sm);
SASL_SERVER_FUNCS(dovecot)
SASL_SERVER_FUNCS(cyrus)
SASL_SERVER_FUNCS(table)
/* table.c: smtpd_sasl_path checked where the configuration is (petreld -n, start). */
int sasl_table_check_path(petrel_module *m, const char *path, petrel_pool *pool, const char **error);
#define SASL_SERVER_ENTRY(kind)                                                                               \
    { PETREL_SASL_SERVER_INIT, .name = #kind, .mechanisms = sasl_##kind##_mechanisms,                        \
      .start = sasl_##kind##_start, .step = sasl_##kind##_step, .end = sasl_##kind##_end }

/* One answer, written the short way. */
void sasl_answer(petrel_sasl_request *r, petrel_sasl_status st, const void *data, size_t len,
                 const char *username, const char *reason);

#endif
