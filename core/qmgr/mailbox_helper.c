/*
 * The privileged mailbox helper: when petreld starts as root, mailbox,
 * file and command deliveries must run as the mailbox's owner
 * (virtual_uid_maps, or the local user), which the queue manager, running
 * as mail_owner, cannot do. Before the queue manager drops its privileges
 * it forks this helper, which keeps root and does nothing else: it reads
 * delivery requests from a SOCK_SEQPACKET socketpair, and for each one
 * forks a child that switches to the owner's uid/gid and delivers. The
 * child sends the result back on the same socket (one datagram each, so
 * children never interleave).
 *
 * The helper trusts the queue manager only so far: it reads the message
 * from the queue itself (by queue ID, with its own descriptor), refuses
 * uid 0, and delivers only to paths under virtual_mailbox_base,
 * mail_spool_directory or the owner's home directory.
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "config/bind.h"
#include "config/cfg.h"
#include "deliver/deliver.h"
#include "deliver/local.h"
#include "lib/buf.h"
#include "lib/ipc.h"
#include "lib/fsutil.h"
#include "lib/log.h"
#include "lib/xalloc.h"
#include "qmgr/mailbox_helper.h"
#include "queue/queue.h"

enum { F_ID, F_KIND, F_PATH, F_UID, F_GID, F_QUEUE_ID, F_SENDER, F_RCPT, F_RCPT_INDEX, F_NEXTHOP, F_DELIM,
       F_FLAGS, F_SIZE_LIMIT, F_COUNT };

static char *field(const struct ipc_msg *m, int i)
{
    return xstrndup(m->fields[i].data, m->fields[i].len);
}

static int path_allowed(const char *path, const char *const *roots, size_t nroots)
{
    if (path[0] != '/' || strstr(path, "/../") || strstr(path, "/./"))
        return 0;
    for (size_t i = 0; i < nroots; i++) {
        const char *r = roots[i];
        size_t n = strlen(r);
        while (n > 1 && r[n - 1] == '/')
            n--;
        if (n > 1 && strncmp(path, r, n) == 0 && path[n] == '/')
            return 1;
    }
    return 0;
}

static void reply(int fd, const char *id, const struct dlv_result *r)
{
    struct buf b = BUF_INIT;
    char status[8];
    snprintf(status, sizeof(status), "%d", (int)r->status);
    ipc_begin(&b, IPC_MAILBOX_RESULT);
    ipc_add_str(&b, id);
    ipc_add_str(&b, status);
    ipc_add_str(&b, r->dsn);
    ipc_add_str(&b, r->relay);
    ipc_add_str(&b, r->text);
    char synced[32];
    snprintf(synced, sizeof(synced), "%.9f", r->sync_secs);
    ipc_add_str(&b, synced);
    ipc_finish(&b);
    ssize_t ignored = send(fd, b.data, b.len, MSG_EOR);
    (void)ignored;
    buf_free(&b);
}

/* In the child: become the owner and deliver one recipient. */
static void deliver_as_owner(int fd, const struct cfg *cfg, struct queue *queue, const struct ipc_msg *m)
{
    char *id = field(m, F_ID), *kind = field(m, F_KIND), *path = field(m, F_PATH);
    char *qid = field(m, F_QUEUE_ID), *sender = field(m, F_SENDER), *rcpt = field(m, F_RCPT);
    char *index = field(m, F_RCPT_INDEX), *nexthop = field(m, F_NEXTHOP), *delim = field(m, F_DELIM);
    uid_t uid = (uid_t)strtol(field(m, F_UID), NULL, 10);
    long gid_wanted = strtol(field(m, F_GID), NULL, 10);
    struct dlv_result r;
    struct passwd *pw = getpwuid(uid);
    /* No virtual_gid_maps entry: the owner's primary group. */
    gid_t gid = gid_wanted >= 0 ? (gid_t)gid_wanted : pw ? pw->pw_gid : (gid_t)uid;
    const char *roots[3] = { cfg_get(cfg, "virtual_mailbox_base"), cfg_get(cfg, "mail_spool_directory"),
                             pw ? pw->pw_dir : "/nonexistent" };
    if (uid == 0) {
        dlv_result_set(&r, DLV_DEFERRED, "4.3.0", "local", "mailbox helper: refusing to deliver as root");
        reply(fd, id, &r);
        return;
    }
    int alias_target = strcmp(kind, "pipe") == 0 || strcmp(kind, "file") == 0;
    if (alias_target) {
        /* An alias's |command or /file runs as default_privs and nobody
         * else, whatever the request says. */
        struct passwd *dp = getpwnam(cfg_get(cfg, "default_privs"));
        if (dp == NULL || dp->pw_uid != uid || dp->pw_uid == 0) {
            dlv_result_set(&r, DLV_DEFERRED, "4.3.0", "local",
                           "mailbox helper: alias command or file not as default_privs (uid %ld)", (long)uid);
            reply(fd, id, &r);
            return;
        }
    } else if (strcmp(kind, "argv") != 0 && !path_allowed(path, roots, 3)) {
        dlv_result_set(&r, DLV_DEFERRED, "4.3.0", "local",
                       "mailbox helper: %s is outside virtual_mailbox_base, mail_spool_directory and the owner's home",
                       path);
        reply(fd, id, &r);
        return;
    }
    /* The message, read with our own descriptor before giving up root. */
    petrel_pool *pool = petrel_pool_create(4096);
    struct queue_message msg;
    char *error = NULL;
    int qfd = openat(queue_dir_fd(queue, QDIR_ACTIVE), qid, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (qfd < 0 || queue_message_read_fd(qfd, qid, pool, &msg, &error) != 0) {
        dlv_result_set(&r, DLV_DEFERRED, "4.3.0", "local", "mailbox helper: cannot read queue file %s: %s", qid,
                       error ? error : strerror(errno));
        reply(fd, id, &r);
        return;
    }
    if (setgroups(1, &gid) != 0 || setgid(gid) != 0 || setuid(uid) != 0) {
        dlv_result_set(&r, DLV_DEFERRED, "4.3.0", "local", "mailbox helper: cannot switch to uid %ld: %s",
                       (long)uid, strerror(errno));
        reply(fd, id, &r);
        return;
    }
    size_t rcpt_index = (size_t)strtoul(index, NULL, 10);
    const char *addrs[1] = { rcpt };
    struct dlv_job job = {
        .queue_id = qid, .fd = qfd, .msg = &msg, .sender = sender, .nrcpt = 1, .rcpt_index = &rcpt_index,
        .rcpt_addr = addrs, .nexthop = nexthop,
        .file_size_limit = strtoull(field(m, F_SIZE_LIMIT), NULL, 10),
    };
    if (strcmp(kind, "maildir") == 0) {
        /* as the owner, like virtual(8) */
        if (fs_make_parents(path, 0700) != 0)
            local_result_dsn(&r, "4.3.0", "local", "maildir delivery failed: fsync a new parent directory", errno);
        else
            maildir_deliver(path, &job, 0, &r);
    } else if (strcmp(kind, "mbox") == 0 || (strcmp(kind, "file") == 0 && path[strlen(path) - 1] != '/')) {
        mbox_deliver(path, &job, 0, &r);
    } else if (strcmp(kind, "file") == 0) {
        maildir_deliver(path, &job, 0, &r);
    } else {
        /* "pipe": an alias's |command through /bin/sh, nothing from the
         * message pasted into it (pipe.c); "argv": a master.cf pipe
         * transport, its argv= words separated by NUL bytes. */
        const char *words[256];
        struct pipe_options opt;
        memset(&opt, 0, sizeof(opt));
        opt.shell_command = path;
        opt.expansion_filter = cfg_get(cfg, "command_expansion_filter");
        if (strcmp(kind, "argv") == 0) {
            opt.shell_command = NULL;
            size_t n = 0;
            const char *w = m->fields[F_PATH].data, *end = w + m->fields[F_PATH].len;
            while (w < end && n < 255) {
                size_t l = strnlen(w, (size_t)(end - w));
                words[n++] = xstrndup(w, l);
                w += l + 1;
            }
            words[n] = NULL;
            opt.argv = words;
            opt.service = nexthop;   /* the transport name, for relay= */
        }
        char *flags = field(m, F_FLAGS);
        for (const char *f = flags; *f; f++)
            opt.flags |= *f == 'F' ? PIPE_FLAG_FROM : *f == 'R' ? PIPE_FLAG_RETURN_PATH
                       : *f == 'D' ? PIPE_FLAG_DELIVERED_TO : *f == 'O' ? PIPE_FLAG_ORIG_TO
                       : *f == '>' ? PIPE_FLAG_QUOTE_FROM : 0u;
        opt.recipient_delimiter = delim;
        job.nexthop = "";
        pipe_deliver(&opt, &job, 0, &r);
    }
    reply(fd, id, &r);
}

/* What each request reads (the helper is a process of its own, forked by
 * the master before it drops privileges). */
static const struct cfg_bind helper_binds[] = {
    CFG_BIND_READ("virtual_mailbox_base"),
    CFG_BIND_READ("mail_spool_directory"),
    CFG_BIND_READ("default_privs"),
    CFG_BIND_READ("command_expansion_filter"),
};
const struct cfg_bind_table mailbox_helper_bind_table = CFG_BIND_TABLE("mailbox helper", helper_binds);

int mailbox_helper_main(int fd, const struct cfg *cfg, struct queue *queue)
{
    log_set_role("local");
    signal(SIGPIPE, SIG_IGN);
    /* Children are not waited for one by one: let the kernel reap them. */
    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = SIG_IGN;
    sa.sa_flags = SA_NOCLDWAIT;
    sigaction(SIGCHLD, &sa, NULL);
    char frame[IPC_MAX_FRAME > 65536 ? 65536 : IPC_MAX_FRAME];
    for (;;) {
        ssize_t n = recv(fd, frame, sizeof(frame), 0);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return 0;   /* the queue manager went away */
        struct ipc_msg m;
        if (ipc_parse(frame, (size_t)n, &m) <= 0 || m.type != IPC_MAILBOX_REQUEST || m.count != F_COUNT) {
            msg_warn("mailbox helper: malformed request ignored");
            continue;
        }
        pid_t pid = fork();
        if (pid == 0) {
            deliver_as_owner(fd, cfg, queue, &m);
            _exit(0);
        }
        if (pid < 0) {
            struct dlv_result r;
            dlv_result_set(&r, DLV_DEFERRED, "4.3.0", "local", "mailbox helper: fork: %s", strerror(errno));
            char *id = field(&m, F_ID);
            reply(fd, id, &r);
            free(id);
        }
    }
}

int mailbox_helper_request(int fd, const char *id, const char *kind, const char *path, size_t path_len, long uid,
                           long gid, const char *queue_id, const char *sender, const char *rcpt, size_t rcpt_index,
                           const char *nexthop, const char *delimiter, const char *flags,
                           unsigned long long size_limit)
{
    struct buf b = BUF_INIT;
    char n1[32], n2[32], n3[32], n4[32];
    snprintf(n4, sizeof(n4), "%llu", size_limit);
    snprintf(n1, sizeof(n1), "%ld", uid);
    snprintf(n2, sizeof(n2), "%ld", gid);
    snprintf(n3, sizeof(n3), "%zu", rcpt_index);
    ipc_begin(&b, IPC_MAILBOX_REQUEST);
    ipc_add_str(&b, id);
    ipc_add_str(&b, kind);
    ipc_add(&b, path ? path : "", path ? path_len : 0);
    ipc_add_str(&b, n1);
    ipc_add_str(&b, n2);
    ipc_add_str(&b, queue_id);
    ipc_add_str(&b, sender);
    ipc_add_str(&b, rcpt);
    ipc_add_str(&b, n3);
    ipc_add_str(&b, nexthop ? nexthop : "");
    ipc_add_str(&b, delimiter ? delimiter : "");
    ipc_add_str(&b, flags ? flags : "");
    ipc_add_str(&b, n4);
    ipc_finish(&b);
    ssize_t sent = send(fd, b.data, b.len, MSG_EOR);
    buf_free(&b);
    return sent < 0 ? -1 : 0;
}

int mailbox_helper_read(int fd, char *id, size_t idsize, struct dlv_result *r)
{
    char frame[4096];
    ssize_t n = recv(fd, frame, sizeof(frame), MSG_DONTWAIT);
    if (n <= 0)
        return n == 0 ? -2 : -1;
    struct ipc_msg m;
    if (ipc_parse(frame, (size_t)n, &m) <= 0 || m.type != IPC_MAILBOX_RESULT || m.count != 6)
        return -1;
    snprintf(id, idsize, "%.*s", (int)m.fields[0].len, m.fields[0].data);
    char status[8];
    snprintf(status, sizeof(status), "%.*s", (int)(m.fields[1].len < 7 ? m.fields[1].len : 7), m.fields[1].data);
    char dsn[16], relay[320];
    snprintf(dsn, sizeof(dsn), "%.*s", (int)(m.fields[2].len < 15 ? m.fields[2].len : 15), m.fields[2].data);
    snprintf(relay, sizeof(relay), "%.*s", (int)(m.fields[3].len < 319 ? m.fields[3].len : 319), m.fields[3].data);
    int st = atoi(status);
    dlv_result_set(r, st == DLV_SENT ? DLV_SENT : st == DLV_BOUNCED ? DLV_BOUNCED : DLV_DEFERRED, dsn, relay, "%.*s",
                   (int)(m.fields[4].len < 511 ? m.fields[4].len : 511), m.fields[4].data);
    char synced[32];
    snprintf(synced, sizeof(synced), "%.*s", (int)(m.fields[5].len < 31 ? m.fields[5].len : 31), m.fields[5].data);
    double secs = strtod(synced, NULL);
    r->sync_secs = secs > 0 && secs < 1e6 ? secs : 0;
    return 0;
}
