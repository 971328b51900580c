/* consttime.h: comparing secrets without telling an attacker how much of a
 * guess was right.
 *
 * memcmp returns at the first differing byte, so its time reveals the length
 * of the matching prefix, and a secret can be guessed byte by byte. Here the
 * time depends only on the length of the expected secret (which is not the
 * secret), never on the guess's bytes or where it first differs.
 *
 * Not here: hashing, key derivation; for MACs use the TLS library's own. */
#ifndef LLMESH_CONSTTIME_H
#define LLMESH_CONSTTIME_H

#include <stddef.h>
#include <stdint.h>

/* 1 when guess (guess_len bytes) equals secret (secret_len bytes), else 0.
 * Reads every byte of secret once whatever the guess; a guess of another
 * length is read only as far as it goes and still compares unequal. */
static inline int consttime_equal(const void *secret, size_t secret_len, const void *guess, size_t guess_len)
{
    const volatile uint8_t *s = secret;
    const volatile uint8_t *g = guess;
    volatile uint8_t diff = secret_len != guess_len;
    for (size_t i = 0; i < secret_len; i++) {
        uint8_t b = i < guess_len ? g[i] : 0; /* lengths differ: diff is set already */
        diff |= (uint8_t)(s[i] ^ b);
    }
    return diff == 0;
}

#endif
