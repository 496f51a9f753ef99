/*
 * archivemod: a test module that reads the stored message after end of
 * message, as an archiver or a delivery auditor would, written against
 * plugin.h alone:
 *
 *   end_of_message  logs the queue ID it sees; with "X-Archive-Edit: yes"
 *                   it also adds a header, changes the Subject and the
 *                   envelope sender (edits that make the core write the
 *                   queue file again, under the same ID)
 *   queued          reads the committed message whole and its body alone
 *                   (petrel_message_open) and logs sizes and CRC-32s; keeps
 *                   one handle, which the next MAIL reads (stale: -1)
 *   delivery        the same with petrel_delivery_message_open, per
 *                   recipient; keeps one handle, which the next delivery
 *                   reads (stale: -1); also asks for a message with
 *                   another result (refused: NULL)
 */
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include <petrel/plugin.h>

static petrel_message *kept_queued, *kept_delivery;   /* one process, one loop */

/* CRC-32 as zlib computes it (start with 0). */
static unsigned long crc32_update(unsigned long crc, const unsigned char *p, size_t n)
{
    static unsigned long table[256];
    if (table[1] == 0)
        for (unsigned long i = 0; i < 256; i++) {
            unsigned long c = i;
            for (int k = 0; k < 8; k++)
                c = c & 1 ? 0xedb88320UL ^ (c >> 1) : c >> 1;
            table[i] = c;
        }
    unsigned long c = crc ^ 0xffffffffUL;
    for (size_t i = 0; i < n; i++)
        c = table[(c ^ p[i]) & 0xff] ^ (c >> 8);
    return (c ^ 0xffffffffUL) & 0xffffffffUL;
}

/* Reads msg to its end: its size and CRC-32 into *n and *crc; -1 on an error. */
static int digest(petrel_message *msg, unsigned long long *n, unsigned long *crc)
{
    static unsigned char buf[65536];
    *n = 0;
    *crc = 0;
    if (msg == NULL)
        return -1;
    long got;
    while ((got = petrel_message_read(msg, buf, sizeof(buf))) > 0) {
        *crc = crc32_update(*crc, buf, (size_t)got);
        *n += (unsigned long long)got;
    }
    return got == 0 && (long long)*n == petrel_message_size(msg) ? 0 : -1;
}

static petrel_verdict on_mail(petrel_session *s, const char *sender)
{
    (void)sender;
    if (kept_queued) {
        char c;
        petrel_log(s, PETREL_LOG_INFO, "kept queued handle reads %ld", petrel_message_read(kept_queued, &c, 1));
        kept_queued = NULL;
    }
    return PETREL_CONTINUE;
}

static petrel_verdict on_eom(petrel_session *s)
{
    const char *id = petrel_queue_id(s);
    petrel_log(s, PETREL_LOG_INFO, "end of message: queue id %s", id ? id : "none");
    const char *name, *value;
    for (size_t i = 0; petrel_header_at(s, i, &name, &value) == 0; i++) {
        if (strcasecmp(name, "X-Archive-Edit") == 0 && strncasecmp(value, "yes", 3) == 0) {
            petrel_header_add(s, "X-Archived", "by archivemod");
            petrel_header_change(s, "Subject", 1, "edited by archivemod");
            petrel_sender_change(s, "archived-sender@example.net");
        }
    }
    return PETREL_CONTINUE;
}

static void on_queued(petrel_session *s, const char *queue_id)
{
    unsigned long long wn, bn;
    unsigned long wc, bc;
    petrel_message *whole = petrel_message_open(s, 0), *body = petrel_message_open(s, PETREL_MESSAGE_BODY);
    int ok = digest(whole, &wn, &wc) == 0 && digest(body, &bn, &bc) == 0;
    if (ok)
        petrel_log(s, PETREL_LOG_INFO, "queued %s: whole %llu bytes crc %08lx, body %llu bytes crc %08lx", queue_id,
                   wn, wc, bn, bc);
    else
        petrel_log(s, PETREL_LOG_WARNING, "queued %s: cannot read the message", queue_id);
    petrel_message_close(whole);
    kept_queued = body;   /* not closed: stale once this hook returns */
}

static void on_delivery(petrel_module *m, const petrel_delivery_result *r)
{
    if (kept_delivery) {
        char c;
        petrel_module_log(m, PETREL_LOG_INFO, "kept delivery handle reads %ld",
                          petrel_message_read(kept_delivery, &c, 1));
        kept_delivery = NULL;
    }
    petrel_delivery_result other = *r;
    if (petrel_delivery_message_open(m, &other, 0) == NULL)
        petrel_module_log(m, PETREL_LOG_INFO, "another result: refused");
    unsigned long long wn, bn;
    unsigned long wc, bc;
    petrel_message *whole = petrel_delivery_message_open(m, r, 0);
    petrel_message *body = petrel_delivery_message_open(m, r, PETREL_MESSAGE_BODY);
    if (digest(whole, &wn, &wc) == 0 && digest(body, &bn, &bc) == 0)
        petrel_module_log(m, PETREL_LOG_INFO, "delivery %s to=<%s>: whole %llu bytes crc %08lx, body %llu bytes "
                          "crc %08lx", r->queue_id, r->recipient, wn, wc, bn, bc);
    else
        petrel_module_log(m, PETREL_LOG_WARNING, "delivery %s: cannot read the message", r->queue_id);
    petrel_message_close(body);
    kept_delivery = whole;   /* not closed: stale once this hook returns */
}

const petrel_module_desc petrel_module_descriptor = {
    PETREL_MODULE_INIT,
    .name = "archivemod",
    .version = "1.0",
    .description = "reads the message in the queued and delivery hooks (test module)",
    .hooks = { .mail = on_mail, .end_of_message = on_eom, .queued = on_queued, .delivery = on_delivery },
};
