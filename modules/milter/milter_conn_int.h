/*
 * Inside one milter connection (milter_conn.h): the structures and the
 * functions the three parts share. milter_conn.c owns the connection's life,
 * its socket, timer, results and failures; milter_events.c sends events;
 * milter_reply.c reads and interprets what the milter answers. Nothing here
 * is for the connection's owner.
 */
#ifndef PETREL_MILTER_CONN_INT_H
#define PETREL_MILTER_CONN_INT_H

#include <stdint.h>

#include "milter_conn.h"

#define DEFAULT_CONNECT_MS 30000u
#define DEFAULT_COMMAND_MS 30000u
#define DEFAULT_CONTENT_MS 300000u
#define READ_CHUNK (64u * 1024u)
#define READ_ROUNDS 8              /* reads per readiness event, for fairness */
#define OUT_HIGH_WATER (256u * 1024u)
#define OUT_LOW_WATER (64u * 1024u)
#define OUT_LIMIT (16u * 1024u * 1024u)
#define DEFAULT_MAX_BODY ((size_t)1 << 30)   /* the module passes message_size_limit */

struct milter_settings {
    char name[512];
    milter_endpoint endpoint;
    int version;
    uint32_t offer;
    milter_default_action default_action;
    unsigned connect_ms, command_ms, content_ms;
    milter_macro_list macros[MILTER_MACRO_STAGES];
    size_t max_reply, max_body;
};

enum conn_state {
    S_CLOSED,
    S_CONNECTING,
    S_NEGOTIATING,
    S_READY,        /* negotiated, no CONNECT yet */
    S_SESSION,      /* CONNECT sent */
    S_ACCEPT_CON,   /* the milter accepted the connection */
    S_REJECT_CON,   /* refused at CONNECT/HELO: same reply from now on */
    S_ERROR,        /* failed: default action from now on */
};

/* A result that later calls repeat, with its own copy of the strings (a
 * multi-line reply can be long: the copy is allocated, and freed when the
 * sticky result is replaced or the connection freed). */
typedef struct sticky {
    int set;
    milter_result r;
    char *strings;
} sticky;

struct milter_conn {
    const milter_settings *s;
    milter_conn_ops ops;
    void *arg;
    int fd;
    int tcp;             /* fd is a TCP socket: re-arm TCP_QUICKACK after each read */
    enum conn_state state;
    size_t addr_index;
    int watching;
    int timer_armed;
    unsigned wait_ms;
    uint64_t progress_ms;

    /* negotiated */
    uint32_t version, actions, steps, np_mask;
    milter_macro_list *symlist[MILTER_MACRO_STAGES];

    /* the call in flight */
    int pending;         /* a call returned PENDING */
    int report;          /* ... and is finished: done() at the end of the handler */
    int awaiting;        /* the command whose reply we wait for */
    int draining;        /* PENDING until the output drains */
    int then_eom;        /* after this BODY's reply, send EOM */
    int last_sent;
    int unanswered;      /* an event went out with no reply due (NR_*) */

    /* session and transaction */
    int in_tx;
    int tx_accepted;     /* ACCEPT or DISCARD: no more events for this message */
    int content_started; /* EOH macros went out */
    int skip_cmd;        /* SKIP: further events of this command are not sent */
    int reuse_ok;        /* the last thing was an EOM answered with CONTINUE */
    sticky con;          /* REJECT_CON / ERROR reply */
    sticky tx;           /* a refusal that ended the message */
    sticky kept;         /* an answer that stands although the milter failed after it */
    char quarantine_out[128];
    char tx_quarantine[128];
    char session_quarantine[128];

    /* end of message */
    int body_replacing;
    int body_done;
    int edit_failed;
    int warned_actions;
    milter_body_norm norm;
    unsigned char *normbuf;

    /* buffers */
    milter_buf out;
    milter_buf chunk;
    milter_buf scratch;
    milter_reader reader;

    milter_result result;
    char result_reply[1024];
};

/* milter_conn.c */
uint64_t mc_now_ms(void);
void mc_say(milter_conn *c, milter_log_level level, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
void mc_sync_io(milter_conn *c);
void mc_close_socket(milter_conn *c);
void mc_free_message_buffers(milter_conn *c);
void mc_start_wait(milter_conn *c, unsigned ms);
void mc_result_clear(milter_conn *c);
void mc_result_set(milter_conn *c, milter_verdict v, int code, const char *enhanced, const char *text);
void mc_sticky_clear(sticky *st);
void mc_sticky_save(sticky *st, const milter_result *r);
void mc_sticky_use(milter_conn *c, const sticky *st);
void mc_complete(milter_conn *c);
void mc_fail(milter_conn *c, int conf, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
void mc_fail_later(milter_conn *c, const char *why);
int mc_flush_out(milter_conn *c);
void mc_quit_and_close(milter_conn *c);

/* milter_events.c */
const milter_macro_list *mc_macro_list(const milter_conn *c, int stage);
const char *mc_state_name(enum conn_state s);
void mc_end_message(milter_conn *c);
void mc_send_eom(milter_conn *c);

/* milter_reply.c */
void mc_read_input(milter_conn *c);

#endif
