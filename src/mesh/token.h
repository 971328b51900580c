/* token.h: invite tokens, the text a node prints and another passes to --join.
 *
 * A token names a node (its 32-byte id, which is its Ed25519 public key, so a
 * connection made with it is pinned to the right node), carries the mesh
 * secret (32 bytes: whoever holds it may join, mesh/admission.c) and the
 * addresses the node can be dialled at. The binary record is base64url-encoded
 * without padding; the byte layout is in docs/PROTOCOL.md ("Invite token").
 *
 * A credential since version 2: treat the text like a password. Version 1
 * tokens (no secret) are refused with a message that asks for a new one.
 * Threading: pure functions, any thread. */
#ifndef LLMESH_MESH_TOKEN_H
#define LLMESH_MESH_TOKEN_H

#include <stddef.h>
#include <stdint.h>

#include "mesh/addr.h"
#include "mesh/mesh.h"

#define TOKEN_VERSION 2
#define TOKEN_SECRET_BYTES 32
/* version + id + secret + count + addresses, all of them at their largest */
#define TOKEN_MAX_BYTES (1 + MESH_ID_BYTES + TOKEN_SECRET_BYTES + 1 + MESH_MAX_ADDRS * ADDR_WIRE_MAX)
#define TOKEN_MAX_TEXT 300        /* > base64url of TOKEN_MAX_BYTES, + NUL */

typedef struct {
    uint8_t id[MESH_ID_BYTES];
    uint8_t secret[TOKEN_SECRET_BYTES]; /* the mesh secret: never log it */
    mesh_addr addrs[MESH_MAX_ADDRS];
    int n_addrs;                  /* 1..MESH_MAX_ADDRS */
} token;

/* Writes the token text (NUL-terminated) into out; the addresses are written
 * in the order given (callers sort them so that the text is stable). Returns
 * the text length, or -1 when n_addrs is out of range or cap is too small. */
int token_encode(const token *t, char *out, size_t cap);

/* Decodes a token, ignoring surrounding whitespace. Returns 0, or -1 with a
 * message in err for anything malformed: bad base64url, unknown version,
 * truncation, trailing bytes, zero or too many addresses, an address of an
 * unknown family or with port 0. A version 1 token gets its own message (make
 * a new token on a node of this version). */
int token_decode(const char *text, token *out, char *err, size_t errlen);

#endif
