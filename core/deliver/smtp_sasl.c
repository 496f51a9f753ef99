/*
 * SMTP AUTH in the SMTP client (Postfix's smtp_sasl_glue.c and
 * smtp_sasl_proto.c): after EHLO (and STARTTLS), when
 * smtp_sasl_auth_enable is on and smtp_sasl_password_maps has
 * `user:password` for this sender (smtp_sender_dependent_authentication),
 * the server's host name or the next hop as written ("[relay]:587"), the
 * client authenticates with the strongest mechanism both sides allow:
 * SCRAM-SHA-256, CRAM-MD5, PLAIN, LOGIN. When a remote table has not
 * answered yet (SMTP_SASL_LOOKUP_WAIT) the connection waits, sending
 * nothing, and asks again when the caller resumes it; a table that cannot
 * answer defers as Postfix does ("local data error while talking to ...").
 *
 * Decision: our own client mechanisms (OpenSSL's HMAC and PBKDF2) rather
 * than libsasl2's client side: four small, non-blocking state machines on
 * the queue manager's loop, no plug-in configuration to get wrong, and no
 * Cyrus dependency in the core.
 *
 * Mechanisms are filtered by smtp_sasl_mechanism_filter and by the security
 * options: smtp_sasl_security_options (Petrel's default: noplaintext,
 * noanonymous, so a password never crosses an unencrypted connection) or
 * smtp_sasl_tls_security_options under TLS (default noanonymous). A server
 * that offers AUTH but nothing acceptable defers with Postfix's text; one
 * that does not offer AUTH gets the mail without it (and may refuse it, as
 * with Postfix). A refused AUTH defers (5xx made 4xx:
 * smtp_sasl_auth_soft_bounce) with "SASL authentication failed; server X
 * said: ...". An authenticated connection is never cached for another job.
 */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>

#include <event2/event.h>

#include "deliver/smtp_client_int.h"
#include "lib/base64.h"
#include "lib/buf.h"
#include "lib/xalloc.h"
#include "mail/sasl_options.h"

enum { MECH_SCRAM_SHA256, MECH_CRAM_MD5, MECH_PLAIN, MECH_LOGIN, MECH_COUNT };
static const char *const mech_names[MECH_COUNT] = { "SCRAM-SHA-256", "CRAM-MD5", "PLAIN", "LOGIN" };

struct sc_sasl {
    int mech;
    int step;
    char *user, *password;
    char *scram_first_bare;           /* n=user,r=nonce */
    char *scram_nonce;
    unsigned char scram_salted[32];
    char *scram_auth_message;
};

/* The connection's smtp_sasl_password_maps answers (and lookups in flight). */
static void lookup_end(struct sc_conn *conn)
{
    struct smtp_client *c = conn->c;
    if (conn->sasl_wait == NULL)
        return;
    if (c->set.sasl_lookup_end)
        c->set.sasl_lookup_end(c->set.sasl_lookup_arg, conn->sasl_wait);
    conn->sasl_wait = NULL;
}

void sc_sasl_free(struct sc_conn *conn)
{
    lookup_end(conn);
    struct sc_sasl *x = conn->sasl;
    if (x == NULL)
        return;
    if (x->password) {
        explicit_bzero(x->password, strlen(x->password));
        free(x->password);
    }
    free(x->user);
    free(x->scram_first_bare);
    free(x->scram_nonce);
    free(x->scram_auth_message);
    explicit_bzero(x->scram_salted, sizeof(x->scram_salted));
    free(x);
    conn->sasl = NULL;
}

/* What EHLO offered: the AUTH keyword (and the old AUTH=), whose mechanism
 * names smtp_reply.c collected. */
void sc_sasl_ehlo(struct sc_conn *conn, const struct smtp_reply *r)
{
    conn->server_mechs = 0;
    conn->server_auth = (r->caps & SMTP_CAP_AUTH) != 0;
    for (const char *p = r->auth; *p;) {
        size_t n = strcspn(p, " ");
        for (int m = 0; m < MECH_COUNT && n; m++)
            if (strlen(mech_names[m]) == n && strncasecmp(p, mech_names[m], n) == 0)
                conn->server_mechs |= 1u << m;
        p += n;
        p += strspn(p, " ");
    }
}

static int mech_allowed(const struct smtp_client *c, int m, unsigned options)
{
    if ((options & SASL_OPT_NOPLAINTEXT) && (m == MECH_PLAIN || m == MECH_LOGIN))
        return 0;
    if ((options & SASL_OPT_NODICTIONARY) && m == MECH_CRAM_MD5)
        return 0;
    if ((options & SASL_OPT_MUTUAL_AUTH) && m != MECH_SCRAM_SHA256)
        return 0;
    if ((options & SASL_OPT_FORWARD_SECRECY))
        return 0;   /* none of ours has it */
    const char *const *f = c->set.sasl_mech_filter;
    if (f == NULL || f[0] == NULL)
        return 1;
    for (; *f; f++)
        if (strcasecmp(*f, mech_names[m]) == 0)
            return 1;
    return 0;
}

static char *b64(const void *data, size_t len)
{
    char *out = xmalloc(base64_encoded_size(len));
    base64_encode(data, len, out);
    return out;
}

static void send_b64(struct sc_conn *conn, const char *prefix, const void *data, size_t len)
{
    char *enc = b64(data, len);
    sc_conn_printf(conn, "%s%s\r\n", prefix, enc);
    explicit_bzero(enc, strlen(enc));
    free(enc);
}

static void fail(struct sc_conn *conn, const char *dsn, const char *text)
{
    struct sc_job *a = conn->job;
    sc_pending_set(a, DLV_DEFERRED, dsn, conn->relay, "%s", text);
    sc_sasl_free(conn);
    conn->authed = 1;   /* a session whose AUTH failed is not reused either (Postfix) */
    sc_conn_release(conn);
    sc_job_next(a);
}

static void cannot(struct sc_conn *conn, const char *why)
{
    char text[700];
    snprintf(text, sizeof(text), "SASL authentication failed; cannot authenticate to server %s: %s", conn->desc, why);
    fail(conn, "4.7.0", text);
}

/* Looks the credentials up, in Postfix's order: the sender (with
 * smtp_sender_dependent_authentication), the server's host name, the next
 * hop; a table that cannot answer ends the search (Postfix's
 * smtp_sasl_passwd_lookup). 1 found (user, password malloc'd), 0 none, -1
 * error, SMTP_SASL_LOOKUP_WAIT: a remote table answers later. */
static int credentials(struct sc_conn *conn, char **user, char **password)
{
    struct smtp_client *c = conn->c;
    struct sc_job *a = conn->job;
    char *value = NULL;
    int found = 0;
    if (c->set.sasl_lookup == NULL)
        return 0;
    void *arg = c->set.sasl_lookup_arg;
    if (c->set.sender_dependent_authentication && a->job->sender && *a->job->sender)
        found = c->set.sasl_lookup(arg, &conn->sasl_wait, a->job->sender, 1, &value);
    if (found == 0)
        found = c->set.sasl_lookup(arg, &conn->sasl_wait, conn->addr.host, 0, &value);
    if (found == 0 && a->job->nexthop)
        found = c->set.sasl_lookup(arg, &conn->sasl_wait, a->job->nexthop, 0, &value);
    if (found != 1)
        return found;
    /* "user:password"; historically the password may contain ':' */
    char *colon = strchr(value, ':');
    *user = xstrndup(value, colon ? (size_t)(colon - value) : strlen(value));
    *password = xstrdup(colon ? colon + 1 : "");
    explicit_bzero(value, strlen(value));
    free(value);
    return 1;
}

static void scram_first(struct sc_conn *conn, struct sc_sasl *x)
{
    unsigned char rnd[18];
    RAND_bytes(rnd, sizeof(rnd));
    x->scram_nonce = b64(rnd, sizeof(rnd));
    /* saslname: '=' and ',' escaped (RFC 5802 5.1) */
    struct buf name = BUF_INIT;
    for (const char *p = x->user; *p; p++) {
        if (*p == '=')
            buf_puts(&name, "=3D");
        else if (*p == ',')
            buf_puts(&name, "=2C");
        else
            buf_putc(&name, *p);
    }
    x->scram_first_bare = xmalloc(name.len + strlen(x->scram_nonce) + 8);
    sprintf(x->scram_first_bare, "n=%s,r=%s", name.data ? name.data : "", x->scram_nonce);
    buf_free(&name);
    char first[1024];
    int n = snprintf(first, sizeof(first), "n,,%s", x->scram_first_bare);
    send_b64(conn, "AUTH SCRAM-SHA-256 ", first, (size_t)n);
}

/* Returns 0 with the client-final message sent, or -1 with *why. */
static int scram_final(struct sc_conn *conn, struct sc_sasl *x, const char *server_first, const char **why)
{
    const char *r = NULL, *s = NULL, *i = NULL;
    char *copy = xstrdup(server_first);
    for (char *tok = strtok(copy, ","); tok; tok = strtok(NULL, ",")) {
        if (strncmp(tok, "r=", 2) == 0) r = tok + 2;
        else if (strncmp(tok, "s=", 2) == 0) s = tok + 2;
        else if (strncmp(tok, "i=", 2) == 0) i = tok + 2;
    }
    long iter = i ? strtol(i, NULL, 10) : 0;
    if (r == NULL || s == NULL || iter < 1 || iter > 10000000 || strncmp(r, x->scram_nonce, strlen(x->scram_nonce))) {
        free(copy);
        *why = "malformed SCRAM challenge";
        return -1;
    }
    unsigned char salt[256];
    long sl = strlen(s) < sizeof(salt) ? base64_decode(s, (char *)salt) : -1;
    if (sl < 0) {
        free(copy);
        *why = "malformed SCRAM salt";
        return -1;
    }
    PKCS5_PBKDF2_HMAC(x->password, (int)strlen(x->password), salt, (int)sl, (int)iter, EVP_sha256(), 32,
                      x->scram_salted);
    unsigned char client_key[32], stored[32], sig[32], proof[32];
    unsigned len = 32;
    HMAC(EVP_sha256(), x->scram_salted, 32, (const unsigned char *)"Client Key", 10, client_key, &len);
    EVP_Digest(client_key, 32, stored, NULL, EVP_sha256(), NULL);
    char final_bare[600];
    snprintf(final_bare, sizeof(final_bare), "c=biws,r=%s", r);
    size_t am_len = strlen(x->scram_first_bare) + strlen(server_first) + strlen(final_bare) + 3;
    x->scram_auth_message = xmalloc(am_len);
    snprintf(x->scram_auth_message, am_len, "%s,%s,%s", x->scram_first_bare, server_first, final_bare);
    HMAC(EVP_sha256(), stored, 32, (unsigned char *)x->scram_auth_message, strlen(x->scram_auth_message), sig, &len);
    for (int k = 0; k < 32; k++)
        proof[k] = client_key[k] ^ sig[k];
    char *p64 = b64(proof, 32);
    char msg[800];
    int n = snprintf(msg, sizeof(msg), "%s,p=%s", final_bare, p64);
    free(p64);
    send_b64(conn, "", msg, (size_t)n);
    explicit_bzero(client_key, sizeof(client_key));
    free(copy);
    return 0;
}

static int scram_verify(struct sc_sasl *x, const char *server_final)
{
    if (strncmp(server_final, "v=", 2) != 0)
        return 0;
    unsigned char server_key[32], sig[32];
    unsigned len = 32;
    HMAC(EVP_sha256(), x->scram_salted, 32, (const unsigned char *)"Server Key", 10, server_key, &len);
    HMAC(EVP_sha256(), server_key, 32, (unsigned char *)x->scram_auth_message, strlen(x->scram_auth_message), sig,
         &len);
    char *want = b64(sig, 32);
    int ok = strcmp(want, server_final + 2) == 0;
    free(want);
    return ok;
}

/* A remote smtp_sasl_password_maps table answered: ask again (the answers
 * now come from the connection's lookup state), as after EHLO. */
static void lookup_resumed(void *arg)
{
    struct sc_conn *conn = arg;
    evtimer_del(conn->timer);
    conn->busy++;
    if (conn->job && conn->bev && !conn->zombie)
        sc_conn_ready(conn);
    conn->busy--;
    if (conn->zombie && !conn->busy)
        sc_conn_free_now(conn);
}

/* After EHLO (and TLS): authenticate when we should. Returns 1 when an
 * exchange started (the replies come to sc_sasl_reply) or the credentials
 * wait for a remote table (lookup_resumed goes on), 0 to go on with the
 * transaction, -1 when the job was deferred. */
int sc_sasl_start(struct sc_conn *conn)
{
    struct smtp_client *c = conn->c;
    if (!c->set.sasl_enable || c->set.lmtp || !conn->server_auth || conn->authed)
        return 0;
    char *user = NULL, *password = NULL;
    int found;
    for (;;) {
        found = credentials(conn, &user, &password);
        if (found != SMTP_SASL_LOOKUP_WAIT)
            break;
        /* The session waits (nothing is sent; the reply timer bounds the
         * wait should the table's own timeout not); the queue manager's
         * other deliveries go on. */
        if (c->set.sasl_lookup_wait(c->set.sasl_lookup_arg, conn->sasl_wait, lookup_resumed, conn)) {
            conn->state = S_AUTH;
            sc_conn_arm(conn, c->set.helo_timeout);
            return 1;
        }
    }
    lookup_end(conn);   /* a new connection asks afresh */
    if (found < 0) {
        /* Postfix: "ID: smtp_sasl_password_maps lookup error" and the
         * delivery deferred as a local data error */
        msg_warn("%s: %s_sasl_password_maps lookup error", conn->job->job->queue_id, c->prefix);
        char text[600];
        snprintf(text, sizeof(text), "local data error while talking to %s", conn->desc);
        fail(conn, "4.3.0", text);
        return -1;
    }
    if (found == 0)
        return 0;   /* "talk to each other like strangers" */
    unsigned options = conn->tls ? c->set.sasl_tls_options : c->set.sasl_options;
    int mech = -1;
    for (int m = 0; m < MECH_COUNT; m++) {
        if ((conn->server_mechs & (1u << m)) && mech_allowed(c, m, options)) {
            mech = m;
            break;
        }
    }
    if (mech < 0) {
        explicit_bzero(password, strlen(password));
        free(password);
        free(user);
        char text[600];
        snprintf(text, sizeof(text), "SASL authentication failed: server %s offered no compatible authentication "
                 "mechanisms for this type of connection security", conn->desc);
        fail(conn, "4.7.0", text);
        return -1;
    }
    struct sc_sasl *x = xcalloc(1, sizeof(*x));
    x->mech = mech;
    x->user = user;
    x->password = password;
    conn->sasl = x;
    conn->state = S_AUTH;
    switch (mech) {
    case MECH_PLAIN: {
        size_t ul = strlen(user), pl = strlen(password);
        char *raw = xmalloc(ul + pl + 2);
        raw[0] = '\0';
        memcpy(raw + 1, user, ul + 1);
        memcpy(raw + ul + 2, password, pl);
        send_b64(conn, "AUTH PLAIN ", raw, ul + pl + 2);
        explicit_bzero(raw, ul + pl + 2);
        free(raw);
        break;
    }
    case MECH_LOGIN:
        sc_conn_printf(conn, "AUTH LOGIN\r\n");
        break;
    case MECH_CRAM_MD5:
        sc_conn_printf(conn, "AUTH CRAM-MD5\r\n");
        break;
    case MECH_SCRAM_SHA256:
        scram_first(conn, x);
        break;
    }
    sc_conn_arm(conn, c->set.helo_timeout);
    return 1;
}

/* A reply during the exchange. */
void sc_sasl_reply(struct sc_conn *conn, const struct smtp_reply *r)
{
    struct sc_sasl *x = conn->sasl;
    if (r->code == 235 && x != NULL) {
        conn->authed = 1;
        sc_sasl_free(conn);
        sc_txn_start(conn->job);
        return;
    }
    if (r->code != 334 || x == NULL || ++x->step > 10) {
        char dsn[16];
        snprintf(dsn, sizeof(dsn), "%s", r->dsn[0] ? r->dsn : (r->code / 100 == 5 ? "5.7.0" : "4.7.0"));
        if (dsn[0] == '5')
            dsn[0] = '4';   /* smtp_sasl_auth_soft_bounce = yes: a wrong password is fixed, not bounced */
        char text[900];
        if (r->code == 334) {
            snprintf(text, sizeof(text), "SASL authentication failed; authentication protocol loop with server %s",
                     conn->desc);
            fail(conn, "4.3.0", text);
        } else {
            snprintf(text, sizeof(text), "SASL authentication failed; server %s said: %s", conn->desc, r->text);
            fail(conn, dsn, text);
        }
        return;
    }
    /* the challenge: the text after "334 " */
    const char *b = r->text + 4;
    while (*b == ' ')
        b++;
    size_t blen = strlen(b);
    unsigned char *ch = xmalloc(blen + 1);
    long n = base64_decode(b, (char *)ch);
    if (n < 0) {
        free(ch);
        sc_conn_printf(conn, "*\r\n");
        cannot(conn, "malformed server challenge");
        return;
    }
    ch[n] = '\0';
    const char *why = NULL;
    switch (x->mech) {
    case MECH_LOGIN:
        if (x->step == 1)
            send_b64(conn, "", x->user, strlen(x->user));
        else
            send_b64(conn, "", x->password, strlen(x->password));
        break;
    case MECH_CRAM_MD5: {
        unsigned char mac[16];
        unsigned len = 16;
        HMAC(EVP_md5(), x->password, (int)strlen(x->password), ch, (size_t)n, mac, &len);
        char resp[600];
        int k = snprintf(resp, sizeof(resp), "%s ", x->user);
        for (int i = 0; i < 16 && k < (int)sizeof(resp) - 3; i++)
            k += snprintf(resp + k, sizeof(resp) - (size_t)k, "%02x", mac[i]);
        send_b64(conn, "", resp, (size_t)k);
        break;
    }
    case MECH_SCRAM_SHA256:
        if (x->step == 1) {
            if (scram_final(conn, x, (const char *)ch, &why) != 0) {
                free(ch);
                sc_conn_printf(conn, "*\r\n");
                cannot(conn, why);
                return;
            }
        } else if (!scram_verify(x, (const char *)ch)) {
            free(ch);
            sc_conn_printf(conn, "*\r\n");
            cannot(conn, "the server's SCRAM signature is wrong");
            return;
        } else {
            sc_conn_printf(conn, "\r\n");
        }
        break;
    default:
        sc_conn_printf(conn, "\r\n");   /* PLAIN: an empty challenge after the initial response */
        break;
    }
    free(ch);
    sc_conn_arm(conn, conn->c->set.helo_timeout);
}
