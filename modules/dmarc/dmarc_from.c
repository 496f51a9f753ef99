/*
 * The From header's domains (dmarc_from.h). One pass over the value: a
 * comma outside quotes, comments and angle brackets ends an address; the
 * addr-spec is what is inside the last <...> of the item, else the item
 * itself without its comments; its domain is what follows the last @.
 * Domain names are kept to letters, digits, '-', '.', '_' and UTF-8 bytes
 * (RFC 6531), so that nothing else ever reaches a DNS query or an
 * Authentication-Results header.
 */
#include <string.h>

#include "dmarc_from.h"

#define MAX_ITEM 1024
#define MAX_DOMAIN 253

static int domain_char(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '.' || c == '_' || c >= 0x80;
}

/* One address (item, NUL-terminated, comments and quoted strings removed). */
static void address(struct dmarc_from *f, const char *item)
{
    const char *lt = strrchr(item, '<');
    const char *spec = lt ? lt + 1 : item;
    const char *end = lt ? strchr(spec, '>') : spec + strlen(spec);
    if (end == NULL)
        end = spec + strlen(spec);
    const char *at = NULL;
    for (const char *p = spec; p < end; p++)
        if (*p == '@')
            at = p;
    if (at == NULL) {
        /* a bare word or an empty group: no address */
        for (const char *p = spec; p < end; p++)
            if (*p != ' ' && *p != '\t' && *p != '\r' && *p != '\n') {
                f->invalid = 1;   /* something that is not an address */
                break;
            }
        return;
    }
    f->addresses++;
    char d[MAX_DOMAIN + 1];
    size_t n = 0;
    int bad = 0;
    for (const char *p = at + 1; p < end; p++) {
        unsigned char c = (unsigned char)*p;
        if (c == ' ' || c == '\t' || c == '\r' || c == '\n')
            continue;   /* folding white space around the domain */
        if (c >= 'A' && c <= 'Z')
            c = (unsigned char)(c - 'A' + 'a');
        if (!domain_char(c) || n >= MAX_DOMAIN) {
            bad = 1;
            break;
        }
        d[n++] = (char)c;
    }
    while (n > 0 && d[n - 1] == '.')
        n--;
    d[n] = '\0';
    if (bad || n == 0 || d[0] == '.' || strstr(d, "..")) {
        f->invalid = 1;
        return;
    }
    int kept = f->ndomains < DMARC_FROM_MAX_DOMAINS ? f->ndomains : DMARC_FROM_MAX_DOMAINS;
    for (int i = 0; i < kept; i++)
        if (strcmp(f->domains[i], d) == 0)
            return;
    if (f->ndomains < DMARC_FROM_MAX_DOMAINS)
        memcpy(f->domains[f->ndomains], d, n + 1);
    if (f->ndomains <= DMARC_FROM_MAX_DOMAINS)
        f->ndomains++;
}

void dmarc_from_parse(struct dmarc_from *f, const char *value)
{
    char item[MAX_ITEM + 1];
    size_t n = 0;
    int comment = 0, quoted = 0, angle = 0, overflow = 0;
    f->headers++;
    for (const char *p = value;; p++) {
        char c = *p;
        if (c == '\0' || (c == ',' && !comment && !quoted && !angle) || (c == ';' && !comment && !quoted && !angle)) {
            item[n] = '\0';
            if (overflow)
                f->invalid = 1;
            else
                address(f, item);
            n = 0;
            overflow = 0;
            if (c == '\0')
                break;
            continue;
        }
        if (quoted) {
            if (c == '\\' && p[1])
                p++;
            else if (c == '"')
                quoted = 0;
            continue;   /* a display name's words are not the address */
        }
        if (comment) {
            if (c == '\\' && p[1])
                p++;
            else if (c == '(')
                comment++;
            else if (c == ')')
                comment--;
            continue;
        }
        if (c == '(') {
            comment = 1;
            continue;
        }
        if (c == '"' && !angle) {
            quoted = 1;
            continue;
        }
        if (c == ':' && !angle) {
            n = 0;   /* a group's name: its members follow */
            continue;
        }
        if (c == '<')
            angle = 1;
        else if (c == '>')
            angle = 0;
        if (n < MAX_ITEM)
            item[n++] = c;
        else
            overflow = 1;
    }
}
