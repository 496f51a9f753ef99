/*
 * premaxmod: a module built for ABI 1.1 before petrel_restriction grew
 * max_args (its restriction entries are the shorter first 1.1 layout,
 * declared here as that header had it), that streams the message at end
 * of message. The loader must read its entries with their own stride
 * (max_args 0: exactly nargs words), and the streaming functions, which
 * are 1.1, must work for it.
 *
 *   restriction check_premax WORD: REJECT when the sender starts with WORD
 *   end_of_message: reads the message (petrel_message_*), replaces the
 *                   body with "premax was here" plus the old body's size
 *                   (petrel_body_replace_*), and logs both sizes
 */
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include <petrel/plugin.h>

struct first_restriction {
    size_t size;
    const char *name;
    int nargs;
    int (*compile)(petrel_module *m, const char *const *args, void **state, petrel_pool *pool,
                   const char **error);
    petrel_verdict (*check)(petrel_session *s, void *state);
};
_Static_assert(sizeof(struct first_restriction) == offsetof(petrel_restriction, max_args),
               "the first 1.1 layout ends where max_args begins");

static int compile(petrel_module *m, const char *const *args, void **state, petrel_pool *pool, const char **error)
{
    (void)m;
    if (args[0] == NULL || args[1] != NULL) {
        *error = "check_premax takes exactly one word";
        return -1;
    }
    *state = petrel_pool_strdup(pool, args[0]);
    return 0;
}

static petrel_verdict check(petrel_session *s, void *state)
{
    const char *sender = petrel_sender(s);
    if (sender && strncmp(sender, state, strlen(state)) == 0) {
        petrel_set_reply(s, 550, "5.7.1", "premaxmod rejects this sender");
        return PETREL_REJECT;
    }
    return PETREL_CONTINUE;
}

static petrel_verdict on_eom(petrel_session *s)
{
    petrel_message *msg = petrel_message_open(s, PETREL_MESSAGE_BODY);
    char buf[4096];
    long long total = 0;
    long n;
    while ((n = petrel_message_read(msg, buf, sizeof(buf))) > 0)
        total += n;
    petrel_message_close(msg);
    petrel_body_writer *w = petrel_body_replace_begin(s);
    char line[80];
    int len = snprintf(line, sizeof(line), "premax was here (old body %lld bytes)\r\n", total);
    int ok = w && petrel_body_replace_write(w, line, (size_t)len) == 0 && petrel_body_replace_commit(w) == 0;
    petrel_log(s, PETREL_LOG_INFO, "premax: read %lld body bytes (%s), new body %s", total, n == 0 ? "to the end" : "error",
               ok ? "committed" : "failed");
    return PETREL_CONTINUE;
}

static const struct first_restriction restrictions[] = {
    { sizeof(struct first_restriction), "check_premax", 1, compile, check },
    { sizeof(struct first_restriction), NULL, 0, NULL, NULL },
};

const petrel_module_desc petrel_module_descriptor = {
    PETREL_MODULE_INIT,
    .name = "premaxmod",
    .version = "1.0",
    .description = "a 1.1 module of the first 1.1 restriction layout that streams (test module)",
    .hooks = { .end_of_message = on_eom },
    .restrictions = (const petrel_restriction *)restrictions,
};
