/*
 * Reading a module's descriptor arrays whatever ABI 1.x minor it was built
 * for. The loader copies each array (parameters, restrictions, table
 * types, SASL back-ends) into the current layout once, at load, so the
 * rest of the core only ever sees today's structs (SASL servers and
 * control commands exist from 1.1 on: a 1.0 module has none):
 *
 *   - ABI 1.0 elements carry no size: they are read through verbatim
 *     copies of the 1.0 structs below, chosen by the descriptor's
 *     abi_minor.
 *   - From ABI 1.1 every element starts with its size. The array's stride
 *     is the first element's size; a smaller size (a module built for an
 *     older 1.x) is copied as far as it goes and the rest is zero, which
 *     every field added later must mean "not used". The terminator (NULL
 *     name) may have size 0.
 *
 * The descriptor itself needs no size: its first fields never move, and it
 * grows by taking its spare slots, which a module built for an older minor
 * leaves zero (the loader ignores those of a minor that did not have them).
 */
#include "config.h"

#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lib/xalloc.h"
#include "module/compat.h"

/* ABI 1.0 layouts, verbatim (t/abi-1.0/petrel/plugin.h). Never change them. */
struct param_v10 {
    const char *name;
    petrel_param_type type;
    const char *default_value;
    const char *help;
};

struct restriction_v10 {
    const char *name;
    int nargs;
    int (*compile)(petrel_module *m, const char *const *args, void **state, petrel_pool *pool,
                   const char **error);
    petrel_verdict (*check)(petrel_session *s, void *state);
};

struct table_type_v10 {
    const char *name;
    void *(*open)(petrel_module *m, const char *name, petrel_pool *pool, const char **error);
    int (*lookup)(void *handle, const char *key, const char **value, petrel_pool *scratch);
    void (*close)(void *handle);
    int pattern;
};

struct sasl_backend_v10 {
    const char *name;
    petrel_verdict (*check)(petrel_session *s, const char *path, const char *mechanism, const char *user,
                            const char *password);
};

/* The smallest element a 1.1 module may give: the 1.1 struct's size (the
 * current struct is the 1.1 one; when one grows, freeze its 1.1 size here). */
/* per_service came later within 1.1: a 1.1 module built before it still loads. */
#define PARAM_SIZE_V11 offsetof(petrel_param, per_service)
/* max_args came later within 1.1: a module built before reads 0 (exactly nargs). */
#define RESTRICTION_SIZE_V11 offsetof(petrel_restriction, max_args)
/* lookup_async came later within 1.1: a 1.1 module built before it still loads. */
#define TABLE_TYPE_SIZE_V11 offsetof(petrel_table_type, lookup_async)
#define SASL_BACKEND_SIZE_V11 sizeof(petrel_sasl_backend)
/* petrel_sasl_server grew check_path within 1.1: a module built before
 * has the smaller size, and check_path reads NULL. */
#define SASL_SERVER_SIZE_V11 offsetof(petrel_sasl_server, check_path)
#define COMMAND_SIZE_V11 sizeof(petrel_command)

/* An array longer than this is taken for one without its terminator. */
#define MAX_ELEMENTS 4096

static void v10_param(void *out, const void *in)
{
    const struct param_v10 *p = in;
    petrel_param *q = out;
    q->name = p->name;
    q->type = p->type;
    q->default_value = p->default_value;
    q->help = p->help;
}

static void v10_restriction(void *out, const void *in)
{
    const struct restriction_v10 *r = in;
    petrel_restriction *q = out;
    q->name = r->name;
    q->nargs = r->nargs;
    q->compile = r->compile;
    q->check = r->check;
}

static void v10_table_type(void *out, const void *in)
{
    const struct table_type_v10 *t = in;
    petrel_table_type *q = out;
    q->name = t->name;
    q->open = t->open;
    q->lookup = t->lookup;
    q->close = t->close;
    q->pattern = t->pattern;
}

static void v10_sasl_backend(void *out, const void *in)
{
    const struct sasl_backend_v10 *b = in;
    petrel_sasl_backend *q = out;
    q->name = b->name;
    q->check = b->check;
}

struct element_kind {
    const char *what;               /* "params" */
    size_t size;                    /* today's struct */
    size_t min_size;                /* its 1.1 size */
    size_t name_offset;             /* offsetof(T, name): never moves */
    size_t v10_size;
    size_t v10_name_offset;
    void (*from_v10)(void *out, const void *in);
};

static const struct element_kind kinds[] = {
    [COMPAT_PARAMS] = { "params", sizeof(petrel_param), PARAM_SIZE_V11, offsetof(petrel_param, name),
                        sizeof(struct param_v10), offsetof(struct param_v10, name), v10_param },
    [COMPAT_RESTRICTIONS] = { "restrictions", sizeof(petrel_restriction), RESTRICTION_SIZE_V11,
                              offsetof(petrel_restriction, name), sizeof(struct restriction_v10),
                              offsetof(struct restriction_v10, name), v10_restriction },
    [COMPAT_TABLE_TYPES] = { "table_types", sizeof(petrel_table_type), TABLE_TYPE_SIZE_V11,
                             offsetof(petrel_table_type, name), sizeof(struct table_type_v10),
                             offsetof(struct table_type_v10, name), v10_table_type },
    [COMPAT_SASL_BACKENDS] = { "sasl_backends", sizeof(petrel_sasl_backend), SASL_BACKEND_SIZE_V11,
                               offsetof(petrel_sasl_backend, name), sizeof(struct sasl_backend_v10),
                               offsetof(struct sasl_backend_v10, name), v10_sasl_backend },
    /* no 1.0 layout: compat_read_descriptor never reads it for a 1.0 module */
    [COMPAT_SASL_SERVERS] = { "sasl_servers", sizeof(petrel_sasl_server), SASL_SERVER_SIZE_V11,
                              offsetof(petrel_sasl_server, name), 0, 0, NULL },
    [COMPAT_COMMANDS] = { "commands", sizeof(petrel_command), COMMAND_SIZE_V11, offsetof(petrel_command, name), 0, 0,
                          NULL },
};

static const char *name_at(const char *base, size_t offset)
{
    const char *name;
    memcpy(&name, base + offset, sizeof(name));
    return name;
}

static size_t size_at(const char *base)
{
    size_t size;
    memcpy(&size, base, sizeof(size));
    return size;
}

void *compat_read_array(enum compat_kind kind, const void *array, unsigned abi_minor, size_t *count,
                        char *error, size_t error_size)
{
    const struct element_kind *k = &kinds[kind];
    const char *base = array;
    *count = 0;
    if (array == NULL)
        return xcalloc(1, k->size);
    size_t stride, name_offset;
    if (abi_minor == 0 && k->from_v10 == NULL)
        return xcalloc(1, k->size);   /* the array did not exist in 1.0 */
    if (abi_minor == 0) {
        stride = k->v10_size;
        name_offset = k->v10_name_offset;
    } else {
        stride = size_at(base);
        name_offset = k->name_offset;
        if (stride == 0 && name_at(base, name_offset) == NULL)
            return xcalloc(1, k->size);   /* empty */
        if (stride < k->min_size || stride > k->size) {
            snprintf(error, error_size, "%s[0] has size %zu where %zu was expected: start each entry with its "
                     "PETREL_..._INIT macro (ABI 1.1 elements carry their size)", k->what, stride, k->size);
            return NULL;
        }
    }
    size_t n = 0;
    while (name_at(base + n * stride, name_offset) != NULL) {
        if (abi_minor > 0 && size_at(base + n * stride) != stride) {
            snprintf(error, error_size, "%s[%zu] has size %zu, %s[0] %zu: every entry must start with the same "
                     "PETREL_..._INIT macro", k->what, n, size_at(base + n * stride), k->what, stride);
            return NULL;
        }
        if (++n > MAX_ELEMENTS) {
            snprintf(error, error_size, "%s has no terminating entry (name NULL) within %d entries", k->what,
                     MAX_ELEMENTS);
            return NULL;
        }
    }
    char *out = xcalloc(n + 1, k->size);
    for (size_t i = 0; i < n; i++) {
        char *q = out + i * k->size;
        const char *e = base + i * stride;
        if (abi_minor == 0) {
            k->from_v10(q, e);
        } else {
            memcpy(q, e, stride);   /* what this core knows beyond stride stays zero */
        }
        memcpy(q, &k->size, sizeof(size_t));
    }
    *count = n;
    return out;
}

int compat_read_descriptor(const petrel_module_desc *d, struct compat_desc *out, char *error, size_t error_size)
{
    memset(out, 0, sizeof(*out));
    out->hooks = d->hooks;
    out->check = d->abi_minor >= 1 ? d->check : NULL;
    if ((out->params = compat_read_array(COMPAT_PARAMS, d->params, d->abi_minor, &out->nparams, error,
                                         error_size)) == NULL ||
        (out->restrictions = compat_read_array(COMPAT_RESTRICTIONS, d->restrictions, d->abi_minor,
                                               &out->nrestrictions, error, error_size)) == NULL ||
        (out->table_types = compat_read_array(COMPAT_TABLE_TYPES, d->table_types, d->abi_minor,
                                              &out->ntable_types, error, error_size)) == NULL ||
        (out->sasl_backends = compat_read_array(COMPAT_SASL_BACKENDS, d->sasl_backends, d->abi_minor,
                                                &out->nsasl_backends, error, error_size)) == NULL ||
        (out->sasl_servers = compat_read_array(COMPAT_SASL_SERVERS, d->abi_minor >= 1 ? d->sasl_servers : NULL,
                                               d->abi_minor, &out->nsasl_servers, error, error_size)) == NULL ||
        (out->commands = compat_read_array(COMPAT_COMMANDS, d->abi_minor >= 1 ? d->commands : NULL, d->abi_minor,
                                           &out->ncommands, error, error_size)) == NULL) {
        compat_free_descriptor(out);
        return -1;
    }
    return 0;
}

void compat_free_descriptor(struct compat_desc *c)
{
    free(c->params);
    free(c->restrictions);
    free(c->table_types);
    free(c->sasl_backends);
    free(c->sasl_servers);
    free(c->commands);
    memset(c, 0, sizeof(*c));
}
