/*
 * Making an ldap: table's libldap handle, and the blocking set-up of a
 * connection: connect, StartTLS (start_tls = yes on an ldap:// server) or
 * the TLS handshake (ldaps://), then the bind: simple, or SASL (bind =
 * sasl: libldap's ldap_sasl_interactive_bind_s with Cyrus SASL, the
 * mechanisms of sasl_mechs, bind_dn as the authentication id, bind_pw,
 * sasl_realm, sasl_authz_id and sasl_minssf, as Postfix's dict_ldap).
 *
 * Why blocking: libldap has no non-blocking StartTLS, TLS handshake or
 * SASL exchange, so a table with TLS or SASL makes its connections on a
 * worker thread
 * (petrel_run_blocking, ldap_setup_job.c) and only then hands the handle to the
 * event loop, where the searches run asynchronously as without TLS. The
 * blocking lookup (callers that cannot wait) uses the same code directly.
 * Nothing here calls a Petrel function or reads the table: a set-up
 * carries its own copy of the settings (ldap_setup_fill with copy), so a
 * table closed while its connection is being made on a thread is safe.
 *
 * TLS settings are per handle (LDAP_OPT_X_TLS_NEWCTX), as Postfix's
 * dict_ldap sets them: tls_ca_cert_file, tls_ca_cert_dir, tls_cert,
 * tls_key, tls_cipher_suite, and tls_require_cert (Postfix's default "no"
 * does not check the server's certificate; "yes" demands a valid one
 * that names the server).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <ldap.h>
#include <sasl/sasl.h>

#include "ldap_table.h"

static char *copy_string(const char *s, int copy)
{
    if (s == NULL || !copy)
        return (char *)s;
    char *d = strdup(s);
    if (d == NULL)
        abort();
    return d;
}

void ldap_setup_fill(struct ldap_setup *s, const struct table *t, const char *url, int copy)
{
    memset(s, 0, sizeof(*s));
    s->copied = copy;
    s->url = copy_string(url, copy);
    s->bind_dn = copy_string(t->bind_dn, copy);
    s->bind_pw = copy_string(t->bind_pw, copy);
    s->ca_file = copy_string(t->tls_ca_cert_file, copy);
    s->ca_dir = copy_string(t->tls_ca_cert_dir, copy);
    s->cert = copy_string(t->tls_cert, copy);
    s->key = copy_string(t->tls_key, copy);
    s->ciphers = copy_string(t->tls_cipher_suite, copy);
    s->mechs = copy_string(t->sasl_mechs, copy);
    s->realm = copy_string(t->sasl_realm, copy);
    s->authz_id = copy_string(t->sasl_authz_id, copy);
    s->minssf = t->sasl_minssf;
    s->bind = t->bind;
    s->tls = t->tls;
    s->start_tls = t->start_tls && strncasecmp(url, "ldaps:", 6) != 0;
    s->require_cert = t->tls_require_cert;
    s->version = t->version;
    s->deref = t->deref;
    s->sizelimit = t->size_limit ? (int)t->size_limit : LDAP_NO_LIMIT;
    s->timeout_ms = t->timeout_ms;
}

void ldap_setup_release(struct ldap_setup *s)
{
    if (s->copied) {
        free(s->url);
        free(s->bind_dn);
        free(s->bind_pw);
        free(s->ca_file);
        free(s->ca_dir);
        free(s->cert);
        free(s->key);
        free(s->ciphers);
        free(s->mechs);
        free(s->realm);
        free(s->authz_id);
    }
    memset(s, 0, sizeof(*s));
}

static int set_tls_options(const struct ldap_setup *s, LDAP *ld)
{
    int require = s->require_cert ? LDAP_OPT_X_TLS_DEMAND : LDAP_OPT_X_TLS_NEVER, zero = 0;
    const struct {
        int option;
        const char *value;
    } files[] = {
        { LDAP_OPT_X_TLS_CACERTFILE, s->ca_file }, { LDAP_OPT_X_TLS_CACERTDIR, s->ca_dir },
        { LDAP_OPT_X_TLS_CERTFILE, s->cert },      { LDAP_OPT_X_TLS_KEYFILE, s->key },
        { LDAP_OPT_X_TLS_CIPHER_SUITE, s->ciphers },
    };
    if (ldap_set_option(ld, LDAP_OPT_X_TLS_REQUIRE_CERT, &require) != LDAP_OPT_SUCCESS)
        return -1;
    for (size_t i = 0; i < sizeof(files) / sizeof(files[0]); i++)
        if (files[i].value && *files[i].value && ldap_set_option(ld, files[i].option, files[i].value) != LDAP_OPT_SUCCESS)
            return -1;
    /* A context of this handle's own, from the options above. */
    return ldap_set_option(ld, LDAP_OPT_X_TLS_NEWCTX, &zero) == LDAP_OPT_SUCCESS ? 0 : -1;
}

int ldap_handle_make(const struct ldap_setup *s, int async, LDAP **out)
{
    LDAP *ld = NULL;
    *out = NULL;
    int rc = ldap_initialize(&ld, s->url);
    if (rc != LDAP_SUCCESS)
        return rc;
    struct timeval tv = { (time_t)((s->timeout_ms + 999) / 1000), 0 };
    ldap_set_option(ld, LDAP_OPT_PROTOCOL_VERSION, &s->version);
    ldap_set_option(ld, LDAP_OPT_NETWORK_TIMEOUT, &tv);
    ldap_set_option(ld, LDAP_OPT_TIMEOUT, &tv);
    ldap_set_option(ld, LDAP_OPT_SIZELIMIT, &s->sizelimit);
    ldap_set_option(ld, LDAP_OPT_DEREF, &s->deref);
    ldap_set_option(ld, LDAP_OPT_REFERRALS, LDAP_OPT_OFF);
    ldap_set_option(ld, LDAP_OPT_RESTART, LDAP_OPT_ON);
    if (async)
        ldap_set_option(ld, LDAP_OPT_CONNECT_ASYNC, LDAP_OPT_ON);
    if (s->tls && set_tls_options(s, ld) != 0) {
        ldap_unbind_ext(ld, NULL, NULL);
        return LDAP_LOCAL_ERROR;
    }
    *out = ld;
    return LDAP_SUCCESS;
}

/* Cyrus SASL's questions, answered from the table's settings. */
static int sasl_answers(LDAP *ld, unsigned flags, void *arg, void *questions)
{
    (void)ld;
    (void)flags;
    const struct ldap_setup *s = arg;
    for (sasl_interact_t *q = questions; q->id != SASL_CB_LIST_END; q++) {
        const char *answer = NULL;
        switch (q->id) {
        case SASL_CB_GETREALM: answer = s->realm; break;
        case SASL_CB_AUTHNAME: answer = s->bind_dn; break;
        case SASL_CB_USER: answer = s->authz_id; break;
        case SASL_CB_PASS: answer = s->bind_pw; break;
        default: break;
        }
        q->result = answer ? answer : "";
        q->len = (unsigned)strlen(q->result);
    }
    return LDAP_SUCCESS;
}

static int sasl_bind(struct ldap_setup *s, LDAP *ld)
{
    char secprops[32];
    snprintf(secprops, sizeof(secprops), "minssf=%d", s->minssf);
    if (ldap_set_option(ld, LDAP_OPT_X_SASL_SECPROPS, secprops) != LDAP_OPT_SUCCESS)
        return LDAP_LOCAL_ERROR;
    return ldap_sasl_interactive_bind_s(ld, NULL, s->mechs && *s->mechs ? s->mechs : NULL, NULL, NULL,
                                        LDAP_SASL_QUIET, sasl_answers, s);
}

LDAP *ldap_setup_connect(struct ldap_setup *s)
{
    LDAP *ld = NULL;
    const char *step = "connect";
    int rc = ldap_handle_make(s, 0, &ld);
    if (rc == LDAP_SUCCESS && s->start_tls) {
        step = "StartTLS";
        rc = ldap_start_tls_s(ld, NULL, NULL);
    }
    if (rc == LDAP_SUCCESS && s->bind == TABLE_BIND_SASL) {
        step = "SASL bind";
        rc = sasl_bind(s, ld);
    } else if (rc == LDAP_SUCCESS && s->bind) {
        step = "bind";
        struct berval cred = { strlen(s->bind_pw ? s->bind_pw : ""), s->bind_pw ? s->bind_pw : "" };
        rc = ldap_sasl_bind_s(ld, s->bind_dn ? s->bind_dn : "", LDAP_SASL_SIMPLE, &cred, NULL, NULL, NULL);
    } else if (rc == LDAP_SUCCESS) {
        rc = ldap_connect(ld);   /* TCP, and the TLS handshake for ldaps:// */
    }
    if (rc == LDAP_SUCCESS)
        return ld;
    char *diag = NULL;
    if (ld)
        ldap_get_option(ld, LDAP_OPT_DIAGNOSTIC_MESSAGE, &diag);
    snprintf(s->diag, sizeof(s->diag), "%s: %s%s%s%s", step, ldap_err2string(rc), diag && *diag ? " (" : "",
             diag && *diag ? diag : "", diag && *diag ? ")" : "");
    ldap_memfree(diag);
    if (ld)
        ldap_unbind_ext(ld, NULL, NULL);
    return NULL;
}
