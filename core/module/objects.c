/*
 * Role objects handed to modules as handles (runtime.h): a role (smtpd)
 * that gives a module something with a shorter life than the module's
 * hold on it (a reader of the stored message, a writer of a new body)
 * registers it here and hands out the handle. The role releases it when
 * the object ends; every later use of the handle is then a logged no-op,
 * exactly like a stale session handle, never a dangling pointer.
 */
#include "config.h"

#include <stdint.h>

#include "module/module.h"
#include "module/runtime_int.h"

static struct handle_table *table_of(enum module_object_kind k)
{
    struct module_runtime *rt = module_rt;
    if (rt == NULL)
        return NULL;
    return k == MODULE_OBJECT_MESSAGE ? &rt->messages : &rt->body_writers;
}

void *module_object_new(enum module_object_kind k, void *object, const struct petrel_module *m)
{
    struct handle_table *t = table_of(k);
    if (t == NULL)
        return NULL;
    return (void *)handle_alloc(t, object, (unsigned)m->index);
}

void *module_object_get(enum module_object_kind k, const void *h, struct petrel_module **m, const char *fn)
{
    struct handle_table *t = table_of(k);
    if (t == NULL)
        return NULL;
    struct petrel_module *owner = module_by_index(handle_module(t, (uintptr_t)h));
    if (!module_on_loop(owner, fn))
        return NULL;
    void *object = handle_lookup(t, (uintptr_t)h, NULL, NULL);
    if (object == NULL || owner == NULL) {
        module_stale(t, (uintptr_t)h, fn);
        return NULL;
    }
    if (m)
        *m = owner;
    return object;
}

void module_object_release(enum module_object_kind k, const void *h)
{
    struct handle_table *t = table_of(k);
    uint32_t slot;
    if (t && handle_lookup(t, (uintptr_t)h, &slot, NULL))
        handle_release(t, slot);
}
