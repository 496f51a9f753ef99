/*
 * subject_tagger: an example Petrel plugin that tags the Subject of a
 * message when a header test matches, e.g. "X-Spam-Flag: YES" from a spam
 * filter upstream turns "Subject: hello" into "Subject: [SPAM] hello".
 *
 * Parameters (main.cf):
 *   subject_tagger_header   the header to test (default X-Spam-Flag; the
 *                           name is compared without regard to case)
 *   subject_tagger_pattern  a substring of its value, compared without
 *                           regard to case (default YES)
 *   subject_tagger_tag      what goes in front of the Subject (default [SPAM])
 *
 * Design: the header hook only remembers (per transaction, in the
 * transaction slot, allocated from the transaction pool) whether the test
 * header matched and what the first Subject said; the edit is requested in
 * end_of_message, once every header has been seen, because the test header
 * may come after the Subject. A Subject that already starts with the tag is
 * left alone, so a message passing two tagging MTAs is not tagged twice; a
 * message without a Subject gets one. The module's configuration lives in a
 * pool made in init (petrel_module_set_data), so there is no global state.
 *
 * Build: make (uses pkg-config petrel-plugin); see README.md.
 */
#include <stddef.h>
#include <string.h>

#include <petrel/plugin.h>

struct tagger_conf {
    petrel_pool *pool;
    const char *header;
    const char *pattern;
    const char *tag;
};

/* One per transaction: what the header hook saw. */
struct tagger_tx {
    int matched;
    const char *subject;         /* the first Subject's value, or NULL */
};

static const petrel_param tagger_params[] = {
    { PETREL_PARAM_INIT, .name = "subject_tagger_header", .type = PETREL_PARAM_STRING,
      .default_value = "X-Spam-Flag", .help = "header whose value is tested (name compared without regard to case)" },
    { PETREL_PARAM_INIT, .name = "subject_tagger_pattern", .type = PETREL_PARAM_STRING, .default_value = "YES",
      .help = "substring that marks a message when found in that header's value (case-insensitive)" },
    { PETREL_PARAM_INIT, .name = "subject_tagger_tag", .type = PETREL_PARAM_STRING, .default_value = "[SPAM]",
      .help = "text put in front of the Subject of marked messages" },
    { .name = NULL },
};

/* ASCII-only case folding: header names and the test are protocol text,
 * and the locale of the MTA must not change what matches. */
static int lower(int c)
{
    return c >= 'A' && c <= 'Z' ? c + ('a' - 'A') : c;
}

static int equal_nocase(const char *a, const char *b)
{
    while (*a && lower((unsigned char)*a) == lower((unsigned char)*b))
        a++, b++;
    return *a == '\0' && *b == '\0';
}

static int starts_nocase(const char *s, const char *prefix)
{
    for (; *prefix; s++, prefix++)
        if (*s == '\0' || lower((unsigned char)*s) != lower((unsigned char)*prefix))
            return 0;
    return 1;
}

static int contains_nocase(const char *haystack, const char *needle)
{
    if (*needle == '\0')
        return 1;
    for (; *haystack; haystack++)
        if (starts_nocase(haystack, needle))
            return 1;
    return 0;
}

static int tagger_init(petrel_module *m, const char **error)
{
    petrel_pool *pool = petrel_pool_create(512);
    struct tagger_conf *c = petrel_pool_zalloc(pool, sizeof(*c));
    c->pool = pool;
    c->header = petrel_pool_strdup(pool, petrel_param_string(m, "subject_tagger_header"));
    c->pattern = petrel_pool_strdup(pool, petrel_param_string(m, "subject_tagger_pattern"));
    c->tag = petrel_pool_strdup(pool, petrel_param_string(m, "subject_tagger_tag"));
    if (*c->header == '\0' || strchr(c->header, ':') || strchr(c->header, ' ')) {
        *error = "subject_tagger_header must be a header name";
        petrel_pool_destroy(pool);
        return -1;
    }
    if (*c->tag == '\0' || strpbrk(c->tag, "\r\n")) {
        *error = "subject_tagger_tag must be non-empty text on one line";
        petrel_pool_destroy(pool);
        return -1;
    }
    petrel_module_set_data(m, c);
    petrel_module_log(m, PETREL_LOG_DEBUG, "tagging with \"%s\" when %s contains \"%s\"", c->tag, c->header,
                      c->pattern);
    return 0;
}

static void tagger_fini(petrel_module *m)
{
    struct tagger_conf *c = petrel_module_data(m);
    if (c)
        petrel_pool_destroy(c->pool);
    petrel_module_set_data(m, NULL);
}

/* The transaction's state, made on first use; it dies with the transaction. */
static struct tagger_tx *tx_state(petrel_session *s)
{
    void **slot = petrel_tx_slot(s);
    if (slot == NULL)
        return NULL;   /* not in a transaction: cannot happen in content hooks */
    if (*slot == NULL)
        *slot = petrel_pool_zalloc(petrel_tx_pool(s), sizeof(struct tagger_tx));
    return *slot;
}

static petrel_verdict tagger_header(petrel_session *s, const char *name, const char *value)
{
    const struct tagger_conf *c = petrel_module_data(petrel_session_module(s));
    struct tagger_tx *t = tx_state(s);
    if (t == NULL)
        return PETREL_CONTINUE;
    if (equal_nocase(name, c->header) && contains_nocase(value, c->pattern))
        t->matched = 1;
    if (t->subject == NULL && equal_nocase(name, "Subject"))
        t->subject = petrel_pool_strdup(petrel_tx_pool(s), value);
    return PETREL_CONTINUE;
}

static petrel_verdict tagger_end_of_message(petrel_session *s)
{
    const struct tagger_conf *c = petrel_module_data(petrel_session_module(s));
    struct tagger_tx *t = tx_state(s);
    if (t == NULL || !t->matched)
        return PETREL_CONTINUE;
    /* Leading white space of the received value does not count. */
    const char *subject = t->subject;
    while (subject && (*subject == ' ' || *subject == '\t'))
        subject++;
    if (subject && starts_nocase(subject, c->tag)) {
        petrel_log(s, PETREL_LOG_INFO, "Subject already tagged");
        return PETREL_CONTINUE;
    }
    int rc;
    if (subject) {
        const char *tagged = *subject ? petrel_pool_printf(petrel_tx_pool(s), "%s %s", c->tag, subject) : c->tag;
        rc = petrel_header_change(s, "Subject", 1, tagged);
    } else {
        rc = petrel_header_add(s, "Subject", c->tag);
    }
    if (rc != 0)
        petrel_log(s, PETREL_LOG_WARNING, "the core refused the Subject edit");
    else
        petrel_log(s, PETREL_LOG_INFO, "%s the Subject tagged %s", subject ? "changed" : "added", c->tag);
    return PETREL_CONTINUE;
}

const petrel_module_desc petrel_module_descriptor = {
    PETREL_MODULE_INIT,
    .name = "subject_tagger",
    .version = "1.0",
    .description = "tags the Subject when a header test matches (e.g. X-Spam-Flag: YES)",
    .params = tagger_params,
    .init = tagger_init,
    .fini = tagger_fini,
    .hooks = {
        .header = tagger_header,
        .end_of_message = tagger_end_of_message,
    },
};
