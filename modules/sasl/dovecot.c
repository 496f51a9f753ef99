/*
 * smtpd_sasl_type = dovecot: a client of Dovecot's authentication protocol
 * (auth-client, version 1.x), as Postfix's xsasl_dovecot_server speaks it,
 * but asynchronous: one connection per worker process to smtpd_sasl_path
 * (a UNIX socket, relative to queue_directory like Postfix's private/auth,
 * or inet:host:port), driven by fd watches, carrying every session's AUTH
 * requests at once (each has its own id).
 *
 *   us:   VERSION 1 2, CPID pid
 *   them: VERSION, MECH name flags..., SPID, CUID, COOKIE, DONE
 *   us:   AUTH id mech service=smtp nologin lip= rip= lport= rport= [secured] [valid-client-cert] session=
 *         [resp=b64]
 *   them: CONT id b64 | OK id user=... | FAIL id [reason=...] [temp] [user=...]
 *   us:   CONT id b64
 *
 * Every mechanism Dovecot advertises is offered as it is (PLAIN, LOGIN,
 * CRAM-MD5, SCRAM-SHA-1/256, ...): responses and challenges pass through
 * untouched (the core decodes base64 once; here it is encoded again for
 * the wire). "private" mechanisms are not offered, as in Postfix. The list
 * is kept when the connection drops, so EHLO still offers it and an AUTH
 * while Dovecot is down gets 454 4.7.0 (its exchange fails temporarily);
 * the connection is made again at the next need.
 *
 * Memory: the client and its exchanges are malloc'd and belong to the
 * module (never to a session). An exchange is in the client's list while
 * Dovecot may still answer for its id, and is freed only by end(), which
 * the core calls exactly once per start(); an exchange that ends before
 * Dovecot answered leaves the list, and Dovecot's late line is ignored.
 */
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "dovecot_proto.h"
#include "sasl_int.h"

#define LINE_MAX_BYTES (64 * 1024)    /* longer than any challenge a client may answer */
#define MAX_MECHS 32

enum dc_state { DC_CLOSED, DC_CONNECTING, DC_HANDSHAKE, DC_READY };

struct dc_exchange {
    struct dc_exchange *next;
    struct dovecot_client *dc;
    unsigned id;
    int sent;                         /* the AUTH line is out (else it waits for the handshake) */
    int done;                         /* Dovecot answered for good, or the connection is gone */
    petrel_sasl_request *req;         /* the unanswered request, or NULL */
    char *auth_line;                  /* built at start, sent when the connection is ready */
};

struct dc_waiter {                    /* a mechanisms request waiting for the handshake */
    struct dc_waiter *next;
    petrel_sasl_request *req;
};

struct dovecot_client {
    petrel_module *m;
    char *path;                       /* as resolved when first used */
    enum dc_state state;
    int fd;
    petrel_watch *watch;
    int watch_events;
    char *in;                         /* bytes read, not yet a complete line */
    size_t in_len;
    char *out;                        /* bytes to write */
    size_t out_len, out_cap;
    int have_mech_line;
    int have_version;
    unsigned next_id;
    petrel_sasl_mechanism mechs[MAX_MECHS];   /* the last list Dovecot gave */
    size_t nmechs;
    int mechs_known;
    petrel_sasl_mechanism new_mechs[MAX_MECHS];   /* being received */
    size_t nnew;
    struct dc_exchange *exchanges;
    struct dc_waiter *waiters;
};

static void dc_close(struct dovecot_client *dc, const char *why);
static void dc_event(int fd, int events, void *arg);

static void dc_watch(struct dovecot_client *dc)
{
    int ev = PETREL_WATCH_READ | (dc->out_len || dc->state == DC_CONNECTING ? PETREL_WATCH_WRITE : 0);
    if (dc->watch && ev == dc->watch_events)
        return;
    if (dc->watch)
        petrel_watch_cancel(dc->watch);
    dc->watch = NULL;
    if (dc->fd < 0)
        return;
    dc->watch = petrel_watch_fd(dc->m, dc->fd, ev, dc_event, dc);
    dc->watch_events = ev;
}

static void dc_write(struct dovecot_client *dc, const char *text, size_t len)
{
    if (dc->out_len + len > dc->out_cap) {
        size_t cap = (dc->out_len + len) * 2 + 256;
        char *n = realloc(dc->out, cap);
        if (n == NULL)
            abort();
        dc->out = n;
        dc->out_cap = cap;
    }
    memcpy(dc->out + dc->out_len, text, len);
    dc->out_len += len;
    dc_watch(dc);
}

/* Dovecot's str_tabescape: a value may not hold TAB, LF or CR. */
static void append_escaped(char **buf, size_t *len, size_t *cap, const char *v)
{
    for (; *v; v++) {
        char esc = 0;
        switch (*v) {
        case 1: esc = '1'; break;
        case '\t': esc = 't'; break;
        case '\n': esc = 'n'; break;
        case '\r': esc = 'r'; break;
        }
        if (*len + 3 > *cap) {
            *cap = *cap * 2 + 64;
            *buf = realloc(*buf, *cap);
            if (*buf == NULL)
                abort();
        }
        if (esc) {
            (*buf)[(*len)++] = 1;
            (*buf)[(*len)++] = esc;
        } else {
            (*buf)[(*len)++] = *v;
        }
    }
    (*buf)[*len] = '\0';
}

static void exchange_unlink(struct dovecot_client *dc, struct dc_exchange *x)
{
    for (struct dc_exchange **pp = &dc->exchanges; *pp; pp = &(*pp)->next) {
        if (*pp == x) {
            *pp = x->next;
            return;
        }
    }
}

static void exchange_free(struct dc_exchange *x)
{
    if (x->auth_line) {
        explicit_bzero(x->auth_line, strlen(x->auth_line));   /* it may hold a password (PLAIN) */
        free(x->auth_line);
    }
    free(x);
}

static void answer_exchange(struct dc_exchange *x, petrel_sasl_status st, const void *data, size_t len,
                            const char *user, const char *reason)
{
    petrel_sasl_request *r = x->req;
    x->req = NULL;
    if (r)
        sasl_answer(r, st, data, len, user, reason);
}

static void send_auth(struct dovecot_client *dc, struct dc_exchange *x)
{
    dc_write(dc, x->auth_line, strlen(x->auth_line));
    explicit_bzero(x->auth_line, strlen(x->auth_line));
    free(x->auth_line);
    x->auth_line = NULL;
    x->sent = 1;
}

/* The handshake is over (or failed): answer those who waited for it. */
static void handshake_over(struct dovecot_client *dc, int ok, const char *why)
{
    struct dc_waiter *w = dc->waiters;
    dc->waiters = NULL;
    while (w) {
        struct dc_waiter *next = w->next;
        if (ok || dc->mechs_known)
            petrel_sasl_offer(w->req, dc->mechs, dc->nmechs);
        else
            sasl_answer(w->req, PETREL_SASL_TEMPFAIL, NULL, 0, NULL, why);
        free(w);
        w = next;
    }
    for (struct dc_exchange *x = dc->exchanges, *next; x; x = next) {
        next = x->next;
        if (x->sent)
            continue;
        if (ok) {
            send_auth(dc, x);
        } else {
            /* out of the list and done before the answer: the core may end
             * the exchange from inside it, and end() frees x */
            exchange_unlink(dc, x);
            x->done = 1;
            answer_exchange(x, PETREL_SASL_TEMPFAIL, NULL, 0, NULL, why);
        }
    }
}

static void dc_close(struct dovecot_client *dc, const char *why)
{
    int was_ready = dc->state == DC_READY;
    if (dc->watch)
        petrel_watch_cancel(dc->watch);
    dc->watch = NULL;
    if (dc->fd >= 0)
        close(dc->fd);
    dc->fd = -1;
    dc->state = DC_CLOSED;
    dc->in_len = 0;
    dc->out_len = 0;
    if (why)
        petrel_module_log(dc->m, PETREL_LOG_WARNING, "SASL: %s", why);
    if (!was_ready)
        handshake_over(dc, 0, "Can't connect to authentication server");
    /* Exchanges in flight: Postfix's reason, a temporary failure. */
    for (struct dc_exchange *x = dc->exchanges, *next; x; x = next) {
        next = x->next;
        x->done = 1;
        answer_exchange(x, PETREL_SASL_TEMPFAIL, NULL, 0, NULL, "Connection lost to authentication server");
    }
    dc->exchanges = NULL;
}

static void add_mech(struct dovecot_client *dc, const struct dc_reply *r)
{
    if (r->private_mech)
        return;   /* for Dovecot's own use, never offered (as in Postfix) */
    if (dc->nnew < MAX_MECHS) {
        dc->new_mechs[dc->nnew].name = strdup(r->mech);
        dc->new_mechs[dc->nnew].properties = r->properties;
        dc->nnew++;
    }
}

static struct dc_exchange *find_exchange(struct dovecot_client *dc, unsigned id)
{
    for (struct dc_exchange *x = dc->exchanges; x; x = x->next)
        if (x->id == id)
            return x;
    return NULL;
}

/* One line from Dovecot (len bytes without its LF; line[len] may be
 * written). A malformed line closes the connection: what Dovecot meant
 * is unknown, so every exchange on it fails temporarily. */
static void dc_line(struct dovecot_client *dc, char *line, size_t len)
{
    struct dc_reply r;
    const char *why = NULL;
    if (dovecot_parse_line(line, len, &r, &why) != 0) {
        char text[200];
        snprintf(text, sizeof(text), "Dovecot auth server sent a malformed line: %s", why);
        dc_close(dc, text);
        return;
    }
    if (dc->state == DC_HANDSHAKE) {
        if (r.kind == DC_REPLY_VERSION) {
            if (r.major != 1) {
                dc_close(dc, "Protocol version mismatch with the Dovecot auth server");
                return;
            }
            dc->have_version = 1;
        } else if (r.kind == DC_REPLY_MECH) {
            dc->have_mech_line = 1;
            add_mech(dc, &r);
        } else if (r.kind == DC_REPLY_SPID && !dc->have_mech_line) {
            dc_close(dc, "Connected to wrong auth socket (auth-master instead of auth-client)");
            return;
        } else if (r.kind == DC_REPLY_DONE) {
            if (!dc->have_version) {
                dc_close(dc, "Dovecot auth server ended its handshake without a VERSION line");
                return;
            }
            for (size_t i = 0; i < dc->nmechs; i++)
                free((char *)dc->mechs[i].name);
            memcpy(dc->mechs, dc->new_mechs, sizeof(dc->mechs));
            dc->nmechs = dc->nnew;
            dc->nnew = 0;
            dc->mechs_known = 1;
            dc->state = DC_READY;
            handshake_over(dc, 1, NULL);
        }
        return;
    }
    if (r.kind != DC_REPLY_CONT && r.kind != DC_REPLY_OK && r.kind != DC_REPLY_FAIL)
        return;
    struct dc_exchange *x = find_exchange(dc, r.id);
    if (x == NULL)
        return;   /* an exchange that ended meanwhile */
    if (r.kind == DC_REPLY_CONT) {
        size_t blen = strlen(r.data);
        unsigned char *raw = malloc(blen + 1);
        long n = raw ? sasl_b64_decode(r.data, blen, raw) : -1;
        if (n < 0)
            answer_exchange(x, PETREL_SASL_TEMPFAIL, NULL, 0, NULL, "Authentication backend error");
        else
            answer_exchange(x, PETREL_SASL_CHALLENGE, raw, (size_t)n, NULL, NULL);
        free(raw);
        return;
    }
    exchange_unlink(dc, x);
    x->done = 1;
    if (r.kind == DC_REPLY_OK && (r.user == NULL || *r.user == '\0'))
        answer_exchange(x, PETREL_SASL_FAILURE, NULL, 0, NULL, "Authentication backend error");
    else if (r.kind == DC_REPLY_OK)
        answer_exchange(x, PETREL_SASL_SUCCESS, NULL, 0, r.user, NULL);
    else
        answer_exchange(x, r.temp ? PETREL_SASL_TEMPFAIL : PETREL_SASL_FAILURE, NULL, 0, r.user, r.reason);
}

static void dc_event(int fd, int events, void *arg)
{
    struct dovecot_client *dc = arg;
    if (dc->state == DC_CONNECTING && (events & PETREL_WATCH_WRITE)) {
        int err = 0;
        socklen_t len = sizeof(err);
        getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len);
        if (err) {
            char why[512];
            snprintf(why, sizeof(why), "Connect to Dovecot auth socket '%s' failed: %s", dc->path, strerror(err));
            dc_close(dc, why);
            return;
        }
        dc->state = DC_HANDSHAKE;
        char hello[64];
        int n = snprintf(hello, sizeof(hello), "VERSION\t1\t2\nCPID\t%u\n", (unsigned)getpid());
        dc_write(dc, hello, (size_t)n);
    }
    if ((events & PETREL_WATCH_WRITE) && dc->out_len) {
        ssize_t n = send(fd, dc->out, dc->out_len, MSG_NOSIGNAL);
        if (n < 0 && errno != EAGAIN && errno != EINTR) {
            dc_close(dc, "Connection lost to authentication server");
            return;
        }
        if (n > 0) {
            memmove(dc->out, dc->out + n, dc->out_len - (size_t)n);
            dc->out_len -= (size_t)n;
        }
        dc_watch(dc);
    }
    if (events & PETREL_WATCH_READ) {
        if (dc->in == NULL && (dc->in = malloc(LINE_MAX_BYTES + 1)) == NULL)
            abort();
        ssize_t n = recv(fd, dc->in + dc->in_len, LINE_MAX_BYTES - dc->in_len, 0);
        if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR)) {
            dc_close(dc, dc->state == DC_READY ? "Connection lost to authentication server"
                                               : "Dovecot auth server closed the connection during the handshake");
            return;
        }
        if (n < 0)
            return;
        dc->in_len += (size_t)n;
        size_t start = 0;
        for (size_t i = 0; i < dc->in_len && dc->fd >= 0; i++) {
            if (dc->in[i] != '\n')
                continue;
            dc_line(dc, dc->in + start, i - start);
            start = i + 1;
        }
        if (dc->fd < 0)
            return;
        memmove(dc->in, dc->in + start, dc->in_len - start);
        dc->in_len -= start;
        if (dc->in_len >= LINE_MAX_BYTES)
            dc_close(dc, "Dovecot auth server sent a line longer than 64 KiB");
    }
}

/* Resolves smtpd_sasl_path: inet:host:port, unix:/path, /path, or a path
 * relative to queue_directory (Postfix's private/auth). */
static int dc_connect(struct dovecot_client *dc, const petrel_sasl_context *c)
{
    const char *path = c->path && *c->path ? c->path : "private/auth";
    int fd = -1;
    free(dc->path);
    dc->path = strdup(path);
    if (strncmp(path, "inet:", 5) == 0) {
        char *hp = strdup(path + 5);
        char *colon = strrchr(hp, ':');
        if (colon == NULL) {
            free(hp);
            return -1;
        }
        *colon = '\0';
        char *host = hp;
        if (*host == '[') {
            host++;
            char *rb = strchr(host, ']');
            if (rb)
                *rb = '\0';
        }
        struct addrinfo hints = { .ai_socktype = SOCK_STREAM, .ai_flags = AI_NUMERICHOST | AI_NUMERICSERV }, *ai;
        if (getaddrinfo(host, colon + 1, &hints, &ai) != 0) {
            free(hp);
            return -1;
        }
        fd = socket(ai->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (fd >= 0 && connect(fd, ai->ai_addr, ai->ai_addrlen) != 0 && errno != EINPROGRESS) {
            close(fd);
            fd = -1;
        }
        freeaddrinfo(ai);
        free(hp);
    } else {
        if (strncmp(path, "unix:", 5) == 0)
            path += 5;
        struct sockaddr_un sun = { .sun_family = AF_UNIX };
        int n = path[0] == '/' ? snprintf(sun.sun_path, sizeof(sun.sun_path), "%s", path)
                               : snprintf(sun.sun_path, sizeof(sun.sun_path), "%s/%s",
                                          c->queue_directory ? c->queue_directory : ".", path);
        if (n < 0 || (size_t)n >= sizeof(sun.sun_path))
            return -1;
        free(dc->path);
        dc->path = strdup(sun.sun_path);
        fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (fd >= 0 && connect(fd, (struct sockaddr *)&sun, sizeof(sun)) != 0 && errno != EINPROGRESS &&
            errno != EAGAIN) {
            int e = errno;
            close(fd);
            fd = -1;
            errno = e;
        }
    }
    if (fd < 0)
        return -1;
    dc->fd = fd;
    dc->state = DC_CONNECTING;
    dc->have_mech_line = 0;
    dc->have_version = 0;
    dc->nnew = 0;
    dc_watch(dc);
    return 0;
}

static struct dovecot_client *client_of(const petrel_sasl_context *c)
{
    struct sasl_module *sm = sasl_module_of(c->module);
    if (sm->dovecot == NULL) {
        sm->dovecot = calloc(1, sizeof(*sm->dovecot));
        if (sm->dovecot == NULL)
            abort();
        sm->dovecot->m = c->module;
        sm->dovecot->fd = -1;
    }
    return sm->dovecot;
}

/* Connects when not connected; -1 (logged) when that failed at once. */
static int ensure_connected(struct dovecot_client *dc, const petrel_sasl_context *c)
{
    if (dc->state != DC_CLOSED)
        return 0;
    if (dc_connect(dc, c) == 0)
        return 0;
    petrel_module_log(dc->m, PETREL_LOG_WARNING, "SASL: Connect to Dovecot auth socket '%s' failed: %s",
                      dc->path ? dc->path : "?", strerror(errno));
    return -1;
}

void sasl_dovecot_mechanisms(petrel_sasl_request *r, const petrel_sasl_context *c)
{
    struct dovecot_client *dc = client_of(c);
    if (dc->mechs_known) {
        /* Known: offer it, even while Dovecot is away (AUTH then gets 454);
         * a closed connection is made again meanwhile. */
        if (dc->state == DC_CLOSED)
            ensure_connected(dc, c);
        petrel_sasl_offer(r, dc->mechs, dc->nmechs);
        return;
    }
    if (ensure_connected(dc, c) != 0) {
        sasl_answer(r, PETREL_SASL_TEMPFAIL, NULL, 0, NULL, "Can't connect to authentication server");
        return;
    }
    struct dc_waiter *w = calloc(1, sizeof(*w));
    if (w == NULL)
        abort();
    w->req = r;
    w->next = dc->waiters;
    dc->waiters = w;
}

struct line {
    char *b;
    size_t len, cap;
};

static void line_raw(struct line *l, const char *t)
{
    size_t n = strlen(t);
    if (l->len + n + 1 > l->cap) {
        l->cap = (l->len + n + 1) * 2;
        l->b = realloc(l->b, l->cap);
        if (l->b == NULL)
            abort();
    }
    memcpy(l->b + l->len, t, n + 1);
    l->len += n;
}

static void line_field(struct line *l, const char *name, const char *value)
{
    if (value == NULL || *value == '\0')
        return;
    line_raw(l, name);
    if (l->cap < 8) {
        l->cap = 64;
        l->b = realloc(l->b, l->cap);
    }
    append_escaped(&l->b, &l->len, &l->cap, value);
}

void sasl_dovecot_start(petrel_sasl_request *r, const petrel_sasl_context *c, const char *mech,
                     const unsigned char *initial, size_t len, void **state)
{
    struct dovecot_client *dc = client_of(c);
    if (ensure_connected(dc, c) != 0) {
        sasl_answer(r, PETREL_SASL_TEMPFAIL, NULL, 0, NULL, "Can't connect to authentication server");
        return;
    }
    struct dc_exchange *x = calloc(1, sizeof(*x));
    if (x == NULL)
        abort();
    x->dc = dc;
    x->id = ++dc->next_id;
    x->req = r;
    struct line l = { NULL, 0, 0 };
    char head[64];
    snprintf(head, sizeof(head), "AUTH\t%u\t", x->id);
    line_raw(&l, head);
    append_escaped(&l.b, &l.len, &l.cap, mech);
    line_field(&l, "\tservice=", c->service);
    line_raw(&l, "\tnologin");
    line_field(&l, "\tlip=", c->server_addr);
    line_field(&l, "\trip=", c->client_addr);
    line_field(&l, "\tlport=", c->server_port);
    line_field(&l, "\trport=", c->client_port);
    if (c->tls)
        line_raw(&l, "\tsecured");
    if (PETREL_SASL_CONTEXT_HAS(c, client_cert_verified) && c->client_cert_verified)
        line_raw(&l, "\tvalid-client-cert");
    line_field(&l, "\tsession=", c->session_id);
    if (initial) {
        /* an empty initial response ("AUTH MECH =") is resp= with nothing */
        char *resp = sasl_b64_encode(initial, len);
        line_raw(&l, "\tresp=");
        line_raw(&l, resp);
        explicit_bzero(resp, strlen(resp));
        free(resp);
    }
    line_raw(&l, "\n");
    char *tail = l.b;
    x->auth_line = tail;
    x->next = dc->exchanges;
    dc->exchanges = x;
    *state = x;
    if (dc->state == DC_READY)
        send_auth(dc, x);
}

void sasl_dovecot_step(petrel_sasl_request *r, const petrel_sasl_context *c, void *state, const unsigned char *resp,
                    size_t len)
{
    struct dc_exchange *x = state;
    struct dovecot_client *dc = client_of(c);
    if (x == NULL || x->done || dc->state != DC_READY) {
        sasl_answer(r, PETREL_SASL_TEMPFAIL, NULL, 0, NULL, "Connection lost to authentication server");
        return;
    }
    x->req = r;
    char *b64 = sasl_b64_encode(resp, len);
    if (b64 == NULL)
        abort();   /* out of memory, as for line below */
    size_t need = strlen(b64) + 32;
    char *line = malloc(need);
    if (line == NULL)
        abort();
    int n = snprintf(line, need, "CONT\t%u\t%s\n", x->id, b64);
    dc_write(dc, line, (size_t)n);
    explicit_bzero(line, (size_t)n);
    explicit_bzero(b64, strlen(b64));
    free(line);
    free(b64);
}

void sasl_dovecot_end(const petrel_sasl_context *c, void *state)
{
    struct dc_exchange *x = state;
    if (x == NULL)
        return;
    struct dovecot_client *dc = client_of(c);
    if (!x->done) {
        /* Ended before Dovecot answered (a timeout, "*", the client left):
         * forget the id, so that Dovecot's late line for it is ignored
         * (the request goes stale with the exchange). */
        exchange_unlink(dc, x);
    }
    exchange_free(x);
}


void sasl_dovecot_fini(struct sasl_module *sm)
{
    struct dovecot_client *dc = sm->dovecot;
    if (dc == NULL)
        return;
    dc_close(dc, NULL);
    for (size_t i = 0; i < dc->nmechs; i++)
        free((char *)dc->mechs[i].name);
    for (size_t i = 0; i < dc->nnew; i++)
        free((char *)dc->new_mechs[i].name);
    free(dc->in);
    free(dc->out);
    free(dc->path);
    free(dc);
    sm->dovecot = NULL;
}
