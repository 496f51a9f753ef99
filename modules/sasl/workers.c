/*
 * The sasl module's worker threads. petrel_run_blocking()'s pool
 * (module_thread_limit) is shared by every module: a saslauthd that takes
 * seconds per failure (PAM's delay) or a costly yescrypt would queue other
 * modules' work (SPF, DKIM) behind logins, and theirs would queue logins.
 * So the module keeps a few threads of its own; a job
 * is done on one of them and its completion is handed back to the loop
 * through a pipe that petrel_watch_fd() watches.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "sasl_int.h"

struct job {
    struct job *next;
    void (*work)(void *);
    void (*done)(void *);
    void *arg;
};

struct sasl_workers {
    pthread_mutex_t lock;
    pthread_cond_t cond;
    struct job *head, *tail;
    int stopping;
    pthread_t *threads;
    unsigned nthreads;
    int pipe_r, pipe_w;               /* finished jobs, one pointer per write */
    petrel_watch *watch;
};

static void *thread_main(void *arg)
{
    struct sasl_workers *w = arg;
    for (;;) {
        pthread_mutex_lock(&w->lock);
        while (w->head == NULL && !w->stopping)
            pthread_cond_wait(&w->cond, &w->lock);
        if (w->head == NULL) {
            pthread_mutex_unlock(&w->lock);
            return NULL;
        }
        struct job *j = w->head;
        w->head = j->next;
        if (w->head == NULL)
            w->tail = NULL;
        pthread_mutex_unlock(&w->lock);
        j->work(j->arg);
        ssize_t n;
        do
            n = write(w->pipe_w, &j, sizeof(j));
        while (n < 0 && errno == EINTR);
    }
}

static void finished(int fd, int events, void *arg)
{
    (void)events;
    (void)arg;
    struct job *jobs[64];
    ssize_t n = read(fd, jobs, sizeof(jobs));
    for (ssize_t i = 0; n > 0 && i < n / (ssize_t)sizeof(jobs[0]); i++) {
        jobs[i]->done(jobs[i]->arg);
        free(jobs[i]);
    }
}

struct sasl_workers *sasl_workers_create(petrel_module *m, unsigned threads, const char **error)
{
    struct sasl_workers *w = calloc(1, sizeof(*w));
    int p[2];
    if (w == NULL || pipe2(p, O_CLOEXEC) != 0) {
        free(w);
        *error = "cannot create the worker threads' pipe";
        return NULL;
    }
    /* Pointer-sized writes to a pipe are atomic; the read end is non-blocking. */
    fcntl(p[0], F_SETFL, O_NONBLOCK);
    w->pipe_r = p[0];
    w->pipe_w = p[1];
    pthread_mutex_init(&w->lock, NULL);
    pthread_cond_init(&w->cond, NULL);
    w->watch = petrel_watch_fd(m, w->pipe_r, PETREL_WATCH_READ, finished, w);
    if (w->watch == NULL) {
        *error = "no event loop for the worker threads";
        sasl_workers_destroy(w);
        return NULL;
    }
    w->threads = calloc(threads ? threads : 1, sizeof(pthread_t));
    for (unsigned i = 0; i < (threads ? threads : 1); i++) {
        if (pthread_create(&w->threads[i], NULL, thread_main, w) != 0)
            break;
        w->nthreads++;
    }
    if (w->nthreads == 0) {
        *error = "cannot start worker threads";
        sasl_workers_destroy(w);
        return NULL;
    }
    return w;
}

void sasl_workers_destroy(struct sasl_workers *w)
{
    if (w == NULL)
        return;
    pthread_mutex_lock(&w->lock);
    w->stopping = 1;
    pthread_cond_broadcast(&w->cond);
    pthread_mutex_unlock(&w->lock);
    for (unsigned i = 0; i < w->nthreads; i++)
        pthread_join(w->threads[i], NULL);
    /* Jobs finished but not collected: their completions run now, on the loop's thread. */
    finished(w->pipe_r, 0, w);
    if (w->watch)
        petrel_watch_cancel(w->watch);
    close(w->pipe_r);
    close(w->pipe_w);
    free(w->threads);
    pthread_cond_destroy(&w->cond);
    pthread_mutex_destroy(&w->lock);
    free(w);
}

int sasl_workers_run(struct sasl_workers *w, void (*work)(void *), void (*done)(void *), void *arg)
{
    struct job *j = calloc(1, sizeof(*j));
    if (w == NULL || j == NULL) {
        free(j);
        return -1;
    }
    j->work = work;
    j->done = done;
    j->arg = arg;
    pthread_mutex_lock(&w->lock);
    if (w->tail)
        w->tail->next = j;
    else
        w->head = j;
    w->tail = j;
    pthread_cond_signal(&w->cond);
    pthread_mutex_unlock(&w->lock);
    return 0;
}

/* ------------------------------------------------------------------ */
/* base64                                                              */

static const char b64tab[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

char *sasl_b64_encode(const unsigned char *in, size_t len)
{
    char *out = malloc((len + 2) / 3 * 4 + 1), *o = out;
    if (out == NULL)
        abort();
    for (size_t i = 0; i < len; i += 3) {
        unsigned v = (unsigned)in[i] << 16 | (i + 1 < len ? (unsigned)in[i + 1] << 8 : 0) |
                     (i + 2 < len ? in[i + 2] : 0);
        *o++ = b64tab[v >> 18 & 63];
        *o++ = b64tab[v >> 12 & 63];
        *o++ = i + 1 < len ? b64tab[v >> 6 & 63] : '=';
        *o++ = i + 2 < len ? b64tab[v & 63] : '=';
    }
    *o = '\0';
    return out;
}

static int b64val(int c)
{
    const char *p = c ? strchr(b64tab, c) : NULL;
    return p ? (int)(p - b64tab) : -1;
}

long sasl_b64_decode(const char *in, size_t len, unsigned char *out)
{
    size_t o = 0;
    if (len % 4)
        return -1;
    for (size_t i = 0; i < len; i += 4) {
        int v[4];
        for (int k = 0; k < 4; k++) {
            v[k] = in[i + k] == '=' ? -2 : b64val((unsigned char)in[i + k]);
            if (v[k] == -1 || (v[k] == -2 && (i + 4 != len || k < 2)))
                return -1;
        }
        if (v[2] == -2 && v[3] != -2)
            return -1;
        out[o++] = (unsigned char)(v[0] << 2 | v[1] >> 4);
        if (v[2] >= 0)
            out[o++] = (unsigned char)((v[1] & 15) << 4 | v[2] >> 2);
        if (v[3] >= 0)
            out[o++] = (unsigned char)((v[2] & 3) << 6 | v[3]);
    }
    return (long)o;
}

void sasl_answer(petrel_sasl_request *r, petrel_sasl_status st, const void *data, size_t len, const char *username,
                 const char *reason)
{
    petrel_sasl_answer a = { PETREL_SASL_ANSWER_INIT, st, data, len, username, reason };
    petrel_sasl_reply(r, &a);
}
