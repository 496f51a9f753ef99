/*
 * Queue IDs: fixed-length Crockford base-32 of (microsecond time, process
 * tag, counter), so names are filename-safe, sort by arrival and never
 * repeat within a generator. The layout is documented in queue.h. The
 * generator is a plain struct its owner keeps (one per process or thread):
 * no locking, no global state.
 */
#include "config.h"

#include <string.h>
#include <time.h>

#include "queue/queue.h"

/* Digits then letters without I L O U: ASCII order equals value order. */
static const char id_alphabet[32] = "0123456789ABCDEFGHJKMNPQRSTVWXYZ";

#define ID_TIME_CHARS 11
#define ID_TAG_CHARS 5
#define ID_COUNTER_CHARS 3
#define ID_TAG_MASK ((1u << (5 * ID_TAG_CHARS)) - 1)
#define ID_COUNTER_LIMIT (1u << (5 * ID_COUNTER_CHARS))

_Static_assert(ID_TIME_CHARS + ID_TAG_CHARS + ID_COUNTER_CHARS == QUEUE_ID_LEN, "ID layout");
_Static_assert(QUEUE_ID_LEN < QUEUE_ID_MAX, "ID buffer");

static void encode_base32(char *out, unsigned long long value, int chars)
{
    for (int i = chars - 1; i >= 0; i--) {
        out[i] = id_alphabet[value & 31];
        value >>= 5;
    }
}

static int decode_char(char c)
{
    const char *p = c ? memchr(id_alphabet, c, sizeof(id_alphabet)) : NULL;
    return p ? (int)(p - id_alphabet) : -1;
}

void queue_id_gen_init(struct queue_id_gen *g, unsigned process_tag)
{
    g->process_tag = process_tag & ID_TAG_MASK;
    g->last_usec = 0;
    g->counter = 0;
}

void queue_id_next(struct queue_id_gen *g, char out[QUEUE_ID_MAX])
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    unsigned long long now = (unsigned long long)ts.tv_sec * 1000000u
                             + (unsigned long long)ts.tv_nsec / 1000u;
    if (now > g->last_usec) {
        g->last_usec = now;
        g->counter = 0;
    } else if (++g->counter >= ID_COUNTER_LIMIT) {
        /* 32768 IDs in one microsecond (or a clock stepped back): borrow the
         * next microsecond rather than ever repeat an ID. */
        g->last_usec++;
        g->counter = 0;
    }
    encode_base32(out, g->last_usec, ID_TIME_CHARS);
    encode_base32(out + ID_TIME_CHARS, g->process_tag, ID_TAG_CHARS);
    encode_base32(out + ID_TIME_CHARS + ID_TAG_CHARS, g->counter, ID_COUNTER_CHARS);
    out[QUEUE_ID_LEN] = '\0';
}

int queue_id_valid(const char *s)
{
    for (int i = 0; i < QUEUE_ID_LEN; i++)
        if (decode_char(s[i]) < 0)
            return 0;
    return s[QUEUE_ID_LEN] == '\0';
}

int queue_id_time(const char *id, long long *sec, long *usec)
{
    if (!queue_id_valid(id))
        return -1;
    unsigned long long t = 0;
    for (int i = 0; i < ID_TIME_CHARS; i++)
        t = (t << 5) | (unsigned)decode_char(id[i]);
    *sec = (long long)(t / 1000000u);
    *usec = (long)(t % 1000000u);
    return 0;
}
