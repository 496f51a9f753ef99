/*
 * Parser of the Dovecot auth server's lines: see dovecot_proto.h. The
 * protocol's fields are TAB-separated; values escape TAB, LF, CR and 0x01
 * as 0x01 followed by 't', 'n', 'r', '1' (Dovecot's str_tabescape).
 */
#include <limits.h>
#include <string.h>
#include <strings.h>

#include <petrel/plugin.h>

#include "dovecot_proto.h"

int dovecot_decimal(const char *s, unsigned long max, unsigned long *out)
{
    unsigned long v = 0;
    if (*s < '0' || *s > '9')
        return -1;
    if (*s == '0' && s[1] != '\0')
        return -1;   /* "0" alone, or no leading zero */
    for (; *s; s++) {
        if (*s < '0' || *s > '9')
            return -1;
        unsigned d = (unsigned)(*s - '0');
        if (v > (max - d) / 10)
            return -1;
        v = v * 10 + d;
    }
    *out = v;
    return 0;
}

/* The next TAB-separated field: NUL-terminates it and returns the rest,
 * or NULL when it was the last. */
static char *next_field(char *f)
{
    char *tab = strchr(f, '\t');
    if (tab == NULL)
        return NULL;
    *tab = '\0';
    return tab + 1;
}

static void unescape(char *v)
{
    char *o = v;
    for (char *p = v; *p; p++) {
        if (*p == 1 && p[1]) {
            p++;
            *o++ = *p == 't' ? '\t' : *p == 'n' ? '\n' : *p == 'r' ? '\r' : *p == '1' ? 1 : *p;
        } else {
            *o++ = *p;
        }
    }
    *o = '\0';
}

static int has_control(const char *v)
{
    for (; *v; v++)
        if ((unsigned char)*v < 0x20 || *v == 0x7f)
            return 1;
    return 0;
}

static int parse_mech(char *args, struct dc_reply *out, const char **why)
{
    char *flags = next_field(args);
    size_t n = strlen(args);
    if (n == 0 || n > 20) {
        *why = "a MECH line whose name is empty or longer than 20 characters";
        return -1;
    }
    for (char *p = args; *p; p++) {
        if (*p >= 'a' && *p <= 'z')
            *p = (char)(*p - 'a' + 'A');
        if (!((*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') || *p == '-' || *p == '_')) {
            *why = "a MECH line whose name is not an RFC 4422 mechanism name";
            return -1;
        }
    }
    out->mech = args;
    for (char *f = flags; f && *f;) {
        char *next = next_field(f);
        if (strcasecmp(f, "private") == 0) out->private_mech = 1;
        else if (strcasecmp(f, "plaintext") == 0) out->properties |= PETREL_SASL_PLAINTEXT;
        else if (strcasecmp(f, "active") == 0) out->properties |= PETREL_SASL_ACTIVE;
        else if (strcasecmp(f, "dictionary") == 0) out->properties |= PETREL_SASL_DICTIONARY;
        else if (strcasecmp(f, "anonymous") == 0) out->properties |= PETREL_SASL_ANONYMOUS;
        else if (strcasecmp(f, "forward-secrecy") == 0) out->properties |= PETREL_SASL_FORWARD_SECRECY;
        else if (strcasecmp(f, "mutual-auth") == 0) out->properties |= PETREL_SASL_MUTUAL_AUTH;
        f = next;
    }
    return 0;
}

static int parse_result(char *args, struct dc_reply *out, const char **why)
{
    char *rest = next_field(args);
    unsigned long id;
    if (dovecot_decimal(args, UINT_MAX, &id) != 0) {
        *why = "a request id that is not a plain decimal number";
        return -1;
    }
    out->id = (unsigned)id;
    if (out->kind == DC_REPLY_CONT) {
        out->data = rest ? rest : "";
        if (has_control(out->data)) {
            *why = "a CONT line with a control character in its challenge";
            return -1;
        }
        return 0;
    }
    for (char *f = rest; f && *f;) {
        char *next = next_field(f);
        if (strncmp(f, "user=", 5) == 0)
            out->user = f + 5;
        else if (strncmp(f, "reason=", 7) == 0)
            out->reason = f + 7;
        else if (strcmp(f, "temp") == 0)
            out->temp = 1;
        f = next;
    }
    if (out->user) {
        unescape((char *)out->user);
        if (has_control(out->user)) {
            *why = "a user name with a control character";
            return -1;
        }
    }
    if (out->reason) {
        /* shown to the client and logged: the core makes it printable too */
        unescape((char *)out->reason);
        for (char *p = (char *)out->reason; *p; p++)
            if ((unsigned char)*p < 0x20 || *p == 0x7f)
                *p = '?';
    }
    return 0;
}

int dovecot_parse_line(char *line, size_t len, struct dc_reply *out, const char **why)
{
    memset(out, 0, sizeof(*out));
    if (memchr(line, '\0', len) != NULL) {
        *why = "a NUL byte in a line";
        return -1;
    }
    line[len] = '\0';
    char *args = next_field(line);
    static const struct { const char *name; enum dc_reply_kind kind; } cmds[] = {
        { "VERSION", DC_REPLY_VERSION }, { "MECH", DC_REPLY_MECH }, { "SPID", DC_REPLY_SPID },
        { "CUID", DC_REPLY_CUID }, { "DONE", DC_REPLY_DONE }, { "CONT", DC_REPLY_CONT },
        { "OK", DC_REPLY_OK }, { "FAIL", DC_REPLY_FAIL },
    };
    for (size_t k = 0; k < sizeof(cmds) / sizeof(cmds[0]); k++)
        if (strcmp(line, cmds[k].name) == 0)
            out->kind = cmds[k].kind;
    switch (out->kind) {
    case DC_REPLY_OTHER:
    case DC_REPLY_DONE:
        return 0;
    case DC_REPLY_VERSION: {
        char *minor = args ? next_field(args) : NULL;
        if (minor)
            next_field(minor);   /* anything after the minor version is not ours */
        if (args == NULL || minor == NULL || dovecot_decimal(args, UINT_MAX, &out->major) != 0 ||
            dovecot_decimal(minor, UINT_MAX, &out->minor) != 0) {
            *why = "a VERSION line that is not two plain decimal numbers";
            return -1;
        }
        return 0;
    }
    case DC_REPLY_MECH:
        if (args == NULL) {
            *why = "a MECH line without a name";
            return -1;
        }
        return parse_mech(args, out, why);
    case DC_REPLY_SPID:
    case DC_REPLY_CUID:
        if (args)
            next_field(args);
        if (args == NULL || dovecot_decimal(args, out->kind == DC_REPLY_SPID ? INT_MAX : UINT_MAX, &out->number) != 0
            || (out->kind == DC_REPLY_SPID && out->number == 0)) {
            *why = out->kind == DC_REPLY_SPID ? "an SPID line whose pid is not a plain decimal number"
                                              : "a CUID line whose id is not a plain decimal number";
            return -1;
        }
        return 0;
    case DC_REPLY_CONT:
    case DC_REPLY_OK:
    case DC_REPLY_FAIL:
        if (args == NULL) {
            *why = "a CONT, OK or FAIL line without a request id";
            return -1;
        }
        return parse_result(args, out, why);
    }
    return 0;
}
