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
#include "deliver/smtp_scram.h"
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
    char *initial;                    /* base64 initial response kept for the first 334: the
                                         AUTH line would have been longer than 512 octets */
    struct scram_client scram;
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
    if (x->initial) {
        explicit_bzero(x->initial, strlen(x->initial));
        free(x->initial);
    }
    scram_client_free(&x->scram);
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

/* "AUTH MECH initial-response", or "AUTH MECH" alone with the response kept
 * for the server's empty challenge when the command would be longer than
 * RFC 5321's 512 octets: RFC 4954 4 says the client MUST NOT use the
 * initial response then (a server may refuse the line as too long). */
static void send_auth(struct sc_conn *conn, struct sc_sasl *x, const char *mech, const void *data, size_t len)
{
    /* The length from the encoding's size, not strlen(enc): gcc's UBSan
     * build checks strlen's argument for NULL and then, on that path it
     * made, saw a NULL %s below (-Werror=format-overflow). */
    size_t enc_len = base64_encoded_size(len) - 1;
    char *enc = b64(data, len);
    if (strlen("AUTH ") + strlen(mech) + 1 + enc_len + 2 > 512) {
        x->initial = enc;
        sc_conn_printf(conn, "AUTH %s\r\n", mech);
        return;
    }
    sc_conn_printf(conn, "AUTH %s %s\r\n", mech, enc);
    explicit_bzero(enc, enc_len);
    free(enc);
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

static void send_buf_b64(struct sc_conn *conn, const char *prefix, struct buf *b)
{
    send_b64(conn, prefix, b->data ? b->data : "", b->len);
    if (b->data)
        explicit_bzero(b->data, b->len);
    buf_free(b);
}

static int scram_first(struct sc_conn *conn, struct sc_sasl *x, const char **why)
{
    unsigned char rnd[18];
    if (RAND_bytes(rnd, sizeof(rnd)) != 1) {
        *why = "no random bytes for the SCRAM nonce";
        return -1;
    }
    char nonce[base64_encoded_size(sizeof(rnd))];
    base64_encode(rnd, sizeof(rnd), nonce);
    struct buf first = BUF_INIT;
    if (scram_client_first(&x->scram, x->user, nonce, &first, why) != 0) {
        buf_free(&first);
        return -1;
    }
    send_auth(conn, x, "SCRAM-SHA-256", first.data, first.len);
    explicit_bzero(first.data, first.len);
    buf_free(&first);
    return 0;
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
    if (strlen(user) > SCRAM_MESSAGE_MAX) {
        /* RFC 4954 bounds an AUTH line at 12288 octets: a user name this
         * long is a table error, not something to cut */
        explicit_bzero(password, strlen(password));
        free(password);
        free(user);
        cannot(conn, "the user name in smtp_sasl_password_maps is longer than 4096 bytes");
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
        send_auth(conn, x, "PLAIN", raw, ul + pl + 2);
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
    case MECH_SCRAM_SHA256: {
        const char *why = NULL;
        if (scram_first(conn, x, &why) != 0) {
            cannot(conn, why);
            return -1;
        }
        break;
    }
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
    /* the challenge: the text after "334 ", whole (the reply's text is
     * cut for the logs); the reader bounds it */
    const struct smtp_reply_reader *rd = &conn->reader;
    if (rd->challenge_cut) {
        sc_conn_printf(conn, "*\r\n");
        cannot(conn, "the server's challenge is longer than 12288 bytes");
        return;
    }
    if (x->initial != NULL) {
        /* the response we could not send on the AUTH line (RFC 4954 4):
         * the server's first challenge is empty */
        sc_conn_printf(conn, "%s\r\n", x->initial);
        explicit_bzero(x->initial, strlen(x->initial));
        free(x->initial);
        x->initial = NULL;
        x->step--;
        sc_conn_arm(conn, conn->c->set.helo_timeout);
        return;
    }
    const char *b = rd->challenge.data ? rd->challenge.data : "";
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
        /* "user hexdigest" (RFC 2195); the user name is as long as the
         * table made it (bounded in sc_sasl_start) */
        unsigned char mac[16];
        unsigned len = 16;
        HMAC(EVP_md5(), x->password, (int)strlen(x->password), ch, (size_t)n, mac, &len);
        struct buf resp = BUF_INIT;
        buf_puts(&resp, x->user);
        buf_putc(&resp, ' ');
        for (int i = 0; i < 16; i++)
            buf_printf(&resp, "%02x", mac[i]);
        send_buf_b64(conn, "", &resp);
        break;
    }
    case MECH_SCRAM_SHA256: {
        struct buf out = BUF_INIT;
        char errbuf[300];
        int rc = x->step == 1
            ? scram_client_final(&x->scram, x->password, (const char *)ch, (size_t)n, &out, &why)
            : scram_server_final(&x->scram, (const char *)ch, (size_t)n, &why, errbuf, sizeof(errbuf));
        if (rc != 0) {
            buf_free(&out);
            free(ch);
            sc_conn_printf(conn, "*\r\n");
            cannot(conn, why);
            return;
        }
        if (x->step == 1)
            send_buf_b64(conn, "", &out);
        else
            sc_conn_printf(conn, "\r\n");
        break;
    }
    default:
        sc_conn_printf(conn, "\r\n");   /* PLAIN: an empty challenge after the initial response */
        break;
    }
    free(ch);
    sc_conn_arm(conn, conn->c->set.helo_timeout);
}
