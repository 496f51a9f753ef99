/*
 * The session side of a content scanner module (clamav, spamassassin): a
 * client of a scanning daemon (clamd, spamd) run at end of data, the
 * message pulled from the queue file while the hook is suspended.
 *
 * Everything but the protocol and the verdict is the same for every
 * scanner, and lives here: the per-session state (created at DATA, freed
 * with the session's pool), the client's fd watch and timer on the plugin
 * API's loop services, the stored message the client reads from
 * (petrel_message_open/read), the size limit, suspending the hook and
 * resuming it exactly once with the verdict. A scanner module describes
 * itself in a scanner_kind: how to start its client, drive it, free it and
 * turn its result into a verdict.
 *
 * The clients (clamd_client, spamd_client) take their loop through small
 * ops tables (watch, timer, done, read, log): the scanner_session_* entry
 * points below are those callbacks, their argument is the
 * scanner_session. A client calls done() once, never from inside one of
 * its own calls; a client freed by the session's end never calls it.
 */
#ifndef PETREL_MODULES_SCANNER_SESSION_H
#define PETREL_MODULES_SCANNER_SESSION_H

#include <stddef.h>

#include <petrel/plugin.h>

typedef struct scanner_session scanner_session;

/* What a verdict says on the wire (code 0: the core's default reply). */
typedef struct scanner_reply {
    int code;
    const char *enhanced;
    char text[400];
} scanner_reply;

/* The client's log levels: the clients' own enums have these values. */
enum { SCANNER_LOG_INFO, SCANNER_LOG_WARNING, SCANNER_LOG_ERROR };

typedef struct scanner_kind {
    const char *name;   /* the module's name: "clamav" starts log lines and parameter names */
    /* The module's *_max_size from its configuration (petrel_module_data). */
    size_t (*max_size)(const void *conf);
    /* Creates the client (its ops' argument: ss) into *client and starts
     * the scan of the stored message of size bytes. Returns 1 when the
     * scan is under way, 0 when its result is already there, -1 when no
     * client could be made (*client NULL, or freed by the caller). */
    int (*start)(scanner_session *ss, const void *conf, size_t size, void **client);
    void (*io)(void *client, int events);
    void (*timeout)(void *client);
    void (*free)(void *client);
    /* The verdict from a finished client's result; headers and the log as
     * the module wants them, the reply in *reply. */
    petrel_verdict (*decide)(petrel_session *s, const void *conf, const void *client, scanner_reply *reply);
} scanner_kind;

/* The hooks: data creates the session's state, end_of_message runs the scan
 * (none when petrel_milters_stopped says no milter would get the content:
 * the scanner stands in for one). */
petrel_verdict scanner_session_data(petrel_session *s, const scanner_kind *kind);
petrel_verdict scanner_session_eom(petrel_session *s);

/* The client's ops (arg: the scanner_session). */
void scanner_session_watch(void *arg, int fd, int events);
void scanner_session_timer(void *arg, unsigned ms);
void scanner_session_done(void *arg);
long scanner_session_read(void *arg, void *buf, size_t cap);
void scanner_session_log(void *arg, int level, const char *text);

/* What decide() says for the two outcomes every scanner has, with the same
 * log lines: the message was too large to scan (continue), and the daemon
 * could not scan it (why), where the module's *_failure_action chooses
 * tempfail (451 4.7.1) or accept. */
petrel_verdict scanner_skipped(petrel_session *s, const scanner_kind *kind, size_t max_size);
petrel_verdict scanner_failed(petrel_session *s, const scanner_kind *kind, const char *why, int tempfail,
                              scanner_reply *reply);

#endif
