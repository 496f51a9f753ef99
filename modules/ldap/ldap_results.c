/*
 * Reading an ldap: table's search results as Postfix's dict_ldap does
 * (dict_ldap_get_values): every value of the result attributes of every
 * entry, through result_format; terminal_result_attribute,
 * leaf_result_attribute and special_result_attribute (DN and LDAP URL
 * values searched in turn, through the caller's spawn function: the
 * asynchronous lookup sends a search, the blocking one runs it); size and
 * expansion limits; and what a search's result code means. Also the
 * search itself: the base and the filter with the key escaped, and the
 * loop that reads a connection's ready results (ldap.c's and
 * ldap_referral.c's connections).
 */
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <lber.h>
#include <ldap.h>

#include <petrel/plugin.h>

#include "ldap_escape.h"
#include "ldap_table.h"

/* Postfix's attrdesc_subtype: "mail" asks for "mail" and "mail;lang-en". */
static int attribute_matches(const char *wanted, const char *returned)
{
    size_t n = strlen(wanted);
    return strncasecmp(wanted, returned, n) == 0 && (returned[n] == '\0' || returned[n] == ';');
}

static int attribute_index(const struct table *t, const char *attr)
{
    int i;
    for (i = 0; t->attrs[i]; i++)
        if (attribute_matches(t->attrs[i], attr))
            break;
    return i;
}

static int has_values(LDAP *ld, LDAPMessage *entry, const char *attr)
{
    struct berval **vals = ldap_get_values_len(ld, entry, attr);
    if (vals == NULL)
        return 0;
    int n = ldap_count_values_len(vals);
    ldap_value_free_len(vals);
    return n > 0;
}

/* The attributes of url that we asked for (Postfix's url_attrs): all of
 * ours when it names none, NULL when none of its names are ours. */
static char **url_attributes(const struct table *t, LDAPURLDesc *url)
{
    size_t n = 0;
    for (char **a = t->attrs; *a; a++)
        n++;
    char **out = calloc(n + 1, sizeof(*out));
    if (out == NULL)
        abort();
    if (url->lud_attrs == NULL || url->lud_attrs[0] == NULL) {
        memcpy(out, t->attrs, n * sizeof(*out));
        return out;
    }
    size_t k = 0;
    for (char **a = url->lud_attrs; *a && k < n; a++)
        for (char **ours = t->attrs; *ours; ours++)
            if (attribute_matches(*ours, *a)) {
                out[k++] = *ours;
                break;
            }
    if (k == 0) {
        free(out);
        return NULL;
    }
    return out;
}

/* A special attribute's value: a DN, or an LDAP URL to search. */
static void follow(struct table *t, struct lookup *lk, const char *value, int depth, spawn_fn *spawn, void *arg)
{
    if (!ldap_is_ldap_url(value)) {
        if (spawn(arg, value, LDAP_SCOPE_BASE, "(objectclass=*)", t->attrs, depth) != 0)
            lk->error = 1;
        return;
    }
    LDAPURLDesc *url = NULL;
    int rc = ldap_url_parse(value, &url);
    if (rc != 0) {
        petrel_module_log(t->module, PETREL_LOG_WARNING, "ldap:%s: malformed URL %.200s: %s (%d)", t->config,
                          value, ldap_err2string(rc), rc);
        lk->error = 1;
        return;
    }
    char **attrs = url_attributes(t, url);
    if (attrs && spawn(arg, url->lud_dn ? url->lud_dn : "", url->lud_scope,
                       url->lud_filter ? url->lud_filter : "(objectclass=*)", attrs, depth) != 0)
        lk->error = 1;
    free(attrs);
    ldap_free_urldesc(url);
}

/* Reads the entries of one search's results (Postfix's
 * dict_ldap_get_values): ordinary attributes expanded into lk->result,
 * special ones spawned as searches one level deeper. */
void ldap_read_entries(struct table *t, LDAP *ld, LDAPMessage *res, struct lookup *lk, int depth, spawn_fn *spawn,
                       void *arg)
{
    long entries = 0;
    for (LDAPMessage *entry = ldap_first_entry(ld, res); entry && !lk->error; entry = ldap_next_entry(ld, entry)) {
        if (t->size_limit && ++entries > t->size_limit) {
            petrel_module_log(t->module, PETREL_LOG_WARNING, "ldap:%s: query size limit (%ld) exceeded for "
                              "\"%.100s\"", t->config, t->size_limit, lk->key);
            lk->error = 1;
            break;
        }
        int terminal = 0, leaf = 1;
        for (int i = 0; i < t->nterminal && !terminal; i++)
            terminal = has_values(ld, entry, t->attrs[i]);
        if (!terminal && t->nleaf > 0)
            for (int i = t->nordinary; t->attrs[i] && leaf; i++)
                leaf = !has_values(ld, entry, t->attrs[i]);
        BerElement *ber = NULL;
        for (char *attr = ldap_first_attribute(ld, entry, &ber); attr;
             ldap_memfree(attr), attr = ldap_next_attribute(ld, entry, ber)) {
            if (lk->error)
                continue;
            struct berval **vals = ldap_get_values_len(ld, entry, attr);
            if (vals == NULL)
                continue;
            int count = ldap_count_values_len(vals);
            int i = attribute_index(t, attr);
            if (i < t->nordinary || terminal) {
                int skip = (terminal && i >= t->nterminal) ||
                           (!leaf && i >= t->nterminal && i < t->nterminal + t->nleaf);
                for (int v = 0; v < count && !skip && !lk->error; v++) {
                    const char *text = vals[v]->bv_val;
                    if (vals[v]->bv_len == 0 || memchr(text, '\0', vals[v]->bv_len)) {
                        petrel_module_log(t->module, PETREL_LOG_WARNING, "ldap:%s: %s value %s for \"%.100s\" -- "
                                          "ignored", t->config, attr, vals[v]->bv_len ? "with a NUL byte" : "empty",
                                          lk->key);
                        continue;
                    }
                    if (table_template_expand(&t->tpl, t->result_format, text, lk->key, NULL, NULL, &lk->result) &&
                        t->expansion_limit > 0 && ++lk->expansions > t->expansion_limit) {
                        petrel_module_log(t->module, PETREL_LOG_WARNING, "ldap:%s: expansion limit exceeded for key "
                                          "\"%.100s\"", t->config, lk->key);
                        lk->error = 1;
                    }
                }
            } else if (t->attrs[i] && depth < t->recursion_limit) {
                for (int v = 0; v < count && !lk->error; v++)
                    follow(t, lk, vals[v]->bv_val, depth + 1, spawn, arg);
            } else if (t->attrs[i]) {
                petrel_module_log(t->module, PETREL_LOG_WARNING, "ldap:%s: recursion limit exceeded for special "
                                  "attribute %s=%.200s", t->config, attr, count ? vals[0]->bv_val : "");
                lk->error = 1;
            }
            ldap_value_free_len(vals);
        }
        if (ber)
            ber_free(ber, 0);
    }
}

/* A finished search's outcome: 1 read its entries, 0 nothing to read
 * (a base that does not exist), -1 error (logged; the connection should
 * be dropped when *drop is set). */
int ldap_search_outcome(struct table *t, LDAP *ld, LDAPMessage *res, const char *base, int depth, const char *key,
                        int *drop)
{
    int err = LDAP_OTHER;
    char *text = NULL;
    *drop = 0;
    int rc = ldap_parse_result(ld, res, &err, NULL, &text, NULL, NULL, 0);
    if (rc != LDAP_SUCCESS)
        err = rc;
    int outcome;
    if (err == LDAP_REFERRAL && t->chase_referrals)
        err = LDAP_SUCCESS;   /* no entries: the caller chases the referral */
    switch (err) {
    case LDAP_SUCCESS:
        outcome = 1;
        break;
    case LDAP_NO_SUCH_OBJECT:
        if (depth == 0 && t->dynamic_base) {
            outcome = 0;
            break;
        }
        petrel_module_log(t->module, PETREL_LOG_WARNING, "ldap:%s: %s %.200s not found%s", t->config,
                          depth ? "DN" : "search base", base ? base : "", depth ? ", skipping" : "");
        outcome = depth ? 0 : -1;
        break;
    case LDAP_SIZELIMIT_EXCEEDED:
        petrel_module_log(t->module, PETREL_LOG_WARNING, "ldap:%s: query size limit (%ld) exceeded for "
                          "\"%.100s\"", t->config, t->size_limit, key);
        outcome = -1;
        break;
    default:
        petrel_module_log(t->module, PETREL_LOG_WARNING, "ldap:%s: search error %d for \"%.100s\": %s%s%s",
                          t->config, err, key, ldap_err2string(err), text && *text ? ": " : "", text ? text : "");
        *drop = 1;
        outcome = -1;
        break;
    }
    ldap_memfree(text);
    return outcome;
}

/* The base and the filter for key; 0 when the key lacks what the
 * templates need (not found without asking). */
int ldap_make_search(const struct table *t, const char *key, char **base, char **filter)
{
    struct table_buffer b = { 0 }, f = { 0 };
    table_buffer_put(&b, "", 0);
    table_buffer_put(&f, "", 0);
    if (!table_template_expand(&t->tpl, t->search_base, key, NULL, ldap_escape_dn, NULL, &b) ||
        !table_template_expand(&t->tpl, t->query_filter, key, NULL, ldap_escape_filter, NULL, &f)) {
        free(b.data);
        free(f.data);
        return 0;
    }
    *base = b.data;
    *filter = f.data;
    return 1;
}

int ldap_read_ready(LDAP *ld, ldap_result_fn *on_result, void *arg, int *err)
{
    for (;;) {
        LDAPMessage *res = NULL;
        struct timeval zero = { 0, 0 };
        int rc = ldap_result(ld, LDAP_RES_ANY, LDAP_MSG_ALL, &zero, &res);
        if (rc == 0)
            return 0;
        if (rc < 0) {
            *err = LDAP_SERVER_DOWN;
            ldap_get_option(ld, LDAP_OPT_RESULT_CODE, err);
            return -1;
        }
        if (on_result(arg, res))
            return 0;
    }
}
