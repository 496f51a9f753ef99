/*
 * streammod: a test module for the stored message as a stream (ABI 1.1
 * petrel_message_* and petrel_body_replace_*), written against plugin.h
 * alone. What it does is chosen by the message's X-Stream header:
 *
 *   X-Stream: read      reads the whole message, and the body alone, from
 *                       timer callbacks (a suspended end_of_message, as an
 *                       asynchronous scanner would) and logs their sizes and
 *                       CRC-32s (zlib's, which the test computes too)
 *   X-Stream: upper     streams a new body: the old one with a-z made A-Z,
 *                       read and written 64 KiB at a time, then reads the
 *                       body again (the new one) and logs its CRC-32
 *   X-Stream: careless  streams the new body like upper, but on a write
 *                       error aborts and answers CONTINUE (the core must
 *                       still refuse the message with 451)
 *   X-Stream: keep      keeps its message handle; the next transaction's
 *                       MAIL reads through it (a stale handle: -1, logged)
 *   X-Stream: early     calls petrel_message_open() in end_of_headers
 *                       (refused: NULL, logged)
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <petrel/plugin.h>

#define CHUNK 65536

struct job {
    petrel_pending *pending;
    petrel_module *m;
    petrel_message *whole, *body;
    unsigned long long whole_hash, body_hash, whole_n, body_n;
    char buf[CHUNK];
};

static petrel_message *kept;   /* X-Stream: keep (one process, one loop) */

/* CRC-32 as zlib computes it (start with 0). */
static unsigned long long crc32_update(unsigned long long crc, const unsigned char *p, size_t n)
{
    static unsigned long table[256];
    if (table[1] == 0)
        for (unsigned long i = 0; i < 256; i++) {
            unsigned long c = i;
            for (int k = 0; k < 8; k++)
                c = c & 1 ? 0xedb88320UL ^ (c >> 1) : c >> 1;
            table[i] = c;
        }
    unsigned long c = (unsigned long)crc ^ 0xffffffffUL;
    for (size_t i = 0; i < n; i++)
        c = table[(c ^ p[i]) & 0xff] ^ (c >> 8);
    return (c ^ 0xffffffffUL) & 0xffffffffUL;
}

static const char *mode_of(petrel_session *s)
{
    const char *name, *value;
    for (size_t i = 0; petrel_header_at(s, i, &name, &value) == 0; i++)
        if (strcasecmp(name, "X-Stream") == 0)
            return value;
    return "";
}

/* Reads up to 4 MiB of each stream, then yields to the loop again. */
static void read_some(void *arg)
{
    struct job *j = arg;
    petrel_session *s = petrel_pending_session(j->pending);
    if (s == NULL) {
        petrel_module_log(j->m, PETREL_LOG_INFO, "the session went away while reading");
        free(j);
        return;
    }
    for (int round = 0; round < 64; round++) {
        long n = petrel_message_read(j->whole, j->buf, sizeof(j->buf));
        if (n < 0) {
            petrel_resume(j->pending, PETREL_TEMPFAIL, 451, "4.3.0", "streammod: read error");
            free(j);
            return;
        }
        if (n == 0) {
            for (;;) {
                long b = petrel_message_read(j->body, j->buf, sizeof(j->buf));
                if (b <= 0)
                    break;
                j->body_hash = crc32_update(j->body_hash, (unsigned char *)j->buf, (size_t)b);
                j->body_n += (unsigned long long)b;
            }
            petrel_log(s, PETREL_LOG_INFO, "read message=%llu/%lld crc=%08llx body=%llu/%lld crc=%08llx",
                       j->whole_n, petrel_message_size(j->whole), j->whole_hash, j->body_n,
                       petrel_message_size(j->body), j->body_hash);
            petrel_message_close(j->whole);
            petrel_message_close(j->body);
            petrel_resume(j->pending, PETREL_CONTINUE, 0, NULL, NULL);
            free(j);
            return;
        }
        j->whole_hash = crc32_update(j->whole_hash, (unsigned char *)j->buf, (size_t)n);
        j->whole_n += (unsigned long long)n;
    }
    petrel_timer_start(j->m, 0, read_some, j);
}

static petrel_verdict replace_upper(petrel_session *s, int careless)
{
    petrel_message *body = petrel_message_open(s, PETREL_MESSAGE_BODY);
    petrel_body_writer *w = petrel_body_replace_begin(s);
    if (body == NULL || w == NULL)
        return PETREL_TEMPFAIL;
    char *buf = petrel_pool_alloc(petrel_tx_pool(s), CHUNK);
    unsigned long long total = 0;
    long n;
    while ((n = petrel_message_read(body, buf, CHUNK)) > 0) {
        for (long i = 0; i < n; i++)
            if (buf[i] >= 'a' && buf[i] <= 'z')
                buf[i] = (char)(buf[i] - 'a' + 'A');
        if (petrel_body_replace_write(w, buf, (size_t)n) != 0) {
            petrel_log(s, PETREL_LOG_INFO, "write failed after %llu bytes", total);
            petrel_body_replace_abort(w);
            petrel_message_close(body);
            if (careless)
                return PETREL_CONTINUE;
            petrel_set_reply(s, 451, "4.3.0", "streammod: cannot write the new body");
            return PETREL_TEMPFAIL;
        }
        total += (unsigned long long)n;
    }
    petrel_message_close(body);
    if (n < 0 || petrel_body_replace_commit(w) != 0) {
        petrel_log(s, PETREL_LOG_INFO, "commit failed");
        return careless ? PETREL_CONTINUE : PETREL_TEMPFAIL;
    }
    petrel_log(s, PETREL_LOG_INFO, "replaced the body: %llu bytes", total);
    /* What a module after this one reads: the new body. */
    petrel_message *again = petrel_message_open(s, PETREL_MESSAGE_BODY);
    unsigned long long crc = 0, got = 0;
    while ((n = petrel_message_read(again, buf, CHUNK)) > 0) {
        crc = crc32_update(crc, (unsigned char *)buf, (size_t)n);
        got += (unsigned long long)n;
    }
    petrel_log(s, PETREL_LOG_INFO, "reads back: body=%llu/%lld crc=%08llx", got, petrel_message_size(again), crc);
    petrel_message_close(again);
    return PETREL_CONTINUE;
}

static petrel_verdict on_eoh(petrel_session *s)
{
    if (strcmp(mode_of(s), "early") == 0)
        petrel_log(s, PETREL_LOG_INFO, "open in end_of_headers: %s",
                   petrel_message_open(s, 0) ? "opened" : "refused");
    return PETREL_CONTINUE;
}

static petrel_verdict on_eom(petrel_session *s)
{
    const char *mode = mode_of(s);
    if (strcmp(mode, "read") == 0) {
        struct job *j = calloc(1, sizeof(*j));   /* the module's: the timer may outlive the session */
        if (j == NULL)
            return PETREL_TEMPFAIL;
        j->m = petrel_session_module(s);
        j->whole = petrel_message_open(s, 0);
        j->body = petrel_message_open(s, PETREL_MESSAGE_BODY);
        if (j->whole == NULL || j->body == NULL) {
            free(j);
            return PETREL_TEMPFAIL;
        }
        j->pending = petrel_suspend(s);
        petrel_timer_start(j->m, 0, read_some, j);
        return PETREL_PENDING;
    }
    if (strcmp(mode, "upper") == 0 || strcmp(mode, "careless") == 0)
        return replace_upper(s, strcmp(mode, "careless") == 0);
    if (strcmp(mode, "keep") == 0) {
        kept = petrel_message_open(s, 0);
        char b[16];
        petrel_log(s, PETREL_LOG_INFO, "kept a handle; read now: %ld", petrel_message_read(kept, b, sizeof(b)));
    }
    return PETREL_CONTINUE;
}

static petrel_verdict on_mail(petrel_session *s, const char *sender)
{
    (void)sender;
    if (kept) {
        char b[16];
        petrel_log(s, PETREL_LOG_INFO, "read through the kept handle: %ld, size %lld",
                   petrel_message_read(kept, b, sizeof(b)), petrel_message_size(kept));
        petrel_message_close(kept);
        kept = NULL;
    }
    return PETREL_CONTINUE;
}

const petrel_module_desc petrel_module_descriptor = {
    PETREL_MODULE_INIT,
    .name = "streammod",
    .version = "1.0",
    .description = "reads the stored message and streams new bodies (tests)",
    .hooks = { .mail = on_mail, .end_of_headers = on_eoh, .end_of_message = on_eom },
};
