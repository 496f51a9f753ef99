/*
 * oldstream: a plugin built against the ABI 1.0 headers (t/abi-1.0/: its
 * descriptor says 1.0 and its restriction entries have the 1.0 layout,
 * without a size) that nevertheless calls ABI 1.1 streaming functions,
 * declaring them itself since the 1.0 header has none. The core must
 * refuse those calls with a clear error (NULL, -1), never crash, and keep
 * serving the module's 1.0 parts.
 *
 *   restriction check_oldstream: REJECT for a sender starting with "old-reject"
 *   end_of_message: petrel_message_open, petrel_body_replace_begin and
 *                   petrel_message_read on a made-up handle; logs what it got
 */
#include <stdint.h>
#include <string.h>

#include <petrel/plugin.h>

/* ABI 1.1 functions, declared by hand (not in the 1.0 header). */
typedef struct petrel_message petrel_message;
typedef struct petrel_body_writer petrel_body_writer;
petrel_message *petrel_message_open(petrel_session *s, unsigned flags);
long petrel_message_read(petrel_message *msg, void *buf, size_t len);
petrel_body_writer *petrel_body_replace_begin(petrel_session *s);

static int compile(petrel_module *m, const char *const *args, void **state, petrel_pool *pool, const char **error)
{
    (void)m;
    (void)args;
    (void)pool;
    (void)error;
    *state = NULL;
    return 0;
}

static petrel_verdict check(petrel_session *s, void *state)
{
    (void)state;
    const char *sender = petrel_sender(s);
    if (sender && strncmp(sender, "old-reject", 10) == 0) {
        petrel_set_reply(s, 550, "5.7.1", "oldstream rejects this sender");
        return PETREL_REJECT;
    }
    return PETREL_CONTINUE;
}

static petrel_verdict on_eom(petrel_session *s)
{
    petrel_message *msg = petrel_message_open(s, 0);
    petrel_body_writer *w = petrel_body_replace_begin(s);
    char buf[16];
    long n = petrel_message_read((petrel_message *)(uintptr_t)0x12345678u, buf, sizeof(buf));
    petrel_log(s, PETREL_LOG_INFO, "oldstream: open %s, body writer %s, read of a made-up handle %ld",
               msg ? "handle" : "NULL", w ? "handle" : "NULL", n);
    return PETREL_CONTINUE;
}

static const petrel_restriction restrictions[] = {
    { "check_oldstream", 0, compile, check },
    { NULL, 0, NULL, NULL },
};

const petrel_module_desc petrel_module_descriptor = {
    PETREL_MODULE_INIT,
    .name = "oldstream",
    .version = "1.0",
    .description = "a 1.0 plugin that calls 1.1 streaming functions (test module)",
    .hooks = { .end_of_message = on_eom },
    .restrictions = restrictions,
};
