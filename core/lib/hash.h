/* String hashing for the in-memory indexes (FNV-1a: small, fast, good enough
 * for bucket selection; none of these tables is keyed by attacker data alone
 * in a way that matters for worst-case behaviour). */
#ifndef PETREL_LIB_HASH_H
#define PETREL_LIB_HASH_H

#include <stdint.h>

static inline uint32_t hash_string(const char *s)
{
    uint32_t h = 2166136261u;
    for (; *s; s++) {
        h ^= (unsigned char)*s;
        h *= 16777619u;
    }
    return h;
}

#endif
