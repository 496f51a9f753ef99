/*
 * The master's half of module control commands (`petrelctl MODULE COMMAND
 * [ARGS]`): a channel to every smtpd worker, and the requests in flight
 * on them.
 *
 * Why an smtpd worker runs the command: the master loads the module set
 * but runs no module code (it stays root and never initialises a module),
 * and every smtpd worker has every module initialised (the queue manager
 * and pickup only those with their hooks). Module state that a command
 * reports or changes is shared (Redis, a file, shared memory), so any one
 * worker of the current generation answers for the node: the master picks
 * the first one that is up, never a draining one.
 *
 * The channel is a socketpair made at each fork (master end here, worker
 * end handed to smtpd_worker_main), framed with lib/ipc.h:
 *   master -> worker  IPC_MODCMD_REQUEST  id, module, command, args...
 *   worker -> master  IPC_MODCMD_REPLY    id, status, text
 * A request has a deadline here too (the module's own, plus a margin), so
 * a worker that hangs or exits still gets petrelctl an answer; a worker
 * that exits fails its requests at once.
 */
#include "config.h"

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>

#include "lib/buf.h"
#include "lib/ipc.h"
#include "lib/log.h"
#include "lib/xalloc.h"
#include "master/master_int.h"

#define MARGIN_MS 5000   /* beyond the module's own deadline, which the worker enforces */

struct modctl_request {
    struct modctl_request *next;
    struct modctl *mc;
    uint32_t id;
    int slot;
    struct bufferevent *client;       /* petrelctl's connection, owned until answered */
    struct event *timer;
    char *what;                       /* "greylist list", for messages */
};

struct modctl_channel {
    struct bufferevent *bev;          /* NULL: none (not an smtpd worker, or it went away) */
    struct modctl *mc;
    int slot;
};

struct modctl {
    struct event_base *base;
    modctl_reply_fn *reply;
    struct modctl_channel channels[MODCTL_MAX_SLOTS];
    struct modctl_request *requests;
    uint32_t next_id;
};

struct modctl *modctl_new(struct event_base *base, modctl_reply_fn *reply)
{
    struct modctl *mc = xcalloc(1, sizeof(*mc));
    mc->base = base;
    mc->reply = reply;
    for (int i = 0; i < MODCTL_MAX_SLOTS; i++) {
        mc->channels[i].mc = mc;
        mc->channels[i].slot = i;
    }
    return mc;
}

static void request_finish(struct modctl_request *r, int status, const char *text)
{
    struct modctl *mc = r->mc;
    for (struct modctl_request **p = &mc->requests; *p; p = &(*p)->next)
        if (*p == r) {
            *p = r->next;
            break;
        }
    if (r->timer)
        event_free(r->timer);
    mc->reply(r->client, status, text);
    free(r->what);
    free(r);
}

static void fail_slot(struct modctl *mc, int slot, const char *why)
{
    struct modctl_request *r = mc->requests;
    while (r) {
        struct modctl_request *next = r->next;
        if (r->slot == slot) {
            struct buf text = BUF_INIT;
            buf_printf(&text, "petrelctl %s: %s", r->what, why);
            request_finish(r, 1, text.data);
            buf_free(&text);
        }
        r = next;
    }
}

void modctl_free(struct modctl *mc)
{
    if (mc == NULL)
        return;
    for (int i = 0; i < MODCTL_MAX_SLOTS; i++)
        if (mc->channels[i].bev) {
            fail_slot(mc, i, "petreld is stopping");
            bufferevent_free(mc->channels[i].bev);
            mc->channels[i].bev = NULL;
        }
    free(mc);
}

void modctl_close_in_child(struct modctl *mc)
{
    /* A forked role must not keep the master's ends open: the worker at
     * the other end would never see its channel close. */
    for (int i = 0; i < MODCTL_MAX_SLOTS; i++)
        if (mc->channels[i].bev) {
            bufferevent_free(mc->channels[i].bev);   /* closes this copy of the master's end */
            mc->channels[i].bev = NULL;
        }
}

int modctl_pair(int fds[2])
{
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds) != 0) {
        msg_warn("socketpair for a worker's command channel: %s", strerror(errno));
        return -1;
    }
    return 0;
}

static void channel_read(struct bufferevent *bev, void *arg)
{
    struct modctl_channel *ch = arg;
    struct modctl *mc = ch->mc;
    struct evbuffer *in = bufferevent_get_input(bev);
    for (;;) {
        size_t len = evbuffer_get_length(in);
        if (len == 0)
            return;
        const char *data = (const char *)evbuffer_pullup(in, -1);
        struct ipc_msg msg;
        long n = ipc_parse(data, len, &msg);
        if (n == 0)
            return;
        if (n < 0 || msg.type != IPC_MODCMD_REPLY || msg.count < 3) {
            msg_warn("malformed frame on the command channel of worker slot %d: closing it", ch->slot);
            bufferevent_free(bev);
            ch->bev = NULL;
            fail_slot(mc, ch->slot, "the worker running it answered with a malformed frame");
            return;
        }
        char idtext[16], code[8];
        snprintf(idtext, sizeof(idtext), "%.*s", (int)(msg.fields[0].len < 15 ? msg.fields[0].len : 15),
                 msg.fields[0].data);
        snprintf(code, sizeof(code), "%.*s", (int)(msg.fields[1].len < 7 ? msg.fields[1].len : 7), msg.fields[1].data);
        uint32_t id = (uint32_t)strtoul(idtext, NULL, 10);
        int status = atoi(code);
        char *text = xmalloc(msg.fields[2].len + 1);
        memcpy(text, msg.fields[2].data, msg.fields[2].len);
        text[msg.fields[2].len] = '\0';
        evbuffer_drain(in, (size_t)n);
        for (struct modctl_request *r = mc->requests; r; r = r->next)
            if (r->id == id && r->slot == ch->slot) {
                request_finish(r, status >= 0 && status <= 2 ? status : 1, text);
                break;
            }
        /* No request: it timed out here already; the answer is dropped. */
        free(text);
    }
}

static void channel_event(struct bufferevent *bev, short what, void *arg)
{
    struct modctl_channel *ch = arg;
    (void)what;
    bufferevent_free(bev);
    ch->bev = NULL;
    fail_slot(ch->mc, ch->slot, "the smtpd worker running it exited before it answered");
}

void modctl_attach(struct modctl *mc, int slot, int fd)
{
    struct modctl_channel *ch = &mc->channels[slot];
    if (ch->bev) {
        bufferevent_free(ch->bev);
        fail_slot(mc, slot, "the smtpd worker running it exited before it answered");
    }
    evutil_make_socket_nonblocking(fd);
    ch->bev = bufferevent_socket_new(mc->base, fd, BEV_OPT_CLOSE_ON_FREE);
    bufferevent_setcb(ch->bev, channel_read, NULL, channel_event, ch);
    bufferevent_enable(ch->bev, EV_READ | EV_WRITE);
}

void modctl_worker_gone(struct modctl *mc, int slot)
{
    struct modctl_channel *ch = &mc->channels[slot];
    if (ch->bev) {
        bufferevent_free(ch->bev);
        ch->bev = NULL;
    }
    fail_slot(mc, slot, "the smtpd worker running it exited before it answered");
}

int modctl_has_channel(const struct modctl *mc, int slot)
{
    return mc->channels[slot].bev != NULL;
}

static void request_timeout(evutil_socket_t fd, short what, void *arg)
{
    struct modctl_request *r = arg;
    (void)fd;
    (void)what;
    struct buf text = BUF_INIT;
    buf_printf(&text, "petrelctl %s: the smtpd worker running it did not answer in time; see the log", r->what);
    msg_warn("module command %s: worker slot %d did not answer in time", r->what, r->slot);
    request_finish(r, 1, text.data);
    buf_free(&text);
}

void modctl_send(struct modctl *mc, int slot, struct bufferevent *client, unsigned timeout_ms, const char *module,
                 int argc, const char *const *argv)
{
    struct modctl_request *r = xcalloc(1, sizeof(*r));
    r->mc = mc;
    r->id = ++mc->next_id;
    r->slot = slot;
    r->client = client;
    struct buf what = BUF_INIT;
    buf_puts(&what, module);
    if (argc > 0)
        buf_printf(&what, " %s", argv[0]);
    r->what = xstrdup(what.data);
    buf_free(&what);
    r->next = mc->requests;
    mc->requests = r;
    struct buf b = BUF_INIT;
    char idtext[16];
    snprintf(idtext, sizeof(idtext), "%u", r->id);
    ipc_begin(&b, IPC_MODCMD_REQUEST);
    ipc_add_str(&b, idtext);
    ipc_add_str(&b, module);
    for (int i = 0; i < argc; i++)
        ipc_add_str(&b, argv[i]);
    ipc_finish(&b);
    bufferevent_write(mc->channels[slot].bev, b.data, b.len);
    buf_free(&b);
    unsigned ms = timeout_ms + MARGIN_MS;
    r->timer = evtimer_new(mc->base, request_timeout, r);
    struct timeval tv = { ms / 1000, (ms % 1000) * 1000 };
    evtimer_add(r->timer, &tv);
}
