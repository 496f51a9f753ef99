/*
 * The stolen-account guard (sasl_guard_enable): a submission login whose
 * password was stolen suddenly sends far more mail, to far more people,
 * than its owner ever does. Per login, over sasl_guard_window, the guard
 * counts messages and distinct recipients (a 1024-bit linear-counting
 * sketch per window, so memory stays fixed whatever the recipients), and
 * keeps the login's own usual figures (an average over its past windows).
 * A window that passes both an absolute floor (sasl_guard_min_messages,
 * sasl_guard_min_recipients) and sasl_guard_factor times the usual trips
 * the guard for that login:
 *
 *   - the message that tripped it and every later one already in flight go
 *     to the hold queue (HOLD at end of data);
 *   - the login's next transactions get 451 4.7.1 at MAIL;
 *   - the log says why: "sasl guard: login X held: N messages to about M
 *     recipients within 1h (usually B and C)", and the counters
 *     petrel_sasl_guard_logins_held_total and _messages_held_total grow.
 *
 * Release is the postmaster's review of the held mail with the queue
 * commands petrelctl already has: `petrelctl queue list` shows it (held,
 * `!`), `petrelctl queue release ID...` sends it on, `petrelctl queue
 * delete ID...` drops it. When none of the login's held messages is left in
 * hold/, the next MAIL from it releases the login (logged). `petrelctl sasl
 * held` lists the held logins and their held messages, and `petrelctl sasl
 * release LOGIN` lets a login send again at once (its held messages stay
 * in hold/ for review): module commands, run by any worker, since the
 * state is the node's shared file.
 *
 * State is shared by every smtpd worker of the node: a file-backed
 * MAP_SHARED table (sasl_guard_state_file; the plugin API has no shared
 * memory for modules, and the workers are forked before init) of fixed
 * size, guarded by a process-shared robust mutex, created under flock(2).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "guard.h"

#define MAGIC 0x50657247554152ULL   /* "PerGUAR" */
#define SLOTS 4096
#define WAYS 8
#define SKETCH_BITS 1024
#define HELD_MAX 16
#define KEY_MAX 96
#define QID_MAX 32

struct slot {
    uint64_t h1, h2;                  /* the login's hash; 0,0: empty */
    char login[KEY_MAX];
    int64_t window_start;             /* seconds */
    uint32_t messages;                /* this window */
    uint64_t sketch[SKETCH_BITS / 64];
    double usual_messages, usual_recipients;   /* average of past windows */
    uint32_t windows;                 /* past windows averaged (at most 8 weigh) */
    int64_t last_use;
    uint32_t tripped;
    uint32_t nheld;
    char held[HELD_MAX][QID_MAX];     /* queue IDs held for review */
};

struct header {
    uint64_t magic, layout;
    pthread_mutex_t lock;
};

struct sasl_guard {
    struct header *h;
    struct slot *slots;
    size_t map_size;
    long long window, min_messages, min_recipients, factor;
    char *hold_dir;
    petrel_metric *logins_held, *messages_held, *logins_released;   /* counters (NULL: none) */
};

static void hash_login(const char *s, uint64_t *a, uint64_t *b)
{
    uint64_t x = 0xcbf29ce484222325ULL, y = 0x9e3779b97f4a7c15ULL;
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        unsigned c = *p >= 'A' && *p <= 'Z' ? *p + 32u : *p;   /* logins compared without case */
        x = (x ^ c) * 0x100000001b3ULL;
        y = (y + c) * 0xff51afd7ed558ccdULL;
        y ^= y >> 29;
    }
    *a = x | 1;   /* never 0: 0,0 marks an empty slot */
    *b = y;
}

static void lock(struct sasl_guard *g)
{
    if (pthread_mutex_lock(&g->h->lock) == EOWNERDEAD)
        pthread_mutex_consistent(&g->h->lock);
}

static void unlock(struct sasl_guard *g)
{
    pthread_mutex_unlock(&g->h->lock);
}

/* The login's slot (made when create), or NULL. Under the lock. */
static struct slot *find(struct sasl_guard *g, const char *login, int create, int64_t now)
{
    uint64_t a, b;
    hash_login(login, &a, &b);
    struct slot *set = &g->slots[(a % (SLOTS / WAYS)) * WAYS], *victim = NULL;
    for (int i = 0; i < WAYS; i++) {
        if (set[i].h1 == a && set[i].h2 == b)
            return &set[i];
        if (!create || set[i].tripped)
            continue;   /* a held login is never evicted */
        if (victim == NULL || set[i].h1 == 0 || (victim->h1 != 0 && set[i].last_use < victim->last_use))
            victim = &set[i];
    }
    if (victim == NULL)
        return NULL;
    memset(victim, 0, sizeof(*victim));
    victim->h1 = a;
    victim->h2 = b;
    snprintf(victim->login, sizeof(victim->login), "%s", login);
    victim->window_start = now;
    return victim;
}

static double distinct(const struct slot *s)
{
    unsigned set = 0;
    for (int i = 0; i < SKETCH_BITS / 64; i++)
        set += (unsigned)__builtin_popcountll(s->sketch[i]);
    if (set >= SKETCH_BITS)
        return SKETCH_BITS * 8.0;
    return -(double)SKETCH_BITS * log((double)(SKETCH_BITS - set) / SKETCH_BITS);
}

/* Closes the window when it is over: its figures join the usual ones. */
static void roll(struct sasl_guard *g, struct slot *s, int64_t now)
{
    if (now - s->window_start < g->window)
        return;
    double w = s->windows < 8 ? s->windows : 8;
    s->usual_messages = (s->usual_messages * w + s->messages) / (w + 1);
    s->usual_recipients = (s->usual_recipients * w + distinct(s)) / (w + 1);
    s->windows++;
    /* idle windows count as quiet ones */
    int64_t idle = (now - s->window_start) / g->window - 1;
    for (int64_t k = 0; k < idle && k < 8; k++) {
        w = s->windows < 8 ? s->windows : 8;
        s->usual_messages = s->usual_messages * w / (w + 1);
        s->usual_recipients = s->usual_recipients * w / (w + 1);
        s->windows++;
    }
    s->window_start = now;
    s->messages = 0;
    memset(s->sketch, 0, sizeof(s->sketch));
}

static int held_left(struct sasl_guard *g, const struct slot *s)
{
    for (uint32_t i = 0; i < s->nheld; i++) {
        char path[4200];
        snprintf(path, sizeof(path), "%s/%s", g->hold_dir, s->held[i]);
        if (access(path, F_OK) == 0)
            return 1;
    }
    return 0;
}

petrel_verdict sasl_guard_mail(petrel_session *ps, const char *sender)
{
    (void)sender;
    struct sasl_module *sm = sasl_module_of(petrel_session_module(ps));
    struct sasl_guard *g = sm ? sm->guard : NULL;
    const char *login = petrel_sasl_username(ps);
    if (g == NULL || login == NULL)
        return PETREL_CONTINUE;
    int held = 0;
    lock(g);
    struct slot *s = find(g, login, 0, time(NULL));
    if (s && s->tripped) {
        if (held_left(g, s)) {
            held = 1;
        } else {
            s->tripped = 0;
            s->nheld = 0;
            /* a fresh start: what tripped the guard is not the login's usual */
            s->messages = 0;
            memset(s->sketch, 0, sizeof(s->sketch));
            s->window_start = time(NULL);
            petrel_log(ps, PETREL_LOG_INFO, "sasl guard: login %s released (its held mail was released or "
                       "removed)", login);
            petrel_metric_add(g->logins_released, NULL, 1);
        }
    }
    unlock(g);
    if (held) {
        petrel_log(ps, PETREL_LOG_WARNING, "sasl guard: login %s is held: mail refused until the postmaster "
                   "reviews its held messages", login);
        petrel_set_reply(ps, 451, "4.7.1", "Error: unusual amount of mail from this login: held for review by "
                         "the postmaster, try again later");
        return PETREL_TEMPFAIL;
    }
    return PETREL_CONTINUE;
}

petrel_verdict sasl_guard_rcpt(petrel_session *ps, const char *rcpt)
{
    struct sasl_module *sm = sasl_module_of(petrel_session_module(ps));
    struct sasl_guard *g = sm ? sm->guard : NULL;
    const char *login = petrel_sasl_username(ps);
    if (g == NULL || login == NULL || rcpt == NULL)
        return PETREL_CONTINUE;
    uint64_t a, b;
    hash_login(rcpt, &a, &b);
    int64_t now = time(NULL);
    lock(g);
    struct slot *s = find(g, login, 1, now);
    if (s) {
        roll(g, s, now);
        s->sketch[(b % SKETCH_BITS) / 64] |= 1ULL << (b % 64);
        s->last_use = now;
    }
    unlock(g);
    return PETREL_CONTINUE;
}

petrel_verdict sasl_guard_eom(petrel_session *ps)
{
    struct sasl_module *sm = sasl_module_of(petrel_session_module(ps));
    struct sasl_guard *g = sm ? sm->guard : NULL;
    const char *login = petrel_sasl_username(ps);
    if (g == NULL || login == NULL)
        return PETREL_CONTINUE;
    int64_t now = time(NULL);
    int hold = 0, tripped_now = 0;
    unsigned messages = 0;
    double rcpts = 0, usual_m = 0, usual_r = 0;
    lock(g);
    struct slot *s = find(g, login, 1, now);
    if (s) {
        roll(g, s, now);
        s->messages++;
        s->last_use = now;
        messages = s->messages;
        rcpts = distinct(s);
        usual_m = s->usual_messages;
        usual_r = s->usual_recipients;
        if (!s->tripped && ((messages > g->min_messages && messages > g->factor * usual_m) ||
                            (rcpts > g->min_recipients && rcpts > g->factor * usual_r))) {
            s->tripped = 1;
            tripped_now = 1;
        }
        if (s->tripped) {
            hold = 1;
            const char *qid = petrel_queue_id(ps);
            if (qid && s->nheld < HELD_MAX)
                snprintf(s->held[s->nheld++], QID_MAX, "%s", qid);
        }
    }
    unlock(g);
    if (tripped_now)
        petrel_metric_add(g->logins_held, NULL, 1);
    if (hold)
        petrel_metric_add(g->messages_held, NULL, 1);
    if (tripped_now)
        petrel_log(ps, PETREL_LOG_WARNING, "sasl guard: login %s held: %u messages to about %.0f recipients "
                   "within %llds (usually %.1f and %.1f): its mail goes to the hold queue until the postmaster "
                   "releases or removes it (petrelctl queue list / release / delete)", login, messages, rcpts,
                   g->window, usual_m, usual_r);
    if (hold) {
        petrel_quarantine(ps, "sasl guard: unusual amount of mail from this login");
        return PETREL_HOLD;
    }
    return PETREL_CONTINUE;
}


static uint64_t layout(void)
{
    return ((uint64_t)sizeof(struct slot) << 20) | SLOTS;
}

int sasl_guard_init(struct sasl_module *sm, const char **error)
{
    petrel_module *m = sm->m;
    if (!petrel_param_bool(m, "sasl_guard_enable"))
        return 0;
    const char *path = petrel_param_string(m, "sasl_guard_state_file");
    const char *queue = petrel_param_string(m, "sasl_guard_queue_directory");
    if (path == NULL || path[0] != '/' || queue == NULL || queue[0] != '/') {
        *error = "sasl_guard_state_file and sasl_guard_queue_directory must be absolute paths";
        return -1;
    }
    struct sasl_guard *g = calloc(1, sizeof(*g));
    if (g == NULL) {
        *error = "out of memory";
        return -1;
    }
    g->window = petrel_param_int(m, "sasl_guard_window");
    g->min_messages = petrel_param_int(m, "sasl_guard_min_messages");
    g->min_recipients = petrel_param_int(m, "sasl_guard_min_recipients");
    g->factor = petrel_param_int(m, "sasl_guard_factor");
    if (g->window < 60 || g->factor < 1) {
        free(g);
        *error = "sasl_guard_window must be at least 60s and sasl_guard_factor at least 1";
        return -1;
    }
    if (asprintf(&g->hold_dir, "%s/hold", queue) < 0)
        g->hold_dir = NULL;
    g->map_size = sizeof(struct header) + SLOTS * sizeof(struct slot);
    int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (fd < 0) {
        petrel_module_log(m, PETREL_LOG_ERROR, "sasl_guard_state_file %s: %s", path, strerror(errno));
        free(g->hold_dir);
        free(g);
        *error = "cannot open sasl_guard_state_file (see the log)";
        return -1;
    }
    flock(fd, LOCK_EX);
    struct stat st;
    int fresh = fstat(fd, &st) != 0 || (size_t)st.st_size != g->map_size;
    if (fresh && ftruncate(fd, 0) == 0 && ftruncate(fd, (off_t)g->map_size) != 0)
        fresh = -1;
    void *map = fresh < 0 ? MAP_FAILED : mmap(NULL, g->map_size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (map == MAP_FAILED) {
        flock(fd, LOCK_UN);
        close(fd);
        free(g->hold_dir);
        free(g);
        *error = "cannot map sasl_guard_state_file";
        return -1;
    }
    g->h = map;
    g->slots = (struct slot *)((char *)map + sizeof(struct header));
    if (fresh || g->h->magic != MAGIC || g->h->layout != layout()) {
        memset(map, 0, g->map_size);
        pthread_mutexattr_t attr;
        pthread_mutexattr_init(&attr);
        pthread_mutexattr_setpshared(&attr, PTHREAD_PROCESS_SHARED);
        pthread_mutexattr_setrobust(&attr, PTHREAD_MUTEX_ROBUST);
        pthread_mutex_init(&g->h->lock, &attr);
        pthread_mutexattr_destroy(&attr);
        g->h->layout = layout();
        g->h->magic = MAGIC;
    }
    flock(fd, LOCK_UN);
    close(fd);
    static const petrel_metric_def held = { PETREL_METRIC_DEF_INIT, .type = PETREL_METRIC_COUNTER,
                                            .name = "petrel_sasl_guard_logins_held_total",
                                            .help = "logins the stolen-account guard held" };
    static const petrel_metric_def messages = { PETREL_METRIC_DEF_INIT, .type = PETREL_METRIC_COUNTER,
                                                .name = "petrel_sasl_guard_messages_held_total",
                                                .help = "messages the stolen-account guard put in the hold queue" };
    static const petrel_metric_def released = { PETREL_METRIC_DEF_INIT, .type = PETREL_METRIC_COUNTER,
                                                .name = "petrel_sasl_guard_logins_released_total",
                                                .help = "held logins released once their held mail was reviewed" };
    g->logins_held = petrel_metric_register(m, &held);
    g->messages_held = petrel_metric_register(m, &messages);
    g->logins_released = petrel_metric_register(m, &released);
    sm->guard = g;
    return 0;
}

void sasl_guard_fini(struct sasl_module *sm)
{
    struct sasl_guard *g = sm->guard;
    if (g == NULL)
        return;
    munmap(g->h, g->map_size);
    free(g->hold_dir);
    free(g);
    sm->guard = NULL;
}

/* ------------------------------------------------------------------ */
/* petrelctl sasl held | release                                       */

static struct sasl_guard *command_guard(petrel_command_request *r)
{
    struct sasl_module *sm = sasl_module_of(petrel_command_module(r));
    if (sm == NULL || sm->guard == NULL) {
        petrel_command_print(r, "sasl: the stolen-account guard is off (sasl_guard_enable = no)");
        petrel_command_done(r, PETREL_COMMAND_FAILED);
        return NULL;
    }
    return sm->guard;
}

void sasl_guard_cmd_held(petrel_command_request *r, int argc, const char *const *argv)
{
    (void)argc;
    (void)argv;
    struct sasl_guard *g = command_guard(r);
    if (g == NULL)
        return;
    int json = petrel_command_json(r);
    unsigned n = 0;
    if (json)
        petrel_command_print(r, "[");
    lock(g);
    for (size_t i = 0; i < SLOTS; i++) {
        const struct slot *s = &g->slots[i];
        if ((s->h1 == 0 && s->h2 == 0) || !s->tripped)
            continue;
        char login[KEY_MAX + 1];
        snprintf(login, sizeof(login), "%s", s->login);
        if (json) {
            petrel_command_print(r, "%s\n  {\"login\": ", n ? "," : "");
            petrel_command_print_json_string(r, login);
            petrel_command_print(r, ", \"messages\": %u, \"usual_messages\": %.1f, \"usual_recipients\": %.1f, "
                                 "\"held\": [", s->messages, s->usual_messages, s->usual_recipients);
        } else {
            petrel_command_print(r, "%s: held (%u messages this window; usually %.1f messages, %.1f recipients); "
                                 "in the hold queue:", login, s->messages, s->usual_messages, s->usual_recipients);
        }
        unsigned shown = 0;
        for (uint32_t k = 0; k < s->nheld && k < HELD_MAX; k++) {
            char path[4200], qid[QID_MAX + 1];
            snprintf(qid, sizeof(qid), "%s", s->held[k]);
            snprintf(path, sizeof(path), "%s/%s", g->hold_dir, qid);
            if (access(path, F_OK) != 0)
                continue;
            if (json) {
                petrel_command_print(r, "%s", shown ? ", " : "");
                petrel_command_print_json_string(r, qid);
            } else {
                petrel_command_print(r, " %s", qid);
            }
            shown++;
        }
        if (json)
            petrel_command_print(r, "]}");
        else
            petrel_command_print(r, "%s\n", shown ? "" : " none left (its next MAIL releases it)");
        n++;
    }
    unlock(g);
    if (json)
        petrel_command_print(r, "%s]", n ? "\n" : "");
    else if (n == 0)
        petrel_command_print(r, "sasl: no login is held\n");
    petrel_command_done(r, PETREL_COMMAND_OK);
}

void sasl_guard_cmd_release(petrel_command_request *r, int argc, const char *const *argv)
{
    (void)argc;
    struct sasl_guard *g = command_guard(r);
    if (g == NULL)
        return;
    const char *login = argv[0];
    int64_t now = time(NULL);
    int found = 0, was_held = 0;
    unsigned left = 0;
    lock(g);
    struct slot *s = find(g, login, 0, now);
    if (s) {
        found = 1;
        was_held = s->tripped != 0;
        if (was_held) {
            for (uint32_t k = 0; k < s->nheld && k < HELD_MAX; k++) {
                char path[4200];
                snprintf(path, sizeof(path), "%s/%.*s", g->hold_dir, QID_MAX, s->held[k]);
                if (access(path, F_OK) == 0)
                    left++;
            }
            s->tripped = 0;
            s->nheld = 0;
            s->messages = 0;
            memset(s->sketch, 0, sizeof(s->sketch));
            s->window_start = now;
        }
    }
    unlock(g);
    if (!found || !was_held) {
        petrel_command_print(r, "sasl: login %s is not held", login);
        petrel_command_done(r, PETREL_COMMAND_FAILED);
        return;
    }
    petrel_metric_add(g->logins_released, NULL, 1);
    petrel_module_log(petrel_command_module(r), PETREL_LOG_INFO, "sasl guard: login %s released by petrelctl", login);
    petrel_command_print(r, "sasl: login %s released", login);
    if (left)
        petrel_command_print(r, "; its %u held message%s stay%s in the hold queue for review (petrelctl queue list, "
                             "release, delete)", left, left == 1 ? "" : "s", left == 1 ? "s" : "");
    petrel_command_done(r, PETREL_COMMAND_OK);
}
