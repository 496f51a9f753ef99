/*
 * The spool: queue IDs, queue files (writing, reading, in-place recipient
 * marks), moves between queue directories and the start-up recovery scan.
 *
 * A queue file holds the envelope and the message content in one file, so a
 * message is one create, one streamed write sequence, one fdatasync and a
 * share of one group-committed directory fsync. The binary format (records
 * with explicit lengths, never text lines) is documented in queue_file.c and
 * doc/queue-format.md.
 *
 * Threading: a struct queue may be shared by threads (queue_writer_commit is
 * thread-safe and group-commits directory fsyncs); a writer or a message
 * belongs to one thread at a time. Nothing here keeps global state.
 */
#ifndef PETREL_QUEUE_QUEUE_H
#define PETREL_QUEUE_QUEUE_H

#include <stddef.h>
#include <sys/types.h>

#include <petrel/pool.h>

enum queue_dir { QDIR_INCOMING, QDIR_ACTIVE, QDIR_DEFERRED, QDIR_HOLD, QDIR_CORRUPT, QDIR_COUNT };

struct queue;   /* an opened queue_directory: directory fds + group-commit state */

/* Opens (and with create, makes missing, mode 0700) queue_directory and its
 * subdirectories. On failure returns NULL and, when error is not NULL, a
 * malloc'ed message the caller free()s. */
struct queue *queue_open(const char *queue_directory, int create, char **error);
void queue_close(struct queue *q);
const char *queue_dir_name(enum queue_dir dir);   /* "incoming", "active", ... */
int queue_dir_fd(const struct queue *q, enum queue_dir dir);

/* Counters for tests and metrics. dir_syncs < commits shows group commit working. */
struct queue_stats {
    unsigned long long commits;     /* successful queue_writer_commit calls */
    unsigned long long dir_syncs;   /* fsync(incoming/) calls issued by group commit */
};
void queue_get_stats(struct queue *q, struct queue_stats *out);

/*
 * Queue IDs: 19 characters of Crockford base-32 ("0-9A-Z" without I L O U),
 * whose ASCII order is numeric order:
 *   11 chars  microseconds since the epoch (55 bits, good until year 3111)
 *    5 chars  process tag (low 25 bits of what queue_id_gen_init was given)
 *    3 chars  per-generator counter within one microsecond (15 bits)
 * IDs from one generator strictly increase; IDs from different generators sort
 * by arrival time to the microsecond. A generator never reuses a
 * (time, counter) pair: if the clock stalls or steps back it keeps counting
 * from the last time it used. Two processes given the same tag could only
 * collide within one microsecond; queue files are created O_EXCL and the
 * writer then takes the next ID, so a collision never overwrites a message.
 */
#define QUEUE_ID_LEN 19
#define QUEUE_ID_MAX 32   /* buffer size for an ID and its NUL */

struct queue_id_gen {
    unsigned process_tag;            /* masked to 25 bits */
    unsigned long long last_usec;    /* time part of the last ID */
    unsigned counter;                /* counter part of the last ID */
};
void queue_id_gen_init(struct queue_id_gen *g, unsigned process_tag);
void queue_id_next(struct queue_id_gen *g, char out[QUEUE_ID_MAX]);
/* 1 when s has the shape of a queue ID (length and alphabet), else 0. */
int queue_id_valid(const char *s);
/* The arrival time encoded in an ID; -1 if it is not a valid ID. */
int queue_id_time(const char *id, long long *sec, long *usec);

#define QUEUE_NOTIFY_SUCCESS 1u
#define QUEUE_NOTIFY_FAILURE 2u
#define QUEUE_NOTIFY_DELAY   4u
#define QUEUE_NOTIFY_NEVER   8u

#define QUEUE_F_8BITMIME   1u
#define QUEUE_F_SMTPUTF8   2u
#define QUEUE_F_BINARYMIME 4u
/* receive_override_options = no_address_mappings: the router applies no
 * canonical, masquerade or virtual alias mapping to this message. */
#define QUEUE_F_NO_ADDRESS_MAPPINGS 8u
/* A header/body check's REDIRECT: the recipients are the redirect address,
 * which gets no canonical or virtual alias mapping (Postfix's rule). */
#define QUEUE_F_REDIRECTED 16u

#define QUEUE_RET_UNSET 0
#define QUEUE_RET_FULL  1
#define QUEUE_RET_HDRS  2

struct queue_rcpt {            /* one envelope recipient */
    const char *address;       /* as given in RCPT TO (no <>), never "" */
    const char *orcpt;         /* RFC 3461 ORCPT "rfc822;xtext-decoded" or NULL */
    unsigned notify;           /* QUEUE_NOTIFY_* bits; 0 = not given */
};

/* The maildrop file a local submission was made from (the pickup role
 * writes it as a 'D' record). It makes the hand-over from maildrop/ to the
 * queue idempotent: until its maildrop file is gone, a queue file that
 * names it proves the file was already queued (doc/queue-format.md,
 * "Maildrop origin"). */
struct queue_origin {
    const char *name;              /* the maildrop file's name (a queue ID) */
    unsigned long long dev, ino;   /* its device and inode, so a later file of that name is never taken for it */
    int last;                      /* 1: the last queue file made from it (no non-delivery notice follows) */
};

/* Strings are C strings: a field cannot carry a NUL byte (smtpd rejects
 * xtext that decodes to one, as Postfix does). Every other byte, CR and LF
 * included, is stored verbatim and cannot start a record. */
struct queue_envelope {
    const char *sender;        /* "" for the null sender */
    const char *envid;         /* RFC 3461 ENVID (decoded) or NULL */
    int ret;                   /* QUEUE_RET_* */
    unsigned flags;            /* QUEUE_F_* */
    const char *client_name, *client_addr, *client_port, *helo, *protocol;   /* NULL = absent */
    const char *tls_info;      /* e.g. "TLSv1.3 with cipher ... (256/256 bits)" or NULL */
    const char *sasl_method, *sasl_username;   /* NULL when not authenticated */
    const char *content_filter;/* "transport:nexthop" the message goes to before anything else
                                  (content_filter, a FILTER action), or NULL */
    const char *log_ident;     /* the original queue ID a content filter forwarded (XFORWARD IDENT),
                                  which the SMTP client forwards in turn; NULL: this queue ID */
    const struct queue_origin *origin;   /* from maildrop/ (the pickup role), else NULL */
    long long arrival_sec;
    long arrival_usec;
    size_t rcpt_count;         /* at least 1 */
    const struct queue_rcpt *rcpts;
};

/* Limits every writer obeys and every reader enforces. */
#define QUEUE_FIELD_MAX    65536u              /* one string field */
#define QUEUE_ENVELOPE_MAX (16u * 1024 * 1024)  /* all envelope records */

/* ---- writing ---- */

struct queue_writer;
/* Creates incoming/ID (O_CREAT|O_EXCL, 0600) and buffers the envelope
 * records; content follows. NULL + errno on failure (EINVAL for an envelope
 * breaking the limits above or with no recipient). */
struct queue_writer *queue_writer_create(struct queue *q, struct queue_id_gen *gen,
                                         const struct queue_envelope *env, char *id_out);
/* Content bytes (RFC 5322, CRLF line ends, dot-unstuffed), buffered in 64 KiB
 * so small messages reach the disk in one write(2). -1 + errno (ENOSPC...).
 * An error is sticky: later writes and the commit fail with the same errno,
 * so the caller may keep feeding DATA and report once at the end. */
int queue_writer_write(struct queue_writer *w, const void *data, size_t len);
/* The content's size: as written, or the sum of the content map's ranges. */
size_t queue_writer_content_size(const struct queue_writer *w);
/* Reads back up to len content bytes written so far, from content offset
 * offset (flushing the writer's buffer first), through the content map once
 * one is set. Returns the bytes read, or -1 with errno. */
ssize_t queue_writer_read_content(struct queue_writer *w, unsigned long long offset, void *buf, size_t len);
/* Cuts the content back to its first size bytes (writing goes on from
 * there): a module's new body replaces the old one in the same file, under
 * the same queue ID. Not after queue_writer_edit_begin (EINVAL). Returns 0,
 * or -1 with errno (sticky, as a write's). */
int queue_writer_truncate(struct queue_writer *w, unsigned long long size);
/*
 * Edits at end of message (format version 2, doc/queue-format.md): the
 * message is never copied. Bytes written after queue_writer_edit_begin are
 * data, not content: replacement headers, a replacement body. The content
 * becomes the list of ranges queue_writer_set_content_map names (offsets
 * from the content start, e.g. [new headers][the original rest]); a new
 * envelope (sender, recipients, flags) replaces the first one entirely and
 * is written after the data at commit. Nothing of it is visible before the
 * commit, so a crash at any point leaves an uncommitted file that recovery
 * removes, or the committed one.
 */
struct queue_segment {
    unsigned long long offset;   /* from the first content byte (the data region's start) */
    unsigned long long length;   /* > 0 */
};
/* From now on writes append data that is content only when a map names it.
 * Returns the data size so far (the offset the next byte gets). */
unsigned long long queue_writer_edit_begin(struct queue_writer *w);
/* Bytes in the data region so far (content as received plus edit data). */
unsigned long long queue_writer_data_size(const struct queue_writer *w);
/* The content is these n ranges of the data region, in order (copied). -1 +
 * EINVAL when one runs past what was written or is empty. */
int queue_writer_set_content_map(struct queue_writer *w, const struct queue_segment *segs, size_t n);
/* The envelope the file is committed with, in place of the one given at
 * creation (same checks as queue_writer_create; -1 + EINVAL). */
int queue_writer_set_envelope(struct queue_writer *w, const struct queue_envelope *env);
/* Writes the end record, fdatasyncs the file, then waits for a directory
 * fsync of incoming/ that started after the file was created (group commit:
 * concurrent committers share one). BLOCKING: call it off the event loop.
 * Returns 0, or -1 with errno; then call queue_writer_abort. A failed fsync
 * is never retried. */
int queue_writer_commit(struct queue_writer *w);
void queue_writer_abort(struct queue_writer *w);   /* unlinks the file, frees the writer */
/* Whether a writer is still at work on the queue file open at fd (any
 * mode, read-only is enough): every writer holds an exclusive flock(2) on
 * its file from queue_writer_create until it closes it (it unlocks just
 * before the close), and the kernel drops it when the writer dies (just
 * after the close event: an IN_CLOSE_WRITE of a dead writer may still find
 * it held once). Returns 1 when a writer holds it; 0 when
 * none does (fd then holds the lock itself until it is closed, so no
 * writer can appear: names are created O_EXCL); -1 with errno when the
 * file system cannot tell (no flock). */
int queue_file_writer_active(int fd);
void queue_writer_free(struct queue_writer *w);    /* after a successful commit */
const char *queue_writer_id(const struct queue_writer *w);

/* ---- reading and marking ---- */

/* Recipient delivery state, kept in a status byte that is rewritten in
 * place. DELIVERED and BOUNCED are final; PENDING and DEFERRED still need
 * delivery. */
enum queue_rcpt_status {
    QUEUE_RCPT_PENDING = 0,
    QUEUE_RCPT_DEFERRED = 1,
    QUEUE_RCPT_DELIVERED = 2,
    QUEUE_RCPT_BOUNCED = 3,
};
#define QUEUE_RCPT_STATUS_MAX QUEUE_RCPT_BOUNCED
static inline int queue_rcpt_status_final(int status)
{
    return status == QUEUE_RCPT_DELIVERED || status == QUEUE_RCPT_BOUNCED;
}
/* A DSN enhanced status code x.y.z packed as x*1000000 + y*1000 + z (0 = none). */
#define QUEUE_DSN_CODE(x, y, z) ((unsigned)(x) * 1000000u + (unsigned)(y) * 1000u + (unsigned)(z))

struct queue_rcpt_state {
    int status;                /* enum queue_rcpt_status */
    unsigned dsn_code;         /* QUEUE_DSN_CODE or 0 */
    off_t status_offset;       /* file offset of the status byte (dsn code: next 4 bytes) */
};

/* Read the content only through queue_content_pread: in a version 2 file
 * it is a list of ranges of the data region, not one run. */
struct queue_message {
    const char *id;
    struct queue_envelope env;          /* env.rcpts[i] pairs with rcpt_state[i] */
    struct queue_rcpt_state *rcpt_state;
    size_t pending_count;               /* recipients not yet final */
    off_t content_offset;               /* the data region's first byte */
    unsigned long long content_length;  /* the message's size */
    const struct queue_segment *segments;   /* NULL: the content is content_length bytes at content_offset */
    size_t segment_count;
    int version;                        /* the file's format version (1 or 2) */
    off_t file_size;
};

/* THE content reader: every consumer of a stored message (delivery agents,
 * bounces, petrelctl, module readers) reads through it. Up to len bytes of
 * the content from content position off (0 = the first byte of the
 * message) of the file fd msg was read from; returns the bytes read (> 0,
 * maybe fewer than len), 0 at or past the end, or -1 with errno (EIO: the
 * file is shorter than its envelope says). */
ssize_t queue_content_pread(int fd, const struct queue_message *msg, unsigned long long off, void *buf, size_t len);

/* Reads and validates a queue file: magic and version, every record length
 * against the envelope size, the end record against the file size, the
 * envelope checksum. All memory (strings, arrays, the error message) comes
 * from pool. Returns 0, or -1 with errno and, when error is not NULL, a
 * precise reason:
 *   ENODATA  no valid end record: a file whose writing never finished
 *   EBADMSG  a damaged or foreign file
 *   other    the system error from open/read (ENOENT...)  */
int queue_message_read(int dirfd, const char *id, petrel_pool *pool,
                       struct queue_message *out, char **error);
/* The same on an open file (e.g. opened O_RDWR to mark it afterwards);
 * id only names the message in messages. */
int queue_message_read_fd(int fd, const char *id, petrel_pool *pool,
                          struct queue_message *out, char **error);

/* Rewrites a recipient's status byte in place with one pwrite(2), as Postfix
 * marks records done. No fsync: losing a mark in a crash means a repeated
 * delivery attempt, never a lost message; fsync(fd) if a caller needs more.
 * Updates msg->rcpt_state[i] too. fd must be the file msg was read from,
 * opened for writing. */
int queue_mark_rcpt(int fd, struct queue_message *msg, size_t rcpt_index, int status);
/* Same, also storing the DSN code (one 5-byte pwrite; the status byte is
 * authoritative if a crash tears it from the code). */
int queue_mark_rcpt_dsn(int fd, struct queue_message *msg, size_t rcpt_index,
                        int status, unsigned dsn_code);

/* ---- directories ---- */

/* Renames ID from one queue directory to another. No fsync: the file itself
 * is already durable and a rename lost in a crash leaves the message in its
 * old directory (incoming/ is recovered into active/, deferred/ and active/
 * are both scheduled), so nothing accepted is lost. */
int queue_move(struct queue *q, const char *id, enum queue_dir from, enum queue_dir to);
/* Rename, then fsync of both directories, for moves whose loss would change
 * the outcome (into hold/ for quarantine). Skipped with PETREL_TEST_NO_FSYNC. */
int queue_move_durable(struct queue *q, const char *id, enum queue_dir from, enum queue_dir to);
/* Unlinks ID from dir (after final delivery). */
int queue_remove(struct queue *q, const char *id, enum queue_dir dir);

/* Streams a directory, calling cb for each entry whose name is a queue ID
 * (no listing is held in memory; entries added or removed during the scan
 * may or may not be seen, as readdir(3) says). 0 or -1 + errno. */
int queue_scan(struct queue *q, enum queue_dir dir, void (*cb)(void *ctx, const char *id), void *ctx);

/* Makes sure the maildrop file a queue file came from is gone (env->origin
 * with last set; anything else is a no-op returning 0): removes it when it
 * is still there with the recorded device and inode, then, with sync, makes
 * maildrop/ durable - also when the file was already gone, since the pickup
 * role's own unlink is not fsynced. Every reader that takes a queue file
 * out of incoming/ calls it first, so a message is never delivered while
 * the maildrop file it came from could be picked up again. Returns 1 when
 * it removed the file, 0 when there was nothing to remove, -1 with errno. */
int queue_origin_release(struct queue *q, const struct queue_envelope *env, int sync);
/* fsync of maildrop/ (after queue_origin_release calls without sync). */
int queue_origin_sync(struct queue *q);

struct queue_recover_stats {
    size_t removed_incomplete;   /* incoming/ files never finished: deleted */
    size_t recovered_incoming;   /* complete incoming/ files moved to active/ */
    size_t moved_to_corrupt;     /* damaged files (any directory but corrupt/) */
    size_t active, deferred;     /* messages reported to found() */
    size_t held;                 /* valid messages left in hold/ */
    size_t ignored;              /* names that are not queue IDs, or not regular files */
    size_t maildrop_released;    /* maildrop files removed because their message was queued */
};
/* Start-up recovery; must run before any writer of this queue exists (a file
 * being written looks exactly like an abandoned one). In incoming/: files
 * without a valid end record are deleted ("ID: removed incomplete queue
 * file"), complete ones move to active/. Every file in incoming/, active/,
 * deferred/ and hold/ is validated; a damaged one moves to corrupt/ (warning
 * "ID: moving damaged queue file to corrupt: REASON"). found (may be NULL)
 * then sees every valid message of active/ and deferred/. stats may be NULL.
 * Returns 0, or -1 with errno when a directory could not be read. */
int queue_recover(struct queue *q, void (*found)(void *ctx, enum queue_dir dir, const char *id),
                  void *ctx, struct queue_recover_stats *stats);

#endif
