/*
 * The milter module's names and configuration words: the macro stages and
 * Postfix's milter_*_macros parameters with their defaults, macro lists,
 * the words of milter_protocol and milter_default_action, and the Sendmail
 * names of commands and replies that logs use. Split from the protocol layer
 * (milter_proto.h, which includes this header) because these are about
 * configuration and logging, not the wire: nothing here reads a packet.
 * Pure functions over strings, no global state.
 */
#ifndef PETREL_MILTER_NAMES_H
#define PETREL_MILTER_NAMES_H

#include <stddef.h>
#include <stdint.h>

/* ------------------------------------------------------------------ */
/* macro stages                                                        */

/* The stages a milter can set macro lists for with SETSYMLIST (SMFIM_*
 * numbers), and ours for the unknown-command event (not settable). */
enum milter_macro_stage {
    MILTER_MACRO_CONNECT = 0,
    MILTER_MACRO_HELO = 1,
    MILTER_MACRO_MAIL = 2,
    MILTER_MACRO_RCPT = 3,
    MILTER_MACRO_DATA = 4,
    MILTER_MACRO_EOM = 5,
    MILTER_MACRO_EOH = 6,
    MILTER_MACRO_UNKNOWN = 7,
    MILTER_MACRO_STAGES = 8
};
#define MILTER_SYMLIST_STAGES 7   /* the ones SETSYMLIST may name */

/* Postfix's parameter name and default for each stage's macro list
 * (mail_params.h), indexed by enum milter_macro_stage. */
typedef struct milter_macro_param {
    const char *parameter;     /* "milter_connect_macros" */
    const char *default_value; /* "j {daemon_name} {daemon_addr} v _" */
} milter_macro_param;
extern const milter_macro_param milter_macro_params[MILTER_MACRO_STAGES];

/* A parsed list of macro names ("j {daemon_name} v" -> 3 names). */
#define MILTER_MACRO_NAMES_MAX 64
#define MILTER_MACRO_NAME_MAX 64
typedef struct milter_macro_list {
    size_t count;
    char names[MILTER_MACRO_NAMES_MAX][MILTER_MACRO_NAME_MAX];
} milter_macro_list;

/* Splits a list on white space and commas. Names are single characters
 * ("j"), or "{name}" with letters, digits, '_', '-' and '.' inside. Returns
 * 0, or -1 with err (a bad name, too many or too long). */
/* Writes the message into err (errlen bytes, either may be 0) and returns
 * -1: the parsers' one way of saying what is wrong. */
__attribute__((format(printf, 3, 4)))
int milter_fail(char *err, size_t errlen, const char *fmt, ...);

int milter_macro_list_parse(milter_macro_list *list, const char *text, char *err, size_t errlen);

/* "j" -> "{j}", "{daemon_name}" unchanged: the form a lookup is asked for
 * (Postfix asks its macro callbacks with braces). out has at least
 * MILTER_MACRO_NAME_MAX + 2 bytes. */
void milter_macro_canonical(const char *name, char *out, size_t outlen);

/* ------------------------------------------------------------------ */
/* configuration words                                                 */

/* milter_protocol: one version (2, 3, 4 or 6) and optionally
 * "no_header_reply", separated by commas or spaces (Postfix's syntax).
 * Sets the version and the protocol steps we offer for it. */
int milter_protocol_parse(const char *text, int *version, uint32_t *offer, char *err, size_t errlen);

/* milter_default_action (Postfix's words). */
typedef enum milter_default_action {
    MILTER_DEFAULT_TEMPFAIL = 0,
    MILTER_DEFAULT_ACCEPT,
    MILTER_DEFAULT_REJECT,
    MILTER_DEFAULT_QUARANTINE,
    MILTER_DEFAULT_SHUTDOWN,
} milter_default_action;
int milter_default_action_parse(const char *text, milter_default_action *action);
const char *milter_default_action_name(milter_default_action action);

/* Names for logs: "SMFIC_RCPT", "SMFIR_ADDHEADER" (Sendmail's names, as
 * Postfix logs them). Never NULL. */
const char *milter_command_name(int cmd);
const char *milter_reply_name(int cmd);

#endif
