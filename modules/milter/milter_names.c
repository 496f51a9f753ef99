/*
 * Names and configuration words of the milter module (see milter_names.h):
 * Postfix's milter_*_macros parameters, macro list syntax, milter_protocol
 * and milter_default_action, and the names logs give commands and replies.
 * Configuration text is checked here at start-up and reload; a filter's
 * SETSYMLIST lists go through the same macro list parser (milter_proto.c).
 */
#include "milter_proto.h"

#include <ctype.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

int milter_fail(char *err, size_t errlen, const char *fmt, ...)
{
    if (err != NULL && errlen > 0) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, errlen, fmt, ap);
        va_end(ap);
    }
    return -1;
}

const milter_macro_param milter_macro_params[MILTER_MACRO_STAGES] = {
    [MILTER_MACRO_CONNECT] = { "milter_connect_macros", "j {daemon_name} {daemon_addr} v _" },
    [MILTER_MACRO_HELO] = { "milter_helo_macros",
                            "{tls_version} {cipher} {cipher_bits} {cert_subject} {cert_issuer}" },
    [MILTER_MACRO_MAIL] = { "milter_mail_macros",
                            "i {auth_type} {auth_authen} {auth_author} {mail_addr} {mail_host} {mail_mailer}" },
    [MILTER_MACRO_RCPT] = { "milter_rcpt_macros", "i {rcpt_addr} {rcpt_host} {rcpt_mailer}" },
    [MILTER_MACRO_DATA] = { "milter_data_macros", "i" },
    [MILTER_MACRO_EOM] = { "milter_end_of_data_macros", "i" },
    [MILTER_MACRO_EOH] = { "milter_end_of_header_macros", "i" },
    [MILTER_MACRO_UNKNOWN] = { "milter_unknown_command_macros", "" },
};

static int macro_name_char(int c)
{
    return isalnum(c) || c == '_' || c == '-' || c == '.';
}

int milter_macro_list_parse(milter_macro_list *list, const char *text, char *err, size_t errlen)
{
    list->count = 0;
    const char *p = text ? text : "";
    for (;;) {
        while (*p == ' ' || *p == '\t' || *p == ',' || *p == '\r' || *p == '\n')
            p++;
        if (*p == 0)
            return 0;
        const char *start = p;
        while (*p && *p != ' ' && *p != '\t' && *p != ',' && *p != '\r' && *p != '\n')
            p++;
        size_t n = (size_t)(p - start);
        int good;
        if (n == 1)
            good = (unsigned char)start[0] > 32 && (unsigned char)start[0] < 127 && start[0] != '{'
                   && start[0] != '}';
        else if (n >= 3 && start[0] == '{' && start[n - 1] == '}') {
            good = 1;
            for (size_t i = 1; i + 1 < n; i++)
                if (!macro_name_char((unsigned char)start[i]))
                    good = 0;
        } else
            good = 0;
        if (!good)
            return milter_fail(err, errlen, "bad macro name \"%.*s\" (a single character or {name})",
                        (int)(n > 64 ? 64 : n), start);
        if (n >= MILTER_MACRO_NAME_MAX)
            return milter_fail(err, errlen, "macro name \"%.40s...\" is longer than %d characters", start,
                        MILTER_MACRO_NAME_MAX - 1);
        if (list->count == MILTER_MACRO_NAMES_MAX)
            return milter_fail(err, errlen, "more than %d macro names", MILTER_MACRO_NAMES_MAX);
        memcpy(list->names[list->count], start, n);
        list->names[list->count][n] = 0;
        list->count++;
    }
}

void milter_macro_canonical(const char *name, char *out, size_t outlen)
{
    if (name[0] == '{')
        snprintf(out, outlen, "%s", name);
    else
        snprintf(out, outlen, "{%s}", name);
}

int milter_protocol_parse(const char *text, int *version, uint32_t *offer, char *err, size_t errlen)
{
    int v = 0;
    uint32_t extra = 0;
    const char *p = text ? text : "";
    for (;;) {
        while (*p == ' ' || *p == '\t' || *p == ',')
            p++;
        if (*p == 0)
            break;
        const char *start = p;
        while (*p && *p != ' ' && *p != '\t' && *p != ',')
            p++;
        size_t n = (size_t)(p - start);
        int word_version = 0;
        if (n == 1 && (start[0] == '2' || start[0] == '3' || start[0] == '4' || start[0] == '6'))
            word_version = start[0] - '0';
        else if (n == 15 && strncmp(start, "no_header_reply", 15) == 0)
            extra |= MILTER_P_NR_HDR;
        else
            return milter_fail(err, errlen, "bad protocol information: %.*s (expected 2, 3, 4 or 6, and "
                        "optionally no_header_reply)", (int)(n > 40 ? 40 : n), start);
        if (word_version) {
            if (v != 0)
                return milter_fail(err, errlen, "bad protocol information: more than one version");
            v = word_version;
        }
    }
    if (v == 0)
        return milter_fail(err, errlen, "no protocol version information");
    *version = v;
    *offer = (v == 2 ? MILTER_P_V2 : v == 3 ? MILTER_P_V3 : v == 4 ? MILTER_P_V4 : MILTER_P_V6) | extra;
    return 0;
}

static const char *const default_action_names[] = {
    [MILTER_DEFAULT_TEMPFAIL] = "tempfail",
    [MILTER_DEFAULT_ACCEPT] = "accept",
    [MILTER_DEFAULT_REJECT] = "reject",
    [MILTER_DEFAULT_QUARANTINE] = "quarantine",
    [MILTER_DEFAULT_SHUTDOWN] = "shutdown",
};

int milter_default_action_parse(const char *text, milter_default_action *action)
{
    for (size_t i = 0; i < sizeof default_action_names / sizeof default_action_names[0]; i++)
        if (text != NULL && strcasecmp(text, default_action_names[i]) == 0) {
            *action = (milter_default_action)i;
            return 0;
        }
    return -1;
}

const char *milter_default_action_name(milter_default_action action)
{
    if ((size_t)action < sizeof default_action_names / sizeof default_action_names[0])
        return default_action_names[action];
    return "tempfail";
}

const char *milter_command_name(int cmd)
{
    switch (cmd) {
    case MILTER_CMD_ABORT: return "SMFIC_ABORT";
    case MILTER_CMD_BODY: return "SMFIC_BODY";
    case MILTER_CMD_CONNECT: return "SMFIC_CONNECT";
    case MILTER_CMD_MACRO: return "SMFIC_MACRO";
    case MILTER_CMD_EOM: return "SMFIC_BODYEOB";
    case MILTER_CMD_HELO: return "SMFIC_HELO";
    case MILTER_CMD_QUIT_NC: return "SMFIC_QUIT_NC";
    case MILTER_CMD_HEADER: return "SMFIC_HEADER";
    case MILTER_CMD_MAIL: return "SMFIC_MAIL";
    case MILTER_CMD_EOH: return "SMFIC_EOH";
    case MILTER_CMD_OPTNEG: return "SMFIC_OPTNEG";
    case MILTER_CMD_QUIT: return "SMFIC_QUIT";
    case MILTER_CMD_RCPT: return "SMFIC_RCPT";
    case MILTER_CMD_DATA: return "SMFIC_DATA";
    case MILTER_CMD_UNKNOWN: return "SMFIC_UNKNOWN";
    default: return "(unknown MTA event)";
    }
}

const char *milter_reply_name(int cmd)
{
    switch (cmd) {
    case MILTER_RSP_ADDRCPT: return "SMFIR_ADDRCPT";
    case MILTER_RSP_DELRCPT: return "SMFIR_DELRCPT";
    case MILTER_RSP_ADDRCPT_PAR: return "SMFIR_ADDRCPT_PAR";
    case MILTER_RSP_SHUTDOWN: return "SMFIR_SHUTDOWN";
    case MILTER_RSP_ACCEPT: return "SMFIR_ACCEPT";
    case MILTER_RSP_REPLBODY: return "SMFIR_REPLBODY";
    case MILTER_RSP_CONTINUE: return "SMFIR_CONTINUE";
    case MILTER_RSP_DISCARD: return "SMFIR_DISCARD";
    case MILTER_RSP_CHGFROM: return "SMFIR_CHGFROM";
    case MILTER_RSP_CONN_FAIL: return "SMFIR_CONN_FAIL";
    case MILTER_RSP_ADDHEADER: return "SMFIR_ADDHEADER";
    case MILTER_RSP_INSHEADER: return "SMFIR_INSHEADER";
    case MILTER_RSP_SETSYMLIST: return "SMFIR_SETSYMLIST";
    case MILTER_RSP_CHGHEADER: return "SMFIR_CHGHEADER";
    case MILTER_RSP_PROGRESS: return "SMFIR_PROGRESS";
    case MILTER_RSP_QUARANTINE: return "SMFIR_QUARANTINE";
    case MILTER_RSP_REJECT: return "SMFIR_REJECT";
    case MILTER_RSP_SKIP: return "SMFIR_SKIP";
    case MILTER_RSP_TEMPFAIL: return "SMFIR_TEMPFAIL";
    case MILTER_RSP_REPLYCODE: return "SMFIR_REPLYCODE";
    case MILTER_CMD_OPTNEG: return "SMFIC_OPTNEG";
    default: return "(unknown filter reply)";
    }
}
