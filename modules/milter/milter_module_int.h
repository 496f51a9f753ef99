/*
 * modules/milter: what the module's own files share (milter_module.c: the
 * hooks; milter_config.c: the configuration; milter_session.c: running an
 * event through the chain of milters; milter_edits.c: the module's copy of the headers and
 * the milters' modifications; milter_maps.c: smtpd_milter_maps;
 * milter_breaker.c: the circuit breaker). Not an interface: only this folder includes it.
 */
#ifndef PETREL_MILTER_MODULE_INT_H
#define PETREL_MILTER_MODULE_INT_H

#include <stddef.h>

#include <petrel/plugin.h>

#include "milter_conn.h"

/* configuration (milter_config.c) */

/* The circuit breaker of one milter address, shared by every profile that
 * lists it, per process (each smtpd worker has its own): after
 * milter_circuit_breaker_failures consecutive failures the milter is not
 * asked (its default action applies at once) until
 * milter_circuit_breaker_backoff has passed; then one session tries it
 * (the probe) while the others still skip it; a probe that fails starts a
 * new back-off, an answer closes the breaker. Logged once per change. */
typedef struct breaker {
    char *name;                  /* the address as configured */
    unsigned failures;           /* consecutive */
    int open;                    /* skipping (or probing) */
    unsigned long long retry_at_ms;   /* open: the next probe may start then (CLOCK_MONOTONIC) */
} breaker;

typedef struct milter_list {
    milter_settings **items;
    breaker **breakers;          /* of each item (NULL in check()) */
    size_t n;
} milter_list;

/* One service's milters and macro values. Services whose values are all
 * the same share one profile: parsed, checked and resolved once, in init. */
typedef struct profile {
    char *key;                /* every value it was built from (see profile_key) */
    milter_list list;
    char *myhostname, *daemon_name, *macro_v;
    char *service;            /* a service it was built for (NULL: main.cf's), for lists built later */
    int smtpd;                /* an smtpd_milters profile (not pickup's non_smtpd_milters) */
    petrel_table **milter_maps;  /* smtpd_milter_maps, in order (NULL: none) */
    size_t nmilter_maps;
    /* milter_macro_defaults: names with braces ("{auth_type}") */
    char **default_names, **default_values;
    size_t ndefaults;
} profile;

/* A milter list an smtpd_milter_maps lookup gave, for one profile. */
typedef struct map_list {
    const struct profile *prof;
    char *value;
    milter_list list;
} map_list;

typedef struct module_conf {
    profile **profiles;
    size_t nprofiles;
    /* master.cf's services (petrel_service_at) and the profile of each */
    char **services;
    profile **service_profiles;
    size_t nservices;
    profile *main_smtpd, *main_non_smtpd;   /* main.cf's, for a service not listed */
    breaker **breakers;
    size_t nbreakers;
    /* the lists smtpd_milter_maps gave, built on first use (milter_maps.c) */
    struct map_list *map_lists;
    size_t nmap_lists;
    unsigned breaker_failures;   /* milter_circuit_breaker_failures; 0: no breaker */
    unsigned breaker_backoff_ms; /* milter_circuit_breaker_backoff */
} module_conf;


/* a session (milter_session.c) */

enum event { EV_CONNECT, EV_HELO, EV_MAIL, EV_RCPT, EV_DATA, EV_EOM, EV_UNKNOWN };


enum step { ST_OPEN, ST_CONNECT, ST_HELO, ST_MAIL, ST_RCPT, ST_DATA, ST_HEADER, ST_EOH, ST_BODY, ST_EOM,
            ST_UNKNOWN };

typedef struct header {
    char *name;
    char *value;        /* the text after the colon, as in the message */
} header;

struct session;

typedef struct link {
    struct session *ss;
    milter_conn *conn;
    petrel_watch *watch;
    int watch_fd, watch_events;
    petrel_timer *timer;
    breaker *breaker;
    int skipped;              /* the breaker was open: the milter is not asked this session */
    int failure_counted;      /* its failure went to the breaker */
} link;

typedef struct session {
    petrel_module *m;
    petrel_session *s;        /* the handle (checked by the core: safe after the session ends) */
    module_conf *conf;
    const profile *profile;   /* the session's service's milters and macro values */
    link *links;
    size_t n;

    /* the event in progress */
    enum event event;
    size_t cur;
    enum step step;
    int waiting;              /* a call on links[cur] is pending */
    int in_hook;
    int finished;
    petrel_pending *pending;
    petrel_verdict verdict;
    int code;
    char enhanced[16];
    char text[PETREL_REPLY_TEXT_MAX + 1];
    char *more_lines;         /* a multi-line reply: its lines after the first, each after a '\n' (malloc) */

    /* for the events and the macros */
    char *helo, *sender, *rcpt;
    char *rcpt_refusal;       /* RCPT of a recipient our checks refused (SMFIP_RCPT_REJ): the reply, else NULL */
    char *unknown_cmd;        /* the unknown command's line (SMFIC_UNKNOWN) */
    const char **rcpt_argv, **mail_argv;   /* "<address>", then each ESMTP parameter, then NULL */
    char *mail_arg, *rcpt_arg;            /* their strings */
    char underscore[600];
    char rcpt_macro[64];      /* {rcpt_host} of a refused recipient */
    int in_tx;
    struct tx_end *tx_end;     /* the open transaction's end watch (milter_tx_begin), else NULL */
    int tx_quarantined;
    int tx_edits_stopped;      /* milter_header_checks rejected or discarded: no more edits (Postfix) */
    /* edits held while milter_header_checks waits for a remote table (milter_edits.c) */
    struct held_edit *held, **held_tail;   /* the head is the one whose answer is awaited */
    int checks_waiting;        /* the core's answer about the head's header is awaited */
    int held_failed;           /* a held edit could not be made: the message is deferred */
    struct link *held_done;    /* the milter answered the event meanwhile: taken once none is held */
    char session_quarantine[128];

    /* the message */
    header *headers;
    size_t nheaders, cap_headers;
    size_t header_i;
    petrel_message *msg;      /* the body for the current milter (the last committed REPLBODY's, if any) */
    long long body_size;
    long long body_off;
    unsigned char *readbuf;   /* MILTER_CHUNK_MAX, made on first use */
    petrel_body_writer *newbody;   /* a REPLBODY arriving */
    int discard;
    int read_error;           /* the body could not be read back */
} session;

/* A transaction begins (the MAIL hook, from its pool): when it ends, each
 * milter still in it gets SMFIC_ABORT at once (milter_session.c). */
void milter_tx_begin(session *ss, petrel_session *s);

/* The owner interface that every milter_conn of a session gets. */
extern const milter_conn_ops milter_session_ops;

/* Runs event ev through the chain from within its hook. */
petrel_verdict milter_start_event(session *ss, petrel_session *s, enum event ev);
/* The same from a callback, the hook having suspended with p. */
void milter_resume_event(session *ss, petrel_session *s, enum event ev, petrel_pending *p);
/* configuration (milter_config.c): the module's check, init and fini, and
 * the profile a session of service uses */
int milter_check(petrel_module *m);
int milter_init(petrel_module *m, const char **error);
void milter_fini(petrel_module *m);
const profile *milter_profile_of(const module_conf *c, const char *service);
void milter_base_config(petrel_module *m, const char *service, milter_config *cfg);
int milter_parse_item(const char *item, char *buf, size_t buflen, milter_config *cfg, char *err, size_t errlen);
void milter_list_free(milter_list *l);
breaker *milter_breaker_for(module_conf *c, const char *name);
/* Starts the session's milters (list) at connect: from the hook (p NULL),
 * or from a callback after the hook suspended with p. */
petrel_verdict milter_session_begin(petrel_session *s, const profile *prof, const milter_list *list,
                                    petrel_pending *p);

/* smtpd_milter_maps (milter_maps.c): the connect hook's lookup; it
 * resumes p with milter_session_begin's outcome. */
petrel_verdict milter_maps_connect(petrel_session *s, const profile *prof);
void milter_maps_free(module_conf *c);

/* The circuit breaker (milter_breaker.c): should this session skip the
 * milter (1), or ask it (0, perhaps as the probe)? Then what happened. */
int milter_breaker_skip(module_conf *conf, petrel_module *m, breaker *b);
void milter_breaker_failed(module_conf *conf, petrel_module *m, breaker *b);
void milter_breaker_answered(module_conf *conf, petrel_module *m, breaker *b);
/* Frees a session (a cleanup of the SMTP session's pool). */
void milter_session_end(void *arg);

/* the headers and the modifications (milter_edits.c) */

int milter_headers_load(session *ss);
void milter_headers_clear(session *ss);
int milter_apply_quarantine(session *ss, const char *reason);
int milter_op_edit(void *arg, const milter_edit *e);
/* Edits are held (the milter's answer to the event waits for them). */
int milter_edits_holding(const session *ss);
/* Forgets held edits (a new transaction; the last one ended meanwhile). */
void milter_edits_reset(session *ss);
/* The milter of l answered the event (milter_session.c): move on. */
void milter_event_done(link *l);
/* The core stopped waiting for the event the milters still answer
 * (milter_hook_timeout, or the session ended): what they send is for
 * nobody. */
int milter_event_abandoned(const session *ss);

#endif
