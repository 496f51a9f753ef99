/*
 * master.cf spawn(8) services: the master listens on the service's socket
 * and runs the admin's command once per connection, as Postfix's spawn(8)
 * does (Debian's "policyd-spf unix - n n - 0 spawn user=policyd-spf
 * argv=/usr/bin/policyd-spf" behind check_policy_service
 * unix:private/policyd-spf).
 *
 * Design decisions:
 *   - No spawn process of its own: the master accepts on the listening
 *     socket from its event loop and forks the command directly, so the
 *     loop never blocks (accept on a non-blocking socket, fork, no wait).
 *   - The child gets the connection as standard input, output and error
 *     (spawn(8) connects all three to the client), its own process group
 *     (so the time limit kills what it started too), the environment
 *     export_environment names, and the rights of user= (user:group too).
 *     Root and mail_owner are refused, as spawn(8) refuses them. A master
 *     that is not root (single-user mode) can only run commands as itself,
 *     so user= must then name the user it runs as.
 *   - maxproc commands run at once (0 = no limit, "-" = default_process_limit);
 *     at the limit the master stops accepting and clients wait in the
 *     listen backlog, as they wait for a busy Postfix spawn process.
 *   - NAME_time_limit (when main.cf sets it; else 1000 seconds, Postfix's
 *     command_time_limit default) ends a command with SIGKILL to its group.
 *   - Children are counted by listener key across reloads: a reload keeps
 *     the socket (same key) and the commands still running count against
 *     the new generation's maxproc.
 *   - user=, argv= and the socket's form are checked at load time
 *     (master_spawn_check), so petreld -n reports them; the user's IDs are
 *     looked up when the socket is bound (start, reload), never per client.
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <netdb.h>
#include <pwd.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <event2/event.h>

#include "config/cfg.h"
#include "lib/log.h"
#include "lib/xalloc.h"
#include "master/master_int.h"

#define SPAWN_DEFAULT_TIME_LIMIT 1000   /* Postfix's command_time_limit default */

struct spawn_child {
    pid_t pid;
    char key[sizeof(((struct spawn_listener *)0)->key)];   /* the listener it was accepted on */
    char name[128];                /* the service, for the log */
    struct event *timer;           /* the time limit */
    int timed_out;
    struct master *m;
    struct spawn_child *next;
};

/* Splits the service's arguments: user=NAME[:GROUP] and argv=PROGRAM ARGS...
 * (argv= last). A "{ text }" argument is text, Postfix's way of quoting. */
static int parse_args(const struct master_service *svc, const char **user, const char *const **argv_out,
                      char **error)
{
    *user = NULL;
    *argv_out = NULL;
    for (size_t i = 1; svc->argv[i]; i++) {
        const char *a = svc->argv[i];
        if (strncmp(a, "user=", 5) == 0) {
            *user = a + 5;
        } else if (strncmp(a, "argv=", 5) == 0) {
            if (a[5] == '\0') {
                *error = xstrdup("argv= names no command");
                return -1;
            }
            *argv_out = svc->argv + i;   /* argv=PROG is element 0; the prefix is skipped by the caller */
            break;
        } else {
            char msg[512];
            snprintf(msg, sizeof(msg), "unknown attribute \"%.200s\" (spawn takes user= and argv=)", a);
            *error = xstrdup(msg);
            return -1;
        }
    }
    if (*user == NULL || **user == '\0') {
        *error = xstrdup("user= is required (the user the command runs as)");
        return -1;
    }
    if (*argv_out == NULL) {
        *error = xstrdup("argv= is required (the command, last)");
        return -1;
    }
    return 0;
}

int master_spawn_check(const struct master_service *svc, char **error)
{
    const char *user;
    const char *const *argv;
    if (parse_args(svc, &user, &argv, error) != 0)
        return -1;
    char msg[600];
    if (svc->type != SVC_UNIX && svc->type != SVC_INET) {
        *error = xstrdup("a spawn service must be of type unix or inet");
        return -1;
    }
    if (svc->type == SVC_INET && strrchr(svc->name, ':') == NULL) {
        *error = xstrdup("an inet spawn service must name host:port (a bare port is not supported)");
        return -1;
    }
    if (svc->type == SVC_UNIX && (strchr(svc->name, '/') || strlen(svc->name) > 80)) {
        *error = xstrdup("a unix spawn service's name must be a plain socket name (at most 80 characters)");
        return -1;
    }
    char uname[256];
    snprintf(uname, sizeof(uname), "%.*s", (int)strcspn(user, ":"), user);
    struct passwd *pw = getpwnam(uname);
    if (pw == NULL) {
        snprintf(msg, sizeof(msg), "user=%.200s: no such user", uname);
        *error = xstrdup(msg);
        return -1;
    }
    if (pw->pw_uid == 0) {
        snprintf(msg, sizeof(msg), "user=%.200s: refusing to run a command with root privileges", uname);
        *error = xstrdup(msg);
        return -1;
    }
    const char *group = strchr(user, ':');
    if (group && getgrnam(group + 1) == NULL) {
        snprintf(msg, sizeof(msg), "user=%.200s: no such group \"%.200s\"", user, group + 1);
        *error = xstrdup(msg);
        return -1;
    }
    return 0;
}

/* What the command is: argv= element 0 without its prefix, then the rest
 * with "{ x }" quoting removed. A NULL-terminated array the caller frees
 * (with its strings). */
static char **command_argv(const char *const *argv)
{
    size_t n = 0;
    while (argv[n])
        n++;
    char **out = xcalloc(n + 1, sizeof(*out));
    for (size_t i = 0; i < n; i++) {
        const char *a = i == 0 ? argv[0] + 5 : argv[i];
        size_t len = strlen(a);
        if (len >= 2 && a[0] == '{' && a[len - 1] == '}') {
            a++;
            len -= 2;
            while (len && (*a == ' ' || *a == '\t'))
                a++, len--;
            while (len && (a[len - 1] == ' ' || a[len - 1] == '\t'))
                len--;
        }
        out[i] = xstrndup(a, len);
    }
    return out;
}

static int bind_unix(const char *path, char **error)
{
    struct sockaddr_un sun;
    memset(&sun, 0, sizeof(sun));
    sun.sun_family = AF_UNIX;
    if (strlen(path) >= sizeof(sun.sun_path)) {
        *error = xstrdup("socket path too long");
        return -1;
    }
    strcpy(sun.sun_path, path);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0) {
        *error = xstrdup(strerror(errno));
        return -1;
    }
    unlink(path);   /* a socket left by a previous run */
    if (bind(fd, (struct sockaddr *)&sun, sizeof(sun)) != 0 || chmod(path, 0666) != 0 ||
        listen(fd, LISTEN_BACKLOG) != 0) {
        char msg[600];
        snprintf(msg, sizeof(msg), "bind %s: %s", path, strerror(errno));
        *error = xstrdup(msg);
        close(fd);
        return -1;
    }
    return fd;
}

static int bind_inet(const char *name, char **error)
{
    char host[256], port[64];
    const char *colon = strrchr(name, ':');
    if (name[0] == '[') {
        const char *close = strchr(name, ']');
        if (close == NULL || close + 1 != colon) {
            *error = xstrdup("bad [address]:port");
            return -1;
        }
        snprintf(host, sizeof(host), "%.*s", (int)(close - name - 1), name + 1);
    } else {
        snprintf(host, sizeof(host), "%.*s", (int)(colon - name), name);
    }
    snprintf(port, sizeof(port), "%s", colon + 1);
    struct addrinfo hints, *res = NULL;
    memset(&hints, 0, sizeof(hints));
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE | AI_NUMERICHOST | AI_NUMERICSERV;
    int rc = getaddrinfo(host, port, &hints, &res);
    if (rc != 0) {
        char msg[600];
        snprintf(msg, sizeof(msg), "bad listen address %s port %s: %s (a numeric address and port)", host, port,
                 gai_strerror(rc));
        *error = xstrdup(msg);
        return -1;
    }
    int fd = socket(res->ai_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    int one = 1;
    if (fd >= 0)
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (fd < 0 || bind(fd, res->ai_addr, res->ai_addrlen) != 0 || listen(fd, LISTEN_BACKLOG) != 0) {
        char msg[600];
        snprintf(msg, sizeof(msg), "bind %s port %s: %s", host, port, strerror(errno));
        *error = xstrdup(msg);
        if (fd >= 0)
            close(fd);
        freeaddrinfo(res);
        return -1;
    }
    freeaddrinfo(res);
    return fd;
}

static void listener_key(const struct master *m, const struct master_service *svc, char *key, size_t size)
{
    if (svc->type == SVC_UNIX)
        snprintf(key, size, "unix:%s/%s/%s", m->queue_dir, svc->private_ ? "private" : "public", svc->name);
    else
        snprintf(key, size, "inet:%s", svc->name);
}

/* The IDs the command runs with; 0, or -1 logged. */
static int resolve_ids(struct master *m, const struct master_service *svc, struct spawn_listener *l)
{
    const char *user;
    const char *const *argv;
    char *error = NULL;
    if (parse_args(svc, &user, &argv, &error) != 0) {
        msg_error("%s, line %d: service %s: %s", svc->file, svc->line, svc->name, error);
        free(error);
        return -1;
    }
    snprintf(l->user, sizeof(l->user), "%.*s", (int)strcspn(user, ":"), user);
    struct passwd *pw = getpwnam(l->user);
    if (pw == NULL || pw->pw_uid == 0) {
        msg_error("%s, line %d: service %s: user=%s: %s", svc->file, svc->line, svc->name, l->user,
                  pw ? "refusing to run a command with root privileges" : "no such user");
        return -1;
    }
    l->uid = pw->pw_uid;
    l->gid = pw->pw_gid;
    const char *group = strchr(user, ':');
    if (group) {
        struct group *gr = getgrnam(group + 1);
        if (gr == NULL) {
            msg_error("%s, line %d: service %s: user=%s: no such group", svc->file, svc->line, svc->name, user);
            return -1;
        }
        l->gid = gr->gr_gid;
    }
    if (m->privileged && l->uid == m->run_uid) {
        msg_error("%s, line %d: service %s: user=%s is mail_owner: refusing to run a command with the mail "
                  "system's privileges (give it a user of its own)", svc->file, svc->line, svc->name, l->user);
        return -1;
    }
    if (!m->privileged && l->uid != getuid()) {
        msg_error("%s, line %d: service %s: user=%s: petreld is not running as root, so it can run the command "
                  "only as itself (uid %ld): name that user, or start petreld as root",
                  svc->file, svc->line, svc->name, l->user, (long)getuid());
        return -1;
    }
    return 0;
}

int master_bind_spawn_services(struct master *m, struct generation *gen, struct generation *old)
{
    const struct cfg *cfg = gen->cfg;
    for (size_t i = 0; i < cfg_service_count(cfg); i++) {
        const struct master_service *svc = cfg_service(cfg, i);
        if (svc->role != ROLE_SPAWN)
            continue;
        if (gen->nspawns == MAX_SPAWN_SERVICES) {
            msg_error("%s, line %d: service %s: more than %d spawn services", svc->file, svc->line, svc->name,
                      MAX_SPAWN_SERVICES);
            goto failed;
        }
        struct spawn_listener *l = &gen->spawns[gen->nspawns];
        memset(l, 0, sizeof(*l));
        l->fd = -1;
        l->service = svc;
        l->m = m;
        listener_key(m, svc, l->key, sizeof(l->key));
        if (resolve_ids(m, svc, l) != 0)
            goto failed;
        const char *cmd_user;
        const char *const *argv;
        char *error = NULL;
        parse_args(svc, &cmd_user, &argv, &error);   /* checked in resolve_ids */
        l->argv = command_argv(argv);
        char param[200];
        snprintf(param, sizeof(param), "%s_time_limit", svc->name);
        l->time_limit = cfg_get(cfg, param) ? (unsigned)cfg_int(cfg, param) : SPAWN_DEFAULT_TIME_LIMIT;
        gen->nspawns++;
        for (int k = 0; old && k < old->nspawns; k++)
            if (strcmp(old->spawns[k].key, l->key) == 0 && old->spawns[k].fd >= 0) {
                l->fd = old->spawns[k].fd;   /* taken over: the socket stays open across the reload */
                old->spawns[k].fd = -1;
            }
        if (l->fd >= 0)
            continue;
        if (svc->type == SVC_UNIX && !svc->private_) {
            /* public/: Postfix's directory for sockets anyone may use (the
             * queue tree does not have it otherwise). */
            char dir[4200];
            snprintf(dir, sizeof(dir), "%s/public", m->queue_dir);
            if (mkdir(dir, 0755) != 0 && errno != EEXIST) {
                msg_error("%s, line %d: service %s: mkdir %s: %s", svc->file, svc->line, svc->name, dir,
                          strerror(errno));
                goto failed;
            }
            if (m->privileged && chown(dir, m->run_uid, m->run_gid) != 0)
                msg_warn("chown %s: %s", dir, strerror(errno));
        }
        error = NULL;
        l->fd = svc->type == SVC_UNIX ? bind_unix(l->key + 5, &error) : bind_inet(svc->name, &error);
        if (l->fd < 0) {
            msg_error("%s, line %d: service %s: %s", svc->file, svc->line, svc->name, error);
            free(error);
            goto failed;
        }
        l->bound_here = 1;
    }
    return 0;
failed:
    /* Give the taken-over sockets back; close the ones bound here. */
    for (int k = 0; k < gen->nspawns; k++) {
        struct spawn_listener *l = &gen->spawns[k];
        for (int j = 0; old && j < old->nspawns && l->fd >= 0 && !l->bound_here; j++)
            if (strcmp(old->spawns[j].key, l->key) == 0 && old->spawns[j].fd < 0) {
                old->spawns[j].fd = l->fd;
                l->fd = -1;
            }
    }
    return -1;
}

void master_spawn_generation_free(struct generation *g)
{
    for (int i = 0; i < g->nspawns; i++) {
        struct spawn_listener *l = &g->spawns[i];
        if (l->ev)
            event_free(l->ev);
        if (l->fd >= 0) {
            close(l->fd);
            if (l->service->type == SVC_UNIX)
                unlink(l->key + 5);
        }
        for (char **a = l->argv; a && *a; a++)
            free(*a);
        free(l->argv);
    }
    g->nspawns = 0;
}

static int running(const struct master *m, const char *key)
{
    int n = 0;
    for (const struct spawn_child *c = m->spawn_children; c; c = c->next)
        n += strcmp(c->key, key) == 0;
    return n;
}

static int at_limit(const struct spawn_listener *l)
{
    return l->service->maxproc > 0 && running(l->m, l->key) >= l->service->maxproc;
}

static void on_time_limit(evutil_socket_t fd, short what, void *arg)
{
    struct spawn_child *c = arg;
    c->timed_out = 1;   /* said when it is reaped */
    kill(-c->pid, SIGKILL);
}

/* In the child, before the exec: logs through the master's own standard
 * error (log_fd), never the client's, and exits 127 (as a shell does for a
 * command it cannot run). */
__attribute__((noreturn, format(printf, 2, 3))) static void child_fail(int log_fd, const char *fmt, ...)
{
    char text[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(text, sizeof(text), fmt, ap);
    va_end(ap);
    if (log_fd >= 0)
        dup2(log_fd, 2);
    else
        close(2);
    msg_error("%s", text);
    _exit(127);
}

/* In the child: never returns. */
__attribute__((noreturn)) static void run_command(const struct spawn_listener *l, int conn)
{
    const struct cfg *cfg = l->m->gen->cfg;
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
    for (int s = 1; s < NSIG; s++)
        if (s != SIGKILL && s != SIGSTOP)
            signal(s, SIG_DFL);
    setsid();
    /* The master's standard error may be its log: kept aside (closed by
     * the exec) so that a failure here is logged, not sent to the client. */
    int log_fd = fcntl(2, F_DUPFD_CLOEXEC, 3);
    if (dup2(conn, 0) < 0 || dup2(conn, 1) < 0 || dup2(conn, 2) < 0)
        child_fail(log_fd, "service %s: cannot connect the command to the client: %s", l->service->name,
                   strerror(errno));
    /* Nothing else of the master's reaches the command; the log's own
     * descriptors stay usable until the exec. */
    if (close_range(3, ~0U, CLOSE_RANGE_CLOEXEC) != 0)
        child_fail(log_fd, "service %s: close_range: %s", l->service->name, strerror(errno));
    if (l->m->privileged) {
        if (setgid(l->gid) != 0 || initgroups(l->user, l->gid) != 0 || setuid(l->uid) != 0)
            child_fail(log_fd, "service %s: cannot become user %s: %s", l->service->name, l->user, strerror(errno));
    }
    /* Postfix's default export_environment (TZ MAIL_CONFIG LANG) and, as
     * for pipe commands, a PATH; export_environment itself is not read
     * (core/config/parameters.txt says so). */
    char *env[5];
    size_t k = 0;
    env[k++] = xstrdup("PATH=/usr/bin:/bin");
    static const char *const kept[] = { "TZ", "LANG" };
    for (size_t i = 0; i < 2; i++) {
        const char *v = getenv(kept[i]);
        if (v) {
            size_t len = strlen(kept[i]) + strlen(v) + 2;
            env[k] = xmalloc(len);
            snprintf(env[k++], len, "%s=%s", kept[i], v);
        }
    }
    size_t len = strlen(cfg_confdir(cfg)) + 13;
    env[k] = xmalloc(len);
    snprintf(env[k++], len, "MAIL_CONFIG=%s", cfg_confdir(cfg));
    env[k] = NULL;
    execve(l->argv[0], l->argv, env);
    child_fail(log_fd, "service %s: cannot execute %s: %s", l->service->name, l->argv[0], strerror(errno));
}

static void on_accept(evutil_socket_t fd, short what, void *arg)
{
    struct spawn_listener *l = arg;
    struct master *m = l->m;
    if (m->stopping)
        return;
    while (!at_limit(l)) {
        int conn = accept4(fd, NULL, NULL, SOCK_CLOEXEC);
        if (conn < 0) {
            if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR && errno != ECONNABORTED)
                msg_warn("service %s: accept: %s", l->service->name, strerror(errno));
            return;
        }
        pid_t pid = fork();
        if (pid < 0) {
            msg_warn("service %s: cannot fork: %s", l->service->name, strerror(errno));
            close(conn);
            return;
        }
        if (pid == 0)
            run_command(l, conn);
        close(conn);
        struct spawn_child *c = xcalloc(1, sizeof(*c));
        c->pid = pid;
        c->m = m;
        snprintf(c->key, sizeof(c->key), "%s", l->key);
        snprintf(c->name, sizeof(c->name), "%s", l->service->name);
        c->timer = evtimer_new(m->base, on_time_limit, c);
        struct timeval tv = { (time_t)l->time_limit, 0 };
        evtimer_add(c->timer, &tv);
        c->next = m->spawn_children;
        m->spawn_children = c;
    }
    /* At maxproc: stop accepting; a command's exit resumes (master_spawn_reaped). */
    event_del(l->ev);
    l->paused = 1;
}

void master_start_spawn_services(struct master *m)
{
    for (int i = 0; i < m->gen->nspawns; i++) {
        struct spawn_listener *l = &m->gen->spawns[i];
        l->m = m;
        l->ev = event_new(m->base, l->fd, EV_READ | EV_PERSIST, on_accept, l);
        if (at_limit(l))
            l->paused = 1;   /* the previous generation's commands still fill it */
        else
            event_add(l->ev, NULL);
    }
}

int master_spawn_reaped(struct master *m, pid_t pid, int status)
{
    struct spawn_child **pp = &m->spawn_children;
    while (*pp && (*pp)->pid != pid)
        pp = &(*pp)->next;
    struct spawn_child *c = *pp;
    if (c == NULL)
        return 0;
    *pp = c->next;
    if (c->timed_out)
        msg_warn("service %s: command pid %ld killed: time limit exceeded", c->name, (long)pid);
    else if (WIFSIGNALED(status))
        msg_warn("service %s: command pid %ld killed by signal %d", c->name, (long)pid, WTERMSIG(status));
    else if (WEXITSTATUS(status) != 0)
        msg_warn("service %s: command pid %ld exit status %d", c->name, (long)pid, WEXITSTATUS(status));
    for (int i = 0; m->gen && i < m->gen->nspawns; i++) {
        struct spawn_listener *l = &m->gen->spawns[i];
        if (l->paused && !m->stopping && strcmp(l->key, c->key) == 0 && !at_limit(l)) {
            l->paused = 0;
            event_add(l->ev, NULL);
        }
    }
    event_free(c->timer);
    free(c);
    return 1;
}

void master_spawn_stop(struct master *m, int sig)
{
    for (int i = 0; m->gen && i < m->gen->nspawns; i++)
        if (m->gen->spawns[i].ev)
            event_del(m->gen->spawns[i].ev);
    for (struct spawn_child *c = m->spawn_children; c; c = c->next)
        kill(-c->pid, sig);
}

void master_spawn_forget(struct master *m)
{
    while (m->spawn_children) {
        struct spawn_child *c = m->spawn_children;
        m->spawn_children = c->next;
        event_free(c->timer);
        free(c);
    }
}
