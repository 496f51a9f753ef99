/* The privileged mailbox helper (see mailbox_helper.c). */
#ifndef PETREL_QMGR_MAILBOX_HELPER_H
#define PETREL_QMGR_MAILBOX_HELPER_H

#include <stddef.h>

struct cfg;
struct queue;
struct dlv_result;

/* Runs the helper on its end of a SOCK_SEQPACKET socketpair, as root, until
 * the queue manager closes the other end. */
int mailbox_helper_main(int fd, const struct cfg *cfg, struct queue *queue);
/* The parameters the helper reads (config/bind.h). */
struct cfg_bind_table;
extern const struct cfg_bind_table mailbox_helper_bind_table;
/* Queue manager side: one request (kind "maildir", "mbox" or "pipe"), and
 * reading one result (0; -1 nothing or malformed; -2 the helper is gone). */
/* kind "argv": path holds path_len bytes, the argv words each followed by NUL.
 * size_limit: the job's file_size_limit (mailbox_size_limit, ...), 0 none. */
int mailbox_helper_request(int fd, const char *id, const char *kind, const char *path, size_t path_len, long uid,
                           long gid, const char *queue_id, const char *sender, const char *rcpt, size_t rcpt_index,
                           const char *nexthop, const char *delimiter, const char *flags,
                           unsigned long long size_limit);
int mailbox_helper_read(int fd, char *id, size_t idsize, struct dlv_result *r);

#endif
