/*
 * petrel-sendmail's parts shared by its delivery mode (sendmail.c) and its
 * SMTP-on-stdin mode -bs (sendmail_bs.c): the configuration it needs, the
 * run of petrel-postdrop that stores one message in the maildrop
 * directory, and the header pass that every local submission gets
 * (missing Date:, Message-ID: and From: added, Bcc: removed, recipients
 * extracted for -t), as Postfix's cleanup does for sendmail mail.
 */
#ifndef PETREL_TOOLS_SENDMAIL_H
#define PETREL_TOOLS_SENDMAIL_H

#include <stddef.h>
#include <sys/types.h>

#include <petrel/pool.h>
#include "lib/buf.h"
#include "queue/maildrop.h"
#include "queue/queue.h"

#define SM_HEADER_LIMIT (1024 * 1024)   /* memory for one header section */

struct sm_conf {
    const char *confdir;
    int default_confdir;             /* confdir is the compiled-in default */
    const char *myorigin, *myhostname, *mail_name;
    unsigned long long size_limit;   /* message_size_limit, 0 = none */
    const char *helper;              /* $command_directory/petrel-postdrop */
    const char *login;               /* the user's login name, for the default sender */
    petrel_pool *pool;
};

/* A message on its way into the maildrop: petrel-postdrop's process and the
 * stream to its standard input. */
struct sm_drop {
    pid_t pid;
    FILE *to_helper;
    int from_helper;                 /* the helper prints the file name here */
    struct maildrop_writer w;
};

/* Starts petrel-postdrop; 0, or an EX_* status after printing why. */
int sm_drop_open(struct sm_drop *d, const struct sm_conf *conf);
/* Ends the stream (end record) and waits: 0 when the message is durably in
 * the maildrop (its file name in id), else the helper's exit status (it has
 * printed the reason on standard error). */
int sm_drop_finish(struct sm_drop *d, char *id, size_t idsize);
/* Abandons the message: the helper removes its unfinished file. */
void sm_drop_cancel(struct sm_drop *d);

/* The address in canonical SMTP form, qualified with myorigin when it has
 * no domain; NULL with *why set when it cannot be one. */
const char *sm_qualify(const struct sm_conf *conf, const char *local, const char *domain, int sender,
                       const char **why);

/* The header pass: lines go in without their line end; the header section
 * is held (bounded by SM_HEADER_LIMIT) until it ends, then headers_done()
 * runs (for -t the recipients are known then) and everything is emitted
 * with CRLF line ends through the drop. */
struct sm_headers {
    const struct sm_conf *conf;
    int extract;                     /* -t */
    const char *sender;              /* envelope sender, for an added From: */
    const char *fullname;            /* -F */
    int skip_from_line;              /* drop a leading "From " line (sendmail mode) */
    /* results */
    int in_body;
    int overflow;                    /* header section over SM_HEADER_LIMIT */
    int have_from, have_date, have_msgid;
    struct buf section;              /* kept header lines, CRLF ended */
    char **to, **resent_to;          /* extracted addresses (raw header values) */
    size_t nto, nresent;
    /* private */
    int kind;                        /* the header being read: see sendmail_content.c */
    struct buf value;
    int lines;
    int seen_field;
};

void sm_headers_init(struct sm_headers *h, const struct sm_conf *conf, int extract, const char *sender,
                     const char *fullname, int skip_from_line);
/* Feeds one line. Returns 0 while in the header section, 1 when the empty
 * line has ended it, 2 when this line is no header and so is the body's
 * first (write it after sm_headers_emit), -1 when the header section is
 * too large. */
int sm_headers_line(struct sm_headers *h, const char *line, size_t len);
/* The header section as it will be stored (added headers first). */
int sm_headers_emit(struct sm_headers *h, struct maildrop_writer *w);
void sm_headers_free(struct sm_headers *h);

#endif
