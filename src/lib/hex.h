/* hex.h: bytes as lowercase hexadecimal, for ids and hashes in logs, file
 * names and JSON. Header only: one loop, used by mesh/ and models/. */
#ifndef LLMESH_HEX_H
#define LLMESH_HEX_H

#include <stddef.h>
#include <stdint.h>

/* Writes 2 * n hex digits and a NUL into out (2 * n + 1 bytes). */
static inline void hex_encode(const uint8_t *p, size_t n, char *out)
{
    static const char digits[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = digits[p[i] >> 4];
        out[2 * i + 1] = digits[p[i] & 15];
    }
    out[2 * n] = 0;
}

#endif
