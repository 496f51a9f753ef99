/*
 * Generation-checked handle tables (the layout is described in
 * runtime_int.h). A table is an array of slots that grows on demand up to
 * HANDLE_MAX_SLOTS; freed slots go to the back of a FIFO free list, so a
 * slot is reused as late as possible, and each release bumps the slot's
 * generation so that every handle to the old object stops validating. An
 * asynchronous reply finds its object again by handle, as OpenSMTPD's
 * filters find their session by request ID: an object that went away is
 * an ordinary case, answered with NULL, never a dangling pointer.
 */
#include "config.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "lib/log.h"
#include "lib/xalloc.h"
#include "module/module.h"
#include "module/runtime_int.h"

_Static_assert(sizeof(uintptr_t) == 8, "Petrel's module handles need 64-bit pointers");

#define GEN_MASK ((1u << HANDLE_GEN_BITS) - 1)
#define GEN_LO_BITS 21
#define NO_SLOT UINT32_MAX

static uintptr_t encode(unsigned tag, uint32_t slot, uint32_t gen, unsigned mod)
{
    uint64_t g = gen & GEN_MASK;
    uint64_t lo = g & ((1u << GEN_LO_BITS) - 1), hi = g >> GEN_LO_BITS;
    uint64_t v = (UINT64_C(1) << 63) | (hi << 56) | (UINT64_C(1) << 55) | (lo << 34) | ((uint64_t)slot << 16) |
                 ((uint64_t)(mod & 0xffu) << 8) | (tag & 0xffu);
    return (uintptr_t)v;
}

static int decode(unsigned tag, uintptr_t h, uint32_t *slot, uint32_t *gen, unsigned *mod)
{
    uint64_t v = (uint64_t)h;
    if ((v & 0xffu) != tag || !(v >> 63) || ((v >> 62) & 1u) || !((v >> 55) & 1u))
        return -1;
    *slot = (uint32_t)((v >> 16) & (HANDLE_MAX_SLOTS - 1));
    *gen = (uint32_t)(((v >> 34) & ((1u << GEN_LO_BITS) - 1)) | (((v >> 56) & 0x3fu) << GEN_LO_BITS));
    *mod = (unsigned)((v >> 8) & 0xffu);
    return 0;
}

void handle_table_init(struct handle_table *t, const char *kind, unsigned tag)
{
    memset(t, 0, sizeof(*t));
    t->kind = kind;
    t->tag = tag;
    t->free_head = t->free_tail = NO_SLOT;
}

void handle_table_free(struct handle_table *t)
{
    free(t->entries);
    handle_table_init(t, t->kind, t->tag);
}

static uint32_t take_free(struct handle_table *t)
{
    if (t->free_head == NO_SLOT)
        return NO_SLOT;
    uint32_t slot = t->free_head;
    t->free_head = t->entries[slot].next_free;
    if (t->free_head == NO_SLOT)
        t->free_tail = NO_SLOT;
    t->nfree--;
    return slot;
}

uintptr_t handle_alloc(struct handle_table *t, void *object, unsigned mod)
{
    uint32_t slot = take_free(t);
    if (slot == NO_SLOT) {
        if (t->n == HANDLE_MAX_SLOTS)
            return 0;
        if (t->n == t->cap) {
            uint32_t cap = t->cap ? t->cap * 2 : 64;
            if (cap > HANDLE_MAX_SLOTS)
                cap = HANDLE_MAX_SLOTS;
            t->entries = xrealloc(t->entries, (size_t)cap * sizeof(*t->entries));
            t->cap = cap;
        }
        slot = t->n++;
        t->entries[slot].generation = 1;
    }
    t->entries[slot].object = object;
    t->entries[slot].next_free = NO_SLOT;
    return encode(t->tag, slot, t->entries[slot].generation, mod);
}

uintptr_t handle_for(const struct handle_table *t, uint32_t slot, unsigned mod)
{
    return encode(t->tag, slot, t->entries[slot].generation, mod);
}

void handle_release(struct handle_table *t, uint32_t slot)
{
    struct handle_entry *e = &t->entries[slot];
    e->object = NULL;
    e->generation = (e->generation + 1) & GEN_MASK;
    if (e->generation == 0)
        e->generation = 1;
    e->next_free = NO_SLOT;
    if (t->free_tail == NO_SLOT)
        t->free_head = slot;
    else
        t->entries[t->free_tail].next_free = slot;
    t->free_tail = slot;
    t->nfree++;
}

void *handle_lookup(const struct handle_table *t, uintptr_t h, uint32_t *slot, unsigned *mod)
{
    uint32_t s, gen;
    unsigned m;
    if (decode(t->tag, h, &s, &gen, &m) != 0 || s >= t->n)
        return NULL;
    const struct handle_entry *e = &t->entries[s];
    if (e->object == NULL || e->generation != gen)
        return NULL;
    if (slot)
        *slot = s;
    if (mod)
        *mod = m;
    return e->object;
}

int handle_module(const struct handle_table *t, uintptr_t h)
{
    uint32_t s, gen;
    unsigned m;
    if (decode(t->tag, h, &s, &gen, &m) != 0)
        return -1;
    return (int)m;
}

uint32_t handle_slot(uintptr_t h)
{
    return (uint32_t)(((uint64_t)h >> 16) & (HANDLE_MAX_SLOTS - 1));
}
