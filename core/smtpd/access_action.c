/*
 * access(5) action parsing (see access_action.h), with Postfix's rules:
 * the command word ends at the first space or tab and is matched without
 * regard to case; "4NN text" needs text (a bare "550" is all-numeric,
 * hence OK, exactly as in Postfix); an enhanced status code at the start
 * of the text replaces the default one.
 */
#include "config.h"

#include <ctype.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "smtpd/access_action.h"

size_t access_dsn_valid(const char *text)
{
    const unsigned char *p = (const unsigned char *)text;
    if ((p[0] != '2' && p[0] != '4' && p[0] != '5') || p[1] != '.')
        return 0;
    size_t i = 2, n = 0;
    while (isdigit(p[i]) && n < 4)
        i++, n++;
    if (n < 1 || n > 3 || p[i] != '.')
        return 0;
    i++;
    n = 0;
    while (isdigit(p[i]) && n < 4)
        i++, n++;
    if (n < 1 || n > 3 || (p[i] != '\0' && !isspace(p[i])))
        return 0;
    return i;
}

/* dsn_split(): the code at the start of text or def; reason = the rest. */
static void split_dsn(struct access_action *a, const char *def)
{
    const char *p = a->text;
    size_t len = access_dsn_valid(p);
    if (len > 0) {
        memcpy(a->dsn, p, len);
        a->dsn[len] = '\0';
        p += len;
    } else {
        snprintf(a->dsn, sizeof(a->dsn), "%s", def);
    }
    while (isspace((unsigned char)*p))
        p++;
    a->reason = p;
}

static int word_is(const struct access_action *a, const char *name)
{
    return strlen(name) == a->word_len && strncasecmp(a->word, name, a->word_len) == 0;
}

static int all_digits(const char *s)
{
    if (*s == '\0')
        return 0;
    for (; *s; s++)
        if (!isdigit((unsigned char)*s))
            return 0;
    return 1;
}

void access_action_parse(const char *value, struct access_action *a)
{
    memset(a, 0, sizeof(*a));
    a->word = value;
    a->word_len = strcspn(value, " \t");
    const char *text = value + a->word_len;
    while (*text && isspace((unsigned char)*text))
        text++;
    a->text = text;
    a->reason = "";
    static const struct { const char *name; enum access_verb verb; const char *dsn; } words[] = {
        { "DUNNO", ACCESS_DUNNO, NULL },
        { "REJECT", ACCESS_REJECT, "5.7.1" },
        { "DEFER", ACCESS_DEFER, "4.7.1" },
        { "INFO", ACCESS_INFO, NULL },
        { "WARN", ACCESS_WARN, NULL },
        { "FILTER", ACCESS_FILTER, NULL },
        { "HOLD", ACCESS_HOLD, NULL },
        { "DISCARD", ACCESS_DISCARD, NULL },
        { "REDIRECT", ACCESS_REDIRECT, NULL },
        { "BCC", ACCESS_BCC, NULL },
        { "DEFER_IF_PERMIT", ACCESS_DEFER_IF_PERMIT, "4.7.1" },
        { "DEFER_IF_REJECT", ACCESS_DEFER_IF_REJECT, "4.7.1" },
        { "PREPEND", ACCESS_PREPEND, NULL },
    };
    for (size_t i = 0; i < sizeof(words) / sizeof(words[0]); i++) {
        if (word_is(a, words[i].name)) {
            a->verb = words[i].verb;
            if (words[i].dsn)
                split_dsn(a, words[i].dsn);
            return;
        }
    }
    /* An all-numeric result is OK (pop-before-smtp time stamps), checked
     * before 4NN/5NN: a bare "550" is OK, as in Postfix. */
    if (all_digits(value)) {
        a->verb = ACCESS_OK;
        return;
    }
    if (a->word_len == 3 && *text && (value[0] == '4' || value[0] == '5') && isdigit((unsigned char)value[1]) &&
        isdigit((unsigned char)value[2])) {
        a->verb = ACCESS_CODE;
        a->code = (value[0] - '0') * 100 + (value[1] - '0') * 10 + (value[2] - '0');
        split_dsn(a, value[0] == '4' ? "4.7.1" : "5.7.1");
        return;
    }
    if (word_is(a, "OK") || word_is(a, "RELAY")) {
        a->verb = ACCESS_OK;
        return;
    }
    a->verb = strchr(value, ':') ? ACCESS_TABLE_IN_VALUE : ACCESS_RESTRICTIONS;
}

/* Postfix's dsn_map: the detail digit of an address status, and what it
 * becomes for a sender and for a recipient. */
static const struct { const char *detail, *sender, *recipient; } dsn_map[] = {
    { "1", "4.1.7", "4.1.1" }, { "2", "4.1.8", "4.1.2" }, { "3", "4.1.7", "4.1.3" },
    { "4", "4.1.7", "4.1.4" }, { "5", "4.1.0", "4.1.5" }, { "6", "4.1.7", "4.1.6" },
    { "7", "4.1.7", "4.1.3" }, { "8", "4.1.8", "4.1.2" },
};

void access_dsn_fix(const char *dsn, const char *reply_class, char out[12])
{
    snprintf(out, 12, "%s", dsn);
    if (!isdigit((unsigned char)dsn[0]) || strncmp(dsn + 1, ".1.", 3) != 0)
        return;
    const char *fixed = "4.0.0";
    int sender = strcmp(reply_class, "Sender address") == 0;
    int recipient = strcmp(reply_class, "Recipient address") == 0;
    if (sender || recipient) {
        fixed = "4.1.0";
        for (size_t i = 0; i < sizeof(dsn_map) / sizeof(dsn_map[0]); i++)
            if (strcmp(dsn + 4, dsn_map[i].detail) == 0)
                fixed = sender ? dsn_map[i].sender : dsn_map[i].recipient;
    }
    /* The class digit is the caller's (the reply code decides it later). */
    snprintf(out, 12, "%c%s", dsn[0], fixed + 1);
}

int access_is_header(const char *text)
{
    /* A field name: printable ASCII but ':', at least one, then ':' after
     * optional white space (Postfix's is_header_buf). */
    const char *p = text;
    while (*p && *p != ':' && (unsigned char)*p > 32 && (unsigned char)*p < 127)
        p++;
    if (p == text)
        return 0;
    while (*p == ' ' || *p == '\t')
        p++;
    return *p == ':';
}
