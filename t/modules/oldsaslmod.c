/*
 * oldsaslmod: a module built for ABI 1.1 before petrel_sasl_server grew
 * check_path (its entries are the shorter, first 1.1 layout, declared here
 * as that header had it). The loader must read it with its own stride and
 * take check_path as NULL: a plugin built against minor N keeps loading.
 */
#include <stddef.h>

#include <petrel/plugin.h>

struct first_sasl_server {
    size_t size;
    const char *name;
    void (*mechanisms)(petrel_sasl_request *r, const petrel_sasl_context *c);
    void (*start)(petrel_sasl_request *r, const petrel_sasl_context *c, const char *mechanism,
                  const unsigned char *initial, size_t len, void **state);
    void (*step)(petrel_sasl_request *r, const petrel_sasl_context *c, void *state, const unsigned char *response,
                 size_t len);
    void (*end)(const petrel_sasl_context *c, void *state);
};
_Static_assert(sizeof(struct first_sasl_server) == offsetof(petrel_sasl_server, check_path),
               "the first 1.1 layout ends where check_path begins");

static void mechanisms(petrel_sasl_request *r, const petrel_sasl_context *c)
{
    (void)c;
    static const petrel_sasl_mechanism m[] = { { "PLAIN", PETREL_SASL_PLAINTEXT } };
    petrel_sasl_offer(r, m, 1);
}

static void start(petrel_sasl_request *r, const petrel_sasl_context *c, const char *mechanism,
                  const unsigned char *initial, size_t len, void **state)
{
    (void)c;
    (void)mechanism;
    (void)initial;
    (void)len;
    (void)state;
    petrel_sasl_answer a = { PETREL_SASL_ANSWER_INIT, PETREL_SASL_FAILURE, NULL, 0, NULL, "no logins here" };
    petrel_sasl_reply(r, &a);
}

static void step(petrel_sasl_request *r, const petrel_sasl_context *c, void *state, const unsigned char *response,
                 size_t len)
{
    start(r, c, NULL, response, len, &state);
}

static const struct first_sasl_server servers[] = {
    { sizeof(struct first_sasl_server), "oldsasl", mechanisms, start, step, NULL },
    { sizeof(struct first_sasl_server), "oldsasl2", mechanisms, start, step, NULL },
    { 0, NULL, NULL, NULL, NULL, NULL },
};

const petrel_module_desc petrel_module_descriptor = {
    PETREL_MODULE_INIT,
    .name = "oldsaslmod",
    .version = "1.0",
    .sasl_servers = (const petrel_sasl_server *)(const void *)servers,
};
