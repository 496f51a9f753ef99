/*
 * blockmod: a module whose blocking work holds every module thread for as
 * long as the test wants, to show that petrel_run_blocking has threads of
 * its own (a queue commit never waits behind module work) and that a stop
 * does not wait for module work that does not finish.
 *
 * Restriction "check_blockmod" (no arguments) starts blockmod_jobs calls of
 * petrel_run_blocking and answers DUNNO at once. Each job connects to the
 * unix socket blockmod_socket (the test listens there) and reads until the
 * test closes the connection: the test knows a job is on a thread when it
 * accepts its connection, and decides when it ends. Completions are logged
 * ("blockmod: job done, N still out"), and so is fini, so the test can
 * tell a stop that abandoned work (no fini) from one that waited.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <petrel/plugin.h>

static const petrel_param params[] = {
    { PETREL_PARAM_INIT, .name = "blockmod_socket", .type = PETREL_PARAM_STRING, .default_value = "",
      .help = "the unix socket each job connects to and reads from until it is closed" },
    { PETREL_PARAM_INIT, .name = "blockmod_jobs", .type = PETREL_PARAM_INT, .default_value = "1", .min = 1,
      .max = 64, .help = "blocking calls started per check" },
    { .name = NULL },
};

struct blockmod {
    char path[sizeof(((struct sockaddr_un *)0)->sun_path)];
    unsigned out;   /* jobs not yet completed */
};

struct job {
    petrel_module *m;
    char path[sizeof(((struct sockaddr_un *)0)->sun_path)];
};

/* On a worker thread: no Petrel function here. */
static void hold(void *arg)
{
    struct job *j = arg;
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return;
    struct sockaddr_un sun = { .sun_family = AF_UNIX };
    memcpy(sun.sun_path, j->path, sizeof(sun.sun_path));
    if (connect(fd, (struct sockaddr *)&sun, sizeof(sun)) == 0) {
        char buf[64];
        ssize_t n;
        do
            n = read(fd, buf, sizeof(buf));
        while (n > 0 || (n < 0 && errno == EINTR));
    }
    close(fd);
}

static void held(void *arg)
{
    struct job *j = arg;
    struct blockmod *b = petrel_module_data(j->m);
    b->out--;
    petrel_module_log(j->m, PETREL_LOG_INFO, "job done, %u still out", b->out);
    free(j);
}

static int compile(petrel_module *m, const char *const *args, void **state, petrel_pool *pool, const char **error)
{
    (void)m;
    (void)args;
    (void)pool;
    (void)error;
    *state = NULL;
    return 0;
}

static petrel_verdict check(petrel_session *s, void *state)
{
    (void)state;
    petrel_module *m = petrel_session_module(s);
    struct blockmod *b = petrel_module_data(m);
    long long jobs = petrel_param_int(m, "blockmod_jobs");
    for (long long i = 0; i < jobs; i++) {
        struct job *j = calloc(1, sizeof(*j));
        if (j == NULL)
            break;
        j->m = m;
        memcpy(j->path, b->path, sizeof(j->path));
        if (petrel_run_blocking(m, hold, held, j) != 0) {
            free(j);
            break;
        }
        b->out++;
    }
    petrel_log(s, PETREL_LOG_INFO, "%u jobs out", b->out);
    return PETREL_CONTINUE;
}

static int init(petrel_module *m, const char **error)
{
    struct blockmod *b = calloc(1, sizeof(*b));
    if (b == NULL) {
        *error = "out of memory";
        return -1;
    }
    snprintf(b->path, sizeof(b->path), "%s", petrel_param_string(m, "blockmod_socket"));
    petrel_module_set_data(m, b);
    return 0;
}

static void fini(petrel_module *m)
{
    struct blockmod *b = petrel_module_data(m);
    petrel_module_log(m, PETREL_LOG_INFO, "fini with %u jobs out", b ? b->out : 0);
    free(b);
}

static const petrel_restriction restrictions[] = {
    { PETREL_RESTRICTION_INIT, .name = "check_blockmod", .nargs = 0, .compile = compile, .check = check },
    { .name = NULL },
};

const petrel_module_desc petrel_module_descriptor = {
    PETREL_MODULE_INIT,
    .name = "blockmod",
    .version = "1.0",
    .description = "blocking work that holds every module thread (tests)",
    .params = params,
    .init = init,
    .fini = fini,
    .restrictions = restrictions,
};
