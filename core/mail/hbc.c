/*
 * Header and body checks: table lists and the action language (hbc.h).
 *
 * Tables are opened without case folding: pattern tables decide case with
 * their own flags (case-insensitive by default), and a fixed-string table
 * is asked for the line exactly as it is, as Postfix's header_checks maps
 * are. When mime_header_checks or nested_header_checks keep their default
 * ($header_checks) they name the same tables, which are then opened once.
 */
#include "config.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "config/cfg.h"
#include "lib/xalloc.h"
#include "mail/hbc.h"
#include "tables/table.h"

static int same_specs(const char *const *a, const char *const *b)
{
    for (; *a && *b; a++, b++)
        if (strcmp(*a, *b) != 0)
            return 0;
    return *a == NULL && *b == NULL;
}

int hbc_open(struct hbc_tables *h, const struct cfg *cfg, struct tbl_registry *reg,
             const char *const params[HBC_NLISTS], char **error)
{
    memset(h, 0, sizeof(*h));
    h->reg = reg;
    for (int l = 0; l < HBC_NLISTS; l++) {
        h->param[l] = params[l];
        if (params[l] == NULL)
            continue;   /* a list this caller does not use */
        const char *const *specs = cfg_list(cfg, params[l]);
        for (int e = 0; e < l; e++) {
            if (h->n[e] && same_specs(specs, cfg_list(cfg, params[e]))) {
                h->tables[l] = h->tables[e];
                h->n[l] = h->n[e];
                h->shared[l] = 1;
                break;
            }
        }
        if (h->shared[l])
            continue;
        size_t n = 0;
        while (specs[n])
            n++;
        if (n == 0)
            continue;
        h->tables[l] = xcalloc(n, sizeof(struct tbl *));
        for (size_t i = 0; i < n; i++) {
            char *why = NULL;
            struct tbl *t = tbl_open(reg, specs[i], 0, &why);
            if (t == NULL) {
                size_t len = strlen(params[l]) + (why ? strlen(why) : strlen(specs[i])) + 4;
                *error = xmalloc(len);
                snprintf(*error, len, "%s: %s", params[l], why ? why : specs[i]);
                free(why);
                h->n[l] = i;
                hbc_close(h);
                return -1;
            }
            h->tables[l][i] = t;
        }
        h->n[l] = n;
    }
    return 0;
}

void hbc_close(struct hbc_tables *h)
{
    for (int l = 0; l < HBC_NLISTS; l++) {
        if (h->shared[l] || h->tables[l] == NULL)
            continue;
        for (size_t i = 0; i < h->n[l]; i++)
            if (h->tables[l][i])
                tbl_close(h->tables[l][i]);
        free(h->tables[l]);
    }
    memset(h, 0, sizeof(*h));
}

int hbc_has(const struct hbc_tables *h, enum hbc_list list)
{
    return h->n[list] > 0;
}

int hbc_any(const struct hbc_tables *h)
{
    for (int l = 0; l < HBC_NLISTS; l++)
        if (h->n[l])
            return 1;
    return 0;
}

int hbc_any_header(const struct hbc_tables *h)
{
    return h->n[HBC_HEADER] || h->n[HBC_MIME_HEADER] || h->n[HBC_NESTED_HEADER];
}

enum hbc_list hbc_header_list(enum mime_class cls, int is_mime)
{
    if (is_mime)
        return HBC_MIME_HEADER;
    switch (cls) {
    case MIME_PRIMARY: return HBC_HEADER;
    case MIME_NESTED: return HBC_NESTED_HEADER;
    case MIME_MULTIPART: return HBC_MIME_HEADER;
    }
    return HBC_HEADER;
}

int hbc_lookup(struct hbc_tables *h, enum hbc_list list, const char *key, petrel_pool *pool, const char **value)
{
    if (*key == '\0')
        return 0;
    for (size_t i = 0; i < h->n[list]; i++) {
        const char *v = NULL;
        int rc = tbl_lookup(h->tables[list][i], key, &v);
        if (rc == TBL_FOUND) {
            *value = petrel_pool_strdup(pool, v);
            return 1;
        }
        if (rc == TBL_ERROR)
            return -1;
        if (rc == TBL_PENDING)
            return -2;
    }
    return 0;
}

int hbc_any_remote(const struct hbc_tables *h)
{
    for (int l = 0; l < HBC_NLISTS; l++)
        for (size_t i = 0; i < h->n[l]; i++)
            if (tbl_is_remote(h->tables[l][i]))
                return 1;
    return 0;
}

struct hbc_wait {
    struct hbc_tables *h;
    struct tbl_scope *scope;
};

struct hbc_wait *hbc_wait_new(struct hbc_tables *h, size_t lines)
{
    size_t most = 1;
    for (int l = 0; l < HBC_NLISTS; l++)
        if (h->n[l] > most)
            most = h->n[l];
    struct hbc_wait *w = xcalloc(1, sizeof(*w));
    w->h = h;
    w->scope = tbl_scope_new_sized(lines * most);
    return w;
}

int hbc_wait_lookup(struct hbc_wait *w, enum hbc_list list, const char *key, petrel_pool *pool,
                    const char **value)
{
    tbl_scope_enter(w->h->reg, w->scope);
    int rc = hbc_lookup(w->h, list, key, pool, value);
    tbl_scope_leave(w->h->reg);
    return rc;
}

int hbc_wait_fetch(struct hbc_wait *w, void (*done)(void *arg), void *arg)
{
    return tbl_scope_fetch(w->scope, done, arg);
}

void hbc_wait_reset(struct hbc_wait *w)
{
    tbl_scope_reset(w->scope);
}

void hbc_wait_free(struct hbc_wait *w)
{
    if (w == NULL)
        return;
    tbl_scope_free(w->scope);   /* cancels lookups in flight: done is never called */
    free(w);
}

static const struct {
    const char *word;
    enum hbc_command command;
} commands[] = {
    { "DUNNO", HBC_DUNNO },     { "OK", HBC_DUNNO },         { "REJECT", HBC_REJECT },
    { "WARN", HBC_WARN },       { "INFO", HBC_INFO },        { "HOLD", HBC_HOLD },
    { "DISCARD", HBC_DISCARD }, { "FILTER", HBC_FILTER },    { "PASS", HBC_PASS },
    { "PREPEND", HBC_PREPEND }, { "REPLACE", HBC_REPLACE },  { "REDIRECT", HBC_REDIRECT },
    { "BCC", HBC_BCC },         { "STRIP", HBC_STRIP },      { "IGNORE", HBC_IGNORE },
};

void hbc_parse_action(const char *value, struct hbc_action *out)
{
    size_t len = strcspn(value, " \t");
    const char *text = value + len;
    while (isspace((unsigned char)*text))
        text++;
    out->word = value;
    out->word_len = len;
    out->text = text;
    out->command = HBC_UNKNOWN;
    for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++) {
        if (strlen(commands[i].word) == len && strncasecmp(value, commands[i].word, len) == 0) {
            out->command = commands[i].command;
            break;
        }
    }
}

const char *hbc_command_name(enum hbc_command c)
{
    for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++)
        if (commands[i].command == c && c != HBC_DUNNO)
            return commands[i].word;
    return c == HBC_DUNNO ? "DUNNO" : "unknown";
}

/* The length of an RFC 3463 code at the start of text (Postfix's
 * dsn_valid), 0 when there is none. */
static size_t dsn_valid(const char *text)
{
    const char *cp = text;
    if ((cp[0] != '2' && cp[0] != '4' && cp[0] != '5') || cp[1] != '.')
        return 0;
    cp += 2;
    size_t len = strspn(cp, "0123456789");
    if (len < 1 || len > 3 || cp[len] != '.')
        return 0;
    cp += len + 1;
    len = strspn(cp, "0123456789");
    if (len < 1 || len > 3 || (cp[len] != '\0' && !isspace((unsigned char)cp[len])))
        return 0;
    return (size_t)(cp - text) + len;
}

void hbc_dsn_split(const char *def_dsn, const char *text, petrel_pool *pool, const char **dsn, const char **rest)
{
    while (isspace((unsigned char)*text))
        text++;
    size_t len = dsn_valid(text);
    if (len > 0) {
        *dsn = petrel_pool_strndup(pool, text, len);
        text += len;
    } else {
        *dsn = petrel_pool_strdup(pool, def_dsn);
    }
    while (isspace((unsigned char)*text))
        text++;
    *rest = text;
}

const char *hbc_reply_text(petrel_pool *pool, const char *text)
{
    size_t len = strlen(text);
    if (len > HBC_REPLY_TEXT_MAX)
        len = HBC_REPLY_TEXT_MAX;
    char *out = petrel_pool_strndup(pool, text, len);
    for (char *p = out; *p; p++)
        if ((unsigned char)*p < ' ' || (unsigned char)*p >= 0x7f)
            *p = '?';
    return out;
}
