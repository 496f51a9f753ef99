/*
 * Session ticket keys shared by every smtpd worker (Postfix's tlsmgr hands
 * its smtpd processes the same keys for the same reason). Without them each
 * worker's OpenSSL context seals tickets with its own random key, and a
 * client resumes only when the kernel gives its next connection to the
 * same worker.
 *
 * The master maps one small anonymous MAP_SHARED region before it forks
 * the workers and fills it from the kernel's random generator: the current
 * key (which seals new tickets) and the previous one (which still opens
 * tickets, and asks OpenSSL to issue a fresh one). It rotates the keys
 * every smtpd_tls_session_cache_timeout and at every reload, so a ticket
 * is never accepted for much longer than that, and keys do not live
 * forever (forward secrecy of resumed sessions depends on it). The master
 * is the only writer; workers read under a sequence counter (a seqlock:
 * odd while a rotation is being written), so no lock is shared with a
 * process that may die.
 *
 * A ticket is AES-256-CBC with HMAC-SHA256, as OpenSSL's own tickets are.
 */
#include "config.h"

#include <stdint.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <time.h>

#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <openssl/ssl.h>

#include "lib/log.h"
#include "tls/tls.h"

struct ticket_key {
    unsigned char name[16];
    unsigned char aes[32];
    unsigned char hmac[32];
    int64_t expires;               /* opening tickets stops after this time */
};

struct tls_ticket_keys {
    uint64_t seq;                  /* odd while the master writes */
    struct ticket_key current, previous;
};

static void fill_random(void *p, size_t n)
{
    unsigned char *b = p;
    while (n) {
        ssize_t got = getrandom(b, n, 0);
        if (got <= 0)
            msg_fatal("getrandom: cannot make TLS session ticket keys");
        b += got;
        n -= (size_t)got;
    }
}

struct tls_ticket_keys *tls_ticket_keys_create(unsigned lifetime)
{
    struct tls_ticket_keys *k = mmap(NULL, sizeof(*k), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (k == MAP_FAILED)
        return NULL;
    memset(k, 0, sizeof(*k));
    tls_ticket_keys_rotate(k, lifetime);
    return k;
}

void tls_ticket_keys_rotate(struct tls_ticket_keys *k, unsigned lifetime)
{
    if (k == NULL)
        return;
    struct ticket_key fresh;
    fill_random(fresh.name, sizeof(fresh.name));
    fill_random(fresh.aes, sizeof(fresh.aes));
    fill_random(fresh.hmac, sizeof(fresh.hmac));
    /* The current key seals for one lifetime and opens for two, so a
     * ticket issued just before a rotation still works for a lifetime. */
    fresh.expires = (int64_t)time(NULL) + 2 * (int64_t)(lifetime ? lifetime : 3600);
    __atomic_add_fetch(&k->seq, 1, __ATOMIC_ACQ_REL);
    k->previous = k->current;
    k->current = fresh;
    __atomic_add_fetch(&k->seq, 1, __ATOMIC_ACQ_REL);
    explicit_bzero(&fresh, sizeof(fresh));
}

void tls_ticket_keys_free(struct tls_ticket_keys *k)
{
    if (k) {
        explicit_bzero(k, sizeof(*k));
        munmap(k, sizeof(*k));
    }
}

static void snapshot(const struct tls_ticket_keys *k, struct tls_ticket_keys *out)
{
    for (;;) {
        uint64_t before = __atomic_load_n(&k->seq, __ATOMIC_ACQUIRE);
        if (before & 1)
            continue;
        memcpy(out, (const void *)k, sizeof(*out));
        __atomic_thread_fence(__ATOMIC_ACQUIRE);
        if (__atomic_load_n(&k->seq, __ATOMIC_ACQUIRE) == before)
            return;
    }
}

static int ticket_index = -1;   /* SSL_CTX ex_data slot of the keys (set once, never changes) */

static int set_mac(EVP_MAC_CTX *hctx, const unsigned char *key)
{
    OSSL_PARAM params[2];
    params[0] = OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, (char *)"SHA256", 0);
    params[1] = OSSL_PARAM_construct_end();
    return EVP_MAC_init(hctx, key, 32, params) == 1;
}

static int on_ticket(SSL *ssl, unsigned char *key_name, unsigned char *iv, EVP_CIPHER_CTX *cctx,
                     EVP_MAC_CTX *hctx, int enc)
{
    const struct tls_ticket_keys *shared = SSL_CTX_get_ex_data(SSL_get_SSL_CTX(ssl), ticket_index);
    if (shared == NULL)
        return 0;
    struct tls_ticket_keys k;
    snapshot(shared, &k);
    int rc = 0;
    if (enc) {
        if (RAND_bytes(iv, EVP_MAX_IV_LENGTH) == 1 &&
            EVP_EncryptInit_ex(cctx, EVP_aes_256_cbc(), NULL, k.current.aes, iv) == 1 && set_mac(hctx, k.current.hmac)) {
            memcpy(key_name, k.current.name, 16);
            rc = 1;
        } else {
            rc = -1;
        }
    } else {
        int64_t now = (int64_t)time(NULL);
        const struct ticket_key *use = NULL;
        if (memcmp(key_name, k.current.name, 16) == 0 && now < k.current.expires)
            use = &k.current;
        else if (k.previous.expires && memcmp(key_name, k.previous.name, 16) == 0 && now < k.previous.expires)
            use = &k.previous;
        /* 0: an unknown or expired key, a full handshake; 2: good, but
         * issue a ticket under the current key */
        if (use && EVP_DecryptInit_ex(cctx, EVP_aes_256_cbc(), NULL, use->aes, iv) == 1 && set_mac(hctx, use->hmac))
            rc = use == &k.current ? 1 : 2;
    }
    explicit_bzero(&k, sizeof(k));
    return rc;
}

void tls_ticket_keys_use(SSL_CTX *ctx, const struct tls_ticket_keys *keys)
{
    if (keys == NULL)
        return;
    if (ticket_index < 0)
        ticket_index = SSL_CTX_get_ex_new_index(0, NULL, NULL, NULL, NULL);
    SSL_CTX_set_ex_data(ctx, ticket_index, (void *)keys);
    SSL_CTX_set_tlsext_ticket_key_evp_cb(ctx, on_ticket);
}
