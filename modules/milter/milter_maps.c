/*
 * modules/milter: Postfix's smtpd_milter_maps (3.2). At connect, the
 * client's IP address is looked up in the tables, in order; the first
 * answer is the milter list for the session, with smtpd_milters' syntax
 * (it replaces smtpd_milters), or DISABLE (any case): no milters. Not
 * found: smtpd_milters. A lookup that fails (a table that is down) also
 * gives smtpd_milters, as Postfix's maps_find falls through to it, with a
 * warning: the more filtering answer.
 *
 * A list is parsed on the loop (milter_parse_item) and its settings made
 * on a worker thread (petrel_run_blocking: milter_settings_create resolves
 * host names with getaddrinfo, which must not block the loop), once per
 * distinct answer per profile; later sessions find it built
 * (conf->map_lists). A list that does not parse is the admin's error: it
 * is logged with the table's answer and the session's mail is refused with
 * Postfix's 451 4.3.5 (a milter configuration problem), never let through
 * unfiltered.
 */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <petrel/plugin.h>

#include "milter_conn.h"
#include "milter_module_int.h"

/* One session's lookup, from the connect hook to its resume. */
typedef struct lookup {
    petrel_module *m;
    petrel_session *s;
    petrel_pending *p;
    const profile *prof;
    size_t table;                 /* the table asked */
    /* a list being built on a worker thread */
    char *value;
    size_t n;
    milter_config *cfgs;
    char (*bufs)[1024];
    milter_settings **items;
    char err[512];
} lookup;

static void lookup_free(lookup *l)
{
    if (l->items)
        for (size_t i = 0; i < l->n; i++)
            if (l->items[i])
                milter_settings_free(l->items[i]);
    free(l->items);
    free(l->cfgs);
    free(l->bufs);
    free(l->value);
    free(l);
}

static const map_list *cached(module_conf *c, const profile *prof, const char *value)
{
    for (size_t i = 0; i < c->nmap_lists; i++)
        if (c->map_lists[i].prof == prof && strcmp(c->map_lists[i].value, value) == 0)
            return &c->map_lists[i];
    return NULL;
}

/* The session's mail cannot be filtered as configured: Postfix's reply
 * for a milter configuration problem. */
static void refuse(lookup *l)
{
    petrel_set_reply(l->s, 451, "4.3.5", "Server configuration problem - try again later");
    petrel_resume(l->p, PETREL_TEMPFAIL, 0, NULL, NULL);
}

/* Splits a list with smtpd_milters' syntax (commas and white space, { }
 * grouping; the braces stay, milter_parse_item takes them off). Returns
 * the number of items put into items (at most max), or -1 when unbalanced. */
static long split_list(char *text, char **items, size_t max)
{
    size_t n = 0;
    char *p = text;
    for (;;) {
        while (*p && (isspace((unsigned char)*p) || *p == ','))
            p++;
        if (*p == '\0')
            return (long)n;
        char *start = p;
        int depth = 0;
        while (*p && (depth > 0 || !(isspace((unsigned char)*p) || *p == ','))) {
            if (*p == '{')
                depth++;
            else if (*p == '}' && depth > 0)
                depth--;
            p++;
        }
        if (depth > 0)
            return -1;
        if (n == max)
            return -1;
        items[n++] = start;
        if (*p)
            *p++ = '\0';
    }
}

static void build_work(void *arg)
{
    lookup *l = arg;
    for (size_t i = 0; i < l->n; i++)
        if ((l->items[i] = milter_settings_create(&l->cfgs[i], l->err, sizeof l->err)) == NULL) {
            char name[300];
            snprintf(name, sizeof name, "%s", l->cfgs[i].name ? l->cfgs[i].name : "");
            size_t len = strlen(l->err);
            snprintf(l->err + len, sizeof l->err - len, " (%s)", name);
            return;
        }
}

static void build_done(void *arg)
{
    lookup *l = arg;
    module_conf *c = petrel_module_data(l->m);
    if (petrel_pending_session(l->p) == NULL || c == NULL) {   /* the client left meanwhile */
        lookup_free(l);
        return;
    }
    for (size_t i = 0; i < l->n; i++)
        if (l->items[i] == NULL) {
            petrel_log(l->s, PETREL_LOG_ERROR, "smtpd_milter_maps: the answer \"%s\" for %s: %s", l->value,
                       petrel_client_addr(l->s), l->err);
            refuse(l);
            lookup_free(l);
            return;
        }
    const map_list *have = cached(c, l->prof, l->value);
    if (have == NULL) {
        map_list *grown = realloc(c->map_lists, (c->nmap_lists + 1) * sizeof *grown);
        breaker **breakers = calloc(l->n ? l->n : 1, sizeof *breakers);
        int ok = grown != NULL && breakers != NULL;
        if (grown)
            c->map_lists = grown;
        for (size_t i = 0; ok && i < l->n; i++)
            ok = (breakers[i] = milter_breaker_for(c, milter_settings_name(l->items[i]))) != NULL;
        if (!ok) {
            free(breakers);
            petrel_resume(l->p, PETREL_TEMPFAIL, 0, NULL, NULL);
            lookup_free(l);
            return;
        }
        map_list *e = &c->map_lists[c->nmap_lists++];
        e->prof = l->prof;
        e->value = l->value;
        e->list.items = l->items;
        e->list.breakers = breakers;
        e->list.n = l->n;
        l->value = NULL;
        l->items = NULL;
        have = e;
    }
    milter_session_begin(l->s, l->prof, &have->list, l->p);
    lookup_free(l);
}

/* The table's answer is a milter list: use it, built now if it is new. */
static void use_value(lookup *l, const char *value)
{
    module_conf *c = petrel_module_data(l->m);
    const map_list *have = cached(c, l->prof, value);
    if (have) {
        milter_session_begin(l->s, l->prof, &have->list, l->p);
        lookup_free(l);
        return;
    }
    size_t max = 1 + strlen(value) / 2;
    char *text = strdup(value);
    char **words = calloc(max, sizeof *words);
    l->value = strdup(value);
    long n = text && words && l->value ? split_list(text, words, max) : -2;
    if (n == -2) {
        free(text);
        free(words);
        petrel_resume(l->p, PETREL_TEMPFAIL, 0, NULL, NULL);
        lookup_free(l);
        return;
    }
    if (n > 0) {
        l->n = (size_t)n;
        l->cfgs = calloc((size_t)n, sizeof *l->cfgs);
        l->bufs = calloc((size_t)n, sizeof *l->bufs);
        l->items = calloc((size_t)n, sizeof *l->items);
    }
    int bad = n < 0 || (n > 0 && (l->cfgs == NULL || l->bufs == NULL || l->items == NULL));
    if (n < 0)
        snprintf(l->err, sizeof l->err, "unbalanced \"{\"");
    for (long i = 0; !bad && i < n; i++) {
        milter_base_config(l->m, l->prof->service, &l->cfgs[i]);
        bad = milter_parse_item(words[i], l->bufs[i], sizeof l->bufs[i], &l->cfgs[i], l->err, sizeof l->err) < 0;
    }
    free(text);
    free(words);
    if (bad) {
        petrel_log(l->s, PETREL_LOG_ERROR, "smtpd_milter_maps: the answer \"%s\" for %s: %s", value,
                   petrel_client_addr(l->s), l->err[0] ? l->err : "out of memory");
        refuse(l);
        lookup_free(l);
        return;
    }
    if (petrel_run_blocking(l->m, build_work, build_done, l) < 0) {
        build_work(l);     /* no worker threads in this process: here, then */
        build_done(l);
    }
}

static void ask(lookup *l);

static void answered(int status, const char *value, void *arg)
{
    lookup *l = arg;
    if (petrel_pending_session(l->p) == NULL) {   /* the client left meanwhile */
        lookup_free(l);
        return;
    }
    if (status == PETREL_TABLE_FOUND && value) {
        while (isspace((unsigned char)*value))
            value++;
        if (strncasecmp(value, "DISABLE", 7) == 0 && value[7 + strspn(value + 7, " \t")] == '\0') {
            petrel_resume(l->p, PETREL_CONTINUE, 0, NULL, NULL);   /* no milters for this client */
            lookup_free(l);
            return;
        }
        use_value(l, value);
        return;
    }
    if (status != PETREL_TABLE_NOTFOUND)
        petrel_log(l->s, PETREL_LOG_WARNING, "smtpd_milter_maps: lookup of %s failed: using smtpd_milters",
                   petrel_client_addr(l->s));
    else if (++l->table < l->prof->nmilter_maps) {
        ask(l);
        return;
    }
    milter_session_begin(l->s, l->prof, &l->prof->list, l->p);
    lookup_free(l);
}

static void ask(lookup *l)
{
    const char *addr = petrel_client_addr(l->s);
    if (addr == NULL || petrel_table_lookup(l->prof->milter_maps[l->table], addr, answered, l) < 0) {
        petrel_log(l->s, PETREL_LOG_WARNING, "smtpd_milter_maps: cannot look up %s: using smtpd_milters",
                   addr ? addr : "the client");
        milter_session_begin(l->s, l->prof, &l->prof->list, l->p);
        lookup_free(l);
    }
}

petrel_verdict milter_maps_connect(petrel_session *s, const profile *prof)
{
    lookup *l = calloc(1, sizeof *l);
    if (l == NULL)
        return PETREL_TEMPFAIL;
    l->m = petrel_session_module(s);
    l->s = s;
    l->prof = prof;
    l->p = petrel_suspend(s);
    if (l->p == NULL) {
        free(l);
        return PETREL_TEMPFAIL;
    }
    ask(l);
    return PETREL_PENDING;
}

void milter_maps_free(module_conf *c)
{
    for (size_t i = 0; i < c->nmap_lists; i++) {
        milter_list_free(&c->map_lists[i].list);
        free(c->map_lists[i].value);
    }
    free(c->map_lists);
    c->map_lists = NULL;
    c->nmap_lists = 0;
}
