/* identity.h: this node's Ed25519 key, which is also its node id.
 *
 * The key is made with GnuTLS on first start and kept in DIR/key (mode 0600,
 * DIR created 0700); the same file always gives the same node id, so the
 * same invite token. Key file format (text, three lines, each ending in \n):
 *
 *     llmesh-ed25519-key 1
 *     secret <64 lowercase hex digits: the 32-byte Ed25519 seed>
 *     public <64 lowercase hex digits: the 32-byte public key = node id>
 *
 * The public key is stored because GnuTLS cannot derive it from the seed on
 * import; loading checks that the two belong together (by signing and
 * verifying a test message), so a hand-edited file cannot pass for another
 * node. A file that group or others can read or write is refused, like ssh
 * does, because whoever reads it can impersonate the node.
 *
 * The mesh secret lives beside it, in DIR/mesh-secret (mode 0600, same
 * checks), text, two lines:
 *
 *     llmesh-mesh-secret 1
 *     secret <64 lowercase hex digits: the 32-byte secret>
 *
 * The first node of a mesh makes it; a node that joins with a token keeps
 * the token's (mesh/admission.c says what it is for).
 *
 * Also: signatures with the key (gossip records are signed by their node),
 * hex for display, and where the home directory is.
 *
 * Not here: TLS (net/quic.c uses the raw key bytes). Library code: errors come
 * back in err, nothing is printed. Threading: any thread; no shared state. */
#ifndef LLMESH_MESH_IDENTITY_H
#define LLMESH_MESH_IDENTITY_H

#include <stddef.h>
#include <stdint.h>

#define IDENTITY_KEY_BYTES 32
#define IDENTITY_SIG_BYTES 64
#define IDENTITY_HEX_BYTES (2 * IDENTITY_KEY_BYTES + 1)

typedef struct {
    uint8_t secret[IDENTITY_KEY_BYTES];      /* Ed25519 seed */
    uint8_t public_key[IDENTITY_KEY_BYTES];  /* the node id */
} identity;

/* Loads DIR/key, or creates it (and DIR, 0700) when it does not exist.
 * *created (may be NULL) says which happened. 0, or -1 with err naming the
 * file and what to do. */
int identity_load_or_create(const char *dir, identity *out, int *created, char *err, size_t errlen);
#define IDENTITY_SECRET_BYTES 32
typedef enum {
    IDENTITY_SECRET_LOADED,      /* DIR/mesh-secret, as it was */
    IDENTITY_SECRET_CREATED,     /* none was there nor given: a new mesh */
    IDENTITY_SECRET_FROM_TOKEN,  /* none was there: the token's, now stored */
    IDENTITY_SECRET_REPLACED,    /* another was there: the token's replaced it */
} identity_secret_origin;

/* The mesh secret of the home DIR: from_token (the secret of the join
 * tokens, NULL without one) when given, stored if DIR held none or another;
 * else DIR/mesh-secret; else a new random one, stored. 0 (out, *origin), or
 * -1 with err naming the file. The caller wipes out when done. */
int identity_mesh_secret(const char *dir, const uint8_t *from_token,
                         uint8_t out[IDENTITY_SECRET_BYTES], identity_secret_origin *origin,
                         char *err, size_t errlen);

/* Forgets the secret (overwrites it). */
void identity_wipe(identity *id);

/* Ed25519 signature of data. 0, or -1 with err. */
int identity_sign(const identity *id, const void *data, size_t len,
                  uint8_t sig[IDENTITY_SIG_BYTES], char *err, size_t errlen);
/* 1 when sig is public_key's signature of data, else 0. */
int identity_verify(const uint8_t public_key[IDENTITY_KEY_BYTES], const void *data, size_t len,
                    const uint8_t sig[IDENTITY_SIG_BYTES]);

/* Lowercase hex of a 32-byte id into out (IDENTITY_HEX_BYTES with the NUL). */
void identity_id_hex(const uint8_t id[IDENTITY_KEY_BYTES], char out[IDENTITY_HEX_BYTES]);
/* Parses 64 hex digits (either case). 0 or -1. */
int identity_id_from_hex(const char *hex, uint8_t id[IDENTITY_KEY_BYTES]);

/* The llmesh home directory: flag when given (non-empty), else $LLMESH_HOME,
 * else $HOME/.llmesh. Written into out. 0, or -1 with err (no HOME, or the
 * path does not fit). */
int identity_home_dir(const char *flag, char *out, size_t cap, char *err, size_t errlen);

#endif
