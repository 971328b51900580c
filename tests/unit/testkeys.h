/* testkeys.h: Ed25519 key pairs for tests and benchmarks that run net/quic
 * endpoints directly (test_quic.c, bench/quic_bench.c), and the hex form in
 * which they hand a key to a child process on its command line.
 *
 * Not for the mesh's identities: those come from mesh/identity.h. Keys are
 * fresh from GnuTLS; on failure the process exits with code 2 (a test
 * without keys cannot run). */
#ifndef TESTKEYS_H
#define TESTKEYS_H

#include <stddef.h>
#include <stdint.h>

/* A fresh raw Ed25519 pair: pub is written first, then priv (so both may
 * point at one buffer when only a throwaway key is wanted). */
void testkeys_ed25519(uint8_t priv[32], uint8_t pub[32]);

/* n bytes as 2n lowercase hex digits plus NUL (out holds 2n + 1 chars). */
void testkeys_hex(char *out, const uint8_t *in, size_t n);

/* 2n hex digits back into n bytes; a bad digit pair gives 0. */
void testkeys_unhex(uint8_t *out, const char *in, size_t n);

#endif
