/*
 * The smtpd worker's end of the master's command channel (master/modctl.c
 * has the other end and says why a worker runs module control commands):
 * each IPC_MODCMD_REQUEST frame (id, module, command, args) is handed to
 * the module runtime, and its answer goes back as IPC_MODCMD_REPLY (id,
 * status, text), in whatever order the commands finish.
 */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>

#include "lib/buf.h"
#include "lib/ipc.h"
#include "lib/log.h"
#include "lib/xalloc.h"
#include "module/runtime.h"
#include "smtpd/smtpd_int.h"

struct command_channel {
    struct bufferevent *bev;          /* NULL once the master's end closed */
};

struct command_answer {
    struct command_channel *ch;
    char id[16];
};

static void answered(void *arg, int status, const char *text)
{
    struct command_answer *a = arg;
    if (a->ch->bev) {
        struct buf b = BUF_INIT;
        char code[8];
        snprintf(code, sizeof(code), "%d", status);
        ipc_begin(&b, IPC_MODCMD_REPLY);
        ipc_add_str(&b, a->id);
        ipc_add_str(&b, code);
        ipc_add_str(&b, text ? text : "");
        ipc_finish(&b);
        bufferevent_write(a->ch->bev, b.data, b.len);
        buf_free(&b);
    }
    free(a);
}

static void channel_read(struct bufferevent *bev, void *arg)
{
    struct command_channel *ch = arg;
    struct evbuffer *in = bufferevent_get_input(bev);
    while (ch->bev && evbuffer_get_length(in) > 0) {
        size_t len = evbuffer_get_length(in);
        const char *data = (const char *)evbuffer_pullup(in, -1);
        struct ipc_msg msg;
        long n = ipc_parse(data, len, &msg);
        if (n == 0)
            return;
        if (n < 0 || msg.type != IPC_MODCMD_REQUEST || msg.count < 3) {
            msg_warn("malformed frame on the master's command channel: closing it");
            bufferevent_free(bev);
            ch->bev = NULL;
            return;
        }
        /* Copies: the frame is drained before the command runs (it may
         * answer at once, writing to this same bufferevent). */
        int argc = msg.count - 3;
        char **fields = xcalloc((size_t)msg.count + 1, sizeof(*fields));
        for (int i = 0; i < msg.count; i++) {
            fields[i] = xmalloc(msg.fields[i].len + 1);
            memcpy(fields[i], msg.fields[i].data, msg.fields[i].len);
            fields[i][msg.fields[i].len] = '\0';
        }
        evbuffer_drain(in, (size_t)n);
        struct command_answer *a = xcalloc(1, sizeof(*a));
        a->ch = ch;
        snprintf(a->id, sizeof(a->id), "%s", fields[0]);
        module_command_run(fields[1], fields[2], argc, (const char *const *)fields + 3, answered, a);
        for (int i = 0; i < msg.count; i++)
            free(fields[i]);
        free(fields);
    }
}

static void channel_event(struct bufferevent *bev, short what, void *arg)
{
    struct command_channel *ch = arg;
    (void)what;
    bufferevent_free(bev);
    ch->bev = NULL;   /* answers still to come are dropped */
}

void smtpd_command_channel_start(struct event_base *base, int fd)
{
    if (fd < 0)
        return;
    /* Lives as long as the process: late answers find it. */
    struct command_channel *ch = xcalloc(1, sizeof(*ch));
    evutil_make_socket_nonblocking(fd);
    ch->bev = bufferevent_socket_new(base, fd, BEV_OPT_CLOSE_ON_FREE);
    if (ch->bev == NULL) {
        msg_warn("cannot watch the master's command channel: petrelctl module commands will fail");
        return;
    }
    bufferevent_setcb(ch->bev, channel_read, NULL, channel_event, ch);
    bufferevent_enable(ch->bev, EV_READ | EV_WRITE);
}
