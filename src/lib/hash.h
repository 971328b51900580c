/* hash.h: FNV-1a, the one non-cryptographic hash for the hash tables of the
 * GGUF reader, the tokenizer and the QUIC connection-id map. Inputs there are
 * short (names, token strings, 8-20 byte ids), where FNV-1a is fast enough
 * and simple. Not for anything an attacker could exploit by collisions at
 * scale: callers bound their table sizes. */
#ifndef LLMESH_HASH_H
#define LLMESH_HASH_H

#include <stddef.h>
#include <stdint.h>

static inline uint64_t hash_fnv1a(const void *data, size_t n)
{
    const uint8_t *p = data;
    uint64_t h = 0xcbf29ce484222325ull;
    for (size_t i = 0; i < n; i++) {
        h ^= p[i];
        h *= 0x100000001b3ull;
    }
    return h;
}

#endif
