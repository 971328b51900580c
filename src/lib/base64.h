/* base64.h: base64url without padding (RFC 4648 section 5), for invite tokens.
 *
 * Hand-written on purpose: it is forty lines, GnuTLS's gnutls_base64_* only
 * speak standard base64 with padding and PEM framing, and no Debian library
 * worth a dependency does url-safe base64 better. Not for streaming or for
 * large data: whole buffers in, whole buffers out.
 *
 * Threading: pure functions, any thread. */
#ifndef LLMESH_BASE64_H
#define LLMESH_BASE64_H

#include <stddef.h>
#include <stdint.h>

/* Characters needed to encode n bytes, not counting the NUL. */
#define BASE64_URL_ENCODED_LEN(n) (((n) / 3) * 4 + ((n) % 3 ? (n) % 3 + 1 : 0))

/* Writes the encoding of data and a NUL into out. Returns the length written
 * (without the NUL), or -1 when cap is too small. */
int base64_url_encode(const uint8_t *data, size_t len, char *out, size_t cap);

/* Decodes len characters of text into out. Rejects padding, whitespace, any
 * character outside A-Z a-z 0-9 - _, a length that is 1 mod 4, and non-zero
 * unused bits in the last character (so every byte string has exactly one
 * accepted encoding). Returns the byte count, or -1 when the text is invalid or
 * does not fit in cap. */
int base64_url_decode(const char *text, size_t len, uint8_t *out, size_t cap);

#endif
